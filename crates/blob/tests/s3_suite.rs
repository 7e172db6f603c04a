//! The backend-independent suite, in full, against [`S3Store`] on a real S3 server (moto's
//! server on 127.0.0.1, which `scripts/s3.sh` installs and starts; `scripts/test.sh` runs it),
//! plus what only S3 shows: chunk sizes on both sides of S3's 5 MiB part minimum, a write on
//! one store and the next on another (replicas), and the start-up check's messages.
//!
//! The server: [`berth_blob::testsuite::s3env`]. Every test works under a fresh prefix of its own.

// A test: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use berth_blob::s3::S3Store;
use berth_blob::testsuite::{self, body, data, read, sha256};
use berth_blob::BlobStore;
use berth_oci::{Algorithm, ResumableHasher};

const MIB: usize = 1 << 20;

use berth_blob::testsuite::s3env::{endpoint, fresh_prefix, options};

async fn store(test: &str) -> S3Store {
    let options = options(&fresh_prefix(test));
    match S3Store::connect(options).await {
        Ok(store) => store,
        Err(e) => panic!("{e}\n(is the test S3 server running? run scripts/s3.sh)"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_s3() {
    // Small listing pages, so the suite's 600 uploads span several.
    let store = store("suite").await.with_list_page_size(250);
    testsuite::run_all(&store).await;
}

/// Parts of every size around S3's rules (1 MiB chunks as oras-py sends, one big PATCH as docker
/// sends, tiny ones, one past the write's 8 MiB part), each written by one of two stores on the
/// same bucket and prefix in turn (two replicas), completed through the other; and a lost write
/// longer than its replacement in the middle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_sizes_and_replicas() {
    let prefix = fresh_prefix("replicas");
    let a = S3Store::connect(options(&prefix)).await.unwrap();
    let b = S3Store::connect(options(&prefix)).await.unwrap();
    let stores: [&dyn BlobStore; 2] = [&a, &b];
    let sizes = [MIB, MIB, MIB, 6 * MIB, 100_000, 3, 9 * MIB + 5, MIB, 2 * MIB, 17 * MIB + 1];
    let total: usize = sizes.iter().sum();
    let content = data(total, 31);
    a.upload_create("mixed").await.unwrap();
    let (mut offset, mut part, mut state) = (0usize, 0u32, ResumableHasher::new(Algorithm::Sha256).checkpoint());
    for (i, size) in sizes.iter().enumerate() {
        let store = stores[i % 2];
        if i == 4 {
            // A write whose claim is lost: longer than what replaces it; never recorded.
            let lost = data(12 * MIB, 99);
            let w = store.upload_write("mixed", part + 1, offset as u64, body(&lost, 256 << 10), ResumableHasher::restore(&state).unwrap()).await.unwrap();
            assert_eq!(w.written, lost.len() as u64);
        }
        let chunk = if i % 3 == 0 { 64 << 10 } else { MIB };
        let w = store
            .upload_write("mixed", part + 1, offset as u64, body(&content[offset..offset + size], chunk), ResumableHasher::restore(&state).unwrap())
            .await
            .unwrap();
        assert_eq!(w.written, *size as u64);
        assert!(w.body_error.is_none());
        offset += size;
        part += 1;
        state = w.hasher.checkpoint();
    }
    let hasher = ResumableHasher::restore(&state).unwrap();
    let digest = hasher.finish();
    assert_eq!(digest, sha256(&content));
    let c = b.upload_complete("mixed", part, total as u64, &digest).await.unwrap();
    assert_eq!(c.size, total as u64);
    let (size, got) = read(&a, &c.key, None).await;
    assert_eq!(size, total as u64);
    assert!(got == content, "the object holds the recorded writes");
    let (_, got) = read(&b, &c.key, Some((MIB as u64 - 3, 8 * MIB as u64 + 2))).await;
    assert!(got[..] == content[MIB - 3..8 * MIB + 3]);
    a.delete(&c.key).await.unwrap();
}

/// A write of 20 MiB in one chunk (a multipart piece) whose body fails midway keeps what arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_body_failing_midway_keeps_what_arrived() {
    let store = store("big-failing").await;
    let content = data(20 * MIB + 7, 41);
    store.upload_create("f").await.unwrap();
    let w = store.upload_write("f", 1, 0, testsuite::failing_body(&content[..13 * MIB + 1], MIB), ResumableHasher::new(Algorithm::Sha256)).await.unwrap();
    assert!(w.body_error.is_some());
    assert_eq!(w.written, 13 * MIB as u64 + 1);
    let rest = store.upload_write("f", 2, w.written, body(&content[13 * MIB + 1..], 3 * MIB), w.hasher).await.unwrap();
    let digest = rest.hasher.finish();
    assert_eq!(digest, sha256(&content));
    let c = store.upload_complete("f", 2, content.len() as u64, &digest).await.unwrap();
    assert!(read(&store, &c.key, None).await.1 == content);
    store.delete(&c.key).await.unwrap();
}

/// The start-up check says in one line what is wrong.
#[tokio::test]
async fn setup_errors_are_one_line() {
    let mut missing = options(&fresh_prefix("setup"));
    missing.bucket = "berth-no-such-bucket".into();
    let e = S3Store::connect(missing).await.unwrap_err().to_string();
    assert!(e.contains("does not exist") && e.contains("berth-no-such-bucket") && !e.contains('\n'), "{e}");

    let mut unreachable = options("x");
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    unreachable.endpoint = Some(format!("http://127.0.0.1:{port}"));
    let e = S3Store::connect(unreachable).await.unwrap_err().to_string();
    assert!(e.contains("cannot reach") && !e.contains('\n'), "{e}");
}

/// A body fed by hand: it waits while the sender is quiet and ends when the sender is dropped.
fn channel_body() -> (tokio::sync::mpsc::UnboundedSender<std::io::Result<bytes::Bytes>>, berth_blob::ByteStream) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    (tx, Box::pin(body))
}

