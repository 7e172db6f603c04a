//! Workload identity federation: a CI job's or pod's OIDC token (JWT) becomes the robot accounts
//! whose claim rules it satisfies.
//!
//! The flow for one token: peek at the unverified `iss` (and `aud`) to pick the identity provider;
//! get that provider's keys ([`keys`]); verify the signature with the provider's algorithm
//! allow-list (`berth-jose`); validate `iss`, `aud`, `exp`, `nbf`, `iat` and the lifetime; and only
//! then match the claims against that provider's robots (`berth-claims`). The permissions of all
//! matching robots are united.
//!
//! Providers, robots and projects live in the metadata store. This module keeps a compiled
//! snapshot of them (rule programs, per-provider matchers, key caches) and reloads it when the
//! store's federation generation changes, which it checks at most once a second, so replicas see
//! each other's changes. Verified tokens are cached by their SHA-256 for at most 5 minutes,
//! never past their `exp`.

pub mod issuer;
pub mod keys;
pub mod login;
pub mod provider;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_access::{robot_permissions, PermissionSpec, Permissions};
use berth_claims::{Matcher, RobotRules, Rule, RuleSpec};
use berth_jose::{Algorithm, JoseError};
use berth_meta::{MetadataStore, RobotRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};

pub use keys::{KeyCache, KeyError, KeySnapshot};
pub use provider::{normalize_issuer, Preset, Provider, ProviderSpec};

/// How often the store's generation is polled.
const GENERATION_POLL: Duration = Duration::from_secs(1);

/// What a verified federated token is.
#[derive(Debug, Clone)]
pub struct FederatedIdentity {
    pub provider: String,
    /// The matching robots (after narrowing by login name), sorted.
    pub robots: Vec<String>,
    pub permissions: Permissions,
    pub subject: Option<String>,
    pub jti: Option<String>,
    /// The token's `exp` (unix seconds).
    pub expires_at: u64,
    /// The earliest expiry of the matching robots (unix seconds): registry tokens issued for
    /// this identity never outlive it.
    pub not_after: Option<u64>,
    /// The provider's identifying claims, for the audit log.
    pub audit_claims: Map<String, Value>,
}

/// Why a federated token was refused. Every message says which check failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FederationError {
    #[error("the token is not a valid JWT: {0}")]
    Malformed(String),
    #[error("the token has no `iss` claim")]
    NoIssuer,
    #[error("unknown issuer {0:?}: no identity provider is configured for it (compare with `berth idp list`; issuers must match exactly)")]
    UnknownIssuer(String),
    #[error("{0}")]
    Keys(String),
    #[error("{message} (identity provider {provider:?})")]
    Verification { provider: String, kind: &'static str, message: String },
    #[error("no robots matched your token (identity provider {provider:?}); `berth token explain` shows which rules failed")]
    NoRobotsMatched { provider: String },
    #[error("robot {robot:?} does not match your token (identity provider {provider:?}); log in with any other user name to use every robot that matches")]
    RobotNotMatched { robot: String, provider: String },
    /// Human login: no such identity provider, or it has no `login` section.
    #[error("{0}")]
    NoLogin(String),
    /// Human login: the ID token verified, but its claims do not make a person Berth lets in
    /// (the message names the claim or setting).
    #[error("{message} (identity provider {provider:?})")]
    Person { provider: String, message: String },
    /// The metadata store does not answer; the token may be fine (retry later).
    #[error("the metadata store is unavailable: {0}")]
    StoreUnavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<berth_meta::MetaError> for FederationError {
    fn from(e: berth_meta::MetaError) -> FederationError {
        match e {
            berth_meta::MetaError::Unavailable(m) => FederationError::StoreUnavailable(m),
            other => FederationError::Internal(other.to_string()),
        }
    }
}

impl FederationError {
    /// A short machine-readable name, for metrics and the audit log.
    pub fn kind(&self) -> &'static str {
        match self {
            FederationError::Malformed(_) => "malformed",
            FederationError::NoIssuer => "no_issuer",
            FederationError::UnknownIssuer(_) => "unknown_issuer",
            FederationError::Keys(_) => "keys_unavailable",
            FederationError::Verification { kind, .. } => kind,
            FederationError::NoRobotsMatched { .. } => "no_robots_matched",
            FederationError::RobotNotMatched { .. } => "robot_not_matched",
            FederationError::NoLogin(_) => "no_login",
            FederationError::Person { .. } => "person_refused",
            FederationError::StoreUnavailable(_) => "store_unavailable",
            FederationError::Internal(_) => "internal",
        }
    }
    /// What the caller is told: the reason, without the names of Berth's identity providers,
    /// key URLs or internal details (those go to the log, the audit log and `token explain`),
    /// so a caller with a made-up token cannot enumerate the configuration.
    pub fn public_message(&self) -> String {
        match self {
            FederationError::Keys(_) => {
                "the signing keys of the token's issuer could not be fetched; try again later (the server log has the details)".into()
            }
            FederationError::Verification { message, .. } | FederationError::Person { message, .. } => message.clone(),
            FederationError::NoRobotsMatched { .. } => {
                "no robots matched your token; an administrator can see which rules failed with `berth token explain`".into()
            }
            FederationError::RobotNotMatched { robot, .. } => format!(
                "robot {robot:?} does not match your token; log in with any other user name to use every robot that matches"
            ),
            FederationError::StoreUnavailable(_) => "the metadata store is unavailable; retry later".into(),
            FederationError::Internal(_) => "internal error while checking the token; see the server log".into(),
            other => other.to_string(),
        }
    }

    /// The provider the token was routed to, if it got that far.
    pub fn provider(&self) -> Option<&str> {
        match self {
            FederationError::Verification { provider, .. }
            | FederationError::Person { provider, .. }
            | FederationError::NoRobotsMatched { provider }
            | FederationError::RobotNotMatched { provider, .. } => Some(provider),
            _ => None,
        }
    }
}

