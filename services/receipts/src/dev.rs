//! `receipts dev`: ingest, projector and query in one process, each with its own sled directory,
//! on librdkafka's embedded mock broker or on a real broker given with `--kafka`.
//!
//! The embedded broker lives in memory and forgets everything when the process ends. State kept
//! on disk from an earlier run would then point at records that no longer exist (its stored
//! offsets are past the end of the new, empty topics), so on an embedded broker each run starts
//! from empty state directories; with `--kafka` the state is kept and every service resumes from
//! its stored offsets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::{Context, bail};
use rdkafka::mocking::MockCluster;
use receipts_bus::{KafkaSettings, TopicNames};
use receipts_runtime::config::Secret;
use receipts_runtime::metrics::{self, Metrics};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The demo account `receipts dev` serves.
pub const DEMO_ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
pub const DEMO_TOKEN: &str = "dev-auth-token";
/// The WhatsApp app secret and verify token, and the SMPP connection, of the demo setup.
pub const DEMO_WHATSAPP_SECRET: &str = "dev-whatsapp-app-secret";
pub const DEMO_WHATSAPP_VERIFY_TOKEN: &str = "dev-whatsapp-verify-token";
pub const DEMO_SMPP_CONNECTION: &str = "demo-smsc";
pub const DEMO_SMPP_TOKEN: &str = "dev-smpp-token";

/// What `receipts dev` runs and where.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Where each service keeps its sled database (a directory per service).
    #[arg(long, default_value = "receipts-dev")]
    pub data_dir: PathBuf,
    /// A real Kafka broker (HOST:PORT) instead of the embedded one.
    #[arg(long)]
    pub kafka: Option<String>,
    /// Address of the ingest HTTP endpoints.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub ingest: String,
    /// Address of the gRPC API.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub grpc: String,
    /// Address of the Twilio-compatible REST API.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub rest: String,
    /// Address of the metrics endpoint (every service's metrics).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics: String,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
}

/// The addresses a running `receipts dev` serves, once bound.
#[derive(Debug, Clone)]
pub struct DevAddresses {
    pub ingest: SocketAddr,
    pub grpc: SocketAddr,
    pub rest: SocketAddr,
    pub metrics: SocketAddr,
    pub kafka: String,
}

