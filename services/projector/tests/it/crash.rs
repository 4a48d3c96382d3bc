//! Exactly-once state under SIGKILL: the projector binary is killed at random points while
//! records flow, restarted on the same data dir each time, and must end with exactly the state
//! and the updates a single uninterrupted run would have produced.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use receipts_proto::codec::Encoding;
use receipts_store::SledProjectorStore;

use crate::support::{Harness, Model, UpdateLog, workload};

const KILLS: usize = 5;

/// 20 000 channel messages over 2 000 conversations (≥ 100 000 events) go to four partitions
/// in paced chunks while the projector process is SIGKILLed five times, each time at a random
/// moment after it has visibly made progress, and restarted on the same sled dir. A last run
/// finishes the log. Then every channel message's stored state (registration, best report,
/// version) equals the model's, exactly the never-registered messages are parked, and
/// `receipt-updates` holds every version 1..=n of every receipt, each equal to the model's
/// change, with re-published duplicates byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_repeats_nothing() {
    let seed = seed();
    eprintln!("workload seed {seed} (set PROJECTOR_TEST_SEED to repeat it)");
    let harness = Arc::new(Harness::new(4).await);
    let events = workload(seed, 20_000, 2_000);
    assert!(events.len() >= 100_000, "{} events", events.len());
    let model = Model::of(&events);
    let dir = tempfile::tempdir().unwrap();
    let projector = ProjectorCommand::new(&harness, dir.path());
    let updates = UpdateLog::follow(harness.reader(&harness.topics.receipt_updates));

    // Paced, so that records arrive before, during and after every kill.
    let total = events.len();
    let producing = {
        let harness = harness.clone();
        tokio::spawn(async move {
            for chunk in events.chunks(2_000) {
                harness.produce(chunk, Encoding::Protobuf).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    let mut rng = StdRng::seed_from_u64(seed.rotate_left(17));
    for kill in 1..=KILLS {
        let mut running = projector.start();
        let before = updates.progress().records;
        if let Err(progress) = updates.more_than(before, Duration::from_secs(60)).await {
            running.fail(&format!(
                "run {kill} published nothing within a minute ({progress:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1_500))).await;
        running.kill();
        eprintln!(
            "killed run {kill} with {:?} of {} model changes read",
            updates.progress(),
            model.change_count()
        );
    }
    producing.await.expect("all events are produced");
    eprintln!("all {total} events produced");

    let mut last = projector.start();
    if let Err(progress) = updates
        .settle(
            model.change_count(),
            Duration::from_secs(3),
            Duration::from_secs(120),
        )
        .await
    {
        last.fail(&format!(
            "the last run did not publish the model's {} changes within two minutes ({progress:?})",
            model.change_count()
        ));
    }
    last.terminate();

    let store = SledProjectorStore::open(&projector.data_dir).unwrap();
    model.assert_stored(&store);
    model.assert_published(&updates.stop());
}

/// `PROJECTOR_TEST_SEED`, or a fixed one.
fn seed() -> u64 {
    std::env::var("PROJECTOR_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026)
}

/// How to start the projector binary for this test: the environment and a config file.
struct ProjectorCommand {
    env: Vec<(String, String)>,
    config_file: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
}

impl ProjectorCommand {
    /// Configured through `RECEIPTS_*` variables like a deployment, except for the librdkafka
    /// properties (names with dots), which only a file can set.
    fn new(harness: &Harness, dir: &Path) -> Self {
        let data_dir = dir.join("projector");
        let config = harness.config(&data_dir);
        let mut file = String::from("[kafka.properties]\n");
        for (name, value) in &config.kafka.properties {
            writeln!(file, "{name:?} = {value:?}").unwrap();
        }
        let config_file = dir.join("projector.toml");
        std::fs::write(&config_file, file).unwrap();
        let topics = &config.topics;
        let env = [
            ("KAFKA__BOOTSTRAP_SERVERS", config.kafka.bootstrap_servers),
            ("TOPICS__DELIVERY_EVENTS", topics.delivery_events.clone()),
            ("TOPICS__RECEIPT_UPDATES", topics.receipt_updates.clone()),
            (
                "TOPICS__DELIVERY_EVENTS_DLQ",
                topics.delivery_events_dlq.clone(),
            ),
            (
                "TOPICS__PROJECTOR_CHANGELOG",
                topics.projector_changelog.clone(),
            ),
            ("GROUP_ID", config.group_id),
            ("DATA_DIR", data_dir.display().to_string()),
            // Smaller batches than the default: more batch boundaries to be killed around.
            ("BATCH__MAX_RECORDS", "500".to_owned()),
            // The harness made the topics.
            ("CREATE_TOPICS_PARTITIONS", "0".to_owned()),
            // Empty disables the metrics endpoint.
            ("METRICS_LISTEN", String::new()),
        ]
        .into_iter()
        .map(|(key, value)| (format!("RECEIPTS_{key}"), value))
        .collect();
        ProjectorCommand {
            env,
            config_file,
            data_dir,
            log: dir.join("projector.log"),
        }
    }

    fn start(&self) -> RunningProjector {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_receipts-projector"));
        // Only this test's configuration, whatever the environment running the tests sets.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RECEIPTS_") {
                command.env_remove(name);
            }
        }
        let child = command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(&self.config_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the projector binary starts");
        RunningProjector {
            child,
            log: self.log.clone(),
        }
    }
}

/// A projector process; killed if the test fails while it runs.
struct RunningProjector {
    child: Child,
    log: PathBuf,
}

impl RunningProjector {
    /// SIGKILL. It must still have been running: an exit of its own would be a failure.
    fn kill(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            self.fail(&format!("the projector exited on its own ({status})"));
        }
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then it must finish its batch, store it and exit successfully.
    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed: {status}");
        match self.wait(Duration::from_secs(30)) {
            Some(status) if status.success() => {}
            Some(status) => self.fail(&format!("the projector stopped with {status}")),
            None => self.fail("the projector did not stop within 30 s of SIGTERM"),
        }
    }

    fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Fails the test with `why` and the end of the projector's log.
    fn fail(&self, why: &str) -> ! {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        panic!("{why}\n--- end of the projector log ---\n{tail}");
    }
}

impl Drop for RunningProjector {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
