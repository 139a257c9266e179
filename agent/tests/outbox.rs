//! Integration tests of the SQLite outbox on real files: ordering and exactly-once through form/ack and reopen,
//! series definitions, re-forming and abandoning batches, the disk cap and the hard ceiling, and damaged files.

mod outbox_support;

use std::collections::BTreeSet;

use octoisp_agent::outbox::{Outbox, OutboxConfig, OutboxError};
use octoisp_shared::{MetricKind, Record};
use outbox_support::{Content, config, decode, drain, event, open, samples};

fn series(outbox: &Outbox, name: &str) -> u64 {
    outbox
        .series_id(
            "icmp:192.0.2.1",
            name,
            &[("probe".into(), "a".into())],
            MetricKind::Gauge,
        )
        .expect("series_id")
}

#[test]
fn outbox_append_form_ack_gives_everything_once_in_order_and_seqs_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = OutboxConfig {
        batch_max_samples: 250,
        ..config(dir.path())
    };
    let outbox = open(&cfg);
    let s = series(&outbox, "ping.rtt_ms");
    let mut next_value = 0;
    let mut events = Vec::new();
    for i in 0..20u64 {
        outbox
            .append_samples_blocking(samples(s, next_value, 100))
            .unwrap();
        next_value += 100;
        if i % 5 == 0 {
            outbox
                .append_records_blocking(vec![event(i as u128, 10)])
                .unwrap();
            events.push(i as u128);
        }
    }
    let stats = outbox.stats().unwrap();
    assert_eq!((stats.chunks, stats.samples, stats.records), (24, 2000, 4));

    // Form two batches, do not ack them, and restart.
    let first = outbox.next_batch().unwrap().expect("a batch");
    let second = outbox.next_batch().unwrap().expect("a batch");
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(
        first.samples, 200,
        "250 max: two chunks of 100, the third would not fit"
    );
    assert_eq!(decode(&first.frame).settled_below, 1);
    assert_eq!(
        decode(&second.frame).settled_below,
        1,
        "batch 1 is still pending"
    );
    drop(outbox);

    let outbox = open(&cfg);
    assert_eq!(
        outbox.pending_batches().unwrap(),
        vec![first.clone(), second.clone()]
    );
    let mut content = Content::default();
    let mut seqs = Vec::new();
    for (p, b) in drain(&outbox) {
        assert_eq!(b.seq, p.seq);
        assert_eq!(b.samples.len() as u64, p.samples);
        assert_eq!(b.records.len() as u64, p.records);
        seqs.push(p.seq);
        content.add(&b);
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs increase: {seqs:?}"
    );
    assert_eq!(
        content.values,
        (0..2000).collect::<Vec<_>>(),
        "every sample once, in order"
    );
    assert_eq!(content.events, events, "every event once, in order");
    assert!(content.drops.is_empty());
    let stats = outbox.stats().unwrap();
    assert_eq!(
        (
            stats.chunks,
            stats.samples,
            stats.batches_pending,
            stats.bytes
        ),
        (0, 0, 0, 0)
    );
    let last = *seqs.last().unwrap();
    drop(outbox);

    // A seq is never reused, even when everything was acked before the restart.
    let outbox = open(&cfg);
    assert!(outbox.pending_batches().unwrap().is_empty());
    assert!(outbox.next_batch().unwrap().is_none());
    let s = series(&outbox, "ping.rtt_ms");
    outbox.append_samples_blocking(samples(s, 5000, 3)).unwrap();
    let p = outbox.next_batch().unwrap().unwrap();
    assert_eq!(p.seq, last + 1);
    assert_eq!(decode(&p.frame).settled_below, last + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_concurrent_producers_are_committed_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(&config(dir.path()));
    let s = series(&outbox, "m");
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let ob = outbox.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50u64 {
                ob.append_samples(samples(s, (t * 50 + i) * 10, 10))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ob = outbox.clone();
    let got = tokio::task::spawn_blocking(move || drain(&ob))
        .await
        .unwrap();
    let mut values: Vec<u64> = got
        .iter()
        .flat_map(|(_, b)| Content::of(b).values)
        .collect();
    values.sort_unstable();
    assert_eq!(values, (0..4000).collect::<Vec<_>>());
}

#[test]
fn outbox_series_ids_are_stable_and_definitions_travel_until_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let outbox = open(&cfg);
    let labels = [
        ("ifName".to_string(), "ge-0/0/1".to_string()),
        ("dir".to_string(), "in".to_string()),
    ];
    let reversed = [labels[1].clone(), labels[0].clone()];
    let a = outbox
        .series_id(
            "snmp:198.51.100.7",
            "if.octets",
            &labels,
            MetricKind::Counter,
        )
        .unwrap();
    let b = outbox
        .series_id(
            "snmp:198.51.100.7",
            "if.octets",
            &reversed,
            MetricKind::Counter,
        )
        .unwrap();
    assert_eq!(a, b, "label order does not matter");
    let c = outbox
        .series_id(
            "snmp:198.51.100.7",
            "if.errors",
            &labels,
            MetricKind::Counter,
        )
        .unwrap();
    assert_ne!(a, c);
    let err = outbox
        .series_id("snmp:198.51.100.7", "if.octets", &labels, MetricKind::Gauge)
        .unwrap_err();
    assert!(
        matches!(err, OutboxError::SeriesKindConflict { .. }),
        "{err}"
    );
    let err = outbox
        .append_samples_blocking(samples(999, 0, 1))
        .unwrap_err();
    assert!(
        matches!(&err, OutboxError::UnknownSeries { ids } if ids == &[999]),
        "{err}"
    );

    outbox.append_samples_blocking(samples(a, 0, 5)).unwrap();
    let p1 = outbox.next_batch().unwrap().unwrap();
    let defs: Vec<u64> = decode(&p1.frame).series.iter().map(|d| d.id).collect();
    assert_eq!(defs, vec![a], "only referenced series are defined");
    let def = &decode(&p1.frame).series[0];
    assert_eq!(
        def.labels,
        vec![labels[1].clone(), labels[0].clone()],
        "labels sorted"
    );
    assert_eq!(def.kind, MetricKind::Counter);

    // Not acked yet: the next batch defines it again.
    outbox.append_samples_blocking(samples(a, 5, 5)).unwrap();
    let p2 = outbox.next_batch().unwrap().unwrap();
    assert_eq!(decode(&p2.frame).series.len(), 1);
    outbox.ack(p1.seq).unwrap();
    outbox.ack(p1.seq).unwrap(); // a duplicate ack is harmless
    drop(outbox);

    // Confirmed (and the ids) survive a restart.
    let outbox = open(&cfg);
    assert_eq!(
        outbox
            .series_id(
                "snmp:198.51.100.7",
                "if.octets",
                &labels,
                MetricKind::Counter
            )
            .unwrap(),
        a
    );
    assert_eq!(
        outbox
            .series_id(
                "snmp:198.51.100.7",
                "if.errors",
                &labels,
                MetricKind::Counter
            )
            .unwrap(),
        c
    );
    let d = outbox
        .series_id(
            "snmp:198.51.100.7",
            "if.discards",
            &labels,
            MetricKind::Counter,
        )
        .unwrap();
    assert!(d > c, "new ids do not collide with old ones");
    outbox.append_samples_blocking(samples(a, 10, 5)).unwrap();
    outbox.append_samples_blocking(samples(d, 15, 5)).unwrap();
    let p3 = outbox.next_batch().unwrap().unwrap();
    let defs: Vec<u64> = decode(&p3.frame).series.iter().map(|d| d.id).collect();
    assert_eq!(defs, vec![d], "a is confirmed, d is new");
}

