//! The CWMP (TR-069) codec: SOAP envelopes over bytes, both directions, no I/O.
//!
//! [`parse`] turns a request or response body into an [`Envelope`]; [`build`] turns an [`Envelope`] into bytes.
//! Both cover every RPC of [`Body`] (the CPE's and the ACS's, requests and responses) and SOAP faults with their
//! CWMP [`Fault`] detail, so the same module serves the ACS and the CPE simulator used in tests.
//!
//! # What the parser tolerates, and what it refuses
//!
//! - Elements are matched by **local name** whatever their prefix (`soap:`, `SOAP-ENV:`, `soapenv:`, none).
//! - Any `urn:dslforum-org:cwmp-1-N` namespace is accepted and remembered in [`Envelope::ns`], so that the
//!   answer is built in the CPE's own namespace. An RPC element in another namespace is refused.
//! - The envelope must be in the SOAP 1.1 (or 1.2) envelope namespace.
//! - `<!DOCTYPE>` and any entity other than the five predefined ones are refused: nothing is expanded.
//! - Sizes are bounded by [`Limits`]. Errors are values ([`CwmpError`]); no input panics the parser (see the
//!   fuzz target `agent/fuzz/`).

pub mod fault;
mod rpc;
pub mod xml;

use std::sync::Arc;

pub use fault::{Fault, FaultCode, SetParameterValuesFault};
pub use rpc::*;
pub use xml::Limits;

use xml::{Element, XmlOut};

/// SOAP 1.1 envelope namespace.
pub const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// SOAP 1.2 envelope namespace (seen on a few CPEs).
pub const SOAP12_ENV: &str = "http://www.w3.org/2003/05/soap-envelope";
/// Prefix of every CWMP namespace.
pub const CWMP_NS_PREFIX: &str = "urn:dslforum-org:cwmp-1-";

/// Why a body is not a CWMP message we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CwmpError {
    /// Not well-formed XML.
    #[error("malformed XML: {0}")]
    Xml(String),
    /// The body is not UTF-8.
    #[error("body is not UTF-8")]
    Encoding,
    /// The document has a DTD (refused: entity expansion is never done).
    #[error("DOCTYPE is not allowed")]
    Doctype,
    /// A reference to an entity that is not predefined.
    #[error("undefined entity &{0};")]
    Entity(String),
    /// A size limit was exceeded.
    #[error("too large (limit {limit} bytes)")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Too deep or too many elements.
    #[error("too many or too deeply nested elements")]
    TooComplex,
    /// Not a SOAP envelope, or an RPC in a foreign namespace.
    #[error("wrong namespace: {0}")]
    Namespace(String),
    /// A required element is missing.
    #[error("missing element {0}")]
    Missing(String),
    /// An element has a value of the wrong form.
    #[error("invalid value: {0}")]
    Invalid(String),
    /// A method this codec does not know.
    #[error("unknown method {0}")]
    UnknownMethod(String),
}

impl CwmpError {
    /// The CWMP fault code an ACS answers this error with.
    pub fn fault_code(&self) -> u32 {
        match self {
            CwmpError::UnknownMethod(_) => 8000,
            CwmpError::TooLarge { .. } | CwmpError::TooComplex => 8004,
            _ => 8003,
        }
    }
}

/// The CWMP namespace version of a message, `urn:dslforum-org:cwmp-1-N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CwmpVersion(pub u8);

impl CwmpVersion {
    /// `cwmp-1-0`.
    pub const V1_0: CwmpVersion = CwmpVersion(0);
    /// `cwmp-1-2` (also used by 1.3 and 1.4 CPEs).
    pub const V1_2: CwmpVersion = CwmpVersion(2);

    /// The namespace URI.
    pub fn uri(self) -> String {
        self.uri_cow().into_owned()
    }

    /// The namespace URI, not allocated for the versions in use (1-0 to 1-4).
    fn uri_cow(self) -> std::borrow::Cow<'static, str> {
        const KNOWN: [&str; 5] = [
            "urn:dslforum-org:cwmp-1-0",
            "urn:dslforum-org:cwmp-1-1",
            "urn:dslforum-org:cwmp-1-2",
            "urn:dslforum-org:cwmp-1-3",
            "urn:dslforum-org:cwmp-1-4",
        ];
        match KNOWN.get(usize::from(self.0)) {
            Some(uri) => std::borrow::Cow::Borrowed(uri),
            None => std::borrow::Cow::Owned(format!("{CWMP_NS_PREFIX}{}", self.0)),
        }
    }

    /// The version of a namespace URI, if it is a CWMP one.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let n = uri.strip_prefix(CWMP_NS_PREFIX)?;
        n.parse().ok().map(CwmpVersion)
    }
}

