//! The batch writer: stores one agent batch in PostgreSQL in one transaction, exactly once.
//!
//! [`Store::store_batch`] runs, for one batch:
//!
//! 1. **Validation**, before touching the database: sequence numbers fit PostgreSQL's bigint, sample times lie
//!    between 2000-01-01 and now + 1 day (NaN values are stored as they are), series definitions are complete,
//!    record times are representable. A violation is [`StoreError::Malformed`]: resending it cannot succeed.
//! 2. **Partitions** for the UTC days of the samples, from a cache or `octoisp_sample_partitions` in a
//!    transaction of its own (creating one takes a lock that must not live as long as a batch).
//! 3. **One transaction** bound to the agent's provider ([`db::tenant_tx`], from the [`AgentRecord`], never the
//!    payload), in which:
//!    - `pg_advisory_xact_lock(agent, seq)` serializes two instances storing the same batch (a replay racing the
//!      original), then the duplicate check: `(agent_id, seq)` in `ingested_batches`, or `seq` below the agent's
//!      `settled_below`, ends with [`StoreOutcome::Duplicate`] and nothing written;
//!    - devices (by `device_key`) and series (by `(agent_id, local_id)`) from the batch's definitions are inserted
//!      with UNNEST arrays, `ON CONFLICT DO NOTHING`, and every agent-local id the samples use is resolved, from
//!      the cache first; ids still unknown end with [`StoreError::UnknownSeries`] and nothing written. Device
//!      ids come from a cache as well (see `DeviceCache`: a batch of periodic Informs resolves no key in the
//!      database); a cached id whose device was deleted fails the transaction, and the batch is stored again
//!      once with the provider's cached ids dropped;
//!    - samples, sorted by (day, series, time) so index insertions stay local, go to their day partitions with
//!      `COPY ... FROM STDIN (FORMAT binary)` (encoded here: [`encode_copy`]). The partition, not the parent: row
//!      security on `samples` forbids COPY into it; each partition refuses rows of another provider by a CHECK
//!      constraint (see `migrations/0003_ingest.sql`);
//!    - one `rollup_pending` row per distinct 5-minute bucket of the samples (`rollup::mark_samples`), which the
//!      rollup job consumes;
//!    - records: events, TR-069 results, command results and drop reports `ON CONFLICT DO NOTHING` on their
//!      agent-generated ids; inventory appended to `device_inventory_log` and applied to `devices` unless older
//!      than what the device already shows;
//!    - `INSERT INTO ingested_batches`: a unique violation here means another instance stored the batch first
//!      (the advisory lock makes that rare): roll back, [`StoreOutcome::Duplicate`];
//!    - `agents.settled_below` advances to the batch's `settled_below` (never past its own `seq`), and the
//!      `ingested_batches` rows below it, which that mark now covers, are deleted.
//! 4. **Commit**; only then may the caller ack. The series ids learnt are cached only after the commit, so a rolled
//!    back insertion never leaves a dangling id in the cache.
//!
//! Database errors are [`StoreError::Transient`] (retry later) except data exceptions (SQLSTATE class 22), which
//! are [`StoreError::Malformed`].

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use octoisp_shared::{Batch, MetricKind, Sample, SeriesDef};
use sqlx::{PgConnection, PgPool};
use thiserror::Error;
use uuid::Uuid;

use self::records::{Records, clean, pairs_json};
use crate::db::{self, DbError};
use crate::registry::AgentRecord;

mod records;

/// Earliest sample time accepted: 2000-01-01T00:00:00Z, in milliseconds since the Unix epoch.
pub const MIN_SAMPLE_MS: i64 = 946_684_800_000;
/// How far past the control plane's clock a sample time may be.
pub const MAX_SAMPLE_AHEAD_MS: i64 = 86_400_000;
/// Most distinct UTC days the samples of one batch may span (one partition each).
pub const MAX_DAYS_PER_BATCH: usize = 64;
/// Cached `(agent, local id) → series id` entries past which the cache is emptied and refilled on demand.
const MAX_CACHED_SERIES: usize = 4_000_000;
/// Cached `(provider, POP, device key) → device id` entries past which the cache is emptied.
const MAX_CACHED_DEVICES: usize = 2_000_000;
/// SQLSTATE of a foreign key violation (a cached device id whose device was deleted).
const FOREIGN_KEY_VIOLATION: &str = "23503";
/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;
/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = MIN_SAMPLE_MS * 1000;
/// SQLSTATE class of data exceptions.
const DATA_EXCEPTION_CLASS: &str = "22";
/// SQLSTATE of an undefined table (a partition dropped behind the cache's back).
const UNDEFINED_TABLE: &str = "42P01";

