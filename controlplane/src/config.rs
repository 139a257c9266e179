//! The control plane's configuration: a TOML file (`/etc/octoisp/controlplane.toml` when installed),
//! overridden by `OCTOISP_CP__SECTION__KEY` environment variables, validated once at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Environment variable prefix of the overrides.
pub const ENV_PREFIX: &str = "OCTOISP_CP";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory holding the CA (`ca.pem`, `ca.key`); every instance must see the same files.
    pub data_dir: PathBuf,
    /// PostgreSQL.
    pub database: DatabaseSection,
    /// QUIC ingest of agents.
    pub ingest: IngestSection,
    /// HTTP: API, `/metrics`, `/healthz`, `/readyz`.
    pub http: HttpSection,
    /// The REST API's gateway: body limit, timeout, CORS, rate limits (Redis), device online threshold.
    pub api: crate::api::ApiConfig,
    /// Authentication of API users (required by the `api` role).
    pub auth: AuthSection,
    /// Logging.
    pub log: LogSection,
    /// Metric rollups, retention per resolution, graph sizes.
    pub metrics: crate::rollup::MetricsConfig,
    /// Notifications of alerts (workers role) and the SMTP server (also for password-reset mail).
    pub notify: crate::notify::NotifyConfig,
    /// The alert engine (ingest role).
    pub alerts: AlertsSection,
    /// The command queue in Redis (docs/COMMANDS.md).
    pub queue: QueueSection,
    /// Redis Sentinel: when set, every Redis connection (queue, API) goes to the master it names, and follows
    /// failovers (docs/DEPLOYMENT.md).
    pub redis: crate::redis_conn::SentinelSection,
    /// Command dispatch (workers role) and delivery to agents (ingest role).
    pub commands: crate::commands::CommandsConfig,
    /// Keys that encrypt stored secrets (notification channel secrets); see docs/NOTIFICATIONS.md.
    pub secrets: crate::secretbox::SecretsConfig,
    /// CPE firmware images (storage, upload limits) and campaigns; see docs/ACS.md.
    pub firmware: crate::firmware::FirmwareConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/octoisp"),
            database: DatabaseSection::default(),
            ingest: IngestSection::default(),
            http: HttpSection::default(),
            api: crate::api::ApiConfig::default(),
            auth: AuthSection::default(),
            log: LogSection::default(),
            metrics: crate::rollup::MetricsConfig::default(),
            notify: crate::notify::NotifyConfig::default(),
            alerts: AlertsSection::default(),
            queue: QueueSection::default(),
            redis: crate::redis_conn::SentinelSection::default(),
            commands: crate::commands::CommandsConfig::default(),
            secrets: crate::secretbox::SecretsConfig::default(),
            firmware: crate::firmware::FirmwareConfig::default(),
        }
    }
}

/// Authentication of API users. Secrets belong in the environment (`OCTOISP_CP__AUTH__JWT_SECRET`) or a file
/// readable only by the service; they are never printed.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// HS256 secret of the access tokens, at least 32 bytes; every instance needs the same one.
    pub jwt_secret: Option<String>,
    /// Lifetime of access tokens, seconds.
    pub access_ttl_secs: u64,
    /// Lifetime of refresh tokens, seconds.
    pub refresh_ttl_secs: u64,
    /// `iss` of issued tokens.
    pub issuer: String,
    /// Accept Supabase Auth tokens signed with this HS256 secret.
    pub supabase_hs256_secret: Option<String>,
    /// Accept Supabase Auth tokens signed by the keys of this JWKS document (JSON text).
    pub supabase_jwks_json: Option<String>,
    /// Required `aud` of Supabase tokens.
    pub supabase_audience: String,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            access_ttl_secs: 15 * 60,
            refresh_ttl_secs: 30 * 24 * 3600,
            issuer: "octoisp".into(),
            supabase_hs256_secret: None,
            supabase_jwks_json: None,
            supabase_audience: "authenticated".into(),
        }
    }
}

