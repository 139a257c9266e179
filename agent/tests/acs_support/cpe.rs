//! A simulated CPE: speaks CWMP to an ACS over HTTP/1.1 the way real CPEs do, quirks included, and keeps a
//! parameter tree that the ACS's RPCs read and write. Used by the ACS tests (`agent/tests/acs*.rs`) and by the
//! load simulator (`agent/examples/cpe_sim.rs`).
//!
//! Quirks, each a field of [`CpeConfig`]: cookies ignored, sent back plainly, or sent back from a
//! `Set-Cookie` with `Path=/`; the `cwmp-1-0` or `cwmp-1-2` namespace; SOAP prefixes other than `soap-env`;
//! Digest authentication; three forms of empty POST; gzip bodies; a new TCP connection per request; dropping
//! the connection after N RPCs.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use octoisp_agent::acs::auth;
use octoisp_agent::acs::cwmp::{
    self, Body, CwmpVersion, DeviceId, Envelope, EventStruct, Fault, Inform, ParameterValue,
    SetParameterValuesFault, TransferComplete, TransferResponse,
};
use tokio::net::TcpStream;

/// How the CPE treats the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cookies {
    /// Never sends one back (keeps the connection instead).
    Ignore,
    /// Sends back `name=value`.
    Echo,
}

/// How the CPE says "I have nothing more to ask".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyPost {
    /// `Content-Length: 0`.
    ZeroLength,
    /// Chunked encoding with no data.
    Chunked,
    /// A body of whitespace.
    Whitespace,
}

/// A CPE's identity and habits.
#[derive(Debug, Clone)]
pub struct CpeConfig {
    /// Manufacturer.
    pub manufacturer: String,
    /// OUI.
    pub oui: String,
    /// Product class.
    pub product_class: String,
    /// Serial.
    pub serial: String,
    /// CWMP namespace minor version.
    pub ns: u8,
    /// SOAP envelope prefix (`soap-env`, `SOAP-ENV`, `soapenv`, `s`).
    pub soap_prefix: String,
    /// Cookie habit.
    pub cookies: Cookies,
    /// Empty POST form.
    pub empty_post: EmptyPost,
    /// Digest credentials.
    pub credentials: Option<(String, String)>,
    /// gzip request bodies.
    pub gzip: bool,
    /// Open a new TCP connection for every request (needs cookies).
    pub new_connection_per_request: bool,
    /// Close the connection instead of answering the Nth RPC (1-based).
    pub drop_at_rpc: Option<usize>,
    /// Parameters sent in every Inform.
    pub inform_params: Vec<String>,
}

impl CpeConfig {
    /// A Huawei-like ONT speaking `cwmp-1-0` with `SOAP-ENV` prefixes, no cookies.
    pub fn huawei(serial: &str) -> Self {
        Self {
            manufacturer: "Huawei Technologies Co., Ltd".into(),
            oui: "00259E".into(),
            product_class: "EG8145V5".into(),
            serial: serial.into(),
            ns: 0,
            soap_prefix: "SOAP-ENV".into(),
            cookies: Cookies::Ignore,
            empty_post: EmptyPost::ZeroLength,
            credentials: None,
            gzip: false,
            new_connection_per_request: false,
            drop_at_rpc: None,
            inform_params: vec![
                "InternetGatewayDevice.DeviceInfo.SoftwareVersion".into(),
                "InternetGatewayDevice.DeviceInfo.HardwareVersion".into(),
                "InternetGatewayDevice.ManagementServer.ConnectionRequestURL".into(),
                "InternetGatewayDevice.ManagementServer.ParameterKey".into(),
            ],
        }
    }

    /// A ZTE-like router speaking `cwmp-1-2` with `soapenv` prefixes and cookies, a space in its product class.
    pub fn zte(serial: &str) -> Self {
        Self {
            manufacturer: "ZTE".into(),
            oui: "C0B101".into(),
            product_class: "ZXHN H199A".into(),
            ns: 2,
            soap_prefix: "soapenv".into(),
            cookies: Cookies::Echo,
            empty_post: EmptyPost::Chunked,
            ..Self::huawei(serial)
        }
    }

