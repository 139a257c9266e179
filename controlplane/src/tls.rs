//! TLS for the QUIC ingest endpoint: the rustls server configuration and the client-certificate verifier that
//! refuses revoked agents at the handshake.
//!
//! Client certificates are *optional* at the TLS level: an agent that is not enrolled yet connects without one to
//! send `Enroll`. When a certificate is presented it must chain to the control plane CA and its SHA-256 must not
//! be in the revoked set, which the ingest server refreshes from PostgreSQL every few seconds. The authoritative
//! check is the one after the handshake, against the `agents` row (see `ingest::server`); this one keeps a
//! revoked agent from completing a handshake at all.
//!
//! One crypto provider in the whole process: every config here is built with `builder_with_provider` and
//! aws-lc-rs, never with the process-level default. Session tickets are disabled, so every connection runs the
//! full handshake and its certificate goes through the revocation check.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::sync::watch;

use crate::ca::{Ca, CaError, cert_fingerprint_hex};

/// The set of revoked certificate fingerprints (lowercase hex SHA-256), shared between the refresher and the
/// verifier. The verifier only reads the current value.
pub type RevokedSet = watch::Receiver<Arc<HashSet<String>>>;

/// Errors building the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA could not issue the server certificate.
    #[error("issuing the server certificate: {0}")]
    Ca(#[from] CaError),
    /// rustls refused the configuration.
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("building the client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The crypto provider of the whole process: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the rustls server configuration of the ingest endpoint: TLS 1.3 only, ALPN [`octoisp_shared::ALPN`], a
/// fresh server certificate from `ca` for [`octoisp_shared::SERVER_NAME`] plus `server_names`, optional client
/// certificates verified against `ca` and refused when their fingerprint is in `revoked`.
pub fn server_config(
    ca: &Ca,
    server_names: &[String],
    revoked: RevokedSet,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone())?;
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let verifier = Arc::new(RevocationCheckingVerifier { inner, revoked });
    let (chain, key) = ca.issue_server_cert(server_names)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![octoisp_shared::ALPN.to_vec()];
    // No resumption: a resumed session would skip the revocation check of the client certificate.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(config)
}

/// Wraps the WebPKI client verifier and refuses certificates whose fingerprint is revoked.
struct RevocationCheckingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: RevokedSet,
}

impl fmt::Debug for RevocationCheckingVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationCheckingVerifier")
            .field("revoked", &self.revoked.borrow().len())
            .finish()
    }
}

impl ClientCertVerifier for RevocationCheckingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let fingerprint = cert_fingerprint_hex(end_entity);
        if self.revoked.borrow().contains(&fingerprint) {
            tracing::info!(%fingerprint, "Refused a revoked agent certificate at the handshake.");
            metrics::counter!("octoisp_ingest_handshakes_refused_total", "reason" => "revoked")
                .increment(1);
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
