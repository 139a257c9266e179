//! `octoisp-agent ping TARGET... [-c N] [-i SECONDS]`: ping's output for one target, fping's for several,
//! the summary at the end or on Ctrl-C.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Common, ms, print_json, resolve};
use crate::diag::ping::{self, IcmpEngine, PingOptions, SocketOptions};
use crate::diag::stats::RttSummary;

/// Arguments of `ping`.
#[derive(Debug, Args)]
pub struct PingArgs {
    /// Hosts or addresses.
    #[arg(required = true)]
    targets: Vec<String>,
    /// Probes per target (default: until Ctrl-C).
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Seconds between probes to one target.
    #[arg(short = 'i', long, default_value_t = 1.0)]
    interval: f64,
    /// Seconds to wait for each reply.
    #[arg(short = 'W', long, default_value_t = 1.0)]
    timeout: f64,
    /// ICMP payload bytes.
    #[arg(short = 's', long, default_value_t = 56)]
    size: u16,
    /// TTL / hop limit of the probes.
    #[arg(short = 't', long)]
    ttl: Option<u32>,
    /// TOS byte (IPv4) / traffic class (IPv6) of the probes, like ping's -Q: decimal or 0x hex.
    #[arg(short = 'Q', long, value_parser = parse_tos, conflicts_with = "dscp")]
    tos: Option<u8>,
    /// DSCP of the probes, 0-63 (e.g. 46 = EF): TOS = DSCP << 2.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=63))]
    dscp: Option<u8>,
    /// Only print the summary.
    #[arg(short = 'q', long)]
    quiet: bool,
    #[command(flatten)]
    common: Common,
}

/// One target's result in `--json`.
#[derive(Debug, Serialize)]
struct HostResult {
    ip: IpAddr,
    name: String,
    #[serde(flatten)]
    stats: RttSummary,
}

pub(super) fn parse_tos(s: &str) -> Result<u8, String> {
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => s.parse(),
    };
    v.map_err(|_| format!("{s:?} is not a TOS byte (0-255, or 0x00-0xff)"))
}

pub(super) async fn run(a: PingArgs) -> anyhow::Result<ExitCode> {
    a.common.apply();
    if a.count == Some(0) {
        anyhow::bail!("--count must be at least 1");
    }
    let positive = |v: f64, what: &str| {
        if v.is_finite() && v > 0.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(anyhow::anyhow!(
                "{what} must be a positive number of seconds"
            ))
        }
    };
    let mut ips = Vec::with_capacity(a.targets.len());
    for t in &a.targets {
        ips.push(resolve(t).await?);
    }
    let opts = PingOptions {
        count: a.count,
        interval: positive(a.interval, "--interval")?,
        timeout: positive(a.timeout, "--timeout")?,
        size: a.size,
        ttl: a.ttl,
    };
    let sock = SocketOptions {
        ttl: a.ttl,
        tos: a.tos.or(a.dscp.map(|d| d << 2)),
    };
    let engine = IcmpEngine::open_with(&ips, sock).context("ping")?;
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(1024);
    let runner = {
        let (engine, ips, opts, cancel) =
            (engine.clone(), ips.clone(), opts.clone(), cancel.clone());
        tokio::spawn(async move { ping::run(&engine, &ips, &opts, tx, &cancel).await })
    };
    let many = ips.len() > 1;
    if !a.quiet && !a.common.json && !many {
        println!("PING {} ({}): {} data bytes", a.targets[0], ips[0], a.size);
    }
    let mut probes: Vec<Vec<Option<f64>>> = vec![Vec::new(); ips.len()];
    loop {
        tokio::select! {
            got = rx.recv() => {
                let Some(o) = got else { break };
                let Some(list) = probes.get_mut(o.target) else { continue };
                // Outcomes arrive in completion order; keep them in probe order for jitter.
                let idx = usize::try_from(o.seq).unwrap_or(usize::MAX);
                if list.len() <= idx {
                    list.resize(idx.saturating_add(1), None);
                }
                list[idx] = o.rtt_ms;
                if a.quiet || a.common.json {
                    continue;
                }
                let ip = ips[o.target];
                match (o.rtt_ms, many) {
                    (Some(rtt), false) => println!(
                        "{} bytes from {ip}: icmp_seq={}{} time={rtt:.3} ms",
                        o.bytes,
                        o.seq,
                        o.reply_ttl.map(|t| format!(" ttl={t}")).unwrap_or_default()
                    ),
                    (None, false) => println!("no answer from {ip}: icmp_seq={}", o.seq),
                    (rtt, true) => {
                        let s = RttSummary::from_probes(list.iter());
                        println!(
                            "{ip} : [{}], {} ({} avg, {:.0}% loss)",
                            o.seq,
                            rtt.map_or("timed out".into(), |r| format!("{} bytes, {r:.3} ms", o.bytes)),
                            ms(s.avg_ms),
                            s.loss_pct
                        );
                    }
                }
            }
            _ = tokio::signal::ctrl_c() => {
                cancel.cancel();
                break;
            }
        }
    }
    runner.abort();
    let results: Vec<HostResult> = ips
        .iter()
        .zip(&a.targets)
        .zip(&probes)
        .map(|((ip, name), p)| HostResult {
            ip: *ip,
            name: name.clone(),
            stats: RttSummary::from_probes(p.iter()),
        })
        .collect();
    if a.common.json {
        print_json(&serde_json::json!({ "hosts": results }))?;
    } else {
        for r in &results {
            let s = &r.stats;
            if many {
                println!(
                    "{} : xmt/rcv/%loss = {}/{}/{:.0}%, min/avg/max/p95 = {}/{}/{}/{}, jitter {} ms",
                    r.ip,
                    s.sent,
                    s.received,
                    s.loss_pct,
                    ms(s.min_ms),
                    ms(s.avg_ms),
                    ms(s.max_ms),
                    ms(s.p95_ms),
                    ms(s.jitter_ms)
                );
            } else {
                println!("\n--- {} ping statistics ---", r.name);
                println!(
                    "{} packets transmitted, {} received, {:.1}% packet loss",
                    s.sent, s.received, s.loss_pct
                );
                if s.received > 0 {
                    println!(
                        "rtt min/avg/max/p95/mdev = {}/{}/{}/{}/{} ms, jitter {} ms",
                        ms(s.min_ms),
                        ms(s.avg_ms),
                        ms(s.max_ms),
                        ms(s.p95_ms),
                        ms(s.stdev_ms),
                        ms(s.jitter_ms)
                    );
                }
            }
        }
    }
    Ok(if results.iter().all(|r| r.stats.received > 0) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
