//! Providers, POPs, enrollment tokens and agents: who may send data, and on behalf of which tenant.
//!
//! Operator actions (create a provider or a POP, issue a token, revoke an agent) run on the audited global-admin
//! path ([`db::global_admin_tx`]). Enrollment and an agent's identity are looked up before any tenant is known,
//! through the narrow SECURITY DEFINER functions of `migrations/0002_agents.sql`; everything else about an agent
//! runs in a transaction bound to the agent's own provider.
//!
//! An enrollment token is `(token_id, secret)`: the database keeps the SHA-256 of the secret, never the secret,
//! and a token is consumed in the same transaction that creates the agent, under a row lock, so two enrollments
//! racing with one token produce one agent.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use thiserror::Error;
use uuid::Uuid;

use crate::db::{self, DbError};

/// Longest enrollment token lifetime accepted.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest hostname or version string kept for an agent (longer ones are cut).
const MAX_LABEL_CHARS: usize = 255;

/// Service tier of a provider: which command queue and limits it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Small ISP.
    Small,
    /// Medium ISP.
    Medium,
    /// Large ISP.
    Large,
}

impl Tier {
    /// The name stored in `providers.tier`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Small => "small",
            Tier::Medium => "medium",
            Tier::Large => "large",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = DbError;

    fn from_str(s: &str) -> Result<Tier, DbError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "small" => Ok(Tier::Small),
            "medium" => Ok(Tier::Medium),
            "large" => Ok(Tier::Large),
            other => Err(DbError::Invalid {
                what: "tier",
                reason: format!("`{other}` is not one of small, medium, large"),
            }),
        }
    }
}

/// A provider (tenant).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Provider {
    /// Its id, the tenant key of every row it owns.
    pub id: Uuid,
    /// Short unique name used on the command line.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Service tier (`small`, `medium`, `large`).
    pub tier: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A point of presence of a provider.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Pop {
    /// Its id.
    pub id: Uuid,
    /// The provider it belongs to.
    pub provider_id: Uuid,
    /// Short name, unique within the provider.
    pub slug: String,
    /// Display name.
    pub name: String,
}