/// A federated robot as the matcher needs it.
#[derive(Debug, Clone)]
struct RobotInfo {
    permissions: Permissions,
    disabled: bool,
    expires_at: Option<i64>,
}

struct ProviderState {
    provider: Provider,
    keys: Arc<KeyCache>,
    matcher: Matcher,
    robots: HashMap<String, RobotInfo>,
    /// Robots whose stored rules or permissions do not compile (never match; shown by explain).
    broken: Vec<(String, String)>,
}

struct Snapshot {
    generation: i64,
    providers: Vec<Arc<ProviderState>>,
    by_issuer: HashMap<String, Vec<usize>>,
    /// Identity providers whose stored document does not validate (listed by explain and logs).
    invalid_providers: Vec<(String, String)>,
    public_projects: Vec<String>,
    public_pull: Permissions,
}

struct CachedIdentity {
    generation: i64,
    /// Re-verify after this (unix seconds): the token's exp, or 5 minutes after verification.
    until: u64,
    identity: Arc<FederatedIdentity>,
}

/// How long a verified OIDC token is trusted without verifying it again (never past its `exp`).
const VERIFIED_CACHE_SECS: u64 = 300;

/// The federation service: routing, verification, matching, caches.
pub struct Federation {
    meta: Arc<dyn MetadataStore>,
    snapshot: RwLock<Arc<Snapshot>>,
    last_poll: std::sync::Mutex<Option<Instant>>,
    reload: Mutex<()>,
    /// Key caches survive reloads while a provider's document is unchanged.
    key_caches: std::sync::Mutex<HashMap<String, (serde_json::Value, Arc<KeyCache>)>>,
    verified: quick_cache::sync::Cache<[u8; 32], Arc<CachedIdentity>>,
    limits: berth_jose::Limits,
}

fn unix_now() -> u64 {
    crate::clock::now_unsigned()
}

/// The algorithms a provider accepts now: its allow-list, else what discovery advertised among
/// the supported ones, else all supported ones.
pub fn effective_algorithms(p: &Provider, keys: &KeySnapshot) -> Vec<Algorithm> {
    if let Some(list) = &p.algorithms {
        return list.clone();
    }
    match &keys.advertised {
        Some(adv) if !adv.is_empty() => adv.clone(),
        _ => Algorithm::ALL.to_vec(),
    }
}

