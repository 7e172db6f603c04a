//! The CLI commands that talk to a running Berth through its admin API (`/api/v1`): login,
//! projects, robots, identity providers, apply, token explain and audit. They send and receive
//! the API's own wire types (`berth_core::admin::types`, with `berth_claims::RuleSpec`,
//! `berth_access::PermissionSpec` and `berth_identity::federation::ProviderSpec`), so CLI and API
//! cannot drift.
//!
//! The server comes from `--server` or `BERTH_SERVER`, else from `berth login`'s saved file;
//! credentials from `BERTH_USERNAME`/`BERTH_PASSWORD`, else `BERTH_TOKEN` (a personal access
//! token), else that file, which holds a Berth token (never a password): `berth login` trades a
//! person's device-flow login or a local password for one. The file is shared with
//! `docker-credential-berth` (`berth_credential_helper::logins`). Scripts never meet a prompt: a
//! password is read from standard input only with `--password-stdin`.
//!
//! `--ca-file` trusts a private CA, or the server's own self-signed certificate: when that exact
//! certificate is presented it is accepted (its host name still checked) even if it is marked as
//! a CA, which WebPKI otherwise refuses as a server certificate (curl and skopeo accept it too).

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{bail, Context};
use berth_access::PermissionSpec;
use berth_claims::RuleSpec;
use berth_core::admin::types::*;
use berth_credential_helper::logins::{Login, Logins};
use berth_identity::federation::provider::LoginSpec;
use berth_identity::federation::{Preset, ProviderSpec};
use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Where the admin API is and who calls it.
#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// Berth's URL, like https://registry.example.com. Default: BERTH_SERVER, else the server of `berth login`.
    #[arg(long, global = true, env = "BERTH_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Admin user. Default: BERTH_USERNAME, else `berth login`'s.
    #[arg(long, global = true, env = "BERTH_USERNAME", value_name = "USER", hide_env_values = true)]
    pub username: Option<String>,
    /// A PEM CA certificate to trust for the server's HTTPS (a private CA).
    #[arg(long, global = true, env = "BERTH_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The saved logins of `berth login` (shared with `docker-credential-berth`).
fn load_logins() -> Option<Logins> {
    Logins::load().ok()
}

/// How the CLI authenticates: a password (Basic) or a Berth token (Bearer).
#[derive(Clone)]
enum Auth {
    Basic { username: String, password: String },
    Bearer(String),
}

/// An authenticated admin API client.
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: Auth,
}

fn http_client(ca: Option<&PathBuf>) -> anyhow::Result<reqwest::Client> {
    let b = reqwest::Client::builder().user_agent(concat!("berth-cli/", env!("CARGO_PKG_VERSION")));
    let Some(p) = ca else {
        return Ok(b.build()?);
    };
    let pem = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate", p.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", p.display());
    }
    let tls = tls::client_config(certs).with_context(|| format!("{} cannot be used as a CA", p.display()))?;
    Ok(b.use_preconfigured_tls(tls).build()?)
}

/// TLS for `--ca-file`: WebPKI with the file's certificates as roots, plus the exact
/// certificates of the file accepted as the server's own (self-signed, possibly CA-flagged).
mod tls {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

    #[derive(Debug)]
    struct Verifier {
        webpki: Arc<WebPkiServerVerifier>,
        pinned: Vec<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
    }

    impl ServerCertVerifier for Verifier {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
                Ok(v) => Ok(v),
                Err(e) if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {
                    // The very certificate the user gave: trusted as is, but only for its names.
                    let parsed = rustls::server::ParsedCertificate::try_from(end_entity).map_err(|_| e)?;
                    rustls::client::verify_server_name(&parsed, server_name)?;
                    Ok(ServerCertVerified::assertion())
                }
                Err(e) => Err(e),
            }
        }
        fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }
        fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider.signature_verification_algorithms.supported_schemes()
        }
    }

    /// A client configuration trusting `certs` (as CAs, and each as a server's own certificate).
    pub fn client_config(certs: Vec<CertificateDer<'static>>) -> anyhow::Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(certs.iter().cloned());
        if added == 0 {
            anyhow::bail!("none of its certificates can be parsed");
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
        let verifier = Arc::new(Verifier { webpki, pinned: certs, provider: provider.clone() });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// A plain sentence for TLS failures (rustls' own text shows Rust enum names).
fn describe_tls(e: &(dyn std::error::Error + 'static), base: &str) -> Option<String> {
    use rustls::{CertificateError, Error};
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<Error>() {
            let how = "pass --ca-file with the CA that signed the server's certificate, or with the server's own certificate if it is self-signed";
            return Some(match tls {
                Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                    format!("the certificate of {base} is not signed by a CA this machine trusts; {how}")
                }
                Error::InvalidCertificate(CertificateError::Other(o)) if o.to_string().contains("CaUsedAsEndEntity") => {
                    format!("{base} presents a CA certificate as its own; {how}")
                }
                Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) => {
                    format!("the certificate of {base} is not valid for this host name; use the name in its subjectAltName, or fix the certificate")
                }
                Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
                    format!("the certificate of {base} has expired; renew it (or check this machine's clock)")
                }
                Error::InvalidCertificate(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => {
                    format!("the certificate of {base} is not valid yet; check this machine's clock")
                }
                other => format!("TLS with {base} failed: {other}"),
            });
        }
        // An io::Error's source() skips the error it wraps: look inside it too.
        cur = match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

impl Client {
    /// The server and credentials: --server/BERTH_SERVER, else the current `berth login`; a
    /// password from BERTH_PASSWORD (with --username/BERTH_USERNAME, default admin), else a
    /// token from BERTH_TOKEN, else the saved login's token.
    pub fn new(r: &Remote) -> anyhow::Result<Client> {
        let logins = load_logins();
        let saved = match (&r.server, &logins) {
            (Some(s), Some(l)) => l.find(s).cloned(),
            (None, Some(l)) => l.current().cloned(),
            _ => None,
        };
        let base = r
            .server
            .clone()
            .or_else(|| saved.as_ref().map(|s| s.server.clone()))
            .context("no server: pass --server URL, set BERTH_SERVER, or run `berth login URL` first")?;
        let auth = if let Ok(password) = std::env::var("BERTH_PASSWORD") {
            Auth::Basic { username: r.username.clone().unwrap_or_else(|| "admin".into()), password }
        } else if let Ok(token) = std::env::var("BERTH_TOKEN") {
            Auth::Bearer(token)
        } else {
            match saved.as_ref() {
                Some(Login { token: Some(t), .. }) => Auth::Bearer(t.clone()),
                Some(Login { password: Some(p), username, .. }) => Auth::Basic { username: username.clone(), password: p.clone() },
                _ => bail!("no credentials: run `berth login {base}`, or set BERTH_TOKEN (a personal access token) or BERTH_PASSWORD"),
            }
        };
        let ca = r.ca_file.clone().or_else(|| saved.as_ref().and_then(|s| s.ca_file.clone()));
        Ok(Client { http: http_client(ca.as_ref())?, base: base.trim_end_matches('/').to_owned(), auth })
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::Basic { username, password } => req.basic_auth(username, Some(password)),
            Auth::Bearer(t) => req.bearer_auth(t),
        }
    }

    /// Sends one call; returns the text of a successful answer, or fails with the API's error
    /// message.
    async fn call<B: Serialize + ?Sized>(&self, method: &reqwest::Method, path: &str, body: Option<&B>) -> anyhow::Result<String> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut req = self.authorize(self.http.request(method.clone(), &url));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                if let Some(m) = describe_tls(&e, &self.base) {
                    bail!("{m}");
                }
                return Err(anyhow::Error::new(e).context(format!("cannot reach Berth at {}: is it running, and is the URL right?", self.base)));
            }
        };
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let msg = serde_json::from_str::<ErrorBody>(&text)
                .ok()
                .and_then(|e| e.errors.into_iter().next())
                .map(|e| e.message)
                .unwrap_or(text);
            bail!("{method} {path}: HTTP {status}: {msg}");
        }
        Ok(text)
    }
    /// A call whose answer is the API type `T`.
    async fn call_typed<B: Serialize + ?Sized, T: DeserializeOwned>(&self, method: reqwest::Method, path: &str, body: Option<&B>) -> anyhow::Result<T> {
        let text = self.call(&method, path, body).await?;
        serde_json::from_str(&text).map_err(|e| {
            let what = if e.is_data() { "is not the JSON this command expects" } else { "is not JSON" };
            anyhow::Error::new(e).context(format!("{method} {path}: the answer {what}"))
        })
    }
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call_typed(reqwest::Method::GET, path, None::<&EmptyBody>).await
    }
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        self.call_typed(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        self.call_typed(reqwest::Method::PUT, path, Some(body)).await
    }
    /// A DELETE (its answer, 204, has no body).
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.call(&reqwest::Method::DELETE, path, None::<&EmptyBody>).await.map(drop)
    }
}

