//! End-to-end tests of the data path with the real binaries, a private PostgreSQL cluster and QUIC on
//! loopback: what an operator would see after crashes, outages and a full disk.

#[path = "../support/mod.rs"]
#[allow(dead_code)]
mod support;

mod harness;

mod commands;
#[path = "../../../agent/tests/acs_support/cpe.rs"]
mod cpe;
mod data_path;
mod firmware;
