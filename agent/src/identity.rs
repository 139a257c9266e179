//! The agent's enrolled identity on disk: its key, its certificate, the control plane CA, and what enrollment
//! told it.
//!
//! Layout (`<state_dir>/identity/`, the directory the daemon's config names):
//!
//! ```text
//! identity/
//!   agent.key   PKCS#8 private key, PEM, mode 0600 (never leaves the machine)
//!   agent.pem   the agent's certificate, signed by the control plane CA
//!   ca.pem      the control plane CA certificate (the only trust anchor of the uplink)
//!   agent.json  agent id, provider, POP, the server it enrolled with, when, and the CA fingerprint
//! ```
//!
//! The directory is replaced as a whole: a new identity is written into a sibling temporary directory, synced,
//! and renamed into place, so a crash leaves either the old identity or the new one, never a key of one with
//! the certificate of the other. An identity is "present" when `agent.json` exists.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// File name of the private key.
pub const KEY_FILE: &str = "agent.key";
/// File name of the agent certificate.
pub const CERT_FILE: &str = "agent.pem";
/// File name of the CA certificate.
pub const CA_FILE: &str = "ca.pem";
/// File name of the metadata.
pub const META_FILE: &str = "agent.json";

/// Errors reading or writing the identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A file exists but its content is not what it should be.
    #[error("invalid identity file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An identity exists and overwriting it was not asked for.
    #[error("an identity already exists in {0}: pass --force to replace it")]
    Exists(PathBuf),
}

/// What enrollment told the agent, stored as `agent.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityMeta {
    /// The agent's id (also in its certificate).
    pub agent_id: Uuid,
    /// Provider the agent belongs to.
    pub provider_id: Uuid,
    /// POP the agent serves.
    pub pop_id: Uuid,
    /// `HOST:PORT` the agent enrolled with; the uplink's default server.
    pub server: String,
    /// Lowercase hex SHA-256 of the CA certificate.
    pub ca_fingerprint: String,
    /// When enrollment completed, milliseconds since the Unix epoch.
    pub enrolled_at_ms: i64,
}

/// A complete identity: metadata plus the PEM files.
#[derive(Clone)]
pub struct Identity {
    /// The agent's id.
    pub agent_id: Uuid,
    /// Provider the agent belongs to.
    pub provider_id: Uuid,
    /// POP the agent serves.
    pub pop_id: Uuid,
    /// `HOST:PORT` the agent enrolled with.
    pub server: String,
    /// Everything in `agent.json`.
    pub meta: IdentityMeta,
    /// The agent's certificate, PEM.
    pub cert_pem: String,
    /// The agent's private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The control plane CA certificate, PEM.
    pub ca_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key stays out of logs.
        f.debug_struct("Identity")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Builds an identity from its parts.
    pub fn new(meta: IdentityMeta, cert_pem: String, key_pem: String, ca_pem: String) -> Identity {
        Identity {
            agent_id: meta.agent_id,
            provider_id: meta.provider_id,
            pop_id: meta.pop_id,
            server: meta.server.clone(),
            meta,
            cert_pem,
            key_pem,
            ca_pem,
        }
    }

    /// Whether `dir` holds an identity (its `agent.json` exists).
    pub fn exists(dir: &Path) -> bool {
        dir.join(META_FILE).exists()
    }

