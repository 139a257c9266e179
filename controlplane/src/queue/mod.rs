//! The command queue in Redis: one set of queues per tenant tier, weighted fair scheduling between tiers and
//! round robin between the tenants of a tier, per-tenant concurrency and rate limits, leases with a visibility
//! timeout, retries with exponential backoff and full jitter, and a dead-letter queue per tenant.
//!
//! The queue moves opaque jobs (an id, a tenant, a tier and a payload string); what a job means (a command for
//! an agent) is `crate::commands`' business. Every state change is one Lua script, so it is atomic in Redis and
//! safe when several control plane instances run it at once.
//!
//! Delivery is at least once: a job whose lease is not extended within the visibility timeout (its worker died)
//! goes back to the ready queue with its attempt number raised. Callers fence on `(id, attempt)`: a stale worker's
//! `complete`, `retry` or `extend` for an older attempt is refused. A job id is accepted once: enqueueing an id
//! the queue knows (ready, delayed, leased, dead, or completed within the dedup window) does nothing.
//!
//! THIS FILE IS THE CONTRACT between the queue and its callers; the bodies are being written.

use std::time::Duration;

use uuid::Uuid;

/// A tenant's tier (`providers.tier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Small providers.
    Small,
    /// Medium providers.
    Medium,
    /// Large providers.
    Large,
}

impl Tier {
    /// All tiers, in index order.
    pub const ALL: [Tier; 3] = [Tier::Small, Tier::Medium, Tier::Large];

    /// Index into per-tier arrays.
    pub fn index(self) -> usize {
        match self {
            Tier::Small => 0,
            Tier::Medium => 1,
            Tier::Large => 2,
        }
    }

    /// The name stored in `providers.tier`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Small => "small",
            Tier::Medium => "medium",
            Tier::Large => "large",
        }
    }

    /// Parses `providers.tier`.
    pub fn parse(s: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Queue settings (config section `[queue]`).
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Prefix of every Redis key; tests use a unique one.
    pub prefix: String,
    /// Relative share of dispatch slots per tier (small, medium, large) when every tier has work.
    pub tier_weights: [u32; 3],
    /// A lease not extended for this long is reclaimed and the job delivered again.
    pub visibility_timeout: Duration,
    /// Attempts before a job goes to the dead-letter queue.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, capped at `backoff_max`, with full jitter.
    pub backoff_base: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// Leased jobs one tenant may hold at once, per tier.
    pub tenant_concurrency: [u32; 3],
    /// Jobs per second one tenant may start, per tier (token bucket, burst of one second).
    pub tenant_rate: [f64; 3],
    /// How long a completed job id is remembered to refuse a second enqueue.
    pub dedup_window: Duration,
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// Unique id (the command id).
    pub id: Uuid,
    /// Tenant.
    pub provider_id: Uuid,
    /// Tenant's tier.
    pub tier: Tier,
    /// Opaque payload.
    pub payload: String,
    /// Not ready before this instant (ms since the Unix epoch); `None`: ready now.
    pub not_before_ms: Option<i64>,
}

/// A job handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// Job id.
    pub id: Uuid,
    /// Tenant.
    pub provider_id: Uuid,
    /// Tenant's tier.
    pub tier: Tier,
    /// Opaque payload.
    pub payload: String,
    /// 1 for the first delivery, raised on every retry or reclaim.
    pub attempt: u32,
    /// When this attempt became ready (ms since the Unix epoch); queue wait = `leased_ms - ready_ms`.
    pub ready_ms: i64,
    /// When it was leased.
    pub leased_ms: i64,
}

/// What `retry` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Back in the delayed set until this instant.
    Delayed {
        /// ms since the Unix epoch.
        until_ms: i64,
    },
    /// Attempts exhausted: now in the tenant's dead-letter queue.
    DeadLettered,
    /// The lease was not this attempt's any more (reclaimed, cancelled, completed): nothing changed.
    Stale,
}

/// A job in a tenant's dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Job id.
    pub id: Uuid,
    /// Opaque payload.
    pub payload: String,
    /// Attempts made.
    pub attempts: u32,
    /// Last error.
    pub error: String,
    /// When it was dead-lettered (ms since the Unix epoch).
    pub failed_ms: i64,
}

/// Counts of one tier.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TierStats {
    /// Jobs ready to lease.
    pub ready: u64,
    /// Age of the oldest ready job, ms (0 when none).
    pub oldest_ready_age_ms: u64,
    /// Jobs leased.
    pub leased: u64,
    /// Jobs waiting for a retry or a `not_before`.
    pub delayed: u64,
    /// Tenants with ready jobs.
    pub tenants_active: u64,
}

/// Monotonic counters since the queue's keys were created.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct QueueCounters {
    /// Jobs accepted by `enqueue`.
    pub enqueued: u64,
    /// Leases handed out.
    pub leased: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Jobs dead-lettered.
    pub dead_lettered: u64,
    /// Leases reclaimed after the visibility timeout.
    pub reclaimed: u64,
}

/// A worker and when it last reserved or heartbeat.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerInfo {
    /// Worker name.
    pub name: String,
    /// ms since the Unix epoch.
    pub last_seen_ms: i64,
}

