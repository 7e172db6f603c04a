//! Hostile and careless clients (issue 8): bounded logins, exact failed-login limits that cannot
//! lock a user out from elsewhere, revocation that reaches every replica within seconds, capped
//! and collapsed audit rows, closed metric labels, scope caps, and the connection-level limits of
//! `serve_with` over real sockets on 127.0.0.1.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use base64::Engine as _;
use berth_blob::FsBlobStore;
use berth_identity::TokenIssuer;
use berth_meta::{AuditQuery, MetadataStore, RobotRecord, SqliteStore, UserRecord};
use berth_server::{AnonymousAccess, AppState, Limits, ServerConfig};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const PW: &str = "correct horse battery staple";

fn basic(user: &str, pw: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

struct Resp {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    fn message(&self) -> String {
        self.json()["errors"][0]["message"].as_str().unwrap_or("").to_owned()
    }
}

/// One store (a SQLite file) and any number of Berth processes ("replicas") over it.
struct Cluster {
    dir: tempfile::TempDir,
    meta: Arc<SqliteStore>,
}

impl Cluster {
    async fn new() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(SqliteStore::open(&dir.path().join("berth.db")).await.unwrap());
        let hash = berth_identity::password::hash(PW).unwrap();
        meta.put_user(&UserRecord { name: "admin".into(), password_hash: hash, admin: true, disabled: false, ..UserRecord::default() }).await.unwrap();
        Cluster { dir, meta }
    }

    /// A replica: its own process state (caches, snapshot) over the shared store and folder.
    async fn replica(&self, limits: Limits) -> Replica {
        let meta = Arc::new(SqliteStore::open(&self.dir.path().join("berth.db")).await.unwrap());
        let key = meta.init_setting("registry_signing_key", &berth_identity::token::generate_signing_key().unwrap()).await.unwrap();
        let tokens = Arc::new(TokenIssuer::new(&key, "berth", "berth", Duration::from_secs(900)).unwrap());
        let blobs = Arc::new(FsBlobStore::open(self.dir.path().to_path_buf()).unwrap());
        let cfg = ServerConfig { anonymous: AnonymousAccess::Off, limits, ..ServerConfig::default() };
        let state = AppState::new(meta, blobs, tokens, cfg);
        Replica { app: berth_server::app(state.clone()), state }
    }

    async fn static_robot(&self, name: &str, secret: &str, expires_at: Option<i64>) {
        let rec = RobotRecord {
            name: name.into(),
            project: None,
            description: String::new(),
            disabled: false,
            expires_at,
            secret_hash: Some(berth_identity::password::hash(secret).unwrap()),
            identity_provider: None,
            rules: json!([]),
            permissions: json!([{"repositories": "*", "actions": ["pull", "push"]}]),
            created_at: now(),
            updated_at: now(),
        };
        self.meta.put_robot(&rec).await.unwrap();
    }
}

struct Replica {
    app: Router,
    state: Arc<AppState>,
}

impl Replica {
    async fn send_from(&self, client: [u8; 4], method: Method, uri: &str, auth: Option<&str>, body: Vec<u8>) -> Resp {
        let mut b = Request::builder().method(method).uri(uri).header("host", "registry.test");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        let mut req = b.body(Body::from(body)).unwrap();
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from((client, 40000))));
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        Resp { status, headers, body: resp.into_body().collect().await.unwrap().to_bytes().to_vec() }
    }
    async fn get(&self, uri: &str, auth: Option<&str>) -> Resp {
        self.send_from([127, 0, 0, 1], Method::GET, uri, auth, vec![]).await
    }
    async fn token(&self, user: &str, pw: &str) -> Resp {
        self.get("/service/token?service=berth&scope=repository:lib/app:pull", Some(&basic(user, pw))).await
    }
}

