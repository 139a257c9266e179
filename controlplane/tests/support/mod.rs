//! Test support shared by the control plane's integration tests: a fresh PostgreSQL database per test
//! ([`TestDb`]), a private PostgreSQL cluster that a test may stop and restart ([`PrivatePg`]), fixtures
//! (tenants with an enrolled agent, batches), and local stand-ins for SMTP and HTTP peers ([`standins`]).
//!
//! Each test binary uses part of it (`#[allow(dead_code)]` on the `mod support;` line is expected).

pub mod api;
pub mod fixtures;
pub mod pg;
pub mod standins;
pub mod testdb;

// Each test binary uses some of these.
#[allow(unused_imports)]
pub use pg::PrivatePg;
#[allow(unused_imports)]
pub use testdb::TestDb;