/// A freshly issued enrollment token. The secret is shown once: only its hash is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// Public part of the token, the key of its row.
    pub token_id: Uuid,
    /// 32 random bytes, base64url without padding.
    pub secret: String,
    /// After this instant the token is refused.
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token_id", &self.token_id)
            .field("secret", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Where an enrollment token places the new agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenGrant {
    /// Provider the token was issued for.
    pub provider_id: Uuid,
    /// POP the token was issued for.
    pub pop_id: Uuid,
}

/// Why an enrollment failed.
#[derive(Debug, Error)]
pub enum EnrollError {
    /// No such token, or the secret does not match.
    #[error("unknown enrollment token or wrong secret")]
    InvalidToken,
    /// The token's lifetime is over.
    #[error("the enrollment token has expired")]
    TokenExpired,
    /// The token was used by another enrollment.
    #[error("the enrollment token was already used")]
    TokenUsed,
    /// The signing callback refused (bad CSR) or failed; nothing was stored and the token stays unused.
    #[error("cannot sign the agent certificate: {0}")]
    Sign(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// An enrolled agent as the ingest path needs it: its tenant comes from here, never from its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// The agent's id (in its certificate's SAN URI).
    pub agent_id: Uuid,
    /// Its provider.
    pub provider_id: Uuid,
    /// Its POP.
    pub pop_id: Uuid,
    /// Whether it was revoked.
    pub revoked: bool,
    /// SHA-256 of its current certificate, lowercase hex.
    pub cert_fingerprint: String,
}

/// Writes the operator's audit row in `tx`, the transaction of the change (see
/// [`crate::auth::admin::record_operator_action`]).
async fn audit_operator(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    provider: Option<Uuid>,
    action: &str,
    target_type: &str,
    target_id: Uuid,
    after: serde_json::Value,
) -> Result<(), DbError> {
    crate::auth::admin::record_operator_action(
        tx,
        provider,
        action,
        target_type,
        &target_id.to_string(),
        after,
    )
    .await
    .map_err(|err| DbError::Query {
        op: "write the audit row",
        source: sqlx::Error::Protocol(err.to_string()),
    })
}

/// Creates a provider and returns its id. `tier` is `small`, `medium` or `large`.
pub async fn create_provider(
    pool: &PgPool,
    slug: &str,
    name: &str,
    tier: &str,
) -> Result<Uuid, DbError> {
    check_slug(slug)?;
    let name = check_name(name)?;
    let tier: Tier = tier.parse()?;
    let mut tx = db::global_admin_tx(pool).await?;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO providers (slug, name, tier) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(slug)
    .bind(name)
    .bind(tier.as_str())
    .fetch_one(&mut *tx)
    .await
    .map_err(|err| conflict_or(err, "provider", slug, "create a provider"))?;
    let after = serde_json::json!({ "id": id, "slug": slug, "name": name, "tier": tier.as_str() });
    audit_operator(&mut tx, None, "providers.create", "provider", id, after).await?;
    tx.commit()
        .await
        .map_err(DbError::query("commit a new provider"))?;
    tracing::info!(provider = %id, slug, %tier, "Provider created.");
    Ok(id)
}

/// Finds a provider by slug or id (global-admin path).
pub async fn find_provider(pool: &PgPool, slug_or_id: &str) -> Result<Option<Provider>, DbError> {
    let mut tx = db::global_admin_tx(pool).await?;
    let found = sqlx::query_as::<_, Provider>(
        "SELECT id, slug, name, tier, created_at FROM providers WHERE id = $1 OR slug = $2 ORDER BY (id = $1) DESC \
         LIMIT 1",
    )
    .bind(Uuid::parse_str(slug_or_id.trim()).ok())
    .bind(slug_or_id.trim())
    .fetch_optional(&mut *tx)
    .await
    .map_err(DbError::query("find a provider"))?;
    tx.commit().await.map_err(DbError::query("end a lookup"))?;
    Ok(found)
}

/// Creates a POP under `provider` (slug or id) and returns its id.
pub async fn create_pop(
    pool: &PgPool,
    provider: &str,
    slug: &str,
    name: &str,
) -> Result<Uuid, DbError> {
    check_slug(slug)?;
    let name = check_name(name)?;
    let provider = find_provider(pool, provider)
        .await?
        .ok_or_else(|| DbError::NotFound {
            what: "provider",
            key: provider.to_owned(),
        })?;
    let mut tx = db::global_admin_tx(pool).await?;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO pops (provider_id, slug, name) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(provider.id)
    .bind(slug)
    .bind(name)
    .fetch_one(&mut *tx)
    .await
    .map_err(|err| {
        conflict_or(
            err,
            "POP",
            &format!("{}/{slug}", provider.slug),
            "create a POP",
        )
    })?;
    let after = serde_json::json!({ "id": id, "slug": slug, "name": name });
    audit_operator(&mut tx, Some(provider.id), "pops.create", "pop", id, after).await?;
    tx.commit()
        .await
        .map_err(DbError::query("commit a new POP"))?;
    tracing::info!(provider = %provider.id, pop = %id, slug, "POP created.");
    Ok(id)
}

/// Finds a POP by slug or id within `provider` (slug or id).
pub async fn find_pop(pool: &PgPool, provider: &str, pop: &str) -> Result<Option<Pop>, DbError> {
    let Some(provider) = find_provider(pool, provider).await? else {
        return Ok(None);
    };
    let mut tx = db::tenant_tx(pool, provider.id).await?;
    let found = sqlx::query_as::<_, Pop>(
        "SELECT id, provider_id, slug, name FROM pops WHERE provider_id = $1 AND (id = $2 OR slug = $3) \
         ORDER BY (id = $2) DESC LIMIT 1",
    )
    .bind(provider.id)
    .bind(Uuid::parse_str(pop.trim()).ok())
    .bind(pop.trim())
    .fetch_optional(&mut *tx)
    .await
    .map_err(DbError::query("find a POP"))?;
    tx.commit().await.map_err(DbError::query("end a lookup"))?;
    Ok(found)
}

/// Issues a one-time enrollment token for `pop` of `provider` (slugs or ids), valid for `ttl`.
pub async fn create_enrollment_token(
    pool: &PgPool,
    provider: &str,
    pop: &str,
    ttl: Duration,
) -> Result<IssuedToken, DbError> {
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(DbError::Invalid {
            what: "token lifetime",
            reason: format!("{} s is not between 1 s and one year", ttl.as_secs()),
        });
    }
    let pop_row = find_pop(pool, provider, pop)
        .await?
        .ok_or_else(|| DbError::NotFound {
            what: "POP",
            key: format!("{provider}/{pop}"),
        })?;
    let token_id = Uuid::new_v4();
    let secret = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let mut tx = db::global_admin_tx(pool).await?;
    let expires_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO enrollment_tokens (id, provider_id, pop_id, secret_hash, expires_at) \
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING expires_at",
    )
    .bind(token_id)
    .bind(pop_row.provider_id)
    .bind(pop_row.id)
    .bind(secret_hash(&secret))
    .bind(ttl.as_secs_f64())
    .fetch_one(&mut *tx)
    .await
    .map_err(DbError::query("store an enrollment token"))?;
    let after = serde_json::json!({ "pop_id": pop_row.id, "expires_at": expires_at });
    audit_operator(
        &mut tx,
        Some(pop_row.provider_id),
        "agents.enrollment_token",
        "enrollment_token",
        token_id,
        after,
    )
    .await?;
    tx.commit()
        .await
        .map_err(DbError::query("commit an enrollment token"))?;
    tracing::info!(
        token = %token_id, provider = %pop_row.provider_id, pop = %pop_row.id, %expires_at,
        "Enrollment token issued."
    );
    Ok(IssuedToken {
        token_id,
        secret,
        expires_at,
    })
}

