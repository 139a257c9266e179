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
//! The key layout, the scheduling algorithm and the Redis settings the queue needs are in `docs/QUEUES.md`; the
//! scripts themselves are in [`scripts`].

mod scripts;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use redis::aio::ConnectionManagerConfig;

use crate::redis_conn::{RedisConn, RedisTarget};
use uuid::Uuid;

use self::scripts::Scripts;

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

/// Largest payload `enqueue` accepts, bytes; a larger one fails the whole batch before anything is written.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Most leases one `reserve` call hands out (a larger `max` is capped).
pub const MAX_RESERVE: usize = 1000;

/// Jobs written per script call by `enqueue` (a larger batch is split, in order).
const ENQUEUE_CHUNK: usize = 500;

/// Expired leases or due delayed jobs moved per script call by `maintain` (it loops until done).
const MAINTAIN_CHUNK: usize = 1000;

/// Tenants of a tier that `reserve` looks at per slot before calling the tier blocked, and that `stats` reads
/// for the oldest ready job.
const TENANT_SCAN: usize = 1024;

/// How long a command to Redis may take before it fails (enqueue batches and reserve are the longest).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for QueueConfig {
    /// The defaults of the `[queue]` config section ([`crate::config::QueueSection`]), the one place they are
    /// written: tier weights 4, 2, 1 (small, medium, large), 30 s visibility timeout, 5 attempts with backoff from
    /// 1 s to 5 min, per-tenant limits 50/500/5,000 leased jobs and jobs per second per tier, a 24 h dedup window.
    fn default() -> QueueConfig {
        crate::config::QueueSection::default().queue_config()
    }
}

impl QueueConfig {
    /// Checks the settings; the error names the field and what was expected. A `tenant_concurrency` of 0 or a
    /// `tenant_rate` of 0 means no limit.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.prefix.is_empty() || self.prefix.chars().any(|c| c.is_whitespace()) {
            anyhow::bail!("queue.prefix: expected a non-empty key prefix without spaces");
        }
        if self.tier_weights.contains(&0) {
            anyhow::bail!("queue.tier_weights: every weight must be at least 1");
        }
        if self.visibility_timeout < Duration::from_millis(10) {
            anyhow::bail!("queue.visibility_timeout: expected at least 10 ms");
        }
        if self.max_attempts == 0 {
            anyhow::bail!("queue.max_attempts: expected at least 1");
        }
        if self.backoff_max < self.backoff_base {
            anyhow::bail!("queue.backoff_max: must not be below queue.backoff_base");
        }
        if self.tenant_rate.iter().any(|r| !r.is_finite() || *r < 0.0) {
            anyhow::bail!("queue.tenant_rate: expected finite rates >= 0 (0: no limit)");
        }
        if self.dedup_window < Duration::from_millis(1) {
            anyhow::bail!("queue.dedup_window: expected at least 1 ms");
        }
        Ok(())
    }
}

/// A handle on the queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    conn: RedisConn,
    cfg: QueueConfig,
    scripts: Arc<Scripts>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("prefix", &self.cfg.prefix)
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> anyhow::Result<T> {
    s.parse()
        .map_err(|_| anyhow::anyhow!("queue: Redis returned a malformed {what}: {s:?}"))
}

fn uuid(s: &str, what: &str) -> anyhow::Result<Uuid> {
    Uuid::parse_str(s)
        .map_err(|_| anyhow::anyhow!("queue: Redis returned a malformed {what}: {s:?}"))
}

fn tier(s: &str) -> anyhow::Result<Tier> {
    let i: usize = num(s, "tier")?;
    Tier::ALL
        .get(i)
        .copied()
        .ok_or_else(|| anyhow::anyhow!("queue: Redis returned an unknown tier {i}"))
}

/// The retry delay before attempt `attempt + 1`: full jitter over `min(max, base * 2^(attempt-1))`.
fn backoff_ms(cfg: &QueueConfig, attempt: u32) -> u64 {
    let base = ms(cfg.backoff_base);
    let cap = ms(cfg.backoff_max);
    let exp = attempt.saturating_sub(1).min(40);
    let ceiling = base.saturating_mul(1u64 << exp).min(cap);
    if ceiling == 0 {
        0
    } else {
        rand::random_range(0..=ceiling)
    }
}

