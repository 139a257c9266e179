//! Reading the audit log: the caller's provider's rows, newest first, filtered by action, target or actor, with
//! keyset pagination on the row id (rows are only ever appended, so pages never shift). Global Admins without a
//! provider read every chain through the audited global-admin path, or one provider's with `X-OctoISP-Provider`.

use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sqlx::{Postgres, QueryBuilder};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::api::devices::filter_value;
use crate::api::error::ApiError;
use crate::api::extract::{ApiQuery, Authed};
use crate::api::pagination::{Page, PageParams};
use crate::api::{AppState, ErrorBody};
use crate::audit::AuditEntry;

/// Filters of the audit log (all optional, combined with AND).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilters {
    /// Action, such as `devices.update`, or a module such as `devices` (every action of it).
    pub action: Option<String>,
    /// Kind of object, such as `device`.
    pub target_type: Option<String>,
    /// Id of the object (with `target_type`, its whole history).
    pub target_id: Option<String>,
    /// Acting user.
    pub actor: Option<Uuid>,
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn encode(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(id.to_be_bytes())
}

fn decode(cursor: &str) -> Result<i64, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .ok()
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(i64::from_be_bytes)
        .ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))
}

/// The audit log of the caller's provider, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditFilters),
    responses((status = 200, body = Page<AuditEntry>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(f): ApiQuery<AuditFilters>,
) -> Result<axum::Json<Page<AuditEntry>>, ApiError> {
    caller.require("audit:read")?;
    let limit = PageParams {
        limit: f.limit,
        cursor: None,
    }
    .limit()?;
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT id, provider_id, ts, actor_user_id, actor_api_key_id, action, target_type, target_id, before, \
         after, host(ip) AS ip, request_id FROM audit_log WHERE true",
    );
    if let Some(p) = caller.provider_id {
        qb.push(" AND provider_id = ").push_bind(p);
    }
    if let Some(action) = &f.action {
        let action = filter_value("action", action)?;
        if action.contains('.') {
            qb.push(" AND action = ").push_bind(action.to_owned());
        } else {
            qb.push(" AND action LIKE ")
                .push_bind(crate::api::devices::like_prefix(&format!("{action}.")));
        }
    }
    if let Some(t) = &f.target_type {
        qb.push(" AND target_type = ")
            .push_bind(filter_value("target_type", t)?.to_owned());
    }
    if let Some(t) = &f.target_id {
        qb.push(" AND target_id = ")
            .push_bind(filter_value("target_id", t)?.to_owned());
    }
    if let Some(actor) = f.actor {
        qb.push(" AND actor_user_id = ").push_bind(actor);
    }
    if let Some(c) = &f.cursor {
        qb.push(" AND id < ").push_bind(decode(c)?);
    }
    qb.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let mut tx = caller.tx(&state.pool, None).await?;
    let rows: Vec<AuditEntry> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(axum::Json(Page::from_rows_keyed(rows, limit, |r| {
        encode(r.id)
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        assert_eq!(decode(&encode(42)).unwrap(), 42);
        assert!(decode("AAAA").is_err());
        assert!(decode("' OR 1=1 --").is_err());
    }
}
