//! ACS load simulator: thousands of simulated CPEs run CWMP sessions against the agent's ACS on loopback and the
//! rate of complete sessions is reported. Used by `scripts/bench-acs.sh`; results in docs/BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p octoisp-agent --example cpe_sim -- --mode light --devices 5000 --concurrency 2000 --sessions 50000
//! ```
//!
//! Modes: `light` (Inform with ~30 parameters → InformResponse → empty POST → 204, state persisted), `mixed`
//! (plus one GetParameterValues of 32 parameters and one SetParameterValues, queued as tasks before each session),
//! `boot` (every device once with `0 BOOTSTRAP`+`1 BOOT`: registration, a boot storm; checks that every BOOT event
//! reached the outbox). By default the ACS runs in this process (its store and outbox in a temporary directory),
//! so the figures include the simulator's own CPU on the same cores; `--acs ADDR` targets a running agent instead
//! (light and boot modes).

#[path = "../tests/acs_support/cpe.rs"]
mod cpe;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cpe::{Cpe, CpeConfig};
use octoisp_agent::acs::session::{Acs, AcsOptions};
use octoisp_agent::acs::store::AcsStore;
use octoisp_agent::acs::tasks::TaskKind;
use octoisp_agent::outbox::{Outbox, OutboxConfig, Synchronous};
use tokio_util::sync::CancellationToken;

/// The agent's allocator (agent/src/main.rs), so that the in-process ACS runs as it does in the daemon.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Light,
    Mixed,
    Boot,
}

