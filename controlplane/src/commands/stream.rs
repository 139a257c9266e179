//! One command on one agent connection: open a bidirectional stream, send `Command`, read `CommandProgress`
//! until the agent finishes the stream, store progress in batches, and settle the queue job.
//!
//! Progress seq 0 is the agent's state answer (`started`, `duplicate`, `expired`, `rejected`); later frames are
//! command-specific JSON. The durable result comes separately, through the agent's outbox, and is what finishes
//! the command (`finish_from_results`); this module only completes the job when the row is already final, and
//! otherwise defers the job briefly so that a redelivery (answered `duplicate`) finds the result stored.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use octoisp_shared::frame::{self, Compression, FrameHeader, HEADER_LEN};
use octoisp_shared::{Command, CommandProgress, Limits, Message};
use uuid::Uuid;

use crate::commands::{Commands, is_final, now_ms, set_status, truncate};
use crate::db;

/// Largest progress frame accepted from an agent, bytes.
const MAX_PROGRESS_FRAME: usize = 256 * 1024;
/// Progress frames stored per insert at most.
const PROGRESS_BATCH: usize = 64;
/// Longest a progress frame waits before it is stored.
const PROGRESS_FLUSH: Duration = Duration::from_millis(100);
/// How long after a stream ends without a stored result the job is looked at again.
const RESULT_WAIT: Duration = Duration::from_secs(30);
/// Command frames with larger arguments are sent zstd-compressed (the agent reads either).
const COMPRESS_ABOVE: usize = 16 * 1024;
/// Extra time a stream may stay open past the command's own timeout.
const STREAM_GRACE: Duration = Duration::from_secs(30);

/// The job being served: its id, tenant and attempt (the queue fences on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobRef {
    /// Command id.
    pub id: Uuid,
    /// Tenant.
    pub provider_id: Uuid,
    /// Attempt of the lease.
    pub attempt: u32,
    /// The agent.
    pub agent_id: Uuid,
}

/// The parts of a command row dispatch needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CommandRow {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub provider_id: Uuid,
    /// Agent.
    pub agent_id: Uuid,
    /// POP.
    pub pop_id: Uuid,
    /// Name.
    pub name: String,
    /// Arguments.
    pub args: serde_json::Value,
    /// Status.
    pub status: String,
    /// Deadline to start.
    pub deadline: DateTime<Utc>,
}

/// Loads a command row in its tenant's transaction.
pub async fn load(cmds: &Commands, job: &JobRef) -> anyhow::Result<Option<CommandRow>> {
    load_with(cmds, job, false).await
}

/// Loads a command row about to be sent to its agent and, in the same statement, marks it `dispatched` (a
/// `running` one stays so) with the attempt, announcing the change: one round trip per command.
pub async fn load_for_dispatch(
    cmds: &Commands,
    job: &JobRef,
) -> anyhow::Result<Option<CommandRow>> {
    load_with(cmds, job, true).await
}

/// [`load_for_dispatch`] for many commands of one tenant in one statement: `(id, attempt)` pairs in, the rows
/// found out (by id).
pub async fn load_many_for_dispatch(
    cmds: &Commands,
    provider_id: Uuid,
    jobs: &[(Uuid, i32)],
) -> anyhow::Result<std::collections::HashMap<Uuid, CommandRow>> {
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.0).collect();
    let attempts: Vec<i32> = jobs.iter().map(|j| j.1).collect();
    let (ids, attempts) = super::sorted_by_id(&ids, &attempts);
    let mut tx = db::tenant_tx(&cmds.pool, provider_id).await?;
    // One primary-key lookup per id, in id order (see [`super::sorted_by_id`]).
    let rows: Vec<CommandRow> = sqlx::query_as(
        "WITH j AS MATERIALIZED (SELECT $1::uuid AS provider_id, * \
                      FROM unnest($2::uuid[], $3::int[]) AS j(id, attempt)), \
              c AS (SELECT c.id, c.provider_id, c.agent_id, c.pop_id, c.name, c.args, c.status, c.deadline \
                      FROM j JOIN commands c ON c.provider_id = j.provider_id AND c.id = j.id), \
              u AS (UPDATE commands c SET dispatched_at = now(), attempts = greatest(c.attempts, j.attempt), \
                      status = CASE WHEN c.status = 'running' THEN c.status ELSE 'dispatched' END \
                      FROM j WHERE c.provider_id = j.provider_id AND c.id = j.id \
                       AND c.status IN ('queued', 'waiting_agent', 'dispatched', 'running') RETURNING c.id), \
              n AS (SELECT pg_notify($4, json_build_object('provider_id', $1, 'status', 'dispatched', \
                      'command_ids', json_agg(id))::text) \
                      FROM (SELECT id, (row_number() OVER () - 1) / 150 AS k FROM u) x GROUP BY k) \
         SELECT c.* FROM c WHERE (SELECT count(*) FROM n) >= 0",
    )
    .bind(provider_id)
    .bind(&ids)
    .bind(&attempts)
    .bind(super::COMMAND_CHANNEL)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = std::collections::HashMap::with_capacity(rows.len());
    for mut r in rows {
        if r.name == super::agent_config::COMMAND && !super::is_final(&r.status) {
            r.args =
                super::agent_config::expand_args(&mut tx, r.provider_id, r.pop_id, &r.args).await?;
        }
        out.insert(r.id, r);
    }
    tx.commit().await?;
    Ok(out)
}

