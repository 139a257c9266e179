//! Leases of commands that ran, waiting for their results, held in memory for a moment before they are deferred
//! in the queue: when agents run commands by the thousand, a command's result usually reaches ingest a few
//! milliseconds after its stream ends, and ingest then completes the job. Deferring each job first (one Redis
//! script per command, moving it from the leased to the delayed set) only to complete it right after was about
//! a sixth of the queue's work under a flood.
//!
//! A stream that ends after its `started` frame hands its lease here ([`ResultWaits::hold`]) instead of deferring
//! it. Ingest, once it has stored results and completed their jobs on this instance, drops their waits
//! ([`ResultWaits::settled`]). Waits still held after [`HOLD`] are deferred by one writer task per instance, many
//! leases per script call ([`crate::queue::Queue::defer_many`]), exactly as the stream would have deferred them
//! (until the result is due, [`super::stream`]'s `RESULT_WAIT`). A defer of a job that was completed meanwhile
//! (its result came first) finds nothing and changes nothing.
//!
//! While held, the job stays leased: the lease was extended at most a third of the visibility timeout ago and
//! [`HOLD`] is far shorter than what is left, so it is not reclaimed meanwhile. Waits still held at shutdown
//! are dropped: their leases expire and are delivered again, and the agent answers `duplicate` to a command it
//! already ran (the same as when the instance is killed).

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use uuid::Uuid;

use super::held::{self, Held, Shared};
use crate::queue::Queue;

/// How long a lease waits for its command's result before it is deferred in the queue.
pub const HOLD: Duration = Duration::from_millis(250);
/// Leases deferred per script call at most.
pub const MAX_BATCH: usize = 500;
/// How often the writer looks for waits due.
const TICK: Duration = Duration::from_millis(20);
/// Waits held at most; beyond, a stream defers its lease itself.
const CAPACITY: usize = 16_384;

/// The held waits of one instance: by command, its lease's attempt and the time to defer it until. Cheap to
/// clone.
#[derive(Clone, Debug)]
pub struct ResultWaits {
    inner: Shared<(u32, i64)>,
}

impl ResultWaits {
    /// Starts the writer on `queue` (it ends when every handle is dropped).
    pub fn start(queue: Queue) -> ResultWaits {
        let inner = Arc::new(Mutex::new(Held::default()));
        tokio::spawn(writer(queue, Arc::downgrade(&inner)));
        ResultWaits { inner }
    }

    /// Holds the lease `(id, attempt)` until its result comes or [`HOLD`] passes, then defers it until
    /// `until_ms`. `false` when too many are held: the caller defers it itself.
    pub fn hold(&self, id: Uuid, attempt: u32, until_ms: i64) -> bool {
        let mut h = held::lock(&self.inner);
        if h.len() >= CAPACITY {
            return false;
        }
        h.insert(id, (attempt, until_ms));
        true
    }

    /// How many leases are held now.
    pub fn waiting(&self) -> usize {
        held::lock(&self.inner).len()
    }

    /// The results of `ids` were stored and their jobs completed: their waits end here.
    pub fn settled(&self, ids: &[Uuid]) {
        let mut h = held::lock(&self.inner);
        let n = ids.iter().filter(|id| h.remove(id).is_some()).count();
        drop(h);
        metrics::counter!("octoisp_commands_result_waits_total", "ended" => "result")
            .increment(n as u64);
    }
}

/// Takes the waits held [`HOLD`] or longer (at most [`MAX_BATCH`]) as `(id, attempt, until_ms)`.
fn due(held: &Mutex<Held<(u32, i64)>>) -> Vec<(Uuid, u32, i64)> {
    held::lock(held)
        .due(HOLD, MAX_BATCH)
        .into_iter()
        .map(|(id, (attempt, until))| (id, attempt, until))
        .collect()
}

async fn writer(queue: Queue, held: Weak<Mutex<Held<(u32, i64)>>>) {
    loop {
        tokio::time::sleep(TICK).await;
        let batch = {
            let Some(held) = held.upgrade() else {
                return;
            };
            due(&held)
        };
        if batch.is_empty() {
            continue;
        }
        metrics::counter!("octoisp_commands_result_waits_total", "ended" => "deferred")
            .increment(batch.len() as u64);
        if let Err(err) = queue.defer_many(&batch).await {
            tracing::warn!(leases = batch.len(), error = %err,
                "Cannot defer the leases of commands waiting for their results; they will be reclaimed.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Instant;

    fn waits() -> ResultWaits {
        ResultWaits {
            inner: Arc::new(Mutex::new(Held::default())),
        }
    }

    #[test]
    fn a_settled_wait_is_not_deferred_and_others_wait_their_hold() {
        let w = waits();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let old = Instant::now()
            .checked_sub(HOLD)
            .expect("the clock started more than HOLD ago");
        {
            let mut h = held::lock(&w.inner);
            for (id, attempt) in [(a, 1), (b, 2)] {
                h.insert_at(id, (attempt, 99), old);
            }
        }
        w.settled(&[a]);
        assert!(w.hold(c, 1, 7), "room for a fresh wait");
        // b waited its hold and goes; c is fresh and stays; a was settled by its result.
        assert_eq!(due(&w.inner), vec![(b, 2, 99)]);
        assert!(due(&w.inner).is_empty());
        assert_eq!(w.waiting(), 1);
        w.settled(&[c]);
        assert_eq!(w.waiting(), 0);
    }

    #[test]
    fn beyond_capacity_the_caller_defers_itself() {
        let w = waits();
        for _ in 0..CAPACITY {
            assert!(w.hold(Uuid::new_v4(), 1, 0));
        }
        assert!(!w.hold(Uuid::new_v4(), 1, 0));
    }
}
