//! The process-level fault suite (issue 12, DESIGN §4a and §5): the real `receipts-projector`,
//! `receipts-query` and `receipts-dispatcher` binaries as child processes against a real Kafka
//! broker of the suite's own, killed, scaled and cut off for real, while a steady stream of
//! registrations and status reports flows. Every scenario is checked against a model of its input
//! (the domain merge folded over the events as produced) and the suite prints one table:
//!
//! `scenario | reports | lost | double-counted | webhooks lost |
//! webhooks re-sent beyond in-flight | seconds to recover`
//!
//! Every figure but the recovery time must be zero. Sizes: `RECEIPTS_FAULT_SCALE=ci` (the
//! default, a few minutes), `full` (the documented size: 100 000 reports at 500 a second under ten
//! kills, a 30 s broker outage, a 60 s receiver outage), or a number of reports for scenario a (the
//! others get a third of it). `RECEIPTS_FAULT_SCENARIOS=a,c` runs only some.
//!
//! Layout: [`broker`] the suite's Kafka; [`services`] the processes and their supervisor;
//! [`workload`] the input and the model; [`stream`] the producer; [`receiver`] the webhook
//! subscriber; [`observe`] what the system shows and whether it caught up; [`verify`] the final
//! checks; [`scenarios`] a–e.

mod broker;
mod observe;
mod receiver;
mod scenarios;
mod services;
mod stream;
mod verify;
mod workload;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How big each scenario is.
#[derive(Debug, Clone)]
pub(crate) struct Scale {
    pub(crate) name: String,
    /// Events produced in scenario a, and in each of the others.
    pub(crate) kill_reports: usize,
    pub(crate) reports: usize,
    /// Events per second.
    pub(crate) rate: u32,
    /// Scenario b: how long the broker is away.
    pub(crate) outage: Duration,
    /// Scenario e: how long the receiver's port is closed, then how long it answers 500/429.
    pub(crate) receiver_down: Duration,
    pub(crate) receiver_failing: Duration,
    /// Scenario d: the topic settings that let retention delete the oldest records.
    pub(crate) segment_ms: u64,
    pub(crate) retention_ms: u64,
    /// How long the suite waits for the system to catch up after a fault, and to drain at the end.
    pub(crate) recover_within: Duration,
    pub(crate) drain_within: Duration,
}

impl Scale {
    fn ci() -> Self {
        Scale {
            name: "ci".into(),
            kill_reports: 12_000,
            reports: 6_000,
            rate: 300,
            outage: Duration::from_secs(10),
            receiver_down: Duration::from_secs(10),
            receiver_failing: Duration::from_secs(6),
            segment_ms: 1_000,
            retention_ms: 8_000,
            recover_within: Duration::from_secs(45),
            drain_within: Duration::from_secs(60),
        }
    }

    fn full() -> Self {
        Scale {
            name: "full".into(),
            kill_reports: 100_000,
            reports: 30_000,
            rate: 500,
            outage: Duration::from_secs(30),
            receiver_down: Duration::from_secs(60),
            receiver_failing: Duration::from_secs(20),
            segment_ms: 1_000,
            retention_ms: 8_000,
            recover_within: Duration::from_secs(180),
            drain_within: Duration::from_secs(600),
        }
    }

    fn from_env() -> Self {
        match std::env::var("RECEIPTS_FAULT_SCALE").as_deref() {
            Err(_) | Ok("" | "ci") => Scale::ci(),
            Ok("full") => Scale::full(),
            Ok(n) => {
                let reports: usize = n.parse().unwrap_or_else(|_| {
                    panic!(
                        "RECEIPTS_FAULT_SCALE must be ci, full or a number of reports, not {n:?}"
                    )
                });
                Scale {
                    name: format!("{reports} reports"),
                    kill_reports: reports,
                    reports: (reports / 3).max(1_000),
                    ..Scale::ci()
                }
            }
        }
    }
}

