//! Secrets at rest: AES-256-GCM with keys from the `[secrets]` configuration (docs/NOTIFICATIONS.md, "Secrets at
//! rest").
//!
//! A sealed secret is `nonce (12 bytes) || ciphertext || tag (16 bytes)`, stored with the id of the key that
//! sealed it. The id is derived from the key (`k` + 16 hex digits of a SHA-256 over it), so it names a key without
//! revealing it and needs no bookkeeping. The caller passes associated data naming where the secret lives (the
//! table, the provider and the row), so a ciphertext copied onto another row does not open.
//!
//! Rotation: one current key seals; the current key and every previous key open. Adding a new current key and
//! moving the old one to `previous_keys` keeps old rows readable; the start-up pass ([`seal_plaintext_channels`])
//! only seals plaintext, and a row is re-sealed with the current key whenever its secret is next written.
//!
//! Nothing here logs or formats a secret or a key.

use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// Name of the configuration that enables sealing, for error messages.
pub const CONFIG_HINT: &str = "[secrets] key_file or OCTOISP_CP__SECRETS__KEY (32 random bytes, base64: head -c 32 /dev/urandom | base64)";

/// The `[secrets]` section: the keys that seal stored secrets.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// The current key, base64 of 32 bytes (usually from `OCTOISP_CP__SECRETS__KEY`). Not with `key_file`.
    pub key: Option<String>,
    /// A file holding the current key (base64 of 32 bytes, surrounding whitespace ignored). Not with `key`.
    pub key_file: Option<PathBuf>,
    /// Earlier keys (base64), still accepted for opening secrets they sealed.
    pub previous_keys: Vec<String>,
    /// Files holding earlier keys.
    pub previous_key_files: Vec<PathBuf>,
}

impl fmt::Debug for SecretsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsConfig")
            .field("key", &self.key.as_ref().map(|_| "***"))
            .field("key_file", &self.key_file)
            .field("previous_keys", &self.previous_keys.len())
            .field("previous_key_files", &self.previous_key_files)
            .finish()
    }
}

impl SecretsConfig {
    /// Checks what can be checked without reading files.
    pub fn validate(&self) -> Result<(), String> {
        if self.key.is_some() && self.key_file.is_some() {
            return Err("secrets.key and secrets.key_file are both set: keep one".into());
        }
        if (self.key.is_none() && self.key_file.is_none())
            && (!self.previous_keys.is_empty() || !self.previous_key_files.is_empty())
        {
            return Err(
                "secrets.previous_keys/previous_key_files need a current key (secrets.key or secrets.key_file)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Why a secret cannot be sealed or opened, or a key loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// No key is configured: secrets cannot be stored.
    #[error("no key to encrypt secrets is configured: set {CONFIG_HINT}")]
    NoKey,
    /// The secret was sealed with a key that is not configured.
    #[error(
        "the secret was encrypted with key {key_id}, which is not configured (add it to secrets.previous_keys or secrets.previous_key_files)"
    )]
    UnknownKey {
        /// The stored key id.
        key_id: String,
    },
    /// The ciphertext does not open with its key: altered, moved to another row, or a different key of the same id.
    #[error("the secret does not decrypt with key {key_id} (altered data or a wrong key)")]
    Corrupt {
        /// The stored key id.
        key_id: String,
    },
    /// A configured key is unusable.
    #[error("{setting}: {problem}")]
    BadKey {
        /// Which setting (and file).
        setting: String,
        /// What is wrong with it (never the key).
        problem: String,
    },
    /// The system random generator failed.
    #[error("the random generator failed")]
    Random,
}

/// One key.
struct Key {
    id: String,
    key: LessSafeKey,
}

/// Seals and opens secrets. Without a current key (`SecretBox::default()`), sealing fails with
/// [`SecretError::NoKey`].
#[derive(Default)]
pub struct SecretBox {
    /// `keys[0]` is the current key when `has_current`.
    keys: Vec<Key>,
    has_current: bool,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBox")
            .field("current", &self.current_key_id())
            .field("keys", &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

/// A sealed secret and the id of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// `nonce || ciphertext || tag`.
    pub ciphertext: Vec<u8>,
    /// The key's id.
    pub key_id: String,
}

/// The id of `key`: `k` and 16 hex digits of SHA-256("octoisp secret key id" || key).
pub fn key_id(key: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"octoisp secret key id\0");
    h.update(key);
    format!("k{}", hex::encode(&h.finalize()[..8]))
}

fn decode_key(setting: &str, text: &str) -> Result<[u8; 32], SecretError> {
    let bad = |problem: String| SecretError::BadKey {
        setting: setting.to_owned(),
        problem,
    };
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| bad("not base64 (expected 32 bytes in base64)".into()))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| bad(format!("decodes to {} bytes, expected 32", bytes.len())))
}

