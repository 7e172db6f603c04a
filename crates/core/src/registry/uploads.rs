//! Blob uploads: the workflow over the metadata and blob stores (monolithic, started then
//! finished, chunked, status, cancel, cross-repository mount).
//!
//! An upload is a record in the metadata store (repository, offset, part count, the serialised
//! running hash) and data in the blob store under the same id. Record first, data second: data
//! without a record is garbage to `berth gc`; deleting goes the other way round.
//!
//! Every write (a chunk, the final chunk, a monolithic body) and every completion first *claims*
//! the record with a random token and a lease ([`UPLOAD_LEASE_SECS`], renewed every third of it
//! while the body streams), restores the hasher from the record's checkpoint, hands it to
//! [`BlobStore::upload_write`](berth_blob::BlobStore::upload_write) with the record's offset and
//! part number, and then *releases* the claim by compare-and-set with the new offset, checkpoint
//! and part count. The claim serialises writes to one upload across every process on the store
//! (a second writer is told the upload is busy); a writer whose claim was taken over records
//! nothing (its bytes past the recorded offset are replaced by the next write), and the client
//! is told to ask the upload's status. The digest is checked with the hasher before the blob
//! store completes the upload, so no byte is ever read back to hash it, after a restart or on
//! another process alike.
//!
//! A body that fails midway (a reset, or a stall ended by the server's body timeout) keeps what
//! arrived: the release records it and the error says where to resume. A monolithic upload has
//! no session for the client to resume, so there nothing is kept.
//!
//! The hash algorithm of an upload is chosen at its first write: the digest's when it is known
//! (monolithic uploads, and POST then PUT with the whole body), else sha256. A sha512 digest on
//! an upload whose chunks were hashed with sha256 is the one case that reads bytes back: the
//! completed object is hashed once with sha512 before it is recorded (and deleted on a
//! mismatch).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use berth_access::Action;
use berth_blob::{BlobError, ByteStream, PartWritten};
use berth_meta::{BlobCommit, MetadataStore, UploadClaim, UploadRecord};
use berth_oci::{Algorithm, Digest, RepoName, ResumableHasher};
use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::oneshot;

use crate::auth::Caller;
use crate::error::{body_failed, Error, Result};
use crate::Core;

/// How long a claim on an upload lasts unless renewed. A writer renews it every third of this
/// while its body streams; a process that dies mid-write leaves the upload busy at most this
/// long.
pub const UPLOAD_LEASE_SECS: i64 = 30;

/// Metric outcomes of a closed session (`berth_upload_sessions_finished_total{outcome}`).
const COMMITTED: &str = "committed";
const CANCELLED: &str = "cancelled";
const DIGEST_MISMATCH: &str = "digest_mismatch";

fn session_started() {
    metrics::counter!("berth_upload_sessions_started_total").increment(1);
    metrics::gauge!("berth_upload_sessions_active").increment(1.0);
}

fn session_finished(outcome: &'static str) {
    metrics::counter!("berth_upload_sessions_finished_total", "outcome" => outcome).increment(1);
    metrics::gauge!("berth_upload_sessions_active").decrement(1.0);
}

fn claim_lost(offset: u64) -> Error {
    tracing::info!(offset, "an upload write lost its claim; nothing of it was recorded");
    Error::UploadBusy { offset }
}

