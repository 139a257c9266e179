//! Logs (`tracing`, text or JSON) and the Prometheus `/metrics` + `/healthz` endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSection};
use crate::outbox::Outbox;

/// Installs the global log subscriber. `RUST_LOG` wins over the configured level.
pub fn init_logs(cfg: &LogSection) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Installs the Prometheus recorder (once per process).
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    Ok(PrometheusBuilder::new().install_recorder()?)
}

/// Serves `/metrics` and `/healthz` on `listen` until `shutdown`, and refreshes the outbox gauges.
pub async fn serve(
    listen: SocketAddr,
    handle: PrometheusHandle,
    outbox: Outbox,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "Metrics endpoint listening.");
    let gauges = tokio::spawn(refresh_outbox_gauges(outbox, shutdown.clone()));
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/healthz", get(|| std::future::ready("ok\n")));
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    gauges.abort();
    Ok(())
}

async fn refresh_outbox_gauges(outbox: Outbox, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ob = outbox.clone();
        let Ok(Ok(s)) = tokio::task::spawn_blocking(move || ob.stats()).await else { continue };
        metrics::gauge!("octoisp_agent_outbox_chunks").set(s.chunks as f64);
        metrics::gauge!("octoisp_agent_outbox_samples").set(s.samples as f64);
        metrics::gauge!("octoisp_agent_outbox_bytes").set(s.bytes as f64);
        metrics::gauge!("octoisp_agent_outbox_batches_pending").set(s.batches_pending as f64);
        metrics::gauge!("octoisp_agent_outbox_dead_letters").set(s.dead_letters as f64);
        metrics::gauge!("octoisp_agent_outbox_samples_dropped_total").set(s.samples_dropped_total as f64);
        metrics::gauge!("octoisp_agent_outbox_records_refused_total").set(s.records_refused_total as f64);
        let age = s.oldest_ms.map(|t| (crate::monitors::ping::now_ms() - t).max(0) as f64 / 1e3).unwrap_or(0.0);
        metrics::gauge!("octoisp_agent_outbox_oldest_age_seconds").set(age);
    }
}
