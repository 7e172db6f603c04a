//! Human login through an identity provider's `login` section: the ID token's claims become a
//! [`Person`] (pure, table-tested), and the OpenID Connect protocol steps Berth runs as a client
//! (authorization URL with PKCE, `state` and `nonce`; code exchange; the device authorization
//! grant of RFC 8628; refresh). The ID token itself is verified by
//! [`crate::Federation::verify_id_token`] with the same strict JWS code as workload tokens.
//!
//! Every request to the provider has short timeouts, a size limit on the answer, and follows
//! redirects only to URLs a configured URL could be (https, or http on loopback).

use std::time::Duration;

use base64::Engine as _;
use rand::RngCore as _;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::provider::{validate_fetch_url, LoginConfig, Provider, MAX_GROUPS, MAX_GROUP_NAME};

/// A person as an ID token describes them, after the provider's mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub provider: String,
    /// The token's `iss`, as sent.
    pub issuer: String,
    pub subject: String,
    /// From the username claim.
    pub username: String,
    pub email: Option<String>,
    /// After `groupsFormat`, sorted, without duplicates, at most [`MAX_GROUPS`].
    pub groups: Vec<String>,
    /// A member of the provider's admin group.
    pub admin: bool,
    /// The ID token's `exp` (unix seconds).
    pub expires_at: Option<u64>,
}

/// Why an ID token's claims do not make a person Berth lets in. The message names the claim or
/// setting, for the login page and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PersonError(pub String);

fn string_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    berth_claims::lookup(claims, name).and_then(Value::as_str)
}

/// Maps verified ID token claims to a person: subject, username (the username claim, checked like
/// user names Berth accepts), email (only when `email_verified` is not false), groups (the
/// groups claim, a list of strings or one string, mapped, capped), admin (the admin group).
/// Allowed email domains are enforced here.
pub fn person(provider: &Provider, login: &LoginConfig, claims: &Map<String, Value>) -> Result<Person, PersonError> {
    let issuer = string_claim(claims, "iss").unwrap_or_default().to_owned();
    let subject = string_claim(claims, "sub").filter(|s| !s.is_empty() && s.len() <= 255).ok_or_else(|| {
        PersonError("the ID token has no usable `sub` claim (1-255 characters)".into())
    })?;
    let username = string_claim(claims, &login.username_claim).map(str::trim).filter(|s| !s.is_empty()).ok_or_else(|| {
        PersonError(format!(
            "the ID token has no `{}` claim for the user name; set login.usernameClaim of identity provider {:?} to a claim the provider sends (for example email or sub)",
            login.username_claim, provider.name
        ))
    })?;
    if username.len() > 128 || username.starts_with("robot$") || username.chars().any(|c| c == ':' || c.is_control() || c.is_whitespace()) {
        return Err(PersonError(format!(
            "the user name {:?} from claim `{}` is not one Berth accepts (1-128 characters, no ':', spaces or control characters, not starting with robot$)",
            username.chars().take(64).collect::<String>(),
            login.username_claim
        )));
    }
    // Some providers send `email_verified` as a string.
    let verified = match claims.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => true,
    };
    let email = string_claim(claims, "email").map(str::trim).filter(|e| !e.is_empty() && e.len() <= 254 && verified).map(str::to_owned);
    if !login.allowed_email_domains.is_empty() {
        let domain = email.as_deref().and_then(|e| e.rsplit_once('@')).map(|(_, d)| d.to_ascii_lowercase());
        match domain {
            Some(d) if login.allowed_email_domains.contains(&d) => {}
            Some(d) => {
                return Err(PersonError(format!(
                    "email domain {d:?} is not allowed to log in through {:?} (allowed: {})",
                    provider.name,
                    login.allowed_email_domains.join(", ")
                )))
            }
            None => {
                return Err(PersonError(format!(
                    "identity provider {:?} only lets in people with a verified email in {}, and the ID token has none",
                    provider.name,
                    login.allowed_email_domains.join(", ")
                )))
            }
        }
    }
    let raw: Vec<&str> = match berth_claims::lookup(claims, &login.groups_claim) {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => vec![s.as_str()],
        _ => vec![],
    };
    let mut groups: Vec<String> = raw
        .into_iter()
        .map(|g| login.groups_format.apply(g.trim()))
        .filter(|g| !g.is_empty() && g.chars().count() <= MAX_GROUP_NAME && !g.chars().any(char::is_control))
        .collect();
    groups.sort();
    groups.dedup();
    if groups.len() > MAX_GROUPS {
        tracing::warn!(provider = %provider.name, groups = groups.len(), kept = MAX_GROUPS, "an ID token has more groups than Berth keeps; the rest are ignored");
        groups.truncate(MAX_GROUPS);
    }
    let admin = login.admin_group.as_ref().is_some_and(|a| groups.iter().any(|g| g == a));
    let expires_at = claims.get("exp").and_then(Value::as_u64);
    Ok(Person { provider: provider.name.clone(), issuer, subject: subject.to_owned(), username: username.to_owned(), email, groups, admin, expires_at })
}

