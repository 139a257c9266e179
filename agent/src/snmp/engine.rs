//! The multiplexed SNMP transport: a few UDP sockets shared by every request of the process, responses routed to
//! their waiter by request id (v1/v2c) or msgID (v3), and only when they come from the address the request went to.
//!
//! A waiter decodes and checks what it is handed (community, PDU type, v3 digest); anything it rejects is dropped
//! and the waiter keeps waiting, so a device sending garbage or a spoofer guessing ids cannot end someone else's
//! request. Each attempt has its own timeout; retries resend (re-encoding, so a v3 message carries a fresh time)
//! under the same id, so a late answer to the first attempt still completes the request.
//!
//! Ids are allocated from one counter, skipping ids in use. At most `max_in_flight` exchanges are outstanding at once
//! (a semaphore), which bounds the pending table and the socket buffers' load.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::message::peek_id;

/// Largest datagram read.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams queued for one waiter before further ones are dropped.
const WAITER_QUEUE: usize = 4;

/// Transport settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Local IPv4 address to send from (`0.0.0.0` by default).
    pub bind_v4: Ipv4Addr,
    /// Whether to open an IPv6 socket too.
    pub ipv6: bool,
    /// Most exchanges outstanding at once.
    pub max_in_flight: usize,
    /// SO_RCVBUF of each socket, bytes.
    pub recv_buffer: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            bind_v4: Ipv4Addr::UNSPECIFIED,
            ipv6: true,
            max_in_flight: 4096,
            recv_buffer: 4 << 20,
        }
    }
}

/// Why an exchange did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// No acceptable answer within the timeouts of every attempt.
    #[error("no response from {addr} after {attempts} attempt(s) of {timeout:?}")]
    Timeout {
        /// Device.
        addr: SocketAddr,
        /// Attempts made.
        attempts: u32,
        /// Timeout of each.
        timeout: Duration,
    },
    /// The socket refused to send.
    #[error("cannot send to {addr}: {source}")]
    Send {
        /// Device.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// No socket for the address family.
    #[error("no socket for {0} (IPv6 disabled or unavailable)")]
    NoSocket(SocketAddr),
}

/// Counters of the transport, for metrics and tests.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Datagrams sent.
    pub sent: AtomicU64,
    /// Datagrams received.
    pub received: AtomicU64,
    /// Received but matching no waiter (late, unknown id, or not decodable).
    pub unmatched: AtomicU64,
    /// Matching an id but from another address.
    pub wrong_source: AtomicU64,
}

struct Waiter {
    addr: SocketAddr,
    tx: mpsc::Sender<Vec<u8>>,
}

struct Inner {
    v4: Arc<UdpSocket>,
    v6: Option<Arc<UdpSocket>>,
    pending: Mutex<HashMap<i32, Waiter>>,
    next_id: AtomicU32,
    inflight: Semaphore,
    stats: EngineStats,
}

/// The shared transport. Cheap to clone; its receive tasks stop when the last clone is dropped.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    _stop: Arc<DropGuard>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("local_v4", &self.inner.v4.local_addr().ok())
            .finish()
    }
}

fn open_socket(addr: SocketAddr, recv_buffer: usize) -> io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // A smaller buffer than asked (capped by net.core.rmem_max) is not an error.
    let _ = s.set_recv_buffer_size(recv_buffer);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

