//! A private PostgreSQL cluster in a temporary directory, on a free loopback port, that a test may stop and
//! restart (the end-to-end tests restart PostgreSQL in the middle of a run).
//!
//! Uses the distribution's binaries (`/usr/lib/postgresql/<newest version>/bin`, or `$OCTOISP_PG_BIN`).
//! `initdb` refuses to run as root, so as root every command runs as the `postgres` user (`runuser`) and the
//! directory is handed to that user. Authentication is `trust`, on 127.0.0.1 and a socket in the directory only.
//! `fsync` is off: the cluster is thrown away with the test, and a clean or immediate stop loses nothing.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

/// Environment variable naming a directory holding `initdb` and `pg_ctl`.
pub const PG_BIN_ENV: &str = "OCTOISP_PG_BIN";

/// A running private cluster; stopped (immediately) and deleted on drop.
#[derive(Debug)]
pub struct PrivatePg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    running: bool,
}

impl PrivatePg {
    /// Creates a cluster (initdb) and starts it. Panics with the server log if it cannot.
    pub async fn start() -> PrivatePg {
        let bin = pg_bin();
        let as_postgres = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let dir = tempfile::Builder::new()
            .prefix("octoisp-pg-")
            .tempdir()
            .expect("create a temporary directory");
        if as_postgres {
            run(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(dir.path()),
                "chown the cluster directory",
            )
            .await;
        }
        let mut pg = PrivatePg {
            dir,
            bin,
            port: 0,
            as_postgres,
            running: false,
        };
        let data = pg.data_dir();
        let mut initdb = pg.command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        initdb.arg("--locale=C");
        run(&mut initdb, "initdb").await;
        pg.resume().await;
        pg
    }

    /// Port the cluster listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of the `postgres` superuser on the `postgres` database.
    pub fn admin_url(&self) -> String {
        self.url_for("postgres", "postgres")
    }

    /// URL of `user` on `database`.
    pub fn url_for(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{database}", self.port)
    }

    /// Whether the server is running (as far as this handle knows).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`: sessions are disconnected, nothing committed is lost).
    pub async fn stop(&mut self) {
        if self.running {
            let mut cmd = self.command("pg_ctl");
            cmd.arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-m", "fast", "stop"]);
            run(&mut cmd, "pg_ctl stop").await;
            self.running = false;
        }
    }

    /// Starts the server again after [`PrivatePg::stop`], on the same port (a new one at first start).
    pub async fn resume(&mut self) {
        if self.running {
            return;
        }
        let first = self.port == 0;
        for attempt in 0..5 {
            if first {
                self.port = free_port();
            }
            let mut cmd = self.command("pg_ctl");
            cmd.arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_path())
                .arg("-o")
                .arg(format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                    self.port,
                    self.dir.path().display()
                ))
                .args(["-w", "-t", "60", "start"]);
            let status = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .expect("run pg_ctl");
            if status.success() {
                self.running = true;
                return;
            }
            if !first || attempt == 4 {
                break;
            }
        }
        panic!(
            "cannot start the private PostgreSQL; its log:\n{}",
            self.log()
        );
    }

    /// Stops and starts the server (clients see their connections dropped).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.resume().await;
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        };
        // The postgres user may not be allowed into the test's working directory.
        cmd.current_dir(self.dir.path());
        cmd
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let pg_ctl = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_ctl);
            c
        } else {
            std::process::Command::new(pg_ctl)
        };
        let _ = cmd
            .current_dir(self.dir.path())
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The directory of `initdb` and `pg_ctl`: `$OCTOISP_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.
fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var(PG_BIN_ENV) {
        return PathBuf::from(dir);
    }
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|v| v.parse::<f64>().ok())
                .map(|v| (v, e.path()))
        })
        .filter(|(_, p)| p.join("bin/initdb").exists())
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match newest {
        Some((_, path)) => path.join("bin"),
        None => panic!(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: install postgresql or set {PG_BIN_ENV}"
        ),
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

async fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .await
        .unwrap_or_else(|err| panic!("{what}: cannot run: {err}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
