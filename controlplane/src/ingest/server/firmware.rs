//! Firmware images to agents: a `FirmwareFetch` stream gets a `FirmwareOffer` frame, then the image's bytes from
//! the requested offset as the raw rest of the stream (QUIC flow control paces it), then the stream finishes.
//!
//! Only an image of the agent's own provider (from its certificate, [`AgentRecord`]) is sent: the lookup runs in
//! a transaction bound to that provider, so another provider's image is "no such image". The agent checks the
//! SHA-256 of what it received before using it; a short or broken transfer is resumed from what it holds.

use std::time::Duration;

use octoisp_shared::{FirmwareFetch, FirmwareOffer, Message};
use quinn::{SendStream, VarInt};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use super::Shared;
use super::wire::write_message;
use crate::db;
use crate::registry::AgentRecord;

/// Longest one image transfer may take (a stalled agent frees the stream after it).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(3600);
/// Read size from disk.
const CHUNK: usize = 64 * 1024;
/// Stream reset code: the transfer failed on the control plane's side.
pub const STREAM_FIRMWARE_FAILED: u32 = 4;

/// Serves one `FirmwareFetch`.
pub(super) async fn serve(
    mut send: SendStream,
    req: FirmwareFetch,
    agent: &AgentRecord,
    shared: &Shared,
) {
    let refuse = |message: String| Message::FirmwareOffer(FirmwareOffer::Refused { message });
    let Some(cfg) = &shared.firmware else {
        let msg =
            refuse("this control plane serves no firmware ([firmware] is not configured)".into());
        let _ = write_message(&mut send, &msg).await;
        let _ = send.finish();
        return;
    };
    if !octoisp_shared::commands::is_sha256_hex(&req.sha256) {
        let _ = write_message(
            &mut send,
            &refuse("sha256: not 64 lowercase hex digits".into()),
        )
        .await;
        let _ = send.finish();
        return;
    }
    let size = match lookup(shared, agent, &req.sha256).await {
        Ok(Some(size)) => size,
        Ok(None) => {
            tracing::warn!(sha256 = %req.sha256, "An agent asked for a firmware image its provider does not have.");
            metrics::counter!("octoisp_ingest_firmware_refused_total").increment(1);
            let msg = refuse(format!(
                "no firmware image {} for this agent's provider",
                req.sha256
            ));
            let _ = write_message(&mut send, &msg).await;
            let _ = send.finish();
            return;
        }
        Err(err) => {
            tracing::warn!(error = %err, "Cannot look a firmware image up.");
            let msg = refuse("the control plane database is unavailable; retry later".into());
            let _ = write_message(&mut send, &msg).await;
            let _ = send.finish();
            return;
        }
    };
    let path = cfg.image_path(agent.provider_id, &req.sha256);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) if crate::firmware::file_matches(&path, size).await => f,
        Ok(_) | Err(_) => {
            tracing::error!(path = %path.display(), "A firmware image's file is missing or has the wrong size.");
            let msg = refuse(format!(
                "firmware image {} is not readable on the control plane",
                req.sha256
            ));
            let _ = write_message(&mut send, &msg).await;
            let _ = send.finish();
            return;
        }
    };
    let offset = if req.offset <= size { req.offset } else { 0 };
    let offer = Message::FirmwareOffer(FirmwareOffer::Sending { size, offset });
    let transfer = async {
        write_message(&mut send, &offer).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut buf = vec![0u8; CHUNK];
        let mut left = size - offset;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(CHUNK));
            let n = file.read(&mut buf[..want]).await?;
            if n == 0 {
                anyhow::bail!("the file ended {left} bytes early");
            }
            send.write_all(&buf[..n]).await?;
            left -= n as u64;
        }
        send.finish()?;
        anyhow::Ok(())
    };
    match tokio::time::timeout(TRANSFER_TIMEOUT, transfer).await {
        Ok(Ok(())) => {
            metrics::counter!("octoisp_ingest_firmware_bytes_total").increment(size - offset);
            tracing::info!(sha256 = %req.sha256, offset, size, "Firmware image sent to an agent.");
        }
        Ok(Err(err)) => {
            tracing::info!(sha256 = %req.sha256, error = %err, "Firmware transfer broke off (the agent resumes it).");
            let _ = send.reset(VarInt::from_u32(STREAM_FIRMWARE_FAILED));
        }
        Err(_) => {
            tracing::warn!(sha256 = %req.sha256, "Firmware transfer took too long; stream reset.");
            let _ = send.reset(VarInt::from_u32(STREAM_FIRMWARE_FAILED));
        }
    }
}

/// The size of the provider's image `sha256`, if it has one.
async fn lookup(shared: &Shared, agent: &AgentRecord, sha256: &str) -> anyhow::Result<Option<u64>> {
    let mut tx = db::tenant_tx(&shared.pool, agent.provider_id).await?;
    let size: Option<i64> = sqlx::query_scalar(
        "SELECT size FROM firmware_images WHERE provider_id = $1 AND sha256 = $2 LIMIT 1",
    )
    .bind(agent.provider_id)
    .bind(sha256)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(size.and_then(|s| u64::try_from(s).ok()))
}
