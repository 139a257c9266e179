//! Ping, traceroute and MTR through a two-router topology in network namespaces: the path is exactly the
//! routers in order over ICMP, UDP and TCP, on IPv4 and IPv6; loss and delay injected with `tc netem` show
//! up in the statistics.

mod diag_support;

use diag_support::{Topology, addr, hop_ips, ipa};

fn expect_path(t: &Topology, cmd: &str, target: &str, hops: [&str; 3], extra: &[&str]) {
    for proto in ["icmp", "udp", "tcp"] {
        let mut args = vec![cmd, target, "-P", proto, "-n", "--json", "-W", "1"];
        args.extend_from_slice(extra);
        let report = t.agent_json(&args);
        let want: Vec<_> = hops.iter().map(|h| Some(ipa(h))).collect();
        assert_eq!(
            hop_ips(&report),
            want,
            "{cmd} over {proto} to {target}: {report}"
        );
        assert_eq!(report["reached"], true, "{report}");
    }
}

#[test]
fn trace_reports_the_routers_in_order_over_icmp_udp_and_tcp_ipv4() {
    let Some(t) = Topology::new("trace ipv4") else {
        return;
    };
    expect_path(
        &t,
        "trace",
        addr::B4,
        [addr::R1_4, addr::R2_4, addr::B4],
        &["-q", "2"],
    );
}

#[test]
fn trace_reports_the_routers_in_order_over_icmp_udp_and_tcp_ipv6() {
    let Some(t) = Topology::new("trace ipv6") else {
        return;
    };
    expect_path(
        &t,
        "trace",
        addr::B6,
        [addr::R1_6, addr::R2_6, addr::B6],
        &["-q", "2"],
    );
}

#[test]
fn mtr_reports_the_routers_in_order_with_every_cycle_counted() {
    let Some(t) = Topology::new("mtr") else {
        return;
    };
    expect_path(
        &t,
        "mtr",
        addr::B4,
        [addr::R1_4, addr::R2_4, addr::B4],
        &["-c", "3", "-i", "0.2"],
    );
    expect_path(
        &t,
        "mtr",
        addr::B6,
        [addr::R1_6, addr::R2_6, addr::B6],
        &["-c", "3", "-i", "0.2"],
    );
    let report = t.agent_json(&["mtr", addr::B4, "-c", "4", "-i", "0.2", "-n", "--json"]);
    for hop in report["hops"].as_array().into_iter().flatten() {
        assert_eq!(hop["sent"], 4, "every hop probed once per cycle: {hop}");
    }
}

#[test]
fn ping_reaches_every_hop_on_both_families() {
    let Some(t) = Topology::new("ping") else {
        return;
    };
    let targets = [addr::R1_4, addr::R2_4, addr::B4, addr::R1_6, addr::B6];
    let mut args = vec!["ping", "-c", "3", "-i", "0.1", "--json"];
    args.extend_from_slice(&targets);
    let report = t.agent_json(&args);
    let hosts = report["hosts"].as_array().cloned().unwrap_or_default();
    assert_eq!(hosts.len(), targets.len(), "{report}");
    for (h, want) in hosts.iter().zip(targets) {
        assert_eq!(h["ip"].as_str().map(ipa), Some(ipa(want)), "{h}");
        assert_eq!(
            (h["sent"].as_u64(), h["received"].as_u64()),
            (Some(3), Some(3)),
            "{h}"
        );
    }
    // A host that does not exist (no route beyond B's subnet answers): all lost, and the exit code says so.
    let out = t.exec(
        &t.a,
        env!("CARGO_BIN_EXE_octoisp-agent"),
        &["ping", "-c", "2", "-i", "0.1", "-W", "0.3", "203.0.113.99"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("100.0% packet loss"),
        "{out:?}"
    );
}

#[test]
fn netem_loss_and_delay_show_in_ping_and_mtr() {
    let Some(t) = Topology::new("netem") else {
        return;
    };
    // B's replies are delayed 40 ms and 30 % of them dropped; the routers are untouched.
    let how = t.impair(40, 30);
    eprintln!("impairment: {how:?}");
    let ping = t.agent_json(&[
        "ping",
        addr::B4,
        "-c",
        "60",
        "-i",
        "0.02",
        "-W",
        "1",
        "--json",
    ]);
    let h = &ping["hosts"][0];
    let loss = h["loss_pct"].as_f64().unwrap_or(-1.0);
    assert!(
        (8.0..=60.0).contains(&loss),
        "ping loss {loss} % with 30 % injected: {h}"
    );
    assert!(
        h["min_ms"].as_f64().unwrap_or(0.0) >= 40.0,
        "ping min RTT below the injected 40 ms: {h}"
    );
    assert!(h["p95_ms"].as_f64() >= h["avg_ms"].as_f64(), "{h}");

    let mtr = t.agent_json(&[
        "mtr",
        addr::B4,
        "-c",
        "30",
        "-i",
        "0.05",
        "-W",
        "1",
        "-n",
        "--json",
    ]);
    let hops = mtr["hops"].as_array().cloned().unwrap_or_default();
    assert_eq!(hops.len(), 3, "{mtr}");
    let last = &hops[2];
    let loss = last["loss_pct"].as_f64().unwrap_or(-1.0);
    assert!(
        (5.0..=65.0).contains(&loss),
        "mtr loss at B {loss} %: {last}"
    );
    assert!(last["min_ms"].as_f64().unwrap_or(0.0) >= 40.0, "{last}");
    let first = &hops[0];
    assert_eq!(
        first["loss_pct"].as_f64(),
        Some(0.0),
        "R1 is not behind the netem: {first}"
    );
    assert!(first["min_ms"].as_f64().unwrap_or(99.0) < 40.0, "{first}");
}