/// Compiles a robot's stored rules.
pub fn compile_rules(robot: &RobotRecord) -> Result<Vec<Rule>, String> {
    let specs: Vec<RuleSpec> =
        serde_json::from_value(robot.rules.clone()).map_err(|e| format!("rules are not a list of rule objects: {e}"))?;
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| Rule::compile(s).map_err(|e| format!("rule {i}: {e}")))
        .collect()
}

/// Turns a robot's stored permission entries into permissions.
pub fn compile_permissions(robot: &RobotRecord) -> Result<Permissions, String> {
    let specs: Vec<PermissionSpec> = serde_json::from_value(robot.permissions.clone())
        .map_err(|e| format!("permissions are not a list of permission objects: {e}"))?;
    robot_permissions(robot.project.as_deref(), &specs)
}

/// Picks the provider for a token's unverified `iss` and `aud`: among providers with that issuer,
/// the first whose audiences meet the token's, else the first (which then reports the mismatch).
fn route<'a>(snap: &'a Snapshot, claims: &Map<String, Value>) -> Result<&'a Arc<ProviderState>, FederationError> {
    let iss = claims.get("iss").and_then(Value::as_str).ok_or(FederationError::NoIssuer)?;
    let idx = snap
        .by_issuer
        .get(normalize_issuer(iss))
        .ok_or_else(|| FederationError::UnknownIssuer(iss.to_owned()))?;
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let pick = idx
        .iter()
        .map(|i| &snap.providers[*i])
        .find(|p| p.provider.audiences.iter().any(|a| auds.contains(&a.as_str())))
        .unwrap_or(&snap.providers[idx[0]]);
    Ok(pick)
}

fn verification(provider: &str, e: &JoseError) -> FederationError {
    FederationError::Verification { provider: provider.to_owned(), kind: e.kind(), message: e.to_string() }
}

impl Federation {
    pub fn new(meta: Arc<dyn MetadataStore>) -> Arc<Federation> {
        Arc::new(Federation {
            meta,
            snapshot: RwLock::new(Arc::new(Snapshot {
                generation: i64::MIN,
                providers: vec![],
                by_issuer: HashMap::new(),
                invalid_providers: vec![],
                public_projects: vec![],
                public_pull: Permissions::default(),
            })),
            last_poll: std::sync::Mutex::new(None),
            reload: Mutex::new(()),
            key_caches: std::sync::Mutex::new(HashMap::new()),
            verified: quick_cache::sync::Cache::new(10_000),
            limits: berth_jose::Limits::default(),
        })
    }

    /// The store's federation generation as this process last saw it (polled at most once per
    /// [`GENERATION_POLL`], shared with the snapshot). Caches of credentials key their entries by
    /// it, so a change on any replica reaches this one within about a second.
    pub async fn generation(&self) -> Result<i64, FederationError> {
        Ok(self.current().await?.generation)
    }