    /// The device id the ACS gives it.
    pub fn device_id(&self) -> String {
        octoisp_agent::acs::device_id(&self.oui, &self.product_class, &self.serial)
    }
}

/// What happened in one session, as the CPE saw it.
#[derive(Debug, Default, Clone)]
pub struct SessionLog {
    /// HTTP status of the Inform's answer.
    pub inform_status: u16,
    /// The answer to the Inform (parsed), if any.
    pub inform_answer: Option<Envelope>,
    /// Methods of the RPCs the ACS sent, in order.
    pub rpcs: Vec<String>,
    /// The session ended with a 204.
    pub completed: bool,
    /// The CPE dropped the connection on purpose.
    pub dropped: bool,
    /// The `Set-Cookie` received, if any.
    pub set_cookie: Option<String>,
    /// `Retry-After` of a 503, if any.
    pub retry_after: Option<String>,
}

/// A simulated CPE.
#[derive(Debug)]
pub struct Cpe {
    /// Its habits.
    pub cfg: CpeConfig,
    /// Its parameter tree: name → (value, type, writable). Change it through [`Cpe::set`] once a session has run
    /// (the last Inform is reused while the tree is unchanged).
    pub tree: Mutex<BTreeMap<String, (String, String, bool)>>,
    /// Events to report in the next Inform (besides the caller's), such as `M Reboot`.
    pending_events: Mutex<Vec<EventStruct>>,
    /// TransferCompletes to send in the next session.
    pending_transfers: Mutex<Vec<TransferComplete>>,
    /// Fault every Download with this code (firmware that fails).
    pub fail_downloads: Mutex<Option<u32>>,
    /// Reboots performed.
    pub reboots: Mutex<u32>,
    /// Fetch the file of each Download (HTTP GET of its URL, after the session, as a real CPE does) and report
    /// the TransferComplete by what arrived; off: report success without fetching.
    pub fetch_downloads: Mutex<bool>,
    /// Downloads to fetch after the session: (CommandKey, URL, FileSize).
    pending_fetches: Mutex<Vec<(String, String, u64)>>,
    /// Files fetched, in order: (URL, bytes).
    pub fetched: Mutex<Vec<(String, Vec<u8>)>>,
    /// The last Inform sent and the events it carried, while the tree has not changed since (see
    /// [`Cpe::inform_bytes`]).
    last_inform: Mutex<Option<(Vec<String>, Bytes)>>,
}

/// An HTTP exchange failed.
#[derive(Debug)]
pub struct SimError(pub String);

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(e: impl std::fmt::Display) -> SimError {
    SimError(e.to_string())
}

