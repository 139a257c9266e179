//! A tiny fleet (20 CPEs, 5 SNMP devices) against one real agent running in this process (its ACS on loopback,
//! its SNMP poller, its outbox on disk, no control plane): every CPE registers, the ACS's records match the
//! Informs the simulator completed, and the polls the agent stored match the polls the simulator answered.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use clap::Parser;
use octoisp_agent::acs::store::AcsStore;
use octoisp_agent::config::Config;
use octoisp_fleetsim::{Fleet, Plan, agents, snmp};
use octoisp_shared::frame::{self, Limits};
use octoisp_shared::{Message, Record, Sample, SeriesDef};
use tokio_util::sync::CancellationToken;

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.20.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port on 127.20.0.1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_fleet_informs_and_polls_match_what_the_agent_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let acs_port = free_tcp_port().to_string();
    let snmp_port = free_udp_port().to_string();
    let plan = Plan::parse_from([
        "fleetsim",
        "--agents",
        "1",
        "--cpes",
        "20",
        "--snmp",
        "5",
        "--inform-interval-secs",
        "2",
        "--ramp-secs",
        "1",
        "--reboot-pct",
        "25",
        "--fault-pct",
        "10",
        "--acs-port-base",
        &acs_port,
        "--snmp-port",
        &snmp_port,
        "--snmp-interval-secs",
        "2",
        "--dead-pct",
        "20",
        "--slow-pct",
        "20",
        "--slow-ms",
        "50",
        "--flap-pct",
        "20",
        "--flap-secs",
        "1",
    ]);
    // The fleet writes the agent's configuration; the agent runs from it.
    let paths = agents::write_all(&plan, dir.path()).unwrap();
    let text = std::fs::read_to_string(&paths[0]).unwrap();
    let cfg = Config::from_toml("agent.toml", &text, Vec::<(String, String)>::new()).unwrap();
    assert_eq!(cfg.snmp.devices.len(), 5);
    let (outbox_cfg, state_dir) = (cfg.clone(), cfg.state_dir.clone());
    let agent_stop = CancellationToken::new();
    let agent = tokio::spawn(octoisp_agent::daemon::run(cfg, agent_stop.clone()));
    let acs = agents::acs_addr(&plan, 0);
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(acs).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut fleet = Fleet::start(&plan).await.unwrap();
    // Registrations, a few periodic Informs and reboots per CPE, a few polls per device.
    tokio::time::sleep(Duration::from_secs(7)).await;
    // A connection request: the CPE informs at once with `6 CONNECTION REQUEST`.
    let cr = format!("http://{}/cr/3", fleet.cr_addr);
    let status = http_get(&cr).await;
    assert_eq!(status, 200, "connection request to {cr}");
    // Stop cleanly: no new poll is answered, polls in progress finish; CPE sessions in flight finish.
    fleet.pause_polls();
    tokio::time::sleep(Duration::from_secs(3)).await;
    fleet.stop_cpes().await;
    agent_stop.cancel();
    agent.await.unwrap().unwrap();
    let s = fleet.counters.snapshot();
    let device_ids: BTreeSet<String> = fleet.cpes.iter().map(|c| c.cpe.cfg.device_id()).collect();
    fleet.shutdown().await;

    // CPEs: every one registered, the ACS knows each, and its events are the Informs that completed.
    assert_eq!(s.registrations_ok, 20, "{s:?}");
    assert!(s.periodic_ok > 0 && s.reboots_ok > 0, "{s:?}");
    assert_eq!(s.connection_request_informs_ok, 1, "{s:?}");
    assert_eq!(s.informs_ok + s.informs_failed, s.informs_sent, "{s:?}");
    let store = AcsStore::open(&state_dir.join("acs.db")).unwrap();
    assert_eq!(store.device_count().unwrap(), 20);

    // Everything the agent queued for the control plane, decoded from its outbox.
    let outbox = octoisp_agent::daemon::open_outbox(&outbox_cfg).unwrap();
    let mut records: Vec<Record> = Vec::new();
    let mut series: HashMap<u64, SeriesDef> = HashMap::new();
    let mut samples: Vec<Sample> = Vec::new();
    while let Some(b) = outbox.next_batch().unwrap() {
        let Ok((Message::Batch(batch), _)) = frame::decode(&b.frame, &Limits::default()) else {
            panic!("undecodable batch {}", b.seq);
        };
        series.extend(batch.series.into_iter().map(|d| (d.id, d)));
        samples.extend(batch.samples.decode().unwrap());
        records.extend(batch.records);
        outbox.ack(b.seq).unwrap();
    }
    let mut events: BTreeMap<String, u64> = BTreeMap::new();
    let mut inventoried = BTreeSet::new();
    let mut unreachable = BTreeSet::new();
    for r in &records {
        match r {
            Record::Event(e) => {
                *events.entry(e.kind.clone()).or_default() += 1;
                if e.kind == "snmp.unreachable" {
                    unreachable.extend(e.device_key.clone());
                }
            }
            Record::Inventory(i) => {
                inventoried.insert(i.device_key.clone());
            }
            _ => {}
        }
    }
    assert!(
        device_ids.is_subset(&inventoried),
        "inventory: {inventoried:?}"
    );
    assert_eq!(
        events.get("cwmp.bootstrap").copied().unwrap_or(0),
        s.registrations_ok,
        "{events:?}"
    );
    assert_eq!(
        events.get("cwmp.boot").copied().unwrap_or(0),
        s.registrations_ok + s.reboots_ok,
        "{events:?} {s:?}"
    );

    // SNMP: each answered poll is one timestamp of samples for its device; the dead device has none and is
    // reported unreachable.
    let mut polls: BTreeSet<(String, i64)> = BTreeSet::new();
    for x in &samples {
        let key = &series[&x.series].device_key;
        polls.insert((key.clone(), x.ts_ms));
    }
    let dead: Vec<String> = (0..plan.snmp)
        .filter(|&j| snmp::kind(&plan, j) == snmp::Kind::Dead)
        .map(|j| snmp::device_key(&plan, j))
        .collect();
    assert_eq!(dead.len(), 1);
    assert!(
        unreachable.contains(&dead[0]),
        "unreachable: {unreachable:?}"
    );
    assert!(polls.iter().all(|(k, _)| k != &dead[0]));
    assert!(s.snmp_polls_answered >= 4, "{s:?}");
    assert_eq!(polls.len() as u64, s.snmp_polls_answered, "{s:?}");
    assert!(s.snmp_flaps > 0 && s.snmp_ignored > 0, "{s:?}");
}

