//! [`TestIssuer`]: a real OIDC issuer on 127.0.0.1 (HTTP, or HTTPS with its own CA) serving
//! discovery and a JWKS, with knobs for tests: key rotation, outages (503 or refused
//! connections), slow answers, broken documents, and request counters.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::claims::{self, merge};
use crate::jws;
use crate::keys::{uuid_kid, Key, KeyKind};
use crate::tls::TestCa;

/// Which platform the issuer imitates: where its JWKS is, its default key, the shape of its key
/// ids, and the claims of [`TestIssuer::claims`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// A plain OIDC issuer: JWKS at `/.well-known/jwks`, ES256, thumbprint kids.
    #[default]
    Generic,
    /// GitHub Actions: JWKS at `/.well-known/jwks`, RS256, UUID-shaped kids, and a self-signed
    /// certificate per key (`x5c`/`x5t` in the JWKS, `x5t` in token headers).
    GitHub,
    /// GitLab CI: JWKS at `/oauth/discovery/keys`, RS256, RFC 7638 thumbprint kids.
    GitLab,
    /// A Kubernetes service-account issuer: JWKS at `/openid/v1/jwks`, RS256, kids the
    /// base64url SHA-256 of the public key's DER (as the API server computes them).
    Kubernetes,
    /// Forgejo Actions (issuer usually `<instance>/api/actions`): JWKS at `/.well-known/jwks`,
    /// RS256, thumbprint kids.
    Forgejo,
}

impl Flavor {
    /// Every flavour.
    pub const ALL: [Flavor; 5] = [Flavor::Generic, Flavor::GitHub, Flavor::GitLab, Flavor::Kubernetes, Flavor::Forgejo];

    /// The JWKS path under the issuer URL.
    pub fn jwks_path(self) -> &'static str {
        match self {
            Flavor::Generic | Flavor::GitHub | Flavor::Forgejo => "/.well-known/jwks",
            Flavor::GitLab => "/oauth/discovery/keys",
            Flavor::Kubernetes => "/openid/v1/jwks",
        }
    }

    /// The key an issuer of this flavour starts with.
    pub fn default_key(self) -> KeyKind {
        match self {
            Flavor::Generic => KeyKind::EcP256,
            _ => KeyKind::Rsa2048,
        }
    }

    /// The command-line name (also Berth's preset name).
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Generic => "generic",
            Flavor::GitHub => "github",
            Flavor::GitLab => "gitlab",
            Flavor::Kubernetes => "kubernetes",
            Flavor::Forgejo => "forgejo",
        }
    }
}

impl FromStr for Flavor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Flavor::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown flavour {s:?} (use generic, github, gitlab, kubernetes or forgejo)"))
    }
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How to start a [`TestIssuer`]. `IssuerOptions::default()` is a generic ES256 issuer at
/// `http://127.0.0.1:<any port>`.
#[derive(Clone, Debug, Default)]
pub struct IssuerOptions {
    /// The platform imitated.
    pub flavor: Flavor,
    /// A path after the host that is part of the issuer URL, e.g. `/api/actions` (Forgejo) or
    /// `/gitlab` (a self-managed GitLab under a path). Empty: the issuer is the bare origin.
    pub path: String,
    /// The first signing key; None: the flavour's [`Flavor::default_key`].
    pub key: Option<KeyKind>,
    /// The port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// The JWKS path under the issuer URL; None: the flavour's [`Flavor::jwks_path`].
    pub jwks_path: Option<String>,
    /// Generate every RSA key instead of taking the crate's fixed test keys first
    /// ([`Key::generate_fresh`]), so that issuers of different processes never share a key.
    pub fresh_keys: bool,
}

impl IssuerOptions {
    /// Options for a flavour, everything else default.
    pub fn new(flavor: Flavor) -> IssuerOptions {
        IssuerOptions { flavor, ..IssuerOptions::default() }
    }

    /// With this issuer path (e.g. `/api/actions`).
    #[must_use]
    pub fn path(mut self, path: &str) -> IssuerOptions {
        self.path = path.to_owned();
        self
    }

