//! The PostgreSQL backend of [`MetadataStore`], for several Berth replicas on one database.
//!
//! [`PostgresStore::connect`] opens one connection first (so an unreachable server, a refused
//! login or a missing database is a one-line error naming `user@host:port/database`, never the
//! password), applies the migrations of `migrations/postgres` on it (sqlx takes a session
//! advisory lock for that, so replicas starting together apply them once; that connection is then
//! closed, which also releases the lock if a migration failed), then builds the pool
//! ([`PostgresOptions`]: size, acquire timeout, idle time and lifetime of connections, a statement
//! timeout). The pool checks a connection before lending it, so after a database restart the
//! requests in flight fail and the next ones get fresh connections: no restart of Berth.
//!
//! # Isolation and locks
//!
//! Every connection runs at READ COMMITTED (set per connection, whatever the server's default;
//! every transaction also begins with `BEGIN ISOLATION LEVEL READ COMMITTED`): each statement
//! sees what was committed before it started, and a statement that must wait for a row lock
//! re-checks its conditions on the row's newest version (PostgreSQL's EvalPlanQual) before it
//! writes. On that, the trait's atomicity promises are kept with these tools:
//!
//! - **One statement** where one statement is enough: the claim on an upload is a conditional
//!   `UPDATE .. WHERE lease free AND offset = expected RETURNING ..` (of N concurrent claims, the
//!   first to lock the row wins, the others re-check against its lease and match nothing); renew
//!   and release are compare-and-set `UPDATE`s on the lease token; failed-login counts are
//!   `INSERT .. ON CONFLICT DO UPDATE SET count = count + 1 RETURNING count`; creating a robot,
//!   an identity provider or a project is `INSERT .. ON CONFLICT DO NOTHING` (exactly one of
//!   concurrent creates inserts; the others wait for it and then do nothing).
//! - **Row locks taken by pushes on what they depend on**, and **lock-then-recheck in garbage
//!   collection**. A `put_manifest` locks the repository links of every blob it references
//!   (`FOR NO KEY UPDATE`, in digest order, while touching their last-used time) and its child
//!   manifests (`FOR KEY SHARE`) before it checks they exist and writes; `commit_blob` locks the
//!   blob record by its upsert; `mount_blob` locks the source link and blob (`FOR KEY SHARE`).
//!   Garbage collection finds candidates without locks, then per batch of 500 locks them
//!   (`FOR UPDATE SKIP LOCKED`: a row a push holds is in use and simply skipped), and re-checks
//!   "no manifest references this link" / "no link to this blob" in the *next* statement, whose
//!   snapshot is taken after the locks were granted: every push that held one of those rows has
//!   committed by then and its references are seen, and every push that comes later waits for
//!   the collection's commit and then finds the row gone (a `put_manifest` answers `Missing`, a
//!   mount `None`, a `commit_blob` inserts a fresh record under its new key). So a push never
//!   loses a blob it linked or referenced. A single `DELETE .. WHERE NOT EXISTS (..)` would not
//!   do: its re-check after waiting sees the row's newest version but evaluates the sub-query on
//!   its old snapshot (the test `collection_on_one_replica_never_takes_a_pushed_blob` fails with
//!   it: a stored manifest's blob loses its link).
//! - **One lock for the federation state**: every write to projects, members, robots, identity
//!   providers or users (a login's `update_user_login` included) and every deletion of a user's
//!   tokens first locks the single `federation_generation` row (`FOR UPDATE`), which it bumps in
//!   the same transaction when it changed something. Those writes are rare, so serialising them
//!   costs nothing, and it makes the cross-row rules exact under concurrency: the "last enabled
//!   admin" check (two replicas each disabling one of two admins cannot both pass it), one user
//!   per OpenID identity (checked, then written), the references a robot needs (no project is
//!   deleted between the check and the insert), `apply`'s compare-with-stored, a login's "did
//!   the groups change", and one bump per change. Nothing else takes that lock, and
//!   `federation_generation()` is a plain read that never waits for it.
//! - **Tokens and logins in progress**: `create_token` checks its user and parent and inserts
//!   (`ON CONFLICT DO NOTHING` on the id); a delete of either that comes between is caught by the
//!   insert's foreign-key check, which waits for it. `put_auth_request` takes a transaction-level
//!   advisory lock of its own, so the puts of every replica run one at a time and the bound on
//!   pending requests is exact; `take_auth_request` is one `DELETE .. RETURNING` (of concurrent
//!   takers the first deletes the row, the others re-check it after waiting and find it gone).
//!
//! SERIALIZABLE would also be correct, but it needs every transaction retried on serialization
//! failures, and its predicate locks on the hot paths (every manifest put reads links) make
//! concurrent pushes abort each other for conflicts that do not matter; explicit locks make the
//! conflicts exactly the ones that do. Lock order is fixed (links in digest order, tags in name
//! order, a manifest before its tags, the generation row before any federation row), and a
//! transaction that still fails with a deadlock or serialization failure (40P01, 40001) is
//! retried a few times from the start.
//!
//! # Schema and queries
//!
//! Every hot-path lookup is one statement made of unique-index probes: `repo_blob` and
//! `get_manifest` (repository by name, then link, tag or manifest by (repository, key), then the
//! record; lateral sub-queries fix that order, whatever the planner's averages say about popular
//! layers or large repositories), `list_tags` and `list_repositories` pages (keyset pagination on
//! `"C"`-collated names, `name > $last ORDER BY name LIMIT $n`, walking the index in order and
//! stopping when the page is full; never OFFSET), referrers (a partial index on subjects),
//! uploads by id, audit queries newest first by index. The test `hot_paths_use_indexes` loads
//! tens of thousands of rows and asserts from `EXPLAIN` that none of these scans a table and that
//! listings do not sort (`--nocapture` prints the plans).
//!
//! sqlx's errors stay inside this module: the trait's [`MetaError`] carries their text only.
//! Text columns cannot hold U+0000 in PostgreSQL; a write containing it is a
//! [`MetaError::Conflict`] saying so. TLS to the server is not compiled in yet (sqlx's
//! `sslmode=prefer`, the default, falls back to plain TCP; `sslmode=require` is refused).

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use berth_oci::{Digest, Reference, RepoName, Tag};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, QueryBuilder, Row, Transaction};

use crate::{
    identity_taken, normalized_groups, too_many_logins, wait_for_parents, ApplyAction, ApplyBatch, ApplyOutcome, AuditEvent, AuditQuery, AuthRequest, BlobCommit,
    BlobExport, BlobLinkExport, BlobRecord, DeleteOutcome, ExportRow, GcReport, IdentityProviderRecord, ImportOutcome, ManifestExport, ManifestRecord, MemberRecord,
    MetaError, MetadataStore, NewManifest, Page, ProjectRecord, PruneOutcome, PutManifestOutcome, Referrer, Result, RobotRecord, RowCounts, RowKey, Table, TagExport,
    TokenKind, TokenRecord, UnixTime, UploadClaim, UploadRecord, UserIdentity, UserRecord, AUDIT_DEFAULT_LIMIT, AUDIT_MAX_LIMIT,
};

#[cfg(any(test, feature = "testsuite"))]
pub mod testdb;
#[cfg(test)]
mod tests;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Rows per garbage-collection batch (one short transaction each).
const GC_BATCH: i64 = 500;
/// Audit events deleted per statement by `prune_audit`.
const PRUNE_BATCH: i64 = 5000;
/// Robots named in an "in use" message (the rest are counted).
const IN_USE_NAMES: i64 = 5;
/// Expired tokens (each with its children) deleted per statement by `prune_tokens`.
const TOKEN_PRUNE_BATCH: i64 = 1000;
/// How often a transaction that failed with a deadlock or serialization failure is tried.
const TX_ATTEMPTS: u32 = 5;
/// The statement that begins every transaction.
const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// How to reach the database, and the pool's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// `postgres://user:password@host:port/database[?param=value...]` (libpq's URL form, as sqlx
    /// reads it). What the URL leaves out comes from libpq's variables (`PGHOST`, `PGPORT`,
    /// `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, ...), so the password can stay out of
    /// the URL; `~/.pgpass` is not read.
    pub url: String,
    /// Connections this process keeps at most (default 16). Replicas × this must stay below the
    /// server's `max_connections`.
    pub max_connections: u32,
    /// Connections kept open even when idle (default 1).
    pub min_connections: u32,
    /// How long a request waits for a free connection before it fails (default 10 s).
    pub acquire_timeout: Duration,
    /// How long [`PostgresStore::connect`] waits for the server's first answer (default 10 s).
    pub connect_timeout: Duration,
    /// Idle connections above `min_connections` are closed after this (default 10 min).
    pub idle_timeout: Option<Duration>,
    /// Connections are replaced after this (default 30 min), so that a failover or a
    /// configuration change on the server reaches every connection.
    pub max_lifetime: Option<Duration>,
    /// The server cancels a statement running longer, and ends a session that stays idle inside a
    /// transaction that long (default 60 s; None: the server's settings).
    pub statement_timeout: Option<Duration>,
}

impl PostgresOptions {
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;
    pub const DEFAULT_MIN_CONNECTIONS: u32 = 1;
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
    pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(1800);
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

    /// The defaults for `url`.
    pub fn new(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions {
            url: url.into(),
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            min_connections: Self::DEFAULT_MIN_CONNECTIONS,
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: Some(Self::DEFAULT_IDLE_TIMEOUT),
            max_lifetime: Some(Self::DEFAULT_MAX_LIFETIME),
            statement_timeout: Some(Self::DEFAULT_STATEMENT_TIMEOUT),
        }
    }

    /// `postgres user@host:port/database`: the URL without its password or parameters, for logs,
    /// errors and `/readyz`.
    pub fn redacted(&self) -> String {
        match PgConnectOptions::from_str(&self.url) {
            Ok(o) => describe(&o),
            Err(_) => "postgres (unparseable URL)".to_owned(),
        }
    }

    /// The connection options: the URL's, with Berth's session settings added.
    fn connect_options(&self) -> Result<PgConnectOptions> {
        let scheme = self.url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("postgres" | "postgresql")) {
            return Err(MetaError::Db(format!(
                "invalid PostgreSQL URL ({}): it must start with postgres:// or postgresql://",
                self.redacted()
            )));
        }
        let options = PgConnectOptions::from_str(&self.url)
            .map_err(|e| MetaError::Db(format!("invalid PostgreSQL URL ({}): {}", self.redacted(), one_line(&e.to_string()))))?;
        // The locking scheme of this module relies on READ COMMITTED (module docs); a server
        // whose default is stricter would turn waits into serialization failures. (A space in
        // an option value is escaped with a backslash.)
        let mut settings = vec![("default_transaction_isolation", "read\\ committed".to_owned())];
        if let Some(t) = self.statement_timeout {
            let ms = t.as_millis().max(1);
            settings.push(("statement_timeout", ms.to_string()));
            settings.push(("idle_in_transaction_session_timeout", ms.to_string()));
        }
        Ok(options.application_name("berth").options(settings))
    }
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &self.redacted())
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// `postgres user@host:port/database` (no password).
fn describe(o: &PgConnectOptions) -> String {
    let place = match o.get_socket() {
        Some(socket) => format!("{}:{}", socket.display(), o.get_port()),
        None => format!("{}:{}", o.get_host(), o.get_port()),
    };
    format!("postgres {}@{place}/{}", o.get_username(), o.get_database().unwrap_or(o.get_username()))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Why the first connection failed, in one line that says what to check.
/// One connection, within `connect_timeout`, with its options and `user@host:port/database`.
async fn first_connection(options: &PostgresOptions) -> Result<(PgConnection, PgConnectOptions, String)> {
    let connect = options.connect_options()?;
    let target = describe(&connect);
    let user = connect.get_username().to_owned();
    match tokio::time::timeout(options.connect_timeout, PgConnection::connect_with(&connect)).await {
        Err(_) => Err(MetaError::Db(format!("cannot reach PostgreSQL at {target}: no answer within {} s", options.connect_timeout.as_secs_f64()))),
        Ok(Err(e)) => Err(connect_error(&target, &user, e)),
        Ok(Ok(conn)) => Ok((conn, connect, target)),
    }
}

fn connect_error(target: &str, user: &str, e: sqlx::Error) -> MetaError {
    let msg = one_line(&e.to_string());
    if let Some(db) = e.as_database_error() {
        let detail = one_line(db.message());
        return MetaError::Db(match db.code().as_deref() {
            Some("28P01") => format!("{target}: PostgreSQL refused the password of user {user:?} ({detail})"),
            Some("28000") => format!("{target}: PostgreSQL refused the login of user {user:?} ({detail}; check pg_hba.conf)"),
            Some("3D000") => format!("{target}: {detail} (create it, or fix the URL)"),
            Some("53300") => format!("{target}: PostgreSQL has no free connection slot ({detail})"),
            _ => format!("{target}: PostgreSQL refused the connection: {detail}"),
        });
    }
    match e {
        sqlx::Error::Io(io) => MetaError::Db(format!("cannot reach PostgreSQL at {target}: {}", one_line(&io.to_string()))),
        sqlx::Error::Tls(_) => MetaError::Db(format!("{target}: TLS failed: {msg}")),
        _ => MetaError::Db(format!("cannot connect to PostgreSQL at {target}: {msg}")),
    }
}

/// An error inside this backend: sqlx's own (kept whole until the trait's edge, so that a
/// deadlock or serialization failure can be told apart and retried) or the store's.
#[derive(Debug)]
enum Failure {
    Sql(sqlx::Error),
    Meta(MetaError),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Failure {
        Failure::Sql(e)
    }
}

impl From<MetaError> for Failure {
    fn from(e: MetaError) -> Failure {
        Failure::Meta(e)
    }
}

impl From<Failure> for MetaError {
    fn from(f: Failure) -> MetaError {
        match f {
            Failure::Meta(e) => e,
            Failure::Sql(e) => sql_error(e),
        }
    }
}

/// sqlx's error as the trait's (the edge of this backend).
fn sql_error(e: sqlx::Error) -> MetaError {
    if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("22021") {
        return MetaError::Conflict(format!("PostgreSQL cannot store this text (it holds a NUL character?): {}", one_line(&e.to_string())));
    }
    let unavailable = match &e {
        // A connection cut mid-message shows as a protocol error too.
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections, and the
        // connection exceptions (08xxx).
        sqlx::Error::Database(d) => d.code().is_some_and(|c| matches!(&*c, "57P01" | "57P02" | "57P03" | "53300") || c.starts_with("08")),
        _ => false,
    };
    if unavailable {
        return MetaError::Unavailable(one_line(&e.to_string()));
    }
    MetaError::Db(one_line(&e.to_string()))
}

type R<T> = std::result::Result<T, Failure>;

/// A deadlock (40P01) or serialization failure (40001): the transaction was rolled back and may
/// simply run again.
fn is_transient(f: &Failure) -> bool {
    match f {
        Failure::Sql(e) => e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "40P01" || c == "40001"),
        Failure::Meta(_) => false,
    }
}

/// Runs `op` (one whole transaction) and runs it again from the start when it failed with a
/// deadlock or a serialization failure.
async fn retry<T, F, Fut>(what: &str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = R<T>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(f) if attempt < TX_ATTEMPTS && is_transient(&f) => {
                tracing::debug!(error = ?f, attempt, what, "metadata transaction conflicted, retrying");
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt * attempt))).await;
                attempt += 1;
            }
            outcome => return outcome.map_err(MetaError::from),
        }
    }
}

/// The PostgreSQL metadata store. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    target: String,
}

impl PostgresStore {
    /// Connects, applies pending migrations and builds the pool (see the module docs). Errors are
    /// one line naming `user@host:port/database` and what failed.
    pub async fn connect(options: &PostgresOptions) -> Result<PostgresStore> {
        let (mut conn, connect, target) = first_connection(options).await?;
        let migrated = MIGRATOR.run(&mut conn).await;
        // Closing the connection also ends the migrator's advisory lock if a migration failed.
        let _ = conn.close().await;
        migrated.map_err(|e| MetaError::Migrate(format!("{target}: {}", one_line(&e.to_string()))))?;

        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .min_connections(options.min_connections.min(options.max_connections.max(1)))
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(options.idle_timeout)
            .max_lifetime(options.max_lifetime)
            .test_before_acquire(true)
            .connect_lazy_with(connect);
        Ok(PostgresStore { pool, target })
    }

    /// Whether the database holds a Berth installation (its migrations table), without changing
    /// anything: the offline commands refuse to turn an empty database into one.
    pub async fn installed(options: &PostgresOptions) -> Result<bool> {
        let (mut conn, _, target) = first_connection(options).await?;
        let found: std::result::Result<bool, sqlx::Error> =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(&mut conn).await;
        let _ = conn.close().await;
        found.map_err(|e| MetaError::Db(format!("{target}: {}", one_line(&e.to_string()))))
    }

