//! Whole SNMP messages: v1/v2c community messages and v3 messages with USM security parameters, encoded and
//! decoded over bytes (authentication and privacy applied here, with keys the caller passes in).

use super::ber::{self, DecodeError, Reader, tag};
use super::pdu::AnyPdu;
use super::usm::{LocalKeys, UsmError, constant_time_eq};

/// Protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Version {
    /// SNMPv1.
    #[serde(rename = "1")]
    V1,
    /// SNMPv2c.
    #[serde(rename = "2c")]
    V2c,
    /// SNMPv3.
    #[serde(rename = "3")]
    V3,
}

impl Version {
    fn wire(self) -> i64 {
        match self {
            Version::V1 => 0,
            Version::V2c => 1,
            Version::V3 => 3,
        }
    }
}

impl std::str::FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1" => Ok(Version::V1),
            "2c" | "2" => Ok(Version::V2c),
            "3" => Ok(Version::V3),
            _ => Err(format!("unknown SNMP version {s:?} (expected 1, 2c or 3)")),
        }
    }
}

/// msgFlags bits.
pub mod flags {
    /// Authenticated.
    pub const AUTH: u8 = 0x01;
    /// Encrypted.
    pub const PRIV: u8 = 0x02;
    /// A Report is expected on error.
    pub const REPORTABLE: u8 = 0x04;
}

/// Largest message we say we accept (msgMaxSize).
pub const MAX_MESSAGE: i64 = 65_507;

/// The USM security parameters of a v3 message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsmParams {
    /// msgAuthoritativeEngineID.
    pub engine_id: Vec<u8>,
    /// msgAuthoritativeEngineBoots.
    pub boots: u32,
    /// msgAuthoritativeEngineTime.
    pub time: u32,
    /// msgUserName.
    pub user: Vec<u8>,
    /// msgAuthenticationParameters.
    pub auth_params: Vec<u8>,
    /// msgPrivacyParameters.
    pub priv_params: Vec<u8>,
}

/// A scopedPDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedPdu {
    /// contextEngineID.
    pub context_engine_id: Vec<u8>,
    /// contextName.
    pub context_name: Vec<u8>,
    /// The PDU.
    pub pdu: AnyPdu,
}

impl ScopedPdu {
    fn encode(&self) -> Vec<u8> {
        let mut c = Vec::with_capacity(128);
        ber::put(&mut c, tag::OCTET_STRING, &self.context_engine_id);
        ber::put(&mut c, tag::OCTET_STRING, &self.context_name);
        self.pdu.encode(&mut c);
        let mut out = Vec::with_capacity(c.len() + 4);
        ber::put_constructed(&mut out, tag::SEQUENCE, &c);
        out
    }

    fn decode(bytes: &[u8]) -> Result<ScopedPdu, DecodeError> {
        let mut r = Reader::new(bytes);
        let mut s = r.enter(tag::SEQUENCE)?;
        Ok(ScopedPdu {
            context_engine_id: s.read_octets()?.to_vec(),
            context_name: s.read_octets()?.to_vec(),
            pdu: AnyPdu::decode(&mut s)?,
        })
    }
}

/// A decoded v3 message, before its security is checked.
#[derive(Debug, Clone)]
pub struct V3Message {
    /// msgID.
    pub msg_id: i32,
    /// msgFlags.
    pub flags: u8,
    /// msgSecurityModel (3 = USM).
    pub security_model: i64,
    /// USM parameters.
    pub usm: UsmParams,
    /// Where msgAuthenticationParameters sit in the raw bytes.
    auth_offset: usize,
    /// The plaintext scopedPDU, or the ciphertext.
    data: V3Data,
}

#[derive(Debug, Clone)]
enum V3Data {
    Plain(ScopedPdu),
    Encrypted(Vec<u8>),
}

