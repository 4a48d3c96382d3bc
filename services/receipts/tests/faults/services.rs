//! The service binaries as child processes: a fleet of projector, query and dispatcher instances,
//! each with its own TOML file, sled directory, ports and log file, kept running by a supervisor
//! that restarts an instance that exits on its own (as a container runtime's restart policy
//! would) and records why it exited.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::broker::free_port;
use crate::workload::{ACCOUNT, TOKEN};

/// Restarts of one instance after which the supervisor gives up on it.
const MAX_RESTARTS: u32 = 25;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Projector,
    Query,
    Dispatcher,
}

impl Kind {
    pub(crate) const ALL: [Kind; 3] = [Kind::Projector, Kind::Query, Kind::Dispatcher];

    fn binary(self) -> &'static str {
        match self {
            Kind::Projector => "receipts-projector",
            Kind::Query => "receipts-query",
            Kind::Dispatcher => "receipts-dispatcher",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Projector => "projector",
            Kind::Query => "query",
            Kind::Dispatcher => "dispatcher",
        })
    }
}

/// The binary of `kind` beside the `receipts` binary cargo built for this test.
fn binary_path(kind: Kind) -> anyhow::Result<PathBuf> {
    let receipts = Path::new(env!("CARGO_BIN_EXE_receipts"));
    let path = receipts.with_file_name(kind.binary());
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace --bins`, \
         with --release for a release test run; `cargo test --workspace --all-targets` builds them too)",
        path.display()
    );
    Ok(path)
}

/// Every topic of one scenario, under its own prefix.
#[derive(Debug, Clone)]
pub(crate) struct Topics {
    pub(crate) delivery_events: String,
    pub(crate) receipt_updates: String,
    pub(crate) webhook_configs: String,
    pub(crate) webhook_retries: String,
    pub(crate) webhook_dlq: String,
    pub(crate) delivery_events_dlq: String,
    pub(crate) projector_changelog: String,
    pub(crate) dispatcher_changelog: String,
    pub(crate) webhook_attempts: String,
}

impl Topics {
    pub(crate) fn with_prefix(prefix: &str) -> Self {
        Topics {
            delivery_events: format!("{prefix}.delivery-events.v1"),
            receipt_updates: format!("{prefix}.receipt-updates.v1"),
            webhook_configs: format!("{prefix}.webhook-configs.v1"),
            webhook_retries: format!("{prefix}.webhook-retries.v1"),
            webhook_dlq: format!("{prefix}.webhook-dlq.v1"),
            delivery_events_dlq: format!("{prefix}.delivery-events-dlq.v1"),
            projector_changelog: format!("{prefix}.projector-changelog.v1"),
            dispatcher_changelog: format!("{prefix}.dispatcher-changelog.v1"),
            webhook_attempts: format!("{prefix}.webhook-attempts.v1"),
        }
    }

    fn toml(&self) -> String {
        format!(
            "[topics]\ndelivery_events = \"{}\"\nreceipt_updates = \"{}\"\nwebhook_configs = \"{}\"\n\
             webhook_retries = \"{}\"\nwebhook_dlq = \"{}\"\ndelivery_events_dlq = \"{}\"\n\
             projector_changelog = \"{}\"\ndispatcher_changelog = \"{}\"\n\
             webhook_attempts = \"{}\"\n",
            self.delivery_events,
            self.receipt_updates,
            self.webhook_configs,
            self.webhook_retries,
            self.webhook_dlq,
            self.delivery_events_dlq,
            self.projector_changelog,
            self.dispatcher_changelog,
            self.webhook_attempts,
        )
    }
}

/// What all instances of one scenario share.
#[derive(Debug, Clone)]
pub(crate) struct Deployment {
    pub(crate) bootstrap: String,
    pub(crate) topics: Topics,
    pub(crate) projector_group: String,
    pub(crate) dispatcher_group: String,
    pub(crate) partitions: i32,
    pub(crate) dir: PathBuf,
}

impl Deployment {
    /// The TOML file of one instance. Groups notice a member that died within seconds.
    fn config(&self, kind: Kind, data_dir: &Path, metrics_port: u16, grpc_port: u16) -> String {
        let mut toml = format!(
            "data_dir = \"{}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n",
            data_dir.display()
        );
        match kind {
            Kind::Projector => toml.push_str(&format!(
                "group_id = \"{}\"\ncreate_topics_partitions = {}\n",
                self.projector_group, self.partitions
            )),
            Kind::Query => toml.push_str(&format!(
                "grpc_listen = \"127.0.0.1:{grpc_port}\"\nrest_listen = \"\"\n"
            )),
            Kind::Dispatcher => toml.push_str(&format!(
                "group_id = \"{}\"\ncreate_topics_partitions = {}\n\
                 attempt_timeout_ms = 3000\nendpoint_concurrency = 8\n",
                self.dispatcher_group, self.partitions
            )),
        }
        toml.push_str(&format!(
            "\n[kafka]\nbootstrap_servers = \"{}\"\n\n[kafka.properties]\n\
             \"session.timeout.ms\" = \"4000\"\n\"heartbeat.interval.ms\" = \"1000\"\n\n",
            self.bootstrap
        ));
        toml.push_str(&self.topics.toml());
        if kind != Kind::Projector {
            toml.push_str(&format!("\n[accounts]\n{ACCOUNT} = \"{TOKEN}\"\n"));
        }
        if kind == Kind::Dispatcher {
            // Enough attempts to outlast scenario e's outage: about four minutes of retries.
            let mut delays = vec![0, 250, 500, 1_000, 2_000];
            delays.extend([4_000; 60]);
            toml.push_str(&format!(
                "\n[retry]\ndelays_ms = {delays:?}\njitter = 0.2\nretry_after_max_ms = 4000\n\
                 max_delay_ms = 4000\n\n[ssrf]\nallow = [\"127.0.0.0/8\"]\n\n\
                 [breaker]\nfailure_threshold = 5\nopen_ms = 1000\n"
            ));
        }
        toml
    }
}

struct Instance {
    name: String,
    kind: Kind,
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    metrics_port: u16,
    grpc_port: u16,
    child: Option<Child>,
    /// Whether the supervisor keeps it running.
    wanted: bool,
    restarts: u32,
}

impl Instance {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = File::options().create(true).append(true).open(&self.log)?;
        let mut command = Command::new(&self.binary);
        command
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info,librdkafka=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Only the file configures the instance, whatever the test runner's environment holds.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RECEIPTS_") {
                command.env_remove(name);
            }
        }
        self.child = Some(command.spawn()?);
        Ok(())
    }

    /// The last lines of its log, to say why it exited.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }
}

/// Something that happened to an instance without the harness asking for it.
#[derive(Debug, Clone)]
pub(crate) struct Exit {
    pub(crate) instance: String,
    pub(crate) status: String,
    pub(crate) log_tail: String,
}

#[derive(Default)]
struct FleetState {
    instances: Vec<Instance>,
    exits: Vec<Exit>,
    next_number: u32,
    ports: HashSet<u16>,
}

/// The instances of one scenario. Dropping it SIGKILLs every one still running.
pub(crate) struct Fleet {
    deployment: Deployment,
    state: Arc<Mutex<FleetState>>,
    supervisor: Option<JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Fleet {
    pub(crate) fn new(deployment: Deployment) -> anyhow::Result<Self> {
        for kind in Kind::ALL {
            binary_path(kind)?;
        }
        let state: Arc<Mutex<FleetState>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let supervisor = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || supervise(&state, &stop))
        };
        Ok(Fleet {
            deployment,
            state,
            supervisor: Some(supervisor),
            stop,
        })
    }

    fn state(&self) -> MutexGuard<'_, FleetState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a new instance of `kind` with an empty data directory; returns its name.
    pub(crate) fn add(&self, kind: Kind) -> anyhow::Result<String> {
        let mut state = self.state();
        state.next_number += 1;
        let name = format!("{kind}-{}", state.next_number);
        let mut port = || {
            (0..100)
                .map(|_| free_port())
                .find(|port| state.ports.insert(*port))
                .ok_or_else(|| anyhow::anyhow!("no unused free port in 100 tries"))
        };
        let (metrics_port, grpc_port) = (port()?, port()?);
        let dir = self.deployment.dir.join(&name);
        std::fs::create_dir_all(&dir)?;
        let data_dir = dir.join("data");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            self.deployment
                .config(kind, &data_dir, metrics_port, grpc_port),
        )?;
        let mut instance = Instance {
            name: name.clone(),
            kind,
            binary: binary_path(kind)?,
            config,
            log: dir.join("log.txt"),
            metrics_port,
            grpc_port,
            child: None,
            wanted: true,
            restarts: 0,
        };
        instance.spawn()?;
        state.instances.push(instance);
        Ok(name)
    }

    /// SIGKILLs `name`; it stays down until [`Fleet::restart`].
    pub(crate) fn kill(&self, name: &str) -> anyhow::Result<()> {
        let mut state = self.state();
        let instance = find(&mut state.instances, name)?;
        if let Some(mut child) = instance.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Starts a killed `name` again on the same data directory and ports.
    pub(crate) fn restart(&self, name: &str) -> anyhow::Result<()> {
        let mut state = self.state();
        let instance = find(&mut state.instances, name)?;
        anyhow::ensure!(instance.child.is_none(), "{name} is still running");
        instance.spawn()
    }

    /// SIGTERMs `name` (graceful shutdown) and waits up to 30 s before SIGKILL.
    pub(crate) fn stop(&self, name: &str) -> anyhow::Result<()> {
        let child = {
            let mut state = self.state();
            let instance = find(&mut state.instances, name)?;
            instance.wanted = false;
            instance.child.take()
        };
        if let Some(mut child) = child {
            receipts::process::terminate(&mut child, Duration::from_secs(30));
        }
        Ok(())
    }

    /// The names of the running instances of `kind`, oldest first.
    pub(crate) fn running(&self, kind: Kind) -> Vec<String> {
        self.state()
            .instances
            .iter()
            .filter(|i| i.kind == kind && i.wanted)
            .map(|i| i.name.clone())
            .collect()
    }

    /// gRPC ports of the query instances that should be running.
    pub(crate) fn query_ports(&self) -> Vec<(String, u16)> {
        self.state()
            .instances
            .iter()
            .filter(|i| i.kind == Kind::Query && i.wanted)
            .map(|i| (i.name.clone(), i.grpc_port))
            .collect()
    }

    fn metrics_ports(&self) -> Vec<(String, u16)> {
        self.state()
            .instances
            .iter()
            .filter(|i| i.wanted)
            .map(|i| (i.name.clone(), i.metrics_port))
            .collect()
    }

    /// Waits until every running instance answers `/healthz` with 200 (ready), `within` at most;
    /// returns the ones that did not.
    pub(crate) async fn wait_healthy(&self, within: Duration) -> Vec<String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("an HTTP client");
        let deadline = Instant::now() + within;
        loop {
            let mut unhealthy = Vec::new();
            for (name, port) in self.metrics_ports() {
                let url = format!("http://127.0.0.1:{port}/healthz");
                // A service without a readiness endpoint counts as ready once it answers.
                let ok = match client.get(&url).send().await {
                    Ok(response) => {
                        response.status().is_success()
                            || response.status() == reqwest::StatusCode::NOT_FOUND
                    }
                    Err(_) => false,
                };
                if !ok {
                    unhealthy.push(name);
                }
            }
            if unhealthy.is_empty() || Instant::now() >= deadline {
                return unhealthy;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Exits nobody asked for, so far.
    pub(crate) fn exits(&self) -> Vec<Exit> {
        self.state().exits.clone()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
        let mut state = self.state();
        for instance in &mut state.instances {
            if let Some(mut child) = instance.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn find<'a>(instances: &'a mut [Instance], name: &str) -> anyhow::Result<&'a mut Instance> {
    instances
        .iter_mut()
        .find(|i| i.name == name)
        .ok_or_else(|| anyhow::anyhow!("no instance {name}"))
}

/// Restarts instances that exited on their own, a second later, and records each exit.
fn supervise(state: &Mutex<FleetState>, stop: &std::sync::atomic::AtomicBool) {
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            let mut exits = Vec::new();
            for instance in &mut state.instances {
                let Some(child) = instance.child.as_mut() else {
                    continue;
                };
                let Ok(Some(status)) = child.try_wait() else {
                    continue;
                };
                instance.child = None;
                exits.push(Exit {
                    instance: instance.name.clone(),
                    status: status.to_string(),
                    log_tail: instance.log_tail(),
                });
                if instance.wanted && instance.restarts < MAX_RESTARTS {
                    instance.restarts += 1;
                    std::thread::sleep(Duration::from_secs(1));
                    if let Err(error) = instance.spawn() {
                        exits.push(Exit {
                            instance: instance.name.clone(),
                            status: format!("could not restart: {error}"),
                            log_tail: String::new(),
                        });
                    }
                }
            }
            state.exits.extend(exits);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
