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

/// Everything Berth can be configured with. See `docs/configuration.md`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The URL clients use to reach Berth (for token realms and Location headers), e.g.
    /// `https://registry.example.com`. Default: derived from each request's Host header.
    pub external_url: Option<String>,
    /// Folder for the SQLite database, blobs and uploads.
    pub data_dir: PathBuf,
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            external_url: None,
            data_dir: PathBuf::from("./berth-data"),
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
        }
    }
}

/// The top-level keys of [`Config`]. Only `BERTH_<KEY>` variables naming one of them are read:
/// others (Kubernetes' service links such as `BERTH_PORT`, the CLI's `BERTH_SERVER`) are not
/// settings and must not stop Berth from starting. A test keeps this list equal to the struct.
const KEYS: &[&str] = &[
    "listen", "external_url", "data_dir", "service", "tls", "token_ttl", "anonymous", "admin_password",
    "log_format", "log_level", "shutdown_grace", "gc", "metrics_listen", "limits",
];

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
        fig = fig.merge(Env::prefixed("BERTH_").filter(|k| is_setting(k.as_str())).split("__"));
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
}
