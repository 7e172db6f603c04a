//! People: users who log in through an identity provider's `login` section, and the credentials
//! Berth issues to users (personal access tokens, `berth login` sessions, browser sessions, the
//! credential helper's short-lived passwords).
//!
//! - A person is identified by (issuer, subject), never by name or email alone. The first login
//!   onboards them (when the provider allows it) under the name from the username claim; a name
//!   already used by another user is refused with a message naming the conflict and the command
//!   that resolves it. Groups are refreshed at every login and by the background re-check.
//! - Every credential is `berth_<kind>_<id>_<secret>`: a public id (the row in the store) and a
//!   256-bit secret stored only as its SHA-256. A deleted token stops on every replica within the
//!   generation poll (deleting moves the store's generation, which keys every login cache).
//! - Logins in progress (the browser's authorization request, a device authorization) are rows
//!   of the store with an expiry, taken exactly once, so any replica can finish them and a
//!   replayed `state` finds nothing. Their number is bounded.

use std::net::IpAddr;
use std::time::Duration;

use berth_identity::federation::login::{self as oidc, OidcError, Person};
use berth_identity::FederationError;
use berth_meta::{AuthRequest, MetaError, TokenKind, TokenRecord, UserIdentity, UserRecord};
use serde::{Deserialize, Serialize};

use crate::admin::rfc3339;
use crate::admin::types::{DeviceLoginStarted, HelperCredential, LoginCredential, TokenCreate, TokenCreated, TokenView};
use crate::audit::{AuditAction, AuditResult, EventBuilder};
use crate::clock::now_secs;
use crate::{Core, Error, Result};

/// Lifetimes and bounds of people's credentials (`[tokens]` in the configuration).
#[derive(Debug, Clone)]
pub struct PeopleConfig {
    /// Longest lifetime of a personal access token (and its default).
    pub token_max_lifetime: Duration,
    /// How long a `berth login` lasts.
    pub cli_lifetime: Duration,
    /// How long a browser session lasts.
    pub web_lifetime: Duration,
    /// How long a credential helper password lasts.
    pub helper_lifetime: Duration,
    /// Personal access tokens per user at most.
    pub max_tokens_per_user: usize,
    /// Logins in progress (all users, all replicas) at most.
    pub max_pending_logins: u64,
    /// How long a person has to finish a login at the identity provider.
    pub login_timeout: Duration,
}

impl Default for PeopleConfig {
    fn default() -> Self {
        PeopleConfig {
            token_max_lifetime: Duration::from_secs(90 * 24 * 3600),
            cli_lifetime: Duration::from_secs(30 * 24 * 3600),
            web_lifetime: Duration::from_secs(12 * 3600),
            helper_lifetime: Duration::from_secs(3600),
            max_tokens_per_user: 100,
            max_pending_logins: 10_000,
            login_timeout: Duration::from_secs(600),
        }
    }
}

// ---------------------------------------------------------------- credential text

const PREFIX: &str = "berth_";
const ID_LEN: usize = 16;

fn kind_tag(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Personal => "pat",
        TokenKind::Cli => "cli",
        TokenKind::Web => "web",
        TokenKind::Helper => "hlp",
    }
}

/// A credential's text: `berth_<pat|cli|web|hlp>_<id>_<secret>`.
pub fn token_text(kind: TokenKind, id: &str, secret: &str) -> String {
    format!("{PREFIX}{}_{id}_{secret}", kind_tag(kind))
}

/// Splits a credential's text into its kind, id and secret; None if it is not one.
pub fn parse_token_text(text: &str) -> Option<(TokenKind, &str, &str)> {
    let rest = text.strip_prefix(PREFIX)?;
    let (tag, rest) = rest.split_at_checked(3)?;
    let kind = TokenKind::ALL.into_iter().find(|k| kind_tag(*k) == tag)?;
    let rest = rest.strip_prefix('_')?;
    let (id, rest) = rest.split_at_checked(ID_LEN)?;
    let secret = rest.strip_prefix('_')?;
    let id_ok = id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let secret_ok = (32..=128).contains(&secret.len()) && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some((kind, id, secret))
}

/// Whether a password or Bearer value is meant as a Berth credential (then it is checked only
/// as one).
pub fn looks_like_token(text: &str) -> bool {
    text.starts_with(PREFIX)
}

/// Lowercase hex SHA-256 of a secret.
pub fn secret_hash(secret: &str) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(secret.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_id() -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    (0..ID_LEN).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

/// A personal access token's restriction, as stored in its `scope`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenScope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projects: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<String>>,
}

impl TokenScope {
    pub fn from_record(t: &TokenRecord) -> TokenScope {
        t.scope.clone().and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default()
    }
}

pub(crate) fn token_view(t: &TokenRecord) -> TokenView {
    let scope = TokenScope::from_record(t);
    TokenView {
        id: t.id.clone(),
        user: t.user.clone(),
        kind: t.kind.as_str().to_owned(),
        name: t.name.clone(),
        created_at: rfc3339(t.created_at),
        expires_at: t.expires_at.map(rfc3339),
        last_used_at: t.last_used_at.map(rfc3339),
        projects: scope.projects,
        actions: scope.actions,
    }
}

fn validate_token_name(name: &str) -> Result<()> {
    let ok = !name.trim().is_empty()
        && name.chars().count() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("token name {:?} must have 1-64 letters, digits, '-', '_', '.' or spaces", crate::text::cap(name, 64))))
    }
}

/// `30d`, `12h`, `1w`: a lifetime.
fn parse_lifetime(s: &str) -> Result<Duration> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num.parse().map_err(|_| Error::Invalid(format!("expiry {s:?} is not like 30d, 12h or 1w")))?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(Error::Invalid(format!("expiry {s:?} is not like 30d, 12h or 1w"))),
    };
    if n == 0 {
        return Err(Error::Invalid("an expiry must be positive".into()));
    }
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

// ---------------------------------------------------------------- logins in progress

/// The `data` of a browser login waiting for its callback.
#[derive(Debug, Serialize, Deserialize)]
struct WebLoginData {
    provider: String,
    nonce: String,
    verifier: String,
    redirect_uri: String,
    /// A path on this server to go back to (never another site).
    return_to: String,
    /// A `berth login` on this machine's loopback (RFC 8252): where the browser goes with a
    /// one-time code instead of getting a session cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cli: Option<CliLoopback>,
}

/// The loopback half of a `berth login` through the browser: the CLI's listener and the S256
/// challenge of the verifier only the CLI holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CliLoopback {
    /// `http://127.0.0.1:<port>/...` or `http://[::1]:<port>/...` (checked by [`CliLoopback::new`]).
    pub redirect: String,
    pub challenge: String,
}

