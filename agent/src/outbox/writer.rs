//! The writer thread: group commit of appends, with the disk cap and the hard ceiling applied in the same
//! transaction.
//!
//! Producers send [`Request`]s on a bounded channel (a full channel holds them back). The thread takes the first
//! request, then everything else already queued (up to [`MAX_GROUP`]), commits it all in one transaction and only
//! then answers each producer on its oneshot. One fsync thus serves many producers.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use octoisp_shared::SeriesDef;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::outbox::Shared;
use crate::outbox::chunk::{ChunkKind, NewChunk};
use crate::outbox::drops::{self, DropTally};
use crate::outbox::error::{OutboxError, SqlContext};
use crate::outbox::series;
use crate::outbox::store::{Store, insert_chunk, now_ms};

/// Most requests committed in one transaction.
const MAX_GROUP: usize = 1024;
/// Least time between two logs of the hard ceiling.
const CEILING_LOG_EVERY: Duration = Duration::from_secs(60);

/// One append waiting for the writer.
#[derive(Debug)]
pub(crate) struct Request {
    /// The chunks of the append (all samples, or all records).
    pub(crate) chunks: Vec<NewChunk>,
    /// Whether the chunks hold records (refused above the ceiling) rather than samples (dropped above it).
    pub(crate) records: bool,
    /// A producer's state `(key, value)` to store in the same transaction (see [`crate::outbox::Outbox::state`]).
    pub(crate) state: Option<(String, String)>,
    /// A state `(key, value)` to store only if `key` holds nothing yet ([`crate::outbox::Outbox::claim_state`]);
    /// the reply says whether it was stored. Such a request carries no chunks.
    pub(crate) claim: Option<(String, String)>,
    /// Where the outcome goes once committed: `Ok(true)`, or for a claim whether it was stored.
    pub(crate) reply: oneshot::Sender<Result<bool, OutboxError>>,
}

/// Runs until every sender is dropped.
pub(crate) fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Request>) {
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(req) => group.push(req),
                Err(_) => break,
            }
        }
        // Taken after the requests were received: every series id they use was allocated before they were
        // sent, so its definition is in this list (or was committed earlier).
        let defs = shared.series_registry().take_pending();
        let outcome = shared.store().commit_group(&defs, &group);
        match outcome {
            Ok(results) => {
                for (req, result) in group.into_iter().zip(results) {
                    // A producer that stopped waiting does not matter: its content is committed.
                    let _ = req.reply.send(result);
                }
            }
            Err(err) => {
                tracing::error!(path = %shared.path.display(), error = %err, appends = group.len(), "Outbox commit failed.");
                shared.series_registry().restore_pending(defs);
                let err = Arc::new(err);
                for req in group {
                    let _ = req.reply.send(Err(OutboxError::Commit(err.clone())));
                }
            }
        }
    }
    tracing::debug!(path = %shared.path.display(), "Outbox writer stopped.");
}

