//! The trap and inform receiver: v1 traps, v2c traps and informs, v3 traps and informs (USM), each turned into an
//! `snmp.trap` / `snmp.inform` event; informs are acknowledged with a Response.
//!
//! [`TrapHandler::handle`] is pure (bytes and source in, event and reply bytes out); [`run`] is the socket loop.
//! For v3 traps the sender is the authoritative engine, so a configured user's keys are localized to the engine ID
//! each message carries (cached). For informs the agent is authoritative: a sender first discovers our engine ID
//! (we answer its probe with a usmStatsUnknownEngineIDs report carrying our engine ID, boots and time). Time-window
//! checks are not applied to received notifications (documented limitation: replays within a session are accepted).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use octoisp_shared::{Event, Severity};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ber::Oid;
use super::message::{self, Message, ScopedPdu, UsmParams, Version, flags};
use super::pdu::{AnyPdu, Pdu, PduKind, Value, VarBind};
use super::usm::{LocalKeys, SecurityLevel, UsmUser};

const SNMP_TRAP_OID: &[u32] = &[1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0];
const SYS_UPTIME: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];
const UNKNOWN_ENGINE_IDS: &[u32] = &[1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0];
const UNKNOWN_USER_NAMES: &[u32] = &[1, 3, 6, 1, 6, 3, 15, 1, 1, 3, 0];

/// Receiver settings.
#[derive(Debug, Clone)]
pub struct TrapConfig {
    /// Accepted communities for v1/v2c; empty accepts any.
    pub communities: Vec<Vec<u8>>,
    /// v3 users.
    pub users: Vec<Arc<UsmUser>>,
    /// Our snmpEngineID (authoritative for informs).
    pub engine_id: Vec<u8>,
}

/// A default engine ID for this agent: enterprise 8072 (net-snmp's, as many agents do), format 4 (text).
pub fn default_engine_id(name: &str) -> Vec<u8> {
    let mut id = vec![0x80, 0x00, 0x1f, 0x88, 0x04];
    id.extend_from_slice(format!("octoisp-{name}").as_bytes());
    id.truncate(32);
    id
}

/// Turns datagrams into events and replies.
#[derive(Debug)]
pub struct TrapHandler {
    cfg: TrapConfig,
    started: Instant,
    keys: HashMap<(Vec<u8>, Vec<u8>), LocalKeys>,
    /// Datagrams refused (bad community, unknown user, failed digest, malformed).
    pub refused: u64,
}

/// The outcome of one datagram.
#[derive(Debug, Default)]
pub struct Handled {
    /// The event, for a notification accepted.
    pub event: Option<Event>,
    /// Bytes to send back to the source (inform acknowledgement or discovery report).
    pub reply: Option<Vec<u8>>,
}

impl TrapHandler {
    /// A handler with `cfg`.
    pub fn new(cfg: TrapConfig) -> TrapHandler {
        TrapHandler {
            cfg,
            started: Instant::now(),
            keys: HashMap::new(),
            refused: 0,
        }
    }

    fn refuse(&mut self) -> Handled {
        self.refused += 1;
        Handled::default()
    }

