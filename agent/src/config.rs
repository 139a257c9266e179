//! The agent's configuration: a TOML file (`/etc/octoisp/agent.toml` when installed), overridden by
//! `OCTOISP_AGENT__SECTION__KEY` environment variables, validated once at start.
//!
//! Every field has a default, so an empty file is a valid standalone agent that keeps its outbox in
//! `state_dir`. Unknown keys are errors that name the key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Environment variable prefix of the overrides.
pub const ENV_PREFIX: &str = "OCTOISP_AGENT";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the outbox and the enrolled identity.
    pub state_dir: PathBuf,
    /// Connection to the control plane.
    pub uplink: UplinkSection,
    /// The durable outbox.
    pub outbox: OutboxSection,
    /// Prometheus `/metrics` endpoint.
    pub metrics: MetricsSection,
    /// Logging.
    pub log: LogSection,
    /// Continuous monitors.
    pub monitors: MonitorsSection,
    /// SNMP polling, discovery and traps.
    pub snmp: crate::snmp::config::SnmpSection,
    /// The local TR-069 ACS (off until `acs.listen` is set).
    pub acs: crate::acs::AcsSection,
    /// Ranges remote scans may reach.
    pub scan: ScanSection,
    /// Remote commands from the control plane.
    pub commands: crate::commands::CommandsSection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/octoisp"),
            uplink: UplinkSection::default(),
            outbox: OutboxSection::default(),
            metrics: MetricsSection::default(),
            log: LogSection::default(),
            monitors: MonitorsSection::default(),
            snmp: crate::snmp::config::SnmpSection::default(),
            acs: crate::acs::AcsSection::default(),
            scan: ScanSection::default(),
            commands: crate::commands::CommandsSection::default(),
        }
    }
}

/// Connection to the control plane.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkSection {
    /// `HOST:PORT` of the control plane's QUIC ingest. When unset, the one given at enrollment is used;
    /// an agent that is not enrolled runs standalone and keeps collecting into its outbox.
    pub server: Option<String>,
    /// Most batches in flight at once (the control plane may lower it).
    pub max_in_flight: u16,
    /// First reconnect delay, milliseconds (doubles with jitter up to `backoff_max_ms`).
    pub backoff_min_ms: u64,
    /// Longest reconnect delay, milliseconds.
    pub backoff_max_ms: u64,
}

impl Default for UplinkSection {
    fn default() -> Self {
        Self {
            server: None,
            max_in_flight: 8,
            backoff_min_ms: 500,
            backoff_max_ms: 30_000,
        }
    }
}

/// SQLite durability of the outbox.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// fsync on every commit: survives power loss (default).
    Full,
    /// fsync at checkpoints: survives a crash of the process, not of the machine.
    Normal,
}

/// The durable outbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxSection {
    /// Soft cap on stored content, MiB: above it the oldest metric samples are dropped (and reported).
    pub max_mb: u64,
    /// Hard ceiling, MiB: above it new events and results are refused with an error (and reported).
    pub hard_ceiling_mb: u64,
    /// SQLite synchronous mode.
    pub synchronous: SyncMode,
    /// Most samples in one batch.
    pub batch_max_samples: usize,
    /// Most bytes in one encoded batch.
    pub batch_max_bytes: usize,
    /// zstd level of batches (1 fast .. 19 small).
    pub zstd_level: i32,
}

impl Default for OutboxSection {
    fn default() -> Self {
        Self {
            max_mb: 1024,
            hard_ceiling_mb: 1152,
            synchronous: SyncMode::Full,
            batch_max_samples: 50_000,
            batch_max_bytes: 4 << 20,
            zstd_level: 3,
        }
    }
}

/// Prometheus metrics endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Listen address of `/metrics` and `/healthz`; unset disables it.
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Text or JSON.
    pub format: LogFormat,
    /// Filter in `tracing` syntax, such as `info` or `octoisp_agent=debug,info`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Continuous monitors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorsSection {
    /// Ping monitors.
    pub ping: Vec<PingMonitor>,
    /// Continuous MTR monitors (per-hop samples).
    pub mtr: Vec<MtrMonitor>,
    /// Synthetic sample generators, for load tests and benchmarks.
    pub generator: Vec<GeneratorMonitor>,
}

