//! The commands themselves: each maps its typed arguments onto an existing engine (`crate::diag`, the central
//! configuration runtime) and returns its output JSON, sending progress on the way. The shapes of progress and
//! output are documented in `docs/COMMANDS-AGENT.md`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use octoisp_shared::commands::{
    Args, DnsArgs, HttpArgs, MtrArgs, PingArgs, PortscanArgs, SweepArgs, TraceProto, TracerouteArgs,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Progress;
use crate::central::Runtime;
use crate::diag::ping::{IcmpEngine, PingOptions};
use crate::diag::stats::RttSummary;
use crate::diag::target::Cidr;
use crate::diag::trace::{TraceOptions, TraceProtocol};
use crate::diag::{dns, http, ping, portscan, sweep, trace};

/// What a command may use.
pub(super) struct Ctx {
    pub(super) runtime: Option<Arc<Runtime>>,
    pub(super) progress: Progress,
    pub(super) cancel: CancellationToken,
}

/// Runs one command to its output (`Ok`) or its error message (`Err`).
pub(super) async fn run(ctx: &Ctx, args: Args) -> Result<Value, String> {
    match args {
        Args::Noop(a) => {
            tokio::select! {
                _ = ctx.cancel.cancelled() => return Err("cancelled".into()),
                _ = tokio::time::sleep(Duration::from_millis(a.sleep_ms)) => {}
            }
            Ok(json!({ "slept_ms": a.sleep_ms }))
        }
        Args::Ping(a) => run_ping(ctx, a).await,
        Args::Mtr(a) => run_mtr(ctx, a).await,
        Args::Traceroute(a) => run_traceroute(a).await,
        Args::Sweep(a) => run_sweep(ctx, a).await,
        Args::Portscan(a) => run_portscan(ctx, a).await,
        Args::Dns(a) => run_dns(a).await,
        Args::Http(a) => run_http(a).await,
        Args::ConfigUpdate(a) => {
            let rt = ctx
                .runtime
                .as_ref()
                .ok_or("this agent has no runtime to apply configuration to")?;
            rt.apply(a.version, &a.config).await
        }
        Args::SnmpGet(_)
        | Args::SnmpWalk(_)
        | Args::SnmpDiscover(_)
        | Args::Tr069GetParams(_)
        | Args::Tr069SetParams(_)
        | Args::Tr069Reboot(_)
        | Args::Tr069FactoryReset(_)
        | Args::Tr069Download(_) => Err(
            "not supported by this agent version yet (SNMP and TR-069 commands come in a later release)".into(),
        ),
    }
}

fn scan_allowed(ctx: &Ctx, targets: &[Cidr]) -> Result<(), String> {
    let allow = ctx
        .runtime
        .as_ref()
        .map(|r| r.allowlist())
        .unwrap_or_default();
    allow
        .check(targets)
        .map_err(|e| format!("{e} (scan.allowed of the agent's configuration)"))
}

