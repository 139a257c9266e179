//! `octoisp-agent enroll`: trade a one-time token for a certificate signed by the control plane CA.
//!
//! ## Token format
//!
//! ```text
//! octoisp-enroll-v1.<token-id>.<secret>.<ca-sha256-hex>
//! ```
//!
//! printed by `octoisp-controlplane pop enroll-token` (the control plane's side of the format is in
//! `controlplane/src/ca.rs`; keep the two in step): `<token-id>` is a UUID, `<secret>` URL-safe base64 without
//! padding, `<ca-sha256-hex>` the SHA-256 of the control plane CA certificate, 64 hex digits.
//!
//! ## Steps
//!
//! 1. Parse the token; refuse to replace an existing identity unless `force`.
//! 2. Generate an ECDSA P-256 key pair and a CSR (its subject does not matter: the control plane sets the
//!    certificate's names from the token's grant).
//! 3. Connect over QUIC *without* a client certificate; trust the server only through the CA whose fingerprint the
//!    token carries ([`crate::tls::PinnedCaVerifier`]).
//! 4. Send `Enroll { token, csr }` on the control stream; receive `Enrolled` (or `Reject` with the reason).
//! 5. Check the answer (the CA is the pinned one, the certificate carries our public key) and store the identity
//!    atomically ([`crate::identity`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use octoisp_shared::{EnrollRequest, Message, RejectCode};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use uuid::Uuid;

use crate::identity::{Identity, IdentityError, IdentityMeta};
use crate::tls;
use crate::uplink::dial::{self, DialError};
use crate::uplink::wire::{self, ReadFrameError};

/// Prefix (and version) of enrollment tokens.
pub const TOKEN_PREFIX: &str = "octoisp-enroll-v1";

/// How long enrollment waits for the connection and for the answer.
const ENROLL_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed enrollment token.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// Id of the token on the control plane.
    pub token_id: Uuid,
    /// The one-time secret.
    pub secret: String,
    /// Lowercase hex SHA-256 of the control plane CA certificate.
    pub ca_fingerprint: String,
}

impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("token_id", &self.token_id)
            .field("secret", &"[redacted]")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish()
    }
}

impl fmt::Display for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}.{}.{}.{}",
            self.token_id, self.secret, self.ca_fingerprint
        )
    }
}

/// Why a token could not be parsed. Each message says what the right form is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// It does not start with the prefix.
    #[error(
        "an enrollment token starts with `{TOKEN_PREFIX}.` (copy it whole from `octoisp-controlplane pop enroll-token`)"
    )]
    Prefix,
    /// Not four dot-separated parts.
    #[error(
        "an enrollment token has four parts separated by dots: {TOKEN_PREFIX}.<token-id>.<secret>.<ca-sha256>"
    )]
    Parts,
    /// The id is not a UUID.
    #[error("the token id (second part) is not a UUID")]
    TokenId,
    /// The secret is empty or has characters outside URL-safe base64.
    #[error("the secret (third part) is empty or not URL-safe base64")]
    Secret,
    /// The fingerprint is not 64 hex digits.
    #[error("the CA fingerprint (fourth part) is not 64 hexadecimal digits")]
    Fingerprint,
}

impl FromStr for EnrollmentToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, TokenError> {
        let rest = s
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|r| r.strip_prefix('.'))
            .ok_or(TokenError::Prefix)?;
        let parts: Vec<&str> = rest.split('.').collect();
        let [id, secret, fingerprint] = parts.as_slice() else {
            return Err(TokenError::Parts);
        };
        let token_id = Uuid::parse_str(id).map_err(|_| TokenError::TokenId)?;
        let secret_ok = !secret.is_empty()
            && secret.len() <= 256
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !secret_ok {
            return Err(TokenError::Secret);
        }
        if fingerprint.len() != 64 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Fingerprint);
        }
        Ok(EnrollmentToken {
            token_id,
            secret: (*secret).to_string(),
            ca_fingerprint: fingerprint.to_ascii_lowercase(),
        })
    }
}

