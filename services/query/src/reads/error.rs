//! Why a read failed, and the one table that answers each failure in both APIs: a gRPC code
//! and message, and Twilio's HTTP status, error code and message. The adapters only copy an
//! [`Answer`] into their wire type, so a new failure is answered alike everywhere by adding one
//! arm to [`ReadError::answer`].

use axum::http::StatusCode;
use receipts_domain::{ConversationSid, IdError, MessageSid, ReceiptSid};
use receipts_store::StoreError;
use tonic::Code;
use tracing::error;

use crate::page_token::InvalidToken;

/// A sid a read's request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidField {
    ChatService,
    Conversation,
    Message,
    Receipt,
}

/// Which read a request was for. Twilio calls the sid of the resource a path names `Sid` and
/// the sids of the resources above it by their kind (`MessageSid`), so the parameter a malformed
/// sid is reported under depends on the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    MessageDelivery,
    Messages,
    Rollup,
    Receipts,
    Receipt,
    Timeline,
    Watch,
}

impl SidField {
    /// The field of the gRPC request.
    fn grpc_field(self) -> &'static str {
        match self {
            SidField::ChatService => "chat_service_sid",
            SidField::Conversation => "conversation_sid",
            SidField::Message => "message_sid",
            SidField::Receipt => "receipt_sid",
        }
    }

    /// Twilio's name of the path parameter in `read`.
    fn twilio_parameter(self, read: Read) -> &'static str {
        match (self, read) {
            (SidField::Message, Read::MessageDelivery) | (SidField::Receipt, Read::Receipt) => {
                "Sid"
            }
            (SidField::ChatService, _) => "ChatServiceSid",
            (SidField::Conversation, _) => "ConversationSid",
            (SidField::Message, _) => "MessageSid",
            (SidField::Receipt, _) => "ReceiptSid",
        }
    }
}

