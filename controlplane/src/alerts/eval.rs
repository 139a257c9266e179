//! The per-target state machine, pure: rules and samples in, transitions out; time is an argument (sample time in
//! milliseconds since the Unix epoch), nothing here touches a clock, a socket or the database.
//!
//! One [`TargetState`] exists per rule and target (a series, or a device for `offline`). Each observation is
//! classified: *bad* (the fire condition holds), *good* (the recovery condition holds) or neither (inside the
//! hysteresis band). A resting alert fires once bad observations have lasted `for`; a firing one resolves once
//! good ones have lasted `recover_for`. A NaN sample is a missed poll: by default it changes nothing.
//!
//! Flap detection follows Nagios: the last `window` observed states (bad = 1, good = 0, band = the previous
//! state) are kept; each change between neighbours is weighted from 0.8 (oldest) to 1.2 (newest); flapping
//! starts when the weighted changes exceed `high` percent of the possible ones and ends below `low`. The history
//! starts filled with the first observed state, so a lone transition never looks like flapping.
//!
//! Notifications of a target with flap detection are held while its state keeps changing, so that a flapping
//! series notifies once, not once per flap (as Alertmanager's grouping does in time, here in observations):
//!
//! - a transition of a settled target is notified at once (a normal fire or resolve) and opens an *episode*;
//! - during an episode, every further transition is recorded but held (`held`), and so is the `flapping` mark
//!   (the episode's first fire was its notification); a `flapping` mark that opens an episode (the observations
//!   flapped inside a `for` duration, no fire yet) is notified and opens it;
//! - the episode ends when the target is calm again: by a `flap_ended` (notified) when it was flapping, or by a
//!   [`Change::Settle`] after [`settle_observations`] observations without a state change, which notifies the
//!   current state only when it differs from the last one notified (a fire, a held resolve, then calm: one
//!   recovery; a fire, then calm while firing: nothing more).

use std::collections::VecDeque;

use uuid::Uuid;

/// Comparison of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    /// Parses `>`, `>=`, `<`, `<=`, `==`, `!=`.
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            _ => return None,
        })
    }

    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    /// `a op b`.
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
}

/// What a rule tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// `value op threshold` fires; recovery when `value op recover` no longer holds (`recover` = threshold when
    /// the rule has no recovery threshold).
    Threshold {
        /// The operator.
        op: Op,
        /// Fire threshold.
        threshold: f64,
        /// Recovery threshold (hysteresis).
        recover: f64,
    },
    /// Like `Threshold` on the rate of change per second between consecutive samples.
    Rate {
        /// The operator.
        op: Op,
        /// Fire threshold, per second.
        threshold: f64,
        /// Recovery threshold, per second.
        recover: f64,
    },
    /// Fires outside `[low, high]`, recovers inside `[low + hysteresis, high - hysteresis]`.
    Range {
        /// Lowest good value.
        low: f64,
        /// Highest good value.
        high: f64,
        /// Margin for recovery.
        hysteresis: f64,
    },
    /// Fires when no sample came for `after_ms` (driven by [`TargetState::check_absence`]); any sample is good.
    Absence {
        /// Silence that fires.
        after_ms: i64,
    },
}

/// What a NaN sample (a missed poll) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingData {
    /// Nothing: the alert keeps its state.
    Keep,
    /// A good observation.
    Resolve,
    /// A bad observation.
    Alert,
}

/// Flap detection settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlapSettings {
    /// States kept (3 to 100).
    pub window: usize,
    /// Flapping starts above this percentage of weighted changes.
    pub high: f64,
    /// Flapping ends below this percentage.
    pub low: f64,
}

/// The evaluation part of a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// What is tested.
    pub condition: Condition,
    /// How long bad observations must last before firing, ms.
    pub for_ms: i64,
    /// How long good observations must last before resolving, ms.
    pub recover_for_ms: i64,
    /// Meaning of a NaN sample.
    pub missing: MissingData,
    /// Flap detection, if enabled.
    pub flap: Option<FlapSettings>,
}

