//! Test support for the diagnostics: a four-namespace topology built per test, helpers to run the agent
//! inside a namespace and to open sockets inside one.
//!
//! ```text
//!  A 192.0.2.2 ── 192.0.2.1 R1 198.51.100.1 ── 198.51.100.2 R2 203.0.113.1 ── 203.0.113.2 B
//!    2001:db8:1::2   2001:db8:1::1  2001:db8:2::1  2001:db8:2::2  2001:db8:3::1   2001:db8:3::2
//! ```
//!
//! Namespace names carry the process id and a counter, so tests run in parallel; `Drop` deletes them.
//! Where namespaces cannot be made (not root, no `ip`), [`Topology::new`] prints why and returns `None`,
//! and the test returns early.

#![allow(dead_code)]

use std::fs::File;
use std::net::IpAddr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The addresses of the topology.
pub mod addr {
    /// A's address.
    pub const A4: &str = "192.0.2.2";
    /// R1 seen from A.
    pub const R1_4: &str = "192.0.2.1";
    /// R2 seen from A (its interface towards R1).
    pub const R2_4: &str = "198.51.100.2";
    /// B.
    pub const B4: &str = "203.0.113.2";
    /// A (IPv6).
    pub const A6: &str = "2001:db8:1::2";
    /// R1 seen from A (IPv6).
    pub const R1_6: &str = "2001:db8:1::1";
    /// R2 seen from A (IPv6).
    pub const R2_6: &str = "2001:db8:2::2";
    /// B (IPv6).
    pub const B6: &str = "2001:db8:3::2";
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Host A, routers R1 and R2, host B, each in its own network namespace.
#[derive(Debug)]
pub struct Topology {
    /// Namespace of host A (where the agent runs).
    pub a: String,
    /// Namespace of router R1.
    pub r1: String,
    /// Namespace of router R2.
    pub r2: String,
    /// Namespace of host B (the target).
    pub b: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Topology {
    /// Builds the topology, or prints why it cannot and returns `None`.
    pub fn new(test: &str) -> Option<Topology> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("oi{}x{n}", std::process::id());
        let t = Topology {
            a: format!("{base}a"),
            r1: format!("{base}r1"),
            r2: format!("{base}r2"),
            b: format!("{base}b"),
        };
        match t.build() {
            Ok(()) => {
                t.settle();
                Some(t)
            }
            Err(e) => {
                eprintln!(
                    "SKIPPED {test}: cannot create network namespaces ({e}); run as root with iproute2"
                );
                None
            }
        }
    }

