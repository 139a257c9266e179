//! `octoisp-agent trace HOST [-P icmp|udp|tcp]` (traceroute's output) and `octoisp-agent mtr HOST [-c N]`
//! (`mtr --report`'s output); `--json` gives the hops with the key `ip`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::{Common, print_json, resolve};
use crate::diag::asn::{AsInfo, AsnResolver};
use crate::diag::rdns;
use crate::diag::stats::HopReport;
use crate::diag::trace::{self, TraceOptions, TraceProtocol};

/// Arguments shared by `trace` and `mtr`.
#[derive(Debug, Args)]
struct PathArgs {
    /// Host or address to trace.
    host: String,
    /// Probe protocol.
    #[arg(short = 'P', long, value_enum, default_value_t = TraceProtocol::Icmp)]
    protocol: TraceProtocol,
    /// Destination port for UDP and TCP probes (default 33434 for UDP, 80 for TCP).
    #[arg(short = 'p', long)]
    port: Option<u16>,
    /// Highest TTL.
    #[arg(short = 'm', long, default_value_t = 30)]
    max_ttl: u8,
    /// Seconds to wait for replies in a round.
    #[arg(short = 'W', long, default_value_t = 1.0)]
    timeout: f64,
    /// Do not look up hop names (reverse DNS).
    #[arg(short = 'n', long)]
    numeric: bool,
    /// Look up each hop's origin AS number (DNS TXT, Team Cymru's origin.asn.cymru.com format).
    #[arg(short = 'z', long)]
    asn: bool,
    /// DNS server for the AS lookups, IP[:PORT] (default: the system's first resolver).
    #[arg(long, requires = "asn")]
    asn_server: Option<String>,
    /// TOS byte (IPv4) / traffic class (IPv6) of the probes, like mtr's -Q: decimal or 0x hex.
    #[arg(short = 'Q', long, value_parser = super::ping::parse_tos, conflicts_with = "dscp")]
    tos: Option<u8>,
    /// DSCP of the probes, 0-63 (e.g. 46 = EF): TOS = DSCP << 2. A path that treats marked traffic differently
    /// (a policer, a QoS drop) shows up only with the marking the customer's traffic carries.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=63))]
    dscp: Option<u8>,
    #[command(flatten)]
    common: Common,
}

impl PathArgs {
    /// The TOS byte asked for (`-Q`, or `--dscp` shifted), 0 when neither.
    fn tos_byte(&self) -> u8 {
        self.tos.or(self.dscp.map(|d| d << 2)).unwrap_or(0)
    }
}

/// Arguments of `trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    path: PathArgs,
    /// Probes per hop.
    #[arg(short = 'q', long, default_value_t = 3)]
    queries: usize,
}

/// Arguments of `mtr`.
#[derive(Debug, Args)]
pub struct MtrArgs {
    #[command(flatten)]
    path: PathArgs,
    /// Cycles (rounds of probes to every hop).
    #[arg(short = 'c', long, default_value_t = 10)]
    count: usize,
    /// Seconds between cycles.
    #[arg(short = 'i', long, default_value_t = 1.0)]
    interval: f64,
}

/// A hop in `--json`.
#[derive(Debug, Serialize)]
struct JsonHop {
    #[serde(flatten)]
    hop: HopReport,
    host: Option<String>,
    /// Origin AS of the hop's address (with `--asn`).
    asn: Option<u32>,
    /// The announced prefix that AS originates.
    as_prefix: Option<String>,
}

/// Hop address -> origin AS, when `--asn` asked for it.
async fn origins(p: &PathArgs, hops: &[HopReport]) -> anyhow::Result<HashMap<IpAddr, AsInfo>> {
    if !p.asn {
        return Ok(HashMap::new());
    }
    let timeout = Duration::from_secs(2);
    let resolver = match &p.asn_server {
        Some(s) => AsnResolver::new(crate::diag::dns::parse_server(s)?, timeout),
        None => AsnResolver::system(timeout).context("--asn")?,
    };
    let mut ips: Vec<IpAddr> = hops.iter().filter_map(|h| h.ip).collect();
    ips.sort();
    ips.dedup();
    Ok(resolver.lookup_all(&ips).await)
}

fn as_label(p: &PathArgs, ip: Option<IpAddr>, origins: &HashMap<IpAddr, AsInfo>) -> String {
    if !p.asn {
        return String::new();
    }
    match ip.and_then(|ip| origins.get(&ip)) {
        Some(a) => format!("{:<9} ", format!("AS{}", a.asn)),
        None => format!("{:<9} ", "AS???"),
    }
}

fn secs(v: f64, what: &str) -> anyhow::Result<Duration> {
    if v.is_finite() && v >= 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        anyhow::bail!("{what} must be a non-negative number of seconds")
    }
}

