//! Identity providers: the document an admin writes (API, CLI, `berth apply`), its presets
//! (`github`, `gitlab`, `forgejo`, `kubernetes`), and its validation into a [`Provider`] that the
//! verifier uses. No IO.

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
}

impl Preset {
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Github => "github",
            Preset::Gitlab => "gitlab",
            Preset::Forgejo => "forgejo",
            Preset::Kubernetes => "kubernetes",
        }
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
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "github" => Ok(Preset::Github),
            "gitlab" => Ok(Preset::Gitlab),
            "forgejo" => Ok(Preset::Forgejo),
            "kubernetes" => Ok(Preset::Kubernetes),
            other => Err(format!("unknown preset {other:?} (use github, gitlab, forgejo or kubernetes)")),
        }
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
    /// `gitlab` and `forgejo` presets: the instance URL (`https://gitlab.example.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// A token must carry at least one of these in `aud`. Required.
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
        if audiences.is_empty() {
            return Err(format!(
                "identity provider {:?} needs at least one audience (the `aud` its tokens are requested for, usually your registry's host name)",
                self.name
            ));
        }
        let sources = [self.jwks.is_some(), self.jwks_uri.is_some(), self.discovery_url.is_some()];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err("give at most one of `jwks`, `jwksUri` and `discoveryUrl`".into());
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
