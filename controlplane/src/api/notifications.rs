//! Notification channels and policies (`notifications:manage`), deliveries and dead letters (`alerts:read`; replay
//! needs `notifications:manage`), Web Push subscriptions and the VAPID public key (any signed-in user of a
//! provider), and the caller's notification language.
//!
//! Channel secrets (Telegram bot tokens, webhook signing secrets, SMTP passwords) are write-only: no answer and no
//! audit row carries them, except a webhook secret the server generates, shown once in the creation (or rotation)
//! answer.

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Postgres, QueryBuilder, Transaction};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, Authed};
use crate::api::pagination::{
    Page, PageParams, decode_key_cursor, encode_key_cursor, fetch_one, fetch_page,
};
use crate::api::{AppState, ErrorBody, own_provider, to_json, validate};
use crate::audit;
use crate::auth::Caller;
use crate::notify::render::{self, Language};
use crate::notify::send::SmtpOverride;
use crate::notify::{DELIVERIES_CHANNEL, webpush};

const MANAGE: &str = "notifications:manage";
const READ: &str = "alerts:read";
const KINDS: &[&str] = &["email", "telegram", "webhook", "webpush"];
const SEVERITIES: &[&str] = &["info", "warning", "critical"];
const EVENT_KINDS: &[&str] = &[
    "firing",
    "resolved",
    "flapping",
    "flap_ended",
    "acknowledged",
];
const MAX_EMAIL_TARGETS: usize = 50;

// ---------------------------------------------------------------------------------------------------------------
// Channels

/// A notification channel (its secret is never shown).
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Channel {
    /// Its id.
    pub id: Uuid,
    /// Its provider.
    pub provider_id: Uuid,
    /// Name, unique within the provider.
    pub name: String,
    /// `email`, `telegram`, `webhook` or `webpush`.
    pub kind: String,
    /// Settings: `to` (email addresses) and optional `smtp` {host, port, tls, username, from}; `chat_id`
    /// (Telegram); `url` (webhook); nothing (Web Push: the users' subscriptions).
    #[schema(value_type = Object)]
    pub config: Value,
    /// Language of messages to the channel's own target: `pt-BR` or `en`.
    pub language: String,
    /// Messages per minute; the excess is folded into one summary.
    pub rate_limit_per_minute: i32,
    /// Whether policies may send to it.
    pub enabled: bool,
    /// Whether a secret (bot token, signing secret, SMTP password) is stored.
    pub has_secret: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A channel just created or whose secret was rotated: a generated webhook secret appears here, once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChannelWithSecret {
    /// The channel.
    #[serde(flatten)]
    pub channel: Channel,
    /// The webhook signing secret the server generated (shown only in this answer).
    pub secret: Option<String>,
}

const CHANNEL_COLUMNS: &str = "SELECT id, provider_id, name, kind, config, language, rate_limit_per_minute, enabled, \
     (secret IS NOT NULL OR secret_ciphertext IS NOT NULL) AS has_secret, created_at, updated_at FROM notification_channels WHERE true";
const CHANNEL_RETURNING: &str = "RETURNING id, provider_id, name, kind, config, language, rate_limit_per_minute, \
     enabled, (secret IS NOT NULL OR secret_ciphertext IS NOT NULL) AS has_secret, created_at, updated_at";

/// A new channel.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChannel {
    /// Name, unique within the provider.
    pub name: String,
    /// `email`, `telegram`, `webhook` or `webpush`.
    pub kind: String,
    /// Settings of the kind (see [`Channel::config`]).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: Option<Value>,
    /// Telegram: the bot token (required). Email: the password of the channel's own SMTP server. Webhook: the
    /// signing secret (generated and returned once when absent).
    #[serde(default)]
    pub secret: Option<String>,
    /// `pt-BR` (default) or `en`.
    #[serde(default)]
    pub language: Option<String>,
    /// Messages per minute (default 30).
    #[serde(default)]
    pub rate_limit_per_minute: Option<i32>,
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Changes to a channel.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelUpdate {
    /// New name.
    pub name: Option<String>,
    /// New settings (replace the old ones).
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    /// New secret.
    pub secret: Option<String>,
    /// Webhook: generate a new signing secret (returned once).
    pub rotate_secret: Option<bool>,
    /// New language.
    pub language: Option<String>,
    /// New rate limit.
    pub rate_limit_per_minute: Option<i32>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// Seals a channel's secret for its row; without a configured key the secret is refused, never stored in plaintext.
fn seal(
    state: &AppState,
    provider: Uuid,
    channel: Uuid,
    secret: Option<&str>,
) -> Result<(Option<Vec<u8>>, Option<String>), ApiError> {
    let Some(secret) = secret else {
        return Ok((None, None));
    };
    match state
        .secrets
        .seal(secret, &crate::secretbox::channel_aad(provider, channel))
    {
        Ok(s) => Ok((Some(s.ciphertext), Some(s.key_id))),
        Err(crate::secretbox::SecretError::NoKey) => Err(ApiError::Unprocessable(format!(
            "this control plane cannot store channel secrets: it has no key to encrypt them (the operator sets {})",
            crate::secretbox::CONFIG_HINT
        ))),
        Err(err) => Err(ApiError::Internal(format!(
            "sealing a channel secret: {err}"
        ))),
    }
}

fn language(v: Option<&str>) -> Result<Option<String>, ApiError> {
    match v {
        None => Ok(None),
        Some(l) if Language::is_valid_code(l) => Ok(Some(l.to_owned())),
        Some(l) => Err(bad(format!(
            "language `{l}` is not supported (pt-BR or en)"
        ))),
    }
}

fn rate_limit(v: Option<i32>) -> Result<Option<i32>, ApiError> {
    match v {
        Some(n) if !(1..=10_000).contains(&n) => {
            Err(bad("rate_limit_per_minute must be between 1 and 10000"))
        }
        other => Ok(other),
    }
}

fn is_address(s: &str) -> bool {
    s.len() <= 320 && s.parse::<lettre::message::Mailbox>().is_ok()
}

fn http_url(s: &str) -> bool {
    webpush::origin(s).is_some() && s.len() <= 2000 && !s.chars().any(char::is_whitespace)
}

/// Checks a channel's settings for its kind; unknown keys are refused.
fn check_config(kind: &str, config: &Value) -> Result<(), ApiError> {
    let obj = config
        .as_object()
        .ok_or_else(|| bad("config must be an object"))?;
    let allowed: &[&str] = match kind {
        "email" => &["to", "smtp"],
        "telegram" => &["chat_id"],
        "webhook" => &["url"],
        _ => &[],
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!(
            "config.{k} is not a setting of a {kind} channel (expected: {})",
            if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            }
        )));
    }
    if config.to_string().len() > 8192 {
        return Err(bad("config is too large"));
    }
    match kind {
        "email" => {
            let to = obj
                .get("to")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("config.to: a list of email addresses is required"))?;
            if to.is_empty() || to.len() > MAX_EMAIL_TARGETS {
                return Err(bad(format!(
                    "config.to: 1 to {MAX_EMAIL_TARGETS} addresses"
                )));
            }
            for a in to {
                match a.as_str() {
                    Some(s) if is_address(s) => {}
                    _ => return Err(bad(format!("config.to: `{a}` is not an email address"))),
                }
            }
            if let Some(smtp) = obj.get("smtp").filter(|v| !v.is_null()) {
                let o: SmtpOverride = serde_json::from_value(smtp.clone())
                    .map_err(|e| bad(format!("config.smtp: {e}")))?;
                if o.host.trim().is_empty() || o.host.len() > 255 {
                    return Err(bad("config.smtp.host is required"));
                }
                if !is_address(&o.from) {
                    return Err(bad("config.smtp.from is not an email address"));
                }
            }
        }
        "telegram" => match obj.get("chat_id") {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => {}
            Some(Value::Number(n)) if n.is_i64() => {}
            _ => {
                return Err(bad(
                    "config.chat_id (a chat id or @channel name) is required",
                ));
            }
        },
        "webhook" => match obj.get("url").and_then(Value::as_str) {
            Some(u) if http_url(u) => {}
            _ => return Err(bad("config.url must be an http(s) URL")),
        },
        _ => {}
    }
    Ok(())
}

