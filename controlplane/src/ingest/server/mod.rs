//! The QUIC endpoint agents connect to: enrollment, the control stream, and one stream per batch.
//!
//! Per connection (see the stream layout in `octoisp_shared::protocol`):
//!
//! 1. **TLS** (`crate::tls`): TLS 1.3, ALPN `octoisp/1`, client certificate optional but, when present, chained to
//!    the CA and not in the revoked set.
//! 2. **Control stream**, the first bidirectional stream the agent opens:
//!    - *with* a client certificate the agent sends `Hello`. The agent id comes from the certificate's SAN URI
//!      `urn:octoisp:agent:<uuid>`; the `agents` row it names is authoritative: unknown, revoked, or a fingerprint
//!      that is not the row's current one → `Reject` and close. Provider and POP come from that row, never from
//!      anything the agent sends. Then `Welcome`, and heartbeats flow up the stream until the connection ends.
//!    - *without* one the agent sends `Enroll`: the token is checked and spent in PostgreSQL, the CA signs the
//!      CSR's public key, the answer is `Enrolled` (or `Reject` with the reason) and the connection closes.
//! 3. **Batch streams**: each carries one `Batch` frame; the answer (`Ack` only after the transaction storing it
//!    committed, or `Nack`) goes back on the same stream. QUIC's stream limit (`max_in_flight` + the control
//!    stream) bounds the batches of one agent; a global semaphore of `db_writers` bounds the transactions of the
//!    whole instance, so a slow PostgreSQL slows the acks and the agents, and nothing buffers without bound.
//! 4. **Firmware streams** (`server/firmware.rs`): one `FirmwareFetch`, answered by a `FirmwareOffer` and the
//!    image's bytes, only for images of the agent's own provider.
//!
//! Bad input closes the smallest thing it can: an undecodable, oversize or bomb frame on a batch stream gets
//! `Nack { code: Malformed }` (with `seq` 0 when the frame could not be decoded far enough to know it) on that
//! stream alone; a bad control stream gets `Reject` and closes that connection. The endpoint keeps serving the
//! other agents.

mod enroll;
mod firmware;
mod session;
mod wire;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use octoisp_shared::Limits;
use quinn::VarInt;
use rustls_pki_types::CertificateDer;
use sqlx::PgPool;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::ca::Ca;
use crate::ingest::store::Store;
use crate::registry;
use crate::tls;

/// Application close code: normal end (the agent left, or enrollment finished).
pub const CLOSE_OK: u32 = 0;
/// Application close code: the session was refused (a `Reject` was sent on the control stream).
pub const CLOSE_REJECTED: u32 = 1;
/// Application close code: the control stream broke the protocol.
pub const CLOSE_PROTOCOL: u32 = 2;
/// Application close code: the control plane is shutting down; reconnect later.
pub const CLOSE_SHUTDOWN: u32 = 3;
/// Application close code: the agent was revoked while connected.
pub const CLOSE_REVOKED: u32 = 4;
/// Application close code: too many connections; reconnect later.
pub const CLOSE_BUSY: u32 = 5;
/// Largest control-stream frame accepted, in bytes (an `Enroll` with its CSR is well under 8 KiB).
const CONTROL_FRAME_BYTES: usize = 64 * 1024;
/// Stream error code (STOP_SENDING / RESET_STREAM) for a frame refused on a batch stream.
pub const STREAM_MALFORMED: u32 = 1;
/// Stream error code for a batch stream that took too long.
pub const STREAM_TIMEOUT: u32 = 2;
/// Stream error code for a batch of an agent revoked while connected (nothing was stored).
pub const STREAM_REVOKED: u32 = 3;

/// Settings of the ingest endpoint.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// UDP address to listen on (port 0 picks a free port; see [`IngestServer::bind`]).
    pub listen: SocketAddr,
    /// Extra DNS names or IP addresses for the server certificate, besides [`octoisp_shared::SERVER_NAME`].
    pub server_names: Vec<String>,
    /// Batches one agent may have in flight (concurrent batch streams per connection).
    pub max_in_flight: u16,
    /// Batches this instance writes to PostgreSQL at once (global semaphore).
    pub db_writers: usize,
    /// Agent connections at once; more are refused at the QUIC level.
    pub max_connections: usize,
    /// Largest frame payload accepted, in bytes; announced to agents as `Welcome::max_batch_bytes`.
    pub max_batch_bytes: u32,
    /// Largest decompressed payload accepted, in bytes (the zstd bomb limit).
    pub max_decompressed_bytes: usize,
    /// Frame bytes buffered at once across every connection (reading batches waits beyond it).
    pub max_buffered_bytes: usize,
    /// Seconds between heartbeats, announced in `Welcome`.
    pub heartbeat_secs: u16,
    /// A connection with no traffic (QUIC keep-alives included) for this long is closed.
    pub idle_timeout: Duration,
    /// Time allowed for the TLS handshake, the control stream to open and its first message to arrive.
    pub handshake_timeout: Duration,
    /// Time allowed to receive one batch frame once its stream is open.
    pub frame_timeout: Duration,
    /// How often the revoked-certificate set is refreshed from PostgreSQL.
    pub revocation_refresh: Duration,
    /// On shutdown, how long in-flight batches may take to commit and be acknowledged.
    pub shutdown_grace: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 4433)),
            server_names: Vec::new(),
            max_in_flight: 8,
            db_writers: 4,
            max_connections: 10_000,
            max_batch_bytes: 16 << 20,
            max_decompressed_bytes: 64 << 20,
            max_buffered_bytes: 512 << 20,
            heartbeat_secs: 15,
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(60),
            revocation_refresh: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl IngestConfig {
    /// The decoding limits derived from this configuration.
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_batch_bytes as usize,
            max_decompressed_bytes: self.max_decompressed_bytes,
        }
    }
}

