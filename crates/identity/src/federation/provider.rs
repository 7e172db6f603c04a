//! Identity providers: the document an admin writes (API, CLI, `berth apply`), its presets
//! (workloads: `github`, `gitlab`, `forgejo`, `kubernetes`; people: `keycloak`, `authentik`,
//! `google`, and `gitlab` again), and its validation into a [`Provider`] that the verifier uses.
//! A provider serves workload federation (robots match its tokens' claims), human login (its
//! `login` section: an OpenID client of Berth's), or both. No IO.

use std::time::Duration;

use berth_jose::{Algorithm, JwkSet};
use serde::{Deserialize, Serialize};

/// Default `maxTokenLifetime`: GitLab's job-timeout tokens and Kubernetes' one-hour tokens pass,
/// year-long tokens do not.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Default `clockSkew`.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Upper bound of `clockSkew` (RFC 8725: keep skew small).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(600);

/// A preset fills in what a platform always has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// GitHub Actions: `https://token.actions.githubusercontent.com`, or
    /// `https://token.actions.githubusercontent.com/<enterpriseSlug>` for an enterprise slug.
    Github,
    /// GitLab CI: `https://gitlab.com` or the `instance` URL of a self-managed GitLab.
    Gitlab,
    /// Forgejo Actions: `<instance>/api/actions`.
    Forgejo,
    /// A Kubernetes cluster's service-account issuer, usually with static keys (`jwks`).
    Kubernetes,
    /// Keycloak, for people: `<instance>/realms/<realm>`. Its groups come as paths
    /// (`/team-demo`) unless its mapper's "Full group path" is off: the default
    /// `groupsFormat` is `strip-slash`.
    Keycloak,
    /// authentik, for people: `<instance>/application/o/<slug>/`.
    Authentik,
    /// Google accounts, for people: `https://accounts.google.com` (no groups claim).
    Google,
}

impl Preset {
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Github => "github",
            Preset::Gitlab => "gitlab",
            Preset::Forgejo => "forgejo",
            Preset::Kubernetes => "kubernetes",
            Preset::Keycloak => "keycloak",
            Preset::Authentik => "authentik",
            Preset::Google => "google",
        }
    }

    /// Every preset, in the order help texts list them.
    pub const ALL: [Preset; 7] =
        [Preset::Github, Preset::Gitlab, Preset::Forgejo, Preset::Kubernetes, Preset::Keycloak, Preset::Authentik, Preset::Google];

    /// Whether the preset is meant for people (human login) rather than workloads.
    pub fn for_people(self) -> bool {
        matches!(self, Preset::Keycloak | Preset::Authentik | Preset::Google)
    }

    /// The claims recorded in the audit log for tokens of this platform.
    pub fn audit_claims(self) -> &'static [&'static str] {
        match self {
            Preset::Github | Preset::Forgejo => &["repository", "workflow", "run_id", "actor", "ref", "sha"],
            Preset::Gitlab => &["project_path", "pipeline_id", "job_id", "user_login", "ref"],
            Preset::Kubernetes => &[
                "kubernetes.io.namespace",
                "kubernetes.io.serviceaccount.name",
                "kubernetes.io.pod.name",
            ],
            Preset::Keycloak | Preset::Authentik | Preset::Google => &["preferred_username", "email"],
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            format!("unknown preset {s:?} (use github, gitlab, forgejo, kubernetes, keycloak, authentik or google)")
        })
    }
}