/// Runs the tracer on a blocking thread; Ctrl-C returns the hops seen so far.
async fn run_path(target: IpAddr, opts: TraceOptions) -> anyhow::Result<(Vec<HopReport>, bool)> {
    let latest: Arc<Mutex<(Vec<HopReport>, bool)>> = Arc::default();
    let shared = latest.clone();
    let job = tokio::task::spawn_blocking(move || {
        trace::run_blocking(target, &opts, |table| {
            if let Ok(mut l) = shared.lock() {
                *l = (table.report(), table.reached());
            }
        })
    });
    tokio::select! {
        done = job => {
            let table = done??;
            Ok((table.report(), table.reached()))
        }
        _ = tokio::signal::ctrl_c() => {
            Ok(latest.lock().map(|l| l.clone()).unwrap_or_default())
        }
    }
}

async fn names(hops: &[HopReport], numeric: bool) -> HashMap<IpAddr, String> {
    if numeric {
        return HashMap::new();
    }
    let ips: Vec<IpAddr> = hops.iter().filter_map(|h| h.ip).collect();
    rdns::reverse_names(&ips, Duration::from_secs(2)).await
}

fn json_hops(
    hops: Vec<HopReport>,
    names: &HashMap<IpAddr, String>,
    origins: &HashMap<IpAddr, AsInfo>,
) -> Vec<JsonHop> {
    hops.into_iter()
        .map(|hop| {
            let origin = hop.ip.and_then(|ip| origins.get(&ip));
            JsonHop {
                host: hop.ip.and_then(|ip| names.get(&ip).cloned()),
                asn: origin.map(|a| a.asn),
                as_prefix: origin.map(|a| a.prefix.clone()),
                hop,
            }
        })
        .collect()
}

fn label(ip: Option<IpAddr>, names: &HashMap<IpAddr, String>) -> String {
    match ip {
        None => "???".into(),
        Some(ip) => match names.get(&ip) {
            Some(n) => format!("{n} ({ip})"),
            None => ip.to_string(),
        },
    }
}

fn mpls(h: &HopReport) -> String {
    if h.mpls.is_empty() {
        return String::new();
    }
    let labels: Vec<String> = h.mpls.iter().map(u32::to_string).collect();
    format!("  [MPLS: Lbl {}]", labels.join(", "))
}

pub(super) async fn trace(a: TraceArgs) -> anyhow::Result<ExitCode> {
    let p = &a.path;
    p.common.apply();
    let target = resolve(&p.host).await?;
    let opts = TraceOptions {
        protocol: p.protocol,
        rounds: a.queries.max(1),
        interval: Duration::ZERO,
        timeout: secs(p.timeout, "--timeout")?,
        max_ttl: p.max_ttl,
        port: p.port,
        tos: p.tos_byte(),
    };
    if !p.common.json {
        let proto = format!("{:?}", p.protocol).to_lowercase();
        println!(
            "traceroute to {} ({target}), {} hops max, {proto} probes",
            p.host, p.max_ttl
        );
    }
    let (hops, reached) = run_path(target, opts).await?;
    let names = names(&hops, p.numeric).await;
    let origins = origins(p, &hops).await?;
    if p.common.json {
        print_json(&serde_json::json!({
            "target": target, "protocol": p.protocol, "reached": reached,
            "hops": json_hops(hops, &names, &origins),
        }))?;
    } else {
        for h in &hops {
            let rtts: Vec<String> = h
                .probes
                .iter()
                .map(|r| r.map_or("*".into(), |v| format!("{v:.3} ms")))
                .collect();
            let who = if h.ip.is_some() {
                format!("{}{}", as_label(p, h.ip, &origins), label(h.ip, &names))
            } else {
                String::new()
            };
            println!("{:>2}  {who}  {}{}", h.ttl, rtts.join("  "), mpls(h));
        }
    }
    Ok(if reached {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(super) async fn mtr(a: MtrArgs) -> anyhow::Result<ExitCode> {
    let p = &a.path;
    p.common.apply();
    let target = resolve(&p.host).await?;
    let opts = TraceOptions {
        protocol: p.protocol,
        rounds: a.count.max(1),
        interval: secs(a.interval, "--interval")?,
        timeout: secs(p.timeout, "--timeout")?,
        max_ttl: p.max_ttl,
        port: p.port,
        tos: p.tos_byte(),
    };
    let (hops, reached) = run_path(target, opts).await?;
    let names = names(&hops, p.numeric).await;
    let origins = origins(p, &hops).await?;
    if p.common.json {
        print_json(&serde_json::json!({
            "target": target, "protocol": p.protocol, "cycles": a.count, "reached": reached,
            "hops": json_hops(hops, &names, &origins),
        }))?;
    } else {
        let local = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        println!(
            "HOST: {:<38} Loss%   Snt   Last    Avg   Best   Wrst  StDev   Javg",
            local.trim()
        );
        for h in &hops {
            let s = &h.stats;
            let f = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
            println!(
                "{:>3}.|-- {:<36} {:>5.1}% {:>5} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
                h.ttl,
                format!("{}{}", as_label(p, h.ip, &origins), label(h.ip, &names)),
                s.loss_pct,
                s.sent,
                f(s.last_ms),
                f(s.avg_ms),
                f(s.min_ms),
                f(s.max_ms),
                f(s.stdev_ms),
                f(s.jitter_ms)
            );
            if !h.mpls.is_empty() {
                println!("       {}", mpls(h).trim());
            }
        }
    }
    Ok(if reached {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
