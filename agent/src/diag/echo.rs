//! Batched ICMP echo for sweeps: one raw socket per address family that receives the replies, one reader
//! thread per socket, and tight paced send loops on blocking threads (no task, timer or waiter per probe).
//! A large IPv4 sweep is sent by one thread per core, each with its own send-only socket (`IPPROTO_RAW`, which
//! the kernel never hands a packet) and a contiguous share of the targets and of the rate: the kernel's work
//! for each probe runs on the sending core, so one sender kept one core busy and left the other idle.
//!
//! Each echo request carries, in its payload, a marker, the index of its target and its send time, so a
//! reply is matched without any table of probes in flight: the reply's source must be the target the index
//! names, its identifier ours, and it must come within the longest wait. Sends are paced at `rate` (and draw
//! from the process-wide budget) in batches of at most a millisecond of probes, each batch one
//! `sendmmsg(2)` call ([`crate::diag::batch`]).
//!
//! After the last probe the sweep waits as [`Wait`] says: a fixed time (fping's way), or adaptively from
//! the RTTs seen (nmap's host discovery), which ends a LAN sweep within about `min` of its last probe.
//!
//! Needs raw sockets (root or CAP_NET_RAW); [`EchoError::NotPrivileged`] lets the caller fall back to the
//! per-probe engine in [`crate::diag::ping`].

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio_util::sync::CancellationToken;

use crate::diag::stats::RttEstimator;
use crate::diag::{batch, safety, tcpraw};

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
/// An IPv4 header and an echo request: what a send-only socket writes.
const RAW_LEN: usize = tcpraw::IPV4_HEADER_LEN + 8 + PAYLOAD;
/// Fewest targets per sending thread (below, one thread sends them all).
const MIN_HOSTS_PER_SENDER: usize = 4096;
/// Most sending threads.
const MAX_SENDERS: usize = 4;

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

/// How long a sweep waits for replies after its last probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Wait {
    /// Exactly this long; a reply slower than this is not counted (fping's `-t` with `-r 0`).
    Fixed(Duration),
    /// Like nmap's host discovery: from the RTTs seen so far, `srtt + 4 * rttvar` (RFC 6298), at least twice
    /// the slowest RTT seen, clamped to `min..=max`; `max` while nothing has answered. Replies are counted up
    /// to `max` after their probe. A host slower than every other host seen, probed within that wait of the
    /// end, can be missed (as with nmap): [`Wait::Fixed`] never misses a host answering within its time.
    Adaptive {
        /// Shortest wait.
        min: Duration,
        /// Longest wait, and the latest a reply still counts.
        max: Duration,
    },
}

impl Wait {
    /// The latest a reply may come after its probe and still count.
    pub fn max(&self) -> Duration {
        match *self {
            Wait::Fixed(d) => d,
            Wait::Adaptive { max, .. } => max,
        }
    }

    /// The wait after the last probe, given the estimator fed with every RTT seen so far and the slowest.
    pub fn after_last(&self, est: &RttEstimator, slowest: Option<Duration>) -> Duration {
        match *self {
            Wait::Fixed(d) => d,
            Wait::Adaptive { min, max } => {
                let est = Duration::from_secs_f64(est.timeout_ms().max(0.0) / 1e3);
                let slow = slowest.map_or(Duration::ZERO, |s| s.saturating_mul(2));
                est.max(slow).clamp(min, max.max(min))
            }
        }
    }

    /// A fresh estimator for this policy (its timeout is `max` until the first sample).
    pub fn estimator(&self) -> RttEstimator {
        let (min, max) = match *self {
            Wait::Fixed(d) => (d, d),
            Wait::Adaptive { min, max } => (min, max.max(min)),
        };
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        RttEstimator::new(ms(max), ms(min), ms(max))
    }
}

/// Options of a batched sweep.
#[derive(Debug, Clone, Copy)]
pub struct EchoSweep {
    /// Rounds (echo requests per address).
    pub count: u64,
    /// How long a reply may take ([`sweep_blocking`] waits exactly this long after the last probe; see
    /// [`sweep_blocking_with`] for an adaptive wait).
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
    // std's datagram calls (recv_from) work on a raw socket and give the source address safely.
    Ok(UdpSocket::from(s))
}

/// A socket that only sends IPv4 packets with their own headers (`IPPROTO_RAW`): the kernel hands it no
/// reply, so no reply is copied for it.
fn open_send_only_v4() -> Result<Socket, EchoError> {
    let s = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )
    .map_err(|source| match source.kind() {
        std::io::ErrorKind::PermissionDenied => EchoError::NotPrivileged(source),
        _ => EchoError::Io {
            op: "raw IPv4 socket",
            source,
        },
    })?;
    let _ = s.set_send_buffer_size(4 << 20);
    Ok(s)
}