async fn http_get(url: &str) -> u16 {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("/{path}"))
        .header("host", host)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    sender.send_request(req).await.unwrap().status().as_u16()
}

/// A poller that retransmits the first GET of a poll (its timeout passed: a slow device, a loaded agent) gets
/// an answer each time, but the simulator counts one poll, not two: the answered polls stay comparable with the
/// polls the agent stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retransmitted_poll_start_is_one_poll() {
    use octoisp_agent::snmp::ber::Oid;
    use octoisp_agent::snmp::message::{Version, encode_community};
    use octoisp_agent::snmp::pdu::{AnyPdu, Pdu, PduKind};

    let port = free_udp_port();
    let plan = Plan::parse_from([
        "fleetsim",
        "--agents",
        "1",
        "--cpes",
        "0",
        "--snmp",
        "1",
        "--dead-pct",
        "0",
        "--slow-pct",
        "0",
        "--flap-pct",
        "0",
        "--snmp-port",
        &port.to_string(),
    ]);
    let fleet = Fleet::start(&plan).await.expect("the fleet starts");
    let poll_start = |id: i32| {
        let oids = [
            Oid(vec![1, 3, 6, 1, 2, 1, 1, 3, 0]),
            Oid(vec![1, 3, 6, 1, 2, 1, 2, 1, 0]),
        ];
        encode_community(
            Version::V2c,
            b"public",
            &AnyPdu::Pdu(Pdu::request(PduKind::Get, id, &oids)),
        )
    };
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 4096];
    // Poll 1 sent three times (two retransmissions), then poll 2: four answers, two polls.
    for id in [7, 7, 7, 8] {
        sock.send_to(&poll_start(id), fleet.snmp.addrs[0])
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
    }
    let s = fleet.counters.snapshot();
    assert_eq!(s.snmp_responses, 4, "{s:?}");
    assert_eq!(s.snmp_polls_answered, 2, "{s:?}");
    assert_eq!(s.snmp_poll_retransmissions, 2, "{s:?}");
    fleet.shutdown().await;
}
