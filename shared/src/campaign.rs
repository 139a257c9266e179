//! Staged firmware rollouts: which devices to start next, and the stop rule that halts a campaign when too many
//! devices fail or do not come back. Pure (no I/O, time as an argument): the agent's ACS and the control plane's
//! campaigns both run it.

use std::collections::HashMap;

/// How one device of a campaign is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Download sent at this time (ms), no TransferComplete yet.
    InProgress(i64),
    /// Upgraded and back.
    Succeeded,
    /// Failed (a fault, or given up).
    Failed,
}

/// What a campaign should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start these devices (the next stage).
    Start(Vec<String>),
    /// Devices of the current stage have not finished.
    Wait,
    /// Stop: too many failures among the finished devices.
    Halt {
        /// Failed (including those that did not come back).
        failed: usize,
        /// Finished.
        finished: usize,
    },
    /// Every device finished; not halted.
    Done,
}

/// A staged rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    /// Devices, in rollout order.
    pub devices: Vec<String>,
    /// Cumulative stage sizes in percent, increasing, the last 100.
    pub stages_pct: Vec<u32>,
    /// Halt when more than this percentage of finished devices failed.
    pub max_failure_pct: f64,
    /// A device still in progress after this long counts as failed (did not come back).
    pub come_back_ms: i64,
}

impl Campaign {
    /// The next step, given the outcome of every started device.
    pub fn decide(&self, outcomes: &HashMap<String, Outcome>, now_ms: i64) -> Decision {
        let (mut failed, mut finished, mut running) = (0, 0, 0);
        for o in outcomes.values() {
            match o {
                Outcome::Succeeded => finished += 1,
                Outcome::Failed => {
                    finished += 1;
                    failed += 1;
                }
                Outcome::InProgress(t) if now_ms - t >= self.come_back_ms => {
                    finished += 1;
                    failed += 1;
                }
                Outcome::InProgress(_) => running += 1,
            }
        }
        if finished > 0 && failed as f64 * 100.0 > self.max_failure_pct * finished as f64 {
            return Decision::Halt { failed, finished };
        }
        if running > 0 {
            return Decision::Wait;
        }
        let started = outcomes.len();
        let n = self.devices.len();
        let next_total = self
            .stages_pct
            .iter()
            .map(|p| (n * (*p as usize)).div_ceil(100).min(n))
            .find(|t| *t > started);
        match next_total {
            Some(t) => Decision::Start(
                self.devices
                    .iter()
                    .filter(|d| !outcomes.contains_key(*d))
                    .take(t - started)
                    .cloned()
                    .collect(),
            ),
            None => Decision::Done,
        }
    }
}
