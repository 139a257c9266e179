//! Helpers shared by the outbox integration tests: configurations in temporary directories, sample and event
//! makers, and decoding of batch frames.
#![allow(dead_code)] // Each test file uses a different subset.

use std::path::Path;

use octoisp_agent::outbox::{Outbox, OutboxConfig, PendingBatch, Synchronous};
use octoisp_shared::frame::{self, Limits};
use octoisp_shared::{Batch, DropReport, Event, Message, Record, Sample, Severity};
use uuid::Uuid;

/// A configuration in `dir` with generous limits and `synchronous=NORMAL` (process crashes only).
pub fn config(dir: &Path) -> OutboxConfig {
    OutboxConfig {
        synchronous: Synchronous::Normal,
        ..OutboxConfig::new(dir.join("outbox.db"))
    }
}

/// Opens `cfg`, panicking with the error's message.
pub fn open(cfg: &OutboxConfig) -> Outbox {
    match Outbox::open(cfg.clone()) {
        Ok(o) => o,
        Err(e) => panic!("open {}: {e}", cfg.path.display()),
    }
}

/// `n` samples of `series` whose values are `first..first + n` (and timestamps too), so that every sample of a
/// test is recognizable by its value.
pub fn samples(series: u64, first: u64, n: u64) -> Vec<Sample> {
    (first..first + n)
        .map(|v| Sample {
            series,
            ts_ms: 1_700_000_000_000 + v as i64,
            value: v as f64,
        })
        .collect()
}

/// An event whose id encodes `n`.
pub fn event(n: u128, message_len: usize) -> Record {
    Record::Event(Event {
        id: Uuid::from_u128(n),
        ts_ms: 1_700_000_000_000,
        device_key: Some("icmp:192.0.2.1".into()),
        kind: "ping.down".into(),
        severity: Severity::Warning,
        message: "x".repeat(message_len),
        attrs: vec![],
    })
}

/// Decodes a batch frame, checking it is one whole frame.
pub fn decode(frame: &[u8]) -> Batch {
    match frame::decode(frame, &Limits::default()) {
        Ok((Message::Batch(b), used)) => {
            assert_eq!(used, frame.len(), "trailing bytes after the batch frame");
            b
        }
        Ok((other, _)) => panic!("not a batch: {other:?}"),
        Err(e) => panic!("undecodable batch frame: {e}"),
    }
}

/// What a batch holds, flattened: sample values, event ids (as u128), drop reports.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Content {
    pub values: Vec<u64>,
    pub events: Vec<u128>,
    pub drops: Vec<DropReport>,
}

impl Content {
    pub fn of(batch: &Batch) -> Content {
        let mut c = Content::default();
        c.add(batch);
        c
    }

    pub fn add(&mut self, batch: &Batch) {
        let samples = batch.samples.decode().expect("sample block decodes");
        self.values.extend(samples.iter().map(|s| s.value as u64));
        for r in &batch.records {
            match r {
                Record::Event(e) => self.events.push(e.id.as_u128()),
                Record::DropReport(d) => self.drops.push(d.clone()),
                other => panic!("unexpected record {other:?}"),
            }
        }
    }
}

/// Sends everything: the pending batches, then new ones until the outbox is empty, acking each. Returns the
/// batches in the order they were acked.
pub fn drain(outbox: &Outbox) -> Vec<(PendingBatch, Batch)> {
    let mut out = Vec::new();
    for p in outbox.pending_batches().expect("pending") {
        let b = decode(&p.frame);
        outbox.ack(p.seq).expect("ack");
        out.push((p, b));
    }
    while let Some(p) = outbox.next_batch().expect("next_batch") {
        let b = decode(&p.frame);
        outbox.ack(p.seq).expect("ack");
        out.push((p, b));
    }
    out
}
