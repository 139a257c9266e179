//! The property the `cwmp_parse` fuzz target checks, shared with the corpus test in
//! `agent/tests/acs_fuzz_corpus.rs` so that both run exactly the same code.
//!
//! For any input, raw or gzip-compressed as a CPE may send it: parsing never panics, and an envelope that parses
//! builds into bytes that parse back to the same envelope (what the ACS answers is what it understood).

use octoisp_agent::acs::cwmp::{self, CwmpError, Envelope, Limits};

/// Limits small enough that every fuzz input runs fast, large enough for every seed.
pub const LIMITS: Limits = Limits {
    max_bytes: 256 << 10,
    max_depth: 32,
    max_elements: 10_000,
    max_text: 64 << 10,
};

/// Runs the codec over `data`; panics only when a property is violated.
pub fn check(data: &[u8]) -> Result<Envelope, CwmpError> {
    let env = cwmp::parse(data, &LIMITS)?;
    let bytes = cwmp::build(&env);
    let again = cwmp::parse(&bytes, &Limits::default()).expect("a built envelope parses");
    assert_eq!(again, env, "a parsed envelope builds and parses to itself");
    Ok(env)
}
