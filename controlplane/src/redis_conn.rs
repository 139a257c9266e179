//! Connections to Redis: one server (`queue.redis_url`, `api.redis_url`), or the master that Redis Sentinels
//! name (`[redis] sentinels`, `master_name`), followed across failovers.
//!
//! [`RedisConn`] is what the queue, the agent links, the rate limiter and the login throttle hold. Direct, it is
//! a `ConnectionManager` (which reconnects to the same address after a restart). Through Sentinel it asks the
//! Sentinels for the master at start, and again whenever the master it holds stops being one: a `READONLY`
//! answer (a demoted master), a refused or dropped connection, an I/O error. A command that failed with
//! `READONLY`, a refused connection or a broken pipe was not executed, so it is sent once more to the new
//! master; any other error goes back to the caller (the command may have run), and the next command uses the
//! new master.
//!
//! Redis replicates asynchronously: a write acknowledged by the old master just before it failed can be lost
//! (docs/DEPLOYMENT.md says how to bound that with `min-replicas-to-write`).

use std::sync::{Arc, RwLock};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
};
use serde::Deserialize;

/// The `[redis]` section: Redis Sentinel. Without `sentinels`, each section's `redis_url` is used as it is.
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SentinelSection {
    /// Sentinels, `host:port` each (at least the quorum of them should be listed). Empty: no Sentinel.
    pub sentinels: Vec<String>,
    /// The name under which the Sentinels watch the master (`sentinel monitor NAME ...`).
    pub master_name: String,
    /// Password of the Redis servers (`requirepass`); set it in `OCTOISP_CP__REDIS__PASSWORD`, not in the file.
    pub password: Option<String>,
    /// Password of the Sentinels themselves, if they have one (`OCTOISP_CP__REDIS__SENTINEL_PASSWORD`).
    pub sentinel_password: Option<String>,
    /// Database number on the master.
    pub db: i64,
}

impl std::fmt::Debug for SentinelSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hide = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("SentinelSection")
            .field("sentinels", &self.sentinels)
            .field("master_name", &self.master_name)
            .field("password", &hide(&self.password))
            .field("sentinel_password", &hide(&self.sentinel_password))
            .field("db", &self.db)
            .finish()
    }
}

impl SentinelSection {
    /// Whether Sentinel is configured.
    pub fn enabled(&self) -> bool {
        !self.sentinels.is_empty()
    }

    /// Checks the values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        if self.master_name.trim().is_empty() {
            return Err("redis.master_name is required with redis.sentinels".into());
        }
        for s in &self.sentinels {
            let ok = s
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(format!(
                    "redis.sentinels: `{s}` is not host:port (such as 10.0.0.5:26379)"
                ));
            }
        }
        if self.db < 0 {
            return Err("redis.db must be >= 0".into());
        }
        Ok(())
    }
}

/// Where a Redis connection goes.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// One server.
    Url(String),
    /// The master the Sentinels name.
    Sentinel(SentinelSection),
}

impl RedisTarget {
    /// `url`, unless `sentinel` is configured.
    pub fn new(url: &str, sentinel: &SentinelSection) -> RedisTarget {
        if sentinel.enabled() {
            RedisTarget::Sentinel(sentinel.clone())
        } else {
            RedisTarget::Url(url.to_owned())
        }
    }

    /// For logs: the URL without its password, or the Sentinels and master name.
    pub fn describe(&self) -> String {
        match self {
            RedisTarget::Url(u) => crate::config::redact(u),
            RedisTarget::Sentinel(s) => format!(
                "master `{}` of Sentinels {}",
                s.master_name,
                s.sentinels.join(",")
            ),
        }
    }
}

impl From<&str> for RedisTarget {
    fn from(url: &str) -> RedisTarget {
        RedisTarget::Url(url.to_owned())
    }
}

impl From<&String> for RedisTarget {
    fn from(url: &String) -> RedisTarget {
        RedisTarget::Url(url.clone())
    }
}

impl From<String> for RedisTarget {
    fn from(url: String) -> RedisTarget {
        RedisTarget::Url(url)
    }
}

/// A Redis connection (cheap to clone; clones share it). See the module documentation.
#[derive(Clone)]
pub struct RedisConn {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Direct(ConnectionManager),
    Sentinel(Arc<Followed>),
}

/// The master's connection, and what finds the next one.
struct Followed {
    current: RwLock<(u64, ConnectionManager)>,
    sentinel: tokio::sync::Mutex<SentinelClient>,
    config: ConnectionManagerConfig,
    db: i64,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Direct(_) => f.write_str("RedisConn::Direct"),
            Inner::Sentinel(_) => f.write_str("RedisConn::Sentinel"),
        }
    }
}

impl From<ConnectionManager> for RedisConn {
    fn from(conn: ConnectionManager) -> RedisConn {
        RedisConn {
            inner: Inner::Direct(conn),
        }
    }
}

