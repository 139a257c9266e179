//! The OctoISP agent as a library: the binary `octoisp-agent` is a thin CLI over these modules.

pub mod acs;
pub mod central;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod diag;
pub mod enroll;
pub mod identity;
pub mod monitors;
pub mod outbox;
pub mod snmp;
pub mod telemetry;
pub mod tls;
pub mod uplink;