async fn load_with(
    cmds: &Commands,
    job: &JobRef,
    mark: bool,
) -> anyhow::Result<Option<CommandRow>> {
    let mut tx = db::tenant_tx(&cmds.pool, job.provider_id).await?;
    let mut row: Option<CommandRow> = if mark {
        sqlx::query_as(
            "WITH c AS (SELECT id, provider_id, agent_id, pop_id, name, args, status, deadline FROM commands \
                         WHERE provider_id = $1 AND id = $2), \
                  u AS (UPDATE commands SET dispatched_at = now(), attempts = greatest(attempts, $3), \
                          status = CASE WHEN status = 'running' THEN status ELSE 'dispatched' END \
                         WHERE provider_id = $1 AND id = $2 \
                           AND status IN ('queued', 'waiting_agent', 'dispatched', 'running') RETURNING id), \
                  n AS (SELECT pg_notify($4, json_build_object('provider_id', $1, 'command_id', $2, \
                          'status', 'dispatched')::text) FROM u) \
             SELECT c.* FROM c WHERE (SELECT count(*) FROM n) >= 0",
        )
        .bind(job.provider_id)
        .bind(job.id)
        .bind(job.attempt as i32)
        .bind(super::COMMAND_CHANNEL)
        .fetch_optional(&mut *tx)
        .await?
    } else {
        sqlx::query_as(
            "SELECT id, provider_id, agent_id, pop_id, name, args, status, deadline FROM commands \
             WHERE provider_id = $1 AND id = $2",
        )
        .bind(job.provider_id)
        .bind(job.id)
        .fetch_optional(&mut *tx)
        .await?
    };
    // A configuration push carries its version only: the document is read now.
    if let Some(r) = &mut row
        && r.name == super::agent_config::COMMAND
        && !super::is_final(&r.status)
    {
        r.args =
            super::agent_config::expand_args(&mut tx, r.provider_id, r.pop_id, &r.args).await?;
    }
    tx.commit().await?;
    Ok(row)
}

/// Sets a status in the command's tenant transaction.
pub async fn update_status(
    cmds: &Commands,
    provider_id: Uuid,
    id: Uuid,
    status: &str,
    error: Option<&str>,
) -> anyhow::Result<bool> {
    let mut tx = db::tenant_tx(&cmds.pool, provider_id).await?;
    let moved = set_status(&mut tx, provider_id, id, status, error).await?;
    tx.commit().await?;
    Ok(moved)
}

/// The row's current status.
async fn status_of(cmds: &Commands, job: &JobRef) -> anyhow::Result<Option<String>> {
    let mut tx = db::tenant_tx(&cmds.pool, job.provider_id).await?;
    let s = sqlx::query_scalar("SELECT status FROM commands WHERE provider_id = $1 AND id = $2")
        .bind(job.provider_id)
        .bind(job.id)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(s)
}

/// What the agent said in its state frame.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AgentState {
    Started,
    Duplicate,
    Expired,
    Rejected(String),
}

