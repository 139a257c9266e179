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

#[test]
fn ping_carries_the_dscp_it_was_given() {
    let Some(t) = Topology::new("dscp") else {
        return;
    };
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
