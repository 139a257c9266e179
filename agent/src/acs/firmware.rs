//! Firmware for CPEs: images served to Download RPCs from a local directory (checksum verified, Range requests),
//! and staged rollouts that halt themselves when too many devices fail or do not come back.
//!
//! An image `NAME` is the file `<firmware_dir>/NAME` with its SHA-256 in `<firmware_dir>/NAME.sha256` (hex, as
//! the control plane caches them); an image whose file does not match its checksum is never served. Images are
//! streamed from the open file (bounded memory per download, whatever the image size), whole or by `Range`.
//!
//! A campaign ([`Campaign`]) rolls an image out over a list of devices in cumulative stages (such as 5 %, 25 %,
//! 100 %). [`Campaign::decide`] is pure: given each started device's outcome it says whether to start the next
//! stage, wait, stop for good (more than `max_failure_pct` of the finished devices failed, a device that does
//! not report back within `come_back_ms` counting as failed), or that the campaign is done.

use std::collections::HashMap;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

pub use octoisp_shared::campaign::{Campaign, Decision, Outcome};
use sha2::{Digest as _, Sha256};

/// Why an image cannot be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FirmwareError {
    /// No such image (or a name with a path in it).
    #[error("no firmware image {0:?}")]
    NotFound(String),
    /// The file does not match its checksum.
    #[error("firmware image {0:?} does not match its checksum")]
    Checksum(String),
    /// The file could not be read.
    #[error("firmware image {name:?}: {message}")]
    Io {
        /// Image.
        name: String,
        /// Error.
        message: String,
    },
}

/// A directory of verified images.
///
/// Serving streams an image from disk ([`FirmwareDir::open`]): memory per download is one read buffer whatever
/// the image size. The checksum is checked once per file (by device, inode, size and modification time) and
/// remembered, so a thousand CPEs downloading the same image cost one pass of SHA-256, not a thousand.
#[derive(Debug, Clone)]
pub struct FirmwareDir {
    dir: PathBuf,
    /// Images whose file was found to match its checksum, by name.
    verified: Arc<Mutex<HashMap<String, Stamp>>>,
    /// Held while an image is hashed, so CPEs asking at once for an image not verified yet wait for one pass.
    hashing: Arc<Mutex<()>>,
}

/// What identifies the version of a file that was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// An image opened for serving, its checksum verified: the open file (which keeps these bytes even if the
/// image is replaced by a rename meanwhile) and its length.
#[derive(Debug)]
pub struct Image {
    /// The open file, at offset 0.
    pub file: std::fs::File,
    /// Its length in bytes.
    pub len: u64,
}

impl FirmwareDir {
    /// Images in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            verified: Arc::default(),
            hashing: Arc::default(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens an image for serving after checking its checksum (hashed from the open file the first time this
    /// version of the file is served, then remembered). Blocking: call it off the async threads.
    pub fn open(&self, name: &str) -> Result<Image, FirmwareError> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(FirmwareError::NotFound(name.into()));
        }
        let path = self.dir.join(name);
        let io = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => FirmwareError::NotFound(name.into()),
            _ => FirmwareError::Io {
                name: name.into(),
                message: e.to_string(),
            },
        };
        let mut file = std::fs::File::open(&path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(FirmwareError::NotFound(name.into()));
        }
        let stamp = Stamp::of(&meta);
        let image = |file| Image {
            file,
            len: stamp.len,
        };
        if self.is_verified(name, stamp) {
            return Ok(image(file));
        }
        let _hashing = self.hashing.lock().unwrap_or_else(PoisonError::into_inner);
        // Another download may have verified it while this one waited.
        if self.is_verified(name, stamp) {
            return Ok(image(file));
        }
        let expected = std::fs::read_to_string(sidecar(&path)).map_err(io)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        if hex::encode(hasher.finalize()) != expected.trim().to_ascii_lowercase() {
            self.verified
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(name);
            return Err(FirmwareError::Checksum(name.into()));
        }
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), stamp);
        Ok(image(file))
    }

    /// Reads a whole image after checking its checksum; returns its bytes (tools and tests: serving streams it
    /// with [`FirmwareDir::open`]).
    pub fn load(&self, name: &str) -> Result<Vec<u8>, FirmwareError> {
        let mut image = self.open(name)?;
        let mut data = Vec::with_capacity(usize::try_from(image.len).unwrap_or(0));
        image
            .file
            .read_to_end(&mut data)
            .map_err(|e| FirmwareError::Io {
                name: name.into(),
                message: e.to_string(),
            })?;
        Ok(data)
    }

    fn is_verified(&self, name: &str, stamp: Stamp) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            == Some(&stamp)
    }
}

/// Read size when hashing and serving images.
pub const CHUNK: usize = 64 * 1024;