// ---------------------------------------------------------------- the protocol

/// The endpoints discovery advertises.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Endpoints {
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub device_authorization_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    #[serde(default)]
    pub grant_types_supported: Vec<String>,
}

impl Endpoints {
    /// Reads the endpoints from a discovery document, keeping only URLs Berth may use.
    pub fn from_discovery(doc: &Value) -> Endpoints {
        let mut e: Endpoints = serde_json::from_value(doc.clone()).unwrap_or_default();
        for slot in [&mut e.authorization_endpoint, &mut e.token_endpoint, &mut e.device_authorization_endpoint, &mut e.end_session_endpoint] {
            if slot.as_deref().is_some_and(|u| validate_fetch_url("endpoint", u).is_err()) {
                *slot = None;
            }
        }
        e
    }
    fn token(&self) -> Result<&str, OidcError> {
        self.token_endpoint.as_deref().ok_or_else(|| OidcError::Provider("the provider's discovery document has no token_endpoint".into()))
    }
}

/// Random URL-safe text of `bytes` random bytes (state, nonce, PKCE verifier, token secrets).
pub fn random_text(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A PKCE pair (RFC 7636, S256): the verifier kept by Berth, the challenge sent.
pub fn pkce() -> (String, String) {
    use sha2::Digest as _;
    let verifier = random_text(32);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The authorization request's URL (code flow with PKCE S256, `state` and `nonce`).
pub fn authorization_url(endpoints: &Endpoints, login: &LoginConfig, redirect_uri: &str, state: &str, nonce: &str, challenge: &str) -> Result<String, OidcError> {
    let base = endpoints
        .authorization_endpoint
        .as_deref()
        .ok_or_else(|| OidcError::Provider("the provider's discovery document has no authorization_endpoint".into()))?;
    let mut url = url::Url::parse(base).map_err(|e| OidcError::Provider(format!("authorization_endpoint {base:?} is not a URL: {e}")))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &login.client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", &login.scopes.join(" "))
        .append_pair("state", state)
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    if login.offline_access {
        // Some providers (Google) only give a refresh token when consent is asked again.
        url.query_pairs_mut().append_pair("prompt", "consent");
    }
    Ok(url.into())
}

/// Where a browser goes to end its session at the provider too (RP-initiated logout).
pub fn end_session_url(endpoints: &Endpoints, login: &LoginConfig, id_token_hint: Option<&str>, post_logout_redirect: &str) -> Option<String> {
    let base = endpoints.end_session_endpoint.as_deref()?;
    let mut url = url::Url::parse(base).ok()?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("client_id", &login.client_id).append_pair("post_logout_redirect_uri", post_logout_redirect);
        if let Some(h) = id_token_hint {
            q.append_pair("id_token_hint", h);
        }
    }
    Some(url.into())
}

/// What the token endpoint answered.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
    pub access_token: Option<String>,
    pub expires_in: Option<u64>,
}

/// A device authorization (RFC 8628 §3.2).
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceAuthorization {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    pub interval: Option<u64>,
}

/// Why a protocol step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// The provider did not answer, or answered something that is not OAuth (network, 5xx).
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider answered with an OAuth error (`invalid_grant`, `access_denied`, ...).
    #[error("the identity provider refused: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused { error: String, description: Option<String> },
    /// The provider's configuration or answer cannot work (missing endpoint, no ID token).
    #[error("{0}")]
    Provider(String),
}

impl OidcError {
    /// The OAuth error code, when the provider gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            OidcError::Refused { error, .. } => Some(error),
            _ => None,
        }
    }
}

