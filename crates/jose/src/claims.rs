//! Validation of a verified token's standard claims (RFC 7519 §4.1, RFC 8725 §3.8-3.10): the
//! exact issuer (one trailing slash tolerated), a required audience from a non-empty list, a
//! required `exp`, `nbf` and `iat` within a bounded clock skew, and a bounded lifetime. Time is
//! passed in; errors show times in UTC (RFC 3339) so a user can compare them with their clock.
//!
//! NumericDate values (`exp`, `nbf`, `iat`) must be non-negative JSON numbers; a fraction is
//! floored (RFC 7519 §2 allows non-integer values; the difference is under a second).

use std::time::Duration;

use serde_json::{Map, Value};

/// Default longest accepted token lifetime.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Default tolerated clock difference between the issuer and Berth.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// What an identity provider's tokens must satisfy.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    /// The configured issuer URL.
    pub issuer: &'a str,
    /// The token must carry one of these in `aud`. An empty list is an error, never "any".
    pub audiences: &'a [String],
    /// Longest accepted `exp - iat` (or `exp - nbf`, or `exp - now`).
    pub max_lifetime: Duration,
    pub clock_skew: Duration,
    /// Unix seconds.
    pub now: u64,
}

impl<'a> Policy<'a> {
    /// A policy with the default lifetime (24 h) and clock skew (60 s).
    pub fn new(issuer: &'a str, audiences: &'a [String], now: u64) -> Self {
        Policy { issuer, audiences, max_lifetime: DEFAULT_MAX_LIFETIME, clock_skew: DEFAULT_CLOCK_SKEW, now }
    }
}

/// The standard claims of a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandardClaims {
    pub iss: String,
    pub sub: Option<String>,
    pub aud: Vec<String>,
    pub exp: u64,
    pub nbf: Option<u64>,
    pub iat: Option<u64>,
    pub jti: Option<String>,
}

/// Why the standard claims are not acceptable. Times are shown in UTC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("issuer mismatch: expected {expected:?}, token has {got:?}")]
    IssuerMismatch { expected: String, got: String },
    #[error("audience mismatch: expected one of [{}], token has [{}]", .expected.join(", "), .got.join(", "))]
    AudienceMismatch { expected: Vec<String>, got: Vec<String> },
    #[error("token expired at {} (now {}, allowed clock skew {skew}s)", time(*.exp), time(*.now))]
    Expired { exp: u64, now: u64, skew: u64 },
    #[error("token not yet valid: not before {} (now {}, allowed clock skew {skew}s); check the clocks", time(*.nbf), time(*.now))]
    NotYetValid { nbf: u64, now: u64, skew: u64 },
    #[error("token issued in the future at {} (now {}, allowed clock skew {skew}s); check the clocks", time(*.iat), time(*.now))]
    IssuedInFuture { iat: u64, now: u64, skew: u64 },
    #[error("token lifetime {lifetime}s is longer than the identity provider allows ({max}s); long-lived tokens are refused")]
    LifetimeTooLong { lifetime: u64, max: u64 },
    #[error("the token has no {0:?} claim")]
    MissingClaim(&'static str),
    #[error("the {name:?} claim is invalid: {why}")]
    InvalidClaim { name: &'static str, why: String },
    /// A configuration error: an empty audience list never means "accept all".
    #[error("the identity provider has no audiences configured; refusing every token")]
    NoAudiencesConfigured,
}

impl ClaimsError {
    pub fn kind(&self) -> &'static str {
        match self {
            ClaimsError::IssuerMismatch { .. } => "issuer_mismatch",
            ClaimsError::AudienceMismatch { .. } => "audience_mismatch",
            ClaimsError::NoAudiencesConfigured => "no_audiences_configured",
            ClaimsError::Expired { .. } => "expired",
            ClaimsError::NotYetValid { .. } | ClaimsError::IssuedInFuture { .. } => "not_yet_valid",
            ClaimsError::LifetimeTooLong { .. } => "lifetime_too_long",
            ClaimsError::MissingClaim(_) | ClaimsError::InvalidClaim { .. } => "invalid_claims",
        }
    }
}

fn time(t: u64) -> String {
    i64::try_from(t)
        .ok()
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| t.to_string())
}

fn numeric(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, ClaimsError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                return Ok(Some(u));
            }
            match n.as_f64() {
                Some(f) if f >= 0.0 && f.is_finite() && f < 1e15 => Ok(Some(f.floor() as u64)),
                _ => Err(ClaimsError::InvalidClaim { name, why: format!("{n} is not a non-negative NumericDate") }),
            }
        }
        Some(other) => Err(ClaimsError::InvalidClaim { name, why: format!("{other} is not a number") }),
    }
}

fn string(claims: &Map<String, Value>, name: &'static str) -> Result<Option<String>, ClaimsError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ClaimsError::InvalidClaim { name, why: format!("{other} is not a string") }),
    }
}

