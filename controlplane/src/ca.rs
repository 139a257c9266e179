//! The control plane's certificate authority, and the format of enrollment tokens.
//!
//! One CA per installation: `ca.pem` (certificate) and `ca.key` (PKCS#8 private key, mode 0600) in the control
//! plane's data directory, shared by every instance. It is created on first start ([`Ca::load_or_create`]) and
//! signs two kinds of certificates:
//!
//! - **server certificates** for the QUIC ingest endpoint ([`Ca::issue_server_cert`]): a fresh key pair on each
//!   start, SAN [`octoisp_shared::SERVER_NAME`] (the name every agent asks for, whatever address it dials) plus any
//!   extra names, EKU serverAuth. Agents trust them because they chain to the CA they pinned at enrollment.
//! - **agent certificates** ([`Ca::sign_agent_csr`]): only the *public key* is taken from the agent's CSR; the
//!   subject and the SANs are set here, from the enrollment token's grant: SAN URIs `urn:octoisp:agent:<uuid>`,
//!   `urn:octoisp:provider:<uuid>` and `urn:octoisp:pop:<uuid>`, EKU clientAuth, valid for about a year. The
//!   ingest server reads only the agent URI and takes provider and POP from the `agents` row it names.
//!
//! ## Enrollment token format
//!
//! ```text
//! octoisp-enroll-v1.<token-id>.<secret>.<ca-sha256-hex>
//! ```
//!
//! `<token-id>` is the hyphenated UUID of the `enrollment_tokens` row, `<secret>` is URL-safe base64 without
//! padding (no `.` in it), `<ca-sha256-hex>` is the lowercase hex SHA-256 of the CA certificate's DER, so the
//! agent can trust the control plane with no other setup. The agent has its own parser (`agent/src/enroll.rs`);
//! keep the two in step. The agent sends the whole token in `EnrollRequest::token`.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// File name of the CA certificate in the data directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key in the data directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// Prefix (and version) of enrollment tokens.
pub const TOKEN_PREFIX: &str = "octoisp-enroll-v1";

/// How long the CA certificate is valid, in days (about 10 years).
const CA_VALIDITY_DAYS: i64 = 3653;
/// How long an agent certificate is valid, in days (about a year).
const AGENT_VALIDITY_DAYS: i64 = 366;
/// How long a server certificate is valid, in days; a new one is issued on every start.
const SERVER_VALIDITY_DAYS: i64 = 366;

/// Errors of the CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing a CA file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Only one of `ca.pem` and `ca.key` exists: refusing to create a new CA over half of an old one.
    #[error(
        "{present} exists but {missing} does not: restore the missing file or remove both to create a new CA"
    )]
    Incomplete {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// A CA file could not be parsed, or the key does not belong to the certificate.
    #[error("invalid CA file {path}: {reason}")]
    InvalidCaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate signing request could not be parsed, its signature is wrong, or its key type is refused.
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),
    /// rcgen failed to generate a key or a certificate.
    #[error("{op}: {source}")]
    Generate {
        /// What was being generated.
        op: &'static str,
        /// The rcgen error.
        #[source]
        source: rcgen::Error,
    },
}

