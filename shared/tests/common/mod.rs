//! Fixtures shared by the integration tests: one deterministic message per `Message` variant (the golden
//! vectors), proptest strategies for every message, and a mirror of `SampleBlock`'s wire layout for crafting
//! malformed blocks.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::PathBuf;

use octoisp_shared::frame::{self, Compression, FLAG_ZSTD, HEADER_LEN};
use octoisp_shared::*;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Fixed instant used by every golden message: 2026-07-25T17:20:00Z.
pub const T0: i64 = 1_785_000_000_000;

/// `shared/tests/golden/`.
pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// `shared/fuzz/corpus/decode_frame/`.
pub fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_frame")
}

fn uuid(n: u128) -> Uuid {
    Uuid::from_u128(0x0c70_15b0_0000_4000_8000_0000_0000_0000 | n)
}

fn strs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Samples of the golden batch: integer counters, fractional gauges, and every awkward f64.
pub fn golden_samples() -> Vec<Sample> {
    let mut samples = Vec::new();
    for k in 0..4i64 {
        let ts_ms = T0 + k * 60_000 + k * k * 7;
        samples.push(Sample {
            series: 1,
            ts_ms,
            value: (1_000_000_000 + k * 7_500_123) as f64,
        });
        samples.push(Sample {
            series: 2,
            ts_ms,
            value: 12.5 + k as f64 * 0.371,
        });
        samples.push(Sample {
            series: 7,
            ts_ms,
            value: 1.0,
        });
    }
    for value in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.0,
        f64::MIN_POSITIVE,
        -(2f64.powi(60)),
    ] {
        samples.push(Sample {
            series: 9,
            ts_ms: T0,
            value,
        });
    }
    // A duplicate (series, ts) pair with two values, and a series far away.
    samples.push(Sample {
        series: 7,
        ts_ms: T0,
        value: 2.0,
    });
    samples.push(Sample {
        series: u64::MAX,
        ts_ms: -1,
        value: 3.0,
    });
    samples
}

/// One deterministic message per `Message` variant, with the file stem of its golden vector.
pub fn golden_messages() -> Vec<(&'static str, Message)> {
    vec![
        (
            "hello",
            Message::Hello(Hello {
                version_min: 1,
                version_max: 1,
                agent_version: "0.1.0".into(),
                hostname: "pop-sp-01".into(),
            }),
        ),
        (
            "welcome",
            Message::Welcome(Welcome {
                version: 1,
                agent_id: uuid(1),
                provider_id: uuid(2),
                pop_id: uuid(3),
                server_time_ms: T0,
                max_batch_bytes: 8 * 1024 * 1024,
                max_in_flight: 8,
                heartbeat_secs: 15,
            }),
        ),
        (
            "reject",
            Message::Reject(Reject {
                code: RejectCode::Revoked,
                message: "agent certificate revoked; enroll again".into(),
            }),
        ),
        (
            "enroll",
            Message::Enroll(EnrollRequest {
                version_min: 1,
                version_max: 1,
                token: "s3cr3t-token".into(),
                csr_pem:
                    "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
                        .into(),
                hostname: "pop-sp-01".into(),
                agent_version: "0.1.0".into(),
            }),
        ),
        (
            "enrolled",
            Message::Enrolled(EnrollResponse {
                agent_id: uuid(1),
                provider_id: uuid(2),
                pop_id: uuid(3),
                cert_pem: "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n".into(),
                ca_pem: "-----BEGIN CERTIFICATE-----\nMIID\n-----END CERTIFICATE-----\n".into(),
            }),
        ),
        ("batch", Message::Batch(golden_batch())),
        (
            "ack",
            Message::Ack(Ack {
                seq: 42,
                duplicate: true,
            }),
        ),
        (
            "nack",
            Message::Nack(Nack {
                seq: 43,
                code: NackCode::UnknownSeries(vec![3, 9, 300]),
                message: "resend with definitions".into(),
                retry_after_ms: 0,
            }),
        ),
        (
            "heartbeat",
            Message::Heartbeat(Heartbeat {
                ts_ms: T0,
                uptime_secs: 86_400,
                outbox_records: 12,
                outbox_samples: 34_567,
                outbox_bytes: 1_048_576,
                oldest_ms: Some(T0 - 120_000),
                samples_dropped_total: 0,
            }),
        ),
        (
            "command",
            Message::Command(Command {
                id: uuid(10),
                deadline_ms: T0 + 300_000,
                name: "mtr".into(),
                args_json: r#"{"target":"192.0.2.1","cycles":10}"#.into(),
            }),
        ),
        (
            "command_progress",
            Message::CommandProgress(CommandProgress {
                command_id: uuid(10),
                seq: 3,
                payload_json: r#"{"hop":4,"rtt_ms":12.5}"#.into(),
            }),
        ),
        (
            "firmware_fetch",
            Message::FirmwareFetch(FirmwareFetch {
                sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
                offset: 1_048_576,
            }),
        ),
        (
            "firmware_offer",
            Message::FirmwareOffer(FirmwareOffer::Sending {
                size: 31_457_280,
                offset: 1_048_576,
            }),
        ),
    ]
}