/// A write whose claim was lost and that finishes late (after the next write of its offset
/// stored its piece) cannot replace the recorded bytes: its piece is created only if none is
/// there (`If-None-Match`), so it fails, and the completed object holds the recorded write.
/// Once as one `PutObject` (small), once as a multipart upload (past 8 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_lost_write_cannot_replace_the_recorded_one() {
    let store = std::sync::Arc::new(store("late-lost").await);
    for (id, lost_len) in [("small", 300_000usize), ("big", 9 * MIB + 3)] {
        store.upload_create(id).await.unwrap();
        let lost = data(lost_len, 51);
        let (tx, lost_body) = channel_body();
        let late = tokio::spawn({
            let store = store.clone();
            async move { store.upload_write(id, 1, 0, lost_body, ResumableHasher::new(Algorithm::Sha256)).await }
        });
        // All but the end of the lost write arrives (and, for the big one, its first part is sent).
        tx.send(Ok(bytes::Bytes::copy_from_slice(&lost[..lost_len - 1]))).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(!late.is_finished(), "{id}: the lost write waits for its body");
        // The next writer of offset 0 (which took the claim over) stores and records its bytes.
        let recorded = data(200_000, 52);
        let w = store.upload_write(id, 1, 0, body(&recorded, 65_536), ResumableHasher::new(Algorithm::Sha256)).await.unwrap();
        assert_eq!(w.written, recorded.len() as u64);
        // Now the lost write's body ends: its piece must not replace the recorded one.
        tx.send(Ok(bytes::Bytes::copy_from_slice(&lost[lost_len - 1..]))).unwrap();
        drop(tx);
        let outcome = late.await.unwrap();
        match outcome {
            Err(e) => assert!(e.to_string().contains("another write stored"), "{id}: {e}"),
            Ok(w) => panic!("{id}: the late write stored {} bytes", w.written),
        }
        let digest = w.hasher.finish();
        let c = store.upload_complete(id, 1, recorded.len() as u64, &digest).await.unwrap();
        assert!(read(&*store, &c.key, None).await.1 == recorded, "{id}: the object holds the recorded write");
        store.delete(&c.key).await.unwrap();
    }
}

/// A raw client on the test server, to look at what the store leaves in the bucket.
fn raw_client() -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new("test", "test", None, None, "test"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

async fn multipart_keys(client: &aws_sdk_s3::Client, prefix: &str) -> Vec<String> {
    let out = client.list_multipart_uploads().bucket(options("x").bucket).prefix(prefix).send().await.unwrap();
    out.uploads().iter().filter_map(|u| u.key()).map(str::to_owned).collect()
}

/// A write dropped mid-way (the request went away) aborts its multipart upload in the
/// background; a multipart upload left with no object (a crashed process) is listed as an
/// upload, so the sweep's abort removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_are_not_left_behind() {
    let prefix = fresh_prefix("dangling");
    let store = std::sync::Arc::new(S3Store::connect(options(&prefix)).await.unwrap());
    let client = raw_client();
    let uploads = format!("{prefix}/uploads/");

    store.upload_create("dropped").await.unwrap();
    let (tx, stalled) = channel_body();
    let task = tokio::spawn({
        let store = store.clone();
        async move { store.upload_write("dropped", 1, 0, stalled, ResumableHasher::new(Algorithm::Sha256)).await }
    });
    tx.send(Ok(bytes::Bytes::from(data(9 * MIB, 61)))).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while multipart_keys(&client, &uploads).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the write started no multipart upload");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !multipart_keys(&client, &uploads).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the dropped write's multipart upload was not aborted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    store.upload_abort("dropped").await.unwrap();

    // A crashed writer's multipart upload, with no other object of its upload.
    let key = format!("{uploads}crashed/00000000000000000000");
    client.create_multipart_upload().bucket(options("x").bucket).key(&key).send().await.unwrap();
    let listed = testsuite::collect(store.list_uploads()).await;
    assert_eq!(listed, vec!["crashed".to_owned()]);
    store.upload_abort("crashed").await.unwrap();
    assert!(multipart_keys(&client, &uploads).await.is_empty());
    assert!(testsuite::collect(store.list_uploads()).await.is_empty());
}
