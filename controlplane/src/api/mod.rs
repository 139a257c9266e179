//! The HTTP API under `/api/v1`: router, gateway middleware (request id, access log, body limit, timeout, CORS,
//! rate limits in Redis), keyset pagination, handlers per resource, and the OpenAPI document generated from
//! the handlers' annotations (served at `/api/v1/openapi.json`).
//!
//! Authentication is pluggable ([`Authenticator`]): the gateway asks it for the [`Caller`] of each request and
//! handlers take the result with the [`extract::Authed`] extractor. Every handler checks its permission first
//! (`caller.require`), then runs its SQL in `caller.tx` (row-level security isolates tenants; the queries also
//! filter by provider so that every list uses an index led by `provider_id`). Another provider's object answers
//! 404, never 403.
//!
//! [`ROUTES`] is the route table with the permission each route needs; the tests walk it (and check it against
//! the OpenAPI document), so a new route is covered by the isolation tests without editing them.

pub mod account;
pub mod agent_config;
pub mod agents;
pub mod alert_preview;
pub mod alerts;
pub mod audit_log;
pub mod commands;
pub mod customers;
pub mod device_search;
pub mod devices;
pub mod error;
pub mod extract;
pub mod firmware;
pub mod gateway;
pub mod groups;
pub mod http_metrics;
pub mod interfaces;
pub mod live;
pub mod notifications;
pub mod pagination;
pub mod pops;
pub mod providers;
pub mod ratelimit;
pub mod reference;
pub mod reports;
pub mod roles;
pub mod series;
pub mod summary;
pub mod tr069;
pub mod users;
pub mod validate;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use futures::future::BoxFuture;
use serde::Deserialize;
use sqlx::PgPool;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::error::ApiError;
use crate::api::ratelimit::RateLimiter;
use crate::auth::Caller;

/// The `[api]` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Largest request body accepted, bytes (413 above).
    pub max_body_bytes: usize,
    /// Longest a request may take, seconds (503 after).
    pub request_timeout_secs: u64,
    /// Origins allowed by CORS, such as `https://console.example.net` (none: no cross-origin access).
    pub cors_origins: Vec<String>,
    /// Redis holding the rate-limit counters shared by every instance.
    pub redis_url: String,
    /// Prefix of every Redis key of this installation.
    pub redis_prefix: String,
    /// Rate limits.
    pub rate_limit: RateLimitConfig,
    /// A device not heard from for longer than this many seconds is `offline`.
    pub online_threshold_secs: u64,
    /// Take the client address from `X-Forwarded-For` (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
    /// Retention and graph sizes of the series routes: not an `[api]` key, copied from `[metrics]` at start.
    #[serde(skip)]
    pub metrics: crate::rollup::MetricsConfig,
    /// Firmware storage and upload limits: not an `[api]` key, copied from `[firmware]` at start.
    #[serde(skip)]
    pub firmware: crate::firmware::FirmwareConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            request_timeout_secs: 30,
            cors_origins: Vec::new(),
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_prefix: "octoisp".into(),
            rate_limit: RateLimitConfig::default(),
            online_threshold_secs: 300,
            trust_forwarded_for: false,
            metrics: crate::rollup::MetricsConfig::default(),
            firmware: crate::firmware::FirmwareConfig::default(),
        }
    }
}

impl ApiConfig {
    /// Checks the values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_body_bytes < 1024 {
            return Err("api.max_body_bytes must be at least 1024".into());
        }
        if self.request_timeout_secs == 0 {
            return Err("api.request_timeout_secs must be > 0".into());
        }
        if self.online_threshold_secs == 0 {
            return Err("api.online_threshold_secs must be > 0".into());
        }
        for origin in &self.cors_origins {
            if HeaderValue::from_str(origin).is_err() || !origin.contains("://") {
                return Err(format!(
                    "api.cors_origins: `{origin}` is not an origin like https://host"
                ));
            }
        }
        let r = &self.rate_limit;
        if r.window_secs == 0 || r.per_ip == 0 || r.per_user == 0 || r.per_tenant == 0 {
            return Err(
                "api.rate_limit.window_secs, per_ip, per_user and per_tenant must be > 0".into(),
            );
        }
        Ok(())
    }
}

