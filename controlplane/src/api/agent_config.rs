//! Agent configuration from the centre (`/api/v1/pops/{id}/agent-config`): the POP's versioned document
//! (sections `monitors`, `snmp`, `acs`, `scan` in the shapes of the agent's config file), each agent's
//! delivery state, and the history. See docs/COMMANDS.md ("Agent configuration from the centre") and
//! [`crate::commands::agent_config`].
//!
//! Reading needs `agents:read`; the document's secrets (SNMP communities and passwords, ACS passwords) are
//! shown only to callers holding `agents:write`, who alone may write a new version. A new version is audited
//! with its section names and comment, never its content.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, Authed};
use crate::api::{AppState, ErrorBody, own_provider};
use crate::audit;
use crate::auth::Caller;
use crate::commands::agent_config::{self, Author, REDACTED};
use crate::commands::provider_tier;

const READ: &str = "agents:read";
const WRITE: &str = "agents:write";

/// A new version of a POP's agent configuration.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgentConfig {
    /// The document: any of `monitors`, `snmp`, `acs`, `scan`, in the shapes of the agent's config file. A
    /// section present replaces the agent file's section; sections absent stay as the file has them.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// The version this change was based on: when another version was written meanwhile the answer is 409
    /// (optimistic concurrency, like an `If-Match`).
    pub base_version: Option<i64>,
    /// Why (kept with the version and in the audit log).
    pub comment: Option<String>,
}

/// Delivery of the configuration to one agent of the POP.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct AgentDelivery {
    /// Agent.
    pub agent_id: Uuid,
    /// Its host name.
    pub hostname: String,
    /// Last contact.
    pub last_seen: Option<DateTime<Utc>>,
    /// Newest version it applied (its `config.update` succeeded), if any.
    pub applied_version: Option<i64>,
    /// Version of its latest push.
    pub last_version: Option<i64>,
    /// Status of its latest push (`queued`, `waiting_agent`, `running`, `succeeded`, `failed`, `expired`, ...).
    pub last_status: Option<String>,
    /// Why the latest push failed (the agent names the key it refused).
    pub last_error: Option<String>,
    /// The latest push's command (its progress and result are under `/api/v1/commands/{id}`).
    pub last_command_id: Option<Uuid>,
}

/// A POP's configuration: the newest version and where each agent stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentConfigView {
    /// POP.
    pub pop_id: Uuid,
    /// Newest version (0: none written yet).
    pub version: i64,
    /// Its document (secrets shown as `********` without `agents:write`).
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// Its comment.
    pub comment: Option<String>,
    /// When it was written.
    pub created_at: Option<DateTime<Utc>>,
    /// Who wrote it.
    pub created_by_user: Option<Uuid>,
    /// The POP's agents (not revoked).
    pub agents: Vec<AgentDelivery>,
}

/// What a write did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentConfigWritten {
    /// POP.
    pub pop_id: Uuid,
    /// The version now current.
    pub version: i64,
    /// Whether a new version was written (`false`: the document equals the current one).
    pub changed: bool,
    /// The `config.update` commands created, one per agent of the POP.
    pub commands: Vec<Uuid>,
}

/// One version in the history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct AgentConfigVersion {
    /// Version.
    pub version: i64,
    /// Its comment.
    pub comment: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Who (user).
    pub created_by_user: Option<Uuid>,
    /// Who (API key).
    pub created_by_api_key: Option<Uuid>,
    /// Its sections.
    pub sections: Vec<String>,
}

/// One version with its document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentConfigDocument {
    /// Version.
    pub version: i64,
    /// Its document (secrets shown as `********` without `agents:write`).
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// Its comment.
    pub comment: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// History paging.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct VersionsQuery {
    /// Versions older than this one (the previous page's last).
    pub before: Option<i64>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<u32>,
}

#[derive(sqlx::FromRow)]
struct CurrentRow {
    version: i64,
    config: serde_json::Value,
    comment: Option<String>,
    created_at: DateTime<Utc>,
    created_by_user: Option<Uuid>,
}

async fn pop_exists(tx: &mut sqlx::PgConnection, pop: Uuid) -> Result<(), ApiError> {
    // Under the caller's row-level security: another tenant's POP is not there.
    let found: Option<Uuid> = sqlx::query_scalar("SELECT id FROM pops WHERE id = $1")
        .bind(pop)
        .fetch_optional(&mut *tx)
        .await?;
    found.map(|_| ()).ok_or(ApiError::NotFound)
}

