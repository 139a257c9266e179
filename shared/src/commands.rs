//! The catalogue of commands the control plane can send to an agent ([`crate::Command::name`]).
//!
//! Both sides use it: the control plane to refuse an unknown command or bad arguments at the API (HTTP 422,
//! before anything is queued) and to pick the permission a caller needs; the agent to decode the arguments
//! it runs. Arguments and outputs travel as JSON text (see [`crate::protocol`]), so adding an optional
//! argument needs no protocol version.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What the control plane and the agent know about one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// Dotted name, such as `ping` or `tr069.reboot`.
    pub name: &'static str,
    /// One line for the API description and the console.
    pub summary: &'static str,
    /// Permission the caller needs to create it.
    pub permission: &'static str,
    /// Never run a second time after an interruption (a reboot, a factory reset, a firmware download):
    /// an agent that finds it started but unfinished after a restart reports it failed instead of rerunning it.
    pub once_only: bool,
    /// It sends [`crate::CommandProgress`] while it runs (MTR cycles, scan progress).
    pub streams_progress: bool,
    /// How long it may run once started, in seconds, unless the arguments say otherwise.
    pub default_timeout_secs: u32,
}

/// Every command, in the order the API documents them.
pub const CATALOGUE: &[CommandSpec] = &[
    spec(
        "ping",
        "ICMP echo to one or more targets",
        "diagnostics:run",
        false,
        true,
        120,
    ),
    spec(
        "mtr",
        "MTR: per-hop loss and latency over several cycles",
        "diagnostics:run",
        false,
        true,
        600,
    ),
    spec(
        "traceroute",
        "Traceroute (ICMP, UDP or TCP probes)",
        "diagnostics:run",
        false,
        true,
        120,
    ),
    spec(
        "sweep",
        "IP scan of CIDRs (ICMP echo, optional TCP probes)",
        "diagnostics:run",
        false,
        true,
        600,
    ),
    spec(
        "portscan",
        "Port scan of one host (TCP connect or SYN, UDP)",
        "diagnostics:run",
        false,
        true,
        600,
    ),
    spec(
        "dns",
        "DNS query to the system resolver or chosen servers",
        "diagnostics:run",
        false,
        false,
        60,
    ),
    spec(
        "http",
        "HTTP(S) check with timings",
        "diagnostics:run",
        false,
        false,
        60,
    ),
    spec(
        "snmp.get",
        "SNMP GET of OIDs on a device",
        "diagnostics:run",
        false,
        false,
        60,
    ),
    spec(
        "snmp.walk",
        "SNMP walk of a subtree on a device",
        "diagnostics:run",
        false,
        true,
        300,
    ),
    spec(
        "snmp.discover",
        "SNMP discovery of CIDRs with vendor fingerprinting",
        "diagnostics:run",
        false,
        true,
        1800,
    ),
    spec(
        "tr069.get_params",
        "Read TR-069 parameters of a CPE",
        "tr069:read",
        false,
        false,
        3600,
    ),
    spec(
        "tr069.set_params",
        "Write TR-069 parameters of a CPE",
        "tr069:write",
        false,
        false,
        3600,
    ),
    spec(
        "tr069.reboot",
        "Reboot a CPE",
        "tr069:reboot",
        true,
        false,
        3600,
    ),
    spec(
        "tr069.factory_reset",
        "Factory reset a CPE",
        "tr069:reboot",
        true,
        false,
        3600,
    ),
    spec(
        "tr069.download",
        "Firmware or configuration download to a CPE",
        "tr069:firmware",
        true,
        false,
        7200,
    ),
    spec(
        "tr069.withdraw",
        "Withdraw TR-069 commands whose task no CPE session has started yet (firmware campaign pause or cancel)",
        "tr069:firmware",
        false,
        false,
        60,
    ),
    spec(
        "config.update",
        "Apply a new agent configuration (monitors, SNMP, ACS, scan ranges)",
        "agents:write",
        false,
        false,
        60,
    ),
    spec(
        "noop",
        "Does nothing and succeeds; for tests and benchmarks",
        "diagnostics:run",
        false,
        false,
        10,
    ),
];

const fn spec(
    name: &'static str,
    summary: &'static str,
    permission: &'static str,
    once_only: bool,
    streams_progress: bool,
    default_timeout_secs: u32,
) -> CommandSpec {
    CommandSpec {
        name,
        summary,
        permission,
        once_only,
        streams_progress,
        default_timeout_secs,
    }
}