/// Rate limits: requests per window per client IP, per user (or API key) and per tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Whether limits apply at all.
    pub enabled: bool,
    /// Length of a window, seconds.
    pub window_secs: u64,
    /// Requests per window from one IP address.
    pub per_ip: u64,
    /// Requests per window of one user or API key.
    pub per_user: u64,
    /// Requests per window of one provider, all its users together.
    pub per_tenant: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_secs: 1,
            per_ip: 300,
            per_user: 200,
            per_tenant: 1000,
        }
    }
}

/// What the gateway knows about a request before authentication.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request id (incoming `x-request-id` or a fresh UUIDv7).
    pub request_id: String,
    /// The client address.
    pub ip: Option<IpAddr>,
}

/// Turns a request's credentials into a [`Caller`].
pub trait Authenticator: Send + Sync + 'static {
    /// `Ok(None)` when the request carries no credentials, `Ok(Some(caller))` when they are valid, and
    /// `Err(ApiError::Unauthenticated)` when they are not.
    fn authenticate<'a>(
        &'a self,
        headers: &'a HeaderMap,
        ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Option<Caller>, ApiError>>;
}

/// An authenticator that accepts nobody: every protected route answers 401. The default until the auth
/// service is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAuthenticator;

impl Authenticator for NoAuthenticator {
    fn authenticate<'a>(
        &'a self,
        headers: &'a HeaderMap,
        _ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Option<Caller>, ApiError>> {
        let has_credentials = headers.contains_key(header::AUTHORIZATION);
        Box::pin(async move {
            if has_credentials {
                Err(ApiError::Unauthenticated)
            } else {
                Ok(None)
            }
        })
    }
}

impl Authenticator for crate::auth::AuthService {
    fn authenticate<'a>(
        &'a self,
        headers: &'a HeaderMap,
        ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Option<Caller>, ApiError>> {
        Box::pin(async move {
            let has_credentials =
                headers.contains_key(header::AUTHORIZATION) || headers.contains_key("x-api-key");
            if !has_credentials {
                return Ok(None);
            }
            crate::auth::AuthService::authenticate(self, headers, ctx.ip, &ctx.request_id)
                .await
                .map(Some)
        })
    }
}

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct AppState {
    /// Pool of the application role.
    pub pool: PgPool,
    /// Who is calling.
    pub auth: Arc<dyn Authenticator>,
    /// Rate limiter (`None`: no limits, for instance when Redis is not configured).
    pub limiter: Option<RateLimiter>,
    /// The `[api]` configuration.
    pub config: Arc<ApiConfig>,
    /// The auth service behind the session and user routes (`None`: those answer 503).
    pub auth_service: Option<crate::auth::AuthService>,
    /// SHA-256 (hex) of the control plane CA, put in the enrollment tokens the API issues (`None`: unknown,
    /// the token is returned in parts).
    pub ca_fingerprint: Option<String>,
    /// Live events for the console's WebSocket (`/api/v1/live`); `LiveHub::default()` never shuts down.
    pub live: live::LiveHub,
    /// Commands to agents: the queue and its settings (`None`: the command routes answer 503).
    pub commands: Option<crate::commands::Commands>,
    /// Seals secrets before they are stored (notification channels); without a key, storing one is refused.
    pub secrets: Arc<crate::secretbox::SecretBox>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("limiter", &self.limiter)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A route of the API and the permission it needs (empty for public routes). `providers:*` are held by Global
/// Admins only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// HTTP method.
    pub method: &'static str,
    /// Path template as in the router and the OpenAPI document.
    pub path: &'static str,
    /// Permission checked by the handler.
    pub permission: &'static str,
}

const fn route(method: &'static str, path: &'static str, permission: &'static str) -> RouteSpec {
    RouteSpec {
        method,
        path,
        permission,
    }
}

