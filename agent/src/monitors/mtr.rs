//! Continuous MTR: the path to each target is traced without pause, `cycles` rounds at a time; each batch of
//! rounds becomes per-hop samples (loss, avg/best/worst RTT, jitter) labelled with the hop's TTL and address,
//! so a graph shows where on the path loss or latency appears, and when the path changes.
//!
//! trippy-core runs on a blocking thread per target (its engine is synchronous); MTR monitors are meant for
//! tens of paths per POP, ping monitors for thousands of targets.

use std::net::IpAddr;
use std::time::Duration;

use octoisp_shared::{MetricKind, Sample};
use tokio_util::sync::CancellationToken;

use crate::config::MtrMonitor;
use crate::diag::stats::HopReport;
use crate::diag::trace::{self, TraceOptions, TraceProtocol};
use crate::monitors::ping::now_ms;
use crate::outbox::Outbox;

/// A bad MTR monitor configuration.
#[derive(Debug, thiserror::Error)]
#[error("unknown MTR protocol {0:?} (expected icmp, udp or tcp)")]
pub struct BadProtocol(String);

/// The monitor of one path.
#[derive(Debug)]
pub struct MtrTask {
    monitor: String,
    target: IpAddr,
    opts: TraceOptions,
    outbox: Outbox,
}

impl MtrTask {
    /// Prepares the monitor of the path to `target`.
    pub fn new(cfg: &MtrMonitor, target: IpAddr, outbox: Outbox) -> Result<MtrTask, BadProtocol> {
        let protocol = match cfg.protocol.as_str() {
            "icmp" => TraceProtocol::Icmp,
            "udp" => TraceProtocol::Udp,
            "tcp" => TraceProtocol::Tcp,
            other => return Err(BadProtocol(other.to_owned())),
        };
        Ok(MtrTask {
            monitor: cfg.name.clone(),
            target,
            opts: TraceOptions {
                protocol,
                rounds: cfg.cycles.max(1),
                interval: Duration::from_millis(cfg.interval_ms),
                tos: cfg.dscp.map_or(0, |d| d << 2),
                ..TraceOptions::default()
            },
            outbox,
        })
    }

    /// Traces until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let (target, opts) = (self.target, self.opts.clone());
            let job =
                tokio::task::spawn_blocking(move || trace::run_blocking(target, &opts, |_| {}));
            let table = tokio::select! {
                _ = shutdown.cancelled() => return,
                done = job => done,
            };
            match table {
                Ok(Ok(table)) => self.store(&table.report()).await,
                Ok(Err(err)) => {
                    tracing::error!(target = %self.target, error = %err, "MTR round failed.");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                    }
                }
                Err(err) => {
                    tracing::error!(target = %self.target, error = %err, "MTR thread failed.")
                }
            }
        }
    }

    async fn store(&self, hops: &[HopReport]) {
        let ts_ms = now_ms();
        let device_key = format!("path:{}", self.target);
        let mut samples = Vec::new();
        for hop in hops {
            let labels = vec![
                ("monitor".to_owned(), self.monitor.clone()),
                ("hop".to_owned(), hop.ttl.to_string()),
                (
                    "ip".to_owned(),
                    hop.ip.map_or_else(|| "???".to_owned(), |ip| ip.to_string()),
                ),
            ];
            for (metric, value) in hop_values(hop) {
                let Some(value) = value else { continue };
                match self
                    .outbox
                    .series_id(&device_key, metric, &labels, MetricKind::Gauge)
                {
                    Ok(series) => samples.push(Sample {
                        series,
                        ts_ms,
                        value,
                    }),
                    Err(err) => {
                        tracing::error!(target = %self.target, error = %err, "MTR series not registered.");
                    }
                }
            }
        }
        if let Err(err) = self.outbox.append_samples(samples).await {
            tracing::error!(target = %self.target, error = %err, "MTR samples not stored.");
        }
    }
}

/// The samples of one hop (`None`: no value, e.g. RTTs of a hop that never answered).
fn hop_values(hop: &HopReport) -> [(&'static str, Option<f64>); 5] {
    let s = &hop.stats;
    [
        ("mtr.loss_ratio", Some(s.loss_pct / 100.0)),
        ("mtr.rtt_avg_ms", s.avg_ms),
        ("mtr.rtt_best_ms", s.min_ms),
        ("mtr.rtt_worst_ms", s.max_ms),
        ("mtr.jitter_ms", s.jitter_ms),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::stats::RttSummary;

    #[test]
    fn silent_hop_reports_only_loss() {
        let hop = HopReport {
            ttl: 2,
            ip: None,
            addrs: vec![],
            stats: RttSummary::from_probes(&[None, None]),
            probes: vec![None, None],
            mpls: vec![],
        };
        let v = hop_values(&hop);
        assert_eq!(v[0], ("mtr.loss_ratio", Some(1.0)));
        assert!(v[1..].iter().all(|(_, x)| x.is_none()));
    }
}
