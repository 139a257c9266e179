//! The Redis command queue against a real Redis: ordering, fairness between tiers and tenants, limits, leases
//! and reclaim, retries and the dead-letter queue, cancel, dedup, bad input, and a Redis restart (a private
//! `redis-server` killed with SIGKILL and started again on its append-only file).
//!
//! Every test uses a key prefix of its own on the shared Redis (`OCTOISP_TEST_REDIS`) and deletes its keys at
//! the end.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use octoisp_controlplane::queue::{
    MAX_PAYLOAD_BYTES, NewJob, Queue, QueueConfig, RetryOutcome, Tier,
};
use uuid::Uuid;

fn redis_url() -> String {
    std::env::var("OCTOISP_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A config with a unique prefix and no tenant limits (tests that check limits set them).
fn cfg() -> QueueConfig {
    QueueConfig {
        prefix: format!("test:queue:{}", Uuid::new_v4().simple()),
        tenant_concurrency: [0, 0, 0],
        tenant_rate: [0.0, 0.0, 0.0],
        ..QueueConfig::default()
    }
}

async fn queue(cfg: QueueConfig) -> Queue {
    Queue::connect(&redis_url(), cfg)
        .await
        .expect("connect to the test Redis")
}

/// Deletes every key of the queue's prefix.
async fn cleanup(q: &Queue) {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let pattern = format!("{}:*", q.config().prefix);
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(5000)
            .query_async(&mut conn)
            .await
            .expect("scan");
        if !keys.is_empty() {
            let _: i64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .expect("unlink");
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}

fn job(tenant: Uuid, tier: Tier, payload: &str) -> NewJob {
    NewJob {
        id: Uuid::new_v4(),
        provider_id: tenant,
        tier,
        payload: payload.to_owned(),
        not_before_ms: None,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

#[tokio::test]
async fn jobs_of_a_tenant_come_out_in_enqueue_order() {
    let q = queue(cfg()).await;
    let tenant = Uuid::new_v4();
    let jobs: Vec<NewJob> = (0..20)
        .map(|i| job(tenant, Tier::Medium, &format!("job {i}")))
        .collect();
    assert_eq!(q.enqueue(&jobs[..10]).await.unwrap(), 10);
    assert_eq!(q.enqueue(&jobs[10..]).await.unwrap(), 10);
    let mut got = Vec::new();
    for _ in 0..4 {
        got.extend(q.reserve("w1", 5).await.unwrap());
    }
    let ids: Vec<Uuid> = got.iter().map(|l| l.id).collect();
    let want: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    assert_eq!(ids, want);
    assert!(
        got.iter()
            .all(|l| l.attempt == 1 && l.provider_id == tenant)
    );
    assert_eq!(got[3].payload, "job 3");
    assert!(q.reserve("w1", 5).await.unwrap().is_empty());
    cleanup(&q).await;
}

#[tokio::test]
async fn a_reserve_with_a_tier_weight_of_zero_leaves_that_tier_alone() {
    // The dispatcher's express lane: the large tier's weight is 0 for its calls, so it takes the small tenant's
    // job out of a large tenant's flood and nothing of the flood, and the next ordinary call serves the flood.
    let q = queue(cfg()).await;
    let (big, small) = (Uuid::new_v4(), Uuid::new_v4());
    let flood: Vec<NewJob> = (0..50).map(|_| job(big, Tier::Large, "flood")).collect();
    q.enqueue(&flood).await.unwrap();
    let probe = job(small, Tier::Small, "probe");
    q.enqueue(std::slice::from_ref(&probe)).await.unwrap();
    assert!(
        q.reserve_weighted("w", 8, [4, 2, 0])
            .await
            .unwrap()
            .iter()
            .map(|l| l.id)
            .eq([probe.id]),
        "only the small tenant's job"
    );
    assert!(
        q.reserve_weighted("w", 8, [4, 2, 0])
            .await
            .unwrap()
            .is_empty(),
        "nothing for the express lane once the small tier is empty"
    );
    let rest = q.reserve("w", 100).await.unwrap();
    assert_eq!(rest.len(), 50);
    assert!(rest.iter().all(|l| l.provider_id == big));
    cleanup(&q).await;
}

#[tokio::test]
async fn tenants_of_a_tier_are_served_round_robin() {
    let q = queue(cfg()).await;
    let tenants = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    // The first tenant enqueues everything first: round robin must still interleave.
    for (i, t) in tenants.iter().enumerate() {
        let n = [50, 10, 10][i];
        let jobs: Vec<NewJob> = (0..n).map(|_| job(*t, Tier::Small, "x")).collect();
        q.enqueue(&jobs).await.unwrap();
    }
    let first = q.reserve("w", 3).await.unwrap();
    let mut seen: Vec<Uuid> = first.iter().map(|l| l.provider_id).collect();
    seen.sort();
    let mut all = tenants.to_vec();
    all.sort();
    assert_eq!(
        seen, all,
        "the first three slots go to three different tenants"
    );

    let more = q.reserve("w", 27).await.unwrap();
    let mut per: HashMap<Uuid, usize> = HashMap::new();
    for l in first.iter().chain(&more) {
        *per.entry(l.provider_id).or_default() += 1;
    }
    assert_eq!(per[&tenants[0]], 10);
    assert_eq!(per[&tenants[1]], 10);
    assert_eq!(per[&tenants[2]], 10);
    // The small tenants are drained; the rest goes to the big one.
    let rest = q.reserve("w", 100).await.unwrap();
    assert_eq!(rest.len(), 40);
    assert!(rest.iter().all(|l| l.provider_id == tenants[0]));
    cleanup(&q).await;
}

/// Jobs of several tenants in two tiers, the same jobs (ids) in two queues.
async fn twin_queues(limits: bool) -> (Queue, Queue, Vec<NewJob>) {
    let mut c = cfg();
    if limits {
        c.tenant_concurrency = [3, 0, 0];
    }
    let (a, b) = (queue(c.clone()).await, {
        let mut c2 = c;
        c2.prefix = format!("test:queue:{}", Uuid::new_v4().simple());
        queue(c2).await
    });
    let tenants: Vec<(Uuid, Tier, usize)> = vec![
        (Uuid::new_v4(), Tier::Small, 7),
        (Uuid::new_v4(), Tier::Small, 2),
        (Uuid::new_v4(), Tier::Small, 1),
        (Uuid::new_v4(), Tier::Small, 5),
        (Uuid::new_v4(), Tier::Large, 30),
        (Uuid::new_v4(), Tier::Large, 4),
    ];
    let mut jobs = Vec::new();
    for (t, tier, n) in &tenants {
        jobs.extend((0..*n).map(|i| job(*t, *tier, &format!("job {i}"))));
    }
    // Enqueued in two calls, interleaved differently, so that tenants join the round robin in a mixed order.
    let (first, second) = jobs.split_at(20);
    for q in [&a, &b] {
        assert_eq!(q.enqueue(second).await.unwrap(), second.len());
        assert_eq!(q.enqueue(first).await.unwrap(), first.len());
    }
    (a, b, jobs)
}

#[tokio::test]
async fn one_reserve_of_many_hands_out_what_as_many_reserves_of_one_would() {
    for limits in [false, true] {
        let (a, b, jobs) = twin_queues(limits).await;
        // `a` in calls of 9 (completing each call's first two leases, which frees concurrency), `b` one by one
        // with the same completions at the same points.
        let mut by_many = Vec::new();
        let mut by_one = Vec::new();
        let mut done = 0;
        for _ in 0..8 {
            let got = a.reserve("w", 9).await.unwrap();
            let mut one = Vec::new();
            for _ in 0..9 {
                one.extend(b.reserve("w", 1).await.unwrap());
            }
            assert_eq!(
                got.iter().map(|l| l.id).collect::<Vec<_>>(),
                one.iter().map(|l| l.id).collect::<Vec<_>>(),
                "same jobs in the same order (limits: {limits})"
            );
            for (q, ls) in [(&a, &got), (&b, &one)] {
                let done: Vec<(Uuid, Option<u32>)> =
                    ls.iter().take(2).map(|l| (l.id, Some(l.attempt))).collect();
                assert!(q.complete_many(&done).await.unwrap().iter().all(|d| *d));
            }
            done += got.len().min(2);
            by_many.extend(got);
            by_one.extend(one);
        }
        assert!(by_many.len() > 40, "the run handed out work");
        // The counters agree with what is in the sets.
        let (sa, sb) = (a.stats().await.unwrap(), b.stats().await.unwrap());
        for tier in [Tier::Small, Tier::Large] {
            let (x, y) = (&sa.tiers[tier.index()], &sb.tiers[tier.index()]);
            assert_eq!(
                (x.ready, x.leased, x.tenants_active),
                (y.ready, y.leased, y.tenants_active)
            );
        }
        let leased: u64 = sa.tiers.iter().map(|t| t.leased).sum();
        let ready: u64 = sa.tiers.iter().map(|t| t.ready).sum();
        assert_eq!(leased as usize, by_many.len() - done);
        assert_eq!(ready as usize, jobs.len() - by_many.len());
        assert_eq!(sa.counters.completed as usize, done);
        cleanup(&a).await;
        cleanup(&b).await;
    }
}

#[tokio::test]
async fn tier_weights_share_the_slots_and_an_idle_tier_gives_its_share_away() {
    let q = queue(QueueConfig {
        tier_weights: [1, 2, 4],
        ..cfg()
    })
    .await;
    let tenants: Vec<(Uuid, Tier)> = Tier::ALL
        .iter()
        .flat_map(|t| [(Uuid::new_v4(), *t), (Uuid::new_v4(), *t)])
        .collect();
    for (tenant, tier) in &tenants {
        let jobs: Vec<NewJob> = (0..1000).map(|_| job(*tenant, *tier, "w")).collect();
        q.enqueue(&jobs).await.unwrap();
    }
    // 140 calls of 5: the shares must hold over many small calls, not only within one.
    let mut per_tier = [0usize; 3];
    for _ in 0..140 {
        for l in q.reserve("w", 5).await.unwrap() {
            per_tier[l.tier.index()] += 1;
        }
    }
    assert_eq!(per_tier.iter().sum::<usize>(), 700);
    assert!((98..=102).contains(&per_tier[0]), "small {per_tier:?}");
    assert!((198..=202).contains(&per_tier[1]), "medium {per_tier:?}");
    assert!((398..=402).contains(&per_tier[2]), "large {per_tier:?}");

    cleanup(&q).await;

    // No medium-tier work: its share goes to the others, small and large share 1:4.
    let q = queue(QueueConfig {
        tier_weights: [1, 2, 4],
        ..cfg()
    })
    .await;
    for tier in [Tier::Small, Tier::Large] {
        let jobs: Vec<NewJob> = (0..1000).map(|_| job(Uuid::new_v4(), tier, "w")).collect();
        q.enqueue(&jobs).await.unwrap();
    }
    let mut per = [0usize; 3];
    for _ in 0..20 {
        for l in q.reserve("w", 25).await.unwrap() {
            per[l.tier.index()] += 1;
        }
    }
    assert_eq!(per, [100, 0, 400]);
    cleanup(&q).await;
}

#[tokio::test]
async fn a_small_tenant_is_not_delayed_by_a_large_tenant_flooding_100k_jobs() {
    let q = queue(cfg()).await;
    let big = Uuid::new_v4();
    let jobs: Vec<NewJob> = (0..100_000)
        .map(|i| job(big, Tier::Large, &format!("reboot ont {i}")))
        .collect();
    for batch in jobs.chunks(5000) {
        assert_eq!(q.enqueue(batch).await.unwrap(), batch.len());
    }
    let s = q.stats().await.unwrap();
    assert_eq!(s.tiers[Tier::Large.index()].ready, 100_000);
    let first = q.reserve("w", 100).await.unwrap();
    assert_eq!(first.len(), 100);

    // Worst case: the small tenant in the same tier as the flood (no tier weight helps it).
    let small_same_tier = job(Uuid::new_v4(), Tier::Large, "ping");
    // And one in the small tier.
    let small_tier = job(Uuid::new_v4(), Tier::Small, "mtr");
    q.enqueue(&[small_same_tier.clone(), small_tier.clone()])
        .await
        .unwrap();
    let mut found = [false, false];
    for _ in 0..2 {
        for l in q.reserve("w", 100).await.unwrap() {
            if l.id == small_same_tier.id {
                found[0] = true;
            }
            if l.id == small_tier.id {
                found[1] = true;
            }
        }
        if found == [true, true] {
            break;
        }
    }
    assert_eq!(
        found,
        [true, true],
        "small tenants' jobs leased within 2 reserve calls"
    );
    cleanup(&q).await;
}

#[tokio::test]
async fn a_tenant_never_holds_more_leases_than_its_concurrency_limit() {
    let q = queue(QueueConfig {
        tenant_concurrency: [3, 3, 3],
        ..cfg()
    })
    .await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let ja: Vec<NewJob> = (0..10).map(|_| job(a, Tier::Small, "a")).collect();
    let jb: Vec<NewJob> = (0..2).map(|_| job(b, Tier::Small, "b")).collect();
    q.enqueue(&ja).await.unwrap();
    q.enqueue(&jb).await.unwrap();
    let got = q.reserve("w", 10).await.unwrap();
    let of_a: Vec<_> = got.iter().filter(|l| l.provider_id == a).collect();
    assert_eq!(of_a.len(), 3);
    assert_eq!(
        got.len(),
        5,
        "tenant b is not held back by tenant a's limit"
    );
    assert!(q.reserve("w", 10).await.unwrap().is_empty());
    assert_eq!(q.tenant_stats(a).await.unwrap().leased, 3);
    // A finished job frees a slot.
    assert!(q.complete(of_a[0].id, Some(1)).await.unwrap());
    let next = q.reserve("w", 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].id, ja[3].id);
    // So does a retry (the job leaves the leased set).
    assert!(matches!(
        q.retry(of_a[1].id, 1, "timeout").await.unwrap(),
        RetryOutcome::Delayed { .. }
    ));
    assert_eq!(q.reserve("w", 10).await.unwrap().len(), 1);
    assert_eq!(q.tenant_stats(a).await.unwrap().leased, 3);
    cleanup(&q).await;
}

#[tokio::test]
async fn a_tenant_starts_no_more_jobs_than_its_rate_allows() {
    let q = queue(QueueConfig {
        tenant_rate: [2.0, 2.0, 2.0],
        ..cfg()
    })
    .await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let ja: Vec<NewJob> = (0..50).map(|_| job(a, Tier::Medium, "a")).collect();
    q.enqueue(&ja).await.unwrap();
    q.enqueue(&[job(b, Tier::Medium, "b")]).await.unwrap();
    let start = Instant::now();
    let first = q.reserve("w", 50).await.unwrap();
    // Burst of one second: two jobs of a, and b's job.
    assert_eq!(first.iter().filter(|l| l.provider_id == a).count(), 2);
    assert_eq!(first.iter().filter(|l| l.provider_id == b).count(), 1);
    let mut total = 2usize;
    while start.elapsed() < Duration::from_millis(2500) {
        total += q.reserve("w", 50).await.unwrap().len();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Upper bound: burst + rate x elapsed (the bound a user would check); lower bound: the bucket refills.
    let allowed = 2.0 + 2.0 * elapsed + 1.0;
    assert!(
        (total as f64) <= allowed,
        "{total} jobs started in {elapsed:.2} s at 2/s"
    );
    assert!(
        total >= 4,
        "the bucket refills: {total} jobs in {elapsed:.2} s"
    );
    cleanup(&q).await;
}

#[tokio::test]
async fn a_dead_workers_job_is_reclaimed_and_completes_exactly_once() {
    let q = queue(QueueConfig {
        visibility_timeout: Duration::from_millis(300),
        ..cfg()
    })
    .await;
    let tenant = Uuid::new_v4();
    let first = job(tenant, Tier::Small, "reboot ont 7");
    let second = job(tenant, Tier::Small, "reboot ont 8");
    q.enqueue(&[first.clone(), second.clone()]).await.unwrap();
    let dead = q.reserve("doomed", 1).await.unwrap();
    assert_eq!(dead[0].id, first.id);
    assert_eq!(dead[0].attempt, 1);
    // The worker dies: no extend, no complete. Nothing is reclaimed before the timeout.
    assert_eq!(q.maintain().await.unwrap().0, 0);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (reclaimed, _) = q.maintain().await.unwrap();
    assert_eq!(reclaimed, 1);
    // Back at its original place: ahead of the job enqueued after it.
    let again = q.reserve("survivor", 1).await.unwrap();
    assert_eq!(again[0].id, first.id);
    assert_eq!(again[0].attempt, 2);
    // The stale worker comes back: fenced off.
    assert!(!q.extend(first.id, 1).await.unwrap());
    assert!(!q.complete(first.id, Some(1)).await.unwrap());
    assert_eq!(
        q.retry(first.id, 1, "late").await.unwrap(),
        RetryOutcome::Stale
    );
    assert!(q.extend(first.id, 2).await.unwrap());
    assert!(q.complete(first.id, Some(2)).await.unwrap());
    assert!(!q.complete(first.id, Some(2)).await.unwrap());
    assert!(!q.complete(first.id, None).await.unwrap());
    let s = q.stats().await.unwrap();
    assert_eq!(s.counters.completed, 1);
    assert_eq!(s.counters.reclaimed, 1);
    assert_eq!(s.counters.leased, 2);
    assert_eq!(s.tiers[0].leased, 0);
    assert_eq!(s.tiers[0].ready, 1);
    let names: Vec<&str> = s.workers.iter().map(|w| w.name.as_str()).collect();
    assert!(names.contains(&"doomed") && names.contains(&"survivor"));
    cleanup(&q).await;
}

#[tokio::test]
async fn an_agent_result_completes_a_job_that_was_reclaimed_meanwhile() {
    let q = queue(QueueConfig {
        visibility_timeout: Duration::from_millis(200),
        ..cfg()
    })
    .await;
    let j = job(Uuid::new_v4(), Tier::Medium, "reboot");
    q.enqueue(std::slice::from_ref(&j)).await.unwrap();
    q.reserve("w", 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(q.maintain().await.unwrap().0, 1);
    // The agent did run it: its result must stop a second delivery (a second reboot).
    assert!(q.complete(j.id, None).await.unwrap());
    assert!(q.reserve("w", 10).await.unwrap().is_empty());
    assert_eq!(q.enqueue(std::slice::from_ref(&j)).await.unwrap(), 0);
    cleanup(&q).await;
}

#[tokio::test]
async fn complete_many_fences_each_job_like_complete() {
    let q = queue(cfg()).await;
    let tenant = Uuid::new_v4();
    let jobs: Vec<NewJob> = (0..4).map(|_| job(tenant, Tier::Small, "c")).collect();
    q.enqueue(&jobs).await.unwrap();
    let leases = q.reserve("w", 3).await.unwrap();
    let done = q
        .complete_many(&[
            (leases[0].id, Some(1)),
            (leases[1].id, Some(2)),
            (leases[2].id, None),
            (jobs[3].id, Some(1)),
            (Uuid::new_v4(), None),
        ])
        .await
        .unwrap();
    assert_eq!(done, vec![true, false, true, false, false]);
    let t = q.tenant_stats(tenant).await.unwrap();
    assert_eq!((t.ready, t.leased), (1, 1));
    assert_eq!(q.stats().await.unwrap().counters.completed, 2);
    assert!(q.complete_many(&[]).await.unwrap().is_empty());
    cleanup(&q).await;
}

#[tokio::test]
async fn retries_back_off_then_dead_letter_and_the_dlq_requeues_and_discards() {
    let q = queue(QueueConfig {
        max_attempts: 3,
        backoff_base: Duration::from_millis(40),
        backoff_max: Duration::from_millis(100),
        ..cfg()
    })
    .await;
    let tenant = Uuid::new_v4();
    let j = job(tenant, Tier::Medium, "snmp walk");
    q.enqueue(std::slice::from_ref(&j)).await.unwrap();
    for attempt in 1..=3u32 {
        let mut lease = Vec::new();
        for _ in 0..100 {
            q.maintain().await.unwrap();
            lease = q.reserve("w", 1).await.unwrap();
            if !lease.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(lease.len(), 1, "attempt {attempt} leased after its backoff");
        assert_eq!(lease[0].attempt, attempt);
        let out = q
            .retry(j.id, attempt, &format!("timeout {attempt}"))
            .await
            .unwrap();
        if attempt < 3 {
            let RetryOutcome::Delayed { until_ms } = out else {
                panic!("attempt {attempt}: {out:?}");
            };
            assert!(until_ms >= lease[0].leased_ms);
            assert_eq!(q.tenant_stats(tenant).await.unwrap().delayed, 1);
        } else {
            assert_eq!(out, RetryOutcome::DeadLettered);
        }
    }
    let dead = q.dead_letters(tenant, 10, None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, j.id);
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].error, "timeout 3");
    assert_eq!(dead[0].payload, "snmp walk");
    let s = q.stats().await.unwrap();
    assert_eq!(s.dead, 1);
    assert_eq!(s.counters.retried, 2);
    assert_eq!(s.counters.dead_lettered, 1);
    // Another tenant cannot see or touch it.
    let other = Uuid::new_v4();
    assert!(q.dead_letters(other, 10, None).await.unwrap().is_empty());
    assert!(!q.requeue_dead(other, j.id).await.unwrap());
    assert!(!q.discard_dead(other, j.id).await.unwrap());
    // Requeue: a fresh attempt count.
    assert!(q.requeue_dead(tenant, j.id).await.unwrap());
    assert!(!q.requeue_dead(tenant, j.id).await.unwrap());
    let lease = q.reserve("w", 1).await.unwrap();
    assert_eq!(lease[0].attempt, 1);
    // A permanent failure goes straight to the DLQ; then discard.
    assert!(q.dead_letter(j.id, 1, "no such device").await.unwrap());
    assert_eq!(q.tenant_stats(tenant).await.unwrap().dead, 1);
    assert!(q.discard_dead(tenant, j.id).await.unwrap());
    assert!(!q.discard_dead(tenant, j.id).await.unwrap());
    assert!(q.dead_letters(tenant, 10, None).await.unwrap().is_empty());
    assert_eq!(q.stats().await.unwrap().dead, 0);
    cleanup(&q).await;
}

#[tokio::test]
async fn dead_letters_page_oldest_first() {
    let q = queue(cfg()).await;
    let tenant = Uuid::new_v4();
    let jobs: Vec<NewJob> = (0..5)
        .map(|i| job(tenant, Tier::Small, &format!("{i}")))
        .collect();
    q.enqueue(&jobs).await.unwrap();
    for l in q.reserve("w", 5).await.unwrap() {
        assert!(q.dead_letter(l.id, 1, "bad").await.unwrap());
    }
    let page1 = q.dead_letters(tenant, 2, None).await.unwrap();
    let page2 = q.dead_letters(tenant, 2, Some(page1[1].id)).await.unwrap();
    let page3 = q.dead_letters(tenant, 2, Some(page2[1].id)).await.unwrap();
    assert_eq!(page1.len() + page2.len() + page3.len(), 5);
    let mut ids: Vec<Uuid> = page1
        .iter()
        .chain(&page2)
        .chain(&page3)
        .map(|d| d.id)
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    assert!(q.dead_letters(tenant, 0, None).await.unwrap().is_empty());
    cleanup(&q).await;
}

#[tokio::test]
async fn cancel_removes_a_job_from_every_state() {
    let q = queue(cfg()).await;
    let tenant = Uuid::new_v4();
    let ready = job(tenant, Tier::Large, "ready");
    let leased = job(tenant, Tier::Large, "leased");
    let dead = job(tenant, Tier::Large, "dead");
    let delayed = NewJob {
        not_before_ms: Some(now_ms() + 3_600_000),
        ..job(tenant, Tier::Large, "delayed")
    };
    q.enqueue(&[leased.clone(), dead.clone()]).await.unwrap();
    let l = q.reserve("w", 2).await.unwrap();
    assert_eq!(l.len(), 2);
    assert!(q.dead_letter(dead.id, 1, "x").await.unwrap());
    q.enqueue(&[ready.clone(), delayed.clone()]).await.unwrap();
    let t = q.tenant_stats(tenant).await.unwrap();
    assert_eq!((t.ready, t.leased, t.delayed, t.dead), (1, 1, 1, 1));

    // Another tenant's cancel is refused.
    assert!(!q.cancel(Uuid::new_v4(), ready.id).await.unwrap());
    for j in [&ready, &leased, &delayed, &dead] {
        assert!(q.cancel(tenant, j.id).await.unwrap(), "{}", j.payload);
        assert!(!q.cancel(tenant, j.id).await.unwrap());
    }
    let t = q.tenant_stats(tenant).await.unwrap();
    assert_eq!((t.ready, t.leased, t.delayed, t.dead), (0, 0, 0, 0));
    // The cancelled lease's worker is fenced off; nothing comes out.
    assert!(!q.complete(leased.id, Some(1)).await.unwrap());
    assert!(!q.extend(leased.id, 1).await.unwrap());
    assert!(q.reserve("w", 10).await.unwrap().is_empty());
    assert_eq!(q.wake(&[delayed.id]).await.unwrap(), 0);
    let s = q.stats().await.unwrap();
    assert_eq!(s.tiers[2], Default::default());
    assert_eq!(s.dead, 0);
    // Cancelled ids are not accepted again.
    assert_eq!(q.enqueue(std::slice::from_ref(&ready)).await.unwrap(), 0);
    cleanup(&q).await;
}

#[tokio::test]
async fn many_leases_are_deferred_in_one_call_and_stale_ones_are_left_alone() {
    let q = queue(cfg()).await;
    let tenant = Uuid::new_v4();
    let jobs: Vec<NewJob> = (0..4)
        .map(|i| job(tenant, Tier::Small, &format!("cmd {i}")))
        .collect();
    q.enqueue(&jobs).await.unwrap();
    let leases = q.reserve("w", 4).await.unwrap();
    assert_eq!(leases.len(), 4);
    // The third's result came first (its job is complete); the fourth is asked with an attempt it never had.
    assert!(q.complete(jobs[2].id, None).await.unwrap());
    let far = now_ms() + 3_600_000;
    let flags = q
        .defer_many(&[
            (jobs[0].id, 1, far),
            (jobs[1].id, 1, far),
            (jobs[2].id, 1, far),
            (jobs[3].id, 2, far),
        ])
        .await
        .unwrap();
    assert_eq!(flags, vec![true, true, false, false]);
    let s = q.tenant_stats(tenant).await.unwrap();
    assert_eq!((s.ready, s.leased, s.delayed), (0, 1, 2), "{s:?}");
    // Results for a deferred and a leased job, in one call: both counters come down.
    let done = q
        .complete_many(&[(jobs[0].id, None), (jobs[3].id, None), (jobs[2].id, None)])
        .await
        .unwrap();
    assert_eq!(done, vec![true, true, false]);
    let s = q.tenant_stats(tenant).await.unwrap();
    assert_eq!((s.ready, s.leased, s.delayed), (0, 0, 1), "{s:?}");
    // A deferred job comes back at its place, without an attempt counted.
    assert_eq!(q.wake(&[jobs[1].id]).await.unwrap(), 1);
    let out = q.reserve("w", 4).await.unwrap();
    let ids: Vec<(Uuid, u32)> = out.iter().map(|l| (l.id, l.attempt)).collect();
    assert_eq!(ids, vec![(jobs[1].id, 1)]);
    let st = q.stats().await.unwrap();
    assert_eq!(st.tiers[0].leased, 1, "{st:?}");
    cleanup(&q).await;
}

#[tokio::test]
async fn deferred_jobs_wake_in_their_original_order_without_an_attempt() {
    let q = queue(cfg()).await;
    let tenant = Uuid::new_v4();
    let jobs: Vec<NewJob> = (0..3)
        .map(|i| job(tenant, Tier::Small, &format!("cmd {i}")))
        .collect();
    q.enqueue(&jobs).await.unwrap();
    let leases = q.reserve("w", 3).await.unwrap();
    // The agent is offline: the first two wait; the third was done.
    let far = now_ms() + 3_600_000;
    assert!(q.defer(jobs[0].id, 1, far).await.unwrap());
    assert!(q.defer(jobs[1].id, 1, far).await.unwrap());
    assert!(
        !q.defer(jobs[1].id, 1, far).await.unwrap(),
        "no longer leased"
    );
    assert!(q.complete(leases[2].id, Some(1)).await.unwrap());
    let later = job(tenant, Tier::Small, "cmd 3");
    q.enqueue(std::slice::from_ref(&later)).await.unwrap();
    assert_eq!(q.maintain().await.unwrap(), (0, 0), "not due yet");
    assert_eq!(q.tenant_stats(tenant).await.unwrap().delayed, 2);
    // The agent is back: woken in reverse order, served in the original order, ahead of the later job.
    assert_eq!(
        q.wake(&[jobs[1].id, jobs[0].id, Uuid::new_v4()])
            .await
            .unwrap(),
        2
    );
    let out = q.reserve("w", 3).await.unwrap();
    let ids: Vec<Uuid> = out.iter().map(|l| l.id).collect();
    assert_eq!(ids, vec![jobs[0].id, jobs[1].id, later.id]);
    assert!(out.iter().all(|l| l.attempt == 1));
    cleanup(&q).await;
}

#[tokio::test]
async fn not_before_jobs_wait_until_due() {
    let q = queue(cfg()).await;
    let tenant = Uuid::new_v4();
    let j = NewJob {
        not_before_ms: Some(now_ms() + 400),
        ..job(tenant, Tier::Medium, "later")
    };
    q.enqueue(std::slice::from_ref(&j)).await.unwrap();
    assert!(q.reserve("w", 1).await.unwrap().is_empty());
    assert_eq!(q.stats().await.unwrap().tiers[1].delayed, 1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(q.maintain().await.unwrap(), (0, 1));
    assert_eq!(q.reserve("w", 1).await.unwrap()[0].id, j.id);
    cleanup(&q).await;
}

#[tokio::test]
async fn a_known_id_is_enqueued_once_even_after_completion() {
    let q = queue(cfg()).await;
    let tenant = Uuid::new_v4();
    let j = job(tenant, Tier::Small, "once");
    assert_eq!(
        q.enqueue(&[j.clone(), j.clone()]).await.unwrap(),
        1,
        "a duplicate within one batch"
    );
    assert_eq!(q.enqueue(std::slice::from_ref(&j)).await.unwrap(), 0);
    let l = q.reserve("w", 5).await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(
        q.enqueue(std::slice::from_ref(&j)).await.unwrap(),
        0,
        "while leased"
    );
    assert!(q.complete(j.id, Some(1)).await.unwrap());
    assert_eq!(
        q.enqueue(std::slice::from_ref(&j)).await.unwrap(),
        0,
        "after completion"
    );
    assert!(q.reserve("w", 5).await.unwrap().is_empty());
    let s = q.stats().await.unwrap();
    assert_eq!((s.counters.enqueued, s.counters.completed), (1, 1));
    cleanup(&q).await;
}

#[tokio::test]
async fn odd_payloads_and_unknown_ids_are_handled_without_errors() {
    let q = queue(cfg()).await;
    let tenant = Uuid::new_v4();
    let odd = [
        String::new(),
        "\0 nul, 'quotes', \"dq\", ]] [[ --[[ lua ]] \n\r\t ü 日本 🚀".to_owned(),
        "x".repeat(MAX_PAYLOAD_BYTES),
    ];
    let jobs: Vec<NewJob> = odd.iter().map(|p| job(tenant, Tier::Small, p)).collect();
    assert_eq!(q.enqueue(&jobs).await.unwrap(), 3);
    let got = q.reserve("w", 3).await.unwrap();
    let payloads: Vec<&str> = got.iter().map(|l| l.payload.as_str()).collect();
    assert_eq!(payloads, odd.iter().map(String::as_str).collect::<Vec<_>>());

    // Over the limit: a clear error, and nothing of the batch is written.
    let too_big = vec![
        job(tenant, Tier::Small, "fine"),
        job(tenant, Tier::Small, &"y".repeat(MAX_PAYLOAD_BYTES + 1)),
    ];
    let err = q.enqueue(&too_big).await.unwrap_err().to_string();
    assert!(err.contains("byte limit"), "{err}");
    assert_eq!(q.tenant_stats(tenant).await.unwrap().ready, 0);

    let unknown = Uuid::new_v4();
    assert!(!q.extend(unknown, 1).await.unwrap());
    assert!(!q.complete(unknown, Some(1)).await.unwrap());
    assert!(!q.complete(unknown, None).await.unwrap());
    assert_eq!(q.retry(unknown, 1, "x").await.unwrap(), RetryOutcome::Stale);
    assert!(!q.defer(unknown, 1, 0).await.unwrap());
    assert!(!q.dead_letter(unknown, 1, "x").await.unwrap());
    assert!(!q.cancel(tenant, unknown).await.unwrap());
    assert!(!q.requeue_dead(tenant, unknown).await.unwrap());
    assert!(!q.discard_dead(tenant, unknown).await.unwrap());
    assert_eq!(q.wake(&[unknown]).await.unwrap(), 0);
    assert_eq!(q.enqueue(&[]).await.unwrap(), 0);
    assert!(q.reserve("w", 0).await.unwrap().is_empty());
    assert!(
        q.dead_letters(tenant, 10, Some(unknown))
            .await
            .unwrap()
            .is_empty()
    );
    // A leased job's wrong attempt numbers are refused, not errors.
    assert!(!q.complete(got[0].id, Some(0)).await.unwrap());
    assert!(!q.complete(got[0].id, Some(u32::MAX)).await.unwrap());
    cleanup(&q).await;
}

#[tokio::test]
async fn bad_settings_are_refused_with_the_key_named() {
    let err = Queue::connect(
        &redis_url(),
        QueueConfig {
            tier_weights: [1, 0, 1],
            ..cfg()
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("queue.tier_weights"), "{err}");
    let err = Queue::connect("not a url", cfg())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Redis URL"), "{err}");
}

/// A private `redis-server` with an fsync-always append-only file; killed on drop.
struct PrivateRedis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut r = PrivateRedis {
            child: None,
            port,
            dir,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL redis-server");
            c.wait().expect("reap redis-server");
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[tokio::test]
async fn nothing_is_lost_when_redis_is_killed_and_restarted() {
    let mut redis = PrivateRedis::start();
    let q = Queue::connect(&redis.url(), cfg()).await.unwrap();
    let tenant = Uuid::new_v4();
    let mut jobs: Vec<NewJob> = (0..8)
        .map(|i| job(tenant, Tier::Medium, &format!("cmd {i}")))
        .collect();
    for i in 0..2 {
        jobs.push(NewJob {
            not_before_ms: Some(now_ms() + 3_600_000),
            ..job(tenant, Tier::Medium, &format!("later {i}"))
        });
    }
    assert_eq!(q.enqueue(&jobs).await.unwrap(), 10);
    let leased = q.reserve("w", 3).await.unwrap();
    assert!(q.dead_letter(leased[2].id, 1, "broken").await.unwrap());
    let before = q.stats().await.unwrap();
    assert_eq!(before.tiers[1].ready, 5);

    redis.kill9();
    assert!(q.stats().await.is_err(), "Redis is down");
    redis.spawn();

    // The same handle recovers on its own (reconnect, scripts loaded again).
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        match q.stats().await {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "queue did not recover: {e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let counts = |s: &octoisp_controlplane::queue::QueueStats| -> Vec<(u64, u64, u64, u64)> {
        s.tiers
            .iter()
            .map(|t| (t.ready, t.leased, t.delayed, t.tenants_active))
            .collect()
    };
    assert_eq!(
        counts(&after),
        counts(&before),
        "ready, leased and delayed jobs survive"
    );
    assert_eq!(after.dead, 1);
    assert_eq!(after.counters, before.counters);
    assert_eq!(
        q.dead_letters(tenant, 10, None).await.unwrap()[0].id,
        leased[2].id
    );
    // Leases survive: the old workers can still complete; the rest comes out in order.
    assert!(q.complete(leased[0].id, Some(1)).await.unwrap());
    let rest = q.reserve("w", 10).await.unwrap();
    let ids: Vec<Uuid> = rest.iter().map(|l| l.id).collect();
    let want: Vec<Uuid> = jobs[3..8].iter().map(|j| j.id).collect();
    assert_eq!(ids, want);
    // The dedup records survived too.
    assert_eq!(q.enqueue(&jobs).await.unwrap(), 0);
}
