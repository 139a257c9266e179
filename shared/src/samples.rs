//! Columnar wire form of metric samples ([`SampleBlock`]), built to be tiny once the frame is zstd-compressed.
//!
//! Samples are grouped into *runs*, one per series, in ascending series order; inside a run they are in
//! timestamp order (samples with the same series and timestamp keep their input order, so duplicates survive).
//! Besides `count` and `base_ts_ms` (the first run's first timestamp), every field is a column: a byte string
//! of LEB128 varints (signed numbers zigzag-encoded), each a homogeneous stream that zstd compresses well:
//!
//! | column      | one entry per      | content                                                                    |
//! | ----------- | ------------------ | -------------------------------------------------------------------------- |
//! | `series`    | run                | series id minus the previous run's (wrapping), the first minus 0           |
//! | `run_lens`  | run                | number of samples in the run (at least 1)                                  |
//! | `run_ts`    | run                | first timestamp of the run minus the previous run's (the first run's minus |
//! |             |                    | `base_ts_ms`), zigzag: series polled together cost zeros                   |
//! | `ts`        | sample but a run's first | delta-of-delta of timestamps (zigzag); the first delta is itself     |
//! | `ints`      | integer value      | per run: first value, then delta, then delta-of-delta (zigzag), stored as  |
//! |             |                    | *byte planes*: plane `k` holds byte `k` of each varint that has one        |
//! | `float_pos` | float value        | gap (number of integer values) since the previous float's position         |
//! | `floats`    | float value        | f64 bits XOR the previous float's bits in the run (0 at run start)         |
//!
//! Byte planes matter when a batch holds one sample per series (the usual case for SNMP counters polled every
//! minute): every value is then a raw counter, and plane 0 (all low bits) and the high planes (sparse, mostly
//! small) compress better apart than interleaved. `examples/wire_size.rs` measures the result.
//!
//! A value is *integer* when it survives `f64 -> i64 -> f64` with the very same bits (so `-0.0`, NaN, infinities
//! and fractions are floats); integer chains use wrapping arithmetic and floats are carried as raw bit patterns,
//! so every `f64` round-trips exactly. Positions count samples in block order.
//!
//! Decoding validates everything: each column must be consumed exactly, run lengths must fit the declared
//! count, and the count must be justified by column bytes before anything is allocated (every sample costs at
//! least one byte of `run_ts` or `ts`), so a crafted block yields [`DecodeError::InvalidSamples`], never a
//! panic or an allocation out of proportion with its size.

use serde::{Deserialize, Serialize};

use crate::frame::DecodeError;
use crate::protocol::Sample;

/// Samples of a batch in columnar form. Build one with [`SampleBlock::encode`], read it with
/// [`SampleBlock::decode`]; the layout is described in the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SampleBlock {
    /// Number of samples.
    count: u64,
    /// First timestamp of the first run; run timestamps are deltas starting from it.
    base_ts_ms: i64,
    /// Series id deltas, one per run.
    series: Vec<u8>,
    /// Run lengths, one per run.
    run_lens: Vec<u8>,
    /// First timestamp of each run, as a delta from the previous run's.
    run_ts: Vec<u8>,
    /// Timestamp delta-of-deltas, one per sample that is not first in its run.
    ts: Vec<u8>,
    /// Integer values, delta-of-delta within a run, as varint byte planes: plane `k` holds byte `k` of every
    /// varint that has one.
    ints: Vec<Vec<u8>>,
    /// Positions of float values, as gaps.
    float_pos: Vec<u8>,
    /// Float values, bits XOR the previous float of the run.
    floats: Vec<u8>,
}

