//! The audit log on a real PostgreSQL: rows are hash-chained per provider, the application role can neither
//! change nor remove them, a provider reads only its own, and `verify` finds the row a superuser altered.

#[allow(dead_code)]
mod support;

use std::collections::BTreeSet;

use octoisp_controlplane::audit::{self, VerifyReport};
use octoisp_controlplane::auth::Caller;
use octoisp_controlplane::{db, registry};
use serde_json::json;
use support::TestDb;
use uuid::Uuid;

fn caller(provider: Option<Uuid>) -> Caller {
    Caller {
        user_id: Some(Uuid::new_v4()),
        api_key_id: None,
        provider_id: provider,
        permissions: BTreeSet::new(),
        global_admin: provider.is_none(),
        request_id: format!("req-{}", Uuid::new_v4()),
        ip: Some("198.51.100.7".parse().unwrap()),
    }
}

async fn provider(db: &TestDb, slug: &str) -> Uuid {
    registry::create_provider(&db.app, slug, &format!("ISP {slug}"), "small")
        .await
        .unwrap()
}

/// Records `n` actions of `provider` (each in its own transaction), returns nothing.
async fn record_n(db: &TestDb, provider: Uuid, n: usize) {
    let c = caller(Some(provider));
    for i in 0..n {
        let mut tx = db::tenant_tx(&db.app, provider).await.unwrap();
        audit::record(
            &mut tx,
            &c,
            "devices.update",
            "device",
            Some(&format!("dev-{i}")),
            Some(json!({"name": "old", "quote": "' OR 1=1 --"})),
            Some(json!({"name": format!("new {i}"), "unicode": "ação ✓"})),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
}

async fn count_visible(db: &TestDb, tenant: Option<Uuid>, filter: &str) -> i64 {
    let mut tx = match tenant {
        Some(p) => db::tenant_tx(&db.app, p).await.unwrap(),
        None => db.app.begin().await.unwrap(),
    };
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM audit_log {filter}"
    )))
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    n
}

#[tokio::test]
async fn chains_verify_and_a_superuser_edit_is_reported() {
    let db = TestDb::new().await;
    let a = provider(&db, "isp-a").await;
    let b = provider(&db, "isp-b").await;
    record_n(&db, a, 5).await;
    record_n(&db, b, 3).await;
    // A global action, on the global-admin path: the global chain (after the two providers.create rows).
    let mut tx = db::global_admin_tx(&db.app).await.unwrap();
    audit::record(
        &mut tx,
        &caller(None),
        "providers.create",
        "provider",
        Some(&a.to_string()),
        None,
        Some(json!({"slug": "isp-a"})),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let report = audit::verify(&db.app, None).await.unwrap();
    assert_eq!(
        report,
        VerifyReport {
            rows_checked: 11,
            chains: 3,
            first_broken: None
        }
    );

    // Rows link to their predecessor in their own chain only.
    let links: Vec<(Option<Uuid>, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT provider_id, prev_hash, hash FROM audit_log ORDER BY provider_id NULLS FIRST, id",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    for w in links.windows(2) {
        if w[0].0 == w[1].0 {
            assert_eq!(w[1].1, w[0].2, "each row names its predecessor's hash");
        } else {
            assert!(w[1].1.is_empty(), "each chain starts from the empty hash");
        }
    }

    // A superuser alters the third row of A, with the triggers disabled for the session.
    let target: i64 = sqlx::query_scalar(
        "SELECT id FROM audit_log WHERE provider_id = $1 ORDER BY id OFFSET 2 LIMIT 1",
    )
    .bind(a)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET session_replication_role = replica; \
         UPDATE audit_log SET after = '{{\"name\": \"forged\"}}' WHERE id = {target}; \
         RESET session_replication_role;"
    )))
    .execute(&db.admin)
    .await
    .unwrap();

    let report = audit::verify(&db.app, None).await.unwrap();
    assert_eq!(
        report.rows_checked, 11,
        "5 + 3 actions and the 2 providers.create rows of the global chain"
    );
    let (id, reason) = report.first_broken.expect("the edit is detected");
    assert_eq!(id, target);
    assert!(reason.contains("hash"), "{reason}");
    // The other chains still verify on their own.
    assert_eq!(
        audit::verify(&db.app, Some(b)).await.unwrap().first_broken,
        None
    );

    // Deleting a row in the middle breaks the link of the next one.
    let victim: i64 = sqlx::query_scalar(
        "SELECT id FROM audit_log WHERE provider_id = $1 ORDER BY id OFFSET 1 LIMIT 1",
    )
    .bind(b)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET session_replication_role = replica; DELETE FROM audit_log WHERE id = {victim}; \
         RESET session_replication_role;"
    )))
    .execute(&db.admin)
    .await
    .unwrap();
    let report = audit::verify(&db.app, Some(b)).await.unwrap();
    let (id, reason) = report.first_broken.expect("the deletion is detected");
    assert!(id > victim);
    assert!(reason.contains("prev_hash"), "{reason}");
    db.cleanup().await;
}

