//! The `[snmp]` section of the agent configuration: credentials, devices, discovery, traps and poller limits.
//! Every field is documented here with its default; [`SnmpSection::validate`] runs once at start and names the
//! offending key.
//!
//! ```toml
//! [snmp]
//! max_concurrent = 1000          # polls at once
//!
//! [[snmp.credentials]]
//! name = "ro"
//! version = "2c"
//! community = "public"
//!
//! [[snmp.credentials]]
//! name = "v3"
//! version = "3"
//! user = "monitor"
//! level = "authPriv"
//! auth_protocol = "SHA-256"
//! auth_password = "..."
//! priv_protocol = "AES"
//! priv_password = "..."
//!
//! [[snmp.devices]]
//! address = "192.0.2.1"          # port 161 unless given: "192.0.2.1:1161", "[2001:db8::1]:161"
//! credentials = "v3"
//! interval_secs = 60
//! priority = "high"
//!
//! [snmp.discovery]
//! cidrs = ["192.0.2.0/24"]
//! credentials = ["ro", "v3"]
//!
//! [snmp.traps]
//! listen = "0.0.0.0:162"
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::client::{Credentials, Target};
use super::message::Version;
use super::poller::{DeviceSpec, Priority};
use super::usm::{AuthProto, PrivProto, SecurityLevel, UsmUser};

/// `[snmp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnmpSection {
    /// Directory of extra profiles (`*.toml`), added to (or replacing) the built-in ones. Default: none.
    pub profiles_dir: Option<PathBuf>,
    /// Polls running at once. Default 1000.
    pub max_concurrent: usize,
    /// Extra permits only `priority = "high"` devices may take. Default 100.
    pub reserved_high: usize,
    /// Requests to one device at once. Default 2.
    pub per_device_concurrency: usize,
    /// Requests outstanding on the shared sockets at once. Default 4096.
    pub max_in_flight: usize,
    /// Label tables (ifName, ifAlias, ...) are walked again at least this often, seconds. Default 3600.
    pub label_max_age_secs: u64,
    /// Longest delay between polls of an unreachable device, seconds. Default 600.
    pub max_backoff_secs: u64,
    /// Poll interval of devices that do not set theirs, seconds. Default 60.
    pub interval_secs: u64,
    /// Timeout of one request attempt, milliseconds. Default 1000.
    pub timeout_ms: u64,
    /// Retries after the first attempt. Default 2.
    pub retries: u32,
    /// GETBULK max-repetitions. Default 25.
    pub max_repetitions: u32,
    /// Named credentials.
    pub credentials: Vec<CredentialDef>,
    /// Devices to poll.
    pub devices: Vec<DeviceDef>,
    /// Periodic discovery sweeps; unset disables them.
    pub discovery: Option<DiscoveryDef>,
    /// Trap and inform receiver; unset disables it.
    pub traps: Option<TrapsDef>,
}

impl Default for SnmpSection {
    fn default() -> Self {
        SnmpSection {
            profiles_dir: None,
            max_concurrent: 1000,
            reserved_high: 100,
            per_device_concurrency: 2,
            max_in_flight: 4096,
            label_max_age_secs: 3600,
            max_backoff_secs: 600,
            interval_secs: 60,
            timeout_ms: 1000,
            retries: 2,
            max_repetitions: 25,
            credentials: Vec::new(),
            devices: Vec::new(),
            discovery: None,
            traps: None,
        }
    }
}

/// `[[snmp.credentials]]`: a community or a v3 user, referred to by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialDef {
    /// Name used by devices, discovery and traps.
    pub name: String,
    /// "1", "2c" (default) or "3".
    #[serde(default = "v2c")]
    pub version: Version,
    /// Community (v1/v2c).
    pub community: Option<String>,
    /// v3 user name.
    pub user: Option<String>,
    /// v3 level: noAuthNoPriv, authNoPriv, authPriv (default authPriv when a privacy password is set,
    /// authNoPriv when only an auth password is).
    pub level: Option<String>,
    /// MD5, SHA, SHA-224, SHA-256, SHA-384, SHA-512. Default SHA.
    pub auth_protocol: Option<String>,
    /// Auth password (8 characters at least).
    pub auth_password: Option<String>,
    /// DES, AES, AES-192, AES-256, AES-192-C, AES-256-C. Default AES.
    pub priv_protocol: Option<String>,
    /// Privacy password.
    pub priv_password: Option<String>,
}

