//! Filesystem blob store: uploads are files under `<root>/uploads/`, objects are files under
//! `<root>/blobs/<alg>/<xx>/<hex>/<unique>`, and completing an upload is fsync + atomic rename.
//!
//! Data path (the hot part):
//! - `upload_write` opens the upload file, drops whatever lies past the write's offset (a write
//!   whose claim was lost), and polls the client's body on the async side, collecting its
//!   chunks; once 256 KiB (`APPEND_BATCH`) wait (or the body ended) it feeds that batch to the
//!   caller's hasher and writes it (`writev` at the offset reached) as one short
//!   `spawn_blocking` job, and keeps receiving the next batch meanwhile (up to 2 MiB,
//!   `APPEND_PENDING_MAX`, in memory), so receiving and hash+write overlap on two cores. The
//!   file, the hasher and the upload's lock move into each job and back. **Waiting for the
//!   network never holds a blocking thread**: a body that trickles or stalls costs its task and
//!   at most one batch of memory, so thousands of stalled PATCHes cannot starve the blocking
//!   pool that logins (argon2), completions and pulls need.
//! - A body that fails midway (client reset, or the server's body timeout ending a stall) ends
//!   the write after the bytes received before the error are written and hashed: the write
//!   reports them (`PartWritten::written`, `body_error`) with the hasher matching exactly them.
//!   If the request is dropped instead, what a running job writes stays in the file but is
//!   counted by nobody: the next write starts at the recorded offset and replaces it.
//! - Every 16 MiB written, the range is handed to asynchronous writeback (see
//!   `Appender::write_group`), so the fsync at completion waits only for the tail.
//! - `open` reads on short blocking jobs of four 512 KiB chunks (`READ_JOB_CHUNKS`), one job
//!   ahead of the consumer, so a slow reader holds at most 2.5 MiB of memory and no thread.
//! - Listings walk the directories in batches of `LIST_BATCH` names, one blocking job per batch.
//!
//! Nothing is ever read back to hash it. Writes and completions of one upload id are also
//! serialised within the process by a per-id lock (the caller's claim serialises them across
//! processes), so two writes of one process never interleave in the file; that lock is the only
//! in-memory state, and it is coordination, not data.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::future::{poll_fn, Future};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex, PoisonError, Weak};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use berth_oci::{Digest, ResumableHasher};
use bytes::Bytes;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::{valid_id, valid_key, BlobError, BlobStore, ByteStream, Committed, NameStream, ObjectReader, PartWritten, Result};

/// Bytes written between background writebacks of an upload (see `Appender::write_group`).
const EARLY_WRITEBACK: u64 = 16 * 1024 * 1024;
/// A write+hash job starts once this many body bytes wait (or the body ended), so small client
/// chunks make few, large jobs, and a trickling body makes none until it has something to write.
const APPEND_BATCH: usize = 256 << 10;
/// Body bytes held in memory while a job writes the previous batch; past this the body is not
/// polled until the job is done (memory per write: about this plus one client chunk).
const APPEND_PENDING_MAX: usize = 2 << 20;
/// Size of the chunks an object is read in.
const READ_CHUNK: usize = 512 << 10;
/// Chunks one read job reads (fewer, larger jobs: a job's start costs about as much as copying
/// a few hundred KiB from the page cache).
const READ_JOB_CHUNKS: usize = 4;
/// The next read job starts when at most this many read chunks wait for the consumer (so at
/// most `READ_AHEAD_LOW + READ_JOB_CHUNKS` chunks, 2.5 MiB, per reader are in memory).
const READ_AHEAD_LOW: usize = 1;
/// Names one listing job gathers.
const LIST_BATCH: usize = 256;

