//! `octoisp-controlplane serve`: runs the chosen roles of one instance until SIGTERM/SIGINT.
//!
//! - `ingest`: the QUIC endpoint of agents (enrollment and batches).
//! - `api`: the REST API under `/api/v1` ([`crate::api`]), with authentication (`[auth]`, Redis for throttling).
//!
//! Whatever its roles, an instance serves `/healthz`, `/readyz` and `/metrics` on `http.listen`; the `api` role
//! also serves the live event WebSocket (`/api/v1/live`) and the web console at `/` ([`crate::console`]).
//! - `workers`: background jobs: creating the next days' sample partitions ahead of time, metric rollups and
//!   their retention ([`crate::rollup`]), the notifier's dispatcher and delivery worker ([`crate::notify`]).
//!
//! Every instance, whatever its roles, keeps no state another instance needs: it all lives in PostgreSQL (and
//! the API's rate-limit counters in Redis).

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::ingest::server::{IngestConfig, IngestServer};
use crate::ingest::store::Store;
use crate::{ca, db};

/// How long shutdown waits for in-flight work.
pub const GRACE: Duration = Duration::from_secs(15);
/// How long the exit waits for the database connections to come back after the grace period.
const POOL_CLOSE: Duration = Duration::from_secs(5);

/// A role of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// HTTP API and health/metrics endpoints.
    Api,
    /// QUIC endpoint of agents.
    Ingest,
    /// Background jobs.
    Workers,
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s.trim() {
            "api" => Ok(Role::Api),
            "ingest" => Ok(Role::Ingest),
            "workers" => Ok(Role::Workers),
            other => Err(format!(
                "unknown role `{other}` (expected api, ingest, workers)"
            )),
        }
    }
}

/// Parses `api,ingest,workers`.
pub fn parse_roles(s: &str) -> Result<BTreeSet<Role>, String> {
    let roles: BTreeSet<Role> = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(Role::from_str)
        .collect::<Result<_, _>>()?;
    if roles.is_empty() {
        return Err("at least one role is needed".into());
    }
    Ok(roles)
}

#[derive(Clone)]
struct HttpState {
    pool: PgPool,
    metrics: PrometheusHandle,
}