impl CliLoopback {
    /// Checks the CLI's redirect (plain http on a loopback address with a port, nothing else:
    /// a login code never leaves the machine) and challenge (43-128 base64url characters).
    pub fn new(redirect: &str, challenge: &str) -> Result<CliLoopback> {
        let ok_host = ["http://127.0.0.1:", "http://[::1]:", "http://localhost:"].iter().find_map(|p| redirect.strip_prefix(p));
        let valid = ok_host.is_some_and(|rest| {
            let (port, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            port.parse::<u16>().is_ok_and(|p| p > 0) && !path.contains(['?', '#', '@', '\\']) && path.len() <= 200
        });
        if !valid {
            return Err(Error::Invalid("cli_redirect must be http://127.0.0.1:<port>/<path> (a berth login on this machine)".into()));
        }
        if !(43..=128).contains(&challenge.len()) || !challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(Error::Invalid("cli_challenge must be the base64url SHA-256 of the CLI's verifier".into()));
        }
        Ok(CliLoopback { redirect: redirect.to_owned(), challenge: challenge.to_owned() })
    }
}

/// The `data` of a finished browser login waiting for the CLI to fetch its credential.
#[derive(Debug, Serialize, Deserialize)]
struct CliCodeData {
    user: String,
    challenge: String,
    refresh_token: Option<String>,
}

/// How a finished browser login ends.
#[derive(Debug, Clone)]
pub enum WebLoginDone {
    /// A browser session: set the cookie, go to `return_to`.
    Session(WebSession),
    /// A `berth login` through the browser: send the browser to the CLI's loopback URL (which
    /// carries a one-time code the CLI trades with its verifier).
    Cli { redirect: String },
}

/// The `data` of a device login waiting for the person.
#[derive(Debug, Serialize, Deserialize)]
struct DeviceLoginData {
    provider: String,
    device_code: String,
    interval: u64,
    /// Unix seconds of the last poll at the provider (polls are paced by Berth).
    last_poll: i64,
    client: Option<String>,
}

/// A finished browser login: the session cookie's value and where to go.
#[derive(Debug, Clone)]
pub struct WebSession {
    pub user: String,
    /// The cookie's value (a `web` token).
    pub cookie: String,
    pub expires_at: i64,
    pub return_to: String,
}

/// A project as a caller sees it in lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisibleProject {
    pub name: String,
    pub public: bool,
    /// The caller's role there (None: an administrator or a public project's visitor).
    pub role: Option<berth_access::Role>,
}

/// What a device poll found.
#[derive(Debug, Clone)]
pub enum DevicePoll {
    /// Not confirmed yet: poll again after this many seconds.
    Pending { interval: u64 },
    Done(LoginCredential),
}

/// Only paths on this server are places to return to after a login.
pub fn safe_return_path(p: Option<&str>) -> String {
    match p {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && p.len() <= 512 && !p.chars().any(char::is_control) => p.to_owned(),
        _ => "/".into(),
    }
}

fn federation_error(e: FederationError) -> Error {
    match e {
        FederationError::StoreUnavailable(_) => Error::Unavailable("the metadata store"),
        FederationError::NoLogin(m) => Error::NotFound(m),
        FederationError::Keys(m) => Error::Upstream(format!("the identity provider's keys could not be fetched: {m}")),
        FederationError::Internal(m) => Error::internal("checking an ID token", m),
        other => Error::Unauthenticated(format!("the identity provider's answer was refused: {}", other.public_message())),
    }
}

fn oidc_error(provider: &str, e: OidcError) -> Error {
    match e {
        OidcError::Unavailable(m) => {
            tracing::warn!(provider, error = %m, "identity provider unavailable");
            Error::Upstream(format!("identity provider {provider:?} is unavailable; try again later (the server log has the details)"))
        }
        OidcError::Refused { .. } => Error::Unauthenticated(format!("identity provider {provider:?} refused the login: {e}")),
        OidcError::Provider(m) => Error::Upstream(format!("identity provider {provider:?}: {m}")),
    }
}

impl Core {
    // ------------------------------------------------------------ issuing credentials

    /// Stores a new credential of `user` and returns its record and text.
    #[allow(clippy::too_many_arguments)] // each is a column of the token; a struct would only rename them
    pub(crate) async fn issue_user_token(
        &self,
        user: &str,
        kind: TokenKind,
        name: &str,
        lifetime: Option<Duration>,
        parent: Option<&str>,
        refresh_token: Option<String>,
        scope: Option<TokenScope>,
    ) -> Result<(TokenRecord, String)> {
        let now = now_secs();
        let secret = oidc::random_text(32);
        let rec = TokenRecord {
            id: new_id(),
            user: user.to_owned(),
            kind,
            name: name.to_owned(),
            secret_hash: secret_hash(&secret),
            parent: parent.map(str::to_owned),
            scope: scope.filter(|s| *s != TokenScope::default()).map(|s| serde_json::to_value(s).unwrap_or_default()),
            created_at: now,
            expires_at: lifetime.map(|l| now.saturating_add(l.as_secs() as i64)),
            last_used_at: None,
            refresh_token,
            checked_at: Some(now),
        };
        self.meta.create_token(&rec).await?;
        let text = token_text(kind, &rec.id, &secret);
        Ok((rec, text))
    }

    /// Creates a personal access token for `user` (the caller itself).
    pub async fn create_personal_token(&self, user: &str, req: &TokenCreate, client: Option<IpAddr>) -> Result<TokenCreated> {
        validate_token_name(&req.name)?;
        let max = self.config.people.token_max_lifetime;
        let lifetime = match &req.expires {
            None => max,
            Some(e) => {
                let l = parse_lifetime(e)?;
                if l > max {
                    return Err(Error::Invalid(format!(
                        "expiry {e:?} is longer than this server allows for personal access tokens ({} days); ask for less",
                        max.as_secs() / 86_400
                    )));
                }
                l
            }
        };
        let mut scope = TokenScope::default();
        if let Some(projects) = &req.projects {
            if projects.is_empty() || projects.len() > 64 {
                return Err(Error::Invalid("give 1 to 64 projects, or leave `projects` out for all of them".into()));
            }
            for p in projects {
                berth_access::validate_project_name(p).map_err(Error::Invalid)?;
            }
            scope.projects = Some(projects.clone());
        }
        if let Some(actions) = &req.actions {
            let set = berth_access::ActionSet::parse_words(actions.iter().map(String::as_str));
            if actions.is_empty() || set.iter().count() != actions.len() {
                return Err(Error::Invalid("actions are pull, push and delete, each at most once".into()));
            }
            scope.actions = Some(actions.clone());
        }
        let existing = self.meta.list_tokens(user, &[TokenKind::Personal]).await?;
        if existing.iter().any(|t| t.name == req.name) {
            return Err(Error::Conflict(format!("you already have a token named {:?}; revoke it first (berth token revoke) or pick another name", req.name)));
        }
        if existing.len() >= self.config.people.max_tokens_per_user {
            return Err(Error::Conflict(format!(
                "you have {} personal access tokens, the most this server allows; revoke some first (berth token list)",
                existing.len()
            )));
        }
        let (rec, secret) = self.issue_user_token(user, TokenKind::Personal, &req.name, Some(lifetime), None, None, Some(scope)).await?;
        self.audit.record(
            EventBuilder::new(AuditAction::Credential, AuditResult::Ok, user).client(client).message(format!("created personal access token {:?} ({})", rec.name, rec.id)).build(),
        );
        Ok(TokenCreated { token: token_view(&rec), secret })
    }

