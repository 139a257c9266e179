//! Golden vectors: the exact bytes of one frame per `Message` variant, committed under `tests/golden/`.
//!
//! Any change to the wire format (a field added, reordered or retyped, a change to the sample encoding) changes
//! these bytes and fails this test: that is the point. If the change is deliberate (and comes with a new
//! protocol version when old peers could not read the new bytes), regenerate the vectors and the fuzz seeds
//! made from them with:
//!
//! ```text
//! OCTOISP_BLESS=1 cargo test -p octoisp-shared --test golden
//! ```
//!
//! and commit the new files. The same run writes the seed corpus of the fuzz target
//! (`shared/fuzz/corpus/decode_frame/`): a `golden-*` copy of each vector and the `bad-*` malformed seeds made
//! by `common::malformed_seeds`. A normal run only reads all of these and fails when one is stale.

mod common;

use std::fs;

use octoisp_shared::frame::{self, Compression};
use octoisp_shared::{Limits, Message};

fn blessing() -> bool {
    std::env::var_os("OCTOISP_BLESS").is_some_and(|v| v == "1")
}

#[test]
fn every_variant_has_a_golden_vector() {
    let messages = common::golden_messages();
    let names: Vec<&str> = messages.iter().map(|(name, _)| *name).collect();
    // One per variant, in declaration order; a new variant needs a new vector here.
    let variant_index = |m: &Message| postcard::to_stdvec(m).unwrap()[0];
    for (i, (_, msg)) in messages.iter().enumerate() {
        assert_eq!(
            usize::from(variant_index(msg)),
            i,
            "golden_messages() out of variant order: {names:?}"
        );
    }
    assert_eq!(
        messages.len(),
        13,
        "a Message variant was added: add its golden vector"
    );
}

#[test]
fn golden_vectors_match_encoder_and_decoder() {
    let dir = common::golden_dir();
    let bless = blessing();
    if bless {
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(common::corpus_dir()).unwrap();
    }
    for (name, msg) in common::golden_messages() {
        let path = dir.join(format!("{name}.bin"));
        let encoded = frame::encode(&msg, Compression::None).unwrap();
        if bless {
            fs::write(&path, &encoded).unwrap();
            fs::write(
                common::corpus_dir().join(format!("golden-{name}.bin")),
                &encoded,
            )
            .unwrap();
        }
        let committed = fs::read(&path).unwrap_or_else(|err| {
            panic!(
                "{}: {err}; generate it with OCTOISP_BLESS=1 (see this file's header)",
                path.display()
            )
        });
        assert!(
            committed == encoded,
            "{name}: encoder output differs from {}\n committed: {committed:02x?}\n   encoded: {encoded:02x?}",
            path.display()
        );
        let seed =
            fs::read(common::corpus_dir().join(format!("golden-{name}.bin"))).unwrap_or_default();
        assert!(
            seed == committed,
            "fuzz seed golden-{name}.bin is stale: bless (see this file's header)"
        );
        let (decoded, used) = frame::decode(&committed, &Limits::default()).unwrap();
        assert_eq!(used, committed.len(), "{name}");
        assert_eq!(
            decoded, msg,
            "{name}: committed bytes decode to something else"
        );
        if let Message::Batch(batch) = &decoded {
            assert_eq!(
                common::canonical(&batch.samples.decode().unwrap()),
                common::canonical(&common::golden_samples())
            );
        }
    }
}

#[test]
fn golden_compressed_batch_decodes() {
    // zstd output may legitimately change with the zstd library, so this vector is only decoded, never compared
    // with fresh encoder output: it proves that a compressed frame written once stays readable.
    let path = common::golden_dir().join("batch.zst.bin");
    let msg = Message::Batch(common::golden_batch());
    if blessing() {
        let bytes = frame::encode(&msg, Compression::Zstd(3)).unwrap();
        fs::write(&path, &bytes).unwrap();
        fs::write(common::corpus_dir().join("golden-batch.zst.bin"), &bytes).unwrap();
    }
    let committed = fs::read(&path).unwrap();
    assert_eq!(committed[1], frame::FLAG_ZSTD);
    let seed = fs::read(common::corpus_dir().join("golden-batch.zst.bin")).unwrap_or_default();
    assert!(
        seed == committed,
        "fuzz seed golden-batch.zst.bin is stale: bless"
    );
    let (decoded, used) = frame::decode(&committed, &Limits::default()).unwrap();
    assert_eq!(used, committed.len());
    assert_eq!(decoded, msg);
}

#[test]
fn malformed_seeds_are_current() {
    let dir = common::corpus_dir();
    let bless = blessing();
    for (name, bytes) in common::malformed_seeds() {
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
