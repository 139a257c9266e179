//! Commands to agents (docs/COMMANDS.md): create (one POP, one device, or a fan-out over a group or a POP's
//! devices), list, read with the result, progress, cancel; fan-out batches; the tenant's dead letters and queue
//! counts ([`queue_admin`]).
//!
//! Creating a command needs the command's own permission from the catalogue (`diagnostics:run` for an MTR,
//! `tr069:reboot` for a reboot); cancelling it too. Reading needs `commands:read`; requeueing or discarding a dead
//! letter `commands:manage`. The row is stored and audited in one transaction, then enqueued; the answer is 202.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, Authed};
use crate::api::pagination::{Page, PageParams, fetch_page};
use crate::api::{AppState, ErrorBody, own_provider, to_json};
use crate::audit;
use crate::auth::Caller;
use crate::commands::{Commands, provider_tier};

mod queue_admin;
pub use queue_admin::*;

/// Permission to read commands, progress, batches, dead letters and queue counts.
const READ: &str = "commands:read";
/// Permission to requeue or discard dead letters.
const MANAGE: &str = "commands:manage";
/// Header carrying a client's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// A command as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct CommandView {
    /// Id (UUIDv7: ids sort by creation).
    pub id: Uuid,
    /// Provider.
    pub provider_id: Uuid,
    /// POP whose agent runs it.
    pub pop_id: Uuid,
    /// The agent.
    pub agent_id: Uuid,
    /// The device it concerns, if any.
    pub device_id: Option<Uuid>,
    /// Fan-out batch, if any.
    pub batch_id: Option<Uuid>,
    /// Catalogue name, such as `mtr`.
    pub name: String,
    /// Arguments.
    #[schema(value_type = Object)]
    pub args: serde_json::Value,
    /// `queued`, `waiting_agent`, `dispatched`, `running`, `succeeded`, `failed`, `expired`, `rejected`,
    /// `cancelled` or `dead`.
    pub status: String,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// Deliveries attempted.
    pub attempts: i32,
    /// The user who created it.
    pub created_by_user: Option<Uuid>,
    /// The API key that created it.
    pub created_by_api_key: Option<Uuid>,
    /// The caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Not started after this instant, it fails `expired`.
    pub deadline: DateTime<Utc>,
    /// Last sent to the agent.
    pub dispatched_at: Option<DateTime<Utc>>,
    /// The agent started it.
    pub started_at: Option<DateTime<Utc>>,
    /// It finished.
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "SELECT id, provider_id, pop_id, agent_id, device_id, batch_id, name, args, status, error, \
    attempts, created_by_user, created_by_api_key, idempotency_key, created_at, deadline, dispatched_at, started_at, \
    finished_at FROM commands WHERE true";

/// A command with its result.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CommandDetail {
    /// The command.
    #[serde(flatten)]
    pub command: CommandView,
    /// The agent's result output (JSON), once stored.
    #[schema(value_type = Option<Object>)]
    pub output: Option<serde_json::Value>,
    /// When the agent finished it, by the agent's clock.
    pub result_ts: Option<DateTime<Utc>>,
}

/// A new command. Give exactly one target: `pop_id`, `device_id`, `group_id`, or `pop_id` with
/// `all_devices: true`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCommand {
    /// Catalogue name, such as `ping`, `mtr`, `tr069.reboot`.
    pub name: String,
    /// Arguments (a JSON object; see the catalogue).
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub args: serde_json::Value,
    /// Run on this POP's agent.
    pub pop_id: Option<Uuid>,
    /// Run about this device, on its POP's agent (its `mgmt_ip` and `device_key` are added to the arguments).
    pub device_id: Option<Uuid>,
    /// Fan-out: one command per device of the group.
    pub group_id: Option<Uuid>,
    /// Fan-out: with `pop_id`, one command per device of the POP.
    #[serde(default)]
    pub all_devices: bool,
    /// Seconds from now until which the command may start (default `commands.default_deadline_secs`).
    pub deadline_secs: Option<u64>,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

/// The answer to a fan-out.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchCreated {
    /// The batch.
    pub batch_id: Uuid,
    /// Commands created.
    pub count: i64,
}