/// A decoded message.
#[derive(Debug, Clone)]
pub enum Message {
    /// v1 or v2c.
    Community {
        /// V1 or V2c.
        version: Version,
        /// The community string.
        community: Vec<u8>,
        /// The PDU.
        pdu: AnyPdu,
    },
    /// v3.
    V3(V3Message),
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not a well-formed message.
    #[error("malformed message: {0}")]
    Decode(#[from] DecodeError),
    /// Security check failed.
    #[error(transparent)]
    Usm(#[from] UsmError),
    /// The message needs keys we do not have (for example an encrypted message for a noAuth user).
    #[error("unsupported security level in message")]
    UnsupportedSecurityLevel,
}

/// Encodes a v1/v2c message.
pub fn encode_community(version: Version, community: &[u8], pdu: &AnyPdu) -> Vec<u8> {
    let mut c = Vec::with_capacity(64 + community.len());
    ber::put_int(&mut c, tag::INTEGER, version.wire());
    ber::put(&mut c, tag::OCTET_STRING, community);
    pdu.encode(&mut c);
    let mut out = Vec::with_capacity(c.len() + 4);
    ber::put_constructed(&mut out, tag::SEQUENCE, &c);
    out
}

/// Encodes a v3 message: encrypts the scopedPDU when `flags` has PRIV and signs it when it has AUTH, with
/// `keys`; `salt` must differ for every encrypted message.
pub fn encode_v3(
    msg_id: i32,
    flags_: u8,
    usm: &UsmParams,
    scoped: &ScopedPdu,
    keys: &LocalKeys,
    salt: u64,
) -> Result<Vec<u8>, MessageError> {
    let plain = scoped.encode();
    let mut usm = usm.clone();
    let data = if flags_ & flags::PRIV != 0 {
        let (p, key) = keys
            .privacy
            .as_ref()
            .ok_or(MessageError::UnsupportedSecurityLevel)?;
        let (cipher, params) = p.encrypt(key, usm.boots, usm.time, salt, &plain);
        usm.priv_params = params;
        let mut d = Vec::with_capacity(cipher.len() + 4);
        ber::put(&mut d, tag::OCTET_STRING, &cipher);
        d
    } else {
        usm.priv_params.clear();
        plain
    };
    let auth = if flags_ & flags::AUTH != 0 {
        Some(
            keys.auth
                .as_ref()
                .ok_or(MessageError::UnsupportedSecurityLevel)?,
        )
    } else {
        None
    };
    usm.auth_params = vec![0; auth.map_or(0, |(p, _)| p.mac_len())];

    let mut u = Vec::with_capacity(96);
    ber::put(&mut u, tag::OCTET_STRING, &usm.engine_id);
    ber::put_int(&mut u, tag::INTEGER, i64::from(usm.boots));
    ber::put_int(&mut u, tag::INTEGER, i64::from(usm.time));
    ber::put(&mut u, tag::OCTET_STRING, &usm.user);
    let auth_in_u = u.len() + ber::header_len(usm.auth_params.len());
    ber::put(&mut u, tag::OCTET_STRING, &usm.auth_params);
    ber::put(&mut u, tag::OCTET_STRING, &usm.priv_params);
    let mut useq = Vec::with_capacity(u.len() + 4);
    ber::put_constructed(&mut useq, tag::SEQUENCE, &u);
    let auth_in_useq = ber::header_len(u.len()) + auth_in_u;

    let mut c = Vec::with_capacity(useq.len() + data.len() + 32);
    ber::put_int(&mut c, tag::INTEGER, 3);
    let mut h = Vec::with_capacity(16);
    ber::put_int(&mut h, tag::INTEGER, i64::from(msg_id));
    ber::put_int(&mut h, tag::INTEGER, MAX_MESSAGE);
    ber::put(&mut h, tag::OCTET_STRING, &[flags_]);
    ber::put_int(&mut h, tag::INTEGER, 3);
    ber::put_constructed(&mut c, tag::SEQUENCE, &h);
    let auth_in_c = c.len() + ber::header_len(useq.len()) + auth_in_useq;
    ber::put(&mut c, tag::OCTET_STRING, &useq);
    c.extend_from_slice(&data);
    let mut out = Vec::with_capacity(c.len() + 4);
    ber::put_constructed(&mut out, tag::SEQUENCE, &c);
    if let Some((p, key)) = auth {
        let at = ber::header_len(c.len()) + auth_in_c;
        let mac = p.mac(key, &out);
        if let Some(slot) = out.get_mut(at..at + mac.len()) {
            slot.copy_from_slice(&mac);
        }
    }
    Ok(out)
}

/// Decodes a message of any version (v3 security is checked later by [`V3Message::open`]).
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut top = Reader::new(bytes);
    let mut r = top.enter(tag::SEQUENCE)?;
    let version = r.read_int()?;
    match version {
        0 | 1 => {
            let community = r.read_octets()?.to_vec();
            let pdu = AnyPdu::decode(&mut r)?;
            Ok(Message::Community {
                version: if version == 0 {
                    Version::V1
                } else {
                    Version::V2c
                },
                community,
                pdu,
            })
        }
        3 => {
            let mut h = r.enter(tag::SEQUENCE)?;
            let msg_id = h.read_i32()?;
            let _max = h.read_int()?;
            let fl = h.read_octets()?;
            let flags_ = *fl.first().ok_or(DecodeError::Malformed("msgFlags"))?;
            let security_model = h.read_int()?;
            let sp = r.read_octets()?;
            let mut s = r.sub(sp).enter(tag::SEQUENCE)?;
            let engine_id = s.read_octets()?.to_vec();
            let boots = u32::try_from(s.read_int()?).map_err(|_| DecodeError::IntegerRange)?;
            let time = u32::try_from(s.read_int()?).map_err(|_| DecodeError::IntegerRange)?;
            let user = s.read_octets()?.to_vec();
            let auth = s.read_octets()?;
            let auth_offset = ber::offset_in(bytes, auth).ok_or(DecodeError::Malformed("auth"))?;
            let priv_params = s.read_octets()?.to_vec();
            let data = if r.peek_tag() == Some(tag::OCTET_STRING) {
                V3Data::Encrypted(r.read_octets()?.to_vec())
            } else {
                let (_, c) = r.read_any()?;
                let start = ber::offset_in(bytes, c).ok_or(DecodeError::Malformed("scopedPDU"))?;
                let hdr = ber::header_len(c.len());
                let whole = bytes
                    .get(start.saturating_sub(hdr)..start + c.len())
                    .ok_or(DecodeError::Malformed("scopedPDU"))?;
                V3Data::Plain(ScopedPdu::decode(whole)?)
            };
            Ok(Message::V3(V3Message {
                msg_id,
                flags: flags_,
                security_model,
                usm: UsmParams {
                    engine_id,
                    boots,
                    time,
                    user,
                    auth_params: auth.to_vec(),
                    priv_params,
                },
                auth_offset,
                data,
            }))
        }
        _ => Err(DecodeError::Malformed("version")),
    }
}

/// The demultiplexing id of a message without decoding all of it: the request-id of a v1/v2c PDU, the msgID of a
/// v3 message. `None` for anything else (including v1 traps).
pub fn peek_id(bytes: &[u8]) -> Option<i32> {
    let mut top = Reader::new(bytes);
    let mut r = top.enter(tag::SEQUENCE).ok()?;
    match r.read_int().ok()? {
        0 | 1 => {
            r.read_octets().ok()?;
            let (t, c) = r.read_any().ok()?;
            if !(0xa0..=0xa8).contains(&t) || t == 0xa4 {
                return None;
            }
            r.sub(c).read_i32().ok()
        }
        3 => r.enter(tag::SEQUENCE).ok()?.read_i32().ok(),
        _ => None,
    }
}

impl V3Message {
    /// Whether the message carries an encrypted scopedPDU.
    pub fn is_encrypted(&self) -> bool {
        matches!(self.data, V3Data::Encrypted(_))
    }

