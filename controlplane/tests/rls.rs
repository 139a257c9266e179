//! Row-level security as the application role (`octoisp_app`) sees it, on a real PostgreSQL: a tenant sees and
//! writes only its own rows, no tenant sees nothing, and the role cannot switch the protection off.

#[allow(dead_code)]
mod support;

use octoisp_controlplane::db;
use octoisp_controlplane::ingest::store::{self, CopyRow, Store};
use octoisp_shared::{
    CommandResult, CommandStatus, DropReport, Event, Inventory, Record, Severity, Tr069Result,
};
use sqlx::{AssertSqlSafe, PgPool};
use support::TestDb;
use support::fixtures::{Tenant, batch, count_admin, def, now_ms, samples, tenant};
use uuid::Uuid;

/// The tenant tables of the ingest schema, which the data-driven tests below fill and check. (Every table, these
/// and any added later, must have forced row security: the structural test finds them all.)
const CORE_TABLES: &[&str] = &[
    "providers",
    "pops",
    "customers",
    "devices",
    "agents",
    "enrollment_tokens",
    "series",
    "samples",
    "events",
    "device_inventory_log",
    "tr069_results",
    "command_results",
    "agent_drop_reports",
    "ingested_batches",
];

/// Public tables that hold no tenant data.
const GLOBAL_TABLES: &[&str] = &["_sqlx_migrations"];

/// Every ordinary or partitioned table of the schema that is not a partition, with its RLS flags.
async fn tables(db: &TestDb) -> Vec<(String, bool, bool)> {
    sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap()
}

/// The core tenant tables, checked to exist.
async fn tenant_tables(db: &TestDb) -> Vec<String> {
    let all: Vec<String> = tables(db).await.into_iter().map(|t| t.0).collect();
    for core in CORE_TABLES {
        assert!(
            all.iter().any(|t| t == core),
            "table {core} is missing from {all:?}"
        );
    }
    CORE_TABLES.iter().map(|t| (*t).to_owned()).collect()
}

/// The column naming the tenant of a table's rows.
fn tenant_column(table: &str) -> &'static str {
    if table == "providers" {
        "id"
    } else {
        "provider_id"
    }
}