fn commands_of(state: &AppState) -> Result<&Commands, ApiError> {
    state.commands.as_ref().ok_or_else(|| {
        ApiError::Unavailable("the command queue is not configured on this instance".into())
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .ok()
        .filter(|s| (1..=200).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1 to 200 visible ASCII characters".into())
        })?;
    Ok(Some(s.to_owned()))
}

/// The agent of a POP that runs its commands: the one heard from last among those not revoked.
async fn pop_agent(
    tx: &mut sqlx::PgConnection,
    provider: Uuid,
    pop: Uuid,
    field: &str,
) -> Result<Uuid, ApiError> {
    let exists: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM pops WHERE provider_id = $1 AND id = $2")
            .bind(provider)
            .bind(pop)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Err(ApiError::Unprocessable(format!(
            "{field}: no such POP {pop}"
        )));
    }
    sqlx::query_scalar(
        "SELECT id FROM agents WHERE provider_id = $1 AND pop_id = $2 AND revoked_at IS NULL \
         ORDER BY last_seen DESC NULLS LAST, enrolled_at DESC LIMIT 1",
    )
    .bind(provider)
    .bind(pop)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| {
        ApiError::Unprocessable(format!(
            "{field}: POP {pop} has no enrolled agent to run commands"
        ))
    })
}

