//! How CPEs and the ACS reach each other: the CWMP listener over HTTPS (`acs.tls_cert` / `acs.tls_key`) — an
//! Inform over TLS with Basic authentication, Basic refused over plain HTTP, a client that does not speak TLS
//! losing only its own connection — and UDP Connection Requests (TR-111) to a CPE behind NAT.

mod acs_support;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use octoisp_agent::acs::AcsSection;
use octoisp_agent::acs::connreq::hmac_sha1;
use octoisp_agent::acs::cwmp::{
    self, Body, CwmpVersion, DeviceId, Envelope, EventStruct, Inform, ParameterValue,
};
use octoisp_agent::acs::session::AcsOptions;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const USER: &str = "pop-user";
const PASS: &str = "pop-secret";

fn inform(serial: &str) -> Vec<u8> {
    inform_with(serial, Vec::new())
}

fn inform_with(serial: &str, parameters: Vec<ParameterValue>) -> Vec<u8> {
    cwmp::build(&Envelope::new(
        CwmpVersion(0),
        Some("1".into()),
        Body::Inform(Inform {
            device_id: DeviceId {
                manufacturer: "Huawei Technologies Co., Ltd".into(),
                oui: "00259E".into(),
                product_class: "EG8145V5".into(),
                serial_number: serial.into(),
            },
            events: vec![EventStruct {
                code: "1 BOOT".into(),
                command_key: String::new(),
            }],
            max_envelopes: 1,
            current_time: "2026-01-01T00:00:00Z".into(),
            retry_count: 0,
            parameters,
        }),
    ))
}

fn basic() -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"))
    )
}

/// Posts an Inform with Basic credentials on `io`; returns the status and the body.
async fn post_inform<S>(io: S, serial: &str) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    post(io, inform(serial), Some(basic())).await
}

async fn post<S>(io: S, body: Vec<u8>, authorization: Option<String>) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::post("/")
        .header("host", "acs.example")
        .header("content-type", "text/xml");
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

struct Pki {
    _dir: tempfile::TempDir,
    section: AcsSection,
    ca: CertificateDer<'static>,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["acs.example".into()]).unwrap();
    let cert = dir.path().join("acs.pem");
    let key = dir.path().join("acs.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let section = AcsSection {
        username: Some(USER.into()),
        password: Some(PASS.into()),
        tls_cert: Some(cert.clone()),
        tls_key: Some(key),
        ..AcsSection::default()
    };
    let ca = CertificateDer::from_pem_file(&cert).unwrap();
    Pki {
        _dir: dir,
        section,
        ca,
    }
}

async fn tls_connect(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(octoisp_agent::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("acs.example").unwrap(), tcp)
        .await
        .expect("TLS handshake with the ACS")
}

#[tokio::test]
async fn inform_over_tls_with_basic_auth() {
    let pki = pki();
    let opts = AcsOptions::from_section(&pki.section).unwrap();
    assert!(opts.tls.is_some());
    let acs = acs_support::start(opts).await;

    // A client that speaks plain HTTP to the HTTPS port gets nothing useful, and the listener keeps serving.
    let mut plain = TcpStream::connect(acs.addr).await.unwrap();
    plain
        .write_all(b"POST / HTTP/1.1\r\nHost: acs\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        plain.read_to_end(&mut buf),
    )
    .await;
    assert!(!String::from_utf8_lossy(&buf).contains("InformResponse"));

    // TLS 1.2 (what most CPEs speak) with Basic: the Inform is answered and the CPE registered.
    let tls = tls_connect(acs.addr, &pki.ca).await;
    let (status, body) = post_inform(tls, "TLS0001").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("InformResponse"), "{body}");
    let id = octoisp_agent::acs::device_id("00259E", "EG8145V5", "TLS0001");
    assert!(
        acs.acs.store.device(&id).unwrap().is_some(),
        "the CPE was registered"
    );
}

#[tokio::test]
async fn basic_is_refused_over_plain_http() {
    let mut section = pki().section;
    section.tls_cert = None;
    section.tls_key = None;
    let acs = acs_support::start(AcsOptions::from_section(&section).unwrap()).await;
    let tcp = TcpStream::connect(acs.addr).await.unwrap();
    let (status, _) = post_inform(tcp, "PLAIN0001").await;
    assert_eq!(
        status, 401,
        "Basic credentials travel in clear over HTTP: refused"
    );
    let id = octoisp_agent::acs::device_id("00259E", "EG8145V5", "PLAIN0001");
    assert!(acs.acs.store.device(&id).unwrap().is_none());
}

#[test]
fn half_or_broken_tls_settings_are_refused_with_the_key_named() {
    let mut section = pki().section;
    section.tls_key = None;
    let err = AcsOptions::from_section(&section).unwrap_err();
    assert!(err.contains("acs.tls_cert and acs.tls_key"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let mut section = pki().section;
    section.tls_cert = Some(bogus.clone());
    let err = AcsOptions::from_section(&section).unwrap_err();
    assert!(
        err.contains("acs.tls_cert") && err.contains("bogus.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn a_cpe_behind_nat_gets_a_signed_udp_connection_request() {
    let opts = AcsOptions {
        conn_req_credentials: Some(("cr user".into(), "cr-secret".into())),
        ..AcsOptions::default()
    };
    let acs = acs_support::start(opts).await;
    // The CPE's "public" UDP endpoint (what its STUN binding maps to).
    let cpe_udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_addr = cpe_udp.local_addr().unwrap().to_string();
    let param = |name: &str, value: &str| ParameterValue {
        name: name.into(),
        value: value.into(),
        xsd_type: "xsd:string".into(),
    };
    // A private ConnectionRequestURL (not the address it informs from: behind NAT) and its UDP address.
    let body = inform_with(
        "NAT0001",
        vec![
            param(
                "InternetGatewayDevice.ManagementServer.ConnectionRequestURL",
                "http://192.168.1.1:7547/cr",
            ),
            param(
                "InternetGatewayDevice.ManagementServer.UDPConnectionRequestAddress",
                &udp_addr,
            ),
        ],
    );
    let (status, reply) = post(TcpStream::connect(acs.addr).await.unwrap(), body, None).await;
    assert_eq!(status, 200, "{reply}");
    let id = octoisp_agent::acs::device_id("00259E", "EG8145V5", "NAT0001");

    assert_eq!(
        acs.acs.request_connection(&id).await,
        Ok(202),
        "sent over UDP"
    );
    let mut seen = Vec::new();
    let mut buf = [0u8; 2048];
    while seen.len() < 3 {
        let (n, _) = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            cpe_udp.recv_from(&mut buf),
        )
        .await
        .expect("three copies of the UDP Connection Request")
        .unwrap();
        seen.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    assert!(
        seen.iter().all(|m| *m == seen[0]),
        "copies are identical, so the CPE de-duplicates them"
    );
    let line = seen[0].lines().next().unwrap();
    let query = line
        .strip_prefix(&format!("GET http://{udp_addr}?"))
        .and_then(|q| q.strip_suffix(" HTTP/1.1"))
        .unwrap_or_else(|| panic!("not a TR-111 request line: {line}"));
    let field = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} missing in {query}"))
            .to_owned()
    };
    assert_eq!(field("un"), "cr%20user");
    let signed = format!("{}{}{}{}", field("ts"), field("id"), "cr user", field("cn"));
    assert_eq!(
        field("sig"),
        hex::encode(hmac_sha1(b"cr-secret", signed.as_bytes()))
    );
}