/// The spec of a command, if it exists.
pub fn spec_of(name: &str) -> Option<&'static CommandSpec> {
    CATALOGUE.iter().find(|s| s.name == name)
}

/// Why a command was refused before it was queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// No command has this name.
    Unknown(String),
    /// The arguments are not valid for this command; the message names the field.
    BadArgs(String),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown(n) => write!(f, "unknown command {n:?}"),
            CommandError::BadArgs(m) => write!(f, "invalid arguments: {m}"),
        }
    }
}

impl std::error::Error for CommandError {}

/// Checks a command name and its JSON arguments: the arguments must decode into the command's typed
/// arguments ([`Args::parse`]: unknown fields refused, every value in its range), and the error names the field.
pub fn validate(name: &str, args_json: &str) -> Result<&'static CommandSpec, CommandError> {
    let spec = spec_of(name).ok_or_else(|| CommandError::Unknown(name.to_owned()))?;
    Args::parse(name, args_json)?;
    Ok(spec)
}

/// Longest timeout an argument `timeout_secs` may ask for (two hours, the longest default in the catalogue).
pub const MAX_TIMEOUT_SECS: u32 = 7200;
/// Longest `noop` sleep.
pub const MAX_NOOP_SLEEP_MS: u64 = 600_000;
/// Most targets of one `ping` command.
pub const MAX_PING_TARGETS: usize = 256;
/// Most probes per target of one `ping` command.
pub const MAX_PING_COUNT: u32 = 10_000;
/// Most cycles of one `mtr` command.
pub const MAX_MTR_CYCLES: u32 = 1_000;
/// Most addresses one `sweep` command may cover.
pub const MAX_SWEEP_HOSTS: u64 = 1 << 16;
/// Most OIDs of one `snmp.get` or TR-069 parameters of one command.
pub const MAX_NAMES: usize = 1_000;

/// The typed arguments of every command (decoded from `Command::args_json`).
#[derive(Debug, Clone, PartialEq)]
pub enum Args {
    /// `noop`.
    Noop(NoopArgs),
    /// `ping`.
    Ping(PingArgs),
    /// `mtr`.
    Mtr(MtrArgs),
    /// `traceroute`.
    Traceroute(TracerouteArgs),
    /// `sweep`.
    Sweep(SweepArgs),
    /// `portscan`.
    Portscan(PortscanArgs),
    /// `dns`.
    Dns(DnsArgs),
    /// `http`.
    Http(HttpArgs),
    /// `snmp.get`.
    SnmpGet(SnmpGetArgs),
    /// `snmp.walk`.
    SnmpWalk(SnmpWalkArgs),
    /// `snmp.discover`.
    SnmpDiscover(SnmpDiscoverArgs),
    /// `tr069.get_params`.
    Tr069GetParams(Tr069GetParamsArgs),
    /// `tr069.set_params`.
    Tr069SetParams(Tr069SetParamsArgs),
    /// `tr069.reboot`.
    Tr069Reboot(Tr069DeviceArgs),
    /// `tr069.factory_reset`.
    Tr069FactoryReset(Tr069DeviceArgs),
    /// `tr069.download`.
    Tr069Download(Tr069DownloadArgs),
    /// `tr069.withdraw`.
    Tr069Withdraw(Tr069WithdrawArgs),
    /// `config.update`.
    ConfigUpdate(ConfigUpdateArgs),
}

