//! Filesystem blob store: upload sessions are files under `<root>/uploads/`, objects are files
//! under `<root>/blobs/<alg>/<xx>/<hex>/<unique>`, and a commit is fsync + atomic rename.
//!
//! Data path (the hot part):
//! - `upload_append` polls the client's body on the async side and collects its chunks; once
//!   256 KiB (`APPEND_BATCH`) wait (or the body ended) it runs the SHA-256 and the `writev` of that
//!   batch as one short `spawn_blocking` job, and keeps receiving the next batch meanwhile (up to
//!   2 MiB, `APPEND_PENDING_MAX`, in memory), so receiving and hash+write overlap on two cores.
//!   The file, the hash state and the upload's lock move into each job and back. **Waiting for
//!   the network never holds a blocking thread**: a body that trickles or stalls costs its task
//!   and at most one batch of memory, so thousands of stalled PATCHes cannot starve the
//!   blocking pool that logins (argon2), commits and pulls need.
//! - A body that fails midway (client reset, or the server's body timeout ending a stall) ends
//!   the append with `BlobError::Body` after the bytes received before the error are written:
//!   the upload **keeps them** and stays usable at its new recorded size (the client asks
//!   `GET` status and resumes with a `PATCH` at that offset); nothing is rolled back. If the
//!   request is dropped instead, what a running job writes is kept and the waiting bytes are
//!   not; either way the hash state matches the file.
//! - The running SHA-256 state of each upload is cached in process (`offset -> Hasher`), so a
//!   commit needs no second pass. The cache is only a cache: whenever it is missing or its
//!   offset disagrees with the file's real length (restart, another replica appended, a failed
//!   write), the state is rebuilt by hashing the file from disk.
//! - `open` reads on short blocking jobs of four 512 KiB chunks (`READ_JOB_CHUNKS`), one job
//!   ahead of the consumer, so a slow reader holds at most 2.5 MiB of memory and no thread.
//!
//! Appends and commits of one upload id are serialized within the process by a per-id lock;
//! offsets are always checked against the real file length, never against memory.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::future::{poll_fn, Future};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, PoisonError, Weak};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use berth_oci::{Algorithm, Digest, Hasher};
use bytes::Bytes;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::{BlobError, BlobStore, ByteStream, Committed, ObjectReader, Result};

/// Bytes written between background writebacks of an upload (see `Appender::write`).
const EARLY_WRITEBACK: u64 = 16 * 1024 * 1024;
/// A write+hash job starts once this many body bytes wait (or the body ended), so small client
/// chunks make few, large jobs, and a trickling body makes none until it has something to write.
const APPEND_BATCH: usize = 256 << 10;
/// Body bytes held in memory while a job writes the previous batch; past this the body is not
/// polled until the job is done (memory per append: about this plus one client chunk).
const APPEND_PENDING_MAX: usize = 2 << 20;
/// Size of the chunks an object is read in.
const READ_CHUNK: usize = 512 << 10;
/// Chunks one read job reads (fewer, larger jobs: a job's start costs about as much as copying
/// a few hundred KiB from the page cache).
const READ_JOB_CHUNKS: usize = 4;
/// The next read job starts when at most this many read chunks wait for the consumer (so at
/// most `READ_AHEAD_LOW + READ_JOB_CHUNKS` chunks, 2.5 MiB, per reader are in memory).
const READ_AHEAD_LOW: usize = 1;
/// Buffer size when re-hashing a file from disk.
const HASH_BUFFER: usize = 1 << 20;
/// Longest accepted upload id.
const MAX_ID_LEN: usize = 64;

/// Running SHA-256 states of uploads: id -> (bytes hashed, state).
type HashCache = StdMutex<HashMap<String, (u64, Hasher)>>;

/// A [`BlobStore`] on a local (or shared) filesystem.
pub struct FsBlobStore {
    uploads: PathBuf,
    blobs: PathBuf,
    /// The per-process running-hash cache (rebuildable from disk; the only in-memory state).
    hashes: Arc<HashCache>,
    /// Per-upload-id locks serializing create/append/commit/delete within this process.
    locks: StdMutex<LockMap>,
}

/// Weak references so finished uploads' locks go away; dead entries are pruned as the map grows.
struct LockMap {
    map: HashMap<String, Weak<AsyncMutex<()>>>,
    prune_at: usize,
}

impl std::fmt::Debug for FsBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsBlobStore").field("uploads", &self.uploads).field("blobs", &self.blobs).finish_non_exhaustive()
    }
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `root`, with `uploads/` and `blobs/` under it.
    pub fn open(root: impl Into<PathBuf>) -> Result<FsBlobStore> {
        let root = root.into();
        let uploads = root.join("uploads");
        let blobs = root.join("blobs");
        fs::create_dir_all(&uploads)?;
        fs::create_dir_all(&blobs)?;
        Ok(FsBlobStore {
            uploads,
            blobs,
            hashes: Arc::new(StdMutex::new(HashMap::new())),
            locks: StdMutex::new(LockMap { map: HashMap::new(), prune_at: 64 }),
        })
    }

    fn upload_path(&self, id: &str) -> Result<PathBuf> {
        if valid_id(id) {
            Ok(self.uploads.join(id))
        } else {
            Err(BlobError::UploadUnknown(id.to_owned()))
        }
    }

    fn object_path(&self, key: &str) -> Result<PathBuf> {
        if valid_key(key) {
            Ok(self.blobs.join(key))
        } else {
            Err(BlobError::NotFound(key.to_owned()))
        }
    }

    /// Takes the per-process lock of upload `id`.
    async fn lock_upload(&self, id: &str) -> OwnedMutexGuard<()> {
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            match locks.map.get(id).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    if locks.map.len() >= locks.prune_at {
                        locks.map.retain(|_, w| w.strong_count() > 0);
                        locks.prune_at = (locks.map.len() * 2).max(64);
                    }
                    let m = Arc::new(AsyncMutex::new(()));
                    locks.map.insert(id.to_owned(), Arc::downgrade(&m));
                    m
                }
            }
        };
        mutex.lock_owned().await
    }
}

fn lock_cache(cache: &HashCache) -> MutexGuard<'_, HashMap<String, (u64, Hasher)>> {
    cache.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Upload ids: 1 to 64 characters of `[A-Za-z0-9_-]`.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Object keys: `<alg>/<first two hex>/<hex>/<32 lowercase hex>`.
fn valid_key(key: &str) -> bool {
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

fn join_error(e: tokio::task::JoinError) -> BlobError {
    BlobError::Io(io::Error::other(format!("blob store worker failed: {e}")))
}

/// Hashes the first `len` bytes of `file` from its current position.
fn hash_exact(file: &mut File, algorithm: Algorithm, len: u64) -> io::Result<Hasher> {
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; HASH_BUFFER];
    let mut remaining = len;
    while remaining > 0 {
        let want = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "upload file shrank while hashing")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        remaining -= n as u64;
    }
    Ok(hasher)
}

