//! Berth's configuration: one documented struct with defaults, read from an optional TOML file
//! (`--config berth.toml`) and overridden by `BERTH_<KEY>` environment variables (nested keys with
//! a double underscore: `BERTH_TLS__CERT`, `BERTH_GC__INTERVAL`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_server::{AnonymousAccess, Limits, TlsFiles};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Garbage collection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Run garbage collection in the server this often ("6h"); absent or "0s": never (use `berth gc`).
    #[serde(with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Unreferenced blobs younger than this are kept, so a push that uploaded its layers but not
    /// yet its manifest never loses them.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Upload sessions idle for longer than this are removed.
    #[serde(with = "humantime_serde")]
    pub upload_ttl: Duration,
    /// Audit events older than this are removed.
    #[serde(with = "humantime_serde")]
    pub audit_retention: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval: None,
            grace: Duration::from_secs(3600),
            upload_ttl: Duration::from_secs(24 * 3600),
            audit_retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// People's credentials (`[tokens]`): how long Berth's tokens for users live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokensConfig {
    /// Longest lifetime of a personal access token, and the lifetime of one created without
    /// `--expires`.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// How long a `berth login` lasts (the CLI's and the credential helper's credential).
    #[serde(with = "humantime_serde")]
    pub cli_lifetime: Duration,
    /// How long a browser session lasts.
    #[serde(with = "humantime_serde")]
    pub web_lifetime: Duration,
    /// How long a credential helper password lasts (it is renewed silently).
    #[serde(with = "humantime_serde")]
    pub helper_lifetime: Duration,
    /// Personal access tokens one user may have.
    pub max_per_user: usize,
}

impl Default for TokensConfig {
    fn default() -> Self {
        let d = berth_core::people::PeopleConfig::default();
        TokensConfig {
            max_lifetime: d.token_max_lifetime,
            cli_lifetime: d.cli_lifetime,
            web_lifetime: d.web_lifetime,
            helper_lifetime: d.helper_lifetime,
            max_per_user: d.max_tokens_per_user,
        }
    }
}

impl TokensConfig {
    pub fn people(&self) -> berth_core::people::PeopleConfig {
        berth_core::people::PeopleConfig {
            token_max_lifetime: self.max_lifetime,
            cli_lifetime: self.cli_lifetime,
            web_lifetime: self.web_lifetime,
            helper_lifetime: self.helper_lifetime,
            max_tokens_per_user: self.max_per_user,
            ..berth_core::people::PeopleConfig::default()
        }
    }
}

/// The PostgreSQL connection pool (`[metadata]`; used when `metadata_url` is `postgres://`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetadataConfig {
    /// Connections one Berth process keeps at most; replicas × this must stay below the
    /// server's `max_connections`.
    pub max_connections: u32,
    /// Connections kept open while idle.
    pub min_connections: u32,
    /// How long a request waits for a free connection before it fails with 503.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// How long connecting may take (at start-up and for each new connection).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The server cancels a statement running longer ("0s": the server's own setting).
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// Idle connections above `min_connections` are closed after this.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections are replaced after this, so a failover reaches every connection.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        use berth_meta::PostgresOptions as P;
        MetadataConfig {
            max_connections: P::DEFAULT_MAX_CONNECTIONS,
            min_connections: P::DEFAULT_MIN_CONNECTIONS,
            acquire_timeout: P::DEFAULT_ACQUIRE_TIMEOUT,
            connect_timeout: P::DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: P::DEFAULT_STATEMENT_TIMEOUT,
            idle_timeout: P::DEFAULT_IDLE_TIMEOUT,
            max_lifetime: P::DEFAULT_MAX_LIFETIME,
        }
    }
}

impl MetadataConfig {
    /// The pool settings as the PostgreSQL backend's options (its URL is set from `metadata_url`).
    pub fn pool(&self) -> berth_meta::PostgresOptions {
        berth_meta::PostgresOptions {
            max_connections: self.max_connections,
            min_connections: self.min_connections,
            acquire_timeout: self.acquire_timeout,
            connect_timeout: self.connect_timeout,
            statement_timeout: Some(self.statement_timeout).filter(|d| !d.is_zero()),
            idle_timeout: Some(self.idle_timeout).filter(|d| !d.is_zero()),
            max_lifetime: Some(self.max_lifetime).filter(|d| !d.is_zero()),
            ..berth_meta::PostgresOptions::new("")
        }
    }
}

