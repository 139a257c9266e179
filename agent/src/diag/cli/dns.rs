//! `octoisp-agent dns NAME [TYPE] [--server IP[:PORT]]...`: the same query to each server side by side, in
//! dig's spirit (header flags, sections with TTLs, time).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::print_json;
use crate::diag::dns::{self, Transport};

/// Arguments of `dns`.
#[derive(Debug, Args)]
pub struct DnsArgs {
    /// Name to query (an address for PTR).
    name: String,
    /// Record type: A, AAAA, CNAME, MX, NS, TXT, SOA, PTR, CAA, SRV...
    #[arg(default_value = "A")]
    rtype: String,
    /// Server `IP[:PORT]`; repeat to compare servers (default: the system's).
    #[arg(short = 's', long = "server")]
    servers: Vec<String>,
    /// Query over TCP.
    #[arg(long)]
    tcp: bool,
    /// Seconds to wait for each server.
    #[arg(short = 'W', long, default_value_t = 3.0)]
    timeout: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(a: DnsArgs) -> anyhow::Result<ExitCode> {
    let rtype = dns::parse_type(&a.rtype)?;
    let name = dns::query_name(&a.name, rtype)?;
    let servers = if a.servers.is_empty() {
        dns::system_servers()?
    } else {
        a.servers
            .iter()
            .map(|s| dns::parse_server(s))
            .collect::<Result<Vec<_>, _>>()?
    };
    let transport = if a.tcp {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let timeout = Duration::from_secs_f64(a.timeout.clamp(0.05, 60.0));
    let results = futures::future::join_all(
        servers
            .iter()
            .map(|s| dns::query(*s, &name, rtype, transport, timeout)),
    )
    .await;
    let ok = results.iter().any(Result::is_ok);
    if a.json {
        let items: Vec<serde_json::Value> = servers
            .iter()
            .zip(&results)
            .map(|(s, r)| match r {
                Ok(r) => serde_json::to_value(r).unwrap_or_default(),
                Err(e) => serde_json::json!({ "server": s, "error": e.to_string() }),
            })
            .collect();
        print_json(
            &serde_json::json!({ "name": name.to_string(), "type": rtype.to_string(), "servers": items }),
        )?;
    } else {
        for (s, r) in servers.iter().zip(&results) {
            match r {
                Err(e) => println!(";; {s}: {e}\n"),
                Ok(r) => {
                    let flags: Vec<&str> = [("aa", r.aa), ("tc", r.tc), ("ra", r.ra), ("ad", r.ad)]
                        .iter()
                        .filter(|(_, on)| *on)
                        .map(|(f, _)| *f)
                        .collect();
                    println!(
                        ";; SERVER: {s} ({:?})  status: {}  flags: rd {}  time: {:.1} ms",
                        r.transport,
                        r.rcode,
                        flags.join(" "),
                        r.time_ms
                    );
                    println!(";; ANSWER SECTION: {} records", r.answers.len());
                    for x in &r.answers {
                        println!("{}\t{}\tIN\t{}\t{}", x.name, x.ttl, x.rtype, x.data);
                    }
                    if !r.authority.is_empty() {
                        println!(";; AUTHORITY SECTION:");
                        for x in &r.authority {
                            println!("{}\t{}\tIN\t{}\t{}", x.name, x.ttl, x.rtype, x.data);
                        }
                    }
                    println!();
                }
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