async fn run_ping(ctx: &Ctx, a: PingArgs) -> Result<Value, String> {
    let engine = IcmpEngine::open(&a.targets, None).map_err(|e| e.to_string())?;
    let opts = PingOptions {
        count: Some(u64::from(a.count)),
        interval: Duration::from_millis(a.interval_ms),
        timeout: Duration::from_millis(a.timeout_ms),
        size: a.size,
        ttl: None,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let mut probes: Vec<Vec<Option<f64>>> = vec![Vec::new(); a.targets.len()];
    let targets = a.targets.clone();
    let run = ping::run(&engine, &targets, &opts, tx, &ctx.cancel);
    let collect = async {
        while let Some(o) = rx.recv().await {
            let Some(list) = probes.get_mut(o.target) else {
                continue;
            };
            list.push(o.rtt_ms);
            let summary = RttSummary::from_probes(list.iter());
            ctx.progress.send(json!({
                "target": targets[o.target],
                "seq": o.seq,
                "rtt_ms": o.rtt_ms,
                "bytes": o.bytes,
                "ttl": o.reply_ttl,
                "summary": summary,
            }));
        }
    };
    tokio::join!(run, collect);
    if ctx.cancel.is_cancelled() {
        return Err("cancelled".into());
    }
    let results: Vec<Value> = targets
        .iter()
        .zip(&probes)
        .map(|(t, p)| json!({ "target": t, "summary": RttSummary::from_probes(p.iter()) }))
        .collect();
    Ok(json!({ "targets": results }))
}

fn proto(p: TraceProto) -> TraceProtocol {
    match p {
        TraceProto::Icmp => TraceProtocol::Icmp,
        TraceProto::Udp => TraceProtocol::Udp,
        TraceProto::Tcp => TraceProtocol::Tcp,
    }
}

async fn run_mtr(ctx: &Ctx, a: MtrArgs) -> Result<Value, String> {
    let opts = TraceOptions {
        protocol: proto(a.protocol),
        rounds: a.cycles as usize,
        interval: Duration::from_millis(a.interval_ms),
        timeout: Duration::from_millis(a.interval_ms),
        max_ttl: a.max_ttl,
        port: a.port,
    };
    let target = a.target;
    let progress = ctx.progress.clone();
    let cancel = ctx.cancel.clone();
    // trippy's tracer runs its rounds on a thread of its own; a cancelled command stops reporting at once and
    // the thread ends after its current round.
    let table = tokio::task::spawn_blocking(move || {
        trace::run_blocking(target, &opts, |t| {
            if !cancel.is_cancelled() {
                progress.send(json!({
                    "cycle": t.rounds(),
                    "reached": t.reached(),
                    "hops": t.report(),
                }));
            }
        })
    })
    .await
    .map_err(|e| format!("tracer task failed: {e}"))?
    .map_err(|e| e.to_string())?;
    Ok(json!({
        "target": target,
        "cycles": table.rounds(),
        "reached": table.reached(),
        "hops": table.report(),
    }))
}

async fn run_traceroute(a: TracerouteArgs) -> Result<Value, String> {
    let opts = TraceOptions {
        protocol: proto(a.protocol),
        rounds: a.rounds as usize,
        interval: Duration::from_millis(a.timeout_ms),
        timeout: Duration::from_millis(a.timeout_ms),
        max_ttl: a.max_ttl,
        port: a.port,
    };
    let target = a.target;
    let table = tokio::task::spawn_blocking(move || trace::run_blocking(target, &opts, |_| {}))
        .await
        .map_err(|e| format!("tracer task failed: {e}"))?
        .map_err(|e| e.to_string())?;
    Ok(json!({
        "target": target,
        "reached": table.reached(),
        "hops": table.report(),
    }))
}

/// Addresses swept between two progress frames.
const SWEEP_STEP: usize = 256;

async fn run_sweep(ctx: &Ctx, a: SweepArgs) -> Result<Value, String> {
    let mut cidrs = Vec::with_capacity(a.cidrs.len());
    for (i, c) in a.cidrs.iter().enumerate() {
        cidrs.push(c.parse::<Cidr>().map_err(|e| format!("cidrs[{i}]: {e}"))?);
    }
    scan_allowed(ctx, &cidrs)?;
    let mut hosts: Vec<IpAddr> = Vec::new();
    for c in &cidrs {
        hosts.extend(c.hosts().map_err(|e| e.to_string())?);
    }
    let engine = IcmpEngine::open(&hosts, None).map_err(|e| e.to_string())?;
    let opts = sweep::SweepOptions {
        count: u64::from(a.count),
        timeout: Duration::from_millis(a.timeout_ms),
        rate: a.rate,
        tcp_ports: a.tcp_ports.clone(),
        reverse_dns: a.reverse_dns,
    };
    let total = hosts.len();
    let mut live = Vec::new();
    for (n, chunk) in hosts.chunks(SWEEP_STEP).enumerate() {
        let found = sweep::sweep(&engine, chunk, &opts, &ctx.cancel).await;
        if ctx.cancel.is_cancelled() {
            return Err("cancelled".into());
        }
        let done = (n * SWEEP_STEP + chunk.len()).min(total);
        ctx.progress.send(json!({
            "done": done,
            "total": total,
            "percent": percent(done, total),
            "found": found,
        }));
        live.extend(found);
    }
    Ok(json!({ "scanned": total, "alive": live.len(), "hosts": live }))
}

/// Ports scanned between two progress frames.
const PORT_STEP: usize = 1024;

async fn run_portscan(ctx: &Ctx, a: PortscanArgs) -> Result<Value, String> {
    scan_allowed(
        ctx,
        &[Cidr::new(a.host, if a.host.is_ipv4() { 32 } else { 128 })],
    )?;
    let ports: Vec<u16> = if a.ports.is_empty() {
        if a.udp {
            crate::diag::target::TOP_UDP.to_vec()
        } else {
            crate::diag::target::TOP_TCP.to_vec()
        }
    } else {
        a.ports.clone()
    };
    let opts = portscan::ScanOptions {
        max_parallel: a.max_parallel,
        initial_parallel: a.max_parallel.min(64),
        banners: a.banners,
        ..Default::default()
    };
    let total = ports.len();
    let mut results = Vec::new();
    for (n, chunk) in ports.chunks(PORT_STEP).enumerate() {
        if ctx.cancel.is_cancelled() {
            return Err("cancelled".into());
        }
        let got = portscan::scan(a.host, chunk, a.udp, &opts).await;
        let done = (n * PORT_STEP + chunk.len()).min(total);
        let open: Vec<_> = got
            .iter()
            .filter(|r| r.state == portscan::PortState::Open)
            .collect();
        ctx.progress.send(json!({
            "done": done,
            "total": total,
            "percent": percent(done, total),
            "open": open,
        }));
        results.extend(got);
    }
    Ok(json!({
        "host": a.host,
        "protocol": if a.udp { "udp" } else { "tcp" },
        "ports": results,
    }))
}

async fn run_dns(a: DnsArgs) -> Result<Value, String> {
    let rtype = dns::parse_type(&a.rtype).map_err(|e| format!("rtype: {e}"))?;
    let name = dns::query_name(&a.name, rtype).map_err(|e| format!("name: {e}"))?;
    let servers = if a.servers.is_empty() {
        dns::system_servers().map_err(|e| e.to_string())?
    } else {
        let mut v = Vec::new();
        for (i, s) in a.servers.iter().enumerate() {
            v.push(dns::parse_server(s).map_err(|e| format!("servers[{i}]: {e}"))?);
        }
        v
    };
    let transport = if a.tcp {
        dns::Transport::Tcp
    } else {
        dns::Transport::Udp
    };
    let mut answers = Vec::new();
    for server in servers {
        match dns::query(server, &name, rtype, transport, Duration::from_secs(5)).await {
            Ok(r) => answers.push(json!({ "server": server, "response": r })),
            Err(e) => answers.push(json!({ "server": server, "error": e.to_string() })),
        }
    }
    Ok(json!({ "name": a.name, "rtype": a.rtype, "results": answers }))
}

async fn run_http(a: HttpArgs) -> Result<Value, String> {
    let opts = http::HttpOptions {
        max_redirects: a.max_redirects,
        method: a.method.clone(),
        max_body: 1 << 20,
        ..Default::default()
    };
    let chain = http::check(&a.url, &opts)
        .await
        .map_err(|e| e.to_string())?;
    Ok(json!({ "url": a.url, "responses": chain }))
}

fn percent(done: usize, total: usize) -> f64 {
    if total == 0 {
        100.0
    } else {
        (done as f64 * 1000.0 / total as f64).round() / 10.0
    }
}
