//! The session of an enrolled agent: authorization against PostgreSQL, `Welcome`, heartbeats, batch streams.

use std::sync::Arc;
use std::time::{Duration, Instant};

use octoisp_shared::frame::{self, HEADER_LEN};
use octoisp_shared::{Ack, Batch, Message, Nack, NackCode, Reject, RejectCode, Welcome};
use quinn::{Connection, RecvStream, SendStream, VarInt};
use rustls_pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::enroll::version_message;
use super::wire::{
    ReadFrameError, message_name, open_control, read_frame, read_header, reject, write_message,
};
use super::{
    CLOSE_OK, CLOSE_PROTOCOL, CLOSE_REVOKED, CLOSE_SHUTDOWN, STREAM_MALFORMED, STREAM_REVOKED,
    STREAM_TIMEOUT, Shared,
};
use crate::ca;
use crate::ingest::store::{StoreError, StoreOutcome};
use crate::registry::{self, AgentRecord};

/// Checks the agent behind a certificate against PostgreSQL. `Err` carries the refusal.
async fn authorize(
    shared: &Shared,
    leaf: &CertificateDer<'_>,
) -> Result<AgentRecord, (RejectCode, String)> {
    let Some(agent_id) = ca::agent_id_from_cert(leaf) else {
        return Err((
            RejectCode::UnknownAgent,
            "the certificate names no agent (no urn:octoisp:agent URI)".into(),
        ));
    };
    let fingerprint = ca::cert_fingerprint_hex(leaf);
    let record = match registry::agent_identity(&shared.pool, agent_id).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            return Err((
                RejectCode::UnknownAgent,
                format!("agent {agent_id} is not known here"),
            ));
        }
        Err(err) => {
            tracing::warn!(agent = %agent_id, error = %err, "Cannot look the agent up in PostgreSQL.");
            return Err((
                RejectCode::Unavailable,
                "the control plane database is unavailable; retry later".into(),
            ));
        }
    };
    if record.revoked {
        return Err((
            RejectCode::Revoked,
            format!("agent {agent_id} was revoked: enroll it again with a new token"),
        ));
    }
    if !record.cert_fingerprint.eq_ignore_ascii_case(&fingerprint) {
        return Err((
            RejectCode::Revoked,
            format!("this certificate is not the current one of agent {agent_id}: enroll again"),
        ));
    }
    Ok(record)
}

pub(super) async fn agent_session(
    conn: Connection,
    leaf: CertificateDer<'static>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let Some((mut send, mut recv, first)) = open_control(&conn, &shared).await else {
        return;
    };
    let hello = match first {
        Ok(Message::Hello(hello)) => hello,
        Ok(Message::Enroll(_)) => {
            let msg =
                "this connection already has a client certificate: connect without one to enroll"
                    .to_string();
            return reject(&conn, &mut send, RejectCode::ProtocolError, msg).await;
        }
        Ok(other) => {
            let msg = format!(
                "expected Hello as the first message, got {}",
                message_name(&other)
            );
            return reject(&conn, &mut send, RejectCode::ProtocolError, msg).await;
        }
        Err(ReadFrameError::Decode(err)) => {
            return reject(
                &conn,
                &mut send,
                RejectCode::ProtocolError,
                format!("undecodable first message: {err}"),
            )
            .await;
        }
        Err(err) => {
            tracing::debug!(error = %err, "Control stream broke before its first message.");
            return;
        }
    };
    let agent = match authorize(&shared, &leaf).await {
        Ok(agent) => Arc::new(agent),
        Err((code, message)) => return reject(&conn, &mut send, code, message).await,
    };
    let span =
        tracing::info_span!("session", agent = %agent.agent_id, provider = %agent.provider_id);
    async {
        let Some(version) = octoisp_shared::negotiate_version(hello.version_min, hello.version_max) else {
            let msg = version_message(hello.version_min, hello.version_max);
            return reject(&conn, &mut send, RejectCode::UnsupportedVersion, msg).await;
        };
        let welcome = Message::Welcome(Welcome {
            version,
            agent_id: agent.agent_id,
            provider_id: agent.provider_id,
            pop_id: agent.pop_id,
            server_time_ms: chrono::Utc::now().timestamp_millis(),
            max_batch_bytes: shared.cfg.max_batch_bytes,
            max_in_flight: shared.cfg.max_in_flight,
            heartbeat_secs: shared.cfg.heartbeat_secs,
        });
        if let Err(err) = write_message(&mut send, &welcome).await {
            tracing::info!(error = %err, "Cannot send Welcome.");
            return;
        }
        tracing::info!(
            version, hostname = %hello.hostname, agent_version = %hello.agent_version, pop = %agent.pop_id,
            "Agent connected."
        );
        touch(&shared, &agent, &hello.hostname, &hello.agent_version).await;
        if let Some(cmds) = &shared.commands {
            crate::commands::dispatch::agent_connected(cmds, agent.provider_id, agent.agent_id, conn.clone())
                .await;
        }
        serve_agent(&conn, send, &mut recv, leaf, agent.clone(), shared.clone(), shutdown).await;
        if let Some(cmds) = &shared.commands {
            cmds.links.unregister(agent.agent_id, conn.stable_id()).await;
        }
    }
    .instrument(span)
    .await;
}