    /// With this first signing key.
    #[must_use]
    pub fn key(mut self, kind: KeyKind) -> IssuerOptions {
        self.key = Some(kind);
        self
    }

    /// On this port.
    #[must_use]
    pub fn port(mut self, port: u16) -> IssuerOptions {
        self.port = port;
        self
    }
}

/// Normalises a path to `""` or `/a/b` (leading slash, no trailing slash).
fn normalize_path(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

struct KeyEntry {
    key: Arc<Key>,
    published: bool,
}

struct Keys {
    all: Vec<KeyEntry>,
    signing: Arc<Key>,
}

struct Shared {
    flavor: Flavor,
    fresh_keys: bool,
    issuer: String,
    jwks_uri: String,
    keys: Mutex<Keys>,
    down: AtomicBool,
    discovery_count: AtomicU64,
    jwks_count: AtomicU64,
    discovery_delay: Mutex<Duration>,
    jwks_delay: Mutex<Duration>,
    discovery_patch: Mutex<Option<Value>>,
    jwks_body: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn jwks(&self) -> Value {
        let keys = lock(&self.keys);
        json!({"keys": keys.all.iter().filter(|e| e.published).map(|e| e.key.jwk()).collect::<Vec<_>>()})
    }

    fn discovery(&self) -> Value {
        let mut algs: Vec<&str> = Vec::new();
        for e in lock(&self.keys).all.iter().filter(|e| e.published) {
            if !algs.contains(&e.key.alg()) {
                algs.push(e.key.alg());
            }
        }
        let doc = json!({
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "id_token_signing_alg_values_supported": algs,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
        });
        match lock(&self.discovery_patch).clone() {
            Some(patch) => merge(doc, patch),
            None => doc,
        }
    }
}

fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn discovery(State(s): State<Arc<Shared>>) -> Response {
    s.discovery_count.fetch_add(1, Ordering::SeqCst);
    let delay = *lock(&s.discovery_delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if s.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "test issuer is down").into_response();
    }
    json_response(s.discovery().to_string())
}

async fn jwks(State(s): State<Arc<Shared>>) -> Response {
    s.jwks_count.fetch_add(1, Ordering::SeqCst);
    let delay = *lock(&s.jwks_delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if s.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "test issuer is down").into_response();
    }
    let body = lock(&s.jwks_body).clone();
    json_response(body.unwrap_or_else(|| s.jwks().to_string()))
}

/// What the accept loop should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Serve,
    Refuse,
    Stop,
}

/// A running OIDC issuer. Dropping it stops the server (in the background); [`TestIssuer::shutdown`]
/// waits for that.
pub struct TestIssuer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca: Option<TestCa>,
    control: watch::Sender<Mode>,
    applied: watch::Receiver<Result<Mode, String>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer").field("issuer", &self.shared.issuer).finish_non_exhaustive()
    }
}

impl TestIssuer {
    /// Starts an issuer over HTTP on 127.0.0.1.
    ///
    /// # Panics
    /// If the port cannot be bound.
    pub async fn start(opts: IssuerOptions) -> TestIssuer {
        TestIssuer::start_inner(opts, None).await
    }

    /// Starts an issuer over HTTPS on 127.0.0.1 with a freshly generated CA ([`TestIssuer::ca_pem`])
    /// and a server certificate for 127.0.0.1 and localhost.
    ///
    /// # Panics
    /// If the port cannot be bound.
    pub async fn start_https(opts: IssuerOptions) -> TestIssuer {
        TestIssuer::start_inner(opts, Some(TestCa::new())).await
    }

