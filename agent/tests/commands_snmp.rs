//! `snmp.get` and `snmp.walk` commands against a real net-snmp `snmpd` on loopback.

mod commands_support;
#[path = "snmp_support/mod.rs"]
mod snmp_support;

use commands_support::{Agent, Upstream, command, local_config, pair, send};
use octoisp_agent::commands::CommandsSection;
use octoisp_shared::CommandStatus;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmp_get_and_walk_read_a_real_snmpd() {
    let snmpd = snmp_support::Snmpd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = local_config(dir.path());
    let agent = Agent::start(&cfg, CommandsSection::default()).await;
    let p = pair().await;
    agent.serve(p.agent.clone());
    let device = json!({"address": snmpd.addr.to_string()});

    let get = command(
        "snmp.get",
        json!({"device": device, "oids": ["1.3.6.1.2.1.1.5.0"]}),
    );
    let seen = send(&p.cp, &get).await;
    assert_eq!(seen.state(), "started");

    let walk = command(
        "snmp.walk",
        json!({"device": device, "oid": "1.3.6.1.2.1.1"}),
    );
    let seen = send(&p.cp, &walk).await;
    assert_eq!(seen.state(), "started");
    // The rows come in chunks on the stream too.
    let streamed: usize = seen.frames[1..]
        .iter()
        .map(|f| f["rows"].as_array().map_or(0, Vec::len))
        .sum();

    let unknown_cred = command(
        "snmp.get",
        json!({"device": {"address": snmpd.addr.to_string(), "credential": "core-v3"}, "oids": ["1.3.6.1.2.1.1.5.0"]}),
    );
    send(&p.cp, &unknown_cred).await;

    let mut up = Upstream::default();
    up.drain(&agent.outbox);
    let r = up.of(get.id);
    assert_eq!(r[0].status, CommandStatus::Succeeded, "{:?}", r[0].error);
    let out: serde_json::Value = serde_json::from_str(&r[0].output_json).unwrap();
    assert_eq!(out["varbinds"][0]["oid"], "1.3.6.1.2.1.1.5.0");
    assert_eq!(out["varbinds"][0]["value"], "STRING: \"test-snmpd\"");

    let r = up.of(walk.id);
    assert_eq!(r[0].status, CommandStatus::Succeeded, "{:?}", r[0].error);
    let out: serde_json::Value = serde_json::from_str(&r[0].output_json).unwrap();
    let rows = out["rows"].as_array().unwrap();
    assert!(rows.len() >= 5, "{rows:?}");
    assert_eq!(streamed, rows.len());
    assert!(
        rows.iter().any(|r| r["value"] == "STRING: \"lab\""),
        "sysLocation missing: {rows:?}"
    );

    let r = up.of(unknown_cred.id);
    assert_eq!(r[0].status, CommandStatus::Failed);
    assert!(r[0].error.as_deref().unwrap().contains("device.credential"));
    agent.stop().await;
}
