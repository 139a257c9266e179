//! The delivery worker: claims due deliveries, sends them, records the outcome.
//!
//! Claiming is one statement in a tenant transaction: due rows (`pending`/`retrying` whose `next_attempt_at` has
//! come, or `sending` whose lease expired) are locked `FOR UPDATE SKIP LOCKED`, set `sending` with a lease and their
//! attempt counted, and the transaction commits before any send. Another worker neither sees them due nor can lock
//! them, so each claimed delivery is sent by its claimer only. After the send: `sent`; or `retrying` at
//! `now + backoff` (exponential, with jitter); or `dead` after `max_attempts` or a permanent error.

use std::time::Duration;

use futures::StreamExt as _;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db;
use crate::notify::send::{Claimed, SendError, Sender};
use crate::notify::webpush;
use crate::notify::{DELIVERIES_CHANNEL, NotifyConfig, NotifyError, WorkOutcome, wake_loop};

/// Runs the delivery worker until `shutdown`.
pub async fn run(pool: PgPool, cfg: NotifyConfig, sender: Sender, shutdown: CancellationToken) {
    let poll = Duration::from_millis(cfg.poll_interval_ms);
    tracing::info!("Notification delivery worker started.");
    wake_loop(&pool, DELIVERIES_CHANNEL, poll, &shutdown, || {
        deliver_all(&pool, &cfg, &sender)
    })
    .await;
}

/// The delay before attempt `attempt + 1`, after `attempt` failed: `base * 2^(attempt-1)` capped at `max`, of
/// which a random half (`jitter` in `[0, 1)`) is kept, so that retries of a storm spread out.
pub fn backoff(attempt: u32, base_ms: u64, max_ms: u64, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let full = base_ms.saturating_mul(1u64 << exp).min(max_ms);
    let half = full / 2;
    Duration::from_millis(half + (half as f64 * jitter.clamp(0.0, 1.0)) as u64)
}

/// One round over every provider with due deliveries.
pub async fn deliver_all(
    pool: &PgPool,
    cfg: &NotifyConfig,
    sender: &Sender,
) -> Result<WorkOutcome, NotifyError> {
    let providers: Vec<Uuid> =
        sqlx::query_scalar("SELECT p FROM octoisp_notification_delivery_providers() AS p")
            .fetch_all(pool)
            .await
            .map_err(NotifyError::db("list providers with due deliveries"))?;
    let mut outcome = WorkOutcome::Idle;
    for provider in providers {
        match deliver_provider(pool, cfg, sender, provider).await {
            Ok(o) => {
                outcome = match (outcome, o) {
                    (WorkOutcome::More, _) | (_, WorkOutcome::More) => WorkOutcome::More,
                    (WorkOutcome::RetryIn(a), WorkOutcome::RetryIn(b)) => {
                        WorkOutcome::RetryIn(a.min(b))
                    }
                    (WorkOutcome::RetryIn(a), _) | (_, WorkOutcome::RetryIn(a)) => {
                        WorkOutcome::RetryIn(a)
                    }
                    _ => WorkOutcome::Idle,
                }
            }
            Err(err) => {
                tracing::warn!(provider = %provider, error = %err, "Sending notifications failed.");
            }
        }
    }
    Ok(outcome)
}

