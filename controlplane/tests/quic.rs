//! The QUIC + mutual TLS layer against a real PostgreSQL and real QUIC on loopback: enrollment, streaming batches
//! from a real agent outbox, refusals (tokens, revocation, a foreign CA), bad frames that must close only their
//! own stream or connection, tenant isolation (an agent's data lands under its certificate's provider), and
//! firmware images fetched by agents (resumed, checksum-verified, only their own provider's).

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use octoisp_agent::acs::fetch::{self, FetchError};
use octoisp_agent::enroll::{self, EnrollError};
use octoisp_agent::identity::Identity;
use octoisp_agent::outbox::{Outbox, OutboxConfig};
use octoisp_agent::uplink::{self, UplinkConfig};
use octoisp_controlplane::ca::{Ca, EnrollmentToken};
use octoisp_controlplane::firmware::FirmwareConfig;
use octoisp_controlplane::ingest::server::{IngestConfig, IngestServer};
use octoisp_controlplane::ingest::store::Store;
use octoisp_controlplane::registry;
use octoisp_shared::frame::{self, Compression, FLAG_ZSTD, HEADER_LEN, MAGIC};
use octoisp_shared::{
    Batch, Event, Hello, Message, MetricKind, NackCode, Record, RejectCode, Sample, SampleBlock,
    SeriesDef, Severity,
};
use quinn::{Connection, RecvStream, SendStream};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use support::TestDb;

/// A control plane's QUIC ingest on 127.0.0.1 over a fresh database, with providers `isp-a` and `isp-b`.
struct Fixture {
    db: TestDb,
    ca: Arc<Ca>,
    addr: SocketAddr,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    dir: tempfile::TempDir,
    provider_a: Uuid,
    provider_b: Uuid,
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture::start_with(Duration::from_millis(300)).await
    }

    /// Like [`Fixture::start`], with the given refresh period of the revoked-certificate set.
    async fn start_with(revocation_refresh: Duration) -> Fixture {
        // Logs go to the test's captured output, shown when it fails (RUST_LOG to change the level).
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
        let db = TestDb::new().await;
        let provider_a = registry::create_provider(&db.app, "isp-a", "ISP A", "small")
            .await
            .expect("provider a");
        registry::create_pop(&db.app, "isp-a", "centro", "Centro")
            .await
            .expect("pop a");
        let provider_b = registry::create_provider(&db.app, "isp-b", "ISP B", "small")
            .await
            .expect("provider b");
        registry::create_pop(&db.app, "isp-b", "norte", "Norte")
            .await
            .expect("pop b");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Arc::new(Ca::load_or_create(&dir.path().join("cp-data")).expect("CA"));
        let cfg = IngestConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            max_batch_bytes: 1 << 20,
            max_decompressed_bytes: 4 << 20,
            max_buffered_bytes: 16 << 20,
            heartbeat_secs: 1,
            revocation_refresh,
            shutdown_grace: Duration::from_secs(2),
            ..IngestConfig::default()
        };
        let store = Arc::new(Store::new(db.app.clone()));
        let (server, addr) =
            IngestServer::bind(cfg, ca.clone(), db.app.clone(), store).expect("bind");
        let server = server.with_firmware(FirmwareConfig {
            dir: dir.path().join("firmware"),
            ..FirmwareConfig::default()
        });
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(server.run(shutdown.clone()));
        Fixture {
            db,
            ca,
            addr,
            shutdown,
            server: Some(server),
            dir,
            provider_a,
            provider_b,
        }
    }

    fn server(&self) -> String {
        self.addr.to_string()
    }

    /// A fresh token for `isp-a/centro` (or `isp-b/norte`), as the operator would get it.
    async fn token(&self, provider: &str) -> String {
        let pop = if provider == "isp-a" {
            "centro"
        } else {
            "norte"
        };
        let issued = registry::create_enrollment_token(
            &self.db.app,
            provider,
            pop,
            Duration::from_secs(600),
        )
        .await
        .expect("token");
        EnrollmentToken {
            token_id: issued.token_id,
            secret: issued.secret,
            ca_fingerprint: self.ca.fingerprint_hex(),
        }
        .to_string()
    }

    fn identity_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name).join("identity")
    }

    /// Enrolls an agent named `name` for `provider`; returns its identity directory.
    async fn enroll(&self, name: &str, provider: &str) -> (PathBuf, enroll::EnrolledIdentity) {
        let dir = self.identity_dir(name);
        let token = self.token(provider).await;
        let id = enroll::enroll(&self.server(), &token, &dir, name, false)
            .await
            .expect("enroll");
        (dir, id)
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let result = tokio::time::timeout(Duration::from_secs(10), server).await;
            assert!(
                matches!(result, Ok(Ok(Ok(())))),
                "ingest did not stop cleanly: {result:?}"
            );
        }
    }
}

