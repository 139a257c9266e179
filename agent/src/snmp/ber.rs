//! The subset of ASN.1 BER that SNMP uses, over byte slices: no I/O, no panics on any input.
//!
//! Decoding borrows from the input ([`Reader`]); encoding appends to a `Vec<u8>`. Lengths are definite (short or
//! long form up to 4 octets); indefinite lengths, which SNMP forbids, are rejected.

use std::fmt;
use std::str::FromStr;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside an element.
    #[error("truncated at byte {0}")]
    Truncated(usize),
    /// A length was indefinite or longer than 4 octets.
    #[error("bad length at byte {0}")]
    BadLength(usize),
    /// A tag other than the expected one.
    #[error("expected tag 0x{expected:02x}, found 0x{found:02x}")]
    UnexpectedTag {
        /// What the grammar wanted.
        expected: u8,
        /// What the input had.
        found: u8,
    },
    /// An integer does not fit its type.
    #[error("integer out of range")]
    IntegerRange,
    /// An object identifier is malformed.
    #[error("malformed object identifier")]
    BadOid,
    /// Something else is wrong with the structure.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// Tag numbers used by SNMP.
pub mod tag {
    /// INTEGER.
    pub const INTEGER: u8 = 0x02;
    /// OCTET STRING.
    pub const OCTET_STRING: u8 = 0x04;
    /// NULL.
    pub const NULL: u8 = 0x05;
    /// OBJECT IDENTIFIER.
    pub const OID: u8 = 0x06;
    /// SEQUENCE.
    pub const SEQUENCE: u8 = 0x30;
    /// IpAddress.
    pub const IP_ADDRESS: u8 = 0x40;
    /// Counter32.
    pub const COUNTER32: u8 = 0x41;
    /// Gauge32 / Unsigned32.
    pub const GAUGE32: u8 = 0x42;
    /// TimeTicks.
    pub const TIMETICKS: u8 = 0x43;
    /// Opaque.
    pub const OPAQUE: u8 = 0x44;
    /// Counter64.
    pub const COUNTER64: u8 = 0x46;
    /// noSuchObject exception.
    pub const NO_SUCH_OBJECT: u8 = 0x80;
    /// noSuchInstance exception.
    pub const NO_SUCH_INSTANCE: u8 = 0x81;
    /// endOfMibView exception.
    pub const END_OF_MIB_VIEW: u8 = 0x82;
}

/// An object identifier.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Oid(pub Vec<u32>);

impl Oid {
    /// The arcs.
    pub fn arcs(&self) -> &[u32] {
        &self.0
    }

    /// Whether `self` is `prefix` or below it.
    pub fn starts_with(&self, prefix: &Oid) -> bool {
        self.0.starts_with(&prefix.0)
    }

    /// The arcs after `prefix`, when `self` is below it.
    pub fn suffix(&self, prefix: &Oid) -> Option<&[u32]> {
        self.0.strip_prefix(prefix.0.as_slice())
    }

    /// `self` with `arcs` appended.
    pub fn child(&self, arcs: &[u32]) -> Oid {
        let mut v = self.0.clone();
        v.extend_from_slice(arcs);
        Oid(v)
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid({self})")
    }
}

impl FromStr for Oid {
    type Err = DecodeError;

    /// Parses `1.3.6.1.2.1.1.1.0` (a leading dot is accepted).
    fn from_str(s: &str) -> Result<Oid, DecodeError> {
        let s = s.strip_prefix('.').unwrap_or(s);
        let arcs: Result<Vec<u32>, _> = s.split('.').map(str::parse::<u32>).collect();
        match arcs {
            Ok(a) if a.len() >= 2 && a[0] <= 2 => Ok(Oid(a)),
            _ => Err(DecodeError::BadOid),
        }
    }
}

impl serde::Serialize for Oid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Oid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Oid, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::custom(format!("not an OID: {s:?}")))
    }
}

