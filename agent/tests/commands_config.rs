//! `config.update` over a real command stream: the running ping monitors change without a restart, a bad
//! document changes nothing, an old version is skipped, and the persisted version is applied again at start.

mod commands_support;

use std::time::{Duration, Instant};

use commands_support::{Agent, Upstream, command, local_config, pair, send};
use octoisp_agent::commands::CommandsSection;
use octoisp_shared::CommandStatus;
use serde_json::json;

fn ping_doc(targets: &[&str]) -> serde_json::Value {
    json!({
        "monitors": {"ping": [{
            "name": "central", "targets": targets,
            "interval_ms": 200, "count": 1, "timeout_ms": 200
        }]},
        "scan": {"allowed": ["127.0.0.0/8"]}
    })
}

/// Drains the outbox until `device` has samples, or panics after a generous wait.
async fn wait_for_samples(up: &mut Upstream, agent: &Agent, device: &str) {
    let start = Instant::now();
    while up.count(device) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no samples for {device}: {:?}",
            up.samples
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        up.drain(&agent.outbox);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_configuration_changes_monitors_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = local_config(dir.path());
    let agent = Agent::start(&cfg, CommandsSection::default()).await;
    assert_eq!(agent.runtime.version(), 0);
    let p = pair().await;
    agent.serve(p.agent.clone());
    let mut up = Upstream::default();

    // Version 1: ping 127.0.0.1.
    let v1 = command(
        "config.update",
        json!({"version": 1, "config": ping_doc(&["127.0.0.1"])}),
    );
    let seen = send(&p.cp, &v1).await;
    assert_eq!(seen.state(), "started");
    wait_for_samples(&mut up, &agent, "icmp:127.0.0.1").await;
    assert_eq!(
        up.of(v1.id)[0].output_json,
        r#"{"applied_version":1}"#,
        "{:?}",
        up.of(v1.id)
    );

    // Version 2: 127.0.0.2 instead. The new target starts producing samples, the removed one stops.
    let v2 = command(
        "config.update",
        json!({"version": 2, "config": ping_doc(&["127.0.0.2"])}),
    );
    let seen = send(&p.cp, &v2).await;
    assert_eq!(seen.state(), "started");
    wait_for_samples(&mut up, &agent, "icmp:127.0.0.2").await;
    // A round already in progress when it was stopped may still land; after that, nothing more.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    up.drain(&agent.outbox);
    let (old_before, new_before) = (up.count("icmp:127.0.0.1"), up.count("icmp:127.0.0.2"));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    up.drain(&agent.outbox);
    assert_eq!(
        up.count("icmp:127.0.0.1"),
        old_before,
        "the removed target is still pinged"
    );
    assert!(
        up.count("icmp:127.0.0.2") > new_before,
        "the new target stopped"
    );
    let keys = agent.runtime.monitor_keys().await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].contains("127.0.0.2"), "{keys:?}");

    // A bad document is refused with the key named, and nothing changes.
    let mut bad_doc = ping_doc(&["127.0.0.3"]);
    bad_doc["monitors"]["ping"][0]["count"] = json!(0);
    let bad = command("config.update", json!({"version": 3, "config": bad_doc}));
    let seen = send(&p.cp, &bad).await;
    assert_eq!(seen.state(), "rejected");
    let error = seen.frames[0]["error"].as_str().unwrap();
    assert!(error.contains("monitors.ping[0]"), "{error}");
    let unknown_key = command(
        "config.update",
        json!({"version": 3, "config": {"monitors": {"ping": [{"name": "x", "targets": ["127.0.0.1"], "colour": 1}]}}}),
    );
    let seen = send(&p.cp, &unknown_key).await;
    assert_eq!(seen.state(), "rejected");
    let error = seen.frames[0]["error"].as_str().unwrap();
    assert!(
        error.contains("config.monitors.ping[0]") && error.contains("colour"),
        "{error}"
    );
    assert_eq!(agent.runtime.version(), 2);
    assert_eq!(agent.runtime.monitor_keys().await, keys);
    assert_eq!(octoisp_agent::central::applied_version(dir.path()), Some(2));

    // An older version is skipped.
    let old = command(
        "config.update",
        json!({"version": 1, "config": ping_doc(&["127.0.0.1"])}),
    );
    send(&p.cp, &old).await;
    up.drain(&agent.outbox);
    let r = up.of(old.id);
    assert_eq!(r[0].status, CommandStatus::Succeeded);
    assert_eq!(r[0].output_json, r#"{"applied_version":2,"skipped":true}"#);
    assert_eq!(agent.runtime.monitor_keys().await, keys);
    let r = up.of(bad.id);
    assert_eq!(r[0].status, CommandStatus::Rejected);

    // The persisted file is private: it may hold credentials.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join(octoisp_agent::central::FILE_NAME))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // After a restart the persisted version is in force again.
    agent.stop().await;
    let agent = Agent::start(&cfg, CommandsSection::default()).await;
    assert_eq!(agent.runtime.version(), 2);
    assert_eq!(agent.runtime.monitor_keys().await, keys);
    // (The same reader: it knows the series definitions acknowledged before the restart.)
    let before = up.count("icmp:127.0.0.2");
    let start = Instant::now();
    while up.count("icmp:127.0.0.2") == before {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no samples after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        up.drain(&agent.outbox);
    }
    agent.stop().await;
}
