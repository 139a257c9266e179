//! TCP segments for the SYN scan, as bytes: building SYN and RST segments with their checksum, and reading
//! the answers (SYN-ACK, RST, ICMP errors quoting a probe). Pure code: no sockets, so every parser is unit
//! tested and never panics on short or malformed input.

use std::net::IpAddr;

/// TCP flags.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// Length of the SYN probe: a 20-byte header and the MSS option.
pub const SYN_LEN: usize = 24;
/// Length of an RST segment (no options).
pub const RST_LEN: usize = 20;

/// The sequence number of the probe to `port`: derived from a per-scan secret so that answers to another
/// scan (or forged ones) do not match (their acknowledgment number is not ours + 1).
pub fn probe_seq(secret: u32, port: u16) -> u32 {
    let x = secret ^ u32::from(port).wrapping_mul(0x9e37_79b1);
    x.rotate_left(13).wrapping_mul(0x85eb_ca6b) ^ secret
}

/// Internet checksum over the TCP pseudo-header of `src` -> `dst` and `segment` (whose checksum field is 0).
pub fn tcp_checksum(src: IpAddr, dst: IpAddr, segment: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        let mut chunks = bytes.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    };
    let len = segment.len() as u32;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            add(&s.octets());
            add(&d.octets());
            add(&[0, 6]);
            add(&(len as u16).to_be_bytes());
        }
        (s, d) => {
            add(&to_v6(s));
            add(&to_v6(d));
            add(&len.to_be_bytes());
            add(&[0, 0, 0, 6]);
        }
    }
    add(segment);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn to_v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn header(buf: &mut [u8], sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, words: u8) {
    buf[0..2].copy_from_slice(&sport.to_be_bytes());
    buf[2..4].copy_from_slice(&dport.to_be_bytes());
    buf[4..8].copy_from_slice(&seq.to_be_bytes());
    buf[8..12].copy_from_slice(&ack.to_be_bytes());
    buf[12] = words << 4;
    buf[13] = flags;
    // Window 1024, like nmap's probes; checksum and urgent pointer zero for now.
    buf[14..16].copy_from_slice(&1024u16.to_be_bytes());
    buf[16..20].fill(0);
}

/// A SYN from `src:sport` to `dst:dport` with sequence `seq` and an MSS option of 1460.
pub fn syn(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, seq: u32) -> [u8; SYN_LEN] {
    let mut b = [0u8; SYN_LEN];
    header(&mut b, sport, dport, seq, 0, SYN, 6);
    b[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    let c = tcp_checksum(src, dst, &b);
    b[16..18].copy_from_slice(&c.to_be_bytes());
    b
}

/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;

/// An IPv4 header for a `payload_len`-byte TCP segment from `src` to `dst`, for a socket that writes its own
/// headers (`IPPROTO_RAW`): TTL 64, no options. The kernel fills in the total length, the identification and
/// the checksum.
pub fn ipv4_header(
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    payload_len: usize,
) -> [u8; 20] {
    ipv4_header_for(src, dst, libc::IPPROTO_TCP as u8, payload_len)
}

/// [`ipv4_header`] for a payload of IP protocol `protocol`. A source of 0.0.0.0 is filled in by the kernel
/// from the route.
pub fn ipv4_header_for(
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    protocol: u8,
    payload_len: usize,
) -> [u8; 20] {
    let mut h = [0u8; IPV4_HEADER_LEN];
    h[0] = 0x45;
    let total = u16::try_from(IPV4_HEADER_LEN + payload_len).unwrap_or(u16::MAX);
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[8] = 64;
    h[9] = protocol;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    h
}

/// An RST with sequence `seq` (the acknowledgment number the peer sent), closing a half-open connection.
pub fn rst(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, seq: u32) -> [u8; RST_LEN] {
    let mut b = [0u8; RST_LEN];
    header(&mut b, sport, dport, seq, 0, RST, 5);
    b[14..16].fill(0);
    let c = tcp_checksum(src, dst, &b);
    b[16..18].copy_from_slice(&c.to_be_bytes());
    b
}

/// What a segment from the target says about one of our probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// SYN-ACK: the port is open; `ack` is the sequence number our RST must carry.
    SynAck {
        /// Scanned port.
        port: u16,
        /// The peer's acknowledgment number.
        ack: u32,
    },
    /// RST: the port is closed.
    Rst {
        /// Scanned port.
        port: u16,
    },
}