impl Engine {
    /// Opens the sockets and starts the receive tasks (needs a Tokio runtime).
    pub fn new(cfg: &EngineConfig) -> io::Result<Engine> {
        let v4 = Arc::new(open_socket(
            SocketAddr::new(IpAddr::V4(cfg.bind_v4), 0),
            cfg.recv_buffer,
        )?);
        let v6 = if cfg.ipv6 {
            match open_socket(
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
                cfg.recv_buffer,
            ) {
                Ok(s) => Some(Arc::new(s)),
                Err(err) => {
                    tracing::debug!(error = %err, "SNMP over IPv6 unavailable.");
                    None
                }
            }
        } else {
            None
        };
        let inner = Arc::new(Inner {
            v4,
            v6,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(rand::random::<u32>() >> 2),
            inflight: Semaphore::new(cfg.max_in_flight.max(1)),
            stats: EngineStats::default(),
        });
        let stop = CancellationToken::new();
        let socks: Vec<Arc<UdpSocket>> = std::iter::once(inner.v4.clone())
            .chain(inner.v6.clone())
            .collect();
        for sock in socks {
            let weak = Arc::downgrade(&inner);
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                loop {
                    let got = tokio::select! {
                        _ = stop.cancelled() => return,
                        got = sock.recv_from(&mut buf) => got,
                    };
                    let Some(inner) = weak.upgrade() else { return };
                    match got {
                        Ok((n, from)) => inner.dispatch(&buf[..n], from),
                        Err(err) => tracing::debug!(error = %err, "SNMP socket receive error."),
                    }
                }
            });
        }
        Ok(Engine {
            inner,
            _stop: Arc::new(stop.drop_guard()),
        })
    }

    /// Transport counters.
    pub fn stats(&self) -> &EngineStats {
        &self.inner.stats
    }

    /// Sends what `build(attempt)` returns to `addr` and waits for a datagram from `addr` carrying `id` that `accept`
    /// takes (`Some`); datagrams it refuses (`None`) are ignored. Up to `1 + retries` attempts of `timeout` each.
    pub async fn exchange<T>(
        &self,
        addr: SocketAddr,
        id: i32,
        timeout: Duration,
        retries: u32,
        mut build: impl FnMut(u32) -> Vec<u8>,
        mut accept: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<T, ExchangeError> {
        let sock = self.socket_for(addr)?;
        let _permit = self.inner.inflight.acquire().await;
        let (tx, mut rx) = mpsc::channel(WAITER_QUEUE);
        let _reg = Registration::new(&self.inner, id, addr, tx);
        for attempt in 0..=retries {
            let packet = build(attempt);
            sock.send_to(&packet, addr)
                .await
                .map_err(|source| ExchangeError::Send { addr, source })?;
            self.inner.stats.sent.fetch_add(1, Ordering::Relaxed);
            let deadline = tokio::time::Instant::now() + timeout;
            while let Ok(Some(bytes)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                if let Some(v) = accept(&bytes) {
                    return Ok(v);
                }
            }
        }
        Err(ExchangeError::Timeout {
            addr,
            attempts: retries + 1,
            timeout,
        })
    }

    /// A fresh request id, positive, not in use by a pending exchange.
    pub fn alloc_id(&self) -> i32 {
        let pending = self
            .inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            let id = (self.inner.next_id.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff) as i32;
            if id != 0 && !pending.contains_key(&id) {
                return id;
            }
        }
    }

    fn socket_for(&self, addr: SocketAddr) -> Result<Arc<UdpSocket>, ExchangeError> {
        match addr {
            SocketAddr::V4(_) => Ok(self.inner.v4.clone()),
            SocketAddr::V6(_) => self.inner.v6.clone().ok_or(ExchangeError::NoSocket(addr)),
        }
    }
}

impl Inner {
    fn dispatch(&self, bytes: &[u8], from: SocketAddr) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let Some(id) = peek_id(bytes) else {
            self.stats.unmatched.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        match pending.get(&id) {
            Some(w) if same_addr(w.addr, from) => {
                // A full queue means the device floods us; dropping is right.
                let _ = w.tx.try_send(bytes.to_vec());
            }
            Some(_) => {
                self.stats.wrong_source.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.stats.unmatched.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// Removes a pending id when the exchange ends, however it ends (including cancellation).
struct Registration<'a> {
    inner: &'a Inner,
    id: i32,
}

impl<'a> Registration<'a> {
    fn new(inner: &'a Inner, id: i32, addr: SocketAddr, tx: mpsc::Sender<Vec<u8>>) -> Self {
        inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Waiter { addr, tx });
        Registration { inner, id }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}
