//! The backend-independent test suite every [`BlobStore`] implementation must pass.
//!
//! Compiled for this crate's tests and, for other crates (another backend), with the cargo
//! feature `testsuite`; never in release binaries.
//!
//! Call [`run_all`] on a store; it need not be empty. Every part uses upload ids of its own
//! (`suite-<part>-…`), deletes the objects it completed, and judges listings only by its own ids
//! and keys, so the parts can also run one by one, and again on the same store. Every part
//! plays the caller's role as `berth-core` does: it keeps the offset, part count and hasher
//! between writes (through a checkpoint, as the upload record does) and verifies the digest
//! before it completes.

// A test suite: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io;

use berth_oci::{Algorithm, Digest, ResumableHasher};
use bytes::Bytes;
use futures_util::{stream, StreamExt};

use crate::{BlobError, BlobStore, ByteStream, Committed, PartWritten};

/// The S3 test server that `scripts/s3.sh` starts (moto on 127.0.0.1), for every crate's tests.
///
/// The endpoint comes from `TEST_S3_ENDPOINT` (not `BERTH_*`: the binary refuses unknown
/// `BERTH_*` variables and some tests pass on their environment), else from the file
/// `target/test-s3/endpoint` that `scripts/s3.sh` writes; the bucket from `TEST_S3_BUCKET`, else
/// `berth-test`. Every test should work under a fresh prefix of its own ([`s3env::fresh_prefix`]).
pub mod s3env {
    use crate::S3Options;

    /// The endpoint URL; panics saying how to start the server when there is none.
    pub fn endpoint() -> String {
        if let Ok(e) = std::env::var("TEST_S3_ENDPOINT") {
            if !e.is_empty() {
                return e;
            }
        }
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/test-s3/endpoint");
        match std::fs::read_to_string(file) {
            Ok(e) if !e.trim().is_empty() => e.trim().to_owned(),
            _ => panic!(
                "no S3 server for the S3 tests: run ./scripts/test.sh (which starts one), or scripts/s3.sh \
                 (installs and starts moto's S3 server on 127.0.0.1 and writes target/test-s3/endpoint), or set TEST_S3_ENDPOINT"
            ),
        }
    }

    /// The bucket.
    pub fn bucket() -> String {
        std::env::var("TEST_S3_BUCKET").unwrap_or_else(|_| "berth-test".into())
    }

    /// Options for the test server under `prefix` (moto accepts any static credentials).
    pub fn options(prefix: &str) -> S3Options {
        S3Options {
            prefix: prefix.to_owned(),
            region: Some("us-east-1".into()),
            endpoint: Some(endpoint()),
            path_style: true,
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            allow_http: true,
            ..S3Options::new(bucket())
        }
    }

    /// `tests/<test>-<unique>`: a prefix no other test (or run) uses.
    pub fn fresh_prefix(test: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::time::{SystemTime, UNIX_EPOCH};
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        format!("tests/{test}-{nanos:x}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
    }
}

/// Runs every part of the suite, in order, on `store`.
pub async fn run_all(store: &dyn BlobStore) {
    store.ping().await.expect("a working store answers its readiness check");
    parts_and_complete(store).await;
    zero_bytes(store).await;
    sha512(store).await;
    failed_body_resumes(store).await;
    lost_claim_is_overwritten(store).await;
    missing_bytes(store).await;
    unknown_uploads(store).await;
    abort(store).await;
    create_restarts(store).await;
    ranges(store).await;
    fresh_keys_and_delete(store).await;
    listings(store).await;
    large_streamed(store).await;
}

// ---- helpers ----

/// Deterministic pseudo-random bytes (xorshift).
pub fn data(len: usize, seed: u64) -> Vec<u8> {
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

/// A body of `bytes` in chunks of `chunk` bytes.
pub fn body(bytes: &[u8], chunk: usize) -> ByteStream {
    let chunks: Vec<io::Result<Bytes>> = bytes.chunks(chunk.max(1)).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    Box::pin(stream::iter(chunks))
}

/// A body that delivers `bytes` in chunks of `chunk` bytes and then fails (a reset connection);
/// a chunk after the error must never be stored.
pub fn failing_body(bytes: &[u8], chunk: usize) -> ByteStream {
    let items = bytes
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .chain(std::iter::once(Err(io::Error::new(io::ErrorKind::ConnectionReset, "client went away"))))
        .chain(std::iter::once(Ok(Bytes::from_static(b"never stored"))))
        .collect::<Vec<_>>();
    Box::pin(stream::iter(items))
}

pub fn sha256(bytes: &[u8]) -> Digest {
    Digest::compute(Algorithm::Sha256, bytes)
}

/// The whole object (or the range) and the size the store reports.
pub async fn read(store: &dyn BlobStore, key: &str, range: Option<(u64, u64)>) -> (u64, Vec<u8>) {
    let reader = store.open(key, range).await.unwrap();
    let mut out = Vec::new();
    let mut body = reader.body;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    (reader.size, out)
}

/// Every name of a listing.
pub async fn collect(mut names: crate::NameStream) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(name) = names.next().await {
        out.push(name.unwrap());
    }
    out
}

/// What the caller keeps of an upload between writes (the upload record's fields).
struct Session<'a> {
    store: &'a dyn BlobStore,
    id: String,
    offset: u64,
    parts: u32,
    /// `ResumableHasher::checkpoint`, as the record holds it.
    hash_state: Vec<u8>,
}

