//! Twilio's error body: `{"code", "message", "more_info", "status"}` with Twilio's error codes, so
//! helper libraries raise their usual exceptions.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::error;

use crate::reads::{Answer, ReadError};
use crate::webhook_configs::ConfigCallError;

/// A failed call, as Twilio would answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Twilio's error code (20003, 20404, 20001, 21481, …).
    pub code: u32,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: u32,
    message: &'a str,
    more_info: String,
    status: u16,
}

impl ApiError {
    /// 401, Twilio error 20003.
    pub fn unauthenticated() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: 20003,
            message: "Authenticate: use HTTP Basic with AccountSid:AuthToken".into(),
        }
    }

    /// 404, Twilio error 20404. Another account's resources are not found either.
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: 20404,
            message: format!("The requested resource {what} was not found"),
        }
    }

    /// 400, Twilio error 20001: a parameter is missing or malformed.
    pub fn invalid(parameter: &str, problem: impl std::fmt::Display) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: 20001,
            message: format!("Invalid parameter {parameter}: {problem}"),
        }
    }

    /// 400, Twilio error 21481.
    pub fn invalid_page_token() -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: 21481,
            message: "Invalid PageToken: request the paging URLs exactly as the API provided them"
                .into(),
        }
    }

    /// 405, Twilio error 20004.
    pub fn method_not_allowed() -> Self {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: 20004,
            message: "Method not allowed".into(),
        }
    }

    /// 503, Twilio error 20503.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        error!(%cause, "REST call could not be served");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: 20503,
            message: "Service Unavailable: try again".into(),
        }
    }
}

/// The answer to a call shed because too many are in flight: 503, Twilio error 20503 (the
/// server adds `Retry-After`).
pub fn overloaded() -> Response {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: 20503,
        message: "Service Unavailable: too many requests in flight, retry later".into(),
    }
    .into_response()
}

/// The answer to a call whose body did not arrive within the body read timeout: 408, Twilio
/// error 20001 naming the body.
pub fn body_timed_out() -> Response {
    ApiError {
        status: StatusCode::REQUEST_TIMEOUT,
        code: 20001,
        message: "Invalid parameter body: it did not arrive in time".into(),
    }
    .into_response()
}

/// A failed webhook configuration call, as [`ConfigCallError::answer`] says Twilio answers it.
impl From<ConfigCallError> for ApiError {
    fn from(error: ConfigCallError) -> Self {
        error.answer().into()
    }
}

/// A failed read, as [`ReadError::answer`] says Twilio answers it.
impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> Self {
        error.answer().into()
    }
}

impl From<Answer> for ApiError {
    fn from(answer: Answer) -> Self {
        ApiError {
            status: answer.http_status,
            code: answer.twilio_code,
            message: answer.twilio_message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: &self.message,
            more_info: format!("https://www.twilio.com/docs/errors/{}", self.code),
            status: self.status.as_u16(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"receipts\""),
            );
        }
        response
    }
}