/// The control plane CA: its certificate and signing key.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    fingerprint: [u8; 32],
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signing key stays out of logs.
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint_hex())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads `ca.pem` and `ca.key` from `dir`, or creates them (ECDSA P-256, valid 10 years, key mode 0600) when
    /// neither exists. Several instances starting at once end up with the same CA: the key file is published with
    /// an exclusive link, and the loser loads the winner's files.
    pub fn load_or_create(dir: &Path) -> Result<Ca, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => return Self::load(&cert_path, &key_path),
            (true, false) => {
                return Err(CaError::Incomplete {
                    present: cert_path,
                    missing: key_path,
                });
            }
            (false, true) => {
                // Possibly another instance between its two renames: give it a moment.
                return Self::wait_and_load(&cert_path, &key_path);
            }
            (false, false) => {}
        }
        fs::create_dir_all(dir).map_err(|source| io_err("create directory", dir, source))?;
        let (cert_pem, key_pem) = generate_ca()?;

        let tmp_key = dir.join(format!(".{CA_KEY_FILE}.{}.tmp", std::process::id()));
        let tmp_cert = dir.join(format!(".{CA_CERT_FILE}.{}.tmp", std::process::id()));
        write_new_file(&tmp_key, key_pem.as_bytes(), 0o600)?;
        write_new_file(&tmp_cert, cert_pem.as_bytes(), 0o644)?;
        // hard_link fails when ca.key already exists: exactly one instance publishes its key.
        match fs::hard_link(&tmp_key, &key_path) {
            Ok(()) => {
                let _ = fs::remove_file(&tmp_key);
                fs::rename(&tmp_cert, &cert_path)
                    .map_err(|source| io_err("rename", &tmp_cert, source))?;
                sync_dir(dir);
                tracing::info!(dir = %dir.display(), "Created a new control plane CA.");
                Self::load(&cert_path, &key_path)
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_file(&tmp_key);
                let _ = fs::remove_file(&tmp_cert);
                Self::wait_and_load(&cert_path, &key_path)
            }
            Err(source) => {
                let _ = fs::remove_file(&tmp_key);
                let _ = fs::remove_file(&tmp_cert);
                Err(io_err("link", &key_path, source))
            }
        }
    }

    fn wait_and_load(cert_path: &Path, key_path: &Path) -> Result<Ca, CaError> {
        for _ in 0..50 {
            if cert_path.exists() {
                return Self::load(cert_path, key_path);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(CaError::Incomplete {
            present: key_path.to_path_buf(),
            missing: cert_path.to_path_buf(),
        })
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Ca, CaError> {
        let key_meta = fs::metadata(key_path).map_err(|source| io_err("stat", key_path, source))?;
        if key_meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %key_path.display(),
                mode = format_args!("{:o}", key_meta.permissions().mode() & 0o777),
                "The CA key is readable by other users; it should be mode 0600."
            );
        }
        let cert_pem =
            fs::read_to_string(cert_path).map_err(|source| io_err("read", cert_path, source))?;
        let key_pem =
            fs::read_to_string(key_path).map_err(|source| io_err("read", key_path, source))?;
        let invalid = |path: &Path, reason: String| CaError::InvalidCaFile {
            path: path.to_path_buf(),
            reason,
        };

        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|err| invalid(cert_path, format!("no PEM certificate: {err}")))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|err| invalid(key_path, err.to_string()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|err| invalid(cert_path, format!("not an X.509 certificate: {err}")))?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(invalid(
                key_path,
                format!("this key does not belong to {}", cert_path.display()),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|err| invalid(cert_path, format!("unusable as an issuer: {err}")))?;
        let fingerprint = sha256(&cert_der);
        Ok(Ca {
            cert_pem,
            cert_der,
            fingerprint,
            issuer,
        })
    }

    /// The CA certificate, PEM (sent to agents in `Enrolled`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER (the trust anchor for client certificates).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Lowercase hex SHA-256 of the CA certificate's DER: the fingerprint carried by enrollment tokens.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }

    /// Issues a server certificate for the ingest endpoint with a new ECDSA P-256 key: SAN
    /// [`octoisp_shared::SERVER_NAME`] plus `extra_names` (DNS names or IP addresses). Returns the chain
    /// `[leaf, CA]` and the leaf's private key.
    pub fn issue_server_cert(
        &self,
        extra_names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            CaError::Generate {
                op: "generate server key",
                source,
            }
        })?;
        let mut names = vec![octoisp_shared::SERVER_NAME.to_string()];
        names.extend(
            extra_names
                .iter()
                .filter(|n| n.as_str() != octoisp_shared::SERVER_NAME)
                .cloned(),
        );
        let mut params = CertificateParams::new(names).map_err(|source| CaError::Generate {
            op: "server certificate names",
            source,
        })?;
        params.distinguished_name = dn(octoisp_shared::SERVER_NAME);
        params.serial_number = Some(random_serial());
        set_validity(&mut params, SERVER_VALIDITY_DAYS);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| CaError::Generate {
                op: "sign server certificate",
                source,
            })?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone(), self.cert_der.clone()], key_der))
    }

    /// Signs an agent certificate for the public key of `csr_pem`. Nothing else is taken from the CSR (its
    /// signature is checked, its subject and extensions are ignored): subject `CN=octoisp-agent <agent_id>`, SAN URIs
    /// `urn:octoisp:agent:<agent_id>`, `urn:octoisp:provider:<provider_id>`, `urn:octoisp:pop:<pop_id>`, EKU
    /// clientAuth, valid about a year. Returns the certificate PEM and its SHA-256 fingerprint, lowercase hex.
    pub fn sign_agent_csr(
        &self,
        csr_pem: &str,
        agent_id: Uuid,
        provider_id: Uuid,
        pop_id: Uuid,
    ) -> Result<(String, String), CaError> {
        let csr = parse_csr(csr_pem)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&format!("octoisp-agent {agent_id}"));
        params.subject_alt_names = vec![
            uri_san(&agent_uri(agent_id))?,
            uri_san(&format!("urn:octoisp:provider:{provider_id}"))?,
            uri_san(&format!("urn:octoisp:pop:{pop_id}"))?,
        ];
        params.serial_number = Some(random_serial());
        set_validity(&mut params, AGENT_VALIDITY_DAYS);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|source| CaError::Generate {
                op: "sign agent certificate",
                source,
            })?;
        Ok((cert.pem(), hex::encode(sha256(cert.der()))))
    }
}

