//! `GET /api/v1/live`: a WebSocket that pushes events to the web console, tenant by tenant.
//!
//! One [`LiveHub`] per instance LISTENs on PostgreSQL channels with one dedicated connection and fans the
//! notifications out to the connected consoles through a bounded broadcast channel; each socket forwards only
//! the events of its caller's provider. Channels:
//!
//! - `octoisp_alert_events`: payload = the provider id (text), sent by the alert engine after it appends to
//!   `alert_events`. Forwarded as `{"type":"event","channel":"alerts"}`: the console refetches what it shows.
//! - `octoisp_live`: payload = JSON `{"provider_id": ..., "kind": ..., ...}`, small facts such as
//!   `agent.connected` (sent by the ingest when an agent says hello). Forwarded as
//!   `{"type":"event","channel":"live","event":{...}}` when the caller may read agents.
//!
//! - `octoisp_commands` (`crate::commands::COMMAND_CHANNEL`): payload = JSON `{"provider_id", "command_id", "seq"}`
//!   for each stored progress frame, `{"provider_id", "command_id", "status"}` for a status change, or
//!   `{"provider_id", "status", "command_ids": [...]}` for the same change of many commands (the batched
//!   dispatch, `running` and result statements send one such notification per 150 commands). Only
//!   sockets watching that command get it: progress as `{"type":"event","channel":"command","event":
//!   {"command_id":...,"seq":N,"payload":{...}}}` (the payload is read from `command_progress` in the caller's
//!   transaction: NOTIFY payloads are capped at 8000 bytes, progress frames are not), status as
//!   `{"type":"event","channel":"command","event":{"command_id":...,"status":"succeeded"}}`.
//!
//! Watching: `{"type":"watch","command_id":"..."}` (needs `commands:read`; the command must be the caller's
//! provider's, otherwise `{"type":"error","command_id":...,"message":"not found"}`), answered
//! `{"type":"watching","command_id":...,"status":...}`; `{"type":"unwatch","command_id":"..."}`. At most
//! [`MAX_WATCHED`] commands per socket.
//!
//! Protocol. The access token never travels in the URL (URLs end up in access logs): the client's first message
//! is `{"type":"auth","token":"<access token>"}`, within [`AUTH_TIMEOUT`]; the server answers
//! `{"type":"ready"}` (or closes with 4401). The client may send a fresh token the same way at any time; the
//! server re-checks the current token every [`RECHECK_EVERY`] and closes with 4401 when it no longer
//! authenticates (expired, user disabled), after which the console refreshes its tokens and reconnects. A socket
//! that fell behind the broadcast gets `{"type":"resync"}` (refetch everything). Client messages are bounded
//! ([`MAX_CLIENT_MESSAGE`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{OnceCell, broadcast};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::{AppState, RequestContext};
use crate::auth::Caller;

/// PostgreSQL channel of the alert engine (payload: the provider id).
pub const ALERT_CHANNEL: &str = "octoisp_alert_events";
/// PostgreSQL channel of small live facts (payload: JSON with `provider_id` and `kind`).
pub const LIVE_CHANNEL: &str = "octoisp_live";
/// How long a new socket may take to authenticate.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a socket's token is checked again.
pub const RECHECK_EVERY: Duration = Duration::from_secs(60);
/// Largest message a client may send, bytes.
pub const MAX_CLIENT_MESSAGE: usize = 16 * 1024;
/// Commands one socket may watch at once.
pub const MAX_WATCHED: usize = 32;
/// Events buffered per instance before a slow socket is told to resync.
const BROADCAST_CAPACITY: usize = 1024;
/// Close code: not (or no longer) authenticated.
pub const CLOSE_UNAUTHENTICATED: u16 = 4401;
/// Close code: the caller is not bound to a provider (a Global Admin has no tenant to watch).
pub const CLOSE_NO_TENANT: u16 = 4403;

