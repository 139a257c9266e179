//! What a polled device costs in memory, counted by a global allocator that keeps the bytes live: the poller's
//! whole per-device footprint (its task, session, schedule and the state kept between polls: fingerprint, label
//! cache, counter readings) after every device was fingerprinted, label-walked and polled.
//!
//! The 20,000-device target (200 MB) leaves about 10 KiB per device for everything, allocator overhead and
//! in-flight polls included; the bounds below are about half of that. (Measured before the state was made
//! compact: 11.7 KB of state and 3.0 KB of task per device.) The simulated devices run in this process but are started, and their buffers allocated,
//! before the baseline is taken.

mod snmp_support;

use std::alloc::System;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cap::Cap;
use octoisp_agent::snmp::client::Session;
use octoisp_agent::snmp::collect::{self, CollectConfig, DeviceState};
use octoisp_agent::snmp::device_key;
use octoisp_agent::snmp::fingerprint::Rules;
use octoisp_agent::snmp::poller::{DeviceSpec, Poller, PollerConfig, Priority};
use octoisp_agent::snmp::profile::ProfileSet;
use octoisp_agent::snmp::sim::{self, Behaviour, SimDevice};
use snmp_support::*;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

fn live() -> isize {
    ALLOC.allocated() as isize
}

const DEVICES: usize = 300;

/// Starts `DEVICES` simulated devices (8 interfaces each, one MIB shared) and answers one GET from each, so their
/// tasks and receive buffers exist before anything is measured.
async fn devices(stop: &CancellationToken) -> Vec<std::net::SocketAddr> {
    let mib: sim::Mib = Arc::new(RwLock::new(sim::standard_mib(8, 1)));
    let mut addrs = Vec::new();
    for _ in 0..DEVICES {
        addrs.push(
            serve(
                SimDevice::new(mib.clone(), "public", Behaviour::Normal),
                stop,
            )
            .await,
        );
    }
    let e = engine();
    for a in &addrs {
        Session::new(e.clone(), v2c(*a))
            .get(&[oid("1.3.6.1.2.1.1.3.0")])
            .await
            .expect("simulated device answers");
    }
    addrs
}

/// Builds what is built once per process on first use (the fingerprint rules, the enterprise index, the regex
/// caches) by polling one device and dropping its state, so that it is not counted per device.
async fn warm_up(
    e: &octoisp_agent::snmp::Engine,
    addr: std::net::SocketAddr,
    profiles: &ProfileSet,
) {
    let s = Session::new(e.clone(), v2c(addr));
    let mut warm = DeviceState::default();
    collect::poll(
        &s,
        &mut warm,
        Rules::builtin(),
        profiles,
        &CollectConfig::default(),
        "warm",
        0,
    )
    .await
    .expect("poll");
}

/// The state kept between polls, per device: two polls of each device (fingerprint, labels, counters).
#[tokio::test(flavor = "current_thread")]
async fn state_kept_between_polls_is_small() {
    let stop = CancellationToken::new();
    let addrs = devices(&stop).await;
    let e = engine();
    let profiles = ProfileSet::builtin().expect("profiles");
    let sessions: Vec<Session> = addrs
        .iter()
        .map(|a| Session::new(e.clone(), v2c(*a)))
        .collect();
    let cfg = CollectConfig::default();
    warm_up(&e, addrs[0], &profiles).await;
    let before = live();
    let mut states: Vec<DeviceState> = Vec::with_capacity(DEVICES);
    let mut metrics = 0;
    let mut after_first = 0;
    for s in &sessions {
        let mut st = DeviceState::default();
        for t in [0, 60_000] {
            let at = live();
            let r = collect::poll(s, &mut st, Rules::builtin(), &profiles, &cfg, "d", t)
                .await
                .expect("poll");
            metrics = r.metrics.len();
            drop(r);
            if t == 0 {
                after_first += live() - at;
            }
        }
        states.push(st);
    }
    let per_device = (live() - before) as f64 / DEVICES as f64;
    eprintln!(
        "state kept per device: {per_device:.0} bytes, {:.0} of them after the first poll ({metrics} metrics per poll)",
        after_first as f64 / DEVICES as f64
    );
    assert!(
        metrics >= 40,
        "the poll collects the interfaces' metrics: {metrics}"
    );
    assert!(
        per_device < 4096.0,
        "a device's state between polls takes {per_device:.0} bytes"
    );
    drop(states);
    stop.cancel();
}

/// The poller's whole footprint per device: task, session, schedule and state, after every device was polled.
#[tokio::test(flavor = "current_thread")]
async fn poller_footprint_per_device_is_small() {
    let stop = CancellationToken::new();
    let addrs = devices(&stop).await;
    let e = engine();
    let profiles = Arc::new(ProfileSet::builtin().expect("profiles"));
    warm_up(&e, addrs[0], &profiles).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(DEVICES);
    let cfg = PollerConfig {
        start_jitter: false,
        ..PollerConfig::default()
    };
    let poller = Poller::new(e, Rules::builtin(), profiles, cfg, tx);
    let tracker = tokio_util::task::TaskTracker::new();
    let before = live();
    for a in &addrs {
        poller.spawn(
            DeviceSpec {
                key: device_key(*a),
                target: v2c(*a),
                interval: Duration::from_secs(3600),
                priority: Priority::Normal,
                budget: Duration::from_secs(30),
            },
            &tracker,
            stop.clone(),
        );
    }
    let spawned = live();
    eprintln!(
        "spawned device tasks: {:.0} bytes per device",
        (spawned - before) as f64 / DEVICES as f64
    );
    let mut errors = 0;
    for _ in 0..DEVICES {
        let r = rx.recv().await.expect("report");
        errors += usize::from(r.error.is_some());
    }
    assert_eq!(errors, 0, "every simulated device answers");
    let per_device = (live() - before) as f64 / DEVICES as f64;
    eprintln!("poller footprint per device: {per_device:.0} bytes");
    assert!(
        per_device < 6144.0,
        "a polled device costs the poller {per_device:.0} bytes"
    );
    stop.cancel();
    tracker.close();
}

/// The whole IANA registry (62,000 rows) costs its index only: the text stays in the binary.
#[test]
fn enterprise_table_is_indexed_in_place() {
    use octoisp_agent::snmp::enterprises::Enterprises;
    use octoisp_agent::snmp::fingerprint::BUILTIN_ENTERPRISES;
    let before = live();
    let started = std::time::Instant::now();
    let t = Enterprises::parse(BUILTIN_ENTERPRISES);
    let took = started.elapsed();
    let bytes = live() - before;
    eprintln!(
        "enterprise table: {} entries, {bytes} bytes held, indexed in {took:?}",
        t.len()
    );
    assert!(t.len() > 62_000, "{}", t.len());
    assert_eq!(t.name(14988), Some("MikroTik"));
    assert_eq!(t.name(26138), Some("INTELBRAS S/A"));
    assert!(
        bytes < 300_000,
        "the table holds {bytes} bytes for {} entries",
        t.len()
    );
}
