//! The gateway middleware every API request goes through, outermost first:
//!
//! 1. [`request_id`]: takes a sane incoming `x-request-id` or makes a UUIDv7, echoes it, and runs the rest with
//!    [`REQUEST_ID`] set so every error body carries it; then logs one line per request (method, path template,
//!    status, latency, request id, provider, user).
//! 2. [`limits`]: refuses a declared body over the limit (413, JSON) and bounds the time of the request (503).
//! 3. [`gate`]: authenticates the request (when it carries credentials), counts it against the per-IP,
//!    per-user and per-tenant rate limits in Redis (429 with `Retry-After`), and applies `X-OctoISP-Provider`
//!    (a Global Admin acting within one provider).
//!
//! CORS is a `tower-http` layer outside all of these.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::api::error::{ApiError, REQUEST_ID};
use crate::api::ratelimit::Subject;
use crate::api::{AppState, RequestContext};
use crate::auth::Caller;

/// Header carrying the request id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Header with which a Global Admin acts within one provider.
pub const ACT_FOR_PROVIDER_HEADER: &str = "x-octoisp-provider";

/// Who served a request, for the log line (set by [`gate`] on the response).
#[derive(Debug, Clone, Default)]
struct LogFields {
    provider: Option<Uuid>,
    user: Option<Uuid>,
}

/// Request id, then one log line per request.
pub async fn request_id(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    let ip = client_ip(&req, state.config.trust_forwarded_for);
    req.extensions_mut().insert(RequestContext {
        request_id: id.clone(),
        ip,
    });
    let method = req.method().clone();
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "(unmatched)".to_owned());
    let started = Instant::now();
    let mut resp = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let who = resp
        .extensions()
        .get::<LogFields>()
        .cloned()
        .unwrap_or_default();
    tracing::info!(
        target: "octoisp::api::access",
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        request_id = %id,
        provider = who.provider.map(|p| p.to_string()).as_deref().unwrap_or("-"),
        user = who.user.map(|u| u.to_string()).as_deref().unwrap_or("-"),
        "Request served."
    );
    resp
}

/// Body size limit (on the declared length; the JSON extractor enforces it on streamed bodies) and timeout.
pub async fn limits(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A firmware upload streams the image to disk under limits of its own (`[firmware]`).
    let upload = req.method() == axum::http::Method::POST
        && req.uri().path() == super::firmware::UPLOAD_PATH;
    let (max_body, timeout_secs) = if upload {
        let fw = &state.config.firmware;
        (fw.max_bytes(), fw.upload_timeout_secs)
    } else {
        (
            state.config.max_body_bytes as u64,
            state.config.request_timeout_secs,
        )
    };
    if declared.is_some_and(|n| n > max_body) {
        return ApiError::PayloadTooLarge.into_response();
    }
    let timeout = Duration::from_secs(timeout_secs.max(1));
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::Unavailable("request timed out".into()).into_response(),
    }
}

/// Authentication and rate limits.
pub async fn gate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let ctx = req
        .extensions()
        .get::<RequestContext>()
        .cloned()
        .unwrap_or_else(|| RequestContext {
            request_id: Uuid::now_v7().to_string(),
            ip: None,
        });
    let caller: Option<Caller> = match state.auth.authenticate(req.headers(), &ctx).await {
        Ok(c) => c,
        Err(err) => {
            if let Some(resp) = rate_limited(&state, &ctx, None).await {
                return resp;
            }
            return err.into_response();
        }
    };
    if let Some(resp) = rate_limited(&state, &ctx, caller.as_ref()).await {
        return resp;
    }
    let caller = match caller {
        Some(c) => match acting_for(&state, c, req.headers()).await {
            Ok(c) => Some(c),
            Err(err) => return err.into_response(),
        },
        None => None,
    };
    let fields = LogFields {
        provider: caller.as_ref().and_then(|c| c.provider_id),
        user: caller.as_ref().and_then(|c| c.user_id.or(c.api_key_id)),
    };
    if let Some(c) = caller {
        req.extensions_mut().insert(c);
    }
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(fields);
    resp
}

/// Applies `X-OctoISP-Provider`: a Global Admin names the provider it acts for, and from then on the request
/// runs in that provider's tenant (row-level security included) and its audit rows join that provider's chain,
/// naming the Global Admin as the actor. Anyone else may only name their own provider (403 otherwise).
async fn acting_for(
    state: &AppState,
    mut caller: Caller,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let Some(value) = headers.get(ACT_FOR_PROVIDER_HEADER) else {
        return Ok(caller);
    };
    let provider: Uuid = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!("{ACT_FOR_PROVIDER_HEADER}: not a provider id"))
        })?;
    match caller.provider_id {
        Some(own) if own == provider => return Ok(caller),
        Some(_) => return Err(ApiError::Forbidden("providers:write".into())),
        None if !caller.global_admin => return Err(ApiError::Unauthenticated),
        None => {}
    }
    let mut tx = crate::db::tenant_tx(&state.pool, provider).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM providers WHERE id = $1)")
        .bind(provider)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    if !exists {
        return Err(ApiError::NotFound);
    }
    tracing::info!(request_id = %caller.request_id, user = ?caller.user_id, %provider,
        "Global Admin acting for a provider.");
    caller.provider_id = Some(provider);
    Ok(caller)
}

async fn rate_limited(
    state: &AppState,
    ctx: &RequestContext,
    caller: Option<&Caller>,
) -> Option<Response> {
    let limiter = state.limiter.as_ref()?;
    let cfg = &state.config.rate_limit;
    let mut subjects = Vec::with_capacity(3);
    if let Some(ip) = ctx.ip {
        subjects.push(Subject {
            key: format!("ip:{ip}"),
            limit: cfg.per_ip,
        });
    }
    if let Some(c) = caller {
        if let Some(u) = c.user_id.or(c.api_key_id) {
            subjects.push(Subject {
                key: format!("user:{u}"),
                limit: cfg.per_user,
            });
        }
        if let Some(p) = c.provider_id {
            subjects.push(Subject {
                key: format!("tenant:{p}"),
                limit: cfg.per_tenant,
            });
        }
    }
    let wait = limiter.check(&subjects).await?;
    let retry_after_secs = wait.as_millis().div_ceil(1000) as u64;
    tracing::info!(request_id = %ctx.request_id, retry_after_secs, "Rate limited.");
    Some(ApiError::RateLimited { retry_after_secs }.into_response())
}

/// 1 to 128 characters of `[A-Za-z0-9._:-]`: anything else is replaced by a fresh id (and never logged raw).
fn sane_request_id(v: &str) -> bool {
    (1..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The client's address: the first `X-Forwarded-For` hop when the instance sits behind a trusted proxy, else
/// the TCP peer.
fn client_ip(req: &Request, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for && let Some(ip) = forwarded_for(req.headers()) {
        return Some(ip);
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    headers
        .get("x-forwarded-for")?
        .to_str()
        .ok()?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked() {
        assert!(sane_request_id("abc-123_x.y:z"));
        assert!(!sane_request_id(""));
        assert!(!sane_request_id("a b"));
        assert!(!sane_request_id("x\ny"));
        assert!(!sane_request_id(&"a".repeat(129)));
    }

    #[test]
    fn forwarded_for_takes_the_first_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("192.0.2.7, 10.0.0.1"),
        );
        assert_eq!(forwarded_for(&h), Some("192.0.2.7".parse().unwrap()));
        h.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(forwarded_for(&h), None);
    }
}
