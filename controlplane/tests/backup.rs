//! `octoisp-controlplane backup` and `restore` with the real binary, pg_dump and pg_restore: a backup restored
//! into a fresh database has the same rows, row-level security still isolates the tenants, the audit chains
//! still verify; a damaged backup or a non-empty target is refused and leaves the target as it was.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use octoisp_controlplane::ingest::store::{Store, StoreOutcome};
use octoisp_controlplane::{audit, backup, db, registry};
use sqlx::postgres::PgPoolOptions;
use sqlx::{ConnectOptions, PgPool};
use support::TestDb;
use support::fixtures::{self, count_as};

fn cp() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_octoisp-controlplane"))
}

/// Runs the control plane binary with its database pointed at `db` (admin URL as the admin).
fn run(db: &TestDb, data_dir: &Path, args: &[&str]) -> Output {
    let admin = db.admin_options();
    let admin_url = format!(
        "postgres://{}@{}:{}/{}",
        admin.get_username(),
        admin.get_host(),
        admin.get_port(),
        db.name
    );
    Command::new(cp())
        .args(args)
        .env("OCTOISP_CP__DATABASE__URL", db.app_url())
        .env("OCTOISP_CP__DATABASE__ADMIN_URL", admin_url)
        .env("OCTOISP_CP__DATA_DIR", data_dir)
        .env_remove("OCTOISP_CP_CONFIG")
        .output()
        .expect("run octoisp-controlplane")
}

/// An empty database next to `db`'s, dropped by the returned guard.
struct EmptyDb {
    name: String,
    url: String,
    root: sqlx::postgres::PgConnectOptions,
}

impl EmptyDb {
    async fn new(db: &TestDb) -> EmptyDb {
        let root = db.admin_options().database("postgres");
        let name = format!("octoisp_r_{:016x}", rand::random::<u64>());
        let mut conn = root.connect().await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .unwrap();
        let url = format!(
            "postgres://{}@{}:{}/{}",
            root.get_username(),
            root.get_host(),
            root.get_port(),
            name
        );
        EmptyDb { name, url, root }
    }

    async fn pool(&self, user: Option<&str>) -> PgPool {
        let mut opts = self.root.clone().database(&self.name);
        if let Some(u) = user {
            opts = opts.username(u).password("");
        }
        PgPoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .unwrap()
    }

    async fn drop(self) {
        let mut conn = self.root.connect().await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    }
}

/// Two providers with POPs, agents, devices, samples and audit rows.
async fn populate(db: &TestDb) -> (fixtures::Tenant, fixtures::Tenant) {
    let a = fixtures::tenant(db, "isp-a").await;
    let b = fixtures::tenant(db, "isp-b").await;
    registry::create_pop(&db.app, "isp-a", "norte", "Norte")
        .await
        .unwrap();
    let store = Store::new(db.app.clone());
    for (t, n) in [(&a, 300usize), (&b, 120)] {
        let defs = vec![
            fixtures::def(0, "olt-1", "ping.rtt_avg_ms"),
            fixtures::def(1, "cpe-2", "ping.rtt_avg_ms"),
        ];
        let samples = fixtures::samples(2, n);
        let batch = fixtures::batch(1, defs, &samples, Vec::new());
        let out = store.store_batch(&t.agent, &batch, &samples).await.unwrap();
        assert!(matches!(out, StoreOutcome::Stored { .. }));
    }
    (a, b)
}

