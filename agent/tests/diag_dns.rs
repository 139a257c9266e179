//! `octoisp-agent dns` against a dnsmasq started by the test on loopback (a free port) with known records:
//! every supported record type, TTLs, NXDOMAIN, TCP, and two servers side by side.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Dnsmasq {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    s.local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("addr: {e}"))
}

/// Starts dnsmasq, or returns `None` (printing why) when it is not installed.
fn dnsmasq() -> Option<Dnsmasq> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    for _ in 0..5 {
        let port = free_port();
        let spawned = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--user=root",
                &format!("--port={port}"),
                &format!("--pid-file={}", dir.path().join("pid").display()),
                "--local=/octo.test/",
                "--local-ttl=300",
                "--host-record=www.octo.test,192.0.2.10,2001:db8::10",
                "--cname=web.octo.test,www.octo.test",
                "--mx-host=octo.test,mail.octo.test,10",
                "--txt-record=octo.test,v=spf1 -all",
                "--srv-host=_sip._udp.octo.test,sip.octo.test,5060,1,2",
                "--ptr-record=10.2.0.192.in-addr.arpa,www.octo.test",
                // CAA 0 issue "ca.example" (type 257, raw RDATA).
                "--dns-rr=octo.test,257,0005697373756563612e6578616d706c65",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                eprintln!("SKIPPED: dnsmasq not available ({e}); install dnsmasq-base");
                return None;
            }
        };
        // Wait until it answers over TCP (it listens on both when ready).
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Dnsmasq {
                    child,
                    port,
                    _dir: dir,
                });
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("dnsmasq did not start");
}

fn dns(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_octoisp-agent"))
        .arg("dns")
        .args(args)
        .arg("--json")
        .output()
        .unwrap_or_else(|e| panic!("run agent: {e}"));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "dns {args:?}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The answers' (type, data) of the first server.
fn answers(v: &serde_json::Value) -> Vec<(String, String)> {
    v["servers"][0]["answers"]
        .as_array()
        .unwrap_or_else(|| panic!("no answers in {v}"))
        .iter()
        .map(|a| {
            (
                a["type"].as_str().unwrap_or("").to_owned(),
                a["data"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn pair(t: &str, d: &str) -> (String, String) {
    (t.to_owned(), d.to_owned())
}

#[test]
fn every_record_type_from_a_local_server() {
    let Some(d) = dnsmasq() else { return };
    let server = format!("127.0.0.1:{}", d.port);
    let s = server.as_str();
    let a = dns(&["www.octo.test", "A", "--server", s]);
    assert_eq!(answers(&a), [pair("A", "192.0.2.10")], "{a}");
    assert_eq!(a["servers"][0]["answers"][0]["ttl"], 300, "{a}");
    assert_eq!(a["servers"][0]["rcode"], "NoError", "{a}");
    assert_eq!(
        answers(&dns(&["www.octo.test", "aaaa", "--server", s])),
        [pair("AAAA", "2001:db8::10")]
    );
    let cname = answers(&dns(&["web.octo.test", "CNAME", "--server", s]));
    assert_eq!(cname, [pair("CNAME", "www.octo.test.")]);
    assert_eq!(
        answers(&dns(&["octo.test", "MX", "--server", s])),
        [pair("MX", "10 mail.octo.test.")]
    );
    let txt = answers(&dns(&["octo.test", "TXT", "--server", s]));
    assert_eq!(txt.len(), 1);
    assert!(txt[0].1.contains("v=spf1 -all"), "{txt:?}");
    let srv = answers(&dns(&["_sip._udp.octo.test", "SRV", "--server", s]));
    assert_eq!(srv, [pair("SRV", "1 2 5060 sip.octo.test.")]);
    let ptr = answers(&dns(&["192.0.2.10", "PTR", "--server", s]));
    assert_eq!(ptr, [pair("PTR", "www.octo.test.")]);
    let caa = answers(&dns(&["octo.test", "CAA", "--server", s]));
    assert_eq!(caa.len(), 1, "{caa:?}");
    assert!(caa[0].1.contains("ca.example"), "{caa:?}");
}

#[test]
fn nxdomain_tcp_and_servers_side_by_side() {
    let Some(d) = dnsmasq() else { return };
    let server = format!("127.0.0.1:{}", d.port);
    let nx = dns(&["nothing.octo.test", "A", "--server", &server]);
    assert_eq!(nx["servers"][0]["rcode"], "NXDomain", "{nx}");
    let tcp = dns(&["www.octo.test", "A", "--server", &server, "--tcp"]);
    assert_eq!(tcp["servers"][0]["transport"], "tcp", "{tcp}");
    assert_eq!(answers(&tcp), [pair("A", "192.0.2.10")]);
    // A second server that does not answer is reported beside the one that does.
    let silent = format!("127.0.0.1:{}", free_port());
    let both = dns(&[
        "www.octo.test",
        "--server",
        &server,
        "--server",
        &silent,
        "-W",
        "0.5",
    ]);
    let servers = both["servers"].as_array().cloned().unwrap_or_default();
    assert_eq!(servers.len(), 2, "{both}");
    assert_eq!(servers[0]["answers"][0]["data"], "192.0.2.10", "{both}");
    assert!(servers[1]["error"].is_string(), "{both}");
}
