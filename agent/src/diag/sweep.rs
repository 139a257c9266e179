//! IP sweep: which addresses of some ranges answer ICMP echo (or, optionally, a TCP connection attempt on
//! chosen ports: an accepted or refused connection both prove a live host), with the best RTT and the
//! reverse DNS name of each live host. Probes go out at a fixed rate, spread evenly: with raw sockets from
//! one batched send loop ([`crate::diag::echo`]), otherwise through the per-probe engine of
//! [`crate::diag::ping`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::diag::echo::Wait;
use crate::diag::ping::{self, IcmpEngine, PingOptions};
use crate::diag::{echo, rdns, safety};

/// Options of a sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Echo requests per address.
    pub count: u64,
    /// How long to wait for a reply.
    pub timeout: Duration,
    /// Probes per second (the process-wide cap still applies).
    pub rate: u32,
    /// TCP ports to try on addresses that did not answer ICMP.
    pub tcp_ports: Vec<u16>,
    /// Look up the names of live hosts.
    pub reverse_dns: bool,
}

/// A live host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveHost {
    /// Its address.
    pub ip: IpAddr,
    /// Best RTT, ms.
    pub rtt_ms: f64,
    /// What answered: `icmp`, or `tcp/PORT`.
    pub via: String,
    /// Reverse DNS name.
    pub name: Option<String>,
}

/// Sweeps `hosts`, waiting `opts.timeout` after the last probe; live hosts in address order.
pub async fn sweep(
    engine: &IcmpEngine,
    hosts: &[IpAddr],
    opts: &SweepOptions,
    cancel: &CancellationToken,
) -> Vec<LiveHost> {
    sweep_with(engine, hosts, opts, Wait::Fixed(opts.timeout), cancel).await
}

/// Like [`sweep`], waiting after the last probe as `wait` says (with raw sockets; the per-probe engine
/// without them waits `wait`'s longest time per probe).
pub async fn sweep_with(
    engine: &IcmpEngine,
    hosts: &[IpAddr],
    opts: &SweepOptions,
    wait: Wait,
    cancel: &CancellationToken,
) -> Vec<LiveHost> {
    let opts = &SweepOptions {
        timeout: wait.max(),
        ..opts.clone()
    };
    let rate = opts.rate.max(1);
    let batched = {
        let hosts = hosts.to_vec();
        let cancel = cancel.clone();
        let eopts = echo::EchoSweep {
            count: opts.count.max(1),
            timeout: opts.timeout,
            rate,
        };
        tokio::task::spawn_blocking(move || echo::sweep_blocking_with(&hosts, eopts, wait, &cancel))
            .await
    };
    let best = match batched {
        Ok(Ok(best)) => best
            .into_iter()
            .enumerate()
            .filter(|&(_, us)| us != u32::MAX)
            .map(|(i, us)| (i, f64::from(us) / 1e3))
            .collect(),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "Batched sweep unavailable: per-probe engine.");
            per_probe(engine, hosts, opts, cancel).await
        }
        Err(e) => {
            tracing::warn!(error = %e, "Batched sweep failed: per-probe engine.");
            per_probe(engine, hosts, opts, cancel).await
        }
    };
    finish(hosts, best, opts, cancel).await
}

/// Best RTT per host index through the per-probe engine (surge-ping).
async fn per_probe(
    engine: &IcmpEngine,
    hosts: &[IpAddr],
    opts: &SweepOptions,
    cancel: &CancellationToken,
) -> HashMap<usize, f64> {
    let rate = opts.rate.max(1);
    let popts = PingOptions {
        count: Some(opts.count.max(1)),
        // One round covers all hosts at `rate` per second.
        interval: Duration::from_secs_f64(hosts.len().max(1) as f64 / f64::from(rate)),
        timeout: opts.timeout,
        size: 56,
        ttl: None,
    };
    let (tx, mut rx) = mpsc::channel(4096);
    let mut best: HashMap<usize, f64> = HashMap::new();
    let run = ping::run(engine, hosts, &popts, tx, cancel);
    let collect = async {
        while let Some(o) = rx.recv().await {
            if let Some(rtt) = o.rtt_ms {
                let e = best.entry(o.target).or_insert(rtt);
                *e = e.min(rtt);
            }
        }
    };
    tokio::join!(run, collect);
    best
}

async fn finish(
    hosts: &[IpAddr],
    best: HashMap<usize, f64>,
    opts: &SweepOptions,
    cancel: &CancellationToken,
) -> Vec<LiveHost> {
    let mut live: Vec<LiveHost> = best
        .into_iter()
        .map(|(i, rtt)| LiveHost {
            ip: hosts[i],
            rtt_ms: rtt,
            via: "icmp".into(),
            name: None,
        })
        .collect();
    if !opts.tcp_ports.is_empty() && !cancel.is_cancelled() {
        let silent: Vec<IpAddr> = hosts
            .iter()
            .filter(|h| !live.iter().any(|l| l.ip == **h))
            .copied()
            .collect();
        live.extend(tcp_alive(&silent, &opts.tcp_ports, opts.timeout).await);
    }
    live.sort_by_key(|l| l.ip);
    if opts.reverse_dns {
        let ips: Vec<IpAddr> = live.iter().map(|l| l.ip).collect();
        let names = rdns::reverse_names(&ips, Duration::from_secs(2)).await;
        for l in &mut live {
            l.name = names.get(&l.ip).cloned();
        }
    }
    live
}

/// TCP liveness: a host is alive when any port accepts or refuses (RST) a connection.
async fn tcp_alive(hosts: &[IpAddr], ports: &[u16], timeout: Duration) -> Vec<LiveHost> {
    futures::stream::iter(hosts.iter().copied())
        .map(|ip| async move {
            for &port in ports {
                safety::global().acquire(1).await;
                let t0 = Instant::now();
                let r = tokio::time::timeout(
                    timeout,
                    tokio::net::TcpStream::connect(SocketAddr::new(ip, port)),
                )
                .await;
                let alive = match r {
                    Ok(Ok(_)) => true,
                    Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
                    Err(_) => false,
                };
                if alive {
                    return Some(LiveHost {
                        ip,
                        rtt_ms: t0.elapsed().as_secs_f64() * 1e3,
                        via: format!("tcp/{port}"),
                        name: None,
                    });
                }
            }
            None
        })
        .buffer_unordered(256)
        .filter_map(|h| async move { h })
        .collect()
        .await
}
