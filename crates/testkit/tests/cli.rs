//! The `berth-test-issuer` binary: `serve` prints its ready line and state, `mint` signs tokens
//! with the saved key that verify against the served JWKS.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_berth-test-issuer");

/// A `serve` process, killed on drop.
struct Served {
    child: Child,
    ready: Value,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(args: &[&str]) -> Served {
    let mut child = Command::new(BIN).arg("serve").args(args).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let ready = serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
    Served { child, ready }
}

fn mint(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(BIN).arg("mint").arg("--state-dir").arg(dir).args(args).output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    } else {
        Err(String::from_utf8(out.stderr).unwrap())
    }
}

fn verify(jwks: &str, token: &str, iss: &str, aud: &str) -> Value {
    let jwks: JwkSet = serde_json::from_str(jwks).unwrap();
    let header = decode_header(token).unwrap();
    let key = DecodingKey::from_jwk(jwks.find(header.kid.as_deref().unwrap()).unwrap()).unwrap();
    let mut v = Validation::new(header.alg);
    v.set_issuer(&[iss]);
    v.set_audience(&[aud]);
    decode::<Value>(token, &key, &v).unwrap().claims
}

#[tokio::test]
async fn serve_then_mint_github_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(&["--flavor", "github", "--state-dir", dir.path().to_str().unwrap()]);
    let r = &served.ready;
    let iss = r["issuer"].as_str().unwrap();
    assert!(iss.starts_with("http://127.0.0.1:"));
    assert_eq!(r["alg"], "RS256");
    assert!(r["ca_pem_file"].is_null());
    assert_eq!(r["jwks_uri"], format!("{iss}/.well-known/jwks"));

    // The JWKS file is what the issuer serves.
    let served_jwks = reqwest::get(r["jwks_uri"].as_str().unwrap()).await.unwrap().text().await.unwrap();
    let file_jwks = std::fs::read_to_string(r["jwks_file"].as_str().unwrap()).unwrap();
    assert_eq!(served_jwks, file_jwks);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path().join("signing-key.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let token = mint(dir.path(), &["--aud", "registry.example.com"]).unwrap();
    assert_eq!(decode_header(&token).unwrap().x5t.as_deref(), serde_json::from_str::<Value>(&file_jwks).unwrap()["keys"][0]["x5t"].as_str());
    let c = verify(&served_jwks, &token, iss, "registry.example.com");
    assert_eq!(c["repository"], "container-registry/federated-idp-examples");
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 300);

    let token = mint(
        dir.path(),
        &["--aud", "registry.example.com", "--set", "repository=myorg/myrepo", "--set-json", "run_attempt=2", "--ttl", "60"],
    )
    .unwrap();
    let c = verify(&served_jwks, &token, iss, "registry.example.com");
    assert_eq!(c["repository"], "myorg/myrepo");
    assert_eq!(c["run_attempt"], 2);
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 60);

    // Other presets from the same key; several audiences; an expired token.
    let c = verify(&served_jwks, &mint(dir.path(), &["--preset", "gitlab", "--aud", "a", "--aud", "b"]).unwrap(), iss, "b");
    assert_eq!(c["aud"], json!(["a", "b"]));
    assert_eq!(c["runner_id"], 47561171);
    let expired = mint(dir.path(), &["--aud", "a", "--ttl", "-120"]).unwrap();
    let payload = expired.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let c: Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert!(c["exp"].as_u64().unwrap() < c["iat"].as_u64().unwrap());

    assert!(mint(dir.path(), &["--aud", "a", "--set", "novalue"]).unwrap_err().contains("KEY=VALUE"));
    assert!(mint(dir.path(), &["--aud", "a", "--set-json", "x={"]).unwrap_err().contains("not JSON"));
    assert!(mint(&dir.path().join("missing"), &["--aud", "a"]).unwrap_err().contains("serve --state-dir"));
}

#[tokio::test]
async fn serve_https_kubernetes_with_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(&[
        "--https",
        "--flavor",
        "kubernetes",
        "--key",
        "ec256",
        "--path",
        "/cluster",
        "--state-dir",
        dir.path().to_str().unwrap(),
    ]);
    let r = &served.ready;
    let iss = r["issuer"].as_str().unwrap();
    assert!(iss.starts_with("https://127.0.0.1:") && iss.ends_with("/cluster"));
    assert_eq!(r["jwks_uri"], format!("{iss}/openid/v1/jwks"));
    let ca = std::fs::read(r["ca_pem_file"].as_str().unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let discovery: Value = client.get(r["discovery_url"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
    assert_eq!(discovery["issuer"], iss);
    assert_eq!(discovery["id_token_signing_alg_values_supported"], json!(["ES256"]));
    let jwks = client.get(r["jwks_uri"].as_str().unwrap()).send().await.unwrap().text().await.unwrap();

    let token = mint(dir.path(), &["--aud", "registry.example.com", "--set-json", r#"kubernetes.io={"namespace":"prod"}"#]).unwrap();
    assert!(decode_header(&token).unwrap().x5t.is_none());
    let c = verify(&jwks, &token, iss, "registry.example.com");
    assert_eq!(c["aud"], json!(["registry.example.com"]));
    assert_eq!(c["kubernetes.io"]["namespace"], "prod");
    assert_eq!(c["kubernetes.io"]["pod"]["name"], "httpd");
}

#[test]
fn help_lists_the_commands() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("serve") && text.contains("mint"));
    let out = Command::new(BIN).args(["mint", "--help"]).output().unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains("--set-json"));
}
