//! Test support for Berth: [`TestIssuer`], a real OIDC issuer on 127.0.0.1 (HTTP, or HTTPS with
//! its own CA) that serves discovery and a JWKS and mints tokens with the claim sets of the seed
//! tokens of GitHub Actions, GitLab CI, Forgejo Actions and Kubernetes ([`claims`]).
//!
//! ```no_run
//! # async fn demo() {
//! use berth_testkit::{claims, Flavor, IssuerOptions, TestIssuer};
//! let issuer = TestIssuer::start(IssuerOptions::new(Flavor::GitHub)).await;
//! let token = issuer.mint(claims::merge(issuer.claims("registry.example.com"),
//!     serde_json::json!({"ref": "refs/heads/dev"})));
//! # let _ = token;
//! # }
//! ```
//!
//! The binary `berth-test-issuer` runs the same issuer for scripts (the benchmark) and mints
//! tokens from a state directory.

pub mod claims;
pub mod issuer;
pub mod jws;
pub mod keys;
pub mod tls;

pub use issuer::{Flavor, IssuerOptions, TestIssuer};
pub use keys::{Key, KeyKind};
pub use tls::TestCa;
