//! Frames on QUIC streams: read one bounded frame, write one message.

use octoisp_shared::frame::{self, Compression, FrameHeader, HEADER_LEN};
use octoisp_shared::{DecodeError, Limits, Message};
use quinn::{RecvStream, SendStream};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadFrameError {
    /// The peer finished the stream cleanly before a new frame began.
    #[error("the stream finished")]
    Finished,
    /// The stream broke: reset, connection lost, or finished inside a frame.
    #[error("reading the stream: {0}")]
    Read(#[from] quinn::ReadExactError),
    /// The bytes are not an acceptable frame.
    #[error("undecodable frame: {0}")]
    Decode(#[from] DecodeError),
}

/// Why a message could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteFrameError {
    /// The message could not be encoded.
    #[error("encoding the message: {0}")]
    Encode(#[from] octoisp_shared::EncodeError),
    /// The stream broke.
    #[error("writing the stream: {0}")]
    Write(#[from] quinn::WriteError),
}

/// Reads one frame: the header (refused before the payload when bad or too large), exactly the declared payload,
/// then decodes it within `limits`.
pub async fn read_frame(recv: &mut RecvStream, limits: &Limits) -> Result<Message, ReadFrameError> {
    let mut head = [0u8; HEADER_LEN];
    match recv.read_exact(&mut head).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Err(ReadFrameError::Finished),
        Err(err) => return Err(err.into()),
    }
    let header = FrameHeader::parse(&head, limits)?;
    let mut payload = vec![0u8; header.len as usize];
    recv.read_exact(&mut payload).await?;
    Ok(frame::decode_payload(&header, &payload, limits)?)
}

/// Encodes `msg` (uncompressed: control messages are small) and writes it.
pub async fn write_message(send: &mut SendStream, msg: &Message) -> Result<(), WriteFrameError> {
    let bytes = frame::encode(msg, Compression::None)?;
    send.write_all(&bytes).await?;
    Ok(())
}

/// Limits for messages from the control plane (acks, welcomes, enrollment answers: all small).
pub fn reply_limits() -> Limits {
    Limits {
        max_frame_bytes: 1 << 20,
        max_decompressed_bytes: 4 << 20,
    }
}
