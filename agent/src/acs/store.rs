//! The ACS device store: devices, their parameter trees, tasks and applied templates, in a SQLite file of its
//! own (`<state_dir>/acs.db`), apart from the outbox.
//!
//! # Layout
//!
//! `application_id` is `0x4F434143` ("OCAC"), `user_version` the schema version (1). WAL mode with normal locking,
//! so the technician's CLI (`octoisp-agent acs ...`) can read devices and queue tasks while the daemon runs.
//!
//! | table | one row per | notes |
//! | --- | --- | --- |
//! | `devices` | CPE | id `OUI-ProductClass-SerialNumber`, identity, last contact, Connection Request URL and credentials |
//! | `params` | parameter of a device | `WITHOUT ROWID`, key (device, name); written only when the value changed |
//! | `tasks` | task | kind as JSON, state, attempts, next attempt time (see [`super::tasks`]) |
//! | `templates_applied` | (device, template) | the version applied, so that a template is applied once |
//!
//! # Invariants
//!
//! - An Inform is recorded in one transaction: device row and every reported parameter, and the answer says which
//!   parameters changed, so only changes go upstream.
//! - A task leaves `queued` only inside the transaction that records its outcome; a task whose session broke off
//!   stays `queued` and runs again in the next session.
//! - The only per-device state in memory is one fingerprint (a keyed 64-bit hash) of the parameters of each
//!   device's last stored Inform: an Inform whose parameters hash the same skips their upserts (nothing changed),
//!   its device row is still updated. The fingerprint is a sum of one hash per parameter: when a task writes
//!   another value for a stored parameter ([`Db::store_params`]), the old value's hash is swapped for the new one
//!   (had the parameter not been in the Inform, the fingerprint then matches no Inform and the next one is
//!   written in full). An entry is dropped on `0 BOOTSTRAP` and never kept for an Inform that names a parameter
//!   twice, and the whole map is dropped when a transaction it rode on did not commit, so a fingerprint never
//!   vouches for values that are not in the file. Parameters are written only by this process (the CLI reads
//!   them and queues tasks).
//!
//! # Access
//!
//! [`AcsStore`] is a cheap handle on one connection ([`Db`]) behind a mutex; its methods lock it for one call.
//! The ACS sessions reach it through [`super::writer`] instead: one thread that runs their store work in groups,
//! one transaction per group.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::cwmp::ParameterValue;
use super::tasks::{RetryPolicy, Task, TaskKind, TaskState};

const APPLICATION_ID: i64 = 0x4F43_4143;
const SCHEMA_VERSION: i64 = 1;

const SCHEMA_V1: &str = "
CREATE TABLE devices (
    id             TEXT PRIMARY KEY,
    oui            TEXT NOT NULL,
    product_class  TEXT NOT NULL,
    serial         TEXT NOT NULL,
    manufacturer   TEXT NOT NULL DEFAULT '',
    ip             TEXT NOT NULL DEFAULT '',
    software       TEXT NOT NULL DEFAULT '',
    tags           TEXT NOT NULL DEFAULT '',
    first_seen_ms  INTEGER NOT NULL,
    last_inform_ms INTEGER NOT NULL,
    last_boot_ms   INTEGER,
    conn_req_url   TEXT NOT NULL DEFAULT '',
    cr_username    TEXT,
    cr_password    TEXT,
    acs_username   TEXT,
    acs_password   TEXT
) WITHOUT ROWID;
CREATE INDEX devices_acs_username ON devices (acs_username) WHERE acs_username IS NOT NULL;

CREATE TABLE params (
    device     TEXT NOT NULL,
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    type       TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (device, name)
) WITHOUT ROWID;

