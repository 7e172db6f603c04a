//! Strict JWS verification for the federated OIDC tokens of CI jobs and Kubernetes pods
//! (RFC 7515, 7517, 7518, 7519, 8037), hardened per RFC 8725:
//! - compact serialization only, strict base64url, a size limit, JSON with no duplicate members;
//! - `alg` from an allow-list AND compatible with the key (key type, curve, the key's own `alg`),
//!   which defeats RS/HS confusion; `none` and HMAC are never accepted;
//! - keys only from the configured key set: `jku`, `x5u`, `jwk`, `x5c` and `crit` are refused;
//! - RSA keys of 2048-8192 bits with a sane exponent and not ROCA-weak; EC points on their curve.
//!
//! Signatures are checked with aws-lc-rs directly (jsonwebtoken, used for Berth's own tokens,
//! lacks ES512 and does not refuse duplicate JSON members). [`claims`] validates the standard
//! claims. Pure: no IO and no clock (time is passed in).

pub mod claims;
mod json;
mod jwk;

use base64::Engine as _;

pub use jwk::{parse_jwk_set, Jwk, JwkSet, KeyType, SkippedKey};

/// Supported signature algorithms (all asymmetric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
    EdDSA,
}

impl Algorithm {
    pub const ALL: [Algorithm; 10] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::ES512,
        Algorithm::EdDSA,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::ES512 => "ES512",
            Algorithm::EdDSA => "EdDSA",
        }
    }
    /// The key type this algorithm needs.
    pub fn key_type(self) -> KeyType {
        match self {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512 => KeyType::Rsa,
            Algorithm::ES256 => KeyType::EcP256,
            Algorithm::ES384 => KeyType::EcP384,
            Algorithm::ES512 => KeyType::EcP521,
            Algorithm::EdDSA => KeyType::Ed25519,
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an algorithm name is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadAlgorithm {
    None,
    Hmac(String),
    Unknown(String),
}

impl std::str::FromStr for Algorithm {
    type Err = BadAlgorithm;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(a) = Algorithm::ALL.iter().find(|a| a.as_str() == s) {
            return Ok(*a);
        }
        if s.eq_ignore_ascii_case("none") {
            return Err(BadAlgorithm::None);
        }
        if s.to_ascii_uppercase().starts_with("HS") {
            return Err(BadAlgorithm::Hmac(s.to_owned()));
        }
        Err(BadAlgorithm::Unknown(s.to_owned()))
    }
}

/// Why a token was refused. Each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("the token is larger than {0} bytes")]
    TooLarge(usize),
    #[error("algorithm \"none\" is never accepted: the token is unsigned")]
    AlgorithmNone,
    #[error("algorithm {0} is not allowed: HMAC is never accepted for federated tokens (it needs a shared secret)")]
    Hmac(String),
    #[error("algorithm {0:?} is not supported")]
    UnknownAlgorithm(String),
    #[error("algorithm {alg} is not allowed for this identity provider (allowed: {allowed})")]
    AlgorithmNotAllowed { alg: String, allowed: String },
    #[error("token header parameter {0:?} is refused: Berth never uses keys named or embedded in a token, only the identity provider's configured keys")]
    ForbiddenHeader(String),
    #[error("token header marks {0:?} as critical; Berth understands no JWS extensions")]
    Critical(String),
    #[error("unknown key id {kid:?} (the identity provider's keys have: {known})")]
    UnknownKid { kid: String, known: String },
    #[error("key id {0:?} appears more than once in the identity provider's keys; refusing the ambiguous key")]
    AmbiguousKid(String),
    #[error("no key of the identity provider fits algorithm {0}")]
    NoCompatibleKey(String),
    #[error("the key {kid:?} cannot verify {alg}: {why}")]
    KeyMismatch { kid: String, alg: String, why: String },
    #[error("bad signature: the token was not signed by the identity provider's keys, or was modified")]
    BadSignature,
    #[error("claims: {0}")]
    Claims(String),
}

impl JoseError {
    /// A short machine-readable name (metrics, audit log).
    pub fn kind(&self) -> &'static str {
        match self {
            JoseError::Malformed(_) | JoseError::Claims(_) => "malformed",
            JoseError::TooLarge(_) => "too_large",
            JoseError::AlgorithmNone | JoseError::Hmac(_) | JoseError::UnknownAlgorithm(_) | JoseError::AlgorithmNotAllowed { .. } => {
                "algorithm_not_allowed"
            }
            JoseError::ForbiddenHeader(_) | JoseError::Critical(_) => "forbidden_header",
            JoseError::UnknownKid { .. } => "unknown_kid",
            JoseError::AmbiguousKid(_) | JoseError::NoCompatibleKey(_) | JoseError::KeyMismatch { .. } => "no_usable_key",
            JoseError::BadSignature => "bad_signature",
        }
    }
}

/// Size limits for untrusted tokens.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest accepted compact token, in bytes.
    pub max_token_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_token_bytes: 16 * 1024 }
    }
}

/// A decoded JOSE header.
#[derive(Debug, Clone)]
pub struct Header {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub typ: Option<String>,
    /// The whole header as sent (for explain).
    pub raw: serde_json::Value,
}

/// A decoded, not yet verified token.
#[derive(Debug, Clone)]
pub struct Unverified {
    pub header: Header,
    pub payload: Vec<u8>,
    signing_input: String,
    signature: Vec<u8>,
}

