//! `octoisp-agent sweep CIDR...` (fping -g / nmap -sn style list of live hosts) and
//! `octoisp-agent scan HOST [-p PORTS] [--top N] [--udp]` (nmap style port table).

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{Common, print_json, resolve};
use crate::diag::echo::Wait;
use crate::diag::ping::IcmpEngine;
use crate::diag::portscan::{self, PortState, ScanOptions, TcpMethod};
use crate::diag::sweep::{self, SweepOptions};
use crate::diag::target::{self, Cidr};

/// Arguments of `sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Ranges (`192.0.2.0/24`, `2001:db8::/120`) or addresses.
    #[arg(required = true)]
    ranges: Vec<String>,
    /// Echo requests per address.
    #[arg(short = 'c', long, default_value_t = 1)]
    count: u64,
    /// Longest time a reply may take, seconds. After the last probe the sweep waits from the RTTs seen so far
    /// (like nmap's host discovery: srtt + 4 rttvar, at least twice the slowest, within --min-wait..this).
    #[arg(short = 'W', long, default_value_t = 1.0)]
    timeout: f64,
    /// Shortest wait after the last probe, seconds (adaptive wait).
    #[arg(long, default_value_t = 0.1)]
    min_wait: f64,
    /// Wait the whole --timeout after the last probe instead of adapting it (never misses a host answering
    /// within --timeout; fping's behaviour).
    #[arg(long)]
    fixed_wait: bool,
    /// Probes per second.
    #[arg(short = 'r', long, default_value_t = 10_000)]
    rate: u32,
    /// Also try these TCP ports on addresses that do not answer ICMP (e.g. `22,80,443`).
    #[arg(long)]
    tcp: Option<String>,
    /// Do not look up names.
    #[arg(short = 'n', long)]
    numeric: bool,
    #[command(flatten)]
    common: Common,
}

/// Arguments of `scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Host or address.
    host: String,
    /// Ports: `22,80,8000-8100`, `-` for all.
    #[arg(short = 'p', long, conflicts_with = "top")]
    ports: Option<String>,
    /// The N most common ports (default 100 TCP / 30 UDP).
    #[arg(long)]
    top: Option<usize>,
    /// Scan UDP instead of TCP.
    #[arg(short = 'u', long)]
    udp: bool,
    /// Most probes in flight.
    #[arg(long, default_value_t = 512)]
    max_parallel: usize,
    /// Retransmissions of an unanswered probe.
    #[arg(long, default_value_t = 1)]
    retries: u8,
    /// Do not read banners of open TCP ports.
    #[arg(long)]
    no_banner: bool,
    /// TCP probe method: `syn` (raw sockets, root or CAP_NET_RAW), `connect`, or `auto` (SYN when privileged).
    #[arg(long, value_enum, default_value = "auto")]
    method: MethodArg,
    /// SYN scan: probes per second (default: the --max-pps cap); halves when probes are lost.
    #[arg(long)]
    rate: Option<u32>,
    /// Also list closed and filtered ports (by default, like nmap, only when few).
    #[arg(short = 'a', long)]
    all: bool,
    #[command(flatten)]
    common: Common,
}

/// `--method` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum MethodArg {
    Auto,
    Syn,
    Connect,
}