CREATE TABLE tasks (
    id              TEXT PRIMARY KEY,
    device          TEXT NOT NULL,
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    created_ms      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX tasks_queue ON tasks (device, state, next_attempt_ms);

CREATE TABLE templates_applied (
    device   TEXT NOT NULL,
    template TEXT NOT NULL,
    version  INTEGER NOT NULL,
    applied_ms INTEGER NOT NULL,
    PRIMARY KEY (device, template)
) WITHOUT ROWID;
";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("ACS store {path}: {source}")]
    Sqlite {
        /// The file.
        path: String,
        /// The error.
        source: rusqlite::Error,
    },
    /// The file belongs to something else or to a newer agent.
    #[error("ACS store {path}: {reason}")]
    Foreign {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// No such device.
    #[error("no device {0:?} (see `octoisp-agent acs devices`)")]
    NoDevice(String),
    /// The store's writer thread failed the work or is gone (the transaction did not commit).
    #[error("ACS store {path}: {reason}")]
    Writer {
        /// The file.
        path: String,
        /// What happened.
        reason: String,
    },
}

/// Who a device is, as its Informs said.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct DeviceRow {
    /// `OUI-ProductClass-SerialNumber`.
    pub id: String,
    /// OUI.
    pub oui: String,
    /// Product class.
    pub product_class: String,
    /// Serial number.
    pub serial: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Address the last Inform came from.
    pub ip: String,
    /// Software version.
    pub software: String,
    /// Tags, comma-separated.
    pub tags: String,
    /// First Inform, ms since epoch.
    pub first_seen_ms: i64,
    /// Last Inform, ms since epoch.
    pub last_inform_ms: i64,
    /// Last BOOT or BOOTSTRAP, ms since epoch.
    pub last_boot_ms: Option<i64>,
    /// Connection Request URL the CPE reported.
    pub conn_req_url: String,
}

/// What recording an Inform changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InformOutcome {
    /// The device was not known before.
    pub new_device: bool,
    /// Parameters whose value changed (or are new).
    pub changed: Vec<ParameterValue>,
}

/// Identity fields of an Inform, for [`AcsStore::record_inform`].
#[derive(Debug, Clone, Default)]
pub struct InformRecord<'a> {
    /// Device id.
    pub id: &'a str,
    /// OUI.
    pub oui: &'a str,
    /// Product class.
    pub product_class: &'a str,
    /// Serial.
    pub serial: &'a str,
    /// Manufacturer.
    pub manufacturer: &'a str,
    /// Peer address.
    pub ip: &'a str,
    /// A BOOT or BOOTSTRAP event is in the Inform.
    pub boot: bool,
    /// A BOOTSTRAP event: the cached tree is dropped first.
    pub bootstrap: bool,
    /// Time, ms since epoch.
    pub now_ms: i64,
    /// Reported parameters.
    pub parameters: &'a [ParameterValue],
}

/// A cheap, cloneable handle on the store. Calls block: run them in `spawn_blocking` from async code, or through
/// the ACS's writer thread ([`super::writer::StoreWriter`]).
#[derive(Debug, Clone)]
pub struct AcsStore {
    db: Arc<Mutex<Db>>,
}

/// The store's connection and the fingerprints of the devices' last Informs: what [`AcsStore::lock`] and the
/// writer thread hand out. Its methods are those of [`AcsStore`], without the locking.
#[derive(Debug)]
pub struct Db {
    conn: Connection,
    path: String,
    /// Device id → fingerprint of the parameters of its last stored Inform (see the module doc).
    informed: HashMap<String, u64>,
    hasher: RandomState,
}

