//! The dispatcher (role `workers`), the inbox consumer (role `ingest`), the agent-connect wake-up, the
//! reconciler and the queue's maintenance and metrics loops.
//!
//! Dispatcher: `queue.reserve` → the command row → its agent:
//! - held by this instance: the stream runs here ([`super::stream::run`]);
//! - held by another instance: the lease is pushed onto that instance's inbox; the holder serves it (it extends
//!   the lease from then on; if it dies, the queue reclaims the lease and delivers it again);
//! - offline: past the deadline the command fails `expired` with the agent's name and last contact; before it,
//!   the command goes `waiting_agent` and the job is deferred until the deadline. When the agent says Hello,
//!   [`agent_connected`] wakes its waiting commands in creation order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::commands::order::Dispatching;
use crate::commands::stream::{self, CommandRow, JobRef};
use crate::commands::{Commands, JobPayload, is_final, now_ms, pause, provider_tier};
use crate::db;
use crate::queue::Lease;

/// Leases asked for per `reserve` call at most.
const RESERVE_BATCH: usize = 64;
/// Leases the express lane asks for per call at most.
const EXPRESS_BATCH: usize = 8;
/// Pause when the queue had nothing for us.
const IDLE_PAUSE: Duration = Duration::from_millis(20);
/// Pause of the express lane when the small and medium tiers had nothing.
const EXPRESS_IDLE_PAUSE: Duration = Duration::from_millis(10);

/// What the lanes of one dispatcher share.
struct Lanes {
    /// Dispatch slots (see `commands.dispatch_concurrency`).
    slots: Arc<Semaphore>,
    /// Every lease's task.
    tasks: TaskTracker,
    /// Held from a `reserve` until its leases took their turns, so that the two lanes' leases of one agent
    /// start in lease order.
    leasing: tokio::sync::Mutex<()>,
}

/// Runs the dispatcher until shutdown: the main lane, and the express lane for the small and medium tiers.
///
/// The main lane reserves up to [`RESERVE_BATCH`] leases from every tier (weighted fair sharing) and reads and
/// marks their rows before it reserves again, so under a flood its cycle is as long as that work. The express
/// lane reserves only from the small and medium tiers (the large tier's weight set to 0 for its calls), a few
/// at a time: a small tenant's command does not wait for the main lane's cycle through a large tenant's flood.
/// Both go through the same scheduler script, so every tenant's concurrency and rate limits hold, and the small
/// tiers gain no more than those limits give them.
pub async fn dispatcher_loop(cmds: Commands, worker: String, shutdown: CancellationToken) {
    let lanes = Arc::new(Lanes {
        slots: Arc::new(Semaphore::new(cmds.cfg.dispatch_concurrency)),
        tasks: TaskTracker::new(),
        leasing: tokio::sync::Mutex::new(()),
    });
    tracing::info!(worker = %worker, "Command dispatcher running.");
    let [small, medium, _] = cmds.queue.config().tier_weights;
    let express = (small > 0 || medium > 0).then(|| {
        let (cmds, worker, lanes, shutdown) = (
            cmds.clone(),
            worker.clone(),
            lanes.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            lane(
                &cmds,
                &worker,
                [small, medium, 0],
                EXPRESS_BATCH,
                EXPRESS_IDLE_PAUSE,
                &lanes,
                &shutdown,
            )
            .await
        })
    });
    let weights = cmds.queue.config().tier_weights;
    lane(
        &cmds,
        &worker,
        weights,
        RESERVE_BATCH,
        IDLE_PAUSE,
        &lanes,
        &shutdown,
    )
    .await;
    if let Some(e) = express {
        let _ = e.await;
    }
    lanes.tasks.close();
    // Open streams end with their connections; leases not settled are reclaimed by the queue.
    let _ = tokio::time::timeout(Duration::from_secs(5), lanes.tasks.wait()).await;
    tracing::info!("Command dispatcher stopped.");
}

