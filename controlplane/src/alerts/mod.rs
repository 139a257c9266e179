//! The alert engine: streaming evaluation of samples at ingest (issue 7).
//!
//! - [`eval`]: the per-target state machine (threshold, rate, range, absence; `for`, hysteresis, missing data,
//!   flap detection), pure: time is an argument.
//! - [`rules`]: a provider's configuration in memory (rules with scope precedence, silences, maintenance).
//! - [`engine`]: the task that takes [`crate::ingest::store::StoredSamples`] from the store through a bounded
//!   channel, caches per provider, runs the absence/offline timer and listens for configuration changes.
//! - [`preview`]: replays a rule over stored samples with the same state machine (the rule editor's preview).
//! - [`apply`]: transitions into PostgreSQL, conditional so that two instances never write the same event twice.
//!
//! The contract with the notifier is the table `alert_events` (migrations/0009_alerts.sql). See docs/ALERTS.md.

pub mod apply;
pub mod engine;
pub mod eval;
pub mod preview;
pub mod queue;
pub mod rules;

pub use engine::{
    Engine, EngineConfig, EngineError, EngineStats, LAST_SEEN_FLUSH_MS, SampleSender,
};
pub use queue::SampleReceiver;
