//! A session with one device over the shared [`Engine`]: GET, GETNEXT, GETBULK, subtree walks and multi-column
//! table walks, for v1, v2c and v3 (USM engine discovery, time-window resynchronisation, clear errors for wrong
//! credentials).
//!
//! Sessions are cheap (a target, a little v3 state) and many may run requests at once over one engine.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::ber::Oid;
use super::engine::{Engine, ExchangeError};
use super::message::{self, Message, MessageError, ScopedPdu, UsmParams, Version, flags};
use super::pdu::{AnyPdu, Pdu, PduKind, Value, VarBind, error_status_name};
use super::usm::{LocalKeys, SecurityLevel, UsmUser};

/// Most rows a walk returns before it stops with an error (a bound against agents that loop).
pub const MAX_WALK_ROWS: usize = 200_000;

/// usmStats report OIDs (RFC 3414).
mod report {
    pub const UNSUPPORTED_SEC_LEVELS: &[u32] = &[1, 3, 6, 1, 6, 3, 15, 1, 1, 1, 0];
    pub const NOT_IN_TIME_WINDOWS: &[u32] = &[1, 3, 6, 1, 6, 3, 15, 1, 1, 2, 0];
    pub const UNKNOWN_USER_NAMES: &[u32] = &[1, 3, 6, 1, 6, 3, 15, 1, 1, 3, 0];
    pub const UNKNOWN_ENGINE_IDS: &[u32] = &[1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0];
    pub const WRONG_DIGESTS: &[u32] = &[1, 3, 6, 1, 6, 3, 15, 1, 1, 5, 0];
    pub const DECRYPTION_ERRORS: &[u32] = &[1, 3, 6, 1, 6, 3, 15, 1, 1, 6, 0];
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum SnmpError {
    /// Transport failure or timeout.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// The agent answered with an error-status.
    #[error("{addr}: agent returned {} (error-status {status}) at varbind {index}{}", error_status_name(*status), oid.as_ref().map(|o| format!(" ({o})")).unwrap_or_default())]
    Status {
        /// Device.
        addr: SocketAddr,
        /// error-status.
        status: i32,
        /// error-index (1-based).
        index: i32,
        /// The OID at error-index.
        oid: Option<Oid>,
    },
    /// v3: the user is unknown to the agent.
    #[error("{addr}: unknown v3 user name {user:?} (usmStatsUnknownUserNames)")]
    UnknownUser {
        /// Device.
        addr: SocketAddr,
        /// User.
        user: String,
    },
    /// v3: the digest was wrong (wrong auth password or protocol).
    #[error("{addr}: authentication failure: wrong digest (check -a and -A)")]
    WrongDigest {
        /// Device.
        addr: SocketAddr,
    },
    /// v3: the agent could not decrypt (wrong privacy password or protocol).
    #[error("{addr}: decryption error (check -x and -X)")]
    Decryption {
        /// Device.
        addr: SocketAddr,
    },
    /// v3: the user does not allow this security level.
    #[error("{addr}: unsupported security level for this user (check -l)")]
    UnsupportedSecLevel {
        /// Device.
        addr: SocketAddr,
    },
    /// v3: another report.
    #[error("{addr}: agent sent report {oid}")]
    Report {
        /// Device.
        addr: SocketAddr,
        /// The report's OID.
        oid: Oid,
    },
    /// v3 authPriv: the engine answered discovery but not the encrypted request.
    #[error(
        "{cause}: the engine answered discovery but not the encrypted request; a wrong privacy password or protocol (check -x and -X) makes agents drop it silently"
    )]
    NoAnswerV3 {
        /// Device.
        addr: SocketAddr,
        /// The timeout.
        cause: ExchangeError,
    },
    /// v3 engine discovery failed.
    #[error("{addr}: SNMPv3 engine discovery failed: {reason}")]
    Discovery {
        /// Device.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A walk went wrong (OIDs not increasing, too many rows).
    #[error("{addr}: walk stopped: {reason}")]
    Walk {
        /// Device.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The message could not be built.
    #[error("cannot build the request: {0}")]
    Build(MessageError),
}

impl SnmpError {
    /// Whether the device simply did not answer.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            SnmpError::Exchange(ExchangeError::Timeout { .. }) | SnmpError::NoAnswerV3 { .. }
        )
    }

    /// Whether the credentials were refused (the user should fix configuration, not retry).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            SnmpError::UnknownUser { .. }
                | SnmpError::WrongDigest { .. }
                | SnmpError::Decryption { .. }
                | SnmpError::UnsupportedSecLevel { .. }
        )
    }
}

