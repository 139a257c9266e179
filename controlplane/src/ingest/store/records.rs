//! The records of a batch (events, inventory, TR-069 results, command results, drop reports): validated before
//! the transaction, then written with one UNNEST statement per kind inside it. Records with agent-generated ids
//! are inserted `ON CONFLICT DO NOTHING` on `(provider_id, id)`; inventory is appended to `device_inventory_log`
//! and applied to `devices` unless the device already shows a newer report. Text is stored verbatim except NUL,
//! which PostgreSQL cannot hold in text or jsonb and which becomes U+FFFD.
//!
//! TR-069 records (results, `cwmp.*` events, and the [`TR069_INFORM_SEEN`] marker the ACS sends for an Inform that
//! reported nothing else) advance `devices.last_seen` of their CPEs, in one statement per batch. The marker is not
//! stored as a result: it only says the CPE informed.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use octoisp_shared::{
    CommandResult, CommandStatus, DropReport, Event, Inventory, Record, Severity,
    TR069_INFORM_SEEN, Tr069Result,
};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{StoreError, classify};
use crate::registry::AgentRecord;

/// Record times accepted: years 1 to 9999.
const RECORD_MS_RANGE: std::ops::RangeInclusive<i64> = -62_135_596_800_000..=253_402_300_799_999;

/// The records of a batch, validated and laid out as the columns their UNNEST inserts take.
#[derive(Debug, Default)]
pub(super) struct Records<'a> {
    events: Vec<&'a Event>,
    inventory: Vec<&'a Inventory>,
    tr069: Vec<&'a Tr069Result>,
    commands: Vec<&'a CommandResult>,
    drops: Vec<&'a DropReport>,
}

