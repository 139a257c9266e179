//! PostgreSQL access: the pool, the embedded migrations, and the two ways to open a transaction.
//!
//! Every query of the application runs as `octoisp_app`, which row-level security binds (it is neither superuser
//! nor BYPASSRLS and owns no table). A transaction sees rows only once its tenant is set:
//!
//! - [`tenant_tx`]: `app.provider_id` = the provider, transaction-local (`set_config(..., true)`). Everything that
//!   serves one provider (ingest of an agent's batch, a request of a provider's user) runs here.
//! - [`global_admin_tx`]: `app.global_admin = 'on'`, transaction-local; every policy lets it through. Only audited
//!   operations may use it: the operator CLI (providers, POPs, enrollment tokens, revocation) today, Global Admin
//!   requests once issue 3's `audit_log` exists; such a caller must write its audit row in the same transaction.
//!
//! A pooled connection outside those transactions has no tenant and sees nothing: after a transaction that set
//! the variables locally ends, they read back empty, which the policies treat as unset.
//!
//! Before a tenant is known (an agent's TLS handshake, an enrollment token), the registry calls three narrow
//! SECURITY DEFINER functions defined in `migrations/0002_agents.sql` instead.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use thiserror::Error;
use uuid::Uuid;

/// The schema, embedded at build time from `migrations/` at the workspace root.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Name of the role the application connects as (created by the first migration).
pub const APP_ROLE: &str = "octoisp_app";

/// How long [`connect`] and the pool wait for a connection before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled connection idle for longer than this is pinged before it is handed out (see [`connect`]).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

/// Errors of the database layer, with the operation that failed.
#[derive(Debug, Error)]
pub enum DbError {
    /// The URL is invalid or the server cannot be reached or refused us.
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect {
        /// Host, port and database (never the password).
        target: String,
        /// The underlying error.
        source: sqlx::Error,
    },
    /// Applying the migrations failed.
    #[error("cannot apply the migrations: {0}")]
    Migrate(#[from] MigrateError),
    /// A query failed.
    #[error("database error while trying to {op}: {source}")]
    Query {
        /// What was being done, such as `create provider`.
        op: &'static str,
        /// The underlying error.
        source: sqlx::Error,
    },
    /// The object named does not exist (or is not visible to this tenant).
    #[error("no {what} `{key}`")]
    NotFound {
        /// Kind of object, such as `provider`.
        what: &'static str,
        /// The slug or id asked for.
        key: String,
    },
    /// An object with that natural key exists already.
    #[error("{what} `{key}` already exists")]
    Conflict {
        /// Kind of object, such as `POP`.
        what: &'static str,
        /// The natural key that collides.
        key: String,
    },
    /// An argument was refused before reaching the database.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The argument, such as `slug`.
        what: &'static str,
        /// What was expected.
        reason: String,
    },
}

impl DbError {
    /// Wraps a query error with the operation it belongs to.
    pub fn query(op: &'static str) -> impl FnOnce(sqlx::Error) -> DbError {
        move |source| DbError::Query { op, source }
    }
}

/// True when `err` is PostgreSQL's unique violation (SQLSTATE 23505).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    sqlstate(err).as_deref() == Some(UNIQUE_VIOLATION)
}

/// The SQLSTATE of a database error, if `err` is one.
pub fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Opens a pool of at most `max_connections` connections to `url` and checks that one connection works.
///
/// sqlx pings every connection when it comes back to the pool (which also flushes a dropped transaction's
/// ROLLBACK) and, by default, again when it is handed out: two round trips per request besides the request's
/// own statements. Here a connection is pinged before use only when it sat idle for over a second, which is
/// when the server may have gone away (a restart); under load connections are reused within milliseconds and
/// the second ping is saved.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    let options: PgConnectOptions = url.parse().map_err(|source| DbError::Connect {
        target: "(unparsable URL)".to_owned(),
        source,
    })?;
    let target = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default database)")
    );
    let options = options.application_name("octoisp-controlplane");
    PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .map_err(|source| DbError::Connect { target, source })
}

/// Logs a warning when the server runs without autovacuum. Ingest grows `devices` and `series` by hundreds of
/// thousands of rows within minutes of a fleet connecting, and without the statistics autovacuum's ANALYZE keeps,
/// PostgreSQL plans lookups of a few keys as scans of a whole provider (the scale run measured seconds per
/// statement); the `last_seen` updates also leave dead rows that only VACUUM reclaims.
pub async fn warn_if_autovacuum_off(pool: &PgPool) {
    match sqlx::query_scalar::<_, String>("SELECT current_setting('autovacuum')")
        .fetch_one(pool)
        .await
    {
        Ok(v) if v == "off" => tracing::warn!(
            "PostgreSQL runs with autovacuum = off: table statistics and dead rows are not maintained, and \
             ingest and API queries slow down as tables grow. Turn it on (the default), or run VACUUM (ANALYZE) \
             regularly (docs/OPERATIONS.md)."
        ),
        Ok(_) => {}
        Err(err) => tracing::debug!(error = %err, "Cannot read the autovacuum setting."),
    }
}

