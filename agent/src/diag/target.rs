//! Target syntax shared by the tools, pure: address ranges (`192.0.2.0/24`, `2001:db8::/120`, a bare address)
//! and port lists (`22,80,8000-8100`, the most common ports for `--top N`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A parse error in a range or port list.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// The text is not an address or an address/prefix.
    #[error("{0:?} is not an address or CIDR range")]
    BadCidr(String),
    /// The prefix is longer than the address.
    #[error("prefix /{prefix} is too long for {addr}")]
    BadPrefix {
        /// The address part.
        addr: IpAddr,
        /// The prefix length given.
        prefix: u8,
    },
    /// The range is larger than a sweep may cover.
    #[error("{0} covers more than {MAX_SWEEP} addresses")]
    TooLarge(Cidr),
    /// The port list is malformed.
    #[error("{0:?} is not a port list like 22,80,8000-8100")]
    BadPorts(String),
}

/// Most addresses one sweep may cover (a /12 of IPv4).
pub const MAX_SWEEP: u64 = 1 << 20;

/// An address range: an address and a prefix length (normalized to the network address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Cidr, TargetError> {
        let bad = || TargetError::BadCidr(s.to_owned());
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| bad())?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None => bits,
        };
        if prefix > bits {
            return Err(TargetError::BadPrefix { addr, prefix });
        }
        Ok(Cidr::new(addr, prefix))
    }
}

impl Cidr {
    /// The range of `prefix` bits around `addr` (host bits cleared). `prefix` must fit the family.
    pub fn new(addr: IpAddr, prefix: u8) -> Cidr {
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(prefix))),
        };
        Cidr { addr, prefix }
    }

    fn bits(&self) -> u8 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// Number of addresses in the range (saturating).
    pub fn size(&self) -> u64 {
        let host_bits = u32::from(self.bits() - self.prefix.min(self.bits()));
        if host_bits >= 64 {
            u64::MAX
        } else {
            1u64 << host_bits
        }
    }

    /// Whether `ip` is inside the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => u32::from(a) & mask32(self.prefix) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) & mask128(self.prefix) == u128::from(n),
            _ => false,
        }
    }

    /// Whether `other` lies entirely inside this range.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    /// The addresses to probe, in order. Like fping and nmap, IPv4 ranges larger than a /31 skip their network
    /// and broadcast addresses. Refuses ranges larger than [`MAX_SWEEP`].
    pub fn hosts(&self) -> Result<Vec<IpAddr>, TargetError> {
        if self.size() > MAX_SWEEP {
            return Err(TargetError::TooLarge(*self));
        }
        let n = self.size();
        Ok(match self.addr {
            IpAddr::V4(a) => {
                let base = u64::from(u32::from(a));
                let (first, last) = if self.prefix < 31 { (1, n - 1) } else { (0, n) };
                (first..last)
                    .filter_map(|i| u32::try_from(base + i).ok())
                    .map(|v| IpAddr::V4(Ipv4Addr::from(v)))
                    .collect()
            }
            IpAddr::V6(a) => {
                let base = u128::from(a);
                (0..n)
                    .map(|i| IpAddr::V6(Ipv6Addr::from(base + u128::from(i))))
                    .collect()
            }
        })
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix.min(128)))
    }
}