/// Every route of the API router.
pub const ROUTES: &[RouteSpec] = &[
    route("GET", "/api/v1/openapi.json", ""),
    route("POST", "/api/v1/auth/login", ""),
    route("POST", "/api/v1/auth/refresh", ""),
    route("POST", "/api/v1/auth/logout", ""),
    route("POST", "/api/v1/auth/password-reset", ""),
    route("POST", "/api/v1/auth/password-reset/confirm", ""),
    route("GET", "/api/v1/me", ""),
    route("GET", "/api/v1/permissions", "roles:read"),
    route("GET", "/api/v1/roles", "roles:read"),
    route("POST", "/api/v1/roles", "roles:manage"),
    route("GET", "/api/v1/roles/{id}", "roles:read"),
    route("PATCH", "/api/v1/roles/{id}", "roles:manage"),
    route("DELETE", "/api/v1/roles/{id}", "roles:manage"),
    route("GET", "/api/v1/users", "users:read"),
    route("POST", "/api/v1/users", "users:manage"),
    route("GET", "/api/v1/users/{id}", "users:read"),
    route("PATCH", "/api/v1/users/{id}", "users:manage"),
    route("PUT", "/api/v1/users/{id}/role", "users:manage"),
    route(
        "PUT",
        "/api/v1/users/{id}/permissions/{code}",
        "users:manage",
    ),
    route(
        "DELETE",
        "/api/v1/users/{id}/permissions/{code}",
        "users:manage",
    ),
    route("GET", "/api/v1/audit", "audit:read"),
    route("GET", "/api/v1/api-keys", "api_keys:manage"),
    route("POST", "/api/v1/api-keys", "api_keys:manage"),
    route("DELETE", "/api/v1/api-keys/{id}", "api_keys:manage"),
    route("GET", "/api/v1/providers", "providers:read"),
    route("POST", "/api/v1/providers", "providers:write"),
    route("GET", "/api/v1/providers/{id}", "providers:read"),
    route("PATCH", "/api/v1/providers/{id}", "providers:write"),
    route("GET", "/api/v1/pops", "pops:read"),
    route("POST", "/api/v1/pops", "pops:write"),
    route("GET", "/api/v1/pops/{id}", "pops:read"),
    route("PATCH", "/api/v1/pops/{id}", "pops:write"),
    route("DELETE", "/api/v1/pops/{id}", "pops:write"),
    route("GET", "/api/v1/customers", "customers:read"),
    route("POST", "/api/v1/customers", "customers:write"),
    route("GET", "/api/v1/customers/{id}", "customers:read"),
    route("PATCH", "/api/v1/customers/{id}", "customers:write"),
    route("DELETE", "/api/v1/customers/{id}", "customers:write"),
    route("GET", "/api/v1/devices", "devices:read"),
    route("GET", "/api/v1/devices/{id}", "devices:read"),
    route("PATCH", "/api/v1/devices/{id}", "devices:write"),
    route("DELETE", "/api/v1/devices/{id}", "devices:write"),
    route("GET", "/api/v1/devices/{id}/tr069", "tr069:read"),
    route("GET", "/api/v1/devices/{id}/tr069/tasks", "tr069:read"),
    route("GET", "/api/v1/groups", "groups:read"),
    route("POST", "/api/v1/groups", "groups:write"),
    route("GET", "/api/v1/groups/{id}", "groups:read"),
    route("PATCH", "/api/v1/groups/{id}", "groups:write"),
    route("DELETE", "/api/v1/groups/{id}", "groups:write"),
    route("GET", "/api/v1/groups/{id}/members", "groups:read"),
    route("POST", "/api/v1/groups/{id}/members", "groups:write"),
    route(
        "DELETE",
        "/api/v1/groups/{id}/members/{device_id}",
        "groups:write",
    ),
    route("GET", "/api/v1/agents", "agents:read"),
    route("POST", "/api/v1/agents/enrollment-tokens", "agents:enroll"),
    route("GET", "/api/v1/agents/{id}", "agents:read"),
    route("POST", "/api/v1/agents/{id}/revoke", "agents:revoke"),
    route("GET", "/api/v1/pops/{id}/agent-config", "agents:read"),
    route("PUT", "/api/v1/pops/{id}/agent-config", "agents:write"),
    // Interface monitoring per POP (api/interfaces.rs; also needs devices:read).
    route("GET", "/api/v1/pops/{id}/interfaces", "metrics:read"),
    route(
        "GET",
        "/api/v1/pops/{id}/agent-config/versions",
        "agents:read",
    ),
    route(
        "GET",
        "/api/v1/pops/{id}/agent-config/versions/{version}",
        "agents:read",
    ),
    // The console: counts per resource the caller may read, and the live event stream (authenticated by its
    // first message; each part checks its own permission).
    route("GET", "/api/v1/summary", ""),
    route("GET", "/api/v1/live", ""),
    route("GET", "/api/v1/alert-rules", "alerts:read"),
    route("POST", "/api/v1/alert-rules", "alerts:manage"),
    route("POST", "/api/v1/alert-rules/preview", "alerts:read"),
    route("GET", "/api/v1/alert-rules/{id}", "alerts:read"),
    route("PATCH", "/api/v1/alert-rules/{id}", "alerts:manage"),
    route("DELETE", "/api/v1/alert-rules/{id}", "alerts:manage"),
    route("GET", "/api/v1/alerts", "alerts:read"),
    route("GET", "/api/v1/alerts/{id}", "alerts:read"),
    route("POST", "/api/v1/alerts/{id}/ack", "alerts:ack"),
    route("POST", "/api/v1/alerts/{id}/resolve", "alerts:ack"),
    route("GET", "/api/v1/alert-history", "alerts:read"),
    route("GET", "/api/v1/silences", "alerts:read"),
    route("POST", "/api/v1/silences", "alerts:manage"),
    route("DELETE", "/api/v1/silences/{id}", "alerts:manage"),
    route("GET", "/api/v1/maintenance-windows", "alerts:read"),
    route("POST", "/api/v1/maintenance-windows", "alerts:manage"),
    route(
        "DELETE",
        "/api/v1/maintenance-windows/{id}",
        "alerts:manage",
    ),
    route("GET", "/api/v1/series", "metrics:read"),
    route("GET", "/api/v1/series/{id}/points", "metrics:read"),
    route("GET", "/api/v1/metrics/aggregate", "metrics:read"),
    // Reports (api/reports.rs): one route per kind, so each has its permission; any other kind answers 400.
    route("GET", "/api/v1/reports/inventory", "devices:read"),
    route("GET", "/api/v1/reports/alerts", "alerts:read"),
    route("GET", "/api/v1/reports/traffic", "metrics:read"),
    route("GET", "/api/v1/reports/availability", "metrics:read"),
    // Notifications (api/notifications.rs).
    route(
        "GET",
        "/api/v1/notifications/channels",
        "notifications:manage",
    ),
    route(
        "POST",
        "/api/v1/notifications/channels",
        "notifications:manage",
    ),
    route(
        "GET",
        "/api/v1/notifications/channels/{id}",
        "notifications:manage",
    ),
    route(
        "PATCH",
        "/api/v1/notifications/channels/{id}",
        "notifications:manage",
    ),
    route(
        "DELETE",
        "/api/v1/notifications/channels/{id}",
        "notifications:manage",
    ),
    route(
        "POST",
        "/api/v1/notifications/channels/{id}/test",
        "notifications:manage",
    ),
    route(
        "GET",
        "/api/v1/notifications/policies",
        "notifications:manage",
    ),
    route(
        "POST",
        "/api/v1/notifications/policies",
        "notifications:manage",
    ),
    route(
        "GET",
        "/api/v1/notifications/policies/{id}",
        "notifications:manage",
    ),
    route(
        "PATCH",
        "/api/v1/notifications/policies/{id}",
        "notifications:manage",
    ),
    route(
        "DELETE",
        "/api/v1/notifications/policies/{id}",
        "notifications:manage",
    ),
    route("GET", "/api/v1/notifications/deliveries", "alerts:read"),
    route("GET", "/api/v1/notifications/dead-letters", "alerts:read"),
    route(
        "POST",
        "/api/v1/notifications/dead-letters/{id}/replay",
        "notifications:manage",
    ),
    route("GET", "/api/v1/push/vapid-public-key", ""),
    route("POST", "/api/v1/push/subscriptions", ""),
    route("DELETE", "/api/v1/push/subscriptions/{id}", ""),
    route("PUT", "/api/v1/me/language", ""),
    // Commands to agents (api/commands/). Creating or cancelling one needs the command's own permission from
    // the catalogue (`diagnostics:run` for diagnostics, `tr069:reboot` for reboots...): the table names the
    // diagnostics one.
    route("POST", "/api/v1/commands", "diagnostics:run"),
    route("GET", "/api/v1/commands", "commands:read"),
    route("GET", "/api/v1/commands/{id}", "commands:read"),
    route("GET", "/api/v1/commands/{id}/progress", "commands:read"),
    route("POST", "/api/v1/commands/{id}/cancel", "diagnostics:run"),
    route("GET", "/api/v1/command-batches/{id}", "commands:read"),
    route("GET", "/api/v1/commands/dead-letters", "commands:read"),
    route(
        "POST",
        "/api/v1/commands/dead-letters/{id}/requeue",
        "commands:manage",
    ),
    route(
        "DELETE",
        "/api/v1/commands/dead-letters/{id}",
        "commands:manage",
    ),
    route("GET", "/api/v1/queues", "commands:read"),
    // Firmware images and campaigns (api/firmware.rs).
    route("POST", "/api/v1/firmware/images", "tr069:firmware"),
    route("GET", "/api/v1/firmware/images", "tr069:read"),
    route("GET", "/api/v1/firmware/images/{id}", "tr069:read"),
    route("DELETE", "/api/v1/firmware/images/{id}", "tr069:firmware"),
    route("POST", "/api/v1/firmware/campaigns", "tr069:firmware"),
    route("GET", "/api/v1/firmware/campaigns", "tr069:read"),
    route("GET", "/api/v1/firmware/campaigns/{id}", "tr069:read"),
    route(
        "POST",
        "/api/v1/firmware/campaigns/{id}/pause",
        "tr069:firmware",
    ),
    route(
        "POST",
        "/api/v1/firmware/campaigns/{id}/resume",
        "tr069:firmware",
    ),
    route(
        "POST",
        "/api/v1/firmware/campaigns/{id}/cancel",
        "tr069:firmware",
    ),
];