struct Response {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

struct Http {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
    cookie: Option<String>,
    authorization: Option<String>,
}

impl Http {
    async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, SimError> {
        let stream = TcpStream::connect(addr).await.map_err(err)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(err)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn post(&mut self, cfg: &CpeConfig, body: Option<Bytes>) -> Result<Response, SimError> {
        if cfg.new_connection_per_request || self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = Some(Self::connect(self.addr).await?);
        }
        let Some(sender) = self.sender.as_mut() else {
            return Err(SimError("no connection".into()));
        };
        sender.ready().await.map_err(err)?;
        let mut req = hyper::Request::post("/").header("host", self.addr.to_string());
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        if let Some(a) = &self.authorization {
            req = req.header("authorization", a);
        }
        if cfg.new_connection_per_request {
            req = req.header("connection", "close");
        }
        let payload = match body {
            Some(b) => {
                req = req.header("content-type", "text/xml; charset=utf-8");
                if cfg.gzip {
                    use std::io::Write;
                    let mut gz =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    gz.write_all(&b).map_err(err)?;
                    req = req.header("content-encoding", "gzip");
                    Bytes::from(gz.finish().map_err(err)?)
                } else {
                    b
                }
            }
            None => match cfg.empty_post {
                EmptyPost::ZeroLength => Bytes::new(),
                EmptyPost::Chunked => {
                    req = req.header("transfer-encoding", "chunked");
                    Bytes::new()
                }
                EmptyPost::Whitespace => Bytes::from_static(b"\r\n"),
            },
        };
        let req = req.body(Full::new(payload)).map_err(err)?;
        let resp = sender.send_request(req).await.map_err(err)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.map_err(err)?.to_bytes();
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

impl Cpe {
    /// A CPE with a parameter tree.
    pub fn new(cfg: CpeConfig, tree: BTreeMap<String, (String, String, bool)>) -> Cpe {
        Cpe {
            cfg,
            tree: Mutex::new(tree),
            pending_events: Mutex::new(Vec::new()),
            pending_transfers: Mutex::new(Vec::new()),
            fail_downloads: Mutex::new(None),
            reboots: Mutex::new(0),
            fetch_downloads: Mutex::new(false),
            pending_fetches: Mutex::new(Vec::new()),
            fetched: Mutex::new(Vec::new()),
            last_inform: Mutex::new(None),
        }
    }

    /// A CPE whose tree holds just its Inform parameters (with plausible values).
    pub fn minimal(cfg: CpeConfig) -> Cpe {
        let tree = cfg
            .inform_params
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    (format!("value-of-{n}"), "xsd:string".to_owned(), true),
                )
            })
            .collect();
        Cpe::new(cfg, tree)
    }

    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<String> {
        self.tree.lock().unwrap().get(name).map(|v| v.0.clone())
    }

    /// Sets a parameter (as the subscriber would on the web UI).
    pub fn set(&self, name: &str, value: &str) {
        *self.last_inform.lock().unwrap() = None;
        self.tree
            .lock()
            .unwrap()
            .insert(name.into(), (value.into(), "xsd:string".into(), true));
    }

    fn render(&self, env: &Envelope) -> Vec<u8> {
        let text = String::from_utf8(cwmp::build(env)).unwrap_or_default();
        let p = &self.cfg.soap_prefix;
        if p == "soap-env" {
            return text.into_bytes();
        }
        // One pass: `soap-env:` (element names) and `xmlns:soap-env=` (the declaration) take the CPE's prefix.
        let mut out = String::with_capacity(text.len() + 64);
        let mut rest = text.as_str();
        while let Some(i) = rest.find("soap-env") {
            let (before, after) = (&rest[..i], &rest[i + "soap-env".len()..]);
            out.push_str(before);
            let is_prefix =
                after.starts_with(':') || (after.starts_with('=') && before.ends_with("xmlns:"));
            out.push_str(if is_prefix { p } else { "soap-env" });
            rest = after;
        }
        out.push_str(rest);
        out.into_bytes()
    }

    /// The Inform to send with these events: the bytes of the last one when nothing it carries changed (same
    /// events, none pending, the tree untouched since). A real CPE renders its Inform on its own CPU; on a load
    /// generator sharing the ACS's cores, rendering the same 30 parameters for every session takes CPU from the
    /// ACS under test. The cache is dropped by every change of the tree through [`Cpe::set`] and the ACS's RPCs.
    fn inform_bytes(&self, events: &[&str]) -> Bytes {
        let pending = !self.pending_events.lock().unwrap().is_empty();
        let mut last = self.last_inform.lock().unwrap();
        if !pending
            && let Some((sent, bytes)) = last.as_ref()
            && sent.iter().map(String::as_str).eq(events.iter().copied())
        {
            return bytes.clone();
        }
        let bytes = Bytes::from(self.render(&self.inform(events)));
        *last = (!pending).then(|| {
            (
                events.iter().map(|e| (*e).to_owned()).collect(),
                bytes.clone(),
            )
        });
        bytes
    }