fn trim_slash(s: &str) -> &str {
    s.strip_suffix('/').unwrap_or(s)
}

/// Validates the standard claims of a verified token against the provider's policy.
pub fn validate(claims: &Map<String, Value>, policy: &Policy<'_>) -> Result<StandardClaims, ClaimsError> {
    if policy.audiences.is_empty() {
        return Err(ClaimsError::NoAudiencesConfigured);
    }
    let iss = string(claims, "iss")?.ok_or(ClaimsError::MissingClaim("iss"))?;
    if trim_slash(&iss) != trim_slash(policy.issuer) {
        return Err(ClaimsError::IssuerMismatch { expected: policy.issuer.to_owned(), got: iss });
    }
    let aud: Vec<String> = match claims.get("aud") {
        None => return Err(ClaimsError::MissingClaim("aud")),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(ClaimsError::InvalidClaim { name: "aud", why: format!("entry {v} is not a string") }))
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(ClaimsError::InvalidClaim { name: "aud", why: format!("{other} is neither a string nor an array of strings") }),
    };
    if !aud.iter().any(|a| policy.audiences.contains(a)) {
        return Err(ClaimsError::AudienceMismatch { expected: policy.audiences.to_vec(), got: aud });
    }
    let skew = policy.clock_skew.as_secs();
    let now = policy.now;
    let exp = numeric(claims, "exp")?.ok_or(ClaimsError::MissingClaim("exp"))?;
    let nbf = numeric(claims, "nbf")?;
    let iat = numeric(claims, "iat")?;
    if now > exp.saturating_add(skew) {
        return Err(ClaimsError::Expired { exp, now, skew });
    }
    if let Some(nbf) = nbf {
        if now.saturating_add(skew) < nbf {
            return Err(ClaimsError::NotYetValid { nbf, now, skew });
        }
    }
    if let Some(iat) = iat {
        if now.saturating_add(skew) < iat {
            return Err(ClaimsError::IssuedInFuture { iat, now, skew });
        }
    }
    let start = iat.or(nbf).unwrap_or(now);
    let lifetime = exp.saturating_sub(start);
    if lifetime > policy.max_lifetime.as_secs() {
        return Err(ClaimsError::LifetimeTooLong { lifetime, max: policy.max_lifetime.as_secs() });
    }
    Ok(StandardClaims { iss, sub: string(claims, "sub")?, aud, exp, nbf, iat, jti: string(claims, "jti")? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISS: &str = "https://token.actions.githubusercontent.com";
    /// 2026-11-24T10:00:00Z
    const T: u64 = 1_795_514_400;

    fn base() -> Value {
        json!({"iss": ISS, "aud": "registry.example.com", "sub": "repo:org/app:ref:refs/heads/main", "jti": "j",
               "iat": T - 300, "nbf": T - 300, "exp": T})
    }

    /// `base()` with members replaced (null removes one).
    fn with(patch: Value) -> Map<String, Value> {
        let mut v = base();
        for (k, x) in patch.as_object().unwrap() {
            if x.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        v.as_object().unwrap().clone()
    }

    #[test]
    fn table() {
        let auds = vec!["registry.example.com".to_owned(), "other".to_owned()];
        let policy = |now| Policy { max_lifetime: Duration::from_secs(3600), ..Policy::new(ISS, &auds, now) };
        let cases: Vec<(&str, Value, u64, Result<(), &str>)> = vec![
            ("valid", json!({}), T - 60, Ok(())),
            ("trailing slash in the token", json!({"iss": format!("{ISS}/")}), T - 60, Ok(())),
            ("two trailing slashes", json!({"iss": format!("{ISS}//")}), T - 60, Err("issuer mismatch")),
            ("issuer prefix", json!({"iss": format!("{ISS}/x")}), T - 60, Err("issuer mismatch")),
            ("issuer case", json!({"iss": ISS.to_uppercase()}), T - 60, Err("issuer mismatch")),
            ("wrong issuer", json!({"iss": "https://gitlab.com"}), T - 60,
                Err("issuer mismatch: expected \"https://token.actions.githubusercontent.com\", token has \"https://gitlab.com\"")),
            ("issuer not a string", json!({"iss": 1}), T - 60, Err("the \"iss\" claim is invalid: 1 is not a string")),
            ("no iss", json!({"iss": null}), T - 60, Err("the token has no \"iss\" claim")),
            ("aud array, one matches", json!({"aud": ["sts.amazonaws.com", "other"]}), T - 60, Ok(())),
            ("wrong audience", json!({"aud": "sts.amazonaws.com"}), T - 60,
                Err("audience mismatch: expected one of [registry.example.com, other], token has [sts.amazonaws.com]")),
            ("empty aud array", json!({"aud": []}), T - 60, Err("audience mismatch: expected one of [registry.example.com, other], token has []")),
            ("aud prefix", json!({"aud": "registry.example.co"}), T - 60, Err("audience mismatch")),
            ("aud with a number", json!({"aud": ["registry.example.com", 5]}), T - 60, Err("entry 5 is not a string")),
            ("aud object", json!({"aud": {"a": 1}}), T - 60, Err("neither a string nor an array")),
            ("no aud", json!({"aud": null}), T - 60, Err("the token has no \"aud\" claim")),
            ("no exp", json!({"exp": null}), T - 60, Err("the token has no \"exp\" claim")),
            ("exp string", json!({"exp": "1795514400"}), T - 60, Err("\"1795514400\" is not a number")),
            ("exp negative", json!({"exp": -5}), T - 60, Err("-5 is not a non-negative NumericDate")),
            ("exp huge float", json!({"exp": 1e300}), T - 60, Err("is not a non-negative NumericDate")),
            ("exp fraction floored", json!({"exp": (T as f64) + 0.9}), T, Ok(())),
            ("exp fraction floored, past skew", json!({"exp": (T as f64) + 0.9}), T + 61, Err("expired")),
            ("nbf bool", json!({"nbf": true}), T - 60, Err("\"nbf\" claim is invalid")),
            ("exp exactly now", json!({}), T, Ok(())),
            ("expired within skew", json!({}), T + 60, Ok(())),
            ("expired past skew", json!({}), T + 61,
                Err("token expired at 2026-11-24T10:00:00Z (now 2026-11-24T10:01:01Z, allowed clock skew 60s)")),
            ("expired long ago", json!({}), T + 300,
                Err("token expired at 2026-11-24T10:00:00Z (now 2026-11-24T10:05:00Z, allowed clock skew 60s)")),
            ("nbf within skew", json!({"iat": null}), T - 360, Ok(())),
            ("nbf past skew", json!({"iat": null}), T - 361,
                Err("token not yet valid: not before 2026-11-24T09:55:00Z (now 2026-11-24T09:53:59Z, allowed clock skew 60s)")),
            ("iat within skew", json!({"nbf": null}), T - 360, Ok(())),
            ("iat in the future", json!({"nbf": null}), T - 361, Err("token issued in the future at 2026-11-24T09:55:00Z")),
            ("lifetime exactly max", json!({"iat": T - 3600, "nbf": null}), T - 60, Ok(())),
            ("lifetime from iat", json!({"iat": T - 3601, "nbf": T - 300}), T - 60,
                Err("token lifetime 3601s is longer than the identity provider allows (3600s)")),
            ("lifetime from nbf without iat", json!({"iat": null, "nbf": T - 3601}), T - 60, Err("lifetime 3601s")),
            ("lifetime from now without iat and nbf", json!({"iat": null, "nbf": null, "exp": T + 3601}), T, Err("lifetime 3601s")),
            ("short lifetime without iat and nbf", json!({"iat": null, "nbf": null}), T - 60, Ok(())),
        ];
        let mut failures = vec![];
        for (name, patch, now, want) in cases {
            let got = validate(&with(patch), &policy(now));
            match (&got, want) {
                (Ok(c), Ok(())) => assert_eq!((c.sub.as_deref(), c.jti.as_deref()), (Some("repo:org/app:ref:refs/heads/main"), Some("j")), "{name}"),
                (Err(e), Err(w)) if e.to_string().contains(w) => {}
                _ => failures.push(format!("{name}: got {got:?}, want {want:?}")),
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn configured_issuer_with_slash_and_results() {
        let auds = vec!["registry.example.com".to_owned()];
        let p = Policy::new("https://gitlab.com/", &auds, T - 60);
        assert_eq!((p.max_lifetime, p.clock_skew), (Duration::from_secs(86_400), Duration::from_secs(60)));
        let c = validate(&with(json!({"iss": "https://gitlab.com", "aud": ["registry.example.com", "x"]})), &p).unwrap();
        assert_eq!(
            c,
            StandardClaims {
                iss: "https://gitlab.com".into(),
                sub: Some("repo:org/app:ref:refs/heads/main".into()),
                aud: vec!["registry.example.com".into(), "x".into()],
                exp: T,
                nbf: Some(T - 300),
                iat: Some(T - 300),
                jti: Some("j".into()),
            }
        );
    }

    #[test]
    fn empty_audience_list_refuses_everything() {
        let p = Policy::new(ISS, &[], T - 60);
        let e = validate(&with(json!({})), &p).unwrap_err();
        assert_eq!(e, ClaimsError::NoAudiencesConfigured);
        assert_eq!(e.kind(), "no_audiences_configured");
    }

    #[test]
    fn kinds() {
        let e = ClaimsError::Expired { exp: T, now: T + 300, skew: 60 };
        assert_eq!(e.kind(), "expired");
        assert_eq!(ClaimsError::AudienceMismatch { expected: vec![], got: vec![] }.kind(), "audience_mismatch");
        assert_eq!(ClaimsError::MissingClaim("exp").kind(), "invalid_claims");
        assert_eq!(time(u64::MAX), u64::MAX.to_string());
    }
}