impl AcsStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<AcsStore, StoreError> {
        let name = path.display().to_string();
        let conn = Connection::open(path).map_err(|source| StoreError::Sqlite {
            path: name.clone(),
            source,
        })?;
        Self::init(conn, name)
    }

    /// A store in memory, for tests.
    pub fn open_in_memory() -> Result<AcsStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Sqlite {
            path: ":memory:".into(),
            source,
        })?;
        Self::init(conn, ":memory:".into())
    }

    fn init(conn: Connection, path: String) -> Result<AcsStore, StoreError> {
        let sq = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        conn.busy_timeout(Duration::from_secs(5)).map_err(sq)?;
        // Every statement of the hot paths stays prepared (the default cache of 16 is smaller than their number).
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sq)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sq)?;
        let app: i64 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(sq)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sq)?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(sq)?;
        if app == 0 && version == 0 && tables == 0 {
            conn.execute_batch(&format!(
                "BEGIN; {SCHEMA_V1} PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(sq)?;
        } else if app != APPLICATION_ID {
            return Err(StoreError::Foreign {
                path,
                reason: "not an OctoISP ACS database (move it aside)".into(),
            });
        } else if version > SCHEMA_VERSION {
            return Err(StoreError::Foreign {
                path,
                reason: format!("schema {version} is newer than this agent's {SCHEMA_VERSION}"),
            });
        }
        Ok(AcsStore {
            db: Arc::new(Mutex::new(Db {
                conn,
                path,
                informed: HashMap::new(),
                hasher: RandomState::new(),
            })),
        })
    }

    /// The connection, locked for the caller (for several calls in a row).
    pub fn lock(&self) -> MutexGuard<'_, Db> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back on drop).
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records an Inform: registers or updates the device and stores the reported parameters.
    pub fn record_inform(&self, r: &InformRecord<'_>) -> Result<InformOutcome, StoreError> {
        self.lock().record_inform(r)
    }

    /// Stores parameters read or written in a session; returns those that changed.
    pub fn store_params(
        &self,
        device: &str,
        values: &[ParameterValue],
        now_ms: i64,
    ) -> Result<Vec<ParameterValue>, StoreError> {
        self.lock().store_params(device, values, now_ms)
    }

    /// One device.
    pub fn device(&self, id: &str) -> Result<Option<DeviceRow>, StoreError> {
        self.lock().device(id)
    }

    /// Every device, by id.
    pub fn devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        self.lock().devices()
    }

    /// Number of devices.
    pub fn device_count(&self) -> Result<u64, StoreError> {
        self.lock().device_count()
    }

    /// Parameters of a device under `prefix` (all when empty), by name.
    pub fn params(&self, device: &str, prefix: &str) -> Result<Vec<ParameterValue>, StoreError> {
        self.lock().params(device, prefix)
    }

    /// Sets the tags of a device (comma-separated).
    pub fn set_tags(&self, device: &str, tags: &str) -> Result<(), StoreError> {
        self.lock().set_tags(device, tags)
    }

    /// Sets the per-device credentials: the CPE's towards the ACS (`acs`) and the ACS's towards the CPE's
    /// Connection Request URL (`conn_req`). `None` leaves a pair unchanged.
    pub fn set_credentials(
        &self,
        device: &str,
        acs: Option<(&str, &str)>,
        conn_req: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        self.lock().set_credentials(device, acs, conn_req)
    }

    /// The device and password of a per-device ACS user name, if one is set.
    pub fn acs_password(&self, username: &str) -> Result<Option<(String, String)>, StoreError> {
        self.lock().acs_password(username)
    }

    /// The per-device Connection Request credentials, if set.
    pub fn conn_req_credentials(
        &self,
        device: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        self.lock().conn_req_credentials(device)
    }

    /// Queues a task; returns its id.
    pub fn enqueue(
        &self,
        device: &str,
        kind: &TaskKind,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        self.lock().enqueue(device, kind, now_ms)
    }

    /// Queued tasks of a device that may run at `now_ms`, oldest first.
    pub fn due_tasks(&self, device: &str, now_ms: i64) -> Result<Vec<Task>, StoreError> {
        self.lock().due_tasks(device, now_ms)
    }

    /// Every task of a device (all devices when `None`), newest last.
    pub fn tasks(&self, device: Option<&str>) -> Result<Vec<Task>, StoreError> {
        self.lock().tasks(device)
    }

    /// One task.
    pub fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        self.lock().task(id)
    }

    /// Removes a task that is still queued (not yet sent to its device), so that it never runs. Returns whether
    /// it was removed (`false`: unknown, or already sent, done or failed).
    pub fn cancel_queued(&self, id: &str) -> Result<bool, StoreError> {
        self.lock().cancel_queued(id)
    }

    /// Sets a task's state (done, waiting).
    pub fn set_task_state(&self, id: &str, state: TaskState) -> Result<(), StoreError> {
        self.lock().set_task_state(id, state)
    }

    /// Records a fault: the task is retried later or, after the last attempt, failed. Returns the new state.
    pub fn task_fault(
        &self,
        id: &str,
        error: &str,
        now_ms: i64,
        policy: &RetryPolicy,
    ) -> Result<TaskState, StoreError> {
        self.lock().task_fault(id, error, now_ms, policy)
    }

    /// The version of `template` applied to `device`, if any.
    pub fn template_version(
        &self,
        device: &str,
        template: &str,
    ) -> Result<Option<i64>, StoreError> {
        self.lock().template_version(device, template)
    }

    /// Records that `template` at `version` was applied to `device`.
    pub fn mark_template(
        &self,
        device: &str,
        template: &str,
        version: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.lock().mark_template(device, template, version, now_ms)
    }
}