impl Default for CwmpVersion {
    fn default() -> Self {
        CwmpVersion::V1_0
    }
}

/// A parsed or to-be-built SOAP envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The CWMP namespace the message is in (the answer uses the same).
    pub ns: CwmpVersion,
    /// `cwmp:ID` header: the answer echoes it.
    pub id: Option<String>,
    /// `cwmp:HoldRequests` header (ACS to CPE only).
    pub hold_requests: Option<bool>,
    /// The RPC.
    pub body: Body,
}

impl Envelope {
    /// An envelope with an id and no HoldRequests.
    pub fn new(ns: CwmpVersion, id: Option<String>, body: Body) -> Self {
        Self {
            ns,
            id,
            hold_requests: None,
            body,
        }
    }
}

/// Parses a body (UTF-8 XML) into an envelope.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Envelope, CwmpError> {
    if bytes.len() > limits.max_bytes {
        return Err(CwmpError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    // A UTF-8 byte-order mark is tolerated.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|_| CwmpError::Encoding)?;
    let root = xml::parse_document(text, limits)?;
    from_root(root)
}

fn is_soap_env(ns: &Option<Arc<str>>) -> bool {
    matches!(ns.as_deref(), Some(SOAP_ENV) | Some(SOAP12_ENV))
}

fn from_root(root: Element<'_>) -> Result<Envelope, CwmpError> {
    if root.name != "Envelope" || !is_soap_env(&root.ns) {
        return Err(CwmpError::Namespace(format!(
            "root element {} in {:?} is not a SOAP envelope",
            root.name,
            root.ns.as_deref().unwrap_or("no namespace")
        )));
    }
    let mut id = None;
    let mut hold_requests = None;
    let mut header_ns = None;
    if let Some(header) = root.child("Header") {
        for h in &header.children {
            match h.name.as_ref() {
                "ID" => {
                    id = Some(h.text.trim().to_owned());
                    header_ns = h.ns.as_deref().and_then(CwmpVersion::from_uri);
                }
                "HoldRequests" => hold_requests = xml::parse_bool(&h.text),
                _ => {}
            }
        }
    }
    let body = root
        .child("Body")
        .ok_or_else(|| CwmpError::Missing("Envelope/Body".into()))?;
    let rpc = body
        .children
        .first()
        .ok_or_else(|| CwmpError::Missing("Body/<method>".into()))?;
    let ns = if rpc.name == "Fault" {
        // A SOAP fault's element is in the SOAP namespace; its detail holds the cwmp:Fault.
        rpc.child("detail")
            .and_then(|d| d.child("Fault"))
            .and_then(|f| f.ns.as_deref().and_then(CwmpVersion::from_uri))
            .or(header_ns)
            .unwrap_or_default()
    } else {
        match rpc.ns.as_deref() {
            Some(uri) => CwmpVersion::from_uri(uri).ok_or_else(|| {
                CwmpError::Namespace(format!("{} in {uri:?} is not a CWMP method", rpc.name))
            })?,
            None => header_ns.unwrap_or_default(),
        }
    };
    let body = Body::from_element(rpc)?;
    Ok(Envelope {
        ns,
        id,
        hold_requests,
        body,
    })
}

/// Builds the bytes of an envelope, in its namespace, with the usual `soap-env`/`cwmp` prefixes.
pub fn build(env: &Envelope) -> Vec<u8> {
    // Most messages the ACS builds (InformResponse, faults, small RPCs) fit in this at once.
    let mut out = XmlOut::with_capacity(1024);
    let ns = env.ns.uri_cow();
    out.buf
        .push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.open(
        "soap-env:Envelope",
        &[
            ("xmlns:soap-env", SOAP_ENV),
            (
                "xmlns:soap-enc",
                "http://schemas.xmlsoap.org/soap/encoding/",
            ),
            ("xmlns:xsd", "http://www.w3.org/2001/XMLSchema"),
            ("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance"),
            ("xmlns:cwmp", &ns),
        ],
    );
    if env.id.is_some() || env.hold_requests.is_some() {
        out.open("soap-env:Header", &[]);
        if let Some(id) = &env.id {
            out.leaf_with("cwmp:ID", &[("soap-env:mustUnderstand", "1")], id);
        }
        if let Some(h) = env.hold_requests {
            out.leaf_with(
                "cwmp:HoldRequests",
                &[("soap-env:mustUnderstand", "1")],
                if h { "1" } else { "0" },
            );
        }
        out.close("soap-env:Header");
    }
    out.open("soap-env:Body", &[]);
    env.body.write(&mut out);
    out.close("soap-env:Body");
    out.close("soap-env:Envelope");
    out.buf.into_bytes()
}

#[cfg(test)]
mod tests;
