//! Series definitions: agent-local ids for `(device_key, metric, labels)`, cached in memory, persisted in the
//! `series` table, and whether the control plane has confirmed each one.
//!
//! [`crate::outbox::Outbox::series_id`] never waits for a commit: a new id is taken from an in-memory counter and
//! its definition queued as *pending*; the writer thread inserts every pending definition at the start of its next
//! transaction. Since a producer can only append samples for an id it already holds, the definition is always
//! committed in the same transaction as, or before, the first chunk that references it. An id that was handed out
//! but never committed (the process died first) may be handed out again after a restart, to any key: nothing on
//! disk or upstream references it.

use std::collections::HashMap;
use std::path::Path;

use octoisp_shared::{MetricKind, SeriesDef};
use rusqlite::{Connection, OptionalExtension, params};

use crate::outbox::error::{OutboxError, SqlContext};

/// Identity of a series: labels are sorted, so their order does not matter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SeriesKey {
    pub(crate) device_key: String,
    pub(crate) metric: String,
    pub(crate) labels: Vec<(String, String)>,
}

impl SeriesKey {
    /// Builds the key, sorting the labels.
    pub(crate) fn new(device_key: &str, metric: &str, labels: &[(String, String)]) -> SeriesKey {
        let mut labels = labels.to_vec();
        labels.sort();
        SeriesKey {
            device_key: device_key.to_owned(),
            metric: metric.to_owned(),
            labels,
        }
    }

    /// The labels as stored in `series.labels` (postcard, deterministic).
    fn labels_blob(&self) -> Result<Vec<u8>, OutboxError> {
        postcard::to_stdvec(&self.labels).map_err(|e| OutboxError::Encode {
            what: "series labels",
            message: e.to_string(),
        })
    }
}

/// In-memory side of the series table. Lock order: this registry before the store, never the other way.
#[derive(Debug)]
pub(crate) struct SeriesRegistry {
    cache: HashMap<SeriesKey, (u64, MetricKind)>,
    pending: Vec<SeriesDef>,
    next_id: u64,
}

impl SeriesRegistry {
    /// A registry whose next new id is `next_id`.
    pub(crate) fn new(next_id: u64) -> SeriesRegistry {
        SeriesRegistry {
            cache: HashMap::new(),
            pending: Vec::new(),
            next_id,
        }
    }

    /// Looks the key up in the cache.
    pub(crate) fn cached(&self, key: &SeriesKey) -> Option<(u64, MetricKind)> {
        self.cache.get(key).copied()
    }

    /// Remembers a series found on disk.
    pub(crate) fn remember(&mut self, key: SeriesKey, id: u64, kind: MetricKind) {
        self.cache.insert(key, (id, kind));
    }

    /// Assigns a new id and queues its definition for the next commit. Returns the id and the new next id.
    pub(crate) fn allocate(&mut self, key: SeriesKey, kind: MetricKind) -> (u64, u64) {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.push(SeriesDef {
            id,
            device_key: key.device_key.clone(),
            metric: key.metric.clone(),
            labels: key.labels.clone(),
            kind,
        });
        self.cache.insert(key, (id, kind));
        (id, self.next_id)
    }

    /// Takes the definitions to commit.
    pub(crate) fn take_pending(&mut self) -> Vec<SeriesDef> {
        std::mem::take(&mut self.pending)
    }

    /// Puts back definitions whose commit failed, ahead of newer ones.
    pub(crate) fn restore_pending(&mut self, mut defs: Vec<SeriesDef>) {
        defs.append(&mut self.pending);
        self.pending = defs;
    }
}

