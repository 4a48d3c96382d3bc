//! A Kafka broker of the suite's own, run with `scripts/kafka.sh` on a free port with its state in
//! a temporary directory, so stopping it (scenario b) never touches the broker other tests share.
//! Dropping the guard stops it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

/// A topic's name, partition count and topic configs.
pub(crate) type TopicToCreate = (String, i32, Vec<(&'static str, String)>);

pub(crate) struct Broker {
    port: u16,
    state: PathBuf,
    script: PathBuf,
    running: bool,
}

impl Broker {
    /// Starts a broker with its state under `dir`, on a free port pair (client port and the
    /// controller port above it) in 40000–49999.
    pub(crate) fn start(dir: &Path) -> anyhow::Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka.sh");
        let mut broker = Broker {
            port: free_port_pair()?,
            state: dir.join("kafka"),
            script,
            running: false,
        };
        broker.run("start")?;
        broker.running = true;
        Ok(broker)
    }

    pub(crate) fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (controlled shutdown); its data stays for [`Broker::restart`].
    pub(crate) fn stop(&mut self) -> anyhow::Result<()> {
        self.running = false;
        self.run("stop")
    }

    /// Starts the stopped broker again on the same port and data; returns once it serves clients.
    pub(crate) fn restart(&mut self) -> anyhow::Result<()> {
        self.run("start")?;
        self.running = true;
        Ok(())
    }

    fn run(&self, command: &str) -> anyhow::Result<()> {
        let output = Command::new("bash")
            .arg(&self.script)
            .arg(command)
            .env("RECEIPTS_KAFKA_PORT", self.port.to_string())
            .env("RECEIPTS_KAFKA_STATE", &self.state)
            .env("RECEIPTS_KAFKA_HEAP_OPTS", "-Xms128m -Xmx384m")
            .stdin(Stdio::null())
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "scripts/kafka.sh {command} failed on port {}: {}",
            self.port,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap())
            .set("log_level", "3");
        config
    }

    /// Creates `topics` (name, partitions, extra topic configs); existing ones are left alone.
    pub(crate) async fn create_topics(&self, topics: &[TopicToCreate]) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(name, partitions, configs)| {
                configs.iter().fold(
                    NewTopic::new(name, *partitions, TopicReplication::Fixed(1)),
                    |topic, (key, value)| topic.set(key, value),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics(&new, &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => anyhow::bail!("creating {topic}: {code}"),
            }
        }
        Ok(())
    }

    /// The partition count of `topic`, `None` while it does not exist.
    pub(crate) fn partitions(&self, topic: &str) -> Option<i32> {
        let consumer: BaseConsumer = self.client_config().create().ok()?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()?;
        let topic = metadata.topics().first()?;
        if topic.error().is_some() || topic.partitions().is_empty() {
            return None;
        }
        Some(topic.partitions().len() as i32)
    }

    /// Low and high watermarks of every partition of `topic`.
    pub(crate) fn watermarks(
        &self,
        topic: &str,
        partitions: i32,
    ) -> anyhow::Result<Vec<(i64, i64)>> {
        let consumer: BaseConsumer = self.client_config().create()?;
        (0..partitions)
            .map(|p| Ok(consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?))
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.running {
            let _ = self.run("stop");
        }
    }
}

/// A port P with P and P+1 both free now (the broker's client and controller listeners).
fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..200 {
        let port = rand::random_range(40_000..49_999u16);
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 1) {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port pair in 40000-49999")
}

/// A port that is free now, for a child process to bind.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("a bound address").port()
}
