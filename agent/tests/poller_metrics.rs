//! The SNMP poller's Prometheus metrics, as `/metrics` renders them, after polls of net-snmp's snmpd and of a
//! device that never answers. A test binary of its own: the recorder is process-wide.

mod snmp_support;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use octoisp_agent::snmp::device_key;
use octoisp_agent::snmp::fingerprint::Rules;
use octoisp_agent::snmp::poller::{self, DeviceSpec, Poller, PollerConfig, Priority};
use octoisp_agent::snmp::profile::ProfileSet;
use octoisp_agent::snmp::sim::{Behaviour, SimDevice};
use snmp_support::*;
use tokio_util::sync::CancellationToken;

/// `name{labels}` -> value of every sample line of a Prometheus text exposition.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn poll_results_durations_and_scheduled_devices_are_exported() {
    let handle = octoisp_agent::telemetry::builder()
        .unwrap()
        .install_recorder()
        .unwrap();
    let stop = CancellationToken::new();
    let snmpd = Snmpd::start().await;
    let dead = serve(
        SimDevice::new(
            Arc::new(RwLock::new(Default::default())),
            "public",
            Behaviour::Silent,
        ),
        &stop,
    )
    .await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let cfg = PollerConfig {
        start_jitter: false,
        ..PollerConfig::default()
    };
    let poller = Poller::new(
        engine(),
        Rules::builtin(),
        Arc::new(ProfileSet::builtin().unwrap()),
        cfg,
        tx,
    );
    let tracker = tokio_util::task::TaskTracker::new();
    for addr in [snmpd.addr, dead] {
        let mut target = v2c(addr);
        target.timeout = Duration::from_millis(200);
        target.retries = 0;
        let spec = DeviceSpec {
            key: device_key(addr),
            target,
            interval: Duration::from_secs(3600),
            priority: Priority::Normal,
            budget: Duration::from_secs(10),
        };
        poller.spawn(spec, &tracker, stop.clone());
    }

    let ok = format!("{}{{result=\"ok\"}}", poller::POLLS);
    let timeout = format!("{}{{result=\"timeout\"}}", poller::POLLS);
    let mut seen = samples(&handle.render());
    for _ in 0..300 {
        if seen.contains_key(&ok) && seen.contains_key(&timeout) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = samples(&handle.render());
    }
    let text = handle.render();
    assert_eq!(seen.get(&ok), Some(&1.0), "one good poll of snmpd:\n{text}");
    assert_eq!(
        seen.get(&timeout),
        Some(&1.0),
        "one poll of the silent device:\n{text}"
    );
    assert_eq!(
        seen.get(poller::DEVICES_SCHEDULED),
        Some(&2.0),
        "both devices on a schedule:\n{text}"
    );
    // A histogram with buckets (a summary would have quantiles), holding both polls.
    let count = format!("{}_count", poller::POLL_SECONDS);
    assert_eq!(seen.get(&count), Some(&2.0), "{text}");
    let inf = format!("{}_bucket{{le=\"+Inf\"}}", poller::POLL_SECONDS);
    assert_eq!(seen.get(&inf), Some(&2.0), "{text}");
    // The silent device's poll lasted at least its 200 ms timeout: it is in no bucket below that.
    let fast = format!("{}_bucket{{le=\"0.1\"}}", poller::POLL_SECONDS);
    assert!(seen.get(&fast).is_some_and(|n| *n <= 1.0), "{text}");
    assert!(
        !seen.contains_key(poller::POLLS_LATE),
        "nothing waited for a permit:\n{text}"
    );

    stop.cancel();
    tracker.close();
    tracker.wait().await;
    drop(poller);
    let _ = drain.await;
    let seen = samples(&handle.render());
    assert_eq!(seen.get(poller::DEVICES_SCHEDULED), Some(&0.0));
}
