//! `receipts simulate`: realistic traffic through the ingest HTTP endpoints, then a check of
//! every message's summary against what the query API answers.
//!
//! Each message has one to four SMS or WhatsApp recipients (and some chat participants, who get
//! no receipts). Registrations go through the canonical batch endpoint; statuses come the way the
//! providers send them — Twilio status callbacks (signed), WhatsApp Cloud webhooks (signed) and
//! SMPP delivery receipts — shuffled across the whole run, so reports often arrive before their
//! registration and out of order, and about one in ten is sent twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use receipts_domain::{DeliveryStatus, DeliverySummary, StatusCounts, Timestamp};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Whatsapp,
    Twilio,
    Smpp,
}

/// One HTTP request to ingest.
#[derive(Debug, Clone)]
enum Request {
    Registrations(String),
    Twilio(Vec<(String, String)>),
    Whatsapp(String),
    Smpp(String),
}

/// What the run sent, and what the summaries must say at the end.
#[derive(Debug, Default)]
pub struct Plan {
    requests: Vec<Request>,
    /// (conversation, message) → (expected receipts, final statuses).
    expected: BTreeMap<(String, String), (u64, StatusCounts)>,
    pub receipts: usize,
    pub chat_participants: usize,
}

fn hex_id(rng: &mut StdRng) -> String {
    format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
}

fn rfc3339(unix: i64) -> String {
    Timestamp::from_unix_millis(unix * 1000).rfc3339()
}

/// YYMMDDhhmm in UTC, as SMPP receipts and Twilio's RawDlrDoneDate carry it.
fn yymmddhhmm(unix: i64) -> String {
    Timestamp::from_unix_millis(unix * 1000)
        .to_utc()
        .map(|t| t.format("%y%m%d%H%M").to_string())
        .unwrap_or_default()
}

impl Plan {
    pub fn generate(
        account: &str,
        conversations: u32,
        messages: u32,
        seed: u64,
        smpp_connection: &str,
        whatsapp_phone_number_id: &str,
    ) -> Plan {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut plan = Plan::default();
        let start = 1_767_225_600 + i64::from(rng.random_range(0..86_400u32)); // 2026-01-01 + up to a day
        for c in 0..conversations {
            let conversation = format!("CH{}", hex_id(&mut rng));
            for m in 0..messages {
                let message = format!("IM{}", hex_id(&mut rng));
                let recipients = rng.random_range(1..=4u32);
                plan.chat_participants += rng.random_range(0..=2usize);
                let sent_at = start + i64::from(c * messages + m) * 7;
                let mut registrations = Vec::new();
                let mut counts = StatusCounts::default();
                for _ in 0..recipients {
                    let participant = format!("MB{}", hex_id(&mut rng));
                    let route = match rng.random_range(0..10) {
                        0..=3 => Route::Whatsapp,
                        4..=7 => Route::Twilio,
                        _ => Route::Smpp,
                    };
                    let (channel, channel_message_id, smsc_id) = match route {
                        Route::Whatsapp => (
                            "CHANNEL_WHATSAPP",
                            format!("wamid.{}", hex_id(&mut rng)),
                            String::new(),
                        ),
                        Route::Twilio => (
                            "CHANNEL_SMS",
                            format!("SM{}", hex_id(&mut rng)),
                            String::new(),
                        ),
                        Route::Smpp => {
                            let id = format!("{:010}", rng.random::<u32>());
                            ("CHANNEL_SMS", format!("smpp:{smpp_connection}:{id}"), id)
                        }
                    };
                    registrations.push(serde_json::json!({
                        "eventId": format!("reg-{channel_message_id}"),
                        "occurredAt": rfc3339(sent_at),
                        "receiptRegistered": {
                            "accountSid": account, "conversationSid": conversation, "messageSid": message,
                            "messageIndex": m, "participantSid": participant, "channel": channel,
                            "channelMessageId": channel_message_id, "expectedReceipts": recipients,
                        }
                    }));
                    let (steps, last) = outcome(route, &mut rng);
                    counts.record(None, last);
                    plan.receipts += 1;
                    for (n, (raw, error)) in steps.into_iter().enumerate() {
                        let at = sent_at + 1 + n as i64 * 2;
                        let request = match route {
                            Route::Whatsapp => Request::Whatsapp(whatsapp_body(
                                whatsapp_phone_number_id,
                                &channel_message_id,
                                raw,
                                at,
                                error,
                            )),
                            Route::Twilio => {
                                let mut form = vec![
                                    ("AccountSid".to_owned(), account.to_owned()),
                                    ("MessageSid".to_owned(), channel_message_id.clone()),
                                    ("MessageStatus".to_owned(), raw.to_owned()),
                                    ("RawDlrDoneDate".to_owned(), yymmddhhmm(at)),
                                ];
                                if let Some(code) = error {
                                    form.push(("ErrorCode".to_owned(), code.to_string()));
                                }
                                Request::Twilio(form)
                            }
                            Route::Smpp => Request::Smpp(format!(
                                "id:{smsc_id} sub:001 dlvrd:{} submit date:{} done date:{} stat:{raw} err:{:03} text:hello",
                                if raw == "DELIVRD" { "001" } else { "000" },
                                yymmddhhmm(sent_at),
                                yymmddhhmm(at),
                                error.unwrap_or(0),
                            )),
                        };
                        // Providers resend: about one report in ten arrives twice.
                        if rng.random_bool(0.1) {
                            plan.requests.push(request.clone());
                        }
                        plan.requests.push(request);
                    }
                }
                plan.requests.push(Request::Registrations(
                    serde_json::json!({ "events": registrations }).to_string(),
                ));
                plan.expected.insert(
                    (conversation.clone(), message),
                    (u64::from(recipients), counts),
                );
            }
        }
        // Everything in any order: reports before registrations, delivered before sent.
        plan.requests.shuffle(&mut rng);
        plan
    }
}