/// Percent-encodes a path segment (robot names contain `$` and `+`).
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Prints an answer as `--json` shows it: pretty JSON with the members of every object in
/// alphabetical order (through [`Value`], as the CLI always printed it, whatever the order of
/// the type's fields).
fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    let v: Value = serde_json::to_value(v)?;
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(())
}

fn read_input(path: &str) -> anyhow::Result<String> {
    if path == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading standard input")?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
    }
}

/// Parses YAML or JSON (JSON is YAML).
fn parse_document<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> anyhow::Result<T> {
    serde_yaml_ng::from_str(text).with_context(|| format!("{what} is not valid YAML/JSON of the expected shape"))
}

// ---------------------------------------------------------------- login

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Berth's URL (else --server / BERTH_SERVER).
    pub url: Option<String>,
    /// Log in as a person through this identity provider (`GET /auth/providers` lists them):
    /// the device flow prints a URL and a code to confirm in a browser.
    #[arg(long)]
    pub idp: Option<String>,
    /// A local user's password, read from standard input (else BERTH_PASSWORD).
    #[arg(long, conflicts_with = "idp")]
    pub password_stdin: bool,
    /// Log in through a browser on this machine instead of the device flow (RFC 8252: a
    /// listener on 127.0.0.1 receives the end of the login). Used by itself when the identity
    /// provider has no device flow.
    #[arg(long, requires = "idp")]
    pub browser: bool,
}

/// `berth login --idp --browser`: the browser logs in at Berth and the provider, then comes back
/// to a listener on 127.0.0.1 with a one-time code, which only this process can trade (it holds
/// the PKCE verifier).
async fn browser_login(http: &reqwest::Client, base: &str, idp: &str) -> anyhow::Result<LoginCredential> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot listen on 127.0.0.1 for the browser's return")?;
    let redirect = format!("http://127.0.0.1:{}/callback", listener.local_addr()?.port());
    let (verifier, challenge) = berth_identity::federation::login::pkce();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("idp", idp)
        .append_pair("cli_redirect", &redirect)
        .append_pair("cli_challenge", &challenge)
        .finish();
    let url = format!("{base}/auth/oidc/login?{query}");
    eprintln!("To log in, open this page in a browser on this machine:\n\n    {url}\n");
    if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some() || cfg!(target_os = "macos") {
        let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
        let _ = std::process::Command::new(opener).arg(&url).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn();
    }
    eprintln!("Waiting for the browser to come back (up to 10 minutes; Ctrl-C to stop)...");
    let code = tokio::time::timeout(std::time::Duration::from_secs(600), async {
        loop {
            let (mut conn, _) = listener.accept().await?;
            if let Some(code) = loopback_request(&mut conn).await? {
                return anyhow::Ok(code);
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the browser did not come back within 10 minutes; run `berth login {base} --idp {idp} --browser` again"))??;
    let resp = http.post(format!("{base}/auth/cli/exchange")).json(&serde_json::json!({"code": code, "verifier": verifier})).send().await?;
    if !resp.status().is_success() {
        return Err(auth_error(resp, "logging in").await);
    }
    resp.json().await.context("the server's credential is not what this berth expects")
}

/// Answers one request on the loopback listener: the login code of `GET /callback?code=...`,
/// or None (and a 404) for anything else.
async fn loopback_request(conn: &mut tokio::net::TcpStream) -> anyhow::Result<Option<String>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut buf)).await.unwrap_or(Ok(0))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
    let target = line.strip_prefix("GET ").and_then(|r| r.split(' ').next()).unwrap_or_default();
    let code = target.strip_prefix("/callback?").and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()));
    let (status, body) = match &code {
        Some(_) => ("200 OK", "<!doctype html><title>Berth</title><p>Logged in. You can close this window and go back to the terminal.</p>"),
        None => ("404 Not Found", "<!doctype html><title>Berth</title><p>Not a Berth login.</p>"),
    };
    let resp = format!("HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    conn.write_all(resp.as_bytes()).await?;
    let _ = conn.shutdown().await;
    Ok(code)
}

/// Answers of the server's `/auth` endpoints that are not the API's error body.
async fn auth_error(resp: reqwest::Response, what: &str) -> anyhow::Error {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<ErrorBody>(&text).ok().and_then(|e| e.errors.into_iter().next()).map(|e| e.message).unwrap_or(text);
    anyhow::anyhow!("{what}: HTTP {status}: {msg}")
}

/// The device flow of `berth login --idp` (RFC 8628, run by Berth at the provider): prints the
/// URL and code, polls until the person confirms.
async fn device_login(
    http: &reqwest::Client,
    base: &str,
    idp: &str,
    resp: reqwest::Response,
    reach: &dyn Fn(reqwest::Error) -> anyhow::Error,
) -> anyhow::Result<LoginCredential> {
    let started: DeviceLoginStarted = resp.json().await.context("the server's answer to /auth/device is not what this berth expects")?;
    match &started.verification_uri_complete {
        Some(u) => eprintln!("To log in, open this page and confirm the code {}:\n\n    {u}\n", started.user_code),
        None => eprintln!("To log in, open {} and enter the code {}\n", started.verification_uri, started.user_code),
    }
    eprintln!("Waiting for you to confirm (up to {} minutes)...", started.expires_in.div_ceil(60));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(started.expires_in);
    let mut interval = started.interval.max(1);
    loop {
        if std::time::Instant::now() > deadline {
            bail!("the login was not confirmed in time; run `berth login {base} --idp {idp}` again");
        }
        tokio::time::sleep(std::time::Duration::from_secs(interval)).await;
        let resp = http.post(format!("{base}/auth/device/poll")).json(&serde_json::json!({"handle": started.handle})).send().await.map_err(reach)?;
        match resp.status() {
            reqwest::StatusCode::ACCEPTED => {
                let v: Value = resp.json().await.unwrap_or_default();
                interval = v["interval"].as_u64().unwrap_or(interval).max(1);
            }
            s if s.is_success() => return resp.json().await.context("the server's credential is not what this berth expects"),
            _ => return Err(auth_error(resp, "logging in").await),
        }
    }
}