/// An embedded broker on a thread of its own (its handle cannot move between threads); dropping
/// this stops it.
struct EmbeddedBroker {
    bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedBroker {
    fn start(topics: &TopicNames, partitions: i32) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let specs = topics.specs(partitions);
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let started = (|| -> anyhow::Result<MockCluster<'static, _>> {
                    let cluster = MockCluster::new(1).context("starting the embedded broker")?;
                    // The embedded broker has no admin API: topics are made through the mock itself.
                    for spec in &specs {
                        cluster
                            .create_topic(&spec.name, spec.partitions, 1)
                            .with_context(|| format!("creating topic {}", spec.name))?;
                    }
                    Ok(cluster)
                })();
                match started {
                    Ok(cluster) => {
                        let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                        let _ = stop_rx.recv();
                        drop(cluster);
                    }
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                    }
                }
            })?;
        let bootstrap = ready_rx
            .recv()
            .context("the embedded broker thread ended")??;
        Ok(EmbeddedBroker {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn bind(what: &str, address: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {what} on {address}"))
}

/// Empties a service's state directory, refusing anything that does not look like one.
fn reset_state(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if !dir.join("conf").exists() && !dir.join("db").exists() {
        bail!(
            "{} exists but is not a receipts state directory; refusing to empty it",
            dir.display()
        );
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))
}

/// Runs everything until `shutdown` is cancelled. `ready` receives the bound addresses.
pub async fn run(
    args: DevArgs,
    shutdown: CancellationToken,
    ready: impl FnOnce(&DevAddresses),
) -> anyhow::Result<()> {
    let topics = TopicNames::default();
    let (kafka, broker) = match &args.kafka {
        Some(servers) => (KafkaSettings::new(servers.clone()), None),
        None => {
            let broker = tokio::task::spawn_blocking({
                let topics = topics.clone();
                move || EmbeddedBroker::start(&topics, args.partitions)
            })
            .await??;
            (KafkaSettings::new(broker.bootstrap.clone()), Some(broker))
        }
    };
    let dirs = ["projector", "query"].map(|name| args.data_dir.join(name));
    if broker.is_some() {
        for dir in &dirs {
            reset_state(dir)?;
        }
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    // Topics: made by the embedded broker itself, or created here on a real one.
    let create_partitions = if broker.is_some() { 0 } else { args.partitions };
    let accounts = BTreeMap::from([(DEMO_ACCOUNT.to_owned(), Secret::new(DEMO_TOKEN))]);

    let ingest_listener = bind("ingest", &args.ingest).await?;
    let grpc_listener = bind("gRPC", &args.grpc).await?;
    let rest_listener = bind("REST", &args.rest).await?;
    let metrics_listener = bind("metrics", &args.metrics).await?;
    let addresses = DevAddresses {
        ingest: ingest_listener.local_addr()?,
        grpc: grpc_listener.local_addr()?,
        rest: rest_listener.local_addr()?,
        metrics: metrics_listener.local_addr()?,
        kafka: kafka.bootstrap_servers.clone(),
    };

    let ingest = receipts_ingest::config::IngestConfig {
        kafka: kafka.clone(),
        topics: topics.clone(),
        public_base_url: format!("http://{}", addresses.ingest),
        accounts: accounts.clone(),
        whatsapp: receipts_ingest::config::WhatsappConfig {
            verify_token: Secret::new(DEMO_WHATSAPP_VERIFY_TOKEN),
            app_secret: Secret::new(DEMO_WHATSAPP_SECRET),
        },
        smpp_connections: BTreeMap::from([(
            DEMO_SMPP_CONNECTION.to_owned(),
            Secret::new(DEMO_SMPP_TOKEN),
        )]),
        create_topics_partitions: create_partitions,
        metrics_listen: String::new(),
        ..Default::default()
    };
    let projector = receipts_projector::ProjectorConfig {
        kafka: kafka.clone(),
        topics: topics.clone(),
        data_dir: dirs[0].clone(),
        create_topics_partitions: create_partitions,
        metrics_listen: String::new(),
        ..Default::default()
    };
    let query = receipts_query::QueryConfig {
        kafka: kafka.clone(),
        topics: topics.clone(),
        data_dir: dirs[1].clone(),
        accounts,
        metrics_listen: String::new(),
        ..Default::default()
    };

    let registry = Metrics::new();
    let services = tokio::spawn({
        let (registry, shutdown) = (registry.clone(), shutdown.clone());
        async move {
            let (ingest, projector, query) = tokio::join!(
                receipts_ingest::run(ingest, ingest_listener, &registry, shutdown.clone()),
                receipts_projector::run(projector, &registry, shutdown.clone()),
                receipts_query::run(
                    query,
                    grpc_listener,
                    Some(rest_listener),
                    &registry,
                    shutdown.clone()
                ),
            );
            // One service failing takes the others down with it.
            shutdown.cancel();
            ingest.context("ingest")?;
            projector.context("projector")?;
            query.context("query")?;
            anyhow::Ok(())
        }
    });
    tokio::spawn(metrics::serve(
        metrics_listener,
        metrics::router(registry),
        shutdown.clone(),
    ));
    info!(kafka = %addresses.kafka, embedded = broker.is_some(), "receipts dev started");
    ready(&addresses);
    let result = services.await.context("the services task failed")?;
    drop(broker);
    result
}

/// What `receipts dev` prints once everything listens.
pub fn banner(addresses: &DevAddresses, embedded: bool) -> String {
    let broker = if embedded {
        "embedded (in memory; state starts empty on every run)"
    } else {
        "external"
    };
    format!(
        "receipts dev is running\n\
         \n  kafka      {kafka}  ({broker})\
         \n  ingest     http://{ingest}\
         \n  gRPC       {grpc}\
         \n  REST       http://{rest}/v1  (Twilio Conversations compatible)\
         \n  metrics    http://{metrics}/metrics\
         \n\n  account    {DEMO_ACCOUNT}\
         \n  auth token {DEMO_TOKEN}\
         \n\nTry:\
         \n  # register a WhatsApp recipient of a message, then report it read\
         \n  curl -s -u {DEMO_ACCOUNT}:{DEMO_TOKEN} http://{ingest}/v1/events -H 'content-type: application/json' -d '{{\"events\":[\
         {{\"eventId\":\"reg-1\",\"occurredAt\":\"2026-01-01T00:00:00Z\",\"receiptRegistered\":{{\"accountSid\":\"{DEMO_ACCOUNT}\",\"conversationSid\":\"CH00000000000000000000000000000001\",\"messageSid\":\"IM00000000000000000000000000000001\",\"participantSid\":\"MB00000000000000000000000000000001\",\"channel\":\"CHANNEL_WHATSAPP\",\"channelMessageId\":\"wamid.demo1\",\"expectedReceipts\":1}}}},\
         {{\"eventId\":\"read-1\",\"occurredAt\":\"2026-01-01T00:00:05Z\",\"statusReported\":{{\"channelMessageId\":\"wamid.demo1\",\"rawStatus\":\"read\",\"providerTimestamp\":\"2026-01-01T00:00:05Z\",\"source\":\"STATUS_SOURCE_WHATSAPP_CLOUD\"}}}}]}}'\
         \n  # the message's delivery summary over gRPC\
         \n  receipts get message CH00000000000000000000000000000001 IM00000000000000000000000000000001 --grpc {grpc}\
         \n  # realistic traffic from every provider format, then a check of every summary\
         \n  receipts simulate --ingest http://{ingest} --grpc {grpc} --conversations 20 --messages 10\n",
        kafka = addresses.kafka,
        ingest = addresses.ingest,
        grpc = addresses.grpc,
        rest = addresses.rest,
        metrics = addresses.metrics,
    )
}