impl Args {
    /// Decodes and checks the arguments of command `name`. The error names the field (`targets[2]: ...`).
    pub fn parse(name: &str, args_json: &str) -> Result<Args, CommandError> {
        let value: serde_json::Value = serde_json::from_str(args_json)
            .map_err(|e| CommandError::BadArgs(format!("not JSON: {e}")))?;
        if !value.is_object() {
            return Err(CommandError::BadArgs(
                "arguments must be a JSON object".into(),
            ));
        }
        let args = match name {
            "noop" => Args::Noop(typed(value)?),
            "ping" => Args::Ping(typed(value)?),
            "mtr" => Args::Mtr(typed(value)?),
            "traceroute" => Args::Traceroute(typed(value)?),
            "sweep" => Args::Sweep(typed(value)?),
            "portscan" => Args::Portscan(typed(value)?),
            "dns" => Args::Dns(typed(value)?),
            "http" => Args::Http(typed(value)?),
            "snmp.get" => Args::SnmpGet(typed(value)?),
            "snmp.walk" => Args::SnmpWalk(typed(value)?),
            "snmp.discover" => Args::SnmpDiscover(typed(value)?),
            "tr069.get_params" => Args::Tr069GetParams(typed(value)?),
            "tr069.set_params" => Args::Tr069SetParams(typed(value)?),
            "tr069.reboot" => Args::Tr069Reboot(typed(value)?),
            "tr069.factory_reset" => Args::Tr069FactoryReset(typed(value)?),
            "tr069.download" => Args::Tr069Download(typed(value)?),
            "tr069.withdraw" => Args::Tr069Withdraw(typed(value)?),
            "config.update" => Args::ConfigUpdate(typed(value)?),
            other => return Err(CommandError::Unknown(other.to_owned())),
        };
        args.check().map_err(CommandError::BadArgs)?;
        Ok(args)
    }

    /// The `timeout_secs` override of the arguments, if any.
    pub fn timeout_secs(&self) -> Option<u32> {
        match self {
            Args::Noop(a) => a.timeout_secs,
            Args::Ping(a) => a.timeout_secs,
            Args::Mtr(a) => a.timeout_secs,
            Args::Traceroute(a) => a.timeout_secs,
            Args::Sweep(a) => a.timeout_secs,
            Args::Portscan(a) => a.timeout_secs,
            Args::Dns(a) => a.timeout_secs,
            Args::Http(a) => a.timeout_secs,
            Args::SnmpGet(a) => a.timeout_secs,
            Args::SnmpWalk(a) => a.timeout_secs,
            Args::SnmpDiscover(a) => a.timeout_secs,
            Args::Tr069GetParams(a) => a.timeout_secs,
            Args::Tr069SetParams(a) => a.timeout_secs,
            Args::Tr069Reboot(a) | Args::Tr069FactoryReset(a) => a.timeout_secs,
            Args::Tr069Download(a) => a.timeout_secs,
            Args::Tr069Withdraw(a) => a.timeout_secs,
            Args::ConfigUpdate(a) => a.timeout_secs,
        }
    }

