//! `octoisp-agent run`: the POP daemon. Opens the outbox, starts the monitors, the uplink (when enrolled) and
//! the metrics endpoint, and on SIGTERM/SIGINT stops them all within a grace period, losing nothing: every
//! sample a monitor measured is either committed to the outbox or was never acknowledged to anyone.

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::outbox::{Outbox, OutboxConfig, Synchronous};
use crate::{central, commands, identity, telemetry, uplink};

/// How long shutdown waits for tasks before giving up on them.
pub const GRACE: Duration = Duration::from_secs(10);

/// Opens the outbox described by `cfg`.
pub fn open_outbox(cfg: &Config) -> anyhow::Result<Outbox> {
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("cannot create state_dir {}", cfg.state_dir.display()))?;
    let o = &cfg.outbox;
    Outbox::open(OutboxConfig {
        path: cfg.outbox_path(),
        max_bytes: o.max_mb << 20,
        hard_ceiling_bytes: o.hard_ceiling_mb << 20,
        synchronous: match o.synchronous {
            crate::config::SyncMode::Full => Synchronous::Full,
            crate::config::SyncMode::Normal => Synchronous::Normal,
        },
        batch_max_samples: o.batch_max_samples,
        batch_max_bytes: o.batch_max_bytes,
        zstd_level: o.zstd_level,
    })
    .with_context(|| format!("cannot open the outbox {}", cfg.outbox_path().display()))
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let outbox = open_outbox(&cfg)?;
    let tracker = TaskTracker::new();
    if let Some(listen) = cfg.metrics.listen {
        let handle = telemetry::init_metrics()?;
        let (ob, sd) = (outbox.clone(), shutdown.clone());
        tracker.spawn(async move {
            if let Err(err) = telemetry::serve(listen, handle, ob, sd).await {
                tracing::error!(error = %err, "Metrics endpoint failed.");
            }
        });
    }
    // Monitors, SNMP and the ACS, from the local file merged with the persisted central configuration.
    let runtime = central::Runtime::start(
        cfg.clone(),
        outbox.clone(),
        tracker.clone(),
        shutdown.clone(),
    )
    .await?;
    if runtime.version() > 0 {
        tracing::info!(
            version = runtime.version(),
            "Central configuration in force."
        );
    }
    let executor = commands::Executor::start(
        &cfg.commands,
        outbox.clone(),
        Some(runtime.clone()),
        tracker.clone(),
        shutdown.clone(),
    )
    .await
    .context("cannot start the command executor")?;
    {
        let (exec, sd) = (executor.clone(), shutdown.clone());
        tracker.spawn(async move {
            let mut hourly = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = sd.cancelled() => return,
                    _ = hourly.tick() => exec.prune().await,
                }
            }
        });
    }

    let id_dir = cfg.identity_dir();
    match identity::Identity::load(&id_dir) {
        Ok(Some(id)) => {
            let server = cfg
                .uplink
                .server
                .clone()
                .unwrap_or_else(|| id.server.clone());
            tracing::info!(agent = %id.agent_id, %server, "Enrolled: uploading to the control plane.");
            let ucfg = uplink::UplinkConfig {
                server,
                identity_dir: id_dir,
                max_in_flight: cfg.uplink.max_in_flight,
                backoff_min: Duration::from_millis(cfg.uplink.backoff_min_ms),
                backoff_max: Duration::from_millis(cfg.uplink.backoff_max_ms),
            };
            let (ob, sd) = (outbox.clone(), shutdown.clone());
            tracker.spawn(async move {
                if let Err(err) = uplink::run_with_commands(ucfg, ob, Some(executor), sd).await {
                    tracing::error!(error = %err, "Uplink stopped.");
                }
            });
        }
        Ok(None) => tracing::warn!(
            dir = %id_dir.display(),
            "Not enrolled: running standalone, collecting into the outbox (run `octoisp-agent enroll`)."
        ),
        Err(err) => return Err(err).context("cannot read the enrolled identity"),
    }
    tracker.close();
    shutdown.cancelled().await;
    tracing::info!("Shutting down.");
    if tokio::time::timeout(GRACE, tracker.wait()).await.is_err() {
        tracing::warn!("Some tasks did not stop within the grace period.");
    }
    let stats = tokio::task::spawn_blocking(move || outbox.stats()).await??;
    tracing::info!(
        samples = stats.samples,
        batches = stats.batches_pending,
        "Stopped; outbox kept."
    );
    Ok(())
}

/// Cancels `token` on SIGTERM or SIGINT.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(err) => {
                        tracing::error!(error = %err, "Cannot watch SIGTERM.");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        token.cancel();
    });
}
