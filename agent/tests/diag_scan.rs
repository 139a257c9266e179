//! Port scan and sweep of hosts in network namespaces: known open, closed (RST / port unreachable) and
//! filtered (nft drop or reject) TCP and UDP ports give exactly nmap's states; a sweep finds exactly the
//! live hosts.

mod diag_support;

use std::io::Write;
use std::net::{TcpListener, UdpSocket};

use diag_support::{Topology, addr};

/// Opens, in B: a TCP service with a banner on 2222, a UDP echo service on 5300; and firewall rules that drop
/// TCP 2224 and UDP 5302 and reject (ICMP admin-prohibited) TCP 2225 and UDP 5303.
fn services(t: &Topology) {
    let (tcp, tcp6, udp) = t.in_ns(&t.b, || {
        let tcp = TcpListener::bind("0.0.0.0:2222").unwrap_or_else(|e| panic!("bind tcp: {e}"));
        let tcp6 = TcpListener::bind((
            addr::B6
                .parse::<std::net::Ipv6Addr>()
                .unwrap_or_else(|e| panic!("{e}")),
            2222,
        ))
        .unwrap_or_else(|e| panic!("bind tcp6: {e}"));
        let udp = UdpSocket::bind("0.0.0.0:5300").unwrap_or_else(|e| panic!("bind udp: {e}"));
        (tcp, tcp6, udp)
    });
    for listener in [tcp, tcp6] {
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let _ = conn.write_all(b"SSH-2.0-OctoTest\r\n");
            }
        });
    }
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n.max(1)], peer);
        }
    });
    let rules = "table inet octo {
        chain input {
            type filter hook input priority 0;
            tcp dport 2224 drop
            udp dport 5302 drop
            tcp dport 2225 reject with icmpx type admin-prohibited
            udp dport 5303 reject with icmpx type admin-prohibited
        }
    }";
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let file = dir.path().join("rules.nft");
    std::fs::write(&file, rules).unwrap_or_else(|e| panic!("write rules: {e}"));
    t.must(&t.b, "nft", &["-f", &file.to_string_lossy()]);
}

