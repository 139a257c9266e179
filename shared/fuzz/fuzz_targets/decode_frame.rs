//! Fuzz target: `frame::decode` on arbitrary bytes, and `SampleBlock::decode` on the samples of any batch.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../check.rs"]
mod check;

fuzz_target!(|data: &[u8]| {
    let _ = check::check(data);
});