/// Why a read failed. Another account's or another chat service's resources are not found,
/// never told apart from unknown ones.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The sid was not given; `source` is why an empty value is no sid.
    #[error("the {} is missing", field.grpc_field())]
    MissingSid {
        field: SidField,
        read: Read,
        #[source]
        source: IdError,
    },
    #[error("the {} is malformed", field.grpc_field())]
    MalformedSid {
        field: SidField,
        read: Read,
        #[source]
        source: IdError,
    },
    #[error("page_size must be between 1 and {max}, got {requested}")]
    PageSize { max: usize, requested: u32 },
    #[error("order: unknown value {0}")]
    UnknownOrder(i32),
    #[error("the page token was not issued for this list")]
    PageToken(#[from] InvalidToken),
    /// A token that passed its check but whose cursor is no cursor of the list: only a token
    /// signed with the same key by a build with other cursors.
    #[error("the page token's cursor is not one of this list")]
    PageCursor,
    #[error("message {message} is not in conversation {conversation}")]
    MessageNotFound {
        conversation: ConversationSid,
        message: MessageSid,
    },
    #[error("conversation {0} is not known")]
    ConversationNotFound(ConversationSid),
    #[error("receipt {0} is not known")]
    ReceiptNotFound(ReceiptSid),
    #[error("the read model could not be read")]
    Store(#[from] StoreError),
    #[error("a read on the blocking pool did not finish")]
    Blocking(#[from] tokio::task::JoinError),
}

/// How one failed read is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub grpc_code: Code,
    pub grpc_message: String,
    pub http_status: StatusCode,
    /// Twilio's error code; the body's `more_info` is its page.
    pub twilio_code: u32,
    pub twilio_message: String,
}

impl Answer {
    pub(crate) fn invalid(grpc_message: String, twilio_parameter: &str, problem: &str) -> Self {
        Answer {
            grpc_code: Code::InvalidArgument,
            grpc_message,
            http_status: StatusCode::BAD_REQUEST,
            twilio_code: 20001,
            twilio_message: format!("Invalid parameter {twilio_parameter}: {problem}"),
        }
    }

    fn invalid_token(grpc_message: String) -> Self {
        Answer {
            grpc_code: Code::InvalidArgument,
            grpc_message,
            http_status: StatusCode::BAD_REQUEST,
            twilio_code: 21481,
            twilio_message:
                "Invalid PageToken: request the paging URLs exactly as the API provided them".into(),
        }
    }

    pub(crate) fn not_found(what: String) -> Self {
        Answer {
            grpc_code: Code::NotFound,
            grpc_message: format!("{what} not found"),
            http_status: StatusCode::NOT_FOUND,
            twilio_code: 20404,
            twilio_message: format!("The requested resource {what} was not found"),
        }
    }
}

impl ReadError {
    /// The table: how each failure is answered over gRPC and over REST. A failing store is
    /// logged here, once, and shown to neither.
    pub fn answer(&self) -> Answer {
        match self {
            ReadError::MissingSid {
                field,
                read,
                source,
            } => Answer::invalid(
                format!("{} is required", field.grpc_field()),
                field.twilio_parameter(*read),
                &source.to_string(),
            ),
            ReadError::MalformedSid {
                field,
                read,
                source,
            } => Answer::invalid(
                format!("{}: {source}", field.grpc_field()),
                field.twilio_parameter(*read),
                &source.to_string(),
            ),
            ReadError::PageSize { max, requested } => Answer::invalid(
                self.to_string(),
                "PageSize",
                &format!("must be an integer from 1 to {max}, got \"{requested}\""),
            ),
            ReadError::UnknownOrder(order) => Answer::invalid(
                self.to_string(),
                "Order",
                &format!("must be asc or desc, got \"{order}\""),
            ),
            ReadError::PageToken(source) => Answer::invalid_token(source.to_string()),
            ReadError::PageCursor => Answer::invalid_token("page_token is not valid".into()),
            ReadError::MessageNotFound {
                conversation,
                message,
            } => Answer {
                grpc_message: format!("message {message} in conversation {conversation} not found"),
                ..Answer::not_found(format!("message {message} of conversation {conversation}"))
            },
            ReadError::ConversationNotFound(conversation) => {
                Answer::not_found(format!("conversation {conversation}"))
            }
            ReadError::ReceiptNotFound(receipt) => Answer::not_found(format!("receipt {receipt}")),
            ReadError::Store(source) => internal(source),
            ReadError::Blocking(source) => internal(source),
        }
    }
}

fn internal(cause: &dyn std::error::Error) -> Answer {
    error!(error = %cause, "the read model could not be read");
    Answer {
        grpc_code: Code::Internal,
        grpc_message: "the read model could not be read".into(),
        http_status: StatusCode::INTERNAL_SERVER_ERROR,
        twilio_code: 20500,
        twilio_message: "Internal Server Error".into(),
    }
}

impl From<ReadError> for tonic::Status {
    fn from(error: ReadError) -> Self {
        let answer = error.answer();
        tonic::Status::new(answer.grpc_code, answer.grpc_message)
    }
}

#[cfg(test)]
mod tests {
    use receipts_domain::ConversationSid;

    use super::*;

    #[test]
    fn a_sid_is_named_as_each_api_names_it() {
        let source = || ConversationSid::parse("CH1").unwrap_err();
        let malformed = ReadError::MalformedSid {
            field: SidField::Receipt,
            read: Read::Receipt,
            source: source(),
        }
        .answer();
        assert_eq!(malformed.grpc_message, format!("receipt_sid: {}", source()));
        assert_eq!(
            malformed.twilio_message,
            format!("Invalid parameter Sid: {}", source())
        );
        let missing = ReadError::MissingSid {
            field: SidField::Receipt,
            read: Read::Timeline,
            source: source(),
        }
        .answer();
        assert_eq!(missing.grpc_message, "receipt_sid is required");
        assert_eq!(
            missing.twilio_message,
            format!("Invalid parameter ReceiptSid: {}", source())
        );
        assert_eq!(
            (missing.http_status, missing.twilio_code),
            (StatusCode::BAD_REQUEST, 20001)
        );
    }
}
