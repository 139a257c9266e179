//! TCP SYN scan ("half-open", nmap's `-sS`) over raw sockets, IPv4 and IPv6; needs root or CAP_NET_RAW
//! ([`SynError::NotPrivileged`] otherwise, and the caller falls back to the connect scan).
//!
//! * Sending: one thread per core (up to four, and only for scans of 2,048 ports a thread or more), each
//!   with a contiguous share of the ports, its share of the rate and a send-only raw socket, in a tight
//!   paced loop (no task per port; up to a millisecond of probes per `sendmmsg(2)` call).
//!   The kernel's work per probe (and on loopback or a veth the target's reset and its delivery) runs on the
//!   sending core, so the threads spread it over the cores.
//! * Receiving: one raw TCP socket, connected to the target, with a socket filter that keeps only segments
//!   to our source port (on loopback it would also get a copy of every SYN we send). Its reader takes what is
//!   queued with `recvmmsg(2)` and then sleeps 200 µs, one wake-up per batch of answers instead of one per
//!   answer; round-trip times come from the kernel's receive stamps (`SO_TIMESTAMPNS`), not from when the
//!   reader woke. A raw ICMP socket receives the unreachables that quote a probe.
//! * States like nmap's: SYN-ACK `open`, RST `closed`, an ICMP unreachable `filtered`, silence after the
//!   retransmissions `filtered`.
//! * No half-open connection is left behind: the local kernel answers a SYN-ACK for a port it has no socket
//!   on with an RST, and the scanner sends its own RST as well (in case a local firewall eats the kernel's).
//!   The source port is reserved by a bound, never listening, TCP socket, so no other program gets it.
//! * Timing: the probe timeout follows an RFC 6298 estimator fed by every answer; each retransmission round
//!   sends only the still-silent ports, and when a retransmission is answered (the first probe was lost) the
//!   send rate halves, like nmap's congestion control. Every SYN also draws from the process-wide budget.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use socket2::{Domain, Protocol, SockFilter, Socket, Type};

use crate::diag::portscan::{PortResult, PortState, ScanOptions};
use crate::diag::stats::RttEstimator;
use crate::diag::tcpraw::{self, Reply};
use crate::diag::{batch, safety};

/// Why a SYN scan could not run.
#[derive(Debug, thiserror::Error)]
pub enum SynError {
    /// Raw sockets need root or CAP_NET_RAW.
    #[error("SYN scan needs root or CAP_NET_RAW: {0}")]
    NotPrivileged(std::io::Error),
    /// Another socket error (the operation says which).
    #[error("SYN scan of {target}: {op}: {source}")]
    Io {
        /// The target.
        target: IpAddr,
        /// What failed.
        op: &'static str,
        /// The system error.
        source: std::io::Error,
    },
}

const UNKNOWN: u8 = 0;
const OPEN: u8 = 1;
const CLOSED: u8 = 2;
const FILTERED: u8 = 3;

/// What the reader threads learned, indexed by port.
struct Board {
    state: Vec<AtomicU8>,
    /// Send time of the latest probe, µs since the scan started (+1; 0 = never sent).
    sent_us: Vec<AtomicU32>,
    rtt_us: Vec<AtomicU32>,
    rtt: Mutex<RttEstimator>,
    start: Instant,
    /// The wall clock at `start`, to place the kernel's receive stamps on the scan's clock.
    start_wall: SystemTime,
    done: AtomicBool,
}

impl Board {
    fn now_us(&self) -> u32 {
        u32::try_from(self.start.elapsed().as_micros()).unwrap_or(u32::MAX - 1)
    }