impl Db {
    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Runs one statement of the writer thread's transaction control (`BEGIN`, `SAVEPOINT`...), prepared once.
    pub(crate) fn control(&self, sql: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Drops every Inform fingerprint (a transaction they rode on did not commit).
    pub(crate) fn forget_informs(&mut self) {
        self.informed.clear();
    }

    /// Devices with an Inform fingerprint in memory.
    pub fn fingerprints(&self) -> usize {
        self.informed.len()
    }

    /// The fingerprint of a set of parameters: the wrapping sum of each parameter's keyed hash, so that a value
    /// written later for one of them ([`Db::store_params`]) can be swapped in without the others.
    fn fingerprint(&self, parameters: &[ParameterValue]) -> u64 {
        parameters.iter().fold(0u64, |fp, p| {
            fp.wrapping_add(param_hash(&self.hasher, &p.name, &p.value, &p.xsd_type))
        })
    }

    /// Records an Inform: registers or updates the device and stores the reported parameters.
    pub fn record_inform(&mut self, r: &InformRecord<'_>) -> Result<InformOutcome, StoreError> {
        let fp = self.fingerprint(r.parameters);
        let unchanged = !r.bootstrap && self.informed.get(r.id) == Some(&fp);
        // Dropped first: if anything below fails, no fingerprint vouches for this device.
        self.informed.remove(r.id);
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.savepoint().map_err(err)?;
        let exists = tx
            .prepare_cached(
                "UPDATE devices SET ip = ?2, manufacturer = ?3, last_inform_ms = ?4,
                 last_boot_ms = CASE WHEN ?5 THEN ?4 ELSE last_boot_ms END WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![r.id, r.ip, r.manufacturer, r.now_ms, r.boot]))
            .map_err(err)?
            > 0;
        if r.bootstrap {
            tx.prepare_cached("DELETE FROM params WHERE device = ?1")
                .and_then(|mut s| s.execute([r.id]))
                .map_err(err)?;
        }
        if !exists {
            tx.prepare_cached(
                "INSERT INTO devices (id, oui, product_class, serial, manufacturer, ip, first_seen_ms, last_inform_ms,
                 last_boot_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, CASE WHEN ?8 THEN ?7 END)",
            )
            .and_then(|mut s| {
                s.execute(params![r.id, r.oui, r.product_class, r.serial, r.manufacturer, r.ip, r.now_ms, r.boot])
            })
            .map_err(err)?;
        }
        // The same parameters as the last stored Inform: their upserts would change nothing.
        let changed = if unchanged && exists {
            Vec::new()
        } else {
            upsert_params(&tx, r.id, r.parameters, r.now_ms).map_err(err)?
        };
        for p in &changed {
            let column = if p.name.ends_with("DeviceInfo.SoftwareVersion") {
                "software"
            } else if p.name.ends_with("ManagementServer.ConnectionRequestURL") {
                "conn_req_url"
            } else {
                continue;
            };
            tx.prepare_cached(&format!("UPDATE devices SET {column} = ?2 WHERE id = ?1"))
                .and_then(|mut s| s.execute(params![r.id, p.value]))
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        // The sum does not see the order of the parameters: with a name reported twice, another order of the same
        // values would store another value, so such an Inform is always written in full.
        if unchanged || !has_duplicate_names(r.parameters) {
            self.informed.insert(r.id.to_owned(), fp);
        }
        Ok(InformOutcome {
            new_device: !exists,
            changed,
        })
    }

    /// Stores parameters read or written in a session; returns those that changed.
    pub fn store_params(
        &mut self,
        device: &str,
        values: &[ParameterValue],
        now_ms: i64,
    ) -> Result<Vec<ParameterValue>, StoreError> {
        // Dropped first (kept, updated, only once the writes are done), so that a failure leaves none.
        let fp = self.informed.remove(device);
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let hasher = &self.hasher;
        let tx = self.conn.savepoint().map_err(err)?;
        let mut changed = Vec::new();
        // What the fingerprint gains and loses: a stored parameter that changes is assumed to be one of the
        // Inform's, its old hash swapped for the new one. If it was not, the fingerprint matches no Inform any
        // more and the next one is written in full, as it would be without this.
        let mut delta = 0u64;
        {
            let mut read = tx
                .prepare_cached("SELECT value, type FROM params WHERE device = ?1 AND name = ?2")
                .map_err(err)?;
            let mut upsert = tx.prepare_cached(UPSERT_PARAM).map_err(err)?;
            for p in values {
                // `Some(None)`: stored with this value; `Some(Some(h))`: stored with another, of hash `h`.
                let stored: Option<Option<u64>> = read
                    .query_row(params![device, p.name], |r| {
                        let (v, t) = (r.get_ref(0)?.as_str()?, r.get_ref(1)?.as_str()?);
                        Ok((v != p.value).then(|| param_hash(hasher, &p.name, v, t)))
                    })
                    .optional()
                    .map_err(err)?;
                if stored == Some(None) {
                    continue;
                }
                upsert
                    .execute(params![device, p.name, p.value, p.xsd_type, now_ms])
                    .map_err(err)?;
                if let Some(Some(old)) = stored {
                    delta = delta.wrapping_sub(old).wrapping_add(param_hash(
                        hasher,
                        &p.name,
                        &p.value,
                        &p.xsd_type,
                    ));
                }
                changed.push(p.clone());
            }
        }
        tx.commit().map_err(err)?;
        if let Some(fp) = fp {
            self.informed
                .insert(device.to_owned(), fp.wrapping_add(delta));
        }
        Ok(changed)
    }