    /// Range checks serde cannot express; the message names the field.
    fn check(&self) -> Result<(), String> {
        if let Some(t) = self.timeout_secs()
            && !(1..=MAX_TIMEOUT_SECS).contains(&t)
        {
            return Err(format!(
                "timeout_secs: must be 1..={MAX_TIMEOUT_SECS}, not {t}"
            ));
        }
        match self {
            Args::Noop(a) => range("sleep_ms", a.sleep_ms, 0, MAX_NOOP_SLEEP_MS),
            Args::Ping(a) => {
                if a.targets.is_empty() || a.targets.len() > MAX_PING_TARGETS {
                    return Err(format!("targets: needs 1..={MAX_PING_TARGETS} addresses"));
                }
                range("count", u64::from(a.count), 1, u64::from(MAX_PING_COUNT))?;
                range("interval_ms", a.interval_ms, 10, 60_000)?;
                range("timeout_ms", a.timeout_ms, 1, 30_000)?;
                dscp(a.dscp)?;
                range("size", u64::from(a.size), 0, 65_000)
            }
            Args::Mtr(a) => {
                range("cycles", u64::from(a.cycles), 1, u64::from(MAX_MTR_CYCLES))?;
                range("interval_ms", a.interval_ms, 100, 60_000)?;
                // The tracer cannot be stopped mid-run: the whole run must fit the longest timeout.
                let run_ms = u64::from(a.cycles) * a.interval_ms;
                if run_ms > u64::from(MAX_TIMEOUT_SECS) * 1000 {
                    return Err(format!(
                        "cycles: {} cycles of interval_ms {} last longer than {MAX_TIMEOUT_SECS} s",
                        a.cycles, a.interval_ms
                    ));
                }
                dscp(a.dscp)?;
                range("max_ttl", u64::from(a.max_ttl), 1, 64)
            }
            Args::Traceroute(a) => {
                range("rounds", u64::from(a.rounds), 1, 10)?;
                range("timeout_ms", a.timeout_ms, 1, 30_000)?;
                dscp(a.dscp)?;
                range("max_ttl", u64::from(a.max_ttl), 1, 64)
            }
            Args::Sweep(a) => {
                if a.cidrs.is_empty() {
                    return Err("cidrs: needs at least one range".into());
                }
                let mut total: u64 = 0;
                for (i, c) in a.cidrs.iter().enumerate() {
                    let (_, size) = parse_cidr(c).map_err(|e| format!("cidrs[{i}]: {e}"))?;
                    total = total.saturating_add(size);
                }
                if total > MAX_SWEEP_HOSTS {
                    return Err(format!(
                        "cidrs: {total} addresses, more than the {MAX_SWEEP_HOSTS} one sweep may cover"
                    ));
                }
                range("count", u64::from(a.count), 1, 10)?;
                range("timeout_ms", a.timeout_ms, 1, 30_000)?;
                range("rate", u64::from(a.rate), 1, 100_000)?;
                range("tcp_ports", a.tcp_ports.len() as u64, 0, 64)
            }
            Args::Portscan(a) => {
                range("ports", a.ports.len() as u64, 0, 65_536)?;
                if a.udp && a.method != ScanMethod::Auto {
                    return Err("method: applies to TCP scans only (leave it out with udp)".into());
                }
                if a.ports.contains(&0) {
                    return Err("ports: port 0 is not a port".into());
                }
                range("max_parallel", a.max_parallel as u64, 1, 4096)
            }
            Args::Dns(a) => {
                if a.name.is_empty() || a.name.len() > 253 {
                    return Err("name: needs 1..=253 characters".into());
                }
                range("servers", a.servers.len() as u64, 0, 8)
            }
            Args::Http(a) => {
                if !(a.url.starts_with("http://") || a.url.starts_with("https://")) {
                    return Err("url: must start with http:// or https://".into());
                }
                if !matches!(a.method.as_str(), "GET" | "HEAD") {
                    return Err(format!("method: GET or HEAD, not {:?}", a.method));
                }
                range("max_redirects", u64::from(a.max_redirects), 0, 20)
            }
            Args::SnmpGet(a) => {
                names("oids", &a.oids)?;
                a.device.check()
            }
            Args::SnmpWalk(a) => {
                if a.oid.is_empty() {
                    return Err("oid: required".into());
                }
                range("max_rows", a.max_rows as u64, 1, 1_000_000)?;
                a.device.check()
            }
            Args::SnmpDiscover(a) => {
                if a.cidrs.is_empty() {
                    return Err("cidrs: needs at least one range".into());
                }
                for (i, c) in a.cidrs.iter().enumerate() {
                    parse_cidr(c).map_err(|e| format!("cidrs[{i}]: {e}"))?;
                }
                if a.port == 0 {
                    return Err("port: must be 1..=65535".into());
                }
                range("rate", u64::from(a.rate), 1, 10_000)?;
                if a.credentials.is_empty() {
                    Ok(())
                } else {
                    names("credentials", &a.credentials)
                }
            }
            Args::Tr069GetParams(a) => {
                device_key(&a.device_key)?;
                names("names", &a.names)
            }
            Args::Tr069SetParams(a) => {
                device_key(&a.device_key)?;
                if a.values.is_empty() || a.values.len() > MAX_NAMES {
                    return Err(format!("values: needs 1..={MAX_NAMES} parameters"));
                }
                Ok(())
            }
            Args::Tr069Reboot(a) | Args::Tr069FactoryReset(a) => device_key(&a.device_key),
            Args::Tr069Download(a) => {
                device_key(&a.device_key)?;
                match (&a.sha256, a.url.is_empty(), a.image_id.is_some()) {
                    (Some(sha), true, _) => {
                        if !is_sha256_hex(sha) {
                            return Err("sha256: must be 64 lowercase hex digits".into());
                        }
                        Ok(())
                    }
                    (None, true, true) => Ok(()),
                    (None, false, false) => {
                        if !(a.url.starts_with("http://") || a.url.starts_with("https://")) {
                            return Err("url: must start with http:// or https://".into());
                        }
                        Ok(())
                    }
                    _ => Err("url: give exactly one of url, sha256 or image_id".into()),
                }
            }
            Args::Tr069Withdraw(a) => {
                if a.commands.is_empty() || a.commands.len() > MAX_WITHDRAW {
                    return Err(format!("commands: needs 1..={MAX_WITHDRAW} command ids"));
                }
                Ok(())
            }
            Args::ConfigUpdate(a) => {
                if a.version == 0 {
                    return Err("version: must be at least 1".into());
                }
                match &a.config {
                    serde_json::Value::Object(map) => {
                        for key in map.keys() {
                            if !matches!(key.as_str(), "monitors" | "snmp" | "acs" | "scan") {
                                return Err(format!(
                                    "config.{key}: unknown section (expected monitors, snmp, acs or scan)"
                                ));
                            }
                        }
                        Ok(())
                    }
                    _ => Err("config: must be a JSON object".into()),
                }
            }
        }
    }
}

