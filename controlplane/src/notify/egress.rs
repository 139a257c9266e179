//! Where tenant-chosen destinations may lead. Webhook URLs, push endpoints and a channel's own SMTP server are
//! typed by tenants; without a check, a tenant could make the control plane call services on its own network
//! (PostgreSQL's admin port, a cloud metadata endpoint, another tenant's internal tools) and read the errors back
//! from its delivery list. So unless `notify.allow_private_targets` is set, they may reach public addresses only:
//!
//! - host names are resolved by [`PublicOnly`], the HTTP client's resolver, which drops every non-public address
//!   (a name that resolves only to such addresses fails); the address connected to is one it returned, so a
//!   second lookup (DNS rebinding) cannot swap it;
//! - address literals (`https://10.0.0.5/`), which the client does not resolve, are checked by [`check_url`];
//! - a channel's SMTP host is resolved and checked by [`check_host`] before the session (the mail library resolves
//!   it again: a rebinding race remains possible there, and is accepted for SMTP).
//!
//! The Telegram URL and the SMTP server of the configuration file are the operator's and are not checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// True for an address a tenant's destination may have: not loopback, private, link-local, shared (CGNAT),
/// multicast, documentation, benchmarking, reserved or unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) carries an IPv4 address: judge that one.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return is_public_v4(Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

/// Refuses a URL whose host is a non-public address literal. Names are left to [`PublicOnly`].
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
    let host = parsed.host_str().ok_or("the URL has no host")?;
    let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return Ok(());
    };
    if is_public(ip) {
        Ok(())
    } else {
        Err(format!(
            "{ip} is not a public address (notify.allow_private_targets is off)"
        ))
    }
}

/// Resolves `host` and refuses it unless every address is public.
pub async fn check_host(host: &str, port: u16) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    match addrs.iter().find(|a| !is_public(a.ip())) {
        Some(bad) => Err(format!(
            "{host} resolves to {}, not a public address (notify.allow_private_targets is off)",
            bad.ip()
        )),
        None if addrs.is_empty() => Err(format!("{host} has no address")),
        None => Ok(()),
    }
}

/// The HTTP client's resolver when private targets are not allowed: the system's answers, public ones only.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{host} resolves to no public address (notify.allow_private_targets is off)"
                    ),
                ))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap())
    }

    #[test]
    fn internal_addresses_are_not_public() {
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!public(s), "{s} must not be public");
        }
        for s in [
            "8.8.8.8",
            "200.160.2.3",
            "2804:14c::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(public(s), "{s} is public");
        }
    }

    #[test]
    fn literal_hosts_are_checked_and_names_left_to_the_resolver() {
        assert!(check_url("http://127.0.0.1:8080/hook").is_err());
        assert!(check_url("https://[::1]/hook").is_err());
        assert!(check_url("https://169.254.169.254/latest/meta-data").is_err());
        assert!(check_url("https://203.0.113.9/hook").is_err());
        assert!(check_url("https://8.8.8.8/hook").is_ok());
        assert!(check_url("https://hooks.example.net/x").is_ok());
        assert!(check_url("not a url").is_err());
    }

    #[tokio::test]
    async fn names_of_internal_addresses_resolve_to_nothing() {
        let err = PublicOnly
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("localhost is refused");
        assert!(err.to_string().contains("no public address"), "{err}");
        assert!(check_host("localhost", 25).await.is_err());
    }
}
