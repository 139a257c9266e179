//! The CWMP HTTP endpoint: an accept loop over hyper's HTTP/1.1 connections, so that each TCP connection is
//! known by an id (sessions are keyed by connection first) and its end is seen (a CPE dropping mid-session).
//!
//! Per request: the body is read up to `max_body` (413 beyond), decompressed when `Content-Encoding` is gzip or
//! deflate (bounded by the same limit), and handed to [`Acs::handle`]. Connections beyond `max_connections` get
//! `503 Retry-After` and are closed at once, so overload costs a write, not a queue.
//!
//! With `acs.tls_cert`/`acs.tls_key` the listener speaks HTTPS only (TLS 1.2 and 1.3, the handshake bounded like
//! the headers); the requests of a TLS connection are marked so that Basic authentication is accepted on them.

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_ENCODING, CONTENT_RANGE, COOKIE, HeaderValue, RANGE};
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::firmware::{FirmwareDir, FirmwareError, RangeReq, parse_range};
use super::session::{self, Acs, Request, SessionHandle};

/// How long a connection may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for open connections.
const GRACE: Duration = Duration::from_secs(5);

struct Conn {
    id: u64,
    peer: SocketAddr,
    /// The connection is HTTPS (Basic authentication is accepted only then).
    tls: bool,
    session: Mutex<Option<Arc<SessionHandle>>>,
}

impl Conn {
    fn session(&self) -> Option<Arc<SessionHandle>> {
        self.session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_session(&self, s: Option<Arc<SessionHandle>>) {
        *self.session.lock().unwrap_or_else(PoisonError::into_inner) = s;
    }
}

/// Serves CWMP on `listener` until `shutdown`; `max_connections` bounds open connections.
pub async fn serve(
    listener: TcpListener,
    acs: Arc<Acs>,
    max_connections: usize,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let tracker = TaskTracker::new();
    let conns = Arc::new(Semaphore::new(max_connections));
    let next_id = AtomicU64::new(1);
    {
        let (acs, sd) = (acs.clone(), shutdown.clone());
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = sd.cancelled() => break,
                    _ = tick.tick() => acs.sweep(),
                }
            }
        });
    }
    tracing::info!(addr = %listener.local_addr()?, "ACS listening for CWMP.");
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(err) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %err, "ACS accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            acs.stats.overload_refused.fetch_add(1, Ordering::Relaxed);
            let retry = acs.opts.retry_after_s;
            tracker.spawn(async move {
                let mut stream = stream;
                let msg = format!(
                    "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {retry}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(msg.as_bytes())).await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn {
            id: next_id.fetch_add(1, Ordering::Relaxed),
            peer,
            tls: acs.opts.tls.is_some(),
            session: Mutex::new(None),
        });
        let (acs, sd) = (acs.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _permit = permit;
            match acs.opts.tls.clone() {
                None => serve_connection(stream, &acs, &conn, &sd).await,
                Some(tls) => {
                    // The handshake gets the same bound as a request's headers; a client that is not speaking
                    // TLS (plain HTTP to an HTTPS port) fails it and only its own connection closes.
                    match tokio::time::timeout(HEADER_TIMEOUT, tls.0.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, &acs, &conn, &sd).await,
                        Ok(Err(err)) => {
                            acs.stats.malformed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(peer = %conn.peer, error = %err, "CWMP TLS handshake failed.");
                        }
                        Err(_) => {
                            tracing::debug!(peer = %conn.peer, "CWMP TLS handshake timed out.");
                        }
                    }
                }
            }
        });
    }
    tracker.close();
    if tokio::time::timeout(GRACE, tracker.wait()).await.is_err() {
        tracing::warn!("Some CWMP connections did not close within the grace period.");
    }
    Ok(())
}

