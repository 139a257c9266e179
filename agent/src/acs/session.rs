//! CWMP sessions and the state the ACS shares between them.
//!
//! A session starts with an Inform (every Inform starts a new one) and ends with the ACS's 204. In between:
//! the CPE's own requests (TransferComplete, GetRPCMethods, ...) are answered; then, after the CPE's empty POST,
//! the ACS sends one RPC per HTTP response (tasks of the device, template settings) and judges each answer.
//!
//! # Which session a request belongs to
//!
//! The HTTP layer passes the session bound to the request's TCP connection (first choice: many CPEs never send
//! cookies) and the session token of the `octoisp_acs` cookie (second choice: CPEs that open a new connection per
//! request). A device has at most one session: an Inform for a device whose session is alive on another open
//! connection is refused with fault 8005 and `503 Retry-After`; a session whose connection closed, or that was
//! idle for `session_timeout`, gives way to the new one. A session's RPC in flight when its CPE vanished leaves
//! its task queued, so it runs again in the next session.
//!
//! # Bounds
//!
//! Sessions hold a permit of a semaphore of `max_sessions`: an Inform beyond it is answered 503 at once.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use octoisp_shared::Record;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::auth::{AuthOutcome, DigestServer};
use super::cwmp::{self, Body, CwmpVersion, Envelope, Fault, Inform, Limits, ParameterValue};
use super::firmware::{Campaign, Decision, FirmwareDir, Outcome};
use super::normalize::Rules;
use super::store::{AcsStore, Db, InformRecord, StoreError};
use super::tasks::{RetryPolicy, TaskKind, TaskState, Verdict};
use super::templates::{DeviceFacts, Template};
use super::writer::StoreWriter;
use super::{config::AcsSection, now_ms, upstream};
use crate::outbox::Outbox;

/// Name of the session cookie.
pub const COOKIE: &str = "octoisp_acs";

/// Methods the ACS answers (GetRPCMethodsResponse).
const ACS_METHODS: &[&str] = &[
    "Inform",
    "GetRPCMethods",
    "TransferComplete",
    "AutonomousTransferComplete",
    "RequestDownload",
];

/// Runtime options of the ACS, validated.
#[derive(Debug, Clone)]
pub struct AcsOptions {
    /// Digest realm.
    pub realm: String,
    /// Per-POP CPE credentials; when set, every CPE must authenticate.
    pub pop_credentials: Option<(String, String)>,
    /// Refuse unknown devices.
    pub require_preregistration: bool,
    /// Most sessions at once.
    pub max_sessions: usize,
    /// Idle session lifetime.
    pub session_timeout: Duration,
    /// Retry-After of 503s, seconds.
    pub retry_after_s: u64,
    /// Largest body, bytes.
    pub max_body: usize,
    /// XML limits.
    pub limits: Limits,
    /// Task retries.
    pub retry: RetryPolicy,
    /// Default Connection Request credentials.
    pub conn_req_credentials: Option<(String, String)>,
    /// Provisioning templates.
    pub templates: Vec<Template>,
    /// Normalization rules.
    pub rules: Rules,
    /// Firmware images served to CPEs.
    pub firmware: Option<FirmwareDir>,
    /// HTTPS on the CWMP listener (`acs.tls_cert`/`acs.tls_key`); `None`: plain HTTP.
    pub tls: Option<TlsServer>,
    /// The CWMP listen address (`acs.listen`), for the firmware URLs given to CPEs.
    pub listen: Option<std::net::SocketAddr>,
    /// Base URL of the firmware server as CPEs reach it (`acs.firmware_url`); unset: from `listen`.
    pub firmware_url: Option<String>,
}

/// The CWMP listener's TLS acceptor.
#[derive(Clone)]
pub struct TlsServer(pub tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsServer")
    }
}

impl TlsServer {
    /// An acceptor from a certificate chain and key in PEM files.
    pub fn from_pem(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsServer, String> {
        let cfg = crate::tls::pem_server_config(cert, key)?;
        Ok(TlsServer(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))))
    }
}

impl Default for AcsOptions {
    fn default() -> Self {
        Self::from_section(&AcsSection::default()).unwrap_or_else(|_| unreachable_defaults())
    }
}

// The default section has no files to read, so `from_section` cannot fail on it; this keeps `Default` total.
fn unreachable_defaults() -> AcsOptions {
    AcsOptions {
        realm: "octoisp-acs".into(),
        pop_credentials: None,
        require_preregistration: false,
        max_sessions: 20_000,
        session_timeout: Duration::from_secs(30),
        retry_after_s: 10,
        max_body: 1 << 20,
        limits: Limits::default(),
        retry: RetryPolicy::default(),
        conn_req_credentials: None,
        templates: Vec::new(),
        rules: Rules::builtin(),
        firmware: None,
        tls: None,
        listen: None,
        firmware_url: None,
    }
}

