//! One poll of one device with its profiles: the scalars in one GET, each table in one multi-column walk, label
//! columns only when the cache is stale, counters turned into rates. Time is an argument, so tests can drive it.
//!
//! Label cache invalidation: the first poll; a reboot (sysUpTime went back); a change of ifNumber or
//! ifTableLastChange; a row index the cache does not know (labels are walked at the next poll); and an age limit
//! (`label_max_age`), for labels such as ifAlias that change without touching ifTableLastChange.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use octoisp_shared::{Event, Severity};

use super::ber::Oid;
use super::client::{Session, SnmpError};
use super::fingerprint::{self, Fingerprint, Rules};
use super::pdu::Value;
use super::profile::{self, MetricType, Profile, ProfileSet, Table};
use super::rate::{self, Reading, Width};

const SYS_UPTIME: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];
const IF_NUMBER: &[u32] = &[1, 3, 6, 1, 2, 1, 2, 1, 0];
const IF_TABLE_LAST_CHANGE: &[u32] = &[1, 3, 6, 1, 2, 1, 31, 1, 5, 0];

/// One metric value produced by a poll.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MetricValue {
    /// Metric name.
    pub metric: String,
    /// Labels (index labels and cached label columns).
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

/// What one poll produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PollReport {
    /// Device key (`snmp:ADDR`).
    pub device_key: String,
    /// Poll time, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Metrics.
    pub metrics: Vec<MetricValue>,
    /// The fingerprint when it was (re)computed in this poll.
    pub fingerprint: Option<Fingerprint>,
    /// Events (reboot, reachability).
    #[serde(skip)]
    pub events: Vec<Event>,
    /// Error, when the poll failed.
    pub error: Option<String>,
    /// Whether label columns were walked in this poll.
    pub labels_walked: bool,
}

/// Settings of a poll.
#[derive(Debug, Clone)]
pub struct CollectConfig {
    /// Requests to one device at once.
    pub per_device_concurrency: usize,
    /// Oldest label cache used.
    pub label_max_age: Duration,
}

impl Default for CollectConfig {
    fn default() -> Self {
        CollectConfig {
            per_device_concurrency: 2,
            label_max_age: Duration::from_secs(3600),
        }
    }
}

/// Separates the label values of a cached row. [`label_text`] never produces it (control characters are
/// hex-encoded), so it cannot be confused with a value.
const LABEL_SEP: char = '\u{1f}';
/// Stands for a label the device did not return for a row.
const LABEL_ABSENT: &str = "\u{1e}";

/// The label columns of one table, per row: the values in the order of the table's `labels`, joined by
/// [`LABEL_SEP`] in one string (the names live once, in the profile). Rows sorted by the hash of their index.
#[derive(Debug, Default, Clone)]
struct LabelCache {
    rows: Vec<(u64, Box<str>)>,
}

impl LabelCache {
    fn get(&self, idx: &[u32]) -> Option<&str> {
        let k = key_of(idx);
        let i = self.rows.binary_search_by_key(&k, |r| r.0).ok()?;
        self.rows.get(i).map(|r| &*r.1)
    }
}

/// A 64-bit key for `parts` (a metric name and a row index): per-device maps keep this instead of the strings and
/// index vectors (collisions among a device's few hundred keys are negligible at 64 bits).
fn key_of(idx: &[u32]) -> u64 {
    use std::hash::{Hash, Hasher};
    // DefaultHasher::new() has fixed keys: the same key in every process, which the state does not need but
    // makes it reproducible.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    idx.hash(&mut h);
    h.finish()
}

fn metric_key(metric: &str, idx: &[u32]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    metric.hash(&mut h);
    idx.hash(&mut h);
    h.finish()
}

/// The last reading of one counter.
#[derive(Debug, Clone, Copy)]
struct Kept {
    key: u64,
    value: u64,
    at_ms: i64,
}