/// An identity provider as written by an admin. Stored as JSON in the metadata store; the same
/// shape is used by the admin API and `berth apply` files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// The `iss` of its tokens. Compared exactly; one trailing slash is tolerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `github` preset: the GitHub Enterprise slug (issuer gets `/<slug>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enterprise_slug: Option<String>,
    /// `gitlab`, `forgejo`, `keycloak` and `authentik` presets: the instance URL
    /// (`https://gitlab.example.com`, `https://kc.example.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// `keycloak` preset: the realm (issuer `<instance>/realms/<realm>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// `authentik` preset: the application's slug (issuer `<instance>/application/o/<slug>/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    /// A workload token must carry at least one of these in `aud`. Required unless the provider
    /// is for human login only (it has `login` and no robots use it).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Where the OIDC discovery document is; default `{issuer}/.well-known/openid-configuration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_url: Option<String>,
    /// The JWKS URL, skipping discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Static keys (a JWKS object, or its JSON text): no network at all. For private clusters:
    /// `kubectl get --raw /openid/v1/jwks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// PEM CA certificate(s) to trust for this issuer's HTTPS, in addition to the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    /// Allowed signature algorithms. Default: what discovery advertises within RS256/384/512,
    /// PS256/384/512, ES256/384/512, EdDSA (all of those with static keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
    /// Longest accepted `exp - iat`, like `24h` or `1h 30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_token_lifetime: Option<String>,
    /// Allowed clock difference, like `60s`. At most 10 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew: Option<String>,
    /// Claims recorded in the audit log (claim paths); default per preset, else `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_claims: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Human login through this provider: Berth is an OpenID client of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<LoginSpec>,
}

/// How group names from the provider become Berth's group names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupsFormat {
    /// As sent.
    AsIs,
    /// Without one leading `/` (Keycloak's full paths: `/team-demo` → `team-demo`,
    /// `/dept/team` → `dept/team`).
    StripSlash,
    /// The last path segment (`/dept/team` → `team`).
    LastSegment,
}

impl GroupsFormat {
    pub fn apply(self, group: &str) -> String {
        match self {
            GroupsFormat::AsIs => group.to_owned(),
            GroupsFormat::StripSlash => group.strip_prefix('/').unwrap_or(group).to_owned(),
            GroupsFormat::LastSegment => group.trim_end_matches('/').rsplit('/').next().unwrap_or(group).to_owned(),
        }
    }
}

/// Human login through an identity provider, as written by an admin (the `login` section).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginSpec {
    /// Berth's client id at the provider; ID tokens must be issued to it (`aud`, `azp`).
    pub client_id: String,
    /// The client secret (confidential client). The admin API never shows it: reading a provider
    /// gives `clientSecretSet` instead, and writing a provider without it keeps the stored one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Set by Berth on reads: whether a client secret is stored. Ignored on writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_set: Option<bool>,
    /// Scopes asked for; default `openid profile email` (`openid` is always added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Also ask for `offline_access`: the provider gives a refresh token, with which Berth
    /// re-checks the person's groups and account in the background.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offline_access: bool,
    /// The claim that becomes the user name; default `preferred_username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_claim: Option<String>,
    /// The claim with the person's groups (a list of strings, or one string); default `groups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
    /// `as-is`, `strip-slash` or `last-segment`; default `strip-slash` with the keycloak preset,
    /// else `as-is`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_format: Option<GroupsFormat>,
    /// Members of this group (after `groupsFormat`) are Berth administrators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_group: Option<String>,
    /// Whether a person who never logged in becomes a user at their first login (default true);
    /// when false an administrator creates the user first (`berth user link`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_onboard: Option<bool>,
    /// When set, only people whose verified email is in one of these domains may log in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_email_domains: Vec<String>,
    /// How often people with a refresh token are re-checked at the provider; default `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck_interval: Option<String>,
    /// The label of the login button ("Log in with <displayName>"); default the provider's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// Default `recheckInterval`.
pub const DEFAULT_RECHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest `recheckInterval` (tests use it; a provider should not be polled harder).
pub const MIN_RECHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Most groups kept from one login (the rest are dropped with a warning in the log).
pub const MAX_GROUPS: usize = 512;
/// Longest group name kept.
pub const MAX_GROUP_NAME: usize = 256;

/// A validated `login` section.
#[derive(Debug, Clone)]
pub struct LoginConfig {
    pub client_id: String,
    pub client_secret: Option<String>,
    /// With `openid` first, and `offline_access` when asked.
    pub scopes: Vec<String>,
    pub offline_access: bool,
    pub username_claim: String,
    pub groups_claim: String,
    pub groups_format: GroupsFormat,
    pub admin_group: Option<String>,
    pub auto_onboard: bool,
    /// Lowercase, without a leading `@`.
    pub allowed_email_domains: Vec<String>,
    pub recheck_interval: Duration,
    pub display_name: String,
}

