//! `octoisp-fleetsim`: writes the configuration of a simulated fleet's agents (`config`) and runs the fleet
//! (`run`), printing and exporting its counters. See docs/SCALING.md.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use octoisp_fleetsim::{Fleet, Plan, agents, raise_nofile};

#[derive(Debug, Parser)]
#[command(
    name = "octoisp-fleetsim",
    about = "OctoISP fleet simulator (CPEs over CWMP, SNMP devices) on loopback"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes OUT/agent-K/agent.toml for every agent of the fleet (ACS listen address, SNMP devices).
    Config {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        plan: Plan,
    },
    /// Runs the fleet until SIGINT/SIGTERM or `--duration-secs`; counters go to `--stats-file` every few seconds.
    Run {
        /// Stop after this many seconds (default: until a signal).
        #[arg(long)]
        duration_secs: Option<u64>,
        /// JSON file rewritten every `--stats-every-secs` with the counters (and at exit).
        #[arg(long)]
        stats_file: Option<PathBuf>,
        /// Seconds between stats files and printed lines.
        #[arg(long, default_value_t = 5)]
        stats_every_secs: u64,
        /// At the end, polls in progress get this many seconds to finish before the devices go (new polls are
        /// no longer answered), so that every poll counted as answered is a complete one.
        #[arg(long, default_value_t = 10)]
        drain_secs: u64,
        #[command(flatten)]
        plan: Plan,
    },
}

fn write_stats(path: &Path, fleet: &Fleet, started: Instant, done: bool) -> anyhow::Result<()> {
    let snap = fleet.counters.snapshot();
    let registered = fleet.cpes.iter().filter(|c| c.registered()).count();
    let body = serde_json::json!({
        "elapsed_secs": started.elapsed().as_secs_f64(),
        "finished": done,
        "cpes": fleet.cpes.len(),
        "cpes_registered": registered,
        "snmp_devices": fleet.snmp.addrs.len(),
        "counters": snap,
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&body)?)?;
    std::fs::rename(&tmp, path)?;
    // The same counters in Prometheus text format, beside the JSON.
    std::fs::write(path.with_extension("prom"), snap.prometheus())?;
    Ok(())
}

fn print_line(fleet: &Fleet, started: Instant) {
    let s = fleet.counters.snapshot();
    println!(
        "t={:.0}s informs sent={} ok={} failed={} (registrations={} periodic={} reboots={} conn_req={}) rpcs={} snmp requests={} responses={} ignored={} polls_answered={} flaps={}",
        started.elapsed().as_secs_f64(),
        s.informs_sent,
        s.informs_ok,
        s.informs_failed,
        s.registrations_ok,
        s.periodic_ok,
        s.reboots_ok,
        s.connection_request_informs_ok,
        s.rpcs,
        s.snmp_requests,
        s.snmp_responses,
        s.snmp_ignored,
        s.snmp_polls_answered,
        s.snmp_flaps,
    );
}

async fn run(
    plan: Plan,
    duration: Option<u64>,
    stats_file: Option<PathBuf>,
    every: u64,
    drain: u64,
) -> anyhow::Result<()> {
    let nofile = raise_nofile()?;
    let needed = plan.snmp.div_ceil(plan.shards.max(1)) as u64 + plan.max_sessions as u64 * 2 + 256;
    anyhow::ensure!(
        nofile >= needed,
        "open-file limit {nofile} is below the ~{needed} sockets this fleet needs: raise `ulimit -Hn` or split the \
         fleet over more processes (--shards)"
    );
    let started = Instant::now();
    let fleet = Fleet::start(&plan).await?;
    println!(
        "fleetsim: {} CPEs over {} agents (ACS 127.0.0.1:{}..), {} SNMP devices on {}..:{}, connection requests on {}",
        fleet.cpes.len(),
        plan.agents,
        plan.acs_port_base,
        fleet.snmp.addrs.len(),
        agents::snmp_ip(0),
        plan.snmp_port,
        fleet.cr_addr
    );
    let deadline = duration.map(|d| tokio::time::Instant::now() + Duration::from_secs(d));
    let mut tick = tokio::time::interval(Duration::from_secs(every.max(1)));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let until = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {
                print_line(&fleet, started);
                if let Some(p) = &stats_file {
                    write_stats(p, &fleet, started, false)?;
                }
            }
            _ = until => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    println!("fleetsim: stopping: CPE sessions in flight finish, polls in progress get {drain} s");
    fleet.pause_polls();
    let mut fleet = fleet;
    fleet.stop_cpes().await;
    tokio::time::sleep(Duration::from_secs(drain)).await;
    let counters = fleet.counters.clone();
    let cpes = fleet.cpes.clone();
    let n_snmp = fleet.snmp.addrs.len();
    let cr_addr = fleet.cr_addr;
    fleet.shutdown().await;
    let finished = FinishedFleet {
        counters,
        cpes,
        n_snmp,
        cr_addr,
    };
    finished.report(started, stats_file.as_deref())
}

struct FinishedFleet {
    counters: std::sync::Arc<octoisp_fleetsim::counters::Counters>,
    cpes: std::sync::Arc<Vec<std::sync::Arc<octoisp_fleetsim::cpes::SimCpe>>>,
    n_snmp: usize,
    cr_addr: std::net::SocketAddr,
}

impl FinishedFleet {
    fn report(&self, started: Instant, stats_file: Option<&Path>) -> anyhow::Result<()> {
        let snap = self.counters.snapshot();
        let registered = self.cpes.iter().filter(|c| c.registered()).count();
        println!(
            "fleetsim: final after {:.0}s: {}",
            started.elapsed().as_secs_f64(),
            serde_json::to_string(&snap)?
        );
        if let Some(path) = stats_file {
            let body = serde_json::json!({
                "elapsed_secs": started.elapsed().as_secs_f64(),
                "finished": true,
                "cpes": self.cpes.len(),
                "cpes_registered": registered,
                "snmp_devices": self.n_snmp,
                "connection_request_listener": self.cr_addr.to_string(),
                "counters": snap,
            });
            std::fs::write(path, serde_json::to_vec_pretty(&body)?)?;
            std::fs::write(path.with_extension("prom"), snap.prometheus())?;
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config { out, plan } => plan.validate().and_then(|()| {
            for p in agents::write_all(&plan, &out)? {
                println!("{}", p.display());
            }
            Ok(())
        }),
        Command::Run {
            duration_secs,
            stats_file,
            stats_every_secs,
            drain_secs,
            plan,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(run(
                    plan,
                    duration_secs,
                    stats_file,
                    stats_every_secs,
                    drain_secs,
                ))
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("octoisp-fleetsim: {e:#}");
            ExitCode::FAILURE
        }
    }
}
