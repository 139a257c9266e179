//! The commands themselves: each maps its typed arguments onto an existing engine (`crate::diag`, the central
//! configuration runtime) and returns its output JSON, sending progress on the way. The shapes of progress and
//! output are documented in `docs/COMMANDS-AGENT.md`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use octoisp_shared::commands::{
    Args, DnsArgs, HttpArgs, MtrArgs, PingArgs, PortscanArgs, ScanMethod, SnmpDiscoverArgs,
    SnmpGetArgs, SnmpTarget, SnmpWalkArgs, SweepArgs, TraceProto, TracerouteArgs,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Progress;
use crate::acs::tasks::TaskKind;
use crate::central::Runtime;
use crate::diag::ping::{IcmpEngine, PingOptions, SocketOptions};
use crate::diag::stats::RttSummary;
use crate::diag::target::Cidr;
use crate::diag::trace::{TraceOptions, TraceProtocol};
use crate::diag::{dns, http, ping, portscan, sweep, trace};

/// What a command may use.
pub(super) struct Ctx {
    pub(super) runtime: Option<Arc<Runtime>>,
    pub(super) progress: Progress,
    pub(super) cancel: CancellationToken,
    /// The command's timeout (the executor fails it when it passes).
    pub(super) timeout: Duration,
    /// The uplink connection (firmware images are fetched over it).
    pub(super) uplink: crate::acs::fetch::UplinkLink,
    /// The command's id.
    pub(super) command: uuid::Uuid,
    /// Withdrawn commands (`tr069.withdraw`) and the ACS task of each running `tr069.*` command.
    pub(super) withdrawals: Arc<super::withdraw::Withdrawals>,
    /// Set when the command ends because it was withdrawn: reported `Cancelled`, not `Failed`.
    pub(super) withdrawn: Arc<std::sync::atomic::AtomicBool>,
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
        Args::SnmpGet(a) => run_snmp_get(ctx, a).await,
        Args::SnmpWalk(a) => run_snmp_walk(ctx, a).await,
        Args::SnmpDiscover(a) => run_snmp_discover(ctx, a).await,
        Args::Tr069GetParams(a) => {
            let kind = TaskKind::Get { names: a.names };
            super::tr069::run(ctx, &a.device_key, kind).await
        }
        Args::Tr069SetParams(a) => {
            let values = a
                .values
                .into_iter()
                .map(|v| (v.name, v.value, v.xsd_type))
                .collect();
            super::tr069::run(ctx, &a.device_key, TaskKind::Set { values }).await
        }
        Args::Tr069Reboot(a) => super::tr069::run(ctx, &a.device_key, TaskKind::Reboot).await,
        Args::Tr069FactoryReset(a) => {
            super::tr069::run(ctx, &a.device_key, TaskKind::FactoryReset).await
        }
        Args::Tr069Download(a) => {
            let url = match &a.sha256 {
                Some(sha) => super::tr069::firmware_url(ctx, &a.device_key, sha).await?,
                None if a.url.is_empty() => {
                    return Err(
                        "url: give url or sha256 (image_id is resolved by the control plane)"
                            .into(),
                    );
                }
                None => a.url,
            };
            let kind = TaskKind::Download {
                file_type: a.file_type,
                url,
                file_size: a.file_size,
                target_file_name: String::new(),
            };
            super::tr069::run(ctx, &a.device_key, kind).await
        }
        // Served by the executor itself (it takes no running slot).
        Args::Tr069Withdraw(_) => Err("tr069.withdraw is run by the executor".into()),
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
    let engine = IcmpEngine::open_with(
        &a.targets,
        SocketOptions {
            ttl: None,
            tos: a.dscp.map(|d| d << 2),
        },
    )
    .map_err(|e| e.to_string())?;
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
        tos: a.dscp.map_or(0, |d| d << 2),
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
        tos: a.dscp.map_or(0, |d| d << 2),
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
        method: match a.method {
            ScanMethod::Auto => portscan::TcpMethod::Auto,
            ScanMethod::Syn => portscan::TcpMethod::Syn,
            ScanMethod::Connect => portscan::TcpMethod::Connect,
        },
        ..Default::default()
    };
    let total = ports.len();
    let mut results = Vec::new();
    let mut method = portscan::TcpMethod::Connect;
    for (n, chunk) in ports.chunks(PORT_STEP).enumerate() {
        if ctx.cancel.is_cancelled() {
            return Err("cancelled".into());
        }
        let (got, used) = portscan::scan_with_method(a.host, chunk, a.udp, &opts)
            .await
            .map_err(|e| e.to_string())?;
        method = used;
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
    let mut out = json!({
        "host": a.host,
        "protocol": if a.udp { "udp" } else { "tcp" },
        "ports": results,
    });
    if !a.udp {
        out["method"] = json!(method);
    }
    Ok(out)
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

/// A session with the device of an `snmp.*` command: a named credential of the SNMP configuration in force, or
/// a v2c community (default `public`); timeouts and retries from the SNMP configuration.
async fn snmp_session(ctx: &Ctx, dev: &SnmpTarget) -> Result<crate::snmp::Session, String> {
    use crate::snmp::{Credentials, Engine, EngineConfig, Session, Version};
    let section = match &ctx.runtime {
        Some(rt) => rt.snmp_section().await,
        None => crate::snmp::config::SnmpSection::default(),
    };
    let addr = crate::snmp::config::parse_address(&dev.address, 161)
        .map_err(|e| format!("device.address: {e}"))?;
    let target = match &dev.credential {
        Some(name) => {
            let creds = section
                .credentials()
                .map_err(|e| format!("snmp credentials: {e}"))?;
            let (_, version, c) =
                creds
                    .into_iter()
                    .find(|(n, _, _)| n == name)
                    .ok_or_else(|| {
                        format!(
                            "device.credential: no SNMP credential named {name:?} on this agent"
                        )
                    })?;
            section.target(addr, version, c)
        }
        None => {
            let community = dev.community.as_deref().unwrap_or("public");
            section.target(
                addr,
                Version::V2c,
                Credentials::Community(community.as_bytes().to_vec()),
            )
        }
    };
    let engine = Engine::new(&EngineConfig::default())
        .map_err(|e| format!("cannot open the SNMP sockets: {e}"))?;
    Ok(Session::new(engine, target))
}

fn varbind_json(vb: &crate::snmp::VarBind) -> Value {
    json!({ "oid": vb.oid.to_string(), "value": vb.value.to_string() })
}

async fn run_snmp_get(ctx: &Ctx, a: SnmpGetArgs) -> Result<Value, String> {
    let mut oids = Vec::with_capacity(a.oids.len());
    for (i, o) in a.oids.iter().enumerate() {
        oids.push(
            o.parse::<crate::snmp::Oid>()
                .map_err(|e| format!("oids[{i}]: {e}"))?,
        );
    }
    let session = snmp_session(ctx, &a.device).await?;
    let got = session.get(&oids).await.map_err(|e| e.to_string())?;
    let rows: Vec<Value> = got.iter().map(varbind_json).collect();
    Ok(json!({ "device": a.device.address, "varbinds": rows }))
}

/// Rows per `snmp.walk` progress frame.
const WALK_CHUNK: usize = 500;

async fn run_snmp_walk(ctx: &Ctx, a: SnmpWalkArgs) -> Result<Value, String> {
    let root = a
        .oid
        .parse::<crate::snmp::Oid>()
        .map_err(|e| format!("oid: {e}"))?;
    let session = snmp_session(ctx, &a.device).await?;
    let got = session.walk(&root).await.map_err(|e| e.to_string())?;
    let truncated = got.len() > a.max_rows;
    let rows: Vec<Value> = got.iter().take(a.max_rows).map(varbind_json).collect();
    for (n, chunk) in rows.chunks(WALK_CHUNK).enumerate() {
        ctx.progress.send(json!({
            "offset": n * WALK_CHUNK,
            "rows": chunk,
        }));
    }
    Ok(json!({
        "device": a.device.address,
        "oid": a.oid,
        "count": rows.len(),
        "truncated": truncated,
        "rows": rows,
    }))
}

/// One found device as `snmp.discover` reports it.
fn found_json(f: &crate::snmp::discovery::Found) -> Value {
    let fp = &f.fingerprint;
    json!({
        "address": f.addr.ip(),
        "port": f.addr.port(),
        "credential": f.credentials,
        "sys_name": fp.sys_name,
        "sys_descr": fp.sys_descr,
        "sys_object_id": fp.sys_object_id,
        "vendor": fp.vendor,
        "model": fp.model,
        "os": fp.os,
        "version": fp.version,
        "enterprise": fp.enterprise,
    })
}

async fn run_snmp_discover(ctx: &Ctx, a: SnmpDiscoverArgs) -> Result<Value, String> {
    use crate::snmp::{Credentials, Engine, EngineConfig, Version, discovery};
    let mut cidrs = Vec::with_capacity(a.cidrs.len());
    let mut total = 0usize;
    for (i, c) in a.cidrs.iter().enumerate() {
        cidrs.push(c.parse::<Cidr>().map_err(|e| format!("cidrs[{i}]: {e}"))?);
        total += discovery::expand_cidr(c)
            .map_err(|e| format!("cidrs[{i}]: {e}"))?
            .len();
    }
    if total > discovery::MAX_HOSTS {
        return Err(format!(
            "cidrs: {total} addresses in all, more than {}",
            discovery::MAX_HOSTS
        ));
    }
    scan_allowed(ctx, &cidrs)?;
    let section = match &ctx.runtime {
        Some(rt) => rt.snmp_section().await,
        None => crate::snmp::config::SnmpSection::default(),
    };
    let all = section
        .credentials()
        .map_err(|e| format!("snmp credentials: {e}"))?;
    let creds = if a.credentials.is_empty() {
        if all.is_empty() {
            vec![(
                "public".to_owned(),
                Version::V2c,
                Credentials::Community(b"public".to_vec()),
            )]
        } else {
            all
        }
    } else {
        let mut v = Vec::with_capacity(a.credentials.len());
        for (i, name) in a.credentials.iter().enumerate() {
            let c = all.iter().find(|(n, _, _)| n == name).ok_or_else(|| {
                format!("credentials[{i}]: no SNMP credential named {name:?} on this agent")
            })?;
            v.push(c.clone());
        }
        v
    };
    let engine = Engine::new(&EngineConfig::default())
        .map_err(|e| format!("cannot open the SNMP sockets: {e}"))?;
    let timeout = Duration::from_millis(section.timeout_ms);
    let progress = ctx.progress.clone();
    let mut report = |f: &discovery::Found| {
        progress.send(json!({ "found": found_json(f) }));
    };
    let found = tokio::select! {
        _ = ctx.cancel.cancelled() => return Err("cancelled".into()),
        r = discovery::sweep_reporting(
            &engine,
            crate::snmp::fingerprint::Rules::builtin(),
            &a.cidrs,
            a.port,
            &creds,
            timeout,
            a.rate,
            &mut report,
        ) => r?,
    };
    let devices: Vec<Value> = found.iter().map(found_json).collect();
    Ok(json!({ "scanned": total, "found": devices.len(), "devices": devices }))
}

fn percent(done: usize, total: usize) -> f64 {
    if total == 0 {
        100.0
    } else {
        (done as f64 * 1000.0 / total as f64).round() / 10.0
    }
}