/// Checks a CSR the way [`Ca::sign_agent_csr`] does, without signing anything: used before an enrollment token is
/// spent, so that a bad CSR does not consume it.
pub fn validate_csr(csr_pem: &str) -> Result<(), CaError> {
    parse_csr(csr_pem).map(|_| ())
}

fn parse_csr(csr_pem: &str) -> Result<CertificateSigningRequestParams, CaError> {
    if csr_pem.len() > 16 * 1024 {
        return Err(CaError::InvalidCsr(format!(
            "{} bytes is too large for a CSR",
            csr_pem.len()
        )));
    }
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|err| CaError::InvalidCsr(err.to_string()))?;
    let alg = csr.public_key.algorithm();
    let accepted = [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ];
    if !accepted.contains(&alg) {
        return Err(CaError::InvalidCsr(format!(
            "key algorithm {alg:?} refused: use ECDSA P-256, ECDSA P-384 or Ed25519"
        )));
    }
    Ok(csr)
}

/// The SAN URI that names an agent in its certificate.
pub fn agent_uri(agent_id: Uuid) -> String {
    format!("urn:octoisp:agent:{agent_id}")
}

/// Extracts the agent id from a certificate (DER): the SAN URI `urn:octoisp:agent:<uuid>`. `None` when the
/// certificate cannot be parsed or names no agent (exactly one agent URI is required).
pub fn agent_id_from_cert(cert_der: &[u8]) -> Option<Uuid> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut ids = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => {
                uri.strip_prefix("urn:octoisp:agent:")
            }
            _ => None,
        });
    let first = ids.next()?;
    if ids.next().is_some() {
        return None;
    }
    Uuid::parse_str(first).ok()
}

/// Lowercase hex SHA-256 of a certificate's DER, the form stored in `agents.cert_fingerprint`.
pub fn cert_fingerprint_hex(cert_der: &[u8]) -> String {
    hex::encode(sha256(cert_der))
}

/// A one-time enrollment token as printed for the operator: `octoisp-enroll-v1.<token-id>.<secret>.<ca-sha256-hex>`.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// Id of the token row.
    pub token_id: Uuid,
    /// The secret (URL-safe base64, no padding); only its hash is stored.
    pub secret: String,
    /// Lowercase hex SHA-256 of the CA certificate.
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

impl EnrollmentToken {
    /// A new random secret: 32 random bytes, URL-safe base64 without padding.
    pub fn random_secret() -> String {
        let bytes: [u8; 32] = rand::random();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
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

/// Why an enrollment token could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenParseError {
    /// It does not start with `octoisp-enroll-v1.`.
    #[error("an enrollment token starts with `{TOKEN_PREFIX}.`")]
    Prefix,
    /// It does not have four dot-separated parts.
    #[error(
        "an enrollment token has four parts separated by dots: {TOKEN_PREFIX}.<token-id>.<secret>.<ca-sha256>"
    )]
    Parts,
    /// The token id is not a UUID.
    #[error("the token id is not a UUID")]
    TokenId,
    /// The secret is empty or has characters outside URL-safe base64.
    #[error("the secret is empty or not URL-safe base64")]
    Secret,
    /// The CA fingerprint is not 64 hex digits.
    #[error("the CA fingerprint is not 64 hexadecimal digits")]
    Fingerprint,
}

impl FromStr for EnrollmentToken {
    type Err = TokenParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|r| r.strip_prefix('.'));
        let rest = rest.ok_or(TokenParseError::Prefix)?;
        let parts: Vec<&str> = rest.split('.').collect();
        let [id, secret, fingerprint] = parts.as_slice() else {
            return Err(TokenParseError::Parts);
        };
        let token_id = Uuid::parse_str(id).map_err(|_| TokenParseError::TokenId)?;
        let secret_ok = !secret.is_empty()
            && secret.len() <= 256
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !secret_ok {
            return Err(TokenParseError::Secret);
        }
        if fingerprint.len() != 64 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenParseError::Fingerprint);
        }
        Ok(EnrollmentToken {
            token_id,
            secret: (*secret).to_string(),
            ca_fingerprint: fingerprint.to_ascii_lowercase(),
        })
    }
}

fn generate_ca() -> Result<(String, String), CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
        CaError::Generate {
            op: "generate CA key",
            source,
        }
    })?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "OctoISP");
    name.push(
        DnType::CommonName,
        format!(
            "OctoISP control plane CA {}",
            &Uuid::new_v4().simple().to_string()[..8]
        ),
    );
    params.distinguished_name = name;
    params.serial_number = Some(random_serial());
    set_validity(&mut params, CA_VALIDITY_DAYS);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .map_err(|source| CaError::Generate {
            op: "self-sign CA certificate",
            source,
        })?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "OctoISP");
    name.push(DnType::CommonName, common_name);
    name
}