fn typed<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, CommandError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." {
            CommandError::BadArgs(inner.to_string())
        } else {
            CommandError::BadArgs(format!("{path}: {inner}"))
        }
    })
}

/// A DSCP is 6 bits.
fn dscp(v: Option<u8>) -> Result<(), String> {
    v.map_or(Ok(()), |d| range("dscp", u64::from(d), 0, 63))
}

fn range(field: &str, v: u64, lo: u64, hi: u64) -> Result<(), String> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!("{field}: must be {lo}..={hi}, not {v}"))
    }
}

fn names(field: &str, list: &[String]) -> Result<(), String> {
    if list.is_empty() || list.len() > MAX_NAMES {
        return Err(format!("{field}: needs 1..={MAX_NAMES} entries"));
    }
    match list.iter().position(|n| n.is_empty()) {
        Some(i) => Err(format!("{field}[{i}]: empty")),
        None => Ok(()),
    }
}

fn device_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 256 {
        return Err("device_key: needs 1..=256 characters".into());
    }
    Ok(())
}

/// Parses `ADDR` or `ADDR/PREFIX`; returns the address and the number of addresses covered.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u64), String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
    let bits: u32 = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u32 = match prefix {
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p <= bits)
            .ok_or_else(|| format!("{s:?}: prefix must be 0..={bits}"))?,
        None => bits,
    };
    let host_bits = bits - prefix;
    let size = if host_bits >= 63 {
        u64::MAX
    } else {
        1u64 << host_bits
    };
    Ok((ip, size))
}

/// Probe protocol of `mtr` and `traceroute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceProto {
    /// ICMP echo (default).
    #[default]
    Icmp,
    /// UDP (Paris).
    Udp,
    /// TCP SYN.
    Tcp,
}

