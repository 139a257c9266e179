//! Helpers shared by the SNMP integration tests: a private net-snmp `snmpd` on a free loopback port, simulated
//! devices from recordings, and sessions.
#![allow(dead_code)] // Each test file uses a different subset.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use octoisp_agent::snmp::client::{Credentials, Session, Target};
use octoisp_agent::snmp::collect::{self, CollectConfig, DeviceState, PollReport};
use octoisp_agent::snmp::engine::{Engine, EngineConfig};
use octoisp_agent::snmp::fingerprint::Rules;
use octoisp_agent::snmp::profile::ProfileSet;
use octoisp_agent::snmp::sim::{self, Behaviour, SimDevice};
use octoisp_agent::snmp::usm::{AuthProto, PrivProto, SecurityLevel, UsmUser};
use octoisp_agent::snmp::{Oid, Version, device_key};
use tokio_util::sync::CancellationToken;

/// A free UDP port on 127.0.0.1 (bound and released; the small race is acceptable on loopback).
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    s.local_addr().expect("local addr").port()
}

/// A private snmpd, killed on drop.
pub struct Snmpd {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Users every test snmpd has.
pub const SNMPD_USERS: &str = r#"
createUser authsha SHA "authpass123"
createUser privsha256 SHA-256 "authpass123" AES "privpass123"
createUser privsha SHA "authpass123" AES "privpass123"
rouser authsha auth
rouser privsha256 priv
rouser privsha priv
"#;

impl Snmpd {
    /// Starts snmpd with community `public` and the v3 users of [`SNMPD_USERS`]; waits until it answers.
    pub async fn start() -> Snmpd {
        assert!(
            Path::new("/usr/sbin/snmpd").exists(),
            "net-snmp's snmpd is required (Debian package snmpd)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("snmpd.conf");
        let text = format!(
            "rocommunity public 127.0.0.1\nsysName test-snmpd\nsysLocation lab\n{SNMPD_USERS}"
        );
        std::fs::write(&conf, text).expect("write snmpd.conf");
        for _ in 0..5 {
            let port = free_udp_port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
            let child = Command::new("/usr/sbin/snmpd")
                .args(["-f", "-Lo", "-C", "-c"])
                .arg(&conf)
                .arg(format!("--persistentDir={}", dir.path().display()))
                .arg(format!("udp:127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn snmpd");
            let mut me = Snmpd {
                child,
                addr,
                _dir: tempfile::tempdir().expect("tempdir"),
            };
            let engine = engine();
            let s = Session::new(engine, v2c(addr));
            for _ in 0..50 {
                if s.get(&[oid("1.3.6.1.2.1.1.5.0")]).await.is_ok() {
                    me._dir = dir;
                    return me;
                }
                if let Ok(Some(_)) = me.child.try_wait() {
                    break; // port taken meanwhile: try another
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("snmpd did not start");
    }
}

/// An engine for a test.
pub fn engine() -> Engine {
    Engine::new(&EngineConfig::default()).expect("engine")
}

/// An OID.
pub fn oid(s: &str) -> Oid {
    s.parse().expect("oid")
}

/// A v2c target with a short timeout.
pub fn v2c(addr: SocketAddr) -> Target {
    let mut t = Target::v2c(addr, "public");
    t.timeout = Duration::from_millis(500);
    t.retries = 1;
    t
}

/// A v3 target.
pub fn v3(
    addr: SocketAddr,
    user: &str,
    level: SecurityLevel,
    auth: Option<(AuthProto, &str)>,
    privacy: Option<(PrivProto, &str)>,
) -> Target {
    let u = UsmUser::new(user, level, auth, privacy).expect("user");
    Target {
        version: Version::V3,
        credentials: Credentials::Usm(Arc::new(u)),
        ..v2c(addr)
    }
}

/// Serves a recording (`agent/tests/data/snmp/NAME.snmprec`) on a free loopback port.
pub async fn serve_recording(name: &str, stop: &CancellationToken) -> SocketAddr {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/snmp")
        .join(format!("{name}.snmprec"));
    let text = std::fs::read_to_string(&path).expect("recording");
    let mib = sim::parse_snmprec(&text).expect("parse recording");
    let dev = SimDevice::new(Arc::new(RwLock::new(mib)), "public", Behaviour::Normal);
    sim::spawn("127.0.0.1:0".parse().expect("addr"), dev, stop.clone())
        .await
        .expect("spawn")
}

/// Serves `device` on a free loopback port.
pub async fn serve(device: SimDevice, stop: &CancellationToken) -> SocketAddr {
    sim::spawn("127.0.0.1:0".parse().expect("addr"), device, stop.clone())
        .await
        .expect("spawn")
}

/// One poll (builtin rules and profiles) of the recording `name` served on a free port: the device's state after
/// it (fingerprint, profiles) and the report.
pub async fn poll_recording(name: &str) -> (DeviceState, PollReport) {
    let stop = CancellationToken::new();
    let addr = serve_recording(name, &stop).await;
    let s = Session::new(engine(), v2c(addr));
    let profiles = ProfileSet::builtin().expect("profiles");
    let mut state = DeviceState::default();
    let report = collect::poll(
        &s,
        &mut state,
        Rules::builtin(),
        &profiles,
        &CollectConfig::default(),
        &device_key(addr),
        1_000,
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    stop.cancel();
    (state, report)
}
