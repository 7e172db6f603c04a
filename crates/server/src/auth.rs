//! Authentication of requests: parse the `Authorization` header, verify registry tokens and
//! local users, and build the [`Caller`] whose permissions `/v2` checks. Also the 401 challenge.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_access::{Access, Action, ActionSet, Grant, Permissions, RepoPattern};
use berth_identity::{FederationError, PrincipalKind, RegistryClaims, TokenError, TokenOrigin};
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
    /// For federated robots: the login they came from (audit log).
    pub origin: Option<Arc<TokenOrigin>>,
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

/// What anonymous callers may do under the configured policy (public projects come on top).
pub fn anonymous_permissions(mode: AnonymousAccess) -> Permissions {
    let actions = match mode {
        AnonymousAccess::Off => return Permissions::default(),
        AnonymousAccess::Pull => ActionSet::of(&[Action::Pull]),
        AnonymousAccess::ReadWrite => ActionSet::ALL,
    };
    Permissions { grants: vec![Grant { repositories: RepoPattern::any(), actions }], admin: false }
}

/// Successful secret checks (user passwords, robot secrets), cached briefly so Basic auth on every
/// `/v2` request does not pay argon2 each time. Keyed by a SHA-256 of name and secret; never
/// stores the secret.
pub(crate) struct LoginCache {
    ttl: Duration,
    cache: quick_cache::sync::Cache<[u8; 32], (Instant, Arc<Principal>)>,
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

/// Someone who logged in.
#[derive(Debug, Clone)]
pub struct Principal {
    pub subject: String,
    pub kind: PrincipalKind,
    pub permissions: Permissions,
    pub origin: Option<Arc<TokenOrigin>>,
    /// Registry tokens issued for this login expire no later than this (robot expiry).
    pub not_after: Option<u64>,
}

/// Why a login failed.
#[derive(Debug)]
pub enum LoginError {
    /// Wrong name or secret, unknown or disabled account. The message is safe to send.
    Invalid(String),
    /// A federated token was refused.
    Federation(FederationError),
    /// Too many failures from this address or for this account.
    RateLimited { retry_after: u64, message: String },
    Internal(ApiError),
}

impl From<ApiError> for LoginError {
    fn from(e: ApiError) -> Self {
        LoginError::Internal(e)
    }
}

impl LoginError {
    pub fn message(&self) -> String {
        match self {
            LoginError::Invalid(m) => m.clone(),
            LoginError::Federation(e) => e.to_string(),
            LoginError::RateLimited { message, .. } => message.clone(),
            LoginError::Internal(e) => e.message.clone(),
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            LoginError::Invalid(_) => "invalid_credentials",
            LoginError::Federation(e) => e.kind(),
            LoginError::RateLimited { .. } => "rate_limited",
            LoginError::Internal(_) => "internal",
        }
    }
}

/// Failed-login limits (shared by replicas through the metadata store).
pub const LOGIN_WINDOW_SECS: i64 = 300;
pub const MAX_FAILURES_PER_ADDRESS: u32 = 30;
pub const MAX_FAILURES_PER_ACCOUNT: u32 = 10;

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn limiter_keys(account: &str, client: Option<IpAddr>) -> Vec<(String, u32, &'static str)> {
    let mut keys = vec![(format!("account:{account}"), MAX_FAILURES_PER_ACCOUNT, "for this account")];
    if let Some(ip) = client {
        keys.push((format!("addr:{ip}"), MAX_FAILURES_PER_ADDRESS, "from your address"));
    }
    keys
}

async fn check_rate_limit(state: &AppState, account: &str, client: Option<IpAddr>) -> Result<(), LoginError> {
    let now = unix_now();
    let window = now - now.rem_euclid(LOGIN_WINDOW_SECS);
    for (key, max, what) in limiter_keys(account, client) {
        let n = state.meta.login_failures(&key, window).await.map_err(ApiError::from)?;
        if n >= max {
            let retry_after = (window + LOGIN_WINDOW_SECS - now).max(1) as u64;
            metrics::counter!("berth_login_rate_limited_total").increment(1);
            return Err(LoginError::RateLimited {
                retry_after,
                message: format!("too many failed logins {what}; try again in {retry_after} s"),
            });
        }
    }
    Ok(())
}

async fn record_failure(state: &AppState, account: &str, client: Option<IpAddr>) {
    let now = unix_now();
    let window = now - now.rem_euclid(LOGIN_WINDOW_SECS);
    for (key, _, _) in limiter_keys(account, client) {
        if let Err(e) = state.meta.record_login_failure(&key, window).await {
            tracing::warn!(error = %e, "recording a failed login");
        }
    }
    metrics::counter!("berth_login_failures_total").increment(1);
}

/// Everyone may pull public projects.
async fn with_public(state: &AppState, p: Permissions) -> Permissions {
    match state.federation.public_pull().await {
        Ok(public) if !public.grants.is_empty() => p.union(public),
        Ok(_) => p,
        Err(e) => {
            tracing::warn!(error = %e, "loading public projects");
            p
        }
    }
}

async fn verify_secret(secret: String, hash: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || berth_identity::password::verify(&secret, &hash))
        .await
        .map_err(|e| ApiError::internal("verifying a password", e))
}