/// A continuous ping monitor of a list of targets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingMonitor {
    /// Name, for logs and the device label.
    pub name: String,
    /// Targets, IPv4 or IPv6 addresses.
    pub targets: Vec<IpAddr>,
    /// Milliseconds between rounds.
    #[serde(default = "default_ping_interval")]
    pub interval_ms: u64,
    /// Probes per round (loss and min/avg/max are computed over them).
    #[serde(default = "default_ping_count")]
    pub count: u16,
    /// ICMP payload size, bytes.
    #[serde(default = "default_ping_size")]
    pub size: u16,
    /// Milliseconds to wait for each reply.
    #[serde(default = "default_ping_timeout")]
    pub timeout_ms: u64,
    /// IP TTL / hop limit of the probes (default: the system's).
    #[serde(default)]
    pub ttl: Option<u32>,
    /// DSCP of the probes, 0-63 (e.g. 46 for EF), to measure a QoS class (default 0).
    #[serde(default)]
    pub dscp: Option<u8>,
}

/// A continuous MTR monitor: every round of `cycles` probes per hop becomes per-hop samples.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtrMonitor {
    /// Name, for logs and the series labels.
    pub name: String,
    /// Targets, IPv4 or IPv6 addresses.
    pub targets: Vec<IpAddr>,
    /// Probe protocol: `icmp`, `udp` or `tcp`.
    #[serde(default = "default_mtr_protocol")]
    pub protocol: String,
    /// Cycles reduced into one sample per hop.
    #[serde(default = "default_mtr_cycles")]
    pub cycles: usize,
    /// Milliseconds between cycles.
    #[serde(default = "default_mtr_interval")]
    pub interval_ms: u64,
    /// DSCP of the probes, 0-63 (46 = EF): to watch the path the way a marked service (VoIP) travels it.
    #[serde(default)]
    pub dscp: Option<u8>,
}

fn default_mtr_protocol() -> String {
    "icmp".into()
}
fn default_mtr_cycles() -> usize {
    10
}
fn default_mtr_interval() -> u64 {
    1_000
}

fn default_ping_interval() -> u64 {
    10_000
}
fn default_ping_count() -> u16 {
    3
}
fn default_ping_size() -> u16 {
    56
}
fn default_ping_timeout() -> u64 {
    1_000
}

/// Synthetic samples: `series` gauges, one sample each every `interval_ms`, until `total` samples were produced
/// (0 = forever). Its progress is committed with its samples, so a crash neither repeats nor skips a sample.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorMonitor {
    /// Name: the device key is `synthetic:<name>` and the progress key derives from it.
    pub name: String,
    /// Number of series.
    pub series: u32,
    /// Milliseconds between ticks.
    pub interval_ms: u64,
    /// Stop after this many samples; 0 runs forever.
    #[serde(default)]
    pub total: u64,
}

/// Ranges that remote commands (`sweep`, `portscan`) may scan from this POP. Local CLI scans are not limited
/// by it (the technician at the console decides). Empty: no remote scan is allowed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanSection {
    /// CIDRs (`198.51.100.0/24`, `2001:db8::/32`) or single addresses.
    pub allowed: Vec<String>,
}

pub use octoisp_shared::settings::ConfigError;

