//! OctoISP's wire protocol and the domain types the agent and the control plane share.
//!
//! This crate does no I/O: it turns messages into bytes and bytes into messages, with every size bounded.

pub mod campaign;
pub mod commands;
pub mod frame;
pub mod protocol;
pub mod samples;
pub mod settings;

pub use frame::{Compression, DecodeError, EncodeError, Limits};
pub use protocol::*;
pub use samples::SampleBlock;