/// What happened to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// The batch is committed.
    Stored {
        /// Samples written.
        samples: u64,
        /// Records (events, inventory, results, drop reports) in the batch.
        records: u64,
    },
    /// The batch had been stored before; nothing was written.
    Duplicate,
}

/// Why a batch was not stored. Nothing of it was written.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Samples use these agent-local series ids, defined neither in the batch nor before.
    #[error("{} series unknown (first: {:?}): resend with their definitions", .0.len(), .0.first())]
    UnknownSeries(Vec<u64>),
    /// The batch is invalid; resending it unchanged fails again.
    #[error("malformed batch: {0}")]
    Malformed(String),
    /// The agent may not store anything (revoked, or no longer registered): its batch is not at fault and must
    /// stay in its outbox.
    #[error("agent refused: {0}")]
    AgentRefused(String),
    /// Devices the batch's records name were deleted while the batch was being stored (their cached ids are
    /// gone); storing it again registers them anew. Retry.
    #[error("{0} device(s) of the batch were deleted meanwhile; retry")]
    StaleDevices(usize),
    /// The database failed or is unreachable; retry later.
    #[error("database unavailable: {0}")]
    Transient(#[source] sqlx::Error),
}

/// One sample as `COPY` writes it: resolved series id, microseconds since 2000-01-01 UTC, value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CopyRow {
    /// `series.id`.
    pub series_id: i64,
    /// PostgreSQL timestamp: microseconds since 2000-01-01T00:00:00Z.
    pub ts_us: i64,
    /// The value, NaN included.
    pub value: f64,
}

impl CopyRow {
    /// The sample time in milliseconds since the Unix epoch.
    pub fn ts_ms(&self) -> i64 {
        (self.ts_us + PG_EPOCH_OFFSET_US).div_euclid(1000)
    }
}

/// The samples of one committed batch, for an observer such as the alert engine.
#[derive(Debug, Clone)]
pub struct StoredSamples {
    /// The agent's provider.
    pub provider_id: Uuid,
    /// The samples with their resolved series ids.
    pub rows: Vec<CopyRow>,
    /// When the batch's transaction committed.
    pub stored_at: Instant,
}

/// Writes agent batches; one per process, shared by every connection (it caches series ids and partitions).
#[derive(Debug)]
pub struct Store {
    pool: PgPool,
    series: Mutex<SeriesCache>,
    devices: Mutex<DeviceCache>,
    partitions: Mutex<HashMap<i64, Arc<str>>>,
    observer: Option<crate::alerts::SampleSender>,
    command_queue: Option<crate::queue::Queue>,
    command_marks: Option<crate::commands::marks::RunningMarks>,
    result_waits: Option<crate::commands::waits::ResultWaits>,
}

/// Ids learnt from committed batches, grouped by an outer key (an agent, or a provider and POP), bounded: past
/// `max` entries it is emptied and refilled on demand.
#[derive(Debug)]
struct IdCache<O, K, V> {
    groups: HashMap<O, HashMap<K, V>>,
    len: usize,
    max: usize,
    what: &'static str,
}

impl<O: std::hash::Hash + Eq, K: std::hash::Hash + Eq, V> IdCache<O, K, V> {
    fn new(max: usize, what: &'static str) -> Self {
        IdCache {
            groups: HashMap::new(),
            len: 0,
            max,
            what,
        }
    }

    fn group(&self, outer: &O) -> Option<&HashMap<K, V>> {
        self.groups.get(outer)
    }

