//! The kubelet image credential provider protocol (KEP-4412, `credentialprovider.kubelet.k8s.io/v1`)
//! for Berth: parse a `CredentialProviderRequest`, decide the credentials, build the
//! `CredentialProviderResponse`. Pure: the exchange mode's one HTTP call lives in `main.rs`, which
//! sends what [`exchange_request`] builds and hands the answer to [`exchange_response`].
//!
//! Pass-through mode returns `<username>:<service-account token>` for the image's registry; Berth
//! verifies the token itself (workload identity federation). Exchange mode trades the token at
//! Berth's token endpoint for a short-lived registry token first, so the service-account token
//! never reaches the container runtime.
//!
//! Where the token may go: only to the registry of `--registry-url` ([`RegistryUrl`]), over HTTPS
//! (plain HTTP only to a loopback address, and only when explicitly allowed); an image on another
//! registry gets no credentials. Image references are parsed with the Docker reference grammar
//! ([`parse_image`]) before any part of them reaches a URL.
//!
//! How long the kubelet may cache: never past the credential's expiry minus a margin
//! ([`cache_secs`]), so a cached credential still has that margin left when the runtime uses it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "credentialprovider.kubelet.k8s.io/v1";
/// Largest request accepted on stdin.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Credentials are cached at most this long, and never past the credential's expiry minus a margin.
pub const DEFAULT_MAX_CACHE_SECS: u64 = 300;
/// Default seconds of life a credential has left when the kubelet's cache drops it: the time the
/// runtime has to start the pull (and fetch its bearer tokens) with a credential from the cache.
pub const DEFAULT_EXPIRY_MARGIN_SECS: u64 = 60;
/// The Basic user name of exchanged credentials (Berth takes the registry token as the password).
pub const EXCHANGE_USERNAME: &str = "berth-token";
/// Longest image reference name (registry and repository), as in the Docker reference grammar.
const MAX_NAME_LEN: usize = 255;

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

/// What the kubelet keys its cache of a response by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CacheKeyType {
    /// The credentials hold for this image only (exchange mode: a token scoped to one repository).
    Image,
    /// The credentials hold for every image of the registry (pass-through mode: Berth decides per
    /// request what the service-account token may do).
    Registry,
}

/// The response the kubelet reads on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub api_version: &'static str,
    pub kind: &'static str,
    /// With the kubelet's `tokenAttributes.cacheType: Token` the cache is also keyed by the
    /// service account.
    pub cache_key_type: CacheKeyType,
    /// Go duration, like `4m30s`; `0s` means do not cache.
    pub cache_duration: String,
    /// Keys are the kubelet's match patterns (`host[:port][/path]`, the path a prefix).
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
    /// Seconds of life a credential still has when the kubelet's cache drops it.
    pub expiry_margin_secs: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            username: "jwt".into(),
            require_service_account: true,
            max_cache_secs: DEFAULT_MAX_CACHE_SECS,
            expiry_margin_secs: DEFAULT_EXPIRY_MARGIN_SECS,
        }
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

/// Text from elsewhere (a server's message, a header) made safe for the one stderr line: control
/// characters become spaces, and it is cut at 300 characters.
pub fn one_line(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(300).collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out
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

/// A registry host and port, compared case-insensitively (`host` is lower case, an IPv6 address
/// in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPort {
    host: String,
    port: Option<u16>,
}

impl HostPort {
    /// `host [":" port]` of the Docker reference grammar: a domain name (components of letters,
    /// digits and inner `-`), an IPv4 address, or an IPv6 address in brackets.
    fn parse(s: &str) -> Result<HostPort, &'static str> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, after) = rest.split_once(']').ok_or("invalid registry host (unclosed '[')")?;
            v6.parse::<Ipv6Addr>().map_err(|_| "invalid registry host (not an IPv6 address in brackets)")?;
            match after {
                "" => (&s[..v6.len() + 2], None),
                p => (&s[..v6.len() + 2], Some(p.strip_prefix(':').ok_or("invalid registry host")?)),
            }
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let component_ok = |c: &str| {
            !c.is_empty() && c.len() <= 63 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !c.starts_with('-') && !c.ends_with('-')
        };
        if !host.starts_with('[') && !host.split('.').all(component_ok) {
            return Err("invalid registry host");
        }
        let port = match port {
            None => None,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                Some(p.parse::<u16>().ok().filter(|&n| n != 0).ok_or("invalid registry port (1 to 65535)")?)
            }
            Some(_) => return Err("invalid registry port"),
        };
        Ok(HostPort { host: host.to_ascii_lowercase(), port })
    }

    fn ip(&self) -> Option<IpAddr> {
        match self.host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
            None => self.host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        }
    }

    /// `host[:port]`, without the port when it is the scheme's default.
    fn authority(&self, default_port: u16) -> String {
        match self.port {
            Some(p) if p != default_port => format!("{}:{p}", self.host),
            _ => self.host.clone(),
        }
    }
}

