//! `receipts bench grpc`: `GetMessageDelivery` lookups per second, with p50/p99 latency, at a fixed
//! number of calls in flight, beside a no-op handler measured the same way.
//!
//! The query service runs with its own `run` (auth interceptor, health, reflection, read model)
//! on a read model loaded with a realistic workload's updates. The no-op handler is the
//! `grpc.health.v1.Health/Check` of the same server: no store, no auth, a constant answer. Both
//! are called over the same kind of client — one HTTP/2 channel, the same Basic credentials
//! interceptor, `--concurrency` tasks each with one call in flight — for `--warmup-secs`
//! unmeasured, then `--secs` measured. Client and server share this process (and the machine's
//! cores), for both handlers alike.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use receipts_domain::{ConversationSid, MessageSid};
use receipts_proto::v1;
use receipts_proto::v1::delivery_query_client::DeliveryQueryClient;
use receipts_query::QueryConfig;
use receipts_query::auth::Credentials;
use receipts_runtime::config::Secret;
use receipts_runtime::demo::{DEMO_ACCOUNT, DEMO_TOKEN};
use receipts_runtime::metrics::Metrics;
use receipts_store::{QueryStore, SledQueryStore};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::broker::StageBroker;
use super::{BenchArgs, Bound, ScratchDir, Stage, StageReport, quantile};

pub async fn run(args: &BenchArgs) -> anyhow::Result<StageReport> {
    let mut report = StageReport::new(
        Stage::Grpc,
        json!({
            "updates_loaded": args.grpc_updates,
            "concurrency": args.concurrency,
            "warmup_secs": args.warmup_secs,
            "secs": args.secs,
            "seed": args.seed,
        }),
    );
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let broker = StageBroker::start(args, "grpc", args.partitions).await?;
    let result = measure(args, &broker, &mut report).await;
    broker.finish().await;
    result?;
    Ok(report)
}

/// What one handler did in the measured window.
#[derive(Debug)]
struct Calls {
    ok: u64,
    failed: u64,
    /// Microseconds, sorted.
    latencies: Vec<u64>,
    window: Duration,
}

async fn measure(
    args: &BenchArgs,
    broker: &StageBroker,
    report: &mut StageReport,
) -> anyhow::Result<()> {
    let dir = ScratchDir::new(args, "grpc")?;
    let changes = super::read_model::updates(args.grpc_updates, args.seed);
    let mut messages: Vec<(ConversationSid, MessageSid)> = changes
        .iter()
        .map(|c| {
            let r = &c.receipt.registration;
            (r.conversation.clone(), r.message.clone())
        })
        .collect();
    messages.sort();
    messages.dedup();
    report.metric(
        "messages in the read model",
        messages.len() as f64,
        "messages",
    );
    // Loaded straight into the store (no offsets, so the service's own reader starts at the
    // beginning of its empty topic); the read model's speed is the read-model stage's business.
    {
        let path = dir.path().to_owned();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let store = SledQueryStore::open(&path)?;
            for chunk in changes.chunks(5_000) {
                store.apply(chunk, &[])?;
            }
            store.flush()?;
            Ok(())
        })
        .await??;
    }

    let config = QueryConfig {
        kafka: broker.kafka.clone(),
        topics: broker.topics.clone(),
        data_dir: dir.path().to_owned(),
        accounts: BTreeMap::from([(DEMO_ACCOUNT.to_owned(), Secret::new(DEMO_TOKEN))]),
        metrics_listen: String::new(),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let (address, server) = start_query(config, &shutdown).await?;
    let result = lookups(args, address, Arc::new(messages), report).await;
    shutdown.cancel();
    server.await??;
    result
}