    fn insert_all(&mut self, outer: O, learnt: HashMap<K, V>) {
        if self.len + learnt.len() > self.max {
            tracing::info!(
                entries = self.len,
                cache = self.what,
                "Id cache full; emptying it."
            );
            self.groups.clear();
            self.len = 0;
        }
        let map = self.groups.entry(outer).or_default();
        for (key, id) in learnt {
            if map.insert(key, id).is_none() {
                self.len += 1;
            }
        }
    }

    /// Drops the groups `drop` selects.
    fn forget(&mut self, drop: impl Fn(&O) -> bool) {
        self.groups.retain(|outer, map| {
            if drop(outer) {
                self.len -= map.len();
                false
            } else {
                true
            }
        });
    }
}

/// Series ids by agent, then agent-local id.
type SeriesCache = IdCache<Uuid, u64, i64>;

/// Device ids by `(provider, POP)` then device key (cleaned as stored), learnt from committed batches. A batch of
/// periodic Informs names hundreds of CPEs that all exist: resolving them from here spares the database an
/// insert-or-nothing and a lookup per key on rows that `last_seen` updates keep rewriting. A device deleted
/// behind the cache's back is noticed by the batch that uses its id (a foreign key violation, or a `last_seen`
/// update that finds fewer rows than ids); the provider's entries are then dropped and the batch stored again.
type DeviceCache = IdCache<(Uuid, Uuid), String, Uuid>;

impl Store {
    /// A store writing through `pool` (which must connect as `octoisp_app`).
    pub fn new(pool: PgPool) -> Store {
        Store {
            pool,
            series: Mutex::new(SeriesCache::new(MAX_CACHED_SERIES, "series")),
            devices: Mutex::new(DeviceCache::new(MAX_CACHED_DEVICES, "devices")),
            partitions: Mutex::new(HashMap::new()),
            observer: None,
            command_queue: None,
            command_marks: None,
            result_waits: None,
        }
    }

    /// Completes the queue job of every command whose result a batch stored (see `crate::commands`).
    pub fn with_command_queue(mut self, queue: crate::queue::Queue) -> Store {
        self.command_queue = Some(queue);
        self
    }

    /// Writes the `running` marks this instance still holds for the commands whose results a batch stores
    /// with those results (see `crate::commands::marks`).
    pub fn with_running_marks(mut self, marks: crate::commands::marks::RunningMarks) -> Store {
        self.command_marks = Some(marks);
        self
    }

    /// Ends the waits this instance holds for the commands whose results a batch stores (see
    /// `crate::commands::waits`).
    pub fn with_result_waits(mut self, waits: crate::commands::waits::ResultWaits) -> Store {
        self.result_waits = Some(waits);
        self
    }

    /// Sends the samples of every stored batch, after its commit, to `observer` (the alert engine). The queue
    /// is bounded in samples (`crate::alerts::queue`): when it is full, `store_batch` waits, so a slow observer
    /// slows acks rather than losing samples. Duplicates are not sent (their samples were sent when first stored).
    pub fn with_sample_observer(mut self, observer: crate::alerts::SampleSender) -> Store {
        self.observer = Some(observer);
        self
    }

    /// The pool the store writes through.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Stores `batch` of `agent` exactly once; `samples` is `batch.samples` already decoded. See the module
    /// documentation for the steps and guarantees. The caller may ack only after `Ok`.
    pub async fn store_batch(
        &self,
        agent: &AgentRecord,
        batch: &Batch,
        samples: &[Sample],
    ) -> Result<StoreOutcome, StoreError> {
        match self.store_once(agent, batch, samples).await {
            Err(err) if stale_device(&err) => {
                // A cached device id names a deleted device: forget the provider's ids and store the batch
                // again (nothing of the first attempt was committed); the devices are registered anew.
                tracing::info!(agent = %agent.agent_id, error = %err, "Cached device ids are stale; resolving them again.");
                lock(&self.devices).forget(|(p, _)| *p == agent.provider_id);
                self.store_once(agent, batch, samples).await
            }
            other => other,
        }
    }

