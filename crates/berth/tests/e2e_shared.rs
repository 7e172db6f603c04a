//! Berth on PostgreSQL + S3: the OCI conformance checks and real clients (skopeo, oras-py)
//! against one Berth on them, and several replicas sharing one database and one bucket: push
//! through one and pull through another, a chunked upload whose PATCHes alternate between
//! replicas, a robot created on one used on another and revoked within 2 s, a personal access
//! token (and the registry token it got) revoked on one and refused by the others within 2 s,
//! garbage collection
//! on one while another pushes, and kill -9 of a replica mid-push with the client retrying on
//! another.
//!
//! The servers are the ones `scripts/test.sh` starts on 127.0.0.1 (Debian's PostgreSQL and
//! moto's S3 server): every test gets a database and a bucket prefix of its own
//! ([`support::SharedBackends`]).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use reqwest::Method;
use support::{run, sha256, Berth, OciImage, SharedBackends};

fn replica(shared: &SharedBackends) -> Berth {
    Berth::builder().backends(shared).start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_postgres_and_s3_has_zero_failures() {
    let shared = SharedBackends::create("conformance");
    let berth = replica(&shared);
    let cfg = berth_conformance::Config {
        url: berth.url(""),
        namespace: "conformance/a/b/c".into(),
        cross_mount_namespace: "conformance/other/repo".into(),
        username: Some("admin".into()),
        password: Some(berth.admin_password()),
    };
    let report = berth_conformance::run(cfg).await;
    eprintln!("{}", report.render_text());
    assert!(report.passed() >= 100, "too few checks ran: {}", report.summary_line());
    let failures: Vec<String> = report.failures().map(|f| format!("{f:?}")).collect();
    assert!(failures.is_empty(), "{} conformance failures on PostgreSQL + S3:\n{}\n{}", failures.len(), failures.join("\n"), berth.logs());
}

#[tokio::test]
async fn skopeo_and_oras_on_postgres_and_s3() {
    support::python();
    let shared = SharedBackends::create("clients");
    let mut b = replica(&shared);
    // The start-up line names both backends, without the database password.
    let logs = b.logs();
    assert!(support::log_field(&logs, support::LISTENING, "metadata").is_some_and(|m| m.starts_with("postgres ")), "{logs}");
    assert!(support::log_field(&logs, support::LISTENING, "storage").is_some_and(|s| s.starts_with("s3://")), "{logs}");
    let r = b.http().get(b.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "metadata: ok\nstorage: ok\n");

    let src = OciImage::write(&b.path("src"), "v1", &[3 * 1024 * 1024 + 5, 4_000]);
    b.push(&src, "library/app:v1").assert_success();
    b.pull("library/app:v1", &b.path("back"), "v1").assert_success();
    src.assert_same_content(&OciImage::read(&b.path("back"), "v1"));

    // oras-py: 1 MiB chunks (S3 parts must be >= 5 MiB except the last: Berth's pieces need not).
    let content = support::random_bytes(3 * 1024 * 1024 + 777);
    let work = b.path("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("artifact.bin"), &content).unwrap();
    let out = b.oras("roundtrip", &b.admin_password(), "artifacts/blob:v1", &work, "artifact.bin", "pulled", 1024 * 1024, "basic").assert_success();
    let result: serde_json::Value = serde_json::from_str(out.stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(result["push_status"], 201, "{result}");
    assert!(std::fs::read(work.join("pulled/artifact.bin")).unwrap() == content);

    // The blobs are in the bucket, not in the data folder.
    assert!(!b.data_dir.join("blobs").exists() && !b.data_dir.join("berth.db").exists(), "the embedded stores were used");
    let store = berth_blob::S3Store::connect(shared.s3_options()).await.unwrap();
    let keys: Vec<String> = berth_blob::BlobStore::list_objects(&store, 0).filter_map(|k| async { k.ok() }).collect().await;
    let hex = sha256(&content);
    let hex = hex.trim_start_matches("sha256:");
    assert!(keys.iter().any(|k| k.contains(hex)), "the artifact's blob is not in the bucket: {keys:?}");

    // Offline commands find the installation in PostgreSQL.
    let out = run(support::berth_command()
        .args(["gc", "--json", "--metadata-url", &shared.metadata_url, "--storage-url", &shared.storage_url])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .current_dir(b.dir()))
    .assert_success();
    let gc: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(gc["blobs_removed"], 0, "everything is referenced: {gc}");
    b.pull("library/app:v1", &b.path("again"), "v1").assert_success();
}

/// A fresh database is not an installation for the offline commands; a bad URL is one clear line.
#[test]
fn offline_commands_refuse_an_empty_database_and_bad_urls() {
    let shared = SharedBackends::create("offline");
    let dir = tempfile::tempdir().unwrap();
    let out = run(support::berth_command().args(["user", "list", "--metadata-url", &shared.metadata_url]).current_dir(dir.path())).assert_failure();
    assert!(out.stderr.contains("holds no Berth installation") && out.stderr.contains("--metadata-url"), "{}", out.stderr);
    for (url, says) in [("mysql://u:hunter2@h/db", "unknown kind of database"), ("postgres://berth:hunter2@127.0.0.1:1/x", "cannot reach PostgreSQL")] {
        let out = run(support::berth_command().args(["user", "list", "--metadata-url", url]).current_dir(dir.path())).assert_failure();
        assert!(out.stderr.contains(says), "{url}: {}", out.stderr);
        assert!(!out.stderr.contains("hunter2"), "the password is shown: {}", out.stderr);
        assert_eq!(out.stderr.trim().lines().count(), 1, "not one line: {}", out.stderr);
    }
    let out = run(support::berth_command()
        .args(["serve", "--listen", "127.0.0.1:0", "--metadata-url", &shared.metadata_url, "--storage-url", "s3://no-such-bucket-berth?endpoint=http://127.0.0.1:1&allow_http=true"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .current_dir(dir.path()))
    .assert_failure();
    assert!(out.stderr.contains("blob storage: s3://no-such-bucket-berth/") && out.stderr.contains("cannot reach"), "{}", out.stderr);
}

/// Three replicas on one database and one bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_everything() {
    let shared = SharedBackends::create("replicas");
    let mut a = replica(&shared);
    let mut b = replica(&shared);
    let mut c = replica(&shared);

    // Push through A, pull through B: the same bytes; B's tags list has it at once.
    let src = OciImage::write(&a.path("src"), "v1", &[700_000, 2_000]);
    a.push(&src, "library/app:v1").assert_success();
    b.pull("library/app:v1", &b.path("back"), "v1").assert_success();
    src.assert_same_content(&OciImage::read(&b.path("back"), "v1"));

    // A registry token issued by A is accepted by C (one signing key, in the database).
    let token: serde_json::Value = a
        .admin(Method::GET, "/service/token?service=berth&scope=repository:library/app:pull")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let r = c.http().get(c.url("/v2/library/app/tags/list")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200, "C refuses A's token");

    // A chunked upload whose requests alternate between the replicas: POST on A, PATCHes on
    // B, C, A, B, the final PUT on C.
    let data = support::random_bytes(5 * 1024 * 1024 + 123);
    let digest = sha256(&data);
    let auth = ("admin", a.admin_password());
    let r = a.http().post(a.url("/v2/library/chunked/blobs/uploads/")).basic_auth(auth.0, Some(&auth.1)).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let mut location = r.headers()["location"].to_str().unwrap().to_owned();
    let chunks: Vec<&[u8]> = data.chunks(1_300_000).collect();
    let mut offset = 0usize;
    for (i, chunk) in chunks.iter().enumerate() {
        let via: &mut Berth = match i % 3 {
            0 => &mut b,
            1 => &mut c,
            _ => &mut a,
        };
        let url = if location.starts_with("http") { location.clone() } else { via.url(&location) };
        let url = rebase(&url, &via.url(""));
        let r = via
            .http()
            .patch(&url)
            .basic_auth(auth.0, Some(&auth.1))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{}-{}", offset, offset + chunk.len() - 1))
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "PATCH {i} on replica {}: {}", i % 3, r.text().await.unwrap_or_default());
        location = r.headers()["location"].to_str().unwrap().to_owned();
        offset += chunk.len();
    }
    let url = rebase(&if location.starts_with("http") { location.clone() } else { c.url(&location) }, &c.url(""));
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = c.http().put(format!("{url}{sep}digest={digest}")).basic_auth(auth.0, Some(&auth.1)).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let r = a.admin(Method::GET, &format!("/v2/library/chunked/blobs/{digest}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == data, "the blob assembled across replicas differs");

    // A robot created on A logs in on B; deleted on A, it is refused on B within 2 s.
    let r = a.admin(Method::POST, "/api/v1/projects").json(&serde_json::json!({"name": "team"})).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r = a
        .admin(Method::POST, "/api/v1/robots")
        .json(&serde_json::json!({"name": "pusher", "project": "team", "permissions": [{"repositories": "team/*", "actions": ["pull", "push"]}]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let created: serde_json::Value = r.json().await.unwrap();
    let (robot, secret) = (created["robot"]["name"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned());
    let login = |berth: &Berth| {
        let (url, robot, secret) = (berth.url("/service/token?service=berth&scope=repository:team/app:push,pull"), robot.clone(), secret.clone());
        async move { reqwest::Client::new().get(url).basic_auth(robot, Some(secret)).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(login(&b).await, 200, "B does not know the robot A created");
    let r = a.admin(Method::DELETE, &format!("/api/v1/robots/{}", robot.replace('$', "%24"))).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let deleted = Instant::now();
    loop {
        if login(&b).await == 401 {
            break;
        }
        assert!(deleted.elapsed() < Duration::from_secs(2), "B still accepts the deleted robot after 2 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("revocation reached the other replica after {:?}", deleted.elapsed());

    // A personal access token created on A works on B (also the registry token B issues for
    // it); revoked on A, both stop on B at once (within the generation poll, about a second).
    let r = a.admin(Method::POST, "/api/v1/tokens").json(&serde_json::json!({"name": "laptop", "expires": "1d"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let created: serde_json::Value = r.json().await.unwrap();
    let (pat, pat_id) = (created["secret"].as_str().unwrap().to_owned(), created["token"]["id"].as_str().unwrap().to_owned());
    let pat_login = |berth: &Berth| {
        let (url, pat) = (berth.url("/service/token?service=berth&scope=repository:library/app:pull"), pat.clone());
        async move {
            let r = reqwest::Client::new().get(url).basic_auth("admin", Some(pat)).send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.ok())
        }
    };
    let (status, body) = pat_login(&b).await;
    assert_eq!(status, 200, "B refuses A's personal access token");
    let issued = body.unwrap()["token"].as_str().unwrap().to_owned();
    let tags = |berth: &Berth| {
        let (url, issued) = (berth.url("/v2/library/app/tags/list"), issued.clone());
        async move { reqwest::Client::new().get(url).bearer_auth(issued).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(tags(&b).await, 200);
    let r = a.admin(Method::DELETE, &format!("/api/v1/tokens/{pat_id}")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let revoked = Instant::now();
    loop {
        if pat_login(&b).await.0 == 401 && tags(&c).await == 401 {
            break;
        }
        assert!(revoked.elapsed() < Duration::from_secs(2), "B or C still accepts the revoked token (or what it got) after 2 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("token revocation reached the other replicas after {:?}", revoked.elapsed());

    // Garbage collection while B pushes: garbage older than the grace period goes, every push
    // (younger than it) stays whole. The garbage: an image whose manifest was deleted.
    let grace = Duration::from_secs(4);
    let garbage = OciImage::write(&a.path("garbage"), "v1", &[123_456]);
    a.push(&garbage, "library/garbage:v1").assert_success();
    let r = a.admin(Method::DELETE, &format!("/v2/library/garbage/manifests/{}", garbage.manifest_digest)).send().await.unwrap();
    assert_eq!(r.status(), 202);
    tokio::time::sleep(grace + Duration::from_millis(500)).await;
    let pushes = {
        let (b_ref, creds, dir) = (b.docker_ref(""), b.creds(), b.path("gcpush"));
        let images: Vec<OciImage> = (0..3).map(|i| OciImage::write(&dir.join(format!("i{i}")), "v1", &[300_000 + i * 1000])).collect();
        let handle = std::thread::spawn({
            let images = images.clone();
            let clients = b.clients();
            move || {
                for (i, img) in images.iter().enumerate() {
                    let dst = format!("{b_ref}library/gc{i}:v1");
                    let out = clients.skopeo(&["copy", "--dest-creds", &creds, "--dest-tls-verify=false", &img.oci_ref(), &dst]);
                    assert!(out.success(), "push {i} during gc: {}", out.stderr);
                }
            }
        });
        (images, handle)
    };
    let gc_started = Instant::now();
    let mut gc_runs = 0;
    let mut removed = 0;
    while !pushes.1.is_finished() || gc_runs == 0 {
        // `berth gc` on the shared stores: a process of its own, like another replica.
        let out = run(support::berth_command()
            .args(["gc", "--json", "--grace", "4s", "--metadata-url", &shared.metadata_url, "--storage-url", &shared.storage_url])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .current_dir(a.dir()));
        assert!(out.success(), "gc: {}", out.stderr);
        let report: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
        removed += report["blobs_removed"].as_u64().unwrap();
        gc_runs += 1;
        assert!(gc_started.elapsed() < Duration::from_secs(120), "pushes did not finish");
    }
    pushes.1.join().unwrap();
    for (i, img) in pushes.0.iter().enumerate() {
        let back = c.path(&format!("gcback{i}"));
        c.pull(&format!("library/gc{i}:v1"), &back, "v1").assert_success();
        img.assert_same_content(&OciImage::read(&back, "v1"));
    }
    assert!(removed >= 1, "the garbage image's blobs were not collected");
    let layer = garbage.blobs().into_keys().find(|d| *d != garbage.manifest_digest).unwrap();
    let r = c.admin(Method::GET, &format!("/v2/library/garbage/blobs/{layer}")).send().await.unwrap();
    assert_eq!(r.status(), 404, "a collected blob is still served");
    eprintln!("{gc_runs} garbage collections ran during the pushes, {removed} blobs removed");

    // kill -9 of B in the middle of a big push; the client retries on C and succeeds; what A
    // acknowledged before stays.
    let big = OciImage::write(&b.path("big"), "v1", &[40 * 1024 * 1024]);
    let (b_ref, creds, snapshot) = (b.docker_ref("library/big:v1"), b.creds(), b.clients());
    let img = big.clone();
    let push = std::thread::spawn(move || snapshot.skopeo(&["copy", "--dest-creds", &creds, "--dest-tls-verify=false", &img.oci_ref(), &b_ref]));
    std::thread::sleep(Duration::from_millis(700));
    b.kill9();
    let out = push.join().unwrap();
    eprintln!("the push to the killed replica ended: success={} {}", out.success(), out.stderr.lines().last().unwrap_or_default());
    c.push(&big, "library/big:v1").assert_success();
    a.pull("library/big:v1", &a.path("bigback"), "v1").assert_success();
    big.assert_same_content(&OciImage::read(&a.path("bigback"), "v1"));
    a.pull("library/app:v1", &a.path("back2"), "v1").assert_success();
    src.assert_same_content(&OciImage::read(&a.path("back2"), "v1"));

    // A graceful shutdown of C leaves its upload to the others: started on C, finished on A.
    let data = support::random_bytes(2 * 1024 * 1024 + 7);
    let digest = sha256(&data);
    let r = c.http().post(c.url("/v2/library/handover/blobs/uploads/")).basic_auth(auth.0, Some(&auth.1)).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let half = data.len() / 2;
    let r = c
        .http()
        .patch(rebase(&if location.starts_with("http") { location.clone() } else { c.url(&location) }, &c.url("")))
        .basic_auth(auth.0, Some(&auth.1))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("0-{}", half - 1))
        .body(data[..half].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    c.terminate();
    assert!(c.wait_exit(Duration::from_secs(40)).success(), "C did not stop cleanly\n{}", c.logs());
    let url = rebase(&if location.starts_with("http") { location.clone() } else { a.url(&location) }, &a.url(""));
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = a
        .http()
        .put(format!("{url}{sep}digest={digest}"))
        .basic_auth(auth.0, Some(&auth.1))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{half}-{}", data.len() - 1))
        .body(data[half..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let r = a.admin(Method::GET, &format!("/v2/library/handover/blobs/{digest}")).send().await.unwrap();
    assert!(r.bytes().await.unwrap() == data, "the upload finished on another replica differs");
}

/// `url`'s path and query on `base`'s scheme and authority (a Location from one replica, sent to another).
fn rebase(url: &str, base: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    format!("{}{path}", base.trim_end_matches('/'))
}

/// `storage.redirect`: authorised blob GETs answer 307 to a presigned URL of the bucket, which
/// serves the bytes (and ranges) without credentials; unauthorised ones still get 401; skopeo
/// follows the redirect.
#[tokio::test]
async fn blob_downloads_redirect_to_presigned_urls() {
    let shared = SharedBackends::create("redirect");
    let mut b = Berth::builder().backends(&shared).env("BERTH_STORAGE__REDIRECT", "true").env("BERTH_STORAGE__REDIRECT_TTL", "2m").start();
    let src = OciImage::write(&b.path("src"), "v1", &[1_000_000]);
    b.push(&src, "library/app:v1").assert_success();
    // The biggest blob is the layer.
    let (layer, bytes) = src.blobs().into_iter().max_by_key(|(_, b)| b.len()).unwrap();

    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let url = b.url(&format!("/v2/library/app/blobs/{layer}"));
    let r = no_redirects.get(&url).basic_auth("admin", Some(b.admin_password())).send().await.unwrap();
    assert_eq!(r.status(), 307, "{}", r.text().await.unwrap_or_default());
    assert_eq!(r.headers()["docker-content-digest"], layer.as_str());
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let endpoint = berth_blob::testsuite::s3env::endpoint();
    assert!(location.starts_with(&endpoint) && location.contains("X-Amz-Signature="), "{location}");
    assert!(location.contains("X-Amz-Expires=120"), "the configured lifetime: {location}");
    // The presigned URL serves the bytes without credentials, and ranges of them.
    let r = reqwest::get(&location).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == bytes, "the presigned URL serves other bytes");
    let r = reqwest::Client::new().get(&location).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(&r.bytes().await.unwrap()[..], &bytes[10..20]);
    // HEAD is answered by Berth itself; without credentials there is no redirect.
    let r = no_redirects.head(&url).basic_auth("admin", Some(b.admin_password())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], bytes.len().to_string().as_str());
    let r = no_redirects.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("location").is_none());
    // A client follows it.
    b.pull("library/app:v1", &b.path("back"), "v1").assert_success();
    src.assert_same_content(&OciImage::read(&b.path("back"), "v1"));
    let metrics = b.admin(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    assert!(support::metric_sum(&metrics, "berth_blob_redirects_total", &[]) >= 2.0, "{metrics}");
}
