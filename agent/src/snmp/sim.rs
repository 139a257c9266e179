//! A fast simulator of many SNMP v1/v2c devices, for tests and benchmarks (`octoisp-agent snmp simulate`).
//!
//! A device is a MIB (sorted OIDs) whose cells are static values, counters that grow at a fixed rate from the
//! device's start, or sysUpTime; tests may set any cell at any time (`SimDevice::set`). Behaviours for tests:
//! answering normally, never answering, answering after a delay, or sending garbage (random bytes, then a
//! response with a wrong request id) instead of answering. MIBs load from `.snmprec` recordings (the snmpsim
//! format `OID|TYPE|VALUE`, TYPE the BER tag in decimal, an `x` suffix for hex values).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::ber::Oid;
use super::message::{self, Message};
use super::pdu::{AnyPdu, Pdu, PduKind, Value, VarBind};

/// A MIB cell.
#[derive(Debug, Clone)]
pub enum Cell {
    /// A fixed value.
    Static(Value),
    /// A Counter64 growing `per_sec` from `base`.
    Counter64 {
        /// Value at start.
        base: u64,
        /// Growth per second.
        per_sec: u64,
    },
    /// A Counter32 growing `per_sec` from `base`, wrapping at 2^32.
    Counter32 {
        /// Value at start.
        base: u32,
        /// Growth per second.
        per_sec: u64,
    },
    /// sysUpTime since the device started.
    Uptime,
}

/// How a simulated device behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers.
    Normal,
    /// Never answers.
    Silent,
    /// Answers after this delay.
    Slow(Duration),
    /// Sends garbage and wrong-id responses, never a right one.
    Garbage,
}

/// A MIB shared by devices.
pub type Mib = Arc<RwLock<BTreeMap<Oid, Cell>>>;

/// Why a recording could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("recording line {line}: {message}")]
pub struct RecordingError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses a `.snmprec` recording.
pub fn parse_snmprec(text: &str) -> Result<BTreeMap<Oid, Cell>, RecordingError> {
    let mut mib = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |m: &str| RecordingError {
            line: i + 1,
            message: m.to_owned(),
        };
        let mut parts = line.splitn(3, '|');
        let (Some(oid), Some(ty), Some(val)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err("expected OID|TYPE|VALUE"));
        };
        let oid: Oid = oid.parse().map_err(|_| err("bad OID"))?;
        let (ty, hex_val) = match ty.strip_suffix('x') {
            Some(t) => (t, true),
            None => (ty, false),
        };
        let bytes = || -> Result<Vec<u8>, RecordingError> {
            if hex_val {
                hex::decode(val).map_err(|_| err("bad hex"))
            } else {
                Ok(val.as_bytes().to_vec())
            }
        };
        let num = || val.trim().parse::<i64>().map_err(|_| err("bad number"));
        let unum = || val.trim().parse::<u64>().map_err(|_| err("bad number"));
        let cell = match ty {
            "2" => Cell::Static(Value::Integer(num()?)),
            "4" => Cell::Static(Value::OctetString(bytes()?)),
            "5" => Cell::Static(Value::Null),
            "6" => Cell::Static(Value::Oid(val.parse().map_err(|_| err("bad OID value"))?)),
            "64" => {
                let b = bytes()?;
                let a: [u8; 4] = if hex_val {
                    b.try_into().map_err(|_| err("bad IpAddress"))?
                } else {
                    val.parse::<std::net::Ipv4Addr>()
                        .map_err(|_| err("bad IpAddress"))?
                        .octets()
                };
                Cell::Static(Value::IpAddress(a))
            }
            "65" => Cell::Static(Value::Counter32(
                u32::try_from(unum()?).map_err(|_| err("range"))?,
            )),
            "66" => Cell::Static(Value::Gauge32(
                u32::try_from(unum()?).map_err(|_| err("range"))?,
            )),
            "67" => Cell::Static(Value::TimeTicks(
                u32::try_from(unum()?).map_err(|_| err("range"))?,
            )),
            "68" => Cell::Static(Value::Opaque(bytes()?)),
            "70" => Cell::Static(Value::Counter64(unum()?)),
            _ => return Err(err("unknown type")),
        };
        mib.insert(oid, cell);
    }
    Ok(mib)
}

