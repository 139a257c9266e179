//! Metric rollups: the levels (5 min, 1 h, 1 d, ISO week, calendar month), the incremental rollup job, retention
//! by whole partitions, and the choice of resolution for a graph. Schema and invariants:
//! `migrations/0008_metrics.sql`; overview: `docs/METRICS.md`.
//!
//! The job, per provider with work (found through `octoisp_rollup_providers`, SECURITY DEFINER) and per level in
//! order (5m, 1h, 1d, 7d, 30d, so that one pass cascades):
//!
//! 1. looks up the distinct *closed* buckets with pending rows (bucket end + grace <= now), and makes sure their
//!    partitions exist (`octoisp_rollup_partitions`, in a transaction of its own);
//! 2. in one tenant transaction: claims the pending rows of those buckets (`DELETE ... WHERE id IN (SELECT ...
//!    FOR UPDATE SKIP LOCKED) RETURNING`, so instances never take the same rows), then per bucket in time order
//!    takes an advisory lock on (provider, level, bucket), recomputes the whole bucket with one
//!    `INSERT ... SELECT ... GROUP BY series_id ... ON CONFLICT DO UPDATE`, and appends pending rows for the parent
//!    buckets; commits. A job killed anywhere before the commit leaves the pending rows and the rollups as they
//!    were, and the rerun recomputes whole buckets: nothing counts twice.
//!
//! A bucket whose source rows are no longer retained (a sample older than raw retention, arriving late) is not
//! recomputed: its pending rows are dropped with a warning, and the rollup keeps what it had.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::Deserialize;
use sqlx::{PgConnection, PgPool};
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::{self, DbError};

/// Seconds since the Unix epoch of Monday 2000-01-03T00:00:00Z, the origin of the weekly buckets.
const WEEK_ORIGIN: i64 = 946_857_600;
/// Most buckets recomputed in one transaction, per level (a 5-minute bucket is cheap, a month is not).
const BUCKETS_PER_TX: [i64; 5] = [24, 12, 4, 1, 1];

/// A rollup level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// 5 minutes.
    M5,
    /// 1 hour.
    H1,
    /// 1 day (UTC).
    D1,
    /// 7 days: ISO weeks, Monday 00:00 UTC.
    D7,
    /// 30 days: calendar months, UTC.
    D30,
}

impl Level {
    /// Every level, finest first.
    pub const ALL: [Level; 5] = [Level::M5, Level::H1, Level::D1, Level::D7, Level::D30];

    /// The name used in the database and the API: `5m`, `1h`, `1d`, `7d`, `30d`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::M5 => "5m",
            Level::H1 => "1h",
            Level::D1 => "1d",
            Level::D7 => "7d",
            Level::D30 => "30d",
        }
    }

    /// The level named `s`.
    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// The rollup table.
    pub fn table(self) -> &'static str {
        match self {
            Level::M5 => "rollup_5m",
            Level::H1 => "rollup_1h",
            Level::D1 => "rollup_1d",
            Level::D7 => "rollup_7d",
            Level::D30 => "rollup_30d",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Levels whose buckets contain this level's buckets and are computed after it.
    pub fn parents(self) -> &'static [Level] {
        match self {
            Level::M5 => &[Level::H1],
            Level::H1 => &[Level::D1],
            Level::D1 => &[Level::D7, Level::D30],
            Level::D7 | Level::D30 => &[],
        }
    }

    /// Fixed bucket length in seconds (`None` for calendar months).
    fn fixed_secs(self) -> Option<i64> {
        match self {
            Level::M5 => Some(300),
            Level::H1 => Some(3600),
            Level::D1 => Some(86_400),
            Level::D7 => Some(7 * 86_400),
            Level::D30 => None,
        }
    }

    /// Start of the bucket holding `t` (same as `octoisp_rollup_bucket` in SQL).
    pub fn bucket(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let secs = t.timestamp();
        match self {
            Level::D7 => {
                let len = 7 * 86_400;
                from_secs(WEEK_ORIGIN + (secs - WEEK_ORIGIN).div_euclid(len) * len)
            }
            Level::D30 => month_start(t.year(), t.month()),
            other => {
                let len = other.fixed_secs().unwrap_or(300);
                from_secs(secs.div_euclid(len) * len)
            }
        }
    }

    /// End (exclusive) of the bucket starting at `bucket`.
    pub fn bucket_end(self, bucket: DateTime<Utc>) -> DateTime<Utc> {
        match self.fixed_secs() {
            Some(len) => bucket + chrono::Duration::seconds(len),
            None => {
                let (y, m) = (bucket.year(), bucket.month());
                if m == 12 {
                    month_start(y + 1, 1)
                } else {
                    month_start(y, m + 1)
                }
            }
        }
    }

    /// Number of buckets of this level that intersect `[from, to)` (`to > from`).
    pub fn buckets_in(self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        let last = to - chrono::Duration::microseconds(1);
        match self.fixed_secs() {
            Some(len) => {
                let (a, b) = (self.bucket(from).timestamp(), self.bucket(last).timestamp());
                (b - a) / len + 1
            }
            None => {
                let months = |t: DateTime<Utc>| i64::from(t.year()) * 12 + i64::from(t.month0());
                months(last) - months(from) + 1
            }
        }
    }
}

