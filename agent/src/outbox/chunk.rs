//! Chunks: the unit of storage of unbatched content, one or a few per append.
//!
//! A sample chunk stores a postcard-encoded [`SampleBlock`] (columnar, delta-encoded: a few bytes per sample); a
//! record chunk stores a postcard `Vec<Record>`. Neither is self-describing: the `kind` column says which it is,
//! and the `n_samples`/`n_records` columns are checked against the decoded content.

use octoisp_shared::{Record, Sample, SampleBlock};

use crate::outbox::error::OutboxError;

/// What a chunk row holds (`chunks.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkKind {
    /// Metric samples only: the disk cap may drop it.
    Samples,
    /// Records produced by the agent: never dropped.
    Records,
    /// The outbox's own [`octoisp_shared::DropReport`], one record, updated in place until it is batched.
    DropReport,
}

impl ChunkKind {
    /// Value stored in `chunks.kind`.
    pub(crate) fn to_sql(self) -> i64 {
        match self {
            ChunkKind::Samples => 0,
            ChunkKind::Records => 1,
            ChunkKind::DropReport => 2,
        }
    }

    /// Parses `chunks.kind`.
    pub(crate) fn from_sql(v: i64) -> Option<ChunkKind> {
        match v {
            0 => Some(ChunkKind::Samples),
            1 => Some(ChunkKind::Records),
            2 => Some(ChunkKind::DropReport),
            _ => None,
        }
    }
}

/// A chunk ready to be inserted.
#[derive(Debug, Clone)]
pub(crate) struct NewChunk {
    /// What it holds.
    pub(crate) kind: ChunkKind,
    /// Samples in it.
    pub(crate) n_samples: u64,
    /// Records in it.
    pub(crate) n_records: u64,
    /// Encoded content.
    pub(crate) data: Vec<u8>,
}

impl NewChunk {
    /// Size accounted for the disk cap.
    pub(crate) fn bytes(&self) -> u64 {
        self.data.len() as u64
    }
}

/// Decoded content of a chunk.
#[derive(Debug)]
pub(crate) enum ChunkContent {
    /// Samples, in append order.
    Samples(Vec<Sample>),
    /// Records, in append order.
    Records(Vec<Record>),
}

/// Encodes samples into chunks of at most `max_samples` each.
pub(crate) fn sample_chunks(
    samples: &[Sample],
    max_samples: usize,
) -> Result<Vec<NewChunk>, OutboxError> {
    samples
        .chunks(max_samples.max(1))
        .map(|part| {
            let block = SampleBlock::encode(part);
            let data =
                postcard::to_stdvec(&block).map_err(|e| encode_error("a sample chunk", e))?;
            Ok(NewChunk {
                kind: ChunkKind::Samples,
                n_samples: part.len() as u64,
                n_records: 0,
                data,
            })
        })
        .collect()
}

/// Encodes records into one chunk, or into several of at most about `max_bytes` each when they are larger.
pub(crate) fn record_chunks(
    records: &[Record],
    kind: ChunkKind,
    max_bytes: usize,
) -> Result<Vec<NewChunk>, OutboxError> {
    let whole = encode_records(records)?;
    if whole.len() <= max_bytes {
        return Ok(vec![record_chunk(kind, records.len(), whole)]);
    }
    // Rare: split greedily, keeping the order. Room is left for the length prefix of the Vec.
    let budget = max_bytes.saturating_sub(10);
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (i, record) in records.iter().enumerate() {
        let len = postcard::to_stdvec(record)
            .map_err(|e| encode_error("a record", e))?
            .len();
        if len > budget {
            return Err(OutboxError::TooLarge {
                bytes: len,
                max: max_bytes,
            });
        }
        if size + len > budget {
            let part = &records[start..i];
            chunks.push(record_chunk(kind, part.len(), encode_records(part)?));
            start = i;
            size = 0;
        }
        size += len;
    }
    let part = &records[start..];
    chunks.push(record_chunk(kind, part.len(), encode_records(part)?));
    Ok(chunks)
}

/// Decodes a chunk row, checking its counts. The error says what is wrong, for the dead letters.
pub(crate) fn decode(
    kind: i64,
    data: &[u8],
    n_samples: u64,
    n_records: u64,
) -> Result<ChunkContent, String> {
    match ChunkKind::from_sql(kind) {
        None => Err(format!("unknown chunk kind {kind}")),
        Some(ChunkKind::Samples) => {
            let (block, rest) = postcard::take_from_bytes::<SampleBlock>(data)
                .map_err(|e| format!("sample chunk: {e}"))?;
            if !rest.is_empty() {
                return Err(format!("sample chunk: {} trailing bytes", rest.len()));
            }
            let samples = block.decode().map_err(|e| format!("sample chunk: {e}"))?;
            if samples.len() as u64 != n_samples {
                return Err(format!(
                    "sample chunk holds {} samples, its row says {n_samples}",
                    samples.len()
                ));
            }
            Ok(ChunkContent::Samples(samples))
        }
        Some(ChunkKind::Records | ChunkKind::DropReport) => {
            let records = decode_records(data)?;
            if records.len() as u64 != n_records {
                return Err(format!(
                    "record chunk holds {} records, its row says {n_records}",
                    records.len()
                ));
            }
            Ok(ChunkContent::Records(records))
        }
    }
}

/// Decodes a postcard `Vec<Record>`, refusing trailing bytes.
pub(crate) fn decode_records(data: &[u8]) -> Result<Vec<Record>, String> {
    let (records, rest) =
        postcard::take_from_bytes::<Vec<Record>>(data).map_err(|e| format!("record chunk: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("record chunk: {} trailing bytes", rest.len()));
    }
    Ok(records)
}

/// Encodes a postcard `Vec<Record>`.
pub(crate) fn encode_records(records: &[Record]) -> Result<Vec<u8>, OutboxError> {
    postcard::to_stdvec(records).map_err(|e| encode_error("a record chunk", e))
}

fn record_chunk(kind: ChunkKind, n: usize, data: Vec<u8>) -> NewChunk {
    NewChunk {
        kind,
        n_samples: 0,
        n_records: n as u64,
        data,
    }
}

fn encode_error(what: &'static str, e: postcard::Error) -> OutboxError {
    OutboxError::Encode {
        what,
        message: e.to_string(),
    }
}
