//! Model-based test: random sequences of appends, batch forming, acks, re-forms, abandons and reopens run against
//! the real outbox (a SQLite file) and against a plain in-memory model of what it must hold; after every step the
//! two must agree on the batches formed (seq, `settled_below`, content, series definitions, bytes across reopen)
//! and on the counts.

mod outbox_support;

use std::collections::{BTreeMap, VecDeque};

use octoisp_agent::outbox::{Outbox, OutboxConfig};
use octoisp_shared::MetricKind;
use outbox_support::{Content, config, decode, event, open, samples};
use proptest::prelude::*;

const MAX_SAMPLES: u64 = 40;

#[derive(Debug, Clone)]
enum Op {
    Samples(u64),
    Events(u8),
    Form,
    Ack(usize),
    Reform(usize),
    Abandon(usize),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..=30u64).prop_map(Op::Samples),
        2 => (1..=3u8).prop_map(Op::Events),
        3 => Just(Op::Form),
        3 => any::<usize>().prop_map(Op::Ack),
        1 => any::<usize>().prop_map(Op::Reform),
        1 => any::<usize>().prop_map(Op::Abandon),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone)]
enum MChunk {
    Samples(Vec<u64>),
    Events(Vec<u128>),
    /// The waiting drop report: samples dropped, records refused.
    Drop(u64, u64),
}

#[derive(Debug, Clone)]
struct MBatch {
    content: Content,
    records: u64,
    carries_def: bool,
    frame: Vec<u8>,
}

#[derive(Debug, Default)]
struct Model {
    chunks: VecDeque<MChunk>,
    batches: BTreeMap<u64, MBatch>,
    next_seq: u64,
    next_value: u64,
    next_event: u128,
    confirmed: bool,
    samples_dropped_total: u64,
    records_dead_total: u64,
    dead_letters: u64,
}

impl Model {
    fn pick(&self, i: usize) -> Option<u64> {
        let keys: Vec<u64> = self.batches.keys().copied().collect();
        (!keys.is_empty()).then(|| keys[i % keys.len()])
    }

    /// What forming a batch must take: the oldest chunks within MAX_SAMPLES, at least one.
    fn take(&mut self) -> Option<(Content, u64)> {
        let mut content = Content::default();
        let mut records = 0;
        let mut taken = 0;
        while let Some(front) = self.chunks.front() {
            let n = match front {
                MChunk::Samples(v) => v.len() as u64,
                _ => 0,
            };
            if taken > 0 && content.values.len() as u64 + n > MAX_SAMPLES {
                break;
            }
            match self.chunks.pop_front() {
                Some(MChunk::Samples(v)) => content.values.extend(v),
                Some(MChunk::Events(e)) => {
                    records += e.len() as u64;
                    content.events.extend(e);
                }
                Some(MChunk::Drop(s, r)) => {
                    records += 1;
                    content.drops.push(octoisp_shared::DropReport {
                        id: uuid::Uuid::nil(),
                        from_ms: 0,
                        to_ms: 0,
                        samples_dropped: s,
                        records_refused: r,
                        reason: String::new(),
                    });
                }
                None => unreachable!(),
            }
            taken += 1;
        }
        (taken > 0).then_some((content, records))
    }

    fn report_loss(&mut self, samples: u64, records: u64) {
        self.samples_dropped_total += samples;
        self.records_dead_total += records;
        self.dead_letters += 1;
        if let Some(MChunk::Drop(s, r)) = self
            .chunks
            .iter_mut()
            .rev()
            .find(|c| matches!(c, MChunk::Drop(..)))
        {
            *s += samples;
            *r += records;
        } else {
            self.chunks.push_back(MChunk::Drop(samples, records));
        }
    }
}

/// Content with the drop reports reduced to their counts (ids and times are not the model's business).
fn normalized(mut c: Content) -> Content {
    for d in &mut c.drops {
        d.id = uuid::Uuid::nil();
        d.from_ms = 0;
        d.to_ms = 0;
        d.reason.clear();
    }
    c
}

