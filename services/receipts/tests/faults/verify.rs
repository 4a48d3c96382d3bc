//! The checks after a scenario drained: everything the query instances serve, everything
//! published on `receipt-updates` and every webhook received, each against the model.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use receipts_domain::DeliverySummary;
use receipts_proto::v1;

use crate::observe::{QueryClient, UpdateLog, query_client};
use crate::receiver::Receiver;
use crate::workload::Model;

/// The figures of one scenario, and what they are made of.
#[derive(Debug, Default)]
pub(crate) struct Figures {
    pub(crate) lost: u64,
    pub(crate) double_counted: u64,
    pub(crate) webhooks_lost: u64,
    pub(crate) resent_beyond_in_flight: u64,
    pub(crate) notes: Vec<String>,
}

/// When each delivery was first settled (delivered, dead-lettered or dropped) in the dispatcher
/// changelog, by idempotency token: the unix millis of its first `t/{token}` record saying so.
pub(crate) fn settlements(
    mut config: rdkafka::ClientConfig,
    topic: &str,
) -> anyhow::Result<HashMap<String, i64>> {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let consumer: BaseConsumer = config
        .set("group.id", "faults-settlements")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in &partitions {
        assignment.add_partition_offset(topic, *partition, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut settled: HashMap<String, i64> = HashMap::new();
    let mut at_end = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while at_end.len() < partitions.len() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the dispatcher changelog was not read to its end"
        );
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => {
                let (Some(key), Some(value)) = (message.key(), message.payload()) else {
                    continue;
                };
                let Some(token) = key.strip_prefix(b"t/") else {
                    continue;
                };
                if value == u32::MAX.to_be_bytes() {
                    let at = message.timestamp().to_millis().unwrap_or(i64::MAX);
                    let entry = settled
                        .entry(String::from_utf8_lossy(token).into_owned())
                        .or_insert(at);
                    *entry = (*entry).min(at);
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(error)) => anyhow::bail!("reading the dispatcher changelog: {error}"),
            None => {}
        }
    }
    Ok(settled)
}

/// Checks every query instance in `queries`, the update log and the receiver against `model`.
/// `in_flight_bound` is the number of attempts the receiver had open at the faults; `settled`
/// says when each delivery's outcome became durable in the dispatcher changelog.
pub(crate) async fn verify(
    model: &Model,
    updates: &UpdateLog,
    queries: &[(String, u16)],
    receiver: &Receiver,
    in_flight_bound: u64,
    fault_log: &[(Instant, String)],
    settled: &HashMap<String, i64>,
) -> Figures {
    let mut figures = Figures::default();
    check_updates(model, updates, &mut figures);
    for (name, port) in queries {
        match query_client(*port).await {
            Ok(client) => check_query(name, client, model, &mut figures).await,
            Err(error) => {
                let receipts = model.receipts().count() as u64;
                figures.lost += receipts;
                figures.notes.push(format!(
                    "{name}: unreachable ({error}), all {receipts} receipts lost"
                ));
            }
        }
    }
    check_webhooks(
        model,
        receiver,
        in_flight_bound,
        fault_log,
        settled,
        &mut figures,
    );
    figures
}

/// `receipt-updates` holds, per receipt, versions 1..=n of the model, each equal to the model's
/// change of that version, and nothing beyond.
fn check_updates(model: &Model, updates: &UpdateLog, figures: &mut Figures) {
    let record = updates.record();
    let (mut gaps, mut wrong, mut beyond, mut conflicting, mut repeats) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut example = None;
    for (sid, changes) in model.receipts() {
        let published = record.by_receipt.get(sid);
        let mut missing = false;
        let mut differs = false;
        for change in changes {
            match published.and_then(|p| p.get(&change.receipt.version)) {
                None => missing = true,
                Some(p) => {
                    differs |= p.change != *change;
                    conflicting += u64::from(p.conflicting);
                    repeats += u64::from(p.repeats);
                }
            }
        }
        let n = changes.len() as u64;
        let extra = published.map_or(0, |p| p.range(n + 1..).count());
        gaps += u64::from(missing);
        wrong += u64::from(differs && !missing);
        beyond += u64::from(extra > 0);
        if (missing || differs || extra > 0) && example.is_none() {
            let seen: Vec<u64> = published
                .map(|p| p.keys().copied().collect())
                .unwrap_or_default();
            example = Some(format!("{sid}: model v1..=v{n}, published {seen:?}"));
        }
    }
    let known: HashSet<_> = model.receipts().map(|(sid, _)| sid).collect();
    let unknown = record
        .by_receipt
        .keys()
        .filter(|sid| !known.contains(sid))
        .count() as u64;
    figures.lost += gaps + wrong;
    figures.double_counted += beyond + unknown;
    figures.notes.push(format!(
        "receipt-updates: {} records; receipts with a missing version {gaps}, a version unlike the model {wrong}, \
         versions beyond the model {beyond}, unknown {unknown}; repeated records {repeats} ({conflicting} with other content)",
        record.records
    ));
    if let Some(example) = example {
        figures
            .notes
            .push(format!("receipt-updates e.g. {example}"));
    }
    if !record.errors.is_empty() {
        figures.notes.push(format!(
            "receipt-updates reader errors: {:?}",
            record.errors
        ));
    }
}