    /// Loads the identity in `dir`: `Ok(None)` when there is none (not enrolled), an error when it is incomplete or
    /// unreadable. The certificates and the key are parsed, so a damaged file is reported here, not at connect time.
    pub fn load(dir: &Path) -> Result<Option<Identity>, IdentityError> {
        let meta_path = dir.join(META_FILE);
        let meta_text = match fs::read_to_string(&meta_path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(IdentityError::Io {
                    op: "read",
                    path: meta_path,
                    source,
                });
            }
        };
        let meta: IdentityMeta =
            serde_json::from_str(&meta_text).map_err(|err| IdentityError::Invalid {
                path: meta_path.clone(),
                reason: err.to_string(),
            })?;
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|source| IdentityError::Io {
                op: "read",
                path,
                source,
            })
        };
        let identity = Identity::new(meta, read(CERT_FILE)?, read(KEY_FILE)?, read(CA_FILE)?);
        identity
            .cert_chain()
            .map_err(|reason| invalid(dir, CERT_FILE, reason))?;
        identity
            .private_key()
            .map_err(|reason| invalid(dir, KEY_FILE, reason))?;
        identity
            .ca_der()
            .map_err(|reason| invalid(dir, CA_FILE, reason))?;
        Ok(Some(identity))
    }

    /// Writes the identity to `dir`, replacing the directory as a whole (see the module doc). Refuses to replace an
    /// existing identity unless `force`; the replaced one is kept as `<dir>.previous`.
    pub fn store(&self, dir: &Path, force: bool) -> Result<(), IdentityError> {
        if Identity::exists(dir) && !force {
            return Err(IdentityError::Exists(dir.to_path_buf()));
        }
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "identity".into());
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|source| io_err("create directory", parent, source))?;
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|source| io_err("remove", &tmp, source))?;
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(|source| io_err("create directory", &tmp, source))?;
        let meta_json =
            serde_json::to_vec_pretty(&self.meta).map_err(|err| IdentityError::Invalid {
                path: tmp.join(META_FILE),
                reason: err.to_string(),
            })?;
        write_file(&tmp.join(KEY_FILE), self.key_pem.as_bytes(), 0o600)?;
        write_file(&tmp.join(CERT_FILE), self.cert_pem.as_bytes(), 0o644)?;
        write_file(&tmp.join(CA_FILE), self.ca_pem.as_bytes(), 0o644)?;
        write_file(&tmp.join(META_FILE), &meta_json, 0o644)?;
        sync_dir(&tmp);
        if dir.exists() {
            let previous = parent.join(format!("{name}.previous"));
            if previous.exists() {
                fs::remove_dir_all(&previous)
                    .map_err(|source| io_err("remove", &previous, source))?;
            }
            fs::rename(dir, &previous).map_err(|source| io_err("rename", dir, source))?;
        }
        fs::rename(&tmp, dir).map_err(|source| io_err("rename", &tmp, source))?;
        sync_dir(parent);
        Ok(())
    }

    /// The agent's certificate chain for TLS client authentication (the leaf alone).
    pub fn cert_chain(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let chain: Vec<_> = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|err| format!("not a PEM certificate: {err}"))?;
        if chain.is_empty() {
            return Err("no certificate in the file".into());
        }
        Ok(chain)
    }

    /// The agent's private key.
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, String> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|err| format!("not a PEM private key: {err}"))
    }

    /// The control plane CA certificate.
    pub fn ca_der(&self) -> Result<CertificateDer<'static>, String> {
        CertificateDer::from_pem_slice(self.ca_pem.as_bytes())
            .map_err(|err| format!("not a PEM certificate: {err}"))
    }
}

fn invalid(dir: &Path, name: &str, reason: String) -> IdentityError {
    IdentityError::Invalid {
        path: dir.join(name),
        reason,
    }
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> IdentityError {
    IdentityError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), IdentityError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| io_err("create", path, source))?;
    file.write_all(contents)
        .map_err(|source| io_err("write", path, source))?;
    file.sync_all()
        .map_err(|source| io_err("sync", path, source))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn sample(agent_id: Uuid) -> Identity {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["a".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let meta = IdentityMeta {
            agent_id,
            provider_id: Uuid::new_v4(),
            pop_id: Uuid::new_v4(),
            server: "127.0.0.1:4433".into(),
            ca_fingerprint: "00".repeat(32),
            enrolled_at_ms: 1,
        };
        Identity::new(meta, cert.pem(), key.serialize_pem(), cert.pem())
    }

    #[test]
    fn store_load_and_refuse_overwrite() {
        let state = tempfile::tempdir().expect("tempdir");
        let dir = state.path().join("identity");
        assert!(Identity::load(&dir).expect("load").is_none());
        let first = sample(Uuid::new_v4());
        first.store(&dir, false).expect("store");
        let mode = fs::metadata(dir.join(KEY_FILE))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = Identity::load(&dir).expect("load").expect("present");
        assert_eq!(loaded.meta, first.meta);

        let second = sample(Uuid::new_v4());
        assert!(matches!(
            second.store(&dir, false),
            Err(IdentityError::Exists(_))
        ));
        second.store(&dir, true).expect("forced store");
        assert_eq!(
            Identity::load(&dir)
                .expect("load")
                .expect("present")
                .agent_id,
            second.agent_id
        );
        assert!(
            state
                .path()
                .join("identity.previous")
                .join(META_FILE)
                .exists()
        );
    }
}