/// One event for the consoles of one provider.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    /// Whose consoles get it.
    pub provider_id: Uuid,
    /// `alerts`, `live`, or `resync` (to every socket, whatever its provider).
    pub channel: &'static str,
    /// The event's facts (`null` for alerts: the console refetches).
    pub event: serde_json::Value,
}

/// The instance's listener and fan-out. Cheap to clone; starts listening on the first subscriber and stops
/// with its cancellation token.
#[derive(Clone, Default)]
pub struct LiveHub {
    inner: Arc<HubInner>,
}

#[derive(Default)]
struct HubInner {
    sender: OnceCell<broadcast::Sender<Arc<LiveEvent>>>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for LiveHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHub").finish_non_exhaustive()
    }
}

impl LiveHub {
    /// A hub whose listener stops when `shutdown` is cancelled (and whose sockets then close).
    pub fn new(shutdown: CancellationToken) -> LiveHub {
        LiveHub {
            inner: Arc::new(HubInner {
                sender: OnceCell::new(),
                shutdown,
            }),
        }
    }

    /// Subscribes to every provider's events, starting the listener on `pool` if it is not running.
    pub async fn subscribe(&self, pool: &PgPool) -> broadcast::Receiver<Arc<LiveEvent>> {
        let sender = self
            .inner
            .sender
            .get_or_init(|| async {
                let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
                let (listening, is_listening) = tokio::sync::oneshot::channel();
                tokio::spawn(listen(
                    pool.clone(),
                    tx.clone(),
                    self.inner.shutdown.clone(),
                    listening,
                ));
                // The first socket is "ready" only once notifications can reach it (bounded: PostgreSQL may be
                // down, and the listener keeps retrying on its own).
                let _ = tokio::time::timeout(AUTH_TIMEOUT, is_listening).await;
                tx
            })
            .await;
        sender.subscribe()
    }
}

/// LISTENs until shutdown, reconnecting after errors (with a pause); every notification becomes a broadcast.
async fn listen(
    pool: PgPool,
    tx: broadcast::Sender<Arc<LiveEvent>>,
    shutdown: CancellationToken,
    listening: tokio::sync::oneshot::Sender<()>,
) {
    let mut listening = Some(listening);
    let mut first = true;
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(err) => {
                tracing::warn!(error = %err, "Live events: cannot connect the listener; retrying.");
                if pause(&shutdown).await {
                    return;
                }
                continue;
            }
        };
        if let Err(err) = listener
            .listen_all([
                ALERT_CHANNEL,
                LIVE_CHANNEL,
                crate::commands::COMMAND_CHANNEL,
            ])
            .await
        {
            tracing::warn!(error = %err, "Live events: LISTEN failed; retrying.");
            if pause(&shutdown).await {
                return;
            }
            continue;
        }
        tracing::info!("Live events: listening.");
        // After a failure, whatever was notified while not listening is lost: consoles refetch.
        if !first {
            let _ = tx.send(Arc::new(resync()));
        }
        first = false;
        if let Some(l) = listening.take() {
            let _ = l.send(());
        }
        loop {
            let n = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = listener.try_recv() => n,
            };
            match n {
                Ok(Some(n)) => {
                    if let Some(event) = parse_notification(n.channel(), n.payload()) {
                        // No receiver is fine: nobody is watching.
                        let _ = tx.send(Arc::new(event));
                    } else {
                        tracing::debug!(channel = n.channel(), "Live events: unreadable payload.");
                    }
                }
                // The connection dropped and was re-established: notifications in between are lost, so every
                // console refetches.
                Ok(None) => {
                    tracing::info!("Live events: listener reconnected.");
                    let _ = tx.send(Arc::new(resync()));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "Live events: listener failed; reconnecting.");
                    break;
                }
            }
        }
        if pause(&shutdown).await {
            return;
        }
    }
}

/// Tells every socket to refetch (notifications may have been lost); carries no provider.
fn resync() -> LiveEvent {
    LiveEvent {
        provider_id: Uuid::nil(),
        channel: "resync",
        event: serde_json::Value::Null,
    }
}

