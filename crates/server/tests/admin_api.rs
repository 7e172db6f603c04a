//! In-process tests of the admin API's hardening: credentials are checked before any body is
//! read, bodies have small limits with JSON errors, identity providers whose issuers differ only
//! in form are refused, robots that would accept too much are refused, and local users can be
//! listed, disabled and deleted without ever losing the last enabled admin.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::Router;
use berth_meta::{MetadataStore, SqliteStore};
use berth_server::AnonymousAccess;
use common::{basic, Resp, PW};
use http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Api {
    app: Router,
    meta: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let (app, meta) = common::open_app(dir.path(), AnonymousAccess::Off).await;
        Api { app, meta, _dir: dir }
    }

    async fn request(&self, req: Request<Body>) -> Resp {
        let resp = tokio::time::timeout(Duration::from_secs(20), self.app.clone().oneshot(req))
            .await
            .expect("the server must answer without waiting for the body")
            .unwrap();
        Resp::read(resp).await
    }

    async fn call(&self, method: Method, uri: &str, auth: Option<(&str, &str)>, body: Option<Value>) -> Resp {
        let mut b = Request::builder().method(method).uri(uri).header("host", "registry.test");
        if let Some((u, p)) = auth {
            b = b.header("authorization", basic(u, p));
        }
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&v).unwrap())
            }
            None => Body::empty(),
        };
        self.request(b.body(body).unwrap()).await
    }

    async fn admin(&self, method: Method, uri: &str, body: Option<Value>) -> Resp {
        self.call(method, uri, Some(("admin", PW)), body).await
    }
}

/// A body that declares `length` bytes and never sends one.
fn endless(method: Method, uri: &str, length: u64, auth: Option<String>) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "registry.test")
        .header("content-type", "application/json")
        .header("content-length", length.to_string());
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    b.body(Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>())).unwrap()
}

/// Every admin endpoint that takes a body.
const BODY_ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/api/v1/projects"),
    ("PUT", "/api/v1/projects/library"),
    ("POST", "/api/v1/projects/library/members"),
    ("POST", "/api/v1/robots"),
    ("PUT", "/api/v1/robots/robot$ci"),
    ("POST", "/api/v1/identity-providers"),
    ("PUT", "/api/v1/identity-providers/github"),
    ("PUT", "/api/v1/users/alice"),
    ("POST", "/api/v1/token/explain"),
    ("POST", "/api/v1/apply"),
];

fn method(m: &str) -> Method {
    Method::from_bytes(m.as_bytes()).unwrap()
}

/// Item 3: 401 (or 403) before the first byte of a body, on every endpoint with a body. Before
/// the fix the handlers read and parsed the body first, so these requests hung.
#[tokio::test]
async fn credentials_are_checked_before_any_body_byte() {
    let api = Api::new().await;
    for (m, uri) in BODY_ENDPOINTS {
        for (auth, want) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some(basic("admin", "wrong-password")), StatusCode::UNAUTHORIZED),
            (Some(basic("nobody", "whatever-pw")), StatusCode::UNAUTHORIZED),
            (Some("Bearer not-a-token".to_owned()), StatusCode::UNAUTHORIZED),
            (Some(basic("plain", PW)), StatusCode::FORBIDDEN),
        ] {
            let what = format!("{m} {uri} with {auth:?}");
            let r = api.request(endless(method(m), uri, 30 << 20, auth)).await;
            assert_eq!(r.status, want, "{what}: {}", r.text());
            assert!(!r.code().is_empty(), "{what}: a JSON error: {}", r.text());
        }
    }
}

/// Item 3: small limits per endpoint, 413 with a JSON error that says what to do; a declared
/// length over the limit is refused without reading the body.
#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let api = Api::new().await;
    let auth = basic("admin", PW);
    for (m, uri) in BODY_ENDPOINTS {
        let limit: u64 = if uri.ends_with("/apply") { 1 << 20 } else { 64 << 10 };
        let r = api.request(endless(method(m), uri, limit + 1, Some(auth.clone()))).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{m} {uri}: {}", r.text());
        assert_eq!(r.code(), "TOO_LARGE", "{m} {uri}");
        assert!(r.message().contains(&format!("{} KiB", limit >> 10)), "{m} {uri}: {}", r.message());
    }

    // A body without a declared length is cut at the limit too (chunked uploads).
    let padded = |n: usize| format!("{{\"name\": \"big\"{}}}", " ".repeat(n));
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        padded(70 << 10).into_bytes().chunks(8192).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/projects")
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    let r = api.request(req).await;
    assert_eq!((r.status, r.code()), (StatusCode::PAYLOAD_TOO_LARGE, "TOO_LARGE".into()), "{}", r.text());

    // Under the limits, the same documents pass: 60 KiB for a project, 900 KiB for apply.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/projects")
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(Body::from(padded(60 << 10)))
        .unwrap();
    assert_eq!(api.request(req).await.status, StatusCode::CREATED);
    let doc = format!("{{\"projects\": [{{\"name\": \"bulk\"}}]{}}}", " ".repeat(900 << 10));
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/apply")
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(Body::from(doc))
        .unwrap();
    let r = api.request(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Other body errors are JSON too.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/projects")
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let r = api.request(req).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "INVALID".into()), "{}", r.text());
    let req = Request::builder().method(Method::POST).uri("/api/v1/projects").header("authorization", &auth).body(Body::from("{}")).unwrap();
    let r = api.request(req).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.text());
    assert!(r.message().contains("application/json"), "{}", r.message());
}