/// Errors starting the ingest endpoint.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A setting is out of range.
    #[error("invalid ingest setting: {0}")]
    Config(String),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// quinn refused the TLS configuration.
    #[error("the TLS configuration does not suit QUIC: {0}")]
    Quic(String),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr} (UDP): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// What every connection task shares.
struct Shared {
    cfg: IngestConfig,
    /// Limits of batch frames.
    limits: Limits,
    /// Limits of control-stream frames (Hello, Enroll, heartbeats: all small), so that an unauthenticated peer
    /// cannot make the server buffer a batch-sized frame.
    control_limits: Limits,
    ca: Arc<Ca>,
    pool: PgPool,
    store: Arc<Store>,
    writers: Semaphore,
    buffered: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    revoked: watch::Sender<Arc<HashSet<String>>>,
    /// Commands: agent registration for the dispatchers (`None`: this endpoint does not serve commands).
    commands: Option<crate::commands::Commands>,
    /// Firmware images agents may fetch (`None`: fetches are refused).
    firmware: Option<crate::firmware::FirmwareConfig>,
}

/// A bound ingest endpoint, not serving yet. [`IngestServer::run`] serves it until shutdown.
pub struct IngestServer {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for IngestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestServer")
            .field("listen", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl IngestServer {
    /// Issues the server certificate, builds the TLS and QUIC configuration and binds the UDP socket. Returns the
    /// server and the address actually bound (useful with port 0). Must be called inside a Tokio runtime.
    pub fn bind(
        cfg: IngestConfig,
        ca: Arc<Ca>,
        pool: PgPool,
        store: Arc<Store>,
    ) -> Result<(IngestServer, SocketAddr), IngestError> {
        if cfg.max_in_flight == 0
            || cfg.db_writers == 0
            || cfg.max_connections == 0
            || cfg.heartbeat_secs == 0
        {
            return Err(IngestError::Config(
                "max_in_flight, db_writers, max_connections and heartbeat_secs must be > 0".into(),
            ));
        }
        if (cfg.max_buffered_bytes as u64) < cfg.max_batch_bytes as u64 {
            return Err(IngestError::Config(
                "max_buffered_bytes must be at least max_batch_bytes".into(),
            ));
        }
        let (revoked, revoked_rx) = watch::channel(Arc::new(HashSet::new()));
        let tls = tls::server_config(&ca, &cfg.server_names, revoked_rx)?;
        let quic_tls = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|err| IngestError::Quic(err.to_string()))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic_tls));
        let mut transport = quinn::TransportConfig::default();
        // The control stream, max_in_flight batch streams and one firmware fetch.
        transport.max_concurrent_bidi_streams(VarInt::from_u32(u32::from(cfg.max_in_flight) + 2));
        transport.max_concurrent_uni_streams(VarInt::from_u32(0));
        let idle = quinn::IdleTimeout::try_from(cfg.idle_timeout)
            .map_err(|_| IngestError::Config("idle_timeout is too large".into()))?;
        transport.max_idle_timeout(Some(idle));
        server_config.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(server_config, cfg.listen).map_err(|source| {
            IngestError::Bind {
                addr: cfg.listen,
                source,
            }
        })?;
        let addr = endpoint.local_addr().map_err(|source| IngestError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            limits: cfg.limits(),
            control_limits: Limits {
                max_frame_bytes: CONTROL_FRAME_BYTES,
                max_decompressed_bytes: CONTROL_FRAME_BYTES * 4,
            },
            writers: Semaphore::new(cfg.db_writers),
            buffered: Arc::new(Semaphore::new(
                cfg.max_buffered_bytes.min(Semaphore::MAX_PERMITS),
            )),
            connections: Arc::new(Semaphore::new(
                cfg.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            cfg,
            ca,
            pool,
            store,
            revoked,
            commands: None,
            firmware: None,
        });
        Ok((IngestServer { endpoint, shared }, addr))
    }

