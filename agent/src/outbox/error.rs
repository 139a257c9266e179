//! The outbox's error type: every variant names the outbox file and the operation.

use std::path::PathBuf;
use std::sync::Arc;

use octoisp_shared::MetricKind;
use thiserror::Error;

/// Why an outbox operation failed.
#[derive(Debug, Error)]
pub enum OutboxError {
    /// The configuration is inconsistent.
    #[error("invalid outbox configuration: {0}")]
    Config(String),
    /// The database file could not be opened or set up.
    #[error("cannot open outbox {path}: {source}{hint}", hint = open_hint(source))]
    Open {
        /// The outbox file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is damaged or is not a SQLite database at all.
    #[error(
        "outbox file {path} is corrupt or not a SQLite database ({source}); move it aside (its content is lost) \
         and restart to begin with an empty outbox"
    )]
    Corrupt {
        /// The outbox file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is a SQLite database that some other program owns.
    #[error(
        "{path} is a SQLite database but not an OctoISP outbox ({detail}); refusing to touch it"
    )]
    NotAnOutbox {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        detail: String,
    },
    /// The file was written by a newer agent.
    #[error(
        "outbox {path} has schema version {found}, newer than version {supported} that this agent knows"
    )]
    SchemaTooNew {
        /// The file.
        path: PathBuf,
        /// `user_version` found in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// A SQLite statement failed.
    #[error("outbox {path}: {op} failed: {source}")]
    Sqlite {
        /// The outbox file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The group commit that carried this append failed; nothing of it was stored.
    #[error("committing appends failed: {0}")]
    Commit(#[source] Arc<OutboxError>),
    /// Above the hard ceiling: the records were refused (not stored), counted and will be reported upstream.
    #[error(
        "outbox {path} is full: {bytes} bytes held, above its hard ceiling of {hard_ceiling_bytes} bytes: \
         {records} records refused (not stored; counted and reported in the next DropReport)"
    )]
    Full {
        /// The outbox file.
        path: PathBuf,
        /// Content held when the records were refused.
        bytes: u64,
        /// The configured hard ceiling.
        hard_ceiling_bytes: u64,
        /// How many records were refused.
        records: u64,
    },
    /// A sample names a series id that [`crate::outbox::Outbox::series_id`] never returned.
    #[error("samples reference unknown series ids {ids:?} (get ids from Outbox::series_id)")]
    UnknownSeries {
        /// The offending ids (at most a few).
        ids: Vec<u64>,
    },
    /// The series exists with another kind.
    #[error("series {device_key} {metric} {labels:?} is a {existing:?}, not a {requested:?}")]
    SeriesKindConflict {
        /// Device key of the series.
        device_key: String,
        /// Metric name.
        metric: String,
        /// Labels (sorted).
        labels: Vec<(String, String)>,
        /// Kind it was created with.
        existing: MetricKind,
        /// Kind asked for now.
        requested: MetricKind,
    },
    /// One record alone is larger than a batch may be.
    #[error("a record of {bytes} bytes is larger than batch_max_bytes ({max}); it cannot be sent")]
    TooLarge {
        /// Encoded size of the record.
        bytes: usize,
        /// The configured batch_max_bytes.
        max: usize,
    },
    /// No formed batch has this seq (already acked or abandoned, or never formed).
    #[error("outbox {path}: no pending batch with seq {seq}")]
    NoSuchBatch {
        /// The outbox file.
        path: PathBuf,
        /// The seq asked for.
        seq: u64,
    },
    /// The control plane does not know series that this outbox has no definition of either.
    #[error(
        "outbox {path}: batch {seq} references series {ids:?} that the outbox has no definition of"
    )]
    SeriesNotFound {
        /// The outbox file.
        path: PathBuf,
        /// The batch.
        seq: u64,
        /// The series without a definition.
        ids: Vec<u64>,
    },
    /// A stored batch could not be decoded; it was moved to the dead letters.
    #[error(
        "outbox {path}: stored batch {seq} cannot be decoded ({reason}); moved to dead letters"
    )]
    CorruptBatch {
        /// The outbox file.
        path: PathBuf,
        /// The batch.
        seq: u64,
        /// The decoding error.
        reason: String,
    },
    /// A stored row that cannot be used as it is (only rows that cannot be set aside, such as series).
    #[error("outbox {path}: row {id} of table {table} is damaged: {detail}")]
    CorruptRow {
        /// The outbox file.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// The row's id.
        id: i64,
        /// What is wrong.
        detail: String,
    },
    /// Serializing content failed.
    #[error("outbox: encoding {what} failed: {message}")]
    Encode {
        /// What was encoded.
        what: &'static str,
        /// The encoder's error.
        message: String,
    },
    /// The writer thread could not be started.
    #[error("outbox {path}: cannot start the writer thread: {source}")]
    Spawn {
        /// The outbox file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The writer thread has stopped (it panicked, or the outbox is being dropped).
    #[error("outbox {path}: the writer thread has stopped")]
    Closed {
        /// The outbox file.
        path: PathBuf,
    },
}

fn open_hint(err: &rusqlite::Error) -> &'static str {
    match err.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            " (another process, probably another agent, holds this outbox open)"
        }
        Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::PermissionDenied) => {
            " (check that the directory exists and is writable by the agent)"
        }
        _ => "",
    }
}

/// Attaches the outbox path and the operation to a SQLite error.
pub(crate) trait SqlContext<T> {
    /// Wraps the error in [`OutboxError::Sqlite`].
    fn sql(self, path: &std::path::Path, op: &'static str) -> Result<T, OutboxError>;
}

impl<T> SqlContext<T> for Result<T, rusqlite::Error> {
    fn sql(self, path: &std::path::Path, op: &'static str) -> Result<T, OutboxError> {
        self.map_err(|source| OutboxError::Sqlite {
            path: path.to_path_buf(),
            op,
            source,
        })
    }
}
