//! MPLS labels in traceroute and MTR (RFC 4950 ICMP extensions) over a live path.
//!
//! This kernel has no MPLS forwarding (`CONFIG_MPLS_ROUTING`, `ip -f mpls route`) on the machines we test on,
//! so no namespace can be a real label switching router. Instead R1 of the test topology answers like one:
//! its kernel's own ICMP Time Exceeded is dropped (nft, output hook) and a responder thread in R1 sees each
//! probe that expires there (an `AF_PACKET` socket on the interface towards A) and sends the Time Exceeded an
//! LSR sends for a labelled packet: RFC 4884 layout (the quoted datagram padded to 128 bytes, its length in
//! words), then an extension structure (version 2, checksum) holding an MPLS Label Stack object (class 1,
//! c-type 1) with two entries, as RFC 4950 defines them. The agent runs unmodified in A, over real sockets:
//! what is tested is the whole receive path (trippy-core's matching and extension parsing, our per-hop table,
//! the JSON and text reports); what is not is a kernel that labels packets itself.

mod diag_support;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};

use socket2::{Domain, Protocol, Socket, Type};

use diag_support::{Topology, addr, hop_ips, ipa};

/// Labels R1 reports, outermost first.
const LABELS: [u32; 2] = [24_001, 16_005];
/// Mark of the responder's socket: R1's firewall lets its Time Exceeded through and drops the kernel's.
const MARK: u32 = 0x4d50;

/// The Internet checksum of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP Time Exceeded (without IP header) quoting `probe` (an IPv4 packet) with an RFC 4950 MPLS label
/// stack extension holding `labels` (bottom of stack last).
fn time_exceeded_with_labels(probe: &[u8], labels: &[u32]) -> Vec<u8> {
    // RFC 4884: the original datagram is zero-padded to 128 octets and its length given in 32-bit words.
    let mut quote = probe[..probe.len().min(128)].to_vec();
    quote.resize(128, 0);
    // RFC 4950: one 4-octet entry per label: label (20 bits), TC (3), S (1), TTL (8).
    let mut object = Vec::new();
    let len = 4 + 4 * labels.len() as u16;
    object.extend_from_slice(&len.to_be_bytes());
    object.extend_from_slice(&[1, 1]); // class-num 1 (MPLS Label Stack), c-type 1 (incoming stack)
    for (i, &label) in labels.iter().enumerate() {
        let bottom = u32::from(i + 1 == labels.len());
        let entry = (label << 12) | (bottom << 8) | 1;
        object.extend_from_slice(&entry.to_be_bytes());
    }
    // RFC 4884 extension header: version 2, reserved, checksum over the whole extension structure.
    let mut ext = vec![0x20, 0, 0, 0];
    ext.extend_from_slice(&object);
    let c = checksum(&ext);
    ext[2..4].copy_from_slice(&c.to_be_bytes());
    let mut icmp = vec![11, 0, 0, 0, 0, (128 / 4) as u8, 0, 0];
    icmp.extend_from_slice(&quote);
    icmp.extend_from_slice(&ext);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    icmp
}

