//! SNMP against real peers: net-snmp's snmpd (v2c, v3 authNoPriv and authPriv), simulated devices from
//! recordings, misbehaving devices, and traps sent with net-snmp's snmptrap/snmpinform.

mod snmp_support;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use octoisp_agent::snmp::client::{Session, SnmpError};
use octoisp_agent::snmp::collect::{self, CollectConfig, DeviceState, PollReport};
use octoisp_agent::snmp::fingerprint::{self, Rules};
use octoisp_agent::snmp::poller::{DeviceSpec, Poller, PollerConfig, Priority};
use octoisp_agent::snmp::profile::ProfileSet;
use octoisp_agent::snmp::sim::{self, Behaviour, Cell, SimDevice};
use octoisp_agent::snmp::usm::{AuthProto, PrivProto, SecurityLevel};
use octoisp_agent::snmp::{Value, device_key};
use snmp_support::*;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn v2c_get_walk_and_fingerprint_against_snmpd() {
    let snmpd = Snmpd::start().await;
    let s = Session::new(engine(), v2c(snmpd.addr));
    let vbs = s
        .get(&[oid("1.3.6.1.2.1.1.5.0"), oid("1.3.6.1.2.1.1.6.0")])
        .await
        .unwrap();
    assert_eq!(vbs[0].value, Value::OctetString(b"test-snmpd".to_vec()));
    assert_eq!(vbs[1].value, Value::OctetString(b"lab".to_vec()));
    // The system group walks in order and stays in its subtree.
    let walk = s.walk(&oid("1.3.6.1.2.1.1")).await.unwrap();
    assert!(walk.len() >= 7, "{walk:?}");
    assert!(walk.windows(2).all(|w| w[0].oid < w[1].oid));
    assert!(
        walk.iter()
            .all(|v| v.oid.starts_with(&oid("1.3.6.1.2.1.1")))
    );
    // The interface table, by bulk walk, matches a GETNEXT walk (v1).
    let bulk = s.walk(&oid("1.3.6.1.2.1.2.2.1.2")).await.unwrap();
    let mut t1 = v2c(snmpd.addr);
    t1.version = octoisp_agent::snmp::Version::V1;
    let next = Session::new(engine(), t1)
        .walk(&oid("1.3.6.1.2.1.2.2.1.2"))
        .await
        .unwrap();
    assert!(!bulk.is_empty());
    assert_eq!(bulk, next);
    let fp = fingerprint::fingerprint(&s, Rules::builtin())
        .await
        .unwrap();
    assert_eq!(fp.os.as_deref(), Some("Linux"));
    assert_eq!(fp.vendor.as_deref(), Some("net-snmp"));
    assert_eq!(fp.sys_name.as_deref(), Some("test-snmpd"));
}

#[tokio::test]
async fn v3_auth_no_priv_and_auth_priv_against_snmpd() {
    let snmpd = Snmpd::start().await;
    let e = engine();
    let cases = [
        v3(
            snmpd.addr,
            "authsha",
            SecurityLevel::AuthNoPriv,
            Some((AuthProto::Sha1, "authpass123")),
            None,
        ),
        v3(
            snmpd.addr,
            "privsha",
            SecurityLevel::AuthPriv,
            Some((AuthProto::Sha1, "authpass123")),
            Some((PrivProto::Aes128, "privpass123")),
        ),
        v3(
            snmpd.addr,
            "privsha256",
            SecurityLevel::AuthPriv,
            Some((AuthProto::Sha256, "authpass123")),
            Some((PrivProto::Aes128, "privpass123")),
        ),
    ];
    for t in cases {
        let s = Session::new(e.clone(), t);
        let vbs = s.get(&[oid("1.3.6.1.2.1.1.5.0")]).await.unwrap();
        assert_eq!(vbs[0].value, Value::OctetString(b"test-snmpd".to_vec()));
        assert!(s.engine_id().is_some_and(|id| !id.is_empty()));
        let walk = s.walk(&oid("1.3.6.1.2.1.1")).await.unwrap();
        assert!(walk.len() >= 7);
    }
}