    /// `postgres user@host:port/database`.
    pub fn describe(&self) -> &str {
        &self.target
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(&self) -> std::result::Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin_with(BEGIN).await
    }
}

fn parse_digest(s: &str) -> Result<Digest> {
    s.parse().map_err(|e| MetaError::Corrupt(format!("stored digest {s:?}: {e}")))
}

fn size_to_db(size: u64) -> Result<i64> {
    i64::try_from(size).map_err(|_| MetaError::Corrupt(format!("size {size} does not fit the database")))
}

fn size_from_db(size: i64) -> Result<u64> {
    u64::try_from(size).map_err(|_| MetaError::Corrupt(format!("stored size {size} is negative")))
}

/// A stored counter as `u32` (saturating).
fn count_from_db(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// `LIMIT` value for a page (NULL: no limit).
fn page_limit(page: &Page<'_>) -> Option<i64> {
    page.n.map(i64::from)
}

/// A JSON array of strings.
fn json_strings<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    serde_json::Value::Array(items.into_iter().map(|s| serde_json::Value::String(s.to_owned())).collect()).to_string()
}

/// Distinct digests in first-seen order.
fn distinct<'a>(digests: impl IntoIterator<Item = &'a Digest>) -> Vec<&'a Digest> {
    let mut seen = HashSet::new();
    digests.into_iter().filter(|d| seen.insert(d.as_str())).collect()
}

// ---- the hot-path statements (the EXPLAIN test runs these very strings) ----

// The lookups by repository name and key are written with a LATERAL sub-query (its `LIMIT 1`
// keeps the planner from flattening it) so that each step is one probe of a unique index: the
// repository by name, then its link or tag by (repository, key), then the blob or manifest. Left
// to itself, the planner may start from the digest (a popular base layer is linked in thousands
// of repositories) or from all the manifests of the repository, when its averages make that look
// as cheap.

pub(crate) const SQL_REPO_BLOB: &str = "SELECT b.size, b.storage_key FROM repositories r \
     CROSS JOIN LATERAL (SELECT rb.digest FROM repo_blobs rb WHERE rb.repo_id = r.id AND rb.digest = $2 LIMIT 1) l \
     JOIN blobs b ON b.digest = l.digest WHERE r.name = $1";

/// [`SQL_REPO_BLOB`] for a mount, locking the source link and the record (`FOR KEY SHARE`).
const SQL_MOUNT_SOURCE: &str = "SELECT b.size, b.storage_key FROM repositories r \
     JOIN repo_blobs rb ON rb.repo_id = r.id JOIN blobs b ON b.digest = rb.digest \
     WHERE r.name = $1 AND rb.digest = $2 FOR KEY SHARE OF rb, b";

pub(crate) const SQL_MANIFEST_BY_DIGEST: &str = "SELECT m.media_type, m.bytes, m.subject FROM repositories r \
     JOIN manifests m ON m.repo_id = r.id WHERE r.name = $1 AND m.digest = $2";

pub(crate) const SQL_MANIFEST_BY_TAG: &str = "SELECT m.digest, m.media_type, m.bytes, m.subject FROM repositories r \
     JOIN tags t ON t.repo_id = r.id \
     CROSS JOIN LATERAL (SELECT m.digest, m.media_type, m.bytes, m.subject FROM manifests m \
                         WHERE m.repo_id = t.repo_id AND m.digest = t.manifest_digest LIMIT 1) m \
     WHERE r.name = $1 AND t.name = $2";

/// Whether repository `r` exists (has a manifest or a blob link), as a lateral sub-query that
/// yields one row or none: one index probe per repository, stopping at the first hit. (Written
/// as `EXISTS .. OR EXISTS ..`, the planner may hash both sub-queries, which reads the whole
/// manifests and repo_blobs tables for one page.)
macro_rules! repository_exists {
    () => {
        "CROSS JOIN LATERAL (SELECT 1 FROM manifests m WHERE m.repo_id = r.id \
         UNION ALL SELECT 1 FROM repo_blobs rb WHERE rb.repo_id = r.id LIMIT 1) AS live"
    };
}

/// One statement (one snapshot): no row when the repository does not exist, else the page.
pub(crate) const SQL_LIST_TAGS: &str = concat!(
    "SELECT ARRAY(SELECT t.name FROM tags t WHERE t.repo_id = r.id AND t.name > $2 ORDER BY t.name LIMIT $3) \
     FROM repositories r ",
    repository_exists!(),
    " WHERE r.name = $1"
);

/// Keyset pagination: the repositories index walked from `$1` in name order, each checked by
/// [`repository_exists`], until the page is full.
pub(crate) const SQL_LIST_REPOSITORIES: &str =
    concat!("SELECT r.name FROM repositories r ", repository_exists!(), " WHERE r.name > $1 ORDER BY r.name LIMIT $2");

pub(crate) const SQL_REFERRERS: &str = "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations \
     FROM repositories r JOIN manifests m ON m.repo_id = r.id \
     WHERE r.name = $1 AND m.subject = $2 AND ($3::text IS NULL OR m.artifact_type = $3) ORDER BY m.digest";

/// The columns [`upload_from_row`] reads (the id is known by the caller).
const UPLOAD_COLUMNS: &str = "repo, created, updated, \"offset\", hash_state, parts";

pub(crate) const SQL_GET_UPLOAD: &str = "SELECT repo, created, updated, \"offset\", hash_state, parts FROM uploads WHERE id = $1";

const ROBOT_COLUMNS: &str =
    "name, project, description, disabled, expires_at, secret_hash, identity_provider, rules, permissions, created_at, updated_at";

/// The columns [`user_from_row`] reads, in the order [`upsert_user`] and `create_user` bind them.
const USER_COLUMNS: &str = "name, password_hash, admin, disabled, idp_provider, idp_issuer, idp_subject, email, groups, created_at, last_login_at";

pub(crate) const SQL_USER_BY_IDENTITY: &str = "SELECT name, password_hash, admin, disabled, idp_provider, idp_issuer, idp_subject, email, groups, \
     created_at, last_login_at FROM users WHERE idp_issuer = $1 AND idp_subject = $2";

/// The columns [`token_from_row`] reads, in the order [`insert_token`] binds them.
const TOKEN_COLUMNS: &str =
    "id, user_name, kind, name, secret_hash, parent, scope, created_at, expires_at, last_used_at, refresh_token, checked_at";

pub(crate) const SQL_GET_TOKEN: &str = "SELECT id, user_name, kind, name, secret_hash, parent, scope, created_at, expires_at, last_used_at, \
     refresh_token, checked_at FROM user_tokens WHERE id = $1";

/// A user's tokens of some kinds: the index `(user_name, created_at, id)` walked in order.
pub(crate) const SQL_LIST_TOKENS: &str = "SELECT id, user_name, kind, name, secret_hash, parent, scope, created_at, expires_at, last_used_at, \
     refresh_token, checked_at FROM user_tokens WHERE user_name = $1 AND kind = ANY($2::text[]) ORDER BY created_at, id";

/// The partial index `user_tokens_to_check` walked in order.
pub(crate) const SQL_TOKENS_TO_CHECK: &str = "SELECT id, user_name, kind, name, secret_hash, parent, scope, created_at, expires_at, last_used_at, \
     refresh_token, checked_at FROM user_tokens WHERE refresh_token IS NOT NULL AND COALESCE(checked_at, created_at) < $1 \
     AND (expires_at IS NULL OR expires_at > $2) ORDER BY COALESCE(checked_at, created_at), id LIMIT $3";

/// One batch of `prune_tokens`: the oldest expired tokens, by the expiry index.
pub(crate) const SQL_EXPIRED_TOKENS: &str = "SELECT id FROM user_tokens WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2";

/// The children of some tokens, by the parent index.
pub(crate) const SQL_TOKEN_CHILDREN: &str = "SELECT id FROM user_tokens WHERE parent = ANY($1::text[])";

/// Some tokens by id (the primary key).
pub(crate) const SQL_DELETE_TOKENS: &str = "DELETE FROM user_tokens WHERE id = ANY($1::text[])";

/// The columns [`auth_request_from_row`] reads.
const AUTH_REQUEST_COLUMNS: &str = "id, kind, data, created_at, expires_at";

pub(crate) const SQL_GET_AUTH_REQUEST: &str = "SELECT id, kind, data, created_at, expires_at FROM auth_requests WHERE id = $1 AND expires_at > $2";

/// The transaction-level advisory lock that `put_auth_request` takes (the two-`int4` key space,
/// which sqlx's migration lock, a single `bigint`, does not share): puts from every replica run
/// one at a time, so the count of pending requests and the insert see the same rows.
const AUTH_REQUEST_LOCK: (i32, i32) = (0x6265_7274, 1); // "bert", 1

