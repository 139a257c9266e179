//! The one error type of the HTTP API and its JSON form:
//! `{"error": {"code": "not_found", "message": "...", "request_id": "..."}}`.
//!
//! 5xx responses never carry internals: the cause is logged with the request id instead.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered to an API caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or a value is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid credentials.
    #[error("authentication required")]
    Unauthenticated,
    /// 403: authenticated, but lacking the permission named.
    #[error("missing permission {0}")]
    Forbidden(String),
    /// 404: no such object for this caller (also what another tenant's objects look like).
    #[error("not found")]
    NotFound,
    /// 409: conflicts with an existing object.
    #[error("{0}")]
    Conflict(String),
    /// 422: well-formed but refused: an unknown command, arguments that do not fit it (the message names the
    /// field).
    #[error("{0}")]
    Unprocessable(String),
    /// 413: body too large.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 429: rate limited; retry after the given seconds.
    #[error("too many requests")]
    RateLimited {
        /// Seconds until a retry may succeed.
        retry_after_secs: u64,
    },
    /// 503: a dependency (PostgreSQL, Redis) is unavailable.
    #[error("service unavailable")]
    Unavailable(String),
    /// 500: anything else; the message is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => ApiError::NotFound,
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                ApiError::Unavailable(err.to_string())
            }
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                ApiError::Conflict("an object with the same unique key exists".into())
            }
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
                // A foreign key: the object is still referenced, or refers to something that is not there.
                ApiError::Conflict(
                    "the object is referenced by, or refers to, another object".into(),
                )
            }
            sqlx::Error::Database(db)
                if matches!(
                    db.code().as_deref(),
                    Some("23514" | "22001" | "22P02" | "22021" | "22003")
                ) =>
            {
                // A CHECK constraint or a value PostgreSQL cannot take: the input was wrong, not the server.
                ApiError::BadRequest("a value is out of range or malformed".into())
            }
            sqlx::Error::Database(db) if db.code().as_deref() == Some("42501") => {
                // Row-level security refused a write: to the caller that is another tenant's object.
                ApiError::NotFound
            }
            _ => ApiError::Internal(err.to_string()),
        }
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(err: crate::db::DbError) -> Self {
        ApiError::Internal(err.to_string())
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

tokio::task_local! {
    /// Request id of the request being served (set by the request-id middleware).
    pub static REQUEST_ID: String;
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let request_id = REQUEST_ID.try_with(Clone::clone).ok();
        let message = match &self {
            ApiError::Internal(cause) | ApiError::Unavailable(cause) => {
                tracing::error!(request_id = request_id.as_deref().unwrap_or("-"), error = %cause, "Request failed.");
                self.to_string()
            }
            _ => self.to_string(),
        };
        let body = Body {
            error: Inner {
                code: self.code(),
                message,
                request_id,
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let ApiError::RateLimited { retry_after_secs } = self
            && let Ok(v) = HeaderValue::from_str(&retry_after_secs.max(1).to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
