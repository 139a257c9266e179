//! SNMP values, variable bindings and PDUs (RFC 3416, and the SNMPv1 Trap-PDU of RFC 1157), encoded and decoded
//! over bytes.

use std::fmt;
use std::net::Ipv4Addr;

use super::ber::{self, DecodeError, Oid, Reader, tag};

/// Most variable bindings accepted in one PDU (a bound on what a response may make us allocate).
pub const MAX_VARBINDS: usize = 4096;

/// A value in a variable binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// INTEGER / Integer32.
    Integer(i64),
    /// OCTET STRING.
    OctetString(Vec<u8>),
    /// NULL (requests carry it).
    Null,
    /// OBJECT IDENTIFIER.
    Oid(Oid),
    /// IpAddress.
    IpAddress([u8; 4]),
    /// Counter32.
    Counter32(u32),
    /// Gauge32 / Unsigned32.
    Gauge32(u32),
    /// TimeTicks, hundredths of a second.
    TimeTicks(u32),
    /// Opaque.
    Opaque(Vec<u8>),
    /// Counter64.
    Counter64(u64),
    /// noSuchObject.
    NoSuchObject,
    /// noSuchInstance.
    NoSuchInstance,
    /// endOfMibView.
    EndOfMibView,
}

impl Value {
    /// Whether it is one of the three exceptions.
    pub fn is_exception(&self) -> bool {
        matches!(
            self,
            Value::NoSuchObject | Value::NoSuchInstance | Value::EndOfMibView
        )
    }

    /// A numeric reading, when the value is a number (an OCTET STRING holding a decimal number counts: some
    /// vendors publish temperatures and optical levels as text).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Integer(v) => Some(*v as f64),
            Value::Counter32(v) | Value::Gauge32(v) | Value::TimeTicks(v) => Some(f64::from(*v)),
            Value::Counter64(v) => Some(*v as f64),
            Value::OctetString(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
            _ => None,
        }
    }

    /// A counter reading (unsigned), when the value is one.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Counter32(v) | Value::Gauge32(v) | Value::TimeTicks(v) => Some(u64::from(*v)),
            Value::Counter64(v) => Some(*v),
            Value::Integer(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// Text, for OCTET STRINGs that are printable (lossy otherwise).
    pub fn as_text(&self) -> Option<String> {
        match self {
            Value::OctetString(b) => {
                Some(String::from_utf8_lossy(b).trim_end_matches('\0').to_owned())
            }
            Value::Oid(o) => Some(o.to_string()),
            _ => None,
        }
    }

    /// The net-snmp-style type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Integer(_) => "INTEGER",
            Value::OctetString(_) => "STRING",
            Value::Null => "NULL",
            Value::Oid(_) => "OID",
            Value::IpAddress(_) => "IpAddress",
            Value::Counter32(_) => "Counter32",
            Value::Gauge32(_) => "Gauge32",
            Value::TimeTicks(_) => "Timeticks",
            Value::Opaque(_) => "Opaque",
            Value::Counter64(_) => "Counter64",
            Value::NoSuchObject => "noSuchObject",
            Value::NoSuchInstance => "noSuchInstance",
            Value::EndOfMibView => "endOfMibView",
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Integer(v) => ber::put_int(out, tag::INTEGER, *v),
            Value::OctetString(b) => ber::put(out, tag::OCTET_STRING, b),
            Value::Null => ber::put(out, tag::NULL, &[]),
            Value::Oid(o) => ber::put_oid(out, o),
            Value::IpAddress(a) => ber::put(out, tag::IP_ADDRESS, a),
            Value::Counter32(v) => ber::put_uint(out, tag::COUNTER32, u64::from(*v)),
            Value::Gauge32(v) => ber::put_uint(out, tag::GAUGE32, u64::from(*v)),
            Value::TimeTicks(v) => ber::put_uint(out, tag::TIMETICKS, u64::from(*v)),
            Value::Opaque(b) => ber::put(out, tag::OPAQUE, b),
            Value::Counter64(v) => ber::put_uint(out, tag::COUNTER64, *v),
            Value::NoSuchObject => ber::put(out, tag::NO_SUCH_OBJECT, &[]),
            Value::NoSuchInstance => ber::put(out, tag::NO_SUCH_INSTANCE, &[]),
            Value::EndOfMibView => ber::put(out, tag::END_OF_MIB_VIEW, &[]),
        }
    }

    fn decode(t: u8, c: &[u8]) -> Result<Value, DecodeError> {
        let u32_of = |c: &[u8]| ber::decode_uint(c, 32).map(|v| v as u32);
        Ok(match t {
            tag::INTEGER => Value::Integer(ber::decode_int(c)?),
            tag::OCTET_STRING => Value::OctetString(c.to_vec()),
            tag::NULL => Value::Null,
            tag::OID => Value::Oid(ber::decode_oid(c)?),
            tag::IP_ADDRESS => Value::IpAddress(
                c.try_into()
                    .map_err(|_| DecodeError::Malformed("IpAddress"))?,
            ),
            tag::COUNTER32 => Value::Counter32(u32_of(c)?),
            tag::GAUGE32 => Value::Gauge32(u32_of(c)?),
            tag::TIMETICKS => Value::TimeTicks(u32_of(c)?),
            tag::OPAQUE => Value::Opaque(c.to_vec()),
            tag::COUNTER64 => Value::Counter64(ber::decode_uint(c, 64)?),
            tag::NO_SUCH_OBJECT => Value::NoSuchObject,
            tag::NO_SUCH_INSTANCE => Value::NoSuchInstance,
            tag::END_OF_MIB_VIEW => Value::EndOfMibView,
            _ => return Err(DecodeError::Malformed("value type")),
        })
    }
}