    async fn store_once(
        &self,
        agent: &AgentRecord,
        batch: &Batch,
        samples: &[Sample],
    ) -> Result<StoreOutcome, StoreError> {
        let seq = to_i64(batch.seq, "seq")?;
        let settled_below = to_i64(batch.settled_below.min(batch.seq), "settled_below")?;
        let days = check_samples(samples, Utc::now().timestamp_millis())?;
        let defs = check_defs(&batch.series)?;
        let records = Records::prepare(&batch.records)?;
        let partitions = self.partitions_for(&days).await?;

        let mut tx = db::tenant_tx(&self.pool, agent.provider_id)
            .await
            .map_err(from_db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(fold_uuid(agent.agent_id))
            .bind(seq as i32)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        let state: Option<(i64, bool, bool)> = sqlx::query_as(
            "SELECT a.settled_below, a.revoked_at IS NOT NULL, \
                    EXISTS (SELECT 1 FROM ingested_batches b WHERE b.agent_id = a.id AND b.seq = $2) \
             FROM agents a WHERE a.id = $1",
        )
        .bind(agent.agent_id)
        .bind(seq)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let Some((agent_settled, revoked, stored)) = state else {
            return Err(StoreError::AgentRefused(format!(
                "agent {} is not registered under provider {}",
                agent.agent_id, agent.provider_id
            )));
        };
        if revoked {
            return Err(StoreError::AgentRefused(format!(
                "agent {} is revoked",
                agent.agent_id
            )));
        }
        if stored || seq < agent_settled {
            return Ok(StoreOutcome::Duplicate);
        }

        // Devices and series, then every local id the samples use.
        let mut keys: BTreeSet<&str> = records.device_keys();
        let cached = self.cached_series(agent.agent_id, samples, &defs);
        let new_defs: Vec<&SeriesDef> = defs
            .iter()
            .copied()
            .filter(|d| !cached.contains_key(&d.id))
            .collect();
        keys.extend(new_defs.iter().map(|d| d.device_key.as_str()));
        let (devices, learnt_devices) = self.resolve_devices(&mut tx, agent, &keys).await?;
        insert_series(&mut tx, agent, &new_defs, &devices).await?;
        let mut wanted: BTreeSet<u64> = new_defs.iter().map(|d| d.id).collect();
        wanted.extend(
            samples
                .iter()
                .map(|s| s.series)
                .filter(|id| !cached.contains_key(id)),
        );
        let learnt = resolve_series(&mut tx, agent.agent_id, &wanted).await?;
        let unknown: Vec<u64> = wanted
            .into_iter()
            .filter(|id| !learnt.contains_key(id))
            .collect();
        if !unknown.is_empty() {
            return Err(StoreError::UnknownSeries(unknown));
        }

        // Samples.
        let mut rows: Vec<(i64, CopyRow)> = samples
            .iter()
            .map(|s| {
                let series_id = cached
                    .get(&s.series)
                    .or_else(|| learnt.get(&s.series))
                    .copied()
                    .unwrap_or_default();
                let row = CopyRow {
                    series_id,
                    ts_us: s.ts_ms * 1000 - PG_EPOCH_OFFSET_US,
                    value: s.value,
                };
                (s.ts_ms.div_euclid(DAY_MS), row)
            })
            .collect();
        rows.sort_unstable_by_key(|(day, r)| (*day, r.series_id, r.ts_us));
        for group in rows.chunk_by(|a, b| a.0 == b.0) {
            let day = group[0].0;
            let Some(table) = partitions.get(&day) else {
                return Err(StoreError::Malformed(format!(
                    "no partition resolved for day {day}"
                )));
            };
            let rows: Vec<CopyRow> = group.iter().map(|(_, r)| *r).collect();
            self.copy_rows(&mut tx, table, agent.provider_id, &rows)
                .await?;
        }

        crate::rollup::mark_samples(&mut tx, agent.provider_id, samples.iter().map(|s| s.ts_ms))
            .await
            .map_err(classify)?;
        let finished_commands = records
            .insert(&mut tx, agent, &devices, self.command_marks.as_ref())
            .await?;

        let inserted = sqlx::query(
            "INSERT INTO ingested_batches (agent_id, seq, provider_id, sample_count, record_count) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(agent.agent_id)
        .bind(seq)
        .bind(agent.provider_id)
        .bind(samples.len() as i64)
        .bind(batch.records.len() as i64)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(err) if db::is_unique_violation(&err) => {
                tracing::debug!(agent = %agent.agent_id, seq, "Batch stored concurrently by another writer.");
                return Ok(StoreOutcome::Duplicate);
            }
            Err(err) => return Err(classify(err)),
        }
        if settled_below > agent_settled {
            let advanced = sqlx::query(
                "UPDATE agents SET settled_below = $2 WHERE id = $1 AND settled_below < $2",
            )
            .bind(agent.agent_id)
            .bind(settled_below)
            .execute(&mut *tx)
            .await
            .map_err(classify)?
            .rows_affected();
            if advanced == 1 {
                sqlx::query("DELETE FROM ingested_batches WHERE agent_id = $1 AND seq < $2")
                    .bind(agent.agent_id)
                    .bind(settled_below)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
            }
        }
        let observed = self
            .observer
            .as_ref()
            .map(|_| rows.iter().map(|(_, r)| *r).collect());
        tx.commit().await.map_err(classify)?;
        // Ingest lag: how old the batch's newest sample is once stored (a backlog drained after an outage
        // shows as a long tail).
        if let Some(newest) = samples.iter().map(|s| s.ts_ms).max() {
            let lag_ms = (Utc::now().timestamp_millis() - newest).max(0);
            metrics::histogram!("octoisp_ingest_lag_seconds").record(lag_ms as f64 / 1000.0);
        }

        // The rows are final now; the queue jobs of those commands are done (a failure here only leaves a job
        // that the dispatcher completes when it next sees the finished row).
        // One script call for the whole batch.
        if let Some(queue) = &self.command_queue
            && !finished_commands.is_empty()
        {
            let jobs: Vec<(Uuid, Option<u32>)> =
                finished_commands.iter().map(|id| (*id, None)).collect();
            if let Err(err) = queue.complete_many(&jobs).await {
                tracing::debug!(commands = jobs.len(), error = %err, "Cannot complete the commands' queue jobs.");
            }
            // Their streams' leases need no defer any more (see `crate::commands::waits`).
            if let Some(waits) = &self.result_waits {
                waits.settled(&finished_commands);
            }
        }
        if let (Some(observer), Some(rows)) = (&self.observer, observed) {
            let msg = StoredSamples {
                provider_id: agent.provider_id,
                rows,
                stored_at: Instant::now(),
            };
            if observer.send(msg).await.is_err() {
                tracing::debug!("The sample observer is gone.");
            }
        }
        if !learnt.is_empty() {
            lock(&self.series).insert_all(agent.agent_id, learnt);
        }
        if !learnt_devices.is_empty() {
            lock(&self.devices).insert_all((agent.provider_id, agent.pop_id), learnt_devices);
        }
        Ok(StoreOutcome::Stored {
            samples: samples.len() as u64,
            records: batch.records.len() as u64,
        })
    }

    /// The id of every device key (cleaned), from the cache or registered in `tx`; and the ids learnt from the
    /// database, to cache once the transaction commits.
    async fn resolve_devices(
        &self,
        tx: &mut PgConnection,
        agent: &AgentRecord,
        keys: &BTreeSet<&str>,
    ) -> Result<(HashMap<String, Uuid>, HashMap<String, Uuid>), StoreError> {
        let mut found = HashMap::with_capacity(keys.len());
        let mut missing = BTreeSet::new();
        {
            let cache = lock(&self.devices);
            let map = cache.group(&(agent.provider_id, agent.pop_id));
            for key in keys {
                let key = clean(key);
                match map.and_then(|m| m.get(key.as_ref())) {
                    Some(id) => {
                        found.insert(key.into_owned(), *id);
                    }
                    None => {
                        missing.insert(key.into_owned());
                    }
                }
            }
        }
        let learnt = upsert_devices(tx, agent, &missing).await?;
        found.extend(learnt.iter().map(|(k, v)| (k.clone(), *v)));
        Ok((found, learnt))
    }

    /// Cached series ids for the local ids used by `samples` and `defs`.
    fn cached_series(
        &self,
        agent: Uuid,
        samples: &[Sample],
        defs: &[&SeriesDef],
    ) -> HashMap<u64, i64> {
        let cache = lock(&self.series);
        let Some(map) = cache.group(&agent) else {
            return HashMap::new();
        };
        let mut found = HashMap::new();
        let ids = samples
            .iter()
            .map(|s| s.series)
            .chain(defs.iter().map(|d| d.id));
        for id in ids {
            if let std::collections::hash_map::Entry::Vacant(slot) = found.entry(id)
                && let Some(series_id) = map.get(&id)
            {
                slot.insert(*series_id);
            }
        }
        found
    }

    /// Partition names of the given days (days since the Unix epoch), creating missing partitions.
    async fn partitions_for(
        &self,
        days: &BTreeSet<i64>,
    ) -> Result<HashMap<i64, Arc<str>>, StoreError> {
        let mut found = HashMap::with_capacity(days.len());
        let mut missing = Vec::new();
        {
            let cache = lock(&self.partitions);
            for day in days {
                match cache.get(day) {
                    Some(name) => {
                        found.insert(*day, name.clone());
                    }
                    None => missing.push(*day),
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let dates: Vec<NaiveDate> = missing.iter().filter_map(|d| day_to_date(*d)).collect();
        let created = db::sample_partitions(&self.pool, &dates)
            .await
            .map_err(from_db)?;
        let mut cache = lock(&self.partitions);
        for (date, name) in created {
            let day = date_to_day(date);
            let name: Arc<str> = name.into();
            cache.insert(day, name.clone());
            found.insert(day, name);
        }
        Ok(found)
    }

    async fn copy_rows(
        &self,
        conn: &mut PgConnection,
        table: &str,
        provider_id: Uuid,
        rows: &[CopyRow],
    ) -> Result<(), StoreError> {
        let result = copy_samples(conn, table, provider_id, rows).await;
        if let Err(err) = &result
            && db::sqlstate(err).as_deref() == Some(UNDEFINED_TABLE)
        {
            tracing::warn!(
                partition = table,
                "Sample partition vanished; forgetting cached partitions."
            );
            lock(&self.partitions).clear();
        }
        result.map(|_| ()).map_err(classify)
    }
}

/// Sends `rows` to `table` (a `samples` partition, or `samples` itself for a role that row security does not
/// bind) with one binary `COPY`. Returns the number of rows PostgreSQL took.
pub async fn copy_samples(
    conn: &mut PgConnection,
    table: &str,
    provider_id: Uuid,
    rows: &[CopyRow],
) -> Result<u64, sqlx::Error> {
    let statement = format!(
        "COPY {} (provider_id, series_id, ts, value) FROM STDIN (FORMAT binary)",
        quote_ident(table)
    );
    let mut copy = conn.copy_in_raw(&statement).await?;
    copy.send(encode_copy(provider_id, rows)).await?;
    copy.finish().await
}

/// Encodes rows `(provider_id, series_id, ts, value)` in PostgreSQL's binary COPY format: the header, per row a
/// field count and each field as length + big-endian bytes (uuid 16, int8 8, timestamptz 8 as microseconds since
/// 2000-01-01, float8 8 as IEEE bits), then the trailer.
pub fn encode_copy(provider_id: Uuid, rows: &[CopyRow]) -> Vec<u8> {
    const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
    const ROW_LEN: usize = 2 + (4 + 16) + 3 * (4 + 8);
    let mut buf = Vec::with_capacity(SIGNATURE.len() + 8 + rows.len() * ROW_LEN + 2);
    buf.extend_from_slice(SIGNATURE);
    buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
    buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    let provider = provider_id.as_bytes();
    for row in rows {
        buf.extend_from_slice(&4i16.to_be_bytes());
        buf.extend_from_slice(&16i32.to_be_bytes());
        buf.extend_from_slice(provider);
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&row.series_id.to_be_bytes());
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&row.ts_us.to_be_bytes());
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&row.value.to_bits().to_be_bytes());
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    buf
}

/// Checks sample times; returns the distinct UTC days (days since the Unix epoch) they fall on.
fn check_samples(samples: &[Sample], now_ms: i64) -> Result<BTreeSet<i64>, StoreError> {
    let max_ms = now_ms.saturating_add(MAX_SAMPLE_AHEAD_MS);
    let mut days = BTreeSet::new();
    let mut last_day = None;
    for s in samples {
        if s.ts_ms < MIN_SAMPLE_MS || s.ts_ms > max_ms {
            return Err(StoreError::Malformed(format!(
                "a sample of series {} has time {} ({} ms since the Unix epoch), outside the accepted range \
                 2000-01-01 to one day past the control plane's clock ({})",
                s.series,
                fmt_ms(s.ts_ms),
                s.ts_ms,
                fmt_ms(now_ms)
            )));
        }
        let day = s.ts_ms.div_euclid(DAY_MS);
        if last_day != Some(day) {
            days.insert(day);
            last_day = Some(day);
        }
    }
    if days.len() > MAX_DAYS_PER_BATCH {
        return Err(StoreError::Malformed(format!(
            "the samples span {} days; a batch may span at most {MAX_DAYS_PER_BATCH}",
            days.len()
        )));
    }
    Ok(days)
}

/// Checks series definitions; returns them without repeated ids (the first definition of an id wins).
fn check_defs(defs: &[SeriesDef]) -> Result<Vec<&SeriesDef>, StoreError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(defs.len());
    for d in defs {
        to_i64(d.id, "series id")?;
        if d.device_key.is_empty() || d.metric.is_empty() {
            return Err(StoreError::Malformed(format!(
                "series {} has an empty device key or metric name",
                d.id
            )));
        }
        if seen.insert(d.id) {
            out.push(d);
        }
    }
    Ok(out)
}

/// Inserts the devices named by `keys` (cleaned) that do not exist yet; returns the id of every key.
async fn upsert_devices(
    conn: &mut PgConnection,
    agent: &AgentRecord,
    keys: &BTreeSet<String>,
) -> Result<HashMap<String, Uuid>, StoreError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    sqlx::query(
        "INSERT INTO devices (provider_id, pop_id, device_key) \
         SELECT $1, $2, k FROM unnest($3::text[]) AS k \
         ON CONFLICT (provider_id, pop_id, device_key) DO NOTHING",
    )
    .bind(agent.provider_id)
    .bind(agent.pop_id)
    .bind(&keys)
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    let rows: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT device_key, id FROM devices WHERE provider_id = $1 AND pop_id = $2 AND device_key = ANY($3)",
    )
    .bind(agent.provider_id)
    .bind(agent.pop_id)
    .bind(&keys)
    .fetch_all(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(rows.into_iter().collect())
}