fn read_key_file(setting: &str, path: &Path) -> Result<[u8; 32], SecretError> {
    let name = format!("{setting} ({})", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| SecretError::BadKey {
        setting: name.clone(),
        problem: format!("cannot read: {e}"),
    })?;
    decode_key(&name, &text)
}

impl SecretBox {
    /// A box sealing with `current` (if any) and opening with it and `previous`.
    pub fn from_keys(current: Option<[u8; 32]>, previous: &[[u8; 32]]) -> SecretBox {
        let has_current = current.is_some();
        let mut keys: Vec<Key> = Vec::new();
        for k in current.iter().chain(previous) {
            let id = key_id(k);
            if keys.iter().any(|e| e.id == id) {
                continue;
            }
            // A 32-byte slice is always a valid AES-256 key.
            let unbound = UnboundKey::new(&AES_256_GCM, k).expect("32-byte AES-256 key");
            keys.push(Key {
                id,
                key: LessSafeKey::new(unbound),
            });
        }
        SecretBox { keys, has_current }
    }

    /// Loads the keys `cfg` names (reading the key files).
    pub fn from_config(cfg: &SecretsConfig) -> Result<SecretBox, SecretError> {
        let current = match (&cfg.key, &cfg.key_file) {
            (Some(k), _) => Some(decode_key("secrets.key", k)?),
            (None, Some(p)) => Some(read_key_file("secrets.key_file", p)?),
            (None, None) => None,
        };
        let mut previous = Vec::new();
        for (i, k) in cfg.previous_keys.iter().enumerate() {
            previous.push(decode_key(&format!("secrets.previous_keys[{i}]"), k)?);
        }
        for p in &cfg.previous_key_files {
            previous.push(read_key_file("secrets.previous_key_files", p)?);
        }
        Ok(SecretBox::from_keys(current, &previous))
    }

    /// The id of the key that seals, if one is configured.
    pub fn current_key_id(&self) -> Option<&str> {
        self.has_current.then(|| self.keys[0].id.as_str())
    }

    /// Seals `plaintext` with the current key; `aad` names where it will be stored.
    pub fn seal(&self, plaintext: &str, aad: &[u8]) -> Result<Sealed, SecretError> {
        self.seal_bytes(plaintext.as_bytes(), aad)
    }

