//! Rates from counters, with wrap and reset detection: a pure calculator that takes readings and times as
//! arguments, so every case (32-bit wrap, device reboot, sysUpTime wrap, cleared counters) is unit tested.
//!
//! Rules, in order:
//! 1. No previous reading, or time not moving forward: no rate.
//! 2. The device rebooted (sysUpTime went backwards and is not its own 2^32 wrap) or the counter's discontinuity
//!    time changed: no rate; the new reading is the next baseline.
//! 3. The counter went up: delta / elapsed.
//! 4. The counter went down: a 32-bit counter wrapped once (delta = value + 2^32 - previous); a 64-bit counter
//!    cannot wrap in practice, so it was reset: no rate.
//! 5. A rate above `max_rate` (from ifSpeed, when known) is impossible: no rate. This catches counters cleared
//!    by an operator on 32-bit devices, which otherwise look like a wrap and would draw a spike.

/// Width of a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// Counter32.
    Bits32,
    /// Counter64.
    Bits64,
}

/// One reading of a counter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The counter value.
    pub value: u64,
    /// When it was read, milliseconds (any monotonic or wall clock, the same for both readings).
    pub at_ms: i64,
    /// sysUpTime at the read, hundredths of a second, when known.
    pub uptime: Option<u32>,
    /// The counter's discontinuity marker (ifCounterDiscontinuityTime), when known.
    pub discontinuity: Option<u32>,
}

/// Why no rate was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRate {
    /// First reading.
    First,
    /// Time did not advance.
    NoElapsed,
    /// The device restarted or the counter was reset.
    Reset,
    /// The rate would exceed the physical maximum.
    Implausible,
}

/// Whether the device restarted between two sysUpTime readings `elapsed_ms` apart.
pub fn rebooted(prev_uptime: u32, cur_uptime: u32, elapsed_ms: i64) -> bool {
    if cur_uptime >= prev_uptime {
        // Uptime advanced; it still restarted if it advanced far less than the wall clock (rebooted and ran for
        // less than the interval) only when the reading is smaller than the elapsed time.
        let advanced_ms = i64::from(cur_uptime - prev_uptime) * 10;
        return elapsed_ms > 0
            && advanced_ms + 60_000 < elapsed_ms
            && i64::from(cur_uptime) * 10 < elapsed_ms;
    }
    // Went backwards: either its own 2^32 wrap (~497 days) or a restart.
    let expected = i64::from(prev_uptime) + elapsed_ms / 10;
    let wrap = 1i64 << 32;
    if expected >= wrap {
        let wrapped = expected - wrap;
        let tolerance = elapsed_ms / 10 / 2 + 1_000;
        return (i64::from(cur_uptime) - wrapped).abs() > tolerance;
    }
    true
}

/// The rate per second between two readings of one counter.
pub fn rate(
    prev: Option<&Reading>,
    cur: &Reading,
    width: Width,
    max_rate: Option<f64>,
) -> Result<f64, NoRate> {
    let prev = prev.ok_or(NoRate::First)?;
    let elapsed_ms = cur.at_ms - prev.at_ms;
    if elapsed_ms <= 0 {
        return Err(NoRate::NoElapsed);
    }
    if let (Some(p), Some(c)) = (prev.uptime, cur.uptime)
        && rebooted(p, c, elapsed_ms)
    {
        return Err(NoRate::Reset);
    }
    if let (Some(p), Some(c)) = (prev.discontinuity, cur.discontinuity)
        && p != c
    {
        return Err(NoRate::Reset);
    }
    let delta = if cur.value >= prev.value {
        cur.value - prev.value
    } else {
        match width {
            Width::Bits32 if prev.value <= u64::from(u32::MAX) => {
                (cur.value + (1u64 << 32)) - prev.value
            }
            _ => return Err(NoRate::Reset),
        }
    };
    let r = delta as f64 * 1000.0 / elapsed_ms as f64;
    if max_rate.is_some_and(|m| m > 0.0 && r > m) {
        return Err(NoRate::Implausible);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(value: u64, at_s: i64, uptime_s: u32) -> Reading {
        Reading {
            value,
            at_ms: at_s * 1000,
            uptime: Some(uptime_s * 100),
            discontinuity: None,
        }
    }

    #[test]
    fn steady_counter() {
        let a = r(1000, 0, 100);
        let b = r(4000, 60, 160);
        assert_eq!(rate(Some(&a), &b, Width::Bits64, None), Ok(50.0));
        assert_eq!(rate(None, &b, Width::Bits64, None), Err(NoRate::First));
        assert_eq!(
            rate(Some(&b), &a, Width::Bits64, None),
            Err(NoRate::NoElapsed)
        );
    }

    #[test]
    fn counter32_wrap_gives_the_true_rate() {
        let a = r(u64::from(u32::MAX) - 999, 0, 100);
        let b = r(2000, 10, 110);
        assert_eq!(rate(Some(&a), &b, Width::Bits32, Some(1e9)), Ok(300.0));
    }

    #[test]
    fn counter64_going_down_is_a_reset_not_a_wrap() {
        let a = r(5_000_000_000, 0, 100);
        let b = r(10, 10, 110);
        assert_eq!(rate(Some(&a), &b, Width::Bits64, None), Err(NoRate::Reset));
    }

    #[test]
    fn reboot_gives_no_spike() {
        // Counter restarted from 0 after a reboot: without the uptime check a 32-bit "wrap" would be ~4 Gbit.
        let a = r(3_000_000_000, 0, 90_000);
        let b = r(1_000, 60, 30);
        assert_eq!(rate(Some(&a), &b, Width::Bits32, None), Err(NoRate::Reset));
        // And the next interval is normal again.
        let c = r(7_000, 120, 90);
        assert_eq!(rate(Some(&b), &c, Width::Bits32, None), Ok(100.0));
    }

    #[test]
    fn reboot_with_uptime_beyond_the_old_one_is_still_seen() {
        // Polled every 10 min; the device rebooted 2 minutes after the last poll.
        let a = r(500, 0, 100);
        let b = r(100, 600, 480);
        assert!(rebooted(100 * 100, 480 * 100, 600_000));
        assert_eq!(rate(Some(&a), &b, Width::Bits64, None), Err(NoRate::Reset));
    }

    #[test]
    fn uptime_wrap_is_not_a_reboot() {
        let prev = u32::MAX - 500; // 5 s before the 497-day wrap
        assert!(!rebooted(prev, 500, 10_000));
        assert!(rebooted(prev, 90_000, 10_000));
    }

    #[test]
    fn cleared_counter_caught_by_max_rate() {
        let a = r(3_000_000_000, 0, 100);
        let b = r(10, 10, 110);
        // 1 Gbit/s interface = 125 MB/s; the "wrap" would mean ~129 MB/s.
        assert_eq!(
            rate(Some(&a), &b, Width::Bits32, Some(125e6)),
            Err(NoRate::Implausible)
        );
    }

    #[test]
    fn discontinuity_marker_change_is_a_reset() {
        let mut a = r(100, 0, 100);
        let mut b = r(200, 10, 110);
        a.discontinuity = Some(5);
        b.discontinuity = Some(9);
        assert_eq!(rate(Some(&a), &b, Width::Bits64, None), Err(NoRate::Reset));
    }
}