/// The SHA-256 state of an upload file of `len` bytes: from the cache when it matches,
/// else recomputed from disk.
fn sha256_state(cache: &HashCache, id: &str, path: &Path, len: u64) -> io::Result<Hasher> {
    let cached = lock_cache(cache).remove(id);
    match cached {
        Some((offset, hasher)) if offset == len => Ok(hasher),
        _ => {
            tracing::debug!(upload = id, len, "rebuilding upload hash state from disk");
            let mut file = File::open(path)?;
            hash_exact(&mut file, Algorithm::Sha256, len)
        }
    }
}

/// One append's writer, moved into each write+hash job and back: the open upload file, the
/// running SHA-256 state and the upload's lock. Dropping it (when the append ends, or when the
/// request was dropped and the last job finishes) records the hash state of what was written in
/// the cache and then releases the lock; after a failed write it records nothing, so the next
/// append rebuilds the state from the bytes on disk.
struct Appender {
    id: String,
    file: File,
    /// None after a failed write (the file's contents are then unknown).
    hasher: Option<Hasher>,
    /// The upload's length when the append started.
    start: u64,
    written: u64,
    flushed_at: u64,
    cache: Arc<HashCache>,
    _guard: OwnedMutexGuard<()>,
}

impl Appender {
    /// Opens upload `id` for an append at `offset` (which must be its length) and finds its hash
    /// state (cached, or rebuilt from disk). Blocking.
    fn open(path: &Path, id: String, offset: u64, cache: Arc<HashCache>, guard: OwnedMutexGuard<()>) -> Result<Appender> {
        let file = match OpenOptions::new().append(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BlobError::UploadUnknown(id)),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        if len != offset {
            return Err(BlobError::OutOfOrder { expected: len, got: offset });
        }
        let hasher = sha256_state(&cache, &id, path, len)?;
        Ok(Appender { id, file, hasher: Some(hasher), start: len, written: 0, flushed_at: 0, cache, _guard: guard })
    }

    /// The upload's length after what this append wrote.
    fn len(&self) -> u64 {
        self.start + self.written
    }

    /// Hashes and writes one batch of chunks. Blocking.
    fn write(&mut self, batch: &[Bytes]) -> io::Result<()> {
        // In groups of about APPEND_BATCH bytes, each hashed and then written while it is still
        // in the CPU cache (hashing a whole 2 MiB batch first made the writev copy from RAM).
        let mut rest = batch;
        while !rest.is_empty() {
            let mut n = 0;
            let mut bytes = 0;
            while n < rest.len() && (n == 0 || bytes < APPEND_BATCH) {
                bytes += rest[n].len();
                n += 1;
            }
            let (group, tail) = rest.split_at(n);
            self.write_group(group)?;
            rest = tail;
        }
        Ok(())
    }

    fn write_group(&mut self, group: &[Bytes]) -> io::Result<()> {
        let Some(hasher) = self.hasher.as_mut() else {
            return Err(io::Error::other("append after a failed write"));
        };
        for chunk in group {
            hasher.update(chunk);
        }
        // One writev per group: no copy into a userspace buffer.
        if let Err(e) = write_all_vectored(&mut self.file, group) {
            self.hasher = None;
            return Err(e);
        }
        self.written += group.iter().map(|c| c.len() as u64).sum::<u64>();
        // Start writing back to disk while the rest arrives, so the fsync at commit waits only
        // for the tail: POSIX_FADV_DONTNEED on the range written so far starts asynchronous
        // writeback of its dirty pages (without a journal commit or waiting, unlike fdatasync).
        if self.written - self.flushed_at >= EARLY_WRITEBACK {
            let _ = rustix::fs::fadvise(
                &self.file,
                self.start + self.flushed_at,
                std::num::NonZeroU64::new(self.written - self.flushed_at),
                rustix::fs::Advice::DontNeed,
            );
            self.flushed_at = self.written;
        }
        Ok(())
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        if let Some(hasher) = self.hasher.take() {
            lock_cache(&self.cache).insert(std::mem::take(&mut self.id), (self.start + self.written, hasher));
        }
        // `_guard` is dropped after this: the cache is updated before the next append may start.
    }
}

/// What an append waits for. (Short-lived, on the stack: the size difference does not matter.)
#[allow(clippy::large_enum_variant)]
enum AppendEvent {
    /// The running job (open, or write+hash of a batch) ended.
    Job(std::result::Result<Result<Appender>, tokio::task::JoinError>),
    /// The body produced a chunk, failed, or ended.
    Body(Option<io::Result<Bytes>>),
}

/// Writes every chunk, in order, with as few `writev` calls as the kernel allows.
fn write_all_vectored(file: &mut File, chunks: &[Bytes]) -> io::Result<()> {
    let mut first = 0; // index of the first chunk not fully written
    let mut skip = 0; // bytes of that chunk already written
    while first < chunks.len() {
        let slices: Vec<io::IoSlice<'_>> = std::iter::once(&chunks[first][skip..])
            .chain(chunks[first + 1..].iter().map(|c| &c[..]))
            .map(io::IoSlice::new)
            .collect();
        let mut n = match file.write_vectored(&slices) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        while first < chunks.len() && n >= chunks[first].len() - skip {
            n -= chunks[first].len() - skip;
            first += 1;
            skip = 0;
        }
        skip += n;
    }
    Ok(())
}

/// The blocking half of a commit. Returns the committed object.
fn commit_worker(blobs: &Path, path: &Path, id: &str, digest: &Digest, cache: &HashCache) -> Result<Committed> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            lock_cache(cache).remove(id);
            return Err(BlobError::UploadUnknown(id.to_owned()));
        }
        Err(e) => return Err(e.into()),
    };
    let len = file.metadata()?.len();
    let actual = match digest.algorithm() {
        Algorithm::Sha256 => sha256_state(cache, id, path, len)?.finish(),
        Algorithm::Sha512 => {
            lock_cache(cache).remove(id);
            hash_exact(&mut file, Algorithm::Sha512, len)?.finish()
        }
    };
    if actual != *digest {
        drop(file);
        remove_if_exists(path)?;
        return Err(BlobError::DigestMismatch { expected: digest.clone(), actual });
    }
    // Fresh mtime: the orphan sweep judges objects by age, and the bytes may have been
    // written long before this commit.
    file.set_modified(SystemTime::now())?;
    file.sync_all()?;
    drop(file);

    let alg = digest.algorithm().as_str();
    let hex = digest.hex();
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let key = format!("{alg}/{}/{hex}/{unique}", &hex[..2]);
    let dir = blobs.join(alg).join(&hex[..2]).join(hex);
    let target = dir.join(&unique);
    let mut attempts = 0;
    let created = loop {
        let created = !dir.is_dir();
        if created {
            fs::create_dir_all(&dir)?;
        }
        match fs::rename(path, &target) {
            Ok(()) => break created,
            // A concurrent delete of another object of this digest removed the (empty)
            // directory between create and rename: make it again.
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 5 && path.exists() => attempts += 1,
            Err(e) => return Err(e.into()),
        }
    };
    sync_dir(&dir)?;
    if created {
        // New directory entries on the way down must be durable too.
        let mut d = dir.as_path();
        while let Some(parent) = d.parent() {
            sync_dir(parent)?;
            if parent == blobs {
                break;
            }
            d = parent;
        }
    }
    Ok(Committed { key, size: len })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Opens an object and seeks to its range: (file, object size, bytes to read). Blocking.
