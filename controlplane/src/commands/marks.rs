//! `running` marks, coalesced: when agents start commands by the thousand, one statement per tenant marks a
//! batch of them (and announces each change) instead of one transaction per command.
//!
//! The marks go through a bounded channel to one writer task per instance, which takes what is waiting (up to
//! [`MAX_BATCH`], or what arrives within [`LINGER`] of the first), groups it by tenant and writes each group in
//! one tenant transaction. The update is guarded like every status change (`queued`, `waiting_agent`,
//! `dispatched` only), so a mark that arrives after the command's result finished it changes nothing. A mark that
//! cannot be written is logged and dropped: `running` is informative (the command's result is what finishes it).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::db;

/// Marks written per statement at most.
pub const MAX_BATCH: usize = 1000;
/// How long the writer waits for more marks after the first of a batch.
pub const LINGER: Duration = Duration::from_millis(5);
/// Marks waiting at most; senders wait beyond.
const CAPACITY: usize = 16_384;

/// The sending side of the `running` marks of one instance.
#[derive(Clone, Debug)]
pub struct RunningMarks {
    tx: mpsc::Sender<Mark>,
}

/// One mark: tenant, command, when the agent's `started` frame arrived (the command's `started_at`).
type Mark = (Uuid, Uuid, DateTime<Utc>);

impl RunningMarks {
    /// Starts the writer on `pool` (it ends when every sender is dropped).
    pub fn start(pool: PgPool) -> RunningMarks {
        let (tx, rx) = mpsc::channel(CAPACITY);
        tokio::spawn(writer(pool, rx));
        RunningMarks { tx }
    }

    /// Marks command `id` of `provider_id` running (soon, with others).
    pub async fn running(&self, provider_id: Uuid, id: Uuid) {
        if self.tx.send((provider_id, id, Utc::now())).await.is_err() {
            tracing::debug!(command = %id, "Running mark dropped: the writer stopped.");
        }
    }
}

async fn writer(pool: PgPool, mut rx: mpsc::Receiver<Mark>) {
    let mut batch: Vec<Mark> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while batch.len() < MAX_BATCH {
            tokio::select! {
                _ = &mut linger => break,
                m = rx.recv() => match m {
                    Some(m) => batch.push(m),
                    None => break,
                },
            }
        }
        let mut by_tenant: HashMap<Uuid, (Vec<Uuid>, Vec<DateTime<Utc>>)> = HashMap::new();
        for (provider, id, at) in batch.drain(..) {
            let (ids, ats) = by_tenant.entry(provider).or_default();
            ids.push(id);
            ats.push(at);
        }
        for (provider, (ids, ats)) in by_tenant {
            if let Err(err) = write(&pool, provider, &ids, &ats).await {
                tracing::warn!(provider = %provider, marks = ids.len(), error = %err,
                    "Cannot mark commands running; their results will finish them.");
            }
        }
        metrics::counter!("octoisp_commands_running_mark_batches_total").increment(1);
    }
}

/// Marks `ids` running (started at `ats`) in one statement and announces each one that moved.
pub async fn write(
    pool: &PgPool,
    provider_id: Uuid,
    ids: &[Uuid],
    ats: &[DateTime<Utc>],
) -> anyhow::Result<usize> {
    let mut tx = db::tenant_tx(pool, provider_id).await?;
    let moved: i64 = sqlx::query_scalar(
        "WITH m AS (SELECT * FROM unnest($2::uuid[], $4::timestamptz[]) AS m(id, at)), \
              u AS (UPDATE commands c SET status = 'running', started_at = coalesce(c.started_at, m.at) \
                      FROM m WHERE c.provider_id = $1 AND c.id = ANY($2) AND c.id = m.id \
                       AND c.status IN ('queued', 'waiting_agent', 'dispatched') RETURNING c.id), \
              n AS (SELECT pg_notify($3, json_build_object('provider_id', $1, 'command_id', id, \
                      'status', 'running')::text) FROM u) \
         SELECT count(*) FROM n",
    )
    .bind(provider_id)
    .bind(ids)
    .bind(super::COMMAND_CHANNEL)
    .bind(ats)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(usize::try_from(moved).unwrap_or(0))
}