/// A real agent outbox in `dir`, with small batches so that several are in flight.
fn open_outbox(dir: &Path) -> Outbox {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut cfg = OutboxConfig::new(dir.join("outbox.db"));
    cfg.batch_max_samples = 500;
    Outbox::open(cfg).expect("outbox")
}

/// Appends `per_series` samples to each of `series` series of device `device_key`.
async fn fill(outbox: &Outbox, device_key: &str, series: usize, per_series: usize) {
    let base = chrono_now_ms() - 3_600_000;
    for s in 0..series {
        let id = outbox
            .series_id(
                device_key,
                "ping.rtt_ms",
                &[("n".to_string(), s.to_string())],
                MetricKind::Gauge,
            )
            .expect("series");
        let samples: Vec<Sample> = (0..per_series)
            .map(|i| Sample {
                series: id,
                ts_ms: base + i as i64 * 1000,
                value: i as f64,
            })
            .collect();
        outbox.append_samples(samples).await.expect("append");
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn uplink_cfg(fx: &Fixture, identity_dir: PathBuf) -> UplinkConfig {
    UplinkConfig {
        server: fx.server(),
        identity_dir,
        max_in_flight: 4,
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(500),
    }
}

/// Samples stored for `agent`, seen by the superuser (every tenant), with the provider they were stored under.
async fn samples_of(admin: &PgPool, agent: Uuid) -> Vec<(Uuid, i64)> {
    sqlx::query_as(
        "SELECT s.provider_id, count(*) FROM samples s JOIN series r ON r.id = s.series_id \
         WHERE r.agent_id = $1 GROUP BY s.provider_id",
    )
    .bind(agent)
    .fetch_all(admin)
    .await
    .expect("count samples")
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

async fn outbox_empty(outbox: &Outbox) -> bool {
    let ob = outbox.clone();
    let stats = tokio::task::spawn_blocking(move || ob.stats())
        .await
        .expect("join")
        .expect("stats");
    stats.chunks == 0 && stats.batches_pending == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_agent_streams_batches_into_postgres_and_its_outbox_drains() {
    let fx = Fixture::start().await;
    let (dir, id) = fx.enroll("agent-a", "isp-a").await;
    assert_eq!(id.provider_id, fx.provider_a);
    let identity = Identity::load(&dir)
        .expect("load")
        .expect("identity present");
    assert_eq!(identity.agent_id, id.agent_id);
    assert_eq!(identity.meta.ca_fingerprint, fx.ca.fingerprint_hex());
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("agent.key"))
            .expect("key")
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600, "the agent key must be private");

    // Enrolling again over an existing identity needs --force.
    let again = enroll::enroll(
        &fx.server(),
        &fx.token("isp-a").await,
        &dir,
        "agent-a",
        false,
    )
    .await;
    assert!(
        matches!(again, Err(EnrollError::AlreadyEnrolled(_))),
        "{again:?}"
    );

    let outbox = open_outbox(&fx.dir.path().join("agent-a"));
    fill(&outbox, "icmp:192.0.2.1", 4, 1000).await;
    let event = Record::Event(Event {
        id: Uuid::new_v4(),
        ts_ms: chrono_now_ms(),
        device_key: Some("icmp:192.0.2.1".into()),
        kind: "ping.down".into(),
        severity: Severity::Warning,
        message: "no answer".into(),
        attrs: vec![],
    });
    outbox
        .append_records(vec![event])
        .await
        .expect("append event");

    let stop = CancellationToken::new();
    let up = tokio::spawn(uplink::run(
        uplink_cfg(&fx, dir.clone()),
        outbox.clone(),
        stop.clone(),
    ));
    let admin = fx.db.admin.clone();
    let agent = id.agent_id;
    wait_until(
        "4000 samples in PostgreSQL",
        Duration::from_secs(30),
        || {
            let admin = admin.clone();
            async move {
                samples_of(&admin, agent)
                    .await
                    .iter()
                    .map(|r| r.1)
                    .sum::<i64>()
                    == 4000
            }
        },
    )
    .await;
    wait_until("the outbox to drain", Duration::from_secs(10), || {
        outbox_empty(&outbox)
    })
    .await;
    assert_eq!(samples_of(&admin, agent).await, vec![(fx.provider_a, 4000)]);
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE agent_id = $1 AND kind = 'ping.down'",
    )
    .bind(agent)
    .fetch_one(&admin)
    .await
    .expect("events");
    assert_eq!(events, 1);

    // More data while connected is picked up without reconnecting.
    fill(&outbox, "icmp:192.0.2.2", 1, 250).await;
    wait_until("the new samples", Duration::from_secs(10), || {
        let admin = admin.clone();
        async move {
            samples_of(&admin, agent)
                .await
                .iter()
                .map(|r| r.1)
                .sum::<i64>()
                == 4250
        }
    })
    .await;

    stop.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(10), up)
        .await
        .expect("uplink stops");
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_reused_and_wrong_tokens_are_refused_with_the_right_reason() {
    let fx = Fixture::start().await;
    let server = fx.server();

    // Reused.
    let token = fx.token("isp-a").await;
    enroll::enroll(&server, &token, &fx.identity_dir("first"), "first", false)
        .await
        .expect("first use");
    let reused = enroll::enroll(&server, &token, &fx.identity_dir("second"), "second", false).await;
    assert!(
        matches!(
            reused,
            Err(EnrollError::Rejected {
                code: RejectCode::TokenUsed,
                ..
            })
        ),
        "{reused:?}"
    );
    assert!(
        !Identity::exists(&fx.identity_dir("second")),
        "a refused enrollment must store nothing"
    );

    // Expired.
    let token = fx.token("isp-a").await;
    let parsed: enroll::EnrollmentToken = token.parse().expect("token");
    sqlx::query(
        "UPDATE enrollment_tokens SET expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(parsed.token_id)
    .execute(&fx.db.admin)
    .await
    .expect("expire");
    let expired = enroll::enroll(&server, &token, &fx.identity_dir("late"), "late", false).await;
    assert!(
        matches!(
            expired,
            Err(EnrollError::Rejected {
                code: RejectCode::TokenExpired,
                ..
            })
        ),
        "{expired:?}"
    );

    // Wrong secret, and an unknown token id.
    let token = fx.token("isp-a").await;
    let mut wrong: enroll::EnrollmentToken = token.parse().expect("token");
    wrong.secret = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into();
    let refused = enroll::enroll(
        &server,
        &wrong.to_string(),
        &fx.identity_dir("w"),
        "w",
        false,
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(EnrollError::Rejected {
                code: RejectCode::InvalidToken,
                ..
            })
        ),
        "{refused:?}"
    );
    wrong.token_id = Uuid::new_v4();
    let refused = enroll::enroll(
        &server,
        &wrong.to_string(),
        &fx.identity_dir("w"),
        "w",
        false,
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(EnrollError::Rejected {
                code: RejectCode::InvalidToken,
                ..
            })
        ),
        "{refused:?}"
    );
    // The right secret still works: failed attempts did not spend the token.
    enroll::enroll(&server, &token, &fx.identity_dir("right"), "right", false)
        .await
        .expect("right secret");

    // A token that is not even well-formed never reaches the network.
    let garbled = enroll::enroll(
        &server,
        "octoisp-enroll-v1.nope",
        &fx.identity_dir("g"),
        "g",
        false,
    )
    .await;
    assert!(matches!(garbled, Err(EnrollError::Token(_))), "{garbled:?}");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refuses_a_server_whose_ca_is_not_the_one_in_the_token() {
    let fx = Fixture::start().await;
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other_ca = Ca::load_or_create(other_dir.path()).expect("other CA");
    let token = fx.token("isp-a").await;
    let mut parsed: enroll::EnrollmentToken = token.parse().expect("token");
    parsed.ca_fingerprint = other_ca.fingerprint_hex();
    let result = enroll::enroll(
        &fx.server(),
        &parsed.to_string(),
        &fx.identity_dir("x"),
        "x",
        false,
    )
    .await;
    match result {
        Err(EnrollError::ServerNotTrusted {
            expected, offered, ..
        }) => {
            assert_eq!(expected, other_ca.fingerprint_hex());
            assert!(offered.contains(&fx.ca.fingerprint_hex()), "{offered:?}");
        }
        other => panic!("expected ServerNotTrusted, got {other:?}"),
    }
    assert!(!Identity::exists(&fx.identity_dir("x")));
    // Nothing reached the control plane: the token is still good.
    enroll::enroll(&fx.server(), &token, &fx.identity_dir("x"), "x", false)
        .await
        .expect("token unspent");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_agent_is_disconnected_and_refused() {
    let fx = Fixture::start().await;
    let (dir, id) = fx.enroll("agent-r", "isp-a").await;
    let outbox = open_outbox(&fx.dir.path().join("agent-r"));
    fill(&outbox, "icmp:192.0.2.9", 1, 100).await;
    let stop = CancellationToken::new();
    let up = tokio::spawn(uplink::run(
        uplink_cfg(&fx, dir.clone()),
        outbox.clone(),
        stop.clone(),
    ));
    wait_until("the first batch", Duration::from_secs(20), || {
        outbox_empty(&outbox)
    })
    .await;

    assert!(
        registry::revoke_agent(&fx.db.app, id.agent_id)
            .await
            .expect("revoke")
    );
    // Within a refresh of the revoked set, a new connection with the revoked certificate fails at the handshake.
    let identity = Identity::load(&dir).expect("load").expect("identity");
    let config = octoisp_agent::tls::uplink_config(&identity).expect("config");
    let server = fx.server();
    wait_until(
        "the handshake to refuse the revoked certificate",
        Duration::from_secs(10),
        || {
            let (server, config) = (server.clone(), config.clone());
            async move {
                match connect_and_hello(&server, config).await {
                    Err(_) => true,
                    Ok((_, Message::Reject(reject))) => {
                        // Until the set is refreshed, the database check refuses it after the handshake.
                        assert_eq!(reject.code, RejectCode::Revoked, "{reject:?}");
                        false
                    }
                    Ok((_, other)) => panic!("a revoked agent got {other:?}"),
                }
            }
        },
    )
    .await;
    // The running connection is closed by now, and nothing more is stored for this certificate: what the agent
    // collects stays in its outbox.
    fill(&outbox, "icmp:192.0.2.9", 1, 100).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ob = outbox.clone();
    let stats = tokio::task::spawn_blocking(move || ob.stats())
        .await
        .expect("join")
        .expect("stats");
    assert!(
        stats.samples >= 100,
        "a revoked agent's new data must stay in its outbox: {stats:?}"
    );
    assert_eq!(
        stats.dead_letters, 0,
        "nothing may be dead-lettered because of a revocation: {stats:?}"
    );
    let stored: i64 = samples_of(&fx.db.admin, id.agent_id)
        .await
        .iter()
        .map(|r| r.1)
        .sum();
    assert_eq!(stored, 100);
    stop.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(10), up)
        .await
        .expect("uplink stops");
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_revoked_before_the_handshake_check_knows_keeps_its_data() {
    // The revoked set is refreshed only hourly here: the database is what refuses the connected agent.
    let fx = Fixture::start_with(Duration::from_secs(3600)).await;
    let (dir, id) = fx.enroll("agent-s", "isp-a").await;
    let outbox = open_outbox(&fx.dir.path().join("agent-s"));
    fill(&outbox, "icmp:192.0.2.10", 1, 100).await;
    let stop = CancellationToken::new();
    let up = tokio::spawn(uplink::run(
        uplink_cfg(&fx, dir.clone()),
        outbox.clone(),
        stop.clone(),
    ));
    wait_until("the first batch", Duration::from_secs(20), || {
        outbox_empty(&outbox)
    })
    .await;

    assert!(
        registry::revoke_agent(&fx.db.app, id.agent_id)
            .await
            .expect("revoke")
    );
    fill(&outbox, "icmp:192.0.2.10", 1, 100).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ob = outbox.clone();
    let stats = tokio::task::spawn_blocking(move || ob.stats())
        .await
        .expect("join")
        .expect("stats");
    assert!(
        stats.samples >= 100,
        "the refused batch must stay in the outbox: {stats:?}"
    );
    assert_eq!(
        stats.dead_letters, 0,
        "a revocation is not a malformed batch: {stats:?}"
    );
    let stored: i64 = samples_of(&fx.db.admin, id.agent_id)
        .await
        .iter()
        .map(|r| r.1)
        .sum();
    assert_eq!(stored, 100);
    // A new session is refused by the database check after the handshake.
    let identity = Identity::load(&dir).expect("load").expect("identity");
    let config = octoisp_agent::tls::uplink_config(&identity).expect("config");
    match connect_and_hello(&fx.server(), config).await {
        Ok((_, Message::Reject(reject))) => assert_eq!(reject.code, RejectCode::Revoked),
        other => panic!("expected Reject Revoked, got {other:?}"),
    }
    stop.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(10), up)
        .await
        .expect("uplink stops");
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_is_not_the_agents_current_one_is_rejected_by_the_database_check() {
    let fx = Fixture::start().await;
    let (dir, id) = fx.enroll("agent-c", "isp-a").await;
    let identity = Identity::load(&dir).expect("load").expect("identity");
    // A second certificate for the same agent id, validly signed by the CA but not the one stored at enrollment.
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let (cert_pem, _) = fx
        .ca
        .sign_agent_csr(&csr, id.agent_id, fx.provider_b, id.pop_id)
        .expect("sign");
    let forged = Identity::new(
        identity.meta.clone(),
        cert_pem,
        key.serialize_pem(),
        identity.ca_pem.clone(),
    );
    let config = octoisp_agent::tls::uplink_config(&forged).expect("config");
    match connect_and_hello(&fx.server(), config).await {
        Ok((_, Message::Reject(reject))) => {
            assert_eq!(reject.code, RejectCode::Revoked, "{reject:?}")
        }
        other => panic!("expected Reject, got {other:?}"),
    }
    fx.stop().await;
}

/// Connects with `config`, sends Hello and returns the connection and the answer.
async fn connect_and_hello(
    server: &str,
    config: quinn::ClientConfig,
) -> anyhow::Result<(Connection, Message)> {
    connect_and_send_hello(server, config, 1, 1)
        .await
        .map(|(conn, _, _, answer)| (conn, answer))
}

async fn connect_and_send_hello(
    server: &str,
    config: quinn::ClientConfig,
    version_min: u16,
    version_max: u16,
) -> anyhow::Result<(Connection, SendStream, RecvStream, Message)> {
    let (endpoint, conn) =
        octoisp_agent::uplink::dial::connect(server, config, Duration::from_secs(5)).await?;
    drop(endpoint); // quinn keeps the endpoint's driver running while the connection lives
    let (mut send, mut recv) = conn.open_bi().await?;
    let hello = Message::Hello(Hello {
        version_min,
        version_max,
        agent_version: "test".into(),
        hostname: "raw".into(),
    });
    send.write_all(&frame::encode(&hello, Compression::None)?)
        .await?;
    let answer = read_answer(&mut recv).await?;
    Ok((conn, send, recv, answer))
}

async fn read_answer(recv: &mut RecvStream) -> anyhow::Result<Message> {
    let limits = octoisp_agent::uplink::wire::reply_limits();
    Ok(tokio::time::timeout(
        Duration::from_secs(10),
        octoisp_agent::uplink::wire::read_frame(recv, &limits),
    )
    .await??)
}

/// Sends raw bytes on a new batch stream and returns the answer.
async fn raw_batch_stream(conn: &Connection, bytes: &[u8]) -> anyhow::Result<Message> {
    let (mut send, mut recv) = conn.open_bi().await?;
    // The server may stop reading early (oversize header): a write error is fine, the answer is what counts.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    read_answer(&mut recv).await
}

fn batch(seq: u64, device_key: &str, n: usize) -> Batch {
    let base = chrono_now_ms() - 600_000;
    let samples: Vec<Sample> = (0..n)
        .map(|i| Sample {
            series: 1,
            ts_ms: base + i as i64 * 1000,
            value: 1.5,
        })
        .collect();
    Batch {
        seq,
        settled_below: seq,
        created_ms: chrono_now_ms(),
        series: vec![SeriesDef {
            id: 1,
            device_key: device_key.into(),
            metric: "ping.rtt_ms".into(),
            labels: vec![],
            kind: MetricKind::Gauge,
        }],
        samples: SampleBlock::encode(&samples),
        records: vec![],
    }
}

fn expect_malformed(answer: anyhow::Result<Message>, what: &str) {
    match answer {
        Ok(Message::Nack(nack)) => {
            assert_eq!(nack.code, NackCode::Malformed, "{what}: {nack:?}");
            assert!(
                !nack.message.is_empty(),
                "{what}: the Nack must say what was wrong"
            );
        }
        other => panic!("{what}: expected Nack Malformed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_stream_or_connection_while_other_agents_keep_storing() {
    let fx = Fixture::start().await;
    // A well-behaved agent streams the whole time.
    let (good_dir, good) = fx.enroll("good", "isp-b").await;
    let outbox = open_outbox(&fx.dir.path().join("good"));
    let stop = CancellationToken::new();
    let up = tokio::spawn(uplink::run(
        uplink_cfg(&fx, good_dir),
        outbox.clone(),
        stop.clone(),
    ));
    fill(&outbox, "icmp:198.51.100.1", 2, 500).await;

    // A misbehaving (but enrolled) client speaks raw frames.
    let (bad_dir, _) = fx.enroll("bad", "isp-a").await;
    let identity = Identity::load(&bad_dir).expect("load").expect("identity");
    let config = octoisp_agent::tls::uplink_config(&identity).expect("config");
    let (conn, _ctl_send, _ctl_recv, welcome) =
        connect_and_send_hello(&fx.server(), config.clone(), 1, 1)
            .await
            .expect("hello");
    assert!(matches!(welcome, Message::Welcome(_)), "{welcome:?}");

    // Garbage payload behind a valid header.
    let mut garbage = vec![MAGIC, 0, 0, 0, 0, 0];
    garbage[2..HEADER_LEN].copy_from_slice(&64u32.to_le_bytes());
    garbage.extend(std::iter::repeat_n(0xff, 64));
    expect_malformed(raw_batch_stream(&conn, &garbage).await, "garbage payload");
    // A header announcing 4 GiB: refused before any payload is read.
    let mut oversize = vec![MAGIC, 0];
    oversize.extend(u32::MAX.to_le_bytes());
    oversize.extend([0u8; 1024]);
    expect_malformed(raw_batch_stream(&conn, &oversize).await, "oversize header");
    // A zstd bomb: a few KiB that expand beyond the 4 MiB limit.
    let bomb_msg = Message::Batch(Batch {
        records: vec![Record::Event(Event {
            id: Uuid::new_v4(),
            ts_ms: 0,
            device_key: None,
            kind: "x".into(),
            severity: Severity::Info,
            message: "a".repeat(8 << 20),
            attrs: vec![],
        })],
        ..batch(1, "icmp:192.0.2.66", 1)
    });
    let big = frame::encode_with_limits(
        &bomb_msg,
        Compression::Zstd(3),
        &octoisp_shared::Limits {
            max_frame_bytes: 1 << 20,
            max_decompressed_bytes: 64 << 20,
        },
    )
    .expect("bomb");
    assert_eq!(big[1] & FLAG_ZSTD, FLAG_ZSTD);
    assert!(
        big.len() < 64 << 10,
        "the bomb should be small on the wire: {}",
        big.len()
    );
    expect_malformed(raw_batch_stream(&conn, &big).await, "zstd bomb");
    // Unknown flag bits (a frame from a newer protocol) and a bad magic byte.
    let mut future = frame::encode(
        &Message::Batch(batch(2, "icmp:192.0.2.66", 3)),
        Compression::None,
    )
    .expect("encode");
    future[1] |= 0x80;
    expect_malformed(raw_batch_stream(&conn, &future).await, "unknown flags");
    future[0] = b'X';
    expect_malformed(raw_batch_stream(&conn, &future).await, "bad magic");
    // Not a Batch on a batch stream.
    let hello = frame::encode(
        &Message::Hello(Hello {
            version_min: 1,
            version_max: 1,
            agent_version: "t".into(),
            hostname: "h".into(),
        }),
        Compression::None,
    )
    .expect("encode");
    expect_malformed(
        raw_batch_stream(&conn, &hello).await,
        "Hello on a batch stream",
    );

    // Samples of a series the control plane never saw defined: the agent is asked for the definition.
    let mut undefined = batch(4, "icmp:192.0.2.66", 5);
    undefined.series.clear();
    undefined.samples = SampleBlock::encode(&[Sample {
        series: 77,
        ts_ms: chrono_now_ms(),
        value: 1.0,
    }]);
    let undefined = frame::encode(&Message::Batch(undefined), Compression::None).expect("encode");
    match raw_batch_stream(&conn, &undefined).await {
        Ok(Message::Nack(nack)) => assert_eq!(
            (nack.seq, nack.code),
            (4, NackCode::UnknownSeries(vec![77]))
        ),
        other => panic!("expected Nack UnknownSeries, got {other:?}"),
    }

    // The same connection still stores a good batch.
    let good_frame = frame::encode(
        &Message::Batch(batch(3, "icmp:192.0.2.66", 10)),
        Compression::Zstd(3),
    )
    .expect("encode");
    match raw_batch_stream(&conn, &good_frame).await {
        Ok(Message::Ack(ack)) => assert_eq!((ack.seq, ack.duplicate), (3, false)),
        other => panic!("expected Ack after the bad streams, got {other:?}"),
    }
    // Replaying it is acknowledged as a duplicate and stores nothing twice.
    match raw_batch_stream(&conn, &good_frame).await {
        Ok(Message::Ack(ack)) => assert_eq!((ack.seq, ack.duplicate), (3, true)),
        other => panic!("expected a duplicate Ack, got {other:?}"),
    }

    // Wrong protocol version: Reject on the control stream, and that connection closes.
    match connect_and_send_hello(&fx.server(), config.clone(), 90, 99).await {
        Ok((conn, _, _, Message::Reject(reject))) => {
            assert_eq!(reject.code, RejectCode::UnsupportedVersion, "{reject:?}");
            let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
            assert!(closed.is_ok(), "the connection must close after Reject");
        }
        other => panic!("expected Reject UnsupportedVersion, got {other:?}"),
    }
    // Garbage as the first control message: Reject ProtocolError.
    let (endpoint, conn2) =
        octoisp_agent::uplink::dial::connect(&fx.server(), config, Duration::from_secs(5))
            .await
            .expect("connect");
    let (mut send, mut recv) = conn2.open_bi().await.expect("control stream");
    send.write_all(&garbage).await.expect("write");
    match read_answer(&mut recv).await {
        Ok(Message::Reject(reject)) => assert_eq!(reject.code, RejectCode::ProtocolError),
        other => panic!("expected Reject ProtocolError, got {other:?}"),
    }
    drop(endpoint);

    // Through all of it, the good agent's batches were stored.
    let admin = fx.db.admin.clone();
    let agent = good.agent_id;
    wait_until(
        "the good agent's 1000 samples",
        Duration::from_secs(30),
        || {
            let admin = admin.clone();
            async move {
                samples_of(&admin, agent)
                    .await
                    .iter()
                    .map(|r| r.1)
                    .sum::<i64>()
                    == 1000
            }
        },
    )
    .await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), up)
        .await
        .expect("uplink stops");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_store_data_under_another_provider() {
    let fx = Fixture::start().await;
    let (dir_a, a) = fx.enroll("agent-a", "isp-a").await;
    let (dir_b, b) = fx.enroll("agent-b", "isp-b").await;
    assert_eq!(
        (a.provider_id, b.provider_id),
        (fx.provider_a, fx.provider_b)
    );

    // Agent A's payload names a device key that looks like provider B's, and B has a device with the same key.
    let claim = format!("provider:{}:icmp:192.0.2.1", fx.provider_b);
    for (dir, name) in [(&dir_a, "a"), (&dir_b, "b")] {
        let outbox = open_outbox(&fx.dir.path().join(format!("claim-{name}")));
        fill(&outbox, &claim, 1, 50).await;
        let stop = CancellationToken::new();
        let up = tokio::spawn(uplink::run(
            uplink_cfg(&fx, dir.clone()),
            outbox.clone(),
            stop.clone(),
        ));
        wait_until("the outbox to drain", Duration::from_secs(20), || {
            outbox_empty(&outbox)
        })
        .await;
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), up)
            .await
            .expect("uplink stops");
    }
    assert_eq!(
        samples_of(&fx.db.admin, a.agent_id).await,
        vec![(fx.provider_a, 50)]
    );
    assert_eq!(
        samples_of(&fx.db.admin, b.agent_id).await,
        vec![(fx.provider_b, 50)]
    );
    let owners: Vec<Uuid> = sqlx::query_scalar(
        "SELECT provider_id FROM devices WHERE device_key = $1 ORDER BY provider_id",
    )
    .bind(&claim)
    .fetch_all(&fx.db.admin)
    .await
    .expect("devices");
    let mut expected = vec![fx.provider_a, fx.provider_b];
    expected.sort();
    assert_eq!(
        owners, expected,
        "each agent's device belongs to its own provider"
    );

    // Provider B, through row-level security, sees only its own agent's samples.
    let mut tx = octoisp_controlplane::db::tenant_tx(&fx.db.app, fx.provider_b)
        .await
        .expect("tenant tx");
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM samples")
        .fetch_one(&mut *tx)
        .await
        .expect("count");
    assert_eq!(visible, 50);
    tx.rollback().await.expect("rollback");
    fx.stop().await;
}

/// Stores a firmware image for `provider` as an upload would: the file under its SHA-256, the row. Returns the
/// SHA-256.
async fn put_image(fx: &Fixture, provider: Uuid, name: &str, data: &[u8]) -> String {
    use sha2::Digest as _;
    let sha = hex::encode(sha2::Sha256::digest(data));
    let cfg = FirmwareConfig {
        dir: fx.dir.path().join("firmware"),
        ..FirmwareConfig::default()
    };
    let path = cfg.image_path(provider, &sha);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, data).expect("write image");
    let mut tx = octoisp_controlplane::db::tenant_tx(&fx.db.app, provider)
        .await
        .expect("tenant tx");
    sqlx::query(
        "INSERT INTO firmware_images (provider_id, name, version, size, sha256) VALUES ($1, $2, 'v1', $3, $4)",
    )
    .bind(provider)
    .bind(name)
    .bind(data.len() as i64)
    .bind(&sha)
    .execute(&mut *tx)
    .await
    .expect("insert image");
    tx.commit().await.expect("commit");
    sha
}

