//! AS numbers per hop: a dnsmasq in host A's namespace serves Team Cymru style TXT records
//! (`1.2.0.192.origin.asn.cymru.com` -> `"64500 | 192.0.2.0/24 | BR | ..."`) for R1 and R2, none for B;
//! `trace --asn --asn-server` and `mtr --asn` report exactly those origins, and nothing without `--asn`.

mod diag_support;

use std::process::{Child, Command, Stdio};

use diag_support::{Topology, addr};

struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dnsmasq_in(t: &Topology) -> Option<Dnsmasq> {
    let child = Command::new("ip")
        .args(["netns", "exec", &t.a, "dnsmasq"])
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--user=root",
            "--port=5353",
            "--pid-file=",
            "--local=/asn.cymru.com/",
            "--txt-record=1.2.0.192.origin.asn.cymru.com,64500 | 192.0.2.0/24 | BR | lacnic | 2020-01-01",
            "--txt-record=2.100.51.198.origin.asn.cymru.com,64501 64502 | 198.51.100.0/24 | BR | lacnic | 2021-02-03",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(c) => {
            std::thread::sleep(std::time::Duration::from_millis(500));
            Some(Dnsmasq(c))
        }
        Err(e) => {
            eprintln!("SKIPPED: dnsmasq not available ({e}); install dnsmasq-base");
            None
        }
    }
}

fn origins(report: &serde_json::Value) -> Vec<(Option<String>, Option<u64>)> {
    report["hops"]
        .as_array()
        .unwrap_or_else(|| panic!("no hops in {report}"))
        .iter()
        .map(|h| (h["ip"].as_str().map(str::to_owned), h["asn"].as_u64()))
        .collect()
}

#[test]
fn trace_and_mtr_report_the_origin_as_of_each_hop() {
    let Some(t) = Topology::new("asn") else {
        return;
    };
    let Some(_dns) = dnsmasq_in(&t) else {
        return;
    };
    let want = vec![
        (Some(addr::R1_4.to_owned()), Some(64500)),
        (Some(addr::R2_4.to_owned()), Some(64501)),
        (Some(addr::B4.to_owned()), None),
    ];
    let trace = t.agent_json(&[
        "trace",
        addr::B4,
        "-n",
        "-q",
        "1",
        "--asn",
        "--asn-server",
        "127.0.0.1:5353",
        "--json",
    ]);
    assert_eq!(origins(&trace), want, "{trace}");
    assert_eq!(trace["hops"][0]["as_prefix"], "192.0.2.0/24", "{trace}");
    let mtr = t.agent_json(&[
        "mtr",
        addr::B4,
        "-n",
        "-c",
        "2",
        "-i",
        "0.1",
        "--asn",
        "--asn-server",
        "127.0.0.1:5353",
        "--json",
    ]);
    assert_eq!(origins(&mtr), want, "{mtr}");
    // Off by default.
    let plain = t.agent_json(&["trace", addr::B4, "-n", "-q", "1", "--json"]);
    assert!(
        origins(&plain).iter().all(|(_, asn)| asn.is_none()),
        "{plain}"
    );
    // The human report labels hops like mtr -z.
    let out = t.exec(
        &t.a,
        env!("CARGO_BIN_EXE_octoisp-agent"),
        &[
            "trace",
            addr::B4,
            "-n",
            "-q",
            "1",
            "-z",
            "--asn-server",
            "127.0.0.1:5353",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("AS64500") && text.contains("AS64501") && text.contains("AS???"),
        "{text}"
    );
}