/// The golden batch: series definitions, samples and one record of every kind.
pub fn golden_batch() -> Batch {
    Batch {
        seq: 42,
        settled_below: 40,
        created_ms: T0,
        series: vec![
            SeriesDef {
                id: 1,
                device_key: "snmp:198.51.100.7".into(),
                metric: "if.in_octets".into(),
                labels: strs(&[("ifName", "ge-0/0/1")]),
                kind: MetricKind::Counter,
            },
            SeriesDef {
                id: 2,
                device_key: "icmp:192.0.2.1".into(),
                metric: "ping.rtt_avg_ms".into(),
                labels: Vec::new(),
                kind: MetricKind::Gauge,
            },
        ],
        samples: SampleBlock::encode(&golden_samples()),
        records: vec![
            Record::Event(Event {
                id: uuid(20),
                ts_ms: T0,
                device_key: Some("icmp:192.0.2.1".into()),
                kind: "ping.down".into(),
                severity: Severity::Critical,
                message: "192.0.2.1 stopped answering ping".into(),
                attrs: strs(&[("monitor", "core")]),
            }),
            Record::Inventory(Inventory {
                ts_ms: T0,
                device_key: "cwmp:00259E-HG8245H-48575443A1B2C3D4".into(),
                vendor: Some("Huawei".into()),
                model: Some("HG8245H".into()),
                serial_number: Some("48575443A1B2C3D4".into()),
                oui: Some("00259E".into()),
                product_class: Some("HG8245H".into()),
                firmware: Some("V3R017C10S125".into()),
                mgmt_ip: None,
                attrs: strs(&[("hw", "10C7.A")]),
            }),
            Record::Tr069Result(Tr069Result {
                id: uuid(21),
                ts_ms: T0 + 1,
                device_key: "cwmp:00259E-HG8245H-48575443A1B2C3D4".into(),
                task_id: Some(uuid(22)),
                kind: "GetParameterValues".into(),
                ok: false,
                fault_code: Some(9005),
                fault_string: Some("Invalid parameter name".into()),
                parameters: strs(&[("Device.DeviceInfo.UpTime", "3600")]),
            }),
            Record::CommandResult(CommandResult {
                command_id: uuid(10),
                ts_ms: T0 + 2,
                status: CommandStatus::Succeeded,
                output_json: r#"{"hops":[]}"#.into(),
                error: None,
            }),
            Record::DropReport(DropReport {
                id: uuid(23),
                from_ms: T0 - 3_600_000,
                to_ms: T0,
                samples_dropped: 1_000,
                records_refused: 0,
                reason: "outbox above max_bytes".into(),
            }),
        ],
    }
}