    /// Seals bytes (a private key) with the current key.
    pub fn seal_bytes(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, SecretError> {
        if !self.has_current {
            return Err(SecretError::NoKey);
        }
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SecretError::Random)?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| SecretError::Corrupt {
                key_id: key.id.clone(),
            })?;
        out.extend_from_slice(&body);
        Ok(Sealed {
            ciphertext: out,
            key_id: key.id.clone(),
        })
    }

    /// Opens a secret sealed with key `key_id` for `aad`.
    pub fn open(&self, ciphertext: &[u8], key_id: &str, aad: &[u8]) -> Result<String, SecretError> {
        String::from_utf8(self.open_bytes(ciphertext, key_id, aad)?).map_err(|_| {
            SecretError::Corrupt {
                key_id: key_id.to_owned(),
            }
        })
    }

    /// Opens bytes sealed with key `key_id` for `aad`.
    pub fn open_bytes(
        &self,
        ciphertext: &[u8],
        key_id: &str,
        aad: &[u8],
    ) -> Result<Vec<u8>, SecretError> {
        let key =
            self.keys
                .iter()
                .find(|k| k.id == key_id)
                .ok_or_else(|| SecretError::UnknownKey {
                    key_id: key_id.to_owned(),
                })?;
        let corrupt = || SecretError::Corrupt {
            key_id: key_id.to_owned(),
        };
        if ciphertext.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(corrupt());
        }
        let (nonce, body) = ciphertext.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt())?;
        let mut body = body.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| corrupt())?;
        Ok(plain.to_vec())
    }
}

/// Associated data of a notification channel's secret: the table, the provider and the channel.
pub fn channel_aad(provider_id: Uuid, channel_id: Uuid) -> Vec<u8> {
    format!("octoisp:notification_channels.secret:{provider_id}:{channel_id}").into_bytes()
}

/// Associated data of a provider's VAPID private key.
pub fn vapid_aad(provider_id: Uuid) -> Vec<u8> {
    format!("octoisp:push_vapid_keys.private_key:{provider_id}").into_bytes()
}

/// Seals every notification channel secret and VAPID private key still stored in plaintext (rows from before
/// migration 0013, or VAPID keys made while no key was configured) and clears the plaintext; returns how many rows
/// it sealed. Safe with several instances starting at once: rows are locked (`FOR UPDATE`, which waits and then
/// re-checks that the row still holds plaintext) and changed only if they do. Without a current key it fails with
/// [`SecretError::NoKey`] if any row waits.
pub async fn seal_plaintext_channels(
    pool: &PgPool,
    secrets: &SecretBox,
) -> Result<u64, SealPassError> {
    let mut tx = crate::db::global_admin_tx(pool).await?;
    let rows: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "SELECT provider_id, id, secret FROM notification_channels WHERE secret IS NOT NULL FOR UPDATE",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(crate::db::DbError::query("read plaintext channel secrets"))?;
    let mut sealed = 0;
    for (provider_id, id, secret) in rows {
        let s = secrets.seal(&secret, &channel_aad(provider_id, id))?;
        sealed += sqlx::query(
            "UPDATE notification_channels SET secret_ciphertext = $3, secret_key_id = $4, secret = NULL \
             WHERE provider_id = $1 AND id = $2 AND secret IS NOT NULL",
        )
        .bind(provider_id)
        .bind(id)
        .bind(&s.ciphertext)
        .bind(&s.key_id)
        .execute(&mut *tx)
        .await
        .map_err(crate::db::DbError::query("seal a channel secret"))?
        .rows_affected();
    }
    let keys: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT provider_id, private_key FROM push_vapid_keys WHERE private_key IS NOT NULL FOR UPDATE",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(crate::db::DbError::query("read plaintext VAPID keys"))?;
    for (provider_id, der) in keys {
        let s = secrets.seal_bytes(&der, &vapid_aad(provider_id))?;
        sealed += sqlx::query(
            "UPDATE push_vapid_keys SET private_key_ciphertext = $2, private_key_key_id = $3, private_key = NULL \
             WHERE provider_id = $1 AND private_key IS NOT NULL",
        )
        .bind(provider_id)
        .bind(&s.ciphertext)
        .bind(&s.key_id)
        .execute(&mut *tx)
        .await
        .map_err(crate::db::DbError::query("seal a VAPID key"))?
        .rows_affected();
    }
    tx.commit()
        .await
        .map_err(crate::db::DbError::query("commit the sealed secrets"))?;
    Ok(sealed)
}

