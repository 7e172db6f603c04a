//! `berth`: the registry binary. It only wires things together: configuration, logging, the
//! stores, the bootstrap admin and signing key, the HTTP server, and the offline commands.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_blob::FsBlobStore;
use berth_identity::token::generate_signing_key;
use berth_identity::TokenIssuer;
use berth_meta::{MetadataStore, SqliteStore, UserRecord};
use berth_server::{AnonymousAccess, AppState, ServerConfig};
use clap::{Parser, Subcommand};
use config::{Config, LogFormat};

mod config;
mod gc;
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
    /// its manifest loses nothing.
    Gc {
        /// Keep unreferenced content younger than this (e.g. "30m"). Overrides `gc.grace`.
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<Duration>,
        /// Remove upload sessions idle longer than this. Overrides `gc.upload_ttl`.
        #[arg(long, value_parser = humantime::parse_duration)]
        upload_ttl: Option<Duration>,
    },
    /// Manage local users (works on the data folder directly).
    #[command(subcommand)]
    User(UserCommand),
    /// Print the effective configuration (file + environment + defaults) as TOML, without secrets.
    Config,
    /// Save the server and admin credentials for the commands below (checks them first).
    ///
    ///   echo "$PASSWORD" | berth login --server https://registry.example.com --username admin --password-stdin
    ///
    /// Scripts can skip this and set BERTH_SERVER, BERTH_USERNAME and BERTH_PASSWORD.
    #[command(verbatim_doc_comment)]
    Login(remote::LoginArgs),
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
    /// Work with OIDC tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the audit log: token exchanges, logins, pulls, pushes and deletes.
    Audit(remote::AuditArgs),
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
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
    },
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
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => builder.init(),
    }
    let ignored = config::ignored_env();
    if !ignored.is_empty() {
        tracing::warn!(?ignored, "ignoring environment variables that are not Berth settings (see docs/configuration.md)");
    }
}

async fn open_stores(cfg: &Config) -> anyhow::Result<(Arc<SqliteStore>, Arc<FsBlobStore>)> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create the data folder {}; set data_dir or BERTH_DATA_DIR to a writable folder", cfg.data_dir.display()))?;
    let db = cfg.data_dir.join("berth.db");
    let meta = SqliteStore::open(&db).await.with_context(|| format!("cannot open the metadata database {}", db.display()))?;
    let blobs = FsBlobStore::open(cfg.data_dir.clone()).with_context(|| format!("cannot open blob storage in {}", cfg.data_dir.display()))?;
    Ok((Arc::new(meta), Arc::new(blobs)))
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
            meta.put_user(&UserRecord { name: "admin".into(), password_hash: hash, admin: true, disabled: false }).await?;
            tracing::info!("created user admin with the configured password");
        }
        (None, None) => {
            let pw = berth_identity::password::generate();
            let hash = berth_identity::password::hash(&pw).map_err(anyhow::Error::msg)?;
            meta.put_user(&UserRecord { name: "admin".into(), password_hash: hash, admin: true, disabled: false }).await?;
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
    let (meta, blobs) = open_stores(&cfg).await?;
    let listen_text = cfg.external_url.clone().unwrap_or_else(|| cfg.listen.to_string());
    bootstrap_admin(&*meta, cfg.admin_password.as_deref(), &listen_text).await?;
    let key = meta.init_setting("registry_signing_key", &generate_signing_key()?).await?;
    let tokens = Arc::new(TokenIssuer::new(&key, "berth", &cfg.service, cfg.token_ttl)?);
    let tls = cfg.tls.as_ref().map(load_tls).transpose()?;
    let state = AppState::new(
        meta.clone(),
        blobs.clone(),
        tokens,
        ServerConfig { external_url: cfg.external_url.clone(), service: cfg.service.clone(), anonymous: cfg.anonymous, tls: tls.is_some(), limits: berth_server::Limits::default() },
    );
    let audit = state.audit.clone();
    let app = berth_server::app(state);
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| {
        format!("cannot listen on {}: is another process using it? Choose another with --listen or BERTH_LISTEN", cfg.listen)
    })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        url = format!("{scheme}://{}", listener.local_addr()?),
        data_dir = %cfg.data_dir.display(),
        anonymous = ?cfg.anonymous,
        "Berth is listening"
    );
    if let Some(every) = cfg.gc.interval {
        let (meta, blobs, gc_cfg) = (meta.clone(), blobs.clone(), cfg.gc.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = gc::collect(&*meta, &*blobs, gc_cfg.grace, gc_cfg.upload_ttl, gc_cfg.audit_retention).await {
                    tracing::error!(error = %e, "scheduled garbage collection failed");
                }
            }
        });
    }
    berth_server::serve(listener, app, tls, shutdown_signal(), cfg.shutdown_grace).await?;
    audit.flush().await;
    tracing::info!("Berth stopped");
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut cfg = Config::load(cli.config.as_deref())?;
    if let Some(d) = cli.data_dir {
        cfg.data_dir = d;
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
            let (meta, blobs) = open_stores(&cfg).await?;
            let s = gc::collect(&*meta, &*blobs, grace.unwrap_or(cfg.gc.grace), upload_ttl.unwrap_or(cfg.gc.upload_ttl), cfg.gc.audit_retention).await?;
            println!(
                "garbage collection: {} blobs removed, {} repository links removed, {} stale uploads removed, {} orphaned objects and {} orphaned upload files removed, {} audit events past retention removed",
                s.blobs_removed, s.repository_links_removed, s.stale_uploads_removed, s.orphaned_objects_removed, s.orphaned_upload_data_removed, s.audit_events_removed
            );
            Ok(())
        }
        Command::User(UserCommand::Set { name, admin }) => {
            let mut pw = String::new();
            std::io::stdin().read_line(&mut pw).context("reading the password from standard input")?;
            let pw = pw.trim_end_matches(['\r', '\n']);
            if pw.len() < 8 {
                anyhow::bail!("the password must have at least 8 characters (read from standard input)");
            }
            let (meta, _) = open_stores(&cfg).await?;
            let hash = berth_identity::password::hash(pw).map_err(anyhow::Error::msg)?;
            meta.put_user(&UserRecord { name: name.clone(), password_hash: hash, admin, disabled: false }).await?;
            println!("user {name} saved{}", if admin { " (admin)" } else { "" });
            Ok(())
        }
        Command::Config => {
            print!("{}", cfg.to_toml());
            Ok(())
        }
        Command::Login(a) => remote::login(&cli.remote, &a).await,
        Command::Project(c) => remote::project(&cli.remote, c).await,
        Command::Robot(c) => remote::robot(&cli.remote, c).await,
        Command::Idp(c) => remote::idp(&cli.remote, c).await,
        Command::Apply { file } => remote::apply(&cli.remote, &file).await,
        Command::Token(TokenCommand::Explain { token }) => remote::explain(&cli.remote, &token).await,
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
