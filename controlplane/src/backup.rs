//! `octoisp-controlplane backup` and `restore`: the transactional data (tenants, users, devices, audit, ...)
//! through `pg_dump` / `pg_restore` in PostgreSQL's custom format.
//!
//! - A backup is written to a temporary file beside the target and renamed only once `pg_dump` succeeded and
//!   `pg_restore --list` read it back, so a killed or failed backup never leaves a truncated file under the final
//!   name. Files are created mode 0600: they hold password hashes and key hashes.
//! - Metric samples (the `samples_p*` partitions) are left out unless asked for: they are large, rebuilt by the
//!   agents' outboxes only for the last hours, and usually covered by storage snapshots instead. Their tables
//!   are still in the dump (empty), so the schema is whole.
//! - A restore goes into an empty database, in one transaction (`--single-transaction --exit-on-error`): it
//!   lands whole or not at all. The application role is created first if the cluster lacks it; objects are owned
//!   by the restoring role (`--no-owner`), the grants to `octoisp_app` and every row-level security policy come
//!   back as they were. Migrations newer than the backup are applied after it, and the audit chains are verified.
//! - Passwords never reach a command line: the URL is passed without its password and the password through
//!   `PGPASSWORD`.
//!
//! Both need a role that row-level security does not bind (a superuser or a BYPASSRLS role): tables are
//! `FORCE ROW LEVEL SECURITY`, so even their owner sees nothing without a tenant, and `pg_dump` refuses to dump a
//! filtered table.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use chrono::Utc;
use sqlx::{Connection, PgConnection};
use tokio::process::Command;

/// Table data left out of a backup without `--with-metrics`.
pub const METRIC_DATA_PATTERNS: &[&str] = &["public.samples_p*"];

/// What a backup run did.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The file written.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Number of table-data entries in the dump.
    pub tables: usize,
    /// Backups deleted by the rotation.
    pub rotated: Vec<PathBuf>,
}

/// Where a backup goes: `out` if given (a directory gets a timestamped file name), else `<data_dir>/backups/`.
pub fn backup_path(out: Option<&Path>, data_dir: &Path) -> PathBuf {
    let name = format!("octoisp-{}.dump", Utc::now().format("%Y%m%dT%H%M%SZ"));
    match out {
        Some(p) if p.is_dir() => p.join(name),
        Some(p) => p.to_path_buf(),
        None => data_dir.join("backups").join(name),
    }
}

/// Dumps the database at `admin_url` to `path`. `keep`: after success, keep only the newest `keep` files named
/// `octoisp-*.dump` in the same directory (0: keep all).
pub async fn backup(
    admin_url: &str,
    path: &Path,
    with_metrics: bool,
    keep: usize,
) -> anyhow::Result<BackupReport> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the backup directory {}", dir.display()))?;
    let file_name = path
        .file_name()
        .context("the backup path names no file")?
        .to_string_lossy()
        .into_owned();
    let partial = dir.join(format!(".{file_name}.partial"));
    // Created here with mode 0600 so that pg_dump writes into a file nobody else can read.
    create_private(&partial)?;

    let (url, password) = split_password(admin_url);
    let mut cmd = Command::new("pg_dump");
    cmd.arg("--format=custom")
        .arg("--no-password")
        .arg("--compress=6")
        .arg(format!("--file={}", partial.display()))
        .arg(format!("--dbname={url}"));
    if !with_metrics {
        for pattern in METRIC_DATA_PATTERNS {
            cmd.arg(format!("--exclude-table-data={pattern}"));
        }
    }
    let run = run_tool(cmd, password.as_deref(), "pg_dump").await;
    if let Err(err) = run {
        let _ = std::fs::remove_file(&partial);
        return Err(err);
    }
    let tables = match list_table_data(&partial).await {
        Ok(n) => n,
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            return Err(err.context("the dump just written cannot be read back"));
        }
    };
    std::fs::rename(&partial, path)
        .with_context(|| format!("cannot move the backup to {}", path.display()))?;
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let rotated = if keep > 0 {
        rotate(dir, keep)?
    } else {
        Vec::new()
    };
    Ok(BackupReport {
        path: path.to_path_buf(),
        bytes,
        tables,
        rotated,
    })
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// Rows per table after the restore (tables with rows only), sorted by table name.
    pub rows: Vec<(String, i64)>,
    /// Audit rows checked and chains verified.
    pub audit_rows: i64,
    /// Number of audit chains.
    pub audit_chains: i64,
}

