//! Configuration from the centre: the `config.update` command's document, validated, persisted and applied
//! without a restart, and re-applied at start.
//!
//! The document has up to four sections, in the shapes of the agent config file's sections: `monitors`,
//! `snmp`, `acs`, `scan`. **Precedence**: a central section replaces the local file's section of the same name
//! (for `monitors`, each list present — `ping`, `mtr`, `generator` — replaces the local list of that name, and
//! lists the centre does not send stay as the file has them); sections the centre does not send stay as the
//! file has them. Everything else (`state_dir`, `uplink`, `outbox`, `metrics`, `log`, `commands`) is local only.
//!
//! Applying a version:
//!
//! 1. a version not newer than the applied one is skipped (`{"applied_version": current, "skipped": true}`);
//! 2. the document is decoded (unknown keys refused) and the merged configuration validated exactly like the
//!    file at start; any error names the key (`config.monitors.ping[0].targets[1]: ...`) and nothing changes;
//! 3. it is written to `<state_dir>/central-config.json` (temporary file, fsync, rename, fsync of the directory;
//!    mode 0600: it holds SNMP and ACS credentials);
//! 4. it is applied: ping/MTR/generator monitors whose settings changed are stopped and the new ones started
//!    (unchanged ones keep running undisturbed); the SNMP service (poller device list, credentials, discovery,
//!    trap receiver) and the ACS (templates, credentials, listener) are restarted with their new section when it
//!    changed (CWMP sessions in progress at that instant are cut; CPEs retry); the scan allowlist is replaced.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, MonitorsSection, ScanSection};
use crate::diag::ping::IcmpEngine;
use crate::diag::safety::Allowlist;
use crate::monitors;
use crate::outbox::Outbox;

/// File name of the persisted central configuration, in `state_dir`.
pub const FILE_NAME: &str = "central-config.json";
/// How long a restarted service's old tasks may take to stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The persisted document.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persisted {
    /// Its version.
    pub version: u64,
    /// The sections, as received.
    pub config: Value,
}

/// The central sections, decoded.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Central {
    #[serde(default)]
    monitors: Option<MonitorsSection>,
    #[serde(default)]
    snmp: Option<crate::snmp::config::SnmpSection>,
    #[serde(default)]
    acs: Option<crate::acs::AcsSection>,
    #[serde(default)]
    scan: Option<ScanSection>,
}

/// The version applied, read from the persisted file (for `octoisp-agent status`); `None` when the centre never
/// sent one.
pub fn applied_version(state_dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(state_dir.join(FILE_NAME)).ok()?;
    serde_json::from_str::<Persisted>(&text)
        .ok()
        .map(|p| p.version)
}

/// Merges the central document `doc` over the local configuration and validates the result. The error names
/// the key.
pub fn merge(local: &Config, doc: &Value) -> Result<Config, String> {
    let central: Central = serde_path_to_error::deserialize(doc).map_err(|err| {
        let path = err.path().to_string();
        if path == "." {
            format!("config: {}", err.into_inner())
        } else {
            format!("config.{path}: {}", err.into_inner())
        }
    })?;
    let mut cfg = local.clone();
    if let Some(m) = central.monitors {
        let present = |k: &str| doc.get("monitors").and_then(|m| m.get(k)).is_some();
        if present("ping") {
            cfg.monitors.ping = m.ping;
        }
        if present("mtr") {
            cfg.monitors.mtr = m.mtr;
        }
        if present("generator") {
            cfg.monitors.generator = m.generator;
        }
    }
    if let Some(s) = central.snmp {
        cfg.snmp = s;
    }
    if let Some(a) = central.acs {
        cfg.acs = a;
    }
    if let Some(s) = central.scan {
        cfg.scan = s;
    }
    cfg.validate().map_err(|e| format!("config: {e}"))?;
    Ok(cfg)
}

/// A service (SNMP, ACS) that is restarted as a whole when its section changes.
struct Service {
    token: CancellationToken,
    tracker: TaskTracker,
    section: String,
}

/// Starts one monitor task with its stop token.
type Starter = Box<dyn FnOnce(&Runtime, &mut Applied, CancellationToken)>;

struct Applied {
    effective: Config,
    monitors: HashMap<String, CancellationToken>,
    icmp: Option<IcmpEngine>,
    snmp: Option<Service>,
    acs: Option<Service>,
}

/// The running configuration: what the local file and the centre say, and the tasks that implement it.
pub struct Runtime {
    local: Config,
    outbox: Outbox,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    applied: tokio::sync::Mutex<Applied>,
    allow: RwLock<Allowlist>,
    acs: RwLock<Option<Arc<crate::acs::Acs>>>,
    version: AtomicU64,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("version", &self.version())
            .finish()
    }
}