#[tokio::test]
async fn wrong_credentials_give_clear_errors() {
    let snmpd = Snmpd::start().await;
    let e = engine();
    let get = |t| {
        let s = Session::new(e.clone(), t);
        async move { s.get(&[oid("1.3.6.1.2.1.1.5.0")]).await.unwrap_err() }
    };
    let err = get(v3(
        snmpd.addr,
        "privsha256",
        SecurityLevel::AuthPriv,
        Some((AuthProto::Sha256, "wrongpass1")),
        Some((PrivProto::Aes128, "privpass123")),
    ))
    .await;
    assert!(matches!(err, SnmpError::WrongDigest { .. }), "{err}");
    assert!(err.to_string().contains("wrong digest"), "{err}");
    let err = get(v3(
        snmpd.addr,
        "nobody",
        SecurityLevel::AuthNoPriv,
        Some((AuthProto::Sha1, "authpass123")),
        None,
    ))
    .await;
    assert!(matches!(err, SnmpError::UnknownUser { .. }), "{err}");
    let err = get(v3(
        snmpd.addr,
        "privsha256",
        SecurityLevel::AuthPriv,
        Some((AuthProto::Sha256, "authpass123")),
        Some((PrivProto::Aes128, "wrongpriv1")),
    ))
    .await;
    assert!(err.to_string().contains("privacy password"), "{err}");
    // A user that may not use a lower level.
    let err = get(v3(
        snmpd.addr,
        "privsha256",
        SecurityLevel::AuthNoPriv,
        Some((AuthProto::Sha256, "authpass123")),
        None,
    ))
    .await;
    assert!(matches!(err, SnmpError::Status { status: 16, .. }), "{err}");
    assert!(err.to_string().contains("authorizationError"), "{err}");
    // Wrong community: agents stay silent.
    let mut t = v2c(snmpd.addr);
    t.credentials = octoisp_agent::snmp::Credentials::Community(b"wrong".to_vec());
    t.retries = 0;
    assert!(get(t).await.is_timeout());
}

fn agent_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_octoisp-agent"))
        .args(args)
        .output()
        .expect("run octoisp-agent")
}

