//! The `tr069.*` commands: each queues one task of the agent's ACS for its CPE, sends the CPE a Connection
//! Request (HTTP, or UDP per TR-111 behind NAT) so that it opens a session now, and waits for the task to end.
//!
//! ```text
//! queued ── Connection Request ── session ── task done ──▶ Succeeded (values / outcome)
//!                                         └─ faulted for good ──▶ Failed "CWMP fault CODE: STRING"
//! timeout (or shutdown) with the task still queued ──▶ the task is removed (it never runs later), Failed
//! tr069.withdraw with the task still queued ──▶ the task is removed, Cancelled
//! tr069.withdraw once the task was sent to the CPE ──▶ nothing changes: it reports how it ends
//! ```
//!
//! A retried fault (the ACS's retry policy) is reported as a progress frame, and a new Connection Request goes
//! out when the retry is due.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::run::Ctx;
use crate::acs::connreq::Delivered;
use crate::acs::tasks::{TaskKind, TaskState};
use crate::acs::{Acs, now_ms};

/// How often the task's state is read while waiting.
const POLL: Duration = Duration::from_millis(200);
/// Kept from the command's timeout to report and clean up before the executor's own timeout fires.
const MARGIN: Duration = Duration::from_secs(1);

/// Removes the task when the command ends without it having been sent (timeout, shutdown, cancelled future).
struct QueuedTask {
    acs: Arc<Acs>,
    id: String,
    armed: bool,
}

impl QueuedTask {
    async fn cancel(&mut self) -> bool {
        self.armed = false;
        let (acs, id) = (self.acs.clone(), self.id.clone());
        matches!(
            tokio::task::spawn_blocking(move || acs.cancel_queued_task(&id)).await,
            Ok(Ok(true))
        )
    }
}

impl Drop for QueuedTask {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (acs, id) = (self.acs.clone(), self.id.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn_blocking(move || {
                if let Err(err) = acs.cancel_queued_task(&id) {
                    tracing::warn!(task = %id, error = %err, "Cannot remove the task of an ended command.");
                }
            });
        }
    }
}

/// The ACS device id of a command's `device_key` (`cwmp:OUI-CLASS-SERIAL`, or the id alone).
pub(super) fn device_id(device_key: &str) -> &str {
    device_key.strip_prefix("cwmp:").unwrap_or(device_key)
}

/// For a `tr069.download` of a control plane image: makes sure the image is in `acs.firmware_dir` (fetched over
/// the uplink when it is not, resumed when a part is there, SHA-256 checked) and returns the URL the CPE
/// downloads it from on this agent's firmware server.
pub(super) async fn firmware_url(
    ctx: &Ctx,
    device_key: &str,
    sha256: &str,
) -> Result<String, String> {
    let acs: Arc<Acs> = ctx
        .runtime
        .as_ref()
        .and_then(|r| r.acs())
        .ok_or("the ACS is not enabled on this agent (acs.listen is unset)")?;
    let dir = acs
        .opts
        .firmware
        .as_ref()
        .ok_or("acs.firmware_dir is unset: this agent has nowhere to keep firmware images for its CPEs")?
        .dir()
        .to_path_buf();
    let cached = crate::acs::fetch::is_cached(&dir, sha256);
    ctx.progress.send(
        json!({"step": if cached { "image_cached" } else { "fetching_image" }, "sha256": sha256}),
    );
    let fetched = tokio::select! {
        _ = ctx.cancel.cancelled() => return Err("cancelled".into()),
        r = acs.firmware_cache.ensure(&dir, sha256, ctx.uplink.current()) => r,
    };
    let path = fetched.map_err(|e| e.to_string())?;
    let size = tokio::fs::metadata(&path)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    ctx.progress
        .send(json!({"step": "image_ready", "sha256": sha256, "size": size}));
    let base = match &acs.opts.firmware_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let listen = acs.opts.listen.ok_or("acs.listen is unset")?;
            let scheme = if acs.opts.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let ip = if listen.ip().is_unspecified() {
                let device = device_id(device_key).to_owned();
                let store = acs.store.clone();
                let row = tokio::task::spawn_blocking(move || store.device(&device))
                    .await
                    .map_err(|e| format!("ACS store task failed: {e}"))?
                    .map_err(|e| format!("ACS store: {e}"))?;
                let cpe: std::net::IpAddr = row
                    .and_then(|r| r.ip.parse().ok())
                    .ok_or("the CPE's address is unknown: set acs.firmware_url")?;
                local_address_towards(cpe)
                    .map_err(|e| format!("no route to the CPE {cpe} ({e}): set acs.firmware_url"))?
            } else {
                listen.ip()
            };
            format!(
                "{scheme}://{}",
                std::net::SocketAddr::new(ip, listen.port())
            )
        }
    };
    Ok(format!("{base}/firmware/{sha256}"))
}