impl<'a> Session<'a> {
    async fn start(store: &'a dyn BlobStore, id: &str, alg: Algorithm) -> Session<'a> {
        store.upload_create(id).await.unwrap();
        Session { store, id: id.to_owned(), offset: 0, parts: 0, hash_state: ResumableHasher::new(alg).checkpoint() }
    }

    /// Writes the next part and returns what the store answered, without recording it.
    async fn try_write(&self, body: ByteStream) -> PartWritten {
        let hasher = ResumableHasher::restore(&self.hash_state).unwrap();
        let w = self.store.upload_write(&self.id, self.parts + 1, self.offset, body, hasher).await.unwrap();
        assert_eq!(w.hasher.bytes_hashed(), self.offset + w.written, "{}: the hasher took in exactly the bytes stored", self.id);
        w
    }

    /// Records a write (the release of the claim).
    fn record(&mut self, w: &PartWritten) {
        self.offset += w.written;
        self.parts += 1;
        self.hash_state = w.hasher.checkpoint();
    }

    /// Writes the next part, which must succeed whole, and records it.
    async fn write(&mut self, bytes: &[u8], chunk: usize) {
        let w = self.try_write(body(bytes, chunk)).await;
        assert!(w.body_error.is_none());
        assert_eq!(w.written, bytes.len() as u64);
        self.record(&w);
    }

    /// Verifies the digest with the hasher, as the caller must, then completes.
    async fn complete(self, want: &Digest) -> Committed {
        let hasher = ResumableHasher::restore(&self.hash_state).unwrap();
        assert_eq!(hasher.bytes_hashed(), self.offset);
        assert_eq!(&hasher.finish(), want, "{}: the hasher's digest", self.id);
        self.store.upload_complete(&self.id, self.parts, self.offset, want).await.unwrap()
    }
}

fn key_prefix(digest: &Digest) -> String {
    let hex = digest.hex();
    format!("{}/{}/{hex}/", digest.algorithm().as_str(), &hex[..2])
}

async fn assert_upload_gone(store: &dyn BlobStore, id: &str) {
    let hasher = ResumableHasher::new(Algorithm::Sha256);
    let write = store.upload_write(id, 1, 0, body(b"x", 1), hasher).await;
    assert!(matches!(write, Err(BlobError::UploadUnknown(_))), "{id}: a write to a gone upload");
    assert!(matches!(store.upload_complete(id, 0, 0, &sha256(b"")).await, Err(BlobError::UploadUnknown(_))), "{id}: completing a gone upload");
    assert!(!collect(store.list_uploads()).await.contains(&id.to_owned()), "{id}: listed after it is gone");
}

// ---- parts ----

/// Parts of several sizes and chunkings, an empty part, completion, the object read back.
pub async fn parts_and_complete(store: &dyn BlobStore) {
    let content = data(3 * 1024 * 1024 + 17, 1);
    let mut s = Session::start(store, "suite-parts", Algorithm::Sha256).await;
    s.write(&content[..1_000_000], 65_536).await;
    s.write(&content[1_000_000..1_000_001], 1).await;
    s.write(&content[1_000_001..], 300_001).await;
    // An empty part at the end stores nothing and keeps the hasher as it was.
    let w = s.try_write(body(b"", 1)).await;
    assert_eq!(w.written, 0);
    s.record(&w);
    assert_eq!(s.parts, 4);

    let digest = sha256(&content);
    let committed = s.complete(&digest).await;
    assert_eq!(committed.size, content.len() as u64);
    assert!(committed.key.starts_with(&key_prefix(&digest)), "{}", committed.key);
    assert_eq!(committed.key.matches('/').count(), 3, "{}", committed.key);
    let (size, read_back) = read(store, &committed.key, None).await;
    assert_eq!(size, content.len() as u64);
    assert!(read_back == content);
    assert_upload_gone(store, "suite-parts").await;
    store.delete(&committed.key).await.unwrap();
}

/// A zero-byte blob, with no part and with one empty part.
pub async fn zero_bytes(store: &dyn BlobStore) {
    let empty = sha256(b"");
    assert_eq!(empty.as_str(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    let s = Session::start(store, "suite-zero-none", Algorithm::Sha256).await;
    let none = s.complete(&empty).await;
    let mut s = Session::start(store, "suite-zero-one", Algorithm::Sha256).await;
    s.write(b"", 1).await;
    let one = s.complete(&empty).await;
    for c in [none, one] {
        assert_eq!(c.size, 0);
        assert_eq!(read(store, &c.key, None).await, (0, Vec::new()));
        store.delete(&c.key).await.unwrap();
    }
}

/// A sha512 upload gets a sha512 key.
pub async fn sha512(store: &dyn BlobStore) {
    let content = data(1_500_000, 3);
    let mut s = Session::start(store, "suite-sha512", Algorithm::Sha512).await;
    s.write(&content[..700_000], 70_000).await;
    s.write(&content[700_000..], 70_000).await;
    let digest = Digest::compute(Algorithm::Sha512, &content);
    let c = s.complete(&digest).await;
    assert!(c.key.starts_with(&key_prefix(&digest)), "{}", c.key);
    assert!(read(store, &c.key, None).await.1 == content);
    store.delete(&c.key).await.unwrap();
}

/// A body that fails midway: what the store kept (all that arrived, or nothing) is reported
/// with a hasher that matches it exactly, and the upload continues from there.
pub async fn failed_body_resumes(store: &dyn BlobStore) {
    let content = data(900_000, 5);
    let mut s = Session::start(store, "suite-failed-body", Algorithm::Sha256).await;
    s.write(&content[..100_000], 50_000).await;
    let w = s.try_write(failing_body(&content[100_000..700_000], 100_000)).await;
    assert_eq!(w.body_error.as_ref().map(io::Error::kind), Some(io::ErrorKind::ConnectionReset));
    assert!(w.written == 600_000 || w.written == 0, "kept {} bytes: all that arrived, or none", w.written);
    s.record(&w);
    // Through a checkpoint, as another process would continue.
    let resume = usize::try_from(s.offset).unwrap();
    s.write(&content[resume..], 128 << 10).await;
    let c = s.complete(&sha256(&content)).await;
    assert!(read(store, &c.key, None).await.1 == content);
    store.delete(&c.key).await.unwrap();

    // A body that fails before its first byte stores nothing.
    let mut s = Session::start(store, "suite-failed-first", Algorithm::Sha256).await;
    let w = s.try_write(failing_body(b"", 1)).await;
    assert!(w.body_error.is_some());
    assert_eq!(w.written, 0);
    s.record(&w);
    s.write(b"after", 2).await;
    let c = s.complete(&sha256(b"after")).await;
    assert_eq!(read(store, &c.key, None).await.1, b"after");
    store.delete(&c.key).await.unwrap();
}

/// A write whose claim was lost (never recorded) is replaced by the next write of the same part
/// at the same offset, whether that one is shorter or longer, and dropped by a completion.
pub async fn lost_claim_is_overwritten(store: &dyn BlobStore) {
    let first = data(300_000, 6);
    let lost = data(700_000, 7);
    let second = data(200_000, 8);

    // Lost first part, then a shorter one.
    let mut s = Session::start(store, "suite-lost-first", Algorithm::Sha256).await;
    let w = s.try_write(body(&lost, 100_000)).await;
    assert_eq!(w.written, lost.len() as u64);
    s.write(&second, 64 << 10).await;
    let c = s.complete(&sha256(&second)).await;
    assert_eq!(c.size, second.len() as u64);
    assert!(read(store, &c.key, None).await.1 == second);
    store.delete(&c.key).await.unwrap();

    // A recorded part, a lost second part, then a shorter second part.
    let mut s = Session::start(store, "suite-lost-second", Algorithm::Sha256).await;
    s.write(&first, 100_000).await;
    s.try_write(body(&lost, 100_000)).await;
    s.write(&second, 100_000).await;
    let want = [&first[..], &second[..]].concat();
    let c = s.complete(&sha256(&want)).await;
    assert!(read(store, &c.key, None).await.1 == want);
    store.delete(&c.key).await.unwrap();

    // A lost part and no write after it: the completion keeps the recorded bytes only.
    let mut s = Session::start(store, "suite-lost-last", Algorithm::Sha256).await;
    s.write(&first, 100_000).await;
    s.try_write(body(&lost, 100_000)).await;
    let c = s.complete(&sha256(&first)).await;
    assert_eq!(c.size, first.len() as u64);
    assert!(read(store, &c.key, None).await.1 == first);
    store.delete(&c.key).await.unwrap();
}

/// A write past the stored bytes, or a completion declaring more than them, is refused.
pub async fn missing_bytes(store: &dyn BlobStore) {
    let mut s = Session::start(store, "suite-missing", Algorithm::Sha256).await;
    s.write(b"hello", 5).await;
    let hasher = ResumableHasher::restore(&s.hash_state).unwrap();
    match store.upload_write("suite-missing", 2, 9, body(b"xx", 2), hasher).await {
        Err(BlobError::OutOfOrder { expected, got }) => assert_eq!((expected, got), (5, 9)),
        other => panic!("want OutOfOrder, got {other:?}"),
    }
    assert!(matches!(
        store.upload_complete("suite-missing", 1, 6, &sha256(b"hello?")).await,
        Err(BlobError::SizeMismatch { declared: 6, actual: 5 })
    ));
    // The upload is still whole.
    s.write(b" world", 3).await;
    let c = s.complete(&sha256(b"hello world")).await;
    assert_eq!(read(store, &c.key, None).await.1, b"hello world");
    store.delete(&c.key).await.unwrap();
}

/// Writes to, completions and aborts of uploads that never existed.
pub async fn unknown_uploads(store: &dyn BlobStore) {
    assert_upload_gone(store, "suite-never-created").await;
    store.upload_abort("suite-never-created").await.unwrap();
}

/// An aborted upload is gone; aborting is idempotent.
pub async fn abort(store: &dyn BlobStore) {
    let mut s = Session::start(store, "suite-abort", Algorithm::Sha256).await;
    s.write(&data(10_000, 9), 1000).await;
    assert!(collect(store.list_uploads()).await.contains(&"suite-abort".to_owned()));
    store.upload_abort("suite-abort").await.unwrap();
    store.upload_abort("suite-abort").await.unwrap();
    assert_upload_gone(store, "suite-abort").await;
}

/// Creating an upload again starts it empty.
pub async fn create_restarts(store: &dyn BlobStore) {
    let mut s = Session::start(store, "suite-again", Algorithm::Sha256).await;
    s.write(b"old", 3).await;
    let mut s = Session::start(store, "suite-again", Algorithm::Sha256).await;
    s.write(b"new", 3).await;
    let c = s.complete(&sha256(b"new")).await;
    assert_eq!(read(store, &c.key, None).await.1, b"new");
    store.delete(&c.key).await.unwrap();
}

/// Inclusive ranges: first and last byte, across read-chunk boundaries, the whole object, the
/// tail, and an end past the object (clamped).
pub async fn ranges(store: &dyn BlobStore) {
    let content = data(2 * 1024 * 1024 + 1000, 4);
    let len = content.len() as u64;
    let mut s = Session::start(store, "suite-ranges", Algorithm::Sha256).await;
    s.write(&content, 1 << 20).await;
    let c = s.complete(&sha256(&content)).await;
    let cases: &[((u64, u64), std::ops::Range<usize>)] = &[
        ((0, 0), 0..1),
        ((len - 1, len - 1), content.len() - 1..content.len()),
        ((1000, 524_288 + 5000), 1000..524_288 + 5001),
        ((1_048_575, 1_048_576), 1_048_575..1_048_577),
        ((0, len - 1), 0..content.len()),
        ((len - 10, len - 1), content.len() - 10..content.len()),
        ((len - 3, len + 100), content.len() - 3..content.len()),
    ];
    for ((start, end), want) in cases {
        let (size, got) = read(store, &c.key, Some((*start, *end))).await;
        assert_eq!(size, len, "{start}-{end}: the size is the object's");
        assert!(got == content[want.clone()], "{start}-{end}");
    }
    store.delete(&c.key).await.unwrap();
}

/// The same content completed twice gets two keys (same digest prefix); deleting one leaves
/// the other; deleting is idempotent; a deleted object is `NotFound`.
pub async fn fresh_keys_and_delete(store: &dyn BlobStore) {
    let content = b"same bytes twice";
    let digest = sha256(content);
    let mut keys = Vec::new();
    for id in ["suite-twice-1", "suite-twice-2"] {
        let mut s = Session::start(store, id, Algorithm::Sha256).await;
        s.write(content, 4).await;
        keys.push(s.complete(&digest).await.key);
    }
    assert_ne!(keys[0], keys[1]);
    assert_eq!(keys[0].rsplit_once('/').unwrap().0, keys[1].rsplit_once('/').unwrap().0);
    store.delete(&keys[0]).await.unwrap();
    store.delete(&keys[0]).await.unwrap();
    assert!(matches!(store.open(&keys[0], None).await, Err(BlobError::NotFound(k)) if k == keys[0]));
    assert_eq!(read(store, &keys[1], None).await.1, content);
    store.delete(&keys[1]).await.unwrap();
    assert!(matches!(store.open(&keys[1], None).await, Err(BlobError::NotFound(_))));
}

/// Listings are streams: many more uploads than one page, objects by age, a listing dropped
/// half-read, and nothing listed once gone.
pub async fn listings(store: &dyn BlobStore) {
    const UPLOADS: usize = 600;
    let ids: Vec<String> = (0..UPLOADS).map(|i| format!("suite-list-{i}")).collect();
    for id in &ids {
        store.upload_create(id).await.unwrap();
    }
    let listed: Vec<String> = collect(store.list_uploads()).await;
    let listed_set: HashSet<&String> = listed.iter().collect();
    assert_eq!(listed.len(), listed_set.len(), "no id is listed twice");
    for id in &ids {
        assert!(listed_set.contains(id), "{id} is listed");
    }
    // A listing read in part and dropped.
    let mut partial = store.list_uploads();
    assert!(partial.next().await.unwrap().is_ok());
    drop(partial);

    let mut keys = Vec::new();
    for (i, id) in ids.iter().take(3).enumerate() {
        let bytes = format!("listed object {i}");
        let mut s = Session { store, id: id.clone(), offset: 0, parts: 0, hash_state: ResumableHasher::new(Algorithm::Sha256).checkpoint() };
        s.write(bytes.as_bytes(), 5).await;
        keys.push(s.complete(&sha256(bytes.as_bytes())).await.key);
    }
    for id in &ids[3..] {
        store.upload_abort(id).await.unwrap();
    }
    let listed: HashSet<String> = collect(store.list_uploads()).await.into_iter().collect();
    assert!(ids.iter().all(|id| !listed.contains(id)), "completed and aborted uploads are not listed");

    let objects: HashSet<String> = collect(store.list_objects(0)).await.into_iter().collect();
    assert!(keys.iter().all(|k| objects.contains(k)), "new objects are listed with no minimum age");
    let old: HashSet<String> = collect(store.list_objects(3600)).await.into_iter().collect();
    assert!(keys.iter().all(|k| !old.contains(k)), "just-completed objects are not an hour old");
    assert!(collect(store.list_objects(u64::MAX)).await.is_empty());
    store.delete(&keys[0]).await.unwrap();
    let objects: HashSet<String> = collect(store.list_objects(0)).await.into_iter().collect();
    assert!(!objects.contains(&keys[0]) && objects.contains(&keys[1]));
    for k in &keys[1..] {
        store.delete(k).await.unwrap();
    }
}

/// Byte `i` of the generated content of [`generated`]: 1 MiB blocks of `data(1 MiB, seed)`, each
/// block's first 8 bytes replaced by its number, so blocks differ without generating every byte.
fn generated_block(block: &Bytes, number: u64) -> Bytes {
    let mut b = block.to_vec();
    b[..8].copy_from_slice(&number.to_le_bytes());
    Bytes::from(b)
}

/// Bytes `from..to` of the generated content, in chunks of at most `chunk` bytes, made as they
/// are consumed (nobody holds the content whole).
pub fn generated(from: usize, to: usize, chunk: usize, seed: u64) -> ByteStream {
    const BLOCK: usize = 1 << 20;
    let block = Bytes::from(data(BLOCK, seed));
    let pieces = stream::unfold(from, move |at| {
        let block = block.clone();
        async move {
            if at >= to {
                return None;
            }
            let number = (at / BLOCK) as u64;
            let start = at % BLOCK;
            let end = BLOCK.min(start + (to - at));
            let b = generated_block(&block, number);
            let chunks: Vec<io::Result<Bytes>> = (start..end).step_by(chunk).map(|o| Ok(b.slice(o..(o + chunk).min(end)))).collect();
            Some((stream::iter(chunks), at + (end - start)))
        }
    })
    .flatten();
    Box::pin(pieces)
}

/// The digest of bytes `0..total` of the generated content.
pub async fn generated_digest(total: usize, seed: u64) -> Digest {
    let mut hasher = ResumableHasher::new(Algorithm::Sha256);
    let mut body = generated(0, total, 1 << 20, seed);
    while let Some(chunk) = body.next().await {
        hasher.update(&chunk.unwrap());
    }
    hasher.finish()
}

/// Tens of MiB in two parts, streamed in and out without the test or the store holding them.
pub async fn large_streamed(store: &dyn BlobStore) {
    const TOTAL: usize = 40 << 20;
    let split = (24 << 20) + 1024;
    let digest = generated_digest(TOTAL, 10).await;
    let mut s = Session::start(store, "suite-large", Algorithm::Sha256).await;
    for (from, to, chunk) in [(0, split, 64 << 10), (split, TOTAL, 1_000_003)] {
        let w = s.try_write(generated(from, to, chunk, 10)).await;
        assert!(w.body_error.is_none());
        assert_eq!(w.written, (to - from) as u64);
        s.record(&w);
    }
    let c = s.complete(&digest).await;
    assert_eq!(c.size, TOTAL as u64);

    let reader = store.open(&c.key, None).await.unwrap();
    assert_eq!(reader.size, TOTAL as u64);
    let mut body = reader.body;
    let mut hasher = ResumableHasher::new(Algorithm::Sha256);
    let mut max_chunk = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        max_chunk = max_chunk.max(chunk.len());
        hasher.update(&chunk);
    }
    assert_eq!(hasher.bytes_hashed(), TOTAL as u64);
    assert_eq!(hasher.finish(), digest);
    assert!(max_chunk <= 16 << 20, "the object is read in chunks, not whole ({max_chunk} bytes at once)");
    store.delete(&c.key).await.unwrap();
}
