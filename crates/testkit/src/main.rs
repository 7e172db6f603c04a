//! `berth-test-issuer`: the test OIDC issuer as a process, for manual testing, docs and the
//! benchmark script. `serve` runs an issuer and saves its state (signing key, JWKS, CA) in a
//! directory; `mint` signs tokens with the key saved there, so a script starts the issuer once
//! and mints as many tokens as it needs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use berth_testkit::claims::{self, merge};
use berth_testkit::{jws, Flavor, IssuerOptions, Key, KeyKind, TestIssuer};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A test OIDC issuer (discovery + JWKS on 127.0.0.1) that mints tokens shaped like GitHub
/// Actions, GitLab CI, Forgejo Actions and Kubernetes ones. Test use only.
#[derive(Parser)]
#[command(name = "berth-test-issuer", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve discovery and JWKS until killed. Prints one JSON line when ready:
    /// {"issuer", "discovery_url", "jwks_uri", "kid", "alg", "state_dir", "jwks_file", "ca_pem_file"}.
    Serve(ServeArgs),
    /// Print a token signed with the key saved by `serve` in the state directory.
    Mint(MintArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Serve HTTPS with a fresh CA (its certificate is written to STATE_DIR/ca.pem).
    #[arg(long)]
    https: bool,
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Path of the issuer URL after the host, e.g. /api/actions.
    #[arg(long, default_value = "")]
    path: String,
    /// Platform imitated: generic, github, gitlab, kubernetes, forgejo (JWKS path, kid shape, x5t).
    #[arg(long, default_value = "generic")]
    flavor: Flavor,
    /// Signing key: rsa, rsa3072, ec256, ec384, ed25519 (default: RSA, or ec256 for generic).
    #[arg(long)]
    key: Option<KeyKind>,
    /// Where to write state.json, signing-key.pem, jwks.json and ca.pem
    /// (default: a new directory under the system's temporary directory).
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct MintArgs {
    /// The directory written by `serve`.
    #[arg(long)]
    state_dir: PathBuf,
    /// Claim set: github, gitlab, kubernetes, forgejo, generic (default: the issuer's flavour).
    #[arg(long)]
    preset: Option<Flavor>,
    /// Audience; repeat for several (a JSON array). Kubernetes tokens always get an array.
    #[arg(long, required = true)]
    aud: Vec<String>,
    /// Set a top-level claim to a string: --set ref=refs/heads/dev.
    #[arg(long, value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Merge a JSON value into a top-level claim (RFC 7386; null removes):
    /// --set-json runner_id=42 --set-json 'kubernetes.io={"namespace":"prod"}'.
    #[arg(long, value_name = "KEY=JSON")]
    set_json: Vec<String>,
    /// Lifetime in seconds: exp = iat + ttl (negative: already expired). Default: the preset's.
    #[arg(long, allow_negative_numbers = true)]
    ttl: Option<i64>,
}

/// What `serve` saves for `mint`.
#[derive(Serialize, Deserialize)]
struct State {
    issuer: String,
    flavor: String,
    key: String,
    kid: String,
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x5t: Option<String>,
}

const STATE: &str = "state.json";
const SIGNING_KEY: &str = "signing-key.pem";
const JWKS: &str = "jwks.json";
const CA: &str = "ca.pem";

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(serve(args))
        }
        Command::Mint(args) => {
            println!("{}", mint(&args)?);
            Ok(())
        }
    }
}

/// Writes a file through a temporary name, so a reader never sees half of it.
fn write(path: &Path, contents: &str, private: bool) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    if private {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let dir = match args.state_dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("berth-test-issuer-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let opts = IssuerOptions { flavor: args.flavor, path: args.path, key: args.key, port: args.port, jwks_path: None, fresh_keys: true };
    let issuer = if args.https { TestIssuer::start_https(opts).await } else { TestIssuer::start(opts).await };
    let key = issuer.signing_key();
    let state = State {
        issuer: issuer.issuer(),
        flavor: args.flavor.to_string(),
        key: key.kind().to_string(),
        kid: key.kid().to_owned(),
        alg: key.alg().to_owned(),
        x5t: key.x5t(),
    };
    write(&dir.join(SIGNING_KEY), &key.to_pkcs8_pem(), true)?;
    write(&dir.join(JWKS), &issuer.jwks_json(), false)?;
    let ca_file = match issuer.ca_pem() {
        Some(pem) => {
            write(&dir.join(CA), &pem, false)?;
            Some(dir.join(CA))
        }
        None => {
            let _ = std::fs::remove_file(dir.join(CA));
            None
        }
    };
    write(&dir.join(STATE), &serde_json::to_string_pretty(&state)?, false)?;
    let ready = json!({
        "issuer": state.issuer,
        "discovery_url": issuer.discovery_url(),
        "jwks_uri": issuer.jwks_uri(),
        "kid": state.kid,
        "alg": state.alg,
        "state_dir": dir,
        "jwks_file": dir.join(JWKS),
        "ca_pem_file": ca_file,
    });
    println!("{ready}");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    issuer.shutdown().await;
    Ok(())
}

fn split_assignment(s: &str) -> anyhow::Result<(&str, &str)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => bail!("expected KEY=VALUE, got {s:?}"),
    }
}

fn mint(args: &MintArgs) -> anyhow::Result<String> {
    let path = args.state_dir.join(STATE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (start `berth-test-issuer serve --state-dir` first)", path.display()))?;
    let state: State = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let kind: KeyKind = state.key.parse().map_err(anyhow::Error::msg)?;
    let pem = std::fs::read_to_string(args.state_dir.join(SIGNING_KEY))?;
    let key = Key::from_pkcs8_pem(kind, &pem, Some(state.kid.clone()))?;
    let flavor = match args.preset {
        Some(f) => f,
        None => state.flavor.parse().map_err(anyhow::Error::msg)?,
    };

    let now = claims::now();
    let first = args.aud.first().map(String::as_str).unwrap_or_default();
    let mut claims = claims::preset(flavor, &state.issuer, first, now);
    if args.aud.len() > 1 || flavor == Flavor::Kubernetes {
        claims["aud"] = json!(args.aud);
    }
    if let Some(ttl) = args.ttl {
        let iat = claims["iat"].as_u64().unwrap_or(now);
        claims["exp"] = json!(iat.saturating_add_signed(ttl));
    }
    for s in &args.set {
        let (k, v) = split_assignment(s)?;
        claims[k] = Value::String(v.to_owned());
    }
    for s in &args.set_json {
        let (k, v) = split_assignment(s)?;
        let v: Value = serde_json::from_str(v).with_context(|| format!("--set-json {k}: not JSON: {v}"))?;
        claims = merge(claims, json!({ k: v }));
    }
    let extra = match &state.x5t {
        Some(x5t) => json!({"x5t": x5t}),
        None => Value::Null,
    };
    Ok(jws::sign(&key, &state.alg, extra, &claims))
}
