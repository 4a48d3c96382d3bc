//! One attempt of one webhook, over a `reqwest` client that never follows redirects, connects
//! only to addresses the [`AddressPolicy`] permits, and gives up after the attempt timeout
//! (5 s by default: Conversations webhooks time out after 5 s).
//!
//! The client uses no proxy, whatever `HTTP_PROXY`, `HTTPS_PROXY` or `ALL_PROXY` say: through a
//! proxy, the guard would judge the proxy's address while the proxy resolved and reached the
//! tenant's URL. `X-Twilio-Signature` is computed over the URL as it is sent (parsed and
//! normalised: lowercase host, no default port, `/` for an empty path), which is the URL the
//! receiver sees and validates against.

use std::error::Error as StdError;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use receipts_runtime::clock::{self, SharedClock};
use receipts_runtime::telemetry::propagation;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use reqwest::redirect;

use tracing::Instrument;

use crate::outcome::{AttemptOutcome, classify_status};
use crate::payload::{DeliveryPayload, Method};
use crate::ssrf::{AddressPolicy, GuardedResolver, InnerResolver, Refused};
use crate::{standard, twilio};

/// The header that tells retries of one delivery apart from new deliveries.
pub const IDEMPOTENCY_HEADER: &str = "I-Twilio-Idempotency-Token";
/// The receipt version a request carries, so a receiver can tell an older update that arrives
/// late (the Twilio payload has no version of its own).
pub const VERSION_HEADER: &str = "X-Receipts-Receipt-Version";
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";
const AGENT: &str = concat!("receipts-dispatcher/", env!("CARGO_PKG_VERSION"));

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the webhook HTTP client")]
pub struct ClientError(#[from] reqwest::Error);

/// Everything one request needs. Its `Debug` shows the URL redacted and no token or secret.
#[derive(Clone)]
pub struct WebhookRequest {
    pub url: String,
    pub method: Method,
    pub payload: DeliveryPayload,
    /// The account's auth token, which keys `X-Twilio-Signature`.
    pub auth_token: String,
    /// Stable across every attempt of one delivery; also the Standard Webhooks `webhook-id`.
    pub idempotency_token: String,
    /// Standard Webhooks secrets; empty sends no Standard Webhooks headers.
    pub signing_secrets: Vec<String>,
    pub receipt_version: u64,
}

impl std::fmt::Debug for WebhookRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRequest")
            .field("url", &crate::redact::redacted_url(&self.url))
            .field("method", &self.method)
            .field("payload", &self.payload)
            .field("auth_token", &"[redacted]")
            .field("idempotency_token", &self.idempotency_token)
            .field(
                "signing_secrets",
                &format_args!("[{} redacted]", self.signing_secrets.len()),
            )
            .field("receipt_version", &self.receipt_version)
            .finish()
    }
}

/// How an attempt went.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub outcome: AttemptOutcome,
    pub elapsed: Duration,
}

/// Sends webhooks; cheap to clone.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    policy: Arc<AddressPolicy>,
    /// The Standard Webhooks `webhook-timestamp`, and the "now" an HTTP-date `Retry-After` is
    /// measured from.
    clock: SharedClock,
}

impl WebhookClient {
    pub fn new(policy: AddressPolicy, timeout: Duration) -> Result<Self, ClientError> {
        Self::build_with(policy, timeout, None)
    }

    /// A client that resolves names with `resolver` (then the policy), for tests of what the
    /// guard does with the answers of a hostile DNS server.
    pub fn with_resolver(
        policy: AddressPolicy,
        timeout: Duration,
        resolver: InnerResolver,
    ) -> Result<Self, ClientError> {
        Self::build_with(policy, timeout, Some(resolver))
    }

    fn build_with(
        policy: AddressPolicy,
        timeout: Duration,
        resolver: Option<InnerResolver>,
    ) -> Result<Self, ClientError> {
        let policy = Arc::new(policy);
        let guard = match resolver {
            Some(inner) => GuardedResolver::with_inner(policy.clone(), inner),
            None => GuardedResolver::new(policy.clone()),
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(redirect::Policy::none())
            .dns_resolver(Arc::new(guard))
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(WebhookClient {
            http,
            policy,
            clock: clock::system(),
        })
    }

    /// The same client reading wall-clock time from `clock` instead of the system's.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> std::time::SystemTime {
        let millis = self.clock.now().unix_millis();
        UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
    }

