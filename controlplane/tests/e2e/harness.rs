//! Runs the real binaries: a control plane and agents as child processes, against a private PostgreSQL
//! cluster, talking QUIC over loopback. Each test gets its own cluster, directories and ports.

use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::support::PrivatePg;

/// A binary of the workspace, next to the control plane binary that cargo built for this test.
pub fn bin(name: &str) -> PathBuf {
    let cp = PathBuf::from(env!("CARGO_BIN_EXE_octoisp-controlplane"));
    let path = cp.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

/// A free UDP port on 127.0.0.1 (bound then released).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a command to completion and returns its stdout; panics with its stderr when it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A whole installation: private PostgreSQL, the control plane, a provider and a POP.
pub struct Installation {
    /// The private PostgreSQL cluster.
    pub pg: PrivatePg,
    /// Scratch directory of the test.
    pub dir: tempfile::TempDir,
    /// Control plane config file.
    pub cp_config: PathBuf,
    /// QUIC address agents dial.
    pub quic_addr: String,
    /// The running control plane, if started.
    pub cp: Option<Child>,
    /// Superuser pool on the installation's database (sees every tenant).
    pub admin: PgPool,
    /// Roles `serve` runs.
    pub roles: String,
    /// `http.listen` of the control plane.
    pub http_addr: String,
}

impl Installation {
    /// Creates the cluster, the database, the schema, a provider `isp-a` with POP `centro`, and starts the
    /// control plane.
    pub async fn start() -> Installation {
        Installation::start_with("", "ingest,workers").await
    }

    /// Like [`Installation::start`], with `extra` TOML appended to the control plane's config and `roles`
    /// given to `serve`.
    pub async fn start_with(extra: &str, roles: &str) -> Installation {
        let pg = PrivatePg::start().await;
        let admin_root = pg.admin_url();
        let root = PgPoolOptions::new()
            .max_connections(1)
            .connect(&admin_root)
            .await
            .unwrap();
        sqlx::query("CREATE DATABASE octoisp")
            .execute(&root)
            .await
            .unwrap();
        root.close().await;
        let dir = tempfile::tempdir().unwrap();
        let quic_addr = format!("127.0.0.1:{}", free_udp_port());
        let cp_config = dir.path().join("cp.toml");
        let db_admin = pg.url_for("postgres", "octoisp");
        let http_addr = format!("127.0.0.1:{}", free_tcp_port());
        std::fs::write(
            &cp_config,
            format!(
                "data_dir = {data:?}\n[database]\nurl = {app:?}\nadmin_url = {db_admin:?}\nmax_connections = 8\n\
                 [ingest]\nlisten = {quic_addr:?}\n[http]\nlisten = {http_addr:?}\n[log]\nlevel = \"info\"\n{extra}",
                data = dir.path().join("cp-data"),
                app = pg.url_for("octoisp_app", "octoisp"),
            ),
        )
        .unwrap();
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .connect(&db_admin)
            .await
            .unwrap();
        let mut inst = Installation {
            pg,
            dir,
            cp_config,
            quic_addr,
            cp: None,
            admin,
            roles: roles.to_owned(),
            http_addr,
        };
        inst.cp_cmd(&["migrate"]);
        inst.cp_cmd(&["provider", "create", "--slug", "isp-a", "--name", "ISP A"]);
        inst.cp_cmd(&[
            "pop",
            "create",
            "--provider",
            "isp-a",
            "--slug",
            "centro",
            "--name",
            "Centro",
        ]);
        inst.start_cp();
        inst
    }

    /// Runs an administration command of the control plane and returns its output.
    pub fn cp_cmd(&self, args: &[&str]) -> String {
        run_ok(
            Command::new(bin("octoisp-controlplane"))
                .arg("--config")
                .arg(&self.cp_config)
                .args(args),
        )
    }

    /// Starts (or restarts) the control plane process.
    pub fn start_cp(&mut self) {
        assert!(self.cp.is_none(), "control plane already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("cp.log"))
            .unwrap();
        let child = Command::new(bin("octoisp-controlplane"))
            .arg("--config")
            .arg(&self.cp_config)
            .args(["serve", "--roles", &self.roles])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.cp = Some(child);
    }

    /// Kills the control plane with SIGKILL (no chance to finish anything).
    pub fn kill_cp(&mut self) {
        if let Some(mut c) = self.cp.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the control plane with SIGTERM and waits for it to exit.
    pub fn stop_cp(&mut self) {
        if let Some(c) = self.cp.take() {
            terminate(c);
        }
    }

    /// A one-time enrollment token for POP `centro` of `isp-a`.
    pub fn token(&self) -> String {
        self.cp_cmd(&[
            "pop",
            "enroll-token",
            "--provider",
            "isp-a",
            "--pop",
            "centro",
            "--ttl-secs",
            "600",
        ])
    }

    /// The control plane log so far, for failure messages.
    pub fn cp_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cp.log")).unwrap_or_default()
    }

    /// `(rows, distinct (series, ts))` in `samples`.
    pub async fn sample_counts(&self) -> Result<(i64, i64), sqlx::Error> {
        sqlx::query_as("SELECT count(*), count(DISTINCT (series_id, ts)) FROM samples")
            .fetch_one(&self.admin)
            .await
    }

    /// Waits until `samples` holds `n` rows (or more), returning the counts; panics after `timeout`.
    pub async fn wait_for_samples(
        &self,
        n: i64,
        timeout: Duration,
        agents: &[&Agent],
    ) -> (i64, i64) {
        let start = Instant::now();
        let mut last = (0, 0);
        while start.elapsed() < timeout {
            if let Ok(c) = self.sample_counts().await {
                last = c;
                if c.0 >= n {
                    return c;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let logs: Vec<String> = agents.iter().map(|a| a.log()).collect();
        panic!(
            "only {last:?} of {n} samples after {timeout:?}\n--- control plane log:\n{}\n--- agent logs:\n{}",
            self.cp_log(),
            logs.join("\n---\n")
        );
    }
}

impl Drop for Installation {
    fn drop(&mut self) {
        self.kill_cp();
    }
}

/// Sends SIGTERM and waits (at most 30 s, then SIGKILL).
pub fn terminate(mut child: Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("process {pid} ignored SIGTERM for 30 s");
}

/// An agent process with its own state directory.
pub struct Agent {
    /// State directory (outbox, identity) and config.
    pub dir: tempfile::TempDir,
    /// Config file.
    pub config: PathBuf,
    /// The running process.
    pub child: Option<Child>,
}

impl Agent {
    /// Writes the agent's config: uplink to `quic_addr`, plus `extra` TOML (monitors, outbox settings).
    pub fn new(quic_addr: &str, extra: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = {state:?}\n[uplink]\nserver = {quic_addr:?}\nbackoff_min_ms = 100\nbackoff_max_ms = 1000\n\
                 [metrics]\nlisten = \"127.0.0.1:{port}\"\n[outbox]\nsynchronous = \"normal\"\n{extra}",
                state = dir.path().join("state"),
                port = free_tcp_port(),
            ),
        )
        .unwrap();
        Agent {
            dir,
            config,
            child: None,
        }
    }

    /// Runs `octoisp-agent enroll` with `token`.
    pub fn enroll(&self, quic_addr: &str, token: &str) -> String {
        run_ok(
            Command::new(bin("octoisp-agent"))
                .arg("--config")
                .arg(&self.config)
                .args(["enroll", "--server", quic_addr, "--token", token]),
        )
    }

    /// Starts `octoisp-agent run`.
    pub fn start(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .unwrap();
        let child = Command::new(bin("octoisp-agent"))
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c);
        }
    }

    /// `octoisp-agent status` output.
    pub fn status(&self) -> String {
        run_ok(
            Command::new(bin("octoisp-agent"))
                .arg("--config")
                .arg(&self.config)
                .arg("status"),
        )
    }

    /// The agent log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a field of `octoisp-agent status` output like `outbox: 3 chunks, 120 samples, ...`.
pub fn status_number(status: &str, label: &str) -> Option<u64> {
    status
        .split([',', '\n', ':'])
        .map(str::trim)
        .find_map(|part| {
            let (num, rest) = part.split_once(' ')?;
            (rest == label).then(|| num.parse().ok()).flatten()
        })
}
