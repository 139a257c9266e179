//! Opening the database file: PRAGMAs, identification of the file and schema migrations (`user_version`).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::outbox::config::OutboxConfig;
use crate::outbox::error::OutboxError;

/// `PRAGMA application_id` of an outbox file ("OCOB"), so that the agent never adopts a foreign database.
pub(crate) const APPLICATION_ID: i64 = 0x4F43_4F42;
/// Newest schema version this build writes (`PRAGMA user_version`).
pub(crate) const SCHEMA_VERSION: i64 = 1;
/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Keys of the `meta` table.
pub(crate) mod meta {
    /// Next batch seq to assign (starts at 1, never reused).
    pub(crate) const NEXT_SEQ: &str = "next_seq";
    /// Samples dropped since the outbox was created (disk cap, hard ceiling, dead letters).
    pub(crate) const SAMPLES_DROPPED_TOTAL: &str = "samples_dropped_total";
    /// Records refused at the hard ceiling since the outbox was created.
    pub(crate) const RECORDS_REFUSED_TOTAL: &str = "records_refused_total";
    /// Records lost to dead letters since the outbox was created.
    pub(crate) const RECORDS_DEAD_TOTAL: &str = "records_dead_total";
}

/// Version 1 of the schema. See the module documentation of [`crate::outbox`] for what each table means.
const SCHEMA_V1: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES
    ('next_seq', 1), ('samples_dropped_total', 0), ('records_refused_total', 0), ('records_dead_total', 0);

CREATE TABLE series (
    id         INTEGER PRIMARY KEY,
    device_key TEXT    NOT NULL,
    metric     TEXT    NOT NULL,
    labels     BLOB    NOT NULL,
    kind       INTEGER NOT NULL,
    confirmed  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (device_key, metric, labels)
);

CREATE TABLE chunks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    n_samples  INTEGER NOT NULL,
    n_records  INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    data       BLOB    NOT NULL
);
CREATE INDEX chunks_samples_only ON chunks (id) WHERE kind = 0;
CREATE INDEX chunks_drop_reports ON chunks (id) WHERE kind = 2;

CREATE TABLE batches (
    seq           INTEGER PRIMARY KEY,
    created_ms    INTEGER NOT NULL,
    settled_below INTEGER NOT NULL,
    n_samples     INTEGER NOT NULL,
    n_records     INTEGER NOT NULL,
    frame         BLOB    NOT NULL
);

CREATE TABLE batch_series (
    seq       INTEGER NOT NULL REFERENCES batches (seq) ON DELETE CASCADE,
    series_id INTEGER NOT NULL REFERENCES series (id),
    PRIMARY KEY (seq, series_id)
) WITHOUT ROWID;

CREATE TABLE state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE dead_letters (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    origin     TEXT    NOT NULL,
    origin_id  INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    dead_ms    INTEGER NOT NULL,
    n_samples  INTEGER NOT NULL,
    n_records  INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    data       BLOB    NOT NULL
);
";

/// Opens (creating when missing) the outbox file, applies the PRAGMAs and brings the schema to
/// [`SCHEMA_VERSION`].
pub(crate) fn open(cfg: &OutboxConfig) -> Result<Connection, OutboxError> {
    let path = cfg.path.as_path();
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| open_error(path, e))?;
    // One connection per process, and no other process may open the file while the agent runs: EXCLUSIVE locking,
    // set before WAL is entered, also keeps the WAL index in heap memory instead of a `-shm` file.
    let mode: String = conn
        .query_row("PRAGMA locking_mode = EXCLUSIVE", [], |r| r.get(0))
        .map_err(|e| open_error(path, e))?;
    debug_assert_eq!(mode.to_ascii_lowercase(), "exclusive");
    let journal: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| open_error(path, e))?;
    if !journal.eq_ignore_ascii_case("wal") {
        return Err(OutboxError::Open {
            path: path.to_path_buf(),
            source: rusqlite::Error::InvalidParameterName(format!(
                "journal_mode is {journal}, WAL could not be enabled"
            )),
        });
    }
    conn.pragma_update(None, "synchronous", cfg.synchronous.pragma_value())
        .map_err(|e| open_error(path, e))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| open_error(path, e))?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Checks the file's identity and version, and creates the schema in a fresh file.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), OutboxError> {
    let app_id: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| open_error(path, e))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| open_error(path, e))?;
    if app_id == 0 && version == 0 {
        let objects: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|e| open_error(path, e))?;
        if objects != 0 {
            return Err(OutboxError::NotAnOutbox {
                path: path.to_path_buf(),
                detail: format!("it has {objects} schema objects but no outbox application_id"),
            });
        }
        let tx = conn.transaction().map_err(|e| open_error(path, e))?;
        tx.execute_batch(SCHEMA_V1)
            .map_err(|e| open_error(path, e))?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(|e| open_error(path, e))?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(|e| open_error(path, e))?;
        tx.commit().map_err(|e| open_error(path, e))?;
        tracing::info!(path = %path.display(), version = SCHEMA_VERSION, "Created the outbox.");
        return Ok(());
    }
    if app_id != APPLICATION_ID {
        return Err(OutboxError::NotAnOutbox {
            path: path.to_path_buf(),
            detail: format!("application_id is {app_id:#x}, expected {APPLICATION_ID:#x}"),
        });
    }
    if version > SCHEMA_VERSION {
        return Err(OutboxError::SchemaTooNew {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    // Future versions: `if version < 2 { ALTER ...; user_version = 2 }`, each step in its own transaction.
    Ok(())
}

/// Sorts a failure to open into [`OutboxError::Corrupt`] or [`OutboxError::Open`].
fn open_error(path: &Path, source: rusqlite::Error) -> OutboxError {
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => OutboxError::Corrupt {
            path: path.to_path_buf(),
            source,
        },
        _ => OutboxError::Open {
            path: path.to_path_buf(),
            source,
        },
    }
}
