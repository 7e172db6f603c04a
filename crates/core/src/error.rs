//! The application's one error type. Every layer's failure becomes an [`Error`] here; each wire
//! format (the OCI error JSON of `/v2`, the admin API's JSON, the CLI's messages, the UI) maps it
//! in exactly one place of its own (`berth-server/src/error.rs` decides the HTTP statuses).
//!
//! Messages are written for the person who reads them: what went wrong and what to do. Internal
//! failures keep their detail for the log ([`Error::Internal`]'s `detail`), never for clients.

use berth_blob::BlobError;
use berth_meta::MetaError;
use berth_oci::Digest;

/// What went wrong, by kind. The kind decides the status in every wire format.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable credentials: the caller must authenticate (again).
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Denied(String),
    /// Too many failed logins: try again after `retry_after` seconds.
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    /// The server is saturated (all password-check slots taken): retry after `retry_after`.
    #[error("{message}")]
    Busy { message: String, retry_after: u64 },

    /// Input that breaks a rule (a malformed robot, a bad time, a bad scope list).
    #[error("{0}")]
    Invalid(String),
    /// Something named does not exist (admin objects).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with what is stored (a name taken, an object still in use).
    #[error("{0}")]
    Conflict(String),

    // ---- the registry's own kinds (each has an OCI error code) ----
    #[error("{0}")]
    NameInvalid(String),
    #[error("{0}")]
    NameUnknown(String),
    #[error("{0}")]
    DigestInvalid(String),
    #[error("blob {0} is not in this repository")]
    BlobUnknown(String),
    #[error("manifest {0} is not in this repository")]
    ManifestUnknown(String),
    #[error("{0}")]
    ManifestInvalid(String),
    /// A manifest refers to blobs or manifests the repository lacks.
    #[error("{message}")]
    ManifestBlobUnknown { message: String, missing: Vec<Digest> },
    #[error("{0}")]
    TagInvalid(String),
    #[error("{0}")]
    SizeInvalid(String),
    #[error("upload session unknown or expired; start a new upload with POST /v2/<name>/blobs/uploads/")]
    UploadUnknown,
    /// A chunk that does not start where the upload ends.
    #[error("chunk starts at byte {got} but the upload has {expected} bytes; resume from {expected}")]
    UploadOutOfOrder { expected: u64, got: u64 },
    /// Another request is writing to this upload right now.
    #[error("another request is writing to this upload (it has {offset} bytes so far); retry when it is done")]
    UploadBusy { offset: u64 },
    /// The request body failed midway. `slow`: it was slower than the configured minimum rate.
    /// `kept`: for a resumable upload, the bytes the upload now holds (the client resumes there).
    #[error("{message}")]
    BodyFailed { message: String, slow: bool, kept: Option<u64> },
    #[error("{0}")]
    Unsupported(String),

    /// A store behind Berth does not answer (or says it cannot now); the request may be retried.
    /// The message names the store; details go only to the log.
    #[error("{0} is unavailable; retry later")]
    Unavailable(&'static str),
    /// A service Berth calls for the client (an identity provider) failed or answered something
    /// unusable. The message is safe to show (names the provider, not its URLs or secrets).
    #[error("{0}")]
    Upstream(String),
    /// A failure of the server itself. `context` is what Berth was doing (sent to the client);
    /// `detail` goes only to the log.
    #[error("internal error while {context}; see the server log")]
    Internal { context: &'static str, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An internal error; logs its detail once, here.
    pub fn internal(context: &'static str, detail: impl std::fmt::Display) -> Error {
        let detail = detail.to_string();
        tracing::error!(error = %detail, "{context}");
        Error::Internal { context, detail }
    }

    pub fn not_found(what: &str, name: &str) -> Error {
        Error::NotFound(format!("{what} {name:?} does not exist"))
    }
}

impl From<MetaError> for Error {
    fn from(e: MetaError) -> Error {
        match e {
            MetaError::Conflict(m) => Error::Conflict(m),
            MetaError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "metadata store unavailable");
                Error::Unavailable("the metadata store")
            }
            other => Error::internal("accessing the metadata store", other),
        }
    }
}

impl From<BlobError> for Error {
    fn from(e: BlobError) -> Error {
        match e {
            BlobError::UploadUnknown(_) => Error::UploadUnknown,
            BlobError::OutOfOrder { expected, got } => Error::UploadOutOfOrder { expected, got },
            BlobError::SizeMismatch { declared, actual } => Error::SizeInvalid(format!("upload has {actual} bytes, not the declared {declared}")),
            BlobError::NotFound(key) => Error::internal("reading a blob whose object is missing", key),
            BlobError::Io(io) => Error::internal("writing to blob storage", io),
            BlobError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "blob storage unavailable");
                Error::Unavailable("the blob storage")
            }
        }
    }
}

/// The error a server puts into a request body that delivered less than `limits.body_min_rate`
/// bytes per second over a window (or nothing for a whole window); the core recognises it in a
/// failed body's error chain (see [`body_failed`]) and answers "too slow" instead of "broken".
#[derive(Debug, Clone, thiserror::Error)]
#[error("the request body arrived too slowly: {received} bytes in {window_secs} s, at least {min_rate} bytes/s are required (limits.body_min_rate)")]
pub struct BodyTooSlow {
    pub received: u64,
    pub window_secs: u64,
    pub min_rate: u64,
}

/// The message of a [`BodyTooSlow`] somewhere in a body error's chain.
pub fn slow_body(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    // io::Error's `source()` skips the error it wraps, so look at that one first.
    let start: &(dyn std::error::Error + 'static) = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
        Some(inner) => inner,
        None => e,
    };
    let mut cur = Some(start);
    while let Some(err) = cur {
        if let Some(slow) = err.downcast_ref::<BodyTooSlow>() {
            return Some(slow.to_string());
        }
        cur = err.source();
    }
    None
}

/// A body that failed midway: why (too slow, or broken), then `what_next`.
pub fn body_failed(e: &std::io::Error, what_next: &str, kept: Option<u64>) -> Error {
    match slow_body(e) {
        Some(m) => Error::BodyFailed { message: format!("{m}; {what_next}"), slow: true, kept },
        None => Error::BodyFailed { message: format!("the request body failed midway ({e}); {what_next}"), slow: false, kept },
    }
}