/// Starts the query service on a port of its own. sled may hold the database lock of the loading
/// store for a moment after it was dropped, and reports that as an error the store's own wait
/// does not recognise, so a start that fails on the lock is tried again.
async fn start_query(
    config: QueryConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<(
    SocketAddr,
    tokio::task::JoinHandle<Result<(), receipts_query::QueryError>>,
)> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (config, shutdown) = (config.clone(), shutdown.clone());
        let server = tokio::spawn(async move {
            let metrics = Metrics::new();
            receipts_query::run(config, listener, None, &metrics, shutdown).await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !server.is_finished() {
            return Ok((address, server));
        }
        match server.await? {
            Err(error) if attempts < 25 && error.to_string().contains("could not acquire lock") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(error).context("starting the query service"),
            Ok(()) => anyhow::bail!("the query service stopped at once"),
        }
    }
}

async fn lookups(
    args: &BenchArgs,
    address: SocketAddr,
    messages: Arc<Vec<(ConversationSid, MessageSid)>>,
    report: &mut StageReport,
) -> anyhow::Result<()> {
    let channel = connect(address).await?;
    let credentials = Credentials::new(DEMO_ACCOUNT, DEMO_TOKEN)?;
    // The server answers real lookups before anything is timed.
    let mut probe = DeliveryQueryClient::with_interceptor(channel.clone(), credentials.clone());
    let (c, m) = &messages[0];
    probe
        .get_message_delivery(v1::GetMessageDeliveryRequest {
            conversation_sid: c.to_string(),
            message_sid: m.to_string(),
        })
        .await
        .context("a first lookup")?;

    let noop = {
        let client = HealthClient::with_interceptor(channel.clone(), credentials.clone());
        drive(args, move |_| {
            let mut client = client.clone();
            async move {
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .is_ok()
            }
        })
        .await
    };
    let lookups = {
        let client = DeliveryQueryClient::with_interceptor(channel.clone(), credentials);
        drive(args, move |rng| {
            let mut client = client.clone();
            let (c, m) = &messages[rng.random_range(0..messages.len())];
            let request = v1::GetMessageDeliveryRequest {
                conversation_sid: c.to_string(),
                message_sid: m.to_string(),
            };
            async move { client.get_message_delivery(request).await.is_ok() }
        })
        .await
    };

    let ms = |us: u64| us as f64 / 1000.0;
    let noop_rate = report.metric(
        "no-op handler (health Check)",
        noop.ok as f64 / noop.window.as_secs_f64(),
        "calls/s",
    );
    report.metric("no-op p50", ms(quantile(&noop.latencies, 0.50)), "ms");
    report.metric("no-op p99", ms(quantile(&noop.latencies, 0.99)), "ms");
    let rate = report.metric(
        "GetMessageDelivery",
        lookups.ok as f64 / lookups.window.as_secs_f64(),
        "lookups/s",
    );
    report.metric(
        "GetMessageDelivery p50",
        ms(quantile(&lookups.latencies, 0.50)),
        "ms",
    );
    let p99 = report.metric(
        "GetMessageDelivery p99",
        ms(quantile(&lookups.latencies, 0.99)),
        "ms",
    );
    report.metric(
        "GetMessageDelivery p99.9",
        ms(quantile(&lookups.latencies, 0.999)),
        "ms",
    );
    report.metric(
        "failed calls",
        (noop.failed + lookups.failed) as f64,
        "calls",
    );
    let ratio = report.metric("lookups / no-op", rate / noop_rate, "x");
    if noop.failed + lookups.failed > 0 {
        report.note = format!(
            "{} no-op and {} lookup calls failed; rates count successful calls only",
            noop.failed, lookups.failed
        );
    }
    report.goal("gRPC lookups", Bound::AtLeast, 20_000.0, rate, "lookups/s");
    report.goal("gRPC p99", Bound::AtMost, 5.0, p99, "ms");
    report.goal(
        "gRPC lookups / no-op handler",
        Bound::AtLeast,
        0.7,
        ratio,
        "x",
    );
    Ok(())
}

async fn connect(address: SocketAddr) -> anyhow::Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Channel::from_shared(format!("http://{address}"))?
            .connect()
            .await
        {
            Ok(channel) => return Ok(channel),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error).context("connecting to the query service"),
        }
    }
}

/// Keeps `--concurrency` calls in flight for the warm-up and then the measured window; only calls
/// started inside the measured window count.
async fn drive<F, Fut>(args: &BenchArgs, call: F) -> Calls
where
    F: Fn(&mut StdRng) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let started = Instant::now();
    let measured_from = started + Duration::from_secs_f64(args.warmup_secs.max(0.0));
    let window = Duration::from_secs_f64(args.secs.max(0.001));
    let until = measured_from + window;
    let mut tasks = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency {
        let call = call.clone();
        let seed = args.seed ^ (worker as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let (mut ok, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
            loop {
                let at = Instant::now();
                if at >= until {
                    break;
                }
                let succeeded = call(&mut rng).await;
                if at >= measured_from {
                    if succeeded {
                        ok += 1;
                        latencies.push(at.elapsed().as_micros() as u64);
                    } else {
                        failed += 1;
                    }
                }
            }
            (ok, failed, latencies)
        }));
    }
    let mut calls = Calls {
        ok: 0,
        failed: 0,
        latencies: Vec::new(),
        window,
    };
    for task in tasks {
        if let Ok((ok, failed, latencies)) = task.await {
            calls.ok += ok;
            calls.failed += failed;
            calls.latencies.extend(latencies);
        }
    }
    calls.latencies.sort_unstable();
    calls
}