impl AcsOptions {
    /// Options from the `[acs]` section (reads the templates and rules files it names).
    pub fn from_section(s: &AcsSection) -> Result<AcsOptions, String> {
        s.validate()?;
        let templates = super::templates::load(s.templates_dir.as_deref(), &s.templates)
            .map_err(|e| e.to_string())?;
        let rules = match &s.normalize_file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("acs.normalize_file {}: {e}", p.display()))?;
                Rules::parse(&p.display().to_string(), &text).map_err(|e| e.to_string())?
            }
            None => Rules::builtin(),
        };
        let max_body = s.max_body_kib << 10;
        Ok(AcsOptions {
            realm: s.realm.clone(),
            pop_credentials: s.username.clone().zip(s.password.clone()),
            require_preregistration: s.require_preregistration,
            max_sessions: s.max_sessions,
            session_timeout: Duration::from_secs(s.session_timeout_s),
            retry_after_s: s.retry_after_s,
            max_body,
            limits: Limits {
                max_bytes: max_body,
                ..Limits::default()
            },
            retry: RetryPolicy {
                max_attempts: s.task_max_attempts,
                backoff_ms: i64::try_from(s.task_backoff_s.saturating_mul(1000))
                    .unwrap_or(i64::MAX),
                backoff_max_ms: 3_600_000,
            },
            conn_req_credentials: s
                .connection_request_username
                .clone()
                .zip(s.connection_request_password.clone()),
            templates,
            rules,
            firmware: s.firmware_dir.as_ref().map(FirmwareDir::new),
            tls: match (&s.tls_cert, &s.tls_key) {
                (Some(cert), Some(key)) => Some(
                    TlsServer::from_pem(cert, key)
                        .map_err(|e| format!("acs.tls_cert/tls_key: {e}"))?,
                ),
                _ => None,
            },
            listen: s.listen,
            firmware_url: s.firmware_url.clone(),
        })
    }
}

/// Counters, for `/metrics` and the benchmark.
#[derive(Debug, Default)]
pub struct AcsStats {
    /// Sessions started (Informs accepted).
    pub sessions_started: AtomicU64,
    /// Sessions ended with a 204.
    pub sessions_completed: AtomicU64,
    /// Informs refused: a session of the same device was alive.
    pub duplicate_refused: AtomicU64,
    /// Informs and connections refused for overload.
    pub overload_refused: AtomicU64,
    /// Bodies answered with a fault or 4xx because they were malformed.
    pub malformed: AtomicU64,
    /// Authentication failures.
    pub auth_failed: AtomicU64,
}

/// One request as the HTTP layer hands it over.
#[derive(Debug)]
pub struct Request {
    /// Id of the TCP connection.
    pub conn: u64,
    /// Peer address.
    pub peer: IpAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The session bound to the connection, if any.
    pub current: Option<Arc<SessionHandle>>,
    /// Token of the session cookie, if any.
    pub cookie: Option<String>,
    /// `Authorization` header.
    pub authorization: Option<String>,
    /// Decompressed body.
    pub body: Vec<u8>,
}

/// The answer to a request.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body (SOAP or empty).
    pub body: Vec<u8>,
    /// The session the connection is bound to from now on (`None`: none).
    pub session: Option<Arc<SessionHandle>>,
}

impl Reply {
    fn empty(status: u16, session: Option<Arc<SessionHandle>>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            session,
        }
    }

    fn soap(env: &Envelope, session: Option<Arc<SessionHandle>>) -> Reply {
        let status = if matches!(env.body, Body::Fault(_)) {
            500
        } else {
            200
        };
        Reply {
            status,
            headers: vec![("content-type", "text/xml; charset=\"utf-8\"".into())],
            body: cwmp::build(env),
            session,
        }
    }
}

/// What the ACS has still to do in a session.
#[derive(Debug, Clone)]
struct Pending {
    /// Stored task, or `None` for a template's settings.
    task: Option<String>,
    kind: TaskKind,
    /// Template (name, version) this comes from.
    template: Option<(String, i64)>,
}

/// Per-session state, touched by one request at a time.
#[derive(Debug)]
struct SessionState {
    ns: CwmpVersion,
    queue: VecDeque<Pending>,
    in_flight: Option<Pending>,
    rpc_seq: u32,
    /// [`Acs::cancels`] as it was before the queue was read: while it is unchanged, no queued task was removed
    /// since, and the queue needs no check against the store.
    cancels_seen: u64,
}

#[derive(Debug)]
struct SessionMeta {
    conn: u64,
    conn_alive: bool,
    last_activity: Instant,
    ended: bool,
}

