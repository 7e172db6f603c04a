//! End-to-end workload identity federation: the real `berth` binary, configured with its own CLI
//! (`berth apply -f -`, `berth token explain`, `berth audit`), an OIDC test issuer served by this
//! test on 127.0.0.1 (discovery + JWKS, key rotation, outage), and skopeo logging in with a
//! GitHub-shaped OIDC token as its password, as a CI job does.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use axum::extract::State;
use axum::response::IntoResponse;
use base64::Engine as _;
use serde_json::{json, Value};
use support::{berth_command, run, Berth, OciImage};

const AUD: &str = "registry.example.com";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

struct IssuerState {
    url: Mutex<String>,
    /// (kid, key); the last one signs.
    keys: Mutex<Vec<(String, Arc<EcdsaKeyPair>)>>,
    down: AtomicBool,
    jwks_fetches: AtomicU64,
}

/// A test OIDC issuer: discovery and JWKS over HTTP on 127.0.0.1.
struct TestIssuer {
    state: Arc<IssuerState>,
}

fn ec_key() -> Arc<EcdsaKeyPair> {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
    Arc::new(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap())
}

async fn discovery(State(s): State<Arc<IssuerState>>) -> axum::response::Response {
    if s.down.load(Ordering::SeqCst) {
        return (http_status(503), "down").into_response();
    }
    let url = s.url.lock().unwrap().clone();
    axum::Json(json!({"issuer": url, "jwks_uri": format!("{url}/jwks"), "id_token_signing_alg_values_supported": ["ES256"], "response_types_supported": ["id_token"], "subject_types_supported": ["public"]})).into_response()
}

async fn jwks(State(s): State<Arc<IssuerState>>) -> axum::response::Response {
    if s.down.load(Ordering::SeqCst) {
        return (http_status(503), "down").into_response();
    }
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys: Vec<Value> = s
        .keys
        .lock()
        .unwrap()
        .iter()
        .map(|(kid, k)| {
            let p = k.public_key().as_ref();
            json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid, "x": b64(&p[1..33]), "y": b64(&p[33..65])})
        })
        .collect();
    axum::Json(json!({ "keys": keys })).into_response()
}

fn http_status(code: u16) -> axum::http::StatusCode {
    axum::http::StatusCode::from_u16(code).unwrap()
}

