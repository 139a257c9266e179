//! Batched ICMP echo for sweeps: one raw socket per address family, one tight paced send loop on a blocking
//! thread (no task, timer or waiter per probe) and one reader thread per socket.
//!
//! Each echo request carries, in its payload, a marker, the index of its target and its send time, so a
//! reply is matched without any table of probes in flight: the reply's source must be the target the index
//! names, its identifier ours, and it must come within the timeout. Sends are spaced `1/rate` apart (and
//! draw from the process-wide budget); at most about a millisecond of probes leaves back to back.
//!
//! Needs raw sockets (root or CAP_NET_RAW); [`EchoError::NotPrivileged`] lets the caller fall back to the
//! per-probe engine in [`crate::diag::ping`].

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;

use crate::diag::safety;

/// Why a batched sweep could not run.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    /// Raw sockets need root or CAP_NET_RAW.
    #[error("raw ICMP sockets need root or CAP_NET_RAW: {0}")]
    NotPrivileged(std::io::Error),
    /// Another socket error.
    #[error("ICMP sweep: {op}: {source}")]
    Io {
        /// What failed.
        op: &'static str,
        /// The system error.
        source: std::io::Error,
    },
}

/// Marker at the start of our echo payloads.
const MAGIC: [u8; 4] = *b"OCTO";
/// Echo payload size (like ping's default 56 bytes).
const PAYLOAD: usize = 56;

/// An ICMP (IPv4, `v6 = false`) or ICMPv6 echo request with identifier `ident`, sequence `seq`, carrying
/// target index `index` and send time `sent_us`. ICMPv6 checksums are filled in by the kernel.
pub fn echo_request(v6: bool, ident: u16, seq: u16, index: u32, sent_us: u32) -> [u8; 8 + PAYLOAD] {
    let mut p = [0u8; 8 + PAYLOAD];
    p[0] = if v6 { 128 } else { 8 };
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&MAGIC);
    p[12..16].copy_from_slice(&index.to_be_bytes());
    p[16..20].copy_from_slice(&sent_us.to_be_bytes());
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Reads an echo reply (IPv4 packets with their IP header, ICMPv6 without): `(target index, send time µs)`
/// when it answers one of our requests with identifier `ident`.
pub fn parse_reply(packet: &[u8], v6: bool, ident: u16) -> Option<(u32, u32)> {
    let icmp = if v6 {
        packet
    } else {
        let first = *packet.first()?;
        let ihl = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || ihl < 20 || packet.len() < ihl || packet[9] != 1 {
            return None;
        }
        &packet[ihl..]
    };
    let reply_type = if v6 { 129 } else { 0 };
    if icmp.len() < 20 || icmp[0] != reply_type || icmp[1] != 0 {
        return None;
    }
    if u16::from_be_bytes([icmp[4], icmp[5]]) != ident || icmp[8..12] != MAGIC {
        return None;
    }
    let index = u32::from_be_bytes([icmp[12], icmp[13], icmp[14], icmp[15]]);
    let sent = u32::from_be_bytes([icmp[16], icmp[17], icmp[18], icmp[19]]);
    Some((index, sent))
}

/// Options of a batched sweep.
#[derive(Debug, Clone, Copy)]
pub struct EchoSweep {
    /// Rounds (echo requests per address).
    pub count: u64,
    /// How long a reply may take.
    pub timeout: Duration,
    /// Probes per second.
    pub rate: u32,
}

fn open(v6: bool) -> Result<UdpSocket, EchoError> {
    let (domain, proto) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let s = match Socket::new(domain, Type::RAW, Some(proto)) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(EchoError::NotPrivileged(e));
        }
        Err(source) => {
            return Err(EchoError::Io {
                op: "raw ICMP socket",
                source,
            });
        }
    };
    // A /16 answers fast on a LAN: keep room for the replies (capped by net.core.rmem_max).
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(|source| EchoError::Io {
            op: "read timeout",
            source,
        })?;
    // std's datagram calls (send_to, recv_from) work on a raw socket and give the source address safely.
    Ok(UdpSocket::from(s))
}