/// Runs the roles until `shutdown` is cancelled.
pub async fn run(
    cfg: Config,
    roles: BTreeSet<Role>,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = db::connect(&cfg.database.url, cfg.database.max_connections)
        .await
        .with_context(|| {
            format!(
                "cannot connect to PostgreSQL at {}",
                crate::config::redact(&cfg.database.url)
            )
        })?;
    db::warn_if_autovacuum_off(&pool).await;
    let tracker = TaskTracker::new();
    let commands = commands_state(&cfg, pool.clone()).await;
    let secrets = Arc::new(
        crate::secretbox::SecretBox::from_config(&cfg.secrets)
            .context("invalid [secrets] configuration")?,
    );
    crate::secretbox::startup_pass(&pool, &secrets).await;

    if roles.contains(&Role::Ingest) {
        let ca = Arc::new(ca::Ca::load_or_create(&cfg.data_dir).context("cannot load the CA")?);
        let icfg = IngestConfig {
            listen: cfg.ingest.listen,
            server_names: cfg.ingest.server_names.clone(),
            max_in_flight: cfg.ingest.max_in_flight,
            db_writers: cfg.ingest.db_writers,
            max_connections: cfg.ingest.max_connections,
            max_batch_bytes: cfg.ingest.max_batch_bytes,
            heartbeat_secs: cfg.ingest.heartbeat_secs,
            ..IngestConfig::default()
        };
        // The alert engine evaluates what this instance stores, as it is stored (docs/ALERTS.md).
        let store = if cfg.alerts.enabled {
            let (engine, samples_tx, samples_rx) =
                crate::alerts::Engine::new(pool.clone(), cfg.alerts.engine_config());
            let sd = shutdown.clone();
            tracker.spawn(async move { engine.run(samples_rx, sd).await });
            Store::new(pool.clone()).with_sample_observer(samples_tx)
        } else {
            tracing::warn!(
                "alerts.enabled = false: this instance stores samples without evaluating alert rules."
            );
            Store::new(pool.clone())
        };
        let store = Arc::new(match &commands {
            Some(c) => store
                .with_command_queue(c.queue.clone())
                .with_running_marks(c.marks.clone())
                .with_result_waits(c.waits.clone()),
            None => store,
        });
        let (mut server, addr) = IngestServer::bind(icfg, ca, pool.clone(), store)
            .context("cannot start the QUIC ingest")?;
        server = server.with_firmware(cfg.firmware.clone());
        if let Some(c) = &commands {
            server = server.with_commands(c.clone());
            // Commands other instances' dispatchers hand over for the agents this instance holds.
            let (c, sd) = (c.clone(), shutdown.clone());
            tracker.spawn(async move { crate::commands::dispatch::inbox_loop(c, sd).await });
        }
        tracing::info!(%addr, "Ingest listening (QUIC).");
        let sd = shutdown.clone();
        tracker.spawn(async move {
            if let Err(err) = server.run(sd).await {
                tracing::error!(error = %err, "Ingest stopped.");
            }
        });
    }
    if roles.contains(&Role::Workers) {
        let (p, sd) = (pool.clone(), shutdown.clone());
        tracker.spawn(async move { partition_worker(p, sd).await });
        let job = Arc::new(crate::rollup::RollupJob::new(
            pool.clone(),
            cfg.metrics.clone(),
        ));
        let (j, sd) = (job.clone(), shutdown.clone());
        tracker.spawn(async move { j.run_retention(sd).await });
        let sd = shutdown.clone();
        tracker.spawn(async move { job.run(sd).await });
        if let Some(c) = &commands {
            use crate::commands::dispatch;
            let worker = format!("{}-{}", hostname(), c.links.instance_id());
            let (c1, sd) = (c.clone(), shutdown.clone());
            tracker.spawn(async move { dispatch::dispatcher_loop(c1, worker, sd).await });
            let (c1, sd) = (c.clone(), shutdown.clone());
            tracker.spawn(async move { dispatch::maintain_loop(c1, sd).await });
            let (c1, sd) = (c.clone(), shutdown.clone());
            tracker.spawn(async move { dispatch::reconcile_loop(c1, sd).await });
            let (p, c1, sd) = (pool.clone(), c.clone(), shutdown.clone());
            let tick = Duration::from_secs(cfg.firmware.campaign_tick_secs);
            tracker
                .spawn(async move { crate::firmware::campaign::run_loop(p, c1, tick, sd).await });
        }
        if cfg.notify.enabled {
            crate::notify::spawn(
                pool.clone(),
                cfg.notify.clone(),
                secrets.clone(),
                &tracker,
                shutdown.clone(),
            )
            .context("cannot start the notifier")?;
        }
    }
    // Every instance serves /healthz, /readyz and /metrics; the REST API only with the `api` role.
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (http.listen)", cfg.http.listen))?;
    tracing::info!(addr = %cfg.http.listen, "HTTP listening.");
    let mut app = Router::new()
        .route("/healthz", get(|| std::future::ready("ok\n")))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(s): State<HttpState>| std::future::ready(s.metrics.render())),
        )
        .with_state(HttpState {
            pool: pool.clone(),
            metrics,
        });
    if roles.contains(&Role::Api) {
        let live = crate::api::live::LiveHub::new(shutdown.child_token());
        app = app
            .merge(crate::api::router(
                api_state(&cfg, pool.clone(), live, commands.clone(), secrets.clone()).await?,
            ))
            .merge(crate::console::router(&cfg.http.web_dir));
    }
    // Request rate and latency per route template (`octoisp_http_*`), for every route of the instance.
    let app = app.layer(axum::middleware::from_fn(crate::api::http_metrics::track));
    let sd = shutdown.clone();
    tracker.spawn(async move {
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(sd.cancelled_owned())
            .await
        {
            tracing::error!(error = %err, "HTTP server stopped.");
        }
    });
    tracker.close();
    shutdown.cancelled().await;
    tracing::info!("Shutting down: finishing in-flight batches.");
    if tokio::time::timeout(GRACE, tracker.wait()).await.is_err() {
        tracing::warn!("Some tasks did not finish within the grace period.");
    }
    // `close` waits for every connection to come back: a statement still running (a long rollup on a loaded
    // database) would hold the exit for minutes. Its transaction is rolled back when the connection drops, and
    // every job here is idempotent, so past a short wait the process exits anyway.
    if tokio::time::timeout(POOL_CLOSE, pool.close())
        .await
        .is_err()
    {
        tracing::warn!(
            "Database statements still running after the grace period; exiting without them (their transactions roll back)."
        );
    }
    Ok(())
}

