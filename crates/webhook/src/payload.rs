//! The `onDeliveryUpdated` parameters (contract §5) and where they go: the query string for `GET`,
//! an `application/x-www-form-urlencoded` body for `POST`.

use std::fmt;
use std::str::FromStr;

use receipts_domain::{Channel, DeliveryStatus, Receipt};

/// The event name, the value of `EventType` and of the filter that subscribes to it.
pub const EVENT_TYPE: &str = receipts_domain::subscription::DELIVERY_UPDATED;

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

/// The Twilio word for a status; `None` for a receipt still inside the platform (null in the REST
/// API), which fires no webhook.
/// The words are the domain's ([`DeliveryStatus::as_str`]), the one table REST, webhooks and the
/// CLI share.
pub fn status_word(status: DeliveryStatus) -> Option<&'static str> {
    (status != DeliveryStatus::Queued).then_some(status.as_str())
}

/// `Source`: the contract leaves its value for carrier-originated receipts open (§10.9); this
/// service sends `API`, the value for everything not started by an SDK.
pub const SOURCE: &str = "API";

impl DeliveryPayload {
    /// The parameters of `receipt`. `ErrorCode` is `0` when there is no error (§10.1 leaves it
    /// open; the contract's example body uses 0). `None` when the status fires no webhook.
    /// Times are [`Timestamp::iso8601_seconds`](receipts_domain::Timestamp::iso8601_seconds),
    /// the form of the REST bodies.
    pub fn of(receipt: &Receipt) -> Option<Self> {
        let status = status_word(receipt.status())?;
        let registration = &receipt.registration;
        let channel_message_sid = registration
            .channel_message_id
            .channel_message_sid(registration.channel == Channel::Whatsapp);
        Some(DeliveryPayload {
            params: vec![
                ("EventType", EVENT_TYPE.to_owned()),
                ("AccountSid", registration.account.to_string()),
                ("ConversationSid", registration.conversation.to_string()),
                (
                    "ChatServiceSid",
                    registration
                        .chat_service
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                ),
                ("MessageSid", registration.message.to_string()),
                ("DeliveryReceiptSid", receipt.sid.to_string()),
                ("ChannelMessageSid", channel_message_sid.to_string()),
                ("ParticipantSid", registration.participant.to_string()),
                ("Status", status.to_owned()),
                ("ErrorCode", receipt.error_code().unwrap_or(0).to_string()),
                ("DateCreated", receipt.date_created().iso8601_seconds()),
                ("DateUpdated", receipt.date_updated().iso8601_seconds()),
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

    use receipts_domain::{
        AccountSid, ChannelMessageId, ChatServiceSid, ConversationSid, MessageSid, ParticipantSid,
        ReceiptSid, Registration, StatusReport, StatusSource, Timestamp,
    };
    use receipts_proto::v1;

    fn receipt(channel: Channel, report: Option<(DeliveryStatus, Option<u32>)>) -> Receipt {
        let account = AccountSid::derive(&["account"]);
        let channel_message_id = ChannelMessageId::parse(match channel {
            Channel::Whatsapp => "wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI",
            _ => "SM00000000000000000000000000000007",
        })
        .unwrap();
        Receipt {
            sid: ReceiptSid::derive(&["receipt"]),
            registration: Registration {
                account: account.clone(),
                chat_service: (channel == Channel::Whatsapp)
                    .then(|| ChatServiceSid::derive(&["service"])),
                conversation: ConversationSid::derive(&["conversation"]),
                message: MessageSid::derive(&["message"]),
                message_index: 2,
                participant: ParticipantSid::derive(&["participant"]),
                channel,
                channel_message_id: channel_message_id.clone(),
                expected_receipts: 1,
                registered_at: Timestamp::from_unix_millis(1_584_989_117_250),
            },
            report: report.map(|(status, error_code)| StatusReport {
                account,
                channel_message_id,
                status,
                raw_status: status.as_str().into(),
                error_code,
                provider_time: Timestamp::from_unix_millis(1_584_989_122_999),
                source: StatusSource::Canonical,
            }),
            version: 3,
        }
    }

    /// The parameters as they were taken from the wire receipt, before the payload was built
    /// from the domain: the reference the domain-built payload must equal, byte for byte.
    fn of_wire(receipt: &v1::Receipt) -> Vec<(&'static str, String)> {
        let time = |t: Option<&pbjson_types::Timestamp>| {
            t.map(|t| Timestamp::from_seconds_nanos(t.seconds, t.nanos).iso8601_seconds())
                .unwrap_or_default()
        };
        let status = receipts_proto::convert::status_from_wire("status", receipt.status)
            .unwrap()
            .unwrap();
        vec![
            ("EventType", EVENT_TYPE.to_owned()),
            ("AccountSid", receipt.account_sid.clone()),
            ("ConversationSid", receipt.conversation_sid.clone()),
            ("ChatServiceSid", receipt.chat_service_sid.clone()),
            ("MessageSid", receipt.message_sid.clone()),
            ("DeliveryReceiptSid", receipt.sid.clone()),
            ("ChannelMessageSid", receipt.channel_message_sid.clone()),
            ("ParticipantSid", receipt.participant_sid.clone()),
            ("Status", status.as_str().to_owned()),
            ("ErrorCode", receipt.error_code.to_string()),
            ("DateCreated", time(receipt.date_created.as_ref())),
            ("DateUpdated", time(receipt.date_updated.as_ref())),
            ("Source", SOURCE.to_owned()),
        ]
    }

    #[test]
    fn the_payload_is_what_the_wire_receipt_said() {
        for (channel, status, error_code) in [
            (Channel::Whatsapp, DeliveryStatus::Read, None),
            (Channel::Sms, DeliveryStatus::Undelivered, Some(30_003)),
            (Channel::Sms, DeliveryStatus::Sent, None),
        ] {
            let receipt = receipt(channel, Some((status, error_code)));
            let payload = DeliveryPayload::of(&receipt).unwrap();
            assert_eq!(payload.params, of_wire(&v1::Receipt::from(&receipt)));
        }
        let read = DeliveryPayload::of(&receipt(
            Channel::Whatsapp,
            Some((DeliveryStatus::Read, None)),
        ))
        .unwrap();
        assert_eq!(
            read.params[10],
            ("DateCreated", "2020-03-23T18:45:17Z".into())
        );
        assert_eq!(
            read.params[11],
            ("DateUpdated", "2020-03-23T18:45:22Z".into())
        );
        assert!(read.params[6].1.starts_with("WA"));
    }

    #[test]
    fn a_receipt_still_queued_fires_nothing() {
        assert!(DeliveryPayload::of(&receipt(Channel::Sms, None)).is_none());
        assert_eq!(status_word(DeliveryStatus::Queued), None);
        assert_eq!(status_word(DeliveryStatus::Failed), Some("failed"));
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
