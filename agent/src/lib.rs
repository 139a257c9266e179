//! The OctoISP agent as a library: the binary `octoisp-agent` is a thin CLI over these modules.


pub mod config;
pub mod daemon;
pub mod monitors;
pub mod telemetry;