async fn touch(shared: &Shared, agent: &AgentRecord, hostname: &str, agent_version: &str) {
    if let Err(err) =
        registry::touch_agent(&shared.pool, agent.agent_id, hostname, agent_version).await
    {
        tracing::debug!(error = %err, "Cannot record the agent's last contact.");
    }
}

/// Tells a revoked agent why its connection closes; returns the close code and reason.
async fn revoke(control_send: &mut SendStream) -> (u32, &'static [u8]) {
    tracing::warn!("Agent revoked while connected; closing its connection.");
    let reply = Message::Reject(Reject {
        code: RejectCode::Revoked,
        message: "this agent was revoked".into(),
    });
    let _ = write_message(control_send, &reply).await;
    (CLOSE_REVOKED, b"revoked")
}

/// What a batch task needs besides its streams.
struct BatchContext {
    agent: Arc<AgentRecord>,
    fingerprint: Arc<str>,
    revoked_now: CancellationToken,
    shared: Arc<Shared>,
}

/// Serves batch streams and the control stream of an accepted agent until it leaves, is revoked, or shutdown.
async fn serve_agent(
    conn: &Connection,
    mut control_send: SendStream,
    control_recv: &mut RecvStream,
    leaf: CertificateDer<'static>,
    agent: Arc<AgentRecord>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let fingerprint: Arc<str> = ca::cert_fingerprint_hex(&leaf).into();
    let mut revoked = shared.revoked.subscribe();
    // Cancelled by a batch task when the store found the agent revoked before the revoked set did.
    let revoked_now = CancellationToken::new();
    let batches = TaskTracker::new();
    let control = read_control(control_recv, &shared, &agent);
    tokio::pin!(control);
    let (code, reason): (u32, &[u8]) = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break (CLOSE_SHUTDOWN, b"control plane shutting down"),
            end = &mut control => match end {
                ControlEnd::Finished => break (CLOSE_OK, b"bye"),
                ControlEnd::Broken => break (CLOSE_PROTOCOL, b"control stream broken"),
                ControlEnd::Lost => break (CLOSE_OK, b""),
            },
            changed = revoked.changed() => {
                if changed.is_ok() && revoked.borrow_and_update().contains(&*fingerprint) {
                    break revoke(&mut control_send).await;
                }
            }
            _ = revoked_now.cancelled() => break revoke(&mut control_send).await,
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let ctx = BatchContext {
                        agent: agent.clone(),
                        fingerprint: fingerprint.clone(),
                        revoked_now: revoked_now.clone(),
                        shared: shared.clone(),
                    };
                    batches.spawn(handle_batch(send, recv, ctx).in_current_span());
                }
                Err(err) => {
                    tracing::info!(reason = %err, "Agent connection ended.");
                    break (CLOSE_OK, b"");
                }
            },
        }
    };
    batches.close();
    if code == CLOSE_SHUTDOWN {
        // Let batches already being stored commit and be acknowledged; the agent resends the others.
        if tokio::time::timeout(shared.cfg.shutdown_grace, batches.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "Batches still in flight at the end of the grace period; the agent will resend them."
            );
        }
    }
    let _ = control_send.finish();
    conn.close(VarInt::from_u32(code), reason);
    if code != CLOSE_SHUTDOWN {
        // Stores already running finish (their transactions commit or roll back); their acks go nowhere and the
        // agent resends those batches, which are then acknowledged as duplicates.
        let _ = tokio::time::timeout(shared.cfg.shutdown_grace, batches.wait()).await;
    }
}

enum ControlEnd {
    /// The agent finished its control stream: it is leaving.
    Finished,
    /// The agent sent something that is not a heartbeat, or an undecodable frame.
    Broken,
    /// The stream or the connection broke.
    Lost,
}