/// `berth login`: a person through an identity provider (device flow), or a local user with a
/// password; either way the server gives a Berth token, which is saved (never the password).
pub async fn login(r: &Remote, a: &LoginArgs) -> anyhow::Result<()> {
    let server = a.url.clone().or_else(|| r.server.clone()).context("give Berth's URL: berth login https://registry.example.com")?;
    let base = berth_credential_helper::logins::server_url(&server);
    let http = http_client(r.ca_file.as_ref())?;
    let reach = |e: reqwest::Error| -> anyhow::Error {
        match describe_tls(&e, &base) {
            Some(m) => anyhow::anyhow!("{m}"),
            None => anyhow::Error::new(e).context(format!("cannot reach Berth at {base}: is it running, and is the URL right?")),
        }
    };
    let credential: LoginCredential = match &a.idp {
        Some(idp) if a.browser => browser_login(&http, &base, idp).await?,
        Some(idp) => {
            let resp = http.post(format!("{base}/auth/device")).json(&serde_json::json!({"idp": idp})).send().await.map_err(reach)?;
            if !resp.status().is_success() {
                let e = auth_error(resp, "starting the login").await;
                if !e.to_string().contains("does not offer the device authorization grant") {
                    return Err(e);
                }
                eprintln!("The identity provider has no device flow: logging in through a browser instead.");
                browser_login(&http, &base, idp).await?
            } else {
                device_login(&http, &base, idp, resp, &reach).await?
            }
        }
        None => {
            let username = r.username.clone().unwrap_or_else(|| "admin".into());
            let password = if a.password_stdin {
                let mut s = String::new();
                std::io::stdin().read_line(&mut s)?;
                s.trim_end_matches(['\r', '\n']).to_owned()
            } else {
                std::env::var("BERTH_PASSWORD").context("pass --password-stdin or set BERTH_PASSWORD (or log in as a person with --idp NAME)")?
            };
            let resp = http.post(format!("{base}/auth/login")).basic_auth(&username, Some(&password)).send().await.map_err(reach)?;
            if !resp.status().is_success() {
                return Err(auth_error(resp, "login failed").await);
            }
            resp.json().await.context("the server's credential is not what this berth expects")?
        }
    };
    let mut logins = Logins::load()?;
    let old = logins.find(&base).cloned();
    logins.insert(
        &base,
        Login { server: base.clone(), username: credential.username.clone(), token: Some(credential.token), password: None, ca_file: r.ca_file.clone().or(old.and_then(|o| o.ca_file)) },
    );
    logins.save()?;
    println!("logged in to {base} as {} until {}; saved in {}", credential.username, credential.expires_at, logins.path().display());
    println!("docker, podman and skopeo can use it through the credential helper: {{\"credHelpers\": {{\"{}\": \"berth\"}}}} in ~/.docker/config.json", berth_credential_helper::logins::registry_host(&base));
    Ok(())
}

/// `berth logout`: revokes the saved login's token at the server and forgets it.
pub async fn logout(r: &Remote, url: Option<&str>) -> anyhow::Result<()> {
    let mut logins = Logins::load()?;
    let login = match url.or(r.server.as_deref()) {
        Some(u) => logins.find(u).cloned(),
        None => logins.current().cloned(),
    }
    .context("not logged in (no saved login for that server)")?;
    if let Some(t) = &login.token {
        if let Some(id) = t.strip_prefix("berth_cli_").and_then(|rest| rest.get(..16)) {
            let c = Client { http: http_client(login.ca_file.as_ref())?, base: login.server.clone(), auth: Auth::Bearer(t.clone()) };
            if let Err(e) = c.delete(&format!("/tokens/{id}")).await {
                eprintln!("warning: the server did not revoke the login ({e}); it expires by itself");
            }
        }
    }
    logins.remove(&login.server);
    logins.save()?;
    let _ = berth_credential_helper::cache::Cache::for_server(&login.server).and_then(|c| c.remove());
    println!("logged out of {}", login.server);
    Ok(())
}

// ---------------------------------------------------------------- personal access tokens, whoami

#[derive(Subcommand, Debug)]
pub enum UserTokenCommand {
    /// Create a personal access token: a password for docker, podman, skopeo, helm and oras
    /// (any user name) and a Bearer token for the admin API. Printed once.
    ///
    ///   berth token create laptop --expires 30d
    ///   berth token create ci-pull --project team-demo --action pull
    #[command(verbatim_doc_comment)]
    Create {
        name: String,
        /// Lifetime like 30d, 12h or 2w (default and maximum: the server's tokens.max_lifetime).
        #[arg(long)]
        expires: Option<String>,
        /// Only this project (repeatable; default: everything you may do).
        #[arg(long = "project")]
        projects: Vec<String>,
        /// Only these actions: pull, push, delete (repeatable; default: all).
        #[arg(long = "action")]
        actions: Vec<String>,
    },
    /// List your tokens (personal, logins, browser sessions; never their secrets).
    List,
    /// Revoke one of your tokens by id: it stops working at once on every replica.
    Revoke { id: String },
}