impl Store {
    /// Commits pending series definitions and a group of appends in one transaction; returns each append's outcome.
    /// On `Err` nothing was committed.
    pub(crate) fn commit_group(
        &mut self,
        defs: &[SeriesDef],
        group: &[Request],
    ) -> Result<Vec<Result<bool, OutboxError>>, OutboxError> {
        let now = now_ms();
        let mut acct = self.acct;
        let mut tally = DropTally::default();
        let (max_bytes, ceiling) = (self.cfg.max_bytes, self.cfg.hard_ceiling_bytes);
        let mut results = Vec::with_capacity(group.len());
        let (tx, path) = self.begin()?;
        series::insert(&tx, path, defs)?;
        for req in group {
            if let Some((key, value)) = &req.claim {
                let stored = tx
                    .prepare_cached(
                        "INSERT INTO state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                    )
                    .and_then(|mut stmt| stmt.execute([key, value]))
                    .sql(path, "claiming a state key")?;
                results.push(Ok(stored == 1));
                continue;
            }
            let bytes: u64 = req.chunks.iter().map(NewChunk::bytes).sum();
            // Only what the cap cannot free counts against the ceiling: sample chunks can always make room.
            if acct.nondroppable() + bytes > ceiling {
                let samples: u64 = req.chunks.iter().map(|c| c.n_samples).sum();
                let records: u64 = req.chunks.iter().map(|c| c.n_records).sum();
                if req.records {
                    tally.records_refused += records;
                    results.push(Err(OutboxError::Full {
                        path: path.to_path_buf(),
                        bytes: acct.total(),
                        hard_ceiling_bytes: ceiling,
                        records,
                    }));
                    continue;
                }
                // Dropped samples are accounted for: the producer's state moves on all the same.
                tally.samples_ceiling += samples;
            } else {
                for chunk in &req.chunks {
                    insert_chunk(&tx, path, chunk, now)?;
                    acct.add_chunk(chunk.kind, chunk.bytes());
                }
            }
            if let Some((key, value)) = &req.state {
                tx.prepare_cached(
                    "INSERT INTO state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
                )
                .and_then(|mut stmt| stmt.execute([key, value]))
                .sql(path, "writing producer state")?;
            }
            results.push(Ok(true));
        }
        // Recording losses can grow the drop report past the cap again; a few rounds settle it.
        let mut reported = DropTally::default();
        loop {
            if acct.total() > max_bytes && acct.sample_bytes > 0 {
                let (freed, samples) = drop_oldest_samples(&tx, path, acct.total() - max_bytes)?;
                acct.sample_bytes = acct.sample_bytes.saturating_sub(freed);
                tally.samples_cap += samples;
            }
            let delta = tally.since(&reported);
            if !delta.any() {
                break;
            }
            drops::record(&tx, path, &delta, now, &mut acct)?;
            reported = tally;
        }
        tx.commit().sql(path, "committing appends")?;
        self.acct = acct;
        self.log_losses(&tally);
        Ok(results)
    }

    fn log_losses(&mut self, tally: &DropTally) {
        if tally.samples_cap > 0 {
            tracing::warn!(
                path = %self.path.display(),
                samples = tally.samples_cap,
                max_bytes = self.cfg.max_bytes,
                "Outbox above its disk cap: dropped the oldest samples."
            );
        }
        if tally.samples_ceiling + tally.records_refused > 0 {
            let due = self
                .last_ceiling_log
                .is_none_or(|at| at.elapsed() >= CEILING_LOG_EVERY);
            if due {
                self.last_ceiling_log = Some(Instant::now());
                tracing::error!(
                    path = %self.path.display(),
                    samples_dropped = tally.samples_ceiling,
                    records_refused = tally.records_refused,
                    bytes = self.acct.total(),
                    hard_ceiling_bytes = self.cfg.hard_ceiling_bytes,
                    "Outbox at its hard ceiling: new samples dropped, new records refused (logged at most once a minute)."
                );
            }
        }
    }
}

/// Deletes the oldest sample-only chunks until at least `need` bytes are freed (or none is left). Returns the bytes
/// and samples freed.
fn drop_oldest_samples(
    conn: &Connection,
    path: &Path,
    need: u64,
) -> Result<(u64, u64), OutboxError> {
    let mut freed = 0u64;
    let mut samples = 0u64;
    let mut last = None;
    {
        let mut stmt = conn
            .prepare_cached("SELECT id, n_samples, bytes FROM chunks WHERE kind = 0 ORDER BY id")
            .sql(path, "listing sample chunks")?;
        let mut rows = stmt.query([]).sql(path, "listing sample chunks")?;
        while freed < need {
            let Some(row) = rows.next().sql(path, "listing sample chunks")? else {
                break;
            };
            let id: i64 = row.get(0).sql(path, "reading a sample chunk")?;
            let n: i64 = row.get(1).sql(path, "reading a sample chunk")?;
            let bytes: i64 = row.get(2).sql(path, "reading a sample chunk")?;
            freed += bytes.max(0) as u64;
            samples += n.max(0) as u64;
            last = Some(id);
        }
    }
    if let Some(last) = last {
        conn.prepare_cached("DELETE FROM chunks WHERE kind = ?1 AND id <= ?2")
            .and_then(|mut stmt| stmt.execute(rusqlite::params![ChunkKind::Samples.to_sql(), last]))
            .sql(path, "dropping the oldest sample chunks")?;
    }
    Ok((freed, samples))
}