#[tokio::test]
async fn a_backup_restores_whole_isolated_and_verifiable() {
    let db = TestDb::new().await;
    let (a, b) = populate(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nightly.dump");

    let out = run(
        &db,
        dir.path(),
        &["backup", "--out", file.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("backup written"), "{said}");
    assert!(said.contains("metric samples left out"), "{said}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a backup holds password hashes: owner-only");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")),
        "no partial file is left behind"
    );

    let target = EmptyDb::new(&db).await;
    let out = run(
        &db,
        dir.path(),
        &[
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--target-url",
            &target.url,
        ],
    );
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit rows"));

    // Same rows in every table, except the metric samples left out on purpose.
    let restored_admin = target.pool(None).await;
    let before = backup::row_counts(&db.admin).await.unwrap();
    let after = backup::row_counts(&restored_admin).await.unwrap();
    let expected: Vec<(String, i64)> = before
        .iter()
        .filter(|(t, _)| t != "samples")
        .cloned()
        .collect();
    assert_eq!(after, expected);
    assert!(before.iter().any(|(t, n)| t == "samples" && *n == 420));
    for table in [
        "providers",
        "pops",
        "agents",
        "devices",
        "series",
        "audit_log",
    ] {
        assert!(
            after.iter().any(|(t, n)| t == table && *n > 0),
            "{table} restored with rows: {after:?}"
        );
    }

    // Row-level security still binds the application role in the restored database.
    let app = target.pool(Some(db::APP_ROLE)).await;
    let restored = TestDbView { app: app.clone() };
    assert_eq!(restored.count(a.provider_id, "pops").await, 2);
    assert_eq!(restored.count(b.provider_id, "pops").await, 1);
    assert_eq!(restored.count(b.provider_id, "devices").await, 2);
    let untenanted: i64 = sqlx::query_scalar("SELECT count(*) FROM devices")
        .fetch_one(&app)
        .await
        .unwrap();
    assert_eq!(untenanted, 0, "no tenant, no rows");
    let audit_a = restored.count(a.provider_id, "audit_log").await;
    assert_eq!(audit_a, count_as(&db, a.provider_id, "audit_log").await);

    // The audit chains verify, and a tampered row is still caught (the check works on the restored data).
    let report = audit::verify(&restored_admin, None).await.unwrap();
    assert!(report.rows_checked > 0);
    assert_eq!(report.first_broken, None);
    // The append-only trigger came back too: an UPDATE is refused...
    let refused =
        sqlx::query("UPDATE audit_log SET action = 'x' WHERE id = (SELECT min(id) FROM audit_log)")
            .execute(&restored_admin)
            .await
            .unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");
    // ...so only a superuser bypassing triggers can tamper, and verify catches it.
    sqlx::raw_sql(
        "SET session_replication_role = replica; \
         UPDATE audit_log SET action = 'devices.tampered' WHERE id = (SELECT min(id) FROM audit_log); \
         RESET session_replication_role;",
    )
    .execute(&restored_admin)
    .await
    .unwrap();
    let report = audit::verify(&restored_admin, None).await.unwrap();
    assert!(report.first_broken.is_some(), "tampering is detected");

    app.close().await;
    restored_admin.close().await;
    target.drop().await;
    db.cleanup().await;
}

#[tokio::test]
async fn with_metrics_keeps_samples_and_rotation_keeps_the_newest() {
    let db = TestDb::new().await;
    populate(&db).await;
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        let out = run(
            &db,
            dir.path(),
            &[
                "backup",
                "--with-metrics",
                "--out",
                dir.path().to_str().unwrap(),
                "--keep",
                "2",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Names carry the second: make the next one distinct.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let mut dumps: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dumps.sort();
    assert_eq!(dumps.len(), 2, "rotation keeps two: {dumps:?}");

    let target = EmptyDb::new(&db).await;
    let report = backup::restore(&dumps[1], &target.url).await.unwrap();
    assert!(
        report.rows.iter().any(|(t, n)| t == "samples" && *n == 420),
        "{:?}",
        report.rows
    );
    target.drop().await;
    db.cleanup().await;
}

#[tokio::test]
async fn damaged_backups_and_non_empty_targets_are_refused() {
    let db = TestDb::new().await;
    populate(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.dump");
    backup::backup(
        &format!(
            "postgres://{}@{}:{}/{}",
            db.admin_options().get_username(),
            db.admin_options().get_host(),
            db.admin_options().get_port(),
            db.name
        ),
        &file,
        false,
        0,
    )
    .await
    .unwrap();

    // Truncated: refused before anything is written to the target.
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.dump");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let target = EmptyDb::new(&db).await;
    let err = backup::restore(&cut, &target.url).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("pg_restore"), "{msg}");
    let admin = target.pool(None).await;
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_one(&admin)
            .await
            .unwrap();
    assert_eq!(tables, 0, "a failed restore leaves the target empty");

    // Not a dump at all.
    let junk = dir.path().join("junk.dump");
    std::fs::write(&junk, b"PGDMP but not really").unwrap();
    assert!(backup::restore(&junk, &target.url).await.is_err());
    assert!(
        backup::restore(&dir.path().join("missing.dump"), &target.url)
            .await
            .unwrap_err()
            .to_string()
            .contains("no backup file")
    );

    // A database with tables is never overwritten: the source itself.
    let source_url = format!(
        "postgres://{}@{}:{}/{}",
        db.admin_options().get_username(),
        db.admin_options().get_host(),
        db.admin_options().get_port(),
        db.name
    );
    let err = backup::restore(&file, &source_url).await.unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    let providers: i64 = sqlx::query_scalar("SELECT count(*) FROM providers")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(providers, 2);

    admin.close().await;
    target.drop().await;
    db.cleanup().await;
}

/// Counts as a tenant on a pool of `octoisp_app`.
struct TestDbView {
    app: PgPool,
}

impl TestDbView {
    async fn count(&self, provider: uuid::Uuid, table: &str) -> i64 {
        let mut tx = db::tenant_tx(&self.app, provider).await.unwrap();
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        tx.commit().await.unwrap();
        n
    }
}
