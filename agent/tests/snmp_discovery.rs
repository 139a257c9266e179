//! Discovery feeds the poller: the daemon's SNMP service sweeps a loopback network holding a real net-snmp snmpd,
//! polls what answered with the credential that worked, and after a restart polls it again from its SQLite state
//! without sweeping anew.

mod snmp_support;

use std::time::Duration;

use octoisp_agent::config::Config;
use octoisp_agent::outbox::{Outbox, OutboxConfig, Synchronous};
use octoisp_agent::snmp::discovered::STATE_PREFIX;
use octoisp_agent::snmp::service::spawn_all;
use snmp_support::*;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Waits (bounded) until the outbox holds more than `than` samples; returns the count.
async fn samples_above(outbox: &Outbox, than: u64) -> u64 {
    for _ in 0..300 {
        let n = outbox.stats().expect("stats").samples;
        if n > than {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    outbox.stats().expect("stats").samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_devices_are_polled_and_survive_a_restart() {
    let snmpd = Snmpd::start().await;
    let port = snmpd.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(OutboxConfig {
        synchronous: Synchronous::Normal,
        ..OutboxConfig::new(dir.path().join("outbox.db"))
    })
    .unwrap();
    // No device in the file: only discovery. The first credential is refused (snmpd does not answer it).
    let toml = format!(
        r#"
[snmp]
interval_secs = 2
timeout_ms = 300
retries = 0

[[snmp.credentials]]
name = "wrong"
community = "not-this-one"

[[snmp.credentials]]
name = "ro"
community = "public"

[snmp.discovery]
cidrs = ["127.0.0.0/30"]
credentials = ["wrong", "ro"]
port = {port}
interval_secs = 3600
rate_per_sec = 100
"#
    );
    let cfg = Config::from_toml("discovery.toml", &toml, Vec::new()).unwrap();
    let key = format!("snmp:127.0.0.1:{port}");

    let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
    spawn_all(&cfg.snmp, &outbox, &tracker, &stop).unwrap();
    let first = samples_above(&outbox, 0).await;
    assert!(
        first > 0,
        "the discovered snmpd is polled: no samples in the outbox"
    );
    let state = outbox.states_with_prefix(STATE_PREFIX).unwrap();
    assert_eq!(state.len(), 1, "{state:?}");
    assert_eq!(state[0].0, format!("{STATE_PREFIX}{key}"));
    assert!(
        state[0].1.contains(r#""credentials":"ro""#),
        "{}",
        state[0].1
    );
    assert!(state[0].1.contains(r#""net-snmp""#), "{}", state[0].1);
    stop.cancel();
    tracker.close();
    tracker.wait().await;

    // Restart: the sweep ran less than its interval ago, so none runs now; the device is polled from the state.
    let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
    let before = outbox.stats().unwrap();
    spawn_all(&cfg.snmp, &outbox, &tracker, &stop).unwrap();
    let after = samples_above(&outbox, before.samples).await;
    assert!(after > before.samples, "not polled after the restart");
    stop.cancel();
    tracker.close();
    tracker.wait().await;

    // The file now declares the device itself, with another interval: it is not polled twice, and the
    // discovered entry stays for when the file stops declaring it. A credential that is no longer offered to
    // discovery drops the discovered entry.
    let declared = toml.replace(
        "[snmp.discovery]",
        &format!(
            "[[snmp.devices]]\naddress = \"127.0.0.1:{port}\"\ncredentials = \"ro\"\n\n[snmp.discovery]"
        ),
    );
    let cfg2 = Config::from_toml("declared.toml", &declared, Vec::new()).unwrap();
    let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
    spawn_all(&cfg2.snmp, &outbox, &tracker, &stop).unwrap();
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    assert_eq!(outbox.states_with_prefix(STATE_PREFIX).unwrap().len(), 1);
    let no_ro = toml.replace(
        r#"credentials = ["wrong", "ro"]"#,
        r#"credentials = ["wrong"]"#,
    );
    let cfg3 = Config::from_toml("no-ro.toml", &no_ro, Vec::new()).unwrap();
    let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
    spawn_all(&cfg3.snmp, &outbox, &tracker, &stop).unwrap();
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    assert!(
        outbox.states_with_prefix(STATE_PREFIX).unwrap().is_empty(),
        "a device whose credential is gone is dropped"
    );
}
