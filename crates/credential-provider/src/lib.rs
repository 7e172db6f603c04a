//! The kubelet image credential provider protocol (KEP-4412, `credentialprovider.kubelet.k8s.io/v1`)
//! for Berth: parse a `CredentialProviderRequest`, decide the credentials, build the
//! `CredentialProviderResponse`. Pure except for the exchange mode's one HTTP call, which lives in
//! `main.rs`.
//!
//! Pass-through mode returns `<username>:<service-account token>` for the image's registry; Berth
//! verifies the token itself (workload identity federation). Exchange mode trades the token at
//! Berth's token endpoint for a short-lived registry token first, so the service-account token
//! never reaches the container runtime.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "credentialprovider.kubelet.k8s.io/v1";
/// Largest request accepted on stdin.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Credentials are cached at most this long, and never past the token's expiry minus a margin.
pub const DEFAULT_MAX_CACHE_SECS: u64 = 300;
/// Seconds before a token's expiry at which cached credentials must be gone.
pub const EXPIRY_MARGIN_SECS: u64 = 30;

/// The request the kubelet writes on stdin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub api_version: String,
    pub kind: String,
    pub image: String,
    #[serde(default)]
    pub service_account_token: Option<String>,
    #[serde(default)]
    pub service_account_annotations: Option<BTreeMap<String, String>>,
}

/// One registry's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthConfig {
    pub username: String,
    pub password: String,
}

/// The response the kubelet reads on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub api_version: &'static str,
    pub kind: &'static str,
    /// `Registry`: the credentials hold for every image of the registry (and, with the kubelet's
    /// `tokenAttributes.cacheType: Token`, for this service-account token only).
    pub cache_key_type: &'static str,
    /// Go duration, like `4m30s`; `0s` means do not cache.
    pub cache_duration: String,
    pub auth: BTreeMap<String, AuthConfig>,
}

/// Options of the plugin (flags or environment in the kubelet's `CredentialProviderConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The Basic user name sent with the token (`jwt` by default; Berth ignores it unless it names a robot).
    pub username: String,
    /// Refuse requests without a service-account token (as `tokenAttributes.requireServiceAccount`).
    pub require_service_account: bool,
    /// Upper bound of the cache duration, seconds.
    pub max_cache_secs: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { username: "jwt".into(), require_service_account: true, max_cache_secs: DEFAULT_MAX_CACHE_SECS }
    }
}

/// A bad request: the plugin prints this one line on stderr and exits non-zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError(pub String);

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(m: impl Into<String>) -> Result<T, PluginError> {
    Err(PluginError(m.into()))
}

/// Parses and checks a request.
pub fn parse_request(bytes: &[u8]) -> Result<Request, PluginError> {
    if bytes.len() > MAX_REQUEST_BYTES {
        return err(format!("the request on stdin is larger than {MAX_REQUEST_BYTES} bytes"));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return err("no CredentialProviderRequest on stdin (it was empty); this program is run by the kubelet");
    }
    let req: Request = serde_json::from_slice(bytes).map_err(|e| PluginError(format!("stdin is not a valid CredentialProviderRequest: {e}")))?;
    if req.api_version != API_VERSION {
        return err(format!("unsupported apiVersion {:?} (expected {API_VERSION}); set apiVersion in the kubelet's CredentialProviderConfig", req.api_version));
    }
    if req.kind != "CredentialProviderRequest" {
        return err(format!("unexpected kind {:?} (expected CredentialProviderRequest)", req.kind));
    }
    Ok(req)
}