    /// The plaintext scopedPDU of an unauthenticated, unencrypted message (discovery reports).
    pub fn plain(&self) -> Option<&ScopedPdu> {
        match &self.data {
            V3Data::Plain(s) => Some(s),
            V3Data::Encrypted(_) => None,
        }
    }

    /// Checks the digest (when the message says it is authenticated) over `raw`, the bytes it was decoded from,
    /// and decrypts it (when it says it is encrypted).
    pub fn open(&self, raw: &[u8], keys: &LocalKeys) -> Result<ScopedPdu, MessageError> {
        if self.flags & flags::AUTH != 0 {
            let (p, key) = keys
                .auth
                .as_ref()
                .ok_or(MessageError::UnsupportedSecurityLevel)?;
            if self.usm.auth_params.len() != p.mac_len() {
                return Err(UsmError::WrongDigest.into());
            }
            let mut copy = raw.to_vec();
            let end = self.auth_offset + p.mac_len();
            let slot = copy
                .get_mut(self.auth_offset..end)
                .ok_or(UsmError::WrongDigest)?;
            slot.fill(0);
            if !constant_time_eq(&p.mac(key, &copy), &self.usm.auth_params) {
                return Err(UsmError::WrongDigest.into());
            }
        }
        match &self.data {
            V3Data::Plain(s) => Ok(s.clone()),
            V3Data::Encrypted(c) => {
                if self.flags & flags::PRIV == 0 {
                    return Err(DecodeError::Malformed("encrypted data without priv flag").into());
                }
                let (p, key) = keys
                    .privacy
                    .as_ref()
                    .ok_or(MessageError::UnsupportedSecurityLevel)?;
                let plain =
                    p.decrypt(key, self.usm.boots, self.usm.time, &self.usm.priv_params, c)?;
                ScopedPdu::decode(&plain).map_err(|_| UsmError::Decryption.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snmp::ber::Oid;
    use crate::snmp::pdu::{Pdu, PduKind};
    use crate::snmp::usm::{AuthProto, PrivProto, SecurityLevel, UsmUser};

    fn get(id: i32) -> AnyPdu {
        AnyPdu::Pdu(Pdu::request(
            PduKind::Get,
            id,
            &["1.3.6.1.2.1.1.1.0".parse::<Oid>().unwrap()],
        ))
    }

    #[test]
    fn community_round_trip() {
        let bytes = encode_community(Version::V2c, b"public", &get(77));
        assert_eq!(peek_id(&bytes), Some(77));
        match decode(&bytes).unwrap() {
            Message::Community {
                version,
                community,
                pdu,
            } => {
                assert_eq!(
                    (version, community.as_slice()),
                    (Version::V2c, &b"public"[..])
                );
                assert_eq!(pdu, get(77));
            }
            Message::V3(_) => panic!("v3"),
        }
    }

    #[test]
    fn v3_auth_priv_round_trip_and_tamper() {
        let user = UsmUser::new(
            "alice",
            SecurityLevel::AuthPriv,
            Some((AuthProto::Sha256, "authpass1")),
            Some((PrivProto::Aes128, "privpass1")),
        )
        .unwrap();
        let keys = user.localize(b"\x80\x00\x1f\x88\x04test");
        let usm = UsmParams {
            engine_id: b"e".to_vec(),
            boots: 2,
            time: 99,
            user: b"alice".to_vec(),
            ..Default::default()
        };
        let scoped = ScopedPdu {
            context_engine_id: b"e".to_vec(),
            context_name: vec![],
            pdu: get(5),
        };
        let f = flags::AUTH | flags::PRIV | flags::REPORTABLE;
        let bytes = encode_v3(5, f, &usm, &scoped, &keys, 1).unwrap();
        assert_eq!(peek_id(&bytes), Some(5));
        let Message::V3(m) = decode(&bytes).unwrap() else {
            panic!("not v3")
        };
        assert!(m.is_encrypted());
        assert_eq!(m.open(&bytes, &keys).unwrap(), scoped);
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        let Message::V3(m) = decode(&bad).unwrap() else {
            panic!("not v3")
        };
        assert_eq!(
            m.open(&bad, &keys).unwrap_err(),
            MessageError::Usm(UsmError::WrongDigest)
        );
    }
}

/// Arbitrary bytes into every decoder: errors, never panics (the fuzz target of the codec, run as a test).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::snmp::usm::{AuthProto, PrivProto, SecurityLevel, UsmUser};

    /// Stretching passwords costs 2 MiB of hashing: done once.
    fn keys() -> LocalKeys {
        static KEYS: std::sync::OnceLock<LocalKeys> = std::sync::OnceLock::new();
        KEYS.get_or_init(make_keys).clone()
    }

    fn make_keys() -> LocalKeys {
        UsmUser::new(
            "u",
            SecurityLevel::AuthPriv,
            Some((AuthProto::Sha1, "authpass1")),
            Some((PrivProto::Des, "privpass1")),
        )
        .map(|u| u.localize(b"engine"))
        .unwrap_or_default()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = peek_id(&bytes);
            if let Ok(Message::V3(m)) = decode(&bytes) {
                let _ = m.open(&bytes, &keys());
            }
        }

        #[test]
        fn mutated_messages_never_panic(pos in 0usize..200, val in any::<u8>(), cut in 0usize..200) {
            let scoped = ScopedPdu {
                context_engine_id: b"engine".to_vec(),
                context_name: vec![],
                pdu: AnyPdu::Pdu(crate::snmp::pdu::Pdu::request(
                    crate::snmp::pdu::PduKind::GetBulk, 7, &["1.3.6.1.2.1.2.2.1.10".parse().unwrap_or_default()])),
            };
            let usm = UsmParams { engine_id: b"engine".to_vec(), user: b"u".to_vec(), ..Default::default() };
            let mut bytes = encode_v3(7, flags::AUTH | flags::PRIV, &usm, &scoped, &keys(), 1).unwrap_or_default();
            let community = encode_community(Version::V2c, b"public", &scoped.pdu);
            for b in [&mut bytes] {
                if !b.is_empty() {
                    let n = b.len();
                    b[pos % n] = val;
                    b.truncate(n - cut % n);
                }
            }
            let _ = peek_id(&bytes);
            if let Ok(Message::V3(m)) = decode(&bytes) {
                let _ = m.open(&bytes, &keys());
            }
            let mut c = community.clone();
            let n = c.len();
            c[pos % n] = val;
            let _ = decode(&c[..n - cut % n]);
        }
    }
}
