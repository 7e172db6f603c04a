//! Who is calling. Local users with argon2 passwords ([`password`]), and the registry's own
//! short-lived signed tokens ([`token`]) that the Docker token flow hands out and `/v2` checks.
//! Federated OIDC tokens of CI jobs and Kubernetes pods become robot accounts in [`federation`].
//!
//! Architecture invariant: this crate decides identity only; what an identity may do is decided
//! by `berth-access`. Nothing here knows HTTP.

pub mod federation;
pub mod password;
pub mod token;

pub use federation::{FederatedIdentity, Federation, FederationError};
pub use token::{RegistryClaims, TokenError, TokenIssuer, TokenOrigin};

/// The unverified `iss` of a JWT, to tell registry tokens from federated ones before verifying
/// anything. None when the token is not a JWT with a string `iss`.
pub fn peek_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let payload = token.split('.').nth(1)?;
    if payload.len() > 16 * 1024 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Iss>(&bytes).ok()?.iss
}

/// True if a password looks like a JWT (three base64url parts, a JSON header): such passwords are
/// verified as federated tokens, never as secrets.
pub fn looks_like_jwt(s: &str) -> bool {
    s.starts_with("eyJ") && s.split('.').count() == 3 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

/// The kind of a principal, carried in registry tokens and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    Anonymous,
    User,
    /// A robot account (static secret or federated token).
    Robot,
}

impl PrincipalKind {
    /// The kind as written in tokens, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Anonymous => "anonymous",
            PrincipalKind::User => "user",
            PrincipalKind::Robot => "robot",
        }
    }
}
