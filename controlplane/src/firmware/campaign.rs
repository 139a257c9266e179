//! Firmware campaigns run from the centre: one image rolled out over many CPEs in cumulative stages, each
//! device's download a `tr069.download` command through the queue (so the agent of the device's POP fetches the
//! image over its uplink, serves it and tracks the TransferComplete), halted by its stop rule.
//!
//! ```text
//! running ──tick──▶ results of finished commands → device succeeded / failed
//!    │              devices still running after come_back_secs → failed ("did not come back")
//!    │              Campaign::decide (octoisp_shared::campaign):
//!    │                 Start(next stage) → tr069.download commands queued, devices running
//!    │                 Halt → halted (pending devices skipped), audit row
//!    │                 Done → done, audit row
//!    ├─ pause ──▶ paused (no new device starts) ── resume ──▶ running
//!    └─ cancel ─▶ cancelled (pending devices skipped)
//!   pause and cancel withdraw the downloads no CPE has started ([`withdraw`]): not yet delivered → cancelled
//!   here; delivered → `tr069.withdraw` to the agent, which removes the queued ACS tasks (command `cancelled`
//!   → device pending when paused, skipped when cancelled) and lets a download already sent to its CPE finish
//!   (device succeeded or failed as it ends).
//! ```
//!
//! A tick runs in the workers role every `firmware.campaign_tick_secs`; each campaign is advanced in a transaction
//! bound to its provider that locks its row (`FOR UPDATE SKIP LOCKED`), so several workers never start the same
//! stage twice.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use octoisp_shared::campaign::{Campaign, Decision, Outcome};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::commands::{Commands, provider_tier};
use crate::db;

/// Final command statuses and what they mean for a device of a campaign.
const FINAL: [&str; 6] = [
    "succeeded",
    "failed",
    "expired",
    "rejected",
    "cancelled",
    "dead",
];

/// The campaign loop of the workers role: advances every running campaign each `tick`.
pub async fn run_loop(
    pool: PgPool,
    commands: Commands,
    tick: Duration,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let Err(err) = tick_all(&pool, &commands).await {
            tracing::warn!(error = %err, "Cannot advance firmware campaigns; retrying at the next tick.");
        }
    }
}

