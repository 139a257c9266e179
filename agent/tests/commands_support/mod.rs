//! Helpers of the command tests: a QUIC connection pair on loopback (the test plays the control plane and opens
//! command streams; the agent side accepts them with the real `Executor::accept_streams`), an agent with an
//! outbox, a central-configuration runtime and an executor in a temporary state directory, and readers of what
//! reached the outbox.
#![allow(dead_code)] // Each test file uses a different subset.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use octoisp_agent::central::Runtime;
use octoisp_agent::commands::{CommandsSection, Executor};
use octoisp_agent::config::Config;
use octoisp_agent::outbox::{Outbox, OutboxConfig, Synchronous};
use octoisp_shared::frame::{self, Compression, Limits};
use octoisp_shared::{Command, CommandResult, Message, Record};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// A connected pair: `cp` is the control plane's end, `agent` the agent's.
pub struct Pair {
    pub cp: quinn::Connection,
    pub agent: quinn::Connection,
    _endpoints: (quinn::Endpoint, quinn::Endpoint),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A QUIC connection over loopback with a throwaway self-signed certificate.
pub async fn pair() -> Pair {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let cert_der = rustls_pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key =
        rustls_pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).expect("key");
    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .expect("server tls");
    server_tls.alpn_protocols = vec![b"test".to_vec()];
    let server_cfg = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(server_tls).expect("quic server"),
    ));
    let server = quinn::Endpoint::server(
        server_cfg,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
    )
    .expect("server endpoint");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).expect("root");
    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_tls.alpn_protocols = vec![b"test".to_vec()];
    let mut client = quinn::Endpoint::client(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
        .expect("client endpoint");
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client_tls).expect("quic client"),
    )));
    let addr = server.local_addr().expect("addr");
    let accept = async {
        let incoming = server.accept().await.expect("incoming");
        incoming.await.expect("server handshake")
    };
    let connect = async {
        client
            .connect(addr, "localhost")
            .expect("connect")
            .await
            .expect("client handshake")
    };
    let (cp, agent) = tokio::join!(accept, connect);
    Pair {
        cp,
        agent,
        _endpoints: (server, client),
    }
}

/// A local configuration whose state lives in `dir`, with no metrics endpoint.
pub fn local_config(dir: &Path) -> Config {
    let text = format!(
        "state_dir = {:?}\n[metrics]\n[outbox]\nsynchronous = \"normal\"\n",
        dir.display().to_string()
    );
    let mut cfg = Config::from_toml("test.toml", &text, Vec::new()).expect("config");
    cfg.metrics.listen = None;
    cfg
}

/// An agent: outbox, runtime, executor, and the shutdown signal and tracker of its tasks.
pub struct Agent {
    pub outbox: Outbox,
    pub runtime: Arc<Runtime>,
    pub exec: Executor,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

/// Opens the outbox of `cfg`.
pub fn open_outbox(cfg: &Config) -> Outbox {
    Outbox::open(OutboxConfig {
        synchronous: Synchronous::Normal,
        ..OutboxConfig::new(cfg.outbox_path())
    })
    .expect("outbox")
}

impl Agent {
    /// Starts an agent on `cfg` (re-applying a persisted central configuration, reporting interrupted
    /// commands) with `commands` limits.
    pub async fn start(cfg: &Config, commands: CommandsSection) -> Agent {
        let outbox = open_outbox(cfg);
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let runtime = Runtime::start(
            cfg.clone(),
            outbox.clone(),
            tracker.clone(),
            shutdown.clone(),
        )
        .await
        .expect("runtime");
        let exec = Executor::start(
            &commands,
            outbox.clone(),
            Some(runtime.clone()),
            tracker.clone(),
            shutdown.clone(),
        )
        .await
        .expect("executor");
        Agent {
            outbox,
            runtime,
            exec,
            shutdown,
            tracker,
        }
    }

    /// Serves command streams of `conn` in the background (what the uplink does).
    pub fn serve(&self, conn: quinn::Connection) {
        let exec = self.exec.clone();
        self.tracker
            .spawn(async move { exec.accept_streams(conn).await });
    }

    /// Stops every task and releases the outbox file.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(30), self.tracker.wait())
            .await
            .expect("agent tasks stop");
        drop(self.exec);
        drop(self.runtime);
        drop(self.outbox);
    }
}