/// Credentials of a target.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// v1/v2c community.
    Community(Vec<u8>),
    /// v3 user.
    Usm(Arc<UsmUser>),
}

/// Where and how to talk to one device.
#[derive(Debug, Clone)]
pub struct Target {
    /// Address and port.
    pub addr: SocketAddr,
    /// Protocol version.
    pub version: Version,
    /// Community or v3 user.
    pub credentials: Credentials,
    /// Timeout of each attempt.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// max-repetitions of GETBULK.
    pub max_repetitions: u32,
    /// v3 contextName.
    pub context: Vec<u8>,
}

impl Target {
    /// A v2c target with net-snmp's defaults (1 s, 5 retries: here 2 retries, which suits pollers better).
    pub fn v2c(addr: SocketAddr, community: &str) -> Target {
        Target {
            addr,
            version: Version::V2c,
            credentials: Credentials::Community(community.as_bytes().to_vec()),
            timeout: Duration::from_secs(1),
            retries: 2,
            max_repetitions: 25,
            context: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct V3State {
    engine_id: Vec<u8>,
    boots: u32,
    time: u32,
    at: Instant,
    keys: LocalKeys,
}

impl V3State {
    fn now_time(&self) -> u32 {
        let el = self.at.elapsed().as_secs();
        u32::try_from(u64::from(self.time) + el).unwrap_or(u32::MAX)
    }
}

/// A session with one device.
#[derive(Debug)]
pub struct Session {
    engine: Engine,
    target: Target,
    v3: Mutex<Option<V3State>>,
    salt: AtomicU64,
    bulk_broken: AtomicBool,
    /// u32::MAX = use the target's retries.
    retries_override: AtomicU32,
}

enum Outcome {
    Pdu(Pdu),
    Failed(SnmpError),
}

impl Session {
    /// A session with `target` over `engine`.
    pub fn new(engine: Engine, target: Target) -> Session {
        Session {
            engine,
            target,
            v3: Mutex::new(None),
            salt: AtomicU64::new(rand::random()),
            bulk_broken: AtomicBool::new(false),
            retries_override: AtomicU32::new(u32::MAX),
        }
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Overrides the target's retries (`None` restores them); the poller uses no retries for unreachable devices.
    pub fn set_retries(&self, retries: Option<u32>) {
        self.retries_override
            .store(retries.unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    fn retries(&self) -> u32 {
        match self.retries_override.load(Ordering::Relaxed) {
            u32::MAX => self.target.retries,
            r => r,
        }
    }

    /// The device's snmpEngineID, once discovered (v3).
    pub fn engine_id(&self) -> Option<Vec<u8>> {
        self.lock_v3().as_ref().map(|s| s.engine_id.clone())
    }

    fn lock_v3(&self) -> std::sync::MutexGuard<'_, Option<V3State>> {
        self.v3.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// GET of `oids`.
    pub async fn get(&self, oids: &[Oid]) -> Result<Vec<VarBind>, SnmpError> {
        Ok(self.request(PduKind::Get, oids, 0, 0).await?.varbinds)
    }

    /// GETNEXT of `oids`.
    pub async fn get_next(&self, oids: &[Oid]) -> Result<Vec<VarBind>, SnmpError> {
        Ok(self.request(PduKind::GetNext, oids, 0, 0).await?.varbinds)
    }

    /// GETBULK of `oids`.
    pub async fn get_bulk(
        &self,
        oids: &[Oid],
        non_repeaters: i32,
        max_repetitions: i32,
    ) -> Result<Vec<VarBind>, SnmpError> {
        Ok(self
            .request(PduKind::GetBulk, oids, non_repeaters, max_repetitions)
            .await?
            .varbinds)
    }

    /// One request; an error-status becomes [`SnmpError::Status`].
    pub async fn request(
        &self,
        kind: PduKind,
        oids: &[Oid],
        status: i32,
        index: i32,
    ) -> Result<Pdu, SnmpError> {
        let pdu = match self.target.version {
            Version::V1 | Version::V2c => self.request_community(kind, oids, status, index).await?,
            Version::V3 => self.request_v3(kind, oids, status, index).await?,
        };
        if pdu.error_status != 0 {
            let oid = usize::try_from(pdu.error_index - 1)
                .ok()
                .and_then(|i| oids.get(i).cloned());
            return Err(SnmpError::Status {
                addr: self.target.addr,
                status: pdu.error_status,
                index: pdu.error_index,
                oid,
            });
        }
        Ok(pdu)
    }

    async fn request_community(
        &self,
        kind: PduKind,
        oids: &[Oid],
        status: i32,
        index: i32,
    ) -> Result<Pdu, SnmpError> {
        let Credentials::Community(community) = &self.target.credentials else {
            return Err(SnmpError::Discovery {
                addr: self.target.addr,
                reason: "v1/v2c needs a community".into(),
            });
        };
        let id = self.engine.alloc_id();
        let mut pdu = Pdu::request(kind, id, oids);
        pdu.error_status = status;
        pdu.error_index = index;
        let version = self.target.version;
        let packet = message::encode_community(version, community, &AnyPdu::Pdu(pdu));
        let t = &self.target;
        let got = self
            .engine
            .exchange(
                t.addr,
                id,
                t.timeout,
                self.retries(),
                |_| packet.clone(),
                |bytes| match message::decode(bytes) {
                    Ok(Message::Community {
                        version: v,
                        community: c,
                        pdu: AnyPdu::Pdu(p),
                    }) if v == version
                        && &c == community
                        && p.request_id == id
                        && p.kind == PduKind::Response =>
                    {
                        Some(p)
                    }
                    _ => None,
                },
            )
            .await?;
        Ok(got)
    }

    /// Discovers the authoritative engine (id, boots, time) and localizes the user's keys to it.
    async fn discover(&self, user: &UsmUser) -> Result<(), SnmpError> {
        let id = self.engine.alloc_id();
        let scoped = ScopedPdu {
            context_engine_id: Vec::new(),
            context_name: Vec::new(),
            pdu: AnyPdu::Pdu(Pdu::request(PduKind::Get, id, &[])),
        };
        let packet = message::encode_v3(
            id,
            flags::REPORTABLE,
            &UsmParams::default(),
            &scoped,
            &LocalKeys::default(),
            0,
        )
        .map_err(SnmpError::Build)?;
        let t = &self.target;
        let usm = self
            .engine
            .exchange(
                t.addr,
                id,
                t.timeout,
                self.retries(),
                |_| packet.clone(),
                |bytes| match message::decode(bytes) {
                    Ok(Message::V3(m)) if m.msg_id == id && !m.usm.engine_id.is_empty() => {
                        Some(m.usm)
                    }
                    _ => None,
                },
            )
            .await?;
        let keys = user.localize(&usm.engine_id);
        *self.lock_v3() = Some(V3State {
            engine_id: usm.engine_id,
            boots: usm.boots,
            time: usm.time,
            at: Instant::now(),
            keys,
        });
        Ok(())
    }

    async fn request_v3(
        &self,
        kind: PduKind,
        oids: &[Oid],
        status: i32,
        index: i32,
    ) -> Result<Pdu, SnmpError> {
        let Credentials::Usm(user) = &self.target.credentials else {
            return Err(SnmpError::Discovery {
                addr: self.target.addr,
                reason: "v3 needs a user".into(),
            });
        };
        let addr = self.target.addr;
        // One resync for unknownEngineID and one for notInTimeWindow are enough; a third report is an error.
        for _ in 0..3 {
            if self.lock_v3().is_none() {
                self.discover(user).await?;
            }
            let Some(state) = self.lock_v3().clone() else {
                continue;
            };
            let id = self.engine.alloc_id();
            let mut pdu = Pdu::request(kind, id, oids);
            pdu.error_status = status;
            pdu.error_index = index;
            let scoped = ScopedPdu {
                context_engine_id: state.engine_id.clone(),
                context_name: self.target.context.clone(),
                pdu: AnyPdu::Pdu(pdu),
            };
            let f = flags::REPORTABLE
                | match user.level {
                    SecurityLevel::NoAuthNoPriv => 0,
                    SecurityLevel::AuthNoPriv => flags::AUTH,
                    SecurityLevel::AuthPriv => flags::AUTH | flags::PRIV,
                };
            let mut build_err = None;
            let t = &self.target;
            let got = self
                .engine
                .exchange(
                    addr,
                    id,
                    t.timeout,
                    self.retries(),
                    |_| {
                        let usm = UsmParams {
                            engine_id: state.engine_id.clone(),
                            boots: state.boots,
                            time: state.now_time(),
                            user: user.name.clone(),
                            ..Default::default()
                        };
                        let salt = self.salt.fetch_add(1, Ordering::Relaxed);
                        match message::encode_v3(id, f, &usm, &scoped, &state.keys, salt) {
                            Ok(p) => p,
                            Err(e) => {
                                build_err = Some(e);
                                Vec::new()
                            }
                        }
                    },
                    |bytes| self.accept_v3(bytes, id, &state.keys, user),
                )
                .await;
            if let Some(e) = build_err {
                return Err(SnmpError::Build(e));
            }
            let got = match got {
                Err(e @ ExchangeError::Timeout { .. }) if user.level == SecurityLevel::AuthPriv => {
                    // The engine answered discovery, so it is there: agents drop what they cannot decrypt.
                    return Err(SnmpError::NoAnswerV3 { addr, cause: e });
                }
                other => other?,
            };
            match got {
                Outcome::Pdu(p) if p.kind == PduKind::Report => {
                    let oid = p
                        .varbinds
                        .first()
                        .map(|v| v.oid.clone())
                        .unwrap_or_default();
                    match oid.arcs() {
                        report::NOT_IN_TIME_WINDOWS => continue, // accept_v3 already resynchronised
                        report::UNKNOWN_ENGINE_IDS => {
                            *self.lock_v3() = None;
                            continue;
                        }
                        report::UNKNOWN_USER_NAMES => {
                            return Err(SnmpError::UnknownUser {
                                addr,
                                user: String::from_utf8_lossy(&user.name).into(),
                            });
                        }
                        report::WRONG_DIGESTS => return Err(SnmpError::WrongDigest { addr }),
                        report::DECRYPTION_ERRORS => return Err(SnmpError::Decryption { addr }),
                        report::UNSUPPORTED_SEC_LEVELS => {
                            return Err(SnmpError::UnsupportedSecLevel { addr });
                        }
                        _ => return Err(SnmpError::Report { addr, oid }),
                    }
                }
                Outcome::Pdu(p) => return Ok(p),
                Outcome::Failed(e) => return Err(e),
            }
        }
        Err(SnmpError::Discovery {
            addr,
            reason: "the agent kept sending reports (engine ID or time window)".into(),
        })
    }

    /// Takes a v3 answer to request `id`: a Response or Report that passes the security checks. Updates the
    /// engine's boots and time from authenticated messages.
    fn accept_v3(
        &self,
        bytes: &[u8],
        id: i32,
        keys: &LocalKeys,
        user: &UsmUser,
    ) -> Option<Outcome> {
        let Ok(Message::V3(m)) = message::decode(bytes) else {
            return None;
        };
        if m.msg_id != id {
            return None;
        }
        let authed = m.flags & flags::AUTH != 0;
        let scoped = if authed {
            match m.open(bytes, keys) {
                Ok(s) => s,
                Err(MessageError::Usm(super::usm::UsmError::WrongDigest)) => {
                    return Some(Outcome::Failed(SnmpError::WrongDigest {
                        addr: self.target.addr,
                    }));
                }
                Err(_) => {
                    return Some(Outcome::Failed(SnmpError::Decryption {
                        addr: self.target.addr,
                    }));
                }
            }
        } else {
            m.plain()?.clone()
        };
        let AnyPdu::Pdu(pdu) = scoped.pdu else {
            return None;
        };
        let is_report = pdu.kind == PduKind::Report;
        if !is_report && (pdu.kind != PduKind::Response || pdu.request_id != id) {
            return None;
        }
        // A response to an authenticated request must itself be authenticated (a Report need not be).
        if !is_report && user.level != SecurityLevel::NoAuthNoPriv && !authed {
            return None;
        }
        // RFC 3414 3.2.7: an authenticated message from the authoritative engine updates our notion of its clock;
        // an unauthenticated notInTimeWindow report is believed only by noAuth users.
        let time_report = is_report
            && pdu
                .varbinds
                .first()
                .is_some_and(|v| v.oid.arcs() == report::NOT_IN_TIME_WINDOWS);
        if authed || (time_report && user.level == SecurityLevel::NoAuthNoPriv) {
            let mut g = self.lock_v3();
            if let Some(s) = g.as_mut()
                && s.engine_id == m.usm.engine_id
            {
                s.boots = m.usm.boots;
                s.time = m.usm.time;
                s.at = Instant::now();
            }
        }
        Some(Outcome::Pdu(pdu))
    }

    /// Walks the subtree under `root` (GETBULK, or GETNEXT for v1 and agents whose GETBULK fails).
    pub async fn walk(&self, root: &Oid) -> Result<Vec<VarBind>, SnmpError> {
        let cols = self.walk_columns(std::slice::from_ref(root)).await?;
        Ok(cols
            .into_iter()
            .filter_map(|(idx, mut vals)| {
                vals.pop().flatten().map(|value| VarBind {
                    oid: root.child(&idx),
                    value,
                })
            })
            .collect())
    }

    /// Walks several columns of a table together; returns, per index (the OID arcs after each column), the value of
    /// every column (`None` where a column has no such row).
    pub async fn walk_columns(
        &self,
        columns: &[Oid],
    ) -> Result<BTreeMap<Vec<u32>, Vec<Option<Value>>>, SnmpError> {
        let n = columns.len();
        let mut rows: BTreeMap<Vec<u32>, Vec<Option<Value>>> = BTreeMap::new();
        let mut cursor: Vec<Option<Oid>> = columns.iter().cloned().map(Some).collect();
        let mut total = 0usize;
        loop {
            let active: Vec<usize> = (0..n).filter(|i| cursor[*i].is_some()).collect();
            if active.is_empty() {
                break;
            }
            let oids: Vec<Oid> = active.iter().filter_map(|i| cursor[*i].clone()).collect();
            let use_bulk =
                self.target.version != Version::V1 && !self.bulk_broken.load(Ordering::Relaxed);
            let vbs = if use_bulk {
                // Up to 4 x max-repetitions bindings per response (about 4 KB for counters), spread over the columns,
                // so an 8-interface table of 11 columns comes back in one request.
                let reps = (self.target.max_repetitions as usize * 4 / active.len())
                    .clamp(1, (self.target.max_repetitions as usize).max(1));
                match self.get_bulk(&oids, 0, reps as i32).await {
                    Ok(v) => v,
                    Err(e) if e.is_auth() => return Err(e),
                    Err(e) => {
                        tracing::debug!(device = %self.target.addr, error = %e, "GETBULK failed: falling back to GETNEXT.");
                        self.bulk_broken.store(true, Ordering::Relaxed);
                        continue;
                    }
                }
            } else {
                match self.get_next(&oids).await {
                    Ok(v) => v,
                    // v1 ends a walk with noSuchName on the column that ran out.
                    Err(SnmpError::Status {
                        status: 2, index, ..
                    }) if self.target.version == Version::V1 => {
                        match usize::try_from(index - 1).ok().and_then(|i| active.get(i)) {
                            Some(col) => {
                                cursor[*col] = None;
                                continue;
                            }
                            None => break,
                        }
                    }
                    Err(e) => return Err(e),
                }
            };
            if vbs.is_empty() {
                break;
            }
            let mut progressed = false;
            for (k, vb) in vbs.into_iter().enumerate() {
                let col = active[k % active.len()];
                let Some(cur) = cursor[col].clone() else {
                    continue;
                };
                let root = &columns[col];
                let done =
                    vb.value == Value::EndOfMibView || !vb.oid.starts_with(root) || vb.oid == *root;
                if done {
                    cursor[col] = None;
                    continue;
                }
                if vb.oid <= cur {
                    return Err(SnmpError::Walk {
                        addr: self.target.addr,
                        reason: format!("OID not increasing: {} after {cur}", vb.oid),
                    });
                }
                let idx = vb.oid.suffix(root).map(<[u32]>::to_vec).unwrap_or_default();
                rows.entry(idx).or_insert_with(|| vec![None; n])[col] = Some(vb.value);
                cursor[col] = Some(vb.oid);
                progressed = true;
                total += 1;
            }
            if total > MAX_WALK_ROWS {
                return Err(SnmpError::Walk {
                    addr: self.target.addr,
                    reason: format!("more than {MAX_WALK_ROWS} values"),
                });
            }
            if !progressed && cursor.iter().all(Option::is_none) {
                break;
            }
        }
        Ok(rows)
    }
}
