//! Sending one claimed delivery to its channel: email (SMTP), Telegram (`sendMessage`), a webhook (JSON POST signed
//! with HMAC-SHA256) or Web Push (RFC 8291 + VAPID). Secrets (bot tokens, webhook secrets, SMTP passwords) never
//! appear in the errors this returns, which are stored in `last_error` and shown to the tenant.

use std::time::Duration;

use aws_lc_rs::hmac;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::notify::smtp::{SmtpConfig, SmtpTls};
use crate::notify::webpush::{self, VapidKey};
use crate::notify::{NotifyConfig, NotifyError};

/// Header carrying `sha256=<hex HMAC-SHA256 of the body>` on webhooks.
pub const SIGNATURE_HEADER: &str = "x-octoisp-signature";
/// Header carrying the send time (Unix seconds) on webhooks; the body carries it too, so it is signed.
pub const TIMESTAMP_HEADER: &str = "x-octoisp-timestamp";
/// Header carrying the delivery id on webhooks (the same on every retry: receivers deduplicate on it).
pub const DELIVERY_HEADER: &str = "x-octoisp-delivery";
/// Longest error text kept from a peer's answer.
const MAX_ERROR_TEXT: usize = 300;

/// A delivery claimed by a worker, with what sending it needs. Its `Debug` leaves the secret out.
#[derive(Clone, sqlx::FromRow)]
pub struct Claimed {
    /// Delivery id.
    pub id: Uuid,
    /// Its provider.
    pub provider_id: Uuid,
    /// Its channel.
    pub channel_id: Uuid,
    /// `email`, `telegram`, `webhook` or `webpush`.
    pub kind: String,
    /// The channel's settings.
    pub config: Value,
    /// The channel's secret in plaintext (never logged): a row from before migration 0013, or once opened.
    pub secret: Option<String>,
    /// The channel's sealed secret (`crate::secretbox`).
    pub secret_ciphertext: Option<Vec<u8>>,
    /// The id of the key that sealed it.
    pub secret_key_id: Option<String>,
    /// '' (the channel's own target), an email address, or a push subscription id.
    pub recipient: String,
    /// Subject.
    pub subject: String,
    /// Body text.
    pub body: String,
    /// Machine-readable form.
    pub payload: Value,
    /// Attempt number of this send (1 for the first).
    pub attempts: i32,
    /// Language code.
    pub language: String,
    /// The push subscription (web push only).
    pub endpoint: Option<String>,
    /// Its P-256 key.
    pub p256dh: Option<String>,
    /// Its auth secret.
    pub auth: Option<String>,
}

impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("id", &self.id)
            .field("provider_id", &self.provider_id)
            .field("channel_id", &self.channel_id)
            .field("kind", &self.kind)
            .field(
                "has_secret",
                &(self.secret.is_some() || self.secret_ciphertext.is_some()),
            )
            .field("secret_key_id", &self.secret_key_id)
            .field("recipient", &self.recipient)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Why a send failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// What went wrong (no secrets).
    pub message: String,
    /// Retrying cannot help (bad settings, a 4xx answer): the delivery is dead at once.
    pub permanent: bool,
    /// The push subscription is gone (404/410): it is deleted.
    pub subscription_gone: bool,
}

impl SendError {
    fn permanent(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            permanent: true,
            subscription_gone: false,
        }
    }

    fn transient(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            permanent: false,
            subscription_gone: false,
        }
    }
}

/// Per-channel SMTP override in a channel's `config.smtp` (its password is the channel's secret).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpOverride {
    /// Host.
    pub host: String,
    /// Port (default 587).
    #[serde(default)]
    pub port: Option<u16>,
    /// `none`, `starttls` (default) or `tls`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// User name (none: no AUTH).
    #[serde(default)]
    pub username: Option<String>,
    /// `From` address.
    pub from: String,
}

/// A request error with its causes (a refused name says why), never the URL (it may hold a token).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        source = cause.source();
    }
    text
}

/// Sends deliveries. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Sender {
    http: reqwest::Client,
    smtp: Option<SmtpConfig>,
    telegram_api_url: String,
    vapid_subject: String,
    allow_private: bool,
    secrets: std::sync::Arc<crate::secretbox::SecretBox>,
}