/// Polls `f` until it is true or `limit` passes; returns how long it took.
async fn within(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------------------ logins

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_logins_are_limited_exactly() {
    let c = Cluster::new().await;
    let r = Arc::new(c.replica(Limits { password_checks: 2, ..Limits::default() }).await);
    let limit = Limits::default().login_failures_per_account_address as usize;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move { r.token("admin", &format!("wrong-{i}")).await.status }));
    }
    let mut unauthorized = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // Every attempt was counted before its password check: exactly `limit` were checked.
    assert_eq!((unauthorized, limited), (limit, 200 - limit));
    // The real admin at another address is not locked out...
    let ok = r.send_from([10, 1, 2, 3], Method::GET, "/service/token?service=berth", Some(&basic("admin", PW)), vec![]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    // ... while the guessing address is, even with the right password.
    let r2 = c.replica(Limits::default()).await; // no login cache: a fresh process
    let locked = r2.token("admin", PW).await;
    assert_eq!(locked.status, 429);
    assert!(locked.message().contains("from your address"), "{}", locked.text());
    assert!(locked.headers.get("retry-after").is_some());
}

#[tokio::test]
async fn one_address_cannot_spray_accounts_and_the_account_ceiling_spares_known_addresses() {
    let c = Cluster::new().await;
    let limits = Limits { login_failures_per_address: 5, login_failures_per_account: 8, ..Limits::default() };
    let r = c.replica(limits.clone()).await;
    for i in 0..5 {
        assert_eq!(r.token(&format!("user{i}"), "x").await.status, 401);
    }
    let resp = r.token("user-next", "x").await;
    assert_eq!(resp.status, 429);
    assert!(resp.message().contains("too many failed logins from your address"), "{}", resp.text());

    // The admin logged in once from 10.0.0.1: that address stays known for the account.
    assert_eq!(r.send_from([10, 0, 0, 1], Method::GET, "/service/token", Some(&basic("admin", PW)), vec![]).await.status, 200);
    // A distributed guesser (8 addresses, one try each) reaches the account's ceiling ...
    for i in 0..8u8 {
        let resp = r.send_from([192, 0, 2, i + 10], Method::GET, "/service/token", Some(&basic("admin", "guess")), vec![]).await;
        assert_eq!(resp.status, 401, "attempt {i}: {}", resp.text());
    }
    // (a fresh process each time: a cached login would not be checked again)
    let fresh = c.replica(limits).await;
    let resp = fresh.send_from([192, 0, 2, 99], Method::GET, "/service/token", Some(&basic("admin", PW)), vec![]).await;
    assert_eq!(resp.status, 429, "an unknown address is held back at the ceiling: {}", resp.text());
    assert!(resp.message().contains("for this account"), "{}", resp.text());
    // ... but the admin's known address still logs in.
    let resp = fresh.send_from([10, 0, 0, 1], Method::GET, "/service/token", Some(&basic("admin", PW)), vec![]).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[tokio::test]
async fn refusals_never_name_accounts_or_providers() {
    let c = Cluster::new().await;
    c.meta
        .put_identity_provider(&berth_meta::IdentityProviderRecord {
            name: "secret-idp".into(),
            config: json!({"name": "secret-idp", "issuer": "https://idp.example", "audiences": ["berth"], "jwks": {"keys": []}}),
            created_at: now(),
            updated_at: now(),
        })
        .await
        .unwrap();
    let federated = RobotRecord {
        name: "robot$fed".into(),
        project: None,
        description: String::new(),
        disabled: false,
        expires_at: None,
        secret_hash: None,
        identity_provider: Some("secret-idp".into()),
        rules: json!([{"claim": "sub", "equals": "x"}]),
        permissions: json!([{"repositories": "*", "actions": ["pull"]}]),
        created_at: now(),
        updated_at: now(),
    };
    c.meta.put_robot(&federated).await.unwrap();
    let r = c.replica(Limits::default()).await;
    let answers: Vec<(StatusCode, String)> = {
        let mut v = Vec::new();
        for (u, p) in [("robot$fed", "guess"), ("robot$nobody", "guess"), ("admin", "guess"), ("nobody", "guess")] {
            let resp = r.token(u, p).await;
            v.push((resp.status, resp.text()));
            let on_v2 = r.get("/v2/lib/app/tags/list", Some(&basic(u, p))).await;
            v.push((on_v2.status, on_v2.message()));
        }
        v
    };
    for (status, text) in &answers {
        assert_eq!(*status, StatusCode::UNAUTHORIZED);
        assert!(text.contains("invalid username or password"), "{text}");
        assert!(!text.contains("secret-idp") && !text.contains("federated") && !text.contains("robot$"), "{text}");
    }
}

// ------------------------------------------------------------------------------ revocation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_deleted_expired_and_regenerated_credentials_stop_on_every_replica_within_2s() {
    let c = Cluster::new().await;
    c.static_robot("robot$ci", "s3cret-1", None).await;
    let a = c.replica(Limits::default()).await;
    let b = c.replica(Limits::default()).await;
    // Both replicas accept the secret (and cache it), and a registry token from it works on b.
    assert_eq!(a.token("robot$ci", "s3cret-1").await.status, 200);
    let t = b.token("robot$ci", "s3cret-1").await;
    assert_eq!(t.status, 200);
    let bearer = format!("Bearer {}", t.json()["token"].as_str().unwrap());
    assert_eq!(b.get("/v2/lib/app/tags/list", Some(&bearer)).await.status, StatusCode::NOT_FOUND);

    // A new secret (through the store, as another replica's admin API would do it).
    let mut rec = c.meta.get_robot("robot$ci").await.unwrap().unwrap();
    rec.secret_hash = Some(berth_identity::password::hash("s3cret-2").unwrap());
    c.meta.put_robot(&rec).await.unwrap();
    let took = within(Duration::from_secs(2), async || a.token("robot$ci", "s3cret-1").await.status == 401).await;
    eprintln!("old secret refused on replica a after {took:?}");
    within(Duration::from_secs(2), async || b.token("robot$ci", "s3cret-1").await.status == 401).await;
    assert_eq!(b.token("robot$ci", "s3cret-2").await.status, 200);

    // Disabled: the cached login and the registry token stop within 2 s.
    rec.disabled = true;
    c.meta.put_robot(&rec).await.unwrap();
    within(Duration::from_secs(2), async || b.token("robot$ci", "s3cret-2").await.status == 401).await;
    within(Duration::from_secs(2), async || b.get("/v2/lib/app/tags/list", Some(&bearer)).await.status == 401).await;
    let refused = b.get("/v2/lib/app/tags/list", Some(&bearer)).await;
    assert!(refused.message().contains("revoked"), "{}", refused.text());

    // Deleted: likewise.
    c.static_robot("robot$gone", "s3cret", None).await;
    assert_eq!(a.token("robot$gone", "s3cret").await.status, 200);
    assert!(c.meta.delete_robot("robot$gone").await.unwrap());
    within(Duration::from_secs(2), async || a.token("robot$gone", "s3cret").await.status == 401).await;

    // Expired: refused as soon as the expiry passes, cached or not, and its registry tokens
    // never outlive it.
    c.static_robot("robot$short", "s3cret", Some(now() + 2)).await;
    let t = a.token("robot$short", "s3cret").await;
    assert_eq!(t.status, 200, "{}", t.text());
    assert!(t.json()["expires_in"].as_u64().unwrap() <= 2, "{}", t.text());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    within(Duration::from_secs(2), async || a.token("robot$short", "s3cret").await.status == 401).await;

    // Users: a changed password and a disabled user stop too.
    let hash = berth_identity::password::hash("new-admin-password").unwrap();
    let other = c.replica(Limits::default()).await;
    assert_eq!(other.token("admin", PW).await.status, 200);
    c.meta.put_user(&UserRecord { name: "admin".into(), password_hash: hash, admin: true, disabled: false, ..UserRecord::default() }).await.unwrap();
    within(Duration::from_secs(2), async || other.token("admin", PW).await.status == 401).await;
}