fn open_object(path: &Path, key: &str, range: Option<(u64, u64)>) -> Result<(File, u64, u64)> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BlobError::NotFound(key.to_owned())),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(BlobError::NotFound(key.to_owned()));
    }
    let size = meta.len();
    // The range was checked by the caller; clamp anyway so a bad one reads nothing extra.
    let (start, remaining) = match range {
        None => (0, size),
        Some((start, end)) => {
            let end = end.min(size.saturating_sub(1));
            if size == 0 || start > end {
                (0, 0)
            } else {
                (start, end - start + 1)
            }
        }
    };
    if start > 0 {
        file.seek(SeekFrom::Start(start))?;
    }
    Ok((file, size, remaining))
}

/// Reads up to `READ_JOB_CHUNKS` chunks of at most `READ_CHUNK` bytes, `remaining` at most.
/// Blocking. Returns the file for the next job.
fn read_chunks(mut file: File, mut remaining: u64) -> (File, io::Result<Vec<Bytes>>) {
    let mut chunks = Vec::with_capacity(READ_JOB_CHUNKS);
    while remaining > 0 && chunks.len() < READ_JOB_CHUNKS {
        let want = usize::try_from(remaining).map_or(READ_CHUNK, |r| r.min(READ_CHUNK));
        let mut buf = Vec::with_capacity(want);
        // read_to_end on a Take fills the spare capacity without zeroing it first.
        match (&mut file).take(want as u64).read_to_end(&mut buf) {
            Ok(0) => return (file, Err(io::Error::new(io::ErrorKind::UnexpectedEof, "object is shorter than its size"))),
            Ok(n) => {
                remaining -= n as u64;
                chunks.push(Bytes::from(buf));
            }
            Err(e) => return (file, Err(e)),
        }
    }
    (file, Ok(chunks))
}

/// The body of an opened object. Reads run as short blocking jobs of `READ_JOB_CHUNKS` chunks,
/// one ahead of the consumer, so a slow client holds memory (a few chunks) but no thread.
struct ObjectChunks {
    /// The file when no job holds it.
    file: Option<File>,
    /// Bytes neither read nor being read.
    remaining: u64,
    ready: std::collections::VecDeque<Bytes>,
    job: Option<tokio::task::JoinHandle<(File, io::Result<Vec<Bytes>>)>>,
}

impl ObjectChunks {
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            if self.job.is_none() && self.ready.len() <= READ_AHEAD_LOW && self.remaining > 0 {
                if let Some(file) = self.file.take() {
                    let remaining = self.remaining;
                    self.job = Some(tokio::task::spawn_blocking(move || read_chunks(file, remaining)));
                }
            }
            if let Some(chunk) = self.ready.pop_front() {
                return Some(Ok(chunk));
            }
            let job = self.job.take()?;
            match job.await {
                Ok((file, Ok(chunks))) => {
                    let n: u64 = chunks.iter().map(|c| c.len() as u64).sum();
                    self.remaining = self.remaining.saturating_sub(n);
                    self.file = Some(file);
                    self.ready.extend(chunks);
                }
                Ok((_, Err(e))) => {
                    self.remaining = 0;
                    return Some(Err(e));
                }
                Err(e) => {
                    self.remaining = 0;
                    return Some(Err(io::Error::other(format!("blob reader failed: {e}"))));
                }
            }
        }
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn upload_create(&self, id: &str) -> Result<()> {
        let path = self.upload_path(id)?;
        let guard = self.lock_upload(id).await;
        let hashes = self.hashes.clone();
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
            lock_cache(&hashes).insert(id, (0, Hasher::new(Algorithm::Sha256)));
            Ok(())
        })
        .await
        .map_err(join_error)?
    }

    async fn upload_size(&self, id: &str) -> Result<Option<u64>> {
        let path = self.upload_path(id)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn upload_append(&self, id: &str, offset: u64, mut body: ByteStream) -> Result<u64> {
        let path = self.upload_path(id)?;
        let guard = self.lock_upload(id).await;
        let (cache, owned_id) = (self.hashes.clone(), id.to_owned());
        // The body starts arriving while the upload is opened and its hash state found.
        let mut job = Some(tokio::task::spawn_blocking(move || Appender::open(&path, owned_id, offset, cache, guard)));
        // Exactly one of `job` (running) and `appender` (idle) is Some.
        let mut appender: Option<Appender> = None;
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_bytes = 0usize;
        let mut ended = false;
        let mut body_error = None;
        loop {
            if job.is_none() {
                if pending_bytes >= APPEND_BATCH || (ended && pending_bytes > 0) {
                    if let Some(mut a) = appender.take() {
                        let batch = std::mem::take(&mut pending);
                        pending_bytes = 0;
                        job = Some(tokio::task::spawn_blocking(move || {
                            a.write(&batch)?;
                            Ok(a)
                        }));
                    }
                } else if ended {
                    break;
                }
            }
            // Not ended and no job means fewer than APPEND_BATCH bytes wait: the body is polled.
            let receiving = !ended && pending_bytes < APPEND_PENDING_MAX;
            let event = poll_fn(|cx| {
                if let Some(j) = job.as_mut() {
                    if let Poll::Ready(r) = Pin::new(j).poll(cx) {
                        return Poll::Ready(AppendEvent::Job(r));
                    }
                }
                if receiving {
                    if let Poll::Ready(item) = body.as_mut().poll_next(cx) {
                        return Poll::Ready(AppendEvent::Body(item));
                    }
                }
                Poll::Pending
            })
            .await;
            match event {
                AppendEvent::Job(r) => {
                    job = None;
                    // A failed open (unknown upload, wrong offset) or write ends the append; what
                    // was written before stays and the next append checks the real length.
                    appender = Some(r.map_err(join_error)??);
                }
                AppendEvent::Body(Some(Ok(chunk))) => {
                    if !chunk.is_empty() {
                        pending_bytes += chunk.len();
                        pending.push(chunk);
                    }
                }
                AppendEvent::Body(Some(Err(e))) => {
                    body_error = Some(e);
                    ended = true;
                }
                AppendEvent::Body(None) => ended = true,
            }
        }
        let new_len = appender.as_ref().map_or(offset, Appender::len);
        // Records the hash state and releases the upload's lock.
        drop(appender);
        match body_error {
            Some(e) => {
                tracing::debug!(upload = id, kept = new_len, error = %e, "upload body failed midway");
                Err(BlobError::Body(e))
            }
            None => Ok(new_len),
        }
    }

    async fn upload_commit(&self, id: &str, digest: &Digest) -> Result<Committed> {
        let path = self.upload_path(id)?;
        let guard = self.lock_upload(id).await;
        let hashes = self.hashes.clone();
        let blobs = self.blobs.clone();
        let id = id.to_owned();
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            commit_worker(&blobs, &path, &id, &digest, &hashes)
        })
        .await
        .map_err(join_error)?
    }

    async fn upload_delete(&self, id: &str) -> Result<()> {
        let path = self.upload_path(id)?;
        let guard = self.lock_upload(id).await;
        let hashes = self.hashes.clone();
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            lock_cache(&hashes).remove(&id);
            remove_if_exists(&path)?;
            Ok(())
        })
        .await
        .map_err(join_error)?
    }

    async fn upload_ids(&self) -> Result<Vec<String>> {
        let uploads = self.uploads.clone();
        tokio::task::spawn_blocking(move || {
            let mut ids = Vec::new();
            for entry in fs::read_dir(&uploads)? {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else { continue };
                if valid_id(&name) && entry.file_type()?.is_file() {
                    ids.push(name);
                }
            }
            ids.sort();
            Ok(ids)
        })
        .await
        .map_err(join_error)?
    }

    async fn open(&self, key: &str, range: Option<(u64, u64)>) -> Result<ObjectReader> {
        let path = self.object_path(key)?;
        let key_owned = key.to_owned();
        let (file, size, remaining) = tokio::task::spawn_blocking(move || open_object(&path, &key_owned, range)).await.map_err(join_error)??;
        let chunks = ObjectChunks { file: Some(file), remaining, ready: Default::default(), job: None };
        let body = futures_util::stream::unfold(chunks, |mut chunks| async move { chunks.next().await.map(|item| (item, chunks)) });
        Ok(ObjectReader { size, body: Box::pin(body) })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.object_path(key)?;
        let blobs = self.blobs.clone();
        tokio::task::spawn_blocking(move || {
            remove_if_exists(&path)?;
            // Best effort: drop the now-empty <hex> and <xx> directories (fails harmlessly if
            // another object of the digest is there, or a commit just made it).
            let mut dir = path.parent();
            for _ in 0..2 {
                let Some(d) = dir else { break };
                if d == blobs || fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
            Ok(())
        })
        .await
        .map_err(join_error)?
    }

    async fn list_keys(&self, older_than_secs: u64) -> Result<Vec<String>> {
        let blobs = self.blobs.clone();
        tokio::task::spawn_blocking(move || {
            let Some(cutoff) = SystemTime::now().checked_sub(Duration::from_secs(older_than_secs)) else {
                return Ok(Vec::new());
            };
            let mut keys = Vec::new();
            walk_objects(&blobs, &mut |key, meta| {
                if meta.modified().is_ok_and(|m| m <= cutoff) {
                    keys.push(key);
                }
            })?;
            keys.sort();
            Ok(keys)
        })
        .await
        .map_err(join_error)?
    }
}

