//! `octoisp-agent`: the POP daemon (`run`) and the technician's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use octoisp_agent::config::Config;
use octoisp_agent::{daemon, diag, enroll, telemetry};
use tokio_util::sync::CancellationToken;

/// mimalloc rather than glibc's malloc: the ACS's sessions make many small, short-lived allocations (parsed
/// envelopes, records), and glibc's malloc/free took about a quarter of a session's CPU (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// (No short form: `-c` is the count of `ping`, `sweep` and `mtr`, as in ping and mtr.)
    #[arg(long, global = true, env = "OCTOISP_AGENT_CONFIG")]
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
    /// SNMP tools: get, walk, fingerprint, poll, discover, traps (net-snmp flags; `snmp help`).
    Snmp(octoisp_agent::snmp::cli::SnmpArgs),
    // Diagnostics (ping, sweep, scan, trace, mtr, dns, http): see octoisp_agent::diag::cli.
    #[command(flatten)]
    Diag(diag::cli::DiagCommand),
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
            match octoisp_agent::central::applied_version(&cfg.state_dir) {
                Some(v) => println!("central configuration: version {v} applied"),
                None => println!("central configuration: none received (local file only)"),
            }
        }
        Command::Snmp(args) => return octoisp_agent::snmp::cli::run(args, &cfg).await,
        Command::Diag(cmd) => return diag::cli::run(cmd).await,
        Command::Acs(cmd) => octoisp_agent::acs::cli::run(cmd, &cfg).await?,
    }
    Ok(ExitCode::SUCCESS)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        // Catches clashing flags (a subcommand's `-c` against a global one) before a user does.
        super::Cli::command().debug_assert();
    }
}
