//! Workload identity federation through the whole HTTP app, in process: an identity provider with
//! static keys, a project and a federated robot made through the admin API, and OIDC tokens
//! presented as Basic password at `/service/token`, as Bearer and as Basic directly on `/v2`.
//! Also explain, audit, apply idempotency, rate limiting and the OpenAPI document.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use axum::body::Body;
use axum::Router;
use base64::Engine as _;
use berth_blob::FsBlobStore;
use berth_identity::TokenIssuer;
use berth_meta::{MetadataStore, SqliteStore, UserRecord};
use berth_server::{AnonymousAccess, AppState, ServerConfig};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const PW: &str = "admin-password";
const ISSUER: &str = "https://ci.example.com";
const AUD: &str = "registry.test";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn basic(user: &str, pw: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

struct Issuer {
    key: EcdsaKeyPair,
}

impl Issuer {
    fn new() -> Issuer {
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        Issuer { key: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap() }
    }
    fn jwks(&self) -> Value {
        let p = self.key.public_key().as_ref();
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig", "x": b64(&p[1..33]), "y": b64(&p[33..65])}]})
    }
    fn mint(&self, claims: &Value) -> String {
        let input = format!("{}.{}", b64(br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#), b64(claims.to_string().as_bytes()));
        let sig = self.key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

/// The GitHub Actions claims of the seed, for `repository`, with fresh times.
fn github(repository: &str) -> Value {
    let t = now();
    json!({
        "actor": "Vad1mo", "aud": AUD, "event_name": "workflow_dispatch", "exp": t + 300, "iat": t, "nbf": t - 5,
        "iss": ISSUER, "jti": "6cf8862b-b832-4372-9998-22026ecd21a1", "ref": "refs/heads/main", "ref_protected": "false",
        "repository": repository, "repository_owner": "org", "run_id": "19677834613", "sha": "15a5ebfa",
        "sub": format!("repo:{repository}:ref:refs/heads/main"), "workflow": "build"
    })
}

fn with(mut v: Value, patch: Value) -> Value {
    for (k, x) in patch.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

struct Resp {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The first error message (unescaped).
    fn message(&self) -> String {
        self.json()["errors"][0]["message"].as_str().unwrap_or("").to_owned()
    }
}

struct Reg {
    app: Router,
    _dir: tempfile::TempDir,
}

impl Reg {
    async fn new() -> Reg {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(SqliteStore::open(&dir.path().join("berth.db")).await.unwrap());
        let hash = berth_identity::password::hash(PW).unwrap();
        meta.put_user(&UserRecord { name: "admin".into(), password_hash: hash, admin: true, disabled: false, ..UserRecord::default() }).await.unwrap();
        let key = meta.init_setting("registry_signing_key", &berth_identity::token::generate_signing_key().unwrap()).await.unwrap();
        let tokens = Arc::new(TokenIssuer::new(&key, "berth", "berth", Duration::from_secs(900)).unwrap());
        let blobs = Arc::new(FsBlobStore::open(dir.path().to_path_buf()).unwrap());
        let cfg = ServerConfig { external_url: None, service: "berth".into(), anonymous: AnonymousAccess::Off, tls: false, ..ServerConfig::default() };
        Reg { app: berth_server::app(AppState::new(meta, blobs, tokens, cfg)), _dir: dir }
    }
    async fn send(&self, method: Method, uri: &str, auth: Option<&str>, body: Vec<u8>) -> Resp {
        let mut b = Request::builder().method(method).uri(uri).header("host", "registry.test");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        if body.first() == Some(&b'{') {
            b = b.header("content-type", "application/json");
        }
        // Every in-process request comes from one client address, as over TCP.
        let client = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
        let mut req = b.body(Body::from(body)).unwrap();
        req.extensions_mut().insert(axum::extract::ConnectInfo(client));
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        Resp { status, headers, body: resp.into_body().collect().await.unwrap().to_bytes().to_vec() }
    }
    async fn api(&self, method: Method, path: &str, body: Value) -> Resp {
        let bytes = if body.is_null() { vec![] } else { body.to_string().into_bytes() };
        self.send(method, &format!("/api/v1{path}"), Some(&basic("admin", PW)), bytes).await
    }
    async fn setup(&self, issuer: &Issuer) {
        let r = self.api(Method::POST, "/projects", json!({"name": "library"})).await;
        assert_eq!(r.status, 201, "{}", r.text());
        let r = self.api(Method::POST, "/identity-providers", json!({"name": "ci", "issuer": ISSUER, "audiences": [AUD], "jwks": issuer.jwks()})).await;
        assert_eq!(r.status, 201, "{}", r.text());
        let r = self
            .api(
                Method::POST,
                "/robots",
                json!({"name": "ci-app", "project": "library", "identityProvider": "ci",
                       "rules": [{"claim": "repository", "equals": "org/app"}, {"claim": "ref", "glob": "refs/heads/*"}],
                       "permissions": [{"repositories": "app", "actions": ["pull", "push"]}]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.json()["robot"]["name"], "robot$library+ci-app");
        assert!(r.json().get("secret").is_none(), "federated robots have no secret");
    }
    async fn exchange(&self, user: &str, jwt: &str, scope: &str) -> Resp {
        self.send(Method::GET, &format!("/service/token?service=berth&scope={scope}"), Some(&basic(user, jwt)), vec![]).await
    }
}

#[tokio::test]
async fn federated_robot_token_exchange_and_direct_use() {
    let reg = Reg::new().await;
    let issuer = Issuer::new();
    reg.setup(&issuer).await;
    let jwt = issuer.mint(&github("org/app"));

    // Token exchange with any user name; scopes intersected with the robot's permissions.
    let r = reg.exchange("not-relevant", &jwt, "repository:library/app:pull,push,delete").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert!(body.get("refresh_token").is_none());
    let token = body["token"].as_str().unwrap().to_owned();
    let payload: Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(payload["access"], json!([{"type": "repository", "name": "library/app", "actions": ["pull", "push"]}]));
    assert_eq!(payload["sub"], "robot$library+ci-app");
    assert_eq!(payload["origin"]["idp"], "ci");

    // Push with the registry token; another repository is refused.
    let data = b"layer bytes";
    let digest = format!("sha256:{}", hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref()));
    let bearer = format!("Bearer {token}");
    let r = reg.send(Method::POST, &format!("/v2/library/app/blobs/uploads/?digest={digest}"), Some(&bearer), data.to_vec()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = reg.exchange("jwt", &jwt, "repository:library/other:pull,push").await;
    assert_eq!(r.json()["token"].as_str().map(|t| t.len() > 10), Some(true));
    let other = reg.exchange("jwt", &jwt, "repository:library/other:pull").await.json()["token"].as_str().unwrap().to_owned();
    let r = reg.send(Method::GET, &format!("/v2/library/other/blobs/{digest}"), Some(&format!("Bearer {other}")), vec![]).await;
    assert_eq!(r.status, 401, "no access to library/other: {}", r.text());

    // The OIDC token directly on /v2, as Bearer (Flux, go-containerregistry) and as Basic password.
    let r = reg.send(Method::GET, &format!("/v2/library/app/blobs/{digest}"), Some(&format!("Bearer {jwt}")), vec![]).await;
    assert_eq!((r.status, r.body.as_slice()), (StatusCode::OK, &data[..]));
    let r = reg.send(Method::GET, &format!("/v2/library/app/blobs/{digest}"), Some(&basic("jwt", &jwt)), vec![]).await;
    assert_eq!(r.status, 200);
    let r = reg.send(Method::DELETE, &format!("/v2/library/app/blobs/{digest}"), Some(&format!("Bearer {jwt}")), vec![]).await;
    assert_eq!(r.status, 403, "delete is not granted: {}", r.text());

    // containerd/BuildKit: POST grant_type=password with the OIDC token as the password.
    let form = format!("grant_type=password&username=jwt&password={jwt}&scope=repository:library/app:pull&service=berth");
    let resp = reg
        .app
        .clone()
        .oneshot(
            Request::builder()
                .method(Method::POST)
                .uri("/service/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(form))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(body["access_token"].is_string() && body.get("refresh_token").is_none(), "{body}");

    // A login name naming the robot narrows to it; naming another robot is refused.
    assert_eq!(reg.exchange("robot$library+ci-app", &jwt, "repository:library/app:pull").await.status, 200);
    let r = reg.exchange("robot$library+nope", &jwt, "repository:library/app:pull").await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("does not match your token"), "{}", r.text());
}

#[tokio::test]
async fn refusals_say_which_check_failed() {
    let reg = Reg::new().await;
    let issuer = Issuer::new();
    reg.setup(&issuer).await;
    let t = now();
    let cases: Vec<(&str, String, &str)> = vec![
        ("other repository claim", issuer.mint(&github("org/other")), "no robots matched your token; an administrator can see which rules failed"),
        ("wrong audience", issuer.mint(&with(github("org/app"), json!({"aud": "sts.amazonaws.com"}))), "audience mismatch: expected one of [registry.test], token has [sts.amazonaws.com]"),
        ("expired", issuer.mint(&with(github("org/app"), json!({"exp": t - 3600, "iat": t - 4000, "nbf": t - 4000}))), "token expired at"),
        ("not yet valid", issuer.mint(&with(github("org/app"), json!({"nbf": t + 3600, "iat": t + 3600, "exp": t + 4000}))), "before 20"),
        ("lifetime too long", issuer.mint(&with(github("org/app"), json!({"exp": t + 400 * 86400}))), "lifetime"),
        ("wrong issuer", issuer.mint(&with(github("org/app"), json!({"iss": "https://evil.example.com"}))), "unknown issuer \"https://evil.example.com\""),
        ("other key", Issuer::new().mint(&github("org/app")), "bad signature"),
        ("other branch", issuer.mint(&with(github("org/app"), json!({"ref": "refs/tags/v1"}))), "no robots matched your token"),
    ];
    for (name, jwt, want) in &cases {
        let r = reg.exchange("jwt", jwt, "repository:library/app:pull").await;
        assert_eq!(r.status, 401, "{name}: {}", r.text());
        assert!(r.message().contains(want), "{name}: {}", r.text());
        let r = reg.send(Method::GET, "/v2/library/app/tags/list", Some(&format!("Bearer {jwt}")), vec![]).await;
        assert_eq!(r.status, 401, "{name} on /v2");
        assert!(r.message().contains(want), "{name} on /v2: {}", r.text());
        assert!(!r.message().contains("\"ci\""), "{name}: the provider's name reached the caller: {}", r.text());
        let challenge = r.headers.get("www-authenticate").unwrap().to_str().unwrap().to_owned();
        assert!(challenge.contains("invalid_token"), "{challenge}");
        // The reason is in the challenge too (RFC 6750 error_description).
        let start: String = r.message().chars().take_while(|c| *c != '"').take(12).collect();
        assert!(challenge.contains(&format!("error_description=\"{start}")), "{challenge}");
    }

    // Explain shows each step and each rule.
    let r = reg.api(Method::POST, "/token/explain", json!({"token": issuer.mint(&with(github("org/app"), json!({"ref": "refs/tags/v1"})))})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ex = r.json();
    assert_eq!(ex["result"], "denied");
    assert_eq!(ex["provider"], "ci");
    assert!(ex["steps"].as_array().unwrap().iter().any(|s| s["name"] == "signature" && s["ok"] == true));
    let robot = &ex["robots"][0];
    assert_eq!(robot["robot"], "robot$library+ci-app");
    assert_eq!(robot["rules"][0]["matched"], true);
    assert_eq!(robot["rules"][1]["matched"], false);
    assert!(robot["rules"][1]["reason"].as_str().unwrap().contains("refs/tags/v1"), "{robot}");

    // The audit log has the refusals and the successful exchange.
    assert_eq!(reg.exchange("jwt", &issuer.mint(&github("org/app")), "repository:library/app:pull").await.status, 200);
    let r = reg.api(Method::GET, "/audit?action=token", Value::Null).await;
    let events = r.json();
    let e = &events[0];
    assert_eq!((e["result"].as_str(), e["provider"].as_str()), (Some("ok"), Some("ci")));
    assert_eq!(e["robots"], json!(["robot$library+ci-app"]));
    assert_eq!(e["claims"]["sub"], "repo:org/app:ref:refs/heads/main");
    let r = reg.api(Method::GET, "/audit?action=login&result=denied", Value::Null).await;
    assert!(r.json().as_array().unwrap().len() >= cases.len(), "{}", r.text());
}

#[tokio::test]
async fn apply_is_idempotent_and_logins_are_rate_limited() {
    let reg = Reg::new().await;
    let issuer = Issuer::new();
    let doc = json!({
        "projects": [{"name": "library"}],
        "identityProviders": [{"name": "github", "preset": "github", "audiences": [AUD]},
                              {"name": "ci", "issuer": ISSUER, "audiences": [AUD], "jwks": issuer.jwks()}],
        "robots": [{"name": "ci-myrepo", "project": "library", "identityProvider": "github",
                    "rules": [{"claim": "repository", "equals": "myorg/myrepo"}, {"claim": "ref", "glob": "refs/heads/*"}],
                    "permissions": [{"repositories": "library/*", "actions": ["pull", "push"]}]},
                   {"name": "legacy", "project": "library", "permissions": [{"repositories": "*", "actions": ["pull"]}]}]
    });
    let first = reg.api(Method::POST, "/apply", doc.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let actions: Vec<String> = first.json()["changes"].as_array().unwrap().iter().map(|c| c["action"].as_str().unwrap().to_owned()).collect();
    assert_eq!(actions, vec!["created"; 5]);
    let secret = first.json()["secrets"]["robot$library+legacy"].as_str().unwrap().to_owned();
    let second = reg.api(Method::POST, "/apply", doc.clone()).await;
    let actions: Vec<String> = second.json()["changes"].as_array().unwrap().iter().map(|c| c["action"].as_str().unwrap().to_owned()).collect();
    assert_eq!(actions, vec!["unchanged"; 5], "{}", second.text());
    assert!(second.json().get("secrets").is_none());

    // The static secret works (shown once), a wrong one does not.
    let r = reg.send(Method::GET, "/service/token?scope=repository:library/x:pull", Some(&basic("robot$library+legacy", &secret)), vec![]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A secret for a federated robot gets the same answer as any wrong secret (no enumeration).
    let r = reg.send(Method::GET, "/service/token", Some(&basic("robot$library+ci-myrepo", "guess")), vec![]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.message(), "invalid username or password", "{}", r.text());
    let r2 = reg.send(Method::GET, "/service/token", Some(&basic("robot$library+nobody", "guess")), vec![]).await;
    assert_eq!((r2.status, r2.text()), (r.status, r.text()));

    // Guessing is rate-limited per account and address; valid federated tokens still work.
    let mut last = StatusCode::OK;
    for _ in 0..12 {
        last = reg.send(Method::GET, "/service/token", Some(&basic("admin", "wrong")), vec![]).await.status;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    let r = reg.send(Method::GET, "/service/token", Some(&basic("admin", "wrong-again")), vec![]).await;
    assert_eq!(r.status, 429);
    assert!(r.headers.get("retry-after").is_some());
    assert!(r.message().contains("too many failed logins for this account from your address"), "{}", r.text());
    // A client already logged in (cached) keeps working during the lockout.
    let r = reg.api(Method::GET, "/projects", Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = reg.exchange("jwt", &issuer.mint(&github("org/app")), "repository:library/app:pull").await;
    assert_eq!(r.status, 401, "no robot of provider ci yet: {}", r.text());
    assert!(r.text().contains("no robots matched"));

    // The OpenAPI document lists the admin API.
    let r = reg.send(Method::GET, "/api/v1/openapi.json", None, vec![]).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["paths"]["/api/v1/robots"].is_object());
}

#[tokio::test]
async fn public_projects_disabled_and_expired_robots() {
    let reg = Reg::new().await;
    let issuer = Issuer::new();
    reg.setup(&issuer).await;

    // A private project needs credentials; a public one lets anyone pull, not push.
    let r = reg.send(Method::GET, "/v2/library/app/tags/list", None, vec![]).await;
    assert_eq!(r.status, 401);
    let r = reg.api(Method::PUT, "/projects/library", json!({"name": "library", "public": true})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = reg.send(Method::GET, "/v2/library/app/tags/list", None, vec![]).await;
    assert_eq!(r.status, 404, "anonymous pull reaches the repository (which has no tags): {}", r.text());
    let r = reg.send(Method::POST, "/v2/library/app/blobs/uploads/", None, vec![]).await;
    assert_eq!(r.status, 401, "but may not push");
    let r = reg.send(Method::GET, "/service/token?scope=repository:library/app:pull,push", None, vec![]).await;
    assert_eq!(r.status, 200, "anonymous tokens carry the public pull: {}", r.text());

    // A disabled robot never matches; explain says why.
    let jwt = issuer.mint(&github("org/app"));
    assert_eq!(reg.exchange("jwt", &jwt, "repository:library/app:push").await.status, 200);
    let robot = reg.api(Method::GET, "/robots/robot$library+ci-app", Value::Null).await.json();
    let mut spec = json!({"name": robot["name"], "identityProvider": "ci", "rules": robot["rules"], "permissions": robot["permissions"], "disabled": true});
    assert_eq!(reg.api(Method::PUT, "/robots/robot$library+ci-app", spec.clone()).await.status, 200);
    let jwt = issuer.mint(&with(github("org/app"), json!({"jti": "second"})));
    let r = reg.exchange("jwt", &jwt, "repository:library/app:push").await;
    assert_eq!(r.status, 401);
    assert!(r.message().contains("no robots matched"), "{}", r.text());
    let ex = reg.api(Method::POST, "/token/explain", json!({"token": jwt})).await.json();
    assert_eq!(ex["robots"][0]["note"], "robot is disabled", "{ex}");

    // An expired robot neither.
    spec["disabled"] = json!(false);
    spec["expiresAt"] = json!("2020-01-01T00:00:00Z");
    assert_eq!(reg.api(Method::PUT, "/robots/robot$library+ci-app", spec.clone()).await.status, 200);
    let jwt = issuer.mint(&with(github("org/app"), json!({"jti": "third"})));
    assert_eq!(reg.exchange("jwt", &jwt, "repository:library/app:push").await.status, 401);
    spec["expiresAt"] = json!("2999-01-01T00:00:00Z");
    assert_eq!(reg.api(Method::PUT, "/robots/robot$library+ci-app", spec).await.status, 200);
    let jwt = issuer.mint(&with(github("org/app"), json!({"jti": "fourth"})));
    assert_eq!(reg.exchange("jwt", &jwt, "repository:library/app:push").await.status, 200);

    // Invalid documents are refused with what to fix.
    let r = reg.api(Method::POST, "/robots", json!({"name": "bad", "project": "library", "identityProvider": "ci", "rules": [{"claim": "x"}], "permissions": []})).await;
    assert_eq!(r.status, 400);
    assert!(r.message().contains("exactly one of equals, glob, oneOf, expression"), "{}", r.text());
    let r = reg.api(Method::POST, "/identity-providers", json!({"name": "x", "issuer": "https://x.example", "audiences": [], "jwks": issuer.jwks()})).await;
    assert_eq!(r.status, 400);
    assert!(r.message().contains("at least one audience"), "{}", r.text());
    let r = reg.api(Method::POST, "/robots", json!({"name": "r", "project": "nope", "permissions": [{"actions": ["pull"]}]})).await;
    assert_eq!(r.status, 409);
    assert!(r.message().contains("project \"nope\" does not exist"), "{}", r.text());
    let r = reg.api(Method::DELETE, "/identity-providers/ci", Value::Null).await;
    assert_eq!(r.status, 409, "robots still use it: {}", r.text());
}

#[tokio::test]
async fn an_expiring_federated_robot_bounds_its_tokens_and_the_verified_token_cache() {
    let reg = Reg::new().await;
    let issuer = Issuer::new();
    reg.setup(&issuer).await;
    let expires = now() + 3;
    let expires_text = chrono::DateTime::from_timestamp(expires as i64, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let r = reg
        .api(
            Method::POST,
            "/robots",
            json!({"name": "short", "project": "library", "identityProvider": "ci", "expiresAt": expires_text,
                   "rules": [{"claim": "repository", "equals": "org/short"}],
                   "permissions": [{"repositories": "app", "actions": ["pull"]}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let jwt = issuer.mint(&github("org/short"));
    let r = reg.exchange("jwt", &jwt, "repository:library/app:pull").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The registry token never outlives the robot (it used to get the whole token_ttl).
    assert!(r.json()["expires_in"].as_u64().unwrap() <= 3, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    // The same OIDC token, verified and cached a moment ago, is refused once the robot expired.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let r = reg.exchange("jwt", &jwt, "repository:library/app:pull").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.message().contains("no robots matched your token"), "{}", r.text());
    let r = reg.send(Method::GET, "/v2/library/app/tags/list", Some(&format!("Bearer {token}")), vec![]).await;
    assert_eq!(r.status, 401, "{}", r.text());
}