async fn check_query(name: &str, mut client: QueryClient, model: &Model, figures: &mut Figures) {
    let summaries = model.summaries();
    let mut by_conversation: HashMap<&str, Vec<(&str, &DeliverySummary)>> = HashMap::new();
    for ((conversation, message), summary) in &summaries {
        by_conversation
            .entry(conversation)
            .or_default()
            .push((message, summary));
    }
    // Summaries: every message of every conversation, paged.
    let (mut short, mut excess, mut missing_messages, mut errors) = (0u64, 0u64, 0u64, 0u64);
    for (conversation, messages) in &by_conversation {
        let mut served: HashMap<String, v1::DeliverySummary> = HashMap::new();
        let mut page_token = String::new();
        for _ in 0..10_000 {
            let request = v1::ListConversationMessagesRequest {
                conversation_sid: (*conversation).to_owned(),
                order: v1::Order::Asc.into(),
                page_size: 100,
                page_token: page_token.clone(),
            };
            match client.list_conversation_messages(request).await {
                Ok(page) => {
                    let page = page.into_inner();
                    for message in page.messages {
                        served.insert(message.message_sid, message.delivery.unwrap_or_default());
                    }
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    page_token = page.next_page_token;
                }
                Err(status) if status.code() == tonic::Code::NotFound => break,
                Err(_) => {
                    errors += 1;
                    break;
                }
            }
        }
        for (message, expected) in messages {
            let Some(got) = served.get(*message) else {
                missing_messages += 1;
                continue;
            };
            let pairs = [
                (got.total, expected.total),
                (got.sent_count, expected.sent),
                (got.delivered_count, expected.delivered),
                (got.read_count, expected.read),
                (got.failed_count, expected.failed),
                (got.undelivered_count, expected.undelivered),
            ];
            excess += pairs.iter().map(|(g, e)| g.saturating_sub(*e)).sum::<u64>();
            short += u64::from(pairs.iter().any(|(g, e)| g < e));
        }
    }
    // Receipts: every receipt of every message.
    let mut expected_by_message: HashMap<(&str, &str), Vec<v1::Receipt>> = HashMap::new();
    for (_, changes) in model.receipts() {
        let receipt = &changes.last().expect("a receipt has a change").receipt;
        expected_by_message
            .entry((
                receipt.registration.conversation.as_str(),
                receipt.registration.message.as_str(),
            ))
            .or_default()
            .push(v1::Receipt::from(receipt));
    }
    let (mut lost, mut unknown) = (0u64, 0u64);
    let mut example = None;
    for ((conversation, message), expected) in &expected_by_message {
        let mut served: HashMap<String, v1::Receipt> = HashMap::new();
        let mut page_token = String::new();
        for _ in 0..100 {
            let request = v1::ListReceiptsRequest {
                conversation_sid: (*conversation).to_owned(),
                message_sid: (*message).to_owned(),
                page_size: 50,
                page_token: page_token.clone(),
            };
            match client.list_receipts(request).await {
                Ok(page) => {
                    let page = page.into_inner();
                    served.extend(page.receipts.into_iter().map(|r| (r.sid.clone(), r)));
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    page_token = page.next_page_token;
                }
                // A message the instance does not know: its receipts count as lost below.
                Err(status) if status.code() == tonic::Code::NotFound => break,
                Err(_) => {
                    errors += 1;
                    break;
                }
            }
        }
        for want in expected {
            let right = served.remove(&want.sid).is_some_and(|got| {
                let same = (
                    got.status,
                    got.error_code,
                    got.version,
                    got.expected_receipts,
                ) == (
                    want.status,
                    want.error_code,
                    want.version,
                    want.expected_receipts,
                );
                if !same && example.is_none() {
                    example = Some(format!(
                        "{}: served status {} error {} v{}, model status {} error {} v{}",
                        want.sid,
                        got.status,
                        got.error_code,
                        got.version,
                        want.status,
                        want.error_code,
                        want.version
                    ));
                }
                same
            });
            if !right {
                lost += 1;
                if example.is_none() {
                    example = Some(format!("{} not served", want.sid));
                }
            }
        }
        unknown += served.len() as u64;
    }
    // A missing message's receipts are counted as lost already.
    figures.lost += lost + short;
    figures.double_counted += excess + unknown;
    figures.notes.push(format!(
        "{name}: receipts missing or wrong {lost} (unknown {unknown}), messages missing {missing_messages}, \
         summaries short {short}, summary counts in excess {excess}, failed calls {errors}"
    ));
    if let Some(example) = example {
        figures.notes.push(format!("{name} e.g. {example}"));
    }
}

