//! Every bound of the decoder: frame size, decompressed size (zstd bombs), header validation, truncated and
//! trailing bytes, version negotiation, and sample blocks whose counts lie.

mod common;

use std::io::Write;

use octoisp_shared::frame::{
    self, Compression, DecodeError, EncodeError, FLAG_ZSTD, FrameHeader, HEADER_LEN,
};
use octoisp_shared::{
    Ack, Limits, Message, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, negotiate_version,
};

use common::{RawSampleBlock, frame_of, rle_bomb, varint};

fn ack() -> Message {
    Message::Ack(Ack {
        seq: 1,
        duplicate: false,
    })
}

#[test]
fn the_hand_made_rle_frame_is_valid_zstd() {
    // Guards the bomb tests below: they must fail because of the limit, not because the frame is garbage.
    let small = rle_bomb(3, true);
    assert_eq!(
        zstd::stream::decode_all(&small[..]).unwrap(),
        vec![0u8; 3 * 128 * 1024]
    );
    assert_eq!(
        zstd::stream::decode_all(&rle_bomb(2, false)[..])
            .unwrap()
            .len(),
        2 * 128 * 1024
    );
}

#[test]
fn oversize_header_is_refused_before_the_payload_arrives() {
    let limits = Limits::default();
    let mut head = [b'O', 0, 0, 0, 0, 0];
    head[2..].copy_from_slice(&(limits.max_frame_bytes as u32 + 1).to_le_bytes());
    let err = FrameHeader::parse(&head, &limits).unwrap_err();
    assert!(
        matches!(err, DecodeError::FrameTooLarge { len, max } if len == limits.max_frame_bytes + 1 && max == limits.max_frame_bytes),
        "{err}"
    );
    // decode() with only the header in hand says "too large", not "incomplete, send me 16 MiB more".
    assert!(matches!(
        frame::decode(&head, &limits),
        Err(DecodeError::FrameTooLarge { .. })
    ));
    head[2..].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        FrameHeader::parse(&head, &limits),
        Err(DecodeError::FrameTooLarge { .. })
    ));
    // Exactly at the limit is fine.
    head[2..].copy_from_slice(&(limits.max_frame_bytes as u32).to_le_bytes());
    assert_eq!(
        FrameHeader::parse(&head, &limits).unwrap().len as usize,
        limits.max_frame_bytes
    );
}

#[test]
fn zstd_bomb_declaring_a_gigabyte_is_refused() {
    let payload = rle_bomb(8192, true); // 1 GiB of zeros in 32 KiB
    assert!(payload.len() < 40_000);
    let err = frame::decode(&frame_of(FLAG_ZSTD, &payload), &Limits::default()).unwrap_err();
    assert!(
        matches!(err, DecodeError::DecompressedTooLarge { max } if max == 64 * 1024 * 1024),
        "{err}"
    );
}

#[test]
fn zstd_bomb_without_declared_size_stops_at_the_limit() {
    let payload = rle_bomb(8192, false); // says nothing about its size: only the cap can stop it
    let limits = Limits {
        max_frame_bytes: 1 << 20,
        max_decompressed_bytes: 1 << 20,
    };
    let err = frame::decode(&frame_of(FLAG_ZSTD, &payload), &limits).unwrap_err();
    assert!(
        matches!(err, DecodeError::DecompressedTooLarge { max } if max == 1 << 20),
        "{err}"
    );
    let err = frame::decode(&frame_of(FLAG_ZSTD, &payload), &Limits::default()).unwrap_err();
    assert!(
        matches!(err, DecodeError::DecompressedTooLarge { .. }),
        "{err}"
    );
}

#[test]
fn zstd_bomb_from_a_streaming_encoder_is_refused() {
    // A real encoder fed a repeated buffer, with no content size in the frame: 8 MiB of zeros.
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..8 {
        enc.write_all(&zeros).unwrap();
    }
    let payload = enc.finish().unwrap();
    assert!(payload.len() < 4096, "{} bytes", payload.len());
    let limits = Limits {
        max_frame_bytes: 4096,
        max_decompressed_bytes: 4 << 20,
    };
    let err = frame::decode(&frame_of(FLAG_ZSTD, &payload), &limits).unwrap_err();
    assert!(
        matches!(err, DecodeError::DecompressedTooLarge { max } if max == 4 << 20),
        "{err}"
    );
}

