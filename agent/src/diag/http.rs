//! HTTP(S) check: one request (and its redirects when asked), timed phase by phase (DNS, connect, TLS, first
//! byte, total), with the TLS version, cipher suite and certificate chain (subject, issuer, days to expiry).
//!
//! The client is written over tokio and tokio-rustls because no HTTP client library reports the phases
//! apart. Certificate problems (expired, self-signed, unknown issuer, wrong name) are recorded, not fatal:
//! the verifier runs the normal WebPKI checks, keeps their verdict, and lets the handshake go on, so the
//! report shows both the problem and what the server serves. HTTP/1.1 only, `Connection: close`; bodies are
//! read up to a cap.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

mod url;
pub use url::Url;

/// Why a check could not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `http(s)://host[:port][/path]`.
    #[error("bad URL {0:?}")]
    BadUrl(String),
    /// Name resolution failed.
    #[error("cannot resolve {host}: {reason}")]
    Dns {
        /// Host name.
        host: String,
        /// Why.
        reason: String,
    },
    /// A network or TLS error in one phase.
    #[error("{phase} to {addr} failed: {reason}")]
    Io {
        /// `connect`, `tls`, `request`, `response`.
        phase: &'static str,
        /// The server address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The whole exchange exceeded its timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The response is not HTTP/1.x.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// TLS configuration problem (trust anchors).
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// Options of a check.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Follow up to this many redirects (0 = report the redirect itself).
    pub max_redirects: u8,
    /// Timeout of each request (all phases together).
    pub timeout: Duration,
    /// Extra trust anchors (PEM) besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// Most body bytes read.
    pub max_body: usize,
    /// Method (`GET`, `HEAD`).
    pub method: String,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            max_redirects: 0,
            timeout: Duration::from_secs(10),
            ca_file: None,
            max_body: 8 << 20,
            method: "GET".into(),
        }
    }
}

/// Phase durations, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Name resolution.
    pub dns_ms: f64,
    /// TCP handshake.
    pub connect_ms: f64,
    /// TLS handshake (HTTPS only).
    pub tls_ms: Option<f64>,
    /// From the request sent to the first response byte.
    pub first_byte_ms: f64,
    /// Everything, from resolution to the last body byte.
    pub total_ms: f64,
}

/// One certificate of the chain the server sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertInfo {
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Expiry, seconds since the Unix epoch.
    pub not_after: i64,
    /// Days until expiry (negative: expired).
    pub days_to_expiry: i64,
    /// Subject equals issuer.
    pub self_signed: bool,
}

/// The TLS side of an HTTPS response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsInfo {
    /// `TLSv1_3`, `TLSv1_2`.
    pub version: String,
    /// Negotiated cipher suite.
    pub cipher: String,
    /// `None` when the chain verified; otherwise why not (expired, self-signed, unknown issuer...).
    pub verify_error: Option<String>,
    /// The chain as sent, leaf first.
    pub chain: Vec<CertInfo>,
}

/// One request and its response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpResponse {
    /// The URL asked.
    pub url: String,
    /// Address connected to.
    pub addr: SocketAddr,
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes received (after de-chunking).
    pub size: usize,
    /// Phase timings.
    pub timings: Timings,
    /// TLS details (HTTPS).
    pub tls: Option<TlsInfo>,
    /// The body, for content checks (not serialized).
    #[serde(skip)]
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Fetches `url`, following redirects as `opts` says; the chain of responses, the final one last.
pub async fn check(url: &str, opts: &HttpOptions) -> Result<Vec<HttpResponse>, HttpError> {
    let tls = tls_config(opts.ca_file.as_deref())?;
    let mut url = Url::parse(url)?;
    let mut chain = Vec::new();
    loop {
        let resp = tokio::time::timeout(opts.timeout, fetch(&url, opts, &tls))
            .await
            .map_err(|_| HttpError::Timeout(opts.timeout))??;
        let next = match (resp.status, resp.header("location")) {
            (300..=399, Some(loc)) if chain.len() < usize::from(opts.max_redirects) => {
                Some(url.join(loc)?)
            }
            _ => None,
        };
        chain.push(resp);
        match next {
            Some(n) => url = n,
            None => return Ok(chain),
        }
    }
}

async fn fetch(url: &Url, opts: &HttpOptions, tls: &TlsSetup) -> Result<HttpResponse, HttpError> {
    let t0 = Instant::now();
    let addr = match url.host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, url.port),
        Err(_) => tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|e| HttpError::Dns {
                host: url.host.clone(),
                reason: e.to_string(),
            })?
            .next()
            .ok_or_else(|| HttpError::Dns {
                host: url.host.clone(),
                reason: "no address".into(),
            })?,
    };
    let dns_ms = ms_since(t0);
    let t1 = Instant::now();
    let tcp = TcpStream::connect(addr).await.map_err(|e| HttpError::Io {
        phase: "connect",
        addr,
        reason: e.to_string(),
    })?;
    let connect_ms = ms_since(t1);
    let request = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: octoisp-agent/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        opts.method,
        url.path,
        url.host_header(),
        env!("CARGO_PKG_VERSION")
    );
    let (head, tls_ms, tls_info) = if url.https {
        let t2 = Instant::now();
        let verdict = Arc::new(Mutex::new(None));
        let connector = tokio_rustls::TlsConnector::from(tls.client_config(verdict.clone())?);
        let name = ServerName::try_from(url.host.clone()).map_err(|e| HttpError::Io {
            phase: "tls",
            addr,
            reason: e.to_string(),
        })?;
        let mut stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| HttpError::Io {
                phase: "tls",
                addr,
                reason: e.to_string(),
            })?;
        let tls_ms = ms_since(t2);
        let (_, conn) = stream.get_ref();
        let info = TlsInfo {
            version: conn
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
            cipher: conn
                .negotiated_cipher_suite()
                .map(|c| format!("{:?}", c.suite()))
                .unwrap_or_default(),
            verify_error: verdict.lock().ok().and_then(|v| v.clone()),
            chain: conn
                .peer_certificates()
                .map(|c| c.iter().filter_map(cert_info).collect())
                .unwrap_or_default(),
        };
        let head = exchange(&mut stream, &request, opts, addr).await?;
        (head, Some(tls_ms), Some(info))
    } else {
        let mut tcp = tcp;
        (exchange(&mut tcp, &request, opts, addr).await?, None, None)
    };
    let (status, reason, headers, body, first_byte_ms) = head;
    Ok(HttpResponse {
        url: url.to_string(),
        addr,
        status,
        reason,
        headers,
        size: body.len(),
        timings: Timings {
            dns_ms,
            connect_ms,
            tls_ms,
            first_byte_ms,
            total_ms: ms_since(t0),
        },
        tls: tls_info,
        body,
    })
}

