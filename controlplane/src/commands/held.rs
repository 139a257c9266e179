//! What [`super::marks`] and [`super::waits`] share: entries held in memory by command id for a moment, in
//! arrival order, so that a command's result can take its entry first; what is still held after the hold is
//! handed to a writer task in batches.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Entries by command id, and the ids in arrival order.
#[derive(Debug)]
pub struct Held<V> {
    by_id: HashMap<Uuid, V>,
    order: VecDeque<(Instant, Uuid)>,
}

impl<V> Default for Held<V> {
    fn default() -> Self {
        Held {
            by_id: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

/// A [`Held`] shared between the handles and the writer task.
pub type Shared<V> = Arc<Mutex<Held<V>>>;

/// Locks `shared`. Every operation leaves the map consistent, so a panic elsewhere leaves nothing half done.
pub fn lock<V>(shared: &Mutex<Held<V>>) -> MutexGuard<'_, Held<V>> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<V> Held<V> {
    /// Entries held now.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Holds `v` for `id` from now.
    pub fn insert(&mut self, id: Uuid, v: V) {
        self.insert_at(id, v, Instant::now());
    }

    /// Holds `v` for `id`, arrived at `at`.
    pub fn insert_at(&mut self, id: Uuid, v: V, at: Instant) {
        self.by_id.insert(id, v);
        self.order.push_back((at, id));
    }

    /// Takes the entry of `id` (its result came).
    pub fn remove(&mut self, id: &Uuid) -> Option<V> {
        self.by_id.remove(id)
    }

    /// Takes the entries held `hold` or longer, oldest first, at most `max` (ids taken meanwhile are skipped;
    /// their places in the order are dropped here).
    pub fn due(&mut self, hold: Duration, max: usize) -> Vec<(Uuid, V)> {
        let mut out = Vec::new();
        let now = Instant::now();
        while out.len() < max {
            match self.order.front() {
                Some((at, _)) if now.duration_since(*at) >= hold => {}
                _ => break,
            }
            let Some((_, id)) = self.order.pop_front() else {
                break;
            };
            if let Some(v) = self.by_id.remove(&id) {
                out.push((id, v));
            }
        }
        out
    }

    /// Whether no place in the order is left (test helper for the writers' batching).
    #[cfg(test)]
    pub fn order_is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_entries_come_oldest_first_and_taken_ones_are_skipped() {
        let mut h: Held<u32> = Held::default();
        let old = Instant::now()
            .checked_sub(Duration::from_secs(1))
            .expect("the clock started more than a second ago");
        let (a, b, c, d) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        h.insert_at(a, 1, old);
        h.insert_at(b, 2, old);
        h.insert_at(c, 3, old);
        h.insert(d, 4);
        assert_eq!(h.remove(&a), Some(1));
        assert_eq!(h.due(Duration::from_millis(500), 1), vec![(b, 2)]);
        assert_eq!(h.due(Duration::from_millis(500), 10), vec![(c, 3)]);
        assert_eq!(h.len(), 1, "the fresh entry stays");
        assert!(h.due(Duration::from_millis(500), 10).is_empty());
    }
}