    /// Makes one attempt. Never fails: every way it can go wrong is an [`AttemptOutcome`].
    ///
    /// The attempt is an HTTP client span in the current trace, and the request carries its
    /// `traceparent`, so the subscriber's own tracing continues the trace of the report that
    /// caused the webhook.
    pub async fn send(&self, request: &WebhookRequest) -> Attempt {
        let span = client_span(request);
        let started = Instant::now();
        let outcome = match self.build(request) {
            Ok(mut built) => {
                for (name, value) in propagation::trace_headers(&span) {
                    if let (Ok(name), Ok(value)) =
                        (HeaderName::try_from(name), HeaderValue::try_from(value))
                    {
                        built.headers_mut().insert(name, value);
                    }
                }
                match self.http.execute(built).instrument(span.clone()).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        span.record("http.response.status_code", status);
                        if status >= 500 {
                            span.record("error.type", status);
                            span.record("otel.status_code", "error");
                        }
                        let retry_after = response
                            .headers()
                            .get(RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        classify_status(status, retry_after.as_deref(), self.now())
                    }
                    // reqwest's errors name the URL, credentials and query included: the reason
                    // goes to logs and dead-letter records, so it must not.
                    Err(error) => {
                        let error = error.without_url();
                        let kind = if error.is_timeout() {
                            "timeout"
                        } else {
                            "connection"
                        };
                        span.record("error.type", kind);
                        span.record("otel.status_code", "error");
                        transport_outcome(&error)
                    }
                }
            }
            Err(refused) => {
                span.record("error.type", "refused");
                span.record("otel.status_code", "error");
                AttemptOutcome::Reject {
                    reason: refused.to_string(),
                }
            }
        };
        Attempt {
            outcome,
            elapsed: started.elapsed(),
        }
    }

    fn build(&self, request: &WebhookRequest) -> Result<reqwest::Request, RequestRefused> {
        let (url, params, body) = match request.method {
            Method::Get => (
                request.payload.url_with_query(&request.url),
                Vec::new(),
                String::new(),
            ),
            Method::Post => (
                request.url.clone(),
                request.payload.pairs(),
                request.payload.form(),
            ),
        };
        let parsed = reqwest::Url::parse(&url).map_err(RequestRefused::Url)?;
        // Signed as sent: the receiver validates the URL it was called at, which is the
        // normalised one, not the text the tenant configured.
        let signature = twilio::signature(&request.auth_token, parsed.as_str(), &params);
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(RequestRefused::Scheme(parsed.scheme().to_owned()));
        }
        // `reqwest` does not resolve IP literals, so the resolver never sees them.
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(RequestRefused::NoHost),
        };
        if let Some(ip) = literal {
            self.policy
                .check(parsed.host_str().unwrap_or_default(), ip)?;
        }
        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
        };
        let mut builder = self
            .http
            .request(method, parsed)
            .header(USER_AGENT, AGENT)
            .header(twilio::SIGNATURE_HEADER, signature)
            .header(IDEMPOTENCY_HEADER, &request.idempotency_token)
            .header(VERSION_HEADER, request.receipt_version.to_string());
        if !request.signing_secrets.is_empty() {
            let timestamp = self
                .now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let value = standard::signature(
                &request.signing_secrets,
                &request.idempotency_token,
                timestamp,
                body.as_bytes(),
            )?;
            builder = builder
                .header(standard::ID_HEADER, &request.idempotency_token)
                .header(standard::TIMESTAMP_HEADER, timestamp.to_string())
                .header(standard::SIGNATURE_HEADER, value);
        }
        if request.method == Method::Post {
            builder = builder.header(CONTENT_TYPE, FORM_CONTENT_TYPE).body(body);
        }
        builder.build().map_err(RequestRefused::Build)
    }
}

/// Why a request was not sent at all: the subscriber's URL or secrets cannot make one. Shown
/// in the attempt's record as its reason, so each message reads the same as before it was typed.
#[derive(Debug, thiserror::Error)]
enum RequestRefused {
    // The details are part of the reason a record shows, so they are in the message, and not
    // also a source that a chain would print a second time.
    #[error("invalid URL: {0}")]
    Url(url::ParseError),
    #[error("URL scheme {0:?} is not http or https")]
    Scheme(String),
    #[error("URL has no host")]
    NoHost,
    #[error(transparent)]
    Blocked(#[from] Refused),
    #[error(transparent)]
    Secret(#[from] standard::InvalidSecret),
    #[error("building the request: {0}")]
    Build(reqwest::Error),
}

/// The HTTP client span of one request, named and attributed as the semantic conventions' HTTP
/// client spans; the URL is recorded redacted (no credentials, no query).
fn client_span(request: &WebhookRequest) -> tracing::Span {
    let method = match request.method {
        Method::Get => "GET",
        Method::Post => "POST",
    };
    let parsed = reqwest::Url::parse(&request.url).ok();
    let host = parsed
        .as_ref()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let port = parsed.as_ref().and_then(|u| u.port_or_known_default());
    tracing::info_span!(
        "webhook request",
        otel.name = method,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        server.address = %host,
        server.port = port,
        url.full = %crate::redact::redacted_url(&request.url),
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// A request that got no response: refused by the address policy (permanent), or a timeout or
/// connection failure (transient).
fn transport_outcome(error: &reqwest::Error) -> AttemptOutcome {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return AttemptOutcome::Reject {
                reason: refused.to_string(),
            };
        }
        source = e.source();
    }
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    AttemptOutcome::Retry {
        reason: format!("{kind}: {}", chain(error)),
        retry_after: None,
    }
}

/// An error and its sources on one line.
fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
