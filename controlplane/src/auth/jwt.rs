//! Access tokens: issuing our HS256 JWTs, and validating ours or Supabase Auth's.
//!
//! The algorithm is never taken on trust from a token: ours are accepted only as HS256 with our secret (so
//! `alg: none`, an RS256 header, or an HMAC made with a public key all fail), Supabase's only as HS256 with the
//! configured Supabase secret or as RS256/ES256 with the JWKS key its `kid` names, with the audience checked.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AuthConfig, AuthConfigError};
use crate::api::error::ApiError;

/// Seconds of clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 5;

/// Claims of an access token issued by this control plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user.
    pub sub: Uuid,
    /// The user's provider; `None` for a Global Admin.
    pub pid: Option<Uuid>,
    /// Global Admin.
    pub ga: bool,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Issuer.
    pub iss: String,
    /// Token id.
    pub jti: Uuid,
}

#[derive(Debug, Deserialize)]
struct SupabaseClaims {
    sub: String,
}

/// Who a valid token names, before the database is asked about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// One of our users, with the provider the token was issued for.
    User {
        /// The user.
        user_id: Uuid,
        /// The provider in the token.
        provider_id: Option<Uuid>,
    },
    /// A Supabase Auth user (`sub`), to be mapped through `users.external_subject`.
    External(String),
}

pub(super) struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    supabase_hs: Option<DecodingKey>,
    supabase_jwks: Option<JwkSet>,
    supabase_audience: String,
    issuer: String,
}

impl Keys {
    pub(super) fn new(config: &AuthConfig) -> Result<Keys, AuthConfigError> {
        let secret = config.jwt_secret.as_bytes();
        let encoding = EncodingKey::from_secret(secret).map_err(|_| AuthConfigError::WeakSecret)?;
        let decoding = DecodingKey::from_secret(secret).map_err(|_| AuthConfigError::WeakSecret)?;
        let (mut supabase_hs, mut supabase_jwks, mut supabase_audience) =
            (None, None, String::new());
        if let Some(s) = &config.supabase {
            if let Some(k) = &s.hs256_secret {
                supabase_hs = Some(
                    DecodingKey::from_secret(k.as_bytes())
                        .map_err(|_| AuthConfigError::WeakSupabaseSecret)?,
                );
            }
            if let Some(j) = &s.jwks_json {
                supabase_jwks = Some(
                    serde_json::from_str(j).map_err(|e| AuthConfigError::Jwks(e.to_string()))?,
                );
            }
            supabase_audience = s.audience.clone();
        }
        Ok(Keys {
            encoding,
            decoding,
            supabase_hs,
            supabase_jwks,
            supabase_audience,
            issuer: config.issuer.clone(),
        })
    }

    /// Issues an access token for `claims`.
    pub(super) fn issue(&self, claims: &AccessClaims) -> Result<String, ApiError> {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|err| ApiError::Internal(format!("sign an access token: {err}")))
    }

    /// Validates `token` and returns whom it names. Every failure is 401, with the reason logged at debug level.
    pub(super) fn validate(&self, token: &str) -> Result<Subject, ApiError> {
        let header = decode_header(token).map_err(|err| reject("header", &err))?;
        match header.alg {
            Algorithm::HS256 => match self.validate_ours(token) {
                Ok(s) => Ok(s),
                Err(ours) => match &self.supabase_hs {
                    Some(key) => self.validate_supabase(token, key, Algorithm::HS256),
                    None => Err(ours),
                },
            },
            alg @ (Algorithm::RS256 | Algorithm::ES256) => {
                let (Some(jwks), Some(kid)) = (&self.supabase_jwks, header.kid.as_deref()) else {
                    tracing::debug!(?alg, "Token refused: asymmetric token without JWKS or kid.");
                    return Err(ApiError::Unauthenticated);
                };
                let jwk = jwks.find(kid).ok_or_else(|| {
                    tracing::debug!(kid, "Token refused: unknown kid.");
                    ApiError::Unauthenticated
                })?;
                let key = DecodingKey::from_jwk(jwk).map_err(|err| reject("jwk", &err))?;
                self.validate_supabase(token, &key, alg)
            }
            alg => {
                tracing::debug!(?alg, "Token refused: algorithm not allowed.");
                Err(ApiError::Unauthenticated)
            }
        }
    }

    fn validate_ours(&self, token: &str) -> Result<Subject, ApiError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.algorithms = vec![Algorithm::HS256];
        v.leeway = LEEWAY_SECS;
        v.validate_aud = false;
        v.set_issuer(&[&self.issuer]);
        v.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        let data = decode::<AccessClaims>(token, &self.decoding, &v)
            .map_err(|err| reject("ours", &err))?;
        if data.claims.ga != data.claims.pid.is_none() {
            tracing::debug!("Token refused: ga and pid disagree.");
            return Err(ApiError::Unauthenticated);
        }
        Ok(Subject::User {
            user_id: data.claims.sub,
            provider_id: data.claims.pid,
        })
    }

    fn validate_supabase(
        &self,
        token: &str,
        key: &DecodingKey,
        alg: Algorithm,
    ) -> Result<Subject, ApiError> {
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = LEEWAY_SECS;
        v.set_audience(&[&self.supabase_audience]);
        v.set_required_spec_claims(&["exp", "sub", "aud"]);
        let data =
            decode::<SupabaseClaims>(token, key, &v).map_err(|err| reject("supabase", &err))?;
        if data.claims.sub.is_empty() {
            return Err(ApiError::Unauthenticated);
        }
        Ok(Subject::External(data.claims.sub))
    }
}

fn reject(stage: &'static str, err: &jsonwebtoken::errors::Error) -> ApiError {
    tracing::debug!(stage, error = %err, "Token refused.");
    ApiError::Unauthenticated
}