/// An image reference, parsed with the Docker reference grammar
/// (`[registry[:port]/]path[:tag][@digest]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry as written in the image (`registry.example.com:5000`; `docker.io` when the
    /// image names none): the kubelet matches `auth` keys against the image text, so this keeps
    /// its case and port.
    pub registry: String,
    /// The repository path: lower-case components of letters and digits joined by `.`, `_`,
    /// `__` or dashes, separated by `/`. Nothing else can appear in it, so it is safe in a URL.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// The `auth` key that matches this repository only (the kubelet compares key paths as
    /// prefixes of the image's path).
    pub fn repository_key(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

/// Parses an image reference with the Docker reference grammar. The first path component is the
/// registry when it contains `.` or `:`, is `localhost`, or has upper-case letters; else the image
/// is on Docker Hub (`nginx` is `docker.io/library/nginx`).
pub fn parse_image(image: &str) -> Result<ImageRef, PluginError> {
    let bad = |why: &str| PluginError(format!("cannot parse image reference {:?}: {why}", one_line(image)));
    if image.is_empty() {
        return Err(bad("empty"));
    }
    if image.len() > 4096 || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("too long, or contains spaces or control characters"));
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let (alg, hex) = d.split_once(':').ok_or_else(|| bad("invalid digest (expected algorithm:hex)"))?;
        let alg_ok = alg.split(['+', '.', '-', '_']).all(|c| c.starts_with(|ch: char| ch.is_ascii_alphabetic()) && c.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !alg_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("invalid digest (expected algorithm:hex, at least 32 hex digits)"));
        }
    }
    let (name, tag) = match name.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (name, None),
    };
    if let Some(t) = tag {
        let tag_ok = t.len() <= 128 && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !tag_ok {
            return Err(bad("invalid tag (letters, digits, '_', '.', '-'; at most 128)"));
        }
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad("the name is longer than 255 characters"));
    }
    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase()) => {
            HostPort::parse(first).map_err(bad)?;
            (first.to_owned(), rest.to_owned())
        }
        Some(_) => ("docker.io".to_owned(), name.to_owned()),
        None => ("docker.io".to_owned(), format!("library/{name}")),
    };
    if path.is_empty() {
        return Err(bad("no repository after the registry host"));
    }
    if !path.split('/').all(path_component_ok) {
        return Err(bad("invalid repository path (lower-case letters and digits, separated by '.', '_', '__', '-' or '/')"));
    }
    Ok(ImageRef { registry, repository: path, tag: tag.map(str::to_owned), digest: digest.map(str::to_owned) })
}

/// `[a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*`
fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// Berth's URL (`--registry-url`): the only place the service-account token is sent, and the only
/// registry whose images get credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryUrl {
    https: bool,
    host: HostPort,
}