    /// Registers every accepted agent's connection for command dispatch (see `crate::commands`) and wakes its
    /// waiting commands when it connects. Call before [`IngestServer::run`].
    pub fn with_commands(mut self, commands: crate::commands::Commands) -> IngestServer {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.commands = Some(commands),
            None => tracing::error!("Commands attached after the ingest server started; ignored."),
        }
        self
    }

    /// Serves the firmware images under `cfg.dir` to the agents of their provider (`Message::FirmwareFetch`).
    /// Call before [`IngestServer::run`].
    pub fn with_firmware(mut self, cfg: crate::firmware::FirmwareConfig) -> IngestServer {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.firmware = Some(cfg),
            None => tracing::error!("Firmware attached after the ingest server started; ignored."),
        }
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Serves agents until `shutdown` is cancelled, then stops accepting, gives in-flight batches
    /// `shutdown_grace` to commit and be acknowledged, and closes every connection.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let IngestServer { endpoint, shared } = self;
        if let Err(err) = refresh_revoked(&shared).await {
            tracing::warn!(error = %err, "Cannot load revoked certificates yet; the per-connection check still applies.");
        }
        let tasks = TaskTracker::new();
        tasks.spawn(revocation_refresher(shared.clone(), shutdown.clone()));
        loop {
            let incoming = tokio::select! {
                _ = shutdown.cancelled() => break,
                incoming = endpoint.accept() => incoming,
            };
            let Some(incoming) = incoming else { break };
            let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
                tracing::warn!(remote = %incoming.remote_address(), "Connection refused: max_connections reached.");
                metrics::counter!("octoisp_ingest_connections_refused_total", "reason" => "busy")
                    .increment(1);
                incoming.refuse();
                continue;
            };
            let (shared, shutdown) = (shared.clone(), shutdown.clone());
            tasks.spawn(async move {
                handle_incoming(incoming, shared, shutdown).await;
                drop(permit);
            });
        }
        tasks.close();
        // Connection tasks drain their own batches within shutdown_grace; allow a little more before forcing.
        let deadline = shared.cfg.shutdown_grace + Duration::from_secs(1);
        if tokio::time::timeout(deadline, tasks.wait()).await.is_err() {
            tracing::warn!("Some agent connections did not finish within the grace period.");
        }
        endpoint.close(
            VarInt::from_u32(CLOSE_SHUTDOWN),
            b"control plane shutting down",
        );
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        tracing::info!("Ingest stopped.");
        Ok(())
    }
}

/// Binds and serves in one call: [`IngestServer::bind`] then [`IngestServer::run`].
pub async fn run(
    cfg: IngestConfig,
    ca: Arc<Ca>,
    pool: PgPool,
    store: Arc<Store>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listen = cfg.listen;
    let (server, addr) =
        IngestServer::bind(cfg, ca, pool, store).with_context(|| format!("ingest on {listen}"))?;
    tracing::info!(%addr, "Ingest listening (QUIC).");
    server.run(shutdown).await
}

async fn refresh_revoked(shared: &Shared) -> Result<usize, sqlx::Error> {
    let list = registry::revoked_fingerprints(&shared.pool).await?;
    let set: HashSet<String> = list.into_iter().map(|fp| fp.to_ascii_lowercase()).collect();
    let len = set.len();
    shared.revoked.send_if_modified(|current| {
        if **current == set {
            false
        } else {
            *current = Arc::new(set);
            true
        }
    });
    Ok(len)
}

async fn revocation_refresher(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(shared.cfg.revocation_refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(err) = refresh_revoked(&shared).await {
            tracing::warn!(error = %err, "Cannot refresh revoked certificates; keeping the previous set.");
        }
    }
}

/// Decrements the connection gauge when the connection task ends.
struct ConnectionGauge;

impl ConnectionGauge {
    fn new() -> Self {
        metrics::gauge!("octoisp_ingest_connections").increment(1.0);
        ConnectionGauge
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        metrics::gauge!("octoisp_ingest_connections").decrement(1.0);
    }
}

async fn handle_incoming(
    incoming: quinn::Incoming,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let remote = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(err) => {
            tracing::debug!(%remote, error = %err, "Incoming connection failed.");
            return;
        }
    };
    let conn = match tokio::time::timeout(shared.cfg.handshake_timeout, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => {
            tracing::info!(%remote, error = %err, "QUIC/TLS handshake failed.");
            metrics::counter!("octoisp_ingest_handshakes_failed_total").increment(1);
            return;
        }
        Err(_) => {
            tracing::info!(%remote, "QUIC/TLS handshake timed out.");
            metrics::counter!("octoisp_ingest_handshakes_failed_total").increment(1);
            return;
        }
    };
    let _gauge = ConnectionGauge::new();
    metrics::counter!("octoisp_ingest_connections_total").increment(1);
    let leaf = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.into_iter().next());
    match leaf {
        Some(leaf) => {
            session::agent_session(conn, leaf, shared, shutdown)
                .instrument(tracing::info_span!("agent", %remote))
                .await
        }
        None => {
            enroll::enroll_session(conn, shared)
                .instrument(tracing::info_span!("enroll", %remote))
                .await
        }
    }
}
