//! Port scanner: TCP connect scan and UDP scan with nmap's states, adaptive timeouts and parallelism.
//!
//! * TCP: a completed handshake is `open`, a reset `closed`, silence (after retries) or an ICMP unreachable
//!   `filtered`. Open ports are then asked for a banner (what the service says first, or its answer to an
//!   HTTP `HEAD`).
//! * UDP: one connected socket per probe, carrying a payload the service answers (DNS, SNMP v2c, NTP; empty
//!   otherwise). A reply is `open`; the kernel reports the ICMP port-unreachable as a refused `recv`, which is
//!   `closed`; another ICMP unreachable is `filtered`; silence after retries is `open|filtered`.
//! * Timing: each probe's timeout comes from an RFC 6298 estimator fed by every answered probe; the window
//!   of probes in flight grows by one per answer and halves when a retransmission is answered (the sign
//!   that the first probe was dropped), like nmap's congestion control.
//!
//! TCP scans are SYN scans ([`crate::diag::synscan`]) when the process may open raw sockets (root or
//! CAP_NET_RAW) and connect scans otherwise, unless [`ScanOptions::method`] forces one.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinSet;

use crate::diag::safety;
use crate::diag::stats::RttEstimator;
use crate::diag::synscan::{self, SynError};

/// A port's state, as nmap names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PortState {
    /// Something answered.
    #[serde(rename = "open")]
    Open,
    /// The host answered that nothing listens (TCP RST, ICMP port unreachable).
    #[serde(rename = "closed")]
    Closed,
    /// A firewall answered or swallowed the probe.
    #[serde(rename = "filtered")]
    Filtered,
    /// UDP: no answer at all; open or dropped, nobody can tell.
    #[serde(rename = "open|filtered")]
    OpenFiltered,
}

impl std::fmt::Display for PortState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PortState::Open => "open",
            PortState::Closed => "closed",
            PortState::Filtered => "filtered",
            PortState::OpenFiltered => "open|filtered",
        })
    }
}

/// One scanned port.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortResult {
    /// Port number.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// State.
    pub state: PortState,
    /// RTT of the answer, ms.
    pub rtt_ms: Option<f64>,
    /// First line the service sent (open TCP ports) or the size of the UDP answer.
    pub banner: Option<String>,
}

/// Options of a scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Most probes in flight.
    pub max_parallel: usize,
    /// Probes in flight at the start.
    pub initial_parallel: usize,
    /// Retransmissions of an unanswered probe.
    pub retries: u8,
    /// First timeout before any RTT was measured.
    pub initial_timeout: Duration,
    /// Bounds of the adaptive timeout.
    pub min_timeout: Duration,
    /// Upper bound of the adaptive timeout.
    pub max_timeout: Duration,
    /// Grab banners of open TCP ports.
    pub banners: bool,
    /// How TCP ports are probed.
    pub method: TcpMethod,
    /// SYN scan: probes per second (`None` = the process-wide cap); it halves when probes are lost.
    pub rate: Option<u32>,
}

/// How a TCP scan probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpMethod {
    /// SYN scan when privileged, connect scan otherwise.
    #[default]
    Auto,
    /// SYN scan over raw sockets (half-open; needs root or CAP_NET_RAW).
    Syn,
    /// Full TCP connections (works unprivileged).
    Connect,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            max_parallel: 512,
            initial_parallel: 64,
            retries: 1,
            initial_timeout: Duration::from_millis(1000),
            min_timeout: Duration::from_millis(100),
            max_timeout: Duration::from_millis(3000),
            banners: true,
            method: TcpMethod::Auto,
            rate: None,
        }
    }
}

/// The answer to one probe.
enum Answer {
    /// A final state with the RTT when something answered.
    Done(PortState, Option<f64>),
    /// No answer within the timeout.
    Silent,
    /// Out of local resources (file descriptors, ports): try again with less parallelism.
    Busy,
}

/// Scans `ports` of `host` over TCP or UDP.
pub async fn scan(host: IpAddr, ports: &[u16], udp: bool, opts: &ScanOptions) -> Vec<PortResult> {
    match scan_with_method(host, ports, udp, opts).await {
        Ok((results, _)) => results,
        Err(err) => {
            tracing::warn!(%host, error = %err, "SYN scan failed; no results.");
            Vec::new()
        }
    }
}