/// The API's state: the rate limiter on `api.redis_url` (without Redis at start the API runs without rate
/// limits, loudly), and the authenticator.
async fn api_state(
    cfg: &Config,
    pool: PgPool,
    live: crate::api::live::LiveHub,
    commands: Option<crate::commands::Commands>,
    secrets: Arc<crate::secretbox::SecretBox>,
) -> anyhow::Result<crate::api::AppState> {
    let auth_cfg = cfg.auth.auth_config().context(
        "the api role needs auth.jwt_secret (at least 32 bytes; set OCTOISP_CP__AUTH__JWT_SECRET), the same on every instance",
    )?;
    let api_redis = crate::redis_conn::RedisTarget::new(&cfg.api.redis_url, &cfg.redis);
    let redis = crate::redis_conn::RedisConn::connect(
        &api_redis,
        redis::aio::ConnectionManagerConfig::new(),
    )
    .await
    .with_context(|| {
        format!(
            "cannot reach Redis ({}, api.redis_url or [redis]): login throttling needs it",
            api_redis.describe()
        )
    })?;
    let auth = crate::auth::AuthService::new(
        pool.clone(),
        redis,
        auth_cfg,
        match &cfg.notify.smtp {
            Some(smtp) => Arc::new(crate::notify::SmtpMailer::new(smtp.clone()))
                as Arc<dyn crate::auth::Mailer>,
            None => Arc::new(crate::auth::LogMailer),
        },
    )
    .context("invalid [auth] configuration")?;
    let mut api_cfg = cfg.api.clone();
    api_cfg.metrics = cfg.metrics.clone();
    api_cfg.firmware = cfg.firmware.clone();
    let limiter = if api_cfg.rate_limit.enabled {
        let window = Duration::from_secs(api_cfg.rate_limit.window_secs);
        let connect = crate::api::ratelimit::RateLimiter::connect(
            api_redis.clone(),
            &api_cfg.redis_prefix,
            window,
        );
        match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(limiter)) => Some(limiter),
            Ok(Err(err)) => {
                tracing::error!(error = %err, "Cannot reach Redis (api.redis_url): the API runs WITHOUT rate limits.");
                None
            }
            Err(_) => {
                tracing::error!(
                    "Redis (api.redis_url) timed out: the API runs WITHOUT rate limits."
                );
                None
            }
        }
    } else {
        None
    };
    Ok(crate::api::AppState {
        pool,
        auth: Arc::new(auth.clone()),
        auth_service: Some(auth),
        limiter,
        config: Arc::new(api_cfg),
        ca_fingerprint: ca::Ca::load_or_create(&cfg.data_dir)
            .map(|ca| ca.fingerprint_hex())
            .map_err(|err| tracing::warn!(error = %err, "No CA: enrollment tokens from the API come in parts."))
            .ok(),
        live,
        commands,
        secrets,
    })
}

/// The command subsystem (queue and agent links in Redis); `None`, loudly, when Redis cannot be reached at
/// start: the instance then runs without commands (the API answers 503 to them) rather than not at all.
async fn commands_state(cfg: &Config, pool: PgPool) -> Option<crate::commands::Commands> {
    let qcfg = cfg.queue.queue_config();
    let extend_every = (qcfg.visibility_timeout / 3).max(Duration::from_millis(200));
    let connect = async {
        let target = crate::redis_conn::RedisTarget::new(&cfg.queue.redis_url, &cfg.redis);
        let queue = crate::queue::Queue::connect(target.clone(), qcfg).await?;
        let ttl = Duration::from_secs(u64::from(cfg.ingest.heartbeat_secs) * 3);
        let links = crate::commands::AgentLinks::connect(target, &cfg.queue.prefix, ttl).await?;
        anyhow::Ok((queue, links))
    };
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok((queue, links))) => Some(crate::commands::Commands {
            marks: crate::commands::marks::RunningMarks::start(pool.clone()),
            waits: crate::commands::waits::ResultWaits::start(queue.clone()),
            pool,
            queue,
            links,
            cfg: Arc::new(cfg.commands.clone()),
            extend_every,
        }),
        Ok(Err(err)) => {
            tracing::error!(error = %err, redis = %crate::config::redact(&cfg.queue.redis_url),
                "Cannot start the command queue (queue.redis_url): this instance runs WITHOUT commands.");
            None
        }
        Err(_) => {
            tracing::error!(
                "The command queue's Redis (queue.redis_url) timed out: this instance runs WITHOUT commands."
            );
            None
        }
    }
}

/// This machine's name, for the queue's worker list.
fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "controlplane".to_owned())
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    match sqlx::query("SELECT 1").execute(&s.pool).await {
        Ok(_) => (StatusCode::OK, "ready\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n"),
    }
}

/// Creates sample partitions for today and the next days, hourly, so ingest rarely has to.
async fn partition_worker(pool: PgPool, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = chrono::Utc::now();
        match db::ensure_sample_partitions(&pool, now, now + chrono::Duration::days(3)).await {
            Ok(()) => tracing::debug!("Sample partitions ready for the next days."),
            Err(err) => tracing::warn!(error = %err, "Cannot create sample partitions ahead."),
        }
    }
}
