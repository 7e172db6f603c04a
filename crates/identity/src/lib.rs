//! Who is calling. Local users with argon2 passwords ([`password`]), and the registry's own
//! short-lived signed tokens ([`token`]) that the Docker token flow hands out and `/v2` checks.
//! Federated OIDC tokens of CI jobs and Kubernetes pods become robot accounts in [`federation`].
//!
//! Architecture invariant: this crate decides identity only; what an identity may do is decided
//! by `berth-access`. Nothing here knows HTTP.

pub mod clock;
pub mod federation;
pub mod password;
pub mod token;

pub use federation::{FederatedIdentity, Federation, FederationError};
pub use token::{RegistryClaims, TokenError, TokenIssuer, TokenOrigin};

/// Compares two secrets (or their hashes) in time that does not depend on where they differ.
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// The unverified `iss` of a JWT, to tell registry tokens from federated ones before verifying
/// anything. None when the token is not a JWT with a string `iss`.
pub fn peek_issuer(token: &str) -> Option<String> {
    // The same strict decoding as verification (size limit, base64url, no duplicate members).
    let (_, claims) = berth_jose::peek_claims(token, &berth_jose::Limits::default()).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn jwt(header: &str, payload: &str) -> String {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.{}", b(header), b(payload), b("sig"))
    }

    #[test]
    fn peek_issuer_table() {
        let key = token::generate_signing_key().unwrap();
        let issuer = TokenIssuer::new(&key, "berth", "berth", std::time::Duration::from_secs(60)).unwrap();
        let own = issuer.issue("admin", PrincipalKind::User, vec![], None).unwrap().token;
        let h = r#"{"alg":"RS256","typ":"JWT"}"#;
        let cases: Vec<(String, Option<&str>)> = vec![
            (own, Some("berth")),
            (jwt(h, r#"{"iss":"https://token.actions.githubusercontent.com"}"#), Some("https://token.actions.githubusercontent.com")),
            (jwt(h, r#"{"sub":"x"}"#), None),
            (jwt(h, r#"{"iss":5}"#), None),
            (jwt(h, r#"{"iss":"a","iss":"b"}"#), None),
            ("not.a.jwt".into(), None),
            (format!("{}.{}.x", "e".repeat(20_000), "e"), None),
        ];
        for (token, want) in cases {
            assert_eq!(peek_issuer(&token).as_deref(), want, "{}", &token[..token.len().min(80)]);
        }
    }
}
