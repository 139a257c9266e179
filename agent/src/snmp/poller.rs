//! The scheduler: thousands of devices polled from one agent over one [`Engine`].
//!
//! - Each device runs on its own schedule (`interval`), starting at a random offset within the first interval
//!   (jitter), so polls spread evenly instead of bursting.
//! - A poll needs a permit: `max_concurrent` polls run at once, and `reserved_high` more permits exist that only
//!   `high` priority devices may take, so a flood of low-priority work never delays them.
//! - Inside a poll, at most `per_device_concurrency` requests go to the device at once.
//! - A poll has a time budget; when it runs out the poll is abandoned (its permit released), so a slow or dead
//!   device costs the others nothing but its own permit for its own budget.
//! - A device that does not answer is polled less often (interval x 2^failures, capped at `max_backoff`) and with
//!   no retries until it answers again; `snmp.unreachable` / `snmp.reachable` events mark the transitions.
//!
//! Reports go to a bounded channel; [`run_outbox_sink`] commits them to the outbox.

use std::sync::Arc;
use std::time::Duration;

use octoisp_shared::{Event, Inventory, MetricKind, Record, Sample, Severity};
use rand::Rng;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::{Session, SnmpError, Target};
use super::collect::{self, CollectConfig, DeviceState, PollReport};
use super::engine::{Engine, ExchangeError};
use super::fingerprint::Rules;
use super::profile::ProfileSet;
use crate::outbox::Outbox;

/// Priority class of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Core routers, OLTs: may use the reserved permits.
    High,
    /// Everything else.
    #[default]
    Normal,
}

/// One device to poll.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Device key (`snmp:ADDR`).
    pub key: String,
    /// How to reach it.
    pub target: Target,
    /// Time between polls.
    pub interval: Duration,
    /// Priority class.
    pub priority: Priority,
    /// Longest a poll may take.
    pub budget: Duration,
}

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    /// Polls running at once.
    pub max_concurrent: usize,
    /// Extra permits only high-priority devices may take.
    pub reserved_high: usize,
    /// Longest delay between polls of an unreachable device.
    pub max_backoff: Duration,
    /// Whether each device starts at a random offset within its first interval (off only in tests).
    pub start_jitter: bool,
    /// Per-poll settings.
    pub collect: CollectConfig,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            max_concurrent: 1000,
            reserved_high: 100,
            max_backoff: Duration::from_secs(600),
            start_jitter: true,
            collect: CollectConfig::default(),
        }
    }
}

/// The scheduler.
#[derive(Debug, Clone)]
pub struct Poller {
    engine: Engine,
    rules: &'static Rules,
    profiles: Arc<ProfileSet>,
    cfg: Arc<PollerConfig>,
    common: Arc<Semaphore>,
    high: Arc<Semaphore>,
    reports: mpsc::Sender<PollReport>,
}

/// Backoff after `failures` consecutive failed polls.
pub fn backoff(interval: Duration, failures: u32, max: Duration) -> Duration {
    if failures == 0 {
        return interval;
    }
    interval
        .saturating_mul(1u32 << failures.min(6))
        .min(max.max(interval))
}

impl Poller {
    /// A scheduler sending its reports to `reports`.
    pub fn new(
        engine: Engine,
        rules: &'static Rules,
        profiles: Arc<ProfileSet>,
        cfg: PollerConfig,
        reports: mpsc::Sender<PollReport>,
    ) -> Poller {
        Poller {
            engine,
            rules,
            profiles,
            common: Arc::new(Semaphore::new(cfg.max_concurrent.max(1))),
            high: Arc::new(Semaphore::new(cfg.reserved_high)),
            cfg: Arc::new(cfg),
            reports,
        }
    }

    /// Starts polling `spec` on `tracker` until `shutdown`.
    pub fn spawn(&self, spec: DeviceSpec, tracker: &TaskTracker, shutdown: CancellationToken) {
        let me = self.clone();
        tracker.spawn(async move { me.run_device(spec, shutdown).await });
    }

