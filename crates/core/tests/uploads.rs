//! The upload workflow over a real SQLite store and filesystem blob store in a temp folder:
//! chunked, monolithic and POST-then-PUT uploads; appends racing on one upload from two cores
//! over one database file (two processes: exactly one wins per offset); resuming after a failed
//! body; a restart (new cores and stores over the same folder) continuing from the record's
//! checkpoint; a digest mismatch discarding the upload; a dropped request giving its claim back;
//! a write whose claim was taken over recording nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_access::Permissions;
use berth_blob::{BlobStore, ByteStream, FsBlobStore};
use berth_core::auth::{Caller, Grants};
use berth_core::{Core, CoreConfig, Error};
use berth_identity::{PrincipalKind, TokenIssuer};
use berth_meta::{MetadataStore, SqliteStore, UploadClaim};
use berth_oci::{Algorithm, Digest, RepoName, ResumableHasher};
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use tokio::sync::mpsc;

/// One Berth process: a core over its own handles on the folder's stores.
struct Process {
    core: Arc<Core>,
    meta: Arc<SqliteStore>,
    blobs: Arc<FsBlobStore>,
}

async fn process(dir: &Path) -> Process {
    let meta = Arc::new(SqliteStore::open(&dir.join("berth.db")).await.unwrap());
    let key = meta.init_setting("registry_signing_key", &berth_identity::token::generate_signing_key().unwrap()).await.unwrap();
    let tokens = Arc::new(TokenIssuer::new(&key, "berth", "berth", Duration::from_secs(900)).unwrap());
    let blobs = Arc::new(FsBlobStore::open(dir.to_path_buf()).unwrap());
    let core = Core::new(meta.clone(), blobs.clone(), tokens, CoreConfig::default());
    Process { core, meta, blobs }
}

fn admin() -> Caller {
    Caller { subject: "admin".into(), kind: PrincipalKind::User, grants: Grants::Permissions(Permissions::admin()), origin: None }
}

fn repo(name: &str) -> RepoName {
    name.parse().unwrap()
}

fn sha256(b: &[u8]) -> Digest {
    Digest::compute(Algorithm::Sha256, b)
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

fn body(bytes: &[u8]) -> ByteStream {
    let chunks: Vec<io::Result<Bytes>> = bytes.chunks(64 << 10).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    Box::pin(stream::iter(chunks))
}

/// A body that delivers `bytes` in eight chunks 5 ms apart.
fn trickle(bytes: &[u8]) -> ByteStream {
    let size = bytes.len().div_ceil(8).max(1);
    let chunks: Vec<Bytes> = bytes.chunks(size).map(Bytes::copy_from_slice).collect();
    Box::pin(stream::iter(chunks).then(|c| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(c)
    }))
}

/// A body that sends `bytes` and then fails as the server's body timeout would.
fn failing_body(bytes: &[u8]) -> ByteStream {
    let items = vec![Ok(Bytes::copy_from_slice(bytes)), Err(io::Error::new(io::ErrorKind::TimedOut, "request body timed out"))];
    Box::pin(stream::iter(items))
}

/// A body fed by hand: it waits (stalls) while the sender is quiet.
fn channel_body() -> (mpsc::UnboundedSender<io::Result<Bytes>>, ByteStream) {
    let (tx, rx) = mpsc::unbounded_channel();
    let body = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    (tx, Box::pin(body))
}

/// The blob's bytes, read through the blob store.
async fn blob(p: &Process, r: &RepoName, digest: &Digest) -> Vec<u8> {
    let record = p.meta.repo_blob(r, digest).await.unwrap().expect("the blob is recorded");
    let reader = p.blobs.open(&record.storage_key, None).await.unwrap();
    let mut out = Vec::new();
    let mut body = reader.body;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

fn upload_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("uploads")).unwrap().count()
}

