//! Start order per agent: an agent's commands start in the order this instance leased them (creation order:
//! the queue is FIFO per tenant and woken commands go back in creation order).
//!
//! The dispatcher and the inbox take a [`Turn`] for each lease synchronously, in the order they received the
//! leases, before spawning the lease's task. A turn waits until the previous turn of the same agent is over:
//! the previous command was written on its stream, or the previous lease was handed over, deferred or failed.
//! Streams are therefore opened in lease order, so their ids carry that order, and the agent admits the commands
//! of its connection in stream-id order (each after the previous one took its place in its local queue), so
//! they start in that order.
//!
//! A turn never waits longer than a bound (a third of the queue's visibility timeout, so the waiting lease
//! cannot be reclaimed meanwhile): an agent that keeps a command without answering delays the next ones by that
//! bound, not forever. Order holds between the commands one instance dispatches; two dispatching instances
//! each keep their own order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use uuid::Uuid;

/// The last turn taken per agent: its ticket and the signal its end sends.
#[derive(Default)]
struct Lines {
    last: HashMap<Uuid, (u64, oneshot::Receiver<()>)>,
}

/// Turns per agent of one instance.
#[derive(Clone, Default)]
pub struct AgentOrder {
    lines: Arc<Mutex<Lines>>,
    tickets: Arc<AtomicU64>,
}

impl std::fmt::Debug for AgentOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentOrder").finish_non_exhaustive()
    }
}

/// One lease's place in its agent's line. Dropping it (or [`Turn::release`]) lets the next one go.
#[derive(Debug)]
pub struct Turn {
    agent: Uuid,
    ticket: u64,
    previous: Option<oneshot::Receiver<()>>,
    done: Option<oneshot::Sender<()>>,
    order: AgentOrder,
}

impl AgentOrder {
    /// Takes the next turn of `agent`. Call it in lease order, before spawning the lease's task.
    pub fn take(&self, agent: Uuid) -> Turn {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let (done, rx) = oneshot::channel();
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = lines.last.insert(agent, (ticket, rx)).map(|(_, rx)| rx);
        Turn {
            agent,
            ticket,
            previous,
            done: Some(done),
            order: self.clone(),
        }
    }

    /// Agents with a line (for tests and metrics).
    pub fn lines(&self) -> usize {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last
            .len()
    }
}

impl Turn {
    /// Waits until the previous turn of the agent is over, or `bound` passed. Returns whether the wait ended
    /// by the bound.
    pub async fn wait(&mut self, bound: Duration) -> bool {
        let Some(previous) = self.previous.take() else {
            return false;
        };
        // A dropped sender counts as over, like a sent one.
        tokio::time::timeout(bound, previous).await.is_err()
    }

    /// Lets the next turn of the agent go.
    pub fn release(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
            let mut lines = self
                .order
                .lines
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Last in its line: the line goes.
            if lines.last.get(&self.agent).map(|(t, _)| *t) == Some(self.ticket) {
                lines.last.remove(&self.agent);
            }
        }
    }
}

/// What a lease holds while it is being dispatched: its agent's turn and one of the instance's dispatch slots.
/// The slot goes once the row is read and marked dispatched, before the lease waits in its agent's line; the
/// turn when the command is written on the agent's stream (or the lease was handed over, deferred or failed). A
/// command running on its agent, or waiting behind a busy agent, holds no slot, so a long line at one agent
/// never starves the dispatch of other agents' and other tenants' commands.
#[derive(Debug, Default)]
pub struct Dispatching {
    /// The lease's place in its agent's start order.
    pub turn: Option<Turn>,
    /// The dispatch slot.
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Dispatching {
    /// Waits for the turn; returns whether the wait ended by `bound`.
    pub async fn wait(&mut self, bound: Duration) -> bool {
        match &mut self.turn {
            Some(turn) => turn.wait(bound).await,
            None => false,
        }
    }

    /// Lets the agent's next command and another lease go.
    pub fn release(&mut self) {
        if let Some(mut turn) = self.turn.take() {
            turn.release();
        }
        self.permit.take();
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_of_one_agent_go_in_order_and_others_do_not_wait() {
        let order = AgentOrder::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let first = order.take(a);
        let mut second = order.take(a);
        let mut other = order.take(b);
        // Another agent's turn does not wait.
        assert!(!other.wait(Duration::from_secs(5)).await);
        // The second waits for the first.
        let waiter = tokio::spawn(async move {
            let bounded = second.wait(Duration::from_secs(30)).await;
            (bounded, second)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "the second turn went before the first ended"
        );
        drop(first);
        let (bounded, second) = waiter.await.unwrap();
        assert!(!bounded);
        drop(second);
        drop(other);
        assert_eq!(order.lines(), 0, "finished lines are removed");
    }

    #[tokio::test]
    async fn a_turn_waits_no_longer_than_its_bound() {
        let order = AgentOrder::default();
        let a = Uuid::now_v7();
        let _stuck = order.take(a);
        let mut next = order.take(a);
        assert!(next.wait(Duration::from_millis(20)).await);
    }
}
