//! Remote commands: the control plane opens a bidirectional QUIC stream on the agent's connection, writes one
//! `Message::Command` and finishes its side; the agent answers `Message::CommandProgress` frames on the same
//! stream and finishes it when the command is over. The durable answer is the `Record::CommandResult` written to
//! the outbox *before* the stream is finished. See `docs/COMMANDS-AGENT.md` for the contract and every command's
//! progress and output.
//!
//! ```text
//! serve_stream ── read one frame (bounded, 30 s) ── bad frame / not a Command ──▶ reset this stream only
//!      │
//!      ├─ ledger claim `cmd/<id>` (committed) ── already there ──▶ {"state":"duplicate"}, nothing run
//!      ├─ unknown name / bad args ──▶ {"state":"rejected","error":..} + Rejected result
//!      ├─ more than `max_queued` waiting for a slot ──▶ {"state":"rejected","error":"busy: .."} + Rejected result
//!      ├─ wait for one of `max_concurrent` slots; deadline passed ──▶ {"state":"expired"} + Expired result
//!      └─ {"state":"started"}, progress frames (seq 1..), result + ledger `finished` in one transaction, finish
//! ```
//!
//! Every command runs under a timeout (the catalogue's `default_timeout_secs`, or the `timeout_secs` argument)
//! and is cancelled at agent shutdown (it is then reported `Failed`, or, when the process dies first, failed by
//! [`ledger::recover`] at the next start: never re-run).

pub mod ledger;
pub mod progress;
mod run;
mod tr069;
mod withdraw;

use std::sync::Arc;
use std::time::Duration;

use octoisp_shared::commands::{Args, CommandError};
use octoisp_shared::{Command, CommandProgress, CommandResult, CommandStatus, Message, Record};
use quinn::{RecvStream, SendStream, VarInt};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::central::Runtime;
use crate::outbox::Outbox;
use crate::uplink::wire;

pub use progress::Progress;

/// How long the control plane has to send the `Command` frame after opening the stream.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long queued progress may take to reach the stream once the command is over.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest command frame accepted (arguments of `config.update` included).
const MAX_COMMAND_FRAME: usize = 1 << 20;
/// Stream reset code: the frame on the stream was malformed, too large, or not a `Command`.
pub const RESET_BAD_FRAME: u32 = 1;
/// Stream reset code: the agent could not record the command (its outbox failed); nothing ran, deliver it again.
pub const RESET_NOT_ACCEPTED: u32 = 2;
/// Longest name kept in the ledger and logs for an unknown command.
const MAX_NAME_LOGGED: usize = 64;
/// Why a command was not accepted while the agent stops (logged; the control plane retries it).
const SHUTTING_DOWN: &str = "the agent is shutting down; not started";

/// `[commands]` of the agent's config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsSection {
    /// Commands running at once (default 16).
    pub max_concurrent: usize,
    /// Commands waiting for a running slot (default 256); beyond it a command is rejected with `busy`.
    pub max_queued: usize,
}

impl Default for CommandsSection {
    fn default() -> Self {
        CommandsSection {
            max_concurrent: 16,
            max_queued: 256,
        }
    }
}

/// Runs the commands of every stream. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    outbox: Outbox,
    runtime: Option<Arc<Runtime>>,
    slots: Arc<Semaphore>,
    queued: Arc<Semaphore>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// The connection commands arrive on: `tr069.download` fetches firmware images over it.
    uplink: crate::acs::fetch::UplinkLink,
    /// Commands withdrawn by `tr069.withdraw`, and the ACS task of each running `tr069.*` command.
    withdrawals: Arc<withdraw::Withdrawals>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("free_slots", &self.inner.slots.available_permits())
            .finish()
    }
}

/// What happened to one command delivery (returned by [`serve_stream`], for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// The command ran; its result is in the outbox.
    Ran(CommandStatus),
    /// The id was already in the ledger: not run again.
    Duplicate,
    /// Deadline passed before it could start.
    Expired,
    /// Unknown command, bad arguments, or busy.
    Rejected(String),
    /// The stream was reset (bad frame) or broke before a command was read.
    BadStream(String),
}

