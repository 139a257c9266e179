//! Simulated SNMP devices, built on the agent's simulator (`octoisp_agent::snmp::sim`): each device its own
//! loopback address (127.20.0.1 upwards) and UDP socket, served by one task; MIBs shared by groups of devices
//! (the standard benchmark MIB: system group, IF-MIB with counters growing at per-interface rates,
//! HOST-RESOURCES). Some devices are dead (never answer), some slow (answer late, within the poller's timeout),
//! some have a flapping first interface (ifOperStatus toggled every `flap_secs`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use octoisp_agent::snmp::message::{self, Message};
use octoisp_agent::snmp::pdu::{AnyPdu, PduKind, Value};
use octoisp_agent::snmp::sim::{Behaviour, Cell, SimDevice, standard_mib};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Plan;
use crate::agents::snmp_ip;
use crate::counters::Counters;

/// What a simulated SNMP device does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Answers at once.
    Normal,
    /// Never answers.
    Dead,
    /// Answers after `slow_ms`.
    Slow,
    /// Answers; its interface 1 goes down and up.
    Flapping,
}

/// The kind of device `j` (deterministic, spread over the fleet).
pub fn kind(plan: &Plan, j: usize) -> Kind {
    let r = (j.wrapping_mul(7919) + 29) % 100;
    let (d, s, f) = (
        plan.dead_pct as usize,
        plan.slow_pct as usize,
        plan.flap_pct as usize,
    );
    if r < d {
        Kind::Dead
    } else if r < d + s {
        Kind::Slow
    } else if r < d + s + f {
        Kind::Flapping
    } else {
        Kind::Normal
    }
}

/// The agent's device key of device `j` (`snmp:IP:PORT`, or `snmp:IP` on port 161).
pub fn device_key(plan: &Plan, j: usize) -> String {
    if plan.snmp_port == 161 {
        format!("snmp:{}", snmp_ip(j))
    } else {
        format!("snmp:{}:{}", snmp_ip(j), plan.snmp_port)
    }
}

const SYS_UPTIME: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 3, 0];
const IF_NUMBER: [u32; 9] = [1, 3, 6, 1, 2, 1, 2, 1, 0];
const IF_OPER_STATUS_1: &str = "1.3.6.1.2.1.2.2.1.8.1";

/// The request id of a request that is the first GET of a poll (sysUpTime.0 then ifNumber.0:
/// `snmp::collect::poll`), `None` for any other request.
fn poll_start_id(bytes: &[u8]) -> Option<i32> {
    match message::decode(bytes) {
        Ok(Message::Community {
            pdu: AnyPdu::Pdu(p),
            ..
        }) if p.kind == PduKind::Get
            && p.varbinds.first().is_some_and(|v| v.oid.0 == SYS_UPTIME)
            && p.varbinds.get(1).is_some_and(|v| v.oid.0 == IF_NUMBER) =>
        {
            Some(p.request_id)
        }
        _ => None,
    }
}

/// Largest request datagram a device reads (the poller's GETs and GETBULKs are a few hundred bytes; a longer one
/// is truncated, fails to decode and is ignored). Small, because there is one buffer per device.
const REQUEST_BUF: usize = 4096;

/// The SNMP side of a fleet.
#[derive(Debug)]
pub struct SnmpFleet {
    /// Addresses of this process's devices, in device order.
    pub addrs: Vec<SocketAddr>,
    /// While set, the first GET of a poll is not answered (the rest of a poll in progress still is), so that a
    /// test can stop the poller with every answered poll complete.
    pub paused: Arc<AtomicBool>,
}

