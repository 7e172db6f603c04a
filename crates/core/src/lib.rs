//! Berth's application core. It owns what Berth does, over the stores and without HTTP:
//! registry workflows, authentication (any presented credential becomes a principal; rate
//! limits; caches that follow the store's generation), authorization through `berth-access`,
//! the audit log, the admin commands as typed request/answer pairs, and garbage collection.
//!
//! Architecture invariants:
//! - No HTTP: this crate depends on no HTTP server crate (a test checks its dependency tree).
//!   `berth-server` (HTTP), the CLI and the UI are translation layers over it.
//! - One error type, [`Error`]; each wire format maps it in one place.

pub mod admin;
pub use berth_identity::clock;
pub mod audit;
pub mod backends;
pub mod auth;
pub mod error;
pub mod gc;
pub mod migrate;
pub mod limits;
pub mod people;
pub mod registry;
pub mod text;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use berth_blob::BlobStore;
use berth_identity::{Federation, TokenIssuer};
use berth_meta::MetadataStore;

pub use error::{Error, Result};
pub use limits::Limits;

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

/// Settings of the application (the HTTP layer has its own on top).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The `service` of the token flow and the registry token's audience.
    pub service: String,
    pub anonymous: AnonymousAccess,
    /// What a client can make Berth spend.
    pub limits: Limits,
    /// Answer authorised blob GETs with a redirect to a URL of the blob store valid this long
    /// (`storage.redirect`), when the store has such URLs (S3); None: Berth sends the bytes.
    pub blob_redirect: Option<std::time::Duration>,
    /// People's credentials: lifetimes and bounds.
    pub people: people::PeopleConfig,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            service: "berth".into(),
            anonymous: AnonymousAccess::Off,
            limits: Limits::default(),
            blob_redirect: None,
            people: people::PeopleConfig::default(),
        }
    }
}

/// The application: the stores, the token issuer, federation, the audit writer and the
/// per-process caches (all rebuildable, all following the store's generation). Translation
/// layers (HTTP, CLI, UI) hold an `Arc<Core>` and call its commands; none of them touches a
/// store.
pub struct Core {
    pub(crate) meta: Arc<dyn MetadataStore>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) tokens: Arc<TokenIssuer>,
    pub(crate) federation: Arc<Federation>,
    pub(crate) audit: audit::AuditSink,
    pub(crate) config: CoreConfig,
    pub(crate) logins: auth::LoginCache,
    pub(crate) password_gate: auth::PasswordGate,
    /// Whether a registry token's principal is still enabled, per store generation.
    pub(crate) revocations: quick_cache::sync::Cache<(i64, berth_identity::PrincipalKind, String), bool>,
    /// When this process last recorded each Berth token's use (at most once a minute).
    pub(crate) touched: quick_cache::sync::Cache<String, std::time::Instant>,
}

impl Core {
    /// Builds the application over its stores. Must run inside a Tokio runtime (it starts the
    /// audit writer).
    pub fn new(meta: Arc<dyn MetadataStore>, blobs: Arc<dyn BlobStore>, tokens: Arc<TokenIssuer>, config: CoreConfig) -> Arc<Core> {
        Arc::new(Core {
            password_gate: auth::PasswordGate::new(&config.limits),
            revocations: quick_cache::sync::Cache::new(10_000),
            touched: quick_cache::sync::Cache::new(10_000),
            federation: Federation::new(meta.clone()),
            audit: audit::AuditSink::start(meta.clone()),
            logins: auth::LoginCache::new(Duration::from_secs(60)),
            meta,
            blobs,
            tokens,
            config,
        })
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The registry's token issuer (signing and verifying Berth's own tokens).
    pub fn tokens(&self) -> &TokenIssuer {
        &self.tokens
    }

    /// The audit writer.
    pub fn audit(&self) -> &audit::AuditSink {
        &self.audit
    }

    /// Federation: identity providers, robots and their compiled rules.
    pub fn federation(&self) -> &Federation {
        &self.federation
    }

    /// Readiness: each store answers (checked at once, each within `timeout`). An error is the
    /// store's own one-line message, for the log; `/readyz` shows only which store failed.
    pub async fn ready(&self, timeout: std::time::Duration) -> Readiness {
        async fn within<E: std::fmt::Display>(
            what: &str,
            timeout: std::time::Duration,
            check: impl std::future::Future<Output = std::result::Result<(), E>>,
        ) -> std::result::Result<(), String> {
            match tokio::time::timeout(timeout, check).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("{what}: no answer within {} s", timeout.as_secs_f64())),
            }
        }
        let (metadata, storage) =
            tokio::join!(within("metadata store", timeout, self.meta.ping()), within("blob storage", timeout, self.blobs.ping()));
        Readiness { metadata, storage }
    }
}

/// What [`Core::ready`] found.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub metadata: std::result::Result<(), String>,
    pub storage: std::result::Result<(), String>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.metadata.is_ok() && self.storage.is_ok()
    }
}
