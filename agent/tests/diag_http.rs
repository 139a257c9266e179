//! `octoisp-agent http` against local servers: HTTPS with a certificate from a test CA, a self-signed one and
//! an expired one (reported, not fatal), and plain HTTP with a redirect and content checks.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A certificate chain and key for a server on 127.0.0.1.
struct ServerCert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn leaf_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap_or_else(|e| panic!("params: {e}"));
    p.distinguished_name.push(DnType::CommonName, cn);
    p
}

fn key_der(k: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(k.serialize_der()))
}

/// (CA PEM, certificate signed by the CA, self-signed certificate, expired certificate signed by the CA).
fn certificates() -> (String, ServerCert, ServerCert, ServerCert) {
    let ca_key = KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Octo Test CA");
    let ca_cert = ca
        .self_signed(&ca_key)
        .unwrap_or_else(|e| panic!("ca: {e}"));
    let issuer = Issuer::new(ca, ca_key);

    let k1 = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let valid = leaf_params("valid.octo.test")
        .signed_by(&k1, &issuer)
        .unwrap_or_else(|e| panic!("{e}"));

    let k2 = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let own = leaf_params("self.octo.test")
        .self_signed(&k2)
        .unwrap_or_else(|e| panic!("{e}"));

    let k3 = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let mut old = leaf_params("expired.octo.test");
    old.not_before = rcgen::date_time_ymd(2020, 1, 1);
    old.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = old
        .signed_by(&k3, &issuer)
        .unwrap_or_else(|e| panic!("{e}"));

    (
        ca_cert.pem(),
        ServerCert {
            chain: vec![valid.der().clone(), ca_cert.der().clone()],
            key: key_der(&k1),
        },
        ServerCert {
            chain: vec![own.der().clone()],
            key: key_der(&k2),
        },
        ServerCert {
            chain: vec![expired.der().clone(), ca_cert.der().clone()],
            key: key_der(&k3),
        },
    )
}

/// Serves `routes` (path → raw response) over HTTP, or HTTPS when `cert` is given; returns the address.
async fn serve(cert: Option<ServerCert>, routes: Vec<(&'static str, String)>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let acceptor = cert.map(|c| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(c.chain, c.key))
            .unwrap_or_else(|e| panic!("server config: {e}"));
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    });
    let routes = Arc::new(routes);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, routes) = (acceptor.clone(), routes.clone());
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(tcp).await {
                            answer(tls, &routes).await;
                        }
                    }
                    None => answer(tcp, &routes).await,
                }
            });
        }
    });
    addr
}