/// Logs in with Basic credentials: a federated OIDC token as the password (any user name, or a
/// robot's name to use only that robot), a robot's static secret, or a local user's password.
pub async fn login(state: &AppState, username: &str, password: &str, client: Option<IpAddr>) -> Result<Arc<Principal>, LoginError> {
    if berth_identity::looks_like_jwt(password) {
        if berth_identity::peek_issuer(password).as_deref() == Some(state.tokens.issuer()) {
            return registry_token_login(state, password);
        }
        return federated(state, password, Some(username)).await;
    }
    let key = LoginCache::key(username, password);
    if let Some((at, p)) = state.logins.cache.get(&key) {
        if at.elapsed() < state.logins.ttl {
            return Ok(p);
        }
    }
    check_rate_limit(state, username, client).await?;
    let principal = if username.starts_with(berth_access::robot::ROBOT_PREFIX) {
        robot_secret_login(state, username, password).await?
    } else {
        user_login(state, username, password).await?
    };
    match principal {
        Some(p) => {
            let p = Arc::new(p);
            state.logins.cache.insert(key, (Instant::now(), p.clone()));
            Ok(p)
        }
        None => {
            record_failure(state, username, client).await;
            Err(LoginError::Invalid("invalid username or password".into()))
        }
    }
}

async fn user_login(state: &AppState, username: &str, password: &str) -> Result<Option<Principal>, ApiError> {
    let Some(user) = state.meta.get_user(username).await? else {
        // Same work as a wrong password, so timing does not tell which names exist.
        let _ = verify_secret(password.to_owned(), DUMMY_HASH.clone()).await;
        return Ok(None);
    };
    if !verify_secret(password.to_owned(), user.password_hash.clone()).await? {
        return Ok(None);
    }
    let permissions = if user.admin { Permissions::admin() } else { anonymous_permissions(state.config.anonymous) };
    Ok(Some(Principal {
        subject: username.to_owned(),
        kind: PrincipalKind::User,
        permissions: with_public(state, permissions).await,
        origin: None,
        not_after: None,
    }))
}

/// An argon2id hash of a random string, verified against when the account does not exist.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| berth_identity::password::hash(&berth_identity::password::generate()).unwrap_or_default());

async fn robot_secret_login(state: &AppState, name: &str, secret: &str) -> Result<Option<Principal>, LoginError> {
    let Some(robot) = state.meta.get_robot(name).await.map_err(ApiError::from)? else {
        let _ = verify_secret(secret.to_owned(), DUMMY_HASH.clone()).await;
        return Ok(None);
    };
    let Some(hash) = robot.secret_hash.clone() else {
        return Err(LoginError::Invalid(format!(
            "robot {name} is federated: it logs in with an OIDC token of identity provider {:?} as the password, never with a secret",
            robot.identity_provider.as_deref().unwrap_or("?")
        )));
    };
    if !verify_secret(secret.to_owned(), hash).await? {
        return Ok(None);
    }
    if robot.disabled {
        return Err(LoginError::Invalid(format!("robot {name} is disabled")));
    }
    let now = unix_now();
    if robot.expires_at.is_some_and(|e| e <= now) {
        return Err(LoginError::Invalid(format!("robot {name} has expired")));
    }
    let permissions = berth_identity::federation::compile_permissions(&robot)
        .map_err(|e| LoginError::Internal(ApiError::internal("loading a robot's permissions", e)))?;
    Ok(Some(Principal {
        subject: name.to_owned(),
        kind: PrincipalKind::Robot,
        permissions: with_public(state, permissions).await,
        origin: None,
        not_after: robot.expires_at.map(|e| e.max(0) as u64),
    }))
}

/// A registry token as the password (the kubelet plugin's exchange mode): it may be traded for a
/// token with at most its own access, expiring no later than it does.
fn registry_token_login(state: &AppState, token: &str) -> Result<Arc<Principal>, LoginError> {
    let claims = state.tokens.verify(token).map_err(|e| LoginError::Invalid(e.to_string()))?;
    Ok(Arc::new(Principal {
        subject: claims.sub.clone(),
        kind: claims.kind,
        permissions: berth_access::permissions_from_access(&claims.access),
        origin: claims.origin.clone().map(Arc::new),
        not_after: Some(claims.exp),
    }))
}

