//! Local stand-ins for peers that cannot run here: an SMTP server (enough of RFC 5321 for one client) and an HTTP
//! receiver (Telegram Bot API, webhook endpoints, Web Push services) that records every request and answers with
//! the statuses it is told. Both bind 127.0.0.1 port 0.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A mail the SMTP stand-in received.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// `RCPT TO` addresses.
    pub rcpt: Vec<String>,
    /// The decoded `Subject`.
    pub subject: String,
    /// The decoded body.
    pub body: String,
    /// The raw message.
    pub raw: String,
}

/// The SMTP stand-in.
#[derive(Debug, Clone)]
pub struct SmtpServer {
    /// Where it listens.
    pub addr: SocketAddr,
    mails: Arc<Mutex<Vec<ReceivedMail>>>,
}

impl SmtpServer {
    /// Starts the server.
    pub async fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let m = mails.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let m = m.clone();
                tokio::spawn(async move {
                    let _ = session(sock, m).await;
                });
            }
        });
        SmtpServer { addr, mails }
    }

    /// Mails received so far.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.mails.lock().unwrap().clone()
    }

    /// Waits until at least `n` mails arrived (generous deadline; the machine is noisy).
    pub async fn wait_for(&self, n: usize) -> Vec<ReceivedMail> {
        wait_until(|| self.mails().len() >= n, "mails").await;
        self.mails()
    }
}

async fn session(
    sock: tokio::net::TcpStream,
    mails: Arc<Mutex<Vec<ReceivedMail>>>,
) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 standin ESMTP\r\n").await?;
    let mut rcpt = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_ascii_uppercase();
        if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
            w.write_all(b"250-standin\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                .await?;
        } else if cmd.starts_with("MAIL FROM") {
            rcpt.clear();
            w.write_all(b"250 OK\r\n").await?;
        } else if cmd.starts_with("RCPT TO") {
            let addr = line
                .trim_end()
                .split_once(':')
                .map(|(_, a)| a.trim().trim_matches(['<', '>']).to_owned())
                .unwrap_or_default();
            rcpt.push(addr);
            w.write_all(b"250 OK\r\n").await?;
        } else if cmd == "DATA" {
            w.write_all(b"354 go ahead\r\n").await?;
            let mut raw = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let l = line.strip_prefix('.').unwrap_or(&line);
                raw.push_str(l);
            }
            let (subject, body) = parse_mail(&raw);
            mails.lock().unwrap().push(ReceivedMail {
                rcpt: rcpt.clone(),
                subject,
                body,
                raw,
            });
            w.write_all(b"250 queued\r\n").await?;
        } else if cmd == "QUIT" {
            w.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else if cmd == "RSET" || cmd == "NOOP" {
            w.write_all(b"250 OK\r\n").await?;
        } else {
            w.write_all(b"502 not implemented\r\n").await?;
        }
    }
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?...?=` and `=?utf-8?q?...?=`).
fn decode_words(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("=?") {
        let before = &rest[..start];
        if !before.trim().is_empty() {
            out.push_str(before);
        }
        let word = &rest[start + 2..];
        let parts: Vec<&str> = word.splitn(3, '?').collect();
        if parts.len() < 3 {
            out.push_str(&rest[start..]);
            return out;
        }
        let (enc, tail) = (parts[1], parts[2]);
        let Some(end) = tail.find("?=") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let text = &tail[..end];
        let bytes = if enc.eq_ignore_ascii_case("b") {
            STANDARD.decode(text).unwrap_or_default()
        } else {
            let mut b = Vec::new();
            let t = text.replace('_', " ");
            let tb = t.as_bytes();
            let mut i = 0;
            while i < tb.len() {
                if tb[i] == b'='
                    && let Some(Ok(v)) = t.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16))
                {
                    b.push(v);
                    i += 3;
                    continue;
                }
                b.push(tb[i]);
                i += 1;
            }
            b
        };
        out.push_str(&String::from_utf8_lossy(&bytes));
        rest = &tail[end + 2..];
    }
    out.push_str(rest);
    out
}

fn parse_mail(raw: &str) -> (String, String) {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
    // Unfold headers.
    let mut headers: Vec<String> = Vec::new();
    for l in head.lines() {
        // Unfolding removes the line break only (RFC 5322 section 2.2.3).
        if (l.starts_with(' ') || l.starts_with('\t'))
            && let Some(last) = headers.last_mut()
        {
            last.push_str(l);
            continue;
        }
        headers.push(l.to_owned());
    }
    let header = |name: &str| {
        headers
            .iter()
            .find_map(|h| {
                h.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let subject = decode_words(&header("Subject"));
    let body = if header("Content-Transfer-Encoding").eq_ignore_ascii_case("base64") {
        let joined: String = body.split_whitespace().collect();
        String::from_utf8_lossy(&STANDARD.decode(joined).unwrap_or_default()).into_owned()
    } else {
        body.to_owned()
    };
    (subject, body)
}

/// A request the HTTP stand-in received.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub uri: Uri,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Captured {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

#[derive(Debug)]
struct Behaviour {
    queued: VecDeque<u16>,
    default: u16,
}

/// The HTTP stand-in: records requests, answers the queued statuses first, then the default status.
#[derive(Debug, Clone)]
pub struct HttpReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Captured>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl HttpReceiver {
    /// Starts a receiver answering `default` (after `queued`).
    pub async fn start(queued: &[u16], default: u16) -> HttpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(Behaviour {
            queued: queued.iter().copied().collect(),
            default,
        }));
        let (rq, bh) = (requests.clone(), behaviour.clone());
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (rq, bh) = (rq.clone(), bh.clone());
                async move {
                    rq.lock().unwrap().push(Captured {
                        method,
                        uri,
                        headers,
                        body,
                        at: std::time::Instant::now(),
                    });
                    let status = {
                        let mut b = bh.lock().unwrap();
                        let d = b.default;
                        b.queued.pop_front().unwrap_or(d)
                    };
                    let status = StatusCode::from_u16(status).unwrap();
                    (status, r#"{"ok": true}"#)
                }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpReceiver {
            addr,
            requests,
            behaviour,
        }
    }

    /// The base URL, `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests so far.
    pub fn requests(&self) -> Vec<Captured> {
        self.requests.lock().unwrap().clone()
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Changes the default answer.
    pub fn answer(&self, status: u16) {
        self.behaviour.lock().unwrap().default = status;
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Captured> {
        wait_until(|| self.requests().len() >= n, "HTTP requests").await;
        self.requests()
    }
}

/// Polls `cond` until it holds; panics after a generous deadline (not a timing assertion: a hang guard).
pub async fn wait_until(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
