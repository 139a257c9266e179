//! CPE firmware held by the control plane: the image files on disk, and the staged rollouts ([`campaign`]).
//!
//! Layout under `[firmware] dir`: `<provider_id>/<sha256>` per image (content-addressed within a provider, so
//! the same bytes uploaded twice are stored once), and `.tmp/` for uploads in progress. An upload is streamed
//! to a temporary file, hashed on the way, capped at `max_image_mib`, synced, checked against the SHA-256 the
//! client gave (if any) and only then renamed into place: a file under its SHA-256 name is always whole. The
//! row in `firmware_images` (migration 0014) says what the image is; agents fetch it by SHA-256 over QUIC
//! (`crate::ingest`), only from their own provider's images.

pub mod campaign;

use std::path::{Path, PathBuf};

use futures::StreamExt as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use uuid::Uuid;

/// `[firmware]` of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FirmwareConfig {
    /// Directory of the image files; every API and ingest instance must see the same one (shared storage).
    pub dir: PathBuf,
    /// Largest image accepted, MiB (an upload beyond it is refused with 413 and nothing is kept).
    pub max_image_mib: u64,
    /// Longest an upload may take, seconds (instead of `api.request_timeout_secs` for that route).
    pub upload_timeout_secs: u64,
    /// How often the workers advance running campaigns, seconds.
    pub campaign_tick_secs: u64,
}

impl Default for FirmwareConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/octoisp/firmware"),
            max_image_mib: 256,
            upload_timeout_secs: 900,
            campaign_tick_secs: 5,
        }
    }
}

impl FirmwareConfig {
    /// Checks the values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=4096).contains(&self.max_image_mib) {
            return Err("firmware.max_image_mib must be 1..=4096".into());
        }
        if self.upload_timeout_secs == 0 || self.campaign_tick_secs == 0 {
            return Err(
                "firmware.upload_timeout_secs and firmware.campaign_tick_secs must be > 0".into(),
            );
        }
        Ok(())
    }

    /// Largest image, bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_image_mib * 1024 * 1024
    }

    /// Where the image `sha256` of `provider` is stored.
    pub fn image_path(&self, provider: Uuid, sha256: &str) -> PathBuf {
        self.dir.join(provider.to_string()).join(sha256)
    }
}

/// Why an upload was not stored.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Larger than `max_image_mib`.
    #[error("the image is larger than {0} bytes (firmware.max_image_mib)")]
    TooLarge(u64),
    /// Nothing was sent.
    #[error("the image is empty")]
    Empty,
    /// The bytes do not match the SHA-256 the client gave.
    #[error(
        "sha256: the upload's SHA-256 is {actual}, not {expected}: the file was damaged on the way"
    )]
    Checksum {
        /// What the client said.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// The client's body broke off.
    #[error("the upload broke off: {0}")]
    Body(String),
    /// The disk.
    #[error("storing the image: {0}")]
    Io(#[from] std::io::Error),
}

/// An image stored on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
    /// Its size, bytes.
    pub size: u64,
}

/// Removes a temporary file unless disarmed.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Streams `body` to disk for `provider`: hashed on the way, at most `max_bytes()`, checked against `expected`,
/// then renamed to its SHA-256 name. Nothing is left behind when it fails.
pub async fn store_upload(
    cfg: &FirmwareConfig,
    provider: Uuid,
    body: axum::body::Body,
    expected: Option<&str>,
) -> Result<Stored, UploadError> {
    let tmp_dir = cfg.dir.join(".tmp");
    tokio::fs::create_dir_all(&tmp_dir).await?;
    let tmp_path = tmp_dir.join(format!("{}.upload", Uuid::now_v7()));
    let mut guard = TempFile(Some(tmp_path.clone()));
    let mut file = tokio::fs::File::create(&tmp_path).await?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let max = cfg.max_bytes();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| UploadError::Body(e.to_string()))?;
        size += chunk.len() as u64;
        if size > max {
            return Err(UploadError::TooLarge(max));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await?;
    }
    if size == 0 {
        return Err(UploadError::Empty);
    }
    file.sync_all().await?;
    drop(file);
    let sha256 = hex::encode(hasher.finalize());
    if let Some(expected) = expected
        && !expected.eq_ignore_ascii_case(&sha256)
    {
        return Err(UploadError::Checksum {
            expected: expected.to_ascii_lowercase(),
            actual: sha256,
        });
    }
    let dest = cfg.image_path(provider, &sha256);
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    tokio::fs::rename(&tmp_path, &dest).await?;
    guard.0 = None;
    Ok(Stored { sha256, size })
}

/// Removes the file of an image no row refers to any more (a missing file is fine).
pub async fn remove_file(cfg: &FirmwareConfig, provider: Uuid, sha256: &str) {
    let path = cfg.image_path(provider, sha256);
    match tokio::fs::remove_file(&path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "Cannot remove a deleted firmware image's file.")
        }
    }
}

/// Whether `path` holds an image of exactly `size` bytes.
pub async fn file_matches(path: &Path, size: u64) -> bool {
    tokio::fs::metadata(path)
        .await
        .is_ok_and(|m| m.is_file() && m.len() == size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> FirmwareConfig {
        FirmwareConfig {
            dir: dir.to_path_buf(),
            max_image_mib: 1,
            ..FirmwareConfig::default()
        }
    }

    #[tokio::test]
    async fn uploads_are_content_addressed_checked_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = cfg(dir.path());
        let provider = Uuid::now_v7();
        let data = vec![7u8; 300_000];
        let sha = hex::encode(Sha256::digest(&data));
        let stored = store_upload(
            &cfg,
            provider,
            axum::body::Body::from(data.clone()),
            Some(&sha),
        )
        .await
        .unwrap();
        assert_eq!(
            stored,
            Stored {
                sha256: sha.clone(),
                size: 300_000
            }
        );
        assert_eq!(std::fs::read(cfg.image_path(provider, &sha)).unwrap(), data);

        let wrong = "0".repeat(64);
        let err = store_upload(
            &cfg,
            provider,
            axum::body::Body::from(vec![1u8; 10]),
            Some(&wrong),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, UploadError::Checksum { .. }), "{err}");
        let err = store_upload(
            &cfg,
            provider,
            axum::body::Body::from(vec![1u8; 2 << 20]),
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, UploadError::TooLarge(_)), "{err}");
        // Refused uploads leave nothing behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join(".tmp")).unwrap().count(),
            0
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join(provider.to_string()))
                .unwrap()
                .count(),
            1
        );
    }
}