/// The agent's own address on the route to `peer` (a connected UDP socket: nothing is sent).
fn local_address_towards(peer: std::net::IpAddr) -> std::io::Result<std::net::IpAddr> {
    let bind: std::net::SocketAddr = if peer.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = std::net::UdpSocket::bind(bind)?;
    sock.connect((peer, 7547))?;
    Ok(sock.local_addr()?.ip())
}

/// Runs one TR-069 command: `kind` for the CPE `device_key`.
pub(super) async fn run(ctx: &Ctx, device_key: &str, kind: TaskKind) -> Result<Value, String> {
    let acs: Arc<Acs> = ctx
        .runtime
        .as_ref()
        .and_then(|r| r.acs())
        .ok_or("the ACS is not enabled on this agent (acs.listen is unset)")?;
    let device = device_id(device_key).to_owned();
    let store = acs.store.clone();
    let d = device.clone();
    let known = tokio::task::spawn_blocking(move || store.device(&d))
        .await
        .map_err(|e| format!("ACS store task failed: {e}"))?
        .map_err(|e| format!("ACS store: {e}"))?;
    if known.is_none() {
        return Err(format!(
            "no CPE {device:?} is known to this agent's ACS (it has never sent an Inform here)"
        ));
    }
    if ctx.withdrawals.is_withdrawn(ctx.command) {
        return Err(withdrawn(ctx));
    }
    let id = acs.enqueue(&device, kind.clone()).await?;
    let mut task = QueuedTask {
        acs: acs.clone(),
        id: id.clone(),
        armed: true,
    };
    ctx.withdrawals.running(ctx.command, &id);
    ctx.progress
        .send(json!({"step": "queued", "task_id": id, "device": device}));
    connection_request(ctx, &acs, &device).await;

    let limit = ctx.timeout.saturating_sub(MARGIN).max(POLL);
    let deadline = tokio::time::Instant::now() + limit;
    let mut seen_session = false;
    let mut waiting_reported = false;
    let mut attempts = 0;
    let mut retry_at: Option<i64> = None;
    loop {
        if !seen_session && acs.in_session(&device) {
            seen_session = true;
            ctx.progress.send(json!({"step": "session"}));
        }
        let (store, tid) = (acs.store.clone(), id.clone());
        let t = tokio::task::spawn_blocking(move || store.task(&tid))
            .await
            .map_err(|e| format!("ACS store task failed: {e}"))?
            .map_err(|e| format!("ACS store: {e}"))?;
        let Some(t) = t else {
            task.armed = false;
            if ctx.withdrawals.is_withdrawn(ctx.command) {
                return Err(withdrawn(ctx));
            }
            return Err(format!(
                "task {id} was removed from the ACS before it ran (octoisp-agent acs tasks cancel?)"
            ));
        };
        // A session shorter than the poll interval is seen by its effect on the task.
        if !seen_session && (t.state != TaskState::Queued || t.attempts > 0) {
            seen_session = true;
            ctx.progress.send(json!({"step": "session"}));
        }
        match t.state {
            TaskState::Done => {
                task.armed = false;
                return output(&acs, &device, &id, &kind).await;
            }
            TaskState::Failed => {
                task.armed = false;
                let err = t.last_error.unwrap_or_default();
                return Err(match err.split_once(": ") {
                    Some((code, string)) if code.parse::<u32>().is_ok() => {
                        format!("the CPE answered CWMP fault {code}: {string}")
                    }
                    _ => format!("the task failed: {err}"),
                });
            }
            TaskState::Waiting => {
                // Sent and accepted; its completion (TransferComplete, the reboot's Inform) comes later.
                task.armed = false;
                if !waiting_reported {
                    waiting_reported = true;
                    ctx.progress.send(json!({"step": "waiting", "task_id": id}));
                }
            }
            TaskState::Queued => {
                // Withdrawn while no session had started it: removed, unless a session takes it this instant
                // (then it goes on, and this command reports how it ends).
                if ctx.withdrawals.is_withdrawn(ctx.command) && task.cancel().await {
                    return Err(withdrawn(ctx));
                }
                if t.attempts > attempts {
                    attempts = t.attempts;
                    retry_at = Some(t.next_attempt_ms);
                    ctx.progress.send(json!({
                        "step": "fault",
                        "attempt": t.attempts,
                        "error": t.last_error,
                        "retry_at_ms": t.next_attempt_ms,
                    }));
                }
                if retry_at.is_some_and(|at| now_ms() >= at) {
                    retry_at = None;
                    connection_request(ctx, &acs, &device).await;
                }
            }
        }
        if ctx.cancel.is_cancelled() {
            task.cancel().await;
            return Err("cancelled".into());
        }
        if tokio::time::Instant::now() >= deadline {
            let secs = ctx.timeout.as_secs();
            if t.state == TaskState::Waiting {
                return Err(format!(
                    "the CPE accepted task {id} but did not report its completion within {secs} s (the task stays in the ACS)"
                ));
            }
            task.cancel().await;
            return Err(if seen_session {
                format!("the CPE did not complete task {id} within {secs} s; the task was removed")
            } else {
                format!(
                    "the CPE did not open a session within {secs} s; the task was removed and will not run"
                )
            });
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Marks the command as ended by a withdraw (reported `Cancelled`) and says so.
fn withdrawn(ctx: &Ctx) -> String {
    ctx.withdrawn
        .store(true, std::sync::atomic::Ordering::Release);
    ctx.progress.send(json!({"step": "withdrawn"}));
    "withdrawn (tr069.withdraw) before any CPE session started its task".into()
}

/// Sends a Connection Request and reports how it went (a failure is reported, not fatal: the CPE may still
/// open its periodic session before the timeout).
async fn connection_request(ctx: &Ctx, acs: &Acs, device: &str) {
    let via = match acs.request_connection_via(device).await {
        Ok(Delivered::Http(s)) if (200..300).contains(&s) => "http".to_owned(),
        Ok(Delivered::Http(s)) => format!("failed: the CPE answered HTTP {s}"),
        Ok(Delivered::Udp(_)) => "udp".to_owned(),
        Err(e) => format!("failed: {e}"),
    };
    ctx.progress
        .send(json!({"step": "connection_request", "via": via}));
}

/// The output of a finished task: the values read (get) or written (set), or the outcome.
async fn output(acs: &Acs, device: &str, id: &str, kind: &TaskKind) -> Result<Value, String> {
    let values = match kind {
        TaskKind::Get { names } => {
            let (store, d, names) = (acs.store.clone(), device.to_owned(), names.clone());
            let params = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                for n in &names {
                    for p in store.params(&d, n)? {
                        if n.ends_with('.') || p.name == *n {
                            out.push(p);
                        }
                    }
                }
                Ok::<_, crate::acs::store::StoreError>(out)
            })
            .await
            .map_err(|e| format!("ACS store task failed: {e}"))?
            .map_err(|e| format!("ACS store: {e}"))?;
            Some(params)
        }
        TaskKind::Set { values } => Some(
            values
                .iter()
                .map(|(n, v, t)| crate::acs::cwmp::ParameterValue {
                    name: n.clone(),
                    value: v.clone(),
                    xsd_type: t.clone(),
                })
                .collect(),
        ),
        _ => None,
    };
    let mut out = json!({"device": device, "task_id": id, "outcome": "done"});
    if let Some(values) = values {
        out["values"] = values
            .iter()
            .map(|p| json!({"name": p.name, "value": p.value, "type": p.xsd_type}))
            .collect();
    }
    Ok(out)
}