impl Core {
    /// Opens an upload session of `repo`; returns its id.
    pub async fn upload_start(&self, repo: &RepoName) -> Result<String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        // Record first, data second: upload data without a record is garbage to `berth gc`.
        self.meta.create_upload(&id, repo, crate::clock::now_secs()).await?;
        self.blobs.upload_create(&id).await?;
        session_started();
        Ok(id)
    }

    /// Mounts blob `digest` of `from` into `repo` if the caller may pull `from` and it has the
    /// blob; false otherwise (the caller then starts a normal upload, as the spec says).
    pub async fn upload_mount(&self, caller: &Caller, repo: &RepoName, from: &RepoName, digest: &Digest) -> Result<bool> {
        // Mounting reads `from`: the caller must be allowed to pull there.
        if !caller.allows(from.as_str(), Action::Pull) {
            return Ok(false);
        }
        if self.meta.mount_blob(repo, from, digest, crate::clock::now_secs()).await?.is_none() {
            return Ok(false);
        }
        tracing::info!(%repo, %from, %digest, subject = %caller.subject, "blob mounted");
        Ok(true)
    }

    /// The bytes upload `id` of `repo` holds (what its finished writes stored).
    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<u64> {
        match self.meta.get_upload(id).await? {
            Some(rec) if &rec.repo == repo => Ok(rec.offset),
            _ => Err(Error::UploadUnknown),
        }
    }

    /// Appends `body` to upload `id`; when `expected_offset` is given the upload must hold
    /// exactly that many bytes. Returns the bytes the upload holds after it.
    ///
    /// Errors: `UploadUnknown`; `UploadOutOfOrder` (the upload holds another number of bytes);
    /// `UploadBusy` (another request is writing to it, or took it over from this one: nothing
    /// of this request was recorded); `BodyFailed { kept: Some(n) }` (the body failed midway;
    /// the upload kept what arrived and holds `n` bytes).
    pub async fn upload_append(&self, repo: &RepoName, id: &str, expected_offset: Option<u64>, body: ByteStream) -> Result<u64> {
        let mut claim = Claim::take(self, repo, id, expected_offset).await?;
        let outcome = claim.write(self, body, Algorithm::Sha256).await?;
        let offset = claim.record.offset;
        if !claim.release().await? {
            return Err(claim_lost(self.recorded_offset(id).await?));
        }
        match outcome {
            None => Ok(offset),
            Some(e) => {
                tracing::info!(%repo, upload = id, kept = offset, error = %e, "upload body failed midway");
                Err(resumable_body_failure(&e, offset))
            }
        }
    }

    /// Completes upload `id` as blob `digest` of `repo`, after writing `body` (the last chunk)
    /// if there is one; `expected_offset` as for [`Core::upload_append`] (for that chunk).
    ///
    /// Errors: those of [`Core::upload_append`] for the last chunk (a failed body keeps what
    /// arrived and completes nothing); `DigestInvalid` when the content does not hash to
    /// `digest` (the upload is discarded, as the message says).
    pub async fn upload_finish(
        &self,
        caller: &Caller,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        expected_offset: Option<u64>,
        body: Option<ByteStream>,
    ) -> Result<()> {
        let mut claim = Claim::take(self, repo, id, expected_offset).await?;
        if let Some(body) = body {
            if let Some(e) = claim.write(self, body, digest.algorithm()).await? {
                let kept = claim.record.offset;
                if !claim.release().await? {
                    return Err(claim_lost(self.recorded_offset(id).await?));
                }
                tracing::info!(%repo, upload = id, kept, error = %e, "upload body failed midway");
                return Err(resumable_body_failure(&e, kept));
            }
        }
        self.complete(claim, caller, repo, digest).await
    }

    /// A whole blob in one request (`POST ?digest=`): a session that lives only for the
    /// request. On any failure nothing is kept (there is no session for the client to resume).
    pub async fn upload_monolithic(&self, caller: &Caller, repo: &RepoName, digest: &Digest, body: ByteStream) -> Result<()> {
        let id = self.upload_start(repo).await?;
        let result = async {
            let mut claim = Claim::take(self, repo, &id, Some(0)).await?;
            if let Some(e) = claim.write(self, body, digest.algorithm()).await? {
                claim.forget();
                tracing::info!(%repo, error = %e, "monolithic upload body failed midway");
                return Err(body_failed(&e, "nothing was stored: retry the upload", None));
            }
            self.complete(claim, caller, repo, digest).await
        }
        .await;
        if result.is_err() {
            // A digest mismatch already discarded the session; anything else discards it here.
            if self.discard(&id).await {
                session_finished(CANCELLED);
            }
        }
        result
    }

    /// Cancels upload `id` of `repo` and frees its bytes.
    pub async fn upload_cancel(&self, repo: &RepoName, id: &str) -> Result<()> {
        self.upload_status(repo, id).await?;
        if self.discard(id).await {
            session_finished(CANCELLED);
        }
        Ok(())
    }

    /// Removes an upload's record, then its data; whether the record was there. Failures are
    /// logged (garbage collection removes what is left).
    async fn discard(&self, id: &str) -> bool {
        let removed = match self.meta.delete_upload(id).await {
            Ok(removed) => removed,
            Err(e) => {
                tracing::warn!(upload = id, error = %e, "could not delete an upload record; gc will");
                return false;
            }
        };
        if let Err(e) = self.blobs.upload_abort(id).await {
            tracing::warn!(upload = id, error = %e, "could not delete upload data; gc will");
        }
        removed
    }

    /// The offset recorded for upload `id` (after a lost claim: where the client resumes).
    async fn recorded_offset(&self, id: &str) -> Result<u64> {
        self.meta.get_upload(id).await?.map(|r| r.offset).ok_or(Error::UploadUnknown)
    }

    /// Hashes a stored object with `algorithm`, one chunk at a time on the blocking pool. Only
    /// for the rare upload whose chunks arrived before its digest named another algorithm than
    /// the one they were hashed with (sha512 after chunks hashed as sha256).
    async fn hash_object(&self, key: &str, algorithm: Algorithm) -> Result<Digest> {
        use futures_util::StreamExt as _;
        let mut reader = self.blobs.open(key, None).await?;
        let mut hasher = ResumableHasher::new(algorithm);
        while let Some(chunk) = reader.body.next().await {
            let chunk = chunk.map_err(|e| Error::internal("reading an upload back to hash it", e))?;
            hasher = tokio::task::spawn_blocking(move || {
                hasher.update(&chunk);
                hasher
            })
            .await
            .map_err(|e| Error::internal("hashing an upload", e))?;
        }
        Ok(hasher.finish())
    }

    /// Verifies the claimed upload against `digest` with its hasher, completes it in the blob
    /// store and records the blob. Holds the claim throughout.
    async fn complete(&self, mut claim: Claim, caller: &Caller, repo: &RepoName, digest: &Digest) -> Result<()> {
        let id = claim.record.id.clone();
        let hasher = claim.hasher(digest.algorithm())?;
        // Chunks that arrived before the digest was known were hashed with sha256; a digest of
        // another algorithm is checked by hashing the completed object once (below).
        let rehash = hasher.algorithm() != digest.algorithm();
        if !rehash {
            let actual = hasher.finish();
            if actual != *digest {
                claim.forget();
                self.discard(&id).await;
                session_finished(DIGEST_MISMATCH);
                return Err(Error::DigestInvalid(format!("uploaded content has digest {actual}, not {digest}; the upload was discarded")));
            }
        }
        let (parts, size) = (claim.record.parts, claim.record.offset);
        let committed = match self.blobs.upload_complete(&id, parts, size, digest).await {
            Ok(c) => c,
            Err(e @ (BlobError::SizeMismatch { .. } | BlobError::UploadUnknown(_))) => {
                // The blob store lost bytes the record counts (a machine crash before they
                // were durable): the upload cannot be completed.
                tracing::error!(upload = id, error = %e, "upload data is missing bytes its record counts; discarding the upload");
                claim.forget();
                if self.discard(&id).await {
                    session_finished(CANCELLED);
                }
                return Err(Error::UploadUnknown);
            }
            Err(e) => return Err(e.into()),
        };
        // The data is now an object: from here on the claim must not be released over a record
        // that no longer has data (the record is deleted below).
        claim.forget();
        if rehash {
            // The object is not visible until it is recorded: verify it first, and on a mismatch
            // (or a failure) delete it with the session.
            let checked = self.hash_object(&committed.key, digest.algorithm()).await;
            if !matches!(&checked, Ok(actual) if actual == digest) {
                if let Err(e) = self.blobs.delete(&committed.key).await {
                    tracing::warn!(error = %e, key = committed.key, "could not delete an unverified object; gc will");
                }
                self.meta.delete_upload(&id).await?;
                session_finished(DIGEST_MISMATCH);
                let actual = checked?;
                return Err(Error::DigestInvalid(format!("uploaded content has digest {actual}, not {digest}; the upload was discarded")));
            }
        }
        match self.meta.commit_blob(repo, digest, committed.size, &committed.key, crate::clock::now_secs()).await? {
            BlobCommit::Stored => {}
            BlobCommit::AlreadyPresent { .. } => {
                if let Err(e) = self.blobs.delete(&committed.key).await {
                    tracing::warn!(error = %e, key = committed.key, "could not delete a duplicate object; gc will");
                }
            }
        }
        self.meta.delete_upload(&id).await?;
        session_finished(COMMITTED);
        tracing::info!(%repo, %digest, size = committed.size, subject = %caller.subject, "blob pushed");
        Ok(())
    }
}

