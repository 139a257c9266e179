//! Firmware from the centre with the real binaries: an image uploaded through the API reaches a simulated CPE
//! through the agent (fetched over QUIC, served by the agent's firmware server) byte for byte; a campaign whose
//! devices fail is halted by its stop rule. PostgreSQL, Redis, QUIC and HTTP are real, on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::commands::{Setup, redis_url};
use crate::cpe::{Cpe, CpeConfig};
use crate::harness::free_tcp_port;

/// An installation whose agent runs the ACS on a free port with a firmware cache, and whose signed-in user is
/// a Provider Admin (`tr069:firmware`). Returns the setup, the ACS address and the directories.
async fn start() -> (Setup, std::net::SocketAddr, tempfile::TempDir) {
    let dirs = tempfile::tempdir().unwrap();
    let acs: std::net::SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let cp_extra = format!(
        "[firmware]\ndir = {:?}\ncampaign_tick_secs = 1\n",
        dirs.path().join("cp-firmware")
    );
    let agent_extra = format!(
        "[acs]\nlisten = \"{acs}\"\nfirmware_dir = {:?}\ntask_max_attempts = 1\n",
        dirs.path().join("agent-firmware")
    );
    std::fs::create_dir_all(dirs.path().join("agent-firmware")).unwrap();
    let setup =
        Setup::start_full(&redis_url(), "", &cp_extra, &agent_extra, "Provider Admin").await;
    (setup, acs, dirs)
}

/// `POST /api/v1/firmware/images?QUERY` with `data` as the body: `(status, JSON)`.
async fn upload(setup: &Setup, query: &str, data: &[u8]) -> (u16, Value) {
    let addr = &setup.inst.http_addr;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/firmware/images?{query} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        setup.token,
        data.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(data).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.into())),
    )
}