    fn inform(&self, events: &[&str]) -> Envelope {
        let mut ev: Vec<EventStruct> = events
            .iter()
            .map(|e| EventStruct {
                code: (*e).into(),
                command_key: String::new(),
            })
            .collect();
        ev.extend(self.pending_events.lock().unwrap().drain(..));
        let tree = self.tree.lock().unwrap();
        let parameters = self
            .cfg
            .inform_params
            .iter()
            .filter_map(|n| {
                tree.get(n).map(|(v, t, _)| ParameterValue {
                    name: n.clone(),
                    value: v.clone(),
                    xsd_type: t.clone(),
                })
            })
            .collect();
        Envelope::new(
            CwmpVersion(self.cfg.ns),
            Some("1".into()),
            Body::Inform(Inform {
                device_id: DeviceId {
                    manufacturer: self.cfg.manufacturer.clone(),
                    oui: self.cfg.oui.clone(),
                    product_class: self.cfg.product_class.clone(),
                    serial_number: self.cfg.serial.clone(),
                },
                events: ev,
                max_envelopes: 1,
                current_time: "2024-01-01T00:00:00Z".into(),
                retry_count: 0,
                parameters,
            }),
        )
    }

    /// Runs one session against the ACS at `addr`, with these Inform events.
    pub async fn session(&self, addr: SocketAddr, events: &[&str]) -> Result<SessionLog, SimError> {
        let mut http = Http {
            addr,
            sender: None,
            cookie: None,
            authorization: None,
        };
        self.session_on(&mut http, events).await
    }

    async fn session_on(&self, http: &mut Http, events: &[&str]) -> Result<SessionLog, SimError> {
        let mut log = SessionLog::default();
        let inform = self.inform_bytes(events);
        let mut resp = http.post(&self.cfg, Some(inform.clone())).await?;
        if resp.status == 401
            && let Some((user, pass)) = &self.cfg.credentials
        {
            let challenge = resp
                .headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            http.authorization = auth::digest_authorization(&challenge, user, pass, "POST", "/", 1);
            resp = http.post(&self.cfg, Some(inform)).await?;
        }
        log.inform_status = resp.status;
        log.retry_after = resp
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        log.set_cookie = resp
            .headers
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !resp.body.is_empty() {
            log.inform_answer = cwmp::parse(&resp.body, &cwmp::Limits::default()).ok();
        }
        if resp.status != 200 {
            return Ok(log);
        }
        if self.cfg.cookies == Cookies::Echo
            && let Some(c) = &log.set_cookie
        {
            // `name=value; Path=/; HttpOnly` → `name=value`.
            http.cookie = c.split(';').next().map(str::to_owned);
        }
        // The CPE's own requests first.
        let transfers: Vec<_> = self.pending_transfers.lock().unwrap().drain(..).collect();
        for t in transfers {
            let env = Envelope::new(
                CwmpVersion(self.cfg.ns),
                Some("tc".into()),
                Body::TransferComplete(t),
            );
            let r = http.post(&self.cfg, Some(self.render(&env).into())).await?;
            if r.status != 200 {
                return Err(SimError(format!("TransferComplete answered {}", r.status)));
            }
        }
        let mut resp = http.post(&self.cfg, None).await?;
        loop {
            match resp.status {
                204 => {
                    log.completed = true;
                    self.run_fetches().await;
                    return Ok(log);
                }
                200 => {}
                other => return Err(SimError(format!("ACS answered {other}"))),
            }
            let env = cwmp::parse(&resp.body, &cwmp::Limits::default()).map_err(err)?;
            log.rpcs.push(env.body.method_name().to_owned());
            if self.cfg.drop_at_rpc == Some(log.rpcs.len()) {
                http.sender = None;
                log.dropped = true;
                return Ok(log);
            }
            let answer = self.execute(&env.body);
            let out = Envelope::new(CwmpVersion(self.cfg.ns), env.id.clone(), answer);
            resp = http.post(&self.cfg, Some(self.render(&out).into())).await?;
        }
    }

