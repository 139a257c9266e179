//! Firmware: images served by the ACS endpoint (checksum verified, Range requests, streamed from disk with
//! bounded memory), and a staged campaign that its stop rule halts before most devices are touched.

mod acs_support;

use std::alloc::System;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use acs_support::cpe::{Cpe, CpeConfig};
use acs_support::start;
use bytes::Bytes;
use cap::Cap;
use http_body_util::{BodyExt, Empty};
use octoisp_agent::acs::firmware::{Campaign, Decision, FirmwareDir};
use octoisp_agent::acs::session::AcsOptions;
use octoisp_agent::acs::tasks::TaskKind;
use sha2::{Digest, Sha256};

/// Counts live heap bytes, so that a test can see what serving costs in memory.
#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// Samples the live heap every 100 µs until `stop`, keeping the largest value seen.
fn sample_peak(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut peak = ALLOC.allocated();
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(ALLOC.allocated());
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        peak
    })
}

async fn get(
    addr: std::net::SocketAddr,
    path: &str,
    range: Option<&str>,
) -> (u16, Option<String>, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", "acs");
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let resp = tx
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let cr = resp
        .headers()
        .get("content-range")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        cr,
        resp.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn images_are_served_whole_or_by_range_and_only_when_their_checksum_matches() {
    let dir = tempfile::tempdir().unwrap();
    let image: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("eg8145v5-V5R020C10S115.bin"), &image).unwrap();
    std::fs::write(
        dir.path().join("eg8145v5-V5R020C10S115.bin.sha256"),
        hex::encode(Sha256::digest(&image)),
    )
    .unwrap();
    std::fs::write(dir.path().join("tampered.bin"), b"evil").unwrap();
    std::fs::write(
        dir.path().join("tampered.bin.sha256"),
        hex::encode(Sha256::digest(b"good")),
    )
    .unwrap();
    let opts = AcsOptions {
        firmware: Some(FirmwareDir::new(dir.path())),
        ..AcsOptions::default()
    };
    let acs = start(opts).await;
    let path = "/firmware/eg8145v5-V5R020C10S115.bin";
    let (status, _, body) = get(acs.addr, path, None).await;
    assert_eq!((status, body.as_ref()), (200, image.as_slice()));
    // A CPE resuming an interrupted download.
    let (status, cr, body) = get(acs.addr, path, Some("bytes=60000-")).await;
    assert_eq!(status, 206);
    assert_eq!(cr.as_deref(), Some("bytes 60000-99999/100000"));
    assert_eq!(body.as_ref(), &image[60_000..]);
    let (status, cr, _) = get(acs.addr, path, Some("bytes=200000-")).await;
    assert_eq!((status, cr.as_deref()), (416, Some("bytes */100000")));
    assert_eq!(get(acs.addr, "/firmware/tampered.bin", None).await.0, 503);
    assert_eq!(get(acs.addr, "/firmware/missing.bin", None).await.0, 404);
    assert_eq!(
        get(acs.addr, "/firmware/..%2Fetc%2Fpasswd", None).await.0,
        404
    );
}