/// The caller's own provider: creating tenant objects needs one (a Global Admin acts through a provider's users).
pub(crate) fn own_provider(caller: &Caller) -> Result<uuid::Uuid, ApiError> {
    caller.provider_id.ok_or_else(|| {
        ApiError::BadRequest("this operation needs a caller bound to a provider".into())
    })
}

/// An object as the audit log's `before`/`after`.
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Option<serde_json::Value> {
    serde_json::to_value(v).ok()
}

/// The error format, for the OpenAPI document.
#[derive(Debug, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Inside [`ErrorBody`].
#[derive(Debug, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, such as `not_found`.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// The request id (also in the `x-request-id` response header).
    pub request_id: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "OctoISP API", version = "1", description = "Multi-tenant ISP network management."),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody, ErrorDetail))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The routes with their documentation, before state and middleware.
fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(openapi_json))
        .routes(routes!(account::login))
        .routes(routes!(account::refresh))
        .routes(routes!(account::logout))
        .routes(routes!(account::password_reset))
        .routes(routes!(account::password_reset_confirm))
        .routes(routes!(account::me))
        .routes(routes!(roles::permissions))
        .routes(routes!(roles::list, roles::create))
        .routes(routes!(roles::get, roles::update, roles::delete))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get, users::update))
        .routes(routes!(users::set_role))
        .routes(routes!(users::grant, users::revoke))
        .routes(routes!(audit_log::list))
        .routes(routes!(account::api_keys, account::create_api_key))
        .routes(routes!(account::revoke_api_key))
        .routes(routes!(providers::list, providers::create))
        .routes(routes!(providers::get, providers::update))
        .routes(routes!(pops::list, pops::create))
        .routes(routes!(pops::get, pops::update, pops::delete))
        .routes(routes!(customers::list, customers::create))
        .routes(routes!(
            customers::get,
            customers::update,
            customers::delete
        ))
        .routes(routes!(devices::list))
        .routes(routes!(devices::get, devices::update, devices::delete))
        .routes(routes!(tr069::get))
        .routes(routes!(tr069::tasks))
        .routes(routes!(groups::list, groups::create))
        .routes(routes!(groups::get, groups::update, groups::delete))
        .routes(routes!(groups::members, groups::add_member))
        .routes(routes!(groups::remove_member))
        .routes(routes!(agents::list))
        .routes(routes!(agents::create_enrollment_token))
        .routes(routes!(agents::get))
        .routes(routes!(agents::revoke))
        .routes(routes!(agent_config::get, agent_config::put))
        .routes(routes!(agent_config::versions))
        .routes(routes!(agent_config::version))
        .routes(routes!(summary::summary))
        .routes(routes!(live::live))
        .routes(routes!(alerts::list_rules, alerts::create_rule))
        .routes(routes!(alert_preview::preview))
        .routes(routes!(
            alerts::get_rule,
            alerts::update_rule,
            alerts::delete_rule
        ))
        .routes(routes!(alerts::list_alerts))
        .routes(routes!(alerts::get_alert))
        .routes(routes!(alerts::ack_alert))
        .routes(routes!(alerts::resolve_alert))
        .routes(routes!(alerts::history))
        .routes(routes!(alerts::list_silences, alerts::create_silence))
        .routes(routes!(alerts::delete_silence))
        .routes(routes!(
            alerts::list_maintenance,
            alerts::create_maintenance
        ))
        .routes(routes!(alerts::delete_maintenance))
        .routes(routes!(series::list))
        .routes(routes!(series::points))
        .routes(routes!(series::aggregate))
        .routes(routes!(interfaces::list))
        .routes(routes!(reports::inventory))
        .routes(routes!(reports::alerts))
        .routes(routes!(reports::traffic))
        .routes(routes!(reports::availability))
        .routes(routes!(
            notifications::list_channels,
            notifications::create_channel
        ))
        .routes(routes!(
            notifications::get_channel,
            notifications::update_channel,
            notifications::delete_channel
        ))
        .routes(routes!(notifications::test_channel))
        .routes(routes!(
            notifications::list_policies,
            notifications::create_policy
        ))
        .routes(routes!(
            notifications::get_policy,
            notifications::update_policy,
            notifications::delete_policy
        ))
        .routes(routes!(notifications::list_deliveries))
        .routes(routes!(notifications::list_dead_letters))
        .routes(routes!(notifications::replay))
        .routes(routes!(notifications::vapid_public_key))
        .routes(routes!(notifications::subscribe))
        .routes(routes!(notifications::unsubscribe))
        .routes(routes!(notifications::set_language))
        .routes(routes!(commands::list, commands::create))
        .routes(routes!(commands::get))
        .routes(routes!(commands::progress))
        .routes(routes!(commands::cancel))
        .routes(routes!(commands::batch))
        .routes(routes!(commands::dead_letters))
        .routes(routes!(commands::requeue_dead))
        .routes(routes!(commands::discard_dead))
        .routes(routes!(commands::queues))
        .routes(routes!(firmware::list_images, firmware::upload))
        .routes(routes!(firmware::get_image, firmware::delete_image))
        .routes(routes!(firmware::list_campaigns, firmware::create_campaign))
        .routes(routes!(firmware::get_campaign))
        .routes(routes!(firmware::pause_campaign))
        .routes(routes!(firmware::resume_campaign))
        .routes(routes!(firmware::cancel_campaign))
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().split_for_parts().1
}

