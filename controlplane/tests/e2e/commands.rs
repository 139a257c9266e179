//! Remote commands with the real binaries: the API (role `api`), the Redis queue and the dispatcher (role
//! `workers`), the QUIC stream (role `ingest`) and an agent running the command, as an operator sees them.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Agent, Installation, bin, run_ok};

const PASSWORD: &str = "correct horse battery staple 42";

/// Deletes every key under its prefix in the test Redis when dropped (SCAN + UNLINK in batches), also when a
/// test panicked.
struct PrefixGuard {
    url: String,
    prefix: String,
}

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        let (url, pattern) = (self.url.clone(), format!("{}*", self.prefix));
        let _ = std::thread::spawn(move || {
            let Ok(mut r) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
                return;
            };
            let mut cursor: u64 = 0;
            loop {
                let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut r)
                else {
                    return;
                };
                if !keys.is_empty() {
                    let _: redis::RedisResult<i64> = redis::cmd("UNLINK").arg(keys).query(&mut r);
                }
                if next == 0 {
                    return;
                }
                cursor = next;
            }
        })
        .join();
    }
}

/// An installation with every role, the queue on the test Redis under a prefix of its own, a NOC user signed
/// in, and one enrolled, running agent.
pub(crate) struct Setup {
    pub(crate) inst: Installation,
    pub(crate) agent: Agent,
    pub(crate) token: String,
    _keys: PrefixGuard,
}

pub(crate) fn redis_url() -> String {
    std::env::var("OCTOISP_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// One HTTP/1.1 request to the control plane (`Connection: close`): `(status, JSON body)`, or why it failed.
pub(crate) async fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let auth = if token.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {token}\r\n")
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {text}"))?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head}"))?;
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked responses are not read by this client"
    );
    Ok((
        status,
        serde_json::from_str(rest).unwrap_or(Value::String(rest.to_owned())),
    ))
}

impl Setup {
    async fn start(queue_extra: &str) -> Setup {
        Setup::start_on(&redis_url(), queue_extra).await
    }

    /// Like [`Setup::start`], with the queue and the API on the Redis at `url`.
    async fn start_on(url: &str, queue_extra: &str) -> Setup {
        Setup::start_full(url, queue_extra, "", "", "NOC").await
    }