#[test]
fn outbox_reform_with_series_keeps_seq_and_content_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let outbox = open(&cfg);
    let s = series(&outbox, "m");
    outbox.append_samples_blocking(samples(s, 0, 1)).unwrap();
    let p = outbox.next_batch().unwrap().unwrap();
    outbox.ack(p.seq).unwrap();

    outbox.append_samples_blocking(samples(s, 100, 40)).unwrap();
    outbox.append_records_blocking(vec![event(7, 5)]).unwrap();
    let p = outbox.next_batch().unwrap().unwrap();
    let before = decode(&p.frame);
    assert!(before.series.is_empty(), "s is confirmed");

    let re = outbox.reform_with_series(p.seq, &[s]).unwrap();
    let after = decode(&re.frame);
    assert_eq!(re.seq, p.seq);
    assert_eq!((re.samples, re.records), (p.samples, p.records));
    assert_eq!(after.seq, before.seq);
    assert_eq!(after.created_ms, before.created_ms);
    assert_eq!(after.samples, before.samples);
    assert_eq!(after.records, before.records);
    assert_eq!(
        after.series.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![s]
    );

    // Unconfirmed again: a new batch carries the definition too, until an ack.
    outbox.append_samples_blocking(samples(s, 200, 1)).unwrap();
    let p2 = outbox.next_batch().unwrap().unwrap();
    assert_eq!(decode(&p2.frame).series.len(), 1);

    let err = outbox.reform_with_series(p.seq, &[s, 4242]).unwrap_err();
    assert!(
        matches!(&err, OutboxError::SeriesNotFound { ids, .. } if ids == &[4242]),
        "{err}"
    );
    let err = outbox.reform_with_series(999, &[s]).unwrap_err();
    assert!(
        matches!(err, OutboxError::NoSuchBatch { seq: 999, .. }),
        "{err}"
    );
    drop(outbox);

    let outbox = open(&cfg);
    let pending = outbox.pending_batches().unwrap();
    assert_eq!(pending[0], re, "the re-formed frame is what is stored");
    outbox.ack(re.seq).unwrap();
    outbox.ack(p2.seq).unwrap();
    outbox.append_samples_blocking(samples(s, 300, 1)).unwrap();
    let p3 = outbox.next_batch().unwrap().unwrap();
    assert!(
        decode(&p3.frame).series.is_empty(),
        "confirmed by the ack of the re-formed batch"
    );
}