/// Waits before a retry; true when shutting down.
async fn pause(shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(Duration::from_secs(2)) => false,
    }
}

/// A notification as an event, or `None` when the payload names no provider.
pub fn parse_notification(channel: &str, payload: &str) -> Option<LiveEvent> {
    match channel {
        ALERT_CHANNEL => Some(LiveEvent {
            provider_id: payload.trim().parse().ok()?,
            channel: "alerts",
            event: serde_json::Value::Null,
        }),
        LIVE_CHANNEL => {
            let value: serde_json::Value = serde_json::from_str(payload).ok()?;
            let provider_id = value.get("provider_id")?.as_str()?.parse().ok()?;
            Some(LiveEvent {
                provider_id,
                channel: "live",
                event: value,
            })
        }
        crate::commands::COMMAND_CHANNEL => {
            let value: serde_json::Value = serde_json::from_str(payload).ok()?;
            let provider_id = value.get("provider_id")?.as_str()?.parse().ok()?;
            // One command (`command_id`), or one status change of several (`command_ids`).
            match value.get("command_ids") {
                Some(ids) => {
                    value.get("status")?.as_str()?;
                    ids.as_array()?;
                }
                None => {
                    value.get("command_id")?.as_str()?.parse::<Uuid>().ok()?;
                }
            }
            Some(LiveEvent {
                provider_id,
                channel: "command",
                event: value,
            })
        }
        _ => None,
    }
}

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientMessage {
    /// An access token (first message, or a fresh one later).
    Auth { token: String },
    /// Keeps the connection alive through proxies; answered with `pong`.
    Ping,
    /// Push this command's progress and status changes.
    Watch { command_id: Uuid },
    /// Stop pushing this command's events.
    Unwatch { command_id: Uuid },
}

/// Answers a `watch`: the command's status when the caller may see it.
async fn watch_status(state: &AppState, caller: &Caller, command_id: Uuid) -> Option<String> {
    if !caller.has("commands:read") {
        return None;
    }
    let mut tx = caller.tx(&state.pool, None).await.ok()?;
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM commands WHERE id = $1")
        .bind(command_id)
        .fetch_optional(&mut *tx)
        .await
        .ok()?;
    let _ = tx.commit().await;
    status
}

/// The outgoing messages of a command event for a watching socket: one per watched command the event names
/// (a batched status change names up to 150).
async fn command_events(
    state: &AppState,
    caller: &Caller,
    watched: &std::collections::HashSet<Uuid>,
    event: &serde_json::Value,
) -> Vec<serde_json::Value> {
    let Some(ids) = event.get("command_ids").and_then(|v| v.as_array()) else {
        return command_event(state, caller, watched, event)
            .await
            .into_iter()
            .collect();
    };
    if watched.is_empty() {
        return Vec::new();
    }
    let status = event.get("status").cloned().unwrap_or_default();
    ids.iter()
        .filter_map(|id| id.as_str()?.parse::<Uuid>().ok())
        .filter(|id| watched.contains(id))
        .map(|id| {
            json!({ "type": "event", "channel": "command",
                "event": { "command_id": id, "status": status } })
        })
        .collect()
}

/// The outgoing message of a one-command event for a watching socket (`None`: not watched, or gone).
async fn command_event(
    state: &AppState,
    caller: &Caller,
    watched: &std::collections::HashSet<Uuid>,
    event: &serde_json::Value,
) -> Option<serde_json::Value> {
    let command_id: Uuid = event.get("command_id")?.as_str()?.parse().ok()?;
    if !watched.contains(&command_id) {
        return None;
    }
    if let Some(status) = event.get("status") {
        return Some(json!({ "type": "event", "channel": "command",
            "event": { "command_id": command_id, "status": status } }));
    }
    let seq = event.get("seq")?.as_i64()?;
    let mut tx = caller.tx(&state.pool, None).await.ok()?;
    let payload: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT payload FROM command_progress WHERE command_id = $1 AND seq = $2",
    )
    .bind(command_id)
    .bind(seq as i32)
    .fetch_optional(&mut *tx)
    .await
    .ok()?;
    let _ = tx.commit().await;
    Some(json!({ "type": "event", "channel": "command",
        "event": { "command_id": command_id, "seq": seq, "payload": payload? } }))
}

