//! `GET /api/v1/summary`: the dashboard's counts in one request (devices online/offline, POPs, agents), each
//! part present only when the caller may read that resource.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::error::ApiError;
use crate::api::extract::Authed;
use crate::api::{AppState, ErrorBody};

/// Device counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceCounts {
    /// Every device.
    pub total: i64,
    /// Reported within `api.online_threshold_secs`.
    pub online: i64,
    /// The others.
    pub offline: i64,
}

/// POP counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PopCounts {
    /// Every POP.
    pub total: i64,
}

/// Agent counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentCounts {
    /// Every enrolled agent.
    pub total: i64,
    /// Not revoked.
    pub active: i64,
    /// Revoked.
    pub revoked: i64,
    /// Latest contact of any agent.
    pub last_contact: Option<DateTime<Utc>>,
}

/// The dashboard's counts; a part is `null` when the caller lacks its read permission.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Summary {
    /// Needs `devices:read`.
    pub devices: Option<DeviceCounts>,
    /// Needs `pops:read`.
    pub pops: Option<PopCounts>,
    /// Needs `agents:read`.
    pub agents: Option<AgentCounts>,
    /// Seconds within which a device counts as online.
    pub online_threshold_secs: u64,
}

/// Counts of the caller's devices, POPs and agents.
#[utoipa::path(get, path = "/api/v1/summary", tag = "summary",
    responses((status = 200, body = Summary), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn summary(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> Result<axum::Json<Summary>, ApiError> {
    let threshold = state.config.online_threshold_secs;
    let mut tx = caller.tx(&state.pool, None).await?;
    let devices = if caller.has("devices:read") {
        let (total, online): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE last_seen > now() - make_interval(secs => $1)) FROM devices",
        )
        .bind(threshold as f64)
        .fetch_one(&mut *tx)
        .await?;
        Some(DeviceCounts {
            total,
            online,
            offline: total - online,
        })
    } else {
        None
    };
    let pops = if caller.has("pops:read") {
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM pops")
            .fetch_one(&mut *tx)
            .await?;
        Some(PopCounts { total })
    } else {
        None
    };
    let agents = if caller.has("agents:read") {
        let (total, revoked, last_contact): (i64, i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE revoked_at IS NOT NULL), max(last_seen) FROM agents",
        )
        .fetch_one(&mut *tx)
        .await?;
        Some(AgentCounts {
            total,
            active: total - revoked,
            revoked,
            last_contact,
        })
    } else {
        None
    };
    tx.commit().await?;
    Ok(axum::Json(Summary {
        devices,
        pops,
        agents,
        online_threshold_secs: threshold,
    }))
}