impl Sender {
    /// A sender with `cfg`'s SMTP server, Telegram URL and timeouts.
    pub fn new(cfg: &NotifyConfig) -> Result<Sender, NotifyError> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.send_timeout_secs))
            .connect_timeout(Duration::from_secs(cfg.send_timeout_secs.min(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("octoisp-notify/", env!("CARGO_PKG_VERSION")));
        if !cfg.allow_private_targets {
            builder = builder.dns_resolver(super::egress::PublicOnly);
        }
        let http = builder
            .build()
            .map_err(|e| NotifyError::Http(e.without_url().to_string()))?;
        Ok(Sender {
            http,
            smtp: cfg.smtp.clone(),
            telegram_api_url: cfg.telegram_api_url.trim_end_matches('/').to_owned(),
            vapid_subject: cfg.vapid_subject.clone(),
            allow_private: cfg.allow_private_targets,
            secrets: Default::default(),
        })
    }

    /// The same sender, opening sealed channel secrets with `secrets`.
    pub fn with_secrets(mut self, secrets: std::sync::Arc<crate::secretbox::SecretBox>) -> Sender {
        self.secrets = secrets;
        self
    }

    /// The keys that open sealed secrets.
    pub fn secrets(&self) -> &crate::secretbox::SecretBox {
        &self.secrets
    }

    /// `d` with its sealed secret opened (a key that is missing is an error the delivery retries: the operator
    /// may add it to the configuration).
    fn opened(&self, d: &Claimed) -> Result<Option<Claimed>, SendError> {
        let (Some(ct), Some(key_id)) = (&d.secret_ciphertext, &d.secret_key_id) else {
            return Ok(None);
        };
        let aad = crate::secretbox::channel_aad(d.provider_id, d.channel_id);
        let plain = self
            .secrets
            .open(ct, key_id, &aad)
            .map_err(|e| SendError::transient(format!("the channel's secret: {e}")))?;
        Ok(Some(Claimed {
            secret: Some(plain),
            secret_ciphertext: None,
            ..d.clone()
        }))
    }

    /// Sends `d`; `vapid` is the provider's key (web push only).
    pub async fn send(&self, d: &Claimed, vapid: Option<&VapidKey>) -> Result<(), SendError> {
        let opened = self.opened(d)?;
        let d = opened.as_ref().unwrap_or(d);
        match d.kind.as_str() {
            "email" => self.email(d).await,
            "telegram" => self.telegram(d).await,
            "webhook" => self.webhook(d).await,
            "webpush" => self.webpush(d, vapid).await,
            other => Err(SendError::permanent(format!(
                "unknown channel kind `{other}`"
            ))),
        }
    }

    async fn email(&self, d: &Claimed) -> Result<(), SendError> {
        let smtp = match d.config.get("smtp").filter(|v| !v.is_null()) {
            Some(v) => {
                let o: SmtpOverride = serde_json::from_value(v.clone())
                    .map_err(|e| SendError::permanent(format!("channel smtp settings: {e}")))?;
                if !self.allow_private {
                    super::egress::check_host(&o.host, o.port.unwrap_or(587))
                        .await
                        .map_err(SendError::permanent)?;
                }
                SmtpConfig {
                    host: o.host,
                    port: o.port.unwrap_or(587),
                    tls: o.tls,
                    username: o.username,
                    password: d.secret.clone(),
                    from: o.from,
                    timeout_secs: 15,
                }
            }
            None => self.smtp.clone().ok_or_else(|| {
                SendError::permanent(
                    "no SMTP server configured ([notify.smtp] or the channel's smtp)",
                )
            })?,
        };
        let to: Vec<String> = if d.recipient.is_empty() {
            email_targets(&d.config)
        } else {
            vec![d.recipient.clone()]
        };
        smtp.send(&to, &d.subject, &d.body)
            .await
            .map_err(|e| SendError {
                message: e.to_string(),
                permanent: e.is_permanent(),
                subscription_gone: false,
            })
    }

    async fn telegram(&self, d: &Claimed) -> Result<(), SendError> {
        let token = d
            .secret
            .as_deref()
            .ok_or_else(|| SendError::permanent("the channel has no bot token"))?;
        let chat_id = d
            .config
            .get("chat_id")
            .filter(|v| v.is_string() || v.is_number())
            .ok_or_else(|| SendError::permanent("the channel has no chat_id"))?;
        let url = format!("{}/bot{token}/sendMessage", self.telegram_api_url);
        let body = serde_json::json!({
            "chat_id": chat_id,
            "text": format!("{}\n\n{}", d.subject, d.body),
            "disable_web_page_preview": true,
        });
        // reqwest errors name the URL, which carries the token: strip it.
        let resp = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| SendError::transient(format!("Telegram: {}", describe(e))))?;
        check_status("Telegram", resp).await
    }

    async fn webhook(&self, d: &Claimed) -> Result<(), SendError> {
        let url = d
            .config
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| SendError::permanent("the channel has no url"))?;
        if !self.allow_private {
            super::egress::check_url(url).map_err(SendError::permanent)?;
        }
        let secret = d
            .secret
            .as_deref()
            .ok_or_else(|| SendError::permanent("the channel has no signing secret"))?;
        let ts = chrono::Utc::now().timestamp();
        let body = serde_json::json!({
            "delivery_id": d.id,
            "attempt": d.attempts,
            "timestamp": ts,
            "language": d.language,
            "subject": d.subject,
            "text": d.body,
            "notification": d.payload,
        });
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| SendError::permanent(format!("encode the body: {e}")))?;
        let resp = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(secret.as_bytes(), &bytes))
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(DELIVERY_HEADER, d.id.to_string())
            .body(bytes)
            .send()
            .await
            .map_err(|e| SendError::transient(format!("webhook: {}", describe(e))))?;
        check_status("webhook", resp).await
    }

    async fn webpush(&self, d: &Claimed, vapid: Option<&VapidKey>) -> Result<(), SendError> {
        let (Some(endpoint), Some(p256dh), Some(auth)) = (&d.endpoint, &d.p256dh, &d.auth) else {
            return Err(SendError::permanent(
                "the push subscription no longer exists",
            ));
        };
        if !self.allow_private {
            super::egress::check_url(endpoint).map_err(SendError::permanent)?;
        }
        let vapid = vapid.ok_or_else(|| SendError::transient("no VAPID key"))?;
        let mut body = d.body.clone();
        let message = loop {
            let m = serde_json::json!({
                "title": d.subject,
                "body": body,
                "tag": d.payload.get("group_key").cloned().unwrap_or(Value::Null),
                "data": {"delivery_id": d.id, "severity": d.payload.get("severity")},
            });
            let bytes = serde_json::to_vec(&m).unwrap_or_default();
            if bytes.len() <= webpush::MAX_PLAINTEXT || body.is_empty() {
                break bytes;
            }
            let keep = body.chars().count() / 2;
            body = body.chars().take(keep).collect();
        };
        let encrypted = webpush::encrypt(&message, p256dh, auth)
            .map_err(|e| SendError::permanent(e.to_string()))?;
        let authorization = vapid
            .authorization(
                endpoint,
                &self.vapid_subject,
                chrono::Utc::now().timestamp(),
            )
            .map_err(|e| SendError::permanent(e.to_string()))?;
        let urgency = match d.payload.get("severity").and_then(Value::as_str) {
            Some("critical") => "high",
            Some("warning") => "normal",
            _ => "low",
        };
        let resp = self
            .http
            .post(endpoint)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header(reqwest::header::CONTENT_ENCODING, "aes128gcm")
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header("ttl", "86400")
            .header("urgency", urgency)
            .body(encrypted)
            .send()
            .await
            .map_err(|e| SendError::transient(format!("push service: {}", describe(e))))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
            return Err(SendError {
                message: format!("push service: subscription gone ({status})"),
                permanent: true,
                subscription_gone: true,
            });
        }
        check_status("push service", resp).await
    }
}

/// The addresses of an email channel (`config.to`).
pub fn email_targets(config: &Value) -> Vec<String> {
    config
        .get("to")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `sha256=<hex HMAC-SHA256 of body with secret>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

async fn check_status(peer: &str, resp: reqwest::Response) -> Result<(), SendError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    let text: String = text.chars().take(MAX_ERROR_TEXT).collect();
    let message = format!("{peer} answered {status}: {text}");
    let permanent = status.is_client_error()
        && status != reqwest::StatusCode::REQUEST_TIMEOUT
        && status != reqwest::StatusCode::TOO_MANY_REQUESTS;
    Err(SendError {
        message,
        permanent,
        subscription_gone: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_hmac_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
