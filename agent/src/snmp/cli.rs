//! `octoisp-agent snmp ...`: the field technician's SNMP commands, with net-snmp's flags (`-v 1|2c|3`, `-c`, `-u`,
//! `-l`, `-a`, `-A`, `-x`, `-X`, `-t`, `-r`), human output by default and `--json`.
//!
//! The arguments after `snmp` are parsed here with a parser of their own, so that `-c` means the community (as in
//! net-snmp) rather than the agent's global `--config`, and so that a bad command line exits with 64 (EX_USAGE).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use super::client::{Credentials, Session, SnmpError, Target};
use super::collect::{self, CollectConfig, DeviceState};
use super::config::parse_address;
use super::engine::{Engine, EngineConfig};
use super::fingerprint::{self, Rules};
use super::message::Version;
use super::pdu::{Value, VarBind};
use super::profile::ProfileSet;
use super::usm::{AuthProto, PrivProto, SecurityLevel, UsmUser};
use super::{Oid, device_key, discovery, poller, sim, traps};
use crate::config::Config;

/// Exit code of a bad command line.
const EXIT_USAGE: u8 = 64;

/// Prints a line to stdout, ignoring a closed pipe (`snmp walk ... | head`).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// `octoisp-agent snmp ARGS...` (parsed by [`run`]).
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct SnmpArgs {
    /// get | walk | fingerprint | poll | discover | traps, then net-snmp style options (`snmp help` for more).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<String>,
}

#[derive(Debug, Parser)]
#[command(
    name = "octoisp-agent snmp",
    about = "SNMP tools for field technicians (net-snmp flags)"
)]
struct SnmpCli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Args, Clone)]
struct Common {
    /// SNMP version: 1, 2c or 3.
    #[arg(short = 'v', default_value = "2c")]
    version: String,
    /// Community (v1/v2c).
    #[arg(short = 'c', default_value = "public")]
    community: String,
    /// v3 security name (user).
    #[arg(short = 'u')]
    user: Option<String>,
    /// v3 security level: noAuthNoPriv, authNoPriv or authPriv.
    #[arg(short = 'l')]
    level: Option<String>,
    /// v3 auth protocol: MD5, SHA, SHA-224, SHA-256, SHA-384, SHA-512.
    #[arg(short = 'a', default_value = "SHA")]
    auth_protocol: String,
    /// v3 auth password.
    #[arg(short = 'A')]
    auth_password: Option<String>,
    /// v3 privacy protocol: DES, AES, AES-192, AES-256, AES-192-C, AES-256-C.
    #[arg(short = 'x', default_value = "AES")]
    priv_protocol: String,
    /// v3 privacy password.
    #[arg(short = 'X')]
    priv_password: Option<String>,
    /// v3 context name.
    #[arg(short = 'n', default_value = "")]
    context: String,
    /// Timeout of each attempt, seconds.
    #[arg(short = 't', default_value_t = 1.0)]
    timeout: f64,
    /// Retries.
    #[arg(short = 'r', default_value_t = 1)]
    retries: u32,
    /// GETBULK max-repetitions.
    #[arg(long, default_value_t = 25)]
    max_repetitions: u32,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// GET of one or more OIDs.
    Get {
        #[command(flatten)]
        common: Common,
        /// HOST[:PORT].
        host: String,
        /// OIDs, numeric (`1.3.6.1.2.1.1.1.0`).
        #[arg(required = true)]
        oids: Vec<String>,
    },
    /// Walk a subtree (GETBULK; GETNEXT for v1 or when GETBULK fails).
    Walk {
        #[command(flatten)]
        common: Common,
        /// HOST[:PORT].
        host: String,
        /// Root OID (default: the whole MIB-2, 1.3.6.1.2.1).
        oid: Option<String>,
    },
    /// Identify the device: vendor, model, OS, version.
    Fingerprint {
        #[command(flatten)]
        common: Common,
        /// HOST[:PORT].
        host: String,
    },
    /// Poll the device with its matching profiles and print the metrics.
    Poll {
        #[command(flatten)]
        common: Common,
        /// HOST[:PORT].
        host: String,
        /// Seconds between the two polls that rates need (0: one poll, no rates).
        #[arg(long, default_value_t = 5)]
        rate_secs: u64,
    },
    /// Find SNMP devices in networks.
    Discover {
        #[command(flatten)]
        common: Common,
        /// CIDRs or addresses.
        #[arg(required = true)]
        cidrs: Vec<String>,
        /// UDP port.
        #[arg(long, default_value_t = 161)]
        port: u16,
        /// Probes per second.
        #[arg(long, default_value_t = 50)]
        rate: u32,
    },
    /// Receive traps and informs and print them.
    Traps {
        #[command(flatten)]
        common: Common,
        /// Listen address.
        #[arg(long, default_value = "0.0.0.0:162")]
        listen: SocketAddr,
    },
    /// Simulate many devices on consecutive ports (benchmarks).
    #[command(hide = true)]
    Simulate {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        listen: std::net::IpAddr,
        /// First port.
        #[arg(long)]
        base_port: u16,
        /// Number of devices.
        #[arg(long, default_value_t = 1)]
        count: u16,
        /// Interfaces per device.
        #[arg(long, default_value_t = 8)]
        interfaces: u32,
        /// Community.
        #[arg(short = 'c', default_value = "public")]
        community: String,
    },
    /// Poll simulated devices with the poller and report throughput, CPU and memory (benchmarks).
    #[command(hide = true)]
    Bench {
        /// Address of the devices.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// First port.
        #[arg(long)]
        base_port: u16,
        /// Number of devices.
        #[arg(long)]
        count: u16,
        /// Poll interval, seconds.
        #[arg(long, default_value_t = 60)]
        interval_secs: u64,
        /// Run time, seconds.
        #[arg(long, default_value_t = 60)]
        duration_secs: u64,
        /// Community.
        #[arg(short = 'c', default_value = "public")]
        community: String,
    },
}

