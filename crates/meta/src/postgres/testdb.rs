//! Fresh PostgreSQL databases for tests: one per test, created on the test server and dropped
//! afterwards, so that tests never see each other's rows. Compiled for this crate's tests and,
//! with the cargo feature `testsuite`, for other crates' tests; never in release binaries.
//!
//! The server is `$BERTH_TEST_POSTGRES_URL` when the caller sets it, else the URL that
//! `scripts/postgres.sh` (which `scripts/test.sh` runs) wrote to `<repo>/target/test-postgres.url`.
//! Its role must be allowed to create databases. `scripts/test.sh` does not export the variable:
//! Berth reads every `BERTH_*` variable as configuration and refuses unknown ones, and some tests
//! start the binary with the inherited environment. Without either, these tests fail and say how
//! to start the server: under `scripts/test.sh` (CI) they always run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};

use super::{PostgresOptions, PostgresStore};

/// The variable that overrides the URL file.
pub const URL_VAR: &str = "BERTH_TEST_POSTGRES_URL";

/// Where `scripts/postgres.sh` writes the test server's URL.
pub fn url_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-postgres.url")
}

/// The test server's URL (a role that may `CREATE DATABASE`). Panics, saying what to run, when
/// there is none.
pub fn server_url() -> String {
    if let Some(url) = std::env::var(URL_VAR).ok().map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()) {
        return url;
    }
    match std::fs::read_to_string(url_file()) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => panic!(
            "no PostgreSQL server for the tests: run ./scripts/test.sh (the project's test command), or \
             scripts/postgres.sh (installs and starts one on 127.0.0.1 and writes its URL to {}), or set {URL_VAR} \
             to a server whose role may CREATE DATABASE",
            url_file().display()
        ),
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEPT: AtomicBool = AtomicBool::new(false);

/// A database of its own for one test.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    admin: String,
    url: String,
}

impl TestDb {
    /// Creates an empty database (no schema: the store's migrations make it).
    pub async fn create() -> TestDb {
        let admin = server_url();
        let mut conn = admin_connection(&admin).await;
        if !SWEPT.swap(true, Ordering::SeqCst) {
            sweep(&mut conn).await;
        }
        let name = format!("berth_t_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        if let Err(e) = conn.execute(format!("CREATE DATABASE {name}").as_str()).await {
            panic!("creating the test database {name} on {}: {e}", PostgresOptions::new(admin.clone()).redacted());
        }
        let _ = conn.close().await;
        TestDb { url: with_database(&admin, &name), name, admin }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Store options for it: the defaults with a small pool (tests run in parallel).
    pub fn options(&self) -> PostgresOptions {
        PostgresOptions { max_connections: 8, min_connections: 0, ..PostgresOptions::new(self.url.clone()) }
    }

    /// A store on it (migrating it on first use).
    pub async fn store(&self) -> PostgresStore {
        match PostgresStore::connect(&self.options()).await {
            Ok(store) => store,
            Err(e) => panic!("connecting to the test database: {e}"),
        }
    }

    /// A plain connection to it (for raw statements).
    pub async fn connection(&self) -> PgConnection {
        admin_connection(&self.url).await
    }

    /// Drops the database (closing whatever is still connected to it).
    pub async fn drop(self) {
        let mut conn = admin_connection(&self.admin).await;
        if let Err(e) = conn.execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str()).await {
            eprintln!("warning: dropping the test database {}: {e}", self.name);
        }
        let _ = conn.close().await;
    }
}

async fn admin_connection(url: &str) -> PgConnection {
    match PgConnection::connect(url).await {
        Ok(conn) => conn,
        Err(e) => panic!(
            "cannot connect to the test PostgreSQL server ({}): {e}; run scripts/postgres.sh to (re)start it",
            PostgresOptions::new(url).redacted()
        ),
    }
}

/// Drops the databases that earlier test processes left behind (a test that panicked before
/// dropping its own): `berth_t_<pid>_<n>` whose process is gone. Linux only (`/proc`).
async fn sweep(conn: &mut PgConnection) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'berth\\_t\\_%'").fetch_all(&mut *conn).await.unwrap_or_default();
    for name in names {
        let Some(pid) = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
        }
    }
}

/// `url` with its database replaced by `name` (its parameters kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority..].find('/') {
        Some(i) => &base[..authority + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

#[cfg(test)]
mod unit {
    use super::with_database;

    #[test]
    fn database_replaced_in_urls() {
        for (url, want) in [
            ("postgres://berth@127.0.0.1:54329/berth_test", "postgres://berth@127.0.0.1:54329/t1"),
            ("postgres://u:p@h/db?sslmode=disable", "postgres://u:p@h/t1?sslmode=disable"),
            ("postgres://u@h:1", "postgres://u@h:1/t1"),
            ("postgresql://u@h:1?application_name=x", "postgresql://u@h:1/t1?application_name=x"),
        ] {
            assert_eq!(with_database(url, "t1"), want, "{url}");
        }
    }
}
