//! Safety of active probing: one packet-rate budget for the whole process, and the allowlist of target ranges
//! a remote command may scan.
//!
//! The budget is a token bucket that *reserves* slots: each sender learns when its packet may leave, so
//! concurrent senders are spaced out evenly instead of bursting (bursts cause the loss a monitor measures).
//! The bucket itself is pure (time is an argument); [`PacketBudget`] puts it behind a lock and a clock.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::diag::target::Cidr;

/// Default process-wide cap, packets per second, for every diagnostic tool together.
pub const DEFAULT_MAX_PPS: u32 = 100_000;

/// A token bucket that lends ahead: `reserve` always succeeds and says how long to wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last_s: f64,
}

impl TokenBucket {
    /// `rate` tokens per second, at most `burst` saved up; starts full.
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        let rate = rate.max(1.0);
        let burst = burst.max(1.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last_s: 0.0,
        }
    }

    /// Takes `n` tokens at time `now_s` (seconds on a monotonic scale) and returns the seconds to wait before
    /// using them (0 when they were available).
    pub fn reserve(&mut self, now_s: f64, n: f64) -> f64 {
        if now_s > self.last_s {
            self.tokens = (self.tokens + (now_s - self.last_s) * self.rate).min(self.burst);
            self.last_s = now_s;
        }
        self.tokens -= n;
        if self.tokens >= 0.0 {
            0.0
        } else {
            -self.tokens / self.rate
        }
    }
}

/// A shared packet budget with a clock.
#[derive(Debug)]
pub struct PacketBudget {
    start: Instant,
    bucket: Mutex<TokenBucket>,
    rate: u32,
}

impl PacketBudget {
    /// A budget of `pps` packets per second with 10 ms of burst.
    pub fn new(pps: u32) -> PacketBudget {
        let rate = f64::from(pps.max(1));
        PacketBudget {
            start: Instant::now(),
            bucket: Mutex::new(TokenBucket::new(rate, (rate / 100.0).max(1.0))),
            rate: pps.max(1),
        }
    }

    /// The rate, packets per second.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Reserves `n` packets and returns how long the caller must wait before sending them (for send loops on
    /// blocking threads).
    pub fn reserve(&self, n: u32) -> Duration {
        let now = self.start.elapsed().as_secs_f64();
        let wait = match self.bucket.lock() {
            Ok(mut b) => b.reserve(now, f64::from(n)),
            Err(poisoned) => poisoned.into_inner().reserve(now, f64::from(n)),
        };
        Duration::from_secs_f64(wait.max(0.0))
    }

    /// Waits until `n` packets may be sent.
    pub async fn acquire(&self, n: u32) {
        let now = self.start.elapsed().as_secs_f64();
        let wait = match self.bucket.lock() {
            Ok(mut b) => b.reserve(now, f64::from(n)),
            Err(poisoned) => poisoned.into_inner().reserve(now, f64::from(n)),
        };
        // Below a millisecond the timer cannot wait precisely; the burst allowance absorbs it.
        if wait >= 0.001 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }
}

static GLOBAL: OnceLock<PacketBudget> = OnceLock::new();

/// Sets the process-wide cap; only the first call (or the first use of [`global`]) counts. Returns the cap in
/// force.
pub fn set_global_rate(pps: u32) -> u32 {
    GLOBAL.get_or_init(|| PacketBudget::new(pps)).rate()
}

/// The process-wide packet budget every probe engine draws from.
pub fn global() -> &'static PacketBudget {
    GLOBAL.get_or_init(|| PacketBudget::new(DEFAULT_MAX_PPS))
}

/// A target refused by the allowlist.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{target} is outside the ranges allowed for this POP")]
pub struct NotAllowed {
    /// The refused target.
    pub target: Cidr,
}

/// The ranges a provider allows remote-command scans to reach from one POP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    ranges: Vec<Cidr>,
}

impl Allowlist {
    /// An allowlist of `ranges` (empty = nothing allowed).
    pub fn new(ranges: Vec<Cidr>) -> Allowlist {
        Allowlist { ranges }
    }

    /// Accepts `targets` only when every one lies entirely inside an allowed range.
    pub fn check(&self, targets: &[Cidr]) -> Result<(), NotAllowed> {
        for t in targets {
            if !self.ranges.iter().any(|r| r.covers(t)) {
                return Err(NotAllowed { target: *t });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_spaces_out_reservations() {
        let mut b = TokenBucket::new(1000.0, 10.0);
        for _ in 0..10 {
            assert_eq!(b.reserve(0.0, 1.0), 0.0);
        }
        // The 11th packet waits one slot, the 20th ten.
        assert!((b.reserve(0.0, 1.0) - 0.001).abs() < 1e-9);
        for _ in 0..9 {
            b.reserve(0.0, 1.0);
        }
        assert!((b.reserve(0.0, 0.0) - 0.010).abs() < 1e-9);
        // After a quiet second the bucket is full again, never more than the burst.
        assert_eq!(b.reserve(2.0, 10.0), 0.0);
        assert!(b.reserve(2.0, 1.0) > 0.0);
    }

    #[test]
    fn allowlist_needs_full_containment() {
        let p = |s: &str| {
            s.parse::<Cidr>()
                .unwrap_or(Cidr::new([0, 0, 0, 0].into(), 32))
        };
        let a = Allowlist::new(vec![p("198.51.100.0/24"), p("2001:db8::/32")]);
        assert_eq!(a.check(&[p("198.51.100.7"), p("2001:db8:1::/64")]), Ok(()));
        assert_eq!(
            a.check(&[p("198.51.0.0/16")]),
            Err(NotAllowed {
                target: p("198.51.0.0/16")
            })
        );
        assert!(Allowlist::default().check(&[p("192.0.2.1")]).is_err());
    }
}