/// The provider's words for one recipient's way, and the canonical status it ends in.
fn outcome(route: Route, rng: &mut StdRng) -> (Vec<(&'static str, Option<u32>)>, DeliveryStatus) {
    use DeliveryStatus::*;
    let roll = rng.random_range(0..100);
    match route {
        Route::Whatsapp => match roll {
            0..=64 => (
                vec![("sent", None), ("delivered", None), ("read", None)],
                Read,
            ),
            65..=84 => (vec![("sent", None), ("delivered", None)], Delivered),
            85..=89 => (vec![("sent", None)], Sent),
            _ => {
                let code = *[63016, 63024].choose(rng).unwrap_or(&63016);
                (vec![("failed", Some(code))], Failed)
            }
        },
        Route::Twilio => match roll {
            0..=74 => (
                vec![("queued", None), ("sent", None), ("delivered", None)],
                Delivered,
            ),
            75..=84 => (vec![("queued", None), ("sent", None)], Sent),
            85..=92 => {
                let code = *[30003, 30005, 30006].choose(rng).unwrap_or(&30003);
                (
                    vec![("sent", None), ("undelivered", Some(code))],
                    Undelivered,
                )
            }
            _ => {
                let code = *[30007, 30008].choose(rng).unwrap_or(&30007);
                (vec![("failed", Some(code))], Failed)
            }
        },
        Route::Smpp => match roll {
            0..=79 => (vec![("ENROUTE", None), ("DELIVRD", None)], Delivered),
            80..=89 => (vec![("UNDELIV", Some(1))], Undelivered),
            _ => (vec![("REJECTD", Some(11))], Failed),
        },
    }
}

fn whatsapp_body(
    phone_number_id: &str,
    id: &str,
    status: &str,
    at: i64,
    error: Option<u32>,
) -> String {
    let mut entry = serde_json::json!({
        "id": id, "status": status, "timestamp": at.to_string(), "recipient_id": "15551234567",
    });
    if let Some(code) = error {
        entry["errors"] = serde_json::json!([{ "code": code, "title": "simulated" }]);
    }
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "0", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "phone_number_id": phone_number_id },
            "statuses": [entry]
        }}]}]
    })
    .to_string()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smpp_and_twilio_dates_are_utc_minutes() {
        assert_eq!(yymmddhhmm(0), "7001010000");
        assert_eq!(yymmddhhmm(1_767_225_600 + 3_661), "2601010101");
        assert_eq!(yymmddhhmm(1_772_323_199), "2602282359");
    }

    #[test]
    fn a_plan_is_repeatable_and_excludes_chat_participants() {
        let a = Plan::generate("AC0123456789abcdef0123456789abcdef", 3, 4, 7, "smsc", "1");
        let b = Plan::generate("AC0123456789abcdef0123456789abcdef", 3, 4, 7, "smsc", "1");
        assert_eq!(a.requests.len(), b.requests.len());
        assert_eq!(a.expected.len(), 12);
        let receipts: u64 = a
            .expected
            .values()
            .map(|(_, counts)| counts.receipts())
            .sum();
        assert_eq!(receipts as usize, a.receipts);
        for (expected, counts) in a.expected.values() {
            assert_eq!(
                *expected,
                counts.receipts(),
                "total counts non-chat recipients only"
            );
        }
    }
}