impl std::fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hide = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("AuthSection")
            .field("jwt_secret", &hide(&self.jwt_secret))
            .field("access_ttl_secs", &self.access_ttl_secs)
            .field("refresh_ttl_secs", &self.refresh_ttl_secs)
            .field("issuer", &self.issuer)
            .field("supabase_hs256_secret", &hide(&self.supabase_hs256_secret))
            .field(
                "supabase_jwks_json",
                &self.supabase_jwks_json.as_ref().map(|_| "(set)"),
            )
            .field("supabase_audience", &self.supabase_audience)
            .finish()
    }
}

impl AuthSection {
    /// The authentication service's configuration; `None` when no `jwt_secret` is set.
    pub fn auth_config(&self) -> Option<crate::auth::AuthConfig> {
        let mut c = crate::auth::AuthConfig::new(self.jwt_secret.clone()?);
        c.access_ttl = std::time::Duration::from_secs(self.access_ttl_secs);
        c.refresh_ttl = std::time::Duration::from_secs(self.refresh_ttl_secs);
        c.issuer = self.issuer.clone();
        if self.supabase_hs256_secret.is_some() || self.supabase_jwks_json.is_some() {
            c.supabase = Some(crate::auth::SupabaseConfig {
                hs256_secret: self.supabase_hs256_secret.clone(),
                jwks_json: self.supabase_jwks_json.clone(),
                audience: self.supabase_audience.clone(),
            });
        }
        Some(c)
    }
}

/// PostgreSQL.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    /// URL of the application role (`octoisp_app`: no superuser, no BYPASSRLS).
    pub url: String,
    /// URL of the owner role, used only by `migrate`; defaults to `url`.
    pub admin_url: Option<String>,
    /// Pool size of this instance.
    pub max_connections: u32,
}

impl std::fmt::Debug for DatabaseSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSection")
            .field("url", &redact(&self.url))
            .field("admin_url", &self.admin_url.as_deref().map(redact))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// Hides the password of a database URL, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            url: "postgres://octoisp_app@127.0.0.1:5432/octoisp".into(),
            admin_url: None,
            max_connections: 16,
        }
    }
}

/// QUIC ingest of agents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSection {
    /// UDP listen address.
    pub listen: SocketAddr,
    /// Names and addresses agents dial, added to the server certificate (it always carries the internal name).
    pub server_names: Vec<String>,
    /// Batches in flight per agent connection.
    pub max_in_flight: u16,
    /// Batches written to PostgreSQL at once by this instance (the backpressure valve).
    pub db_writers: usize,
    /// Agent connections at once.
    pub max_connections: usize,
    /// Largest batch frame accepted, bytes.
    pub max_batch_bytes: u32,
    /// Seconds between agent heartbeats.
    pub heartbeat_secs: u16,
    /// Lifetime of enrollment tokens when not given on the command line, seconds.
    pub token_ttl_secs: u64,
}

impl Default for IngestSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 4433)),
            server_names: Vec::new(),
            max_in_flight: 8,
            db_writers: 4,
            max_connections: 10_000,
            max_batch_bytes: 16 << 20,
            heartbeat_secs: 15,
            token_ttl_secs: 24 * 3600,
        }
    }
}

/// HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// TCP listen address.
    pub listen: SocketAddr,
    /// The built web console served at `/` by the `api` role (in development: the repository's `web/dist`).
    pub web_dir: PathBuf,
}

/// Where the packages install the web console.
pub const DEFAULT_WEB_DIR: &str = "/usr/share/octoisp/web";

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            web_dir: PathBuf::from(DEFAULT_WEB_DIR),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Text or JSON.
    pub format: LogFormat,
    /// Filter in `tracing` syntax; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

pub use octoisp_shared::settings::ConfigError;