/// S3 settings that do not fit in `storage_url` (`[storage]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Answer blob downloads with a redirect (307) to a presigned URL of the bucket, so clients
    /// fetch the bytes from S3 (or a CDN in front of it) while Berth still authorises every
    /// request. Only for S3; ignored (with a warning) for a folder.
    pub redirect: bool,
    /// How long a presigned URL stays valid.
    #[serde(with = "humantime_serde")]
    pub redirect_ttl: Duration,
    /// A PEM file of CA certificates trusted for the S3 endpoint, besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Static S3 credentials. Unset: the AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    /// AWS_PROFILE, web identity / IRSA, container and instance credentials).
    pub access_key_id: Option<String>,
    #[serde(skip_serializing)]
    pub secret_access_key: Option<String>,
    #[serde(skip_serializing)]
    pub session_token: Option<String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            redirect: false,
            redirect_ttl: Duration::from_secs(15 * 60),
            ca_file: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
        }
    }
}

/// Everything Berth can be configured with. See `docs/configuration.md`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The URL clients use to reach Berth (for token realms and Location headers), e.g.
    /// `https://registry.example.com`. Default: derived from each request's Host header.
    pub external_url: Option<String>,
    /// Folder for the SQLite database, blobs and uploads (of the embedded default: unused for
    /// a store that `metadata_url` / `storage_url` put elsewhere).
    pub data_dir: PathBuf,
    /// Where the metadata lives: `sqlite:/path/berth.db` or `postgres://user@host:5432/db`.
    /// Default: SQLite at `<data_dir>/berth.db`. Shown by `berth config` without its password.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub metadata_url: Option<String>,
    /// Where the blobs live: `file:/path/folder` or
    /// `s3://bucket/prefix?region=R&endpoint=https://host:port&path_style=true`. Default: the
    /// folder `data_dir`.
    pub storage_url: Option<String>,
    /// The PostgreSQL connection pool.
    pub metadata: MetadataConfig,
    /// S3 settings beyond the URL.
    pub storage: StorageConfig,
    /// The token `service` name and the registry token's audience.
    pub service: String,
    /// TLS certificate chain and key (PEM). Without them Berth speaks plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Lifetime of the registry tokens Berth issues.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Who may use the registry without credentials: off, pull or read-write.
    pub anonymous: AnonymousAccess,
    /// Password of the bootstrap `admin` user. When unset on first start, one is generated and
    /// printed once. Setting it later resets the admin's password. Never logged.
    #[serde(skip_serializing)]
    pub admin_password: Option<String>,
    /// Log format: text or json.
    pub log_format: LogFormat,
    /// Log filter, e.g. "info" or "info,berth::access=debug" (RUST_LOG overrides).
    pub log_level: String,
    /// How long a shutdown waits for running requests (uploads, downloads) to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub gc: GcConfig,
    /// A second listener that serves only `/metrics`, `/healthz` and `/readyz` without
    /// authentication (plain HTTP), for Prometheus, e.g. `127.0.0.1:9090`. On the main listener
    /// `/metrics` needs admin credentials.
    pub metrics_listen: Option<SocketAddr>,
    /// What a client can make Berth spend (connections, timeouts, password checks, failed
    /// logins): the `[limits]` section, see docs/configuration.md.
    pub limits: Limits,
    /// Lifetimes of the tokens Berth issues to people (`[tokens]`).
    pub tokens: TokensConfig,
    /// Identity providers applied at every start (`[[identity_providers]]`, the admin API's
    /// provider documents, camelCase inside): created or brought to this state, idempotently
    /// (as `berth apply` does); providers not listed are left alone. File only (no env form).
    /// `berth config` shows client secrets as REDACTED.
    #[serde(serialize_with = "serialize_redacted_providers")]
    pub identity_providers: Vec<berth_identity::federation::ProviderSpec>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            external_url: None,
            data_dir: PathBuf::from("./berth-data"),
            metadata_url: None,
            storage_url: None,
            metadata: MetadataConfig::default(),
            storage: StorageConfig::default(),
            service: "berth".into(),
            tls: None,
            token_ttl: Duration::from_secs(15 * 60),
            anonymous: AnonymousAccess::Off,
            admin_password: None,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            shutdown_grace: Duration::from_secs(30),
            gc: GcConfig::default(),
            metrics_listen: None,
            limits: Limits::default(),
            tokens: TokensConfig::default(),
            identity_providers: Vec::new(),
        }
    }
}

/// The top-level keys of [`Config`]. Only `BERTH_<KEY>` variables naming one of them are read:
/// others (Kubernetes' service links such as `BERTH_PORT`, the CLI's `BERTH_SERVER`) are not
/// settings and must not stop Berth from starting. A test keeps this list equal to the struct.
const KEYS: &[&str] = &[
    "listen", "external_url", "data_dir", "metadata_url", "storage_url", "metadata", "storage", "service", "tls", "token_ttl", "anonymous", "admin_password",
    "log_format", "log_level", "shutdown_grace", "gc", "metrics_listen", "limits", "tokens",
    "identity_providers",
];