/// How often a heartbeat updates the agent's `last_seen` (every heartbeat would be a write per agent per 15 s).
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// Reads heartbeats from the control stream until it ends.
async fn read_control(recv: &mut RecvStream, shared: &Shared, agent: &AgentRecord) -> ControlEnd {
    let mut last_touch = Instant::now();
    loop {
        match read_frame(recv, &shared.control_limits).await {
            Ok(Message::Heartbeat(hb)) => {
                tracing::debug!(
                    outbox_samples = hb.outbox_samples, outbox_bytes = hb.outbox_bytes,
                    oldest_ms = ?hb.oldest_ms, dropped = hb.samples_dropped_total, "Heartbeat."
                );
                metrics::counter!("octoisp_ingest_heartbeats_total").increment(1);
                if let Some(cmds) = &shared.commands {
                    // Keeps this instance named as the agent's holder for the dispatchers.
                    if let Err(err) = cmds.links.refresh(agent.agent_id).await {
                        tracing::debug!(error = %err, "Cannot refresh the agent's holder key.");
                    }
                }
                if last_touch.elapsed() < TOUCH_INTERVAL {
                    continue;
                }
                last_touch = Instant::now();
                if let Err(err) = registry::touch_agent(&shared.pool, agent.agent_id, "", "").await
                {
                    tracing::debug!(error = %err, "Cannot record the agent's last contact.");
                }
            }
            Ok(other) => {
                tracing::warn!(
                    message = message_name(&other),
                    "Unexpected message on the control stream; closing."
                );
                return ControlEnd::Broken;
            }
            Err(ReadFrameError::Finished) => return ControlEnd::Finished,
            Err(ReadFrameError::Decode(err)) => {
                tracing::warn!(error = %err, "Undecodable frame on the control stream; closing the connection.");
                return ControlEnd::Broken;
            }
            Err(ReadFrameError::Read(err)) => {
                tracing::debug!(error = %err, "Control stream ended.");
                return ControlEnd::Lost;
            }
        }
    }
}

/// Handles one batch stream: read one frame, store it, answer `Ack` or `Nack`, finish.
async fn handle_batch(mut send: SendStream, mut recv: RecvStream, ctx: BatchContext) {
    let BatchContext {
        agent,
        fingerprint,
        revoked_now,
        shared,
    } = ctx;
    let started = Instant::now();
    let read = async {
        let header = read_header(&mut recv, &shared.limits).await?;
        // Wait for room in the global buffer budget before reading the payload into memory.
        let permit = shared
            .buffered
            .clone()
            .acquire_many_owned(header.len.max(1))
            .await
            .map_err(|_| ReadFrameError::Finished)?;
        let mut payload = vec![0u8; header.len as usize];
        recv.read_exact(&mut payload).await?;
        let msg = frame::decode_payload(&header, &payload, &shared.limits)?;
        Ok::<_, ReadFrameError>((msg, header, permit))
    };
    let (msg, header, _permit) = match tokio::time::timeout(shared.cfg.frame_timeout, read).await {
        Ok(Ok(read)) => read,
        Ok(Err(ReadFrameError::Decode(err))) => {
            tracing::warn!(error = %err, "Refused a malformed frame on a batch stream.");
            let _ = recv.stop(VarInt::from_u32(STREAM_MALFORMED));
            return reply_nack(
                &mut send,
                0,
                NackCode::Malformed,
                format!("malformed frame: {err}"),
                0,
            )
            .await;
        }
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "Batch stream ended before a whole frame.");
            return;
        }
        Err(_) => {
            tracing::warn!(timeout = ?shared.cfg.frame_timeout, "A batch frame took too long to arrive; stream reset.");
            let _ = recv.stop(VarInt::from_u32(STREAM_TIMEOUT));
            let _ = send.reset(VarInt::from_u32(STREAM_TIMEOUT));
            return;
        }
    };
    metrics::counter!("octoisp_ingest_batches_received_total").increment(1);
    metrics::counter!("octoisp_ingest_bytes_received_total")
        .increment(u64::from(header.len) + HEADER_LEN as u64);
    let batch = match msg {
        Message::Batch(batch) => batch,
        Message::FirmwareFetch(req) => {
            drop(_permit);
            return super::firmware::serve(send, req, &agent, &shared).await;
        }
        other => {
            let msg = format!(
                "expected Batch on a batch stream, got {}",
                message_name(&other)
            );
            tracing::warn!(reason = %msg, "Refused a batch stream.");
            return reply_nack(&mut send, 0, NackCode::Malformed, msg, 0).await;
        }
    };
    let seq = batch.seq;
    let Some(reply) = store(&shared, &agent, &fingerprint, &batch).await else {
        tracing::info!(
            seq,
            "Batch of a revoked agent dropped unstored; stream reset."
        );
        let _ = send.reset(VarInt::from_u32(STREAM_REVOKED));
        revoked_now.cancel();
        return;
    };
    if let Message::Ack(_) = reply {
        metrics::histogram!("octoisp_ingest_batch_seconds").record(started.elapsed().as_secs_f64());
    }
    if let Err(err) = write_message(&mut send, &reply).await {
        tracing::debug!(seq, error = %err, "Cannot send the answer to a batch (the agent will resend it).");
        return;
    }
    let _ = send.finish();
}