/// A verified token.
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: Header,
    pub payload: Vec<u8>,
    /// The `kid` of the key that verified it (if the key has one).
    pub kid: Option<String>,
}

/// Strict base64url without padding (RFC 7515 §2): no `=`, no `+`/`/`, no whitespace, and no
/// non-zero trailing bits.
pub fn b64url_decode(what: &str, s: &str) -> Result<Vec<u8>, JoseError> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(false),
    );
    engine.decode(s).map_err(|e| JoseError::Malformed(format!("{what} is not base64url without padding: {e}")))
}

const FORBIDDEN_HEADERS: [&str; 4] = ["jku", "x5u", "jwk", "x5c"];

fn parse_header(bytes: &[u8]) -> Result<Header, JoseError> {
    let raw = json::parse_strict(bytes).map_err(|e| JoseError::Malformed(format!("header: {e}")))?;
    let obj = raw.as_object().ok_or_else(|| JoseError::Malformed("header is not a JSON object".into()))?;
    let alg = match obj.get("alg") {
        Some(serde_json::Value::String(a)) => a.parse::<Algorithm>().map_err(|e| match e {
            BadAlgorithm::None => JoseError::AlgorithmNone,
            BadAlgorithm::Hmac(a) => JoseError::Hmac(a),
            BadAlgorithm::Unknown(a) => JoseError::UnknownAlgorithm(a),
        })?,
        Some(_) => return Err(JoseError::Malformed("header alg is not a string".into())),
        None => return Err(JoseError::Malformed("header has no alg".into())),
    };
    for h in FORBIDDEN_HEADERS {
        if obj.contains_key(h) {
            return Err(JoseError::ForbiddenHeader(h.into()));
        }
    }
    if let Some(crit) = obj.get("crit") {
        return Err(JoseError::Critical(crit.to_string()));
    }
    if obj.get("b64").is_some() {
        return Err(JoseError::Critical("b64".into()));
    }
    let string = |name: &str| -> Result<Option<String>, JoseError> {
        match obj.get(name) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(JoseError::Malformed(format!("header {name} is not a string"))),
        }
    };
    Ok(Header { alg, kid: string("kid")?, typ: string("typ")?, raw })
}

/// Decodes a compact JWS without verifying it.
pub fn decode(token: &str, limits: &Limits) -> Result<Unverified, JoseError> {
    let token = token.trim();
    if token.len() > limits.max_token_bytes {
        return Err(JoseError::TooLarge(limits.max_token_bytes));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JoseError::Malformed("a JWS in compact form has exactly three dot-separated parts".into()));
    };
    let header = parse_header(&b64url_decode("header", h)?)?;
    let payload = b64url_decode("payload", p)?;
    let signature = b64url_decode("signature", s)?;
    if signature.is_empty() {
        return Err(JoseError::Malformed("the signature is empty".into()));
    }
    Ok(Unverified { header, payload, signing_input: format!("{h}.{p}"), signature })
}

/// Decodes header and claims without verifying anything (routing by `iss`; explain).
pub fn peek_claims(token: &str, limits: &Limits) -> Result<(Header, serde_json::Map<String, serde_json::Value>), JoseError> {
    let u = decode(token, limits)?;
    let claims = parse_claims(&u.payload)?;
    Ok((u.header, claims))
}

/// Parses a JWT claims set: a JSON object with no duplicate member names at any depth.
pub fn parse_claims(payload: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, JoseError> {
    match json::parse_strict(payload).map_err(|e| JoseError::Claims(e.to_string()))? {
        serde_json::Value::Object(m) => Ok(m),
        _ => Err(JoseError::Claims("the claims set is not a JSON object".into())),
    }
}

/// Verifies a decoded token with a key set and an algorithm allow-list.
pub fn verify(token: &Unverified, keys: &JwkSet, allowed: &[Algorithm]) -> Result<Verified, JoseError> {
    let alg = token.header.alg;
    if !allowed.contains(&alg) {
        return Err(JoseError::AlgorithmNotAllowed {
            alg: alg.to_string(),
            allowed: allowed.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", "),
        });
    }
    let candidates: Vec<&Jwk> = match &token.header.kid {
        Some(kid) => {
            let same: Vec<&Jwk> = keys.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)).collect();
            if same.is_empty() {
                let known: Vec<&str> = keys.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
                return Err(JoseError::UnknownKid {
                    kid: kid.clone(),
                    known: if known.is_empty() { "no key ids".into() } else { known.join(", ") },
                });
            }
            if same.len() > 1 || keys.duplicate_kids.contains(kid) {
                return Err(JoseError::AmbiguousKid(kid.clone()));
            }
            let k = same[0];
            k.check_alg(alg)?;
            vec![k]
        }
        None => {
            let fit: Vec<&Jwk> = keys.keys.iter().filter(|k| k.check_alg(alg).is_ok()).take(16).collect();
            if fit.is_empty() {
                return Err(JoseError::NoCompatibleKey(alg.to_string()));
            }
            fit
        }
    };
    for k in candidates {
        if k.verify_signature(alg, token.signing_input.as_bytes(), &token.signature) {
            return Ok(Verified { header: token.header.clone(), payload: token.payload.clone(), kid: k.kid.clone() });
        }
    }
    Err(JoseError::BadSignature)
}