/// Where a sender writes its IPv4 probes: the shared ICMP socket (the kernel writes the IP header), or a
/// send-only socket of its own (the probe carries its header).
#[derive(Clone, Copy)]
enum V4Out<'a> {
    Kernel(&'a UdpSocket),
    Raw(&'a Socket),
}

/// RTTs seen by the readers: the estimator behind [`Wait::Adaptive`] and the slowest.
struct Seen {
    est: Mutex<RttEstimator>,
    slowest_us: AtomicU32,
}

impl Seen {
    fn observe(&self, rtt_us: u32) {
        self.slowest_us.fetch_max(rtt_us, Ordering::AcqRel);
        let mut est = match self.est.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        est.observe(f64::from(rtt_us) / 1e3);
    }

    fn wait(&self, wait: &Wait) -> Duration {
        let slowest = match self.slowest_us.load(Ordering::Acquire) {
            0 => None,
            us => Some(Duration::from_micros(u64::from(us))),
        };
        let est = match self.est.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        wait.after_last(&est, slowest)
    }
}

/// Sweeps `hosts`, waiting `opts.timeout` after the last probe: the best RTT (µs) of each host that answered,
/// `u32::MAX` for the others. Blocking.
pub fn sweep_blocking(
    hosts: &[IpAddr],
    opts: EchoSweep,
    cancel: &CancellationToken,
) -> Result<Vec<u32>, EchoError> {
    sweep_blocking_with(hosts, opts, Wait::Fixed(opts.timeout), cancel)
}

/// Like [`sweep_blocking`], waiting after the last probe as `wait` says (`opts.timeout` is then unused).
pub fn sweep_blocking_with(
    hosts: &[IpAddr],
    opts: EchoSweep,
    wait: Wait,
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
    let accept_us = u32::try_from(wait.max().as_micros()).unwrap_or(u32::MAX);
    let seen = Seen {
        est: Mutex::new(wait.estimator()),
        slowest_us: AtomicU32::new(0),
    };
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
            if rtt <= accept_us {
                best[index as usize].fetch_min(rtt, Ordering::AcqRel);
                seen.observe(rtt);
            }
        }
    };
    std::thread::scope(|s| {
        if let Some(sock) = &v4 {
            s.spawn(|| reader(sock, false));
        }
        if let Some(sock) = &v6 {
            s.spawn(|| reader(sock, true));
        }
        let sent = send_split(hosts, &opts, ident, (&v4, &v6), &now_us, cancel, s);
        // Replies to the last probes: the policy's wait, re-read as replies come in.
        if let Some(last_send) = sent {
            while !cancel.is_cancelled() {
                let end = last_send + seen.wait(&wait);
                let now = Instant::now();
                if now >= end {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2).min(end - now));
            }
        }
        done.store(true, Ordering::Release);
    });
    Ok(best.into_iter().map(AtomicU32::into_inner).collect())
}

/// Sends the probes of every round: a large sweep from one thread per core (each with a contiguous share of
/// `hosts`, of the rate and, for IPv4, a send-only socket of its own), a small one from this thread. Returns
/// when the last probe left.
fn send_split<'scope>(
    hosts: &'scope [IpAddr],
    opts: &'scope EchoSweep,
    ident: u16,
    (v4, v6): (&'scope Option<UdpSocket>, &'scope Option<UdpSocket>),
    now_us: &'scope (dyn Fn() -> u32 + Sync),
    cancel: &'scope CancellationToken,
    scope: &'scope std::thread::Scope<'scope, '_>,
) -> Option<Instant> {
    let senders = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_SENDERS)
        .min(hosts.len() / MIN_HOSTS_PER_SENDER);
    // Without send-only sockets several threads would share one socket, which was slower than one thread.
    let raw: Vec<Socket> = match v4 {
        Some(_) if senders > 1 => (0..senders)
            .map(|_| open_send_only_v4())
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| {
                tracing::debug!(error = %e, "Sweep from one thread: no send-only socket.");
                Vec::new()
            }),
        _ => Vec::new(),
    };
    if raw.len() < 2 {
        let out = v4.as_ref().map(V4Out::Kernel);
        return send_rounds(hosts, 0, opts, ident, (out, v6.as_ref()), now_us, cancel);
    }
    let share = hosts.len().div_ceil(raw.len());
    let each = EchoSweep {
        rate: (opts.rate / raw.len() as u32).max(1),
        ..*opts
    };
    let threads: Vec<_> = raw
        .into_iter()
        .zip(hosts.chunks(share).enumerate())
        .map(|(sock, (k, mine))| {
            scope.spawn(move || {
                send_rounds(
                    mine,
                    k * share,
                    &each,
                    ident,
                    (Some(V4Out::Raw(&sock)), v6.as_ref()),
                    now_us,
                    cancel,
                )
            })
        })
        .collect();
    threads
        .into_iter()
        .filter_map(|t| t.join().ok().flatten())
        .max()
}