impl fmt::Display for Value {
    /// net-snmp-like rendering: `STRING: "text"`, `Counter32: 5`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.type_name();
        match self {
            Value::Integer(v) => write!(f, "{t}: {v}"),
            Value::OctetString(b) => {
                if b.iter()
                    .all(|c| c.is_ascii_graphic() || c.is_ascii_whitespace())
                {
                    write!(f, "{t}: \"{}\"", String::from_utf8_lossy(b))
                } else {
                    write!(f, "Hex-STRING: {}", hex_spaced(b))
                }
            }
            Value::Null => write!(f, "NULL"),
            Value::Oid(o) => write!(f, "{t}: {o}"),
            Value::IpAddress(a) => write!(f, "{t}: {}", Ipv4Addr::from(*a)),
            Value::Counter32(v) | Value::Gauge32(v) => write!(f, "{t}: {v}"),
            Value::TimeTicks(v) => write!(f, "{t}: ({v}) {}", ticks_human(*v)),
            Value::Opaque(b) => write!(f, "{t}: {}", hex_spaced(b)),
            Value::Counter64(v) => write!(f, "{t}: {v}"),
            Value::NoSuchObject => write!(f, "No Such Object available on this agent at this OID"),
            Value::NoSuchInstance => write!(f, "No Such Instance currently exists at this OID"),
            Value::EndOfMibView => write!(f, "No more variables left in this MIB View"),
        }
    }
}

fn hex_spaced(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ticks_human(t: u32) -> String {
    let s = t / 100;
    format!(
        "{}:{:02}:{:02}:{:02}.{:02}",
        s / 86_400,
        s / 3600 % 24,
        s / 60 % 60,
        s % 60,
        t % 100
    )
}

/// An OID and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarBind {
    /// The object instance.
    pub oid: Oid,
    /// Its value (NULL in requests).
    pub value: Value,
}

impl VarBind {
    /// A binding with a NULL value, as requests carry.
    pub fn null(oid: Oid) -> VarBind {
        VarBind {
            oid,
            value: Value::Null,
        }
    }
}

/// The PDU types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PduKind {
    /// GetRequest.
    Get,
    /// GetNextRequest.
    GetNext,
    /// Response.
    Response,
    /// SetRequest.
    Set,
    /// GetBulkRequest (`error_status` = non-repeaters, `error_index` = max-repetitions).
    GetBulk,
    /// InformRequest.
    Inform,
    /// SNMPv2-Trap.
    TrapV2,
    /// Report.
    Report,
}

impl PduKind {
    /// The context-specific tag.
    pub fn tag(self) -> u8 {
        match self {
            PduKind::Get => 0xa0,
            PduKind::GetNext => 0xa1,
            PduKind::Response => 0xa2,
            PduKind::Set => 0xa3,
            PduKind::GetBulk => 0xa5,
            PduKind::Inform => 0xa6,
            PduKind::TrapV2 => 0xa7,
            PduKind::Report => 0xa8,
        }
    }

    fn from_tag(t: u8) -> Option<PduKind> {
        Some(match t {
            0xa0 => PduKind::Get,
            0xa1 => PduKind::GetNext,
            0xa2 => PduKind::Response,
            0xa3 => PduKind::Set,
            0xa5 => PduKind::GetBulk,
            0xa6 => PduKind::Inform,
            0xa7 => PduKind::TrapV2,
            0xa8 => PduKind::Report,
            _ => return None,
        })
    }
}

/// Tag of the SNMPv1 Trap-PDU.
pub const TRAP_V1_TAG: u8 = 0xa4;

/// A request, response, v2 trap, inform or report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    /// Which PDU.
    pub kind: PduKind,
    /// Request id.
    pub request_id: i32,
    /// error-status (non-repeaters for GetBulk).
    pub error_status: i32,
    /// error-index (max-repetitions for GetBulk).
    pub error_index: i32,
    /// The bindings.
    pub varbinds: Vec<VarBind>,
}

/// The SNMPv1 Trap-PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrapV1 {
    /// enterprise.
    pub enterprise: Oid,
    /// agent-addr.
    pub agent_addr: [u8; 4],
    /// generic-trap (0 coldStart .. 6 enterpriseSpecific).
    pub generic: i64,
    /// specific-trap.
    pub specific: i64,
    /// time-stamp, TimeTicks.
    pub timestamp: u32,
    /// The bindings.
    pub varbinds: Vec<VarBind>,
}