/// Reads a directory, treating one that vanished meanwhile (a concurrent delete) as empty.
fn read_dir_names(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                if let Ok(name) = entry.file_name().into_string() {
                    names.push(name);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(names)
}

/// Calls `f` with every well-formed object key under `blobs` and its metadata.
fn walk_objects(blobs: &Path, f: &mut dyn FnMut(String, fs::Metadata)) -> io::Result<()> {
    for alg in read_dir_names(blobs)? {
        let alg_dir = blobs.join(&alg);
        for xx in read_dir_names(&alg_dir)? {
            let xx_dir = alg_dir.join(&xx);
            for hex in read_dir_names(&xx_dir)? {
                let hex_dir = xx_dir.join(&hex);
                for unique in read_dir_names(&hex_dir)? {
                    let key = format!("{alg}/{xx}/{hex}/{unique}");
                    if !valid_key(&key) {
                        continue;
                    }
                    match fs::symlink_metadata(hex_dir.join(&unique)) {
                        Ok(meta) if meta.is_file() => f(key, meta),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Instant;

    use futures_util::{stream, StreamExt};

    use super::*;

    fn store() -> (tempfile::TempDir, FsBlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn body(chunks: Vec<Vec<u8>>) -> ByteStream {
        Box::pin(stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c)))))
    }

    fn failing_body(chunks: Vec<Vec<u8>>) -> ByteStream {
        let items = chunks
            .into_iter()
            .map(|c| Ok(Bytes::from(c)))
            .chain(std::iter::once(Err(io::Error::new(io::ErrorKind::ConnectionReset, "client went away"))))
            .chain(std::iter::once(Ok(Bytes::from_static(b"never written"))));
        Box::pin(stream::iter(items))
    }

    /// Deterministic pseudo-random bytes (xorshift).
    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn sha256(bytes: &[u8]) -> Digest {
        Digest::compute(Algorithm::Sha256, bytes)
    }

    async fn read_all(store: &FsBlobStore, key: &str, range: Option<(u64, u64)>) -> (u64, Vec<u8>) {
        let reader = store.open(key, range).await.unwrap();
        let mut out = Vec::new();
        let mut body = reader.body;
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        (reader.size, out)
    }

    #[test]
    fn id_and_key_validation() {
        assert!(valid_id("0f3c-AB_z9"));
        assert!(valid_id(&"a".repeat(64)));
        assert!(!valid_id(&"a".repeat(65)));
        assert!(!valid_id(""));
        assert!(!valid_id("../x"));
        assert!(!valid_id("a/b"));
        assert!(!valid_id("a.b"));
        let hex = "ab".repeat(32);
        let unique = "0123456789abcdef0123456789abcdef";
        assert!(valid_key(&format!("sha256/ab/{hex}/{unique}")));
        assert!(valid_key(&format!("sha512/ab/{}/{unique}", "ab".repeat(64))));
        assert!(!valid_key(&format!("sha256/cd/{hex}/{unique}")), "prefix must match");
        assert!(!valid_key(&format!("sha512/ab/{hex}/{unique}")), "length must match the algorithm");
        assert!(!valid_key(&format!("md5/ab/{hex}/{unique}")));
        assert!(!valid_key(&format!("sha256/ab/{hex}/../{unique}")));
        assert!(!valid_key(&format!("/sha256/ab/{hex}/{unique}")));
        assert!(!valid_key(&format!("sha256/ab/{hex}/{unique}/x")));
        assert!(!valid_key(&format!("sha256/ab/{hex}")));
        assert!(!valid_key(&format!("sha256/ab/{}/{unique}", hex.to_uppercase())));
        assert!(!valid_key(&format!("sha256/ab/{hex}/..")));
        assert!(!valid_key(""));
    }

    #[tokio::test]
    async fn chunked_append_commit_read_back() {
        let (dir, store) = store();
        let content = data(3 * 1024 * 1024 + 17, 1);
        store.upload_create("up1").await.unwrap();
        assert_eq!(store.upload_size("up1").await.unwrap(), Some(0));
        let (a, b) = content.split_at(1_000_000);
        let chunks: Vec<Vec<u8>> = a.chunks(65_536).map(<[u8]>::to_vec).collect();
        assert_eq!(store.upload_append("up1", 0, body(chunks)).await.unwrap(), 1_000_000);
        assert_eq!(store.upload_size("up1").await.unwrap(), Some(1_000_000));
        let chunks: Vec<Vec<u8>> = b.chunks(300_001).map(<[u8]>::to_vec).collect();
        let total = content.len() as u64;
        assert_eq!(store.upload_append("up1", 1_000_000, body(chunks)).await.unwrap(), total);
        // An empty append at the end is a no-op.
        assert_eq!(store.upload_append("up1", total, body(vec![])).await.unwrap(), total);

        let digest = sha256(&content);
        let committed = store.upload_commit("up1", &digest).await.unwrap();
        assert_eq!(committed.size, total);
        let hex = digest.hex();
        assert!(committed.key.starts_with(&format!("sha256/{}/{hex}/", &hex[..2])), "{}", committed.key);
        assert!(valid_key(&committed.key));
        assert!(dir.path().join("blobs").join(&committed.key).is_file());
        // The upload is gone.
        assert_eq!(store.upload_size("up1").await.unwrap(), None);
        assert!(store.upload_ids().await.unwrap().is_empty());
        assert!(matches!(store.upload_commit("up1", &digest).await, Err(BlobError::UploadUnknown(_))));

        let (size, read) = read_all(&store, &committed.key, None).await;
        assert_eq!(size, total);
        assert_eq!(read.len(), content.len());
        assert!(read == content);
    }

    #[tokio::test]
    async fn empty_blob() {
        let (_dir, store) = store();
        store.upload_create("e").await.unwrap();
        let digest = sha256(b"");
        assert_eq!(digest.as_str(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let committed = store.upload_commit("e", &digest).await.unwrap();
        assert_eq!(committed.size, 0);
        let (size, read) = read_all(&store, &committed.key, None).await;
        assert_eq!((size, read.len()), (0, 0));
    }

    #[tokio::test]
    async fn out_of_order_append_is_refused() {
        let (_dir, store) = store();
        store.upload_create("u").await.unwrap();
        assert_eq!(store.upload_append("u", 0, body(vec![b"hello".to_vec()])).await.unwrap(), 5);
        match store.upload_append("u", 3, body(vec![b"xx".to_vec()])).await {
            Err(BlobError::OutOfOrder { expected, got }) => assert_eq!((expected, got), (5, 3)),
            other => panic!("want OutOfOrder, got {other:?}"),
        }
        match store.upload_append("u", 9, body(vec![b"xx".to_vec()])).await {
            Err(BlobError::OutOfOrder { expected, got }) => assert_eq!((expected, got), (5, 9)),
            other => panic!("want OutOfOrder, got {other:?}"),
        }
        // Nothing was written by the refused appends.
        assert_eq!(store.upload_size("u").await.unwrap(), Some(5));
        assert_eq!(store.upload_append("u", 5, body(vec![b" world".to_vec()])).await.unwrap(), 11);
        let committed = store.upload_commit("u", &sha256(b"hello world")).await.unwrap();
        assert_eq!(read_all(&store, &committed.key, None).await.1, b"hello world");
    }

    #[tokio::test]
    async fn append_to_unknown_upload() {
        let (_dir, store) = store();
        assert!(matches!(store.upload_append("nope", 0, body(vec![b"x".to_vec()])).await, Err(BlobError::UploadUnknown(id)) if id == "nope"));
        assert_eq!(store.upload_size("nope").await.unwrap(), None);
        assert!(matches!(store.upload_commit("nope", &sha256(b"")).await, Err(BlobError::UploadUnknown(_))));
    }

    #[tokio::test]
    async fn resume_after_restart_rebuilds_hash() {
        let dir = tempfile::tempdir().unwrap();
        let content = data(2_500_000, 2);
        {
            let store = FsBlobStore::open(dir.path()).unwrap();
            store.upload_create("resume").await.unwrap();
            assert_eq!(store.upload_append("resume", 0, body(vec![content[..1_234_567].to_vec()])).await.unwrap(), 1_234_567);
        }
        // A new process: empty cache, same disk.
        let store = FsBlobStore::open(dir.path()).unwrap();
        assert!(lock_cache(&store.hashes).is_empty());
        assert_eq!(store.upload_size("resume").await.unwrap(), Some(1_234_567));
        assert_eq!(store.upload_ids().await.unwrap(), vec!["resume".to_owned()]);
        let rest: Vec<Vec<u8>> = content[1_234_567..].chunks(100_000).map(<[u8]>::to_vec).collect();
        assert_eq!(store.upload_append("resume", 1_234_567, body(rest)).await.unwrap(), 2_500_000);
        assert_eq!(lock_cache(&store.hashes).get("resume").map(|e| e.0), Some(2_500_000), "state rebuilt and cached");
        let committed = store.upload_commit("resume", &sha256(&content)).await.unwrap();
        assert_eq!(committed.size, 2_500_000);
        assert!(read_all(&store, &committed.key, None).await.1 == content);
    }

    #[tokio::test]
    async fn commit_rehashes_when_cache_is_stale() {
        // Another replica appended to the file: the cached state is behind the real length.
        let (dir, store) = store();
        store.upload_create("shared").await.unwrap();
        store.upload_append("shared", 0, body(vec![b"abc".to_vec()])).await.unwrap();
        let mut f = OpenOptions::new().append(true).open(dir.path().join("uploads/shared")).unwrap();
        f.write_all(b"def").unwrap();
        drop(f);
        assert_eq!(store.upload_size("shared").await.unwrap(), Some(6));
        // Append at the real offset works and the hash covers the other replica's bytes.
        assert_eq!(store.upload_append("shared", 6, body(vec![b"ghi".to_vec()])).await.unwrap(), 9);
        let committed = store.upload_commit("shared", &sha256(b"abcdefghi")).await.unwrap();
        assert_eq!(committed.size, 9);
    }

    #[tokio::test]
    async fn digest_mismatch_deletes_the_upload() {
        let (dir, store) = store();
        store.upload_create("bad").await.unwrap();
        store.upload_append("bad", 0, body(vec![b"some bytes".to_vec()])).await.unwrap();
        let wrong = sha256(b"other bytes");
        match store.upload_commit("bad", &wrong).await {
            Err(BlobError::DigestMismatch { expected, actual }) => {
                assert_eq!(expected, wrong);
                assert_eq!(actual, sha256(b"some bytes"));
            }
            other => panic!("want DigestMismatch, got {other:?}"),
        }
        assert_eq!(store.upload_size("bad").await.unwrap(), None);
        assert!(!dir.path().join("uploads/bad").exists());
        assert!(store.list_keys(0).await.unwrap().is_empty(), "no object was created");
        assert!(lock_cache(&store.hashes).is_empty());
    }

    #[tokio::test]
    async fn sha512_commit() {
        let (_dir, store) = store();
        let content = data(1_500_000, 3);
        store.upload_create("s512").await.unwrap();
        let chunks: Vec<Vec<u8>> = content.chunks(70_000).map(<[u8]>::to_vec).collect();
        store.upload_append("s512", 0, body(chunks)).await.unwrap();
        let digest = Digest::compute(Algorithm::Sha512, &content);
        let committed = store.upload_commit("s512", &digest).await.unwrap();
        assert!(committed.key.starts_with(&format!("sha512/{}/{}/", &digest.hex()[..2], digest.hex())));
        assert_eq!(committed.size, 1_500_000);
        assert!(read_all(&store, &committed.key, None).await.1 == content);

        // A sha512 mismatch is detected too (the cached sha256 state is not used).
        store.upload_create("s512b").await.unwrap();
        store.upload_append("s512b", 0, body(vec![b"abc".to_vec()])).await.unwrap();
        let wrong = Digest::compute(Algorithm::Sha512, b"abd");
        match store.upload_commit("s512b", &wrong).await {
            Err(BlobError::DigestMismatch { actual, .. }) => assert_eq!(actual, Digest::compute(Algorithm::Sha512, b"abc")),
            other => panic!("want DigestMismatch, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn range_reads() {
        let (_dir, store) = store();
        // Larger than one read chunk so ranges cross chunk boundaries.
        let content = data(READ_CHUNK * 2 + 1000, 4);
        let len = content.len() as u64;
        store.upload_create("r").await.unwrap();
        store.upload_append("r", 0, body(vec![content.clone()])).await.unwrap();
        let key = store.upload_commit("r", &sha256(&content)).await.unwrap().key;

        let (size, first) = read_all(&store, &key, Some((0, 0))).await;
        assert_eq!(size, len);
        assert_eq!(first, vec![content[0]]);
        let (size, last) = read_all(&store, &key, Some((len - 1, len - 1))).await;
        assert_eq!(size, len);
        assert_eq!(last, vec![content[content.len() - 1]]);
        let (_, middle) = read_all(&store, &key, Some((1000, READ_CHUNK as u64 + 5000))).await;
        assert!(middle == content[1000..=READ_CHUNK + 5000]);
        let (_, whole) = read_all(&store, &key, Some((0, len - 1))).await;
        assert!(whole == content);
        let (_, tail) = read_all(&store, &key, Some((len - 10, len - 1))).await;
        assert_eq!(tail, content[content.len() - 10..]);
        // Out-of-bounds ends are clamped rather than read past the object.
        let (_, clamped) = read_all(&store, &key, Some((len - 3, len + 100))).await;
        assert_eq!(clamped, content[content.len() - 3..]);
    }

    #[tokio::test]
    async fn identical_content_gets_distinct_keys() {
        let (_dir, store) = store();
        let content = b"same bytes twice".to_vec();
        let digest = sha256(&content);
        let mut keys = Vec::new();
        for id in ["one", "two"] {
            store.upload_create(id).await.unwrap();
            store.upload_append(id, 0, body(vec![content.clone()])).await.unwrap();
            keys.push(store.upload_commit(id, &digest).await.unwrap().key);
        }
        assert_ne!(keys[0], keys[1]);
        assert_eq!(keys[0].rsplit_once('/').unwrap().0, keys[1].rsplit_once('/').unwrap().0);
        // Deleting one leaves the other readable.
        store.delete(&keys[0]).await.unwrap();
        assert!(matches!(store.open(&keys[0], None).await, Err(BlobError::NotFound(_))));
        assert_eq!(read_all(&store, &keys[1], None).await.1, content);
    }

    #[tokio::test]
    async fn body_error_keeps_what_arrived() {
        let (_dir, store) = store();
        let content = data(900_000, 5);
        store.upload_create("flaky").await.unwrap();
        let first: Vec<Vec<u8>> = content[..600_000].chunks(100_000).map(<[u8]>::to_vec).collect();
        match store.upload_append("flaky", 0, failing_body(first)).await {
            Err(BlobError::Body(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
            other => panic!("want Body error, got {other:?}"),
        }
        assert_eq!(store.upload_size("flaky").await.unwrap(), Some(600_000));
        // The hash state of what arrived was kept, so the resume needs no re-read.
        assert_eq!(lock_cache(&store.hashes).get("flaky").map(|e| e.0), Some(600_000));
        // The client resumes at the size it asks for.
        assert_eq!(store.upload_append("flaky", 600_000, body(vec![content[600_000..].to_vec()])).await.unwrap(), 900_000);
        let committed = store.upload_commit("flaky", &sha256(&content)).await.unwrap();
        assert!(read_all(&store, &committed.key, None).await.1 == content);

        // A body that fails before any byte keeps the upload as it was.
        store.upload_create("flaky2").await.unwrap();
        assert!(matches!(store.upload_append("flaky2", 0, failing_body(vec![])).await, Err(BlobError::Body(_))));
        assert_eq!(store.upload_size("flaky2").await.unwrap(), Some(0));
    }

    /// A body fed by hand: send chunks or an error; it waits (stalls) while the sender is quiet.
    fn channel_body() -> (tokio::sync::mpsc::UnboundedSender<io::Result<Bytes>>, ByteStream) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let body = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        (tx, Box::pin(body))
    }

    fn timed_out() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "no body data for 30 s")
    }

    #[tokio::test]
    async fn stalled_body_that_fails_keeps_what_arrived() {
        let (_dir, store) = store();
        let store = Arc::new(store);
        let content = data(APPEND_BATCH + 100_000, 9);
        // (bytes sent before the stall, as chunks): below one batch (nothing written before the
        // error), and above (one write job ran, the rest waited in memory).
        let cases: &[(&str, &[usize])] = &[("below", &[1, 999]), ("above", &[APPEND_BATCH + 1, 50_000]), ("none", &[])];
        for (id, chunks) in cases {
            store.upload_create(id).await.unwrap();
            let (tx, chunks_in) = channel_body();
            let task = tokio::spawn({
                let store = store.clone();
                let id = id.to_string();
                async move { store.upload_append(&id, 0, chunks_in).await }
            });
            let mut sent = 0;
            for &n in *chunks {
                tx.send(Ok(Bytes::copy_from_slice(&content[sent..sent + n]))).unwrap();
                sent += n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!task.is_finished(), "{id}: the append waits for the body");
            // The connection's body timeout ends the stall with an error.
            tx.send(Err(timed_out())).unwrap();
            match task.await.unwrap() {
                Err(BlobError::Body(e)) => assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{id}"),
                other => panic!("{id}: want a Body error, got {other:?}"),
            }
            let kept = sent as u64;
            assert_eq!(store.upload_size(id).await.unwrap(), Some(kept), "{id}");
            assert_eq!(lock_cache(&store.hashes).get(*id).map(|e| e.0), Some(kept), "{id}: hash state kept");
            // The session stays usable at its recorded size.
            let rest = body(vec![content[sent..].to_vec()]);
            assert_eq!(store.upload_append(id, kept, rest).await.unwrap(), content.len() as u64, "{id}");
            let committed = store.upload_commit(id, &sha256(&content)).await.unwrap();
            assert!(read_all(&store, &committed.key, None).await.1 == content, "{id}");
        }
    }

    #[tokio::test]
    async fn dropped_append_keeps_what_was_written_and_releases_the_lock() {
        let (_dir, store) = store();
        let store = Arc::new(store);
        let content = data(APPEND_BATCH + 70_000, 10);
        store.upload_create("gone").await.unwrap();
        let (tx, chunks_in) = channel_body();
        let task = tokio::spawn({
            let store = store.clone();
            async move { store.upload_append("gone", 0, chunks_in).await }
        });
        tx.send(Ok(Bytes::copy_from_slice(&content[..APPEND_BATCH]))).unwrap();
        // A batch was handed to a write job; then the client goes quiet and the request is dropped.
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.upload_size("gone").await.unwrap() != Some(APPEND_BATCH as u64) {
            assert!(Instant::now() < deadline, "the first batch was not written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        drop(tx);
        // The lock was released and the session is usable at the written size.
        let rest = body(vec![content[APPEND_BATCH..].to_vec()]);
        let appended = tokio::time::timeout(Duration::from_secs(10), store.upload_append("gone", APPEND_BATCH as u64, rest)).await;
        assert_eq!(appended.expect("the upload's lock was released").unwrap(), content.len() as u64);
        let committed = store.upload_commit("gone", &sha256(&content)).await.unwrap();
        assert!(read_all(&store, &committed.key, None).await.1 == content);
    }

    /// Waiting for a client holds no blocking thread: with a pool of two, twenty stalled
    /// appends and twenty stalled readers leave room for a normal push and pull. (Before, each
    /// append's writer thread waited on the body: the third push would wait forever.)
    #[test]
    fn stalled_clients_hold_no_blocking_thread() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).max_blocking_threads(2).enable_all().build().unwrap();
        let test = async {
            let (_dir, store) = store();
            let store = Arc::new(store);
            let object = data(READ_CHUNK * 8, 11);
            store.upload_create("obj").await.unwrap();
            store.upload_append("obj", 0, body(vec![object.clone()])).await.unwrap();
            let key = store.upload_commit("obj", &sha256(&object)).await.unwrap().key;

            let mut stalled = Vec::new();
            for i in 0..20 {
                let id = format!("stalled-{i}");
                store.upload_create(&id).await.unwrap();
                let (tx, stalled_body) = channel_body();
                // One byte of a declared megabyte, then nothing.
                tx.send(Ok(Bytes::from_static(b"x"))).unwrap();
                let store = store.clone();
                stalled.push((tx, tokio::spawn(async move { store.upload_append(&id, 0, stalled_body).await })));
            }
            let mut readers = Vec::new();
            for _ in 0..20 {
                let mut reader = store.open(&key, None).await.unwrap();
                // A client that reads one chunk and then stops reading.
                assert_eq!(reader.body.next().await.unwrap().unwrap().len(), READ_CHUNK);
                readers.push(reader);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;

            let normal = async {
                let content = data(3 << 20, 12);
                store.upload_create("normal").await.unwrap();
                let chunks: Vec<Vec<u8>> = content.chunks(64 << 10).map(<[u8]>::to_vec).collect();
                store.upload_append("normal", 0, body(chunks)).await.unwrap();
                let key = store.upload_commit("normal", &sha256(&content)).await.unwrap().key;
                assert!(read_all(&store, &key, None).await.1 == content);
            };
            tokio::time::timeout(Duration::from_secs(20), normal).await.expect("a normal push and pull complete beside stalled clients");

            for (tx, task) in stalled {
                assert!(!task.is_finished());
                tx.send(Err(timed_out())).unwrap();
                assert!(matches!(task.await.unwrap(), Err(BlobError::Body(_))));
            }
            assert_eq!(store.upload_size("stalled-7").await.unwrap(), Some(1));
            drop(readers);
        };
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), test).await })
            .expect("stalled clients wedged the blocking pool (uploads could not even be created)");
        rt.shutdown_timeout(Duration::from_secs(5));
    }

    #[tokio::test]
    async fn bad_ids_and_keys_are_refused() {
        let (dir, store) = store();
        std::fs::write(dir.path().join("secret"), b"x").unwrap();
        for id in ["", "../secret", "a/b", "a.b", &"x".repeat(65), ".."] {
            assert!(matches!(store.upload_create(id).await, Err(BlobError::UploadUnknown(_))), "{id:?}");
            assert!(matches!(store.upload_size(id).await, Err(BlobError::UploadUnknown(_))), "{id:?}");
            assert!(matches!(store.upload_append(id, 0, body(vec![])).await, Err(BlobError::UploadUnknown(_))), "{id:?}");
            assert!(matches!(store.upload_commit(id, &sha256(b"")).await, Err(BlobError::UploadUnknown(_))), "{id:?}");
            assert!(matches!(store.upload_delete(id).await, Err(BlobError::UploadUnknown(_))), "{id:?}");
        }
        let hex = sha256(b"x").hex().to_owned();
        for key in [
            "../secret".to_owned(),
            "/etc/passwd".to_owned(),
            format!("sha256/{}/{hex}/../../../../secret", &hex[..2]),
            format!("sha256/{}/{hex}", &hex[..2]),
            format!("sha256/zz/{hex}/0123456789abcdef0123456789abcdef"),
            String::new(),
        ] {
            assert!(matches!(store.open(&key, None).await, Err(BlobError::NotFound(_))), "{key:?}");
            assert!(matches!(store.delete(&key).await, Err(BlobError::NotFound(_))), "{key:?}");
        }
        assert!(dir.path().join("secret").exists());
        // A well-formed key with no object is NotFound too.
        let missing = format!("sha256/{}/{hex}/0123456789abcdef0123456789abcdef", &hex[..2]);
        assert!(matches!(store.open(&missing, None).await, Err(BlobError::NotFound(k)) if k == missing));
        store.delete(&missing).await.unwrap();
    }

    #[tokio::test]
    async fn upload_ids_delete_and_list_keys() {
        let (dir, store) = store();
        for id in ["b-2", "a_1", "c3"] {
            store.upload_create(id).await.unwrap();
        }
        // Junk in the uploads dir is not an id.
        std::fs::write(dir.path().join("uploads/not.an.id"), b"").unwrap();
        assert_eq!(store.upload_ids().await.unwrap(), vec!["a_1", "b-2", "c3"]);
        store.upload_delete("b-2").await.unwrap();
        store.upload_delete("b-2").await.unwrap();
        store.upload_delete("never-existed").await.unwrap();
        assert_eq!(store.upload_ids().await.unwrap(), vec!["a_1", "c3"]);

        store.upload_append("a_1", 0, body(vec![b"first".to_vec()])).await.unwrap();
        store.upload_append("c3", 0, body(vec![b"second".to_vec()])).await.unwrap();
        let k1 = store.upload_commit("a_1", &sha256(b"first")).await.unwrap().key;
        let k2 = store.upload_commit("c3", &sha256(b"second")).await.unwrap().key;
        assert!(store.upload_ids().await.unwrap().is_empty());

        let mut want = vec![k1.clone(), k2.clone()];
        want.sort();
        assert_eq!(store.list_keys(0).await.unwrap(), want);
        // Fresh objects are not older than an hour.
        assert!(store.list_keys(3600).await.unwrap().is_empty());
        // Age one object by hand.
        let old = SystemTime::now() - Duration::from_secs(7200);
        File::options().write(true).open(dir.path().join("blobs").join(&k1)).unwrap().set_modified(old).unwrap();
        assert_eq!(store.list_keys(3600).await.unwrap(), vec![k1.clone()]);
        assert!(store.list_keys(u64::MAX).await.unwrap().is_empty());

        store.delete(&k1).await.unwrap();
        store.delete(&k1).await.unwrap();
        assert_eq!(store.list_keys(0).await.unwrap(), vec![k2.clone()]);
        // The empty digest directories went with the object.
        let hex_dir = dir.path().join("blobs").join(&k1);
        assert!(!hex_dir.parent().unwrap().exists());
        assert!(!hex_dir.parent().unwrap().parent().unwrap().exists());
        assert!(dir.path().join("blobs/sha256").is_dir());
    }

    #[tokio::test]
    async fn commit_refreshes_mtime() {
        let (dir, store) = store();
        store.upload_create("slow").await.unwrap();
        store.upload_append("slow", 0, body(vec![b"written long ago".to_vec()])).await.unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        File::options().write(true).open(dir.path().join("uploads/slow")).unwrap().set_modified(old).unwrap();
        let key = store.upload_commit("slow", &sha256(b"written long ago")).await.unwrap().key;
        assert!(store.list_keys(3600).await.unwrap().is_empty(), "a just-committed object is not an orphan candidate");
        assert_eq!(store.list_keys(0).await.unwrap(), vec![key]);
    }

    #[tokio::test]
    async fn upload_create_restarts_an_upload() {
        let (_dir, store) = store();
        store.upload_create("again").await.unwrap();
        store.upload_append("again", 0, body(vec![b"old".to_vec()])).await.unwrap();
        store.upload_create("again").await.unwrap();
        assert_eq!(store.upload_size("again").await.unwrap(), Some(0));
        store.upload_append("again", 0, body(vec![b"new".to_vec()])).await.unwrap();
        let key = store.upload_commit("again", &sha256(b"new")).await.unwrap().key;
        assert_eq!(read_all(&store, &key, None).await.1, b"new");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_at_same_offset_one_wins() {
        let (_dir, store) = store();
        let store = Arc::new(store);
        store.upload_create("race").await.unwrap();
        let content = data(2_000_000, 6);
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let store = store.clone();
            let chunks: Vec<Vec<u8>> = content.chunks(50_000).map(<[u8]>::to_vec).collect();
            tasks.push(tokio::spawn(async move { store.upload_append("race", 0, body(chunks)).await }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(n) => {
                    assert_eq!(n, 2_000_000);
                    ok += 1;
                }
                Err(BlobError::OutOfOrder { expected, got }) => assert_eq!((expected, got), (2_000_000, 0)),
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(ok, 1);
        let committed = store.upload_commit("race", &sha256(&content)).await.unwrap();
        assert_eq!(committed.size, 2_000_000);
    }

    #[tokio::test]
    async fn dropped_reader_stops_early() {
        let (_dir, store) = store();
        let content = data(READ_CHUNK * 8, 7);
        store.upload_create("d").await.unwrap();
        store.upload_append("d", 0, body(vec![content.clone()])).await.unwrap();
        let key = store.upload_commit("d", &sha256(&content)).await.unwrap().key;
        let mut reader = store.open(&key, None).await.unwrap();
        let first = reader.body.next().await.unwrap().unwrap();
        assert_eq!(first.len(), READ_CHUNK);
        assert!(first[..] == content[..READ_CHUNK]);
        drop(reader);
        // The store is still usable and the object intact.
        assert_eq!(read_all(&store, &key, Some((5, 9))).await.1, content[5..10]);
    }

    /// A generated body of `total` bytes in `chunk` sized pieces, with its digest.
    fn generated_body(total: usize, chunk: usize) -> (ByteStream, Digest) {
        let block = Bytes::from(data(1 << 20, 8));
        let mut hasher = Hasher::new(Algorithm::Sha256);
        let mut pieces = Vec::new();
        let mut sent = 0usize;
        let mut i = 0u64;
        while sent < total {
            // Vary each block so chunks differ, without generating every byte.
            let mut b = block.to_vec();
            b[..8].copy_from_slice(&i.to_le_bytes());
            let b = Bytes::from(b);
            let mut off = 0;
            while off < b.len() && sent < total {
                let n = chunk.min(b.len() - off).min(total - sent);
                let piece = b.slice(off..off + n);
                hasher.update(&piece);
                pieces.push(Ok(piece));
                off += n;
                sent += n;
            }
            i += 1;
        }
        (Box::pin(stream::iter(pieces)), hasher.finish())
    }

    async fn round_trip(total: usize, chunk: usize) -> (f64, f64) {
        let (_dir, store) = store();
        let (body, digest) = generated_body(total, chunk);
        store.upload_create("big").await.unwrap();
        let t = Instant::now();
        assert_eq!(store.upload_append("big", 0, body).await.unwrap(), total as u64);
        let appended = t.elapsed().as_secs_f64();
        let committed = store.upload_commit("big", &digest).await.unwrap();
        let push = t.elapsed().as_secs_f64();
        eprintln!("  append {:.0} ms, commit (fsync + rename) {:.0} ms", appended * 1e3, (push - appended) * 1e3);
        assert_eq!(committed.size, total as u64);

        let t = Instant::now();
        let reader = store.open(&committed.key, None).await.unwrap();
        assert_eq!(reader.size, total as u64);
        let mut body = reader.body;
        let mut hasher = Hasher::new(Algorithm::Sha256);
        let mut got = 0usize;
        let mut max_chunk = 0usize;
        while let Some(c) = body.next().await {
            let c = c.unwrap();
            max_chunk = max_chunk.max(c.len());
            got += c.len();
            hasher.update(&c);
        }
        let pull = t.elapsed().as_secs_f64();
        assert_eq!(got, total);
        assert!(max_chunk <= READ_CHUNK);
        assert_eq!(hasher.finish(), digest);
        (push, pull)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streamed_64_mib_round_trip() {
        let total = 64 << 20;
        let (push, pull) = round_trip(total, 64 << 10).await;
        let gb = total as f64 / 1e9;
        eprintln!("64 MiB: push+commit {:.2} GB/s, pull+sha256 {:.2} GB/s", gb / push, gb / pull);
    }

    /// Throughput check: `cargo test -p berth-blob --release -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn throughput_256_mib() {
        let total = 256 << 20;
        for chunk in [16 << 10, 64 << 10, 1 << 20] {
            let (push, _) = round_trip(total, chunk).await;
            let gb = total as f64 / 1e9;
            eprintln!("256 MiB in {} KiB chunks: append+sha256+commit(fsync) {:.2} GB/s", chunk >> 10, gb / push);
        }
        // Pull without hashing on the consumer side, as a server streaming to a socket would.
        let (_dir, store) = store();
        let (body, digest) = generated_body(total, 1 << 20);
        store.upload_create("big").await.unwrap();
        store.upload_append("big", 0, body).await.unwrap();
        let key = store.upload_commit("big", &digest).await.unwrap().key;
        for _ in 0..3 {
            let t = Instant::now();
            let mut body = store.open(&key, None).await.unwrap().body;
            let mut got = 0usize;
            while let Some(c) = body.next().await {
                got += c.unwrap().len();
            }
            assert_eq!(got, total);
            eprintln!("256 MiB pull (read only): {:.2} GB/s", total as f64 / 1e9 / t.elapsed().as_secs_f64());
        }
    }
}