/// Creates a command (202 `CommandView`) or a fan-out batch (202 `BatchCreated`); with an `Idempotency-Key`
/// already used, answers 200 with what that key created.
#[utoipa::path(post, path = "/api/v1/commands", tag = "commands", request_body = NewCommand,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key, same command: 200 with it")),
    responses((status = 202, body = CommandView, description = "Queued (fan-out: `BatchCreated`)"),
        (status = 200, body = CommandView, description = "Created earlier with this Idempotency-Key"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "Unknown command or invalid arguments; the message names the field"),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Authed(caller): Authed,
    headers: HeaderMap,
    ApiJson(mut body): ApiJson<NewCommand>,
) -> Result<(StatusCode, axum::Json<serde_json::Value>), ApiError> {
    let spec = octoisp_shared::commands::spec_of(&body.name)
        .ok_or_else(|| ApiError::Unprocessable(format!("name: unknown command {:?}", body.name)))?;
    caller.require(spec.permission)?;
    if body.name == crate::commands::agent_config::COMMAND {
        return Err(ApiError::Unprocessable(
            "name: config.update is sent by PUT /api/v1/pops/{id}/agent-config (versioned, pushed to every \
             agent of the POP and again when one connects)"
                .into(),
        ));
    }
    let cmds = commands_of(&state)?;
    let provider = own_provider(&caller)?;
    let key = idempotency_key(&headers)?;
    let args_text = body.args.to_string();
    if args_text.len() > 60_000 {
        return Err(ApiError::Unprocessable(
            "args: larger than 60000 bytes".into(),
        ));
    }
    let deadline_secs = body.deadline_secs.unwrap_or(cmds.cfg.default_deadline_secs);
    if deadline_secs == 0 || deadline_secs > cmds.cfg.max_deadline_secs {
        return Err(ApiError::Unprocessable(format!(
            "deadline_secs: must be between 1 and {}",
            cmds.cfg.max_deadline_secs
        )));
    }
    let deadline = Utc::now() + chrono::Duration::seconds(deadline_secs as i64);
    let fan_out = body.group_id.is_some() || body.all_devices;
    let targets = [
        body.pop_id.is_some() && !body.all_devices,
        body.device_id.is_some(),
        body.group_id.is_some(),
        body.all_devices,
    ]
    .iter()
    .filter(|t| **t)
    .count();
    if targets != 1 || (body.all_devices && body.pop_id.is_none()) {
        return Err(ApiError::Unprocessable(
            "pop_id: give exactly one of pop_id, device_id, group_id, or pop_id with all_devices"
                .into(),
        ));
    }

    // A device target fills in the device's identity first; the arguments are checked once complete.
    if body.pop_id.is_some() && !body.all_devices {
        check_args(&body.name, &body.args)?;
    } else if !body.args.is_object() {
        return Err(ApiError::Unprocessable(
            "args: arguments must be a JSON object".into(),
        ));
    }

    let mut tx = caller.tx(&state.pool, None).await?;
    // Same key, same answer.
    if let Some(key) = &key
        && let Some(existing) = existing_for_key(&mut tx, provider, key, fan_out).await?
    {
        tx.commit().await?;
        return Ok((StatusCode::OK, axum::Json(existing)));
    }
    if body.name == "tr069.download" {
        resolve_firmware(&mut tx, provider, &mut body.args).await?;
    }
    let tier = provider_tier(&mut tx, provider).await?;
    if fan_out {
        let (batch, jobs, turn) = create_batch(
            &mut tx,
            &caller,
            provider,
            &body,
            deadline,
            key.as_deref(),
            cmds,
        )
        .await?;
        let committed = tx.commit().await;
        drop(turn);
        match committed {
            Ok(()) => {}
            Err(err) if crate::db::is_unique_violation(&err) => {
                return replay_key(&state, &caller, provider, key.as_deref(), true).await;
            }
            Err(err) => return Err(err.into()),
        }
        cmds.enqueue_stored(provider, tier, &jobs).await;
        metrics::counter!("octoisp_commands_created_total").increment(jobs.len() as u64);
        return Ok((
            StatusCode::ACCEPTED,
            axum::Json(serde_json::to_value(batch).unwrap_or_default()),
        ));
    }

    let mut args = body.args.clone();
    let (pop, device) = match (body.pop_id, body.device_id) {
        (Some(pop), None) => (pop, None),
        (None, Some(device)) => {
            let row: Option<(Uuid, String, Option<String>)> = sqlx::query_as(
                "SELECT pop_id, device_key, host(mgmt_ip) FROM devices WHERE provider_id = $1 AND id = $2",
            )
            .bind(provider)
            .bind(device)
            .fetch_optional(&mut *tx)
            .await?;
            let (pop, device_key, mgmt_ip) = row.ok_or_else(|| {
                ApiError::Unprocessable(format!("device_id: no such device {device}"))
            })?;
            add_identity(&body.name, &mut args, &device_key, mgmt_ip.as_deref());
            check_args(&body.name, &args)?;
            (pop, Some(device))
        }
        _ => unreachable_target()?,
    };
    let agent = pop_agent(
        &mut tx,
        provider,
        pop,
        if device.is_some() {
            "device_id"
        } else {
            "pop_id"
        },
    )
    .await?;
    let id = Uuid::now_v7();
    let inserted: Result<CommandView, sqlx::Error> = sqlx::query_as(
        "INSERT INTO commands (id, provider_id, pop_id, agent_id, device_id, name, args, created_by_user, \
           created_by_api_key, idempotency_key, deadline) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         RETURNING id, provider_id, pop_id, agent_id, device_id, batch_id, name, args, status, error, attempts, \
           created_by_user, created_by_api_key, idempotency_key, created_at, deadline, dispatched_at, started_at, \
           finished_at",
    )
    .bind(id)
    .bind(provider)
    .bind(pop)
    .bind(agent)
    .bind(device)
    .bind(&body.name)
    .bind(&args)
    .bind(caller.user_id)
    .bind(caller.api_key_id)
    .bind(key.as_deref())
    .bind(deadline)
    .fetch_one(&mut *tx)
    .await;
    let view = match inserted {
        Ok(v) => v,
        // The same key raced in from another request: answer with that one.
        Err(err) if crate::db::is_unique_violation(&err) && key.is_some() => {
            drop(tx);
            return replay_key(&state, &caller, provider, key.as_deref(), false).await;
        }
        Err(err) => return Err(err.into()),
    };
    audit::record(
        &mut tx,
        &caller,
        "commands.create",
        "command",
        Some(&id.to_string()),
        None,
        to_json(&view),
    )
    .await?;
    tx.commit().await?;
    cmds.enqueue_stored(provider, tier, &[(id, agent)]).await;
    metrics::counter!("octoisp_commands_created_total").increment(1);
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(serde_json::to_value(&view).unwrap_or_default()),
    ))
}

