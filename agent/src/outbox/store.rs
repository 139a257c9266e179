//! The SQLite connection and the in-memory accounting that goes with it, behind one mutex.
//!
//! Every operation that touches the database runs with the store locked, in one transaction, and updates the
//! in-memory byte counts only after its commit succeeded, so they always describe what is on disk.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::outbox::chunk::ChunkKind;
use crate::outbox::config::OutboxConfig;
use crate::outbox::error::{OutboxError, SqlContext};
use crate::outbox::schema::{self, meta};
use crate::outbox::{OutboxStats, PendingBatch};

/// Bytes of content held, by what may be done with them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Accounting {
    /// Chunks that hold only samples: the disk cap may delete them.
    pub(crate) sample_bytes: u64,
    /// Chunks that hold records: never dropped.
    pub(crate) record_bytes: u64,
    /// Formed batches (their frames): never dropped.
    pub(crate) batch_bytes: u64,
}

impl Accounting {
    /// Everything held.
    pub(crate) fn total(&self) -> u64 {
        self.sample_bytes + self.record_bytes + self.batch_bytes
    }

    /// What the disk cap cannot free.
    pub(crate) fn nondroppable(&self) -> u64 {
        self.record_bytes + self.batch_bytes
    }

    /// Adds a chunk's bytes.
    pub(crate) fn add_chunk(&mut self, kind: ChunkKind, bytes: u64) {
        match kind {
            ChunkKind::Samples => self.sample_bytes += bytes,
            ChunkKind::Records | ChunkKind::DropReport => self.record_bytes += bytes,
        }
    }

    /// Removes a chunk's bytes (an unknown kind counts as records, the way [`Accounting::load`] counts it).
    pub(crate) fn remove_chunk(&mut self, kind: Option<ChunkKind>, bytes: u64) {
        match kind {
            Some(ChunkKind::Samples) => self.sample_bytes = self.sample_bytes.saturating_sub(bytes),
            _ => self.record_bytes = self.record_bytes.saturating_sub(bytes),
        }
    }

    /// Sums what is on disk.
    fn load(conn: &Connection, path: &Path) -> Result<Accounting, OutboxError> {
        let (sample_bytes, record_bytes): (i64, i64) = conn
            .query_row(
                "SELECT coalesce(sum(CASE WHEN kind = 0 THEN bytes END), 0),
                        coalesce(sum(CASE WHEN kind <> 0 THEN bytes END), 0) FROM chunks",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .sql(path, "summing chunk sizes")?;
        let batch_bytes: i64 = conn
            .query_row(
                "SELECT coalesce(sum(length(frame)), 0) FROM batches",
                [],
                |r| r.get(0),
            )
            .sql(path, "summing batch sizes")?;
        Ok(Accounting {
            sample_bytes: sample_bytes as u64,
            record_bytes: record_bytes as u64,
            batch_bytes: batch_bytes as u64,
        })
    }
}

/// The connection, its file name, the limits and the accounting.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
    pub(crate) cfg: OutboxConfig,
    pub(crate) acct: Accounting,
    /// When the hard ceiling was last logged, to log it at most once a minute.
    pub(crate) last_ceiling_log: Option<Instant>,
}