fn states(report: &serde_json::Value) -> Vec<(u64, String, String)> {
    report["ports"]
        .as_array()
        .unwrap_or_else(|| panic!("no ports in {report}"))
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap_or(0),
                p["protocol"].as_str().unwrap_or("").to_owned(),
                p["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn st(port: u64, proto: &str, state: &str) -> (u64, String, String) {
    (port, proto.to_owned(), state.to_owned())
}

#[test]
fn tcp_scan_gives_exact_states_and_banners() {
    let Some(t) = Topology::new("tcp scan") else {
        return;
    };
    services(&t);
    let report = t.agent_json(&[
        "scan",
        addr::B4,
        "-p",
        "2222-2225",
        "--method",
        "connect",
        "--json",
    ]);
    assert_eq!(report["method"], "connect", "{report}");
    assert_eq!(
        states(&report),
        vec![
            st(2222, "tcp", "open"),
            st(2223, "tcp", "closed"),
            st(2224, "tcp", "filtered"),
            st(2225, "tcp", "filtered"),
        ],
        "{report}"
    );
    assert_eq!(report["ports"][0]["banner"], "SSH-2.0-OctoTest", "{report}");
}

/// Connections B holds in SYN-RECV (half-open).
fn half_open(t: &Topology) -> String {
    let out = t.exec(&t.b, "ss", &["-Htn", "state", "syn-recv"]);
    assert!(
        out.status.success(),
        "ss: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn syn_scan_gives_exact_states_over_ipv4_and_ipv6_and_leaves_no_half_open_connection() {
    let Some(t) = Topology::new("syn scan") else {
        return;
    };
    services(&t);
    for host in [addr::B4, addr::B6] {
        let report = t.agent_json(&["scan", host, "-p", "2222-2225", "--method", "syn", "--json"]);
        assert_eq!(report["method"], "syn", "{report}");
        assert_eq!(
            states(&report),
            vec![
                st(2222, "tcp", "open"),
                st(2223, "tcp", "closed"),
                st(2224, "tcp", "filtered"),
                st(2225, "tcp", "filtered"),
            ],
            "{host}: {report}"
        );
        assert_eq!(report["ports"][0]["banner"], "SSH-2.0-OctoTest", "{report}");
        // The SYN-ACK of the open port was answered with a reset: B holds no half-open connection.
        assert_eq!(half_open(&t), "", "{host}: half-open connections left in B");
    }
    // A range with the open port among many closed ones: the same single open port.
    let report = t.agent_json(&[
        "scan",
        addr::B4,
        "-p",
        "1-5000",
        "--method",
        "syn",
        "--no-banner",
        "--json",
    ]);
    let open: Vec<u64> = states(&report)
        .into_iter()
        .filter(|(_, _, s)| s == "open")
        .map(|(p, _, _)| p)
        .collect();
    assert_eq!(open, [2222], "{report}");
    assert_eq!(report["ports"].as_array().map(Vec::len), Some(5000));
    assert_eq!(half_open(&t), "");
}

#[test]
fn udp_scan_gives_exact_states() {
    let Some(t) = Topology::new("udp scan") else {
        return;
    };
    services(&t);
    let report = t.agent_json(&["scan", addr::B4, "--udp", "-p", "5300-5303", "--json"]);
    assert_eq!(
        states(&report),
        vec![
            st(5300, "udp", "open"),
            st(5301, "udp", "closed"),
            st(5302, "udp", "open|filtered"),
            st(5303, "udp", "filtered"),
        ],
        "{report}"
    );
}

#[test]
fn sweep_finds_exactly_the_live_hosts() {
    let Some(t) = Topology::new("sweep") else {
        return;
    };
    let report = t.agent_json(&[
        "sweep",
        "198.51.100.0/28",
        "203.0.113.0/29",
        "-n",
        "-W",
        "0.5",
        "--json",
    ]);
    let mut ips: Vec<String> = report["hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("{report}"))
        .iter()
        .filter_map(|h| h["ip"].as_str().map(str::to_owned))
        .collect();
    ips.sort();
    assert_eq!(
        ips,
        ["198.51.100.1", "198.51.100.2", "203.0.113.1", "203.0.113.2"],
        "{report}"
    );
    assert_eq!(report["scanned"], 14 + 6, "{report}");
    // B stops answering ICMP but still has a closed TCP port: found by the TCP probe.
    t.must(&t.b, "nft", &["add", "table", "inet", "noping"]);
    t.must(&t.b, "nft", &["add chain inet noping input { type filter hook input priority 0; icmp type echo-request drop; }"]);
    let report = t.agent_json(&[
        "sweep",
        addr::B4,
        "--tcp",
        "22",
        "-n",
        "-W",
        "0.5",
        "--json",
    ]);
    assert_eq!(report["hosts"][0]["ip"], addr::B4, "{report}");
    assert_eq!(report["hosts"][0]["via"], "tcp/22", "{report}");
}

#[test]
fn a_sweep_large_enough_for_several_senders_finds_exactly_the_live_hosts() {
    let Some(t) = Topology::new("sweep several senders") else {
        return;
    };
    // 16,382 addresses: one sending thread per core (up to 4), each with a share of the targets; the live
    // hosts sit in the second half, so their replies are matched through the second share's indexes.
    let report = t.agent_json(&[
        "sweep",
        "198.51.64.0/18",
        "-n",
        "-W",
        "0.5",
        "-r",
        "200000",
        "--max-pps",
        "200000",
        "--json",
    ]);
    let mut ips: Vec<String> = live(&report).into_iter().map(|(ip, _)| ip).collect();
    ips.sort();
    assert_eq!(ips, ["198.51.100.1", "198.51.100.2"], "{report}");
    assert_eq!(report["scanned"], 16_382, "{report}");
}

/// The live hosts of a `sweep --json` report with their RTTs.
fn live(report: &serde_json::Value) -> Vec<(String, f64)> {
    report["hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("{report}"))
        .iter()
        .map(|h| {
            (
                h["ip"].as_str().unwrap_or("").to_owned(),
                h["rtt_ms"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect()
}

#[test]
fn adaptive_wait_still_finds_a_slow_host_answering_within_the_longest_wait() {
    let Some(t) = Topology::new("sweep slow host") else {
        return;
    };
    // B answers 300 ms late; -W 1 allows up to 1 s. Nothing else in the range answers, so the adaptive wait
    // only learns B's RTT from B's own reply: it must keep waiting (its longest wait) until that reply comes.
    let how = t.impair(300, 0);
    eprintln!("impairment: {how:?}");
    let range = ["203.0.113.2", "203.0.113.8/29", "-n", "-W", "1", "--json"];
    let mut args = vec!["sweep"];
    args.extend_from_slice(&range);
    let report = t.agent_json(&args);
    let found = live(&report);
    assert_eq!(found.len(), 1, "{report}");
    assert_eq!(found[0].0, addr::B4, "{report}");
    assert!(found[0].1 >= 300.0, "B's RTT includes the delay: {report}");
    // Beside a fast host (R2), the adaptive wait is learnt from the fast reply and may end before B's; the
    // fixed wait waits the whole -W after the last probe and finds both.
    let report = t.agent_json(&[
        "sweep",
        "203.0.113.1",
        "203.0.113.2",
        "-n",
        "-W",
        "1",
        "--fixed-wait",
        "--json",
    ]);
    let ips: Vec<String> = live(&report).into_iter().map(|(ip, _)| ip).collect();
    assert_eq!(ips, ["203.0.113.1", addr::B4], "{report}");
}
