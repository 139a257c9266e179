//! The SNMP side of the daemon: the engine, the poller and its outbox sink, periodic discovery and the trap
//! receiver, all started from the `[snmp]` configuration on the daemon's task tracker.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use octoisp_shared::{Event, Record, Severity};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::Credentials;
use super::config::{DiscoveryDef, SnmpSection};
use super::discovered::{Discovered, FORGET_AFTER, Registry};
use super::engine::{Engine, EngineConfig};
use super::fingerprint::Rules;
use super::message::Version;
use super::poller::DeviceSpec;
use super::poller::{self, Poller, PollerConfig};
use super::profile::ProfileSet;
use super::{collect, discovery, traps};
use crate::outbox::Outbox;

/// State key of the last discovery sweep: `<ms> <port>|<cidrs>|<credentials>`.
const LAST_SWEEP_KEY: &str = "snmp.discovery.last_sweep";

/// How a discovered device is polled: with the credential that answered (as configured now), the section's
/// interval and request settings. None when that credential is no longer offered to discovery or the address left
/// its networks or port.
fn discovered_spec(
    cfg: &SnmpSection,
    d: &DiscoveryDef,
    creds: &[(String, Version, Credentials)],
    key: &str,
    dev: &Discovered,
) -> Option<DeviceSpec> {
    let (_, version, c) = creds.iter().find(|(n, _, _)| *n == dev.credentials)?;
    if dev.addr.port() != d.port || !discovery::in_cidrs(dev.addr.ip(), &d.cidrs) {
        return None;
    }
    let interval = Duration::from_secs(cfg.interval_secs);
    Some(DeviceSpec {
        key: key.to_owned(),
        target: cfg.target(dev.addr, *version, c.clone()),
        interval,
        priority: poller::Priority::Normal,
        budget: (interval / 2).min(Duration::from_secs(30)),
    })
}