/// Logs in with a federated OIDC token.
pub async fn federated(state: &AppState, token: &str, login: Option<&str>) -> Result<Arc<Principal>, LoginError> {
    let id = state.federation.authenticate(token, login).await.map_err(LoginError::Federation)?;
    let origin = TokenOrigin {
        idp: id.provider.clone(),
        robots: id.robots.clone(),
        sub: id.subject.clone(),
        jti: id.jti.clone(),
        claims: id.audit_claims.clone(),
    };
    Ok(Arc::new(Principal {
        subject: id.robots.join(","),
        kind: PrincipalKind::Robot,
        permissions: with_public(state, id.permissions.clone()).await,
        origin: Some(Arc::new(origin)),
        not_after: None,
    }))
}

/// Logs a refused login and records it in the audit log.
pub fn audit_login_failure(state: &AppState, username: Option<&str>, err: &LoginError, client: Option<IpAddr>) {
    let provider = match err {
        LoginError::Federation(e) => e.provider().map(str::to_owned),
        _ => None,
    };
    tracing::warn!(user = username.unwrap_or(""), kind = err.kind(), provider = provider.as_deref().unwrap_or(""), client = ?client, "login refused: {}", err.message());
    metrics::counter!("berth_logins_total", "result" => "denied", "reason" => err.kind()).increment(1);
    state.audit.record(berth_meta::AuditEvent {
        id: 0,
        time_ms: crate::audit::now_ms(),
        action: "login".into(),
        result: "denied".into(),
        principal: username.unwrap_or("").to_owned(),
        robots: vec![],
        provider,
        subject: None,
        jti: None,
        claims: None,
        repository: None,
        reference: None,
        client: client.map(|c| c.to_string()),
        message: Some(err.message()),
    });
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

fn caller_from(p: &Principal) -> Caller {
    Caller { subject: p.subject.clone(), kind: p.kind, grants: Grants::Permissions(p.permissions.clone()), origin: p.origin.clone() }
}

/// Authenticates a `/v2` request: a registry token or a federated OIDC token as Bearer, Basic
/// credentials (password, robot secret, or an OIDC token as the password), or nothing.
pub async fn authenticate(state: &AppState, base: &str, creds: Credentials, client: Option<IpAddr>) -> Result<Caller, ApiError> {
    match creds {
        Credentials::None => Ok(Caller {
            subject: "anonymous".into(),
            kind: PrincipalKind::Anonymous,
            grants: Grants::Permissions(with_public(state, anonymous_permissions(state.config.anonymous)).await),
            origin: None,
        }),
        Credentials::Bearer(token) => {
            let registry = match berth_identity::peek_issuer(&token) {
                Some(iss) => iss == state.tokens.issuer(),
                None => true,
            };
            if registry {
                return match state.tokens.verify(&token) {
                    Ok(claims) => Ok(Caller {
                        subject: claims.sub.clone(),
                        kind: claims.kind,
                        origin: claims.origin.clone().map(Arc::new),
                        grants: Grants::Token(claims),
                    }),
                    Err(TokenError::Expired) => Err(challenge(state, base, None, Some("invalid_token"), "the registry token has expired; log in again or request a new token")),
                    Err(e) => Err(challenge(state, base, None, Some("invalid_token"), &e.to_string())),
                };
            }
            match federated(state, &token, None).await {
                Ok(p) => Ok(caller_from(&p)),
                Err(e) => {
                    audit_login_failure(state, None, &e, client);
                    Err(login_challenge(state, base, &e))
                }
            }
        }
        // A registry token as the password (the kubelet plugin's exchange mode, any user name).
        Credentials::Basic { password, .. }
            if berth_identity::looks_like_jwt(&password)
                && berth_identity::peek_issuer(&password).as_deref() == Some(state.tokens.issuer()) =>
        {
            match state.tokens.verify(&password) {
                Ok(claims) => Ok(Caller {
                    subject: claims.sub.clone(),
                    kind: claims.kind,
                    origin: claims.origin.clone().map(Arc::new),
                    grants: Grants::Token(claims),
                }),
                Err(e) => Err(challenge(state, base, None, Some("invalid_token"), &e.to_string())),
            }
        }
        Credentials::Basic { username, password } => match login(state, &username, &password, client).await {
            Ok(p) => Ok(caller_from(&p)),
            Err(e) => {
                audit_login_failure(state, Some(&username), &e, client);
                Err(login_challenge(state, base, &e))
            }
        },
    }
}

/// The `/v2` answer to a failed login.
pub fn login_challenge(state: &AppState, base: &str, e: &LoginError) -> ApiError {
    match e {
        LoginError::Internal(_) => ApiError::internal("logging in", e.message()),
        LoginError::RateLimited { retry_after, message } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyRequests, message.clone())
            .with_header(http::header::RETRY_AFTER, retry_after.to_string()),
        LoginError::Federation(_) => challenge(state, base, None, Some("invalid_token"), &e.message()),
        LoginError::Invalid(m) => challenge(state, base, None, None, m),
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
