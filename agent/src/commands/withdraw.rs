//! `tr069.withdraw`: the control plane takes back `tr069.*` commands whose TR-069 task no CPE session has
//! started yet (a firmware campaign paused or cancelled while its downloads wait for their CPEs).
//!
//! ```text
//! tr069.withdraw {commands} ── each id marked withdrawn (remembered for a day, bounded)
//!   ├─ command running here, its task still queued ──▶ task removed; that command ends `Cancelled`
//!   ├─ command running here, its task already sent to the CPE ──▶ left alone; it reports how it ends
//!   └─ command not here (yet) ──▶ when it arrives (or gets its running slot) it ends `Cancelled` at once
//! ```
//!
//! The withdraw itself takes no running slot, so it is never stuck behind the very commands it withdraws.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::acs::Acs;

/// How long a withdrawn id is remembered (longer than any command may wait for its deadline in practice).
const REMEMBER: Duration = Duration::from_secs(24 * 3600);
/// Most ids remembered; beyond it the oldest are forgotten.
const MAX_REMEMBERED: usize = 200_000;

/// The withdrawn command ids, and the ACS task of each running `tr069.*` command.
#[derive(Debug, Default)]
pub(super) struct Withdrawals {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    marked: HashMap<Uuid, Instant>,
    tasks: HashMap<Uuid, String>,
}

/// What a withdraw did to one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Its queued task was removed: it never reaches the CPE.
    Removed,
    /// Its task was already sent to the CPE (or finished): it goes on.
    InProgress,
    /// Not running here: refused if it arrives.
    NotHere,
}

impl Withdrawals {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `command` was withdrawn.
    pub(super) fn is_withdrawn(&self, command: Uuid) -> bool {
        self.lock().marked.contains_key(&command)
    }

    /// Records that `command` queued ACS task `task` (until [`Withdrawals::finished`]).
    pub(super) fn running(&self, command: Uuid, task: &str) {
        self.lock().tasks.insert(command, task.to_owned());
    }

    /// `command` ended.
    pub(super) fn finished(&self, command: Uuid) {
        self.lock().tasks.remove(&command);
    }

    fn mark(&self, commands: &[Uuid]) -> Vec<(Uuid, Option<String>)> {
        let now = Instant::now();
        let mut s = self.lock();
        s.marked.retain(|_, at| now.duration_since(*at) < REMEMBER);
        if s.marked.len() + commands.len() > MAX_REMEMBERED {
            let mut ages: Vec<Instant> = s.marked.values().copied().collect();
            ages.sort_unstable();
            let excess = s.marked.len() + commands.len() - MAX_REMEMBERED;
            if let Some(cut) = ages.get(excess.min(ages.len().saturating_sub(1))) {
                let cut = *cut;
                s.marked.retain(|_, at| *at > cut);
            }
        }
        commands
            .iter()
            .map(|c| {
                s.marked.insert(*c, now);
                (*c, s.tasks.get(c).cloned())
            })
            .collect()
    }
}

/// Runs a `tr069.withdraw`: marks `commands` withdrawn and removes the queued tasks of those running here.
pub(super) async fn run(
    withdrawals: &Withdrawals,
    acs: Option<std::sync::Arc<Acs>>,
    commands: &[Uuid],
) -> Result<Value, String> {
    let marked = withdrawals.mark(commands);
    let fates = tokio::task::spawn_blocking(move || {
        marked
            .into_iter()
            .map(|(command, task)| {
                let fate = match (task, &acs) {
                    (Some(task), Some(acs)) => match acs.cancel_queued_task(&task) {
                        Ok(true) => Fate::Removed,
                        Ok(false) => Fate::InProgress,
                        Err(err) => return Err(format!("ACS store: {err}")),
                    },
                    _ => Fate::NotHere,
                };
                Ok((command, fate))
            })
            .collect::<Result<Vec<_>, String>>()
    })
    .await
    .map_err(|e| format!("ACS store task failed: {e}"))??;
    let ids = |f: Fate| {
        fates
            .iter()
            .filter(|(_, x)| *x == f)
            .map(|(c, _)| c.to_string())
            .collect::<Vec<_>>()
    };
    Ok(json!({
        "removed": ids(Fate::Removed),
        "in_progress": ids(Fate::InProgress),
        "not_running": ids(Fate::NotHere),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_remembered_and_bounded() {
        let w = Withdrawals::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        w.running(a, "task-a");
        let marked = w.mark(&[a, b]);
        assert_eq!(marked, vec![(a, Some("task-a".into())), (b, None)]);
        assert!(w.is_withdrawn(a) && w.is_withdrawn(b));
        assert!(!w.is_withdrawn(Uuid::now_v7()));
        let many: Vec<Uuid> = (0..MAX_REMEMBERED).map(|_| Uuid::now_v7()).collect();
        w.mark(&many);
        assert!(w.lock().marked.len() <= MAX_REMEMBERED);
        assert!(w.is_withdrawn(many[MAX_REMEMBERED - 1]));
    }
}
