//! Probe statistics, pure: RTT summaries (min/avg/max/p95/stdev/jitter/loss), sliding windows over time,
//! per-hop MTR accounting and an RFC 6298 RTT estimator for adaptive timeouts.
//!
//! Nothing here touches a socket or a clock: every function takes the RTTs (milliseconds, `None` = lost) and
//! the times (milliseconds on any monotonic scale) as arguments, so it is unit tested without a network.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use serde::Serialize;

/// The statistics of a series of probes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RttSummary {
    /// Probes sent.
    pub sent: u64,
    /// Replies received.
    pub received: u64,
    /// Lost probes in percent, 0..=100.
    pub loss_pct: f64,
    /// RTT of the newest reply, ms.
    pub last_ms: Option<f64>,
    /// Smallest RTT, ms.
    pub min_ms: Option<f64>,
    /// Mean RTT, ms.
    pub avg_ms: Option<f64>,
    /// Largest RTT, ms.
    pub max_ms: Option<f64>,
    /// 95th percentile RTT (nearest rank), ms.
    pub p95_ms: Option<f64>,
    /// Population standard deviation of the RTTs, ms.
    pub stdev_ms: Option<f64>,
    /// Mean absolute difference between consecutive replies' RTTs (mtr's "Javg"), ms.
    pub jitter_ms: Option<f64>,
}

impl RttSummary {
    /// Reduces a series of probes in sending order (`None` = lost).
    pub fn from_probes<'a>(probes: impl IntoIterator<Item = &'a Option<f64>>) -> RttSummary {
        let mut sent = 0u64;
        let mut got = Vec::new();
        for p in probes {
            sent += 1;
            if let Some(v) = p {
                got.push(*v);
            }
        }
        let received = got.len() as u64;
        let loss_pct = if sent == 0 {
            0.0
        } else {
            (sent - received) as f64 * 100.0 / sent as f64
        };
        if got.is_empty() {
            return RttSummary {
                sent,
                received,
                loss_pct,
                last_ms: None,
                min_ms: None,
                avg_ms: None,
                max_ms: None,
                p95_ms: None,
                stdev_ms: None,
                jitter_ms: None,
            };
        }
        let n = got.len() as f64;
        let avg = got.iter().sum::<f64>() / n;
        let var = got.iter().map(|v| (v - avg).powi(2)).sum::<f64>() / n;
        let jitter = if got.len() > 1 {
            Some(got.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / (n - 1.0))
        } else {
            None
        };
        let last = got.last().copied();
        let mut sorted = got;
        sorted.sort_by(f64::total_cmp);
        // Nearest rank: the smallest value with at least 95 % of the values at or below it.
        let rank = ((0.95 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        RttSummary {
            sent,
            received,
            loss_pct,
            last_ms: last,
            min_ms: sorted.first().copied(),
            avg_ms: Some(avg),
            max_ms: sorted.last().copied(),
            p95_ms: Some(sorted[rank - 1]),
            stdev_ms: Some(var.sqrt()),
            jitter_ms: jitter,
        }
    }
}

/// The probes of the last `span_ms` milliseconds, for loss and latency over a sliding window.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    span_ms: u64,
    probes: VecDeque<(u64, Option<f64>)>,
}

impl SlidingWindow {
    /// A window covering `span_ms` milliseconds.
    pub fn new(span_ms: u64) -> SlidingWindow {
        SlidingWindow {
            span_ms,
            probes: VecDeque::new(),
        }
    }

    /// Records the outcome of a probe sent at `sent_ms` and forgets probes older than the window.
    pub fn push(&mut self, sent_ms: u64, rtt_ms: Option<f64>) {
        self.probes.push_back((sent_ms, rtt_ms));
        self.expire(sent_ms);
    }

    /// Forgets probes sent before `now_ms - span`.
    pub fn expire(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(self.span_ms);
        while self.probes.front().is_some_and(|(t, _)| *t < horizon) {
            self.probes.pop_front();
        }
    }

    /// The statistics of the probes in the window.
    pub fn summary(&self) -> RttSummary {
        RttSummary::from_probes(self.probes.iter().map(|(_, r)| r))
    }
}

/// Per-hop accounting of an MTR: each round reports, per TTL, who answered and after how long.
#[derive(Debug, Clone, Default)]
pub struct HopTable {
    hops: BTreeMap<u8, HopAccount>,
    /// The smallest TTL at which the target itself answered, over all rounds.
    target_ttl: Option<u8>,
    rounds: u64,
}

#[derive(Debug, Clone, Default)]
struct HopAccount {
    probes: Vec<Option<f64>>,
    addrs: Vec<(IpAddr, u64)>,
    mpls: Vec<u32>,
}

