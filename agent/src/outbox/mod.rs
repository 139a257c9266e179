//! The agent's durable outbox: everything the agent produces is committed here before any network I/O, and a
//! batch leaves it only when the control plane acknowledged it.
//!
//! # Data flow
//!
//! ```text
//! producers ──append_samples / append_records──▶ bounded channel ──▶ writer thread ──▶ `chunks`
//!                                                  (backpressure)      (group commit)       │
//! uplink ◀── PendingBatch (frame) ◀── next_batch: oldest chunks ──▶ one `batches` row ◀─────┘
//!   │  Ack ──▶ ack(seq): row deleted, its series definitions confirmed
//!   │  Nack::UnknownSeries ──▶ reform_with_series(seq, ids): same seq and content, with definitions
//!   └  Nack::Malformed ──▶ abandon(seq, reason): row moved to `dead_letters`, counted, reported
//! ```
//!
//! # Layout
//!
//! One SQLite file (`OutboxConfig::path`) in WAL mode with `locking_mode=EXCLUSIVE`: one connection, owned by
//! this process (a second agent on the same file fails to open it with "database is locked"), and no `-shm` file.
//! `application_id` is `0x4F434F42` ("OCOB"): a foreign database is never adopted. `user_version` is the schema
//! version (1); a file from a newer agent is refused. Tables:
//!
//! | table | one row per | columns |
//! | --- | --- | --- |
//! | `meta` | counter | `next_seq` (next batch seq, from 1), `samples_dropped_total`, `records_refused_total`, `records_dead_total` |
//! | `series` | series definition | `id` (agent-local, from 1), `device_key`, `metric`, `labels` (postcard, sorted), `kind` (0 gauge, 1 counter), `confirmed` |
//! | `chunks` | append (or part of a large one) | `id` (AUTOINCREMENT: commit order, never reused), `kind` (0 samples: postcard [`octoisp_shared::SampleBlock`]; 1 records, 2 the waiting drop report: postcard `Vec<Record>`), `created_ms`, `n_samples`, `n_records`, `bytes`, `data` |
//! | `batches` | formed, unacknowledged batch | `seq`, `created_ms`, `settled_below`, `n_samples`, `n_records`, `frame` (the encoded `Message::Batch` frame, sent as is) |
//! | `batch_series` | definition carried by a batch | `seq` → `batches` (cascade), `series_id` → `series` |
//! | `state` | producer state | `key`, `value`: written in the transaction of an append ([`Outbox::append_samples_with_state`], [`Outbox::append_records_with_state`]) or alone ([`Outbox::claim_state`]); the command ledger keeps `cmd/<id>` entries here (`crate::commands::ledger`) |
//! | `dead_letters` | chunk or batch given up on | `origin` (`chunk`/`batch`), `origin_id`, `reason`, counts, the original `data` |
//!
//! # Invariants
//!
//! - **A chunk is in exactly one place.** Forming a batch inserts the `batches` row and deletes its chunks in one
//!   transaction; a dead-lettered row is inserted into `dead_letters` and deleted in one transaction.
//! - **`append_*` returns `Ok` only after the transaction holding its chunks committed** (durable on disk with
//!   [`Synchronous::Full`], durable against a process crash with [`Synchronous::Normal`]).
//! - **Seqs are never reused**: `meta.next_seq` advances in the transaction that forms the batch. A batch keeps its
//!   seq and content for life; re-forming only adds series definitions (and may raise `settled_below`).
//! - **`settled_below`** of a batch is the smallest seq in `batches` when it was (re-)formed, itself included:
//!   every smaller seq was acked or abandoned.
//! - **A series definition is committed no later than the first chunk referencing it**: [`Outbox::series_id`]
//!   hands out ids from memory and queues the definition, which the writer inserts at the start of its next
//!   transaction (before the chunks of the appends it received). Appends of samples with an id never handed out
//!   are refused ([`OutboxError::UnknownSeries`]).
//! - **A batch carries the definitions of every series it references that is not `confirmed`**; an ack confirms
//!   the definitions the batch carried (`batch_series`); `Nack::UnknownSeries` unconfirms them.
//! - **Loss is never silent.** The soft cap (`max_bytes`, counted over chunks and batch frames) deletes only the
//!   oldest *sample-only* chunks, in the transaction of the append that crossed it. Above `hard_ceiling_bytes`
//!   (counted over what the cap cannot free: record chunks and batches) new samples are dropped and new records
//!   refused with [`OutboxError::Full`]. Abandoned batches and undecodable rows go to `dead_letters`. Every such
//!   loss is added, in the same transaction, to the persisted totals and to the waiting `Record::DropReport` chunk
//!   (kind 2; one at most, updated in place until a batch takes it, so reports cannot pile up while the uplink is
//!   down; it is written even above the ceiling, being one small chunk). Record chunks and formed batches are never dropped. The in-memory byte counts are loaded from SQL at
//!   open and changed only after a commit.
//!
//! # Recovery
//!
//! Nothing is replayed: every state change is one SQLite transaction, so after a crash (SIGKILL, power loss with
//! `Full`) SQLite's WAL recovery leaves exactly the committed transactions. On open the outbox re-reads the byte
//! counts and the largest series id; formed batches come back from [`Outbox::pending_batches`] with the same seq and
//! the same bytes (the uplink sends them again; ingest is idempotent on `(agent, seq)`), and unbatched chunks are
//! batched by [`Outbox::next_batch`] as usual. A chunk whose content fails to decode is moved to `dead_letters` when
//! batch forming reaches it (logged, counted, reported), so one bad row never wedges the outbox; a stored batch that
//! fails to decode when it must be re-formed is moved there too. A file that is not a database or is damaged fails
//! to open with [`OutboxError::Corrupt`], which names the file and says to move it aside.
//!
//! # Concurrency and cost
//!
//! [`Outbox`] is a cheap handle (two `Arc`s), `Clone + Send + Sync`. One writer thread commits appends: it takes
//! everything queued (up to 1024 appends) into one transaction, so under load one fsync serves many producers, and
//! producers wait on a bounded channel ([`QUEUE_CAPACITY`]) when it falls behind. The other operations run on the
//! caller's thread, holding the same connection's mutex for one short transaction; [`Outbox::next_batch`] decodes,
//! re-encodes and zstd-compresses up to `batch_max_samples` samples while holding it, so call it from
//! `spawn_blocking`. Chunks are encoded (postcard of a `SampleBlock`) on the producer's side, before queueing.
//! Lock order: the series registry before the store, never the reverse.

