//! Simulated CPEs: each one a task that sends Informs to its agent's ACS (BOOTSTRAP first, then PERIODIC, now and
//! then a BOOT after a simulated reboot), answers the ACS's RPCs from its parameter tree, and informs at once
//! when its connection request URL is hit. One shared HTTP listener takes every device's connection requests
//! (`/cr/INDEX`); a semaphore bounds the sessions in flight.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Plan;
use crate::counters::Counters;
use crate::cpe::{Cpe, CpeConfig};
use crate::models::Prepared;

/// One simulated CPE and its place in the fleet.
#[derive(Debug)]
pub struct SimCpe {
    /// The CWMP speaker and its tree.
    pub cpe: Cpe,
    /// Index in the fleet (its connection request path is `/cr/INDEX`).
    pub index: usize,
    /// The agent whose ACS it informs.
    pub agent: usize,
    /// Answers RPCs with faults (tree of its Inform parameters only, read-only; Downloads fail).
    pub faulty: bool,
    registered: AtomicBool,
    wake: Notify,
}

impl SimCpe {
    /// Whether its registration (BOOTSTRAP Inform) completed.
    pub fn registered(&self) -> bool {
        self.registered.load(Ordering::Relaxed)
    }
}

/// Serial of CPE `i`.
pub fn serial(plan: &Plan, i: usize) -> String {
    format!("{}{i:08}", plan.serial_prefix)
}

/// Whether CPE `i` is one of the faulting ones (deterministic, spread over the fleet).
pub fn is_faulty(plan: &Plan, i: usize) -> bool {
    (i.wrapping_mul(7919) + 13) % 100 < plan.fault_pct as usize
}

/// Builds CPE `i` from a prepared model.
pub fn make_cpe(plan: &Plan, prepared: &Prepared, i: usize, cr_addr: SocketAddr) -> SimCpe {
    let model = &prepared.model;
    let serial = serial(plan, i);
    let mut cfg = if model.oui.eq_ignore_ascii_case("C0B101") {
        CpeConfig::zte(&serial)
    } else {
        CpeConfig::huawei(&serial)
    };
    cfg.manufacturer = model.manufacturer.clone();
    cfg.oui = model.oui.clone();
    cfg.product_class = model.product_class.clone();
    if model.root == "Device." {
        cfg.ns = 2;
    }
    cfg.inform_params = prepared.inform.clone();
    let faulty = is_faulty(plan, i);
    let params = if faulty {
        &prepared.inform_only
    } else {
        &prepared.reduced
    };
    let mut tree = BTreeMap::new();
    for p in params {
        let value = if p.name.ends_with("ConnectionRequestURL") {
            format!("http://{cr_addr}/cr/{i}")
        } else if p.name.ends_with("DeviceInfo.SerialNumber") {
            serial.clone()
        } else if p.name.ends_with("ExternalIPAddress") {
            format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
        } else {
            p.value.clone()
        };
        tree.insert(
            p.name.clone(),
            (value, p.xsd_type.clone(), p.writable && !faulty),
        );
    }
    let cpe = Cpe::new(cfg, tree);
    if faulty && let Ok(mut f) = cpe.fail_downloads.lock() {
        *f = Some(9010);
    }
    SimCpe {
        cpe,
        index: i,
        agent: i % plan.agents.max(1),
        faulty,
        registered: AtomicBool::new(false),
        wake: Notify::new(),
    }
}

/// Serves connection requests for `cpes` (this process's shard: CPE i at position i / `shards`) on `listener`
/// until `shutdown`.
pub async fn serve_connection_requests(
    listener: tokio::net::TcpListener,
    cpes: Arc<Vec<Arc<SimCpe>>>,
    shards: usize,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
        };
        let (cpes, counters) = (cpes.clone(), counters.clone());
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let idx = req
                        .uri()
                        .path()
                        .strip_prefix("/cr/")
                        .and_then(|s| s.parse::<usize>().ok());
                    let status = match idx
                        .and_then(|i| cpes.get(i / shards.max(1)).filter(|c| c.index == i))
                    {
                        Some(c) => {
                            counters.connection_requests.fetch_add(1, Ordering::Relaxed);
                            c.wake.notify_one();
                            200
                        }
                        None => 404,
                    };
                    let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() =
                        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::NOT_FOUND);
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Timing and addresses a CPE task needs.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Its agent's ACS.
    pub acs: SocketAddr,
    /// Delay before the first Inform.
    pub first: Duration,
    /// Periodic Inform interval.
    pub interval: Duration,
    /// Probability that a periodic Inform is a BOOT after a reboot instead.
    pub reboot_probability: f64,
}

