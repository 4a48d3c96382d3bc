//! Kafka record payloads: protobuf by default, the proto3 JSON mapping when the record's
//! `content-type` header says `application/json`, so a person can produce test events with any
//! Kafka tool.

use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The record header that selects the payload encoding.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
pub const JSON_CONTENT_TYPE: &str = "application/json";
pub const PROTOBUF_CONTENT_TYPE: &str = "application/x-protobuf";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unsupported content-type {0:?}")]
    UnsupportedContentType(String),
    // The decoder's message is part of this one (it is what a dead letter's reason shows), so
    // it is not also a source: a chain of causes names it once.
    #[error("undecodable protobuf payload: {0}")]
    Protobuf(prost::DecodeError),
    #[error("undecodable JSON payload: {0}")]
    Json(serde_json::Error),
}

impl From<prost::DecodeError> for CodecError {
    fn from(error: prost::DecodeError) -> Self {
        CodecError::Protobuf(error)
    }
}

impl From<serde_json::Error> for CodecError {
    fn from(error: serde_json::Error) -> Self {
        CodecError::Json(error)
    }
}

impl Encoding {
    /// The encoding a `content-type` header value names; no header means protobuf. Parameters
    /// such as `; charset=utf-8` are ignored.
    pub fn from_content_type(value: Option<&[u8]>) -> Result<Self, CodecError> {
        let Some(value) = value else {
            return Ok(Encoding::Protobuf);
        };
        let text = String::from_utf8_lossy(value);
        let media_type = text
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match media_type.as_str() {
            JSON_CONTENT_TYPE => Ok(Encoding::Json),
            PROTOBUF_CONTENT_TYPE | "application/protobuf" | "" => Ok(Encoding::Protobuf),
            _ => Err(CodecError::UnsupportedContentType(text.into_owned())),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => PROTOBUF_CONTENT_TYPE,
            Encoding::Json => JSON_CONTENT_TYPE,
        }
    }
}

pub fn decode<M: Message + Default + DeserializeOwned>(
    payload: &[u8],
    encoding: Encoding,
) -> Result<M, CodecError> {
    Ok(match encoding {
        Encoding::Protobuf => M::decode(payload)?,
        Encoding::Json => serde_json::from_slice(payload)?,
    })
}

pub fn encode<M: Message + Serialize>(message: &M, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => message.encode_to_vec(),
        Encoding::Json => {
            serde_json::to_vec(message).expect("generated messages serialise to JSON")
        }
    }
}