/// The wire layout of `SampleBlock`, field for field, to craft blocks the encoder would never produce.
/// A change to `SampleBlock`'s fields that this mirror does not follow fails the tests using it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RawSampleBlock {
    pub count: u64,
    pub base_ts_ms: i64,
    pub series: Vec<u8>,
    pub run_lens: Vec<u8>,
    pub run_ts: Vec<u8>,
    pub ts: Vec<u8>,
    pub ints: Vec<Vec<u8>>,
    pub float_pos: Vec<u8>,
    pub floats: Vec<u8>,
}

impl RawSampleBlock {
    /// The same bytes, read as a `SampleBlock`.
    pub fn to_block(&self) -> SampleBlock {
        let bytes = postcard::to_stdvec(self).expect("serializing a plain struct");
        postcard::from_bytes(&bytes).expect("RawSampleBlock mirrors SampleBlock")
    }

    /// The fields of a real block.
    pub fn from_block(block: &SampleBlock) -> RawSampleBlock {
        let bytes = postcard::to_stdvec(block).expect("serializing a block");
        postcard::from_bytes(&bytes).expect("RawSampleBlock mirrors SampleBlock")
    }
}

/// A zstd frame of `blocks` RLE blocks of 128 KiB of zeros each, written by hand: 4 bytes per 128 KiB, so a
/// frame of a few dozen KiB expands to gigabytes. `declare` puts the total in the frame header.
pub fn rle_bomb(blocks: u32, declare: bool) -> Vec<u8> {
    const BLOCK: u32 = 128 * 1024;
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd]; // zstd magic
    if declare {
        out.push(0b1000_0000); // 4-byte frame content size, no single segment, no checksum, no dictionary
        out.push(0x50); // window descriptor: 2^(10 + 10) = 1 MiB
        out.extend(
            (u64::from(blocks) * u64::from(BLOCK))
                .min(u64::from(u32::MAX))
                .to_le_bytes()[..4]
                .iter(),
        );
    } else {
        out.push(0);
        out.push(0x50);
    }
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        let header = last | (1 << 1) | (BLOCK << 3); // block type 1 = RLE
        out.extend(&header.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}

/// A frame around any payload, header computed.
pub fn frame_of(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![b'O', flags];
    out.extend(u32::try_from(payload.len()).unwrap().to_le_bytes());
    out.extend(payload);
    out
}