/// Reads a TCP segment sent to our port `sport`; `None` when it is not an answer to one of our probes (wrong
/// port, acknowledgment not ours + 1, too short, other flags).
pub fn parse_reply(segment: &[u8], sport: u16, secret: u32) -> Option<Reply> {
    if segment.len() < 20 || u16::from_be_bytes([segment[2], segment[3]]) != sport {
        return None;
    }
    let port = u16::from_be_bytes([segment[0], segment[1]]);
    let ack = u32::from_be_bytes([segment[8], segment[9], segment[10], segment[11]]);
    let flags = segment[13];
    if flags & ACK == 0 || ack != probe_seq(secret, port).wrapping_add(1) || flags & FIN != 0 {
        return None;
    }
    if flags & RST != 0 {
        Some(Reply::Rst { port })
    } else if flags & SYN != 0 {
        Some(Reply::SynAck { port, ack })
    } else {
        None
    }
}

/// The TCP segment inside an IPv4 packet from `from` (raw IPv4 sockets deliver the IP header); `None` when it
/// is not TCP from that address.
pub fn ipv4_tcp_payload(packet: &[u8], from: IpAddr) -> Option<&[u8]> {
    let (src, proto, payload) = ipv4(packet)?;
    (proto == 6 && IpAddr::from(src) == from).then_some(payload)
}

fn ipv4(packet: &[u8]) -> Option<([u8; 4], u8, &[u8])> {
    let first = *packet.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || packet.len() < ihl {
        return None;
    }
    let src = [packet[12], packet[13], packet[14], packet[15]];
    Some((src, packet[9], &packet[ihl..]))
}