fn shown(caller: &Caller, mut doc: serde_json::Value) -> serde_json::Value {
    if !caller.has(WRITE) {
        agent_config::redact(&mut doc);
    }
    doc
}

/// The POP's current agent configuration and each agent's delivery state.
#[utoipa::path(get, path = "/api/v1/pops/{id}/agent-config", tag = "agents",
    params(("id" = Uuid, Path, description = "POP id")),
    responses((status = 200, body = AgentConfigView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(pop): ApiPath<Uuid>,
) -> Result<axum::Json<AgentConfigView>, ApiError> {
    caller.require(READ)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    pop_exists(&mut tx, pop).await?;
    let current: Option<CurrentRow> = sqlx::query_as(
        "SELECT version, config, comment, created_at, created_by_user FROM agent_configs \
         WHERE pop_id = $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(pop)
    .fetch_optional(&mut *tx)
    .await?;
    let agents: Vec<AgentDelivery> = sqlx::query_as(
        "SELECT a.id AS agent_id, a.hostname, a.last_seen, \
           (SELECT max((c.args->>'version')::bigint) FROM commands c \
             WHERE c.provider_id = a.provider_id AND c.agent_id = a.id AND c.name = 'config.update' \
               AND c.status = 'succeeded') AS applied_version, \
           l.version AS last_version, l.status AS last_status, l.error AS last_error, l.id AS last_command_id \
         FROM agents a \
         LEFT JOIN LATERAL (SELECT c.id, (c.args->>'version')::bigint AS version, c.status, c.error \
             FROM commands c WHERE c.provider_id = a.provider_id AND c.agent_id = a.id \
               AND c.name = 'config.update' ORDER BY c.id DESC LIMIT 1) l ON true \
         WHERE a.pop_id = $1 AND a.revoked_at IS NULL ORDER BY a.hostname, a.id",
    )
    .bind(pop)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let view = match current {
        Some(c) => AgentConfigView {
            pop_id: pop,
            version: c.version,
            config: shown(&caller, c.config),
            comment: c.comment,
            created_at: Some(c.created_at),
            created_by_user: c.created_by_user,
            agents,
        },
        None => AgentConfigView {
            pop_id: pop,
            version: 0,
            config: serde_json::json!({}),
            comment: None,
            created_at: None,
            created_by_user: None,
            agents,
        },
    };
    Ok(axum::Json(view))
}

/// Writes a new version of the POP's agent configuration and pushes it to the POP's agents (an agent offline
/// gets it when it connects). A document equal to the current one writes nothing (200, `changed: false`).
#[utoipa::path(put, path = "/api/v1/pops/{id}/agent-config", tag = "agents",
    request_body = NewAgentConfig,
    params(("id" = Uuid, Path, description = "POP id")),
    responses((status = 201, body = AgentConfigWritten, description = "New version written and pushed"),
        (status = 200, body = AgentConfigWritten, description = "Same as the current version: nothing written"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`base_version` is not the current version"),
        (status = 422, body = ErrorBody, description = "Invalid document; the message names the key")),
    security(("bearer" = [])))]
pub async fn put(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(pop): ApiPath<Uuid>,
    ApiJson(body): ApiJson<NewAgentConfig>,
) -> Result<(StatusCode, axum::Json<AgentConfigWritten>), ApiError> {
    caller.require(WRITE)?;
    let provider = own_provider(&caller)?;
    agent_config::validate(&body.config).map_err(ApiError::Unprocessable)?;
    if let Some(path) = agent_config::holds_placeholder(&body.config) {
        return Err(ApiError::Unprocessable(format!(
            "{path}: {REDACTED} is the redacted form of a secret; send the secret itself"
        )));
    }
    if let Some(c) = &body.comment
        && c.chars().count() > 500
    {
        return Err(ApiError::Unprocessable(
            "comment: longer than 500 characters".into(),
        ));
    }
    let mut tx = caller.tx(&state.pool, None).await?;
    pop_exists(&mut tx, pop).await?;
    let current = agent_config::current(&mut tx, provider, pop).await?;
    let current_version = current.as_ref().map_or(0, |(v, _)| *v);
    if let Some(base) = body.base_version
        && base != current_version
    {
        return Err(ApiError::Conflict(format!(
            "base_version: version {current_version} is current, this change was based on {base}"
        )));
    }
    if let Some((version, doc)) = &current
        && *doc == body.config
    {
        tx.commit().await?;
        return Ok((
            StatusCode::OK,
            axum::Json(AgentConfigWritten {
                pop_id: pop,
                version: *version,
                changed: false,
                commands: Vec::new(),
            }),
        ));
    }
    let author = Author {
        user: caller.user_id,
        api_key: caller.api_key_id,
    };
    let version = agent_config::insert_version(
        &mut tx,
        provider,
        pop,
        &body.config,
        body.comment.as_deref(),
        author,
    )
    .await?;
    if let Some(base) = body.base_version
        && base + 1 != version
    {
        // Another writer got in between the read and the lock.
        return Err(ApiError::Conflict(format!(
            "base_version: version {} is current, this change was based on {base}",
            version - 1
        )));
    }
    let agents: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM agents WHERE provider_id = $1 AND pop_id = $2 AND revoked_at IS NULL ORDER BY id",
    )
    .bind(provider)
    .bind(pop)
    .fetch_all(&mut *tx)
    .await?;
    let deadline = state
        .commands
        .as_ref()
        .map_or(3600, |c| c.cfg.default_deadline_secs);
    let jobs =
        agent_config::push(&mut tx, provider, pop, &agents, version, deadline, author).await?;
    let tier = provider_tier(&mut tx, provider).await?;
    let sections: Vec<&String> = body
        .config
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    audit::record(
        &mut tx,
        &caller,
        "agent_config.update",
        "pop",
        Some(&pop.to_string()),
        Some(serde_json::json!({"version": current_version})),
        Some(serde_json::json!({
            "version": version, "sections": sections, "comment": body.comment, "agents": agents.len()
        })),
    )
    .await?;
    tx.commit().await?;
    // Without a queue on this instance the agents get it when they connect to one that has it.
    if let Some(cmds) = &state.commands {
        cmds.enqueue_stored(provider, tier, &jobs).await;
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(AgentConfigWritten {
            pop_id: pop,
            version,
            changed: true,
            commands: jobs.into_iter().map(|(id, _)| id).collect(),
        }),
    ))
}

