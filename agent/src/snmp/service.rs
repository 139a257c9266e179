//! The SNMP side of the daemon: the engine, the poller and its outbox sink, periodic discovery and the trap
//! receiver, all started from the `[snmp]` configuration on the daemon's task tracker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use octoisp_shared::{Event, Record, Severity};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::SnmpSection;
use super::engine::{Engine, EngineConfig};
use super::fingerprint::Rules;
use super::poller::{self, Poller, PollerConfig};
use super::profile::ProfileSet;
use super::{collect, discovery, traps};
use crate::outbox::Outbox;

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
    let poller = Poller::new(engine.clone(), Rules::builtin(), profiles, pcfg, tx);
    let specs = cfg.device_specs().map_err(anyhow::Error::msg)?;
    tracing::info!(devices = specs.len(), "SNMP poller starting.");
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
        let (engine, ob, sd) = (engine.clone(), outbox.clone(), shutdown.clone());
        let timeout = Duration::from_millis(cfg.timeout_ms);
        tracker.spawn(async move {
            let mut known: HashMap<String, super::fingerprint::Fingerprint> = HashMap::new();
            loop {
                match discovery::sweep(
                    &engine,
                    Rules::builtin(),
                    &d.cidrs,
                    d.port,
                    &creds,
                    timeout,
                    d.rate_per_sec,
                )
                .await
                {
                    Ok(found) => {
                        let now = crate::monitors::ping::now_ms();
                        let mut records = Vec::new();
                        for f in found {
                            let key = super::device_key(f.addr);
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