    async fn start_inner(opts: IssuerOptions, ca: Option<TestCa>) -> TestIssuer {
        let listener = match TcpListener::bind(("127.0.0.1", opts.port)).await {
            Ok(l) => l,
            Err(e) => panic!("test issuer cannot bind 127.0.0.1:{}: {e}", opts.port),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("test issuer has no local address: {e}"),
        };
        let scheme = if ca.is_some() { "https" } else { "http" };
        let path = normalize_path(&opts.path);
        let issuer = format!("{scheme}://{addr}{path}");
        let jwks_path = normalize_path(opts.jwks_path.as_deref().unwrap_or(opts.flavor.jwks_path()));
        let first = Arc::new(new_key(opts.flavor, opts.key.unwrap_or(opts.flavor.default_key()), opts.fresh_keys));
        let shared = Arc::new(Shared {
            flavor: opts.flavor,
            fresh_keys: opts.fresh_keys,
            jwks_uri: format!("{issuer}{jwks_path}"),
            issuer,
            keys: Mutex::new(Keys { all: vec![KeyEntry { key: first.clone(), published: true }], signing: first }),
            down: AtomicBool::new(false),
            discovery_count: AtomicU64::new(0),
            jwks_count: AtomicU64::new(0),
            discovery_delay: Mutex::new(Duration::ZERO),
            jwks_delay: Mutex::new(Duration::ZERO),
            discovery_patch: Mutex::new(None),
            jwks_body: Mutex::new(None),
        });
        let router = Router::new()
            .route(&format!("{path}/.well-known/openid-configuration"), get(discovery))
            .route(&format!("{path}{jwks_path}"), get(jwks))
            .with_state(shared.clone());
        let tls = ca.as_ref().map(|ca| TlsAcceptor::from(ca.server_config()));
        let (control, control_rx) = watch::channel(Mode::Serve);
        let (applied_tx, applied) = watch::channel(Ok(Mode::Serve));
        let task = tokio::spawn(run(listener, addr, tls, router, control_rx, applied_tx));
        TestIssuer { shared, addr, ca, control, applied, task: Some(task) }
    }

    /// The issuer URL (`iss`), e.g. `http://127.0.0.1:43123` or `https://127.0.0.1:43123/api/actions`.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// The socket address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The flavour.
    pub fn flavor(&self) -> Flavor {
        self.shared.flavor
    }

