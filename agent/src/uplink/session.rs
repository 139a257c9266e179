//! One uplink session: connect, `Hello`/`Welcome`, then the batch pipeline until the connection ends or shutdown.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use octoisp_shared::frame::HEADER_LEN;
use octoisp_shared::{Heartbeat, Hello, Message, NackCode, RejectCode, Welcome};
use quinn::{Connection, RecvStream, SendStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::UplinkConfig;
use super::dial;
use super::wire::{self, ReadFrameError};
use crate::identity::Identity;
use crate::outbox::{Outbox, OutboxError, PendingBatch};
use crate::tls;

/// Time allowed to connect (QUIC + TLS handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Time allowed for `Welcome` after `Hello`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);
/// Time allowed for one batch: opening its stream (which waits for the control plane's stream credit), sending it,
/// and its answer (which waits for the PostgreSQL commit).
const BATCH_TIMEOUT: Duration = Duration::from_secs(120);
/// How often to look for new outbox content when it was empty.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// On shutdown, how long batches in flight may take to be acknowledged.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// After this many `UnknownSeries` answers for one batch, slow down (the control plane keeps forgetting them).
const MAX_QUICK_REFORMS: u32 = 3;

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Shutdown was requested and the connection was closed cleanly.
    Shutdown,
    /// The connection could not be opened, or was lost.
    Lost {
        /// What happened.
        error: String,
        /// Whether `Welcome` was received (the session was up).
        connected: bool,
    },
    /// The control plane refused the agent.
    Rejected {
        /// Machine-readable reason.
        code: RejectCode,
        /// The control plane's explanation.
        message: String,
    },
}

fn lost(error: impl std::fmt::Display, connected: bool) -> SessionEnd {
    SessionEnd::Lost {
        error: error.to_string(),
        connected,
    }
}

/// Runs one session.
pub(super) async fn run(
    cfg: &UplinkConfig,
    identity: &Identity,
    outbox: &Outbox,
    commands: Option<&crate::commands::Executor>,
    shutdown: &CancellationToken,
    process_started: Instant,
) -> SessionEnd {
    let client = match tls::uplink_config(identity) {
        Ok(client) => client,
        Err(err) => return lost(err, false),
    };
    let connect = tokio::select! {
        _ = shutdown.cancelled() => return SessionEnd::Shutdown,
        result = dial::connect(&cfg.server, client, CONNECT_TIMEOUT) => result,
    };
    let (endpoint, conn) = match connect {
        Ok(pair) => pair,
        Err(err) => return lost(err, false),
    };
    let end = match handshake(&conn, shutdown).await {
        Ok((welcome, ctl_send, ctl_recv)) => {
            let window = welcome.max_in_flight.min(cfg.max_in_flight).max(1) as usize;
            tracing::info!(
                agent = %welcome.agent_id, provider = %welcome.provider_id, pop = %welcome.pop_id,
                version = welcome.version, window, server = %cfg.server, "Uplink connected."
            );
            metrics::gauge!("octoisp_agent_uplink_connected").set(1.0);
            // Command streams: served until the connection closes (below), each command to its end.
            if let Some(exec) = commands.cloned() {
                let c = conn.clone();
                tokio::spawn(async move { exec.accept_streams(c).await });
            }
            let pipeline = Pipeline::new(
                conn.clone(),
                outbox.clone(),
                &welcome,
                window,
                process_started,
            );
            pipeline.run(ctl_send, ctl_recv, shutdown).await
        }
        Err(end) => end,
    };
    let (code, reason): (u32, &[u8]) = match &end {
        SessionEnd::Shutdown => (0, b"agent shutting down"),
        SessionEnd::Lost { .. } => (0, b"agent reconnecting"),
        SessionEnd::Rejected { .. } => (1, b"rejected"),
    };
    conn.close(code.into(), reason);
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    end
}

