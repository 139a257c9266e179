//! The command queue through Redis Sentinel: a primary, a replica and one Sentinel (quorum 1), all private
//! processes on free loopback ports. A job enqueued before a failover and one enqueued after it are both
//! delivered, by the same queue handle, from the new master.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use octoisp_controlplane::queue::{NewJob, Queue, QueueConfig, Tier};
use octoisp_controlplane::redis_conn::{RedisTarget, SentinelSection};
use uuid::Uuid;

const MASTER: &str = "octoisp-test";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_server(port: u16, dir: &Path, extra: &[&str]) -> Proc {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is required (Debian package redis-server)");
    Proc(child)
}

async fn conn(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Polls `check` every 100 ms until it is true; panics with `what` after 60 s.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `ROLE` of the server on `port`: `master`, `slave`, or empty when it does not answer.
async fn role(port: u16) -> String {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
        return String::new();
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return String::new();
    };
    let r: redis::RedisResult<redis::Value> = redis::cmd("ROLE").query_async(&mut c).await;
    match r {
        Ok(redis::Value::Array(v)) => match v.first() {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

fn job(tenant: Uuid, payload: &str) -> NewJob {
    NewJob {
        id: Uuid::new_v4(),
        provider_id: tenant,
        tier: Tier::Small,
        payload: payload.to_owned(),
        not_before_ms: None,
    }
}

#[tokio::test]
async fn jobs_enqueued_before_and_after_a_failover_are_both_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2, ps) = (free_port(), free_port(), free_port());
    let (d1, d2) = (dir.path().join("primary"), dir.path().join("replica"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let _primary = redis_server(p1, &d1, &[]);
    let replicaof = format!("127.0.0.1 {p1}");
    let _replica = redis_server(p2, &d2, &["--replicaof", &replicaof]);
    let sentinel_conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &sentinel_conf,
        format!(
            "port {ps}\nbind 127.0.0.1\ndir {}\n\
             sentinel monitor {MASTER} 127.0.0.1 {p1} 1\n\
             sentinel down-after-milliseconds {MASTER} 2000\n\
             sentinel failover-timeout {MASTER} 10000\n",
            dir.path().display()
        ),
    )
    .unwrap();
    // The Sentinel rewrites its config file: it is the test's own.
    let _sentinel = Proc(
        Command::new("redis-server")
            .arg(&sentinel_conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The replica is in sync and the Sentinel knows it (it learns replicas from the master's INFO).
    wait_until("the replica to sync", || async {
        let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{p2}")) else {
            return false;
        };
        let Ok(mut c) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        info.contains("master_link_status:up")
    })
    .await;
    wait_until("the Sentinel to know the replica", || async {
        let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{ps}")) else {
            return false;
        };
        let Ok(mut c) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        let replicas: redis::RedisResult<Vec<redis::Value>> = redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(MASTER)
            .query_async(&mut c)
            .await;
        replicas.is_ok_and(|r| !r.is_empty())
    })
    .await;

    let section = SentinelSection {
        sentinels: vec![format!("127.0.0.1:{ps}")],
        master_name: MASTER.into(),
        ..SentinelSection::default()
    };
    let cfg = QueueConfig {
        prefix: format!("test:sentinel:{}", Uuid::new_v4().simple()),
        tenant_concurrency: [0, 0, 0],
        tenant_rate: [0.0, 0.0, 0.0],
        ..QueueConfig::default()
    };
    let queue = Queue::connect(RedisTarget::Sentinel(section), cfg)
        .await
        .expect("the queue connects to the master the Sentinel names");
    let tenant = Uuid::new_v4();
    let before = job(tenant, "before the failover");
    assert_eq!(
        queue.enqueue(std::slice::from_ref(&before)).await.unwrap(),
        1
    );
    // The write reached the replica (Redis replicates asynchronously; WAIT makes the test deterministic).
    let replicated: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(10_000)
        .query_async(&mut conn(p1).await)
        .await
        .unwrap();
    assert_eq!(replicated, 1);

    // The Sentinel learns of the replica from the master's INFO (every 10 s): until then it answers NOGOODSLAVE.
    wait_until("the Sentinel to accept the failover", || async {
        let r: redis::RedisResult<String> = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER)
            .query_async(&mut conn(ps).await)
            .await;
        match r {
            Ok(_) => true,
            Err(e) if e.to_string().contains("NOGOODSLAVE") => false,
            Err(e) => panic!("SENTINEL FAILOVER: {e}"),
        }
    })
    .await;
    wait_until(
        "the replica to become master and the old master a replica",
        || async { role(p2).await == "master" && role(p1).await == "slave" },
    )
    .await;

    let after = job(tenant, "after the failover");
    // A command that met the demoted master's connection closing (a reset, where the command may have run) is
    // returned to the caller, who tries again, as the API's callers do: enqueue is idempotent by job id.
    let mut enqueued = None;
    for _ in 0..5 {
        match queue.enqueue(std::slice::from_ref(&after)).await {
            Ok(n) => {
                enqueued = Some(n);
                break;
            }
            Err(e) => {
                eprintln!("enqueue after the failover: {e:#}; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // 0 when an attempt that reported an error had in fact enqueued it: the delivery check below tells.
    assert!(
        matches!(enqueued, Some(0 | 1)),
        "the queue follows the new master: {enqueued:?}"
    );
    let mut got = Vec::new();
    for _ in 0..10 {
        let leases = match queue.reserve("sentinel-test", 10).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("reserve after the failover: {e:#}; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        for lease in leases {
            got.push((lease.id, lease.payload));
        }
        if got.len() >= 2 {
            break;
        }
    }
    got.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        got,
        vec![
            (after.id, after.payload.clone()),
            (before.id, before.payload.clone())
        ],
        "both jobs are delivered, once each"
    );
    // They are on the new master (the old one is a replica of it now).
    let mut new_master = conn(p2).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", queue.config().prefix))
        .query_async(&mut new_master)
        .await
        .unwrap();
    assert!(!keys.is_empty());
}