// ------------------------------------------------------------------------------ audit and metrics

#[tokio::test]
async fn refused_logins_are_capped_and_collapsed_in_the_audit_log() {
    let c = Cluster::new().await;
    let r = c.replica(Limits::default()).await;
    let huge = "u".repeat(300_000);
    for _ in 0..60 {
        let resp = r.token(&huge, "wrong").await;
        assert!(resp.status == 401 || resp.status == 429, "{}", resp.status);
    }
    r.state.audit().flush().await;
    let events = c.meta.query_audit(&AuditQuery { action: Some("login".into()), limit: 1000, ..Default::default() }).await.unwrap();
    assert!(!events.is_empty());
    assert!(events.len() <= 4, "60 identical refusals became {} rows", events.len());
    for e in &events {
        assert!(e.principal.len() <= 200, "principal of {} bytes stored", e.principal.len());
        assert!(e.message.as_deref().unwrap_or("").len() <= 1200);
    }
    let db = std::fs::metadata(c.dir.path().join("berth.db")).unwrap().len()
        + std::fs::metadata(c.dir.path().join("berth.db-wal")).map(|m| m.len()).unwrap_or(0);
    assert!(db < 4 << 20, "the database grew to {db} bytes");
}

#[tokio::test]
async fn metric_labels_come_from_closed_sets() {
    let c = Cluster::new().await;
    let r = c.replica(Limits::default()).await;
    for i in 0..300 {
        let m = Method::from_bytes(format!("X{i}RANDOM").as_bytes()).unwrap();
        r.send_from([127, 0, 0, 1], m, &format!("/nowhere/{i}"), None, vec![]).await;
    }
    let text = r.get("/metrics", Some(&basic("admin", PW))).await.text();
    assert!(!text.contains("X1RANDOM") && !text.contains("nowhere"), "client strings became labels");
    assert!(text.contains("method=\"other\""), "{text}");
    assert!(text.len() < 200_000, "/metrics is {} bytes", text.len());
    // /metrics on the main listener is for administrators.
    assert_eq!(r.get("/metrics", None).await.status, 401);
}

