//! Reverse DNS (PTR) of the addresses a tool found, through hickory-resolver and the system's resolver
//! configuration, with a bounded number of lookups in flight and a deadline per lookup.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{Name, RecordType};

/// Looks up the names of `ips` (at most 64 lookups in flight, `timeout` each); addresses without a name, or
/// whose lookup failed, are absent from the map. Returns an empty map when no resolver is configured.
pub async fn reverse_names(ips: &[IpAddr], timeout: Duration) -> HashMap<IpAddr, String> {
    let resolver = match TokioResolver::builder_tokio().and_then(|b| b.build()) {
        Ok(r) => r,
        Err(err) => {
            tracing::warn!(error = %err, "Reverse DNS unavailable: no resolver configuration.");
            return HashMap::new();
        }
    };
    futures::stream::iter(ips.iter().copied())
        .map(|ip| {
            let resolver = &resolver;
            async move {
                let name =
                    tokio::time::timeout(timeout, resolver.lookup(Name::from(ip), RecordType::PTR))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .and_then(|l| {
                            l.answers().iter().find_map(|r| match &r.data {
                                hickory_resolver::proto::rr::RData::PTR(p) => Some(p.0.to_string()),
                                _ => None,
                            })
                        })
                        .map(|n| n.trim_end_matches('.').to_owned());
                (ip, name)
            }
        })
        .buffer_unordered(64)
        .filter_map(|(ip, n)| async move { n.map(|n| (ip, n)) })
        .collect()
        .await
}
