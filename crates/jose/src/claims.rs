//! Validation of a verified token's standard claims (RFC 7519 §4.1, RFC 8725 §3.8-3.10): exact
//! issuer (one trailing slash tolerated), a required audience, required `exp`, `nbf` and `iat`
//! within a bounded clock skew, and a bounded lifetime. Time is passed in.

use std::time::Duration;

use serde_json::{Map, Value};

/// What a provider accepts.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    pub issuer: &'a str,
    /// The token must carry one of these in `aud`. Never empty.
    pub audiences: &'a [String],
    /// Longest accepted `exp - iat` (or `exp - nbf`, or `exp - now`).
    pub max_lifetime: Duration,
    pub clock_skew: Duration,
    /// Unix seconds.
    pub now: u64,
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
    #[error("token expired at {} (now {}, allowed clock skew {skew}s); get a fresh token", time(*.exp), time(*.now))]
    Expired { exp: u64, now: u64, skew: u64 },
    #[error("token not yet valid: not before {} (now {}, allowed clock skew {skew}s); check the clocks", time(*.nbf), time(*.now))]
    NotYetValid { nbf: u64, now: u64, skew: u64 },
    #[error("token issued in the future at {} (now {}, allowed clock skew {skew}s); check the clocks", time(*.iat), time(*.now))]
    IssuedInFuture { iat: u64, now: u64, skew: u64 },
    #[error("token lifetime {lifetime}s is longer than the identity provider allows ({max}s); long-lived tokens are refused")]
    LifetimeTooLong { lifetime: u64, max: u64 },
    #[error("the token has no {0:?} claim")]
    Missing(&'static str),
    #[error("the {name:?} claim is invalid: {why}")]
    Invalid { name: &'static str, why: String },
    #[error("the identity provider has no audiences configured")]
    NoAudiencesConfigured,
}

impl ClaimsError {
    pub fn kind(&self) -> &'static str {
        match self {
            ClaimsError::IssuerMismatch { .. } => "issuer_mismatch",
            ClaimsError::AudienceMismatch { .. } | ClaimsError::NoAudiencesConfigured => "audience_mismatch",
            ClaimsError::Expired { .. } => "expired",
            ClaimsError::NotYetValid { .. } | ClaimsError::IssuedInFuture { .. } => "not_yet_valid",
            ClaimsError::LifetimeTooLong { .. } => "lifetime_too_long",
            ClaimsError::Missing(_) | ClaimsError::Invalid { .. } => "invalid_claims",
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
                _ => Err(ClaimsError::Invalid { name, why: format!("{n} is not a non-negative NumericDate") }),
            }
        }
        Some(other) => Err(ClaimsError::Invalid { name, why: format!("{other} is not a number") }),
    }
}

fn string(claims: &Map<String, Value>, name: &'static str) -> Result<Option<String>, ClaimsError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ClaimsError::Invalid { name, why: format!("{other} is not a string") }),
    }
}

fn trim_slash(s: &str) -> &str {
    s.strip_suffix('/').unwrap_or(s)
}

