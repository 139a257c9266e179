//! Loss accounting: what the outbox dropped, refused or gave up on, the persisted totals, the
//! [`DropReport`] that tells the control plane, and the dead-letter table.
//!
//! At most one `DropReport` waits unbatched at any time: while its chunk (kind 2) is still in `chunks`, new
//! losses are added to it in place (counts, `to_ms`, reason); once a batch took it, the next loss starts a new one.
//! So reports cannot pile up however long the uplink is down, and every loss is in the next report sent.

use std::path::Path;

use octoisp_shared::{DropReport, Record};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use crate::outbox::chunk::{self, ChunkKind};
use crate::outbox::error::{OutboxError, SqlContext};
use crate::outbox::schema::meta;
use crate::outbox::store::{Accounting, insert_chunk, meta_add};

/// Reason given when the soft cap dropped the oldest samples.
const REASON_CAP: &str = "disk cap: oldest metric samples dropped";
/// Reason given at the hard ceiling.
const REASON_CEILING: &str = "hard ceiling: new metric samples dropped and new records refused";
/// Reason given when content was moved to dead letters.
const REASON_DEAD: &str =
    "content moved to dead letters (abandoned malformed batch or undecodable row)";

/// Losses counted during one transaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DropTally {
    /// Oldest samples deleted by the soft cap.
    pub(crate) samples_cap: u64,
    /// New samples not stored above the hard ceiling.
    pub(crate) samples_ceiling: u64,
    /// New records refused above the hard ceiling.
    pub(crate) records_refused: u64,
    /// Samples moved to dead letters.
    pub(crate) samples_dead: u64,
    /// Records moved to dead letters.
    pub(crate) records_dead: u64,
}

impl DropTally {
    /// Whether anything was lost.
    pub(crate) fn any(&self) -> bool {
        *self != DropTally::default()
    }

    /// What was counted in `self` but not yet in `earlier` (a tally that grew from `earlier`).
    pub(crate) fn since(&self, earlier: &DropTally) -> DropTally {
        DropTally {
            samples_cap: self.samples_cap - earlier.samples_cap,
            samples_ceiling: self.samples_ceiling - earlier.samples_ceiling,
            records_refused: self.records_refused - earlier.records_refused,
            samples_dead: self.samples_dead - earlier.samples_dead,
            records_dead: self.records_dead - earlier.records_dead,
        }
    }

    /// Samples lost, whatever the cause.
    pub(crate) fn samples(&self) -> u64 {
        self.samples_cap + self.samples_ceiling + self.samples_dead
    }

    /// Records lost, whatever the cause.
    pub(crate) fn records(&self) -> u64 {
        self.records_refused + self.records_dead
    }

    fn reasons(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.samples_cap > 0, REASON_CAP),
            (
                self.samples_ceiling + self.records_refused > 0,
                REASON_CEILING,
            ),
            (self.samples_dead + self.records_dead > 0, REASON_DEAD),
        ]
        .into_iter()
        .filter_map(|(yes, reason)| yes.then_some(reason))
    }
}

/// Persists the totals and adds the losses to the waiting `DropReport` (creating it when none waits), inside the
/// caller's transaction. Updates `acct` for the report chunk's size.
pub(crate) fn record(
    conn: &Connection,
    path: &Path,
    tally: &DropTally,
    now_ms: i64,
    acct: &mut Accounting,
) -> Result<(), OutboxError> {
    if !tally.any() {
        return Ok(());
    }
    meta_add(conn, path, meta::SAMPLES_DROPPED_TOTAL, tally.samples())?;
    meta_add(
        conn,
        path,
        meta::RECORDS_REFUSED_TOTAL,
        tally.records_refused,
    )?;
    meta_add(conn, path, meta::RECORDS_DEAD_TOTAL, tally.records_dead)?;

    let open: Option<(i64, i64, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT id, bytes, data FROM chunks WHERE kind = 2 ORDER BY id DESC LIMIT 1",
        )
        .and_then(|mut stmt| {
            stmt.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .sql(path, "finding the waiting drop report")?;
    if let Some((id, old_bytes, data)) = open {
        match chunk::decode_records(&data).map(|mut v| (v.len(), v.pop())) {
            Ok((1, Some(Record::DropReport(mut report)))) => {
                report.samples_dropped += tally.samples();
                report.records_refused += tally.records();
                report.to_ms = report.to_ms.max(now_ms);
                for reason in tally.reasons() {
                    if !report.reason.contains(reason) {
                        report.reason.push_str("; ");
                        report.reason.push_str(reason);
                    }
                }
                let data = chunk::encode_records(&[Record::DropReport(report)])?;
                conn.prepare_cached("UPDATE chunks SET bytes = ?2, data = ?3 WHERE id = ?1")
                    .and_then(|mut stmt| stmt.execute(params![id, data.len() as i64, data]))
                    .sql(path, "updating the drop report")?;
                acct.record_bytes =
                    (acct.record_bytes + data.len() as u64).saturating_sub(old_bytes as u64);
                return Ok(());
            }
            other => {
                // Not what this outbox writes there: leave it for batch forming to dead-letter, start a new one.
                tracing::warn!(
                    path = %path.display(),
                    chunk = id,
                    decoded = ?other.map(|(n, _)| n),
                    "Waiting drop report chunk is unreadable; starting a new report."
                );
            }
        }
    }
    let report = DropReport {
        id: Uuid::new_v4(),
        from_ms: now_ms,
        to_ms: now_ms,
        samples_dropped: tally.samples(),
        records_refused: tally.records(),
        reason: tally.reasons().collect::<Vec<_>>().join("; "),
    };
    let mut chunks = chunk::record_chunks(
        &[Record::DropReport(report)],
        ChunkKind::DropReport,
        usize::MAX,
    )?;
    for new in chunks.drain(..) {
        insert_chunk(conn, path, &new, now_ms)?;
        acct.add_chunk(ChunkKind::DropReport, new.bytes());
    }
    Ok(())
}

/// A row given up on, on its way to the `dead_letters` table.
#[derive(Debug)]
pub(crate) struct DeadRow {
    /// `"chunk"` or `"batch"`.
    pub(crate) origin: &'static str,
    /// Chunk id or batch seq.
    pub(crate) origin_id: i64,
    /// When the content was created.
    pub(crate) created_ms: i64,
    /// Samples it held, as its row said.
    pub(crate) n_samples: u64,
    /// Records it held, as its row said.
    pub(crate) n_records: u64,
    /// Why.
    pub(crate) reason: String,
    /// The content, unchanged.
    pub(crate) data: Vec<u8>,
}

/// Inserts a dead letter and counts its content into `tally`, inside the caller's transaction. Logs it.
pub(crate) fn bury(
    conn: &Connection,
    path: &Path,
    row: &DeadRow,
    now_ms: i64,
    tally: &mut DropTally,
) -> Result<(), OutboxError> {
    conn.prepare_cached(
        "INSERT INTO dead_letters (origin, origin_id, created_ms, dead_ms, n_samples, n_records, reason, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            row.origin,
            row.origin_id,
            row.created_ms,
            now_ms,
            row.n_samples as i64,
            row.n_records as i64,
            row.reason,
            row.data
        ])
    })
    .sql(path, "inserting a dead letter")?;
    tally.samples_dead += row.n_samples;
    tally.records_dead += row.n_records;
    tracing::error!(
        path = %path.display(),
        origin = row.origin,
        id = row.origin_id,
        samples = row.n_samples,
        records = row.n_records,
        reason = %row.reason,
        "Moved outbox content to dead letters; it will not be sent."
    );
    Ok(())
}
