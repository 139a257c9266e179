//! Commands from the API to the agents and back: the control plane's half (docs/COMMANDS.md).
//!
//! PostgreSQL's `commands` table is the source of truth; the Redis queue ([`crate::queue`]) only orders, leases
//! and retries them. The path of a command:
//!
//! 1. **Create** (`api/commands/`): the row is inserted (status `queued`) and audited in one transaction, then
//!    enqueued in the tenant's tier. If Redis is unreachable at that moment the row stays `queued` and the
//!    [reconciler](dispatch::reconcile_loop) enqueues it later: enqueueing an id the queue knows does nothing, so
//!    a command can be enqueued any number of times and still runs once.
//! 2. **Dispatch** ([`dispatch`], role `workers`): a lease names the command; its agent's connection is found in
//!    the [links](links::AgentLinks) (this instance) or through Redis (another instance's inbox list). An offline
//!    agent's command goes `waiting_agent` and is deferred until its deadline; when the agent says Hello, its
//!    waiting commands are woken in creation order.
//! 3. **Stream** ([`stream`]): one bidirectional QUIC stream per command: `Command` down, `CommandProgress` up
//!    (seq 0 = state). Progress is stored in batches and announced on `octoisp_commands` (PostgreSQL NOTIFY) for
//!    the consoles watching it.
//! 4. **Result**: the agent's `Record::CommandResult` comes through its outbox; ingest stores it and, in the same
//!    transaction, finishes the row ([`finish_from_results`]); after the commit the queue job is completed.
//!
//! Never twice: the agent runs a given id at most once and answers `duplicate` to a second delivery, so a worker
//! killed mid-command only causes a redelivery that ends with the first execution's result.

pub mod agent_config;
pub mod dispatch;
mod held;
pub mod links;
pub mod marks;
pub mod order;
pub mod stream;
pub mod waits;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::queue::{Queue, Tier};

pub use links::AgentLinks;

/// PostgreSQL channel announcing command progress and status changes. Payload: JSON with `provider_id` and
/// either `command_id` and `seq` (a progress frame), `command_id` and `status` (one status change), or `status`
/// and `command_ids` (the same status change of up to 150 commands, from the batched statements: one
/// notification per batch instead of one per command).
pub const COMMAND_CHANNEL: &str = "octoisp_commands";

/// Statuses after which a command never changes again.
pub const FINAL_STATUSES: [&str; 6] = [
    "succeeded",
    "failed",
    "expired",
    "rejected",
    "cancelled",
    "dead",
];

/// Statuses of a command not finished yet.
pub const OPEN_STATUSES: [&str; 4] = ["queued", "waiting_agent", "dispatched", "running"];

/// Whether `status` is final.
pub fn is_final(status: &str) -> bool {
    FINAL_STATUSES.contains(&status)
}

/// The `[commands]` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsConfig {
    /// Leases this instance reads and marks dispatched at once (each holds a database connection for one
    /// statement; a lease gives its slot back before waiting in its agent's line or running there). Keep it about
    /// twice `database.max_connections`: more only queues work on the pool, in front of other tenants' commands.
    pub dispatch_concurrency: usize,
    /// Deadline of a command created without `deadline_secs`, seconds after its creation.
    pub default_deadline_secs: u64,
    /// Largest `deadline_secs` a caller may ask for.
    pub max_deadline_secs: u64,
    /// Devices one fan-out request may target.
    pub max_fanout: usize,
    /// How often the reconciler re-enqueues unfinished commands (after a Redis loss), seconds.
    pub reconcile_secs: u64,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        CommandsConfig {
            dispatch_concurrency: 32,
            default_deadline_secs: 3600,
            max_deadline_secs: 7 * 86_400,
            max_fanout: 100_000,
            reconcile_secs: 30,
        }
    }
}

