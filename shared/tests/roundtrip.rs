//! Property tests: messages and sample sets survive encode → decode, and no input makes a decoder panic.

mod common;

use octoisp_shared::frame::{self, Compression, DecodeError, FrameHeader, HEADER_LEN};
use octoisp_shared::{Limits, Message, SampleBlock};
use proptest::prelude::*;

use common::{RawSampleBlock, canonical};

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        (-5i32..=19).prop_map(Compression::Zstd)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn messages_round_trip(msg in common::message(), compression in compression()) {
        let limits = Limits::default();
        let bytes = frame::encode(&msg, compression).unwrap();
        let (decoded, used) = frame::decode(&bytes, &limits).unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(&decoded, &msg);

        // The same frame read the way a stream reader does: header first, then exactly its payload.
        let header = FrameHeader::parse(bytes[..HEADER_LEN].try_into().unwrap(), &limits).unwrap();
        prop_assert_eq!(header.compressed, matches!(compression, Compression::Zstd(_)));
        prop_assert_eq!(header.len as usize, bytes.len() - HEADER_LEN);
        prop_assert_eq!(frame::decode_payload(&header, &bytes[HEADER_LEN..], &limits).unwrap(), msg.clone());

        // Batches: the samples inside decode too.
        if let Message::Batch(batch) = &decoded {
            batch.samples.decode().unwrap();
        }
    }

    #[test]
    fn back_to_back_frames_decode_in_order(a in common::message(), b in common::message()) {
        let mut stream = frame::encode(&a, Compression::Zstd(1)).unwrap();
        let first_len = stream.len();
        stream.extend(frame::encode(&b, Compression::None).unwrap());
        let (first, used) = frame::decode(&stream, &Limits::default()).unwrap();
        prop_assert_eq!(used, first_len);
        prop_assert_eq!(first, a);
        let (second, used2) = frame::decode(&stream[used..], &Limits::default()).unwrap();
        prop_assert_eq!(used + used2, stream.len());
        prop_assert_eq!(second, b);
    }

    #[test]
    fn samples_round_trip_bit_for_bit(samples in common::samples(300)) {
        let block = SampleBlock::encode(&samples);
        prop_assert_eq!(block.len(), samples.len());
        prop_assert_eq!(block.is_empty(), samples.is_empty());
        let decoded = block.decode().unwrap();
        // Decoded in (series, ts) order, duplicates in input order: exactly a stable sort of the input.
        prop_assert_eq!(canonical(&decoded), canonical(&samples));
        let in_order: Vec<_> = decoded.iter().map(|s| (s.series, s.ts_ms, s.value.to_bits())).collect();
        prop_assert_eq!(in_order, canonical(&samples));
        // Through a compressed frame as well.
        let msg = Message::Batch(octoisp_shared::Batch {
            seq: 1,
            settled_below: 0,
            created_ms: 0,
            series: Vec::new(),
            samples: block,
            records: Vec::new(),
        });
        let (back, _) = frame::decode(&frame::encode(&msg, Compression::Zstd(3)).unwrap(), &Limits::default()).unwrap();
        let Message::Batch(batch) = back else { panic!("not a batch") };
        prop_assert_eq!(canonical(&batch.samples.decode().unwrap()), canonical(&samples));
    }

    #[test]
    fn counter_series_round_trip(start in 0u64..1 << 52, steps in prop::collection::vec((0u64..1 << 30, 59_000i64..61_000), 1..200)) {
        // Long runs of one counter: the delta-of-delta path over many samples.
        let mut value = start;
        let mut ts = common::T0;
        let samples: Vec<_> = steps.iter().map(|&(dv, dt)| {
            value = value.wrapping_add(dv) % (1 << 53);
            ts += dt;
            octoisp_shared::Sample { series: 3, ts_ms: ts, value: value as f64 }
        }).collect();
        let decoded = SampleBlock::encode(&samples).decode().unwrap();
        prop_assert_eq!(canonical(&decoded), canonical(&samples));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let limits = Limits { max_frame_bytes: 4096, max_decompressed_bytes: 1 << 20 };
        if let Ok((Message::Batch(batch), _)) = frame::decode(&bytes, &limits) {
            let _ = batch.samples.decode();
        }
        if let Ok(block) = postcard::from_bytes::<SampleBlock>(&bytes) {
            let _ = block.decode();
        }
    }

    #[test]
    fn frame_with_arbitrary_payload_never_panics(flags in 0u8..2, payload in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = vec![b'O', flags];
        bytes.extend((payload.len() as u32).to_le_bytes());
        bytes.extend(&payload);
        match frame::decode(&bytes, &Limits::default()) {
            Ok((msg, used)) => {
                prop_assert_eq!(used, bytes.len());
                if let Message::Batch(batch) = msg {
                    let _ = batch.samples.decode();
                }
            }
            Err(DecodeError::Incomplete { .. }) => prop_assert!(false, "a whole frame is never incomplete"),
            Err(_) => {}
        }
    }

    #[test]
    fn crafted_sample_blocks_never_panic(
        count in prop_oneof![0u64..64, any::<u64>()],
        base_ts_ms in any::<i64>(),
        columns in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 6),
        ints in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 0..12),
    ) {
        let raw = RawSampleBlock {
            count,
            base_ts_ms,
            series: columns[0].clone(),
            run_lens: columns[1].clone(),
            run_ts: columns[2].clone(),
            ts: columns[3].clone(),
            ints,
            float_pos: columns[4].clone(),
            floats: columns[5].clone(),
        };
        if let Ok(samples) = raw.to_block().decode() {
            prop_assert_eq!(samples.len() as u64, count);
        }
    }

    #[test]
    fn mutated_blocks_never_panic(samples in common::samples(60), which in 0usize..9, at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        // One byte changed in a real block: much closer to valid than random bytes, so deeper paths run.
        let mut raw = RawSampleBlock::from_block(&SampleBlock::encode(&samples));
        let mut no_column = Vec::new();
        let column = match which {
            0 => &mut raw.series,
            1 => &mut raw.run_lens,
            2 => &mut raw.run_ts,
            3 => &mut raw.ts,
            4 => &mut raw.float_pos,
            5 => &mut raw.floats,
            6 => { raw.count = raw.count.wrapping_add(u64::from(byte)); &mut no_column }
            _ => match raw.ints.first_mut() { Some(plane) => plane, None => &mut raw.floats },
        };
        if !column.is_empty() {
            let i = at.index(column.len());
            column[i] = byte;
        }
        if let Ok(decoded) = raw.to_block().decode() {
            prop_assert_eq!(decoded.len() as u64, raw.count);
        }
    }
}
