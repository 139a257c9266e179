//! `tr069.*` commands over real QUIC command streams, against the agent's own ACS (started by the central
//! configuration runtime, as in the daemon) and the simulated CPE of `acs_support`, which opens a session when
//! its Connection Request endpoint is hit. Also `snmp.discover` against a real `snmpd`.

#[path = "acs_support/mod.rs"]
mod acs_support;
mod commands_support;
#[path = "snmp_support/mod.rs"]
mod snmp_support;

use std::net::SocketAddr;
use std::sync::Arc;

use acs_support::cpe::{Cpe, CpeConfig};
use commands_support::{Agent, Upstream, command, local_config, pair, send};
use octoisp_agent::commands::CommandsSection;
use octoisp_shared::CommandStatus;
use serde_json::{Value, json};

const BOOT: &[&str] = &["1 BOOT"];
const CR_URL: &str = "InternetGatewayDevice.ManagementServer.ConnectionRequestURL";

/// A free TCP port on 127.0.0.1 (bound and released).
fn free_tcp_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A CPE's Connection Request endpoint (no authentication): each GET makes the CPE open a session with the ACS
/// at `acs`, as a real CPE does.
async fn connection_request_endpoint(cpe: Arc<Cpe>, acs: SocketAddr) -> SocketAddr {
    use http_body_util::Empty;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let cpe = cpe.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let cpe = cpe.clone();
                    async move {
                        tokio::spawn(async move {
                            let _ = cpe.session(acs, &["6 CONNECTION REQUEST"]).await;
                        });
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            Empty::<bytes::Bytes>::new(),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A CPE that has informed the ACS at `acs` once, with a reachable Connection Request endpoint.
async fn informed_cpe(serial: &str, acs: SocketAddr) -> Arc<Cpe> {
    let cpe = Arc::new(Cpe::minimal(CpeConfig::huawei(serial)));
    cpe.set(
        "InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.SSID",
        "octo-lab-ssid",
    );
    let cr = connection_request_endpoint(cpe.clone(), acs).await;
    cpe.set(CR_URL, &format!("http://{cr}/cr"));
    cpe.session(acs, BOOT).await.expect("first Inform");
    cpe
}

fn steps(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| f["step"].as_str().map(str::to_owned))
        .collect()
}

fn output(r: &octoisp_shared::CommandResult) -> Value {
    serde_json::from_str(&r.output_json).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_set_params_reach_the_cpe_once_the_acs_is_enabled_centrally() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = local_config(dir.path());
    cfg.acs.task_max_attempts = 1;
    let agent = Agent::start(&cfg, CommandsSection::default()).await;
    let p = pair().await;
    agent.serve(p.agent.clone());
    let device_id = CpeConfig::huawei("GET1").device_id();
    let key = format!("cwmp:{device_id}");

    // The ACS is off: a clear failure.
    let off = command(
        "tr069.get_params",
        json!({"device_key": key, "names": ["InternetGatewayDevice."]}),
    );
    send(&p.cp, &off).await;

    // The centre turns it on; the executor uses the ACS started by that update.
    let acs_addr = free_tcp_addr();
    let update = command(
        "config.update",
        json!({"version": 1, "config": {"acs": {"listen": acs_addr.to_string(), "task_max_attempts": 1}}}),
    );
    send(&p.cp, &update).await;
    let cpe = informed_cpe("GET1", acs_addr).await;

    let get = command(
        "tr069.get_params",
        json!({"device_key": key, "names": [
            "InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.SSID",
            "InternetGatewayDevice.DeviceInfo."
        ]}),
    );
    let seen = send(&p.cp, &get).await;
    assert_eq!(seen.state(), "started");
    assert_eq!(
        steps(&seen.frames),
        ["queued", "connection_request", "session"],
        "{:?}",
        seen.frames
    );
    let cr = seen
        .frames
        .iter()
        .find(|f| f["step"] == "connection_request")
        .unwrap();
    assert_eq!(cr["via"], "http");

    let set = command(
        "tr069.set_params",
        json!({"device_key": device_id, "values": [
            {"name": "InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.SSID", "value": "renamed-by-noc"}
        ]}),
    );
    send(&p.cp, &set).await;

    // A name the CPE does not have: its CWMP fault, with retries off.
    let bad = command(
        "tr069.get_params",
        json!({"device_key": key, "names": ["InternetGatewayDevice.NoSuch.Thing"]}),
    );
    send(&p.cp, &bad).await;

    let mut up = Upstream::default();
    up.drain(&agent.outbox);
    let r = up.of(off.id);
    assert_eq!(r[0].status, CommandStatus::Failed);
    assert!(
        r[0].error
            .as_deref()
            .unwrap()
            .contains("the ACS is not enabled on this agent"),
        "{:?}",
        r[0].error
    );
    assert_eq!(
        up.of(update.id)[0].status,
        CommandStatus::Succeeded,
        "{:?}",
        up.of(update.id)[0].error
    );

    let r = up.of(get.id);
    assert_eq!(r[0].status, CommandStatus::Succeeded, "{:?}", r[0].error);
    let out = output(r[0]);
    let values = out["values"].as_array().unwrap();
    assert!(
        values.iter().any(|v| v["name"]
            == "InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.SSID"
            && v["value"] == "octo-lab-ssid"),
        "{values:?}"
    );
    assert!(
        values.iter().any(
            |v| v["name"] == "InternetGatewayDevice.DeviceInfo.SoftwareVersion"
                && v["value"] == "value-of-InternetGatewayDevice.DeviceInfo.SoftwareVersion"
        ),
        "{values:?}"
    );

    let r = up.of(set.id);
    assert_eq!(r[0].status, CommandStatus::Succeeded, "{:?}", r[0].error);
    assert_eq!(
        cpe.get("InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.SSID")
            .as_deref(),
        Some("renamed-by-noc")
    );

    let r = up.of(bad.id);
    assert_eq!(r[0].status, CommandStatus::Failed);
    let err = r[0].error.as_deref().unwrap();
    assert!(err.contains("CWMP fault 9005"), "{err}");
    agent.stop().await;
}

/// Provisioning templates pushed in the central configuration (`acs.templates`) are applied at the CPE's next boot
/// without a restart; a bad template is refused with the field named and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_pushed_by_the_centre_are_applied_at_the_next_boot() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = local_config(dir.path());
    let agent = Agent::start(&cfg, CommandsSection::default()).await;
    let p = pair().await;
    agent.serve(p.agent.clone());
    let acs_addr = free_tcp_addr();
    const INTERVAL: &str = "InternetGatewayDevice.ManagementServer.PeriodicInformInterval";
    let acs = |set: Value| {
        json!({"listen": acs_addr.to_string(), "templates": [{
            "name": "inform-interval", "version": 1,
            "when": {"oui": ["00259E"]},
            "set": [set]
        }]})
    };

    let good = command(
        "config.update",
        json!({"version": 1, "config": {"acs": acs(json!({
            "name": INTERVAL, "value": "{spread:3600:600}", "type": "xsd:unsignedInt"
        }))}}),
    );
    assert_eq!(send(&p.cp, &good).await.state(), "started");
    let cpe = Cpe::minimal(CpeConfig::huawei("TPLC"));
    cpe.set(INTERVAL, "300");
    let log = cpe.session(acs_addr, &["1 BOOT"]).await.unwrap();
    assert_eq!(log.rpcs, ["SetParameterValues"]);
    let interval: u32 = cpe.get(INTERVAL).unwrap().parse().unwrap();
    assert!((3600..4200).contains(&interval), "{interval}");

    // An unknown placeholder: refused before anything is persisted or restarted.
    let bad = command(
        "config.update",
        json!({"version": 2, "config": {"acs": acs(json!({
            "name": INTERVAL, "value": "{serial_number}", "type": "xsd:unsignedInt"
        }))}}),
    );
    let seen = send(&p.cp, &bad).await;
    assert_eq!(seen.state(), "rejected");
    let error = seen.frames[0]["error"].as_str().unwrap();
    assert!(
        error.contains("acs.templates[0]") && error.contains("set[0].value"),
        "{error}"
    );
    assert_eq!(agent.runtime.version(), 1);
    // The ACS in force still has the good template: a second boot writes nothing (applied once).
    let log = cpe.session(acs_addr, &["1 BOOT"]).await.unwrap();
    assert!(log.rpcs.is_empty(), "{log:?}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_delivered_twice_reboots_the_cpe_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = local_config(dir.path());
    let acs_addr = free_tcp_addr();
    cfg.acs.listen = Some(acs_addr);
    let agent = Agent::start(&cfg, CommandsSection::default()).await;
    let p = pair().await;
    agent.serve(p.agent.clone());
    let cpe = informed_cpe("RB1", acs_addr).await;
    let id = cpe.cfg.device_id();

    let reboot = command("tr069.reboot", json!({"device_key": format!("cwmp:{id}")}));
    let first = send(&p.cp, &reboot).await;
    assert_eq!(first.state(), "started");
    let again = send(&p.cp, &reboot).await;
    assert_eq!(again.state(), "duplicate");

    let mut up = Upstream::default();
    up.drain(&agent.outbox);
    let r = up.of(reboot.id);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, CommandStatus::Succeeded, "{:?}", r[0].error);
    assert_eq!(*cpe.reboots.lock().unwrap(), 1);
    let acs = agent.runtime.acs().expect("ACS running");
    let tasks = acs.store.tasks(Some(&id)).unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(output(r[0])["task_id"], tasks[0].id.as_str());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpe_that_never_connects_fails_at_the_timeout_and_its_task_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = local_config(dir.path());
    let acs_addr = free_tcp_addr();
    cfg.acs.listen = Some(acs_addr);
    let agent = Agent::start(&cfg, CommandsSection::default()).await;
    let p = pair().await;
    agent.serve(p.agent.clone());
    // It informed once, but its Connection Request URL leads nowhere.
    let cpe = Cpe::minimal(CpeConfig::zte("GONE1"));
    cpe.set(CR_URL, &format!("http://{}/cr", free_tcp_addr()));
    cpe.session(acs_addr, BOOT).await.expect("first Inform");
    let id = cpe.cfg.device_id();

    let reboot = command(
        "tr069.reboot",
        json!({"device_key": format!("cwmp:{id}"), "timeout_secs": 3}),
    );
    let seen = send(&p.cp, &reboot).await;
    assert_eq!(steps(&seen.frames), ["queued", "connection_request"]);
    let via = seen.frames[2]["via"].as_str().unwrap();
    assert!(via.starts_with("failed: "), "{via}");

    let unknown = command(
        "tr069.factory_reset",
        json!({"device_key": "cwmp:000000-Nothing-NOPE42"}),
    );
    send(&p.cp, &unknown).await;

    let mut up = Upstream::default();
    up.drain(&agent.outbox);
    let r = up.of(reboot.id);
    assert_eq!(r[0].status, CommandStatus::Failed);
    let err = r[0].error.as_deref().unwrap();
    assert!(
        err.contains("the CPE did not open a session within 3 s"),
        "{err}"
    );
    let r = up.of(unknown.id);
    assert_eq!(r[0].status, CommandStatus::Failed);
    let err = r[0].error.as_deref().unwrap();
    assert!(err.contains("000000-Nothing-NOPE42"), "{err}");
    agent.stop().await;

    // The operator's view: no task left for the device, so a later session cannot reboot it.
    let conf = dir.path().join("agent.toml");
    std::fs::write(
        &conf,
        format!("state_dir = {:?}\n", dir.path().display().to_string()),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_octoisp-agent"))
        .arg("--config")
        .arg(&conf)
        .args(["acs", "tasks"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(!listing.contains(&id), "{listing}");
    assert_eq!(*cpe.reboots.lock().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmp_discover_finds_a_real_snmpd_inside_the_allowlist_only() {
    let snmpd = snmp_support::Snmpd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = local_config(dir.path());
    cfg.scan.allowed = vec!["127.0.0.0/30".into()];
    let agent = Agent::start(&cfg, CommandsSection::default()).await;
    let p = pair().await;
    agent.serve(p.agent.clone());

    let discover = command(
        "snmp.discover",
        json!({"cidrs": ["127.0.0.0/30"], "port": snmpd.addr.port()}),
    );
    let seen = send(&p.cp, &discover).await;
    assert_eq!(seen.state(), "started");
    let streamed: Vec<&Value> = seen.frames[1..].iter().map(|f| &f["found"]).collect();

    let outside = command(
        "snmp.discover",
        json!({"cidrs": ["10.9.8.0/24"], "port": snmpd.addr.port()}),
    );
    send(&p.cp, &outside).await;

    let mut up = Upstream::default();
    up.drain(&agent.outbox);
    let r = up.of(discover.id);
    assert_eq!(r[0].status, CommandStatus::Succeeded, "{:?}", r[0].error);
    let out = output(r[0]);
    assert_eq!(out["scanned"], 2);
    let devices = out["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(devices[0]["address"], "127.0.0.1");
    assert_eq!(devices[0]["sys_name"], "test-snmpd");
    assert!(
        devices[0]["sys_descr"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    assert!(devices[0]["vendor"].is_string(), "{devices:?}");
    assert_eq!(streamed, vec![&devices[0]]);

    let r = up.of(outside.id);
    assert_eq!(r[0].status, CommandStatus::Failed);
    assert!(
        r[0].error
            .as_deref()
            .unwrap()
            .contains("outside the ranges allowed")
    );
    agent.stop().await;
}