/// The port of our probe an ICMP (IPv4, with its IP header) or ICMPv6 (without) unreachable quotes, when the
/// probe went from our `sport` to `target`. nmap counts every such unreachable as `filtered`.
pub fn parse_unreachable(packet: &[u8], target: IpAddr, sport: u16) -> Option<u16> {
    let (inner_dst, tcp) = match target {
        IpAddr::V4(_) => {
            let (_, proto, icmp) = ipv4(packet)?;
            // Type 3 (destination unreachable): net, host, protocol, port, or administratively prohibited.
            if proto != 1 || icmp.len() < 8 || icmp[0] != 3 {
                return None;
            }
            if !matches!(icmp[1], 0 | 1 | 2 | 3 | 9 | 10 | 13) {
                return None;
            }
            let inner = &icmp[8..];
            let first = *inner.first()?;
            let ihl = usize::from(first & 0x0f) * 4;
            if first >> 4 != 4 || ihl < 20 || inner.len() < ihl + 4 || inner[9] != 6 {
                return None;
            }
            let dst = IpAddr::from([inner[16], inner[17], inner[18], inner[19]]);
            (dst, &inner[ihl..])
        }
        IpAddr::V6(_) => {
            // Type 1 (destination unreachable), any code.
            if packet.len() < 8 + 40 + 4 || packet[0] != 1 {
                return None;
            }
            let inner = &packet[8..];
            if inner[0] >> 4 != 6 || inner[6] != 6 {
                return None;
            }
            let mut dst = [0u8; 16];
            dst.copy_from_slice(&inner[24..40]);
            (IpAddr::from(dst), &inner[40..])
        }
    };
    if inner_dst != target || u16::from_be_bytes([tcp[0], tcp[1]]) != sport {
        return None;
    }
    Some(u16::from_be_bytes([tcp[2], tcp[3]]))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const SRC: [u8; 4] = [192, 0, 2, 2];
    const DST: [u8; 4] = [203, 0, 113, 2];

    #[test]
    fn checksum_of_a_segment_with_its_checksum_is_zero() {
        let (s, d) = (IpAddr::from(SRC), IpAddr::from(DST));
        let seg = syn(s, d, 40000, 22, 12345);
        assert_eq!(tcp_checksum(s, d, &seg), 0);
        let (s6, d6): (IpAddr, IpAddr) = (
            "2001:db8:1::2".parse().unwrap_or(s),
            "2001:db8:3::2".parse().unwrap_or(d),
        );
        let seg = syn(s6, d6, 40000, 22, 12345);
        assert_eq!(tcp_checksum(s6, d6, &seg), 0);
        let r = rst(s, d, 40000, 22, 99);
        assert_eq!(tcp_checksum(s, d, &r), 0);
        assert_eq!(r[13], RST);
    }

    fn answer(port: u16, sport: u16, ack: u32, flags: u8) -> Vec<u8> {
        let mut b = vec![0u8; 20];
        header(&mut b, port, sport, 7, ack, flags, 5);
        b
    }

    #[test]
    fn an_ipv4_header_carries_the_addresses_and_reads_back() {
        let (src, dst) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 7));
        let seg = syn(src.into(), dst.into(), 40000, 443, 1);
        let mut packet = ipv4_header(src, dst, seg.len()).to_vec();
        packet.extend_from_slice(&seg);
        // What a raw socket hands back of a packet from `src`: the same segment.
        assert_eq!(ipv4_tcp_payload(&packet, src.into()), Some(&seg[..]));
        assert_eq!(ipv4_tcp_payload(&packet, dst.into()), None);
        assert_eq!(&packet[2..4], &44u16.to_be_bytes());
    }

    #[test]
    fn replies_match_only_our_probes() {
        let secret = 0xdead_beef;
        let ack = probe_seq(secret, 80).wrapping_add(1);
        assert_eq!(
            parse_reply(&answer(80, 40000, ack, SYN | ACK), 40000, secret),
            Some(Reply::SynAck { port: 80, ack })
        );
        assert_eq!(
            parse_reply(&answer(80, 40000, ack, RST | ACK), 40000, secret),
            Some(Reply::Rst { port: 80 })
        );
        // Wrong acknowledgment, wrong port, our own SYN seen on loopback, truncated.
        assert_eq!(
            parse_reply(&answer(80, 40000, ack + 1, SYN | ACK), 40000, secret),
            None
        );
        assert_eq!(
            parse_reply(&answer(81, 40000, ack, SYN | ACK), 40000, secret),
            None
        );
        assert_eq!(
            parse_reply(&answer(80, 40001, ack, SYN | ACK), 40000, secret),
            None
        );
        assert_eq!(parse_reply(&answer(80, 40000, 0, SYN), 40000, secret), None);
        assert_eq!(
            parse_reply(&answer(80, 40000, ack, SYN | ACK)[..19], 40000, secret),
            None
        );
    }

    #[test]
    fn unreachables_quote_the_probe() {
        let target = IpAddr::from(DST);
        let probe = syn(IpAddr::from(SRC), target, 40000, 2225, 1);
        let mut inner = vec![0x45, 0, 0, 44, 0, 0, 0, 0, 64, 6, 0, 0];
        inner.extend_from_slice(&SRC);
        inner.extend_from_slice(&DST);
        inner.extend_from_slice(&probe[..8]);
        let mut pkt = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        pkt.extend_from_slice(&DST);
        pkt.extend_from_slice(&SRC);
        pkt.extend_from_slice(&[3, 13, 0, 0, 0, 0, 0, 0]);
        pkt.extend_from_slice(&inner);
        assert_eq!(parse_unreachable(&pkt, target, 40000), Some(2225));
        assert_eq!(parse_unreachable(&pkt, target, 40001), None);
        assert_eq!(parse_unreachable(&pkt, IpAddr::from(SRC), 40000), None);
        // Every truncation is refused without a panic.
        for n in 0..pkt.len() {
            let _ = parse_unreachable(&pkt[..n], target, 40000);
            let _ = ipv4_tcp_payload(&pkt[..n], target);
        }
        let v6: IpAddr = "2001:db8:3::2".parse().unwrap_or(target);
        let mut p6 = vec![1, 1, 0, 0, 0, 0, 0, 0, 0x60, 0, 0, 0, 0, 24, 6, 64];
        p6.extend_from_slice(&[0u8; 16]);
        if let IpAddr::V6(a) = v6 {
            p6.extend_from_slice(&a.octets());
        }
        p6.extend_from_slice(&40000u16.to_be_bytes());
        p6.extend_from_slice(&2224u16.to_be_bytes());
        p6.extend_from_slice(&[0u8; 4]);
        assert_eq!(parse_unreachable(&p6, v6, 40000), Some(2224));
        for n in 0..p6.len() {
            let _ = parse_unreachable(&p6[..n], v6, 40000);
        }
    }
}