/// One lane of the dispatcher: reserves with `weights` up to `batch` leases a call, until shutdown.
async fn lane(
    cmds: &Commands,
    worker: &str,
    weights: [u32; 3],
    batch: usize,
    idle: Duration,
    lanes: &Lanes,
    shutdown: &CancellationToken,
) {
    let slots = &lanes.slots;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let free = slots.available_permits().min(batch);
        if free == 0 {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                p = slots.clone().acquire_owned() => drop(p),
            }
            continue;
        }
        let leasing = lanes.leasing.lock().await;
        let leases = match cmds.queue.reserve_weighted(worker, free, weights).await {
            Ok(l) => l,
            Err(err) => {
                drop(leasing);
                tracing::warn!(error = %err, "Cannot reserve commands; retrying.");
                if pause(shutdown, Duration::from_secs(1)).await {
                    break;
                }
                continue;
            }
        };
        if leases.is_empty() {
            drop(leasing);
            if pause(shutdown, idle).await {
                break;
            }
            continue;
        }
        let agents: Vec<Option<Uuid>> = leases
            .iter()
            .map(|l| {
                serde_json::from_str::<JobPayload>(&l.payload)
                    .ok()
                    .map(|p| p.agent_id)
            })
            .collect();
        // Taken now, in lease order, so the agent's commands start in that order.
        let turns: Vec<_> = agents
            .iter()
            .map(|a| a.map(|a| cmds.links.order().take(a)))
            .collect();
        drop(leasing);
        // The leases whose agent this instance holds are read and marked dispatched together, one statement
        // per tenant; the others (held elsewhere, offline, or when that statement failed) go one by one.
        let mut preloaded = preload(cmds, &leases, &agents).await;
        for ((lease, agent), turn) in leases.into_iter().zip(agents).zip(turns) {
            metrics::histogram!("octoisp_command_queue_wait_seconds", "tier" => lease.tier.as_str())
                .record((lease.leased_ms - lease.ready_ms).max(0) as f64 / 1000.0);
            let cmds = cmds.clone();
            if let (Some(agent_id), Some(row)) = (agent, preloaded.remove(&lease.id))
                && let Some(conn) = cmds.links.local(agent_id)
            {
                let job = JobRef {
                    id: lease.id,
                    provider_id: lease.provider_id,
                    attempt: lease.attempt,
                    agent_id,
                };
                let slot = Dispatching { turn, permit: None };
                lanes
                    .tasks
                    .spawn(async move { serve_loaded(&cmds, conn, job, row, slot).await });
                continue;
            }
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let slot = Dispatching {
                turn,
                permit: Some(permit),
            };
            lanes.tasks.spawn(async move {
                dispatch(&cmds, lease, slot).await;
            });
        }
    }
}

/// Routes one lease; `turn` is its place in its agent's start order ([`super::order`]).
pub async fn dispatch(cmds: &Commands, lease: Lease, mut slot: Dispatching) {
    let agent_id = match serde_json::from_str::<JobPayload>(&lease.payload) {
        Ok(p) => p.agent_id,
        Err(err) => {
            let why = format!("unreadable job payload: {err}");
            let _ = cmds.queue.dead_letter(lease.id, lease.attempt, &why).await;
            return;
        }
    };
    let job = JobRef {
        id: lease.id,
        provider_id: lease.provider_id,
        attempt: lease.attempt,
        agent_id,
    };
    if let Some(conn) = cmds.links.local(agent_id) {
        serve_here(cmds, conn, job, slot).await;
        return;
    }
    let holder = match cmds.links.holder(agent_id).await {
        Ok(h) => h,
        Err(err) => {
            stream::retry(
                cmds,
                &job,
                &format!("cannot look up the agent's connection: {err}"),
            )
            .await;
            return;
        }
    };
    match holder {
        Some(instance) if instance != cmds.links.instance_id() => {
            // The holder serves its inbox in push order: push in turn.
            wait_turn(cmds, &mut slot).await;
            let text = serde_json::to_string(&job).unwrap_or_default();
            if let Err(err) = cmds.links.hand_over(&instance, &text).await {
                stream::retry(cmds, &job, &format!("cannot hand the command over: {err}")).await;
            } else {
                metrics::counter!("octoisp_commands_handed_over_total").increment(1);
            }
        }
        // Registered to us but not in our map (the connection just ended), or nobody: offline.
        _ => offline(cmds, job).await,
    }
}

/// Waits for `turn` (bounded by a third of the visibility timeout).
pub async fn wait_turn(cmds: &Commands, slot: &mut Dispatching) {
    if slot.wait(cmds.extend_every).await {
        metrics::counter!("octoisp_commands_order_waits_bounded_total").increment(1);
    }
}

