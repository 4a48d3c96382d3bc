//! `receipts dev`: ingest, projector, query and dispatcher in one process, each with its own sled directory,
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
use std::sync::Arc;

use anyhow::{Context, bail};
use receipts_bus::{KafkaSettings, TopicNames};
use receipts_runtime::config::{OtlpProtocol, Secret};
use receipts_runtime::metrics::{self, Metrics};
use receipts_webhook::RetrySchedule;
use receipts_webhook::ssrf::AddressPolicy;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::sink::{self, SinkCounts};
use receipts_bus::embedded::EmbeddedBroker;

pub use crate::demo::*;

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
    /// Also run `receipts sink` and point the demo account's post-webhook at it, so every
    /// receipt change shows up as a signed onDeliveryUpdated webhook.
    #[arg(long)]
    pub webhook_sink: bool,
    /// Address of the webhook sink.
    #[arg(long, default_value = "127.0.0.1:8099")]
    pub sink: String,
    /// Point the demo account's onDeliveryUpdated webhook at this URL instead (a receiver of
    /// your own on this machine).
    #[arg(long, conflicts_with = "webhook_sink")]
    pub webhook_url: Option<String>,
    /// Export traces over OTLP to this collector: `http://127.0.0.1:4318` (HTTP/protobuf) or,
    /// with `--otlp-protocol grpc`, `http://127.0.0.1:4317`. The standard `OTEL_*` variables
    /// work as well. Off by default.
    #[arg(long)]
    pub otlp: Option<String>,
    /// The OTLP transport of `--otlp`: `http/protobuf` or `grpc`.
    #[arg(long, default_value = "http/protobuf")]
    pub otlp_protocol: OtlpProtocol,
    /// Print a line per webhook the sink receives.
    #[arg(skip = true)]
    pub print_webhooks: bool,
    /// The dispatcher's retry schedule (the service's default when not given).
    #[arg(skip)]
    pub webhook_retry: Option<RetrySchedule>,
}

impl DevArgs {
    /// Everything on the embedded broker and on ports the system picks, state in `data_dir`, no
    /// webhook sink: what tests and embedders start from.
    pub fn on_free_ports(data_dir: PathBuf) -> Self {
        DevArgs {
            data_dir,
            kafka: None,
            ingest: "127.0.0.1:0".into(),
            grpc: "127.0.0.1:0".into(),
            rest: "127.0.0.1:0".into(),
            metrics: "127.0.0.1:0".into(),
            partitions: 2,
            webhook_sink: false,
            sink: "127.0.0.1:0".into(),
            webhook_url: None,
            otlp: None,
            otlp_protocol: OtlpProtocol::default(),
            print_webhooks: false,
            webhook_retry: None,
        }
    }
}

/// The addresses a running `receipts dev` serves, once bound.
#[derive(Debug, Clone)]
pub struct DevAddresses {
    pub ingest: SocketAddr,
    pub grpc: SocketAddr,
    pub rest: SocketAddr,
    pub metrics: SocketAddr,
    pub kafka: String,
    /// The webhook sink and what it received, with `--webhook-sink`.
    pub sink: Option<(SocketAddr, Arc<SinkCounts>)>,
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
    run_with_metrics(args, Metrics::new(), shutdown, ready).await
}

