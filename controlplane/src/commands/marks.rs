//! `running` marks, coalesced and, for short commands, folded into the result: when agents start commands by the
//! thousand, one statement per tenant marks a batch of them (and announces them in a few notifications) instead
//! of one transaction per command, and a command whose result arrives soon after its start is never marked
//! `running` on its own: the statement that finishes it from its result also sets its `started_at`.
//!
//! A mark waits in memory for [`HOLD`]. Meanwhile ingest, when it stores that command's result on this
//! instance, takes the mark ([`RunningMarks::take`]) and `finish_from_results` writes `started_at` from it along
//! with the final status: one row update instead of two (each update of `commands.status` rewrites every index of
//! the row). Marks still waiting after [`HOLD`] are written by one writer task per instance, grouped by tenant, in
//! one tenant transaction each. The update is guarded like every status change (`queued`, `waiting_agent`,
//! `dispatched` only), so a mark written after the command's result finished it changes nothing. A mark that
//! cannot be written, or that is still waiting at shutdown, is dropped: `running` is informative (the command's
//! result is what finishes it), and a console sees it at most [`HOLD`] late.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::held::{self, Held, Shared};
use crate::db;

/// Marks written per statement at most.
pub const MAX_BATCH: usize = 1000;
/// How long a mark waits for its command's result before it is written on its own.
pub const HOLD: Duration = Duration::from_millis(250);
/// How often the writer looks for marks due.
const TICK: Duration = Duration::from_millis(20);
/// Marks waiting at most; senders wait beyond.
const CAPACITY: usize = 16_384;

/// The `running` marks of one instance, not written yet: by command, its tenant and start time. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RunningMarks {
    inner: Shared<Mark>,
}

/// A mark: the command's tenant and start time.
type Mark = (Uuid, DateTime<Utc>);

impl RunningMarks {
    /// Starts the writer on `pool` (it ends when every handle is dropped).
    pub fn start(pool: PgPool) -> RunningMarks {
        let inner = Arc::new(Mutex::new(Held::default()));
        tokio::spawn(writer(pool, Arc::downgrade(&inner)));
        RunningMarks { inner }
    }

    /// Marks command `id` of `provider_id` running (started now; written with others, or with its result).
    pub async fn running(&self, provider_id: Uuid, id: Uuid) {
        // Bounded: beyond CAPACITY waiting marks, wait for the writer.
        loop {
            let full = held::lock(&self.inner).len() >= CAPACITY;
            if !full {
                break;
            }
            tokio::time::sleep(TICK).await;
        }
        held::lock(&self.inner).insert(id, (provider_id, Utc::now()));
    }

    /// Takes the waiting marks of `ids` (their start times, `None` where there is none): their commands'
    /// results are being stored, and the finishing update sets `started_at` itself.
    pub fn take(&self, ids: &[Uuid]) -> Vec<Option<DateTime<Utc>>> {
        let mut p = held::lock(&self.inner);
        let taken: Vec<Option<DateTime<Utc>>> = ids
            .iter()
            .map(|id| p.remove(id).map(|(_, at)| at))
            .collect();
        drop(p);
        let n = taken.iter().filter(|t| t.is_some()).count();
        metrics::counter!("octoisp_commands_running_marks_total", "written" => "with_result")
            .increment(n as u64);
        taken
    }
}

/// Takes the marks that waited [`HOLD`] (at most [`MAX_BATCH`]), grouped by tenant.
fn due(pending: &Mutex<Held<Mark>>) -> HashMap<Uuid, (Vec<Uuid>, Vec<DateTime<Utc>>)> {
    let mut out: HashMap<Uuid, (Vec<Uuid>, Vec<DateTime<Utc>>)> = HashMap::new();
    // Marks taken by ingest with their commands' results are not there any more.
    for (id, (provider, at)) in held::lock(pending).due(HOLD, MAX_BATCH) {
        let (ids, ats) = out.entry(provider).or_default();
        ids.push(id);
        ats.push(at);
    }
    out
}

async fn writer(pool: PgPool, pending: Weak<Mutex<Held<Mark>>>) {
    loop {
        tokio::time::sleep(TICK).await;
        let batch = {
            let Some(pending) = pending.upgrade() else {
                return;
            };
            due(&pending)
        };
        if batch.is_empty() {
            continue;
        }
        for (provider, (ids, ats)) in batch {
            metrics::counter!("octoisp_commands_running_marks_total", "written" => "alone")
                .increment(ids.len() as u64);
            if let Err(err) = write(&pool, provider, &ids, &ats).await {
                tracing::warn!(provider = %provider, marks = ids.len(), error = %err,
                    "Cannot mark commands running; their results will finish them.");
            }
        }
        metrics::counter!("octoisp_commands_running_mark_batches_total").increment(1);
    }
}

/// Marks `ids` running (started at `ats`) in one statement and announces the ones that moved, up to 150 ids per
/// notification (see [`super::COMMAND_CHANNEL`]).
pub async fn write(
    pool: &PgPool,
    provider_id: Uuid,
    ids: &[Uuid],
    ats: &[DateTime<Utc>],
) -> anyhow::Result<usize> {
    let (ids, ats) = super::sorted_by_id(ids, ats);
    let mut tx = db::tenant_tx(pool, provider_id).await?;
    // One primary-key lookup per id, in id order (see [`super::sorted_by_id`]).
    let moved: i64 = sqlx::query_scalar(
        "WITH m AS MATERIALIZED (SELECT $1::uuid AS provider_id, * \
                      FROM unnest($2::uuid[], $4::timestamptz[]) AS m(id, at)), \
              u AS (UPDATE commands c SET status = 'running', started_at = coalesce(c.started_at, m.at) \
                      FROM m WHERE c.provider_id = m.provider_id AND c.id = m.id \
                       AND c.status IN ('queued', 'waiting_agent', 'dispatched') RETURNING c.id), \
              n AS (SELECT pg_notify($3, json_build_object('provider_id', $1, 'status', 'running', \
                      'command_ids', json_agg(id))::text) \
                      FROM (SELECT id, (row_number() OVER () - 1) / 150 AS k FROM u) x GROUP BY k) \
         SELECT count(*) FROM u WHERE (SELECT count(*) FROM n) >= 0",
    )
    .bind(provider_id)
    .bind(&ids)
    .bind(super::COMMAND_CHANNEL)
    .bind(&ats)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(usize::try_from(moved).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_taken_mark_is_not_written_and_others_wait_their_hold() {
        let pending = Mutex::new(Held::default());
        let marks = RunningMarks {
            inner: Arc::new(Mutex::new(Held::default())),
        };
        let (p, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let old = Instant::now()
            .checked_sub(HOLD)
            .expect("the clock started more than HOLD ago");
        {
            let mut g = pending.lock().unwrap();
            for id in [a, b] {
                g.insert_at(id, (p, Utc::now()), old);
            }
            g.remove(&a); // taken by ingest
        }
        let out = due(&pending);
        assert_eq!(out[&p].0, vec![b]);
        assert!(pending.lock().unwrap().order_is_empty());
        // A fresh mark is not due yet; `take` returns its start time once.
        {
            let mut g = marks.inner.lock().unwrap();
            g.insert(a, (p, Utc::now()));
        }
        assert!(due(&marks.inner).is_empty());
        assert!(marks.take(&[a, b])[0].is_some());
        assert_eq!(marks.take(&[a]), vec![None]);
    }
}