    /// Like [`Setup::start`], with `cp_extra` appended to the control plane's config, `agent_extra` to the
    /// agent's, and the signed-in user given `role`.
    pub(crate) async fn start_full(
        url: &str,
        queue_extra: &str,
        cp_extra: &str,
        agent_extra: &str,
        role: &str,
    ) -> Setup {
        let prefix = format!("octoisp-test-e2e-cmd-{:016x}", rand::random::<u64>());
        let url = url.to_owned();
        let keys = PrefixGuard {
            url: url.clone(),
            prefix: prefix.clone(),
        };
        let extra = format!(
            "[queue]\nredis_url = {url:?}\nprefix = \"{prefix}:q\"\nvisibility_timeout_secs = 5\nbackoff_base_ms = 200\n{queue_extra}\n\
             [api]\nredis_url = {url:?}\nredis_prefix = \"{prefix}:api\"\n\
             [auth]\njwt_secret = \"e2e-commands-secret-0123456789abcdef0123456789\"\n{cp_extra}\n"
        );
        let inst = Installation::start_with(&extra, "api,ingest,workers").await;
        run_ok(
            Command::new(bin("octoisp-controlplane"))
                .arg("--config")
                .arg(&inst.cp_config)
                .args([
                    "user",
                    "create",
                    "--provider",
                    "isp-a",
                    "--email",
                    "noc@a.example",
                ])
                .args(["--name", "NOC", "--role", role])
                .env("OCTOISP_USER_PASSWORD", PASSWORD),
        );
        let mut agent = Agent::new(&inst.quic_addr, agent_extra);
        agent.enroll(&inst.quic_addr, &inst.token());
        agent.start();
        // The API answers once the control plane is up.
        let start = Instant::now();
        let token = loop {
            let login = json!({"email": "noc@a.example", "password": PASSWORD});
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                http(
                    &inst.http_addr,
                    "POST",
                    "/api/v1/auth/login",
                    "",
                    Some(&login),
                ),
            )
            .await;
            if let Ok(Ok((200, body))) = r {
                break body["access_token"].as_str().unwrap().to_owned();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no login within 60 s\n{}",
                inst.cp_log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        Setup {
            inst,
            agent,
            token,
            _keys: keys,
        }
    }

    pub(crate) async fn pop_id(&self) -> uuid::Uuid {
        sqlx::query_scalar("SELECT id FROM pops WHERE slug = 'centro'")
            .fetch_one(&self.inst.admin)
            .await
            .unwrap()
    }

    /// `POST /api/v1/commands` on POP `centro`; returns the command id.
    async fn create(&self, name: &str, args: Value, extra: Value) -> String {
        let mut body = json!({"name": name, "args": args, "pop_id": self.pop_id().await});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let (status, r) = self
            .http("POST", "/api/v1/commands", Some(&body))
            .await
            .expect("POST /api/v1/commands");
        assert_eq!(status, 202, "create {name}: {r}");
        r["id"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        http(&self.inst.http_addr, method, path, &self.token, body).await
    }

    /// Polls `GET /api/v1/commands/{id}` until `done(body)`; panics with the logs after `timeout`.
    pub(crate) async fn wait(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        let mut last = Value::Null;
        while start.elapsed() < timeout {
            if let Ok(Ok((200, body))) = tokio::time::timeout(
                Duration::from_secs(10),
                self.http("GET", &format!("/api/v1/commands/{id}"), None),
            )
            .await
            {
                if done(&body) {
                    return body;
                }
                last = body;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "command {id} not there after {timeout:?}: {last}\n--- control plane log:\n{}\n--- agent log:\n{}",
            self.inst.cp_log(),
            self.agent.log()
        );
    }

    /// Lines of the agent's log about command `id` containing `what`.
    fn agent_lines(&self, id: &str, what: &str) -> usize {
        self.agent
            .log()
            .lines()
            .filter(|l| l.contains(id) && l.contains(what))
            .count()
    }
}

fn status_is(s: &'static str) -> impl Fn(&Value) -> bool {
    move |b| b["status"] == s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_created_through_the_api_runs_on_the_agent_and_its_result_is_readable() {
    let s = Setup::start("").await;
    let id = s.create("noop", json!({"sleep_ms": 50}), json!({})).await;
    let done = s
        .wait(&id, Duration::from_secs(90), |b| {
            b["status"] != "queued"
                && b["status"] != "dispatched"
                && b["status"] != "running"
                && b["status"] != "waiting_agent"
        })
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"]["slept_ms"], 50, "{done}");
    assert_eq!(
        s.agent_lines(&id, "Command started."),
        1,
        "{}",
        s.agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_worker_is_killed_mid_job_completes_exactly_once() {
    let mut s = Setup::start("").await;
    // Long enough that the lease (5 s visibility) is reclaimed and delivered again while the agent still runs it.
    let id = s
        .create(
            "noop",
            json!({"sleep_ms": 12000, "timeout_secs": 60}),
            json!({}),
        )
        .await;
    s.wait(&id, Duration::from_secs(90), status_is("running"))
        .await;
    // The control plane dies while the agent runs the command, and comes back.
    s.inst.kill_cp();
    s.inst.start_cp();
    let done = s
        .wait(&id, Duration::from_secs(180), |b| {
            b["status"] == "succeeded" || b["status"] == "failed" || b["status"] == "dead"
        })
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // Run once on the agent, one stored result.
    assert_eq!(
        s.agent_lines(&id, "Command started."),
        1,
        "{}",
        s.agent.log()
    );
    let results: i64 =
        sqlx::query_scalar("SELECT count(*) FROM command_results WHERE command_id = $1::uuid")
            .bind(&id)
            .fetch_one(&s.inst.admin)
            .await
            .unwrap();
    assert_eq!(results, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_for_an_offline_agent_wait_then_run_when_it_is_back_or_expire() {
    let mut s = Setup::start("").await;
    s.agent.stop();
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(s.create("noop", json!({"sleep_ms": 0}), json!({})).await);
    }
    let short = s
        .create("noop", json!({"sleep_ms": 0}), json!({"deadline_secs": 5}))
        .await;
    for id in &ids {
        s.wait(id, Duration::from_secs(90), status_is("waiting_agent"))
            .await;
    }
    let expired = s
        .wait(&short, Duration::from_secs(90), status_is("expired"))
        .await;
    let reason = expired["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("offline") && reason.contains("deadline"),
        "expired without a clear reason: {expired}"
    );
    // The agent comes back: every waiting command runs, once, and they start in creation order.
    s.agent.start();
    for id in &ids {
        s.wait(id, Duration::from_secs(90), status_is("succeeded"))
            .await;
        assert_eq!(
            s.agent_lines(id, "Command started."),
            1,
            "{}",
            s.agent.log()
        );
    }
    let log = s.agent.log();
    assert_eq!(s.agent_lines(&short, "Command started."), 0, "{log}");
    // By the time each line carries (threads write their lines in any order); RFC 3339 UTC sorts as text.
    let mut started: Vec<(&str, &str)> = log
        .lines()
        .filter(|l| l.contains("Command started."))
        .filter_map(|l| {
            let id = ids.iter().find(|id| l.contains(id.as_str()))?;
            Some((l.split_whitespace().next()?, id.as_str()))
        })
        .collect();
    started.sort();
    let started: Vec<&str> = started.into_iter().map(|(_, id)| id).collect();
    let expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(started, expected, "not started in creation order\n{log}");
}

/// A private `redis-server --appendonly yes` on a free port, in a temp dir (the shared Redis is untouched).
struct PrivateRedis {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let mut r = PrivateRedis {
            dir: tempfile::tempdir().unwrap(),
            port: crate::harness::free_tcp_port(),
            child: None,
        };
        r.spawn();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, then started again on the same port and directory (it reloads its append-only file).
    fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Commands created while their agent stops and connects again all run, once each: none is left waiting for
/// its deadline (one the dispatcher found offline just before the agent's Hello went waiting after the Hello's
/// wake-up had looked for waiting commands, and nothing woke it), and none fails because it reached the agent
/// as it was stopping (it is delivered again instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_created_while_the_agent_connects_all_run() {
    let mut s = Setup::start("").await;
    let mut ids = Vec::new();
    for _round in 0..3 {
        s.agent.stop();
        let t0 = Instant::now();
        let mut started = false;
        while t0.elapsed() < Duration::from_secs(4) {
            if !started && t0.elapsed() > Duration::from_millis(300) {
                s.agent.start();
                started = true;
            }
            ids.push(s.create("noop", json!({"sleep_ms": 0}), json!({})).await);
        }
    }
    for id in &ids {
        s.wait(id, Duration::from_secs(60), status_is("succeeded"))
            .await;
    }
    let log = s.agent.log();
    for id in &ids {
        let started = log
            .lines()
            .filter(|l| l.contains(id.as_str()) && l.contains("Command started."))
            .count();
        assert_eq!(started, 1, "command {id} started {started} times\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_queued_before_a_redis_restart_are_not_lost() {
    let mut redis = PrivateRedis::start();
    let mut s = Setup::start_on(&redis.url(), "").await;
    s.agent.stop();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(s.create("noop", json!({"sleep_ms": 0}), json!({})).await);
    }
    for id in &ids {
        s.wait(id, Duration::from_secs(90), status_is("waiting_agent"))
            .await;
    }
    redis.restart();
    s.agent.start();
    for id in &ids {
        s.wait(id, Duration::from_secs(180), status_is("succeeded"))
            .await;
        assert_eq!(
            s.agent_lines(id, "Command started."),
            1,
            "{}",
            s.agent.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtr_cycles_reach_a_live_watcher_before_the_command_finishes() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let s = Setup::start("").await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/api/v1/live", s.inst.http_addr))
            .await
            .expect("open /api/v1/live");
    ws.send(Message::text(
        json!({"type": "auth", "token": s.token}).to_string(),
    ))
    .await
    .unwrap();
    let id = s
        .create(
            "mtr",
            json!({"target": "127.0.0.1", "cycles": 8, "interval_ms": 1000}),
            json!({}),
        )
        .await;
    ws.send(Message::text(
        json!({"type": "watch", "command_id": id}).to_string(),
    ))
    .await
    .unwrap();
    let mut cycles = Vec::new();
    let mut final_status = None;
    let start = Instant::now();
    while final_status.is_none() && start.elapsed() < Duration::from_secs(120) {
        let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await
        else {
            break;
        };
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(text.as_str()).unwrap();
        let ev = &v["event"];
        if v["type"] == "event" && ev["command_id"] == id.as_str() {
            if let Some(c) = ev["payload"]["cycle"].as_u64() {
                cycles.push(c);
            } else if let Some(st) = ev["status"].as_str()
                && st != "running"
                && st != "dispatched"
                && st != "queued"
            {
                final_status = Some(st.to_owned());
            }
        }
    }
    assert_eq!(
        final_status.as_deref(),
        Some("succeeded"),
        "cycles seen {cycles:?}\n{}",
        s.agent.log()
    );
    assert!(
        cycles.len() >= 2,
        "only {cycles:?} streamed before the command finished"
    );
}

/// Logs `email` in (created with `role` first) and returns its access token.
async fn user_token(s: &Setup, email: &str, role: &str) -> String {
    run_ok(
        Command::new(bin("octoisp-controlplane"))
            .arg("--config")
            .arg(&s.inst.cp_config)
            .args(["user", "create", "--provider", "isp-a", "--email", email])
            .args(["--name", role, "--role", role])
            .env("OCTOISP_USER_PASSWORD", PASSWORD),
    );
    let login = json!({"email": email, "password": PASSWORD});
    let (status, body) = http(
        &s.inst.http_addr,
        "POST",
        "/api/v1/auth/login",
        "",
        Some(&login),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// Samples stored for the device `key` (the agent names ping targets `icmp:<address>`).
async fn samples_of(s: &Setup, key: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM samples x JOIN series r ON r.id = x.series_id \
         JOIN devices d ON d.id = r.device_id WHERE d.device_key = $1",
    )
    .bind(key)
    .fetch_one(&s.inst.admin)
    .await
    .unwrap()
}

/// Polls the POP's agent configuration until `done(body)`.
async fn wait_config(s: &Setup, token: &str, done: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/api/v1/pops/{}/agent-config", s.pop_id().await);
    let start = Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < Duration::from_secs(90) {
        if let Ok((200, body)) = http(&s.inst.http_addr, "GET", &path, token, None).await {
            if done(&body) {
                return body;
            }
            last = body;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "agent configuration not there: {last}\n--- control plane log:\n{}\n--- agent log:\n{}",
        s.inst.cp_log(),
        s.agent.log()
    );
}

fn applied(version: i64) -> impl Fn(&Value) -> bool {
    move |b| b["agents"][0]["applied_version"] == version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pop_configuration_reaches_its_agent_now_and_when_it_comes_back() {
    // Pushes expire after 4 s, so the version written while the agent is away is delivered by the connect path.
    let mut s = Setup::start("[commands]\ndefault_deadline_secs = 4").await;
    let admin = user_token(&s, "admin@a.example", "Provider Admin").await;
    let pop = s.pop_id().await;
    let path = format!("/api/v1/pops/{pop}/agent-config");
    let doc = |target: &str| {
        json!({"monitors": {"ping": [{"name": "central", "targets": [target],
                                      "interval_ms": 300, "count": 1, "timeout_ms": 300}]},
               "snmp": {"credentials": [{"name": "core", "version": "2c", "community": "s3cr3t-community"}]},
               "scan": {"allowed": ["127.0.0.0/8"]}})
    };

    // The NOC may read but not write.
    let body = json!({"config": doc("127.0.0.9")});
    let (status, r) = s.http("PUT", &path, Some(&body)).await.unwrap();
    assert_eq!(status, 403, "{r}");

    // Version 1 is pushed at once and applied without a restart: the new monitor's samples arrive.
    let body =
        json!({"config": doc("127.0.0.9"), "base_version": 0, "comment": "ping the new gateway"});
    let (status, r) = http(&s.inst.http_addr, "PUT", &path, &admin, Some(&body))
        .await
        .unwrap();
    assert_eq!(status, 201, "{r}");
    assert_eq!(r["version"], 1);
    let v = wait_config(&s, &admin, applied(1)).await;
    assert_eq!(v["agents"][0]["last_status"], "succeeded", "{v}");
    let start = Instant::now();
    while samples_of(&s, "icmp:127.0.0.9").await == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no samples from the pushed monitor\n{}",
            s.agent.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Secrets: the writer sees them, the NOC sees them redacted; the command row never holds the document.
    let community = |b: &Value| b["config"]["snmp"]["credentials"][0]["community"].clone();
    let (_, as_admin) = http(&s.inst.http_addr, "GET", &path, &admin, None)
        .await
        .unwrap();
    assert_eq!(community(&as_admin), "s3cr3t-community");
    let (_, as_noc) = s.http("GET", &path, None).await.unwrap();
    assert_eq!(community(&as_noc), "********", "{as_noc}");
    let cmd_id = as_noc["agents"][0]["last_command_id"].as_str().unwrap();
    let (_, cmd) = s
        .http("GET", &format!("/api/v1/commands/{cmd_id}"), None)
        .await
        .unwrap();
    assert!(!cmd.to_string().contains("s3cr3t"), "{cmd}");
    // Sending the redacted form back is refused, naming the key; so is a stale base version.
    let (status, r) = http(
        &s.inst.http_addr,
        "PUT",
        &path,
        &admin,
        Some(&json!({"config": as_noc["config"]})),
    )
    .await
    .unwrap();
    assert_eq!(status, 422, "{r}");
    assert!(r.to_string().contains("credentials[0].community"), "{r}");
    let stale = json!({"config": doc("127.0.0.10"), "base_version": 0});
    let (status, _) = http(&s.inst.http_addr, "PUT", &path, &admin, Some(&stale))
        .await
        .unwrap();
    assert_eq!(status, 409);

    // Version 2 is written while the agent is away; its push expires; the agent gets it when it is back.
    s.agent.stop();
    let body = json!({"config": doc("127.0.0.10"), "base_version": 1});
    let (status, r) = http(&s.inst.http_addr, "PUT", &path, &admin, Some(&body))
        .await
        .unwrap();
    assert_eq!(status, 201, "{r}");
    wait_config(&s, &admin, |b| b["agents"][0]["last_status"] == "expired").await;
    s.agent.start();
    let v = wait_config(&s, &admin, applied(2)).await;
    assert_eq!(v["version"], 2, "{v}");
    let start = Instant::now();
    while samples_of(&s, "icmp:127.0.0.10").await == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no samples from version 2's monitor\n{}",
            s.agent.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // A document the agent refuses: the reason names the key, and it is not pushed again at reconnect.
    let mut bad = doc("127.0.0.11");
    bad["monitors"]["ping"][0]["count"] = json!(0);
    let (status, _) = http(
        &s.inst.http_addr,
        "PUT",
        &path,
        &admin,
        Some(&json!({"config": bad})),
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    let v = wait_config(&s, &admin, |b| b["agents"][0]["last_status"] == "rejected").await;
    assert!(
        v["agents"][0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("monitors.ping[0]"),
        "{v}"
    );
    assert_eq!(v["agents"][0]["applied_version"], 2, "{v}");
    s.agent.stop();
    s.agent.start();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pushes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM commands WHERE name = 'config.update' AND args->>'version' = '3'",
    )
    .fetch_one(&s.inst.admin)
    .await
    .unwrap();
    assert_eq!(pushes, 1, "a refused version was pushed again");

    // The history lists every version, newest first, with its sections.
    let (_, hist) = s
        .http("GET", &format!("{path}/versions"), None)
        .await
        .unwrap();
    let versions: Vec<i64> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, vec![3, 2, 1]);
    assert_eq!(hist[2]["comment"], "ping the new gateway");
    // POST /commands does not take config.update (it would bypass the versions).
    let direct = json!({"name": "config.update", "pop_id": pop,
                        "args": {"version": 9, "config": doc("127.0.0.12")}});
    let (status, r) = http(
        &s.inst.http_addr,
        "POST",
        "/api/v1/commands",
        &admin,
        Some(&direct),
    )
    .await
    .unwrap();
    assert_eq!(status, 422, "{r}");
    assert!(r.to_string().contains("agent-config"), "{r}");
}
