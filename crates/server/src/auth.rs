//! Authentication of requests: parse the `Authorization` header, verify registry tokens and
//! local users, and build the [`Caller`] whose permissions `/v2` checks. Also the 401 challenge.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_access::{Access, Action, ActionSet, Grant, Permissions, RepoPattern};
use berth_identity::{PrincipalKind, RegistryClaims, TokenError};
use berth_oci::ErrorCode;
use http::{HeaderMap, StatusCode};

use crate::error::ApiError;
use crate::{AnonymousAccess, AppState};

/// Credentials as presented.
#[derive(Debug)]
pub enum Credentials {
    None,
    Basic { username: String, password: String },
    Bearer(String),
}

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

/// What an authenticated caller may do.
#[derive(Debug, Clone)]
pub enum Grants {
    /// A registry token: exactly its `access` entries.
    Token(Arc<RegistryClaims>),
    /// Direct credentials: the principal's whole permissions.
    Permissions(Permissions),
}

/// The caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: String,
    pub kind: PrincipalKind,
    pub grants: Grants,
}

impl Caller {
    pub fn actions_on(&self, repo: &str) -> ActionSet {
        match &self.grants {
            Grants::Token(c) => berth_access::token_allows(&c.access, repo),
            Grants::Permissions(p) => p.on(repo),
        }
    }
    pub fn allows(&self, repo: &str, action: Action) -> bool {
        self.actions_on(repo).contains(action)
    }
    /// Whether the caller may list every repository (else the catalog is filtered).
    pub fn full_catalog(&self) -> bool {
        match &self.grants {
            Grants::Token(c) => berth_access::token_allows_catalog(&c.access),
            Grants::Permissions(p) => p.admin,
        }
    }
    pub fn is_token(&self) -> bool {
        matches!(self.grants, Grants::Token(_))
    }
}

/// What anonymous callers may do under the configured policy.
pub fn anonymous_permissions(mode: AnonymousAccess) -> Permissions {
    let actions = match mode {
        AnonymousAccess::Off => return Permissions::default(),
        AnonymousAccess::Pull => ActionSet::of(&[Action::Pull]),
        AnonymousAccess::ReadWrite => ActionSet::ALL,
    };
    Permissions { grants: vec![Grant { repositories: RepoPattern::any(), actions }], admin: false }
}

/// Successful password checks, cached briefly so Basic auth on every `/v2` request does not pay
/// argon2 each time. Keyed by a SHA-256 of user and password; never stores the password.
pub(crate) struct LoginCache {
    ttl: Duration,
    cache: quick_cache::sync::Cache<[u8; 32], (Instant, bool)>,
}

impl LoginCache {
    pub fn new(ttl: Duration) -> LoginCache {
        LoginCache { ttl, cache: quick_cache::sync::Cache::new(10_000) }
    }
    fn key(username: &str, password: &str) -> [u8; 32] {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(username.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }
}

/// Checks a local user's password. Returns the user's permissions, or None for wrong credentials.
pub async fn check_user(state: &AppState, username: &str, password: &str) -> Result<Option<Permissions>, ApiError> {
    let key = LoginCache::key(username, password);
    let anon = anonymous_permissions(state.config.anonymous);
    if let Some((at, admin)) = state.logins.cache.get(&key) {
        if at.elapsed() < state.logins.ttl {
            return Ok(Some(if admin { Permissions::admin() } else { anon }));
        }
    }
    let Some(user) = state.meta.get_user(username).await? else {
        return Ok(None);
    };
    let pw = password.to_owned();
    let hash = user.password_hash.clone();
    let ok = tokio::task::spawn_blocking(move || berth_identity::password::verify(&pw, &hash))
        .await
        .map_err(|e| ApiError::internal("verifying a password", e))?;
    if !ok {
        return Ok(None);
    }
    state.logins.cache.insert(key, (Instant::now(), user.admin));
    Ok(Some(if user.admin { Permissions::admin() } else { anon }))
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

/// Authenticates a `/v2` request.
pub async fn authenticate(state: &AppState, base: &str, creds: Credentials) -> Result<Caller, ApiError> {
    match creds {
        Credentials::None => Ok(Caller {
            subject: "anonymous".into(),
            kind: PrincipalKind::Anonymous,
            grants: Grants::Permissions(anonymous_permissions(state.config.anonymous)),
        }),
        Credentials::Bearer(token) => match state.tokens.verify(&token) {
            Ok(claims) => Ok(Caller { subject: claims.sub.clone(), kind: claims.kind, grants: Grants::Token(claims) }),
            Err(TokenError::Expired) => Err(challenge(state, base, None, Some("invalid_token"), "the registry token has expired; log in again or request a new token")),
            Err(e) => Err(challenge(state, base, None, Some("invalid_token"), &e.to_string())),
        },
        Credentials::Basic { username, password } => match check_user(state, &username, &password).await? {
            Some(perms) => Ok(Caller { subject: username, kind: PrincipalKind::User, grants: Grants::Permissions(perms) }),
            None => Err(challenge(state, base, None, None, "invalid username or password")),
        },
    }
}

/// A 401 with the Bearer challenge that starts the Docker token flow.
pub fn challenge(state: &AppState, base: &str, scope: Option<&Access>, error: Option<&str>, message: &str) -> ApiError {
    let realm = format!("{base}/service/token");
    challenge_with_realm(&realm, &state.config.service, scope, error, message)
}

pub(crate) fn challenge_with_realm(realm: &str, service: &str, scope: Option<&Access>, error: Option<&str>, message: &str) -> ApiError {
    let mut value = format!("Bearer realm=\"{realm}\",service=\"{service}\"");
    if let Some(s) = scope {
        value.push_str(&format!(",scope=\"{}:{}:{}\"", s.kind, s.name, s.actions.join(",")));
    }
    if let Some(e) = error {
        value.push_str(&format!(",error=\"{e}\""));
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
        let e = challenge_with_realm("http://h/service/token", "berth", Some(&scope), Some("insufficient_scope"), "m");
        let (_, v) = &e.headers[0];
        assert_eq!(v, r#"Bearer realm="http://h/service/token",service="berth",scope="repository:a/b:pull,push",error="insufficient_scope""#);
    }
}
