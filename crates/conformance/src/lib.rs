//! Black-box conformance checker for the OCI distribution-spec v1.1.
//!
//! It talks to a registry only over HTTP, the way a client would, and checks the behaviours the
//! official conformance suite (opencontainers/distribution-spec, `conformance/`) checks, grouped
//! in its four workflow categories: pull, push, content discovery and content management. Every
//! check is recorded in a [`Report`] as passed or failed with a reason; nothing is skipped
//! silently. The registry may be anonymous, use HTTP Basic, or use the Docker token flow.
//!
//! ```no_run
//! # async fn demo() {
//! let report = berth_conformance::run(berth_conformance::Config::default()).await;
//! println!("{}", report.summary_line());
//! # }
//! ```

pub mod auth;
mod checks;
pub mod client;
pub mod data;
pub mod report;

pub use report::{Category, CheckResult, Report};

/// What to test and how to reach it.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL of the registry, e.g. `http://127.0.0.1:5000`.
    pub url: String,
    /// Repository the checks push to and pull from (several path components are fine).
    pub namespace: String,
    /// Second repository, the target of cross-repository blob mounts.
    pub cross_mount_namespace: String,
    /// User for HTTP Basic or for the token endpoint.
    pub username: Option<String>,
    /// Password for HTTP Basic or for the token endpoint.
    pub password: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: "http://127.0.0.1:5000".to_string(),
            namespace: "conformance/berth/main".to_string(),
            cross_mount_namespace: "conformance/berth/mount-target".to_string(),
            username: None,
            password: None,
        }
    }
}

/// Runs every check against the registry in `cfg` and returns what passed and what failed.
///
/// Never panics on registry misbehaviour: a transport error or an unexpected answer is a failed
/// check with its reason. Content the checks push is deleted again at the end of each category
/// (where the registry allows deletes).
pub async fn run(cfg: Config) -> Report {
    checks::run_all(cfg).await
}
