//! Fixtures: a provider with a POP and an enrolled agent, series definitions, batches, and counts as a tenant.

use std::time::Duration;

use octoisp_controlplane::db;
use octoisp_controlplane::registry::{self, AgentRecord, TokenGrant};
use octoisp_shared::{Batch, MetricKind, Record, Sample, SampleBlock, SeriesDef};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::TestDb;

/// A provider with POP `centro` and one agent enrolled there.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// The provider's slug.
    pub slug: String,
    /// The provider's id.
    pub provider_id: Uuid,
    /// The POP's id.
    pub pop_id: Uuid,
    /// The agent, as the ingest path sees it.
    pub agent: AgentRecord,
}

/// Creates provider `slug` with POP `centro` and enrolls an agent there (through the real registry functions).
pub async fn tenant(db: &TestDb, slug: &str) -> Tenant {
    let provider_id = registry::create_provider(&db.app, slug, &format!("ISP {slug}"), "small")
        .await
        .unwrap();
    let pop_id = registry::create_pop(&db.app, slug, "centro", "Centro")
        .await
        .unwrap();
    let agent = enroll(db, slug, "centro").await;
    Tenant {
        slug: slug.to_owned(),
        provider_id,
        pop_id,
        agent,
    }
}

/// Enrolls one more agent in `pop` of `provider` and returns its record.
pub async fn enroll(db: &TestDb, provider: &str, pop: &str) -> AgentRecord {
    let token = registry::create_enrollment_token(&db.app, provider, pop, Duration::from_secs(600))
        .await
        .unwrap();
    let (agent_id, _, _) = registry::enroll_agent(
        &db.app,
        token.token_id,
        &token.secret,
        "agent-host",
        "0.1.0",
        fake_sign,
    )
    .await
    .unwrap();
    registry::agent_identity(&db.app, agent_id)
        .await
        .unwrap()
        .expect("the new agent is known")
}

/// A signing callback that returns a placeholder certificate and a random fingerprint.
pub fn fake_sign(agent_id: Uuid, _grant: &TokenGrant) -> Result<(String, String), String> {
    Ok((
        format!("-----BEGIN CERTIFICATE-----\n{agent_id}\n-----END CERTIFICATE-----\n"),
        random_fingerprint(),
    ))
}

/// 64 random lowercase hex digits.
pub fn random_fingerprint() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// A gauge series definition.
pub fn def(id: u64, device_key: &str, metric: &str) -> SeriesDef {
    SeriesDef {
        id,
        device_key: device_key.to_owned(),
        metric: metric.to_owned(),
        labels: vec![("probe".to_owned(), "icmp".to_owned())],
        kind: MetricKind::Gauge,
    }
}

/// A batch with nothing settled below it.
pub fn batch(seq: u64, series: Vec<SeriesDef>, samples: &[Sample], records: Vec<Record>) -> Batch {
    Batch {
        seq,
        settled_below: 0,
        created_ms: now_ms(),
        series,
        samples: SampleBlock::encode(samples),
        records,
    }
}

/// `n` samples spread over `series` (ids `0..series`), one second apart per series, ending about now.
pub fn samples(series: u64, n: usize) -> Vec<Sample> {
    let per = n.div_ceil(series as usize) as i64;
    let start = now_ms() - per * 1000 - 60_000;
    (0..n)
        .map(|i| Sample {
            series: i as u64 % series,
            ts_ms: start + (i as i64 / series as i64) * 1000,
            value: i as f64 * 0.5,
        })
        .collect()
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `SELECT count(*)` of `sql` (a FROM clause and what follows) as `octoisp_app` with `provider` as the tenant.
pub async fn count_as(db: &TestDb, provider: Uuid, from: &str) -> i64 {
    let mut tx = db::tenant_tx(&db.app, provider).await.unwrap();
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {from}")))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    n
}

/// `SELECT count(*)` of `from` as the admin role (every tenant).
pub async fn count_admin(db: &TestDb, from: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {from}")))
        .fetch_one(&db.admin)
        .await
        .unwrap()
}