    async fn permit(&self, priority: Priority) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if priority == Priority::High {
            tokio::select! {
                p = self.high.clone().acquire_owned() => p.ok(),
                p = self.common.clone().acquire_owned() => p.ok(),
            }
        } else {
            self.common.clone().acquire_owned().await.ok()
        }
    }

    /// A device's life: wait for its time, poll, repeat. This future lives as long as the device (one per device,
    /// tens of thousands), so it holds only the schedule, the session and the state between polls; everything a
    /// poll needs while it runs is in [`Poller::poll_once`]'s future, boxed and freed when the poll ends.
    async fn run_device(self, spec: DeviceSpec, shutdown: CancellationToken) {
        let DeviceSpec {
            key,
            target,
            interval,
            priority,
            budget,
        } = spec;
        let mut device = Device {
            key,
            priority,
            budget,
            session: Session::new(self.engine.clone(), target),
            state: DeviceState::default(),
            failures: 0,
            reachable: None,
        };
        let jitter_ms = if self.cfg.start_jitter {
            rand::rng().random_range(0..=interval.as_millis().max(1) as u64)
        } else {
            0
        };
        let mut next = tokio::time::Instant::now() + Duration::from_millis(jitter_ms);
        let _scheduled = ScheduledGauge::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {}
            }
            let started = tokio::time::Instant::now();
            if !Box::pin(self.poll_once(&mut device, next, interval)).await {
                return;
            }
            next = started + backoff(interval, device.failures, self.cfg.max_backoff);
        }
    }

    /// One poll of `d` within its budget, its report sent; false when the poller is shutting down. `due`: when
    /// the poll should have started (a poll holding its permit more than a tenth of `interval` later is late).
    async fn poll_once(
        &self,
        d: &mut Device,
        due: tokio::time::Instant,
        interval: Duration,
    ) -> bool {
        let Some(permit) = self.permit(d.priority).await else {
            return false;
        };
        let polling = tokio::time::Instant::now();
        if polling.saturating_duration_since(due) > interval / 10 {
            metrics::counter!(POLLS_LATE).increment(1);
        }
        d.session
            .set_retries(if d.failures > 0 { Some(0) } else { None });
        let now_ms = crate::monitors::ping::now_ms();
        let result = tokio::time::timeout(
            d.budget,
            collect::poll(
                &d.session,
                &mut d.state,
                self.rules,
                &self.profiles,
                &self.cfg.collect,
                &d.key,
                now_ms,
            ),
        )
        .await;
        drop(permit);
        metrics::histogram!(POLL_SECONDS).record(polling.elapsed().as_secs_f64());
        metrics::counter!(POLLS, "result" => poll_result(&result)).increment(1);
        let mut report = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => failed(&d.key, now_ms, e.to_string()),
            Err(_) => failed(
                &d.key,
                now_ms,
                format!("poll exceeded its budget of {:?}", d.budget),
            ),
        };
        let ok = report.error.is_none();
        d.failures = if ok { 0 } else { d.failures.saturating_add(1) };
        if d.reachable.is_some_and(|was| was != ok) || (d.reachable.is_none() && !ok) {
            report.events.push(reachability_event(
                &d.key,
                now_ms,
                ok,
                report.error.as_deref(),
            ));
        }
        d.reachable = Some(ok);
        self.reports.send(report).await.is_ok()
    }
}

/// What the poller keeps for one device between polls.
struct Device {
    key: String,
    priority: Priority,
    budget: Duration,
    session: Session,
    state: DeviceState,
    failures: u32,
    reachable: Option<bool>,
}

/// Histogram of the time of one poll, seconds, from its permit to its report. Every metric is listed in
/// docs/OPERATIONS.md ("Prometheus metrics").
pub const POLL_SECONDS: &str = "octoisp_agent_snmp_poll_duration_seconds";
/// Counter of polls by `result`: `ok`, `timeout` (no answer, or the budget ran out), `error`.
pub const POLLS: &str = "octoisp_agent_snmp_polls_total";
/// Counter of polls that started more than a tenth of their interval late (waiting for a permit).
pub const POLLS_LATE: &str = "octoisp_agent_snmp_polls_late_total";
/// Gauge of devices on a schedule.
pub const DEVICES_SCHEDULED: &str = "octoisp_agent_snmp_devices_scheduled";