#[tokio::test]
async fn cli_uses_net_snmp_flags_and_exit_codes() {
    let snmpd = Snmpd::start().await;
    let host = snmpd.addr.to_string();
    let out = agent_cli(&[
        "snmp",
        "get",
        "-v",
        "2c",
        "-c",
        "public",
        &host,
        "1.3.6.1.2.1.1.5.0",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1.3.6.1.2.1.1.5.0 = STRING: \"test-snmpd\""
    );
    let out = agent_cli(&[
        "snmp",
        "fingerprint",
        "--json",
        "-v",
        "3",
        "-u",
        "privsha256",
        "-l",
        "authPriv",
        "-a",
        "SHA-256",
        "-A",
        "authpass123",
        "-x",
        "AES",
        "-X",
        "privpass123",
        &host,
    ]);
    assert!(out.status.success(), "{out:?}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in [
        "vendor",
        "model",
        "os",
        "version",
        "sys_object_id",
        "sys_descr",
    ] {
        assert!(j.get(k).is_some(), "missing {k}: {j}");
    }
    assert_eq!(j["os"], "Linux");
    let out = agent_cli(&["snmp", "walk", "--json", &host, "1.3.6.1.2.1.1"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(j.as_array().is_some_and(|a| a.len() >= 7), "{j}");
    // Bad arguments: exit 64 with a message.
    for bad in [
        vec!["snmp", "get", "-v", "4", &host, "1.3.6.1.2.1.1.5.0"],
        vec!["snmp", "get", &host, "sysName"],
        vec!["snmp", "get", "--bogus", &host, "1.3.6.1"],
        vec!["snmp", "get", "-v", "3", &host, "1.3.6.1.2.1.1.5.0"],
        vec!["snmp", "discover", "10.0.0.0/8"],
    ] {
        let out = agent_cli(&bad);
        assert_eq!(out.status.code(), Some(64), "{bad:?}: {out:?}");
        assert!(!out.stderr.is_empty());
    }
    // Wrong credentials: exit 3 and says why.
    let out = agent_cli(&[
        "snmp",
        "get",
        "-v",
        "3",
        "-u",
        "authsha",
        "-l",
        "authNoPriv",
        "-A",
        "badpassword",
        &host,
        "1.3.6.1.2.1.1.5.0",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong digest"));
}

fn metric(r: &PollReport, name: &str, label: (&str, &str)) -> Option<f64> {
    r.metrics
        .iter()
        .find(|m| m.metric == name && m.labels.iter().any(|(k, v)| k == label.0 && v == label.1))
        .map(|m| m.value)
}

#[tokio::test]
async fn recordings_fingerprint_and_profile_metrics() {
    let (st, r) = poll_recording("mikrotik-ccr").await;
    let fp = st.fingerprint().unwrap();
    assert_eq!(
        (fp.vendor.as_deref(), fp.os.as_deref()),
        (Some("MikroTik"), Some("RouterOS"))
    );
    assert_eq!(
        (fp.model.as_deref(), fp.version.as_deref()),
        (Some("CCR1036-8G-2S+"), Some("6.49.10"))
    );
    let scalar = |n: &str| r.metrics.iter().find(|m| m.metric == n).map(|m| m.value);
    assert_eq!(scalar("temperature_celsius"), Some(41.5));
    assert_eq!(
        metric(&r, "wireless.clients", ("ssid", "PROVEDOR-WIFI")),
        Some(17.0)
    );
    assert_eq!(metric(&r, "if.speed_bps", ("ifName", "ether1")), Some(1e9));
    assert_eq!(
        metric(&r, "if.oper_status", ("ifAlias", "uplink-transit")),
        Some(1.0)
    );
    assert_eq!(
        metric(&r, "cpu.load_percent", ("hrDeviceIndex", "1")),
        Some(12.0)
    );
    assert_eq!(
        metric(&r, "storage.used_bytes", ("descr", "main memory")),
        Some(1_073_741_824.0)
    );

    let (st, r) = poll_recording("huawei-ma5800").await;
    let fp = st.fingerprint().unwrap();
    assert_eq!(
        (fp.vendor.as_deref(), fp.os.as_deref()),
        (Some("Huawei"), Some("SmartAX"))
    );
    assert!(st.profile_names().contains(&"huawei-olt".to_owned()));
    assert_eq!(
        metric(&r, "onu.rx_dbm", ("serial", "48575443A94196A5")),
        Some(-21.5)
    );
    assert_eq!(metric(&r, "onu.olt_rx_dbm", ("onu_id", "0")), Some(-23.5));
    // The offline ONU's 2147483647 is no reading, not 21 million dBm.
    assert_eq!(metric(&r, "onu.rx_dbm", ("onu_id", "1")), None);
    assert_eq!(metric(&r, "onu.run_status", ("onu_id", "1")), Some(2.0));

    let (st, r) = poll_recording("zte-c320").await;
    let fp = st.fingerprint().unwrap();
    assert_eq!(
        (fp.vendor.as_deref(), fp.os.as_deref(), fp.model.as_deref()),
        (Some("ZTE"), Some("ZXA10"), Some("C320"))
    );
    assert_eq!(metric(&r, "onu.olt_rx_dbm", ("onu_id", "1")), Some(-19.87));
    assert_eq!(metric(&r, "onu.olt_rx_dbm", ("onu_id", "2")), None);

    let (st, r) = poll_recording("ubiquiti-airos").await;
    let fp = st.fingerprint().unwrap();
    assert_eq!(
        (fp.vendor.as_deref(), fp.os.as_deref()),
        (Some("Ubiquiti"), Some("airOS"))
    );
    assert_eq!(
        fp.version.as_deref(),
        Some("XW.ar934x.v6.3.6.33330.210818.1801")
    );
    assert_eq!(
        metric(&r, "wireless.signal_dbm", ("ssid", "ENLACE-NORTE")),
        Some(-58.0)
    );
    assert_eq!(
        metric(&r, "wireless.ccq_percent", ("ifIndex", "1")),
        Some(94.0)
    );
    assert_eq!(
        metric(&r, "airmax.capacity_percent", ("ifIndex", "1")),
        Some(63.0)
    );

    let (st, r) = poll_recording("cisco-c2960x").await;
    let fp = st.fingerprint().unwrap();
    assert_eq!(
        (
            fp.vendor.as_deref(),
            fp.os.as_deref(),
            fp.version.as_deref()
        ),
        (Some("Cisco"), Some("IOS"), Some("15.2(2)E7"))
    );
    // ENTITY-SENSOR: -73 with precision 1 = -7.3 dBm.
    assert_eq!(
        metric(
            &r,
            "sensor.value",
            ("name", "Gi1/0/49 Receive Power Sensor")
        ),
        Some(-7.3)
    );
}

/// A device with only the 32-bit ifTable, whose counters and sysUpTime the test sets.
/// A device no rule knows, from an enterprise the agent's first, partial table did not list (Furukawa Electric
/// LatAm, a Brazilian GPON maker): the technician's `snmp fingerprint` still names it from the IANA registry.
#[tokio::test]
async fn unknown_device_is_named_from_the_whole_iana_registry() {
    let stop = CancellationToken::new();
    let mib: sim::Mib = Arc::new(RwLock::new(sim::standard_mib(1, 1)));
    let dev = SimDevice::new(mib, "public", Behaviour::Normal);
    dev.set(
        "1.3.6.1.2.1.1.2.0",
        Cell::Static(Value::Oid(oid("1.3.6.1.4.1.10428.1.7"))),
    );
    dev.set(
        "1.3.6.1.2.1.1.1.0",
        Cell::Static(Value::OctetString(b"FK-OLT-G2500".to_vec())),
    );
    let addr = serve(dev, &stop).await;
    let host = addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        agent_cli(&["snmp", "fingerprint", "-c", "public", "--json", &host])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let fp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fp["enterprise"], "Furukawa Electric LatAm S.A", "{fp}");
    assert_eq!(fp["vendor"], "Furukawa Electric LatAm S.A", "{fp}");
    assert_eq!(fp["rule"], serde_json::Value::Null, "{fp}");
    stop.cancel();
}

fn counter32_device() -> SimDevice {
    let mut mib = std::collections::BTreeMap::new();
    let text = |s: &str| Cell::Static(Value::OctetString(s.as_bytes().to_vec()));
    mib.insert(
        oid("1.3.6.1.2.1.1.1.0"),
        text("Linux old-switch 2.6.18 #1 mips"),
    );
    mib.insert(
        oid("1.3.6.1.2.1.1.2.0"),
        Cell::Static(Value::Oid(oid("1.3.6.1.4.1.8072.3.2.10"))),
    );
    mib.insert(
        oid("1.3.6.1.2.1.1.3.0"),
        Cell::Static(Value::TimeTicks(100_000)),
    );
    mib.insert(oid("1.3.6.1.2.1.2.1.0"), Cell::Static(Value::Integer(1)));
    mib.insert(oid("1.3.6.1.2.1.2.2.1.2.1"), text("eth0"));
    mib.insert(
        oid("1.3.6.1.2.1.2.2.1.5.1"),
        Cell::Static(Value::Gauge32(100_000_000)),
    );
    mib.insert(
        oid("1.3.6.1.2.1.2.2.1.10.1"),
        Cell::Static(Value::Counter32(4_294_967_000)),
    );
    SimDevice::new(Arc::new(RwLock::new(mib)), "public", Behaviour::Normal)
}

#[tokio::test]
async fn counter32_wrap_and_reboot_give_correct_rates_without_spikes() {
    let stop = CancellationToken::new();
    let dev = counter32_device();
    let addr = serve(dev.clone(), &stop).await;
    let s = Session::new(engine(), v2c(addr));
    let profiles = ProfileSet::builtin().unwrap();
    let mut st = DeviceState::default();
    let key = device_key(addr);
    let cfg = CollectConfig::default();
    macro_rules! poll {
        ($now:expr) => {
            collect::poll(&s, &mut st, Rules::builtin(), &profiles, &cfg, &key, $now)
                .await
                .unwrap()
        };
    }
    let in_bps = |r: &PollReport| metric(r, "if.in_bps", ("ifDescr", "eth0"));

    let r = poll!(0);
    assert!(r.labels_walked);
    assert_eq!(in_bps(&r), None, "no rate from one reading");
    // 60 s later the 32-bit counter wrapped: 296 octets to the top, then 704.
    dev.set("1.3.6.1.2.1.1.3.0", Cell::Static(Value::TimeTicks(106_000)));
    dev.set(
        "1.3.6.1.2.1.2.2.1.10.1",
        Cell::Static(Value::Counter32(704)),
    );
    let r = poll!(60_000);
    assert!(!r.labels_walked, "labels are cached between polls");
    let v = in_bps(&r).unwrap();
    assert!((v - 1000.0 * 8.0 / 60.0).abs() < 1e-6, "{v}");
    // The device rebooted: uptime 5 s, counter restarted at 50. No rate (a "wrap" would read ~570 Mbit/s).
    dev.set("1.3.6.1.2.1.1.3.0", Cell::Static(Value::TimeTicks(500)));
    dev.set("1.3.6.1.2.1.2.2.1.10.1", Cell::Static(Value::Counter32(50)));
    let r = poll!(120_000);
    assert_eq!(in_bps(&r), None);
    assert!(r.events.iter().any(|e| e.kind == "snmp.reboot"));
    assert!(r.labels_walked, "a reboot refreshes the label cache");
    // And the next interval is normal again.
    dev.set("1.3.6.1.2.1.1.3.0", Cell::Static(Value::TimeTicks(6_500)));
    dev.set(
        "1.3.6.1.2.1.2.2.1.10.1",
        Cell::Static(Value::Counter32(650)),
    );
    let r = poll!(180_000);
    let v = in_bps(&r).unwrap();
    assert!((v - 600.0 * 8.0 / 60.0).abs() < 1e-6, "{v}");
    // A new interface (ifNumber changes) refreshes the labels.
    dev.set("1.3.6.1.2.1.2.1.0", Cell::Static(Value::Integer(2)));
    dev.set(
        "1.3.6.1.2.1.2.2.1.2.2",
        Cell::Static(Value::OctetString(b"eth1".to_vec())),
    );
    let r = poll!(240_000);
    assert!(r.labels_walked);
    stop.cancel();
}

#[tokio::test]
async fn dead_slow_and_garbage_devices_do_not_delay_the_others() {
    let stop = CancellationToken::new();
    let mib: sim::Mib = Arc::new(RwLock::new(sim::standard_mib(8, 1)));
    let mut specs = Vec::new();
    let mut bad = Vec::new();
    for (i, b) in [
        Behaviour::Silent,
        Behaviour::Slow(Duration::from_secs(30)),
        Behaviour::Garbage,
        Behaviour::Normal,
        Behaviour::Normal,
        Behaviour::Normal,
    ]
    .into_iter()
    .enumerate()
    {
        let addr = serve(SimDevice::new(mib.clone(), "public", b), &stop).await;
        let mut target = v2c(addr);
        // Generous: the misbehaving devices fail only after 2 x 1.5 s, far behind the good ones even on a loaded machine.
        target.timeout = Duration::from_millis(1500);
        target.retries = 1;
        if b != Behaviour::Normal {
            bad.push(device_key(addr));
        }
        specs.push((
            i,
            DeviceSpec {
                key: device_key(addr),
                target,
                interval: Duration::from_secs(3600),
                priority: if i == 0 {
                    Priority::High
                } else {
                    Priority::Normal
                },
                budget: Duration::from_secs(5),
            },
        ));
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
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
    for (_, spec) in specs {
        poller.spawn(spec, &tracker, stop.clone());
    }
    let mut order = Vec::new();
    let mut reports: HashMap<String, PollReport> = HashMap::new();
    while reports.len() < 6 {
        let r = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap()
            .unwrap();
        order.push(r.device_key.clone());
        reports.entry(r.device_key.clone()).or_insert(r);
    }
    // The three good devices completed first, with their metrics.
    let first_three: Vec<_> = order.iter().take(3).collect();
    assert!(first_three.iter().all(|k| !bad.contains(k)), "{order:?}");
    for (k, r) in &reports {
        if bad.contains(k) {
            let err = r.error.as_deref().unwrap_or_default();
            assert!(!err.is_empty(), "{k} should have failed");
            assert!(r.events.iter().any(|e| e.kind == "snmp.unreachable"), "{k}");
        } else {
            assert!(r.error.is_none(), "{k}: {:?}", r.error);
            assert!(
                metric(r, "if.in_bps", ("ifName", "eth8")).is_none(),
                "no rate on a first poll"
            );
            assert!(
                metric(r, "if.speed_bps", ("ifName", "eth8")).is_some(),
                "{k}"
            );
            assert!(r.metrics.iter().any(|m| m.metric == "cpu.load_percent"));
        }
    }
    stop.cancel();
}

fn send(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} (Debian package snmp) is required: {e}"))
}

// Multi-threaded: `snmpinform` runs blocking on one thread while the receiver acknowledges on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_and_informs_v2c_and_v3_become_events() {
    use octoisp_agent::snmp::traps;
    let stop = CancellationToken::new();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    let user = octoisp_agent::snmp::usm::UsmUser::new(
        "trapuser",
        SecurityLevel::AuthPriv,
        Some((AuthProto::Sha256, "authpass123")),
        Some((PrivProto::Aes128, "privpass123")),
    )
    .unwrap();
    let cfg = traps::TrapConfig {
        communities: vec![b"public".to_vec()],
        users: vec![Arc::new(user)],
        engine_id: traps::default_engine_id("test"),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(traps::run(sock, cfg, tx, stop.clone()));
    let dest = format!("127.0.0.1:{port}");
    let v3 = [
        "-v",
        "3",
        "-u",
        "trapuser",
        "-l",
        "authPriv",
        "-a",
        "SHA-256",
        "-A",
        "authpass123",
        "-x",
        "AES",
        "-X",
        "privpass123",
    ];

    let out = send(
        "snmptrap",
        &[
            "-v",
            "2c",
            "-c",
            "public",
            &dest,
            "",
            "1.3.6.1.6.3.1.1.5.3",
            "1.3.6.1.2.1.2.2.1.1.2",
            "i",
            "2",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ev.kind.as_str(), ev.message.as_str()),
        ("snmp.trap", "linkDown from 127.0.0.1")
    );
    assert!(
        ev.attrs
            .contains(&("1.3.6.1.2.1.2.2.1.1.2".to_owned(), "INTEGER: 2".to_owned())),
        "{:?}",
        ev.attrs
    );

    // A trap with the wrong community is dropped; the next good one arrives.
    send(
        "snmptrap",
        &["-v", "2c", "-c", "wrong", &dest, "", "1.3.6.1.6.3.1.1.5.1"],
    );
    let mut args = v3.to_vec();
    args.extend(["-e", "0x8000000001020304", &dest, "", "1.3.6.1.6.3.1.1.5.1"]);
    let out = send("snmptrap", &args);
    assert!(out.status.success(), "{out:?}");
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.kind, "snmp.trap");
    assert!(ev.message.starts_with("coldStart"), "{}", ev.message);
    assert!(ev.attrs.contains(&("version".to_owned(), "3".to_owned())));

    // Informs: snmpinform exits 0 only when acknowledged.
    let out = send(
        "snmpinform",
        &[
            "-v",
            "2c",
            "-c",
            "public",
            "-t",
            "2",
            "-r",
            "1",
            &dest,
            "",
            "1.3.6.1.6.3.1.1.5.4",
        ],
    );
    assert!(out.status.success(), "v2c inform not acknowledged: {out:?}");
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ev.kind.as_str(), ev.message.as_str()),
        ("snmp.inform", "linkUp from 127.0.0.1")
    );
    let mut args = v3.to_vec();
    args.extend(["-t", "2", "-r", "1", &dest, "", "1.3.6.1.6.3.1.1.5.2"]);
    let out = send("snmpinform", &args);
    assert!(out.status.success(), "v3 inform not acknowledged: {out:?}");
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.kind, "snmp.inform");
    assert!(ev.message.starts_with("warmStart"), "{}", ev.message);
    stop.cancel();
}