impl Queue {
    /// Connects to a Redis URL or, through Sentinel, to its master ([`crate::redis_conn`]); the connection
    /// reconnects on its own after a Redis restart and follows a failover.
    pub async fn connect(redis: impl Into<RedisTarget>, cfg: QueueConfig) -> anyhow::Result<Queue> {
        cfg.validate()?;
        let target = redis.into();
        if let RedisTarget::Url(url) = &target {
            redis::Client::open(url.as_str())
                .with_context(|| format!("queue: invalid Redis URL {url:?}"))?;
        }
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(6);
        let conn = RedisConn::connect(&target, config)
            .await
            .with_context(|| format!("queue: connecting to Redis ({})", target.describe()))?;
        Ok(Queue {
            conn,
            cfg,
            scripts: Arc::new(Scripts::new()),
        })
    }

    /// The settings this queue runs with.
    pub fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    /// Enqueues jobs in order (FIFO per tenant); returns how many were new (known ids are ignored).
    ///
    /// A payload over [`MAX_PAYLOAD_BYTES`] fails the whole call before anything is written. Batches are
    /// written [`ENQUEUE_CHUNK`] jobs per atomic step; an error midway leaves the earlier steps enqueued, and
    /// calling again with the same jobs is safe (known ids are skipped).
    pub async fn enqueue(&self, jobs: &[NewJob]) -> anyhow::Result<usize> {
        if let Some(big) = jobs.iter().find(|j| j.payload.len() > MAX_PAYLOAD_BYTES) {
            anyhow::bail!(
                "queue: job {} has a {} byte payload, over the {MAX_PAYLOAD_BYTES} byte limit",
                big.id,
                big.payload.len()
            );
        }
        let mut accepted = 0usize;
        for chunk in jobs.chunks(ENQUEUE_CHUNK) {
            let mut inv = self.scripts.enqueue.prepare_invoke();
            inv.arg(&self.cfg.prefix);
            for j in chunk {
                inv.arg(j.id.to_string())
                    .arg(j.provider_id.to_string())
                    .arg(j.tier.index())
                    .arg(&j.payload)
                    .arg(j.not_before_ms.map(|t| t.to_string()).unwrap_or_default());
            }
            let n: usize = inv
                .invoke_async(&mut self.conn.clone())
                .await
                .context("queue: enqueue")?;
            accepted += n;
        }
        Ok(accepted)
    }

    /// Leases up to `max` ready jobs, fairly between tiers and tenants, within each tenant's concurrency and
    /// rate limits; records `worker` as alive.
    ///
    /// Slots go to the tiers with work by smooth weighted round robin on `tier_weights` (its state is kept in
    /// Redis, so the shares hold over many small calls and across instances), and within a tier to its tenants
    /// in round robin. `max` is capped at [`MAX_RESERVE`]; `max == 0` only records the worker.
    pub async fn reserve(&self, worker: &str, max: usize) -> anyhow::Result<Vec<Lease>> {
        self.reserve_weighted(worker, max, self.cfg.tier_weights)
            .await
    }

    /// [`Queue::reserve`] with other tier weights for this call: a tier of weight 0 gets no slot (an express
    /// lane for the small tiers passes the large tier's weight as 0). The tenants' limits are the configured
    /// ones.
    pub async fn reserve_weighted(
        &self,
        worker: &str,
        max: usize,
        weights: [u32; 3],
    ) -> anyhow::Result<Vec<Lease>> {
        let c = &self.cfg;
        let mut inv = self.scripts.reserve.prepare_invoke();
        inv.arg(&c.prefix)
            .arg(worker)
            .arg(max.min(MAX_RESERVE))
            .arg(ms(c.visibility_timeout));
        for w in weights {
            inv.arg(w);
        }
        for n in c.tenant_concurrency {
            inv.arg(n);
        }
        for r in c.tenant_rate {
            inv.arg(r.to_string());
        }
        inv.arg(TENANT_SCAN);
        let flat: Vec<String> = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .context("queue: reserve")?;
        flat.chunks_exact(7)
            .map(|f| {
                Ok(Lease {
                    id: uuid(&f[0], "job id")?,
                    provider_id: uuid(&f[1], "tenant id")?,
                    tier: tier(&f[2])?,
                    payload: f[3].clone(),
                    attempt: num(&f[4], "attempt")?,
                    ready_ms: num(&f[5], "ready time")?,
                    leased_ms: num(&f[6], "lease time")?,
                })
            })
            .collect()
    }

    /// Extends a lease by the visibility timeout; `false` when the lease is not this attempt's any more.
    pub async fn extend(&self, id: Uuid, attempt: u32) -> anyhow::Result<bool> {
        let mut inv = self.scripts.extend.prepare_invoke();
        inv.arg(&self.cfg.prefix)
            .arg(id.to_string())
            .arg(attempt)
            .arg(ms(self.cfg.visibility_timeout));
        self.flag(&inv, "extend").await
    }