/// The standard benchmark device: system group, `n_if` interfaces (IF-MIB with 64-bit counters), two CPUs and
/// RAM + one disk in HOST-RESOURCES.
pub fn standard_mib(n_if: u32, seed: u32) -> BTreeMap<Oid, Cell> {
    let mut m = BTreeMap::new();
    let o = |s: &str| s.parse::<Oid>().unwrap_or_default();
    let text = |s: String| Cell::Static(Value::OctetString(s.into_bytes()));
    m.insert(
        o("1.3.6.1.2.1.1.1.0"),
        text("Linux sim 6.1.0-18-amd64 #1 SMP x86_64".into()),
    );
    m.insert(
        o("1.3.6.1.2.1.1.2.0"),
        Cell::Static(Value::Oid(o("1.3.6.1.4.1.8072.3.2.10"))),
    );
    m.insert(o("1.3.6.1.2.1.1.3.0"), Cell::Uptime);
    m.insert(o("1.3.6.1.2.1.1.4.0"), text("noc@example.net".into()));
    m.insert(o("1.3.6.1.2.1.1.5.0"), text(format!("sim-{seed}")));
    m.insert(o("1.3.6.1.2.1.1.6.0"), text("POP sim".into()));
    m.insert(
        o("1.3.6.1.2.1.2.1.0"),
        Cell::Static(Value::Integer(i64::from(n_if))),
    );
    m.insert(o("1.3.6.1.2.1.31.1.5.0"), Cell::Static(Value::TimeTicks(0)));
    for i in 1..=n_if {
        let ifc = |col: u32| Oid(vec![1, 3, 6, 1, 2, 1, 2, 2, 1, col, i]);
        let ifx = |col: u32| Oid(vec![1, 3, 6, 1, 2, 1, 31, 1, 1, 1, col, i]);
        let rate = u64::from(1_000 + (seed % 97) * 100 + i * 10);
        m.insert(ifc(1), Cell::Static(Value::Integer(i64::from(i))));
        m.insert(ifc(2), text(format!("eth{i}")));
        m.insert(ifc(5), Cell::Static(Value::Gauge32(1_000_000_000)));
        m.insert(ifc(7), Cell::Static(Value::Integer(1)));
        m.insert(ifc(8), Cell::Static(Value::Integer(1)));
        m.insert(
            ifc(10),
            Cell::Counter32 {
                base: 0,
                per_sec: rate,
            },
        );
        m.insert(ifc(13), Cell::Static(Value::Counter32(0)));
        m.insert(ifc(14), Cell::Static(Value::Counter32(0)));
        m.insert(
            ifc(16),
            Cell::Counter32 {
                base: 0,
                per_sec: rate / 2,
            },
        );
        m.insert(ifc(19), Cell::Static(Value::Counter32(0)));
        m.insert(ifc(20), Cell::Static(Value::Counter32(0)));
        m.insert(ifx(1), text(format!("eth{i}")));
        m.insert(
            ifx(6),
            Cell::Counter64 {
                base: 0,
                per_sec: rate,
            },
        );
        m.insert(
            ifx(10),
            Cell::Counter64 {
                base: 0,
                per_sec: rate / 2,
            },
        );
        m.insert(ifx(15), Cell::Static(Value::Gauge32(1000)));
        m.insert(ifx(18), text(format!("uplink {i}")));
    }
    for cpu in [196_608u32, 196_609] {
        m.insert(
            Oid(vec![1, 3, 6, 1, 2, 1, 25, 3, 3, 1, 2, cpu]),
            Cell::Static(Value::Integer(i64::from(seed % 50 + 5))),
        );
    }
    for (idx, descr, ty, units, size, used) in [
        (
            1u32,
            "Physical memory",
            2u32,
            1024i64,
            4_000_000i64,
            1_500_000i64,
        ),
        (31, "/", 4, 4096, 10_000_000, 2_500_000),
    ] {
        let col = |c: u32| Oid(vec![1, 3, 6, 1, 2, 1, 25, 2, 3, 1, c, idx]);
        m.insert(col(1), Cell::Static(Value::Integer(i64::from(idx))));
        m.insert(
            col(2),
            Cell::Static(Value::Oid(Oid(vec![1, 3, 6, 1, 2, 1, 25, 2, 1, ty]))),
        );
        m.insert(col(3), text(descr.into()));
        m.insert(col(4), Cell::Static(Value::Integer(units)));
        m.insert(col(5), Cell::Static(Value::Integer(size)));
        m.insert(col(6), Cell::Static(Value::Integer(used)));
    }
    m
}

