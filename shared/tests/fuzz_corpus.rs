//! Runs the `decode_frame` fuzz target's check over every file of its seed corpus
//! (`shared/fuzz/corpus/decode_frame/`), so that the seeds, and any crash input added there after a fix, are
//! regression tests on stable Rust. Files named `golden-*` must decode, `bad-samples-*` must decode as frames
//! whose sample block is refused, and the others are malformed frames that must be refused.
//!
//! The golden seeds are written by `tests/golden.rs`, the malformed ones by [`malformed_seeds`] below; both only
//! with `OCTOISP_BLESS=1` (see `tests/golden.rs`). A normal run checks that the committed seeds are current.

mod common;

#[path = "../fuzz/check.rs"]
mod check;

use std::fs;

use octoisp_shared::frame::{self, Compression, FLAG_ZSTD, HEADER_LEN};
use octoisp_shared::{Message, SampleBlock};

use common::{RawSampleBlock, frame_of, rle_bomb, varint};

/// The malformed seeds, by file name: each reaches a different refusal of the decoder.
fn malformed_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let plain = |msg: &Message| frame::encode(msg, Compression::None).unwrap();
    let messages = common::golden_messages();
    let msg = |name: &str| {
        messages
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| m.clone())
            .unwrap()
    };
    let batch = plain(&msg("batch"));
    let zipped = frame::encode(&msg("batch"), Compression::Zstd(3)).unwrap();
    let with = |bytes: &[u8], at: usize, value: u8| {
        let mut b = bytes.to_vec();
        b[at] = value;
        b
    };
    let batch_with_block = |raw: RawSampleBlock| {
        let Message::Batch(mut b) = msg("batch") else {
            unreachable!()
        };
        b.samples = raw.to_block();
        plain(&Message::Batch(b))
    };
    let good_block = RawSampleBlock::from_block(&SampleBlock::encode(&common::golden_samples()));
    vec![
        ("bad-magic.bin", with(&plain(&msg("ack")), 0, b'X')),
        ("unknown-flags.bin", with(&plain(&msg("hello")), 1, 0x02)),
        ("oversize-len.bin", vec![b'O', 0, 0xff, 0xff, 0xff, 0xff]),
        ("truncated-header.bin", batch[..3].to_vec()),
        ("truncated-payload.bin", batch[..batch.len() - 5].to_vec()),
        (
            "payload-cut-short.bin",
            frame_of(0, &batch[HEADER_LEN..batch.len() - 5]),
        ),
        (
            "trailing-in-payload.bin",
            frame_of(0, &[&plain(&msg("ack"))[HEADER_LEN..], &[0]].concat()),
        ),
        (
            "zstd-flag-on-plain.bin",
            with(&plain(&msg("hello")), 1, FLAG_ZSTD),
        ),
        (
            "zstd-truncated.bin",
            frame_of(FLAG_ZSTD, &zipped[HEADER_LEN..zipped.len() - 3]),
        ),
        (
            "zstd-trailing.bin",
            frame_of(FLAG_ZSTD, &[&zipped[HEADER_LEN..], &[7, 7]].concat()),
        ),
        (
            "zstd-bomb-declared.bin",
            frame_of(FLAG_ZSTD, &rle_bomb(64, true)),
        ),
        (
            "zstd-bomb-undeclared.bin",
            frame_of(FLAG_ZSTD, &rle_bomb(64, false)),
        ),
        ("unknown-variant.bin", frame_of(0, &[200, 0, 0])),
        (
            "huge-vec-length.bin",
            frame_of(0, &[7, 43, 2, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]),
        ),
        (
            "bad-samples-huge-run.bin",
            batch_with_block(RawSampleBlock {
                count: 1 << 40,
                series: varint(1),
                run_lens: varint(1 << 40),
                run_ts: varint(0),
                ints: vec![varint(0)],
                ..RawSampleBlock::default()
            }),
        ),
        (
            "bad-samples-count.bin",
            batch_with_block(RawSampleBlock {
                count: good_block.count + 1,
                ..good_block.clone()
            }),
        ),
        (
            "bad-samples-float-pos.bin",
            batch_with_block(RawSampleBlock {
                float_pos: varint(u64::MAX),
                ..good_block.clone()
            }),
        ),
        (
            "bad-samples-int-planes.bin",
            batch_with_block(RawSampleBlock {
                ints: vec![vec![0x80]; 11],
                ..good_block.clone()
            }),
        ),
    ]
}

#[test]
fn malformed_seeds_are_current() {
    let dir = common::corpus_dir();
    let bless = std::env::var_os("OCTOISP_BLESS").is_some_and(|v| v == "1");
    for (name, bytes) in malformed_seeds() {
        let path = dir.join(name);
        if bless {
            fs::create_dir_all(&dir).unwrap();
            fs::write(&path, &bytes).unwrap();
        }
        let committed = fs::read(&path)
            .unwrap_or_else(|err| panic!("{}: {err}; bless with OCTOISP_BLESS=1", path.display()));
        assert!(
            committed == bytes,
            "{name} is stale: regenerate with OCTOISP_BLESS=1"
        );
    }
}

#[test]
fn seed_corpus_never_panics_and_golden_seeds_decode() {
    let dir = common::corpus_dir();
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let (mut golden, mut malformed) = (0, 0);
    for path in &entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = fs::read(path).unwrap();
        let result = std::panic::catch_unwind(|| check::check(&data).map(|_| ()));
        // `check` returns Ok for a batch whose samples are refused: the frame itself is fine.
        let result = result.unwrap_or_else(|_| panic!("{name}: the decoder panicked"));
        if name.starts_with("golden-") {
            result.unwrap_or_else(|err| panic!("{name}: golden seed does not decode: {err}"));
            golden += 1;
        } else if name.starts_with("bad-samples-") {
            let Ok((Message::Batch(batch), _)) = frame::decode(&data, &check::LIMITS) else {
                panic!("{name}: should be a well-formed batch frame");
            };
            assert!(
                batch.samples.decode().is_err(),
                "{name}: sample block accepted"
            );
            malformed += 1;
        } else {
            assert!(
                result.is_err(),
                "{name}: a malformed seed decoded; is it really malformed?"
            );
            malformed += 1;
        }
    }
    // Every golden vector is a seed, and there are malformed seeds too.
    assert_eq!(
        golden,
        fs::read_dir(common::golden_dir()).unwrap().count(),
        "golden seeds missing"
    );
    assert!(malformed >= 10, "only {malformed} malformed seeds");
}