/// The malformed seeds, by file name: each reaches a different refusal of the decoder.
pub fn malformed_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let plain = |msg: &Message| frame::encode(msg, Compression::None).unwrap();
    let messages = golden_messages();
    let msg = |name: &str| {
        messages
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| m.clone())
            .unwrap()
    };
    let batch = plain(&msg("batch"));
    let zipped = frame::encode(&msg("batch"), Compression::Zstd(3)).unwrap();
    let with = |bytes: &[u8], at: usize, value: u8| {
        let mut b = bytes.to_vec();
        b[at] = value;
        b
    };
    let batch_with_block = |raw: RawSampleBlock| {
        let Message::Batch(mut b) = msg("batch") else {
            unreachable!()
        };
        b.samples = raw.to_block();
        plain(&Message::Batch(b))
    };
    let good_block = RawSampleBlock::from_block(&SampleBlock::encode(&golden_samples()));
    vec![
        ("bad-magic.bin", with(&plain(&msg("ack")), 0, b'X')),
        (
            "bad-unknown-flags.bin",
            with(&plain(&msg("hello")), 1, 0x02),
        ),
        (
            "bad-oversize-len.bin",
            vec![b'O', 0, 0xff, 0xff, 0xff, 0xff],
        ),
        ("bad-truncated-header.bin", batch[..3].to_vec()),
        (
            "bad-truncated-payload.bin",
            batch[..batch.len() - 5].to_vec(),
        ),
        (
            "bad-payload-cut-short.bin",
            frame_of(0, &batch[HEADER_LEN..batch.len() - 5]),
        ),
        (
            "bad-trailing-in-payload.bin",
            frame_of(0, &[&plain(&msg("ack"))[HEADER_LEN..], &[0]].concat()),
        ),
        (
            "bad-zstd-flag-on-plain.bin",
            with(&plain(&msg("hello")), 1, FLAG_ZSTD),
        ),
        (
            "bad-zstd-truncated.bin",
            frame_of(FLAG_ZSTD, &zipped[HEADER_LEN..zipped.len() - 3]),
        ),
        (
            "bad-zstd-trailing.bin",
            frame_of(FLAG_ZSTD, &[&zipped[HEADER_LEN..], &[7, 7]].concat()),
        ),
        (
            "bad-zstd-bomb-declared.bin",
            frame_of(FLAG_ZSTD, &rle_bomb(64, true)),
        ),
        (
            "bad-zstd-bomb-undeclared.bin",
            frame_of(FLAG_ZSTD, &rle_bomb(64, false)),
        ),
        ("bad-unknown-variant.bin", frame_of(0, &[200, 0, 0])),
        (
            "bad-huge-vec-length.bin",
            frame_of(0, &[7, 43, 2, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]),
        ),
        (
            "bad-samples-huge-run.bin",
            batch_with_block(RawSampleBlock {
                count: 1 << 40,
                series: varint(1),
                run_lens: varint(1 << 40),
                run_ts: varint(0),
                ints: vec![varint(0)],
                ..RawSampleBlock::default()
            }),
        ),
        (
            "bad-samples-count.bin",
            batch_with_block(RawSampleBlock {
                count: good_block.count + 1,
                ..good_block.clone()
            }),
        ),
        (
            "bad-samples-float-pos.bin",
            batch_with_block(RawSampleBlock {
                float_pos: varint(u64::MAX),
                ..good_block.clone()
            }),
        ),
        (
            "bad-samples-int-planes.bin",
            batch_with_block(RawSampleBlock {
                ints: vec![vec![0x80]; 11],
                ..good_block.clone()
            }),
        ),
    ]
}

/// LEB128 varint, for crafting columns.
pub fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    out
}

/// Samples sorted the way `SampleBlock::decode` returns them, compared bit for bit.
pub fn canonical(samples: &[Sample]) -> Vec<(u64, i64, u64)> {
    let mut sorted = samples.to_vec();
    sorted.sort_by_key(|s| (s.series, s.ts_ms)); // stable, like the encoder
    sorted
        .iter()
        .map(|s| (s.series, s.ts_ms, s.value.to_bits()))
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// proptest strategies

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z0-9.:/-]{0,24}"]
}

fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((text(), text()), 0..4)
}

fn any_uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

/// An f64 of any kind: counters, gauges, and arbitrary bit patterns (NaN payloads, -0.0, infinities).
pub fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        (0u64..1 << 50).prop_map(|v| v as f64),
        (-1000i64..1000).prop_map(|v| v as f64),
        any::<f64>(),
        any::<u64>().prop_map(f64::from_bits),
        prop::sample::select(vec![
            f64::NAN,
            -0.0,
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            2f64.powi(63),
            -(2f64.powi(63))
        ]),
    ]
}

/// Samples that look like real series (few ids, regular timestamps) mixed with extremes.
pub fn samples(max_len: usize) -> impl Strategy<Value = Vec<Sample>> {
    let series = prop_oneof![4 => 0u64..6, 1 => any::<u64>()];
    let ts = prop_oneof![4 => (0i64..20).prop_map(|k| T0 + k * 60_000), 1 => any::<i64>()];
    prop::collection::vec((series, ts, value()), 0..max_len).prop_map(|v| {
        v.into_iter()
            .map(|(series, ts_ms, value)| Sample {
                series,
                ts_ms,
                value,
            })
            .collect()
    })
}

