//! DNS queries to chosen servers, side by side: answers with TTLs, response code, header flags (AA, TC, RD,
//! RA, AD), time, over UDP (falling back to TCP when truncated, like dig) or TCP.
//!
//! Messages are built and parsed with hickory-proto (re-exported by hickory-resolver); the system's servers
//! come from hickory-resolver's reading of the system configuration. The resolver's lookup API is not used
//! for the queries themselves because it hides what a diagnostic must show: the response code of a failed
//! query, the AD flag, which server answered and how long it took.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::{Message, MessageType, OpCode, Query};
use hickory_resolver::proto::rr::{Name, RecordType};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The name or type is not valid.
    #[error("bad query {0}")]
    BadQuery(String),
    /// No server given and none in the system configuration.
    #[error("no DNS server configured: {0}")]
    NoServer(String),
    /// Network error talking to a server.
    #[error("{server}: {source}")]
    Io {
        /// The server.
        server: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// No answer within the timeout.
    #[error("{0}: timed out")]
    Timeout(SocketAddr),
    /// The answer could not be parsed or does not match the query.
    #[error("{server}: bad response: {reason}")]
    BadResponse {
        /// The server.
        server: SocketAddr,
        /// What is wrong.
        reason: String,
    },
}

/// Transport of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP (TCP again when the answer is truncated).
    Udp,
    /// TCP.
    Tcp,
}

/// One record of an answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// Owner name.
    pub name: String,
    /// Record type (`A`, `MX`, ...).
    #[serde(rename = "type")]
    pub rtype: String,
    /// Time to live, seconds.
    pub ttl: u32,
    /// Record data in presentation format.
    pub data: String,
}

/// One server's response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsResponse {
    /// The server asked.
    pub server: SocketAddr,
    /// The transport that carried the final answer.
    pub transport: Transport,
    /// Response code (`NoError`, `NXDomain`, `ServFail`, ...).
    pub rcode: String,
    /// Authoritative answer.
    pub aa: bool,
    /// Truncated.
    pub tc: bool,
    /// Recursion available.
    pub ra: bool,
    /// Authentic data: the server validated the answer with DNSSEC.
    pub ad: bool,
    /// Answer section.
    pub answers: Vec<Answer>,
    /// Authority section.
    pub authority: Vec<Answer>,
    /// Time from sending the query to the answer, ms.
    pub time_ms: f64,
}

/// Parses a record type name (`A`, `aaaa`, `MX`...).
pub fn parse_type(s: &str) -> Result<RecordType, DnsError> {
    RecordType::from_str(&s.to_ascii_uppercase())
        .map_err(|_| DnsError::BadQuery(format!("type {s}")))
}

/// The query name: for PTR, an address becomes its `in-addr.arpa`/`ip6.arpa` name.
pub fn query_name(name: &str, rtype: RecordType) -> Result<Name, DnsError> {
    if rtype == RecordType::PTR
        && let Ok(ip) = name.parse::<IpAddr>()
    {
        return Ok(Name::from(ip));
    }
    let mut n = Name::from_str(name).map_err(|e| DnsError::BadQuery(format!("{name}: {e}")))?;
    n.set_fqdn(true);
    Ok(n)
}

/// The system's DNS servers (port 53), from hickory-resolver's reading of `/etc/resolv.conf`.
pub fn system_servers() -> Result<Vec<SocketAddr>, DnsError> {
    let (cfg, _) = hickory_resolver::system_conf::read_system_conf()
        .map_err(|e| DnsError::NoServer(e.to_string()))?;
    let mut v: Vec<SocketAddr> = cfg
        .name_servers()
        .iter()
        .map(|ns| SocketAddr::new(ns.ip, 53))
        .collect();
    v.dedup();
    if v.is_empty() {
        return Err(DnsError::NoServer("no nameserver line".into()));
    }
    Ok(v)
}

/// Parses `IP` or `IP:PORT` or `[IPv6]:PORT`.
pub fn parse_server(s: &str) -> Result<SocketAddr, DnsError> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    s.trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| DnsError::BadQuery(format!("server {s}")))
}

/// Builds the query message: recursion desired, AD requested (RFC 6840), EDNS with a 1232-byte payload.
fn build(name: &Name, rtype: RecordType) -> Result<(u16, Vec<u8>), DnsError> {
    let id: u16 = rand::random();
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.metadata.authentic_data = true;
    m.add_query(Query::query(name.clone(), rtype));
    let mut edns = hickory_resolver::proto::op::Edns::new();
    edns.set_max_payload(1232);
    m.set_edns(edns);
    let bytes = m.to_vec().map_err(|e| DnsError::BadQuery(e.to_string()))?;
    Ok((id, bytes))
}

