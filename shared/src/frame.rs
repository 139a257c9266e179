//! Framing of [`Message`]s on a byte stream: header, optional zstd compression, and every size bounded.
//!
//! A frame is a 6-byte header followed by the payload:
//!
//! ```text
//! +------+-------+-----------------------+----------------------------------------+
//! | 'O'  | flags | payload length u32 LE | payload (postcard Message, maybe zstd) |
//! +------+-------+-----------------------+----------------------------------------+
//!   0      1       2..6                    6..6+len
//! ```
//!
//! `flags` bit 0 set means the payload is one zstd frame; every other bit must be zero (a peer that sets one
//! speaks something this build does not understand, and the frame is refused rather than misread).
//!
//! Decoding is bounded by [`Limits`]: the header is checked (magic, flags, declared length) before any payload
//! is read or buffered, and decompression stops with [`DecodeError::DecompressedTooLarge`] as soon as the output
//! would exceed the limit, so a decompression bomb costs at most the limit in memory, never its claimed size.
//! Encoding refuses to produce a frame that the same limits would refuse.

use std::io::Read;

use thiserror::Error;

use crate::protocol::Message;

/// Length of the frame header: magic byte, flags byte, u32 little-endian payload length.
pub const HEADER_LEN: usize = 6;
/// First byte of every frame.
pub const MAGIC: u8 = b'O';
/// Flag bit: the payload is zstd-compressed.
pub const FLAG_ZSTD: u8 = 0b0000_0001;
/// Every flag bit this build understands.
pub const KNOWN_FLAGS: u8 = FLAG_ZSTD;

/// Size limits applied when decoding (and, to stay decodable, when encoding) frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload length a header may declare (the bytes that follow the header on the wire).
    pub max_frame_bytes: usize,
    /// Largest size of a payload after decompression (and of an uncompressed postcard payload).
    pub max_decompressed_bytes: usize,
}

