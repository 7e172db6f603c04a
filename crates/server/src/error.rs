//! The API error: an OCI error code, a message a user can act on, and the HTTP status. This is
//! the only place where errors of the lower layers become statuses and wire codes. Internal
//! details are logged, never sent to clients.

use axum::response::{IntoResponse, Response};
use berth_blob::BlobError;
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

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> ApiError {
        ApiError::internal("accessing the metadata store", e)
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> ApiError {
        match e {
            BlobError::UploadUnknown(_) => ApiError::upload_unknown(),
            BlobError::OutOfOrder { expected, got } => ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::BlobUploadInvalid,
                format!("chunk starts at byte {got} but the upload has {expected} bytes; resume from {expected}"),
            )
            .with_header(http::header::RANGE, if expected == 0 { "0-0".to_owned() } else { format!("0-{}", expected - 1) }),
            BlobError::DigestMismatch { expected, actual } => ApiError::digest_invalid(format!(
                "uploaded content has digest {actual}, not {expected}; the upload was discarded"
            )),
            BlobError::SizeMismatch { declared, actual } => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::SizeInvalid,
                format!("upload has {actual} bytes, not the declared {declared}"),
            ),
            BlobError::NotFound(key) => ApiError::internal("reading a blob whose object is missing", key),
            BlobError::Body(io) => {
                let (status, why) = body_failure(&io);
                ApiError::new(status, ErrorCode::BlobUploadInvalid, format!("{why}; query the upload's status and resume"))
            }
            BlobError::Io(io) => ApiError::internal("writing to blob storage", io),
        }
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

/// The message of a [`crate::serve::BodyTooSlow`] somewhere in a body error's chain.
pub fn slow_body(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    // io::Error's `source()` skips the error it wraps, so look at that one first.
    let start: &(dyn std::error::Error + 'static) = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
        Some(inner) => inner,
        None => e,
    };
    let mut cur = Some(start);
    while let Some(err) = cur {
        if let Some(slow) = err.downcast_ref::<crate::serve::BodyTooSlow>() {
            return Some(slow.to_string());
        }
        cur = err.source();
    }
    None
}

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