fn from_secs(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

fn month_start(year: i32, month: u32) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| Utc.from_utc_datetime(&t))
        .unwrap_or_default()
}

/// The `[metrics]` section: rollup job, retention per resolution, graph sizes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Seconds between two passes of the rollup job (workers role).
    pub rollup_interval_secs: u64,
    /// Seconds after its end before a bucket is rolled up (samples arriving later re-mark it, which costs a
    /// recompute); at least 10.
    pub grace_secs: u64,
    /// Seconds between two retention passes.
    pub retention_interval_secs: u64,
    /// Days raw samples are kept (whole UTC-day partitions are dropped).
    pub retention_raw_days: u32,
    /// Days 5-minute rollups are kept; at least 32, as coarser levels (p95) are computed from them.
    pub retention_5m_days: u32,
    /// Days hourly rollups are kept.
    pub retention_1h_days: u32,
    /// Days daily rollups are kept.
    pub retention_1d_days: u32,
    /// Days weekly rollups are kept.
    pub retention_7d_days: u32,
    /// Days monthly rollups are kept.
    pub retention_30d_days: u32,
    /// Points of a graph when the request does not say.
    pub default_points: u32,
    /// Most points a graph request may ask for.
    pub max_points: u32,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            rollup_interval_secs: 5,
            grace_secs: 60,
            retention_interval_secs: 3600,
            retention_raw_days: 7,
            retention_5m_days: 35,
            retention_1h_days: 400,
            retention_1d_days: 5 * 366,
            retention_7d_days: 5 * 366,
            retention_30d_days: 5 * 366,
            default_points: 600,
            max_points: 5000,
        }
    }
}

impl MetricsConfig {
    /// Checks the values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.rollup_interval_secs == 0 || self.retention_interval_secs == 0 {
            return Err(
                "metrics.rollup_interval_secs and metrics.retention_interval_secs must be > 0"
                    .into(),
            );
        }
        if self.grace_secs < 10 {
            return Err("metrics.grace_secs must be at least 10".into());
        }
        if self.retention_raw_days < 2 {
            return Err("metrics.retention_raw_days must be at least 2".into());
        }
        if self.retention_5m_days < 32 || self.retention_5m_days < self.retention_raw_days {
            return Err(
                "metrics.retention_5m_days must be at least 32 (monthly rollups are computed from the 5-minute \
                 ones) and at least metrics.retention_raw_days"
                    .into(),
            );
        }
        let coarse = [
            ("retention_1h_days", self.retention_1h_days),
            ("retention_1d_days", self.retention_1d_days),
            ("retention_7d_days", self.retention_7d_days),
            ("retention_30d_days", self.retention_30d_days),
        ];
        for (key, days) in coarse {
            if days < self.retention_5m_days {
                return Err(format!(
                    "metrics.{key} must be at least metrics.retention_5m_days"
                ));
            }
        }
        if self.default_points == 0
            || self.max_points < self.default_points
            || self.max_points > 100_000
        {
            return Err(
                "metrics.default_points must be > 0 and at most metrics.max_points (at most 100000)".into(),
            );
        }
        Ok(())
    }

    /// How long raw samples are kept.
    pub fn raw_retention(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.retention_raw_days))
    }

    /// How long rollups of `level` are kept.
    pub fn retention(&self, level: Level) -> chrono::Duration {
        let days = match level {
            Level::M5 => self.retention_5m_days,
            Level::H1 => self.retention_1h_days,
            Level::D1 => self.retention_1d_days,
            Level::D7 => self.retention_7d_days,
            Level::D30 => self.retention_30d_days,
        };
        chrono::Duration::days(i64::from(days))
    }

    /// The grace after a bucket's end.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_secs)
    }
}