/// Inserts series definitions not stored yet (sorted by local id, so concurrent writers lock in one order).
async fn insert_series(
    conn: &mut PgConnection,
    agent: &AgentRecord,
    defs: &[&SeriesDef],
    devices: &HashMap<String, Uuid>,
) -> Result<(), StoreError> {
    if defs.is_empty() {
        return Ok(());
    }
    let mut defs = defs.to_vec();
    defs.sort_unstable_by_key(|d| d.id);
    let n = defs.len();
    let (mut local, mut device, mut metric, mut labels, mut kind) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for d in defs {
        let Some(device_id) = devices.get(clean(&d.device_key).as_ref()) else {
            return Err(StoreError::Malformed(format!(
                "device `{}` could not be registered",
                d.device_key
            )));
        };
        local.push(d.id as i64);
        device.push(*device_id);
        metric.push(clean(&d.metric).into_owned());
        labels.push(pairs_json(&d.labels));
        kind.push(match d.kind {
            MetricKind::Gauge => "gauge",
            MetricKind::Counter => "counter",
        });
    }
    sqlx::query(
        "INSERT INTO series (provider_id, agent_id, local_id, device_id, metric, labels, kind) \
         SELECT $1, $2, l, d, m, lab::jsonb, k \
         FROM unnest($3::bigint[], $4::uuid[], $5::text[], $6::text[], $7::text[]) AS u(l, d, m, lab, k) \
         ON CONFLICT (agent_id, local_id) DO NOTHING",
    )
    .bind(agent.provider_id)
    .bind(agent.agent_id)
    .bind(&local)
    .bind(&device)
    .bind(&metric)
    .bind(&labels)
    .bind(&kind)
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(())
}