fn image_bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_fetch_their_providers_firmware_resumed_and_verified_and_nothing_else() {
    let fx = Fixture::start().await;
    let (dir_a, _) = fx.enroll("agent-a", "isp-a").await;
    let image_a = image_bytes(1, 3_000_000);
    let sha_a = put_image(&fx, fx.provider_a, "fw-a", &image_a).await;
    let image_b = image_bytes(2, 200_000);
    let sha_b = put_image(&fx, fx.provider_b, "fw-b", &image_b).await;
    let identity = Identity::load(&dir_a).expect("load").expect("identity");
    let config = octoisp_agent::tls::uplink_config(&identity).expect("config");
    // The control stream stays open (an agent that finishes it is leaving: the server closes the connection).
    let (conn, _control_send, _control_recv, welcome) =
        connect_and_send_hello(&fx.server(), config, 1, 1)
            .await
            .expect("connect");
    assert!(matches!(welcome, Message::Welcome(_)), "{welcome:?}");
    let cache = fx.dir.path().join("agent-a-firmware");
    std::fs::create_dir_all(&cache).expect("mkdir");

    // A transfer that broke off halfway is resumed from what the agent holds.
    std::fs::create_dir_all(cache.join(".partial")).expect("mkdir");
    std::fs::write(cache.join(".partial").join(&sha_a), &image_a[..1_234_567]).expect("partial");
    let path = fetch::fetch(&conn, &cache, &sha_a)
        .await
        .expect("fetch A's image");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        image_a,
        "byte-identical"
    );
    assert!(fetch::is_cached(&cache, &sha_a));
    assert!(!cache.join(".partial").join(&sha_a).exists());

    // Another provider's image does not exist for this agent.
    match fetch::fetch(&conn, &cache, &sha_b).await {
        Err(FetchError::Refused { message, .. }) => {
            assert!(message.contains("no firmware image"), "{message}")
        }
        other => panic!("B's image must be refused to A's agent, got {other:?}"),
    }
    assert!(!cache.join(&sha_b).exists());

    // Bytes damaged on the control plane's disk (same size): refused by the checksum, nothing kept.
    let image_c = image_bytes(3, 500_000);
    let sha_c = put_image(&fx, fx.provider_a, "fw-c", &image_c).await;
    let cp_file = fx
        .dir
        .path()
        .join("firmware")
        .join(fx.provider_a.to_string())
        .join(&sha_c);
    let mut damaged = image_c.clone();
    damaged[250_000] ^= 0xff;
    std::fs::write(&cp_file, &damaged).expect("damage");
    match fetch::fetch(&conn, &cache, &sha_c).await {
        Err(FetchError::Checksum { actual, .. }) => assert_ne!(actual, sha_c),
        other => panic!("a corrupted transfer must be refused, got {other:?}"),
    }
    assert!(!fetch::is_cached(&cache, &sha_c));
    assert!(!cache.join(&sha_c).exists());
    assert!(!cache.join(".partial").join(&sha_c).exists());
    // The agent's firmware server refuses what is not verified: nothing under that name is served.
    let served = octoisp_agent::acs::firmware::FirmwareDir::new(&cache);
    assert!(served.load(&sha_c).is_err());
    assert_eq!(served.load(&sha_a).expect("served"), image_a);
    conn.close(0u32.into(), b"done");
    fx.stop().await;
}