/// A cursor over BER elements.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf` in the outermost input, for error positions.
    base: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            base: 0,
        }
    }

    /// Whether every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The next tag without consuming it.
    pub fn peek_tag(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Reads one element: its tag and contents.
    pub fn read_any(&mut self) -> Result<(u8, &'a [u8]), DecodeError> {
        let at = self.base + self.pos;
        let tag = *self.buf.get(self.pos).ok_or(DecodeError::Truncated(at))?;
        let first = *self
            .buf
            .get(self.pos + 1)
            .ok_or(DecodeError::Truncated(at + 1))?;
        let mut p = self.pos + 2;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err(DecodeError::BadLength(at + 1));
            }
            let bytes = self
                .buf
                .get(p..p + n)
                .ok_or(DecodeError::Truncated(self.base + p))?;
            p += n;
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        };
        let end = p.checked_add(len).ok_or(DecodeError::BadLength(at))?;
        let content = self
            .buf
            .get(p..end)
            .ok_or(DecodeError::Truncated(self.base + self.buf.len()))?;
        self.pos = end;
        Ok((tag, content))
    }

    /// Reads one element that must have tag `expected`.
    pub fn read(&mut self, expected: u8) -> Result<&'a [u8], DecodeError> {
        let (found, content) = self.read_any()?;
        if found != expected {
            return Err(DecodeError::UnexpectedTag { expected, found });
        }
        Ok(content)
    }

    /// Enters a constructed element with tag `expected`.
    pub fn enter(&mut self, expected: u8) -> Result<Reader<'a>, DecodeError> {
        let content = self.read(expected)?;
        Ok(self.sub(content))
    }

    /// A reader over `content`, a slice previously returned by this reader.
    pub fn sub(&self, content: &'a [u8]) -> Reader<'a> {
        Reader {
            buf: content,
            pos: 0,
            base: self.base + offset_in(self.buf, content).unwrap_or(0),
        }
    }

    /// Reads an INTEGER as i64.
    pub fn read_int(&mut self) -> Result<i64, DecodeError> {
        let c = self.read(tag::INTEGER)?;
        decode_int(c)
    }

    /// Reads an INTEGER that must fit an i32.
    pub fn read_i32(&mut self) -> Result<i32, DecodeError> {
        i32::try_from(self.read_int()?).map_err(|_| DecodeError::IntegerRange)
    }

    /// Reads an OCTET STRING.
    pub fn read_octets(&mut self) -> Result<&'a [u8], DecodeError> {
        self.read(tag::OCTET_STRING)
    }

    /// Reads an OBJECT IDENTIFIER.
    pub fn read_oid(&mut self) -> Result<Oid, DecodeError> {
        decode_oid(self.read(tag::OID)?)
    }
}

/// Position of `inner` inside `outer`, when `inner` is a sub-slice of it.
pub fn offset_in(outer: &[u8], inner: &[u8]) -> Option<usize> {
    let o = outer.as_ptr() as usize;
    let i = inner.as_ptr() as usize;
    (i >= o && i + inner.len() <= o + outer.len()).then(|| i - o)
}

/// Decodes two's-complement INTEGER contents (up to 8 octets, or 9 with a leading zero).
pub fn decode_int(c: &[u8]) -> Result<i64, DecodeError> {
    if c.is_empty() || c.len() > 8 {
        return Err(DecodeError::IntegerRange);
    }
    let neg = c[0] & 0x80 != 0;
    let mut v: i64 = if neg { -1 } else { 0 };
    for b in c {
        v = (v << 8) | i64::from(*b);
    }
    Ok(v)
}

/// Decodes unsigned contents (Counter32, Gauge32, TimeTicks, Counter64) up to `max_bits`.
pub fn decode_uint(c: &[u8], max_bits: u32) -> Result<u64, DecodeError> {
    let c = match c {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => c,
    };
    if c.is_empty() || c.len() > 8 {
        return Err(DecodeError::IntegerRange);
    }
    let v = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    if max_bits < 64 && v >> max_bits != 0 {
        return Err(DecodeError::IntegerRange);
    }
    Ok(v)
}

/// Decodes OBJECT IDENTIFIER contents.
pub fn decode_oid(c: &[u8]) -> Result<Oid, DecodeError> {
    if c.is_empty() || c.len() > 1024 {
        return Err(DecodeError::BadOid);
    }
    let mut arcs = Vec::with_capacity(c.len() + 1);
    let mut acc: u64 = 0;
    let mut first = true;
    for (i, b) in c.iter().enumerate() {
        acc = (acc << 7) | u64::from(b & 0x7f);
        if acc > u64::from(u32::MAX) + 80 {
            return Err(DecodeError::BadOid);
        }
        if b & 0x80 == 0 {
            if first {
                let (a, b) = match acc {
                    0..=39 => (0, acc),
                    40..=79 => (1, acc - 40),
                    _ => (2, acc - 80),
                };
                arcs.push(a);
                arcs.push(u32::try_from(b).map_err(|_| DecodeError::BadOid)?);
                first = false;
            } else {
                arcs.push(u32::try_from(acc).map_err(|_| DecodeError::BadOid)?);
            }
            acc = 0;
        } else if i == c.len() - 1 {
            return Err(DecodeError::BadOid);
        }
    }
    Ok(Oid(arcs))
}