/// One probe of a round: its TTL and, when answered, the responder and the RTT in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HopProbe {
    /// Time to live the probe was sent with.
    pub ttl: u8,
    /// The responder and RTT, `None` when no reply came.
    pub reply: Option<(IpAddr, f64)>,
}

/// The statistics of one hop.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HopReport {
    /// Time to live, 1 = first hop.
    pub ttl: u8,
    /// The address that answered most often, `None` when nobody answered ("???").
    pub ip: Option<IpAddr>,
    /// Every address that answered at this TTL (ECMP or route changes), with its reply count.
    pub addrs: Vec<(IpAddr, u64)>,
    /// Loss and RTTs.
    #[serde(flatten)]
    pub stats: RttSummary,
    /// Every probe's RTT in sending order (`None` = lost), for traceroute-style output.
    #[serde(skip)]
    pub probes: Vec<Option<f64>>,
    /// MPLS labels (outermost first) of the newest reply that carried an RFC 4950 extension.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mpls: Vec<u32>,
}

impl HopTable {
    /// An empty table.
    pub fn new() -> HopTable {
        HopTable::default()
    }

    /// Adds a finished round. `target` is the traced address: the TTL where it answers ends the path.
    pub fn add_round(&mut self, target: IpAddr, probes: &[HopProbe]) {
        self.rounds += 1;
        for p in probes {
            if p.ttl == 0 {
                continue;
            }
            let acc = self.hops.entry(p.ttl).or_default();
            acc.probes.push(p.reply.map(|(_, rtt)| rtt));
            if let Some((ip, _)) = p.reply {
                match acc.addrs.iter_mut().find(|(a, _)| *a == ip) {
                    Some((_, n)) => *n += 1,
                    None => acc.addrs.push((ip, 1)),
                }
                if ip == target && self.target_ttl.is_none_or(|t| p.ttl < t) {
                    self.target_ttl = Some(p.ttl);
                }
            }
        }
    }

    /// Records the MPLS label stack a reply at `ttl` carried (the newest stack wins).
    pub fn add_mpls(&mut self, ttl: u8, labels: &[u32]) {
        if !labels.is_empty() {
            self.hops.entry(ttl).or_default().mpls = labels.to_vec();
        }
    }

    /// Rounds added so far.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// Whether the target answered in some round.
    pub fn reached(&self) -> bool {
        self.target_ttl.is_some()
    }

    /// The hops up to the target (or up to the last TTL that anybody answered when the target never did).
    pub fn report(&self) -> Vec<HopReport> {
        let last = self.target_ttl.or_else(|| {
            self.hops
                .iter()
                .rev()
                .find(|(_, a)| !a.addrs.is_empty())
                .map(|(t, _)| *t)
        });
        let Some(last) = last else {
            return Vec::new();
        };
        (1..=last)
            .map(|ttl| {
                let acc = self.hops.get(&ttl);
                let mut addrs = acc.map(|a| a.addrs.clone()).unwrap_or_default();
                addrs.sort_by_key(|a| std::cmp::Reverse(a.1));
                HopReport {
                    ttl,
                    ip: addrs.first().map(|(ip, _)| *ip),
                    addrs,
                    stats: RttSummary::from_probes(acc.map(|a| a.probes.as_slice()).unwrap_or(&[])),
                    probes: acc.map(|a| a.probes.clone()).unwrap_or_default(),
                    mpls: acc.map(|a| a.mpls.clone()).unwrap_or_default(),
                }
            })
            .collect()
    }
}

/// Round-trip time estimator of RFC 6298 (the one nmap and TCP use) giving adaptive probe timeouts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RttEstimator {
    srtt_ms: Option<f64>,
    rttvar_ms: f64,
    min_ms: f64,
    max_ms: f64,
    initial_ms: f64,
}

impl RttEstimator {
    /// An estimator whose timeout starts at `initial_ms` and stays within `min_ms..=max_ms`.
    pub fn new(initial_ms: f64, min_ms: f64, max_ms: f64) -> RttEstimator {
        RttEstimator {
            srtt_ms: None,
            rttvar_ms: 0.0,
            min_ms,
            max_ms,
            initial_ms,
        }
    }

    /// Feeds one measured RTT.
    pub fn observe(&mut self, rtt_ms: f64) {
        match self.srtt_ms {
            None => {
                self.srtt_ms = Some(rtt_ms);
                self.rttvar_ms = rtt_ms / 2.0;
            }
            Some(srtt) => {
                self.rttvar_ms = 0.75 * self.rttvar_ms + 0.25 * (srtt - rtt_ms).abs();
                self.srtt_ms = Some(0.875 * srtt + 0.125 * rtt_ms);
            }
        }
    }