/// The whole queue's state, for `/metrics` and the API.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct QueueStats {
    /// Per tier, indexed by [`Tier::index`].
    pub tiers: [TierStats; 3],
    /// Jobs in dead-letter queues, all tenants.
    pub dead: u64,
    /// Counters.
    pub counters: QueueCounters,
    /// Workers seen within the last minute.
    pub workers: Vec<WorkerInfo>,
}

/// One tenant's counts.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TenantStats {
    /// Jobs ready.
    pub ready: u64,
    /// Jobs leased.
    pub leased: u64,
    /// Jobs delayed.
    pub delayed: u64,
    /// Jobs dead-lettered.
    pub dead: u64,
    /// Age of the oldest ready job, ms.
    pub oldest_ready_age_ms: u64,
}

/// A handle on the queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    _conn: redis::aio::ConnectionManager,
    _cfg: QueueConfig,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("prefix", &self._cfg.prefix)
            .finish()
    }
}

#[allow(unused_variables, clippy::unused_async)]
impl Queue {
    /// Connects (the connection manager reconnects on its own after a Redis restart).
    pub async fn connect(redis_url: &str, cfg: QueueConfig) -> anyhow::Result<Queue> {
        anyhow::bail!("queue: not written yet")
    }

    /// Enqueues jobs in order (FIFO per tenant); returns how many were new (known ids are ignored).
    pub async fn enqueue(&self, jobs: &[NewJob]) -> anyhow::Result<usize> {
        anyhow::bail!("queue: not written yet")
    }

    /// Leases up to `max` ready jobs, fairly between tiers and tenants, within each tenant's concurrency and
    /// rate limits; records `worker` as alive.
    pub async fn reserve(&self, worker: &str, max: usize) -> anyhow::Result<Vec<Lease>> {
        anyhow::bail!("queue: not written yet")
    }

    /// Extends a lease by the visibility timeout; `false` when the lease is not this attempt's any more.
    pub async fn extend(&self, id: Uuid, attempt: u32) -> anyhow::Result<bool> {
        anyhow::bail!("queue: not written yet")
    }

    /// Completes a leased job (`attempt: None` accepts any attempt: the result came from the agent);
    /// `false` when it was not leased (already completed, cancelled, or a stale attempt).
    pub async fn complete(&self, id: Uuid, attempt: Option<u32>) -> anyhow::Result<bool> {
        anyhow::bail!("queue: not written yet")
    }

    /// Schedules a retry with backoff, or dead-letters the job when its attempts are exhausted.
    pub async fn retry(&self, id: Uuid, attempt: u32, error: &str) -> anyhow::Result<RetryOutcome> {
        anyhow::bail!("queue: not written yet")
    }

    /// Puts a leased job back in the delayed set until `until_ms` without counting an attempt (its agent is
    /// offline); `false` when the lease is stale.
    pub async fn defer(&self, id: Uuid, attempt: u32, until_ms: i64) -> anyhow::Result<bool> {
        anyhow::bail!("queue: not written yet")
    }

    /// Makes deferred or delayed jobs ready now, in their original order (an agent came back).
    pub async fn wake(&self, ids: &[Uuid]) -> anyhow::Result<usize> {
        anyhow::bail!("queue: not written yet")
    }

    /// Dead-letters a leased job at once (a permanent failure).
    pub async fn dead_letter(&self, id: Uuid, attempt: u32, error: &str) -> anyhow::Result<bool> {
        anyhow::bail!("queue: not written yet")
    }

    /// Removes a job wherever it is (ready, delayed, leased, dead); `false` when unknown.
    pub async fn cancel(&self, provider_id: Uuid, id: Uuid) -> anyhow::Result<bool> {
        anyhow::bail!("queue: not written yet")
    }

    /// Reclaims expired leases and promotes due delayed jobs; returns (reclaimed, promoted). Safe to run from
    /// every instance at once.
    pub async fn maintain(&self) -> anyhow::Result<(usize, usize)> {
        anyhow::bail!("queue: not written yet")
    }

    /// A tenant's dead letters, oldest first, after `after`.
    pub async fn dead_letters(
        &self,
        provider_id: Uuid,
        limit: usize,
        after: Option<Uuid>,
    ) -> anyhow::Result<Vec<DeadLetter>> {
        anyhow::bail!("queue: not written yet")
    }

    /// Puts a dead letter back in the ready queue with a fresh attempt count.
    pub async fn requeue_dead(&self, provider_id: Uuid, id: Uuid) -> anyhow::Result<bool> {
        anyhow::bail!("queue: not written yet")
    }

    /// Deletes a dead letter.
    pub async fn discard_dead(&self, provider_id: Uuid, id: Uuid) -> anyhow::Result<bool> {
        anyhow::bail!("queue: not written yet")
    }

    /// The whole queue's counts.
    pub async fn stats(&self) -> anyhow::Result<QueueStats> {
        anyhow::bail!("queue: not written yet")
    }

    /// One tenant's counts.
    pub async fn tenant_stats(&self, provider_id: Uuid) -> anyhow::Result<TenantStats> {
        anyhow::bail!("queue: not written yet")
    }
}