/// The identity obtained by enrolling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolledIdentity {
    /// The agent's id.
    pub agent_id: Uuid,
    /// Provider the agent belongs to.
    pub provider_id: Uuid,
    /// POP the agent serves.
    pub pop_id: Uuid,
    /// Where the identity was stored.
    pub identity_dir: PathBuf,
}

/// Why enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The token is malformed.
    #[error("invalid enrollment token: {0}")]
    Token(#[from] TokenError),
    /// An identity exists and `force` was not given.
    #[error("already enrolled: an identity exists in {0} (use --force to replace it)")]
    AlreadyEnrolled(PathBuf),
    /// The server's certificate chain does not contain the CA named by the token.
    #[error(
        "the server at {server} is not the control plane the token was issued by: expected CA fingerprint {expected}, \
         the server offered {offered:?}"
    )]
    ServerNotTrusted {
        /// `HOST:PORT` dialed.
        server: String,
        /// Fingerprint from the token.
        expected: String,
        /// Fingerprints of the certificates the server presented.
        offered: Vec<String>,
    },
    /// The connection could not be opened.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The control plane refused the enrollment.
    #[error("the control plane refused the enrollment ({code:?}): {message}")]
    Rejected {
        /// Machine-readable reason.
        code: RejectCode,
        /// The control plane's explanation.
        message: String,
    },
    /// The exchange broke or the answer makes no sense.
    #[error("enrollment failed: {0}")]
    Protocol(String),
    /// Generating the key or the CSR failed.
    #[error("generating the key pair or the CSR: {0}")]
    Key(#[from] rcgen::Error),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Storing the identity failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// Enrolls with the control plane at `server` (`HOST:PORT`) using `token`, and stores the identity in
/// `identity_dir` (`<state_dir>/identity`). Refuses to replace an existing identity unless `force`.
pub async fn enroll(
    server: &str,
    token: &str,
    identity_dir: &Path,
    hostname: &str,
    force: bool,
) -> Result<EnrolledIdentity, EnrollError> {
    let parsed: EnrollmentToken = token.parse()?;
    if Identity::exists(identity_dir) && !force {
        return Err(EnrollError::AlreadyEnrolled(identity_dir.to_path_buf()));
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("octoisp-agent {hostname}"),
    );
    let csr_pem = params.serialize_request(&key)?.pem()?;

    let (config, verifier) = tls::enroll_config(&parsed.ca_fingerprint)?;
    let (endpoint, conn) = match dial::connect(server, config, ENROLL_TIMEOUT).await {
        Ok(pair) => pair,
        Err(err) => {
            if let Some(offered) = verifier.mismatch() {
                return Err(EnrollError::ServerNotTrusted {
                    server: server.to_string(),
                    expected: parsed.ca_fingerprint.clone(),
                    offered,
                });
            }
            return Err(err.into());
        }
    };
    let result = exchange(&conn, &parsed, token, &csr_pem, hostname).await;
    let code = if result.is_ok() { 0u32 } else { 1 };
    conn.close(code.into(), b"enrollment done");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    let resp = result?;

    // The answer must carry the pinned CA and a certificate for our key.
    let ca_der = CertificateDer::from_pem_slice(resp.ca_pem.as_bytes())
        .map_err(|err| EnrollError::Protocol(format!("the CA in the answer is not PEM: {err}")))?;
    if tls::fingerprint_hex(&ca_der) != parsed.ca_fingerprint {
        return Err(EnrollError::Protocol(
            "the CA in the answer is not the one the token names".into(),
        ));
    }
    let cert_der = CertificateDer::from_pem_slice(resp.cert_pem.as_bytes()).map_err(|err| {
        EnrollError::Protocol(format!("the certificate in the answer is not PEM: {err}"))
    })?;
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).map_err(|err| {
        EnrollError::Protocol(format!("the certificate in the answer is invalid: {err}"))
    })?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(EnrollError::Protocol(
            "the certificate in the answer is not for our key".into(),
        ));
    }

    let meta = IdentityMeta {
        agent_id: resp.agent_id,
        provider_id: resp.provider_id,
        pop_id: resp.pop_id,
        server: server.to_string(),
        ca_fingerprint: parsed.ca_fingerprint.clone(),
        enrolled_at_ms: now_ms(),
    };
    let identity = Identity::new(meta, resp.cert_pem, key.serialize_pem(), resp.ca_pem);
    identity.store(identity_dir, force)?;
    tracing::info!(agent = %resp.agent_id, provider = %resp.provider_id, pop = %resp.pop_id, "Enrolled.");
    Ok(EnrolledIdentity {
        agent_id: resp.agent_id,
        provider_id: resp.provider_id,
        pop_id: resp.pop_id,
        identity_dir: identity_dir.to_path_buf(),
    })
}