/// Claims, sends and settles one batch of `provider`'s due deliveries.
pub async fn deliver_provider(
    pool: &PgPool,
    cfg: &NotifyConfig,
    sender: &Sender,
    provider: Uuid,
) -> Result<WorkOutcome, NotifyError> {
    let mut tx = db::tenant_tx(pool, provider).await?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "WITH due AS ( \
             SELECT id FROM notification_deliveries \
             WHERE provider_id = $1 AND ((status IN ('pending', 'retrying') AND next_attempt_at <= now()) \
                                         OR (status = 'sending' AND claimed_until < now())) \
             ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         UPDATE notification_deliveries d \
         SET status = 'sending', attempts = d.attempts + 1, claimed_until = now() + make_interval(secs => $3) \
         FROM due WHERE d.provider_id = $1 AND d.id = due.id RETURNING d.id",
    )
    .bind(provider)
    .bind(i64::from(cfg.delivery_batch))
    .bind(cfg.lease_secs as f64)
    .fetch_all(&mut *tx)
    .await
    .map_err(NotifyError::db("claim deliveries"))?;
    if ids.is_empty() {
        tx.rollback()
            .await
            .map_err(NotifyError::db("end the claim"))?;
        return Ok(WorkOutcome::Idle);
    }
    let claimed: Vec<Claimed> = sqlx::query_as(
        "SELECT d.id, d.provider_id, d.channel_id, c.kind, c.config, c.secret, \
                c.secret_ciphertext, c.secret_key_id, d.recipient, d.subject, d.body, \
                d.payload, d.attempts, d.language, s.endpoint, s.p256dh, s.auth \
         FROM notification_deliveries d \
         JOIN notification_channels c ON c.provider_id = d.provider_id AND c.id = d.channel_id \
         LEFT JOIN push_subscriptions s ON c.kind = 'webpush' AND s.provider_id = d.provider_id \
              AND s.id::text = d.recipient \
         WHERE d.provider_id = $1 AND d.id = ANY($2)",
    )
    .bind(provider)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await
    .map_err(NotifyError::db("read claimed deliveries"))?;
    let vapid = if claimed.iter().any(|d| d.kind == "webpush") {
        match webpush::vapid_key(&mut tx, provider, sender.secrets()).await {
            Ok(k) => Some(k),
            Err(err) => {
                tracing::warn!(provider = %provider, error = %err, "No VAPID key: push deliveries will be retried.");
                None
            }
        }
    } else {
        None
    };
    tx.commit()
        .await
        .map_err(NotifyError::db("commit the claim"))?;

    let full_batch = ids.len() as u32 >= cfg.delivery_batch;
    let vapid = vapid.as_ref();
    let results: Vec<(Claimed, Result<(), SendError>)> = futures::stream::iter(claimed)
        .map(|d| async move {
            let started = std::time::Instant::now();
            let r = sender.send(&d, vapid).await;
            metrics::histogram!("octoisp_notify_send_seconds", "kind" => d.kind.clone())
                .record(started.elapsed().as_secs_f64());
            (d, r)
        })
        .buffer_unordered(cfg.max_concurrent_sends)
        .collect()
        .await;

    let mut next_retry: Option<Duration> = None;
    let mut sent: Vec<Uuid> = Vec::new();
    let mut tx = db::tenant_tx(pool, provider).await?;
    for (d, result) in results {
        match result {
            Ok(()) => {
                sent.push(d.id);
                metrics::counter!("octoisp_notify_deliveries_total", "kind" => d.kind.clone(), "outcome" => "sent")
                    .increment(1);
                tracing::debug!(delivery = %d.id, channel = %d.channel_id, kind = %d.kind, "Notification sent.");
            }
            Err(err) => {
                if err.subscription_gone
                    && let Ok(sub) = Uuid::parse_str(&d.recipient)
                {
                    sqlx::query(
                        "DELETE FROM push_subscriptions WHERE provider_id = $1 AND id = $2",
                    )
                    .bind(provider)
                    .bind(sub)
                    .execute(&mut *tx)
                    .await
                    .map_err(NotifyError::db("delete a gone push subscription"))?;
                }
                let attempts = u32::try_from(d.attempts).unwrap_or(u32::MAX);
                if err.permanent || attempts >= cfg.max_attempts {
                    sqlx::query(
                        "UPDATE notification_deliveries SET status = 'dead', claimed_until = NULL, last_error = $3 \
                         WHERE provider_id = $1 AND id = $2 AND status = 'sending'",
                    )
                    .bind(provider)
                    .bind(d.id)
                    .bind(&err.message)
                    .execute(&mut *tx)
                    .await
                    .map_err(NotifyError::db("record a dead delivery"))?;
                    metrics::counter!("octoisp_notify_deliveries_total", "kind" => d.kind.clone(), "outcome" => "dead")
                        .increment(1);
                    tracing::warn!(delivery = %d.id, channel = %d.channel_id, kind = %d.kind, attempts,
                        error = %err.message, "Notification dead after its last attempt.");
                } else {
                    let delay = backoff(
                        attempts,
                        cfg.backoff_base_ms,
                        cfg.backoff_max_ms,
                        rand::random::<f64>(),
                    );
                    sqlx::query(
                        "UPDATE notification_deliveries SET status = 'retrying', claimed_until = NULL, last_error = $3, \
                         next_attempt_at = now() + make_interval(secs => $4) \
                         WHERE provider_id = $1 AND id = $2 AND status = 'sending'",
                    )
                    .bind(provider)
                    .bind(d.id)
                    .bind(&err.message)
                    .bind(delay.as_secs_f64())
                    .execute(&mut *tx)
                    .await
                    .map_err(NotifyError::db("schedule a retry"))?;
                    metrics::counter!("octoisp_notify_deliveries_total", "kind" => d.kind.clone(), "outcome" => "retry")
                        .increment(1);
                    tracing::info!(delivery = %d.id, channel = %d.channel_id, kind = %d.kind, attempts,
                        retry_in_ms = delay.as_millis() as u64, error = %err.message, "Notification failed; will retry.");
                    next_retry = Some(next_retry.map_or(delay, |n| n.min(delay)));
                }
            }
        }
    }
    if !sent.is_empty() {
        sqlx::query(
            "UPDATE notification_deliveries SET status = 'sent', sent_at = now(), claimed_until = NULL, \
             last_error = NULL WHERE provider_id = $1 AND id = ANY($2) AND status = 'sending'",
        )
        .bind(provider)
        .bind(&sent)
        .execute(&mut *tx)
        .await
        .map_err(NotifyError::db("record sent deliveries"))?;
    }
    tx.commit()
        .await
        .map_err(NotifyError::db("record delivery outcomes"))?;
    Ok(if full_batch {
        WorkOutcome::More
    } else if let Some(d) = next_retry {
        WorkOutcome::RetryIn(d)
    } else {
        WorkOutcome::Idle
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_keeps_at_least_half() {
        assert_eq!(backoff(1, 1000, 60_000, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(1, 1000, 60_000, 1.0), Duration::from_millis(1000));
        assert_eq!(backoff(3, 1000, 60_000, 1.0), Duration::from_millis(4000));
        assert_eq!(
            backoff(30, 1000, 60_000, 1.0),
            Duration::from_millis(60_000)
        );
        assert_eq!(
            backoff(u32::MAX, 1000, 60_000, 0.5),
            Duration::from_millis(45_000)
        );
    }
}