/// The resolution of a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Raw samples.
    Raw,
    /// A rollup level.
    Rollup(Level),
}

impl Resolution {
    /// `raw`, `5m`, ... `30d`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Raw => "raw",
            Resolution::Rollup(l) => l.as_str(),
        }
    }
}

/// Whether raw samples may answer a graph starting at `from`: raw retention still covers it.
pub fn raw_covers(cfg: &MetricsConfig, from: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    from >= now - cfg.raw_retention()
}

/// The finest rollup level with at most `points` buckets in `[from, to)` whose retention still covers `from`;
/// when none has few enough buckets, the coarsest level still covering `from`, and `30d` if none does.
pub fn choose_level(
    cfg: &MetricsConfig,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
    points: u32,
) -> Level {
    let covers = |l: Level| from >= now - cfg.retention(l);
    Level::ALL
        .into_iter()
        .find(|l| covers(*l) && l.buckets_in(from, to) <= i64::from(points))
        .or_else(|| Level::ALL.into_iter().rev().find(|l| covers(*l)))
        .unwrap_or(Level::D30)
}

/// Errors of the rollup job.
#[derive(Debug, Error)]
pub enum RollupError {
    /// The database failed.
    #[error("rollup job: {0}")]
    Db(#[from] DbError),
    /// A query failed.
    #[error("rollup job: cannot {op} (provider {provider}, level {level}): {source}")]
    Query {
        /// What was being done.
        op: &'static str,
        /// The provider.
        provider: Uuid,
        /// The level.
        level: &'static str,
        /// The error.
        source: sqlx::Error,
    },
    /// The test hook stopped the job before its commit.
    #[error("rollup job aborted by its test hook after {0} buckets")]
    Aborted(usize),
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Buckets recomputed.
    pub buckets: u64,
    /// Rollup rows written.
    pub rows: u64,
    /// Buckets skipped because their source is no longer retained.
    pub expired: u64,
}

/// The rollup job of one instance (any number of instances may run it at once).
#[derive(Debug)]
pub struct RollupJob {
    pool: PgPool,
    cfg: MetricsConfig,
    partitions: Mutex<HashSet<String>>,
    abort_after: Option<(Level, usize)>,
}

impl RollupJob {
    /// A job writing through `pool` (the application role).
    pub fn new(pool: PgPool, cfg: MetricsConfig) -> RollupJob {
        RollupJob {
            pool,
            cfg,
            partitions: Mutex::new(HashSet::new()),
            abort_after: None,
        }
    }

    /// Test hook: every transaction of the job on `level` fails (and rolls back) once it has recomputed `n`
    /// buckets, before its commit, as if the process had been killed there.
    pub fn abort_after_buckets(mut self, level: Level, n: usize) -> RollupJob {
        self.abort_after = Some((level, n));
        self
    }