async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    routes: &[(&str, String)],
) {
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    let path = text.split(' ').nth(1).unwrap_or("/").to_owned();
    let resp = routes
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, r)| r.clone())
        .unwrap_or_else(|| "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned());
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

fn ok_body(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

async fn agent(args: Vec<String>) -> (bool, serde_json::Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_octoisp-agent"))
        .arg("http")
        .args(&args)
        .arg("--json")
        .output()
        .await
        .unwrap_or_else(|e| panic!("run agent: {e}"));
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "http {args:?}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

#[tokio::test]
async fn https_reports_valid_self_signed_and_expired_certificates() {
    let (ca_pem, valid, own, expired) = certificates();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap_or_else(|e| panic!("{e}"));
    let ca = ca_file.to_string_lossy().into_owned();
    let routes = || vec![("/", ok_body("hello from octo"))];
    let v = serve(Some(valid), routes()).await;
    let s = serve(Some(own), routes()).await;
    let e = serve(Some(expired), routes()).await;

    let (ok, r) = agent(vec![
        format!("https://{v}/"),
        "--cacert".into(),
        ca.clone(),
        "--expect-content".into(),
        "hello".into(),
    ])
    .await;
    assert!(ok, "{r}");
    let resp = &r["responses"][0];
    assert_eq!(resp["status"], 200, "{r}");
    assert_eq!(resp["size"], 15, "{r}");
    let tls = &resp["tls"];
    assert!(tls["verify_error"].is_null(), "{r}");
    assert_eq!(tls["version"], "TLSv1_3", "{r}");
    assert!(
        tls["cipher"]
            .as_str()
            .is_some_and(|c| c.starts_with("TLS13_")),
        "{r}"
    );
    assert_eq!(tls["chain"].as_array().map(Vec::len), Some(2), "{r}");
    assert!(
        tls["chain"][0]["subject"]
            .as_str()
            .is_some_and(|s| s.contains("valid.octo.test")),
        "{r}"
    );
    assert!(
        tls["chain"][0]["issuer"]
            .as_str()
            .is_some_and(|s| s.contains("Octo Test CA")),
        "{r}"
    );
    assert!(
        tls["chain"][0]["days_to_expiry"]
            .as_i64()
            .is_some_and(|d| d > 300),
        "{r}"
    );
    let t = &resp["timings"];
    for phase in ["dns_ms", "connect_ms", "tls_ms", "first_byte_ms"] {
        assert!(
            t[phase]
                .as_f64()
                .is_some_and(|p| p >= 0.0 && p <= t["total_ms"].as_f64().unwrap_or(0.0)),
            "{phase}: {t}"
        );
    }

    // Without the test CA the same server is reported as untrusted, and the check still completes.
    let (_, r) = agent(vec![format!("https://{v}/")]).await;
    assert_eq!(r["responses"][0]["status"], 200, "{r}");
    assert!(
        r["responses"][0]["tls"]["verify_error"]
            .as_str()
            .is_some_and(|m| m.contains("unknown issuer")),
        "{r}"
    );

    let (_, r) = agent(vec![format!("https://{s}/"), "--cacert".into(), ca.clone()]).await;
    let tls = &r["responses"][0]["tls"];
    assert_eq!(r["responses"][0]["status"], 200, "{r}");
    assert!(
        tls["verify_error"]
            .as_str()
            .is_some_and(|m| m.contains("unknown issuer")),
        "{r}"
    );
    assert_eq!(tls["chain"][0]["self_signed"], true, "{r}");

    let (_, r) = agent(vec![format!("https://{e}/"), "--cacert".into(), ca]).await;
    let tls = &r["responses"][0]["tls"];
    assert_eq!(r["responses"][0]["status"], 200, "{r}");
    assert_eq!(tls["verify_error"], "expired", "{r}");
    assert!(
        tls["chain"][0]["days_to_expiry"]
            .as_i64()
            .is_some_and(|d| d < 0),
        "{r}"
    );
}

#[tokio::test]
async fn http_redirects_and_expectations() {
    let routes = vec![
        ("/old", "HTTP/1.1 301 Moved Permanently\r\nLocation: /new\r\nContent-Length: 0\r\n\r\n".to_owned()),
        ("/new", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_owned()),
    ];
    let a = serve(None, routes).await;
    let (ok, r) = agent(vec![format!("http://{a}/old")]).await;
    assert!(ok, "{r}");
    assert_eq!(r["status"], 301, "{r}");
    assert_eq!(r["responses"].as_array().map(Vec::len), Some(1), "{r}");

    let (ok, r) = agent(vec![
        format!("http://{a}/old"),
        "-L".into(),
        "--expect-status".into(),
        "200".into(),
        "--expect-content".into(),
        "hello world".into(),
    ])
    .await;
    assert!(ok, "{r}");
    assert_eq!(r["responses"].as_array().map(Vec::len), Some(2), "{r}");
    assert_eq!(r["responses"][1]["size"], 11, "{r}");
    assert!(r["responses"][1]["tls"].is_null(), "{r}");

    let (ok, r) = agent(vec![
        format!("http://{a}/missing"),
        "--expect-status".into(),
        "200".into(),
    ])
    .await;
    assert!(!ok, "a failed expectation exits non-zero: {r}");
    assert_eq!(r["status"], 404, "{r}");
    assert_eq!(r["ok"], false, "{r}");
}

#[test]
fn unparsable_urls_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_octoisp-agent"))
        .args(["http", "ftp://example.invalid/"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad URL"),
        "{out:?}"
    );
}
