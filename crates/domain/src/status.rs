//! Canonical delivery statuses and the tables that map each provider's vocabulary onto them.

use std::fmt;
use std::str::FromStr;

/// The status of one receipt, in the words of the Conversations API, plus `Queued` for a message
/// that is still on its way out (Twilio renders that as a `null` status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryStatus {
    Queued,
    Sent,
    Delivered,
    Undelivered,
    Failed,
    Read,
}

/// How far a message has got. Reports only ever move a receipt forward in phase; within a phase
/// the later provider timestamp wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Queued, accepted, scheduled, sending: still inside the platform.
    Pending,
    /// Handed to the carrier or the OTT network.
    Sent,
    /// A final outcome: delivered, undelivered or failed.
    Final,
    /// Opened by the recipient; nothing comes after it.
    Read,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 6] = [
        DeliveryStatus::Queued,
        DeliveryStatus::Sent,
        DeliveryStatus::Delivered,
        DeliveryStatus::Undelivered,
        DeliveryStatus::Failed,
        DeliveryStatus::Read,
    ];

    pub const fn phase(self) -> Phase {
        match self {
            DeliveryStatus::Queued => Phase::Pending,
            DeliveryStatus::Sent => Phase::Sent,
            DeliveryStatus::Delivered | DeliveryStatus::Undelivered | DeliveryStatus::Failed => {
                Phase::Final
            }
            DeliveryStatus::Read => Phase::Read,
        }
    }

    /// Breaks ties between reports of the same phase and the same provider timestamp. Among final
    /// outcomes the bad news wins (failed > undelivered > delivered), so a receipt never hides a
    /// failure that was reported at the same instant as a success.
    pub const fn precedence(self) -> u8 {
        match self {
            DeliveryStatus::Queued => 0,
            DeliveryStatus::Sent => 0,
            DeliveryStatus::Delivered => 0,
            DeliveryStatus::Undelivered => 1,
            DeliveryStatus::Failed => 2,
            DeliveryStatus::Read => 0,
        }
    }

    /// The lowercase name used in the REST API and webhooks (`queued` is rendered as `null`
    /// there, but has a name for logs and the CLI).
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Undelivered => "undelivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Read => "read",
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryStatus {
    type Err = UnknownStatus;

    /// Parses a canonical status name, as used by the canonical JSON batch endpoint.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        map_provider_status(StatusSource::Canonical, s)
    }
}

/// Who reported a status: decides which vocabulary the raw status is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatusSource {
    /// Twilio Programmable Messaging status callbacks (`MessageStatus`).
    TwilioMessaging,
    /// WhatsApp Cloud API webhooks (`statuses[].status`).
    WhatsappCloud,
    /// SMPP 3.4 delivery receipts (`stat:` field of Appendix B).
    Smpp,
    /// This project's own canonical names (`sent`, `delivered`, …).
    Canonical,
}

impl StatusSource {
    pub const ALL: [StatusSource; 4] = [
        StatusSource::TwilioMessaging,
        StatusSource::WhatsappCloud,
        StatusSource::Smpp,
        StatusSource::Canonical,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            StatusSource::TwilioMessaging => "twilio",
            StatusSource::WhatsappCloud => "whatsapp",
            StatusSource::Smpp => "smpp",
            StatusSource::Canonical => "canonical",
        }
    }
}

impl fmt::Display for StatusSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider status this service does not know. It is an error, never a guess: the record is
/// dead-lettered with this message so the table can be extended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {provider} status {value:?}")]
pub struct UnknownStatus {
    pub provider: StatusSource,
    pub value: String,
}