    /// `<issuer>/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.shared.issuer)
    }

    /// The JWKS URL advertised by discovery.
    pub fn jwks_uri(&self) -> String {
        self.shared.jwks_uri.clone()
    }

    /// The CA certificate (PEM) of an HTTPS issuer; None over HTTP.
    pub fn ca_pem(&self) -> Option<String> {
        self.ca.as_ref().map(|ca| ca.cert_pem().to_owned())
    }

    /// The public JWKS currently served (`{"keys": [...]}`), e.g. for a provider configured with
    /// static keys the way `kubectl get --raw /openid/v1/jwks` gives them.
    pub fn jwks_json(&self) -> String {
        self.shared.jwks().to_string()
    }

    /// The discovery document currently served.
    pub fn discovery_json(&self) -> String {
        self.shared.discovery().to_string()
    }

    /// Adds and publishes a new key (not the signing key; see [`TestIssuer::set_signing_key`]);
    /// returns its kid.
    pub fn add_key(&self, kind: KeyKind) -> String {
        self.insert_key(new_key(self.shared.flavor, kind, self.shared.fresh_keys))
    }

    /// Adds and publishes a key made by the caller (e.g. one whose kid collides with another's);
    /// returns its kid.
    pub fn insert_key(&self, key: Key) -> String {
        let kid = key.kid().to_owned();
        lock(&self.shared.keys).all.push(KeyEntry { key: Arc::new(key), published: true });
        kid
    }

    /// Rotation: a new key becomes the signing key and the previous signing key leaves the JWKS
    /// (its private key stays usable with [`TestIssuer::mint_with`]). Returns the new kid. To keep
    /// the old key published: `let kid = add_key(kind); set_signing_key(&kid);`.
    pub fn rotate(&self, kind: KeyKind) -> String {
        let key = Arc::new(new_key(self.shared.flavor, kind, self.shared.fresh_keys));
        let kid = key.kid().to_owned();
        let mut keys = lock(&self.shared.keys);
        let old = keys.signing.clone();
        for e in keys.all.iter_mut().filter(|e| Arc::ptr_eq(&e.key, &old)) {
            e.published = false;
        }
        keys.all.push(KeyEntry { key: key.clone(), published: true });
        keys.signing = key;
        kid
    }

    /// Makes a known key (published or not) the signing key of [`TestIssuer::mint`].
    ///
    /// # Panics
    /// If no key has this kid.
    pub fn set_signing_key(&self, kid: &str) {
        let key = self.key(kid).unwrap_or_else(|| panic!("the test issuer has no key {kid:?}"));
        lock(&self.shared.keys).signing = key;
    }

    /// Removes every key with this kid from the JWKS. Their private keys stay usable with
    /// [`TestIssuer::mint_with`], and a removed signing key still signs [`TestIssuer::mint`].
    pub fn remove_key(&self, kid: &str) {
        for e in lock(&self.shared.keys).all.iter_mut().filter(|e| e.key.kid() == kid) {
            e.published = false;
        }
    }

    /// Publishes again every key with this kid (after [`TestIssuer::remove_key`] or rotation).
    pub fn publish_key(&self, kid: &str) {
        for e in lock(&self.shared.keys).all.iter_mut().filter(|e| e.key.kid() == kid) {
            e.published = true;
        }
    }

    /// The kid of the signing key.
    pub fn signing_kid(&self) -> String {
        lock(&self.shared.keys).signing.kid().to_owned()
    }

    /// The signing key.
    pub fn signing_key(&self) -> Arc<Key> {
        lock(&self.shared.keys).signing.clone()
    }

    /// The first key with this kid, published or not.
    pub fn key(&self, kid: &str) -> Option<Arc<Key>> {
        lock(&self.shared.keys).all.iter().find(|e| e.key.kid() == kid).map(|e| e.key.clone())
    }

    /// The kids in the JWKS, in order.
    pub fn published_kids(&self) -> Vec<String> {
        lock(&self.shared.keys).all.iter().filter(|e| e.published).map(|e| e.key.kid().to_owned()).collect()
    }

    /// While down, discovery and JWKS answer 503 (the requests are still counted).
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// While refusing, the listener is closed (connections are refused) and open connections are
    /// cut; back to serving, the same port is bound again. Returns once the change is in effect.
    ///
    /// # Panics
    /// If the port cannot be bound again (another process took it), or the server has stopped.
    pub async fn set_refusing(&self, refuse: bool) {
        let want = if refuse { Mode::Refuse } else { Mode::Serve };
        self.control.send_replace(want);
        let mut applied = self.applied.clone();
        let state = applied.wait_for(|r| matches!(r, Ok(m) if *m == want) || r.is_err()).await;
        match state.as_deref() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("the test issuer's server has stopped"),
        }
    }

    /// Requests received so far: (discovery, JWKS), whatever their answer.
    pub fn fetch_count(&self) -> (u64, u64) {
        (self.shared.discovery_count.load(Ordering::SeqCst), self.shared.jwks_count.load(Ordering::SeqCst))
    }

    /// Sets both counters back to zero.
    pub fn reset_counts(&self) {
        self.shared.discovery_count.store(0, Ordering::SeqCst);
        self.shared.jwks_count.store(0, Ordering::SeqCst);
    }

    /// Delays every JWKS answer by `d` (a slow issuer, for fetch timeouts).
    pub fn set_jwks_delay(&self, d: Duration) {
        *lock(&self.shared.jwks_delay) = d;
    }

    /// Delays every discovery answer by `d`.
    pub fn set_discovery_delay(&self, d: Duration) {
        *lock(&self.shared.discovery_delay) = d;
    }

    /// Serves this text as the JWKS instead of the real one (broken JSON, a wrong shape, a key
    /// with a bad point...); None goes back to the real JWKS.
    pub fn set_jwks_body(&self, body: Option<String>) {
        *lock(&self.shared.jwks_body) = body;
    }

    /// Applies this RFC 7386 merge patch to the discovery document served (e.g. another `issuer`,
    /// another `jwks_uri`, other algorithms); None removes it.
    pub fn set_discovery_patch(&self, patch: Option<Value>) {
        *lock(&self.shared.discovery_patch) = patch;
    }

    /// The flavour's claim set for this issuer and audience at the current time
    /// ([`claims::preset`]); change fields with [`claims::merge`].
    pub fn claims(&self, aud: &str) -> Value {
        claims::preset(self.shared.flavor, &self.shared.issuer, aud, claims::now())
    }

    /// A token over `claims`, signed with the signing key and its algorithm; header
    /// `{"alg", "kid", "typ": "JWT"}` (+ `x5t` for the GitHub flavour).
    pub fn mint(&self, claims: Value) -> String {
        let key = self.signing_key();
        jws::sign(&key, key.alg(), Value::Null, &claims)
    }

    /// A token signed by the key `kid` (published or not) as `alg` (any name: see
    /// [`Key::sign`]), with `header_extra` merged into the header (RFC 7386: `null` removes,
    /// e.g. `{"kid": null}` or `{"kid": "unknown"}`).
    ///
    /// # Panics
    /// If no key has this kid.
    pub fn mint_with(&self, kid: &str, alg: &str, header_extra: Value, claims: Value) -> String {
        let key = self.key(kid).unwrap_or_else(|| panic!("the test issuer has no key {kid:?}"));
        jws::sign(&key, alg, header_extra, &claims)
    }

    /// Stops the server and waits until the port is closed.
    pub async fn shutdown(mut self) {
        self.control.send_replace(Mode::Stop);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.control.send_replace(Mode::Stop);
    }
}