/// The id of `repo`, creating the row if needed.
async fn repo_id_for_write(conn: &mut PgConnection, repo: &RepoName) -> R<i64> {
    let existing: Option<i64> =
        sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1").bind(repo.as_str()).fetch_optional(&mut *conn).await?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let inserted: Option<i64> = sqlx::query_scalar("INSERT INTO repositories (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id")
        .bind(repo.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(id) = inserted {
        return Ok(id);
    }
    // Another transaction inserted it meanwhile; ON CONFLICT waited for its commit, and this
    // statement's snapshot (READ COMMITTED) sees it.
    Ok(sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1").bind(repo.as_str()).fetch_one(&mut *conn).await?)
}

/// Creates or refreshes the link of `digest` to a repository.
async fn upsert_link(conn: &mut PgConnection, repo_id: i64, digest: &Digest, now: UnixTime) -> R<()> {
    sqlx::query(
        "INSERT INTO repo_blobs (repo_id, digest, last_used) VALUES ($1, $2, $3) \
         ON CONFLICT (repo_id, digest) DO UPDATE SET last_used = GREATEST(repo_blobs.last_used, excluded.last_used)",
    )
    .bind(repo_id)
    .bind(digest.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Locks the generation row: every write to projects, members, robots, identity providers or
/// users, and every deletion of tokens, takes it first (module docs), so those writes run one at
/// a time.
async fn lock_federation(conn: &mut PgConnection) -> R<()> {
    sqlx::query("SELECT generation FROM federation_generation WHERE id = 1 FOR UPDATE").execute(&mut *conn).await?;
    Ok(())
}

/// Increments the federation generation (the caller holds its lock).
async fn bump_generation(conn: &mut PgConnection) -> R<()> {
    sqlx::query("UPDATE federation_generation SET generation = generation + 1 WHERE id = 1").execute(&mut *conn).await?;
    Ok(())
}

impl PostgresStore {
    async fn commit_blob_tx(&self, repo: &RepoName, digest: &Digest, size: i64, new_key: &str, now: UnixTime) -> R<BlobCommit> {
        let mut tx = self.begin().await?;
        let repo_id = repo_id_for_write(&mut tx, repo).await?;
        // The upsert locks the record, so a collection that wants it skips it (or, holding it
        // already, has deleted it when this insert goes ahead with the new key).
        let key: String = sqlx::query_scalar(
            "INSERT INTO blobs (digest, size, storage_key, last_used) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (digest) DO UPDATE SET last_used = GREATEST(blobs.last_used, excluded.last_used) \
             RETURNING storage_key",
        )
        .bind(digest.as_str())
        .bind(size)
        .bind(new_key)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        upsert_link(&mut tx, repo_id, digest, now).await?;
        tx.commit().await?;
        Ok(if key == new_key { BlobCommit::Stored } else { BlobCommit::AlreadyPresent { existing_key: key } })
    }

    async fn mount_blob_tx(&self, repo: &RepoName, from: &RepoName, digest: &Digest, now: UnixTime) -> R<Option<BlobRecord>> {
        let mut tx = self.begin().await?;
        // KEY SHARE on the source link and the record: a collection cannot delete either until
        // this mount has committed its own link.
        let row = sqlx::query(SQL_MOUNT_SOURCE)
            .bind(from.as_str())
            .bind(digest.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let record = BlobRecord { digest: digest.clone(), size: size_from_db(row.try_get(0)?)?, storage_key: row.try_get(1)? };
        let repo_id = repo_id_for_write(&mut tx, repo).await?;
        upsert_link(&mut tx, repo_id, digest, now).await?;
        tx.commit().await?;
        Ok(Some(record))
    }

    async fn put_manifest_tx(&self, repo: &RepoName, m: &NewManifest<'_>, now: UnixTime) -> R<PutManifestOutcome> {
        let parsed = m.parsed;
        let blobs = distinct(parsed.blobs.iter().map(|d| &d.digest));
        let children = distinct(parsed.manifests.iter().map(|d| &d.digest));
        let blob_list: Vec<&str> = blobs.iter().map(|d| d.as_str()).collect();
        let child_list: Vec<&str> = children.iter().map(|d| d.as_str()).collect();
        let size = size_to_db(m.bytes.len() as u64)?;
        let annotations = parsed.annotations.as_ref().map(|a| a.to_string());
        let mut tags: Vec<&str> = m.tags.iter().map(|t| t.as_str()).collect();
        tags.sort_unstable();
        tags.dedup();

        let mut tx = self.begin().await?;
        let repo_id = repo_id_for_write(&mut tx, repo).await?;

        // Lock (in digest order) and touch every referenced link: a collection skips locked
        // links, and one that holds a link already has deleted it when this lock is granted (the
        // link is then missing). The same for child manifests against a concurrent delete.
        let mut present: HashSet<String> = HashSet::new();
        if !blob_list.is_empty() {
            let rows: Vec<String> = sqlx::query_scalar(
                "WITH locked AS (SELECT digest FROM repo_blobs WHERE repo_id = $1 AND digest = ANY($2) \
                 ORDER BY digest FOR NO KEY UPDATE) \
                 UPDATE repo_blobs rb SET last_used = GREATEST(rb.last_used, $3) FROM locked \
                 WHERE rb.repo_id = $1 AND rb.digest = locked.digest RETURNING rb.digest",
            )
            .bind(repo_id)
            .bind(&blob_list)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            present.extend(rows);
        }
        if !child_list.is_empty() {
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT digest FROM manifests WHERE repo_id = $1 AND digest = ANY($2) ORDER BY digest FOR KEY SHARE",
            )
            .bind(repo_id)
            .bind(&child_list)
            .fetch_all(&mut *tx)
            .await?;
            present.extend(rows);
        }
        let missing: Vec<Digest> = blobs.iter().chain(children.iter()).filter(|d| !present.contains(d.as_str())).map(|d| (*d).clone()).collect();
        if !missing.is_empty() {
            // Rolls back the touches and a freshly created repository row.
            tx.rollback().await?;
            return Ok(PutManifestOutcome::Missing(missing));
        }

        // The same digest is the same bytes (the caller verified it): an unchanged manifest is
        // only locked, not rewritten (RETURNING yields nothing then).
        let written: Option<i32> = sqlx::query_scalar(
            "INSERT INTO manifests (repo_id, digest, media_type, bytes, size, subject, artifact_type, annotations, created) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (repo_id, digest) DO UPDATE SET media_type = excluded.media_type, bytes = excluded.bytes, \
             size = excluded.size, subject = excluded.subject, artifact_type = excluded.artifact_type, \
             annotations = excluded.annotations \
             WHERE (manifests.media_type, manifests.size, manifests.subject, manifests.artifact_type, manifests.annotations) \
             IS DISTINCT FROM (excluded.media_type, excluded.size, excluded.subject, excluded.artifact_type, excluded.annotations) \
             RETURNING 1",
        )
        .bind(repo_id)
        .bind(m.digest.as_str())
        .bind(parsed.media_type.as_str())
        .bind(m.bytes)
        .bind(size)
        .bind(parsed.subject.as_ref().map(|s| s.digest.as_str()))
        .bind(parsed.artifact_type.as_deref())
        .bind(annotations)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;

        if written.is_some() {
            sqlx::query("DELETE FROM manifest_refs WHERE repo_id = $1 AND manifest_digest = $2")
                .bind(repo_id)
                .bind(m.digest.as_str())
                .execute(&mut *tx)
                .await?;
            for (kind, list) in [("blob", &blob_list), ("manifest", &child_list)] {
                if list.is_empty() {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO manifest_refs (repo_id, manifest_digest, ref_digest, kind) \
                     SELECT $1, $2, d, $3 FROM UNNEST($4::text[]) AS d ON CONFLICT DO NOTHING",
                )
                .bind(repo_id)
                .bind(m.digest.as_str())
                .bind(kind)
                .bind(list)
                .execute(&mut *tx)
                .await?;
            }
        }
        // Every tag in this same transaction, in name order (so two puts naming the same tags
        // lock them in the same order): all point at the manifest, or none moves.
        if !tags.is_empty() {
            sqlx::query(
                "INSERT INTO tags (repo_id, name, manifest_digest, updated) \
                 SELECT $1, t, $2, $3 FROM UNNEST($4::text[]) AS t ORDER BY t \
                 ON CONFLICT (repo_id, name) DO UPDATE SET manifest_digest = excluded.manifest_digest, updated = excluded.updated",
            )
            .bind(repo_id)
            .bind(m.digest.as_str())
            .bind(now)
            .bind(&tags)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(PutManifestOutcome::Stored)
    }

    /// Deletes the given links (a batch of garbage-collection candidates) that are still unused
    /// since `cutoff` and still unreferenced, re-checked under their row locks.
    async fn gc_links_tx(&self, repo_ids: &[i64], digests: &[String], cutoff: UnixTime) -> R<u64> {
        let mut tx = self.begin().await?;
        let locked = sqlx::query(
            "SELECT rb.repo_id, rb.digest FROM repo_blobs rb \
             JOIN UNNEST($1::bigint[], $2::text[]) AS c (repo_id, digest) ON rb.repo_id = c.repo_id AND rb.digest = c.digest \
             WHERE rb.last_used < $3 ORDER BY rb.repo_id, rb.digest FOR UPDATE OF rb SKIP LOCKED",
        )
        .bind(repo_ids)
        .bind(digests)
        .bind(cutoff)
        .fetch_all(&mut *tx)
        .await?;
        if locked.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(locked.len());
        let mut ds = Vec::with_capacity(locked.len());
        for row in &locked {
            ids.push(row.try_get::<i64, _>(0)?);
            ds.push(row.try_get::<String, _>(1)?);
        }
        // A new statement, so a new snapshot: taken after the locks were granted, it sees the
        // references of every push that held one of these links.
        let removed = sqlx::query(
            "DELETE FROM repo_blobs rb USING UNNEST($1::bigint[], $2::text[]) AS c (repo_id, digest) \
             WHERE rb.repo_id = c.repo_id AND rb.digest = c.digest AND NOT EXISTS \
             (SELECT 1 FROM manifest_refs mr WHERE mr.repo_id = rb.repo_id AND mr.ref_digest = rb.digest AND mr.kind = 'blob')",
        )
        .bind(&ids)
        .bind(&ds)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(removed)
    }

    /// Deletes the given blob records that are still unused since `cutoff` and still unlinked,
    /// re-checked under their row locks; returns their storage keys.
    async fn gc_blobs_tx(&self, digests: &[String], cutoff: UnixTime) -> R<Vec<String>> {
        let mut tx = self.begin().await?;
        let locked: Vec<String> = sqlx::query_scalar(
            "SELECT digest FROM blobs WHERE digest = ANY($1) AND last_used < $2 ORDER BY digest FOR UPDATE SKIP LOCKED",
        )
        .bind(digests)
        .bind(cutoff)
        .fetch_all(&mut *tx)
        .await?;
        if locked.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        // A link to a record needs the record's KEY SHARE lock (its foreign key check, a mount's
        // lock), so no new link appears while these are held; the new snapshot sees older ones.
        let keys: Vec<String> = sqlx::query_scalar(
            "DELETE FROM blobs b WHERE b.digest = ANY($1) \
             AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest) RETURNING b.storage_key",
        )
        .bind(&locked)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(keys)
    }

    async fn put_user_tx(&self, user: &UserRecord) -> R<()> {
        let mut tx = self.begin().await?;
        lock_federation(&mut tx).await?;
        if !user.admin || user.disabled {
            refuse_last_admin(&mut tx, &user.name, "disable it or take its admin rights").await?;
        }
        refuse_identity_taken(&mut tx, user).await?;
        upsert_user(&mut tx, user, &normalized_groups(&user.groups), false).await?;
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_user_tx(&self, user: &UserRecord) -> R<bool> {
        let mut tx = self.begin().await?;
        lock_federation(&mut tx).await?;
        refuse_identity_taken(&mut tx, user).await?;
        let groups = normalized_groups(&user.groups);
        let created = sqlx::query(&format!(
            "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (name) DO NOTHING"
        ))
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(user.admin)
        .bind(user.disabled)
        .bind(user.identity.as_ref().map(|i| i.provider.as_str()))
        .bind(user.identity.as_ref().map(|i| i.issuer.as_str()))
        .bind(user.identity.as_ref().map(|i| i.subject.as_str()))
        .bind(user.email.as_deref())
        .bind(json_strings(groups.iter().map(String::as_str)))
        .bind(user.created_at)
        .bind(user.last_login_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if created {
            bump_generation(&mut tx).await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(created)
    }

    async fn update_user_login_tx(&self, name: &str, groups: &[String], email: Option<&str>, last_login_at: Option<UnixTime>) -> R<Option<UserRecord>> {
        let mut tx = self.begin().await?;
        // Like every write to users (module docs): the groups read here are the ones replaced.
        lock_federation(&mut tx).await?;
        let stored: Option<String> = sqlx::query_scalar("SELECT groups FROM users WHERE name = $1").bind(name).fetch_optional(&mut *tx).await?;
        let Some(stored) = stored else {
            tx.rollback().await?;
            return Ok(None);
        };
        let stored: Vec<String> = serde_json::from_str(&stored).map_err(|e| MetaError::Corrupt(format!("stored groups of user {name:?}: {e}")))?;
        let row = sqlx::query(&format!(
            "UPDATE users SET groups = $2, email = COALESCE($3, email), last_login_at = COALESCE($4, last_login_at) \
             WHERE name = $1 RETURNING {USER_COLUMNS}"
        ))
        .bind(name)
        .bind(json_strings(groups.iter().map(String::as_str)))
        .bind(email)
        .bind(last_login_at)
        .fetch_one(&mut *tx)
        .await?;
        let user = user_from_row(&row)?;
        if stored != groups {
            bump_generation(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(Some(user))
    }

    async fn create_token_tx(&self, token: &TokenRecord) -> R<()> {
        let mut tx = self.begin().await?;
        check_token_refs(&mut tx, token).await?;
        // The user or the parent deleted between the check and the insert: the insert's foreign
        // key check waits for that delete and then fails.
        let created = match insert_token(&mut tx, token, false).await {
            Err(Failure::Sql(e)) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23503") => {
                return Err(MetaError::Conflict(format!("user {:?} or the parent token was deleted meanwhile", token.user)).into());
            }
            other => other?,
        };
        if !created {
            tx.rollback().await?;
            return Err(MetaError::Conflict(format!("a token with the id {:?} exists already", token.id)).into());
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_token_tx(&self, id: &str) -> R<bool> {
        let mut tx = self.begin().await?;
        lock_federation(&mut tx).await?;
        // Its children go with it (ON DELETE CASCADE, down to every descendant).
        let deleted = sqlx::query("DELETE FROM user_tokens WHERE id = $1").bind(id).execute(&mut *tx).await?.rows_affected() > 0;
        if deleted {
            bump_generation(&mut tx).await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(deleted)
    }

    async fn delete_user_tokens_tx(&self, user: &str, kinds: &[TokenKind]) -> R<u64> {
        let mut tx = self.begin().await?;
        lock_federation(&mut tx).await?;
        let roots: Vec<String> = sqlx::query_scalar("SELECT id FROM user_tokens WHERE user_name = $1 AND kind = ANY($2::text[])")
            .bind(user)
            .bind(kind_names(kinds))
            .fetch_all(&mut *tx)
            .await?;
        let removed = delete_tokens_with_children(&mut tx, roots).await?;
        if removed > 0 {
            bump_generation(&mut tx).await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(removed)
    }

    /// One batch of `prune_tokens`: how many expired tokens it found, and how many tokens went.
    async fn prune_tokens_tx(&self, now: UnixTime) -> R<(usize, u64)> {
        let mut tx = self.begin().await?;
        let roots: Vec<String> = sqlx::query_scalar(SQL_EXPIRED_TOKENS).bind(now).bind(TOKEN_PRUNE_BATCH).fetch_all(&mut *tx).await?;
        let found = roots.len();
        let removed = delete_tokens_with_children(&mut tx, roots).await?;
        tx.commit().await?;
        Ok((found, removed))
    }

    async fn put_auth_request_tx(&self, request: &AuthRequest, max_pending: u64, now: UnixTime) -> R<bool> {
        let max = i64::try_from(max_pending).unwrap_or(i64::MAX);
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)").bind(AUTH_REQUEST_LOCK.0).bind(AUTH_REQUEST_LOCK.1).execute(&mut *tx).await?;
        let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM auth_requests WHERE id = $1 AND expires_at > $2)")
            .bind(&request.id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        if taken {
            tx.rollback().await?;
            return Ok(false);
        }
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM (SELECT 1 FROM auth_requests WHERE expires_at > $1 LIMIT $2) p")
            .bind(now)
            .bind(max)
            .fetch_one(&mut *tx)
            .await?;
        if pending >= max {
            tx.rollback().await?;
            return Err(too_many_logins(max_pending).into());
        }
        // An expired request of the same id is gone for every method: it is replaced.
        let stored = sqlx::query(
            "INSERT INTO auth_requests (id, kind, data, created_at, expires_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, data = excluded.data, created_at = excluded.created_at, \
             expires_at = excluded.expires_at WHERE auth_requests.expires_at <= $6",
        )
        .bind(&request.id)
        .bind(&request.kind)
        .bind(request.data.to_string())
        .bind(request.created_at)
        .bind(request.expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        tx.commit().await?;
        Ok(stored)
    }

    async fn delete_user_tx(&self, name: &str) -> R<bool> {
        let mut tx = self.begin().await?;
        lock_federation(&mut tx).await?;
        refuse_last_admin(&mut tx, name, "delete it").await?;
        let deleted = sqlx::query("DELETE FROM users WHERE name = $1").bind(name).execute(&mut *tx).await?.rows_affected() > 0;
        if deleted {
            bump_generation(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn create_project_tx(&self, project: &ProjectRecord) -> R<bool> {
        let mut tx = self.begin().await?;
        lock_federation(&mut tx).await?;
        let created = sqlx::query("INSERT INTO projects (name, public, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(&project.name)
            .bind(project.public)
            .bind(project.created_at)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if created {
            bump_generation(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(created)
    }

    async fn put_project_tx(&self, project: &ProjectRecord) -> R<()> {
        let mut tx = self.begin().await?;
        lock_federation(&mut tx).await?;
        upsert_project(&mut tx, project, project.created_at).await?;
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_project_tx(&self, name: &str) -> R<DeleteOutcome> {
        let mut tx = self.begin().await?;
        lock_federation(&mut tx).await?;
        if let Some(robots) = robots_referring(&mut tx, "project", name).await? {
            tx.rollback().await?;
            return Ok(DeleteOutcome::InUse(format!("project {name:?} still has robot accounts ({robots}); delete them first")));
        }
        let deleted = sqlx::query("DELETE FROM projects WHERE name = $1").bind(name).execute(&mut *tx).await?.rows_affected() > 0;
        if !deleted {
            tx.rollback().await?;
            return Ok(DeleteOutcome::NotFound);
        }
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(DeleteOutcome::Deleted)
    }

    async fn put_member_tx(&self, member: &MemberRecord) -> R<()> {
        let mut tx = self.begin().await?;
        lock_federation(&mut tx).await?;
        let known: Option<i32> = sqlx::query_scalar("SELECT 1 FROM projects WHERE name = $1").bind(&member.project).fetch_optional(&mut *tx).await?;
        if known.is_none() {
            tx.rollback().await?;
            return Err(MetaError::Conflict(format!("project {:?} does not exist", member.project)).into());
        }
        sqlx::query(
            "INSERT INTO project_members (project, member, role, created_at, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (project, member) DO UPDATE SET role = excluded.role, updated_at = excluded.updated_at",
        )
        .bind(&member.project)
        .bind(&member.member)
        .bind(&member.role)
        .bind(member.created_at)
        .bind(member.updated_at)
        .execute(&mut *tx)
        .await?;
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_member_tx(&self, project: &str, member: &str) -> R<bool> {
        let mut tx = self.begin().await?;
        lock_federation(&mut tx).await?;
        let deleted = sqlx::query("DELETE FROM project_members WHERE project = $1 AND member = $2")
            .bind(project)
            .bind(member)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if deleted {
            bump_generation(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn put_robot_tx(&self, robot: &RobotRecord) -> R<()> {
        let mut tx = self.begin().await?;
        lock_federation(&mut tx).await?;
        check_robot_refs(&mut tx, robot).await?;
        upsert_robot(&mut tx, robot, robot.secret_hash.as_deref(), robot.created_at, robot.updated_at).await?;
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_robot_tx(&self, robot: &RobotRecord) -> R<bool> {
        let mut tx = self.begin().await?;
        lock_federation(&mut tx).await?;
        check_robot_refs(&mut tx, robot).await?;
        // One statement decides: the insert happens or the name was taken.
        let created = sqlx::query(
            "INSERT INTO robots (name, project, description, disabled, expires_at, secret_hash, identity_provider, \
             rules, permissions, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&robot.name)
        .bind(&robot.project)
        .bind(&robot.description)
        .bind(robot.disabled)
        .bind(robot.expires_at)
        .bind(&robot.secret_hash)
        .bind(&robot.identity_provider)
        .bind(robot.rules.to_string())
        .bind(robot.permissions.to_string())
        .bind(robot.created_at)
        .bind(robot.updated_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if created {
            bump_generation(&mut tx).await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(created)
    }

    async fn delete_robot_tx(&self, name: &str) -> R<bool> {
        let mut tx = self.begin().await?;
        lock_federation(&mut tx).await?;
        let deleted = sqlx::query("DELETE FROM robots WHERE name = $1").bind(name).execute(&mut *tx).await?.rows_affected() > 0;
        if deleted {
            bump_generation(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn put_identity_provider_tx(&self, provider: &IdentityProviderRecord) -> R<()> {
        let mut tx = self.begin().await?;
        lock_federation(&mut tx).await?;
        upsert_identity_provider(&mut tx, provider, provider.created_at, provider.updated_at).await?;
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_identity_provider_tx(&self, provider: &IdentityProviderRecord) -> R<bool> {
        let mut tx = self.begin().await?;
        lock_federation(&mut tx).await?;
        let created = sqlx::query(
            "INSERT INTO identity_providers (name, config, created_at, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&provider.name)
        .bind(provider.config.to_string())
        .bind(provider.created_at)
        .bind(provider.updated_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if created {
            bump_generation(&mut tx).await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(created)
    }

    async fn delete_identity_provider_tx(&self, name: &str) -> R<DeleteOutcome> {
        let mut tx = self.begin().await?;
        lock_federation(&mut tx).await?;
        if let Some(robots) = robots_referring(&mut tx, "identity_provider", name).await? {
            tx.rollback().await?;
            return Ok(DeleteOutcome::InUse(format!(
                "identity provider {name:?} still has federated robots ({robots}); delete them first"
            )));
        }
        let deleted =
            sqlx::query("DELETE FROM identity_providers WHERE name = $1").bind(name).execute(&mut *tx).await?.rows_affected() > 0;
        if !deleted {
            tx.rollback().await?;
            return Ok(DeleteOutcome::NotFound);
        }
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(DeleteOutcome::Deleted)
    }

    async fn apply_tx(&self, batch: ApplyBatch<'_>, now: UnixTime) -> R<ApplyOutcome> {
        let mut tx = self.begin().await?;
        lock_federation(&mut tx).await?;
        // An error drops the transaction, which rolls it back: nothing of the batch is written.
        let outcome = apply_in(&mut tx, batch, now).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn append_audit_tx(&self, events: &[AuditEvent]) -> R<()> {
        let mut time_ms = Vec::with_capacity(events.len());
        let mut action = Vec::with_capacity(events.len());
        let mut result = Vec::with_capacity(events.len());
        let mut principal = Vec::with_capacity(events.len());
        let mut robots = Vec::with_capacity(events.len());
        let mut provider = Vec::with_capacity(events.len());
        let mut subject = Vec::with_capacity(events.len());
        let mut jti = Vec::with_capacity(events.len());
        let mut claims = Vec::with_capacity(events.len());
        let mut repository = Vec::with_capacity(events.len());
        let mut reference = Vec::with_capacity(events.len());
        let mut client = Vec::with_capacity(events.len());
        let mut message = Vec::with_capacity(events.len());
        for e in events {
            time_ms.push(e.time_ms);
            action.push(e.action.as_str());
            result.push(e.result.as_str());
            principal.push(e.principal.as_str());
            robots.push(json_strings(e.robots.iter().map(String::as_str)));
            provider.push(e.provider.as_deref());
            subject.push(e.subject.as_deref());
            jti.push(e.jti.as_deref());
            claims.push(e.claims.as_ref().map(|c| c.to_string()));
            repository.push(e.repository.as_deref());
            reference.push(e.reference.as_deref());
            client.push(e.client.as_deref());
            message.push(e.message.as_deref());
        }
        // One statement for the whole batch: the events in their order (ids are assigned in
        // that order), then the names a robot filter finds each one by (its robots and its
        // principal), from the ids the insert returned.
        sqlx::query(
            "WITH ev AS (SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[]) WITH ORDINALITY \
             AS e (time_ms, action, result, principal, robots, provider, subject, jti, claims, repository, reference, \
             client, message, ord)), \
             ins AS (INSERT INTO audit_events (time_ms, action, result, principal, robots, provider, subject, jti, claims, \
             repository, reference, client, message) \
             SELECT time_ms, action, result, principal, robots, provider, subject, jti, claims, repository, reference, \
             client, message FROM ev ORDER BY ord RETURNING id, principal, robots) \
             INSERT INTO audit_names (name, event_id) \
             SELECT DISTINCT n.name, ins.id FROM ins CROSS JOIN LATERAL \
             (SELECT json_array_elements_text(ins.robots::json) UNION SELECT ins.principal) AS n (name)",
        )
        .bind(&time_ms)
        .bind(&action)
        .bind(&result)
        .bind(&principal)
        .bind(&robots)
        .bind(&provider)
        .bind(&subject)
        .bind(&jti)
        .bind(&claims)
        .bind(&repository)
        .bind(&reference)
        .bind(&client)
        .bind(&message)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl MetadataStore for PostgresStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(sql_error)?;
        Ok(())
    }

    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobRecord>> {
        let row = sqlx::query(SQL_REPO_BLOB)
            .bind(repo.as_str())
            .bind(digest.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        row.map(|row| {
            Ok(BlobRecord {
                digest: digest.clone(),
                size: size_from_db(row.try_get(0).map_err(sql_error)?)?,
                storage_key: row.try_get(1).map_err(sql_error)?,
            })
        })
        .transpose()
    }

    async fn commit_blob(&self, repo: &RepoName, digest: &Digest, size: u64, new_key: &str, now: UnixTime) -> Result<BlobCommit> {
        let size = size_to_db(size)?;
        retry("commit_blob", || self.commit_blob_tx(repo, digest, size, new_key, now)).await
    }

    async fn mount_blob(&self, repo: &RepoName, from: &RepoName, digest: &Digest, now: UnixTime) -> Result<Option<BlobRecord>> {
        retry("mount_blob", || self.mount_blob_tx(repo, from, digest, now)).await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let done = sqlx::query("DELETE FROM repo_blobs WHERE repo_id = (SELECT id FROM repositories WHERE name = $1) AND digest = $2")
            .bind(repo.as_str())
            .bind(digest.as_str())
            .execute(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_manifest(&self, repo: &RepoName, m: NewManifest<'_>, now: UnixTime) -> Result<PutManifestOutcome> {
        let m = &m;
        retry("put_manifest", || self.put_manifest_tx(repo, m, now)).await
    }

    async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>> {
        match reference {
            Reference::Digest(digest) => {
                let row = sqlx::query(SQL_MANIFEST_BY_DIGEST)
                    .bind(repo.as_str())
                    .bind(digest.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(sql_error)?;
                row.map(|row| {
                    let subject: Option<String> = row.try_get(2).map_err(sql_error)?;
                    Ok(ManifestRecord {
                        digest: digest.clone(),
                        media_type: row.try_get(0).map_err(sql_error)?,
                        bytes: row.try_get(1).map_err(sql_error)?,
                        subject: subject.as_deref().map(parse_digest).transpose()?,
                    })
                })
                .transpose()
            }
            Reference::Tag(tag) => {
                let row = sqlx::query(SQL_MANIFEST_BY_TAG)
                    .bind(repo.as_str())
                    .bind(tag.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(sql_error)?;
                row.map(|row| {
                    let digest: String = row.try_get(0).map_err(sql_error)?;
                    let subject: Option<String> = row.try_get(3).map_err(sql_error)?;
                    Ok(ManifestRecord {
                        digest: parse_digest(&digest)?,
                        media_type: row.try_get(1).map_err(sql_error)?,
                        bytes: row.try_get(2).map_err(sql_error)?,
                        subject: subject.as_deref().map(parse_digest).transpose()?,
                    })
                })
                .transpose()
            }
        }
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        // One statement: the manifest row first (its lock orders this delete with a concurrent
        // put of the same manifest, which also locks the manifest before its tags), and its tags
        // and references by the foreign keys' ON DELETE CASCADE.
        let done = sqlx::query("DELETE FROM manifests WHERE repo_id = (SELECT id FROM repositories WHERE name = $1) AND digest = $2")
            .bind(repo.as_str())
            .bind(digest.as_str())
            .execute(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let done = sqlx::query("DELETE FROM tags WHERE repo_id = (SELECT id FROM repositories WHERE name = $1) AND name = $2")
            .bind(repo.as_str())
            .bind(tag.as_str())
            .execute(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_tags(&self, repo: &RepoName, page: Page<'_>) -> Result<Option<Vec<String>>> {
        Ok(sqlx::query_scalar(SQL_LIST_TAGS)
            .bind(repo.as_str())
            .bind(page.last.unwrap_or(""))
            .bind(page_limit(&page))
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?)
    }

    async fn list_repositories(&self, page: Page<'_>) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(SQL_LIST_REPOSITORIES)
            .bind(page.last.unwrap_or(""))
            .bind(page_limit(&page))
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?)
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Referrer>> {
        let rows = sqlx::query(SQL_REFERRERS)
            .bind(repo.as_str())
            .bind(subject.as_str())
            .bind(artifact_type)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?;
        rows.into_iter()
            .map(|row| {
                let digest: String = row.try_get(0).map_err(sql_error)?;
                let annotations: Option<String> = row.try_get(4).map_err(sql_error)?;
                let annotations = annotations
                    .map(|a| serde_json::from_str(&a).map_err(|e| MetaError::Corrupt(format!("annotations of {digest}: {e}"))))
                    .transpose()?;
                Ok(Referrer {
                    digest: parse_digest(&digest)?,
                    media_type: row.try_get(1).map_err(sql_error)?,
                    size: size_from_db(row.try_get(2).map_err(sql_error)?)?,
                    artifact_type: row.try_get(3).map_err(sql_error)?,
                    annotations,
                })
            })
            .collect()
    }

    async fn create_upload(&self, id: &str, repo: &RepoName, now: UnixTime) -> Result<()> {
        sqlx::query("INSERT INTO uploads (id, repo, created, updated) VALUES ($1, $2, $3, $3)")
            .bind(id)
            .bind(repo.as_str())
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(())
    }

    async fn get_upload(&self, id: &str) -> Result<Option<UploadRecord>> {
        let row = sqlx::query(SQL_GET_UPLOAD).bind(id).fetch_optional(&self.pool).await.map_err(sql_error)?;
        row.map(|row| upload_from_row(id, &row)).transpose()
    }

    async fn touch_upload(&self, id: &str, now: UnixTime) -> Result<()> {
        sqlx::query("UPDATE uploads SET updated = GREATEST(updated, $2) WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(())
    }

    async fn claim_upload(
        &self,
        id: &str,
        repo: &RepoName,
        expected_offset: Option<u64>,
        token: &str,
        lease_until: UnixTime,
        now: UnixTime,
    ) -> Result<UploadClaim> {
        let expected = expected_offset.map(size_to_db).transpose()?;
        // The claim is one conditional UPDATE: of concurrent claims the first to lock the row
        // wins; the others wait for it, re-check their conditions on its new version (the lease
        // is held) and match nothing.
        let claimed = sqlx::query(&format!(
            "UPDATE uploads SET lease_token = $3, lease_until = $4, updated = GREATEST(updated, $5) \
             WHERE id = $1 AND repo = $2 AND (lease_until IS NULL OR lease_until <= $5) \
             AND ($6::bigint IS NULL OR \"offset\" = $6) RETURNING {UPLOAD_COLUMNS}"
        ))
        .bind(id)
        .bind(repo.as_str())
        .bind(token)
        .bind(lease_until)
        .bind(now)
        .bind(expected)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        if let Some(row) = claimed {
            return Ok(UploadClaim::Claimed(upload_from_row(id, &row)?));
        }
        // Refused: say why, from the state as it is now (a later statement, so it sees the claim
        // that won, which has committed by the time the UPDATE above gave up on the row).
        let row = sqlx::query("SELECT lease_until, \"offset\" FROM uploads WHERE id = $1 AND repo = $2")
            .bind(id)
            .bind(repo.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        let Some(row) = row else {
            return Ok(UploadClaim::Unknown);
        };
        let held_until: Option<UnixTime> = row.try_get(0).map_err(sql_error)?;
        let offset = size_from_db(row.try_get(1).map_err(sql_error)?)?;
        Ok(if held_until.is_some_and(|until| until > now) { UploadClaim::Busy { offset } } else { UploadClaim::OutOfOrder { offset } })
    }

    async fn renew_upload_claim(&self, id: &str, token: &str, lease_until: UnixTime) -> Result<bool> {
        let done = sqlx::query("UPDATE uploads SET lease_until = $3 WHERE id = $1 AND lease_token = $2")
            .bind(id)
            .bind(token)
            .bind(lease_until)
            .execute(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_upload(&self, id: &str, token: &str, offset: u64, hash_state: &[u8], parts: u32, now: UnixTime) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE uploads SET \"offset\" = $3, hash_state = $4, parts = $5, updated = $6, \
             lease_token = NULL, lease_until = NULL WHERE id = $1 AND lease_token = $2",
        )
        .bind(id)
        .bind(token)
        .bind(size_to_db(offset)?)
        .bind(hash_state)
        .bind(i64::from(parts))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_upload(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM uploads WHERE id = $1").bind(id).execute(&self.pool).await.map_err(sql_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn get_user(&self, name: &str) -> Result<Option<UserRecord>> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(row.map(|r| user_from_row(&r)).transpose()?)
    }

    async fn put_user(&self, user: &UserRecord) -> Result<()> {
        retry("put_user", || self.put_user_tx(user)).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name")).fetch_all(&self.pool).await.map_err(sql_error)?;
        Ok(rows.iter().map(user_from_row).collect::<R<_>>()?)
    }

    async fn delete_user(&self, name: &str) -> Result<bool> {
        retry("delete_user", || self.delete_user_tx(name)).await
    }

    async fn count_users(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&self.pool).await.map_err(sql_error)?;
        size_from_db(n)
    }

    async fn get_user_by_identity(&self, issuer: &str, subject: &str) -> Result<Option<UserRecord>> {
        let row = sqlx::query(SQL_USER_BY_IDENTITY).bind(issuer).bind(subject).fetch_optional(&self.pool).await.map_err(sql_error)?;
        Ok(row.map(|r| user_from_row(&r)).transpose()?)
    }

    async fn create_user(&self, user: &UserRecord) -> Result<bool> {
        retry("create_user", || self.create_user_tx(user)).await
    }

    async fn update_user_login(&self, name: &str, groups: &[String], email: Option<&str>, last_login_at: Option<UnixTime>) -> Result<Option<UserRecord>> {
        let groups = normalized_groups(groups);
        retry("update_user_login", || self.update_user_login_tx(name, &groups, email, last_login_at)).await
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<()> {
        retry("create_token", || self.create_token_tx(token)).await
    }

    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(SQL_GET_TOKEN).bind(id).fetch_optional(&self.pool).await.map_err(sql_error)?;
        Ok(row.map(|r| token_from_row(&r)).transpose()?)
    }

    async fn list_tokens(&self, user: &str, kinds: &[TokenKind]) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(SQL_LIST_TOKENS).bind(user).bind(kind_names(kinds)).fetch_all(&self.pool).await.map_err(sql_error)?;
        Ok(rows.iter().map(token_from_row).collect::<R<_>>()?)
    }

    async fn delete_token(&self, id: &str) -> Result<bool> {
        retry("delete_token", || self.delete_token_tx(id)).await
    }

    async fn delete_user_tokens(&self, user: &str, kinds: &[TokenKind]) -> Result<u64> {
        retry("delete_user_tokens", || self.delete_user_tokens_tx(user, kinds)).await
    }

    async fn touch_token(&self, id: &str, now: UnixTime) -> Result<()> {
        sqlx::query("UPDATE user_tokens SET last_used_at = GREATEST(last_used_at, $2) WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(())
    }

    async fn update_token_check(&self, id: &str, refresh_token: Option<&str>, checked_at: UnixTime) -> Result<bool> {
        let done = sqlx::query("UPDATE user_tokens SET refresh_token = $2, checked_at = $3 WHERE id = $1")
            .bind(id)
            .bind(refresh_token)
            .bind(checked_at)
            .execute(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn claim_token_check(&self, id: &str, seen: Option<UnixTime>, now: UnixTime) -> Result<bool> {
        // One UPDATE: the row lock serialises concurrent claims, and the loser's re-evaluated
        // condition no longer holds.
        let done = sqlx::query("UPDATE user_tokens SET checked_at = $3 WHERE id = $1 AND checked_at IS NOT DISTINCT FROM $2")
            .bind(id)
            .bind(seen)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn tokens_to_check(&self, before: UnixTime, now: UnixTime, limit: u32) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(SQL_TOKENS_TO_CHECK).bind(before).bind(now).bind(i64::from(limit)).fetch_all(&self.pool).await.map_err(sql_error)?;
        Ok(rows.iter().map(token_from_row).collect::<R<_>>()?)
    }

    async fn prune_tokens(&self, now: UnixTime) -> Result<u64> {
        // In batches, each its own short transaction, as for the audit log.
        let mut removed = 0;
        loop {
            let (found, went) = retry("prune_tokens", || self.prune_tokens_tx(now)).await?;
            removed += went;
            if (found as i64) < TOKEN_PRUNE_BATCH {
                return Ok(removed);
            }
        }
    }

    async fn put_auth_request(&self, request: &AuthRequest, max_pending: u64, now: UnixTime) -> Result<bool> {
        retry("put_auth_request", || self.put_auth_request_tx(request, max_pending, now)).await
    }

    async fn get_auth_request(&self, id: &str, now: UnixTime) -> Result<Option<AuthRequest>> {
        let row = sqlx::query(SQL_GET_AUTH_REQUEST).bind(id).bind(now).fetch_optional(&self.pool).await.map_err(sql_error)?;
        Ok(row.map(|r| auth_request_from_row(&r)).transpose()?)
    }

    async fn update_auth_request(&self, id: &str, data: &serde_json::Value, now: UnixTime) -> Result<bool> {
        let done = sqlx::query("UPDATE auth_requests SET data = $3 WHERE id = $1 AND expires_at > $2")
            .bind(id)
            .bind(now)
            .bind(data.to_string())
            .execute(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn take_auth_request(&self, id: &str, now: UnixTime) -> Result<Option<AuthRequest>> {
        // One statement: of concurrent takers the first to lock the row deletes it; the others
        // wait for it, re-check the row, find it gone and return nothing.
        let row = sqlx::query(&format!("DELETE FROM auth_requests WHERE id = $1 AND expires_at > $2 RETURNING {AUTH_REQUEST_COLUMNS}"))
            .bind(id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(row.map(|r| auth_request_from_row(&r)).transpose()?)
    }

    async fn prune_auth_requests(&self, now: UnixTime) -> Result<u64> {
        let done = sqlx::query("DELETE FROM auth_requests WHERE expires_at <= $1").bind(now).execute(&self.pool).await.map_err(sql_error)?;
        Ok(done.rows_affected())
    }

    async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(&self.pool).await.map_err(sql_error)
    }

    async fn init_setting(&self, key: &str, value: &str) -> Result<String> {
        let inserted: Option<String> =
            sqlx::query_scalar("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING RETURNING value")
                .bind(key)
                .bind(value)
                .fetch_optional(&self.pool)
                .await
                .map_err(sql_error)?;
        if let Some(v) = inserted {
            return Ok(v);
        }
        // Taken: ON CONFLICT waited for the winner's commit, and this later statement sees it.
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1").bind(key).fetch_one(&self.pool).await.map_err(sql_error)
    }

    async fn collect_garbage(&self, cutoff: UnixTime, upload_cutoff: UnixTime) -> Result<GcReport> {
        let mut report = GcReport::default();

        // Candidates are found without locks, in key order (keyset pagination); each batch is
        // then locked and re-checked in its own short transaction (module docs).

        // 1. Links unused since the cutoff that no manifest of their repository references.
        let mut cursor: (i64, String) = (i64::MIN, String::new());
        loop {
            let rows = sqlx::query(
                "SELECT rb.repo_id, rb.digest FROM repo_blobs rb \
                 WHERE (rb.repo_id, rb.digest) > ($1, $2) AND rb.last_used < $3 AND NOT EXISTS \
                 (SELECT 1 FROM manifest_refs mr WHERE mr.repo_id = rb.repo_id AND mr.ref_digest = rb.digest \
                  AND mr.kind = 'blob') \
                 ORDER BY rb.repo_id, rb.digest LIMIT $4",
            )
            .bind(cursor.0)
            .bind(&cursor.1)
            .bind(cutoff)
            .bind(GC_BATCH)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?;
            let Some(last) = rows.last() else { break };
            let next = (last.try_get::<i64, _>(0).map_err(sql_error)?, last.try_get::<String, _>(1).map_err(sql_error)?);
            let mut repo_ids = Vec::with_capacity(rows.len());
            let mut digests = Vec::with_capacity(rows.len());
            for row in &rows {
                repo_ids.push(row.try_get::<i64, _>(0).map_err(sql_error)?);
                digests.push(row.try_get::<String, _>(1).map_err(sql_error)?);
            }
            report.links_removed += retry("collect_garbage (links)", || self.gc_links_tx(&repo_ids, &digests, cutoff)).await?;
            if (rows.len() as i64) < GC_BATCH {
                break;
            }
            cursor = next;
        }

        // 2. Blob records with no links left, unused since the cutoff.
        let mut cursor = String::new();
        loop {
            let digests: Vec<String> = sqlx::query_scalar(
                "SELECT b.digest FROM blobs b WHERE b.digest > $1 AND b.last_used < $2 \
                 AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest) \
                 ORDER BY b.digest LIMIT $3",
            )
            .bind(&cursor)
            .bind(cutoff)
            .bind(GC_BATCH)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?;
            let Some(last) = digests.last() else { break };
            let keys = retry("collect_garbage (blobs)", || self.gc_blobs_tx(&digests, cutoff)).await?;
            report.deleted_keys.extend(keys);
            if (digests.len() as i64) < GC_BATCH {
                break;
            }
            cursor = last.clone();
        }

        // 3. Upload sessions not touched since the upload cutoff: one statement per batch, whose
        // condition is on the row alone, so its re-check on a concurrently claimed or touched
        // row's newest version is exact.
        let mut cursor = String::new();
        loop {
            let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM uploads WHERE id > $1 AND updated < $2 ORDER BY id LIMIT $3")
                .bind(&cursor)
                .bind(upload_cutoff)
                .bind(GC_BATCH)
                .fetch_all(&self.pool)
                .await
                .map_err(sql_error)?;
            let Some(last) = ids.last() else { break };
            let removed: Vec<String> = sqlx::query_scalar("DELETE FROM uploads WHERE id = ANY($1) AND updated < $2 RETURNING id")
                .bind(&ids)
                .bind(upload_cutoff)
                .fetch_all(&self.pool)
                .await
                .map_err(sql_error)?;
            report.stale_uploads.extend(removed);
            if (ids.len() as i64) < GC_BATCH {
                break;
            }
            cursor = last.clone();
        }

        Ok(report)
    }

    async fn key_in_use(&self, key: &str) -> Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM blobs WHERE storage_key = $1)")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .map_err(sql_error)
    }

    async fn create_project(&self, project: &ProjectRecord) -> Result<bool> {
        retry("create_project", || self.create_project_tx(project)).await
    }

    async fn put_project(&self, project: &ProjectRecord) -> Result<()> {
        retry("put_project", || self.put_project_tx(project)).await
    }

    async fn get_project(&self, name: &str) -> Result<Option<ProjectRecord>> {
        let row = sqlx::query("SELECT name, public, created_at FROM projects WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(row.map(|r| project_from_row(&r)).transpose()?)
    }

    async fn list_projects(&self) -> Result<Vec<ProjectRecord>> {
        let rows = sqlx::query("SELECT name, public, created_at FROM projects ORDER BY name").fetch_all(&self.pool).await.map_err(sql_error)?;
        Ok(rows.iter().map(project_from_row).collect::<R<_>>()?)
    }

    async fn delete_project(&self, name: &str) -> Result<DeleteOutcome> {
        retry("delete_project", || self.delete_project_tx(name)).await
    }

    async fn put_member(&self, member: &MemberRecord) -> Result<()> {
        retry("put_member", || self.put_member_tx(member)).await
    }

    async fn delete_member(&self, project: &str, member: &str) -> Result<bool> {
        retry("delete_member", || self.delete_member_tx(project, member)).await
    }

    async fn list_members(&self, project: &str) -> Result<Vec<MemberRecord>> {
        let rows = sqlx::query("SELECT project, member, role, created_at, updated_at FROM project_members WHERE project = $1 ORDER BY member")
            .bind(project)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(rows.iter().map(member_from_row).collect::<R<_>>()?)
    }

    async fn memberships(&self, members: &[String]) -> Result<Vec<MemberRecord>> {
        if members.len() > crate::MAX_MEMBER_KEYS {
            return Err(MetaError::Conflict(format!("{} member keys asked for; at most {}", members.len(), crate::MAX_MEMBER_KEYS)));
        }
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT project, member, role, created_at, updated_at FROM project_members WHERE member = ANY($1) ORDER BY project, member",
        )
        .bind(members)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(rows.iter().map(member_from_row).collect::<R<_>>()?)
    }

    async fn put_robot(&self, robot: &RobotRecord) -> Result<()> {
        retry("put_robot", || self.put_robot_tx(robot)).await
    }

    async fn create_robot(&self, robot: &RobotRecord) -> Result<bool> {
        retry("create_robot", || self.create_robot_tx(robot)).await
    }

    async fn get_robot(&self, name: &str) -> Result<Option<RobotRecord>> {
        let row = sqlx::query(&format!("SELECT {ROBOT_COLUMNS} FROM robots WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(row.map(|r| robot_from_row(&r)).transpose()?)
    }

    async fn list_robots(&self, project: Option<&str>) -> Result<Vec<RobotRecord>> {
        let rows = match project {
            Some(p) => sqlx::query(&format!("SELECT {ROBOT_COLUMNS} FROM robots WHERE project = $1 ORDER BY name"))
                .bind(p)
                .fetch_all(&self.pool)
                .await
                .map_err(sql_error)?,
            None => sqlx::query(&format!("SELECT {ROBOT_COLUMNS} FROM robots ORDER BY name")).fetch_all(&self.pool).await.map_err(sql_error)?,
        };
        Ok(rows.iter().map(robot_from_row).collect::<R<_>>()?)
    }

    async fn list_robots_by_provider(&self, provider: &str) -> Result<Vec<RobotRecord>> {
        let rows = sqlx::query(&format!("SELECT {ROBOT_COLUMNS} FROM robots WHERE identity_provider = $1 ORDER BY name"))
            .bind(provider)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(rows.iter().map(robot_from_row).collect::<R<_>>()?)
    }

    async fn delete_robot(&self, name: &str) -> Result<bool> {
        retry("delete_robot", || self.delete_robot_tx(name)).await
    }

    async fn put_identity_provider(&self, provider: &IdentityProviderRecord) -> Result<()> {
        retry("put_identity_provider", || self.put_identity_provider_tx(provider)).await
    }

    async fn create_identity_provider(&self, provider: &IdentityProviderRecord) -> Result<bool> {
        retry("create_identity_provider", || self.create_identity_provider_tx(provider)).await
    }

    async fn get_identity_provider(&self, name: &str) -> Result<Option<IdentityProviderRecord>> {
        let row = sqlx::query("SELECT name, config, created_at, updated_at FROM identity_providers WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(row.map(|r| idp_from_row(&r)).transpose()?)
    }

    async fn list_identity_providers(&self) -> Result<Vec<IdentityProviderRecord>> {
        let rows = sqlx::query("SELECT name, config, created_at, updated_at FROM identity_providers ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(rows.iter().map(idp_from_row).collect::<R<_>>()?)
    }

    async fn delete_identity_provider(&self, name: &str) -> Result<DeleteOutcome> {
        retry("delete_identity_provider", || self.delete_identity_provider_tx(name)).await
    }

    async fn apply(&self, batch: ApplyBatch<'_>, now: UnixTime) -> Result<ApplyOutcome> {
        retry("apply", || self.apply_tx(batch, now)).await
    }

    async fn federation_generation(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT generation FROM federation_generation WHERE id = 1").fetch_one(&self.pool).await.map_err(sql_error)
    }

    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        retry("append_audit", || self.append_audit_tx(events)).await
    }

    async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
        let rows = audit_select(q).build().fetch_all(&self.pool).await.map_err(sql_error)?;
        Ok(rows.iter().map(audit_from_row).collect::<R<_>>()?)
    }

    async fn prune_audit(&self, before_ms: i64) -> Result<u64> {
        // In batches, each its own statement (and transaction), so pruning a large log never
        // holds many locks for long; the robot index goes with its events (ON DELETE CASCADE).
        let mut removed = 0;
        loop {
            let n = sqlx::query(
                "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE time_ms < $1 \
                 ORDER BY time_ms, id LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .bind(before_ms)
            .bind(PRUNE_BATCH)
            .execute(&self.pool)
            .await
            .map_err(sql_error)?
            .rows_affected();
            removed += n;
            if (n as i64) < PRUNE_BATCH {
                break;
            }
        }
        Ok(removed)
    }

    async fn record_login_failure(&self, key: &str, window_start: UnixTime) -> Result<u32> {
        let n: i64 = sqlx::query_scalar(
            "INSERT INTO login_failures (key, window_start, count) VALUES ($1, $2, 1) \
             ON CONFLICT (key, window_start) DO UPDATE SET count = login_failures.count + 1 RETURNING count",
        )
        .bind(key)
        .bind(window_start)
        .fetch_one(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(count_from_db(n))
    }

    async fn forgive_login_failure(&self, key: &str, window_start: UnixTime) -> Result<()> {
        sqlx::query("UPDATE login_failures SET count = count - 1 WHERE key = $1 AND window_start = $2 AND count > 0")
            .bind(key)
            .bind(window_start)
            .execute(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(())
    }

    async fn login_failures(&self, key: &str, window_start: UnixTime) -> Result<u32> {
        let n: Option<i64> = sqlx::query_scalar("SELECT count FROM login_failures WHERE key = $1 AND window_start = $2")
            .bind(key)
            .bind(window_start)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(n.map_or(0, count_from_db))
    }

    async fn prune_login_failures(&self, before: UnixTime) -> Result<u64> {
        let done = sqlx::query("DELETE FROM login_failures WHERE window_start < $1").bind(before).execute(&self.pool).await.map_err(sql_error)?;
        Ok(done.rows_affected())
    }

    async fn export(&self, table: Table, after: Option<&RowKey>, limit: u32) -> Result<Vec<ExportRow>> {
        Ok(self.export_tx(table, after, i64::from(limit.max(1))).await?)
    }

    async fn import(&self, rows: &[ExportRow]) -> Result<ImportOutcome> {
        retry("import", || self.import_tx(rows)).await
    }

    async fn prune(&self, table: Table, after: Option<&RowKey>, upto: Option<&RowKey>, keep: &[RowKey]) -> Result<PruneOutcome> {
        retry("prune", || self.prune_tx(table, after, upto, keep)).await
    }

    async fn blob_records(&self, digests: &[Digest]) -> Result<Vec<BlobRecord>> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<&str> = digests.iter().map(|d| d.as_str()).collect();
        let rows = sqlx::query("SELECT digest, size, storage_key FROM blobs WHERE digest = ANY($1)")
            .bind(&list)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?;
        rows.iter()
            .map(|r| {
                let digest: String = r.try_get(0).map_err(sql_error)?;
                Ok(BlobRecord {
                    digest: parse_digest(&digest)?,
                    size: size_from_db(r.try_get(1).map_err(sql_error)?)?,
                    storage_key: r.try_get(2).map_err(sql_error)?,
                })
            })
            .collect()
    }

    async fn row_counts(&self) -> Result<RowCounts> {
        // One statement: one snapshot.
        let row = sqlx::query(SQL_ROW_COUNTS).fetch_one(&self.pool).await.map_err(sql_error)?;
        let n = |i: usize| -> Result<u64> { size_from_db(row.try_get::<i64, _>(i).map_err(sql_error)?) };
        Ok(RowCounts {
            settings: n(0)?,
            users: n(1)?,
            projects: n(2)?,
            identity_providers: n(3)?,
            robots: n(4)?,
            blobs: n(5)?,
            blob_bytes: n(6)?,
            repositories: n(7)?,
            blob_links: n(8)?,
            manifests: n(9)?,
            manifest_references: n(10)?,
            tags: n(11)?,
            audit_events: n(12)?,
            audit_names: n(13)?,
            members: n(14)?,
            tokens: n(15)?,
        })
    }
}

// ---- export and import (`berth migrate`) ----

/// Every count of [`MetadataStore::row_counts`], in one statement.
const SQL_ROW_COUNTS: &str = "SELECT (SELECT COUNT(*) FROM settings), (SELECT COUNT(*) FROM users), \
     (SELECT COUNT(*) FROM projects), (SELECT COUNT(*) FROM identity_providers), (SELECT COUNT(*) FROM robots), \
     (SELECT COUNT(*) FROM blobs), (SELECT COALESCE(SUM(size), 0)::bigint FROM blobs), \
     (SELECT COUNT(*) FROM repositories r WHERE EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id) \
      OR EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.repo_id = r.id)), \
     (SELECT COUNT(*) FROM repo_blobs), (SELECT COUNT(*) FROM manifests), (SELECT COUNT(*) FROM manifest_refs), \
     (SELECT COUNT(*) FROM tags), (SELECT COUNT(*) FROM audit_events), (SELECT COUNT(*) FROM audit_names), \
     (SELECT COUNT(*) FROM project_members), (SELECT COUNT(*) FROM user_tokens)";

/// The key columns of a table, as the statements below name them.
#[derive(Clone, Copy)]
enum KeyCols {
    One(&'static str),
    Two(&'static str, &'static str),
    Id(&'static str),
}

/// The key columns of `table` in the export and prune statements (pairs through the repositories
/// table, aliased `r`; the table itself is `x`).
fn key_cols(table: Table) -> KeyCols {
    match table {
        Table::Settings => KeyCols::One("x.key"),
        Table::Users | Table::Projects | Table::IdentityProviders | Table::Robots => KeyCols::One("x.name"),
        Table::Tokens => KeyCols::One("x.id"),
        Table::Members => KeyCols::Two("x.project", "x.member"),
        Table::Blobs => KeyCols::One("x.digest"),
        Table::BlobLinks | Table::Manifests => KeyCols::Two("r.name", "x.digest"),
        Table::Tags => KeyCols::Two("r.name", "x.name"),
        Table::AuditEvents => KeyCols::Id("x.id"),
    }
}

fn key_shape_error(table: Table, key: &RowKey) -> MetaError {
    MetaError::Conflict(format!("a key {key:?} does not name a row of the table {}", table.name()))
}

/// Appends ` AND <key> > after AND <key> <= upto` for the bounds given.
fn push_range(b: &mut QueryBuilder<'_, Postgres>, table: Table, cols: KeyCols, after: Option<&RowKey>, upto: Option<&RowKey>) -> Result<()> {
    for (bound, op) in [(after, ">"), (upto, "<=")] {
        let Some(key) = bound else { continue };
        match (cols, key) {
            (KeyCols::One(c), RowKey::Name(v)) => {
                b.push(format_args!(" AND {c} {op} ")).push_bind(v.clone());
            }
            (KeyCols::Two(c1, c2), RowKey::Pair(v1, v2)) => {
                b.push(format_args!(" AND ({c1}, {c2}) {op} (")).push_bind(v1.clone()).push(", ").push_bind(v2.clone()).push(")");
            }
            (KeyCols::Id(c), RowKey::Id(v)) => {
                b.push(format_args!(" AND {c} {op} ")).push_bind(*v);
            }
            _ => return Err(key_shape_error(table, key)),
        }
    }
    Ok(())
}

/// Appends ` AND <key> NOT IN keep`.
fn push_not_kept(b: &mut QueryBuilder<'_, Postgres>, table: Table, cols: KeyCols, keep: &[RowKey]) -> Result<()> {
    match cols {
        KeyCols::One(c) => {
            let mut names = Vec::with_capacity(keep.len());
            for key in keep {
                match key {
                    RowKey::Name(v) => names.push(v.clone()),
                    other => return Err(key_shape_error(table, other)),
                }
            }
            b.push(format_args!(" AND NOT ({c} = ANY(")).push_bind(names).push("::text[]))");
        }
        KeyCols::Two(c1, c2) => {
            let (mut firsts, mut seconds) = (Vec::with_capacity(keep.len()), Vec::with_capacity(keep.len()));
            for key in keep {
                match key {
                    RowKey::Pair(v1, v2) => {
                        firsts.push(v1.clone());
                        seconds.push(v2.clone());
                    }
                    other => return Err(key_shape_error(table, other)),
                }
            }
            b.push(" AND NOT EXISTS (SELECT 1 FROM UNNEST(")
                .push_bind(firsts)
                .push("::text[], ")
                .push_bind(seconds)
                .push(format_args!("::text[]) AS k (a, b) WHERE k.a = {c1} AND k.b = {c2})"));
        }
        KeyCols::Id(c) => {
            let mut ids = Vec::with_capacity(keep.len());
            for key in keep {
                match key {
                    RowKey::Id(v) => ids.push(*v),
                    other => return Err(key_shape_error(table, other)),
                }
            }
            b.push(format_args!(" AND NOT ({c} = ANY(")).push_bind(ids).push("::bigint[]))");
        }
    }
    Ok(())
}

fn parse_repo(s: &str) -> Result<RepoName> {
    s.parse().map_err(|e| MetaError::Corrupt(format!("stored repository name {s:?}: {e}")))
}

/// Digests from a text array column.
fn digests_from(list: Vec<String>) -> Result<Vec<Digest>> {
    list.iter().map(|d| parse_digest(d)).collect()
}

impl PostgresStore {
    /// Connects to an existing installation without writing to it, for reading a copy from
    /// (`berth migrate`'s source): no migration runs, and every session is read-only
    /// (`default_transaction_read_only`: the server refuses any write, so every writing method
    /// fails). A database whose schema is not exactly this version's (no Berth schema, an older
    /// one that [`PostgresStore::connect`] would upgrade, or a newer one) is refused with a
    /// message saying what to do.
    pub async fn connect_read_only(options: &PostgresOptions) -> Result<PostgresStore> {
        let (mut conn, connect, target) = first_connection(options).await?;
        let checked = check_schema(&mut conn, &target).await;
        let _ = conn.close().await;
        checked?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.clamp(1, 8))
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(options.idle_timeout)
            .max_lifetime(options.max_lifetime)
            .test_before_acquire(true)
            .connect_lazy_with(connect.options([("default_transaction_read_only", "on")]));
        Ok(PostgresStore { pool, target })
    }

    async fn export_tx(&self, table: Table, after: Option<&RowKey>, limit: i64) -> R<Vec<ExportRow>> {
        let cols = key_cols(table);
        let (select, order) = match table {
            Table::Settings => ("SELECT x.key, x.value FROM settings x WHERE TRUE", "x.key"),
            Table::Users => (
                "SELECT x.name, x.password_hash, x.admin, x.disabled, x.idp_provider, x.idp_issuer, x.idp_subject, x.email, x.groups, \
                 x.created_at, x.last_login_at FROM users x WHERE TRUE",
                "x.name",
            ),
            Table::Tokens => (
                "SELECT x.id, x.user_name, x.kind, x.name, x.secret_hash, x.parent, x.scope, x.created_at, x.expires_at, x.last_used_at, \
                 x.refresh_token, x.checked_at FROM user_tokens x WHERE TRUE",
                "x.id",
            ),
            Table::Projects => ("SELECT x.name, x.public, x.created_at FROM projects x WHERE TRUE", "x.name"),
            Table::Members => ("SELECT x.project, x.member, x.role, x.created_at, x.updated_at FROM project_members x WHERE TRUE", "x.project, x.member"),
            Table::IdentityProviders => ("SELECT x.name, x.config, x.created_at, x.updated_at FROM identity_providers x WHERE TRUE", "x.name"),
            Table::Robots => (
                "SELECT x.name, x.project, x.description, x.disabled, x.expires_at, x.secret_hash, x.identity_provider, x.rules, \
                 x.permissions, x.created_at, x.updated_at FROM robots x WHERE TRUE",
                "x.name",
            ),
            Table::Blobs => ("SELECT x.digest, x.size, x.storage_key, x.last_used FROM blobs x WHERE TRUE", "x.digest"),
            Table::BlobLinks => (
                "SELECT r.name, x.digest, x.last_used FROM repo_blobs x JOIN repositories r ON r.id = x.repo_id WHERE TRUE",
                "r.name, x.digest",
            ),
            Table::Manifests => (
                "SELECT r.name, x.digest, x.media_type, x.bytes, x.subject, x.artifact_type, x.annotations, x.created, \
                 ARRAY(SELECT mr.ref_digest FROM manifest_refs mr WHERE mr.repo_id = x.repo_id AND mr.manifest_digest = x.digest \
                       AND mr.kind = 'blob' ORDER BY mr.ref_digest), \
                 ARRAY(SELECT mr.ref_digest FROM manifest_refs mr WHERE mr.repo_id = x.repo_id AND mr.manifest_digest = x.digest \
                       AND mr.kind = 'manifest' ORDER BY mr.ref_digest) \
                 FROM manifests x JOIN repositories r ON r.id = x.repo_id WHERE TRUE",
                "r.name, x.digest",
            ),
            Table::Tags => (
                "SELECT r.name, x.name, x.manifest_digest, x.updated FROM tags x JOIN repositories r ON r.id = x.repo_id WHERE TRUE",
                "r.name, x.name",
            ),
            Table::AuditEvents => (
                "SELECT x.id, x.time_ms, x.action, x.result, x.principal, x.robots, x.provider, x.subject, x.jti, x.claims, \
                 x.repository, x.reference, x.client, x.message FROM audit_events x WHERE TRUE",
                "x.id",
            ),
        };
        let mut b = QueryBuilder::new(select);
        push_range(&mut b, table, cols, after, None)?;
        b.push(format_args!(" ORDER BY {order} LIMIT ")).push_bind(limit);
        let rows = b.build().fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(match table {
                Table::Settings => ExportRow::Setting { key: r.try_get(0)?, value: r.try_get(1)? },
                Table::Users => ExportRow::User(user_from_row(r)?),
                Table::Tokens => ExportRow::Token(token_from_row(r)?),
                Table::Projects => ExportRow::Project(project_from_row(r)?),
                Table::Members => ExportRow::Member(member_from_row(r)?),
                Table::IdentityProviders => ExportRow::IdentityProvider(idp_from_row(r)?),
                Table::Robots => ExportRow::Robot(robot_from_row(r)?),
                Table::Blobs => {
                    let digest: String = r.try_get(0)?;
                    ExportRow::Blob(BlobExport {
                        digest: parse_digest(&digest)?,
                        size: size_from_db(r.try_get(1)?)?,
                        storage_key: r.try_get(2)?,
                        last_used: r.try_get(3)?,
                    })
                }
                Table::BlobLinks => {
                    let (repo, digest): (String, String) = (r.try_get(0)?, r.try_get(1)?);
                    ExportRow::BlobLink(BlobLinkExport { repo: parse_repo(&repo)?, digest: parse_digest(&digest)?, last_used: r.try_get(2)? })
                }
                Table::Manifests => {
                    let (repo, digest): (String, String) = (r.try_get(0)?, r.try_get(1)?);
                    let subject: Option<String> = r.try_get(4)?;
                    ExportRow::Manifest(ManifestExport {
                        repo: parse_repo(&repo)?,
                        digest: parse_digest(&digest)?,
                        media_type: r.try_get(2)?,
                        bytes: r.try_get(3)?,
                        subject: subject.as_deref().map(parse_digest).transpose()?,
                        artifact_type: r.try_get(5)?,
                        annotations: r.try_get(6)?,
                        created: r.try_get(7)?,
                        blobs: digests_from(r.try_get(8)?)?,
                        manifests: digests_from(r.try_get(9)?)?,
                    })
                }
                Table::Tags => {
                    let (repo, tag, digest): (String, String, String) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                    ExportRow::Tag(TagExport {
                        repo: parse_repo(&repo)?,
                        tag: tag.parse().map_err(|e| MetaError::Corrupt(format!("stored tag {tag:?}: {e}")))?,
                        manifest: parse_digest(&digest)?,
                        updated: r.try_get(3)?,
                    })
                }
                Table::AuditEvents => ExportRow::AuditEvent(audit_from_row(r)?),
            });
        }
        Ok(out)
    }

    async fn import_tx(&self, rows: &[ExportRow]) -> R<ImportOutcome> {
        let mut outcome = ImportOutcome::default();
        let federation =
            rows.iter().any(|r| matches!(r.table(), Table::Users | Table::Tokens | Table::Projects | Table::Members | Table::IdentityProviders | Table::Robots));
        let mut tx = self.begin().await?;
        if federation {
            // Like every write to these tables (module docs).
            lock_federation(&mut tx).await?;
        }
        let mut audit_written = false;
        let mut tokens: Vec<&TokenRecord> = Vec::new();
        for row in rows {
            match row {
                ExportRow::Setting { key, value } => {
                    sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                        .bind(key)
                        .bind(value)
                        .execute(&mut *tx)
                        .await?;
                }
                ExportRow::User(u) => {
                    if let Some(identity) = &u.identity {
                        // The identity is this user's at the source: another row that has it
                        // here is the destination's old state (see the trait docs).
                        sqlx::query(
                            "UPDATE users SET idp_provider = NULL, idp_issuer = NULL, idp_subject = NULL \
                             WHERE idp_issuer = $1 AND idp_subject = $2 AND name <> $3",
                        )
                        .bind(&identity.issuer)
                        .bind(&identity.subject)
                        .bind(&u.name)
                        .execute(&mut *tx)
                        .await?;
                    }
                    upsert_user(&mut tx, u, &u.groups, true).await?;
                }
                ExportRow::Token(t) => {
                    // Written after the other rows, parents first (below).
                    tokens.push(t);
                    continue;
                }
                ExportRow::Project(p) => {
                    sqlx::query(
                        "INSERT INTO projects (name, public, created_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (name) DO UPDATE SET public = excluded.public, created_at = excluded.created_at",
                    )
                    .bind(&p.name)
                    .bind(p.public)
                    .bind(p.created_at)
                    .execute(&mut *tx)
                    .await?;
                }
                ExportRow::Member(m) => {
                    let known: Option<i32> = sqlx::query_scalar("SELECT 1 FROM projects WHERE name = $1").bind(&m.project).fetch_optional(&mut *tx).await?;
                    if known.is_none() {
                        outcome.skipped.push(format!("member {:?} of project {:?}: the project is not here", m.member, m.project));
                        continue;
                    }
                    sqlx::query(
                        "INSERT INTO project_members (project, member, role, created_at, updated_at) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (project, member) DO UPDATE SET role = excluded.role, created_at = excluded.created_at, \
                         updated_at = excluded.updated_at",
                    )
                    .bind(&m.project)
                    .bind(&m.member)
                    .bind(&m.role)
                    .bind(m.created_at)
                    .bind(m.updated_at)
                    .execute(&mut *tx)
                    .await?;
                }
                ExportRow::IdentityProvider(p) => {
                    sqlx::query(
                        "INSERT INTO identity_providers (name, config, created_at, updated_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (name) DO UPDATE SET config = excluded.config, created_at = excluded.created_at, \
                         updated_at = excluded.updated_at",
                    )
                    .bind(&p.name)
                    .bind(p.config.to_string())
                    .bind(p.created_at)
                    .bind(p.updated_at)
                    .execute(&mut *tx)
                    .await?;
                }
                ExportRow::Robot(robot) => {
                    match check_robot_refs(&mut tx, robot).await {
                        Ok(()) => {}
                        Err(Failure::Meta(MetaError::Conflict(why))) => {
                            outcome.skipped.push(format!("robot {:?}: {why}", robot.name));
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                    upsert_robot(&mut tx, robot, robot.secret_hash.as_deref(), robot.created_at, robot.updated_at).await?;
                    // upsert_robot keeps an existing robot's creation time; an import sets it.
                    sqlx::query("UPDATE robots SET created_at = $2 WHERE name = $1")
                        .bind(&robot.name)
                        .bind(robot.created_at)
                        .execute(&mut *tx)
                        .await?;
                }
                ExportRow::Blob(blob) => {
                    let stored: String = sqlx::query_scalar(
                        "INSERT INTO blobs (digest, size, storage_key, last_used) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (digest) DO UPDATE SET last_used = excluded.last_used RETURNING storage_key",
                    )
                    .bind(blob.digest.as_str())
                    .bind(size_to_db(blob.size)?)
                    .bind(&blob.storage_key)
                    .bind(blob.last_used)
                    .fetch_one(&mut *tx)
                    .await?;
                    if stored != blob.storage_key {
                        outcome.unused_keys.push(blob.storage_key.clone());
                    }
                }
                ExportRow::BlobLink(link) => {
                    let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = $1)")
                        .bind(link.digest.as_str())
                        .fetch_one(&mut *tx)
                        .await?;
                    if !known {
                        outcome.skipped.push(format!("link of {} to {}: no blob record", link.digest, link.repo));
                        continue;
                    }
                    let repo_id = repo_id_for_write(&mut tx, &link.repo).await?;
                    sqlx::query(
                        "INSERT INTO repo_blobs (repo_id, digest, last_used) VALUES ($1, $2, $3) \
                         ON CONFLICT (repo_id, digest) DO UPDATE SET last_used = excluded.last_used",
                    )
                    .bind(repo_id)
                    .bind(link.digest.as_str())
                    .bind(link.last_used)
                    .execute(&mut *tx)
                    .await?;
                }
                ExportRow::Manifest(m) => {
                    let repo_id = repo_id_for_write(&mut tx, &m.repo).await?;
                    // Written (and its references replaced) only when it differs from what is
                    // stored, so a rerun over an unchanged manifest writes nothing.
                    let written: Option<i32> = sqlx::query_scalar(
                        "INSERT INTO manifests (repo_id, digest, media_type, bytes, size, subject, artifact_type, annotations, created) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT (repo_id, digest) DO UPDATE SET media_type = excluded.media_type, bytes = excluded.bytes, \
                         size = excluded.size, subject = excluded.subject, artifact_type = excluded.artifact_type, \
                         annotations = excluded.annotations, created = excluded.created \
                         WHERE (manifests.media_type, manifests.bytes, manifests.subject, manifests.artifact_type, \
                         manifests.annotations, manifests.created) IS DISTINCT FROM (excluded.media_type, excluded.bytes, \
                         excluded.subject, excluded.artifact_type, excluded.annotations, excluded.created) RETURNING 1",
                    )
                    .bind(repo_id)
                    .bind(m.digest.as_str())
                    .bind(&m.media_type)
                    .bind(&m.bytes)
                    .bind(size_to_db(m.bytes.len() as u64)?)
                    .bind(m.subject.as_ref().map(|d| d.as_str()))
                    .bind(m.artifact_type.as_deref())
                    .bind(m.annotations.as_deref())
                    .bind(m.created)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let refs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM manifest_refs WHERE repo_id = $1 AND manifest_digest = $2")
                        .bind(repo_id)
                        .bind(m.digest.as_str())
                        .fetch_one(&mut *tx)
                        .await?;
                    if written.is_some() || refs != (m.blobs.len() + m.manifests.len()) as i64 {
                        sqlx::query("DELETE FROM manifest_refs WHERE repo_id = $1 AND manifest_digest = $2")
                            .bind(repo_id)
                            .bind(m.digest.as_str())
                            .execute(&mut *tx)
                            .await?;
                        for (kind, list) in [("blob", &m.blobs), ("manifest", &m.manifests)] {
                            if list.is_empty() {
                                continue;
                            }
                            let list: Vec<&str> = list.iter().map(|d| d.as_str()).collect();
                            sqlx::query(
                                "INSERT INTO manifest_refs (repo_id, manifest_digest, ref_digest, kind) \
                                 SELECT $1, $2, d, $3 FROM UNNEST($4::text[]) AS d ON CONFLICT DO NOTHING",
                            )
                            .bind(repo_id)
                            .bind(m.digest.as_str())
                            .bind(kind)
                            .bind(&list)
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                }
                ExportRow::Tag(t) => {
                    let repo_id: Option<i64> = sqlx::query_scalar(
                        "SELECT r.id FROM repositories r JOIN manifests m ON m.repo_id = r.id WHERE r.name = $1 AND m.digest = $2",
                    )
                    .bind(t.repo.as_str())
                    .bind(t.manifest.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(repo_id) = repo_id else {
                        outcome.skipped.push(format!("tag {}:{}: no manifest {}", t.repo, t.tag, t.manifest));
                        continue;
                    };
                    sqlx::query(
                        "INSERT INTO tags (repo_id, name, manifest_digest, updated) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (repo_id, name) DO UPDATE SET manifest_digest = excluded.manifest_digest, updated = excluded.updated",
                    )
                    .bind(repo_id)
                    .bind(t.tag.as_str())
                    .bind(t.manifest.as_str())
                    .bind(t.updated)
                    .execute(&mut *tx)
                    .await?;
                }
                ExportRow::AuditEvent(e) => {
                    // The id is kept (OVERRIDING SYSTEM VALUE); written, and its names rebuilt,
                    // only when it differs from what is stored.
                    let written: Option<i64> = sqlx::query_scalar(
                        "INSERT INTO audit_events (id, time_ms, action, result, principal, robots, provider, subject, jti, claims, \
                         repository, reference, client, message) OVERRIDING SYSTEM VALUE \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                         ON CONFLICT (id) DO UPDATE SET time_ms = excluded.time_ms, action = excluded.action, \
                         result = excluded.result, principal = excluded.principal, robots = excluded.robots, \
                         provider = excluded.provider, subject = excluded.subject, jti = excluded.jti, claims = excluded.claims, \
                         repository = excluded.repository, reference = excluded.reference, client = excluded.client, \
                         message = excluded.message \
                         WHERE (audit_events.time_ms, audit_events.action, audit_events.result, audit_events.principal, \
                         audit_events.robots, audit_events.provider, audit_events.subject, audit_events.jti, audit_events.claims, \
                         audit_events.repository, audit_events.reference, audit_events.client, audit_events.message) \
                         IS DISTINCT FROM (excluded.time_ms, excluded.action, excluded.result, excluded.principal, excluded.robots, \
                         excluded.provider, excluded.subject, excluded.jti, excluded.claims, excluded.repository, \
                         excluded.reference, excluded.client, excluded.message) RETURNING id",
                    )
                    .bind(e.id)
                    .bind(e.time_ms)
                    .bind(&e.action)
                    .bind(&e.result)
                    .bind(&e.principal)
                    .bind(json_strings(e.robots.iter().map(String::as_str)))
                    .bind(e.provider.as_deref())
                    .bind(e.subject.as_deref())
                    .bind(e.jti.as_deref())
                    .bind(e.claims.as_ref().map(|c| c.to_string()))
                    .bind(e.repository.as_deref())
                    .bind(e.reference.as_deref())
                    .bind(e.client.as_deref())
                    .bind(e.message.as_deref())
                    .fetch_optional(&mut *tx)
                    .await?;
                    if written.is_some() {
                        audit_written = true;
                        sqlx::query("DELETE FROM audit_names WHERE event_id = $1").bind(e.id).execute(&mut *tx).await?;
                        let names: Vec<&str> = e.robots.iter().map(String::as_str).chain([e.principal.as_str()]).collect();
                        sqlx::query("INSERT INTO audit_names (name, event_id) SELECT DISTINCT n, $2 FROM UNNEST($1::text[]) AS n ON CONFLICT DO NOTHING")
                            .bind(&names)
                            .bind(e.id)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            outcome.imported += 1;
        }
        // Tokens: in rounds, each writing those whose parent is here by now (written in an
        // earlier round, or before this import), until a round writes none.
        let mut pending = tokens;
        while !pending.is_empty() {
            let mut waiting = Vec::new();
            let mut written = false;
            for t in pending {
                let user: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE name = $1)").bind(&t.user).fetch_one(&mut *tx).await?;
                if !user {
                    outcome.skipped.push(format!("token {:?}: its user {:?} is not here", t.id, t.user));
                    continue;
                }
                if let Some(parent) = &t.parent {
                    let here: bool =
                        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM user_tokens WHERE id = $1)").bind(parent).fetch_one(&mut *tx).await?;
                    if !here {
                        waiting.push(t);
                        continue;
                    }
                }
                insert_token(&mut tx, t, true).await?;
                outcome.imported += 1;
                written = true;
            }
            if !written {
                wait_for_parents(&mut outcome, &waiting);
                break;
            }
            pending = waiting;
        }
        if audit_written {
            // Later appends get ids above the imported ones.
            sqlx::query(
                "SELECT setval(pg_get_serial_sequence('audit_events', 'id'), \
                 GREATEST((SELECT MAX(id) FROM audit_events), \
                 COALESCE(pg_sequence_last_value(pg_get_serial_sequence('audit_events', 'id')::regclass), 1)))",
            )
            .execute(&mut *tx)
            .await?;
        }
        if federation {
            bump_generation(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    async fn prune_tx(&self, table: Table, after: Option<&RowKey>, upto: Option<&RowKey>, keep: &[RowKey]) -> R<PruneOutcome> {
        let cols = key_cols(table);
        // The rows to remove, as a sub-query over the table (aliased x, with r for pairs).
        let doomed = |select: &str| -> Result<QueryBuilder<'static, Postgres>> {
            let mut b = QueryBuilder::new(select.to_owned());
            push_range(&mut b, table, cols, after, upto)?;
            push_not_kept(&mut b, table, cols, keep)?;
            b.push(")");
            Ok(b)
        };
        let federation = matches!(table, Table::Users | Table::Tokens | Table::Projects | Table::Members | Table::IdentityProviders | Table::Robots);
        let mut tx = self.begin().await?;
        if federation {
            lock_federation(&mut tx).await?;
        }
        let mut outcome = PruneOutcome::default();
        match table {
            Table::Settings => {
                let mut b = doomed("DELETE FROM settings WHERE key IN (SELECT x.key FROM settings x WHERE TRUE")?;
                outcome.removed = b.build().execute(&mut *tx).await?.rows_affected();
            }
            Table::Users | Table::Robots | Table::Tokens => {
                // A user's tokens, and a token's children, go with it (ON DELETE CASCADE).
                let (t, key) = match table {
                    Table::Users => ("users", "name"),
                    Table::Robots => ("robots", "name"),
                    _ => ("user_tokens", "id"),
                };
                let mut b = doomed(&format!("DELETE FROM {t} WHERE {key} IN (SELECT x.{key} FROM {t} x WHERE TRUE"))?;
                outcome.removed = b.build().execute(&mut *tx).await?.rows_affected();
            }
            Table::Projects | Table::IdentityProviders => {
                let (t, column) = if table == Table::Projects { ("projects", "project") } else { ("identity_providers", "identity_provider") };
                let mut robots = doomed(&format!("DELETE FROM robots WHERE {column} IN (SELECT x.name FROM {t} x WHERE TRUE"))?;
                robots.build().execute(&mut *tx).await?;
                let mut b = doomed(&format!("DELETE FROM {t} WHERE name IN (SELECT x.name FROM {t} x WHERE TRUE"))?;
                outcome.removed = b.build().execute(&mut *tx).await?.rows_affected();
            }
            Table::Blobs => {
                let mut links = doomed("DELETE FROM repo_blobs WHERE digest IN (SELECT x.digest FROM blobs x WHERE TRUE")?;
                links.build().execute(&mut *tx).await?;
                let mut b = doomed("DELETE FROM blobs WHERE digest IN (SELECT x.digest FROM blobs x WHERE TRUE")?;
                b.push(" RETURNING storage_key");
                let keys: Vec<String> = b.build_query_scalar().fetch_all(&mut *tx).await?;
                outcome.removed = keys.len() as u64;
                outcome.deleted_keys = keys;
            }
            Table::BlobLinks => {
                let mut b = doomed(
                    "DELETE FROM repo_blobs WHERE (repo_id, digest) IN \
                     (SELECT x.repo_id, x.digest FROM repo_blobs x JOIN repositories r ON r.id = x.repo_id WHERE TRUE",
                )?;
                outcome.removed = b.build().execute(&mut *tx).await?.rows_affected();
            }
            Table::Manifests => {
                // Tags and references go with their manifest (ON DELETE CASCADE).
                let mut b = doomed(
                    "DELETE FROM manifests WHERE (repo_id, digest) IN \
                     (SELECT x.repo_id, x.digest FROM manifests x JOIN repositories r ON r.id = x.repo_id WHERE TRUE",
                )?;
                outcome.removed = b.build().execute(&mut *tx).await?.rows_affected();
            }
            Table::Tags => {
                let mut b = doomed(
                    "DELETE FROM tags WHERE (repo_id, name) IN \
                     (SELECT x.repo_id, x.name FROM tags x JOIN repositories r ON r.id = x.repo_id WHERE TRUE",
                )?;
                outcome.removed = b.build().execute(&mut *tx).await?.rows_affected();
            }
            Table::AuditEvents => {
                // Their names go with them (ON DELETE CASCADE).
                let mut b = doomed("DELETE FROM audit_events WHERE id IN (SELECT x.id FROM audit_events x WHERE TRUE")?;
                outcome.removed = b.build().execute(&mut *tx).await?.rows_affected();
            }
            Table::Members => {
                let mut b = doomed(
                    "DELETE FROM project_members WHERE (project, member) IN (SELECT x.project, x.member FROM project_members x WHERE TRUE",
                )?;
                outcome.removed = b.build().execute(&mut *tx).await?.rows_affected();
            }
        }
        if federation && outcome.removed > 0 {
            bump_generation(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }
}

/// Refuses a database whose applied migrations are not exactly this version's (see
/// [`PostgresStore::connect_read_only`]).
async fn check_schema(conn: &mut PgConnection, target: &str) -> Result<()> {
    let installed: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(&mut *conn).await.map_err(sql_error)?;
    if !installed {
        return Err(MetaError::Migrate(format!("{target} holds no Berth installation (no schema)")));
    }
    let applied: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(&mut *conn)
        .await
        .map_err(sql_error)?;
    let known: Vec<(i64, &[u8])> = MIGRATOR.iter().map(|m| (m.version, &*m.checksum)).collect();
    for (version, checksum) in &applied {
        match known.iter().find(|(v, _)| v == version) {
            None => {
                return Err(MetaError::Migrate(format!(
                    "{target} has the schema of a newer Berth (migration {version} is unknown to this one); use that Berth's own `berth migrate`"
                )))
            }
            Some((_, c)) if *c != checksum.as_slice() => {
                return Err(MetaError::Migrate(format!("{target}: migration {version} differs from this Berth's; it was not made by this Berth")))
            }
            Some(_) => {}
        }
    }
    if applied.len() < known.len() {
        return Err(MetaError::Migrate(format!(
            "{target} has the schema of an older Berth and needs an upgrade, which is never done to a database opened only for reading: \
             start this Berth once on it (`berth serve`, or `berth gc`, which upgrade it), then run again"
        )));
    }
    Ok(())
}

fn upload_from_row(id: &str, row: &PgRow) -> Result<UploadRecord> {
    let repo: String = row.try_get(0).map_err(sql_error)?;
    let parts: i64 = row.try_get(5).map_err(sql_error)?;
    Ok(UploadRecord {
        id: id.to_owned(),
        repo: repo.parse().map_err(|e| MetaError::Corrupt(format!("upload {id}: {e}")))?,
        created: row.try_get(1).map_err(sql_error)?,
        updated: row.try_get(2).map_err(sql_error)?,
        offset: size_from_db(row.try_get(3).map_err(sql_error)?)?,
        hash_state: row.try_get(4).map_err(sql_error)?,
        parts: u32::try_from(parts).map_err(|_| MetaError::Corrupt(format!("upload {id}: stored part count {parts}")))?,
    })
}

/// Creates or updates a project (an existing one keeps its creation time).
async fn upsert_project(conn: &mut PgConnection, project: &ProjectRecord, created_at: UnixTime) -> R<()> {
    sqlx::query(
        "INSERT INTO projects (name, public, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET public = excluded.public",
    )
    .bind(&project.name)
    .bind(project.public)
    .bind(created_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The writes of [`MetadataStore::apply`] inside its transaction (which holds the federation
/// lock; the caller commits on success, an error rolls everything back).
async fn apply_in(conn: &mut PgConnection, batch: ApplyBatch<'_>, now: UnixTime) -> R<ApplyOutcome> {
    let mut outcome = ApplyOutcome::default();
    for p in batch.projects {
        let public: Option<bool> =
            sqlx::query_scalar("SELECT public FROM projects WHERE name = $1").bind(&p.name).fetch_optional(&mut *conn).await?;
        let action = match public {
            Some(public) if public == p.public => ApplyAction::Unchanged,
            Some(_) => ApplyAction::Updated,
            None => ApplyAction::Created,
        };
        if action != ApplyAction::Unchanged {
            upsert_project(conn, p, now).await?;
        }
        outcome.projects.push(action);
    }
    for m in batch.members {
        let project: Option<i32> = sqlx::query_scalar("SELECT 1 FROM projects WHERE name = $1").bind(&m.project).fetch_optional(&mut *conn).await?;
        if project.is_none() {
            return Err(MetaError::Conflict(format!("member {} of project {:?}: the project does not exist", m.member, m.project)).into());
        }
        let role: Option<String> = sqlx::query_scalar("SELECT role FROM project_members WHERE project = $1 AND member = $2")
            .bind(&m.project)
            .bind(&m.member)
            .fetch_optional(&mut *conn)
            .await?;
        let action = match role {
            Some(r) if r == m.role => ApplyAction::Unchanged,
            Some(_) => ApplyAction::Updated,
            None => ApplyAction::Created,
        };
        if action != ApplyAction::Unchanged {
            sqlx::query(
                "INSERT INTO project_members (project, member, role, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (project, member) DO UPDATE SET role = excluded.role, updated_at = excluded.updated_at",
            )
            .bind(&m.project)
            .bind(&m.member)
            .bind(&m.role)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
        outcome.members.push(action);
    }
    for provider in batch.identity_providers {
        let row = sqlx::query("SELECT name, config, created_at, updated_at FROM identity_providers WHERE name = $1")
            .bind(&provider.name)
            .fetch_optional(&mut *conn)
            .await?;
        let action = match row.map(|r| idp_from_row(&r)).transpose()? {
            Some(stored) if stored.config == provider.config => ApplyAction::Unchanged,
            Some(_) => ApplyAction::Updated,
            None => ApplyAction::Created,
        };
        if action != ApplyAction::Unchanged {
            upsert_identity_provider(conn, provider, now, now).await?;
        }
        outcome.identity_providers.push(action);
    }
    for robot in batch.robots {
        check_robot_refs(conn, robot).await?;
        let row = sqlx::query(&format!("SELECT {ROBOT_COLUMNS} FROM robots WHERE name = $1")).bind(&robot.name).fetch_optional(&mut *conn).await?;
        let stored = row.map(|r| robot_from_row(&r)).transpose()?;
        let federated = robot.identity_provider.is_some();
        let stored_hash = stored.as_ref().and_then(|s| s.secret_hash.clone());
        let action = match &stored {
            None => ApplyAction::Created,
            Some(s)
                if s.project == robot.project
                    && s.description == robot.description
                    && s.disabled == robot.disabled
                    && s.expires_at == robot.expires_at
                    && s.identity_provider == robot.identity_provider
                    && s.rules == robot.rules
                    && s.permissions == robot.permissions
                    && (federated || stored_hash.is_some()) =>
            {
                ApplyAction::Unchanged
            }
            Some(_) => ApplyAction::Updated,
        };
        let mut secret_stored = false;
        if action != ApplyAction::Unchanged {
            // A federated robot has no secret; a static one keeps its hash, or gets the batch's.
            let hash = match (federated, stored_hash) {
                (true, _) => None,
                (false, Some(kept)) => Some(kept),
                (false, None) => {
                    secret_stored = robot.secret_hash.is_some();
                    robot.secret_hash.clone()
                }
            };
            let created_at = stored.as_ref().map_or(now, |s| s.created_at);
            upsert_robot(conn, robot, hash.as_deref(), created_at, now).await?;
        }
        outcome.robots.push((action, secret_stored));
    }
    let changed = outcome
        .projects
        .iter()
        .chain(&outcome.identity_providers)
        .chain(&outcome.members)
        .chain(outcome.robots.iter().map(|(a, _)| a))
        .any(|a| *a != ApplyAction::Unchanged);
    if changed {
        bump_generation(conn).await?;
    }
    Ok(outcome)
}

/// Refuses (with a [`MetaError::Conflict`] naming what is wrong) a robot with both a static
/// secret and an identity provider, or whose project or provider does not exist. The schema
/// enforces all three too; checking first gives messages that name the missing row. (The caller
/// holds the federation lock, so nothing deletes them before the robot is written.)
async fn check_robot_refs(conn: &mut PgConnection, robot: &RobotRecord) -> R<()> {
    if robot.secret_hash.is_some() && robot.identity_provider.is_some() {
        return Err(MetaError::Conflict(format!("robot {:?} cannot have both a static secret and an identity provider", robot.name)).into());
    }
    if let Some(project) = &robot.project {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM projects WHERE name = $1)").bind(project).fetch_one(&mut *conn).await?;
        if !exists {
            return Err(MetaError::Conflict(format!("project {project:?} does not exist; create it before robot {:?}", robot.name)).into());
        }
    }
    if let Some(provider) = &robot.identity_provider {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM identity_providers WHERE name = $1)")
            .bind(provider)
            .fetch_one(&mut *conn)
            .await?;
        if !exists {
            return Err(MetaError::Conflict(format!(
                "identity provider {provider:?} does not exist; add it before robot {:?}",
                robot.name
            ))
            .into());
        }
    }
    Ok(())
}

/// Creates or replaces a robot with `secret_hash` (instead of the record's) and these times; an
/// existing robot keeps its creation time.
async fn upsert_robot(conn: &mut PgConnection, robot: &RobotRecord, secret_hash: Option<&str>, created_at: UnixTime, updated_at: UnixTime) -> R<()> {
    sqlx::query(
        "INSERT INTO robots (name, project, description, disabled, expires_at, secret_hash, identity_provider, \
         rules, permissions, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (name) DO UPDATE SET project = excluded.project, description = excluded.description, \
         disabled = excluded.disabled, expires_at = excluded.expires_at, secret_hash = excluded.secret_hash, \
         identity_provider = excluded.identity_provider, rules = excluded.rules, \
         permissions = excluded.permissions, updated_at = excluded.updated_at",
    )
    .bind(&robot.name)
    .bind(&robot.project)
    .bind(&robot.description)
    .bind(robot.disabled)
    .bind(robot.expires_at)
    .bind(secret_hash)
    .bind(&robot.identity_provider)
    .bind(robot.rules.to_string())
    .bind(robot.permissions.to_string())
    .bind(created_at)
    .bind(updated_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Creates or replaces an identity provider with these times; an existing one keeps its creation
/// time.
async fn upsert_identity_provider(conn: &mut PgConnection, provider: &IdentityProviderRecord, created_at: UnixTime, updated_at: UnixTime) -> R<()> {
    sqlx::query(
        "INSERT INTO identity_providers (name, config, created_at, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
    )
    .bind(&provider.name)
    .bind(provider.config.to_string())
    .bind(created_at)
    .bind(updated_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The robots whose `column` (`project` or `identity_provider`) is `value`, as a short list for a
/// message ("a, b and 3 more"), or None when there are none.
async fn robots_referring(conn: &mut PgConnection, column: &str, value: &str) -> R<Option<String>> {
    debug_assert!(matches!(column, "project" | "identity_provider"));
    let names: Vec<String> = sqlx::query_scalar(&format!("SELECT name FROM robots WHERE {column} = $1 ORDER BY name LIMIT $2"))
        .bind(value)
        .bind(IN_USE_NAMES)
        .fetch_all(&mut *conn)
        .await?;
    if names.is_empty() {
        return Ok(None);
    }
    let mut list = names.join(", ");
    if names.len() as i64 == IN_USE_NAMES {
        let total: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM robots WHERE {column} = $1")).bind(value).fetch_one(&mut *conn).await?;
        if total > IN_USE_NAMES {
            list.push_str(&format!(" and {} more", total - IN_USE_NAMES));
        }
    }
    Ok(Some(list))
}

/// Refuses (with a [`MetaError::Conflict`] saying what to do) a write that would leave no enabled
/// admin: `name` is now the only enabled admin. `change` says what the refused write would do.
/// The caller holds the federation lock, so no other user write runs between this check and its
/// own.
async fn refuse_last_admin(conn: &mut PgConnection, name: &str, change: &str) -> R<()> {
    let last: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM users WHERE name = $1 AND admin AND NOT disabled) \
         AND NOT EXISTS (SELECT 1 FROM users WHERE name <> $1 AND admin AND NOT disabled)",
    )
    .bind(name)
    .fetch_one(&mut *conn)
    .await?;
    if last {
        return Err(MetaError::Conflict(format!("user {name:?} is the last enabled admin; make another user an admin before you {change}")).into());
    }
    Ok(())
}

fn user_from_row(r: &PgRow) -> R<UserRecord> {
    let name: String = r.try_get(0)?;
    let identity = match (r.try_get(4)?, r.try_get(5)?, r.try_get(6)?) {
        (Some(provider), Some(issuer), Some(subject)) => Some(UserIdentity { provider, issuer, subject }),
        (None::<String>, None::<String>, None::<String>) => None,
        _ => return Err(MetaError::Corrupt(format!("user {name:?}: a part of its identity is missing")).into()),
    };
    let groups: Vec<String> =
        serde_json::from_value(json_column(r, 8, "user groups")?).map_err(|e| MetaError::Corrupt(format!("stored groups of user {name:?}: {e}")))?;
    Ok(UserRecord {
        name,
        password_hash: r.try_get(1)?,
        admin: r.try_get(2)?,
        disabled: r.try_get(3)?,
        identity,
        email: r.try_get(7)?,
        groups,
        created_at: r.try_get(9)?,
        last_login_at: r.try_get(10)?,
    })
}

/// Creates or replaces a user with `groups` (instead of the record's). An existing user keeps its
/// creation time unless `set_created` (an import).
async fn upsert_user(conn: &mut PgConnection, user: &UserRecord, groups: &[String], set_created: bool) -> R<()> {
    sqlx::query(&format!(
        "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash, admin = excluded.admin, \
         disabled = excluded.disabled, idp_provider = excluded.idp_provider, idp_issuer = excluded.idp_issuer, \
         idp_subject = excluded.idp_subject, email = excluded.email, groups = excluded.groups, \
         last_login_at = excluded.last_login_at{}",
        if set_created { ", created_at = excluded.created_at" } else { "" }
    ))
    .bind(&user.name)
    .bind(&user.password_hash)
    .bind(user.admin)
    .bind(user.disabled)
    .bind(user.identity.as_ref().map(|i| i.provider.as_str()))
    .bind(user.identity.as_ref().map(|i| i.issuer.as_str()))
    .bind(user.identity.as_ref().map(|i| i.subject.as_str()))
    .bind(user.email.as_deref())
    .bind(json_strings(groups.iter().map(String::as_str)))
    .bind(user.created_at)
    .bind(user.last_login_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Refuses (with a [`MetaError::Conflict`] naming the holder) a write of `user` whose identity
/// another user has. The unique index enforces it too; checking first names the holder. (The
/// caller holds the federation lock, so no other user write runs between this check and its
/// own.)
async fn refuse_identity_taken(conn: &mut PgConnection, user: &UserRecord) -> R<()> {
    let Some(identity) = &user.identity else { return Ok(()) };
    let holder: Option<String> = sqlx::query_scalar("SELECT name FROM users WHERE idp_issuer = $1 AND idp_subject = $2 AND name <> $3")
        .bind(&identity.issuer)
        .bind(&identity.subject)
        .bind(&user.name)
        .fetch_optional(&mut *conn)
        .await?;
    match holder {
        Some(holder) => Err(identity_taken(identity, &holder).into()),
        None => Ok(()),
    }
}

fn token_from_row(r: &PgRow) -> R<TokenRecord> {
    let id: String = r.try_get(0)?;
    let kind: String = r.try_get(2)?;
    let kind = TokenKind::parse(&kind).ok_or_else(|| MetaError::Corrupt(format!("token {id:?}: stored kind {kind:?}")))?;
    let scope: Option<String> = r.try_get(6)?;
    let scope = scope
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| MetaError::Corrupt(format!("stored scope of token {id:?} is not JSON: {e}")))?;
    Ok(TokenRecord {
        id,
        user: r.try_get(1)?,
        kind,
        name: r.try_get(3)?,
        secret_hash: r.try_get(4)?,
        parent: r.try_get(5)?,
        scope,
        created_at: r.try_get(7)?,
        expires_at: r.try_get(8)?,
        last_used_at: r.try_get(9)?,
        refresh_token: r.try_get(10)?,
        checked_at: r.try_get(11)?,
    })
}

/// Inserts a token; an existing id is left alone (false), or brought to `token` when `replace`
/// (an import: an upsert, never a delete, which would take its children).
async fn insert_token(conn: &mut PgConnection, token: &TokenRecord, replace: bool) -> R<bool> {
    let conflict = if replace {
        "DO UPDATE SET user_name = excluded.user_name, kind = excluded.kind, name = excluded.name, \
         secret_hash = excluded.secret_hash, parent = excluded.parent, scope = excluded.scope, created_at = excluded.created_at, \
         expires_at = excluded.expires_at, last_used_at = excluded.last_used_at, refresh_token = excluded.refresh_token, \
         checked_at = excluded.checked_at"
    } else {
        "DO NOTHING"
    };
    let done = sqlx::query(&format!(
        "INSERT INTO user_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (id) {conflict}"
    ))
    .bind(&token.id)
    .bind(&token.user)
    .bind(token.kind.as_str())
    .bind(&token.name)
    .bind(&token.secret_hash)
    .bind(token.parent.as_deref())
    .bind(token.scope.as_ref().map(|s| s.to_string()))
    .bind(token.created_at)
    .bind(token.expires_at)
    .bind(token.last_used_at)
    .bind(token.refresh_token.as_deref())
    .bind(token.checked_at)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Refuses (with a [`MetaError::Conflict`] naming what is wrong) a token whose user or parent
/// does not exist, or whose parent is another user's. The schema enforces the first two too
/// (and catches a delete that comes between this check and the insert); checking first gives
/// messages that name the missing row.
async fn check_token_refs(conn: &mut PgConnection, token: &TokenRecord) -> R<()> {
    let user: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE name = $1)").bind(&token.user).fetch_one(&mut *conn).await?;
    if !user {
        return Err(MetaError::Conflict(format!("user {:?} does not exist", token.user)).into());
    }
    if let Some(parent) = &token.parent {
        let owner: Option<String> =
            sqlx::query_scalar("SELECT user_name FROM user_tokens WHERE id = $1").bind(parent).fetch_optional(&mut *conn).await?;
        match owner {
            None => return Err(MetaError::Conflict(format!("the parent token {parent:?} does not exist")).into()),
            Some(owner) if owner != token.user => {
                return Err(MetaError::Conflict(format!("the parent token {parent:?} is not a token of user {:?}", token.user)).into())
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Deletes the tokens `roots` with every descendant, found level by level (each level one probe
/// of the parent index per token); how many went. The one `DELETE` removes them all itself (the
/// cascade's triggers run after it and find nothing left, but for a child created meanwhile), so
/// its count includes the children.
async fn delete_tokens_with_children(conn: &mut PgConnection, roots: Vec<String>) -> R<u64> {
    if roots.is_empty() {
        return Ok(0);
    }
    let mut seen: HashSet<String> = roots.iter().cloned().collect();
    let mut all = roots.clone();
    let mut level = roots;
    while !level.is_empty() {
        let children: Vec<String> = sqlx::query_scalar(SQL_TOKEN_CHILDREN).bind(&level).fetch_all(&mut *conn).await?;
        level = children.into_iter().filter(|c| seen.insert(c.clone())).collect();
        all.extend(level.iter().cloned());
    }
    Ok(sqlx::query(SQL_DELETE_TOKENS).bind(&all).execute(&mut *conn).await?.rows_affected())
}

/// The names of `kinds`; every kind's when empty.
fn kind_names(kinds: &[TokenKind]) -> Vec<&'static str> {
    let kinds = if kinds.is_empty() { &TokenKind::ALL[..] } else { kinds };
    kinds.iter().map(|k| k.as_str()).collect()
}

fn auth_request_from_row(r: &PgRow) -> R<AuthRequest> {
    Ok(AuthRequest {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        data: json_column(r, 2, "login in progress")?,
        created_at: r.try_get(3)?,
        expires_at: r.try_get(4)?,
    })
}

/// The rows of an audit query, newest first. Only the filters present become conditions, so the
/// planner can pick the matching index: `audit_names` (walked by event id) for a robot,
/// `(repository, id)` or `(provider, id)`, else the primary key in id order.
fn audit_select(q: &AuditQuery) -> QueryBuilder<'_, Postgres> {
    let mut b = QueryBuilder::new("");
    push_audit_select(&mut b, q);
    b
}

/// Appends the statement of [`audit_select`] to `b` (the tests prefix it with `EXPLAIN`).
pub(crate) fn push_audit_select<'a>(b: &mut QueryBuilder<'a, Postgres>, q: &'a AuditQuery) {
    let limit = match q.limit {
        0 => AUDIT_DEFAULT_LIMIT,
        n => n.min(AUDIT_MAX_LIMIT),
    };
    b.push(
        "SELECT e.id, e.time_ms, e.action, e.result, e.principal, e.robots, e.provider, e.subject, e.jti, e.claims, \
         e.repository, e.reference, e.client, e.message FROM ",
    );
    // Driven by the robot's names when there is a robot filter: its index rows come newest first.
    let id_column = match &q.robot {
        Some(robot) => {
            b.push("audit_names n JOIN audit_events e ON e.id = n.event_id WHERE n.name = ").push_bind(robot.as_str());
            "n.event_id"
        }
        None => {
            b.push("audit_events e WHERE TRUE");
            "e.id"
        }
    };
    if let Some(before) = q.before_id {
        b.push(format_args!(" AND {id_column} < ")).push_bind(before);
    }
    if let Some(since) = q.since_ms {
        b.push(" AND e.time_ms >= ").push_bind(since);
    }
    if let Some(until) = q.until_ms {
        b.push(" AND e.time_ms < ").push_bind(until);
    }
    for (column, value) in [("e.repository", &q.repository), ("e.provider", &q.provider), ("e.result", &q.result), ("e.action", &q.action)] {
        if let Some(value) = value {
            b.push(format_args!(" AND {column} = ")).push_bind(value.as_str());
        }
    }
    b.push(format_args!(" ORDER BY {id_column} DESC LIMIT ")).push_bind(i64::from(limit));
}

fn json_column(row: &PgRow, idx: usize, what: &str) -> R<serde_json::Value> {
    let text: String = row.try_get(idx)?;
    serde_json::from_str(&text).map_err(|e| MetaError::Corrupt(format!("stored {what} is not JSON: {e}")).into())
}

fn member_from_row(r: &PgRow) -> R<MemberRecord> {
    Ok(MemberRecord { project: r.try_get(0)?, member: r.try_get(1)?, role: r.try_get(2)?, created_at: r.try_get(3)?, updated_at: r.try_get(4)? })
}

fn project_from_row(r: &PgRow) -> R<ProjectRecord> {
    Ok(ProjectRecord { name: r.try_get(0)?, public: r.try_get(1)?, created_at: r.try_get(2)? })
}

fn robot_from_row(r: &PgRow) -> R<RobotRecord> {
    Ok(RobotRecord {
        name: r.try_get(0)?,
        project: r.try_get(1)?,
        description: r.try_get(2)?,
        disabled: r.try_get(3)?,
        expires_at: r.try_get(4)?,
        secret_hash: r.try_get(5)?,
        identity_provider: r.try_get(6)?,
        rules: json_column(r, 7, "robot rules")?,
        permissions: json_column(r, 8, "robot permissions")?,
        created_at: r.try_get(9)?,
        updated_at: r.try_get(10)?,
    })
}

fn idp_from_row(r: &PgRow) -> R<IdentityProviderRecord> {
    Ok(IdentityProviderRecord { name: r.try_get(0)?, config: json_column(r, 1, "identity provider")?, created_at: r.try_get(2)?, updated_at: r.try_get(3)? })
}

fn audit_from_row(r: &PgRow) -> R<AuditEvent> {
    let robots: Vec<String> = serde_json::from_value(json_column(r, 5, "audit robots")?)
        .map_err(|e| MetaError::Corrupt(format!("stored audit robots: {e}")))?;
    let claims: Option<String> = r.try_get(9)?;
    let claims = claims
        .map(|c| serde_json::from_str(&c))
        .transpose()
        .map_err(|e| MetaError::Corrupt(format!("stored audit claims are not JSON: {e}")))?;
    Ok(AuditEvent {
        id: r.try_get(0)?,
        time_ms: r.try_get(1)?,
        action: r.try_get(2)?,
        result: r.try_get(3)?,
        principal: r.try_get(4)?,
        robots,
        provider: r.try_get(6)?,
        subject: r.try_get(7)?,
        jti: r.try_get(8)?,
        claims,
        repository: r.try_get(10)?,
        reference: r.try_get(11)?,
        client: r.try_get(12)?,
        message: r.try_get(13)?,
    })
}
