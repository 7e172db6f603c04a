//! The API error: an OCI error code, a message a user can act on, and the HTTP status. This is
//! the only place where errors of the lower layers become statuses and wire codes. Internal
//! details are logged, never sent to clients.

use axum::response::{IntoResponse, Response};
use berth_blob::BlobError;
use berth_core::Error as CoreError;
use berth_meta::MetaError;
use berth_oci::ErrorCode;
use http::{HeaderValue, StatusCode};

/// An error answered to a registry client in the spec's JSON form.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    /// Extra headers (`WWW-Authenticate`, `Range`, `Content-Range`).
    pub headers: Vec<(http::HeaderName, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), detail: None, headers: Vec::new() }
    }
    pub fn with_header(mut self, name: http::HeaderName, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }
    pub fn with_detail(mut self, detail: serde_json::Value) -> ApiError {
        self.detail = Some(detail);
        self
    }
    pub fn blob_unknown(digest: &impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::BlobUnknown, format!("blob {digest} is not in this repository"))
    }
    pub fn manifest_unknown(reference: &impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown, format!("manifest {reference} is not in this repository"))
    }
    pub fn upload_unknown() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::BlobUploadUnknown,
            "upload session unknown or expired; start a new upload with POST /v2/<name>/blobs/uploads/",
        )
    }
    pub fn name_invalid(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::NameInvalid, msg)
    }
    pub fn digest_invalid(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::DigestInvalid, msg)
    }
    pub fn unsupported(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::Unsupported, msg)
    }
    pub fn denied(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Denied, msg)
    }
    pub fn internal(context: &str, err: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %err, "{context}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Unsupported, format!("internal error while {context}; see the server log"))
    }
}

/// The HTTP status of an application error: decided here, once, for every wire format (the
/// `/v2` OCI errors below and the admin API's errors use it).
pub fn status_of(e: &CoreError) -> StatusCode {
    match e {
        CoreError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        CoreError::Denied(_) => StatusCode::FORBIDDEN,
        CoreError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        CoreError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        CoreError::Invalid(_) => StatusCode::BAD_REQUEST,
        CoreError::NotFound(_) => StatusCode::NOT_FOUND,
        CoreError::Conflict(_) => StatusCode::CONFLICT,
        CoreError::NameInvalid(_)
        | CoreError::DigestInvalid(_)
        | CoreError::ManifestInvalid(_)
        | CoreError::ManifestBlobUnknown { .. }
        | CoreError::TagInvalid(_)
        | CoreError::SizeInvalid(_) => StatusCode::BAD_REQUEST,
        CoreError::NameUnknown(_) | CoreError::BlobUnknown(_) | CoreError::ManifestUnknown(_) | CoreError::UploadUnknown => StatusCode::NOT_FOUND,
        CoreError::UploadOutOfOrder { .. } | CoreError::UploadBusy { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        CoreError::BodyFailed { slow: true, .. } => StatusCode::REQUEST_TIMEOUT,
        CoreError::BodyFailed { slow: false, .. } => StatusCode::BAD_REQUEST,
        CoreError::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
        CoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        CoreError::Upstream(_) => StatusCode::BAD_GATEWAY,
        CoreError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `Range: 0-<last byte>` as distribution sends it (`0-0` for an empty upload).
pub fn range_value(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

impl ApiError {
    /// The `/v2` form of an application error: status, OCI code, message and the headers the
    /// spec asks for (`Range` for uploads, `Retry-After`).
    pub fn from_core(e: &CoreError) -> ApiError {
        let status = status_of(e);
        let code = match e {
            CoreError::Unauthenticated(_) => ErrorCode::Unauthorized,
            CoreError::Denied(_) => ErrorCode::Denied,
            CoreError::RateLimited { .. } | CoreError::Busy { .. } => ErrorCode::TooManyRequests,
            CoreError::Unavailable(_) | CoreError::Upstream(_) => ErrorCode::Unavailable,
            CoreError::Invalid(_) | CoreError::Conflict(_) | CoreError::Unsupported(_) | CoreError::Internal { .. } => ErrorCode::Unsupported,
            CoreError::NotFound(_) | CoreError::NameUnknown(_) => ErrorCode::NameUnknown,
            CoreError::NameInvalid(_) => ErrorCode::NameInvalid,
            CoreError::DigestInvalid(_) => ErrorCode::DigestInvalid,
            CoreError::BlobUnknown(_) => ErrorCode::BlobUnknown,
            CoreError::ManifestUnknown(_) => ErrorCode::ManifestUnknown,
            CoreError::ManifestInvalid(_) => ErrorCode::ManifestInvalid,
            CoreError::ManifestBlobUnknown { .. } => ErrorCode::ManifestBlobUnknown,
            CoreError::TagInvalid(_) => ErrorCode::TagInvalid,
            CoreError::SizeInvalid(_) => ErrorCode::SizeInvalid,
            CoreError::UploadUnknown => ErrorCode::BlobUploadUnknown,
            CoreError::UploadOutOfOrder { .. } | CoreError::UploadBusy { .. } | CoreError::BodyFailed { .. } => ErrorCode::BlobUploadInvalid,
        };
        let mut out = ApiError::new(status, code, e.to_string());
        match e {
            CoreError::UploadOutOfOrder { expected: offset, .. } | CoreError::UploadBusy { offset } => {
                out = out.with_header(http::header::RANGE, range_value(*offset));
            }
            CoreError::BodyFailed { kept: Some(kept), .. } => out = out.with_header(http::header::RANGE, range_value(*kept)),
            CoreError::RateLimited { retry_after, .. } | CoreError::Busy { retry_after, .. } => {
                out = out.with_header(http::header::RETRY_AFTER, retry_after.to_string());
            }
            CoreError::Unavailable(_) => out = out.with_header(http::header::RETRY_AFTER, "5"),
            CoreError::ManifestBlobUnknown { missing, .. } => {
                let list: Vec<String> = missing.iter().map(|d| d.to_string()).collect();
                out = out.with_detail(serde_json::json!({ "missing": list }));
            }
            _ => {}
        }
        out
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        ApiError::from_core(&e)
    }
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> ApiError {
        ApiError::from_core(&e.into())
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> ApiError {
        ApiError::from_core(&e.into())
    }
}

/// The status and reason of a request body that failed midway: 408 when it was slower than
/// `limits.body_min_rate`, else 400.
pub fn body_failure(e: &std::io::Error) -> (StatusCode, String) {
    match slow_body(e) {
        Some(m) => (StatusCode::REQUEST_TIMEOUT, m),
        None => (StatusCode::BAD_REQUEST, format!("the request body failed midway ({e})")),
    }
}

pub use berth_core::error::slow_body;

/// The answer to a request body that could not be read whole: 408 when it was too slow,
/// 413 when it was larger than `limit` bytes, else 400.
pub fn body_error(e: &axum::Error, what: &str, limit: usize) -> ApiError {
    if let Some(m) = slow_body(e) {
        return ApiError::new(StatusCode::REQUEST_TIMEOUT, ErrorCode::SizeInvalid, m);
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::SizeInvalid, format!("{what} is larger than {limit} bytes"));
        }
        cur = err.source();
    }
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::SizeInvalid, format!("the {what} body could not be read: {e}"))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = serde_json::json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(d) = self.detail {
            err["detail"] = d;
        }
        let body = serde_json::json!({ "errors": [err] }).to_string();
        let mut resp = (self.status, body).into_response();
        let h = resp.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.append(name, v);
            }
        }
        resp
    }
}

pub type ApiResult<T = Response> = Result<T, ApiError>;
