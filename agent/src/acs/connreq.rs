//! Connection Requests (TR-069 3.2.2): an HTTP GET to the ConnectionRequestURL a CPE reported, answered by the
//! CPE with a challenge (Digest) and, once authenticated, 200 or 204; the CPE then opens a session with a
//! `6 CONNECTION REQUEST` Inform, in which the device's queued tasks run.
//!
//! A CPE behind NAT (TR-111 Part 2) reports a private ConnectionRequestURL the agent cannot reach, and a
//! `UDPConnectionRequestAddress` (the public `host:port` its STUN binding maps to). The request then goes as a UDP
//! datagram holding an HTTP GET whose query is signed with HMAC-SHA1 over `ts id un cn` keyed by the Connection
//! Request password ([`udp_message`]); UDP has no answer, so it is sent [`UDP_COPIES`] times, which the CPE
//! de-duplicates by `id`. [`request`] picks the path: UDP first when the URL's host is not the address the CPE
//! informs from (NAT) and a UDP address is known; otherwise HTTP, falling back to UDP when HTTP cannot connect.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::auth;

/// Why a Connection Request failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnReqError {
    /// The URL is not `http://host[:port]/path`.
    #[error("bad Connection Request URL {0:?}")]
    Url(String),
    /// The CPE could not be reached.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The CPE refused the credentials or answered something else.
    #[error("{url} answered {status}")]
    Refused {
        /// The URL.
        url: String,
        /// Its status.
        status: u16,
    },
}

async fn get(
    uri: &Uri,
    authorization: Option<&str>,
) -> Result<(StatusCode, Option<String>), String> {
    let host = uri.host().ok_or("no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::get(path).header("host", uri.authority().map_or(host, |a| a.as_str()));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((resp.status(), challenge))
}

/// Sends a Connection Request to `url` with `credentials`, within `timeout`. Returns the final status.
pub async fn send(
    url: &str,
    credentials: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<u16, ConnReqError> {
    let uri: Uri = url.parse().map_err(|_| ConnReqError::Url(url.into()))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(ConnReqError::Url(url.into()));
    }
    let unreachable = |reason: String| ConnReqError::Unreachable {
        url: url.into(),
        reason,
    };
    let attempt = async {
        let (status, challenge) = get(&uri, None).await.map_err(unreachable)?;
        if status != StatusCode::UNAUTHORIZED {
            return Ok(status);
        }
        let (Some(challenge), Some((user, pass))) = (challenge, credentials) else {
            return Ok(status);
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let Some(authz) = auth::digest_authorization(&challenge, user, pass, "GET", path, 1) else {
            return Ok(status);
        };
        let (status, _) = get(&uri, Some(&authz)).await.map_err(unreachable)?;
        Ok(status)
    };
    let status =
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| ConnReqError::Unreachable {
                url: url.into(),
                reason: "timed out".into(),
            })??;
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(ConnReqError::Refused {
            url: url.into(),
            status: status.as_u16(),
        })
    }
}

/// Copies of a UDP Connection Request (TR-111 asks for several: UDP may lose one).
pub const UDP_COPIES: u32 = 3;
/// Pause between copies.
const UDP_GAP: Duration = Duration::from_millis(100);

/// How a Connection Request reached the CPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Over HTTP; the CPE answered this status.
    Http(u16),
    /// Over UDP (TR-111), this many copies sent; UDP has no answer.
    Udp(u32),
}

impl std::fmt::Display for Delivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Delivered::Http(s) => write!(f, "answered {s}"),
            Delivered::Udp(n) => write!(f, "sent over UDP ({n} copies, no answer expected)"),
        }
    }
}