fn series_def() -> impl Strategy<Value = SeriesDef> {
    (any::<u64>(), text(), text(), pairs(), any::<bool>()).prop_map(
        |(id, device_key, metric, labels, counter)| SeriesDef {
            id,
            device_key,
            metric,
            labels,
            kind: if counter {
                MetricKind::Counter
            } else {
                MetricKind::Gauge
            },
        },
    )
}

fn severity() -> impl Strategy<Value = Severity> {
    prop::sample::select(vec![Severity::Info, Severity::Warning, Severity::Critical])
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (
            any_uuid(),
            any::<i64>(),
            prop::option::of(text()),
            text(),
            severity(),
            text(),
            pairs()
        )
            .prop_map(|(id, ts_ms, device_key, kind, severity, message, attrs)| {
                Record::Event(Event {
                    id,
                    ts_ms,
                    device_key,
                    kind,
                    severity,
                    message,
                    attrs,
                })
            }),
        (
            any::<i64>(),
            text(),
            prop::collection::vec(prop::option::of(text()), 7),
            pairs()
        )
            .prop_map(
                |(ts_ms, device_key, o, attrs)| Record::Inventory(Inventory {
                    ts_ms,
                    device_key,
                    vendor: o[0].clone(),
                    model: o[1].clone(),
                    serial_number: o[2].clone(),
                    oui: o[3].clone(),
                    product_class: o[4].clone(),
                    firmware: o[5].clone(),
                    mgmt_ip: o[6].clone(),
                    attrs,
                })
            ),
        (
            any_uuid(),
            any::<i64>(),
            text(),
            prop::option::of(any_uuid()),
            text(),
            any::<bool>(),
            prop::option::of(any::<u32>()),
            prop::option::of(text()),
            pairs()
        )
            .prop_map(
                |(
                    id,
                    ts_ms,
                    device_key,
                    task_id,
                    kind,
                    ok,
                    fault_code,
                    fault_string,
                    parameters,
                )| {
                    Record::Tr069Result(Tr069Result {
                        id,
                        ts_ms,
                        device_key,
                        task_id,
                        kind,
                        ok,
                        fault_code,
                        fault_string,
                        parameters,
                    })
                }
            ),
        (
            any_uuid(),
            any::<i64>(),
            0usize..5,
            text(),
            prop::option::of(text())
        )
            .prop_map(|(command_id, ts_ms, status, output_json, error)| {
                Record::CommandResult(CommandResult {
                    command_id,
                    ts_ms,
                    status: [
                        CommandStatus::Succeeded,
                        CommandStatus::Failed,
                        CommandStatus::Expired,
                        CommandStatus::Rejected,
                        CommandStatus::Cancelled,
                    ][status],
                    output_json,
                    error,
                })
            }),
        (
            any_uuid(),
            any::<i64>(),
            any::<i64>(),
            any::<u64>(),
            any::<u64>(),
            text()
        )
            .prop_map(
                |(id, from_ms, to_ms, samples_dropped, records_refused, reason)| Record::DropReport(
                    DropReport {
                        id,
                        from_ms,
                        to_ms,
                        samples_dropped,
                        records_refused,
                        reason,
                    }
                )
            ),
    ]
}

fn reject_code() -> impl Strategy<Value = RejectCode> {
    use RejectCode::*;
    prop::sample::select(vec![
        UnsupportedVersion,
        Revoked,
        UnknownAgent,
        CertificateRequired,
        InvalidToken,
        TokenExpired,
        TokenUsed,
        InvalidCsr,
        ProtocolError,
        Unavailable,
        Internal,
    ])
}