/// `noop`: succeeds after `sleep_ms`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopArgs {
    /// Milliseconds to sleep before succeeding (0..=600000).
    #[serde(default)]
    pub sleep_ms: u64,
    /// Timeout override, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// `ping`: ICMP echo to each target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingArgs {
    /// Addresses to ping (1..=256).
    pub targets: Vec<IpAddr>,
    /// Probes per target (default 4).
    #[serde(default = "d_count4")]
    pub count: u32,
    /// Milliseconds between probes to one target (default 1000, at least 10).
    #[serde(default = "d_1000")]
    pub interval_ms: u64,
    /// Milliseconds to wait for each reply (default 1000).
    #[serde(default = "d_1000")]
    pub timeout_ms: u64,
    /// ICMP payload bytes (default 56).
    #[serde(default = "d_size")]
    pub size: u16,
    /// DSCP of the probes, 0..=63 (46 = EF); unmarked when absent.
    #[serde(default)]
    pub dscp: Option<u8>,
    /// Timeout override, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// `mtr`: per-hop loss and latency over `cycles` rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtrArgs {
    /// The traced address.
    pub target: IpAddr,
    /// Rounds (default 10).
    #[serde(default = "d_cycles")]
    pub cycles: u32,
    /// Milliseconds per round (default 1000, at least 100).
    #[serde(default = "d_1000")]
    pub interval_ms: u64,
    /// Probe protocol (default icmp).
    #[serde(default)]
    pub protocol: TraceProto,
    /// Highest TTL (default 30).
    #[serde(default = "d_ttl")]
    pub max_ttl: u8,
    /// Destination port for udp/tcp.
    #[serde(default)]
    pub port: Option<u16>,
    /// DSCP of the probes, 0..=63 (46 = EF); unmarked when absent.
    #[serde(default)]
    pub dscp: Option<u8>,
    /// Timeout override, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// `traceroute`: the path, `rounds` probes per hop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracerouteArgs {
    /// The traced address.
    pub target: IpAddr,
    /// Probes per hop (default 3).
    #[serde(default = "d_rounds")]
    pub rounds: u32,
    /// Milliseconds a round waits for replies (default 1000).
    #[serde(default = "d_1000")]
    pub timeout_ms: u64,
    /// Probe protocol (default icmp).
    #[serde(default)]
    pub protocol: TraceProto,
    /// Highest TTL (default 30).
    #[serde(default = "d_ttl")]
    pub max_ttl: u8,
    /// Destination port for udp/tcp.
    #[serde(default)]
    pub port: Option<u16>,
    /// DSCP of the probes, 0..=63 (46 = EF); unmarked when absent.
    #[serde(default)]
    pub dscp: Option<u8>,
    /// Timeout override, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// `sweep`: which addresses of `cidrs` answer. Every range must be inside the agent's scan allowlist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepArgs {
    /// Ranges, `ADDR/PREFIX` or single addresses; at most 65536 addresses in all.
    pub cidrs: Vec<String>,
    /// Echo probes per address (default 1).
    #[serde(default = "d_one")]
    pub count: u32,
    /// Milliseconds to wait for a reply (default 1000).
    #[serde(default = "d_1000")]
    pub timeout_ms: u64,
    /// Probes per second (default 1000; the agent's global packet budget applies too).
    #[serde(default = "d_rate")]
    pub rate: u32,
    /// TCP ports tried on hosts that do not answer ICMP.
    #[serde(default)]
    pub tcp_ports: Vec<u16>,
    /// Look up reverse DNS names of live hosts.
    #[serde(default)]
    pub reverse_dns: bool,
    /// Timeout override, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// `portscan`: port states of one host, which must be inside the agent's scan allowlist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortscanArgs {
    /// The scanned host.
    pub host: IpAddr,
    /// Ports; empty = the 100 most common (TCP) or 30 (UDP).
    #[serde(default)]
    pub ports: Vec<u16>,
    /// UDP instead of TCP.
    #[serde(default)]
    pub udp: bool,
    /// How TCP ports are probed (default `auto`: SYN scan when the agent may use raw sockets).
    #[serde(default)]
    pub method: ScanMethod,
    /// Read service banners of open TCP ports.
    #[serde(default)]
    pub banners: bool,
    /// Most probes in flight (default 256).
    #[serde(default = "d_parallel")]
    pub max_parallel: usize,
    /// Timeout override, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// How a TCP `portscan` probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanMethod {
    /// SYN scan when the agent holds CAP_NET_RAW (it does as installed from the package), connect scan
    /// otherwise; the result says which ran.
    #[default]
    Auto,
    /// SYN ("half-open") scan; the command fails when the agent may not use raw sockets.
    Syn,
    /// Full TCP connections.
    Connect,
}

/// `dns`: one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsArgs {
    /// The name queried.
    pub name: String,
    /// Record type (default `A`).
    #[serde(default = "d_rtype")]
    pub rtype: String,
    /// Servers (`IP` or `IP:PORT`); empty = the system's.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Query over TCP.
    #[serde(default)]
    pub tcp: bool,
    /// Timeout override, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// `http`: one HTTP(S) check with timings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpArgs {
    /// `http://` or `https://` URL.
    pub url: String,
    /// `GET` (default) or `HEAD`.
    #[serde(default = "d_get")]
    pub method: String,
    /// Redirects followed (default 5).
    #[serde(default = "d_redirects")]
    pub max_redirects: u8,
    /// Timeout override, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// How to reach an SNMP device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpTarget {
    /// `IP` or `IP:PORT` (default port 161).
    pub address: String,
    /// Name of a credential of the agent's SNMP configuration; without it, `community` (v2c).
    #[serde(default)]
    pub credential: Option<String>,
    /// v2c community when no credential is named (default `public`).
    #[serde(default)]
    pub community: Option<String>,
}

impl SnmpTarget {
    fn check(&self) -> Result<(), String> {
        let ok = self.address.parse::<IpAddr>().is_ok()
            || self.address.parse::<std::net::SocketAddr>().is_ok();
        if ok {
            Ok(())
        } else {
            Err(format!(
                "device.address: {:?} is not IP or IP:PORT",
                self.address
            ))
        }
    }
}