/// Scans `ports` of `host` over TCP or UDP and says how TCP ports were probed (`Connect` for UDP scans).
/// Fails only when a SYN scan was asked for ([`TcpMethod::Syn`]) and could not run.
pub async fn scan_with_method(
    host: IpAddr,
    ports: &[u16],
    udp: bool,
    opts: &ScanOptions,
) -> Result<(Vec<PortResult>, TcpMethod), SynError> {
    let mut method = TcpMethod::Connect;
    let mut results = None;
    if !udp && opts.method != TcpMethod::Connect {
        match synscan::scan(host, ports, opts).await {
            Ok(r) => {
                results = Some(r);
                method = TcpMethod::Syn;
            }
            Err(SynError::NotPrivileged(e)) if opts.method == TcpMethod::Auto => {
                tracing::debug!(error = %e, "No raw sockets: connect scan.");
            }
            Err(e) if opts.method == TcpMethod::Auto => {
                tracing::warn!(%host, error = %e, "SYN scan failed: connect scan instead.");
            }
            Err(e) => return Err(e),
        }
    }
    let mut results = match results {
        Some(r) => r,
        None => run(host, ports, udp, opts).await,
    };
    if !udp && opts.banners {
        let open: Vec<u16> = results
            .iter()
            .filter(|r| r.state == PortState::Open)
            .map(|r| r.port)
            .collect();
        let mut set = JoinSet::new();
        for port in open {
            set.spawn(async move { (port, banner(SocketAddr::new(host, port)).await) });
        }
        while let Some(Ok((port, b))) = set.join_next().await {
            if let Some(r) = results.iter_mut().find(|r| r.port == port) {
                r.banner = b;
            }
        }
    }
    Ok((results, method))
}

async fn run(host: IpAddr, ports: &[u16], udp: bool, opts: &ScanOptions) -> Vec<PortResult> {
    let mut rtt = RttEstimator::new(
        opts.initial_timeout.as_secs_f64() * 1e3,
        opts.min_timeout.as_secs_f64() * 1e3,
        opts.max_timeout.as_secs_f64() * 1e3,
    );
    let max_window = opts.max_parallel.max(1);
    let mut window = opts.initial_parallel.clamp(1, max_window) as f64;
    // (port, attempt) waiting to be probed.
    let mut queue: VecDeque<(u16, u8)> = ports.iter().map(|&p| (p, 0)).collect();
    let mut inflight = JoinSet::new();
    let mut results = Vec::with_capacity(ports.len());
    let protocol = if udp { "udp" } else { "tcp" };
    loop {
        while inflight.len() < window as usize {
            let Some((port, attempt)) = queue.pop_front() else {
                break;
            };
            let timeout = Duration::from_secs_f64(rtt.timeout_ms() / 1e3);
            let addr = SocketAddr::new(host, port);
            inflight.spawn(async move {
                safety::global().acquire(1).await;
                let answer = if udp {
                    udp_probe(addr, timeout).await
                } else {
                    tcp_probe(addr, timeout).await
                };
                (port, attempt, answer)
            });
        }
        let Some(joined) = inflight.join_next().await else {
            break;
        };
        let Ok((port, attempt, answer)) = joined else {
            continue;
        };
        match answer {
            Answer::Done(state, ms) => {
                if let Some(ms) = ms {
                    rtt.observe(ms);
                }
                if attempt > 0 {
                    // A retransmission was answered: the first probe was lost; slow down.
                    window = (window / 2.0).max(1.0);
                } else {
                    window = (window + 1.0).min(max_window as f64);
                }
                results.push(PortResult {
                    port,
                    protocol,
                    state,
                    rtt_ms: ms,
                    banner: None,
                });
            }
            Answer::Silent if attempt < opts.retries => queue.push_back((port, attempt + 1)),
            Answer::Silent => {
                let state = if udp {
                    PortState::OpenFiltered
                } else {
                    PortState::Filtered
                };
                results.push(PortResult {
                    port,
                    protocol,
                    state,
                    rtt_ms: None,
                    banner: None,
                });
            }
            Answer::Busy => {
                window = (window * 0.75).max(1.0);
                queue.push_back((port, attempt));
            }
        }
    }
    results.sort_by_key(|r| r.port);
    results
}