impl Executor {
    /// An executor writing results to `outbox`. `runtime` applies `config.update` and provides the scan
    /// allowlist (without it, `config.update` fails and every scan is refused). First reports the commands
    /// interrupted by the previous run as failed ([`ledger::recover`]) and prunes old ledger entries. Command
    /// streams are served on `tracker` (so that shutdown waits for their results to be stored).
    pub async fn start(
        cfg: &CommandsSection,
        outbox: Outbox,
        runtime: Option<Arc<Runtime>>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Executor, crate::outbox::OutboxError> {
        let now = now_ms();
        let failed = ledger::recover(&outbox, now).await?;
        if !failed.is_empty() {
            tracing::warn!(
                count = failed.len(),
                "Commands interrupted by the last stop were reported failed."
            );
        }
        let ob = outbox.clone();
        match tokio::task::spawn_blocking(move || ledger::prune(&ob, now)).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(pruned = n, "Old command ledger entries removed."),
            Ok(Err(err)) => tracing::warn!(error = %err, "Cannot prune the command ledger."),
            _ => {}
        }
        Ok(Executor {
            inner: Arc::new(Inner {
                outbox,
                runtime,
                slots: Arc::new(Semaphore::new(cfg.max_concurrent.max(1))),
                queued: Arc::new(Semaphore::new(cfg.max_queued.max(1))),
                shutdown,
                tracker,
                uplink: Default::default(),
                withdrawals: Default::default(),
            }),
        })
    }

    /// Removes ledger entries older than the retention (the daemon calls it hourly).
    pub async fn prune(&self) {
        let ob = self.inner.outbox.clone();
        if let Ok(Err(err)) =
            tokio::task::spawn_blocking(move || ledger::prune(&ob, now_ms())).await
        {
            tracing::warn!(error = %err, "Cannot prune the command ledger.");
        }
    }

    /// Accepts command streams on `conn` until it closes or shutdown, serving each in its own task. A command
    /// outlives the connection it came on: its result goes to the outbox all the same.
    ///
    /// Streams are accepted in the order the control plane opened them (QUIC stream ids), and each command is
    /// admitted (ledger claim, local queue, place in line for a running slot) only after the previous stream's
    /// command was: commands start in the order they were sent.
    pub async fn accept_streams(&self, conn: quinn::Connection) {
        self.inner.uplink.set(conn.clone());
        let mut previous: Option<Admission> = None;
        loop {
            let accepted = tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                a = conn.accept_bi() => a,
            };
            let Ok((send, recv)) = accepted else {
                return;
            };
            let (admission, next) = Admission::after(previous.take());
            previous = Some(next);
            let exec = self.clone();
            self.inner.tracker.spawn(async move {
                let served = serve_stream_in_line(&exec, send, recv, admission).await;
                tracing::debug!(?served, "Command stream done.");
            });
        }
    }
}

/// A stream's place in its connection's line: it waits for the previous stream's command to be admitted, and
/// lets the next one go once its own is (or when dropped, whatever happened).
#[derive(Debug)]
pub struct Admission {
    previous: Option<tokio::sync::oneshot::Receiver<()>>,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Admission {
    /// The place after `previous` (the handle the previous place returned as `next`), and the handle the next
    /// place waits on.
    fn after(previous: Option<Admission>) -> (Admission, Admission) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waits_on = previous.and_then(|mut p| p.previous.take());
        (
            Admission {
                previous: waits_on,
                done: Some(tx),
            },
            Admission {
                previous: Some(rx),
                done: None,
            },
        )
    }

    /// No line (a stream served on its own).
    pub fn alone() -> Admission {
        Admission {
            previous: None,
            done: None,
        }
    }