    /// Fetches the files of the Downloads of the session just ended, and queues their TransferCompletes (fault
    /// 9010 when the file could not be fetched or its size is not the one announced).
    async fn run_fetches(&self) {
        let fetches: Vec<_> = self.pending_fetches.lock().unwrap().drain(..).collect();
        for (command_key, url, size) in fetches {
            let fault = match http_get(&url).await {
                Ok(bytes) if size == 0 || bytes.len() as u64 == size => {
                    self.fetched.lock().unwrap().push((url.clone(), bytes));
                    None
                }
                Ok(bytes) => Some((9010, format!("got {} bytes, expected {size}", bytes.len()))),
                Err(e) => Some((9010, format!("Download failure: {e}"))),
            };
            self.pending_events.lock().unwrap().push(EventStruct {
                code: "7 TRANSFER COMPLETE".into(),
                command_key: String::new(),
            });
            self.pending_transfers
                .lock()
                .unwrap()
                .push(TransferComplete {
                    command_key,
                    fault,
                    start_time: "2024-01-01T00:00:00Z".into(),
                    complete_time: "2024-01-01T00:01:00Z".into(),
                });
        }
    }

    /// Starts an Inform on `addr` and stops after the InformResponse, keeping the connection open: the
    /// session stays alive at the ACS. Returns the log and a guard that ends the session when finished.
    pub async fn open_session(
        &self,
        addr: SocketAddr,
        events: &[&str],
    ) -> Result<(SessionLog, OpenSession), SimError> {
        let mut http = Http {
            addr,
            sender: None,
            cookie: None,
            authorization: None,
        };
        let inform = self.inform_bytes(events);
        let resp = http.post(&self.cfg, Some(inform)).await?;
        let log = SessionLog {
            inform_status: resp.status,
            ..SessionLog::default()
        };
        Ok((log, OpenSession { http }))
    }

    /// Finishes a session opened with [`Cpe::open_session`]: empty POST, answer RPCs, until 204.
    pub async fn finish(&self, mut open: OpenSession) -> Result<SessionLog, SimError> {
        let mut log = SessionLog::default();
        let mut resp = open.http.post(&self.cfg, None).await?;
        while resp.status == 200 {
            let env = cwmp::parse(&resp.body, &cwmp::Limits::default()).map_err(err)?;
            log.rpcs.push(env.body.method_name().to_owned());
            let out = Envelope::new(
                CwmpVersion(self.cfg.ns),
                env.id.clone(),
                self.execute(&env.body),
            );
            resp = open
                .http
                .post(&self.cfg, Some(self.render(&out).into()))
                .await?;
        }
        log.completed = resp.status == 204;
        Ok(log)
    }