/// A key for a flavour, with the flavour's kid shape.
fn new_key(flavor: Flavor, kind: KeyKind, fresh: bool) -> Key {
    let key = if fresh { Key::generate_fresh(kind) } else { Key::generate(kind) };
    match flavor {
        Flavor::GitHub => {
            let kid = uuid_kid(&key);
            key.with_kid(kid).with_self_signed_cert()
        }
        Flavor::Kubernetes => {
            let kid = key.spki_sha256();
            key.with_kid(kid)
        }
        Flavor::Generic | Flavor::GitLab | Flavor::Forgejo => key,
    }
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<TcpStream> {
    match listener {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

async fn rebind(addr: SocketAddr) -> Result<TcpListener, String> {
    let mut last = String::new();
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("test issuer cannot bind {addr} again: {last}"))
}

/// The accept loop: serves connections while [`Mode::Serve`], holds no listener while
/// [`Mode::Refuse`], and ends on [`Mode::Stop`] or when the [`TestIssuer`] is gone.
async fn run(
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    router: Router,
    mut control: watch::Receiver<Mode>,
    applied: watch::Sender<Result<Mode, String>>,
) {
    let mut listener = Some(listener);
    let mut conns = JoinSet::new();
    loop {
        let mode = *control.borrow_and_update();
        let outcome = match mode {
            Mode::Stop => break,
            Mode::Refuse => {
                listener = None;
                conns.abort_all();
                Ok(mode)
            }
            Mode::Serve if listener.is_none() => rebind(addr).await.map(|l| {
                listener = Some(l);
                mode
            }),
            Mode::Serve => Ok(mode),
        };
        let _previous = applied.send_replace(outcome);
        loop {
            tokio::select! {
                changed = control.changed() => {
                    if changed.is_err() {
                        conns.abort_all();
                        return;
                    }
                    break;
                }
                stream = accept(listener.as_ref()) => {
                    let Ok(stream) = stream else { continue };
                    let router = router.clone();
                    let tls = tls.clone();
                    conns.spawn(serve_connection(stream, tls, router));
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    }
    drop(listener);
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

async fn serve_connection(stream: TcpStream, tls: Option<TlsAcceptor>, router: Router) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(router);
    let builder = auto::Builder::new(TokioExecutor::new());
    match tls {
        Some(acceptor) => {
            if let Ok(stream) = acceptor.accept(stream).await {
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            }
        }
        None => {
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        }
    }
}