/// Restores `file` into the empty database at `target_admin_url`, applies newer migrations and verifies the
/// audit chains. Refuses a database that already has tables.
pub async fn restore(file: &Path, target_admin_url: &str) -> anyhow::Result<RestoreReport> {
    if !file.is_file() {
        bail!("no backup file {}", file.display());
    }
    list_table_data(file)
        .await
        .context("not a readable OctoISP backup (pg_restore --list failed)")?;
    let mut conn = PgConnection::connect(target_admin_url)
        .await
        .with_context(|| {
            format!(
                "cannot connect to the target database {}",
                crate::config::redact(target_admin_url)
            )
        })?;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')",
    )
    .fetch_one(&mut conn)
    .await
    .context("cannot inspect the target database")?;
    if tables > 0 {
        bail!(
            "the target database is not empty ({tables} tables in schema public): restore into a new database \
             (createdb) so that nothing is overwritten"
        );
    }
    // The role is cluster-wide: a new cluster does not have it, and the grants in the dump name it.
    sqlx::raw_sql(
        "DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'octoisp_app') THEN
                CREATE ROLE octoisp_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB NOREPLICATION;
            END IF;
        END $$",
    )
    .execute(&mut conn)
    .await
    .context("cannot create the role octoisp_app")?;

    let (url, password) = split_password(target_admin_url);
    let mut cmd = Command::new("pg_restore");
    cmd.arg("--no-password")
        .arg("--no-owner")
        .arg("--single-transaction")
        .arg("--exit-on-error")
        .arg(format!("--dbname={url}"))
        .arg(file);
    run_tool(cmd, password.as_deref(), "pg_restore").await?;

    let pool = crate::db::connect(target_admin_url, 2).await?;
    crate::db::migrate(&pool)
        .await
        .context("the backup was restored but newer migrations failed")?;
    let report = crate::audit::verify(&pool, None)
        .await
        .context("cannot verify the audit chains")?;
    if let Some((id, reason)) = report.first_broken {
        bail!("restored, but the audit chain is broken at audit_log row {id}: {reason}");
    }
    let rows = row_counts(&pool).await?;
    pool.close().await;
    Ok(RestoreReport {
        rows,
        audit_rows: report.rows_checked as i64,
        audit_chains: report.chains as i64,
    })
}

/// Exact row counts of every table of schema public that has rows (partitions counted in their parent), as
/// seen by a role row-level security does not bind.
pub async fn row_counts(pool: &sqlx::PgPool) -> anyhow::Result<Vec<(String, i64)>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .context("cannot list tables")?;
    let mut out = Vec::new();
    for name in names {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM public.\"{}\"",
            name.replace('"', "\"\"")
        )))
        .fetch_one(pool)
        .await
        .with_context(|| format!("cannot count the rows of {name}"))?;
        if n > 0 {
            out.push((name, n));
        }
    }
    Ok(out)
}

/// Number of TABLE DATA entries in a custom-format dump.
async fn list_table_data(file: &Path) -> anyhow::Result<usize> {
    let out = Command::new("pg_restore")
        .arg("--list")
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .await
        .context("cannot run pg_restore (install postgresql-client)")?;
    if !out.status.success() {
        bail!(
            "pg_restore --list: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains(" TABLE DATA "))
        .count())
}

async fn run_tool(mut cmd: Command, password: Option<&str>, name: &str) -> anyhow::Result<()> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd
        .output()
        .await
        .with_context(|| format!("cannot run {name} (install postgresql-client)"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first: Vec<&str> = stderr.lines().take(8).collect();
        bail!("{name} failed ({}): {}", out.status, first.join(" | "));
    }
    Ok(())
}

/// Creates (or truncates) `path` readable by its owner only.
fn create_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    Ok(())
}

/// Deletes the oldest `octoisp-*.dump` files of `dir` beyond the newest `keep`.
fn rotate(dir: &Path, keep: usize) -> anyhow::Result<Vec<PathBuf>> {
    let mut dumps: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("octoisp-") && n.ends_with(".dump"))
        })
        .collect();
    // Timestamped names sort in time order.
    dumps.sort();
    let excess = dumps.len().saturating_sub(keep);
    let removed: Vec<PathBuf> = dumps.into_iter().take(excess).collect();
    for p in &removed {
        std::fs::remove_file(p).with_context(|| format!("cannot delete {}", p.display()))?;
    }
    Ok(removed)
}

/// Splits the password out of a `postgres://user:password@host/db` URL: the URL without it, and the password
/// percent-decoded.
pub fn split_password(url: &str) -> (String, Option<String>) {
    let (Some(s), Some(at)) = (url.find("://"), url.rfind('@')) else {
        return (url.to_owned(), None);
    };
    if at < s {
        return (url.to_owned(), None);
    }
    let userinfo = &url[s + 3..at];
    match userinfo.split_once(':') {
        Some((user, password)) => (
            format!("{}{user}{}", &url[..s + 3], &url[at..]),
            Some(percent_decode(password)),
        ),
        None => (url.to_owned(), None),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_leaves_the_url() {
        let (url, pw) =
            split_password("postgres://admin:s%40cr%3At@db.example:5432/octoisp?sslmode=require");
        assert_eq!(
            url,
            "postgres://admin@db.example:5432/octoisp?sslmode=require"
        );
        assert_eq!(pw.as_deref(), Some("s@cr:t"));
        let (url, pw) = split_password("postgres://admin@127.0.0.1/octoisp");
        assert_eq!(url, "postgres://admin@127.0.0.1/octoisp");
        assert_eq!(pw, None);
        assert_eq!(split_password("postgresql:///octoisp").1, None);
        // A trailing lone '%' is kept as is, never read past the end.
        assert_eq!(
            split_password("postgres://u:ab%@h/d").1.as_deref(),
            Some("ab%")
        );
    }

    #[test]
    fn rotation_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for ts in ["20260101T000000Z", "20260102T000000Z", "20260103T000000Z"] {
            std::fs::write(dir.path().join(format!("octoisp-{ts}.dump")), b"x").unwrap();
        }
        std::fs::write(dir.path().join("other.dump"), b"x").unwrap();
        let removed = rotate(dir.path(), 2).unwrap();
        assert_eq!(removed.len(), 1);
        assert!(removed[0].ends_with("octoisp-20260101T000000Z.dump"));
        assert!(dir.path().join("other.dump").exists());
        assert!(dir.path().join("octoisp-20260103T000000Z.dump").exists());
    }
}