/// Validates the standard claims against the provider's policy.
pub fn validate(claims: &Map<String, Value>, policy: &Policy<'_>) -> Result<StandardClaims, ClaimsError> {
    let iss = string(claims, "iss")?.ok_or(ClaimsError::Missing("iss"))?;
    if trim_slash(&iss) != trim_slash(policy.issuer) {
        return Err(ClaimsError::IssuerMismatch { expected: policy.issuer.to_owned(), got: iss });
    }
    if policy.audiences.is_empty() {
        return Err(ClaimsError::NoAudiencesConfigured);
    }
    let aud: Vec<String> = match claims.get("aud") {
        None => return Err(ClaimsError::Missing("aud")),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(ClaimsError::Invalid { name: "aud", why: "has a non-string entry".into() }))
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(ClaimsError::Invalid { name: "aud", why: format!("{other} is neither a string nor an array") }),
    };
    if !aud.iter().any(|a| policy.audiences.contains(a)) {
        return Err(ClaimsError::AudienceMismatch { expected: policy.audiences.to_vec(), got: aud });
    }
    let skew = policy.clock_skew.as_secs();
    let now = policy.now;
    let exp = numeric(claims, "exp")?.ok_or(ClaimsError::Missing("exp"))?;
    if now > exp.saturating_add(skew) {
        return Err(ClaimsError::Expired { exp, now, skew });
    }
    let nbf = numeric(claims, "nbf")?;
    if let Some(nbf) = nbf {
        if now.saturating_add(skew) < nbf {
            return Err(ClaimsError::NotYetValid { nbf, now, skew });
        }
    }
    let iat = numeric(claims, "iat")?;
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

    #[test]
    fn table() {
        let auds = vec!["registry.example.com".to_owned()];
        let policy = |now| Policy {
            issuer: "https://token.actions.githubusercontent.com",
            audiences: &auds,
            max_lifetime: Duration::from_secs(3600),
            clock_skew: Duration::from_secs(60),
            now,
        };
        let base = json!({"iss": "https://token.actions.githubusercontent.com", "aud": "registry.example.com", "exp": 2000, "iat": 1000, "nbf": 1000, "sub": "s", "jti": "j"});
        let with = |patch: Value| {
            let mut v = base.clone();
            for (k, x) in patch.as_object().unwrap() {
                if x.is_null() {
                    v.as_object_mut().unwrap().remove(k);
                } else {
                    v[k] = x.clone();
                }
            }
            v.as_object().unwrap().clone()
        };
        let cases: Vec<(&str, Value, u64, Result<(), &str>)> = vec![
            ("valid", json!({}), 1500, Ok(())),
            ("trailing slash on token iss", json!({"iss": "https://token.actions.githubusercontent.com/"}), 1500, Ok(())),
            ("aud array", json!({"aud": ["x", "registry.example.com"]}), 1500, Ok(())),
            ("exp within skew", json!({}), 2060, Ok(())),
            ("expired past skew", json!({}), 2061, Err("expired at 1970-01-01T00:33:20Z")),
            ("nbf within skew", json!({}), 940, Ok(())),
            ("not yet valid", json!({"iat": 500}), 939, Err("not yet valid")),
            ("iat in future", json!({"nbf": null}), 900, Err("issued in the future")),
            ("wrong issuer", json!({"iss": "https://gitlab.com"}), 1500, Err("issuer mismatch: expected \"https://token.actions.githubusercontent.com\", token has \"https://gitlab.com\"")),
            ("issuer prefix", json!({"iss": "https://token.actions.githubusercontent.com/x"}), 1500, Err("issuer mismatch")),
            ("wrong audience", json!({"aud": ["sts.amazonaws.com"]}), 1500, Err("audience mismatch: expected one of [registry.example.com], token has [sts.amazonaws.com]")),
            ("no aud", json!({"aud": null}), 1500, Err("no \"aud\"")),
            ("no exp", json!({"exp": null}), 1500, Err("no \"exp\"")),
            ("exp string", json!({"exp": "2000"}), 1500, Err("not a number")),
            ("exp negative", json!({"exp": -5}), 1500, Err("NumericDate")),
            ("exp float", json!({"exp": 2000.7}), 1500, Ok(())),
            ("lifetime too long", json!({"exp": 5000}), 1500, Err("lifetime 4000s")),
            ("lifetime from nbf", json!({"iat": null, "exp": 4601, "nbf": 1000}), 1500, Err("lifetime 3601s")),
            ("lifetime from now", json!({"iat": null, "nbf": null, "exp": 5101}), 1500, Err("lifetime 3601s")),
            ("no iss", json!({"iss": null}), 1500, Err("no \"iss\"")),
            ("aud number", json!({"aud": 5}), 1500, Err("neither")),
        ];
        for (name, patch, now, want) in cases {
            let got = validate(&with(patch), &policy(now));
            match (got, want) {
                (Ok(c), Ok(())) => assert_eq!(c.sub.as_deref(), Some("s"), "{name}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
        let empty: Vec<String> = vec![];
        let p = Policy { audiences: &empty, ..policy(1500) };
        assert_eq!(validate(&with(json!({})), &p), Err(ClaimsError::NoAudiencesConfigured));
    }
}