/// Finds a committed series by key.
pub(crate) fn lookup(
    conn: &Connection,
    path: &Path,
    key: &SeriesKey,
) -> Result<Option<(u64, MetricKind)>, OutboxError> {
    let labels = key.labels_blob()?;
    let row: Option<(i64, i64)> = conn
        .prepare_cached(
            "SELECT id, kind FROM series WHERE device_key = ?1 AND metric = ?2 AND labels = ?3",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![key.device_key, key.metric, labels], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .sql(path, "looking up a series")?;
    let Some((id, kind)) = row else {
        return Ok(None);
    };
    match kind_from_sql(kind) {
        Some(kind) => Ok(Some((id as u64, kind))),
        None => {
            // The row is damaged; its id stays taken. A definition for it cannot be sent (see `load`).
            tracing::error!(path = %path.display(), series = id, kind, "Series row has an unknown kind.");
            Err(OutboxError::CorruptRow {
                path: path.to_path_buf(),
                table: "series",
                id,
                detail: format!("unknown kind {kind}"),
            })
        }
    }
}

/// Inserts definitions (inside the caller's transaction).
pub(crate) fn insert(
    conn: &Connection,
    path: &Path,
    defs: &[SeriesDef],
) -> Result<(), OutboxError> {
    if defs.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO series (id, device_key, metric, labels, kind, confirmed) VALUES (?1, ?2, ?3, ?4, ?5, 0)",
        )
        .sql(path, "preparing series insert")?;
    for def in defs {
        let labels = postcard::to_stdvec(&def.labels).map_err(|e| OutboxError::Encode {
            what: "series labels",
            message: e.to_string(),
        })?;
        stmt.execute(params![
            def.id as i64,
            def.device_key,
            def.metric,
            labels,
            kind_to_sql(def.kind)
        ])
        .sql(path, "inserting a series")?;
    }
    Ok(())
}

/// The definition of series `id` if it exists, and whether it is confirmed.
pub(crate) fn load(
    conn: &Connection,
    path: &Path,
    id: u64,
) -> Result<Option<(SeriesDef, bool)>, OutboxError> {
    let row: Option<(String, String, Vec<u8>, i64, bool)> = conn
        .prepare_cached(
            "SELECT device_key, metric, labels, kind, confirmed FROM series WHERE id = ?1",
        )
        .and_then(|mut stmt| {
            stmt.query_row([id as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()
        })
        .sql(path, "reading a series")?;
    let Some((device_key, metric, labels, kind, confirmed)) = row else {
        return Ok(None);
    };
    let labels = match postcard::from_bytes::<Vec<(String, String)>>(&labels) {
        Ok(labels) => labels,
        Err(err) => {
            tracing::error!(path = %path.display(), series = id, error = %err, "Series row has undecodable labels.");
            return Ok(None);
        }
    };
    let Some(kind) = kind_from_sql(kind) else {
        tracing::error!(path = %path.display(), series = id, kind, "Series row has an unknown kind.");
        return Ok(None);
    };
    let def = SeriesDef {
        id,
        device_key,
        metric,
        labels,
        kind,
    };
    Ok(Some((def, confirmed)))
}

/// Sets `confirmed` on the given series.
pub(crate) fn set_confirmed(
    conn: &Connection,
    path: &Path,
    ids: &[u64],
    confirmed: bool,
) -> Result<(), OutboxError> {
    let mut stmt = conn
        .prepare_cached("UPDATE series SET confirmed = ?2 WHERE id = ?1")
        .sql(path, "preparing series update")?;
    for &id in ids {
        stmt.execute(params![id as i64, confirmed])
            .sql(path, "updating a series")?;
    }
    Ok(())
}

/// The next id to assign: one more than the largest committed.
pub(crate) fn next_id(conn: &Connection, path: &Path) -> Result<u64, OutboxError> {
    let max: i64 = conn
        .query_row("SELECT coalesce(max(id), 0) FROM series", [], |r| r.get(0))
        .sql(path, "reading the largest series id")?;
    Ok(max as u64 + 1)
}

fn kind_to_sql(kind: MetricKind) -> i64 {
    match kind {
        MetricKind::Gauge => 0,
        MetricKind::Counter => 1,
    }
}

fn kind_from_sql(v: i64) -> Option<MetricKind> {
    match v {
        0 => Some(MetricKind::Gauge),
        1 => Some(MetricKind::Counter),
        _ => None,
    }
}
