//! The CLI commands that talk to a running Berth through its admin API (`/api/v1`): login,
//! projects, robots, identity providers, apply, token explain and audit. They send and receive
//! the API's own wire types (`berth_server::api::types`), so CLI and API cannot drift.
//!
//! The server comes from `--server` or `BERTH_SERVER`, else from `berth login`'s saved file;
//! credentials from `BERTH_USERNAME`/`BERTH_PASSWORD`, else from that file. Scripts never meet a
//! prompt: a password is read from standard input only with `--password-stdin`.
//!
//! `--ca-file` trusts a private CA, or the server's own self-signed certificate: when that exact
//! certificate is presented it is accepted (its host name still checked) even if it is marked as
//! a CA, which WebPKI otherwise refuses as a server certificate (curl and skopeo accept it too).

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{bail, Context};
use berth_server::api::types::*;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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

#[derive(Serialize, Deserialize, Default)]
struct Saved {
    server: String,
    username: String,
    password: String,
}

fn saved_path() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .context("set HOME or XDG_CONFIG_HOME so `berth login` can save its credentials")?;
    Ok(base.join("berth").join("credentials.json"))
}

fn load_saved() -> Option<Saved> {
    let p = saved_path().ok()?;
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

/// An authenticated admin API client.
pub struct Client {
    http: reqwest::Client,
    base: String,
    username: String,
    password: String,
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
    pub fn new(r: &Remote) -> anyhow::Result<Client> {
        let saved = load_saved();
        let base = r
            .server
            .clone()
            .or_else(|| saved.as_ref().map(|s| s.server.clone()))
            .context("no server: pass --server URL, set BERTH_SERVER, or run `berth login --server URL` first")?;
        let username = r.username.clone().or_else(|| saved.as_ref().map(|s| s.username.clone())).unwrap_or_else(|| "admin".into());
        let password = std::env::var("BERTH_PASSWORD")
            .ok()
            .or_else(|| saved.as_ref().map(|s| s.password.clone()))
            .context("no password: set BERTH_PASSWORD or run `berth login` first")?;
        Ok(Client { http: http_client(r.ca_file.as_ref())?, base: base.trim_end_matches('/').to_owned(), username, password })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut req = self.http.request(method.clone(), &url).basic_auth(&self.username, Some(&self.password));
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
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: the answer is not JSON"))
    }
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

/// Drops the members of a JSON object that are null (flags the user did not give).
fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(o.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        other => other,
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

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
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
    /// Read the password from standard input (else BERTH_PASSWORD).
    #[arg(long)]
    pub password_stdin: bool,
}

pub async fn login(r: &Remote, a: &LoginArgs) -> anyhow::Result<()> {
    let server = r.server.clone().context("pass --server URL (or set BERTH_SERVER)")?;
    let username = r.username.clone().unwrap_or_else(|| "admin".into());
    let password = if a.password_stdin {
        let mut s = String::new();
        std::io::stdin().read_line(&mut s)?;
        s.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        std::env::var("BERTH_PASSWORD").context("pass --password-stdin or set BERTH_PASSWORD")?
    };
    let c = Client { http: http_client(r.ca_file.as_ref())?, base: server.trim_end_matches('/').to_owned(), username: username.clone(), password: password.clone() };
    c.get("/projects").await.context("login failed")?;
    let path = saved_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let body = serde_json::to_vec_pretty(&Saved { server: c.base.clone(), username: username.clone(), password })?;
    write_private(&path, &body)?;
    println!("logged in to {} as {username}; credentials saved in {}", c.base, path.display());
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, body: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(body)?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, body: &[u8]) -> anyhow::Result<()> {
    Ok(std::fs::write(path, body)?)
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
}

pub async fn project(r: &Remote, cmd: ProjectCommand) -> anyhow::Result<()> {
    let c = Client::new(r)?;
    let out = match cmd {
        ProjectCommand::List => {
            let v = c.get("/projects").await?;
            if !r.json {
                for p in v.as_array().into_iter().flatten() {
                    println!("{}\t{}", p["name"].as_str().unwrap_or(""), if p["public"] == true { "public" } else { "private" });
                }
                return Ok(());
            }
            v
        }
        ProjectCommand::Create { name, public } => c.post("/projects", &json!({"name": name, "public": public})).await?,
        ProjectCommand::Show { name } => c.get(&format!("/projects/{}", seg(&name))).await?,
        ProjectCommand::Set { name, public, private } => {
            if !public && !private {
                bail!("say --public or --private");
            }
            c.put(&format!("/projects/{}", seg(&name)), &json!({"name": name, "public": public})).await?
        }
        ProjectCommand::Delete { name } => {
            c.delete(&format!("/projects/{}", seg(&name))).await?;
            println!("project {name} deleted");
            return Ok(());
        }
    };
    print_json(&out);
    Ok(())
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
pub fn parse_rule(s: &str) -> anyhow::Result<Value> {
    if let Some((claim, values)) = s.split_once(":in=") {
        return Ok(json!({"claim": claim, "oneOf": values.split(',').collect::<Vec<_>>()}));
    }
    let eq = s.find('=');
    let glob = s.find('~');
    match (eq, glob) {
        (Some(i), g) if g.is_none_or(|g| i < g) => Ok(json!({"claim": &s[..i], "equals": &s[i + 1..]})),
        (_, Some(i)) => Ok(json!({"claim": &s[..i], "glob": &s[i + 1..]})),
        _ => bail!("rule {s:?}: use CLAIM=VALUE, CLAIM~GLOB or CLAIM:in=A,B"),
    }
}

/// Parses `GLOB:ACTIONS`.
pub fn parse_allow(s: &str) -> anyhow::Result<Value> {
    let (glob, actions) = s.rsplit_once(':').with_context(|| format!("permission {s:?}: use REPOSITORY-GLOB:ACTIONS, like 'library/*:pull,push'"))?;
    Ok(json!({"repositories": glob, "actions": actions.split(',').collect::<Vec<_>>()}))
}

pub async fn robot(r: &Remote, cmd: RobotCommand) -> anyhow::Result<()> {
    let c = Client::new(r)?;
    let out = match cmd {
        RobotCommand::List { project } => {
            let path = match project {
                Some(p) => format!("/robots?project={}", seg(&p)),
                None => "/robots".into(),
            };
            let v = c.get(&path).await?;
            if !r.json {
                for x in v.as_array().into_iter().flatten() {
                    println!(
                        "{}\t{}\t{}{}",
                        x["name"].as_str().unwrap_or(""),
                        x["kind"].as_str().unwrap_or(""),
                        x["identityProvider"].as_str().unwrap_or("-"),
                        if x["disabled"] == true { "\tdisabled" } else { "" }
                    );
                }
                return Ok(());
            }
            v
        }
        RobotCommand::Create { name, project, identity_provider, rules, expressions, allow, description, expires_at } => {
            let mut rule_list = rules.iter().map(|s| parse_rule(s)).collect::<anyhow::Result<Vec<_>>>()?;
            rule_list.extend(expressions.iter().map(|e| json!({"expression": e})));
            let spec = json!({
                "name": name, "project": project, "identityProvider": identity_provider, "rules": rule_list,
                "permissions": allow.iter().map(|s| parse_allow(s)).collect::<anyhow::Result<Vec<_>>>()?,
                "description": description, "expiresAt": expires_at,
            });
            let spec = without_nulls(spec);
            let v = c.post("/robots", &spec).await?;
            if let (false, Some(secret)) = (r.json, v["secret"].as_str()) {
                println!("robot {} created. Its secret (shown only now):\n\n    {secret}\n", v["robot"]["name"].as_str().unwrap_or(""));
                return Ok(());
            }
            v
        }
        RobotCommand::Update { name, project, rules, expressions, allow, description, expires_at } => {
            let full = full_robot_name(&name, project.as_deref());
            let v: RobotView = serde_json::from_value(c.get(&format!("/robots/{}", seg(&full))).await?)?;
            let mut spec = json!({
                "name": v.name, "project": v.project, "description": v.description, "disabled": v.disabled, "expiresAt": v.expires_at,
                "identityProvider": v.identity_provider, "rules": v.rules, "permissions": v.permissions,
            });
            if !rules.is_empty() || !expressions.is_empty() {
                let mut list = rules.iter().map(|s| parse_rule(s)).collect::<anyhow::Result<Vec<_>>>()?;
                list.extend(expressions.iter().map(|e| json!({"expression": e})));
                spec["rules"] = json!(list);
            }
            if !allow.is_empty() {
                spec["permissions"] = json!(allow.iter().map(|s| parse_allow(s)).collect::<anyhow::Result<Vec<_>>>()?);
            }
            if let Some(d) = description {
                spec["description"] = json!(d);
            }
            match expires_at.as_deref() {
                Some("never") => spec["expiresAt"] = Value::Null,
                Some(t) => spec["expiresAt"] = json!(t),
                None => {}
            }
            let v = c.put(&format!("/robots/{}", seg(&full)), &without_nulls(spec)).await?;
            if !r.json {
                println!("robot {} updated", v["robot"]["name"].as_str().unwrap_or(&full));
                return Ok(());
            }
            v
        }
        RobotCommand::Show { name } => c.get(&format!("/robots/{}", seg(&name))).await?,
        RobotCommand::Disable { name } => set_disabled(&c, &name, true).await?,
        RobotCommand::Enable { name } => set_disabled(&c, &name, false).await?,
        RobotCommand::Secret { name } => {
            let v = c.post(&format!("/robots/{}/secret", seg(&name)), &json!({})).await?;
            if !r.json {
                println!("new secret of {name} (shown only now):\n\n    {}\n", v["secret"].as_str().unwrap_or(""));
                return Ok(());
            }
            v
        }
        RobotCommand::Delete { name } => {
            c.delete(&format!("/robots/{}", seg(&name))).await?;
            println!("robot {name} deleted");
            return Ok(());
        }
    };
    print_json(&out);
    Ok(())
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

async fn set_disabled(c: &Client, name: &str, disabled: bool) -> anyhow::Result<Value> {
    let v: RobotView = serde_json::from_value(c.get(&format!("/robots/{}", seg(name))).await?)?;
    let spec = json!({
        "name": v.name, "project": v.project, "description": v.description, "disabled": disabled, "expiresAt": v.expires_at,
        "identityProvider": v.identity_provider, "rules": v.rules, "permissions": v.permissions,
    });
    let spec = without_nulls(spec);
    c.put(&format!("/robots/{}", seg(name)), &spec).await
}

// ---------------------------------------------------------------- identity providers

#[derive(Subcommand, Debug)]
pub enum IdpCommand {
    /// List identity providers.
    List,
    /// Add an identity provider, from a preset (github, gitlab, forgejo, kubernetes) or generic.
    ///
    ///   berth idp add github --name github --audience registry.example.com
    ///   berth idp add gitlab --name corp-gitlab --instance https://gitlab.corp.example --audience registry.example.com
    ///   kubectl get --raw /openid/v1/jwks | berth idp add kubernetes --name my-cluster \
    ///       --issuer https://kubernetes.default.svc.cluster.local --audience registry.example.com --jwks-file -
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
    /// github, gitlab, forgejo, kubernetes, or generic.
    preset: String,
    #[arg(long)]
    name: String,
    /// Accepted audience (the `aud` tokens are requested for). Repeatable; at least one.
    #[arg(long = "audience", required = true)]
    audiences: Vec<String>,
    #[arg(long)]
    issuer: Option<String>,
    /// gitlab/forgejo: the instance URL.
    #[arg(long)]
    instance: Option<String>,
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

/// The provider document of `berth idp add`/`update`.
fn idp_spec(add: IdpAdd) -> anyhow::Result<Value> {
    let IdpAdd { preset, name, audiences, issuer, instance, enterprise_slug, jwks_file, jwks_uri, discovery_url, ca_cert, algorithms, max_token_lifetime, clock_skew } = add;
    let preset = match preset.as_str() {
        "generic" => None,
        p @ ("github" | "gitlab" | "forgejo" | "kubernetes") => Some(p.to_owned()),
        other => bail!("unknown preset {other:?}: use github, gitlab, forgejo, kubernetes or generic"),
    };
    let jwks = match jwks_file {
        Some(f) => Some(serde_json::from_str::<Value>(&read_input(&f)?).context("the JWKS is not JSON")?),
        None => None,
    };
    let ca = match ca_cert {
        Some(p) => Some(std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let spec = json!({
        "name": name, "preset": preset, "issuer": issuer, "instance": instance, "enterpriseSlug": enterprise_slug,
        "audiences": audiences, "jwks": jwks, "jwksUri": jwks_uri, "discoveryUrl": discovery_url, "certificateAuthority": ca,
        "algorithms": if algorithms.is_empty() { None } else { Some(algorithms) },
        "maxTokenLifetime": max_token_lifetime, "clockSkew": clock_skew,
    });
    Ok(without_nulls(spec))
}

pub async fn idp(r: &Remote, cmd: IdpCommand) -> anyhow::Result<()> {
    let c = Client::new(r)?;
    let out = match cmd {
        IdpCommand::List => {
            let v = c.get("/identity-providers").await?;
            if !r.json {
                for p in v.as_array().into_iter().flatten() {
                    println!("{}\t{}\t{}", p["name"].as_str().unwrap_or(""), p["issuer"].as_str().unwrap_or(""), p["spec"]["audiences"]);
                }
                return Ok(());
            }
            v
        }
        IdpCommand::Add(add) => c.post("/identity-providers", &idp_spec(*add)?).await?,
        IdpCommand::Update(add) => {
            let name = add.name.clone();
            let v = c.put(&format!("/identity-providers/{}", seg(&name)), &idp_spec(*add)?).await?;
            if !r.json {
                println!("identity provider {name} updated (issuer {})", v["issuer"].as_str().unwrap_or(""));
                return Ok(());
            }
            v
        }
        IdpCommand::Show { name } => c.get(&format!("/identity-providers/{}", seg(&name))).await?,
        IdpCommand::Test { name } => {
            let v = c.post(&format!("/identity-providers/{}/test", seg(&name)), &json!({})).await?;
            if !r.json {
                if v["ok"] == true {
                    let t = &v["result"];
                    println!("identity provider {name}: OK");
                    println!("  issuer:     {}", t["issuer"].as_str().unwrap_or(""));
                    println!("  keys from:  {}", t["source"].as_str().unwrap_or(""));
                    for k in t["keys"].as_array().into_iter().flatten() {
                        println!("  key:        {}", k.as_str().unwrap_or(""));
                    }
                    for k in t["skipped"].as_array().into_iter().flatten() {
                        println!("  skipped:    {}", k.as_str().unwrap_or(""));
                    }
                    println!("  algorithms: {}", t["algorithms"]);
                    println!("  audiences:  {}", t["audiences"]);
                    return Ok(());
                }
                bail!("identity provider {name}: {}", v["error"].as_str().unwrap_or("failed"));
            }
            v
        }
        IdpCommand::Delete { name } => {
            c.delete(&format!("/identity-providers/{}", seg(&name))).await?;
            println!("identity provider {name} deleted");
            return Ok(());
        }
    };
    print_json(&out);
    Ok(())
}

// ---------------------------------------------------------------- apply, explain, audit

pub async fn apply(r: &Remote, file: &str) -> anyhow::Result<()> {
    let doc: ApplyDocument = parse_document(&read_input(file)?, file)?;
    let c = Client::new(r)?;
    let v = c.post("/apply", &serde_json::to_value(&doc)?).await?;
    if r.json {
        print_json(&v);
        return Ok(());
    }
    let report: ApplyReport = serde_json::from_value(v)?;
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
    let v = c.post("/token/explain", &json!({"token": token})).await?;
    if r.json {
        print_json(&v);
        return Ok(());
    }
    if let Some(h) = v.get("header").filter(|h| !h.is_null()) {
        println!("header:   {h}");
    }
    if let Some(cl) = v.get("claims").filter(|h| !h.is_null()) {
        println!("claims:   {}", serde_json::to_string_pretty(cl)?.replace('\n', "\n          "));
    }
    println!("provider: {}", v["provider"].as_str().unwrap_or("(none)"));
    println!("\nsteps:");
    for s in v["steps"].as_array().into_iter().flatten() {
        println!("  [{}] {}: {}", if s["ok"] == true { "ok" } else { "FAIL" }, s["name"].as_str().unwrap_or(""), s["detail"].as_str().unwrap_or(""));
    }
    if let Some(robots) = v["robots"].as_array().filter(|a| !a.is_empty()) {
        println!("\nrobots of this provider:");
        for rb in robots {
            println!("  {} {}{}", if rb["matched"] == true { "MATCH" } else { "no   " }, rb["robot"].as_str().unwrap_or(""), rb["note"].as_str().map(|n| format!(" ({n})")).unwrap_or_default());
            for rule in rb["rules"].as_array().into_iter().flatten() {
                println!("      [{}] {}: {}", if rule["matched"] == true { "ok" } else { "FAIL" }, rule["rule"].as_str().unwrap_or(""), rule["reason"].as_str().unwrap_or(""));
            }
        }
    }
    println!("\nresult: {}{}", v["result"].as_str().unwrap_or(""), v["message"].as_str().map(|m| format!(": {m}")).unwrap_or_default());
    if v["result"] != "accepted" {
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
    let v = c.get(&format!("/audit?{}", q.join("&"))).await?;
    if r.json {
        print_json(&v);
        return Ok(());
    }
    let events: Vec<AuditEventView> = serde_json::from_value(v)?;
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
