//! A provider's alerting configuration as the engine holds it in memory: rules (with scope precedence), silences,
//! maintenance windows, group memberships, POP names; loaded in one tenant transaction.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::alerts::eval::{Condition, Evaluation, FlapSettings, MissingData, Op};

/// Where a rule (or a maintenance window) applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every device of the provider.
    Provider,
    /// The devices of one POP.
    Pop(Uuid),
    /// The members of one device group.
    Group(Uuid),
    /// One device.
    Device(Uuid),
}

impl Scope {
    /// From the `(scope, scope_id)` columns.
    pub fn from_columns(scope: &str, id: Option<Uuid>) -> Option<Scope> {
        Some(match (scope, id) {
            ("provider", _) => Scope::Provider,
            ("pop", Some(id)) => Scope::Pop(id),
            ("group", Some(id)) => Scope::Group(id),
            ("device", Some(id)) => Scope::Device(id),
            _ => return None,
        })
    }

    /// Precedence: the most specific scope has the highest.
    pub fn rank(self) -> u8 {
        match self {
            Scope::Provider => 0,
            Scope::Pop(_) => 1,
            Scope::Group(_) => 2,
            Scope::Device(_) => 3,
        }
    }

    /// Whether a device of `pop` in `groups` is inside.
    pub fn contains(self, device: Uuid, pop: Uuid, groups: &[Uuid]) -> bool {
        match self {
            Scope::Provider => true,
            Scope::Pop(p) => p == pop,
            Scope::Group(g) => groups.contains(&g),
            Scope::Device(d) => d == device,
        }
    }
}

/// What kind of target a rule has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// Threshold on a series.
    Threshold,
    /// No sample of a series for a while.
    Absence,
    /// No sample of a device (any metric) for a while.
    Offline,
    /// Rate of change of a series.
    Rate,
    /// Optical power (or any value) out of `[low, high]`.
    Optical,
}

/// One enabled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its id.
    pub id: Uuid,
    /// Rules sharing a key override each other by scope.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Where it applies.
    pub scope: Scope,
    /// The metric.
    pub metric: String,
    /// Kind.
    pub kind: RuleKind,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// How it evaluates.
    pub eval: Evaluation,
    /// Its alerts mean the POP's uplink is down.
    pub is_uplink: bool,
    /// Facts copied into every event (threshold, op, ...).
    pub facts: serde_json::Value,
}

/// A silence.
#[derive(Debug, Clone)]
pub struct Silence {
    /// Matches this rule only (None: any).
    pub rule_id: Option<Uuid>,
    /// Matches this device only.
    pub device_id: Option<Uuid>,
    /// Matches this POP only.
    pub pop_id: Option<Uuid>,
    /// Start, ms.
    pub starts_ms: i64,
    /// End, ms.
    pub ends_ms: i64,
}

/// A maintenance window.
#[derive(Debug, Clone)]
pub struct Maintenance {
    /// What is under maintenance.
    pub scope: Scope,
    /// Start, ms.
    pub starts_ms: i64,
    /// End, ms.
    pub ends_ms: i64,
}

/// The configuration of one provider.
#[derive(Debug, Default)]
pub struct Config {
    /// Enabled rules.
    pub rules: Vec<Arc<Rule>>,
    /// Indices into `rules` of the series rules, per metric.
    pub by_metric: HashMap<String, Vec<usize>>,
    /// Indices into `rules` of the offline rules.
    pub offline: Vec<usize>,
    /// Silences not yet over.
    pub silences: Vec<Silence>,
    /// Maintenance windows not yet over.
    pub maintenance: Vec<Maintenance>,
    /// Groups of each device.
    pub groups: HashMap<Uuid, Vec<Uuid>>,
    /// POP names.
    pub pop_names: HashMap<Uuid, String>,
}

/// `(rule, device, pop, starts, ends)`.
type SilenceRow = (
    Option<Uuid>,
    Option<Uuid>,
    Option<Uuid>,
    DateTime<Utc>,
    DateTime<Utc>,
);
/// `(scope, scope id, starts, ends)`.
type WindowRow = (String, Option<Uuid>, DateTime<Utc>, DateTime<Utc>);

/// The columns of an `alert_rules` row the engine reads (see `api::alerts::AlertRule` for their meaning). The
/// rule preview builds one from a rule that is not stored, so that it evaluates exactly what the engine would.
#[derive(Debug, Clone, sqlx::FromRow)]
#[allow(missing_docs)]
pub struct RuleRow {
    pub id: Uuid,
    pub rule_key: String,
    pub name: String,
    pub scope: String,
    pub scope_id: Option<Uuid>,
    pub metric: String,
    pub kind: String,
    pub op: Option<String>,
    pub threshold: Option<f64>,
    pub recover_threshold: Option<f64>,
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub hysteresis: f64,
    pub absence_secs: Option<i32>,
    pub severity: String,
    pub for_secs: i32,
    pub recover_for_secs: i32,
    pub missing_data: String,
    pub flap_enabled: bool,
    pub flap_window: i32,
    pub flap_high: f64,
    pub flap_low: f64,
    pub is_uplink: bool,
}