#[tokio::test]
async fn chunked_monolithic_and_post_then_put() {
    let dir = tempfile::tempdir().unwrap();
    let p = process(dir.path()).await;
    let r = repo("lib/app");
    let content = data(1_000_000, 1);

    let id = p.core.upload_start(&r).await.unwrap();
    assert_eq!(p.core.upload_status(&r, &id).await.unwrap(), 0);
    assert_eq!(p.core.upload_append(&r, &id, Some(0), body(&content[..300_000])).await.unwrap(), 300_000);
    assert_eq!(p.core.upload_append(&r, &id, None, body(&content[300_000..700_000])).await.unwrap(), 700_000);
    assert_eq!(p.core.upload_status(&r, &id).await.unwrap(), 700_000);
    // Another repository does not see the session.
    assert!(matches!(p.core.upload_status(&repo("other"), &id).await, Err(Error::UploadUnknown)));
    assert!(matches!(p.core.upload_append(&repo("other"), &id, None, body(b"x")).await, Err(Error::UploadUnknown)));
    // A chunk that does not start at the end.
    match p.core.upload_append(&r, &id, Some(5), body(b"x")).await {
        Err(Error::UploadOutOfOrder { expected, got }) => assert_eq!((expected, got), (700_000, 5)),
        other => panic!("want UploadOutOfOrder, got {other:?}"),
    }
    let d = sha256(&content);
    p.core.upload_finish(&admin(), &r, &id, &d, Some(700_000), Some(body(&content[700_000..]))).await.unwrap();
    assert!(blob(&p, &r, &d).await == content);
    assert!(matches!(p.core.upload_status(&r, &id).await, Err(Error::UploadUnknown)));

    // Monolithic, sha512.
    let small = b"monolithic sha512".to_vec();
    let d512 = Digest::compute(Algorithm::Sha512, &small);
    p.core.upload_monolithic(&admin(), &r, &d512, body(&small)).await.unwrap();
    assert_eq!(blob(&p, &r, &d512).await, small);

    // POST then PUT with the whole body, sha512: the digest's algorithm is known at the write.
    let id = p.core.upload_start(&r).await.unwrap();
    let more = b"post then put sha512".to_vec();
    let d = Digest::compute(Algorithm::Sha512, &more);
    p.core.upload_finish(&admin(), &r, &id, &d, None, Some(body(&more))).await.unwrap();
    assert_eq!(blob(&p, &r, &d).await, more);

    // An empty blob, PUT without a body.
    let id = p.core.upload_start(&r).await.unwrap();
    p.core.upload_finish(&admin(), &r, &id, &sha256(b""), None, None).await.unwrap();
    assert_eq!(blob(&p, &r, &sha256(b"")).await, b"");

    // The same blob again: the duplicate object is deleted, the first stays.
    let first_key = p.meta.repo_blob(&r, &sha256(&content)).await.unwrap().unwrap().storage_key;
    p.core.upload_monolithic(&admin(), &r, &sha256(&content), body(&content)).await.unwrap();
    assert_eq!(p.meta.repo_blob(&r, &sha256(&content)).await.unwrap().unwrap().storage_key, first_key);
    let objects: Vec<String> = p.blobs.list_objects(0).map(|k| k.unwrap()).collect().await;
    assert_eq!(objects.len(), 4, "{objects:?}");
    assert_eq!(upload_files(dir.path()), 0);

    // Mount: only from a repository the caller may pull, and only a blob it has.
    assert!(p.core.upload_mount(&admin(), &repo("mounted"), &r, &d).await.unwrap());
    assert_eq!(blob(&p, &repo("mounted"), &d).await, more);
    assert!(!p.core.upload_mount(&admin(), &repo("mounted"), &r, &sha256(b"never pushed")).await.unwrap());
    let nobody = Caller { subject: "nobody".into(), kind: PrincipalKind::User, grants: Grants::Permissions(Permissions::default()), origin: None };
    assert!(!p.core.upload_mount(&nobody, &repo("mounted2"), &r, &d).await.unwrap());
}