/// A `tr069.download` of a control plane image: `image_id` becomes the image's `sha256` (and `file_size`), and a
/// `sha256` must name one of the provider's images (422 otherwise), so the agent is never sent for one it
/// cannot fetch.
async fn resolve_firmware(
    tx: &mut sqlx::PgConnection,
    provider: Uuid,
    args: &mut serde_json::Value,
) -> Result<(), ApiError> {
    let Some(obj) = args.as_object_mut() else {
        return Ok(());
    };
    let image_id = match obj.remove("image_id") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            v.as_str()
                .and_then(|s| s.parse::<Uuid>().ok())
                .ok_or_else(|| ApiError::Unprocessable("args: image_id: not a UUID".into()))?,
        ),
    };
    let sha = obj
        .get("sha256")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let row: Option<(String, i64)> = match (image_id, &sha) {
        (Some(id), _) => sqlx::query_as(
            "SELECT sha256, size FROM firmware_images WHERE provider_id = $1 AND id = $2",
        )
        .bind(provider)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .map(Some)
        .ok_or_else(|| ApiError::Unprocessable(format!("args: image_id: no such firmware image {id}")))?,
        (None, Some(sha)) => Some(
            sqlx::query_as(
                "SELECT sha256, size FROM firmware_images WHERE provider_id = $1 AND sha256 = $2 LIMIT 1",
            )
            .bind(provider)
            .bind(sha)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| {
                ApiError::Unprocessable(format!("args: sha256: no firmware image {sha} here"))
            })?,
        ),
        (None, None) => None,
    };
    if let Some((sha256, size)) = row {
        if sha.as_deref().is_some_and(|s| s != sha256) {
            return Err(ApiError::Unprocessable(
                "args: sha256 and image_id name different images".into(),
            ));
        }
        obj.insert("sha256".into(), sha256.into());
        if obj.get("file_size").and_then(|v| v.as_u64()).unwrap_or(0) == 0 {
            obj.insert("file_size".into(), size.into());
        }
    }
    Ok(())
}

fn unreachable_target() -> Result<(Uuid, Option<Uuid>), ApiError> {
    Err(ApiError::Unprocessable("pop_id: no target".into()))
}

/// Checks arguments against the catalogue; 422 naming `args`.
fn check_args(name: &str, args: &serde_json::Value) -> Result<(), ApiError> {
    octoisp_shared::commands::validate(name, &args.to_string())
        .map(|_| ())
        .map_err(|e| ApiError::Unprocessable(format!("args: {e}")))
}

/// Fills the device's identity into the argument the command takes it in (TR-069 commands: `device_key`; ping:
/// `targets`; MTR and traceroute: `target`; port scan: `host`), unless the caller set it.
fn add_identity(name: &str, args: &mut serde_json::Value, device_key: &str, mgmt_ip: Option<&str>) {
    let Some(obj) = args.as_object_mut() else {
        return;
    };
    if name.starts_with("tr069.") {
        obj.entry("device_key").or_insert_with(|| device_key.into());
        return;
    }
    let Some(ip) = mgmt_ip else { return };
    match name {
        "ping" => {
            obj.entry("targets")
                .or_insert_with(|| serde_json::json!([ip]));
        }
        "mtr" | "traceroute" => {
            obj.entry("target").or_insert_with(|| ip.into());
        }
        "portscan" => {
            obj.entry("host").or_insert_with(|| ip.into());
        }
        _ => {}
    }
}

async fn existing_for_key(
    tx: &mut sqlx::PgConnection,
    provider: Uuid,
    key: &str,
    fan_out: bool,
) -> Result<Option<serde_json::Value>, ApiError> {
    if fan_out {
        let batch: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM command_batches WHERE provider_id = $1 AND idempotency_key = $2",
        )
        .bind(provider)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(batch) = batch else { return Ok(None) };
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM commands WHERE provider_id = $1 AND batch_id = $2",
        )
        .bind(provider)
        .bind(batch)
        .fetch_one(&mut *tx)
        .await?;
        return Ok(serde_json::to_value(BatchCreated {
            batch_id: batch,
            count,
        })
        .ok());
    }
    let mut qb = QueryBuilder::<Postgres>::new(COLUMNS);
    qb.push(" AND provider_id = ")
        .push_bind(provider)
        .push(" AND idempotency_key = ")
        .push_bind(key);
    let row: Option<CommandView> = qb.build_query_as().fetch_optional(&mut *tx).await?;
    Ok(row.and_then(|r| serde_json::to_value(r).ok()))
}

