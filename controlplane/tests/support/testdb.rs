//! A fresh database per test, migrated, with an application-role pool and an admin pool.

use std::str::FromStr;
use std::time::Duration;

use octoisp_controlplane::db;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

/// Environment variable naming the admin URL of the cluster tests create their databases in.
pub const ADMIN_URL_ENV: &str = "OCTOISP_TEST_PG";
/// How long a test waits for a pooled connection (a stopped server fails fast).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin URL used when [`ADMIN_URL_ENV`] is not set.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database `octoisp_t_<random>` created and migrated for one test, dropped when the value is dropped (best
/// effort: also after a panic) or by [`TestDb::cleanup`].
pub struct TestDb {
    /// Name of the database.
    pub name: String,
    /// Pool connected as `octoisp_app` (row-level security applies), 8 connections.
    pub app: PgPool,
    /// Pool connected as the admin role on this database (the schema owner; sees everything).
    pub admin: PgPool,
    root: PgConnectOptions,
    dropped: bool,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TestDb {
    /// A database on the cluster of `$OCTOISP_TEST_PG` (default: local PostgreSQL on 5432 with trust auth).
    pub async fn new() -> TestDb {
        let url = std::env::var(ADMIN_URL_ENV).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        TestDb::on(&url).await
    }

    /// A database on the cluster whose admin (superuser, or owner with CREATEDB and CREATEROLE) URL is `admin_url`.
    pub async fn on(admin_url: &str) -> TestDb {
        let root = PgConnectOptions::from_str(admin_url)
            .unwrap_or_else(|err| panic!("{ADMIN_URL_ENV}: invalid URL: {err}"))
            .application_name("octoisp-tests");
        let name = format!("octoisp_t_{:016x}", rand::random::<u64>());
        let mut conn = root.connect().await.unwrap_or_else(|err| {
            panic!(
                "cannot connect to the test PostgreSQL ({}:{}): {err}; set {ADMIN_URL_ENV}",
                root.get_host(),
                root.get_port()
            )
        });
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        conn.close().await.ok();
        // Built before migrating, so that a failure below still drops the database.
        let options = root.clone().database(&name);
        let db = TestDb {
            admin: PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_lazy_with(options.clone()),
            app: PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_lazy_with(options.username(db::APP_ROLE).password("")),
            name,
            root,
            dropped: false,
        };
        db::migrate(&db.admin).await.expect("apply the migrations");
        db
    }

    /// Connection options of the admin role on this database.
    pub fn admin_options(&self) -> PgConnectOptions {
        self.root.clone().database(&self.name)
    }

    /// Connection options of `octoisp_app` on this database (trust authentication, same host and port).
    pub fn app_options(&self) -> PgConnectOptions {
        self.root
            .clone()
            .database(&self.name)
            .username(db::APP_ROLE)
            .password("")
    }

    /// URL of `octoisp_app` on this database.
    pub fn app_url(&self) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            db::APP_ROLE,
            self.root.get_host(),
            self.root.get_port(),
            self.name
        )
    }

    /// Another pool of `octoisp_app` on this database (for instance, a second control plane instance).
    pub async fn app_pool(&self, max_connections: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(self.app_options())
            .await
            .expect("connect as octoisp_app to the test database")
    }

    /// Drops the database now, waiting for it.
    pub async fn cleanup(mut self) {
        self.app.close().await;
        self.admin.close().await;
        drop_database(self.root.clone(), self.name.clone()).await;
        self.dropped = true;
    }
}

async fn drop_database(root: PgConnectOptions, name: String) {
    if let Ok(mut conn) = root.connect().await {
        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        if let Err(err) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
        {
            eprintln!("cannot drop test database {name}: {err}");
        }
        conn.close().await.ok();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (root, name) = (self.root.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on: use a runtime of our own on a thread.
        let dropper = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_database(root, name));
            }
        });
        let _ = dropper.join();
    }
}
