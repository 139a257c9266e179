//! TLS and QUIC client configuration of the agent.
//!
//! - The **uplink** trusts only the CA stored at enrollment (`identity/ca.pem`), asks for
//!   [`octoisp_shared::SERVER_NAME`] whatever address it dials, and authenticates with the agent certificate.
//! - **Enrollment** has no CA yet, only the SHA-256 fingerprint carried by the token: [`PinnedCaVerifier`] accepts
//!   the server chain only if one of its certificates has that fingerprint *and* the leaf verifies against that
//!   certificate as the root for [`octoisp_shared::SERVER_NAME`] (rustls' WebPKI verifier does the path building).
//!
//! One crypto provider: every config is built with `builder_with_provider` and aws-lc-rs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use crate::identity::Identity;

/// Errors building a client configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The stored identity cannot be used.
    #[error("the stored identity is unusable: {0}")]
    Identity(String),
    /// rustls refused the configuration.
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// quinn refused the TLS configuration.
    #[error("the TLS configuration does not suit QUIC: {0}")]
    Quic(String),
}

/// The crypto provider of the whole process: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Lowercase hex SHA-256 of a certificate's DER.
pub fn fingerprint_hex(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// QUIC client configuration of the uplink: mutual TLS with the stored identity.
pub fn uplink_config(identity: &Identity) -> Result<quinn::ClientConfig, TlsError> {
    let ca = identity.ca_der().map_err(TlsError::Identity)?;
    let chain = identity.cert_chain().map_err(TlsError::Identity)?;
    let key = identity.private_key().map_err(TlsError::Identity)?;
    let mut roots = RootCertStore::empty();
    roots.add(ca)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![octoisp_shared::ALPN.to_vec()];
    quic_config(tls)
}

/// QUIC client configuration for enrollment: no client certificate, server pinned by the CA fingerprint.
/// The returned verifier tells, after a failed handshake, which fingerprints the server offered.
pub fn enroll_config(
    ca_fingerprint: &str,
) -> Result<(quinn::ClientConfig, Arc<PinnedCaVerifier>), TlsError> {
    let verifier = Arc::new(PinnedCaVerifier {
        fingerprint: ca_fingerprint.to_ascii_lowercase(),
        provider: provider(),
        offered: Mutex::new(None),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    tls.alpn_protocols = vec![octoisp_shared::ALPN.to_vec()];
    Ok((quic_config(tls)?, verifier))
}

fn quic_config(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, TlsError> {
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|err| TlsError::Quic(err.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    // 30 s is well within quinn's idle timeout range; the conversion cannot fail.
    transport.max_idle_timeout(quinn::IdleTimeout::try_from(Duration::from_secs(30)).ok());
    // The agent accepts no streams from the control plane yet (commands come later).
    transport.max_concurrent_uni_streams(0u32.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Server certificate verifier for enrollment: trusts the chain only through the CA whose SHA-256 fingerprint
/// the enrollment token carries.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
    offered: Mutex<Option<Vec<String>>>,
}

impl PinnedCaVerifier {
    /// When the server was refused because no certificate matched the pinned fingerprint: the fingerprints of the
    /// certificates it offered.
    pub fn mismatch(&self) -> Option<Vec<String>> {
        self.offered.lock().ok().and_then(|guard| guard.clone())
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = std::iter::once(end_entity)
            .chain(intermediates)
            .find(|cert| fingerprint_hex(cert) == self.fingerprint);
        let Some(ca) = pinned else {
            let offered = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| fingerprint_hex(c))
                .collect();
            if let Ok(mut guard) = self.offered.lock() {
                *guard = Some(offered);
            }
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|err| {
                    rustls::Error::General(format!("cannot build the server verifier: {err}"))
                })?;
        let others: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| fingerprint_hex(c) != self.fingerprint)
            .cloned()
            .collect();
        webpki.verify_server_cert(end_entity, &others, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// TLS server configuration of a listener that CPEs and browsers reach (the ACS): the certificate chain and key
/// read from PEM files, TLS 1.2 and 1.3 (many CPEs speak only 1.2), ALPN `http/1.1`. Errors name the file.
pub fn pem_server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in the file", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
