//! Firmware images fetched from the control plane over the agent's QUIC uplink, cached in `acs.firmware_dir`
//! for the CPEs of the POP (served by [`super::server`] at `/firmware/<sha256>`).
//!
//! ```text
//! ensure(sha) ── cached (<dir>/<sha> + <sha>.sha256)? ──▶ done
//!      │
//!      └─ stream: FirmwareFetch{sha, offset = len(<dir>/.partial/<sha>)} ─▶ FirmwareOffer::Sending{size, offset}
//!         raw bytes appended to .partial/<sha> ── stream ends ── len == size?
//!            ├─ SHA-256 of the whole file == sha ─▶ <sha>.sha256 written, file renamed into place
//!            └─ mismatch ─▶ .partial deleted, Checksum error (nothing is served)
//! ```
//!
//! A transfer that breaks off leaves `.partial/<sha>`: the next attempt asks for the rest only (the control
//! plane starts over at 0 when the offset is beyond the image). One transfer per image at a time: concurrent
//! downloads of one campaign's image wait for the first and then find it cached.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use octoisp_shared::{FirmwareFetch, FirmwareOffer, Message};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

use crate::uplink::wire;

/// Largest image accepted from the control plane, bytes (4 GiB, the control plane's own ceiling).
pub const MAX_IMAGE_BYTES: u64 = 4 << 30;
/// Largest `FirmwareOffer` frame.
const OFFER_LIMIT: usize = 64 * 1024;

/// Why an image could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The agent is not connected to the control plane now.
    #[error("the agent is not connected to the control plane: the image cannot be fetched now")]
    NotConnected,
    /// The control plane refused (no such image for this provider, storage unavailable).
    #[error("the control plane refused firmware image {sha256}: {message}")]
    Refused {
        /// Image.
        sha256: String,
        /// Its explanation.
        message: String,
    },
    /// The received bytes do not hash to the image's SHA-256: deleted, never served.
    #[error(
        "firmware image {sha256}: received bytes have SHA-256 {actual}: the transfer was corrupted; the partial file was deleted"
    )]
    Checksum {
        /// Expected.
        sha256: String,
        /// Received.
        actual: String,
    },
    /// The transfer broke off (the part received is kept and resumed next time).
    #[error(
        "firmware image {sha256}: transfer broke off after {received} of {size} bytes: {reason}"
    )]
    Broken {
        /// Image.
        sha256: String,
        /// Bytes held so far.
        received: u64,
        /// Whole size.
        size: u64,
        /// What happened.
        reason: String,
    },
    /// The protocol was not followed.
    #[error("firmware image {sha256}: {reason}")]
    Protocol {
        /// Image.
        sha256: String,
        /// What was wrong.
        reason: String,
    },
    /// The disk.
    #[error("firmware cache {path}: {source}")]
    Io {
        /// Where.
        path: String,
        /// Error.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The agent's current uplink connection, set by the uplink session while it is up. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct UplinkLink(Arc<Mutex<Option<quinn::Connection>>>);

impl UplinkLink {
    /// Records the connection now in use.
    pub fn set(&self, conn: quinn::Connection) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(conn);
        }
    }

    /// The connection, if one is up.
    pub fn current(&self) -> Option<quinn::Connection> {
        let g = self.0.lock().ok()?;
        g.as_ref().filter(|c| c.close_reason().is_none()).cloned()
    }
}

/// The firmware cache: one transfer per image at a time.
#[derive(Debug, Default)]
pub struct FirmwareCache {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Whether `<dir>/<sha256>` and its checksum file are there.
pub fn is_cached(dir: &Path, sha256: &str) -> bool {
    let file = dir.join(sha256);
    let sidecar = dir.join(format!("{sha256}.sha256"));
    file.is_file()
        && std::fs::read_to_string(sidecar).is_ok_and(|s| s.trim().eq_ignore_ascii_case(sha256))
}

impl FirmwareCache {
    /// Makes sure image `sha256` is in `dir`, fetching it over `conn` when it is not. Returns its path.
    pub async fn ensure(
        &self,
        dir: &Path,
        sha256: &str,
        conn: Option<quinn::Connection>,
    ) -> Result<PathBuf, FetchError> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(sha256.to_owned()).or_default().clone()
        };
        let _held = lock.lock().await;
        if is_cached(dir, sha256) {
            return Ok(dir.join(sha256));
        }
        let conn = conn.ok_or(FetchError::NotConnected)?;
        fetch(&conn, dir, sha256).await
    }
}