fn check_webhooks(
    model: &Model,
    receiver: &Receiver,
    in_flight_bound: u64,
    fault_log: &[(Instant, String)],
    settled: &HashMap<String, i64>,
    figures: &mut Figures,
) {
    let record = receiver.record();
    let (mut lost, mut superseded, mut expected, mut wrong_status) = (0u64, 0u64, 0u64, 0u64);
    let mut firing: HashSet<(&str, u64)> = HashSet::new();
    let mut example = None;
    for (sid, changes) in model.receipts() {
        let ok = record.ok_versions.get(sid.as_str());
        for v in model.firing(sid, u64::MAX) {
            expected += 1;
            firing.insert((sid.as_str(), v));
            let delivered = ok.is_some_and(|ok| ok.contains(&v));
            if delivered {
                let want = changes[v as usize - 1].receipt.status().as_str();
                let key = crate::receiver::Delivered {
                    receipt_sid: sid.as_str().to_owned(),
                    version: v,
                };
                if record.ok_status.get(&key).is_some_and(|got| got != want) {
                    wrong_status += 1;
                }
            } else if ok.is_some_and(|ok| ok.range(v + 1..).next().is_some()) {
                superseded += 1;
            } else {
                lost += 1;
                if example.is_none() {
                    let got: Vec<u64> = ok
                        .map(|ok| ok.iter().copied().collect())
                        .unwrap_or_default();
                    example = Some(format!("{sid} v{v} (delivered versions {got:?})"));
                }
            }
        }
    }
    let unexpected = record
        .ok_versions
        .iter()
        .flat_map(|(sid, versions)| versions.iter().map(move |v| (sid.as_str(), *v)))
        .filter(|key| !firing.contains(key))
        .count() as u64;
    let repeated = record.repeated();
    figures.webhooks_lost = lost + wrong_status;
    // A repeat is allowed only for an attempt still in flight at a fault: one whose outcome was
    // not yet durable in the dispatcher changelog when the fault began (answered or not — an
    // answer the dispatcher had not yet recorded is lost with the process, and the attempt is
    // made again with the same idempotency token). A repeat of a delivery settled before the
    // fault, or with no fault before it, is sent again beyond in-flight.
    let (now, now_ms) = (Instant::now(), unix_millis_now());
    let unix_ms = |at: Instant| now_ms - now.saturating_duration_since(at).as_millis() as i64;
    let mut beyond = 0u64;
    for (token, answers) in &record.ok_answers {
        for second in answers.iter().skip(1) {
            let fault = fault_log
                .iter()
                .filter(|(at, _)| at < second)
                .max_by_key(|(at, _)| *at);
            let settled_before_fault = match fault {
                None => true,
                Some((at, _)) => settled.get(token).is_some_and(|ms| *ms < unix_ms(*at)),
            };
            beyond += u64::from(settled_before_fault);
        }
    }
    // A version the model never fires is a webhook sent for a change that did not happen.
    figures.resent_beyond_in_flight = beyond + unexpected;
    figures.notes.push(format!(
        "webhooks: {expected} firing changes, {} requests; lost {lost}, superseded by a newer delivered version {superseded}, \
         delivered with a wrong status {wrong_status}, versions the model never fires {unexpected}, repeated 2xx {repeated} \
         (open at the receiver at the faults {in_flight_bound}; settled in the changelog before their fault {beyond}), \
         malformed {}, token clashes {}",
        record.requests, record.malformed, record.token_clashes
    ));
    if let Some(example) = example {
        figures.notes.push(format!("webhooks e.g. lost {example}"));
    }
    if repeated > 0 {
        // Which fault each repeat followed (the last one before its second 2xx), and how long
        // before that fault the delivery had first been answered.
        let mut by_fault: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
        for answers in record.ok_answers.values() {
            let (Some(first), Some(second)) = (answers.first(), answers.get(1)) else {
                continue;
            };
            let fault = fault_log
                .iter()
                .filter(|(at, _)| at < second)
                .max_by_key(|(at, _)| *at);
            let entry = by_fault
                .entry(fault.map_or("no fault", |(_, label)| label.as_str()))
                .or_default();
            entry[0] += answers.len() as u64 - 1;
            match fault.map(|(at, _)| at.checked_duration_since(*first)) {
                // First answered after the fault began: it was in flight then.
                Some(None) => entry[1] += 1,
                Some(Some(gap)) if gap <= Duration::from_millis(600) => entry[2] += 1,
                Some(Some(_)) | None => entry[3] += 1,
            }
        }
        let parts: Vec<String> = by_fault
            .iter()
            .map(|(label, [n, in_flight, near, long])| {
                format!(
                    "after {label}: {n} (first answered after it began, so in flight at it: {in_flight}, \
                     up to 0.6 s before it: {near}, longer before: {long})"
                )
            })
            .collect();
        figures
            .notes
            .push(format!("webhooks repeated: {}", parts.join("; ")));
    }
    figures.double_counted += record.token_clashes as u64;
}

fn unix_millis_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