/// Serves a job whose agent this instance holds; its `turn` ends once its stream is open and the command
/// written.
pub async fn serve_here(cmds: &Commands, conn: quinn::Connection, job: JobRef, slot: Dispatching) {
    let row = match stream::load_for_dispatch(cmds, &job).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            // Deleted or never stored: nothing to run.
            let _ = cmds.queue.complete(job.id, Some(job.attempt)).await;
            return;
        }
        Err(err) => {
            stream::retry(cmds, &job, &format!("cannot read the command: {err}")).await;
            return;
        }
    };
    serve_loaded(cmds, conn, job, Some(row), slot).await;
}

/// Serves a job whose row was read and marked dispatched (`None`: the row is gone).
async fn serve_loaded(
    cmds: &Commands,
    conn: quinn::Connection,
    job: JobRef,
    row: Option<CommandRow>,
    slot: Dispatching,
) {
    let Some(row) = row.filter(|r| !is_final(&r.status)) else {
        // Deleted, never stored, or finished: nothing to run.
        let _ = cmds.queue.complete(job.id, Some(job.attempt)).await;
        return;
    };
    let end = stream::run(cmds, conn, job, row, slot).await;
    tracing::debug!(command = %job.id, end = ?end, "Command stream ended.");
}

/// Reads and marks dispatched, per tenant in one statement, the leases whose agent this instance holds. A lease
/// missing from the answer (its tenant's statement failed) is dispatched on its own; a row that is gone maps to
/// `None`.
async fn preload(
    cmds: &Commands,
    leases: &[Lease],
    agents: &[Option<Uuid>],
) -> HashMap<Uuid, Option<CommandRow>> {
    let mut by_tenant: HashMap<Uuid, Vec<(Uuid, i32)>> = HashMap::new();
    for (lease, agent) in leases.iter().zip(agents) {
        if agent.is_some_and(|a| cmds.links.local(a).is_some()) {
            by_tenant
                .entry(lease.provider_id)
                .or_default()
                .push((lease.id, lease.attempt as i32));
        }
    }
    let mut out = HashMap::new();
    for (provider, jobs) in by_tenant {
        match stream::load_many_for_dispatch(cmds, provider, &jobs).await {
            Ok(mut rows) => {
                for (id, _) in jobs {
                    out.insert(id, rows.remove(&id));
                }
            }
            Err(err) => {
                tracing::warn!(provider = %provider, error = %err, "Cannot read a batch of commands; one by one.")
            }
        }
    }
    out
}

/// The agent is not connected anywhere.
async fn offline(cmds: &Commands, job: JobRef) {
    let row = match stream::load(cmds, &job).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            let _ = cmds.queue.complete(job.id, Some(job.attempt)).await;
            return;
        }
        Err(err) => {
            stream::retry(cmds, &job, &format!("cannot read the command: {err}")).await;
            return;
        }
    };
    if is_final(&row.status) {
        let _ = cmds.queue.complete(job.id, Some(job.attempt)).await;
        return;
    }
    let deadline_ms = row.deadline.timestamp_millis();
    if now_ms() >= deadline_ms {
        expire(cmds, &job, &row).await;
        return;
    }
    if let Err(err) =
        stream::update_status(cmds, job.provider_id, job.id, "waiting_agent", None).await
    {
        tracing::warn!(command = %job.id, error = %err, "Cannot mark the command waiting.");
    }
    // Until the deadline; the agent's Hello wakes it earlier.
    if let Err(err) = cmds.queue.defer(job.id, job.attempt, deadline_ms).await {
        tracing::warn!(command = %job.id, error = %err, "Cannot defer the command; its lease will be reclaimed.");
        return;
    }
    metrics::counter!("octoisp_commands_waiting_agent_total").increment(1);
    // The agent may have said Hello since its holder was looked up: its wake-up ([`agent_connected`]) then ran
    // before this command was waiting and did not see it. The agent registers before it wakes, and this looks
    // again after the command waits, so one of the two sees the other; a second wake of a ready job is a no-op.
    // A holder key naming this instance without a connection here is a connection that just ended: not back.
    let back = match cmds.links.local(job.agent_id) {
        Some(_) => true,
        None => matches!(cmds.links.holder(job.agent_id).await,
                         Ok(Some(i)) if i != cmds.links.instance_id()),
    };
    if back {
        wake_waiting(cmds, job.provider_id, job.agent_id, &[job.id]).await;
    }
}

