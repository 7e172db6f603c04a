//! Strict JWS verification for the federated OIDC tokens of CI jobs and Kubernetes pods (GitHub
//! Actions, GitLab CI, Forgejo, Kubernetes service accounts): RFC 7515/7517/7518/7519/8037,
//! hardened per RFC 8725.
//!
//! - [`decode`]: compact serialization only, a size limit ([`Limits`]), strict base64url, a header
//!   that is a JSON object with unique members; `none` and HMAC never parse; `jku`, `x5u`, `jwk`,
//!   `x5c`, `crit` and `b64` are refused (keys come only from the configured key set).
//! - [`parse_jwk_set`]: keys parsed one by one; weak or unusable keys are skipped with a reason
//!   ([`JwkSet::skipped`]): RSA of 2048-8192 bits with a sane exponent and no ROCA fingerprint, EC
//!   points on their curve, Ed25519.
//! - [`verify`]: the header's `alg` must be in the provider's allow-list AND fit the key (key type,
//!   curve, the key's own `alg`), which defeats algorithm confusion; signatures are checked with
//!   aws-lc-rs, whose parsed keys are cached in each [`Jwk`].
//! - [`parse_claims`]: the payload as a JSON object, duplicate members refused at any depth;
//!   [`claims::validate`] checks `iss`, `aud`, `exp`, `nbf`, `iat` and the lifetime.
//!
//! We use aws-lc-rs directly rather than jsonwebtoken (Berth's own tokens use it): it lacks ES512,
//! takes the last of duplicate JSON members, and hides the header checks we must control.
//! Pure: no IO and no clock (time is passed in).

pub mod claims;

mod alg;
mod error;
mod json;
mod jwk;
mod jws;

pub use alg::{Algorithm, AlgorithmError, Curve, KeyType, OkpCurve};
pub use error::JoseError;
pub use json::MAX_DEPTH;
pub use jwk::{parse_jwk_set, Jwk, JwkSet, SkippedKey, RSA_MAX_BITS, RSA_MIN_BITS};
pub use jws::{
    b64url_decode, decode, parse_claims, peek_claims, verify, verify_signature, Header, Limits, Unverified, Verified,
    MAX_KEYS_WITHOUT_KID,
};