impl RegistryUrl {
    /// `https://host[:port][/]`; `http://` only with `allow_insecure_loopback` and a loopback IP
    /// address (127.0.0.0/8, `[::1]`). No user, path, query or fragment.
    pub fn parse(url: &str, allow_insecure_loopback: bool) -> Result<RegistryUrl, PluginError> {
        let shown = one_line(url);
        let bad = |why: &str| PluginError(format!("--registry-url {shown:?}: {why}"));
        let lower = url.to_ascii_lowercase();
        let (https, rest) = if lower.starts_with("https://") {
            (true, &url["https://".len()..])
        } else if lower.starts_with("http://") {
            (false, &url["http://".len()..])
        } else {
            return Err(bad("expected https://host[:port], Berth's URL"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@', '%', '\\']) || authority.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("only scheme, host and port are allowed (no user, path, query or fragment): Berth's token endpoint is /service/token on that host"));
        }
        let host = HostPort::parse(authority).map_err(bad)?;
        if !https {
            if !allow_insecure_loopback {
                return Err(bad("plain HTTP would send the service-account token unencrypted; use https:// (for a registry on a loopback address of this node, add --allow-insecure-loopback)"));
            }
            if !host.ip().is_some_and(|ip| ip.is_loopback()) {
                return Err(bad("--allow-insecure-loopback allows plain HTTP only to a loopback IP address (127.0.0.1, [::1]); use https:// for this host"));
            }
        }
        Ok(RegistryUrl { https, host })
    }

    fn default_port(&self) -> u16 {
        if self.https {
            443
        } else {
            80
        }
    }

    /// `host[:port]`, the port only when it is not the scheme's default.
    pub fn authority(&self) -> String {
        self.host.authority(self.default_port())
    }

    /// Plain HTTP (only ever to a loopback address).
    pub fn is_insecure(&self) -> bool {
        !self.https
    }

    /// Whether `registry` (an [`ImageRef::registry`]) is this registry: same host (any case) and
    /// port (an omitted port is the scheme's default).
    pub fn serves(&self, registry: &str) -> bool {
        HostPort::parse(registry).is_ok_and(|h| h.authority(self.default_port()) == self.authority())
    }

    /// The token endpoint with a pull scope for `repository` (already validated by [`parse_image`]).
    pub fn token_url(&self, repository: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}/service/token?scope=repository:{repository}:pull", self.authority())
    }
}

/// Refuses an image that is not on the configured registry: it gets no credentials.
pub fn check_registry(image: &ImageRef, registry: &RegistryUrl) -> Result<(), PluginError> {
    if registry.serves(&image.registry) {
        return Ok(());
    }
    err(format!(
        "the image is on {:?}, not on --registry-url {:?}: no credentials given (the service-account token goes only to the configured registry); list only {:?} in matchImages of the kubelet's CredentialProviderConfig",
        image.registry,
        registry.authority(),
        registry.authority()
    ))
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

/// How long the kubelet may cache credentials that expire at `expires_at`: at most `max`, and gone
/// `margin` seconds before the expiry; 0 (no caching) when the expiry is unknown.
pub fn cache_secs(expires_at: Option<u64>, now: u64, max: u64, margin: u64) -> u64 {
    match expires_at {
        Some(exp) => exp.saturating_sub(now).saturating_sub(margin).min(max),
        None => 0,
    }
}

/// Builds a response giving `username`/`password` for the `auth` key `key`.
pub fn response(key: &str, cache_key_type: CacheKeyType, username: &str, password: &str, cache_secs: u64) -> Response {
    let mut auth = BTreeMap::new();
    auth.insert(key.to_owned(), AuthConfig { username: username.to_owned(), password: password.to_owned() });
    Response { api_version: API_VERSION, kind: "CredentialProviderResponse", cache_key_type, cache_duration: go_duration(cache_secs), auth }
}

fn service_account_token(req: &Request) -> Option<&str> {
    req.service_account_token.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

const NO_TOKEN: &str = "the request has no serviceAccountToken: set tokenAttributes (serviceAccountTokenAudience, requireServiceAccount: true) in the kubelet's CredentialProviderConfig, and the RBAC that lets nodes request tokens for that audience";

/// Pass-through mode: the service-account token itself is the password, for the image's registry
/// (`cacheKeyType: Registry`: Berth decides on each request what the token may do).
pub fn pass_through(req: &Request, image: &ImageRef, opts: &Options, now: u64) -> Result<Response, PluginError> {
    let token = match service_account_token(req) {
        Some(t) => t,
        None if opts.require_service_account => return err(NO_TOKEN),
        None => return Ok(Response { api_version: API_VERSION, kind: "CredentialProviderResponse", cache_key_type: CacheKeyType::Registry, cache_duration: "0s".into(), auth: BTreeMap::new() }),
    };
    let secs = cache_secs(jwt_expiry(token), now, opts.max_cache_secs, opts.expiry_margin_secs);
    Ok(response(&image.registry, CacheKeyType::Registry, &opts.username, token, secs))
}

/// The HTTP request of exchange mode: GET `url` with the `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRequest {
    pub url: String,
    pub authorization: String,
}

/// Exchange mode, first half: the token request for a pull of this image's repository, sent only
/// to the configured registry.
pub fn exchange_request(req: &Request, image: &ImageRef, registry: &RegistryUrl, opts: &Options) -> Result<ExchangeRequest, PluginError> {
    check_registry(image, registry)?;
    let token = service_account_token(req).ok_or_else(|| PluginError(format!("exchange mode: {NO_TOKEN}")))?;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{token}", opts.username));
    Ok(ExchangeRequest { url: registry.token_url(&image.repository), authorization: format!("Basic {basic}") })
}

/// Exchange mode, second half: Berth's answer (`status`, `location` of a redirect, the body)
/// becomes the response. The credential is scoped to one repository, so it is cached per image
/// (`cacheKeyType: Image`, `auth` keyed by the repository), and never past the registry token's
/// expiry (the earlier of `expires_in` and the token's `exp`) minus the margin.
pub fn exchange_response(image: &ImageRef, url: &str, status: u16, location: Option<&str>, body: &[u8], opts: &Options, now: u64) -> Result<Response, PluginError> {
    if (300..400).contains(&status) {
        return err(format!(
            "{url} answered HTTP {status} (a redirect to {:?}), which is not followed so the service-account token goes only to --registry-url: set --registry-url to Berth's own address",
            one_line(location.unwrap_or("nowhere"))
        ));
    }
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        let msg = json.as_ref().and_then(|v| v["errors"][0]["message"].as_str()).map(one_line);
        return match msg {
            Some(m) => err(format!("Berth refused the service-account token (HTTP {status}): {m}")),
            None => err(format!("exchanging the token at {url}: HTTP {status} without an error message (is --registry-url Berth's address?)")),
        };
    }
    let json = json.ok_or_else(|| PluginError(format!("exchanging the token at {url}: HTTP {status}, but the answer is not JSON (is --registry-url Berth's address?)")))?;
    let token = json["token"]
        .as_str()
        .or_else(|| json["access_token"].as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| PluginError(format!("the answer of {url} has no token (is --registry-url Berth's address?)")))?;
    let by_expires_in = json["expires_in"].as_u64().map(|s| now.saturating_add(s));
    let expires_at = match (by_expires_in, jwt_expiry(token)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let secs = cache_secs(expires_at, now, opts.max_cache_secs, opts.expiry_margin_secs);
    Ok(response(&image.repository_key(), CacheKeyType::Image, EXCHANGE_USERNAME, token, secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (image, registry, repository, tag, digest)
    type ImageCase<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);
    /// (status, location, body, cache seconds or the error's text)
    type AnswerCase<'a> = (u16, Option<&'a str>, Vec<u8>, Result<u64, &'a str>);

    #[test]
    fn image_references() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let with_digest = format!("registry.example.com:5000/a/b/c@{d}");
        let tag_and_digest = format!("r.example/a:v1.2@{d}");
        let ok: [ImageCase; 12] = [
            ("registry.example.com/library/app:v1", "registry.example.com", "library/app", Some("v1"), None),
            (&with_digest, "registry.example.com:5000", "a/b/c", None, Some(d)),
            (&tag_and_digest, "r.example", "a", Some("v1.2"), Some(d)),
            ("localhost/app", "localhost", "app", None, None),
            ("127.0.0.1:5000/library/app:latest", "127.0.0.1:5000", "library/app", Some("latest"), None),
            ("[::1]:5000/app", "[::1]:5000", "app", None, None),
            ("Registry.Example.com/app", "Registry.Example.com", "app", None, None),
            ("REGISTRY/app", "REGISTRY", "app", None, None),
            ("nginx:1.25", "docker.io", "library/nginx", Some("1.25"), None),
            ("library/nginx", "docker.io", "library/nginx", None, None),
            ("r.example/a.b_c__d---e/f", "r.example", "a.b_c__d---e/f", None, None),
            ("r.example/a:_x", "r.example", "a", Some("_x"), None),
        ];
        for (image, registry, repository, tag, digest) in ok {
            let got = parse_image(image).unwrap_or_else(|e| panic!("{image}: {e}"));
            assert_eq!(got, ImageRef { registry: registry.into(), repository: repository.into(), tag: tag.map(Into::into), digest: digest.map(Into::into) }, "{image}");
        }
        let long = format!("r.example/{}", "a".repeat(250));
        let bad = [
            ("", "empty"),
            ("registry.example.com/", "no repository"),
            ("reg istry/app", "spaces"),
            ("r.example/a\u{0}b", "control characters"),
            ("r.example/a\nb", "control characters"),
            ("registry.example.com/App:v1", "invalid repository path"),
            ("registry.example.com:port/app", "invalid registry port"),
            ("registry.example.com:0/app", "invalid registry port"),
            ("registry.example.com:70000/app", "invalid registry port"),
            ("registry.example.com//app", "invalid repository path"),
            ("r.example/a?x=1", "invalid repository path"),
            ("r.example/a#frag", "invalid repository path"),
            ("r.example/a%2fb", "invalid repository path"),
            ("r.example/a/../b", "invalid repository path"),
            ("r.example/-a", "invalid repository path"),
            ("r.example/a-", "invalid repository path"),
            ("r.example/a..b", "invalid repository path"),
            ("r.example/a___b", "invalid repository path"),
            ("r.example/a:v1?x", "invalid tag"),
            ("r.example/a:.v1", "invalid tag"),
            ("r.example/a@sha256:00", "invalid digest"),
            ("r.example/a@sha256:0123456789abcdef0123456789abcdeg", "invalid digest"),
            ("r.example/a@md5", "invalid digest"),
            ("r.ex_ample/a", "invalid registry host"),
            ("-r.example/a", "invalid registry host"),
            ("evil.example?.com/a", "invalid registry host"),
            ("user@r.example/a", "invalid digest"),
            ("[::1/app", "unclosed"),
            ("[zz]:5000/app", "IPv6"),
            (&long, "longer than 255"),
        ];
        for (image, want) in bad {
            match parse_image(image) {
                Ok(r) => panic!("{image:?}: accepted as {r:?}"),
                Err(e) => assert!(e.0.contains(want) && e.0.starts_with("cannot parse image reference"), "{image:?}: {e}"),
            }
        }
        let tag = format!("r.example/a:{}", "t".repeat(129));
        assert!(parse_image(&tag).is_err(), "a tag of 129 characters");
        assert!(parse_image(&format!("r.example/a:{}", "t".repeat(128))).is_ok());
        assert_eq!(parse_image("r.example:5000/apps/web:v1").map(|i| i.repository_key()), Ok("r.example:5000/apps/web".to_owned()));
    }

    #[test]
    fn registry_urls() {
        // (url, allow insecure loopback, authority or the error's text)
        let cases: [(&str, bool, Result<&str, &str>); 20] = [
            ("https://registry.example.com", false, Ok("registry.example.com")),
            ("https://registry.example.com/", false, Ok("registry.example.com")),
            ("HTTPS://Registry.Example.com:443", false, Ok("registry.example.com")),
            ("https://registry.example.com:5000", false, Ok("registry.example.com:5000")),
            ("https://127.0.0.1:5000", false, Ok("127.0.0.1:5000")),
            ("http://127.0.0.1:5000", true, Ok("127.0.0.1:5000")),
            ("http://127.8.9.10", true, Ok("127.8.9.10")),
            ("http://[::1]:5000", true, Ok("[::1]:5000")),
            ("http://127.0.0.1:5000", false, Err("plain HTTP would send the service-account token unencrypted")),
            ("http://registry.example.com", false, Err("plain HTTP")),
            ("http://registry.example.com", true, Err("only to a loopback IP address")),
            ("http://localhost:5000", true, Err("only to a loopback IP address")),
            ("http://10.0.0.1:5000", true, Err("only to a loopback IP address")),
            ("http://127.0.0.1.evil.example", true, Err("only to a loopback IP address")),
            ("registry.example.com", false, Err("expected https://")),
            ("ftp://registry.example.com", false, Err("expected https://")),
            ("https://registry.example.com/v2", false, Err("no user, path, query or fragment")),
            ("https://user@registry.example.com", false, Err("no user")),
            ("https://registry.example.com?x#y", false, Err("no user")),
            ("https://registry.example.com:99999", false, Err("invalid registry port")),
        ];
        for (url, allow, want) in cases {
            match (RegistryUrl::parse(url, allow), want) {
                (Ok(u), Ok(w)) => assert_eq!(u.authority(), w, "{url}"),
                (Err(e), Err(w)) => assert!(e.0.contains(w) && e.0.starts_with("--registry-url"), "{url}: {e}"),
                (got, want) => panic!("{url}: got {got:?}, want {want:?}"),
            }
        }
        let u = RegistryUrl::parse("https://registry.example.com", false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.token_url("apps/web"), "https://registry.example.com/service/token?scope=repository:apps/web:pull");
        assert!(!u.is_insecure());
        let l = RegistryUrl::parse("http://127.0.0.1:8080/", true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.token_url("a"), "http://127.0.0.1:8080/service/token?scope=repository:a:pull");
        assert!(l.is_insecure());
    }

    #[test]
    fn only_the_configured_registry_is_served() {
        let https = RegistryUrl::parse("https://registry.example.com", false).unwrap_or_else(|e| panic!("{e}"));
        let port = RegistryUrl::parse("https://registry.example.com:5000", false).unwrap_or_else(|e| panic!("{e}"));
        let http = RegistryUrl::parse("http://127.0.0.1", true).unwrap_or_else(|e| panic!("{e}"));
        let cases = [
            (&https, "registry.example.com", true),
            (&https, "Registry.Example.COM", true),
            (&https, "registry.example.com:443", true),
            (&https, "registry.example.com:5000", false),
            (&https, "registry.example.com.evil.example", false),
            (&https, "evil.example", false),
            (&https, "docker.io", false),
            (&port, "registry.example.com:5000", true),
            (&port, "registry.example.com", false),
            (&http, "127.0.0.1", true),
            (&http, "127.0.0.1:80", true),
            (&http, "127.0.0.1:443", false),
        ];
        for (url, registry, want) in cases {
            assert_eq!(url.serves(registry), want, "{} serves {registry}", url.authority());
        }
        let image = parse_image("evil.example/apps/web:v1").unwrap_or_else(|e| panic!("{e}"));
        let e = check_registry(&image, &https).err().unwrap_or_else(|| panic!("evil.example accepted"));
        assert!(e.0.contains("not on --registry-url \"registry.example.com\"") && e.0.contains("matchImages"), "{e}");
    }

    #[test]
    fn durations_and_cache() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(59), "59s");
        assert_eq!(go_duration(300), "5m0s");
        assert_eq!(go_duration(3725), "1h2m5s");
        // (expires at, now, max, margin) -> seconds
        let cases = [
            ((Some(1000 + 3600), 1000, 300, 60), 300, "bounded by the maximum"),
            ((Some(1000 + 100), 1000, 300, 60), 40, "never past the expiry minus the margin"),
            ((Some(1000 + 100), 1000, 300, 30), 70, "the margin is an option"),
            ((Some(1000 + 60), 1000, 300, 60), 0, "exactly the margin left"),
            ((Some(1000 + 10), 1000, 300, 60), 0, "less than the margin left"),
            ((Some(500), 1000, 300, 60), 0, "expired"),
            ((None, 1000, 300, 60), 0, "unknown expiry: no caching"),
            ((Some(u64::MAX), 1000, 300, 60), 300, "no overflow"),
        ];
        for ((exp, now, max, margin), want, why) in cases {
            assert_eq!(cache_secs(exp, now, max, margin), want, "{why}");
        }
    }