/// What the poller remembers about a device between polls. Kept compact, since an agent holds one per device
/// (tens of thousands): label values packed per row, counters and column choices keyed by 64-bit hashes in
/// sorted vectors (see docs/SNMP.md, "Memory").
#[derive(Debug, Default)]
pub struct DeviceState {
    fingerprint: Option<Box<Fingerprint>>,
    profiles: Vec<Arc<Profile>>,
    labels: Vec<(Box<str>, LabelCache)>,
    labels_at_ms: Option<i64>,
    labels_stale: bool,
    /// Last reading per (metric, row index), sorted by [`metric_key`]. A reboot clears them, so a reading needs
    /// no sysUpTime of its own.
    counters: Vec<Kept>,
    last_uptime: Option<(u32, i64)>,
    if_signature: Option<(Option<i64>, Option<i64>)>,
    /// Per metric name ([`metric_key`] with no index): true = the fallback column is used, false = the main one.
    /// Absent = not known yet.
    column_choice: Vec<(u64, bool)>,
    refingerprint: bool,
}

impl DeviceState {
    /// The device's fingerprint, once known.
    pub fn fingerprint(&self) -> Option<&Fingerprint> {
        self.fingerprint.as_deref()
    }

    fn choice(&self, metric: &str) -> Option<bool> {
        let k = metric_key(metric, &[]);
        let i = self.column_choice.binary_search_by_key(&k, |c| c.0).ok()?;
        self.column_choice.get(i).map(|c| c.1)
    }

    fn label_cache(&self, table: &str) -> Option<&LabelCache> {
        self.labels
            .iter()
            .find(|(name, _)| &**name == table)
            .map(|(_, c)| c)
    }

    /// Names of the profiles applied.
    pub fn profile_names(&self) -> Vec<String> {
        self.profiles.iter().map(|p| p.name.clone()).collect()
    }
}

/// A label's text: strings as text when they are UTF-8 without control characters (so `Cliente São José` stays
/// readable), otherwise hex (MAC addresses, binary indexes).
fn label_text(v: &Value) -> String {
    match v {
        Value::OctetString(b)
            if std::str::from_utf8(b)
                .map_or(true, |s| s.chars().any(|c| c.is_control() && c != '\0')) =>
        {
            hex::encode_upper(b)
        }
        Value::OctetString(_) | Value::Oid(_) => v.as_text().unwrap_or_default(),
        Value::IpAddress(a) => std::net::Ipv4Addr::from(*a).to_string(),
        other => other.as_f64().map(|f| f.to_string()).unwrap_or_default(),
    }
}