impl LoginSpec {
    fn resolve(&self, provider: &str, preset: Option<Preset>) -> Result<LoginConfig, String> {
        let client_id = self.client_id.trim().to_owned();
        if client_id.is_empty() || client_id.len() > 255 {
            return Err(format!("identity provider {provider:?}: login.clientId must be 1-255 characters"));
        }
        let mut scopes = vec!["openid".to_owned()];
        let asked = self.scopes.clone().unwrap_or_else(|| vec!["profile".into(), "email".into()]);
        for s in asked.iter().flat_map(|s| s.split_whitespace()) {
            if !s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
                return Err(format!("identity provider {provider:?}: scope {s:?} has characters a scope cannot have"));
            }
            if !scopes.iter().any(|x| x == s) {
                scopes.push(s.to_owned());
            }
        }
        if self.offline_access && !scopes.iter().any(|x| x == "offline_access") {
            scopes.push("offline_access".into());
        }
        let claim = |field: &str, v: &Option<String>, default: &str| -> Result<String, String> {
            let c = v.as_deref().unwrap_or(default).trim().to_owned();
            if c.is_empty() || c.len() > 128 {
                return Err(format!("identity provider {provider:?}: login.{field} must be a claim name of 1-128 characters"));
            }
            Ok(c)
        };
        let recheck_interval = parse_duration("login.recheckInterval", &self.recheck_interval, DEFAULT_RECHECK_INTERVAL)?;
        if recheck_interval < MIN_RECHECK_INTERVAL {
            return Err(format!("identity provider {provider:?}: login.recheckInterval must be at least 1s"));
        }
        let mut domains = Vec::new();
        for d in &self.allowed_email_domains {
            let d = d.trim().trim_start_matches('@').to_ascii_lowercase();
            if d.is_empty() || !d.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')) {
                return Err(format!("identity provider {provider:?}: {d:?} in login.allowedEmailDomains is not a domain name"));
            }
            domains.push(d);
        }
        let default_format = if preset == Some(Preset::Keycloak) { GroupsFormat::StripSlash } else { GroupsFormat::AsIs };
        Ok(LoginConfig {
            client_id,
            client_secret: self.client_secret.clone().filter(|s| !s.is_empty()),
            scopes,
            offline_access: self.offline_access,
            username_claim: claim("usernameClaim", &self.username_claim, "preferred_username")?,
            groups_claim: claim("groupsClaim", &self.groups_claim, "groups")?,
            groups_format: self.groups_format.unwrap_or(default_format),
            admin_group: self.admin_group.clone().map(|g| g.trim().to_owned()).filter(|g| !g.is_empty()),
            auto_onboard: self.auto_onboard.unwrap_or(true),
            allowed_email_domains: domains,
            recheck_interval,
            display_name: self.display_name.clone().map(|d| d.trim().to_owned()).filter(|d| !d.is_empty()).unwrap_or_else(|| provider.to_owned()),
        })
    }
}

/// Where a provider's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// OIDC discovery at this URL, then its `jwks_uri`.
    Discovery(String),
    /// This JWKS URL.
    JwksUri(String),
    /// Keys given inline; never fetched.
    Static(JwkSet),
}

/// A validated identity provider.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub preset: Option<Preset>,
    /// As configured, without a trailing slash.
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: KeySource,
    pub ca_pem: Option<String>,
    /// None: take what discovery advertises (or all supported algorithms).
    pub algorithms: Option<Vec<Algorithm>>,
    pub max_lifetime: Duration,
    pub clock_skew: Duration,
    pub audit_claims: Vec<String>,
    /// Human login through this provider.
    pub login: Option<LoginConfig>,
}