#[tokio::test]
async fn token_requests_with_too_many_scopes_are_refused_quickly() {
    let c = Cluster::new().await;
    let r = c.replica(Limits::default()).await;
    // The http crate refuses URIs over 64 KiB; a real request line can carry ~400 KB.
    let scopes: String = (0..2_000).map(|i| format!("&scope=repository:r{i}:pull")).collect();
    let start = Instant::now();
    let resp = r.get(&format!("/service/token?service=berth{scopes}"), Some(&basic("admin", PW))).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(resp.message().contains("at most 64"), "{}", resp.text());
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    let ok: String = (0..64).map(|i| format!("&scope=repository:r{i}:pull")).collect();
    assert_eq!(r.get(&format!("/service/token?service=berth{ok}"), Some(&basic("admin", PW))).await.status, 200);
}

#[tokio::test]
async fn the_catalog_challenges_anonymous_callers() {
    let c = Cluster::new().await;
    let r = c.replica(Limits::default()).await;
    let resp = r.get("/v2/_catalog", None).await;
    assert_eq!(resp.status, 401);
    assert!(resp.headers.get("www-authenticate").is_some());
}

// ------------------------------------------------------------------------------ connections

/// Serves a replica's app with `limits` on 127.0.0.1; returns the address.
async fn listen(c: &Cluster, limits: Limits) -> SocketAddr {
    let r = c.replica(limits.clone()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(berth_server::serve_with(listener, r.app, None, std::future::pending(), Duration::from_secs(1), limits));
    addr
}

/// Whether the server closed the connection (EOF or reset) within `limit`.
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn healthz(addr: SocketAddr) -> Option<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await.ok()?.ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await.ok()?.ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_disconnected() {
    let c = Cluster::new().await;
    let limits = Limits {
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(800),
        body_rate_window: Duration::from_secs(1),
        body_min_rate: 1000,
        ..Limits::default()
    };
    let addr = listen(&c, limits).await;
    // Half-sent headers.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(3)).await, "half-sent headers kept the connection");
    // A connection that never sends anything.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(3)).await, "a silent connection stayed open");
    // An idle keep-alive connection after one request.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(3)).await, "an idle keep-alive connection stayed open");
    // A body that trickles: 1 byte of a declared 1 MB, then nothing.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = basic("admin", PW);
    let req = format!("POST /service/token HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 1000000\r\n\r\ng");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(4), s.read(&mut buf)).await.expect("no answer to a stalled body").unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 413") || answer.starts_with("HTTP/1.1 408") || answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(healthz(addr).await.is_some_and(|h| h.contains("ok")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_holds_and_freed_slots_serve_again() {
    let c = Cluster::new().await;
    let limits = Limits { max_connections: 20, header_read_timeout: Duration::from_secs(2), idle_timeout: Duration::from_secs(2), ..Limits::default() };
    let addr = listen(&c, limits).await;
    let mut held = Vec::new();
    for _ in 0..40 {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        held.push(s);
    }
    // The 20 slots are taken by silent connections; they are closed by the timeouts, then the
    // waiting ones are served, and /healthz answers again within a few seconds.
    let start = Instant::now();
    let mut answered = false;
    while start.elapsed() < Duration::from_secs(12) {
        if healthz(addr).await.is_some_and(|h| h.contains("ok")) {
            answered = true;
            break;
        }
    }
    assert!(answered, "/healthz did not answer while silent clients held the connections");
    drop(held);
}

