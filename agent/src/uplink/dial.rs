//! Resolving `HOST:PORT` and opening a QUIC connection to the control plane.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Why no connection could be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The name did not resolve, or resolved to nothing.
    #[error("cannot resolve {server}: {reason}")]
    Resolve {
        /// `HOST:PORT` as configured.
        server: String,
        /// Why.
        reason: String,
    },
    /// No local UDP socket could be bound.
    #[error("cannot bind a local UDP socket: {0}")]
    Bind(#[source] std::io::Error),
    /// Every address failed; the error of the last one.
    #[error("cannot connect to {server} ({addr}): {reason}")]
    Connect {
        /// `HOST:PORT` as configured.
        server: String,
        /// The address tried last.
        addr: SocketAddr,
        /// Why it failed.
        reason: String,
        /// The QUIC error, when the handshake itself failed.
        #[source]
        source: Option<quinn::ConnectionError>,
    },
}

/// Resolves `server` (`HOST:PORT`, resolved on every call so that DNS changes are followed).
pub async fn resolve(server: &str) -> Result<Vec<SocketAddr>, DialError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(server)
        .await
        .map_err(|err| DialError::Resolve {
            server: server.to_string(),
            reason: err.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(DialError::Resolve {
            server: server.to_string(),
            reason: "no address".into(),
        });
    }
    Ok(addrs)
}

/// Connects to the first address of `server` that answers, asking for [`octoisp_shared::SERVER_NAME`]. Returns the
/// endpoint (keep it alive as long as the connection) and the connection.
pub async fn connect(
    server: &str,
    config: quinn::ClientConfig,
    timeout: Duration,
) -> Result<(quinn::Endpoint, quinn::Connection), DialError> {
    let addrs = resolve(server).await?;
    let mut last = None;
    for addr in addrs {
        let local: SocketAddr = if addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = quinn::Endpoint::client(local).map_err(DialError::Bind)?;
        let connecting =
            match endpoint.connect_with(config.clone(), addr, octoisp_shared::SERVER_NAME) {
                Ok(connecting) => connecting,
                Err(err) => {
                    last = Some(DialError::Connect {
                        server: server.into(),
                        addr,
                        reason: err.to_string(),
                        source: None,
                    });
                    continue;
                }
            };
        match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(conn)) => return Ok((endpoint, conn)),
            Ok(Err(err)) => {
                last = Some(DialError::Connect {
                    server: server.into(),
                    addr,
                    reason: err.to_string(),
                    source: Some(err),
                });
            }
            Err(_) => {
                last = Some(DialError::Connect {
                    server: server.into(),
                    addr,
                    reason: format!("no answer within {timeout:?}"),
                    source: None,
                });
            }
        }
    }
    Err(last.unwrap_or_else(|| DialError::Resolve {
        server: server.into(),
        reason: "no address".into(),
    }))
}