fn provider(name: &str, issuer: &str, audiences: &[&str]) -> Value {
    json!({
        "name": name, "issuer": issuer, "audiences": audiences,
        "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}
    })
}

/// Item 13: issuers that differ only by a trailing slash (or case, or a default port) with an
/// overlapping audience are refused at create, update and apply; the message says what to do.
#[tokio::test]
async fn issuers_are_compared_after_normalisation() {
    let api = Api::new().await;
    let gh = "https://token.actions.githubusercontent.com";
    let r = api.admin(Method::POST, "/api/v1/identity-providers", Some(provider("github", gh, &["reg.example"]))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    for issuer in [format!("{gh}/"), "https://TOKEN.actions.githubusercontent.com".into(), format!("{}:443/", gh)] {
        let r = api.admin(Method::POST, "/api/v1/identity-providers", Some(provider("github2", &issuer, &["x.example", "reg.example"]))).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{issuer}: {}", r.text());
        let m = r.message();
        assert!(m.contains("\"github\"") && m.contains("\"github2\"") && m.contains("reg.example"), "{m}");
    }
    // Adding it again under the same name says how to change it instead.
    let r = api.admin(Method::POST, "/api/v1/identity-providers", Some(provider("github", gh, &["reg.example"]))).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.message().contains("berth idp update"), "{}", r.message());

    // Disjoint audiences are fine; an update that makes them overlap is refused.
    let r = api.admin(Method::POST, "/api/v1/identity-providers", Some(provider("github2", &format!("{gh}/"), &["other.example"]))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = api.admin(Method::PUT, "/api/v1/identity-providers/github2", Some(provider("github2", &format!("{gh}/"), &["reg.example"]))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    // Updating a provider itself is not a conflict with itself.
    let r = api.admin(Method::PUT, "/api/v1/identity-providers/github", Some(provider("github", &format!("{gh}/"), &["reg.example"]))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // apply: against the stored ones and within the document; nothing is written when refused.
    let doc = json!({"projects": [{"name": "applied"}], "identityProviders": [provider("github3", &format!("{gh}/"), &["reg.example"])]});
    let r = api.admin(Method::POST, "/api/v1/apply", Some(doc)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    let doc = json!({"projects": [{"name": "applied"}], "identityProviders": [
        provider("gl", "https://gitlab.example", &["a"]), provider("gl2", "https://GitLab.example/", &["a"])]});
    let r = api.admin(Method::POST, "/api/v1/apply", Some(doc)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.message().contains("\"gl\""), "{}", r.message());
    assert_eq!(api.admin(Method::GET, "/api/v1/projects/applied", None).await.status, StatusCode::NOT_FOUND);
    // A document that replaces the stored provider with the same name is fine.
    let doc = json!({"identityProviders": [provider("github", &format!("{gh}/"), &["reg.example", "more.example"])]});
    let r = api.admin(Method::POST, "/api/v1/apply", Some(doc)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// Item 21 (API): robots that would accept every token or reach outside their project.
#[tokio::test]
async fn robots_that_grant_too_much_are_refused() {
    let api = Api::new().await;
    assert_eq!(api.admin(Method::POST, "/api/v1/projects", Some(json!({"name": "library"}))).await.status, StatusCode::CREATED);
    let r = api.admin(Method::POST, "/api/v1/identity-providers", Some(provider("gh", "https://gh.example", &["reg"]))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    let pull = |repos: &str| json!([{"repositories": repos, "actions": ["pull"]}]);
    let rule = json!([{"claim": "repository", "equals": "org/app"}]);
    let cases = [
        (json!({"name": "norules", "project": "library", "identityProvider": "gh", "permissions": pull("*")}), Some("no rules")),
        (json!({"name": "out", "project": "library", "identityProvider": "gh", "rules": rule, "permissions": pull("other/*")}), Some("outside project")),
        (json!({"name": "out2", "project": "library", "permissions": pull("*/app")}), Some("outside project")),
        (json!({"name": "ok1", "project": "library", "identityProvider": "gh", "rules": rule, "permissions": pull("*")}), None),
        (json!({"name": "ok2", "project": "library", "identityProvider": "gh", "rules": rule, "permissions": pull("library/team/*")}), None),
        (json!({"name": "ok3", "project": "library", "permissions": pull("app")}), None),
        // A system robot may name any project.
        (json!({"name": "sys", "identityProvider": "gh", "rules": rule, "permissions": pull("other/*")}), None),
    ];
    for (spec, refused) in cases {
        let r = api.admin(Method::POST, "/api/v1/robots", Some(spec.clone())).await;
        match refused {
            Some(words) => {
                assert_eq!(r.status, StatusCode::BAD_REQUEST, "{spec}: {}", r.text());
                assert!(r.message().contains(words), "{spec}: {}", r.message());
            }
            None => assert_eq!(r.status, StatusCode::CREATED, "{spec}: {}", r.text()),
        }
    }
    // The "outside" message shows the spelling that works.
    let r = api
        .admin(Method::POST, "/api/v1/robots", Some(json!({"name": "x", "project": "library", "permissions": pull("other/*")})))
        .await;
    assert!(r.message().contains("library/other/*"), "{}", r.message());
    // apply refuses them too.
    let r = api.admin(Method::POST, "/api/v1/apply", Some(json!({"robots": [{"name": "n", "project": "library", "identityProvider": "gh"}]}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
}

/// Item 21 (API): /api/v1/users lists, creates, disables and deletes users, never shows hashes,
/// and never disables, demotes or deletes the last enabled admin.
#[tokio::test]
async fn users_api() {
    let api = Api::new().await;
    let r = api.admin(Method::GET, "/api/v1/users", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!([{"name": "admin", "admin": true, "disabled": false}, {"name": "plain", "admin": false, "disabled": false}]));

    // Create: a password is needed and hashed; the answer has no hash.
    let r = api.admin(Method::PUT, "/api/v1/users/alice", Some(json!({"admin": true}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.message().contains("password"), "{}", r.message());
    let r = api.admin(Method::PUT, "/api/v1/users/alice", Some(json!({"password": "short"}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let r = api.admin(Method::PUT, "/api/v1/users/alice", Some(json!({"password": "alice-password", "admin": true}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json(), json!({"name": "alice", "admin": true, "disabled": false}));
    for bad in ["robot$x", "a:b", "a b"] {
        let r = api.admin(Method::PUT, &format!("/api/v1/users/{}", bad.replace(' ', "%20")), Some(json!({"password": "long-enough"}))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text());
    }
    // alice logs in; the store has a hash that the API never shows.
    assert_eq!(api.call(Method::GET, "/api/v1/users/alice", Some(("alice", "alice-password")), None).await.status, StatusCode::OK);
    assert!(api.meta.get_user("alice").await.unwrap().unwrap().password_hash.starts_with("$argon2id$"));
    for uri in ["/api/v1/users", "/api/v1/users/alice"] {
        let text = api.admin(Method::GET, uri, None).await.text();
        assert!(!text.contains("argon2") && !text.to_lowercase().contains("hash") && !text.contains("password"), "{uri}: {text}");
    }

    // Disable keeps the password; an update without `password` keeps it too.
    let r = api.admin(Method::PUT, "/api/v1/users/plain", Some(json!({"disabled": true}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), json!({"name": "plain", "admin": false, "disabled": true}));
    let stored = api.meta.get_user("plain").await.unwrap().unwrap();
    assert!(stored.disabled && berth_identity::password::verify(PW, &stored.password_hash));

    // The last enabled admin: alice and admin are admins; demote alice, then admin is the last.
    let r = api.admin(Method::PUT, "/api/v1/users/alice", Some(json!({"admin": false}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for (m, body) in [
        (Method::PUT, Some(json!({"admin": true, "disabled": true}))),
        (Method::PUT, Some(json!({"admin": false}))),
        (Method::DELETE, None),
    ] {
        let r = api.admin(m.clone(), "/api/v1/users/admin", body.clone()).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{m} {body:?}: {}", r.text());
        assert!(r.message().contains("last enabled admin"), "{}", r.message());
    }
    let admin = api.meta.get_user("admin").await.unwrap().unwrap();
    assert!(admin.admin && !admin.disabled, "refused writes change nothing");
    // With another admin, the first may go.
    assert_eq!(api.admin(Method::PUT, "/api/v1/users/alice", Some(json!({"admin": true}))).await.status, StatusCode::OK);
    assert_eq!(api.call(Method::DELETE, "/api/v1/users/admin", Some(("alice", "alice-password")), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.call(Method::DELETE, "/api/v1/users/admin", Some(("alice", "alice-password")), None).await.status, StatusCode::NOT_FOUND);
    let r = api.call(Method::GET, "/api/v1/users", Some(("alice", "alice-password")), None).await;
    assert_eq!(r.json(), json!([{"name": "alice", "admin": true, "disabled": false}, {"name": "plain", "admin": false, "disabled": true}]));

    // Documented in OpenAPI.
    let r = api.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    let doc = r.json();
    for path in ["/api/v1/users", "/api/v1/users/{name}"] {
        assert!(doc["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["schemas"]["UserView"]["properties"].get("passwordHash").is_none());
}