/// The registry host of an image reference (`registry.example.com:5000/library/app:v1@sha256:...`),
/// following the Docker reference grammar: the first component is a host when it contains `.` or
/// `:` or is `localhost`; else the image is on Docker Hub.
pub fn registry_of(image: &str) -> Result<String, PluginError> {
    let image = image.trim();
    let bad = |why: &str| PluginError(format!("cannot parse image reference {image:?}: {why}"));
    if image.is_empty() || image.len() > 4096 || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("empty, too long, or contains spaces"));
    }
    let (name, _) = image.split_once('@').unwrap_or((image, ""));
    let (first, rest) = match name.split_once('/') {
        Some((f, r)) if f.contains('.') || f.contains(':') || f == "localhost" => (f, r),
        _ => return Ok("docker.io".into()),
    };
    if rest.is_empty() {
        return Err(bad("no repository after the registry host"));
    }
    let host_ok = first.split(':').next().is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']')));
    let port_ok = first.split_once(':').is_none_or(|(_, p)| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if !host_ok || !port_ok {
        return Err(bad("invalid registry host"));
    }
    let path = rest.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')).map_or(rest, |(p, _)| p);
    let path_ok = path.split('/').all(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')));
    if !path_ok {
        return Err(bad("invalid repository path"));
    }
    Ok(first.to_ascii_lowercase())
}

/// The repository path of an image reference, without registry, tag and digest.
pub fn repository_of(image: &str) -> String {
    let (name, _) = image.trim().split_once('@').unwrap_or((image.trim(), ""));
    let rest = match name.split_once('/') {
        Some((f, r)) if f.contains('.') || f.contains(':') || f == "localhost" => r,
        _ => name,
    };
    rest.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')).map_or(rest, |(p, _)| p).to_owned()
}

/// The `exp` of a JWT, read without verifying anything (only to bound the cache).
pub fn jwt_expiry(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("exp")?.as_u64()
}

/// Formats seconds as a Go duration (`1h2m3s`, `0s`).
pub fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// How long the kubelet may cache credentials that expire at `expires_at`: at most `max`, and
/// gone [`EXPIRY_MARGIN_SECS`] before the expiry; 0 (no caching) when the expiry is unknown.
pub fn cache_secs(expires_at: Option<u64>, now: u64, max: u64) -> u64 {
    match expires_at {
        Some(exp) => exp.saturating_sub(now).saturating_sub(EXPIRY_MARGIN_SECS).min(max),
        None => 0,
    }
}

/// Builds a response giving `username`/`password` for `registry`.
pub fn response(registry: &str, username: &str, password: &str, cache_secs: u64) -> Response {
    let mut auth = BTreeMap::new();
    auth.insert(registry.to_owned(), AuthConfig { username: username.to_owned(), password: password.to_owned() });
    Response { api_version: API_VERSION, kind: "CredentialProviderResponse", cache_key_type: "Registry", cache_duration: go_duration(cache_secs), auth }
}

/// Pass-through mode: the service-account token itself is the password.
pub fn pass_through(req: &Request, opts: &Options, now: u64) -> Result<Response, PluginError> {
    let registry = registry_of(&req.image)?;
    let token = match req.service_account_token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => t,
        None if opts.require_service_account => {
            return err("the request has no serviceAccountToken: set tokenAttributes (serviceAccountTokenAudience, requireServiceAccount: true) in the kubelet's CredentialProviderConfig, and the RBAC that lets nodes request tokens for that audience")
        }
        None => return Ok(Response { api_version: API_VERSION, kind: "CredentialProviderResponse", cache_key_type: "Registry", cache_duration: "0s".into(), auth: BTreeMap::new() }),
    };
    let secs = cache_secs(jwt_expiry(token), now, opts.max_cache_secs);
    Ok(response(&registry, &opts.username, token, secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries() {
        let cases = [
            ("registry.example.com/library/app:v1", Ok("registry.example.com")),
            ("registry.example.com:5000/a/b/c@sha256:0123", Ok("registry.example.com:5000")),
            ("localhost/app", Ok("localhost")),
            ("127.0.0.1:5000/library/app:latest", Ok("127.0.0.1:5000")),
            ("Registry.Example.com/app", Ok("registry.example.com")),
            ("nginx:1.25", Ok("docker.io")),
            ("library/nginx", Ok("docker.io")),
            ("", Err("empty")),
            ("registry.example.com/", Err("no repository")),
            ("reg istry/app", Err("spaces")),
            ("registry.example.com/App:v1", Err("invalid repository path")),
            ("registry.example.com:port/app", Err("invalid registry host")),
            ("registry.example.com//app", Err("invalid repository path")),
        ];
        for (image, want) in cases {
            match (registry_of(image), want) {
                (Ok(r), Ok(w)) => assert_eq!(r, w, "{image}"),
                (Err(e), Err(w)) => assert!(e.0.contains(w), "{image}: {e}"),
                (got, want) => panic!("{image}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(repository_of("registry.example.com:5000/a/b:v1"), "a/b");
        assert_eq!(repository_of("registry.example.com/a@sha256:00"), "a");
    }

    #[test]
    fn durations_and_cache() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(59), "59s");
        assert_eq!(go_duration(300), "5m0s");
        assert_eq!(go_duration(3725), "1h2m5s");
        assert_eq!(cache_secs(Some(1000 + 3600), 1000, 300), 300);
        assert_eq!(cache_secs(Some(1000 + 100), 1000, 300), 70, "never past the expiry minus the margin");
        assert_eq!(cache_secs(Some(1000 + 10), 1000, 300), 0);
        assert_eq!(cache_secs(Some(500), 1000, 300), 0, "expired");
        assert_eq!(cache_secs(None, 1000, 300), 0, "unknown expiry: no caching");
    }
}