    /// The timeout to use for the next probe, ms.
    pub fn timeout_ms(&self) -> f64 {
        match self.srtt_ms {
            None => self.initial_ms,
            Some(srtt) => (srtt + 4.0 * self.rttvar_ms).clamp(self.min_ms, self.max_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_mixed_probes() {
        let s = RttSummary::from_probes(&[Some(10.0), None, Some(20.0), Some(30.0), None]);
        assert_eq!((s.sent, s.received), (5, 3));
        assert_eq!(s.loss_pct, 40.0);
        assert_eq!(
            (s.min_ms, s.avg_ms, s.max_ms),
            (Some(10.0), Some(20.0), Some(30.0))
        );
        assert_eq!(s.last_ms, Some(30.0));
        assert_eq!(s.jitter_ms, Some(10.0));
        assert_eq!(s.p95_ms, Some(30.0));
        let sd = s.stdev_ms.unwrap_or_default();
        assert!((sd - 8.1649).abs() < 1e-3, "{sd}");
    }

    #[test]
    fn summary_of_nothing_answered() {
        let s = RttSummary::from_probes(&[None, None]);
        assert_eq!(s.loss_pct, 100.0);
        assert_eq!(s.avg_ms, None);
        let s = RttSummary::from_probes(&[]);
        assert_eq!((s.sent, s.loss_pct), (0, 0.0));
    }

    #[test]
    fn p95_is_nearest_rank() {
        let probes: Vec<Option<f64>> = (1..=100).map(|v| Some(f64::from(v))).collect();
        assert_eq!(RttSummary::from_probes(&probes).p95_ms, Some(95.0));
        let probes: Vec<Option<f64>> = (1..=10).map(|v| Some(f64::from(v))).collect();
        assert_eq!(RttSummary::from_probes(&probes).p95_ms, Some(10.0));
    }

    #[test]
    fn window_forgets_old_probes() {
        let mut w = SlidingWindow::new(10_000);
        w.push(0, None);
        w.push(5_000, Some(1.0));
        assert_eq!(w.summary().loss_pct, 50.0);
        w.push(12_000, Some(3.0));
        let s = w.summary();
        assert_eq!((s.sent, s.loss_pct, s.avg_ms), (2, 0.0, Some(2.0)));
        w.expire(40_000);
        assert_eq!(w.summary().sent, 0);
    }

    #[test]
    fn hop_table_stops_at_target_and_keeps_silent_hops() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let target = ip("203.0.113.2");
        let mut t = HopTable::new();
        for round in 0..4 {
            let lost_last = round == 3;
            t.add_round(
                target,
                &[
                    HopProbe {
                        ttl: 1,
                        reply: Some((ip("192.0.2.1"), 1.0)),
                    },
                    HopProbe {
                        ttl: 2,
                        reply: None,
                    },
                    HopProbe {
                        ttl: 3,
                        reply: (!lost_last).then_some((target, 3.0)),
                    },
                    // Probes beyond the target also answer from the target: not hops.
                    HopProbe {
                        ttl: 4,
                        reply: Some((target, 3.0)),
                    },
                ],
            );
        }
        let r = t.report();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].ip, Some(ip("192.0.2.1")));
        assert_eq!(r[1].ip, None);
        assert_eq!(r[1].stats.loss_pct, 100.0);
        assert_eq!(r[2].ip, Some(target));
        assert_eq!(r[2].stats.loss_pct, 25.0);
        assert!(t.reached());
        assert!(r[0].mpls.is_empty());
        t.add_mpls(1, &[16_004, 3]);
        assert_eq!(t.report()[0].mpls, vec![16_004, 3]);
    }

    #[test]
    fn hop_table_without_target_ends_at_last_answer() {
        let mut t = HopTable::new();
        let r1 = IpAddr::from([192, 0, 2, 1]);
        t.add_round(
            IpAddr::from([203, 0, 113, 9]),
            &[
                HopProbe {
                    ttl: 1,
                    reply: Some((r1, 1.0)),
                },
                HopProbe {
                    ttl: 2,
                    reply: None,
                },
            ],
        );
        assert_eq!(t.report().len(), 1);
        assert!(!t.reached());
    }

    #[test]
    fn estimator_adapts_and_is_bounded() {
        let mut e = RttEstimator::new(1000.0, 50.0, 5000.0);
        assert_eq!(e.timeout_ms(), 1000.0);
        for _ in 0..20 {
            e.observe(1.0);
        }
        assert_eq!(e.timeout_ms(), 50.0);
        e.observe(4000.0);
        assert!(e.timeout_ms() > 1000.0);
        for _ in 0..5 {
            e.observe(100_000.0);
        }
        assert_eq!(e.timeout_ms(), 5000.0);
    }
}