/// A [`BlobStore`] on a local (or shared) filesystem.
pub struct FsBlobStore {
    uploads: PathBuf,
    blobs: PathBuf,
    /// Per-upload-id locks serializing create/write/complete/abort within this process.
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
        Ok(FsBlobStore { uploads, blobs, locks: StdMutex::new(LockMap { map: HashMap::new(), prune_at: 64 }) })
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


fn join_error(e: tokio::task::JoinError) -> BlobError {
    BlobError::Io(io::Error::other(format!("blob store worker failed: {e}")))
}

/// One write's writer, moved into each hash+write job and back: the open upload file (positioned
/// at the end of what this write stored), the caller's hasher and the upload's lock (released
/// when the write ends, or when the request was dropped and the last job finishes).
struct Appender {
    file: File,
    hasher: ResumableHasher,
    /// The write's offset.
    start: u64,
    written: u64,
    flushed_at: u64,
    _guard: OwnedMutexGuard<()>,
}

impl Appender {
    /// Opens upload `id` for a write at `offset`: the file must hold at least `offset` bytes;
    /// whatever it holds past them is dropped. Blocking.
    fn open(path: &Path, id: &str, offset: u64, hasher: ResumableHasher, guard: OwnedMutexGuard<()>) -> Result<Appender> {
        let mut file = match OpenOptions::new().write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BlobError::UploadUnknown(id.to_owned())),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        if len < offset {
            return Err(BlobError::OutOfOrder { expected: len, got: offset });
        }
        if len > offset {
            tracing::debug!(upload = id, offset, dropped = len - offset, "dropping the bytes of a write whose claim was lost");
            file.set_len(offset)?;
        }
        file.seek(SeekFrom::Start(offset))?;
        Ok(Appender { file, hasher, start: offset, written: 0, flushed_at: 0, _guard: guard })
    }

    /// Hashes and writes one batch of chunks. Blocking. After an error the hasher and the file
    /// disagree: the write fails whole.
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
        for chunk in group {
            self.hasher.update(chunk);
        }
        // One writev per group: no copy into a userspace buffer.
        write_all_vectored(&mut self.file, group)?;
        self.written += group.iter().map(|c| c.len() as u64).sum::<u64>();
        // Start writing back to disk while the rest arrives, so the fsync at completion waits
        // only for the tail: POSIX_FADV_DONTNEED on the range written so far starts asynchronous
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

/// What a write waits for. (Short-lived, on the stack: the size difference does not matter.)
#[allow(clippy::large_enum_variant)]
enum WriteEvent {
    /// The running job (open, or hash+write of a batch) ended.
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

/// The blocking half of a completion. Returns the new object.
fn complete_worker(blobs: &Path, path: &Path, id: &str, size: u64, digest: &Digest) -> Result<Committed> {
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BlobError::UploadUnknown(id.to_owned())),
        Err(e) => return Err(e.into()),
    };
    let len = file.metadata()?.len();
    if len < size {
        return Err(BlobError::SizeMismatch { declared: size, actual: len });
    }
    if len > size {
        // A write whose claim was lost left bytes past the recorded end.
        file.set_len(size)?;
    }
    // Fresh mtime: the orphan sweep judges objects by age, and the bytes may have been
    // written long before this completion.
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
            Err(e) if e.kind() == io::ErrorKind::NotFound && !path.exists() => return Err(BlobError::UploadUnknown(id.to_owned())),
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
    Ok(Committed { key, size })
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
    ready: VecDeque<Bytes>,
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
    async fn ping(&self) -> Result<()> {
        let dirs = [self.blobs.clone(), self.uploads.clone()];
        tokio::task::spawn_blocking(move || {
            for d in dirs {
                let meta = fs::metadata(&d).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", d.display())))?;
                if !meta.is_dir() {
                    return Err(BlobError::Io(io::Error::other(format!("{} is not a folder", d.display()))));
                }
            }
            Ok(())
        })
        .await
        .map_err(join_error)?
    }