/// Polls the device once at wall time `now_ms`.
pub async fn poll(
    session: &Session,
    state: &mut DeviceState,
    rules: &Rules,
    profiles: &ProfileSet,
    cfg: &CollectConfig,
    device_key: &str,
    now_ms: i64,
) -> Result<PollReport, SnmpError> {
    let mut report = PollReport {
        device_key: device_key.to_owned(),
        ts_ms: now_ms,
        metrics: Vec::new(),
        fingerprint: None,
        events: Vec::new(),
        error: None,
        labels_walked: false,
    };
    if state.fingerprint.is_none() || state.refingerprint {
        let fp = fingerprint::fingerprint(session, rules).await?;
        state.profiles = profiles.for_device(&fp);
        if state.fingerprint.as_deref() != Some(&fp) {
            report.fingerprint = Some(fp.clone());
        }
        state.fingerprint = Some(Box::new(fp));
        state.refingerprint = false;
    }

    // Scalars and change signals in one GET.
    let mut oids = vec![
        Oid(SYS_UPTIME.to_vec()),
        Oid(IF_NUMBER.to_vec()),
        Oid(IF_TABLE_LAST_CHANGE.to_vec()),
    ];
    for p in &state.profiles {
        for s in &p.scalars {
            if !oids.contains(&s.oid) {
                oids.push(s.oid.clone());
            }
        }
    }
    let values = get_tolerant(session, &oids).await?;
    let uptime = values
        .get(&oids[0])
        .and_then(Value::as_u64)
        .map(|v| v as u32);
    let num = |o: &Oid| values.get(o).and_then(Value::as_f64).map(|f| f as i64);
    let signature = (num(&oids[1]), num(&oids[2]));

    if let (Some((prev, prev_ms)), Some(cur)) = (state.last_uptime, uptime)
        && rate::rebooted(prev, cur, now_ms - prev_ms)
    {
        state.labels.clear();
        state.counters.clear();
        state.refingerprint = true;
        report.events.push(Event {
            id: uuid::Uuid::now_v7(),
            ts_ms: now_ms,
            device_key: Some(device_key.to_owned()),
            kind: "snmp.reboot".into(),
            severity: Severity::Warning,
            message: format!(
                "{} restarted (sysUpTime {} s)",
                session.target().addr,
                cur / 100
            ),
            attrs: vec![("uptime_ticks".into(), cur.to_string())],
        });
    }
    if let Some(u) = uptime {
        state.last_uptime = Some((u, now_ms));
    }
    if state.if_signature.is_some_and(|s| s != signature)
        || state.labels_stale
        || state
            .labels_at_ms
            .is_none_or(|t| now_ms - t > cfg.label_max_age.as_millis() as i64)
    {
        state.labels.clear();
    }
    state.if_signature = Some(signature);
    state.labels_stale = false;

    let applied = state.profiles.clone();
    for p in &applied {
        for s in &p.scalars {
            let Some(raw) = values.get(&s.oid) else {
                continue;
            };
            if s.kind == MetricType::Rate {
                if let Some(v) = counter_rate(state, &s.metric, &[], raw, now_ms, None) {
                    report.metrics.push(MetricValue {
                        metric: s.metric.clone(),
                        labels: Vec::new(),
                        value: v * s.scale,
                    });
                }
            } else if let Some(v) = raw
                .as_f64()
                .and_then(|r| profile::convert(r, s.offset, s.scale, &s.skip))
            {
                report.metrics.push(MetricValue {
                    metric: s.metric.clone(),
                    labels: Vec::new(),
                    value: v,
                });
            }
        }
    }

    // Tables: one multi-column walk each, a few at once.
    let tables: Vec<Table> = state
        .profiles
        .iter()
        .flat_map(|p| p.tables.iter().cloned())
        .collect();
    let walk_labels = state.labels.is_empty();
    report.labels_walked = walk_labels;
    let plans: Vec<(Table, Vec<Oid>)> = tables
        .into_iter()
        .map(|t| {
            let cols = columns_of(&t, state, walk_labels);
            (t, cols)
        })
        .collect();
    use futures::StreamExt;
    let futs: Vec<_> = plans
        .iter()
        .map(|(t, cols)| walk_table(session, t, cols))
        .collect();
    let walks: Vec<_> = futures::stream::iter(futs)
        .buffered(cfg.per_device_concurrency.max(1))
        .collect()
        .await;
    let mut first_err = None;
    for (table, cols, result) in walks {
        match result {
            Ok(rows) => collect_table(state, table, cols, &rows, walk_labels, now_ms, &mut report),
            Err(e) if e.is_auth() => return Err(e),
            Err(e) => {
                tracing::debug!(device = device_key, table = %table.name, error = %e, "Table walk failed.");
                first_err.get_or_insert(e);
            }
        }
    }
    if walk_labels {
        state.labels_at_ms = Some(now_ms);
    }
    // The counter set is complete after the first poll: give back what growth over-allocated.
    if state.counters.capacity() > state.counters.len() + state.counters.len() / 4 + 4 {
        state.counters.shrink_to_fit();
    }
    if report.metrics.is_empty()
        && let Some(e) = first_err
    {
        return Err(e);
    }
    Ok(report)
}

type Walked<'a> = (
    &'a Table,
    &'a [Oid],
    Result<BTreeMap<Vec<u32>, Vec<Option<Value>>>, SnmpError>,
);

async fn walk_table<'a>(session: &Session, t: &'a Table, cols: &'a [Oid]) -> Walked<'a> {
    (t, cols, session.walk_columns(cols).await)
}

/// GET of `oids`; when a v1 agent refuses the whole GET for one missing OID, one GET per OID.
async fn get_tolerant(session: &Session, oids: &[Oid]) -> Result<HashMap<Oid, Value>, SnmpError> {
    match session.get(oids).await {
        Ok(vbs) => Ok(vbs
            .into_iter()
            .filter(|v| !v.value.is_exception())
            .map(|v| (v.oid, v.value))
            .collect()),
        Err(SnmpError::Status { .. }) => {
            let mut out = HashMap::new();
            for o in oids {
                if let Ok(vbs) = session.get(std::slice::from_ref(o)).await {
                    out.extend(
                        vbs.into_iter()
                            .filter(|v| !v.value.is_exception())
                            .map(|v| (v.oid, v.value)),
                    );
                }
            }
            Ok(out)
        }
        Err(e) => Err(e),
    }
}