async fn replay_key(
    state: &AppState,
    caller: &Caller,
    provider: Uuid,
    key: Option<&str>,
    fan_out: bool,
) -> Result<(StatusCode, axum::Json<serde_json::Value>), ApiError> {
    let key =
        key.ok_or_else(|| ApiError::Conflict("a command with the same unique key exists".into()))?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let existing = existing_for_key(&mut tx, provider, key, fan_out).await?;
    tx.commit().await?;
    existing
        .map(|v| (StatusCode::OK, axum::Json(v)))
        .ok_or_else(|| ApiError::Conflict("a command with the same Idempotency-Key exists".into()))
}

/// Rows of fan-outs this instance writes at once, at most; a fan-out of more rows waits until it is alone.
/// Each fan-out is one transaction of up to `max_fanout` rows (tens of microseconds of database CPU per row:
/// heap, indexes, foreign-key checks). Eight of 6,250 rows written at once kept every core of the database
/// busy for about 2.5 s, in front of every other tenant's statements (a small tenant's command then waited up
/// to 118 ms for its dispatch); written in turn, each commits sooner and its commands are dispatched while the
/// next one is written. Small fan-outs still go beside a large one.
const FANOUT_ROWS_IN_FLIGHT: u32 = 8192;
static FANOUT_ROWS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(FANOUT_ROWS_IN_FLIGHT as usize);

/// A fan-out written, not yet committed: what the answer says, the jobs to enqueue (command, agent), and the
/// turn among the fan-outs, to give back once committed.
type WrittenBatch = (
    BatchCreated,
    Vec<(Uuid, Uuid)>,
    tokio::sync::SemaphorePermit<'static>,
);

