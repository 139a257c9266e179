//! Agent configuration files for a simulated fleet: one `agent.toml` per agent, with its ACS listen address and
//! the SNMP devices it polls.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::Plan;

/// The loopback address of SNMP device `j`: 127.20.0.1 upwards (127.20.0.1 ... 127.20.78.32 for 20,000).
pub fn snmp_ip(j: usize) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(127, 20, 0, 1));
    Ipv4Addr::from(base.wrapping_add(j as u32))
}

/// The ACS address of agent `k`.
pub fn acs_addr(plan: &Plan, k: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], plan.acs_port_base + k as u16))
}

/// Directory of agent `k` under the output directory.
pub fn agent_dir(out: &Path, k: usize) -> PathBuf {
    out.join(format!("agent-{k}"))
}

/// The `agent.toml` of agent `k`.
pub fn agent_toml(plan: &Plan, out: &Path, k: usize) -> String {
    let dir = agent_dir(out, k);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Written by octoisp-fleetsim: agent {k} of {}.",
        plan.agents
    );
    let _ = writeln!(
        s,
        "state_dir = {:?}\n",
        dir.join("state").display().to_string()
    );
    if let Some(server) = &plan.server {
        let _ = writeln!(s, "[uplink]\nserver = {server:?}\n");
    }
    if let Some(base) = plan.metrics_port_base {
        let _ = writeln!(s, "[metrics]\nlisten = \"127.0.0.1:{}\"\n", base + k as u16);
    }
    let _ = writeln!(s, "[log]\nlevel = \"warn\"\n");
    let _ = writeln!(s, "[acs]\nlisten = \"{}\"\n", acs_addr(plan, k));
    let _ = writeln!(
        s,
        "[snmp]\ninterval_secs = {}\nmax_concurrent = {}\n",
        plan.snmp_interval_secs, plan.snmp_max_concurrent
    );
    let _ = writeln!(
        s,
        "[[snmp.credentials]]\nname = \"sim\"\nversion = \"2c\"\ncommunity = \"public\"\n"
    );
    for j in (k..plan.snmp).step_by(plan.agents.max(1)) {
        let _ = writeln!(
            s,
            "[[snmp.devices]]\naddress = \"{}:{}\"\ncredentials = \"sim\"\n",
            snmp_ip(j),
            plan.snmp_port
        );
    }
    s
}

/// Writes every agent's configuration under `out`; returns the paths.
pub fn write_all(plan: &Plan, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for k in 0..plan.agents {
        let dir = agent_dir(out, k);
        std::fs::create_dir_all(dir.join("state"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("agent.toml");
        std::fs::write(&path, agent_toml(plan, out, k))
            .with_context(|| format!("cannot write {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}
