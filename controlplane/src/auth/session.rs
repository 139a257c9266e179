//! Session flows: login, refresh-token rotation with reuse detection, logout, password reset.

use std::net::IpAddr;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use super::jwt::AccessClaims;
use super::mailer::Mail;
use super::secret::{random_token, sha256_hex};
use super::{AuthService, password};
use crate::api::error::ApiError;

/// Longest email address considered (longer input is treated as an unknown account).
const MAX_EMAIL_BYTES: usize = 320;

/// What a successful login or refresh returns. `Debug` hides the tokens.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    /// Access token (JWT), for `Authorization: Bearer`.
    pub access_token: String,
    /// Refresh token: single use, exchanged for a new pair at `refresh`.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

fn expiry(ttl: Duration) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(30))
}

fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

impl AuthService {
    /// Signs in with email and password. Throttled per account and per IP (429 with Retry-After); any other
    /// failure (unknown email, wrong password, disabled user) is the same 401, after the same work.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<TokenPair, ApiError> {
        let email = normalize_email(email);
        self.throttle_check(&email, ip).await?;
        let row: Option<(Uuid, Option<Uuid>, Option<String>, bool)> = if email.len()
            <= MAX_EMAIL_BYTES
        {
            sqlx::query_as(
                "SELECT user_id, provider_id, password_hash, disabled FROM octoisp_login_lookup($1)",
            )
            .bind(&email)
            .fetch_optional(&self.inner.pool)
            .await?
        } else {
            None
        };
        let phc = row.as_ref().and_then(|r| r.2.clone()).unwrap_or_default();
        let matches = password::verify(
            self.inner.config.password_params,
            phc,
            self.inner.dummy_hash.clone(),
            password,
        )
        .await;
        let user = match row {
            Some((id, provider, _, false)) if matches => (id, provider),
            _ => {
                self.throttle_fail(&email, ip).await?;
                tracing::info!(ip = ?ip, "Login failed.");
                return Err(ApiError::Unauthenticated);
            }
        };
        self.throttle_success(&email).await?;
        let refresh = random_token();
        let family: Option<Uuid> = sqlx::query_scalar("SELECT octoisp_session_start($1, $2, $3)")
            .bind(user.0)
            .bind(sha256_hex(&refresh))
            .bind(expiry(self.inner.config.refresh_ttl))
            .fetch_one(&self.inner.pool)
            .await?;
        if family.is_none() {
            return Err(ApiError::Unauthenticated);
        }
        tracing::info!(user = %user.0, "Login.");
        self.pair(user.0, user.1, refresh)
    }

    /// Exchanges a refresh token for a new pair. The token is used up; presenting it again revokes its whole
    /// family (every token descended from the same login), which is logged.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, ApiError> {
        let next = random_token();
        let (outcome, user, provider, family): (String, Option<Uuid>, Option<Uuid>, Option<Uuid>) =
            sqlx::query_as(
                "SELECT outcome, user_id, provider_id, family_id FROM octoisp_refresh_rotate($1, $2, $3)",
            )
            .bind(sha256_hex(refresh_token))
            .bind(sha256_hex(&next))
            .bind(expiry(self.inner.config.refresh_ttl))
            .fetch_one(&self.inner.pool)
            .await?;
        match (outcome.as_str(), user) {
            ("ok", Some(user)) => self.pair(user, provider, next),
            ("reused", _) => {
                tracing::warn!(user = ?user, family = ?family, "Refresh token reused: family revoked.");
                Err(ApiError::Unauthenticated)
            }
            _ => Err(ApiError::Unauthenticated),
        }
    }

    /// Ends the session of `refresh_token`: revokes its family. Unknown tokens are ignored (idempotent).
    pub async fn logout(&self, refresh_token: &str) -> Result<(), ApiError> {
        let known: bool = sqlx::query_scalar("SELECT octoisp_refresh_revoke_family($1)")
            .bind(sha256_hex(refresh_token))
            .fetch_one(&self.inner.pool)
            .await?;
        if known {
            tracing::info!("Logout: refresh family revoked.");
        }
        Ok(())
    }

    /// Mails a single-use reset token to `email` if an enabled user has it. Always succeeds the same way, so the
    /// answer does not reveal whether the account exists. At most `login_throttle.per_account` requests per
    /// address and window are honoured; the others are dropped silently.
    pub async fn request_password_reset(&self, email: &str) -> Result<(), ApiError> {
        let email = normalize_email(email);
        if email.len() > MAX_EMAIL_BYTES || !self.reset_allowed(&email).await? {
            return Ok(());
        }
        let row: Option<(Uuid, bool)> =
            sqlx::query_as("SELECT user_id, disabled FROM octoisp_login_lookup($1)")
                .bind(&email)
                .fetch_optional(&self.inner.pool)
                .await?;
        let Some((user_id, false)) = row else {
            return Ok(());
        };
        let token = random_token();
        let stored: bool = sqlx::query_scalar("SELECT octoisp_password_reset_create($1, $2, $3)")
            .bind(user_id)
            .bind(sha256_hex(&token))
            .bind(expiry(self.inner.config.reset_ttl))
            .fetch_one(&self.inner.pool)
            .await?;
        if !stored {
            return Ok(());
        }
        let minutes = self.inner.config.reset_ttl.as_secs() / 60;
        let mail = Mail {
            to: email,
            subject: "OctoISP password reset".to_owned(),
            body: format!(
                "Use this code to choose a new OctoISP password within {minutes} minutes:\n\n{token}\n\n\
                 If you did not ask for it, ignore this message."
            ),
            token,
        };
        if let Err(err) = self.inner.mailer.send(mail).await {
            tracing::error!(user = %user_id, error = %err, "Password reset mail not sent.");
        }
        Ok(())
    }

    /// Sets a new password with a reset token (single use, before its expiry) and revokes every refresh token
    /// of the user. 400 for a bad password, 401 for an unknown, used or expired token.
    pub async fn reset_password(&self, token: &str, new_password: &str) -> Result<(), ApiError> {
        let phc = self.hash_password(new_password).await?;
        let user: Option<Uuid> =
            sqlx::query_scalar("SELECT octoisp_password_reset_consume($1, $2)")
                .bind(sha256_hex(token))
                .bind(phc)
                .fetch_one(&self.inner.pool)
                .await?;
        match user {
            Some(user) => {
                tracing::info!(user = %user, "Password reset; sessions revoked.");
                Ok(())
            }
            None => Err(ApiError::Unauthenticated),
        }
    }

    fn pair(
        &self,
        user: Uuid,
        provider: Option<Uuid>,
        refresh_token: String,
    ) -> Result<TokenPair, ApiError> {
        let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
        let ttl = self.inner.config.access_ttl.as_secs();
        let claims = AccessClaims {
            sub: user,
            pid: provider,
            ga: provider.is_none(),
            exp: now + ttl,
            iat: now,
            iss: self.inner.config.issuer.clone(),
            jti: Uuid::new_v4(),
        };
        Ok(TokenPair {
            access_token: self.inner.keys.issue(&claims)?,
            refresh_token,
            expires_in: ttl,
        })
    }

    /// Issues an access token for `claims` as given (tests and tools; the API issues tokens through `login`).
    pub fn issue_access_token(&self, claims: &AccessClaims) -> Result<String, ApiError> {
        self.inner.keys.issue(claims)
    }
}