impl Config {
    /// Loads `path` (or only defaults and environment when `None`) and validates it.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (name, text) = octoisp_shared::settings::read(path)?;
        Self::from_toml(&name, &text, std::env::vars())
    }

    /// Parses and validates configuration text with the given environment.
    pub fn from_toml(
        name: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let cfg: Config = octoisp_shared::settings::load(name, text, env, ENV_PREFIX)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values that serde cannot (ranges, consistency); the error names the key.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.outbox.max_mb == 0 {
            return bad("outbox.max_mb must be at least 1".into());
        }
        if self.outbox.hard_ceiling_mb < self.outbox.max_mb {
            return bad(format!(
                "outbox.hard_ceiling_mb ({}) must be at least outbox.max_mb ({})",
                self.outbox.hard_ceiling_mb, self.outbox.max_mb
            ));
        }
        if !(1..=22).contains(&self.outbox.zstd_level) {
            return bad(format!(
                "outbox.zstd_level must be 1..=22, not {}",
                self.outbox.zstd_level
            ));
        }
        if self.outbox.batch_max_samples == 0 || self.outbox.batch_max_bytes < 64 * 1024 {
            return bad(
                "outbox.batch_max_samples must be > 0 and outbox.batch_max_bytes >= 65536".into(),
            );
        }
        if self.uplink.max_in_flight == 0 || self.uplink.backoff_min_ms == 0 {
            return bad("uplink.max_in_flight and uplink.backoff_min_ms must be > 0".into());
        }
        if self.uplink.backoff_max_ms < self.uplink.backoff_min_ms {
            return bad("uplink.backoff_max_ms must be >= uplink.backoff_min_ms".into());
        }
        for (i, m) in self.monitors.ping.iter().enumerate() {
            if m.targets.is_empty() || m.count == 0 || m.interval_ms < 100 || m.timeout_ms == 0 {
                return bad(format!(
                    "monitors.ping[{i}] ({}): needs targets, count >= 1, interval_ms >= 100, timeout_ms > 0",
                    m.name
                ));
            }
            if u64::from(m.count) * m.timeout_ms.min(1_000) > m.interval_ms * 4 {
                return bad(format!(
                    "monitors.ping[{i}] ({}): count x timeout does not fit the interval",
                    m.name
                ));
            }
            if m.dscp.is_some_and(|d| d > 63) || m.ttl.is_some_and(|t| t == 0 || t > 255) {
                return bad(format!(
                    "monitors.ping[{i}] ({}): dscp must be 0-63 and ttl 1-255",
                    m.name
                ));
            }
        }
        for (i, m) in self.monitors.mtr.iter().enumerate() {
            if m.dscp.is_some_and(|d| d > 63) {
                return bad(format!("monitors.mtr[{i}] ({}): dscp must be 0-63", m.name));
            }
        }
        for (i, r) in self.scan.allowed.iter().enumerate() {
            if let Err(e) = r.parse::<crate::diag::target::Cidr>() {
                return bad(format!("scan.allowed[{i}]: {e}"));
            }
        }
        if self.commands.max_concurrent == 0 || self.commands.max_queued == 0 {
            return bad(
                "commands.max_concurrent and commands.max_queued must be at least 1".into(),
            );
        }
        self.snmp.validate().map_err(ConfigError::Invalid)?;
        if let Err(m) = self.acs.validate() {
            return bad(m);
        }
        let mut names = std::collections::HashSet::new();
        for (i, g) in self.monitors.generator.iter().enumerate() {
            if g.series == 0 || g.interval_ms == 0 || !names.insert(g.name.clone()) {
                return bad(format!(
                    "monitors.generator[{i}] ({}): needs series > 0, interval_ms > 0, a unique name",
                    g.name
                ));
            }
        }
        Ok(())
    }

    /// Where the outbox database lives.
    pub fn outbox_path(&self) -> PathBuf {
        self.state_dir.join("outbox.db")
    }

    /// Where the enrolled identity lives.
    pub fn identity_dir(&self) -> PathBuf {
        self.state_dir.join("identity")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_a_valid_standalone_agent() {
        let cfg = Config::from_toml("a.toml", "", Vec::new()).unwrap();
        assert!(cfg.uplink.server.is_none());
        assert_eq!(cfg.outbox.max_mb, 1024);
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::from_toml("a.toml", "[outbox]\nmax_mib = 3\n", Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_mib") && err.contains("a.toml"), "{err}");
        let text = "[[monitors.ping]]\nname = \"x\"\ntargets = [\"not-an-ip\"]\n";
        let err = Config::from_toml("a.toml", text, Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("monitors.ping"), "{err}");
        let err = Config::from_toml(
            "a.toml",
            "[outbox]\nmax_mb = 10\nhard_ceiling_mb = 5\n",
            Vec::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("hard_ceiling_mb"), "{err}");
    }

    #[test]
    fn ping_monitors_take_dscp_and_ttl_within_range() {
        let ok =
            "[[monitors.ping]]\nname = \"v\"\ntargets = [\"192.0.2.1\"]\ndscp = 46\nttl = 64\n";
        let cfg = Config::from_toml("a.toml", ok, Vec::new()).unwrap();
        assert_eq!(
            (cfg.monitors.ping[0].dscp, cfg.monitors.ping[0].ttl),
            (Some(46), Some(64))
        );
        for bad in ["dscp = 64", "ttl = 0", "ttl = 256"] {
            let text =
                format!("[[monitors.ping]]\nname = \"v\"\ntargets = [\"192.0.2.1\"]\n{bad}\n");
            let err = Config::from_toml("a.toml", &text, Vec::new())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("monitors.ping[0]") && err.contains("dscp"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn environment_overrides() {
        let env = vec![(
            "OCTOISP_AGENT__UPLINK__SERVER".to_owned(),
            "cp.example:4433".to_owned(),
        )];
        let cfg = Config::from_toml("a.toml", "[uplink]\nserver = \"x:1\"\n", env).unwrap();
        assert_eq!(cfg.uplink.server.as_deref(), Some("cp.example:4433"));
    }
}