/// Appends a tag and a definite length.
pub fn put_header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Length of a header for contents of `len` bytes.
pub fn header_len(len: usize) -> usize {
    match len {
        0..=0x7f => 2,
        0x80..=0xff => 3,
        0x100..=0xffff => 4,
        0x1_0000..=0xff_ffff => 5,
        _ => 6,
    }
}

/// Appends a primitive element.
pub fn put(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    put_header(out, tag, content.len());
    out.extend_from_slice(content);
}

/// Appends a signed INTEGER-like element with `tag`.
pub fn put_int(out: &mut Vec<u8>, tag: u8, v: i64) {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    put(out, tag, &bytes[start..]);
}

/// Appends an unsigned element (Counter32, Gauge32, TimeTicks, Counter64) with `tag`.
pub fn put_uint(out: &mut Vec<u8>, tag: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    let mut content = Vec::with_capacity(9);
    if bytes[skip] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(&bytes[skip..]);
    put(out, tag, &content);
}

/// Appends an OBJECT IDENTIFIER.
pub fn put_oid(out: &mut Vec<u8>, oid: &Oid) {
    let mut c = Vec::with_capacity(oid.0.len() + 4);
    let arcs = &oid.0;
    let (first, rest) = match arcs.len() {
        0 => (0u64, &arcs[..]),
        1 => (u64::from(arcs[0]) * 40, &arcs[1..]),
        _ => (u64::from(arcs[0]) * 40 + u64::from(arcs[1]), &arcs[2..]),
    };
    put_base128(&mut c, first);
    for a in rest {
        put_base128(&mut c, u64::from(*a));
    }
    put(out, tag::OID, &c);
}

fn put_base128(out: &mut Vec<u8>, v: u64) {
    let mut groups = [0u8; 10];
    let mut n = 0;
    let mut x = v;
    loop {
        groups[n] = (x & 0x7f) as u8;
        n += 1;
        x >>= 7;
        if x == 0 {
            break;
        }
    }
    for i in (0..n).rev() {
        out.push(groups[i] | if i > 0 { 0x80 } else { 0 });
    }
}

/// Wraps `content` in a constructed element with `tag`.
pub fn put_constructed(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    put(out, tag, content);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip() {
        for v in [
            0i64,
            1,
            127,
            128,
            255,
            256,
            -1,
            -128,
            -129,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = Vec::new();
            put_int(&mut out, tag::INTEGER, v);
            assert_eq!(Reader::new(&out).read_int().unwrap(), v, "{v}");
        }
        for v in [0u64, 127, 128, 255, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_uint(&mut out, tag::COUNTER64, v);
            let c = Reader::new(&out).read(tag::COUNTER64).unwrap();
            assert_eq!(decode_uint(c, 64).unwrap(), v);
        }
    }

    #[test]
    fn oids_round_trip() {
        for s in [
            "1.3.6.1.2.1.1.1.0",
            "1.3.6.1.4.1.2011.6.128.1.1.2.51.1.4.4194304000.7",
            "2.999.4294967295",
        ] {
            let oid: Oid = s.parse().unwrap();
            let mut out = Vec::new();
            put_oid(&mut out, &oid);
            assert_eq!(Reader::new(&out).read_oid().unwrap().to_string(), s);
        }
        assert!("1.3.x".parse::<Oid>().is_err());
        assert!(decode_oid(&[0x2b, 0x86]).is_err());
    }

    #[test]
    fn long_lengths() {
        let content = vec![7u8; 300];
        let mut out = Vec::new();
        put(&mut out, tag::OCTET_STRING, &content);
        assert_eq!(out.len(), header_len(300) + 300);
        assert_eq!(Reader::new(&out).read_octets().unwrap(), &content[..]);
        assert!(Reader::new(&out[..100]).read_octets().is_err());
        assert!(
            Reader::new(&[0x04, 0x85, 1, 1, 1, 1, 1])
                .read_octets()
                .is_err()
        );
    }
}
