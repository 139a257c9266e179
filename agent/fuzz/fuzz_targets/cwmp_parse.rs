//! Fuzz target: `cwmp::parse` on arbitrary bytes, and `cwmp::build` of whatever parses.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../check.rs"]
mod check;

fuzz_target!(|data: &[u8]| {
    let _ = check::check(data);
});