    /// Handles one datagram from `from` received at `now_ms`.
    pub fn handle(&mut self, bytes: &[u8], from: SocketAddr, now_ms: i64) -> Handled {
        let Ok(msg) = message::decode(bytes) else {
            return self.refuse();
        };
        match msg {
            Message::Community {
                version,
                community,
                pdu,
            } => {
                if !self.cfg.communities.is_empty() && !self.cfg.communities.contains(&community) {
                    return self.refuse();
                }
                let v = if version == Version::V1 { "1" } else { "2c" };
                match pdu {
                    AnyPdu::TrapV1(t) => {
                        let trap_oid = if (0..6).contains(&t.generic) {
                            Oid(vec![1, 3, 6, 1, 6, 3, 1, 1, 5, t.generic as u32 + 1])
                        } else {
                            t.enterprise
                                .child(&[0, t.specific.clamp(0, i64::from(u32::MAX)) as u32])
                        };
                        Handled {
                            event: Some(event(
                                "snmp.trap",
                                v,
                                from,
                                now_ms,
                                &trap_oid,
                                &t.varbinds,
                            )),
                            reply: None,
                        }
                    }
                    AnyPdu::Pdu(p) if p.kind == PduKind::TrapV2 => Handled {
                        event: Some(self.v2_event("snmp.trap", v, from, now_ms, &p)),
                        reply: None,
                    },
                    AnyPdu::Pdu(p) if p.kind == PduKind::Inform => {
                        let resp = response_to(&p);
                        let reply =
                            message::encode_community(version, &community, &AnyPdu::Pdu(resp));
                        Handled {
                            event: Some(self.v2_event("snmp.inform", v, from, now_ms, &p)),
                            reply: Some(reply),
                        }
                    }
                    _ => self.refuse(),
                }
            }
            Message::V3(m) => {
                let user = self
                    .cfg
                    .users
                    .iter()
                    .find(|u| u.name == m.usm.user)
                    .cloned();
                let is_inform_probe = m.usm.engine_id.is_empty()
                    || (m.usm.user.is_empty() && m.flags & flags::REPORTABLE != 0);
                if is_inform_probe
                    || (m.flags & flags::REPORTABLE != 0
                        && m.usm.engine_id != self.cfg.engine_id
                        && m.plain().is_some_and(
                            |s| matches!(&s.pdu, AnyPdu::Pdu(p) if p.kind == PduKind::Inform),
                        ))
                {
                    return Handled {
                        event: None,
                        reply: self.report(m.msg_id, UNKNOWN_ENGINE_IDS),
                    };
                }
                let Some(user) = user else {
                    self.refused += 1;
                    let reply = (m.flags & flags::REPORTABLE != 0)
                        .then(|| self.report(m.msg_id, UNKNOWN_USER_NAMES))
                        .flatten();
                    return Handled { event: None, reply };
                };
                let needs = match user.level {
                    SecurityLevel::NoAuthNoPriv => 0,
                    SecurityLevel::AuthNoPriv => flags::AUTH,
                    SecurityLevel::AuthPriv => flags::AUTH | flags::PRIV,
                };
                if m.flags & needs != needs {
                    return self.refuse();
                }
                let keys = self
                    .keys
                    .entry((user.name.clone(), m.usm.engine_id.clone()))
                    .or_insert_with(|| user.localize(&m.usm.engine_id))
                    .clone();
                let Ok(scoped) = m.open(bytes, &keys) else {
                    return self.refuse();
                };
                let AnyPdu::Pdu(p) = &scoped.pdu else {
                    return self.refuse();
                };
                match p.kind {
                    PduKind::TrapV2 => Handled {
                        event: Some(self.v2_event("snmp.trap", "3", from, now_ms, p)),
                        reply: None,
                    },
                    PduKind::Inform => {
                        let usm = UsmParams {
                            engine_id: self.cfg.engine_id.clone(),
                            boots: 1,
                            time: self.engine_time(),
                            user: user.name.clone(),
                            ..Default::default()
                        };
                        let out = ScopedPdu {
                            context_engine_id: scoped.context_engine_id.clone(),
                            context_name: scoped.context_name.clone(),
                            pdu: AnyPdu::Pdu(response_to(p)),
                        };
                        let reply = message::encode_v3(
                            m.msg_id,
                            m.flags & (flags::AUTH | flags::PRIV),
                            &usm,
                            &out,
                            &keys,
                            rand::random(),
                        )
                        .ok();
                        Handled {
                            event: Some(self.v2_event("snmp.inform", "3", from, now_ms, p)),
                            reply,
                        }
                    }
                    _ => self.refuse(),
                }
            }
        }
    }

    fn engine_time(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn report(&self, msg_id: i32, oid: &[u32]) -> Option<Vec<u8>> {
        let usm = UsmParams {
            engine_id: self.cfg.engine_id.clone(),
            boots: 1,
            time: self.engine_time(),
            ..Default::default()
        };
        let scoped = ScopedPdu {
            context_engine_id: self.cfg.engine_id.clone(),
            context_name: Vec::new(),
            pdu: AnyPdu::Pdu(Pdu {
                kind: PduKind::Report,
                request_id: msg_id,
                error_status: 0,
                error_index: 0,
                varbinds: vec![VarBind {
                    oid: Oid(oid.to_vec()),
                    value: Value::Counter32(1),
                }],
            }),
        };
        message::encode_v3(msg_id, 0, &usm, &scoped, &LocalKeys::default(), 0).ok()
    }

    fn v2_event(&self, kind: &str, version: &str, from: SocketAddr, now_ms: i64, p: &Pdu) -> Event {
        let trap_oid = p
            .varbinds
            .iter()
            .find(|v| v.oid.arcs() == SNMP_TRAP_OID)
            .and_then(|v| {
                if let Value::Oid(o) = &v.value {
                    Some(o.clone())
                } else {
                    None
                }
            })
            .unwrap_or_default();
        let rest: Vec<VarBind> = p
            .varbinds
            .iter()
            .filter(|v| v.oid.arcs() != SNMP_TRAP_OID && v.oid.arcs() != SYS_UPTIME)
            .cloned()
            .collect();
        event(kind, version, from, now_ms, &trap_oid, &rest)
    }
}

fn response_to(p: &Pdu) -> Pdu {
    Pdu {
        kind: PduKind::Response,
        request_id: p.request_id,
        error_status: 0,
        error_index: 0,
        varbinds: p.varbinds.clone(),
    }
}

/// The name of a standard notification.
fn trap_name(oid: &Oid) -> Option<&'static str> {
    Some(match oid.arcs() {
        [1, 3, 6, 1, 6, 3, 1, 1, 5, 1] => "coldStart",
        [1, 3, 6, 1, 6, 3, 1, 1, 5, 2] => "warmStart",
        [1, 3, 6, 1, 6, 3, 1, 1, 5, 3] => "linkDown",
        [1, 3, 6, 1, 6, 3, 1, 1, 5, 4] => "linkUp",
        [1, 3, 6, 1, 6, 3, 1, 1, 5, 5] => "authenticationFailure",
        _ => return None,
    })
}