impl Store {
    /// Opens the database and loads the accounting.
    pub(crate) fn open(cfg: &OutboxConfig) -> Result<Store, OutboxError> {
        let conn = schema::open(cfg)?;
        let acct = Accounting::load(&conn, &cfg.path)?;
        Ok(Store {
            conn,
            path: cfg.path.clone(),
            cfg: cfg.clone(),
            acct,
            last_ceiling_log: None,
        })
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE`), along with the path for error context.
    pub(crate) fn begin(&mut self) -> Result<(Transaction<'_>, &Path), OutboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .sql(&self.path, "beginning a transaction")?;
        Ok((tx, &self.path))
    }

    /// The formed batches, oldest first.
    pub(crate) fn pending_batches(&self) -> Result<Vec<PendingBatch>, OutboxError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, frame, n_samples, n_records FROM batches ORDER BY seq")
            .sql(&self.path, "listing pending batches")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(PendingBatch {
                    seq: r.get::<_, i64>(0)? as u64,
                    frame: r.get(1)?,
                    samples: r.get::<_, i64>(2)? as u64,
                    records: r.get::<_, i64>(3)? as u64,
                })
            })
            .sql(&self.path, "listing pending batches")?;
        rows.collect::<Result<Vec<_>, _>>()
            .sql(&self.path, "reading pending batches")
    }

    /// Counts and totals.
    pub(crate) fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let path = &self.path;
        let (chunks, chunk_samples, chunk_records, chunks_oldest): (i64, i64, i64, Option<i64>) = self
            .conn
            .query_row(
                "SELECT count(*), coalesce(sum(n_samples), 0), coalesce(sum(n_records), 0), min(created_ms)
                 FROM chunks",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .sql(path, "counting chunks")?;
        let (batches, batch_samples, batch_records, batches_oldest): (i64, i64, i64, Option<i64>) = self
            .conn
            .query_row(
                "SELECT count(*), coalesce(sum(n_samples), 0), coalesce(sum(n_records), 0), min(created_ms)
                 FROM batches",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .sql(path, "counting batches")?;
        let dead_letters: i64 = self
            .conn
            .query_row("SELECT count(*) FROM dead_letters", [], |r| r.get(0))
            .sql(path, "counting dead letters")?;
        let oldest_ms = match (chunks_oldest, batches_oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(OutboxStats {
            chunks: chunks as u64,
            samples: (chunk_samples + batch_samples) as u64,
            records: (chunk_records + batch_records) as u64,
            bytes: self.acct.total(),
            sample_bytes: self.acct.sample_bytes,
            record_bytes: self.acct.record_bytes,
            batch_bytes: self.acct.batch_bytes,
            oldest_ms,
            batches_pending: batches as u64,
            samples_dropped_total: meta_get(&self.conn, path, meta::SAMPLES_DROPPED_TOTAL)?,
            records_refused_total: meta_get(&self.conn, path, meta::RECORDS_REFUSED_TOTAL)?,
            records_dead_total: meta_get(&self.conn, path, meta::RECORDS_DEAD_TOTAL)?,
            dead_letters: dead_letters as u64,
        })
    }

    /// A producer's committed state.
    pub(crate) fn state(&self, key: &str) -> Result<Option<String>, OutboxError> {
        self.conn
            .prepare_cached("SELECT value FROM state WHERE key = ?1")
            .and_then(|mut stmt| stmt.query_row([key], |r| r.get(0)).optional())
            .sql(&self.path, "reading producer state")
    }

    /// Every state entry whose key starts with `prefix`, in key order.
    pub(crate) fn states_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, OutboxError> {
        // Keys are compared as text: the range [prefix, prefix + U+10FFFF) holds exactly the keys with the prefix.
        let upper = format!("{prefix}\u{10FFFF}");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT key, value FROM state WHERE key >= ?1 AND key < ?2 ORDER BY key",
            )
            .sql(&self.path, "listing state")?;
        let rows = stmt
            .query_map([prefix, upper.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .sql(&self.path, "listing state")?;
        rows.collect::<Result<Vec<_>, _>>()
            .sql(&self.path, "listing state")
    }

    /// Stores `value` under `key`, replacing what was there.
    pub(crate) fn put_state(&self, key: &str, value: &str) -> Result<(), OutboxError> {
        self.conn
            .prepare_cached(
                "INSERT INTO state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
            )
            .and_then(|mut stmt| stmt.execute([key, value]))
            .map(|_| ())
            .sql(&self.path, "writing state")
    }

    /// Deletes the state entries `keys`.
    pub(crate) fn delete_states(&mut self, keys: &[String]) -> Result<(), OutboxError> {
        let (tx, path) = self.begin()?;
        for key in keys {
            tx.prepare_cached("DELETE FROM state WHERE key = ?1")
                .and_then(|mut stmt| stmt.execute([key]))
                .sql(path, "deleting state")?;
        }
        tx.commit().sql(path, "deleting state")
    }

    /// The dead letters, oldest first: `(origin, origin_id, reason)`.
    pub(crate) fn dead_letters(&self) -> Result<Vec<DeadLetter>, OutboxError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT origin, origin_id, dead_ms, n_samples, n_records, reason, length(data)
                 FROM dead_letters ORDER BY id",
            )
            .sql(&self.path, "listing dead letters")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(DeadLetter {
                    origin: r.get(0)?,
                    origin_id: r.get::<_, i64>(1)? as u64,
                    dead_ms: r.get(2)?,
                    samples: r.get::<_, i64>(3)? as u64,
                    records: r.get::<_, i64>(4)? as u64,
                    reason: r.get(5)?,
                    bytes: r.get::<_, i64>(6)? as u64,
                })
            })
            .sql(&self.path, "listing dead letters")?;
        rows.collect::<Result<Vec<_>, _>>()
            .sql(&self.path, "reading dead letters")
    }
}

/// Something the outbox gave up on, kept in the `dead_letters` table for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// `"chunk"` (a row that failed to decode) or `"batch"` (abandoned after `Nack::Malformed`, or undecodable).
    pub origin: String,
    /// The chunk id or the batch seq.
    pub origin_id: u64,
    /// When it was moved there, milliseconds since the Unix epoch.
    pub dead_ms: i64,
    /// Samples it held (as its row said).
    pub samples: u64,
    /// Records it held (as its row said).
    pub records: u64,
    /// Why.
    pub reason: String,
    /// Size of the stored content.
    pub bytes: u64,
}

/// Reads a counter of the `meta` table (0 when missing).
pub(crate) fn meta_get(conn: &Connection, path: &Path, key: &str) -> Result<u64, OutboxError> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")
        .and_then(|mut stmt| stmt.query_row([key], |r| r.get(0)).optional())
        .sql(path, "reading the meta table")?;
    Ok(v.unwrap_or(0).max(0) as u64)
}

/// Writes a counter of the `meta` table.
pub(crate) fn meta_set(
    conn: &Connection,
    path: &Path,
    key: &str,
    value: u64,
) -> Result<(), OutboxError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
    )
    .and_then(|mut stmt| stmt.execute(params![key, value as i64]))
    .sql(path, "writing the meta table")?;
    Ok(())
}

/// Adds to a counter of the `meta` table.
pub(crate) fn meta_add(
    conn: &Connection,
    path: &Path,
    key: &str,
    delta: u64,
) -> Result<(), OutboxError> {
    if delta == 0 {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = value + ?2",
    )
    .and_then(|mut stmt| stmt.execute(params![key, delta as i64]))
    .sql(path, "updating the meta table")?;
    Ok(())
}

/// Inserts a chunk row; returns its id.
pub(crate) fn insert_chunk(
    conn: &Connection,
    path: &Path,
    chunk: &crate::outbox::chunk::NewChunk,
    created_ms: i64,
) -> Result<i64, OutboxError> {
    conn.prepare_cached(
        "INSERT INTO chunks (kind, created_ms, n_samples, n_records, bytes, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            chunk.kind.to_sql(),
            created_ms,
            chunk.n_samples as i64,
            chunk.n_records as i64,
            chunk.bytes() as i64,
            chunk.data
        ])
    })
    .sql(path, "inserting a chunk")?;
    Ok(conn.last_insert_rowid())
}

/// Milliseconds since the Unix epoch, by the agent's clock.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
