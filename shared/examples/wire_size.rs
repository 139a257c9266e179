//! Bytes per sample on the wire for a realistic SNMP interface-counter workload.
//!
//! Run with `cargo run --release -p octoisp-shared --example wire_size`.
//!
//! The workload: devices with 20 interfaces each and 10 series per interface (in/out octets, in/out unicast
//! packets, in/out errors, in/out discards, oper and admin status), polled every 60 s. Octet counters move at a
//! per-interface mean rate (0.5-40 % of a 100M/1G/10G link) with ±20 % noise per poll, starting from what an
//! uptime of 1-400 days accumulated; packet counters follow at a per-interface mean packet size; errors and
//! discards are zero on most interfaces and creep up on a few; about 15 % of interfaces are down (flat counters).
//! Each device poll has its own offset in the minute (jittered per cycle) and a timestamp per interface request.
//! Samples reach the outbox one device poll at a time, and a batch takes the next N samples in that order.
//!
//! A batch here holds samples only (no series definitions, which travel once, and no records): the steady state.
//! Two POPs are measured: 500 devices (100 000 series: a batch of up to 100k samples holds at most one poll
//! per series) and 25 devices (5 000 series: a batch holds several poll cycles of each series).

use octoisp_shared::frame::{self, Compression};
use octoisp_shared::{Batch, Message, Sample, SampleBlock};

const INTERFACES: u64 = 20;
const SERIES_PER_INTERFACE: u64 = 10;
const POLL_MS: i64 = 60_000;
const START_MS: i64 = 1_785_000_000_000;

