//! Devices found by discovery that the daemon polls: what it decided, persisted in the outbox's SQLite state
//! (keys `snmp.discovered/<device key>`), so they are polled again right after a restart.
//!
//! Rules:
//! - a device declared in `[[snmp.devices]]` is never polled as a discovered one (the file takes precedence);
//! - a found device is polled with the credential that answered, named (the secret stays in the configuration,
//!   so a changed community or password applies at the next start; a credential that was removed, or an address
//!   no longer in `snmp.discovery.cidrs`, drops the device);
//! - a device another credential answers for is polled with that one from then on;
//! - a device missing from [`FORGET_AFTER`] sweeps in a row is dropped (it was removed from the network).

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::fingerprint::Fingerprint;
use crate::outbox::{Outbox, OutboxError};

/// Prefix of the state keys.
pub const STATE_PREFIX: &str = "snmp.discovered/";
/// Sweeps in a row a device may be missing from before it is dropped.
pub const FORGET_AFTER: u32 = 3;

/// One discovered device, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Discovered {
    /// Its address.
    pub addr: SocketAddr,
    /// Name of the credential that answered.
    pub credentials: String,
    /// Names of the profiles its fingerprint selects.
    #[serde(default)]
    pub profiles: Vec<String>,
    /// What it is.
    pub fingerprint: Fingerprint,
    /// Sweeps in a row it did not answer.
    #[serde(default)]
    pub missed: u32,
}

/// Why the registry could not read or write the state.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The outbox's state refused.
    #[error("discovered devices: {0}")]
    Outbox(#[from] OutboxError),
    /// A device did not encode.
    #[error("discovered device {key}: {source}")]
    Encode {
        /// Device key.
        key: String,
        /// The error.
        source: serde_json::Error,
    },
}

/// The discovered devices, keyed by device key, mirrored to the outbox's state.
#[derive(Debug)]
pub struct Registry {
    outbox: Outbox,
    devices: HashMap<String, Discovered>,
}

impl Registry {
    /// Loads what was persisted; rows that do not decode are dropped with a warning.
    pub fn load(outbox: Outbox) -> Result<Registry, RegistryError> {
        let mut devices = HashMap::new();
        let mut bad = Vec::new();
        for (k, v) in outbox.states_with_prefix(STATE_PREFIX)? {
            let key = k.trim_start_matches(STATE_PREFIX).to_owned();
            match serde_json::from_str::<Discovered>(&v) {
                Ok(d) => {
                    devices.insert(key, d);
                }
                Err(err) => {
                    tracing::warn!(device = %key, error = %err, "Discovered device not readable: dropped.");
                    bad.push(k);
                }
            }
        }
        if !bad.is_empty() {
            outbox.delete_states(&bad)?;
        }
        Ok(Registry { outbox, devices })
    }

    /// The devices, by device key.
    pub fn devices(&self) -> &HashMap<String, Discovered> {
        &self.devices
    }

    /// Stores `d` under `key`.
    pub fn put(&mut self, key: &str, d: Discovered) -> Result<(), RegistryError> {
        let json = serde_json::to_string(&d).map_err(|source| RegistryError::Encode {
            key: key.to_owned(),
            source,
        })?;
        self.outbox
            .put_state(&format!("{STATE_PREFIX}{key}"), &json)?;
        self.devices.insert(key.to_owned(), d);
        Ok(())
    }

    /// Forgets `keys`.
    pub fn remove(&mut self, keys: &[String]) -> Result<(), RegistryError> {
        if keys.is_empty() {
            return Ok(());
        }
        let state: Vec<String> = keys.iter().map(|k| format!("{STATE_PREFIX}{k}")).collect();
        self.outbox.delete_states(&state)?;
        for k in keys {
            self.devices.remove(k);
        }
        Ok(())
    }
}