impl TestIssuer {
    async fn start() -> TestIssuer {
        let state = Arc::new(IssuerState { url: Mutex::new(String::new()), keys: Mutex::new(vec![("k1".into(), ec_key())]), down: AtomicBool::new(false), jwks_fetches: AtomicU64::new(0) });
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", axum::routing::get(discovery))
            .route("/jwks", axum::routing::get(jwks))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *state.url.lock().unwrap() = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TestIssuer { state }
    }
    fn url(&self) -> String {
        self.state.url.lock().unwrap().clone()
    }
    /// A new signing key; the old ones leave the JWKS.
    fn rotate(&self, kid: &str) {
        *self.state.keys.lock().unwrap() = vec![(kid.into(), ec_key())];
    }
    fn mint(&self, claims: &Value) -> String {
        let (kid, key) = self.state.keys.lock().unwrap().last().cloned().unwrap();
        let input = format!("{}.{}", b64(json!({"alg": "ES256", "kid": kid, "typ": "JWT"}).to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let sig = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
    /// The seed's GitHub Actions claims for `repository`.
    fn github(&self, repository: &str) -> String {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        self.mint(&json!({
            "actor": "Vad1mo", "aud": AUD, "event_name": "workflow_dispatch", "exp": t + 300, "iat": t, "nbf": t - 300,
            "iss": self.url(), "jti": format!("jti-{t}"), "ref": "refs/heads/main", "ref_protected": "false", "ref_type": "branch",
            "repository": repository, "repository_owner": repository.split('/').next().unwrap(), "run_id": "19677834613",
            "sha": "15a5ebfa3fb5ddf10c4b4250e14496bec7f03a56", "sub": format!("repo:{repository}:ref:refs/heads/main"),
            "workflow": "Create Image and Push Using federated IDP"
        }))
    }
}

/// Runs the berth CLI against `b` with `stdin`.
fn cli(b: &Berth, args: &[&str], stdin: &str) -> support::CmdOutput {
    use std::io::Write as _;
    let mut cmd = berth_command();
    cmd.args(args)
        .env("BERTH_SERVER", format!("http://{}", b.host()))
        .env("BERTH_USERNAME", "admin")
        .env("BERTH_PASSWORD", b.admin_password())
        .env("HOME", b.dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    support::CmdOutput::from_output(format!("berth {}", args.join(" ")), out)
}

fn copy_with(b: &Berth, creds: &str, src: &OciImage, name: &str) -> support::CmdOutput {
    b.skopeo(&["copy", "--dest-creds", creds, "--dest-tls-verify=false", &src.oci_ref(), &b.docker_ref(name)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_job_pushes_and_pulls_with_its_oidc_token() {
    let issuer = TestIssuer::start().await;
    let mut b = Berth::start();
    let doc = format!(
        r#"
projects:
  - name: library
identityProviders:
  - name: ci
    issuer: {issuer}
    audiences: [{AUD}]
    auditClaims: [repository, workflow, run_id, actor, ref, sha]
robots:
  - name: ci-app
    project: library
    identityProvider: ci
    rules:
      - {{claim: repository, equals: org/app}}
      - {{claim: ref, glob: "refs/heads/*"}}
    permissions:
      - {{repositories: "app", actions: [pull, push]}}
"#,
        issuer = issuer.url()
    );
    let out = cli(&b, &["apply", "-f", "-"], &doc).assert_success();
    assert!(out.stdout.contains("created   robot robot$library+ci-app"), "{}", out.stdout);
    let again = cli(&b, &["apply", "-f", "-"], &doc).assert_success();
    assert_eq!(again.stdout.matches("unchanged").count(), 3, "{}", again.stdout);

    // skopeo logs in with the OIDC token as its password and pushes, then pulls.
    let img = OciImage::write(&b.path("src"), "v1", &[50_000, 2_000]);
    let token = issuer.github("org/app");
    copy_with(&b, &format!("jwt:{token}"), &img, "library/app:v1").assert_success();
    let back = b.path("back");
    b.skopeo(&["copy", "--src-creds", &format!("not-relevant:{token}"), "--src-tls-verify=false", &b.docker_ref("library/app:v1"), &format!("oci:{}:v1", back.display())])
        .assert_success();
    img.assert_same_content(&OciImage::read(&back, "v1"));

    // Refused: another repository, and a token of another repository.
    copy_with(&b, &format!("jwt:{token}"), &img, "library/other:v1").assert_failure();
    let other = issuer.github("org/other");
    copy_with(&b, &format!("jwt:{other}"), &img, "library/app:v2").assert_failure();
    let r = b.http().get(b.url("/service/token?scope=repository:library/app:pull")).basic_auth("jwt", Some(&other)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("no robots matched your token"));

    // The token directly as Bearer on /v2 (Flux, go-containerregistry).
    let r = b.http().get(b.url("/v2/library/app/tags/list")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["v1"]));

    // Key rotation: a token signed with a new key works (Berth refetches the JWKS once).
    let fetches = issuer.state.jwks_fetches.load(Ordering::SeqCst);
    issuer.rotate("k2");
    let rotated = issuer.github("org/app");
    copy_with(&b, &format!("jwt:{rotated}"), &img, "library/app:v2").assert_success();
    assert_eq!(issuer.state.jwks_fetches.load(Ordering::SeqCst), fetches + 1, "exactly one refetch for the new kid");
    // The old token was verified before the rotation: that verification is cached (at most 5
    // minutes, never past its exp), so it keeps working without another fetch.
    let r = b.http().get(b.url("/v2/library/app/tags/list")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(issuer.state.jwks_fetches.load(Ordering::SeqCst), fetches + 1);

    // Issuer down: the cached keys keep working.
    issuer.state.down.store(true, Ordering::SeqCst);
    let while_down = issuer.github("org/app");
    copy_with(&b, &format!("jwt:{while_down}"), &img, "library/app:v3").assert_success();

    // Explain a refused token with the CLI (exit 1, each rule with its reason).
    let out = cli(&b, &["token", "explain", "-"], &other);
    assert!(!out.success());
    assert!(out.stdout.contains("repository equals \"org/app\": repository is \"org/other\""), "{}", out.stdout);

    // The audit log has the pushes, with the robot and the GitHub claims.
    let out = cli(&b, &["audit", "--action", "push", "--json"], "").assert_success();
    let events: Value = serde_json::from_str(&out.stdout).unwrap();
    let e = &events.as_array().unwrap()[0];
    assert_eq!(e["robots"], json!(["robot$library+ci-app"]));
    assert_eq!(e["provider"], "ci");
    assert_eq!(e["claims"]["repository"], "org/app");
    assert_eq!(e["claims"]["workflow"], "Create Image and Push Using federated IDP", "{e}");
    let _ = run; // keep the helper import used on every toolchain
}