fn v2c() -> Version {
    Version::V2c
}

/// `[[snmp.devices]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceDef {
    /// `IP` or `IP:PORT` (`[IPv6]:PORT`).
    pub address: String,
    /// Name of a `[[snmp.credentials]]`.
    pub credentials: String,
    /// Poll interval, seconds (default `snmp.interval_secs`).
    pub interval_secs: Option<u64>,
    /// "high" or "normal" (default).
    #[serde(default)]
    pub priority: Priority,
    /// Time budget of one poll, milliseconds (default: half the interval, at most 30 s).
    pub budget_ms: Option<u64>,
    /// Request timeout, milliseconds (default `snmp.timeout_ms`).
    pub timeout_ms: Option<u64>,
    /// Retries (default `snmp.retries`).
    pub retries: Option<u32>,
}

/// `[snmp.discovery]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryDef {
    /// Networks to sweep (IPv4 CIDRs; IPv6 /112 or longer).
    pub cidrs: Vec<String>,
    /// Credentials to try, in order.
    pub credentials: Vec<String>,
    /// UDP port. Default 161.
    #[serde(default = "port161")]
    pub port: u16,
    /// Seconds between sweeps. Default 86400.
    #[serde(default = "day")]
    pub interval_secs: u64,
    /// Probes per second (rate limit). Default 50.
    #[serde(default = "fifty")]
    pub rate_per_sec: u32,
    /// Whether an ICMP echo sweep finds the live hosts first, so only they are probed with SNMP (saves the SNMP
    /// timeouts of every empty address). Needs raw sockets (root or CAP_NET_RAW); without them every address is
    /// probed. Set false for networks that filter ICMP. Default true.
    #[serde(default = "yes")]
    pub icmp_sweep: bool,
}

fn yes() -> bool {
    true
}

fn port161() -> u16 {
    161
}
fn day() -> u64 {
    86_400
}
fn fifty() -> u32 {
    50
}

/// `[snmp.traps]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrapsDef {
    /// Listen address. Default 0.0.0.0:162.
    #[serde(default = "trap_listen")]
    pub listen: SocketAddr,
    /// Accepted v1/v2c communities; empty accepts any.
    #[serde(default)]
    pub communities: Vec<String>,
    /// Names of v3 credentials accepted.
    #[serde(default)]
    pub users: Vec<String>,
    /// Our engine ID, hex (default derived from the host name).
    pub engine_id: Option<String>,
}

fn trap_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 162))
}

/// Parses `IP`, `IP:PORT` or `[IPv6]:PORT`, with `default_port`.
pub fn parse_address(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(format!(
        "not an address: {s:?} (expected IP, IP:PORT or [IPv6]:PORT)"
    ))
}