/// Sweeps `hosts`: the best RTT (µs) of each host that answered, `u32::MAX` for the others. Blocking.
pub fn sweep_blocking(
    hosts: &[IpAddr],
    opts: EchoSweep,
    cancel: &CancellationToken,
) -> Result<Vec<u32>, EchoError> {
    let v4 = if hosts.iter().any(IpAddr::is_ipv4) {
        Some(open(false)?)
    } else {
        None
    };
    let v6 = if hosts.iter().any(IpAddr::is_ipv6) {
        Some(open(true)?)
    } else {
        None
    };
    let ident: u16 = rand::random();
    let best: Vec<AtomicU32> = hosts.iter().map(|_| AtomicU32::new(u32::MAX)).collect();
    let start = Instant::now();
    let now_us = || u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
    let timeout_us = u32::try_from(opts.timeout.as_micros()).unwrap_or(u32::MAX);
    let done = AtomicBool::new(false);
    let reader = |sock: &UdpSocket, v6: bool| {
        let mut buf = [0u8; 1600];
        while !done.load(Ordering::Acquire) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Some((index, sent)) = parse_reply(&buf[..n], v6, ident) else {
                continue;
            };
            let Some(&target) = hosts.get(index as usize) else {
                continue;
            };
            if from.ip() != target {
                continue;
            }
            let rtt = now_us().saturating_sub(sent).max(1);
            if rtt <= timeout_us {
                best[index as usize].fetch_min(rtt, Ordering::AcqRel);
            }
        }
    };
    let budget = safety::global();
    let rate = f64::from(opts.rate.max(1));
    std::thread::scope(|s| {
        if let Some(sock) = &v4 {
            s.spawn(|| reader(sock, false));
        }
        if let Some(sock) = &v6 {
            s.spawn(|| reader(sock, true));
        }
        let t0 = Instant::now();
        let mut n: u64 = 0;
        let mut last_send = Instant::now();
        'rounds: for round in 0..opts.count.max(1) {
            for (i, &host) in hosts.iter().enumerate() {
                if n.is_multiple_of(256) && cancel.is_cancelled() {
                    break 'rounds;
                }
                let due = t0 + Duration::from_secs_f64(n as f64 / rate);
                let wait = due
                    .saturating_duration_since(Instant::now())
                    .max(budget.reserve(1));
                if wait >= Duration::from_millis(1) {
                    std::thread::sleep(wait);
                }
                n += 1;
                let (sock, is_v6) = match host {
                    IpAddr::V4(_) => (&v4, false),
                    IpAddr::V6(_) => (&v6, true),
                };
                let Some(sock) = sock else { continue };
                let pkt = echo_request(is_v6, ident, round as u16, i as u32, now_us());
                send(sock, &pkt, host);
                last_send = Instant::now();
            }
        }
        // Replies to the last probes may take the whole timeout.
        let end = last_send + opts.timeout;
        while Instant::now() < end && !cancel.is_cancelled() {
            std::thread::sleep(Duration::from_millis(5).min(end - Instant::now()));
        }
        done.store(true, Ordering::Release);
    });
    Ok(best.into_iter().map(AtomicU32::into_inner).collect())
}

/// Sends one request; an unreachable destination or a local firewall only means no reply.
fn send(sock: &UdpSocket, pkt: &[u8], host: IpAddr) {
    let to = SocketAddr::new(host, 0);
    for _ in 0..1000 {
        match sock.send_to(pkt, to) {
            // ENOBUFS / EAGAIN: the queue towards the interface is full; let it drain.
            Err(e) if matches!(e.raw_os_error(), Some(105 | 11)) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_matched_by_ident_marker_and_index() {
        let req = echo_request(false, 0x4242, 3, 77, 123_456);
        assert_eq!(checksum(&req), 0);
        // The target's echo reply: same body, type 0, behind an IPv4 header.
        let mut pkt = vec![
            0x45, 0, 0, 84, 0, 0, 0, 0, 64, 1, 0, 0, 198, 18, 7, 1, 10, 0, 0, 1,
        ];
        let mut reply = req;
        reply[0] = 0;
        pkt.extend_from_slice(&reply);
        assert_eq!(parse_reply(&pkt, false, 0x4242), Some((77, 123_456)));
        assert_eq!(parse_reply(&pkt, false, 0x4243), None);
        // Our own request seen on loopback is not a reply.
        let mut own = pkt.clone();
        own[20] = 8;
        assert_eq!(parse_reply(&own, false, 0x4242), None);
        for n in 0..pkt.len() {
            let _ = parse_reply(&pkt[..n], false, 0x4242);
        }
        let mut r6 = echo_request(true, 7, 0, 5, 9);
        r6[0] = 129;
        assert_eq!(parse_reply(&r6, true, 7), Some((5, 9)));
        assert_eq!(parse_reply(&r6[..19], true, 7), None);
    }
}