/// Runs an `snmp` command.
pub async fn run(args: SnmpArgs, cfg: &Config) -> anyhow::Result<ExitCode> {
    let argv = std::iter::once("octoisp-agent snmp".to_owned()).chain(args.args);
    let cli = match SnmpCli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return Ok(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(EXIT_USAGE),
            });
        }
    };
    match exec(cli.command, cfg).await {
        Ok(code) => Ok(code),
        Err(CliError::Usage(m)) => {
            eprintln!("octoisp-agent snmp: {m}");
            Ok(ExitCode::from(EXIT_USAGE))
        }
        Err(CliError::Snmp(e)) => {
            eprintln!("octoisp-agent snmp: {e}");
            Ok(ExitCode::from(if e.is_auth() { 3 } else { 1 }))
        }
        Err(CliError::Other(e)) => Err(e),
    }
}

enum CliError {
    Usage(String),
    Snmp(SnmpError),
    Other(anyhow::Error),
}

impl From<SnmpError> for CliError {
    fn from(e: SnmpError) -> Self {
        CliError::Snmp(e)
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::Other(e)
    }
}

impl Common {
    fn version(&self) -> Result<Version, CliError> {
        self.version.parse().map_err(CliError::Usage)
    }

    fn credentials(&self) -> Result<Credentials, CliError> {
        match self.version()? {
            Version::V3 => {
                let user = self
                    .user
                    .as_deref()
                    .ok_or_else(|| CliError::Usage("-v 3 needs -u USER".into()))?;
                let level: SecurityLevel = match &self.level {
                    Some(l) => l.parse().map_err(CliError::Usage)?,
                    None if self.priv_password.is_some() => SecurityLevel::AuthPriv,
                    None if self.auth_password.is_some() => SecurityLevel::AuthNoPriv,
                    None => SecurityLevel::NoAuthNoPriv,
                };
                let a: AuthProto = self
                    .auth_protocol
                    .parse()
                    .map_err(|e: super::usm::UsmError| CliError::Usage(e.to_string()))?;
                let x: PrivProto = self
                    .priv_protocol
                    .parse()
                    .map_err(|e: super::usm::UsmError| CliError::Usage(e.to_string()))?;
                if level != SecurityLevel::NoAuthNoPriv && self.auth_password.is_none() {
                    return Err(CliError::Usage(format!(
                        "-l {level:?} needs -A AUTH_PASSWORD"
                    )));
                }
                if level == SecurityLevel::AuthPriv && self.priv_password.is_none() {
                    return Err(CliError::Usage("-l authPriv needs -X PRIV_PASSWORD".into()));
                }
                let u = UsmUser::new(
                    user,
                    level,
                    self.auth_password.as_deref().map(|p| (a, p)),
                    self.priv_password.as_deref().map(|p| (x, p)),
                )
                .map_err(|e| CliError::Usage(e.to_string()))?;
                Ok(Credentials::Usm(Arc::new(u)))
            }
            _ => Ok(Credentials::Community(self.community.as_bytes().to_vec())),
        }
    }