fn check_secret(kind: &str, secret: &str) -> Result<(), ApiError> {
    if secret.is_empty() || secret.len() > 1000 || secret.chars().any(char::is_control) {
        return Err(bad("secret must be 1 to 1000 printable characters"));
    }
    if kind == "telegram" {
        let ok = secret.split_once(':').is_some_and(|(id, rest)| {
            !id.is_empty()
                && id.chars().all(|c| c.is_ascii_digit())
                && rest.len() >= 20
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        if !ok {
            return Err(bad("secret is not a Telegram bot token (<digits>:<token>)"));
        }
    }
    if kind == "webpush" {
        return Err(bad("a webpush channel has no secret"));
    }
    Ok(())
}

fn generated_secret() -> String {
    format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// Lists the provider's channels.
#[utoipa::path(get, path = "/api/v1/notifications/channels", tag = "notifications", params(PageParams),
    responses((status = 200, body = Page<Channel>), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_channels(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<axum::Json<Page<Channel>>, ApiError> {
    caller.require(MANAGE)?;
    let qb = QueryBuilder::<Postgres>::new(CHANNEL_COLUMNS);
    let page = fetch_page(&state.pool, &caller, qb, "", &page, |c: &Channel| c.id).await?;
    Ok(axum::Json(page))
}

/// One channel.
#[utoipa::path(get, path = "/api/v1/notifications/channels/{id}", tag = "notifications",
    params(("id" = Uuid, Path, description = "Channel id")),
    responses((status = 200, body = Channel), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_channel(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<Channel>, ApiError> {
    caller.require(MANAGE)?;
    fetch_one(&state.pool, &caller, CHANNEL_COLUMNS, "", id)
        .await
        .map(axum::Json)
}

/// Creates a channel. A webhook's signing secret, when not given, is generated and returned once.
#[utoipa::path(post, path = "/api/v1/notifications/channels", tag = "notifications", request_body = NewChannel,
    responses((status = 201, body = ChannelWithSecret), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_channel(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(body): ApiJson<NewChannel>,
) -> Result<(StatusCode, axum::Json<ChannelWithSecret>), ApiError> {
    caller.require(MANAGE)?;
    let provider = own_provider(&caller)?;
    let name = validate::name("name", &body.name)?;
    if !KINDS.contains(&body.kind.as_str()) {
        return Err(bad(format!(
            "kind `{}` is not one of {}",
            body.kind,
            KINDS.join(", ")
        )));
    }
    let config = body
        .config
        .unwrap_or_else(|| Value::Object(Default::default()));
    check_config(&body.kind, &config)?;
    let mut shown = None;
    let secret = match (body.kind.as_str(), body.secret) {
        (kind, Some(s)) => {
            check_secret(kind, &s)?;
            Some(s)
        }
        ("telegram", None) => return Err(bad("secret (the bot token) is required")),
        ("webhook", None) => {
            let s = generated_secret();
            shown = Some(s.clone());
            Some(s)
        }
        _ => None,
    };
    let lang = language(body.language.as_deref())?.unwrap_or_else(|| "pt-BR".into());
    let rate = rate_limit(body.rate_limit_per_minute)?.unwrap_or(30);
    // The id is chosen here: the sealed secret is bound to its row.
    let id = Uuid::new_v4();
    let (ciphertext, key_id) = seal(&state, provider, id, secret.as_deref())?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let channel: Channel = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO notification_channels (provider_id, name, kind, config, secret_ciphertext, secret_key_id, \
         language, rate_limit_per_minute, enabled, id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         {CHANNEL_RETURNING}"
    )))
    .bind(provider)
    .bind(&name)
    .bind(&body.kind)
    .bind(&config)
    .bind(&ciphertext)
    .bind(&key_id)
    .bind(&lang)
    .bind(rate)
    .bind(body.enabled.unwrap_or(true))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "notifications.create_channel",
        "notification_channel",
        Some(&channel.id.to_string()),
        None,
        to_json(&channel),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(ChannelWithSecret {
            channel,
            secret: shown,
        }),
    ))
}

async fn channel_for_update(
    tx: &mut Transaction<'static, Postgres>,
    id: Uuid,
) -> Result<Channel, ApiError> {
    QueryBuilder::<Postgres>::new(CHANNEL_COLUMNS)
        .push(" AND id = ")
        .push_bind(id)
        .push(" FOR UPDATE")
        .build_query_as()
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(ApiError::NotFound)
}

/// Changes a channel (`rotate_secret` on a webhook returns the new secret once).
#[utoipa::path(patch, path = "/api/v1/notifications/channels/{id}", tag = "notifications",
    request_body = ChannelUpdate, params(("id" = Uuid, Path, description = "Channel id")),
    responses((status = 200, body = ChannelWithSecret), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_channel(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ChannelUpdate>,
) -> Result<axum::Json<ChannelWithSecret>, ApiError> {
    caller.require(MANAGE)?;
    let name = body
        .name
        .as_deref()
        .map(|n| validate::name("name", n))
        .transpose()?;
    let lang = language(body.language.as_deref())?;
    let rate = rate_limit(body.rate_limit_per_minute)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before = channel_for_update(&mut tx, id).await?;
    if let Some(c) = &body.config {
        check_config(&before.kind, c)?;
    }
    let mut shown = None;
    let secret = match (body.secret, body.rotate_secret.unwrap_or(false)) {
        (Some(_), true) => return Err(bad("give either secret or rotate_secret, not both")),
        (Some(s), false) => {
            check_secret(&before.kind, &s)?;
            Some(s)
        }
        (None, true) if before.kind == "webhook" => {
            let s = generated_secret();
            shown = Some(s.clone());
            Some(s)
        }
        (None, true) => return Err(bad("rotate_secret applies to webhook channels only")),
        (None, false) => None,
    };
    let (ciphertext, key_id) = seal(&state, before.provider_id, id, secret.as_deref())?;
    // A new secret replaces the old one in whichever form it was stored.
    let after: Channel = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE notification_channels SET name = coalesce($3, name), config = coalesce($4, config), \
         secret = CASE WHEN $5::bytea IS NULL THEN secret END, \
         secret_ciphertext = coalesce($5, secret_ciphertext), secret_key_id = coalesce($9, secret_key_id), \
         language = coalesce($6, language), \
         rate_limit_per_minute = coalesce($7, rate_limit_per_minute), enabled = coalesce($8, enabled), \
         updated_at = now() WHERE provider_id = $1 AND id = $2 {CHANNEL_RETURNING}"
    )))
    .bind(before.provider_id)
    .bind(id)
    .bind(name)
    .bind(&body.config)
    .bind(&ciphertext)
    .bind(lang)
    .bind(rate)
    .bind(body.enabled)
    .bind(&key_id)
    .fetch_one(&mut *tx)
    .await?;
    let mut after_audit = to_json(&after);
    if let (Some(Value::Object(m)), true) = (&mut after_audit, secret.is_some()) {
        // Record that the secret changed, never the secret.
        m.insert("secret_changed".into(), Value::Bool(true));
    }
    audit::record(
        &mut tx,
        &caller,
        "notifications.update_channel",
        "notification_channel",
        Some(&id.to_string()),
        to_json(&before),
        after_audit,
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(ChannelWithSecret {
        channel: after,
        secret: shown,
    }))
}

/// Deletes a channel, with its policies and deliveries.
#[utoipa::path(delete, path = "/api/v1/notifications/channels/{id}", tag = "notifications",
    params(("id" = Uuid, Path, description = "Channel id")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_channel(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require(MANAGE)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before = channel_for_update(&mut tx, id).await?;
    sqlx::query("DELETE FROM notification_channels WHERE provider_id = $1 AND id = $2")
        .bind(before.provider_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        &caller,
        "notifications.delete_channel",
        "notification_channel",
        Some(&id.to_string()),
        to_json(&before),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deliveries queued by a test send.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TestSent {
    /// The deliveries (follow them in the deliveries list).
    pub delivery_ids: Vec<Uuid>,
}

/// Queues a test message to the channel (a webpush channel: to the caller's own subscriptions).
#[utoipa::path(post, path = "/api/v1/notifications/channels/{id}/test", tag = "notifications",
    params(("id" = Uuid, Path, description = "Channel id")),
    responses((status = 202, body = TestSent), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn test_channel(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, axum::Json<TestSent>), ApiError> {
    caller.require(MANAGE)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let channel: Channel = QueryBuilder::<Postgres>::new(CHANNEL_COLUMNS)
        .push(" AND id = ")
        .push_bind(id)
        .build_query_as()
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound)?;
    let recipients: Vec<(String, String)> = if channel.kind == "webpush" {
        let user = caller.user_id.ok_or_else(|| {
            bad("a push test goes to the caller's own subscriptions: sign in as a user")
        })?;
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT s.id, u.language FROM push_subscriptions s JOIN users u \
             ON u.provider_id = s.provider_id AND u.id = s.user_id WHERE s.provider_id = $1 AND s.user_id = $2",
        )
        .bind(channel.provider_id)
        .bind(user)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Err(bad("you have no push subscription in this provider"));
        }
        rows.into_iter().map(|(s, l)| (s.to_string(), l)).collect()
    } else {
        vec![(String::new(), channel.language.clone())]
    };
    let mut ids = Vec::with_capacity(recipients.len());
    for (recipient, lang) in recipients {
        let text = render::test_message(&channel.name, Language::from_code(&lang));
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO notification_deliveries (provider_id, channel_id, recipient, language, subject, body, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(channel.provider_id)
        .bind(channel.id)
        .bind(&recipient)
        .bind(&lang)
        .bind(&text.subject)
        .bind(&text.body)
        .bind(serde_json::json!({"test": true, "severity": "info"}))
        .fetch_one(&mut *tx)
        .await?;
        ids.push(id);
    }
    notify_workers(&mut tx, channel.provider_id).await?;
    audit::record(
        &mut tx,
        &caller,
        "notifications.test_channel",
        "notification_channel",
        Some(&id.to_string()),
        None,
        Some(serde_json::json!({"deliveries": ids})),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(TestSent { delivery_ids: ids }),
    ))
}

async fn notify_workers(
    tx: &mut Transaction<'static, Postgres>,
    provider: Uuid,
) -> Result<(), ApiError> {
    sqlx::query("SELECT pg_notify($1, $2::text)")
        .bind(DELIVERIES_CHANNEL)
        .bind(provider)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Policies

/// Which alert events go to a channel.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Policy {
    /// Its id.
    pub id: Uuid,
    /// Its provider.
    pub provider_id: Uuid,
    /// Name.
    pub name: String,
    /// The channel.
    pub channel_id: Uuid,
    /// A user's own policy (mail to the user's address, push to the user's subscriptions, in the user's language);
    /// `null`: the channel's own target.
    pub user_id: Option<Uuid>,
    /// Severities sent: `info`, `warning`, `critical`.
    pub severities: Vec<String>,
    /// Event kinds sent: `firing`, `resolved`, `flapping`, `flap_ended`, `acknowledged`.
    pub kinds: Vec<String>,
    /// `all`, `pop` or `group` (device group).
    pub scope: String,
    /// The POP or device group of the scope.
    pub scope_id: Option<Uuid>,
    /// Start of quiet hours, `HH:MM` local time.
    pub quiet_start: Option<String>,
    /// End of quiet hours, `HH:MM` (before the start: the quiet hours span midnight).
    pub quiet_end: Option<String>,
    /// Time zone of the quiet hours (IANA name).
    pub quiet_timezone: String,
    /// During quiet hours, still send critical events.
    pub quiet_allow_critical: bool,
    /// Whether the policy applies.
    pub enabled: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

const POLICY_FIELDS: &str = "id, provider_id, name, channel_id, user_id, severities, kinds, scope, scope_id, \
     to_char(quiet_start, 'HH24:MI') AS quiet_start, to_char(quiet_end, 'HH24:MI') AS quiet_end, quiet_timezone, \
     quiet_allow_critical, enabled, created_at";

fn policy_select() -> String {
    format!("SELECT {POLICY_FIELDS} FROM notification_policies WHERE true")
}

/// A new policy.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPolicy {
    /// Name.
    pub name: String,
    /// The channel.
    pub channel_id: Uuid,
    /// A user of the provider, for a user's own policy.
    #[serde(default)]
    pub user_id: Option<Uuid>,
    /// Default `["warning", "critical"]`.
    #[serde(default)]
    pub severities: Option<Vec<String>>,
    /// Default: every kind.
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
    /// `all` (default), `pop` or `group`.
    #[serde(default)]
    pub scope: Option<String>,
    /// The POP or device group (required unless the scope is `all`).
    #[serde(default)]
    pub scope_id: Option<Uuid>,
    /// Quiet hours start, `HH:MM`.
    #[serde(default)]
    pub quiet_start: Option<String>,
    /// Quiet hours end, `HH:MM`.
    #[serde(default)]
    pub quiet_end: Option<String>,
    /// IANA time zone (default America/Sao_Paulo).
    #[serde(default)]
    pub quiet_timezone: Option<String>,
    /// Default true.
    #[serde(default)]
    pub quiet_allow_critical: Option<bool>,
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Changes to a policy (absent fields keep their value; `null` clears `user_id`, the quiet hours or the scope).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpdate {
    /// New name.
    pub name: Option<String>,
    /// New channel.
    pub channel_id: Option<Uuid>,
    /// New user (`null`: the channel's own target).
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<Uuid>)]
    pub user_id: Option<Option<Uuid>>,
    /// New severities.
    pub severities: Option<Vec<String>>,
    /// New kinds.
    pub kinds: Option<Vec<String>>,
    /// New scope (with `scope_id` unless `all`).
    pub scope: Option<String>,
    /// New scope object.
    pub scope_id: Option<Uuid>,
    /// New quiet start (`null` with `quiet_end` `null`: no quiet hours).
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    pub quiet_start: Option<Option<String>>,
    /// New quiet end.
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    pub quiet_end: Option<Option<String>>,
    /// New time zone.
    pub quiet_timezone: Option<String>,
    /// Still send critical events in quiet hours.
    pub quiet_allow_critical: Option<bool>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

/// A policy's values, validated, ready to write.
struct PolicyValues {
    name: String,
    channel_id: Uuid,
    user_id: Option<Uuid>,
    severities: Vec<String>,
    kinds: Vec<String>,
    scope: String,
    scope_id: Option<Uuid>,
    quiet_start: Option<NaiveTime>,
    quiet_end: Option<NaiveTime>,
    quiet_timezone: String,
    quiet_allow_critical: bool,
    enabled: bool,
}

fn list_of(field: &str, v: Vec<String>, allowed: &[&str]) -> Result<Vec<String>, ApiError> {
    if v.is_empty() {
        return Err(bad(format!("{field} must not be empty")));
    }
    let mut out: Vec<String> = Vec::new();
    for s in v {
        if !allowed.contains(&s.as_str()) {
            return Err(bad(format!(
                "{field}: `{s}` is not one of {}",
                allowed.join(", ")
            )));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

fn quiet_time(field: &str, v: &str) -> Result<NaiveTime, ApiError> {
    NaiveTime::parse_from_str(v, "%H:%M")
        .map_err(|_| bad(format!("{field} must be a time HH:MM, not `{v}`")))
}

impl PolicyValues {
    /// Checks what the database can tell: the channel, the user, the scope object and the time zone exist.
    async fn check(&self, tx: &mut Transaction<'static, Postgres>) -> Result<(), ApiError> {
        let channel: Option<String> =
            sqlx::query_scalar("SELECT kind FROM notification_channels WHERE id = $1")
                .bind(self.channel_id)
                .fetch_optional(&mut **tx)
                .await?;
        if channel.is_none() {
            return Err(bad(format!("no channel {}", self.channel_id)));
        }
        if let Some(u) = self.user_id {
            let found: Option<Uuid> = sqlx::query_scalar(
                "SELECT id FROM users WHERE id = $1 AND provider_id IS NOT NULL",
            )
            .bind(u)
            .fetch_optional(&mut **tx)
            .await?;
            if found.is_none() {
                return Err(bad(format!("no user {u}")));
            }
        }
        match (self.scope.as_str(), self.scope_id) {
            ("all", None) => {}
            ("all", Some(_)) => return Err(bad("scope_id must be absent when scope is all")),
            (_, None) => return Err(bad("scope_id is required when scope is pop or group")),
            (scope, Some(id)) => {
                let table = if scope == "pop" {
                    "pops"
                } else {
                    "device_groups"
                };
                let found: Option<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT id FROM {table} WHERE id = $1"
                )))
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
                if found.is_none() {
                    return Err(bad(format!("no {scope} {id}")));
                }
            }
        }
        if self.quiet_start.is_some() != self.quiet_end.is_some() {
            return Err(bad("quiet_start and quiet_end go together"));
        }
        if self.quiet_timezone.is_empty()
            || self.quiet_timezone.len() > 64
            || !self
                .quiet_timezone
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))
        {
            return Err(bad("quiet_timezone is not a time zone name"));
        }
        let ok: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)")
                .bind(&self.quiet_timezone)
                .fetch_one(&mut **tx)
                .await?;
        if !ok {
            return Err(bad(format!(
                "quiet_timezone `{}` is not a known time zone",
                self.quiet_timezone
            )));
        }
        Ok(())
    }
}

