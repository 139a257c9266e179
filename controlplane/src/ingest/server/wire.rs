//! Frames on the server's streams: bounded reads, replies, refusals.

use std::time::Duration;

use anyhow::Context as _;
use octoisp_shared::frame::{self, Compression, FrameHeader, HEADER_LEN};
use octoisp_shared::{DecodeError, Limits, Message, Reject, RejectCode};
use quinn::{Connection, RecvStream, SendStream, VarInt};

use super::{CLOSE_PROTOCOL, CLOSE_REJECTED, Shared};

/// Reads one frame from `recv`: the header first (refused before any payload is read when it is bad or too
/// large), then exactly the declared payload, then decodes it within `limits`.
pub(super) async fn read_frame(
    recv: &mut RecvStream,
    limits: &Limits,
) -> Result<Message, ReadFrameError> {
    let header = read_header(recv, limits).await?;
    let mut payload = vec![0u8; header.len as usize];
    recv.read_exact(&mut payload).await?;
    Ok(frame::decode_payload(&header, &payload, limits)?)
}

pub(super) async fn read_header(
    recv: &mut RecvStream,
    limits: &Limits,
) -> Result<FrameHeader, ReadFrameError> {
    let mut head = [0u8; HEADER_LEN];
    match recv.read_exact(&mut head).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Err(ReadFrameError::Finished),
        Err(err) => return Err(err.into()),
    }
    Ok(FrameHeader::parse(&head, limits)?)
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ReadFrameError {
    /// The peer finished the stream cleanly before a new frame.
    #[error("stream finished")]
    Finished,
    /// The stream broke (reset, connection lost, finished inside a frame).
    #[error("reading the stream: {0}")]
    Read(#[from] quinn::ReadExactError),
    /// The bytes are not an acceptable frame.
    #[error("{0}")]
    Decode(#[from] DecodeError),
}

pub(super) async fn write_message(send: &mut SendStream, msg: &Message) -> anyhow::Result<()> {
    let bytes = frame::encode(msg, Compression::None).context("encoding a reply")?;
    send.write_all(&bytes).await.context("writing a reply")?;
    Ok(())
}

/// Sends `Reject` on the control stream, lets the agent read it (it closes the connection on its side), then
/// closes the connection.
pub(super) async fn reject(
    conn: &Connection,
    send: &mut SendStream,
    code: RejectCode,
    message: String,
) {
    tracing::info!(code = ?code, reason = %message, "Rejected.");
    metrics::counter!("octoisp_ingest_rejects_total", "code" => format!("{code:?}")).increment(1);
    let close_code = if code == RejectCode::ProtocolError {
        CLOSE_PROTOCOL
    } else {
        CLOSE_REJECTED
    };
    let reply = Message::Reject(Reject {
        code,
        message: message.clone(),
    });
    if write_message(send, &reply).await.is_ok() {
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    }
    conn.close(
        VarInt::from_u32(close_code),
        truncate(&message, 200).as_bytes(),
    );
}

pub(super) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Accepts the control stream and reads its first message, within the handshake timeout.
pub(super) async fn open_control(
    conn: &Connection,
    shared: &Shared,
) -> Option<(SendStream, RecvStream, Result<Message, ReadFrameError>)> {
    let accepted = tokio::time::timeout(shared.cfg.handshake_timeout, conn.accept_bi()).await;
    let (send, mut recv) = match accepted {
        Ok(Ok(pair)) => pair,
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "Connection ended before its control stream.");
            return None;
        }
        Err(_) => {
            tracing::info!("No control stream within the handshake timeout; closing.");
            conn.close(VarInt::from_u32(CLOSE_PROTOCOL), b"no control stream");
            return None;
        }
    };
    let first = match tokio::time::timeout(
        shared.cfg.handshake_timeout,
        read_frame(&mut recv, &shared.control_limits),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => {
            tracing::info!(
                "No first message on the control stream within the handshake timeout; closing."
            );
            conn.close(VarInt::from_u32(CLOSE_PROTOCOL), b"no first message");
            return None;
        }
    };
    Some((send, recv, first))
}

pub(super) fn message_name(msg: &Message) -> &'static str {
    match msg {
        Message::Hello(_) => "Hello",
        Message::Welcome(_) => "Welcome",
        Message::Reject(_) => "Reject",
        Message::Enroll(_) => "Enroll",
        Message::Enrolled(_) => "Enrolled",
        Message::Batch(_) => "Batch",
        Message::Ack(_) => "Ack",
        Message::Nack(_) => "Nack",
        Message::Heartbeat(_) => "Heartbeat",
        Message::Command(_) => "Command",
        Message::CommandProgress(_) => "CommandProgress",
        Message::FirmwareFetch(_) => "FirmwareFetch",
        Message::FirmwareOffer(_) => "FirmwareOffer",
    }
}
