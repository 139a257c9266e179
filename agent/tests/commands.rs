//! Remote commands over a real QUIC connection on loopback: the test plays the control plane (opens a stream,
//! writes one `Command`, finishes) and the agent serves it with `Executor::accept_streams`, as in the uplink.
//! ICMP tests need root or CAP_NET_RAW (the agent runs as root here).

mod commands_support;

use std::time::Duration;

use commands_support::{Agent, Upstream, command, local_config, now_ms, pair, send, send_raw};
use octoisp_agent::commands::{CommandsSection, ledger};
use octoisp_shared::CommandStatus;
use octoisp_shared::frame::{self, Compression};
use octoisp_shared::{Heartbeat, Message};
use serde_json::json;

fn limits() -> CommandsSection {
    CommandsSection::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_and_ping_answer_progress_and_store_one_result() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = local_config(dir.path());
    let agent = Agent::start(&cfg, limits()).await;
    let p = pair().await;
    agent.serve(p.agent.clone());

    let noop = command("noop", json!({"sleep_ms": 50}));
    let seen = send(&p.cp, &noop).await;
    assert_eq!(seen.end, Ok(()));
    assert_eq!(seen.state(), "started");
    assert_eq!(seen.seqs, vec![0]);

    let ping = command(
        "ping",
        json!({"targets": ["127.0.0.1"], "count": 3, "interval_ms": 100}),
    );
    let seen = send(&p.cp, &ping).await;
    assert_eq!(seen.end, Ok(()));
    assert_eq!(seen.state(), "started");
    // One frame per reply, each with a running summary; seq increasing from 0.
    assert_eq!(seen.frames.len(), 4, "{:?}", seen.frames);
    assert_eq!(seen.seqs, vec![0, 1, 2, 3]);
    assert!(seen.frames[1]["rtt_ms"].is_number(), "{:?}", seen.frames[1]);
    assert_eq!(seen.frames[3]["summary"]["received"], 3);

    // The results were in the outbox before the streams were finished.
    let mut up = Upstream::default();
    up.drain(&agent.outbox);
    let r = up.of(noop.id);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, CommandStatus::Succeeded);
    assert_eq!(r[0].output_json, r#"{"slept_ms":50}"#);
    let r = up.of(ping.id);
    assert_eq!(r.len(), 1, "{:?}", up.results);
    assert_eq!(r[0].status, CommandStatus::Succeeded);
    let out: serde_json::Value = serde_json::from_str(&r[0].output_json).unwrap();
    assert_eq!(out["targets"][0]["target"], "127.0.0.1");
    assert_eq!(out["targets"][0]["summary"]["sent"], 3);
    assert_eq!(out["targets"][0]["summary"]["received"], 3);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_twice_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = local_config(dir.path());
    let agent = Agent::start(&cfg, limits()).await;
    let p = pair().await;
    agent.serve(p.agent.clone());

    let cmd = command("noop", json!({"sleep_ms": 300}));
    // The second delivery arrives while the first still runs, a third after it finished.
    let (a, b) = tokio::join!(send(&p.cp, &cmd), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        send(&p.cp, &cmd).await
    });
    let c = send(&p.cp, &cmd).await;
    assert_eq!(a.state(), "started");
    assert_eq!(b.state(), "duplicate");
    assert_eq!(c.state(), "duplicate");
    assert_eq!(b.frames.len(), 1);
    let mut up = Upstream::default();
    up.drain(&agent.outbox);
    assert_eq!(up.of(cmd.id).len(), 1, "{:?}", up.results);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_commands_say_why_and_leave_a_result() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = local_config(dir.path());
    let agent = Agent::start(&cfg, limits()).await;
    let p = pair().await;
    agent.serve(p.agent.clone());

    let unknown = command("reboot-the-pop", json!({}));
    let seen = send(&p.cp, &unknown).await;
    assert_eq!(seen.state(), "rejected");
    assert!(
        seen.frames[0]["error"]
            .as_str()
            .unwrap()
            .contains("reboot-the-pop"),
        "{:?}",
        seen.frames
    );

    let bad = command("ping", json!({"targets": ["127.0.0.1", "not-an-ip"]}));
    let seen = send(&p.cp, &bad).await;
    assert_eq!(seen.state(), "rejected");
    let error = seen.frames[0]["error"].as_str().unwrap().to_owned();
    assert!(error.contains("targets[1]"), "{error}");

    let mut expired = command("noop", json!({}));
    expired.deadline_ms = now_ms() - 1;
    let seen = send(&p.cp, &expired).await;
    assert_eq!(seen.state(), "expired");
    assert_eq!(seen.frames.len(), 1);

    // A scan outside the allowlist (empty by default) fails without sending a packet.
    let sweep = command("sweep", json!({"cidrs": ["127.0.0.0/30"]}));
    let seen = send(&p.cp, &sweep).await;
    assert_eq!(seen.state(), "started");

    let mut up = Upstream::default();
    up.drain(&agent.outbox);
    let r = up.of(unknown.id);
    assert_eq!(r[0].status, CommandStatus::Rejected);
    let r = up.of(bad.id);
    assert_eq!(r[0].status, CommandStatus::Rejected);
    assert!(r[0].error.as_deref().unwrap().contains("targets[1]"));
    let r = up.of(expired.id);
    assert_eq!(r[0].status, CommandStatus::Expired);
    let r = up.of(sweep.id);
    assert_eq!(r[0].status, CommandStatus::Failed);
    assert!(
        r[0].error
            .as_deref()
            .unwrap()
            .contains("outside the ranges allowed"),
        "{:?}",
        r[0].error
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_reset_only_their_stream() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = local_config(dir.path());
    let agent = Agent::start(&cfg, limits()).await;
    let p = pair().await;
    agent.serve(p.agent.clone());

    // Garbage, a header announcing a huge frame, a truncated frame, and a message that is not a Command.
    let hb = Message::Heartbeat(Heartbeat {
        ts_ms: 0,
        uptime_secs: 0,
        outbox_records: 0,
        outbox_samples: 0,
        outbox_bytes: 0,
        oldest_ms: None,
        samples_dropped_total: 0,
    });
    let good = frame::encode(
        &Message::Command(command("noop", json!({}))),
        Compression::None,
    )
    .unwrap();
    let mut huge = good.clone();
    huge.truncate(frame::HEADER_LEN);
    for b in &mut huge[frame::HEADER_LEN - 4..] {
        *b = 0xff;
    }
    let cases: Vec<Vec<u8>> = vec![
        b"\x00\x01garbage that is no frame at all".to_vec(),
        huge,
        good[..good.len() - 3].to_vec(),
        frame::encode(&hb, Compression::None).unwrap(),
        Vec::new(),
    ];
    for bytes in cases {
        let seen = tokio::time::timeout(Duration::from_secs(60), send_raw(&p.cp, &bytes))
            .await
            .expect("answered");
        assert!(seen.frames.is_empty(), "{:?}", seen.frames);
        assert!(seen.end.is_err(), "a bad stream is reset, not finished");
    }
    // The connection and the agent still serve commands.
    let ok = command("noop", json!({}));
    let seen = send(&p.cp, &ok).await;
    assert_eq!(seen.state(), "started");
    assert_eq!(seen.end, Ok(()));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_reboot_is_reported_failed_and_never_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = local_config(dir.path());
    let id = uuid::Uuid::now_v7();
    {
        // The agent recorded the reboot as started, then died before its result.
        let outbox = commands_support::open_outbox(&cfg);
        assert!(
            ledger::claim(&outbox, id, "tr069.reboot", now_ms())
                .await
                .unwrap()
        );
    }
    let agent = Agent::start(&cfg, limits()).await;
    let mut up = Upstream::default();
    up.drain(&agent.outbox);
    let r = up.of(id);
    assert_eq!(r.len(), 1, "{:?}", up.results);
    assert_eq!(r[0].status, CommandStatus::Failed);
    assert_eq!(
        r[0].error.as_deref(),
        Some("interrupted by an agent restart; not re-run because it is not safe to repeat")
    );
    // Delivered again after the restart: not run.
    let p = pair().await;
    agent.serve(p.agent.clone());
    let mut again = command(
        "tr069.reboot",
        json!({"device_key": "cwmp:00259E-HG8245H-1"}),
    );
    again.id = id;
    let seen = send(&p.cp, &again).await;
    assert_eq!(seen.state(), "duplicate");
    up.drain(&agent.outbox);
    assert_eq!(up.of(id).len(), 1);
    assert_eq!(
        ledger::get(&agent.outbox, id).unwrap().map(|e| e.state),
        Some("finished".to_owned())
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_agent_queues_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = local_config(dir.path());
    let agent = Agent::start(
        &cfg,
        CommandsSection {
            max_concurrent: 1,
            max_queued: 1,
        },
    )
    .await;
    let p = pair().await;
    agent.serve(p.agent.clone());
    let first = command("noop", json!({"sleep_ms": 4000}));
    let second = command("noop", json!({}));
    let third = command("noop", json!({}));
    let (a, b, c) = tokio::join!(
        send(&p.cp, &first),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            send(&p.cp, &second).await
        },
        async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            send(&p.cp, &third).await
        }
    );
    assert_eq!(a.state(), "started");
    // The second waited for the slot, then ran; the third found the queue full.
    assert_eq!(b.state(), "started");
    assert_eq!(c.state(), "rejected");
    assert!(c.frames[0]["error"].as_str().unwrap().starts_with("busy"));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtr_to_loopback_streams_its_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = local_config(dir.path());
    let agent = Agent::start(&cfg, limits()).await;
    let p = pair().await;
    agent.serve(p.agent.clone());
    let mtr = command(
        "mtr",
        json!({"target": "127.0.0.1", "cycles": 5, "interval_ms": 200, "max_ttl": 4}),
    );
    let seen = send(&p.cp, &mtr).await;
    assert_eq!(seen.end, Ok(()));
    assert_eq!(seen.state(), "started");
    let cycles: Vec<u64> = seen.frames[1..]
        .iter()
        .map(|f| f["cycle"].as_u64().unwrap())
        .collect();
    assert_eq!(cycles, vec![1, 2, 3, 4, 5]);
    let last = seen.frames.last().unwrap();
    assert_eq!(last["reached"], true);
    assert_eq!(last["hops"][0]["ip"], "127.0.0.1");
    let mut up = Upstream::default();
    up.drain(&agent.outbox);
    let out: serde_json::Value = serde_json::from_str(&up.of(mtr.id)[0].output_json).unwrap();
    assert_eq!(out["cycles"], 5);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_port_scan_runs_as_a_syn_or_connect_scan_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = local_config(dir.path());
    cfg.scan.allowed = vec!["127.0.0.0/8".into()];
    let agent = Agent::start(&cfg, limits()).await;
    let p = pair().await;
    agent.serve(p.agent.clone());
    // One port listening, the next one closed (nothing bound to it once the probe socket is gone).
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = open.local_addr().unwrap().port();
    let closed = {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let mut results = Vec::new();
    for method in ["syn", "connect", "auto"] {
        let scan = command(
            "portscan",
            json!({"host": "127.0.0.1", "ports": [port, closed], "method": method}),
        );
        let seen = send(&p.cp, &scan).await;
        assert_eq!(seen.state(), "started", "{method}: {:?}", seen.frames);
        results.push((method, scan.id));
    }
    // A UDP scan takes no TCP method: refused before anything is sent.
    let udp = command(
        "portscan",
        json!({"host": "127.0.0.1", "udp": true, "method": "syn"}),
    );
    send(&p.cp, &udp).await;

    let mut up = Upstream::default();
    up.drain(&agent.outbox);
    for (method, id) in results {
        let r = up.of(id);
        assert_eq!(
            r[0].status,
            CommandStatus::Succeeded,
            "{method}: {:?}",
            r[0]
        );
        let out: serde_json::Value = serde_json::from_str(&r[0].output_json).unwrap();
        // The agent runs as root here, so `auto` is a SYN scan.
        let expected = if method == "connect" {
            "connect"
        } else {
            "syn"
        };
        assert_eq!(out["method"], expected, "{method}: {out}");
        let mut states: Vec<(u64, &str)> = out["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["port"].as_u64().unwrap(), p["state"].as_str().unwrap()))
            .collect();
        states.sort();
        let mut expected = vec![(u64::from(port), "open"), (u64::from(closed), "closed")];
        expected.sort();
        assert_eq!(states, expected, "{method}: {out}");
    }
    let r = up.of(udp.id);
    assert_eq!(r[0].status, CommandStatus::Rejected, "{:?}", r[0]);
    assert!(
        r[0].error.as_deref().unwrap().contains("method"),
        "{:?}",
        r[0].error
    );
    drop(open);
    agent.stop().await;
}
