//! Rate limits per client IP, per user (or API key) and per tenant, counted in Redis so that every instance of
//! the control plane shares them.
//!
//! Fixed windows: one Redis key per subject, `INCR`ed by every request and expiring `window` after its first
//! request. One Lua script checks all the subjects of a request in one round trip and answers the milliseconds
//! until the tightest exceeded window ends (0: allowed). A request refused by one subject still counts against
//! the others, which keeps the script a single pass. When Redis is unreachable the request is let through and a
//! warning logged: the limits protect capacity, and an outage of Redis must not become an outage of the API.

use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManagerConfig;

use crate::redis_conn::{RedisConn, RedisTarget};

/// How long the limiter waits for Redis before letting a request through.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

const SCRIPT: &str = r"
local window = tonumber(ARGV[1])
local retry = 0
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('PEXPIRE', key, window) end
  if n > tonumber(ARGV[i + 1]) then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then
      redis.call('PEXPIRE', key, window)
      ttl = window
    end
    if ttl > retry then retry = ttl end
  end
end
return retry
";

/// One subject of a limit: its Redis key suffix and the requests it may make per window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Such as `ip:192.0.2.1`, `user:<uuid>`, `tenant:<uuid>`.
    pub key: String,
    /// Requests allowed per window.
    pub limit: u64,
}

/// The shared limiter of an instance.
#[derive(Clone)]
pub struct RateLimiter {
    conn: RedisConn,
    script: Script,
    prefix: String,
    window: Duration,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("prefix", &self.prefix)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Connects to Redis at `url`; keys are `<prefix>:rl:<subject>`.
    pub async fn connect(
        redis: impl Into<RedisTarget>,
        prefix: &str,
        window: Duration,
    ) -> redis::RedisResult<RateLimiter> {
        let conn = RedisConn::connect(&redis.into(), ConnectionManagerConfig::new()).await?;
        Ok(RateLimiter {
            conn,
            script: Script::new(SCRIPT),
            prefix: prefix.to_owned(),
            window: window.max(Duration::from_millis(1)),
        })
    }

    /// Counts one request against every subject. `Some(wait)` when a limit is exceeded: the client may retry
    /// after `wait`. Redis failures let the request through (logged).
    pub async fn check(&self, subjects: &[Subject]) -> Option<Duration> {
        if subjects.is_empty() {
            return None;
        }
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(self.window.as_millis() as u64);
        for s in subjects {
            invocation.key(format!("{}:rl:{}", self.prefix, s.key));
            invocation.arg(s.limit);
        }
        let mut conn = self.conn.clone();
        let result =
            tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async::<i64>(&mut conn)).await;
        match result {
            Ok(Ok(0)) => None,
            Ok(Ok(ms)) => Some(Duration::from_millis(ms.max(1) as u64)),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "Rate limiter: Redis failed; request let through.");
                None
            }
            Err(_) => {
                tracing::warn!("Rate limiter: Redis timed out; request let through.");
                None
            }
        }
    }
}
