//! `berth`: the registry binary. It only wires things together: configuration, logging, the
//! stores, the bootstrap admin and signing key, the HTTP server, and the offline commands.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_blob::BlobStore;
use berth_core::backends::{BlobEngine, MetadataEngine};
use berth_core::gc;
use berth_identity::token::generate_signing_key;
use berth_identity::TokenIssuer;
use berth_meta::{MetadataStore, UserRecord};
use berth_server::{AnonymousAccess, AppState, ServerConfig};
use clap::{Parser, Subcommand};
use config::{Config, LogFormat};

mod config;
mod migrate;
mod remote;

/// Berth: an OCI container registry where CI jobs and pods push and pull with the OIDC tokens
/// their platforms already give them.
///
/// Start it with `berth serve`; it needs no configuration file: it listens on 127.0.0.1:5000 and
/// keeps everything under ./berth-data. Every setting can also come from a TOML file (--config)
/// or a BERTH_<KEY> environment variable; see docs/configuration.md.
#[derive(Parser, Debug)]
#[command(name = "berth", version, propagate_version = true)]
struct Cli {
    /// Configuration file (TOML). Environment variables BERTH_<KEY> override it.
    #[arg(long, short = 'c', global = true, env = "BERTH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data folder (SQLite metadata, blobs, uploads). Overrides `data_dir`.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where the metadata lives: sqlite:/path/berth.db or postgres://user@host:5432/db (the
    /// password may come from PGPASSWORD). Overrides `metadata_url`; default: SQLite in the data folder.
    #[arg(long, global = true, value_name = "URL")]
    metadata_url: Option<String>,
    /// Where the blobs live: file:/path/folder or
    /// 's3://bucket/prefix?region=R&endpoint=https://host:port&path_style=true' (credentials from
    /// the AWS environment or [storage]). Overrides `storage_url`; default: the data folder.
    #[arg(long, global = true, value_name = "URL")]
    storage_url: Option<String>,
    #[command(flatten)]
    remote: remote::Remote,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the registry.
    ///
    /// On the first start Berth creates the user `admin` with a generated password and prints it
    /// once (set BERTH_ADMIN_PASSWORD to choose it). Then, for example:
    ///
    ///   skopeo copy --dest-creds admin:PASSWORD --dest-tls-verify=false \
    ///       oci:./img:v1 docker://127.0.0.1:5000/library/app:v1
    ///
    /// Stop with Ctrl-C or SIGTERM: running transfers get `shutdown_grace` to finish.
    Serve {
        /// Address to listen on (default 127.0.0.1:5000). Overrides `listen`.
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// Allow requests without credentials: off (default), pull, or read-write.
        #[arg(long, value_enum, value_name = "MODE")]
        anonymous: Option<AnonymousArg>,
        /// Log format. Overrides `log_format`.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Remove blobs no manifest references and stale upload sessions.
    ///
    /// Safe while the registry is running and being pushed to: content younger than the grace
    /// period (default 1h, `gc.grace`) is kept, so a push that has uploaded layers but not yet
    /// its manifest loses nothing. With --json the summary is one JSON object on stdout.
    Gc {
        /// Keep unreferenced content younger than this (e.g. "30m"). Overrides `gc.grace`.
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<Duration>,
        /// Remove upload sessions idle longer than this. Overrides `gc.upload_ttl`.
        #[arg(long, value_parser = humantime::parse_duration)]
        upload_ttl: Option<Duration>,
    },
    /// Copy this installation to other stores: SQLite + folder to PostgreSQL + S3, or back.
    ///
    ///   berth migrate --to-metadata-url postgres://berth@db.internal:5432/berth \
    ///       --to-storage-url 's3://registry-blobs/berth?region=eu-central-1'
    ///
    /// The source is what this configuration names (--data-dir / data_dir, metadata_url,
    /// storage_url), exactly as `berth serve` opens it. It is only read, never written: SQLite
    /// through read-only connections, PostgreSQL in read-only sessions, no schema upgrade (an
    /// older Berth's database is refused: start this Berth's server on it once first).
    ///
    /// Copied: every blob (streamed, and hashed against its digest on the way), repositories,
    /// manifests, tags, users, projects, robots (their secrets keep working), identity
    /// providers, the audit log, and the settings with the registry's signing key (issued tokens
    /// and the admin login keep working). Not copied: uploads in progress (clients restart
    /// them) and failed-login counters.
    ///
    /// The source's server may keep running. A rerun copies only what changed, deletions
    /// included, and resumes an interrupted copy where it stopped. So: run it, stop the
    /// source's server, run it again (quick), then start Berth with the new URLs
    /// (metadata_url, storage_url). Every run ends with a verification: row counts of every
    /// table compared, every blob read back at the destination and hashed; a difference fails
    /// the command. --verify-only runs just that. --json prints the report as JSON.
    #[command(verbatim_doc_comment)]
    Migrate(migrate::MigrateArgs),
    /// Manage local users (works on the data folder directly).
    #[command(subcommand)]
    User(UserCommand),
    /// Print the effective configuration (file + environment + defaults) as TOML, without secrets.
    Config,
    /// Log in to a Berth server for the commands below and the credential helper: as a person
    /// through an identity provider (device flow: open the printed URL, confirm the code), or
    /// as a local user with a password. Saves a Berth token (never the password).
    ///
    ///   berth login https://registry.example.com --idp corp
    ///   echo "$PASSWORD" | berth login https://registry.example.com --username admin --password-stdin
    ///
    /// Scripts can skip this and set BERTH_SERVER with BERTH_TOKEN (a personal access token) or
    /// BERTH_USERNAME and BERTH_PASSWORD.
    #[command(verbatim_doc_comment)]
    Login(remote::LoginArgs),
    /// Forget the saved login (and revoke its token at the server).
    Logout {
        /// The server (default: the current login).
        url: Option<String>,
    },
    /// Who am I at the server: name, identity provider, groups, role in each project, the token used.
    Whoami,
    /// Manage projects (the first component of repository names).
    #[command(subcommand)]
    Project(remote::ProjectCommand),
    /// Manage robot accounts: federated (OIDC claim rules) or with a static secret.
    #[command(subcommand)]
    Robot(remote::RobotCommand),
    /// Manage trusted identity providers (GitHub Actions, GitLab CI, Forgejo, Kubernetes, any OIDC issuer).
    #[command(subcommand)]
    Idp(remote::IdpCommand),
    /// Apply a declarative file of projects, identity providers and robots (idempotent; GitOps).
    ///
    ///   berth apply -f berth.yaml      (or -f - for standard input; YAML or JSON)
    #[command(verbatim_doc_comment)]
    Apply {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: String,
    },
    /// Your personal access tokens (create, list, revoke), and `explain` for OIDC tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the audit log: token exchanges, logins, pulls, pushes and deletes.
    Audit(remote::AuditArgs),
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    #[command(flatten)]
    Mine(remote::UserTokenCommand),
    /// Explain why a token is accepted or refused: which identity provider it routes to, every
    /// verification step, and every rule of that provider's robots. Exits 1 when refused.
    ///
    ///   berth token explain "$TOKEN"      (or - to read it from standard input)
    #[command(verbatim_doc_comment)]
    Explain {
        /// The JWT, or - for standard input.
        token: String,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user or set its password, reading the password from standard input.
    ///
    ///   echo "$PASSWORD" | berth user set ci-bot
    Set {
        /// The user name.
        name: String,
        /// Make the user an administrator (may do everything).
        #[arg(long)]
        admin: bool,
        /// A local group of the user (repeatable; replaces the user's groups): projects whose
        /// member the group is apply to the user, like an identity provider's groups.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// List local users (name, admin, disabled; never their hashes). --json for JSON.
    List,
    /// Link a user to a person at an identity provider (by the `sub` of their ID tokens): a
    /// user created before their first login (providers that do not onboard by themselves), or
    /// one whose account moved to another provider (memberships, tokens and audit history stay).
    ///
    ///   berth user link alice --idp corp --subject 5f3c9a2e-8f1b-4c55-9d0a-1b2c3d4e5f60
    #[command(verbatim_doc_comment)]
    Link {
        /// The user name (created if it does not exist).
        name: String,
        /// The identity provider (`berth idp list`); it needs a login section.
        #[arg(long)]
        idp: String,
        /// The person's `sub` at that provider (the audit log and `berth whoami` show it).
        #[arg(long)]
        subject: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Disable a user: it can no longer log in (its password is kept). Refused for the last
    /// enabled admin.
    Disable { name: String },
    /// Enable a disabled user again.
    Enable { name: String },
    /// Delete a user. Refused for the last enabled admin.
    Delete { name: String },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AnonymousArg {
    Off,
    Pull,
    ReadWrite,
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log_level));
    // Colours only for a person at a terminal: log files and journald get plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match cfg.log_format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => builder.init(),
    }
    let ignored = config::ignored_env();
    if !ignored.is_empty() {
        tracing::warn!(ignored = %ignored.join(", "), "ignoring environment variables that are not Berth settings (see docs/configuration.md)");
    }
}

/// The backends the configuration chooses: `metadata_url` and `storage_url`, each defaulting to
/// the embedded store under `data_dir`.
fn engines(cfg: &Config) -> anyhow::Result<(MetadataEngine, BlobEngine)> {
    let meta = match &cfg.metadata_url {
        Some(url) => MetadataEngine::from_url(url, &cfg.metadata.pool())?,
        None => MetadataEngine::embedded(&cfg.data_dir),
    };
    let blobs = match &cfg.storage_url {
        Some(url) => {
            let ca_pem = match &cfg.storage.ca_file {
                Some(f) => Some(std::fs::read(f).with_context(|| format!("cannot read storage.ca_file {}", f.display()))?),
                None => None,
            };
            let base = berth_blob::S3Options {
                access_key_id: cfg.storage.access_key_id.clone(),
                secret_access_key: cfg.storage.secret_access_key.clone(),
                session_token: cfg.storage.session_token.clone(),
                ca_pem,
                ..Default::default()
            };
            BlobEngine::from_url(url, &base)?
        }
        None => BlobEngine::embedded(&cfg.data_dir),
    };
    Ok((meta, blobs))
}

type Stores = (Arc<dyn MetadataStore>, Arc<dyn BlobStore>);

async fn open_stores(cfg: &Config) -> anyhow::Result<Stores> {
    let (meta, blobs) = engines(cfg)?;
    Ok((meta.open().await?, blobs.open().await?))
}

/// Opens the stores of an existing installation, for the offline commands (`gc`, `user`): a
/// folder or database without Berth's schema is refused rather than turned into an empty
/// installation.
async fn open_existing_stores(cfg: &Config) -> anyhow::Result<Stores> {
    let (meta, _) = engines(cfg)?;
    if !meta.exists().await? {
        match meta {
            MetadataEngine::Sqlite { .. } if cfg.metadata_url.is_none() => anyhow::bail!(
                "{} holds no Berth installation (no berth.db); pass the data folder of the server with --data-dir or BERTH_DATA_DIR \
                 (or data_dir in the --config file), or start `berth serve` once to create one",
                cfg.data_dir.display()
            ),
            _ => anyhow::bail!(
                "{} holds no Berth installation; pass the server's --metadata-url (or BERTH_METADATA_URL), or start `berth serve` once to create one",
                meta.describe()
            ),
        }
    }
    open_stores(cfg).await
}

/// `berth gc`'s progress: one line on stderr rewritten in place.
struct TerminalProgress;

impl gc::Progress for TerminalProgress {
    fn phase(&self, what: &str) {
        use std::io::Write as _;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2Kgarbage collection: {what}...");
        let _ = err.flush();
    }
    fn done(&self) {
        eprint!("\r\x1b[2K");
    }
}

/// Applies `limits.password_hash_memory_kib` to the hashes this process makes.
fn set_hash_memory(cfg: &Config) -> anyhow::Result<()> {
    berth_identity::password::set_hash_memory_kib(cfg.limits.password_hash_memory_kib)
        .map_err(|e| anyhow::anyhow!("invalid configuration: limits.password_hash_memory_kib: {e}"))
}

/// The user `admin` as the bootstrap creates it.
fn new_admin(password_hash: String) -> UserRecord {
    UserRecord { name: "admin".into(), password_hash, admin: true, created_at: berth_identity::clock::now_secs(), ..UserRecord::default() }
}

/// Creates `admin` on first start; applies BERTH_ADMIN_PASSWORD when it is set.
async fn bootstrap_admin(meta: &dyn MetadataStore, configured: Option<&str>, listen: &str) -> anyhow::Result<()> {
    let existing = meta.get_user("admin").await?;
    match (existing, configured) {
        (Some(user), Some(pw)) => {
            let (pw2, hash) = (pw.to_owned(), user.password_hash.clone());
            let same = tokio::task::spawn_blocking(move || berth_identity::password::verify(&pw2, &hash)).await?;
            if !same {
                let hash = berth_identity::password::hash(pw).map_err(anyhow::Error::msg)?;
                meta.put_user(&UserRecord { password_hash: hash, admin: true, ..user }).await?;
                tracing::info!("admin password reset from the configuration");
            }
        }
        (Some(_), None) => {}
        (None, Some(pw)) => {
            let hash = berth_identity::password::hash(pw).map_err(anyhow::Error::msg)?;
            meta.put_user(&new_admin(hash)).await?;
            tracing::info!("created user admin with the configured password");
        }
        (None, None) => {
            // Replicas starting together on one new database: the first to store its hash in
            // this setting creates the user and prints the password; the others print nothing.
            // The setting stays, so a later start without the user (deleted by another admin)
            // never re-creates it silently: it says how to create one.
            let pw = berth_identity::password::generate();
            let hash = berth_identity::password::hash(&pw).map_err(anyhow::Error::msg)?;
            if meta.init_setting("bootstrap_admin_hash", &hash).await? != hash {
                for _ in 0..20 {
                    if meta.get_user("admin").await?.is_some() {
                        tracing::info!("another replica created the user admin and printed its password");
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                tracing::warn!("there is no user admin; set BERTH_ADMIN_PASSWORD to create it");
                return Ok(());
            }
            meta.put_user(&new_admin(hash)).await?;
            println!("==================================================================");
            println!(" Berth created the user \"admin\" with this generated password:");
            println!();
            println!("     {pw}");
            println!();
            println!(" It is shown only this once and stored only as an argon2 hash.");
            println!(" Log in with:  skopeo login --tls-verify=false -u admin {listen}");
            println!(" To choose it yourself, set BERTH_ADMIN_PASSWORD.");
            println!("==================================================================");
        }
    }
    Ok(())
}

fn load_tls(files: &berth_server::TlsFiles) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(&files.cert).with_context(|| format!("cannot read TLS certificate {}", files.cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("{} is not a PEM certificate chain", files.cert.display()))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(&files.key).with_context(|| format!("cannot read TLS key {}", files.key.display()))?,
    ))
    .with_context(|| format!("{} is not a PEM private key", files.key.display()))?
    .with_context(|| format!("{} holds no private key", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol setup")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match or are unsupported")?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested");
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    set_hash_memory(&cfg)?;
    raise_fd_limit();
    let (meta_engine, blob_engine) = engines(&cfg)?;
    let (meta, blobs) = (meta_engine.open().await?, blob_engine.open().await?);
    if cfg.storage.redirect && matches!(blob_engine, BlobEngine::Filesystem { .. }) {
        tracing::warn!("storage.redirect is on, but blobs are in a folder: Berth serves them itself (redirects need S3)");
    }
    // Bound before the first-start banner, so it names the real port (also with port 0).
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| {
        format!("cannot listen on {}: is another process using it? Choose another with --listen or BERTH_LISTEN", cfg.listen)
    })?;
    let bound = listener.local_addr()?;
    let listen_text = cfg.external_url.clone().unwrap_or_else(|| bound.to_string());
    bootstrap_admin(&*meta, cfg.admin_password.as_deref(), &listen_text).await?;
    let key = meta.init_setting("registry_signing_key", &generate_signing_key()?).await?;
    let tokens = Arc::new(TokenIssuer::new(&key, "berth", &cfg.service, cfg.token_ttl)?);
    let tls = cfg.tls.as_ref().map(load_tls).transpose()?;
    let state = AppState::new(
        meta.clone(),
        blobs.clone(),
        tokens,
        ServerConfig {
            external_url: cfg.external_url.clone(),
            service: cfg.service.clone(),
            anonymous: cfg.anonymous,
            tls: tls.is_some(),
            limits: cfg.limits.clone(),
            blob_redirect: cfg.storage.redirect.then_some(cfg.storage.redirect_ttl),
            people: cfg.tokens.people(),
            gc: gc::GcSettings { grace: cfg.gc.grace, upload_ttl: cfg.gc.upload_ttl, audit_retention: cfg.gc.audit_retention },
        },
    );
    let audit = state.audit().clone();
    if !cfg.identity_providers.is_empty() {
        // The configuration file's providers, applied like `berth apply` (one transaction,
        // idempotent: replicas starting together all apply the same).
        let doc = berth_core::admin::types::ApplyDocument { identity_providers: cfg.identity_providers.clone(), ..Default::default() };
        let report = state.core.apply(&doc).await.context("applying the identity providers of the configuration file")?;
        for c in report.changes {
            tracing::info!(provider = %c.name, action = %c.action, "identity provider from the configuration file");
        }
    }
    // People with a refresh token are re-checked at their identity provider in the background
    // (every replica runs this; a session is checked by whichever gets to it).
    {
        let core = state.core.clone();
        tokio::spawn(async move {
            // The period follows the providers' settings as they change (looked up in memory
            // every second); a round queries the store only when it is due.
            let mut last = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                if last.elapsed() < core.recheck_period().await {
                    continue;
                }
                last = tokio::time::Instant::now();
                if let Err(e) = core.recheck_people(100).await {
                    tracing::warn!(error = %e, "re-checking people at their identity providers failed");
                }
            }
        });
    }
    let metrics_app = berth_server::metrics_app(state.clone());
    let app = berth_server::app(state);
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        url = format!("{scheme}://{}", listener.local_addr()?),
        metadata = meta_engine.describe(),
        storage = blob_engine.describe(),
        anonymous = cfg.anonymous.as_str(),
        "Berth is listening"
    );
    // One shutdown signal for every listener.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let metrics = match cfg.metrics_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} for metrics: is another process using it? Choose another metrics_listen (BERTH_METRICS_LISTEN)")
            })?;
            tracing::info!(url = format!("http://{}/metrics", l.local_addr()?), "metrics are served without authentication here");
            let (grace, rx) = (cfg.shutdown_grace, stop_rx.clone());
            Some(tokio::spawn(async move { berth_server::serve(l, metrics_app, None, stopped(rx), grace).await }))
        }
        None => None,
    };
    if let Some(every) = cfg.gc.interval {
        let (meta, blobs, gc_cfg) = (meta.clone(), blobs.clone(), cfg.gc.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let settings = gc::GcSettings { grace: gc_cfg.grace, upload_ttl: gc_cfg.upload_ttl, audit_retention: gc_cfg.audit_retention };
                if let Err(e) = gc::collect(&*meta, &*blobs, settings, &gc::Quiet).await {
                    tracing::error!(error = %e, "scheduled garbage collection failed");
                }
            }
        });
    }
    berth_server::serve_with(listener, app, tls, stopped(stop_rx), cfg.shutdown_grace, cfg.limits.clone()).await?;
    if let Some(m) = metrics {
        match m.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the metrics listener failed"),
            Err(e) => tracing::warn!(error = %e, "the metrics listener failed"),
        }
    }
    audit.flush().await;
    tracing::info!("Berth stopped");
    Ok(())
}

