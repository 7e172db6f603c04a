//! Blob storage: immutable objects under storage keys, and upload sessions that stream bytes in,
//! hash them as they arrive, and become an object only once the digest matches.
//!
//! One narrow trait, [`BlobStore`], with the filesystem backend in [`fs`]; S3 joins later.
//! Architecture invariants:
//! - No blob is ever held whole in memory: bodies are streams of chunks in and out.
//! - An object exists under its final key only after its bytes were verified against the digest
//!   and made durable (fsync + atomic rename on the filesystem). A crash leaves at most an
//!   upload file or an orphaned object, never a partial object.
//! - Keys are fresh per commit (`<alg>/<xx>/<hex>/<unique>`), never reused, so deleting an object
//!   cannot race a new upload of the same digest (see `berth-meta`).

use std::pin::Pin;

use async_trait::async_trait;
use berth_oci::Digest;
use bytes::Bytes;
use futures_util::Stream;

pub mod fs;

pub use fs::FsBlobStore;

/// A stream of body chunks.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send + 'static>>;

/// Blob storage errors.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("no upload session {0}")]
    UploadUnknown(String),
    #[error("chunk starts at {got} but the upload has {expected} bytes")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("uploaded content has digest {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("upload has {actual} bytes, not the declared {declared}")]
    SizeMismatch { declared: u64, actual: u64 },
    #[error("no object under key {0}")]
    NotFound(String),
    #[error("the client's body failed: {0}")]
    Body(std::io::Error),
    #[error("storage IO error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = BlobError> = std::result::Result<T, E>;

/// A verified object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub key: String,
    pub size: u64,
}

/// An object opened for reading.
pub struct ObjectReader {
    /// The object's total size.
    pub size: u64,
    /// The requested bytes.
    pub body: ByteStream,
}

/// Blob storage. Implementations must be shareable by several Berth processes (a shared
/// filesystem or one bucket): the only per-process state allowed is a cache that can be rebuilt
/// from storage (the running hash of an upload, recomputed from its bytes when missing).
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Starts an empty upload under `id`.
    async fn upload_create(&self, id: &str) -> Result<()>;

    /// The number of bytes the upload holds, or None if there is no such upload.
    async fn upload_size(&self, id: &str) -> Result<Option<u64>>;

    /// Appends `body` at `offset`, which must equal the current size (else `OutOfOrder`).
    /// Returns the new size. If the body fails midway (`Body` error: a reset, or a stall ended
    /// by the server's body timeout), the bytes that arrived before the error are kept and the
    /// upload stays usable at its new size (the client can ask for the size and resume).
    /// Implementations must not hold a thread while they wait for the body.
    async fn upload_append(&self, id: &str, offset: u64, body: ByteStream) -> Result<u64>;

    /// Verifies the upload against `digest`. On success the bytes become an object under a
    /// fresh key and the upload is gone. On a mismatch the upload is deleted and
    /// `DigestMismatch` returned.
    async fn upload_commit(&self, id: &str, digest: &Digest) -> Result<Committed>;

    /// Deletes an upload's data (idempotent).
    async fn upload_delete(&self, id: &str) -> Result<()>;

    /// Lists upload ids with data in the store (for sweeping sessions whose record is gone).
    async fn upload_ids(&self) -> Result<Vec<String>>;

    /// Opens an object; `range` is an inclusive byte range already checked against the size.
    async fn open(&self, key: &str, range: Option<(u64, u64)>) -> Result<ObjectReader>;

    /// Deletes an object (idempotent).
    async fn delete(&self, key: &str) -> Result<()>;

    /// Lists object keys whose objects are older than `older_than_secs` (for the orphan sweep).
    async fn list_keys(&self, older_than_secs: u64) -> Result<Vec<String>>;
}
