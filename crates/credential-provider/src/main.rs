//! `berth-credential-provider`: a kubelet image credential provider (KEP-4412). The kubelet runs
//! it with a `CredentialProviderRequest` on stdin and reads a `CredentialProviderResponse` on
//! stdout. Errors: one line on stderr, exit status 1, nothing on stdout.

use std::io::{Read as _, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_credential_provider::{
    check_registry, exchange_request, exchange_response, parse_image, parse_request, pass_through, ImageRef, Options, PluginError,
    RegistryUrl, Request, Response, MAX_REQUEST_BYTES,
};

const HELP: &str = "\
berth-credential-provider: kubelet image credential provider for Berth (KEP-4412).

The kubelet runs it with a CredentialProviderRequest (credentialprovider.kubelet.k8s.io/v1) on
stdin and reads a CredentialProviderResponse on stdout. It gives the pod's service-account token to
Berth, which verifies it (workload identity federation): no pull secret anywhere.

USAGE (in the kubelet's CredentialProviderConfig):
  providers:
    - name: berth-credential-provider
      apiVersion: credentialprovider.kubelet.k8s.io/v1
      matchImages: [\"registry.example.com\"]
      defaultCacheDuration: \"5m\"
      tokenAttributes:
        serviceAccountTokenAudience: registry.example.com
        requireServiceAccount: true
        cacheType: Token
      args: [\"--registry-url\", \"https://registry.example.com\"]

OPTIONS (each also as an environment variable, set with `env:` in the config):
  --registry-url URL     Berth's URL, https://host[:port] [BERTH_CP_REGISTRY_URL]. Only images on
                         this registry get credentials; others are refused (exit 1). Required in
                         exchange mode, where the service-account token is sent only there.
  --mode MODE            pass-through (default): the service-account token is the password
                         (cacheKeyType Registry); exchange: trade it at Berth's /service/token for
                         a short-lived registry token that pulls the image's repository, so the
                         service-account token never reaches containerd (cacheKeyType Image)
                         [BERTH_CP_MODE]
  --username NAME        Basic user name sent with the token [BERTH_CP_USERNAME, default jwt]
  --ca-file FILE         exchange mode: PEM CA to trust for Berth's HTTPS [BERTH_CP_CA_FILE]
  --allow-insecure-loopback
                         accept an http:// --registry-url, only for a loopback IP address
                         (127.0.0.1, [::1]) [BERTH_CP_ALLOW_INSECURE_LOOPBACK=1]
  --max-cache SECONDS    upper bound of the cache duration [BERTH_CP_MAX_CACHE, default 300]
  --expiry-margin SECONDS
                         the kubelet's cache drops a credential this long before it expires
                         [BERTH_CP_EXPIRY_MARGIN, default 60]
  --allow-missing-token  answer with no credentials (instead of failing) when the request has no
                         service-account token (pass-through mode) [BERTH_CP_ALLOW_MISSING_TOKEN=1]
  --version, --help

Pass-through mode makes no network call. Exchange mode follows no redirects.";

#[derive(Debug)]
struct Config {
    opts: Options,
    exchange: bool,
    registry: Option<RegistryUrl>,
    ca_file: Option<String>,
}

fn seconds(name: &str, v: &str) -> Result<u64, PluginError> {
    v.parse().map_err(|_| PluginError(format!("{name} {v:?} is not a number of seconds")))
}

fn parse_args() -> Result<Option<Config>, PluginError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let flag = |k: &str| env(k).is_some_and(|v| v == "1" || v == "true");
    let mut opts = Options::default();
    let mut registry_url = env("BERTH_CP_REGISTRY_URL");
    let mut ca_file = env("BERTH_CP_CA_FILE");
    let mut allow_insecure_loopback = flag("BERTH_CP_ALLOW_INSECURE_LOOPBACK");
    if let Some(u) = env("BERTH_CP_USERNAME") {
        opts.username = u;
    }
    let mut mode = env("BERTH_CP_MODE").unwrap_or_else(|| "pass-through".into());
    if let Some(m) = env("BERTH_CP_MAX_CACHE") {
        opts.max_cache_secs = seconds("BERTH_CP_MAX_CACHE", &m)?;
    }
    if let Some(m) = env("BERTH_CP_EXPIRY_MARGIN") {
        opts.expiry_margin_secs = seconds("BERTH_CP_EXPIRY_MARGIN", &m)?;
    }
    if flag("BERTH_CP_ALLOW_MISSING_TOKEN") {
        opts.require_service_account = false;
    }
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| PluginError(format!("{name} needs a value (see --help)")));
        match a.as_str() {
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(None);
            }
            "--version" | "-V" => {
                println!("berth-credential-provider {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--username" => opts.username = value("--username")?,
            "--mode" => mode = value("--mode")?,
            "--registry-url" => registry_url = Some(value("--registry-url")?),
            "--ca-file" => ca_file = Some(value("--ca-file")?),
            "--allow-insecure-loopback" => allow_insecure_loopback = true,
            "--max-cache" => opts.max_cache_secs = seconds("--max-cache", &value("--max-cache")?)?,
            "--expiry-margin" => opts.expiry_margin_secs = seconds("--expiry-margin", &value("--expiry-margin")?)?,
            "--allow-missing-token" => opts.require_service_account = false,
            other => return Err(PluginError(format!("unknown argument {:?} (see --help)", berth_credential_provider::one_line(other)))),
        }
    }
    let exchange = match mode.as_str() {
        "pass-through" | "passthrough" => false,
        "exchange" => true,
        other => return Err(PluginError(format!("unknown mode {:?}: use pass-through or exchange", berth_credential_provider::one_line(other)))),
    };
    let registry = registry_url.map(|u| RegistryUrl::parse(&u, allow_insecure_loopback)).transpose()?;
    if exchange && registry.is_none() {
        return Err(PluginError(
            "exchange mode needs --registry-url https://<Berth's host> (or BERTH_CP_REGISTRY_URL): the service-account token is sent only there".into(),
        ));
    }
    Ok(Some(Config { opts, exchange, registry, ca_file }))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn agent(cfg: &Config, registry: &RegistryUrl) -> Result<ureq::Agent, PluginError> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(f) = &cfg.ca_file {
        let pem = std::fs::read(f).map_err(|e| PluginError(format!("cannot read --ca-file {f}: {e}")))?;
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|p| match p {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(PluginError(format!("--ca-file {f} holds no PEM certificate")));
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    let mut config = ureq::Agent::config_builder()
        .tls_config(tls.build())
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .http_status_as_error(false)
        // The token goes to --registry-url and nowhere else: a redirect is an error.
        .max_redirects(0)
        .https_only(!registry.is_insecure());
    if registry.is_insecure() {
        // Plain HTTP to a loopback address never goes through an HTTP proxy (which would see the
        // token); HTTPS may (CONNECT keeps TLS end to end).
        config = config.proxy(None);
    }
    Ok(config.build().into())
}

/// Exchange mode: the service-account token buys a short-lived registry token for pulling this
/// image's repository, from the configured registry only.
fn exchange(req: &Request, image: &ImageRef, cfg: &Config, registry: &RegistryUrl) -> Result<Response, PluginError> {
    let call = exchange_request(req, image, registry, &cfg.opts)?;
    let mut resp = agent(cfg, registry)?
        .get(&call.url)
        .header("Authorization", &call.authorization)
        .call()
        .map_err(|e| PluginError(format!("exchanging the token at {}: {}", call.url, berth_credential_provider::one_line(&e.to_string()))))?;
    let status = resp.status().as_u16();
    let location = resp.headers().get("location").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_vec()
        .map_err(|e| PluginError(format!("exchanging the token at {}: HTTP {status}, unreadable answer: {e}", call.url)))?;
    exchange_response(image, &call.url, status, location.as_deref(), &body, &cfg.opts, now())
}

fn run() -> Result<(), PluginError> {
    let Some(cfg) = parse_args()? else { return Ok(()) };
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut input)
        .map_err(|e| PluginError(format!("reading stdin: {e}")))?;
    let req = parse_request(&input)?;
    let image = parse_image(&req.image)?;
    let resp = match &cfg.registry {
        Some(registry) if cfg.exchange => exchange(&req, &image, &cfg, registry)?,
        Some(registry) => {
            check_registry(&image, registry)?;
            pass_through(&req, &image, &cfg.opts, now())?
        }
        None => pass_through(&req, &image, &cfg.opts, now())?,
    };
    let out = serde_json::to_vec(&resp).map_err(|e| PluginError(format!("encoding the response: {e}")))?;
    // One write of the whole response: the kubelet never sees half of it.
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out).and_then(|()| stdout.write_all(b"\n")).and_then(|()| stdout.flush()).map_err(|e| PluginError(format!("writing stdout: {e}")))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-credential-provider: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