#[derive(Debug)]
struct Args {
    mode: Mode,
    devices: usize,
    concurrency: usize,
    sessions: usize,
    params: usize,
    acs: Option<SocketAddr>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        mode: Mode::Light,
        devices: 2000,
        concurrency: 1000,
        sessions: 20_000,
        params: 30,
        acs: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--mode" => {
                a.mode = match value()?.as_str() {
                    "light" => Mode::Light,
                    "mixed" => Mode::Mixed,
                    "boot" => Mode::Boot,
                    m => return Err(format!("unknown mode {m}")),
                }
            }
            "--devices" => a.devices = value()?.parse().map_err(|e| format!("--devices: {e}"))?,
            "--concurrency" => {
                a.concurrency = value()?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            "--sessions" => {
                a.sessions = value()?.parse().map_err(|e| format!("--sessions: {e}"))?
            }
            "--params" => a.params = value()?.parse().map_err(|e| format!("--params: {e}"))?,
            "--acs" => a.acs = Some(value()?.parse().map_err(|e| format!("--acs: {e}"))?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.mode == Mode::Boot {
        a.sessions = a.devices;
    }
    if a.devices == 0 || a.concurrency == 0 {
        return Err("--devices and --concurrency must be > 0".into());
    }
    Ok(a)
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn make_cpe(i: usize, params: usize) -> Cpe {
    let mut cfg = CpeConfig::huawei(&format!("SIM{i:08}"));
    cfg.inform_params = (0..params)
        .map(|p| format!("InternetGatewayDevice.X_SIM.Param{p}"))
        .collect();
    let mut tree: std::collections::BTreeMap<String, (String, String, bool)> = cfg
        .inform_params
        .iter()
        .map(|n| (n.clone(), (format!("v-{i}"), "xsd:string".to_owned(), true)))
        .collect();
    for p in 0..32 {
        tree.insert(
            format!("InternetGatewayDevice.X_SIM.Stat{p}"),
            (format!("{p}"), "xsd:unsignedInt".to_owned(), false),
        );
    }
    Cpe::new(cfg, tree)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = parse_args()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let shutdown = CancellationToken::new();
    let mut local: Option<(Arc<Acs>, Outbox)> = None;
    let addr = match args.acs {
        Some(a) => a,
        None => {
            let store = AcsStore::open(&dir.path().join("acs.db")).map_err(|e| e.to_string())?;
            let mut ocfg = OutboxConfig::new(dir.path().join("outbox.db"));
            ocfg.synchronous = Synchronous::Normal;
            let outbox = Outbox::open(ocfg).map_err(|e| e.to_string())?;
            let opts = AcsOptions {
                max_sessions: args.concurrency * 2 + 100,
                ..AcsOptions::default()
            };
            let acs = Arc::new(Acs::new(opts, store, Some(outbox.clone())));
            let listener =
                octoisp_agent::acs::bind(([127, 0, 0, 1], 0).into()).map_err(|e| e.to_string())?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            tokio::spawn(octoisp_agent::acs::serve(
                listener,
                acs.clone(),
                args.concurrency * 2 + 100,
                shutdown.clone(),
            ));
            local = Some((acs, outbox));
            addr
        }
    };
    let cpes: Arc<Vec<Cpe>> = Arc::new(
        (0..args.devices)
            .map(|i| make_cpe(i, args.params))
            .collect(),
    );

    // Register every device first (except in boot mode, where registration is what is measured).
    if args.mode != Mode::Boot {
        run_phase(
            &cpes,
            addr,
            args.concurrency,
            args.devices,
            &["0 BOOTSTRAP", "1 BOOT"],
            None,
        )
        .await;
    }
    let rss_before = rss_kib("VmRSS:");
    let events: &[&str] = if args.mode == Mode::Boot {
        &["0 BOOTSTRAP", "1 BOOT"]
    } else {
        &["2 PERIODIC"]
    };
    let tasks = if args.mode == Mode::Mixed {
        local.as_ref().map(|(acs, _)| acs.clone())
    } else {
        None
    };
    let started = Instant::now();
    let (ok, failed, latencies) =
        run_phase(&cpes, addr, args.concurrency, args.sessions, events, tasks).await;
    let secs = started.elapsed().as_secs_f64();
    let mut lat = latencies;
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "mode={:?} devices={} concurrency={} params={} sessions_ok={ok} failed={failed} seconds={secs:.2} sessions_per_s={:.0} p50_ms={:.1} p99_ms={:.1}",
        args.mode,
        args.devices,
        args.concurrency,
        args.params,
        ok as f64 / secs,
        pct(0.5) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
    );
    if let Some((acs, outbox)) = &local {
        let st = &acs.stats;
        let devices = acs.store.device_count().map_err(|e| e.to_string())?;
        // Let the outbox writer finish, then count what it holds.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ob = outbox.stats().map_err(|e| e.to_string())?;
        println!(
            "acs: started={} completed={} duplicate_refused={} overload_refused={} devices_registered={devices} outbox_records={} rss_kib_before={rss_before} rss_kib_now={} rss_kib_peak={}",
            st.sessions_started.load(Ordering::Relaxed),
            st.sessions_completed.load(Ordering::Relaxed),
            st.duplicate_refused.load(Ordering::Relaxed),
            st.overload_refused.load(Ordering::Relaxed),
            ob.records,
            rss_kib("VmRSS:"),
            rss_kib("VmHWM:"),
        );
        if args.mode == Mode::Boot {
            // Each boot: BOOTSTRAP and BOOT events, the inventory, the parameters.
            let expected = 4 * args.devices as u64;
            println!(
                "boot storm: outbox records {} of {expected} expected",
                ob.records
            );
        }
    }
    shutdown.cancel();
    Ok(())
}

/// Runs `sessions` sessions over the devices with `concurrency` workers; returns ok, failed, latencies (µs).
async fn run_phase(
    cpes: &Arc<Vec<Cpe>>,
    addr: SocketAddr,
    concurrency: usize,
    sessions: usize,
    events: &'static [&'static str],
    tasks: Option<Arc<Acs>>,
) -> (u64, u64, Vec<u64>) {
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    let workers_n = concurrency.min(cpes.len()).max(1);
    for w in 0..workers_n {
        let (cpes, failed, tasks) = (cpes.clone(), failed.clone(), tasks.clone());
        // Worker w owns devices w, w+N, w+2N... (a device never has two sessions at once) and runs its share of
        // the sessions over them in turn: with as many sessions as devices, every device has exactly one.
        let quota = sessions / workers_n + usize::from(w < sessions % workers_n);
        workers.spawn(async move {
            let mut lat = Vec::new();
            let mine: Vec<usize> = (w..cpes.len()).step_by(workers_n).collect();
            for n in 0..quota {
                let cpe = &cpes[mine[n % mine.len()]];
                let t = Instant::now();
                if let Some(acs) = &tasks {
                    let id = cpe.cfg.device_id();
                    let names = (0..32)
                        .map(|p| format!("InternetGatewayDevice.X_SIM.Stat{p}"))
                        .collect();
                    let _ = acs.enqueue(&id, TaskKind::Get { names }).await;
                    let set = TaskKind::Set {
                        values: vec![(
                            "InternetGatewayDevice.X_SIM.Param0".into(),
                            format!("s{n}"),
                            "xsd:string".into(),
                        )],
                    };
                    let _ = acs.enqueue(&id, set).await;
                }
                match cpe.session(addr, events).await {
                    Ok(log) if log.completed => lat.push(t.elapsed().as_micros() as u64),
                    Ok(_) | Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(r) = workers.join_next().await {
        if let Ok(l) = r {
            all.extend(l);
        }
    }
    (all.len() as u64, failed.load(Ordering::Relaxed), all)
}