/// Applies the pending migrations. `admin_pool` must connect as the role that owns the schema (and may create
/// the `octoisp_app` role if it is missing); never as `octoisp_app`. Safe to run from several instances at once
/// (sqlx serializes them with an advisory lock).
pub async fn migrate(admin_pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(admin_pool).await?;
    tracing::info!(
        latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0),
        "Database schema up to date."
    );
    Ok(())
}

/// Begins a transaction bound to `provider_id`: row-level security shows and accepts only that provider's rows
/// until the transaction ends (the setting is transaction-local, so the pooled connection forgets it).
pub async fn tenant_tx(
    pool: &PgPool,
    provider_id: Uuid,
) -> Result<Transaction<'static, Postgres>, DbError> {
    tenant_tx_planned(pool, provider_id, Plans::Cached).await
}

/// Ends a transaction that only read: dropping it queues a ROLLBACK that the pool sends with its release
/// ping, so the request does not wait a round trip for a COMMIT (nothing was written, so the two are the same).
pub fn end_read(tx: Transaction<'static, Postgres>) {
    drop(tx);
}

/// How the statements of a transaction are planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plans {
    /// PostgreSQL's default: a prepared statement may switch to a generic plan after five executions.
    Cached,
    /// Every execution is planned for its values (`plan_cache_mode = force_custom_plan`, transaction-local). For
    /// searches whose best plan depends on the values: a generic plan of the device search by address range walks
    /// and sorts the whole range (13 ms) where the custom one walks the id index (1 ms).
    Custom,
    /// The statement is planned once per connection and the plan reused (`plan_cache_mode =
    /// force_generic_plan`, transaction-local). For searches whose plan is the same whatever the values (one
    /// index range walked in its order): planning costs as much as running them (0.4-0.6 ms against 0.2-0.3 ms
    /// for a device page), and PostgreSQL's own choice keeps planning them, because a `LIMIT $n` makes the
    /// generic plan's estimate look ten times costlier than the custom one.
    Generic,
}

/// [`tenant_tx`] with a choice of [`Plans`], still one round trip.
pub async fn tenant_tx_planned(
    pool: &PgPool,
    provider_id: Uuid,
    plans: Plans,
) -> Result<Transaction<'static, Postgres>, DbError> {
    // One round trip for all: BEGIN and the settings go in one simple query. A `Uuid` formats as hex digits and
    // dashes only, so putting it in the SQL text is safe.
    let begin = format!(
        "BEGIN; SELECT set_config('app.provider_id', '{provider_id}', true){}",
        plans.setting()
    );
    pool.begin_with(sqlx::AssertSqlSafe(begin))
        .await
        .map_err(DbError::query("begin a tenant transaction"))
}

impl Plans {
    /// The extra `set_config` of the BEGIN query.
    fn setting(self) -> &'static str {
        match self {
            Plans::Cached => "",
            Plans::Custom => ", set_config('plan_cache_mode', 'force_custom_plan', true)",
            Plans::Generic => ", set_config('plan_cache_mode', 'force_generic_plan', true)",
        }
    }
}

/// Begins a transaction on the global-admin path: every row-level security policy lets it read and write every
/// provider's rows. Only audited operations may call this (see the module documentation); it logs each use.
pub async fn global_admin_tx(pool: &PgPool) -> Result<Transaction<'static, Postgres>, DbError> {
    global_admin_tx_planned(pool, Plans::Cached).await
}

/// [`global_admin_tx`] with a choice of [`Plans`].
pub async fn global_admin_tx_planned(
    pool: &PgPool,
    plans: Plans,
) -> Result<Transaction<'static, Postgres>, DbError> {
    let begin = format!(
        "BEGIN; SELECT set_config('app.global_admin', 'on', true){}",
        plans.setting()
    );
    let tx = pool
        .begin_with(sqlx::AssertSqlSafe(begin))
        .await
        .map_err(DbError::query("begin a global-admin transaction"))?;
    tracing::debug!("Global-admin transaction opened.");
    Ok(tx)
}

/// Makes sure a `samples` partition exists for every UTC day from `from` to `to` (inclusive), creating the
/// missing ones (`octoisp_sample_partitions`, SECURITY DEFINER). Runs in a transaction of its own. The store
/// creates partitions on demand; workers call this ahead of time so ingest rarely has to.
pub async fn ensure_sample_partitions(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(), DbError> {
    let (first, last) = (from.date_naive(), to.date_naive());
    if last < first {
        return Err(DbError::Invalid {
            what: "partition range",
            reason: format!("{first} is after {last}"),
        });
    }
    let days: Vec<NaiveDate> = first.iter_days().take_while(|d| *d <= last).collect();
    sample_partitions(pool, &days).await.map(|_| ())
}

/// Returns `(day, partition name)` for each UTC day given, creating missing partitions first. At most 64 days
/// per call. Runs in a transaction of its own (the creation lock lasts until its end).
pub async fn sample_partitions(
    pool: &PgPool,
    days: &[NaiveDate],
) -> Result<Vec<(NaiveDate, String)>, DbError> {
    if days.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as::<_, (NaiveDate, String)>(
        "SELECT day, partition_name FROM octoisp_sample_partitions($1)",
    )
    .bind(days)
    .fetch_all(pool)
    .await
    .map_err(DbError::query("create sample partitions"))
}
