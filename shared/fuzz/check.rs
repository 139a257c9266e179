//! The property the `decode_frame` fuzz target checks, shared with the corpus test in
//! `shared/tests/fuzz_corpus.rs` so that both run exactly the same code.
//!
//! For any input: decoding a frame never panics; a decoded message re-encodes and decodes to itself; the
//! samples of a decoded batch either fail to decode with an error or decode to samples that re-encode into a
//! block holding the same samples.

use octoisp_shared::frame::{self, Compression, DecodeError};
use octoisp_shared::{Limits, Message, SampleBlock};

/// Limits small enough that every fuzz input runs fast, large enough for every seed.
pub const LIMITS: Limits = Limits {
    max_frame_bytes: 1 << 20,
    max_decompressed_bytes: 4 << 20,
};

/// Runs the decoders over `data`; panics only when a property is violated.
pub fn check(data: &[u8]) -> Result<Message, DecodeError> {
    let (msg, used) = frame::decode(data, &LIMITS)?;
    assert!(
        used <= data.len(),
        "consumed {used} of {} bytes",
        data.len()
    );
    if let Ok(bytes) = frame::encode_with_limits(&msg, Compression::None, &LIMITS) {
        let (again, _) = frame::decode(&bytes, &LIMITS).expect("a re-encoded message decodes");
        assert_eq!(again, msg, "a decoded message re-encodes to itself");
    }
    if let Message::Batch(batch) = &msg
        && let Ok(samples) = batch.samples.decode()
    {
        assert_eq!(samples.len(), batch.samples.len());
        let again = SampleBlock::encode(&samples)
            .decode()
            .expect("re-encoded samples decode");
        let bits = |s: &[octoisp_shared::Sample]| {
            let mut v: Vec<_> = s
                .iter()
                .map(|s| (s.series, s.ts_ms, s.value.to_bits()))
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(
            bits(&again),
            bits(&samples),
            "decoded samples survive a round trip"
        );
    }
    Ok(msg)
}