/// Lists the provider's policies.
#[utoipa::path(get, path = "/api/v1/notifications/policies", tag = "notifications", params(PageParams),
    responses((status = 200, body = Page<Policy>), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_policies(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<axum::Json<Page<Policy>>, ApiError> {
    caller.require(MANAGE)?;
    let qb = QueryBuilder::<Postgres>::new(policy_select());
    let page = fetch_page(&state.pool, &caller, qb, "", &page, |p: &Policy| p.id).await?;
    Ok(axum::Json(page))
}

/// One policy.
#[utoipa::path(get, path = "/api/v1/notifications/policies/{id}", tag = "notifications",
    params(("id" = Uuid, Path, description = "Policy id")),
    responses((status = 200, body = Policy), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_policy(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<Policy>, ApiError> {
    caller.require(MANAGE)?;
    fetch_one(&state.pool, &caller, &policy_select(), "", id)
        .await
        .map(axum::Json)
}

async fn write_policy(
    tx: &mut Transaction<'static, Postgres>,
    provider: Uuid,
    id: Option<Uuid>,
    v: &PolicyValues,
) -> Result<Policy, ApiError> {
    let sql = match id {
        None => format!(
            "INSERT INTO notification_policies (provider_id, name, channel_id, user_id, severities, kinds, scope, \
             scope_id, quiet_start, quiet_end, quiet_timezone, quiet_allow_critical, enabled) \
             VALUES ($1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING {POLICY_FIELDS}"
        ),
        Some(_) => format!(
            "UPDATE notification_policies SET name = $3, channel_id = $4, user_id = $5, severities = $6, kinds = $7, \
             scope = $8, scope_id = $9, quiet_start = $10, quiet_end = $11, quiet_timezone = $12, \
             quiet_allow_critical = $13, enabled = $14 WHERE provider_id = $1 AND id = $2 RETURNING {POLICY_FIELDS}"
        ),
    };
    let policy = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(provider)
        .bind(id)
        .bind(&v.name)
        .bind(v.channel_id)
        .bind(v.user_id)
        .bind(&v.severities)
        .bind(&v.kinds)
        .bind(&v.scope)
        .bind(v.scope_id)
        .bind(v.quiet_start)
        .bind(v.quiet_end)
        .bind(&v.quiet_timezone)
        .bind(v.quiet_allow_critical)
        .bind(v.enabled)
        .fetch_one(&mut **tx)
        .await?;
    Ok(policy)
}

/// Creates a policy.
#[utoipa::path(post, path = "/api/v1/notifications/policies", tag = "notifications", request_body = NewPolicy,
    responses((status = 201, body = Policy), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_policy(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(body): ApiJson<NewPolicy>,
) -> Result<(StatusCode, axum::Json<Policy>), ApiError> {
    caller.require(MANAGE)?;
    let provider = own_provider(&caller)?;
    let v = PolicyValues {
        name: validate::name("name", &body.name)?,
        channel_id: body.channel_id,
        user_id: body.user_id,
        severities: list_of(
            "severities",
            body.severities
                .unwrap_or_else(|| vec!["warning".into(), "critical".into()]),
            SEVERITIES,
        )?,
        kinds: list_of(
            "kinds",
            body.kinds
                .unwrap_or_else(|| EVENT_KINDS.iter().map(|k| (*k).to_owned()).collect()),
            EVENT_KINDS,
        )?,
        scope: body.scope.unwrap_or_else(|| "all".into()),
        scope_id: body.scope_id,
        quiet_start: body
            .quiet_start
            .as_deref()
            .map(|t| quiet_time("quiet_start", t))
            .transpose()?,
        quiet_end: body
            .quiet_end
            .as_deref()
            .map(|t| quiet_time("quiet_end", t))
            .transpose()?,
        quiet_timezone: body
            .quiet_timezone
            .unwrap_or_else(|| "America/Sao_Paulo".into()),
        quiet_allow_critical: body.quiet_allow_critical.unwrap_or(true),
        enabled: body.enabled.unwrap_or(true),
    };
    if !["all", "pop", "group"].contains(&v.scope.as_str()) {
        return Err(bad("scope must be all, pop or group"));
    }
    let mut tx = caller.tx(&state.pool, None).await?;
    v.check(&mut tx).await?;
    let policy = write_policy(&mut tx, provider, None, &v).await?;
    audit::record(
        &mut tx,
        &caller,
        "notifications.create_policy",
        "notification_policy",
        Some(&policy.id.to_string()),
        None,
        to_json(&policy),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(policy)))
}

/// Changes a policy.
#[utoipa::path(patch, path = "/api/v1/notifications/policies/{id}", tag = "notifications",
    request_body = PolicyUpdate, params(("id" = Uuid, Path, description = "Policy id")),
    responses((status = 200, body = Policy), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_policy(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<PolicyUpdate>,
) -> Result<axum::Json<Policy>, ApiError> {
    caller.require(MANAGE)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before: Policy = QueryBuilder::<Postgres>::new(policy_select())
        .push(" AND id = ")
        .push_bind(id)
        .push(" FOR UPDATE")
        .build_query_as()
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound)?;
    let time = |field: &str, new: Option<Option<String>>, old: &Option<String>| match new
        .unwrap_or_else(|| old.clone())
    {
        Some(t) => quiet_time(field, &t).map(Some),
        None => Ok(None),
    };
    let scope = body.scope.clone().unwrap_or_else(|| before.scope.clone());
    if !["all", "pop", "group"].contains(&scope.as_str()) {
        return Err(bad("scope must be all, pop or group"));
    }
    let v = PolicyValues {
        name: match &body.name {
            Some(n) => validate::name("name", n)?,
            None => before.name.clone(),
        },
        channel_id: body.channel_id.unwrap_or(before.channel_id),
        user_id: body.user_id.unwrap_or(before.user_id),
        severities: list_of(
            "severities",
            body.severities
                .clone()
                .unwrap_or_else(|| before.severities.clone()),
            SEVERITIES,
        )?,
        kinds: list_of(
            "kinds",
            body.kinds.clone().unwrap_or_else(|| before.kinds.clone()),
            EVENT_KINDS,
        )?,
        scope_id: if body.scope.is_some() {
            body.scope_id
        } else {
            body.scope_id.or(before.scope_id)
        },
        scope,
        quiet_start: time("quiet_start", body.quiet_start.clone(), &before.quiet_start)?,
        quiet_end: time("quiet_end", body.quiet_end.clone(), &before.quiet_end)?,
        quiet_timezone: body
            .quiet_timezone
            .clone()
            .unwrap_or_else(|| before.quiet_timezone.clone()),
        quiet_allow_critical: body
            .quiet_allow_critical
            .unwrap_or(before.quiet_allow_critical),
        enabled: body.enabled.unwrap_or(before.enabled),
    };
    v.check(&mut tx).await?;
    let after = write_policy(&mut tx, before.provider_id, Some(id), &v).await?;
    audit::record(
        &mut tx,
        &caller,
        "notifications.update_policy",
        "notification_policy",
        Some(&id.to_string()),
        to_json(&before),
        to_json(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(after))
}

/// Deletes a policy.
#[utoipa::path(delete, path = "/api/v1/notifications/policies/{id}", tag = "notifications",
    params(("id" = Uuid, Path, description = "Policy id")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_policy(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require(MANAGE)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before: Policy = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM notification_policies WHERE id = $1 RETURNING {POLICY_FIELDS}"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    audit::record(
        &mut tx,
        &caller,
        "notifications.delete_policy",
        "notification_policy",
        Some(&id.to_string()),
        to_json(&before),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------------------------
// Deliveries and dead letters

/// One message to one channel and recipient, and how sending it went.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Delivery {
    /// Its id.
    pub id: Uuid,
    /// Its provider.
    pub provider_id: Uuid,
    /// The message (`null`: a test send or a rate-limit summary).
    pub message_id: Option<i64>,
    /// The channel.
    pub channel_id: Uuid,
    /// The policy that routed it.
    pub policy_id: Option<Uuid>,
    /// '' (the channel's target), an email address or a push subscription id.
    pub recipient: String,
    /// Language of the text.
    pub language: String,
    /// Subject.
    pub subject: String,
    /// Body.
    pub body: String,
    /// `pending`, `sending`, `retrying`, `sent` or `dead`.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// When the next attempt is due.
    pub next_attempt_at: DateTime<Utc>,
    /// The last failure.
    pub last_error: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When it was sent.
    pub sent_at: Option<DateTime<Utc>>,
}

const DELIVERY_FIELDS: &str = "id, provider_id, message_id, channel_id, policy_id, recipient, language, subject, \
     body, status, attempts, next_attempt_at, last_error, created_at, sent_at";

/// Filters of the deliveries list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only deliveries in this status.
    pub status: Option<String>,
    /// Only deliveries of this channel.
    pub channel_id: Option<Uuid>,
}

async fn delivery_page(
    state: &AppState,
    caller: &Caller,
    params: &DeliveryParams,
    status: Option<&str>,
) -> Result<Page<Delivery>, ApiError> {
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    };
    let limit = page.limit()?;
    if let Some(s) = status
        && !["pending", "sending", "retrying", "sent", "dead"].contains(&s)
    {
        return Err(bad(
            "status must be pending, sending, retrying, sent or dead",
        ));
    }
    let mut qb = QueryBuilder::<Postgres>::new(format!(
        "SELECT {DELIVERY_FIELDS} FROM notification_deliveries WHERE true"
    ));
    if let Some(p) = caller.provider_id {
        qb.push(" AND provider_id = ").push_bind(p);
    }
    if let Some(s) = status {
        qb.push(" AND status = ").push_bind(s.to_owned());
    }
    if let Some(c) = params.channel_id {
        qb.push(" AND channel_id = ").push_bind(c);
    }
    if let Some(cursor) = &page.cursor {
        let (key, id) = decode_key_cursor(cursor)?;
        let micros: i64 = key.parse().map_err(|_| bad("invalid cursor"))?;
        let at =
            DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(|| bad("invalid cursor"))?;
        qb.push(" AND (created_at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let mut tx = caller.tx(&state.pool, None).await?;
    let rows: Vec<Delivery> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(Page::from_rows_keyed(rows, limit, |d: &Delivery| {
        encode_key_cursor(&d.created_at.timestamp_micros().to_string(), d.id)
    }))
}

/// Lists deliveries, newest first (filters: `status`, `channel_id`).
#[utoipa::path(get, path = "/api/v1/notifications/deliveries", tag = "notifications", params(DeliveryParams),
    responses((status = 200, body = Page<Delivery>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(params): ApiQuery<DeliveryParams>,
) -> Result<axum::Json<Page<Delivery>>, ApiError> {
    caller.require(READ)?;
    let status = params.status.clone();
    delivery_page(&state, &caller, &params, status.as_deref())
        .await
        .map(axum::Json)
}

/// Lists the dead letters: deliveries that failed their last attempt, newest first.
#[utoipa::path(get, path = "/api/v1/notifications/dead-letters", tag = "notifications", params(DeliveryParams),
    responses((status = 200, body = Page<Delivery>), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(params): ApiQuery<DeliveryParams>,
) -> Result<axum::Json<Page<Delivery>>, ApiError> {
    caller.require(READ)?;
    delivery_page(&state, &caller, &params, Some("dead"))
        .await
        .map(axum::Json)
}

/// Sends a dead letter again: it becomes `pending` with its attempts reset.
#[utoipa::path(post, path = "/api/v1/notifications/dead-letters/{id}/replay", tag = "notifications",
    params(("id" = Uuid, Path, description = "Delivery id")),
    responses((status = 202, body = Delivery), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn replay(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, axum::Json<Delivery>), ApiError> {
    caller.require(MANAGE)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before: Delivery = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY_FIELDS} FROM notification_deliveries WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    if before.status != "dead" {
        return Err(ApiError::Conflict(format!(
            "delivery {id} is {}, not dead",
            before.status
        )));
    }
    let after: Delivery = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE notification_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(), \
         last_error = NULL, claimed_until = NULL WHERE provider_id = $1 AND id = $2 RETURNING {DELIVERY_FIELDS}"
    )))
    .bind(before.provider_id)
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    notify_workers(&mut tx, before.provider_id).await?;
    audit::record(
        &mut tx,
        &caller,
        "notifications.replay",
        "notification_delivery",
        Some(&id.to_string()),
        Some(serde_json::json!({"status": before.status, "attempts": before.attempts, "last_error": before.last_error})),
        Some(serde_json::json!({"status": after.status})),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, axum::Json(after)))
}

// ---------------------------------------------------------------------------------------------------------------
// Web Push and the caller's language

/// The provider's VAPID public key, for `pushManager.subscribe({applicationServerKey})`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VapidPublicKey {
    /// Uncompressed P-256 point, base64url without padding.
    pub public_key: String,
}

/// The VAPID public key of the caller's provider (made on first use).
#[utoipa::path(get, path = "/api/v1/push/vapid-public-key", tag = "notifications",
    responses((status = 200, body = VapidPublicKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn vapid_public_key(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> Result<axum::Json<VapidPublicKey>, ApiError> {
    let provider = own_provider(&caller)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let key = webpush::vapid_key(&mut tx, provider, &state.secrets)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tx.commit().await?;
    Ok(axum::Json(VapidPublicKey {
        public_key: key.public_key,
    }))
}

/// The keys of a browser's push subscription.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushKeys {
    /// The user agent's P-256 public key, base64url.
    pub p256dh: String,
    /// The 16-byte auth secret, base64url.
    pub auth: String,
}

/// A browser's push subscription (`PushSubscription.toJSON()`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPushSubscription {
    /// The push service URL.
    pub endpoint: String,
    /// Ignored (the browser's expiry hint).
    #[serde(default, rename = "expirationTime")]
    #[schema(value_type = Option<i64>)]
    pub expiration_time: Option<Value>,
    /// The keys.
    pub keys: PushKeys,
}

/// A stored push subscription (its keys are not shown).
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct PushSubscription {
    /// Its id.
    pub id: Uuid,
    /// Its provider.
    pub provider_id: Uuid,
    /// The user it belongs to.
    pub user_id: Uuid,
    /// The push service URL.
    pub endpoint: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

fn b64_len(v: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(v.trim_end_matches('=').as_bytes())
        .ok()
}

/// Registers the caller's push subscription (the same endpoint again replaces it).
#[utoipa::path(post, path = "/api/v1/push/subscriptions", tag = "notifications", request_body = NewPushSubscription,
    responses((status = 201, body = PushSubscription), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn subscribe(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(body): ApiJson<NewPushSubscription>,
) -> Result<(StatusCode, axum::Json<PushSubscription>), ApiError> {
    let provider = own_provider(&caller)?;
    let user = caller
        .user_id
        .ok_or_else(|| bad("push subscriptions belong to users, not API keys"))?;
    if !http_url(&body.endpoint) || body.endpoint.len() < 12 {
        return Err(bad("endpoint must be an http(s) URL"));
    }
    match b64_len(&body.keys.p256dh) {
        Some(k) if k.len() == 65 && k[0] == 4 => {}
        _ => {
            return Err(bad(
                "keys.p256dh must be an uncompressed P-256 point (base64url)",
            ));
        }
    }
    match b64_len(&body.keys.auth) {
        Some(k) if k.len() == 16 => {}
        _ => return Err(bad("keys.auth must be 16 bytes (base64url)")),
    }
    let mut tx = caller.tx(&state.pool, None).await?;
    let sub: PushSubscription = sqlx::query_as(
        "INSERT INTO push_subscriptions (provider_id, user_id, endpoint, p256dh, auth) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (provider_id, endpoint) DO UPDATE SET user_id = EXCLUDED.user_id, p256dh = EXCLUDED.p256dh, \
         auth = EXCLUDED.auth RETURNING id, provider_id, user_id, endpoint, created_at",
    )
    .bind(provider)
    .bind(user)
    .bind(&body.endpoint)
    .bind(body.keys.p256dh.trim_end_matches('='))
    .bind(body.keys.auth.trim_end_matches('='))
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "push.subscribe",
        "push_subscription",
        Some(&sub.id.to_string()),
        None,
        to_json(&sub),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(sub)))
}

/// Removes a push subscription: the caller's own, or any of the provider's with `notifications:manage`.
#[utoipa::path(delete, path = "/api/v1/push/subscriptions/{id}", tag = "notifications",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn unsubscribe(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let any = caller.has(MANAGE);
    let mut tx = caller.tx(&state.pool, None).await?;
    let before: PushSubscription = sqlx::query_as(
        "DELETE FROM push_subscriptions WHERE id = $1 AND ($2 OR user_id = $3) \
         RETURNING id, provider_id, user_id, endpoint, created_at",
    )
    .bind(id)
    .bind(any)
    .bind(caller.user_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    audit::record(
        &mut tx,
        &caller,
        "push.unsubscribe",
        "push_subscription",
        Some(&id.to_string()),
        to_json(&before),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's notification language.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LanguageSetting {
    /// `pt-BR` or `en`.
    pub language: String,
}

/// Sets the language of the caller's notifications.
#[utoipa::path(put, path = "/api/v1/me/language", tag = "notifications", request_body = LanguageSetting,
    responses((status = 200, body = LanguageSetting), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_language(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(body): ApiJson<LanguageSetting>,
) -> Result<axum::Json<LanguageSetting>, ApiError> {
    let user = caller
        .user_id
        .ok_or_else(|| bad("the language belongs to a user, not an API key"))?;
    let lang = language(Some(&body.language))?.unwrap_or_default();
    let mut tx = caller.tx(&state.pool, None).await?;
    let before: Option<String> =
        sqlx::query_scalar("SELECT language FROM users WHERE id = $1 FOR UPDATE")
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(before) = before else {
        return Err(ApiError::NotFound);
    };
    sqlx::query("UPDATE users SET language = $2 WHERE id = $1")
        .bind(user)
        .bind(&lang)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        &caller,
        "users.set_language",
        "user",
        Some(&user.to_string()),
        Some(serde_json::json!({"language": before})),
        Some(serde_json::json!({"language": lang})),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(LanguageSetting { language: lang }))
}