/// The live event stream of the caller's provider (WebSocket; see the module documentation for the protocol).
#[utoipa::path(get, path = "/api/v1/live", tag = "live",
    responses(
        (status = 101, description = "WebSocket: send {\"type\":\"auth\",\"token\":\"<access token>\"} first; then \
            receive {\"type\":\"ready\"}, {\"type\":\"event\",\"channel\":\"alerts\"|\"live\",\"event\":{...}} and \
            {\"type\":\"resync\"}. Closes with 4401 when the token does not (or no longer) authenticate, 4403 for a \
            caller without a provider."),
        (status = 400, description = "Not a WebSocket upgrade request")))]
pub async fn live(
    State(state): State<AppState>,
    ctx: Option<axum::Extension<RequestContext>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => {
            return crate::api::error::ApiError::BadRequest(
                "this endpoint is a WebSocket: send an Upgrade request".into(),
            )
            .into_response();
        }
    };
    let ctx = ctx.map(|axum::Extension(c)| c).unwrap_or(RequestContext {
        request_id: Uuid::now_v7().to_string(),
        ip: None,
    });
    ws.max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| run_socket(socket, state, ctx))
}

/// Authenticates a token with the API's authenticator.
async fn authenticate(state: &AppState, token: &str, ctx: &RequestContext) -> Option<Caller> {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    headers.insert(header::AUTHORIZATION, value);
    state.auth.authenticate(&headers, ctx).await.ok().flatten()
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

async fn send_json(socket: &mut WebSocket, value: serde_json::Value) -> bool {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .is_ok()
}

/// Reads the next auth message (text frames only; anything else is refused).
async fn read_auth(socket: &mut WebSocket) -> Option<String> {
    loop {
        match socket.recv().await? {
            Ok(Message::Text(text)) => {
                return match serde_json::from_str::<ClientMessage>(text.as_str()) {
                    Ok(ClientMessage::Auth { token }) => Some(token),
                    _ => None,
                };
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            _ => return None,
        }
    }
}

async fn run_socket(mut socket: WebSocket, state: AppState, ctx: RequestContext) {
    let Ok(Some(mut token)) = tokio::time::timeout(AUTH_TIMEOUT, read_auth(&mut socket)).await
    else {
        return close(socket, CLOSE_UNAUTHENTICATED, "authenticate first").await;
    };
    let Some(mut caller) = authenticate(&state, &token, &ctx).await else {
        return close(socket, CLOSE_UNAUTHENTICATED, "invalid token").await;
    };
    let Some(provider) = caller.provider_id else {
        return close(socket, CLOSE_NO_TENANT, "live events need a provider").await;
    };
    let mut events = state.live.subscribe(&state.pool).await;
    if !send_json(&mut socket, json!({ "type": "ready" })).await {
        return;
    }
    tracing::debug!(provider = %provider, request_id = %ctx.request_id, "Live socket open.");
    let shutdown = state.live.inner.shutdown.clone();
    let mut watched: std::collections::HashSet<Uuid> = std::collections::HashSet::new();
    let mut recheck = tokio::time::interval(RECHECK_EVERY);
    recheck.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                return close(socket, 1001, "server shutting down").await;
            }
            _ = recheck.tick() => {
                match authenticate(&state, &token, &ctx).await {
                    Some(c) if c.provider_id == Some(provider) => caller = c,
                    _ => return close(socket, CLOSE_UNAUTHENTICATED, "token expired").await,
                }
            }
            msg = socket.recv() => {
                let Some(Ok(msg)) = msg else { return };
                match msg {
                    Message::Text(text) => match serde_json::from_str::<ClientMessage>(text.as_str()) {
                        Ok(ClientMessage::Auth { token: fresh }) => {
                            match authenticate(&state, &fresh, &ctx).await {
                                Some(c) if c.provider_id == Some(provider) => {
                                    caller = c;
                                    token = fresh;
                                }
                                _ => return close(socket, CLOSE_UNAUTHENTICATED, "invalid token").await,
                            }
                        }
                        Ok(ClientMessage::Ping) => {
                            if !send_json(&mut socket, json!({ "type": "pong" })).await {
                                return;
                            }
                        }
                        Ok(ClientMessage::Watch { command_id }) => {
                            let reply = if watched.len() >= MAX_WATCHED && !watched.contains(&command_id) {
                                json!({ "type": "error", "command_id": command_id,
                                    "message": format!("at most {MAX_WATCHED} commands may be watched at once") })
                            } else {
                                match watch_status(&state, &caller, command_id).await {
                                    Some(status) => {
                                        watched.insert(command_id);
                                        json!({ "type": "watching", "command_id": command_id, "status": status })
                                    }
                                    None => json!({ "type": "error", "command_id": command_id,
                                        "message": "not found" }),
                                }
                            };
                            if !send_json(&mut socket, reply).await {
                                return;
                            }
                        }
                        Ok(ClientMessage::Unwatch { command_id }) => {
                            watched.remove(&command_id);
                        }
                        Err(_) => return close(socket, 1003, "unknown message").await,
                    },
                    Message::Close(_) => return,
                    Message::Binary(_) => return close(socket, 1003, "text messages only").await,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            ev = events.recv() => {
                let out = match ev {
                    Ok(ev) if ev.channel == "resync" => json!({ "type": "resync" }),
                    Ok(ev) if ev.provider_id != provider => continue,
                    Ok(ev) if ev.channel == "live" && !caller.has("agents:read") => continue,
                    Ok(ev) if ev.channel == "command" => {
                        let mut outs = command_events(&state, &caller, &watched, &ev.event).await;
                        let Some(last) = outs.pop() else { continue };
                        for out in outs {
                            if !send_json(&mut socket, out).await {
                                return;
                            }
                        }
                        last
                    }
                    Ok(ev) => json!({ "type": "event", "channel": ev.channel, "event": ev.event }),
                    Err(broadcast::error::RecvError::Lagged(_)) => json!({ "type": "resync" }),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if !send_json(&mut socket, out).await {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_name_their_provider_or_are_dropped() {
        let p = Uuid::new_v4();
        let ev = parse_notification(ALERT_CHANNEL, &p.to_string()).unwrap();
        assert_eq!((ev.provider_id, ev.channel), (p, "alerts"));
        let ev = parse_notification(
            LIVE_CHANNEL,
            &json!({"provider_id": p, "kind": "agent.connected"}).to_string(),
        )
        .unwrap();
        assert_eq!(ev.event["kind"], "agent.connected");
        assert!(parse_notification(ALERT_CHANNEL, "not-a-uuid").is_none());
        assert!(parse_notification(LIVE_CHANNEL, "{\"kind\":\"x\"}").is_none());
        assert!(parse_notification("other", &p.to_string()).is_none());
        let c = Uuid::new_v4();
        let ev = parse_notification(
            crate::commands::COMMAND_CHANNEL,
            &json!({"provider_id": p, "status": "running", "command_ids": [c]}).to_string(),
        )
        .unwrap();
        assert_eq!((ev.provider_id, ev.channel), (p, "command"));
        assert!(
            parse_notification(
                crate::commands::COMMAND_CHANNEL,
                &json!({"provider_id": p, "command_ids": [c]}).to_string(),
            )
            .is_none(),
            "a batched change names its status"
        );
    }
}