pub async fn user_token(r: &Remote, cmd: UserTokenCommand) -> anyhow::Result<()> {
    let c = Client::new(r)?;
    match cmd {
        UserTokenCommand::Create { name, expires, projects, actions } => {
            let req = TokenCreate {
                name,
                expires,
                projects: if projects.is_empty() { None } else { Some(projects) },
                actions: if actions.is_empty() { None } else { Some(actions) },
            };
            let created: TokenCreated = c.post("/tokens", &req).await?;
            if r.json {
                return print_json(&created);
            }
            println!("{}", created.secret);
            eprintln!(
                "token {:?} ({}) created{}; it is shown only now. Use it as a password:\n  echo \"$TOKEN\" | docker login -u {} --password-stdin {}",
                created.token.name,
                created.token.id,
                created.token.expires_at.as_deref().map(|e| format!(", valid until {e}")).unwrap_or_default(),
                created.token.user,
                berth_credential_helper::logins::registry_host(&c.base),
            );
        }
        UserTokenCommand::List => {
            let list: Vec<TokenView> = c.get("/tokens").await?;
            if r.json {
                return print_json(&list);
            }
            for t in list {
                let scope = match (&t.projects, &t.actions) {
                    (None, None) => String::new(),
                    (p, a) => format!("\tprojects={} actions={}", p.as_ref().map(|v| v.join(",")).unwrap_or("*".into()), a.as_ref().map(|v| v.join(",")).unwrap_or("*".into())),
                };
                println!(
                    "{}\t{}\t{}\texpires {}\tlast used {}{scope}",
                    t.id,
                    t.kind,
                    t.name,
                    t.expires_at.as_deref().unwrap_or("never"),
                    t.last_used_at.as_deref().unwrap_or("never")
                );
            }
        }
        UserTokenCommand::Revoke { id } => {
            c.delete(&format!("/tokens/{}", seg(&id))).await?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}

/// `berth whoami`.
pub async fn whoami(r: &Remote) -> anyhow::Result<()> {
    let c = Client::new(r)?;
    let who: WhoAmI = c.get("/whoami").await?;
    if r.json {
        return print_json(&who);
    }
    let via = match (&who.provider, &who.subject) {
        (Some(p), Some(s)) => format!(" ({p}, subject {s})"),
        _ => String::new(),
    };
    println!("{}{via}{}", who.name, if who.admin { ", administrator" } else { "" });
    if !who.groups.is_empty() {
        println!("groups: {}", who.groups.join(", "));
    }
    for role in &who.roles {
        println!("{} in {} (as {})", role.role, role.project, role.via.join(", "));
    }
    if who.roles.is_empty() && !who.admin {
        println!("no project roles: public projects only");
    }
    if let Some(t) = &who.token {
        println!("using {} token {:?} ({}), expires {}", t.kind, t.name, t.id, t.expires_at.as_deref().unwrap_or("never"));
    }
    Ok(())
}

// ---------------------------------------------------------------- projects

#[derive(Subcommand, Debug)]
pub enum ProjectCommand {
    /// List projects.
    List,
    /// Create a project (the first path component of its repositories).
    Create {
        name: String,
        /// Anyone, even without credentials, may pull its repositories.
        #[arg(long)]
        public: bool,
    },
    /// Show one project.
    Show { name: String },
    /// Make a project public or private.
    Set {
        name: String,
        #[arg(long, conflicts_with = "private")]
        public: bool,
        #[arg(long)]
        private: bool,
    },
    /// Delete a project (refused while it has robot accounts; its repositories stay).
    Delete { name: String },
    /// A project's members: local users and groups with a role.
    #[command(subcommand)]
    Member(MemberCommand),
}

/// Roles: limited-guest (pull), guest (pull, sees members), developer (+ push), maintainer
/// (+ delete), project-admin (+ members, robots, the project).
#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// List a project's members.
    List { project: String },
    /// Add a member, or change its role:
    ///
    ///   berth project member add team-demo --user alice --role developer
    #[command(verbatim_doc_comment)]
    Add {
        project: String,
        /// A local user.
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        user: Option<String>,
        /// A group.
        #[arg(long)]
        group: Option<String>,
        /// limited-guest, guest, developer, maintainer or project-admin.
        #[arg(long)]
        role: String,
    },
    /// Remove a member.
    Remove {
        project: String,
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        user: Option<String>,
        #[arg(long)]
        group: Option<String>,
    },
}

pub async fn project(r: &Remote, cmd: ProjectCommand) -> anyhow::Result<()> {
    let c = Client::new(r)?;
    match cmd {
        ProjectCommand::List => {
            let list: Vec<ProjectView> = c.get("/projects").await?;
            if !r.json {
                for p in &list {
                    println!("{}\t{}", p.name, if p.public { "public" } else { "private" });
                }
                return Ok(());
            }
            print_json(&list)
        }
        ProjectCommand::Create { name, public } => {
            let v: ProjectView = c.post("/projects", &ProjectSpec { name, public }).await?;
            print_json(&v)
        }
        ProjectCommand::Show { name } => {
            let v: ProjectView = c.get(&format!("/projects/{}", seg(&name))).await?;
            print_json(&v)
        }
        ProjectCommand::Set { name, public, private } => {
            if !public && !private {
                bail!("say --public or --private");
            }
            let v: ProjectView = c.put(&format!("/projects/{}", seg(&name)), &ProjectSpec { name: name.clone(), public }).await?;
            print_json(&v)
        }
        ProjectCommand::Delete { name } => {
            c.delete(&format!("/projects/{}", seg(&name))).await?;
            println!("project {name} deleted");
            Ok(())
        }
        ProjectCommand::Member(MemberCommand::List { project }) => {
            let list: Vec<MemberView> = c.get(&format!("/projects/{}/members", seg(&project))).await?;
            if !r.json {
                for m in &list {
                    println!("{}\t{}\t{}", m.kind, m.name, m.role);
                }
                return Ok(());
            }
            print_json(&list)
        }
        ProjectCommand::Member(MemberCommand::Add { project, user, group, role }) => {
            let v: MemberView = c.post(&format!("/projects/{}/members", seg(&project)), &MemberSpec { user, group, role }).await?;
            if !r.json {
                println!("{} {} is {} in project {}", v.kind, v.name, v.role, v.project);
                return Ok(());
            }
            print_json(&v)
        }
        ProjectCommand::Member(MemberCommand::Remove { project, user, group }) => {
            let (kind, name) = match (user, group) {
                (Some(u), None) => ("user", u),
                (None, Some(g)) => ("group", g),
                _ => bail!("say --user or --group"),
            };
            c.delete(&format!("/projects/{}/members/{kind}/{}", seg(&project), seg(&name))).await?;
            println!("{kind} {name} removed from project {project}");
            Ok(())
        }
    }
}

// ---------------------------------------------------------------- robots

#[derive(Subcommand, Debug)]
pub enum RobotCommand {
    /// List robot accounts.
    List {
        #[arg(long)]
        project: Option<String>,
    },
    /// Create a robot account.
    ///
    /// A federated robot (with --idp) logs in with OIDC tokens whose claims satisfy every rule:
    ///
    ///   berth robot create ci-myrepo --project library --idp github \
    ///       --rule repository=myorg/myrepo --rule 'ref~refs/heads/*' --allow 'library/*:pull,push'
    ///
    /// Without --idp the robot gets a static secret, printed once.
    #[command(verbatim_doc_comment)]
    Create {
        /// Short name; the full name becomes robot$<project>+<name> (or robot$<name>).
        name: String,
        #[arg(long)]
        project: Option<String>,
        /// The identity provider whose tokens it accepts (makes it a federated robot).
        #[arg(long = "idp", value_name = "PROVIDER")]
        identity_provider: Option<String>,
        /// A claim rule: CLAIM=VALUE (equals), CLAIM~GLOB (glob), CLAIM:in=A,B (oneOf). Repeatable.
        #[arg(long = "rule", value_name = "RULE")]
        rules: Vec<String>,
        /// A CEL rule over `claims`, like "claims.ref.startsWith('refs/heads/')". Repeatable.
        #[arg(long = "rule-expression", value_name = "CEL")]
        expressions: Vec<String>,
        /// A permission: REPOSITORY-GLOB:ACTIONS, like 'library/*:pull,push'. Repeatable.
        #[arg(long = "allow", value_name = "GLOB:ACTIONS")]
        allow: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        /// RFC 3339 expiry time.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Change a robot: the options given replace those parts (all --rule/--rule-expression
    /// together replace the rules, all --allow the permissions); the rest is kept.
    ///
    ///   berth robot update ci-myrepo --project library --rule repository=myorg/other --allow 'library/*:pull'
    #[command(verbatim_doc_comment)]
    Update {
        /// Short name (with --project) or full name, like robot$library+ci-myrepo.
        name: String,
        #[arg(long)]
        project: Option<String>,
        /// Replace the rules with these (CLAIM=VALUE, CLAIM~GLOB, CLAIM:in=A,B). Repeatable.
        #[arg(long = "rule", value_name = "RULE")]
        rules: Vec<String>,
        /// Replace the rules with these CEL rules (together with --rule). Repeatable.
        #[arg(long = "rule-expression", value_name = "CEL")]
        expressions: Vec<String>,
        /// Replace the permissions with these (REPOSITORY-GLOB:ACTIONS). Repeatable.
        #[arg(long = "allow", value_name = "GLOB:ACTIONS")]
        allow: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        /// RFC 3339 expiry time; "never" removes it.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Show one robot (by full name, like robot$library+ci).
    Show { name: String },
    /// Disable or enable a robot.
    Disable { name: String },
    Enable { name: String },
    /// Replace a static-secret robot's secret (printed once).
    Secret { name: String },
    /// Delete a robot.
    Delete { name: String },
}

/// Parses `CLAIM=VALUE`, `CLAIM~GLOB` or `CLAIM:in=A,B`.
pub fn parse_rule(s: &str) -> anyhow::Result<RuleSpec> {
    RuleSpec::parse_short(s).map_err(anyhow::Error::msg)
}

/// A CEL rule of `--rule-expression`.
fn expression_rule(e: &str) -> RuleSpec {
    RuleSpec { expression: Some(e.to_owned()), ..RuleSpec::default() }
}

/// The rules of `--rule` and `--rule-expression`, in that order.
fn parse_rules(rules: &[String], expressions: &[String]) -> anyhow::Result<Vec<RuleSpec>> {
    let mut list = rules.iter().map(|s| parse_rule(s)).collect::<anyhow::Result<Vec<_>>>()?;
    list.extend(expressions.iter().map(|e| expression_rule(e)));
    Ok(list)
}

/// Parses `GLOB:ACTIONS`.
pub fn parse_allow(s: &str) -> anyhow::Result<PermissionSpec> {
    PermissionSpec::parse_short(s).map_err(anyhow::Error::msg)
}

fn parse_allows(allow: &[String]) -> anyhow::Result<Vec<PermissionSpec>> {
    allow.iter().map(|s| parse_allow(s)).collect()
}

pub async fn robot(r: &Remote, cmd: RobotCommand) -> anyhow::Result<()> {
    let c = Client::new(r)?;
    match cmd {
        RobotCommand::List { project } => {
            let path = match project {
                Some(p) => format!("/robots?project={}", seg(&p)),
                None => "/robots".into(),
            };
            let list: Vec<RobotView> = c.get(&path).await?;
            if !r.json {
                for x in &list {
                    println!(
                        "{}\t{}\t{}{}",
                        x.name,
                        x.kind,
                        x.identity_provider.as_deref().unwrap_or("-"),
                        if x.disabled { "\tdisabled" } else { "" }
                    );
                }
                return Ok(());
            }
            print_json(&list)
        }
        RobotCommand::Create { name, project, identity_provider, rules, expressions, allow, description, expires_at } => {
            let rules = parse_rules(&rules, &expressions)?;
            let permissions = parse_allows(&allow)?;
            let spec = RobotSpec { name, project, description, disabled: false, expires_at, identity_provider, rules, permissions };
            let created: RobotCreated = c.post("/robots", &spec).await?;
            if let (false, Some(secret)) = (r.json, created.secret.as_deref()) {
                println!("robot {} created. Its secret (shown only now):\n\n    {secret}\n", created.robot.name);
                return Ok(());
            }
            print_json(&created)
        }
        RobotCommand::Update { name, project, rules, expressions, allow, description, expires_at } => {
            let full = full_robot_name(&name, project.as_deref());
            let mut spec = robot_spec(&c, &full).await?;
            if !rules.is_empty() || !expressions.is_empty() {
                spec.rules = parse_rules(&rules, &expressions)?;
            }
            if !allow.is_empty() {
                spec.permissions = parse_allows(&allow)?;
            }
            if let Some(d) = description {
                spec.description = Some(d);
            }
            match expires_at {
                Some(t) if t == "never" => spec.expires_at = None,
                Some(t) => spec.expires_at = Some(t),
                None => {}
            }
            let updated: RobotCreated = c.put(&format!("/robots/{}", seg(&full)), &spec).await?;
            if !r.json {
                println!("robot {} updated", updated.robot.name);
                return Ok(());
            }
            print_json(&updated)
        }
        RobotCommand::Show { name } => {
            let v: RobotView = c.get(&format!("/robots/{}", seg(&name))).await?;
            print_json(&v)
        }
        RobotCommand::Disable { name } => print_json(&set_disabled(&c, &name, true).await?),
        RobotCommand::Enable { name } => print_json(&set_disabled(&c, &name, false).await?),
        RobotCommand::Secret { name } => {
            let v: RobotCreated = c.post(&format!("/robots/{}/secret", seg(&name)), &EmptyBody {}).await?;
            if !r.json {
                println!("new secret of {name} (shown only now):\n\n    {}\n", v.secret.as_deref().unwrap_or(""));
                return Ok(());
            }
            print_json(&v)
        }
        RobotCommand::Delete { name } => {
            c.delete(&format!("/robots/{}", seg(&name))).await?;
            println!("robot {name} deleted");
            Ok(())
        }
    }
}

/// `robot$<project>+<name>`, `robot$<name>`, or the full name as given.
fn full_robot_name(name: &str, project: Option<&str>) -> String {
    if name.starts_with("robot$") {
        return name.to_owned();
    }
    match project {
        Some(p) => format!("robot${p}+{name}"),
        None => format!("robot${name}"),
    }
}

/// The stored robot `name` as a spec to change and put back (the API has no partial update).
async fn robot_spec(c: &Client, name: &str) -> anyhow::Result<RobotSpec> {
    let v: RobotView = c.get(&format!("/robots/{}", seg(name))).await?;
    v.spec().with_context(|| format!("robot {name}: the server sent rules or permissions this CLI cannot read"))
}

async fn set_disabled(c: &Client, name: &str, disabled: bool) -> anyhow::Result<RobotCreated> {
    let spec = RobotSpec { disabled, ..robot_spec(c, name).await? };
    c.put(&format!("/robots/{}", seg(name)), &spec).await
}

// ---------------------------------------------------------------- identity providers

#[derive(Subcommand, Debug)]
pub enum IdpCommand {
    /// List identity providers.
    List,
    /// Add an identity provider, from a preset or generic. Workloads (CI jobs, pods) need
    /// --audience; people logging in need --client-id (the provider's login section).
    ///
    ///   berth idp add github --name github --audience registry.example.com
    ///   berth idp add gitlab --name corp-gitlab --instance https://gitlab.corp.example --audience registry.example.com
    ///   kubectl get --raw /openid/v1/jwks | berth idp add kubernetes --name my-cluster \
    ///       --issuer https://kubernetes.default.svc.cluster.local --audience registry.example.com --jwks-file -
    ///   berth idp add keycloak --name corp --issuer https://kc.example.com/realms/acme \
    ///       --client-id berth --client-secret-file secret.txt --admin-group registry-admins
    ///   berth idp add authentik --name corp --instance https://auth.example.com --slug berth \
    ///       --client-id berth --client-secret-file secret.txt --offline-access
    #[command(verbatim_doc_comment)]
    Add(Box<IdpAdd>),
    /// Replace an identity provider's settings (same options as `add`; options left out get
    /// their defaults). Rotating static keys:
    ///
    ///   kubectl get --raw /openid/v1/jwks | berth idp update kubernetes --name my-cluster \
    ///       --issuer https://kubernetes.default.svc.cluster.local --audience registry.example.com --jwks-file -
    #[command(verbatim_doc_comment)]
    Update(Box<IdpAdd>),
    /// Show one identity provider.
    Show { name: String },
    /// Fetch discovery and keys now and print what was found.
    Test { name: String },
    /// Delete an identity provider (refused while robots use it).
    Delete { name: String },
}

/// `berth idp add` arguments.
#[derive(Args, Debug)]
pub struct IdpAdd {
    /// github, gitlab, forgejo, kubernetes (workloads); keycloak, authentik, google (people);
    /// or generic.
    preset: String,
    #[arg(long)]
    name: String,
    /// Accepted audience of workload tokens (the `aud` they are requested for). Repeatable; at
    /// least one unless the provider is only for people (--client-id).
    #[arg(long = "audience", required_unless_present = "client_id")]
    audiences: Vec<String>,
    #[arg(long)]
    issuer: Option<String>,
    /// gitlab/forgejo/keycloak/authentik: the instance URL.
    #[arg(long)]
    instance: Option<String>,
    /// keycloak: the realm (issuer <instance>/realms/<realm>).
    #[arg(long)]
    realm: Option<String>,
    /// authentik: the application's slug (issuer <instance>/application/o/<slug>/).
    #[arg(long)]
    slug: Option<String>,
    #[command(flatten)]
    login: IdpLogin,
    /// github: the GitHub Enterprise slug.
    #[arg(long)]
    enterprise_slug: Option<String>,
    /// Static keys (JWKS JSON) from a file, or - for standard input. No network.
    #[arg(long, value_name = "FILE")]
    jwks_file: Option<String>,
    #[arg(long)]
    jwks_uri: Option<String>,
    #[arg(long)]
    discovery_url: Option<String>,
    /// PEM CA certificate for the issuer's HTTPS.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Allowed algorithms (default: what discovery advertises). Repeatable.
    #[arg(long = "algorithm")]
    algorithms: Vec<String>,
    #[arg(long)]
    max_token_lifetime: Option<String>,
    #[arg(long)]
    clock_skew: Option<String>,
}

/// Human login through the provider (its `login` section; only with --client-id).
#[derive(Args, Debug, Default)]
pub struct IdpLogin {
    /// Berth's client id at the provider: people can log in through it.
    #[arg(long)]
    client_id: Option<String>,
    /// The client secret, from a file (- for standard input). Left out on update: the stored
    /// secret stays.
    #[arg(long, value_name = "FILE", requires = "client_id")]
    client_secret_file: Option<String>,
    /// Scopes to ask for (default: openid profile email). Repeatable.
    #[arg(long = "scope", requires = "client_id")]
    scopes: Vec<String>,
    /// Ask for offline_access: Berth re-checks people's groups in the background with the
    /// refresh token.
    #[arg(long, requires = "client_id")]
    offline_access: bool,
    /// The claim that becomes the user name (default preferred_username).
    #[arg(long, requires = "client_id")]
    username_claim: Option<String>,
    /// The claim with the groups (default groups).
    #[arg(long, requires = "client_id")]
    groups_claim: Option<String>,
    /// as-is, strip-slash (Keycloak's /team → team; the keycloak preset's default) or last-segment.
    #[arg(long, requires = "client_id")]
    groups_format: Option<String>,
    /// Members of this group are Berth administrators.
    #[arg(long, requires = "client_id")]
    admin_group: Option<String>,
    /// Only people an administrator created with `berth user link` may log in.
    #[arg(long, requires = "client_id")]
    no_auto_onboard: bool,
    /// Only people with a verified email in this domain may log in. Repeatable.
    #[arg(long = "allowed-email-domain", requires = "client_id")]
    allowed_email_domains: Vec<String>,
    /// How often people are re-checked at the provider (default 1h).
    #[arg(long, requires = "client_id")]
    recheck_interval: Option<String>,
    /// The login button's label (default the provider's name).
    #[arg(long, requires = "client_id")]
    display_name: Option<String>,
}

impl IdpLogin {
    fn spec(self) -> anyhow::Result<Option<LoginSpec>> {
        let Some(client_id) = self.client_id else { return Ok(None) };
        let client_secret = match &self.client_secret_file {
            Some(f) => Some(read_input(f)?.trim().to_owned()).filter(|s| !s.is_empty()),
            None => None,
        };
        let groups_format = match self.groups_format.as_deref() {
            None => None,
            Some(f) => Some(serde_json::from_value(Value::String(f.to_owned())).map_err(|_| anyhow::anyhow!("unknown groups format {f:?}: use as-is, strip-slash or last-segment"))?),
        };
        Ok(Some(LoginSpec {
            client_id,
            client_secret,
            client_secret_set: None,
            scopes: if self.scopes.is_empty() { None } else { Some(self.scopes) },
            offline_access: self.offline_access,
            username_claim: self.username_claim,
            groups_claim: self.groups_claim,
            groups_format,
            admin_group: self.admin_group,
            auto_onboard: if self.no_auto_onboard { Some(false) } else { None },
            allowed_email_domains: self.allowed_email_domains,
            recheck_interval: self.recheck_interval,
            display_name: self.display_name,
        }))
    }
}

/// The provider document of `berth idp add`/`update`.
fn idp_spec(add: IdpAdd) -> anyhow::Result<ProviderSpec> {
    let IdpAdd {
        preset,
        name,
        audiences,
        issuer,
        instance,
        realm,
        slug,
        login,
        enterprise_slug,
        jwks_file,
        jwks_uri,
        discovery_url,
        ca_cert,
        algorithms,
        max_token_lifetime,
        clock_skew,
    } = add;
    let preset = match preset.as_str() {
        "generic" => None,
        other => Some(other.parse::<Preset>().map_err(|_| {
            anyhow::anyhow!("unknown preset {other:?}: use github, gitlab, forgejo, kubernetes, keycloak, authentik, google or generic")
        })?),
    };
    let jwks = match jwks_file {
        // A file holding `null` gives no keys, as if --jwks-file were not given.
        Some(f) => Some(serde_json::from_str::<Value>(&read_input(&f)?).context("the JWKS is not JSON")?).filter(|v| !v.is_null()),
        None => None,
    };
    let ca = match ca_cert {
        Some(p) => Some(std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    Ok(ProviderSpec {
        name,
        preset,
        issuer,
        enterprise_slug,
        instance,
        audiences,
        discovery_url,
        jwks_uri,
        jwks,
        certificate_authority: ca,
        algorithms: if algorithms.is_empty() { None } else { Some(algorithms) },
        max_token_lifetime,
        clock_skew,
        audit_claims: None,
        description: None,
        realm,
        slug,
        login: login.spec()?,
    })
}

/// A list as the text output shows it: compact JSON, like `["a","b"]`.
fn json_list(v: &[String]) -> anyhow::Result<String> {
    Ok(serde_json::to_string(v)?)
}

pub async fn idp(r: &Remote, cmd: IdpCommand) -> anyhow::Result<()> {
    let c = Client::new(r)?;
    match cmd {
        IdpCommand::List => {
            let list: Vec<IdentityProviderView> = c.get("/identity-providers").await?;
            if !r.json {
                for p in &list {
                    println!("{}\t{}\t{}", p.name, p.issuer, json_list(&p.spec.audiences)?);
                }
                return Ok(());
            }
            print_json(&list)
        }
        IdpCommand::Add(add) => {
            let v: IdentityProviderView = c.post("/identity-providers", &idp_spec(*add)?).await?;
            print_json(&v)
        }
        IdpCommand::Update(add) => {
            let name = add.name.clone();
            let v: IdentityProviderView = c.put(&format!("/identity-providers/{}", seg(&name)), &idp_spec(*add)?).await?;
            if !r.json {
                println!("identity provider {name} updated (issuer {})", v.issuer);
                return Ok(());
            }
            print_json(&v)
        }
        IdpCommand::Show { name } => {
            let v: IdentityProviderView = c.get(&format!("/identity-providers/{}", seg(&name))).await?;
            print_json(&v)
        }
        IdpCommand::Test { name } => {
            let v: ProviderTestAnswer = c.post(&format!("/identity-providers/{}/test", seg(&name)), &EmptyBody {}).await?;
            if !r.json {
                if let (true, Some(t)) = (v.ok, &v.result) {
                    println!("identity provider {name}: OK");
                    println!("  issuer:     {}", t.issuer);
                    println!("  keys from:  {}", t.source);
                    for k in &t.keys {
                        println!("  key:        {k}");
                    }
                    for k in &t.skipped {
                        println!("  skipped:    {k}");
                    }
                    println!("  algorithms: {}", json_list(&t.algorithms)?);
                    println!("  audiences:  {}", json_list(&t.audiences)?);
                    return Ok(());
                }
                bail!("identity provider {name}: {}", v.error.as_deref().unwrap_or("failed"));
            }
            print_json(&v)
        }
        IdpCommand::Delete { name } => {
            c.delete(&format!("/identity-providers/{}", seg(&name))).await?;
            println!("identity provider {name} deleted");
            Ok(())
        }
    }
}

// ---------------------------------------------------------------- apply, explain, audit

pub async fn apply(r: &Remote, file: &str) -> anyhow::Result<()> {
    let doc: ApplyDocument = parse_document(&read_input(file)?, file)?;
    let c = Client::new(r)?;
    let report: ApplyReport = c.post("/apply", &doc).await?;
    if r.json {
        return print_json(&report);
    }
    for ch in &report.changes {
        println!("{:<9} {} {}", ch.action, ch.kind, ch.name);
    }
    for (robot, secret) in &report.secrets {
        println!("\nsecret of {robot} (shown only now):\n    {secret}");
    }
    Ok(())
}

pub async fn explain(r: &Remote, token: &str) -> anyhow::Result<()> {
    let token = if token == "-" { read_input("-")?.trim().to_owned() } else { token.to_owned() };
    let c = Client::new(r)?;
    let v: ExplanationView = c.post("/token/explain", &ExplainRequest { token }).await?;
    if r.json {
        return print_json(&v);
    }
    if let Some(h) = &v.header {
        println!("header:   {h}");
    }
    if let Some(cl) = &v.claims {
        println!("claims:   {}", serde_json::to_string_pretty(cl)?.replace('\n', "\n          "));
    }
    println!("provider: {}", v.provider.as_deref().unwrap_or("(none)"));
    println!("\nsteps:");
    for s in &v.steps {
        println!("  [{}] {}: {}", if s.ok { "ok" } else { "FAIL" }, s.name, s.detail);
    }
    if !v.robots.is_empty() {
        println!("\nrobots of this provider:");
        for rb in &v.robots {
            println!("  {} {}{}", if rb.matched { "MATCH" } else { "no   " }, rb.robot, rb.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default());
            for rule in &rb.rules {
                println!("      [{}] {}: {}", if rule.matched { "ok" } else { "FAIL" }, rule.rule, rule.reason);
            }
        }
    }
    println!("\nresult: {}{}", v.result, v.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default());
    if v.result != "accepted" {
        std::process::exit(1);
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only events since then: a duration back from now ("1h", "2d") or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only events before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long)]
    pub robot: Option<String>,
    #[arg(long)]
    pub repository: Option<String>,
    #[arg(long)]
    pub provider: Option<String>,
    /// ok, denied or error.
    #[arg(long)]
    pub result: Option<String>,
    /// token, login, pull, push or delete.
    #[arg(long)]
    pub action: Option<String>,
    /// At most this many events (newest first; at most 1000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

pub async fn audit(r: &Remote, a: &AuditArgs) -> anyhow::Result<()> {
    let since = match &a.since {
        Some(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => Some(s.clone()),
        Some(s) => {
            let d = humantime::parse_duration(s).with_context(|| format!("--since {s:?}: use a duration like 1h or an RFC 3339 time"))?;
            let t = chrono::Utc::now() - chrono::Duration::from_std(d)?;
            Some(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        }
        None => None,
    };
    let mut q = vec![format!("limit={}", a.limit)];
    for (k, v) in [("since", &since), ("until", &a.until), ("robot", &a.robot), ("repository", &a.repository), ("provider", &a.provider), ("result", &a.result), ("action", &a.action)] {
        if let Some(v) = v {
            q.push(format!("{k}={}", seg(v)));
        }
    }
    let c = Client::new(r)?;
    let events: Vec<AuditEventView> = c.get(&format!("/audit?{}", q.join("&"))).await?;
    if r.json {
        return print_json(&events);
    }
    for e in events {
        println!(
            "{} {:<6} {:<6} {} {}{}{}{}",
            e.time,
            e.action,
            e.result,
            e.principal,
            e.repository.as_deref().map(|r| format!("{r}{}", e.reference.as_deref().map(|x| format!(":{x}")).unwrap_or_default())).unwrap_or_default(),
            e.provider.as_deref().map(|p| format!(" idp={p}")).unwrap_or_default(),
            e.claims.as_ref().map(|c| format!(" {c}")).unwrap_or_default(),
            e.message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Serializes a request body as it goes on the wire.
    fn wire<T: Serialize>(v: &T) -> Value {
        serde_json::to_value(v).unwrap()
    }

    #[test]
    fn rule_flags_become_the_rules_the_server_accepts() {
        let table = [
            ("repository=myorg/myrepo", json!({"claim": "repository", "equals": "myorg/myrepo"})),
            ("ref~refs/heads/*", json!({"claim": "ref", "glob": "refs/heads/*"})),
            ("ref:in=refs/heads/main,refs/tags/v1", json!({"claim": "ref", "oneOf": ["refs/heads/main", "refs/tags/v1"]})),
            ("env:in=prod", json!({"claim": "env", "oneOf": ["prod"]})),
            // The first of = and ~ decides; the value keeps the rest.
            ("ref=a~b", json!({"claim": "ref", "equals": "a~b"})),
            ("ref~a=b", json!({"claim": "ref", "glob": "a=b"})),
            ("job_workflow_ref=org/repo/.github/workflows/x.yml@refs/heads/main", json!({"claim": "job_workflow_ref", "equals": "org/repo/.github/workflows/x.yml@refs/heads/main"})),
            ("kubernetes.io.namespace=ci", json!({"claim": "kubernetes.io.namespace", "equals": "ci"})),
            ("sub=", json!({"claim": "sub", "equals": ""})),
        ];
        for (flag, expected) in table {
            let rule = parse_rule(flag).unwrap();
            assert_eq!(wire(&rule), expected, "--rule {flag}");
            // What the server reads back is the same rule, and it compiles.
            assert_eq!(serde_json::from_value::<RuleSpec>(expected).unwrap(), rule, "--rule {flag}");
            berth_claims::Rule::compile(&rule).unwrap_or_else(|e| panic!("--rule {flag}: {e}"));
        }
        for bad in ["repository", "", "ref:in"] {
            let e = parse_rule(bad).unwrap_err().to_string();
            assert_eq!(e, format!("rule {bad:?}: use CLAIM=VALUE, CLAIM~GLOB or CLAIM:in=A,B"));
        }
    }

    #[test]
    fn expression_flags_and_rule_order() {
        let rules = parse_rules(&["repository=o/r".into()], &["claims.ref.startsWith('refs/heads/')".into()]).unwrap();
        assert_eq!(
            wire(&rules),
            json!([{"claim": "repository", "equals": "o/r"}, {"expression": "claims.ref.startsWith('refs/heads/')"}])
        );
        assert!(parse_rules(&["ok=1".into(), "bad".into()], &[]).is_err());
    }

    #[test]
    fn allow_flags_become_the_permissions_the_server_accepts() {
        let table = [
            ("library/*:pull,push", json!({"repositories": "library/*", "actions": ["pull", "push"]})),
            ("*:pull", json!({"repositories": "*", "actions": ["pull"]})),
            ("app:*", json!({"repositories": "app", "actions": ["*"]})),
            // The last colon separates the actions.
            ("weird:name:delete", json!({"repositories": "weird:name", "actions": ["delete"]})),
        ];
        for (flag, expected) in table {
            let p = parse_allow(flag).unwrap();
            assert_eq!(wire(&p), expected, "--allow {flag}");
            assert_eq!(serde_json::from_value::<PermissionSpec>(expected).unwrap(), p, "--allow {flag}");
        }
        berth_access::robot_permissions(Some("library"), &[parse_allow("library/*:pull,push").unwrap()]).unwrap();
        let e = parse_allow("library/*").unwrap_err().to_string();
        assert_eq!(e, "permission \"library/*\": use REPOSITORY-GLOB:ACTIONS, like 'library/*:pull,push'");
    }

    #[test]
    fn robot_create_body() {
        let spec = RobotSpec {
            name: "ci".into(),
            project: Some("library".into()),
            description: None,
            disabled: false,
            expires_at: None,
            identity_provider: Some("github".into()),
            rules: parse_rules(&["repository=o/r".into()], &[]).unwrap(),
            permissions: parse_allows(&["library/*:pull".into()]).unwrap(),
        };
        assert_eq!(
            wire(&spec),
            json!({
                "name": "ci", "project": "library", "identityProvider": "github",
                "rules": [{"claim": "repository", "equals": "o/r"}],
                "permissions": [{"repositories": "library/*", "actions": ["pull"]}],
            })
        );
        // A static-secret robot without flags: empty lists, no nulls.
        let spec = RobotSpec { name: "pusher".into(), project: None, description: None, disabled: false, expires_at: None, identity_provider: None, rules: vec![], permissions: vec![] };
        assert_eq!(wire(&spec), json!({"name": "pusher", "rules": [], "permissions": []}));
    }

    #[test]
    fn robot_update_puts_back_what_it_read() {
        let view: RobotView = serde_json::from_value(json!({
            "name": "robot$library+ci", "project": "library", "description": "", "disabled": false,
            "expiresAt": "2030-01-01T00:00:00Z", "kind": "federated", "identityProvider": "github",
            "rules": [{"claim": "ref", "glob": "refs/heads/*"}, {"expression": "claims.x == 'y'"}],
            "permissions": [{"project": "library", "repositories": "*", "actions": ["pull"]}],
            "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
        }))
        .unwrap();
        let spec = view.spec().unwrap();
        assert_eq!(
            wire(&spec),
            json!({
                "name": "robot$library+ci", "project": "library", "description": "", "expiresAt": "2030-01-01T00:00:00Z",
                "identityProvider": "github",
                "rules": [{"claim": "ref", "glob": "refs/heads/*"}, {"expression": "claims.x == 'y'"}],
                "permissions": [{"project": "library", "repositories": "*", "actions": ["pull"]}],
            })
        );
        let disabled = RobotSpec { disabled: true, expires_at: None, ..spec };
        assert_eq!(wire(&disabled)["disabled"], json!(true));
        assert!(wire(&disabled).get("expiresAt").is_none());
    }

    #[test]
    fn bodyless_posts_send_an_empty_object() {
        assert_eq!(serde_json::to_string(&EmptyBody {}).unwrap(), "{}");
    }

    fn idp_add(preset: &str) -> IdpAdd {
        IdpAdd {
            preset: preset.into(),
            name: "ci".into(),
            audiences: vec!["registry.example.com".into()],
            issuer: None,
            instance: None,
            realm: None,
            slug: None,
            login: IdpLogin::default(),
            enterprise_slug: None,
            jwks_file: None,
            jwks_uri: None,
            discovery_url: None,
            ca_cert: None,
            algorithms: vec![],
            max_token_lifetime: None,
            clock_skew: None,
        }
    }

    #[test]
    fn idp_flags_become_the_provider_the_server_accepts() {
        let spec = idp_spec(IdpAdd { instance: Some("https://gitlab.example".into()), clock_skew: Some("30s".into()), ..idp_add("gitlab") }).unwrap();
        let expected = json!({"name": "ci", "preset": "gitlab", "instance": "https://gitlab.example", "audiences": ["registry.example.com"], "clockSkew": "30s"});
        assert_eq!(wire(&spec), expected);
        assert_eq!(serde_json::from_value::<ProviderSpec>(expected).unwrap(), spec);
        let spec = idp_spec(IdpAdd {
            issuer: Some("https://issuer.example".into()),
            algorithms: vec!["ES256".into()],
            jwks_uri: Some("https://issuer.example/keys".into()),
            ..idp_add("generic")
        })
        .unwrap();
        assert_eq!(
            wire(&spec),
            json!({"name": "ci", "issuer": "https://issuer.example", "audiences": ["registry.example.com"], "jwksUri": "https://issuer.example/keys", "algorithms": ["ES256"]})
        );
        for (preset, name) in [("github", "github"), ("forgejo", "forgejo"), ("kubernetes", "kubernetes")] {
            assert_eq!(wire(&idp_spec(idp_add(preset)).unwrap())["preset"], json!(name));
        }
        let e = idp_spec(idp_add("azure")).unwrap_err().to_string();
        assert_eq!(e, "unknown preset \"azure\": use github, gitlab, forgejo, kubernetes, keycloak, authentik, google or generic");
        // People: the login section, the client secret read from a file.
        let dir = std::env::temp_dir().join(format!("berth-idp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret.txt");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let spec = idp_spec(IdpAdd {
            issuer: Some("https://kc.example.com/realms/acme".into()),
            audiences: vec![],
            login: IdpLogin {
                client_id: Some("berth".into()),
                client_secret_file: Some(secret.display().to_string()),
                admin_group: Some("registry-admins".into()),
                groups_format: Some("last-segment".into()),
                offline_access: true,
                no_auto_onboard: true,
                ..IdpLogin::default()
            },
            ..idp_add("keycloak")
        })
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            wire(&spec),
            json!({"name": "ci", "preset": "keycloak", "issuer": "https://kc.example.com/realms/acme", "audiences": [], "login": {
                "clientId": "berth", "clientSecret": "s3cret", "offlineAccess": true, "groupsFormat": "last-segment",
                "adminGroup": "registry-admins", "autoOnboard": false}})
        );
        spec.resolve().unwrap();
        let e = idp_spec(IdpAdd { login: IdpLogin { client_id: Some("b".into()), groups_format: Some("flat".into()), ..IdpLogin::default() }, ..idp_add("generic") })
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown groups format"), "{e}");
    }

    /// `--json` prints the typed answer; it must be exactly what the server sent.
    fn prints_as_sent<T: DeserializeOwned + Serialize>(sent: Value) {
        let typed: T = serde_json::from_value(sent.clone()).unwrap();
        assert_eq!(serde_json::to_value(&typed).unwrap(), sent);
    }

    #[test]
    fn answers_print_as_the_server_sent_them() {
        use berth_core::admin::IdentityProviderTest;
        use berth_identity::federation::{Explanation, ProviderTest, RobotExplanation, RuleExplanation, Step};
        let explanation = Explanation {
            now: 1_700_000_000,
            header: Some(json!({"alg": "ES256", "kid": "k1"})),
            claims: Some(json!({"sub": "x", "n": 1.5, "nested": {"b": [1, null]}})),
            provider: Some("github".into()),
            steps: vec![Step { name: "signature".into(), ok: true, detail: "ES256 key k1".into() }],
            robots: vec![
                RobotExplanation { robot: "robot$ci".into(), matched: false, note: Some("disabled".into()), rules: vec![RuleExplanation { rule: "ref=x".into(), matched: false, reason: "ref is y".into() }] },
                RobotExplanation { robot: "robot$cd".into(), matched: true, note: None, rules: vec![] },
            ],
            matched: vec!["robot$cd".into()],
            result: "accepted".into(),
            message: None,
        };
        prints_as_sent::<ExplanationView>(serde_json::to_value(&explanation).unwrap());
        prints_as_sent::<ExplanationView>(serde_json::to_value(Explanation { result: "denied".into(), message: Some("bad".into()), ..Explanation::default() }).unwrap());

        let test = ProviderTest {
            issuer: "https://issuer.example".into(),
            source: "static jwks".into(),
            keys: vec!["k1 (EC P-256)".into()],
            skipped: vec![],
            advertised_algorithms: None,
            algorithms: vec!["ES256".into()],
            audiences: vec!["registry.example.com".into()],
        };
        // What the server's handler sends.
        let sent = |t: IdentityProviderTest| serde_json::to_value(t).unwrap();
        let ok = sent(IdentityProviderTest { ok: true, result: Some(test.clone()), error: None });
        assert_eq!(ok["result"]["advertisedAlgorithms"], Value::Null);
        prints_as_sent::<ProviderTestAnswer>(ok);
        let advertised = ProviderTest { advertised_algorithms: Some(vec!["RS256".into()]), ..test };
        prints_as_sent::<ProviderTestAnswer>(sent(IdentityProviderTest { ok: true, result: Some(advertised), error: None }));
        let failed = sent(IdentityProviderTest { ok: false, result: None, error: Some("discovery failed".into()) });
        assert_eq!(failed, json!({"ok": false, "error": "discovery failed"}));
        prints_as_sent::<ProviderTestAnswer>(failed);

        prints_as_sent::<RobotCreated>(json!({
            "robot": {"name": "robot$pusher", "project": null, "description": "", "disabled": false, "expiresAt": null, "kind": "secret",
                      "identityProvider": null, "rules": [], "permissions": [{"repositories": "*", "actions": ["pull"]}],
                      "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"},
            "secret": "s3cret",
        }));
        prints_as_sent::<IdentityProviderView>(json!({
            "name": "k8s", "issuer": "https://kubernetes.default.svc",
            "spec": {"name": "k8s", "preset": "kubernetes", "issuer": "https://kubernetes.default.svc", "audiences": ["r"], "jwks": {"keys": []}, "maxTokenLifetime": "1h"},
            "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
        }));
        prints_as_sent::<Vec<AuditEventView>>(json!([
            {"id": 3, "time": "2026-01-01T00:00:00.123Z", "action": "push", "result": "ok", "principal": "robot$ci", "robots": ["robot$ci"],
             "provider": "github", "claims": {"sub": "x"}, "repository": "library/app", "reference": "v1"},
            {"id": 2, "time": "2026-01-01T00:00:00.000Z", "action": "login", "result": "denied", "principal": "bob", "robots": [], "message": "bad password"},
        ]));
        prints_as_sent::<ApplyReport>(json!({"changes": [{"kind": "robot", "name": "robot$ci", "action": "created"}], "secrets": {"robot$ci": "s"}}));
        prints_as_sent::<ApplyReport>(json!({"changes": []}));
        prints_as_sent::<Vec<ProjectView>>(json!([{"name": "library", "public": true, "createdAt": "2026-01-01T00:00:00Z"}]));
    }
}