/// Raises the soft limit on open files to the hard limit: every client connection, blob
/// transfer and database file holds a descriptor, and distributions' default soft limit (1024)
/// is reached by a few hundred CI jobs.
fn raise_fd_limit() {
    #[cfg(unix)]
    {
        let before = rlimit::Resource::NOFILE.get().map(|(soft, _)| soft).unwrap_or(0);
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(now) => tracing::info!(before, now, "open-file limit (soft) raised to the hard limit"),
            Err(e) => tracing::warn!(error = %e, before, "cannot raise the open-file limit; raise it with `ulimit -n` or systemd's LimitNOFILE="),
        }
    }
}

/// The offline user commands, on the data folder directly (the server need not run; a running
/// server sees the change at once: user changes move the federation generation).
async fn user(cfg: &Config, cmd: UserCommand, json: bool) -> anyhow::Result<()> {
    set_hash_memory(cfg)?;
    match cmd {
        UserCommand::Set { name, admin, groups } => {
            let mut pw = String::new();
            std::io::stdin().read_line(&mut pw).context("reading the password from standard input")?;
            let pw = pw.trim_end_matches(['\r', '\n']);
            if pw.chars().count() < 8 {
                anyhow::bail!("the password must have at least 8 characters (read from standard input)");
            }
            let (meta, _) = open_existing_stores(cfg).await?;
            let hash = berth_identity::password::hash(pw).map_err(anyhow::Error::msg)?;
            // An existing user keeps everything else (disabled, its OpenID identity, groups, times).
            let mut user = match meta.get_user(&name).await? {
                Some(u) => UserRecord { password_hash: hash, admin, ..u },
                None => UserRecord { name: name.clone(), password_hash: hash, admin, created_at: berth_identity::clock::now_secs(), ..UserRecord::default() },
            };
            if !groups.is_empty() {
                if let Some(i) = &user.identity {
                    anyhow::bail!("user {name} logs in through identity provider {}: their groups come from it at every login", i.provider);
                }
                user.groups = berth_core::admin::validate_local_groups(groups).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let disabled = user.disabled;
            meta.put_user(&user).await?;
            println!("user {name} saved{}{}", if admin { " (admin)" } else { "" }, if disabled { " (still disabled: berth user enable)" } else { "" });
        }
        UserCommand::List => {
            let (meta, _) = open_existing_stores(cfg).await?;
            let users = meta.list_users().await?;
            if json {
                let list: Vec<berth_server::api::types::UserView> = users.iter().map(berth_core::admin::user_view).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for u in users {
                    let flags = [u.admin.then_some("admin"), u.disabled.then_some("disabled")];
                    // People from an identity provider: the provider and subject after a tab.
                    let who = u.identity.as_ref().map(|i| format!("\t{} {}", i.provider, i.subject)).unwrap_or_default();
                    println!("{}\t{}{who}", u.name, flags.into_iter().flatten().collect::<Vec<_>>().join(","));
                }
            }
        }
        UserCommand::Link { name, idp, subject, admin } => {
            let (meta, _) = open_existing_stores(cfg).await?;
            let rec = meta.get_identity_provider(&idp).await?.with_context(|| format!("there is no identity provider {idp:?} (berth idp list shows them)"))?;
            let spec: berth_identity::federation::ProviderSpec = serde_json::from_value(rec.config).context("the stored identity provider is not readable")?;
            let provider = spec.resolve().map_err(|e| anyhow::anyhow!("identity provider {idp:?} is invalid: {e}"))?;
            if provider.login.is_none() {
                anyhow::bail!("identity provider {idp:?} has no login section: people cannot log in through it (berth idp update ... --client-id)");
            }
            let identity = berth_meta::UserIdentity { provider: idp.clone(), issuer: provider.issuer.clone(), subject: subject.clone() };
            let user = match meta.get_user(&name).await? {
                Some(u) => UserRecord { identity: Some(identity), admin: admin || u.admin, ..u },
                None => UserRecord { name: name.clone(), admin, identity: Some(identity), created_at: berth_core::clock::now_secs(), ..Default::default() },
            };
            meta.put_user(&user).await?;
            println!("user {name} is now {subject} at identity provider {idp}: they log in through it and keep their memberships and tokens");
        }
        UserCommand::Disable { name } => set_user_disabled(cfg, &name, true).await?,
        UserCommand::Enable { name } => set_user_disabled(cfg, &name, false).await?,
        UserCommand::Delete { name } => {
            let (meta, _) = open_existing_stores(cfg).await?;
            if !meta.delete_user(&name).await? {
                anyhow::bail!("there is no user {name:?} (berth user list shows them)");
            }
            println!("user {name} deleted");
        }
    }
    Ok(())
}

async fn set_user_disabled(cfg: &Config, name: &str, disabled: bool) -> anyhow::Result<()> {
    let (meta, _) = open_existing_stores(cfg).await?;
    let user = meta.get_user(name).await?.with_context(|| format!("there is no user {name:?} (berth user list shows them)"))?;
    meta.put_user(&UserRecord { disabled, ..user }).await?;
    println!("user {name} {}", if disabled { "disabled" } else { "enabled" });
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut cfg = Config::load(cli.config.as_deref())?;
    if let Some(d) = cli.data_dir {
        cfg.data_dir = d;
    }
    if let Some(u) = cli.metadata_url {
        cfg.metadata_url = Some(u);
    }
    if let Some(u) = cli.storage_url {
        cfg.storage_url = Some(u);
    }
    match cli.command {
        Command::Serve { listen, anonymous, log_format } => {
            if let Some(l) = listen {
                cfg.listen = l;
            }
            if let Some(a) = anonymous {
                cfg.anonymous = match a {
                    AnonymousArg::Off => AnonymousAccess::Off,
                    AnonymousArg::Pull => AnonymousAccess::Pull,
                    AnonymousArg::ReadWrite => AnonymousAccess::ReadWrite,
                };
            }
            if let Some(f) = log_format {
                cfg.log_format = f;
            }
            init_logging(&cfg);
            serve(cfg).await
        }
        Command::Gc { grace, upload_ttl } => {
            init_logging(&cfg);
            let (meta, blobs) = open_existing_stores(&cfg).await?;
            let progress: &dyn gc::Progress = if std::io::stderr().is_terminal() { &TerminalProgress } else { &gc::Quiet };
            let settings = gc::GcSettings {
                grace: grace.unwrap_or(cfg.gc.grace),
                upload_ttl: upload_ttl.unwrap_or(cfg.gc.upload_ttl),
                audit_retention: cfg.gc.audit_retention,
            };
            let s = gc::collect(&*meta, &*blobs, settings, progress).await?;
            if cli.remote.json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                println!(
                    "garbage collection: {} blobs removed, {} repository links removed, {} stale uploads removed, {} orphaned objects and {} orphaned upload files removed, {} audit events past retention removed",
                    s.blobs_removed, s.repository_links_removed, s.stale_uploads_removed, s.orphaned_objects_removed, s.orphaned_upload_data_removed, s.audit_events_removed
                );
            }
            Ok(())
        }
        Command::Migrate(args) => {
            // PostgreSQL's notices (a destination's schema already there) would cut through the progress.
            let mut quiet_notices = cfg.clone();
            quiet_notices.log_level = format!("{},sqlx::postgres::notice=warn", cfg.log_level);
            init_logging(&quiet_notices);
            migrate::run(&cfg, args, cli.remote.json).await
        }
        Command::User(cmd) => user(&cfg, cmd, cli.remote.json).await,
        Command::Config => {
            let ignored = config::ignored_env();
            if !ignored.is_empty() {
                eprintln!("warning: ignoring environment variables that are not Berth settings: {} (see docs/configuration.md)", ignored.join(", "));
            }
            print!("{}", cfg.to_toml());
            Ok(())
        }
        Command::Login(a) => remote::login(&cli.remote, &a).await,
        Command::Logout { url } => remote::logout(&cli.remote, url.as_deref()).await,
        Command::Whoami => remote::whoami(&cli.remote).await,
        Command::Project(c) => remote::project(&cli.remote, c).await,
        Command::Robot(c) => remote::robot(&cli.remote, c).await,
        Command::Idp(c) => remote::idp(&cli.remote, c).await,
        Command::Apply { file } => remote::apply(&cli.remote, &file).await,
        Command::Token(TokenCommand::Explain { token }) => remote::explain(&cli.remote, &token).await,
        Command::Token(TokenCommand::Mine(c)) => remote::user_token(&cli.remote, c).await,
        Command::Audit(a) => remote::audit(&cli.remote, &a).await,
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Each running blob transfer holds a blocking thread (file IO + hashing); allow many slow clients.
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(4096).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