/// Two processes (two cores with their own store handles over one SQLite file and one folder)
/// append different chunks to one upload at the same offsets at once: each round exactly one
/// wins, the other is told the upload is busy or has moved on, and the blob is exactly the
/// winners' chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_racing_from_two_processes() {
    let dir = tempfile::tempdir().unwrap();
    let one = process(dir.path()).await;
    let two = process(dir.path()).await;
    let r = repo("race/app");
    let id = one.core.upload_start(&r).await.unwrap();
    let mut expected = Vec::new();
    let mut busy = 0;
    for round in 0..12u64 {
        let offset = expected.len() as u64;
        let a = data(300_000 + round as usize * 1000, 100 + round);
        let b = data(200_000 + round as usize * 3000, 200 + round);
        // Both start together from their own tasks; the one spawned first alternates.
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let append = |core: &Arc<Core>, bytes: &Vec<u8>| {
            let (core, r, id, bytes, start) = (core.clone(), r.clone(), id.clone(), bytes.clone(), start.clone());
            async move {
                start.wait().await;
                core.upload_append(&r, &id, Some(offset), trickle(&bytes)).await
            }
        };
        let (ta, tb) = if round % 2 == 0 {
            let ta = tokio::spawn(append(&one.core, &a));
            (ta, tokio::spawn(append(&two.core, &b)))
        } else {
            let tb = tokio::spawn(append(&two.core, &b));
            (tokio::spawn(append(&one.core, &a)), tb)
        };
        let (ra, rb) = (ta.await.unwrap(), tb.await.unwrap());
        let winner = match (&ra, &rb) {
            (Ok(n), Err(_)) => {
                assert_eq!(*n, offset + a.len() as u64);
                &a
            }
            (Err(_), Ok(n)) => {
                assert_eq!(*n, offset + b.len() as u64);
                &b
            }
            other => panic!("round {round}: want exactly one winner, got {other:?}"),
        };
        for loser in [&ra, &rb] {
            match loser {
                Ok(_) => {}
                Err(Error::UploadBusy { offset: o }) => {
                    assert_eq!(*o, offset, "round {round}: busy at the old offset");
                    busy += 1;
                }
                Err(Error::UploadOutOfOrder { expected: e, got }) => {
                    assert_eq!((*e, *got), (offset + winner.len() as u64, offset), "round {round}");
                }
                Err(e) => panic!("round {round}: unexpected {e:?}"),
            }
        }
        expected.extend_from_slice(winner);
        assert_eq!(two.core.upload_status(&r, &id).await.unwrap(), expected.len() as u64);
    }
    // The writes trickle for 40 ms: the other claim mostly lands while one holds the upload.
    assert!(busy > 0, "no round saw the upload busy");
    let d = sha256(&expected);
    // Finishing on the other process: the hash comes from the record's checkpoint.
    two.core.upload_finish(&admin(), &r, &id, &d, None, None).await.unwrap();
    assert!(blob(&one, &r, &d).await == expected);
}

#[tokio::test]
async fn a_failed_body_keeps_what_arrived_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let p = process(dir.path()).await;
    let r = repo("lib/resume");
    let content = data(700_000, 2);
    let id = p.core.upload_start(&r).await.unwrap();
    match p.core.upload_append(&r, &id, Some(0), failing_body(&content[..300_000])).await {
        Err(Error::BodyFailed { message, slow, kept }) => {
            assert_eq!((slow, kept), (false, Some(300_000)));
            assert!(message.contains("kept 300000 bytes") && message.contains("starting at byte 300000") && message.contains("timed out"), "{message}");
        }
        other => panic!("want BodyFailed, got {other:?}"),
    }
    assert_eq!(p.core.upload_status(&r, &id).await.unwrap(), 300_000);
    // The final PUT's body fails too: it keeps its bytes and completes nothing.
    let d = sha256(&content);
    match p.core.upload_finish(&admin(), &r, &id, &d, Some(300_000), Some(failing_body(&content[300_000..500_000]))).await {
        Err(Error::BodyFailed { kept: Some(500_000), .. }) => {}
        other => panic!("want BodyFailed kept 500000, got {other:?}"),
    }
    assert!(p.meta.repo_blob(&r, &d).await.unwrap().is_none());
    assert_eq!(p.core.upload_append(&r, &id, Some(500_000), body(&content[500_000..])).await.unwrap(), 700_000);
    p.core.upload_finish(&admin(), &r, &id, &d, None, None).await.unwrap();
    assert!(blob(&p, &r, &d).await == content);

    // A monolithic body that fails keeps nothing.
    let small = data(100_000, 3);
    match p.core.upload_monolithic(&admin(), &r, &sha256(&small), failing_body(&small[..50_000])).await {
        Err(Error::BodyFailed { message, kept: None, .. }) => assert!(message.contains("retry the upload"), "{message}"),
        other => panic!("want BodyFailed, got {other:?}"),
    }
    assert!(p.meta.repo_blob(&r, &sha256(&small)).await.unwrap().is_none());
    assert_eq!(upload_files(dir.path()), 0);
    let uploads: Vec<String> = p.blobs.list_uploads().map(|k| k.unwrap()).collect().await;
    assert!(uploads.is_empty());
}

