//! `octoisp-agent`: the POP daemon (`run`) and the technician's command line.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use octoisp_agent::config::Config;
use octoisp_agent::{daemon, enroll, telemetry};
use tokio_util::sync::CancellationToken;

/// Exit code for a bad configuration or command line (EX_USAGE).
const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "octoisp-agent",
    version,
    about = "OctoISP agent: POP daemon and diagnostics toolbox"
)]
struct Cli {
    /// Configuration file (TOML). Environment variables OCTOISP_AGENT__SECTION__KEY override it.
    #[arg(long, short, global = true, env = "OCTOISP_AGENT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: monitors, outbox, uplink, and the ACS when configured.
    Run {
        /// CWMP listen address of the ACS, such as 0.0.0.0:7547 (overrides acs.listen).
        #[arg(long)]
        acs_listen: Option<std::net::SocketAddr>,
    },
    /// Enroll with a control plane using a one-time token.
    Enroll {
        /// Control plane QUIC address, HOST:PORT.
        #[arg(long)]
        server: String,
        /// Token printed by `octoisp-controlplane pop enroll-token`.
        #[arg(long)]
        token: String,
        /// Replace an existing identity.
        #[arg(long)]
        force: bool,
    },
    /// Check the configuration and print it.
    CheckConfig,
    /// Show the outbox: what waits to be uploaded, what was dropped.
    Status,
    /// Ping a host (one-shot).
    Ping {
        /// Target address.
        target: IpAddr,
        /// Number of probes.
        #[arg(short = 'c', long, default_value_t = 4)]
        count: u16,
        /// Milliseconds between probes.
        #[arg(short = 'i', long, default_value_t = 1000)]
        interval_ms: u64,
        /// Milliseconds to wait for each reply.
        #[arg(short = 'W', long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// The local TR-069 ACS: devices, parameters, tasks.
    #[command(subcommand)]
    Acs(octoisp_agent::acs::cli::AcsCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(cfg) => cfg,
        Err(err) => {
            eprintln!("octoisp-agent: bad configuration: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    telemetry::init_logs(&cfg.log);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("octoisp-agent: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command, cfg)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("octoisp-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, mut cfg: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { acs_listen } => {
            if acs_listen.is_some() {
                cfg.acs.listen = acs_listen;
            }
            let shutdown = CancellationToken::new();
            daemon::cancel_on_signals(shutdown.clone());
            daemon::run(cfg, shutdown).await?;
        }
        Command::Enroll {
            server,
            token,
            force,
        } => {
            let hostname = hostname();
            let id = enroll::enroll(&server, &token, &cfg.identity_dir(), &hostname, force).await?;
            println!(
                "Enrolled as agent {} (provider {}, POP {}).",
                id.agent_id, id.provider_id, id.pop_id
            );
            println!(
                "Identity stored in {}. Start the daemon: octoisp-agent run",
                cfg.identity_dir().display()
            );
        }
        Command::CheckConfig => {
            println!("configuration OK: {cfg:#?}");
        }
        Command::Status => {
            let running = cfg.metrics.listen.and_then(telemetry::fetch_status);
            let (s, source) = match running {
                Some(s) => (s, "running daemon"),
                None => {
                    let outbox = daemon::open_outbox(&cfg)?;
                    (
                        tokio::task::spawn_blocking(move || outbox.stats()).await??,
                        "outbox file (daemon not running)",
                    )
                }
            };
            println!("source: {source}");
            println!(
                "outbox: {} chunks, {} samples, {} records, {} bytes waiting",
                s.chunks, s.samples, s.records, s.bytes
            );
            println!(
                "batches in flight or waiting for an ack: {}",
                s.batches_pending
            );
            println!(
                "oldest waiting: {}",
                s.oldest_ms
                    .map_or("-".into(), |t| format!("{t} ms since epoch"))
            );
            println!(
                "dropped samples (disk cap): {}, refused records: {}",
                s.samples_dropped_total, s.records_refused_total
            );
            println!("dead letters: {}", s.dead_letters);
        }
        Command::Ping {
            target,
            count,
            interval_ms,
            timeout_ms,
        } => {
            return ping(target, count, interval_ms, timeout_ms).await;
        }
        Command::Acs(cmd) => octoisp_agent::acs::cli::run(cmd, &cfg).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn ping(
    target: IpAddr,
    count: u16,
    interval_ms: u64,
    timeout_ms: u64,
) -> anyhow::Result<ExitCode> {
    use octoisp_agent::monitors::ping::{Pinger, RoundStats};
    if count == 0 {
        eprintln!("octoisp-agent: --count must be at least 1");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let pinger = Pinger::new().map_err(|e| {
        anyhow::anyhow!("cannot open an ICMP socket (needs root or CAP_NET_RAW): {e}")
    })?;
    let ident: u16 = rand::random();
    let payload = [0u8; 56];
    let mut rtts = Vec::new();
    for seq in 0..count {
        if seq > 0 {
            tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        }
        let rtt = pinger
            .probe(
                target,
                ident,
                seq,
                &payload,
                Duration::from_millis(timeout_ms),
            )
            .await;
        match rtt {
            Some(d) => println!(
                "reply from {target}: seq={seq} time={:.3} ms",
                d.as_secs_f64() * 1e3
            ),
            None => println!("no reply from {target}: seq={seq} (timeout)"),
        }
        rtts.push(rtt);
    }
    let s = RoundStats::from_rtts(&rtts);
    println!(
        "--- {target}: {} sent, {} received, {:.1}% loss; rtt min/avg/max = {:.3}/{:.3}/{:.3} ms",
        s.sent,
        s.received,
        s.loss() * 100.0,
        s.min_ms,
        s.avg_ms,
        s.max_ms
    );
    Ok(if s.received > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
