//! Web Push: the provider's VAPID key pair (RFC 8292: an ES256 JWT per push service origin) and the message
//! encryption of RFC 8291 (`aes128gcm`, RFC 8188), on aws-lc-rs. The crypto functions take their inputs as
//! arguments and do no I/O; [`vapid_key`] reads (and makes once) the key pair in the tenant's transaction.

use aws_lc_rs::agreement::{self, ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use aws_lc_rs::{aead, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::secretbox::SecretBox;

/// Record size announced in the `aes128gcm` header (one record carries the whole message).
const RECORD_SIZE: u32 = 4096;
/// Largest plaintext accepted: one record minus the padding delimiter and the AEAD tag.
pub const MAX_PLAINTEXT: usize = 3800;
/// Lifetime of a VAPID JWT, seconds (RFC 8292 allows at most 24 h).
const JWT_TTL_SECS: i64 = 12 * 3600;

/// Why a push message could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The subscription's keys are not a P-256 point and a 16-byte secret.
    #[error("invalid subscription keys: {0}")]
    BadSubscription(&'static str),
    /// The payload is larger than one record.
    #[error("push payload of {0} bytes is too large")]
    TooLarge(usize),
    /// The endpoint is not an http(s) URL.
    #[error("invalid push endpoint")]
    BadEndpoint,
    /// The stored VAPID key is unusable, or the crypto library failed.
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
    /// The stored key is sealed with a key that is not configured, or does not open.
    #[error("cannot open the VAPID key: {0}")]
    Sealed(#[from] crate::secretbox::SecretError),
    /// Reading or storing the key pair failed.
    #[error("cannot load the VAPID key: {0}")]
    Db(#[from] sqlx::Error),
}

/// A provider's VAPID key pair.
pub struct VapidKey {
    pair: EcdsaKeyPair,
    /// The public key, uncompressed point, base64url without padding (the console's `applicationServerKey`).
    pub public_key: String,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl VapidKey {
    /// A new random key pair, and its PKCS#8 form to store.
    pub fn generate() -> Result<(VapidKey, Vec<u8>), PushError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| PushError::Crypto("generate the VAPID key"))?;
        let der = pkcs8.as_ref().to_vec();
        Ok((VapidKey::from_pkcs8(&der)?, der))
    }

    /// The key pair stored as PKCS#8.
    pub fn from_pkcs8(der: &[u8]) -> Result<VapidKey, PushError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| PushError::Crypto("the stored VAPID key is not a P-256 PKCS#8 key"))?;
        let public_key = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        Ok(VapidKey { pair, public_key })
    }

    /// The `Authorization` header value for a push to `endpoint`: `vapid t=<ES256 JWT>, k=<public key>`, the JWT's
    /// `aud` being the endpoint's origin, `exp` `now_unix` + 12 h and `sub` `subject`.
    pub fn authorization(
        &self,
        endpoint: &str,
        subject: &str,
        now_unix: i64,
    ) -> Result<String, PushError> {
        let aud = origin(endpoint).ok_or(PushError::BadEndpoint)?;
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims =
            serde_json::json!({"aud": aud, "exp": now_unix + JWT_TTL_SECS, "sub": subject});
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes());
        let signing_input = format!("{header}.{claims}");
        let sig = self
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| PushError::Crypto("sign the VAPID JWT"))?;
        Ok(format!(
            "vapid t={signing_input}.{}, k={}",
            URL_SAFE_NO_PAD.encode(sig.as_ref()),
            self.public_key
        ))
    }
}

/// `scheme://host[:port]` of an http(s) URL.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    if host.is_empty() || host.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{host}"))
}

/// The stored form of a VAPID private key: plaintext (from before 0013, or made with no key configured) or sealed.
type StoredVapid = (Option<Vec<u8>>, Option<Vec<u8>>, Option<String>);

async fn stored_vapid(
    tx: &mut Transaction<'static, Postgres>,
    provider_id: Uuid,
) -> Result<Option<StoredVapid>, sqlx::Error> {
    sqlx::query_as(
        "SELECT private_key, private_key_ciphertext, private_key_key_id FROM push_vapid_keys WHERE provider_id = $1",
    )
    .bind(provider_id)
    .fetch_optional(&mut **tx)
    .await
}

fn open_vapid(
    secrets: &SecretBox,
    provider_id: Uuid,
    stored: StoredVapid,
) -> Result<VapidKey, PushError> {
    match stored {
        (_, Some(ct), Some(key_id)) => {
            let der =
                secrets.open_bytes(&ct, &key_id, &crate::secretbox::vapid_aad(provider_id))?;
            VapidKey::from_pkcs8(&der)
        }
        (Some(der), _, _) => VapidKey::from_pkcs8(&der),
        _ => Err(PushError::Crypto("the stored VAPID key is empty")),
    }
}