    /// Completes a leased job (`attempt: None` accepts any attempt: the result came from the agent);
    /// `false` when it was not leased (already completed, cancelled, or a stale attempt).
    ///
    /// With `attempt: None` the job is completed in whatever state it is (also ready again after a reclaim, or
    /// delayed for a retry): the agent's result proves the command ran, and delivering it again would run it a
    /// second time. Its id is then refused by `enqueue` for `dedup_window`.
    pub async fn complete(&self, id: Uuid, attempt: Option<u32>) -> anyhow::Result<bool> {
        let mut inv = self.scripts.complete.prepare_invoke();
        inv.arg(&self.cfg.prefix)
            .arg(id.to_string())
            .arg(attempt.map(|a| a.to_string()).unwrap_or_default())
            .arg(ms(self.cfg.dedup_window));
        self.flag(&inv, "complete").await
    }

    /// [`Queue::complete`] for many jobs in one round trip and one atomic step per [`ENQUEUE_CHUNK`] jobs;
    /// answers in the order given.
    pub async fn complete_many(&self, jobs: &[(Uuid, Option<u32>)]) -> anyhow::Result<Vec<bool>> {
        let mut done = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(ENQUEUE_CHUNK) {
            let mut inv = self.scripts.complete_many.prepare_invoke();
            inv.arg(&self.cfg.prefix).arg(ms(self.cfg.dedup_window));
            for (id, attempt) in chunk {
                inv.arg(id.to_string())
                    .arg(attempt.map(|a| a.to_string()).unwrap_or_default());
            }
            let flags: Vec<i64> = inv
                .invoke_async(&mut self.conn.clone())
                .await
                .context("queue: complete_many")?;
            done.extend(flags.into_iter().map(|f| f == 1));
        }
        Ok(done)
    }

    /// Schedules a retry with backoff, or dead-letters the job when its attempts are exhausted.
    pub async fn retry(&self, id: Uuid, attempt: u32, error: &str) -> anyhow::Result<RetryOutcome> {
        let (code, at): (i64, i64) = self
            .scripts
            .retry
            .prepare_invoke()
            .arg(&self.cfg.prefix)
            .arg(id.to_string())
            .arg(attempt)
            .arg(error)
            .arg(backoff_ms(&self.cfg, attempt))
            .arg(self.cfg.max_attempts)
            .invoke_async(&mut self.conn.clone())
            .await
            .context("queue: retry")?;
        Ok(match code {
            1 => RetryOutcome::DeadLettered,
            2 => RetryOutcome::Delayed { until_ms: at },
            _ => RetryOutcome::Stale,
        })
    }

    /// Runs a script that answers 1 when it applied (0: the lease or job was not there any more).
    async fn flag(&self, inv: &redis::ScriptInvocation<'_>, what: &str) -> anyhow::Result<bool> {
        let n: i64 = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .with_context(|| format!("queue: {what}"))?;
        Ok(n == 1)
    }

    /// Puts a leased job back in the delayed set until `until_ms` without counting an attempt (its agent is
    /// offline); `false` when the lease is stale.
    pub async fn defer(&self, id: Uuid, attempt: u32, until_ms: i64) -> anyhow::Result<bool> {
        let mut inv = self.scripts.defer.prepare_invoke();
        inv.arg(&self.cfg.prefix)
            .arg(id.to_string())
            .arg(attempt)
            .arg(until_ms);
        self.flag(&inv, "defer").await
    }

    /// [`Queue::defer`] for many leases `(id, attempt, until_ms)` in one round trip and one atomic step per
    /// [`ENQUEUE_CHUNK`]; answers in the order given (`false`: that lease was stale).
    pub async fn defer_many(&self, leases: &[(Uuid, u32, i64)]) -> anyhow::Result<Vec<bool>> {
        let mut done = Vec::with_capacity(leases.len());
        for chunk in leases.chunks(ENQUEUE_CHUNK) {
            let mut inv = self.scripts.defer_many.prepare_invoke();
            inv.arg(&self.cfg.prefix);
            for (id, attempt, until_ms) in chunk {
                inv.arg(id.to_string()).arg(attempt).arg(until_ms);
            }
            let flags: Vec<i64> = inv
                .invoke_async(&mut self.conn.clone())
                .await
                .context("queue: defer_many")?;
            done.extend(flags.into_iter().map(|f| f == 1));
        }
        Ok(done)
    }