impl SampleBlock {
    /// Encodes samples into columnar form. The order may change (grouped by series, by timestamp within a
    /// series); the multiset of samples is preserved exactly, bit for bit.
    pub fn encode(samples: &[Sample]) -> SampleBlock {
        let mut sorted: Vec<Sample> = samples.to_vec();
        sorted.sort_by_key(|s| (s.series, s.ts_ms)); // stable: duplicates keep their order
        let mut block = SampleBlock {
            count: sorted.len() as u64,
            base_ts_ms: sorted.first().map_or(0, |s| s.ts_ms),
            ..SampleBlock::default()
        };
        let mut prev_series = 0u64;
        let mut prev_run_ts = block.base_ts_ms;
        let mut next_float_pos = 0u64; // position right after the previous float
        let mut position = 0u64;
        for run in sorted.chunk_by(|a, b| a.series == b.series) {
            let first = run[0];
            put_u64(&mut block.series, first.series.wrapping_sub(prev_series));
            prev_series = first.series;
            put_u64(&mut block.run_lens, run.len() as u64);
            put_i64(&mut block.run_ts, first.ts_ms.wrapping_sub(prev_run_ts));
            prev_run_ts = first.ts_ms;

            let mut ts = DeltaOfDelta::default();
            let mut ints = DeltaOfDelta::default();
            let mut prev_float_bits = 0u64;
            for (k, sample) in run.iter().enumerate() {
                let ts_code = ts.push(sample.ts_ms);
                if k > 0 {
                    put_i64(&mut block.ts, ts_code);
                }
                match as_integer(sample.value) {
                    Some(int) => put_i64_planes(&mut block.ints, ints.push(int)),
                    None => {
                        put_u64(&mut block.float_pos, position - next_float_pos);
                        next_float_pos = position + 1;
                        let bits = sample.value.to_bits();
                        put_u64(&mut block.floats, bits ^ prev_float_bits);
                        prev_float_bits = bits;
                    }
                }
                position += 1;
            }
        }
        block
    }

    /// Decodes the samples, grouped by series and in timestamp order within a series.
    ///
    /// Every count and length is validated; a malformed block is an [`DecodeError::InvalidSamples`] error.
    pub fn decode(&self) -> Result<Vec<Sample>, DecodeError> {
        let count =
            usize::try_from(self.count).map_err(|_| invalid("count does not fit in memory"))?;
        // Each sample costs at least one byte of `run_ts` (first of a run) or `ts` (the others).
        if count > self.run_ts.len().saturating_add(self.ts.len()) {
            return Err(invalid(format!(
                "count {count} exceeds what {} timestamp bytes can hold",
                self.run_ts.len() + self.ts.len()
            )));
        }
        let mut out = Vec::with_capacity(count);
        let mut series_col = Reader::new(&self.series, "series");
        let mut run_lens = Reader::new(&self.run_lens, "run_lens");
        let mut run_ts = Reader::new(&self.run_ts, "run_ts");
        let mut ts_col = Reader::new(&self.ts, "ts");
        let mut ints_col = PlaneReader::new(&self.ints)?;
        let mut pos_col = Reader::new(&self.float_pos, "float_pos");
        let mut floats_col = Reader::new(&self.floats, "floats");

        let mut next_float = next_float_position(&mut pos_col, 0)?;
        let mut series = 0u64;
        let mut prev_run_ts = self.base_ts_ms;
        while !run_lens.is_empty() {
            series = series.wrapping_add(series_col.u64()?);
            let len = run_lens.u64()?;
            let remaining = (count - out.len()) as u64;
            if len == 0 || len > remaining {
                return Err(invalid(format!(
                    "run of series {series} claims {len} samples, {remaining} remain of the count"
                )));
            }
            let first_ts = prev_run_ts.wrapping_add(run_ts.i64()?);
            prev_run_ts = first_ts;
            let mut ts = DeltaOfDelta::default();
            let mut ints = DeltaOfDelta::default();
            let mut prev_float_bits = 0u64;
            for k in 0..len {
                let ts_ms = if k == 0 {
                    ts.start(first_ts)
                } else {
                    ts.next(ts_col.i64()?)
                };
                let position = out.len() as u64;
                let value = if next_float == Some(position) {
                    prev_float_bits ^= floats_col.u64()?;
                    next_float = next_float_position(&mut pos_col, position + 1)?;
                    f64::from_bits(prev_float_bits)
                } else {
                    ints.next_or_start(ints_col.i64()?) as f64
                };
                out.push(Sample {
                    series,
                    ts_ms,
                    value,
                });
            }
        }
        if out.len() != count {
            return Err(invalid(format!(
                "runs hold {} samples, the count says {count}",
                out.len()
            )));
        }
        if let Some(position) = next_float {
            return Err(invalid(format!(
                "float position {position} is past the last sample"
            )));
        }
        for column in [&series_col, &ts_col, &run_ts, &pos_col, &floats_col] {
            column.expect_end()?;
        }
        ints_col.expect_end()?;
        Ok(out)
    }