pub(super) async fn sweep(a: SweepArgs) -> anyhow::Result<ExitCode> {
    a.common.apply();
    let mut hosts = Vec::new();
    for r in &a.ranges {
        let c: Cidr = r.parse()?;
        hosts.extend(c.hosts()?);
    }
    hosts.dedup();
    let tcp_ports = match &a.tcp {
        Some(p) => target::parse_ports(p)?,
        None => Vec::new(),
    };
    let timeout = Duration::from_secs_f64(a.timeout.clamp(0.01, 60.0));
    let wait = if a.fixed_wait {
        Wait::Fixed(timeout)
    } else {
        Wait::Adaptive {
            min: Duration::from_secs_f64(a.min_wait.clamp(0.0, 60.0)).min(timeout),
            max: timeout,
        }
    };
    let opts = SweepOptions {
        count: a.count.max(1),
        timeout,
        rate: a.rate,
        tcp_ports,
        reverse_dns: !a.numeric,
    };
    let engine = IcmpEngine::open(&hosts, None).context("sweep")?;
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.cancel();
        }
    });
    let t0 = Instant::now();
    let live = sweep::sweep_with(&engine, &hosts, &opts, wait, &cancel).await;
    let secs = t0.elapsed().as_secs_f64();
    if a.common.json {
        print_json(&serde_json::json!({
            "scanned": hosts.len(), "alive": live.len(), "seconds": secs, "hosts": live,
        }))?;
    } else {
        for h in &live {
            println!(
                "{:<40} {:>9.3} ms  {:<8} {}",
                h.ip,
                h.rtt_ms,
                h.via,
                h.name.as_deref().unwrap_or("")
            );
        }
        println!(
            "{} addresses scanned, {} alive, in {secs:.2} s",
            hosts.len(),
            live.len()
        );
    }
    Ok(if live.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub(super) async fn scan(a: ScanArgs) -> anyhow::Result<ExitCode> {
    a.common.apply();
    let host: IpAddr = resolve(&a.host).await?;
    let ports = match (&a.ports, a.top) {
        (Some(p), _) => target::parse_ports(p)?,
        (None, n) if a.udp => target::top_ports(&target::TOP_UDP, n.unwrap_or(30)),
        (None, n) => target::top_ports(&target::TOP_TCP, n.unwrap_or(100)),
    };
    let opts = ScanOptions {
        max_parallel: a.max_parallel.max(1),
        retries: a.retries,
        banners: !a.no_banner,
        method: match a.method {
            MethodArg::Auto => TcpMethod::Auto,
            MethodArg::Syn => TcpMethod::Syn,
            MethodArg::Connect => TcpMethod::Connect,
        },
        rate: a.rate,
        ..ScanOptions::default()
    };
    let t0 = Instant::now();
    let (results, method) = portscan::scan_with_method(host, &ports, a.udp, &opts)
        .await
        .context("scan")?;
    let secs = t0.elapsed().as_secs_f64();
    let method = match (a.udp, method) {
        (true, _) => "udp",
        (false, TcpMethod::Syn) => "syn",
        (false, _) => "connect",
    };
    if a.common.json {
        // A typed report, serialized as it is written (keys in the order they always had).
        #[derive(serde::Serialize)]
        struct Report<'a> {
            ip: IpAddr,
            method: &'a str,
            ports: &'a [portscan::PortResult],
            seconds: f64,
        }
        print_json(&Report {
            ip: host,
            method,
            ports: &results,
            seconds: secs,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("Scan report for {} ({host}), {method} scan", a.host);
    let count = |s: PortState| results.iter().filter(|r| r.state == s).count();
    let show_all = a.all || results.len() <= 26;
    let hidden = results
        .iter()
        .filter(|r| !show_all && r.state != PortState::Open)
        .count();
    if hidden > 0 {
        println!(
            "Not shown: {} closed, {} filtered, {} open|filtered ports",
            count(PortState::Closed),
            count(PortState::Filtered),
            count(PortState::OpenFiltered)
        );
    }
    println!("{:<11} {:<14} BANNER", "PORT", "STATE");
    for r in results
        .iter()
        .filter(|r| show_all || r.state == PortState::Open)
    {
        println!(
            "{:<11} {:<14} {}",
            format!("{}/{}", r.port, r.protocol),
            r.state.to_string(),
            r.banner.as_deref().unwrap_or("")
        );
    }
    println!(
        "{} ports scanned in {secs:.2} s ({} open)",
        results.len(),
        count(PortState::Open)
    );
    Ok(ExitCode::SUCCESS)
}