/// Downloads `path` (with `range`) and compares it, frame by frame as it arrives, with `expected` (nothing is
/// kept): `(status, Content-Length, bytes received)`.
async fn download_and_compare(
    addr: std::net::SocketAddr,
    path: &str,
    range: Option<&str>,
    expected: &[u8],
) -> (u16, Option<u64>, usize) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", "acs");
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let resp = tx
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let length = resp
        .headers()
        .get("content-length")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let mut body = resp.into_body();
    let mut at = 0;
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        assert!(
            expected.get(at..at + data.len()) == Some(data.as_ref()),
            "bytes {at}..{} differ from the image",
            at + data.len()
        );
        at += data.len();
    }
    (status, length, at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_image_is_streamed_to_many_cpes_at_once_with_bounded_memory() {
    const SIZE: usize = 32 << 20;
    const CPES: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let image: Vec<u8> = (0..SIZE)
        .map(|i| ((i * 131 + i / 4093) % 251) as u8)
        .collect();
    std::fs::write(dir.path().join("hg8245-big.bin"), &image).unwrap();
    std::fs::write(
        dir.path().join("hg8245-big.bin.sha256"),
        hex::encode(Sha256::digest(&image)),
    )
    .unwrap();
    let acs = start(AcsOptions {
        firmware: Some(FirmwareDir::new(dir.path())),
        ..AcsOptions::default()
    })
    .await;
    let path = "/firmware/hg8245-big.bin";
    let image = Arc::new(image);

    let baseline = ALLOC.allocated();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_peak(stop.clone());
    let downloads: Vec<_> = (0..CPES)
        .map(|_| {
            let image = image.clone();
            tokio::spawn(async move { download_and_compare(acs.addr, path, None, &image).await })
        })
        .collect();
    for d in downloads {
        assert_eq!(d.await.unwrap(), (200, Some(SIZE as u64), SIZE));
    }
    stop.store(true, Ordering::Relaxed);
    let grown = sampler.join().unwrap().saturating_sub(baseline);
    // Reading the image whole per download would hold 16 × 32 MiB; streamed, each download holds a read buffer
    // and hyper's buffers.
    assert!(
        grown < 16 << 20,
        "serving {CPES} downloads of a {} MiB image at once grew the heap by {} MiB",
        SIZE >> 20,
        grown >> 20
    );

    // A CPE resuming a download: exactly the slice asked for, with its length.
    let (from, to) = (10_000_001usize, 20_000_000usize);
    assert_eq!(
        download_and_compare(
            acs.addr,
            path,
            Some(&format!("bytes={from}-{to}")),
            &image[from..=to]
        )
        .await,
        (206, Some((to - from + 1) as u64), to - from + 1)
    );
    let (status, cr, body) = get(acs.addr, path, Some("bytes=-5")).await;
    assert_eq!(status, 206);
    assert_eq!(
        cr.as_deref(),
        Some(format!("bytes {}-{}/{SIZE}", SIZE - 5, SIZE - 1).as_str())
    );
    assert_eq!(body.as_ref(), &image[SIZE - 5..]);
}

#[tokio::test]
async fn a_campaign_is_halted_by_its_stop_rule_before_most_devices_get_the_image() {
    let mut opts = AcsOptions::default();
    opts.retry.max_attempts = 1;
    let acs = start(opts).await;
    let cpes: Vec<Cpe> = (0..10)
        .map(|i| Cpe::minimal(CpeConfig::huawei(&format!("FW{i}"))))
        .collect();
    for c in &cpes {
        c.session(acs.addr, &["0 BOOTSTRAP", "1 BOOT"])
            .await
            .unwrap();
        // The new image bricks the Wi-Fi driver: every download fails its checks.
        *c.fail_downloads.lock().unwrap() = Some(9018);
    }
    let campaign = Campaign {
        devices: cpes.iter().map(|c| c.cfg.device_id()).collect(),
        stages_pct: vec![20, 50, 100],
        max_failure_pct: 30.0,
        come_back_ms: 3_600_000,
    };
    let download = TaskKind::Download {
        file_type: "1 Firmware Upgrade Image".into(),
        url: format!("http://{}/firmware/new.bin", acs.addr),
        file_size: 100_000,
        target_file_name: "new.bin".into(),
    };
    let mut started = HashMap::new();
    let first = acs
        .acs
        .campaign_step(&campaign, &mut started, &download)
        .await
        .unwrap();
    assert_eq!(
        first,
        Decision::Start(vec![
            campaign.devices[0].clone(),
            campaign.devices[1].clone()
        ])
    );
    assert_eq!(
        acs.acs
            .campaign_step(&campaign, &mut started, &download)
            .await
            .unwrap(),
        Decision::Wait
    );
    // Every device informs twice (periodic, then the reboot after a download).
    let mut downloads = 0;
    for _ in 0..2 {
        for c in &cpes {
            let log = c.session(acs.addr, &["2 PERIODIC"]).await.unwrap();
            downloads += log.rpcs.iter().filter(|r| *r == "Download").count();
        }
    }
    assert_eq!(downloads, 2, "only the first stage got the image");
    let halted = acs
        .acs
        .campaign_step(&campaign, &mut started, &download)
        .await
        .unwrap();
    assert_eq!(
        halted,
        Decision::Halt {
            failed: 2,
            finished: 2
        }
    );
    assert_eq!(started.len(), 2, "no device of the next stages was started");
}