fn sidecar(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".sha256");
    PathBuf::from(p)
}

/// A byte range of a `Range: bytes=...` header, resolved against a length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeReq {
    /// The whole file (no header, or one we ignore).
    Full,
    /// `start..=end`.
    Part(u64, u64),
    /// Cannot be satisfied (416).
    Unsatisfiable,
}

/// Resolves a single-range `Range` header against `len` (multiple ranges are served whole, as RFC 9110 allows).
pub fn parse_range(header: Option<&str>, len: u64) -> RangeReq {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeReq::Full;
    };
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeReq::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        match b.parse::<u64>() {
            Ok(0) | Err(_) => return RangeReq::Unsatisfiable,
            Ok(n) => (len.saturating_sub(n), len.saturating_sub(1)),
        }
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return RangeReq::Full;
        };
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            match b.parse::<u64>() {
                Ok(e) => e.min(len.saturating_sub(1)),
                Err(_) => return RangeReq::Full,
            }
        };
        (start, end)
    };
    if len == 0 || range.0 >= len || range.0 > range.1 {
        RangeReq::Unsatisfiable
    } else {
        RangeReq::Part(range.0, range.1)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 100), RangeReq::Full);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), RangeReq::Part(0, 9));
        assert_eq!(parse_range(Some("bytes=90-"), 100), RangeReq::Part(90, 99));
        assert_eq!(parse_range(Some("bytes=-10"), 100), RangeReq::Part(90, 99));
        assert_eq!(
            parse_range(Some("bytes=50-500"), 100),
            RangeReq::Part(50, 99)
        );
        assert_eq!(
            parse_range(Some("bytes=100-"), 100),
            RangeReq::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), RangeReq::Full);
    }

    #[test]
    fn checksums_are_verified_and_names_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fw.bin"), b"image").unwrap();
        std::fs::write(
            dir.path().join("fw.bin.sha256"),
            hex::encode(Sha256::digest(b"image")),
        )
        .unwrap();
        std::fs::write(dir.path().join("bad.bin"), b"tampered").unwrap();
        std::fs::write(
            dir.path().join("bad.bin.sha256"),
            hex::encode(Sha256::digest(b"image")),
        )
        .unwrap();
        let fw = FirmwareDir::new(dir.path());
        assert_eq!(fw.load("fw.bin").unwrap(), b"image");
        assert_eq!(
            fw.load("bad.bin"),
            Err(FirmwareError::Checksum("bad.bin".into()))
        );
        // An image changed after it was verified is checked again, not served from the remembered verdict.
        std::fs::write(dir.path().join("fw.bin"), b"image, altered").unwrap();
        assert_eq!(
            fw.load("fw.bin"),
            Err(FirmwareError::Checksum("fw.bin".into()))
        );
        assert!(matches!(
            fw.load("../fw.bin"),
            Err(FirmwareError::NotFound(_))
        ));
        assert!(matches!(
            fw.load("none.bin"),
            Err(FirmwareError::NotFound(_))
        ));
    }

    fn campaign() -> Campaign {
        Campaign {
            devices: (0..10).map(|i| format!("d{i}")).collect(),
            stages_pct: vec![20, 50, 100],
            max_failure_pct: 30.0,
            come_back_ms: 1_000,
        }
    }

    #[test]
    fn stages_advance_when_healthy() {
        let c = campaign();
        let mut o = HashMap::new();
        let Decision::Start(first) = c.decide(&o, 0) else {
            panic!()
        };
        assert_eq!(first, ["d0", "d1"]);
        for d in &first {
            o.insert(d.clone(), Outcome::InProgress(0));
        }
        assert_eq!(c.decide(&o, 10), Decision::Wait);
        for d in &first {
            o.insert(d.clone(), Outcome::Succeeded);
        }
        let Decision::Start(second) = c.decide(&o, 10) else {
            panic!()
        };
        assert_eq!(second.len(), 3);
        for d in c.devices.iter() {
            o.insert(d.clone(), Outcome::Succeeded);
        }
        assert_eq!(c.decide(&o, 10), Decision::Done);
    }

    #[test]
    fn halts_on_failures_and_on_devices_that_do_not_come_back() {
        let c = campaign();
        let mut o = HashMap::from([
            ("d0".to_owned(), Outcome::Succeeded),
            ("d1".to_owned(), Outcome::Failed),
        ]);
        assert_eq!(
            c.decide(&o, 0),
            Decision::Halt {
                failed: 1,
                finished: 2
            }
        );
        o.insert("d1".into(), Outcome::InProgress(0));
        assert_eq!(c.decide(&o, 999), Decision::Wait);
        assert_eq!(
            c.decide(&o, 1_000),
            Decision::Halt {
                failed: 1,
                finished: 2
            }
        );
    }
}