#[test]
fn decompressed_limit_applies_to_messages_too() {
    let msg = Message::Reject(octoisp_shared::Reject {
        code: octoisp_shared::RejectCode::Internal,
        message: "x".repeat(10_000),
    });
    let bytes = frame::encode(&msg, Compression::Zstd(3)).unwrap();
    assert!(bytes.len() < 1_000);
    let tight = Limits {
        max_frame_bytes: 1 << 20,
        max_decompressed_bytes: 5_000,
    };
    assert!(matches!(
        frame::decode(&bytes, &tight),
        Err(DecodeError::DecompressedTooLarge { max: 5_000 })
    ));
    // Uncompressed, the same message is over the decompressed limit as well.
    let plain = frame::encode(&msg, Compression::None).unwrap();
    assert!(matches!(
        frame::decode(&plain, &tight),
        Err(DecodeError::DecompressedTooLarge { .. })
    ));
    // And the encoder refuses to write what that peer would refuse.
    assert!(matches!(
        frame::encode_with_limits(&msg, Compression::Zstd(3), &tight),
        Err(EncodeError::MessageTooLarge { max: 5_000, .. })
    ));
    assert!(frame::decode(&bytes, &Limits::default()).is_ok());
}

#[test]
fn encoder_refuses_frames_over_the_default_limits() {
    let msg = Message::Reject(octoisp_shared::Reject {
        code: octoisp_shared::RejectCode::Internal,
        message: "y".repeat(Limits::default().max_frame_bytes + 1),
    });
    // Uncompressed: the frame itself is too big.
    assert!(matches!(
        frame::encode(&msg, Compression::None),
        Err(EncodeError::FrameTooLarge { .. })
    ));
    // Compressed it fits.
    assert!(frame::encode(&msg, Compression::Zstd(1)).is_ok());
}

#[test]
fn bad_magic_and_unknown_flags_are_refused() {
    let good = frame::encode(&ack(), Compression::None).unwrap();
    let mut bad = good.clone();
    bad[0] = b'P';
    assert!(matches!(
        frame::decode(&bad, &Limits::default()),
        Err(DecodeError::BadMagic { found: b'P' })
    ));
    // Even one byte is enough to know.
    assert!(matches!(
        frame::decode(&bad[..1], &Limits::default()),
        Err(DecodeError::BadMagic { .. })
    ));
    assert!(matches!(
        FrameHeader::parse(bad[..HEADER_LEN].try_into().unwrap(), &Limits::default()),
        Err(DecodeError::BadMagic { .. })
    ));
    for flags in [0b10, 0b1000_0000, 0b11, 0xff] {
        let mut bad = good.clone();
        bad[1] = flags;
        let err = frame::decode(&bad, &Limits::default()).unwrap_err();
        assert!(
            matches!(err, DecodeError::UnknownFlags { flags: f } if f == flags),
            "{err}"
        );
        assert!(matches!(
            frame::decode(&bad[..2], &Limits::default()),
            Err(DecodeError::UnknownFlags { .. })
        ));
    }
    // The zstd flag on a payload that is not zstd.
    let mut lying = good.clone();
    lying[1] = FLAG_ZSTD;
    assert!(matches!(
        frame::decode(&lying, &Limits::default()),
        Err(DecodeError::Zstd(_))
    ));
}

#[test]
fn truncated_frames_are_incomplete_with_the_missing_count() {
    for compression in [Compression::None, Compression::Zstd(3)] {
        let whole = frame::encode(&Message::Batch(common::golden_batch()), compression).unwrap();
        for cut in 0..whole.len() {
            match frame::decode(&whole[..cut], &Limits::default()) {
                Err(DecodeError::Incomplete { needed }) if cut < HEADER_LEN => {
                    assert_eq!(needed, HEADER_LEN - cut);
                }
                Err(DecodeError::Incomplete { needed }) => assert_eq!(needed, whole.len() - cut),
                other => panic!("cut at {cut} of {}: {other:?}", whole.len()),
            }
        }
    }
}