/// A live session.
#[derive(Debug)]
pub struct SessionHandle {
    /// Cookie token.
    pub token: String,
    /// Device id.
    pub device: String,
    state: tokio::sync::Mutex<SessionState>,
    meta: Mutex<SessionMeta>,
    _permit: OwnedSemaphorePermit,
}

impl SessionHandle {
    fn meta(&self) -> MutexGuard<'_, SessionMeta> {
        self.meta.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the session ended (its 204 was sent or it was replaced).
    pub fn ended(&self) -> bool {
        self.meta().ended
    }
}

#[derive(Debug, Default)]
struct Sessions {
    by_device: HashMap<String, Arc<SessionHandle>>,
    by_token: HashMap<String, Arc<SessionHandle>>,
}

/// The ACS: options, store, outbox, live sessions. Shared by every connection.
#[derive(Debug)]
pub struct Acs {
    /// Options.
    pub opts: AcsOptions,
    /// Device store.
    pub store: AcsStore,
    /// The store's writer thread, which runs the sessions' store work (`None` if it could not start: the work
    /// then runs in `spawn_blocking`).
    writer: Option<StoreWriter>,
    outbox: Option<Outbox>,
    digest: DigestServer,
    sessions: Mutex<Sessions>,
    permits: Arc<Semaphore>,
    /// Counters.
    pub stats: AcsStats,
    /// Firmware images fetched from the control plane (one transfer per image at a time).
    pub firmware_cache: super::fetch::FirmwareCache,
    /// Tasks whose RPC a session is sending or has sent and not yet seen answered: [`Acs::cancel_queued_task`]
    /// leaves them alone (they are under way at their CPE).
    rpc_in_flight: Mutex<std::collections::HashSet<String>>,
    /// Tasks removed by [`Acs::cancel_queued_task`] so far (incremented under the `rpc_in_flight` lock): a session
    /// checks its next task against the store only when this moved since it read its queue.
    cancels: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("store task panicked: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl Acs {
    /// An ACS over `store`, reporting to `outbox` when given.
    pub fn new(opts: AcsOptions, store: AcsStore, outbox: Option<Outbox>) -> Acs {
        let writer = StoreWriter::spawn(store.clone())
            .inspect_err(|err| {
                tracing::warn!(error = %err, "ACS store writer thread not started; store work runs in spawn_blocking.");
            })
            .ok();
        Acs {
            writer,
            digest: DigestServer::new(opts.realm.clone()),
            permits: Arc::new(Semaphore::new(opts.max_sessions)),
            opts,
            store,
            outbox,
            sessions: Mutex::new(Sessions::default()),
            stats: AcsStats::default(),
            firmware_cache: Default::default(),
            rpc_in_flight: Mutex::default(),
            cancels: AtomicU64::new(0),
        }
    }

    fn rpc_in_flight(&self) -> MutexGuard<'_, std::collections::HashSet<String>> {
        self.rpc_in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes a task that no session has started (still queued, and its RPC not on its way to the CPE), so that
    /// it never runs. Returns whether it was removed. Blocking (a store write): call it off the async threads.
    ///
    /// A session marks a task in flight before it checks that the task still exists and sends its RPC; this
    /// check and the delete happen under the same lock, so either the session sees the task gone, or the task
    /// is left to run and be reported.
    pub fn cancel_queued_task(&self, id: &str) -> Result<bool, StoreError> {
        let in_flight = self.rpc_in_flight();
        if in_flight.contains(id) {
            return Ok(false);
        }
        let removed = self.store.cancel_queued(id);
        if matches!(removed, Ok(true)) {
            // Before the lock is released: a session that marks a task in flight after this sees the count moved.
            self.cancels.fetch_add(1, Ordering::SeqCst);
        }
        drop(in_flight);
        removed
    }

    /// Sessions holding a permit now (at most `max_sessions`).
    pub fn sessions_active(&self) -> usize {
        self.opts
            .max_sessions
            .saturating_sub(self.permits.available_permits())
    }

    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of live sessions.
    pub fn live_sessions(&self) -> usize {
        self.sessions().by_device.len()
    }

    /// Runs store work on the writer thread (grouped with other sessions' work, one commit per group).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, SessionError> {
        if let Some(w) = &self.writer {
            return Ok(w.run(f).await?);
        }
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(&mut store.lock())).await??)
    }

    async fn upstream(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        if let Some(outbox) = &self.outbox
            && let Err(err) = outbox.append_records(records).await
        {
            tracing::error!(error = %err, "ACS records could not be written to the outbox.");
        }
    }

    fn retry_after(&self) -> (&'static str, String) {
        ("retry-after", self.opts.retry_after_s.to_string())
    }

    /// Answers one CWMP HTTP request.
    pub async fn handle(&self, req: Request) -> Reply {
        let session = self.find_session(&req);
        if req.body.iter().all(u8::is_ascii_whitespace) {
            return match session {
                Some(s) => self.next_rpc(s).await,
                None => Reply::empty(204, None),
            };
        }
        let env = match cwmp::parse(&req.body, &self.opts.limits) {
            Ok(env) => env,
            Err(err) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %req.peer, error = %err, "Malformed CWMP body.");
                let ns = match &session {
                    Some(s) => s.state.lock().await.ns,
                    None => CwmpVersion::V1_0,
                };
                let fault = Fault::with_string(err.fault_code(), err.to_string());
                return Reply::soap(&Envelope::new(ns, None, Body::Fault(fault)), session);
            }
        };
        if let Body::Inform(inform) = env.body {
            return self.start_session(&req, env.ns, env.id, inform).await;
        }
        let Some(session) = session else {
            let mut r = Reply::empty(400, None);
            r.body = b"No CWMP session on this connection: start with an Inform.\n".to_vec();
            return r;
        };
        let id = env.id.clone();
        let answer = |body: Body, ns: CwmpVersion, s: Arc<SessionHandle>| {
            Reply::soap(&Envelope::new(ns, id.clone(), body), Some(s))
        };
        let ns = env.ns;
        match env.body {
            Body::GetRPCMethods => answer(
                Body::GetRPCMethodsResponse(ACS_METHODS.iter().map(|m| (*m).to_owned()).collect()),
                ns,
                session,
            ),
            Body::TransferComplete(t) => {
                self.transfer_complete(&session.device, &t.command_key, t.fault)
                    .await;
                answer(Body::TransferCompleteResponse, ns, session)
            }
            Body::AutonomousTransferComplete(t) => {
                let rec = upstream::result(
                    &session.device,
                    None,
                    "AutonomousTransferComplete",
                    t.fault,
                    &[ParameterValue::string("TransferURL", t.transfer_url)],
                    now_ms(),
                );
                self.upstream(vec![rec]).await;
                answer(Body::AutonomousTransferCompleteResponse, ns, session)
            }
            Body::RequestDownload { file_type, .. } => {
                let rec = upstream::result(
                    &session.device,
                    None,
                    "RequestDownload",
                    None,
                    &[ParameterValue::string("FileType", file_type)],
                    now_ms(),
                );
                self.upstream(vec![rec]).await;
                answer(Body::RequestDownloadResponse, ns, session)
            }
            body if is_cpe_answer(&body) => {
                self.on_answer(&session, body).await;
                self.next_rpc(session).await
            }
            other => {
                let fault = Fault::with_string(
                    8000,
                    format!("{} is not an ACS method", other.method_name()),
                );
                answer(Body::Fault(fault), ns, session)
            }
        }
    }

    fn find_session(&self, req: &Request) -> Option<Arc<SessionHandle>> {
        let s = match &req.current {
            Some(s) if !s.ended() => Some(s.clone()),
            _ => req
                .cookie
                .as_ref()
                .and_then(|t| self.sessions().by_token.get(t).cloned()),
        }?;
        let mut meta = s.meta();
        if meta.ended {
            return None;
        }
        meta.conn = req.conn;
        meta.conn_alive = true;
        meta.last_activity = Instant::now();
        drop(meta);
        Some(s)
    }

    /// Checks the CPE's credentials: its own (which then must be those of the device it informs as) or the POP's.
    async fn authenticate(&self, req: &Request, device: &str) -> Result<(), Reply> {
        let Some((pop_user, pop_pass)) = &self.opts.pop_credentials else {
            return Ok(());
        };
        let now = now_ms();
        // A first pass only learns which user the header claims; that user's per-device password is then read
        // through the store's writer thread (its lock may be held for a whole group, so not on this thread).
        let claimed = {
            let asked = std::cell::RefCell::new(None);
            let _ = self
                .digest
                .check(req.authorization.as_deref(), "POST", now, req.tls, |user| {
                    *asked.borrow_mut() = Some(user.to_owned());
                    None
                });
            asked.into_inner()
        };
        let own = match claimed {
            Some(user) => self
                .blocking(move |s| s.acs_password(&user))
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let outcome =
            self.digest
                .check(req.authorization.as_deref(), "POST", now, req.tls, |user| {
                    // Per-device credentials first, then the POP's.
                    match &own {
                        Some((owner, p)) if owner == device => Some(p.clone()),
                        Some(_) => None,
                        None if user == pop_user => Some(pop_pass.clone()),
                        None => None,
                    }
                });
        match outcome {
            AuthOutcome::Ok(_) => Ok(()),
            AuthOutcome::Stale | AuthOutcome::Denied => {
                if req.authorization.is_some() {
                    self.stats.auth_failed.fetch_add(1, Ordering::Relaxed);
                }
                let stale = outcome == AuthOutcome::Stale;
                let mut r = Reply::empty(401, None);
                r.headers
                    .push(("www-authenticate", self.digest.challenge(now, stale)));
                Err(r)
            }
        }
    }

    async fn start_session(
        &self,
        req: &Request,
        ns: CwmpVersion,
        id: Option<String>,
        inform: Inform,
    ) -> Reply {
        let d = &inform.device_id;
        let device = super::device_id(&d.oui, &d.product_class, &d.serial_number);
        if let Err(reply) = self.authenticate(req, &device).await {
            return reply;
        }
        let now = now_ms();
        // One session per device: a live one elsewhere refuses this Inform; a dead or stale one gives way.
        {
            let mut sessions = self.sessions();
            if let Some(old) = sessions.by_device.get(&device).cloned() {
                let mut meta = old.meta();
                let alive_elsewhere = meta.conn != req.conn
                    && meta.conn_alive
                    && meta.last_activity.elapsed() < self.opts.session_timeout;
                if alive_elsewhere {
                    drop(meta);
                    drop(sessions);
                    self.stats.duplicate_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%device, peer = %req.peer, "Second session for a device refused.");
                    let fault =
                        Fault::with_string(8005, "another session of this device is in progress");
                    let mut r = Reply::soap(&Envelope::new(ns, id, Body::Fault(fault)), None);
                    r.status = 503;
                    r.headers.push(self.retry_after());
                    return r;
                }
                meta.ended = true;
                drop(meta);
                sessions.by_device.remove(&device);
                sessions.by_token.remove(&old.token);
            }
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.stats.overload_refused.fetch_add(1, Ordering::Relaxed);
            let mut r = Reply::empty(503, None);
            r.headers.push(self.retry_after());
            return r;
        };
        if self.opts.require_preregistration {
            let dev = device.clone();
            match self.blocking(move |s| s.device(&dev)).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::warn!(%device, peer = %req.peer, "Unregistered CPE refused.");
                    return Reply::empty(403, None);
                }
                Err(err) => return self.internal_error(&device, &err),
            }
        }
        let boot = inform
            .events
            .iter()
            .any(|e| e.code == "1 BOOT" || e.code == "0 BOOTSTRAP");
        let bootstrap = inform.events.iter().any(|e| e.code == "0 BOOTSTRAP");
        let ip = req.peer.to_string();
        // Read before the queue is: a task cancelled after the read below moves the count past this.
        let cancels_seen = self.cancels.load(Ordering::SeqCst);
        let setup = {
            // The Inform moves to the writer thread and comes back with the outcome (no copy of its parameters).
            let (device, ip) = (device.clone(), ip.clone());
            let templates = if boot {
                self.opts.templates.clone()
            } else {
                Vec::new()
            };
            self.blocking(move |s| {
                let d = &inform.device_id;
                let outcome = s.record_inform(&InformRecord {
                    id: &device,
                    oui: &d.oui,
                    product_class: &d.product_class,
                    serial: &d.serial_number,
                    manufacturer: &d.manufacturer,
                    ip: &ip,
                    boot,
                    bootstrap,
                    now_ms: now,
                    parameters: &inform.parameters,
                })?;
                let mut queue: VecDeque<Pending> = s
                    .due_tasks(&device, now)?
                    .into_iter()
                    .map(|t| Pending {
                        task: Some(t.id),
                        kind: t.kind,
                        template: None,
                    })
                    .collect();
                queue.extend(template_work(s, &device, &templates, bootstrap, now)?);
                Ok((outcome, queue, inform))
            })
            .await
        };
        let (outcome, queue, inform) = match setup {
            Ok(x) => x,
            Err(err) => return self.internal_error(&device, &err),
        };
        let token = hex::encode(rand::random::<[u8; 16]>());
        let handle = Arc::new(SessionHandle {
            token: token.clone(),
            device: device.clone(),
            state: tokio::sync::Mutex::new(SessionState {
                ns,
                queue,
                in_flight: None,
                rpc_seq: 0,
                cancels_seen,
            }),
            meta: Mutex::new(SessionMeta {
                conn: req.conn,
                conn_alive: true,
                last_activity: Instant::now(),
                ended: false,
            }),
            _permit: permit,
        });
        {
            let mut sessions = self.sessions();
            sessions.by_device.insert(device.clone(), handle.clone());
            sessions.by_token.insert(token.clone(), handle.clone());
        }
        self.stats.sessions_started.fetch_add(1, Ordering::Relaxed);
        let mut records = upstream::inform_events(&device, &inform.events, now);
        if outcome.new_device {
            tracing::info!(%device, peer = %req.peer, "New CPE registered.");
            records.push(upstream::inventory(&device, &inform, &ip, now));
        }
        if !outcome.changed.is_empty() {
            records.push(upstream::result(
                &device,
                None,
                "ParameterChanges",
                None,
                &outcome.changed,
                now,
            ));
        }
        if records.is_empty() {
            // Nothing else to report: still tell the control plane the CPE informed (its `last_seen`).
            records.push(upstream::inform_seen(&device, now));
        }
        self.upstream(records).await;
        let mut r = Reply::soap(
            &Envelope::new(ns, id, Body::InformResponse { max_envelopes: 1 }),
            Some(handle),
        );
        r.headers
            .push(("set-cookie", format!("{COOKIE}={token}; Path=/; HttpOnly")));
        r
    }

    fn internal_error(&self, device: &str, err: &SessionError) -> Reply {
        tracing::error!(%device, error = %err, "ACS store failed.");
        let mut r = Reply::empty(503, None);
        r.headers.push(self.retry_after());
        r
    }

    /// Sends the next RPC of the session, or ends it with 204.
    async fn next_rpc(&self, session: Arc<SessionHandle>) -> Reply {
        let mut st = session.state.lock().await;
        // A task removed since the session began (a `tr069.*` command that timed out) is not sent.
        while st.in_flight.is_none()
            && let Some(id) = st.queue.front().and_then(|p| p.task.clone())
        {
            // Marked in flight first, so that a cancel either happened before this check or leaves it alone.
            self.rpc_in_flight().insert(id.clone());
            if self.cancels.load(Ordering::SeqCst) == st.cancels_seen {
                // No task was cancelled since the queue was read (a cancel increments the count before it
                // releases the lock taken just above): the task is still in the store, no need to ask it.
                break;
            }
            let check = id.clone();
            let gone = matches!(
                self.blocking(move |s| s.task_exists(&check)).await,
                Ok(false)
            );
            if !gone {
                break;
            }
            self.rpc_in_flight().remove(&id);
            st.queue.pop_front();
        }
        if st.in_flight.is_none()
            && let Some(p) = st.queue.pop_front()
        {
            st.rpc_seq += 1;
            let key = p
                .task
                .clone()
                .unwrap_or_else(|| format!("octoisp-template-{}", st.rpc_seq));
            let env = Envelope::new(
                st.ns,
                Some(format!("octoisp-{}", st.rpc_seq)),
                p.kind.request(&key),
            );
            st.in_flight = Some(p);
            drop(st);
            return Reply::soap(&env, Some(session));
        }
        if st.in_flight.is_some() {
            // The CPE sent an empty POST while an RPC was outstanding: it will not answer it. The task stays
            // queued for the next session.
            if let Some(Some(t)) = st.in_flight.take().map(|p| p.task) {
                self.rpc_in_flight().remove(&t);
            }
        }
        drop(st);
        self.end_session(&session);
        self.stats
            .sessions_completed
            .fetch_add(1, Ordering::Relaxed);
        Reply::empty(204, None)
    }

    fn end_session(&self, session: &Arc<SessionHandle>) {
        session.meta().ended = true;
        // An RPC left unanswered (the CPE vanished): its task is queued again, cancellable.
        if let Ok(st) = session.state.try_lock()
            && let Some(Some(t)) = st.in_flight.as_ref().map(|p| p.task.as_ref())
        {
            self.rpc_in_flight().remove(t);
        }
        let mut sessions = self.sessions();
        if sessions
            .by_device
            .get(&session.device)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.by_device.remove(&session.device);
        }
        sessions.by_token.remove(&session.token);
    }

    /// The connection a session was bound to closed: it may continue on another (cookie) until it times out.
    pub fn connection_closed(&self, conn: u64, session: &Arc<SessionHandle>) {
        let mut meta = session.meta();
        if meta.conn == conn {
            meta.conn_alive = false;
        }
    }

    /// Ends sessions idle for longer than the timeout (called periodically by the server).
    pub fn sweep(&self) {
        let timeout = self.opts.session_timeout;
        let expired: Vec<Arc<SessionHandle>> = self
            .sessions()
            .by_device
            .values()
            .filter(|s| s.meta().last_activity.elapsed() >= timeout)
            .cloned()
            .collect();
        for s in expired {
            tracing::debug!(device = %s.device, "Session timed out.");
            self.end_session(&s);
        }
    }

    async fn on_answer(&self, session: &Arc<SessionHandle>, body: Body) {
        let Some(p) = session.state.lock().await.in_flight.take() else {
            tracing::debug!(device = %session.device, method = body.method_name(), "Answer to no RPC ignored.");
            return;
        };
        if let Some(t) = &p.task {
            self.rpc_in_flight().remove(t);
        }
        let device = session.device.clone();
        let verdict = p.kind.judge(&body);
        let now = now_ms();
        let policy = self.opts.retry;
        let kind_name = p.kind.name();
        let result = self
            .blocking(move |s| {
                let mut records = Vec::new();
                match verdict {
                    Verdict::Done(params) => {
                        let changed = match p.kind {
                            TaskKind::Get { .. } | TaskKind::Refresh { .. } | TaskKind::Set { .. } => {
                                s.store_params(&device, &params, now)?
                            }
                            _ => Vec::new(),
                        };
                        if let Some(t) = &p.task {
                            s.set_task_state(t, TaskState::Done)?;
                        }
                        if let Some((name, version)) = &p.template {
                            s.mark_template(&device, name, *version, now)?;
                        }
                        let shown = if matches!(p.kind, TaskKind::Set { .. }) { &params } else { &changed };
                        records.push(upstream::result(&device, p.task.as_deref(), kind_name, None, shown, now));
                    }
                    Verdict::Waiting => {
                        if let Some(t) = &p.task {
                            s.set_task_state(t, TaskState::Waiting)?;
                        }
                    }
                    Verdict::Fault(code, msg) => {
                        let state = match &p.task {
                            Some(t) => s.task_fault(t, &format!("{code}: {msg}"), now, &policy)?,
                            None => TaskState::Failed,
                        };
                        tracing::info!(%device, task = kind_name, code, %msg, state = state.as_str(), "CPE fault.");
                        if state == TaskState::Failed {
                            records.push(upstream::result(
                                &device,
                                p.task.as_deref(),
                                kind_name,
                                Some((code, msg)),
                                &[],
                                now,
                            ));
                        }
                    }
                }
                Ok(records)
            })
            .await;
        match result {
            Ok(records) => self.upstream(records).await,
            Err(err) => {
                tracing::error!(device = %session.device, error = %err, "Task outcome not stored.")
            }
        }
    }

    async fn transfer_complete(
        &self,
        device: &str,
        command_key: &str,
        fault: Option<(u32, String)>,
    ) {
        let (dev, key, f, policy, now) = (
            device.to_owned(),
            command_key.to_owned(),
            fault.clone(),
            self.opts.retry,
            now_ms(),
        );
        let outcome = self
            .blocking(move |s| {
                let Some(task) = s.task(&key)?.filter(|t| t.device == dev) else {
                    return Ok(None);
                };
                let state = match &f {
                    None => {
                        s.set_task_state(&task.id, TaskState::Done)?;
                        TaskState::Done
                    }
                    Some((code, msg)) => {
                        s.task_fault(&task.id, &format!("{code}: {msg}"), now, &policy)?
                    }
                };
                Ok(Some((task, state)))
            })
            .await;
        let mut records = vec![upstream::result(
            device,
            None,
            "TransferComplete",
            fault.clone(),
            &[ParameterValue::string("CommandKey", command_key)],
            now,
        )];
        match outcome {
            Ok(Some((task, state))) if state != TaskState::Queued => {
                records.push(upstream::result(
                    device,
                    Some(&task.id),
                    task.kind.name(),
                    fault,
                    &[],
                    now,
                ));
            }
            Ok(_) => {}
            Err(err) => tracing::error!(%device, error = %err, "TransferComplete not stored."),
        }
        self.upstream(records).await;
    }

    /// Sends a Connection Request to a device (its reported URL, or over UDP per TR-111 when it is behind NAT;
    /// its own or the POP's credentials), so that it opens a session now and runs its queued tasks. Returns the
    /// CPE's HTTP status, or 202 when the request went over UDP (which has no answer).
    pub async fn request_connection(&self, device: &str) -> Result<u16, String> {
        Ok(match self.request_connection_via(device).await? {
            super::connreq::Delivered::Http(status) => status,
            super::connreq::Delivered::Udp(_) => 202,
        })
    }

    /// [`Acs::request_connection`], telling how the request went (HTTP and its status, or UDP).
    pub async fn request_connection_via(
        &self,
        device: &str,
    ) -> Result<super::connreq::Delivered, String> {
        let dev = device.to_owned();
        let (row, creds, udp) = self
            .blocking(move |s| {
                Ok((
                    s.device(&dev)?,
                    s.conn_req_credentials(&dev)?,
                    udp_address(s, &dev)?,
                ))
            })
            .await
            .map_err(|e| e.to_string())?;
        let row = row.ok_or_else(|| format!("no device {device:?}"))?;
        if row.conn_req_url.is_empty() && udp.is_empty() {
            return Err(format!("{device} reported no ConnectionRequestURL"));
        }
        let creds = creds.or_else(|| self.opts.conn_req_credentials.clone());
        let delivered = super::connreq::request(
            &row.conn_req_url,
            &row.ip,
            &udp,
            creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(delivered)
    }

    /// Whether `device` is in a CWMP session with this ACS now.
    pub fn in_session(&self, device: &str) -> bool {
        self.sessions().by_device.contains_key(device)
    }

    /// One step of a firmware campaign: judges the devices started so far (`started`: device → its Download task)
    /// and starts the next stage when it is time, queueing `download` for its devices. Returns the decision.
    pub async fn campaign_step(
        &self,
        campaign: &Campaign,
        started: &mut HashMap<String, String>,
        download: &TaskKind,
    ) -> Result<Decision, String> {
        let ids: Vec<(String, String)> = started
            .iter()
            .map(|(d, t)| (d.clone(), t.clone()))
            .collect();
        let outcomes = self
            .blocking(move |s| {
                let mut out = HashMap::new();
                for (device, task) in ids {
                    let o = match s.task(&task)? {
                        Some(t) if t.state == TaskState::Done => Outcome::Succeeded,
                        Some(t) if t.state == TaskState::Failed => Outcome::Failed,
                        Some(t) => Outcome::InProgress(t.created_ms),
                        None => Outcome::Failed,
                    };
                    out.insert(device, o);
                }
                Ok(out)
            })
            .await
            .map_err(|e| e.to_string())?;
        let decision = campaign.decide(&outcomes, now_ms());
        match &decision {
            Decision::Start(devices) => {
                for d in devices {
                    let id = self.enqueue(d, download.clone()).await?;
                    started.insert(d.clone(), id);
                }
            }
            Decision::Halt { failed, finished } => {
                tracing::warn!(
                    failed,
                    finished,
                    "Firmware campaign halted by its stop rule."
                );
            }
            Decision::Wait | Decision::Done => {}
        }
        Ok(decision)
    }

    /// Queues a task for a device (it runs in the next session).
    pub async fn enqueue(&self, device: &str, kind: TaskKind) -> Result<String, String> {
        let dev = device.to_owned();
        self.blocking(move |s| s.enqueue(&dev, &kind, now_ms()))
            .await
            .map_err(|e| e.to_string())
    }
}