/// Maps a provider's raw status onto the canonical one.
///
/// Twilio and WhatsApp values are matched case-insensitively (they are lowercase on the wire),
/// SMPP `stat` values likewise (they are uppercase on the wire).
pub fn map_provider_status(
    source: StatusSource,
    raw: &str,
) -> Result<DeliveryStatus, UnknownStatus> {
    use DeliveryStatus::*;
    let value = raw.trim().to_ascii_lowercase();
    let status = match source {
        StatusSource::TwilioMessaging => match value.as_str() {
            "queued" | "accepted" | "scheduled" | "sending" => Some(Queued),
            "sent" => Some(Sent),
            // Deprecated; a part reached the handset, which is as far as "delivered" ever goes.
            "delivered" | "partially_delivered" => Some(Delivered),
            "undelivered" => Some(Undelivered),
            // A canceled scheduled message will never be sent.
            "failed" | "canceled" => Some(Failed),
            "read" => Some(Read),
            // `receiving` / `received` describe inbound messages, never a delivery.
            _ => None,
        },
        StatusSource::WhatsappCloud => match value.as_str() {
            "sent" => Some(Sent),
            "delivered" => Some(Delivered),
            // `played` is the read receipt of a voice message.
            "read" | "played" => Some(Read),
            "failed" => Some(Failed),
            _ => None,
        },
        StatusSource::Smpp => match value.as_str() {
            "enroute" => Some(Sent),
            "delivrd" => Some(Delivered),
            // Accepted on behalf of the subscriber: a final, successful state in SMPP 3.4.
            "acceptd" => Some(Delivered),
            "expired" | "undeliv" => Some(Undelivered),
            // The SMSC gave up without a verdict on the handset.
            "unknown" => Some(Undelivered),
            "deleted" | "rejectd" => Some(Failed),
            _ => None,
        },
        StatusSource::Canonical => match value.as_str() {
            "queued" => Some(Queued),
            "sent" => Some(Sent),
            "delivered" => Some(Delivered),
            "undelivered" => Some(Undelivered),
            "failed" => Some(Failed),
            "read" => Some(Read),
            _ => None,
        },
    };
    status.ok_or_else(|| UnknownStatus {
        provider: source,
        value: raw.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryStatus::*;

    #[test]
    fn twilio_messaging_table() {
        let table = [
            ("queued", Queued),
            ("accepted", Queued),
            ("scheduled", Queued),
            ("sending", Queued),
            ("sent", Sent),
            ("delivered", Delivered),
            ("partially_delivered", Delivered),
            ("undelivered", Undelivered),
            ("failed", Failed),
            ("canceled", Failed),
            ("read", Read),
        ];
        for (raw, expected) in table {
            assert_eq!(
                map_provider_status(StatusSource::TwilioMessaging, raw),
                Ok(expected),
                "{raw}"
            );
        }
    }

    #[test]
    fn whatsapp_cloud_table() {
        let table = [
            ("sent", Sent),
            ("delivered", Delivered),
            ("read", Read),
            ("played", Read),
            ("failed", Failed),
        ];
        for (raw, expected) in table {
            assert_eq!(
                map_provider_status(StatusSource::WhatsappCloud, raw),
                Ok(expected),
                "{raw}"
            );
        }
    }

    #[test]
    fn smpp_stat_table() {
        let table = [
            ("ENROUTE", Sent),
            ("DELIVRD", Delivered),
            ("EXPIRED", Undelivered),
            ("DELETED", Failed),
            ("UNDELIV", Undelivered),
            ("ACCEPTD", Delivered),
            ("UNKNOWN", Undelivered),
            ("REJECTD", Failed),
        ];
        for (raw, expected) in table {
            assert_eq!(
                map_provider_status(StatusSource::Smpp, raw),
                Ok(expected),
                "{raw}"
            );
        }
    }

    #[test]
    fn canonical_names_round_trip() {
        for status in DeliveryStatus::ALL {
            assert_eq!(status.as_str().parse::<DeliveryStatus>(), Ok(status));
        }
    }

    #[test]
    fn unknown_values_are_errors_that_name_the_value_and_source() {
        for (source, raw) in [
            (StatusSource::TwilioMessaging, "received"),
            (StatusSource::TwilioMessaging, "bogus"),
            (StatusSource::WhatsappCloud, "deleted"),
            (StatusSource::Smpp, "DELIVERED"),
            (StatusSource::Canonical, ""),
        ] {
            let err = map_provider_status(source, raw).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(&format!("{raw:?}")), "{message}");
            assert!(message.contains(source.as_str()), "{message}");
        }
    }

    #[test]
    fn phases_are_ordered_as_designed() {
        assert!(Queued.phase() < Sent.phase());
        assert!(Sent.phase() < Delivered.phase());
        assert_eq!(Delivered.phase(), Failed.phase());
        assert_eq!(Undelivered.phase(), Failed.phase());
        assert!(Failed.phase() < Read.phase());
    }
}