#[test]
fn a_payload_cut_short_inside_a_shorter_frame_is_an_error() {
    // The header is rewritten to match the cut: the frame is complete but its content is not.
    let whole = frame::encode(&Message::Batch(common::golden_batch()), Compression::None).unwrap();
    for cut in [HEADER_LEN + 1, HEADER_LEN + 10, whole.len() - 1] {
        let frame = frame_of(0, &whole[HEADER_LEN..cut]);
        assert!(
            matches!(
                frame::decode(&frame, &Limits::default()),
                Err(DecodeError::Postcard(_))
            ),
            "cut {cut}"
        );
    }
    let zipped = frame::encode(
        &Message::Batch(common::golden_batch()),
        Compression::Zstd(3),
    )
    .unwrap();
    let frame = frame_of(FLAG_ZSTD, &zipped[HEADER_LEN..zipped.len() - 3]);
    assert!(matches!(
        frame::decode(&frame, &Limits::default()),
        Err(DecodeError::Zstd(_))
    ));
}

#[test]
fn trailing_garbage() {
    // After the frame: the next frame's business; decode says how much it used.
    let mut stream = frame::encode(&ack(), Compression::None).unwrap();
    let len = stream.len();
    stream.extend([0xde, 0xad]);
    let (msg, used) = frame::decode(&stream, &Limits::default()).unwrap();
    assert_eq!((msg, used), (ack(), len));
    // Inside the payload, after the message: refused.
    let mut payload = frame::encode(&ack(), Compression::None).unwrap()[HEADER_LEN..].to_vec();
    payload.push(0);
    let err = frame::decode(&frame_of(0, &payload), &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::TrailingBytes {
                what: "message",
                count: 1
            }
        ),
        "{err}"
    );
    // Inside the compressed payload, after the message.
    let compressed = zstd::bulk::compress(&payload, 3).unwrap();
    let err = frame::decode(&frame_of(FLAG_ZSTD, &compressed), &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::TrailingBytes {
                what: "message",
                count: 1
            }
        ),
        "{err}"
    );
    // After the zstd frame, inside the payload.
    let mut compressed =
        frame::encode(&ack(), Compression::Zstd(3)).unwrap()[HEADER_LEN..].to_vec();
    compressed.extend([1, 2, 3]);
    let err = frame::decode(&frame_of(FLAG_ZSTD, &compressed), &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::TrailingBytes {
                what: "zstd frame",
                count: 3
            }
        ),
        "{err}"
    );
    // A second zstd frame concatenated is trailing bytes too, not a longer message.
    let mut two = frame::encode(&ack(), Compression::Zstd(3)).unwrap()[HEADER_LEN..].to_vec();
    two.extend(two.clone());
    assert!(matches!(
        frame::decode(&frame_of(FLAG_ZSTD, &two), &Limits::default()),
        Err(DecodeError::TrailingBytes {
            what: "zstd frame",
            ..
        })
    ));
}

#[test]
fn decode_payload_checks_the_length_it_is_given() {
    let bytes = frame::encode(&ack(), Compression::None).unwrap();
    let limits = Limits::default();
    let header = FrameHeader::parse(bytes[..HEADER_LEN].try_into().unwrap(), &limits).unwrap();
    assert_eq!(
        frame::decode_payload(&header, &bytes[HEADER_LEN..], &limits).unwrap(),
        ack()
    );
    assert!(matches!(
        frame::decode_payload(&header, &bytes[HEADER_LEN..bytes.len() - 1], &limits),
        Err(DecodeError::Incomplete { needed: 1 })
    ));
    let mut longer = bytes[HEADER_LEN..].to_vec();
    longer.push(0);
    assert!(matches!(
        frame::decode_payload(&header, &longer, &limits),
        Err(DecodeError::TrailingBytes { .. })
    ));
}

#[test]
fn version_negotiation() {
    // This build's own range.
    assert_eq!(
        negotiate_version(PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX),
        Some(PROTOCOL_VERSION_MAX)
    );
    // An agent that speaks a wider range gets our newest.
    assert_eq!(negotiate_version(0, u16::MAX), Some(PROTOCOL_VERSION_MAX));
    // An agent that only speaks our oldest gets it.
    assert_eq!(
        negotiate_version(0, PROTOCOL_VERSION_MIN),
        Some(PROTOCOL_VERSION_MIN)
    );
    // Entirely newer or entirely older: nothing in common.
    assert_eq!(negotiate_version(PROTOCOL_VERSION_MAX + 1, u16::MAX), None);
    assert_eq!(negotiate_version(0, PROTOCOL_VERSION_MIN - 1), None);
    // An inverted range is no range.
    assert_eq!(
        negotiate_version(PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN.saturating_sub(1)),
        None
    );
    assert_eq!(negotiate_version(u16::MAX, 0), None);
}