fn event(
    kind: &str,
    version: &str,
    from: SocketAddr,
    now_ms: i64,
    trap_oid: &Oid,
    vbs: &[VarBind],
) -> Event {
    let name = trap_name(trap_oid)
        .map(str::to_owned)
        .unwrap_or_else(|| trap_oid.to_string());
    let severity = match trap_name(trap_oid) {
        Some("linkDown" | "authenticationFailure") => Severity::Warning,
        _ => Severity::Info,
    };
    let mut attrs = vec![
        ("trap_oid".to_owned(), trap_oid.to_string()),
        ("version".to_owned(), version.to_owned()),
        ("source".to_owned(), from.to_string()),
    ];
    for vb in vbs.iter().take(64) {
        attrs.push((vb.oid.to_string(), vb.value.to_string()));
    }
    Event {
        id: uuid::Uuid::now_v7(),
        ts_ms: now_ms,
        device_key: Some(format!("snmp:{}", from.ip().to_canonical())),
        kind: kind.to_owned(),
        severity,
        message: format!("{name} from {}", from.ip().to_canonical()),
        attrs,
    }
}

/// Receives on `sock` until `shutdown`, sending events to `events` and replies back to their sources.
pub async fn run(
    sock: UdpSocket,
    cfg: TrapConfig,
    events: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) {
    let mut handler = TrapHandler::new(cfg);
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, from) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(err) => {
                    tracing::debug!(error = %err, "Trap socket receive error.");
                    continue;
                }
            },
        };
        let h = handler.handle(&buf[..n], from, crate::monitors::ping::now_ms());
        if let Some(reply) = h.reply
            && let Err(err) = sock.send_to(&reply, from).await
        {
            tracing::debug!(error = %err, %from, "Cannot acknowledge an inform.");
        }
        if let Some(ev) = h.event
            && events.send(ev).await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_not_panicking() {
        let mut h = TrapHandler::new(TrapConfig {
            communities: vec![b"public".to_vec()],
            users: vec![],
            engine_id: default_engine_id("t"),
        });
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        for bytes in [
            &b""[..],
            &[0x30, 0x03, 0x02, 0x01, 0x01],
            &[0x30, 0x82, 0xff, 0xff, 0x00],
        ] {
            let out = h.handle(bytes, from, 0);
            assert!(out.event.is_none() && out.reply.is_none());
        }
        assert_eq!(h.refused, 3);
    }

    #[test]
    fn v2c_inform_is_acknowledged() {
        let mut h = TrapHandler::new(TrapConfig {
            communities: vec![],
            users: vec![],
            engine_id: default_engine_id("t"),
        });
        let p = Pdu {
            kind: PduKind::Inform,
            request_id: 42,
            error_status: 0,
            error_index: 0,
            varbinds: vec![
                VarBind {
                    oid: Oid(SYS_UPTIME.to_vec()),
                    value: Value::TimeTicks(5),
                },
                VarBind {
                    oid: Oid(SNMP_TRAP_OID.to_vec()),
                    value: Value::Oid("1.3.6.1.6.3.1.1.5.3".parse().unwrap()),
                },
            ],
        };
        let bytes = message::encode_community(Version::V2c, b"x", &AnyPdu::Pdu(p));
        let out = h.handle(&bytes, "127.0.0.1:9".parse().unwrap(), 0);
        assert_eq!(out.event.unwrap().message, "linkDown from 127.0.0.1");
        let Ok(Message::Community {
            pdu: AnyPdu::Pdu(r),
            ..
        }) = message::decode(&out.reply.unwrap())
        else {
            panic!("no reply")
        };
        assert_eq!((r.kind, r.request_id), (PduKind::Response, 42));
    }
}
