//! Password hashing with argon2id (PHC strings), off the async runtime.
//!
//! Verification always runs a full argon2 computation, also for unknown accounts (against a dummy hash made with
//! the same parameters), so response times do not reveal which emails exist.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::api::error::ApiError;

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted, in bytes (bounds the hashing work an input can cause).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Parallelism.
    pub p: u32,
}

impl Default for PasswordParams {
    /// OWASP's argon2id recommendation: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        PasswordParams {
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
        }
    }
}

impl PasswordParams {
    fn argon2(&self) -> Result<Argon2<'static>, ApiError> {
        let params = Params::new(self.m_kib, self.t, self.p, None)
            .map_err(|err| ApiError::Internal(format!("argon2 parameters: {err}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Refuses passwords that are too short or too long (400).
pub fn check_policy(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::BadRequest(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::BadRequest(format!(
            "the password must have at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Hashes `password` synchronously (for start-up and blocking threads).
pub fn hash_blocking(params: PasswordParams, password: &str) -> Result<String, ApiError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|err| ApiError::Internal(format!("salt: {err}")))?;
    params
        .argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|err| ApiError::Internal(format!("hash a password: {err}")))
}

/// Hashes `password` (argon2id PHC string) on a blocking thread, after checking the policy.
pub async fn hash(params: PasswordParams, password: &str) -> Result<String, ApiError> {
    check_policy(password)?;
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || hash_blocking(params, &password))
        .await
        .map_err(|err| ApiError::Internal(format!("password hashing task: {err}")))?
}

/// Verifies `password` against `phc` on a blocking thread. A malformed hash or an oversized password is a
/// mismatch (after the same amount of work against `dummy`).
pub async fn verify(params: PasswordParams, phc: String, dummy: String, password: &str) -> bool {
    let password = if password.len() > MAX_PASSWORD_BYTES {
        None
    } else {
        Some(password.to_owned())
    };
    tokio::task::spawn_blocking(move || {
        let Ok(argon) = params.argon2() else {
            return false;
        };
        let (target, pw, genuine) = match (PasswordHash::new(&phc), &password) {
            (Ok(h), Some(pw)) => (h, pw.as_str(), true),
            _ => match PasswordHash::new(&dummy) {
                Ok(h) => (h, "not the password", false),
                Err(_) => return false,
            },
        };
        argon.verify_password(pw.as_bytes(), &target).is_ok() && genuine
    })
    .await
    .unwrap_or(false)
}
