//! The five scenarios of issue 12, each on a broker, topics and instances of its own.
//!
//! A [`Run`] sets up one instance of each service against a fresh broker, points an account-wide
//! `onDeliveryUpdated` webhook at the local receiver, follows `receipt-updates`, and produces the
//! workload at a steady rate while the scenario's script injects its faults. After each fault it
//! measures how long the system takes to catch up with everything produced before the fault ended;
//! at the end it lets the system drain and checks it against the model.
//!
//! One file: the five scenarios are scripts over the one [`Run`] and its catch-up measure, and
//! they are read side by side, each fault beside the others.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rdkafka::producer::{FutureProducer, FutureRecord};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_proto::webhooks::webhook_key;
use tempfile::TempDir;

use crate::broker::Broker;
use crate::observe::{Behind, Cutoff, UpdateLog, behind};
use crate::receiver::Receiver;
use crate::services::{Deployment, Fleet, Kind, Topics};
use crate::stream::Stream;
use crate::verify::verify;
use crate::workload::{ACCOUNT, Model, Workload};
use crate::{Row, Scale, say};

const PARTITIONS: i32 = 4;

/// One fault and how the system came through it.
struct Fault {
    what: String,
    /// From the fault's end to caught up; `None` if that did not happen in time.
    recovery: Option<Duration>,
}

struct Run {
    scale: Scale,
    // Dropped in this order: the input, the processes, the broker, then the directory.
    stream: Option<Stream>,
    updates: UpdateLog,
    fleet: Fleet,
    receiver: Receiver,
    model: Arc<Mutex<Model>>,
    faults: Vec<Fault>,
    /// Attempts in flight at the faults that touched the dispatchers or their partitions.
    in_flight: u64,
    /// When each fault happened, and what it was.
    fault_log: Vec<(Instant, String)>,
    target: usize,
    notes: Vec<String>,
    broker: Broker,
    deployment: Deployment,
    dir: Option<TempDir>,
}

/// Which topics a scenario creates itself instead of leaving them to the services.
enum TopicSetup {
    ByServices,
    /// Input and updates with small segments and retention; changelogs compacted.
    ShortRetention,
}