/// Fetches (or resumes) one image into `dir`.
pub async fn fetch(
    conn: &quinn::Connection,
    dir: &Path,
    sha256: &str,
) -> Result<PathBuf, FetchError> {
    let partial_dir = dir.join(".partial");
    tokio::fs::create_dir_all(&partial_dir)
        .await
        .map_err(io(&partial_dir))?;
    let partial = partial_dir.join(sha256);
    let held = match tokio::fs::metadata(&partial).await {
        Ok(m) => m.len(),
        Err(_) => 0,
    };
    let broken = |received: u64, size: u64, reason: String| FetchError::Broken {
        sha256: sha256.to_owned(),
        received,
        size,
        reason,
    };
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| broken(held, 0, e.to_string()))?;
    let req = Message::FirmwareFetch(FirmwareFetch {
        sha256: sha256.to_owned(),
        offset: held,
    });
    wire::write_message(&mut send, &req)
        .await
        .map_err(|e| broken(held, 0, e.to_string()))?;
    let _ = send.finish();
    let limits = octoisp_shared::Limits {
        max_frame_bytes: OFFER_LIMIT,
        max_decompressed_bytes: OFFER_LIMIT * 4,
    };
    let (size, offset) = match wire::read_frame(&mut recv, &limits).await {
        Ok(Message::FirmwareOffer(FirmwareOffer::Sending { size, offset })) => (size, offset),
        Ok(Message::FirmwareOffer(FirmwareOffer::Refused { message })) => {
            return Err(FetchError::Refused {
                sha256: sha256.to_owned(),
                message,
            });
        }
        Ok(other) => {
            return Err(FetchError::Protocol {
                sha256: sha256.to_owned(),
                reason: format!("unexpected answer {other:?}"),
            });
        }
        Err(e) => return Err(broken(held, 0, e.to_string())),
    };
    if size > MAX_IMAGE_BYTES || offset > held || offset > size {
        return Err(FetchError::Protocol {
            sha256: sha256.to_owned(),
            reason: format!("offer of {size} bytes from {offset} does not fit {held} bytes held"),
        });
    }
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&partial)
        .await
        .map_err(io(&partial))?;
    file.set_len(offset).await.map_err(io(&partial))?;
    let mut file = tokio::io::BufWriter::new(file);
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(io(&partial))?;
    let mut received = offset;
    let mut buf = vec![0u8; 64 * 1024];
    let result = loop {
        match recv.read(&mut buf).await {
            Ok(Some(n)) => {
                received += n as u64;
                if received > size {
                    break Err(FetchError::Protocol {
                        sha256: sha256.to_owned(),
                        reason: format!(
                            "the control plane sent more than the {size} bytes it offered"
                        ),
                    });
                }
                if let Err(e) = file.write_all(&buf[..n]).await {
                    break Err(io(&partial)(e));
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(broken(received, size, e.to_string())),
        }
    };
    file.flush().await.map_err(io(&partial))?;
    let file = file.into_inner();
    file.sync_all().await.map_err(io(&partial))?;
    drop(file);
    if let Err(err) = result {
        if matches!(err, FetchError::Protocol { .. }) {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        return Err(err);
    }
    if received < size {
        return Err(broken(received, size, "the stream ended early".into()));
    }
    let actual = hash_file(&partial).await.map_err(io(&partial))?;
    if actual != sha256 {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(FetchError::Checksum {
            sha256: sha256.to_owned(),
            actual,
        });
    }
    let dest = dir.join(sha256);
    let sidecar = dir.join(format!("{sha256}.sha256"));
    let sidecar_tmp = partial_dir.join(format!("{sha256}.sha256"));
    tokio::fs::write(&sidecar_tmp, format!("{sha256}\n"))
        .await
        .map_err(io(&sidecar_tmp))?;
    tokio::fs::rename(&partial, &dest)
        .await
        .map_err(io(&dest))?;
    tokio::fs::rename(&sidecar_tmp, &sidecar)
        .await
        .map_err(io(&sidecar))?;
    tracing::info!(
        sha256,
        size,
        resumed_from = offset,
        "Firmware image fetched from the control plane."
    );
    Ok(dest)
}

/// SHA-256 of a file, lowercase hex.
pub async fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}
