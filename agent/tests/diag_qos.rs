//! QoS of the probes: B answers only echo requests marked DSCP EF (46); a ping is answered exactly when it is
//! sent with that DSCP (`--dscp 46` or `-Q 0xb8`), over IPv4 and IPv6.

mod diag_support;

use diag_support::{Topology, addr};

fn received(t: &Topology, extra: &[&str]) -> Vec<(u64, u64)> {
    let mut args = vec!["ping", "-c", "2", "-i", "0.1", "-W", "0.5", "--json"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[addr::B4, addr::B6]);
    let report = t.agent_json(&args);
    report["hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("{report}"))
        .iter()
        .map(|h| {
            (
                h["sent"].as_u64().unwrap_or(0),
                h["received"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// B drops every echo request not marked DSCP EF (46), IPv4 and IPv6.
fn answer_only_ef(t: &Topology) {
    t.must(&t.b, "nft", &["add", "table", "inet", "qos"]);
    t.must(
        &t.b,
        "nft",
        &[
            "add chain inet qos input { type filter hook input priority 0; \
           icmp type echo-request ip dscp != ef drop; \
           icmpv6 type echo-request ip6 dscp != ef drop; }",
        ],
    );
}

#[test]
fn ping_carries_the_dscp_it_was_given() {
    let Some(t) = Topology::new("dscp") else {
        return;
    };
    answer_only_ef(&t);
    assert_eq!(
        received(&t, &[]),
        [(2, 0), (2, 0)],
        "unmarked probes must be dropped"
    );
    assert_eq!(received(&t, &["--dscp", "46"]), [(2, 2), (2, 2)]);
    assert_eq!(received(&t, &["-Q", "0xb8"]), [(2, 2), (2, 2)]);
    assert_eq!(received(&t, &["--dscp", "10"]), [(2, 0), (2, 0)]);
    // A TTL too small to reach B (two routers in between) loses every probe.
    assert_eq!(received(&t, &["--dscp", "46", "-t", "2"]), [(2, 0), (2, 0)]);
}

/// Whether `mtr` (ICMP) to B over IPv4 and over IPv6 reached B, with `extra` flags.
fn mtr_reached(t: &Topology, extra: &[&str]) -> [bool; 2] {
    [addr::B4, addr::B6].map(|target| {
        let mut args = vec!["mtr", target, "-c", "2", "-i", "0.2", "-W", "0.5", "-n"];
        args.extend_from_slice(extra);
        args.push("--json");
        let report = t.agent_json(&args);
        report["reached"]
            .as_bool()
            .unwrap_or_else(|| panic!("{report}"))
    })
}

#[test]
fn trace_and_mtr_carry_the_dscp_they_were_given() {
    let Some(t) = Topology::new("dscptr") else {
        return;
    };
    answer_only_ef(&t);
    // The routers on the way answer every probe; only B tells marked from unmarked.
    assert_eq!(mtr_reached(&t, &[]), [false, false], "unmarked probes");
    assert_eq!(mtr_reached(&t, &["--dscp", "46"]), [true, true]);
    assert_eq!(mtr_reached(&t, &["-Q", "0xb8"]), [true, true]);
    assert_eq!(mtr_reached(&t, &["--dscp", "10"]), [false, false]);
    let trace = t.agent_json(&["trace", addr::B4, "-n", "-q", "1", "--dscp", "46", "--json"]);
    assert_eq!(trace["reached"], true, "{trace}");
}
