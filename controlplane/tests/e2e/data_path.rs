//! Zero loss, zero duplicates: agent SIGKILLs, control plane restarts, PostgreSQL restarts, outages, disk cap.

use std::time::Duration;

use tokio::time::sleep;

use crate::harness::{Agent, Installation, status_number};

const SERIES: i64 = 100;
const TOTAL: i64 = 100_000;

fn generator(series: i64, interval_ms: u64, total: i64) -> String {
    format!(
        "[[monitors.generator]]\nname = \"load\"\nseries = {series}\ninterval_ms = {interval_ms}\ntotal = {total}\n"
    )
}

/// Every series must hold exactly `per_series` samples, and there must be `series` of them.
async fn assert_series_complete(inst: &Installation, series: i64, per_series: i64) {
    let (n_series, wrong): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE c <> $1) FROM (SELECT series_id, count(*) AS c FROM samples GROUP BY 1) t",
    )
    .bind(per_series)
    .fetch_one(&inst.admin)
    .await
    .unwrap();
    assert_eq!(
        (n_series, wrong),
        (series, 0),
        "every series complete, none with missing or extra samples"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_arrive_exactly_once_through_agent_kills_and_server_restarts() {
    let mut inst = Installation::start().await;
    let mut agent = Agent::new(&inst.quic_addr, &generator(SERIES, 20, TOTAL));
    agent.enroll(&inst.quic_addr, &inst.token());
    agent.start();

    sleep(Duration::from_secs(4)).await;
    agent.kill();
    agent.start();
    sleep(Duration::from_secs(3)).await;
    inst.kill_cp();
    sleep(Duration::from_secs(1)).await;
    inst.start_cp();
    sleep(Duration::from_secs(3)).await;
    inst.pg.restart().await;
    sleep(Duration::from_secs(3)).await;
    agent.kill();
    agent.start();

    let counts = inst
        .wait_for_samples(TOTAL, Duration::from_secs(240), &[&agent])
        .await;
    // Give any duplicate a chance to arrive before the final count.
    sleep(Duration::from_secs(3)).await;
    let counts_later = inst.sample_counts().await.unwrap();
    assert_eq!(
        counts,
        (TOTAL, TOTAL),
        "rows and distinct (series, ts) when complete"
    );
    assert_eq!(
        counts_later,
        (TOTAL, TOTAL),
        "nothing arrived twice afterwards"
    );
    assert_series_complete(&inst, SERIES, TOTAL / SERIES).await;
    let status = agent.status();
    assert_eq!(
        status_number(&status, "samples"),
        Some(0),
        "outbox drained: {status}"
    );

    // The operator commands that set this up are in the audit log, and its chains verify.
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_log ORDER BY id")
        .fetch_all(&inst.admin)
        .await
        .unwrap();
    for expected in ["providers.create", "pops.create", "agents.enrollment_token"] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from the audit log: {actions:?}"
        );
    }
    inst.cp_cmd(&["audit", "verify"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_grows_while_control_plane_is_down_then_drains() {
    let mut inst = Installation::start().await;
    let total = 20_000;
    let mut agent = Agent::new(&inst.quic_addr, &generator(50, 20, total));
    agent.enroll(&inst.quic_addr, &inst.token());
    inst.stop_cp();
    agent.start();

    // The generator needs 8 s; meanwhile everything piles up in the outbox.
    let mut waiting = 0;
    for _ in 0..120 {
        sleep(Duration::from_millis(500)).await;
        waiting = status_number(&agent.status(), "samples").unwrap_or(0);
        if waiting >= total as u64 {
            break;
        }
    }
    assert_eq!(
        waiting, total as u64,
        "the outbox holds everything produced while the control plane was down"
    );
    assert_eq!(inst.sample_counts().await.unwrap(), (0, 0));

    inst.start_cp();
    let counts = inst
        .wait_for_samples(total, Duration::from_secs(120), &[&agent])
        .await;
    assert_eq!(counts, (total, total));
    assert_series_complete(&inst, 50, total / 50).await;
    let mut left = u64::MAX;
    for _ in 0..40 {
        left = status_number(&agent.status(), "samples").unwrap_or(u64::MAX);
        if left == 0 {
            break;
        }
        sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(left, 0, "the outbox drained");
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_cap_drops_oldest_samples_and_reports_every_drop_upstream() {
    let mut inst = Installation::start().await;
    let total: i64 = 600_000;
    // Keys right after the harness's [outbox] table land in it: a 1 MiB cap, a 2 MiB hard ceiling.
    let extra = format!(
        "max_mb = 1\nhard_ceiling_mb = 2\n{}",
        generator(1000, 10, total)
    );
    let mut agent = Agent::new(&inst.quic_addr, &extra);
    agent.enroll(&inst.quic_addr, &inst.token());
    inst.stop_cp();
    agent.start();

    let mut dropped = 0;
    for _ in 0..240 {
        sleep(Duration::from_millis(500)).await;
        let status = agent.status();
        dropped = status
            .lines()
            .find(|l| l.starts_with("dropped samples"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(0);
        let waiting = status_number(&status, "samples").unwrap_or(0) as i64;
        if waiting + dropped >= total {
            break;
        }
    }
    assert!(dropped > 0, "a 1 MiB cap must drop samples out of {total}");

    inst.start_cp();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (stored, _) = inst.sample_counts().await.unwrap();
        let reported: Option<i64> =
            sqlx::query_scalar("SELECT sum(samples_dropped)::bigint FROM agent_drop_reports")
                .fetch_one(&inst.admin)
                .await
                .unwrap();
        let reported = reported.unwrap_or(0);
        if stored + reported == total {
            assert_eq!(
                reported, dropped,
                "the control plane was told of every drop the agent counted"
            );
            // The oldest went first: what is left is the newest ticks.
            let (min_value,): (f64,) = sqlx::query_as("SELECT min(value) FROM samples")
                .fetch_one(&inst.admin)
                .await
                .unwrap();
            assert!(
                min_value > 0.0,
                "the very first tick (value 0) was among the dropped"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stored {stored} + reported dropped {reported} != produced {total}\n{}\n{}",
            agent.log(),
            inst.cp_log()
        );
        sleep(Duration::from_millis(500)).await;
    }
}

/// SIGTERM ends the control plane even when its statements hang (here: ingest blocked on a lock someone holds on
/// `samples`): past the grace period it exits without them, their transactions roll back, and the agent's
/// outbox still holds what was not acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_even_with_statements_stuck_on_a_lock() {
    let mut inst = Installation::start().await;
    let mut agent = Agent::new(&inst.quic_addr, &generator(10, 50, 1_000_000));
    agent.enroll(&inst.quic_addr, &inst.token());
    agent.start();
    inst.wait_for_samples(10, Duration::from_secs(60), &[&agent])
        .await;

    let mut lock = inst.admin.begin().await.unwrap();
    sqlx::query("LOCK TABLE samples IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    // Wait until the control plane's ingest is stuck behind the lock.
    let start = std::time::Instant::now();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'octoisp_app' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&inst.admin)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "ingest never blocked on the lock"
        );
        sleep(Duration::from_millis(100)).await;
    }
    // `stop_cp` panics when the process ignores SIGTERM for 30 s; the lock is still held.
    inst.stop_cp();
    assert!(
        inst.cp_log().contains("exiting without them"),
        "{}",
        inst.cp_log()
    );
    lock.rollback().await.unwrap();
    agent.kill();
}