/// Serves one HTTP/1.1 connection (plain or TLS) until it ends or shutdown, then closes its session.
async fn serve_connection<S>(stream: S, acs: &Arc<Acs>, conn: &Arc<Conn>, sd: &CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = {
        let (acs, conn) = (acs.clone(), conn.clone());
        hyper::service::service_fn(move |req| {
            let (acs, conn) = (acs.clone(), conn.clone());
            async move { Ok::<_, Infallible>(handle_http(&acs, &conn, req).await) }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    let served = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(served);
    tokio::select! {
        r = served.as_mut() => {
            if let Err(err) = r {
                tracing::debug!(peer = %conn.peer, error = %err, "CWMP connection ended with an error.");
            }
        }
        _ = sd.cancelled() => {
            served.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACE, served.as_mut()).await;
        }
    }
    if let Some(s) = conn.session() {
        acs.connection_closed(conn.id, &s);
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r
}

async fn handle_http(
    acs: &Acs,
    conn: &Conn,
    req: hyper::Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() == Method::GET
        && let Some(name) = req.uri().path().strip_prefix("/firmware/")
        && let Some(fw) = acs.opts.firmware.clone()
    {
        return serve_firmware(fw, name.to_owned(), req.headers().get(RANGE).cloned()).await;
    }
    if req.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "CWMP takes POST.\n");
    }
    let max = acs.opts.max_body;
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let body = match Limited::new(body, max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(err) => {
            acs.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                plain(StatusCode::PAYLOAD_TOO_LARGE, "Body too large.\n")
            } else {
                plain(StatusCode::BAD_REQUEST, "Body could not be read.\n")
            };
        }
    };
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let body = match encoding.as_deref() {
        // Most CPEs send plain bodies: taken as they are, not copied.
        None | Some("") | Some("identity") => Ok(Vec::from(body)),
        other => decompress(other, &body, max),
    };
    let body = match body {
        Ok(b) => b,
        Err(status) => {
            acs.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return plain(status, "Body could not be decompressed within the limit.\n");
        }
    };
    let cookie = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == session::COOKIE)
        .map(|(_, v)| v.trim_matches('"').to_owned());
    let request = Request {
        conn: conn.id,
        peer: conn.peer.ip(),
        tls: conn.tls,
        current: conn.session(),
        cookie,
        authorization: headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
    };
    let reply = acs.handle(request).await;
    conn.set_session(reply.session);
    let mut r = Response::new(Full::new(Bytes::from(reply.body)));
    *r.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().append(k, v);
        }
    }
    r
}

/// Serves a firmware image (whole, or the one range asked for). Images are read whole after their checksum is
/// checked, so memory per download is the image size.
async fn serve_firmware(
    fw: FirmwareDir,
    name: String,
    range: Option<HeaderValue>,
) -> Response<Full<Bytes>> {
    let loaded = tokio::task::spawn_blocking(move || fw.load(&name)).await;
    let data = match loaded {
        Ok(Ok(d)) => d,
        Ok(Err(FirmwareError::NotFound(_))) => {
            return plain(StatusCode::NOT_FOUND, "No such image.\n");
        }
        Ok(Err(err)) => {
            tracing::error!(error = %err, "Firmware image not served.");
            return plain(StatusCode::SERVICE_UNAVAILABLE, "Image unavailable.\n");
        }
        Err(_) => return plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal error.\n"),
    };
    let len = data.len() as u64;
    let mut r = match parse_range(range.as_ref().and_then(|v| v.to_str().ok()), len) {
        RangeReq::Full => Response::new(Full::new(Bytes::from(data))),
        RangeReq::Part(start, end) => {
            let slice = data
                .get(start as usize..=end as usize)
                .map(Bytes::copy_from_slice)
                .unwrap_or_default();
            let mut r = Response::new(Full::new(slice));
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                r.headers_mut().insert(CONTENT_RANGE, v);
            }
            r
        }
        RangeReq::Unsatisfiable => {
            let mut r = plain(StatusCode::RANGE_NOT_SATISFIABLE, "");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(CONTENT_RANGE, v);
            }
            r
        }
    };
    r.headers_mut().insert(
        hyper::header::ACCEPT_RANGES,
        HeaderValue::from_static("bytes"),
    );
    r
}

/// Decompresses a body by its `Content-Encoding`, refusing more than `max` bytes of output.
pub fn decompress(encoding: Option<&str>, body: &[u8], max: usize) -> Result<Vec<u8>, StatusCode> {
    let read = |mut r: Box<dyn Read + '_>| {
        let mut out = Vec::new();
        let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
        (&mut r)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|_| StatusCode::BAD_REQUEST)?;
        if out.len() > max {
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }
        Ok(out)
    };
    match encoding {
        None | Some("") | Some("identity") => Ok(body.to_vec()),
        Some("gzip") | Some("x-gzip") => read(Box::new(flate2::read::GzDecoder::new(body))),
        Some("deflate") => {
            // "deflate" is zlib by the RFC; some CPEs send raw deflate.
            read(Box::new(flate2::read::ZlibDecoder::new(body)))
                .or_else(|_| read(Box::new(flate2::read::DeflateDecoder::new(body))))
        }
        Some(_) => Err(StatusCode::UNSUPPORTED_MEDIA_TYPE),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn gzip_and_deflate_bodies_and_bombs() {
        let text = b"<a>hello</a>".repeat(10);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decompress(Some("gzip"), &gz, 1 << 20).unwrap(), text);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&text).unwrap();
        assert_eq!(
            decompress(Some("deflate"), &z.finish().unwrap(), 1 << 20).unwrap(),
            text
        );
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&text).unwrap();
        assert_eq!(
            decompress(Some("deflate"), &raw.finish().unwrap(), 1 << 20).unwrap(),
            text
        );
        // 64 MiB of zeros in a few KiB: refused at the limit.
        let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        bomb.write_all(&vec![0u8; 64 << 20]).unwrap();
        let bomb = bomb.finish().unwrap();
        assert!(bomb.len() < 200 << 10);
        assert_eq!(
            decompress(Some("gzip"), &bomb, 1 << 20),
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(
            decompress(Some("br"), b"x", 10),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
    }
}