    async fn current(&self) -> Result<Arc<Snapshot>, FederationError> {
        let due = {
            let mut last = self.last_poll.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= GENERATION_POLL);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            let generation = self.meta.federation_generation().await?;
            if generation != self.snapshot.read().await.generation {
                self.reload_now().await?;
            }
        }
        Ok(self.snapshot.read().await.clone())
    }

    /// Rebuilds the snapshot from the store now (after an admin change in this process, so the
    /// change is visible to the next request without waiting for the poll).
    pub async fn reload_now(&self) -> Result<(), FederationError> {
        let _guard = self.reload.lock().await;
        let internal = FederationError::from;
        let generation = self.meta.federation_generation().await.map_err(internal)?;
        if generation == self.snapshot.read().await.generation {
            return Ok(());
        }
        let records = self.meta.list_identity_providers().await.map_err(internal)?;
        let mut providers = Vec::new();
        let mut invalid_providers = Vec::new();
        let mut by_issuer: HashMap<String, Vec<usize>> = HashMap::new();
        let mut caches = HashMap::new();
        for rec in records {
            let spec: Result<ProviderSpec, String> = serde_json::from_value(rec.config.clone()).map_err(|e| e.to_string());
            let provider = match spec.and_then(|s| s.resolve()) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(provider = %rec.name, error = %e, "stored identity provider is invalid; its tokens are refused");
                    invalid_providers.push((rec.name.clone(), e));
                    continue;
                }
            };
            let cache = {
                let old = self.key_caches.lock().unwrap_or_else(|p| p.into_inner());
                match old.get(&rec.name) {
                    Some((doc, cache)) if *doc == rec.config => Ok(cache.clone()),
                    _ => KeyCache::new(&provider).map(Arc::new),
                }
            };
            let cache = match cache {
                Ok(c) => c,
                Err(e) => {
                    invalid_providers.push((rec.name.clone(), e.0));
                    continue;
                }
            };
            caches.insert(rec.name.clone(), (rec.config.clone(), cache.clone()));
            let mut rules = Vec::new();
            let mut robots = HashMap::new();
            let mut broken = Vec::new();
            for r in self.meta.list_robots_by_provider(&rec.name).await.map_err(internal)? {
                match (compile_rules(&r), compile_permissions(&r)) {
                    (Ok(compiled), Ok(permissions)) => {
                        robots.insert(r.name.clone(), RobotInfo { permissions, disabled: r.disabled, expires_at: r.expires_at });
                        rules.push(RobotRules { robot: r.name.clone(), rules: compiled });
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::error!(robot = %r.name, error = %e, "stored robot is invalid; it never matches");
                        broken.push((r.name.clone(), e));
                    }
                }
            }
            by_issuer.entry(provider.issuer.clone()).or_default().push(providers.len());
            providers.push(Arc::new(ProviderState { provider, keys: cache, matcher: Matcher::new(rules), robots, broken }));
        }
        let public_projects: Vec<String> =
            self.meta.list_projects().await.map_err(internal)?.into_iter().filter(|p| p.public).map(|p| p.name).collect();
        let public_pull = berth_access::public_pull(public_projects.iter().map(String::as_str));
        *self.key_caches.lock().unwrap_or_else(|p| p.into_inner()) = caches;
        *self.snapshot.write().await =
            Arc::new(Snapshot { generation, providers, by_issuer, invalid_providers, public_projects, public_pull });
        tracing::debug!(generation, "federation snapshot reloaded");
        Ok(())
    }

    /// Pull on the repositories of public projects (granted to everyone).
    pub async fn public_pull(&self) -> Result<Permissions, FederationError> {
        Ok(self.current().await?.public_pull.clone())
    }

    /// Names of the public projects.
    pub async fn public_projects(&self) -> Result<Vec<String>, FederationError> {
        Ok(self.current().await?.public_projects.clone())
    }

    /// True if the token's unverified `iss` names a configured identity provider. Used to tell
    /// federated tokens from other bearer tokens without verifying anything.
    pub async fn knows_issuer(&self, iss: &str) -> bool {
        match self.current().await {
            Ok(s) => s.by_issuer.contains_key(normalize_issuer(iss)),
            Err(_) => false,
        }
    }

    /// Verifies a federated token and finds its robots. `login` is the user name given with it
    /// (Basic auth); when it names one of the matching robots, only that robot is used.
    pub async fn authenticate(&self, token: &str, login: Option<&str>) -> Result<Arc<FederatedIdentity>, FederationError> {
        self.authenticate_at(token, login, unix_now()).await
    }

    /// [`Federation::authenticate`] at a given time (tests).
    pub async fn authenticate_at(&self, token: &str, login: Option<&str>, now: u64) -> Result<Arc<FederatedIdentity>, FederationError> {
        let snap = self.current().await?;
        let key: [u8; 32] = {
            use sha2::Digest as _;
            sha2::Sha256::digest(token.as_bytes()).into()
        };
        let identity = match self.verified.get(&key) {
            // `until` is exclusive: a cached token is never used at or after its `exp` or the
            // expiry of one of its robots, even where verification would allow clock skew.
            Some(c) if c.generation == snap.generation && now < c.until => c.identity.clone(),
            _ => {
                let identity = Arc::new(self.verify_and_match(&snap, token, now).await?);
                let until = identity.expires_at.min(now + VERIFIED_CACHE_SECS).min(identity.not_after.unwrap_or(u64::MAX));
                self.verified.insert(key, Arc::new(CachedIdentity { generation: snap.generation, until, identity: identity.clone() }));
                identity
            }
        };
        let robot_login = login.filter(|l| l.starts_with(berth_access::robot::ROBOT_PREFIX));
        match robot_login {
            Some(name) if identity.robots.len() > 1 || identity.robots[0] != name => {
                if !identity.robots.iter().any(|r| r == name) {
                    return Err(FederationError::RobotNotMatched { robot: name.to_owned(), provider: identity.provider.clone() });
                }
                let state = snap.providers.iter().find(|p| p.provider.name == identity.provider);
                let robot = state.and_then(|s| s.robots.get(name));
                let permissions = robot.map(|r| r.permissions.clone()).unwrap_or_default();
                let not_after = robot.and_then(|r| r.expires_at).map(|e| e.max(0) as u64);
                Ok(Arc::new(FederatedIdentity { robots: vec![name.to_owned()], permissions, not_after, ..(*identity).clone() }))
            }
            _ => Ok(identity),
        }
    }

    async fn verify_and_match(&self, snap: &Snapshot, token: &str, now: u64) -> Result<FederatedIdentity, FederationError> {
        let (_, unverified_claims) =
            berth_jose::peek_claims(token, &self.limits).map_err(|e| FederationError::Malformed(e.to_string()))?;
        let state = route(snap, &unverified_claims)?;
        let p = &state.provider;
        let claims = self.verify_token(state, token, now).await?;
        let std = berth_jose::claims::validate(
            &claims,
            &p.policy(now),
        )
        .map_err(|e| FederationError::Verification { provider: p.name.clone(), kind: e.kind(), message: e.to_string() })?;
        let now_i = i64::try_from(now).unwrap_or(i64::MAX);
        let robots: Vec<String> = state
            .matcher
            .matches(&claims)
            .into_iter()
            .filter(|r| state.robots.get(r).is_some_and(|i| !i.disabled && i.expires_at.is_none_or(|e| e > now_i)))
            .collect();
        if robots.is_empty() {
            return Err(FederationError::NoRobotsMatched { provider: p.name.clone() });
        }
        let permissions = robots
            .iter()
            .filter_map(|r| state.robots.get(r))
            .fold(Permissions::default(), |acc, r| acc.union(r.permissions.clone()));
        let not_after = robots.iter().filter_map(|r| state.robots.get(r)?.expires_at).min().map(|e| e.max(0) as u64);
        let mut audit_claims = Map::new();
        for path in &p.audit_claims {
            if let Some(v) = berth_claims::lookup(&claims, path) {
                audit_claims.insert(path.clone(), v.clone());
            }
        }
        Ok(FederatedIdentity {
            provider: p.name.clone(),
            robots,
            permissions,
            subject: std.sub.clone(),
            jti: std.jti.clone(),
            expires_at: std.exp,
            not_after,
            audit_claims,
        })
    }

    /// Signature verification with one refetch of the keys for an unknown `kid`. Returns the
    /// verified claims.
    async fn verify_token(&self, state: &ProviderState, token: &str, _now: u64) -> Result<Map<String, Value>, FederationError> {
        let p = &state.provider;
        let decoded = berth_jose::decode(token, &self.limits).map_err(|e| verification(&p.name, &e))?;
        let keys = state.keys.get().await.map_err(|e| FederationError::Keys(e.0))?;
        let verified = match berth_jose::verify(&decoded, &keys.keys, &effective_algorithms(p, &keys)) {
            Err(JoseError::UnknownKid { .. }) => {
                let keys = state.keys.refetch_for_unknown_kid().await.map_err(|e| FederationError::Keys(e.0))?;
                berth_jose::verify(&decoded, &keys.keys, &effective_algorithms(p, &keys)).map_err(|e| verification(&p.name, &e))?
            }
            other => other.map_err(|e| verification(&p.name, &e))?,
        };
        berth_jose::parse_claims(&verified.payload).map_err(|e| verification(&p.name, &e))
    }

    /// The identity providers people can log in through: (name, button label), by name.
    pub async fn login_providers(&self) -> Result<Vec<(String, String)>, FederationError> {
        let snap = self.current().await?;
        let mut v: Vec<(String, String)> = snap
            .providers
            .iter()
            .filter_map(|p| p.provider.login.as_ref().map(|l| (p.provider.name.clone(), l.display_name.clone())))
            .collect();
        v.sort();
        Ok(v)
    }

    /// The login section of a provider people log in through (no network).
    pub async fn login_provider_config(&self, name: &str) -> Result<provider::LoginConfig, FederationError> {
        let snap = self.current().await?;
        snap.providers
            .iter()
            .find_map(|p| (p.provider.name == name).then(|| p.provider.login.clone()).flatten())
            .ok_or_else(|| FederationError::NoLogin(format!("there is no identity provider {name:?} for human login")))
    }

    /// A provider people log in through, with its endpoints (from discovery, fetched through
    /// the key cache) and an HTTP client for it.
    pub async fn login_provider(&self, name: &str) -> Result<LoginProvider, FederationError> {
        let snap = self.current().await?;
        let state = snap.providers.iter().find(|p| p.provider.name == name && p.provider.login.is_some()).ok_or_else(|| {
            FederationError::NoLogin(format!("there is no identity provider {name:?} for human login (`berth idp list` shows those with a login section)"))
        })?;
        let keys = state.keys.get().await.map_err(|e| FederationError::Keys(e.0))?;
        let endpoints = keys.endpoints.clone().unwrap_or_default();
        let http = state.keys.http().ok_or_else(|| FederationError::Internal("a login provider without an HTTP client".into()))?;
        Ok(LoginProvider { provider: state.provider.clone(), endpoints, http })
    }

    /// Verifies an ID token of a login provider: the same signature checks as workload tokens,
    /// then issuer, audience = the client id, `azp` (required when there are several audiences,
    /// and then the client id), lifetime, and the `nonce` of the authorization request when one
    /// is expected. Returns the person it describes.
    pub async fn verify_id_token(&self, provider: &str, token: &str, nonce: Option<&str>) -> Result<login::Person, FederationError> {
        self.verify_id_token_at(provider, token, nonce, unix_now()).await
    }

    pub async fn verify_id_token_at(&self, provider: &str, token: &str, nonce: Option<&str>, now: u64) -> Result<login::Person, FederationError> {
        let snap = self.current().await?;
        let state = snap
            .providers
            .iter()
            .find(|p| p.provider.name == provider && p.provider.login.is_some())
            .ok_or_else(|| FederationError::NoLogin(format!("there is no identity provider {provider:?} for human login")))?;
        let p = &state.provider;
        let Some(l) = p.login.as_ref() else { return Err(FederationError::NoLogin(provider.to_owned())) };
        let claims = self.verify_token(state, token, now).await?;
        let audiences = [l.client_id.clone()];
        let policy = berth_jose::claims::Policy { issuer: &p.issuer, audiences: &audiences, max_lifetime: p.max_lifetime, clock_skew: p.clock_skew, now };
        berth_jose::claims::validate(&claims, &policy).map_err(|e| FederationError::Verification { provider: p.name.clone(), kind: e.kind(), message: e.to_string() })?;
        let refuse = |kind: &'static str, message: String| FederationError::Verification { provider: p.name.clone(), kind, message };
        let several = matches!(claims.get("aud"), Some(Value::Array(a)) if a.len() > 1);
        match claims.get("azp") {
            Some(Value::String(azp)) if *azp == l.client_id => {}
            None if !several => {}
            Some(other) => return Err(refuse("azp", format!("the ID token was issued to {other} (azp), not to Berth's client {:?}", l.client_id))),
            None => return Err(refuse("azp", "the ID token has several audiences and no `azp` naming Berth's client".into())),
        }
        if let Some(expected) = nonce {
            match claims.get("nonce").and_then(Value::as_str) {
                Some(n) if crate::secret_eq(n.as_bytes(), expected.as_bytes()) => {}
                Some(_) => return Err(refuse("nonce", "the ID token's nonce is not the one of this login (a replayed or foreign token)".into())),
                None => return Err(refuse("nonce", "the ID token has no nonce, but this login sent one".into())),
            }
        }
        let mut person = login::person(p, l, &claims).map_err(|e| FederationError::Person { provider: p.name.clone(), message: e.0 })?;
        person.issuer = p.issuer.clone();
        Ok(person)
    }

    /// When a Bearer token is an ID token of a login provider (its issuer is the provider's and
    /// its audiences hold the provider's client id), that provider's name. Nothing is verified.
    pub async fn login_provider_for_token(&self, token: &str) -> Option<String> {
        let (_, claims) = berth_jose::peek_claims(token, &self.limits).ok()?;
        let iss = claims.get("iss")?.as_str()?;
        let auds: Vec<&str> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let snap = self.current().await.ok()?;
        let idx = snap.by_issuer.get(normalize_issuer(iss))?;
        idx.iter()
            .map(|i| &snap.providers[*i].provider)
            .find(|p| p.login.as_ref().is_some_and(|l| auds.contains(&l.client_id.as_str())))
            .map(|p| p.name.clone())
    }

    /// `berth token explain`: every step for one token, without stopping at the first failure
    /// where later steps still say something useful.
    pub async fn explain(&self, token: &str) -> Explanation {
        self.explain_at(token, unix_now()).await
    }

    pub async fn explain_at(&self, token: &str, now: u64) -> Explanation {
        let mut ex = Explanation { now, ..Default::default() };
        let snap = match self.current().await {
            Ok(s) => s,
            Err(e) => {
                ex.step("load configuration", false, e.to_string());
                return ex.finish();
            }
        };
        let (header, claims) = match berth_jose::peek_claims(token, &self.limits) {
            Ok(x) => x,
            Err(e) => {
                ex.step("decode", false, format!("the token is not a valid JWT: {e}"));
                return ex.finish();
            }
        };
        ex.header = Some(header.raw.clone());
        ex.claims = Some(Value::Object(claims.clone()));
        ex.step("decode", true, format!("alg {}, kid {}", header.alg, header.kid.as_deref().unwrap_or("(none)")));
        let state = match route(&snap, &claims) {
            Ok(s) => s,
            Err(e) => {
                let mut detail = e.to_string();
                for (name, why) in &snap.invalid_providers {
                    detail.push_str(&format!("; note: identity provider {name:?} is stored but invalid ({why})"));
                }
                ex.step("route to identity provider", false, detail);
                return ex.finish();
            }
        };
        let p = &state.provider;
        ex.provider = Some(p.name.clone());
        ex.step("route to identity provider", true, format!("issuer {:?} -> identity provider {:?}", p.issuer, p.name));
        let verified = self.verify_token(state, token, now).await;
        let trusted = match &verified {
            Ok(_) => {
                ex.step("signature", true, format!("verified with the keys of {:?}", p.name));
                true
            }
            Err(e) => {
                ex.step("signature", false, e.to_string());
                false
            }
        };
        if trusted {
            match berth_jose::claims::validate(
                &claims,
                &p.policy(now),
            ) {
                Ok(_) => ex.step("standard claims", true, "issuer, audience, expiry, not-before and lifetime are valid".into()),
                Err(e) => ex.step("standard claims", false, e.to_string()),
            }
        }
        let now_i = i64::try_from(now).unwrap_or(i64::MAX);
        for r in state.matcher.explain(&claims) {
            let info = state.robots.get(&r.robot);
            let mut note = None;
            if let Some(i) = info {
                if i.disabled {
                    note = Some("robot is disabled".to_owned());
                } else if i.expires_at.is_some_and(|e| e <= now_i) {
                    note = Some("robot has expired".to_owned());
                }
            }
            if !trusted && r.matched && note.is_none() {
                note = Some("its rules hold, but the token did not verify".to_owned());
            }
            ex.robots.push(RobotExplanation {
                robot: r.robot,
                matched: r.matched && note.is_none(),
                note,
                rules: r.rules.into_iter().map(|(rule, o)| RuleExplanation { rule, matched: o.matched, reason: o.reason }).collect(),
            });
        }
        for (robot, why) in &state.broken {
            ex.robots.push(RobotExplanation { robot: robot.clone(), matched: false, note: Some(format!("invalid robot: {why}")), rules: vec![] });
        }
        let matched: Vec<String> = ex.robots.iter().filter(|r| r.matched).map(|r| r.robot.clone()).collect();
        if !trusted {
            ex.step("match robots", false, "rules shown for information only: the token did not verify".into());
        } else if matched.is_empty() {
            ex.step("match robots", false, FederationError::NoRobotsMatched { provider: p.name.clone() }.to_string());
        } else {
            ex.step("match robots", true, format!("matched: {}", matched.join(", ")));
        }
        ex.matched = matched;
        ex.finish()
    }

    /// For `berth idp test`: resolves the provider, fetches discovery and keys now (bypassing the
    /// cache), and reports what it found.
    pub async fn test_provider(spec: &ProviderSpec) -> Result<ProviderTest, String> {
        let p = spec.resolve()?;
        let cache = KeyCache::new(&p).map_err(|e| e.0)?;
        let snapshot = match &p.keys {
            provider::KeySource::Static(set) => KeySnapshot { keys: set.clone(), advertised: None, source: "static jwks".into(), fetched_at: None, endpoints: None },
            _ => cache.fetch_now().await.map_err(|e| e.0)?,
        };
        Ok(ProviderTest {
            issuer: p.issuer.clone(),
            source: snapshot.source.clone(),
            keys: snapshot
                .keys
                .keys
                .iter()
                .map(|k| format!("{} ({})", k.kid.as_deref().unwrap_or("no kid"), k.describe()))
                .collect(),
            skipped: snapshot.keys.skipped.iter().map(|s| s.to_string()).collect(),
            advertised_algorithms: snapshot.advertised.as_ref().map(|a| a.iter().map(|x| x.to_string()).collect()),
            algorithms: effective_algorithms(&p, &snapshot).iter().map(|a| a.to_string()).collect(),
            audiences: p.audiences.clone(),
        })
    }
}

