//! `berth migrate` end to end: a real Berth on the embedded default (SQLite + folder) gets
//! images (skopeo), a project with a static-secret robot, an identity provider and a registry
//! token; it stops; `berth migrate` copies the installation to PostgreSQL + S3 (the test servers,
//! [`support::SharedBackends`]); a Berth started there serves the same images byte for byte, the
//! robot's secret, the admin's password and the token issued by the old server still work; a
//! rerun copies nothing and verifies. Also: the same stores as source and destination, and a
//! destination holding another installation, are refused.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use support::{berth_command, run, Berth, CmdOutput, OciImage, SharedBackends, ADMIN_PASSWORD};

/// A static JWKS (RFC 7515's P-256 example key) so the provider needs no network.
fn jwks() -> String {
    json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]})
    .to_string()
}

/// `berth migrate` of `data_dir` to `shared` (with moto's credentials), plus `extra` flags.
fn migrate(data_dir: &std::path::Path, shared: &SharedBackends, extra: &[&str]) -> CmdOutput {
    let mut cmd = berth_command();
    cmd.arg("migrate")
        .args(["--to-metadata-url", &shared.metadata_url, "--to-storage-url", &shared.storage_url])
        .args(extra)
        .env("BERTH_DATA_DIR", data_dir)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .current_dir(data_dir.parent().unwrap());
    run(&mut cmd)
}

fn report(out: &CmdOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\n{}", out.stdout, out.stderr))
}

