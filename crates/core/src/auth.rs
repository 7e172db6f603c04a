//! Authentication: any presented credential becomes a [`Principal`] (who) and a [`Caller`]
//! (what it may do). Registry tokens, federated OIDC tokens (as Bearer or as a Basic password),
//! robot secrets and local users' passwords; failed-login limits shared through the store; the
//! login cache and the registry-token revocation check, both keyed by the store's generation so
//! a revocation reaches every replica within the generation poll (about a second).
//!
//! Parsing credentials out of a request and answering refusals in a wire format (a 401 with a
//! Bearer challenge) belong to the translation layers.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_access::{Action, ActionSet, Grant, Permissions, RepoPattern};
use berth_identity::{FederationError, PrincipalKind, RegistryClaims, TokenError, TokenOrigin};
use berth_meta::{TokenKind, UserRecord};

use crate::audit::{AuditAction, AuditResult, EventBuilder};
use crate::error::Error;
use crate::{AnonymousAccess, Core};

/// Credentials as presented.
#[derive(Debug)]
pub enum Credentials {
    None,
    Basic { username: String, password: String },
    Bearer(String),
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
/// stores the secret. Every entry remembers the store's federation generation it was made under
/// and counts only while that generation is current, so a changed, disabled or deleted account
/// stops working on every replica within the generation poll (about a second).
pub struct LoginCache {
    ttl: Duration,
    cache: quick_cache::sync::Cache<[u8; 32], CachedLogin>,
}

#[derive(Clone)]
struct CachedLogin {
    generation: i64,
    at: Instant,
    principal: Arc<Principal>,
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
    fn get(&self, key: &[u8; 32], generation: i64, now: i64) -> Option<Arc<Principal>> {
        let c = self.cache.get(key)?;
        let fresh = c.generation == generation
            && c.at.elapsed() < self.ttl
            && c.principal.not_after.is_none_or(|na| (na as i64) > now);
        if fresh {
            Some(c.principal)
        } else {
            self.cache.remove(key);
            None
        }
    }
}

/// Bounds the password checks (argon2id, ~19 MiB each) running at once; the rest wait briefly,
/// then get 503, so a burst of logins cannot take the memory.
pub struct PasswordGate {
    permits: tokio::sync::Semaphore,
    wait: Duration,
    /// As many threads as permits, each reusing its argon2 memory.
    verifier: berth_identity::password::Verifier,
}

impl PasswordGate {
    pub fn new(limits: &crate::Limits) -> PasswordGate {
        let n = limits.password_checks.max(1);
        let verifier = berth_identity::password::Verifier::new(n).expect("starting the password-check threads");
        PasswordGate { permits: tokio::sync::Semaphore::new(n), wait: limits.password_check_wait, verifier }
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
    /// Every password-check slot stayed busy for `limits.password_check_wait`.
    Busy,
    Internal(Error),
}

impl From<Error> for LoginError {
    fn from(e: Error) -> Self {
        LoginError::Internal(e)
    }
}

impl From<berth_meta::MetaError> for LoginError {
    fn from(e: berth_meta::MetaError) -> Self {
        LoginError::Internal(e.into())
    }
}

impl LoginError {
    /// What the caller is told (no names of providers or robots it did not give itself).
    pub fn message(&self) -> String {
        match self {
            LoginError::Federation(e) => e.public_message(),
            other => other.detail(),
        }
    }
    /// The whole reason, for the log and the audit log.
    pub fn detail(&self) -> String {
        match self {
            LoginError::Invalid(m) => m.clone(),
            LoginError::Federation(e) => e.to_string(),
            LoginError::RateLimited { message, .. } => message.clone(),
            LoginError::Busy => BUSY_MESSAGE.into(),
            LoginError::Internal(e) => e.to_string(),
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            LoginError::Invalid(_) => "invalid_credentials",
            LoginError::Federation(e) => e.kind(),
            LoginError::RateLimited { .. } => "rate_limited",
            LoginError::Busy => "busy",
            LoginError::Internal(_) => "internal",
        }
    }
}

/// What a refused login tells the caller: the same words whatever was wrong (unknown account,
/// wrong secret, a federated robot's name with a secret), so names cannot be enumerated. The log
/// and the audit log keep the detail.
pub const INVALID_CREDENTIALS: &str = "invalid username or password";
pub const BUSY_MESSAGE: &str = "too many logins are being checked right now; try again in a second";

/// How long an address that logged in successfully stays known for its account, so the slow
/// per-account ceiling does not lock its owner out.
const KNOWN_ADDRESS_WINDOW: i64 = 7 * 24 * 3600;

fn unix_now() -> i64 {
    crate::clock::now_secs()
}

/// The start of the window of length `len` that contains `now`.
fn window_start(now: i64, len: i64) -> i64 {
    now - now.rem_euclid(len.max(1))
}

/// The failed-login counters one attempt was counted in (keys and window starts), forgiven when
/// the attempt succeeds. Counters live in the metadata store, so replicas share them.
///
/// Every attempt is counted BEFORE its password check, with the store's atomic increment: the
/// count it returns decides, so parallel attempts cannot slip past the limit. Three limits, in
/// this order (each counted only when the ones before it pass):
/// 1. per account and address (`limits.login_failures_per_account_address` per `login_window`):
///    a guesser at one address gets a few tries per account;
/// 2. per address (`login_failures_per_address` per `login_window`): one address cannot spray
///    many accounts;
/// 3. per account from everywhere (`login_failures_per_account` per `login_account_window`): a
///    slow ceiling for distributed guessing, which does not apply to addresses the account logged
///    in from successfully in the last 7 days, so an attacker cannot lock its owner out.
struct Attempt {
    counted: Vec<(String, i64)>,
    known_key: Option<String>,
}

fn limit_key_name(account: &str) -> String {
    // Store keys stay small whatever the client sent.
    crate::text::capped(account, crate::text::MAX_LOGGED_NAME)
}

fn refuse_limit(limit: &'static str, what: &str, account: &str, client: Option<IpAddr>, window: i64, len: i64, now: i64) -> LoginError {
    let retry_after = (window + len - now).max(1) as u64;
    metrics::counter!("berth_login_rate_limited_total", "limit" => limit).increment(1);
    tracing::warn!(
        limit,
        account = %crate::text::cap(account, crate::text::MAX_LOGGED_NAME),
        client = client.map(|c| c.to_string()).unwrap_or_default(),
        retry_after,
        "login limit reached: refusing logins {what} until the window ends"
    );
    LoginError::RateLimited { retry_after, message: format!("too many failed logins {what}; try again in {retry_after} s") }
}

impl Attempt {
    async fn begin(state: &Core, account: &str, client: Option<IpAddr>) -> Result<Attempt, LoginError> {
        let l = &state.config.limits;
        let now = unix_now();
        let name = limit_key_name(account);
        let short_len = l.login_window.as_secs() as i64;
        let long_len = l.login_account_window.as_secs() as i64;
        let short = window_start(now, short_len);
        let long = window_start(now, long_len);
        let mut attempt = Attempt { counted: Vec::with_capacity(3), known_key: None };
        if let Some(ip) = client {
            let key = format!("acct-addr:{ip}|{name}");
            let n = attempt.count(state, key, short).await?;
            if n > l.login_failures_per_account_address {
                return Err(refuse_limit("account_address", "for this account from your address", account, client, short, short_len, now));
            }
            let key = format!("addr:{ip}");
            let n = attempt.count(state, key, short).await?;
            if n > l.login_failures_per_address {
                return Err(refuse_limit("address", "from your address", account, client, short, short_len, now));
            }
            attempt.known_key = Some(format!("known:{ip}|{name}"));
        }
        let key = format!("acct:{name}");
        let n = attempt.count(state, key, long).await?;
        if n > l.login_failures_per_account && !attempt.known(state, now).await? {
            return Err(refuse_limit("account", "for this account", account, client, long, long_len, now));
        }
        Ok(attempt)
    }