/// A transition of one target, at a sample time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// The alert fires.
    Fire {
        /// Sample time, ms.
        ts: i64,
        /// The value that fired it (NaN for absence).
        value: f64,
        /// Recorded but not notified: the target is flapping or has not settled since its last notification.
        held: bool,
    },
    /// The alert resolves.
    Resolve {
        /// Sample time, ms.
        ts: i64,
        /// The value that resolved it.
        value: f64,
        /// As for `Fire`.
        held: bool,
    },
    /// The target started flapping.
    FlapStart {
        /// Sample time, ms.
        ts: i64,
        /// Not notified: this episode has already notified (its first fire).
        held: bool,
    },
    /// The target stopped flapping (always notified: it carries the settled state).
    FlapEnd {
        /// Sample time, ms.
        ts: i64,
        /// Whether the alert is firing now.
        firing: bool,
    },
    /// The target settled after held transitions and is now in a state other than the last notified one:
    /// notify that state (the alert row already holds it).
    Settle {
        /// Sample time, ms.
        ts: i64,
        /// The state to notify.
        firing: bool,
    },
}

impl Change {
    /// Sample time of the change, ms.
    pub fn ts(self) -> i64 {
        match self {
            Change::Fire { ts, .. }
            | Change::Resolve { ts, .. }
            | Change::FlapStart { ts, .. }
            | Change::FlapEnd { ts, .. }
            | Change::Settle { ts, .. } => ts,
        }
    }

    /// Whether the change is recorded without notification (`suppressed = 'flapping'`).
    pub fn held(self) -> bool {
        match self {
            Change::Fire { held, .. }
            | Change::Resolve { held, .. }
            | Change::FlapStart { held, .. } => held,
            Change::FlapEnd { .. } | Change::Settle { .. } => false,
        }
    }
}

/// Calm observations after which a target with flap detection counts as settled: a quarter of the flap window,
/// at least 2 (6 for the default window of 21).
pub fn settle_observations(flap: FlapSettings) -> u32 {
    let window = flap.window.clamp(3, 100) as u32;
    window.div_ceil(4).max(2)
}

/// The state of one rule on one target.
#[derive(Debug, Clone)]
pub struct TargetState {
    /// The rule.
    pub rule_id: Uuid,
    /// Whether the alert is firing (as far as this instance knows).
    pub firing: bool,
    /// Whether the target is flapping.
    pub flapping: bool,
    /// Time of the newest sample taken, ms (`i64::MIN`: none yet).
    pub last_ts: i64,
    /// Value of the newest sample (for rates).
    pub last_value: f64,
    pending_since: Option<i64>,
    history: VecDeque<bool>,
    /// Observations since the observed state last changed (saturating).
    calm: u32,
    /// From a notified transition (or flap mark) until the target settles: further transitions are held.
    episode: bool,
    /// The state the last notification told (firing or not).
    told_firing: bool,
}

impl TargetState {
    /// A fresh state; `firing` when the database says the alert is open.
    pub fn new(rule_id: Uuid, firing: bool) -> TargetState {
        TargetState {
            rule_id,
            firing,
            flapping: false,
            last_ts: i64::MIN,
            last_value: f64::NAN,
            pending_since: None,
            history: VecDeque::new(),
            calm: u32::MAX,
            episode: false,
            told_firing: firing,
        }
    }

    /// Takes one sample; appends the resulting changes (flap changes first, then the transition) to `out`.
    /// Samples not newer than the last one taken are ignored (copies and replays).
    pub fn observe(&mut self, eval: &Evaluation, ts: i64, value: f64, out: &mut Vec<Change>) {
        if ts <= self.last_ts {
            return;
        }
        let previous = (self.last_ts, self.last_value);
        if value.is_nan() {
            // A missed poll: with `keep` it is as if it never came (it does not even count as seen).
            let obs = match eval.missing {
                MissingData::Keep => return,
                MissingData::Resolve => Some(false),
                MissingData::Alert => Some(true),
            };
            self.last_ts = ts;
            self.step(eval, ts, value, obs, out);
            return;
        }
        self.last_ts = ts;
        self.last_value = value;
        let obs = match eval.condition {
            Condition::Threshold {
                op,
                threshold,
                recover,
            } => classify(op, value, threshold, recover),
            Condition::Rate {
                op,
                threshold,
                recover,
            } => {
                let (pts, pv) = previous;
                if pts == i64::MIN || pv.is_nan() {
                    return;
                }
                let dt = (ts - pts) as f64 / 1000.0;
                classify(op, (value - pv) / dt, threshold, recover)
            }
            Condition::Range {
                low,
                high,
                hysteresis,
            } => {
                if value < low || value > high {
                    Some(true)
                } else if value >= low + hysteresis && value <= high - hysteresis {
                    Some(false)
                } else {
                    None
                }
            }
            Condition::Absence { .. } => Some(false),
        };
        self.step(eval, ts, value, obs, out);
    }