    fn target(&self, host: &str) -> Result<Target, CliError> {
        let addr = resolve(host)?;
        if !(self.timeout > 0.0 && self.timeout <= 600.0) {
            return Err(CliError::Usage(format!(
                "-t {}: timeout must be between 0 and 600 seconds",
                self.timeout
            )));
        }
        Ok(Target {
            addr,
            version: self.version()?,
            credentials: self.credentials()?,
            timeout: Duration::from_secs_f64(self.timeout),
            retries: self.retries,
            max_repetitions: self.max_repetitions.max(1),
            context: self.context.as_bytes().to_vec(),
        })
    }
}

fn resolve(host: &str) -> Result<SocketAddr, CliError> {
    if let Ok(a) = parse_address(host, 161) {
        return Ok(a);
    }
    let with_port = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:161")
    };
    use std::net::ToSocketAddrs;
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            CliError::Usage(format!(
                "cannot resolve host {host:?} (expected HOST[:PORT])"
            ))
        })
}

fn parse_oid(s: &str) -> Result<Oid, CliError> {
    s.parse().map_err(|_| {
        CliError::Usage(format!(
            "not a numeric OID: {s:?} (MIB names are not supported; use 1.3.6.1...)"
        ))
    })
}

fn engine() -> Result<Engine, CliError> {
    Engine::new(&EngineConfig::default())
        .context("cannot open a UDP socket")
        .map_err(CliError::Other)
}

fn json_value(v: &Value) -> serde_json::Value {
    match v {
        Value::Integer(i) => (*i).into(),
        Value::Counter32(x) | Value::Gauge32(x) | Value::TimeTicks(x) => (*x).into(),
        Value::Counter64(x) => (*x).into(),
        Value::OctetString(b) => match std::str::from_utf8(b) {
            Ok(s) => s.into(),
            Err(_) => hex::encode(b).into(),
        },
        Value::Oid(o) => o.to_string().into(),
        Value::IpAddress(a) => std::net::Ipv4Addr::from(*a).to_string().into(),
        Value::Opaque(b) => hex::encode(b).into(),
        Value::Null | Value::NoSuchObject | Value::NoSuchInstance | Value::EndOfMibView => {
            serde_json::Value::Null
        }
    }
}

fn print_varbinds(vbs: &[VarBind], json: bool) {
    if json {
        let arr: Vec<_> = vbs
            .iter()
            .map(|v| serde_json::json!({"oid": v.oid.to_string(), "type": v.value.type_name(), "value": json_value(&v.value)}))
            .collect();
        say!("{}", serde_json::Value::Array(arr));
    } else {
        for v in vbs {
            say!("{} = {}", v.oid, v.value);
        }
    }
}

