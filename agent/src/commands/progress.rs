//! Progress of a running command: a bounded queue between the command (which never waits on the network) and
//! the task writing `CommandProgress` frames to its stream.
//!
//! Progress is not durable (the result is), so when the stream is slower than the command the queue keeps the
//! newest [`QUEUE_FRAMES`] payloads and drops the oldest ones, counting them; the next frame sent carries
//! `"skipped": N` (the frames dropped just before it). Every payload here is self-contained (an MTR frame is the whole
//! hop table so far, a ping frame carries the running summary), so a dropped frame loses detail, never the state.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// Progress payloads waiting for the stream, at most.
pub const QUEUE_FRAMES: usize = 64;
/// Largest progress payload, bytes: bigger ones are replaced by a note saying so (the result has the data).
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<(String, u64)>,
    closed: bool,
}

/// The sending side, handed to the command. Cheap to clone; usable from blocking threads.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    inner: Arc<(Mutex<State>, Notify)>,
}

impl Progress {
    /// A new, empty queue.
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Queues one payload (a JSON object); never waits.
    pub fn send(&self, payload: serde_json::Value) {
        let mut text = payload.to_string();
        if text.len() > MAX_PAYLOAD_BYTES {
            text = serde_json::json!({"truncated": true, "bytes": text.len()}).to_string();
        }
        let (lock, notify) = &*self.inner;
        let mut st = lock.lock().unwrap_or_else(PoisonError::into_inner);
        if st.closed {
            return;
        }
        st.queue.push_back((text, 0));
        while st.queue.len() > QUEUE_FRAMES {
            if let Some((_, s)) = st.queue.pop_front()
                && let Some(front) = st.queue.front_mut()
            {
                front.1 += 1 + s;
            }
        }
        drop(st);
        notify.notify_one();
    }

    /// No more payloads: the writer sends what is queued and stops.
    pub fn close(&self) {
        let (lock, notify) = &*self.inner;
        lock.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        notify.notify_one();
    }

    /// The next payload (with the count of frames dropped just before it), waiting for one; `None` once closed
    /// and drained.
    pub async fn next(&self) -> Option<String> {
        let (lock, notify) = &*self.inner;
        loop {
            let notified = notify.notified();
            {
                let mut st = lock.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some((text, skipped)) = st.queue.pop_front() {
                    return Some(with_skipped(text, skipped));
                }
                if st.closed {
                    return None;
                }
            }
            notified.await;
        }
    }
}

fn with_skipped(text: String, skipped: u64) -> String {
    if skipped == 0 {
        return text;
    }
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert("skipped".into(), skipped.into());
            serde_json::Value::Object(map).to_string()
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_reader_gets_the_newest_frames_and_the_count_of_the_others() {
        let p = Progress::new();
        for i in 0..(QUEUE_FRAMES + 10) {
            p.send(serde_json::json!({ "i": i }));
        }
        p.close();
        let first: serde_json::Value = serde_json::from_str(&p.next().await.unwrap()).unwrap();
        assert_eq!(first["i"], 10);
        assert_eq!(first["skipped"], 10);
        let mut n = 1;
        while let Some(f) = p.next().await {
            assert!(!f.contains("skipped"), "{f}");
            n += 1;
        }
        assert_eq!(n, QUEUE_FRAMES);
        p.send(serde_json::json!({"after": "close"}));
        assert!(p.next().await.is_none());
    }
}