    async fn count(&mut self, state: &Core, key: String, window: i64) -> Result<u32, LoginError> {
        let n = state.meta.record_login_failure(&key, window).await?;
        self.counted.push((key, window));
        Ok(n)
    }

    /// Whether the client's address logged in to this account successfully in the last 7 days.
    async fn known(&self, state: &Core, now: i64) -> Result<bool, LoginError> {
        let Some(key) = &self.known_key else { return Ok(false) };
        let w = window_start(now, KNOWN_ADDRESS_WINDOW);
        for window in [w, w - KNOWN_ADDRESS_WINDOW] {
            if state.meta.login_failures(key, window).await? > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The check did not fail (it succeeded, or could not run): the attempt is not a failure.
    async fn forgive(self, state: &Core) {
        for (key, window) in &self.counted {
            if let Err(e) = state.meta.forgive_login_failure(key, *window).await {
                tracing::warn!(error = %e, "forgiving a counted login attempt");
            }
        }
    }

    async fn succeeded(self, state: &Core) {
        if let Some(key) = &self.known_key {
            let w = window_start(unix_now(), KNOWN_ADDRESS_WINDOW);
            if let Err(e) = state.meta.record_login_failure(key, w).await {
                tracing::warn!(error = %e, "remembering a known login address");
            }
        }
        self.forgive(state).await;
    }
}

/// Everyone may pull public projects.
async fn with_public(state: &Core, p: Permissions) -> Permissions {
    match state.federation.public_pull().await {
        Ok(public) if !public.grants.is_empty() => p.union(public),
        Ok(_) => p,
        Err(e) => {
            tracing::warn!(error = %e, "loading public projects");
            p
        }
    }
}

/// Checks a secret against its argon2id hash on the verifier threads, at most
/// `limits.password_checks` at a time (waiting up to `limits.password_check_wait` for a slot).
async fn verify_secret(state: &Core, secret: &str, hash: String) -> Result<bool, LoginError> {
    let gate = &state.password_gate;
    let permit = match tokio::time::timeout(gate.wait, gate.permits.acquire()).await {
        Ok(Ok(p)) => p,
        Ok(Err(_)) | Err(_) => {
            metrics::counter!("berth_password_checks_busy_total").increment(1);
            return Err(LoginError::Busy);
        }
    };
    let ok = gate.verifier.verify(secret, &hash).await;
    drop(permit);
    Ok(ok)
}

/// Logs in with Basic credentials: a Berth token as the password (any user name), a federated
/// OIDC token as the password (any user name, or a robot's name to use only that robot), a
/// robot's static secret, or a local user's password.
pub async fn login(state: &Core, username: &str, password: &str, client: Option<IpAddr>) -> Result<Arc<Principal>, LoginError> {
    if crate::people::looks_like_token(password) {
        return token_login(state, password, client, false).await;
    }
    if berth_identity::looks_like_jwt(password) {
        if berth_identity::peek_issuer(password).as_deref() == Some(state.tokens.issuer()) {
            return registry_token_login(state, password).await;
        }
        return federated(state, password, Some(username)).await;
    }
    let generation = current_generation(state).await?;
    let key = LoginCache::key(username, password);
    if let Some(p) = state.logins.get(&key, generation, unix_now()) {
        return Ok(p);
    }
    let attempt = Attempt::begin(state, username, client).await?;
    let checked = if username.starts_with(berth_access::robot::ROBOT_PREFIX) {
        robot_secret_login(state, username, password).await
    } else {
        user_login(state, username, password).await
    };
    match checked {
        Ok(Some(p)) => {
            attempt.succeeded(state).await;
            let p = Arc::new(p);
            state.logins.cache.insert(key, CachedLogin { generation, at: Instant::now(), principal: p.clone() });
            Ok(p)
        }
        Ok(None) => {
            metrics::counter!("berth_login_failures_total").increment(1);
            Err(LoginError::Invalid(INVALID_CREDENTIALS.into()))
        }
        // The secret was right but the account may not log in: still a failure of this attempt.
        Err(e @ LoginError::Invalid(_)) => Err(e),
        Err(e) => {
            attempt.forgive(state).await;
            Err(e)
        }
    }
}

/// A federation failure as a login failure; the store being unavailable is not the token's fault.
fn federation_failure(e: berth_identity::federation::FederationError) -> LoginError {
    match e {
        berth_identity::federation::FederationError::StoreUnavailable(detail) => {
            tracing::warn!(error = %detail, "metadata store unavailable");
            LoginError::Internal(Error::Unavailable("the metadata store"))
        }
        berth_identity::federation::FederationError::Internal(detail) => LoginError::Internal(Error::internal("checking a login", detail)),
        other => LoginError::Federation(other),
    }
}

async fn current_generation(state: &Core) -> Result<i64, LoginError> {
    state
        .federation
        .generation()
        .await
        .map_err(federation_failure)
}

async fn user_login(state: &Core, username: &str, password: &str) -> Result<Option<Principal>, LoginError> {
    let Some(user) = state.meta.get_user(username).await? else {
        // Same work as a wrong password, so timing does not tell which names exist.
        let _ = verify_secret(state, password, DUMMY_HASH.clone()).await?;
        return Ok(None);
    };
    // People from an identity provider have no password: the same work and answer as a wrong one.
    let hash = if user.password_hash.is_empty() { DUMMY_HASH.clone() } else { user.password_hash.clone() };
    if !verify_secret(state, password, hash).await? || user.password_hash.is_empty() {
        return Ok(None);
    }
    if user.disabled {
        return Err(LoginError::Invalid(format!("user {username} is disabled; an administrator can enable it again")));
    }
    Ok(Some(Principal {
        subject: username.to_owned(),
        kind: PrincipalKind::User,
        permissions: user_permissions(state, &user).await?,
        origin: None,
        not_after: None,
    }))
}

/// The member keys of a user: their own and their groups' (from the identity provider).
pub fn member_keys(user: &UserRecord) -> Vec<String> {
    let mut keys = vec![berth_meta::member_key(false, &user.name)];
    keys.extend(user.groups.iter().map(|g| berth_meta::member_key(true, g)));
    keys.truncate(berth_meta::MAX_MEMBER_KEYS);
    keys
}

/// What a user may do: everything for administrators; else, in each project they or one of
/// their groups is a member of, the actions of the highest of those roles; with the anonymous
/// grants and public projects on top.
pub async fn user_permissions(state: &Core, user: &UserRecord) -> Result<Permissions, LoginError> {
    let permissions = if user.admin {
        Permissions::admin()
    } else {
        let memberships = state.meta.memberships(&member_keys(user)).await?;
        let roles: Vec<(&str, berth_access::Role)> =
            memberships.iter().filter_map(|m| berth_access::Role::parse(&m.role).ok().map(|r| (m.project.as_str(), r))).collect();
        anonymous_permissions(state.config.anonymous).union(berth_access::member_permissions(roles))
    };
    Ok(with_public(state, permissions).await)
}

/// What a refused Berth token is told: the same words whatever was wrong.
pub const INVALID_TOKEN: &str = "the Berth token is invalid, expired or revoked; create a new one (berth token create) or log in again (berth login)";

/// Logs in with a Berth-issued credential (`berth_<kind>_<id>_<secret>`): a personal access
/// token, a `berth login`'s token, the credential helper's password; a browser session only when
/// `web` (the cookie). Successful checks are cached per store generation (a revocation moves it).
pub async fn token_login(state: &Core, text: &str, client: Option<IpAddr>, web: bool) -> Result<Arc<Principal>, LoginError> {
    let invalid = || LoginError::Invalid(INVALID_TOKEN.into());
    let Some((kind, id, secret)) = crate::people::parse_token_text(text) else { return Err(invalid()) };
    if (kind == TokenKind::Web) != web {
        return Err(invalid());
    }
    let generation = current_generation(state).await?;
    let key = LoginCache::key("\0berth-token", text);
    if let Some(p) = state.logins.get(&key, generation, unix_now()) {
        touch_token(state, id);
        return Ok(p);
    }
    let attempt = Attempt::begin(state, &format!("token:{id}"), client).await?;
    match check_token(state, kind, id, secret).await {
        Ok(Some(p)) => {
            attempt.succeeded(state).await;
            let p = Arc::new(p);
            state.logins.cache.insert(key, CachedLogin { generation, at: Instant::now(), principal: p.clone() });
            touch_token(state, id);
            Ok(p)
        }
        Ok(None) => {
            metrics::counter!("berth_login_failures_total").increment(1);
            Err(invalid())
        }
        Err(e @ LoginError::Invalid(_)) => Err(e),
        Err(e) => {
            attempt.forgive(state).await;
            Err(e)
        }
    }
}

async fn check_token(state: &Core, kind: TokenKind, id: &str, secret: &str) -> Result<Option<Principal>, LoginError> {
    let Some(t) = state.meta.get_token(id).await? else { return Ok(None) };
    let hash = crate::people::secret_hash(secret);
    if t.kind != kind || !berth_identity::secret_eq(t.secret_hash.as_bytes(), hash.as_bytes()) {
        return Ok(None);
    }
    let now = unix_now();
    if t.expires_at.is_some_and(|e| e <= now) {
        return Ok(None);
    }
    let Some(user) = state.meta.get_user(&t.user).await? else { return Ok(None) };
    if user.disabled {
        return Err(LoginError::Invalid(format!("user {} is disabled; an administrator can enable it again", user.name)));
    }
    let mut permissions = user_permissions(state, &user).await?;
    let scope = crate::people::TokenScope::from_record(&t);
    if scope != crate::people::TokenScope::default() {
        let actions = match &scope.actions {
            Some(a) => ActionSet::parse_words(a.iter().map(String::as_str)),
            None => ActionSet::ALL,
        };
        permissions = berth_access::restrict(&permissions, scope.projects.as_deref(), actions);
    }
    Ok(Some(Principal {
        subject: user.name.clone(),
        kind: PrincipalKind::User,
        permissions,
        origin: Some(Arc::new(user_origin(&user, Some(&t.id)))),
        not_after: t.expires_at.map(|e| e.max(0) as u64),
    }))
}

/// The audit origin of a user: their identity provider and subject, the Berth token used.
pub fn user_origin(user: &UserRecord, token: Option<&str>) -> TokenOrigin {
    let mut claims = serde_json::Map::new();
    if let Some(i) = &user.identity {
        claims.insert("iss".into(), serde_json::Value::String(i.issuer.clone()));
    }
    TokenOrigin {
        idp: user.identity.as_ref().map(|i| i.provider.clone()).unwrap_or_default(),
        robots: vec![],
        sub: user.identity.as_ref().map(|i| i.subject.clone()),
        jti: None,
        claims,
        token: token.map(str::to_owned),
    }
}

/// Records a token's last use, at most once a minute per token and process, off the request's path.
fn touch_token(state: &Core, id: &str) {
    let now = Instant::now();
    if state.touched.get(id).is_some_and(|t| now.duration_since(t) < Duration::from_secs(60)) {
        return;
    }
    state.touched.insert(id.to_owned(), now);
    let meta = state.meta.clone();
    let id = id.to_owned();
    tokio::spawn(async move {
        if let Err(e) = meta.touch_token(&id, unix_now()).await {
            tracing::debug!(error = %e, "recording a token's last use");
        }
    });
}

/// Logs in with an ID token of a human-login provider as Bearer (scripts calling the admin API
/// with the token their identity provider gave them): the person must be a user already or be
/// onboardable.
pub async fn id_token_login(state: &Core, provider: &str, token: &str) -> Result<Arc<Principal>, LoginError> {
    let generation = current_generation(state).await?;
    let key = LoginCache::key("\0id-token", token);
    if let Some(p) = state.logins.get(&key, generation, unix_now()) {
        return Ok(p);
    }
    let person = state.federation.verify_id_token(provider, token, None).await.map_err(federation_failure)?;
    let user = match state.person_user(&person).await {
        Ok(u) => u,
        Err(Error::Denied(m)) | Err(Error::Conflict(m)) | Err(Error::Unauthenticated(m)) => return Err(LoginError::Invalid(m)),
        Err(e) => return Err(LoginError::Internal(e)),
    };
    let p = Arc::new(Principal {
        subject: user.name.clone(),
        kind: PrincipalKind::User,
        permissions: user_permissions(state, &user).await?,
        origin: Some(Arc::new(user_origin(&user, None))),
        not_after: person.expires_at,
    });
    // The generation may have moved (new groups): cache under the current one.
    let generation = current_generation(state).await?;
    state.logins.cache.insert(key, CachedLogin { generation, at: Instant::now(), principal: p.clone() });
    Ok(p)
}

/// An argon2id hash of a random string, verified against when the account does not exist.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| berth_identity::password::hash(&berth_identity::password::generate()).unwrap_or_default());

async fn robot_secret_login(state: &Core, name: &str, secret: &str) -> Result<Option<Principal>, LoginError> {
    let robot = state.meta.get_robot(name).await?;
    let Some(hash) = robot.as_ref().and_then(|r| r.secret_hash.clone()) else {
        // Unknown, or federated (no secret): the same work and the same answer as a wrong secret.
        let _ = verify_secret(state, secret, DUMMY_HASH.clone()).await?;
        if let Some(r) = &robot {
            tracing::info!(
                robot = %crate::text::cap(name, crate::text::MAX_LOGGED_NAME),
                provider = r.identity_provider.as_deref().unwrap_or(""),
                "a secret was given for a federated robot: it logs in with an OIDC token of its identity provider as the password"
            );
        }
        return Ok(None);
    };
    let Some(robot) = robot else { return Ok(None) };
    if !verify_secret(state, secret, hash).await? {
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
        .map_err(|e| LoginError::Internal(Error::internal("loading a robot's permissions", e)))?;
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
async fn registry_token_login(state: &Core, token: &str) -> Result<Arc<Principal>, LoginError> {
    let claims = match verify_registry_token(state, token).await {
        Ok(c) => c,
        Err(AuthError::Token(m)) => return Err(LoginError::Invalid(m)),
        Err(AuthError::Login(e)) => return Err(e),
    };
    Ok(Arc::new(Principal {
        subject: claims.sub.clone(),
        kind: claims.kind,
        permissions: berth_access::permissions_from_access(&claims.access),
        origin: claims.origin.clone().map(Arc::new),
        not_after: Some(claims.exp),
    }))
}

/// Registry tokens are self-contained, but their principal can be revoked before they expire:
/// whether the token's user or robots still exist and are enabled, looked up once per principal
/// and store generation (so a revocation reaches every replica within the generation poll).
/// `Err(message)` when revoked.
pub async fn still_current(state: &Core, claims: &RegistryClaims) -> Result<Result<(), String>, LoginError> {
    if claims.kind == PrincipalKind::Anonymous {
        return Ok(Ok(()));
    }
    let generation = current_generation(state).await?;
    let token = claims.origin.as_ref().and_then(|o| o.token.clone());
    let key = (generation, claims.kind, format!("{}|{}", claims.sub, token.as_deref().unwrap_or("")));
    if let Some(ok) = state.revocations.get(&key) {
        return Ok(if ok { Ok(()) } else { Err(revoked_message(claims)) });
    }
    let now = unix_now();
    let ok = match claims.kind {
        PrincipalKind::User => {
            let user_ok = state.meta.get_user(&claims.sub).await?.is_some_and(|u| !u.disabled);
            // Issued through a Berth token: revoking that token revokes what it got.
            let token_ok = match &token {
                Some(id) => state.meta.get_token(id).await?.is_some_and(|t| t.user == claims.sub && t.expires_at.is_none_or(|e| e > now)),
                None => true,
            };
            user_ok && token_ok
        }
        _ => {
            let mut all = true;
            for name in claims.sub.split(',') {
                let r = state.meta.get_robot(name).await?;
                if !r.is_some_and(|r| !r.disabled && r.expires_at.is_none_or(|e| e > now)) {
                    all = false;
                    break;
                }
            }
            all
        }
    };
    state.revocations.insert(key, ok);
    Ok(if ok { Ok(()) } else { Err(revoked_message(claims)) })
}

fn revoked_message(claims: &RegistryClaims) -> String {
    let what = match (claims.kind, claims.origin.as_ref().and_then(|o| o.token.as_ref())) {
        (PrincipalKind::User, Some(_)) => "user or the Berth token it was issued through",
        (kind, _) => kind.as_str(),
    };
    format!("this registry token is revoked: its {what} was disabled, deleted or revoked, or has expired; log in again")
}

/// Logs in with a federated OIDC token.
pub async fn federated(state: &Core, token: &str, login: Option<&str>) -> Result<Arc<Principal>, LoginError> {
    let id = state.federation.authenticate(token, login).await.map_err(federation_failure)?;
    let origin = TokenOrigin {
        idp: id.provider.clone(),
        robots: id.robots.clone(),
        sub: id.subject.clone(),
        jti: id.jti.clone(),
        claims: id.audit_claims.clone(),
        token: None,
    };
    Ok(Arc::new(Principal {
        subject: id.robots.join(","),
        kind: PrincipalKind::Robot,
        permissions: with_public(state, id.permissions.clone()).await,
        origin: Some(Arc::new(origin)),
        not_after: id.not_after,
    }))
}

/// Logs a refused login and records it in the audit log.
pub fn audit_login_failure(state: &Core, username: Option<&str>, err: &LoginError, client: Option<IpAddr>) {
    let provider = match err {
        LoginError::Federation(e) => e.provider().map(str::to_owned),
        _ => None,
    };
    use crate::text::{cap, capped, MAX_LOGGED_MESSAGE, MAX_LOGGED_NAME};
    let user = cap(username.unwrap_or(""), MAX_LOGGED_NAME);
    let message = capped(&err.detail(), MAX_LOGGED_MESSAGE);
    let client_text = client.map(|c| c.to_string()).unwrap_or_default();
    tracing::warn!(user = %user, kind = err.kind(), provider = provider.as_deref().unwrap_or(""), client = %client_text, "login refused: {message}");
    metrics::counter!("berth_logins_total", "result" => "denied", "reason" => err.kind()).increment(1);
    // Floods of the same refusal collapse into one audit row with a count: rate-limited and busy
    // refusals per address whatever the user name, others per address, user and message.
    let collapse = match err {
        LoginError::RateLimited { .. } | LoginError::Busy => format!("login|{}|{client_text}", err.kind()),
        _ => format!("login|{}|{client_text}|{user}|{message}", err.kind()),
    };
    state.audit.record_collapsing(
        collapse,
        EventBuilder::new(AuditAction::Login, AuditResult::Denied, &user).provider(provider).client(client).message(message).build(),
    );
}

/// Why a request could not be authenticated.
#[derive(Debug)]
pub enum AuthError {
    /// A registry token that is malformed, badly signed, expired or revoked (the message says
    /// which): the client should get a new token.
    Token(String),
    /// A login that failed (already logged and audited).
    Login(LoginError),
}

fn caller_from(p: &Principal) -> Caller {
    Caller { subject: p.subject.clone(), kind: p.kind, grants: Grants::Permissions(p.permissions.clone()), origin: p.origin.clone() }
}

/// Authenticates a `/v2` request: a registry token or a federated OIDC token as Bearer, Basic
/// credentials (password, robot secret, or an OIDC token as the password), or nothing.
pub async fn authenticate(state: &Core, creds: Credentials, client: Option<IpAddr>) -> Result<Caller, AuthError> {
    match creds {
        Credentials::None => Ok(Caller {
            subject: "anonymous".into(),
            kind: PrincipalKind::Anonymous,
            grants: Grants::Permissions(with_public(state, anonymous_permissions(state.config.anonymous)).await),
            origin: None,
        }),
        Credentials::Bearer(token) if crate::people::looks_like_token(&token) => match token_login(state, &token, client, false).await {
            Ok(p) => Ok(caller_from(&p)),
            Err(e) => {
                audit_login_failure(state, None, &e, client);
                Err(AuthError::Login(e))
            }
        },
        Credentials::Bearer(token) => {
            let registry = match berth_identity::peek_issuer(&token) {
                Some(iss) => iss == state.tokens.issuer(),
                None => true,
            };
            if registry {
                return verify_registry_token(state, &token).await.map(token_caller);
            }
            let person = match state.federation.login_provider_for_token(&token).await {
                Some(provider) => Some(id_token_login(state, &provider, &token).await),
                None => None,
            };
            match person.unwrap_or(federated(state, &token, None).await) {
                Ok(p) => Ok(caller_from(&p)),
                Err(e) => {
                    audit_login_failure(state, None, &e, client);
                    Err(AuthError::Login(e))
                }
            }
        }
        // A registry token as the password (the kubelet plugin's exchange mode, any user name).
        Credentials::Basic { password, .. }
            if berth_identity::looks_like_jwt(&password)
                && berth_identity::peek_issuer(&password).as_deref() == Some(state.tokens.issuer()) =>
        {
            verify_registry_token(state, &password).await.map(token_caller)
        }
        Credentials::Basic { username, password } => match login(state, &username, &password, client).await {
            Ok(p) => Ok(caller_from(&p)),
            Err(e) => {
                audit_login_failure(state, Some(&username), &e, client);
                Err(AuthError::Login(e))
            }
        },
    }
}

/// The caller of a verified registry token, unless its principal was revoked since.
fn token_caller(claims: Arc<RegistryClaims>) -> Caller {
    Caller { subject: claims.sub.clone(), kind: claims.kind, origin: claims.origin.clone().map(Arc::new), grants: Grants::Token(claims) }
}

/// Verifies a registry token: signature, algorithm, issuer, audience and lifetime (cached per
/// token by the issuer), then that its principal was not revoked since ([`still_current`]).
/// The one place where Berth's own tokens are checked, whichever way they arrive (Bearer on
/// `/v2`, or as a Basic password at `/v2` or the token endpoint).
pub async fn verify_registry_token(state: &Core, token: &str) -> Result<Arc<RegistryClaims>, AuthError> {
    let claims = match state.tokens.verify(token) {
        Ok(claims) => claims,
        Err(TokenError::Expired) => return Err(AuthError::Token("the registry token has expired; log in again or request a new token".into())),
        Err(e) => return Err(AuthError::Token(e.to_string())),
    };
    match still_current(state, &claims).await {
        Ok(Ok(())) => Ok(claims),
        Ok(Err(m)) => Err(AuthError::Token(m)),
        Err(e) => Err(AuthError::Login(e)),
    }
}

