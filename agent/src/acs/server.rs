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
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{
    ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, COOKIE,
    HeaderValue, RANGE,
};
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncSeekExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::firmware::{CHUNK, FirmwareDir, FirmwareError, RangeReq, parse_range};
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

/// Connections the kernel may hold for the ACS before it accepts them (capped by `net.core.somaxconn`).
/// A boot storm opens thousands at once: with tokio's default of 1,024, SYNs beyond it are dropped and the
/// CPE retries only after a second or more (measured: 15 % of the sessions of a 2,000-CPE light run).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the CWMP listener on `addr` with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
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

fn plain(status: StatusCode, text: &'static str) -> Response<AcsBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(text.as_bytes()))));
    *r.status_mut() = status;
    r
}

async fn handle_http(acs: &Acs, conn: &Conn, req: hyper::Request<Incoming>) -> Response<AcsBody> {
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
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(reply.body))));
    *r.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().append(k, v);
        }
    }
    r
}

/// Serves a firmware image (whole, or the one range asked for), streamed from the open file: memory per
/// download is one [`CHUNK`] whatever the image size, and hyper asks for the next chunk only once the previous
/// one is written, so a slow CPE holds back only its own reads.
async fn serve_firmware(
    fw: FirmwareDir,
    name: String,
    range: Option<HeaderValue>,
) -> Response<AcsBody> {
    let opened = tokio::task::spawn_blocking(move || fw.open(&name)).await;
    let image = match opened {
        Ok(Ok(image)) => image,
        Ok(Err(FirmwareError::NotFound(_))) => {
            return plain(StatusCode::NOT_FOUND, "No such image.\n");
        }
        Ok(Err(err)) => {
            tracing::error!(error = %err, "Firmware image not served.");
            return plain(StatusCode::SERVICE_UNAVAILABLE, "Image unavailable.\n");
        }
        Err(_) => return plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal error.\n"),
    };
    let len = image.len;
    let (status, start, count) =
        match parse_range(range.as_ref().and_then(|v| v.to_str().ok()), len) {
            RangeReq::Full => (StatusCode::OK, 0, len),
            RangeReq::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
            RangeReq::Unsatisfiable => {
                let mut r = plain(StatusCode::RANGE_NOT_SATISFIABLE, "");
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    r.headers_mut().insert(CONTENT_RANGE, v);
                }
                r.headers_mut()
                    .insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
                return r;
            }
        };
    let mut file = tokio::fs::File::from_std(image.file);
    if start > 0
        && let Err(err) = file.seek(std::io::SeekFrom::Start(start)).await
    {
        tracing::error!(error = %err, "Firmware image not served: seek failed.");
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal error.\n");
    }
    let mut r = Response::new(Either::Right(FileBody {
        file,
        remaining: count,
        buf: Vec::new(),
    }));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(CONTENT_LENGTH, HeaderValue::from(count));
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1))
    {
        headers.insert(CONTENT_RANGE, v);
    }
    r
}

/// The body of every answer of the listener: CWMP and errors in memory, firmware streamed from a file.
type AcsBody = Either<Full<Bytes>, FileBody>;

/// `remaining` bytes of an open file, read one [`CHUNK`] at a time as hyper asks for them.
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    /// Read buffer, kept across a read that is not ready yet.
    buf: Vec<u8>,
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.remaining).map_or(CHUNK, |r| r.min(CHUNK));
        if this.buf.len() != want {
            this.buf.resize(want, 0);
        }
        let mut read = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.file).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(err)) => Poll::Ready(Some(Err(err))),
            Poll::Ready(Ok(())) if read.filled().is_empty() => {
                // The file is shorter than it was when opened: end the response short rather than hang.
                this.remaining = 0;
                Poll::Ready(Some(Err(std::io::ErrorKind::UnexpectedEof.into())))
            }
            Poll::Ready(Ok(())) => {
                let chunk = Bytes::copy_from_slice(read.filled());
                this.remaining -= chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
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

    /// Raises the soft limit on open files to `want` (or the hard limit); returns the new soft limit.
    #[allow(unsafe_code)]
    fn raise_nofile(want: u64) -> u64 {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a live, writable `rlimit` for the whole call.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
            return 0;
        }
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            // SAFETY: as above; a refusal leaves the limit unchanged.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) };
            // SAFETY: as above.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) };
        }
        lim.rlim_cur
    }

    #[test]
    fn the_listener_holds_a_boot_storm_of_connections_until_they_are_accepted() {
        // 1,500 CPEs connect at once while the ACS is busy (nothing accepts here): every handshake completes
        // and waits in the queue; none is dropped to be retried a second or more later.
        const CPES: usize = 1500;
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if somaxconn < CPES || raise_nofile(CPES as u64 + 100) < CPES as u64 + 100 {
            eprintln!("SKIP: somaxconn {somaxconn} or the open-file limit is below {CPES}");
            return;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let listener = rt
            .block_on(async { bind(([127, 0, 0, 1], 0).into()) })
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::with_capacity(CPES);
        for i in 0..CPES {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Ok(s) => held.push(s),
                Err(e) => panic!("connection {} of {CPES} was not taken: {e}", i + 1),
            }
        }
        assert_eq!(held.len(), CPES);
    }

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