/// Sends `head` + `body_start` and waits for the answer's status line and headers.
async fn stalled_request(addr: SocketAddr, head: &str, body_start: &[u8], wait: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body_start).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(wait, s.read(&mut buf)).await.expect("no answer to a stalled body").unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

async fn request(addr: SocketAddr, head: &str, body: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.unwrap().unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_get_408_and_lose_nothing() {
    let c = Cluster::new().await;
    let limits = Limits { body_rate_window: Duration::from_secs(1), body_min_rate: 1000, ..Limits::default() };
    let addr = listen(&c, limits).await;
    let auth = basic("admin", PW);
    // A manifest whose body stalls.
    let head = format!("PUT /v2/lib/app/manifests/v1 HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\ncontent-length: 5000\r\n\r\n");
    let answer = stalled_request(addr, &head, b"{\"schemaVersion\"", Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("too slowly"), "{answer}");
    // A chunk whose body stalls: 408, and the session stays usable from what it recorded.
    let close = "connection: close\r\n";
    let start = request(addr, &format!("POST /v2/lib/app/blobs/uploads/ HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\ncontent-length: 0\r\n{close}\r\n"), b"").await;
    assert!(start.starts_with("HTTP/1.1 202"), "{start}");
    let location = header(&start, "location").unwrap().to_owned();
    let path = location.split_once("://").map(|(_, r)| &r[r.find('/').unwrap()..]).unwrap_or(&location).to_owned();
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let head = format!("PATCH {path} HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n", content.len());
    let answer = stalled_request(addr, &head, &content[..10], Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let status = request(addr, &format!("GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\n{close}\r\n"), b"").await;
    assert!(status.starts_with("HTTP/1.1 204"), "{status}");
    let range = header(&status, "range").unwrap();
    let have: usize = range.split('-').nth(1).unwrap().parse::<usize>().unwrap() + 1;
    let have = if range == "0-0" && have == 1 { 0 } else { have };
    assert!(have == 0 || have == 10, "the upload holds {have} bytes after the stalled chunk");
    let rest = &content[have..];
    let patch = request(
        addr,
        &format!("PATCH {path} HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\ncontent-type: application/octet-stream\r\ncontent-range: {have}-{}\r\ncontent-length: {}\r\n{close}\r\n", content.len() - 1, rest.len()),
        rest,
    )
    .await;
    assert!(patch.starts_with("HTTP/1.1 202"), "{patch}");
    let digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&content)));
    let done = request(addr, &format!("PUT {path}?digest={digest} HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\ncontent-length: 0\r\n{close}\r\n"), b"").await;
    assert!(done.starts_with("HTTP/1.1 201"), "{done}");
}

async fn connect_from(source: [u8; 4], addr: SocketAddr) -> tokio::net::TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((source, 0))).unwrap();
    s.connect(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let c = Cluster::new().await;
    let limits = Limits { max_connections_per_address: 5, ..Limits::default() };
    let addr = listen(&c, limits).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from([127, 0, 0, 1], addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sixth = connect_from([127, 0, 0, 1], addr).await;
    assert!(closed_within(&mut sixth, Duration::from_secs(2)).await, "a 6th connection from one address was kept");
    // Another client address is served at once.
    let mut other = connect_from([127, 0, 0, 2], addr).await;
    other.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), other.read_to_end(&mut out)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    // A freed slot serves the first address again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect_from([127, 0, 0, 1], addr).await;
    again.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), again.read_to_end(&mut out)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&out));
}