impl CredentialDef {
    /// The credentials, with v3 passwords stretched.
    pub fn build(&self) -> Result<Credentials, String> {
        let ctx = |m: String| format!("snmp.credentials {:?}: {m}", self.name);
        match self.version {
            Version::V1 | Version::V2c => {
                let c = self
                    .community
                    .as_deref()
                    .ok_or_else(|| ctx("community is required for v1/v2c".into()))?;
                Ok(Credentials::Community(c.as_bytes().to_vec()))
            }
            Version::V3 => {
                let user = self
                    .user
                    .as_deref()
                    .ok_or_else(|| ctx("user is required for v3".into()))?;
                let level = match &self.level {
                    Some(l) => l.parse::<SecurityLevel>().map_err(ctx)?,
                    None if self.priv_password.is_some() => SecurityLevel::AuthPriv,
                    None if self.auth_password.is_some() => SecurityLevel::AuthNoPriv,
                    None => SecurityLevel::NoAuthNoPriv,
                };
                let auth_p: AuthProto = self
                    .auth_protocol
                    .as_deref()
                    .unwrap_or("SHA")
                    .parse()
                    .map_err(|e: super::usm::UsmError| ctx(e.to_string()))?;
                let priv_p: PrivProto = self
                    .priv_protocol
                    .as_deref()
                    .unwrap_or("AES")
                    .parse()
                    .map_err(|e: super::usm::UsmError| ctx(e.to_string()))?;
                let u = UsmUser::new(
                    user,
                    level,
                    self.auth_password.as_deref().map(|p| (auth_p, p)),
                    self.priv_password.as_deref().map(|p| (priv_p, p)),
                )
                .map_err(|e| ctx(e.to_string()))?;
                Ok(Credentials::Usm(Arc::new(u)))
            }
        }
    }
}