    /// A browser session for a user who signed in with a password (the UI's sign-in form).
    pub async fn open_web_session(&self, user: &str, client: Option<IpAddr>) -> Result<WebSession> {
        let life = self.config.people.web_lifetime;
        let (rec, cookie) = self.issue_user_token(user, TokenKind::Web, "browser session", Some(life), None, None, None).await?;
        self.audit.record(EventBuilder::new(AuditAction::Login, AuditResult::Ok, user).client(client).message(format!("browser sign-in with a password ({})", rec.id)).build());
        Ok(WebSession { user: user.to_owned(), cookie, expires_at: rec.expires_at.unwrap_or_default(), return_to: "/".into() })
    }

    /// The projects a caller may see, with their role there: all of them for administrators,
    /// else the public ones and those the caller (or a group of theirs) is a member of.
    pub async fn visible_projects(&self, who: &crate::auth::Principal) -> Result<Vec<VisibleProject>> {
        let projects = self.meta.list_projects().await?;
        let mut roles = ProjectRoles::new();
        if who.kind == berth_identity::PrincipalKind::User {
            if let Some(user) = self.meta.get_user(&who.subject).await? {
                roles = self.project_roles(&user).await?;
            }
        }
        Ok(projects
            .into_iter()
            .filter(|p| who.permissions.admin || p.public || roles.contains_key(&p.name))
            .map(|p| VisibleProject { role: roles.get(&p.name).map(|(r, _)| *r), name: p.name, public: p.public })
            .collect())
    }

    /// The repositories of a project, in name order: at most `n` after `last` (and whether
    /// there are more), for a caller who may pull there. Reads only the project's range of the
    /// sorted names.
    pub async fn project_repositories(&self, who: &crate::auth::Principal, project: &str, n: usize, last: Option<&str>) -> Result<(Vec<String>, bool)> {
        let prefix = format!("{project}/");
        if !who.permissions.on(&format!("{prefix}x")).contains(berth_access::Action::Pull) {
            return Err(Error::Denied(format!("{} may not see the repositories of project {project}", who.subject)));
        }
        // Just below the prefix: `<project>.~` sorts after every name below `<project>/` (the
        // byte before '/' is '.').
        let start = format!("{project}.~");
        let mut after = last.filter(|l| l.starts_with(&prefix)).map(str::to_owned).unwrap_or(start);
        let mut out = Vec::new();
        loop {
            let page = self.meta.list_repositories(berth_meta::Page { last: Some(&after), n: Some(200) }).await?;
            let full = page.len() == 200;
            for name in page {
                if !name.starts_with(&prefix) {
                    return Ok((out, false));
                }
                if out.len() == n {
                    return Ok((out, true));
                }
                after = name.clone();
                out.push(name);
            }
            if !full {
                return Ok((out, false));
            }
        }
    }

    /// A user's tokens (all kinds), oldest first.
    pub async fn list_user_tokens(&self, user: &str) -> Result<Vec<TokenView>> {
        Ok(self.meta.list_tokens(user, &[]).await?.iter().filter(|t| t.kind != TokenKind::Helper).map(token_view).collect())
    }

    /// Revokes a token of `user` (an administrator passes the token's owner). Its children (the
    /// credential helper's passwords of a `berth login`) go with it; every replica refuses it
    /// within the generation poll.
    pub async fn revoke_user_token(&self, user: &str, id: &str, by: &str, client: Option<IpAddr>) -> Result<()> {
        let t = self.meta.get_token(id).await?.filter(|t| t.user == user).ok_or_else(|| Error::not_found("token", id))?;
        self.meta.delete_token(&t.id).await?;
        self.changed().await;
        self.audit.record(
            EventBuilder::new(AuditAction::Credential, AuditResult::Ok, by)
                .client(client)
                .message(format!("revoked {} token {:?} ({}) of {user}", t.kind.as_str(), t.name, t.id))
                .build(),
        );
        Ok(())
    }

    /// A `berth login` with a local password (or any credential of a person): a `cli` token.
    pub async fn cli_login(&self, user: &str, client: Option<IpAddr>) -> Result<LoginCredential> {
        let life = self.config.people.cli_lifetime;
        // Logins pile up (every `docker login` makes one): the oldest beyond the bound go.
        let logins = self.meta.list_tokens(user, &[TokenKind::Cli]).await?;
        let excess = logins.len().saturating_sub(self.config.people.max_tokens_per_user.saturating_sub(1));
        for old in logins.iter().take(excess) {
            self.meta.delete_token(&old.id).await?;
        }
        let (rec, token) = self.issue_user_token(user, TokenKind::Cli, "berth login", Some(life), None, None, None).await?;
        self.audit.record(EventBuilder::new(AuditAction::Credential, AuditResult::Ok, user).client(client).message(format!("berth login ({})", rec.id)).build());
        Ok(LoginCredential { username: user.to_owned(), token, expires_at: rfc3339(rec.expires_at.unwrap_or_default()) })
    }

    /// The credential helper: a short-lived registry password derived from a `berth login`
    /// (revoked with it). `token` is the id of the `cli` token the caller used.
    pub async fn helper_credential(&self, user: &str, cli_token: &str) -> Result<HelperCredential> {
        let parent = self.meta.get_token(cli_token).await?.filter(|t| t.kind == TokenKind::Cli && t.user == user).ok_or_else(|| {
            Error::Denied("the credential helper needs the credential of a `berth login` (not a personal access token)".into())
        })?;
        let mut life = self.config.people.helper_lifetime;
        if let Some(end) = parent.expires_at {
            life = life.min(Duration::from_secs((end - now_secs()).max(1) as u64));
        }
        let (rec, secret) = self.issue_user_token(user, TokenKind::Helper, "credential helper", Some(life), Some(&parent.id), None, None).await?;
        Ok(HelperCredential { username: user.to_owned(), secret, expires_at: rec.expires_at.unwrap_or_default() })
    }

