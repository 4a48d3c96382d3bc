//! The `onDeliveryUpdated` parameters (contract §5) and where they go: the query string for `GET`,
//! an `application/x-www-form-urlencoded` body for `POST`.

use std::fmt;
use std::str::FromStr;

use receipts_domain::Timestamp;
use receipts_proto::v1;

/// The event name, the value of `EventType` and of the filter that subscribes to it.
pub const EVENT_TYPE: &str = "onDeliveryUpdated";

/// The HTTP method a webhook is configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A method other than GET or POST.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook method must be GET or POST, got {0:?}")]
pub struct UnknownMethod(pub String);

impl FromStr for Method {
    type Err = UnknownMethod;

    /// Case-insensitive (the account and service levels say `POST`, conversation-scoped
    /// webhooks `post`); empty means POST, Twilio's default.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "" | "POST" => Ok(Method::Post),
            "GET" => Ok(Method::Get),
            _ => Err(UnknownMethod(s.to_owned())),
        }
    }
}

/// The parameters of one `onDeliveryUpdated` event, in the order of the contract's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPayload {
    pub params: Vec<(&'static str, String)>,
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the contract's REST timestamp form (§0): UTC, no fractions.
pub fn iso8601(t: Option<&pbjson_types::Timestamp>) -> String {
    t.map(|t| Timestamp::from_seconds_nanos(t.seconds, t.nanos).iso8601_seconds())
        .unwrap_or_default()
}

/// The Twilio word for a status; `None` for a receipt still inside the platform (null in the REST
/// API), which fires no webhook.
/// The words are the domain's ([`DeliveryStatus::as_str`](receipts_domain::DeliveryStatus)), the
/// one table REST, webhooks and the CLI share.
pub fn status_word(status: v1::DeliveryStatus) -> Option<&'static str> {
    match receipts_proto::convert::status_from_wire("status", status.into()) {
        Ok(Some(receipts_domain::DeliveryStatus::Queued)) | Ok(None) | Err(_) => None,
        Ok(Some(status)) => Some(status.as_str()),
    }
}

/// `Source`: the contract leaves its value for carrier-originated receipts open (§10.9); this
/// service sends `API`, the value for everything not started by an SDK.
pub const SOURCE: &str = "API";

impl DeliveryPayload {
    /// The parameters of `receipt`. `ErrorCode` is `0` when there is no error (§10.1 leaves it
    /// open; the contract's example body uses 0). `None` when the status fires no webhook.
    pub fn of(receipt: &v1::Receipt) -> Option<Self> {
        let status = status_word(receipt.status())?;
        Some(DeliveryPayload {
            params: vec![
                ("EventType", EVENT_TYPE.to_owned()),
                ("AccountSid", receipt.account_sid.clone()),
                ("ConversationSid", receipt.conversation_sid.clone()),
                ("ChatServiceSid", receipt.chat_service_sid.clone()),
                ("MessageSid", receipt.message_sid.clone()),
                ("DeliveryReceiptSid", receipt.sid.clone()),
                ("ChannelMessageSid", receipt.channel_message_sid.clone()),
                ("ParticipantSid", receipt.participant_sid.clone()),
                ("Status", status.to_owned()),
                ("ErrorCode", receipt.error_code.to_string()),
                ("DateCreated", iso8601(receipt.date_created.as_ref())),
                ("DateUpdated", iso8601(receipt.date_updated.as_ref())),
                ("Source", SOURCE.to_owned()),
            ],
        })
    }

    /// The parameters form-urlencoded, in order.
    pub fn form(&self) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.params {
            form.append_pair(name, value);
        }
        form.finish()
    }

    /// `url` with the parameters appended to its query string (for GET), before any fragment.
    pub fn url_with_query(&self, url: &str) -> String {
        let (base, fragment) = match url.split_once('#') {
            Some((base, fragment)) => (base, Some(fragment)),
            None => (url, None),
        };
        let separator = if !base.contains('?') {
            "?"
        } else if base.ends_with('?') || base.ends_with('&') {
            ""
        } else {
            "&"
        };
        let mut out = format!("{base}{separator}{}", self.form());
        if let Some(fragment) = fragment {
            out.push('#');
            out.push_str(fragment);
        }
        out
    }

    /// The parameters as owned pairs, for signing.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.params
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso8601_utc_seconds() {
        let t = |seconds| iso8601(Some(&pbjson_types::Timestamp { seconds, nanos: 7 }));
        assert_eq!(t(0), "1970-01-01T00:00:00Z");
        assert_eq!(t(1_584_989_117), "2020-03-23T18:45:17Z");
        assert_eq!(t(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(t(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(iso8601(None), "");
    }

    #[test]
    fn methods_parse_in_any_case() {
        assert_eq!("get".parse(), Ok(Method::Get));
        assert_eq!("POST".parse(), Ok(Method::Post));
        assert_eq!("".parse(), Ok(Method::Post));
        assert!("PUT".parse::<Method>().is_err());
    }

    #[test]
    fn query_params_are_appended_before_the_fragment() {
        let payload = DeliveryPayload {
            params: vec![("A", "1 2".into()), ("B", "x&y".into())],
        };
        assert_eq!(
            payload.url_with_query("https://h/p"),
            "https://h/p?A=1+2&B=x%26y"
        );
        assert_eq!(
            payload.url_with_query("https://h/p?q=1#rc=2"),
            "https://h/p?q=1&A=1+2&B=x%26y#rc=2"
        );
    }
}
