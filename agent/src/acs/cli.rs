//! `octoisp-agent acs ...`: the field technician's view of the POP's CPEs, over the ACS database
//! (`<state_dir>/acs.db`), usable while the daemon runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

use super::normalize::Rules;
use super::store::AcsStore;
use super::tasks::TaskKind;
use super::{connreq, now_ms};
use crate::config::Config;

/// The ACS database under a state directory.
pub fn store_path(state_dir: &Path) -> PathBuf {
    state_dir.join("acs.db")
}

/// `octoisp-agent acs` subcommands.
#[derive(Debug, Subcommand)]
pub enum AcsCommand {
    /// List the CPEs: serial, OUI, product class, IP, last inform.
    Devices {
        /// JSON, one array.
        #[arg(long)]
        json: bool,
    },
    /// Show a device's stored parameters (all, or those under PATH).
    Params {
        /// Device id (`OUI-ProductClass-Serial`, as `acs devices` shows it).
        device: String,
        /// Path prefix, such as `InternetGatewayDevice.WANDevice.`.
        path: Option<String>,
    },
    /// Show a device's normalized view (WAN IP, Wi-Fi, firmware, optical power in dBm).
    View {
        /// Device id.
        device: String,
    },
    /// Queue a task for a device; it runs in the device's next session (at once with `--now`).
    Task {
        /// Device id.
        device: String,
        /// Send a Connection Request so that the CPE opens a session now.
        #[arg(long)]
        now: bool,
        #[command(subcommand)]
        action: TaskAction,
    },
    /// List a device's tasks and their state.
    Tasks {
        /// Device id (all devices when omitted).
        device: Option<String>,
    },
}

/// What `acs task` does.
#[derive(Debug, Subcommand)]
pub enum TaskAction {
    /// Reboot the CPE.
    Reboot,
    /// Factory-reset the CPE.
    FactoryReset,
    /// Re-read a subtree, such as `Device.WiFi.`.
    Refresh {
        /// Path.
        path: String,
    },
    /// Read parameters.
    Get {
        /// Names or partial paths.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Set parameters: `PATH=VALUE` (string) or `PATH=VALUE:xsd:TYPE`.
    Set {
        /// Assignments.
        #[arg(required = true)]
        assignments: Vec<String>,
    },
}

fn parse_assignment(a: &str) -> anyhow::Result<(String, String, String)> {
    let (name, rest) = a
        .split_once('=')
        .with_context(|| format!("{a:?} is not PATH=VALUE"))?;
    let (value, ty) = match rest.rsplit_once(":xsd:") {
        Some((v, t)) => (v, format!("xsd:{t}")),
        None => (rest, "xsd:string".to_owned()),
    };
    Ok((name.to_owned(), value.to_owned(), ty))
}

fn fmt_ms(ms: i64) -> String {
    let secs = (now_ms() - ms) / 1000;
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

/// Runs an `acs` subcommand.
pub async fn run(cmd: AcsCommand, cfg: &Config) -> anyhow::Result<()> {
    let path = store_path(&cfg.state_dir);
    if !path.exists() {
        anyhow::bail!(
            "no ACS database at {} (the ACS has not run on this agent)",
            path.display()
        );
    }
    let store = AcsStore::open(&path)?;
    match cmd {
        AcsCommand::Devices { json } => {
            let devices = store.devices()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
                return Ok(());
            }
            println!(
                "{:<40} {:<18} {:<7} {:<16} {:<16} LAST INFORM",
                "DEVICE", "SERIAL", "OUI", "PRODUCT CLASS", "IP"
            );
            for d in devices {
                println!(
                    "{:<40} {:<18} {:<7} {:<16} {:<16} {}",
                    d.id,
                    d.serial,
                    d.oui,
                    d.product_class,
                    d.ip,
                    fmt_ms(d.last_inform_ms)
                );
            }
        }
        AcsCommand::Params { device, path } => {
            if store.device(&device)?.is_none() {
                anyhow::bail!("no device {device:?} (see `octoisp-agent acs devices`)");
            }
            for p in store.params(&device, path.as_deref().unwrap_or(""))? {
                println!("{} = {} ({})", p.name, p.value, p.xsd_type);
            }
        }
        AcsCommand::View { device } => {
            if store.device(&device)?.is_none() {
                anyhow::bail!("no device {device:?} (see `octoisp-agent acs devices`)");
            }
            let rules = match &cfg.acs.normalize_file {
                Some(p) => Rules::parse(&p.display().to_string(), &std::fs::read_to_string(p)?)?,
                None => Rules::builtin(),
            };
            let view = rules.view(&store.params(&device, "")?);
            println!("{}", serde_json::to_string_pretty(&view)?);
        }
        AcsCommand::Task {
            device,
            now,
            action,
        } => {
            let Some(row) = store.device(&device)? else {
                anyhow::bail!("no device {device:?} (see `octoisp-agent acs devices`)");
            };
            let kind = match action {
                TaskAction::Reboot => TaskKind::Reboot,
                TaskAction::FactoryReset => TaskKind::FactoryReset,
                TaskAction::Refresh { path } => TaskKind::Refresh { path },
                TaskAction::Get { names } => TaskKind::Get { names },
                TaskAction::Set { assignments } => TaskKind::Set {
                    values: assignments
                        .iter()
                        .map(|a| parse_assignment(a))
                        .collect::<anyhow::Result<_>>()?,
                },
            };
            let id = store.enqueue(&device, &kind, now_ms())?;
            println!("Queued task {id} ({}) for {device}.", kind.name());
            if now {
                let udp = super::session::udp_address(&store.lock(), &device)?;
                if row.conn_req_url.is_empty() && udp.is_empty() {
                    anyhow::bail!(
                        "{device} reported no ConnectionRequestURL; the task runs at its next Inform"
                    );
                }
                let creds = store.conn_req_credentials(&device)?.or_else(|| {
                    cfg.acs
                        .connection_request_username
                        .clone()
                        .zip(cfg.acs.connection_request_password.clone())
                });
                let status = connreq::request(
                    &row.conn_req_url,
                    &row.ip,
                    &udp,
                    creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
                    Duration::from_secs(10),
                )
                .await
                .with_context(|| "Connection Request failed; the task runs at the next Inform")?;
                let to = if row.conn_req_url.is_empty() {
                    &udp
                } else {
                    &row.conn_req_url
                };
                println!("Connection Request to {to}: {status}.");
            }
        }
        AcsCommand::Tasks { device } => {
            for t in store.tasks(device.as_deref())? {
                println!(
                    "{} {:<40} {:<13} {:<8} attempts={} {}",
                    t.id,
                    t.device,
                    t.kind.name(),
                    t.state.as_str(),
                    t.attempts,
                    t.last_error.unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_with_and_without_types() {
        assert_eq!(
            parse_assignment("Device.WiFi.SSID.1.SSID=home:net").unwrap(),
            (
                "Device.WiFi.SSID.1.SSID".into(),
                "home:net".into(),
                "xsd:string".into()
            )
        );
        assert_eq!(
            parse_assignment("A.B=30:xsd:unsignedInt").unwrap().2,
            "xsd:unsignedInt"
        );
        assert!(parse_assignment("A.B").is_err());
    }
}
