//! The simulator's own counters: what it produced, so that losses downstream can be computed.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Counters, updated lock-free by every device task.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A copy of the counters at one moment.
        #[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
        pub struct Snapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            /// Reads every counter.
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Informs started (every session begins with one).
    informs_sent,
    /// Sessions that ended with the ACS's 204.
    informs_ok,
    /// Sessions that failed (connection refused, 503, error status, broken session).
    informs_failed,
    /// First Informs (`0 BOOTSTRAP` + `1 BOOT`) that completed: devices registered.
    registrations_ok,
    /// Later `1 BOOT` Informs (a simulated reboot) that completed.
    reboots_ok,
    /// `2 PERIODIC` Informs that completed.
    periodic_ok,
    /// `6 CONNECTION REQUEST` Informs that completed.
    connection_request_informs_ok,
    /// Connection requests received on the shared listener.
    connection_requests,
    /// RPCs the ACS sent to CPEs.
    rpcs,
    /// RPCs the ACS sent to the faulting CPEs (which answer Set and Download with faults).
    rpcs_to_faulty,
    /// SNMP request datagrams received.
    snmp_requests,
    /// SNMP responses sent.
    snmp_responses,
    /// Requests left unanswered on purpose (dead devices).
    snmp_ignored,
    /// Polls started (the poller's first GET: sysUpTime.0, ifNumber.0...) that were answered, each poll once
    /// (retransmissions of its first GET are not counted again).
    snmp_polls_answered,
    /// Retransmitted first GETs of a poll already counted (same poller address and request id): answered again,
    /// not counted as polls.
    snmp_poll_retransmissions,
    /// Link state changes of flapping interfaces.
    snmp_flaps,
}

impl Snapshot {
    /// Prometheus text exposition of the counters.
    pub fn prometheus(&self) -> String {
        let v = serde_json::to_value(self).unwrap_or_default();
        let mut out = String::new();
        if let Some(map) = v.as_object() {
            for (k, v) in map {
                out.push_str(&format!(
                    "# TYPE octoisp_fleetsim_{k}_total counter\noctoisp_fleetsim_{k}_total {v}\n"
                ));
            }
        }
        out
    }
}