/// The `result` label of a finished poll.
fn poll_result<E>(r: &Result<Result<PollReport, SnmpError>, E>) -> &'static str {
    match r {
        Ok(Ok(report)) if report.error.is_none() => "ok",
        Ok(Err(SnmpError::Exchange(ExchangeError::Timeout { .. }))) | Err(_) => "timeout",
        _ => "error",
    }
}

/// Counts a device in [`DEVICES_SCHEDULED`] while its task runs.
struct ScheduledGauge;

impl ScheduledGauge {
    fn new() -> ScheduledGauge {
        metrics::gauge!(DEVICES_SCHEDULED).increment(1.0);
        ScheduledGauge
    }
}

impl Drop for ScheduledGauge {
    fn drop(&mut self) {
        metrics::gauge!(DEVICES_SCHEDULED).decrement(1.0);
    }
}

fn failed(key: &str, ts_ms: i64, error: String) -> PollReport {
    PollReport {
        device_key: key.to_owned(),
        ts_ms,
        metrics: Vec::new(),
        fingerprint: None,
        events: Vec::new(),
        error: Some(error),
        labels_walked: false,
    }
}

fn reachability_event(key: &str, ts_ms: i64, up: bool, error: Option<&str>) -> Event {
    Event {
        id: uuid::Uuid::now_v7(),
        ts_ms,
        device_key: Some(key.to_owned()),
        kind: if up {
            "snmp.reachable"
        } else {
            "snmp.unreachable"
        }
        .into(),
        severity: if up {
            Severity::Info
        } else {
            Severity::Critical
        },
        message: match error {
            Some(e) => format!("{key} does not answer SNMP: {e}"),
            None => format!("{key} answers SNMP again"),
        },
        attrs: Vec::new(),
    }
}

/// The inventory record of a fingerprinted device.
pub fn inventory(key: &str, ts_ms: i64, fp: &super::fingerprint::Fingerprint) -> Inventory {
    let mut attrs = Vec::new();
    for (k, v) in [
        ("sys_object_id", &fp.sys_object_id),
        ("sys_descr", &fp.sys_descr),
        ("sys_name", &fp.sys_name),
        ("os", &fp.os),
        ("enterprise", &fp.enterprise),
        ("rule", &fp.rule),
    ] {
        if let Some(v) = v {
            attrs.push((k.to_owned(), v.clone()));
        }
    }
    Inventory {
        ts_ms,
        device_key: key.to_owned(),
        vendor: fp.vendor.clone(),
        model: fp.model.clone(),
        firmware: fp.version.clone(),
        mgmt_ip: key.strip_prefix("snmp:").map(str::to_owned),
        attrs,
        ..Inventory::default()
    }
}

/// Commits poll reports to the outbox: metrics as gauge samples, fingerprints as inventory, events as events.
pub async fn run_outbox_sink(mut rx: mpsc::Receiver<PollReport>, outbox: Outbox) {
    while let Some(report) = rx.recv().await {
        let mut samples = Vec::with_capacity(report.metrics.len());
        for m in &report.metrics {
            match outbox.series_id(&report.device_key, &m.metric, &m.labels, MetricKind::Gauge) {
                Ok(series) => samples.push(Sample {
                    series,
                    ts_ms: report.ts_ms,
                    value: m.value,
                }),
                Err(err) => {
                    tracing::error!(device = %report.device_key, error = %err, "SNMP series not registered.")
                }
            }
        }
        if !samples.is_empty()
            && let Err(err) = outbox.append_samples(samples).await
        {
            tracing::error!(device = %report.device_key, error = %err, "SNMP samples not stored.");
        }
        let mut records: Vec<Record> = report.events.iter().cloned().map(Record::Event).collect();
        if let Some(fp) = &report.fingerprint {
            records.push(Record::Inventory(inventory(
                &report.device_key,
                report.ts_ms,
                fp,
            )));
        }
        if !records.is_empty()
            && let Err(err) = outbox.append_records(records).await
        {
            tracing::error!(device = %report.device_key, error = %err, "SNMP records not stored.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let i = Duration::from_secs(60);
        let max = Duration::from_secs(600);
        assert_eq!(backoff(i, 0, max), i);
        assert_eq!(backoff(i, 1, max), Duration::from_secs(120));
        assert_eq!(backoff(i, 3, max), Duration::from_secs(480));
        assert_eq!(backoff(i, 30, max), max);
    }
}
