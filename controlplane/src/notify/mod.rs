//! Notifications: alert events (`alert_events`, written by the alert engine) turned into messages and sent to the
//! tenants' channels (email over SMTP, Telegram, signed webhooks, Web Push).
//!
//! Two loops run in the `workers` role of any number of instances; all their state is in PostgreSQL:
//!
//! - the **dispatcher** ([`dispatch`]) wakes on `LISTEN octoisp_alert_events` (and a fallback poll), finds the
//!   providers with undispatched events (`octoisp_alert_event_providers()`), and per provider, in a tenant
//!   transaction, claims the events of every ready group (`FOR UPDATE SKIP LOCKED`: at once for an ordinary
//!   alert's events, after the grouping window for a POP uplink alert's group, which collects the alerts it
//!   inhibits), marks them dispatched, builds one message per `group_key`, routes it through the
//!   provider's policies and writes one `notification_deliveries` row per (message, channel, recipient), folding
//!   what exceeds a channel's rate limit into a summary. Claiming and writing the deliveries commit together, so an
//!   event becomes deliveries exactly once whatever the number of dispatchers;
//! - the **delivery worker** ([`deliver`]) claims due deliveries (status `sending` with a lease, `SKIP LOCKED`),
//!   sends them ([`send`]) and records the outcome: `sent`, `retrying` with exponential backoff and jitter, or
//!   `dead` after the last attempt (the dead-letter list the API shows and replays). A delivery is sent by the
//!   worker that claimed it; only a worker that dies mid-send (its lease expires) can cause a second send.
//!
//! Texts are rendered per recipient language ([`render`]); Web Push encryption and VAPID are in [`webpush`]; SMTP
//! in [`smtp`] (also the password-reset [`crate::auth::Mailer`]).

pub mod deliver;
pub mod dispatch;
pub mod egress;
pub mod render;
pub mod send;
pub mod smtp;
pub mod webpush;

use std::time::Duration;

use serde::Deserialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use smtp::{SmtpConfig, SmtpMailer, SmtpTls};

/// The channel the alert engine notifies after inserting `alert_events`.
pub const ALERT_EVENTS_CHANNEL: &str = "octoisp_alert_events";
/// The channel the dispatcher (and the API's test sends and replays) notify after writing deliveries.
pub const DELIVERIES_CHANNEL: &str = "octoisp_notification_deliveries";

/// The `[notify]` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Run the dispatcher and the delivery worker in the `workers` role.
    pub enabled: bool,
    /// Events sharing the `group_key` of a POP uplink alert that arrive within this many milliseconds of the group's
    /// first event are sent as one message (other groups cannot grow and are sent at once).
    pub grouping_window_ms: u64,
    /// Fallback poll interval when no PostgreSQL notification arrives, milliseconds.
    pub poll_interval_ms: u64,
    /// Attempts of a delivery before it is dead.
    pub max_attempts: u32,
    /// First retry delay, milliseconds (doubled at each attempt, with jitter).
    pub backoff_base_ms: u64,
    /// Longest retry delay, milliseconds.
    pub backoff_max_ms: u64,
    /// Timeout of one send (HTTP request or SMTP session), seconds; must be shorter than `lease_secs`.
    pub send_timeout_secs: u64,
    /// How long a claimed delivery stays reserved to its worker, seconds.
    pub lease_secs: u64,
    /// Deliveries claimed at once per provider.
    pub delivery_batch: u32,
    /// Sends in flight at once per instance.
    pub max_concurrent_sends: usize,
    /// Base URL of the Telegram Bot API.
    pub telegram_api_url: String,
    /// `sub` claim of the VAPID JWTs (a `mailto:` or `https:` contact for push services).
    pub vapid_subject: String,
    /// The SMTP server of notifications and password-reset mail (channels may override it).
    pub smtp: Option<SmtpConfig>,
    /// Let tenant-chosen destinations (webhook URLs, push endpoints, a channel's SMTP host) reach loopback,
    /// private, link-local and other non-public addresses. Off: a tenant cannot make the control plane call
    /// services on its own network (see `notify::egress`).
    pub allow_private_targets: bool,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            grouping_window_ms: 15_000,
            poll_interval_ms: 5_000,
            max_attempts: 6,
            backoff_base_ms: 2_000,
            backoff_max_ms: 600_000,
            send_timeout_secs: 15,
            lease_secs: 120,
            delivery_batch: 50,
            max_concurrent_sends: 16,
            telegram_api_url: "https://api.telegram.org".into(),
            vapid_subject: "mailto:noc@octoisp.invalid".into(),
            smtp: None,
            allow_private_targets: false,
        }
    }
}