    /// Records the first answer for `port`, received at `at` (the kernel's stamp) or now.
    fn answer(&self, port: u16, state: u8, at: Option<SystemTime>) {
        let i = usize::from(port);
        if self.state[i]
            .compare_exchange(UNKNOWN, state, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let sent = self.sent_us[i].load(Ordering::Acquire);
        if sent == 0 {
            return;
        }
        let now = self.now_us();
        let at = at
            .and_then(|t| t.duration_since(self.start_wall).ok())
            .and_then(|d| u32::try_from(d.as_micros()).ok())
            .map_or(now, |t| t.min(now));
        let rtt = at.saturating_sub(sent - 1).max(1);
        self.rtt_us[i].store(rtt, Ordering::Release);
        let mut est = match self.rtt.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        est.observe(f64::from(rtt) / 1e3);
    }
}

/// SYN-scans `ports` of `host`; results in port order. Runs on blocking threads.
pub async fn scan(
    host: IpAddr,
    ports: &[u16],
    opts: &ScanOptions,
) -> Result<Vec<PortResult>, SynError> {
    let ports = ports.to_vec();
    let opts = opts.clone();
    match tokio::task::spawn_blocking(move || scan_blocking(host, &ports, &opts)).await {
        Ok(r) => r,
        Err(e) => Err(SynError::Io {
            target: host,
            op: "scanner thread",
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

fn io(target: IpAddr, op: &'static str) -> impl FnOnce(std::io::Error) -> SynError {
    move |source| SynError::Io { target, op, source }
}

/// The local address the kernel would use towards `target`.
fn local_addr_towards(target: IpAddr) -> std::io::Result<IpAddr> {
    let any: IpAddr = if target.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let s = UdpSocket::bind(SocketAddr::new(any, 0))?;
    s.connect(SocketAddr::new(target, 9))?;
    Ok(s.local_addr()?.ip())
}

/// Sets the flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Scans of at least this many ports are split over several sending threads.
const MIN_PORTS_PER_SENDER: usize = 2048;
/// Most sending threads.
const MAX_SENDERS: usize = 4;

/// A socket that only sends probes. IPv4: `IPPROTO_RAW`, which takes whole packets and is never handed any
/// (so the kernel clones no answer for it). IPv6: a raw TCP socket whose filter refuses every answer (the
/// receiving socket gets them).
struct Sender {
    sock: Socket,
    /// The IPv4 header to put before each segment (`IPPROTO_RAW`), or `None` (the kernel writes it).
    ip_header: Option<[u8; tcpraw::IPV4_HEADER_LEN]>,
}

fn raw_tcp_socket(domain: Domain, host: IpAddr, protocol: Protocol) -> Result<Socket, SynError> {
    let sock = match Socket::new(domain, Type::RAW, Some(protocol)) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(SynError::NotPrivileged(e));
        }
        Err(e) => return Err(io(host, "raw TCP socket")(e)),
    };
    sock.connect(&SocketAddr::new(host, 0).into())
        .map_err(io(host, "connect raw socket"))?;
    Ok(sock)
}

fn open_sender(domain: Domain, host: IpAddr, src: IpAddr) -> Result<Sender, SynError> {
    match (src, host) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => Ok(Sender {
            sock: raw_tcp_socket(domain, host, Protocol::from(libc::IPPROTO_RAW))?,
            ip_header: Some(tcpraw::ipv4_header(src, dst, tcpraw::SYN_LEN)),
        }),
        _ => {
            let sock = raw_tcp_socket(domain, host, Protocol::TCP)?;
            sock.attach_filter(&[SockFilter::new(0x06, 0, 0, 0)])
                .map_err(io(host, "socket filter"))?;
            let _ = sock.set_recv_buffer_size(0);
            Ok(Sender {
                sock,
                ip_header: None,
            })
        }
    }
}

fn scan_blocking(
    host: IpAddr,
    ports: &[u16],
    opts: &ScanOptions,
) -> Result<Vec<PortResult>, SynError> {
    if ports.is_empty() {
        return Ok(Vec::new());
    }
    let domain = if host.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    // The receiving socket: every answer to our source port, once.
    let tcp = raw_tcp_socket(domain, host, Protocol::TCP)?;
    // The reader must keep up with a whole loopback scan's answers between its wake-ups: ask for a large
    // buffer (capped by net.core.rmem_max).
    let _ = tcp.set_recv_buffer_size(16 << 20);
    tcp.set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(io(host, "read timeout"))?;
    let src = local_addr_towards(host).map_err(io(host, "route to target"))?;
    // Reserve the source port: bound, never listening, so SYN-ACKs to it meet no socket and the kernel resets
    // them, and no other program gets the port while the scan runs.
    let reserve = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
        .map_err(io(host, "reserve source port"))?;
    reserve
        .bind(&SocketAddr::new(src, 0).into())
        .map_err(io(host, "reserve source port"))?;
    let sport = reserve
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .ok_or_else(|| io(host, "reserve source port")(std::io::Error::other("no port")))?;
    // Only answers to our source port reach the reader: on loopback the raw socket would also get a copy of
    // every SYN we send, and on a busy host every other segment from the target.
    tcp.attach_filter(&dst_port_filter(host.is_ipv4(), sport))
        .map_err(io(host, "socket filter"))?;
    batch::RecvBatch::enable_timestamps(tcp.as_fd()).map_err(io(host, "receive timestamps"))?;
    let senders = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_SENDERS)
        .min(ports.len() / MIN_PORTS_PER_SENDER)
        .max(1);
    let senders = (0..senders)
        .map(|_| open_sender(domain, host, src))
        .collect::<Result<Vec<_>, _>>()?;
    let icmp_proto = if host.is_ipv4() {
        Protocol::ICMPV4
    } else {
        Protocol::ICMPV6
    };
    let icmp =
        Socket::new(domain, Type::RAW, Some(icmp_proto)).map_err(io(host, "raw ICMP socket"))?;
    let _ = icmp.set_recv_buffer_size(4 << 20);
    icmp.set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(io(host, "read timeout"))?;
    let secret: u32 = rand::random();

    let mut ports = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    let board = Board {
        state: (0..65536).map(|_| AtomicU8::new(UNKNOWN)).collect(),
        sent_us: (0..65536).map(|_| AtomicU32::new(0)).collect(),
        rtt_us: (0..65536).map(|_| AtomicU32::new(0)).collect(),
        rtt: Mutex::new(RttEstimator::new(
            opts.initial_timeout.as_secs_f64() * 1e3,
            opts.min_timeout.as_secs_f64() * 1e3,
            opts.max_timeout.as_secs_f64() * 1e3,
        )),
        start: Instant::now(),
        start_wall: SystemTime::now(),
        done: AtomicBool::new(false),
    };

    // Each sender sends a contiguous share of the ports at its share of the rate, on its own thread: the
    // kernel's work per probe (and, on loopback or a veth, the target's reset and its delivery) runs on the
    // sending core, so several senders spread it over the cores.
    let share = ports.len().div_ceil(senders.len());
    let sender_opts = ScanOptions {
        rate: Some((opts.rate.unwrap_or(safety::global().rate()) / senders.len() as u32).max(1)),
        ..opts.clone()
    };
    let sent = std::thread::scope(|s| {
        // The readers stop when the senders are done, or when this closure unwinds (otherwise the scope
        // would wait for them forever).
        let _stop_readers = StopOnDrop(&board.done);
        s.spawn(|| read_tcp(&tcp, &board, host, src, sport, secret));
        s.spawn(|| read_icmp(&icmp, &board, host, sport));
        let threads: Vec<_> = senders
            .iter()
            .zip(ports.chunks(share))
            .map(|(sender, mine)| {
                let (board, sender_opts) = (&board, &sender_opts);
                s.spawn(move || {
                    send_rounds(sender, board, mine, sender_opts, host, src, sport, secret)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(io(host, "sender thread")(std::io::Error::other("panicked")))
                })
            })
            .collect::<Result<Vec<()>, _>>()
    });
    sent?;
    drop(reserve);
    Ok(ports
        .iter()
        .map(|&p| {
            let i = usize::from(p);
            let state = match board.state[i].load(Ordering::Acquire) {
                OPEN => PortState::Open,
                CLOSED => PortState::Closed,
                _ => PortState::Filtered,
            };
            let rtt = board.rtt_us[i].load(Ordering::Acquire);
            PortResult {
                port: p,
                protocol: "tcp",
                state,
                rtt_ms: (rtt > 0).then(|| f64::from(rtt) / 1e3),
                banner: None,
            }
        })
        .collect())
}

#[allow(clippy::too_many_arguments)]
fn send_rounds(
    sender: &Sender,
    board: &Board,
    ports: &[u16],
    opts: &ScanOptions,
    host: IpAddr,
    src: IpAddr,
    sport: u16,
    secret: u32,
) -> Result<(), SynError> {
    let budget = safety::global();
    let mut rate = f64::from(opts.rate.unwrap_or(budget.rate()).max(1));
    let mut pending: Vec<u16> = ports.to_vec();
    // Each probe with room for an IPv4 header before it, used when the socket takes whole packets.
    let mut segs: Vec<[u8; tcpraw::IPV4_HEADER_LEN + tcpraw::SYN_LEN]> =
        Vec::with_capacity(batch::MAX_BATCH);
    let header = sender.ip_header.unwrap_or_default();
    let skip = if sender.ip_header.is_some() {
        0
    } else {
        tcpraw::IPV4_HEADER_LEN
    };
    for attempt in 0..=opts.retries {
        let t_round = Instant::now();
        let per_batch = ((rate / 1000.0) as usize).clamp(1, batch::MAX_BATCH);
        let mut n: u32 = 0;
        let todo: Vec<u16> = pending
            .iter()
            .copied()
            .filter(|&p| board.state[usize::from(p)].load(Ordering::Acquire) == UNKNOWN)
            .collect();
        for chunk in todo.chunks(per_batch) {
            // Our own pacing (it slows down after loss) and the process-wide budget.
            let due = t_round + Duration::from_secs_f64(f64::from(n) / rate);
            let wait = due
                .saturating_duration_since(Instant::now())
                .max(budget.reserve(chunk.len() as u32));
            if wait >= Duration::from_millis(1) {
                std::thread::sleep(wait);
            }
            n += chunk.len() as u32;
            segs.clear();
            let now = board.now_us().saturating_add(1);
            for &port in chunk {
                let mut packet = [0u8; tcpraw::IPV4_HEADER_LEN + tcpraw::SYN_LEN];
                packet[..tcpraw::IPV4_HEADER_LEN].copy_from_slice(&header);
                packet[tcpraw::IPV4_HEADER_LEN..].copy_from_slice(&tcpraw::syn(
                    src,
                    host,
                    sport,
                    port,
                    tcpraw::probe_seq(secret, port),
                ));
                segs.push(packet);
                board.sent_us[usize::from(port)].store(now, Ordering::Release);
            }
            let slices: Vec<&[u8]> = segs.iter().map(|s| &s[skip..]).collect();
            // A local firewall refusing a probe leaves that port silent: it ends up filtered.
            batch::send_all(sender.sock.as_fd(), &slices, None).map_err(io(host, "send SYN"))?;
        }
        // Wait for the answers: until every port answered, or one timeout after the last probe.
        let timeout = {
            let est = match board.rtt.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            Duration::from_secs_f64(est.timeout_ms() / 1e3)
        };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline
            && todo
                .iter()
                .any(|&p| board.state[usize::from(p)].load(Ordering::Acquire) == UNKNOWN)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        let silent: Vec<u16> = pending
            .iter()
            .copied()
            .filter(|&p| board.state[usize::from(p)].load(Ordering::Acquire) == UNKNOWN)
            .collect();
        if attempt > 0 && silent.len() < pending.len() {
            // Retransmissions were answered: the first probes were lost, so slow down.
            rate = (rate / 2.0).max(10.0);
        }
        pending = silent;
        if pending.is_empty() {
            break;
        }
    }
    Ok(())
}

/// A classic BPF program that keeps the TCP segments sent to `dport`. An IPv4 raw socket sees the IP
/// header first (its length in the low nibble of the first byte); an IPv6 one sees the TCP header.
fn dst_port_filter(ipv4: bool, dport: u16) -> Vec<SockFilter> {
    // Opcodes of <linux/filter.h>.
    const LDX_B_MSH: u16 = 0x01 | 0x10 | 0xa0;
    const LD_H_IND: u16 = 0x48;
    const LD_H_ABS: u16 = 0x28;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let mut prog = Vec::with_capacity(5);
    if ipv4 {
        // X = 4 * (ihl); A = the 16 bits at X + 2: the TCP destination port.
        prog.push(SockFilter::new(LDX_B_MSH, 0, 0, 0));
        prog.push(SockFilter::new(LD_H_IND, 0, 0, 2));
    } else {
        prog.push(SockFilter::new(LD_H_ABS, 0, 0, 2));
    }
    prog.push(SockFilter::new(JEQ_K, 0, 1, u32::from(dport)));
    prog.push(SockFilter::new(RET_K, 0, 0, 0xffff));
    prog.push(SockFilter::new(RET_K, 0, 0, 0));
    prog
}

/// How long the TCP reader sleeps after a batch smaller than [`batch::MAX_BATCH`].
const GATHER: Duration = Duration::from_micros(200);

fn read_tcp(sock: &Socket, board: &Board, host: IpAddr, src: IpAddr, sport: u16, secret: u32) {
    let mut answers = batch::RecvBatch::default();
    while !board.done.load(Ordering::Acquire) {
        let n = match answers.recv(sock.as_fd(), false) {
            Ok(n) => n,
            Err(_) => continue,
        };
        for (packet, at) in answers.iter() {
            let segment = if host.is_ipv4() {
                match tcpraw::ipv4_tcp_payload(packet, host) {
                    Some(s) => s,
                    None => continue,
                }
            } else {
                packet
            };
            match tcpraw::parse_reply(segment, sport, secret) {
                Some(Reply::SynAck { port, ack }) => {
                    let _ = sock.send(&tcpraw::rst(src, host, sport, port, ack));
                    board.answer(port, OPEN, at);
                }
                Some(Reply::Rst { port }) => board.answer(port, CLOSED, at),
                None => {}
            }
        }
        if n < batch::MAX_BATCH {
            // Let answers gather: one wake-up per batch instead of one per answer (the wake-ups cost more
            // CPU than the answers themselves); each answer's time is the kernel's stamp, not ours.
            std::thread::sleep(GATHER);
        }
    }
}

fn read_icmp(sock: &Socket, board: &Board, host: IpAddr, sport: u16) {
    let mut buf = [0u8; 1600];
    let mut r = sock;
    while !board.done.load(Ordering::Acquire) {
        let n = match r.read(&mut buf) {
            Ok(n) => n,
            Err(_) => continue,
        };
        if let Some(port) = tcpraw::parse_unreachable(&buf[..n], host, sport) {
            board.answer(port, FILTERED, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_ports_is_an_empty_report_not_a_panic() {
        let r = scan_blocking([127, 0, 0, 1].into(), &[], &ScanOptions::default());
        assert!(matches!(r, Ok(ref v) if v.is_empty()), "{r:?}");
    }
}