/// One line of the table.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) reports: usize,
    pub(crate) lost: u64,
    pub(crate) double_counted: u64,
    pub(crate) webhooks_lost: u64,
    pub(crate) resent_beyond_in_flight: u64,
    /// The longest time from a fault's end to caught up; `None` if a fault was not caught up
    /// within `recovery_bound`.
    pub(crate) recovery: Option<Duration>,
    pub(crate) recovery_bound: Duration,
    pub(crate) notes: Vec<String>,
    /// Set when the scenario could not be run to its end.
    pub(crate) error: Option<String>,
    /// Where its processes' logs were kept.
    pub(crate) logs: Option<PathBuf>,
}

impl Row {
    fn failed(scenario: &str, error: &anyhow::Error) -> Self {
        Row {
            scenario: scenario.to_owned(),
            reports: 0,
            lost: 0,
            double_counted: 0,
            webhooks_lost: 0,
            resent_beyond_in_flight: 0,
            recovery: None,
            recovery_bound: Duration::ZERO,
            notes: Vec::new(),
            error: Some(format!("{error:#}")),
            logs: None,
        }
    }

    /// Zero everywhere but the recovery time.
    pub(crate) fn clean(&self) -> bool {
        self.error.is_none()
            && self.lost == 0
            && self.double_counted == 0
            && self.webhooks_lost == 0
            && self.resent_beyond_in_flight == 0
    }
}

/// Progress and results on the terminal even when the test harness captures output.
pub(crate) fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "faults: {line}");
}

fn table(scale: &Scale, rows: &[Row]) -> String {
    let header = [
        "scenario",
        "reports",
        "lost",
        "double-counted",
        "webhooks lost",
        "webhooks re-sent beyond in-flight",
        "seconds to recover",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            if let Some(error) = &row.error {
                let mut cells = vec![
                    row.scenario.clone(),
                    format!("did not run to its end: {error}"),
                ];
                cells.resize(header.len(), String::new());
                return cells;
            }
            vec![
                row.scenario.clone(),
                row.reports.to_string(),
                row.lost.to_string(),
                row.double_counted.to_string(),
                row.webhooks_lost.to_string(),
                row.resent_beyond_in_flight.to_string(),
                match row.recovery {
                    Some(d) => format!("{:.1}", d.as_secs_f64()),
                    None => format!("not within {}", row.recovery_bound.as_secs()),
                },
            ]
        })
        .collect();
    let mut out = format!("\nfault suite, size {} \n\n", scale.name);
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for row in &cells {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    for row in rows {
        let _ = writeln!(out, "\n{}:", row.scenario);
        for note in &row.notes {
            let _ = writeln!(out, "  - {note}");
        }
        if let Some(logs) = &row.logs {
            let _ = writeln!(out, "  - process logs kept in {}", logs.display());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_loses_nothing_and_repeats_nothing() {
    let scale = Scale::from_env();
    let selected = std::env::var("RECEIPTS_FAULT_SCENARIOS").unwrap_or_else(|_| "a,b,c,d,e".into());
    let started = Instant::now();
    let mut rows = Vec::new();
    for scenario in selected.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let began = Instant::now();
        say(&format!("scenario {scenario} ({} size)", scale.name));
        let result = match scenario {
            "a" => scenarios::kills(&scale).await,
            "b" => scenarios::broker_restart(&scale).await,
            "c" => scenarios::scaling(&scale).await,
            "d" => scenarios::fresh_instance_after_retention(&scale).await,
            "e" => scenarios::receiver_outage(&scale).await,
            other => panic!("RECEIPTS_FAULT_SCENARIOS names an unknown scenario {other:?}"),
        };
        let row = result.unwrap_or_else(|error| Row::failed(scenario, &error));
        say(&format!(
            "scenario {scenario} done in {:.0} s: {}",
            began.elapsed().as_secs_f64(),
            if row.clean() { "clean" } else { "FAILED" }
        ));
        rows.push(row);
    }
    let table = table(&scale, &rows);
    say(&format!(
        "{table}\nwhole suite: {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.clean())
        .map(|r| r.scenario.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "scenarios with figures other than zero: {failed:?}{table}"
    );
}
