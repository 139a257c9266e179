//! The local TR-069 ACS of the POP: the CPEs and ONTs of the POP's customers talk CWMP to their agent.
//!
//! ```text
//! CPE --HTTP POST (Inform, responses)--> server ──▶ session (one per device at a time) ──▶ store (acs.db)
//!     <-- InformResponse, RPCs, 204 ----        │        ▲ tasks, templates                 │
//!                                               │        │                                  ▼
//! agent --HTTP GET + Digest--> CPE's ConnectionRequestURL (connreq)            outbox ──▶ control plane
//! ```
//!
//! - [`cwmp`]: the codec, pure: bytes in, values out and back.
//! - [`auth`]: Digest (and Basic over TLS) for CPEs; Digest client for Connection Requests.
//! - [`store`]: devices, parameter trees, tasks in SQLite; [`writer`]: the thread that runs the sessions' store
//!   work, one transaction per group. [`tasks`]: task kinds, retries.
//! - [`normalize`]: the normalized view from `agent/acs/normalize.toml`.
//! - [`session`]: the session state machine and the shared ACS state. [`server`]: the HTTP endpoint.
//! - [`connreq`]: Connection Requests. [`templates`]: provisioning templates. [`cli`]: `octoisp-agent acs ...`.
//! - [`firmware`]: images served with Range, staged rollouts with a stop rule; [`fetch`]: images fetched from the
//!   control plane over the uplink.

pub mod auth;
pub mod cli;
pub mod config;
pub mod connreq;
pub mod cwmp;
pub mod fetch;
pub mod firmware;
pub mod normalize;
pub mod server;
pub mod session;
pub mod store;
pub mod tasks;
pub mod templates;
pub mod upstream;
pub mod writer;

pub use config::AcsSection;
pub use server::{bind, serve};
pub use session::{Acs, AcsOptions};

/// Starts the ACS inside the daemon when `acs.listen` is set: opens `<state_dir>/acs.db`, binds the listener
/// (an error names the address) and serves until `shutdown`. Returns the running ACS (for the `tr069.*`
/// commands), or `None` when `acs.listen` is unset.
pub async fn start_in_daemon(
    cfg: &crate::config::Config,
    outbox: &crate::outbox::Outbox,
    tracker: &tokio_util::task::TaskTracker,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<std::sync::Arc<Acs>>> {
    use anyhow::Context;
    let Some(listen) = cfg.acs.listen else {
        return Ok(None);
    };
    let opts = AcsOptions::from_section(&cfg.acs).map_err(anyhow::Error::msg)?;
    let path = cli::store_path(&cfg.state_dir);
    let store = store::AcsStore::open(&path)?;
    let acs = std::sync::Arc::new(Acs::new(opts, store, Some(outbox.clone())));
    let listener =
        bind(listen).with_context(|| format!("cannot listen for CWMP on {listen} (acs.listen)"))?;
    let (max, sd, running) = (cfg.acs.max_connections, shutdown.clone(), acs.clone());
    tracker.spawn(async move {
        if let Err(err) = serve(listener, running, max, sd).await {
            tracing::error!(error = %err, "ACS stopped.");
        }
    });
    let (sd, exported) = (shutdown.clone(), acs.clone());
    tracker.spawn(async move { export_metrics(exported, sd).await });
    Ok(Some(acs))
}

/// Copies the ACS counters to the Prometheus recorder every few seconds (`octoisp_agent_acs_*`,
/// docs/OPERATIONS.md, "Prometheus metrics").
async fn export_metrics(acs: std::sync::Arc<Acs>, shutdown: tokio_util::sync::CancellationToken) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = &acs.stats;
        metrics::counter!("octoisp_agent_acs_sessions_started_total")
            .absolute(s.sessions_started.load(Relaxed));
        metrics::counter!("octoisp_agent_acs_sessions_completed_total")
            .absolute(s.sessions_completed.load(Relaxed));
        for (reason, v) in [
            ("duplicate", &s.duplicate_refused),
            ("overload", &s.overload_refused),
            ("malformed", &s.malformed),
            ("auth", &s.auth_failed),
        ] {
            metrics::counter!("octoisp_agent_acs_rejected_total", "reason" => reason)
                .absolute(v.load(Relaxed));
        }
        metrics::gauge!("octoisp_agent_acs_sessions_active").set(acs.sessions_active() as f64);
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The device id of an Inform: `OUI-ProductClass-SerialNumber`, each part percent-encoded so that spaces,
/// dashes and slashes cannot make two devices share an id or break a URL (`ZXHN H199A` becomes `ZXHN%20H199A`).
pub fn device_id(oui: &str, product_class: &str, serial: &str) -> String {
    fn enc(s: &str, out: &mut String) {
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'~') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    let mut id = String::with_capacity(oui.len() + product_class.len() + serial.len() + 2);
    enc(oui, &mut id);
    id.push('-');
    enc(product_class, &mut id);
    id.push('-');
    enc(serial, &mut id);
    id
}

#[cfg(test)]
mod tests {
    #[test]
    fn device_ids_are_url_safe_and_unambiguous() {
        assert_eq!(
            super::device_id("C0B101", "ZXHN H199A", "ZTEYH86LCN10105"),
            "C0B101-ZXHN%20H199A-ZTEYH86LCN10105"
        );
        assert_eq!(super::device_id("00259E", "", "X1"), "00259E--X1");
        assert_ne!(
            super::device_id("A", "B-C", "D"),
            super::device_id("A", "B", "C-D")
        );
    }
}
