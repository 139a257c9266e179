//! Replays a rule over stored samples, as the engine would have evaluated them, to show what it would have fired
//! (the rule editor's preview, `POST /api/v1/alert-rules/preview`). Pure: samples and times in, intervals out.
//!
//! The replay drives the engine's own [`TargetState`] (so `for`, hysteresis, missing data and flap handling are
//! the engine's), one per target, starting from the resting state at the start of the range. Absence and offline
//! rules are driven as the engine's timer drives them: before each sample and at the end of the range, the state
//! is asked whether the silence so far fires ([`TargetState::check_absence`]); the start of the range counts as
//! the target's last sighting.

use uuid::Uuid;

use crate::alerts::eval::{Change, Condition, Evaluation, Op, TargetState};

/// One interval during which the alert would have been firing.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// Fire time (sample time), ms.
    pub start_ms: i64,
    /// Resolve time, ms; `None`: still firing at the end of the range.
    pub end_ms: Option<i64>,
    /// The worst value seen while firing (largest for `>`, smallest for `<`, farthest outside the range for
    /// optical, the rate for rate rules); `None` for absence and offline or when no value applies.
    pub worst: Option<f64>,
    /// The target was marked flapping during the interval.
    pub flapping: bool,
}

/// The replay of one rule on one target.
#[derive(Debug)]
pub struct Replay {
    eval: Evaluation,
    state: TargetState,
    from_ms: i64,
    max_intervals: usize,
    intervals: Vec<Interval>,
    open: Option<Interval>,
    left_out: u64,
    notifications: u64,
    changes: Vec<Change>,
    previous: Option<(i64, f64)>,
    /// Firing time of the closed intervals, ms.
    closed_ms: i64,
}

/// What a replay found.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayResult {
    /// The first `max_intervals` intervals, in time order.
    pub intervals: Vec<Interval>,
    /// Intervals after those.
    pub left_out: u64,
    /// Changes the engine would have notified (fires, resolves, flap marks not held).
    pub notifications: u64,
    /// Firing time inside the range, ms (all intervals, also those left out).
    pub firing_ms: i64,
}

impl Replay {
    /// A replay of `eval` from `from_ms`, keeping at most `max_intervals` intervals.
    pub fn new(eval: Evaluation, from_ms: i64, max_intervals: usize) -> Replay {
        Replay {
            eval,
            state: TargetState::new(Uuid::nil(), false),
            from_ms,
            max_intervals,
            intervals: Vec::new(),
            open: None,
            left_out: 0,
            notifications: 0,
            changes: Vec::new(),
            previous: None,
            closed_ms: 0,
        }
    }

    /// Takes the next sample of the target (samples in time order).
    pub fn sample(&mut self, ts_ms: i64, value: f64) {
        if matches!(self.eval.condition, Condition::Absence { .. }) {
            // The timer would have run just before this sample arrived.
            self.state.check_absence(
                &self.eval,
                ts_ms.saturating_sub(1),
                self.from_ms,
                &mut self.changes,
            );
            self.apply(None);
        }
        let seen = if value.is_nan() {
            None
        } else {
            self.observed_value(ts_ms, value)
        };
        self.state
            .observe(&self.eval, ts_ms, value, &mut self.changes);
        self.apply(seen);
        if self.state.firing
            && let (Some(open), Some(v)) = (self.open.as_mut(), seen)
        {
            open.worst = Some(worse(self.eval.condition, open.worst, v));
        }
    }

    /// Ends the replay at `to_ms` (absence rules fire if the silence at the end is long enough).
    pub fn finish(mut self, to_ms: i64) -> ReplayResult {
        if matches!(self.eval.condition, Condition::Absence { .. }) {
            self.state
                .check_absence(&self.eval, to_ms, self.from_ms, &mut self.changes);
            self.apply(None);
        }
        let mut firing_ms = self.closed_ms;
        if let Some(open) = self.open.take() {
            firing_ms += to_ms.saturating_sub(open.start_ms).max(0);
            self.push(open);
        }
        ReplayResult {
            intervals: self.intervals,
            left_out: self.left_out,
            notifications: self.notifications,
            firing_ms,
        }
    }

    /// The value the rule compares for this sample: the sample, or the rate since the previous one.
    fn observed_value(&mut self, ts_ms: i64, value: f64) -> Option<f64> {
        let previous = self.previous.replace((ts_ms, value));
        match self.eval.condition {
            Condition::Threshold { .. } | Condition::Range { .. } => Some(value),
            Condition::Rate { .. } => {
                let (pts, pv) = previous?;
                (ts_ms > pts).then(|| (value - pv) / ((ts_ms - pts) as f64 / 1000.0))
            }
            Condition::Absence { .. } => None,
        }
    }

    fn apply(&mut self, value: Option<f64>) {
        for change in std::mem::take(&mut self.changes) {
            if !change.held() {
                self.notifications += 1;
            }
            match change {
                Change::Fire { ts, .. } => {
                    if let Some(open) = self.open.take() {
                        self.close(open, ts);
                    }
                    self.open = Some(Interval {
                        start_ms: ts,
                        end_ms: None,
                        worst: value.map(|v| worse(self.eval.condition, None, v)),
                        flapping: self.state.flapping,
                    });
                }
                Change::Resolve { ts, .. } => {
                    if let Some(open) = self.open.take() {
                        self.close(open, ts);
                    }
                }
                Change::FlapStart { .. } => {
                    if let Some(open) = self.open.as_mut() {
                        open.flapping = true;
                    }
                }
                Change::FlapEnd { .. } | Change::Settle { .. } => {}
            }
        }
    }