/// Stores a fan-out: the batch row, one command per device (each on its POP's agent), one audit row. The turn
/// returned is held until the transaction is committed (see [`FANOUT_ROWS`]).
async fn create_batch(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    caller: &Caller,
    provider: Uuid,
    body: &NewCommand,
    deadline: DateTime<Utc>,
    key: Option<&str>,
    cmds: &Commands,
) -> Result<WrittenBatch, ApiError> {
    let devices: Vec<(Uuid, Uuid, String, Option<String>)> = if let Some(group) = body.group_id {
        let exists: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM device_groups WHERE provider_id = $1 AND id = $2")
                .bind(provider)
                .bind(group)
                .fetch_optional(&mut **tx)
                .await?;
        if exists.is_none() {
            return Err(ApiError::Unprocessable(format!(
                "group_id: no such group {group}"
            )));
        }
        sqlx::query_as(
            "SELECT d.id, d.pop_id, d.device_key, host(d.mgmt_ip) FROM device_group_members m \
             JOIN devices d ON d.provider_id = m.provider_id AND d.id = m.device_id \
             WHERE m.provider_id = $1 AND m.group_id = $2 ORDER BY d.id LIMIT $3",
        )
        .bind(provider)
        .bind(group)
        .bind(cmds.cfg.max_fanout as i64 + 1)
        .fetch_all(&mut **tx)
        .await?
    } else {
        let pop = body.pop_id.unwrap_or_default();
        pop_agent(&mut *tx, provider, pop, "pop_id").await?;
        sqlx::query_as(
            "SELECT id, pop_id, device_key, host(mgmt_ip) FROM devices WHERE provider_id = $1 AND pop_id = $2 \
             ORDER BY id LIMIT $3",
        )
        .bind(provider)
        .bind(pop)
        .bind(cmds.cfg.max_fanout as i64 + 1)
        .fetch_all(&mut **tx)
        .await?
    };
    if devices.len() > cmds.cfg.max_fanout {
        return Err(ApiError::Unprocessable(format!(
            "group_id: more than {} devices; split the request",
            cmds.cfg.max_fanout
        )));
    }
    // In turn with the other fan-outs being written (see FANOUT_ROWS); held until the caller has committed.
    let rows = u32::try_from(devices.len())
        .unwrap_or(u32::MAX)
        .min(FANOUT_ROWS_IN_FLIGHT);
    let turn = FANOUT_ROWS
        .acquire_many(rows)
        .await
        .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
    let mut agents: HashMap<Uuid, Uuid> = HashMap::new();
    for (_, pop, _, _) in &devices {
        if !agents.contains_key(pop) {
            let agent = pop_agent(&mut *tx, provider, *pop, "group_id").await?;
            agents.insert(*pop, agent);
        }
    }
    let batch_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO command_batches (id, provider_id, name, total, created_by_user, created_by_api_key, \
           idempotency_key) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(batch_id)
    .bind(provider)
    .bind(&body.name)
    .bind(devices.len() as i32)
    .bind(caller.user_id)
    .bind(caller.api_key_id)
    .bind(key)
    .execute(&mut **tx)
    .await?;
    let mut jobs = Vec::with_capacity(devices.len());
    for chunk in devices.chunks(5000) {
        let mut ids = Vec::with_capacity(chunk.len());
        let mut pops = Vec::with_capacity(chunk.len());
        let mut agent_ids = Vec::with_capacity(chunk.len());
        let mut device_ids = Vec::with_capacity(chunk.len());
        let mut args = Vec::with_capacity(chunk.len());
        for (device, pop, device_key, mgmt_ip) in chunk {
            let id = Uuid::now_v7();
            let agent = agents.get(pop).copied().unwrap_or_default();
            let mut a = body.args.clone();
            add_identity(&body.name, &mut a, device_key, mgmt_ip.as_deref());
            check_args(&body.name, &a)
                .map_err(|e| ApiError::Unprocessable(format!("{e} (device {device_key})")))?;
            ids.push(id);
            pops.push(*pop);
            agent_ids.push(agent);
            device_ids.push(*device);
            args.push(a);
            jobs.push((id, agent));
        }
        sqlx::query(
            "INSERT INTO commands (id, provider_id, pop_id, agent_id, device_id, batch_id, name, args, \
               created_by_user, created_by_api_key, deadline) \
             SELECT i, $1, p, a, d, $2, $3, g, $4, $5, $6 \
             FROM unnest($7::uuid[], $8::uuid[], $9::uuid[], $10::uuid[], $11::jsonb[]) AS u(i, p, a, d, g)",
        )
        .bind(provider)
        .bind(batch_id)
        .bind(&body.name)
        .bind(caller.user_id)
        .bind(caller.api_key_id)
        .bind(deadline)
        .bind(&ids)
        .bind(&pops)
        .bind(&agent_ids)
        .bind(&device_ids)
        .bind(&args)
        .execute(&mut **tx)
        .await?;
    }
    let created = BatchCreated {
        batch_id,
        count: devices.len() as i64,
    };
    audit::record(
        tx,
        caller,
        "commands.create_batch",
        "command_batch",
        Some(&batch_id.to_string()),
        None,
        Some(serde_json::json!({
            "name": body.name, "args": body.args, "group_id": body.group_id, "pop_id": body.pop_id,
            "count": created.count, "deadline": deadline,
        })),
    )
    .await?;
    Ok((created, jobs, turn))
}

/// Filters of the command list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CommandFilter {
    /// Only this POP's.
    pub pop_id: Option<Uuid>,
    /// Only about this device.
    pub device_id: Option<Uuid>,
    /// Only created by this user.
    pub created_by: Option<Uuid>,
    /// Only in this status.
    pub status: Option<String>,
    /// Only of this fan-out batch.
    pub batch_id: Option<Uuid>,
    /// Only this command name.
    pub name: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

const STATUSES: [&str; 10] = [
    "queued",
    "waiting_agent",
    "dispatched",
    "running",
    "succeeded",
    "failed",
    "expired",
    "rejected",
    "cancelled",
    "dead",
];

