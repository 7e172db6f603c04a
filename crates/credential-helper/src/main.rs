//! `docker-credential-berth`: the Docker credential helper of Berth (the protocol of
//! docker-credential-helpers: the command is the first argument, the request on stdin, the
//! answer on stdout).
//!
//! Errors: exit status 1 and one line on stderr; the same line on stdout when stdout is not a
//! terminal, because docker and podman show a helper's stdout (not its stderr) in their error.
//! Secrets are written only to stdout, and only by `get`.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use berth_credential_helper::cache::{Cache, Credential};
use berth_credential_helper::logins::{self, Login, Logins};
use serde::{Deserialize, Serialize};

const NAME: &str = "docker-credential-berth";

const HELP: &str = "\
docker-credential-berth: the Docker credential helper of Berth.

It gives docker, podman, buildah and skopeo a short-lived registry password derived from your
`berth login`, and gets a fresh one silently when it is about to expire: your long-lived login
never reaches them, and there is no `docker login` to repeat.

SETUP
  1. Log in to Berth first:   berth login https://registry.example.com
  2. Put this binary on your PATH and name it for your registry in ~/.docker/config.json
     (podman, buildah and skopeo read the same file):

       {\"credHelpers\": {\"registry.example.com\": \"berth\"}}

     (with a port: \"registry.example.com:5000\"). Then `docker pull registry.example.com/...`
     just works.

COMMANDS (run by the registry clients; the request on stdin, the answer on stdout)
  get       stdin: a server; stdout: {\"ServerURL\", \"Username\", \"Secret\"}
  store     stdin: {\"ServerURL\", \"Username\", \"Secret\"} (after `docker login`): saves that
            login (a Secret starting with berth_ as a token, else as a password)
  erase     stdin: a server; forgets its login (`docker logout`)
  list      stdout: {\"<server>\": \"<username>\", ...}
  version   the version (also --version)

FILES
  $XDG_CONFIG_HOME/berth/credentials.json (else ~/.config/...): the logins of `berth login`
  $XDG_CACHE_HOME/berth/helper/ (else ~/.cache/...): the short-lived passwords, mode 0600

When your login has ended (revoked or expired), `get` fails with
  your Berth login for <server> has ended (revoked or expired); run: berth login <server>";

/// The answer of docker's convention when there is no login for a server.
const NOT_FOUND: &str = "credentials not found in native keychain";
/// Largest request accepted on stdin.
const MAX_STDIN: u64 = 64 * 1024;
/// A cached password is used while it has more than this left.
const MIN_LIFE_SECS: i64 = 5 * 60;
/// When Berth cannot be reached, a cached password with more than this left is still used.
const MIN_LIFE_FALLBACK_SECS: i64 = 60;
/// Largest answer read from Berth.
const MAX_ANSWER: usize = 64 * 1024;

/// Why a command failed.
enum Failure {
    /// No login for the server: docker's not-found answer.
    NotFound,
    /// One line for the user.
    Message(String),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Message(format!("{e:#}"))
    }
}

/// Text made safe for one line: control characters become spaces, and it is cut at 500 characters.
fn one_line(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(500).collect();
    if s.chars().count() > 500 {
        out.push('…');
    }
    out
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

fn read_stdin() -> Result<String, Failure> {
    let mut input = Vec::new();
    std::io::stdin().take(MAX_STDIN + 1).read_to_end(&mut input).context("reading stdin")?;
    if input.len() as u64 > MAX_STDIN {
        return Err(Failure::Message(format!("the request on stdin is larger than {MAX_STDIN} bytes")));
    }
    String::from_utf8(input).map_err(|_| Failure::Message("the request on stdin is not UTF-8".into()))
}

/// The server named on stdin (`get`, `erase`).
fn read_server() -> Result<String, Failure> {
    let server = read_stdin()?.trim().to_owned();
    if server.is_empty() {
        // docker-credential-helpers' message, which the clients recognise.
        return Err(Failure::Message("no credentials server URL".into()));
    }
    Ok(server)
}

/// The answer of `get`, and the request of `store`: docker's field names.
#[derive(Serialize, Deserialize)]
struct DockerCredentials {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

fn print_json<T: Serialize>(v: &T) -> Result<(), Failure> {
    let mut out = serde_json::to_vec(v).context("encoding the answer")?;
    out.push(b'\n');
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out).and_then(|()| stdout.flush()).context("writing stdout")?;
    Ok(())
}

// ---------------------------------------------------------------- get

fn get() -> Result<(), Failure> {
    let server = read_server()?;
    let logins = Logins::load()?;
    let Some(login) = logins.find(&server) else {
        return Err(Failure::NotFound);
    };
    let (username, secret) = match login.cli_token() {
        Some(token) => {
            let c = helper_credential(login, token)?;
            (c.username, c.secret)
        }
        None => match login.secret() {
            Some(s) => (login.username.clone(), s.to_owned()),
            None => return Err(Failure::NotFound),
        },
    };
    print_json(&DockerCredentials { server_url: server, username, secret })
}

/// A short-lived registry password for a `berth login`: from the cache while it has more than
/// five minutes left, else from Berth (then cached).
fn helper_credential(login: &Login, token: &str) -> Result<Credential, Failure> {
    let cache = Cache::for_server(&login.server)?;
    let cached = cache.read(token);
    if let Some(c) = cached.as_ref().filter(|c| c.expires_at - now() > MIN_LIFE_SECS) {
        return Ok(c.clone());
    }
    match fetch(login, token) {
        Ok(Fetched::Credential(c)) => {
            if let Err(e) = cache.write(token, &c) {
                // Still a good answer; the next `get` asks Berth again.
                eprintln!("{NAME}: warning: cannot cache the registry password: {}", one_line(&format!("{e:#}")));
            }
            Ok(c)
        }
        Ok(Fetched::Ended) => {
            let _ = cache.remove();
            Err(Failure::Message(format!("your Berth login for {0} has ended (revoked or expired); run: berth login {0}", login.server)))
        }
        Err(e) => {
            let msg = format!("cannot get a registry password from {}: {}", login.server, one_line(&format!("{e:#}")));
            match cached.filter(|c| c.expires_at - now() > MIN_LIFE_FALLBACK_SECS) {
                // Berth is out of reach for a moment: the cached password still works a while.
                Some(c) => {
                    eprintln!("{NAME}: warning: {msg}; using the cached one, which expires in {} s", c.expires_at - now());
                    Ok(c)
                }
                None => Err(Failure::Message(msg)),
            }
        }
    }
}

enum Fetched {
    Credential(Credential),
    /// Berth refused the login (401, 403): revoked or expired.
    Ended,
}

/// The server as a base URL (a hand-written file may lack the scheme).
fn base_url(server: &str) -> String {
    logins::server_url(server)
}

/// Whether the registry is this machine (plain HTTP to it never goes through a proxy, which
/// would see the token).
fn is_loopback(server: &str) -> bool {
    // `registry_host` is `host[:port]`, an IPv6 address in brackets.
    let hp = logins::registry_host(server);
    let host = match hp.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => hp.split(':').next().unwrap_or_default(),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn http_client(login: &Login) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("docker-credential-berth/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(30))
        // The token goes to the login's server and nowhere else.
        .redirect(reqwest::redirect::Policy::none());
    if is_loopback(&login.server) {
        b = b.no_proxy();
    }
    if let Some(ca) = &login.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("reading the login's caFile {}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| format!("the login's caFile {} is not PEM", ca.display()))?;
        if certs.is_empty() {
            anyhow::bail!("the login's caFile {} holds no PEM certificate", ca.display());
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().context("setting up HTTPS")
}

/// `POST <server>/auth/credential` with the login's token as Bearer.
fn fetch(login: &Login, token: &str) -> anyhow::Result<Fetched> {
    let client = http_client(login)?;
    let url = format!("{}/auth/credential", base_url(&login.server));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async {
        let mut resp = client.post(&url).bearer_auth(token).send().await.map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Ok(Fetched::Ended);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| anyhow::anyhow!("reading the answer: {}", describe(&e)))? {
            if body.len() + chunk.len() > MAX_ANSWER {
                anyhow::bail!("HTTP {status}: the answer is larger than {MAX_ANSWER} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        if status != reqwest::StatusCode::OK {
            // An error's text holds no secret of ours; keep it short.
            let text = String::from_utf8_lossy(&body);
            let text: String = text.chars().take(200).collect();
            anyhow::bail!("HTTP {status}{}", if text.trim().is_empty() { String::new() } else { format!(": {}", text.trim()) });
        }
        // Parse errors name the place, never the text: it holds the password.
        let c: Credential = serde_json::from_slice(&body)
            .map_err(|e| anyhow::anyhow!("the answer is not the expected JSON {{username, secret, expiresAt}} (line {}, column {}); is {} a Berth server?", e.line(), e.column(), login.server))?;
        if c.username.is_empty() || c.secret.is_empty() {
            anyhow::bail!("the answer has an empty username or secret");
        }
        Ok(Fetched::Credential(c))
    })
}

/// A reqwest error with its causes (connection refused, certificate problems), on one line.
fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() { "no answer within 30 s".to_owned() } else { e.to_string() };
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

// ---------------------------------------------------------------- store, erase, list

fn store() -> Result<(), Failure> {
    let input = read_stdin()?;
    let creds: DockerCredentials =
        serde_json::from_str(&input).map_err(|e| Failure::Message(format!("stdin is not the JSON {{ServerURL, Username, Secret}} (line {}, column {})", e.line(), e.column())))?;
    let server = creds.server_url.trim();
    if server.is_empty() {
        return Err(Failure::Message("no credentials server URL".into()));
    }
    if creds.username.is_empty() {
        return Err(Failure::Message("no credentials username".into()));
    }
    if creds.secret.is_empty() {
        return Err(Failure::Message("no credentials secret".into()));
    }
    let mut logins = Logins::load()?;
    let existing = logins.find(server).cloned();
    if creds.secret.starts_with("berth_hlp_") && existing.is_some() {
        // `docker login` without a password gets a short-lived password from `get` and then
        // stores it: keep the login it came from.
        return Ok(());
    }
    let (token, password) = if creds.secret.starts_with("berth_") { (Some(creds.secret), None) } else { (None, Some(creds.secret)) };
    let key = existing.as_ref().map_or_else(|| logins::server_url(server), |l| l.server.clone());
    let ca_file = existing.and_then(|l| l.ca_file);
    let current = logins.current().map(|l| l.server.clone());
    logins.insert(&key, Login { server: key.clone(), username: creds.username, token, password, ca_file });
    // `docker login` does not change which login the `berth` CLI uses.
    if let Some(c) = current {
        logins.set_current(&c);
    }
    logins.save()?;
    Cache::for_server(&key)?.remove()?;
    Ok(())
}

fn erase() -> Result<(), Failure> {
    let server = read_server()?;
    let mut logins = Logins::load()?;
    if let Some(l) = logins.remove(&server) {
        logins.save()?;
        Cache::for_server(&l.server)?.remove()?;
    }
    Cache::for_server(&server)?.remove()?;
    Ok(())
}

fn list() -> Result<(), Failure> {
    let logins = Logins::load()?;
    let map: std::collections::BTreeMap<&str, &str> = logins.iter().map(|l| (l.server.as_str(), l.username.as_str())).collect();
    print_json(&map)
}

// ---------------------------------------------------------------- main

fn run() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [command] = args.as_slice() else {
        let msg = if args.is_empty() { "no command" } else { "one argument only" };
        return Err(Failure::Message(format!("{msg}: usage: {NAME} <get|store|erase|list|version> (see --help)")));
    };
    match command.as_str() {
        "get" => get(),
        "store" => store(),
        "erase" => erase(),
        "list" => list(),
        "version" | "--version" | "-V" => {
            println!("{NAME} {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        "--help" | "-h" | "help" => {
            println!("{HELP}");
            Ok(())
        }
        other => Err(Failure::Message(format!("unknown command {:?}: usage: {NAME} <get|store|erase|list|version> (see --help)", one_line(other)))),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::NotFound) => {
            println!("{NOT_FOUND}");
            ExitCode::FAILURE
        }
        Err(Failure::Message(m)) => {
            let m = one_line(&m);
            eprintln!("{NAME}: {m}");
            if !std::io::stdout().is_terminal() {
                println!("{m}");
            }
            ExitCode::FAILURE
        }
    }
}
