//! Logs (`tracing`, text or JSON) and the Prometheus recorder of the control plane.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSection};

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

/// Default buckets of every histogram, seconds (a histogram without buckets would render as a summary, which
/// cannot be aggregated across instances).
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Buckets of the ingest lag, seconds: from a live sample to one kept hours in an agent's outbox.
const LAG_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
];

/// The recorder with the buckets of every histogram of the control plane (docs/OPERATIONS.md, "Prometheus
/// metrics").
pub fn builder() -> anyhow::Result<PrometheusBuilder> {
    Ok(PrometheusBuilder::new()
        .set_buckets(SECONDS_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(crate::api::http_metrics::DURATION.to_owned()),
            crate::api::http_metrics::DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("octoisp_ingest_lag_seconds".to_owned()),
            LAG_BUCKETS,
        )?)
}

/// Installs the Prometheus recorder (once per process).
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    Ok(builder()?.install_recorder()?)
}