/// Two tenants with rows in every tenant table.
async fn two_tenants_with_data(db: &TestDb) -> (Tenant, Tenant) {
    let a = tenant(db, "isp-a").await;
    let b = tenant(db, "isp-b").await;
    let store = Store::new(db.app.clone());
    for t in [&a, &b] {
        let s = samples(2, 40);
        let key = "cwmp:00259E-HG8245H-48575443A1B2C3D4";
        let records = vec![
            Record::Event(Event {
                id: Uuid::new_v4(),
                ts_ms: now_ms(),
                device_key: Some(key.into()),
                kind: "cwmp.boot".into(),
                severity: Severity::Info,
                message: "boot".into(),
                attrs: vec![],
            }),
            Record::Inventory(Inventory {
                ts_ms: now_ms(),
                device_key: key.into(),
                ..Inventory::default()
            }),
            Record::Tr069Result(Tr069Result {
                id: Uuid::new_v4(),
                ts_ms: now_ms(),
                device_key: key.into(),
                task_id: None,
                kind: "Reboot".into(),
                ok: true,
                fault_code: None,
                fault_string: None,
                parameters: vec![],
            }),
            Record::CommandResult(CommandResult {
                command_id: Uuid::new_v4(),
                ts_ms: now_ms(),
                status: CommandStatus::Failed,
                output_json: "not json".into(),
                error: Some("timeout".into()),
            }),
            Record::DropReport(DropReport {
                id: Uuid::new_v4(),
                from_ms: now_ms(),
                to_ms: now_ms(),
                samples_dropped: 1,
                records_refused: 0,
                reason: "disk cap".into(),
            }),
        ];
        let b = batch(
            1,
            vec![
                def(0, key, "cpe.rx_power_dbm"),
                def(1, key, "cpe.tx_power_dbm"),
            ],
            &s,
            records,
        );
        store.store_batch(&t.agent, &b, &s).await.unwrap();
        let mut tx = db::tenant_tx(&db.app, t.provider_id).await.unwrap();
        sqlx::query("INSERT INTO customers (provider_id, pop_id, name, external_ref) VALUES ($1, $2, 'Maria', 'c-1')")
            .bind(t.provider_id)
            .bind(t.pop_id)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    (a, b)
}

async fn count_in(conn: &mut sqlx::PgConnection, from: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {from}")))
        .fetch_one(conn)
        .await
        .unwrap()
}

fn sqlstate(err: &sqlx::Error) -> String {
    db::sqlstate(err).unwrap_or_else(|| format!("not a database error: {err}"))
}

#[tokio::test]
async fn every_tenant_table_has_forced_row_security_and_partitions_are_not_readable() {
    let db = TestDb::new().await;
    for (table, enabled, forced) in tables(&db).await {
        if GLOBAL_TABLES.contains(&table.as_str()) {
            continue;
        }
        assert!(
            enabled && forced,
            "{table}: row security enabled {enabled}, forced {forced}"
        );
    }
    let _ = tenant_tables(&db).await;
    db::ensure_sample_partitions(&db.admin, chrono::Utc::now(), chrono::Utc::now())
        .await
        .unwrap();
    let partitions: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT c.relname::text, has_table_privilege('octoisp_app', c.oid, 'SELECT'), \
                has_table_privilege('octoisp_app', c.oid, 'UPDATE,DELETE,TRUNCATE') \
         FROM pg_class c WHERE c.relispartition AND c.relkind = 'r'",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert!(!partitions.is_empty());
    for (name, select, write) in partitions {
        assert!(
            !select && !write,
            "octoisp_app may read or change partition {name} directly"
        );
    }
}

#[tokio::test]
async fn a_tenant_sees_only_its_rows_without_any_where() {
    let db = TestDb::new().await;
    let (a, b) = two_tenants_with_data(&db).await;
    for table in tenant_tables(&db).await {
        let col = tenant_column(&table);
        for me in [&a, &b] {
            let mut tx = db::tenant_tx(&db.app, me.provider_id).await.unwrap();
            let seen = count_in(&mut tx, &table).await;
            let foreign = count_in(
                &mut tx,
                &format!("{table} WHERE {col} <> '{}'", me.provider_id),
            )
            .await;
            tx.commit().await.unwrap();
            let own =
                count_admin(&db, &format!("{table} WHERE {col} = '{}'", me.provider_id)).await;
            assert!(own > 0, "{table} has no rows of {} to test with", me.slug);
            assert_eq!((seen, foreign), (own, 0), "{table} as {}", me.slug);
        }
        assert!(
            count_admin(&db, &table).await
                > count_admin(&db, &format!("{table} WHERE {col} = '{}'", a.provider_id)).await
        );
    }
}

/// Every policy reads the tenant and the global-admin flag in a subquery, which PostgreSQL evaluates once per
/// statement (an InitPlan), not once per row: a count over a tenant's 100,000 devices parses no uuid per row.
#[tokio::test]
async fn every_policy_reads_the_tenant_once_per_statement() {
    let db = TestDb::new().await;
    let policies: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT tablename::text, policyname::text, \
                coalesce(qual, '') || ' ' || coalesce(with_check, '') \
         FROM pg_policies WHERE schemaname = 'public'",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert!(policies.len() > 20, "{policies:?}");
    for (table, policy, exprs) in &policies {
        let outside = exprs
            .replace("SELECT octoisp_tenant() AS", "")
            .replace("SELECT octoisp_is_global_admin() AS", "");
        assert!(
            !outside.contains("octoisp_tenant()") && !outside.contains("octoisp_is_global_admin()"),
            "policy {policy} on {table} calls a tenant function per row: {exprs}"
        );
    }
    // Called, not inlined: the planner parses the body of a SQL function it inlines, for every table with a
    // policy that a statement names, at every planning (migration 0020).
    let languages: Vec<(String, String)> = sqlx::query_as(
        "SELECT p.proname::text, l.lanname::text FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang \
         WHERE p.proname IN ('octoisp_tenant', 'octoisp_is_global_admin')",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert_eq!(languages.len(), 2, "{languages:?}");
    for (function, language) in &languages {
        assert_eq!(language, "plpgsql", "{function}");
    }
    let (a, _b) = two_tenants_with_data(&db).await;
    let mut tx = db::tenant_tx(&db.app, a.provider_id).await.unwrap();
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN (VERBOSE) SELECT count(*) FROM devices")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("InitPlan"), "{plan}");
    assert!(
        !plan
            .lines()
            .any(|l| l.contains("Filter") && l.contains("current_setting")),
        "the tenant is read per row:\n{plan}"
    );
}

#[tokio::test]
async fn no_tenant_means_no_rows_even_on_a_connection_that_served_one() {
    let db = TestDb::new().await;
    let (a, _b) = two_tenants_with_data(&db).await;
    // One connection, so the checks after the tenant transaction run where app.provider_id was set before.
    let pool: PgPool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.app_options())
        .await
        .unwrap();
    let tables = tenant_tables(&db).await;
    for table in &tables {
        let mut conn = pool.acquire().await.unwrap();
        assert_eq!(
            count_in(&mut conn, table).await,
            0,
            "{table} on a fresh connection"
        );
    }
    let mut tx = db::tenant_tx(&pool, a.provider_id).await.unwrap();
    assert!(count_in(&mut tx, "devices").await > 0);
    tx.commit().await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let leftover: Option<String> =
        sqlx::query_scalar("SELECT current_setting('app.provider_id', true)")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(
        leftover.as_deref(),
        Some(""),
        "the tenant must not outlive its transaction"
    );
    for table in &tables {
        assert_eq!(
            count_in(&mut conn, table).await,
            0,
            "{table} after a tenant transaction ended"
        );
    }
}

#[tokio::test]
async fn the_application_role_cannot_bypass_or_disable_row_security() {
    let db = TestDb::new().await;
    let (a, _b) = two_tenants_with_data(&db).await;
    let mut conn = db.app.acquire().await.unwrap();

    let (user, superuser, bypass): (String, bool, bool) = sqlx::query_as(
        "SELECT rolname::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        (user.as_str(), superuser, bypass),
        ("octoisp_app", false, false)
    );
    let owner: String =
        sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE tablename = 'devices'")
            .fetch_one(&db.admin)
            .await
            .unwrap();
    assert_ne!(owner, "octoisp_app");

    let refused = [
        "ALTER TABLE devices DISABLE ROW LEVEL SECURITY".to_owned(),
        "ALTER TABLE devices NO FORCE ROW LEVEL SECURITY".to_owned(),
        "ALTER TABLE samples DISABLE ROW LEVEL SECURITY".to_owned(),
        "DROP POLICY tenant_isolation ON devices".to_owned(),
        "CREATE POLICY open ON devices USING (true)".to_owned(),
        format!("SET ROLE \"{owner}\""),
        format!("SET SESSION AUTHORIZATION \"{owner}\""),
        "CREATE TABLE sneaky (a int)".to_owned(),
        "TRUNCATE samples".to_owned(),
        "TRUNCATE devices".to_owned(),
        "GRANT octoisp_app TO PUBLIC".to_owned(),
    ];
    for sql in refused {
        let result = sqlx::raw_sql(AssertSqlSafe(sql.clone()))
            .execute(&mut *conn)
            .await;
        assert!(result.is_err(), "octoisp_app could run: {sql}");
    }
    // With row_security off, PostgreSQL refuses the query instead of bypassing the policies.
    sqlx::raw_sql("SET row_security = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let err = sqlx::query("SELECT count(*) FROM devices")
        .execute(&mut *conn)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    sqlx::raw_sql("RESET row_security")
        .execute(&mut *conn)
        .await
        .unwrap();

    // Partitions of samples cannot be read directly.
    let partition: String = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class WHERE relispartition AND relkind = 'r' LIMIT 1",
    )
    .fetch_one(&db.admin)
    .await
    .unwrap();
    let mut tx = db::tenant_tx(&db.app, a.provider_id).await.unwrap();
    let err = sqlx::query(AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{partition}\""
    )))
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
}

