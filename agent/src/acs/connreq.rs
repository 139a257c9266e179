//! Connection Requests (TR-069 3.2.2): an HTTP GET to the ConnectionRequestURL a CPE reported, answered by the
//! CPE with a challenge (Digest) and, once authenticated, 200 or 204; the CPE then opens a session with a
//! `6 CONNECTION REQUEST` Inform, in which the device's queued tasks run.

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