fn series(outbox: &Outbox) -> u64 {
    outbox
        .series_id("icmp:192.0.2.9", "ping.rtt_ms", &[], MetricKind::Gauge)
        .unwrap()
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = OutboxConfig {
        batch_max_samples: MAX_SAMPLES as usize,
        ..config(dir.path())
    };
    let mut outbox = open(&cfg);
    let s = series(&outbox);
    let mut m = Model {
        next_seq: 1,
        ..Model::default()
    };
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Samples(n) => {
                outbox
                    .append_samples_blocking(samples(s, m.next_value, n))
                    .unwrap();
                m.chunks
                    .push_back(MChunk::Samples((m.next_value..m.next_value + n).collect()));
                m.next_value += n;
            }
            Op::Events(n) => {
                let ids: Vec<u128> = (m.next_event..m.next_event + u128::from(n)).collect();
                outbox
                    .append_records_blocking(ids.iter().map(|&i| event(i, 4)).collect())
                    .unwrap();
                m.chunks.push_back(MChunk::Events(ids));
                m.next_event += u128::from(n);
            }
            Op::Form => {
                let got = outbox.next_batch().unwrap();
                match m.take() {
                    None => {
                        prop_assert!(got.is_none(), "step {step}: a batch from an empty outbox")
                    }
                    Some((content, records)) => {
                        let p = got
                            .ok_or_else(|| TestCaseError::fail(format!("step {step}: no batch")))?;
                        let b = decode(&p.frame);
                        prop_assert_eq!(p.seq, m.next_seq);
                        prop_assert_eq!(b.seq, p.seq);
                        let settled = m.batches.keys().next().copied().unwrap_or(p.seq).min(p.seq);
                        prop_assert_eq!(b.settled_below, settled);
                        prop_assert_eq!(
                            (p.samples, p.records),
                            (content.values.len() as u64, records)
                        );
                        prop_assert_eq!(normalized(Content::of(&b)), content.clone());
                        let carries_def = !b.series.is_empty();
                        let expect_def = !m.confirmed && !content.values.is_empty();
                        prop_assert_eq!(
                            carries_def,
                            expect_def,
                            "step {}: definitions {:?}",
                            step,
                            b.series
                        );
                        m.next_seq += 1;
                        m.batches.insert(
                            p.seq,
                            MBatch {
                                content,
                                records,
                                carries_def,
                                frame: p.frame,
                            },
                        );
                    }
                }
            }
            Op::Ack(i) => match m.pick(i) {
                None => outbox.ack(m.next_seq + 100).unwrap(),
                Some(seq) => {
                    outbox.ack(seq).unwrap();
                    let b = m.batches.remove(&seq).unwrap();
                    m.confirmed |= b.carries_def;
                }
            },
            Op::Reform(i) => {
                if let Some(seq) = m.pick(i) {
                    let p = outbox.reform_with_series(seq, &[s]).unwrap();
                    let b = decode(&p.frame);
                    let mb = m.batches.get_mut(&seq).unwrap();
                    prop_assert_eq!(b.seq, seq);
                    prop_assert_eq!(normalized(Content::of(&b)), mb.content.clone());
                    prop_assert_eq!(b.series.iter().map(|d| d.id).collect::<Vec<_>>(), vec![s]);
                    mb.carries_def = true;
                    mb.frame = p.frame;
                    m.confirmed = false;
                }
            }
            Op::Abandon(i) => {
                if let Some(seq) = m.pick(i) {
                    outbox.abandon(seq, "model says so").unwrap();
                    let b = m.batches.remove(&seq).unwrap();
                    m.report_loss(b.content.values.len() as u64, b.records);
                }
            }
            Op::Reopen => {
                drop(outbox);
                outbox = open(&cfg);
                prop_assert_eq!(series(&outbox), s);
            }
        }

        // The outbox and the model agree after every step.
        let pending = outbox.pending_batches().unwrap();
        let pending: Vec<(u64, &[u8])> = pending
            .iter()
            .map(|p| (p.seq, p.frame.as_slice()))
            .collect();
        let expected: Vec<(u64, &[u8])> = m
            .batches
            .iter()
            .map(|(k, b)| (*k, b.frame.as_slice()))
            .collect();
        prop_assert_eq!(pending, expected, "step {}: pending batches", step);
        let st = outbox.stats().unwrap();
        let chunk_samples: u64 = m
            .chunks
            .iter()
            .map(|c| match c {
                MChunk::Samples(v) => v.len() as u64,
                _ => 0,
            })
            .sum();
        let batch_samples: u64 = m
            .batches
            .values()
            .map(|b| b.content.values.len() as u64)
            .sum();
        prop_assert_eq!(st.chunks, m.chunks.len() as u64, "step {}: chunks", step);
        prop_assert_eq!(
            st.samples,
            chunk_samples + batch_samples,
            "step {}: samples",
            step
        );
        prop_assert_eq!(st.batches_pending, m.batches.len() as u64);
        prop_assert_eq!(st.samples_dropped_total, m.samples_dropped_total);
        prop_assert_eq!(st.records_dead_total, m.records_dead_total);
        prop_assert_eq!(st.dead_letters, m.dead_letters);
        let frames: u64 = m.batches.values().map(|b| b.frame.len() as u64).sum();
        prop_assert_eq!(st.batch_bytes, frames, "step {}: batch bytes", step);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn outbox_agrees_with_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