    /// One device.
    pub fn device(&self, id: &str) -> Result<Option<DeviceRow>, StoreError> {
        let conn = &self.conn;
        conn.prepare_cached(&format!("{DEVICE_SELECT} WHERE id = ?1"))
            .and_then(|mut s| s.query_row([id], device_row).optional())
            .map_err(|e| self.err(e))
    }

    /// Every device, by id.
    pub fn devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        let conn = &self.conn;
        let mut stmt = conn
            .prepare(&format!("{DEVICE_SELECT} ORDER BY id"))
            .map_err(|e| self.err(e))?;
        stmt.query_map([], device_row)
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))
    }

    /// Number of devices.
    pub fn device_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM devices", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Parameters of a device under `prefix` (all when empty), by name.
    pub fn params(&self, device: &str, prefix: &str) -> Result<Vec<ParameterValue>, StoreError> {
        let conn = &self.conn;
        let mut stmt = conn
            .prepare_cached(
                "SELECT name, value, type FROM params WHERE device = ?1 AND substr(name, 1, length(?2)) = ?2
                 ORDER BY name",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![device, prefix], |r| {
            Ok(ParameterValue {
                name: r.get(0)?,
                value: r.get(1)?,
                xsd_type: r.get(2)?,
            })
        })
        .and_then(|r| r.collect::<Result<Vec<_>, _>>())
        .map_err(|e| self.err(e))
    }

    /// Sets the tags of a device (comma-separated).
    pub fn set_tags(&self, device: &str, tags: &str) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE devices SET tags = ?2 WHERE id = ?1",
                params![device, tags],
            )
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Err(StoreError::NoDevice(device.into()));
        }
        Ok(())
    }

    /// Sets the per-device credentials: the CPE's towards the ACS (`acs`) and the ACS's towards the CPE's
    /// Connection Request URL (`conn_req`). `None` leaves a pair unchanged.
    pub fn set_credentials(
        &self,
        device: &str,
        acs: Option<(&str, &str)>,
        conn_req: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        let conn = &self.conn;
        if let Some((u, p)) = acs {
            conn.execute(
                "UPDATE devices SET acs_username = ?2, acs_password = ?3 WHERE id = ?1",
                params![device, u, p],
            )
            .map_err(|e| self.err(e))?;
        }
        if let Some((u, p)) = conn_req {
            conn.execute(
                "UPDATE devices SET cr_username = ?2, cr_password = ?3 WHERE id = ?1",
                params![device, u, p],
            )
            .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// The device and password of a per-device ACS user name, if one is set.
    pub fn acs_password(&self, username: &str) -> Result<Option<(String, String)>, StoreError> {
        let row: Option<(String, Option<String>)> = self
            .conn
            .query_row(
                "SELECT id, acs_password FROM devices WHERE acs_username = ?1",
                [username],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(row.and_then(|(d, p)| Some((d, p?))))
    }

    /// The per-device Connection Request credentials, if set.
    pub fn conn_req_credentials(
        &self,
        device: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row: Option<(Option<String>, Option<String>)> = self
            .conn
            .query_row(
                "SELECT cr_username, cr_password FROM devices WHERE id = ?1",
                [device],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(match row {
            Some((Some(u), Some(p))) => Some((u, p)),
            _ => None,
        })
    }

    /// Queues a task; returns its id.
    pub fn enqueue(
        &self,
        device: &str,
        kind: &TaskKind,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let json = serde_json::to_string(kind).unwrap_or_default();
        self.conn
            .prepare_cached(
                "INSERT INTO tasks (id, device, kind, state, next_attempt_ms, created_ms) VALUES (?1, ?2, ?3, 'queued', ?4, ?4)",
            )
            .and_then(|mut s| s.execute(params![id, device, json, now_ms]))
            .map_err(|e| self.err(e))?;
        Ok(id)
    }

    /// Queued tasks of a device that may run at `now_ms`, oldest first.
    pub fn due_tasks(&self, device: &str, now_ms: i64) -> Result<Vec<Task>, StoreError> {
        self.select_tasks(
            "WHERE device = ?1 AND state = 'queued' AND next_attempt_ms <= ?2 ORDER BY created_ms, id",
            params![device, now_ms],
        )
    }

    /// Every task of a device (all devices when `None`), newest last.
    pub fn tasks(&self, device: Option<&str>) -> Result<Vec<Task>, StoreError> {
        match device {
            Some(d) => self.select_tasks("WHERE device = ?1 ORDER BY created_ms, id", params![d]),
            None => self.select_tasks("ORDER BY created_ms, id", params![]),
        }
    }

    /// Whether a task exists (any state).
    pub fn task_exists(&self, id: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("SELECT 1 FROM tasks WHERE id = ?1")
            .and_then(|mut s| s.exists([id]))
            .map_err(|e| self.err(e))
    }

    /// One task.
    pub fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        Ok(self
            .select_tasks("WHERE id = ?1", params![id])?
            .into_iter()
            .next())
    }

    fn select_tasks(
        &self,
        rest: &str,
        p: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Task>, StoreError> {
        let conn = &self.conn;
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT id, device, kind, state, attempts, next_attempt_ms, last_error, created_ms FROM tasks {rest}"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(p, |r| {
                let kind: String = r.get(2)?;
                let state: String = r.get(3)?;
                Ok((
                    Task {
                        id: r.get(0)?,
                        device: r.get(1)?,
                        kind: TaskKind::Reboot,
                        state: TaskState::parse(&state).unwrap_or(TaskState::Failed),
                        attempts: r.get(4)?,
                        next_attempt_ms: r.get(5)?,
                        last_error: r.get(6)?,
                        created_ms: r.get(7)?,
                    },
                    kind,
                ))
            })
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        // A kind that no longer parses (written by a newer agent) is skipped rather than run wrongly.
        Ok(rows
            .into_iter()
            .filter_map(|(mut t, kind)| {
                t.kind = serde_json::from_str(&kind).ok()?;
                Some(t)
            })
            .collect())
    }

    /// Removes a task that is still queued (not yet sent to its device), so that it never runs. Returns whether
    /// it was removed (`false`: unknown, or already sent, done or failed).
    pub fn cancel_queued(&self, id: &str) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM tasks WHERE id = ?1 AND state = 'queued'")
            .and_then(|mut s| s.execute(params![id]))
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// Sets a task's state (done, waiting).
    pub fn set_task_state(&self, id: &str, state: TaskState) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE tasks SET state = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![id, state.as_str()]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records a fault: the task is retried later or, after the last attempt, failed. Returns the new state.
    pub fn task_fault(
        &self,
        id: &str,
        error: &str,
        now_ms: i64,
        policy: &RetryPolicy,
    ) -> Result<TaskState, StoreError> {
        let conn = &self.conn;
        let attempts: Option<u32> = conn
            .prepare_cached("SELECT attempts FROM tasks WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))?;
        let attempts = attempts.unwrap_or(0) + 1;
        let state = if attempts >= policy.max_attempts {
            TaskState::Failed
        } else {
            TaskState::Queued
        };
        conn.prepare_cached(
            "UPDATE tasks SET attempts = ?2, state = ?3, next_attempt_ms = ?4, last_error = ?5 WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![id, attempts, state.as_str(), now_ms + policy.delay_ms(attempts), error])
        })
        .map_err(|e| self.err(e))?;
        Ok(state)
    }

    /// The version of `template` applied to `device`, if any.
    pub fn template_version(
        &self,
        device: &str,
        template: &str,
    ) -> Result<Option<i64>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT version FROM templates_applied WHERE device = ?1 AND template = ?2",
            )
            .and_then(|mut s| s.query_row([device, template], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    /// Records that `template` at `version` was applied to `device`.
    pub fn mark_template(
        &self,
        device: &str,
        template: &str,
        version: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO templates_applied (device, template, version, applied_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (device, template) DO UPDATE SET version = excluded.version, applied_ms = excluded.applied_ms",
            )
            .and_then(|mut s| s.execute(params![device, template, version, now_ms]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

const DEVICE_SELECT: &str =
    "SELECT id, oui, product_class, serial, manufacturer, ip, software, tags, first_seen_ms,
    last_inform_ms, last_boot_ms, conn_req_url FROM devices";

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        id: r.get(0)?,
        oui: r.get(1)?,
        product_class: r.get(2)?,
        serial: r.get(3)?,
        manufacturer: r.get(4)?,
        ip: r.get(5)?,
        software: r.get(6)?,
        tags: r.get(7)?,
        first_seen_ms: r.get(8)?,
        last_inform_ms: r.get(9)?,
        last_boot_ms: r.get(10)?,
        conn_req_url: r.get(11)?,
    })
}

/// Writes a parameter unless it is stored with the same value (a changed value also takes the new type).
const UPSERT_PARAM: &str =
    "INSERT INTO params (device, name, value, type, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (device, name) DO UPDATE SET value = excluded.value, type = excluded.type,
     updated_ms = excluded.updated_ms WHERE params.value IS NOT excluded.value";

/// One parameter's share of an Inform fingerprint (see [`Db::store_params`]).
fn param_hash(hasher: &RandomState, name: &str, value: &str, xsd_type: &str) -> u64 {
    hasher.hash_one((name, value, xsd_type))
}

/// Whether a name appears twice in `parameters`.
fn has_duplicate_names(parameters: &[ParameterValue]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(parameters.len());
    !parameters.iter().all(|p| seen.insert(p.name.as_str()))
}

fn upsert_params(
    tx: &Connection,
    device: &str,
    values: &[ParameterValue],
    now_ms: i64,
) -> rusqlite::Result<Vec<ParameterValue>> {
    let mut stmt = tx.prepare_cached(UPSERT_PARAM)?;
    let mut changed = Vec::new();
    for p in values {
        if stmt.execute(params![device, p.name, p.value, p.xsd_type, now_ms])? > 0 {
            changed.push(p.clone());
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inform<'a>(params: &'a [ParameterValue], bootstrap: bool) -> InformRecord<'a> {
        InformRecord {
            id: "00259E-EG8145V5-1",
            oui: "00259E",
            product_class: "EG8145V5",
            serial: "1",
            manufacturer: "Huawei",
            ip: "127.0.0.1",
            boot: bootstrap,
            bootstrap,
            now_ms: 1_000,
            parameters: params,
        }
    }

    #[test]
    fn only_changes_are_reported_and_bootstrap_drops_the_tree() {
        let s = AcsStore::open_in_memory().unwrap();
        let p1 = [
            ParameterValue::string("InternetGatewayDevice.DeviceInfo.SoftwareVersion", "V1"),
            ParameterValue::string("InternetGatewayDevice.DeviceInfo.UpTime", "10"),
        ];
        let o = s.record_inform(&inform(&p1, false)).unwrap();
        assert!(o.new_device);
        assert_eq!(o.changed.len(), 2);
        assert_eq!(
            s.device("00259E-EG8145V5-1").unwrap().unwrap().software,
            "V1"
        );
        let o = s.record_inform(&inform(&p1, false)).unwrap();
        assert!(!o.new_device);
        assert!(o.changed.is_empty(), "nothing changed");
        let p2 = [ParameterValue::string(
            "InternetGatewayDevice.DeviceInfo.UpTime",
            "20",
        )];
        let o = s.record_inform(&inform(&p2, false)).unwrap();
        assert_eq!(o.changed, p2);
        s.store_params(
            "00259E-EG8145V5-1",
            &[ParameterValue::string("X.Y", "1")],
            5,
        )
        .unwrap();
        assert_eq!(s.params("00259E-EG8145V5-1", "").unwrap().len(), 3);
        s.record_inform(&inform(&p2, true)).unwrap();
        assert_eq!(
            s.params("00259E-EG8145V5-1", "").unwrap(),
            p2,
            "BOOTSTRAP dropped the tree"
        );
    }

    #[test]
    fn an_unchanged_inform_skips_its_upserts_but_never_hides_a_change() {
        let s = AcsStore::open_in_memory().unwrap();
        let id = "00259E-EG8145V5-1";
        let p1 = [
            ParameterValue::string("InternetGatewayDevice.X.SSID", "casa"),
            ParameterValue::string("InternetGatewayDevice.X.Channel", "6"),
        ];
        assert_eq!(
            s.record_inform(&inform(&p1, false)).unwrap().changed.len(),
            2
        );
        assert_eq!(s.lock().fingerprints(), 1);
        assert!(
            s.record_inform(&inform(&p1, false))
                .unwrap()
                .changed
                .is_empty()
        );
        // A task wrote another value for an informed parameter: the next Inform compares with the file again,
        // so the CPE's value (the Set did not stick) is stored and reported.
        s.store_params(
            id,
            &[ParameterValue::string(
                "InternetGatewayDevice.X.SSID",
                "other",
            )],
            2,
        )
        .unwrap();
        let o = s.record_inform(&inform(&p1, false)).unwrap();
        assert_eq!(o.changed, vec![p1[0].clone()]);
        assert_eq!(
            s.params(id, "InternetGatewayDevice.X.SSID").unwrap()[0].value,
            "casa"
        );
        // A task that read values equal to the stored ones keeps the fingerprint.
        s.store_params(
            id,
            &[ParameterValue::string(
                "InternetGatewayDevice.X.Channel",
                "6",
            )],
            3,
        )
        .unwrap();
        assert!(
            s.record_inform(&inform(&p1, false))
                .unwrap()
                .changed
                .is_empty()
        );
        // A different value in the Inform itself is stored and reported.
        let p2 = [
            p1[0].clone(),
            ParameterValue::string("InternetGatewayDevice.X.Channel", "11"),
        ];
        assert_eq!(
            s.record_inform(&inform(&p2, false)).unwrap().changed,
            vec![p2[1].clone()]
        );
        assert_eq!(
            s.params(id, "InternetGatewayDevice.X.Channel").unwrap()[0].value,
            "11"
        );
    }

    #[test]
    fn a_value_set_by_a_task_carries_the_fingerprint_over() {
        let s = AcsStore::open_in_memory().unwrap();
        let id = "00259E-EG8145V5-1";
        let ssid = |v: &str| ParameterValue::string("InternetGatewayDevice.X.SSID", v);
        let p1 = [
            ssid("casa"),
            ParameterValue::string("InternetGatewayDevice.X.Channel", "6"),
        ];
        s.record_inform(&inform(&p1, false)).unwrap();
        // A SetParameterValues of an informed parameter, and a read of one the Inform does not carry.
        let set = s.store_params(id, &[ssid("new")], 2).unwrap();
        assert_eq!(set, vec![ssid("new")]);
        let read = [ParameterValue::string("InternetGatewayDevice.X.Stat", "1")];
        assert_eq!(
            s.store_params(id, &read, 2).unwrap(),
            read,
            "new parameter stored"
        );
        assert!(
            s.store_params(id, &read, 3).unwrap().is_empty(),
            "same value: unchanged"
        );
        assert_eq!(s.lock().fingerprints(), 1);
        // The file is changed behind the store's back (only to see which path the next Inform takes): an Inform
        // with the value the task set matches the carried-over fingerprint and skips its upserts.
        s.lock()
            .conn
            .execute(
                "UPDATE params SET value = 'tampered' WHERE name LIKE '%Channel'",
                [],
            )
            .unwrap();
        let p2 = [ssid("new"), p1[1].clone()];
        assert!(
            s.record_inform(&inform(&p2, false))
                .unwrap()
                .changed
                .is_empty()
        );
        assert_eq!(
            s.params(id, "InternetGatewayDevice.X.Channel").unwrap()[0].value,
            "tampered"
        );
        // The old value is not vouched for any more: the CPE reporting it again is written and reported.
        let o = s.record_inform(&inform(&p1, false)).unwrap();
        assert_eq!(o.changed, vec![ssid("casa"), p1[1].clone()]);
        // A value changed for a parameter the Inform does not carry: the fingerprint matches nothing, the next
        // Inform is written in full (and finds nothing to change).
        s.store_params(
            id,
            &[ParameterValue::string("InternetGatewayDevice.X.Stat", "2")],
            4,
        )
        .unwrap();
        s.lock()
            .conn
            .execute(
                "UPDATE params SET value = 'tampered' WHERE name LIKE '%Channel'",
                [],
            )
            .unwrap();
        assert_eq!(
            s.record_inform(&inform(&p1, false)).unwrap().changed,
            vec![p1[1].clone()]
        );
        // An Inform naming a parameter twice keeps no fingerprint.
        s.record_inform(&inform(&[ssid("a"), ssid("b")], false))
            .unwrap();
        assert_eq!(s.lock().fingerprints(), 0);
    }

    #[test]
    fn tasks_retry_with_backoff_then_fail() {
        let s = AcsStore::open_in_memory().unwrap();
        let id = s.enqueue("d", &TaskKind::Reboot, 0).unwrap();
        assert_eq!(s.due_tasks("d", 0).unwrap().len(), 1);
        let policy = RetryPolicy {
            max_attempts: 2,
            backoff_ms: 100,
            backoff_max_ms: 1_000,
        };
        assert_eq!(
            s.task_fault(&id, "9002", 0, &policy).unwrap(),
            TaskState::Queued
        );
        assert!(s.due_tasks("d", 99).unwrap().is_empty(), "backing off");
        assert_eq!(s.due_tasks("d", 100).unwrap().len(), 1);
        assert_eq!(
            s.task_fault(&id, "9002", 100, &policy).unwrap(),
            TaskState::Failed
        );
        assert!(s.due_tasks("d", i64::MAX / 2).unwrap().is_empty());
        let t = s.task(&id).unwrap().unwrap();
        assert_eq!((t.state, t.attempts), (TaskState::Failed, 2));
    }
}