#[tokio::test]
async fn poller_writes_samples_inventory_and_events_to_the_outbox() {
    use octoisp_agent::outbox::{Outbox, OutboxConfig, Synchronous};
    use octoisp_agent::snmp::poller::run_outbox_sink;
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(OutboxConfig {
        synchronous: Synchronous::Normal,
        ..OutboxConfig::new(dir.path().join("outbox.db"))
    })
    .unwrap();
    let stop = CancellationToken::new();
    let good = serve_recording("mikrotik-ccr", &stop).await;
    let dead = serve(
        SimDevice::new(
            Arc::new(RwLock::new(Default::default())),
            "public",
            Behaviour::Silent,
        ),
        &stop,
    )
    .await;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let sink = tokio::spawn(run_outbox_sink(rx, outbox.clone()));
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
    for addr in [good, dead] {
        let mut target = v2c(addr);
        target.timeout = Duration::from_millis(200);
        target.retries = 0;
        let spec = DeviceSpec {
            key: device_key(addr),
            target,
            interval: Duration::from_secs(3600),
            priority: Priority::Normal,
            budget: Duration::from_secs(5),
        };
        poller.spawn(spec, &tracker, stop.clone());
    }
    // One sample chunk (the good device) and two records at least (its inventory, the dead one's event).
    let mut stats = outbox.stats().unwrap();
    for _ in 0..100 {
        if stats.samples > 0 && stats.records >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        stats = outbox.stats().unwrap();
    }
    assert!(stats.samples >= 10, "{stats:?}");
    assert!(stats.records >= 2, "{stats:?}");
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    drop(poller);
    let _ = sink.await;
}

#[tokio::test]
async fn ipv6_loopback() {
    let stop = CancellationToken::new();
    let mib: sim::Mib = Arc::new(RwLock::new(sim::standard_mib(2, 3)));
    let Ok(addr) = sim::spawn(
        "[::1]:0".parse().unwrap(),
        SimDevice::new(mib, "public", Behaviour::Normal),
        stop.clone(),
    )
    .await
    else {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    };
    let s = Session::new(engine(), v2c(addr));
    let vbs = s.get(&[oid("1.3.6.1.2.1.1.5.0")]).await.unwrap();
    assert_eq!(vbs[0].value, Value::OctetString(b"sim-3".to_vec()));
    assert_eq!(s.walk(&oid("1.3.6.1.2.1.2.2.1.2")).await.unwrap().len(), 2);
    stop.cancel();
}