mod batch;
mod chunk;
mod config;
mod drops;
mod error;
mod schema;
mod series;
mod store;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use octoisp_shared::{MetricKind, Record, Sample};
use tokio::sync::{mpsc, oneshot};

pub use config::{OutboxConfig, Synchronous};
pub use error::OutboxError;
pub use store::DeadLetter;

use chunk::ChunkKind;
use series::{SeriesKey, SeriesRegistry};
use store::Store;
use writer::Request;

/// Where the writer's answer to one append arrives.
type ReplyRx = oneshot::Receiver<Result<bool, OutboxError>>;

/// Appends that may wait for the writer thread before producers are held back (backpressure).
pub const QUEUE_CAPACITY: usize = 256;

/// A formed batch waiting for its ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingBatch {
    /// Its sequence number (never reused).
    pub seq: u64,
    /// The encoded `Message::Batch` frame, ready to write to a stream.
    pub frame: Vec<u8>,
    /// Samples in it.
    pub samples: u64,
    /// Records in it.
    pub records: u64,
}

/// What the outbox holds and what it has lost, for heartbeats and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct OutboxStats {
    /// Unbatched chunks.
    pub chunks: u64,
    /// Samples waiting, in chunks and in pending batches.
    pub samples: u64,
    /// Records waiting, in chunks and in pending batches.
    pub records: u64,
    /// Content held (chunks plus batch frames), the figure the disk cap applies to.
    pub bytes: u64,
    /// Of which sample-only chunks (what the cap may drop).
    pub sample_bytes: u64,
    /// Of which record chunks.
    pub record_bytes: u64,
    /// Of which pending batch frames.
    pub batch_bytes: u64,
    /// Creation time of the oldest content waiting, milliseconds since the Unix epoch.
    pub oldest_ms: Option<i64>,
    /// Formed batches waiting for an ack.
    pub batches_pending: u64,
    /// Samples lost since the outbox was created (disk cap, hard ceiling, dead letters).
    pub samples_dropped_total: u64,
    /// Records refused at the hard ceiling since the outbox was created.
    pub records_refused_total: u64,
    /// Records moved to dead letters since the outbox was created.
    pub records_dead_total: u64,
    /// Rows in the dead-letter table.
    pub dead_letters: u64,
}