fn sample_error(raw: &RawSampleBlock) -> String {
    match raw.to_block().decode() {
        Err(DecodeError::InvalidSamples(msg)) => msg,
        other => panic!("expected InvalidSamples, got {other:?}"),
    }
}

#[test]
fn sample_block_claiming_a_huge_run_is_an_error() {
    // Count and run length both 2^40 with one-byte columns: refused before allocating anything for them.
    let raw = RawSampleBlock {
        count: 1 << 40,
        series: varint(1),
        run_lens: varint(1 << 40),
        run_ts: varint(0),
        ints: vec![varint(0)],
        ..RawSampleBlock::default()
    };
    assert!(raw.to_block().len() == 1 << 40);
    let msg = sample_error(&raw);
    assert!(msg.contains("count"), "{msg}");
    // A modest count with a run that claims 2^40 samples.
    let raw = RawSampleBlock { count: 1, ..raw };
    let msg = sample_error(&raw);
    assert!(msg.contains("claims 1099511627776"), "{msg}");
    // The same block with an honest run length decodes.
    let honest = RawSampleBlock {
        run_lens: varint(1),
        ..raw
    };
    let samples = honest.to_block().decode().unwrap();
    assert_eq!(samples.len(), 1);
    assert_eq!((samples[0].series, samples[0].value), (1, 0.0));
}

#[test]
fn sample_blocks_that_do_not_add_up_are_errors() {
    let good = RawSampleBlock::from_block(&octoisp_shared::SampleBlock::encode(
        &common::golden_samples(),
    ));
    assert!(good.to_block().decode().is_ok());
    let cases: Vec<(&str, RawSampleBlock)> = vec![
        (
            "count too small",
            RawSampleBlock {
                count: good.count - 1,
                ..good.clone()
            },
        ),
        (
            "count too large",
            RawSampleBlock {
                count: good.count + 1,
                ..good.clone()
            },
        ),
        (
            "zero-length run",
            RawSampleBlock {
                run_lens: [varint(0), good.run_lens.clone()].concat(),
                ..good.clone()
            },
        ),
        (
            "extra series byte",
            RawSampleBlock {
                series: [good.series.clone(), vec![1]].concat(),
                ..good.clone()
            },
        ),
        (
            "missing ts byte",
            RawSampleBlock {
                ts: good.ts[..good.ts.len() - 1].to_vec(),
                ..good.clone()
            },
        ),
        ("extra ints byte", {
            let mut ints = good.ints.clone();
            ints[0].push(0);
            RawSampleBlock {
                ints,
                ..good.clone()
            }
        }),
        (
            "eleven int planes",
            RawSampleBlock {
                ints: vec![Vec::new(); 11],
                ..good.clone()
            },
        ),
        (
            "float position past the end",
            RawSampleBlock {
                float_pos: [good.float_pos.clone(), varint(1000)].concat(),
                floats: [good.floats.clone(), varint(0)].concat(),
                ..good.clone()
            },
        ),
        (
            "float position overflow",
            RawSampleBlock {
                float_pos: varint(u64::MAX),
                ..good.clone()
            },
        ),
        (
            "missing float",
            RawSampleBlock {
                floats: Vec::new(),
                ..good.clone()
            },
        ),
        (
            "overlong varint",
            RawSampleBlock {
                series: vec![0xff; 11],
                ..good.clone()
            },
        ),
        (
            "varint over 64 bits",
            RawSampleBlock {
                series: [vec![0xff; 9], vec![0x02]].concat(),
                ..good.clone()
            },
        ),
    ];
    for (what, raw) in cases {
        assert!(
            matches!(raw.to_block().decode(), Err(DecodeError::InvalidSamples(_))),
            "{what}: {:?}",
            raw.to_block().decode().map(|s| s.len())
        );
    }
}