/// Opens the control stream, sends `Hello` and waits for `Welcome`.
async fn handshake(
    conn: &Connection,
    shutdown: &CancellationToken,
) -> Result<(Welcome, SendStream, RecvStream), SessionEnd> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|err| lost(format!("opening the control stream: {err}"), false))?;
    let hello = Message::Hello(Hello {
        version_min: octoisp_shared::PROTOCOL_VERSION_MIN,
        version_max: octoisp_shared::PROTOCOL_VERSION_MAX,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: hostname(),
    });
    wire::write_message(&mut send, &hello)
        .await
        .map_err(|err| lost(format!("sending Hello: {err}"), false))?;
    let limits = wire::reply_limits();
    let answer = tokio::select! {
        _ = shutdown.cancelled() => return Err(SessionEnd::Shutdown),
        answer = tokio::time::timeout(WELCOME_TIMEOUT, wire::read_frame(&mut recv, &limits)) => answer,
    };
    match answer {
        Err(_) => Err(lost(
            format!("no Welcome within {WELCOME_TIMEOUT:?}"),
            false,
        )),
        Ok(Ok(Message::Welcome(welcome))) => Ok((welcome, send, recv)),
        Ok(Ok(Message::Reject(reject))) => Err(SessionEnd::Rejected {
            code: reject.code,
            message: reject.message,
        }),
        Ok(Ok(other)) => Err(lost(
            format!("unexpected answer to Hello: {other:?}"),
            false,
        )),
        Ok(Err(err)) => Err(lost(format!("waiting for Welcome: {err}"), false)),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The answer to one batch, or why there is none.
enum BatchResult {
    /// The control plane answered.
    Answer(Box<Message>),
    /// The stream failed while the connection is still up (reset, undecodable answer).
    StreamFailed(String),
    /// The connection is gone.
    ConnectionLost(String),
    /// No answer within [`BATCH_TIMEOUT`].
    TimedOut,
}

struct Pipeline {
    conn: Connection,
    outbox: Outbox,
    window: usize,
    max_frame: usize,
    heartbeat: Duration,
    process_started: Instant,
    /// Batches to send now, oldest first.
    ready: VecDeque<PendingBatch>,
    /// Batches to send again later (`Nack::Retry`, failed streams).
    delayed: Vec<(Instant, PendingBatch)>,
    in_flight: JoinSet<(PendingBatch, Instant, BatchResult)>,
    /// `UnknownSeries` answers per seq in this session.
    reforms: HashMap<u64, u32>,
}

impl Pipeline {
    fn new(
        conn: Connection,
        outbox: Outbox,
        welcome: &Welcome,
        window: usize,
        process_started: Instant,
    ) -> Pipeline {
        Pipeline {
            conn,
            outbox,
            window,
            max_frame: welcome.max_batch_bytes as usize + HEADER_LEN,
            heartbeat: Duration::from_secs(u64::from(welcome.heartbeat_secs.max(1))),
            process_started,
            ready: VecDeque::new(),
            delayed: Vec::new(),
            in_flight: JoinSet::new(),
            reforms: HashMap::new(),
        }
    }

    async fn run(
        mut self,
        mut ctl_send: SendStream,
        ctl_recv: RecvStream,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        // Batches formed before (earlier sessions, earlier runs) go first, oldest first.
        match blocking(&self.outbox, |ob| ob.pending_batches()).await {
            Ok(pending) => {
                if !pending.is_empty() {
                    tracing::info!(batches = pending.len(), "Resending batches formed before.");
                }
                self.ready.extend(pending);
            }
            Err(err) => return lost(format!("reading pending batches: {err}"), true),
        }
        let mut control = tokio::spawn(read_control(ctl_recv));
        let mut forming: Option<JoinHandle<Result<Option<PendingBatch>, OutboxError>>> = None;
        let mut idle_until: Option<Instant> = None;
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain_deadline: Option<tokio::time::Instant> = None;

        let end = loop {
            let stopping = drain_deadline.is_some();
            if !stopping {
                self.promote_due();
                while self.in_flight.len() < self.window {
                    let Some(batch) = self.ready.pop_front() else {
                        break;
                    };
                    self.start(batch).await;
                }
                let has_room = self.in_flight.len() < self.window && self.ready.is_empty();
                let may_poll = idle_until.is_none_or(|t| Instant::now() >= t);
                if has_room && forming.is_none() && may_poll {
                    let ob = self.outbox.clone();
                    forming = Some(tokio::task::spawn_blocking(move || ob.next_batch()));
                    idle_until = None;
                }
            } else if self.in_flight.is_empty() {
                break SessionEnd::Shutdown;
            }
            metrics::gauge!("octoisp_agent_uplink_batches_in_flight")
                .set(self.in_flight.len() as f64);
            // Only future instants: a past one would make the select below spin.
            let wake = self.next_wake(idle_until.filter(|t| *t > Instant::now()));

            tokio::select! {
                _ = shutdown.cancelled(), if !stopping => {
                    tracing::info!(in_flight = self.in_flight.len(), "Uplink stopping: waiting for acks of batches in flight.");
                    drain_deadline = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
                }
                _ = sleep_until_opt(drain_deadline), if stopping => {
                    tracing::warn!(in_flight = self.in_flight.len(), "Shutdown grace over; unacknowledged batches stay in the outbox.");
                    break SessionEnd::Shutdown;
                }
                Some(joined) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    let Ok((batch, started, result)) = joined else {
                        // A send task panicked: its batch is still in the outbox and is resent next session.
                        tracing::error!("A batch send task failed unexpectedly.");
                        continue;
                    };
                    if let Some(end) = self.settle(batch, started, result).await {
                        break end;
                    }
                }
                formed = join_opt(&mut forming), if forming.is_some() => {
                    forming = None;
                    match formed {
                        Ok(Ok(Some(batch))) => {
                            idle_until = None;
                            if stopping {
                                // Formed but not sent: it waits in the outbox for the next start.
                            } else {
                                self.ready.push_back(batch);
                            }
                        }
                        Ok(Ok(None)) => idle_until = Some(Instant::now() + IDLE_POLL),
                        Ok(Err(err)) => {
                            tracing::error!(error = %err, "Cannot form a batch from the outbox.");
                            idle_until = Some(Instant::now() + Duration::from_secs(1));
                        }
                        Err(err) => {
                            tracing::error!(error = %err, "Batch forming task failed.");
                            idle_until = Some(Instant::now() + Duration::from_secs(1));
                        }
                    }
                }
                _ = sleep_until_opt(wake.map(tokio::time::Instant::from_std)), if wake.is_some() && !stopping => {}
                _ = heartbeat.tick(), if !stopping => {
                    if let Err(err) = self.send_heartbeat(&mut ctl_send).await {
                        break lost(format!("sending a heartbeat: {err}"), true);
                    }
                }
                ended = &mut control => {
                    match ended {
                        Ok(Some((code, message))) => break SessionEnd::Rejected { code, message },
                        Ok(None) | Err(_) => {
                            let reason = self.conn.close_reason().map_or_else(|| "the control stream ended".to_string(), |r| r.to_string());
                            break lost(reason, true);
                        }
                    }
                }
            }
        };
        control.abort();
        // A batch being formed must not outlive the session: formed after the next session read the pending
        // batches, it would wait for the reconnect after that one.
        if let Some(handle) = forming.take() {
            let _ = handle.await;
        }
        if matches!(end, SessionEnd::Shutdown) {
            let _ = ctl_send.finish();
        }
        // Whatever is still in flight stays in the outbox; the next session sends it again.
        self.in_flight.abort_all();
        end
    }

    /// Moves delayed batches whose time has come to the front of the ready queue.
    fn promote_due(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed[i].0 <= now {
                let (_, batch) = self.delayed.swap_remove(i);
                self.ready.push_front(batch);
            } else {
                i += 1;
            }
        }
    }

    fn next_wake(&self, idle_until: Option<Instant>) -> Option<Instant> {
        let now = Instant::now();
        let delayed = self
            .delayed
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| *t > now)
            .min();
        match (delayed, idle_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Starts sending `batch` on a stream of its own, or abandons it when it can never be accepted.
    async fn start(&mut self, batch: PendingBatch) {
        if batch.frame.len() > self.max_frame {
            let reason = format!(
                "batch frame of {} bytes is larger than the {} bytes the control plane accepts",
                batch.frame.len(),
                self.max_frame - HEADER_LEN
            );
            self.abandon(batch.seq, &reason).await;
            return;
        }
        let conn = self.conn.clone();
        self.in_flight.spawn(async move {
            let started = Instant::now();
            let result =
                match tokio::time::timeout(BATCH_TIMEOUT, send_batch(&conn, &batch.frame)).await {
                    Ok(result) => result,
                    Err(_) => BatchResult::TimedOut,
                };
            (batch, started, result)
        });
    }

    /// Acts on the answer to a batch. `Some` ends the session.
    async fn settle(
        &mut self,
        batch: PendingBatch,
        started: Instant,
        result: BatchResult,
    ) -> Option<SessionEnd> {
        let seq = batch.seq;
        let answer = match result {
            BatchResult::Answer(answer) => answer,
            BatchResult::ConnectionLost(reason) => return Some(lost(reason, true)),
            BatchResult::StreamFailed(reason) => {
                tracing::warn!(seq, reason = %reason, "Batch stream failed; sending it again shortly.");
                self.delay(batch, Duration::from_secs(1));
                return None;
            }
            BatchResult::TimedOut => {
                tracing::warn!(seq, timeout = ?BATCH_TIMEOUT, "No answer to a batch; sending it again.");
                self.delay(batch, Duration::from_secs(1));
                return None;
            }
        };
        match *answer {
            Message::Ack(ack) if ack.seq == seq => {
                let (samples, records) = (batch.samples, batch.records);
                match blocking(&self.outbox, move |ob| ob.ack(seq)).await {
                    Ok(()) => {
                        metrics::histogram!("octoisp_agent_uplink_ack_seconds")
                            .record(started.elapsed().as_secs_f64());
                        metrics::counter!("octoisp_agent_uplink_batches_acked_total").increment(1);
                        metrics::counter!("octoisp_agent_uplink_samples_acked_total")
                            .increment(samples);
                        metrics::counter!("octoisp_agent_uplink_records_acked_total")
                            .increment(records);
                        tracing::debug!(
                            seq,
                            samples,
                            records,
                            duplicate = ack.duplicate,
                            "Batch acknowledged."
                        );
                    }
                    // The control plane has it; the row stays and is resent next session, then acked as duplicate.
                    Err(err) => {
                        tracing::error!(seq, error = %err, "Cannot delete an acknowledged batch from the outbox.")
                    }
                }
                self.reforms.remove(&seq);
            }
            Message::Nack(nack) if nack.seq == seq || nack.seq == 0 => {
                let label = match &nack.code {
                    NackCode::Malformed => "malformed",
                    NackCode::Retry => "retry",
                    NackCode::UnknownSeries(_) => "unknown_series",
                };
                metrics::counter!("octoisp_agent_uplink_batches_nacked_total", "code" => label)
                    .increment(1);
                match nack.code {
                    NackCode::Retry => {
                        let after = Duration::from_millis(u64::from(nack.retry_after_ms))
                            .clamp(Duration::from_millis(100), Duration::from_secs(60));
                        tracing::info!(seq, retry_in = ?after, reason = %nack.message, "Batch not stored yet; retrying.");
                        self.delay(batch, after);
                    }
                    NackCode::UnknownSeries(ids) => self.reform(batch, ids).await,
                    NackCode::Malformed => {
                        let reason = format!(
                            "refused by the control plane as malformed: {}",
                            nack.message
                        );
                        self.abandon(seq, &reason).await;
                    }
                }
            }
            other => {
                tracing::warn!(seq, answer = ?other, "Unexpected answer to a batch; sending it again shortly.");
                self.delay(batch, Duration::from_secs(1));
            }
        }
        None
    }

    fn delay(&mut self, batch: PendingBatch, after: Duration) {
        self.delayed.push((Instant::now() + after, batch));
    }

    async fn reform(&mut self, batch: PendingBatch, ids: Vec<u64>) {
        let seq = batch.seq;
        let count = self.reforms.entry(seq).or_insert(0);
        *count += 1;
        let slow = *count > MAX_QUICK_REFORMS;
        match blocking(&self.outbox, move |ob| ob.reform_with_series(seq, &ids)).await {
            Ok(reformed) => {
                tracing::debug!(seq, "Batch re-formed with its series definitions.");
                if slow {
                    tracing::warn!(
                        seq,
                        "The control plane keeps asking for series definitions; slowing down."
                    );
                    self.delay(reformed, Duration::from_secs(5));
                } else {
                    self.ready.push_front(reformed);
                }
            }
            Err(err @ OutboxError::SeriesNotFound { .. }) => {
                self.abandon(
                    seq,
                    &format!("cannot re-form with series definitions: {err}"),
                )
                .await;
            }
            Err(err) => {
                tracing::error!(seq, error = %err, "Cannot re-form a batch; retrying later.");
                self.delay(batch, Duration::from_secs(5));
            }
        }
    }

    async fn abandon(&mut self, seq: u64, reason: &str) {
        tracing::error!(seq, reason = %reason, "Abandoning a batch (moved to dead letters, reported upstream).");
        metrics::counter!("octoisp_agent_uplink_batches_abandoned_total").increment(1);
        let why = reason.to_string();
        if let Err(err) = blocking(&self.outbox, move |ob| ob.abandon(seq, &why)).await {
            tracing::error!(seq, error = %err, "Cannot abandon a batch; it will be sent again next session.");
        }
        self.reforms.remove(&seq);
    }

    async fn send_heartbeat(&self, ctl_send: &mut SendStream) -> Result<(), String> {
        let stats = blocking(&self.outbox, |ob| ob.stats())
            .await
            .map_err(|err| err.to_string())?;
        let hb = Message::Heartbeat(Heartbeat {
            ts_ms: now_ms(),
            uptime_secs: self.process_started.elapsed().as_secs(),
            outbox_records: stats.chunks + stats.batches_pending,
            outbox_samples: stats.samples,
            outbox_bytes: stats.bytes,
            oldest_ms: stats.oldest_ms,
            samples_dropped_total: stats.samples_dropped_total,
        });
        match tokio::time::timeout(Duration::from_secs(10), wire::write_message(ctl_send, &hb))
            .await
        {
            Ok(result) => result.map_err(|err| err.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }
}

/// Sends one batch frame on a new stream and reads the answer.
async fn send_batch(conn: &Connection, frame: &[u8]) -> BatchResult {
    let connection_lost = |conn: &Connection, err: &dyn std::fmt::Display| match conn.close_reason()
    {
        Some(reason) => BatchResult::ConnectionLost(reason.to_string()),
        None => BatchResult::StreamFailed(err.to_string()),
    };
    let (mut send, mut recv) = match conn.open_bi().await {
        Ok(pair) => pair,
        Err(err) => return BatchResult::ConnectionLost(err.to_string()),
    };
    if let Err(err) = send.write_all(frame).await {
        return connection_lost(conn, &err);
    }
    let _ = send.finish();
    match wire::read_frame(&mut recv, &wire::reply_limits()).await {
        Ok(answer) => BatchResult::Answer(Box::new(answer)),
        Err(ReadFrameError::Finished) => {
            connection_lost(conn, &"the stream finished without an answer")
        }
        Err(err) => connection_lost(conn, &err),
    }
}

/// Reads the control stream until it ends. `Some` when the control plane sent `Reject` (revoked while connected).
async fn read_control(mut recv: RecvStream) -> Option<(RejectCode, String)> {
    loop {
        match wire::read_frame(&mut recv, &wire::reply_limits()).await {
            Ok(Message::Reject(reject)) => return Some((reject.code, reject.message)),
            Ok(other) => {
                tracing::debug!(message = ?other, "Ignoring a message on the control stream.")
            }
            Err(_) => return None,
        }
    }
}

/// Runs a blocking outbox operation on the blocking pool.
async fn blocking<T, F>(outbox: &Outbox, op: F) -> Result<T, OutboxError>
where
    T: Send + 'static,
    F: FnOnce(&Outbox) -> Result<T, OutboxError> + Send + 'static,
{
    let ob = outbox.clone();
    match tokio::task::spawn_blocking(move || op(&ob)).await {
        Ok(result) => result,
        Err(err) => Err(OutboxError::Config(format!("outbox task failed: {err}"))),
    }
}

async fn join_opt<T>(handle: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match handle {
        Some(h) => h.await,
        // Guarded by `if forming.is_some()` in the select; never polled otherwise.
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