/// Either PDU shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyPdu {
    /// Every PDU but the v1 trap.
    Pdu(Pdu),
    /// SNMPv1 trap.
    TrapV1(TrapV1),
}

impl Pdu {
    /// A request of `kind` for `oids` (NULL values).
    pub fn request(kind: PduKind, request_id: i32, oids: &[Oid]) -> Pdu {
        Pdu {
            kind,
            request_id,
            error_status: 0,
            error_index: 0,
            varbinds: oids.iter().cloned().map(VarBind::null).collect(),
        }
    }

    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut c = Vec::with_capacity(32 + self.varbinds.len() * 24);
        ber::put_int(&mut c, tag::INTEGER, i64::from(self.request_id));
        ber::put_int(&mut c, tag::INTEGER, i64::from(self.error_status));
        ber::put_int(&mut c, tag::INTEGER, i64::from(self.error_index));
        encode_varbinds(&mut c, &self.varbinds);
        ber::put_constructed(out, self.kind.tag(), &c);
    }
}

fn encode_varbinds(out: &mut Vec<u8>, vbs: &[VarBind]) {
    let mut list = Vec::with_capacity(vbs.len() * 24);
    let mut one = Vec::with_capacity(64);
    for vb in vbs {
        one.clear();
        ber::put_oid(&mut one, &vb.oid);
        vb.value.encode(&mut one);
        ber::put_constructed(&mut list, tag::SEQUENCE, &one);
    }
    ber::put_constructed(out, tag::SEQUENCE, &list);
}

fn decode_varbinds(r: &mut Reader<'_>) -> Result<Vec<VarBind>, DecodeError> {
    let mut list = r.enter(tag::SEQUENCE)?;
    let mut out = Vec::new();
    while !list.is_empty() {
        if out.len() >= MAX_VARBINDS {
            return Err(DecodeError::Malformed("too many varbinds"));
        }
        let mut vb = list.enter(tag::SEQUENCE)?;
        let oid = vb.read_oid()?;
        let (t, c) = vb.read_any()?;
        out.push(VarBind {
            oid,
            value: Value::decode(t, c)?,
        });
    }
    Ok(out)
}

impl TrapV1 {
    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut c = Vec::new();
        ber::put_oid(&mut c, &self.enterprise);
        ber::put(&mut c, tag::IP_ADDRESS, &self.agent_addr);
        ber::put_int(&mut c, tag::INTEGER, self.generic);
        ber::put_int(&mut c, tag::INTEGER, self.specific);
        ber::put_uint(&mut c, tag::TIMETICKS, u64::from(self.timestamp));
        encode_varbinds(&mut c, &self.varbinds);
        ber::put_constructed(out, TRAP_V1_TAG, &c);
    }
}

impl AnyPdu {
    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            AnyPdu::Pdu(p) => p.encode(out),
            AnyPdu::TrapV1(t) => t.encode(out),
        }
    }

    /// Decodes one PDU from `r`.
    pub fn decode(r: &mut Reader<'_>) -> Result<AnyPdu, DecodeError> {
        let (t, c) = r.read_any()?;
        let mut p = r.sub(c);
        if t == TRAP_V1_TAG {
            let enterprise = p.read_oid()?;
            let agent_addr = p
                .read(tag::IP_ADDRESS)?
                .try_into()
                .map_err(|_| DecodeError::Malformed("agent-addr"))?;
            let generic = p.read_int()?;
            let specific = p.read_int()?;
            let timestamp = ber::decode_uint(p.read(tag::TIMETICKS)?, 32)? as u32;
            let varbinds = decode_varbinds(&mut p)?;
            return Ok(AnyPdu::TrapV1(TrapV1 {
                enterprise,
                agent_addr,
                generic,
                specific,
                timestamp,
                varbinds,
            }));
        }
        let kind = PduKind::from_tag(t).ok_or(DecodeError::Malformed("PDU type"))?;
        let request_id = p.read_i32()?;
        let error_status = p.read_i32()?;
        let error_index = p.read_i32()?;
        let varbinds = decode_varbinds(&mut p)?;
        Ok(AnyPdu::Pdu(Pdu {
            kind,
            request_id,
            error_status,
            error_index,
            varbinds,
        }))
    }
}

/// net-snmp's name of an error-status.
pub fn error_status_name(status: i32) -> &'static str {
    match status {
        0 => "noError",
        1 => "tooBig",
        2 => "noSuchName",
        3 => "badValue",
        4 => "readOnly",
        5 => "genErr",
        6 => "noAccess",
        7 => "wrongType",
        8 => "wrongLength",
        9 => "wrongEncoding",
        10 => "wrongValue",
        11 => "noCreation",
        12 => "inconsistentValue",
        13 => "resourceUnavailable",
        14 => "commitFailed",
        15 => "undoFailed",
        16 => "authorizationError",
        17 => "notWritable",
        18 => "inconsistentName",
        _ => "unknownError",
    }
}
