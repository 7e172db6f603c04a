//! Why a token or a key was refused: [`JoseError`], one variant per cause, each with a message a
//! user can act on and a stable machine-readable [`JoseError::kind`] for metrics and audit logs.

use crate::{Algorithm, AlgorithmError};

/// Why a token, a key set or a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    /// Not a compact JWS / JWK set: wrong number of parts, bad base64url, bad or duplicate JSON.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// A JWK set that is not JSON, or not `{"keys": [...]}` or one JWK object. (Bad keys inside a
    /// good set are skipped, not errors.)
    #[error("malformed JWK set: {0}")]
    MalformedKeySet(String),
    #[error("the token is {len} bytes, more than the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("algorithm {0:?} is never accepted: the token would be unsigned")]
    AlgorithmNone(String),
    #[error("algorithm {0} is not allowed: HMAC is never accepted for federated tokens")]
    Hmac(String),
    #[error("algorithm {0:?} is not supported (supported: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA)")]
    UnsupportedAlgorithm(String),
    #[error("algorithm {alg} is not allowed for this identity provider (allowed: {})", list(allowed))]
    AlgorithmNotAllowed { alg: Algorithm, allowed: Vec<Algorithm> },
    /// `jku` or `x5u` (RFC 8725 §3.10): fetching a key the token names would let anyone sign.
    #[error("token header names a key URL ({0}); Berth never fetches keys named by a token")]
    KeyUrlHeader(&'static str),
    /// `jwk` or `x5c`: a key carried by the token itself proves nothing.
    #[error("token header embeds a key ({0}); Berth never uses keys embedded in a token, only the identity provider's keys")]
    EmbeddedKeyHeader(&'static str),
    #[error("token header marks extensions as critical (crit: {0}); Berth understands no JWS extensions")]
    Critical(String),
    #[error("token header sets b64 (RFC 7797 unencoded payload); Berth accepts only base64url-encoded payloads")]
    UnencodedPayload,
    /// The token's `kid` is not in the key set: the identity provider may have rotated its keys,
    /// so the caller may refetch the key set once.
    #[error("unknown key id {kid:?} (the identity provider's keys have: {})", if known.is_empty() { "no key ids".to_owned() } else { known.join(", ") })]
    UnknownKid { kid: String, known: Vec<String> },
    #[error("key id {0:?} appears more than once in the identity provider's keys; refusing the ambiguous key")]
    AmbiguousKid(String),
    /// The token's `kid` names a key of the set that was skipped when the set was parsed.
    #[error("the identity provider's key {kid:?} is not usable: {reason}")]
    UnusableKey { kid: String, reason: String },
    #[error("the key {} ({key}) cannot verify {alg}: {why}", kid.as_deref().unwrap_or("without kid"))]
    KeyMismatch { kid: Option<String>, key: String, alg: Algorithm, why: String },
    #[error("no key of the identity provider can verify {alg} (keys: {})", if keys.is_empty() { "none".to_owned() } else { keys.join("; ") })]
    NoCompatibleKey { alg: Algorithm, keys: Vec<String> },
    /// A key that cannot be used at all (too short, off its curve, ...).
    #[error("unusable key: {0}")]
    BadKey(String),
    #[error("bad signature: the token was not signed by the identity provider's keys, or was modified")]
    BadSignature,
    /// The payload is not a JSON object with unique member names.
    #[error("malformed claims: {0}")]
    Claims(String),
}

fn list(algs: &[Algorithm]) -> String {
    if algs.is_empty() {
        return "none".into();
    }
    algs.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
}

impl JoseError {
    /// A short stable name for metrics labels and audit logs.
    pub fn kind(&self) -> &'static str {
        match self {
            JoseError::Malformed(_) => "malformed",
            JoseError::MalformedKeySet(_) => "malformed_jwks",
            JoseError::TooLarge { .. } => "too_large",
            JoseError::AlgorithmNone(_) => "alg_none",
            JoseError::Hmac(_) => "alg_hmac",
            JoseError::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            JoseError::AlgorithmNotAllowed { .. } => "algorithm_not_allowed",
            JoseError::KeyUrlHeader(_) | JoseError::EmbeddedKeyHeader(_) => "forbidden_header",
            JoseError::Critical(_) | JoseError::UnencodedPayload => "unsupported_extension",
            JoseError::UnknownKid { .. } => "unknown_kid",
            JoseError::AmbiguousKid(_) => "ambiguous_kid",
            JoseError::UnusableKey { .. } | JoseError::BadKey(_) => "unusable_key",
            JoseError::KeyMismatch { .. } | JoseError::NoCompatibleKey { .. } => "key_mismatch",
            JoseError::BadSignature => "bad_signature",
            JoseError::Claims(_) => "malformed_claims",
        }
    }
}

impl From<AlgorithmError> for JoseError {
    fn from(e: AlgorithmError) -> Self {
        match e {
            AlgorithmError::None(a) => JoseError::AlgorithmNone(a),
            AlgorithmError::Hmac(a) => JoseError::Hmac(a),
            AlgorithmError::Unknown(a) => JoseError::UnsupportedAlgorithm(a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let cases: Vec<(JoseError, &str, &str)> = vec![
            (JoseError::Hmac("HS256".into()), "algorithm HS256 is not allowed: HMAC is never accepted for federated tokens", "alg_hmac"),
            (
                JoseError::AlgorithmNotAllowed { alg: Algorithm::RS256, allowed: vec![Algorithm::ES256, Algorithm::EdDSA] },
                "algorithm RS256 is not allowed for this identity provider (allowed: ES256, EdDSA)",
                "algorithm_not_allowed",
            ),
            (
                JoseError::UnknownKid { kid: "abc".into(), known: vec!["k1".into(), "k2".into()] },
                "unknown key id \"abc\" (the identity provider's keys have: k1, k2)",
                "unknown_kid",
            ),
            (JoseError::UnknownKid { kid: "abc".into(), known: vec![] }, "unknown key id \"abc\" (the identity provider's keys have: no key ids)", "unknown_kid"),
            (JoseError::BadSignature, "bad signature: the token was not signed by the identity provider's keys, or was modified", "bad_signature"),
            (JoseError::KeyUrlHeader("jku"), "token header names a key URL (jku); Berth never fetches keys named by a token", "forbidden_header"),
            (JoseError::AlgorithmNone("none".into()), "algorithm \"none\" is never accepted: the token would be unsigned", "alg_none"),
            (
                JoseError::KeyMismatch { kid: Some("k1".into()), key: "EC P-256".into(), alg: Algorithm::RS256, why: "it is an EC P-256 key".into() },
                "the key k1 (EC P-256) cannot verify RS256: it is an EC P-256 key",
                "key_mismatch",
            ),
            (JoseError::TooLarge { len: 20000, max: 16384 }, "the token is 20000 bytes, more than the limit of 16384 bytes", "too_large"),
        ];
        for (e, msg, kind) in cases {
            assert_eq!(e.to_string(), msg);
            assert_eq!(e.kind(), kind, "{msg}");
        }
    }
}