    async fn upload_create(&self, id: &str) -> Result<()> {
        let path = self.upload_path(id)?;
        let guard = self.lock_upload(id).await;
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
            Ok(())
        })
        .await
        .map_err(join_error)?
    }

    async fn upload_write(&self, id: &str, _part: u32, offset: u64, mut body: ByteStream, hasher: ResumableHasher) -> Result<PartWritten> {
        let path = self.upload_path(id)?;
        let guard = self.lock_upload(id).await;
        let owned_id = id.to_owned();
        // The body starts arriving while the upload is opened.
        let mut job = Some(tokio::task::spawn_blocking(move || Appender::open(&path, &owned_id, offset, hasher, guard)));
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
                        return Poll::Ready(WriteEvent::Job(r));
                    }
                }
                if receiving {
                    if let Poll::Ready(item) = body.as_mut().poll_next(cx) {
                        return Poll::Ready(WriteEvent::Body(item));
                    }
                }
                Poll::Pending
            })
            .await;
            match event {
                WriteEvent::Job(r) => {
                    job = None;
                    // A failed open (unknown upload, missing bytes) or write ends the write; the
                    // caller records nothing of it.
                    appender = Some(r.map_err(join_error)??);
                }
                WriteEvent::Body(Some(Ok(chunk))) => {
                    if !chunk.is_empty() {
                        pending_bytes += chunk.len();
                        pending.push(chunk);
                    }
                }
                WriteEvent::Body(Some(Err(e))) => {
                    body_error = Some(e);
                    ended = true;
                }
                WriteEvent::Body(None) => ended = true,
            }
        }
        let Some(appender) = appender else {
            // Unreachable: the loop ends only with the appender idle.
            return Err(BlobError::Io(io::Error::other("upload write ended without its writer")));
        };
        if let Some(e) = &body_error {
            tracing::debug!(upload = id, kept = appender.written, error = %e, "upload body failed midway");
        }
        // Dropping the appender closes the file and releases the upload's lock.
        let Appender { written, hasher, .. } = appender;
        Ok(PartWritten { written, hasher, body_error })
    }

    async fn upload_complete(&self, id: &str, _parts: u32, size: u64, digest: &Digest) -> Result<Committed> {
        let path = self.upload_path(id)?;
        let guard = self.lock_upload(id).await;
        let blobs = self.blobs.clone();
        let id = id.to_owned();
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            complete_worker(&blobs, &path, &id, size, &digest)
        })
        .await
        .map_err(join_error)?
    }

    async fn upload_abort(&self, id: &str) -> Result<()> {
        let path = self.upload_path(id)?;
        let guard = self.lock_upload(id).await;
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            remove_if_exists(&path)?;
            Ok(())
        })
        .await
        .map_err(join_error)?
    }

    fn list_uploads(&self) -> NameStream {
        walk_stream(Walk::new(self.uploads.clone(), 0, Accept::Upload))
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
            // another object of the digest is there, or a completion just made it).
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

    fn list_objects(&self, older_than_secs: u64) -> NameStream {
        match SystemTime::now().checked_sub(Duration::from_secs(older_than_secs)) {
            Some(cutoff) => walk_stream(Walk::new(self.blobs.clone(), 3, Accept::ObjectBefore(cutoff))),
            None => Box::pin(futures_util::stream::empty()),
        }
    }
}

/// Which files a [`Walk`] yields.
#[derive(Debug, Clone, Copy)]
enum Accept {
    /// Upload files (valid ids).
    Upload,
    /// Objects (valid keys) last modified at or before the time.
    ObjectBefore(SystemTime),
}

/// A walk of a directory tree whose files are `depth` directories below its root, done in
/// batches of at most `LIST_BATCH` names (each batch one blocking job). Directories that vanish
/// meanwhile (a concurrent delete) are skipped.
struct Walk {
    root: PathBuf,
    depth: usize,
    accept: Accept,
    /// Open directories, outermost first, with the key prefix of their entries.
    stack: Vec<(String, fs::ReadDir)>,
    started: bool,
}

impl Walk {
    fn new(root: PathBuf, depth: usize, accept: Accept) -> Walk {
        Walk { root, depth, accept, stack: Vec::new(), started: false }
    }