#[tokio::test]
async fn the_application_cannot_update_delete_or_truncate() {
    let db = TestDb::new().await;
    let a = provider(&db, "isp-a").await;
    record_n(&db, a, 2).await;
    for sql in [
        "UPDATE audit_log SET action = 'x.y'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let mut tx = db::tenant_tx(&db.app, a).await.unwrap();
        let err = sqlx::query(sql).execute(&mut *tx).await.expect_err(sql);
        assert_eq!(db::sqlstate(&err).as_deref(), Some("42501"), "{sql}: {err}");
        tx.rollback().await.unwrap();
    }
    // Not even on the global-admin path.
    let mut tx = db::global_admin_tx(&db.app).await.unwrap();
    assert!(
        sqlx::query("DELETE FROM audit_log")
            .execute(&mut *tx)
            .await
            .is_err()
    );
    tx.rollback().await.unwrap();
    // The owner and a superuser are refused by the triggers while they are enabled.
    for sql in [
        "UPDATE audit_log SET action = 'x.y'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let err = sqlx::query(sql).execute(&db.admin).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(count_visible(&db, Some(a), "").await, 2);
    // Hash values given by the writer are overwritten.
    let mut tx = db::tenant_tx(&db.app, a).await.unwrap();
    sqlx::query("INSERT INTO audit_log (id, provider_id, action, target_type, prev_hash, hash) VALUES (1, $1, 'x.y', 't', '\\x00', '\\x00')")
        .bind(a)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        audit::verify(&db.app, None).await.unwrap().first_broken,
        None
    );
    db.cleanup().await;
}

#[tokio::test]
async fn a_provider_reads_only_its_own_rows() {
    let db = TestDb::new().await;
    let a = provider(&db, "isp-a").await;
    let b = provider(&db, "isp-b").await;
    record_n(&db, a, 3).await;
    record_n(&db, b, 2).await;
    assert_eq!(count_visible(&db, Some(a), "").await, 3);
    assert_eq!(count_visible(&db, Some(b), "").await, 2);
    assert_eq!(
        count_visible(&db, Some(a), &format!("WHERE provider_id = '{b}'")).await,
        0
    );
    assert_eq!(count_visible(&db, None, "").await, 0, "no tenant: no rows");
    // A tenant cannot write into another provider's chain nor the global one.
    let mut tx = db::tenant_tx(&db.app, a).await.unwrap();
    let err = sqlx::query("INSERT INTO audit_log (id, provider_id, action, target_type, prev_hash, hash) VALUES (0, $1, 'x.y', 't', '', '')")
        .bind(b)
        .execute(&mut *tx)
        .await
        .expect_err("another provider's chain");
    assert_eq!(db::sqlstate(&err).as_deref(), Some("42501"));
    tx.rollback().await.unwrap();
    let mut tx = db::tenant_tx(&db.app, a).await.unwrap();
    let rows: Vec<(Option<Uuid>, Option<String>, serde_json::Value)> =
        sqlx::query_as("SELECT provider_id, host(ip), after FROM audit_log ORDER BY id DESC")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.0 == Some(a)));
    assert_eq!(rows[0].1.as_deref(), Some("198.51.100.7"));
    assert_eq!(rows[0].2["unicode"], "ação ✓");
    tx.rollback().await.unwrap();
    db.cleanup().await;
}

#[tokio::test]
async fn concurrent_writers_keep_one_chain() {
    let db = TestDb::new().await;
    let a = provider(&db, "isp-a").await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let pool = db.app.clone();
        tasks.spawn(async move {
            let c = caller(Some(a));
            for i in 0..5 {
                let mut tx = db::tenant_tx(&pool, a).await.unwrap();
                audit::record(
                    &mut tx,
                    &c,
                    "devices.update",
                    "device",
                    Some(&i.to_string()),
                    None,
                    None,
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let report = audit::verify(&db.app, Some(a)).await.unwrap();
    assert_eq!(
        report,
        VerifyReport {
            rows_checked: 30,
            chains: 1,
            first_broken: None
        }
    );
    db.cleanup().await;
}

#[tokio::test]
async fn the_cli_user_creation_is_audited_without_the_password() {
    let db = TestDb::new().await;
    let a = provider(&db, "isp-a").await;
    let params = octoisp_controlplane::auth::PasswordParams {
        m_kib: 1024,
        t: 1,
        p: 1,
    };
    let root = octoisp_controlplane::auth::admin::create_user_cli(
        &db.app,
        params,
        None,
        "root@example.com",
        "Root",
        "root password 123",
        "global admin",
    )
    .await
    .unwrap();
    let admin = octoisp_controlplane::auth::admin::create_user_cli(
        &db.app,
        params,
        Some(a),
        "admin@isp-a.example",
        "Admin",
        "admin password 123",
        "Provider Admin",
    )
    .await
    .unwrap();
    let rows: Vec<(Option<Uuid>, String, Option<String>, String)> = sqlx::query_as(
        "SELECT provider_id, action, target_id, after::text FROM audit_log WHERE action = 'users.create' \
         ORDER BY provider_id NULLS FIRST",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].0, rows[0].1.as_str()), (None, "users.create"));
    assert_eq!(rows[0].2, Some(root.to_string()));
    assert_eq!(
        (rows[1].0, rows[1].2.clone()),
        (Some(a), Some(admin.to_string()))
    );
    assert!(rows.iter().all(|r| !r.3.contains("password")));
    assert_eq!(
        audit::verify(&db.app, None).await.unwrap().first_broken,
        None
    );
    db.cleanup().await;
}
