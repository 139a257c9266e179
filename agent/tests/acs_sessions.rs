//! CWMP sessions against the ACS over loopback, driven by simulated CPEs with the quirks of real ones: no
//! cookies, cookies, `cwmp-1-0` and `cwmp-1-2`, other SOAP prefixes, Digest, empty-POST variants, gzip, a new
//! connection per request, a CPE dropping mid-session, two sessions at once for one serial; and bad input.

mod acs_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use acs_support::cpe::{Cpe, CpeConfig, EmptyPost};
use acs_support::start;
use octoisp_agent::acs::cwmp::{Body, CwmpVersion};
use octoisp_agent::acs::session::AcsOptions;
use octoisp_agent::acs::tasks::{TaskKind, TaskState};
use octoisp_agent::acs::templates::Template;

const BOOT: &[&str] = &["1 BOOT"];
const PERIODIC: &[&str] = &["2 PERIODIC"];

#[tokio::test]
async fn cpe_without_cookies_is_registered_and_its_session_ends_with_204() {
    let acs = start(AcsOptions::default()).await;
    let cpe = Cpe::minimal(CpeConfig::huawei("48575443A94196A5"));
    let log = cpe
        .session(acs.addr, &["0 BOOTSTRAP", "1 BOOT"])
        .await
        .unwrap();
    assert_eq!(log.inform_status, 200);
    let answer = log.inform_answer.unwrap();
    assert_eq!(
        answer.ns,
        CwmpVersion::V1_0,
        "answered in the CPE's namespace"
    );
    assert_eq!(answer.body, Body::InformResponse { max_envelopes: 1 });
    assert_eq!(answer.id.as_deref(), Some("1"), "cwmp:ID echoed");
    assert!(log.completed && log.rpcs.is_empty());

    let dev = acs
        .acs
        .store
        .device("00259E-EG8145V5-48575443A94196A5")
        .unwrap()
        .unwrap();
    assert_eq!(dev.ip, "127.0.0.1");
    assert!(dev.last_boot_ms.is_some());
    let params = acs
        .acs
        .store
        .params(&dev.id, "InternetGatewayDevice.DeviceInfo.")
        .unwrap();
    assert_eq!(params.len(), 2, "Inform parameters stored");
    // Registration, BOOTSTRAP and BOOT events and the parameters went upstream.
    let stats = acs.outbox.as_ref().unwrap().stats().unwrap();
    assert!(stats.records >= 4, "{stats:?}");
    assert_eq!(acs.acs.live_sessions(), 0);
}

#[tokio::test]
async fn cwmp_1_2_cpe_with_cookies_and_a_connection_per_request_runs_its_task() {
    let acs = start(AcsOptions::default()).await;
    let mut cfg = CpeConfig::zte("ZTEYH86LCN10105");
    cfg.new_connection_per_request = true;
    let cpe = Cpe::minimal(cfg);
    cpe.set(
        "InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.SSID",
        "casa",
    );
    cpe.session(acs.addr, BOOT).await.unwrap();
    let id = cpe.cfg.device_id();
    assert_eq!(id, "C0B101-ZXHN%20H199A-ZTEYH86LCN10105");
    acs.acs
        .enqueue(
            &id,
            TaskKind::Refresh {
                path: "InternetGatewayDevice.LANDevice.".into(),
            },
        )
        .await
        .unwrap();
    let log = cpe.session(acs.addr, PERIODIC).await.unwrap();
    assert_eq!(log.inform_answer.unwrap().ns, CwmpVersion::V1_2);
    assert!(log.set_cookie.unwrap().contains("Path=/"));
    assert_eq!(log.rpcs, ["GetParameterValues"]);
    assert!(log.completed);
    let ssid = acs
        .acs
        .store
        .params(&id, "InternetGatewayDevice.LANDevice.")
        .unwrap();
    assert_eq!(ssid[0].value, "casa");
    assert!(
        acs.acs
            .store
            .tasks(Some(&id))
            .unwrap()
            .iter()
            .all(|t| t.state == TaskState::Done)
    );
}

