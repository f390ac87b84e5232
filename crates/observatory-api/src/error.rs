//! One error type for every handler: a status, a stable code and a clear message.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::events::BodyError;

/// An error answered to an HTTP client as `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong in a way the message explains (400).
    #[error("{0}")]
    BadRequest(String),
    /// A query parameter is wrong (400).
    #[error("{param}: {reason}")]
    BadParam {
        /// The parameter.
        param: String,
        /// Why.
        reason: String,
    },
    /// The body is not parseable (400), with where.
    #[error("malformed body at {location}: {message}")]
    MalformedBody {
        /// Line and column, or byte offset.
        location: String,
        /// What the parser said.
        message: String,
    },
    /// Over a size limit (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A body in a format we do not take (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Nothing there (404).
    #[error("{0}")]
    NotFound(String),
    /// The request took longer than `http.request_timeout` (408).
    #[error("{0}")]
    Timeout(String),
    /// Too many requests at once; retry after a second (429).
    #[error("{0}")]
    TooManyRequests(String),
    /// Overloaded or shutting down; retry later (503).
    #[error("{0}")]
    Unavailable(String),
    /// Our fault (500); the cause is logged.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A bad query parameter.
    pub fn bad_param(param: &str, reason: impl ToString) -> Self {
        ApiError::BadParam { param: param.to_string(), reason: reason.to_string() }
    }

    /// A short stable code, also used to count refusals.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::BadParam { .. } => "bad_param",
            ApiError::MalformedBody { .. } => "malformed_body",
            ApiError::PayloadTooLarge(_) => "too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::NotFound(_) => "not_found",
            ApiError::Timeout(_) => "timeout",
            ApiError::TooManyRequests(_) => "too_many_requests",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The HTTP status it is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::BadParam { .. } | ApiError::MalformedBody { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::Malformed { location, message } => ApiError::MalformedBody { location, message },
            too_many @ BodyError::TooManyEvents { .. } => ApiError::PayloadTooLarge(too_many.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let mut body = json!({ "error": { "code": self.code(), "message": self.to_string() } });
        match &self {
            ApiError::MalformedBody { location, .. } => body["error"]["location"] = json!(location),
            ApiError::BadParam { param, .. } => body["error"]["param"] = json!(param),
            _ => {}
        }
        let mut response = (status, axum::Json(body)).into_response();
        if matches!(status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS) {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}
