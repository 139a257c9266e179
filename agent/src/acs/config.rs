//! The `[acs]` section of the agent's configuration. Every field has a default; the ACS is off until `listen` is
//! set (in the file, as `OCTOISP_AGENT__ACS__LISTEN`, or with `octoisp-agent run --acs-listen ADDR`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The ACS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcsSection {
    /// CWMP listen address, such as `0.0.0.0:7547` (the CWMP port); unset disables the ACS.
    pub listen: Option<SocketAddr>,
    /// Digest realm.
    pub realm: String,
    /// Per-POP CPE user name (with `password`): CPEs without credentials of their own authenticate with it.
    /// When neither per-POP nor per-device credentials exist, CPEs are not authenticated.
    pub username: Option<String>,
    /// Per-POP CPE password.
    pub password: Option<String>,
    /// Refuse CPEs that are not in the device store yet instead of registering them on their first Inform.
    pub require_preregistration: bool,
    /// Most CWMP sessions at once; an Inform beyond it is answered 503 with Retry-After.
    pub max_sessions: usize,
    /// Most TCP connections at once; beyond it a connection is answered 503 and closed.
    pub max_connections: usize,
    /// Largest request body, KiB, compressed or not (and the limit of its decompressed size).
    pub max_body_kib: usize,
    /// A session with no request for this long is ended, seconds.
    pub session_timeout_s: u64,
    /// Retry-After sent with 503, seconds.
    pub retry_after_s: u64,
    /// User name of Connection Requests to CPEs (per-device credentials win).
    pub connection_request_username: Option<String>,
    /// Password of Connection Requests.
    pub connection_request_password: Option<String>,
    /// Attempts of a task before it is reported failed.
    pub task_max_attempts: u32,
    /// First retry delay of a faulted task, seconds (doubles per fault).
    pub task_backoff_s: u64,
    /// Directory of provisioning templates (`*.toml`); unset: none.
    pub templates_dir: Option<PathBuf>,
    /// Provisioning templates written in the configuration itself (`[[acs.templates]]`, the shape of a template
    /// file): how the control plane pushes them. Applied after those of `templates_dir`; names unique across both.
    pub templates: Vec<super::templates::Template>,
    /// Normalization rules replacing the built-in ones; unset: the built-in `normalize.toml`.
    pub normalize_file: Option<PathBuf>,
    /// Directory of firmware images served at `/firmware/NAME` (each with `NAME.sha256`); images fetched from
    /// the control plane are cached here under their SHA-256. Unset: none.
    pub firmware_dir: Option<PathBuf>,
    /// Base URL CPEs reach the firmware server at, such as `http://192.0.2.1:7547` (the agent appends
    /// `/firmware/<sha256>`). Unset: `listen`'s address, or when that is `0.0.0.0`/`::`, the agent's address on
    /// the route to the CPE.
    pub firmware_url: Option<String>,
    /// PEM certificate chain of the CWMP listener; with `tls_key`, the listener speaks HTTPS only (and CPEs may
    /// then authenticate with Basic as well as Digest). Unset: plain HTTP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for AcsSection {
    fn default() -> Self {
        Self {
            listen: None,
            realm: "octoisp-acs".into(),
            username: None,
            password: None,
            require_preregistration: false,
            max_sessions: 20_000,
            max_connections: 30_000,
            max_body_kib: 1024,
            session_timeout_s: 30,
            retry_after_s: 10,
            connection_request_username: None,
            connection_request_password: None,
            task_max_attempts: 3,
            task_backoff_s: 60,
            templates_dir: None,
            templates: Vec::new(),
            normalize_file: None,
            firmware_dir: None,
            firmware_url: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl AcsSection {
    /// Checks the values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.username.is_some() != self.password.is_some() {
            return Err("acs.username and acs.password must be set together".into());
        }
        if self.max_sessions == 0 || self.max_connections == 0 {
            return Err("acs.max_sessions and acs.max_connections must be > 0".into());
        }
        if self.max_body_kib == 0 || self.max_body_kib > 64 * 1024 {
            return Err("acs.max_body_kib must be 1..=65536".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("acs.tls_cert and acs.tls_key must be set together".into());
        }
        if let Some(u) = &self.firmware_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err("acs.firmware_url must start with http:// or https://".into());
        }
        if self.session_timeout_s == 0 || self.task_max_attempts == 0 {
            return Err("acs.session_timeout_s and acs.task_max_attempts must be > 0".into());
        }
        super::templates::load(None, &self.templates).map_err(|e| e.to_string())?;
        Ok(())
    }
}
