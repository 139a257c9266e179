//! Login throttling: failure counters per account and per client IP in Redis (shared by every instance), each
//! expiring one window after its first failure.

use std::net::IpAddr;

use redis::AsyncCommands;

use super::AuthService;
use super::secret::sha256_hex;
use crate::api::error::ApiError;

fn unavailable(err: redis::RedisError) -> ApiError {
    ApiError::Unavailable(format!("redis (login throttle): {err}"))
}

impl AuthService {
    fn throttle_keys(&self, email: &str, ip: Option<IpAddr>) -> (String, Option<String>) {
        let prefix = &self.inner.config.redis_prefix;
        // Hashed, so that arbitrary input never shapes a key and emails are not readable in Redis.
        let account = format!("{prefix}:login:acct:{}", sha256_hex(email));
        let ip = ip.map(|ip| format!("{prefix}:login:ip:{ip}"));
        (account, ip)
    }

    /// Fails with 429 (and the seconds until the oldest counter expires) when the account or the IP has used
    /// up its failures. Redis unavailable: 503 (fail closed).
    pub(super) async fn throttle_check(
        &self,
        email: &str,
        ip: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        let limits = self.inner.config.login_throttle;
        let (account, ip_key) = self.throttle_keys(email, ip);
        let mut conn = self.redis();
        let mut over: Option<u64> = None;
        let checks = [(Some(account), limits.per_account), (ip_key, limits.per_ip)];
        for (key, limit) in checks {
            let Some(key) = key else { continue };
            let count: Option<u64> = conn.get(&key).await.map_err(unavailable)?;
            if count.unwrap_or(0) >= u64::from(limit) {
                let ttl: i64 = conn.ttl(&key).await.map_err(unavailable)?;
                let ttl = u64::try_from(ttl).unwrap_or(limits.window.as_secs()).max(1);
                over = Some(over.map_or(ttl, |o| o.max(ttl)));
            }
        }
        match over {
            Some(retry_after_secs) => Err(ApiError::RateLimited { retry_after_secs }),
            None => Ok(()),
        }
    }

    /// Counts one failed login for the account and the IP.
    pub(super) async fn throttle_fail(
        &self,
        email: &str,
        ip: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        let window = self.inner.config.login_throttle.window.as_secs().max(1);
        let (account, ip_key) = self.throttle_keys(email, ip);
        let mut pipe = redis::pipe();
        for key in std::iter::once(account).chain(ip_key) {
            pipe.incr(&key, 1u64)
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(window)
                .arg("NX")
                .ignore();
        }
        let mut conn = self.redis();
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }

    /// Counts a password reset request for `email`; false when more than `per_account` were asked within the
    /// window (the request is then dropped silently, so mailboxes cannot be flooded).
    pub(super) async fn reset_allowed(&self, email: &str) -> Result<bool, ApiError> {
        let limits = self.inner.config.login_throttle;
        let key = format!(
            "{}:reset:{}",
            self.inner.config.redis_prefix,
            sha256_hex(email)
        );
        let mut conn = self.redis();
        let (count,): (u64,) = redis::pipe()
            .incr(&key, 1u64)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(limits.window.as_secs().max(1))
            .arg("NX")
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(count <= u64::from(limits.per_account))
    }

    /// Clears the account's counter after a successful login (the IP's stays).
    pub(super) async fn throttle_success(&self, email: &str) -> Result<(), ApiError> {
        let (account, _) = self.throttle_keys(email, None);
        let mut conn = self.redis();
        conn.del::<_, ()>(&account).await.map_err(unavailable)
    }
}