/// The settings of the templates that apply to a device and differ from its stored values.
fn template_work(
    s: &mut Db,
    device: &str,
    templates: &[Template],
    bootstrap: bool,
    now: i64,
) -> Result<Vec<Pending>, StoreError> {
    if templates.is_empty() {
        return Ok(Vec::new());
    }
    let Some(row) = s.device(device)? else {
        return Ok(Vec::new());
    };
    let facts = DeviceFacts {
        oui: &row.oui,
        product_class: &row.product_class,
        serial: &row.serial,
        software: &row.software,
        tags: &row.tags,
    };
    let mut out = Vec::new();
    for t in templates.iter().filter(|t| t.matches(&facts)) {
        if !bootstrap && s.template_version(device, &t.name)? == Some(t.version) {
            continue;
        }
        let mut values = Vec::new();
        for (name, value, ty) in t.values(&facts) {
            let current = s
                .params(device, &name)?
                .into_iter()
                .find(|p| p.name == name);
            if current.is_none_or(|c| c.value != value) {
                values.push((name, value, ty));
            }
        }
        if values.is_empty() {
            s.mark_template(device, &t.name, t.version, now)?;
        } else {
            out.push(Pending {
                task: None,
                kind: TaskKind::Set { values },
                template: Some((t.name.clone(), t.version)),
            });
        }
    }
    Ok(out)
}

fn is_cpe_answer(body: &Body) -> bool {
    matches!(
        body,
        Body::GetRPCMethodsResponse(_)
            | Body::GetParameterNamesResponse(_)
            | Body::GetParameterValuesResponse(_)
            | Body::SetParameterValuesResponse { .. }
            | Body::GetParameterAttributesResponse(_)
            | Body::SetParameterAttributesResponse
            | Body::AddObjectResponse { .. }
            | Body::DeleteObjectResponse { .. }
            | Body::RebootResponse
            | Body::FactoryResetResponse
            | Body::DownloadResponse(_)
            | Body::UploadResponse(_)
            | Body::ScheduleInformResponse
            | Body::Fault(_)
    )
}

/// The `UDPConnectionRequestAddress` a device reported (TR-098 or TR-181), or empty.
pub fn udp_address(store: &Db, device: &str) -> Result<String, super::store::StoreError> {
    for root in ["InternetGatewayDevice", "Device"] {
        let name = format!("{root}.ManagementServer.UDPConnectionRequestAddress");
        if let Some(p) = store
            .params(device, &name)?
            .into_iter()
            .find(|p| p.name == name && !p.value.is_empty())
        {
            return Ok(p.value);
        }
    }
    Ok(String::new())
}