    /// Waits for the previous place (at most `READ_TIMEOUT`: a stuck stream delays the next ones that long, not
    /// forever).
    async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            let _ = tokio::time::timeout(READ_TIMEOUT, previous).await;
        }
    }

    /// Lets the next place go.
    fn release(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

/// Serves one command stream: reads the `Command`, answers progress frames, writes the result to the outbox,
/// then finishes the stream. A malformed or oversize frame resets this stream only.
pub async fn serve_stream(exec: &Executor, send: SendStream, recv: RecvStream) -> Served {
    serve_stream_in_line(exec, send, recv, Admission::alone()).await
}

/// [`serve_stream`] holding a place in the connection's line of admissions.
async fn serve_stream_in_line(
    exec: &Executor,
    mut send: SendStream,
    mut recv: RecvStream,
    mut admission: Admission,
) -> Served {
    let limits = octoisp_shared::Limits {
        max_frame_bytes: MAX_COMMAND_FRAME,
        max_decompressed_bytes: MAX_COMMAND_FRAME * 4,
    };
    let cmd = match tokio::time::timeout(READ_TIMEOUT, wire::read_frame(&mut recv, &limits)).await {
        Ok(Ok(Message::Command(cmd))) => cmd,
        Ok(Ok(other)) => {
            return reset(
                &mut send,
                &mut recv,
                format!("expected a Command, got {}", kind(&other)),
            );
        }
        Ok(Err(err)) => return reset(&mut send, &mut recv, err.to_string()),
        Err(_) => return reset(&mut send, &mut recv, "no Command within 30 s".into()),
    };
    // The control plane finished its side; nothing more is read.
    let _ = recv.stop(VarInt::from_u32(0));
    admission.wait().await;
    let served = exec.handle(cmd, &mut send, admission).await;
    if let Served::BadStream(why) = &served {
        // Nothing was recorded for this delivery: reset, so the control plane delivers it again.
        tracing::warn!(reason = %why, "Command not accepted; resetting its stream.");
        let _ = send.reset(VarInt::from_u32(RESET_NOT_ACCEPTED));
    } else {
        let _ = send.finish();
    }
    served
}

fn reset(send: &mut SendStream, recv: &mut RecvStream, why: String) -> Served {
    tracing::warn!(reason = %why, "Bad command stream; resetting it.");
    let _ = send.reset(VarInt::from_u32(RESET_BAD_FRAME));
    let _ = recv.stop(VarInt::from_u32(RESET_BAD_FRAME));
    Served::BadStream(why)
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::Hello(_) => "Hello",
        Message::Welcome(_) => "Welcome",
        Message::Reject(_) => "Reject",
        Message::Enroll(_) => "Enroll",
        Message::Enrolled(_) => "Enrolled",
        Message::Batch(_) => "Batch",
        Message::Ack(_) => "Ack",
        Message::Nack(_) => "Nack",
        Message::Heartbeat(_) => "Heartbeat",
        Message::Command(_) => "Command",
        Message::CommandProgress(_) => "CommandProgress",
        Message::FirmwareFetch(_) => "FirmwareFetch",
        Message::FirmwareOffer(_) => "FirmwareOffer",
    }
}

/// Writes progress frames to one stream, seq from 0.
struct Frames<'a> {
    send: &'a mut SendStream,
    id: uuid::Uuid,
    seq: u32,
    broken: bool,
}

impl Frames<'_> {
    async fn write(&mut self, payload_json: String) {
        if self.broken {
            return;
        }
        let msg = Message::CommandProgress(CommandProgress {
            command_id: self.id,
            seq: self.seq,
            payload_json,
        });
        self.seq += 1;
        if let Err(err) = wire::write_message(self.send, &msg).await {
            // The stream is gone (control plane restarted, connection lost): the command goes on, its result
            // reaches the outbox all the same.
            tracing::debug!(command = %self.id, error = %err, "Progress stream broken.");
            self.broken = true;
        }
    }
}

