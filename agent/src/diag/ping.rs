//! ICMP echo engine for IPv4 and IPv6: one shared socket per family (surge-ping demultiplexes replies by
//! address, identifier and sequence), sends paced by the process-wide packet budget, any number of targets
//! without a thread or socket each.
//!
//! [`run`] pings a list of targets `count` times (or until cancelled) and streams every outcome over a
//! channel; the callers (CLI, sweep, monitors) reduce them with [`crate::diag::stats`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use surge_ping::{Client, Config as PingConfig, ICMP, IcmpPacket, PingIdentifier, PingSequence};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::diag::safety;

const ICMPV4_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// Why the ping engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    /// The ICMP socket could not be opened (raw sockets need root or CAP_NET_RAW).
    #[error("cannot open an ICMP{family} socket (needs root or CAP_NET_RAW): {source}")]
    Socket {
        /// "v4" or "v6".
        family: &'static str,
        /// The system error.
        source: std::io::Error,
    },
}

/// Options of a ping run.
#[derive(Debug, Clone)]
pub struct PingOptions {
    /// Probes per target; `None` = until cancelled.
    pub count: Option<u64>,
    /// Time between two probes to the same target.
    pub interval: Duration,
    /// How long to wait for each reply.
    pub timeout: Duration,
    /// ICMP payload bytes.
    pub size: u16,
    /// IP TTL / hop limit of the probes (`None` = system default).
    pub ttl: Option<u32>,
}

impl Default for PingOptions {
    fn default() -> Self {
        PingOptions {
            count: Some(4),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            size: 56,
            ttl: None,
        }
    }
}

/// The outcome of one probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeOutcome {
    /// Index of the target in the list given to [`run`].
    pub target: usize,
    /// Probe number for this target, from 0.
    pub seq: u64,
    /// Round-trip time in ms, `None` when no reply came within the timeout.
    pub rtt_ms: Option<f64>,
    /// Size of the ICMP reply, bytes.
    pub bytes: usize,
    /// TTL of the reply (IPv4 only).
    pub reply_ttl: Option<u8>,
}

/// The shared ICMP clients, one per address family.
#[derive(Clone)]
pub struct IcmpEngine {
    v4: Option<Client>,
    v6: Option<Client>,
}

impl std::fmt::Debug for IcmpEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcmpEngine")
            .field("v4", &self.v4.is_some())
            .field("v6", &self.v6.is_some())
            .finish()
    }
}

/// IP header fields of the echo requests, per engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SocketOptions {
    /// IP TTL / hop limit (`None` = system default).
    pub ttl: Option<u32>,
    /// IPv4 TOS byte / IPv6 traffic class (DSCP << 2 | ECN); `None` = 0.
    pub tos: Option<u8>,
}

/// Sets the TOS (IPv4) or traffic class (IPv6) of the socket `client` owns.
#[allow(unsafe_code)]
fn set_tos(client: &Client, v6: bool, tos: u8) -> std::io::Result<()> {
    let socket = client.get_socket();
    let fd = socket.get_native_sock();
    // SAFETY: surge-ping exposes its socket only as a raw descriptor. `fd` stays open while `socket` (a
    // clone of the client's `Arc`'d socket) lives, which outlasts this borrow; nothing here closes it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&borrowed);
    if v6 {
        sock.set_tclass_v6(u32::from(tos))
    } else {
        sock.set_tos_v4(u32::from(tos))
    }
}

impl IcmpEngine {
    /// Opens the sockets the `targets` need (both families when `targets` is empty).
    pub fn open(targets: &[IpAddr], ttl: Option<u32>) -> Result<IcmpEngine, PingError> {
        IcmpEngine::open_with(targets, SocketOptions { ttl, tos: None })
    }

    /// Like [`IcmpEngine::open`], with the TTL and TOS / DSCP of the probes.
    pub fn open_with(targets: &[IpAddr], opts: SocketOptions) -> Result<IcmpEngine, PingError> {
        let ttl = opts.ttl;
        let want_v4 = targets.is_empty() || targets.iter().any(IpAddr::is_ipv4);
        let want_v6 = targets.is_empty() || targets.iter().any(IpAddr::is_ipv6);
        let make = |kind: ICMP| {
            let mut b = PingConfig::builder().kind(kind);
            if let Some(t) = ttl {
                b = b.ttl(t);
            }
            let client = Client::new(&b.build())?;
            if let Some(tos) = opts.tos {
                set_tos(&client, matches!(kind, ICMP::V6), tos)?;
            }
            Ok::<Client, std::io::Error>(client)
        };
        let v4 = if want_v4 {
            Some(make(ICMP::V4).map_err(|source| PingError::Socket {
                family: "v4",
                source,
            })?)
        } else {
            None
        };
        let v6 = if want_v6 {
            match make(ICMP::V6) {
                Ok(c) => Some(c),
                // IPv6 may be disabled on the host: only an error when an IPv6 target needs it.
                Err(source) if !targets.is_empty() => {
                    return Err(PingError::Socket {
                        family: "v6",
                        source,
                    });
                }
                Err(_) => None,
            }
        } else {
            None
        };
        Ok(IcmpEngine { v4, v6 })
    }