fn parse_state(payload: &str) -> Option<AgentState> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    match v.get("state")?.as_str()? {
        "started" => Some(AgentState::Started),
        "duplicate" => Some(AgentState::Duplicate),
        "expired" => Some(AgentState::Expired),
        "rejected" => Some(AgentState::Rejected(
            v.get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("refused by the agent")
                .to_owned(),
        )),
        _ => None,
    }
}

async fn read_message(
    recv: &mut quinn::RecvStream,
    limits: &Limits,
) -> Result<Option<Message>, String> {
    let mut head = [0u8; HEADER_LEN];
    match recv.read_exact(&mut head).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(err) => return Err(format!("reading the command stream: {err}")),
    }
    let header = FrameHeader::parse(&head, limits).map_err(|e| format!("bad frame: {e}"))?;
    let mut payload = vec![0u8; header.len as usize];
    recv.read_exact(&mut payload)
        .await
        .map_err(|e| format!("reading the command stream: {e}"))?;
    frame::decode_payload(&header, &payload, limits)
        .map(Some)
        .map_err(|e| format!("bad frame: {e}"))
}

/// Stores buffered progress frames and announces each one.
async fn flush(cmds: &Commands, job: &JobRef, buf: &mut Vec<(u32, serde_json::Value)>) {
    if buf.is_empty() {
        return;
    }
    let frames = std::mem::take(buf);
    let res: anyhow::Result<()> = async {
        let mut tx = db::tenant_tx(&cmds.pool, job.provider_id).await?;
        // The frames and their announcements (one per frame: a watcher reads each frame by its seq) in one
        // round trip.
        sqlx::query(
            "WITH i AS (INSERT INTO command_progress (provider_id, command_id, seq, payload) \
                        SELECT $1, $2, s, p FROM unnest($3::int[], $4::jsonb[]) AS u(s, p) \
                        ON CONFLICT DO NOTHING RETURNING seq), \
                  n AS (SELECT pg_notify($5, json_build_object('provider_id', $1, 'command_id', $2, \
                          'seq', seq)::text) FROM i) \
             SELECT count(*) FROM n",
        )
        .bind(job.provider_id)
        .bind(job.id)
        .bind(frames.iter().map(|(s, _)| *s as i32).collect::<Vec<_>>())
        .bind(frames.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>())
        .bind(super::COMMAND_CHANNEL)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
    .await;
    match res {
        Ok(()) => metrics::counter!("octoisp_command_progress_frames_total")
            .increment(frames.len() as u64),
        Err(err) => {
            tracing::warn!(command = %job.id, error = %err, "Cannot store command progress; frames dropped.")
        }
    }
}

/// How a stream ended, for the dispatcher's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The job was settled (completed, retried, deferred or dead-lettered).
    Settled(&'static str),
}

/// Runs `row` on `conn` for the lease `job`, keeping the lease alive while the stream is open.
pub async fn run(
    cmds: &Commands,
    conn: quinn::Connection,
    job: JobRef,
    row: CommandRow,
    mut slot: super::order::Dispatching,
) -> StreamEnd {
    let spec_timeout = octoisp_shared::commands::spec_of(&row.name)
        .map(|s| Duration::from_secs(u64::from(s.default_timeout_secs)))
        .unwrap_or(Duration::from_secs(600));
    // Keep the lease while the stream is open.
    let extender = {
        let (queue, every) = (cmds.queue.clone(), cmds.extend_every);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match queue.extend(job.id, job.attempt).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(err) => {
                        tracing::debug!(command = %job.id, error = %err, "Cannot extend the lease.")
                    }
                }
            }
        })
    };
    let _stop = AbortOnDrop(extender);

    let args_json = row.args.to_string();
    let msg = Message::Command(Command {
        id: row.id,
        deadline_ms: row.deadline.timestamp_millis(),
        name: row.name.clone(),
        args_json: args_json.clone(),
    });
    // Streams of one agent are opened in lease order (the agent admits them in stream order).
    // The dispatch slot bounds the work above (reading and marking rows), not the wait for the agent's line:
    // an agent with a long line must not hold the slots other tenants' commands need. The leases waiting in
    // line are bounded by the tenants' `queue.tenant_concurrency`.
    slot.permit = None;
    super::dispatch::wait_turn(cmds, &mut slot).await;
    let (mut send, mut recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(err) => {
            return retry(
                cmds,
                &job,
                &format!("cannot open a stream to the agent: {err}"),
            )
            .await;
        }
    };
    // Large arguments (a configuration with thousands of devices) travel compressed.
    let compression = if args_json.len() > COMPRESS_ABOVE {
        Compression::Zstd(3)
    } else {
        Compression::None
    };
    let bytes = match frame::encode(&msg, compression) {
        Ok(b) => b,
        Err(err) => {
            return dead(cmds, &job, &format!("cannot encode the command: {err}")).await;
        }
    };
    if let Err(err) = send.write_all(&bytes).await {
        return retry(cmds, &job, &format!("cannot send the command: {err}")).await;
    }
    let _ = send.finish();
    // Written: the agent's next command and another lease may go.
    slot.release();

    let limits = Limits {
        max_frame_bytes: MAX_PROGRESS_FRAME,
        max_decompressed_bytes: MAX_PROGRESS_FRAME * 4,
    };
    let until_deadline =
        Duration::from_millis((row.deadline.timestamp_millis() - now_ms()).max(0) as u64);
    let give_up = Instant::now() + until_deadline + spec_timeout + STREAM_GRACE;
    let mut state: Option<AgentState> = None;
    let mut buf: Vec<(u32, serde_json::Value)> = Vec::new();
    let mut last_flush = Instant::now();
    loop {
        let wait = if buf.is_empty() {
            give_up.saturating_duration_since(Instant::now())
        } else {
            PROGRESS_FLUSH
                .saturating_sub(last_flush.elapsed())
                .min(give_up.saturating_duration_since(Instant::now()))
        };
        let next = tokio::time::timeout(wait, read_message(&mut recv, &limits)).await;
        let msg = match next {
            Err(_) if !buf.is_empty() && Instant::now() < give_up => {
                flush(cmds, &job, &mut buf).await;
                last_flush = Instant::now();
                continue;
            }
            Err(_) => {
                flush(cmds, &job, &mut buf).await;
                let _ = recv.stop(quinn::VarInt::from_u32(2));
                return defer_for_result(
                    cmds,
                    &job,
                    "the agent's stream outlived the command's timeout",
                )
                .await;
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(m))) => m,
            Ok(Err(err)) => {
                flush(cmds, &job, &mut buf).await;
                return match state {
                    // Not started: nothing ran, a retry is safe (and a second delivery is answered `duplicate`).
                    None => retry(cmds, &job, &err).await,
                    // It runs (or ran) on the agent: its result comes through the outbox.
                    Some(_) => defer_for_result(cmds, &job, &err).await,
                };
            }
        };
        let Message::CommandProgress(CommandProgress {
            command_id,
            seq,
            payload_json,
        }) = msg
        else {
            tracing::info!(command = %job.id, "The agent sent something other than progress on a command stream.");
            continue;
        };
        if command_id != job.id {
            tracing::info!(command = %job.id, other = %command_id, "Progress for another command ignored.");
            continue;
        }
        if seq == 0 {
            let Some(s) = parse_state(&payload_json) else {
                tracing::info!(command = %job.id, "Unreadable state frame from the agent.");
                continue;
            };
            match &s {
                AgentState::Started => cmds.marks.running(job.provider_id, job.id).await,
                AgentState::Duplicate => {}
                AgentState::Expired => {
                    let _ = update_status(
                        cmds,
                        job.provider_id,
                        job.id,
                        "expired",
                        Some("the agent received the command after its deadline and did not start it"),
                    )
                    .await;
                }
                AgentState::Rejected(reason) => {
                    let why = format!("rejected by the agent: {}", truncate(reason, 1000));
                    let _ =
                        update_status(cmds, job.provider_id, job.id, "rejected", Some(&why)).await;
                }
            }
            state = Some(s);
            continue;
        }
        let payload = serde_json::from_str(&payload_json).unwrap_or_else(|_| {
            serde_json::Value::String(truncate(&payload_json, 60_000).to_owned())
        });
        buf.push((seq, payload));
        if buf.len() >= PROGRESS_BATCH || last_flush.elapsed() >= PROGRESS_FLUSH {
            flush(cmds, &job, &mut buf).await;
            last_flush = Instant::now();
        }
    }
    flush(cmds, &job, &mut buf).await;
    match state {
        None => {
            retry(
                cmds,
                &job,
                "the agent closed the command stream without a state",
            )
            .await
        }
        // The agent wrote the result to its outbox before it finished the stream: the result arrives with its
        // next batches, and ingest completes the job in whatever state it finds it. Deferring now costs no
        // database round trip; if the result is already stored (its job completed) the defer finds nothing.
        // Held a moment first (`super::waits`): the result usually comes within milliseconds and completes the
        // job, and then no defer is needed at all.
        Some(AgentState::Started) => {
            let until = now_ms() + RESULT_WAIT.as_millis() as i64;
            if cmds.waits.hold(job.id, job.attempt, until) {
                StreamEnd::Settled("deferred")
            } else {
                defer_for_result(cmds, &job, "result on its way through the outbox").await
            }
        }
        Some(_) => settle_if_final(cmds, &job).await,
    }
}