type Exchange = (u16, String, Vec<(String, String)>, Vec<u8>, f64);

/// Sends the request and reads the response: status, reason, headers, body, ms to the first byte.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    request: &str,
    opts: &HttpOptions,
    addr: SocketAddr,
) -> Result<Exchange, HttpError> {
    let io = |phase: &'static str| {
        move |e: std::io::Error| HttpError::Io {
            phase,
            addr,
            reason: e.to_string(),
        }
    };
    s.write_all(request.as_bytes())
        .await
        .map_err(io("request"))?;
    s.flush().await.map_err(io("request"))?;
    let sent = Instant::now();
    let mut raw = Vec::new();
    let mut first_byte_ms = None;
    let mut buf = vec![0u8; 16 * 1024];
    let limit = opts.max_body + 64 * 1024;
    loop {
        let n = match s.read(&mut buf).await {
            Ok(n) => n,
            // Servers that close without TLS close_notify: the data already read is the response.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(io("response")(e)),
        };
        if n == 0 {
            break;
        }
        first_byte_ms.get_or_insert_with(|| ms_since(sent));
        raw.extend_from_slice(&buf[..n]);
        if raw.len() >= limit {
            break;
        }
    }
    let first_byte_ms =
        first_byte_ms.ok_or_else(|| HttpError::Malformed("empty response".into()))?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| HttpError::Malformed("no end of headers".into()))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!("status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpError::Malformed(format!("status line {status_line:?}")))?;
    let reason = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw.split_off(end + 4);
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    body.truncate(opts.max_body);
    Ok((status, reason, headers, body, first_byte_ms))
}

/// Decodes a chunked body; stops at the last chunk or at the first malformed size line.
pub fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            out.extend_from_slice(&data[..size.min(data.len())]);
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
    out
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn cert_info(der: &CertificateDer<'_>) -> Option<CertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let subject = cert.subject().to_string();
    let issuer = cert.issuer().to_string();
    Some(CertInfo {
        self_signed: subject == issuer,
        subject,
        issuer,
        not_after,
        days_to_expiry: (not_after - now).div_euclid(86_400),
    })
}

/// Trust anchors and the crypto provider, built once per check.
struct TlsSetup {
    provider: Arc<rustls::crypto::CryptoProvider>,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    setup_error: Option<String>,
}

fn tls_config(ca_file: Option<&Path>) -> Result<TlsSetup, HttpError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for path in ["/etc/ssl/certs/ca-certificates.crt"]
        .iter()
        .map(Path::new)
        .chain(ca_file)
    {
        let Ok(iter) = CertificateDer::pem_file_iter(path) else {
            if Some(path) == ca_file {
                return Err(HttpError::Tls(format!("cannot read {}", path.display())));
            }
            continue;
        };
        for cert in iter.flatten() {
            let _ = roots.add(cert);
        }
    }
    let (webpki, setup_error) = match WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(format!("no trust anchors: {e}"))),
    };
    Ok(TlsSetup {
        provider,
        webpki,
        setup_error,
    })
}

impl TlsSetup {
    fn client_config(
        &self,
        verdict: Arc<Mutex<Option<String>>>,
    ) -> Result<Arc<rustls::ClientConfig>, HttpError> {
        let verifier = Arc::new(RecordingVerifier {
            inner: self.webpki.clone(),
            setup_error: self.setup_error.clone(),
            verdict,
            provider: self.provider.clone(),
        });
        let mut cfg = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// Runs the WebPKI checks, records their verdict, and accepts the certificate anyway (a diagnostic must see
/// what an expired or self-signed server serves). Handshake signatures are still verified.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    setup_error: Option<String>,
    verdict: Arc<Mutex<Option<String>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let error = match &self.inner {
            Some(v) => v
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .err()
                .map(|e| describe(&e)),
            None => self.setup_error.clone(),
        };
        if let Ok(mut slot) = self.verdict.lock() {
            *slot = error;
        }
        Ok(ServerCertVerified::assertion())
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

/// Short names for the verification failures a technician meets.
fn describe(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => "expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "not yet valid".into(),
            C::UnknownIssuer => "unknown issuer (self-signed or missing intermediate)".into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "not valid for this name".into()
            }
            C::Revoked => "revoked".into(),
            other => format!("{other:?}"),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunk_joins_chunks_and_ignores_extensions() {
        assert_eq!(
            dechunk(b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n"),
            b"Wikipedia"
        );
        assert_eq!(dechunk(b"zz\r\n"), b"");
        // A truncated last chunk keeps what arrived.
        assert_eq!(dechunk(b"a\r\nabc"), b"abc");
    }
}