    /// Runs passes every `rollup_interval_secs` until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(self.cfg.rollup_interval_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.run_once().await {
                Ok(s) if s.buckets > 0 => {
                    tracing::debug!(buckets = s.buckets, rows = s.rows, "Rollup pass finished.");
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "Rollup pass failed; retrying next pass."),
            }
        }
    }

    /// One pass: every provider with closed pending buckets, every level, until nothing closed is pending.
    pub async fn run_once(&self) -> Result<PassStats, RollupError> {
        let providers: Vec<Uuid> = sqlx::query_scalar(
            "SELECT octoisp_rollup_providers(make_interval(secs => $1::float8))",
        )
        .bind(self.cfg.grace_secs as f64)
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::query("list providers with pending rollups"))?;
        let mut total = PassStats::default();
        for provider in providers {
            for level in Level::ALL {
                loop {
                    let s = self.step(provider, level).await?;
                    total.buckets += s.buckets;
                    total.rows += s.rows;
                    total.expired += s.expired;
                    if s.buckets + s.expired == 0 {
                        break;
                    }
                }
            }
        }
        Ok(total)
    }

    /// One transaction: up to a few closed buckets of `level` of `provider`.
    async fn step(&self, provider: Uuid, level: Level) -> Result<PassStats, RollupError> {
        let q = |op| {
            move |source| RollupError::Query {
                op,
                provider,
                level: level.as_str(),
                source,
            }
        };
        let grace = self.cfg.grace_secs as f64;
        let mut tx = db::tenant_tx(&self.pool, provider).await?;
        let candidates: Vec<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT DISTINCT bucket FROM rollup_pending \
             WHERE provider_id = $1 AND level = $2 \
               AND octoisp_rollup_bucket_end(level, bucket) + make_interval(secs => $3::float8) <= now() \
             ORDER BY bucket LIMIT $4",
        )
        .bind(provider)
        .bind(level.as_str())
        .bind(grace)
        .bind(BUCKETS_PER_TX[level.index()])
        .fetch_all(&mut *tx)
        .await
        .map_err(q("look up pending buckets"))?;
        tx.commit().await.map_err(q("end the lookup"))?;
        if candidates.is_empty() {
            return Ok(PassStats::default());
        }
        let now = Utc::now();
        let source_kept = match level {
            Level::M5 => now - self.cfg.raw_retention(),
            _ => now - self.cfg.retention(Level::M5),
        };
        let live: Vec<DateTime<Utc>> = candidates
            .iter()
            .copied()
            .filter(|b| *b >= source_kept)
            .collect();
        self.ensure_partitions(level, &live).await?;

        let mut tx = db::tenant_tx(&self.pool, provider).await?;
        let claimed: Vec<DateTime<Utc>> = sqlx::query_scalar(
            "DELETE FROM rollup_pending WHERE id IN ( \
                 SELECT id FROM rollup_pending WHERE provider_id = $1 AND level = $2 AND bucket = ANY($3) \
                 FOR UPDATE SKIP LOCKED) \
             RETURNING bucket",
        )
        .bind(provider)
        .bind(level.as_str())
        .bind(&candidates)
        .fetch_all(&mut *tx)
        .await
        .map_err(q("claim pending rows"))?;
        let claimed: BTreeSet<DateTime<Utc>> = claimed.into_iter().collect();
        let mut stats = PassStats::default();
        let mut parents: BTreeSet<(Level, DateTime<Utc>)> = BTreeSet::new();
        for bucket in claimed {
            if bucket < source_kept {
                tracing::warn!(%provider, level = level.as_str(), %bucket,
                    "Samples arrived for a bucket whose source is no longer retained; its rollup is left as it was.");
                stats.expired += 1;
                continue;
            }
            if self.abort_after == Some((level, stats.buckets as usize)) {
                return Err(RollupError::Aborted(stats.buckets as usize));
            }
            sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                .bind(lock_key(provider, level))
                .bind(bucket.timestamp().div_euclid(300) as i32)
                .execute(&mut *tx)
                .await
                .map_err(q("lock a bucket"))?;
            let rows = recompute(&mut tx, provider, level, bucket)
                .await
                .inspect_err(|err| {
                    if db::sqlstate(err).as_deref() == Some("23514") {
                        // No partition for the row: our cache says it exists, retention dropped it since.
                        lock_set(&self.partitions).clear();
                    }
                })
                .map_err(q("recompute a bucket"))?;
            stats.buckets += 1;
            stats.rows += rows;
            for parent in level.parents() {
                parents.insert((*parent, parent.bucket(bucket)));
            }
        }
        if self.abort_after == Some((level, stats.buckets as usize)) && stats.buckets > 0 {
            return Err(RollupError::Aborted(stats.buckets as usize));
        }
        if !parents.is_empty() {
            let (levels, buckets): (Vec<&str>, Vec<DateTime<Utc>>) =
                parents.iter().map(|(l, b)| (l.as_str(), *b)).unzip();
            sqlx::query(
                "INSERT INTO rollup_pending (provider_id, level, bucket) \
                 SELECT $1, l, b FROM unnest($2::text[], $3::timestamptz[]) AS u(l, b)",
            )
            .bind(provider)
            .bind(&levels)
            .bind(&buckets)
            .execute(&mut *tx)
            .await
            .map_err(q("mark parent buckets"))?;
        }
        tx.commit().await.map_err(q("commit"))?;
        Ok(stats)
    }

    async fn ensure_partitions(
        &self,
        level: Level,
        buckets: &[DateTime<Utc>],
    ) -> Result<(), RollupError> {
        let missing: Vec<DateTime<Utc>> = {
            let known = lock_set(&self.partitions);
            buckets
                .iter()
                .copied()
                .filter(|b| !known.contains(&partition_key(level, *b)))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        rollup_partitions(&self.pool, level, &missing).await?;
        let mut known = lock_set(&self.partitions);
        known.extend(missing.iter().map(|b| partition_key(level, *b)));
        Ok(())
    }

    /// Drops the partitions of every level (raw samples included) that retention no longer covers; returns the
    /// names dropped.
    pub async fn retention_once(&self) -> Result<Vec<String>, RollupError> {
        let now = Utc::now();
        let mut levels: Vec<(&str, chrono::Duration)> = vec![("raw", self.cfg.raw_retention())];
        levels.extend(
            Level::ALL
                .into_iter()
                .map(|l| (l.as_str(), self.cfg.retention(l))),
        );
        let mut dropped = Vec::new();
        for (level, keep) in levels {
            let names: Vec<String> =
                sqlx::query_scalar("SELECT octoisp_drop_metric_partitions($1, $2)")
                    .bind(level)
                    .bind(now - keep)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(DbError::query("drop expired metric partitions"))?;
            for name in &names {
                tracing::info!(partition = %name, level, "Retention: partition dropped.");
            }
            dropped.extend(names);
        }
        if !dropped.is_empty() {
            lock_set(&self.partitions).clear();
        }
        Ok(dropped)
    }

    /// Runs retention every `retention_interval_secs` until `shutdown`.
    pub async fn run_retention(&self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(self.cfg.retention_interval_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(err) = self.retention_once().await {
                tracing::warn!(error = %err, "Metric retention failed; retrying next pass.");
            }
        }
    }
}

