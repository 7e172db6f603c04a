//! `berth-credential-provider`: a kubelet image credential provider (KEP-4412). The kubelet runs
//! it with a `CredentialProviderRequest` on stdin and reads a `CredentialProviderResponse` on
//! stdout. Errors: one line on stderr, exit status 1, nothing on stdout.

use std::io::{Read as _, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_credential_provider::{
    cache_secs, parse_request, pass_through, registry_of, repository_of, response, Options, PluginError, Request,
    MAX_REQUEST_BYTES,
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
      args: [\"--username\", \"jwt\"]          # optional

OPTIONS (each also as an environment variable, set with `env:` in the config):
  --username NAME        Basic user name sent with the token [BERTH_CP_USERNAME, default jwt]
  --mode MODE            pass-through (default): the service-account token is the password;
                         exchange: trade it at Berth's /service/token for a short-lived registry
                         token first, so the service-account token never reaches containerd
                         [BERTH_CP_MODE]
  --registry-url URL     exchange mode: Berth's URL [BERTH_CP_REGISTRY_URL, default https://<image registry>]
  --ca-file FILE         exchange mode: PEM CA to trust for Berth's HTTPS [BERTH_CP_CA_FILE]
  --max-cache SECONDS    upper bound of the cache duration [BERTH_CP_MAX_CACHE, default 300]; never
                         longer than the credential's remaining life
  --allow-missing-token  answer with no credentials (instead of failing) when the request has no
                         service-account token [BERTH_CP_ALLOW_MISSING_TOKEN=1]
  --version, --help

Pass-through mode makes no network call.";

#[derive(Debug)]
struct Config {
    opts: Options,
    exchange: bool,
    registry_url: Option<String>,
    ca_file: Option<String>,
}

fn parse_args() -> Result<Option<Config>, PluginError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut cfg = Config {
        opts: Options::default(),
        exchange: false,
        registry_url: env("BERTH_CP_REGISTRY_URL"),
        ca_file: env("BERTH_CP_CA_FILE"),
    };
    if let Some(u) = env("BERTH_CP_USERNAME") {
        cfg.opts.username = u;
    }
    let mut mode = env("BERTH_CP_MODE").unwrap_or_else(|| "pass-through".into());
    if let Some(m) = env("BERTH_CP_MAX_CACHE") {
        cfg.opts.max_cache_secs = m.parse().map_err(|_| PluginError(format!("BERTH_CP_MAX_CACHE={m:?} is not a number of seconds")))?;
    }
    if env("BERTH_CP_ALLOW_MISSING_TOKEN").is_some_and(|v| v == "1" || v == "true") {
        cfg.opts.require_service_account = false;
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
            "--username" => cfg.opts.username = value("--username")?,
            "--mode" => mode = value("--mode")?,
            "--registry-url" => cfg.registry_url = Some(value("--registry-url")?),
            "--ca-file" => cfg.ca_file = Some(value("--ca-file")?),
            "--max-cache" => {
                let v = value("--max-cache")?;
                cfg.opts.max_cache_secs = v.parse().map_err(|_| PluginError(format!("--max-cache {v:?} is not a number of seconds")))?;
            }
            "--allow-missing-token" => cfg.opts.require_service_account = false,
            other => return Err(PluginError(format!("unknown argument {other:?} (see --help)"))),
        }
    }
    cfg.exchange = match mode.as_str() {
        "pass-through" | "passthrough" => false,
        "exchange" => true,
        other => return Err(PluginError(format!("unknown mode {other:?}: use pass-through or exchange"))),
    };
    Ok(Some(cfg))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Exchange mode: the service-account token buys a short-lived registry token for pulling this
/// image's repository.
fn exchange(req: &Request, cfg: &Config) -> Result<berth_credential_provider::Response, PluginError> {
    let registry = registry_of(&req.image)?;
    let token = req
        .service_account_token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| PluginError("exchange mode needs a serviceAccountToken in the request: set tokenAttributes in the kubelet's CredentialProviderConfig".into()))?;
    let base = cfg.registry_url.clone().unwrap_or_else(|| format!("https://{registry}"));
    let url = format!("{}/service/token?scope=repository:{}:pull", base.trim_end_matches('/'), repository_of(&req.image));
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
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls.build())
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{token}", cfg.opts.username));
    let mut resp = agent
        .get(&url)
        .header("Authorization", &format!("Basic {basic}"))
        .call()
        .map_err(|e| PluginError(format!("exchanging the token at {url}: {e}")))?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_json()
        .map_err(|e| PluginError(format!("exchanging the token at {url}: HTTP {status}, unreadable answer: {e}")))?;
    if !status.is_success() {
        let msg = body["errors"][0]["message"].as_str().unwrap_or("no message");
        return Err(PluginError(format!("Berth refused the service-account token (HTTP {status}): {msg}")));
    }
    let registry_token = body["token"].as_str().ok_or_else(|| PluginError(format!("the answer of {url} has no token")))?;
    let expires_in = body["expires_in"].as_u64().unwrap_or(0);
    let secs = cache_secs(Some(now() + expires_in), now(), cfg.opts.max_cache_secs);
    Ok(response(&registry, "berth-token", registry_token, secs))
}

fn run() -> Result<(), PluginError> {
    let Some(cfg) = parse_args()? else { return Ok(()) };
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut input)
        .map_err(|e| PluginError(format!("reading stdin: {e}")))?;
    let req = parse_request(&input)?;
    let resp = if cfg.exchange { exchange(&req, &cfg)? } else { pass_through(&req, &cfg.opts, now())? };
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