/// Identity providers for `berth config`: client secrets replaced by `REDACTED`.
fn serialize_redacted_providers<S: serde::Serializer>(list: &[berth_identity::federation::ProviderSpec], s: S) -> Result<S::Ok, S::Error> {
    let redacted: Vec<berth_identity::federation::ProviderSpec> = list
        .iter()
        .cloned()
        .map(|mut p| {
            if let Some(l) = p.login.as_mut() {
                if l.client_secret.is_some() {
                    l.client_secret = Some("REDACTED".into());
                }
            }
            p
        })
        .collect();
    serde::Serialize::serialize(&redacted, s)
}

/// `metadata_url` for `berth config`: the password replaced by `REDACTED` (it may also come from
/// `PGPASSWORD` instead).
fn serialize_redacted_url<S: serde::Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        None => s.serialize_none(),
        Some(u) => s.serialize_some(&redact_url(u)),
    }
}

/// A URL with its password replaced by `REDACTED`; a text that does not parse as a URL with a
/// password is shown up to its `@` only if it has one.
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        Ok(_) => text.to_owned(),
        Err(_) => match text.rsplit_once('@') {
            Some((_, host)) => format!("REDACTED@{host}"),
            None => text.to_owned(),
        },
    }
}

/// The settings (as `BERTH_<KEY>` names them, lowercase) whose values are text, read verbatim.
const TEXT_ENV: &[&str] = &[
    "external_url", "data_dir", "metadata_url", "storage_url", "service", "admin_password", "log_level", "tls__cert", "tls__key",
    "storage__ca_file", "storage__access_key_id", "storage__secret_access_key", "storage__session_token",
];

fn is_text_env(env_key: &str) -> bool {
    TEXT_ENV.contains(&env_key.to_ascii_lowercase().as_str())
}

/// Variables that belong to the CLI, not to the server configuration (not worth a warning).
const CLI_ENV: &[&str] = &["BERTH_CONFIG", "BERTH_SERVER", "BERTH_USERNAME", "BERTH_PASSWORD", "BERTH_TOKEN", "BERTH_CA_FILE"];

fn is_setting(env_key: &str) -> bool {
    let key = env_key.to_ascii_lowercase();
    let top = key.split("__").next().unwrap_or("");
    KEYS.contains(&top)
}

/// `BERTH_*` variables that are neither settings nor the CLI's, to warn about (a typo such as
/// `BERTH_LISTN` should not go unnoticed).
pub fn ignored_env() -> Vec<String> {
    std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("BERTH_") && !CLI_ENV.contains(&k.as_str()) && !is_setting(&k["BERTH_".len()..]))
        .collect()
}