/// Handle on the outbox. Cheap to clone; the writer thread stops when the last clone is dropped (after finishing
/// what was queued).
#[derive(Debug, Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
    writer: Arc<WriterHandle>,
}

/// State shared by the handles and the writer thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) path: PathBuf,
    cfg: OutboxConfig,
    store: Mutex<Store>,
    series: Mutex<SeriesRegistry>,
    /// Every series id below this one was handed out (mirror of the registry's counter, read without locking).
    next_series_id: AtomicU64,
}

impl Shared {
    /// Locks the store. A panic while it was held cannot leave it inconsistent (transactions roll back on drop and
    /// the accounting changes only after commit), so a poisoned lock is taken over.
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the series registry (before the store, if both are needed).
    pub(crate) fn series_registry(&self) -> MutexGuard<'_, SeriesRegistry> {
        self.series.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Owns the writer thread: dropping it closes the channel and waits for the thread to finish.
#[derive(Debug)]
struct WriterHandle {
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "The outbox writer thread panicked.");
        }
    }
}

impl Outbox {
    /// Opens the outbox at `cfg.path` (creating the file and its schema when missing) and starts its writer thread.
    pub fn open(cfg: OutboxConfig) -> Result<Outbox, OutboxError> {
        cfg.validate()?;
        let store = Store::open(&cfg)?;
        let next_id = series::next_id(&store.conn, &cfg.path)?;
        let acct = store.acct;
        let shared = Arc::new(Shared {
            path: cfg.path.clone(),
            cfg: cfg.clone(),
            store: Mutex::new(store),
            series: Mutex::new(SeriesRegistry::new(next_id)),
            next_series_id: AtomicU64::new(next_id),
        });
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer::run(for_thread, rx))
            .map_err(|source| OutboxError::Spawn {
                path: cfg.path.clone(),
                source,
            })?;
        tracing::info!(
            path = %cfg.path.display(),
            bytes = acct.total(),
            batch_bytes = acct.batch_bytes,
            series = next_id - 1,
            "Opened the outbox."
        );
        Ok(Outbox {
            shared,
            writer: Arc::new(WriterHandle {
                tx: Some(tx),
                thread: Some(thread),
                path: cfg.path,
            }),
        })
    }

    /// The outbox file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The id of a series, creating it when new. Idempotent: the same device, metric and labels (in any order) give
    /// the same id for the life of the outbox file. Never waits for a commit (see the module documentation); a cache
    /// miss costs one indexed lookup. Fails when the series exists with another kind.
    pub fn series_id(
        &self,
        device_key: &str,
        metric: &str,
        labels: &[(String, String)],
        kind: MetricKind,
    ) -> Result<u64, OutboxError> {
        let key = SeriesKey::new(device_key, metric, labels);
        let mut registry = self.shared.series_registry();
        let found = match registry.cached(&key) {
            Some(hit) => Some(hit),
            None => {
                let found = {
                    let store = self.shared.store();
                    series::lookup(&store.conn, &store.path, &key)?
                };
                if let Some((id, existing)) = found {
                    registry.remember(key.clone(), id, existing);
                }
                found
            }
        };
        match found {
            Some((id, existing)) if existing == kind => Ok(id),
            Some((_, existing)) => Err(OutboxError::SeriesKindConflict {
                device_key: key.device_key,
                metric: key.metric,
                labels: key.labels,
                existing,
                requested: kind,
            }),
            None => {
                let (id, next) = registry.allocate(key, kind);
                self.shared.next_series_id.store(next, Ordering::Release);
                Ok(id)
            }
        }
    }

    /// Appends samples; resolves once they are committed. Waits while the writer's queue is full. Above the hard
    /// ceiling the samples are dropped, counted and reported, and this still returns `Ok`.
    pub async fn append_samples(&self, samples: Vec<Sample>) -> Result<(), OutboxError> {
        let Some((req, rx)) = self.sample_request(&samples)? else {
            return Ok(());
        };
        self.sender()?.send(req).await.map_err(|_| self.closed())?;
        rx.await.map_err(|_| self.closed())?.map(drop)
    }

    /// Appends records; resolves once they are committed. Above the hard ceiling they are refused with
    /// [`OutboxError::Full`] (and counted and reported).
    pub async fn append_records(&self, records: Vec<Record>) -> Result<(), OutboxError> {
        let Some((req, rx)) = self.record_request(&records)? else {
            return Ok(());
        };
        self.sender()?.send(req).await.map_err(|_| self.closed())?;
        rx.await.map_err(|_| self.closed())?.map(drop)
    }

    /// Like [`Outbox::append_samples`], and stores `value` under `key` in the same transaction, so that a producer
    /// can resume after a crash exactly where its committed samples end (read it back with [`Outbox::state`]).
    /// The state is stored even when the samples are dropped at the hard ceiling (they are counted then).
    pub async fn append_samples_with_state(
        &self,
        samples: Vec<Sample>,
        key: &str,
        value: &str,
    ) -> Result<(), OutboxError> {
        let (mut req, rx) = self.build_request(&samples)?;
        req.state = Some((key.to_owned(), value.to_owned()));
        self.sender()?.send(req).await.map_err(|_| self.closed())?;
        rx.await.map_err(|_| self.closed())?.map(drop)
    }

    /// The committed producer state stored under `key` by [`Outbox::append_samples_with_state`].
    pub fn state(&self, key: &str) -> Result<Option<String>, OutboxError> {
        self.shared.store().state(key)
    }

    /// Like [`Outbox::append_records`], and stores `value` under `key` in the same transaction (the command
    /// ledger writes a command's result and its `finished` entry together). When the records are refused at the
    /// hard ceiling, the state is not written either.
    pub async fn append_records_with_state(
        &self,
        records: Vec<Record>,
        key: &str,
        value: &str,
    ) -> Result<(), OutboxError> {
        let Some((mut req, rx)) = self.record_request(&records)? else {
            return Ok(());
        };
        req.state = Some((key.to_owned(), value.to_owned()));
        self.sender()?.send(req).await.map_err(|_| self.closed())?;
        rx.await.map_err(|_| self.closed())?.map(drop)
    }

    /// Stores `value` under `key` only when `key` holds nothing yet, committed before it returns; `true` when it
    /// was stored, `false` when the key already existed (the at-most-once check of the command ledger). The
    /// claim goes through the writer thread, in one transaction with the claims and appends waiting beside it.
    pub async fn claim_state(&self, key: &str, value: &str) -> Result<bool, OutboxError> {
        let (reply, rx) = oneshot::channel();
        let req = Request {
            chunks: Vec::new(),
            records: true,
            state: None,
            claim: Some((key.to_owned(), value.to_owned())),
            reply,
        };
        self.sender()?.send(req).await.map_err(|_| self.closed())?;
        rx.await.map_err(|_| self.closed())?
    }

    /// Stores `value` under `key`, replacing what was there, committed before it returns. Blocking.
    pub fn put_state(&self, key: &str, value: &str) -> Result<(), OutboxError> {
        self.shared.store().put_state(key, value)
    }

    /// Every state entry whose key starts with `prefix`, in key order. Blocking.
    pub fn states_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, OutboxError> {
        self.shared.store().states_with_prefix(prefix)
    }

    /// Deletes the state entries `keys` in one transaction. Blocking.
    pub fn delete_states(&self, keys: &[String]) -> Result<(), OutboxError> {
        self.shared.store().delete_states(keys)
    }

    /// [`Outbox::append_samples`] for threads outside an async runtime (panics inside one, like
    /// `tokio::sync::mpsc::Sender::blocking_send`).
    pub fn append_samples_blocking(&self, samples: Vec<Sample>) -> Result<(), OutboxError> {
        let Some((req, rx)) = self.sample_request(&samples)? else {
            return Ok(());
        };
        self.sender()?
            .blocking_send(req)
            .map_err(|_| self.closed())?;
        rx.blocking_recv().map_err(|_| self.closed())?.map(drop)
    }

    /// [`Outbox::append_records`] for threads outside an async runtime.
    pub fn append_records_blocking(&self, records: Vec<Record>) -> Result<(), OutboxError> {
        let Some((req, rx)) = self.record_request(&records)? else {
            return Ok(());
        };
        self.sender()?
            .blocking_send(req)
            .map_err(|_| self.closed())?;
        rx.blocking_recv().map_err(|_| self.closed())?.map(drop)
    }

    /// The formed batches that are not acknowledged yet (after a restart: those formed before it), oldest first.
    pub fn pending_batches(&self) -> Result<Vec<PendingBatch>, OutboxError> {
        self.shared.store().pending_batches()
    }

    /// Forms a new batch from the oldest chunks (at most `batch_max_samples` samples and about `batch_max_bytes`,
    /// at least one chunk); `None` when no chunk waits. Blocking: call it from `spawn_blocking`.
    pub fn next_batch(&self) -> Result<Option<PendingBatch>, OutboxError> {
        self.shared.store().form_batch()
    }

    /// The control plane stored batch `seq`: delete it and mark the series definitions it carried as confirmed.
    /// Acking a seq that is not pending (a duplicate ack) does nothing.
    pub fn ack(&self, seq: u64) -> Result<(), OutboxError> {
        self.shared.store().ack(seq)
    }

    /// After `Nack::UnknownSeries(unknown)`: marks those series unconfirmed and re-encodes batch `seq` with the same
    /// seq and content plus the definitions of every unconfirmed series it references. Fails with
    /// [`OutboxError::SeriesNotFound`] when the outbox has no definition of one of them (abandon the batch then).
    pub fn reform_with_series(
        &self,
        seq: u64,
        unknown: &[u64],
    ) -> Result<PendingBatch, OutboxError> {
        self.shared.store().reform_with_series(seq, unknown)
    }

    /// After `Nack::Malformed`: moves batch `seq` to the dead letters, logs it, counts its content as lost and
    /// reports it in the next `DropReport`.
    pub fn abandon(&self, seq: u64, reason: &str) -> Result<(), OutboxError> {
        self.shared.store().abandon(seq, reason)
    }

    /// Counts, sizes and loss totals.
    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        self.shared.store().stats()
    }

    /// The dead letters, oldest first (without their content).
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, OutboxError> {
        self.shared.store().dead_letters()
    }

    fn sample_request(
        &self,
        samples: &[Sample],
    ) -> Result<Option<(Request, ReplyRx)>, OutboxError> {
        if samples.is_empty() {
            return Ok(None);
        }
        self.build_request(samples).map(Some)
    }

    fn record_request(
        &self,
        records: &[Record],
    ) -> Result<Option<(Request, ReplyRx)>, OutboxError> {
        if records.is_empty() {
            return Ok(None);
        }
        let chunks =
            chunk::record_chunks(records, ChunkKind::Records, self.shared.cfg.batch_max_bytes)?;
        let (reply, rx) = oneshot::channel();
        let req = Request {
            chunks,
            records: true,
            state: None,
            claim: None,
            reply,
        };
        Ok(Some((req, rx)))
    }

    /// Checks the series ids and encodes the chunks of a sample append (none when `samples` is empty).
    fn build_request(&self, samples: &[Sample]) -> Result<(Request, ReplyRx), OutboxError> {
        let next = self.shared.next_series_id.load(Ordering::Acquire);
        let mut bad: Vec<u64> = samples
            .iter()
            .map(|s| s.series)
            .filter(|&id| id == 0 || id >= next)
            .collect();
        if !bad.is_empty() {
            bad.sort_unstable();
            bad.dedup();
            bad.truncate(16);
            return Err(OutboxError::UnknownSeries { ids: bad });
        }
        let chunks = chunk::sample_chunks(samples, self.shared.cfg.batch_max_samples)?;
        let (reply, rx) = oneshot::channel();
        let req = Request {
            chunks,
            records: false,
            state: None,
            claim: None,
            reply,
        };
        Ok((req, rx))
    }

    fn sender(&self) -> Result<&mpsc::Sender<Request>, OutboxError> {
        self.writer.tx.as_ref().ok_or_else(|| self.closed())
    }

    fn closed(&self) -> OutboxError {
        OutboxError::Closed {
            path: self.shared.path.clone(),
        }
    }
}