    /// Makes deferred or delayed jobs ready now, in their original order (an agent came back).
    ///
    /// "Original order" is the enqueue order: a woken job takes its old place in its tenant's queue, ahead of
    /// jobs enqueued after it. Ids that are not delayed are skipped.
    pub async fn wake(&self, ids: &[Uuid]) -> anyhow::Result<usize> {
        let mut woken = 0;
        for chunk in ids.chunks(ENQUEUE_CHUNK) {
            let mut inv = self.scripts.wake.prepare_invoke();
            inv.arg(&self.cfg.prefix);
            for id in chunk {
                inv.arg(id.to_string());
            }
            let n: usize = inv
                .invoke_async(&mut self.conn.clone())
                .await
                .context("queue: wake")?;
            woken += n;
        }
        Ok(woken)
    }

    /// Dead-letters a leased job at once (a permanent failure).
    pub async fn dead_letter(&self, id: Uuid, attempt: u32, error: &str) -> anyhow::Result<bool> {
        let mut inv = self.scripts.dead_letter.prepare_invoke();
        inv.arg(&self.cfg.prefix)
            .arg(id.to_string())
            .arg(attempt)
            .arg(error);
        self.flag(&inv, "dead_letter").await
    }

    /// Removes a job wherever it is (ready, delayed, leased, dead); `false` when unknown.
    ///
    /// A job of another tenant counts as unknown. The id is then refused by `enqueue` for `dedup_window`. A
    /// leased job's worker finds out at its next `extend` or `complete` (both answer `false`).
    pub async fn cancel(&self, provider_id: Uuid, id: Uuid) -> anyhow::Result<bool> {
        let mut inv = self.scripts.cancel.prepare_invoke();
        inv.arg(&self.cfg.prefix)
            .arg(provider_id.to_string())
            .arg(id.to_string())
            .arg(ms(self.cfg.dedup_window));
        self.flag(&inv, "cancel").await
    }

    /// Reclaims expired leases and promotes due delayed jobs; returns (reclaimed, promoted). Safe to run from
    /// every instance at once.
    ///
    /// A reclaimed job goes back to its tenant's queue at its original place (enqueue order) with its attempt
    /// raised; one whose last attempt expired is dead-lettered instead (a job that keeps killing its workers).
    pub async fn maintain(&self) -> anyhow::Result<(usize, usize)> {
        let (mut reclaimed, mut promoted) = (0, 0);
        loop {
            let (r, p): (usize, usize) = self
                .scripts
                .maintain
                .prepare_invoke()
                .arg(&self.cfg.prefix)
                .arg(MAINTAIN_CHUNK)
                .arg(self.cfg.max_attempts)
                .invoke_async(&mut self.conn.clone())
                .await
                .context("queue: maintain")?;
            reclaimed += r;
            promoted += p;
            if r < MAINTAIN_CHUNK && p < MAINTAIN_CHUNK {
                return Ok((reclaimed, promoted));
            }
        }
    }