    /// Sends raw bytes as a POST on a fresh connection; returns status and body.
    pub async fn raw_post(
        addr: SocketAddr,
        body: Vec<u8>,
        encoding: Option<&str>,
    ) -> Result<(u16, Bytes), SimError> {
        let mut sender = Http::connect(addr).await?;
        let mut req = hyper::Request::post("/").header("host", addr.to_string());
        if let Some(e) = encoding {
            req = req.header("content-encoding", e);
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(err)?;
        let resp = sender.send_request(req).await.map_err(err)?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(err)?.to_bytes();
        Ok((status, body))
    }

    fn execute(&self, body: &Body) -> Body {
        *self.last_inform.lock().unwrap() = None;
        let mut tree = self.tree.lock().unwrap();
        match body {
            Body::GetParameterValues(names) => {
                let mut out = Vec::new();
                for n in names {
                    let found: Vec<_> = if n.ends_with('.') || n.is_empty() {
                        tree.range(n.clone()..)
                            .take_while(|(k, _)| k.starts_with(n.as_str()))
                            .collect()
                    } else {
                        tree.get_key_value(n).into_iter().collect()
                    };
                    if found.is_empty() {
                        return Body::Fault(Fault::new(9005));
                    }
                    out.extend(found.into_iter().map(|(k, (v, t, _))| ParameterValue {
                        name: k.clone(),
                        value: v.clone(),
                        xsd_type: t.clone(),
                    }));
                }
                Body::GetParameterValuesResponse(out)
            }
            Body::SetParameterValues { list, .. } => {
                let faults: Vec<SetParameterValuesFault> = list
                    .iter()
                    .filter_map(|p| match tree.get(&p.name) {
                        None => Some((p, 9005)),
                        Some((_, _, false)) => Some((p, 9008)),
                        Some(_) => None,
                    })
                    .map(|(p, code)| SetParameterValuesFault {
                        parameter_name: p.name.clone(),
                        code,
                        string: cwmp::FaultCode::from_u32(code).meaning().into(),
                    })
                    .collect();
                if !faults.is_empty() {
                    let mut f = Fault::new(9003);
                    f.set_parameter_values = faults;
                    return Body::Fault(f);
                }
                for p in list {
                    tree.insert(p.name.clone(), (p.value.clone(), p.xsd_type.clone(), true));
                }
                Body::SetParameterValuesResponse { status: 0 }
            }
            Body::AddObject { object_name, .. } => {
                let n = (1..)
                    .find(|i| {
                        !tree
                            .keys()
                            .any(|k| k.starts_with(&format!("{object_name}{i}.")))
                    })
                    .unwrap_or(1);
                tree.insert(
                    format!("{object_name}{n}.Enable"),
                    ("false".into(), "xsd:boolean".into(), true),
                );
                Body::AddObjectResponse {
                    instance_number: n,
                    status: 0,
                }
            }
            Body::DeleteObject { object_name, .. } => {
                tree.retain(|k, _| !k.starts_with(object_name.as_str()));
                Body::DeleteObjectResponse { status: 0 }
            }
            Body::Reboot { command_key } => {
                *self.reboots.lock().unwrap() += 1;
                let mut ev = self.pending_events.lock().unwrap();
                ev.push(EventStruct {
                    code: "M Reboot".into(),
                    command_key: command_key.clone(),
                });
                Body::RebootResponse
            }
            Body::FactoryReset => Body::FactoryResetResponse,
            Body::Download(d) => {
                let fault = self
                    .fail_downloads
                    .lock()
                    .unwrap()
                    .map(|c| (c, "Download failure".to_owned()));
                if fault.is_none() && *self.fetch_downloads.lock().unwrap() {
                    self.pending_fetches.lock().unwrap().push((
                        d.command_key.clone(),
                        d.url.clone(),
                        d.file_size,
                    ));
                    return Body::DownloadResponse(TransferResponse {
                        status: 1,
                        ..TransferResponse::default()
                    });
                }
                self.pending_events.lock().unwrap().push(EventStruct {
                    code: "7 TRANSFER COMPLETE".into(),
                    command_key: String::new(),
                });
                self.pending_transfers
                    .lock()
                    .unwrap()
                    .push(TransferComplete {
                        command_key: d.command_key.clone(),
                        fault,
                        start_time: "2024-01-01T00:00:00Z".into(),
                        complete_time: "2024-01-01T00:01:00Z".into(),
                    });
                Body::DownloadResponse(TransferResponse {
                    status: 1,
                    ..TransferResponse::default()
                })
            }
            Body::GetRPCMethods => Body::GetRPCMethodsResponse(vec!["GetParameterValues".into()]),
            other => Body::Fault(Fault::with_string(
                9000,
                format!("{} not simulated", other.method_name()),
            )),
        }
    }
}

/// A session left open after its InformResponse.
pub struct OpenSession {
    http: Http,
}

impl std::fmt::Debug for OpenSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenSession")
    }
}

/// HTTP GET of `url` (`http://HOST:PORT/PATH`): the body of a 200, or why not.
pub async fn http_get(url: &str) -> Result<Vec<u8>, SimError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| SimError(format!("not an http:// URL: {url}")))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr: SocketAddr = host.parse().map_err(err)?;
    let mut sender = Http::connect(addr).await?;
    let req = hyper::Request::get(format!("/{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .map_err(err)?;
    let resp = sender.send_request(req).await.map_err(err)?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(err)?.to_bytes();
    if status != 200 {
        return Err(SimError(format!("GET {url} answered {status}")));
    }
    Ok(body.to_vec())
}