impl Default for Limits {
    /// 16 MiB on the wire, 64 MiB decompressed.
    fn default() -> Self {
        Limits {
            max_frame_bytes: 16 * 1024 * 1024,
            max_decompressed_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Whether and how to compress a frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain postcard payload.
    None,
    /// zstd at the given level (3 is a good default; negative levels are faster).
    Zstd(i32),
}

/// Why a message could not be encoded into a frame.
#[derive(Debug, Error)]
pub enum EncodeError {
    /// postcard failed to serialize the message.
    #[error("serializing the message with postcard failed: {0}")]
    Postcard(#[from] postcard::Error),
    /// zstd failed to compress the payload.
    #[error("compressing the payload with zstd failed: {0}")]
    Zstd(#[source] std::io::Error),
    /// The serialized message is larger than the peer would decompress.
    #[error("the serialized message is {len} bytes, more than the {max}-byte decompressed limit")]
    MessageTooLarge {
        /// Serialized (uncompressed) size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload on the wire would be larger than a frame may be.
    #[error("the frame payload would be {len} bytes, more than the {max}-byte frame limit")]
    FrameTooLarge {
        /// Payload size on the wire.
        len: usize,
        /// The limit (the smaller of the configured limit and `u32::MAX`).
        max: usize,
    },
}

/// Why bytes could not be decoded into a message.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// More bytes are needed to complete the frame; nothing is wrong yet.
    #[error("incomplete frame: {needed} more bytes needed")]
    Incomplete {
        /// How many more bytes (beyond those given) the frame needs; for a partial header, at least the rest of
        /// the header.
        needed: usize,
    },
    /// The first byte is not [`MAGIC`]: this is not an OctoISP frame (or the stream lost synchronization).
    #[error("bad magic byte 0x{found:02x}, expected 0x{:02x} ('O')", MAGIC)]
    BadMagic {
        /// The byte found.
        found: u8,
    },
    /// The flags byte has bits this build does not understand.
    #[error("unknown flag bits 0x{flags:02x} in frame header")]
    UnknownFlags {
        /// The whole flags byte.
        flags: u8,
    },
    /// The header declares a payload larger than allowed.
    #[error("frame declares a {len}-byte payload, more than the {max}-byte limit")]
    FrameTooLarge {
        /// Declared payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload decompresses (or, uncompressed, amounts) to more than allowed.
    #[error("payload decompresses to more than the {max}-byte limit")]
    DecompressedTooLarge {
        /// The limit.
        max: usize,
    },
    /// The payload is not a valid zstd frame.
    #[error("decompressing the payload failed: {0}")]
    Zstd(#[source] std::io::Error),
    /// The payload is not a valid postcard `Message`.
    #[error("deserializing the message failed: {0}")]
    Postcard(#[from] postcard::Error),
    /// Bytes remain in the payload after the message (or after the zstd frame).
    #[error("{count} unexpected bytes after the end of the {what}")]
    TrailingBytes {
        /// What was complete: `"message"` or `"zstd frame"`.
        what: &'static str,
        /// How many bytes were left over.
        count: usize,
    },
    /// A [`crate::SampleBlock`] is inconsistent (counts, lengths or columns that do not add up).
    #[error("invalid sample block: {0}")]
    InvalidSamples(String),
}

/// Serializes `msg` and wraps it in a frame, refusing anything [`Limits::default`] would refuse to decode.
pub fn encode(msg: &Message, compression: Compression) -> Result<Vec<u8>, EncodeError> {
    encode_with_limits(msg, compression, &Limits::default())
}

/// Serializes `msg` and wraps it in a frame that a decoder using `limits` accepts.
pub fn encode_with_limits(
    msg: &Message,
    compression: Compression,
    limits: &Limits,
) -> Result<Vec<u8>, EncodeError> {
    let max_frame = limits.max_frame_bytes.min(u32::MAX as usize);
    let check_message = |len: usize| {
        if len > limits.max_decompressed_bytes {
            return Err(EncodeError::MessageTooLarge {
                len,
                max: limits.max_decompressed_bytes,
            });
        }
        Ok(())
    };
    let (flags, mut out) = match compression {
        Compression::None => {
            // Serialize straight after a placeholder header: no copy.
            let out = postcard::to_extend(msg, vec![0u8; HEADER_LEN])?;
            check_message(out.len() - HEADER_LEN)?;
            (0, out)
        }
        Compression::Zstd(level) => {
            let plain = postcard::to_stdvec(msg)?;
            check_message(plain.len())?;
            let compressed = zstd::bulk::compress(&plain, level).map_err(EncodeError::Zstd)?;
            let mut out = Vec::with_capacity(HEADER_LEN + compressed.len());
            out.resize(HEADER_LEN, 0);
            out.extend_from_slice(&compressed);
            (FLAG_ZSTD, out)
        }
    };
    let len = out.len() - HEADER_LEN;
    let len32 =
        u32::try_from(len)
            .ok()
            .filter(|_| len <= max_frame)
            .ok_or(EncodeError::FrameTooLarge {
                len,
                max: max_frame,
            })?;
    out[0] = MAGIC;
    out[1] = flags;
    out[2..HEADER_LEN].copy_from_slice(&len32.to_le_bytes());
    Ok(out)
}

/// A parsed and validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The payload is zstd-compressed.
    pub compressed: bool,
    /// Length of the payload that follows the header, in bytes (already checked against the limits).
    pub len: u32,
}

impl FrameHeader {
    /// Parses a header, refusing a bad magic byte, unknown flag bits and a payload longer than
    /// `limits.max_frame_bytes`, so that a reader can refuse a frame before reading its payload.
    pub fn parse(buf: &[u8; HEADER_LEN], limits: &Limits) -> Result<FrameHeader, DecodeError> {
        if buf[0] != MAGIC {
            return Err(DecodeError::BadMagic { found: buf[0] });
        }
        let flags = buf[1];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(DecodeError::UnknownFlags { flags });
        }
        let len = u32::from_le_bytes([buf[2], buf[3], buf[4], buf[5]]);
        if len as usize > limits.max_frame_bytes {
            return Err(DecodeError::FrameTooLarge {
                len: len as usize,
                max: limits.max_frame_bytes,
            });
        }
        Ok(FrameHeader {
            compressed: flags & FLAG_ZSTD != 0,
            len,
        })
    }

    /// Length of the whole frame, header included.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.len as usize
    }
}

/// Decodes the payload of a frame whose header was parsed with [`FrameHeader::parse`].
///
/// `payload` must be exactly `header.len` bytes.
pub fn decode_payload(
    header: &FrameHeader,
    payload: &[u8],
    limits: &Limits,
) -> Result<Message, DecodeError> {
    if payload.len() != header.len as usize {
        return Err(if payload.len() < header.len as usize {
            DecodeError::Incomplete {
                needed: header.len as usize - payload.len(),
            }
        } else {
            DecodeError::TrailingBytes {
                what: "frame",
                count: payload.len() - header.len as usize,
            }
        });
    }
    if payload.len() > limits.max_frame_bytes {
        return Err(DecodeError::FrameTooLarge {
            len: payload.len(),
            max: limits.max_frame_bytes,
        });
    }
    if header.compressed {
        let plain = decompress_bounded(payload, limits.max_decompressed_bytes)?;
        deserialize(&plain)
    } else {
        if payload.len() > limits.max_decompressed_bytes {
            return Err(DecodeError::DecompressedTooLarge {
                max: limits.max_decompressed_bytes,
            });
        }
        deserialize(payload)
    }
}

/// Decodes one frame from the start of `buf`, returning the message and how many bytes it took.
///
/// Bytes after the frame are left alone (they belong to the next frame). When `buf` ends before the frame does,
/// the error is [`DecodeError::Incomplete`], but a bad header is reported as soon as its bytes are there.
pub fn decode(buf: &[u8], limits: &Limits) -> Result<(Message, usize), DecodeError> {
    if let Some(&first) = buf.first()
        && first != MAGIC
    {
        return Err(DecodeError::BadMagic { found: first });
    }
    if let Some(&flags) = buf.get(1)
        && flags & !KNOWN_FLAGS != 0
    {
        return Err(DecodeError::UnknownFlags { flags });
    }
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Err(DecodeError::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    };
    let header = FrameHeader::parse(head, limits)?;
    let total = header.frame_len();
    let Some(payload) = buf.get(HEADER_LEN..total) else {
        return Err(DecodeError::Incomplete {
            needed: total - buf.len(),
        });
    };
    let msg = decode_payload(&header, payload, limits)?;
    Ok((msg, total))
}

/// Deserializes a whole postcard `Message`, refusing bytes left over after it.
fn deserialize(bytes: &[u8]) -> Result<Message, DecodeError> {
    let (msg, rest) = postcard::take_from_bytes::<Message>(bytes)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            what: "message",
            count: rest.len(),
        });
    }
    Ok(msg)
}

/// Decompresses exactly one zstd frame, failing as soon as the output would exceed `max` bytes.
///
/// Memory grows with the output actually produced (plus a window of at most about `max`), never with a size
/// the frame merely claims.
fn decompress_bounded(payload: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    let too_large = || DecodeError::DecompressedTooLarge { max };
    // A frame that declares its content size (ours always do) is judged before any work.
    let declared = zstd::zstd_safe::get_frame_content_size(payload)
        .ok()
        .flatten();
    if let Some(size) = declared
        && size > max as u64
    {
        return Err(too_large());
    }
    let mut decoder = zstd::stream::read::Decoder::with_buffer(payload)
        .map_err(DecodeError::Zstd)?
        .single_frame();
    // No back-reference needs to reach further than the largest output we accept, but allow the 8 MiB window
    // of ordinary levels (<= 19) even under small limits, so that a too-large payload is reported as such.
    let window_log = usize::BITS - max.max(1).saturating_sub(1).leading_zeros();
    decoder
        .window_log_max(window_log.clamp(23, 31))
        .map_err(DecodeError::Zstd)?;
    let initial = declared.map_or(0, |size| size as usize).min(max);
    let mut out = Vec::with_capacity(initial);
    let read = (&mut decoder)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(DecodeError::Zstd)?;
    if read > max {
        return Err(too_large());
    }
    decoder.finish_frame().map_err(DecodeError::Zstd)?;
    let rest = decoder.into_inner();
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            what: "zstd frame",
            count: rest.len(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Ack;

    fn ack() -> Message {
        Message::Ack(Ack {
            seq: 7,
            duplicate: false,
        })
    }

    #[test]
    fn header_layout_is_magic_flags_len_le() {
        let frame = encode(&ack(), Compression::None).unwrap();
        assert_eq!(frame[0], b'O');
        assert_eq!(frame[1], 0);
        let len = u32::from_le_bytes(frame[2..6].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - HEADER_LEN);
        let frame = encode(&ack(), Compression::Zstd(3)).unwrap();
        assert_eq!(frame[1], FLAG_ZSTD);
    }

    #[test]
    fn encode_refuses_message_over_limit() {
        let limits = Limits {
            max_frame_bytes: 2,
            max_decompressed_bytes: 1024,
        };
        let err = encode_with_limits(&ack(), Compression::None, &limits).unwrap_err();
        assert!(
            matches!(err, EncodeError::FrameTooLarge { max: 2, .. }),
            "{err}"
        );
        let limits = Limits {
            max_frame_bytes: 1024,
            max_decompressed_bytes: 2,
        };
        let err = encode_with_limits(&ack(), Compression::Zstd(1), &limits).unwrap_err();
        assert!(
            matches!(err, EncodeError::MessageTooLarge { max: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn decompression_stops_at_limit_without_declared_size() {
        // A zstd frame written by a streaming encoder carries no content size: only the cap can stop it.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        std::io::Write::write_all(&mut enc, &[0u8; 10_000]).unwrap();
        let compressed = enc.finish().unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&compressed).unwrap(),
            None
        );
        assert!(matches!(
            decompress_bounded(&compressed, 9_999),
            Err(DecodeError::DecompressedTooLarge { max: 9_999 })
        ));
        assert_eq!(
            decompress_bounded(&compressed, 10_000).unwrap().len(),
            10_000
        );
    }
}
