//! The queue from the store to the alert engine, bounded by samples rather than by batches.
//!
//! A stored batch can hold one sample or 50,000; a bound in batches lets the backlog (and so the alert latency)
//! grow with the batch size. Here each queued batch holds one permit per sample from a semaphore of
//! `capacity` permits (at least one per batch; a batch larger than the whole capacity takes all of it, so it waits
//! for an empty queue and then goes alone). A sender waits for its permits: when the engine falls behind, the
//! store waits, and ingest acks slow down; no sample is skipped. The permits return when the engine takes the
//! batch, so at most `capacity` samples (or one oversized batch) wait in the queue, whatever the batch size.
//!
//! The backlog a sample can find before its evaluation is therefore at most the queue's `capacity` plus the
//! batches of the store calls waiting to enter it (at most `ingest.db_writers` of them in the control plane).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::ingest::store::StoredSamples;

/// A queued batch and the permits it holds.
struct Queued {
    msg: StoredSamples,
    _permits: OwnedSemaphorePermit,
}

/// The store's end (cheap to clone).
#[derive(Clone)]
pub struct SampleSender {
    tx: mpsc::UnboundedSender<Queued>,
    permits: Arc<Semaphore>,
    capacity: u32,
}

impl std::fmt::Debug for SampleSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleSender")
            .field("capacity", &self.capacity)
            .field("available", &self.permits.available_permits())
            .finish()
    }
}

/// The engine's end.
pub struct SampleReceiver {
    rx: mpsc::UnboundedReceiver<Queued>,
    permits: Arc<Semaphore>,
    capacity: u32,
}

impl std::fmt::Debug for SampleReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleReceiver").finish_non_exhaustive()
    }
}

/// The engine is gone: the batch was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the alert engine is gone")]
pub struct Closed;

/// A queue holding at most `capacity` samples (at least 1).
pub fn sample_queue(capacity: u32) -> (SampleSender, SampleReceiver) {
    let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS as u32);
    let permits = Arc::new(Semaphore::new(capacity as usize));
    let (tx, rx) = mpsc::unbounded_channel();
    (
        SampleSender {
            tx,
            permits: permits.clone(),
            capacity,
        },
        SampleReceiver {
            rx,
            permits,
            capacity,
        },
    )
}

impl SampleSender {
    /// Queues `msg`, waiting until the queue has room for its samples.
    pub async fn send(&self, msg: StoredSamples) -> Result<(), Closed> {
        let need = u32::try_from(msg.rows.len())
            .unwrap_or(u32::MAX)
            .clamp(1, self.capacity);
        let permits = self
            .permits
            .clone()
            .acquire_many_owned(need)
            .await
            .map_err(|_| Closed)?;
        self.tx
            .send(Queued {
                msg,
                _permits: permits,
            })
            .map_err(|_| Closed)
    }

    /// The queue's capacity in samples.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Samples queued now (an oversized batch counts as the whole capacity).
    pub fn queued(&self) -> u32 {
        self.capacity - self.permits.available_permits() as u32
    }
}

impl SampleReceiver {
    /// The next batch; `None` when every sender is gone and the queue is empty. Its samples leave the bound.
    pub async fn recv(&mut self) -> Option<StoredSamples> {
        self.rx.recv().await.map(|q| q.msg)
    }

    /// Samples queued now (an oversized batch counts as the whole capacity).
    pub fn queued(&self) -> u32 {
        self.capacity
            .saturating_sub(self.permits.available_permits() as u32)
    }

    /// The next batch if one is queued.
    pub fn try_recv(&mut self) -> Result<StoredSamples, mpsc::error::TryRecvError> {
        self.rx.try_recv().map(|q| q.msg)
    }
}

impl Drop for SampleReceiver {
    fn drop(&mut self) {
        // Senders waiting for room get `Closed` instead of waiting forever.
        self.permits.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use uuid::Uuid;

    use super::*;
    use crate::ingest::store::CopyRow;

    const ROW: CopyRow = CopyRow {
        series_id: 1,
        ts_us: 0,
        value: 0.0,
    };

    fn msg(samples: usize) -> StoredSamples {
        StoredSamples {
            provider_id: Uuid::nil(),
            rows: vec![ROW; samples],
            stored_at: Instant::now(),
        }
    }

    #[tokio::test]
    async fn the_bound_is_in_samples_not_batches() {
        let (tx, mut rx) = sample_queue(100);
        tx.send(msg(60)).await.unwrap();
        tx.send(msg(40)).await.unwrap();
        assert_eq!(tx.queued(), 100);
        // A third batch of one sample must wait for room.
        let t2 = tx.clone();
        let mut third = tokio::spawn(async move { t2.send(msg(1)).await });
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut third)
                .await
                .is_err(),
            "sent past the bound"
        );
        assert_eq!(rx.recv().await.unwrap().rows.len(), 60);
        third.await.unwrap().unwrap();
        assert_eq!(tx.queued(), 41);
        // Many small batches fit where few large ones would not.
        let (tx, _rx) = sample_queue(1000);
        for _ in 0..1000 {
            tx.send(msg(1)).await.unwrap();
        }
        assert_eq!(tx.queued(), 1000);
    }

    #[tokio::test]
    async fn an_oversized_batch_goes_alone_and_a_gone_engine_is_an_error() {
        let (tx, mut rx) = sample_queue(10);
        tx.send(msg(25)).await.unwrap();
        assert_eq!(tx.queued(), 10);
        assert_eq!(rx.try_recv().unwrap().rows.len(), 25);
        assert_eq!(tx.queued(), 0);
        tx.send(msg(0)).await.unwrap();
        assert_eq!(tx.queued(), 1);
        drop(rx);
        assert_eq!(tx.send(msg(1)).await, Err(Closed));
    }
}