/// Pulls `name` from `b` with the admin's password into a fresh layout.
fn pull(b: &Berth, name: &str, dir: &std::path::Path) -> OciImage {
    let creds = format!("admin:{ADMIN_PASSWORD}");
    let (src, dst) = (b.docker_ref(name), format!("oci:{}:t", dir.display()));
    b.skopeo(&["copy", "--src-creds", &creds, "--src-tls-verify=false", &src, &dst]).assert_success();
    OciImage::read(dir, "t")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_to_postgres_and_s3_and_back_in_service() {
    // The source: images, a project and robot, an identity provider, a token.
    let mut old = Berth::start();
    let app = OciImage::write(&old.path("app"), "v1", &[3 * 1024 * 1024 + 11, 20_000]);
    let tool = OciImage::write(&old.path("tool"), "1.0", &[50_000]);
    old.push(&app, "library/app:v1").assert_success();
    old.push(&app, "team/app:v1").assert_success();
    old.push(&tool, "team/tool:1.0").assert_success();
    let r = old.admin(Method::POST, "/api/v1/projects").json(&json!({"name": "team"})).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r = old
        .admin(Method::POST, "/api/v1/robots")
        .json(&json!({"name": "puller", "project": "team", "permissions": [{"repositories": "team/*", "actions": ["pull"]}]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let created: Value = r.json().await.unwrap();
    let (robot, secret) = (created["robot"]["name"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned());
    let mut idp = berth_command();
    idp.args(["idp", "add", "generic", "--name", "k8s", "--issuer", "https://k8s.example", "--audience", "reg.example", "--jwks-file", "-"])
        .env("BERTH_SERVER", format!("http://{}", old.host()))
        .env("BERTH_USERNAME", "admin")
        .env("BERTH_PASSWORD", ADMIN_PASSWORD)
        .env("HOME", old.dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = idp.spawn().unwrap();
    child.stdin.take().unwrap().write_all(jwks().as_bytes()).unwrap();
    let out = CmdOutput::from_output("berth idp add".into(), child.wait_with_output().unwrap());
    out.assert_success();
    let token_url = |b: &Berth| b.url("/service/token?service=berth&scope=repository:team/app:pull");
    let r = old.http().get(token_url(&old)).basic_auth("admin", Some(ADMIN_PASSWORD)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let token: Value = r.json().await.unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    old.terminate();
    assert!(old.wait_exit(Duration::from_secs(40)).success());
    let data_dir = old.data_dir.clone();

    // The copy.
    let shared = SharedBackends::create("migrate");
    let out = migrate(&data_dir, &shared, &["--json"]).assert_success();
    let first = report(&out);
    assert_eq!(first["verified"], true, "{first}");
    // app: config + 2 layers; tool: config + 1 layer (team/app shares app's blobs).
    assert_eq!(first["blobs_copied"], 5, "{first}");
    assert_eq!(first["blobs_skipped"], 0, "{first}");
    assert_eq!(first["verification"]["blobs_verified"], 5, "{first}");
    let counts = first["verification"]["counts"].as_array().unwrap();
    assert!(counts.iter().all(|c| c["source"] == c["destination"]), "{first}");
    assert!(counts.iter().any(|c| c["what"] == "robots" && c["source"] == 1), "{first}");
    // Off a terminal the progress is plain lines on stderr, the plan first.
    assert!(out.stderr.contains("from metadata sqlite") && out.stderr.contains("to   metadata postgres"), "{}", out.stderr);
    assert!(out.stderr.contains("copying blobs") && !out.stderr.contains('\u{1b}'), "{}", out.stderr);

    // A Berth on the destination, started without an admin password of its own: the copied
    // admin, robot, provider, images and signing key are what it serves.
    let mut new = Berth::builder().generated_admin_password().backends(&shared).start();
    assert!(!new.stdout().contains("generated password"), "the copied admin was not found: {}", new.stdout());
    for (name, image) in [("library/app:v1", &app), ("team/app:v1", &app), ("team/tool:1.0", &tool)] {
        let dir = new.path(&format!("pulled-{}", name.replace(['/', ':'], "-")));
        image.assert_same_content(&pull(&new, name, &dir));
    }
    let r = new.http().get(token_url(&new)).basic_auth(&robot, Some(&secret)).send().await.unwrap();
    assert_eq!(r.status(), 200, "the robot's secret");
    let granted: Value = r.json().await.unwrap();
    let r = new.http().get(new.url("/v2/team/app/manifests/v1")).bearer_auth(granted["token"].as_str().unwrap()).header("Accept", support::MANIFEST_TYPE).send().await.unwrap();
    assert_eq!(r.status(), 200, "the robot's token pulls");
    let r = new.http().get(new.url("/v2/team/app/manifests/v1")).bearer_auth(&token).header("Accept", support::MANIFEST_TYPE).send().await.unwrap();
    assert_eq!(r.status(), 200, "a token the old server signed is still valid: the signing key moved");
    let r = new.http().get(new.url("/api/v1/identity-providers/k8s")).basic_auth("admin", Some(ADMIN_PASSWORD)).send().await.unwrap();
    assert_eq!(r.status(), 200, "the identity provider");
    let r = new.http().get(new.url("/api/v1/robots")).basic_auth("admin", Some("wrong password")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    new.terminate();
    assert!(new.wait_exit(Duration::from_secs(40)).success());

    // A rerun: everything is there; what the new server wrote meanwhile (audit events) goes,
    // since the destination follows the source.
    let again = report(&migrate(&data_dir, &shared, &["--json", "--quiet"]).assert_success());
    assert_eq!((again["blobs_copied"].as_u64(), again["blobs_skipped"].as_u64()), (Some(0), Some(5)), "{again}");
    assert_eq!(again["verified"], true, "{again}");
    let verify = migrate(&data_dir, &shared, &["--verify-only"]).assert_success();
    assert!(verify.stdout.contains("verified: 5 blobs"), "{}", verify.stdout);
    assert!(!verify.stderr.contains("INFO"), "no log lines through the progress: {}", verify.stderr);
}

#[test]
fn help_teaches_the_move() {
    let out = run(berth_command().arg("--help")).assert_success();
    assert!(out.stdout.contains("migrate"), "{}", out.stdout);
    let out = run(berth_command().args(["migrate", "--help"])).assert_success();
    for needle in ["berth migrate --to-metadata-url postgres://", "Not copied", "may keep running", "--verify-only", "--recheck-blobs", "--yes"] {
        assert!(out.stdout.contains(needle), "berth migrate --help does not mention {needle:?}:\n{}", out.stdout);
    }
    let out = run(berth_command().args(["migrate", "--to-storage-url", "file:/x"])).assert_failure();
    assert!(out.stderr.contains("--to-metadata-url"), "both destinations are required: {}", out.stderr);
}

#[test]
fn refuses_the_same_stores_and_another_installation() {
    let mut b = Berth::start();
    b.terminate();
    assert!(b.wait_exit(Duration::from_secs(40)).success());
    let dir = b.data_dir.clone();
    let same = run(berth_command()
        .args(["migrate", "--to-metadata-url", &format!("sqlite:{}/berth.db", dir.display()), "--to-storage-url", &format!("file:{}", dir.display())])
        .env("BERTH_DATA_DIR", &dir))
    .assert_failure();
    assert!(same.stderr.contains("source and destination are the same"), "{}", same.stderr);

    // Another installation as the destination: refused without --yes (no terminal to ask).
    let mut other = Berth::start();
    other.terminate();
    assert!(other.wait_exit(Duration::from_secs(40)).success());
    let other_dir = other.data_dir.clone();
    let dst = ["--to-metadata-url".to_owned(), format!("sqlite:{}/berth.db", other_dir.display()), "--to-storage-url".to_owned(), format!("file:{}", other_dir.display())];
    let refused = run(berth_command().arg("migrate").args(&dst).env("BERTH_DATA_DIR", &dir)).assert_failure();
    assert!(refused.stderr.contains("already holds another installation") && refused.stderr.contains("--yes"), "{}", refused.stderr);
    let out = run(berth_command().arg("migrate").args(&dst).arg("--yes").env("BERTH_DATA_DIR", &dir)).assert_success();
    assert!(out.stdout.contains("verified: 0 blobs"), "{}", out.stdout);

    // No installation at the source: one clear line.
    let empty = tempfile::tempdir().unwrap();
    let out = run(berth_command().args(["migrate", "--data-dir"]).arg(empty.path()).args(&dst)).assert_failure();
    assert!(out.stderr.contains("does not exist") && out.stderr.contains("--data-dir"), "{}", out.stderr);
}