/// Series ids of the agent's local ids found in the database.
async fn resolve_series(
    conn: &mut PgConnection,
    agent_id: Uuid,
    wanted: &BTreeSet<u64>,
) -> Result<HashMap<u64, i64>, StoreError> {
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<i64> = wanted
        .iter()
        .filter_map(|id| i64::try_from(*id).ok())
        .collect();
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT local_id, id FROM series WHERE agent_id = $1 AND local_id = ANY($2)",
    )
    .bind(agent_id)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(rows
        .into_iter()
        .map(|(local, id)| (local as u64, id))
        .collect())
}

fn fmt_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map_or_else(|| "an unrepresentable time".to_owned(), |t| t.to_rfc3339())
}

fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v)
        .map_err(|_| StoreError::Malformed(format!("{what} {v} is larger than 2^63 - 1")))
}

fn day_to_date(day: i64) -> Option<NaiveDate> {
    DateTime::from_timestamp(day.checked_mul(86_400)?, 0).map(|t| t.date_naive())
}

fn date_to_day(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp().div_euclid(86_400))
}

/// The first key of the advisory lock of a batch: the agent id folded to 32 bits (collisions only make two
/// batches wait for each other).
fn fold_uuid(id: Uuid) -> i32 {
    let v = id.as_u128();
    let x = (v as u64) ^ ((v >> 64) as u64);
    ((x as u32) ^ ((x >> 32) as u32)) as i32
}