fn columns_of(t: &Table, state: &DeviceState, with_labels: bool) -> Vec<Oid> {
    let mut cols: Vec<Oid> = Vec::new();
    let mut add = |o: &Oid| {
        if !cols.contains(o) {
            cols.push(o.clone());
        }
    };
    if with_labels {
        for l in &t.labels {
            add(&l.oid);
        }
    }
    for m in &t.metrics {
        match (state.choice(&m.metric), &m.fallback_oid) {
            (Some(true), Some(f)) => add(f),
            (None, Some(f)) => {
                add(&m.oid);
                add(f);
            }
            _ => add(&m.oid),
        }
        for o in [&m.multiply_by, &m.si_scale_oid, &m.precision_oid]
            .into_iter()
            .flatten()
        {
            add(o);
        }
    }
    cols
}

#[allow(clippy::too_many_arguments)]
fn collect_table(
    state: &mut DeviceState,
    table: &Table,
    cols: &[Oid],
    rows: &BTreeMap<Vec<u32>, Vec<Option<Value>>>,
    walked_labels: bool,
    now_ms: i64,
    report: &mut PollReport,
) {
    let col = |o: &Oid| cols.iter().position(|c| c == o);
    // Decide main vs fallback columns the first time we see the table.
    for m in &table.metrics {
        let k = metric_key(&m.metric, &[]);
        let Err(at) = state.column_choice.binary_search_by_key(&k, |c| c.0) else {
            continue;
        };
        if rows.is_empty() {
            continue;
        }
        let main_has = col(&m.oid).is_some_and(|i| {
            rows.values()
                .any(|r| r[i].as_ref().is_some_and(|v| !v.is_exception()))
        });
        state
            .column_choice
            .insert(at, (k, !main_has && m.fallback_oid.is_some()));
    }
    if walked_labels {
        let mut cache = LabelCache::default();
        for (idx, vals) in rows {
            let mut packed = String::new();
            for (i, l) in table.labels.iter().enumerate() {
                if i > 0 {
                    packed.push(LABEL_SEP);
                }
                match col(&l.oid)
                    .and_then(|c| vals.get(c))
                    .and_then(Option::as_ref)
                {
                    Some(v) => packed.push_str(&label_text(v)),
                    None => packed.push_str(LABEL_ABSENT),
                }
            }
            cache.rows.push((key_of(idx), packed.into_boxed_str()));
        }
        cache.rows.sort_unstable_by_key(|r| r.0);
        cache.rows.dedup_by_key(|r| r.0);
        cache.rows.shrink_to_fit();
        match state.labels.iter_mut().find(|(n, _)| **n == *table.name) {
            Some((_, c)) => *c = cache,
            None => state.labels.push((table.name.as_str().into(), cache)),
        }
    }
    let mut unknown_row = false;
    for (idx, vals) in rows {
        let mut labels: Vec<(String, String)> = index_labels(&table.index, idx);
        match state.label_cache(&table.name).and_then(|c| c.get(idx)) {
            Some(packed) => {
                for (l, v) in table.labels.iter().zip(packed.split(LABEL_SEP)) {
                    if v != LABEL_ABSENT {
                        labels.push((l.name.clone(), v.to_owned()));
                    }
                }
            }
            None if !table.labels.is_empty() => unknown_row = true,
            None => {}
        }
        let get = |o: &Oid| {
            col(o)
                .and_then(|i| vals.get(i))
                .and_then(Option::as_ref)
                .filter(|v| !v.is_exception())
        };
        let mut row_values: HashMap<&str, f64> = HashMap::new();
        let ordered = table
            .metrics
            .iter()
            .filter(|m| m.kind == MetricType::Gauge)
            .chain(table.metrics.iter().filter(|m| m.kind == MetricType::Rate));
        for m in ordered {
            let fallback = state.choice(&m.metric).unwrap_or(false);
            let (oid, scale) = match (&m.fallback_oid, fallback) {
                (Some(f), true) => (f, m.fallback_scale.unwrap_or(m.scale)),
                _ => (&m.oid, m.scale),
            };
            let Some(raw) = get(oid) else { continue };
            let value = match m.kind {
                MetricType::Gauge => {
                    let Some(mut v) = raw
                        .as_f64()
                        .and_then(|r| profile::convert(r, m.offset, scale, &m.skip))
                    else {
                        continue;
                    };
                    if let Some(f) = m
                        .multiply_by
                        .as_ref()
                        .and_then(&get)
                        .and_then(Value::as_f64)
                    {
                        v *= f;
                    }
                    if let Some(s) = m
                        .si_scale_oid
                        .as_ref()
                        .and_then(&get)
                        .and_then(Value::as_f64)
                    {
                        v *= 10f64.powi(3 * (s as i32 - 9));
                    }
                    if let Some(p) = m
                        .precision_oid
                        .as_ref()
                        .and_then(&get)
                        .and_then(Value::as_f64)
                    {
                        v /= 10f64.powi(p as i32);
                    }
                    v
                }
                MetricType::Rate => {
                    let max = m
                        .max_rate_metric
                        .as_deref()
                        .and_then(|n| row_values.get(n))
                        .filter(|v| **v > 0.0)
                        .map(|v| v * 1.1 / scale);
                    match counter_rate(state, &m.metric, idx, raw, now_ms, max) {
                        Some(r) => r * scale,
                        None => continue,
                    }
                }
            };
            row_values.insert(m.metric.as_str(), value);
            report.metrics.push(MetricValue {
                metric: m.metric.clone(),
                labels: labels.clone(),
                value,
            });
        }
    }
    if unknown_row && !walked_labels {
        state.labels_stale = true;
    }
}