/// Asks `server` for `name`/`rtype`.
pub async fn query(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    transport: Transport,
    timeout: Duration,
) -> Result<DnsResponse, DnsError> {
    let (id, bytes) = build(name, rtype)?;
    let t0 = Instant::now();
    let mut used = transport;
    let mut raw = match transport {
        Transport::Udp => udp_exchange(server, id, &bytes, timeout).await?,
        Transport::Tcp => tcp_exchange(server, &bytes, timeout).await?,
    };
    let mut msg = parse(server, id, &raw)?;
    if msg.metadata.truncation && transport == Transport::Udp {
        raw = tcp_exchange(server, &bytes, timeout).await?;
        msg = parse(server, id, &raw)?;
        used = Transport::Tcp;
    }
    let time_ms = t0.elapsed().as_secs_f64() * 1e3;
    let conv = |r: &hickory_resolver::proto::rr::Record| Answer {
        name: r.name.to_string(),
        rtype: r.record_type().to_string(),
        ttl: r.ttl,
        data: r.data.to_string(),
    };
    Ok(DnsResponse {
        server,
        transport: used,
        rcode: format!("{:?}", msg.metadata.response_code),
        aa: msg.metadata.authoritative,
        tc: msg.metadata.truncation,
        ra: msg.metadata.recursion_available,
        ad: msg.metadata.authentic_data,
        answers: msg.answers.iter().map(conv).collect(),
        authority: msg.authorities.iter().map(conv).collect(),
        time_ms,
    })
}

fn parse(server: SocketAddr, id: u16, raw: &[u8]) -> Result<Message, DnsError> {
    let msg = Message::from_vec(raw).map_err(|e| DnsError::BadResponse {
        server,
        reason: e.to_string(),
    })?;
    if msg.metadata.id != id {
        return Err(DnsError::BadResponse {
            server,
            reason: "wrong message id".into(),
        });
    }
    Ok(msg)
}

async fn udp_exchange(
    server: SocketAddr,
    id: u16,
    q: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, DnsError> {
    let io = |source| DnsError::Io { server, source };
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = UdpSocket::bind(bind).await.map_err(io)?;
    sock.connect(server).await.map_err(io)?;
    sock.send(q).await.map_err(io)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| DnsError::Timeout(server))?
            .map_err(io)?;
        // Ignore stray datagrams that are not the answer to this query.
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp_exchange(
    server: SocketAddr,
    q: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, DnsError> {
    let io = |source| DnsError::Io { server, source };
    let work = async {
        let mut s = TcpStream::connect(server).await.map_err(io)?;
        let len =
            u16::try_from(q.len()).map_err(|_| DnsError::BadQuery("query too long".into()))?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(q);
        s.write_all(&framed).await.map_err(io)?;
        let n = s.read_u16().await.map_err(io)?;
        let mut buf = vec![0u8; usize::from(n)];
        s.read_exact(&mut buf).await.map_err(io)?;
        Ok(buf)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| DnsError::Timeout(server))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_types_and_servers() {
        assert_eq!(parse_type("mx").ok(), Some(RecordType::MX));
        assert_eq!(parse_type("caa").ok(), Some(RecordType::CAA));
        assert!(parse_type("bogus").is_err());
        let ptr = query_name("192.0.2.1", RecordType::PTR).map(|n| n.to_string());
        assert_eq!(ptr.ok().as_deref(), Some("1.2.0.192.in-addr.arpa."));
        assert_eq!(
            parse_server("192.0.2.53").ok(),
            Some(SocketAddr::from(([192, 0, 2, 53], 53)))
        );
        assert_eq!(
            parse_server("127.0.0.1:5353").ok(),
            Some(SocketAddr::from(([127, 0, 0, 1], 5353)))
        );
        assert!(parse_server("[::1]:53").is_ok_and(|s| s.is_ipv6()));
    }

    #[test]
    fn query_round_trips() {
        let name = query_name("example.net", RecordType::AAAA).ok();
        let built = name.as_ref().map(|n| build(n, RecordType::AAAA));
        let Some(Ok((id, bytes))) = built else {
            panic!("query not built")
        };
        let m = parse(SocketAddr::from(([127, 0, 0, 1], 53)), id, &bytes).ok();
        let m = m.as_ref();
        assert_eq!(m.map(|m| m.queries.len()), Some(1));
        assert_eq!(m.map(|m| m.metadata.authentic_data), Some(true));
        assert!(
            parse(
                SocketAddr::from(([127, 0, 0, 1], 53)),
                id.wrapping_add(1),
                &bytes
            )
            .is_err()
        );
    }
}