async fn exec(cmd: Cmd, cfg: &Config) -> Result<ExitCode, CliError> {
    match cmd {
        Cmd::Get { common, host, oids } => {
            let oids = oids
                .iter()
                .map(|o| parse_oid(o))
                .collect::<Result<Vec<_>, _>>()?;
            let session = Session::new(engine()?, common.target(&host)?);
            let vbs = session.get(&oids).await?;
            print_varbinds(&vbs, common.json);
        }
        Cmd::Walk { common, host, oid } => {
            let root = parse_oid(oid.as_deref().unwrap_or("1.3.6.1.2.1"))?;
            let session = Session::new(engine()?, common.target(&host)?);
            let mut vbs = session.walk(&root).await?;
            if vbs.is_empty() {
                // net-snmp's behaviour: walking an instance returns that instance.
                vbs = session
                    .get(std::slice::from_ref(&root))
                    .await?
                    .into_iter()
                    .filter(|v| !v.value.is_exception())
                    .collect();
            }
            print_varbinds(&vbs, common.json);
        }
        Cmd::Fingerprint { common, host } => {
            let session = Session::new(engine()?, common.target(&host)?);
            let fp = fingerprint::fingerprint(&session, Rules::builtin()).await?;
            if common.json {
                say!(
                    "{}",
                    serde_json::to_string_pretty(&fp).map_err(anyhow::Error::from)?
                );
            } else {
                for (k, v) in [
                    ("vendor", &fp.vendor),
                    ("model", &fp.model),
                    ("os", &fp.os),
                    ("version", &fp.version),
                    ("sys_object_id", &fp.sys_object_id),
                    ("sys_descr", &fp.sys_descr),
                    ("sys_name", &fp.sys_name),
                    ("enterprise", &fp.enterprise),
                    ("rule", &fp.rule),
                ] {
                    say!("{k:>14}: {}", v.as_deref().unwrap_or("-"));
                }
            }
        }
        Cmd::Poll {
            common,
            host,
            rate_secs,
        } => {
            let target = common.target(&host)?;
            let key = device_key(target.addr);
            let profiles = ProfileSet::load(cfg.snmp.profiles_dir.as_deref())
                .map_err(|e| CliError::Other(e.into()))?;
            let session = Session::new(engine()?, target);
            let mut state = DeviceState::default();
            let ccfg = CollectConfig::default();
            let t0 = Instant::now();
            let now = crate::monitors::ping::now_ms();
            let mut report = collect::poll(
                &session,
                &mut state,
                Rules::builtin(),
                &profiles,
                &ccfg,
                &key,
                now,
            )
            .await?;
            if rate_secs > 0 {
                tokio::time::sleep(Duration::from_secs(rate_secs)).await;
                let now2 = now + t0.elapsed().as_millis() as i64;
                report = collect::poll(
                    &session,
                    &mut state,
                    Rules::builtin(),
                    &profiles,
                    &ccfg,
                    &key,
                    now2,
                )
                .await?;
            }
            let fp = state.fingerprint().cloned().unwrap_or_default();
            if common.json {
                let out = serde_json::json!({
                    "device": key,
                    "fingerprint": fp,
                    "profiles": state.profile_names(),
                    "metrics": report.metrics,
                });
                say!(
                    "{}",
                    serde_json::to_string_pretty(&out).map_err(anyhow::Error::from)?
                );
            } else {
                say!(
                    "{key}: {} {} {} (profiles: {})",
                    fp.vendor.as_deref().unwrap_or("?"),
                    fp.os.as_deref().unwrap_or(""),
                    fp.version.as_deref().unwrap_or(""),
                    state.profile_names().join(", ")
                );
                for m in &report.metrics {
                    let labels: Vec<String> =
                        m.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                    say!("{}{{{}}} {}", m.metric, labels.join(","), m.value);
                }
            }
        }
        Cmd::Discover {
            common,
            cidrs,
            port,
            rate,
        } => {
            let creds = vec![("cli".to_owned(), common.version()?, common.credentials()?)];
            for c in &cidrs {
                discovery::expand_cidr(c).map_err(CliError::Usage)?;
            }
            let timeout = Duration::from_secs_f64(common.timeout.clamp(0.01, 600.0));
            let found = discovery::sweep(
                &engine()?,
                Rules::builtin(),
                &cidrs,
                port,
                &creds,
                timeout,
                rate,
            )
            .await
            .map_err(CliError::Usage)?;
            if common.json {
                say!(
                    "{}",
                    serde_json::to_string_pretty(&found).map_err(anyhow::Error::from)?
                );
            } else {
                for f in &found {
                    let fp = &f.fingerprint;
                    say!(
                        "{:<22} {:<12} {:<10} {:<18} {}",
                        f.addr,
                        fp.vendor.as_deref().unwrap_or("?"),
                        fp.os.as_deref().unwrap_or("-"),
                        fp.model.as_deref().unwrap_or("-"),
                        fp.sys_name.as_deref().unwrap_or("")
                    );
                }
                eprintln!("{} device(s) found", found.len());
            }
        }
        Cmd::Traps { common, listen } => {
            let users = match (common.version()?, common.credentials()?) {
                (Version::V3, Credentials::Usm(u)) => vec![u],
                _ => Vec::new(),
            };
            let sock = tokio::net::UdpSocket::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let tcfg = traps::TrapConfig {
                communities: Vec::new(),
                users,
                engine_id: traps::default_engine_id(host.trim()),
            };
            eprintln!(
                "listening on {listen}, engine ID {}",
                hex::encode(&tcfg.engine_id)
            );
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            let stop = CancellationToken::new();
            crate::daemon::cancel_on_signals(stop.clone());
            tokio::spawn(traps::run(sock, tcfg, tx, stop.clone()));
            while let Some(ev) = rx.recv().await {
                if common.json {
                    let attrs: serde_json::Map<String, serde_json::Value> = ev
                        .attrs
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone().into()))
                        .collect();
                    say!(
                        "{}",
                        serde_json::json!({"kind": ev.kind, "message": ev.message, "device": ev.device_key, "attrs": attrs})
                    );
                } else {
                    say!("{} {}", ev.kind, ev.message);
                    for (k, v) in &ev.attrs {
                        say!("    {k} = {v}");
                    }
                }
            }
        }
        Cmd::Simulate {
            listen,
            base_port,
            count,
            interfaces,
            community,
        } => {
            let stop = CancellationToken::new();
            crate::daemon::cancel_on_signals(stop.clone());
            let mib: sim::Mib = Arc::new(std::sync::RwLock::new(sim::standard_mib(interfaces, 1)));
            for i in 0..count {
                let port = base_port
                    .checked_add(i)
                    .ok_or_else(|| CliError::Usage("ports beyond 65535".into()))?;
                let dev = sim::SimDevice::new(mib.clone(), &community, sim::Behaviour::Normal);
                sim::spawn(SocketAddr::new(listen, port), dev, stop.clone())
                    .await
                    .with_context(|| format!("cannot bind {listen}:{port}"))?;
            }
            eprintln!(
                "simulating {count} devices on {listen}:{base_port}..{}",
                u32::from(base_port) + u32::from(count) - 1
            );
            stop.cancelled().await;
        }
        Cmd::Bench {
            host,
            base_port,
            count,
            interval_secs,
            duration_secs,
            community,
        } => {
            return bench(
                host,
                base_port,
                count,
                interval_secs,
                duration_secs,
                &community,
                cfg,
            )
            .await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cpu_seconds() -> f64 {
    // utime + stime, fields 14 and 15 of /proc/self/stat, in clock ticks (100 Hz on Linux).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            let u: f64 = rest.get(11)?.parse().ok()?;
            let k: f64 = rest.get(12)?.parse().ok()?;
            Some((u + k) / 100.0)
        })
        .unwrap_or(0.0)
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn bench(
    host: std::net::IpAddr,
    base_port: u16,
    count: u16,
    interval_secs: u64,
    duration_secs: u64,
    community: &str,
    cfg: &Config,
) -> Result<ExitCode, CliError> {
    let rss0 = rss_kib("VmRSS:");
    let engine = engine()?;
    let profiles = Arc::new(
        ProfileSet::load(cfg.snmp.profiles_dir.as_deref())
            .map_err(|e| CliError::Other(e.into()))?,
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
    let pcfg = poller::PollerConfig {
        max_concurrent: 2000,
        ..Default::default()
    };
    let p = poller::Poller::new(engine.clone(), Rules::builtin(), profiles, pcfg, tx);
    let tracker = tokio_util::task::TaskTracker::new();
    let stop = CancellationToken::new();
    for i in 0..count {
        let addr = SocketAddr::new(host, base_port + i);
        let mut target = Target::v2c(addr, community);
        target.retries = 1;
        let spec = poller::DeviceSpec {
            key: device_key(addr),
            target,
            interval: Duration::from_secs(interval_secs),
            priority: poller::Priority::Normal,
            budget: Duration::from_secs(10),
        };
        p.spawn(spec, &tracker, stop.clone());
    }
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(duration_secs);
    let (mut polls, mut errors, mut metrics) = (0u64, 0u64, 0u64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            r = rx.recv() => match r {
                Some(r) => {
                    polls += 1;
                    metrics += r.metrics.len() as u64;
                    if r.error.is_some() { errors += 1; }
                }
                None => break,
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    stop.cancel();
    let rss = rss_kib("VmRSS:");
    let hwm = rss_kib("VmHWM:");
    let out = serde_json::json!({
        "devices": count,
        "interval_secs": interval_secs,
        "wall_secs": wall,
        "polls": polls,
        "errors": errors,
        "metrics": metrics,
        "polls_per_sec": polls as f64 / wall,
        "cpu_secs": cpu,
        "polls_per_cpu_sec": if cpu > 0.0 { polls as f64 / cpu } else { 0.0 },
        "cpu_cores_used": cpu / wall,
        "rss_mib": rss as f64 / 1024.0,
        "peak_rss_mib": hwm as f64 / 1024.0,
        "kib_per_device": (rss.saturating_sub(rss0)) as f64 / f64::from(count.max(1)),
    });
    say!("{out}");
    Ok(ExitCode::SUCCESS)
}