impl Executor {
    async fn handle(
        &self,
        cmd: Command,
        send: &mut SendStream,
        mut admission: Admission,
    ) -> Served {
        let inner = &self.inner;
        let mut frames = Frames {
            send,
            id: cmd.id,
            seq: 0,
            broken: false,
        };
        let name: String = cmd.name.chars().take(MAX_NAME_LOGGED).collect();
        // Stopping: nothing is recorded and the stream is reset, so the control plane delivers the command again
        // (to this agent once it is back) instead of it failing for a restart it had no part in.
        if inner.shutdown.is_cancelled() {
            return Served::BadStream(SHUTTING_DOWN.into());
        }
        // At most once: the ledger entry is committed before anything else happens to this id.
        match ledger::claim(&inner.outbox, cmd.id, &name, now_ms()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(command = %cmd.id, name = %name, "Duplicate delivery; not run again.");
                frames.write(r#"{"state":"duplicate"}"#.into()).await;
                return Served::Duplicate;
            }
            Err(err) => {
                // Without a ledger entry the command cannot be run safely; the stream ends with no state frame
                // and the control plane delivers it again later.
                tracing::error!(command = %cmd.id, error = %err, "Cannot record the command in the ledger.");
                return Served::BadStream(format!("ledger: {err}"));
            }
        }
        let spec = octoisp_shared::commands::spec_of(&cmd.name);
        let args = match (spec, Args::parse(&cmd.name, &cmd.args_json)) {
            (Some(spec), Ok(args)) => (spec, args),
            (_, Err(err)) => {
                let error = match err {
                    CommandError::Unknown(n) => format!("unknown command {n:?}"),
                    CommandError::BadArgs(m) => format!("invalid arguments: {m}"),
                };
                return self
                    .refuse(
                        &mut frames,
                        &name,
                        "rejected",
                        CommandStatus::Rejected,
                        error,
                    )
                    .await;
            }
            (None, Ok(_)) => {
                let error = format!("unknown command {name:?}");
                return self
                    .refuse(
                        &mut frames,
                        &name,
                        "rejected",
                        CommandStatus::Rejected,
                        error,
                    )
                    .await;
            }
        };
        let (spec, args) = args;
        // A configuration document that would not apply is refused before it starts, like bad arguments.
        if let (Args::ConfigUpdate(a), Some(rt)) = (&args, &inner.runtime)
            && let Err(e) = rt.check(&a.config)
        {
            let error = format!("invalid arguments: {e}");
            return self
                .refuse(
                    &mut frames,
                    &name,
                    "rejected",
                    CommandStatus::Rejected,
                    error,
                )
                .await;
        }
        // A withdraw takes no place in the queue nor a running slot: it must not wait behind the commands it
        // withdraws. It only marks ids and deletes queued tasks.
        if let Args::Tr069Withdraw(a) = &args {
            admission.release();
            frames.write(r#"{"state":"started"}"#.into()).await;
            let acs = inner.runtime.as_ref().and_then(|r| r.acs());
            let (status, output, error) =
                match withdraw::run(&inner.withdrawals, acs, &a.commands).await {
                    Ok(v) => (CommandStatus::Succeeded, v.to_string(), None),
                    Err(e) => (CommandStatus::Failed, "{}".to_string(), Some(e)),
                };
            tracing::info!(command = %cmd.id, name = %name, ?status, "Command finished.");
            self.finish(cmd.id, &name, status, output, error).await;
            return Served::Ran(status);
        }
        // Bounded local queue, then a running slot.
        let Ok(queued) = inner.queued.clone().try_acquire_owned() else {
            let error =
                "busy: too many commands waiting on this agent (commands.max_queued)".to_string();
            return self
                .refuse(
                    &mut frames,
                    &name,
                    "rejected",
                    CommandStatus::Rejected,
                    error,
                )
                .await;
        };
        if now_ms() > cmd.deadline_ms {
            return self.expire(&mut frames, &name).await;
        }
        let wait = Duration::from_millis(
            u64::try_from(cmd.deadline_ms.saturating_sub(now_ms())).unwrap_or(0),
        )
        .min(Duration::from_secs(7 * 24 * 3600));
        // In line for a running slot (the semaphore is first come, first served) before the next stream's
        // command is admitted.
        let mut acquire = Box::pin(tokio::time::timeout(
            wait,
            inner.slots.clone().acquire_owned(),
        ));
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(acquire.as_mut(), cx))
        })
        .await;
        let slot = match first {
            // A free slot: the next command waits until this one has started.
            std::task::Poll::Ready(s) => s.ok().and_then(Result::ok),
            // In the slot line (first come, first served): the next one may queue behind.
            std::task::Poll::Pending => {
                admission.release();
                tokio::select! {
                    _ = inner.shutdown.cancelled() => None,
                    s = acquire => s.ok().and_then(Result::ok),
                }
            }
        };
        drop(queued);
        let Some(_slot) = slot else {
            if inner.shutdown.is_cancelled() {
                return self.not_started(cmd.id).await;
            }
            return self.expire(&mut frames, &name).await;
        };
        if now_ms() > cmd.deadline_ms {
            return self.expire(&mut frames, &name).await;
        }

        if inner.withdrawals.is_withdrawn(cmd.id) {
            let error = "withdrawn (tr069.withdraw) before it started".to_string();
            return self
                .refuse(
                    &mut frames,
                    &name,
                    "cancelled",
                    CommandStatus::Cancelled,
                    error,
                )
                .await;
        }
        if inner.shutdown.is_cancelled() {
            return self.not_started(cmd.id).await;
        }
        frames.write(r#"{"state":"started"}"#.into()).await;
        tracing::info!(command = %cmd.id, name = %name, "Command started.");
        admission.release();
        let timeout = Duration::from_secs(u64::from(
            args.timeout_secs().unwrap_or(spec.default_timeout_secs),
        ));
        let progress = Progress::new();
        let cancel = inner.shutdown.child_token();
        let ctx = run::Ctx {
            runtime: inner.runtime.clone(),
            progress: progress.clone(),
            cancel: cancel.clone(),
            timeout,
            uplink: inner.uplink.clone(),
            command: cmd.id,
            withdrawals: inner.withdrawals.clone(),
            withdrawn: Default::default(),
        };
        let work = async {
            let out = tokio::select! {
                r = tokio::time::timeout(timeout, run::run(&ctx, args)) => match r {
                    Ok(r) => r,
                    Err(_) => Err(format!("timed out after {} s", timeout.as_secs())),
                },
                _ = inner.shutdown.cancelled() => Err("cancelled: the agent is shutting down".into()),
            };
            cancel.cancel();
            progress.close();
            out
        };
        let pump = async {
            while let Some(p) = progress.next().await {
                frames.write(p).await;
            }
        };
        // Progress flows while the command runs; once it is over, what is queued gets FLUSH_TIMEOUT to reach
        // the stream (a stalled stream must not hold the result back).
        tokio::pin!(work);
        tokio::pin!(pump);
        let mut pumped = false;
        let outcome = loop {
            tokio::select! {
                o = &mut work => break o,
                _ = &mut pump, if !pumped => pumped = true,
            }
        };
        if !pumped {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, &mut pump).await;
        }
        inner.withdrawals.finished(cmd.id);
        let (status, output, error) = match outcome {
            Ok(v) => (CommandStatus::Succeeded, v.to_string(), None),
            Err(e) if ctx.withdrawn.load(std::sync::atomic::Ordering::Acquire) => {
                (CommandStatus::Cancelled, "{}".to_string(), Some(e))
            }
            Err(e) => (CommandStatus::Failed, "{}".to_string(), Some(e)),
        };
        tracing::info!(command = %cmd.id, name = %name, ?status, "Command finished.");
        self.finish(cmd.id, &name, status, output, error).await;
        Served::Ran(status)
    }

    async fn expire(&self, frames: &mut Frames<'_>, name: &str) -> Served {
        tracing::info!(command = %frames.id, name = %name, "Command deadline passed before it started.");
        frames.write(r#"{"state":"expired"}"#.into()).await;
        let error = "the deadline passed before the command could start".to_string();
        self.finish(
            frames.id,
            name,
            CommandStatus::Expired,
            "{}".into(),
            Some(error),
        )
        .await;
        Served::Expired
    }

    async fn refuse(
        &self,
        frames: &mut Frames<'_>,
        name: &str,
        state: &str,
        status: CommandStatus,
        error: String,
    ) -> Served {
        tracing::info!(command = %frames.id, name = %name, error = %error, "Command refused.");
        let frame = serde_json::json!({"state": state, "error": error}).to_string();
        frames.write(frame).await;
        self.finish(frames.id, name, status, "{}".into(), Some(error.clone()))
            .await;
        Served::Rejected(error)
    }

    /// A claimed command that will not start because the agent is stopping: its claim is taken back and its
    /// stream reset (no state frame), so the control plane delivers it again.
    async fn not_started(&self, id: uuid::Uuid) -> Served {
        ledger::release(&self.inner.outbox, id).await;
        Served::BadStream(SHUTTING_DOWN.into())
    }

    /// Writes the result and the ledger's `finished` entry in one outbox transaction.
    async fn finish(
        &self,
        id: uuid::Uuid,
        name: &str,
        status: CommandStatus,
        output_json: String,
        error: Option<String>,
    ) {
        let now = now_ms();
        let record = Record::CommandResult(CommandResult {
            command_id: id,
            ts_ms: now,
            status,
            output_json,
            error,
        });
        if let Err(err) = self
            .inner
            .outbox
            .append_records_with_state(vec![record], &ledger::key(id), &ledger::finished(name, now))
            .await
        {
            // The ledger still says `started`: the next start reports it failed (never re-runs it).
            tracing::error!(command = %id, error = %err, "Cannot store a command result.");
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    crate::monitors::ping::now_ms()
}