const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// An HTTP client for one provider: its CA, short timeouts, checked redirects.
pub fn client(provider: &Provider) -> Result<reqwest::Client, String> {
    super::keys::http_client(provider.ca_pem.as_deref()).map_err(|e| e.0)
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    error_description: Option<String>,
}

async fn post_form(http: &reqwest::Client, url: &str, login: &LoginConfig, form: &[(&str, &str)]) -> Result<Value, OidcError> {
    let mut req = http.post(url).header(reqwest::header::ACCEPT, "application/json");
    let mut fields: Vec<(&str, &str)> = form.to_vec();
    match &login.client_secret {
        Some(secret) => {
            // client_secret_basic (RFC 6749 §2.3.1): both parts form-urlencoded first.
            let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            req = req.basic_auth(enc(&login.client_id), Some(enc(secret)));
        }
        None => fields.push(("client_id", &login.client_id)),
    }
    let mut resp = req.form(&fields).send().await.map_err(|e| OidcError::Unavailable(format!("POST {url}: {}", super::keys::error_chain(&e))))?;
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| OidcError::Unavailable(format!("POST {url}: {}", super::keys::error_chain(&e))))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(OidcError::Unavailable(format!("POST {url}: the answer is larger than 256 KiB")));
        }
        body.extend_from_slice(&chunk);
    }
    if let Ok(e) = serde_json::from_slice::<ErrorAnswer>(&body) {
        if !status.is_success() || !e.error.is_empty() {
            let description = e.error_description.map(|d| d.chars().filter(|c| !c.is_control()).take(300).collect());
            return Err(OidcError::Refused { error: e.error.chars().take(64).collect(), description });
        }
    }
    if !status.is_success() {
        return Err(OidcError::Unavailable(format!("POST {url}: HTTP {status}")));
    }
    serde_json::from_slice(&body).map_err(|e| OidcError::Unavailable(format!("POST {url}: the answer is not JSON: {e}")))
}

fn token_response(v: Value) -> Result<TokenResponse, OidcError> {
    serde_json::from_value(v).map_err(|e| OidcError::Provider(format!("the token endpoint's answer is not a token response: {e}")))
}

/// Trades an authorization code for tokens (with the PKCE verifier).
pub async fn exchange_code(http: &reqwest::Client, endpoints: &Endpoints, login: &LoginConfig, code: &str, verifier: &str, redirect_uri: &str) -> Result<TokenResponse, OidcError> {
    let form = [("grant_type", "authorization_code"), ("code", code), ("code_verifier", verifier), ("redirect_uri", redirect_uri)];
    token_response(post_form(http, endpoints.token()?, login, &form).await?)
}

/// Starts a device authorization (RFC 8628 §3.1).
pub async fn device_authorization(http: &reqwest::Client, endpoints: &Endpoints, login: &LoginConfig) -> Result<DeviceAuthorization, OidcError> {
    let url = endpoints.device_authorization_endpoint.as_deref().ok_or_else(|| {
        OidcError::Provider("the identity provider does not offer the device authorization grant (no device_authorization_endpoint)".into())
    })?;
    let scope = login.scopes.join(" ");
    let v = post_form(http, url, login, &[("scope", &scope)]).await?;
    serde_json::from_value(v).map_err(|e| OidcError::Provider(format!("the device authorization answer is incomplete: {e}")))
}

/// One poll of the token endpoint for a device code. `Refused` with `authorization_pending` or
/// `slow_down` means: not yet.
pub async fn poll_device(http: &reqwest::Client, endpoints: &Endpoints, login: &LoginConfig, device_code: &str) -> Result<TokenResponse, OidcError> {
    let form = [("grant_type", "urn:ietf:params:oauth:grant-type:device_code"), ("device_code", device_code)];
    token_response(post_form(http, endpoints.token()?, login, &form).await?)
}

/// Uses a refresh token (the background re-check). `Refused { error: "invalid_grant" }`: the
/// grant is gone (the account was disabled or deleted, or the session ended at the provider).
pub async fn refresh(http: &reqwest::Client, endpoints: &Endpoints, login: &LoginConfig, refresh_token: &str) -> Result<TokenResponse, OidcError> {
    let scope = login.scopes.join(" ");
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("scope", scope.as_str())];
    token_response(post_form(http, endpoints.token()?, login, &form).await?)
}