/// Enrolls a new agent with a one-time token, in one transaction: locks the token row, checks the secret
/// (constant-time comparison of hashes), the expiry and that the token is unused, calls `sign` with the new
/// agent's id and grant to get `(certificate PEM, SHA-256 fingerprint hex)`, stores the agent and marks the
/// token used. Returns the agent id, the grant and the certificate. If `sign` fails, nothing changes.
pub async fn enroll_agent<F>(
    pool: &PgPool,
    token_id: Uuid,
    secret: &str,
    hostname: &str,
    version: &str,
    sign: F,
) -> Result<(Uuid, TokenGrant, String), EnrollError>
where
    F: FnOnce(Uuid, &TokenGrant) -> Result<(String, String), String>,
{
    let grant: Option<(Uuid, Uuid)> =
        sqlx::query_as("SELECT provider_id, pop_id FROM octoisp_enrollment_token($1)")
            .bind(token_id)
            .fetch_optional(pool)
            .await
            .map_err(DbError::query("look up an enrollment token"))?;
    let Some((provider_id, pop_id)) = grant else {
        return Err(EnrollError::InvalidToken);
    };
    let grant = TokenGrant {
        provider_id,
        pop_id,
    };
    let mut tx = db::tenant_tx(pool, provider_id).await?;
    let row: Option<(String, bool, bool)> = sqlx::query_as(
        "SELECT secret_hash, expires_at <= now(), used_at IS NOT NULL FROM enrollment_tokens WHERE id = $1 \
         FOR UPDATE",
    )
    .bind(token_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(DbError::query("lock an enrollment token"))?;
    let Some((stored_hash, expired, used)) = row else {
        return Err(EnrollError::InvalidToken);
    };
    if !constant_time_eq(stored_hash.as_bytes(), secret_hash(secret).as_bytes()) {
        tracing::warn!(token = %token_id, "Enrollment with a wrong secret.");
        return Err(EnrollError::InvalidToken);
    }
    if used {
        return Err(EnrollError::TokenUsed);
    }
    if expired {
        return Err(EnrollError::TokenExpired);
    }
    let agent_id = Uuid::new_v4();
    let (cert_pem, fingerprint) = sign(agent_id, &grant).map_err(EnrollError::Sign)?;
    let fingerprint = fingerprint.to_ascii_lowercase();
    sqlx::query(
        "INSERT INTO agents (id, provider_id, pop_id, hostname, version, cert_fingerprint, last_seen) \
         VALUES ($1, $2, $3, $4, $5, $6, now())",
    )
    .bind(agent_id)
    .bind(provider_id)
    .bind(pop_id)
    .bind(label(hostname))
    .bind(label(version))
    .bind(&fingerprint)
    .execute(&mut *tx)
    .await
    .map_err(DbError::query("store a new agent"))?;
    sqlx::query("UPDATE enrollment_tokens SET used_at = now(), used_by_agent = $2 WHERE id = $1")
        .bind(token_id)
        .bind(agent_id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::query("consume an enrollment token"))?;
    tx.commit()
        .await
        .map_err(DbError::query("commit an enrollment"))?;
    tracing::info!(agent = %agent_id, provider = %provider_id, pop = %pop_id, token = %token_id, "Agent enrolled.");
    Ok((agent_id, grant, cert_pem))
}

/// Who the agent named in a certificate is (before any tenant is known). `None` if no such agent.
pub async fn agent_identity(pool: &PgPool, agent_id: Uuid) -> Result<Option<AgentRecord>, DbError> {
    let row: Option<(Uuid, Uuid, bool, String)> = sqlx::query_as(
        "SELECT provider_id, pop_id, revoked, cert_fingerprint FROM octoisp_agent_identity($1)",
    )
    .bind(agent_id)
    .fetch_optional(pool)
    .await
    .map_err(DbError::query("look up an agent"))?;
    Ok(row.map(
        |(provider_id, pop_id, revoked, cert_fingerprint)| AgentRecord {
            agent_id,
            provider_id,
            pop_id,
            revoked,
            cert_fingerprint,
        },
    ))
}

/// Revokes an agent (global-admin path). Returns false if there is no such agent; revoking twice keeps the
/// first revocation time.
pub async fn revoke_agent(pool: &PgPool, agent_id: Uuid) -> Result<bool, DbError> {
    let mut tx = db::global_admin_tx(pool).await?;
    let provider: Option<Uuid> = sqlx::query_scalar(
        "UPDATE agents SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING provider_id",
    )
    .bind(agent_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(DbError::query("revoke an agent"))?;
    if let Some(p) = provider {
        let after = serde_json::json!({ "revoked": true });
        audit_operator(&mut tx, Some(p), "agents.revoke", "agent", agent_id, after).await?;
    }
    tx.commit()
        .await
        .map_err(DbError::query("commit a revocation"))?;
    if provider.is_some() {
        tracing::info!(agent = %agent_id, "Agent revoked.");
    }
    Ok(provider.is_some())
}

/// SHA-256 fingerprints (lowercase hex) of every revoked agent certificate, of every provider, for the TLS
/// verifier. A plain sqlx error: the caller refreshes on a timer and keeps its last list on failure.
pub async fn revoked_fingerprints(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT fp FROM octoisp_revoked_fingerprints() AS fp")
        .fetch_all(pool)
        .await
}

/// Records that the agent was just heard from; a non-empty `hostname` or `version` replaces the stored one.
/// Runs bound to the agent's own provider, and tells the provider's consoles (`agent.connected` on the
/// `octoisp_live` channel). Fails with [`DbError::NotFound`] if the agent does not exist.
pub async fn touch_agent(
    pool: &PgPool,
    agent_id: Uuid,
    hostname: &str,
    version: &str,
) -> Result<(), DbError> {
    let agent = agent_identity(pool, agent_id)
        .await?
        .ok_or_else(|| DbError::NotFound {
            what: "agent",
            key: agent_id.to_string(),
        })?;
    let mut tx = db::tenant_tx(pool, agent.provider_id).await?;
    sqlx::query(
        "UPDATE agents SET last_seen = now(), hostname = coalesce(nullif($2, ''), hostname), \
         version = coalesce(nullif($3, ''), version) WHERE id = $1",
    )
    .bind(agent_id)
    .bind(label(hostname))
    .bind(label(version))
    .execute(&mut *tx)
    .await
    .map_err(DbError::query("record an agent's last contact"))?;
    // Tells the consoles of this provider (`/api/v1/live`); delivered at commit, dropped on rollback.
    sqlx::query(
        "SELECT pg_notify('octoisp_live', json_build_object('provider_id', $1::text, 'kind', 'agent.connected', \
         'agent_id', $2::text, 'pop_id', $3::text)::text)",
    )
    .bind(agent.provider_id)
    .bind(agent_id)
    .bind(agent.pop_id)
    .execute(&mut *tx)
    .await
    .map_err(DbError::query("notify the consoles of an agent's contact"))?;
    tx.commit()
        .await
        .map_err(DbError::query("commit an agent's last contact"))?;
    Ok(())
}

/// SHA-256 of an enrollment secret as stored in `enrollment_tokens.secret_hash`: lowercase hex of the hash of
/// the secret's text.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn check_slug(slug: &str) -> Result<(), DbError> {
    let ok = (1..=63).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(DbError::Invalid {
            what: "slug",
            reason: format!("`{slug}`: use 1 to 63 of a-z, 0-9 and '-', not starting with '-'"),
        })
    }
}

fn check_name(name: &str) -> Result<&str, DbError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.contains('\0') {
        return Err(DbError::Invalid {
            what: "name",
            reason: "use 1 to 200 characters, no NUL".to_owned(),
        });
    }
    Ok(name)
}

/// A display string from the network, made storable: no NUL, at most [`MAX_LABEL_CHARS`] characters.
fn label(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '\0')
        .take(MAX_LABEL_CHARS)
        .collect()
}

fn conflict_or(err: sqlx::Error, what: &'static str, key: &str, op: &'static str) -> DbError {
    if db::is_unique_violation(&err) {
        DbError::Conflict {
            what,
            key: key.to_owned(),
        }
    } else {
        DbError::Query { op, source: err }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_content_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn slugs_follow_the_schema_rule() {
        assert!(check_slug("isp-a").is_ok());
        assert!(check_slug("a").is_ok());
        assert!(check_slug("-a").is_err());
        assert!(check_slug("Isp").is_err());
        assert!(check_slug("").is_err());
        assert!(check_slug(&"a".repeat(64)).is_err());
    }

    #[test]
    fn secret_hash_is_lowercase_sha256_hex() {
        let h = secret_hash("s3cret");
        assert_eq!(h.len(), 64);
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }
}