#[tokio::test]
async fn every_empty_post_form_and_gzip_and_soap_prefix_works() {
    let acs = start(AcsOptions::default()).await;
    let forms = [
        (EmptyPost::ZeroLength, false, "s"),
        (EmptyPost::Chunked, true, "SOAP-ENV"),
        (EmptyPost::Whitespace, false, "soapenv"),
    ];
    for (i, (empty, gzip, prefix)) in forms.into_iter().enumerate() {
        let mut cfg = CpeConfig::huawei(&format!("SN{i}"));
        cfg.empty_post = empty;
        cfg.gzip = gzip;
        cfg.soap_prefix = prefix.into();
        let cpe = Cpe::minimal(cfg);
        let log = cpe.session(acs.addr, BOOT).await.unwrap();
        assert!(log.completed, "{empty:?} gzip={gzip} {prefix}");
        acs.acs
            .enqueue(&cpe.cfg.device_id(), TaskKind::Reboot)
            .await
            .unwrap();
        let log = cpe.session(acs.addr, PERIODIC).await.unwrap();
        assert_eq!(log.rpcs, ["Reboot"], "{empty:?}");
        assert!(log.completed);
    }
}

#[tokio::test]
async fn tasks_run_one_rpc_per_response_in_order_and_the_tree_follows() {
    let acs = start(AcsOptions::default()).await;
    let cpe = Cpe::minimal(CpeConfig::huawei("A1"));
    let ssid = "InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.SSID";
    cpe.set(ssid, "old");
    cpe.session(acs.addr, BOOT).await.unwrap();
    let id = cpe.cfg.device_id();
    for kind in [
        TaskKind::Set {
            values: vec![(ssid.into(), "new & <improved>".into(), "xsd:string".into())],
        },
        TaskKind::AddObject {
            object: "InternetGatewayDevice.Layer3Forwarding.Forwarding.".into(),
        },
        TaskKind::Get {
            names: vec![ssid.into()],
        },
        TaskKind::Reboot,
    ] {
        acs.acs.enqueue(&id, kind).await.unwrap();
    }
    let log = cpe.session(acs.addr, PERIODIC).await.unwrap();
    assert_eq!(
        log.rpcs,
        [
            "SetParameterValues",
            "AddObject",
            "GetParameterValues",
            "Reboot"
        ]
    );
    assert_eq!(cpe.get(ssid).as_deref(), Some("new & <improved>"));
    assert_eq!(*cpe.reboots.lock().unwrap(), 1);
    let stored = acs.acs.store.params(&id, ssid).unwrap();
    assert_eq!(stored[0].value, "new & <improved>");
    // Nothing left: the next session is light.
    let log = cpe.session(acs.addr, BOOT).await.unwrap();
    assert!(log.rpcs.is_empty() && log.completed);
}