    fn build(&self) -> Result<(), String> {
        for ns in [&self.a, &self.r1, &self.r2, &self.b] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            for (k, v) in [
                ("net.ipv4.icmp_ratelimit", "0"),
                ("net.ipv6.icmp.ratelimit", "0"),
                ("net.ipv4.ping_group_range", "0 2147483647"),
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
            ] {
                self.sysctl(ns, k, v)?;
            }
        }
        for ns in [&self.r1, &self.r2] {
            self.sysctl(ns, "net.ipv4.ip_forward", "1")?;
            self.sysctl(ns, "net.ipv6.conf.all.forwarding", "1")?;
        }
        let links = [
            (&self.a, "a0", &self.r1, "r1a"),
            (&self.r1, "r1b", &self.r2, "r2a"),
            (&self.r2, "r2b", &self.b, "b0"),
        ];
        for (ns1, if1, ns2, if2) in links {
            ip(&[
                "link", "add", if1, "netns", ns1, "type", "veth", "peer", "name", if2, "netns", ns2,
            ])?;
        }
        let addrs = [
            (&self.a, "a0", "192.0.2.2/24", "2001:db8:1::2/64"),
            (&self.r1, "r1a", "192.0.2.1/24", "2001:db8:1::1/64"),
            (&self.r1, "r1b", "198.51.100.1/24", "2001:db8:2::1/64"),
            (&self.r2, "r2a", "198.51.100.2/24", "2001:db8:2::2/64"),
            (&self.r2, "r2b", "203.0.113.1/24", "2001:db8:3::1/64"),
            (&self.b, "b0", "203.0.113.2/24", "2001:db8:3::2/64"),
        ];
        for (ns, dev, v4, v6) in addrs {
            ip(&["-n", ns, "addr", "add", v4, "dev", dev])?;
            ip(&["-n", ns, "addr", "add", v6, "dev", dev, "nodad"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        let routes = [
            (&self.a, "default", "192.0.2.1"),
            (&self.a, "default", "2001:db8:1::1"),
            (&self.r1, "203.0.113.0/24", "198.51.100.2"),
            (&self.r1, "2001:db8:3::/64", "2001:db8:2::2"),
            (&self.r2, "192.0.2.0/24", "198.51.100.1"),
            (&self.r2, "2001:db8:1::/64", "2001:db8:2::1"),
            (&self.b, "default", "203.0.113.1"),
            (&self.b, "default", "2001:db8:3::1"),
        ];
        for (ns, dst, via) in routes {
            let family = if via.contains(':') { "-6" } else { "-4" };
            ip(&[family, "-n", ns, "route", "add", dst, "via", via])?;
        }
        Ok(())
    }

    /// Waits (at most 5 s) until every hop answers from A on both families: fresh veth links drop the first
    /// packets for about a second while IPv6 neighbour discovery comes up.
    fn settle(&self) {
        let t0 = std::time::Instant::now();
        let all = [
            addr::R1_4,
            addr::R2_4,
            addr::B4,
            addr::R1_6,
            addr::R2_6,
            addr::B6,
        ];
        while t0.elapsed() < std::time::Duration::from_secs(5) {
            let mut args = vec!["ping", "-q", "-c", "1", "-W", "0.2"];
            args.extend_from_slice(&all);
            if self
                .exec(&self.a, env!("CARGO_BIN_EXE_octoisp-agent"), &args)
                .status
                .success()
            {
                return;
            }
        }
    }

    fn sysctl(&self, ns: &str, key: &str, value: &str) -> Result<(), String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                &format!("{key}={value}"),
            ])
            .output()
            .map_err(|e| format!("sysctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "sysctl {key}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Runs a command inside namespace `ns` and returns its output (panics when it cannot start).
    pub fn exec(&self, ns: &str, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} in {ns}: {e}"))
    }

    /// Runs a command inside `ns` and panics unless it succeeds.
    pub fn must(&self, ns: &str, program: &str, args: &[&str]) {
        let out = self.exec(ns, program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `octoisp-agent ARGS` in host A and parses its `--json` output.
    pub fn agent_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.exec(&self.a, env!("CARGO_BIN_EXE_octoisp-agent"), args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "octoisp-agent {args:?}: no JSON ({e}); status {:?}\nstdout: {stdout}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Runs `f` on a thread that has entered namespace `ns`: sockets it opens live in that namespace.
    pub fn in_ns<T: Send + 'static>(&self, ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|_| panic!("thread in {ns} panicked"))
    }
}

/// How [`Topology::impair`] made B's answers slow and lossy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impairment {
    /// `tc netem` on B's interface (delays and drops every packet B sends).
    Netem,
    /// The kernel has no netem: B's kernel stops answering echo requests and a responder thread answers them
    /// instead, after the delay and with the loss asked (only ICMP echo is impaired).
    EchoResponder,
}

impl Topology {
    /// Delays B's answers by `delay_ms` and drops `loss_pct` % of them, with `tc netem` where the kernel has it.
    pub fn impair(&self, delay_ms: u64, loss_pct: u32) -> Impairment {
        let out = self.exec(
            &self.b,
            "tc",
            &[
                "qdisc",
                "add",
                "dev",
                "b0",
                "root",
                "netem",
                "delay",
                &format!("{delay_ms}ms"),
                "loss",
                &format!("{loss_pct}%"),
            ],
        );
        if out.status.success() {
            return Impairment::Netem;
        }
        eprintln!(
            "tc netem unavailable ({}): impairing ICMP echo with a responder in B instead",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        self.must(
            &self.b,
            "sysctl",
            &["-qw", "net.ipv4.icmp_echo_ignore_all=1"],
        );
        let sock = self.in_ns(&self.b, || {
            socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::RAW,
                Some(socket2::Protocol::ICMPV4),
            )
            .unwrap_or_else(|e| panic!("raw socket: {e}"))
        });
        let sender = sock
            .try_clone()
            .unwrap_or_else(|e| panic!("clone socket: {e}"));
        let (tx, rx) =
            std::sync::mpsc::channel::<(std::time::Instant, Vec<u8>, std::net::Ipv4Addr)>();
        std::thread::spawn(move || {
            for (due, reply, to) in rx {
                std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
                let _ = sender.send_to(&reply, &std::net::SocketAddrV4::new(to, 0).into());
            }
        });
        std::thread::spawn(move || {
            use std::io::Read;
            let mut sock = sock;
            let mut buf = [0u8; 2048];
            while let Ok(n) = sock.read(&mut buf) {
                if let Some((reply, to)) = echo_reply(&buf[..n])
                    && rand::random_range(0..100) >= loss_pct
                {
                    let due =
                        std::time::Instant::now() + std::time::Duration::from_millis(delay_ms);
                    let _ = tx.send((due, reply, to));
                }
            }
        });
        Impairment::EchoResponder
    }
}

/// The ICMP echo reply to an IPv4 packet carrying an echo request, and where to send it.
fn echo_reply(packet: &[u8]) -> Option<(Vec<u8>, std::net::Ipv4Addr)> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    let src = std::net::Ipv4Addr::new(
        *packet.get(12)?,
        *packet.get(13)?,
        *packet.get(14)?,
        *packet.get(15)?,
    );
    let icmp = packet.get(ihl..)?;
    if icmp.len() < 8 || icmp[0] != 8 {
        return None;
    }
    let mut reply = icmp.to_vec();
    reply[0] = 0;
    reply[2] = 0;
    reply[3] = 0;
    let mut sum: u32 = reply
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let checksum = !(sum as u16);
    reply[2..4].copy_from_slice(&checksum.to_be_bytes());
    Some((reply, src))
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.a, &self.r1, &self.r2, &self.b] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// The `ip` of each hop of a `trace`/`mtr --json` report (`None` for a silent hop).
pub fn hop_ips(report: &serde_json::Value) -> Vec<Option<IpAddr>> {
    report["hops"]
        .as_array()
        .unwrap_or_else(|| panic!("no hops in {report}"))
        .iter()
        .map(|h| h["ip"].as_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// Parses an address constant.
pub fn ipa(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}