/// `snmp.get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpGetArgs {
    /// The device.
    pub device: SnmpTarget,
    /// Numeric OIDs.
    pub oids: Vec<String>,
    /// Timeout override, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// `snmp.walk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpWalkArgs {
    /// The device.
    pub device: SnmpTarget,
    /// Numeric OID of the subtree.
    pub oid: String,
    /// Most rows returned (default 100000).
    #[serde(default = "d_rows")]
    pub max_rows: usize,
    /// Timeout override, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// `snmp.discover`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpDiscoverArgs {
    /// Ranges to probe; every one must be inside the agent's scan allowlist.
    pub cidrs: Vec<String>,
    /// UDP port probed (default 161).
    #[serde(default = "d_snmp_port")]
    pub port: u16,
    /// Names of SNMP credentials of the agent's configuration to try, in order (default: every configured
    /// credential; v2c community `public` when the agent has none).
    #[serde(default)]
    pub credentials: Vec<String>,
    /// Probes started per second (default 50, ≤ 10000).
    #[serde(default = "d_discover_rate")]
    pub rate: u32,
    /// Timeout override, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// `tr069.get_params`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tr069GetParamsArgs {
    /// The CPE (`cwmp:OUI-CLASS-SERIAL`).
    pub device_key: String,
    /// Parameter names or partial paths (ending in `.`).
    pub names: Vec<String>,
    /// Timeout override, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// One parameter to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamValue {
    /// Full parameter name.
    pub name: String,
    /// Value, as text.
    pub value: String,
    /// XSD type (default `xsd:string`).
    #[serde(default = "d_xsd")]
    pub xsd_type: String,
}

/// `tr069.set_params`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tr069SetParamsArgs {
    /// The CPE.
    pub device_key: String,
    /// Parameters to write.
    pub values: Vec<ParamValue>,
    /// Timeout override, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// `tr069.reboot` and `tr069.factory_reset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tr069DeviceArgs {
    /// The CPE.
    pub device_key: String,
    /// Timeout override, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// `tr069.download`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tr069DownloadArgs {
    /// The CPE.
    pub device_key: String,
    /// Where the CPE fetches the file. Empty when `sha256` names an image of the control plane instead.
    #[serde(default)]
    pub url: String,
    /// A firmware image held by the control plane (SHA-256, lowercase hex): the agent fetches it over its uplink
    /// unless cached, and gives the CPE a URL on its own firmware server. Exactly one of `url` and `sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The same image by its id at the API (`/api/v1/firmware/images/{id}`): the control plane replaces it by
    /// `sha256` (and `file_size`) before queueing; the agent never sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<uuid::Uuid>,
    /// CWMP FileType (default `1 Firmware Upgrade Image`).
    #[serde(default = "d_file_type")]
    pub file_type: String,
    /// Size in bytes, when known.
    #[serde(default)]
    pub file_size: u64,
    /// Timeout override, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// `tr069.withdraw`: the agent removes the queued TR-069 tasks of these commands (of its own `tr069.*` commands)
/// when no CPE session has started them yet, and those commands end `cancelled`; a task already sent to its CPE
/// (a download under way) is left to finish and its command reports how it ended. A listed command that has not
/// reached the agent yet is refused when it does (`cancelled`), so the order of arrival does not matter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tr069WithdrawArgs {
    /// The commands to withdraw (ids of `tr069.*` commands of this agent).
    pub commands: Vec<uuid::Uuid>,
    /// Timeout override, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// Most commands one `tr069.withdraw` names.
pub const MAX_WITHDRAW: usize = 10_000;

/// `config.update`: a new central configuration for the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigUpdateArgs {
    /// Version, increasing; a version not newer than the applied one is skipped.
    pub version: u64,
    /// Sections `monitors`, `snmp`, `acs`, `scan`, in the shapes of the agent's config file (the agent validates
    /// them fully before applying anything).
    pub config: serde_json::Value,
    /// Timeout override, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

