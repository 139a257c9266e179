//! The uplink: one QUIC connection (mutual TLS) to the control plane that drains the outbox.
//!
//! ```text
//! run ── loop ──▶ load identity ──▶ connect (mTLS, SNI SERVER_NAME, only the enrolled CA trusted)
//!                                     │ control stream: Hello ──▶ Welcome | Reject
//!                                     ▼
//!                 session: pending batches first, then new ones (next_batch), each on its own stream,
//!                          at most min(Welcome.max_in_flight, UplinkConfig.max_in_flight) at once;
//!                          heartbeats with the outbox stats on the control stream;
//!                          command streams opened by the control plane go to `crate::commands::Executor`
//!                 ◀── lost / rejected: back off (0.5 s → 30 s, jittered; a rejection waits the maximum)
//! ```
//!
//! What happens to a batch:
//!
//! | answer | action |
//! | --- | --- |
//! | `Ack` | `outbox.ack(seq)`: the batch leaves the outbox (only now) |
//! | `Nack::Retry` | sent again after `retry_after_ms` |
//! | `Nack::UnknownSeries(ids)` | `outbox.reform_with_series(seq, ids)` and sent again at once (same seq) |
//! | `Nack::Malformed` | `outbox.abandon(seq, reason)`: dead-lettered, logged, counted and reported upstream |
//! | stream or connection lost | nothing: the batch is still in the outbox and is sent again after reconnecting |
//!
//! Shutdown stops forming batches, gives the batches in flight a short grace period to be acknowledged, then
//! closes the connection cleanly. Whatever is unacknowledged stays in the outbox for the next start.
//!
//! Metrics: `octoisp_agent_uplink_connected`, `octoisp_agent_uplink_batches_in_flight` (gauges),
//! `octoisp_agent_uplink_ack_seconds` (histogram), `octoisp_agent_uplink_{batches,samples,records}_acked_total`,
//! `octoisp_agent_uplink_batches_nacked_total{code}`, `octoisp_agent_uplink_batches_abandoned_total`,
//! `octoisp_agent_uplink_reconnects_total`, `octoisp_agent_uplink_rejects_total{code}`.

pub mod dial;
mod session;
pub mod wire;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::identity::Identity;
use crate::outbox::Outbox;

pub use session::SessionEnd;

/// How often an agent that is not enrolled yet looks for an identity.
const IDENTITY_POLL: Duration = Duration::from_secs(5);
/// A session that lasted this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// Settings of the uplink.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// `HOST:PORT` of the control plane's QUIC ingest, resolved again on every connection attempt.
    pub server: String,
    /// Directory of the enrolled identity (`<state_dir>/identity`), read on every connection attempt.
    pub identity_dir: PathBuf,
    /// Most batches in flight at once; the control plane's `Welcome::max_in_flight` may lower it.
    pub max_in_flight: u16,
    /// First reconnect delay (it doubles, with jitter, up to `backoff_max`).
    pub backoff_min: Duration,
    /// Longest reconnect delay; also the delay after the control plane rejected the agent.
    pub backoff_max: Duration,
}

impl UplinkConfig {
    /// The defaults for `server` and `identity_dir`: 8 batches in flight, backoff 0.5 s → 30 s.
    pub fn new(server: impl Into<String>, identity_dir: impl Into<PathBuf>) -> UplinkConfig {
        UplinkConfig {
            server: server.into(),
            identity_dir: identity_dir.into(),
            max_in_flight: 8,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Drains `outbox` to the control plane until `shutdown` is cancelled, reconnecting as needed. Returns `Ok` on
/// shutdown; it does not give up on errors (they are logged and retried with backoff).
pub async fn run(
    cfg: UplinkConfig,
    outbox: Outbox,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with_commands(cfg, outbox, None, shutdown).await
}

/// [`run`], and serves the command streams the control plane opens with `commands` (without it, such
/// streams are never accepted).
pub async fn run_with_commands(
    cfg: UplinkConfig,
    outbox: Outbox,
    commands: Option<crate::commands::Executor>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if cfg.max_in_flight == 0 {
        anyhow::bail!("uplink max_in_flight must be at least 1");
    }
    let started = Instant::now();
    let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
    let mut warned_not_enrolled = false;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let identity = match Identity::load(&cfg.identity_dir) {
            Ok(Some(identity)) => identity,
            Ok(None) => {
                if !warned_not_enrolled {
                    tracing::warn!(dir = %cfg.identity_dir.display(), "Not enrolled yet; the uplink waits for an identity.");
                    warned_not_enrolled = true;
                }
                if sleep_or_shutdown(IDENTITY_POLL, &shutdown).await {
                    return Ok(());
                }
                continue;
            }
            Err(err) => {
                tracing::error!(error = %err, "Cannot read the enrolled identity; retrying.");
                if sleep_or_shutdown(cfg.backoff_max, &shutdown).await {
                    return Ok(());
                }
                continue;
            }
        };
        let attempt_started = Instant::now();
        let end = session::run(
            &cfg,
            &identity,
            &outbox,
            commands.as_ref(),
            &shutdown,
            started,
        )
        .await;
        metrics::gauge!("octoisp_agent_uplink_connected").set(0.0);
        metrics::gauge!("octoisp_agent_uplink_batches_in_flight").set(0.0);
        let delay = match end {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Lost { error, connected } => {
                if connected && attempt_started.elapsed() >= STABLE_SESSION {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::warn!(server = %cfg.server, error = %error, retry_in = ?delay, "Uplink down; reconnecting.");
                delay
            }
            SessionEnd::Rejected { code, message } => {
                metrics::counter!("octoisp_agent_uplink_rejects_total", "code" => format!("{code:?}")).increment(1);
                let delay = if code == octoisp_shared::RejectCode::Unavailable {
                    backoff.next_delay()
                } else {
                    backoff.saturate()
                };
                tracing::error!(
                    server = %cfg.server, code = ?code, reason = %message, retry_in = ?delay,
                    "The control plane rejected this agent."
                );
                delay
            }
        };
        metrics::counter!("octoisp_agent_uplink_reconnects_total").increment(1);
        if sleep_or_shutdown(delay, &shutdown).await {
            return Ok(());
        }
    }
}

/// Sleeps for `delay`; `true` when shutdown came first.
async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

/// Exponential backoff with jitter: the n-th delay is drawn from `[base/2, base]` with `base = min·2ⁿ` capped at
/// `max`.
#[derive(Debug, Clone)]
struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }

    fn next_delay(&mut self) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        jitter(base)
    }

    /// The longest delay, for refusals that will not clear up quickly.
    fn saturate(&mut self) -> Duration {
        self.attempt = 20;
        jitter(self.max)
    }
}

fn jitter(base: Duration) -> Duration {
    let half = base / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let first = b.next_delay();
        assert!(
            first >= Duration::from_millis(250) && first <= Duration::from_millis(500),
            "{first:?}"
        );
        for _ in 0..30 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(30), "{d:?}");
        }
        let late = b.next_delay();
        assert!(late >= Duration::from_secs(15), "{late:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(500));
    }
}