    /// Who a caller is: name, identity, groups, roles per project (and which member entries give
    /// them), and the Berth token used.
    pub async fn whoami(&self, p: &crate::auth::Principal) -> Result<crate::admin::types::WhoAmI> {
        use crate::admin::types::{ProjectRole, WhoAmI};
        let mut who = WhoAmI {
            name: p.subject.clone(),
            kind: p.kind.as_str().to_owned(),
            admin: p.permissions.admin,
            provider: p.origin.as_ref().map(|o| o.idp.clone()).filter(|i| !i.is_empty()),
            issuer: None,
            subject: p.origin.as_ref().and_then(|o| o.sub.clone()),
            email: None,
            groups: vec![],
            roles: vec![],
            token: None,
        };
        if p.kind != berth_identity::PrincipalKind::User {
            return Ok(who);
        }
        let Some(user) = self.meta.get_user(&p.subject).await? else { return Ok(who) };
        who.issuer = user.identity.as_ref().map(|i| i.issuer.clone());
        who.email = user.email.clone();
        who.groups = user.groups.clone();
        let roles = self.project_roles(&user).await?;
        who.roles = roles.into_iter().map(|(project, (role, via))| ProjectRole { project, role: role.as_str().to_owned(), via }).collect();
        if let Some(id) = p.origin.as_ref().and_then(|o| o.token.as_deref()) {
            who.token = self.meta.get_token(id).await?.map(|t| token_view(&t));
        }
        Ok(who)
    }

    // ------------------------------------------------------------ onboarding

    /// The user a verified person logs in as: found by (issuer, subject), else onboarded under
    /// the username claim when the provider allows it. Their groups, email and admin flag are
    /// brought up to date.
    pub(crate) async fn person_user(&self, person: &Person) -> Result<UserRecord> {
        let now = now_secs();
        if let Some(u) = self.meta.get_user_by_identity(&person.issuer, &person.subject).await? {
            if u.disabled {
                return Err(Error::Denied(format!("user {} is disabled; an administrator can enable it again", u.name)));
            }
            let updated = self.meta.update_user_login(&u.name, &person.groups, person.email.as_deref(), Some(now)).await?;
            let mut u = updated.ok_or_else(|| Error::Unauthenticated("the user was deleted while logging in; log in again".into()))?;
            // With an admin group, the provider decides who administers (at every login).
            if person.admin != u.admin && self.admin_group_configured(&person.provider).await {
                u.admin = person.admin;
                if let Err(e) = self.meta.put_user(&u).await {
                    // The last enabled admin is never demoted by the store; keep what is stored.
                    tracing::warn!(user = %u.name, error = %e, "could not follow the identity provider's admin group");
                    u = self.meta.get_user(&u.name).await?.unwrap_or(u);
                }
            }
            return Ok(u);
        }
        let login = self.federation.login_provider_config(&person.provider).await.map_err(federation_error)?;
        if !login.auto_onboard {
            return Err(Error::Denied(format!(
                "{} ({}) is not a user of this registry yet, and identity provider {:?} does not onboard people by itself; an administrator runs: berth user link {} --idp {} --subject {}",
                person.username, person.subject, person.provider, person.username, person.provider, person.subject
            )));
        }
        let user = UserRecord {
            name: person.username.clone(),
            password_hash: String::new(),
            admin: person.admin,
            disabled: false,
            identity: Some(UserIdentity { provider: person.provider.clone(), issuer: person.issuer.clone(), subject: person.subject.clone() }),
            email: person.email.clone(),
            groups: person.groups.clone(),
            created_at: now,
            last_login_at: Some(now),
        };
        match self.meta.create_user(&user).await {
            Ok(true) => {
                self.changed().await;
                tracing::info!(user = %user.name, provider = %person.provider, "onboarded a person at their first login");
                Ok(user)
            }
            Ok(false) => {
                let other = self.meta.get_user(&person.username).await?;
                let whose = match other.and_then(|o| o.identity) {
                    Some(i) => format!("the person {} of identity provider {:?}", i.subject, i.provider),
                    None => "a local user".into(),
                };
                Err(Error::Conflict(format!(
                    "the user name {:?} is already taken by {whose}; an administrator links your account to it with `berth user link {} --idp {} --subject {}` (if it is you), or renames the other user",
                    person.username, person.username, person.provider, person.subject
                )))
            }
            Err(MetaError::Conflict(m)) => Err(Error::Conflict(m)),
            Err(e) => Err(e.into()),
        }
    }

    async fn admin_group_configured(&self, provider: &str) -> bool {
        self.federation.login_provider_config(provider).await.map(|l| l.admin_group.is_some()).unwrap_or(false)
    }

    // ------------------------------------------------------------ the browser's login

    /// Starts a browser login: the URL of the identity provider's authorization request. The
    /// callback is `redirect_uri` (`<external URL>/auth/oidc/callback`).
    pub async fn start_web_login(&self, provider: &str, redirect_uri: &str, return_to: Option<&str>, cli: Option<CliLoopback>, client: Option<IpAddr>) -> Result<String> {
        self.pending_login_allowed(client).await?;
        let lp = self.federation.login_provider(provider).await.map_err(federation_error)?;
        let state = oidc::random_text(24);
        let nonce = oidc::random_text(24);
        let (verifier, challenge) = oidc::pkce();
        let url = oidc::authorization_url(&lp.endpoints, lp.login(), redirect_uri, &state, &nonce, &challenge).map_err(|e| oidc_error(provider, e))?;
        let data = WebLoginData { provider: provider.to_owned(), nonce, verifier, redirect_uri: redirect_uri.to_owned(), return_to: safe_return_path(return_to), cli };
        self.put_pending(&state, "web", serde_json::to_value(&data).unwrap_or_default()).await?;
        Ok(url)
    }