/// Binds and serves every SNMP device of `plan` into `set` until `shutdown`.
pub async fn spawn_all(
    plan: &Plan,
    counters: &Arc<Counters>,
    shutdown: &CancellationToken,
    set: &mut JoinSet<()>,
) -> anyhow::Result<SnmpFleet> {
    const VARIANTS: u32 = 16;
    let shared: Vec<_> = (0..VARIANTS)
        .map(|v| Arc::new(RwLock::new(standard_mib(plan.snmp_ifs, v * 37 + 1))))
        .collect();
    let paused = Arc::new(AtomicBool::new(false));
    let mut addrs = Vec::with_capacity(plan.snmp);
    let mut flapping = Vec::new();
    for j in (0..plan.snmp).filter(|&j| plan.mine(j)) {
        let k = kind(plan, j);
        let variant = j % VARIANTS as usize;
        let mib = if k == Kind::Flapping {
            Arc::new(RwLock::new(standard_mib(
                plan.snmp_ifs,
                variant as u32 * 37 + 1,
            )))
        } else {
            shared[variant].clone()
        };
        let behaviour = match k {
            Kind::Dead => Behaviour::Silent,
            Kind::Slow => Behaviour::Slow(Duration::from_millis(plan.slow_ms)),
            Kind::Normal | Kind::Flapping => Behaviour::Normal,
        };
        let device = SimDevice::new(mib, "public", behaviour);
        if k == Kind::Flapping {
            flapping.push(device.clone());
        }
        let addr = SocketAddr::from((snmp_ip(j), plan.snmp_port));
        let sock = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot bind the SNMP device {addr}"))?;
        addrs.push(addr);
        set.spawn(serve(
            Arc::new(sock),
            device,
            counters.clone(),
            paused.clone(),
            shutdown.clone(),
        ));
    }
    if !flapping.is_empty() {
        let (counters, shutdown) = (counters.clone(), shutdown.clone());
        let period = Duration::from_secs(plan.flap_secs.max(1));
        set.spawn(async move {
            let mut up = true;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(period) => {}
                }
                up = !up;
                for d in &flapping {
                    d.set(
                        IF_OPER_STATUS_1,
                        Cell::Static(Value::Integer(if up { 1 } else { 2 })),
                    );
                }
                counters
                    .snmp_flaps
                    .fetch_add(flapping.len() as u64, Ordering::Relaxed);
            }
        });
    }
    Ok(SnmpFleet { addrs, paused })
}

async fn serve(
    sock: Arc<UdpSocket>,
    device: SimDevice,
    counters: Arc<Counters>,
    paused: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; REQUEST_BUF];
    // The poller address and request id of the last poll start answered: the poller retransmits a request with
    // the same id after its timeout (a slow device, a loaded agent), and a retransmission is the same poll.
    let mut last_poll: Option<(SocketAddr, i32)> = None;
    loop {
        let (n, from) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r { Ok(x) => x, Err(_) => continue },
        };
        counters.snmp_requests.fetch_add(1, Ordering::Relaxed);
        let req = &buf[..n];
        let start_id = poll_start_id(req);
        let retransmitted = start_id.is_some() && last_poll == start_id.map(|id| (from, id));
        if retransmitted {
            counters
                .snmp_poll_retransmissions
                .fetch_add(1, Ordering::Relaxed);
        }
        let poll_start = start_id.is_some() && !retransmitted;
        if device.behaviour == Behaviour::Silent || (poll_start && paused.load(Ordering::Relaxed)) {
            counters.snmp_ignored.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if poll_start {
            // Only a poll start that is answered is remembered: a retransmission of an ignored one (paused) is
            // ignored again above.
            last_poll = start_id.map(|id| (from, id));
        }
        let Some(resp) = device.respond(req) else {
            counters.snmp_ignored.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let count = move |c: &Counters| {
            c.snmp_responses.fetch_add(1, Ordering::Relaxed);
            if poll_start {
                c.snmp_polls_answered.fetch_add(1, Ordering::Relaxed);
            }
        };
        match device.behaviour {
            Behaviour::Slow(d) => {
                let (sock, counters) = (sock.clone(), counters.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    if sock.send_to(&resp, from).await.is_ok() {
                        count(&counters);
                    }
                });
            }
            _ => {
                if sock.send_to(&resp, from).await.is_ok() {
                    count(&counters);
                }
            }
        }
    }
}