/// One simulated device.
#[derive(Debug, Clone)]
pub struct SimDevice {
    /// Its MIB (possibly shared).
    pub mib: Mib,
    /// Community accepted.
    pub community: Vec<u8>,
    /// Behaviour.
    pub behaviour: Behaviour,
    started: Arc<RwLock<Instant>>,
}

impl SimDevice {
    /// A device answering `community` from `mib`.
    pub fn new(mib: Mib, community: &str, behaviour: Behaviour) -> SimDevice {
        SimDevice {
            mib,
            community: community.as_bytes().to_vec(),
            behaviour,
            started: Arc::new(RwLock::new(Instant::now())),
        }
    }

    /// Sets a cell.
    pub fn set(&self, oid: &str, cell: Cell) {
        if let (Ok(o), Ok(mut m)) = (oid.parse::<Oid>(), self.mib.write()) {
            m.insert(o, cell);
        }
    }

    /// Restarts the device's clock (sysUpTime and counters start again from their bases).
    pub fn reboot(&self) {
        if let Ok(mut s) = self.started.write() {
            *s = Instant::now();
        }
    }

    fn value(&self, cell: &Cell, elapsed: Duration) -> Value {
        let secs = elapsed.as_secs_f64();
        match cell {
            Cell::Static(v) => v.clone(),
            Cell::Counter64 { base, per_sec } => {
                Value::Counter64(base.wrapping_add((*per_sec as f64 * secs) as u64))
            }
            Cell::Counter32 { base, per_sec } => Value::Counter32(
                (u64::from(*base).wrapping_add((*per_sec as f64 * secs) as u64) & 0xffff_ffff)
                    as u32,
            ),
            Cell::Uptime => Value::TimeTicks((elapsed.as_millis() / 10) as u32),
        }
    }

