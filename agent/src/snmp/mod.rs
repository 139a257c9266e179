//! SNMP in the agent: a codec over bytes (BER, PDUs, v1/v2c/v3 messages, USM security), a multiplexed async
//! transport shared by every device, sessions with walks and table walks, fingerprinting and vendor profiles as
//! data, a priority poller that writes to the outbox, discovery, a trap/inform receiver and the `snmp` CLI.
//!
//! Layers, bottom up (only `engine`, `traps::run`, `discovery` and `cli` touch sockets):
//!
//! | module | does |
//! | --- | --- |
//! | [`ber`], [`pdu`], [`message`], [`usm`] | bytes in, bytes out; fuzzable, never panic |
//! | [`engine`] | shared UDP sockets, request-id demultiplexing, timeouts and retries |
//! | [`client`] | a session with one device: GET/GETNEXT/GETBULK, walks, v3 discovery and resync |
//! | [`fingerprint`], [`enterprises`], [`profile`] | rules, the IANA table and profiles read from data files |
//! | [`rate`] | counters to rates, wrap and reboot detection (pure) |
//! | [`collect`], [`poller`] | one poll of one device; the scheduler of thousands |
//! | [`discovery`], [`traps`], [`cli`], [`config`] | sweeps, notifications, the technician's commands, `[snmp]` |
//! | [`sim`] | a fast simulator of many devices, for tests and benchmarks |

pub mod ber;
pub mod cli;
pub mod client;
pub mod collect;
pub mod config;
pub mod discovered;
pub mod discovery;
pub mod engine;
pub mod enterprises;
pub mod fingerprint;
pub mod message;
pub mod pdu;
pub mod poller;
pub mod profile;
pub mod rate;
pub mod service;
pub mod sim;
pub mod traps;
// generic-array 0.14 is what cipher 0.4 (aes/des 0.8, the released versions) takes; it is deprecated in favour of
// 1.x, which only the unreleased cipher 0.5 uses.
#[allow(deprecated)]
pub mod usm;

pub use ber::Oid;
pub use client::{Credentials, Session, SnmpError, Target};
pub use engine::{Engine, EngineConfig};
pub use message::Version;
pub use pdu::{Value, VarBind};

/// The device key of an SNMP device: `snmp:IP` on port 161, `snmp:IP:PORT` otherwise.
pub fn device_key(addr: std::net::SocketAddr) -> String {
    if addr.port() == 161 {
        format!("snmp:{}", addr.ip())
    } else {
        format!("snmp:{addr}")
    }
}
