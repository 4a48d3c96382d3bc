//! Everything about one `onDeliveryUpdated` webhook that needs no Kafka and no storage: what is
//! sent, how it is signed, how an attempt's result is judged, when the next attempt is due, and
//! the HTTP client that refuses to reach private addresses.
//!
//! Layout:
//! - [`payload`]: the Twilio form parameters of a receipt (contract §5) and the request they make
//!   for `GET` (query string) or `POST` (form body);
//! - [`twilio`]: `X-Twilio-Signature` (HMAC-SHA1 of the URL and the sorted parameters, §6a);
//! - [`standard`]: Standard Webhooks headers (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature` with one `v1,` signature per secret, for rotation);
//! - [`outcome`]: 2xx delivered, 410 gone, 408/425/429/5xx and transport errors retried, other
//!   4xx rejected; `Retry-After` parsing;
//! - [`retry`]: the schedule (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h by default)
//!   with ±20 % jitter, `Retry-After` within bounds and a cap;
//! - [`ssrf`]: the address policy and the `reqwest` resolver that applies it;
//! - [`redact`]: webhook URLs without their credentials and query, for logs, metrics and
//!   dead-letter records;
//! - [`sealed`]: signing secrets encrypted at rest under the shared `webhook_secrets_key`, and
//!   which of a configuration's secrets sign at a given time;
//! - [`client`]: the `reqwest` client (no redirects, the resolver above, an attempt timeout) and
//!   one attempt of one webhook.

pub mod client;
pub mod outcome;
pub mod payload;
pub mod redact;
pub mod retry;
pub mod sealed;
pub mod ssrf;
pub mod standard;
pub mod twilio;

pub use client::{Attempt, ClientError, WebhookClient, WebhookRequest};
pub use outcome::{AttemptOutcome, classify_status};
pub use payload::{DeliveryPayload, Method};
pub use redact::redacted_url;
/// The resolver interface [`WebhookClient::with_resolver`] takes.
pub use reqwest::dns as reqwest_dns;
pub use retry::RetrySchedule;
pub use ssrf::{AddressPolicy, Cidr, InnerResolver};
