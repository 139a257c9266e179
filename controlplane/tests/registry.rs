//! Providers, POPs, enrollment tokens and agents on a real PostgreSQL, through the application role.

#[allow(dead_code)]
mod support;

use std::time::Duration;

use octoisp_controlplane::db::DbError;
use octoisp_controlplane::registry::{self, EnrollError};
use support::TestDb;
use support::fixtures::{fake_sign, tenant};
use uuid::Uuid;

const TTL: Duration = Duration::from_secs(600);

#[tokio::test]
async fn a_token_enrolls_one_agent_only() {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let token = registry::create_enrollment_token(&db.app, "isp-a", "centro", TTL)
        .await
        .unwrap();
    assert_eq!(
        token.secret.len(),
        43,
        "32 bytes in base64url without padding"
    );

    let (agent_id, grant, cert) = registry::enroll_agent(
        &db.app,
        token.token_id,
        &token.secret,
        "pop1",
        "0.1.0",
        fake_sign,
    )
    .await
    .unwrap();
    assert_eq!((grant.provider_id, grant.pop_id), (a.provider_id, a.pop_id));
    assert!(cert.contains(&agent_id.to_string()));
    let again = registry::enroll_agent(
        &db.app,
        token.token_id,
        &token.secret,
        "pop1",
        "0.1.0",
        fake_sign,
    )
    .await;
    assert!(matches!(again, Err(EnrollError::TokenUsed)), "{again:?}");

    let record = registry::agent_identity(&db.app, agent_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (record.provider_id, record.pop_id, record.revoked),
        (a.provider_id, a.pop_id, false)
    );
    // The database keeps a hash of the secret, not the secret.
    let stored: String =
        sqlx::query_scalar("SELECT secret_hash FROM enrollment_tokens WHERE id = $1")
            .bind(token.token_id)
            .fetch_one(&db.admin)
            .await
            .unwrap();
    assert_eq!(stored, registry::secret_hash(&token.secret));
    assert_ne!(stored, token.secret);
}

#[tokio::test]
async fn racing_enrollments_with_one_token_make_one_agent() {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let token = registry::create_enrollment_token(&db.app, "isp-a", "centro", TTL)
        .await
        .unwrap();
    let other_pool = db.app_pool(2).await;
    let (r1, r2) = tokio::join!(
        registry::enroll_agent(&db.app, token.token_id, &token.secret, "h1", "1", fake_sign),
        registry::enroll_agent(
            &other_pool,
            token.token_id,
            &token.secret,
            "h2",
            "1",
            fake_sign
        ),
    );
    let ok = [r1.is_ok(), r2.is_ok()].iter().filter(|x| **x).count();
    assert_eq!(ok, 1, "{r1:?} {r2:?}");
    assert!(matches!(r1, Err(EnrollError::TokenUsed)) || matches!(r2, Err(EnrollError::TokenUsed)));
    let agents: i64 = sqlx::query_scalar("SELECT count(*) FROM agents WHERE provider_id = $1")
        .bind(a.provider_id)
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(agents, 2, "the fixture's agent and one new agent");
}