/// Puts the commands waiting for `agent` (back now) in the queue again, in their original order: the rows go
/// from `waiting_agent` to `queued`, the jobs from the delayed set to their tenant's queue. The jobs of `also`
/// are woken even when their row was moved already (by the other side of the race `offline` closes).
async fn wake_waiting(cmds: &Commands, provider_id: Uuid, agent: Uuid, also: &[Uuid]) {
    let rows: anyhow::Result<Vec<Uuid>> = async {
        let mut tx = db::tenant_tx(&cmds.pool, provider_id).await?;
        let rows: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE commands SET status = 'queued' \
             WHERE provider_id = $1 AND agent_id = $2 AND status = 'waiting_agent' RETURNING id",
        )
        .bind(provider_id)
        .bind(agent)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }
    .await;
    let mut ids: Vec<Uuid> = match rows {
        Ok(rows) => rows.into_iter().chain(also.iter().copied()).collect(),
        Err(err) => {
            tracing::warn!(agent = %agent, error = %err, "Cannot read the agent's waiting commands.");
            return;
        }
    };
    if ids.is_empty() {
        return;
    }
    // UUIDv7: id order is creation order.
    ids.sort_unstable();
    ids.dedup();
    match cmds.queue.wake(&ids).await {
        Ok(n) if n > 0 => {
            tracing::info!(agent = %agent, woken = n, "Agent back: waiting commands woken.")
        }
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(agent = %agent, error = %err, "Cannot wake the agent's commands.")
        }
    }
}

/// Fails a command whose agent stayed offline past its deadline, naming the agent and its last contact.
async fn expire(cmds: &Commands, job: &JobRef, row: &CommandRow) {
    let agent: Option<(String, Option<DateTime<Utc>>)> = async {
        let mut tx = db::tenant_tx(&cmds.pool, job.provider_id).await.ok()?;
        let a = sqlx::query_as(
            "SELECT hostname, last_seen FROM agents WHERE provider_id = $1 AND id = $2",
        )
        .bind(job.provider_id)
        .bind(row.agent_id)
        .fetch_optional(&mut *tx)
        .await
        .ok()?;
        let _ = tx.commit().await;
        a
    }
    .await;
    let (name, since) = match agent {
        Some((name, Some(seen))) => (
            name,
            seen.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        Some((name, None)) => (name, "it enrolled (never connected)".to_owned()),
        None => (row.agent_id.to_string(), "unknown".to_owned()),
    };
    let why = format!(
        "agent {name} offline since {since}; deadline {} passed",
        row.deadline
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    if let Err(err) =
        stream::update_status(cmds, job.provider_id, job.id, "expired", Some(&why)).await
    {
        tracing::warn!(command = %job.id, error = %err, "Cannot mark the command expired.");
        return;
    }
    let _ = cmds.queue.complete(job.id, Some(job.attempt)).await;
    metrics::counter!("octoisp_commands_expired_total").increment(1);
}

/// Called by ingest when an agent's Hello was accepted: registers the connection and wakes its waiting
/// commands in creation order.
pub async fn agent_connected(
    cmds: &Commands,
    provider_id: Uuid,
    agent_id: Uuid,
    conn: quinn::Connection,
) {
    if let Err(err) = cmds.links.register(agent_id, conn).await {
        tracing::warn!(agent = %agent_id, error = %err, "Cannot register the agent's connection in Redis.");
    }
    wake_waiting(cmds, provider_id, agent_id, &[]).await;
    // Then its configuration, when the POP has a newer one than the agent got.
    if let Err(err) = super::agent_config::on_connect(cmds, provider_id, agent_id).await {
        tracing::warn!(agent = %agent_id, error = %err, "Cannot push the agent's configuration.");
    }
}

/// Serves the leases other instances hand over to this one (role `ingest`), until shutdown.
pub async fn inbox_loop(cmds: Commands, shutdown: CancellationToken) {
    let key = cmds.links.inbox_key(cmds.links.instance_id());
    let mut redis = cmds.links.redis();
    let slots = Arc::new(Semaphore::new(cmds.cfg.dispatch_concurrency));
    let tasks = TaskTracker::new();
    loop {
        let mut brpop = redis::cmd("BRPOP");
        brpop.arg(&key).arg(1);
        let popped: redis::RedisResult<Option<(String, String)>> = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = brpop.query_async(&mut redis) => r,
        };
        let text = match popped {
            Ok(Some((_, text))) => text,
            Ok(None) => continue,
            Err(err) => {
                tracing::debug!(error = %err, "Command inbox: BRPOP failed; retrying.");
                if pause(&shutdown, Duration::from_secs(1)).await {
                    break;
                }
                continue;
            }
        };
        let Ok(job) = serde_json::from_str::<JobRef>(&text) else {
            tracing::warn!("Command inbox: unreadable entry dropped.");
            continue;
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let cmds2 = cmds.clone();
        // Taken in inbox order: the dispatching instance pushed an agent's leases in its start order.
        let slot = Dispatching {
            turn: Some(cmds.links.order().take(job.agent_id)),
            permit: Some(permit),
        };
        tasks.spawn(async move {
            match cmds2.links.local(job.agent_id) {
                Some(conn) => serve_here(&cmds2, conn, job, slot).await,
                // It left between the lookup and now: treat as offline (deferred, woken on its return).
                None => offline(&cmds2, job).await,
            }
        });
    }
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
}

/// Re-enqueues unfinished commands older than a minute (a Redis that lost its data, an enqueue that failed
/// after the row was stored); the queue ignores ids it knows, so this never duplicates a job.
pub async fn reconcile_once(cmds: &Commands) -> anyhow::Result<usize> {
    let providers: Vec<Uuid> = sqlx::query_scalar("SELECT octoisp_command_open_providers()")
        .fetch_all(&cmds.pool)
        .await?;
    let mut total = 0;
    for provider in providers {
        let mut tx = db::tenant_tx(&cmds.pool, provider).await?;
        let tier = provider_tier(&mut tx, provider).await?;
        let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT id, agent_id FROM commands WHERE provider_id = $1 AND final_status IS NULL \
               AND created_at < now() - interval '1 minute' ORDER BY id LIMIT 10000",
        )
        .bind(provider)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        total += rows.len();
        cmds.enqueue_stored(provider, tier, &rows).await;
    }
    Ok(total)
}

/// Runs the reconciler every `commands.reconcile_secs` until shutdown.
pub async fn reconcile_loop(cmds: Commands, shutdown: CancellationToken) {
    let every = Duration::from_secs(cmds.cfg.reconcile_secs);
    loop {
        if pause(&shutdown, every).await {
            return;
        }
        match reconcile_once(&cmds).await {
            Ok(n) if n > 0 => {
                tracing::debug!(commands = n, "Unfinished commands re-offered to the queue.")
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "Command reconciliation failed."),
        }
    }
}

/// Runs `queue.maintain` (reclaim expired leases, promote due jobs) and publishes the queue's gauges.
pub async fn maintain_loop(cmds: Commands, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match cmds.queue.maintain().await {
            Ok((reclaimed, promoted)) => {
                if reclaimed > 0 {
                    tracing::info!(
                        reclaimed,
                        "Command leases reclaimed (a worker stopped extending them)."
                    );
                }
                let _ = promoted;
            }
            Err(err) => tracing::debug!(error = %err, "Queue maintenance failed."),
        }
        n += 1;
        if n.is_multiple_of(10) {
            publish_gauges(&cmds).await;
        }
    }
}