impl Config {
    /// Defaults, then the file (if given), then `BERTH_*` environment variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                anyhow::bail!("config file {} does not exist", f.display());
            }
            fig = fig.merge(Toml::file(f));
        }
        // figment reads `12345678` as a number and `true` as a boolean, which a text setting (a
        // password, a URL, a path) then refuses: those are taken from the environment verbatim.
        fig = fig.merge(Env::prefixed("BERTH_").filter(|k| is_setting(k.as_str()) && !is_text_env(k.as_str())).split("__"));
        for key in TEXT_ENV {
            if let Ok(value) = std::env::var(format!("BERTH_{}", key.to_ascii_uppercase())) {
                fig = fig.merge(Serialized::default(&key.replace("__", "."), value));
            }
        }
        let mut cfg: Config = fig.extract().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        if let Some(u) = &cfg.external_url {
            let trimmed = u.trim_end_matches('/').to_owned();
            if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
                anyhow::bail!("external_url {u:?} must start with http:// or https://");
            }
            cfg.external_url = Some(trimmed);
        }
        if cfg.gc.interval == Some(Duration::ZERO) {
            cfg.gc.interval = None;
        }
        cfg.limits.validate().map_err(|e| anyhow::anyhow!("invalid configuration: {e} (see the [limits] section in docs/configuration.md)"))?;
        for (key, value) in [("metadata_url", &mut cfg.metadata_url), ("storage_url", &mut cfg.storage_url)] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *value = None;
            } else if let Some(v) = value.as_deref() {
                if v.len() > 4096 {
                    anyhow::bail!("invalid configuration: {key} is longer than 4096 characters");
                }
            }
        }
        if cfg.storage.redirect && !(Duration::from_secs(1)..=Duration::from_secs(7 * 24 * 3600)).contains(&cfg.storage.redirect_ttl) {
            anyhow::bail!("invalid configuration: storage.redirect_ttl must be between 1s and 7 days (S3's limit for presigned URLs)");
        }
        if cfg.metadata.max_connections == 0 {
            anyhow::bail!("invalid configuration: metadata.max_connections must be at least 1");
        }
        if cfg.metadata.min_connections > cfg.metadata.max_connections {
            anyhow::bail!("invalid configuration: metadata.min_connections must not exceed metadata.max_connections");
        }
        if cfg.metrics_listen.is_some_and(|m| m == cfg.listen) {
            anyhow::bail!("metrics_listen {} is the same address as listen; choose another port (like 127.0.0.1:9090)", cfg.listen);
        }
        Ok(cfg)
    }

    /// The effective configuration as TOML, secrets left out.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)]
    fn defaults_file_and_env() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None).unwrap();
            assert_eq!(c.listen.to_string(), "127.0.0.1:5000");
            assert_eq!(c.data_dir, PathBuf::from("./berth-data"));
            assert_eq!(c.token_ttl, Duration::from_secs(900));
            jail.create_file("b.toml", "listen = \"0.0.0.0:6000\"\ntoken_ttl = \"5m\"\n[gc]\ninterval = \"6h\"\n")?;
            jail.set_env("BERTH_DATA_DIR", "/srv/berth");
            jail.set_env("BERTH_GC__GRACE", "2h");
            jail.set_env("BERTH_ANONYMOUS", "pull");
            jail.set_env("BERTH_SERVER", "http://ignored");
            jail.set_env("BERTH_PORT", "tcp://10.0.0.1:5000"); // a Kubernetes service link
            jail.set_env("BERTH_SERVICE_HOST", "10.0.0.1");
            let c = Config::load(Some(Path::new("b.toml"))).unwrap();
            assert_eq!(c.listen.to_string(), "0.0.0.0:6000");
            assert_eq!(c.token_ttl, Duration::from_secs(300));
            assert_eq!(c.data_dir, PathBuf::from("/srv/berth"));
            assert_eq!(c.gc.interval, Some(Duration::from_secs(6 * 3600)));
            assert_eq!(c.gc.grace, Duration::from_secs(7200));
            assert_eq!(c.anonymous, AnonymousAccess::Pull);
            let ignored = ignored_env();
            assert!(ignored.contains(&"BERTH_PORT".to_owned()) && ignored.contains(&"BERTH_SERVICE_HOST".to_owned()), "{ignored:?}");
            assert!(!ignored.iter().any(|k| k == "BERTH_SERVER" || k == "BERTH_DATA_DIR" || k == "BERTH_GC__GRACE"), "{ignored:?}");
            jail.set_env("BERTH_ADMIN_PASSWORD", "pw");
            let c = Config::load(None).unwrap();
            assert_eq!(c.admin_password.as_deref(), Some("pw"));
            // Text that looks like a number, a boolean or a list stays text.
            for pw in ["12345678", "true", "[secret]", "1.5", "{a=1}"] {
                jail.set_env("BERTH_ADMIN_PASSWORD", pw);
                jail.set_env("BERTH_SERVICE", pw);
                jail.set_env("BERTH_STORAGE__SECRET_ACCESS_KEY", pw);
                let c = Config::load(None).unwrap_or_else(|e| panic!("{pw}: {e}"));
                assert_eq!((c.admin_password.as_deref(), c.service.as_str()), (Some(pw), pw));
                assert_eq!(c.storage.secret_access_key.as_deref(), Some(pw));
            }
            jail.set_env("BERTH_SERVICE", "berth");
            jail.set_env("BERTH_ADMIN_PASSWORD", "pw");
            assert!(!c.to_toml().contains("pw"), "secrets are not rendered");
            // The [limits] section, from the file and the environment, validated.
            jail.create_file("l.toml", "metrics_listen = \"127.0.0.1:9090\"\n[limits]\nmax_connections = 100\nidle_timeout = \"1m\"\n")?;
            jail.set_env("BERTH_LIMITS__PASSWORD_CHECKS", "3");
            let c = Config::load(Some(Path::new("l.toml"))).unwrap();
            assert_eq!(c.metrics_listen, Some(SocketAddr::from(([127, 0, 0, 1], 9090))));
            assert_eq!((c.limits.max_connections, c.limits.password_checks), (100, 3));
            assert_eq!(c.limits.idle_timeout, Duration::from_secs(60));
            assert_eq!(c.limits.login_window, Limits::default().login_window, "unset fields keep their defaults");
            jail.set_env("BERTH_LIMITS__MAX_CONNECTIONS", "0");
            let e = Config::load(None).unwrap_err().to_string();
            assert!(e.contains("limits.max_connections must be at least 1"), "{e}");
            jail.set_env("BERTH_LIMITS__MAX_CONNECTIONS", "10");
            jail.set_env("BERTH_LIMITS__MAX_CONECTIONS", "10");
            let e = Config::load(None).unwrap_err().to_string();
            assert!(e.contains("max_conections"), "a typo in [limits] is an error: {e}");
            jail.clear_env();
            jail.create_file("bad.toml", "lisen = \"x\"\n")?;
            assert!(Config::load(Some(Path::new("bad.toml"))).unwrap_err().to_string().contains("lisen"));
            assert!(Config::load(Some(Path::new("missing.toml"))).is_err());
            Ok(())
        });
    }

    #[test]
    fn keys_list_matches_the_struct() {
        let mut c = Config {
            external_url: Some("https://x".into()),
            tls: Some(TlsFiles { cert: "c".into(), key: "k".into() }),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            metadata_url: Some("postgres://h/db".into()),
            storage_url: Some("s3://b".into()),
            ..Default::default()
        };
        c.gc.interval = Some(Duration::from_secs(1));
        let rendered: toml::Table = toml::from_str(&c.to_toml()).unwrap();
        let mut have: Vec<&str> = rendered.keys().map(String::as_str).collect();
        have.push("admin_password"); // never rendered
        have.sort();
        let mut want = KEYS.to_vec();
        want.sort();
        assert_eq!(have, want);
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn identity_providers_from_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "berth.toml",
                r#"
[tokens]
max_lifetime = "30d"

[[identity_providers]]
name = "corp"
preset = "keycloak"
issuer = "https://kc.example.com/realms/acme"
[identity_providers.login]
clientId = "berth"
clientSecret = "s3cret"
adminGroup = "registry-admins"
"#,
            )?;
            let c = Config::load(Some(std::path::Path::new("berth.toml"))).unwrap();
            assert_eq!(c.tokens.max_lifetime, Duration::from_secs(30 * 86_400));
            assert_eq!(c.identity_providers.len(), 1);
            let p = c.identity_providers[0].resolve().unwrap();
            assert_eq!(p.login.as_ref().unwrap().admin_group.as_deref(), Some("registry-admins"));
            let shown = c.to_toml();
            assert!(shown.contains("clientSecret = \"REDACTED\"") && !shown.contains("s3cret"), "{shown}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn backends_and_secrets() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None).unwrap();
            assert_eq!((c.metadata_url.as_deref(), c.storage_url.as_deref()), (None, None), "the embedded default");
            jail.set_env("BERTH_METADATA_URL", "postgres://berth:hunter2@db.internal:5432/berth?sslmode=require");
            jail.set_env("BERTH_STORAGE_URL", "s3://bucket/prefix?region=eu-central-1");
            jail.set_env("BERTH_METADATA__MAX_CONNECTIONS", "32");
            jail.set_env("BERTH_STORAGE__SECRET_ACCESS_KEY", "s3cr3t");
            jail.create_file("s.toml", "[storage]\naccess_key_id = \"AKID\"\nca_file = \"/etc/ca.pem\"\n[metadata]\nstatement_timeout = \"0s\"\n")?;
            let c = Config::load(Some(Path::new("s.toml"))).unwrap();
            assert_eq!(c.metadata_url.as_deref(), Some("postgres://berth:hunter2@db.internal:5432/berth?sslmode=require"));
            assert_eq!(c.storage_url.as_deref(), Some("s3://bucket/prefix?region=eu-central-1"));
            assert_eq!(c.metadata.max_connections, 32);
            assert_eq!(c.storage.access_key_id.as_deref(), Some("AKID"));
            assert_eq!(c.storage.secret_access_key.as_deref(), Some("s3cr3t"));
            let pool = c.metadata.pool();
            assert_eq!((pool.max_connections, pool.statement_timeout), (32, None), "0s: the server's own setting");
            assert!(ignored_env().is_empty(), "{:?}", ignored_env());
            let shown = c.to_toml();
            assert!(!shown.contains("hunter2") && !shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains("postgres://berth:REDACTED@db.internal:5432/berth?sslmode=require"), "{shown}");
            jail.set_env("BERTH_METADATA__MIN_CONNECTIONS", "33");
            assert!(Config::load(None).unwrap_err().to_string().contains("min_connections"));
            Ok(())
        });
        assert_eq!(redact_url("postgres://u:p@h/db"), "postgres://u:REDACTED@h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("not a url:pw@host"), "REDACTED@host");
    }
}