impl Config {
    /// Loads `path` (or only defaults and environment when `None`) and validates it.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (name, text) = octoisp_shared::settings::read(path)?;
        Self::from_toml(&name, &text, std::env::vars())
    }

    /// Parses and validates configuration text with the given environment.
    pub fn from_toml(
        name: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let cfg: Config = octoisp_shared::settings::load(name, text, env, ENV_PREFIX)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if !self.database.url.starts_with("postgres://")
            && !self.database.url.starts_with("postgresql://")
        {
            return bad("database.url must be a postgres:// URL");
        }
        if self.database.max_connections < 2 {
            return bad("database.max_connections must be at least 2");
        }
        let i = &self.ingest;
        if i.max_in_flight == 0
            || i.db_writers == 0
            || i.max_connections == 0
            || i.heartbeat_secs == 0
        {
            return bad(
                "ingest.max_in_flight, db_writers, max_connections and heartbeat_secs must be > 0",
            );
        }
        if i.db_writers as u32 >= self.database.max_connections {
            return bad("ingest.db_writers must be smaller than database.max_connections");
        }
        if i.max_batch_bytes < 64 * 1024 {
            return bad("ingest.max_batch_bytes must be at least 65536");
        }
        self.api.validate().map_err(ConfigError::Invalid)?;
        self.redis.validate().map_err(ConfigError::Invalid)?;
        self.metrics.validate().map_err(ConfigError::Invalid)?;
        if !(1_000..=100_000_000).contains(&self.alerts.queue_samples) {
            return bad("alerts.queue_samples must be between 1000 and 100000000 (samples)");
        }
        if !(100..=60_000).contains(&self.alerts.tick_ms) {
            return bad("alerts.tick_ms must be between 100 and 60000");
        }
        if !(1..=3600).contains(&self.alerts.refresh_secs) {
            return bad("alerts.refresh_secs must be between 1 and 3600");
        }
        if self.auth.jwt_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return bad(
                "auth.jwt_secret must be at least 32 bytes (for example: head -c 32 /dev/urandom | base64)",
            );
        }
        if self.auth.access_ttl_secs == 0 || self.auth.refresh_ttl_secs <= self.auth.access_ttl_secs
        {
            return bad(
                "auth.access_ttl_secs must be > 0 and auth.refresh_ttl_secs longer than it",
            );
        }
        self.notify.validate().map_err(ConfigError::Invalid)?;
        self.queue.validate().map_err(ConfigError::Invalid)?;
        self.commands.validate().map_err(ConfigError::Invalid)?;
        self.secrets.validate().map_err(ConfigError::Invalid)?;
        self.firmware.validate().map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// URL used for migrations.
    pub fn admin_url(&self) -> &str {
        self.database
            .admin_url
            .as_deref()
            .unwrap_or(&self.database.url)
    }
}

/// The `[queue]` section: the Redis command queue ([`crate::queue::QueueConfig`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSection {
    /// Redis holding the queue (and the agent holder registry); every instance must use the same one.
    pub redis_url: String,
    /// Prefix of every key.
    pub prefix: String,
    /// Relative share of dispatch slots per tier, `[small, medium, large]`, when every tier has work. The
    /// default 4, 2, 1 serves the small tier first: its tenants send few commands and wait on each (one
    /// diagnostic), where a large tenant's bulk work is bounded by its rate anyway; a tier without work gives its
    /// share to the others, so a large tenant alone still gets every slot.
    pub tier_weights: [u32; 3],
    /// A lease not extended for this many seconds is reclaimed and delivered again.
    pub visibility_timeout_secs: u64,
    /// Attempts before a command goes to the dead-letter queue.
    pub max_attempts: u32,
    /// First retry delay, milliseconds (doubles per attempt, with full jitter).
    pub backoff_base_ms: u64,
    /// Largest retry delay, milliseconds.
    pub backoff_max_ms: u64,
    /// Commands one tenant may have leased at once, per tier `[small, medium, large]`.
    pub tenant_concurrency: [u32; 3],
    /// Commands per second one tenant may start, per tier.
    pub tenant_rate: [f64; 3],
    /// How long a finished command id is remembered to refuse a second enqueue, seconds.
    pub dedup_window_secs: u64,
}

impl Default for QueueSection {
    fn default() -> Self {
        Self {
            redis_url: "redis://127.0.0.1:6379".into(),
            prefix: "octoisp:q".into(),
            tier_weights: [4, 2, 1],
            visibility_timeout_secs: 30,
            max_attempts: 5,
            backoff_base_ms: 1000,
            backoff_max_ms: 300_000,
            tenant_concurrency: [50, 500, 5000],
            tenant_rate: [50.0, 500.0, 5000.0],
            dedup_window_secs: 86_400,
        }
    }
}

