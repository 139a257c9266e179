//! The catalogue of commands the control plane can send to an agent ([`crate::Command::name`]).
//!
//! Both sides use it: the control plane to refuse an unknown command or bad arguments at the API (HTTP 422,
//! before anything is queued) and to pick the permission a caller needs; the agent to decode the arguments
//! it runs. Arguments and outputs travel as JSON text (see [`crate::protocol`]), so adding an optional
//! argument needs no protocol version.

use std::fmt;

/// What the control plane and the agent know about one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// Dotted name, such as `ping` or `tr069.reboot`.
    pub name: &'static str,
    /// One line for the API description and the console.
    pub summary: &'static str,
    /// Permission the caller needs to create it.
    pub permission: &'static str,
    /// Never run a second time after an interruption (a reboot, a factory reset, a firmware download):
    /// an agent that finds it started but unfinished after a restart reports it failed instead of rerunning it.
    pub once_only: bool,
    /// It sends [`crate::CommandProgress`] while it runs (MTR cycles, scan progress).
    pub streams_progress: bool,
    /// How long it may run once started, in seconds, unless the arguments say otherwise.
    pub default_timeout_secs: u32,
}

/// Every command, in the order the API documents them.
pub const CATALOGUE: &[CommandSpec] = &[
    spec(
        "ping",
        "ICMP echo to one or more targets",
        "diagnostics:run",
        false,
        true,
        120,
    ),
    spec(
        "mtr",
        "MTR: per-hop loss and latency over several cycles",
        "diagnostics:run",
        false,
        true,
        600,
    ),
    spec(
        "traceroute",
        "Traceroute (ICMP, UDP or TCP probes)",
        "diagnostics:run",
        false,
        true,
        120,
    ),
    spec(
        "sweep",
        "IP scan of CIDRs (ICMP echo, optional TCP probes)",
        "diagnostics:run",
        false,
        true,
        600,
    ),
    spec(
        "portscan",
        "Port scan of one host (TCP connect or SYN, UDP)",
        "diagnostics:run",
        false,
        true,
        600,
    ),
    spec(
        "dns",
        "DNS query to the system resolver or chosen servers",
        "diagnostics:run",
        false,
        false,
        60,
    ),
    spec(
        "http",
        "HTTP(S) check with timings",
        "diagnostics:run",
        false,
        false,
        60,
    ),
    spec(
        "snmp.get",
        "SNMP GET of OIDs on a device",
        "diagnostics:run",
        false,
        false,
        60,
    ),
    spec(
        "snmp.walk",
        "SNMP walk of a subtree on a device",
        "diagnostics:run",
        false,
        true,
        300,
    ),
    spec(
        "snmp.discover",
        "SNMP discovery of CIDRs with vendor fingerprinting",
        "diagnostics:run",
        false,
        true,
        1800,
    ),
    spec(
        "tr069.get_params",
        "Read TR-069 parameters of a CPE",
        "tr069:read",
        false,
        false,
        3600,
    ),
    spec(
        "tr069.set_params",
        "Write TR-069 parameters of a CPE",
        "tr069:write",
        false,
        false,
        3600,
    ),
    spec(
        "tr069.reboot",
        "Reboot a CPE",
        "tr069:reboot",
        true,
        false,
        3600,
    ),
    spec(
        "tr069.factory_reset",
        "Factory reset a CPE",
        "tr069:reboot",
        true,
        false,
        3600,
    ),
    spec(
        "tr069.download",
        "Firmware or configuration download to a CPE",
        "tr069:firmware",
        true,
        false,
        7200,
    ),
    spec(
        "config.update",
        "Apply a new agent configuration (monitors, SNMP, ACS, scan ranges)",
        "agents:write",
        false,
        false,
        60,
    ),
    spec(
        "noop",
        "Does nothing and succeeds; for tests and benchmarks",
        "diagnostics:run",
        false,
        false,
        10,
    ),
];

const fn spec(
    name: &'static str,
    summary: &'static str,
    permission: &'static str,
    once_only: bool,
    streams_progress: bool,
    default_timeout_secs: u32,
) -> CommandSpec {
    CommandSpec {
        name,
        summary,
        permission,
        once_only,
        streams_progress,
        default_timeout_secs,
    }
}

/// The spec of a command, if it exists.
pub fn spec_of(name: &str) -> Option<&'static CommandSpec> {
    CATALOGUE.iter().find(|s| s.name == name)
}

/// Why a command was refused before it was queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// No command has this name.
    Unknown(String),
    /// The arguments are not valid for this command; the message names the field.
    BadArgs(String),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown(n) => write!(f, "unknown command {n:?}"),
            CommandError::BadArgs(m) => write!(f, "invalid arguments: {m}"),
        }
    }
}

impl std::error::Error for CommandError {}

/// Checks a command name and its JSON arguments.
pub fn validate(name: &str, args_json: &str) -> Result<&'static CommandSpec, CommandError> {
    let spec = spec_of(name).ok_or_else(|| CommandError::Unknown(name.to_owned()))?;
    let value: serde_json::Value =
        serde_json::from_str(args_json).map_err(|e| CommandError::BadArgs(e.to_string()))?;
    if !value.is_object() {
        return Err(CommandError::BadArgs(
            "arguments must be a JSON object".into(),
        ));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_known() {
        for (i, s) in CATALOGUE.iter().enumerate() {
            assert!(
                CATALOGUE[i + 1..].iter().all(|o| o.name != s.name),
                "{} twice",
                s.name
            );
        }
        assert!(validate("ping", "{}").is_ok());
        assert_eq!(
            validate("reboot-everything", "{}"),
            Err(CommandError::Unknown("reboot-everything".into()))
        );
        assert!(matches!(
            validate("ping", "[1]"),
            Err(CommandError::BadArgs(_))
        ));
        assert!(matches!(
            validate("ping", "{"),
            Err(CommandError::BadArgs(_))
        ));
    }
}
