//! `receipts simulate`: realistic traffic through the ingest HTTP endpoints, then a check of
//! every message's summary against what the query API answers.
//!
//! Each message has one to four SMS or WhatsApp recipients (and some chat participants, who get
//! no receipts). Registrations go through the canonical batch endpoint; statuses come the way the
//! providers send them — Twilio status callbacks (signed), WhatsApp Cloud webhooks (signed) and
//! SMPP delivery receipts — shuffled across the whole run, so reports often arrive before their
//! registration and out of order, and about one in ten is sent twice.
//!
//! Layout: [`plan`] draws the traffic from the seed; this file sends it at the given rate and
//! checks the summaries.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use receipts_domain::DeliverySummary;
use receipts_proto::v1;
use tokio::sync::Semaphore;

use crate::demo::{
    DEMO_SMPP_CONNECTION, DEMO_SMPP_TOKEN, DEMO_WHATSAPP_PHONE_NUMBER_ID, DEMO_WHATSAPP_SECRET,
};
use crate::get::{self, Connection};

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Conversations to create.
    #[arg(long, default_value_t = 10)]
    pub conversations: u32,
    /// Messages per conversation.
    #[arg(long, default_value_t = 10)]
    pub messages: u32,
    /// HTTP requests per second sent to ingest.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Base URL of the ingest gateway.
    #[arg(long, env = "RECEIPTS_INGEST", default_value = "http://127.0.0.1:8080")]
    pub ingest: String,
    #[command(flatten)]
    pub connection: Connection,
    /// Random seed, to repeat a run exactly.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The WhatsApp app secret ingest checks signatures with.
    #[arg(long, default_value = DEMO_WHATSAPP_SECRET, hide_default_value = true)]
    pub whatsapp_secret: String,
    /// The business phone number id the WhatsApp statuses come from: one of the account's.
    #[arg(long, default_value = DEMO_WHATSAPP_PHONE_NUMBER_ID)]
    pub whatsapp_phone_number_id: String,
    /// The SMPP connection name and its bearer token.
    #[arg(long, default_value = DEMO_SMPP_CONNECTION)]
    pub smpp_connection: String,
    #[arg(long, default_value = DEMO_SMPP_TOKEN, hide_default_value = true)]
    pub smpp_token: String,
    /// How long to wait for the summaries to converge after the last request.
    #[arg(long, default_value_t = 60)]
    pub settle_secs: u64,
    /// No progress bar (for logs and tests).
    #[arg(long)]
    pub quiet: bool,
}

mod plan;

pub use plan::Plan;
use plan::Request;

async fn send(
    client: &reqwest::Client,
    args: &SimulateArgs,
    request: &Request,
) -> anyhow::Result<()> {
    let base = args.ingest.trim_end_matches('/');
    let account = &args.connection.account;
    let token = &args.connection.token;
    let response = match request {
        Request::Registrations(body) => {
            client
                .post(format!("{base}/v1/events"))
                .basic_auth(account, Some(token))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await?
        }
        Request::Twilio(form) => {
            let url = format!("{base}/v1/twilio/status");
            let signature = receipts_ingest::twilio::twilio_signature(token, &url, form);
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish();
            client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-twilio-signature", signature)
                .body(body)
                .send()
                .await?
        }
        Request::Whatsapp(body) => {
            let signature =
                receipts_ingest::whatsapp::hub_signature(&args.whatsapp_secret, body.as_bytes());
            client
                .post(format!("{base}/v1/whatsapp/webhook"))
                .header("content-type", "application/json")
                .header("x-hub-signature-256", signature)
                .body(body.clone())
                .send()
                .await?
        }
        Request::Smpp(text) => {
            client
                .post(format!("{base}/v1/smpp/{}/receipts", args.smpp_connection))
                .bearer_auth(&args.smpp_token)
                .header("content-type", "text/plain")
                .body(text.clone())
                .send()
                .await?
        }
    };
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("ingest answered {status}: {body}");
    }
    Ok(())
}

/// The outcome of a run: how many messages' summaries matched.
#[derive(Debug)]
pub struct Report {
    /// (conversation sid, message sid) of every simulated message.
    pub messages_sent: Vec<(String, String)>,
    pub requests: usize,
    pub messages: usize,
    pub matched: usize,
    pub mismatches: Vec<String>,
}

pub async fn run(
    args: SimulateArgs,
    out: &mut (dyn std::io::Write + Send),
) -> anyhow::Result<Report> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let plan = Plan::generate(
        &args.connection.account,
        args.conversations,
        args.messages,
        seed,
        &args.smpp_connection,
        &args.whatsapp_phone_number_id,
    );
    writeln!(
        out,
        "simulating {} conversations × {} messages: {} receipts, {} chat participants (no receipts), {} requests, seed {seed}",
        args.conversations,
        args.messages,
        plan.receipts,
        plan.chat_participants,
        plan.requests.len()
    )?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let progress = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(plan.requests.len() as u64)
    };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} requests {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let in_flight = Arc::new(Semaphore::new(16));
    let mut pace =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1))));
    let args = Arc::new(args);
    let mut tasks = tokio::task::JoinSet::new();
    for request in plan.requests.clone() {
        pace.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (client, args, progress) = (client.clone(), args.clone(), progress.clone());
        tasks.spawn(async move {
            let result = send(&client, &args, &request).await;
            drop(permit);
            progress.inc(1);
            result
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    progress.finish_and_clear();
    writeln!(
        out,
        "sent {} requests; waiting for the summaries",
        plan.requests.len()
    )?;

    let mut grpc = get::connect(&args.connection).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.settle_secs);
    let mut pending: Vec<_> = plan.expected.iter().collect();
    let mut mismatches = Vec::new();
    loop {
        mismatches.clear();
        let mut still = Vec::new();
        for entry @ ((conversation, message), (expected, counts)) in pending {
            let want = v1::DeliverySummary::from(&DeliverySummary::new(*expected, counts));
            let got = grpc
                .get_message_delivery(v1::GetMessageDeliveryRequest {
                    conversation_sid: conversation.clone(),
                    message_sid: message.clone(),
                })
                .await
                .ok()
                .and_then(|r| r.into_inner().delivery);
            if got.as_ref() != Some(&want) {
                mismatches.push(format!(
                    "{conversation}/{message}: expected {want:?}, got {got:?}"
                ));
                still.push(entry);
            }
        }
        pending = still;
        if pending.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let report = Report {
        messages_sent: plan.expected.keys().cloned().collect(),
        requests: plan.requests.len(),
        messages: plan.expected.len(),
        matched: plan.expected.len() - mismatches.len(),
        mismatches,
    };
    writeln!(
        out,
        "{}/{} message summaries match what the query API answers",
        report.matched, report.messages
    )?;
    for mismatch in report.mismatches.iter().take(10) {
        writeln!(out, "  mismatch: {mismatch}")?;
    }
    Ok(report)
}
