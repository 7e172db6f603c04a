//! Blob storage as object primitives: uploads written part by part at known offsets, completed
//! into immutable objects under fresh keys, objects read by range, deleted and listed.
//!
//! One narrow trait, [`BlobStore`], with the filesystem backend in [`fs`] and the S3 backend in
//! [`s3`]; both run the same test suite (the module `testsuite`: compiled for this crate's own tests, and
//! for other crates' tests with the cargo feature `testsuite`; never in release binaries).
//!
//! The store does not decide what an upload holds: the caller (`berth-core`) does. An upload's
//! offset, its part count and the serialised running hash
//! ([`ResumableHasher`](berth_oci::ResumableHasher)) live in the upload's record in the metadata
//! store and advance by compare-and-set, which also serialises writes to one upload across
//! processes. A write hands the restored hasher to [`BlobStore::upload_write`], which feeds it
//! every byte it stores and hands it back; the caller compares the digest before
//! [`BlobStore::upload_complete`]. So nothing is ever read back to compute a hash (on object
//! storage that would download every part again), and a backend needs only what S3 offers.
//!
//! Architecture invariants:
//! - No blob is ever held whole in memory: bodies are streams of chunks in and out.
//! - Waiting for a client never holds a thread: bodies are polled on the async side.
//! - An object exists under its final key only once its bytes were verified (by the caller,
//!   before it completes the upload) and made durable (fsync + atomic rename on the filesystem).
//!   A crash leaves at most upload data or an orphaned object, never a partial object.
//! - Keys are fresh per completion (`<alg>/<xx>/<hex>/<unique>`), never reused, so deleting an
//!   object cannot race a new upload of the same digest (see `berth-meta`).
//! - A store keeps no state that matters in a process: several Berth processes may share one
//!   (a shared filesystem or one bucket).
//!
//! How the primitives map to the backends:
//!
//! | primitive | filesystem | S3 (see [`s3`]) |
//! |---|---|---|
//! | `upload_create` | empty file `uploads/<id>` | empty marker `uploads/<id>/upload` (after deleting what the id held) |
//! | `upload_write` | truncate at `offset`, positioned writes, writeback every 16 MiB | delete the pieces at or past `offset`; the body as the piece `uploads/<id>/<offset>`: one `PutObject` up to 8 MiB, else a multipart upload of 8 MiB parts; `If-None-Match: *` |
//! | `upload_complete` | truncate to size, fsync, rename to the key, fsync the directory | list the pieces; `CopyObject` of a single piece, or a multipart upload to the key: `UploadPartCopy` of stretches ≥ 5 MiB, short ones read and re-sent in 8 MiB parts; delete the pieces |
//! | `upload_abort` | unlink | delete the upload's objects, `AbortMultipartUpload` of its writes in progress |
//! | `open` / `delete` | read / unlink | `GetObject` with `Range` / `DeleteObject` |
//! | `list_uploads` / `list_objects` | directory walks, in batches | `ListObjectsV2` pages (upload prefixes by delimiter, then `ListMultipartUploads` for dropped writes) / `ListObjectsV2` pages filtered by `LastModified` |

use std::pin::Pin;

use async_trait::async_trait;
use berth_oci::{Digest, ResumableHasher};
use bytes::Bytes;
use futures_util::Stream;

pub mod fs;
pub mod s3;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

pub use fs::FsBlobStore;
pub use s3::{S3Options, S3SetupError, S3Store};

/// A stream of body chunks.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send + 'static>>;

/// A streamed listing (upload ids, object keys), produced page by page as it is consumed. No
/// order is promised.
pub type NameStream = Pin<Box<dyn Stream<Item = Result<String>> + Send + 'static>>;