/// A failed body of a resumable upload that kept `kept` bytes.
fn resumable_body_failure(e: &io::Error, kept: u64) -> Error {
    body_failed(e, &format!("the upload kept {kept} bytes: resume with a PATCH to the upload's location starting at byte {kept}"), Some(kept))
}

/// A claim on an upload record, held by one request. While it is held a task renews its lease.
/// Dropped without [`Claim::release`] or [`Claim::forget`] (the request was dropped), it is
/// released in the background with the last state that is known to be stored.
struct Claim {
    meta: Arc<dyn MetadataStore>,
    token: String,
    /// The record as claimed, then as written (offset, hash state, parts) by this claim.
    record: UploadRecord,
    /// Renews the lease; tells `lost` when it could not.
    renewer: tokio::task::JoinHandle<()>,
    lost: Option<oneshot::Receiver<()>>,
    done: bool,
}

impl Claim {
    async fn take(core: &Core, repo: &RepoName, id: &str, expected_offset: Option<u64>) -> Result<Claim> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let now = crate::clock::now_secs();
        let record = match core.meta.claim_upload(id, repo, expected_offset, &token, now + UPLOAD_LEASE_SECS, now).await? {
            UploadClaim::Claimed(record) => record,
            UploadClaim::Busy { offset } => return Err(Error::UploadBusy { offset }),
            UploadClaim::OutOfOrder { offset } => return Err(Error::UploadOutOfOrder { expected: offset, got: expected_offset.unwrap_or(offset) }),
            UploadClaim::Unknown => return Err(Error::UploadUnknown),
        };
        let (lost_tx, lost) = oneshot::channel();
        let renewer = tokio::spawn(renew(core.meta.clone(), id.to_owned(), token.clone(), lost_tx));
        Ok(Claim { meta: core.meta.clone(), token, record, renewer, lost: Some(lost), done: false })
    }

    /// The running hash of the recorded bytes; a new one of `algorithm` before the first byte.
    fn hasher(&self, algorithm: Algorithm) -> Result<ResumableHasher> {
        let rec = &self.record;
        if rec.offset == 0 {
            return Ok(ResumableHasher::new(algorithm));
        }
        let hasher = ResumableHasher::restore(&rec.hash_state).map_err(|e| Error::internal("restoring an upload's running hash", format!("upload {}: {e}", rec.id)))?;
        if hasher.bytes_hashed() != rec.offset {
            return Err(Error::internal(
                "restoring an upload's running hash",
                format!("upload {}: the checkpoint covers {} bytes, the record {}", rec.id, hasher.bytes_hashed(), rec.offset),
            ));
        }
        Ok(hasher)
    }

    /// Writes `body` as the next part (its hash starts as `algorithm` if the upload is empty)
    /// and records the result in this claim (not yet in the store). Returns the body's error if
    /// it failed midway; an error means nothing of the write counts.
    async fn write(&mut self, core: &Core, body: ByteStream, algorithm: Algorithm) -> Result<Option<io::Error>> {
        let hasher = self.hasher(algorithm)?;
        let body: ByteStream = match self.lost.take() {
            Some(lost) => Box::pin(UntilLost { body, lost: Some(lost) }),
            None => body,
        };
        let rec = &self.record;
        let PartWritten { written, hasher, body_error } = match core.blobs.upload_write(&rec.id, rec.parts + 1, rec.offset, body, hasher).await {
            Ok(w) => w,
            Err(BlobError::OutOfOrder { expected, got }) => {
                // The blob store holds fewer bytes than the record counts (lost by a machine
                // crash before they were durable): the upload cannot continue.
                tracing::error!(upload = rec.id, stored = expected, recorded = got, "upload data is missing bytes its record counts; discarding the upload");
                let id = rec.id.clone();
                self.forget();
                if core.discard(&id).await {
                    session_finished(CANCELLED);
                }
                return Err(Error::UploadUnknown);
            }
            Err(e) => return Err(e.into()),
        };
        metrics::counter!("berth_bytes_received_total").increment(written);
        if written > 0 {
            self.record.offset += written;
            self.record.parts += 1;
            self.record.hash_state = hasher.checkpoint();
        }
        Ok(body_error)
    }

    /// Records this claim's state and ends the claim; false if the claim was lost (another
    /// request took the upload over, or it is gone): then nothing was recorded.
    async fn release(mut self) -> Result<bool> {
        self.done = true;
        self.renewer.abort();
        let rec = &self.record;
        Ok(self.meta.release_upload(&rec.id, &self.token, rec.offset, &rec.hash_state, rec.parts, crate::clock::now_secs()).await?)
    }

    /// Ends the claim without recording anything (the record is being deleted).
    fn forget(&mut self) {
        self.done = true;
        self.renewer.abort();
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.renewer.abort();
        if self.done {
            return;
        }
        // The request was dropped mid-way: give the upload back at the last state this claim
        // knows to be stored, so the client's next request need not wait for the lease.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (meta, token, rec) = (self.meta.clone(), std::mem::take(&mut self.token), self.record.clone());
        runtime.spawn(async move {
            if let Err(e) = meta.release_upload(&rec.id, &token, rec.offset, &rec.hash_state, rec.parts, crate::clock::now_secs()).await {
                tracing::warn!(upload = rec.id, error = %e, "could not release an upload claim; its lease will end");
            }
        });
    }
}