fn index_labels(names: &[String], idx: &[u32]) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let part = if i + 1 == names.len() {
            idx.get(i..).unwrap_or(&[])
        } else {
            idx.get(i..=i).unwrap_or(&[])
        };
        let text = part
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(".");
        out.push((name.clone(), text));
    }
    out
}

fn counter_rate(
    state: &mut DeviceState,
    metric: &str,
    idx: &[u32],
    raw: &Value,
    now_ms: i64,
    max_rate: Option<f64>,
) -> Option<f64> {
    let (value, width) = match raw {
        Value::Counter64(v) => (*v, Width::Bits64),
        Value::Counter32(v) => (u64::from(*v), Width::Bits32),
        other => (other.as_u64()?, Width::Bits32),
    };
    let key = metric_key(metric, idx);
    let kept = Kept {
        key,
        value,
        at_ms: now_ms,
    };
    let prev = match state.counters.binary_search_by_key(&key, |c| c.key) {
        Ok(i) => state
            .counters
            .get_mut(i)
            .map(|slot| std::mem::replace(slot, kept)),
        Err(i) => {
            state.counters.insert(i, kept);
            None
        }
    };
    // Reboots were handled for the whole device (the readings cleared): no uptime per reading needed.
    let reading = |k: Kept| Reading {
        value: k.value,
        at_ms: k.at_ms,
        uptime: None,
        discontinuity: None,
    };
    rate::rate(prev.map(reading).as_ref(), &reading(kept), width, max_rate).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_text_keeps_utf8_and_hex_encodes_binary() {
        let s = |b: &[u8]| label_text(&Value::OctetString(b.to_vec()));
        assert_eq!(s("Cliente São José".as_bytes()), "Cliente São José");
        assert_eq!(s(b"eth0\0"), "eth0");
        assert_eq!(s(&[0x00, 0xa0, 0xc9, 0x14, 0x0c, 0x2a]), "00A0C9140C2A");
        assert_eq!(s(b"a\x1fb"), "611F62");
        assert!(!s(b"tab\there").contains(LABEL_SEP));
    }

    #[test]
    fn label_cache_finds_rows_by_index() {
        let mut c = LabelCache::default();
        for idx in [[3u32], [1], [2]] {
            c.rows
                .push((key_of(&idx), format!("if{}", idx[0]).into_boxed_str()));
        }
        c.rows.sort_unstable_by_key(|r| r.0);
        assert_eq!(c.get(&[2]), Some("if2"));
        assert_eq!(c.get(&[1, 0]), None);
    }
}