impl RedisConn {
    /// Connects to `target` with `config` (timeouts, reconnection backoff of each connection).
    pub async fn connect(
        target: &RedisTarget,
        config: ConnectionManagerConfig,
    ) -> RedisResult<RedisConn> {
        match target {
            RedisTarget::Url(url) => {
                let client = redis::Client::open(url.as_str())?;
                Ok(ConnectionManager::new_with_config(client, config)
                    .await?
                    .into())
            }
            RedisTarget::Sentinel(s) => {
                let nodes: Vec<String> = s
                    .sentinels
                    .iter()
                    .map(|addr| match &s.sentinel_password {
                        Some(p) => format!("redis://:{}@{addr}", urlencode(p)),
                        None => format!("redis://{addr}"),
                    })
                    .collect();
                let mut info = redis::RedisConnectionInfo::default().set_db(s.db);
                if let Some(p) = &s.password {
                    info = info.set_password(p.clone());
                }
                let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
                let mut sentinel = SentinelClient::build(
                    nodes,
                    s.master_name.clone(),
                    Some(node),
                    SentinelServerType::Master,
                )?;
                let client = sentinel.async_get_client().await?;
                let conn = ConnectionManager::new_with_config(client, config.clone()).await?;
                Ok(RedisConn {
                    inner: Inner::Sentinel(Arc::new(Followed {
                        current: RwLock::new((0, conn)),
                        sentinel: tokio::sync::Mutex::new(sentinel),
                        config,
                        db: s.db,
                    })),
                })
            }
        }
    }
}

impl Followed {
    fn current(&self) -> (u64, ConnectionManager) {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Asks the Sentinels for the master and connects to it, unless another caller already replaced
    /// connection `seen`. Returns the connection to use.
    async fn follow(&self, seen: u64) -> RedisResult<ConnectionManager> {
        let mut sentinel = self.sentinel.lock().await;
        let (generation, conn) = self.current();
        if generation != seen {
            return Ok(conn);
        }
        let client = sentinel.async_get_client().await?;
        let addr = client.get_connection_info().addr().to_string();
        let fresh = ConnectionManager::new_with_config(client, self.config.clone()).await?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (generation + 1, fresh.clone());
        metrics::counter!("octoisp_redis_master_switches_total").increment(1);
        tracing::warn!(master = %addr, "Redis: following the master the Sentinels name now.");
        Ok(fresh)
    }
}

/// Whether `err` is a replica refusing a write: a plain `READONLY`, or a script stopped by one at its first
/// write (a script cannot write anything on a replica, so nothing ran).
fn read_only(err: &RedisError) -> bool {
    err.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
        || err.to_string().contains("READONLY")
}

/// Whether `err` says the connection no longer reaches a master.
fn lost_master(err: &RedisError) -> bool {
    read_only(err)
        || err.is_connection_refusal()
        || err.is_connection_dropped()
        || err.is_io_error()
        || err.is_unrecoverable_error()
}

/// Whether the command surely did not run (so sending it again cannot run it twice):
/// `READONLY`; a refused connection; a broken pipe: the write of the command itself failed because the server
/// had closed the connection (Sentinel closes the clients of a master it demotes), so the server never read it.
fn not_executed(err: &RedisError) -> bool {
    read_only(err)
        || err.is_connection_refusal()
        || (err.is_io_error() && err.to_string().to_ascii_lowercase().contains("broken pipe"))
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.inner {
            Inner::Direct(c) => c.req_packed_command(cmd),
            Inner::Sentinel(f) => {
                let f = f.clone();
                Box::pin(async move {
                    let (seen, mut conn) = f.current();
                    match conn.req_packed_command(cmd).await {
                        Err(err) if lost_master(&err) => {
                            let mut fresh = f.follow(seen).await.map_err(|_| err.clone())?;
                            if not_executed(&err) {
                                fresh.req_packed_command(cmd).await
                            } else {
                                Err(err)
                            }
                        }
                        other => other,
                    }
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.inner {
            Inner::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            Inner::Sentinel(f) => {
                let f = f.clone();
                Box::pin(async move {
                    let (seen, mut conn) = f.current();
                    match conn.req_packed_commands(pipeline, offset, count).await {
                        Err(err) if lost_master(&err) => {
                            let mut fresh = f.follow(seen).await.map_err(|_| err.clone())?;
                            if not_executed(&err) {
                                fresh.req_packed_commands(pipeline, offset, count).await
                            } else {
                                Err(err)
                            }
                        }
                        other => other,
                    }
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Direct(c) => c.get_db(),
            Inner::Sentinel(f) => f.db,
        }
    }
}

/// Percent-encodes a password for a URL.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_settings_are_checked_and_passwords_hidden() {
        let mut s = SentinelSection {
            sentinels: vec!["10.0.0.5:26379".into()],
            master_name: "octoisp".into(),
            password: Some("s3cret".into()),
            ..SentinelSection::default()
        };
        assert!(s.validate().is_ok());
        assert!(!format!("{s:?}").contains("s3cret"));
        s.sentinels.push("nope".into());
        assert!(s.validate().unwrap_err().contains("redis.sentinels"));
        s.sentinels.pop();
        s.master_name.clear();
        assert!(s.validate().unwrap_err().contains("redis.master_name"));
        assert!(SentinelSection::default().validate().is_ok());
        assert_eq!(urlencode("a b@c"), "a%20b%40c");
    }
}