/// Starts everything `[snmp]` asks for. Returns without starting anything when the section is empty.
pub fn spawn_all(
    cfg: &SnmpSection,
    outbox: &Outbox,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    if cfg.devices.is_empty() && cfg.discovery.is_none() && cfg.traps.is_none() {
        return Ok(());
    }
    let engine = Engine::new(&EngineConfig {
        max_in_flight: cfg.max_in_flight,
        ..Default::default()
    })
    .context("cannot open the SNMP sockets")?;
    let profiles = Arc::new(ProfileSet::load(cfg.profiles_dir.as_deref())?);
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tracker.spawn(poller::run_outbox_sink(rx, outbox.clone()));
    let pcfg = PollerConfig {
        max_concurrent: cfg.max_concurrent,
        reserved_high: cfg.reserved_high,
        max_backoff: Duration::from_secs(cfg.max_backoff_secs),
        start_jitter: true,
        collect: collect::CollectConfig {
            per_device_concurrency: cfg.per_device_concurrency,
            label_max_age: Duration::from_secs(cfg.label_max_age_secs),
        },
    };
    let poller = Poller::new(engine.clone(), Rules::builtin(), profiles.clone(), pcfg, tx);
    let specs = cfg.device_specs().map_err(anyhow::Error::msg)?;
    tracing::info!(devices = specs.len(), "SNMP poller starting.");
    let specs_keys: HashSet<String> = specs.iter().map(|s| s.key.clone()).collect();
    for spec in specs {
        poller.spawn(spec, tracker, shutdown.clone());
    }
    if let Some(d) = cfg.discovery.clone() {
        let creds: Vec<_> = cfg
            .credentials()
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .filter(|(n, _, _)| d.credentials.contains(n))
            .collect();
        let declared: HashSet<String> = specs_keys;
        let mut registry =
            Registry::load(outbox.clone()).context("cannot read the discovered SNMP devices")?;
        let mut active: HashMap<String, CancellationToken> = HashMap::new();
        // Devices found before: polled again at once, unless the configuration no longer allows them.
        let mut dropped = Vec::new();
        for (key, dev) in registry.devices() {
            if declared.contains(key) {
                continue;
            }
            match discovered_spec(cfg, &d, &creds, key, dev) {
                Some(spec) => {
                    let token = shutdown.child_token();
                    poller.spawn(spec, tracker, token.clone());
                    active.insert(key.clone(), token);
                }
                None => dropped.push(key.clone()),
            }
        }
        if !dropped.is_empty() {
            tracing::info!(
                devices = dropped.len(),
                "Discovered SNMP devices dropped: credential or network no longer configured."
            );
            registry.remove(&dropped)?;
        }
        tracing::info!(devices = active.len(), "Discovered SNMP devices polled.");
        let (engine, ob, sd, tr) = (
            engine.clone(),
            outbox.clone(),
            shutdown.clone(),
            tracker.clone(),
        );
        let (poller, cfg, profiles) = (poller.clone(), cfg.clone(), profiles.clone());
        let timeout = Duration::from_millis(cfg.timeout_ms);
        tracker.spawn(async move {
            let mut known: HashMap<String, super::fingerprint::Fingerprint> = registry
                .devices()
                .iter()
                .map(|(k, v)| (k.clone(), v.fingerprint.clone()))
                .collect();
            // A restart (or a configuration change, which restarts this service) does not sweep again before the
            // interval is over, as long as the sweep's settings are the same.
            let sweep_id = format!("{}|{}|{}", d.port, d.cidrs.join(","), d.credentials.join(","));
            if let Ok(Some(last)) = ob.state(LAST_SWEEP_KEY)
                && let Some((at, id)) = last.split_once(' ')
                && id == sweep_id
                && let Ok(at) = at.parse::<i64>()
            {
                let since = crate::monitors::ping::now_ms().saturating_sub(at).max(0) as u64;
                let wait = Duration::from_secs(d.interval_secs).saturating_sub(Duration::from_millis(since));
                if !wait.is_zero() {
                    tracing::info!(next_in_secs = wait.as_secs(), "SNMP discovery swept recently: next sweep later.");
                    tokio::select! {
                        _ = sd.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
            loop {
                let targets = if d.icmp_sweep {
                    match discovery::live_hosts(&d.cidrs, d.rate_per_sec).await {
                        Ok(Some(live)) => {
                            tracing::info!(live = live.len(), "ICMP sweep before SNMP discovery.");
                            live
                        }
                        Ok(None) => d.cidrs.clone(),
                        Err(err) => {
                            tracing::warn!(error = %err, "ICMP sweep failed: probing every address.");
                            d.cidrs.clone()
                        }
                    }
                } else {
                    d.cidrs.clone()
                };
                match discovery::sweep(
                    &engine,
                    Rules::builtin(),
                    &targets,
                    d.port,
                    &creds,
                    timeout,
                    d.rate_per_sec,
                )
                .await
                {
                    Ok(found) => {
                        let now = crate::monitors::ping::now_ms();
                        if let Err(err) = ob.put_state(LAST_SWEEP_KEY, &format!("{now} {sweep_id}")) {
                            tracing::error!(error = %err, "Discovery sweep time not stored.");
                        }
                        let mut records = Vec::new();
                        let mut seen = HashSet::new();
                        for f in found {
                            let key = super::device_key(f.addr);
                            seen.insert(key.clone());
                            if !declared.contains(&key) {
                                let dev = Discovered {
                                    addr: f.addr,
                                    credentials: f.credentials.clone(),
                                    profiles: profiles
                                        .for_device(&f.fingerprint)
                                        .iter()
                                        .map(|p| p.name.clone())
                                        .collect(),
                                    fingerprint: f.fingerprint.clone(),
                                    missed: 0,
                                };
                                let prev = registry.devices().get(&key).cloned();
                                let restart = !active.contains_key(&key)
                                    || prev.as_ref().is_none_or(|p| p.credentials != dev.credentials);
                                if prev.as_ref() != Some(&dev)
                                    && let Err(err) = registry.put(&key, dev.clone())
                                {
                                    tracing::error!(device = %key, error = %err, "Discovered device not stored.");
                                }
                                if restart
                                    && let Some(spec) = discovered_spec(&cfg, &d, &creds, &key, &dev)
                                {
                                    if let Some(old) = active.remove(&key) {
                                        old.cancel();
                                    }
                                    let token = sd.child_token();
                                    poller.spawn(spec, &tr, token.clone());
                                    active.insert(key.clone(), token);
                                    tracing::info!(device = %key, credentials = %dev.credentials, "Discovered SNMP device polled.");
                                }
                            }
                            if known.get(&key) == Some(&f.fingerprint) {
                                continue;
                            }
                            let new = !known.contains_key(&key);
                            records.push(Record::Inventory(poller::inventory(
                                &key,
                                now,
                                &f.fingerprint,
                            )));
                            records.push(Record::Event(Event {
                                id: uuid::Uuid::now_v7(),
                                ts_ms: now,
                                device_key: Some(key.clone()),
                                kind: if new {
                                    "snmp.discovered"
                                } else {
                                    "snmp.changed"
                                }
                                .into(),
                                severity: Severity::Info,
                                message: format!(
                                    "{} {} at {}",
                                    f.fingerprint.vendor.as_deref().unwrap_or("device"),
                                    if new { "found" } else { "changed" },
                                    f.addr
                                ),
                                attrs: vec![("credentials".into(), f.credentials.clone())],
                            }));
                            known.insert(key, f.fingerprint);
                        }
                        // Devices that did not answer this sweep: dropped after FORGET_AFTER sweeps in a row.
                        let mut forget = Vec::new();
                        let missing: Vec<(String, Discovered)> = registry
                            .devices()
                            .iter()
                            .filter(|(k, _)| !seen.contains(*k) && !declared.contains(*k))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        for (key, mut dev) in missing {
                            dev.missed += 1;
                            if dev.missed >= FORGET_AFTER {
                                if let Some(t) = active.remove(&key) {
                                    t.cancel();
                                }
                                known.remove(&key);
                                records.push(Record::Event(Event {
                                    id: uuid::Uuid::now_v7(),
                                    ts_ms: now,
                                    device_key: Some(key.clone()),
                                    kind: "snmp.forgotten".into(),
                                    severity: Severity::Info,
                                    message: format!(
                                        "{} at {} missing from {FORGET_AFTER} discovery sweeps: no longer polled",
                                        dev.fingerprint.vendor.as_deref().unwrap_or("device"),
                                        dev.addr
                                    ),
                                    attrs: Vec::new(),
                                }));
                                forget.push(key);
                            } else if let Err(err) = registry.put(&key, dev) {
                                tracing::error!(device = %key, error = %err, "Discovered device not stored.");
                            }
                        }
                        if let Err(err) = registry.remove(&forget) {
                            tracing::error!(error = %err, "Forgotten devices not removed.");
                        }
                        if !records.is_empty()
                            && let Err(err) = ob.append_records(records).await
                        {
                            tracing::error!(error = %err, "Discovery results not stored.");
                        }
                    }
                    Err(err) => tracing::error!(error = %err, "Discovery sweep failed."),
                }
                tokio::select! {
                    _ = sd.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(d.interval_secs)) => {}
                }
            }
        });
    }
    if let Some(t) = &cfg.traps {
        let creds = cfg.credentials().map_err(anyhow::Error::msg)?;
        let users = creds
            .into_iter()
            .filter(|(n, _, _)| t.users.contains(n))
            .filter_map(|(_, _, c)| match c {
                super::client::Credentials::Usm(u) => Some(u),
                super::client::Credentials::Community(_) => None,
            })
            .collect();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let engine_id = match &t.engine_id {
            Some(h) => hex::decode(h).context("snmp.traps.engine_id")?,
            None => traps::default_engine_id(host.trim()),
        };
        let tcfg = traps::TrapConfig {
            communities: t
                .communities
                .iter()
                .map(|c| c.as_bytes().to_vec())
                .collect(),
            users,
            engine_id,
        };
        let std_sock = std::net::UdpSocket::bind(t.listen)
            .with_context(|| format!("cannot listen for traps on {}", t.listen))?;
        std_sock.set_nonblocking(true)?;
        let sock = tokio::net::UdpSocket::from_std(std_sock)?;
        let (etx, mut erx) = tokio::sync::mpsc::channel::<Event>(1024);
        tracker.spawn(traps::run(sock, tcfg, etx, shutdown.clone()));
        let ob = outbox.clone();
        tracker.spawn(async move {
            while let Some(ev) = erx.recv().await {
                if let Err(err) = ob.append_records(vec![Record::Event(ev)]).await {
                    tracing::error!(error = %err, "Trap event not stored.");
                }
            }
        });
        tracing::info!(listen = %t.listen, "SNMP trap receiver listening.");
    }
    Ok(())
}
