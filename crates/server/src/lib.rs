//! The HTTP API of Berth: the OCI distribution API under `/v2`, the Docker token endpoint
//! `/service/token`, the admin API under `/api/v1` (projects, robots, identity providers, audit,
//! token explain, apply), Prometheus `/metrics`, and `/healthz` + `/readyz`.
//!
//! Architecture invariant: this is the only crate that serves HTTP, and it is a translation layer
//! over `berth-core`: handlers parse the request into the validated types of `berth-oci` and a
//! core command, call the core (which authenticates, authorizes through `berth-access` and owns
//! the stores: no file here touches a store), and turn the outcome into a response. Statuses and
//! wire error codes are decided only in [`error`].

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use berth_blob::BlobStore;
use berth_core::{Core, CoreConfig};
use berth_identity::{Federation, TokenIssuer};
use berth_meta::MetadataStore;

pub mod api;
pub mod auth;
pub mod error;
pub mod ops;
pub mod people;
pub mod registry;
pub mod serve;
pub mod token;
pub mod ui;

pub use berth_core::{audit, limits, text, AnonymousAccess, Limits};
pub use serve::{serve, serve_with, TlsFiles};

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
    /// Redirect authorised blob GETs to presigned URLs of the blob store valid this long.
    pub blob_redirect: Option<std::time::Duration>,
    /// People's credentials: lifetimes and bounds (`[tokens]`).
    pub people: berth_core::people::PeopleConfig,
    /// Garbage collection's settings (`[gc]`), for the web UI's "run now".
    pub gc: berth_core::gc::GcSettings,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            external_url: None,
            service: "berth".into(),
            anonymous: AnonymousAccess::Off,
            tls: false,
            limits: Limits::default(),
            blob_redirect: None,
            people: berth_core::people::PeopleConfig::default(),
            gc: berth_core::gc::GcSettings::default(),
        }
    }
}

/// Everything a handler may use: the application core, and what only HTTP needs.
pub struct AppState {
    pub core: Arc<Core>,
    pub config: ServerConfig,
    pub(crate) metrics: ops::Metrics,
    /// The last garbage collection run from the web UI by this process (time, outcome).
    pub(crate) last_gc: std::sync::Mutex<Option<(String, Result<berth_core::gc::GcSummary, String>)>>,
}

impl AppState {
    /// Builds the state. Must run inside a Tokio runtime (the core starts the audit writer).
    pub fn new(meta: Arc<dyn MetadataStore>, blobs: Arc<dyn BlobStore>, tokens: Arc<TokenIssuer>, config: ServerConfig) -> Arc<AppState> {
        let core = Core::new(
            meta,
            blobs,
            tokens,
            CoreConfig {
                service: config.service.clone(),
                anonymous: config.anonymous,
                limits: config.limits.clone(),
                blob_redirect: config.blob_redirect,
                people: config.people.clone(),
            },
        );
        Arc::new(AppState { core, config, metrics: ops::Metrics::get(), last_gc: std::sync::Mutex::new(None) })
    }

    /// The audit writer.
    pub fn audit(&self) -> &audit::AuditSink {
        self.core.audit()
    }

    /// Federation: identity providers, robots and their compiled rules.
    pub fn federation(&self) -> &Federation {
        self.core.federation()
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
        .nest("/auth", people::router())
        .merge(ui::router())
        .route("/metrics", get(ops::metrics_for_admins))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .layer(axum::middleware::from_fn(ops::track))
        .with_state(state)
}
