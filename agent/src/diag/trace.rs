//! Traceroute and MTR over trippy-core (ICMP, UDP or TCP probes; IPv4 and IPv6).
//!
//! trippy-core sends the probes and matches the replies; each finished round is turned into [`HopProbe`]s and
//! folded into a [`HopTable`] (our pure statistics), so the numbers do not depend on trippy's unstable state
//! API. UDP traces use the Paris strategy with both ports fixed: every probe of every round has the same flow
//! id, so routers that balance over equal-cost paths keep them on one path. TCP probes carry the sequence in
//! the source port (trippy cannot fix both TCP ports) and ICMP probes vary their checksum: routers hashing
//! on ports or the ICMP checksum may spread those over several paths, which the report then shows as several
//! addresses at one hop. RFC 4950 MPLS label stacks in ICMP replies are parsed and reported per hop.

use std::net::IpAddr;
use std::sync::mpsc;
use std::time::Duration;

use trippy_core::{
    Builder, Extension, Extensions, IcmpExtensionParseMode, MultipathStrategy, PortDirection,
    PrivilegeMode, ProbeStatus, Protocol,
};

use crate::diag::stats::{HopProbe, HopTable};

/// Why a trace could not run.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// trippy-core refused the configuration or failed (raw sockets need root or CAP_NET_RAW).
    #[error("tracer to {target} failed: {source}")]
    Tracer {
        /// The traced address.
        target: IpAddr,
        /// trippy-core's error.
        source: trippy_core::Error,
    },
    /// The tracer thread stopped abnormally.
    #[error("tracer thread to {0} panicked")]
    Thread(IpAddr),
}

/// Probe protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceProtocol {
    /// ICMP echo requests.
    Icmp,
    /// UDP datagrams (Paris: fixed flow).
    Udp,
    /// TCP SYNs.
    Tcp,
}

/// Options of a trace.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// Probe protocol.
    pub protocol: TraceProtocol,
    /// Rounds (cycles); each round probes every TTL once.
    pub rounds: usize,
    /// Shortest time a round lasts (MTR's interval).
    pub interval: Duration,
    /// Longest time a round waits for its replies.
    pub timeout: Duration,
    /// Highest TTL probed.
    pub max_ttl: u8,
    /// Destination port for UDP and TCP (`None`: 33434 for UDP, 80 for TCP).
    pub port: Option<u16>,
    /// TOS byte (IPv4) / traffic class (IPv6) of the probes: DSCP << 2 (0: unmarked).
    pub tos: u8,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            protocol: TraceProtocol::Icmp,
            rounds: 1,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_ttl: 30,
            port: None,
            tos: 0,
        }
    }
}

/// Runs `opts.rounds` rounds to `target` on the current thread (blocking), calling `on_round` with the table
/// after each round (for progress output and continuous monitors).
pub fn run_blocking(
    target: IpAddr,
    opts: &TraceOptions,
    mut on_round: impl FnMut(&HopTable),
) -> Result<HopTable, TraceError> {
    let (tx, rx) = mpsc::channel::<(Vec<HopProbe>, Vec<(u8, Vec<u32>)>)>();
    let tracer = builder(target, opts)
        .build()
        .map_err(|source| TraceError::Tracer { target, source })?;
    let handle = std::thread::Builder::new()
        .name(format!("trace-{target}"))
        .spawn(move || {
            tracer.run_with(move |round| {
                let probes = round
                    .probes
                    .iter()
                    .filter_map(|p| match p {
                        ProbeStatus::Complete(c) => Some(HopProbe {
                            ttl: c.ttl.0,
                            reply: Some((
                                c.host,
                                c.received
                                    .duration_since(c.sent)
                                    .unwrap_or_default()
                                    .as_secs_f64()
                                    * 1e3,
                            )),
                        }),
                        ProbeStatus::Awaited(a) => Some(HopProbe {
                            ttl: a.ttl.0,
                            reply: None,
                        }),
                        _ => None,
                    })
                    .collect();
                let mpls = round
                    .probes
                    .iter()
                    .filter_map(|p| match p {
                        ProbeStatus::Complete(c) => {
                            Some((c.ttl.0, mpls_labels(c.extensions.as_ref())))
                        }
                        _ => None,
                    })
                    .filter(|(_, l)| !l.is_empty())
                    .collect();
                let _ = tx.send((probes, mpls));
            })
        })
        .map_err(|_| TraceError::Thread(target))?;
    let mut table = HopTable::new();
    for (probes, mpls) in rx {
        table.add_round(target, &probes);
        for (ttl, labels) in &mpls {
            table.add_mpls(*ttl, labels);
        }
        on_round(&table);
    }
    match handle.join() {
        Ok(Ok(())) => Ok(table),
        Ok(Err(source)) => Err(TraceError::Tracer { target, source }),
        Err(_) => Err(TraceError::Thread(target)),
    }
}

/// The labels of the MPLS label stack extensions of a reply, outermost first.
fn mpls_labels(ext: Option<&Extensions>) -> Vec<u32> {
    ext.map(|e| {
        e.extensions
            .iter()
            .filter_map(|x| match x {
                Extension::Mpls(stack) => Some(stack.members.iter().map(|m| m.label)),
                Extension::Unknown(_) => None,
            })
            .flatten()
            .collect()
    })
    .unwrap_or_default()
}

fn builder(target: IpAddr, opts: &TraceOptions) -> Builder {
    let trace_id: u16 = rand::random::<u16>() | 1;
    let b = Builder::new(target)
        .privilege_mode(PrivilegeMode::Privileged)
        .icmp_extension_parse_mode(IcmpExtensionParseMode::Enabled)
        .trace_identifier(trace_id)
        .max_rounds(Some(opts.rounds.max(1)))
        .max_ttl(opts.max_ttl)
        .tos(opts.tos)
        .min_round_duration(opts.interval)
        .max_round_duration(opts.interval.max(opts.timeout))
        .grace_duration(Duration::from_millis(100))
        .read_timeout(Duration::from_millis(10))
        .tcp_connect_timeout(opts.timeout);
    match opts.protocol {
        TraceProtocol::Icmp => b.protocol(Protocol::Icmp),
        TraceProtocol::Udp => {
            let src = 40_000 + rand::random::<u16>() % 20_000;
            b.protocol(Protocol::Udp)
                .multipath_strategy(MultipathStrategy::Paris)
                .port_direction(PortDirection::new_fixed_both(
                    src,
                    opts.port.unwrap_or(33434),
                ))
        }
        TraceProtocol::Tcp => b
            .protocol(Protocol::Tcp)
            .port_direction(PortDirection::new_fixed_dest(opts.port.unwrap_or(80))),
    }
}