/// Quotes an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the caches inconsistent (each update is one insert or clear).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn from_db(err: DbError) -> StoreError {
    match err {
        DbError::Query { source, .. } | DbError::Connect { source, .. } => classify(source),
        other => StoreError::Transient(sqlx::Error::Protocol(other.to_string())),
    }
}

/// Whether `err` says a device id the batch used no longer exists (see [`DeviceCache`]).
fn stale_device(err: &StoreError) -> bool {
    match err {
        StoreError::StaleDevices(_) => true,
        StoreError::Transient(e) => db::sqlstate(e).as_deref() == Some(FOREIGN_KEY_VIOLATION),
        _ => false,
    }
}

fn classify(err: sqlx::Error) -> StoreError {
    match db::sqlstate(&err) {
        Some(code) if code.starts_with(DATA_EXCEPTION_CLASS) => {
            StoreError::Malformed(format!("PostgreSQL refused a value of the batch: {err}"))
        }
        _ => StoreError::Transient(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_encoding_has_header_rows_and_trailer() {
        let provider = Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
        let rows = [CopyRow {
            series_id: 7,
            ts_us: 1,
            value: f64::NAN,
        }];
        let buf = encode_copy(provider, &rows);
        assert_eq!(&buf[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(buf.len(), 19 + 58 + 2);
        assert_eq!(&buf[19..21], &4i16.to_be_bytes());
        assert_eq!(&buf[25..41], provider.as_bytes());
        assert_eq!(&buf[45..53], &7i64.to_be_bytes());
        assert!(f64::from_bits(u64::from_be_bytes(buf[69..77].try_into().unwrap())).is_nan());
        assert_eq!(&buf[buf.len() - 2..], &(-1i16).to_be_bytes());
    }

    #[test]
    fn sample_times_outside_the_range_are_malformed() {
        let now = 1_800_000_000_000;
        let ok = Sample {
            series: 1,
            ts_ms: now,
            value: 1.0,
        };
        assert_eq!(check_samples(&[ok], now).unwrap().len(), 1);
        for bad in [
            MIN_SAMPLE_MS - 1,
            now + MAX_SAMPLE_AHEAD_MS + 1,
            i64::MIN,
            i64::MAX,
        ] {
            let s = Sample {
                series: 1,
                ts_ms: bad,
                value: 1.0,
            };
            assert!(
                matches!(check_samples(&[s], now), Err(StoreError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn days_round_trip_through_dates() {
        for day in [10_957, 20_000, 29_000] {
            assert_eq!(date_to_day(day_to_date(day).unwrap()), day);
        }
    }
}