/// Renews a claim's lease every third of it; tells `lost` and stops if the claim was lost.
async fn renew(meta: Arc<dyn MetadataStore>, id: String, token: String, lost: oneshot::Sender<()>) {
    let every = Duration::from_secs((UPLOAD_LEASE_SECS / 3).max(1) as u64);
    loop {
        tokio::time::sleep(every).await;
        match meta.renew_upload_claim(&id, &token, crate::clock::now_secs() + UPLOAD_LEASE_SECS).await {
            Ok(true) => {}
            Ok(false) => {
                let _ = lost.send(());
                return;
            }
            // A store that does not answer now may answer at the next renewal, before the lease ends.
            Err(e) => tracing::warn!(upload = id, error = %e, "could not renew an upload claim"),
        }
    }
}

/// A body that fails as soon as its claim is lost, so the write stops within one batch.
struct UntilLost {
    body: ByteStream,
    lost: Option<oneshot::Receiver<()>>,
}

impl Stream for UntilLost {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(lost) = self.lost.as_mut() {
            match Pin::new(lost).poll(cx) {
                Poll::Ready(Ok(())) => {
                    self.lost = None;
                    self.body = Box::pin(futures_util::stream::empty());
                    return Poll::Ready(Some(Err(io::Error::other("another request took this upload over (this request's claim ended)"))));
                }
                // The renewer ended without losing the claim (the write is over).
                Poll::Ready(Err(_)) => self.lost = None,
                Poll::Pending => {}
            }
        }
        self.body.as_mut().poll_next(cx)
    }
}