/// Queue gauges on `/metrics`.
async fn publish_gauges(cmds: &Commands) {
    let Ok(stats) = cmds.queue.stats().await else {
        return;
    };
    for tier in crate::queue::Tier::ALL {
        let t = &stats.tiers[tier.index()];
        let name = tier.as_str();
        metrics::gauge!("octoisp_queue_ready", "tier" => name).set(t.ready as f64);
        metrics::gauge!("octoisp_queue_oldest_ready_seconds", "tier" => name)
            .set(t.oldest_ready_age_ms as f64 / 1000.0);
        metrics::gauge!("octoisp_queue_leased", "tier" => name).set(t.leased as f64);
        metrics::gauge!("octoisp_queue_delayed", "tier" => name).set(t.delayed as f64);
        metrics::gauge!("octoisp_queue_tenants_active", "tier" => name)
            .set(t.tenants_active as f64);
    }
    metrics::gauge!("octoisp_queue_dead").set(stats.dead as f64);
    metrics::gauge!("octoisp_queue_workers").set(stats.workers.len() as f64);
    let c = &stats.counters;
    for (name, v) in [
        ("enqueued", c.enqueued),
        ("leased", c.leased),
        ("completed", c.completed),
        ("retried", c.retried),
        ("dead_lettered", c.dead_lettered),
        ("reclaimed", c.reclaimed),
    ] {
        metrics::counter!("octoisp_queue_jobs_total", "event" => name).absolute(v);
    }
    metrics::gauge!("octoisp_command_agents_connected").set(cmds.links.local_count() as f64);
}