impl Run {
    async fn start(
        scale: &Scale,
        scenario: &str,
        topics: TopicSetup,
        target: usize,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("receipts-faults-{scenario}-"))
            .tempdir()?;
        say(&format!("{scenario}: starting a broker"));
        let broker = tokio::task::block_in_place(|| Broker::start(dir.path()))?;
        let prefix = format!("faults-{scenario}-{:08x}", rand::random::<u32>());
        let deployment = Deployment {
            bootstrap: broker.bootstrap(),
            topics: Topics::with_prefix(&prefix),
            projector_group: format!("{prefix}-projector"),
            dispatcher_group: format!("{prefix}-dispatcher"),
            partitions: PARTITIONS,
            dir: dir.path().to_owned(),
        };
        let t = &deployment.topics;
        if let TopicSetup::ShortRetention = topics {
            let short = || {
                vec![
                    ("segment.ms", scale.segment_ms.to_string()),
                    ("retention.ms", scale.retention_ms.to_string()),
                ]
            };
            let compacted = || vec![("cleanup.policy", "compact".to_owned())];
            broker
                .create_topics(&[
                    (t.delivery_events.clone(), PARTITIONS, short()),
                    (t.receipt_updates.clone(), PARTITIONS, short()),
                    (t.webhook_configs.clone(), 1, compacted()),
                    (t.projector_changelog.clone(), PARTITIONS, compacted()),
                    (t.dispatcher_changelog.clone(), PARTITIONS, compacted()),
                ])
                .await?;
        }
        let fleet = Fleet::new(deployment.clone())?;
        fleet.add(Kind::Projector)?;
        // The projector creates the topics the others read.
        let deadline = Instant::now() + Duration::from_secs(60);
        for topic in [&t.delivery_events, &t.receipt_updates, &t.webhook_configs] {
            while broker.partitions(topic).is_none() {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the projector did not create {topic} within 60 s; exits: {:?}",
                    fleet.exits()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let receiver = Receiver::start().await?;
        configure_webhook(&broker, &t.webhook_configs, &receiver.url()).await?;
        fleet.add(Kind::Query)?;
        fleet.add(Kind::Dispatcher)?;
        let unhealthy = fleet.wait_healthy(Duration::from_secs(60)).await;
        anyhow::ensure!(
            unhealthy.is_empty(),
            "not healthy within 60 s: {unhealthy:?}"
        );
        let partitions = broker
            .partitions(&t.receipt_updates)
            .ok_or_else(|| anyhow::anyhow!("{} has no partitions", t.receipt_updates))?;
        let updates = UpdateLog::follow(broker.client_config(), &t.receipt_updates, partitions)?;
        Ok(Run {
            scale: scale.clone(),
            stream: None,
            updates,
            fleet,
            receiver,
            model: Arc::default(),
            faults: Vec::new(),
            in_flight: 0,
            fault_log: Vec::new(),
            target,
            notes: Vec::new(),
            broker,
            deployment,
            dir: Some(dir),
        })
    }

    fn produce(&mut self, seed: u64) -> anyhow::Result<()> {
        let stream = Stream::start(
            self.broker.client_config(),
            self.deployment.topics.delivery_events.clone(),
            Workload::new(seed, 64),
            self.scale.rate,
            self.model.clone(),
        )?;
        self.stream = Some(stream);
        Ok(())
    }

    fn produced(&self) -> usize {
        self.stream.as_ref().map_or(0, Stream::produced)
    }

    /// Waits until `fraction` of the target number of events was produced.
    async fn until_produced(&self, fraction: f64) {
        let want = (self.target as f64 * fraction) as usize;
        let patience =
            Duration::from_secs_f64(want as f64 / f64::from(self.scale.rate) * 2.0 + 60.0);
        let deadline = Instant::now() + patience;
        while self.produced() < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn cutoff(&self) -> Cutoff {
        Cutoff::of(&self.model.lock().unwrap_or_else(PoisonError::into_inner))
    }

    async fn behind(&self, cutoff: &mut Cutoff) -> Behind {
        behind(
            cutoff,
            &self.updates,
            &self.fleet.query_ports(),
            &self.receiver,
        )
        .await
    }

    /// Waits until the system caught up with `cutoff`, `within` at most; the time it took from
    /// the cutoff, or what was still missing.
    async fn catch_up(&self, cutoff: &mut Cutoff, within: Duration) -> Result<Duration, Behind> {
        let deadline = cutoff.at + within;
        loop {
            let behind = self.behind(cutoff).await;
            if behind.caught_up() {
                return Ok(cutoff.at.elapsed());
            }
            if Instant::now() >= deadline {
                return Err(behind);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Records a fault that ended now and waits for the system to catch up with it.
    async fn recovered(&mut self, what: impl Into<String>, mut cutoff: Cutoff) {
        let what = what.into();
        let recovery = match self.catch_up(&mut cutoff, self.scale.recover_within).await {
            Ok(took) => {
                say(&format!(
                    "  {what}: caught up in {:.1} s",
                    took.as_secs_f64()
                ));
                Some(took)
            }
            Err(behind) => {
                say(&format!(
                    "  {what}: not caught up within {} s: {behind}",
                    self.scale.recover_within.as_secs()
                ));
                self.notes.push(format!(
                    "after {what}: not caught up within {} s: {behind}",
                    self.scale.recover_within.as_secs()
                ));
                None
            }
        };
        self.faults.push(Fault { what, recovery });
    }

    /// Finishes the input, lets the system drain, and checks it.
    async fn finish(mut self, scenario: &str) -> anyhow::Result<Row> {
        self.until_produced(1.0).await;
        let stream = self
            .stream
            .take()
            .ok_or_else(|| anyhow::anyhow!("nothing was produced"))?;
        let reports = stream.finish().await?;
        let mut cutoff = self.cutoff();
        if let Err(behind) = self.catch_up(&mut cutoff, self.scale.drain_within).await {
            self.notes.push(format!(
                "the system did not drain within {} s: {behind}",
                self.scale.drain_within.as_secs()
            ));
        }
        // Late repeats and stragglers have a moment to show.
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The stream is done: nothing changes the model any more.
        let model = std::mem::take(&mut *self.model.lock().unwrap_or_else(PoisonError::into_inner));
        say(&format!(
            "{scenario}: checking {} receipts, {} webhook-firing changes",
            model.receipts().count(),
            model.firing_count()
        ));
        let queries = self.fleet.query_ports();
        let settled = {
            let (config, topic) = (
                self.broker.client_config(),
                self.deployment.topics.dispatcher_changelog.clone(),
            );
            tokio::task::spawn_blocking(move || crate::verify::settlements(config, &topic))
                .await??
        };
        let figures = verify(
            &model,
            &self.updates,
            &queries,
            &self.receiver,
            self.in_flight,
            &self.fault_log,
            &settled,
        )
        .await;
        let recovery = if self.faults.iter().any(|f| f.recovery.is_none()) {
            None
        } else {
            self.faults.iter().filter_map(|f| f.recovery).max()
        };
        let mut notes = self.notes.clone();
        notes.push(format!(
            "faults: {}",
            self.faults
                .iter()
                .map(|f| match f.recovery {
                    Some(d) => format!("{} {:.1} s", f.what, d.as_secs_f64()),
                    None => format!("{} not caught up", f.what),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ));
        notes.extend(figures.notes);
        for exit in self.fleet.exits() {
            notes.push(format!(
                "exit nobody asked for: {} ({}): {}",
                exit.instance, exit.status, exit.log_tail
            ));
        }
        let row = Row {
            scenario: scenario.to_owned(),
            reports,
            lost: figures.lost,
            double_counted: figures.double_counted,
            webhooks_lost: figures.webhooks_lost,
            resent_beyond_in_flight: figures.resent_beyond_in_flight,
            recovery,
            recovery_bound: self.scale.recover_within,
            notes,
            error: None,
            logs: None,
        };
        let mut row = row;
        if !row.clean()
            && let Some(dir) = self.dir.take()
        {
            row.logs = Some(dir.keep());
        }
        Ok(row)
    }
}

/// An account-wide `onDeliveryUpdated` webhook to the receiver, written to `webhook-configs` as
/// the query API's webhook configuration endpoints do.
async fn configure_webhook(broker: &Broker, topic: &str, url: &str) -> anyhow::Result<()> {
    let mut config = v1::WebhookConfig {
        account_sid: ACCOUNT.into(),
        method: "POST".into(),
        filters: vec!["onDeliveryUpdated".into()],
        post_webhook_url: url.into(),
        target: "webhook".into(),
        ..Default::default()
    };
    config.set_scope(v1::WebhookScope::Account);
    let producer: FutureProducer = broker.client_config().create()?;
    let key = webhook_key(&config);
    let payload = codec::encode(&config, Encoding::Protobuf);
    producer
        .send(
            FutureRecord::to(topic).key(&key).payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

/// a. kill -9 a random projector, query or dispatcher process ten times while the stream flows;
/// each is restarted at once on its data directory.
pub(crate) async fn kills(scale: &Scale) -> anyhow::Result<Row> {
    let mut run = Run::start(scale, "a", TopicSetup::ByServices, scale.kill_reports).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xa);
    let mut victims = [Kind::Projector, Kind::Query, Kind::Dispatcher].repeat(3);
    victims.push(Kind::ALL[rng.random_range(0..3)]);
    victims.shuffle(&mut rng);
    run.produce(0xa)?;
    for (i, kind) in victims.into_iter().enumerate() {
        run.until_produced((i as f64 + 1.0) / 11.0).await;
        let instances = run.fleet.running(kind);
        let victim = instances[rng.random_range(0..instances.len())].clone();
        let (in_flight, arrived) = (run.receiver.in_flight(), run.receiver.requests());
        run.fault_log
            .push((Instant::now(), format!("kill -9 {kind}")));
        run.fleet.kill(&victim)?;
        if kind == Kind::Dispatcher {
            // In flight at the kill: those in flight just before it and those that arrived
            // until the process was gone.
            run.in_flight += (in_flight + run.receiver.requests() - arrived) as u64;
        }
        run.fleet.restart(&victim)?;
        let cutoff = run.cutoff();
        say(&format!(
            "a: kill -9 {victim} ({} events produced)",
            run.produced()
        ));
        run.recovered(format!("kill -9 {victim}"), cutoff).await;
    }
    run.finish("a. kill -9 x10").await
}

/// b. the broker stopped (controlled shutdown) and started again while the stream flows.
pub(crate) async fn broker_restart(scale: &Scale) -> anyhow::Result<Row> {
    let mut run = Run::start(scale, "b", TopicSetup::ByServices, scale.reports).await?;
    run.produce(0xb)?;
    run.until_produced(0.3).await;
    run.receiver.reset_peak();
    say(&format!(
        "b: stopping the broker for {} s ({} events produced)",
        scale.outage.as_secs(),
        run.produced()
    ));
    let stopped = Instant::now();
    run.fault_log.push((stopped, "broker stopped".into()));
    tokio::task::block_in_place(|| run.broker.stop())?;
    tokio::time::sleep(scale.outage.saturating_sub(stopped.elapsed())).await;
    tokio::task::block_in_place(|| run.broker.restart())?;
    let cutoff = run.cutoff();
    run.fault_log.push((Instant::now(), "broker back".into()));
    // Stopping and starting take seconds of their own: clients see the broker away longer.
    let away = stopped.elapsed().as_secs_f64();
    say(&format!("b: broker back after {away:.0} s"));
    run.recovered(format!("broker away {away:.0} s"), cutoff)
        .await;
    run.in_flight += run.receiver.peak_in_flight() as u64;
    run.finish(&format!(
        "b. broker stopped {} s (away {away:.0} s)",
        scale.outage.as_secs()
    ))
    .await
}

/// c. every service scaled from one instance to three (fresh data directories) and back to one
/// (the two oldest stopped gracefully, so the one left is one that joined mid-stream).
pub(crate) async fn scaling(scale: &Scale) -> anyhow::Result<Row> {
    let mut run = Run::start(scale, "c", TopicSetup::ByServices, scale.reports).await?;
    run.produce(0xc)?;
    run.until_produced(0.25).await;
    say(&format!(
        "c: scaling 1 -> 3 ({} events produced)",
        run.produced()
    ));
    run.receiver.reset_peak();
    run.fault_log.push((Instant::now(), "scale 1 -> 3".into()));
    for kind in Kind::ALL {
        run.fleet.add(kind)?;
        run.fleet.add(kind)?;
    }
    let cutoff = run.cutoff();
    run.recovered("scale 1 -> 3", cutoff).await;
    run.in_flight += run.receiver.peak_in_flight() as u64;
    run.until_produced(0.6).await;
    say(&format!(
        "c: scaling 3 -> 1 ({} events produced)",
        run.produced()
    ));
    run.receiver.reset_peak();
    run.fault_log.push((Instant::now(), "scale 3 -> 1".into()));
    for kind in Kind::ALL {
        for name in run.fleet.running(kind).into_iter().take(2) {
            tokio::task::block_in_place(|| run.fleet.stop(&name))?;
        }
    }
    let cutoff = run.cutoff();
    run.recovered("scale 3 -> 1", cutoff).await;
    run.in_flight += run.receiver.peak_in_flight() as u64;
    run.finish("c. scale 1 -> 3 -> 1").await
}

/// d. after retention deleted the oldest segments of `delivery-events` and `receipt-updates`,
/// fresh instances (empty data directories) take over: first they join (partitions move to
/// them), then the original instances stop (every partition is on a fresh instance).
pub(crate) async fn fresh_instance_after_retention(scale: &Scale) -> anyhow::Result<Row> {
    let mut run = Run::start(scale, "d", TopicSetup::ShortRetention, scale.reports).await?;
    run.produce(0xd)?;
    let topics = run.deployment.topics.clone();
    // The broker's retention task first runs 30 s after it started, then every 5 minutes.
    say("d: waiting for retention to delete old segments");
    let deadline = Instant::now() + Duration::from_secs(120);
    let trimmed = loop {
        let events = run.broker.watermarks(&topics.delivery_events, PARTITIONS)?;
        let updates = run.broker.watermarks(&topics.receipt_updates, PARTITIONS)?;
        if events.iter().chain(&updates).all(|(low, _)| *low > 0) {
            break Some((events, updates));
        }
        if Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let Some((events, updates)) = trimmed else {
        anyhow::bail!(
            "retention removed nothing from every partition within 120 s: not a test of d"
        );
    };
    run.notes.push(format!(
        "retention moved the log start of delivery-events to {:?} and of receipt-updates to {:?} (of {:?} / {:?})",
        events.iter().map(|w| w.0).collect::<Vec<_>>(),
        updates.iter().map(|w| w.0).collect::<Vec<_>>(),
        events.iter().map(|w| w.1).collect::<Vec<_>>(),
        updates.iter().map(|w| w.1).collect::<Vec<_>>(),
    ));
    let old: Vec<String> = Kind::ALL
        .iter()
        .flat_map(|&k| run.fleet.running(k))
        .collect();
    say(&format!(
        "d: fresh instances join ({} events produced)",
        run.produced()
    ));
    run.receiver.reset_peak();
    run.fault_log
        .push((Instant::now(), "fresh instances joined".into()));
    for kind in Kind::ALL {
        run.fleet.add(kind)?;
    }
    let cutoff = run.cutoff();
    run.recovered("fresh instances joined", cutoff).await;
    run.in_flight += run.receiver.peak_in_flight() as u64;
    say(&format!(
        "d: the original instances stop ({} events produced)",
        run.produced()
    ));
    run.receiver.reset_peak();
    run.fault_log
        .push((Instant::now(), "original instances stopped".into()));
    for name in &old {
        tokio::task::block_in_place(|| run.fleet.stop(name))?;
    }
    let cutoff = run.cutoff();
    run.recovered("original instances stopped", cutoff).await;
    run.in_flight += run.receiver.peak_in_flight() as u64;
    run.finish("d. fresh instance after retention").await
}

/// e. the webhook receiver down (port closed), then answering 500 and 429 in turn, then 200.
pub(crate) async fn receiver_outage(scale: &Scale) -> anyhow::Result<Row> {
    let mut run = Run::start(scale, "e", TopicSetup::ByServices, scale.reports).await?;
    run.produce(0xe)?;
    run.until_produced(0.25).await;
    say(&format!(
        "e: receiver down for {} s ({} events produced)",
        scale.receiver_down.as_secs(),
        run.produced()
    ));
    run.in_flight += run.receiver.in_flight() as u64;
    run.fault_log.push((Instant::now(), "receiver down".into()));
    run.receiver.down().await;
    tokio::time::sleep(scale.receiver_down).await;
    run.receiver.up().await?;
    run.receiver.answer_failing();
    say(&format!(
        "e: receiver answers 500 and 429 for {} s",
        scale.receiver_failing.as_secs()
    ));
    tokio::time::sleep(scale.receiver_failing).await;
    run.receiver.answer_ok();
    let cutoff = run.cutoff();
    run.recovered("receiver back", cutoff).await;
    run.finish(&format!(
        "e. receiver down {} s, 500/429 {} s",
        scale.receiver_down.as_secs(),
        scale.receiver_failing.as_secs()
    ))
    .await
}
