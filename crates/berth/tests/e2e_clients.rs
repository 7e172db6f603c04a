//! End-to-end tests: the real `berth` binary driven by real clients: skopeo (push, pull,
//! inspect, list-tags, delete, auth, anonymous access, TLS), oras-py (chunked artifact push and
//! pull), its own CLI (help, config, the generated admin password), the health and metrics
//! endpoints, graceful shutdown during a download, and restarts after kill -9.
//!
//! Every test starts its own server on a free 127.0.0.1 port with its own data folder (see
//! `support/mod.rs`). The tools come from `./scripts/test.sh`; without them these tests fail
//! (they never pass silently).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use support::{metric_sum, run, sha256, Berth, OciImage};

/// Markers of an authentication/authorization failure in a client's error output.
fn is_auth_error(text: &str) -> bool {
    let t = text.to_lowercase();
    ["unauthorized", "authentication required", "invalid username/password", "denied", "forbidden"].iter().any(|m| t.contains(m))
}

// ------------------------------------------------------------------------------------------
// skopeo

#[tokio::test]
async fn skopeo_push_then_pull_is_byte_identical() {
    let mut b = Berth::start();
    let src = OciImage::write(&b.path("src"), "v1", &[200_000, 3_000]);
    b.push(&src, "library/app:v1").assert_success();
    b.pull("library/app:v1", &b.path("back"), "v1").assert_success();
    let back = OciImage::read(&b.path("back"), "v1");
    src.assert_same_content(&back);
    // And what the registry serves over raw HTTP is the same, byte for byte.
    let r = b.admin(Method::GET, "/v2/library/app/manifests/v1").header("accept", support::MANIFEST_TYPE).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], src.manifest_digest.as_str());
    assert_eq!(r.bytes().await.unwrap(), src.manifest);
    for (d, bytes) in src.blobs() {
        let r = b.admin(Method::GET, &format!("/v2/library/app/blobs/{d}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "blob {d}");
        assert!(r.bytes().await.unwrap() == bytes, "blob {d} differs");
    }
}

#[test]
fn skopeo_inspect_and_list_tags() {
    let b = Berth::start();
    let v1 = OciImage::write(&b.path("src"), "v1", &[10_000]);
    let v2 = OciImage::write(&b.path("src"), "v2", &[20_000, 30_000]);
    b.push(&v1, "team/tool:v1").assert_success();
    b.push(&v2, "team/tool:v2").assert_success();
    b.push(&v2, "team/tool:latest").assert_success();
    let creds = b.creds();
    let raw = b.skopeo(&["inspect", "--raw", "--creds", &creds, "--tls-verify=false", &b.docker_ref("team/tool:v1")]).assert_success();
    assert_eq!(raw.stdout.trim_end().as_bytes(), v1.manifest.as_slice(), "inspect --raw returns the pushed manifest");
    let out = b.skopeo(&["inspect", "--creds", &creds, "--tls-verify=false", &b.docker_ref("team/tool:v2")]).assert_success();
    let info: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(info["Digest"], v2.manifest_digest.as_str(), "{info}");
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Os"], "linux");
    let layers: Vec<&str> = info["Layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    let want: Vec<&str> = v2.layers.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(layers, want);
    let out = b.skopeo(&["list-tags", "--creds", &creds, "--tls-verify=false", &b.docker_ref("team/tool")]).assert_success();
    let tags: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let mut tags: Vec<&str> = tags["Tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    tags.sort_unstable();
    assert_eq!(tags, ["latest", "v1", "v2"]);
    // An unknown tag is an error, not an empty answer.
    let out = b.skopeo(&["inspect", "--raw", "--creds", &creds, "--tls-verify=false", &b.docker_ref("team/tool:nope")]).assert_failure();
    assert!(out.text_lower().contains("manifest unknown") || out.text_lower().contains("not found"), "{}", out.stderr);
}

#[tokio::test]
async fn skopeo_delete_then_inspect_fails() {
    let mut b = Berth::start();
    let img = OciImage::write(&b.path("src"), "v1", &[5_000]);
    b.push(&img, "library/gone:v1").assert_success();
    let creds = b.creds();
    let target = b.docker_ref("library/gone:v1");
    b.skopeo(&["inspect", "--raw", "--creds", &creds, "--tls-verify=false", &target]).assert_success();
    b.skopeo(&["delete", "--creds", &creds, "--tls-verify=false", &target]).assert_success();
    let out = b.skopeo(&["inspect", "--raw", "--creds", &creds, "--tls-verify=false", &target]).assert_failure();
    assert!(out.text_lower().contains("manifest unknown") || out.text_lower().contains("not found"), "{}", out.stderr);
    let r = b.admin(Method::GET, &format!("/v2/library/gone/manifests/{}", img.manifest_digest)).send().await.unwrap();
    assert_eq!(r.status(), 404, "the manifest is gone by digest too");
}

#[test]
fn skopeo_deeply_nested_repository_name() {
    let b = Berth::start();
    let name = "a/b/c/d/e/f/g/h/i";
    let img = OciImage::write(&b.path("src"), "v1", &[50_000]);
    b.push(&img, &format!("{name}:v1")).assert_success();
    let out = b.skopeo(&["list-tags", "--creds", &b.creds(), "--tls-verify=false", &b.docker_ref(name)]).assert_success();
    let tags: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(tags["Repository"], format!("{}/{name}", b.host()));
    assert_eq!(tags["Tags"], serde_json::json!(["v1"]));
    b.pull(&format!("{name}:v1"), &b.path("back"), "v1").assert_success();
    img.assert_same_content(&OciImage::read(&b.path("back"), "v1"));
}

#[tokio::test]
async fn skopeo_push_with_wrong_credentials_is_refused() {
    let mut b = Berth::start();
    let img = OciImage::write(&b.path("src"), "v1", &[1_000]);
    for creds in ["admin:wrong-password", "nobody:e2e-admin-password"] {
        let out = b
            .skopeo(&["copy", "--dest-creds", creds, "--dest-tls-verify=false", &img.oci_ref(), &b.docker_ref("library/app:v1")])
            .assert_failure();
        assert!(is_auth_error(&out.stderr), "{creds}: expected an authentication error, got:\n{}", out.stderr);
    }
    // Nothing arrived.
    let r = b.admin(Method::GET, "/v2/library/app/tags/list").send().await.unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert!(status == 404 || !body.contains("v1"), "{status} {body}");
    let r = b.admin(Method::HEAD, &format!("/v2/library/app/blobs/{}", img.layers[0].0)).send().await.unwrap();
    assert_eq!(r.status(), 404, "no layer was stored");
}

#[test]
fn anonymous_pull_is_refused_by_default() {
    let b = Berth::start();
    let img = OciImage::write(&b.path("src"), "v1", &[1_000]);
    b.push(&img, "library/private:v1").assert_success();
    let target = b.docker_ref("library/private:v1");
    let out = b.skopeo(&["inspect", "--raw", "--no-creds", "--tls-verify=false", &target]).assert_failure();
    assert!(is_auth_error(&out.stderr), "{}", out.stderr);
    let dst = format!("oci:{}:v1", b.path("back").display());
    let out = b.skopeo(&["copy", "--src-no-creds", "--src-tls-verify=false", &target, &dst]).assert_failure();
    assert!(is_auth_error(&out.stderr), "{}", out.stderr);
}

#[tokio::test]
async fn anonymous_pull_mode_allows_pull_but_not_push() {
    // Seeded with anonymous access off, then restarted with BERTH_ANONYMOUS=pull.
    let mut b = Berth::start();
    let img = OciImage::write(&b.path("src"), "v1", &[40_000]);
    b.push(&img, "library/public:v1").assert_success();
    b.restart_with(|o| o.anonymous("pull"));
    let target = b.docker_ref("library/public:v1");
    let out = b.skopeo(&["inspect", "--raw", "--no-creds", "--tls-verify=false", &target]).assert_success();
    assert_eq!(out.stdout.trim_end().as_bytes(), img.manifest.as_slice());
    let dst = format!("oci:{}:v1", b.path("back").display());
    b.skopeo(&["copy", "--src-no-creds", "--src-tls-verify=false", &target, &dst]).assert_success();
    img.assert_same_content(&OciImage::read(&b.path("back"), "v1"));
    // Pushing without credentials is still refused, to an existing repository and a new one.
    let other = OciImage::write(&b.path("src2"), "v2", &[1_000]);
    for name in ["library/public:v2", "anon/new:v1"] {
        let out = b.skopeo(&["copy", "--dest-no-creds", "--dest-tls-verify=false", &other.oci_ref(), &b.docker_ref(name)]).assert_failure();
        assert!(is_auth_error(&out.stderr), "{name}: {}", out.stderr);
    }
    let r = b.http().get(b.url("/v2/library/public/manifests/v2")).send().await.unwrap();
    assert_eq!(r.status(), 404, "the anonymous push stored nothing");
    let r = b.http().post(b.url("/v2/library/public/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), 401, "anonymous upload start must be challenged");
}

/// With anonymous pull on, an administrator must still be able to push with credentials.
#[test]
fn anonymous_pull_mode_still_accepts_pushes_with_credentials() {
    let b = Berth::builder().anonymous("pull").start();
    let img = OciImage::write(&b.path("src"), "v1", &[40_000]);
    let out = b.push(&img, "library/public:v1");
    assert!(
        out.success(),
        "skopeo push with valid --dest-creds fails when BERTH_ANONYMOUS=pull. Berth answers an \
         anonymous `GET /v2/` with 200 instead of a 401 Bearer challenge, so containers/image never \
         learns how to authenticate and sends the upload without credentials.\n{}",
        out.stderr
    );
    b.pull("library/public:v1", &b.path("back"), "v1").assert_success();
    img.assert_same_content(&OciImage::read(&b.path("back"), "v1"));
}

#[test]
fn skopeo_layer_of_several_mib() {
    let b = Berth::start();
    let img = OciImage::write(&b.path("src"), "v1", &[12 * 1024 * 1024 + 12_345, 3 * 1024 * 1024]);
    b.push(&img, "big/image:v1").assert_success();
    b.pull("big/image:v1", &b.path("back"), "v1").assert_success();
    img.assert_same_content(&OciImage::read(&b.path("back"), "v1"));
}

// ------------------------------------------------------------------------------------------
// oras

#[tokio::test]
async fn oras_chunked_push_and_pull() {
    support::python(); // fails the test right away, with instructions, when oras is not set up
    let mut b = Berth::start();
    let content = support::random_bytes(3 * 1024 * 1024 + 777);
    let work = b.path("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("artifact.bin"), &content).unwrap();
    let patches = |text: &str| metric_sum(text, "berth_http_requests_total", &[("method", "PATCH"), ("status", "202")]);
    let before = patches(&b.admin(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap());
    // Log in with Basic credentials, push over plain HTTP in 1 MiB chunks, pull back.
    let pw = b.admin_password();
    let out = b.oras("roundtrip", &pw, "artifacts/blob:v1", &work, "artifact.bin", "pulled", 1024 * 1024, "basic").assert_success();
    let result: serde_json::Value = serde_json::from_str(out.stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("oras printed no JSON result ({e}):\n{}\n{}", out.stdout, out.stderr));
    assert_eq!(result["push_status"], 201, "{result}");
    let pulled = std::fs::read(work.join("pulled/artifact.bin")).unwrap_or_else(|e| panic!("pulled file missing ({e}): {result}"));
    assert!(pulled == content, "the pulled artifact differs ({} vs {} bytes)", pulled.len(), content.len());
    // The upload really was chunked: 4 PATCHes of at most 1 MiB.
    let after = patches(&b.admin(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap());
    assert!(after - before >= 4.0, "expected >= 4 PATCH requests, the metrics show {}", after - before);
    // The registry holds the artifact with the file as its layer.
    let r = b.admin(Method::GET, "/v2/artifacts/blob/manifests/v1").header("accept", support::MANIFEST_TYPE).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let m: serde_json::Value = r.json().await.unwrap();
    assert_eq!(m["layers"][0]["digest"], sha256(&content).as_str(), "{m}");
    assert_eq!(m["layers"][0]["mediaType"], "application/vnd.berth.test.file");
    // With a wrong password the push fails and stores nothing.
    let out =
        b.oras("push", "not-the-password", "artifacts/denied:v1", &work, "artifact.bin", "pulled", 1024 * 1024, "basic").assert_failure();
    assert!(out.stderr.contains("ORAS ERROR"), "{}", out.stderr);
    assert!(out.stderr.to_lowercase().contains("unauthorized"), "{}", out.stderr);
    let r = b.admin(Method::GET, "/v2/artifacts/denied/manifests/v1").send().await.unwrap();
    assert_eq!(r.status(), 404);
}

// ------------------------------------------------------------------------------------------
// TLS

#[tokio::test]
async fn tls_skopeo_with_cert_dir_and_no_plain_http() {
    let mut b = Berth::builder().tls().start();
    let tls = b.tls_files().unwrap().clone();
    let cert_dir = tls.cert_dir.display().to_string();
    let img = OciImage::write(&b.path("src"), "v1", &[100_000]);
    // Push with certificate verification on, trusting only the test CA.
    b.push(&img, "secure/app:v1").assert_success();
    let creds = b.creds();
    let dst = format!("oci:{}:v1", b.path("back").display());
    b.skopeo(&["copy", "--src-creds", &creds, "--src-cert-dir", &cert_dir, &b.docker_ref("secure/app:v1"), &dst]).assert_success();
    img.assert_same_content(&OciImage::read(&b.path("back"), "v1"));
    // Without the CA, verification fails.
    let empty = b.path("no-certs");
    std::fs::create_dir_all(&empty).unwrap();
    let out = b
        .skopeo(&["inspect", "--raw", "--creds", &creds, "--cert-dir", &empty.display().to_string(), &b.docker_ref("secure/app:v1")])
        .assert_failure();
    assert!(out.text_lower().contains("certificate"), "{}", out.stderr);
    // HTTPS answers; plain HTTP on the same port does not.
    let r = b.http().get(b.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let plain = support::http_client(None).get(format!("http://{}/healthz", b.host())).timeout(Duration::from_secs(10)).send().await;
    match plain {
        Err(_) => {}
        Ok(r) => assert_ne!(r.status(), 200, "plain HTTP must not be served on the TLS port"),
    }
    // The token realm is https too.
    let r = b.http().get(b.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.contains(&format!("realm=\"https://{}/service/token\"", b.host())), "{challenge}");
}

// ------------------------------------------------------------------------------------------
// CLI

#[test]
fn cli_help_describes_each_command() {
    for (args, needle) in [
        (&["--help"][..], "OCI container registry"),
        (&["serve", "--help"][..], "Run the registry"),
        (&["gc", "--help"][..], "Remove blobs no manifest references"),
        (&["user", "set", "--help"][..], "reading the password from standard input"),
        (&["config", "--help"][..], "effective configuration"),
    ] {
        let out = run(support::berth_command().args(args)).assert_success();
        assert!(out.stdout.contains(needle), "berth {args:?} does not mention {needle:?}:\n{}", out.stdout);
        assert!(out.stdout.contains("Usage:"), "{}", out.stdout);
    }
    let out = run(support::berth_command().arg("--version")).assert_success();
    assert!(out.stdout.contains(env!("CARGO_PKG_VERSION")), "{}", out.stdout);
    let out = run(support::berth_command().arg("no-such-command")).assert_failure();
    assert!(out.stderr.contains("no-such-command"), "{}", out.stderr);
}

#[test]
fn cli_config_prints_toml_defaults_and_honours_env() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(support::berth_command().arg("config").current_dir(dir.path())).assert_success();
    let cfg: toml::Value = toml::from_str(&out.stdout).unwrap_or_else(|e| panic!("not TOML ({e}):\n{}", out.stdout));
    assert!(out.stdout.contains("listen = \"127.0.0.1:5000\""), "{}", out.stdout);
    assert_eq!(cfg["data_dir"].as_str(), Some("./berth-data"));
    assert_eq!(cfg["anonymous"].as_str(), Some("off"));
    let out = run(support::berth_command()
        .arg("config")
        .current_dir(dir.path())
        .env("BERTH_LISTEN", "127.0.0.1:6123")
        .env("BERTH_ANONYMOUS", "pull")
        .env("BERTH_GC__GRACE", "2h")
        .env("BERTH_ADMIN_PASSWORD", "very-secret-value"))
    .assert_success();
    let cfg: toml::Value = toml::from_str(&out.stdout).unwrap();
    assert!(out.stdout.contains("listen = \"127.0.0.1:6123\""), "{}", out.stdout);
    assert_eq!(cfg["anonymous"].as_str(), Some("pull"));
    assert_eq!(cfg["gc"]["grace"].as_str(), Some("2h"));
    assert!(!out.stdout.contains("very-secret-value"), "secrets must not be printed:\n{}", out.stdout);
    // A bad value is a clear error, not a silent default.
    let out = run(support::berth_command().arg("config").current_dir(dir.path()).env("BERTH_LISTEN", "not-an-address")).assert_failure();
    assert!(out.stderr.contains("invalid configuration"), "{}", out.stderr);
}

#[tokio::test]
async fn generated_admin_password_is_printed_once_and_works() {
    let mut b = Berth::builder().generated_admin_password().start();
    let first = b.stdout();
    let pw = support::parse_generated_password(&first).unwrap_or_else(|| panic!("no generated password on stdout:\n{first}"));
    assert!(pw.len() >= 16, "a weak generated password: {pw:?}");
    assert_eq!(first.matches(&pw).count(), 1, "printed exactly once:\n{first}");
    assert!(!b.stderr().contains(&pw), "the password must not be logged");
    // It works: for the registry API, the token endpoint and `skopeo login`.
    let r = b.http().get(b.url("/v2/")).basic_auth("admin", Some(&pw)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = b.http().get(b.url("/v2/")).basic_auth("admin", Some("wrong")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = b.http().get(b.url("/service/token?service=berth")).basic_auth("admin", Some(&pw)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let token: serde_json::Value = r.json().await.unwrap();
    assert!(token["token"].as_str().is_some_and(|t| t.split('.').count() == 3), "{token}");
    b.skopeo(&["login", "--tls-verify=false", "-u", "admin", "-p", &pw, &b.host()]).assert_success();
    let out = b.skopeo(&["login", "--tls-verify=false", "-u", "admin", "-p", "wrong-password", &b.host()]).assert_failure();
    assert!(is_auth_error(&out.stderr), "{}", out.stderr);
    // The second start prints nothing new, and the password still works.
    b.restart();
    assert_eq!(b.runs(), 2);
    let second = b.stdout();
    assert!(!second.contains(&pw) && !second.contains("generated password"), "printed again:\n{second}");
    let r = b.http().get(b.url("/v2/")).basic_auth("admin", Some(&pw)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

// ------------------------------------------------------------------------------------------
// Operations

#[tokio::test]
async fn health_readiness_and_metrics() {
    let mut b = Berth::start();
    let http = b.http();
    let r = http.get(b.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(b.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(b.admin(Method::GET, "/v2/").send().await.unwrap().status(), 200);
    assert_eq!(http.get(b.url("/v2/")).send().await.unwrap().status(), 401);
    assert_eq!(b.admin(Method::GET, "/v2/none/manifests/x").send().await.unwrap().status(), 404);
    // /metrics on the main listener is for administrators.
    assert_eq!(http.get(b.url("/metrics")).send().await.unwrap().status(), 401);
    let r = b.admin(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    assert!(text.contains("berth_http_requests_total"), "{text}");
    let healthz = metric_sum(&text, "berth_http_requests_total", &[("route", "healthz"), ("status", "200")]);
    assert!(healthz >= 1.0, "healthz requests not counted:\n{text}");
    let unauthorized = metric_sum(&text, "berth_http_requests_total", &[("status", "401")]);
    assert!(unauthorized >= 1.0, "401 not counted:\n{text}");
    let not_found = metric_sum(&text, "berth_http_requests_total", &[("status", "404")]);
    assert!(not_found >= 1.0, "404 not counted:\n{text}");
    assert!(text.contains("berth_http_request_duration_seconds"), "{text}");
    // Counters only grow.
    http.get(b.url("/healthz")).send().await.unwrap();
    let text2 = b.admin(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metric_sum(&text2, "berth_http_requests_total", &[("route", "healthz"), ("status", "200")]) > healthz);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_download_finish() {
    let mut b = Berth::start();
    let size = 48 * 1024 * 1024 + 123;
    let data = support::random_bytes(size);
    let digest = sha256(&data);
    let r = b.admin(Method::POST, "/v2/big/blob/blobs/uploads/").send().await.unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let url = if loc.starts_with("http") { loc } else { b.url(&loc) };
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = b
        .http()
        .put(format!("{url}{sep}digest={digest}"))
        .basic_auth("admin", Some(b.admin_password()))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());

    // Start the download, read a little, then SIGTERM.
    let mut resp = b.admin(Method::GET, &format!("/v2/big/blob/blobs/{digest}")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = Vec::with_capacity(size);
    got.extend_from_slice(&resp.chunk().await.unwrap().expect("a first chunk"));
    assert!(got.len() < size, "the whole blob arrived in one chunk; the test proves nothing");
    b.terminate();
    // The server stops accepting but keeps running while the transfer is in flight.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = support::http_client(None).get(b.url("/healthz")).timeout(Duration::from_secs(2)).send().await;
        if fresh.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "berth still accepts new connections 10 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(b.is_running(), "berth exited while a download was running\n{}", b.logs());
    // Read the rest slowly at first, then all of it.
    let started = Instant::now();
    while let Some(c) = resp.chunk().await.unwrap() {
        got.extend_from_slice(&c);
        if started.elapsed() < Duration::from_millis(500) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(got.len(), size, "truncated download");
    assert!(sha256(&got) == digest, "corrupt download");
    let status = b.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "berth exited with {status} after SIGTERM\n{}", b.logs());
    assert!(b.stderr().contains("shutdown requested"), "{}", b.stderr());
}

#[tokio::test]
async fn kill9_and_restart_keep_pushed_images() {
    let mut b = Berth::start();
    let img = OciImage::write(&b.path("src"), "v1", &[300_000]);
    b.push(&img, "keep/me:v1").assert_success();
    b.kill9();
    assert!(!b.is_running());
    b.restart();
    let r = b.admin(Method::GET, "/v2/keep/me/manifests/v1").header("accept", support::MANIFEST_TYPE).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", b.logs());
    assert_eq!(r.bytes().await.unwrap(), img.manifest);
    b.restart(); // graceful this time
    assert_eq!(b.runs(), 3);
    b.pull("keep/me:v1", &b.path("back"), "v1").assert_success();
    img.assert_same_content(&OciImage::read(&b.path("back"), "v1"));
}

// ------------------------------------------------------------------------------------------
// Logs

/// What Rust's debug formatting leaves in a line (`Some("x")`, `Access { kind: … }`, `["a"]`
/// from a `Vec`): log lines must read as text, not as Rust.
fn debug_formatting(line: &str) -> Option<&'static str> {
    ["Some(", "None,", "Access {", "RegistryClaims", "Principal {", " { kind:", "\\u001b[", "\u{1b}["].into_iter().find(|p| line.contains(p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_are_plain_text_and_json() {
    for format in ["json", "text"] {
        let mut b = Berth::builder().env("BERTH_LOG_FORMAT", format).env("BERTH_LOG_LEVEL", "info,berth::access=debug").start();
        let http = b.http();
        // A refused login with a long, hostile user name, a token with less than was asked,
        // a push and a denied pull.
        let name = format!("evil\n{}\u{1b}[31m", "x".repeat(5000));
        let r = http.get(b.url("/service/token?service=berth")).basic_auth(&name, Some("pw")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let r = b.admin(Method::GET, "/service/token?service=berth&scope=repository:library/app:pull,push&scope=registry:catalog:*&scope=repository:library/app:frobnicate").send().await.unwrap();
        assert_eq!(r.status(), 200);
        let img = OciImage::write(&b.path("src"), "v1", &[1000]);
        b.skopeo(&["copy", "--dest-creds", &format!("admin:{}", b.admin_password()), "--dest-tls-verify=false", &img.oci_ref(), &b.docker_ref("library/app:v1")])
            .assert_success();
        let logs = b.stderr();
        assert!(logs.contains("login refused"), "{logs}");
        assert!(logs.contains("issued a registry token with less than was asked"), "{logs}");
        for line in logs.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(p) = debug_formatting(line) {
                panic!("{format} log line with Rust debug formatting ({p:?}): {line}");
            }
            assert!(line.len() < 4096, "a {}-byte {format} log line: {}", line.len(), &line[..200]);
            if format == "json" {
                let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if v["target"] == "berth::access" {
                    assert_eq!(v["client"], "127.0.0.1", "access log without the client: {line}");
                    if v["route"] == "upload" {
                        assert_eq!(v["principal"], "admin", "access log without the principal: {line}");
                    }
                }
            }
        }
        assert!(!logs.contains(&"x".repeat(200)), "the long user name reached the log whole");
    }
}