const BOOTSTRAP: &[&str] = &["0 BOOTSTRAP", "1 BOOT"];
const BOOT: &[&str] = &["1 BOOT"];
const PERIODIC: &[&str] = &["2 PERIODIC"];
const CONNECTION_REQUEST: &[&str] = &["6 CONNECTION REQUEST"];

/// Runs one CPE until `stop`: a session in flight when `stop` fires is finished first.
pub async fn run_cpe(
    c: Arc<SimCpe>,
    s: Schedule,
    counters: Arc<Counters>,
    sessions: Arc<Semaphore>,
    stop: CancellationToken,
) {
    let mut woken = false;
    let mut wait = s.first;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = c.wake.notified() => woken = true,
        }
        let registered = c.registered();
        let events = if !registered {
            BOOTSTRAP
        } else if woken {
            CONNECTION_REQUEST
        } else if rand::random::<f64>() < s.reboot_probability {
            BOOT
        } else {
            PERIODIC
        };
        woken = false;
        let Ok(_permit) = sessions.acquire().await else {
            return;
        };
        counters.informs_sent.fetch_add(1, Ordering::Relaxed);
        match c.cpe.session(s.acs, events).await {
            Ok(log) if log.completed => {
                counters.informs_ok.fetch_add(1, Ordering::Relaxed);
                counters
                    .rpcs
                    .fetch_add(log.rpcs.len() as u64, Ordering::Relaxed);
                let kind = match events {
                    e if e == BOOTSTRAP => {
                        c.registered.store(true, Ordering::Relaxed);
                        &counters.registrations_ok
                    }
                    e if e == BOOT => &counters.reboots_ok,
                    e if e == CONNECTION_REQUEST => &counters.connection_request_informs_ok,
                    _ => &counters.periodic_ok,
                };
                kind.fetch_add(1, Ordering::Relaxed);
                if c.faulty {
                    counters
                        .rpcs_to_faulty
                        .fetch_add(log.rpcs.len() as u64, Ordering::Relaxed);
                }
                wait = s.interval;
            }
            Ok(_) | Err(_) => {
                counters.informs_failed.fetch_add(1, Ordering::Relaxed);
                // Real CPEs retry soon after a failed session (TR-069 §3.2.1.1 backoff starts at 5-10 s).
                wait = s.interval.min(Duration::from_secs(10));
            }
        }
    }
}

/// Spawns every CPE's task into `set`; the first Informs are spread evenly over `ramp`.
pub fn spawn_all(
    plan: &Plan,
    cpes: &Arc<Vec<Arc<SimCpe>>>,
    counters: &Arc<Counters>,
    stop: &CancellationToken,
    set: &mut JoinSet<()>,
) {
    let sessions = Arc::new(Semaphore::new(plan.max_sessions.max(1)));
    // Spread over the whole fleet's indices, so that the shards' ramps interleave.
    let n = plan.cpes.max(1) as f64;
    let interval = Duration::from_secs_f64(plan.inform_interval_secs.max(0.1));
    let ramp = plan.ramp_secs.unwrap_or(plan.inform_interval_secs).max(0.0);
    for c in cpes.iter() {
        let s = Schedule {
            acs: crate::agents::acs_addr(plan, c.agent),
            first: Duration::from_secs_f64(ramp * c.index as f64 / n),
            interval,
            reboot_probability: plan.reboot_pct / 100.0,
        };
        set.spawn(run_cpe(
            c.clone(),
            s,
            counters.clone(),
            sessions.clone(),
            stop.clone(),
        ));
    }
}