/// Keeps the CPE informing every 300 ms (its periodic Inform), as a CPE in the field does.
fn periodic_informs(cpe: Arc<Cpe>, acs: std::net::SocketAddr) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let events: &[&str] = if first { &["1 BOOT"] } else { &["2 PERIODIC"] };
            if cpe.session(acs, events).await.is_ok() {
                first = false;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

/// Waits until the control plane knows the CPE (its inventory came up through the agent); returns its id.
async fn device_id(setup: &Setup, cpe: &Cpe) -> uuid::Uuid {
    let key = cpe.cfg.device_id();
    let start = Instant::now();
    loop {
        let id: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM devices WHERE device_key = $1")
                .bind(&key)
                .fetch_optional(&setup.inst.admin)
                .await
                .unwrap();
        if let Some(id) = id {
            return id;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "device {key} never reached the control plane\n{}",
            setup.agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 131 + 7) % 251) as u8 ^ seed)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_image_reaches_the_cpe_byte_identical_through_the_agent() {
    let (setup, acs, dirs) = start().await;
    let data = image(2_500_000, 0x5a);
    let sha = hex::encode(sha2::Sha256::digest(&data));

    // A damaged upload (the client's checksum does not match) is refused and leaves nothing.
    let (status, body) = upload(
        &setup,
        &format!("name=hg8245&version=V3&sha256={}", "0".repeat(64)),
        &data[..1000],
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = upload(
        &setup,
        &format!("name=hg8245&version=V3&oui=00259E&sha256={sha}"),
        &data,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["sha256"], sha.as_str());
    assert_eq!(body["size"], 2_500_000);
    let image_id = body["id"].as_str().unwrap().to_owned();
    let (_, list) = setup
        .http("GET", "/api/v1/firmware/images", None)
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");

    let cpe = Arc::new(Cpe::minimal(CpeConfig::huawei("48575443FW000001")));
    *cpe.fetch_downloads.lock().unwrap() = true;
    let informs = periodic_informs(cpe.clone(), acs);
    let device = device_id(&setup, &cpe).await;

    let (status, created) = setup
        .http(
            "POST",
            "/api/v1/commands",
            Some(&json!({"name": "tr069.download", "device_id": device, "args": {"image_id": image_id}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{created}");
    assert_eq!(
        created["args"]["sha256"],
        sha.as_str(),
        "the image id is resolved to its checksum"
    );
    let id = created["id"].as_str().unwrap();
    let done = setup
        .wait(id, Duration::from_secs(120), |c| {
            !matches!(
                c["status"].as_str(),
                Some("queued" | "waiting_agent" | "dispatched" | "running")
            )
        })
        .await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", setup.agent.log());
    informs.abort();

    let fetched = cpe.fetched.lock().unwrap().clone();
    assert_eq!(fetched.len(), 1, "the CPE downloaded the image once");
    assert!(
        fetched[0].0.ends_with(&format!("/firmware/{sha}")),
        "{}",
        fetched[0].0
    );
    assert!(
        fetched[0].1 == data,
        "the CPE received the uploaded bytes exactly"
    );
    // Cached by the agent under its checksum, verified.
    let cached = std::fs::read(dirs.path().join("agent-firmware").join(&sha)).unwrap();
    assert!(cached == data);

    // An image in use by nobody can be deleted; its file goes with it.
    let (status, _) = setup
        .http(
            "DELETE",
            &format!("/api/v1/firmware/images/{image_id}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_whose_devices_fail_is_halted_by_its_stop_rule() {
    let (setup, acs, _dirs) = start().await;
    let data = image(300_000, 0x11);
    let (status, body) = upload(&setup, "name=eg8145&version=V5", &data).await;
    assert_eq!(status, 201, "{body}");
    let image_id = body["id"].as_str().unwrap().to_owned();

    // Ten CPEs whose firmware upgrade fails (TransferComplete with fault 9010).
    let mut cpes = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let cpe = Arc::new(Cpe::minimal(CpeConfig::huawei(&format!(
            "48575443CAMP{i:04}"
        ))));
        *cpe.fail_downloads.lock().unwrap() = Some(9010);
        tasks.push(periodic_informs(cpe.clone(), acs));
        cpes.push(cpe);
    }
    for cpe in &cpes {
        device_id(&setup, cpe).await;
    }
    let pop = setup.pop_id().await;
    let (status, created) = setup
        .http(
            "POST",
            "/api/v1/firmware/campaigns",
            Some(&json!({
                "name": "EG8145 V5", "image_id": image_id, "target": {"pop_id": pop},
                "stages_pct": [20, 50, 100], "max_failure_pct": 25.0, "come_back_secs": 600
            })),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["counts"]["pending"], 10, "{created}");
    let campaign = created["id"].as_str().unwrap().to_owned();

    // While it runs, the image cannot be deleted.
    let (status, _) = setup
        .http(
            "DELETE",
            &format!("/api/v1/firmware/images/{image_id}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 409);

    let start = Instant::now();
    let detail = loop {
        let (_, c) = setup
            .http(
                "GET",
                &format!("/api/v1/firmware/campaigns/{campaign}"),
                None,
            )
            .await
            .unwrap();
        if c["status"] != "running" {
            break c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "campaign still running: {c}\n{}",
            setup.agent.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for t in tasks {
        t.abort();
    }
    assert_eq!(detail["status"], "halted", "{detail}");
    assert!(
        detail["halt_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("stop rule"),
        "{detail}"
    );
    // Only the first stage (20 % of 10) started: its first failure halted it (the other may still be finishing),
    // and the other eight never got the image.
    let (failed_n, running_n) = (
        detail["counts"]["failed"].as_i64().unwrap_or(0),
        detail["counts"]["running"].as_i64().unwrap_or(0),
    );
    assert!(failed_n >= 1 && failed_n + running_n == 2, "{detail}");
    assert_eq!(detail["counts"]["skipped"], 8, "{detail}");
    assert_eq!(detail["counts"]["succeeded"], 0, "{detail}");
    let failed: Vec<&Value> = detail["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["state"] == "failed")
        .collect();
    assert!(
        failed
            .iter()
            .all(|d| d["error"].as_str().unwrap_or_default().contains("9010")),
        "each failure names the CPE's fault: {detail}"
    );
    let downloads: usize = cpes.iter().map(|c| c.fetched.lock().unwrap().len()).sum();
    assert_eq!(downloads, 0);

    // The halt is in the audit log, and a halted campaign cannot be resumed.
    let halts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'firmware_campaign.halt' AND target_id = $1",
    )
    .bind(&campaign)
    .fetch_one(&setup.inst.admin)
    .await
    .unwrap();
    assert_eq!(halts, 1);
    let (status, _) = setup
        .http(
            "POST",
            &format!("/api/v1/firmware/campaigns/{campaign}/resume"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 409);
}

/// Polls the campaign until `done(detail)`; panics with the logs after two minutes.
async fn wait_campaign(setup: &Setup, campaign: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (_, c) = setup
            .http(
                "GET",
                &format!("/api/v1/firmware/campaigns/{campaign}"),
                None,
            )
            .await
            .unwrap();
        if done(&c) {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "campaign not there yet: {c}\n--- control plane log:\n{}\n--- agent log:\n{}",
            setup.inst.cp_log(),
            setup.agent.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The campaign's device row of `key`.
fn device<'a>(detail: &'a Value, key: &str) -> &'a Value {
    detail["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_key"].as_str() == Some(key))
        .unwrap_or_else(|| panic!("no device {key} in {detail}"))
}

/// Whether the agent reported step `step` of command `id` (its progress frame is stored).
async fn reported(setup: &Setup, id: &str, step: &str) -> bool {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM command_progress WHERE command_id = $1::uuid AND payload->>'step' = $2",
    )
    .bind(id)
    .bind(step)
    .fetch_one(&setup.inst.admin)
    .await
    .unwrap();
    n > 0
}

/// Waits until the agent reported step `step` of command `id`.
async fn wait_reported(setup: &Setup, id: &str, step: &str) {
    let start = Instant::now();
    while !reported(setup, id, step).await {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "command {id} never reported {step:?}\n{}",
            setup.agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the downloads of `keys` are queued as ACS tasks at the agent; returns their command ids.
async fn downloads_queued(setup: &Setup, campaign: &str, keys: &[String]) -> Vec<String> {
    let detail = wait_campaign(setup, campaign, |c| {
        keys.iter()
            .all(|k| device(c, k)["state"] == "running" && device(c, k)["command_id"].is_string())
    })
    .await;
    let ids: Vec<String> = keys
        .iter()
        .map(|k| {
            device(&detail, k)["command_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for id in &ids {
        wait_reported(setup, id, "queued").await;
    }
    ids
}

/// Runs one periodic session of `cpe`; returns how many Download RPCs it got.
async fn downloads_in_session(cpe: &Cpe, acs: std::net::SocketAddr) -> usize {
    let log = cpe.session(acs, &["2 PERIODIC"]).await.unwrap();
    assert!(log.completed, "{log:?}");
    log.rpcs.iter().filter(|r| *r == "Download").count()
}

/// `POST /api/v1/firmware/campaigns/{id}/{action}`, which must answer 200.
async fn campaign_action(setup: &Setup, campaign: &str, action: &str) -> Value {
    let (status, body) = setup
        .http(
            "POST",
            &format!("/api/v1/firmware/campaigns/{campaign}/{action}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{action}: {body}");
    body
}

/// Waits until command `id` is final; returns its status.
async fn final_status(setup: &Setup, id: &str) -> String {
    let c = setup
        .wait(id, Duration::from_secs(60), |c| {
            !matches!(
                c["status"].as_str(),
                Some("queued" | "waiting_agent" | "dispatched" | "running")
            )
        })
        .await;
    c["status"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_or_cancelling_a_campaign_withdraws_downloads_no_cpe_started() {
    let (setup, acs, _dirs) = start().await;
    let data = image(200_000, 0x33);
    let (status, body) = upload(&setup, "name=hg8145&version=V6", &data).await;
    assert_eq!(status, 201, "{body}");
    let image_id = body["id"].as_str().unwrap().to_owned();

    // Three CPEs that inform once, then only when the test says (as CPEs with a long periodic interval): the
    // campaign's downloads wait for them in the agent's task queue.
    let cpes: Vec<Cpe> = (0..3)
        .map(|i| Cpe::minimal(CpeConfig::huawei(&format!("48575443WDRW{i:04}"))))
        .collect();
    for cpe in &cpes {
        cpe.session(acs, &["1 BOOT"]).await.unwrap();
        device_id(&setup, cpe).await;
    }
    let keys: Vec<String> = cpes.iter().map(|c| c.cfg.device_id()).collect();
    let pop = setup.pop_id().await;
    let (status, created) = setup
        .http(
            "POST",
            "/api/v1/firmware/campaigns",
            Some(&json!({
                "name": "HG8145 V6", "image_id": image_id, "target": {"pop_id": pop},
                "stages_pct": [100], "max_failure_pct": 100.0, "come_back_secs": 600
            })),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    let campaign = created["id"].as_str().unwrap().to_owned();
    let first = downloads_queued(&setup, &campaign, &keys).await;

    // The first CPE opens a session: its Download is sent (it reports the transfer in its next session).
    assert_eq!(downloads_in_session(&cpes[0], acs).await, 1);
    wait_reported(&setup, &first[0], "waiting").await;

    // Pause: the two downloads still queued at the agent are withdrawn, their devices wait for the resume and
    // never see a Download meanwhile; the one under way goes on and is reported as it ends.
    campaign_action(&setup, &campaign, "pause").await;
    let detail = wait_campaign(&setup, &campaign, |c| {
        device(c, &keys[1])["state"] == "pending" && device(c, &keys[2])["state"] == "pending"
    })
    .await;
    assert_eq!(device(&detail, &keys[0])["state"], "running", "{detail}");
    for id in &first[1..] {
        assert_eq!(final_status(&setup, id).await, "cancelled");
    }
    assert_eq!(
        downloads_in_session(&cpes[1], acs).await,
        0,
        "a withdrawn download never reaches its CPE"
    );
    assert_eq!(downloads_in_session(&cpes[0], acs).await, 0);
    assert_eq!(final_status(&setup, &first[0]).await, "succeeded");
    wait_campaign(&setup, &campaign, |c| {
        device(c, &keys[0])["state"] == "succeeded"
    })
    .await;

    // Resume: the withdrawn devices start again, with new commands.
    campaign_action(&setup, &campaign, "resume").await;
    let second = downloads_queued(&setup, &campaign, &keys[1..]).await;
    assert!(second.iter().all(|id| !first.contains(id)), "{second:?}");
    assert_eq!(downloads_in_session(&cpes[1], acs).await, 1);
    wait_reported(&setup, &second[0], "waiting").await;

    // Cancel: the download still queued is withdrawn for good (device skipped, command cancelled); the one the
    // second CPE already has finishes and is reported.
    let cancelled = campaign_action(&setup, &campaign, "cancel").await;
    assert_eq!(cancelled["status"], "cancelled");
    let detail = wait_campaign(&setup, &campaign, |c| {
        device(c, &keys[2])["state"] == "skipped"
    })
    .await;
    assert!(
        device(&detail, &keys[2])["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cancelled"),
        "{detail}"
    );
    assert_eq!(final_status(&setup, &second[1]).await, "cancelled");
    assert_eq!(downloads_in_session(&cpes[2], acs).await, 0);
    assert_eq!(downloads_in_session(&cpes[1], acs).await, 0);
    assert_eq!(final_status(&setup, &second[0]).await, "succeeded");
    let detail = wait_campaign(&setup, &campaign, |c| {
        device(c, &keys[1])["state"] != "running"
    })
    .await;
    assert_eq!(device(&detail, &keys[1])["state"], "succeeded", "{detail}");
    assert_eq!(detail["status"], "cancelled");
    assert_eq!(detail["counts"]["succeeded"], 2, "{detail}");
    assert_eq!(detail["counts"]["skipped"], 1, "{detail}");

    // Each withdrawal was a command of its own to the agent; the operator's actions are audited.
    let withdraws: Vec<(String, Value)> = sqlx::query_as(
        "SELECT status, args FROM commands WHERE name = 'tr069.withdraw' ORDER BY created_at",
    )
    .fetch_all(&setup.inst.admin)
    .await
    .unwrap();
    assert_eq!(withdraws.len(), 2, "{withdraws:?}");
    assert!(
        withdraws.iter().all(|(s, _)| s == "succeeded"),
        "{withdraws:?}"
    );
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE target_id = $1 \
         AND action IN ('firmware_campaign.pause', 'firmware_campaign.resume', 'firmware_campaign.cancel')",
    )
    .bind(&campaign)
    .fetch_one(&setup.inst.admin)
    .await
    .unwrap();
    assert_eq!(audited, 3);
}
