//! The error-code enum every service error maps to, and the one place that turns it into an
//! RFC 9457 `application/problem+json` response.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// What kind of failure a caller is looking at; decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed or names an impossible value.
    BadRequest,
    /// No valid token was presented.
    Unauthenticated,
    /// The token is valid but its roles do not allow the operation, or policy forbids it.
    Forbidden,
    /// The thing named does not exist.
    NotFound,
    /// The thing existed but is gone (deleted or disposed); its tombstone remains.
    Gone,
    /// The operation conflicts with the current state (mode, retention, hold, revision).
    Conflict,
    /// A precondition header did not match.
    PreconditionFailed,
    /// The body is larger than allowed.
    PayloadTooLarge,
    /// The requested byte range cannot be served.
    RangeNotSatisfiable,
    /// The body's media type is not accepted here.
    UnsupportedMediaType,
    /// Too many attempts (failed logins); retry after the time the response names.
    TooManyRequests,
    /// The storage is full: nothing was stored; another element may take it.
    InsufficientStorage,
    /// A dependency is down, a drain timed out, or quorum is lost; retry later.
    Unavailable,
    /// Another service failed while working on the request (e.g. an element died during
    /// an upload that passed through); nothing was done, retry.
    BadGateway,
    /// A bug or an I/O failure on our side.
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Gone => StatusCode::GONE,
            Self::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The default problem type slug for this code.
    pub fn default_type(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not-found",
            Self::Gone => "gone",
            Self::InsufficientStorage => "insufficient-storage",
            Self::Conflict => "conflict",
            Self::PreconditionFailed => "precondition-failed",
            Self::PayloadTooLarge => "payload-too-large",
            Self::RangeNotSatisfiable => "range-not-satisfiable",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::TooManyRequests => "too-many-requests",
            Self::Unavailable => "unavailable",
            Self::BadGateway => "bad-gateway",
            Self::Internal => "internal",
        }
    }
}

/// An error on its way to a client: a code, a stable problem type slug and a human detail.
///
/// The `type` member of the problem is `https://artstore.dev/problems/<slug>`; clients match
/// on the slug, which never changes once released.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Decides the status.
    pub code: ErrorCode,
    /// The stable machine-readable problem type slug (e.g. `archived`, `legal-hold`).
    pub kind: &'static str,
    /// One lowercase sentence for a person.
    pub detail: String,
    /// Extra members merged into the problem object.
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The prefix of every problem `type` URI.
pub const PROBLEM_TYPE_BASE: &str = "https://artstore.dev/problems/";

impl ApiError {
    /// An error with the code's default type slug.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self { code, kind: code.default_type(), detail: detail.into(), extra: None }
    }

    /// An error with an explicit problem type slug.
    pub fn typed(code: ErrorCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self { code, kind, detail: detail.into(), extra: None }
    }

    /// Adds a member to the problem object.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.get_or_insert_with(Default::default).insert(key.to_owned(), value.into());
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, detail)
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, detail)
    }
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, detail)
    }
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, detail)
    }

    /// The problem object as JSON.
    pub fn to_problem(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct Problem<'a> {
            #[serde(rename = "type")]
            kind: String,
            title: &'a str,
            status: u16,
            detail: &'a str,
        }
        let status = self.code.status();
        let mut v = serde_json::to_value(Problem {
            kind: format!("{PROBLEM_TYPE_BASE}{}", self.kind),
            title: status.canonical_reason().unwrap_or("error"),
            status: status.as_u16(),
            detail: &self.detail,
        })
        .unwrap_or_default();
        if let (Some(extra), Some(obj)) = (&self.extra, v.as_object_mut()) {
            for (k, val) in extra {
                obj.entry(k.clone()).or_insert_with(|| val.clone());
            }
        }
        v
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for ApiError {}

/// Marker put into response extensions so the logging middleware logs each error once.
#[derive(Debug, Clone)]
pub struct LoggedError {
    pub code: ErrorCode,
    pub kind: &'static str,
    pub detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let body = serde_json::to_vec(&self.to_problem()).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        resp.extensions_mut().insert(LoggedError { code: self.code, kind: self.kind, detail: self.detail });
        resp
    }
}

/// A JSON body, or the extractor's rejection as a problem (`bad-json`; 415 without the
/// JSON content type): handlers take `Result<Json<T>, JsonRejection>` and call this.
pub fn json_body<T>(r: Result<axum::Json<T>, axum::extract::rejection::JsonRejection>) -> Result<T, ApiError> {
    use axum::extract::rejection::JsonRejection;
    r.map(|axum::Json(v)| v).map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::typed(
                ErrorCode::PayloadTooLarge,
                "payload-too-large",
                format!("the JSON body is larger than this API reads: {}", e.body_text()),
            );
        }
        let code = if matches!(e, JsonRejection::MissingJsonContentType(_)) {
            ErrorCode::UnsupportedMediaType
        } else {
            ErrorCode::BadRequest
        };
        ApiError::typed(code, "bad-json", e.body_text())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_has_rfc9457_members() {
        let p = ApiError::typed(ErrorCode::Forbidden, "archived", "content is in the cold tier")
            .with("mode", "ar")
            .to_problem();
        assert_eq!(p["type"], "https://artstore.dev/problems/archived");
        assert_eq!(p["status"], 403);
        assert_eq!(p["title"], "Forbidden");
        assert_eq!(p["detail"], "content is in the cold tier");
        assert_eq!(p["mode"], "ar");
    }

    #[test]
    fn response_is_problem_json() {
        let r = ApiError::not_found("no such file").into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }
}