impl Config {
    /// Loads the configuration visible in `tx` (a tenant transaction).
    pub async fn load(tx: &mut Transaction<'static, Postgres>) -> Result<Config, sqlx::Error> {
        let conn: &mut PgConnection = tx;
        let rows: Vec<RuleRow> = sqlx::query_as(
            "SELECT id, rule_key, name, scope, scope_id, metric, kind, op, threshold, recover_threshold, low, high, \
                    hysteresis, absence_secs, severity, for_secs, recover_for_secs, missing_data, flap_enabled, \
                    flap_window, flap_high, flap_low, is_uplink \
             FROM alert_rules WHERE enabled ORDER BY id",
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut cfg = Config::default();
        for row in rows {
            let Some(rule) = rule_from_row(row) else {
                continue;
            };
            let idx = cfg.rules.len();
            if rule.kind == RuleKind::Offline {
                cfg.offline.push(idx);
            } else {
                cfg.by_metric
                    .entry(rule.metric.clone())
                    .or_default()
                    .push(idx);
            }
            cfg.rules.push(Arc::new(rule));
        }
        let silences: Vec<SilenceRow> =
            sqlx::query_as(
                "SELECT rule_id, device_id, pop_id, starts_at, ends_at FROM alert_silences WHERE ends_at > now()",
            )
            .fetch_all(&mut *conn)
            .await?;
        cfg.silences = silences
            .into_iter()
            .map(|(rule_id, device_id, pop_id, s, e)| Silence {
                rule_id,
                device_id,
                pop_id,
                starts_ms: s.timestamp_millis(),
                ends_ms: e.timestamp_millis(),
            })
            .collect();
        let windows: Vec<WindowRow> = sqlx::query_as(
            "SELECT scope, scope_id, starts_at, ends_at FROM alert_maintenance WHERE ends_at > now()",
        )
        .fetch_all(&mut *conn)
        .await?;
        cfg.maintenance = windows
            .into_iter()
            .filter_map(|(scope, id, s, e)| {
                Some(Maintenance {
                    scope: Scope::from_columns(&scope, id)?,
                    starts_ms: s.timestamp_millis(),
                    ends_ms: e.timestamp_millis(),
                })
            })
            .collect();
        let members: Vec<(Uuid, Uuid)> =
            sqlx::query_as("SELECT device_id, group_id FROM device_group_members")
                .fetch_all(&mut *conn)
                .await?;
        for (device, group) in members {
            cfg.groups.entry(device).or_default().push(group);
        }
        let pops: Vec<(Uuid, String)> = sqlx::query_as("SELECT id, name FROM pops")
            .fetch_all(&mut *conn)
            .await?;
        cfg.pop_names = pops.into_iter().collect();
        Ok(cfg)
    }

    /// The rules that apply to a series of `metric` on `device`: per rule key, the most specific scope.
    pub fn resolve(&self, candidates: &[usize], device: Uuid, pop: Uuid) -> Vec<usize> {
        let groups = self.groups.get(&device).map(Vec::as_slice).unwrap_or(&[]);
        let mut best: HashMap<&str, usize> = HashMap::new();
        for &i in candidates {
            let rule = &self.rules[i];
            if !rule.scope.contains(device, pop, groups) {
                continue;
            }
            match best.get(rule.key.as_str()) {
                Some(&j) if self.rules[j].scope.rank() >= rule.scope.rank() => {}
                _ => {
                    best.insert(rule.key.as_str(), i);
                }
            }
        }
        let mut out: Vec<usize> = best.into_values().collect();
        out.sort_unstable();
        out
    }

    /// Why notifications of an alert are suppressed at `ts_ms`, if they are: `maintenance` or `silence`.
    pub fn suppression(
        &self,
        rule: Uuid,
        device: Uuid,
        pop: Uuid,
        ts_ms: i64,
    ) -> Option<&'static str> {
        let groups = self.groups.get(&device).map(Vec::as_slice).unwrap_or(&[]);
        if self.maintenance.iter().any(|m| {
            m.starts_ms <= ts_ms && ts_ms < m.ends_ms && m.scope.contains(device, pop, groups)
        }) {
            return Some("maintenance");
        }
        if self.silences.iter().any(|s| {
            s.starts_ms <= ts_ms
                && ts_ms < s.ends_ms
                && s.rule_id.is_none_or(|r| r == rule)
                && s.device_id.is_none_or(|d| d == device)
                && s.pop_id.is_none_or(|p| p == pop)
        }) {
            return Some("silence");
        }
        None
    }
}

