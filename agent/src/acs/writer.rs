//! The ACS store's writer thread: the sessions' store work (recording an Inform and reading its due tasks, a
//! task's outcome, queueing a task) runs on one thread, in groups, one transaction per group.
//!
//! Before, every call took a `spawn_blocking` thread and the store's mutex: with thousands of sessions at once
//! the blocking pool grew to hundreds of threads queued on one lock, and every Inform paid its own commit. Now a
//! session sends its work on a bounded channel ([`QUEUE_CAPACITY`]; a full channel holds the session back) and
//! awaits the answer. The thread takes the first job and everything already queued (up to [`MAX_GROUP`]), runs
//! them in one `BEGIN IMMEDIATE` transaction, each inside a savepoint of its own (a job that fails rolls back
//! only its own writes and gets its error), commits, and only then answers each job. So an answer always means
//! "committed": a session sends its InformResponse only after the Inform's state is in the file, as before.
//! If the commit fails, every job of the group gets the error and nothing of the group is in the file.
//!
//! The thread ends when the last [`StoreWriter`] handle is dropped.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use tokio::sync::{mpsc, oneshot};

use super::store::{AcsStore, Db, StoreError};

/// Jobs that may wait for the writer before sessions are held back.
pub const QUEUE_CAPACITY: usize = 4096;
/// Most jobs in one transaction.
pub const MAX_GROUP: usize = 512;

type Output = Box<dyn Any + Send>;
type Work = Box<dyn FnOnce(&mut Db) -> Result<Output, StoreError> + Send>;

struct Job {
    work: Work,
    reply: oneshot::Sender<Result<Output, StoreError>>,
}

/// A handle on the writer thread; cheap to clone.
#[derive(Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<Job>,
    path: String,
}

impl std::fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter")
            .field("path", &self.path)
            .finish()
    }
}

impl StoreWriter {
    /// Starts the writer thread over `store`.
    pub fn spawn(store: AcsStore) -> std::io::Result<StoreWriter> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let path = store.lock().path().to_owned();
        std::thread::Builder::new()
            .name("acs-store".into())
            .spawn(move || run(&store, rx))?;
        Ok(StoreWriter { tx, path })
    }

    /// Runs `f` on the writer thread; resolves once the transaction holding its writes committed.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        let work: Work = Box::new(move |db| f(db).map(|t| Box::new(t) as Output));
        self.tx
            .send(Job { work, reply })
            .await
            .map_err(|_| self.gone())?;
        let out = rx.await.map_err(|_| self.gone())??;
        out.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| StoreError::Writer {
                path: self.path.clone(),
                reason: "the writer answered with another type".into(),
            })
    }

    fn gone(&self) -> StoreError {
        StoreError::Writer {
            path: self.path.clone(),
            reason: "the store's writer thread stopped".into(),
        }
    }
}

fn run(store: &AcsStore, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut db = store.lock();
        let answers = run_group(&mut db, group);
        drop(db);
        for (reply, result) in answers {
            // A session that stopped waiting does not matter: its work is committed (or was not).
            let _ = reply.send(result);
        }
    }
    tracing::debug!("ACS store writer stopped.");
}

type Answer = (
    oneshot::Sender<Result<Output, StoreError>>,
    Result<Output, StoreError>,
);

/// Runs one group in one transaction; returns each job's answer.
fn run_group(db: &mut Db, group: Vec<Job>) -> Vec<Answer> {
    let failed = |db: &Db, reason: String| StoreError::Writer {
        path: db.path().to_owned(),
        reason,
    };
    if let Err(err) = db.control("BEGIN IMMEDIATE") {
        let reason = err.to_string();
        return group
            .into_iter()
            .map(|j| (j.reply, Err(failed(db, reason.clone()))))
            .collect();
    }
    let mut answers = Vec::with_capacity(group.len());
    let mut any_failed = false;
    for job in group {
        let result = match db.control("SAVEPOINT acs_job") {
            Err(err) => Err(err),
            Ok(()) => {
                let work = job.work;
                let r = catch_unwind(AssertUnwindSafe(|| work(db)))
                    .unwrap_or_else(|_| Err(failed(db, "the store work panicked".into())));
                let end = if r.is_ok() {
                    db.control("RELEASE acs_job")
                } else {
                    db.control("ROLLBACK TO acs_job")
                        .and_then(|()| db.control("RELEASE acs_job"))
                };
                match (r, end) {
                    (Ok(out), Ok(())) => Ok(out),
                    (Err(err), _) | (Ok(_), Err(err)) => Err(err),
                }
            }
        };
        any_failed |= result.is_err();
        answers.push((job.reply, result));
    }
    if any_failed {
        // A rolled-back job may have left fingerprints of writes that are not in the file.
        db.forget_informs();
    }
    if let Err(err) = db.control("COMMIT") {
        tracing::error!(path = db.path(), error = %err, jobs = answers.len(), "ACS store commit failed.");
        let _ = db.control("ROLLBACK");
        db.forget_informs();
        let reason = format!("commit failed: {err}");
        return answers
            .into_iter()
            .map(|(reply, _)| (reply, Err(failed(db, reason.clone()))))
            .collect();
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acs::cwmp::ParameterValue;
    use crate::acs::store::InformRecord;

    fn inform(id: &str, value: &str) -> impl FnOnce(&mut Db) -> Result<bool, StoreError> + Send {
        let (id, value) = (id.to_owned(), value.to_owned());
        move |db| {
            let params = [ParameterValue::string("Device.X.Y", &value)];
            let o = db.record_inform(&InformRecord {
                id: &id,
                oui: "A",
                serial: &id,
                now_ms: 1,
                parameters: &params,
                ..InformRecord::default()
            })?;
            Ok(!o.changed.is_empty())
        }
    }

    #[tokio::test]
    async fn jobs_commit_together_and_a_failing_job_rolls_back_alone() {
        let store = AcsStore::open_in_memory().unwrap();
        let w = StoreWriter::spawn(store.clone()).unwrap();
        let (a, b, c) = tokio::join!(
            w.run(inform("d1", "1")),
            w.run(|db: &mut Db| -> Result<(), StoreError> {
                inform("d2", "1")(db)?;
                // Fails after writing: its writes are rolled back, the others commit.
                Err(db
                    .device("none")
                    .map(|_| StoreError::NoDevice("none".into()))?)
            }),
            w.run(inform("d3", "1")),
        );
        assert!(a.unwrap() && c.unwrap());
        assert!(matches!(b, Err(StoreError::NoDevice(_))));
        assert_eq!(store.device_count().unwrap(), 2, "d2 was rolled back");
        assert!(store.device("d2").unwrap().is_none());
        // Unchanged parameters are recognised, changed ones stored, and d2 (rolled back) is stored in full.
        assert!(!w.run(inform("d1", "1")).await.unwrap());
        assert!(w.run(inform("d1", "2")).await.unwrap());
        assert!(w.run(inform("d2", "1")).await.unwrap());
        assert_eq!(store.params("d1", "").unwrap()[0].value, "2");
    }
}
