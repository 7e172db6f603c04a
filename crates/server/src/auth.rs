//! Authentication of requests: parse the `Authorization` header, verify registry tokens and
//! local users (in `berth_core::auth`), and answer refusals with the 401 challenge.

use std::net::IpAddr;

use base64::Engine as _;
use berth_access::Access;
use berth_oci::ErrorCode;
use http::{HeaderMap, StatusCode};

pub use berth_core::auth::{
    anonymous_permissions, audit_login_failure, federated, login, still_current, AuthError, Caller, Credentials, Grants, LoginError, Principal,
    BUSY_MESSAGE, INVALID_CREDENTIALS,
};

use crate::error::ApiError;
use crate::AppState;

/// Parses the `Authorization` header. Anything malformed is a 401, not a 400, so that clients
/// restart the auth flow.
pub fn parse_authorization(headers: &HeaderMap) -> Result<Credentials, ApiError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(Credentials::None);
    };
    let bad = || ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, "malformed Authorization header; use Basic or Bearer");
    let value = value.to_str().map_err(|_| bad())?;
    let (scheme, rest) = value.split_once(' ').ok_or_else(bad)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credentials::Bearer(rest.to_owned()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD.decode(rest).map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let (username, password) = text.split_once(':').ok_or_else(bad)?;
        return Ok(Credentials::Basic { username: username.to_owned(), password: password.to_owned() });
    }
    Err(bad())
}

/// The URL clients reach Berth at: the configured external URL, else built from the Host header.
pub fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.config.external_url {
        return u.clone();
    }
    let host = headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:5000");
    let scheme = if state.config.tls { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// Authenticates a `/v2` request (see [`berth_core::auth::authenticate`]); a refusal becomes the
/// 401 challenge (or 429/503) of the Docker token flow.
pub async fn authenticate(state: &AppState, base: &str, creds: Credentials, client: Option<IpAddr>) -> Result<Caller, ApiError> {
    berth_core::auth::authenticate(&state.core, creds, client).await.map_err(|e| match e {
        AuthError::Token(m) => challenge(state, base, None, Some("invalid_token"), &m),
        AuthError::Login(e) => login_challenge(state, base, &e),
    })
}

/// The `/v2` answer to a failed login.
pub fn login_challenge(state: &AppState, base: &str, e: &LoginError) -> ApiError {
    match e {
        LoginError::Internal(e) => ApiError::from_core(e),
        LoginError::RateLimited { retry_after, message } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyRequests, message.clone())
            .with_header(http::header::RETRY_AFTER, retry_after.to_string()),
        LoginError::Busy => busy(),
        LoginError::Federation(_) => challenge(state, base, None, Some("invalid_token"), &e.message()),
        LoginError::Invalid(m) => challenge(state, base, None, None, m),
    }
}

/// 503 with `Retry-After` when every password-check slot is busy.
pub fn busy() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::TooManyRequests, BUSY_MESSAGE).with_header(http::header::RETRY_AFTER, "1")
}

/// A 401 with the Bearer challenge that starts the Docker token flow.
pub fn challenge(state: &AppState, base: &str, scope: Option<&Access>, error: Option<&str>, message: &str) -> ApiError {
    challenge_scopes(state, base, scope.map(std::slice::from_ref).unwrap_or_default(), error, message)
}

/// A 401 Bearer challenge asking for several scopes at once (space-separated in one `scope`
/// parameter, as distribution does).
pub fn challenge_scopes(state: &AppState, base: &str, scopes: &[Access], error: Option<&str>, message: &str) -> ApiError {
    let realm = format!("{base}/service/token");
    challenge_with_realm(&realm, &state.config.service, scopes, error, message)
}

/// A quoted-string parameter value (RFC 9110 §5.6.4): no control characters, `"` and `\`
/// escaped, capped.
fn quoted(s: &str) -> String {
    crate::text::cap(s, 300).replace('\\', "\\\\").replace('"', "\\\"")
}

pub(crate) fn challenge_with_realm(realm: &str, service: &str, scopes: &[Access], error: Option<&str>, message: &str) -> ApiError {
    let mut value = format!("Bearer realm=\"{realm}\",service=\"{service}\"");
    if !scopes.is_empty() {
        let scope: Vec<String> = scopes.iter().map(|s| format!("{}:{}:{}", s.kind, s.name, s.actions.join(","))).collect();
        value.push_str(&format!(",scope=\"{}\"", scope.join(" ")));
    }
    if let Some(e) = error {
        // RFC 6750's error_description: clients that print the challenge show Berth's reason.
        value.push_str(&format!(",error=\"{e}\",error_description=\"{}\"", quoted(message)));
    }
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message).with_header(http::header::WWW_AUTHENTICATE, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn authorization_header_table() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(matches!(parse_authorization(&HeaderMap::new()), Ok(Credentials::None)));
        assert!(matches!(parse_authorization(&headers("Bearer abc")), Ok(Credentials::Bearer(t)) if t == "abc"));
        assert!(matches!(parse_authorization(&headers("bearer abc")), Ok(Credentials::Bearer(_))));
        match parse_authorization(&headers(&format!("Basic {}", b64("u:p:w")))) {
            Ok(Credentials::Basic { username, password }) => assert_eq!((username.as_str(), password.as_str()), ("u", "p:w")),
            other => panic!("{other:?}"),
        }
        for bad in ["Basic !!!", "Digest x", "Bearer", &format!("Basic {}", b64("nocolon"))] {
            let e = parse_authorization(&headers(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{bad}");
        }
    }

    #[test]
    fn challenge_format() {
        let scope = Access { kind: "repository".into(), name: "a/b".into(), actions: vec!["pull".into(), "push".into()] };
        let e = challenge_with_realm("http://h/service/token", "berth", std::slice::from_ref(&scope), Some("insufficient_scope"), "m");
        let (_, v) = &e.headers[0];
        assert_eq!(
            v,
            r#"Bearer realm="http://h/service/token",service="berth",scope="repository:a/b:pull,push",error="insufficient_scope",error_description="m""#
        );
        let from = Access { kind: "repository".into(), name: "c".into(), actions: vec!["pull".into()] };
        let e = challenge_with_realm("r", "s", &[scope, from], Some("invalid_token"), "say \"no\"\n\\");
        let (_, v) = &e.headers[0];
        assert_eq!(v, r#"Bearer realm="r",service="s",scope="repository:a/b:pull,push repository:c:pull",error="invalid_token",error_description="say \"no\"?\\""#);
    }
}