/// Any message, every variant and field drawn at random.
pub fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u16>(), any::<u16>(), text(), text()).prop_map(
            |(version_min, version_max, agent_version, hostname)| {
                Message::Hello(Hello {
                    version_min,
                    version_max,
                    agent_version,
                    hostname,
                })
            }
        ),
        (
            any::<u16>(),
            any_uuid(),
            any_uuid(),
            any_uuid(),
            any::<i64>(),
            any::<u32>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(
                |(
                    version,
                    agent_id,
                    provider_id,
                    pop_id,
                    server_time_ms,
                    max_batch_bytes,
                    max_in_flight,
                    heartbeat_secs,
                )| {
                    Message::Welcome(Welcome {
                        version,
                        agent_id,
                        provider_id,
                        pop_id,
                        server_time_ms,
                        max_batch_bytes,
                        max_in_flight,
                        heartbeat_secs,
                    })
                }
            ),
        (reject_code(), text())
            .prop_map(|(code, message)| Message::Reject(Reject { code, message })),
        (any::<u16>(), any::<u16>(), text(), text(), text(), text()).prop_map(
            |(version_min, version_max, token, csr_pem, hostname, agent_version)| Message::Enroll(
                EnrollRequest {
                    version_min,
                    version_max,
                    token,
                    csr_pem,
                    hostname,
                    agent_version,
                }
            )
        ),
        (any_uuid(), any_uuid(), any_uuid(), text(), text()).prop_map(
            |(agent_id, provider_id, pop_id, cert_pem, ca_pem)| {
                Message::Enrolled(EnrollResponse {
                    agent_id,
                    provider_id,
                    pop_id,
                    cert_pem,
                    ca_pem,
                })
            }
        ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<i64>(),
            prop::collection::vec(series_def(), 0..3),
            samples(40),
            prop::collection::vec(record(), 0..4)
        )
            .prop_map(
                |(seq, settled_below, created_ms, series, samples, records)| {
                    Message::Batch(Batch {
                        seq,
                        settled_below,
                        created_ms,
                        series,
                        samples: SampleBlock::encode(&samples),
                        records,
                    })
                }
            ),
        (any::<u64>(), any::<bool>())
            .prop_map(|(seq, duplicate)| Message::Ack(Ack { seq, duplicate })),
        (
            any::<u64>(),
            prop_oneof![
                Just(NackCode::Malformed),
                Just(NackCode::Retry),
                prop::collection::vec(any::<u64>(), 0..5).prop_map(NackCode::UnknownSeries)
            ],
            text(),
            any::<u32>()
        )
            .prop_map(|(seq, code, message, retry_after_ms)| Message::Nack(Nack {
                seq,
                code,
                message,
                retry_after_ms
            })),
        (
            any::<i64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            prop::option::of(any::<i64>()),
            any::<u64>()
        )
            .prop_map(
                |(
                    ts_ms,
                    uptime_secs,
                    outbox_records,
                    outbox_samples,
                    outbox_bytes,
                    oldest_ms,
                    samples_dropped_total,
                )| {
                    Message::Heartbeat(Heartbeat {
                        ts_ms,
                        uptime_secs,
                        outbox_records,
                        outbox_samples,
                        outbox_bytes,
                        oldest_ms,
                        samples_dropped_total,
                    })
                }
            ),
        (any_uuid(), any::<i64>(), text(), text()).prop_map(
            |(id, deadline_ms, name, args_json)| {
                Message::Command(Command {
                    id,
                    deadline_ms,
                    name,
                    args_json,
                })
            }
        ),
        (any_uuid(), any::<u32>(), text()).prop_map(|(command_id, seq, payload_json)| {
            Message::CommandProgress(CommandProgress {
                command_id,
                seq,
                payload_json,
            })
        }),
        (text(), any::<u64>())
            .prop_map(|(sha256, offset)| Message::FirmwareFetch(FirmwareFetch { sha256, offset })),
        (any::<u64>(), any::<u64>(), text(), any::<bool>()).prop_map(
            |(size, offset, message, ok)| {
                Message::FirmwareOffer(if ok {
                    FirmwareOffer::Sending { size, offset }
                } else {
                    FirmwareOffer::Refused { message }
                })
            }
        ),
    ]
}
