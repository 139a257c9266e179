//! Origin AS numbers of addresses through DNS TXT records in Team Cymru's format: the TXT record of
//! `4.3.2.1.origin.asn.cymru.com` (IPv4, octets reversed) or of the reversed nibbles under
//! `origin6.asn.cymru.com` (IPv6) reads `"64500 | 192.0.2.0/24 | BR | lacnic | 2020-01-01"`.
//!
//! The resolver is configurable (any server that serves or forwards those zones); answers, including "no
//! answer", are cached for the life of the [`AsnResolver`], so a continuous MTR asks once per hop address.
//! Lookups are off unless asked for (`--asn`): they send the hop addresses to a third party.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use hickory_resolver::proto::rr::RecordType;
use serde::Serialize;

use crate::diag::dns::{self, Transport};

/// The zone of IPv4 origin lookups.
pub const ORIGIN_V4: &str = "origin.asn.cymru.com";
/// The zone of IPv6 origin lookups.
pub const ORIGIN_V6: &str = "origin6.asn.cymru.com";

/// The origin of an address's announced prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AsInfo {
    /// Origin AS number (the first, when several ASes originate the prefix).
    pub asn: u32,
    /// The announced prefix, as the record gives it.
    pub prefix: String,
    /// Country code of the registration.
    pub country: String,
}

/// The name to query for `ip`'s origin.
pub fn origin_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{ORIGIN_V4}.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(64 + ORIGIN_V6.len());
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0x0f, b >> 4));
            }
            s.push_str(ORIGIN_V6);
            s.push('.');
            s
        }
    }
}

/// Reads one TXT record in Cymru's format (quotes allowed around it); `None` when it is not one.
pub fn parse_txt(txt: &str) -> Option<AsInfo> {
    let txt = txt.trim().trim_matches('"');
    let mut fields = txt.split('|').map(str::trim);
    let asn = fields.next()?.split_whitespace().next()?.parse().ok()?;
    let prefix = fields.next().unwrap_or("").to_owned();
    let country = fields.next().unwrap_or("").to_owned();
    Some(AsInfo {
        asn,
        prefix,
        country,
    })
}

/// Looks up origin ASes through one DNS server, with a cache.
#[derive(Debug)]
pub struct AsnResolver {
    server: SocketAddr,
    timeout: Duration,
    cache: Mutex<HashMap<IpAddr, Option<AsInfo>>>,
}

impl AsnResolver {
    /// Asks `server`, waiting at most `timeout` per lookup.
    pub fn new(server: SocketAddr, timeout: Duration) -> AsnResolver {
        AsnResolver {
            server,
            timeout,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The first resolver of the system configuration.
    pub fn system(timeout: Duration) -> Result<AsnResolver, dns::DnsError> {
        let servers = dns::system_servers()?;
        let server = servers.first().copied().ok_or_else(|| {
            dns::DnsError::NoServer("no name server in the system configuration".into())
        })?;
        Ok(AsnResolver::new(server, timeout))
    }

    fn cached(&self, ip: IpAddr) -> Option<Option<AsInfo>> {
        match self.cache.lock() {
            Ok(c) => c.get(&ip).cloned(),
            Err(p) => p.into_inner().get(&ip).cloned(),
        }
    }

    /// The origin of `ip`, from the cache or the server; `None` when unknown (no record, or no answer).
    pub async fn lookup(&self, ip: IpAddr) -> Option<AsInfo> {
        if let Some(hit) = self.cached(ip) {
            return hit;
        }
        let found = match dns::query_name(&origin_name(ip), RecordType::TXT) {
            Ok(name) => {
                match dns::query(
                    self.server,
                    &name,
                    RecordType::TXT,
                    Transport::Udp,
                    self.timeout,
                )
                .await
                {
                    Ok(r) => r.answers.iter().find_map(|a| parse_txt(&a.data)),
                    Err(err) => {
                        tracing::debug!(%ip, error = %err, "AS lookup failed.");
                        // A failure is not cached: the next round may get an answer.
                        return None;
                    }
                }
            }
            Err(_) => None,
        };
        match self.cache.lock() {
            Ok(mut c) => c.insert(ip, found.clone()),
            Err(p) => p.into_inner().insert(ip, found.clone()),
        };
        found
    }

    /// The origins of `ips` (at most 16 lookups in flight); unknown addresses are absent.
    pub async fn lookup_all(&self, ips: &[IpAddr]) -> HashMap<IpAddr, AsInfo> {
        futures::stream::iter(ips.iter().copied())
            .map(|ip| async move { (ip, self.lookup(ip).await) })
            .buffer_unordered(16)
            .filter_map(|(ip, a)| async move { a.map(|a| (ip, a)) })
            .collect()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_cymru() {
        let v4: IpAddr = [192, 0, 2, 1].into();
        assert_eq!(origin_name(v4), "1.2.0.192.origin.asn.cymru.com.");
        let v6: IpAddr = "2001:db8::1".parse().unwrap_or(v4);
        assert_eq!(
            origin_name(v6),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.origin6.asn.cymru.com."
        );
    }

    #[test]
    fn txt_records_are_parsed() {
        assert_eq!(
            parse_txt("\"64500 64501 | 192.0.2.0/24 | BR | lacnic | 2020-01-01\""),
            Some(AsInfo {
                asn: 64500,
                prefix: "192.0.2.0/24".into(),
                country: "BR".into()
            })
        );
        assert_eq!(parse_txt("v=spf1 -all"), None);
        assert_eq!(parse_txt(""), None);
        assert_eq!(parse_txt("|||"), None);
    }
}
