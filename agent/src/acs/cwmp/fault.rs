//! CWMP fault codes (TR-069 Amendment 6, tables of ACS faults 8000-8006 and CPE faults 9000-9032) and the
//! SOAP fault that carries them.

/// A CWMP fault code. Unknown codes are kept as they are ([`FaultCode::Other`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultCode {
    /// A code from the table.
    Known(u32),
    /// A code outside the table (vendor-specific, 9800-9899, or a future one).
    Other(u32),
}

/// Codes, meanings and the SOAP `faultcode` each is sent with (`Client` or `Server`).
pub const FAULT_TABLE: &[(u32, &str, &str)] = &[
    (8000, "Method not supported", "Server"),
    (8001, "Request denied (no reason specified)", "Server"),
    (8002, "Internal error", "Server"),
    (8003, "Invalid arguments", "Client"),
    (8004, "Resources exceeded", "Server"),
    (8005, "Retry request", "Server"),
    (8006, "ACS version incompatible", "Server"),
    (9000, "Method not supported", "Server"),
    (9001, "Request denied (no reason specified)", "Server"),
    (9002, "Internal error", "Server"),
    (9003, "Invalid arguments", "Client"),
    (9004, "Resources exceeded", "Server"),
    (9005, "Invalid parameter name", "Client"),
    (9006, "Invalid parameter type", "Client"),
    (9007, "Invalid parameter value", "Client"),
    (9008, "Attempt to set a non-writable parameter", "Client"),
    (9009, "Notification request rejected", "Server"),
    (9010, "File transfer failure", "Server"),
    (9011, "Upload failure", "Server"),
    (
        9012,
        "File transfer server authentication failure",
        "Server",
    ),
    (9013, "Unsupported protocol for file transfer", "Server"),
    (
        9014,
        "File transfer failure: unable to join multicast group",
        "Server",
    ),
    (
        9015,
        "File transfer failure: unable to contact file server",
        "Server",
    ),
    (
        9016,
        "File transfer failure: unable to access file",
        "Server",
    ),
    (
        9017,
        "File transfer failure: unable to complete download",
        "Server",
    ),
    (9018, "File transfer failure: file corrupted", "Server"),
    (
        9019,
        "File transfer failure: file authentication failure",
        "Server",
    ),
    (
        9020,
        "File transfer failure: unable to complete download within specified time windows",
        "Server",
    ),
    (
        9021,
        "Cancelation of file transfer not permitted in current transfer state",
        "Client",
    ),
    (9022, "Invalid UUID format", "Client"),
    (9023, "Unknown Execution Environment", "Client"),
    (9024, "Disabled Execution Environment", "Client"),
    (
        9025,
        "Deployment Unit to Execution Environment mismatch",
        "Client",
    ),
    (9026, "Duplicate Deployment Unit", "Client"),
    (9027, "System resources exceeded", "Client"),
    (9028, "Unknown Deployment Unit", "Client"),
    (9029, "Invalid Deployment Unit state", "Client"),
    (
        9030,
        "Invalid Deployment Unit Update: downgrade not permitted",
        "Client",
    ),
    (
        9031,
        "Invalid Deployment Unit Update: version not specified",
        "Client",
    ),
    (
        9032,
        "Invalid Deployment Unit Update: version already exists",
        "Client",
    ),
];

impl FaultCode {
    /// The code for a number.
    pub fn from_u32(code: u32) -> Self {
        if FAULT_TABLE.iter().any(|(c, _, _)| *c == code) {
            FaultCode::Known(code)
        } else {
            FaultCode::Other(code)
        }
    }

    /// The number.
    pub fn code(self) -> u32 {
        match self {
            FaultCode::Known(c) | FaultCode::Other(c) => c,
        }
    }

    /// The standard meaning, `"Vendor-specific fault"` for 9800-9899, `"Unknown fault"` otherwise.
    pub fn meaning(self) -> &'static str {
        let code = self.code();
        FAULT_TABLE
            .iter()
            .find(|(c, _, _)| *c == code)
            .map(|(_, m, _)| *m)
            .unwrap_or(if (9800..=9899).contains(&code) {
                "Vendor-specific fault"
            } else {
                "Unknown fault"
            })
    }

    /// SOAP `faultcode`: `Client` when the sender of the request is to blame, `Server` otherwise.
    pub fn soap_faultcode(self) -> &'static str {
        let code = self.code();
        FAULT_TABLE
            .iter()
            .find(|(c, _, _)| *c == code)
            .map_or("Server", |(_, _, s)| *s)
    }

    /// ACS faults (8000-8999) are sent by the ACS, CPE faults (9000-9999) by the CPE.
    pub fn is_acs_fault(self) -> bool {
        (8000..9000).contains(&self.code())
    }
}

/// A per-parameter fault in a SetParameterValues fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetParameterValuesFault {
    /// The parameter.
    pub parameter_name: String,
    /// Its fault code.
    pub code: u32,
    /// Its fault string.
    pub string: String,
}

/// A CWMP fault, the `detail` of a SOAP fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The code.
    pub code: FaultCode,
    /// The human-readable string.
    pub string: String,
    /// Per-parameter faults of a SetParameterValues.
    pub set_parameter_values: Vec<SetParameterValuesFault>,
}

impl Fault {
    /// A fault with the standard meaning as its string.
    pub fn new(code: u32) -> Self {
        let code = FaultCode::from_u32(code);
        Self {
            code,
            string: code.meaning().to_owned(),
            set_parameter_values: Vec::new(),
        }
    }

    /// A fault with a string of its own.
    pub fn with_string(code: u32, string: impl Into<String>) -> Self {
        Self {
            code: FaultCode::from_u32(code),
            string: string.into(),
            set_parameter_values: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_acs_and_cpe_code_has_a_meaning_and_a_side() {
        for code in (8000..=8006).chain(9000..=9019) {
            let f = FaultCode::from_u32(code);
            assert!(matches!(f, FaultCode::Known(_)), "{code}");
            assert_ne!(f.meaning(), "Unknown fault", "{code}");
            assert!(["Client", "Server"].contains(&f.soap_faultcode()));
        }
        assert_eq!(FaultCode::from_u32(9005).soap_faultcode(), "Client");
        assert_eq!(FaultCode::from_u32(8005).soap_faultcode(), "Server");
        assert_eq!(FaultCode::from_u32(9850).meaning(), "Vendor-specific fault");
        assert_eq!(FaultCode::from_u32(1234), FaultCode::Other(1234));
    }
}