/// Parses `22,80,8000-8100` into sorted, distinct ports.
pub fn parse_ports(spec: &str) -> Result<Vec<u16>, TargetError> {
    let bad = || TargetError::BadPorts(spec.to_owned());
    let mut ports = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: u16 = if a.is_empty() {
                    1
                } else {
                    a.parse().map_err(|_| bad())?
                };
                let b: u16 = if b.is_empty() {
                    65535
                } else {
                    b.parse().map_err(|_| bad())?
                };
                if a == 0 || a > b {
                    return Err(bad());
                }
                ports.extend(a..=b);
            }
            None => {
                let p: u16 = part.parse().map_err(|_| bad())?;
                if p == 0 {
                    return Err(bad());
                }
                ports.push(p);
            }
        }
    }
    if ports.is_empty() {
        return Err(bad());
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

/// The most often open TCP ports (nmap-services frequency order, abridged to 100).
pub const TOP_TCP: [u16; 100] = [
    80, 23, 443, 21, 22, 25, 3389, 110, 445, 139, 143, 53, 135, 3306, 8080, 1723, 111, 995, 993,
    5900, 1025, 587, 8888, 199, 1720, 465, 548, 113, 81, 6001, 10000, 514, 5060, 179, 1026, 2000,
    8443, 8000, 32768, 554, 26, 1433, 49152, 2001, 515, 8008, 49154, 1027, 5666, 646, 5000, 5631,
    631, 49153, 8081, 2049, 88, 79, 5800, 106, 2121, 1110, 49155, 6000, 513, 990, 5357, 427, 49156,
    543, 544, 5101, 144, 7, 389, 8009, 3128, 444, 9999, 5009, 7070, 5190, 3000, 5432, 1900, 3986,
    13, 1029, 9, 5051, 6646, 49157, 1028, 873, 1755, 2717, 4899, 9100, 119, 37,
];

/// The most often open UDP ports (nmap-services frequency order, abridged to 30).
pub const TOP_UDP: [u16; 30] = [
    631, 161, 137, 123, 138, 1434, 445, 135, 67, 53, 139, 500, 68, 520, 1900, 4500, 514, 49152,
    162, 69, 5353, 111, 49154, 1701, 998, 996, 997, 999, 3283, 49153,
];

/// The first `n` ports of a frequency list, sorted.
pub fn top_ports(list: &[u16], n: usize) -> Vec<u16> {
    let mut v: Vec<u16> = list.iter().copied().take(n).collect();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse_normalizes_and_counts() {
        let c: Cidr = "192.0.2.77/24"
            .parse()
            .unwrap_or(Cidr::new(IpAddr::from([0, 0, 0, 0]), 0));
        assert_eq!(c.to_string(), "192.0.2.0/24");
        assert_eq!(c.size(), 256);
        let hosts = c.hosts().unwrap_or_default();
        assert_eq!(hosts.len(), 254);
        assert_eq!(hosts[0], IpAddr::from([192, 0, 2, 1]));
        assert_eq!(hosts[253], IpAddr::from([192, 0, 2, 254]));
        let one: Cidr = "2001:db8::5".parse().unwrap_or(c);
        assert_eq!(
            (one.prefix, one.hosts().unwrap_or_default().len()),
            (128, 1)
        );
        assert_eq!(
            "127.0.0.0/16"
                .parse::<Cidr>()
                .map(|c| c.hosts().map(|h| h.len())),
            Ok(Ok(65534))
        );
    }

    #[test]
    fn cidr_errors() {
        assert!(matches!(
            "192.0.2.0/33".parse::<Cidr>(),
            Err(TargetError::BadPrefix { .. })
        ));
        assert!(matches!(
            "nope".parse::<Cidr>(),
            Err(TargetError::BadCidr(_))
        ));
        let big: Cidr = "10.0.0.0/8"
            .parse()
            .unwrap_or(Cidr::new(IpAddr::from([0, 0, 0, 0]), 32));
        assert!(matches!(big.hosts(), Err(TargetError::TooLarge(_))));
        let v6: Cidr = "2001:db8::/32".parse().unwrap_or(big);
        assert!(matches!(v6.hosts(), Err(TargetError::TooLarge(_))));
    }

    #[test]
    fn cidr_containment() {
        let allowed: Cidr = "198.51.100.0/24"
            .parse()
            .unwrap_or(Cidr::new(IpAddr::from([0, 0, 0, 0]), 32));
        assert!(allowed.covers(&"198.51.100.128/25".parse().unwrap_or(allowed)));
        assert!(!allowed.covers(&"198.51.0.0/16".parse().unwrap_or(allowed)));
        assert!(!allowed.contains("2001:db8::1".parse().unwrap_or(allowed.addr)));
    }

    #[test]
    fn ports() {
        assert_eq!(
            parse_ports("80,22,8000-8002,22"),
            Ok(vec![22, 80, 8000, 8001, 8002])
        );
        assert_eq!(parse_ports("-").map(|p| p.len()), Ok(65535));
        assert!(parse_ports("0").is_err());
        assert!(parse_ports("9-3").is_err());
        assert!(parse_ports("http").is_err());
        assert_eq!(top_ports(&TOP_TCP, 3), vec![23, 80, 443]);
    }
}
