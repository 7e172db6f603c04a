//! What a client sees when a store behind Berth fails, and that Berth recovers by itself: S3
//! answering 503 or not reachable, PostgreSQL gone and back. Fault proxies on 127.0.0.1 stand
//! between Berth and the real servers (`support::FaultProxy`).
//!
//! A store's failure is `503 Service Unavailable` with the code `UNAVAILABLE` and `Retry-After`
//! (never a 500, never a half-written blob or manifest), `/readyz` names the failing store, and
//! once the store is back the same requests succeed without a restart.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use support::{sha256, Berth, Fault, FaultProxy, OciImage, SharedBackends};

async fn expect_unavailable(r: reqwest::Response, what: &str, logs: impl Fn() -> String) {
    let status = r.status();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let body = r.text().await.unwrap();
    assert_eq!(status, 503, "{what}: {body}\n{}", logs());
    assert!(body.contains("UNAVAILABLE"), "{what}: {body}");
    assert!(retry.is_some(), "{what}: no Retry-After");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failures_are_503_and_berth_recovers() {
    let shared = SharedBackends::create("faults");
    let pg = FaultProxy::start(shared.postgres_addr());
    let s3 = FaultProxy::start(shared.s3_addr());
    let mut b = Berth::builder()
        .envs(shared.env_via(pg.addr, s3.addr))
        .env("BERTH_METADATA__ACQUIRE_TIMEOUT", "2s")
        .env("BERTH_METADATA__CONNECT_TIMEOUT", "2s")
        .start();
    let src = OciImage::write(&b.path("src"), "v1", &[400_000]);
    b.push(&src, "library/app:v1").assert_success();
    let (layer, layer_bytes) = src.blobs().into_iter().max_by_key(|(_, b)| b.len()).unwrap();
    let blob_url = format!("/v2/library/app/blobs/{layer}");
    let fresh = support::random_bytes(200_000);
    let fresh_digest = sha256(&fresh);
    let put_fresh = |b: &mut Berth| {
        let req = b.admin(Method::POST, &format!("/v2/library/app/blobs/uploads/?digest={fresh_digest}")).header("content-type", "application/octet-stream").body(fresh.clone());
        async move { req.send().await.unwrap() }
    };

    // S3 answers 503 to everything (after the SDK's retries): downloads and uploads are 503.
    s3.set(Fault::Http503);
    let started = Instant::now();
    expect_unavailable(b.admin(Method::GET, &blob_url).send().await.unwrap(), "GET blob, S3 503", || b.logs()).await;
    eprintln!("a download failed after {:?} of S3 503s", started.elapsed());
    expect_unavailable(put_fresh(&mut b).await, "monolithic upload, S3 503", || b.logs()).await;
    let r = reqwest::get(b.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), "metadata: ok\nstorage: unavailable\n");
    // Metadata still answers: manifests come from the database.
    let r = b.admin(Method::GET, "/v2/library/app/manifests/v1").header("accept", support::MANIFEST_TYPE).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // S3 unreachable: the same.
    s3.set(Fault::Down);
    expect_unavailable(b.admin(Method::GET, &blob_url).send().await.unwrap(), "GET blob, S3 down", || b.logs()).await;

    // Back: nothing of the failed upload is there; it works now.
    s3.set(Fault::Pass);
    let r = b.admin(Method::HEAD, &format!("/v2/library/app/blobs/{fresh_digest}")).send().await.unwrap();
    assert_eq!(r.status(), 404, "a failed upload left a blob behind");
    let r = put_fresh(&mut b).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = b.admin(Method::GET, &blob_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == layer_bytes);
    let r = reqwest::get(b.url("/readyz")).await.unwrap();
    assert_eq!(r.text().await.unwrap(), "metadata: ok\nstorage: ok\n");

    // PostgreSQL gone (open connections cut, new ones refused): 503 within the acquire
    // timeout, and /readyz says which store.
    pg.set(Fault::Down);
    let started = Instant::now();
    expect_unavailable(
        b.admin(Method::GET, "/v2/library/app/manifests/v1").header("accept", support::MANIFEST_TYPE).send().await.unwrap(),
        "GET manifest, database down",
        || b.logs(),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(15), "a request waited {:?} for the database", started.elapsed());
    let r = reqwest::get(b.url("/readyz")).await.unwrap();
    let (status, text) = (r.status(), r.text().await.unwrap());
    assert_eq!(status, 503, "{text}\n{}", b.logs());
    assert!(text.starts_with("metadata: unavailable\n"), "{text}");
    assert!(b.is_running(), "Berth exited when the database went away\n{}", b.logs());

    // Back: Berth reconnects by itself.
    pg.set(Fault::Pass);
    let back = Instant::now();
    loop {
        let r = b.admin(Method::GET, "/v2/library/app/manifests/v1").header("accept", support::MANIFEST_TYPE).send().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(20), "Berth did not recover from the database outage: {}", r.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("requests succeeded again {:?} after the database came back", back.elapsed());
    b.pull("library/app:v1", &b.path("back"), "v1").assert_success();
    src.assert_same_content(&OciImage::read(&b.path("back"), "v1"));

    // The failures were logged as plain text: no Rust debug formatting of the SDK's or sqlx's errors.
    let logs = b.logs();
    assert!(logs.contains("blob storage unavailable") && logs.contains("metadata store unavailable"), "{logs}");
    for line in logs.lines() {
        for debug in ["Some(", "None,", " { source:", "ServiceError(", "DispatchFailure(", "Error { code:"] {
            assert!(!line.contains(debug), "debug formatting {debug:?} in the log: {line}");
        }
    }
}

/// An S3 endpoint whose certificate comes from a private CA: Berth refuses it with one line
/// naming the certificate problem, and uses it once `storage.ca_file` names the CA.
#[test]
fn s3_endpoint_behind_a_private_ca() {
    let shared = SharedBackends::create("private-ca");
    let front = support::TlsFront::start(shared.s3_addr());
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("s3-ca.pem");
    std::fs::write(&ca, &front.ca_pem).unwrap();
    let env = shared.env_with_s3_endpoint(&format!("https://{}", front.addr));
    let out = support::run(support::berth_command().arg("serve").args(["--listen", "127.0.0.1:0"]).envs(env.clone()).current_dir(dir.path())).assert_failure();
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    let [err] = errors.as_slice() else { panic!("not one error line: {}", out.stderr) };
    assert!(err.contains("blob storage:") && err.contains("invalid peer certificate"), "{err}");
    let b = Berth::builder().envs(env).env("BERTH_STORAGE__CA_FILE", ca.to_str().unwrap()).start();
    let src = OciImage::write(&b.path("src"), "v1", &[100_000]);
    b.push(&src, "library/app:v1").assert_success();
    b.pull("library/app:v1", &b.path("back"), "v1").assert_success();
    src.assert_same_content(&OciImage::read(&b.path("back"), "v1"));
    let r = support::block_on({
        let url = b.url("/readyz");
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    });
    assert_eq!(r, "metadata: ok\nstorage: ok\n");
}

/// Credentials that may not delete (a bucket policy without s3:DeleteObject and
/// s3:AbortMultipartUpload): Berth refuses to start, in one line naming both permissions.
#[test]
fn s3_credentials_without_delete_permission_are_refused_at_start() {
    let shared = SharedBackends::create("no-delete");
    let front = support::DenyDeletes::start(shared.s3_addr());
    let dir = tempfile::tempdir().unwrap();
    let env = shared.env_with_s3_endpoint(&format!("http://{}", front.addr));
    let out = support::run(support::berth_command().arg("serve").args(["--listen", "127.0.0.1:0"]).envs(env).current_dir(dir.path())).assert_failure();
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    let [err] = errors.as_slice() else { panic!("not one error line: {}", out.stderr) };
    assert!(err.contains("blob storage:") && err.contains("the credentials lack"), "{err}");
    assert!(err.contains("s3:DeleteObject") && err.contains("s3:AbortMultipartUpload") && err.contains("AccessDenied"), "{err}");
    assert!(!err.contains("s3:PutObject") && !err.contains("s3:GetObject") && !err.contains("s3:ListBucket,"), "only what is missing: {err}");
}