    /// The response to a request datagram, if any.
    pub fn respond(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let Ok(Message::Community {
            version,
            community,
            pdu: AnyPdu::Pdu(req),
        }) = message::decode(bytes)
        else {
            return None;
        };
        if community != self.community {
            return None;
        }
        let elapsed = self.started.read().map(|s| s.elapsed()).unwrap_or_default();
        let mib = self.mib.read().ok()?;
        let v1 = version == message::Version::V1;
        let mut out = Vec::with_capacity(req.varbinds.len());
        let mut status = 0;
        let mut index = 0;
        let next_of = |o: &Oid| {
            mib.range::<Oid, _>((std::ops::Bound::Excluded(o), std::ops::Bound::Unbounded))
                .next()
        };
        match req.kind {
            PduKind::Get => {
                for (i, vb) in req.varbinds.iter().enumerate() {
                    match mib.get(&vb.oid) {
                        Some(c) => out.push(VarBind {
                            oid: vb.oid.clone(),
                            value: self.value(c, elapsed),
                        }),
                        None if v1 => {
                            status = 2;
                            index = i as i32 + 1;
                            break;
                        }
                        None => out.push(VarBind {
                            oid: vb.oid.clone(),
                            value: Value::NoSuchObject,
                        }),
                    }
                }
            }
            PduKind::GetNext => {
                for (i, vb) in req.varbinds.iter().enumerate() {
                    match next_of(&vb.oid) {
                        Some((o, c)) => out.push(VarBind {
                            oid: o.clone(),
                            value: self.value(c, elapsed),
                        }),
                        None if v1 => {
                            status = 2;
                            index = i as i32 + 1;
                            break;
                        }
                        None => out.push(VarBind {
                            oid: vb.oid.clone(),
                            value: Value::EndOfMibView,
                        }),
                    }
                }
            }
            PduKind::GetBulk if !v1 => {
                let nr = usize::try_from(req.error_status.max(0))
                    .unwrap_or(0)
                    .min(req.varbinds.len());
                let reps = usize::try_from(req.error_index.max(0))
                    .unwrap_or(0)
                    .min(256);
                for vb in &req.varbinds[..nr] {
                    match next_of(&vb.oid) {
                        Some((o, c)) => out.push(VarBind {
                            oid: o.clone(),
                            value: self.value(c, elapsed),
                        }),
                        None => out.push(VarBind {
                            oid: vb.oid.clone(),
                            value: Value::EndOfMibView,
                        }),
                    }
                }
                let mut cursors: Vec<Oid> =
                    req.varbinds[nr..].iter().map(|v| v.oid.clone()).collect();
                'reps: for _ in 0..reps {
                    let mut all_end = true;
                    for cur in cursors.iter_mut() {
                        match next_of(cur) {
                            Some((o, c)) => {
                                out.push(VarBind {
                                    oid: o.clone(),
                                    value: self.value(c, elapsed),
                                });
                                *cur = o.clone();
                                all_end = false;
                            }
                            None => out.push(VarBind {
                                oid: cur.clone(),
                                value: Value::EndOfMibView,
                            }),
                        }
                        if out.len() >= 1000 {
                            break 'reps;
                        }
                    }
                    if all_end {
                        break;
                    }
                }
            }
            _ => return None,
        }
        if status != 0 {
            out = req.varbinds.clone();
        }
        let resp = Pdu {
            kind: PduKind::Response,
            request_id: req.request_id,
            error_status: status,
            error_index: index,
            varbinds: out,
        };
        Some(message::encode_community(
            version,
            &community,
            &AnyPdu::Pdu(resp),
        ))
    }
}

/// Serves `device` on `sock` until `shutdown`.
pub async fn serve(sock: Arc<UdpSocket>, device: SimDevice, shutdown: CancellationToken) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, from) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r { Ok(x) => x, Err(_) => continue },
        };
        match device.behaviour {
            Behaviour::Silent => {}
            Behaviour::Normal => {
                if let Some(r) = device.respond(&buf[..n]) {
                    let _ = sock.send_to(&r, from).await;
                }
            }
            Behaviour::Slow(d) => {
                if let Some(r) = device.respond(&buf[..n]) {
                    let s = sock.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(d).await;
                        let _ = s.send_to(&r, from).await;
                    });
                }
            }
            Behaviour::Garbage => {
                let junk: Vec<u8> = (0..64).map(|_| rand::random::<u8>()).collect();
                let _ = sock.send_to(&junk, from).await;
                let _ = sock
                    .send_to(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x02], from)
                    .await;
                if let Some(mut r) = device.respond(&buf[..n]) {
                    // Same response with a request id off by one: must be ignored.
                    if let Ok(Message::Community {
                        version,
                        community,
                        pdu: AnyPdu::Pdu(mut p),
                    }) = message::decode(&r)
                    {
                        p.request_id = p.request_id.wrapping_add(1);
                        r = message::encode_community(version, &community, &AnyPdu::Pdu(p));
                        let _ = sock.send_to(&r, from).await;
                    }
                }
            }
        }
    }
}

/// Binds a simulated device on `addr` (port 0 picks one) and serves it in the background; returns its address.
pub async fn spawn(
    addr: SocketAddr,
    device: SimDevice,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let sock = Arc::new(UdpSocket::bind(addr).await?);
    let local = sock.local_addr()?;
    tokio::spawn(serve(sock, device, shutdown));
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmprec_parses() {
        let mib = parse_snmprec("1.3.6.1.2.1.1.1.0|4|hello\n1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.9\n1.3.6.1.2.1.2.2.1.6.1|4x|00a0c9140c2a\n1.3.6.1.2.1.31.1.1.1.6.1|70|12345678901\n").unwrap();
        assert_eq!(mib.len(), 4);
        assert!(parse_snmprec("1.3.6|99|x").is_err());
    }
}