/// A provider people log in through, ready for the protocol steps of [`login`].
#[derive(Debug, Clone)]
pub struct LoginProvider {
    pub provider: Provider,
    pub endpoints: login::Endpoints,
    pub http: reqwest::Client,
}

impl LoginProvider {
    pub fn login(&self) -> &provider::LoginConfig {
        self.provider.login.as_ref().expect("a login provider has a login section")
    }
}

/// What `berth idp test` found (the admin API sends it; the CLI reads it back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderTest {
    pub issuer: String,
    pub source: String,
    pub keys: Vec<String>,
    pub skipped: Vec<String>,
    pub advertised_algorithms: Option<Vec<String>>,
    pub algorithms: Vec<String>,
    pub audiences: Vec<String>,
}

/// The report of `berth token explain` (the admin API sends it; the CLI reads it back).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub now: u64,
    pub header: Option<Value>,
    /// The token's claims as sent (not trusted unless the signature step passed).
    pub claims: Option<Value>,
    pub provider: Option<String>,
    pub steps: Vec<Step>,
    pub robots: Vec<RobotExplanation>,
    pub matched: Vec<String>,
    /// `accepted` or `denied`.
    pub result: String,
    /// The first failure, as the registry reports it.
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotExplanation {
    pub robot: String,
    pub matched: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub rules: Vec<RuleExplanation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleExplanation {
    pub rule: String,
    pub matched: bool,
    pub reason: String,
}

impl Explanation {
    /// Adds a step (callers explaining other credentials build the same report).
    pub fn step(&mut self, name: &str, ok: bool, detail: String) {
        self.steps.push(Step { name: name.into(), ok, detail });
    }
    /// Sets `result` and `message` from the steps.
    pub fn finish(mut self) -> Explanation {
        let failed = self.steps.iter().find(|s| !s.ok);
        self.result = if failed.is_none() { "accepted".into() } else { "denied".into() };
        self.message = failed.map(|s| s.detail.clone());
        self
    }
}