    /// Size in bytes of each column, by name, to see where the bytes of a block go (and what zstd makes of
    /// each one); the column names are those of the [module documentation](self).
    pub fn column_sizes(&self) -> Vec<(&'static str, &[u8])> {
        let mut columns = vec![
            ("series", &self.series[..]),
            ("run_lens", &self.run_lens[..]),
            ("run_ts", &self.run_ts[..]),
            ("ts", &self.ts[..]),
        ];
        const PLANES: [&str; MAX_VARINT_LEN] = [
            "ints[0]", "ints[1]", "ints[2]", "ints[3]", "ints[4]", "ints[5]", "ints[6]", "ints[7]",
            "ints[8]", "ints[9]",
        ];
        columns.extend(
            PLANES
                .iter()
                .zip(&self.ints)
                .map(|(name, plane)| (*name, &plane[..])),
        );
        columns.push(("float_pos", &self.float_pos[..]));
        columns.push(("floats", &self.floats[..]));
        columns
    }

    /// Number of samples the block declares ([`SampleBlock::decode`] checks that the columns agree).
    pub fn len(&self) -> usize {
        usize::try_from(self.count).unwrap_or(usize::MAX)
    }

    /// True when the block declares no samples.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// The value as an integer when converting it back gives the very same bits.
fn as_integer(value: f64) -> Option<i64> {
    let int = value as i64; // saturating; NaN becomes 0
    ((int as f64).to_bits() == value.to_bits()).then_some(int)
}

/// Reads the next float position, `after` being the first position it may take.
fn next_float_position(col: &mut Reader<'_>, after: u64) -> Result<Option<u64>, DecodeError> {
    if col.is_empty() {
        return Ok(None);
    }
    let gap = col.u64()?;
    after
        .checked_add(gap)
        .map(Some)
        .ok_or_else(|| invalid("float position overflows"))
}

/// Delta-of-delta state of one run, shared by the encoder and the decoder.
///
/// The first value is coded as itself, the second as its delta from the first, the others as the change of
/// delta. All arithmetic wraps, so any `i64` sequence round-trips and no input can overflow.
#[derive(Debug, Default)]
struct DeltaOfDelta {
    /// Values seen in the run so far (saturating at 2).
    seen: u8,
    prev: i64,
    prev_delta: i64,
}

impl DeltaOfDelta {
    /// Encoder side: the code for `value`.
    fn push(&mut self, value: i64) -> i64 {
        let code = match self.seen {
            0 => value,
            1 => value.wrapping_sub(self.prev),
            _ => value.wrapping_sub(self.prev).wrapping_sub(self.prev_delta),
        };
        self.accept(value);
        code
    }

    /// Decoder side: the run's first value, given in full.
    fn start(&mut self, value: i64) -> i64 {
        self.accept(value);
        value
    }

    /// Decoder side: the value for `code`, which must not be the first of the run.
    fn next(&mut self, code: i64) -> i64 {
        let delta = if self.seen >= 2 {
            self.prev_delta.wrapping_add(code)
        } else {
            code
        };
        let value = self.prev.wrapping_add(delta);
        self.accept(value);
        value
    }

    /// Decoder side: the value for `code`, whichever position it has in the run.
    fn next_or_start(&mut self, code: i64) -> i64 {
        if self.seen == 0 {
            self.start(code)
        } else {
            self.next(code)
        }
    }

    fn accept(&mut self, value: i64) {
        if self.seen > 0 {
            self.prev_delta = value.wrapping_sub(self.prev);
        }
        self.prev = value;
        self.seen = self.seen.saturating_add(1).min(2);
    }
}

fn invalid(msg: impl Into<String>) -> DecodeError {
    DecodeError::InvalidSamples(msg.into())
}

/// Appends `value` as an LEB128 varint.
fn put_u64(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends `value` zigzag-encoded as an LEB128 varint.
fn put_i64(out: &mut Vec<u8>, value: i64) {
    put_u64(out, ((value << 1) ^ (value >> 63)) as u64);
}

/// Longest LEB128 encoding of a u64.
const MAX_VARINT_LEN: usize = 10;

/// Appends `value` zigzag-encoded as an LEB128 varint spread over byte planes: byte `k` goes to `planes[k]`.
///
/// Compared with one stream of varints, each plane is homogeneous (plane 0 holds the low bits of every value,
/// the last planes only the high bits of the few large ones), which zstd compresses better.
fn put_i64_planes(planes: &mut Vec<Vec<u8>>, value: i64) {
    let mut bytes = Vec::with_capacity(MAX_VARINT_LEN);
    put_i64(&mut bytes, value);
    if planes.len() < bytes.len() {
        planes.resize_with(bytes.len(), Vec::new);
    }
    for (plane, byte) in planes.iter_mut().zip(bytes) {
        plane.push(byte);
    }
}

/// Reads varints written by [`put_i64_planes`].
#[derive(Debug)]
struct PlaneReader<'a> {
    planes: Vec<&'a [u8]>,
}

impl<'a> PlaneReader<'a> {
    fn new(planes: &'a [Vec<u8>]) -> Result<Self, DecodeError> {
        if planes.len() > MAX_VARINT_LEN {
            return Err(invalid(format!(
                "{} integer byte planes, at most {MAX_VARINT_LEN} are possible",
                planes.len()
            )));
        }
        Ok(PlaneReader {
            planes: planes.iter().map(Vec::as_slice).collect(),
        })
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        let mut bytes = [0u8; MAX_VARINT_LEN];
        for (k, plane) in self.planes.iter_mut().enumerate() {
            let Some((&byte, rest)) = plane.split_first() else {
                break;
            };
            *plane = rest;
            bytes[k] = byte;
            if byte & 0x80 == 0 {
                return Reader::new(&bytes[..=k], "ints").i64();
            }
        }
        Err(invalid("integer byte planes end inside a value"))
    }

