//! Runs the `decode_frame` fuzz target's check over every file of its seed corpus
//! (`shared/fuzz/corpus/decode_frame/`), so that the seeds, and any crash input added there after a fix, are
//! regression tests on stable Rust. Files named `golden-*` must decode, `bad-samples-*` must decode as frames
//! whose sample block is refused, other `bad-*` files are malformed frames that must be refused, and any other
//! file (an input saved from a fuzzing run, a crash reproducer after its fix) only must not panic.
//!
//! The `golden-*` and `bad-*` seeds are written by `tests/golden.rs` with `OCTOISP_BLESS=1` (see there), which
//! also checks that the committed ones are current.

mod common;

#[path = "../fuzz/check.rs"]
mod check;

use std::fs;

use octoisp_shared::Message;
use octoisp_shared::frame;

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