    /// A tenant's dead letters, oldest first, after `after`.
    ///
    /// `limit` is capped at [`MAX_RESERVE`]; an `after` that is no longer in the queue (requeued or discarded
    /// meanwhile) gives an empty page.
    pub async fn dead_letters(
        &self,
        provider_id: Uuid,
        limit: usize,
        after: Option<Uuid>,
    ) -> anyhow::Result<Vec<DeadLetter>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let flat: Vec<String> = self
            .scripts
            .dead_letters
            .prepare_invoke()
            .arg(&self.cfg.prefix)
            .arg(provider_id.to_string())
            .arg(limit.min(MAX_RESERVE))
            .arg(after.map(|a| a.to_string()).unwrap_or_default())
            .invoke_async(&mut self.conn.clone())
            .await
            .context("queue: dead_letters")?;
        flat.chunks_exact(5)
            .map(|f| {
                Ok(DeadLetter {
                    id: uuid(&f[0], "job id")?,
                    payload: f[1].clone(),
                    attempts: num(&f[2], "attempt")?,
                    error: f[3].clone(),
                    failed_ms: num(&f[4], "failure time")?,
                })
            })
            .collect()
    }

    /// Puts a dead letter back in the ready queue with a fresh attempt count.
    ///
    /// It goes to the back of its tenant's queue, like a new job.
    pub async fn requeue_dead(&self, provider_id: Uuid, id: Uuid) -> anyhow::Result<bool> {
        let mut inv = self.scripts.requeue_dead.prepare_invoke();
        inv.arg(&self.cfg.prefix)
            .arg(provider_id.to_string())
            .arg(id.to_string());
        self.flag(&inv, "requeue_dead").await
    }

    /// Deletes a dead letter.
    pub async fn discard_dead(&self, provider_id: Uuid, id: Uuid) -> anyhow::Result<bool> {
        let mut inv = self.scripts.discard_dead.prepare_invoke();
        inv.arg(&self.cfg.prefix)
            .arg(provider_id.to_string())
            .arg(id.to_string())
            .arg(ms(self.cfg.dedup_window));
        self.flag(&inv, "discard_dead").await
    }

    /// The whole queue's counts.
    ///
    /// The oldest ready age of a tier looks at the heads of its first [`TENANT_SCAN`] tenants in round-robin
    /// order.
    pub async fn stats(&self) -> anyhow::Result<QueueStats> {
        let flat: Vec<String> = self
            .scripts
            .stats
            .prepare_invoke()
            .arg(&self.cfg.prefix)
            .arg(TENANT_SCAN)
            .invoke_async(&mut self.conn.clone())
            .await
            .context("queue: stats")?;
        if flat.len() < 22 {
            anyhow::bail!(
                "queue: Redis returned {} stats fields, expected 22 or more",
                flat.len()
            );
        }
        let count = |s: &str| -> anyhow::Result<u64> { Ok(num::<i64>(s, "count")?.max(0) as u64) };
        let mut stats = QueueStats::default();
        for (k, t) in stats.tiers.iter_mut().enumerate() {
            let f = &flat[k * 5..k * 5 + 5];
            *t = TierStats {
                ready: count(&f[0])?,
                leased: count(&f[1])?,
                delayed: count(&f[2])?,
                tenants_active: count(&f[3])?,
                oldest_ready_age_ms: count(&f[4])?,
            };
        }
        let n = &flat[15..22];
        stats.dead = count(&n[0])?;
        stats.counters = QueueCounters {
            enqueued: count(&n[1])?,
            leased: count(&n[2])?,
            completed: count(&n[3])?,
            retried: count(&n[4])?,
            dead_lettered: count(&n[5])?,
            reclaimed: count(&n[6])?,
        };
        for w in flat[22..].chunks_exact(2) {
            stats.workers.push(WorkerInfo {
                name: w[0].clone(),
                last_seen_ms: num(&w[1], "worker time")?,
            });
        }
        Ok(stats)
    }

    /// One tenant's counts.
    pub async fn tenant_stats(&self, provider_id: Uuid) -> anyhow::Result<TenantStats> {
        let v: Vec<i64> = self
            .scripts
            .tenant_stats
            .prepare_invoke()
            .arg(&self.cfg.prefix)
            .arg(provider_id.to_string())
            .invoke_async(&mut self.conn.clone())
            .await
            .context("queue: tenant_stats")?;
        let [ready, leased, delayed, dead, oldest] = v[..] else {
            anyhow::bail!(
                "queue: Redis returned {} tenant stats fields, expected 5",
                v.len()
            );
        };
        let c = |x: i64| x.max(0) as u64;
        Ok(TenantStats {
            ready: c(ready),
            leased: c(leased),
            delayed: c(delayed),
            dead: c(dead),
            oldest_ready_age_ms: c(oldest),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_ceiling_capped_at_the_maximum() {
        let cfg = QueueConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            ..QueueConfig::default()
        };
        for (attempt, ceiling) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (60, 1000),
        ] {
            let draws: Vec<u64> = (0..2000).map(|_| backoff_ms(&cfg, attempt)).collect();
            assert!(draws.iter().all(|d| *d <= ceiling), "attempt {attempt}");
            // Full jitter: spread over the whole range, not bunched at the ceiling.
            assert!(draws.iter().any(|d| *d < ceiling / 4), "attempt {attempt}");
            assert!(
                draws.iter().any(|d| *d > ceiling * 3 / 4),
                "attempt {attempt}"
            );
        }
        let zero = QueueConfig {
            backoff_base: Duration::ZERO,
            ..QueueConfig::default()
        };
        assert_eq!(backoff_ms(&zero, 3), 0);
    }

    #[test]
    fn default_settings_are_valid_and_bad_ones_name_their_key() {
        QueueConfig::default()
            .validate()
            .expect("defaults are valid");
        let bad = QueueConfig {
            tenant_rate: [1.0, f64::NAN, 1.0],
            ..QueueConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("queue.tenant_rate")
        );
        let bad = QueueConfig {
            backoff_max: Duration::from_millis(1),
            ..QueueConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("queue.backoff_max")
        );
    }
}