impl NotifyConfig {
    /// Checks the values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.poll_interval_ms == 0 || self.max_attempts == 0 || self.delivery_batch == 0 {
            return Err(
                "notify.poll_interval_ms, max_attempts and delivery_batch must be > 0".into(),
            );
        }
        if self.max_concurrent_sends == 0 {
            return Err("notify.max_concurrent_sends must be > 0".into());
        }
        if self.send_timeout_secs == 0 || self.send_timeout_secs * 2 > self.lease_secs {
            return Err(
                "notify.send_timeout_secs must be > 0 and at most half of notify.lease_secs".into(),
            );
        }
        if self.backoff_base_ms == 0 || self.backoff_max_ms < self.backoff_base_ms {
            return Err("notify.backoff_base_ms must be > 0 and <= notify.backoff_max_ms".into());
        }
        if !self.telegram_api_url.starts_with("http://")
            && !self.telegram_api_url.starts_with("https://")
        {
            return Err("notify.telegram_api_url must be an http(s) URL".into());
        }
        if !self.vapid_subject.starts_with("mailto:") && !self.vapid_subject.starts_with("https://")
        {
            return Err("notify.vapid_subject must start with mailto: or https://".into());
        }
        if let Some(smtp) = &self.smtp {
            smtp.validate().map_err(|e| format!("notify.smtp.{e}"))?;
        }
        Ok(())
    }

    /// The grouping window.
    pub fn grouping_window(&self) -> Duration {
        Duration::from_millis(self.grouping_window_ms)
    }
}

/// Errors of the notifier's loops (a send failing is not one: it is recorded on its delivery).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A query failed.
    #[error("database error while trying to {op}: {source}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// The error.
        source: sqlx::Error,
    },
    /// Opening a tenant transaction failed.
    #[error(transparent)]
    Tx(#[from] crate::db::DbError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

impl NotifyError {
    /// Wraps a query error with the operation it belongs to.
    pub fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> NotifyError {
        move |source| NotifyError::Db { op, source }
    }
}

/// Starts the dispatcher and the delivery worker on `tracker`; they stop when `shutdown` is cancelled.
/// `secrets` opens the channels' sealed secrets.
pub fn spawn(
    pool: PgPool,
    cfg: NotifyConfig,
    secrets: std::sync::Arc<crate::secretbox::SecretBox>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), NotifyError> {
    let sender = send::Sender::new(&cfg)?.with_secrets(secrets);
    let (p, c, sd) = (pool.clone(), cfg.clone(), shutdown.clone());
    tracker.spawn(async move { dispatch::run(p, c, sd).await });
    tracker.spawn(async move { deliver::run(pool, cfg, sender, shutdown).await });
    Ok(())
}

/// The wake-up loop both workers share: `LISTEN channel` on a dedicated connection (re-established after
/// errors) and a fallback poll; `work` runs after each wake-up and, while it reports more work, again at once.
pub(crate) async fn wake_loop<F, Fut>(
    pool: &PgPool,
    channel: &'static str,
    poll: Duration,
    shutdown: &CancellationToken,
    mut work: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<WorkOutcome, NotifyError>>,
{
    let mut listener: Option<sqlx::postgres::PgListener> = None;
    loop {
        if listener.is_none() {
            match sqlx::postgres::PgListener::connect_with(pool).await {
                Ok(mut l) => match l.listen(channel).await {
                    Ok(()) => listener = Some(l),
                    Err(err) => tracing::warn!(channel, error = %err, "Cannot LISTEN; polling."),
                },
                Err(err) => {
                    tracing::warn!(channel, error = %err, "Cannot open a LISTEN connection; polling.")
                }
            }
        }
        let mut next = poll;
        match work().await {
            Ok(WorkOutcome::More) => next = Duration::ZERO,
            Ok(WorkOutcome::RetryIn(d)) => next = next.min(d),
            Ok(WorkOutcome::Idle) => {}
            Err(err) => {
                tracing::warn!(channel, error = %err, "Notification work failed; retrying.")
            }
        }
        if next.is_zero() {
            if shutdown.is_cancelled() {
                return;
            }
            continue;
        }
        let wait = async {
            match listener.as_mut() {
                Some(l) => match tokio::time::timeout(next, l.recv()).await {
                    Ok(Ok(_)) | Err(_) => {}
                    Ok(Err(err)) => {
                        tracing::warn!(channel, error = %err, "LISTEN connection lost.");
                        listener = None;
                    }
                },
                None => tokio::time::sleep(next).await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wait => {}
        }
    }
}

/// What a round of work found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkOutcome {
    /// Nothing left to do now.
    Idle,
    /// More is ready: run again at once.
    More,
    /// Something becomes ready after this delay (a grouping window, a retry).
    RetryIn(Duration),
}