/// Completes the job when the row is final; otherwise waits for the result through the outbox.
async fn settle_if_final(cmds: &Commands, job: &JobRef) -> StreamEnd {
    match status_of(cmds, job).await {
        Ok(Some(s)) if is_final(&s) => {
            let _ = cmds.queue.complete(job.id, Some(job.attempt)).await;
            StreamEnd::Settled("completed")
        }
        Ok(None) => {
            let _ = cmds.queue.complete(job.id, Some(job.attempt)).await;
            StreamEnd::Settled("completed")
        }
        _ => defer_for_result(cmds, job, "result not stored yet").await,
    }
}

/// Defers the job so that it is looked at again once the agent's result had time to arrive.
async fn defer_for_result(cmds: &Commands, job: &JobRef, why: &str) -> StreamEnd {
    tracing::debug!(command = %job.id, reason = why, "Waiting for the command's result from the outbox.");
    let until = now_ms() + RESULT_WAIT.as_millis() as i64;
    if let Err(err) = cmds.queue.defer(job.id, job.attempt, until).await {
        tracing::warn!(command = %job.id, error = %err, "Cannot defer the job; its lease will be reclaimed.");
    }
    StreamEnd::Settled("deferred")
}

/// A transport failure before the agent started it: retry with backoff, or dead-letter.
pub(crate) async fn retry(cmds: &Commands, job: &JobRef, why: &str) -> StreamEnd {
    tracing::info!(command = %job.id, attempt = job.attempt, reason = why, "Command delivery failed; retrying.");
    match cmds.queue.retry(job.id, job.attempt, why).await {
        Ok(crate::queue::RetryOutcome::DeadLettered) => {
            let msg = format!("delivery failed {} times; last error: {why}", job.attempt);
            let _ = update_status(cmds, job.provider_id, job.id, "dead", Some(&msg)).await;
            StreamEnd::Settled("dead")
        }
        Ok(_) => StreamEnd::Settled("retried"),
        Err(err) => {
            tracing::warn!(command = %job.id, error = %err, "Cannot schedule a retry; the lease will be reclaimed.");
            StreamEnd::Settled("retried")
        }
    }
}

async fn dead(cmds: &Commands, job: &JobRef, why: &str) -> StreamEnd {
    let _ = cmds.queue.dead_letter(job.id, job.attempt, why).await;
    let _ = update_status(cmds, job.provider_id, job.id, "dead", Some(why)).await;
    StreamEnd::Settled("dead")
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_frames_are_read_or_ignored() {
        assert_eq!(
            parse_state(r#"{"state":"started"}"#),
            Some(AgentState::Started)
        );
        assert_eq!(
            parse_state(r#"{"state":"duplicate"}"#),
            Some(AgentState::Duplicate)
        );
        assert_eq!(
            parse_state(r#"{"state":"rejected","error":"no such target"}"#),
            Some(AgentState::Rejected("no such target".into()))
        );
        assert_eq!(parse_state(r#"{"state":"bogus"}"#), None);
        assert_eq!(parse_state("not json"), None);
    }
}
