//! The command ledger: at most one execution per command id, across reconnects and restarts.
//!
//! Entries live in the outbox's `state` table under `cmd/<uuid>` (the same SQLite file and fsync as the results),
//! as JSON: `{"state":"started","name":...,"ts_ms":...}` written and committed *before* the command runs (an
//! insert that fails when the key exists: that is the duplicate check), then `{"state":"finished",...}` written
//! in the same transaction as the command's [`octoisp_shared::CommandResult`]. So:
//!
//! - a second delivery of an id finds the key and is answered `duplicate`, whatever state it is in;
//! - after a crash, an entry still `started` has no result: [`recover`] writes a `Failed` result ("interrupted by
//!   an agent restart") and marks it finished. Nothing is ever re-run; for `once_only` commands (reboot, factory
//!   reset, download) the message says it is not safe to repeat.
//! - entries older than [`RETENTION_MS`] are deleted by [`prune`] (the control plane never redelivers an id
//!   that old: its deadline passed long before).

use octoisp_shared::{CommandResult, CommandStatus, Record};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::outbox::{Outbox, OutboxError};

/// Key prefix of ledger entries in the outbox's state table.
pub const PREFIX: &str = "cmd/";
/// How long a ledger entry is kept: seven days.
pub const RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// `started` or `finished`.
    pub state: String,
    /// The command's name.
    pub name: String,
    /// When the entry was written, milliseconds since the Unix epoch.
    pub ts_ms: i64,
}

/// The key of command `id`.
pub fn key(id: Uuid) -> String {
    format!("{PREFIX}{id}")
}

/// Records that `id` starts, committed before it returns; `false` when the id is already in the ledger (a
/// duplicate).
pub async fn claim(
    outbox: &Outbox,
    id: Uuid,
    name: &str,
    now_ms: i64,
) -> Result<bool, OutboxError> {
    outbox
        .claim_state(&key(id), &encode("started", name, now_ms))
        .await
}

/// Takes back the claim of `id`, a command that did not start (the agent is shutting down): a later delivery
/// runs it. When the entry cannot be deleted it stays `started`, and [`recover`] reports the command failed at
/// the next start, as for any command cut short by a stop.
pub async fn release(outbox: &Outbox, id: Uuid) {
    let ob = outbox.clone();
    let done = tokio::task::spawn_blocking(move || ob.delete_states(&[key(id)])).await;
    if !matches!(done, Ok(Ok(()))) {
        tracing::warn!(command = %id, "Cannot take back the ledger entry of a command that did not start.");
    }
}

/// The `finished` entry of command `name` at `now_ms`, to store with its result.
pub fn finished(name: &str, now_ms: i64) -> String {
    encode("finished", name, now_ms)
}

/// The entry of `id`, if any. Blocking.
pub fn get(outbox: &Outbox, id: Uuid) -> Result<Option<Entry>, OutboxError> {
    Ok(outbox
        .state(&key(id))?
        .and_then(|v| serde_json::from_str(&v).ok()))
}

/// Writes a `Failed` result for every command that was started but never finished (the agent stopped while it
/// ran), and marks it finished. Returns the ids. Async because the result goes through the outbox writer.
pub async fn recover(outbox: &Outbox, now_ms: i64) -> Result<Vec<Uuid>, OutboxError> {
    let ob = outbox.clone();
    let entries = tokio::task::spawn_blocking(move || ob.states_with_prefix(PREFIX))
        .await
        .map_err(|e| OutboxError::Config(format!("ledger task failed: {e}")))??;
    let mut failed = Vec::new();
    for (k, v) in entries {
        let Some(id) = k.strip_prefix(PREFIX).and_then(|s| Uuid::parse_str(s).ok()) else {
            continue;
        };
        let entry: Entry = match serde_json::from_str(&v) {
            Ok(e) => e,
            Err(_) => Entry {
                state: "started".into(),
                name: "unknown".into(),
                ts_ms: now_ms,
            },
        };
        if entry.state != "started" {
            continue;
        }
        let once_only = octoisp_shared::commands::spec_of(&entry.name).is_some_and(|s| s.once_only);
        let error = if once_only {
            "interrupted by an agent restart; not re-run because it is not safe to repeat"
        } else {
            "interrupted by an agent restart; not re-run"
        };
        tracing::warn!(command = %id, name = %entry.name, "A command was interrupted by a restart; reporting it failed.");
        let result = Record::CommandResult(CommandResult {
            command_id: id,
            ts_ms: now_ms,
            status: CommandStatus::Failed,
            output_json: "{}".into(),
            error: Some(error.into()),
        });
        outbox
            .append_records_with_state(vec![result], &k, &finished(&entry.name, now_ms))
            .await?;
        failed.push(id);
    }
    Ok(failed)
}

/// Deletes finished entries older than [`RETENTION_MS`]. Returns how many. Blocking.
pub fn prune(outbox: &Outbox, now_ms: i64) -> Result<usize, OutboxError> {
    let old: Vec<String> = outbox
        .states_with_prefix(PREFIX)?
        .into_iter()
        .filter(|(_, v)| {
            serde_json::from_str::<Entry>(v)
                .is_ok_and(|e| e.state == "finished" && now_ms - e.ts_ms > RETENTION_MS)
        })
        .map(|(k, _)| k)
        .collect();
    outbox.delete_states(&old)?;
    Ok(old.len())
}

fn encode(state: &str, name: &str, ts_ms: i64) -> String {
    serde_json::to_string(&Entry {
        state: state.into(),
        name: name.into(),
        ts_ms,
    })
    .unwrap_or_default()
}
