//! Runs the `cwmp_parse` fuzz target's check over every file of its seed corpus (`agent/fuzz/corpus/cwmp_parse/`),
//! so that the seeds, and any crash input added there after a fix, are regression tests on stable Rust. Files
//! named `golden-*` (envelopes as Huawei, ZTE and TP-Link CPEs send them) must parse, `bad-*` files (billion
//! laughs, wrong namespaces, truncated, too deep, not UTF-8...) must be refused, and any other file only must not
//! panic.

#[path = "../fuzz/check.rs"]
mod check;

use std::fs;
use std::path::PathBuf;

#[test]
fn cwmp_seed_corpus_never_panics_golden_seeds_parse_bad_seeds_are_refused() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/cwmp_parse");
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let (mut golden, mut bad) = (0, 0);
    for path in &entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = fs::read(path).unwrap();
        let result = std::panic::catch_unwind(|| check::check(&data).map(|_| ()))
            .unwrap_or_else(|_| panic!("{name}: the codec panicked or broke a property"));
        if name.starts_with("golden-") {
            result.unwrap_or_else(|err| panic!("{name}: golden seed does not parse: {err}"));
            golden += 1;
        } else if name.starts_with("bad-") {
            assert!(result.is_err(), "{name}: a malformed seed parsed");
            bad += 1;
        }
    }
    assert!(golden >= 6, "only {golden} golden seeds");
    assert!(bad >= 10, "only {bad} bad seeds");
}