impl Runtime {
    /// Starts the monitors, the SNMP service and the ACS of `local` merged with the persisted central
    /// configuration (when there is one and it is still valid against the local file; otherwise the local file
    /// alone, with an error logged). Tasks run on `tracker` until `shutdown`.
    pub async fn start(
        local: Config,
        outbox: Outbox,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Runtime>> {
        let (effective, version) = match read_persisted(&local.state_dir) {
            Ok(Some(p)) => match merge(&local, &p.config) {
                Ok(cfg) => {
                    tracing::info!(
                        version = p.version,
                        "Applying the central configuration persisted before."
                    );
                    (cfg, p.version)
                }
                Err(err) => {
                    tracing::error!(version = p.version, error = %err, "The persisted central configuration is not valid with this local file; running on the local file alone.");
                    (local.clone(), 0)
                }
            },
            Ok(None) => (local.clone(), 0),
            Err(err) => {
                tracing::error!(error = %err, "Cannot read the persisted central configuration; running on the local file alone.");
                (local.clone(), 0)
            }
        };
        let allow = allowlist(&effective.scan).map_err(anyhow::Error::msg)?;
        let rt = Arc::new(Runtime {
            local,
            outbox,
            tracker,
            shutdown,
            applied: tokio::sync::Mutex::new(Applied {
                effective: effective.clone(),
                monitors: HashMap::new(),
                icmp: None,
                snmp: None,
                acs: None,
            }),
            allow: RwLock::new(allow),
            acs: RwLock::new(None),
            version: AtomicU64::new(version),
        });
        {
            let mut applied = rt.applied.lock().await;
            rt.apply_monitors(&mut applied, &effective.monitors);
            rt.restart_snmp(&mut applied, &effective).await?;
            rt.restart_acs(&mut applied, &effective).await?;
        }
        Ok(rt)
    }

    /// The central version applied (0: none).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The scan allowlist in force.
    pub fn allowlist(&self) -> Allowlist {
        self.allow
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The ACS running now (`None` when `acs.listen` is unset or it failed to start). After a `config.update`
    /// that changes the `acs` section this is the new ACS.
    pub fn acs(&self) -> Option<Arc<crate::acs::Acs>> {
        self.acs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The SNMP section in force (devices and credentials), for `snmp.*` commands.
    pub async fn snmp_section(&self) -> crate::snmp::config::SnmpSection {
        self.applied.lock().await.effective.snmp.clone()
    }

    /// Names of the running monitor tasks (`ping/<name>/<target>/...`), for tests and diagnostics.
    pub async fn monitor_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.applied.lock().await.monitors.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Checks a document against the local file without applying anything; the error names the key.
    pub fn check(&self, doc: &Value) -> Result<(), String> {
        let cfg = merge(&self.local, doc)?;
        allowlist(&cfg.scan).map(|_| ())
    }

    /// Applies central configuration `version` (see the module documentation). `Ok` is the command's output.
    pub async fn apply(&self, version: u64, doc: &Value) -> Result<Value, String> {
        let mut applied = self.applied.lock().await;
        let current = self.version();
        if version <= current {
            return Ok(json!({ "applied_version": current, "skipped": true }));
        }
        let cfg = merge(&self.local, doc)?;
        let allow = allowlist(&cfg.scan)?;
        let persisted = Persisted {
            version,
            config: doc.clone(),
        };
        let dir = self.local.state_dir.clone();
        tokio::task::spawn_blocking(move || write_persisted(&dir, &persisted))
            .await
            .map_err(|e| format!("persisting task failed: {e}"))?
            .map_err(|e| format!("cannot persist the configuration: {e}"))?;
        self.version.store(version, Ordering::Release);
        *self.allow.write().unwrap_or_else(PoisonError::into_inner) = allow;
        self.apply_monitors(&mut applied, &cfg.monitors);
        let mut errors = Vec::new();
        if let Err(e) = self.restart_snmp(&mut applied, &cfg).await {
            errors.push(format!("snmp: {e:#}"));
        }
        if let Err(e) = self.restart_acs(&mut applied, &cfg).await {
            errors.push(format!("acs: {e:#}"));
        }
        applied.effective = cfg;
        tracing::info!(version, "Central configuration applied.");
        if errors.is_empty() {
            Ok(json!({ "applied_version": version }))
        } else {
            Err(format!(
                "version {version} persisted and applied, but a service failed to start: {}",
                errors.join("; ")
            ))
        }
    }

    /// Stops the monitors that are not in `m` (or changed) and starts the new ones.
    fn apply_monitors(&self, applied: &mut Applied, m: &MonitorsSection) {
        let mut wanted: Vec<(String, Starter)> = Vec::new();
        for p in &m.ping {
            for &target in &p.targets {
                let key = format!(
                    "ping/{}/{}/{}/{}/{}/{}",
                    p.name, target, p.interval_ms, p.count, p.size, p.timeout_ms
                );
                let p = p.clone();
                wanted.push((
                    key,
                    Box::new(move |rt: &Self, applied: &mut Applied, token| {
                        if applied.icmp.is_none() {
                            match IcmpEngine::open(&[], None) {
                                Ok(e) => applied.icmp = Some(e),
                                Err(err) => {
                                    tracing::error!(error = %err, "Ping monitors disabled: cannot open ICMP sockets (needs CAP_NET_RAW).");
                                    return;
                                }
                            }
                        }
                        if let Some(engine) = &applied.icmp {
                            let task = monitors::ping::PingTask::new(
                                &p,
                                target,
                                engine.clone(),
                                rt.outbox.clone(),
                            );
                            rt.tracker.spawn(task.run(token));
                        }
                    }),
                ));
            }
        }
        for t in &m.mtr {
            for &target in &t.targets {
                let key = format!(
                    "mtr/{}/{}/{}/{}/{}",
                    t.name, target, t.protocol, t.cycles, t.interval_ms
                );
                let t = t.clone();
                wanted.push((
                    key,
                    Box::new(move |rt: &Self, _: &mut Applied, token| {
                        match monitors::mtr::MtrTask::new(&t, target, rt.outbox.clone()) {
                            Ok(task) => {
                                rt.tracker.spawn(task.run(token));
                            }
                            Err(err) => {
                                tracing::error!(monitor = %t.name, error = %err, "MTR monitor not started.")
                            }
                        }
                    }),
                ));
            }
        }
        for g in &m.generator {
            let key = format!("generator/{g:?}");
            let g = g.clone();
            wanted.push((
                key,
                Box::new(move |rt: &Self, _: &mut Applied, token| {
                    rt.tracker
                        .spawn(monitors::generator::run(g, rt.outbox.clone(), token));
                }),
            ));
        }
        let keep: std::collections::HashSet<&String> = wanted.iter().map(|(k, _)| k).collect();
        let stale: Vec<String> = applied
            .monitors
            .keys()
            .filter(|k| !keep.contains(k))
            .cloned()
            .collect();
        for k in stale {
            if let Some(token) = applied.monitors.remove(&k) {
                token.cancel();
                tracing::info!(monitor = %k, "Monitor stopped.");
            }
        }
        for (key, start) in wanted {
            if applied.monitors.contains_key(&key) {
                continue;
            }
            let token = self.shutdown.child_token();
            start(self, applied, token.clone());
            tracing::info!(monitor = %key, "Monitor started.");
            applied.monitors.insert(key, token);
        }
    }

    async fn restart_snmp(&self, applied: &mut Applied, cfg: &Config) -> anyhow::Result<()> {
        let section = format!("{:?}", cfg.snmp);
        if applied.snmp.as_ref().is_some_and(|s| s.section == section) {
            return Ok(());
        }
        if let Some(old) = applied.snmp.take() {
            stop(old, "SNMP").await;
        }
        let svc = self.new_service(section);
        crate::snmp::service::spawn_all(&cfg.snmp, &self.outbox, &svc.tracker, &svc.token)?;
        self.watch(&svc);
        applied.snmp = Some(svc);
        Ok(())
    }

    async fn restart_acs(&self, applied: &mut Applied, cfg: &Config) -> anyhow::Result<()> {
        let section = format!("{:?}", cfg.acs);
        if applied.acs.as_ref().is_some_and(|s| s.section == section) {
            return Ok(());
        }
        if let Some(old) = applied.acs.take() {
            *self.acs.write().unwrap_or_else(PoisonError::into_inner) = None;
            stop(old, "ACS").await;
        }
        let svc = self.new_service(section);
        let acs = crate::acs::start_in_daemon(cfg, &self.outbox, &svc.tracker, &svc.token).await?;
        *self.acs.write().unwrap_or_else(PoisonError::into_inner) = acs;
        self.watch(&svc);
        applied.acs = Some(svc);
        Ok(())
    }

    /// A service generation: its own token (a child of shutdown) and tracker.
    fn new_service(&self, section: String) -> Service {
        Service {
            token: self.shutdown.child_token(),
            tracker: TaskTracker::new(),
            section,
        }
    }

    /// Makes the daemon's shutdown wait for the tasks of `svc` (spawned by now) too.
    fn watch(&self, svc: &Service) {
        let t = svc.tracker.clone();
        t.close();
        self.tracker.spawn(async move { t.wait().await });
    }
}

async fn stop(svc: Service, what: &str) {
    svc.token.cancel();
    svc.tracker.close();
    if tokio::time::timeout(STOP_GRACE, svc.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            service = what,
            "Old service tasks did not stop within the grace period."
        );
    }
}

fn allowlist(scan: &ScanSection) -> Result<Allowlist, String> {
    let mut ranges = Vec::with_capacity(scan.allowed.len());
    for (i, r) in scan.allowed.iter().enumerate() {
        ranges.push(
            r.parse::<crate::diag::target::Cidr>()
                .map_err(|e| format!("scan.allowed[{i}]: {e}"))?,
        );
    }
    Ok(Allowlist::new(ranges))
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// The persisted document, if any.
pub fn read_persisted(state_dir: &Path) -> Result<Option<Persisted>, String> {
    let p = path(state_dir);
    match std::fs::read_to_string(&p) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// Writes the document atomically with mode 0600.
fn write_persisted(state_dir: &Path, doc: &Persisted) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(state_dir)?;
    let final_path = path(state_dir);
    let tmp = state_dir.join(format!("{FILE_NAME}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(serde_json::to_string_pretty(doc)?.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &final_path)?;
    std::fs::File::open(state_dir)?.sync_all()?;
    Ok(())
}