/// Lists the caller's commands, oldest first (keyset paging).
#[utoipa::path(get, path = "/api/v1/commands", tag = "commands", params(CommandFilter),
    responses((status = 200, body = Page<CommandView>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(f): ApiQuery<CommandFilter>,
) -> Result<axum::Json<Page<CommandView>>, ApiError> {
    caller.require(READ)?;
    let mut qb = QueryBuilder::<Postgres>::new(COLUMNS);
    if let Some(v) = f.pop_id {
        qb.push(" AND pop_id = ").push_bind(v);
    }
    if let Some(v) = f.device_id {
        qb.push(" AND device_id = ").push_bind(v);
    }
    if let Some(v) = f.created_by {
        qb.push(" AND created_by_user = ").push_bind(v);
    }
    if let Some(v) = &f.status {
        if !STATUSES.contains(&v.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "status: {v:?} is not one of {}",
                STATUSES.join(", ")
            )));
        }
        // Through `final_status`, the indexed copy of a final status (migration 0019: `status` itself is not
        // indexed, so that moving between open statuses is a HOT update).
        if crate::commands::is_final(v) {
            qb.push(" AND final_status = ").push_bind(v.clone());
        } else {
            qb.push(" AND final_status IS NULL AND status = ")
                .push_bind(v.clone());
        }
    }
    if let Some(v) = f.batch_id {
        qb.push(" AND batch_id = ").push_bind(v);
    }
    if let Some(v) = &f.name {
        qb.push(" AND name = ").push_bind(v.clone());
    }
    let page = PageParams {
        limit: f.limit,
        cursor: f.cursor,
    };
    let page = fetch_page(&state.pool, &caller, qb, "", &page, |c: &CommandView| c.id).await?;
    Ok(axum::Json(page))
}

async fn fetch_command(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<CommandView, ApiError> {
    crate::api::pagination::fetch_one(&state.pool, caller, COLUMNS, "", id).await
}

/// One command with its result.
#[utoipa::path(get, path = "/api/v1/commands/{id}", tag = "commands",
    params(("id" = Uuid, Path, description = "Command id")),
    responses((status = 200, body = CommandDetail), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<CommandDetail>, ApiError> {
    caller.require(READ)?;
    let command = fetch_command(&state, &caller, id).await?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let result: Option<(serde_json::Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT output, ts FROM command_results WHERE provider_id = $1 AND command_id = $2",
    )
    .bind(command.provider_id)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let (output, result_ts) = result.map_or((None, None), |(o, t)| (Some(o), Some(t)));
    Ok(axum::Json(CommandDetail {
        command,
        output,
        result_ts,
    }))
}

/// A progress frame.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ProgressFrame {
    /// Sequence number, from 1 (0 is the agent's state answer, reflected in the status).
    pub seq: i32,
    /// When it was stored.
    pub ts: DateTime<Utc>,
    /// The command-specific JSON (an MTR cycle, scan progress).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// Progress query.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProgressQuery {
    /// Only frames after this seq.
    pub after: Option<i32>,
    /// Frames at most, 1 to 1000 (default 200).
    pub limit: Option<u32>,
}

/// Progress frames of a command after `after`, in seq order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProgressPage {
    /// Frames.
    pub items: Vec<ProgressFrame>,
    /// The command's status now.
    pub status: String,
}

/// A command's progress frames, in order.
#[utoipa::path(get, path = "/api/v1/commands/{id}/progress", tag = "commands",
    params(("id" = Uuid, Path, description = "Command id"), ProgressQuery),
    responses((status = 200, body = ProgressPage), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn progress(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ProgressQuery>,
) -> Result<axum::Json<ProgressPage>, ApiError> {
    caller.require(READ)?;
    let limit = q.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit {limit} is not between 1 and 1000"
        )));
    }
    let command = fetch_command(&state, &caller, id).await?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let items: Vec<ProgressFrame> = sqlx::query_as(
        "SELECT seq, ts, payload FROM command_progress WHERE provider_id = $1 AND command_id = $2 AND seq > $3 \
         ORDER BY seq LIMIT $4",
    )
    .bind(command.provider_id)
    .bind(id)
    .bind(q.after.unwrap_or(0))
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(axum::Json(ProgressPage {
        items,
        status: command.status,
    }))
}