impl CommandsConfig {
    /// Checks the values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.dispatch_concurrency == 0 {
            return Err("commands.dispatch_concurrency must be > 0".into());
        }
        if self.default_deadline_secs == 0 || self.default_deadline_secs > self.max_deadline_secs {
            return Err(
                "commands.default_deadline_secs must be > 0 and at most commands.max_deadline_secs"
                    .into(),
            );
        }
        if self.max_fanout == 0 {
            return Err("commands.max_fanout must be > 0".into());
        }
        if self.reconcile_secs == 0 {
            return Err("commands.reconcile_secs must be > 0".into());
        }
        Ok(())
    }
}

/// The job payload in the queue: just enough to route it; everything else is read from the row.
#[derive(Debug, Clone, serde::Serialize, Deserialize, PartialEq)]
pub struct JobPayload {
    /// The agent that runs it.
    pub agent_id: Uuid,
}

/// What the command subsystem of one instance shares: the pool, the queue, the agent links.
#[derive(Clone)]
pub struct Commands {
    /// Pool of the application role.
    pub pool: sqlx::PgPool,
    /// The queue.
    pub queue: Queue,
    /// Agent connections of this instance and the holder registry in Redis.
    pub links: AgentLinks,
    /// Settings.
    pub cfg: Arc<CommandsConfig>,
    /// How often an open stream extends its lease (a third of the queue's visibility timeout).
    pub extend_every: Duration,
    /// `running` marks, written in batches.
    pub marks: marks::RunningMarks,
    /// Leases waiting for their commands' results, deferred in batches when the result is late.
    pub waits: waits::ResultWaits,
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands")
            .field("queue", &self.queue)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Commands {
    /// Enqueues commands already stored (status `queued`); errors are logged, the reconciler retries.
    pub async fn enqueue_stored(&self, provider_id: Uuid, tier: Tier, jobs: &[(Uuid, Uuid)]) {
        let jobs: Vec<crate::queue::NewJob> = jobs
            .iter()
            .map(|(id, agent_id)| crate::queue::NewJob {
                id: *id,
                provider_id,
                tier,
                payload: serde_json::to_string(&JobPayload {
                    agent_id: *agent_id,
                })
                .unwrap_or_default(),
                not_before_ms: None,
            })
            .collect();
        for chunk in jobs.chunks(1000) {
            if let Err(err) = self.queue.enqueue(chunk).await {
                tracing::warn!(provider = %provider_id, error = %err,
                    "Cannot enqueue commands now; the reconciler will enqueue them.");
                metrics::counter!("octoisp_commands_enqueue_failures_total").increment(1);
                return;
            }
        }
    }
}

/// The tier of a provider (`providers.tier`), read in a transaction bound to it.
pub async fn provider_tier(conn: &mut PgConnection, provider_id: Uuid) -> sqlx::Result<Tier> {
    let tier: Option<String> = sqlx::query_scalar("SELECT tier FROM providers WHERE id = $1")
        .bind(provider_id)
        .fetch_optional(conn)
        .await?;
    Ok(tier.as_deref().and_then(Tier::parse).unwrap_or(Tier::Small))
}

/// Announces a status change to the consoles (delivered at the transaction's commit).
pub async fn notify_status(
    conn: &mut PgConnection,
    provider_id: Uuid,
    command_id: Uuid,
    status: &str,
) -> sqlx::Result<()> {
    let payload = serde_json::json!({
        "provider_id": provider_id, "command_id": command_id, "status": status,
    });
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(COMMAND_CHANNEL)
        .bind(payload.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves an unfinished command to `status` (guarded: a finished one is left alone); returns whether it moved.
pub async fn set_status(
    conn: &mut PgConnection,
    provider_id: Uuid,
    id: Uuid,
    status: &str,
    error: Option<&str>,
) -> sqlx::Result<bool> {
    let finished = is_final(status);
    let moved = sqlx::query(
        "UPDATE commands SET status = $3, error = coalesce($4, error), \
           finished_at = CASE WHEN $5 THEN now() ELSE finished_at END, \
           started_at = CASE WHEN $3 = 'running' THEN coalesce(started_at, now()) ELSE started_at END \
         WHERE provider_id = $1 AND id = $2 \
           AND status IN ('queued', 'waiting_agent', 'dispatched', 'running') AND status <> $3",
    )
    .bind(provider_id)
    .bind(id)
    .bind(status)
    .bind(error.map(|e| truncate(e, 4000)))
    .bind(finished)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if moved {
        notify_status(conn, provider_id, id, status).await?;
    }
    Ok(moved)
}

/// Finishes the unfinished commands of `agent_id` among `command_ids` from their stored results (called by
/// ingest in the transaction that stored the results); returns the ids finished now. `started` holds, in the
/// order of `command_ids`, the start times of the `running` marks this instance still held for them
/// ([`marks::RunningMarks::take`]): the same update sets `started_at` (the result's time where there is none).
pub async fn finish_from_results(
    conn: &mut PgConnection,
    provider_id: Uuid,
    agent_id: Uuid,
    command_ids: &[Uuid],
    started: &[Option<chrono::DateTime<chrono::Utc>>],
) -> sqlx::Result<Vec<Uuid>> {
    let (command_ids, started) = sorted_by_id(command_ids, started);
    // One statement: the update and its announcements (per status, up to 150 ids a notification); one
    // primary-key lookup per id in each table, in id order (see [`sorted_by_id`]).
    let done: Vec<Uuid> = sqlx::query_scalar(
        "WITH x AS MATERIALIZED (SELECT $1::uuid AS provider_id, $2::uuid AS agent_id, * \
                    FROM unnest($3::uuid[], $5::timestamptz[]) AS x(id, at)), \
              u AS (UPDATE commands c SET status = r.status, error = r.error, finished_at = r.ts, \
                      started_at = coalesce(c.started_at, x.at, r.ts) \
                    FROM x JOIN command_results r ON r.provider_id = x.provider_id AND r.command_id = x.id \
                    WHERE c.provider_id = x.provider_id AND c.id = x.id AND c.agent_id = x.agent_id \
                      AND c.status IN ('queued', 'waiting_agent', 'dispatched', 'running') \
                    RETURNING c.id, c.status), \
              n AS (SELECT pg_notify($4, json_build_object('provider_id', $1, 'status', status, \
                      'command_ids', json_agg(id))::text) \
                      FROM (SELECT id, status, (row_number() OVER (PARTITION BY status) - 1) / 150 AS k FROM u) x \
                     GROUP BY status, k) \
         SELECT u.id FROM u WHERE (SELECT count(*) FROM n) >= 0",
    )
    .bind(provider_id)
    .bind(agent_id)
    .bind(&command_ids)
    .bind(COMMAND_CHANNEL)
    .bind(&started)
    .fetch_all(&mut *conn)
    .await?;
    Ok(done)
}

/// `ids` sorted, with `values` (one per id) in the same order. The batched statements on `commands` take them
/// as arrays into a `MATERIALIZED` CTE joined on the row's key, so that:
/// - the plan is one primary-key lookup per id whatever the table's statistics (a fresh database with
///   autovacuum off has none, and `provider_id = $1 AND id = ANY($2)` was then planned as a scan of every
///   command of the provider: 2-14 ms a statement at 20,000 commands, growing with the table);
/// - every writer locks the rows in id order, so two batches that share commands (the dispatch, the `running`
///   marks, the finishing update) wait for each other instead of deadlocking.
pub fn sorted_by_id<T: Clone>(ids: &[Uuid], values: &[T]) -> (Vec<Uuid>, Vec<T>) {
    let mut pairs: Vec<(Uuid, T)> = ids.iter().copied().zip(values.iter().cloned()).collect();
    pairs.sort_unstable_by_key(|p| p.0);
    pairs.into_iter().unzip()
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A pause that ends early on shutdown; true when shutting down.
pub(crate) async fn pause(shutdown: &tokio_util::sync::CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_truncation() {
        assert!(is_final("succeeded") && is_final("dead"));
        assert!(!is_final("running") && !is_final("waiting_agent"));
        assert_eq!(truncate("ação", 2), "a");
        assert_eq!(truncate("abc", 10), "abc");
        assert!(CommandsConfig::default().validate().is_ok());
        let bad = CommandsConfig {
            dispatch_concurrency: 0,
            ..CommandsConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("dispatch_concurrency"));
    }
}