impl QueueSection {
    /// Checks the values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if redis::Client::open(self.redis_url.as_str()).is_err() {
            return Err(format!(
                "queue.redis_url `{}` is not a Redis URL",
                self.redis_url
            ));
        }
        if self.prefix.is_empty() {
            return Err("queue.prefix must not be empty".into());
        }
        if self.tier_weights.contains(&0) {
            return Err("queue.tier_weights must all be > 0".into());
        }
        if !(1..=3600).contains(&self.visibility_timeout_secs) {
            return Err("queue.visibility_timeout_secs must be between 1 and 3600".into());
        }
        if self.max_attempts == 0 {
            return Err("queue.max_attempts must be > 0".into());
        }
        if self.backoff_base_ms == 0 || self.backoff_max_ms < self.backoff_base_ms {
            return Err(
                "queue.backoff_base_ms must be > 0 and at most queue.backoff_max_ms".into(),
            );
        }
        if self.tenant_concurrency.contains(&0) {
            return Err("queue.tenant_concurrency must all be > 0".into());
        }
        if self.tenant_rate.iter().any(|r| !r.is_finite() || *r <= 0.0) {
            return Err("queue.tenant_rate must all be positive numbers".into());
        }
        if self.dedup_window_secs == 0 {
            return Err("queue.dedup_window_secs must be > 0".into());
        }
        Ok(())
    }

    /// The queue's configuration.
    pub fn queue_config(&self) -> crate::queue::QueueConfig {
        use std::time::Duration;
        crate::queue::QueueConfig {
            prefix: self.prefix.clone(),
            tier_weights: self.tier_weights,
            visibility_timeout: Duration::from_secs(self.visibility_timeout_secs),
            max_attempts: self.max_attempts,
            backoff_base: Duration::from_millis(self.backoff_base_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            tenant_concurrency: self.tenant_concurrency,
            tenant_rate: self.tenant_rate,
            dedup_window: Duration::from_secs(self.dedup_window_secs),
        }
    }
}

/// The `[alerts]` section: the alert engine that evaluates what an `ingest` instance stores (docs/ALERTS.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSection {
    /// Evaluate alert rules on this instance's ingest. Off: samples are stored and no rule is evaluated here.
    pub enabled: bool,
    /// Samples queued for the engine (stored batches count their samples); when the queue is full, ingest waits
    /// (acks slow down, nothing is skipped). Bounds the alert latency whatever the batch size.
    pub queue_samples: u32,
    /// Period of the absence/offline timer, milliseconds.
    pub tick_ms: u64,
    /// A provider's rules and series metadata are reloaded at least this often, seconds, even without a change
    /// notification.
    pub refresh_secs: u64,
}

impl Default for AlertsSection {
    fn default() -> Self {
        let engine = crate::alerts::EngineConfig::default();
        Self {
            enabled: true,
            queue_samples: engine.queue_samples,
            tick_ms: engine.tick.as_millis() as u64,
            refresh_secs: engine.refresh.as_secs(),
        }
    }
}