/// The provider's VAPID key, made and stored on first use (`tx` is a transaction of that provider). The private key
/// is stored sealed by `secrets` when a key is configured, in plaintext otherwise (sealed by the next start-up
/// pass with a key).
pub async fn vapid_key(
    tx: &mut Transaction<'static, Postgres>,
    provider_id: Uuid,
    secrets: &SecretBox,
) -> Result<VapidKey, PushError> {
    if let Some(stored) = stored_vapid(tx, provider_id).await? {
        return open_vapid(secrets, provider_id, stored);
    }
    let (key, der) = VapidKey::generate()?;
    let (plain, sealed, key_id) = match secrets.current_key_id() {
        Some(_) => {
            let s = secrets.seal_bytes(&der, &crate::secretbox::vapid_aad(provider_id))?;
            (None, Some(s.ciphertext), Some(s.key_id))
        }
        None => (Some(der), None, None),
    };
    // Two instances may race: the first insert wins and both read it back.
    sqlx::query(
        "INSERT INTO push_vapid_keys (provider_id, private_key, private_key_ciphertext, private_key_key_id, \
         public_key) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (provider_id) DO NOTHING",
    )
    .bind(provider_id)
    .bind(&plain)
    .bind(&sealed)
    .bind(&key_id)
    .bind(&key.public_key)
    .execute(&mut **tx)
    .await?;
    let stored = stored_vapid(tx, provider_id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    open_vapid(secrets, provider_id, stored)
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// Encrypts `plaintext` for the subscription whose keys are `p256dh` (base64url, 65-byte uncompressed point) and
/// `auth` (base64url, 16 bytes): the `aes128gcm` body of RFC 8291, with a fresh ephemeral key and salt.
pub fn encrypt(plaintext: &[u8], p256dh: &str, auth: &str) -> Result<Vec<u8>, PushError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(PushError::TooLarge(plaintext.len()));
    }
    let ua_public = URL_SAFE_NO_PAD
        .decode(p256dh.trim_end_matches('=').as_bytes())
        .map_err(|_| PushError::BadSubscription("p256dh is not base64url"))?;
    let auth_secret = URL_SAFE_NO_PAD
        .decode(auth.trim_end_matches('=').as_bytes())
        .map_err(|_| PushError::BadSubscription("auth is not base64url"))?;
    if ua_public.len() != 65 || ua_public[0] != 4 {
        return Err(PushError::BadSubscription(
            "p256dh is not an uncompressed P-256 point",
        ));
    }
    if auth_secret.len() != 16 {
        return Err(PushError::BadSubscription("auth is not 16 bytes"));
    }
    let rng = SystemRandom::new();
    let ephemeral = EphemeralPrivateKey::generate(&ECDH_P256, &rng)
        .map_err(|_| PushError::Crypto("generate the ephemeral key"))?;
    let as_public = ephemeral
        .compute_public_key()
        .map_err(|_| PushError::Crypto("compute the ephemeral public key"))?;
    let as_public = as_public.as_ref().to_vec();
    let ecdh_secret: Vec<u8> = agreement::agree_ephemeral(
        ephemeral,
        UnparsedPublicKey::new(&ECDH_P256, &ua_public),
        PushError::BadSubscription("p256dh is not a point of P-256"),
        |secret| Ok(secret.to_vec()),
    )?;
    let salt: [u8; 16] = rand::random();
    let (cek, nonce) = derive(&ecdh_secret, &auth_secret, &ua_public, &as_public, &salt);

    let mut record = Vec::with_capacity(plaintext.len() + 17);
    record.extend_from_slice(plaintext);
    record.push(0x02); // last-record padding delimiter
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_128_GCM, &cek)
            .map_err(|_| PushError::Crypto("AES key"))?,
    );
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::empty(),
        &mut record,
    )
    .map_err(|_| PushError::Crypto("seal"))?;

    let mut body = Vec::with_capacity(16 + 4 + 1 + 65 + record.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(&as_public);
    body.extend_from_slice(&record);
    Ok(body)
}

/// The content encryption key and nonce of RFC 8291 section 3.4 / RFC 8188 section 2.2.
pub fn derive(
    ecdh_secret: &[u8],
    auth_secret: &[u8],
    ua_public: &[u8],
    as_public: &[u8],
    salt: &[u8],
) -> ([u8; 16], [u8; 12]) {
    // HKDF-Extract(auth_secret, ecdh_secret), then Expand with "WebPush: info" || 0 || ua_public || as_public.
    let prk_key = hmac_sha256(auth_secret, &[ecdh_secret]);
    let ikm = hmac_sha256(
        &prk_key,
        &[b"WebPush: info\0", ua_public, as_public, &[1u8]],
    );
    let prk = hmac_sha256(salt, &[&ikm]);
    let cek_full = hmac_sha256(&prk, &[b"Content-Encoding: aes128gcm\0", &[1u8]]);
    let nonce_full = hmac_sha256(&prk, &[b"Content-Encoding: nonce\0", &[1u8]]);
    let mut cek = [0u8; 16];
    cek.copy_from_slice(&cek_full[..16]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&nonce_full[..12]);
    (cek, nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_and_host() {
        assert_eq!(
            origin("https://fcm.googleapis.com/fcm/send/abc").as_deref(),
            Some("https://fcm.googleapis.com")
        );
        assert_eq!(
            origin("http://127.0.0.1:8080/push/1?x").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert!(origin("ftp://x/y").is_none());
        assert!(origin("https://user@x/").is_none());
    }

    #[test]
    fn bad_subscription_keys_are_refused_not_panicking() {
        assert!(encrypt(b"x", "AAAA", "AAAAAAAAAAAAAAAAAAAAAA").is_err());
        assert!(encrypt(b"x", "!!!", "???").is_err());
        let point = URL_SAFE_NO_PAD.encode([4u8; 65]);
        assert!(encrypt(b"x", &point, "AAAAAAAAAAAAAAAAAAAAAA").is_err());
    }
}