/// Decodes the samples and stores the batch under the global writer semaphore; returns the answer, or `None`
/// when the agent's certificate was revoked meanwhile (nothing is stored for a revoked agent once the revoked set
/// knows it, even on a connection that is still closing).
async fn store(
    shared: &Shared,
    agent: &AgentRecord,
    fingerprint: &str,
    batch: &Batch,
) -> Option<Message> {
    let seq = batch.seq;
    let samples = match batch.samples.decode() {
        Ok(samples) => samples,
        Err(err) => {
            tracing::warn!(seq, error = %err, "Refused a batch with an invalid sample block.");
            return Some(nack(
                seq,
                NackCode::Malformed,
                format!("invalid sample block: {err}"),
                0,
            ));
        }
    };
    let waited = Instant::now();
    let Ok(_permit) = shared.writers.acquire().await else {
        return Some(nack(
            seq,
            NackCode::Retry,
            "control plane shutting down".into(),
            retry_after_ms(),
        ));
    };
    metrics::histogram!("octoisp_ingest_db_wait_seconds").record(waited.elapsed().as_secs_f64());
    if shared.revoked.borrow().contains(fingerprint) {
        return None;
    }
    let reply = match shared.store.store_batch(agent, batch, &samples).await {
        Ok(StoreOutcome::Stored { samples, records }) => {
            metrics::counter!("octoisp_ingest_batches_acked_total", "duplicate" => "false")
                .increment(1);
            metrics::counter!("octoisp_ingest_samples_total").increment(samples);
            metrics::counter!("octoisp_ingest_records_total").increment(records);
            tracing::debug!(seq, samples, records, "Batch stored.");
            Message::Ack(Ack {
                seq,
                duplicate: false,
            })
        }
        Ok(StoreOutcome::Duplicate) => {
            metrics::counter!("octoisp_ingest_batches_acked_total", "duplicate" => "true")
                .increment(1);
            tracing::debug!(seq, "Batch already stored (replay).");
            Message::Ack(Ack {
                seq,
                duplicate: true,
            })
        }
        Err(StoreError::UnknownSeries(ids)) => {
            tracing::debug!(
                seq,
                count = ids.len(),
                "Batch references unknown series; asking for definitions."
            );
            let msg = format!(
                "{} series unknown: resend with their definitions",
                ids.len()
            );
            nack(seq, NackCode::UnknownSeries(ids), msg, 0)
        }
        Err(StoreError::Malformed(msg)) => {
            tracing::warn!(seq, reason = %msg, "Refused an invalid batch.");
            nack(seq, NackCode::Malformed, msg, 0)
        }
        Err(StoreError::AgentRefused(msg)) => {
            // Revoked (or removed) while connected: the batch is fine and stays in the agent's outbox; no reply
            // resets the stream, and the caller closes the connection.
            tracing::warn!(seq, reason = %msg, "Batch of a refused agent; closing its connection.");
            return None;
        }
        Err(StoreError::StaleDevices(n)) => {
            tracing::info!(
                seq,
                devices = n,
                "Devices of a batch were deleted while storing it; the agent will retry."
            );
            nack(
                seq,
                NackCode::Retry,
                "devices of the batch were deleted meanwhile; retry".into(),
                retry_after_ms(),
            )
        }
        Err(StoreError::Transient(err)) => {
            tracing::warn!(seq, error = %err, "Cannot store a batch now; the agent will retry.");
            nack(
                seq,
                NackCode::Retry,
                "the database is unavailable; retry later".into(),
                retry_after_ms(),
            )
        }
    };
    Some(reply)
}

fn retry_after_ms() -> u32 {
    1000 + rand::random_range(0..1000)
}

fn nack(seq: u64, code: NackCode, message: String, retry_after_ms: u32) -> Message {
    let label = match &code {
        NackCode::Malformed => "malformed",
        NackCode::Retry => "retry",
        NackCode::UnknownSeries(_) => "unknown_series",
    };
    metrics::counter!("octoisp_ingest_batches_nacked_total", "code" => label).increment(1);
    Message::Nack(Nack {
        seq,
        code,
        message,
        retry_after_ms,
    })
}

async fn reply_nack(
    send: &mut SendStream,
    seq: u64,
    code: NackCode,
    message: String,
    retry_after_ms: u32,
) {
    let reply = nack(seq, code, message, retry_after_ms);
    if write_message(send, &reply).await.is_ok() {
        let _ = send.finish();
    }
}