/// Advances every running campaign once (and collects the outcomes of devices still running in paused or ended
/// ones).
pub async fn tick_all(pool: &PgPool, commands: &Commands) -> anyhow::Result<()> {
    let running: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT provider_id, id FROM octoisp_running_campaigns()")
            .fetch_all(pool)
            .await?;
    for (provider, id) in running {
        if let Err(err) = advance(pool, commands, provider, id).await {
            tracing::warn!(campaign = %id, provider = %provider, error = %err, "Cannot advance a firmware campaign.");
        }
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct CampaignRow {
    image_sha256: String,
    stages_pct: Vec<i32>,
    max_failure_pct: f64,
    come_back_secs: i32,
    status: String,
}

#[derive(sqlx::FromRow)]
struct DeviceRow {
    device_id: Uuid,
    state: String,
    started_at: Option<DateTime<Utc>>,
}

/// Advances one campaign: collects outcomes, applies the stop rule, starts the next stage or ends it.
pub async fn advance(
    pool: &PgPool,
    commands: &Commands,
    provider: Uuid,
    id: Uuid,
) -> anyhow::Result<()> {
    let mut tx = db::tenant_tx(pool, provider).await?;
    let row: Option<CampaignRow> = sqlx::query_as(
        "SELECT image_sha256, stages_pct, max_failure_pct, come_back_secs, status FROM firmware_campaigns \
         WHERE provider_id = $1 AND id = $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(provider)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(c) = row else { return Ok(()) };
    collect_outcomes(&mut tx, provider, id, c.come_back_secs, &c.status).await?;
    if c.status != "running" {
        // Paused or ended: only the outcomes of devices already started are collected.
        tx.commit().await?;
        return Ok(());
    }
    let devices: Vec<DeviceRow> = sqlx::query_as(
        "SELECT device_id, state, started_at FROM firmware_campaign_devices \
         WHERE provider_id = $1 AND campaign_id = $2 ORDER BY position",
    )
    .bind(provider)
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let plan = Campaign {
        devices: devices.iter().map(|d| d.device_id.to_string()).collect(),
        stages_pct: c.stages_pct.iter().map(|p| (*p).max(0) as u32).collect(),
        max_failure_pct: c.max_failure_pct,
        come_back_ms: i64::from(c.come_back_secs) * 1000,
    };
    let outcomes: HashMap<String, Outcome> = devices
        .iter()
        .filter_map(|d| {
            let o = match d.state.as_str() {
                "running" => Outcome::InProgress(d.started_at.map_or(0, |t| t.timestamp_millis())),
                "succeeded" => Outcome::Succeeded,
                "failed" => Outcome::Failed,
                _ => return None,
            };
            Some((d.device_id.to_string(), o))
        })
        .collect();
    let mut jobs = Vec::new();
    match plan.decide(&outcomes, Utc::now().timestamp_millis()) {
        Decision::Wait => {}
        Decision::Start(next) => {
            let ids: Vec<Uuid> = next.iter().filter_map(|d| d.parse().ok()).collect();
            jobs = start_devices(
                &mut tx,
                provider,
                id,
                &ids,
                &c.image_sha256,
                c.come_back_secs,
            )
            .await?;
            tracing::info!(campaign = %id, devices = ids.len(), started = jobs.len(), "Firmware campaign: next stage started.");
        }
        Decision::Halt { failed, finished } => {
            let reason = format!(
                "stop rule: {failed} of {finished} finished devices failed (more than {}%)",
                c.max_failure_pct
            );
            end(&mut tx, provider, id, "halted", Some(&reason)).await?;
            tracing::warn!(campaign = %id, failed, finished, "Firmware campaign halted by its stop rule.");
        }
        Decision::Done => {
            end(&mut tx, provider, id, "done", None).await?;
            tracing::info!(campaign = %id, "Firmware campaign done.");
        }
    }
    let tier = provider_tier(&mut tx, provider).await?;
    tx.commit().await?;
    if !jobs.is_empty() {
        commands.enqueue_stored(provider, tier, &jobs).await;
    }
    Ok(())
}

/// Moves running devices whose command ended to succeeded/failed, and those running longer than `come_back_secs`
/// to failed. A command cancelled because the campaign was paused or cancelled (withdrawn before its CPE
/// started the download) puts its device back to pending (paused: it starts again on resume) or skipped
/// (cancelled); in a running campaign a cancelled command is a failure like any other.
async fn collect_outcomes(
    conn: &mut PgConnection,
    provider: Uuid,
    id: Uuid,
    come_back_secs: i32,
    status: &str,
) -> sqlx::Result<()> {
    if status == "paused" {
        sqlx::query(
            "UPDATE firmware_campaign_devices d SET state = 'pending', command_id = NULL, started_at = NULL, \
               error = 'withdrawn before the CPE started it (campaign paused); starts again on resume' \
             FROM commands c \
             WHERE d.provider_id = $1 AND d.campaign_id = $2 AND d.state = 'running' \
               AND c.provider_id = d.provider_id AND c.id = d.command_id AND c.status = 'cancelled'",
        )
        .bind(provider)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    } else if status == "cancelled" {
        sqlx::query(
            "UPDATE firmware_campaign_devices d SET state = 'skipped', finished_at = coalesce(c.finished_at, now()), \
               error = 'campaign cancelled before the CPE started the download' \
             FROM commands c \
             WHERE d.provider_id = $1 AND d.campaign_id = $2 AND d.state = 'running' \
               AND c.provider_id = d.provider_id AND c.id = d.command_id AND c.status = 'cancelled'",
        )
        .bind(provider)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "UPDATE firmware_campaign_devices d SET \
           state = CASE WHEN c.status = 'succeeded' THEN 'succeeded' ELSE 'failed' END, \
           finished_at = coalesce(c.finished_at, now()), \
           error = CASE WHEN c.status = 'succeeded' THEN NULL \
                   ELSE left(coalesce(c.error, 'command ' || c.status), 4000) END \
         FROM commands c \
         WHERE d.provider_id = $1 AND d.campaign_id = $2 AND d.state = 'running' \
           AND c.provider_id = d.provider_id AND c.id = d.command_id AND c.status = ANY($3)",
    )
    .bind(provider)
    .bind(id)
    .bind(&FINAL[..])
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE firmware_campaign_devices SET state = 'failed', finished_at = now(), \
           error = 'did not come back within ' || $3::int || ' s' \
         WHERE provider_id = $1 AND campaign_id = $2 AND state = 'running' \
           AND started_at < now() - make_interval(secs => $3::int)",
    )
    .bind(provider)
    .bind(id)
    .bind(come_back_secs)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Queues a `tr069.download` of the image for each device (on its POP's agent) and marks them running. A device
/// whose POP has no agent fails at once. Returns the jobs to enqueue after the commit.
async fn start_devices(
    conn: &mut PgConnection,
    provider: Uuid,
    id: Uuid,
    devices: &[Uuid],
    sha256: &str,
    come_back_secs: i32,
) -> sqlx::Result<Vec<(Uuid, Uuid)>> {
    let size: Option<i64> = sqlx::query_scalar(
        "SELECT size FROM firmware_images WHERE provider_id = $1 AND sha256 = $2 LIMIT 1",
    )
    .bind(provider)
    .bind(sha256)
    .fetch_optional(&mut *conn)
    .await?;
    let rows: Vec<(Uuid, Uuid, String, Option<Uuid>)> = sqlx::query_as(
        "SELECT d.id, d.pop_id, d.device_key, \
           (SELECT a.id FROM agents a WHERE a.provider_id = d.provider_id AND a.pop_id = d.pop_id \
              AND a.revoked_at IS NULL ORDER BY a.last_seen DESC NULLS LAST, a.enrolled_at DESC LIMIT 1) \
         FROM devices d WHERE d.provider_id = $1 AND d.id = ANY($2)",
    )
    .bind(provider)
    .bind(devices)
    .fetch_all(&mut *conn)
    .await?;
    let timeout = come_back_secs.clamp(60, octoisp_shared::commands::MAX_TIMEOUT_SECS as i32);
    let mut jobs = Vec::new();
    for (device, pop, device_key, agent) in rows {
        let Some(agent) = agent else {
            sqlx::query(
                "UPDATE firmware_campaign_devices SET state = 'failed', started_at = now(), finished_at = now(), \
                   error = 'its POP has no enrolled agent' \
                 WHERE provider_id = $1 AND campaign_id = $2 AND device_id = $3",
            )
            .bind(provider)
            .bind(id)
            .bind(device)
            .execute(&mut *conn)
            .await?;
            continue;
        };
        let command = Uuid::now_v7();
        let args = serde_json::json!({
            "device_key": device_key,
            "sha256": sha256,
            "file_size": size.unwrap_or(0).max(0),
            "timeout_secs": timeout,
        });
        sqlx::query(
            "INSERT INTO commands (id, provider_id, pop_id, agent_id, device_id, name, args, deadline) \
             VALUES ($1, $2, $3, $4, $5, 'tr069.download', $6, now() + make_interval(secs => $7::int))",
        )
        .bind(command)
        .bind(provider)
        .bind(pop)
        .bind(agent)
        .bind(device)
        .bind(&args)
        .bind(come_back_secs)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE firmware_campaign_devices SET state = 'running', command_id = $4, started_at = now(), \
               error = NULL \
             WHERE provider_id = $1 AND campaign_id = $2 AND device_id = $3",
        )
        .bind(provider)
        .bind(id)
        .bind(device)
        .bind(command)
        .execute(&mut *conn)
        .await?;
        jobs.push((command, agent));
    }
    // Devices removed since the campaign was created: nothing to run.
    sqlx::query(
        "UPDATE firmware_campaign_devices SET state = 'skipped', finished_at = now(), error = 'device removed' \
         WHERE provider_id = $1 AND campaign_id = $2 AND device_id = ANY($3) AND state = 'pending'",
    )
    .bind(provider)
    .bind(id)
    .bind(devices)
    .execute(&mut *conn)
    .await?;
    Ok(jobs)
}

/// What a pause or a cancel sends once its transaction committed.
#[derive(Debug, Default)]
pub struct Withdrawal {
    /// `tr069.withdraw` commands stored (command, agent), to enqueue.
    pub jobs: Vec<(Uuid, Uuid)>,
    /// Downloads cancelled before any agent got them, to remove from the queue.
    pub cancelled: Vec<Uuid>,
}

/// Most command ids named by one `tr069.withdraw` (its arguments must fit the commands table's 64 KiB).
const WITHDRAW_CHUNK: usize = 1000;

/// Takes back the downloads of a campaign being paused or cancelled that no CPE has started: those not yet
/// delivered to their agent are cancelled here; for those delivered, each agent gets a `tr069.withdraw` naming
/// its open downloads of the campaign (those cancelled here too, in case one is on its way this instant). The
/// agent removes the queued ones (their commands end `cancelled`: the next tick makes their devices pending or
/// skipped) and leaves the ones already sent to their CPE, which report how they end.
pub async fn withdraw(
    conn: &mut PgConnection,
    provider: Uuid,
    id: Uuid,
    reason: &str,
) -> sqlx::Result<Withdrawal> {
    let open: Vec<(Uuid, Uuid, Uuid, String)> = sqlx::query_as(
        "SELECT c.id, c.agent_id, c.pop_id, c.status FROM firmware_campaign_devices d \
         JOIN commands c ON c.provider_id = d.provider_id AND c.id = d.command_id \
         WHERE d.provider_id = $1 AND d.campaign_id = $2 AND d.state = 'running' AND c.status = ANY($3) \
         ORDER BY c.agent_id, c.id",
    )
    .bind(provider)
    .bind(id)
    .bind(&crate::commands::OPEN_STATUSES[..])
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Withdrawal::default();
    let mut per_agent: Vec<(Uuid, Uuid, Vec<Uuid>)> = Vec::new();
    for (command, agent, pop, status) in open {
        if matches!(status.as_str(), "queued" | "waiting_agent")
            && crate::commands::set_status(conn, provider, command, "cancelled", Some(reason))
                .await?
        {
            out.cancelled.push(command);
        }
        match per_agent.last_mut() {
            Some((a, _, ids)) if *a == agent => ids.push(command),
            _ => per_agent.push((agent, pop, vec![command])),
        }
    }
    for (agent, pop, ids) in per_agent {
        for chunk in ids.chunks(WITHDRAW_CHUNK) {
            let command = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO commands (id, provider_id, pop_id, agent_id, name, args, deadline) \
                 VALUES ($1, $2, $3, $4, 'tr069.withdraw', $5, now() + interval '1 day')",
            )
            .bind(command)
            .bind(provider)
            .bind(pop)
            .bind(agent)
            .bind(serde_json::json!({ "commands": chunk }))
            .execute(&mut *conn)
            .await?;
            out.jobs.push((command, agent));
        }
    }
    Ok(out)
}

/// Ends a campaign (`halted`, `done`, `cancelled`): pending devices are skipped; an audit row names the reason.
pub async fn end(
    conn: &mut PgConnection,
    provider: Uuid,
    id: Uuid,
    status: &str,
    reason: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE firmware_campaigns SET status = $3, halt_reason = $4, updated_at = now(), finished_at = now() \
         WHERE provider_id = $1 AND id = $2",
    )
    .bind(provider)
    .bind(id)
    .bind(status)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE firmware_campaign_devices SET state = 'skipped', finished_at = now(), error = 'campaign ' || $3 \
         WHERE provider_id = $1 AND campaign_id = $2 AND state = 'pending'",
    )
    .bind(provider)
    .bind(id)
    .bind(status)
    .execute(&mut *conn)
    .await?;
    if status != "cancelled" {
        // A cancel is audited by its API call, with its caller; these are the workers' own decisions.
        crate::audit::record_system(
            conn,
            &format!(
                "firmware_campaign.{}",
                if status == "done" { "finish" } else { "halt" }
            ),
            "firmware_campaign",
            &id.to_string(),
            serde_json::json!({"status": status, "reason": reason}),
        )
        .await?;
    }
    Ok(())
}
