//! Network diagnostics: ping, traceroute/MTR, IP sweep, port scan, DNS and HTTP(S) checks.
//!
//! Each tool is a library module callable three ways: by the technician's CLI ([`cli`]), by continuous
//! monitors (`crate::monitors`), and by remote commands (later, through the command queue; scans then pass
//! [`safety::Allowlist::check`] first). Statistics are pure code in [`stats`]; every packet any tool sends
//! draws from one process-wide budget ([`safety::global`]).

pub mod asn;
pub mod batch;
pub mod cli;
pub mod dns;
pub mod echo;
pub mod http;
pub mod ping;
pub mod portscan;
pub mod rdns;
pub mod safety;
pub mod stats;
pub mod sweep;
pub mod synscan;
pub mod target;
pub mod tcpraw;
pub mod trace;
