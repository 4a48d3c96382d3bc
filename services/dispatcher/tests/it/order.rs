//! Per-receipt order without head-of-line blocking: the versions of one receipt reach an
//! endpoint in version order, while many receipts are in flight to it at once, and a receipt
//! waiting for its retry holds back only itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use receipts_proto::v1::DeliveryStatus;
use sha2::{Digest, Sha256};

use crate::support::*;

const RECEIPTS: u64 = 1_000;

/// A number in 0..n drawn from `seed`: the same request always gets the same answer.
fn draw(seed: &str, n: u64) -> u64 {
    let hash = Sha256::digest(seed.as_bytes());
    u64::from_be_bytes(hash[..8].try_into().unwrap()) % n
}

/// What the endpoint saw, in arrival order: receipt sid, version, answered 2xx.
type Log = Arc<Mutex<Vec<(String, u64, bool)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_arrive_in_order_while_receipts_overtake_each_other() {
    let harness = Harness::new().await;
    let log: Log = Arc::default();
    let attempts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let sink = Sink::start({
        let (log, attempts) = (log.clone(), attempts.clone());
        move |request, _| {
            let token = request.token();
            let attempt = {
                let mut attempts = attempts.lock().unwrap();
                let n = attempts.entry(token.clone()).or_default();
                *n += 1;
                *n
            };
            // One delivery in five fails its first attempt; every answer comes after a pause
            // of its own, so answers return in another order than requests came.
            let fail = attempt == 1 && draw(&token, 5) == 0;
            let pause = Duration::from_millis(draw(&format!("{token}/{attempt}"), 12));
            let version: u64 = request
                .header("x-receipts-receipt-version")
                .parse()
                .unwrap();
            log.lock()
                .unwrap()
                .push((request.param("DeliveryReceiptSid"), version, !fail));
            Answer::After(pause, if fail { 500 } else { 200 })
        }
    })
    .await;
    harness.configure(&account_webhook(&sink.url())).await;

    // Three versions of every receipt wait in the topic before the dispatcher starts, so all of
    // them are due at once.
    let steps = [
        (1, DeliveryStatus::Sent, DeliveryStatus::Queued),
        (2, DeliveryStatus::Delivered, DeliveryStatus::Sent),
        (3, DeliveryStatus::Read, DeliveryStatus::Delivered),
    ];
    for (version, status, previous) in steps {
        let updates: Vec<_> = (1..=RECEIPTS)
            .map(|n| update(receipt(n, version, status), previous))
            .collect();
        for chunk in updates.chunks(100) {
            futures::future::join_all(chunk.iter().map(|u| harness.publish(u))).await;
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let mut config = harness.config(dir.path());
    config.endpoint_concurrency = 16;
    // Most of the backlog waits paged out to the database.
    config.queue_in_memory = 64;
    let running = harness.spawn(config);
    sink.wait_for_delivered((RECEIPTS * 3) as usize, |_| true)
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while log.lock().unwrap().iter().filter(|(_, _, ok)| *ok).count() < (RECEIPTS * 3) as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "not every version was delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;

    let log = log.lock().unwrap().clone();
    let mut by_receipt: BTreeMap<&str, Vec<(u64, bool)>> = BTreeMap::new();
    for (sid, version, ok) in &log {
        by_receipt.entry(sid).or_default().push((*version, *ok));
    }
    assert_eq!(by_receipt.len(), RECEIPTS as usize);
    let mut retried = 0;
    for (sid, seen) in &by_receipt {
        // Never an older version after a newer one, failed attempts included.
        assert!(
            seen.windows(2).all(|w| w[0].0 <= w[1].0),
            "{sid} arrived out of order: {seen:?}"
        );
        let delivered: Vec<u64> = seen.iter().filter(|(_, ok)| *ok).map(|(v, _)| *v).collect();
        assert_eq!(delivered, [1, 2, 3], "{sid}: {seen:?}");
        retried += seen.iter().filter(|(_, ok)| !*ok).count();
    }
    assert!(
        retried > 300,
        "one delivery in five failed first: {retried}"
    );

    // No head-of-line blocking: the endpoint had many receipts in flight at once, and while a
    // receipt waited for its retry, others were delivered.
    assert!(
        sink.max_in_flight() >= 8,
        "at most {} requests in flight at once",
        sink.max_in_flight()
    );
    let (first_failure, _) = log
        .iter()
        .enumerate()
        .find(|(_, (_, _, ok))| !ok)
        .expect("some attempt failed");
    let (sid, version, _) = &log[first_failure];
    let retry = log
        .iter()
        .skip(first_failure + 1)
        .position(|(s, v, ok)| s == sid && v == version && *ok)
        .expect("the failed attempt was retried");
    let overtaken = log[first_failure + 1..first_failure + 1 + retry]
        .iter()
        .filter(|(s, _, ok)| s != sid && *ok)
        .count();
    assert!(
        overtaken > 0,
        "nothing was delivered while {sid} v{version} waited for its retry"
    );
}

/// Versions of one receipt read together, newest first, are delivered oldest first: each of
/// them reaches the endpoint, rather than the newest first and the older ones then dropped as
/// stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_read_together_are_all_delivered_oldest_first() {
    const COUNT: u64 = 20;
    let harness = Harness::new().await;
    let sink = Sink::start(|_, _| Answer::Status(200)).await;
    harness.configure(&account_webhook(&sink.url())).await;
    // In the topic before the dispatcher starts, so that its first read takes them all.
    let steps = [
        (3, DeliveryStatus::Read, DeliveryStatus::Delivered),
        (1, DeliveryStatus::Sent, DeliveryStatus::Queued),
        (2, DeliveryStatus::Delivered, DeliveryStatus::Sent),
    ];
    for n in 1..=COUNT {
        for (version, status, previous) in steps {
            harness
                .publish(&update(receipt(n, version, status), previous))
                .await;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let running = harness.spawn(harness.config(dir.path()));
    sink.wait_for((COUNT * 3) as usize).await;
    running.stop().await;

    let mut by_receipt: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for request in sink.received() {
        by_receipt
            .entry(request.param("DeliveryReceiptSid"))
            .or_default()
            .push(
                request
                    .header("x-receipts-receipt-version")
                    .parse()
                    .unwrap(),
            );
    }
    assert_eq!(by_receipt.len(), COUNT as usize);
    for (sid, versions) in &by_receipt {
        assert_eq!(versions, &[1, 2, 3], "{sid}");
    }
}