/// HMAC-SHA1 (RFC 2104), the signature TR-111 specifies.
pub fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    use sha1::{Digest, Sha1};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..20].copy_from_slice(&Sha1::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha1::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let inner = inner.finalize();
    let mut outer = Sha1::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// The datagram of a UDP Connection Request (TR-111 Part 2): `GET http://ADDRESS?ts=&id=&un=&cn=&sig= HTTP/1.1`.
/// `sig` is hex HMAC-SHA1 keyed by the password over the concatenation of `ts`, `id`, `un` and `cn`.
pub fn udp_message(
    address: &str,
    ts: u64,
    id: u64,
    user: &str,
    password: &str,
    cnonce: &str,
) -> String {
    let sig = hex::encode(hmac_sha1(
        password.as_bytes(),
        format!("{ts}{id}{user}{cnonce}").as_bytes(),
    ));
    let un = encode_query(user);
    format!(
        "GET http://{address}?ts={ts}&id={id}&un={un}&cn={cnonce}&sig={sig} HTTP/1.1\r\nHost: {address}\r\n\r\n"
    )
}

fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends a UDP Connection Request to `address` (`host:port`, `[v6]:port`; port 80 when absent).
pub async fn send_udp(address: &str, credentials: (&str, &str)) -> Result<u32, ConnReqError> {
    let unreachable = |reason: String| ConnReqError::Unreachable {
        url: format!("udp://{address}"),
        reason,
    };
    let target = if address
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok())
        || address.starts_with('[') && address.contains("]:")
    {
        address.to_owned()
    } else {
        format!("{address}:80")
    };
    let addr = tokio::net::lookup_host(target.as_str())
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable("no address".into()))?;
    let bind: std::net::SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let ts = u64::try_from(super::now_ms() / 1000).unwrap_or(0);
    let id: u64 = rand::random::<u32>().into();
    let cnonce = hex::encode(rand::random::<[u8; 8]>());
    let msg = udp_message(address, ts, id, credentials.0, credentials.1, &cnonce);
    for i in 0..UDP_COPIES {
        if i > 0 {
            tokio::time::sleep(UDP_GAP).await;
        }
        sock.send_to(msg.as_bytes(), addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
    }
    Ok(UDP_COPIES)
}

/// Reaches a CPE by the best path: `url` its ConnectionRequestURL (may be empty), `informs_from` the address
/// its Informs come from, `udp_address` its `UDPConnectionRequestAddress` (may be empty). UDP needs credentials
/// (the signature is keyed by the password).
pub async fn request(
    url: &str,
    informs_from: &str,
    udp_address: &str,
    credentials: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<Delivered, ConnReqError> {
    let udp = (!udp_address.is_empty())
        .then_some(udp_address)
        .zip(credentials);
    let url_host = url
        .parse::<Uri>()
        .ok()
        .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_owned()));
    let behind_nat = match (
        url_host.as_deref().map(str::parse::<std::net::IpAddr>),
        informs_from.parse::<std::net::IpAddr>(),
    ) {
        (Some(Ok(host)), Ok(from)) => host != from,
        _ => false,
    };
    if let Some((addr, creds)) = udp
        && (url.is_empty() || behind_nat)
    {
        return send_udp(addr, creds).await.map(Delivered::Udp);
    }
    if url.is_empty() {
        return Err(ConnReqError::Url(
            "no ConnectionRequestURL, and no UDPConnectionRequestAddress with credentials".into(),
        ));
    }
    match send(url, credentials, timeout).await {
        Ok(status) => Ok(Delivered::Http(status)),
        Err(ConnReqError::Unreachable { .. }) if udp.is_some() => {
            let (addr, creds) = udp.unwrap_or_default();
            send_udp(addr, creds).await.map(Delivered::Udp)
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha1_matches_rfc_2202() {
        assert_eq!(
            hex::encode(hmac_sha1(&[0x0b; 20], b"Hi There")),
            "b617318655057264e28bc0b6fb378c8ef146be00"
        );
        assert_eq!(
            hex::encode(hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        // A key longer than the block is hashed first.
        assert_eq!(
            hex::encode(hmac_sha1(
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
    }

    #[test]
    fn udp_message_is_the_signed_get_of_tr111() {
        let m = udp_message(
            "203.0.113.7:4000",
            1_700_000_000,
            42,
            "cpe user",
            "secret",
            "abcd",
        );
        let sig = hex::encode(hmac_sha1(b"secret", b"170000000042cpe userabcd"));
        assert_eq!(
            m,
            format!(
                "GET http://203.0.113.7:4000?ts=1700000000&id=42&un=cpe%20user&cn=abcd&sig={sig} HTTP/1.1\r\nHost: 203.0.113.7:4000\r\n\r\n"
            )
        );
    }
}
