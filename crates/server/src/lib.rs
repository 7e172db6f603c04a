//! The HTTP API of Berth: the OCI distribution API under `/v2`, the Docker token endpoint
//! `/service/token`, the admin API under `/api/v1` (projects, robots, identity providers, audit,
//! token explain, apply), Prometheus `/metrics`, and `/healthz` + `/readyz`.
//!
//! Architecture invariant: this is the only crate that knows HTTP. Handlers are thin: they parse
//! the request into the validated types of `berth-oci`, ask `berth-access` whether the caller may
//! act, call the stores, and turn the outcome into a response. Statuses and wire error codes are
//! decided only in [`error`].

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use berth_blob::BlobStore;
use berth_identity::{Federation, TokenIssuer};
use berth_meta::MetadataStore;

pub mod api;
pub mod audit;
pub mod auth;
pub mod error;
pub mod limits;
pub mod ops;
pub mod registry;
pub mod serve;
pub mod text;
pub mod token;

pub use limits::Limits;
pub use serve::{serve, serve_with, TlsFiles};

/// Who may use the registry without credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnonymousAccess {
    /// Every request needs credentials (the default).
    #[default]
    Off,
    /// Anyone may pull from every repository.
    Pull,
    /// Anyone may pull, push and delete everywhere (benchmarks and throwaway test registries only).
    ReadWrite,
}

impl AnonymousAccess {
    /// The mode as written in the configuration (`off`, `pull`, `read-write`).
    pub fn as_str(self) -> &'static str {
        match self {
            AnonymousAccess::Off => "off",
            AnonymousAccess::Pull => "pull",
            AnonymousAccess::ReadWrite => "read-write",
        }
    }
}

/// Settings the HTTP layer needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The URL clients reach Berth at, without a trailing slash (`http://127.0.0.1:5000`). When
    /// None, URLs are built from the request's Host header.
    pub external_url: Option<String>,
    /// The `service` of the token flow and the registry token's audience.
    pub service: String,
    pub anonymous: AnonymousAccess,
    /// Whether Berth itself terminates TLS (for URLs built from the Host header).
    pub tls: bool,
    /// What a client can make Berth spend.
    pub limits: Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { external_url: None, service: "berth".into(), anonymous: AnonymousAccess::Off, tls: false, limits: Limits::default() }
    }
}

/// Everything a handler may use. Stores are trait objects so backends can be swapped.
pub struct AppState {
    pub meta: Arc<dyn MetadataStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub tokens: Arc<TokenIssuer>,
    pub federation: Arc<Federation>,
    pub audit: audit::AuditSink,
    pub config: ServerConfig,
    pub(crate) logins: auth::LoginCache,
    pub(crate) password_gate: auth::PasswordGate,
    /// Whether a registry token's principal is still enabled, per store generation.
    pub(crate) revocations: quick_cache::sync::Cache<(i64, berth_identity::PrincipalKind, String), bool>,
    pub(crate) metrics: ops::Metrics,
}

impl AppState {
    /// Builds the state. Must run inside a Tokio runtime (it starts the audit writer).
    pub fn new(meta: Arc<dyn MetadataStore>, blobs: Arc<dyn BlobStore>, tokens: Arc<TokenIssuer>, config: ServerConfig) -> Arc<AppState> {
        Arc::new(AppState {
            password_gate: auth::PasswordGate::new(&config.limits),
            revocations: quick_cache::sync::Cache::new(10_000),
            federation: Federation::new(meta.clone()),
            audit: audit::AuditSink::start(meta.clone()),
            meta,
            blobs,
            tokens,
            config,
            logins: auth::LoginCache::new(Duration::from_secs(60)),
            metrics: ops::Metrics::get(),
        })
    }
}

/// `/metrics` (and the health endpoints) without authentication, for a separate listener that
/// only Prometheus reaches (`metrics_listen`).
pub fn metrics_app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .with_state(state)
}

/// The whole HTTP application. Tests call it in-process with `oneshot`, the binary serves it.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v2", axum::routing::any(registry::dispatch))
        .route("/v2/", axum::routing::any(registry::dispatch))
        .route("/v2/{*rest}", axum::routing::any(registry::dispatch))
        .route(
            "/service/token",
            get(token::get_token).post(token::post_token).layer(axum::extract::DefaultBodyLimit::max(token::FORM_LIMIT)),
        )
        .nest("/api/v1", api::router())
        .route("/metrics", get(ops::metrics_for_admins))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .layer(axum::middleware::from_fn(ops::track))
        .with_state(state)
}