    /// For absence rules: when no sample came for the rule's silence by `now_ms`, observes a bad state at the
    /// deadline (`last_ts + after`, so that every instance computes the same transition time). `seen_ms` is the
    /// last time the target was seen when this state has taken no sample yet.
    pub fn check_absence(
        &mut self,
        eval: &Evaluation,
        now_ms: i64,
        seen_ms: i64,
        out: &mut Vec<Change>,
    ) {
        let Condition::Absence { after_ms } = eval.condition else {
            return;
        };
        if self.firing {
            return;
        }
        let seen = self.last_ts.max(seen_ms);
        let deadline = seen.saturating_add(after_ms);
        if now_ms < deadline {
            self.pending_since = None;
            return;
        }
        let since = *self.pending_since.get_or_insert(deadline);
        if now_ms.saturating_sub(since) >= eval.for_ms {
            let ts = since.saturating_add(eval.for_ms);
            self.pending_since = None;
            self.firing = true;
            out.push(Change::Fire {
                ts,
                value: f64::NAN,
                held: false,
            });
            self.told_firing = true;
        }
    }

    /// Forgets a pending transition (after the database refused it, the row being newer than our view).
    pub fn set_firing(&mut self, firing: bool) {
        self.firing = firing;
        self.pending_since = None;
    }

    fn step(
        &mut self,
        eval: &Evaluation,
        ts: i64,
        value: f64,
        obs: Option<bool>,
        out: &mut Vec<Change>,
    ) {
        if let Some(flap) = eval.flap {
            let state = obs.unwrap_or_else(|| self.history.back().copied().unwrap_or(self.firing));
            self.record(flap, state, ts, out);
        }
        let transition = if !self.firing {
            if obs == Some(true) {
                let since = *self.pending_since.get_or_insert(ts);
                (ts - since >= eval.for_ms).then_some(true)
            } else {
                self.pending_since = None;
                None
            }
        } else if obs == Some(false) {
            let since = *self.pending_since.get_or_insert(ts);
            (ts - since >= eval.recover_for_ms).then_some(false)
        } else {
            self.pending_since = None;
            None
        };
        if let Some(firing) = transition {
            self.set_firing(firing);
            let held = match eval.flap {
                None => false,
                Some(_) => self.hold(),
            };
            if !held {
                self.told_firing = firing;
            }
            out.push(if firing {
                Change::Fire { ts, value, held }
            } else {
                Change::Resolve { ts, value, held }
            });
        } else if let Some(flap) = eval.flap
            && self.episode
            && !self.flapping
            && self.calm >= settle_observations(flap)
        {
            // Settled after held transitions: tell the state if it is not the one last told.
            self.episode = false;
            if self.firing != self.told_firing {
                self.told_firing = self.firing;
                out.push(Change::Settle {
                    ts,
                    firing: self.firing,
                });
            }
        }
    }

    /// Whether a transition happening now is held (the target is flapping or inside an episode); a transition
    /// that is not held opens an episode.
    fn hold(&mut self) -> bool {
        let held = self.flapping || self.episode;
        self.episode = true;
        held
    }

    fn record(&mut self, flap: FlapSettings, state: bool, ts: i64, out: &mut Vec<Change>) {
        let window = flap.window.clamp(3, 100);
        if self.history.is_empty() {
            self.history.extend(std::iter::repeat_n(state, window));
        }
        if self.history.back() == Some(&state) {
            self.calm = self.calm.saturating_add(1);
        } else {
            self.calm = 0;
        }
        self.history.push_back(state);
        while self.history.len() > window {
            self.history.pop_front();
        }
        let pct = percent_state_change(&self.history);
        if !self.flapping && pct > flap.high {
            self.flapping = true;
            // A flap mark that opens an episode is its one notification; after a notified fire it is held.
            let held = self.episode;
            self.episode = true;
            out.push(Change::FlapStart { ts, held });
        } else if self.flapping && pct < flap.low {
            self.flapping = false;
            self.episode = false;
            self.told_firing = self.firing;
            out.push(Change::FlapEnd {
                ts,
                firing: self.firing,
            });
        }
    }
}

