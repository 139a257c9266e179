//! Ingest of agent data: the QUIC endpoint agents stream batches to, and the writer that stores each batch in
//! PostgreSQL exactly once.

pub mod server;
pub mod store;