fn is_busy(e: &std::io::Error) -> bool {
    // EMFILE, ENFILE, EADDRNOTAVAIL, ENOBUFS.
    matches!(e.raw_os_error(), Some(24 | 23 | 99 | 105))
}

async fn tcp_probe(addr: SocketAddr, timeout: Duration) -> Answer {
    let t0 = Instant::now();
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        // Scanning our own host, a connect from an ephemeral port to the same port number meets itself (TCP
        // simultaneous open) and succeeds with nobody listening: that port is closed.
        Ok(Ok(stream)) if stream.local_addr().ok() == stream.peer_addr().ok() => {
            Answer::Done(PortState::Closed, Some(ms_since(t0)))
        }
        Ok(Ok(_stream)) => Answer::Done(PortState::Open, Some(ms_since(t0))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Answer::Done(PortState::Closed, Some(ms_since(t0)))
        }
        Ok(Err(e)) if is_busy(&e) => Answer::Busy,
        // ICMP unreachable (host, network or administratively prohibited): a firewall said no.
        Ok(Err(_)) => Answer::Done(PortState::Filtered, None),
        Err(_) => Answer::Silent,
    }
}

async fn udp_probe(addr: SocketAddr, timeout: Duration) -> Answer {
    let bind: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) if is_busy(&e) => return Answer::Busy,
        Err(_) => return Answer::Busy,
    };
    if sock.connect(addr).await.is_err() {
        return Answer::Done(PortState::Filtered, None);
    }
    let t0 = Instant::now();
    if let Err(e) = sock.send(udp_payload(addr.port())).await {
        return if e.kind() == std::io::ErrorKind::ConnectionRefused {
            Answer::Done(PortState::Closed, Some(ms_since(t0)))
        } else {
            Answer::Busy
        };
    }
    let mut buf = [0u8; 1500];
    match tokio::time::timeout(timeout, sock.recv(&mut buf)).await {
        Ok(Ok(_)) => Answer::Done(PortState::Open, Some(ms_since(t0))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Answer::Done(PortState::Closed, Some(ms_since(t0)))
        }
        Ok(Err(_)) => Answer::Done(PortState::Filtered, Some(ms_since(t0))),
        Err(_) => Answer::Silent,
    }
}

/// A datagram the usual service on `port` answers.
pub fn udp_payload(port: u16) -> &'static [u8] {
    match port {
        // DNS: query for the root's NS records, recursion desired.
        53 | 5353 => &[
            0x4f, 0x43, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1,
        ],
        // SNMP v2c GetRequest, community "public", sysDescr.0.
        161 => &[
            0x30, 0x29, 0x02, 0x01, 0x01, 0x04, 0x06, b'p', b'u', b'b', b'l', b'i', b'c', 0xa0,
            0x1c, 0x02, 0x04, 0x4f, 0x43, 0x54, 0x4f, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30,
            0x0e, 0x30, 0x0c, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x02, 0x01, 0x01, 0x01, 0x00, 0x05,
            0x00,
        ],
        // NTP v3 client request (mode 3).
        123 => &NTP_REQUEST,
        _ => &[],
    }
}

const NTP_REQUEST: [u8; 48] = {
    let mut p = [0u8; 48];
    p[0] = 0x1b;
    p
};

fn ms_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1e3
}

/// What an open TCP service says first, or answers to `HEAD / HTTP/1.0`; first line, printable, ≤ 120 chars.
async fn banner(addr: SocketAddr) -> Option<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let mut buf = vec![0u8; 512];
    let n = match tokio::time::timeout(Duration::from_millis(700), s.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => n,
        _ => {
            s.write_all(b"HEAD / HTTP/1.0\r\n\r\n").await.ok()?;
            tokio::time::timeout(Duration::from_millis(1500), s.read(&mut buf))
                .await
                .ok()?
                .ok()?
        }
    };
    let text = String::from_utf8_lossy(&buf[..n]);
    let line: String = text
        .lines()
        .next()?
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .take(120)
        .collect();
    (!line.trim().is_empty()).then_some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_payload_lengths_are_consistent() {
        let p = udp_payload(161);
        assert_eq!(usize::from(p[1]) + 2, p.len());
        assert_eq!(usize::from(p[14]) + 15, p.len());
        assert_eq!(udp_payload(123).len(), 48);
        assert_eq!(udp_payload(123)[0] & 0x07, 3);
        assert_eq!(udp_payload(53).len(), 17);
    }
}
