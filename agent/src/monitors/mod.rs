//! Continuous monitors: tasks that measure on a schedule and commit what they measure to the outbox.
//!
//! Each monitor runs until the shutdown token is cancelled; a failure to write to the outbox is logged
//! and retried at the next round, never lost silently.

pub mod generator;
pub mod mtr;
pub mod ping;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::MonitorsSection;
use crate::diag::ping::{IcmpEngine, SocketOptions};
use crate::outbox::Outbox;

/// Starts every configured monitor on `tracker`.
pub fn spawn_all(
    cfg: &MonitorsSection,
    outbox: &Outbox,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    // One shared engine (socket pair) per distinct TTL and DSCP, not one per monitor or target.
    let mut engines = std::collections::HashMap::new();
    for m in &cfg.ping {
        let sock = SocketOptions {
            ttl: m.ttl,
            tos: m.dscp.map(|d| d << 2),
        };
        let engine = match engines.get(&sock) {
            Some(e) => Some(Clone::clone(e)),
            None => match IcmpEngine::open_with(&[], sock) {
                Ok(e) => {
                    engines.insert(sock, e.clone());
                    Some(e)
                }
                Err(err) => {
                    tracing::error!(monitor = %m.name, error = %err, "Ping monitor disabled: cannot open ICMP sockets (needs CAP_NET_RAW).");
                    None
                }
            },
        };
        let Some(engine) = engine else { continue };
        for target in &m.targets {
            let task = ping::PingTask::new(m, *target, engine.clone(), outbox.clone());
            tracker.spawn(task.run(shutdown.clone()));
        }
    }
    for m in &cfg.mtr {
        for target in &m.targets {
            match mtr::MtrTask::new(m, *target, outbox.clone()) {
                Ok(task) => {
                    tracker.spawn(task.run(shutdown.clone()));
                }
                Err(err) => {
                    tracing::error!(monitor = %m.name, error = %err, "MTR monitor not started.")
                }
            }
        }
    }
    for g in &cfg.generator {
        tracker.spawn(generator::run(g.clone(), outbox.clone(), shutdown.clone()));
    }
}