/// The rule the engine evaluates for a row; `None` when the columns do not make one (the API's checks refuse
/// such rules, so a stored row always makes one).
pub fn rule_from_row(row: RuleRow) -> Option<Rule> {
    let RuleRow {
        id,
        rule_key: key,
        name,
        scope,
        scope_id,
        metric,
        kind,
        op,
        threshold,
        recover_threshold,
        low,
        high,
        hysteresis,
        absence_secs,
        severity,
        for_secs,
        recover_for_secs,
        missing_data: missing,
        flap_enabled,
        flap_window,
        flap_high,
        flap_low,
        is_uplink,
    } = row;
    let scope = Scope::from_columns(&scope, scope_id)?;
    let op_parsed = op.as_deref().and_then(Op::parse);
    let (kind, condition) = match kind.as_str() {
        "threshold" | "rate" => {
            let (op, threshold) = (op_parsed?, threshold?);
            let recover = recover_threshold.unwrap_or(threshold);
            if kind == "rate" {
                (
                    RuleKind::Rate,
                    Condition::Rate {
                        op,
                        threshold,
                        recover,
                    },
                )
            } else {
                (
                    RuleKind::Threshold,
                    Condition::Threshold {
                        op,
                        threshold,
                        recover,
                    },
                )
            }
        }
        "optical" => (
            RuleKind::Optical,
            Condition::Range {
                low: low?,
                high: high?,
                hysteresis,
            },
        ),
        "absence" | "offline" => (
            if kind == "absence" {
                RuleKind::Absence
            } else {
                RuleKind::Offline
            },
            Condition::Absence {
                after_ms: i64::from(absence_secs?) * 1000,
            },
        ),
        _ => return None,
    };
    let missing = match missing.as_str() {
        "resolve" => MissingData::Resolve,
        "alert" => MissingData::Alert,
        _ => MissingData::Keep,
    };
    let flap = flap_enabled.then_some(FlapSettings {
        window: usize::try_from(flap_window).unwrap_or(21),
        high: flap_high,
        low: flap_low,
    });
    let facts = serde_json::json!({
        "rule_key": key,
        "metric": metric,
        "kind": kind_name(kind),
        "op": op,
        "threshold": threshold,
        "recover_threshold": recover_threshold,
        "low": low,
        "high": high,
        "absence_secs": absence_secs,
        "for_secs": for_secs,
        "recover_for_secs": recover_for_secs,
        "unit": unit_of(&metric),
    });
    Some(Rule {
        id,
        key,
        name,
        scope,
        metric,
        kind,
        severity,
        eval: Evaluation {
            condition,
            for_ms: i64::from(for_secs) * 1000,
            recover_for_ms: i64::from(recover_for_secs) * 1000,
            missing,
            flap,
        },
        is_uplink,
        facts,
    })
}

fn kind_name(kind: RuleKind) -> &'static str {
    match kind {
        RuleKind::Threshold => "threshold",
        RuleKind::Absence => "absence",
        RuleKind::Offline => "offline",
        RuleKind::Rate => "rate",
        RuleKind::Optical => "optical",
    }
}

/// The unit of a metric, from its name's conventions (`_bps`, `_ms`, `_dbm`, ...); `null` when unknown.
pub fn unit_of(metric: &str) -> Option<&'static str> {
    let m = metric.to_ascii_lowercase();
    let units = [
        ("_bps", "bit/s"),
        ("_per_s", "1/s"),
        ("_ms", "ms"),
        ("_dbm", "dBm"),
        ("_percent", "%"),
        ("_ratio", "ratio"),
        ("_bytes", "B"),
        ("_celsius", "°C"),
        ("_seconds", "s"),
    ];
    units
        .iter()
        .find(|(suffix, _)| m.ends_with(suffix))
        .map(|(_, u)| *u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(key: &str, scope: Scope) -> Arc<Rule> {
        Arc::new(Rule {
            id: Uuid::new_v4(),
            key: key.into(),
            name: key.into(),
            scope,
            metric: "cpu.load_percent".into(),
            kind: RuleKind::Threshold,
            severity: "warning".into(),
            eval: Evaluation {
                condition: Condition::Threshold {
                    op: Op::Gt,
                    threshold: 90.0,
                    recover: 90.0,
                },
                for_ms: 0,
                recover_for_ms: 0,
                missing: MissingData::Keep,
                flap: None,
            },
            is_uplink: false,
            facts: serde_json::Value::Null,
        })
    }

    #[test]
    fn the_most_specific_scope_wins_per_key() {
        let (dev, pop, group) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut cfg = Config::default();
        cfg.groups.insert(dev, vec![group]);
        cfg.rules = vec![
            rule("cpu", Scope::Provider),
            rule("cpu", Scope::Pop(pop)),
            rule("cpu", Scope::Group(group)),
            rule("cpu", Scope::Device(Uuid::new_v4())),
            rule("other", Scope::Provider),
        ];
        assert_eq!(cfg.resolve(&[0, 1, 2, 3, 4], dev, pop), vec![2, 4]);
        assert_eq!(cfg.resolve(&[0, 1], dev, pop), vec![1]);
        assert_eq!(cfg.resolve(&[0, 1], dev, Uuid::new_v4()), vec![0]);
    }

    #[test]
    fn units_follow_metric_names() {
        assert_eq!(unit_of("onu.rx_dbm"), Some("dBm"));
        assert_eq!(unit_of("if.in_bps"), Some("bit/s"));
        assert_eq!(unit_of("ping.up"), None);
    }
}