    /// Opens a directory of the walk; None if it vanished or is not a directory.
    fn read_dir(&self, prefix: &str) -> io::Result<Option<fs::ReadDir>> {
        match fs::read_dir(self.root.join(prefix)) {
            Ok(entries) => Ok(Some(entries)),
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn accepts(&self, name: &str, path: &Path) -> io::Result<bool> {
        let valid = match self.accept {
            Accept::Upload => valid_id(name),
            Accept::ObjectBefore(_) => valid_key(name),
        };
        if !valid {
            return Ok(false);
        }
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(meta.is_file()
            && match self.accept {
                Accept::Upload => true,
                Accept::ObjectBefore(cutoff) => meta.modified().is_ok_and(|m| m <= cutoff),
            })
    }

    /// The next names; empty when the walk is done. Blocking.
    fn next_batch(&mut self) -> io::Result<Vec<String>> {
        if !self.started {
            self.started = true;
            if let Some(entries) = self.read_dir("")? {
                self.stack.push((String::new(), entries));
            }
        }
        let mut names = Vec::new();
        while names.len() < LIST_BATCH {
            let Some((prefix, entries)) = self.stack.last_mut() else { break };
            let entry = match entries.next() {
                None => {
                    self.stack.pop();
                    continue;
                }
                Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => continue,
                Some(Err(e)) => return Err(e),
                Some(Ok(entry)) => entry,
            };
            let Ok(name) = entry.file_name().into_string() else { continue };
            let name = format!("{prefix}{name}");
            if self.stack.len() <= self.depth {
                if let Some(entries) = self.read_dir(&name)? {
                    self.stack.push((format!("{name}/"), entries));
                }
            } else if self.accepts(&name, &entry.path())? {
                names.push(name);
            }
        }
        Ok(names)
    }
}

/// Streams a walk's names, one batch job at a time as the consumer asks for more.
fn walk_stream(walk: Walk) -> NameStream {
    let state = (Some(walk), VecDeque::<String>::new());
    Box::pin(futures_util::stream::unfold(state, |(mut walk, mut ready)| async move {
        loop {
            if let Some(name) = ready.pop_front() {
                return Some((Ok(name), (walk, ready)));
            }
            let mut w = walk.take()?;
            match tokio::task::spawn_blocking(move || {
                let batch = w.next_batch();
                (w, batch)
            })
            .await
            {
                Ok((_, Ok(batch))) if batch.is_empty() => return None,
                Ok((w, Ok(batch))) => {
                    walk = Some(w);
                    ready.extend(batch);
                }
                Ok((_, Err(e))) => return Some((Err(e.into()), (None, ready))),
                Err(e) => return Some((Err(join_error(e)), (None, ready))),
            }
        }
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Instant;

    use berth_oci::Algorithm;
    use futures_util::{stream, StreamExt};

    use super::*;
    use crate::testsuite::{self, body, collect, data, read, sha256};

    fn store() -> (tempfile::TempDir, FsBlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn new_hasher() -> ResumableHasher {
        ResumableHasher::new(Algorithm::Sha256)
    }

    /// Writes `bytes` as the first part of a new upload and completes it.
    async fn put(store: &FsBlobStore, id: &str, bytes: &[u8]) -> Committed {
        store.upload_create(id).await.unwrap();
        let w = store.upload_write(id, 1, 0, body(bytes, 1 << 20), new_hasher()).await.unwrap();
        assert_eq!(w.hasher.finish(), sha256(bytes));
        store.upload_complete(id, 1, bytes.len() as u64, &sha256(bytes)).await.unwrap()
    }

    fn upload_len(dir: &tempfile::TempDir, id: &str) -> Option<u64> {
        std::fs::metadata(dir.path().join("uploads").join(id)).ok().map(|m| m.len())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suite() {
        let (_dir, store) = store();
        testsuite::run_all(&store).await;
        // Again on the same store: the parts clean up after themselves.
        testsuite::run_all(&store).await;
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
    async fn bad_ids_and_keys_are_refused() {
        let (dir, store) = store();
        std::fs::write(dir.path().join("secret"), b"x").unwrap();
        for id in ["", "../secret", "a/b", "a.b", &"x".repeat(65), ".."] {
            assert!(matches!(store.upload_create(id).await, Err(BlobError::UploadUnknown(_))), "{id:?}");
            assert!(matches!(store.upload_write(id, 1, 0, body(b"", 1), new_hasher()).await, Err(BlobError::UploadUnknown(_))), "{id:?}");
            assert!(matches!(store.upload_complete(id, 0, 0, &sha256(b"")).await, Err(BlobError::UploadUnknown(_))), "{id:?}");
            assert!(matches!(store.upload_abort(id).await, Err(BlobError::UploadUnknown(_))), "{id:?}");
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

    /// Listings skip junk, judge objects by their mtime, and a delete takes the emptied digest
    /// directories with it.
    #[tokio::test]
    async fn listings_on_disk() {
        let (dir, store) = store();
        for id in ["b-2", "a_1", "c3"] {
            store.upload_create(id).await.unwrap();
        }
        std::fs::write(dir.path().join("uploads/not.an.id"), b"").unwrap();
        std::fs::create_dir(dir.path().join("uploads/a-dir")).unwrap();
        let mut ids = collect(store.list_uploads()).await;
        ids.sort();
        assert_eq!(ids, vec!["a_1", "b-2", "c3"]);

        let k1 = put(&store, "a_1", b"first").await.key;
        let k2 = put(&store, "c3", b"second").await.key;
        // Junk in the object tree is not a key.
        std::fs::write(dir.path().join("blobs/sha256/junk"), b"").unwrap();
        std::fs::write(dir.path().join("blobs/README"), b"").unwrap();
        let junk_dir = dir.path().join("blobs").join(k1.rsplit_once('/').unwrap().0);
        std::fs::write(junk_dir.join("not-a-unique"), b"").unwrap();
        let mut keys = collect(store.list_objects(0)).await;
        keys.sort();
        let mut want = vec![k1.clone(), k2.clone()];
        want.sort();
        assert_eq!(keys, want);
        assert!(collect(store.list_objects(3600)).await.is_empty());
        // Age one object by hand.
        let old = SystemTime::now() - Duration::from_secs(7200);
        File::options().write(true).open(dir.path().join("blobs").join(&k1)).unwrap().set_modified(old).unwrap();
        assert_eq!(collect(store.list_objects(3600)).await, vec![k1.clone()]);
        std::fs::remove_file(junk_dir.join("not-a-unique")).unwrap();

        store.delete(&k1).await.unwrap();
        assert_eq!(collect(store.list_objects(0)).await, vec![k2.clone()]);
        // The empty digest directories went with the object.
        let hex_dir = dir.path().join("blobs").join(&k1);
        assert!(!hex_dir.parent().unwrap().exists());
        assert!(!hex_dir.parent().unwrap().parent().unwrap().exists());
        assert!(dir.path().join("blobs/sha256").is_dir());
    }

    #[tokio::test]
    async fn complete_refreshes_mtime() {
        let (dir, store) = store();
        store.upload_create("slow").await.unwrap();
        let w = store.upload_write("slow", 1, 0, body(b"written long ago", 4), new_hasher()).await.unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        File::options().write(true).open(dir.path().join("uploads/slow")).unwrap().set_modified(old).unwrap();
        let key = store.upload_complete("slow", 1, w.written, &w.hasher.finish()).await.unwrap().key;
        assert!(collect(store.list_objects(3600)).await.is_empty(), "a just-completed object is not an orphan candidate");
        assert_eq!(collect(store.list_objects(0)).await, vec![key]);
    }

    /// The hash comes only from the hasher the caller hands in: bytes already in the file are
    /// never read (here they were changed behind the store's back, and the digest ignores it).
    #[tokio::test]
    async fn nothing_is_read_back_to_hash() {
        let (dir, store) = store();
        store.upload_create("h").await.unwrap();
        let w = store.upload_write("h", 1, 0, body(b"abc", 1), new_hasher()).await.unwrap();
        let checkpoint = w.hasher.checkpoint();
        std::fs::write(dir.path().join("uploads/h"), b"xyz").unwrap();
        // Another process (a second store on the folder) continues from the checkpoint.
        let other = FsBlobStore::open(dir.path()).unwrap();
        let w = other.upload_write("h", 2, 3, body(b"def", 1), ResumableHasher::restore(&checkpoint).unwrap()).await.unwrap();
        assert_eq!(w.hasher.finish(), sha256(b"abcdef"));
        let c = other.upload_complete("h", 2, 6, &sha256(b"abcdef")).await.unwrap();
        assert_eq!(read(&store, &c.key, None).await.1, b"xyzdef", "the store wrote only what it was given");
    }

    /// Two writes of one process at the same offset (a lost claim's and the next) never
    /// interleave: the per-id lock runs them one after the other, and the file ends up holding
    /// exactly one of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_at_one_offset_never_interleave() {
        let (dir, store) = store();
        let store = Arc::new(store);
        store.upload_create("race").await.unwrap();
        let contents: Vec<Vec<u8>> = (0..4).map(|i| data(2_000_000, 20 + i)).collect();
        let mut tasks = Vec::new();
        for content in contents.clone() {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { store.upload_write("race", 1, 0, body(&content, 50_000), new_hasher()).await.unwrap() }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().written, 2_000_000);
        }
        let on_disk = std::fs::read(dir.path().join("uploads/race")).unwrap();
        assert!(contents.contains(&on_disk), "the file holds one whole write");
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
        let (dir, store) = store();
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
                async move { store.upload_write(&id, 1, 0, chunks_in, new_hasher()).await }
            });
            let mut sent = 0;
            for &n in *chunks {
                tx.send(Ok(Bytes::copy_from_slice(&content[sent..sent + n]))).unwrap();
                sent += n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!task.is_finished(), "{id}: the write waits for the body");
            // The connection's body timeout ends the stall with an error.
            tx.send(Err(timed_out())).unwrap();
            let w = task.await.unwrap().unwrap();
            assert_eq!(w.body_error.map(|e| e.kind()), Some(io::ErrorKind::TimedOut), "{id}");
            let kept = sent as u64;
            assert_eq!(w.written, kept, "{id}");
            assert_eq!(w.hasher.bytes_hashed(), kept, "{id}: hash state of what was kept");
            assert_eq!(upload_len(&dir, id), Some(kept), "{id}");
            // The upload continues at what was kept.
            let rest = store.upload_write(id, 2, kept, body(&content[sent..], 1 << 20), w.hasher).await.unwrap();
            assert_eq!(kept + rest.written, content.len() as u64, "{id}");
            assert_eq!(rest.hasher.finish(), sha256(&content));
            let committed = store.upload_complete(id, 2, content.len() as u64, &sha256(&content)).await.unwrap();
            assert!(read(&*store, &committed.key, None).await.1 == content, "{id}");
        }
    }

    #[tokio::test]
    async fn dropped_write_releases_the_lock_and_counts_for_nothing() {
        let (dir, store) = store();
        let store = Arc::new(store);
        let content = data(APPEND_BATCH + 70_000, 10);
        store.upload_create("gone").await.unwrap();
        let (tx, chunks_in) = channel_body();
        let task = tokio::spawn({
            let store = store.clone();
            async move { store.upload_write("gone", 1, 0, chunks_in, new_hasher()).await }
        });
        tx.send(Ok(Bytes::copy_from_slice(&content[..APPEND_BATCH]))).unwrap();
        // A batch was handed to a write job; then the client goes quiet and the request is dropped.
        let deadline = Instant::now() + Duration::from_secs(10);
        while upload_len(&dir, "gone") != Some(APPEND_BATCH as u64) {
            assert!(Instant::now() < deadline, "the first batch was not written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        drop(tx);
        // The lock was released; nobody recorded the dropped write, so the next write starts
        // at the recorded offset (0) and replaces its bytes.
        let again = tokio::time::timeout(Duration::from_secs(10), store.upload_write("gone", 1, 0, body(&content, 100_000), new_hasher())).await;
        let w = again.expect("the upload's lock was released").unwrap();
        assert_eq!(w.written, content.len() as u64);
        let committed = store.upload_complete("gone", 1, w.written, &w.hasher.finish()).await.unwrap();
        assert!(read(&*store, &committed.key, None).await.1 == content);
    }

    /// Waiting for a client holds no blocking thread: with a pool of two, twenty stalled
    /// writes and twenty stalled readers leave room for a normal push and pull. (Before, each
    /// write's writer thread waited on the body: the third push would wait forever.)
    #[test]
    fn stalled_clients_hold_no_blocking_thread() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).max_blocking_threads(2).enable_all().build().unwrap();
        let test = async {
            let (dir, store) = store();
            let store = Arc::new(store);
            let object = data(READ_CHUNK * 8, 11);
            let key = put(&store, "obj", &object).await.key;

            let mut stalled = Vec::new();
            for i in 0..20 {
                let id = format!("stalled-{i}");
                store.upload_create(&id).await.unwrap();
                let (tx, stalled_body) = channel_body();
                // One byte of a declared megabyte, then nothing.
                tx.send(Ok(Bytes::from_static(b"x"))).unwrap();
                let store = store.clone();
                stalled.push((tx, tokio::spawn(async move { store.upload_write(&id, 1, 0, stalled_body, new_hasher()).await })));
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
                let w = store.upload_write("normal", 1, 0, body(&content, 64 << 10), new_hasher()).await.unwrap();
                let key = store.upload_complete("normal", 1, w.written, &w.hasher.finish()).await.unwrap().key;
                assert!(read(&*store, &key, None).await.1 == content);
            };
            tokio::time::timeout(Duration::from_secs(20), normal).await.expect("a normal push and pull complete beside stalled clients");

            for (tx, task) in stalled {
                assert!(!task.is_finished());
                tx.send(Err(timed_out())).unwrap();
                let w = task.await.unwrap().unwrap();
                assert!(w.body_error.is_some());
                assert_eq!(w.written, 1);
            }
            assert_eq!(upload_len(&dir, "stalled-7"), Some(1));
            drop(readers);
        };
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), test).await })
            .expect("stalled clients wedged the blocking pool (uploads could not even be created)");
        rt.shutdown_timeout(Duration::from_secs(5));
    }

    #[tokio::test]
    async fn dropped_reader_stops_early() {
        let (_dir, store) = store();
        let content = data(READ_CHUNK * 8, 7);
        let key = put(&store, "d", &content).await.key;
        let mut reader = store.open(&key, None).await.unwrap();
        let first = reader.body.next().await.unwrap().unwrap();
        assert_eq!(first.len(), READ_CHUNK);
        assert!(first[..] == content[..READ_CHUNK]);
        drop(reader);
        // The store is still usable and the object intact.
        assert_eq!(read(&store, &key, Some((5, 9))).await.1, content[5..10]);
    }

    /// The chunks an object is read in are at most `READ_CHUNK`.
    #[tokio::test]
    async fn reads_in_bounded_chunks() {
        let (_dir, store) = store();
        let content = data(READ_CHUNK * 3 + 5, 13);
        let key = put(&store, "chunks", &content).await.key;
        let mut body = store.open(&key, None).await.unwrap().body;
        let mut sizes = Vec::new();
        while let Some(c) = body.next().await {
            sizes.push(c.unwrap().len());
        }
        assert_eq!(sizes, vec![READ_CHUNK, READ_CHUNK, READ_CHUNK, 5]);
    }

    /// Throughput check: `cargo test -p berth-blob --release -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn throughput_256_mib() {
        let total = 256 << 20;
        let digest = testsuite::generated_digest(total, 8).await;
        let (_dir, store) = store();
        for chunk in [16 << 10, 64 << 10, 1 << 20] {
            // Generated before the clock starts (the body's chunks are ready, as from a socket).
            let chunks: Vec<io::Result<Bytes>> = testsuite::generated(0, total, chunk, 8).collect().await;
            store.upload_create("big").await.unwrap();
            let t = Instant::now();
            let w = store.upload_write("big", 1, 0, Box::pin(stream::iter(chunks)), new_hasher()).await.unwrap();
            let written = t.elapsed().as_secs_f64();
            assert_eq!(w.hasher.finish(), digest);
            let key = store.upload_complete("big", 1, total as u64, &digest).await.unwrap().key;
            let push = t.elapsed().as_secs_f64();
            let gb = total as f64 / 1e9;
            eprintln!(
                "256 MiB in {} KiB chunks: write+sha256 {:.0} ms, complete (fsync + rename) {:.0} ms: {:.2} GB/s",
                chunk >> 10,
                written * 1e3,
                (push - written) * 1e3,
                gb / push
            );
            store.delete(&key).await.unwrap();
        }
        // Pull without hashing on the consumer side, as a server streaming to a socket would.
        store.upload_create("big").await.unwrap();
        store.upload_write("big", 1, 0, testsuite::generated(0, total, 1 << 20, 8), new_hasher()).await.unwrap();
        let key = store.upload_complete("big", 1, total as u64, &digest).await.unwrap().key;
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