/// A command with `deadline_ms` one minute from now.
pub fn command(name: &str, args: serde_json::Value) -> Command {
    Command {
        id: Uuid::now_v7(),
        deadline_ms: now_ms() + 60_000,
        name: name.into(),
        args_json: args.to_string(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    octoisp_agent::commands::now_ms()
}

/// What the control plane saw on one command stream.
#[derive(Debug)]
pub struct Seen {
    /// Progress payloads, in order, parsed.
    pub frames: Vec<serde_json::Value>,
    /// The seqs of the frames.
    pub seqs: Vec<u32>,
    /// How the stream ended: `Ok` finished cleanly, `Err` reset or broken.
    pub end: Result<(), String>,
}

impl Seen {
    /// The `state` of frame 0.
    pub fn state(&self) -> &str {
        self.frames
            .first()
            .and_then(|f| f.get("state"))
            .and_then(|s| s.as_str())
            .unwrap_or("(none)")
    }
}

/// Opens a stream, writes the raw `bytes`, finishes, and reads every frame until the agent finishes or resets.
pub async fn send_raw(cp: &quinn::Connection, bytes: &[u8]) -> Seen {
    let (mut send, mut recv) = cp.open_bi().await.expect("open_bi");
    send.write_all(bytes).await.expect("write");
    let _ = send.finish();
    let mut frames = Vec::new();
    let mut seqs = Vec::new();
    let limits = Limits {
        max_frame_bytes: 1 << 20,
        max_decompressed_bytes: 4 << 20,
    };
    let end = loop {
        let mut head = [0u8; frame::HEADER_LEN];
        match recv.read_exact(&mut head).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => break Ok(()),
            Err(e) => break Err(e.to_string()),
        }
        let header = frame::FrameHeader::parse(&head, &limits).expect("header");
        let mut payload = vec![0u8; header.len as usize];
        if let Err(e) = recv.read_exact(&mut payload).await {
            break Err(e.to_string());
        }
        match frame::decode_payload(&header, &payload, &limits).expect("frame") {
            Message::CommandProgress(p) => {
                seqs.push(p.seq);
                frames.push(serde_json::from_str(&p.payload_json).expect("progress is JSON"));
            }
            other => panic!("unexpected message on a command stream: {other:?}"),
        }
    };
    Seen { frames, seqs, end }
}

/// Sends `cmd` on a new stream (the way the control plane does) and reads the answer.
pub async fn send(cp: &quinn::Connection, cmd: &Command) -> Seen {
    let bytes = frame::encode(&Message::Command(cmd.clone()), Compression::None).expect("encode");
    tokio::time::timeout(Duration::from_secs(120), send_raw(cp, &bytes))
        .await
        .expect("the command stream ends")
}

/// Reads what the outbox would send upstream (acking it), accumulating into `seen`.
#[derive(Debug, Default)]
pub struct Upstream {
    /// Command results, in order.
    pub results: Vec<CommandResult>,
    /// Series id -> device key.
    pub devices: HashMap<u64, String>,
    /// Samples per device key.
    pub samples: HashMap<String, usize>,
}

impl Upstream {
    /// Forms and acks every batch, adding its content.
    pub fn drain(&mut self, outbox: &Outbox) {
        let limits = Limits::default();
        let mut take = |frame_bytes: &[u8]| {
            let Ok((Message::Batch(b), _)) = frame::decode(frame_bytes, &limits) else {
                panic!("not a batch");
            };
            for s in &b.series {
                self.devices.insert(s.id, s.device_key.clone());
            }
            for s in b.samples.decode().expect("samples") {
                let dev = self.devices.get(&s.series).cloned().unwrap_or_default();
                *self.samples.entry(dev).or_default() += 1;
            }
            for r in b.records {
                if let Record::CommandResult(c) = r {
                    self.results.push(c);
                }
            }
        };
        for p in outbox.pending_batches().expect("pending") {
            take(&p.frame);
            outbox.ack(p.seq).expect("ack");
        }
        while let Some(p) = outbox.next_batch().expect("next_batch") {
            take(&p.frame);
            outbox.ack(p.seq).expect("ack");
        }
    }

    /// The results of command `id`.
    pub fn of(&self, id: Uuid) -> Vec<&CommandResult> {
        self.results.iter().filter(|r| r.command_id == id).collect()
    }

    /// Samples seen so far for `device`.
    pub fn count(&self, device: &str) -> usize {
        self.samples.get(device).copied().unwrap_or(0)
    }
}