#[test]
fn outbox_abandon_moves_the_batch_to_dead_letters_counts_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let outbox = open(&cfg);
    let s = series(&outbox, "m");
    outbox.append_samples_blocking(samples(s, 0, 30)).unwrap();
    outbox
        .append_records_blocking(vec![event(1, 5), event(2, 5)])
        .unwrap();
    let p = outbox.next_batch().unwrap().unwrap();
    outbox
        .abandon(p.seq, "Nack::Malformed: bad timestamps")
        .unwrap();
    let err = outbox.abandon(p.seq, "again").unwrap_err();
    assert!(matches!(err, OutboxError::NoSuchBatch { .. }), "{err}");

    let stats = outbox.stats().unwrap();
    assert_eq!(stats.batches_pending, 0);
    assert_eq!(stats.dead_letters, 1);
    assert_eq!(stats.samples_dropped_total, 30);
    assert_eq!(stats.records_dead_total, 2);
    let dead = outbox.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].origin.as_str(), dead[0].origin_id),
        ("batch", p.seq)
    );
    assert_eq!((dead[0].samples, dead[0].records), (30, 2));
    assert!(
        dead[0].reason.contains("bad timestamps"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].bytes, p.frame.len() as u64, "the frame is kept");
    drop(outbox);

    let outbox = open(&cfg);
    let got = drain(&outbox);
    assert_eq!(got.len(), 1);
    let c = Content::of(&got[0].1);
    assert!(got[0].0.seq > p.seq);
    assert_eq!(c.drops.len(), 1, "the loss is reported upstream");
    assert_eq!(
        (c.drops[0].samples_dropped, c.drops[0].records_refused),
        (30, 2)
    );
    assert!(
        c.drops[0].reason.contains("dead letters"),
        "{}",
        c.drops[0].reason
    );
    assert_eq!(outbox.stats().unwrap().dead_letters, 1);
}

/// Size of one stored chunk of 100 samples as `samples` makes them.
fn chunk_size() -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(&config(dir.path()));
    let s = series(&outbox, "m");
    outbox
        .append_samples_blocking(samples(s, 1_000_000, 100))
        .unwrap();
    outbox.stats().unwrap().sample_bytes
}

#[test]
fn outbox_disk_cap_drops_oldest_samples_keeps_every_event_and_reports() {
    let c = chunk_size();
    let dir = tempfile::tempdir().unwrap();
    let cfg = OutboxConfig {
        max_bytes: 20 * c,
        hard_ceiling_bytes: 100 * c,
        ..config(dir.path())
    };
    let outbox = open(&cfg);
    let s = series(&outbox, "m");
    let mut events = Vec::new();
    for i in 0..100u64 {
        outbox
            .append_samples_blocking(samples(s, 1_000_000 + i * 100, 100))
            .unwrap();
        if i % 10 == 3 {
            outbox
                .append_records_blocking(vec![event(i as u128, 20)])
                .unwrap();
            events.push(i as u128);
        }
        let st = outbox.stats().unwrap();
        assert!(
            st.bytes <= cfg.max_bytes,
            "append {i}: {} bytes held, cap {}",
            st.bytes,
            cfg.max_bytes
        );
    }
    let st = outbox.stats().unwrap();
    assert!(st.samples_dropped_total > 0);
    assert_eq!(
        st.samples + st.samples_dropped_total,
        10_000,
        "every sample is either held or counted"
    );
    assert_eq!(
        st.samples_dropped_total % 100,
        0,
        "whole chunks are dropped"
    );
    assert_eq!(st.records_refused_total, 0);
    drop(outbox);

    let outbox = open(&cfg);
    let mut content = Content::default();
    for (_, b) in drain(&outbox) {
        content.add(&b);
    }
    assert_eq!(
        content.events, events,
        "no event is ever dropped by the cap"
    );
    let kept = 10_000 - st.samples_dropped_total;
    let first_kept = 1_000_000 + st.samples_dropped_total;
    assert_eq!(
        content.values,
        (first_kept..first_kept + kept).collect::<Vec<_>>(),
        "the oldest went first"
    );
    assert_eq!(
        content.drops.len(),
        1,
        "losses accumulate in one waiting report: {:?}",
        content.drops
    );
    let d = &content.drops[0];
    assert_eq!(
        (d.samples_dropped, d.records_refused),
        (st.samples_dropped_total, 0)
    );
    assert!(d.reason.contains("disk cap"), "{}", d.reason);
    assert!(d.from_ms <= d.to_ms);
}

