//! OctoISP fleet simulator: emulates on loopback a fleet of CWMP CPEs (parameter trees of real devices,
//! periodic Informs spread evenly, reboots, faulting devices, connection requests) and SNMP devices (moving
//! interface counters, flapping links, dead and slow devices), spread over several agents, and writes those
//! agents' configuration files. Its counters say what it produced, so that a capacity run
//! (`scripts/scale-run.sh`) can compute losses end to end. See docs/SCALING.md.

pub mod agents;
pub mod counters;
pub mod cpes;
pub mod models;
pub mod snmp;

#[path = "../../../agent/tests/acs_support/cpe.rs"]
#[allow(clippy::unwrap_used, missing_docs)]
pub mod cpe;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use counters::Counters;
use cpes::SimCpe;

/// What to simulate and where (command-line flags of `octoisp-fleetsim config` and `run`).
#[derive(Debug, Clone, clap::Parser)]
pub struct Plan {
    /// Agents the fleet is spread over (CPE i and SNMP device j go to agent i mod N, j mod N).
    #[arg(long, default_value_t = 2)]
    pub agents: usize,
    /// Simulated CPEs.
    #[arg(long, default_value_t = 1000)]
    pub cpes: usize,
    /// Simulated SNMP devices.
    #[arg(long, default_value_t = 200)]
    pub snmp: usize,
    /// Periodic Inform interval, seconds.
    #[arg(long, default_value_t = 300.0)]
    pub inform_interval_secs: f64,
    /// First Informs (registrations) spread over this many seconds (default: the Inform interval).
    #[arg(long)]
    pub ramp_secs: Option<f64>,
    /// Percentage of periodic Informs replaced by a BOOT Inform (a simulated reboot).
    #[arg(long, default_value_t = 1.0)]
    pub reboot_pct: f64,
    /// Percentage of CPEs that answer RPCs with faults.
    #[arg(long, default_value_t = 2)]
    pub fault_pct: u8,
    /// Parameters kept per CPE besides its Inform parameters (memory: ~150 bytes each).
    #[arg(long, default_value_t = 40)]
    pub tree_params: usize,
    /// CWMP sessions in flight at once, over the whole fleet.
    #[arg(long, default_value_t = 512)]
    pub max_sessions: usize,
    /// Serial number prefix (serials are PREFIX + 8 digits).
    #[arg(long, default_value = "FS")]
    pub serial_prefix: String,
    /// Directory of CPE models (GenieACS CSV exports).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data"))]
    pub models_dir: PathBuf,
    /// Agent k's ACS listens on 127.0.0.1:(BASE + k).
    #[arg(long, default_value_t = 37547)]
    pub acs_port_base: u16,
    /// Shared connection-request listener (0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub cr_listen: SocketAddr,
    /// UDP port of every SNMP device (each on its own 127.20.x.y address).
    #[arg(long, default_value_t = 16161)]
    pub snmp_port: u16,
    /// Poll interval written to the agents' configuration, seconds.
    #[arg(long, default_value_t = 60)]
    pub snmp_interval_secs: u64,
    /// Polls at once per agent (`snmp.max_concurrent`).
    #[arg(long, default_value_t = 1000)]
    pub snmp_max_concurrent: usize,
    /// Interfaces per SNMP device.
    #[arg(long, default_value_t = 4)]
    pub snmp_ifs: u32,
    /// Percentage of SNMP devices that never answer.
    #[arg(long, default_value_t = 2)]
    pub dead_pct: u8,
    /// Percentage of SNMP devices that answer late.
    #[arg(long, default_value_t = 3)]
    pub slow_pct: u8,
    /// Delay of the slow devices' answers, milliseconds (under the poller's 1 s timeout).
    #[arg(long, default_value_t = 600)]
    pub slow_ms: u64,
    /// Percentage of SNMP devices whose first interface flaps.
    #[arg(long, default_value_t = 5)]
    pub flap_pct: u8,
    /// Seconds between link changes of the flapping interfaces.
    #[arg(long, default_value_t = 120)]
    pub flap_secs: u64,
    /// This process simulates the devices of shard `--shard` of `--shards` (CPE i and SNMP device j when i, j mod
    /// SHARDS = SHARD), so that a fleet larger than one process's open-file limit (a socket per SNMP device) runs
    /// as several processes with the same flags but the shard.
    #[arg(long, default_value_t = 0)]
    pub shard: usize,
    /// Processes the fleet is split over (see `--shard`).
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Control plane QUIC address written to the agents' `[uplink] server` (none: identity's server).
    #[arg(long)]
    pub server: Option<String>,
    /// Agent k's metrics endpoint listens on 127.0.0.1:(BASE + k) (none: no endpoint).
    #[arg(long)]
    pub metrics_port_base: Option<u16>,
}

