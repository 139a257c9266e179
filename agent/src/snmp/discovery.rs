//! Discovery: sweep networks, probe each address with each candidate credential (rate-limited), fingerprint what
//! answers. The caller decides what is new or changed (the daemon compares with what it reported before).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;

use super::client::{Credentials, Session, SnmpError, Target};
use super::engine::Engine;
use super::fingerprint::{self, Fingerprint, Rules};
use super::message::Version;

/// Most addresses one CIDR may expand to.
pub const MAX_HOSTS: usize = 65_536;

/// A device found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Found {
    /// Its address.
    pub addr: SocketAddr,
    /// Name of the credential that worked.
    pub credentials: String,
    /// What it is.
    pub fingerprint: Fingerprint,
}

/// Expands `a.b.c.d/n` (or one address) into host addresses (network and broadcast excluded below /31).
pub fn expand_cidr(s: &str) -> Result<Vec<IpAddr>, String> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => {
            let ip: IpAddr = ip.parse().map_err(|_| format!("bad CIDR {s:?}"))?;
            let len: u32 = len
                .parse()
                .map_err(|_| format!("bad prefix length in {s:?}"))?;
            (ip, len)
        }
        None => {
            let ip: IpAddr = s.parse().map_err(|_| format!("bad address {s:?}"))?;
            return Ok(vec![ip]);
        }
    };
    match ip {
        IpAddr::V4(v4) => {
            if !(16..=32).contains(&len) {
                return Err(format!("{s:?}: IPv4 prefix must be /16 to /32"));
            }
            let base = u32::from(v4) & (u32::MAX.checked_shl(32 - len).unwrap_or(0));
            let n = 1u64 << (32 - len);
            let (first, last) = if n <= 2 { (0, n) } else { (1, n - 1) };
            Ok((first..last)
                .map(|i| IpAddr::V4(Ipv4Addr::from(base + i as u32)))
                .collect())
        }
        IpAddr::V6(v6) => {
            if !(112..=128).contains(&len) {
                return Err(format!("{s:?}: IPv6 prefix must be /112 to /128"));
            }
            let base = u128::from(v6) & (u128::MAX.checked_shl(128 - len).unwrap_or(0));
            let n = 1u128 << (128 - len);
            let v: Vec<IpAddr> = (0..n)
                .map(|i| IpAddr::V6(Ipv6Addr::from(base + i)))
                .collect();
            if v.len() > MAX_HOSTS {
                return Err(format!("{s:?} has too many addresses"));
            }
            Ok(v)
        }
    }
}