/// How long to wait between device polls: the provider's interval (default 5 s, RFC 8628
/// §3.2), at least 1 s.
pub fn device_interval(d: &DeviceAuthorization) -> Duration {
    Duration::from_secs(d.interval.unwrap_or(5).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::ProviderSpec;
    use serde_json::json;

    fn provider(login: Value) -> Provider {
        let spec: ProviderSpec = serde_json::from_value(json!({
            "name": "corp", "preset": "keycloak", "instance": "https://kc.example.com", "realm": "acme", "login": login
        }))
        .unwrap();
        spec.resolve().unwrap()
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn claims_become_a_person() {
        let p = provider(json!({"clientId": "berth", "adminGroup": "registry-admins"}));
        let l = p.login.as_ref().unwrap();
        assert_eq!(p.issuer, "https://kc.example.com/realms/acme");
        assert_eq!(l.scopes, ["openid", "profile", "email"]);
        let base = json!({"iss": "https://kc.example.com/realms/acme", "sub": "f81d", "preferred_username": "alice",
            "email": "alice@example.com", "email_verified": true, "groups": ["/team-demo", "/registry-admins", "/team-demo", "/dept/x"]});
        let who = person(&p, l, &claims(base.clone())).unwrap();
        assert_eq!(who.username, "alice");
        assert_eq!(who.subject, "f81d");
        assert_eq!(who.groups, ["dept/x", "registry-admins", "team-demo"]);
        assert!(who.admin);
        assert_eq!(who.email.as_deref(), Some("alice@example.com"));

        // Table: (login section, claims change, expected outcome).
        type Want<'a> = Result<(&'a str, Vec<&'a str>, bool), &'a str>;
        let cases: Vec<(Value, Value, Want)> = vec![
            (json!({"clientId": "b", "groupsFormat": "last-segment"}), json!({}), Ok(("alice", vec!["registry-admins", "team-demo", "x"], false))),
            (json!({"clientId": "b", "groupsFormat": "as-is"}), json!({}), Ok(("alice", vec!["/dept/x", "/registry-admins", "/team-demo"], false))),
            (json!({"clientId": "b"}), json!({"groups": "/solo"}), Ok(("alice", vec!["solo"], false))),
            (json!({"clientId": "b"}), json!({"groups": null}), Ok(("alice", vec![], false))),
            (json!({"clientId": "b", "usernameClaim": "email"}), json!({}), Ok(("alice@example.com", vec!["dept/x", "registry-admins", "team-demo"], false))),
            (json!({"clientId": "b", "groupsClaim": "roles"}), json!({"roles": ["r1"]}), Ok(("alice", vec!["r1"], false))),
            (json!({"clientId": "b"}), json!({"preferred_username": null}), Err("no `preferred_username` claim")),
            (json!({"clientId": "b"}), json!({"preferred_username": "a b"}), Err("not one Berth accepts")),
            (json!({"clientId": "b"}), json!({"preferred_username": "robot$x"}), Err("not one Berth accepts")),
            (json!({"clientId": "b"}), json!({"sub": ""}), Err("no usable `sub`")),
            (json!({"clientId": "b", "allowedEmailDomains": ["@Example.com"]}), json!({}), Ok(("alice", vec!["dept/x", "registry-admins", "team-demo"], false))),
            (json!({"clientId": "b", "allowedEmailDomains": ["corp.example"]}), json!({}), Err("email domain \"example.com\" is not allowed")),
            (json!({"clientId": "b", "allowedEmailDomains": ["example.com"]}), json!({"email_verified": false}), Err("verified email")),
        ];
        for (login, change, want) in cases {
            let p = provider(login.clone());
            let mut c = base.clone();
            for (k, v) in change.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            let got = person(&p, p.login.as_ref().unwrap(), &claims(c));
            match (got, want) {
                (Ok(who), Ok((name, groups, admin))) => {
                    assert_eq!((who.username.as_str(), who.groups.iter().map(String::as_str).collect::<Vec<_>>(), who.admin), (name, groups, admin), "{login} {change}");
                }
                (Err(e), Err(w)) => assert!(e.0.contains(w), "{login} {change}: {e}"),
                (got, want) => panic!("{login} {change}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn groups_are_capped() {
        let p = provider(json!({"clientId": "b"}));
        let many: Vec<String> = (0..MAX_GROUPS + 10).map(|i| format!("g{i:04}")).chain(["x".repeat(300)]).collect();
        let who = person(&p, p.login.as_ref().unwrap(), &claims(json!({"sub": "s", "preferred_username": "a", "groups": many}))).unwrap();
        assert_eq!(who.groups.len(), MAX_GROUPS);
        assert!(who.groups.iter().all(|g| g.len() < 300));
    }

    #[test]
    fn login_sections_validate() {
        let bad = [
            (json!({"clientId": ""}), "clientId"),
            (json!({"clientId": "b", "scopes": ["a\"b"]}), "scope"),
            (json!({"clientId": "b", "recheckInterval": "0s"}), "at least 1s"),
            (json!({"clientId": "b", "allowedEmailDomains": ["a b"]}), "not a domain"),
            (json!({"clientId": "b", "usernameClaim": ""}), "usernameClaim"),
            (json!({"clientId": "b", "unknown": 1}), "unknown field"),
        ];
        for (login, want) in bad {
            let spec: Result<ProviderSpec, _> = serde_json::from_value(json!({"name": "c", "issuer": "https://i.example", "login": login}));
            let e = match spec {
                Ok(s) => s.resolve().unwrap_err(),
                Err(e) => e.to_string(),
            };
            assert!(e.contains(want), "{login}: {e}");
        }
        let p = provider(json!({"clientId": "b", "offlineAccess": true, "scopes": ["profile groups", "openid"]}));
        assert_eq!(p.login.as_ref().unwrap().scopes, ["openid", "profile", "groups", "offline_access"]);
        // Login-only providers need no audiences; workload-only ones still do.
        let spec: ProviderSpec = serde_json::from_value(json!({"name": "w", "issuer": "https://i.example"})).unwrap();
        assert!(spec.resolve().unwrap_err().contains("at least one audience"));
        let spec: ProviderSpec =
            serde_json::from_value(json!({"name": "w", "issuer": "https://i.example", "jwksUri": "https://i.example/k", "login": {"clientId": "b"}})).unwrap();
        assert!(spec.resolve().unwrap_err().contains("discovery"));
        // Presets for people.
        let spec: ProviderSpec = serde_json::from_value(json!({"name": "a", "preset": "authentik", "instance": "https://auth.example/", "slug": "berth", "login": {"clientId": "b"}})).unwrap();
        assert_eq!(spec.resolve().unwrap().issuer, "https://auth.example/application/o/berth");
        let spec: ProviderSpec = serde_json::from_value(json!({"name": "g", "preset": "google", "login": {"clientId": "b"}})).unwrap();
        assert_eq!(spec.resolve().unwrap().issuer, "https://accounts.google.com");
        let spec: ProviderSpec = serde_json::from_value(json!({"name": "k", "preset": "keycloak", "login": {"clientId": "b"}})).unwrap();
        assert!(spec.resolve().unwrap_err().contains("realm"));
    }

    #[test]
    fn authorization_urls() {
        let p = provider(json!({"clientId": "berth app", "offlineAccess": true}));
        let e = Endpoints { authorization_endpoint: Some("https://kc.example.com/auth?x=1".into()), ..Default::default() };
        let (verifier, challenge) = pkce();
        assert!(verifier.len() >= 43);
        let u = authorization_url(&e, p.login.as_ref().unwrap(), "https://r.example/auth/oidc/callback", "st", "no", &challenge).unwrap();
        let parsed = url::Url::parse(&u).unwrap();
        let q: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
        assert_eq!(q["x"], "1");
        assert_eq!(q["client_id"], "berth app");
        assert_eq!(q["scope"], "openid profile email offline_access");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["redirect_uri"], "https://r.example/auth/oidc/callback");
        assert_eq!((q["state"].as_str(), q["nonce"].as_str()), ("st", "no"));
        // Discovery endpoints that Berth may not use are dropped.
        let d = Endpoints::from_discovery(&json!({"authorization_endpoint": "http://evil.example/a", "token_endpoint": "https://i.example/t"}));
        assert_eq!(d.authorization_endpoint, None);
        assert_eq!(d.token_endpoint.as_deref(), Some("https://i.example/t"));
    }
}