/// Makes R1 answer expiring probes from A like an LSR that received them labelled `labels`.
fn label_r1(t: &Topology, labels: &'static [u32]) {
    let rules = format!(
        "table ip octompls {{
            chain out {{
                type filter hook output priority 0;
                icmp type time-exceeded meta mark != {MARK} drop
            }}
        }}"
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let file = dir.path().join("rules.nft");
    std::fs::write(&file, rules).unwrap_or_else(|e| panic!("write rules: {e}"));
    t.must(&t.r1, "nft", &["-f", &file.to_string_lossy()]);
    // Frames arriving on r1a are addressed to its MAC; those R1 forwards or sends carry another destination.
    let mac = t.exec(&t.r1, "cat", &["/sys/class/net/r1a/address"]);
    let mac: Vec<u8> = String::from_utf8_lossy(&mac.stdout)
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap_or_else(|e| panic!("MAC {h}: {e}")))
        .collect();
    assert_eq!(mac.len(), 6, "r1a's MAC");
    let (capture, reply) = t.in_ns(&t.r1, || {
        let eth_p_ip = i32::from(0x0800u16.to_be());
        let capture = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(eth_p_ip)))
            .unwrap_or_else(|e| panic!("AF_PACKET socket: {e}"));
        let reply = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
            .unwrap_or_else(|e| panic!("raw ICMP socket: {e}"));
        reply
            .set_mark(MARK)
            .unwrap_or_else(|e| panic!("SO_MARK: {e}"));
        (capture, reply)
    });
    std::thread::spawn(move || {
        let mut capture = capture;
        let mut frame = [0u8; 2048];
        while let Ok(n) = capture.read(&mut frame) {
            let frame = &frame[..n];
            if n < 14 + 20 || frame[..6] != mac[..] {
                continue;
            }
            let ip = &frame[14..];
            let (ttl, src) = (ip[8], Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]));
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            if ip[0] >> 4 != 4 || ttl != 1 || dst == ipa(addr::R1_4) {
                continue;
            }
            let icmp = time_exceeded_with_labels(ip, labels);
            let _ = reply.send_to(&icmp, &SocketAddrV4::new(src, 0).into());
        }
    });
}

#[test]
fn trace_and_mtr_report_the_label_stack_a_hop_quotes() {
    let Some(t) = Topology::new("mpls") else {
        return;
    };
    label_r1(&t, &LABELS);
    let hops = [addr::R1_4, addr::R2_4, addr::B4].map(|h| Some(ipa(h)));
    for proto in ["icmp", "udp", "tcp"] {
        let report = t.agent_json(&[
            "trace",
            addr::B4,
            "-P",
            proto,
            "-n",
            "-q",
            "2",
            "-W",
            "1",
            "--json",
        ]);
        assert_eq!(hop_ips(&report), hops, "trace over {proto}: {report}");
        let mpls: Vec<_> = report["hops"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| h["mpls"].clone())
            .collect();
        assert_eq!(
            mpls,
            [
                serde_json::json!(LABELS),
                serde_json::Value::Null,
                serde_json::Value::Null
            ],
            "labels per hop over {proto} (no key: no labels): {report}"
        );
    }
    // mtr's text report prints the stack under the hop, like mtr -e.
    let out = t.exec(
        &t.a,
        env!("CARGO_BIN_EXE_octoisp-agent"),
        &["mtr", addr::B4, "-n", "-c", "3", "-i", "0.1"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(addr::R1_4))
        .unwrap_or_else(|| panic!("no R1 line in:\n{text}"));
    assert_eq!(
        lines.get(at + 1).map(|l| l.trim()),
        Some("[MPLS: Lbl 24001, 16005]"),
        "{text}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains("MPLS")).count(),
        1,
        "only R1 carries labels:\n{text}"
    );
}

#[test]
fn the_reply_built_here_follows_rfc_4884_and_4950() {
    let probe = [0x45u8; 40];
    let icmp = time_exceeded_with_labels(&probe, &LABELS);
    assert_eq!(checksum(&icmp), 0, "ICMP checksum");
    assert_eq!(icmp[5], 32, "quoted datagram length in words");
    let ext = &icmp[8 + 128..];
    assert_eq!((ext[0], checksum(ext)), (0x20, 0), "extension header");
    assert_eq!(&ext[4..8], &[0, 12, 1, 1], "MPLS label stack object");
    assert_eq!(
        u32::from_be_bytes([ext[8], ext[9], ext[10], ext[11]]) >> 12,
        24_001
    );
    let bottom = u32::from_be_bytes([ext[12], ext[13], ext[14], ext[15]]);
    assert_eq!((bottom >> 12, (bottom >> 8) & 1), (16_005, 1));
}