/// [`run`], with every service registering its metrics in `registry`, which the caller can
/// inspect (the metrics endpoint serves the same registry).
pub async fn run_with_metrics(
    args: DevArgs,
    registry: Metrics,
    shutdown: CancellationToken,
    ready: impl FnOnce(&DevAddresses),
) -> anyhow::Result<()> {
    let topics = TopicNames::default();
    let (kafka, broker) = match &args.kafka {
        Some(servers) => (KafkaSettings::new(servers.clone()), None),
        None => {
            let specs = topics.specs(args.partitions);
            let broker =
                tokio::task::spawn_blocking(move || EmbeddedBroker::start(specs)).await??;
            (KafkaSettings::new(broker.bootstrap()), Some(broker))
        }
    };
    let dirs = ["projector", "query", "dispatcher"].map(|name| args.data_dir.join(name));
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
    let sink_listener = match args.webhook_sink {
        true => Some(bind("webhook sink", &args.sink).await?),
        false => None,
    };
    let sink_counts = Arc::new(SinkCounts::default());
    let addresses = DevAddresses {
        ingest: ingest_listener.local_addr()?,
        grpc: grpc_listener.local_addr()?,
        rest: rest_listener.local_addr()?,
        metrics: metrics_listener.local_addr()?,
        kafka: kafka.bootstrap_servers.clone(),
        sink: match &sink_listener {
            Some(listener) => Some((listener.local_addr()?, sink_counts.clone())),
            None => None,
        },
    };

    let ingest = receipts_ingest::config::IngestConfig {
        kafka: kafka.clone(),
        topics: topics.clone(),
        public_base_url: format!("http://{}", addresses.ingest),
        accounts: accounts.clone(),
        whatsapp: receipts_ingest::config::WhatsappConfig {
            verify_token: Secret::new(DEMO_WHATSAPP_VERIFY_TOKEN),
            app_secret: Secret::new(DEMO_WHATSAPP_SECRET),
            phone_numbers: BTreeMap::from([(
                DEMO_WHATSAPP_PHONE_NUMBER_ID.to_owned(),
                DEMO_ACCOUNT.to_owned(),
            )]),
        },
        smpp_connections: BTreeMap::from([(
            DEMO_SMPP_CONNECTION.to_owned(),
            receipts_ingest::config::SmppConnection {
                account: DEMO_ACCOUNT.to_owned(),
                token: Secret::new(DEMO_SMPP_TOKEN),
            },
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
    let secrets_key = dev_secrets_key(&args.data_dir)?;
    let dispatcher = receipts_dispatcher::DispatcherConfig {
        kafka: kafka.clone(),
        topics: topics.clone(),
        data_dir: dirs[2].clone(),
        accounts: accounts.clone(),
        webhook_secrets_key: secrets_key.clone(),
        // Everything runs on this machine: webhooks may go to loopback receivers.
        ssrf: AddressPolicy::allowing(vec!["127.0.0.0/8".parse()?, "::1/128".parse()?]),
        retry: args.webhook_retry.clone().unwrap_or_default(),
        create_topics_partitions: create_partitions,
        metrics_listen: String::new(),
        ..Default::default()
    };
    let query = receipts_query::QueryConfig {
        kafka: kafka.clone(),
        topics: topics.clone(),
        data_dir: dirs[1].clone(),
        accounts,
        webhook_secrets_key: secrets_key,
        metrics_listen: String::new(),
        ..Default::default()
    };

    // The webhook configuration is written before the dispatcher starts, so the configuration it
    // reads to its end before dispatching already holds it: no early change goes unannounced.
    let webhook_url = match (&addresses.sink, &args.webhook_url) {
        (Some((address, _)), _) => Some(format!("http://{address}{}", sink::PATH)),
        (None, url) => url.clone(),
    };
    if let Some(url) = webhook_url {
        if broker.is_none() {
            receipts_bus::topics::ensure_topics(&kafka, &topics.specs(args.partitions)).await?;
        }
        configure_webhook(&kafka, &topics, DEMO_ACCOUNT, &url).await?;
    }
    let services = tokio::spawn({
        let (registry, shutdown) = (registry.clone(), shutdown.clone());
        async move {
            let (ingest, projector, query, dispatcher) = tokio::join!(
                receipts_ingest::run(ingest, ingest_listener, &registry, shutdown.clone()),
                receipts_projector::run(projector, &registry, shutdown.clone()),
                receipts_query::run(
                    query,
                    grpc_listener,
                    Some(rest_listener),
                    &registry,
                    shutdown.clone()
                ),
                receipts_dispatcher::run(dispatcher, &registry, shutdown.clone()),
            );
            // One service failing takes the others down with it.
            shutdown.cancel();
            ingest.context("ingest")?;
            projector.context("projector")?;
            query.context("query")?;
            dispatcher.context("dispatcher")?;
            anyhow::Ok(())
        }
    });
    tokio::spawn(metrics::serve(
        metrics_listener,
        metrics::router(registry),
        shutdown.clone(),
    ));
    if let (Some(listener), Some((address, _))) = (sink_listener, &addresses.sink) {
        let url = format!("http://{address}{}", sink::PATH);
        let (lines, mut printed) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(sink::serve(
            listener,
            url.clone(),
            DEMO_TOKEN.to_owned(),
            sink_counts,
            lines,
            shutdown.clone(),
        ));
        let print = args.print_webhooks;
        tokio::spawn(async move {
            while let Some(line) = printed.recv().await {
                if print {
                    use std::io::Write;
                    let _ = writeln!(std::io::stdout(), "webhook {line}");
                }
            }
        });
    }
    info!(kafka = %addresses.kafka, embedded = broker.is_some(), "receipts dev started");
    ready(&addresses);
    let result = services.await.context("the services task failed")?;
    drop(broker);
    result
}

/// Points `account`'s post-webhook, filtered on onDeliveryUpdated, at `url`, by writing its
/// configuration record to `webhook-configs`.
pub async fn configure_webhook(
    kafka: &KafkaSettings,
    topics: &TopicNames,
    account: &str,
    url: &str,
) -> anyhow::Result<()> {
    use receipts_proto::codec::{self, Encoding};
    use receipts_proto::v1;
    let mut config = v1::WebhookConfig {
        account_sid: account.to_owned(),
        method: "POST".into(),
        filters: vec!["onDeliveryUpdated".into()],
        post_webhook_url: url.to_owned(),
        target: "webhook".into(),
        ..Default::default()
    };
    config.set_scope(v1::WebhookScope::Account);
    let key = receipts_proto::webhooks::webhook_key(&config);
    let payload = codec::encode(&config, Encoding::Protobuf);
    let publisher = receipts_bus::Publisher::new(kafka, "receipts-dev")?;
    let record = receipts_bus::Outgoing::new(&topics.webhook_configs, key, payload)
        .content_type(Encoding::Protobuf);
    publisher
        .send_within(&[record], Some(std::time::Duration::from_secs(30)))
        .await
        .context("configuring the webhook sink")?;
    Ok(())
}

/// The key sealing webhook signing secrets in `receipts dev`: drawn on the first start and kept
/// in the data directory, so the secrets on the topic still open after a restart.
fn dev_secrets_key(data_dir: &Path) -> anyhow::Result<Secret> {
    use base64::Engine;
    let path = data_dir.join("webhook-secrets.key");
    match std::fs::read_to_string(&path) {
        Ok(key) => return Ok(Secret::new(key.trim())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    }
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    std::io::Write::write_all(
        &mut file
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?,
        key.as_bytes(),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(Secret::new(key))
}

/// What `receipts dev` prints once everything listens.
/// `program` is how the user can run this binary again (its path, as commands to copy name it).
pub fn banner(addresses: &DevAddresses, embedded: bool, program: &str) -> String {
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
         \n  metrics    http://{metrics}/metrics{sink}\
         \n\n  account    {DEMO_ACCOUNT}\
         \n  auth token {DEMO_TOKEN}\
         \n\nTry:\
         \n  # register a WhatsApp recipient of a message, then report it read\
         \n  curl -s -u {DEMO_ACCOUNT}:{DEMO_TOKEN} http://{ingest}/v1/events -H 'content-type: application/json' -d '{{\"events\":[\
         {{\"eventId\":\"reg-1\",\"occurredAt\":\"2026-01-01T00:00:00Z\",\"receiptRegistered\":{{\"accountSid\":\"{DEMO_ACCOUNT}\",\"conversationSid\":\"CH00000000000000000000000000000001\",\"messageSid\":\"IM00000000000000000000000000000001\",\"participantSid\":\"MB00000000000000000000000000000001\",\"channel\":\"CHANNEL_WHATSAPP\",\"channelMessageId\":\"wamid.demo1\",\"expectedReceipts\":1}}}},\
         {{\"eventId\":\"read-1\",\"occurredAt\":\"2026-01-01T00:00:05Z\",\"statusReported\":{{\"channelMessageId\":\"wamid.demo1\",\"rawStatus\":\"read\",\"providerTimestamp\":\"2026-01-01T00:00:05Z\",\"source\":\"STATUS_SOURCE_WHATSAPP_CLOUD\"}}}}]}}'\
         \n  # the message's delivery summary over gRPC\
         \n  {program} get message CH00000000000000000000000000000001 IM00000000000000000000000000000001 --grpc {grpc}\
         \n  # realistic traffic from every provider format, then a check of every summary\
         \n  {program} simulate --ingest http://{ingest} --grpc {grpc} --conversations 20 --messages 10\n",
        kafka = addresses.kafka,
        ingest = addresses.ingest,
        grpc = addresses.grpc,
        rest = addresses.rest,
        metrics = addresses.metrics,
        sink = match &addresses.sink {
            Some((address, _)) => format!(
                "\n  webhooks   http://{address}{} (every onDeliveryUpdated is printed below)",
                sink::PATH
            ),
            None => String::new(),
        },
    )
}