    fn close(&mut self, mut open: Interval, ts: i64) {
        open.end_ms = Some(ts);
        self.closed_ms += ts.saturating_sub(open.start_ms).max(0);
        self.push(open);
    }

    fn push(&mut self, interval: Interval) {
        if self.intervals.len() < self.max_intervals {
            self.intervals.push(interval);
        } else {
            self.left_out += 1;
        }
    }
}

/// The worse of `current` and `v` for `condition`.
fn worse(condition: Condition, current: Option<f64>, v: f64) -> f64 {
    let Some(c) = current else { return v };
    match condition {
        Condition::Threshold { op, .. } | Condition::Rate { op, .. } => match op {
            Op::Gt | Op::Ge => c.max(v),
            Op::Lt | Op::Le => c.min(v),
            Op::Eq | Op::Ne => c,
        },
        Condition::Range { low, high, .. } => {
            let out = |x: f64| (low - x).max(x - high);
            if out(v) > out(c) { v } else { c }
        }
        Condition::Absence { .. } => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::eval::{FlapSettings, MissingData};

    fn threshold(for_ms: i64) -> Evaluation {
        Evaluation {
            condition: Condition::Threshold {
                op: Op::Gt,
                threshold: 90.0,
                recover: 80.0,
            },
            for_ms,
            recover_for_ms: 0,
            missing: MissingData::Keep,
            flap: None,
        }
    }

    fn replay(eval: Evaluation, points: &[(i64, f64)], to: i64) -> ReplayResult {
        let mut r = Replay::new(eval, 0, 10);
        for &(ts, v) in points {
            r.sample(ts, v);
        }
        r.finish(to)
    }

    #[test]
    fn intervals_follow_for_and_hysteresis_and_keep_the_worst_value() {
        let points = [
            (0, 50.0),
            (10, 95.0),
            (20, 97.0),
            (30, 85.0), // inside the band: still firing
            (40, 99.0),
            (50, 70.0), // resolves
            (60, 95.0),
            (70, 96.0),
        ];
        let out = replay(threshold(10), &points, 100);
        assert_eq!(
            out.intervals,
            vec![
                Interval {
                    start_ms: 20,
                    end_ms: Some(50),
                    worst: Some(99.0),
                    flapping: false
                },
                Interval {
                    start_ms: 70,
                    end_ms: None,
                    worst: Some(96.0),
                    flapping: false
                },
            ]
        );
        assert_eq!(out.firing_ms, 30 + 30);
        assert_eq!(out.notifications, 3);
    }

    #[test]
    fn a_gap_longer_than_the_absence_fires_at_the_deadline() {
        let eval = Evaluation {
            condition: Condition::Absence { after_ms: 100 },
            for_ms: 0,
            recover_for_ms: 0,
            missing: MissingData::Keep,
            flap: None,
        };
        let out = replay(eval.clone(), &[(50, 1.0), (120, 1.0), (400, 1.0)], 600);
        assert_eq!(
            out.intervals,
            vec![
                Interval {
                    start_ms: 220,
                    end_ms: Some(400),
                    worst: None,
                    flapping: false
                },
                Interval {
                    start_ms: 500,
                    end_ms: None,
                    worst: None,
                    flapping: false
                },
            ]
        );
        let silent = replay(eval, &[], 250);
        assert_eq!(
            silent.intervals.len(),
            1,
            "no sample at all since the start"
        );
        assert_eq!(silent.intervals[0].start_ms, 100);
    }

    #[test]
    fn intervals_past_the_cap_are_counted_not_kept() {
        let mut r = Replay::new(threshold(0), 0, 2);
        for i in 0..10 {
            r.sample(i * 2, 95.0);
            r.sample(i * 2 + 1, 50.0);
        }
        let out = r.finish(100);
        assert_eq!(out.intervals.len(), 2);
        assert_eq!(out.left_out, 8);
        assert_eq!(out.firing_ms, 10, "firing time counts every interval");
    }

    #[test]
    fn a_flapping_target_is_marked_and_rates_report_the_rate() {
        let eval = Evaluation {
            flap: Some(FlapSettings {
                window: 10,
                high: 50.0,
                low: 25.0,
            }),
            ..threshold(0)
        };
        let points: Vec<(i64, f64)> = (0..30)
            .map(|i| (i, if i % 2 == 0 { 95.0 } else { 50.0 }))
            .collect();
        let out = replay(eval, &points, 30);
        assert!(out.intervals.iter().any(|i| i.flapping), "{out:?}");
        assert!(
            out.notifications < 5,
            "held while flapping: {}",
            out.notifications
        );

        let rate = Evaluation {
            condition: Condition::Rate {
                op: Op::Gt,
                threshold: 10.0,
                recover: 10.0,
            },
            ..threshold(0)
        };
        let out = replay(rate, &[(0, 0.0), (1000, 50.0), (2000, 55.0)], 3000);
        assert_eq!(
            out.intervals,
            vec![Interval {
                start_ms: 1000,
                end_ms: Some(2000),
                worst: Some(50.0),
                flapping: false
            }]
        );
    }
}
