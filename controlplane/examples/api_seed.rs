//! Benchmark helper for the device list API (see `scripts/bench-api.sh`).
//!
//! - `api_seed seed <admin-url> <devices> <providers>`: migrates the database and inserts `providers` providers
//!   (`bench-0`...), one POP each, and `devices` devices spread evenly over them (vendor, tags and last contact
//!   drawn at random, independently of the provider), with `generate_series` as the
//!   admin role (a million rows in well under a minute), then `ANALYZE`s.
//! - `api_seed serve <app-url> <listen> <token>`: serves the real API router (gateway middleware, rate limiter
//!   on `$OCTOISP_BENCH_REDIS`, row-level security, handlers) as `octoisp_app`, where bearer `<token>-<n>` is a
//!   Viewer of provider `bench-<n>`. Only credential verification is replaced (a map lookup).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::http::{HeaderMap, header};
use futures::future::BoxFuture;
use octoisp_controlplane::api::error::ApiError;
use octoisp_controlplane::api::ratelimit::RateLimiter;
use octoisp_controlplane::api::{self, ApiConfig, AppState, Authenticator, RequestContext};
use octoisp_controlplane::auth::Caller;
use octoisp_controlplane::db;
use uuid::Uuid;

/// The allocator of the `octoisp-controlplane` binary, so the benchmark serves the way it does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct StaticTokens(HashMap<String, Caller>);

impl Authenticator for StaticTokens {
    fn authenticate<'a>(
        &'a self,
        headers: &'a HeaderMap,
        ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Option<Caller>, ApiError>> {
        Box::pin(async move {
            let Some(v) = headers.get(header::AUTHORIZATION) else {
                return Ok(None);
            };
            let token = v
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or(ApiError::Unauthenticated)?;
            let mut caller = self
                .0
                .get(token)
                .cloned()
                .ok_or(ApiError::Unauthenticated)?;
            caller.request_id = ctx.request_id.clone();
            caller.ip = ctx.ip;
            Ok(Some(caller))
        })
    }
}

const SEED: &str = r"
INSERT INTO providers (slug, name, tier)
    SELECT 'bench-' || p, 'Bench ISP ' || p, 'large' FROM generate_series(0, {providers} - 1) p
    ON CONFLICT (slug) DO NOTHING;
INSERT INTO pops (provider_id, slug, name)
    SELECT id, 'pop-1', 'POP 1' FROM providers WHERE slug LIKE 'bench-%'
    ON CONFLICT DO NOTHING;
INSERT INTO devices (provider_id, pop_id, device_key, name, vendor, model, serial_number, mgmt_ip, tags, last_seen)
SELECT pr.id, po.id, 'cpe-' || i,
       'cliente ' || i,
       (ARRAY['Huawei', 'ZTE', 'Nokia', 'FiberHome', 'TP-Link'])[1 + floor(random() * 5)::int],
       'HG8245', 'SN' || lpad(i::text, 10, '0'),
       ('10.' || (i / 65536) % 256 || '.' || (i / 256) % 256 || '.' || i % 256)::inet,
       ARRAY['olt-' || floor(random() * 20)::int, CASE WHEN random() < 0.14 THEN 'vip' ELSE 'residencial' END],
       now() - make_interval(secs => floor(random() * 600)::int)
FROM generate_series(0, {devices} - 1) i
JOIN providers pr ON pr.slug = 'bench-' || (i % {providers})
JOIN pops po ON po.provider_id = pr.id AND po.slug = 'pop-1'
ON CONFLICT DO NOTHING;
";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["seed", url, devices, providers] => seed(url, devices.parse()?, providers.parse()?).await,
        ["serve", url, listen, token] => serve(url, listen.parse()?, token).await,
        _ => bail!(
            "usage: api_seed seed <admin-url> <devices> <providers> | serve <app-url> <listen> <token>"
        ),
    }
}

async fn seed(url: &str, devices: i64, providers: i64) -> anyhow::Result<()> {
    let pool = db::connect(url, 2).await?;
    db::migrate(&pool).await?;
    let started = std::time::Instant::now();
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL app.global_admin = 'on'")
        .execute(&mut *tx)
        .await?;
    // Both numbers are parsed integers: formatting them into the SQL is safe.
    let sql = SEED
        .replace("{devices}", &devices.to_string())
        .replace("{providers}", &providers.to_string());
    for stmt in sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        sqlx::query(sqlx::AssertSqlSafe(stmt.to_owned()))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("seed: {stmt}"))?;
    }
    tx.commit().await?;
    // VACUUM sets the visibility map, as autovacuum would, so list walks can stay in the index.
    sqlx::query("VACUUM (ANALYZE)").execute(&pool).await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM devices")
        .fetch_one(&pool)
        .await?;
    println!(
        "seeded: {n} devices in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn serve(url: &str, listen: SocketAddr, token: &str) -> anyhow::Result<()> {
    let pool = db::connect(url, 32).await?;
    let mut tx = db::global_admin_tx(&pool).await?;
    let providers: Vec<(String, Uuid)> =
        sqlx::query_as("SELECT slug, id FROM providers WHERE slug LIKE 'bench-%'")
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    if providers.is_empty() {
        bail!("no bench providers; run `seed` first");
    }
    let viewer = [
        "devices:read",
        "pops:read",
        "customers:read",
        "groups:read",
        "agents:read",
    ];
    let tokens: HashMap<String, Caller> = providers
        .iter()
        .filter_map(|(slug, id)| {
            let n = slug.strip_prefix("bench-")?;
            Some((
                format!("{token}-{n}"),
                Caller {
                    user_id: Some(Uuid::now_v7()),
                    api_key_id: None,
                    provider_id: Some(*id),
                    permissions: viewer.iter().map(|p| (*p).to_owned()).collect(),
                    global_admin: false,
                    request_id: String::new(),
                    ip: None,
                },
            ))
        })
        .collect();
    let mut config = ApiConfig::default();
    config.rate_limit.per_ip = 1_000_000;
    config.rate_limit.per_user = 1_000_000;
    config.rate_limit.per_tenant = 1_000_000;
    let redis = std::env::var("OCTOISP_BENCH_REDIS").unwrap_or_else(|_| config.redis_url.clone());
    let limiter = RateLimiter::connect(&redis, "octoisp-bench", Duration::from_secs(1)).await?;
    let state = AppState {
        pool,
        auth: Arc::new(StaticTokens(tokens)),
        limiter: Some(limiter),
        config: Arc::new(config),
        auth_service: None,
        ca_fingerprint: None,
        live: Default::default(),
        commands: None,
        secrets: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("serving on {listen}");
    axum::serve(
        listener,
        api::router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