impl Provider {
    /// The standard-claims policy of this provider at `now` (unix seconds).
    pub fn policy(&self, now: u64) -> berth_jose::claims::Policy<'_> {
        berth_jose::claims::Policy {
            issuer: &self.issuer,
            audiences: &self.audiences,
            max_lifetime: self.max_lifetime,
            clock_skew: self.clock_skew,
            now,
        }
    }
}

/// Issuer URLs compare without one trailing slash.
pub fn normalize_issuer(iss: &str) -> &str {
    iss.strip_suffix('/').unwrap_or(iss)
}

/// The name rule for providers (also used in URLs and CLI arguments).
pub fn validate_provider_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid identity provider name {name:?}: use 1-64 letters, digits, '-', '_' or '.'"))
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host == "[::1]" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks a URL Berth will fetch from: https, or http on a loopback address (tests, sidecars).
pub fn validate_fetch_url(what: &str, url: &str) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{what} {url:?} is not an absolute URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    if host.is_empty() {
        return Err(format!("{what} {url:?} has no host"));
    }
    match scheme {
        "https" => Ok(()),
        "http" if is_loopback_host(host) => Ok(()),
        "http" => Err(format!("{what} {url:?} must use https (plain http is only allowed on loopback addresses)")),
        other => Err(format!("{what} {url:?} has unsupported scheme {other:?}")),
    }
}

fn parse_duration(field: &str, value: &Option<String>, default: Duration) -> Result<Duration, String> {
    match value {
        None => Ok(default),
        Some(v) => humantime::parse_duration(v.trim()).map_err(|e| format!("{field} {v:?} is not a duration like \"24h\" or \"60s\": {e}")),
    }
}

/// Parses an algorithm name for a provider's allow-list, refusing what is never accepted.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    let n = name.trim();
    if n.eq_ignore_ascii_case("none") {
        return Err("algorithm \"none\" is never accepted".into());
    }
    if n.to_ascii_uppercase().starts_with("HS") {
        return Err(format!("algorithm {n:?} is never accepted: HMAC needs a shared secret, federated tokens must be signed with a public key"));
    }
    n.parse::<Algorithm>().map_err(|_| {
        format!("unknown algorithm {n:?} (use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512 or EdDSA)")
    })
}