/// The POP's configuration history, newest first.
#[utoipa::path(get, path = "/api/v1/pops/{id}/agent-config/versions", tag = "agents",
    params(("id" = Uuid, Path, description = "POP id"), VersionsQuery),
    responses((status = 200, body = [AgentConfigVersion]), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn versions(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(pop): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<VersionsQuery>,
) -> Result<axum::Json<Vec<AgentConfigVersion>>, ApiError> {
    caller.require(READ)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit {limit} is not between 1 and 200"
        )));
    }
    let mut tx = caller.tx(&state.pool, None).await?;
    pop_exists(&mut tx, pop).await?;
    let items: Vec<AgentConfigVersion> = sqlx::query_as(
        "SELECT version, comment, created_at, created_by_user, created_by_api_key, \
           ARRAY(SELECT jsonb_object_keys(config) ORDER BY 1) AS sections \
         FROM agent_configs WHERE pop_id = $1 AND version < $2 ORDER BY version DESC LIMIT $3",
    )
    .bind(pop)
    .bind(q.before.unwrap_or(i64::MAX))
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(axum::Json(items))
}

/// One version's document (to compare, or to write it again as a rollback).
#[utoipa::path(get, path = "/api/v1/pops/{id}/agent-config/versions/{version}", tag = "agents",
    params(("id" = Uuid, Path, description = "POP id"), ("version" = i64, Path, description = "Version")),
    responses((status = 200, body = AgentConfigDocument), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn version(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath((pop, version)): ApiPath<(Uuid, i64)>,
) -> Result<axum::Json<AgentConfigDocument>, ApiError> {
    caller.require(READ)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let row: Option<(serde_json::Value, Option<String>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT config, comment, created_at FROM agent_configs WHERE pop_id = $1 AND version = $2",
    )
    .bind(pop)
    .bind(version)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let (config, comment, created_at) = row.ok_or(ApiError::NotFound)?;
    Ok(axum::Json(AgentConfigDocument {
        version,
        config: shown(&caller, config),
        comment,
        created_at,
    }))
}
