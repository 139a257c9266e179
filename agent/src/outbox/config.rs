//! Configuration of the outbox: where it lives, how much it may hold, how durable a commit is and how batches
//! are cut.

use std::path::PathBuf;

use crate::outbox::error::OutboxError;

/// SQLite `synchronous` setting of the outbox database (it always runs in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// `synchronous=FULL`: the WAL is fsynced at every commit, so a committed append survives a power loss.
    Full,
    /// `synchronous=NORMAL`: fsync only at checkpoints; a committed append survives a crash of the process but the
    /// last commits may be lost when the machine loses power.
    Normal,
}

impl Synchronous {
    /// The value given to `PRAGMA synchronous`.
    pub(crate) fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Everything [`crate::outbox::Outbox::open`] needs. [`OutboxConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// The SQLite database file (created with its schema when missing). SQLite keeps `<path>-wal` beside it.
    pub path: PathBuf,
    /// Soft cap on the content held (chunks plus formed batches), in bytes: above it the oldest chunks that hold
    /// only samples are deleted, counted and reported in a [`octoisp_shared::DropReport`].
    pub max_bytes: u64,
    /// Hard ceiling, in bytes, at least `max_bytes`: above it new samples are dropped (counted) and new records are
    /// refused with [`OutboxError::Full`] (counted).
    pub hard_ceiling_bytes: u64,
    /// Durability of a commit.
    pub synchronous: Synchronous,
    /// Most samples in one batch (a batch always takes at least one chunk, and no chunk holds more than this).
    pub batch_max_samples: usize,
    /// Target size of an encoded batch frame, in bytes; a batch holding a single chunk may exceed it.
    pub batch_max_bytes: usize,
    /// zstd level of batch frames.
    pub zstd_level: i32,
}

impl OutboxConfig {
    /// The defaults for an outbox stored at `path`: 1 GiB soft cap, 1.125 GiB hard ceiling, `synchronous=FULL`,
    /// batches of at most 50 000 samples and about 4 MiB, zstd level 3.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        OutboxConfig {
            path: path.into(),
            max_bytes: 1024 << 20,
            hard_ceiling_bytes: 1152 << 20,
            synchronous: Synchronous::Full,
            batch_max_samples: 50_000,
            batch_max_bytes: 4 << 20,
            zstd_level: 3,
        }
    }

    /// Checks the values against each other; [`crate::outbox::Outbox::open`] calls it.
    pub fn validate(&self) -> Result<(), OutboxError> {
        let bad = |msg: String| Err(OutboxError::Config(msg));
        if self.max_bytes == 0 {
            return bad("max_bytes must be at least 1".into());
        }
        if self.hard_ceiling_bytes < self.max_bytes {
            return bad(format!(
                "hard_ceiling_bytes ({}) must be at least max_bytes ({})",
                self.hard_ceiling_bytes, self.max_bytes
            ));
        }
        if self.batch_max_samples == 0 {
            return bad("batch_max_samples must be at least 1".into());
        }
        if self.batch_max_bytes < 1024 {
            return bad(format!(
                "batch_max_bytes ({}) must be at least 1024",
                self.batch_max_bytes
            ));
        }
        Ok(())
    }
}