fn d_snmp_port() -> u16 {
    161
}
fn d_discover_rate() -> u32 {
    50
}
fn d_count4() -> u32 {
    4
}
fn d_1000() -> u64 {
    1000
}
fn d_size() -> u16 {
    56
}
fn d_cycles() -> u32 {
    10
}
fn d_ttl() -> u8 {
    30
}
fn d_rounds() -> u32 {
    3
}
fn d_one() -> u32 {
    1
}
fn d_rate() -> u32 {
    1000
}
fn d_parallel() -> usize {
    256
}
fn d_rtype() -> String {
    "A".into()
}
fn d_get() -> String {
    "GET".into()
}
fn d_redirects() -> u8 {
    5
}
fn d_rows() -> usize {
    100_000
}
fn d_xsd() -> String {
    "xsd:string".into()
}
/// Whether `s` is a SHA-256 digest in lowercase hex (how firmware images are named everywhere).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn d_file_type() -> String {
    "1 Firmware Upgrade Image".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_known() {
        for (i, s) in CATALOGUE.iter().enumerate() {
            assert!(
                CATALOGUE[i + 1..].iter().all(|o| o.name != s.name),
                "{} twice",
                s.name
            );
        }
        assert!(validate("noop", "{}").is_ok());
        assert!(validate("ping", r#"{"targets":["127.0.0.1"]}"#).is_ok());
        assert!(validate("ping", "{}").is_err());
        assert_eq!(
            validate("reboot-everything", "{}"),
            Err(CommandError::Unknown("reboot-everything".into()))
        );
        assert!(matches!(
            validate("ping", "[1]"),
            Err(CommandError::BadArgs(_))
        ));
        assert!(matches!(
            validate("ping", "{"),
            Err(CommandError::BadArgs(_))
        ));
    }

    fn bad(name: &str, args: &str) -> String {
        match validate(name, args) {
            Err(CommandError::BadArgs(m)) => m,
            other => panic!("{name} {args}: expected BadArgs, got {other:?}"),
        }
    }

    #[test]
    fn bad_arguments_name_the_field() {
        let m = bad("ping", r#"{"targets":["127.0.0.1","nope"]}"#);
        assert!(m.starts_with("targets[1]"), "{m}");
        let m = bad("ping", r#"{"targets":["127.0.0.1"],"count":0}"#);
        assert!(m.starts_with("count:"), "{m}");
        let m = bad("ping", r#"{"targets":["127.0.0.1"],"colour":"red"}"#);
        assert!(m.contains("colour"), "{m}");
        let m = bad("mtr", r#"{"target":"127.0.0.1","protocol":"sctp"}"#);
        assert!(m.starts_with("protocol"), "{m}");
        for kind in ["mtr", "traceroute"] {
            let m = bad(kind, r#"{"target":"127.0.0.1","dscp":64}"#);
            assert!(m.starts_with("dscp:"), "{kind}: {m}");
        }
        let m = bad("ping", r#"{"targets":["127.0.0.1"],"dscp":64}"#);
        assert!(m.starts_with("dscp:"), "{m}");
        assert!(validate("ping", r#"{"targets":["127.0.0.1"],"dscp":46}"#).is_ok());
        let m = bad("sweep", r#"{"cidrs":["10.0.0.0/8"]}"#);
        assert!(m.starts_with("cidrs:"), "{m}");
        let m = bad("sweep", r#"{"cidrs":["10.0.0.0/33"]}"#);
        assert!(m.starts_with("cidrs[0]"), "{m}");
        let m = bad(
            "mtr",
            r#"{"target":"127.0.0.1","cycles":1000,"interval_ms":60000}"#,
        );
        assert!(m.starts_with("cycles:"), "{m}");
        let m = bad("noop", r#"{"timeout_secs":0}"#);
        assert!(m.starts_with("timeout_secs"), "{m}");
        let m = bad("config.update", r#"{"version":2,"config":{"uplink":{}}}"#);
        assert!(m.contains("config.uplink"), "{m}");
        let m = bad("tr069.reboot", r#"{}"#);
        assert!(m.contains("device_key"), "{m}");
        let m = bad("snmp.discover", r#"{"cidrs":["10.0.0.0/24"],"rate":0}"#);
        assert!(m.starts_with("rate"), "{m}");
        let m = bad(
            "snmp.discover",
            r#"{"cidrs":["10.0.0.0/24"],"credentials":[""]}"#,
        );
        assert!(m.starts_with("credentials[0]"), "{m}");
        assert!(validate("snmp.discover", r#"{"cidrs":["10.0.0.0/24"]}"#).is_ok());
        for spec in CATALOGUE {
            // Every command in the catalogue has typed arguments.
            assert!(
                !matches!(Args::parse(spec.name, "{}"), Err(CommandError::Unknown(_))),
                "{}",
                spec.name
            );
        }
    }
}