impl AlertsSection {
    /// The engine's settings.
    pub fn engine_config(&self) -> crate::alerts::EngineConfig {
        crate::alerts::EngineConfig {
            queue_samples: self.queue_samples,
            tick: std::time::Duration::from_millis(self.tick_ms),
            refresh: std::time::Duration::from_secs(self.refresh_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_errors_name_keys() {
        Config::from_toml("cp.toml", "", Vec::new()).unwrap();
        let err = Config::from_toml("cp.toml", "[ingest]\nlisten = \"nope\"\n", Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ingest.listen") && err.contains("cp.toml"),
            "{err}"
        );
        let err = Config::from_toml("cp.toml", "[databse]\n", Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("databse"), "{err}");
    }

    #[test]
    fn the_alert_engine_is_configured_from_its_section() {
        let cfg = Config::from_toml(
            "cp.toml",
            "[alerts]\nqueue_samples = 8000\ntick_ms = 500\nrefresh_secs = 30\n",
            Vec::new(),
        )
        .unwrap();
        let engine = cfg.alerts.engine_config();
        assert_eq!(engine.queue_samples, 8000);
        assert_eq!(engine.tick, std::time::Duration::from_millis(500));
        assert_eq!(engine.refresh, std::time::Duration::from_secs(30));
        for (toml, key) in [
            ("[alerts]\nqueue_samples = 10\n", "alerts.queue_samples"),
            ("[alerts]\ntick_ms = 5\n", "alerts.tick_ms"),
            ("[alerts]\nrefresh_secs = 0\n", "alerts.refresh_secs"),
            ("[alerts]\ntick = 5\n", "tick"),
        ] {
            let err = Config::from_toml("cp.toml", toml, Vec::new())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{toml:?}: {err}");
        }
    }

    #[test]
    fn queue_and_commands_sections_are_validated_with_the_key_named() {
        let cfg = Config::from_toml(
            "cp.toml",
            "[queue]\nvisibility_timeout_secs = 10\ntier_weights = [8, 2, 1]\n\
             [commands]\ndispatch_concurrency = 16\ndefault_deadline_secs = 60\n",
            Vec::new(),
        )
        .unwrap();
        let q = cfg.queue.queue_config();
        assert_eq!(q.visibility_timeout, std::time::Duration::from_secs(10));
        assert_eq!(q.tier_weights, [8, 2, 1]);
        assert_eq!(cfg.commands.dispatch_concurrency, 16);
        for (toml, key) in [
            (
                "[queue]\nvisibility_timeout_secs = 0\n",
                "queue.visibility_timeout_secs",
            ),
            ("[queue]\ntier_weights = [1, 0, 1]\n", "queue.tier_weights"),
            ("[queue]\nredis_url = \"nope\"\n", "queue.redis_url"),
            (
                "[queue]\ntenant_rate = [1.0, -1.0, 1.0]\n",
                "queue.tenant_rate",
            ),
            (
                "[commands]\ndispatch_concurrency = 0\n",
                "commands.dispatch_concurrency",
            ),
            (
                "[commands]\ndefault_deadline_secs = 0\n",
                "commands.default_deadline_secs",
            ),
            ("[commands]\nconcurrency = 1\n", "concurrency"),
        ] {
            let err = Config::from_toml("cp.toml", toml, Vec::new())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{toml:?}: {err}");
        }
    }

    #[test]
    fn the_packaged_example_is_valid() {
        let text = include_str!("../../packaging/deb/controlplane/controlplane.toml");
        let cfg = Config::from_toml("controlplane.toml", text, Vec::new()).unwrap();
        assert_eq!(cfg.queue.prefix, "octoisp:q");
        assert_eq!(cfg.commands.dispatch_concurrency, 32);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        let cfg = Config::from_toml(
            "c",
            "[database]\nurl = \"postgres://a:pw@h/d\"\n",
            Vec::new(),
        )
        .unwrap();
        assert!(!format!("{cfg:?}").contains("pw@"));
    }

    #[test]
    fn the_secrets_key_comes_from_the_environment_and_is_never_printed() {
        let key = "ERERERERERERERERERERERERERERERERERERERERERE=";
        let env = vec![("OCTOISP_CP__SECRETS__KEY".to_owned(), key.to_owned())];
        let cfg = Config::from_toml("c", "", env).unwrap();
        assert_eq!(cfg.secrets.key.as_deref(), Some(key));
        assert!(!format!("{cfg:?}").contains(key));
        let b = crate::secretbox::SecretBox::from_config(&cfg.secrets).unwrap();
        assert_eq!(
            b.current_key_id(),
            Some(crate::secretbox::key_id(&[0x11; 32]).as_str())
        );
        let err = Config::from_toml(
            "c",
            "[secrets]\nkey_file = \"/etc/k\"\n",
            vec![("OCTOISP_CP__SECRETS__KEY".to_owned(), key.to_owned())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("secrets.key"), "{err}");
    }
}