#[tokio::test]
async fn wrong_secret_unknown_token_and_expiry_are_refused() {
    let db = TestDb::new().await;
    tenant(&db, "isp-a").await;
    let token = registry::create_enrollment_token(&db.app, "isp-a", "centro", TTL)
        .await
        .unwrap();

    let wrong = registry::enroll_agent(
        &db.app,
        token.token_id,
        "not-the-secret",
        "h",
        "1",
        fake_sign,
    )
    .await;
    assert!(matches!(wrong, Err(EnrollError::InvalidToken)), "{wrong:?}");
    let unknown =
        registry::enroll_agent(&db.app, Uuid::new_v4(), &token.secret, "h", "1", fake_sign).await;
    assert!(
        matches!(unknown, Err(EnrollError::InvalidToken)),
        "{unknown:?}"
    );
    // A signing failure stores nothing and leaves the token usable.
    let refused =
        registry::enroll_agent(&db.app, token.token_id, &token.secret, "h", "1", |_, _| {
            Err("the CSR's signature does not verify".to_owned())
        })
        .await;
    assert!(
        matches!(refused, Err(EnrollError::Sign(ref m)) if m.contains("CSR")),
        "{refused:?}"
    );

    // Expire it (as if its lifetime had passed).
    sqlx::query(
        "UPDATE enrollment_tokens SET expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(token.token_id)
    .execute(&db.admin)
    .await
    .unwrap();
    let expired =
        registry::enroll_agent(&db.app, token.token_id, &token.secret, "h", "1", fake_sign).await;
    assert!(
        matches!(expired, Err(EnrollError::TokenExpired)),
        "{expired:?}"
    );
    // A wrong secret on an expired token says nothing about the token.
    let probe = registry::enroll_agent(&db.app, token.token_id, "guess", "h", "1", fake_sign).await;
    assert!(matches!(probe, Err(EnrollError::InvalidToken)), "{probe:?}");
    let used: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT used_at FROM enrollment_tokens WHERE id = $1")
            .bind(token.token_id)
            .fetch_one(&db.admin)
            .await
            .unwrap();
    assert_eq!(used, None);
}

#[tokio::test]
async fn revocation_shows_in_the_identity_and_the_revoked_list() {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let b = tenant(&db, "isp-b").await;
    assert!(
        registry::revoked_fingerprints(&db.app)
            .await
            .unwrap()
            .is_empty()
    );

    assert!(
        registry::revoke_agent(&db.app, a.agent.agent_id)
            .await
            .unwrap()
    );
    assert!(
        registry::revoke_agent(&db.app, a.agent.agent_id)
            .await
            .unwrap(),
        "revoking twice is fine"
    );
    assert!(
        !registry::revoke_agent(&db.app, Uuid::new_v4())
            .await
            .unwrap()
    );

    assert_eq!(
        registry::revoked_fingerprints(&db.app).await.unwrap(),
        vec![a.agent.cert_fingerprint.clone()]
    );
    assert!(
        registry::agent_identity(&db.app, a.agent.agent_id)
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    assert!(
        !registry::agent_identity(&db.app, b.agent.agent_id)
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    assert_eq!(
        registry::agent_identity(&db.app, Uuid::new_v4())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn providers_pops_and_agent_contact() {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;

    let dup = registry::create_provider(&db.app, "isp-a", "Again", "small").await;
    assert!(matches!(dup, Err(DbError::Conflict { .. })), "{dup:?}");
    let tier = registry::create_provider(&db.app, "isp-z", "Z", "huge").await;
    assert!(
        matches!(tier, Err(DbError::Invalid { what: "tier", .. })),
        "{tier:?}"
    );
    let slug = registry::create_provider(&db.app, "ISP Z", "Z", "small").await;
    assert!(
        matches!(slug, Err(DbError::Invalid { what: "slug", .. })),
        "{slug:?}"
    );
    let pop = registry::create_pop(&db.app, "nobody", "x", "X").await;
    assert!(matches!(pop, Err(DbError::NotFound { .. })), "{pop:?}");

    let by_id = registry::find_provider(&db.app, &a.provider_id.to_string())
        .await
        .unwrap()
        .unwrap();
    let by_slug = registry::find_provider(&db.app, "isp-a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_id, by_slug);
    assert_eq!(by_id.tier, "small");
    let pop = registry::find_pop(&db.app, "isp-a", &a.pop_id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pop.slug, "centro");
    let large = registry::create_provider(&db.app, "isp-l", "L", "Large")
        .await
        .unwrap();
    assert_eq!(
        registry::find_provider(&db.app, &large.to_string())
            .await
            .unwrap()
            .unwrap()
            .tier,
        "large"
    );

    registry::touch_agent(&db.app, a.agent.agent_id, "new-host", "")
        .await
        .unwrap();
    let (hostname, version): (String, String) =
        sqlx::query_as("SELECT hostname, version FROM agents WHERE id = $1")
            .bind(a.agent.agent_id)
            .fetch_one(&db.admin)
            .await
            .unwrap();
    assert_eq!((hostname.as_str(), version.as_str()), ("new-host", "0.1.0"));
    let missing = registry::touch_agent(&db.app, Uuid::new_v4(), "", "").await;
    assert!(
        matches!(missing, Err(DbError::NotFound { .. })),
        "{missing:?}"
    );
}