/// Sends `opts.count` rounds of echo requests to `hosts` (their indexes in the whole sweep start at
/// `offset`), paced at `opts.rate` in batches of at most a millisecond of probes; returns when the last one
/// left (`None` when none did).
fn send_rounds(
    hosts: &[IpAddr],
    offset: usize,
    opts: &EchoSweep,
    ident: u16,
    (v4, v6): (Option<V4Out<'_>>, Option<&UdpSocket>),
    now_us: &dyn Fn() -> u32,
    cancel: &CancellationToken,
) -> Option<Instant> {
    let budget = safety::global();
    let rate = f64::from(opts.rate.max(1));
    let per_batch = ((opts.rate / 1000) as usize).clamp(1, batch::MAX_BATCH);
    let t0 = Instant::now();
    let mut n: u64 = 0;
    let mut last_send = None;
    // Each probe is built behind room for an IPv4 header, written only for a send-only socket.
    let mut pkts4: Vec<[u8; RAW_LEN]> = Vec::with_capacity(per_batch);
    let mut pkts6: Vec<[u8; RAW_LEN]> = Vec::with_capacity(per_batch);
    let mut to4: Vec<SockAddr> = Vec::with_capacity(per_batch);
    let mut to6: Vec<SockAddr> = Vec::with_capacity(per_batch);
    for round in 0..opts.count.max(1) {
        for (chunk_no, chunk) in hosts.chunks(per_batch).enumerate() {
            if cancel.is_cancelled() {
                return last_send;
            }
            let due = t0 + Duration::from_secs_f64(n as f64 / rate);
            let wait = due
                .saturating_duration_since(Instant::now())
                .max(budget.reserve(chunk.len() as u32));
            if wait >= Duration::from_millis(1) {
                std::thread::sleep(wait);
            }
            n += chunk.len() as u64;
            pkts4.clear();
            pkts6.clear();
            to4.clear();
            to6.clear();
            let sent_us = now_us();
            for (j, &host) in chunk.iter().enumerate() {
                let index = (offset + chunk_no * per_batch + j) as u32;
                let (pkts, to) = match host {
                    IpAddr::V4(_) => (&mut pkts4, &mut to4),
                    IpAddr::V6(_) => (&mut pkts6, &mut to6),
                };
                let mut p = [0u8; RAW_LEN];
                p[tcpraw::IPV4_HEADER_LEN..].copy_from_slice(&echo_request(
                    host.is_ipv6(),
                    ident,
                    round as u16,
                    index,
                    sent_us,
                ));
                if let (IpAddr::V4(dst), Some(V4Out::Raw(_))) = (host, v4) {
                    p[..tcpraw::IPV4_HEADER_LEN].copy_from_slice(&tcpraw::ipv4_header_for(
                        std::net::Ipv4Addr::UNSPECIFIED,
                        dst,
                        libc::IPPROTO_ICMP as u8,
                        8 + PAYLOAD,
                    ));
                }
                pkts.push(p);
                to.push(SockAddr::from(SocketAddr::new(host, 0)));
            }
            let v4 = v4.map(|o| match o {
                V4Out::Kernel(u) => (u.as_fd(), tcpraw::IPV4_HEADER_LEN),
                V4Out::Raw(r) => (r.as_fd(), 0),
            });
            let v6 = v6.map(|u| (u.as_fd(), tcpraw::IPV4_HEADER_LEN));
            for (out, pkts, to) in [(v4, &pkts4, &to4), (v6, &pkts6, &to6)] {
                let (Some((fd, from)), false) = (out, pkts.is_empty()) else {
                    continue;
                };
                let slices: Vec<&[u8]> = pkts.iter().map(|p| &p[from..]).collect();
                if let Err(e) = batch::send_all(fd, &slices, Some(to)) {
                    // An unreachable network or a queue that never drains: those probes get no reply.
                    tracing::debug!(error = %e, "Sweep probes not sent.");
                }
            }
            last_send = Some(Instant::now());
        }
    }
    last_send
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

    #[test]
    fn adaptive_wait_follows_the_rtts_within_its_bounds() {
        let ms = Duration::from_millis;
        let w = Wait::Adaptive {
            min: ms(100),
            max: ms(1000),
        };
        let mut est = w.estimator();
        // Nothing answered yet: the longest wait.
        assert_eq!(w.after_last(&est, None), ms(1000));
        // A LAN answering in well under a millisecond: the shortest.
        for _ in 0..50 {
            est.observe(0.2);
        }
        assert_eq!(
            w.after_last(&est, Some(Duration::from_micros(300))),
            ms(100)
        );
        // One host seen answering in 300 ms: at least twice that, whatever the estimator says.
        assert_eq!(w.after_last(&est, Some(ms(300))), ms(600));
        // A slow network: srtt + 4 rttvar, capped by the longest wait.
        let mut slow = w.estimator();
        slow.observe(150.0);
        assert_eq!(w.after_last(&slow, Some(ms(150))), ms(450));
        slow.observe(900.0);
        assert_eq!(w.after_last(&slow, Some(ms(900))), ms(1000));
        // The fixed wait ignores what was seen.
        let f = Wait::Fixed(ms(500));
        assert_eq!(f.after_last(&est, Some(ms(1))), ms(500));
        assert_eq!(f.max(), ms(500));
    }
}
