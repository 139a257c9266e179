//! Batches: forming one from the oldest chunks, and what happens to it after the control plane answered (ack,
//! re-form with series definitions, abandon to dead letters).

use std::collections::BTreeSet;
use std::path::Path;

use octoisp_shared::frame::{self, Compression, Limits};
use octoisp_shared::{Batch, Message, Record, Sample, SampleBlock, SeriesDef};
use rusqlite::{Connection, OptionalExtension, params};

use crate::outbox::PendingBatch;
use crate::outbox::chunk::{self, ChunkContent, ChunkKind};
use crate::outbox::drops::{self, DeadRow, DropTally};
use crate::outbox::error::{OutboxError, SqlContext};
use crate::outbox::schema::meta;
use crate::outbox::series;
use crate::outbox::store::{Store, meta_get, meta_set, now_ms};

/// A chunk taken into the batch being formed.
#[derive(Debug)]
struct Taken {
    id: i64,
    kind: Option<ChunkKind>,
    bytes: u64,
    content: ChunkContent,
}

impl Store {
    /// Forms a batch from the oldest chunks; `None` when there is nothing to send.
    pub(crate) fn form_batch(&mut self) -> Result<Option<PendingBatch>, OutboxError> {
        let now = now_ms();
        let (max_samples, max_bytes) = (
            self.cfg.batch_max_samples as u64,
            self.cfg.batch_max_bytes as u64,
        );
        let level = self.cfg.zstd_level;
        let mut acct = self.acct;
        let mut tally = DropTally::default();
        let (tx, path) = self.begin()?;

        // 1. Take the oldest chunks that fit; undecodable ones go to the dead letters instead.
        let mut taken: Vec<Taken> = Vec::new();
        let mut dead: Vec<(DeadRow, Option<ChunkKind>, u64)> = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id, kind, created_ms, n_samples, n_records, bytes, data FROM chunks ORDER BY id",
                )
                .sql(path, "listing chunks")?;
            let mut rows = stmt.query([]).sql(path, "listing chunks")?;
            let (mut n_samples, mut n_bytes) = (0u64, 0u64);
            while let Some(row) = rows.next().sql(path, "reading chunks")? {
                let id: i64 = row.get(0).sql(path, "reading a chunk")?;
                let kind: i64 = row.get(1).sql(path, "reading a chunk")?;
                let created_ms: i64 = row.get(2).sql(path, "reading a chunk")?;
                let row_samples = row.get::<_, i64>(3).sql(path, "reading a chunk")?.max(0) as u64;
                let row_records = row.get::<_, i64>(4).sql(path, "reading a chunk")?.max(0) as u64;
                let bytes = row.get::<_, i64>(5).sql(path, "reading a chunk")?.max(0) as u64;
                if !taken.is_empty()
                    && (n_samples + row_samples > max_samples || n_bytes + bytes > max_bytes)
                {
                    break;
                }
                let data: Vec<u8> = row.get(6).sql(path, "reading a chunk")?;
                match chunk::decode(kind, &data, row_samples, row_records) {
                    Ok(content) => {
                        n_samples += row_samples;
                        n_bytes += bytes;
                        taken.push(Taken {
                            id,
                            kind: ChunkKind::from_sql(kind),
                            bytes,
                            content,
                        });
                    }
                    Err(reason) => dead.push((
                        DeadRow {
                            origin: "chunk",
                            origin_id: id,
                            created_ms,
                            n_samples: row_samples,
                            n_records: row_records,
                            reason,
                            data,
                        },
                        ChunkKind::from_sql(kind),
                        bytes,
                    )),
                }
            }
        }
        for (row, kind, bytes) in &dead {
            drops::bury(&tx, path, row, now, &mut tally)?;
            tx.execute("DELETE FROM chunks WHERE id = ?1", [row.origin_id])
                .sql(path, "deleting an undecodable chunk")?;
            acct.remove_chunk(*kind, *bytes);
        }
        if taken.is_empty() {
            drops::record(&tx, path, &tally, now, &mut acct)?;
            tx.commit().sql(path, "committing dead letters")?;
            self.acct = acct;
            return Ok(None);
        }

        // 2. Encode; halve the chunks taken while a frame of several chunks is above the size target.
        let seq = meta_get(&tx, path, meta::NEXT_SEQ)?.max(1);
        let settled_below = smallest_pending_seq(&tx, path)?.map_or(seq, |s| s.min(seq));
        let (frame, defs, n_samples, n_records) = loop {
            let (samples, records) = gather(&taken);
            let defs = unconfirmed_defs(&tx, path, referenced_ids(&samples), &[])?;
            let (n_samples, n_records) = (samples.len() as u64, records.len() as u64);
            let batch = Batch {
                seq,
                settled_below,
                created_ms: now,
                series: defs,
                samples: SampleBlock::encode(&samples),
                records,
            };
            let frame = encode_frame(batch.clone(), level)?;
            if frame.len() as u64 <= max_bytes || taken.len() == 1 {
                break (frame, batch.series, n_samples, n_records);
            }
            taken.truncate(taken.len() / 2);
        };

        // 3. Move: insert the batch, delete its chunks, advance the seq counter.
        tx.execute(
            "INSERT INTO batches (seq, created_ms, settled_below, n_samples, n_records, frame)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                seq as i64,
                now,
                settled_below as i64,
                n_samples as i64,
                n_records as i64,
                frame
            ],
        )
        .sql(path, "inserting a batch")?;
        link_series(&tx, path, seq, &defs)?;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM chunks WHERE id = ?1")
                .sql(path, "preparing chunk delete")?;
            for t in &taken {
                delete
                    .execute([t.id])
                    .sql(path, "deleting a batched chunk")?;
                acct.remove_chunk(t.kind, t.bytes);
            }
        }
        meta_set(&tx, path, meta::NEXT_SEQ, seq + 1)?;
        acct.batch_bytes += frame.len() as u64;
        drops::record(&tx, path, &tally, now, &mut acct)?;
        tx.commit().sql(path, "committing a new batch")?;
        self.acct = acct;
        tracing::debug!(
            path = %self.path.display(), seq, chunks = taken.len(), samples = n_samples, records = n_records,
            series_defs = defs.len(), bytes = frame.len(), "Formed a batch."
        );
        Ok(Some(PendingBatch {
            seq,
            frame,
            samples: n_samples,
            records: n_records,
        }))
    }

    /// Deletes an acknowledged batch and marks the series it defined as confirmed. Acking an unknown seq (a
    /// duplicate ack) does nothing.
    pub(crate) fn ack(&mut self, seq: u64) -> Result<(), OutboxError> {
        let mut acct = self.acct;
        let (tx, path) = self.begin()?;
        let Some(len) = frame_len(&tx, path, seq)? else {
            tracing::debug!(path = %path.display(), seq, "Ack for a batch that is not pending; ignored.");
            return Ok(());
        };
        tx.execute(
            "UPDATE series SET confirmed = 1 WHERE id IN (SELECT series_id FROM batch_series WHERE seq = ?1)",
            [seq as i64],
        )
        .sql(path, "confirming series")?;
        tx.execute("DELETE FROM batches WHERE seq = ?1", [seq as i64])
            .sql(path, "deleting an acked batch")?;
        tx.commit().sql(path, "committing an ack")?;
        acct.batch_bytes = acct.batch_bytes.saturating_sub(len);
        self.acct = acct;
        Ok(())
    }

    /// Re-encodes batch `seq` with the same content, adding the definitions of `unknown` series (marked
    /// unconfirmed) and of every other unconfirmed series it references.
    pub(crate) fn reform_with_series(
        &mut self,
        seq: u64,
        unknown: &[u64],
    ) -> Result<PendingBatch, OutboxError> {
        let level = self.cfg.zstd_level;
        let mut acct = self.acct;
        let now = now_ms();
        let (tx, path) = self.begin()?;
        let row: Option<(Vec<u8>, i64, i64)> = tx
            .query_row(
                "SELECT frame, n_samples, n_records FROM batches WHERE seq = ?1",
                [seq as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .sql(path, "reading a batch")?;
        let Some((old_frame, n_samples, n_records)) = row else {
            return Err(OutboxError::NoSuchBatch {
                path: path.to_path_buf(),
                seq,
            });
        };
        let decoded = decode_batch(&old_frame, seq).and_then(|b| {
            b.samples
                .decode()
                .map(|s| (b, s))
                .map_err(|e| e.to_string())
        });
        let (mut batch, samples) = match decoded {
            Ok(ok) => ok,
            Err(reason) => {
                let mut tally = DropTally::default();
                let dead = DeadRow {
                    origin: "batch",
                    origin_id: seq as i64,
                    created_ms: now,
                    n_samples: n_samples.max(0) as u64,
                    n_records: n_records.max(0) as u64,
                    reason: format!("undecodable stored batch: {reason}"),
                    data: old_frame,
                };
                let len = dead.data.len() as u64;
                drops::bury(&tx, path, &dead, now, &mut tally)?;
                tx.execute("DELETE FROM batches WHERE seq = ?1", [seq as i64])
                    .sql(path, "deleting an undecodable batch")?;
                acct.batch_bytes = acct.batch_bytes.saturating_sub(len);
                drops::record(&tx, path, &tally, now, &mut acct)?;
                tx.commit().sql(path, "committing dead letters")?;
                self.acct = acct;
                return Err(OutboxError::CorruptBatch {
                    path: self.path.clone(),
                    seq,
                    reason,
                });
            }
        };
        let mut missing = Vec::new();
        for &id in unknown {
            if series::load(&tx, path, id)?.is_none() {
                missing.push(id);
            }
        }
        if !missing.is_empty() {
            return Err(OutboxError::SeriesNotFound {
                path: path.to_path_buf(),
                seq,
                ids: missing,
            });
        }
        series::set_confirmed(&tx, path, unknown, false)?;
        let carried: Vec<u64> = batch.series.iter().map(|d| d.id).collect();
        let mut wanted = referenced_ids(&samples);
        wanted.extend(unknown.iter().copied());
        batch.series = unconfirmed_defs(&tx, path, wanted, &carried)?;
        batch.settled_below = smallest_pending_seq(&tx, path)?.map_or(seq, |s| s.min(seq));
        let defs = batch.series.clone();
        let frame = encode_frame(batch, level)?;
        tx.execute(
            "UPDATE batches SET frame = ?2 WHERE seq = ?1",
            params![seq as i64, frame],
        )
        .sql(path, "rewriting a batch")?;
        tx.execute("DELETE FROM batch_series WHERE seq = ?1", [seq as i64])
            .sql(path, "relinking batch series")?;
        link_series(&tx, path, seq, &defs)?;
        tx.commit().sql(path, "committing a re-formed batch")?;
        acct.batch_bytes =
            (acct.batch_bytes + frame.len() as u64).saturating_sub(old_frame.len() as u64);
        self.acct = acct;
        tracing::info!(
            path = %self.path.display(), seq, unknown = ?unknown, series_defs = defs.len(),
            "Re-formed a batch with series definitions."
        );
        Ok(PendingBatch {
            seq,
            frame,
            samples: n_samples.max(0) as u64,
            records: n_records.max(0) as u64,
        })
    }

    /// Moves batch `seq` to the dead letters, counts its content as lost and reports it upstream.
    pub(crate) fn abandon(&mut self, seq: u64, reason: &str) -> Result<(), OutboxError> {
        let now = now_ms();
        let mut acct = self.acct;
        let mut tally = DropTally::default();
        let (tx, path) = self.begin()?;
        let row: Option<(Vec<u8>, i64, i64, i64)> = tx
            .query_row(
                "SELECT frame, created_ms, n_samples, n_records FROM batches WHERE seq = ?1",
                [seq as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .sql(path, "reading a batch")?;
        let Some((data, created_ms, n_samples, n_records)) = row else {
            return Err(OutboxError::NoSuchBatch {
                path: path.to_path_buf(),
                seq,
            });
        };
        let len = data.len() as u64;
        let dead = DeadRow {
            origin: "batch",
            origin_id: seq as i64,
            created_ms,
            n_samples: n_samples.max(0) as u64,
            n_records: n_records.max(0) as u64,
            reason: format!("abandoned: {reason}"),
            data,
        };
        drops::bury(&tx, path, &dead, now, &mut tally)?;
        tx.execute("DELETE FROM batches WHERE seq = ?1", [seq as i64])
            .sql(path, "deleting an abandoned batch")?;
        acct.batch_bytes = acct.batch_bytes.saturating_sub(len);
        drops::record(&tx, path, &tally, now, &mut acct)?;
        tx.commit().sql(path, "committing an abandoned batch")?;
        self.acct = acct;
        Ok(())
    }
}

/// Concatenates the content of the taken chunks, in order.
fn gather(taken: &[Taken]) -> (Vec<Sample>, Vec<Record>) {
    let mut samples = Vec::new();
    let mut records = Vec::new();
    for t in taken {
        match &t.content {
            ChunkContent::Samples(s) => samples.extend_from_slice(s),
            ChunkContent::Records(r) => records.extend(r.iter().cloned()),
        }
    }
    (samples, records)
}

/// Distinct series ids referenced by samples.
fn referenced_ids(samples: &[Sample]) -> BTreeSet<u64> {
    samples.iter().map(|s| s.series).collect()
}

/// Definitions of the `wanted` series that are not confirmed, plus those of `always`, sorted by id. A series without
/// a readable definition is logged and left out (the control plane will then name it as unknown).
fn unconfirmed_defs(
    conn: &Connection,
    path: &Path,
    mut wanted: BTreeSet<u64>,
    always: &[u64],
) -> Result<Vec<SeriesDef>, OutboxError> {
    wanted.extend(always.iter().copied());
    let mut defs = Vec::new();
    for id in wanted {
        match series::load(conn, path, id)? {
            Some((def, confirmed)) => {
                if !confirmed || always.contains(&id) {
                    defs.push(def);
                }
            }
            None => {
                tracing::error!(path = %path.display(), series = id, "Batch references a series without definition.")
            }
        }
    }
    Ok(defs)
}

/// Records which series definitions batch `seq` carries, so that its ack confirms them.
fn link_series(
    conn: &Connection,
    path: &Path,
    seq: u64,
    defs: &[SeriesDef],
) -> Result<(), OutboxError> {
    let mut stmt = conn
        .prepare_cached("INSERT OR IGNORE INTO batch_series (seq, series_id) VALUES (?1, ?2)")
        .sql(path, "preparing batch series")?;
    for def in defs {
        stmt.execute(params![seq as i64, def.id as i64])
            .sql(path, "linking batch series")?;
    }
    Ok(())
}

fn smallest_pending_seq(conn: &Connection, path: &Path) -> Result<Option<u64>, OutboxError> {
    let min: Option<i64> = conn
        .query_row("SELECT min(seq) FROM batches", [], |r| r.get(0))
        .sql(path, "reading the oldest pending batch")?;
    Ok(min.map(|s| s as u64))
}

fn frame_len(conn: &Connection, path: &Path, seq: u64) -> Result<Option<u64>, OutboxError> {
    let len: Option<i64> = conn
        .query_row(
            "SELECT length(frame) FROM batches WHERE seq = ?1",
            [seq as i64],
            |r| r.get(0),
        )
        .optional()
        .sql(path, "reading a batch")?;
    Ok(len.map(|l| l.max(0) as u64))
}

fn encode_frame(batch: Batch, level: i32) -> Result<Vec<u8>, OutboxError> {
    frame::encode(&Message::Batch(batch), Compression::Zstd(level)).map_err(|e| {
        OutboxError::Encode {
            what: "a batch frame",
            message: e.to_string(),
        }
    })
}

/// Decodes a stored frame back into its batch, checking it is the batch it should be.
fn decode_batch(frame: &[u8], seq: u64) -> Result<Batch, String> {
    match frame::decode(frame, &Limits::default()) {
        Ok((Message::Batch(batch), used)) if used == frame.len() && batch.seq == seq => Ok(batch),
        Ok((Message::Batch(batch), used)) => Err(format!(
            "frame holds batch {} in {used} of {} bytes",
            batch.seq,
            frame.len()
        )),
        Ok(_) => Err("frame holds a message that is not a batch".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}