impl SnmpSection {
    /// Checks the section (cheaply: v3 passwords are only length-checked here).
    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrent == 0 || self.per_device_concurrency == 0 || self.max_in_flight == 0 {
            return Err("snmp.max_concurrent, snmp.per_device_concurrency and snmp.max_in_flight must be > 0".into());
        }
        if self.interval_secs == 0 || self.timeout_ms == 0 || self.max_repetitions == 0 {
            return Err(
                "snmp.interval_secs, snmp.timeout_ms and snmp.max_repetitions must be > 0".into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        for c in &self.credentials {
            if !names.insert(c.name.as_str()) {
                return Err(format!("snmp.credentials: duplicate name {:?}", c.name));
            }
            match c.version {
                Version::V3 => {
                    if c.user.is_none() {
                        return Err(format!(
                            "snmp.credentials {:?}: user is required for v3",
                            c.name
                        ));
                    }
                    for (k, v) in [
                        ("auth_password", &c.auth_password),
                        ("priv_password", &c.priv_password),
                    ] {
                        if v.as_ref().is_some_and(|p| p.len() < 8) {
                            return Err(format!(
                                "snmp.credentials {:?}: {k} must be at least 8 characters",
                                c.name
                            ));
                        }
                    }
                    if let Some(l) = &c.level {
                        l.parse::<SecurityLevel>()
                            .map_err(|e| format!("snmp.credentials {:?}: {e}", c.name))?;
                    }
                }
                _ => {
                    if c.community.is_none() {
                        return Err(format!(
                            "snmp.credentials {:?}: community is required for v1/v2c",
                            c.name
                        ));
                    }
                }
            }
        }
        for (i, d) in self.devices.iter().enumerate() {
            parse_address(&d.address, 161)
                .map_err(|e| format!("snmp.devices[{i}].address: {e}"))?;
            if !names.contains(d.credentials.as_str()) {
                return Err(format!(
                    "snmp.devices[{i}] ({}): unknown credentials {:?}",
                    d.address, d.credentials
                ));
            }
            if d.interval_secs == Some(0) {
                return Err(format!(
                    "snmp.devices[{i}] ({}): interval_secs must be > 0",
                    d.address
                ));
            }
        }
        if let Some(disc) = &self.discovery {
            for c in &disc.cidrs {
                super::discovery::expand_cidr(c)
                    .map_err(|e| format!("snmp.discovery.cidrs: {e}"))?;
            }
            for c in &disc.credentials {
                if !names.contains(c.as_str()) {
                    return Err(format!(
                        "snmp.discovery.credentials: unknown credentials {c:?}"
                    ));
                }
            }
            if disc.rate_per_sec == 0 {
                return Err("snmp.discovery.rate_per_sec must be > 0".into());
            }
        }
        if let Some(t) = &self.traps {
            for u in &t.users {
                if !self
                    .credentials
                    .iter()
                    .any(|c| &c.name == u && c.version == Version::V3)
                {
                    return Err(format!("snmp.traps.users: {u:?} is not a v3 credential"));
                }
            }
            if let Some(e) = &t.engine_id {
                hex::decode(e).map_err(|_| "snmp.traps.engine_id must be hex".to_owned())?;
            }
        }
        Ok(())
    }

    /// Builds the named credentials (stretching v3 passwords: about 1 ms each).
    pub fn credentials(&self) -> Result<Vec<(String, Version, Credentials)>, String> {
        self.credentials
            .iter()
            .map(|c| Ok((c.name.clone(), c.version, c.build()?)))
            .collect()
    }

    /// A target for `addr` with the named credentials.
    pub fn target(&self, addr: SocketAddr, version: Version, credentials: Credentials) -> Target {
        Target {
            addr,
            version,
            credentials,
            timeout: Duration::from_millis(self.timeout_ms),
            retries: self.retries,
            max_repetitions: self.max_repetitions,
            context: Vec::new(),
        }
    }

    /// The devices to poll.
    pub fn device_specs(&self) -> Result<Vec<DeviceSpec>, String> {
        let creds = self.credentials()?;
        let mut out = Vec::with_capacity(self.devices.len());
        for d in &self.devices {
            let addr = parse_address(&d.address, 161)?;
            let (_, version, c) = creds
                .iter()
                .find(|(n, _, _)| n == &d.credentials)
                .ok_or_else(|| format!("unknown credentials {:?}", d.credentials))?;
            let mut target = self.target(addr, *version, c.clone());
            if let Some(t) = d.timeout_ms {
                target.timeout = Duration::from_millis(t);
            }
            if let Some(r) = d.retries {
                target.retries = r;
            }
            let interval = Duration::from_secs(d.interval_secs.unwrap_or(self.interval_secs));
            let budget = d
                .budget_ms
                .map(Duration::from_millis)
                .unwrap_or_else(|| (interval / 2).min(Duration::from_secs(30)));
            out.push(DeviceSpec {
                key: super::device_key(addr),
                target,
                interval,
                priority: d.priority,
                budget,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const GOOD: &str = r#"
[snmp]
interval_secs = 30

[[snmp.credentials]]
name = "ro"
community = "public"

[[snmp.credentials]]
name = "v3"
version = "3"
user = "monitor"
auth_protocol = "SHA-256"
auth_password = "authpass123"
priv_password = "privpass123"

[[snmp.devices]]
address = "192.0.2.1"
credentials = "v3"
priority = "high"

[[snmp.devices]]
address = "[2001:db8::1]:1161"
credentials = "ro"
interval_secs = 300

[snmp.traps]
listen = "127.0.0.1:1162"
users = ["v3"]
"#;

    #[test]
    fn a_full_section_builds_devices() {
        let cfg = Config::from_toml("a.toml", GOOD, Vec::new()).unwrap();
        let specs = cfg.snmp.device_specs().unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].key, "snmp:192.0.2.1");
        assert_eq!(specs[0].interval.as_secs(), 30);
        assert_eq!(specs[0].budget.as_secs(), 15);
        assert_eq!(specs[1].key, "snmp:[2001:db8::1]:1161");
        assert_eq!(specs[1].interval.as_secs(), 300);
    }

    #[test]
    fn mistakes_name_the_key() {
        let bad = [
            ("[snmp]\nintervals = 3\n", "intervals"),
            (
                "[[snmp.devices]]\naddress = \"192.0.2.1\"\ncredentials = \"nope\"\n",
                "unknown credentials",
            ),
            (
                "[[snmp.credentials]]\nname = \"x\"\nversion = \"3\"\nuser = \"u\"\nauth_password = \"short\"\n",
                "auth_password",
            ),
            (
                "[[snmp.credentials]]\nname = \"x\"\nversion = \"4\"\ncommunity = \"c\"\n",
                "version",
            ),
            (
                "[snmp.discovery]\ncidrs = [\"10.0.0.0/8\"]\ncredentials = []\n",
                "snmp.discovery.cidrs",
            ),
        ];
        for (text, needle) in bad {
            let err = Config::from_toml("a.toml", text, Vec::new())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