impl<'a> Records<'a> {
    pub(super) fn prepare(records: &'a [Record]) -> Result<Records<'a>, StoreError> {
        let mut out = Records::default();
        for r in records {
            match r {
                Record::Event(e) => {
                    record_time(e.ts_ms, "event")?;
                    out.events.push(e);
                }
                Record::Inventory(i) => {
                    record_time(i.ts_ms, "inventory")?;
                    if i.device_key.is_empty() {
                        return Err(StoreError::Malformed(
                            "an inventory record has an empty device key".into(),
                        ));
                    }
                    out.inventory.push(i);
                }
                Record::Tr069Result(t) => {
                    record_time(t.ts_ms, "TR-069 result")?;
                    if t.device_key.is_empty() {
                        return Err(StoreError::Malformed(
                            "a TR-069 result has an empty device key".into(),
                        ));
                    }
                    out.tr069.push(t);
                }
                Record::CommandResult(c) => {
                    record_time(c.ts_ms, "command result")?;
                    out.commands.push(c);
                }
                Record::DropReport(d) => {
                    record_time(d.from_ms, "drop report")?;
                    record_time(d.to_ms, "drop report")?;
                    out.drops.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Device keys the records name.
    pub(super) fn device_keys(&self) -> BTreeSet<&'a str> {
        let mut keys = BTreeSet::new();
        keys.extend(
            self.events
                .iter()
                .filter_map(|e| e.device_key.as_deref())
                .filter(|k| !k.is_empty()),
        );
        keys.extend(self.inventory.iter().map(|i| i.device_key.as_str()));
        keys.extend(self.tr069.iter().map(|t| t.device_key.as_str()));
        keys
    }

    pub(super) async fn insert(
        &self,
        conn: &mut PgConnection,
        agent: &AgentRecord,
        devices: &HashMap<String, Uuid>,
        marks: Option<&crate::commands::marks::RunningMarks>,
    ) -> Result<Vec<Uuid>, StoreError> {
        let device = |key: &str| devices.get(clean(key).as_ref()).copied();
        let mut finished = Vec::new();
        if !self.events.is_empty() {
            self.insert_events(conn, agent, &device).await?;
        }
        if !self.inventory.is_empty() {
            self.insert_inventory(conn, agent, &device).await?;
        }
        if self.tr069.iter().any(|t| t.kind != TR069_INFORM_SEEN) {
            self.insert_tr069(conn, agent, &device).await?;
        }
        self.advance_last_seen(conn, agent, &device).await?;
        if !self.commands.is_empty() {
            self.insert_commands(conn, agent).await?;
            let ids: Vec<Uuid> = self.commands.iter().map(|c| c.command_id).collect();
            // The `running` marks still held for these commands are written with their results.
            let started = match marks {
                Some(m) => m.take(&ids),
                None => vec![None; ids.len()],
            };
            finished = crate::commands::finish_from_results(
                conn,
                agent.provider_id,
                agent.agent_id,
                &ids,
                &started,
            )
            .await
            .map_err(classify)?;
        }
        if !self.drops.is_empty() {
            self.insert_drops(conn, agent).await?;
        }
        Ok(finished)
    }

    async fn insert_events(
        &self,
        conn: &mut PgConnection,
        agent: &AgentRecord,
        device: &impl Fn(&str) -> Option<Uuid>,
    ) -> Result<(), StoreError> {
        let mut events = self.events.clone();
        events.sort_unstable_by_key(|e| e.id);
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        let devs: Vec<Option<Uuid>> = events
            .iter()
            .map(|e| e.device_key.as_deref().and_then(device))
            .collect();
        let ts: Vec<DateTime<Utc>> = events.iter().map(|e| ms_to_time(e.ts_ms)).collect();
        let kinds: Vec<String> = events.iter().map(|e| clean(&e.kind).into_owned()).collect();
        let severities: Vec<&str> = events.iter().map(|e| severity(e.severity)).collect();
        let messages: Vec<String> = events
            .iter()
            .map(|e| clean(&e.message).into_owned())
            .collect();
        let attrs: Vec<String> = events.iter().map(|e| pairs_json(&e.attrs)).collect();
        sqlx::query(
            "INSERT INTO events (provider_id, id, agent_id, device_id, ts, kind, severity, message, attrs) \
             SELECT $1, i, $2, d, t, k, s, m, a::jsonb \
             FROM unnest($3::uuid[], $4::uuid[], $5::timestamptz[], $6::text[], $7::text[], $8::text[], $9::text[]) \
                  AS u(i, d, t, k, s, m, a) \
             ON CONFLICT (provider_id, id) DO NOTHING",
        )
        .bind(agent.provider_id)
        .bind(agent.agent_id)
        .bind(&ids)
        .bind(&devs)
        .bind(&ts)
        .bind(&kinds)
        .bind(&severities)
        .bind(&messages)
        .bind(&attrs)
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn insert_inventory(
        &self,
        conn: &mut PgConnection,
        agent: &AgentRecord,
        device: &impl Fn(&str) -> Option<Uuid>,
    ) -> Result<(), StoreError> {
        let n = self.inventory.len();
        let mut dev = Vec::with_capacity(n);
        let mut ts = Vec::with_capacity(n);
        let mut text: [Vec<Option<String>>; 6] = Default::default();
        let mut ips = Vec::with_capacity(n);
        let mut attrs = Vec::with_capacity(n);
        for i in &self.inventory {
            let Some(id) = device(&i.device_key) else {
                return Err(StoreError::Malformed(format!(
                    "device `{}` could not be registered",
                    i.device_key
                )));
            };
            dev.push(id);
            ts.push(ms_to_time(i.ts_ms));
            let fields = [
                &i.vendor,
                &i.model,
                &i.serial_number,
                &i.oui,
                &i.product_class,
                &i.firmware,
            ];
            for (col, f) in text.iter_mut().zip(fields) {
                col.push(f.as_deref().map(|s| clean(s).into_owned()));
            }
            let (ip, mut extra) = match i.mgmt_ip.as_deref().map(str::trim) {
                Some(s) if !s.is_empty() => match s.parse::<std::net::IpAddr>() {
                    Ok(ip) => (Some(ip.to_string()), Vec::new()),
                    // Kept verbatim among the attributes rather than refusing the batch for it.
                    Err(_) => (None, vec![("mgmt_ip_raw".to_owned(), s.to_owned())]),
                },
                _ => (None, Vec::new()),
            };
            ips.push(ip);
            extra.splice(0..0, i.attrs.iter().cloned());
            attrs.push(pairs_json(&extra));
        }
        let [vendor, model, serial, oui, class, firmware] = text;
        sqlx::query(
            "INSERT INTO device_inventory_log (provider_id, device_id, agent_id, ts, vendor, model, serial_number, \
                                               oui, product_class, firmware, mgmt_ip, attrs) \
             SELECT $1, d, $2, t, v, m, s, o, c, f, ip::inet, a::jsonb \
             FROM unnest($3::uuid[], $4::timestamptz[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], \
                         $10::text[], $11::text[], $12::text[]) AS u(d, t, v, m, s, o, c, f, ip, a)",
        )
        .bind(agent.provider_id)
        .bind(agent.agent_id)
        .bind(&dev)
        .bind(&ts)
        .bind(&vendor)
        .bind(&model)
        .bind(&serial)
        .bind(&oui)
        .bind(&class)
        .bind(&firmware)
        .bind(&ips)
        .bind(&attrs)
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
        // The newest report of each device (the last one on a tie) updates it, unless the device already shows a
        // newer one; fields a report leaves out keep their values.
        let mut newest: HashMap<Uuid, usize> = HashMap::new();
        for (idx, (d, t)) in dev.iter().zip(&ts).enumerate() {
            let slot = newest.entry(*d).or_insert(idx);
            if ts[*slot] <= *t {
                *slot = idx;
            }
        }
        let mut pick: Vec<usize> = newest.into_values().collect();
        pick.sort_unstable_by_key(|i| dev[*i]);
        let col = |c: &[Option<String>]| -> Vec<Option<String>> {
            pick.iter().map(|i| c[*i].clone()).collect()
        };
        sqlx::query(
            "UPDATE devices AS d SET vendor = coalesce(u.v, d.vendor), model = coalesce(u.m, d.model), \
                 serial_number = coalesce(u.s, d.serial_number), oui = coalesce(u.o, d.oui), \
                 product_class = coalesce(u.c, d.product_class), firmware = coalesce(u.f, d.firmware), \
                 mgmt_ip = coalesce(u.ip::inet, d.mgmt_ip), attrs = d.attrs || u.a::jsonb, inventory_at = u.t, \
                 last_seen = greatest(d.last_seen, u.t) \
             FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
                         $8::text[], $9::text[], $10::text[]) AS u(id, t, v, m, s, o, c, f, ip, a) \
             WHERE d.id = u.id AND (d.inventory_at IS NULL OR d.inventory_at <= u.t)",
        )
        .bind(pick.iter().map(|i| dev[*i]).collect::<Vec<_>>())
        .bind(pick.iter().map(|i| ts[*i]).collect::<Vec<_>>())
        .bind(col(&vendor))
        .bind(col(&model))
        .bind(col(&serial))
        .bind(col(&oui))
        .bind(col(&class))
        .bind(col(&firmware))
        .bind(col(&ips))
        .bind(pick.iter().map(|i| attrs[*i].clone()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn insert_tr069(
        &self,
        conn: &mut PgConnection,
        agent: &AgentRecord,
        device: &impl Fn(&str) -> Option<Uuid>,
    ) -> Result<(), StoreError> {
        let mut results = self.tr069.clone();
        results.retain(|r| r.kind != TR069_INFORM_SEEN);
        results.sort_unstable_by_key(|r| r.id);
        let mut devs = Vec::with_capacity(results.len());
        for r in &results {
            match device(&r.device_key) {
                Some(id) => devs.push(id),
                None => {
                    return Err(StoreError::Malformed(format!(
                        "device `{}` could not be registered",
                        r.device_key
                    )));
                }
            }
        }
        sqlx::query(
            "INSERT INTO tr069_results (provider_id, id, agent_id, device_id, ts, task_id, kind, ok, fault_code, \
                                        fault_string, parameters) \
             SELECT $1, i, $2, d, t, tk, k, o, fc, fs, p::jsonb \
             FROM unnest($3::uuid[], $4::uuid[], $5::timestamptz[], $6::uuid[], $7::text[], $8::bool[], \
                         $9::int8[], $10::text[], $11::text[]) AS u(i, d, t, tk, k, o, fc, fs, p) \
             ON CONFLICT (provider_id, id) DO NOTHING",
        )
        .bind(agent.provider_id)
        .bind(agent.agent_id)
        .bind(results.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(&devs)
        .bind(results.iter().map(|r| ms_to_time(r.ts_ms)).collect::<Vec<_>>())
        .bind(results.iter().map(|r| r.task_id).collect::<Vec<_>>())
        .bind(results.iter().map(|r| clean(&r.kind).into_owned()).collect::<Vec<_>>())
        .bind(results.iter().map(|r| r.ok).collect::<Vec<_>>())
        .bind(results.iter().map(|r| r.fault_code.map(i64::from)).collect::<Vec<_>>())
        .bind(results.iter().map(|r| r.fault_string.as_deref().map(|s| clean(s).into_owned())).collect::<Vec<_>>())
        .bind(results.iter().map(|r| pairs_json(&r.parameters)).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
        Ok(())
    }

    /// Moves `devices.last_seen` of the CPEs that TR-069 records of this batch come from to their newest record
    /// (never backwards, never past the database's clock): one statement for the whole batch. Inventory records
    /// already do this in their own update. [`StoreError::StaleDevices`] when a device is gone.
    async fn advance_last_seen(
        &self,
        conn: &mut PgConnection,
        agent: &AgentRecord,
        device: &impl Fn(&str) -> Option<Uuid>,
    ) -> Result<(), StoreError> {
        let mut newest: HashMap<Uuid, i64> = HashMap::new();
        let cwmp_events = self
            .events
            .iter()
            .filter(|e| e.kind.starts_with("cwmp."))
            .filter_map(|e| Some((e.device_key.as_deref()?, e.ts_ms)));
        let results = self.tr069.iter().map(|t| (t.device_key.as_str(), t.ts_ms));
        for (key, ts) in cwmp_events.chain(results) {
            if let Some(id) = device(key) {
                let t = newest.entry(id).or_insert(ts);
                *t = (*t).max(ts);
            }
        }
        if newest.is_empty() {
            return Ok(());
        }
        let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = newest
            .into_iter()
            .map(|(id, ts)| (id, ms_to_time(ts)))
            .unzip();
        // Every device is written, even when its `last_seen` does not move (rare: a newer inventory report of
        // the same batch moved it), so that a row missing from the count is a device deleted behind the device
        // cache's back.
        let updated = sqlx::query(
            "UPDATE devices AS d SET last_seen = greatest(d.last_seen, least(u.t, now())) \
             FROM unnest($2::uuid[], $3::timestamptz[]) AS u(id, t) \
             WHERE d.provider_id = $1 AND d.id = u.id",
        )
        .bind(agent.provider_id)
        .bind(&ids)
        .bind(&times)
        .execute(&mut *conn)
        .await
        .map_err(classify)?
        .rows_affected();
        let expected = ids.len() as u64;
        if updated < expected {
            return Err(StoreError::StaleDevices((expected - updated) as usize));
        }
        Ok(())
    }

    async fn insert_commands(
        &self,
        conn: &mut PgConnection,
        agent: &AgentRecord,
    ) -> Result<(), StoreError> {
        let mut results = self.commands.clone();
        results.sort_unstable_by_key(|r| r.command_id);
        sqlx::query(
            "INSERT INTO command_results (provider_id, command_id, agent_id, ts, status, output, error) \
             SELECT $1, c, $2, t, s, o::jsonb, e \
             FROM unnest($3::uuid[], $4::timestamptz[], $5::text[], $6::text[], $7::text[]) AS u(c, t, s, o, e) \
             ON CONFLICT (provider_id, command_id) DO NOTHING",
        )
        .bind(agent.provider_id)
        .bind(agent.agent_id)
        .bind(results.iter().map(|r| r.command_id).collect::<Vec<_>>())
        .bind(results.iter().map(|r| ms_to_time(r.ts_ms)).collect::<Vec<_>>())
        .bind(results.iter().map(|r| command_status(r.status)).collect::<Vec<_>>())
        .bind(results.iter().map(|r| json_or_string(&r.output_json)).collect::<Vec<_>>())
        .bind(results.iter().map(|r| r.error.as_deref().map(|s| clean(s).into_owned())).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn insert_drops(
        &self,
        conn: &mut PgConnection,
        agent: &AgentRecord,
    ) -> Result<(), StoreError> {
        let mut reports = self.drops.clone();
        reports.sort_unstable_by_key(|r| r.id);
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO agent_drop_reports (provider_id, id, agent_id, from_ts, to_ts, samples_dropped, \
                                             records_refused, reason) \
             SELECT $1, i, $2, f, t, s, r, why \
             FROM unnest($3::uuid[], $4::timestamptz[], $5::timestamptz[], $6::int8[], $7::int8[], $8::text[]) \
                  AS u(i, f, t, s, r, why) \
             ON CONFLICT (provider_id, id) DO NOTHING",
        )
        .bind(agent.provider_id)
        .bind(agent.agent_id)
        .bind(reports.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(reports.iter().map(|r| ms_to_time(r.from_ms)).collect::<Vec<_>>())
        .bind(reports.iter().map(|r| ms_to_time(r.to_ms)).collect::<Vec<_>>())
        .bind(reports.iter().map(|r| count(r.samples_dropped)).collect::<Vec<_>>())
        .bind(reports.iter().map(|r| count(r.records_refused)).collect::<Vec<_>>())
        .bind(reports.iter().map(|r| clean(&r.reason).into_owned()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
        if let Some(total) = reports
            .iter()
            .map(|r| r.samples_dropped)
            .reduce(u64::saturating_add)
            && total > 0
        {
            tracing::warn!(agent = %agent.agent_id, samples_dropped = total, "Agent reports dropped samples.");
        }
        Ok(())
    }
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

fn command_status(s: CommandStatus) -> &'static str {
    match s {
        CommandStatus::Succeeded => "succeeded",
        CommandStatus::Failed => "failed",
        CommandStatus::Expired => "expired",
        CommandStatus::Rejected => "rejected",
        CommandStatus::Cancelled => "cancelled",
    }
}

/// Text PostgreSQL accepts: NUL, which no text or jsonb value may hold, becomes U+FFFD.
pub(super) fn clean(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// A JSON object of key/value pairs (a repeated key keeps its last value), as text.
pub(super) fn pairs_json(pairs: &[(String, String)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| {
            (
                clean(k).into_owned(),
                serde_json::Value::String(clean(v).into_owned()),
            )
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// `text` if it is JSON (NUL characters in its strings replaced), else `text` as a JSON string.
fn json_or_string(text: &str) -> String {
    fn scrub(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{FFFD}"),
            serde_json::Value::Array(items) => items.iter_mut().for_each(scrub),
            serde_json::Value::Object(map) => {
                let entries = std::mem::take(map);
                *map = entries
                    .into_iter()
                    .map(|(k, mut v)| {
                        scrub(&mut v);
                        (clean(&k).into_owned(), v)
                    })
                    .collect();
            }
            _ => {}
        }
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(mut v) => {
            scrub(&mut v);
            v.to_string()
        }
        Err(_) => serde_json::Value::String(clean(text).into_owned()).to_string(),
    }
}

fn record_time(ms: i64, what: &str) -> Result<(), StoreError> {
    if RECORD_MS_RANGE.contains(&ms) {
        Ok(())
    } else {
        Err(StoreError::Malformed(format!(
            "a {what} has time {ms} ms since the Unix epoch, outside years 1 to 9999"
        )))
    }
}

/// A time already checked by [`record_time`] or [`check_samples`].
fn ms_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_never_carries_nul() {
        assert_eq!(
            pairs_json(&[("a\0".into(), "b\0".into())]),
            "{\"a\u{FFFD}\":\"b\u{FFFD}\"}"
        );
        assert_eq!(
            json_or_string("{\"x\":\"\\u0000\"}"),
            "{\"x\":\"\u{FFFD}\"}"
        );
        assert_eq!(json_or_string("not json"), "\"not json\"");
    }
}
