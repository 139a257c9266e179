//! Test support for the ACS: an ACS on 127.0.0.1 port 0 over a temporary store, the simulated CPE ([`cpe`]),
//! and a reader of the real data-model dumps in `tests/data/cpe-models/`.

#![allow(dead_code)]

pub mod cpe;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use octoisp_agent::acs::session::{Acs, AcsOptions};
use octoisp_agent::acs::store::AcsStore;
use octoisp_agent::outbox::{Outbox, OutboxConfig, Synchronous};
use tokio_util::sync::CancellationToken;

/// A running ACS.
pub struct TestAcs {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its shared state (store, stats).
    pub acs: Arc<Acs>,
    /// Its outbox, when it has one.
    pub outbox: Option<Outbox>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for TestAcs {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts an ACS with `opts` and an outbox, on 127.0.0.1:0.
pub async fn start(opts: AcsOptions) -> TestAcs {
    start_with(opts, 1000).await
}

/// Starts an ACS with a connection limit.
pub async fn start_with(opts: AcsOptions, max_connections: usize) -> TestAcs {
    let dir = tempfile::tempdir().unwrap();
    let store = AcsStore::open(&dir.path().join("acs.db")).unwrap();
    let mut ocfg = OutboxConfig::new(dir.path().join("outbox.db"));
    ocfg.synchronous = Synchronous::Normal;
    let outbox = Outbox::open(ocfg).unwrap();
    let acs = Arc::new(Acs::new(opts, store, Some(outbox.clone())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(octoisp_agent::acs::serve(
        listener,
        acs.clone(),
        max_connections,
        shutdown.clone(),
    ));
    TestAcs {
        addr,
        acs,
        outbox: Some(outbox),
        shutdown,
        _dir: dir,
    }
}

/// Directory of the CSV dumps copied from `shared/data/cpe-models`.
pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/cpe-models")
}

/// One row of a dump.
#[derive(Debug, Clone)]
pub struct ModelParam {
    /// Name.
    pub name: String,
    /// An object (no value).
    pub object: bool,
    /// Writable.
    pub writable: bool,
    /// Value.
    pub value: String,
    /// xsd type.
    pub xsd_type: String,
}

/// Reads a GenieACS CSV export (quoted fields may hold commas, quotes and newlines).
pub fn load_model(path: &Path) -> Vec<ModelParam> {
    let text = std::fs::read_to_string(path).unwrap();
    let rows = parse_csv(&text);
    let header = &rows[0];
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("{}: no column {name}", path.display()))
    };
    let (p, o, w, v, t) = (
        col("Parameter"),
        col("Object"),
        col("Writable"),
        col("Value"),
        col("Value type"),
    );
    rows[1..]
        .iter()
        .filter(|r| r.len() > t)
        .map(|r| ModelParam {
            name: r[p].clone(),
            object: r[o] == "true",
            writable: r[w] == "true",
            value: r[v].clone(),
            xsd_type: if r[t].is_empty() {
                "xsd:string".into()
            } else {
                r[t].clone()
            },
        })
        .collect()
}

fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// The parameter tree of a dump, for a simulated CPE (objects left out).
pub fn model_tree(params: &[ModelParam]) -> BTreeMap<String, (String, String, bool)> {
    params
        .iter()
        .filter(|p| !p.object && !p.name.starts_with("DeviceID."))
        .map(|p| {
            (
                p.name.clone(),
                (p.value.clone(), p.xsd_type.clone(), p.writable),
            )
        })
        .collect()
}