#[tokio::test]
async fn a_cpe_dropping_mid_session_gets_its_task_in_the_next_session() {
    let acs = start(AcsOptions::default()).await;
    let mut cfg = CpeConfig::huawei("DROP1");
    cfg.drop_at_rpc = Some(1);
    let mut cpe = Cpe::minimal(cfg);
    cpe.session(acs.addr, BOOT).await.unwrap();
    let id = cpe.cfg.device_id();
    acs.acs.enqueue(&id, TaskKind::Reboot).await.unwrap();
    let log = cpe.session(acs.addr, PERIODIC).await.unwrap();
    assert!(log.dropped && log.rpcs == ["Reboot"]);
    assert_eq!(*cpe.reboots.lock().unwrap(), 0);
    // The CPE comes back at once: its new Inform is not refused, and the reboot runs.
    cpe.cfg.drop_at_rpc = None;
    let log = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let log = cpe.session(acs.addr, PERIODIC).await.unwrap();
            if log.inform_status == 200 {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(log.rpcs, ["Reboot"]);
    assert_eq!(*cpe.reboots.lock().unwrap(), 1);
    assert_eq!(
        acs.acs.store.tasks(Some(&id)).unwrap()[0].state,
        TaskState::Done
    );
}

#[tokio::test]
async fn a_second_session_for_the_same_serial_is_refused_and_the_first_completes() {
    let acs = start(AcsOptions::default()).await;
    let first = Cpe::minimal(CpeConfig::huawei("CLONE"));
    let clone = Cpe::minimal(CpeConfig::huawei("CLONE"));
    first.session(acs.addr, BOOT).await.unwrap();
    acs.acs
        .enqueue(&first.cfg.device_id(), TaskKind::Reboot)
        .await
        .unwrap();
    let (log, open) = first.open_session(acs.addr, BOOT).await.unwrap();
    assert_eq!(log.inform_status, 200);
    let refused = clone.session(acs.addr, BOOT).await.unwrap();
    assert_eq!(refused.inform_status, 503);
    assert!(refused.retry_after.is_some());
    match refused.inform_answer.map(|e| e.body) {
        Some(Body::Fault(f)) => assert_eq!(f.code.code(), 8005),
        other => panic!("expected fault 8005, got {other:?}"),
    }
    let done = first.finish(open).await.unwrap();
    assert!(done.completed);
    assert_eq!(done.rpcs, ["Reboot"], "the first session kept its work");
    assert_eq!(acs.acs.stats.duplicate_refused.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn digest_with_per_pop_and_per_device_credentials() {
    let opts = AcsOptions {
        pop_credentials: Some(("pop".into(), "pop-secret".into())),
        ..AcsOptions::default()
    };
    let acs = start(opts).await;
    let anonymous = Cpe::minimal(CpeConfig::huawei("AUTH1"));
    let log = anonymous.session(acs.addr, BOOT).await.unwrap();
    assert_eq!(log.inform_status, 401);
    assert!(
        acs.acs
            .store
            .device(&anonymous.cfg.device_id())
            .unwrap()
            .is_none(),
        "not registered"
    );

    let mut cfg = CpeConfig::zte("AUTH1");
    cfg.credentials = Some(("pop".into(), "pop-secret".into()));
    let cpe = Cpe::minimal(cfg.clone());
    assert!(cpe.session(acs.addr, BOOT).await.unwrap().completed);

    acs.acs
        .store
        .set_credentials(&cpe.cfg.device_id(), Some(("zte-auth1", "own")), None)
        .unwrap();
    cfg.credentials = Some(("zte-auth1".into(), "own".into()));
    assert!(
        Cpe::minimal(cfg.clone())
            .session(acs.addr, PERIODIC)
            .await
            .unwrap()
            .completed
    );
    cfg.credentials = Some(("zte-auth1".into(), "wrong".into()));
    let log = Cpe::minimal(cfg.clone())
        .session(acs.addr, PERIODIC)
        .await
        .unwrap();
    assert_eq!(log.inform_status, 401);
    // Another device cannot use this device's credentials.
    let mut other = CpeConfig::zte("AUTH2");
    other.credentials = Some(("zte-auth1".into(), "own".into()));
    let log = Cpe::minimal(other).session(acs.addr, BOOT).await.unwrap();
    assert_eq!(log.inform_status, 401);
}

#[tokio::test]
async fn malformed_bodies_get_faults_or_4xx_and_other_sessions_are_unaffected() {
    let opts = AcsOptions {
        max_body: 64 << 10,
        limits: octoisp_agent::acs::cwmp::Limits {
            max_bytes: 64 << 10,
            ..Default::default()
        },
        ..AcsOptions::default()
    };
    let acs = start(opts).await;
    let cpe = Cpe::minimal(CpeConfig::huawei("STEADY"));
    cpe.session(acs.addr, BOOT).await.unwrap();
    acs.acs
        .enqueue(&cpe.cfg.device_id(), TaskKind::Reboot)
        .await
        .unwrap();
    let (_, open) = cpe.open_session(acs.addr, PERIODIC).await.unwrap();

    let corpus = |name: &str| {
        std::fs::read(format!(
            "{}/fuzz/corpus/cwmp_parse/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    for (name, body) in [
        ("billion laughs", corpus("bad-billion-laughs.xml")),
        ("wrong namespace", corpus("bad-wrong-cwmp-namespace.xml")),
        ("truncated", corpus("bad-truncated.xml")),
        ("not SOAP", corpus("bad-not-soap.xml")),
        ("garbage", b"\x00\x01not xml at all".to_vec()),
    ] {
        let (status, body) = Cpe::raw_post(acs.addr, body, None).await.unwrap();
        assert_eq!(status, 500, "{name}");
        let env = octoisp_agent::acs::cwmp::parse(&body, &Default::default()).unwrap();
        assert!(
            matches!(env.body, Body::Fault(ref f) if f.code.code() == 8003),
            "{name}: {env:?}"
        );
    }
    let (status, _) = Cpe::raw_post(acs.addr, vec![b' '; 100 << 10], None)
        .await
        .unwrap();
    assert_eq!(status, 413, "oversize body");
    let bomb = {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![b'<'; 16 << 20]).unwrap();
        gz.finish().unwrap()
    };
    let (status, _) = Cpe::raw_post(acs.addr, bomb, Some("gzip")).await.unwrap();
    assert_eq!(status, 413, "gzip bomb");

    let log = cpe.finish(open).await.unwrap();
    assert!(
        log.completed && log.rpcs == ["Reboot"],
        "the open session carried on: {log:?}"
    );
    assert!(
        Cpe::minimal(CpeConfig::zte("AFTER"))
            .session(acs.addr, BOOT)
            .await
            .unwrap()
            .completed
    );
    assert!(acs.acs.stats.malformed.load(Ordering::Relaxed) >= 7);
}

#[tokio::test]
async fn overload_is_answered_503_with_retry_after_at_once() {
    let opts = AcsOptions {
        max_sessions: 1,
        retry_after_s: 7,
        ..AcsOptions::default()
    };
    let acs = start(opts).await;
    let a = Cpe::minimal(CpeConfig::huawei("LOAD1"));
    let (log, open) = a.open_session(acs.addr, BOOT).await.unwrap();
    assert_eq!(log.inform_status, 200);
    let b = Cpe::minimal(CpeConfig::huawei("LOAD2"));
    let log = b.session(acs.addr, BOOT).await.unwrap();
    assert_eq!(log.inform_status, 503);
    assert_eq!(log.retry_after.as_deref(), Some("7"));
    assert!(a.finish(open).await.unwrap().completed);
    assert!(
        b.session(acs.addr, BOOT).await.unwrap().completed,
        "room again"
    );
}

#[tokio::test]
async fn faulting_tasks_are_retried_with_backoff_then_failed() {
    let mut opts = AcsOptions::default();
    opts.retry.max_attempts = 2;
    opts.retry.backoff_ms = 0;
    let acs = start(opts).await;
    let mut cpe = Cpe::minimal(CpeConfig::huawei("RO"));
    cpe.tree.get_mut().unwrap().insert(
        "InternetGatewayDevice.DeviceInfo.SerialNumber".into(),
        ("RO".into(), "xsd:string".into(), false),
    );
    cpe.session(acs.addr, BOOT).await.unwrap();
    let id = cpe.cfg.device_id();
    let set = TaskKind::Set {
        values: vec![(
            "InternetGatewayDevice.DeviceInfo.SerialNumber".into(),
            "X".into(),
            "xsd:string".into(),
        )],
    };
    let task = acs.acs.enqueue(&id, set).await.unwrap();
    assert_eq!(
        cpe.session(acs.addr, PERIODIC).await.unwrap().rpcs,
        ["SetParameterValues"]
    );
    let t = acs.acs.store.task(&task).unwrap().unwrap();
    assert_eq!((t.state, t.attempts), (TaskState::Queued, 1));
    assert!(
        t.last_error.unwrap().contains("9008"),
        "the per-parameter fault is kept"
    );
    assert_eq!(
        cpe.session(acs.addr, PERIODIC).await.unwrap().rpcs,
        ["SetParameterValues"]
    );
    assert_eq!(
        acs.acs.store.task(&task).unwrap().unwrap().state,
        TaskState::Failed
    );
    assert!(
        cpe.session(acs.addr, PERIODIC)
            .await
            .unwrap()
            .rpcs
            .is_empty(),
        "given up"
    );
}

#[tokio::test]
async fn a_template_is_applied_once_and_only_where_values_differ() {
    let template = Template::parse(
        "inform.toml",
        r#"
name = "inform-interval"
version = 1
[when]
oui = ["00259E"]
[[set]]
name = "InternetGatewayDevice.ManagementServer.PeriodicInformInterval"
value = "{spread:3600:600}"
type = "xsd:unsignedInt"
[[set]]
name = "InternetGatewayDevice.ManagementServer.PeriodicInformEnable"
value = "1"
type = "xsd:boolean"
"#,
    )
    .unwrap();
    let opts = AcsOptions {
        templates: vec![template],
        ..AcsOptions::default()
    };
    let acs = start(opts).await;
    let cpe = Cpe::minimal(CpeConfig::huawei("TPL"));
    cpe.set(
        "InternetGatewayDevice.ManagementServer.PeriodicInformInterval",
        "300",
    );
    cpe.set(
        "InternetGatewayDevice.ManagementServer.PeriodicInformEnable",
        "1",
    );
    // The first session registers the device; the template's parameters are not known yet: all are written.
    let log = cpe
        .session(acs.addr, &["0 BOOTSTRAP", "1 BOOT"])
        .await
        .unwrap();
    assert_eq!(log.rpcs, ["SetParameterValues"]);
    let interval: u32 = cpe
        .get("InternetGatewayDevice.ManagementServer.PeriodicInformInterval")
        .unwrap()
        .parse()
        .unwrap();
    assert!((3600..4200).contains(&interval));
    let log = cpe.session(acs.addr, BOOT).await.unwrap();
    assert!(log.rpcs.is_empty(), "applied once: {log:?}");
    // A ZTE does not match the template.
    let zte = Cpe::minimal(CpeConfig::zte("TPL"));
    assert!(zte.session(acs.addr, BOOT).await.unwrap().rpcs.is_empty());
}

#[tokio::test]
async fn firmware_download_completes_with_transfer_complete_or_is_retried_then_failed() {
    let mut opts = AcsOptions::default();
    opts.retry.max_attempts = 2;
    opts.retry.backoff_ms = 0;
    let acs = start(opts).await;
    let cpe = Cpe::minimal(CpeConfig::huawei("FW"));
    cpe.session(acs.addr, BOOT).await.unwrap();
    let id = cpe.cfg.device_id();
    let dl = TaskKind::Download {
        file_type: "1 Firmware Upgrade Image".into(),
        url: "http://127.0.0.1:1/fw.bin".into(),
        file_size: 10,
        target_file_name: "fw.bin".into(),
    };
    let ok = acs.acs.enqueue(&id, dl.clone()).await.unwrap();
    assert_eq!(
        cpe.session(acs.addr, PERIODIC).await.unwrap().rpcs,
        ["Download"]
    );
    assert_eq!(
        acs.acs.store.task(&ok).unwrap().unwrap().state,
        TaskState::Waiting
    );
    cpe.session(acs.addr, &["1 BOOT"]).await.unwrap();
    assert_eq!(
        acs.acs.store.task(&ok).unwrap().unwrap().state,
        TaskState::Done
    );

    *cpe.fail_downloads.lock().unwrap() = Some(9018);
    let bad = acs.acs.enqueue(&id, dl).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            cpe.session(acs.addr, PERIODIC).await.unwrap().rpcs,
            ["Download"]
        );
        cpe.session(acs.addr, BOOT).await.unwrap(); // its TransferComplete reports 9018
    }
    let t = acs.acs.store.task(&bad).unwrap().unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert!(t.last_error.unwrap().starts_with("9018"));
}

/// A CPE's Connection Request endpoint: Digest-protected; an authenticated GET makes the CPE inform at once.
async fn connection_request_endpoint(
    cpe: std::sync::Arc<Cpe>,
    acs_addr: std::net::SocketAddr,
) -> std::net::SocketAddr {
    use http_body_util::Empty;
    use octoisp_agent::acs::auth::{AuthOutcome, DigestServer};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let digest = std::sync::Arc::new(DigestServer::new("cpe"));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (cpe, digest) = (cpe.clone(), digest.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (cpe, digest) = (cpe.clone(), digest.clone());
                        async move {
                            let authz = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok());
                            let outcome = digest.check(
                                authz,
                                "GET",
                                octoisp_agent::acs::now_ms(),
                                false,
                                |u| (u == "cr-user").then(|| "cr-pass".to_owned()),
                            );
                            let mut resp = hyper::Response::new(Empty::<bytes::Bytes>::new());
                            if outcome == AuthOutcome::Ok("cr-user".into()) {
                                tokio::spawn(async move {
                                    let _ = cpe.session(acs_addr, &["6 CONNECTION REQUEST"]).await;
                                });
                            } else {
                                *resp.status_mut() = hyper::StatusCode::UNAUTHORIZED;
                                let challenge =
                                    digest.challenge(octoisp_agent::acs::now_ms(), false);
                                resp.headers_mut()
                                    .insert("www-authenticate", challenge.parse().unwrap());
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_connection_request_with_digest_runs_the_task_now() {
    let opts = AcsOptions {
        conn_req_credentials: Some(("cr-user".into(), "cr-pass".into())),
        ..AcsOptions::default()
    };
    let acs = start(opts).await;
    let cpe = std::sync::Arc::new(Cpe::minimal(CpeConfig::huawei("CR1")));
    let cr = connection_request_endpoint(cpe.clone(), acs.addr).await;
    cpe.set(
        "InternetGatewayDevice.ManagementServer.ConnectionRequestURL",
        &format!("http://{cr}/278b6aafa3c49147637611f265c3f806"),
    );
    cpe.session(acs.addr, BOOT).await.unwrap();
    let id = cpe.cfg.device_id();
    acs.acs.enqueue(&id, TaskKind::Reboot).await.unwrap();
    assert_eq!(acs.acs.request_connection(&id).await, Ok(200));
    tokio::time::timeout(Duration::from_secs(10), async {
        while *cpe.reboots.lock().unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the CPE informed and rebooted after the Connection Request");
    // Wrong credentials are refused by the CPE, and the ACS says so.
    acs.acs
        .store
        .set_credentials(&id, None, Some(("cr-user", "wrong")))
        .unwrap();
    let err = acs.acs.request_connection(&id).await.unwrap_err();
    assert!(err.contains("401"), "{err}");
}