/// How many notification channel secrets and VAPID keys are still stored in plaintext.
pub async fn plaintext_channels(pool: &PgPool) -> Result<i64, SealPassError> {
    let mut tx = crate::db::global_admin_tx(pool).await?;
    let n = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM notification_channels WHERE secret IS NOT NULL) \
              + (SELECT count(*) FROM push_vapid_keys WHERE private_key IS NOT NULL)",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(crate::db::DbError::query("count plaintext secrets"))?;
    tx.rollback()
        .await
        .map_err(crate::db::DbError::query("end the count"))?;
    Ok(n)
}

/// Why the start-up sealing pass failed.
#[derive(Debug, thiserror::Error)]
pub enum SealPassError {
    /// The database.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// Sealing.
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// The start-up pass: with a key, seals the plaintext rows; without one, says at start that secrets cannot be
/// stored and how many plaintext rows wait. Errors are logged, never fatal (deliveries still read plaintext rows).
pub async fn startup_pass(pool: &PgPool, secrets: &SecretBox) {
    match secrets.current_key_id() {
        Some(id) => match seal_plaintext_channels(pool, secrets).await {
            Ok(0) => tracing::info!(key_id = id, "Secrets are encrypted at rest."),
            Ok(n) => tracing::info!(
                key_id = id,
                sealed = n,
                "Encrypted the notification secrets stored in plaintext."
            ),
            Err(err) => {
                tracing::error!(error = %err, "Cannot encrypt the plaintext channel secrets.")
            }
        },
        None => {
            let waiting = plaintext_channels(pool).await.unwrap_or(0);
            tracing::warn!(
                plaintext_rows = waiting,
                "No key to encrypt secrets is configured ({CONFIG_HINT}): notification channels with a secret \
                 (Telegram, webhook, SMTP password) cannot be created or changed."
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: [u8; 32] = [1; 32];
    const K2: [u8; 32] = [2; 32];

    #[test]
    fn seals_and_opens_with_rotation() {
        let old = SecretBox::from_keys(Some(K1), &[]);
        let s = old.seal("hunter2", b"row").unwrap();
        assert!(!s.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(s.key_id, key_id(&K1));
        let rotated = SecretBox::from_keys(Some(K2), &[K1]);
        assert_eq!(
            rotated.open(&s.ciphertext, &s.key_id, b"row").unwrap(),
            "hunter2"
        );
        assert_eq!(rotated.seal("x", b"row").unwrap().key_id, key_id(&K2));
        let new_only = SecretBox::from_keys(Some(K2), &[]);
        assert!(matches!(
            new_only.open(&s.ciphertext, &s.key_id, b"row"),
            Err(SecretError::UnknownKey { .. })
        ));
    }

    #[test]
    fn wrong_row_truncated_or_no_key_are_errors() {
        let b = SecretBox::from_keys(Some(K1), &[]);
        let s = b.seal("hunter2", b"row-1").unwrap();
        assert!(matches!(
            b.open(&s.ciphertext, &s.key_id, b"row-2"),
            Err(SecretError::Corrupt { .. })
        ));
        for n in 0..s.ciphertext.len() {
            assert!(b.open(&s.ciphertext[..n], &s.key_id, b"row-1").is_err());
        }
        let err = SecretBox::default().seal("x", b"row").unwrap_err();
        assert!(
            err.to_string().contains("OCTOISP_CP__SECRETS__KEY"),
            "{err}"
        );
    }

    #[test]
    fn bad_keys_are_named() {
        let cfg = SecretsConfig {
            key: Some("c2hvcnQ=".into()),
            ..SecretsConfig::default()
        };
        let err = SecretBox::from_config(&cfg).unwrap_err().to_string();
        assert!(
            err.contains("secrets.key") && err.contains("5 bytes"),
            "{err}"
        );
        let cfg = SecretsConfig {
            key: Some(STANDARD.encode(K1)),
            key_file: Some("/nonexistent".into()),
            ..SecretsConfig::default()
        };
        assert!(cfg.validate().is_err());
    }
}
