//! `octoisp-agent http URL`: status, redirects, phase timings, TLS and certificate chain, like
//! `curl -w` with the certificate details of `openssl s_client`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::print_json;
use crate::diag::http::{self, HttpOptions};

/// Arguments of `http`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// `http://` or `https://` URL.
    url: String,
    /// Follow redirects (up to 10).
    #[arg(short = 'L', long)]
    follow: bool,
    /// Seconds allowed for each request.
    #[arg(short = 'W', long, default_value_t = 10.0)]
    timeout: f64,
    /// Extra trusted CA certificates (PEM).
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Send HEAD instead of GET.
    #[arg(short = 'I', long)]
    head: bool,
    /// Fail (exit 1) unless the final status is this.
    #[arg(long)]
    expect_status: Option<u16>,
    /// Fail (exit 1) unless the final body contains this text.
    #[arg(long)]
    expect_content: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(a: HttpArgs) -> anyhow::Result<ExitCode> {
    let opts = HttpOptions {
        max_redirects: if a.follow { 10 } else { 0 },
        timeout: Duration::from_secs_f64(a.timeout.clamp(0.05, 600.0)),
        ca_file: a.cacert.clone(),
        method: if a.head { "HEAD".into() } else { "GET".into() },
        ..HttpOptions::default()
    };
    let chain = http::check(&a.url, &opts).await?;
    let Some(last) = chain.last() else {
        anyhow::bail!("no response");
    };
    let mut failures = Vec::new();
    if let Some(want) = a.expect_status
        && last.status != want
    {
        failures.push(format!("status {} is not the expected {want}", last.status));
    }
    if let Some(text) = &a.expect_content
        && !last
            .body
            .windows(text.len().max(1))
            .any(|w| w == text.as_bytes())
    {
        failures.push(format!("body does not contain {text:?}"));
    }
    if a.json {
        print_json(&serde_json::json!({
            "url": a.url, "status": last.status, "ok": failures.is_empty(), "failures": failures,
            "responses": chain,
        }))?;
    } else {
        for r in &chain {
            println!(
                "{} -> {} {} ({} bytes) from {}",
                r.url, r.status, r.reason, r.size, r.addr
            );
            let t = &r.timings;
            println!(
                "  time: dns {:.1} ms, connect {:.1} ms, tls {}, first byte {:.1} ms, total {:.1} ms",
                t.dns_ms,
                t.connect_ms,
                t.tls_ms.map_or("-".into(), |v| format!("{v:.1} ms")),
                t.first_byte_ms,
                t.total_ms
            );
            if let Some(tls) = &r.tls {
                println!(
                    "  tls: {} {}; certificate: {}",
                    tls.version,
                    tls.cipher,
                    tls.verify_error
                        .as_deref()
                        .map_or("valid".into(), |e| format!("INVALID ({e})"))
                );
                for (i, c) in tls.chain.iter().enumerate() {
                    println!(
                        "  [{i}] subject: {}\n      issuer: {}\n      expires in {} days{}",
                        c.subject,
                        c.issuer,
                        c.days_to_expiry,
                        if c.self_signed { " (self-signed)" } else { "" }
                    );
                }
            }
        }
        for f in &failures {
            println!("FAILED: {f}");
        }
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