fn uri_san(uri: &str) -> Result<SanType, CaError> {
    let ia5 = uri
        .to_string()
        .try_into()
        .map_err(|source| CaError::Generate {
            op: "SAN URI",
            source,
        })?;
    Ok(SanType::URI(ia5))
}

/// A positive 16-byte serial number.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Sets the validity from yesterday (tolerates clock skew between the control plane and agents) to `days` from now,
/// at midnight UTC. rcgen's time type comes from the `time` crate, which this crate does not name: a closure lets
/// the compiler infer it.
fn set_validity(params: &mut CertificateParams, days: i64) {
    use chrono::Datelike as _;
    // chrono yields a valid calendar date, so `date_time_ymd` (which panics on an invalid date) cannot panic here;
    // month is 1-12 and day 1-31, so the casts are lossless.
    let ymd = |t: chrono::DateTime<chrono::Utc>| {
        rcgen::date_time_ymd(t.year(), t.month() as u8, t.day() as u8)
    };
    let now = chrono::Utc::now();
    params.not_before = ymd(now - chrono::Duration::days(1));
    params.not_after = ymd(now + chrono::Duration::days(days));
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> CaError {
    CaError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| io_err("create", path, source))?;
    file.write_all(contents)
        .map_err(|source| io_err("write", path, source))?;
    file.sync_all()
        .map_err(|source| io_err("sync", path, source))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_rejects_garbage() {
        let token = EnrollmentToken {
            token_id: Uuid::new_v4(),
            secret: EnrollmentToken::random_secret(),
            ca_fingerprint: "ab".repeat(32),
        };
        let text = token.to_string();
        assert!(text.starts_with("octoisp-enroll-v1."));
        assert_eq!(text.parse::<EnrollmentToken>(), Ok(token.clone()));
        assert_eq!(
            "nope".parse::<EnrollmentToken>(),
            Err(TokenParseError::Prefix)
        );
        assert_eq!(
            format!("{TOKEN_PREFIX}.a.b").parse::<EnrollmentToken>(),
            Err(TokenParseError::Parts)
        );
        let bad_fp = format!("{TOKEN_PREFIX}.{}.{}.abc", token.token_id, token.secret);
        assert_eq!(
            bad_fp.parse::<EnrollmentToken>(),
            Err(TokenParseError::Fingerprint)
        );
    }

    #[test]
    fn ca_persists_and_signs_only_the_csr_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::load_or_create(dir.path()).expect("create CA");
        let mode = fs::metadata(dir.path().join(CA_KEY_FILE))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Ca::load_or_create(dir.path()).expect("load CA");
        assert_eq!(ca.fingerprint_hex(), again.fingerprint_hex());

        // The CSR claims another agent's URI: the certificate must carry only the ids given by the caller.
        let agent_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut req = CertificateParams::new(vec!["evil.example".to_string()]).expect("params");
        req.subject_alt_names.push(SanType::URI(
            "urn:octoisp:agent:00000000-0000-0000-0000-000000000001"
                .try_into()
                .expect("ia5"),
        ));
        let csr = req
            .serialize_request(&agent_key)
            .expect("csr")
            .pem()
            .expect("pem");
        let (agent, provider, pop) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let (pem, fp) = again
            .sign_agent_csr(&csr, agent, provider, pop)
            .expect("sign");
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem");
        assert_eq!(agent_id_from_cert(&der), Some(agent));
        assert_eq!(cert_fingerprint_hex(&der), fp);
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("parse");
        assert_eq!(
            parsed.public_key().subject_public_key.data.as_ref(),
            agent_key.public_key_raw()
        );
        let san = parsed
            .subject_alternative_name()
            .expect("san")
            .expect("present");
        let uris: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| format!("{n}"))
            .collect();
        assert!(!uris.iter().any(|u| u.contains("evil.example")), "{uris:?}");
        assert!(
            uris.iter()
                .any(|u| u.contains(&format!("urn:octoisp:provider:{provider}"))),
            "{uris:?}"
        );

        assert!(matches!(
            again.sign_agent_csr("not a csr", agent, provider, pop),
            Err(CaError::InvalidCsr(_))
        ));
    }

    #[test]
    fn half_a_ca_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        Ca::load_or_create(dir.path()).expect("create CA");
        fs::remove_file(dir.path().join(CA_KEY_FILE)).expect("rm");
        assert!(matches!(
            Ca::load_or_create(dir.path()),
            Err(CaError::Incomplete { .. })
        ));
    }
}