    fn expect_end(&self) -> Result<(), DecodeError> {
        match self.planes.iter().position(|plane| !plane.is_empty()) {
            None => Ok(()),
            Some(k) => Err(invalid(format!(
                "unused bytes at the end of integer byte plane {k}"
            ))),
        }
    }
}

/// Bounds-checked varint reader over one column.
#[derive(Debug)]
struct Reader<'a> {
    bytes: &'a [u8],
    name: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], name: &'static str) -> Self {
        Reader { bytes, name }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for (i, &byte) in self.bytes.iter().enumerate().take(MAX_VARINT_LEN) {
            let bits = u64::from(byte & 0x7f);
            if i == 9 && byte > 1 {
                return Err(invalid(format!(
                    "varint overflows u64 in column {}",
                    self.name
                )));
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[i + 1..];
                return Ok(value);
            }
        }
        Err(invalid(format!(
            "column {} ends inside a value or is too short",
            self.name
        )))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        let raw = self.u64()?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    fn expect_end(&self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(invalid(format!(
                "{} unused bytes at the end of column {}",
                self.bytes.len(),
                self.name
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(series: u64, ts_ms: i64, value: f64) -> Sample {
        Sample {
            series,
            ts_ms,
            value,
        }
    }

    fn bits(samples: &[Sample]) -> Vec<(u64, i64, u64)> {
        let mut v: Vec<_> = samples
            .iter()
            .map(|s| (s.series, s.ts_ms, s.value.to_bits()))
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn round_trips_special_values_and_duplicates() {
        let input = vec![
            s(5, 1000, 1.0),
            s(5, 1000, 1.0),
            s(2, i64::MIN, -0.0),
            s(2, i64::MAX, f64::NAN),
            s(2, 0, f64::from_bits(0x7ff8_dead_beef_0001)),
            s(u64::MAX, 3, f64::INFINITY),
            s(0, -5, f64::NEG_INFINITY),
            s(5, 999, 2f64.powi(62)),
            s(5, 998, -(2f64.powi(63))),
            s(5, 997, 2f64.powi(63)),
            s(5, 996, 0.1),
            s(5, 995, i64::MAX as f64),
        ];
        let block = SampleBlock::encode(&input);
        assert_eq!(block.len(), input.len());
        assert_eq!(bits(&block.decode().unwrap()), bits(&input));
    }

    #[test]
    fn zigzag_and_varint_extremes() {
        for v in [0i64, 1, -1, i64::MAX, i64::MIN, 63, -64, 64] {
            let mut buf = Vec::new();
            put_i64(&mut buf, v);
            let mut r = Reader::new(&buf, "t");
            assert_eq!(r.i64().unwrap(), v);
            assert!(r.is_empty());
        }
        let mut r = Reader::new(&[0xff; 10], "t");
        assert!(r.u64().is_err());
        let mut r = Reader::new(&[0x80, 0x80], "t");
        assert!(r.u64().is_err());
    }

    #[test]
    fn integers_and_floats_use_their_columns() {
        let block = SampleBlock::encode(&[s(1, 0, 3.0), s(1, 60, -0.0), s(1, 120, 0.5)]);
        assert_eq!(block.ints, vec![vec![6]]); // zigzag(3)
        assert_eq!(block.float_pos, vec![1, 0]);
        assert_eq!(block.floats.len(), 10 + 10); // -0.0 bits, then XOR with 0.5
    }
}