#[test]
fn outbox_hard_ceiling_refuses_records_with_full_drops_samples_and_reports_both() {
    let c = chunk_size();
    let dir = tempfile::tempdir().unwrap();
    let cfg = OutboxConfig {
        max_bytes: 5 * c,
        hard_ceiling_bytes: 10 * c,
        ..config(dir.path())
    };
    let outbox = open(&cfg);
    let s = series(&outbox, "m");
    // Events as large as a sample chunk fill the outbox with what the cap cannot drop.
    let big = c as usize;
    let mut accepted = Vec::new();
    let mut refused = 0u64;
    for i in 0..30u128 {
        outbox
            .append_samples_blocking(samples(s, i as u64 * 100, 100))
            .unwrap();
        match outbox.append_records_blocking(vec![event(i, big)]) {
            Ok(()) => accepted.push(i),
            Err(err @ OutboxError::Full { .. }) => {
                let msg = err.to_string();
                assert!(msg.contains("full") && msg.contains("refused"), "{msg}");
                assert!(msg.contains("outbox.db"), "names the file: {msg}");
                refused += 1;
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert!(refused > 0, "the ceiling was reached");
    let st = outbox.stats().unwrap();
    assert!(
        st.record_bytes + 2 * c > cfg.hard_ceiling_bytes,
        "records are refused only near the ceiling: {} record bytes, accepted {accepted:?}",
        st.record_bytes
    );
    assert_eq!(st.records_refused_total, refused);
    assert!(
        st.bytes <= cfg.hard_ceiling_bytes + 1024,
        "{} > ceiling",
        st.bytes
    );
    assert_eq!(st.samples, 0, "every sample chunk was dropped to make room");
    // Samples above the ceiling are dropped (and counted), not refused.
    let before = st.samples_dropped_total;
    outbox
        .append_samples_blocking(samples(s, 10_000, 100))
        .unwrap();
    assert_eq!(outbox.stats().unwrap().samples_dropped_total, before + 100);

    let mut content = Content::default();
    for (_, b) in drain(&outbox) {
        content.add(&b);
    }
    let st = outbox.stats().unwrap();
    assert_eq!(
        content.events, accepted,
        "every accepted record is delivered"
    );
    let reported: u64 = content.drops.iter().map(|d| d.records_refused).sum();
    let dropped: u64 = content.drops.iter().map(|d| d.samples_dropped).sum();
    assert_eq!(reported, refused, "refused records are reported");
    assert_eq!(
        dropped, st.samples_dropped_total,
        "dropped samples are reported"
    );
    assert!(
        content
            .drops
            .iter()
            .any(|d| d.reason.contains("hard ceiling")),
        "{:?}",
        content.drops
    );

    // Once drained there is room again.
    outbox
        .append_records_blocking(vec![event(99, big)])
        .unwrap();
}

#[test]
fn outbox_an_undecodable_chunk_goes_to_dead_letters_without_wedging_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let outbox = open(&cfg);
    let s = series(&outbox, "m");
    outbox.append_samples_blocking(samples(s, 0, 10)).unwrap();
    outbox.append_samples_blocking(samples(s, 10, 10)).unwrap();
    outbox.append_records_blocking(vec![event(5, 3)]).unwrap();
    drop(outbox);
    {
        let conn = rusqlite::Connection::open(&cfg.path).unwrap();
        let n = conn
            .execute(
                "UPDATE chunks SET data = x'ff00ff' WHERE id = (SELECT min(id) FROM chunks)",
                [],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    let outbox = open(&cfg);
    let mut content = Content::default();
    for (_, b) in drain(&outbox) {
        content.add(&b);
    }
    assert_eq!(content.values, (10..20).collect::<Vec<_>>());
    assert_eq!(content.events, vec![5]);
    assert_eq!(content.drops.len(), 1);
    assert_eq!(content.drops[0].samples_dropped, 10);
    let st = outbox.stats().unwrap();
    assert_eq!(
        (st.dead_letters, st.samples_dropped_total, st.chunks),
        (1, 10, 0)
    );
    let dead = outbox.dead_letters().unwrap();
    assert_eq!(dead[0].origin, "chunk");
    assert!(
        dead[0].reason.contains("sample chunk"),
        "{}",
        dead[0].reason
    );
}

#[test]
fn outbox_a_corrupt_or_foreign_file_is_refused_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    std::fs::write(&cfg.path, vec![0x5a; 8192]).unwrap();
    let err = Outbox::open(cfg.clone()).unwrap_err();
    assert!(matches!(err, OutboxError::Corrupt { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&cfg.path.display().to_string()) && msg.contains("move it aside"),
        "{msg}"
    );

    let foreign = OutboxConfig {
        path: dir.path().join("other.db"),
        ..cfg.clone()
    };
    {
        let conn = rusqlite::Connection::open(&foreign.path).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
    }
    let err = Outbox::open(foreign.clone()).unwrap_err();
    assert!(matches!(err, OutboxError::NotAnOutbox { .. }), "{err}");
    assert!(err.to_string().contains("other.db"), "{err}");

    let bad = OutboxConfig {
        hard_ceiling_bytes: 1,
        max_bytes: 2,
        ..cfg
    };
    assert!(matches!(Outbox::open(bad), Err(OutboxError::Config(_))));
}

#[test]
fn outbox_a_second_process_cannot_open_an_outbox_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let outbox = open(&cfg);
    let s = series(&outbox, "m");
    outbox.append_samples_blocking(samples(s, 0, 1)).unwrap();
    // Another connection (as another agent would have) is locked out while this one is open.
    let conn = rusqlite::Connection::open(&cfg.path).unwrap();
    conn.busy_timeout(std::time::Duration::from_millis(50))
        .unwrap();
    let err = conn
        .query_row("SELECT count(*) FROM chunks", [], |r| r.get::<_, i64>(0))
        .unwrap_err();
    assert!(err.to_string().contains("locked"), "{err}");
}

#[tokio::test]
async fn outbox_producer_state_is_committed_with_its_samples() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let outbox = open(&cfg);
    let s = series(&outbox, "m");
    assert_eq!(outbox.state("gen.a").unwrap(), None);
    outbox
        .append_samples_with_state(samples(s, 0, 5), "gen.a", "1:5")
        .await
        .unwrap();
    outbox
        .append_samples_with_state(samples(s, 5, 5), "gen.a", "1:10")
        .await
        .unwrap();
    outbox
        .append_samples_with_state(vec![], "gen.b", "x")
        .await
        .unwrap();
    drop(outbox);
    let outbox = open(&cfg);
    assert_eq!(outbox.state("gen.a").unwrap().as_deref(), Some("1:10"));
    assert_eq!(outbox.state("gen.b").unwrap().as_deref(), Some("x"));
    assert_eq!(outbox.stats().unwrap().samples, 10);
}

#[test]
fn outbox_large_appends_are_split_and_batches_respect_the_byte_target() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = OutboxConfig {
        batch_max_samples: 1000,
        batch_max_bytes: 64 * 1024,
        ..config(dir.path())
    };
    let outbox = open(&cfg);
    let s = series(&outbox, "m");
    outbox.append_samples_blocking(samples(s, 0, 4500)).unwrap();
    assert_eq!(
        outbox.stats().unwrap().chunks,
        5,
        "split into chunks of at most batch_max_samples"
    );
    // Records of ~10 kB each: a batch takes as many as fit in about 64 kB.
    let records: Vec<Record> = (0..20).map(|i| event(i, 10_000)).collect();
    outbox.append_records_blocking(records).unwrap();
    let err = outbox
        .append_records_blocking(vec![event(100, 70_000)])
        .unwrap_err();
    assert!(matches!(err, OutboxError::TooLarge { .. }), "{err}");
    let mut content = Content::default();
    let mut seen = BTreeSet::new();
    for (p, b) in drain(&outbox) {
        assert!(p.samples <= 1000);
        assert!(
            p.frame.len() <= cfg.batch_max_bytes,
            "frame of {} bytes",
            p.frame.len()
        );
        assert!(seen.insert(p.seq));
        content.add(&b);
    }
    assert_eq!(content.values, (0..4500).collect::<Vec<_>>());
    assert_eq!(content.events, (0..20).collect::<Vec<_>>());
}
