//! The queue's administration through the API: the tenant's dead letters (list, requeue, discard) and the
//! queue's counts.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{COLUMNS, CommandView, MANAGE, READ, commands_of, fetch_command};
use crate::api::error::ApiError;
use crate::api::extract::{ApiPath, ApiQuery, Authed};
use crate::api::pagination::Page;
use crate::api::{AppState, ErrorBody, own_provider, to_json};
use crate::audit;

/// A dead-lettered command.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterView {
    /// Command id.
    pub id: Uuid,
    /// Command name (when the row is still there).
    pub name: Option<String>,
    /// Deliveries attempted.
    pub attempts: u32,
    /// The last error.
    pub error: String,
    /// When it was dead-lettered.
    pub failed_at: Option<DateTime<Utc>>,
}

/// Dead-letter list paging.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// The last id of the previous page.
    pub after: Option<Uuid>,
}

/// The caller's dead-lettered commands, oldest first.
#[utoipa::path(get, path = "/api/v1/commands/dead-letters", tag = "commands", params(DeadLetterQuery),
    responses((status = 200, body = Page<DeadLetterView>), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn dead_letters(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(q): ApiQuery<DeadLetterQuery>,
) -> Result<axum::Json<Page<DeadLetterView>>, ApiError> {
    caller.require(READ)?;
    let provider = own_provider(&caller)?;
    let cmds = commands_of(&state)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit {limit} is not between 1 and 500"
        )));
    }
    let dead = cmds
        .queue
        .dead_letters(provider, limit as usize + 1, q.after)
        .await
        .map_err(|e| ApiError::Unavailable(format!("queue: {e}")))?;
    let ids: Vec<Uuid> = dead.iter().map(|d| d.id).collect();
    let mut tx = caller.tx(&state.pool, None).await?;
    let names: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, name FROM commands WHERE provider_id = $1 AND id = ANY($2)")
            .bind(provider)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    let names: HashMap<Uuid, String> = names.into_iter().collect();
    let rows: Vec<DeadLetterView> = dead
        .into_iter()
        .map(|d| DeadLetterView {
            id: d.id,
            name: names.get(&d.id).cloned(),
            attempts: d.attempts,
            error: d.error,
            failed_at: DateTime::from_timestamp_millis(d.failed_ms),
        })
        .collect();
    Ok(axum::Json(Page::from_rows(rows, limit, |d| d.id)))
}

/// Puts a dead-lettered command back in the queue with fresh attempts.
#[utoipa::path(post, path = "/api/v1/commands/dead-letters/{id}/requeue", tag = "commands",
    params(("id" = Uuid, Path, description = "Command id")),
    responses((status = 200, body = CommandView), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn requeue_dead(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<CommandView>, ApiError> {
    caller.require(MANAGE)?;
    let before = fetch_command(&state, &caller, id).await?;
    let cmds = commands_of(&state)?;
    let found = cmds
        .queue
        .requeue_dead(before.provider_id, id)
        .await
        .map_err(|e| ApiError::Unavailable(format!("queue: {e}")))?;
    if !found {
        return Err(ApiError::NotFound);
    }
    let mut tx = caller.tx(&state.pool, None).await?;
    sqlx::query(
        "UPDATE commands SET status = 'queued', error = NULL, finished_at = NULL, attempts = 0 \
         WHERE provider_id = $1 AND id = $2 AND status = 'dead'",
    )
    .bind(before.provider_id)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let mut qb = QueryBuilder::<Postgres>::new(COLUMNS);
    qb.push(" AND id = ").push_bind(id);
    let after: CommandView = qb.build_query_as().fetch_one(&mut *tx).await?;
    audit::record(
        &mut tx,
        &caller,
        "commands.requeue",
        "command",
        Some(&id.to_string()),
        to_json(&before),
        to_json(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(after))
}

/// Discards a dead letter (the command stays `dead` in the list).
#[utoipa::path(delete, path = "/api/v1/commands/dead-letters/{id}", tag = "commands",
    params(("id" = Uuid, Path, description = "Command id")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn discard_dead(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require(MANAGE)?;
    let before = fetch_command(&state, &caller, id).await?;
    let cmds = commands_of(&state)?;
    let found = cmds
        .queue
        .discard_dead(before.provider_id, id)
        .await
        .map_err(|e| ApiError::Unavailable(format!("queue: {e}")))?;
    if !found {
        return Err(ApiError::NotFound);
    }
    let mut tx = caller.tx(&state.pool, None).await?;
    audit::record(
        &mut tx,
        &caller,
        "commands.discard_dead",
        "command",
        Some(&id.to_string()),
        to_json(&before),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queue counts: the caller's tenant, or the whole queue for a Global Admin.
#[utoipa::path(get, path = "/api/v1/queues", tag = "commands",
    responses((status = 200, description = "`{\"scope\":\"tenant\",\"tenant\":{...}}` or `{\"scope\":\"global\",\"queue\":{...}}`"),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn queues(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    caller.require(READ)?;
    let cmds = commands_of(&state)?;
    let unavailable = |e: anyhow::Error| ApiError::Unavailable(format!("queue: {e}"));
    match caller.provider_id {
        Some(p) => {
            let t = cmds.queue.tenant_stats(p).await.map_err(unavailable)?;
            Ok(axum::Json(
                serde_json::json!({ "scope": "tenant", "provider_id": p, "tenant": {
                    "ready": t.ready, "leased": t.leased, "delayed": t.delayed, "dead": t.dead,
                    "oldest_ready_age_ms": t.oldest_ready_age_ms,
                }}),
            ))
        }
        None => {
            let s = cmds.queue.stats().await.map_err(unavailable)?;
            Ok(axum::Json(
                serde_json::json!({ "scope": "global", "queue": s }),
            ))
        }
    }
}
