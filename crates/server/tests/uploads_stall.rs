//! Stalled and failing upload bodies, in process through `berth_server::app` with real SQLite and
//! filesystem stores: a body that fails midway is a clear 400 that says where to resume, and
//! thousands of stalled PATCHes cannot starve the blocking pool that logins and pushes need.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::Router;
use berth_server::AnonymousAccess;
use bytes::Bytes;
use common::{basic, sha256, Resp, PW};
use http::{Method, Request, StatusCode};
use tokio::sync::mpsc;
use tower::ServiceExt;

async fn build(dir: &std::path::Path) -> Router {
    common::open_app(dir, AnonymousAccess::Off).await.0
}

/// Sends a request as admin (Basic credentials on /v2).
async fn send(app: &Router, method: Method, uri: &str, headers: &[(&str, &str)], body: Body) -> Resp {
    let mut b = Request::builder().method(method).uri(uri).header("host", "registry.test").header("authorization", basic("admin", PW));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    Resp::read(app.clone().oneshot(b.body(body).unwrap()).await.unwrap()).await
}

/// A request body fed by hand: it waits (stalls) while the sender is quiet.
fn channel_body() -> (mpsc::UnboundedSender<std::io::Result<Bytes>>, Body) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    (tx, Body::from_stream(stream))
}

/// What the server's body timeout yields for a stalled body.
fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "request body timed out")
}

/// A body that sends `bytes` and then fails.
fn failing_body(bytes: &[u8]) -> Body {
    let (tx, body) = channel_body();
    tx.send(Ok(Bytes::copy_from_slice(bytes))).unwrap();
    tx.send(Err(timed_out())).unwrap();
    body
}

async fn start_session(app: &Router, repo: &str) -> String {
    let r = send(app, Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[], Body::empty()).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    r.header("location").trim_start_matches("http://registry.test").to_owned()
}

#[tokio::test]
async fn patch_body_failing_midway_keeps_bytes_and_says_where_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let app = build(dir.path()).await;
    let content: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let session = start_session(&app, "lib/app").await;

    let r = send(&app, Method::PATCH, &session, &[("content-range", "0-299999")], failing_body(&content[..300_000])).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "BLOB_UPLOAD_INVALID");
    assert_eq!(r.header("range"), "0-299999");
    assert!(r.header("location").ends_with(&session), "{}", r.header("location"));
    let msg = r.message();
    assert!(msg.contains("kept 300000 bytes") && msg.contains("starting at byte 300000") && msg.contains("timed out"), "{msg}");

    // The session is usable at its recorded size.
    let r = send(&app, Method::GET, &session, &[], Body::empty()).await;
    assert_eq!((r.status, r.header("range")), (StatusCode::NO_CONTENT, "0-299999"));
    let r = send(&app, Method::PATCH, &session, &[("content-range", "300000-499999")], Body::from(content[300_000..500_000].to_vec())).await;
    assert_eq!((r.status, r.header("range")), (StatusCode::ACCEPTED, "0-499999"));

    // A final PUT whose body fails keeps its bytes too; then a PUT without a body commits.
    let put = format!("{session}?digest={}", sha256(&content));
    let r = send(&app, Method::PUT, &put, &[], failing_body(&content[500_000..600_000])).await;
    assert_eq!((r.status, r.code().as_str(), r.header("range")), (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", "0-599999"));
    let r = send(&app, Method::PATCH, &session, &[], Body::from(content[600_000..].to_vec())).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = send(&app, Method::PUT, &put, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
    let r = send(&app, Method::GET, &format!("/v2/lib/app/blobs/{}", sha256(&content)), &[], Body::empty()).await;
    assert_eq!(r.status, 200);
    assert!(r.body == content);
}

#[tokio::test]
async fn monolithic_body_failing_midway_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let app = build(dir.path()).await;
    let content = vec![7u8; 100_000];
    let uri = format!("/v2/lib/app/blobs/uploads/?digest={}", sha256(&content));
    let r = send(&app, Method::POST, &uri, &[], failing_body(&content[..50_000])).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"));
    assert!(r.message().contains("retry the upload"), "{}", r.message());
    let r = send(&app, Method::HEAD, &format!("/v2/lib/app/blobs/{}", sha256(&content)), &[], Body::empty()).await;
    assert_eq!(r.status, 404);
    // No session data is left behind.
    assert_eq!(std::fs::read_dir(dir.path().join("uploads")).unwrap().count(), 0);
    // The retry works.
    let r = send(&app, Method::POST, &uri, &[], Body::from(content)).await;
    assert_eq!(r.status, StatusCode::CREATED);
}

/// The incident: stalled PATCHes (one byte of a declared megabyte) wedged logins and pushes.
/// With a blocking pool of two threads, forty stalled PATCHes must leave a login (argon2 on the
/// blocking pool) and a push free to complete.
#[test]
fn stalled_patches_do_not_wedge_logins_and_pushes() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).max_blocking_threads(2).enable_all().build().unwrap();
    let test = async {
        let dir = tempfile::tempdir().unwrap();
        let app = build(dir.path()).await;
        let mut stalled = Vec::new();
        for _ in 0..40 {
            let session = start_session(&app, "lib/stalled").await;
            let (tx, body) = channel_body();
            tx.send(Ok(Bytes::from_static(b"x"))).unwrap();
            let app = app.clone();
            let task = tokio::spawn(async move {
                send(&app, Method::PATCH, &session, &[("content-length", "1048576"), ("content-range", "0-1048575")], body).await
            });
            stalled.push((tx, task));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;

        let normal = async {
            // A login on the token endpoint.
            let r = send(&app, Method::GET, "/service/token?service=berth&scope=repository:lib/app:pull,push", &[], Body::empty()).await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            // A chunked push.
            let content = vec![3u8; 2 << 20];
            let session = start_session(&app, "lib/app").await;
            let r = send(&app, Method::PATCH, &session, &[], Body::from(content.clone())).await;
            assert_eq!(r.status, StatusCode::ACCEPTED);
            let r = send(&app, Method::PUT, &format!("{session}?digest={}", sha256(&content)), &[], Body::empty()).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
        };
        tokio::time::timeout(Duration::from_secs(30), normal).await.expect("a login and a push complete beside stalled PATCHes");

        // The server's body timeout ends the stalls: each gets a 400 and keeps its byte.
        for (tx, task) in stalled {
            assert!(!task.is_finished());
            tx.send(Err(timed_out())).unwrap();
            let r = task.await.unwrap();
            assert_eq!((r.status, r.code().as_str(), r.header("range")), (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", "0-0"));
        }
    };
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(90), test).await })
        .expect("stalled PATCHes wedged the blocking pool (sessions could not even be started)");
    rt.shutdown_timeout(Duration::from_secs(5));
}