/// Cancels a command not finished yet (the caller needs the command's own permission). A command the agent
/// already started runs to its end there; its status stays `cancelled`.
#[utoipa::path(post, path = "/api/v1/commands/{id}/cancel", tag = "commands",
    params(("id" = Uuid, Path, description = "Command id")),
    responses((status = 200, body = CommandView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Already finished")),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<CommandView>, ApiError> {
    caller.require(READ)?;
    let before = fetch_command(&state, &caller, id).await?;
    let permission =
        octoisp_shared::commands::spec_of(&before.name).map_or(MANAGE, |s| s.permission);
    caller.require(permission)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let moved = crate::commands::set_status(
        &mut tx,
        before.provider_id,
        id,
        "cancelled",
        Some(&format!("cancelled by {}", actor(&caller))),
    )
    .await?;
    if !moved {
        return Err(ApiError::Conflict(format!(
            "the command is already {}",
            before.status
        )));
    }
    let mut qb = QueryBuilder::<Postgres>::new(COLUMNS);
    qb.push(" AND id = ").push_bind(id);
    let after: CommandView = qb.build_query_as().fetch_one(&mut *tx).await?;
    audit::record(
        &mut tx,
        &caller,
        "commands.cancel",
        "command",
        Some(&id.to_string()),
        to_json(&before),
        to_json(&after),
    )
    .await?;
    tx.commit().await?;
    if let Some(cmds) = &state.commands
        && let Err(err) = cmds.queue.cancel(before.provider_id, id).await
    {
        // The row is cancelled: a later delivery finds it final and completes the job without running it.
        tracing::warn!(command = %id, error = %err, "Cannot remove the cancelled command from the queue.");
    }
    Ok(axum::Json(after))
}

fn actor(caller: &Caller) -> String {
    match (caller.user_id, caller.api_key_id) {
        (Some(u), _) => format!("user {u}"),
        (None, Some(k)) => format!("API key {k}"),
        _ => "an administrator".into(),
    }
}

/// Counts of a fan-out batch.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchView {
    /// The batch.
    pub id: Uuid,
    /// Command name.
    pub name: String,
    /// Commands created.
    pub total: i32,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Commands per status (statuses with none are absent).
    pub counts: HashMap<String, i64>,
}

/// A fan-out batch with its counts per status.
#[utoipa::path(get, path = "/api/v1/command-batches/{id}", tag = "commands",
    params(("id" = Uuid, Path, description = "Batch id")),
    responses((status = 200, body = BatchView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn batch(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<BatchView>, ApiError> {
    caller.require(READ)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let row: Option<(Uuid, String, i32, DateTime<Utc>)> = sqlx::query_as(
        "SELECT provider_id, name, total, created_at FROM command_batches WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let (provider, name, total, created_at) = row.ok_or(ApiError::NotFound)?;
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM commands WHERE provider_id = $1 AND batch_id = $2 GROUP BY status",
    )
    .bind(provider)
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(axum::Json(BatchView {
        id,
        name,
        total,
        created_at,
        counts: counts.into_iter().collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_added_without_overriding_the_caller() {
        let mut a = serde_json::json!({"count": 3});
        add_identity("ping", &mut a, "cpe-1", Some("192.0.2.10"));
        assert_eq!(
            a,
            serde_json::json!({"count": 3, "targets": ["192.0.2.10"]})
        );
        let mut b = serde_json::json!({"target": "198.51.100.1"});
        add_identity("mtr", &mut b, "cpe-1", Some("192.0.2.10"));
        assert_eq!(b["target"], "198.51.100.1");
        let mut c = serde_json::json!({});
        add_identity("tr069.reboot", &mut c, "cpe-1", Some("192.0.2.10"));
        assert_eq!(c, serde_json::json!({"device_key": "cpe-1"}));
        assert!(check_args("tr069.reboot", &c).is_ok());
        assert!(check_args("tr069.reboot", &serde_json::json!({})).is_err());
    }

    #[test]
    fn idempotency_keys_are_bounded() {
        let mut h = HeaderMap::new();
        assert_eq!(idempotency_key(&h).unwrap(), None);
        h.insert(IDEMPOTENCY_HEADER, "abc-123".parse().unwrap());
        assert_eq!(idempotency_key(&h).unwrap().as_deref(), Some("abc-123"));
        h.insert(IDEMPOTENCY_HEADER, "a b".parse().unwrap());
        assert!(idempotency_key(&h).is_err());
        h.insert(IDEMPOTENCY_HEADER, "x".repeat(201).parse().unwrap());
        assert!(idempotency_key(&h).is_err());
    }
}
