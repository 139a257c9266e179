//! Authentication and authorization: passwords, JWTs, refresh tokens, API keys, RBAC.
//!
//! [`AuthService`] is the one entry point of the API: it turns request headers into a [`Caller`]
//! ([`AuthService::authenticate`], also the axum extractor of `Caller`), and runs the session flows (login,
//! refresh, logout, password reset). Role, user and API key management take the caller's transaction
//! ([`rbac`], [`api_keys`]) so that the change and its audit row commit together.
//!
//! State lives in PostgreSQL (users, hashed tokens and keys) and Redis (login throttling counters), never in an
//! instance's memory, so any instance serves any request and a revocation takes effect at the next request.

pub mod admin;
pub mod api_keys;
pub mod caller;
mod extract;
pub mod jwt;
pub mod mailer;
pub mod password;
pub mod rbac;
pub mod secret;
mod session;
mod throttle;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use sqlx::PgPool;

use crate::redis_conn::RedisConn;

pub use api_keys::{ApiKey, create_api_key, list_api_keys, revoke_api_key};
pub use caller::Caller;
pub use mailer::{LogMailer, Mail, MailError, Mailer, MemoryMailer};
pub use password::PasswordParams;
pub use rbac::{
    Permission, Role, create_role, create_user, effective_permissions, ensure_may_grant,
    ensure_may_grant_role, get_role, grant_user_permission, list_permissions, list_roles,
    revoke_user_permission, set_user_role,
};
pub use session::TokenPair;

/// Shortest JWT secret accepted, in bytes.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Configuration of authentication. `Debug` never shows secrets.
#[derive(Clone)]
pub struct AuthConfig {
    /// HS256 secret of the access tokens this control plane issues (at least 32 bytes).
    pub jwt_secret: String,
    /// Lifetime of an access token.
    pub access_ttl: Duration,
    /// Lifetime of a refresh token (each rotation issues a new one with a full lifetime).
    pub refresh_ttl: Duration,
    /// Lifetime of a password reset token.
    pub reset_ttl: Duration,
    /// `iss` of the tokens issued, and required on tokens received.
    pub issuer: String,
    /// Accept Supabase Auth tokens as well.
    pub supabase: Option<SupabaseConfig>,
    /// Login throttling.
    pub login_throttle: LoginThrottle,
    /// argon2id cost.
    pub password_params: PasswordParams,
    /// Prefix of every Redis key (lets tests and installations share a Redis).
    pub redis_prefix: String,
}

impl AuthConfig {
    /// A configuration with the defaults: access tokens 15 min, refresh tokens 30 days, resets 1 h, issuer
    /// `octoisp`, no Supabase, 5 failures per account and 50 per IP in 15 min, OWASP argon2id cost.
    pub fn new(jwt_secret: impl Into<String>) -> AuthConfig {
        AuthConfig {
            jwt_secret: jwt_secret.into(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            reset_ttl: Duration::from_secs(3600),
            issuer: "octoisp".to_owned(),
            supabase: None,
            login_throttle: LoginThrottle::default(),
            password_params: PasswordParams::default(),
            redis_prefix: "octoisp".to_owned(),
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &"<redacted>")
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("reset_ttl", &self.reset_ttl)
            .field("issuer", &self.issuer)
            .field("supabase", &self.supabase)
            .field("login_throttle", &self.login_throttle)
            .field("password_params", &self.password_params)
            .field("redis_prefix", &self.redis_prefix)
            .finish()
    }
}

/// Supabase Auth tokens: HS256 with the project's JWT secret, or RS256/ES256 with the keys of a JWKS document.
#[derive(Clone)]
pub struct SupabaseConfig {
    /// The project's JWT secret (HS256), if its tokens are signed that way.
    pub hs256_secret: Option<String>,
    /// A JWKS document (JSON text) with the project's public keys (RS256/ES256, chosen by `kid`).
    pub jwks_json: Option<String>,
    /// Required `aud` (Supabase uses `authenticated`).
    pub audience: String,
}

impl fmt::Debug for SupabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupabaseConfig")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwks_json", &self.jwks_json.as_ref().map(|_| "<jwks>"))
            .field("audience", &self.audience)
            .finish()
    }
}

/// Limits on failed logins, counted in Redis so every instance shares them.
#[derive(Debug, Clone, Copy)]
pub struct LoginThrottle {
    /// Failures allowed per account within `window`.
    pub per_account: u32,
    /// Failures allowed per client IP within `window`.
    pub per_ip: u32,
    /// Window of the counters (from the first failure).
    pub window: Duration,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            per_account: 5,
            per_ip: 50,
            window: Duration::from_secs(15 * 60),
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// The JWT secret is too short.
    #[error("auth.jwt_secret must have at least {MIN_JWT_SECRET_BYTES} bytes")]
    WeakSecret,
    /// The Supabase JWKS document is not valid.
    #[error("auth.supabase.jwks_json is not a valid JWKS document: {0}")]
    Jwks(String),
    /// Supabase is enabled without any key.
    #[error("auth.supabase needs hs256_secret or jwks_json")]
    NoSupabaseKey,
    /// The Supabase HS256 secret is too short.
    #[error("auth.supabase.hs256_secret must have at least {MIN_JWT_SECRET_BYTES} bytes")]
    WeakSupabaseSecret,
    /// The argon2 parameters are invalid.
    #[error("invalid password hashing parameters: {0}")]
    PasswordParams(String),
}

/// Authentication service: cheap to clone (shared state behind an `Arc`).
#[derive(Clone)]
pub struct AuthService {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    redis: RedisConn,
    config: AuthConfig,
    keys: jwt::Keys,
    mailer: Arc<dyn Mailer>,
    dummy_hash: String,
}

impl fmt::Debug for AuthService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthService")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl AuthService {
    /// Validates `config` and builds the service. Hashes a dummy password once (blocking, tens of ms with the
    /// default cost): call it at start-up.
    pub fn new(
        pool: PgPool,
        redis: impl Into<RedisConn>,
        config: AuthConfig,
        mailer: Arc<dyn Mailer>,
    ) -> Result<AuthService, AuthConfigError> {
        if config.jwt_secret.len() < MIN_JWT_SECRET_BYTES {
            return Err(AuthConfigError::WeakSecret);
        }
        if let Some(s) = &config.supabase {
            if s.hs256_secret.is_none() && s.jwks_json.is_none() {
                return Err(AuthConfigError::NoSupabaseKey);
            }
            if s.hs256_secret
                .as_ref()
                .is_some_and(|k| k.len() < MIN_JWT_SECRET_BYTES)
            {
                return Err(AuthConfigError::WeakSupabaseSecret);
            }
            if let Some(j) = &s.jwks_json {
                serde_json::from_str::<JwkSet>(j)
                    .map_err(|e| AuthConfigError::Jwks(e.to_string()))?;
            }
        }
        let keys = jwt::Keys::new(&config)?;
        let dummy_hash = password::hash_blocking(config.password_params, &secret::random_token())
            .map_err(|e| AuthConfigError::PasswordParams(e.to_string()))?;
        Ok(AuthService {
            inner: Arc::new(Inner {
                pool,
                redis: redis.into(),
                config,
                keys,
                mailer,
                dummy_hash,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    /// The application pool.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Hashes a password with the configured cost (checks the password policy first).
    pub async fn hash_password(
        &self,
        password: &str,
    ) -> Result<String, crate::api::error::ApiError> {
        password::hash(self.inner.config.password_params, password).await
    }

    fn redis(&self) -> RedisConn {
        self.inner.redis.clone()
    }
}
