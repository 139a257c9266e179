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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Buckets of every histogram of the agent, seconds (without them a histogram renders as a summary, which
/// cannot be aggregated across agents).
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The recorder with the buckets of the agent's histograms (docs/OPERATIONS.md, "Prometheus metrics").
pub fn builder() -> anyhow::Result<PrometheusBuilder> {
    Ok(PrometheusBuilder::new().set_buckets(SECONDS_BUCKETS)?)
}

/// Installs the Prometheus recorder (once per process).
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    Ok(builder()?.install_recorder()?)
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
    let outbox_for_status = outbox.clone();
    let gauges = tokio::spawn(refresh_outbox_gauges(outbox, shutdown.clone()));
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/healthz", get(|| std::future::ready("ok\n")))
        .route("/status", get(move || status(outbox_for_status.clone())));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    gauges.abort();
    Ok(())
}

/// `/status`: the outbox statistics as JSON, what `octoisp-agent status` shows while the daemon runs (the
/// daemon holds the outbox file exclusively).
async fn status(
    outbox: Outbox,
) -> Result<axum::Json<crate::outbox::OutboxStats>, (axum::http::StatusCode, String)> {
    let internal = |e: String| (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e);
    let stats = tokio::task::spawn_blocking(move || outbox.stats())
        .await
        .map_err(|e| internal(e.to_string()))?;
    stats.map(axum::Json).map_err(|e| internal(e.to_string()))
}

/// Asks a running daemon for its outbox statistics through its metrics endpoint; `None` when none answers.
pub fn fetch_status(listen: SocketAddr) -> Option<crate::outbox::OutboxStats> {
    use std::io::{Read, Write};
    let addr = if listen.ip().is_unspecified() {
        SocketAddr::new(
            if listen.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            },
            listen.port(),
        )
    } else {
        listen
    };
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    conn.write_all(b"GET /status HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut reply = Vec::new();
    conn.take(1 << 20).read_to_end(&mut reply).ok()?;
    let body_at = reply.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if !reply.starts_with(b"HTTP/1.1 200") && !reply.starts_with(b"HTTP/1.0 200") {
        return None;
    }
    serde_json::from_slice(&reply[body_at..]).ok()
}

async fn refresh_outbox_gauges(outbox: Outbox, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ob = outbox.clone();
        let Ok(Ok(s)) = tokio::task::spawn_blocking(move || ob.stats()).await else {
            continue;
        };
        metrics::gauge!("octoisp_agent_outbox_chunks").set(s.chunks as f64);
        metrics::gauge!("octoisp_agent_outbox_samples").set(s.samples as f64);
        metrics::gauge!("octoisp_agent_outbox_bytes").set(s.bytes as f64);
        metrics::gauge!("octoisp_agent_outbox_batches_pending").set(s.batches_pending as f64);
        metrics::gauge!("octoisp_agent_outbox_dead_letters").set(s.dead_letters as f64);
        metrics::gauge!("octoisp_agent_outbox_samples_dropped_total")
            .set(s.samples_dropped_total as f64);
        metrics::gauge!("octoisp_agent_outbox_records_refused_total")
            .set(s.records_refused_total as f64);
        let age = s
            .oldest_ms
            .map(|t| (crate::monitors::ping::now_ms() - t).max(0) as f64 / 1e3)
            .unwrap_or(0.0);
        metrics::gauge!("octoisp_agent_outbox_oldest_age_seconds").set(age);
    }
}