/// Makes sure the partitions of `level` holding `buckets` exist (`octoisp_rollup_partitions`, in a transaction
/// of its own).
pub async fn rollup_partitions(
    pool: &PgPool,
    level: Level,
    buckets: &[DateTime<Utc>],
) -> Result<Vec<String>, DbError> {
    if buckets.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT octoisp_rollup_partitions($1, $2)")
        .bind(level.as_str())
        .bind(buckets)
        .fetch_all(pool)
        .await
        .map_err(DbError::query("create rollup partitions"))
}

/// Appends a pending 5-minute rollup row for each distinct bucket of `ts_ms` (sample times, ms since the Unix
/// epoch) of `provider`: the one statement the ingest adds to a batch's transaction.
pub async fn mark_samples(
    conn: &mut PgConnection,
    provider: Uuid,
    ts_ms: impl Iterator<Item = i64>,
) -> Result<(), sqlx::Error> {
    let buckets: BTreeSet<i64> = ts_ms.map(|t| t.div_euclid(300_000)).collect();
    if buckets.is_empty() {
        return Ok(());
    }
    let buckets: Vec<DateTime<Utc>> = buckets.into_iter().map(|b| from_secs(b * 300)).collect();
    sqlx::query(
        "INSERT INTO rollup_pending (provider_id, level, bucket) \
         SELECT $1, '5m', b FROM unnest($2::timestamptz[]) AS b",
    )
    .bind(provider)
    .bind(&buckets)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Recomputes one bucket of `level` for every series of `provider` with one statement; returns the rows written.
///
/// The 5-minute level reads the raw samples through their one index, `(series_id, ts)`: one range per series of
/// the provider (an `= ANY` over the provider's series ids), rather than through an index of its own on
/// `(provider_id, ts)`, which would cost every ingest COPY a second index insert per row (about 30-45 % more
/// insert time, measured).
async fn recompute(
    conn: &mut PgConnection,
    provider: Uuid,
    level: Level,
    bucket: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    const UPSERT: &str = " ON CONFLICT (series_id, bucket) DO UPDATE SET min = EXCLUDED.min, \
        max = EXCLUDED.max, sum = EXCLUDED.sum, count = EXCLUDED.count, last = EXCLUDED.last, \
        last_ts = EXCLUDED.last_ts, p95 = EXCLUDED.p95";
    let sql = match level {
        Level::M5 => format!(
            "INSERT INTO rollup_5m (provider_id, series_id, bucket, min, max, sum, count, last, last_ts, p95) \
             SELECT $1, series_id, $2, min(value), max(value), sum(value), count(*), \
                    (array_agg(value ORDER BY ts DESC, value DESC))[1], max(ts), \
                    percentile_disc(0.95) WITHIN GROUP (ORDER BY value) \
             FROM samples \
             WHERE series_id = ANY (ARRAY(SELECT id FROM series WHERE provider_id = $1)) \
               AND provider_id = $1 AND ts >= $2 AND ts < $3 AND value <> 'NaN'::float8 \
             GROUP BY series_id{UPSERT}"
        ),
        // Coarser levels: from the 5-minute rows, as p95 is defined over the 5-minute averages.
        coarse => format!(
            "INSERT INTO {} (provider_id, series_id, bucket, min, max, sum, count, last, last_ts, p95) \
             SELECT $1, series_id, $2, min(min), max(max), sum(sum), sum(count)::bigint, \
                    (array_agg(last ORDER BY last_ts DESC, last DESC))[1], max(last_ts), \
                    percentile_disc(0.95) WITHIN GROUP (ORDER BY sum / count) \
             FROM rollup_5m \
             WHERE provider_id = $1 AND bucket >= $2 AND bucket < $3 \
             GROUP BY series_id{UPSERT}",
            coarse.table()
        ),
    };
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(provider)
        .bind(bucket)
        .bind(level.bucket_end(bucket))
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
}

/// First key of a bucket's advisory lock: provider and level folded to 32 bits (collisions only serialize).
fn lock_key(provider: Uuid, level: Level) -> i32 {
    let v = provider.as_u128();
    let x = (v as u64) ^ ((v >> 64) as u64);
    (((x as u32) ^ ((x >> 32) as u32)) ^ (level.index() as u32).wrapping_mul(0x9e37_79b9)) as i32
}

fn partition_key(level: Level, bucket: DateTime<Utc>) -> String {
    let start = match level {
        Level::M5 => Level::D7.bucket(bucket),
        Level::H1 => Level::D30.bucket(bucket),
        _ => month_start(bucket.year(), 1),
    };
    format!("{}:{}", level.as_str(), start.timestamp())
}

fn lock_set(m: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    // The set is only a cache of existing partitions: a panic cannot leave it harmful.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn buckets_follow_utc_weeks_and_months() {
        let x = t("2026-11-29T20:23:45Z"); // a Sunday
        assert_eq!(Level::M5.bucket(x), t("2026-11-29T20:20:00Z"));
        assert_eq!(Level::H1.bucket(x), t("2026-11-29T20:00:00Z"));
        assert_eq!(Level::D1.bucket(x), t("2026-11-29T00:00:00Z"));
        assert_eq!(Level::D7.bucket(x), t("2026-11-23T00:00:00Z"));
        assert_eq!(Level::D30.bucket(x), t("2026-11-01T00:00:00Z"));
        assert_eq!(
            Level::D30.bucket_end(t("2026-12-01T00:00:00Z")),
            t("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            Level::D7.bucket(t("2026-11-30T00:00:00Z")),
            t("2026-11-30T00:00:00Z")
        );
    }

    #[test]
    fn bucket_counts() {
        let from = t("2026-01-01T00:00:00Z");
        assert_eq!(
            Level::M5.buckets_in(from, from + chrono::Duration::hours(1)),
            12
        );
        assert_eq!(
            Level::H1.buckets_in(from, from + chrono::Duration::days(30)),
            720
        );
        assert_eq!(Level::D30.buckets_in(from, t("2027-01-01T00:00:00Z")), 12);
        assert_eq!(
            Level::D30.buckets_in(t("2026-01-31T00:00:00Z"), t("2026-02-02T00:00:00Z")),
            2
        );
    }

    #[test]
    fn resolution_is_the_finest_that_fits_and_is_retained() {
        let cfg = MetricsConfig::default();
        let now = t("2026-11-29T20:00:00Z");
        let pick = |days: i64, points| {
            choose_level(&cfg, now - chrono::Duration::days(days), now, now, points)
        };
        assert_eq!(pick(1, 600), Level::M5);
        assert_eq!(pick(7, 600), Level::H1);
        assert_eq!(pick(30, 600), Level::D1);
        assert_eq!(pick(30, 1000), Level::H1);
        assert_eq!(pick(365, 600), Level::D1);
        // 5-minute rows are gone after 35 days even when the points would fit.
        assert_eq!(pick(40, 20_000), Level::H1);
        assert_eq!(pick(3 * 365, 600), Level::D7);
        assert_eq!(pick(3 * 365, 10), Level::D30);
    }

    #[test]
    fn defaults_validate() {
        MetricsConfig::default().validate().unwrap();
        let bad = MetricsConfig {
            retention_5m_days: 10,
            ..MetricsConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("retention_5m_days"));
    }
}