impl ProviderSpec {
    /// Validates the document and applies its preset.
    pub fn resolve(&self) -> Result<Provider, String> {
        validate_provider_name(&self.name)?;
        let issuer = match (self.preset, &self.issuer) {
            (_, Some(iss)) => iss.trim().to_owned(),
            (Some(Preset::Github), None) => match &self.enterprise_slug {
                Some(slug) => format!("https://token.actions.githubusercontent.com/{}", slug.trim()),
                None => "https://token.actions.githubusercontent.com".into(),
            },
            (Some(Preset::Gitlab), None) => self.instance.clone().unwrap_or_else(|| "https://gitlab.com".into()),
            (Some(Preset::Forgejo), None) => match &self.instance {
                Some(i) => format!("{}/api/actions", normalize_issuer(i.trim())),
                None => return Err("the forgejo preset needs `instance` (the Forgejo URL) or `issuer`".into()),
            },
            (Some(Preset::Kubernetes), None) => {
                return Err("the kubernetes preset needs `issuer` (the cluster's service-account issuer, `kubectl get --raw /.well-known/openid-configuration`)".into())
            }
            (Some(Preset::Keycloak), None) => match (&self.instance, &self.realm) {
                (Some(i), Some(r)) => format!("{}/realms/{}", normalize_issuer(i.trim()), r.trim()),
                _ => return Err("the keycloak preset needs `instance` (the Keycloak URL) and `realm`, or `issuer` (`<instance>/realms/<realm>`)".into()),
            },
            (Some(Preset::Authentik), None) => match (&self.instance, &self.slug) {
                (Some(i), Some(s)) => format!("{}/application/o/{}/", normalize_issuer(i.trim()), s.trim()),
                _ => return Err("the authentik preset needs `instance` (the authentik URL) and `slug` (the application's slug), or `issuer` (`<instance>/application/o/<slug>/`)".into()),
            },
            (Some(Preset::Google), None) => "https://accounts.google.com".into(),
            (None, None) => return Err("`issuer` is required (or use a preset)".into()),
        };
        let issuer = normalize_issuer(&issuer).to_owned();
        validate_fetch_url("issuer", &issuer).or_else(|e| {
            // An issuer with static keys is never fetched: any URL-shaped issuer will do.
            if self.jwks.is_some() && issuer.contains("://") {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        let audiences: Vec<String> = self.audiences.iter().map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()).collect();
        if audiences.is_empty() && self.login.is_none() {
            return Err(format!(
                "identity provider {:?} needs at least one audience (the `aud` its tokens are requested for, usually your registry's host name), or a `login` section for human login",
                self.name
            ));
        }
        let login = self.login.as_ref().map(|l| l.resolve(&self.name, self.preset)).transpose()?;
        let sources = [self.jwks.is_some(), self.jwks_uri.is_some(), self.discovery_url.is_some()];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err("give at most one of `jwks`, `jwksUri` and `discoveryUrl`".into());
        }
        if login.is_some() && (self.jwks.is_some() || self.jwks_uri.is_some()) {
            return Err(format!(
                "identity provider {:?}: human login needs OIDC discovery (its endpoints); drop `jwks`/`jwksUri` (use `discoveryUrl` if discovery is elsewhere)",
                self.name
            ));
        }
        let keys = if let Some(jwks) = &self.jwks {
            let text = match jwks {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let set = berth_jose::parse_jwk_set(text.as_bytes()).map_err(|e| format!("`jwks` is not a usable JWKS: {e}"))?;
            if set.keys.is_empty() {
                return Err(format!("`jwks` has no usable signing key ({} skipped)", set.skipped.len()));
            }
            KeySource::Static(set)
        } else if let Some(u) = &self.jwks_uri {
            validate_fetch_url("jwksUri", u)?;
            KeySource::JwksUri(u.clone())
        } else {
            let u = self
                .discovery_url
                .clone()
                .unwrap_or_else(|| format!("{issuer}/.well-known/openid-configuration"));
            validate_fetch_url("discoveryUrl", &u)?;
            KeySource::Discovery(u)
        };
        if let Some(pem) = &self.certificate_authority {
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err("`certificateAuthority` must be PEM (-----BEGIN CERTIFICATE-----)".into());
            }
        }
        let algorithms = match &self.algorithms {
            None => None,
            Some(list) if list.is_empty() => return Err("`algorithms` must not be empty (omit it for the default)".into()),
            Some(list) => Some(list.iter().map(|a| parse_algorithm(a)).collect::<Result<Vec<_>, _>>()?),
        };
        let max_lifetime = parse_duration("maxTokenLifetime", &self.max_token_lifetime, DEFAULT_MAX_LIFETIME)?;
        if max_lifetime.is_zero() {
            return Err("maxTokenLifetime must be positive".into());
        }
        let clock_skew = parse_duration("clockSkew", &self.clock_skew, DEFAULT_CLOCK_SKEW)?;
        if clock_skew > MAX_CLOCK_SKEW {
            return Err(format!("clockSkew {clock_skew:?} is too large (at most 10m)"));
        }
        let audit_claims = match (&self.audit_claims, self.preset) {
            (Some(list), _) => list.clone(),
            (None, Some(p)) => p.audit_claims().iter().map(|s| s.to_string()).collect(),
            (None, None) => vec!["sub".into()],
        };
        Ok(Provider {
            name: self.name.clone(),
            preset: self.preset,
            issuer,
            audiences,
            keys,
            ca_pem: self.certificate_authority.clone(),
            algorithms,
            max_lifetime,
            clock_skew,
            audit_claims,
            login,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Result<Provider, String> {
        let s: ProviderSpec = serde_json::from_value(json).map_err(|e| format!("parse: {e}"))?;
        s.resolve()
    }

    #[test]
    fn presets_and_validation() {
        use serde_json::json;
        let p = spec(json!({"name": "gh", "preset": "github", "audiences": ["reg.example.com"]})).unwrap();
        assert_eq!(p.issuer, "https://token.actions.githubusercontent.com");
        assert!(matches!(&p.keys, KeySource::Discovery(u) if u == "https://token.actions.githubusercontent.com/.well-known/openid-configuration"));
        assert_eq!(p.max_lifetime, DEFAULT_MAX_LIFETIME);
        assert_eq!(p.audit_claims[0], "repository");

        let p = spec(json!({"name": "ghe", "preset": "github", "enterpriseSlug": "acme", "audiences": ["r"]})).unwrap();
        assert_eq!(p.issuer, "https://token.actions.githubusercontent.com/acme");
        let p = spec(json!({"name": "gl", "preset": "gitlab", "audiences": ["r"]})).unwrap();
        assert_eq!(p.issuer, "https://gitlab.com");
        let p = spec(json!({"name": "gl", "preset": "gitlab", "instance": "https://gitlab.corp.example/", "audiences": ["r"]})).unwrap();
        assert_eq!(p.issuer, "https://gitlab.corp.example");
        let p = spec(json!({"name": "fj", "preset": "forgejo", "instance": "https://code.example/", "audiences": ["r"]})).unwrap();
        assert_eq!(p.issuer, "https://code.example/api/actions");
        let p = spec(json!({"name": "x", "issuer": "http://127.0.0.1:8080/", "audiences": ["r"], "clockSkew": "30s", "maxTokenLifetime": "1h"})).unwrap();
        assert_eq!(p.issuer, "http://127.0.0.1:8080");
        assert_eq!((p.clock_skew, p.max_lifetime), (Duration::from_secs(30), Duration::from_secs(3600)));

        let errors = [
            (json!({"name": "k", "preset": "kubernetes", "audiences": ["r"]}), "needs `issuer`"),
            (json!({"name": "x", "issuer": "https://i"}), "at least one audience"),
            (json!({"name": "x", "issuer": "https://i", "audiences": [" "]}), "at least one audience"),
            (json!({"name": "x", "issuer": "http://example.com", "audiences": ["r"]}), "must use https"),
            (json!({"name": "x", "issuer": "https://i", "audiences": ["r"], "algorithms": ["HS256"]}), "HMAC"),
            (json!({"name": "x", "issuer": "https://i", "audiences": ["r"], "algorithms": ["none"]}), "never accepted"),
            (json!({"name": "x", "issuer": "https://i", "audiences": ["r"], "algorithms": ["XX1"]}), "unknown algorithm"),
            (json!({"name": "x", "issuer": "https://i", "audiences": ["r"], "clockSkew": "1h"}), "too large"),
            (json!({"name": "x", "issuer": "https://i", "audiences": ["r"], "clockSkew": "soon"}), "not a duration"),
            (json!({"name": "x", "issuer": "https://i", "audiences": ["r"], "jwks": {"keys": []}}), "no usable"),
            (json!({"name": "x", "issuer": "https://i", "audiences": ["r"], "jwksUri": "https://i/k", "discoveryUrl": "https://i/d"}), "at most one"),
            (json!({"name": "x", "issuer": "https://i", "audiences": ["r"], "certificateAuthority": "nope"}), "PEM"),
            (json!({"name": "bad name", "issuer": "https://i", "audiences": ["r"]}), "invalid identity provider name"),
            (json!({"name": "x", "issuer": "https://i", "audiences": ["r"], "surprise": 1}), "unknown field"),
            (json!({"name": "x", "audiences": ["r"]}), "`issuer` is required"),
        ];
        for (doc, want) in errors {
            let e = spec(doc.clone()).unwrap_err();
            assert!(e.contains(want), "{doc}: {e}");
        }
    }

    #[test]
    fn fetch_urls() {
        for ok in ["https://a.example/x", "http://127.0.0.1:9/x", "http://localhost/x", "http://[::1]:80/"] {
            validate_fetch_url("u", ok).unwrap();
        }
        for bad in ["ftp://a", "http://10.0.0.1/x", "a.example", "https:///x"] {
            assert!(validate_fetch_url("u", bad).is_err(), "{bad}");
        }
    }
}