/// The API reference in Markdown (docs/API.md), from the OpenAPI document and [`ROUTES`].
pub fn reference_markdown() -> String {
    let doc = serde_json::to_value(openapi()).unwrap_or_default();
    reference::markdown(&doc, ROUTES)
}

fn openapi_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| openapi().to_json().unwrap_or_else(|_| "{}".to_owned()))
}

/// The OpenAPI document (public).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_text())
}

/// The API router with its gateway middleware and state.
pub fn router(state: AppState) -> Router {
    let (routes, _doc) = documented().split_for_parts();
    let cfg = state.config.clone();
    let origins: Vec<HeaderValue> = cfg
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static(gateway::REQUEST_ID_HEADER),
            HeaderName::from_static(gateway::ACT_FOR_PROVIDER_HEADER),
            HeaderName::from_static(commands::IDEMPOTENCY_HEADER),
        ])
        .expose_headers([
            HeaderName::from_static(gateway::REQUEST_ID_HEADER),
            header::RETRY_AFTER,
        ]);
    routes
        // Not in ROUTES: it reads nothing and answers 400 naming the report kinds.
        .route(
            "/api/v1/reports/{kind}",
            axum::routing::get(reports::unknown),
        )
        .fallback(|| async { ApiError::NotFound })
        .layer(from_fn_with_state(state.clone(), gateway::gate))
        .layer(from_fn_with_state(state.clone(), gateway::limits))
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(from_fn_with_state(state.clone(), gateway::request_id))
        .layer(cors)
        .with_state(state)
}
