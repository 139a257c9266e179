//! The technician's commands (`octoisp-agent ping|trace|mtr|sweep|scan|dns|http`): parse arguments, run a
//! tool, print like the classic tool (ping, mtr --report, nmap, dig, curl -w) or JSON with `--json`.

mod dns;
mod http;
mod ping;
mod scan;
mod trace;

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::diag::safety;

/// Options every diagnostic command takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Print JSON instead of the human-readable report.
    #[arg(long)]
    pub json: bool,
    /// Process-wide cap on probe packets per second.
    #[arg(long, default_value_t = safety::DEFAULT_MAX_PPS)]
    pub max_pps: u32,
}

/// The diagnostic subcommands.
#[derive(Debug, Subcommand)]
pub enum DiagCommand {
    /// Ping hosts (ICMP echo, IPv4/IPv6): continuous until Ctrl-C unless -c is given.
    Ping(ping::PingArgs),
    /// Sweep address ranges for live hosts (ICMP echo, optional TCP probes).
    Sweep(scan::SweepArgs),
    /// Scan the TCP (or UDP) ports of a host.
    Scan(scan::ScanArgs),
    /// Traceroute (ICMP, UDP or TCP probes).
    Trace(trace::TraceArgs),
    /// MTR: per-hop loss and latency over several cycles, printed like `mtr --report`.
    Mtr(trace::MtrArgs),
    /// Query DNS servers (A, AAAA, CNAME, MX, NS, TXT, SOA, PTR, CAA, SRV).
    Dns(dns::DnsArgs),
    /// Test an HTTP(S) URL: status, redirects, timings, TLS and certificate chain.
    Http(http::HttpArgs),
}

/// Runs one diagnostic command.
pub async fn run(cmd: DiagCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DiagCommand::Ping(a) => ping::run(a).await,
        DiagCommand::Sweep(a) => scan::sweep(a).await,
        DiagCommand::Scan(a) => scan::scan(a).await,
        DiagCommand::Trace(a) => trace::trace(a).await,
        DiagCommand::Mtr(a) => trace::mtr(a).await,
        DiagCommand::Dns(a) => dns::run(a).await,
        DiagCommand::Http(a) => http::run(a).await,
    }
}

impl Common {
    fn apply(&self) {
        safety::set_global_rate(self.max_pps);
    }
}

/// An address, or a host name resolved by the system (first address).
async fn resolve(host: &str) -> anyhow::Result<IpAddr> {
    if let Ok(ip) = host.trim_matches(|c| c == '[' || c == ']').parse() {
        return Ok(ip);
    }
    tokio::net::lookup_host((host, 0))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .map(|sa| sa.ip())
        .with_context(|| format!("{host} has no address"))
}

/// Writes `value` as pretty JSON to standard output, streamed: a scan of 65,535 ports is some 8 MB of JSON,
/// which is neither built as a tree nor held as one string first.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}
