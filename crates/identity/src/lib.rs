//! Who is calling. Local users with argon2 passwords ([`password`]), and the registry's own
//! short-lived signed tokens ([`token`]) that the Docker token flow hands out and `/v2` checks.
//! Federated OIDC issuers join here (issue 3).
//!
//! Architecture invariant: this crate decides identity only; what an identity may do is decided
//! by `berth-access`. Nothing here knows HTTP.

pub mod password;
pub mod token;

pub use token::{RegistryClaims, TokenError, TokenIssuer};

/// The kind of a principal, carried in registry tokens and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    Anonymous,
    User,
}