/// Blob storage errors.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No such upload, or an id the store cannot hold.
    #[error("no upload session {0}")]
    UploadUnknown(String),
    /// The store holds fewer bytes of the upload than a write's offset: bytes the upload's
    /// record counts are missing (e.g. lost by a machine crash before they were made durable).
    /// The upload cannot continue.
    #[error("a write starts at byte {got} but the store holds only {expected} bytes of the upload")]
    OutOfOrder { expected: u64, got: u64 },
    /// A completion declared more bytes than the store holds (same cause as `OutOfOrder`).
    #[error("upload has {actual} bytes, not the declared {declared}")]
    SizeMismatch { declared: u64, actual: u64 },
    /// No object under the key, or a key the store cannot hold.
    #[error("no object under key {0}")]
    NotFound(String),
    #[error("storage IO error: {0}")]
    Io(#[from] std::io::Error),
    /// The storage service did not answer, or answered that it cannot now (S3: no response
    /// after the SDK's retries, or a 5xx such as 503 SlowDown). Nothing of the operation
    /// counts; the same request may be retried later.
    #[error("blob storage unavailable: {0}")]
    Unavailable(String),
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

/// What [`BlobStore::upload_write`] stored.
#[derive(Debug)]
pub struct PartWritten {
    /// Bytes stored from the body, from the write's offset on.
    pub written: u64,
    /// The hasher it was given, having taken in exactly those `written` bytes.
    pub hasher: ResumableHasher,
    /// Set when the body failed midway (a reset, or a stall ended by the server's body timeout).
    /// The bytes that arrived before it are stored and counted in `written` (a backend that
    /// cannot keep a partial part keeps none of it and says so with `written == 0`).
    pub body_error: Option<std::io::Error>,
}

/// Blob storage. Implementations must be shareable by several Berth processes (a shared
/// filesystem or one bucket) and keep no state that matters in a process.
///
/// Writes to one upload are serialised by the caller (the claim on the upload's record); a
/// store may still see a write whose claim was lost (a process that stalled past its lease)
/// after or beside the next one, which is why a write replaces everything from its offset on.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Starts an empty upload under `id` (1 to 64 characters of `[A-Za-z0-9_-]`), replacing
    /// any data an upload of that id had.
    async fn upload_create(&self, id: &str) -> Result<()>;

    /// Stores `body` as part `part` (1 for the first write, then the record's part count + 1)
    /// starting at byte `offset` (the bytes that finished writes stored). Whatever the upload
    /// held from `offset` on (the parts of writes whose claim was lost) is replaced.
    ///
    /// Every stored byte goes through `hasher` (the running hash of the bytes before `offset`)
    /// as it is stored, and the hasher comes back in [`PartWritten`] matching exactly the bytes
    /// stored. A body that fails midway is not an error: see [`PartWritten::body_error`]. An
    /// error (unknown upload, `OutOfOrder` when fewer than `offset` bytes are stored, storage
    /// IO) means nothing this write stored counts.
    ///
    /// Must not hold a thread while it waits for the body, nor hold the body whole in memory.
    async fn upload_write(&self, id: &str, part: u32, offset: u64, body: ByteStream, hasher: ResumableHasher) -> Result<PartWritten>;

    /// Makes the first `size` bytes of the upload (its parts `1..=parts`) durable and an object
    /// under a fresh key `<alg>/<xx>/<hex>/<unique>` of `digest`; the upload is gone. The
    /// digest only names the key: the caller verified the bytes (with the hasher) before. Bytes
    /// past `size` (a lost write's) are dropped; fewer than `size` is `SizeMismatch`.
    async fn upload_complete(&self, id: &str, parts: u32, size: u64, digest: &Digest) -> Result<Committed>;

    /// Deletes an upload's data (idempotent).
    async fn upload_abort(&self, id: &str) -> Result<()>;

    /// Streams the ids of the uploads with data in the store (for sweeping those whose record
    /// is gone).
    fn list_uploads(&self) -> NameStream;

    /// Opens an object; `range` is an inclusive byte range already checked against the size.
    async fn open(&self, key: &str, range: Option<(u64, u64)>) -> Result<ObjectReader>;

    /// Deletes an object (idempotent).
    async fn delete(&self, key: &str) -> Result<()>;

    /// Streams the keys of objects older than `older_than_secs` (for the orphan sweep; an
    /// object's age counts from its completion).
    fn list_objects(&self, older_than_secs: u64) -> NameStream;

    /// A URL where a client can GET the object's bytes (and ranges of them) itself for `ttl`,
    /// without credentials: a presigned URL of object storage, for `storage.redirect`. None for a
    /// store that has no such thing (a local folder): the caller then serves the bytes.
    async fn presign_get(&self, key: &str, ttl: std::time::Duration) -> Result<Option<String>> {
        let _ = (key, ttl);
        Ok(None)
    }

    /// Readiness: the storage answers (one cheap request, no write). The error says what is
    /// wrong (missing folder, unreachable server, missing bucket).
    async fn ping(&self) -> Result<()>;
}

// ---- the names every backend accepts (the trait's rules) ----

/// Longest accepted upload id.
const MAX_UPLOAD_ID_LEN: usize = 64;

/// Upload ids: 1 to 64 characters of `[A-Za-z0-9_-]`.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_UPLOAD_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Object keys: `<alg>/<first two hex>/<hex>/<32 lowercase hex>`.
pub(crate) fn valid_key(key: &str) -> bool {
    let mut parts = key.split('/');
    let (Some(alg), Some(xx), Some(hex), Some(unique), None) = (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let hex_len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == hex_len
        && is_lower_hex(hex)
        && xx.len() == 2
        && hex.starts_with(xx)
        && unique.len() == 32
        && is_lower_hex(unique)
}