/// SplitMix64: a small deterministic generator, so every run prints the same figures.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Roughly standard normal (sum of 4 uniforms).
    fn normal(&mut self) -> f64 {
        ((0..4).map(|_| self.unit()).sum::<f64>() - 2.0) * 3f64.sqrt()
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// One interface's counters and behaviour.
struct Interface {
    up: bool,
    admin_up: bool,
    in_rate: f64,
    out_rate: f64,
    pkt_in: f64,
    pkt_out: f64,
    /// Probability per poll that errors (or discards) increase, and by how much at most.
    err_p: f64,
    disc_p: f64,
    counters: [f64; 8],
}

/// One device: its interfaces and its place in the polling minute.
struct Device {
    offset_ms: i64,
    interfaces: Vec<Interface>,
}

fn build_pop(devices: u64, rng: &mut Rng) -> Vec<Device> {
    (0..devices)
        .map(|_| {
            let uptime_s = rng.range(1.0, 400.0) * 86_400.0;
            let offset_ms = rng.range(0.0, 55_000.0) as i64;
            let interfaces = (0..INTERFACES)
                .map(|_| {
                    let speed_bytes = match rng.unit() {
                        x if x < 0.05 => 100e6 / 8.0,
                        x if x < 0.75 => 1e9 / 8.0,
                        _ => 10e9 / 8.0,
                    };
                    let up = rng.chance(0.85);
                    let admin_up = up || rng.chance(0.9);
                    let in_rate = if up {
                        speed_bytes * rng.range(0.005, 0.4)
                    } else {
                        0.0
                    };
                    let out_rate = if up {
                        speed_bytes * rng.range(0.005, 0.4)
                    } else {
                        0.0
                    };
                    let pkt_in = rng.range(300.0, 1300.0);
                    let pkt_out = rng.range(300.0, 1300.0);
                    let age = uptime_s * rng.range(0.5, 1.5);
                    let err_p = if rng.chance(0.2) {
                        rng.range(0.01, 0.1)
                    } else {
                        0.0
                    };
                    let disc_p = if rng.chance(0.3) {
                        rng.range(0.05, 0.3)
                    } else {
                        0.0
                    };
                    let base = |rng: &mut Rng, p: f64, scale: f64| {
                        if p > 0.0 {
                            (rng.unit() * scale).floor()
                        } else {
                            0.0
                        }
                    };
                    let counters = [
                        (in_rate * age).floor(),
                        (out_rate * age).floor(),
                        (in_rate * age / pkt_in).floor(),
                        (out_rate * age / pkt_out).floor(),
                        base(rng, err_p, 5_000.0),
                        base(rng, err_p, 500.0),
                        base(rng, disc_p, 100_000.0),
                        base(rng, disc_p, 20_000.0),
                    ];
                    Interface {
                        up,
                        admin_up,
                        in_rate,
                        out_rate,
                        pkt_in,
                        pkt_out,
                        err_p,
                        disc_p,
                        counters,
                    }
                })
                .collect();
            Device {
                offset_ms,
                interfaces,
            }
        })
        .collect()
}

/// Polls every device once (cycle `cycle`), in the order the polls complete, appending their samples.
fn poll_cycle(pop: &mut [Device], cycle: i64, rng: &mut Rng, out: &mut Vec<Sample>) {
    let mut starts: Vec<(i64, usize)> = pop
        .iter()
        .enumerate()
        .map(|(d, dev)| {
            let jitter = rng.range(-300.0, 300.0) as i64;
            (START_MS + cycle * POLL_MS + dev.offset_ms + jitter, d)
        })
        .collect();
    starts.sort_unstable();
    for (start, d) in starts {
        let mut ts = start;
        for (i, ifc) in pop[d].interfaces.iter_mut().enumerate() {
            ts += rng.range(2.0, 9.0) as i64; // one request per interface
            let secs = POLL_MS as f64 / 1000.0;
            let noisy =
                |rng: &mut Rng, rate: f64| (rate * secs * (1.0 + 0.2 * rng.normal())).max(0.0);
            let din = noisy(rng, ifc.in_rate);
            let dout = noisy(rng, ifc.out_rate);
            let pin = din / (ifc.pkt_in * rng.range(0.9, 1.1));
            let pout = dout / (ifc.pkt_out * rng.range(0.9, 1.1));
            let c = &mut ifc.counters;
            c[0] += din.floor();
            c[1] += dout.floor();
            c[2] += pin.floor();
            c[3] += pout.floor();
            for (k, p, max) in [
                (4, ifc.err_p, 3.0),
                (5, ifc.err_p, 2.0),
                (6, ifc.disc_p, 50.0),
                (7, ifc.disc_p, 10.0),
            ] {
                if rng.chance(p) {
                    c[k] += rng.range(1.0, max).floor();
                }
            }
            let first = (d as u64 * INTERFACES + i as u64) * SERIES_PER_INTERFACE + 1;
            for (k, value) in c.iter().enumerate() {
                out.push(Sample {
                    series: first + k as u64,
                    ts_ms: ts,
                    value: *value,
                });
            }
            let oper = if ifc.up { 1.0 } else { 2.0 };
            let admin = if ifc.admin_up { 1.0 } else { 2.0 };
            out.push(Sample {
                series: first + 8,
                ts_ms: ts,
                value: oper,
            });
            out.push(Sample {
                series: first + 9,
                ts_ms: ts,
                value: admin,
            });
        }
    }
}

fn batch_frame(seq: u64, samples: &[Sample], compression: Compression) -> usize {
    let msg = Message::Batch(Batch {
        seq,
        settled_below: seq,
        created_ms: START_MS,
        series: Vec::new(),
        samples: SampleBlock::encode(samples),
        records: Vec::new(),
    });
    frame::encode(&msg, compression)
        .expect("batch fits in a frame")
        .len()
}

fn main() {
    println!(
        "bytes per sample, whole Batch frame (header + postcard + zstd), mean over the batches of at least 6 poll cycles"
    );
    println!(
        "{:>8} {:>9} {:>10} {:>10} {:>10} {:>12}",
        "devices", "batch", "cycles/ser", "plain", "zstd-3", "naive+zstd3"
    );
    for devices in [500u64, 25] {
        let mut rng = Rng(0x0c70_15b0 ^ devices);
        let mut pop = build_pop(devices, &mut rng);
        // Warm-up cycle, then the stream the outbox would see.
        let mut stream = Vec::new();
        poll_cycle(&mut pop, 0, &mut rng, &mut Vec::new());
        let series = devices * INTERFACES * SERIES_PER_INTERFACE;
        let cycles = (300_000 / series).max(6) as i64;
        for cycle in 1..=cycles {
            poll_cycle(&mut pop, cycle, &mut rng, &mut stream);
        }
        for batch in [10_000usize, 50_000, 100_000] {
            let (mut plain, mut zstd, mut naive, mut n) = (0usize, 0usize, 0usize, 0usize);
            for (seq, chunk) in stream.chunks_exact(batch).enumerate() {
                plain += batch_frame(seq as u64, chunk, Compression::None);
                zstd += batch_frame(seq as u64, chunk, Compression::Zstd(3));
                let naive_payload = postcard::to_stdvec(chunk).expect("serializes");
                naive += zstd::bulk::compress(&naive_payload, 3)
                    .expect("compresses")
                    .len();
                n += chunk.len();
                if std::env::var_os("WIRE_SIZE_COLUMNS").is_some() {
                    let block = SampleBlock::encode(chunk);
                    let cols: Vec<String> = block
                        .column_sizes()
                        .iter()
                        .map(|(name, bytes)| {
                            let z = zstd::bulk::compress(bytes, 3).expect("compresses").len();
                            format!(
                                "{name} {:.3}/{:.3}",
                                bytes.len() as f64 / batch as f64,
                                z as f64 / batch as f64
                            )
                        })
                        .collect();
                    println!(
                        "    columns (plain/zstd bytes per sample): {}",
                        cols.join(", ")
                    );
                }
            }
            let per = |bytes: usize| bytes as f64 / n as f64;
            println!(
                "{:>8} {:>9} {:>10.1} {:>10.3} {:>10.3} {:>12.3}",
                devices,
                batch,
                batch as f64 / series as f64,
                per(plain),
                per(zstd),
                per(naive)
            );
        }
    }
}
