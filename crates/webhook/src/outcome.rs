//! How one attempt ended, and what follows from it.
//!
//! - 2xx: delivered.
//! - 410 Gone: the receiver asks never to be called again; the endpoint is disabled.
//! - 408, 425, 429, any 5xx, timeouts and connection errors: transient, retried on the schedule.
//! - any other status (other 4xx, and 1xx/3xx, since redirects are never followed): the request
//!   itself is refused and will be refused again, so it goes to the dead-letter topic at once.

use std::time::{Duration, SystemTime};

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered {
        status: u16,
    },
    /// 410: disable the endpoint.
    Gone,
    /// Try again later; the receiver may have said when (`Retry-After`).
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Never try this request again by itself: dead-letter it.
    Reject {
        reason: String,
    },
}

impl AttemptOutcome {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            AttemptOutcome::Delivered { .. } => "delivered",
            AttemptOutcome::Gone => "gone",
            AttemptOutcome::Retry { .. } => "retry",
            AttemptOutcome::Reject { .. } => "rejected",
        }
    }
}

/// The outcome of a response with `status` and the raw `Retry-After` header value, if any.
pub fn classify_status(status: u16, retry_after: Option<&str>, now: SystemTime) -> AttemptOutcome {
    match status {
        200..=299 => AttemptOutcome::Delivered { status },
        410 => AttemptOutcome::Gone,
        408 | 425 | 429 | 500..=599 => AttemptOutcome::Retry {
            reason: format!("HTTP {status}"),
            retry_after: retry_after.and_then(|v| parse_retry_after(v, now)),
        },
        _ => AttemptOutcome::Reject {
            reason: format!("HTTP {status}"),
        },
    }
}

/// `Retry-After` as delay-seconds or an HTTP date; a date in the past is zero.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: u16) -> &'static str {
        classify_status(status, None, SystemTime::UNIX_EPOCH).label()
    }

    #[test]
    fn statuses_are_classified() {
        for status in [200, 201, 204, 299] {
            assert_eq!(outcome(status), "delivered", "{status}");
        }
        assert_eq!(outcome(410), "gone");
        for status in [408, 425, 429, 500, 502, 503, 504, 599] {
            assert_eq!(outcome(status), "retry", "{status}");
        }
        for status in [
            100, 301, 302, 307, 400, 401, 403, 404, 405, 409, 413, 422, 451,
        ] {
            assert_eq!(outcome(status), "rejected", "{status}");
        }
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            classify_status(429, Some("7"), now),
            AttemptOutcome::Retry {
                reason: "HTTP 429".into(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
    }
}