    async fn put_pending(&self, id: &str, kind: &str, data: serde_json::Value) -> Result<()> {
        let now = now_secs();
        let req = AuthRequest { id: id.to_owned(), kind: kind.to_owned(), data, created_at: now, expires_at: now + self.config.people.login_timeout.as_secs() as i64 };
        match self.meta.put_auth_request(&req, self.config.people.max_pending_logins, now).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::internal("storing a login in progress", "random id collision")),
            Err(MetaError::Conflict(_)) => {
                tracing::warn!("too many logins in progress; refusing new ones until some finish or expire");
                Err(Error::Busy { message: "too many logins are in progress right now; try again in a minute".into(), retry_after: 60 })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Logins in progress are started by anonymous callers: each address may start a few per
    /// login window (the failed-login counters of the store, shared by replicas).
    async fn pending_login_allowed(&self, client: Option<IpAddr>) -> Result<()> {
        let Some(ip) = client else { return Ok(()) };
        let l = &self.config.limits;
        let len = l.login_window.as_secs().max(1) as i64;
        let now = now_secs();
        let window = now - now.rem_euclid(len);
        let n = self.meta.record_login_failure(&format!("login-start:{ip}"), window).await?;
        if n > l.login_failures_per_address.saturating_mul(4) {
            let retry_after = (window + len - now).max(1) as u64;
            return Err(Error::RateLimited { message: format!("too many logins started from your address; try again in {retry_after} s"), retry_after });
        }
        Ok(())
    }

    /// Finishes a browser login at the callback: takes the login by its `state` (single use),
    /// trades the code (with the PKCE verifier), verifies the ID token (nonce included), finds or
    /// onboards the user, and opens a session.
    pub async fn finish_web_login(&self, state: &str, code: &str, client: Option<IpAddr>) -> Result<WebLoginDone> {
        let now = now_secs();
        let pending = self.meta.take_auth_request(state, now).await?.filter(|r| r.kind == "web").ok_or_else(|| {
            Error::Unauthenticated("this login is unknown, expired or already used (its state does not match); start the login again".into())
        })?;
        let data: WebLoginData = serde_json::from_value(pending.data).map_err(|e| Error::internal("reading a login in progress", e))?;
        let lp = self.federation.login_provider(&data.provider).await.map_err(federation_error)?;
        let tokens = oidc::exchange_code(&lp.http, &lp.endpoints, lp.login(), code, &data.verifier, &data.redirect_uri)
            .await
            .map_err(|e| oidc_error(&data.provider, e))?;
        let person = self.person_from_tokens(&data.provider, &tokens, Some(&data.nonce), client).await?;
        let user = self.person_user(&person).await.inspect_err(|e| self.audit_person_refused(&person, e, client))?;
        if let Some(cli) = data.cli {
            // The CLI fetches its credential with the code and its verifier (RFC 8252 + PKCE):
            // whoever sees the loopback URL without the verifier gets nothing.
            let one_time = oidc::random_text(24);
            let pending = CliCodeData { user: user.name.clone(), challenge: cli.challenge, refresh_token: tokens.refresh_token.clone() };
            let now = now_secs();
            let req = AuthRequest { id: one_time.clone(), kind: "cli-code".into(), data: serde_json::to_value(&pending).unwrap_or_default(), created_at: now, expires_at: now + 120 };
            if !self.meta.put_auth_request(&req, self.config.people.max_pending_logins, now).await.map_err(|e| match e {
                MetaError::Conflict(_) => Error::Busy { message: "too many logins are in progress right now; try again in a minute".into(), retry_after: 60 },
                other => other.into(),
            })? {
                return Err(Error::internal("storing a login code", "random id collision"));
            }
            tracing::info!(user = %user.name, provider = %person.provider, "a person logged in through the browser for berth login");
            let sep = if cli.redirect.contains('?') { '&' } else { '?' };
            return Ok(WebLoginDone::Cli { redirect: format!("{}{sep}code={one_time}", cli.redirect) });
        }
        let life = self.config.people.web_lifetime;
        let (rec, cookie) = self.issue_user_token(&user.name, TokenKind::Web, "browser session", Some(life), None, tokens.refresh_token.clone(), None).await?;
        self.audit_person_login(&user, &person, "browser", &rec, client);
        Ok(WebLoginDone::Session(WebSession { user: user.name, cookie, expires_at: rec.expires_at.unwrap_or_default(), return_to: data.return_to }))
    }

    /// The CLI's half of a `berth login` through the browser: trades the one-time code from its
    /// loopback (single use, 2 minutes) and the PKCE verifier it kept for a `cli` credential.
    pub async fn exchange_cli_code(&self, code: &str, verifier: &str, client: Option<IpAddr>) -> Result<LoginCredential> {
        use base64::Engine as _;
        use sha2::Digest as _;
        let now = now_secs();
        let refused = || Error::Unauthenticated("this login code is unknown, expired or already used; run `berth login` again".into());
        let pending = self.meta.take_auth_request(code, now).await?.filter(|r| r.kind == "cli-code").ok_or_else(refused)?;
        let data: CliCodeData = serde_json::from_value(pending.data).map_err(|e| Error::internal("reading a login code", e))?;
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
        if !berth_identity::secret_eq(challenge.as_bytes(), data.challenge.as_bytes()) {
            return Err(refused());
        }
        let life = self.config.people.cli_lifetime;
        let (rec, token) = self.issue_user_token(&data.user, TokenKind::Cli, "berth login", Some(life), None, data.refresh_token, None).await?;
        self.audit.record(EventBuilder::new(AuditAction::Login, AuditResult::Ok, &data.user).client(client).message(format!("browser login for berth login ({})", rec.id)).build());
        Ok(LoginCredential { username: data.user, token, expires_at: rfc3339(rec.expires_at.unwrap_or_default()) })
    }

    async fn person_from_tokens(&self, provider: &str, tokens: &oidc::TokenResponse, nonce: Option<&str>, client: Option<IpAddr>) -> Result<Person> {
        let id_token = tokens.id_token.as_deref().ok_or_else(|| Error::Upstream(format!("identity provider {provider:?} answered without an ID token (is `openid` among the scopes?)")))?;
        match self.federation.verify_id_token(provider, id_token, nonce).await {
            Ok(p) => Ok(p),
            Err(e) => {
                let err = crate::auth::LoginError::Federation(e.clone());
                crate::auth::audit_login_failure(self, None, &err, client);
                Err(federation_error(e))
            }
        }
    }

    fn audit_person_login(&self, user: &UserRecord, person: &Person, how: &str, token: &TokenRecord, client: Option<IpAddr>) {
        tracing::info!(
            user = %user.name,
            provider = %person.provider,
            how,
            groups = person.groups.len(),
            rechecked = token.refresh_token.is_some(),
            "a person logged in{}",
            if token.refresh_token.is_some() { "" } else { " (no refresh token: their groups are re-checked only at their next login)" }
        );
        let origin = person_origin(person, Some(&token.id));
        self.audit.record(
            EventBuilder::new(AuditAction::Login, AuditResult::Ok, &user.name)
                .origin(Some(&origin))
                .client(client)
                .message(format!("{how} login; groups: {}", person.groups.join(", ")))
                .build(),
        );
    }

    fn audit_person_refused(&self, person: &Person, e: &Error, client: Option<IpAddr>) {
        let origin = person_origin(person, None);
        self.audit.record(
            EventBuilder::new(AuditAction::Login, AuditResult::Denied, &person.username).origin(Some(&origin)).client(client).message(e.to_string()).build(),
        );
    }

    /// Ends a browser session (the cookie's token is deleted on every replica). Returns where the
    /// browser goes to end its session at the identity provider too, when it offers that.
    pub async fn end_web_session(&self, cookie: &str, post_logout: &str) -> Result<Option<String>> {
        let Some((TokenKind::Web, id, secret)) = parse_token_text(cookie) else { return Ok(None) };
        let Some(t) = self.meta.get_token(id).await? else { return Ok(None) };
        if !berth_identity::secret_eq(t.secret_hash.as_bytes(), secret_hash(secret).as_bytes()) {
            return Ok(None);
        }
        self.meta.delete_token(id).await?;
        self.changed().await;
        let user = self.meta.get_user(&t.user).await?;
        let Some(provider) = user.and_then(|u| u.identity).map(|i| i.provider) else { return Ok(None) };
        Ok(match self.federation.login_provider(&provider).await {
            Ok(lp) => oidc::end_session_url(&lp.endpoints, lp.login(), None, post_logout),
            Err(_) => None,
        })
    }

    // ------------------------------------------------------------ the CLI's device login

    /// Starts a device login (RFC 8628) at the identity provider for `berth login --idp`.
    pub async fn start_device_login(&self, provider: &str, client: Option<IpAddr>) -> Result<DeviceLoginStarted> {
        self.pending_login_allowed(client).await?;
        let lp = self.federation.login_provider(provider).await.map_err(federation_error)?;
        let d = oidc::device_authorization(&lp.http, &lp.endpoints, lp.login()).await.map_err(|e| oidc_error(provider, e))?;
        let handle = oidc::random_text(24);
        let interval = oidc::device_interval(&d).as_secs();
        let data = DeviceLoginData { provider: provider.to_owned(), device_code: d.device_code.clone(), interval, last_poll: 0, client: client.map(|c| c.to_string()) };
        self.put_pending(&handle, "device", serde_json::to_value(&data).unwrap_or_default()).await?;
        Ok(DeviceLoginStarted {
            handle,
            user_code: d.user_code,
            verification_uri: d.verification_uri,
            verification_uri_complete: d.verification_uri_complete,
            expires_in: d.expires_in.min(self.config.people.login_timeout.as_secs()),
            interval,
        })
    }

    /// One poll of a device login. Polls faster than the provider's interval are answered
    /// `Pending` without asking the provider.
    pub async fn poll_device_login(&self, handle: &str, client: Option<IpAddr>) -> Result<DevicePoll> {
        let now = now_secs();
        let unknown = || Error::Unauthenticated("this device login is unknown, expired or finished; run `berth login` again".into());
        let pending = self.meta.get_auth_request(handle, now).await?.filter(|r| r.kind == "device").ok_or_else(unknown)?;
        let mut data: DeviceLoginData = serde_json::from_value(pending.data).map_err(|e| Error::internal("reading a login in progress", e))?;
        if now - data.last_poll < data.interval as i64 {
            return Ok(DevicePoll::Pending { interval: data.interval });
        }
        data.last_poll = now;
        if !self.meta.update_auth_request(handle, &serde_json::to_value(&data).unwrap_or_default(), now).await? {
            return Err(unknown());
        }
        let lp = self.federation.login_provider(&data.provider).await.map_err(federation_error)?;
        let tokens = match oidc::poll_device(&lp.http, &lp.endpoints, lp.login(), &data.device_code).await {
            Ok(t) => t,
            Err(e) => match e.code() {
                Some("authorization_pending") => return Ok(DevicePoll::Pending { interval: data.interval }),
                Some("slow_down") => {
                    data.interval += 5;
                    let _ = self.meta.update_auth_request(handle, &serde_json::to_value(&data).unwrap_or_default(), now).await;
                    return Ok(DevicePoll::Pending { interval: data.interval });
                }
                _ => {
                    let _ = self.meta.take_auth_request(handle, now).await;
                    return Err(oidc_error(&data.provider, e));
                }
            },
        };
        // Finished: only one poller gets the login.
        if self.meta.take_auth_request(handle, now).await?.is_none() {
            return Err(unknown());
        }
        let person = self.person_from_tokens(&data.provider, &tokens, None, client).await?;
        let user = self.person_user(&person).await.inspect_err(|e| self.audit_person_refused(&person, e, client))?;
        let life = self.config.people.cli_lifetime;
        let (rec, token) = self.issue_user_token(&user.name, TokenKind::Cli, "berth login", Some(life), None, tokens.refresh_token.clone(), None).await?;
        self.audit_person_login(&user, &person, "device", &rec, client);
        Ok(DevicePoll::Done(LoginCredential { username: user.name, token, expires_at: rfc3339(rec.expires_at.unwrap_or_default()) }))
    }

    // ------------------------------------------------------------ the background re-check

    /// How long the background re-check waits between rounds: a quarter of the shortest
    /// `recheckInterval` of any login provider, between 1 s and 60 s.
    pub async fn recheck_period(&self) -> Duration {
        let mut shortest = Duration::from_secs(240);
        if let Ok(list) = self.federation.login_providers().await {
            for (name, _) in list {
                if let Ok(lp) = self.federation.login_provider_config(&name).await {
                    shortest = shortest.min(lp.recheck_interval);
                }
            }
        }
        (shortest / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// Re-checks people at their identity providers with the refresh tokens of their sessions
    /// whose last check is older than the provider's interval: new groups are stored (access
    /// follows on every replica), a refused refresh (account disabled or deleted, session ended
    /// at the provider) ends that session. At most `limit` sessions per call.
    pub async fn recheck_people(&self, limit: u32) -> Result<RecheckReport> {
        let now = now_secs();
        let mut report = RecheckReport::default();
        // The shortest interval of any provider decides which sessions are due; each session is
        // then held to its own provider's interval.
        let providers = self.federation.login_providers().await.map_err(federation_error)?;
        let mut shortest = i64::MAX;
        for (name, _) in &providers {
            if let Ok(l) = self.federation.login_provider_config(name).await {
                shortest = shortest.min(l.recheck_interval.as_secs() as i64);
            }
        }
        if shortest == i64::MAX {
            return Ok(report);
        }
        for t in self.meta.tokens_to_check(now - shortest, now, limit).await? {
            let Some(user) = self.meta.get_user(&t.user).await? else { continue };
            let Some(identity) = user.identity.clone() else { continue };
            let Ok(lp) = self.federation.login_provider(&identity.provider).await else { continue };
            if t.checked_at.unwrap_or(t.created_at) > now - lp.login().recheck_interval.as_secs() as i64 {
                continue;
            }
            let Some(refresh) = t.refresh_token.as_deref() else { continue };
            // One replica per round uses a refresh token: providers rotate them and revoke the
            // whole grant when an old one comes back.
            if !self.meta.claim_token_check(&t.id, t.checked_at, now).await? {
                continue;
            }
            report.checked += 1;
            match oidc::refresh(&lp.http, &lp.endpoints, lp.login(), refresh).await {
                Ok(answer) => {
                    let rotated = answer.refresh_token.clone().unwrap_or_else(|| refresh.to_owned());
                    self.meta.update_token_check(&t.id, Some(&rotated), now).await?;
                    let Some(id_token) = answer.id_token.as_deref() else { continue };
                    match self.federation.verify_id_token(&identity.provider, id_token, None).await {
                        Ok(person) if person.subject == identity.subject => {
                            if person.groups != user.groups {
                                self.meta.update_user_login(&user.name, &person.groups, person.email.as_deref(), None).await?;
                                report.changed += 1;
                                tracing::info!(user = %user.name, groups = %person.groups.join(","), "a person's groups changed at their identity provider");
                            }
                        }
                        Ok(_) => tracing::warn!(user = %user.name, "a refreshed ID token names another subject; ignored"),
                        Err(e) => tracing::warn!(user = %user.name, error = %e, "a refreshed ID token was refused"),
                    }
                }
                Err(OidcError::Refused { error, description }) if error == "invalid_grant" => {
                    // The grant is gone: the session at the provider ended, or (an offline grant,
                    // which only ends when revoked) the account was disabled or deleted there.
                    // The session ends here too, and so does the access through groups until
                    // the person logs in again; with offline grants every token of the user goes.
                    let offline = lp.login().offline_access;
                    let gone = if offline {
                        self.meta.delete_user_tokens(&user.name, &[]).await?
                    } else {
                        u64::from(self.meta.delete_token(&t.id).await?)
                    };
                    if !user.groups.is_empty() {
                        self.meta.update_user_login(&user.name, &[], None, None).await?;
                    }
                    report.ended += 1;
                    let what = if offline {
                        format!("all {gone} tokens of the user were revoked and their groups cleared: the identity provider refused the offline refresh token of {} (the account was disabled or deleted there, or its access revoked)", t.id)
                    } else {
                        format!("{} session {} ended and the user's groups were cleared: the identity provider refused its refresh token (the session ended there)", t.kind.as_str(), t.id)
                    };
                    tracing::info!(user = %user.name, reason = description.as_deref().unwrap_or(""), "{what}");
                    self.audit.record(
                        EventBuilder::new(AuditAction::Credential, AuditResult::Ok, &user.name)
                            .provider(Some(identity.provider.clone()))
                            .message(what)
                            .build(),
                    );
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(user = %user.name, provider = %identity.provider, error = %e, "re-checking a person failed; trying again at the next round");
                }
            }
        }
        if report.changed > 0 || report.ended > 0 {
            self.changed().await;
        }
        Ok(report)
    }
}

/// What one [`Core::recheck_people`] round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecheckReport {
    pub checked: u64,
    pub changed: u64,
    pub ended: u64,
    pub failed: u64,
}

/// The audit origin of a person: provider, subject, the Berth token used.
pub fn person_origin(person: &Person, token: Option<&str>) -> berth_identity::TokenOrigin {
    let mut claims = serde_json::Map::new();
    claims.insert("iss".into(), serde_json::Value::String(person.issuer.clone()));
    berth_identity::TokenOrigin { idp: person.provider.clone(), robots: vec![], sub: Some(person.subject.clone()), jti: None, claims, token: token.map(str::to_owned) }
}

/// A user's role in each project (the highest of their own and their groups' memberships),
/// with the member entries that give it, by project.
pub(crate) type ProjectRoles = std::collections::BTreeMap<String, (berth_access::Role, Vec<String>)>;

impl Core {
    /// [`ProjectRoles`] of a user: one store query for the user's and their groups' keys.
    pub(crate) async fn project_roles(&self, user: &UserRecord) -> Result<ProjectRoles> {
        let mut roles = ProjectRoles::new();
        for m in self.meta.memberships(&crate::auth::member_keys(user)).await? {
            let Ok(role) = berth_access::Role::parse(&m.role) else { continue };
            let e = roles.entry(m.project).or_insert((role, vec![]));
            e.0 = e.0.max(role);
            e.1.push(m.member);
        }
        Ok(roles)
    }
}

/// `berth token explain` for people's credentials.
impl Core {
    /// Explains a Berth token or an ID token of a login provider: whose it is, whether it is
    /// valid, the person's groups and their role in each project (and through which
    /// membership). None for any other token (workload tokens are explained by federation).
    pub async fn explain_person_token(&self, token: &str) -> Option<berth_identity::federation::Explanation> {
        let mut ex = berth_identity::federation::Explanation { now: now_secs().max(0) as u64, ..Default::default() };
        let user = if looks_like_token(token) {
            let Some((kind, id, secret)) = parse_token_text(token) else {
                ex.step("decode", false, "this is not a Berth token's form (berth_<pat|cli|web|hlp>_<id>_<secret>)".into());
                return Some(ex.finish());
            };
            ex.step("decode", true, format!("a Berth {} token, id {id}", kind.as_str()));
            let stored = match self.meta.get_token(id).await {
                Ok(t) => t,
                Err(e) => {
                    ex.step("token", false, format!("the store could not be read: {e}"));
                    return Some(ex.finish());
                }
            };
            let Some(t) = stored.filter(|t| t.kind == kind && berth_identity::secret_eq(t.secret_hash.as_bytes(), secret_hash(secret).as_bytes())) else {
                ex.step("token", false, "no such token: revoked, expired and pruned, or mistyped".into());
                return Some(ex.finish());
            };
            if t.expires_at.is_some_and(|e| e <= now_secs()) {
                ex.step("token", false, format!("{:?} of {} expired at {}", t.name, t.user, rfc3339(t.expires_at.unwrap_or_default())));
                return Some(ex.finish());
            }
            let scope = TokenScope::from_record(&t);
            let limits = match (&scope.projects, &scope.actions) {
                (None, None) => String::new(),
                (p, a) => format!("; restricted to projects {} and actions {}", p.as_ref().map(|v| v.join(",")).unwrap_or("*".into()), a.as_ref().map(|v| v.join(",")).unwrap_or("*".into())),
            };
            ex.step(
                "token",
                true,
                format!("{:?} of {}, valid until {}{limits}", t.name, t.user, t.expires_at.map(rfc3339).unwrap_or_else(|| "it is revoked".into())),
            );
            self.meta.get_user(&t.user).await.ok().flatten()
        } else {
            let provider = self.federation.login_provider_for_token(token).await?;
            ex.provider = Some(provider.clone());
            ex.step("route to identity provider", true, format!("an ID token for Berth's client at identity provider {provider:?}"));
            let person = match self.federation.verify_id_token(&provider, token, None).await {
                Ok(p) => p,
                Err(e) => {
                    ex.step("ID token", false, e.to_string());
                    return Some(ex.finish());
                }
            };
            ex.step("ID token", true, format!("{} (subject {}), groups: {}", person.username, person.subject, if person.groups.is_empty() { "none".into() } else { person.groups.join(", ") }));
            match self.meta.get_user_by_identity(&person.issuer, &person.subject).await.ok().flatten() {
                Some(u) => Some(u),
                None => {
                    let taken = self.meta.get_user(&person.username).await.ok().flatten().is_some();
                    let detail = if taken {
                        format!("not a user yet, and the name {:?} is taken by another user: berth user link {} --idp {provider} --subject {}", person.username, person.username, person.subject)
                    } else {
                        format!("not a user yet: becomes {:?} at the first login (if the provider onboards people)", person.username)
                    };
                    ex.step("user", !taken, detail);
                    // The roles the person's groups would give.
                    Some(UserRecord { name: person.username.clone(), groups: person.groups.clone(), ..Default::default() })
                }
            }
        };
        let Some(user) = user else {
            ex.step("user", false, "the token's user no longer exists".into());
            return Some(ex.finish());
        };
        if user.disabled {
            ex.step("user", false, format!("user {} is disabled", user.name));
            return Some(ex.finish());
        }
        if user.admin {
            ex.step("roles", true, format!("{} is an administrator: everything everywhere", user.name));
            return Some(ex.finish());
        }
        let roles = self.project_roles(&user).await.unwrap_or_default();
        let detail = if roles.is_empty() {
            format!("{} is a member of no project: public projects only", user.name)
        } else {
            roles.iter().map(|(p, (r, via))| format!("{r} in {p} (as {})", via.join(", "))).collect::<Vec<_>>().join("; ")
        };
        ex.step("roles", true, detail);
        Some(ex.finish())
    }
}

/// Delegated administration: what a caller may administer in a project.
impl Core {
    /// Checks that `who` may do `what` in `project`: system administrators everything; people
    /// by their role there (their own or a group's, the highest counts); restricted tokens and
    /// robots nothing. The refusal names the role and the least role that would do.
    pub async fn require_in_project(&self, who: &crate::auth::Principal, project: &str, what: berth_access::Capability) -> Result<()> {
        if who.permissions.admin {
            return Ok(());
        }
        if who.kind != berth_identity::PrincipalKind::User {
            return Err(Error::Denied(format!("{} is not an administrator", who.subject)));
        }
        let restricted = match who.origin.as_ref().and_then(|o| o.token.as_deref()) {
            Some(id) => self.meta.get_token(id).await?.is_some_and(|t| t.scope.is_some()),
            None => false,
        };
        if restricted {
            return Err(Error::Denied("this token is restricted to some projects or actions; administering a project needs an unrestricted token".into()));
        }
        let Some(user) = self.meta.get_user(&who.subject).await? else {
            return Err(Error::Unauthenticated("the user no longer exists".into()));
        };
        let role = self.project_roles(&user).await?.get(project).map(|(r, _)| *r);
        if role.is_some_and(|r| r.allows(what)) {
            return Ok(());
        }
        let least = berth_access::Role::ALL.into_iter().find(|r| r.allows(what)).unwrap_or(berth_access::Role::ProjectAdmin);
        Err(Error::Denied(match role {
            Some(r) => format!("{} is {r} in project {project}; {} needs the {least} role (or a system administrator)", who.subject, what.describe()),
            None => format!("{} is not a member of project {project}; {} needs the {least} role there (or a system administrator)", who.subject, what.describe()),
        }))
    }

    /// The projects in which `who` may do `what` (None: all of them, a system administrator).
    pub async fn projects_where(&self, who: &crate::auth::Principal, what: berth_access::Capability) -> Result<Option<Vec<String>>> {
        if who.permissions.admin {
            return Ok(None);
        }
        if who.kind != berth_identity::PrincipalKind::User {
            return Ok(Some(vec![]));
        }
        let Some(user) = self.meta.get_user(&who.subject).await? else { return Ok(Some(vec![])) };
        let roles = self.project_roles(&user).await?;
        Ok(Some(roles.into_iter().filter(|(_, (r, _))| r.allows(what)).map(|(p, _)| p).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_texts() {
        let secret = oidc::random_text(32);
        for kind in TokenKind::ALL {
            let id = new_id();
            let text = token_text(kind, &id, &secret);
            assert_eq!(parse_token_text(&text), Some((kind, id.as_str(), secret.as_str())), "{text}");
            assert!(looks_like_token(&text));
        }
        for bad in [
            "berth_pat_short_x",
            "berth_xyz_abcdefghijklmnop_".to_owned().as_str(),
            &format!("berth_pat_ABCDEFGHIJKLMNOP_{secret}"),
            &format!("berth_pat_abcdefghijklmnop_{}", "x".repeat(10)),
            &format!("berth_pat_abcdefghijklmnop_{secret}!"),
            "eyJhbGciOi.x.y",
        ] {
            assert_eq!(parse_token_text(bad), None, "{bad}");
        }
        assert_eq!(secret_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn lifetimes_and_names() {
        assert_eq!(parse_lifetime("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_lifetime("12h").unwrap(), Duration::from_secs(12 * 3600));
        assert_eq!(parse_lifetime("2w").unwrap(), Duration::from_secs(14 * 86_400));
        for bad in ["", "d", "0d", "5 parsecs", "-1d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
        validate_token_name("laptop 2").unwrap();
        for bad in ["", " ", "a/b", &"x".repeat(65)] {
            assert!(validate_token_name(bad).is_err(), "{bad}");
        }
        assert_eq!(safe_return_path(Some("/ui/projects?x=1")), "/ui/projects?x=1");
        let challenge = "a".repeat(43);
        for ok in ["http://127.0.0.1:4711/callback", "http://[::1]:80/", "http://localhost:1/cb", "http://127.0.0.1:65535"] {
            CliLoopback::new(ok, &challenge).unwrap();
        }
        for bad in [
            "https://127.0.0.1:4711/",
            "http://127.0.0.1/cb",
            "http://127.0.0.1:0/cb",
            "http://127.0.0.1:99999/",
            "http://127.0.0.1.evil.example:80/",
            "http://127.0.0.1:80@evil.example/",
            "http://10.0.0.1:80/",
            "http://127.0.0.1:80/cb?x=1",
            "javascript:alert(1)",
        ] {
            assert!(CliLoopback::new(bad, &challenge).is_err(), "{bad}");
        }
        assert!(CliLoopback::new("http://127.0.0.1:80/", "short").is_err());
        for bad in [None, Some("https://evil.example/"), Some("//evil.example"), Some("/\\evil"), Some("ui")] {
            assert_eq!(safe_return_path(bad), "/", "{bad:?}");
        }
    }
}