    fn jwt(exp: u64) -> String {
        let b = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2ln", b(serde_json::json!({"alg": "ES256"})), b(serde_json::json!({"exp": exp})))
    }

    #[test]
    fn exchange_answers() {
        let now = 1_000_000;
        let opts = Options::default();
        let image = parse_image("registry.example.com/apps/web:v1").unwrap_or_else(|e| panic!("{e}"));
        let url = "https://registry.example.com/service/token?scope=repository:apps/web:pull";
        let long = jwt(now + 3600);
        let short = jwt(now + 100);
        let ok_body = |token: &str, expires_in: Option<u64>| {
            let mut v = serde_json::json!({"token": token});
            if let Some(e) = expires_in {
                v["expires_in"] = e.into();
            }
            v.to_string().into_bytes()
        };
        let cases: Vec<AnswerCase> = vec![
            (200, None, ok_body(&long, Some(300)), Ok(240)),
            (200, None, ok_body(&long, Some(3600)), Ok(300)),
            (200, None, ok_body(&short, Some(300)), Ok(40)),
            (200, None, ok_body(&long, Some(45)), Ok(0)),
            (200, None, ok_body(&long, None), Ok(300)),
            (200, None, ok_body("opaque", Some(200)), Ok(140)),
            (200, None, ok_body("opaque", None), Ok(0)),
            (200, None, serde_json::json!({"access_token": long, "expires_in": 300}).to_string().into_bytes(), Ok(240)),
            (200, None, b"{}".to_vec(), Err("has no token")),
            (200, None, b"<html>".to_vec(), Err("not JSON")),
            (302, Some("https://evil.example/steal"), vec![], Err("a redirect to \"https://evil.example/steal\"), which is not followed")),
            (401, None, br#"{"errors":[{"code":"UNAUTHORIZED","message":"no robots matched\nyour token"}]}"#.to_vec(), Err("Berth refused the service-account token (HTTP 401): no robots matched your token")),
            (404, None, b"not found".to_vec(), Err("HTTP 404 without an error message")),
        ];
        for (status, location, body, want) in cases {
            let got = exchange_response(&image, url, status, location, &body, &opts, now);
            match (got, want) {
                (Ok(r), Ok(secs)) => {
                    assert_eq!(r.cache_duration, go_duration(secs), "{status} {}", String::from_utf8_lossy(&body));
                    assert_eq!(r.cache_key_type, CacheKeyType::Image);
                    let keys: Vec<_> = r.auth.keys().collect();
                    assert_eq!(keys, ["registry.example.com/apps/web"]);
                    assert_eq!(r.auth["registry.example.com/apps/web"].username, EXCHANGE_USERNAME);
                }
                (Err(e), Err(w)) => assert!(e.0.contains(w) && !e.0.contains('\n'), "{status}: {e}"),
                (got, want) => panic!("{status} {}: got {got:?}, want {want:?}", String::from_utf8_lossy(&body)),
            }
        }
    }

    #[test]
    fn exchange_requests_go_only_to_the_configured_registry() {
        let opts = Options::default();
        let registry = RegistryUrl::parse("https://registry.example.com", false).unwrap_or_else(|e| panic!("{e}"));
        let req = |image: &str, token: Option<&str>| Request {
            api_version: API_VERSION.into(),
            kind: "CredentialProviderRequest".into(),
            image: image.into(),
            service_account_token: token.map(Into::into),
            service_account_annotations: None,
        };
        let r = req("registry.example.com/apps/web:v1", Some("sa"));
        let image = parse_image(&r.image).unwrap_or_else(|e| panic!("{e}"));
        let got = exchange_request(&r, &image, &registry, &opts).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.url, "https://registry.example.com/service/token?scope=repository:apps/web:pull");
        assert_eq!(got.authorization, format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("jwt:sa")));
        let r = req("evil.example/apps/web:v1", Some("sa"));
        let image = parse_image(&r.image).unwrap_or_else(|e| panic!("{e}"));
        assert!(exchange_request(&r, &image, &registry, &opts).is_err_and(|e| e.0.contains("not on --registry-url")));
        let r = req("registry.example.com/apps/web:v1", None);
        let image = parse_image(&r.image).unwrap_or_else(|e| panic!("{e}"));
        assert!(exchange_request(&r, &image, &registry, &opts).is_err_and(|e| e.0.contains("no serviceAccountToken")));
    }

    #[test]
    fn one_line_messages() {
        assert_eq!(one_line("a\nb\r\tc"), "a b  c");
        assert_eq!(one_line(&"x".repeat(400)).chars().count(), 301);
    }
}