/// A restart: new processes over the same folder continue the upload from the record (offset
/// and checkpoint), with no state carried over in memory.
#[tokio::test]
async fn a_restart_continues_from_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo("lib/restart");
    let content = data(2_500_000, 4);
    let id = {
        let p = process(dir.path()).await;
        let id = p.core.upload_start(&r).await.unwrap();
        assert_eq!(p.core.upload_append(&r, &id, Some(0), body(&content[..1_234_567])).await.unwrap(), 1_234_567);
        id
    };
    let p = process(dir.path()).await;
    let record = p.meta.get_upload(&id).await.unwrap().unwrap();
    assert_eq!((record.offset, record.parts), (1_234_567, 1));
    let hasher = ResumableHasher::restore(&record.hash_state).unwrap();
    assert_eq!(hasher.bytes_hashed(), 1_234_567);
    assert_eq!(p.core.upload_status(&r, &id).await.unwrap(), 1_234_567);
    assert_eq!(p.core.upload_append(&r, &id, Some(1_234_567), body(&content[1_234_567..])).await.unwrap(), 2_500_000);
    let d = sha256(&content);
    p.core.upload_finish(&admin(), &r, &id, &d, None, None).await.unwrap();
    assert!(blob(&p, &r, &d).await == content);
}

#[tokio::test]
async fn a_digest_mismatch_discards_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let p = process(dir.path()).await;
    let r = repo("lib/bad");
    let id = p.core.upload_start(&r).await.unwrap();
    p.core.upload_append(&r, &id, None, body(b"some bytes")).await.unwrap();
    let wrong = sha256(b"other bytes");
    match p.core.upload_finish(&admin(), &r, &id, &wrong, None, None).await {
        Err(Error::DigestInvalid(m)) => {
            assert!(m.contains(sha256(b"some bytes").as_str()) && m.contains(wrong.as_str()) && m.contains("discarded"), "{m}");
        }
        other => panic!("want DigestInvalid, got {other:?}"),
    }
    assert!(matches!(p.core.upload_status(&r, &id).await, Err(Error::UploadUnknown)));
    assert_eq!(upload_files(dir.path()), 0);
    assert!(p.blobs.list_objects(0).next().await.is_none(), "no object was made");

    // Chunks hashed with sha256 (the digest was not known yet) completed under a sha512 digest:
    // the completed object is hashed once with sha512. A wrong one is discarded, object and all.
    let id = p.core.upload_start(&r).await.unwrap();
    p.core.upload_append(&r, &id, None, body(b"chunked")).await.unwrap();
    match p.core.upload_finish(&admin(), &r, &id, &Digest::compute(Algorithm::Sha512, b"other"), None, None).await {
        Err(Error::DigestInvalid(m)) => assert!(m.contains(Digest::compute(Algorithm::Sha512, b"chunked").as_str()) && m.contains("discarded"), "{m}"),
        other => panic!("want DigestInvalid, got {other:?}"),
    }
    assert!(matches!(p.core.upload_status(&r, &id).await, Err(Error::UploadUnknown)));
    assert_eq!(upload_files(dir.path()), 0);
    assert!(p.blobs.list_objects(0).next().await.is_none(), "the unverified object was deleted");
    // The right sha512 digest completes it.
    let content = data(3_000_000, 9);
    let d512 = Digest::compute(Algorithm::Sha512, &content);
    let id = p.core.upload_start(&r).await.unwrap();
    p.core.upload_append(&r, &id, None, body(&content[..1_000_000])).await.unwrap();
    p.core.upload_finish(&admin(), &r, &id, &d512, Some(1_000_000), Some(body(&content[1_000_000..]))).await.unwrap();
    assert!(blob(&p, &r, &d512).await == content);
    let objects: Vec<String> = p.blobs.list_objects(0).map(|k| k.unwrap()).collect().await;
    assert_eq!(objects.len(), 1, "{objects:?}");

    // Cancel.
    let id = p.core.upload_start(&r).await.unwrap();
    p.core.upload_append(&r, &id, None, body(b"to be cancelled")).await.unwrap();
    p.core.upload_cancel(&r, &id).await.unwrap();
    assert!(matches!(p.core.upload_cancel(&r, &id).await, Err(Error::UploadUnknown)));
    assert!(matches!(p.core.upload_status(&r, &id).await, Err(Error::UploadUnknown)));
    assert_eq!(upload_files(dir.path()), 0);
}

