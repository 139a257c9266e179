//! The OctoISP control plane as a library: the binary `octoisp-controlplane` is a thin CLI over these modules.

pub mod alerts;
pub mod api;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod ca;
pub mod commands;
pub mod config;
pub mod console;
pub mod db;
pub mod firmware;
pub mod ingest;
pub mod notify;
pub mod queue;
pub mod redis_conn;
pub mod registry;
pub mod reports;
pub mod rollup;
pub mod secretbox;
pub mod serve;
pub mod telemetry;
pub mod tls;