#[tokio::test]
async fn writes_of_another_providers_rows_are_refused() {
    let db = TestDb::new().await;
    let (a, b) = two_tenants_with_data(&db).await;

    async fn refused(db: &TestDb, tenant: Option<Uuid>, sql: &str, binds: (Uuid, Uuid)) -> String {
        let mut tx = match tenant {
            Some(p) => db::tenant_tx(&db.app, p).await.unwrap(),
            None => db.app.begin().await.unwrap(),
        };
        let err = sqlx::query(AssertSqlSafe(sql.to_owned()))
            .bind(binds.0)
            .bind(binds.1)
            .execute(&mut *tx)
            .await
            .expect_err(sql);
        sqlstate(&err)
    }

    let ins_device =
        "INSERT INTO devices (provider_id, pop_id, device_key) VALUES ($1, $2, 'icmp:203.0.113.1')";
    assert_eq!(
        refused(
            &db,
            Some(a.provider_id),
            ins_device,
            (b.provider_id, b.pop_id)
        )
        .await,
        "42501"
    );
    assert_eq!(
        refused(&db, None, ins_device, (b.provider_id, b.pop_id)).await,
        "42501"
    );
    let move_device = "UPDATE devices SET provider_id = $1, pop_id = $2";
    assert_eq!(
        refused(
            &db,
            Some(a.provider_id),
            move_device,
            (b.provider_id, b.pop_id)
        )
        .await,
        "42501"
    );
    let ins_event = "INSERT INTO events (provider_id, id, agent_id, ts, kind, severity, message) \
                     VALUES ($1, gen_random_uuid(), $2, now(), 'x', 'info', 'x')";
    assert_eq!(
        refused(
            &db,
            Some(a.provider_id),
            ins_event,
            (b.provider_id, b.agent.agent_id)
        )
        .await,
        "42501"
    );
    let today = chrono::Utc::now();
    db::ensure_sample_partitions(&db.app, today, today)
        .await
        .unwrap();
    let ins_sample = "INSERT INTO samples (provider_id, series_id, ts, value) \
                      SELECT $1, 1, now(), 1.0 WHERE $2::uuid IS NOT NULL";
    assert_eq!(
        refused(
            &db,
            Some(a.provider_id),
            ins_sample,
            (b.provider_id, b.provider_id)
        )
        .await,
        "42501"
    );

    // COPY into a partition (the ingest path) is held by the partition's CHECK constraint instead.
    let table = format!("samples_p{}", today.format("%Y%m%d"));
    let row = CopyRow {
        series_id: 1,
        ts_us: (today.timestamp_millis() - 946_684_800_000) * 1000,
        value: 1.0,
    };
    for (tenant, provider) in [(Some(a.provider_id), b.provider_id), (None, a.provider_id)] {
        let mut tx = match tenant {
            Some(p) => db::tenant_tx(&db.app, p).await.unwrap(),
            None => db.app.begin().await.unwrap(),
        };
        let err = store::copy_samples(&mut tx, &table, provider, &[row])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "23514", "{err}");
    }
    let mut tx = db::tenant_tx(&db.app, a.provider_id).await.unwrap();
    assert_eq!(
        store::copy_samples(&mut tx, &table, a.provider_id, &[row])
            .await
            .unwrap(),
        1
    );
    tx.rollback().await.unwrap();

    // The providers table: a tenant cannot create or rename another provider.
    let mut tx = db::tenant_tx(&db.app, a.provider_id).await.unwrap();
    let renamed = sqlx::query("UPDATE providers SET name = 'taken' WHERE id = $1")
        .bind(b.provider_id)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(renamed, 0);
    // Nor change its own row (its tier decides its limits): only the global-admin path writes providers.
    let upgraded = sqlx::query("UPDATE providers SET tier = 'large' WHERE id = $1")
        .bind(a.provider_id)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(upgraded, 0);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn only_the_global_admin_path_and_the_narrow_functions_cross_tenants() {
    let db = TestDb::new().await;
    let (a, b) = two_tenants_with_data(&db).await;

    let mut tx = db::global_admin_tx(&db.app).await.unwrap();
    assert_eq!(count_in(&mut tx, "providers").await, 2);
    assert_eq!(count_in(&mut tx, "samples").await, 80);
    tx.commit().await.unwrap();
    let mut tx = db::tenant_tx(&db.app, a.provider_id).await.unwrap();
    assert_eq!(count_in(&mut tx, "providers").await, 1);
    tx.commit().await.unwrap();

    // Before a tenant is known: the agent's identity (any provider), through the SECURITY DEFINER function.
    let mut conn = db.app.acquire().await.unwrap();
    let (provider, pop): (Uuid, Uuid) =
        sqlx::query_as("SELECT provider_id, pop_id FROM octoisp_agent_identity($1)")
            .bind(b.agent.agent_id)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!((provider, pop), (b.provider_id, b.pop_id));
    // The function does not leave the global-admin setting behind.
    assert_eq!(count_in(&mut conn, "agents").await, 0);
    conn.close().await.unwrap();

    // Each such function is SECURITY DEFINER with a pinned search_path, and not executable by PUBLIC.
    let functions: Vec<(String, bool, Option<Vec<String>>, String)> = sqlx::query_as(
        "SELECT proname::text, prosecdef, proconfig, coalesce(proacl::text, '') FROM pg_proc \
         WHERE proname IN ('octoisp_agent_identity', 'octoisp_enrollment_token', 'octoisp_revoked_fingerprints', \
                           'octoisp_sample_partitions')",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert_eq!(functions.len(), 4);
    for (name, definer, config, acl) in functions {
        assert!(definer, "{name} is not SECURITY DEFINER");
        let config = config.unwrap_or_default();
        assert!(
            config.iter().any(|c| c.starts_with("search_path=")),
            "{name}: {config:?}"
        );
        assert!(
            !acl.contains("{=") && !acl.contains(",=") && !acl.is_empty(),
            "{name} is executable by PUBLIC: {acl}"
        );
    }
}