/// A request dropped mid-body gives its claim back at once (the client's next request is not
/// busy until the lease ends), and nothing of it is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_request_gives_its_claim_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = process(dir.path()).await;
    let r = repo("lib/dropped");
    let content = data(600_000, 5);
    let id = p.core.upload_start(&r).await.unwrap();
    let (tx, stalled) = channel_body();
    tx.send(Ok(Bytes::copy_from_slice(&content[..400_000]))).unwrap();
    let task = tokio::spawn({
        let (core, r, id) = (p.core.clone(), r.clone(), id.clone());
        async move { core.upload_append(&r, &id, Some(0), stalled).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(p.core.upload_append(&r, &id, Some(0), body(b"x")).await, Err(Error::UploadBusy { offset: 0 })));
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let retry = async {
        loop {
            match p.core.upload_append(&r, &id, Some(0), body(&content)).await {
                Err(Error::UploadBusy { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
                other => return other,
            }
        }
    };
    let n = tokio::time::timeout(Duration::from_secs(5), retry).await.expect("the claim was given back").unwrap();
    assert_eq!(n, 600_000);
    let d = sha256(&content);
    p.core.upload_finish(&admin(), &r, &id, &d, None, None).await.unwrap();
    assert!(blob(&p, &r, &d).await == content);
}

/// A write whose claim was taken over (its lease ended, as for a process that stalled) records
/// nothing: the client is told the upload is busy at the recorded offset, and the next write
/// there replaces its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_claim_was_taken_over_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = process(dir.path()).await;
    let r = repo("lib/takeover");
    let id = p.core.upload_start(&r).await.unwrap();
    p.core.upload_append(&r, &id, Some(0), body(b"recorded ")).await.unwrap();

    let (tx, stalled) = channel_body();
    tx.send(Ok(Bytes::from(data(300_000, 6)))).unwrap();
    let task = tokio::spawn({
        let (core, r, id) = (p.core.clone(), r.clone(), id.clone());
        async move { core.upload_append(&r, &id, Some(9), stalled).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Another process claims the upload as if the lease had ended (a clock past it), and gives
    // it back unchanged.
    let later = berth_core::clock::now_secs() + 3600;
    let taken = p.meta.claim_upload(&id, &r, None, "thief", later + 30, later).await.unwrap();
    let UploadClaim::Claimed(rec) = taken else { panic!("want the takeover to succeed, got {taken:?}") };
    assert!(p.meta.release_upload(&id, "thief", rec.offset, &rec.hash_state, rec.parts, later).await.unwrap());
    // The first writer's body ends; its release fails.
    tx.send(Ok(Bytes::from_static(b"tail"))).unwrap();
    drop(tx);
    match task.await.unwrap() {
        Err(Error::UploadBusy { offset }) => assert_eq!(offset, 9),
        other => panic!("want UploadBusy, got {other:?}"),
    }
    assert_eq!(p.core.upload_status(&r, &id).await.unwrap(), 9);
    assert_eq!(p.core.upload_append(&r, &id, Some(9), body(b"and the rest")).await.unwrap(), 21);
    let d = sha256(b"recorded and the rest");
    p.core.upload_finish(&admin(), &r, &id, &d, None, None).await.unwrap();
    assert_eq!(blob(&p, &r, &d).await, b"recorded and the rest");
}