    /// One echo probe: the reply's RTT in ms, size and TTL, or `None` after `timeout`.
    pub async fn probe(
        &self,
        target: IpAddr,
        ident: u16,
        seq: u16,
        payload: &[u8],
        timeout: Duration,
    ) -> Option<(f64, usize, Option<u8>)> {
        let client = match target {
            IpAddr::V4(_) => self.v4.as_ref()?,
            IpAddr::V6(_) => self.v6.as_ref()?,
        };
        safety::global().acquire(1).await;
        let mut pinger = client.pinger(target, PingIdentifier(ident)).await;
        pinger.timeout(timeout);
        // surge-ping starts its clock after `send` returned, so a task descheduled right after sending reads
        // an RTT shorter than the truth (even 0 on loopback). Timing the whole call instead can only add the
        // wake-up delay, never hide latency the network added.
        let t0 = std::time::Instant::now();
        let (packet, _) = pinger.ping(PingSequence(seq), payload).await.ok()?;
        let rtt = t0.elapsed();
        // surge-ping also hands over ICMP errors about the probe (unreachable, time exceeded from a router):
        // only an echo reply means the target answered.
        let (bytes, ttl) = match packet {
            IcmpPacket::V4(p) if p.get_icmp_type().0 == ICMPV4_ECHO_REPLY => {
                (p.get_size(), p.get_ttl())
            }
            IcmpPacket::V6(p) if p.get_icmpv6_type().0 == ICMPV6_ECHO_REPLY => (p.get_size(), None),
            _ => return None,
        };
        Some((rtt.as_secs_f64() * 1e3, bytes, ttl))
    }
}

/// Pings `targets` as `opts` says, sending every outcome to `tx`, until done or `cancel`. Probes to one
/// target are `interval` apart; the targets of a round are spread over the interval (and never faster than
/// the global packet budget), so thousands of targets make an even stream, not a burst.
pub async fn run(
    engine: &IcmpEngine,
    targets: &[IpAddr],
    opts: &PingOptions,
    tx: mpsc::Sender<ProbeOutcome>,
    cancel: &CancellationToken,
) {
    let payload: Arc<[u8]> = vec![0u8; usize::from(opts.size)].into();
    let ident_base: u16 = rand::random();
    let n = targets.len().max(1) as u32;
    let spacing = opts.interval / n;
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut seq: u64 = 0;
    'rounds: while opts.count.is_none_or(|c| seq < c) {
        let round_start = start + opts.interval * u32::try_from(seq).unwrap_or(u32::MAX);
        for (i, &target) in targets.iter().enumerate() {
            let at = round_start + spacing * i as u32;
            if at > tokio::time::Instant::now() {
                tokio::select! {
                    _ = cancel.cancelled() => break 'rounds,
                    _ = tokio::time::sleep_until(at) => {}
                }
            } else if cancel.is_cancelled() {
                break 'rounds;
            }
            let engine = engine.clone();
            let payload = payload.clone();
            let tx = tx.clone();
            let timeout = opts.timeout;
            // The identifier tells targets apart when one address is listed twice; the sequence wraps.
            let ident = ident_base.wrapping_add(i as u16);
            let s16 = seq as u16;
            tasks.spawn(async move {
                let got = engine.probe(target, ident, s16, &payload, timeout).await;
                let _ = tx
                    .send(ProbeOutcome {
                        target: i,
                        seq,
                        rtt_ms: got.map(|g| g.0),
                        bytes: got.map_or(0, |g| g.1),
                        reply_ttl: got.and_then(|g| g.2),
                    })
                    .await;
            });
            // Reap finished probes so the set stays as small as the probes in flight.
            while tasks.try_join_next().is_some() {}
        }
        seq += 1;
    }
    tokio::select! {
        _ = cancel.cancelled() => tasks.abort_all(),
        _ = async { while tasks.join_next().await.is_some() {} } => {}
    }
}