async fn exchange(
    conn: &quinn::Connection,
    token: &EnrollmentToken,
    token_text: &str,
    csr_pem: &str,
    hostname: &str,
) -> Result<octoisp_shared::EnrollResponse, EnrollError> {
    let protocol =
        |what: &str, err: &dyn fmt::Display| EnrollError::Protocol(format!("{what}: {err}"));
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|err| protocol("opening the control stream", &err))?;
    let request = Message::Enroll(EnrollRequest {
        version_min: octoisp_shared::PROTOCOL_VERSION_MIN,
        version_max: octoisp_shared::PROTOCOL_VERSION_MAX,
        token: token_text.trim().to_string(),
        csr_pem: csr_pem.to_string(),
        hostname: hostname.to_string(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    });
    wire::write_message(&mut send, &request)
        .await
        .map_err(|err| protocol("sending Enroll", &err))?;
    let _ = send.finish();
    let answer = tokio::time::timeout(
        ENROLL_TIMEOUT,
        wire::read_frame(&mut recv, &wire::reply_limits()),
    )
    .await
    .map_err(|_| EnrollError::Protocol(format!("no answer within {ENROLL_TIMEOUT:?}")))?;
    match answer {
        Ok(Message::Enrolled(resp)) => Ok(resp),
        Ok(Message::Reject(reject)) => Err(EnrollError::Rejected {
            code: reject.code,
            message: reject.message,
        }),
        Ok(other) => Err(EnrollError::Protocol(format!(
            "unexpected answer {other:?}"
        ))),
        Err(ReadFrameError::Finished) => Err(EnrollError::Protocol(
            "the control plane closed the stream".into(),
        )),
        Err(err) => {
            tracing::debug!(token = %token.token_id, error = %err, "Enrollment exchange failed.");
            Err(protocol("reading the answer", &err))
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tokens_with_clear_errors() {
        let id = Uuid::new_v4();
        let fp = "AB".repeat(32);
        let token: EnrollmentToken = format!("  {TOKEN_PREFIX}.{id}.s3cr-et_x.{fp}\n")
            .parse()
            .expect("valid");
        assert_eq!(token.token_id, id);
        assert_eq!(token.secret, "s3cr-et_x");
        assert_eq!(token.ca_fingerprint, "ab".repeat(32));
        assert_eq!(
            token.to_string(),
            format!("{TOKEN_PREFIX}.{id}.s3cr-et_x.{}", "ab".repeat(32))
        );

        assert_eq!(
            "octoisp-enroll-v2.x".parse::<EnrollmentToken>(),
            Err(TokenError::Prefix)
        );
        assert_eq!(
            format!("{TOKEN_PREFIX}.{id}.{fp}").parse::<EnrollmentToken>(),
            Err(TokenError::Parts)
        );
        assert_eq!(
            format!("{TOKEN_PREFIX}.nope.s.{fp}").parse::<EnrollmentToken>(),
            Err(TokenError::TokenId)
        );
        assert_eq!(
            format!("{TOKEN_PREFIX}.{id}.s/x.{fp}").parse::<EnrollmentToken>(),
            Err(TokenError::Secret)
        );
        assert_eq!(
            format!("{TOKEN_PREFIX}.{id}.s.abc").parse::<EnrollmentToken>(),
            Err(TokenError::Fingerprint)
        );
    }
}
