//! Which instance holds each agent's QUIC connection.
//!
//! The ingest role registers an agent when its `Hello` is accepted: the connection goes into this instance's map
//! and `{prefix}:cmd:holder:{agent}` = this instance's id is set in Redis with a TTL of three heartbeats,
//! refreshed by every heartbeat and deleted (only if still ours) when the connection ends. A dispatcher that
//! leases a command for an agent held elsewhere pushes the lease onto the holder's inbox list
//! `{prefix}:cmd:inbox:{instance}`, which the holder's ingest role pops and serves (see `dispatch::inbox_loop`).
//! A holder that dies leaves its key to expire and its leases to be reclaimed by the queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands as _;
use uuid::Uuid;

/// Agent connections of this instance plus the shared holder registry.
#[derive(Clone)]
pub struct AgentLinks {
    instance_id: Arc<str>,
    prefix: Arc<str>,
    ttl: Duration,
    local: Arc<Mutex<HashMap<Uuid, quinn::Connection>>>,
    order: super::order::AgentOrder,
    redis: crate::redis_conn::RedisConn,
}

impl std::fmt::Debug for AgentLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentLinks")
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

/// Deletes the holder key only when it still names this instance.
const UNREGISTER: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

impl AgentLinks {
    /// Links of a new instance (a fresh random instance id) on `redis_url`; `ttl` is how long a registration
    /// lives without a heartbeat.
    pub async fn connect(
        redis: impl Into<crate::redis_conn::RedisTarget>,
        prefix: &str,
        ttl: Duration,
    ) -> anyhow::Result<AgentLinks> {
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(5)));
        let redis = crate::redis_conn::RedisConn::connect(&redis.into(), cfg).await?;
        Ok(AgentLinks {
            instance_id: Uuid::now_v7().to_string().into(),
            prefix: prefix.into(),
            ttl,
            local: Arc::new(Mutex::new(HashMap::new())),
            order: super::order::AgentOrder::default(),
            redis,
        })
    }

    /// The start order of this instance's agents' commands.
    pub fn order(&self) -> &super::order::AgentOrder {
        &self.order
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    fn holder_key(&self, agent: Uuid) -> String {
        format!("{}:cmd:holder:{agent}", self.prefix)
    }

    /// The Redis list other instances push this instance's work onto.
    pub fn inbox_key(&self, instance: &str) -> String {
        format!("{}:cmd:inbox:{instance}", self.prefix)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, quinn::Connection>> {
        // A poisoned map only means a panic elsewhere while holding it; the map itself is still consistent.
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that this instance holds `agent`'s connection.
    pub async fn register(&self, agent: Uuid, conn: quinn::Connection) -> redis::RedisResult<()> {
        self.map().insert(agent, conn);
        self.refresh(agent).await
    }

    /// Refreshes the registration's TTL (on a heartbeat).
    pub async fn refresh(&self, agent: Uuid) -> redis::RedisResult<()> {
        let mut r = self.redis.clone();
        r.set_ex::<_, _, ()>(
            self.holder_key(agent),
            &*self.instance_id,
            self.ttl.as_secs().max(1),
        )
        .await
    }

    /// Forgets `agent` when its connection `stable_id` ends (a newer connection of the same agent stays).
    pub async fn unregister(&self, agent: Uuid, stable_id: usize) {
        let removed = {
            let mut map = self.map();
            match map.get(&agent) {
                Some(c) if c.stable_id() == stable_id => map.remove(&agent).is_some(),
                _ => false,
            }
        };
        if removed {
            let mut r = self.redis.clone();
            let res: redis::RedisResult<i64> = redis::Script::new(UNREGISTER)
                .key(self.holder_key(agent))
                .arg(&*self.instance_id)
                .invoke_async(&mut r)
                .await;
            if let Err(err) = res {
                tracing::debug!(%agent, error = %err, "Cannot remove the agent's holder key; it will expire.");
            }
        }
    }

    /// The connection of `agent` if this instance holds it (and it is still open).
    pub fn local(&self, agent: Uuid) -> Option<quinn::Connection> {
        self.map()
            .get(&agent)
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    /// Agents connected to this instance.
    pub fn local_count(&self) -> usize {
        self.map().len()
    }

    /// The instance holding `agent`, if any.
    pub async fn holder(&self, agent: Uuid) -> redis::RedisResult<Option<String>> {
        let mut r = self.redis.clone();
        r.get(self.holder_key(agent)).await
    }

    /// Hands a lease over to `instance` (pushes it onto its inbox).
    pub async fn hand_over(&self, instance: &str, lease_json: &str) -> redis::RedisResult<()> {
        let mut r = self.redis.clone();
        r.lpush::<_, _, ()>(self.inbox_key(instance), lease_json)
            .await
    }

    /// The Redis connection (for the inbox consumer).
    pub(crate) fn redis(&self) -> crate::redis_conn::RedisConn {
        self.redis.clone()
    }
}
