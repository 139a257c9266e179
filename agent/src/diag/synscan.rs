//! TCP SYN scan ("half-open", nmap's `-sS`) over raw sockets, IPv4 and IPv6; needs root or CAP_NET_RAW
//! ([`SynError::NotPrivileged`] otherwise, and the caller falls back to the connect scan).
//!
//! * One raw TCP socket, connected to the target, sends the SYNs in a tight paced loop (no task per port,
//!   batches of up to a millisecond of probes per `sendmmsg(2)` call) and receives the answers; a raw ICMP socket receives the unreachables that quote a probe. Each has a
//!   reader thread.
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
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

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
    answered: AtomicUsize,
    rtt: Mutex<RttEstimator>,
    start: Instant,
    done: AtomicBool,
}

impl Board {
    fn now_us(&self) -> u32 {
        u32::try_from(self.start.elapsed().as_micros()).unwrap_or(u32::MAX - 1)
    }

    /// Records the first answer for `port`.
    fn answer(&self, port: u16, state: u8) {
        let i = usize::from(port);
        if self.state[i]
            .compare_exchange(UNKNOWN, state, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        self.answered.fetch_add(1, Ordering::AcqRel);
        let sent = self.sent_us[i].load(Ordering::Acquire);
        if sent == 0 {
            return;
        }
        let rtt = self.now_us().saturating_sub(sent - 1).max(1);
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

fn scan_blocking(
    host: IpAddr,
    ports: &[u16],
    opts: &ScanOptions,
) -> Result<Vec<PortResult>, SynError> {
    let domain = if host.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let tcp = match Socket::new(domain, Type::RAW, Some(Protocol::TCP)) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(SynError::NotPrivileged(e));
        }
        Err(e) => return Err(io(host, "raw TCP socket")(e)),
    };
    let icmp_proto = if host.is_ipv4() {
        Protocol::ICMPV4
    } else {
        Protocol::ICMPV6
    };
    let icmp =
        Socket::new(domain, Type::RAW, Some(icmp_proto)).map_err(io(host, "raw ICMP socket"))?;
    tcp.connect(&SocketAddr::new(host, 0).into())
        .map_err(io(host, "connect raw socket"))?;
    // The readers must keep up with a whole loopback scan's answers: ask for a large buffer (capped by
    // net.core.rmem_max).
    let _ = tcp.set_recv_buffer_size(16 << 20);
    let _ = icmp.set_recv_buffer_size(4 << 20);
    tcp.set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(io(host, "read timeout"))?;
    icmp.set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(io(host, "read timeout"))?;
    let src = local_addr_towards(host).map_err(io(host, "route to target"))?;
    // Reserve the source port: bound, never listening, so SYN-ACKs to it meet no socket and the kernel resets them.
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
    let secret: u32 = rand::random();

    let mut ports = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    let board = Board {
        state: (0..65536).map(|_| AtomicU8::new(UNKNOWN)).collect(),
        sent_us: (0..65536).map(|_| AtomicU32::new(0)).collect(),
        rtt_us: (0..65536).map(|_| AtomicU32::new(0)).collect(),
        answered: AtomicUsize::new(0),
        rtt: Mutex::new(RttEstimator::new(
            opts.initial_timeout.as_secs_f64() * 1e3,
            opts.min_timeout.as_secs_f64() * 1e3,
            opts.max_timeout.as_secs_f64() * 1e3,
        )),
        start: Instant::now(),
        done: AtomicBool::new(false),
    };

    let sent = std::thread::scope(|s| {
        s.spawn(|| read_tcp(&tcp, &board, host, src, sport, secret));
        s.spawn(|| read_icmp(&icmp, &board, host, sport));
        let r = send_rounds(&tcp, &board, &ports, opts, host, src, sport, secret);
        board.done.store(true, Ordering::Release);
        r
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
    sock: &Socket,
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
    let mut segs: Vec<[u8; tcpraw::SYN_LEN]> = Vec::with_capacity(batch::MAX_BATCH);
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
                segs.push(tcpraw::syn(
                    src,
                    host,
                    sport,
                    port,
                    tcpraw::probe_seq(secret, port),
                ));
                board.sent_us[usize::from(port)].store(now, Ordering::Release);
            }
            let slices: Vec<&[u8]> = segs.iter().map(|s| s.as_slice()).collect();
            // A local firewall refusing a probe leaves that port silent: it ends up filtered.
            batch::send_all(sock.as_fd(), &slices, None).map_err(io(host, "send SYN"))?;
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
        while Instant::now() < deadline && board.answered.load(Ordering::Acquire) < ports.len() {
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

fn read_tcp(sock: &Socket, board: &Board, host: IpAddr, src: IpAddr, sport: u16, secret: u32) {
    let mut buf = [0u8; 1600];
    let mut r = sock;
    while !board.done.load(Ordering::Acquire) {
        let n = match r.read(&mut buf) {
            Ok(n) => n,
            Err(_) => continue,
        };
        let segment = if host.is_ipv4() {
            match tcpraw::ipv4_tcp_payload(&buf[..n], host) {
                Some(s) => s,
                None => continue,
            }
        } else {
            &buf[..n]
        };
        match tcpraw::parse_reply(segment, sport, secret) {
            Some(Reply::SynAck { port, ack }) => {
                let _ = sock.send(&tcpraw::rst(src, host, sport, port, ack));
                board.answer(port, OPEN);
            }
            Some(Reply::Rst { port }) => board.answer(port, CLOSED),
            None => {}
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
            board.answer(port, FILTERED);
        }
    }
}