impl Plan {
    /// Checks the plan; the error names the flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.agents >= 1, "--agents must be at least 1");
        anyhow::ensure!(
            self.shards >= 1 && self.shard < self.shards,
            "--shard {} must be below --shards {} (at least 1)",
            self.shard,
            self.shards
        );
        anyhow::ensure!(
            self.agents <= 1000 && usize::from(self.acs_port_base) + self.agents <= 65_535,
            "--agents {} does not fit above --acs-port-base {}",
            self.agents,
            self.acs_port_base
        );
        anyhow::ensure!(
            self.snmp <= 1 << 20,
            "--snmp {} exceeds 1,048,576 loopback addresses",
            self.snmp
        );
        anyhow::ensure!(
            self.inform_interval_secs > 0.0,
            "--inform-interval-secs must be > 0"
        );
        anyhow::ensure!(
            (0.0..=100.0).contains(&self.reboot_pct),
            "--reboot-pct must be within 0..100"
        );
        anyhow::ensure!(
            u16::from(self.dead_pct) + u16::from(self.slow_pct) + u16::from(self.flap_pct) <= 100,
            "--dead-pct + --slow-pct + --flap-pct exceed 100"
        );
        Ok(())
    }

    /// Whether device `i` (a CPE's or an SNMP device's index) belongs to this process's shard.
    pub fn mine(&self, i: usize) -> bool {
        i % self.shards.max(1) == self.shard
    }
}

/// A running fleet.
#[derive(Debug)]
pub struct Fleet {
    /// What it produced so far.
    pub counters: Arc<Counters>,
    /// The CPEs.
    pub cpes: Arc<Vec<Arc<SimCpe>>>,
    /// The SNMP devices.
    pub snmp: snmp::SnmpFleet,
    /// The connection-request listener's address.
    pub cr_addr: SocketAddr,
    stop_cpes: CancellationToken,
    shutdown: CancellationToken,
    cpe_tasks: JoinSet<()>,
    other_tasks: JoinSet<()>,
}

impl Fleet {
    /// Loads the models, binds every socket and starts every device.
    pub async fn start(plan: &Plan) -> anyhow::Result<Fleet> {
        plan.validate()?;
        let models: Vec<models::Prepared> = models::Model::load_dir(&plan.models_dir)?
            .into_iter()
            .map(|m| models::Prepared::new(m, plan.tree_params))
            .collect();
        let counters = Arc::new(Counters::default());
        let shutdown = CancellationToken::new();
        let stop_cpes = CancellationToken::new();
        let mut other_tasks = JoinSet::new();
        let snmp = snmp::spawn_all(plan, &counters, &shutdown, &mut other_tasks).await?;
        let listener = tokio::net::TcpListener::bind(plan.cr_listen)
            .await
            .with_context(|| {
                format!(
                    "cannot bind the connection-request listener {}",
                    plan.cr_listen
                )
            })?;
        let cr_addr = listener.local_addr()?;
        let cpes: Arc<Vec<Arc<SimCpe>>> = Arc::new(
            (0..plan.cpes)
                .filter(|&i| plan.mine(i))
                .map(|i| Arc::new(cpes::make_cpe(plan, &models[i % models.len()], i, cr_addr)))
                .collect(),
        );
        other_tasks.spawn(cpes::serve_connection_requests(
            listener,
            cpes.clone(),
            plan.shards,
            counters.clone(),
            shutdown.clone(),
        ));
        let mut cpe_tasks = JoinSet::new();
        cpes::spawn_all(plan, &cpes, &counters, &stop_cpes, &mut cpe_tasks);
        Ok(Fleet {
            counters,
            cpes,
            snmp,
            cr_addr,
            stop_cpes,
            shutdown,
            cpe_tasks,
            other_tasks,
        })
    }

    /// Stops the CPEs: no new session starts; returns when the sessions in flight have ended.
    pub async fn stop_cpes(&mut self) {
        self.stop_cpes.cancel();
        while self.cpe_tasks.join_next().await.is_some() {}
    }

    /// Stops answering the first request of new polls (polls in progress complete).
    pub fn pause_polls(&self) {
        self.snmp
            .paused
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops everything.
    pub async fn shutdown(mut self) {
        self.stop_cpes().await;
        self.shutdown.cancel();
        while self.other_tasks.join_next().await.is_some() {}
    }
}

/// Raises the soft limit of open files to the hard limit (a socket per SNMP device, connections per session).
pub fn raise_nofile() -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    Ok(hard)
}