fn classify(op: Op, value: f64, threshold: f64, recover: f64) -> Option<bool> {
    if op.holds(value, threshold) {
        Some(true)
    } else if !op.holds(value, recover) {
        Some(false)
    } else {
        None
    }
}

/// Nagios' weighted percent state change of a history (oldest first).
pub fn percent_state_change(history: &VecDeque<bool>) -> f64 {
    let n = history.len();
    if n < 3 {
        return 0.0;
    }
    let changes = n - 1;
    let mut total = 0.0;
    for i in 0..changes {
        if history[i] != history[i + 1] {
            total += 0.8 + 0.4 * i as f64 / (changes - 1) as f64;
        }
    }
    total / changes as f64 * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threshold(for_ms: i64, recover: f64) -> Evaluation {
        Evaluation {
            condition: Condition::Threshold {
                op: Op::Gt,
                threshold: 90.0,
                recover,
            },
            for_ms,
            recover_for_ms: 0,
            missing: MissingData::Keep,
            flap: None,
        }
    }

    fn run(eval: &Evaluation, s: &mut TargetState, points: &[(i64, f64)]) -> Vec<Change> {
        let mut out = Vec::new();
        for (ts, v) in points {
            s.observe(eval, *ts, *v, &mut out);
        }
        out
    }

    #[test]
    fn fires_only_after_for_and_recovers_below_the_recovery_threshold() {
        let eval = threshold(60_000, 80.0);
        let mut s = TargetState::new(Uuid::nil(), false);
        let out = run(
            &eval,
            &mut s,
            &[(0, 95.0), (30_000, 95.0), (40_000, 50.0), (50_000, 95.0)],
        );
        assert!(out.is_empty(), "a dip restarts the `for` clock: {out:?}");
        let out = run(&eval, &mut s, &[(110_000, 96.0)]);
        assert_eq!(
            out,
            vec![Change::Fire {
                ts: 110_000,
                value: 96.0,
                held: false
            }]
        );
        let out = run(&eval, &mut s, &[(120_000, 85.0), (130_000, 81.0)]);
        assert!(out.is_empty(), "inside the band: still firing");
        let out = run(&eval, &mut s, &[(140_000, 79.0)]);
        assert_eq!(
            out,
            vec![Change::Resolve {
                ts: 140_000,
                value: 79.0,
                held: false
            }]
        );
    }

    #[test]
    fn a_nan_sample_keeps_the_state_by_default() {
        let eval = threshold(0, 90.0);
        let mut s = TargetState::new(Uuid::nil(), false);
        assert_eq!(run(&eval, &mut s, &[(1, 95.0)]).len(), 1);
        assert!(run(&eval, &mut s, &[(2, f64::NAN), (3, f64::NAN)]).is_empty());
        assert!(s.firing);
        let eval = Evaluation {
            missing: MissingData::Resolve,
            ..eval
        };
        let out = run(&eval, &mut s, &[(4, f64::NAN)]);
        assert!(
            matches!(out[..], [Change::Resolve { ts: 4, .. }]),
            "{out:?}"
        );
    }

    #[test]
    fn old_and_repeated_samples_are_ignored() {
        let eval = threshold(0, 90.0);
        let mut s = TargetState::new(Uuid::nil(), false);
        assert_eq!(run(&eval, &mut s, &[(10, 95.0)]).len(), 1);
        assert!(run(&eval, &mut s, &[(10, 10.0), (5, 10.0)]).is_empty());
    }

    #[test]
    fn alternating_values_flap_once_then_calm() {
        let eval = Evaluation {
            flap: Some(FlapSettings {
                window: 10,
                high: 50.0,
                low: 25.0,
            }),
            ..threshold(0, 90.0)
        };
        let mut s = TargetState::new(Uuid::nil(), false);
        let mut out = Vec::new();
        for i in 0..40 {
            s.observe(&eval, i, if i % 2 == 0 { 95.0 } else { 50.0 }, &mut out);
        }
        let starts = out
            .iter()
            .filter(|c| matches!(c, Change::FlapStart { .. }))
            .count();
        assert_eq!(starts, 1);
        assert!(s.flapping);
        out.clear();
        for i in 40..80 {
            s.observe(&eval, i, 95.0, &mut out);
        }
        assert_eq!(
            out.iter()
                .filter(|c| matches!(c, Change::FlapEnd { .. }))
                .count(),
            1
        );
        assert!(!s.flapping);
    }

    #[test]
    fn absence_fires_at_the_deadline() {
        let eval = Evaluation {
            condition: Condition::Absence { after_ms: 60_000 },
            for_ms: 0,
            recover_for_ms: 0,
            missing: MissingData::Keep,
            flap: None,
        };
        let mut s = TargetState::new(Uuid::nil(), false);
        let mut out = Vec::new();
        s.observe(&eval, 1_000, 1.0, &mut out);
        s.check_absence(&eval, 30_000, 0, &mut out);
        assert!(out.is_empty());
        s.check_absence(&eval, 90_000, 0, &mut out);
        assert!(matches!(out[..], [Change::Fire { ts: 61_000, .. }]));
        out.clear();
        s.observe(&eval, 95_000, 1.0, &mut out);
        assert!(matches!(out[..], [Change::Resolve { ts: 95_000, .. }]));
    }

    fn flapping_rule() -> Evaluation {
        Evaluation {
            flap: Some(FlapSettings {
                window: 10,
                high: 50.0,
                low: 25.0,
            }),
            ..threshold(0, 90.0)
        }
    }

    fn notified(out: &[Change]) -> Vec<Change> {
        out.iter().copied().filter(|c| !c.held()).collect()
    }

    #[test]
    fn a_flapping_series_notifies_its_first_fire_then_holds_until_it_settles() {
        let eval = flapping_rule();
        let mut s = TargetState::new(Uuid::nil(), false);
        let mut out = Vec::new();
        for i in 0..40 {
            s.observe(&eval, i, if i % 2 == 0 { 95.0 } else { 50.0 }, &mut out);
        }
        assert!(s.flapping);
        let told = notified(&out);
        assert!(
            matches!(told[..], [Change::Fire { ts: 0, .. }]),
            "one notification while flapping: {told:?}"
        );
        assert_eq!(
            out.iter()
                .filter(|c| matches!(c, Change::FlapStart { held: true, .. }))
                .count(),
            1,
            "the mark is recorded once: {out:?}"
        );
        out.clear();
        for i in 40..80 {
            s.observe(&eval, i, 50.0, &mut out);
        }
        assert!(
            matches!(out[..], [Change::FlapEnd { firing: false, .. }]),
            "one recovery when it settles: {out:?}"
        );
        // Settled: the next fire and resolve notify at once.
        out.clear();
        s.observe(&eval, 80, 95.0, &mut out);
        assert!(
            matches!(out[..], [Change::Fire { held: false, .. }]),
            "{out:?}"
        );
        out.clear();
        for i in 81..90 {
            s.observe(&eval, i, 95.0, &mut out);
        }
        s.observe(&eval, 90, 50.0, &mut out);
        assert!(
            matches!(out[..], [Change::Resolve { held: false, .. }]),
            "{out:?}"
        );
    }

    #[test]
    fn a_quick_resolve_is_held_then_told_once_calm() {
        let eval = flapping_rule();
        let mut s = TargetState::new(Uuid::nil(), false);
        let mut out = Vec::new();
        for (i, v) in [50.0, 95.0, 95.0, 50.0].into_iter().enumerate() {
            s.observe(&eval, i as i64, v, &mut out);
        }
        assert!(matches!(
            out[..],
            [
                Change::Fire { held: false, .. },
                Change::Resolve { held: true, .. }
            ]
        ));
        out.clear();
        for i in 4..20 {
            s.observe(&eval, i, 50.0, &mut out);
        }
        let settle = settle_observations(eval.flap.unwrap_or(FlapSettings {
            window: 10,
            high: 50.0,
            low: 25.0,
        }));
        assert_eq!(
            out,
            vec![Change::Settle {
                ts: 3 + i64::from(settle),
                firing: false
            }]
        );
    }

    #[test]
    fn a_series_flapping_inside_its_for_duration_notifies_the_mark_once() {
        let eval = Evaluation {
            for_ms: 1_000,
            ..flapping_rule()
        };
        let mut s = TargetState::new(Uuid::nil(), false);
        let mut out = Vec::new();
        for i in 0..40 {
            s.observe(&eval, i, if i % 2 == 0 { 95.0 } else { 50.0 }, &mut out);
        }
        assert!(
            matches!(notified(&out)[..], [Change::FlapStart { held: false, .. }]),
            "{out:?}"
        );
    }
}