/// Whether `ip` is one of the addresses `cidrs` expand to (CIDRs that do not parse contain nothing).
pub fn in_cidrs(ip: IpAddr, cidrs: &[String]) -> bool {
    cidrs.iter().any(|c| {
        let (net, len) = match c.split_once('/') {
            Some((n, l)) => (n.parse::<IpAddr>(), l.parse::<u32>()),
            None => (
                c.parse::<IpAddr>(),
                Ok(if c.contains(':') { 128 } else { 32 }),
            ),
        };
        match (net, len, ip) {
            (Ok(IpAddr::V4(n)), Ok(len), IpAddr::V4(a)) if len <= 32 => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (Ok(IpAddr::V6(n)), Ok(len), IpAddr::V6(a)) if len <= 128 => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    })
}

/// The hosts of `cidrs` that answer an ICMP echo (one round, 1 s timeout, `rate_per_sec` probes per second), as
/// `/32` or `/128` entries for [`sweep`]; None when raw sockets are not available (the caller probes every address).
pub async fn live_hosts(
    cidrs: &[String],
    rate_per_sec: u32,
) -> Result<Option<Vec<String>>, String> {
    let mut hosts = Vec::new();
    for c in cidrs {
        hosts.extend(expand_cidr(c)?);
    }
    let opts = crate::diag::echo::EchoSweep {
        count: 1,
        timeout: Duration::from_secs(1),
        rate: rate_per_sec.max(1),
    };
    let h = hosts.clone();
    let cancel = tokio_util::sync::CancellationToken::new();
    let result =
        tokio::task::spawn_blocking(move || crate::diag::echo::sweep_blocking(&h, opts, &cancel))
            .await
            .map_err(|e| format!("ICMP sweep: {e}"))?;
    match result {
        Ok(rtts) => Ok(Some(
            hosts
                .iter()
                .zip(rtts)
                .filter(|(_, rtt)| *rtt != u32::MAX)
                .map(|(ip, _)| ip.to_string())
                .collect(),
        )),
        Err(crate::diag::echo::EchoError::NotPrivileged(e)) => {
            tracing::warn!(error = %e, "No ICMP sweep before SNMP discovery: probing every address.");
            Ok(None)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Probes every address of `cidrs` on `port` with each credential in turn (first that answers wins), at most
/// `rate_per_sec` probes started per second and 256 at once; returns what answered, fingerprinted.
pub async fn sweep(
    engine: &Engine,
    rules: &Rules,
    cidrs: &[String],
    port: u16,
    credentials: &[(String, Version, Credentials)],
    timeout: Duration,
    rate_per_sec: u32,
) -> Result<Vec<Found>, String> {
    sweep_reporting(
        engine,
        rules,
        cidrs,
        port,
        credentials,
        timeout,
        rate_per_sec,
        &mut |_| {},
    )
    .await
}

/// [`sweep`], calling `on_found` with each device as soon as it answers.
#[allow(clippy::too_many_arguments)]
pub async fn sweep_reporting(
    engine: &Engine,
    rules: &Rules,
    cidrs: &[String],
    port: u16,
    credentials: &[(String, Version, Credentials)],
    timeout: Duration,
    rate_per_sec: u32,
    on_found: &mut (dyn FnMut(&Found) + Send),
) -> Result<Vec<Found>, String> {
    let mut addrs = Vec::new();
    for c in cidrs {
        addrs.extend(expand_cidr(c)?);
    }
    let gap = Duration::from_secs_f64(1.0 / f64::from(rate_per_sec.max(1)));
    let mut ticker = tokio::time::interval(gap);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = addrs.into_iter().map(|ip| SocketAddr::new(ip, port));
    let mut next = pending.next();
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut found: Vec<Option<Found>> = Vec::new();
    loop {
        tokio::select! {
            Some(r) = inflight.next(), if !inflight.is_empty() => {
                if let Some(f) = &r {
                    on_found(f);
                }
                found.push(r);
            }
            _ = ticker.tick(), if next.is_some() && inflight.len() < 256 => {
                if let Some(addr) = next.take() {
                    inflight.push(probe(engine, rules, addr, credentials, timeout));
                    next = pending.next();
                }
            }
            else => break,
        }
    }
    let mut out: Vec<Found> = found.into_iter().flatten().collect();
    out.sort_by_key(|f| f.addr);
    Ok(out)
}

async fn probe(
    engine: &Engine,
    rules: &Rules,
    addr: SocketAddr,
    credentials: &[(String, Version, Credentials)],
    timeout: Duration,
) -> Option<Found> {
    for (name, version, creds) in credentials {
        // Every request (and its retry) draws from the process-wide packet budget, like the diagnostics.
        crate::diag::safety::global().acquire(2).await;
        let target = Target {
            addr,
            version: *version,
            credentials: creds.clone(),
            timeout,
            retries: 1,
            max_repetitions: 10,
            context: Vec::new(),
        };
        let session = Session::new(engine.clone(), target);
        match fingerprint::fingerprint(&session, rules).await {
            Ok(fp) => {
                return Some(Found {
                    addr,
                    credentials: name.clone(),
                    fingerprint: fp,
                });
            }
            Err(e @ SnmpError::Exchange(_)) if *version != Version::V3 => {
                tracing::trace!(%addr, error = %e, "No answer.");
            }
            Err(e) => tracing::trace!(%addr, error = %e, "Probe failed."),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(expand_cidr("192.0.2.0/30").unwrap().len(), 2);
        assert_eq!(expand_cidr("192.0.2.0/24").unwrap().len(), 254);
        assert_eq!(
            expand_cidr("192.0.2.7/32").unwrap(),
            vec!["192.0.2.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(expand_cidr("2001:db8::/126").unwrap().len(), 4);
        assert!(expand_cidr("10.0.0.0/8").is_err());
        assert!(expand_cidr("nope/24").is_err());
        let nets = ["192.0.2.0/24".to_owned(), "2001:db8::7".to_owned()];
        assert!(in_cidrs("192.0.2.9".parse().unwrap(), &nets));
        assert!(!in_cidrs("192.0.3.9".parse().unwrap(), &nets));
        assert!(in_cidrs("2001:db8::7".parse().unwrap(), &nets));
        assert!(!in_cidrs("2001:db8::8".parse().unwrap(), &nets));
        assert!(!in_cidrs(
            "192.0.2.9".parse().unwrap(),
            &["bad/99".to_owned()]
        ));
    }
}
