//! Crash safety: a child process (this test binary, re-run with [`CHILD_ENV`] set) appends samples and events in a
//! loop, forms batches and acks some of them, logging each step to a side file after it returned; the parent
//! SIGKILLs it at a random moment, three times over the same outbox, then reopens the outbox and checks that every
//! acknowledged append is there (or was acked as part of a batch) exactly once, and that every formed batch that
//! was not acked comes back with the same seq and the same bytes.

mod outbox_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use octoisp_agent::outbox::{OutboxConfig, Synchronous};
use octoisp_shared::MetricKind;
use outbox_support::{Content, decode, event, open, samples};

/// Set in the child's environment to the directory it works in.
const CHILD_ENV: &str = "OCTOISP_OUTBOX_CRASH_CHILD";
/// Set in the child's environment to the round number (values of a round never collide with another's).
const ROUND_ENV: &str = "OCTOISP_OUTBOX_CRASH_ROUND";
/// Samples per append.
const PER_APPEND: u64 = 10;
/// Values of round `r` start at `r * ROUND_SPAN` (a multiple of [`PER_APPEND`]).
const ROUND_SPAN: u64 = 1_000_000_000;

fn cfg(dir: &Path) -> OutboxConfig {
    OutboxConfig {
        // FULL exercises the fsync path; a SIGKILL loses nothing committed either way.
        synchronous: Synchronous::Full,
        batch_max_samples: 200,
        ..OutboxConfig::new(dir.join("outbox.db"))
    }
}

/// The child's body; an ordinary test run (without [`CHILD_ENV`]) skips it.
#[test]
fn outbox_crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let outbox = open(&cfg(&dir));
    let s = outbox
        .series_id("icmp:192.0.2.1", "ping.rtt_ms", &[], MetricKind::Gauge)
        .unwrap();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .unwrap();
    let mut line = |l: String| log.write_all(format!("{l}\n").as_bytes()).unwrap();
    line(format!("S {round}"));
    let mut formed = 0u64;
    for i in 0u64.. {
        let first = round * ROUND_SPAN + i * PER_APPEND;
        outbox
            .append_samples_blocking(samples(s, first, PER_APPEND))
            .unwrap();
        line(format!("A {first}"));
        if i % 4 == 1 {
            let id = (round * ROUND_SPAN + i) as u128;
            outbox.append_records_blocking(vec![event(id, 8)]).unwrap();
            line(format!("E {id}"));
        }
        if i % 7 == 3
            && let Some(p) = outbox.next_batch().unwrap()
        {
            // What the uplink would have sent: kept so that the parent knows what an acked batch held.
            let tmp = dir.join(format!("frame-{}.tmp", p.seq));
            std::fs::write(&tmp, &p.frame).unwrap();
            std::fs::rename(&tmp, dir.join(format!("frame-{}", p.seq))).unwrap();
            line(format!("F {}", p.seq));
            formed += 1;
            if formed.is_multiple_of(3) {
                line(format!("P {}", p.seq));
                outbox.ack(p.seq).unwrap();
                line(format!("K {}", p.seq));
            }
        }
    }
}

#[test]
fn outbox_every_acknowledged_append_survives_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let log_path = dir.path().join("log");
    for round in 1..=3u64 {
        let lines_before = read_log(&log_path).len();
        let mut child = Command::new(&exe)
            .args([
                "outbox_crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // Let it get going, then kill it at a moment that differs from round to round.
        let deadline = Instant::now() + Duration::from_secs(30);
        while read_log(&log_path).len() < lines_before + 50 {
            assert!(Instant::now() < deadline, "the child made no progress");
            assert!(
                child.try_wait().unwrap().is_none(),
                "the child exited early"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        std::thread::sleep(Duration::from_millis(u64::from(nanos % 300) + round * 40));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    let log = read_log(&log_path);
    let tagged = |tag: &str| -> Vec<u64> {
        log.iter()
            .filter_map(|l| {
                l.strip_prefix(tag)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .collect()
    };
    let appended: Vec<u64> = tagged("A ");
    let events: Vec<u64> = tagged("E ");
    let formed: BTreeSet<u64> = tagged("F ").into_iter().collect();
    let ack_started: BTreeSet<u64> = tagged("P ").into_iter().collect();
    let acked: BTreeSet<u64> = tagged("K ").into_iter().collect();
    assert_eq!(tagged("S ").len(), 3, "three children ran");
    assert!(
        !acked.is_empty() && formed.len() > acked.len(),
        "the test covers formed, acked and pending batches"
    );

    let outbox = open(&cfg(dir.path()));
    let pending = outbox.pending_batches().unwrap();
    let pending_seqs: BTreeSet<u64> = pending.iter().map(|p| p.seq).collect();
    let mut content = Content::default();
    let mut batches = BTreeMap::new();
    for seq in &ack_started {
        if !pending_seqs.contains(seq) {
            // The ack committed: this batch was delivered.
            let frame = std::fs::read(dir.path().join(format!("frame-{seq}"))).unwrap();
            content.add(&decode(&frame));
            batches.insert(*seq, "acked");
        }
    }
    for seq in &acked {
        assert!(
            !pending_seqs.contains(seq),
            "batch {seq} came back after its ack returned"
        );
    }
    for p in &pending {
        if formed.contains(&p.seq) {
            let sent = std::fs::read(dir.path().join(format!("frame-{}", p.seq))).unwrap();
            assert!(
                sent == p.frame,
                "batch {} came back with other bytes",
                p.seq
            );
        }
        assert!(batches.insert(p.seq, "pending").is_none());
        content.add(&decode(&p.frame));
        outbox.ack(p.seq).unwrap();
    }
    let last_seq = batches.keys().max().copied().unwrap_or(0);
    while let Some(p) = outbox.next_batch().unwrap() {
        assert!(p.seq > last_seq, "seq {} reused", p.seq);
        content.add(&decode(&p.frame));
        outbox.ack(p.seq).unwrap();
    }

    // Exactly once: no duplicates at all, and every acknowledged append is there.
    let values: BTreeSet<u64> = content.values.iter().copied().collect();
    assert_eq!(
        values.len(),
        content.values.len(),
        "a sample was delivered twice"
    );
    let event_ids: BTreeSet<u128> = content.events.iter().copied().collect();
    assert_eq!(
        event_ids.len(),
        content.events.len(),
        "an event was delivered twice"
    );
    for first in &appended {
        for v in *first..*first + PER_APPEND {
            assert!(values.contains(&v), "acknowledged sample {v} is lost");
        }
    }
    for id in &events {
        assert!(
            event_ids.contains(&u128::from(*id)),
            "acknowledged event {id} is lost"
        );
    }
    // Appends are whole: a chunk is in or out, never partly.
    for v in &values {
        let first = v - v % PER_APPEND;
        assert!(
            (first..first + PER_APPEND).all(|x| values.contains(&x)),
            "append at {first} is torn"
        );
    }
    // At most one append per child was in flight when it died.
    assert!(values.len() as u64 <= (appended.len() as u64 + 3) * PER_APPEND);
    assert!(content.drops.is_empty());
    println!(
        "crash test: {} appends acknowledged, {} batches formed, {} acked before a kill, {} pending after",
        appended.len(),
        formed.len(),
        acked.len(),
        pending.len()
    );
}

/// Complete lines of the side file (a line cut by the kill is ignored).
fn read_log(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(str::to_owned).collect()
}
