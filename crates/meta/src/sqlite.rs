//! The SQLite backend of [`MetadataStore`]: one database file in WAL mode with
//! `synchronous=FULL`, a single-connection writer pool (so our own writers never meet
//! `SQLITE_BUSY`) and a small pool of query-only reader connections for the hot lookups.
//!
//! Several Berth processes may share one file: every write transaction starts with
//! `BEGIN IMMEDIATE` (so it takes the write lock up front and waits on the busy timeout instead of
//! failing on a stale snapshot), and nothing is cached in this process.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use berth_oci::{Digest, Reference, RepoName, Tag};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use crate::{
    identity_taken, normalized_groups, too_many_logins, wait_for_parents, ApplyAction, ApplyBatch, ApplyOutcome, AuditEvent, AuditQuery, AuthRequest, BlobCommit, BlobExport, BlobLinkExport, BlobRecord,
    DeleteOutcome, ExportRow, GcReport, IdentityProviderRecord, ImportOutcome, ManifestExport, ManifestRecord, MemberRecord, MetaError, MetadataStore, NewManifest, Page,
    ProjectRecord, PruneOutcome, PutManifestOutcome, Referrer, Result, RobotRecord, RowCounts, RowKey, Table, TagExport, TokenKind, TokenRecord, UnixTime, UploadClaim,
    UploadRecord, UserIdentity, UserRecord, AUDIT_DEFAULT_LIMIT, AUDIT_MAX_LIMIT,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a connection waits for another process's write lock before failing.
// sqlx's errors stay inside this backend: the trait's error carries their text only.
impl From<sqlx::Error> for MetaError {
    fn from(e: sqlx::Error) -> MetaError {
        MetaError::Db(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for MetaError {
    fn from(e: sqlx::migrate::MigrateError) -> MetaError {
        MetaError::Migrate(e.to_string())
    }
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows per garbage-collection write transaction.
const GC_BATCH: i64 = 500;
/// How often opening retries the migrations (another process may be migrating the same file).
const MIGRATE_ATTEMPTS: u32 = 4;

/// The SQLite metadata store. Cheap to clone (the pools are shared).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// One connection: every write transaction goes through it.
    writer: SqlitePool,
    /// Query-only connections for reads.
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let base = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Full)
            .pragma("cache_size", "-8192")
            .pragma("temp_store", "MEMORY");

        let writer_options = base.clone().create_if_missing(true).journal_mode(SqliteJournalMode::Wal);
        // The writer connection is kept open for the store's lifetime, which also keeps the WAL
        // and shared-memory files in place for the readers.
        // Switching a fresh file to WAL takes an exclusive lock without waiting for the busy
        // handler, so a second process opening the same fresh file at that moment gets
        // SQLITE_BUSY: it retries, as the migrations do.
        let mut attempt = 1;
        let writer = loop {
            let connected = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(Duration::from_secs(60))
                .connect_with(writer_options.clone())
                .await;
            match connected {
                Ok(pool) => break pool,
                Err(e) if attempt < MIGRATE_ATTEMPTS && is_busy(&e) => {
                    tracing::warn!(error = %e, attempt, "opening the metadata database: busy, retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        };
        migrate(&writer).await?;

        let readers = std::thread::available_parallelism().map_or(4, |n| (n.get() * 2).clamp(4, 8)) as u32;
        let reader = SqlitePoolOptions::new()
            .max_connections(readers)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(base.pragma("query_only", "ON"))
            .await?;
        Ok(SqliteStore { writer, reader })
    }

    /// Opens an existing database without writing to it, for reading a copy from
    /// (`berth migrate`'s source): every connection is opened read-only (SQLite refuses any
    /// write on them, so every writing method fails), no migration runs, and the file is never
    /// created. A database whose schema is not exactly this version's (an older Berth's, which
    /// [`SqliteStore::open`] would upgrade, or a newer one's) is refused with a message saying what
    /// to do. Safe while a server uses the file: readers take WAL snapshots as usual.
    pub async fn open_read_only(path: &Path) -> Result<SqliteStore> {
        if !path.is_file() {
            return Err(MetaError::Db(format!("{} does not exist (or is not a file)", path.display())));
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .pragma("query_only", "ON")
            .pragma("cache_size", "-8192")
            .pragma("temp_store", "MEMORY");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        if let Err(e) = check_schema(&pool, path).await {
            pool.close().await;
            return Err(e);
        }
        Ok(SqliteStore { writer: pool.clone(), reader: pool })
    }

    /// Closes both pools, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Starts a write transaction holding the database's write lock.
    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Whether SQLite answered SQLITE_BUSY (5) or SQLITE_LOCKED (6), extended codes included.
fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

/// Runs the migrations, retrying a few times: two processes opening a fresh file at once may
/// both try to record the same migration, and the loser then finds it applied on retry.
async fn migrate(pool: &SqlitePool) -> Result<()> {
    let mut attempt = 1;
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < MIGRATE_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "metadata migration failed, retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Refuses a database whose applied migrations are not exactly this version's (see
/// [`SqliteStore::open_read_only`]).
async fn check_schema(pool: &SqlitePool, path: &Path) -> Result<()> {
    let applied: Vec<(i64, Vec<u8>)> =
        match sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version").fetch_all(pool).await {
            Ok(rows) => rows,
            Err(e) if e.to_string().contains("no such table") => {
                return Err(MetaError::Migrate(format!("{} is not a Berth metadata database (it has no schema history)", path.display())))
            }
            Err(e) => return Err(e.into()),
        };
    let known: Vec<(i64, &[u8])> = MIGRATOR.iter().map(|m| (m.version, &*m.checksum)).collect();
    for (version, checksum) in &applied {
        match known.iter().find(|(v, _)| v == version) {
            None => {
                return Err(MetaError::Migrate(format!(
                    "{} has the schema of a newer Berth (migration {version} is unknown to this one); use that Berth's own `berth migrate`",
                    path.display()
                )))
            }
            Some((_, c)) if *c != checksum.as_slice() => {
                return Err(MetaError::Migrate(format!("{}: migration {version} differs from this Berth's; it was not made by this Berth", path.display())))
            }
            Some(_) => {}
        }
    }
    if applied.len() < known.len() {
        return Err(MetaError::Migrate(format!(
            "{} has the schema of an older Berth and needs an upgrade, which is never done to a database opened only for reading: \
             start this Berth once on it (`berth serve`, or `berth gc`, which upgrade it), then run again",
            path.display()
        )));
    }
    Ok(())
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

/// `LIMIT` value for a page (-1: no limit).
fn page_limit(page: &Page<'_>) -> i64 {
    page.n.map_or(-1, i64::from)
}

/// A JSON array of strings, for `json_each(?)`.
fn json_strings<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    serde_json::Value::Array(items.into_iter().map(|s| serde_json::Value::String(s.to_owned())).collect()).to_string()
}

/// Distinct digests in first-seen order.
fn distinct<'a>(digests: impl IntoIterator<Item = &'a Digest>) -> Vec<&'a Digest> {
    let mut seen = HashSet::new();
    digests.into_iter().filter(|d| seen.insert(d.as_str())).collect()
}

/// The id of `repo`, creating the row if needed. Only inside a write transaction.
async fn repo_id_for_write(tx: &mut Transaction<'static, Sqlite>, repo: &RepoName) -> Result<i64> {
    let existing: Option<i64> = sqlx::query_scalar("SELECT id FROM repositories WHERE name = ?1")
        .bind(repo.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    if let Some(id) = existing {
        return Ok(id);
    }
    Ok(sqlx::query_scalar("INSERT INTO repositories (name) VALUES (?1) RETURNING id")
        .bind(repo.as_str())
        .fetch_one(&mut **tx)
        .await?)
}

/// The id of `repo` if it has a row, inside a write transaction.
async fn repo_id(tx: &mut Transaction<'static, Sqlite>, repo: &RepoName) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar("SELECT id FROM repositories WHERE name = ?1")
        .bind(repo.as_str())
        .fetch_optional(&mut **tx)
        .await?)
}

/// Creates or refreshes the link of `digest` to a repository.
async fn upsert_link(tx: &mut Transaction<'static, Sqlite>, repo_id: i64, digest: &Digest, now: UnixTime) -> Result<()> {
    sqlx::query(
        "INSERT INTO repo_blobs (repo_id, digest, last_used) VALUES (?1, ?2, ?3) \
         ON CONFLICT (repo_id, digest) DO UPDATE SET last_used = max(last_used, excluded.last_used)",
    )
    .bind(repo_id)
    .bind(digest.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobRecord>> {
        let row = sqlx::query(
            "SELECT b.size, b.storage_key FROM repositories r \
             JOIN repo_blobs rb ON rb.repo_id = r.id \
             JOIN blobs b ON b.digest = rb.digest \
             WHERE r.name = ?1 AND rb.digest = ?2",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| {
            Ok(BlobRecord { digest: digest.clone(), size: size_from_db(row.try_get(0)?)?, storage_key: row.try_get(1)? })
        })
        .transpose()
    }

    async fn commit_blob(&self, repo: &RepoName, digest: &Digest, size: u64, new_key: &str, now: UnixTime) -> Result<BlobCommit> {
        let size = size_to_db(size)?;
        let mut tx = self.write_tx().await?;
        let repo_id = repo_id_for_write(&mut tx, repo).await?;
        let key: String = sqlx::query_scalar(
            "INSERT INTO blobs (digest, size, storage_key, last_used) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (digest) DO UPDATE SET last_used = max(last_used, excluded.last_used) \
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

    async fn mount_blob(&self, repo: &RepoName, from: &RepoName, digest: &Digest, now: UnixTime) -> Result<Option<BlobRecord>> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "SELECT b.size, b.storage_key FROM repositories r \
             JOIN repo_blobs rb ON rb.repo_id = r.id \
             JOIN blobs b ON b.digest = rb.digest \
             WHERE r.name = ?1 AND rb.digest = ?2",
        )
        .bind(from.as_str())
        .bind(digest.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let record = BlobRecord { digest: digest.clone(), size: size_from_db(row.try_get(0)?)?, storage_key: row.try_get(1)? };
        let repo_id = repo_id_for_write(&mut tx, repo).await?;
        upsert_link(&mut tx, repo_id, digest, now).await?;
        tx.commit().await?;
        Ok(Some(record))
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM repo_blobs WHERE repo_id = (SELECT id FROM repositories WHERE name = ?1) AND digest = ?2",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_manifest(&self, repo: &RepoName, m: NewManifest<'_>, now: UnixTime) -> Result<PutManifestOutcome> {
        let parsed = m.parsed;
        let blobs = distinct(parsed.blobs.iter().map(|d| &d.digest));
        let children = distinct(parsed.manifests.iter().map(|d| &d.digest));
        let blobs_json = json_strings(blobs.iter().map(|d| d.as_str()));
        let children_json = json_strings(children.iter().map(|d| d.as_str()));
        let size = size_to_db(m.bytes.len() as u64)?;
        let annotations = parsed.annotations.as_ref().map(|a| a.to_string());

        let mut tx = self.write_tx().await?;
        let repo_id = repo_id_for_write(&mut tx, repo).await?;

        // Everything referenced must be in this repository.
        let mut missing: HashSet<String> = HashSet::new();
        if !blobs.is_empty() {
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT j.value FROM json_each(?1) j WHERE NOT EXISTS \
                 (SELECT 1 FROM repo_blobs rb WHERE rb.repo_id = ?2 AND rb.digest = j.value)",
            )
            .bind(&blobs_json)
            .bind(repo_id)
            .fetch_all(&mut *tx)
            .await?;
            missing.extend(rows);
        }
        if !children.is_empty() {
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT j.value FROM json_each(?1) j WHERE NOT EXISTS \
                 (SELECT 1 FROM manifests m WHERE m.repo_id = ?2 AND m.digest = j.value)",
            )
            .bind(&children_json)
            .bind(repo_id)
            .fetch_all(&mut *tx)
            .await?;
            missing.extend(rows);
        }
        if !missing.is_empty() {
            // Dropping the transaction rolls it back (including a freshly created repository row).
            tx.rollback().await?;
            let list = blobs
                .iter()
                .chain(children.iter())
                .filter(|d| missing.contains(d.as_str()))
                .map(|d| (*d).clone())
                .collect();
            return Ok(PutManifestOutcome::Missing(list));
        }

        sqlx::query(
            "INSERT INTO manifests (repo_id, digest, media_type, bytes, size, subject, artifact_type, annotations, created) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (repo_id, digest) DO UPDATE SET media_type = excluded.media_type, bytes = excluded.bytes, \
             size = excluded.size, subject = excluded.subject, artifact_type = excluded.artifact_type, \
             annotations = excluded.annotations",
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
        .execute(&mut *tx)
        .await?;

        sqlx::query("DELETE FROM manifest_refs WHERE repo_id = ?1 AND manifest_digest = ?2")
            .bind(repo_id)
            .bind(m.digest.as_str())
            .execute(&mut *tx)
            .await?;
        for (kind, list, json) in [("blob", &blobs, &blobs_json), ("manifest", &children, &children_json)] {
            if list.is_empty() {
                continue;
            }
            sqlx::query(
                "INSERT OR IGNORE INTO manifest_refs (repo_id, manifest_digest, ref_digest, kind) \
                 SELECT ?1, ?2, j.value, ?3 FROM json_each(?4) j",
            )
            .bind(repo_id)
            .bind(m.digest.as_str())
            .bind(kind)
            .bind(json.as_str())
            .execute(&mut *tx)
            .await?;
        }
        if !blobs.is_empty() {
            sqlx::query(
                "UPDATE repo_blobs SET last_used = max(last_used, ?3) \
                 WHERE repo_id = ?1 AND digest IN (SELECT j.value FROM json_each(?2) j)",
            )
            .bind(repo_id)
            .bind(&blobs_json)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        // Every tag in this same transaction: all of them point at the manifest, or none moves.
        // One upsert per tag (at most a handful) keeps the SQL portable; a repeated tag is a
        // harmless second upsert.
        for tag in m.tags {
            sqlx::query(
                "INSERT INTO tags (repo_id, name, manifest_digest, updated) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (repo_id, name) DO UPDATE SET manifest_digest = excluded.manifest_digest, \
                 updated = excluded.updated",
            )
            .bind(repo_id)
            .bind(tag.as_str())
            .bind(m.digest.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(PutManifestOutcome::Stored)
    }

    async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>> {
        match reference {
            Reference::Digest(digest) => {
                let row = sqlx::query(
                    "SELECT m.media_type, m.bytes, m.subject FROM repositories r \
                     JOIN manifests m ON m.repo_id = r.id \
                     WHERE r.name = ?1 AND m.digest = ?2",
                )
                .bind(repo.as_str())
                .bind(digest.as_str())
                .fetch_optional(&self.reader)
                .await?;
                row.map(|row| {
                    let subject: Option<String> = row.try_get(2)?;
                    Ok(ManifestRecord {
                        digest: digest.clone(),
                        media_type: row.try_get(0)?,
                        bytes: row.try_get(1)?,
                        subject: subject.as_deref().map(parse_digest).transpose()?,
                    })
                })
                .transpose()
            }
            Reference::Tag(tag) => {
                let row = sqlx::query(
                    "SELECT m.digest, m.media_type, m.bytes, m.subject FROM repositories r \
                     JOIN tags t ON t.repo_id = r.id \
                     JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.manifest_digest \
                     WHERE r.name = ?1 AND t.name = ?2",
                )
                .bind(repo.as_str())
                .bind(tag.as_str())
                .fetch_optional(&self.reader)
                .await?;
                row.map(|row| {
                    let digest: String = row.try_get(0)?;
                    let subject: Option<String> = row.try_get(3)?;
                    Ok(ManifestRecord {
                        digest: parse_digest(&digest)?,
                        media_type: row.try_get(1)?,
                        bytes: row.try_get(2)?,
                        subject: subject.as_deref().map(parse_digest).transpose()?,
                    })
                })
                .transpose()
            }
        }
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let Some(repo_id) = repo_id(&mut tx, repo).await? else {
            return Ok(false);
        };
        for sql in [
            "DELETE FROM tags WHERE repo_id = ?1 AND manifest_digest = ?2",
            "DELETE FROM manifest_refs WHERE repo_id = ?1 AND manifest_digest = ?2",
        ] {
            sqlx::query(sql).bind(repo_id).bind(digest.as_str()).execute(&mut *tx).await?;
        }
        let done = sqlx::query("DELETE FROM manifests WHERE repo_id = ?1 AND digest = ?2")
            .bind(repo_id)
            .bind(digest.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM tags WHERE repo_id = (SELECT id FROM repositories WHERE name = ?1) AND name = ?2")
                .bind(repo.as_str())
                .bind(tag.as_str())
                .execute(&self.writer)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_tags(&self, repo: &RepoName, page: Page<'_>) -> Result<Option<Vec<String>>> {
        // One read transaction: the existence check and the listing see the same snapshot.
        let mut tx = self.reader.begin().await?;
        let row = sqlx::query(
            "SELECT r.id, EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id) \
             OR EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.repo_id = r.id) \
             FROM repositories r WHERE r.name = ?1",
        )
        .bind(repo.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let repo_id: i64 = match row {
            Some(row) if row.try_get::<bool, _>(1)? => row.try_get(0)?,
            _ => {
                tx.commit().await?;
                return Ok(None);
            }
        };
        let tags: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM tags WHERE repo_id = ?1 AND name > ?2 ORDER BY name COLLATE BINARY LIMIT ?3",
        )
        .bind(repo_id)
        .bind(page.last.unwrap_or(""))
        .bind(page_limit(&page))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(tags))
    }

    async fn list_repositories(&self, page: Page<'_>) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT r.name FROM repositories r WHERE r.name > ?1 \
             AND (EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id) \
                  OR EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.repo_id = r.id)) \
             ORDER BY r.name COLLATE BINARY LIMIT ?2",
        )
        .bind(page.last.unwrap_or(""))
        .bind(page_limit(&page))
        .fetch_all(&self.reader)
        .await?)
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Referrer>> {
        let rows = sqlx::query(
            "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations FROM repositories r \
             JOIN manifests m ON m.repo_id = r.id \
             WHERE r.name = ?1 AND m.subject = ?2 AND (?3 IS NULL OR m.artifact_type = ?3)",
        )
        .bind(repo.as_str())
        .bind(subject.as_str())
        .bind(artifact_type)
        .fetch_all(&self.reader)
        .await?;
        // Sorted here: an ORDER BY would steer the planner away from the subject index.
        let mut referrers = rows
            .into_iter()
            .map(|row| {
                let digest: String = row.try_get(0)?;
                let annotations: Option<String> = row.try_get(4)?;
                let annotations = annotations
                    .map(|a| {
                        serde_json::from_str(&a)
                            .map_err(|e| MetaError::Corrupt(format!("annotations of {digest}: {e}")))
                    })
                    .transpose()?;
                Ok(Referrer {
                    digest: parse_digest(&digest)?,
                    media_type: row.try_get(1)?,
                    size: size_from_db(row.try_get(2)?)?,
                    artifact_type: row.try_get(3)?,
                    annotations,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        referrers.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(referrers)
    }

    async fn create_upload(&self, id: &str, repo: &RepoName, now: UnixTime) -> Result<()> {
        sqlx::query("INSERT INTO uploads (id, repo, created, updated) VALUES (?1, ?2, ?3, ?3)")
            .bind(id)
            .bind(repo.as_str())
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn get_upload(&self, id: &str) -> Result<Option<UploadRecord>> {
        let row = sqlx::query(&format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = ?1"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|row| upload_from_row(id, &row)).transpose()
    }

    async fn touch_upload(&self, id: &str, now: UnixTime) -> Result<()> {
        sqlx::query("UPDATE uploads SET updated = max(updated, ?2) WHERE id = ?1")
            .bind(id)
            .bind(now)
            .execute(&self.writer)
            .await?;
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
        let mut tx = self.write_tx().await?;
        // The claim is one conditional UPDATE, atomic on its own (the transaction only lets the
        // refusal below be classified against the same state).
        let claimed = sqlx::query(&format!(
            "UPDATE uploads SET lease_token = ?3, lease_until = ?4, updated = max(updated, ?5) \
             WHERE id = ?1 AND repo = ?2 AND (lease_until IS NULL OR lease_until <= ?5) \
             AND (?6 IS NULL OR \"offset\" = ?6) RETURNING {UPLOAD_COLUMNS}"
        ))
        .bind(id)
        .bind(repo.as_str())
        .bind(token)
        .bind(lease_until)
        .bind(now)
        .bind(expected)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = claimed {
            let record = upload_from_row(id, &row)?;
            tx.commit().await?;
            return Ok(UploadClaim::Claimed(record));
        }
        let row = sqlx::query("SELECT lease_until, \"offset\" FROM uploads WHERE id = ?1 AND repo = ?2")
            .bind(id)
            .bind(repo.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        tx.rollback().await?;
        let Some(row) = row else {
            return Ok(UploadClaim::Unknown);
        };
        let held_until: Option<UnixTime> = row.try_get(0)?;
        let offset = size_from_db(row.try_get(1)?)?;
        Ok(if held_until.is_some_and(|until| until > now) {
            UploadClaim::Busy { offset }
        } else {
            UploadClaim::OutOfOrder { offset }
        })
    }

    async fn renew_upload_claim(&self, id: &str, token: &str, lease_until: UnixTime) -> Result<bool> {
        let done = sqlx::query("UPDATE uploads SET lease_until = ?3 WHERE id = ?1 AND lease_token = ?2")
            .bind(id)
            .bind(token)
            .bind(lease_until)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_upload(&self, id: &str, token: &str, offset: u64, hash_state: &[u8], parts: u32, now: UnixTime) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE uploads SET \"offset\" = ?3, hash_state = ?4, parts = ?5, updated = ?6, \
             lease_token = NULL, lease_until = NULL WHERE id = ?1 AND lease_token = ?2",
        )
        .bind(id)
        .bind(token)
        .bind(size_to_db(offset)?)
        .bind(hash_state)
        .bind(i64::from(parts))
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_upload(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM uploads WHERE id = ?1").bind(id).execute(&self.writer).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn get_user(&self, name: &str) -> Result<Option<UserRecord>> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"))
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    async fn put_user(&self, user: &UserRecord) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let checked = async {
            if !user.admin || user.disabled {
                refuse_last_admin(&mut tx, &user.name, "disable it or take its admin rights").await?;
            }
            refuse_identity_taken(&mut tx, user).await
        }
        .await;
        if let Err(e) = checked {
            tx.rollback().await?;
            return Err(e);
        }
        upsert_user(&mut tx, user, &normalized_groups(&user.groups), false).await?;
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name")).fetch_all(&self.reader).await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn delete_user(&self, name: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        if let Err(e) = refuse_last_admin(&mut tx, name, "delete it").await {
            tx.rollback().await?;
            return Err(e);
        }
        let deleted =
            sqlx::query("DELETE FROM users WHERE name = ?1").bind(name).execute(&mut *tx).await?.rows_affected() > 0;
        if deleted {
            bump_generation(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn count_users(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&self.reader).await?;
        size_from_db(n)
    }

    async fn get_user_by_identity(&self, issuer: &str, subject: &str) -> Result<Option<UserRecord>> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE idp_issuer = ?1 AND idp_subject = ?2"))
            .bind(issuer)
            .bind(subject)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    async fn create_user(&self, user: &UserRecord) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        if let Err(e) = refuse_identity_taken(&mut tx, user).await {
            tx.rollback().await?;
            return Err(e);
        }
        let groups = normalized_groups(&user.groups);
        let created = sqlx::query(&format!(
            "INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT (name) DO NOTHING"
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

    async fn update_user_login(&self, name: &str, groups: &[String], email: Option<&str>, last_login_at: Option<UnixTime>) -> Result<Option<UserRecord>> {
        let groups = normalized_groups(groups);
        let mut tx = self.write_tx().await?;
        let stored: Option<String> = sqlx::query_scalar("SELECT \"groups\" FROM users WHERE name = ?1").bind(name).fetch_optional(&mut *tx).await?;
        let Some(stored) = stored else {
            tx.rollback().await?;
            return Ok(None);
        };
        let stored: Vec<String> = serde_json::from_str(&stored).map_err(|e| MetaError::Corrupt(format!("stored groups of user {name:?}: {e}")))?;
        let row = sqlx::query(&format!(
            "UPDATE users SET \"groups\" = ?2, email = coalesce(?3, email), last_login_at = coalesce(?4, last_login_at) \
             WHERE name = ?1 RETURNING {USER_COLUMNS}"
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

    async fn create_token(&self, token: &TokenRecord) -> Result<()> {
        let mut tx = self.write_tx().await?;
        if let Err(e) = check_token_refs(&mut tx, token).await {
            tx.rollback().await?;
            return Err(e);
        }
        // The id is the key: an existing one is refused, never replaced.
        let created = insert_token(&mut tx, token, false).await?;
        if !created {
            tx.rollback().await?;
            return Err(MetaError::Conflict(format!("a token with the id {:?} exists already", token.id)));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM user_tokens WHERE id = ?1")).bind(id).fetch_optional(&self.reader).await?;
        row.map(|r| token_from_row(&r)).transpose()
    }

    async fn list_tokens(&self, user: &str, kinds: &[TokenKind]) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM user_tokens WHERE user_name = ?1 AND kind IN (SELECT value FROM json_each(?2)) \
             ORDER BY created_at, id"
        ))
        .bind(user)
        .bind(kinds_json(kinds))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn delete_token(&self, id: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        // Its children go with it (ON DELETE CASCADE, down to every descendant).
        let deleted = sqlx::query("DELETE FROM user_tokens WHERE id = ?1").bind(id).execute(&mut *tx).await?.rows_affected() > 0;
        if deleted {
            bump_generation(&mut tx).await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(deleted)
    }

    async fn delete_user_tokens(&self, user: &str, kinds: &[TokenKind]) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let roots: Vec<String> =
            sqlx::query_scalar("SELECT id FROM user_tokens WHERE user_name = ?1 AND kind IN (SELECT value FROM json_each(?2))")
                .bind(user)
                .bind(kinds_json(kinds))
                .fetch_all(&mut *tx)
                .await?;
        let removed = delete_tokens_with_children(&mut tx, &roots).await?;
        if removed > 0 {
            bump_generation(&mut tx).await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(removed)
    }

    async fn touch_token(&self, id: &str, now: UnixTime) -> Result<()> {
        sqlx::query("UPDATE user_tokens SET last_used_at = max(coalesce(last_used_at, ?2), ?2) WHERE id = ?1")
            .bind(id)
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn update_token_check(&self, id: &str, refresh_token: Option<&str>, checked_at: UnixTime) -> Result<bool> {
        let done = sqlx::query("UPDATE user_tokens SET refresh_token = ?2, checked_at = ?3 WHERE id = ?1")
            .bind(id)
            .bind(refresh_token)
            .bind(checked_at)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn claim_token_check(&self, id: &str, seen: Option<UnixTime>, now: UnixTime) -> Result<bool> {
        // `IS` compares NULL with NULL as equal.
        let done = sqlx::query("UPDATE user_tokens SET checked_at = ?3 WHERE id = ?1 AND checked_at IS ?2")
            .bind(id)
            .bind(seen)
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn tokens_to_check(&self, before: UnixTime, now: UnixTime, limit: u32) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(SQL_TOKENS_TO_CHECK).bind(before).bind(now).bind(i64::from(limit)).fetch_all(&self.reader).await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn prune_tokens(&self, now: UnixTime) -> Result<u64> {
        // In batches of expired tokens (with their children), each its own write transaction, so
        // a large prune never holds the write lock for long.
        let mut removed = 0;
        loop {
            let mut tx = self.write_tx().await?;
            let roots: Vec<String> = sqlx::query_scalar("SELECT id FROM user_tokens WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2")
                .bind(now)
                .bind(TOKEN_PRUNE_BATCH)
                .fetch_all(&mut *tx)
                .await?;
            removed += delete_tokens_with_children(&mut tx, &roots).await?;
            tx.commit().await?;
            if (roots.len() as i64) < TOKEN_PRUNE_BATCH {
                return Ok(removed);
            }
            tokio::task::yield_now().await;
        }
    }

    async fn put_auth_request(&self, request: &AuthRequest, max_pending: u64, now: UnixTime) -> Result<bool> {
        let max = i64::try_from(max_pending).unwrap_or(i64::MAX);
        // Under the write lock (of every process on the file): the count and the insert see the
        // same requests, so the bound is exact.
        let mut tx = self.write_tx().await?;
        let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM auth_requests WHERE id = ?1 AND expires_at > ?2)")
            .bind(&request.id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        if taken {
            tx.rollback().await?;
            return Ok(false);
        }
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM (SELECT 1 FROM auth_requests WHERE expires_at > ?1 LIMIT ?2)")
            .bind(now)
            .bind(max)
            .fetch_one(&mut *tx)
            .await?;
        if pending >= max {
            tx.rollback().await?;
            return Err(too_many_logins(max_pending));
        }
        // An expired request of the same id is gone for every method: it is replaced.
        sqlx::query(
            "INSERT INTO auth_requests (id, kind, data, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, data = excluded.data, created_at = excluded.created_at, \
             expires_at = excluded.expires_at",
        )
        .bind(&request.id)
        .bind(&request.kind)
        .bind(request.data.to_string())
        .bind(request.created_at)
        .bind(request.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn get_auth_request(&self, id: &str, now: UnixTime) -> Result<Option<AuthRequest>> {
        let row = sqlx::query(&format!("SELECT {AUTH_REQUEST_COLUMNS} FROM auth_requests WHERE id = ?1 AND expires_at > ?2"))
            .bind(id)
            .bind(now)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| auth_request_from_row(&r)).transpose()
    }

    async fn update_auth_request(&self, id: &str, data: &serde_json::Value, now: UnixTime) -> Result<bool> {
        let done = sqlx::query("UPDATE auth_requests SET data = ?3 WHERE id = ?1 AND expires_at > ?2")
            .bind(id)
            .bind(now)
            .bind(data.to_string())
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn take_auth_request(&self, id: &str, now: UnixTime) -> Result<Option<AuthRequest>> {
        // One DELETE under the write lock: of concurrent takers (any process) the first deletes
        // the row and gets it, the others find nothing.
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(&format!("DELETE FROM auth_requests WHERE id = ?1 AND expires_at > ?2 RETURNING {AUTH_REQUEST_COLUMNS}"))
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let request = row.map(|r| auth_request_from_row(&r)).transpose()?;
        tx.commit().await?;
        Ok(request)
    }

    async fn prune_auth_requests(&self, now: UnixTime) -> Result<u64> {
        let done = sqlx::query("DELETE FROM auth_requests WHERE expires_at <= ?1").bind(now).execute(&self.writer).await?;
        Ok(done.rows_affected())
    }

    async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM settings WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.reader)
            .await?)
    }

    async fn init_setting(&self, key: &str, value: &str) -> Result<String> {
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        let stored: String =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = ?1").bind(key).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn collect_garbage(&self, cutoff: UnixTime, upload_cutoff: UnixTime) -> Result<GcReport> {
        let mut report = GcReport::default();

        // Candidates are found on a reader (no lock held), then each batch is deleted in one short
        // write statement that re-checks the conditions under the write lock.

        // 1. Links unused since the cutoff that no manifest of their repository references.
        let mut cursor: (i64, String) = (i64::MIN, String::new());
        loop {
            let rows = sqlx::query(
                "SELECT rb.repo_id, rb.digest FROM repo_blobs rb \
                 WHERE (rb.repo_id, rb.digest) > (?1, ?2) AND rb.last_used < ?3 AND NOT EXISTS \
                 (SELECT 1 FROM manifest_refs mr WHERE mr.repo_id = rb.repo_id AND mr.ref_digest = rb.digest \
                  AND mr.kind = 'blob') \
                 ORDER BY rb.repo_id, rb.digest LIMIT ?4",
            )
            .bind(cursor.0)
            .bind(&cursor.1)
            .bind(cutoff)
            .bind(GC_BATCH)
            .fetch_all(&self.reader)
            .await?;
            let Some(last) = rows.last() else { break };
            let next = (last.try_get::<i64, _>(0)?, last.try_get::<String, _>(1)?);
            // Candidates come ordered by repository: one indexed delete per repository.
            let mut groups: Vec<(i64, Vec<String>)> = Vec::new();
            for row in &rows {
                let (repo_id, digest) = (row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?);
                match groups.last_mut() {
                    Some((id, digests)) if *id == repo_id => digests.push(digest),
                    _ => groups.push((repo_id, vec![digest])),
                }
            }
            let mut tx = self.write_tx().await?;
            for (repo_id, digests) in &groups {
                let done = sqlx::query(
                    "DELETE FROM repo_blobs WHERE repo_id = ?1 AND digest IN (SELECT j.value FROM json_each(?2) j) \
                     AND last_used < ?3 AND NOT EXISTS \
                     (SELECT 1 FROM manifest_refs mr WHERE mr.repo_id = repo_blobs.repo_id \
                      AND mr.ref_digest = repo_blobs.digest AND mr.kind = 'blob')",
                )
                .bind(repo_id)
                .bind(json_strings(digests.iter().map(String::as_str)))
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
                report.links_removed += done.rows_affected();
            }
            tx.commit().await?;
            if (rows.len() as i64) < GC_BATCH {
                break;
            }
            cursor = next;
            tokio::task::yield_now().await;
        }

        // 2. Blob records with no links left, unused since the cutoff.
        let mut cursor = String::new();
        loop {
            let digests: Vec<String> = sqlx::query_scalar(
                "SELECT b.digest FROM blobs b WHERE b.digest > ?1 AND b.last_used < ?2 \
                 AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest) \
                 ORDER BY b.digest LIMIT ?3",
            )
            .bind(&cursor)
            .bind(cutoff)
            .bind(GC_BATCH)
            .fetch_all(&self.reader)
            .await?;
            let Some(last) = digests.last() else { break };
            let keys: Vec<String> = sqlx::query_scalar(
                "DELETE FROM blobs WHERE digest IN (SELECT j.value FROM json_each(?1) j) AND last_used < ?2 \
                 AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = blobs.digest) \
                 RETURNING storage_key",
            )
            .bind(json_strings(digests.iter().map(String::as_str)))
            .bind(cutoff)
            .fetch_all(&self.writer)
            .await?;
            report.deleted_keys.extend(keys);
            if (digests.len() as i64) < GC_BATCH {
                break;
            }
            cursor = last.clone();
            tokio::task::yield_now().await;
        }

        // 3. Upload sessions not touched since the upload cutoff.
        let mut cursor = String::new();
        loop {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM uploads WHERE id > ?1 AND updated < ?2 ORDER BY id LIMIT ?3",
            )
            .bind(&cursor)
            .bind(upload_cutoff)
            .bind(GC_BATCH)
            .fetch_all(&self.reader)
            .await?;
            let Some(last) = ids.last() else { break };
            let removed: Vec<String> = sqlx::query_scalar(
                "DELETE FROM uploads WHERE id IN (SELECT j.value FROM json_each(?1) j) AND updated < ?2 RETURNING id",
            )
            .bind(json_strings(ids.iter().map(String::as_str)))
            .bind(upload_cutoff)
            .fetch_all(&self.writer)
            .await?;
            report.stale_uploads.extend(removed);
            if (ids.len() as i64) < GC_BATCH {
                break;
            }
            cursor = last.clone();
            tokio::task::yield_now().await;
        }

        Ok(report)
    }

    async fn key_in_use(&self, key: &str) -> Result<bool> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM blobs WHERE storage_key = ?1)")
            .bind(key)
            .fetch_one(&self.reader)
            .await?)
    }

    async fn create_project(&self, project: &ProjectRecord) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let created = sqlx::query(
            "INSERT INTO projects (name, public, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
        )
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

    async fn put_project(&self, project: &ProjectRecord) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO projects (name, public, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET public = excluded.public",
        )
        .bind(&project.name)
        .bind(project.public)
        .bind(project.created_at)
        .execute(&mut *tx)
        .await?;
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_project(&self, name: &str) -> Result<Option<ProjectRecord>> {
        let row = sqlx::query("SELECT name, public, created_at FROM projects WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| project_from_row(&r)).transpose()
    }

    async fn list_projects(&self) -> Result<Vec<ProjectRecord>> {
        let rows =
            sqlx::query("SELECT name, public, created_at FROM projects ORDER BY name").fetch_all(&self.reader).await?;
        rows.iter().map(project_from_row).collect()
    }

    async fn delete_project(&self, name: &str) -> Result<DeleteOutcome> {
        let mut tx = self.write_tx().await?;
        if let Some(robots) = robots_referring(&mut tx, "project", name).await? {
            tx.rollback().await?;
            return Ok(DeleteOutcome::InUse(format!(
                "project {name:?} still has robot accounts ({robots}); delete them first"
            )));
        }
        let deleted =
            sqlx::query("DELETE FROM projects WHERE name = ?1").bind(name).execute(&mut *tx).await?.rows_affected() > 0;
        if !deleted {
            tx.rollback().await?;
            return Ok(DeleteOutcome::NotFound);
        }
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(DeleteOutcome::Deleted)
    }

    async fn put_member(&self, member: &MemberRecord) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM projects WHERE name = ?1").bind(&member.project).fetch_optional(&mut *tx).await?;
        if known.is_none() {
            tx.rollback().await?;
            return Err(MetaError::Conflict(format!("project {:?} does not exist", member.project)));
        }
        sqlx::query(
            "INSERT INTO project_members (project, member, role, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) \
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

    async fn delete_member(&self, project: &str, member: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let deleted = sqlx::query("DELETE FROM project_members WHERE project = ?1 AND member = ?2")
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

    async fn list_members(&self, project: &str) -> Result<Vec<MemberRecord>> {
        let rows = sqlx::query("SELECT project, member, role, created_at, updated_at FROM project_members WHERE project = ?1 ORDER BY member")
            .bind(project)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(member_from_row).collect()
    }

    async fn memberships(&self, members: &[String]) -> Result<Vec<MemberRecord>> {
        if members.len() > crate::MAX_MEMBER_KEYS {
            return Err(MetaError::Conflict(format!("{} member keys asked for; at most {}", members.len(), crate::MAX_MEMBER_KEYS)));
        }
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let json = serde_json::to_string(members).map_err(|e| MetaError::Db(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT project, member, role, created_at, updated_at FROM project_members \
             WHERE member IN (SELECT value FROM json_each(?1)) ORDER BY project, member",
        )
        .bind(json)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(member_from_row).collect()
    }

    async fn put_robot(&self, robot: &RobotRecord) -> Result<()> {
        let mut tx = self.write_tx().await?;
        if let Err(e) = check_robot_refs(&mut tx, robot).await {
            tx.rollback().await?;
            return Err(e);
        }
        upsert_robot(&mut tx, robot, robot.secret_hash.as_deref(), robot.created_at, robot.updated_at).await?;
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_robot(&self, robot: &RobotRecord) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        if let Err(e) = check_robot_refs(&mut tx, robot).await {
            tx.rollback().await?;
            return Err(e);
        }
        // One statement decides: the insert happens or the name was taken.
        let created = sqlx::query(
            "INSERT INTO robots (name, project, description, disabled, expires_at, secret_hash, identity_provider, \
             rules, permissions, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT (name) DO NOTHING",
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

    async fn get_robot(&self, name: &str) -> Result<Option<RobotRecord>> {
        let row = sqlx::query(&format!("SELECT {ROBOT_COLUMNS} FROM robots WHERE name = ?1"))
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| robot_from_row(&r)).transpose()
    }

    async fn list_robots(&self, project: Option<&str>) -> Result<Vec<RobotRecord>> {
        let rows = match project {
            Some(p) => {
                sqlx::query(&format!("SELECT {ROBOT_COLUMNS} FROM robots WHERE project = ?1 ORDER BY name"))
                    .bind(p)
                    .fetch_all(&self.reader)
                    .await?
            }
            None => sqlx::query(&format!("SELECT {ROBOT_COLUMNS} FROM robots ORDER BY name")).fetch_all(&self.reader).await?,
        };
        rows.iter().map(robot_from_row).collect()
    }

    async fn list_robots_by_provider(&self, provider: &str) -> Result<Vec<RobotRecord>> {
        let rows = sqlx::query(&format!("SELECT {ROBOT_COLUMNS} FROM robots WHERE identity_provider = ?1 ORDER BY name"))
            .bind(provider)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(robot_from_row).collect()
    }

    async fn delete_robot(&self, name: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let deleted =
            sqlx::query("DELETE FROM robots WHERE name = ?1").bind(name).execute(&mut *tx).await?.rows_affected() > 0;
        if deleted {
            bump_generation(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn put_identity_provider(&self, provider: &IdentityProviderRecord) -> Result<()> {
        let mut tx = self.write_tx().await?;
        upsert_identity_provider(&mut tx, provider, provider.created_at, provider.updated_at).await?;
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_identity_provider(&self, provider: &IdentityProviderRecord) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let created = sqlx::query(
            "INSERT INTO identity_providers (name, config, created_at, updated_at) VALUES (?1, ?2, ?3, ?4) \
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

    async fn get_identity_provider(&self, name: &str) -> Result<Option<IdentityProviderRecord>> {
        let row = sqlx::query("SELECT name, config, created_at, updated_at FROM identity_providers WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| idp_from_row(&r)).transpose()
    }

    async fn list_identity_providers(&self) -> Result<Vec<IdentityProviderRecord>> {
        let rows = sqlx::query("SELECT name, config, created_at, updated_at FROM identity_providers ORDER BY name")
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(idp_from_row).collect()
    }

    async fn delete_identity_provider(&self, name: &str) -> Result<DeleteOutcome> {
        let mut tx = self.write_tx().await?;
        if let Some(robots) = robots_referring(&mut tx, "identity_provider", name).await? {
            tx.rollback().await?;
            return Ok(DeleteOutcome::InUse(format!(
                "identity provider {name:?} still has federated robots ({robots}); delete them first"
            )));
        }
        let deleted = sqlx::query("DELETE FROM identity_providers WHERE name = ?1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if !deleted {
            tx.rollback().await?;
            return Ok(DeleteOutcome::NotFound);
        }
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(DeleteOutcome::Deleted)
    }

    async fn apply(&self, batch: ApplyBatch<'_>, now: UnixTime) -> Result<ApplyOutcome> {
        let mut tx = self.write_tx().await?;
        match apply_in(&mut tx, batch, now).await {
            Ok(outcome) => {
                tx.commit().await?;
                Ok(outcome)
            }
            Err(e) => {
                tx.rollback().await?;
                Err(e)
            }
        }
    }

    async fn federation_generation(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT generation FROM federation_generation WHERE id = 1").fetch_one(&self.reader).await?)
    }

    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        // Under the write lock nobody else appends, so this batch's rows are exactly those above
        // the current highest id (ids only grow: AUTOINCREMENT).
        let last_id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM audit_events").fetch_one(&mut *tx).await?;
        for chunk in events.chunks(AUDIT_INSERT_ROWS) {
            let mut b = QueryBuilder::new(
                "INSERT INTO audit_events (time_ms, action, result, principal, robots, provider, subject, jti, claims, \
                 repository, reference, client, message) ",
            );
            b.push_values(chunk, |mut row, e| {
                row.push_bind(e.time_ms)
                    .push_bind(e.action.as_str())
                    .push_bind(e.result.as_str())
                    .push_bind(e.principal.as_str())
                    .push_bind(json_strings(e.robots.iter().map(String::as_str)))
                    .push_bind(e.provider.as_deref())
                    .push_bind(e.subject.as_deref())
                    .push_bind(e.jti.as_deref())
                    .push_bind(e.claims.as_ref().map(|c| c.to_string()))
                    .push_bind(e.repository.as_deref())
                    .push_bind(e.reference.as_deref())
                    .push_bind(e.client.as_deref())
                    .push_bind(e.message.as_deref());
            });
            b.build().execute(&mut *tx).await?;
        }
        // The names a robot filter finds each new event by: its robots and its principal.
        sqlx::query(
            "INSERT INTO audit_names (name, event_id) \
             SELECT j.value, e.id FROM audit_events e, json_each(e.robots) j WHERE e.id > ?1 \
             UNION SELECT e.principal, e.id FROM audit_events e WHERE e.id > ?1",
        )
        .bind(last_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
        let rows = audit_select(q).build().fetch_all(&self.reader).await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn prune_audit(&self, before_ms: i64) -> Result<u64> {
        // In batches, each its own short transaction, so pruning a large log never holds the
        // write lock for long.
        let mut removed = 0;
        loop {
            let mut tx = self.write_tx().await?;
            let ids: Vec<i64> =
                sqlx::query_scalar("SELECT id FROM audit_events WHERE time_ms < ?1 ORDER BY time_ms, id LIMIT ?2")
                    .bind(before_ms)
                    .bind(PRUNE_BATCH)
                    .fetch_all(&mut *tx)
                    .await?;
            if ids.is_empty() {
                tx.rollback().await?;
                break;
            }
            let ids_json = serde_json::Value::from(ids.clone()).to_string();
            sqlx::query("DELETE FROM audit_names WHERE event_id IN (SELECT j.value FROM json_each(?1) j)")
                .bind(&ids_json)
                .execute(&mut *tx)
                .await?;
            removed += sqlx::query("DELETE FROM audit_events WHERE id IN (SELECT j.value FROM json_each(?1) j)")
                .bind(&ids_json)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            if (ids.len() as i64) < PRUNE_BATCH {
                break;
            }
            tokio::task::yield_now().await;
        }
        Ok(removed)
    }

    async fn record_login_failure(&self, key: &str, window_start: UnixTime) -> Result<u32> {
        let mut tx = self.write_tx().await?;
        let n: i64 = sqlx::query_scalar(
            "INSERT INTO login_failures (key, window_start, count) VALUES (?1, ?2, 1) \
             ON CONFLICT (key, window_start) DO UPDATE SET count = login_failures.count + 1 RETURNING count",
        )
        .bind(key)
        .bind(window_start)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(count_from_db(n))
    }

    async fn forgive_login_failure(&self, key: &str, window_start: UnixTime) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE login_failures SET count = count - 1 WHERE key = ?1 AND window_start = ?2 AND count > 0")
            .bind(key)
            .bind(window_start)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn login_failures(&self, key: &str, window_start: UnixTime) -> Result<u32> {
        let n: Option<i64> = sqlx::query_scalar("SELECT count FROM login_failures WHERE key = ?1 AND window_start = ?2")
            .bind(key)
            .bind(window_start)
            .fetch_optional(&self.reader)
            .await?;
        Ok(n.map_or(0, count_from_db))
    }

    async fn prune_login_failures(&self, before: UnixTime) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let removed = sqlx::query("DELETE FROM login_failures WHERE window_start < ?1")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(removed)
    }

    async fn export(&self, table: Table, after: Option<&RowKey>, limit: u32) -> Result<Vec<ExportRow>> {
        self.export_page(table, after, i64::from(limit.max(1))).await
    }

    async fn import(&self, rows: &[ExportRow]) -> Result<ImportOutcome> {
        let mut tx = self.write_tx().await?;
        match import_in(&mut tx, rows).await {
            Ok(outcome) => {
                tx.commit().await?;
                Ok(outcome)
            }
            Err(e) => {
                tx.rollback().await?;
                Err(e)
            }
        }
    }

    async fn prune(&self, table: Table, after: Option<&RowKey>, upto: Option<&RowKey>, keep: &[RowKey]) -> Result<PruneOutcome> {
        let mut tx = self.write_tx().await?;
        match prune_in(&mut tx, table, after, upto, keep).await {
            Ok(outcome) => {
                tx.commit().await?;
                Ok(outcome)
            }
            Err(e) => {
                tx.rollback().await?;
                Err(e)
            }
        }
    }

    async fn blob_records(&self, digests: &[Digest]) -> Result<Vec<BlobRecord>> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT digest, size, storage_key FROM blobs WHERE digest IN (SELECT j.value FROM json_each(?1) j)")
            .bind(json_strings(digests.iter().map(|d| d.as_str())))
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| {
                let digest: String = r.try_get(0)?;
                Ok(BlobRecord { digest: parse_digest(&digest)?, size: size_from_db(r.try_get(1)?)?, storage_key: r.try_get(2)? })
            })
            .collect()
    }

    async fn row_counts(&self) -> Result<RowCounts> {
        // One read transaction: every count from the same snapshot.
        let mut tx = self.reader.begin().await?;
        let row = sqlx::query(SQL_ROW_COUNTS).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        let n = |i: usize| -> Result<u64> { size_from_db(row.try_get::<i64, _>(i)?) };
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
     (SELECT COUNT(*) FROM blobs), (SELECT COALESCE(SUM(size), 0) FROM blobs), \
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

fn key_shape_error(table: Table, key: &RowKey) -> MetaError {
    MetaError::Conflict(format!("a key {key:?} does not name a row of the table {}", table.name()))
}

/// Appends ` AND <key> > after AND <key> <= upto` for the bounds given.
fn push_range(b: &mut QueryBuilder<'_, Sqlite>, table: Table, cols: KeyCols, after: Option<&RowKey>, upto: Option<&RowKey>) -> Result<()> {
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
fn push_not_kept(b: &mut QueryBuilder<'_, Sqlite>, table: Table, cols: KeyCols, keep: &[RowKey]) -> Result<()> {
    let mut values = Vec::with_capacity(keep.len());
    for key in keep {
        values.push(match (cols, key) {
            (KeyCols::One(_), RowKey::Name(v)) => serde_json::Value::from(v.as_str()),
            (KeyCols::Two(..), RowKey::Pair(v1, v2)) => serde_json::json!([v1, v2]),
            (KeyCols::Id(_), RowKey::Id(v)) => serde_json::Value::from(*v),
            _ => return Err(key_shape_error(table, key)),
        });
    }
    let json = serde_json::Value::Array(values).to_string();
    match cols {
        KeyCols::One(c) | KeyCols::Id(c) => {
            b.push(format_args!(" AND {c} NOT IN (SELECT k.value FROM json_each(")).push_bind(json).push(") k)");
        }
        KeyCols::Two(c1, c2) => {
            b.push(" AND NOT EXISTS (SELECT 1 FROM json_each(")
                .push_bind(json)
                .push(format_args!(") k WHERE json_extract(k.value, '$[0]') = {c1} AND json_extract(k.value, '$[1]') = {c2})"));
        }
    }
    Ok(())
}

/// The key columns of `table` in the statements of [`SqliteStore::export_page`] and [`prune_in`]
/// (pairs through the repositories table, aliased `r`).
fn key_cols(table: Table) -> KeyCols {
    match table {
        Table::Settings => KeyCols::One("key"),
        Table::Users | Table::Projects | Table::IdentityProviders | Table::Robots => KeyCols::One("name"),
        Table::Tokens => KeyCols::One("id"),
        Table::Members => KeyCols::Two("x.project", "x.member"),
        Table::Blobs => KeyCols::One("digest"),
        Table::BlobLinks => KeyCols::Two("r.name", "x.digest"),
        Table::Manifests => KeyCols::Two("r.name", "x.digest"),
        Table::Tags => KeyCols::Two("r.name", "x.name"),
        Table::AuditEvents => KeyCols::Id("id"),
    }
}

fn parse_repo(s: &str) -> Result<RepoName> {
    s.parse().map_err(|e| MetaError::Corrupt(format!("stored repository name {s:?}: {e}")))
}

impl SqliteStore {
    async fn export_page(&self, table: Table, after: Option<&RowKey>, limit: i64) -> Result<Vec<ExportRow>> {
        let cols = key_cols(table);
        let (select, order) = match table {
            Table::Settings => ("SELECT key, value FROM settings WHERE 1 = 1", "key"),
            Table::Users => (
                "SELECT name, password_hash, admin, disabled, idp_provider, idp_issuer, idp_subject, email, \"groups\", created_at, \
                 last_login_at FROM users WHERE 1 = 1",
                "name",
            ),
            Table::Tokens => (
                "SELECT id, user_name, kind, name, secret_hash, parent, scope, created_at, expires_at, last_used_at, refresh_token, \
                 checked_at FROM user_tokens WHERE 1 = 1",
                "id",
            ),
            Table::Projects => ("SELECT name, public, created_at FROM projects WHERE 1 = 1", "name"),
            Table::Members => ("SELECT x.project, x.member, x.role, x.created_at, x.updated_at FROM project_members x WHERE 1 = 1", "x.project, x.member"),
            Table::IdentityProviders => ("SELECT name, config, created_at, updated_at FROM identity_providers WHERE 1 = 1", "name"),
            Table::Robots => (
                "SELECT name, project, description, disabled, expires_at, secret_hash, identity_provider, rules, permissions, \
                 created_at, updated_at FROM robots WHERE 1 = 1",
                "name",
            ),
            Table::Blobs => ("SELECT digest, size, storage_key, last_used FROM blobs WHERE 1 = 1", "digest"),
            Table::BlobLinks => (
                "SELECT r.name, x.digest, x.last_used FROM repo_blobs x JOIN repositories r ON r.id = x.repo_id WHERE 1 = 1",
                "r.name, x.digest",
            ),
            Table::Manifests => (
                "SELECT r.name, x.digest, x.media_type, x.bytes, x.subject, x.artifact_type, x.annotations, x.created, x.repo_id \
                 FROM manifests x JOIN repositories r ON r.id = x.repo_id WHERE 1 = 1",
                "r.name, x.digest",
            ),
            Table::Tags => (
                "SELECT r.name, x.name, x.manifest_digest, x.updated FROM tags x JOIN repositories r ON r.id = x.repo_id WHERE 1 = 1",
                "r.name, x.name",
            ),
            Table::AuditEvents => (
                "SELECT id AS id, time_ms, action, result, principal, robots, provider, subject, jti, claims, repository, \
                 reference, client, message FROM audit_events WHERE 1 = 1",
                "id",
            ),
        };
        let mut b = QueryBuilder::new(select);
        push_range(&mut b, table, cols, after, None)?;
        b.push(format_args!(" ORDER BY {order} LIMIT ")).push_bind(limit);
        // One read transaction: a manifest page and its references come from one snapshot.
        let mut tx = self.reader.begin().await?;
        let rows = b.build().fetch_all(&mut *tx).await?;
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
                    let repo_id: i64 = r.try_get(8)?;
                    let refs = sqlx::query(
                        "SELECT kind, ref_digest FROM manifest_refs WHERE repo_id = ?1 AND manifest_digest = ?2 ORDER BY kind, ref_digest",
                    )
                    .bind(repo_id)
                    .bind(&digest)
                    .fetch_all(&mut *tx)
                    .await?;
                    let (mut blobs, mut manifests) = (Vec::new(), Vec::new());
                    for rr in &refs {
                        let (kind, d): (String, String) = (rr.try_get(0)?, rr.try_get(1)?);
                        if kind == "blob" { blobs.push(parse_digest(&d)?) } else { manifests.push(parse_digest(&d)?) }
                    }
                    ExportRow::Manifest(ManifestExport {
                        repo: parse_repo(&repo)?,
                        digest: parse_digest(&digest)?,
                        media_type: r.try_get(2)?,
                        bytes: r.try_get(3)?,
                        subject: subject.as_deref().map(parse_digest).transpose()?,
                        artifact_type: r.try_get(5)?,
                        annotations: r.try_get(6)?,
                        created: r.try_get(7)?,
                        blobs,
                        manifests,
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
        tx.commit().await?;
        Ok(out)
    }
}

/// The writes of [`MetadataStore::import`] inside its transaction.
async fn import_in(tx: &mut Transaction<'static, Sqlite>, rows: &[ExportRow]) -> Result<ImportOutcome> {
    let mut outcome = ImportOutcome::default();
    let mut federation_changed = false;
    let mut tokens: Vec<&TokenRecord> = Vec::new();
    for row in rows {
        match row {
            ExportRow::Setting { key, value } => {
                sqlx::query("INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                    .bind(key)
                    .bind(value)
                    .execute(&mut **tx)
                    .await?;
            }
            ExportRow::User(u) => {
                if let Some(identity) = &u.identity {
                    // The identity is this user's at the source: another row that has it here is
                    // the destination's old state (see the trait docs).
                    sqlx::query(
                        "UPDATE users SET idp_provider = NULL, idp_issuer = NULL, idp_subject = NULL \
                         WHERE idp_issuer = ?1 AND idp_subject = ?2 AND name <> ?3",
                    )
                    .bind(&identity.issuer)
                    .bind(&identity.subject)
                    .bind(&u.name)
                    .execute(&mut **tx)
                    .await?;
                }
                upsert_user(tx, u, &u.groups, true).await?;
                federation_changed = true;
            }
            ExportRow::Token(t) => {
                // Written after the other rows, parents first (below).
                tokens.push(t);
                continue;
            }
            ExportRow::Project(p) => {
                sqlx::query(
                    "INSERT INTO projects (name, public, created_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (name) DO UPDATE SET public = excluded.public, created_at = excluded.created_at",
                )
                .bind(&p.name)
                .bind(p.public)
                .bind(p.created_at)
                .execute(&mut **tx)
                .await?;
                federation_changed = true;
            }
            ExportRow::Member(m) => {
                let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM projects WHERE name = ?1").bind(&m.project).fetch_optional(&mut **tx).await?;
                if known.is_none() {
                    outcome.skipped.push(format!("member {:?} of project {:?}: the project is not here", m.member, m.project));
                    continue;
                }
                sqlx::query(
                    "INSERT INTO project_members (project, member, role, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (project, member) DO UPDATE SET role = excluded.role, created_at = excluded.created_at, \
                     updated_at = excluded.updated_at",
                )
                .bind(&m.project)
                .bind(&m.member)
                .bind(&m.role)
                .bind(m.created_at)
                .bind(m.updated_at)
                .execute(&mut **tx)
                .await?;
                federation_changed = true;
            }
            ExportRow::IdentityProvider(p) => {
                sqlx::query(
                    "INSERT INTO identity_providers (name, config, created_at, updated_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (name) DO UPDATE SET config = excluded.config, created_at = excluded.created_at, \
                     updated_at = excluded.updated_at",
                )
                .bind(&p.name)
                .bind(p.config.to_string())
                .bind(p.created_at)
                .bind(p.updated_at)
                .execute(&mut **tx)
                .await?;
                federation_changed = true;
            }
            ExportRow::Robot(robot) => {
                match check_robot_refs(tx, robot).await {
                    Ok(()) => {}
                    Err(MetaError::Conflict(why)) => {
                        outcome.skipped.push(format!("robot {:?}: {why}", robot.name));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                upsert_robot(tx, robot, robot.secret_hash.as_deref(), robot.created_at, robot.updated_at).await?;
                // upsert_robot keeps an existing robot's creation time; an import sets it.
                sqlx::query("UPDATE robots SET created_at = ?2 WHERE name = ?1")
                    .bind(&robot.name)
                    .bind(robot.created_at)
                    .execute(&mut **tx)
                    .await?;
                federation_changed = true;
            }
            ExportRow::Blob(blob) => {
                let stored: String = sqlx::query_scalar(
                    "INSERT INTO blobs (digest, size, storage_key, last_used) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (digest) DO UPDATE SET last_used = excluded.last_used RETURNING storage_key",
                )
                .bind(blob.digest.as_str())
                .bind(size_to_db(blob.size)?)
                .bind(&blob.storage_key)
                .bind(blob.last_used)
                .fetch_one(&mut **tx)
                .await?;
                if stored != blob.storage_key {
                    outcome.unused_keys.push(blob.storage_key.clone());
                }
            }
            ExportRow::BlobLink(link) => {
                let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = ?1)")
                    .bind(link.digest.as_str())
                    .fetch_one(&mut **tx)
                    .await?;
                if !known {
                    outcome.skipped.push(format!("link of {} to {}: no blob record", link.digest, link.repo));
                    continue;
                }
                let repo_id = repo_id_for_write(tx, &link.repo).await?;
                sqlx::query(
                    "INSERT INTO repo_blobs (repo_id, digest, last_used) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (repo_id, digest) DO UPDATE SET last_used = excluded.last_used",
                )
                .bind(repo_id)
                .bind(link.digest.as_str())
                .bind(link.last_used)
                .execute(&mut **tx)
                .await?;
            }
            ExportRow::Manifest(m) => {
                let repo_id = repo_id_for_write(tx, &m.repo).await?;
                // Written (and its references replaced) only when it differs from what is stored,
                // so a rerun over an unchanged manifest writes nothing.
                let written: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO manifests (repo_id, digest, media_type, bytes, size, subject, artifact_type, annotations, created) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT (repo_id, digest) DO UPDATE SET media_type = excluded.media_type, bytes = excluded.bytes, \
                     size = excluded.size, subject = excluded.subject, artifact_type = excluded.artifact_type, \
                     annotations = excluded.annotations, created = excluded.created \
                     WHERE (manifests.media_type, manifests.bytes, manifests.subject, manifests.artifact_type, \
                     manifests.annotations, manifests.created) IS NOT (excluded.media_type, excluded.bytes, excluded.subject, \
                     excluded.artifact_type, excluded.annotations, excluded.created) RETURNING 1",
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
                .fetch_optional(&mut **tx)
                .await?;
                let refs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM manifest_refs WHERE repo_id = ?1 AND manifest_digest = ?2")
                    .bind(repo_id)
                    .bind(m.digest.as_str())
                    .fetch_one(&mut **tx)
                    .await?;
                if written.is_some() || refs != (m.blobs.len() + m.manifests.len()) as i64 {
                    sqlx::query("DELETE FROM manifest_refs WHERE repo_id = ?1 AND manifest_digest = ?2")
                        .bind(repo_id)
                        .bind(m.digest.as_str())
                        .execute(&mut **tx)
                        .await?;
                    for (kind, list) in [("blob", &m.blobs), ("manifest", &m.manifests)] {
                        if list.is_empty() {
                            continue;
                        }
                        sqlx::query(
                            "INSERT OR IGNORE INTO manifest_refs (repo_id, manifest_digest, ref_digest, kind) \
                             SELECT ?1, ?2, j.value, ?3 FROM json_each(?4) j",
                        )
                        .bind(repo_id)
                        .bind(m.digest.as_str())
                        .bind(kind)
                        .bind(json_strings(list.iter().map(|d| d.as_str())))
                        .execute(&mut **tx)
                        .await?;
                    }
                }
            }
            ExportRow::Tag(t) => {
                let repo_id: Option<i64> = sqlx::query_scalar(
                    "SELECT r.id FROM repositories r JOIN manifests m ON m.repo_id = r.id WHERE r.name = ?1 AND m.digest = ?2",
                )
                .bind(t.repo.as_str())
                .bind(t.manifest.as_str())
                .fetch_optional(&mut **tx)
                .await?;
                let Some(repo_id) = repo_id else {
                    outcome.skipped.push(format!("tag {}:{}: no manifest {}", t.repo, t.tag, t.manifest));
                    continue;
                };
                sqlx::query(
                    "INSERT INTO tags (repo_id, name, manifest_digest, updated) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (repo_id, name) DO UPDATE SET manifest_digest = excluded.manifest_digest, updated = excluded.updated",
                )
                .bind(repo_id)
                .bind(t.tag.as_str())
                .bind(t.manifest.as_str())
                .bind(t.updated)
                .execute(&mut **tx)
                .await?;
            }
            ExportRow::AuditEvent(e) => {
                // Written (and its names rebuilt) only when it differs from what is stored.
                let written: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO audit_events (id, time_ms, action, result, principal, robots, provider, subject, jti, claims, \
                     repository, reference, client, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
                     ON CONFLICT (id) DO UPDATE SET time_ms = excluded.time_ms, action = excluded.action, result = excluded.result, \
                     principal = excluded.principal, robots = excluded.robots, provider = excluded.provider, \
                     subject = excluded.subject, jti = excluded.jti, claims = excluded.claims, repository = excluded.repository, \
                     reference = excluded.reference, client = excluded.client, message = excluded.message \
                     WHERE (audit_events.time_ms, audit_events.action, audit_events.result, audit_events.principal, \
                     audit_events.robots, audit_events.provider, audit_events.subject, audit_events.jti, audit_events.claims, \
                     audit_events.repository, audit_events.reference, audit_events.client, audit_events.message) \
                     IS NOT (excluded.time_ms, excluded.action, excluded.result, excluded.principal, excluded.robots, \
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
                .fetch_optional(&mut **tx)
                .await?;
                if written.is_some() {
                    sqlx::query("DELETE FROM audit_names WHERE event_id = ?1").bind(e.id).execute(&mut **tx).await?;
                    for name in e.robots.iter().chain([&e.principal]) {
                        sqlx::query("INSERT INTO audit_names (name, event_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING")
                            .bind(name)
                            .bind(e.id)
                            .execute(&mut **tx)
                            .await?;
                    }
                }
            }
        }
        outcome.imported += 1;
    }
    // Tokens: in rounds, each writing those whose parent is here by now (written in an earlier
    // round, or before this import), until a round writes none.
    let mut pending = tokens;
    while !pending.is_empty() {
        let mut waiting = Vec::new();
        let mut written = false;
        for t in pending {
            let user: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1)").bind(&t.user).fetch_one(&mut **tx).await?;
            if !user {
                outcome.skipped.push(format!("token {:?}: its user {:?} is not here", t.id, t.user));
                continue;
            }
            if let Some(parent) = &t.parent {
                let here: bool =
                    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM user_tokens WHERE id = ?1)").bind(parent).fetch_one(&mut **tx).await?;
                if !here {
                    waiting.push(t);
                    continue;
                }
            }
            insert_token(tx, t, true).await?;
            outcome.imported += 1;
            written = true;
            federation_changed = true;
        }
        if !written {
            wait_for_parents(&mut outcome, &waiting);
            break;
        }
        pending = waiting;
    }
    if federation_changed {
        bump_generation(tx).await?;
    }
    Ok(outcome)
}

/// The deletes of [`MetadataStore::prune`] inside its transaction.
async fn prune_in(
    tx: &mut Transaction<'static, Sqlite>,
    table: Table,
    after: Option<&RowKey>,
    upto: Option<&RowKey>,
    keep: &[RowKey],
) -> Result<PruneOutcome> {
    let cols = key_cols(table);
    // The rows to remove, as a sub-query over the table (aliased x, with r for pairs).
    let doomed = |select: &str| -> Result<QueryBuilder<'static, Sqlite>> {
        let mut b = QueryBuilder::new(select.to_owned());
        push_range(&mut b, table, cols, after, upto)?;
        push_not_kept(&mut b, table, cols, keep)?;
        b.push(")");
        Ok(b)
    };
    let mut outcome = PruneOutcome::default();
    match table {
        Table::Settings => {
            let mut b = doomed("DELETE FROM settings WHERE key IN (SELECT key FROM settings WHERE 1 = 1")?;
            outcome.removed = b.build().execute(&mut **tx).await?.rows_affected();
        }
        Table::Users | Table::Robots | Table::Tokens => {
            // A user's tokens, and a token's children, go with it (ON DELETE CASCADE).
            let (t, key) = match table {
                Table::Users => ("users", "name"),
                Table::Robots => ("robots", "name"),
                _ => ("user_tokens", "id"),
            };
            let mut b = doomed(&format!("DELETE FROM {t} WHERE {key} IN (SELECT {key} FROM {t} WHERE 1 = 1"))?;
            outcome.removed = b.build().execute(&mut **tx).await?.rows_affected();
        }
        Table::Projects | Table::IdentityProviders => {
            let (t, column) = if table == Table::Projects { ("projects", "project") } else { ("identity_providers", "identity_provider") };
            let mut robots = doomed(&format!("DELETE FROM robots WHERE {column} IN (SELECT name FROM {t} WHERE 1 = 1"))?;
            robots.build().execute(&mut **tx).await?;
            let mut b = doomed(&format!("DELETE FROM {t} WHERE name IN (SELECT name FROM {t} WHERE 1 = 1"))?;
            outcome.removed = b.build().execute(&mut **tx).await?.rows_affected();
        }
        Table::Blobs => {
            let mut links = doomed("DELETE FROM repo_blobs WHERE digest IN (SELECT digest FROM blobs WHERE 1 = 1")?;
            links.build().execute(&mut **tx).await?;
            let mut b = doomed("DELETE FROM blobs WHERE digest IN (SELECT digest FROM blobs WHERE 1 = 1")?;
            b.push(" RETURNING storage_key");
            let keys: Vec<String> = b.build_query_scalar().fetch_all(&mut **tx).await?;
            outcome.removed = keys.len() as u64;
            outcome.deleted_keys = keys;
        }
        Table::BlobLinks => {
            let mut b = doomed(
                "DELETE FROM repo_blobs WHERE (repo_id, digest) IN \
                 (SELECT x.repo_id, x.digest FROM repo_blobs x JOIN repositories r ON r.id = x.repo_id WHERE 1 = 1",
            )?;
            outcome.removed = b.build().execute(&mut **tx).await?.rows_affected();
        }
        Table::Manifests => {
            // Tags and references go with their manifest (ON DELETE CASCADE).
            let mut b = doomed(
                "DELETE FROM manifests WHERE id IN (SELECT x.id FROM manifests x JOIN repositories r ON r.id = x.repo_id WHERE 1 = 1",
            )?;
            outcome.removed = b.build().execute(&mut **tx).await?.rows_affected();
        }
        Table::Tags => {
            let mut b = doomed(
                "DELETE FROM tags WHERE (repo_id, name) IN \
                 (SELECT x.repo_id, x.name FROM tags x JOIN repositories r ON r.id = x.repo_id WHERE 1 = 1",
            )?;
            outcome.removed = b.build().execute(&mut **tx).await?.rows_affected();
        }
        Table::AuditEvents => {
            // Their names go with them (ON DELETE CASCADE).
            let mut b = doomed("DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE 1 = 1")?;
            outcome.removed = b.build().execute(&mut **tx).await?.rows_affected();
        }
        Table::Members => {
            let mut b = doomed(
                "DELETE FROM project_members WHERE (project, member) IN (SELECT x.project, x.member FROM project_members x WHERE 1 = 1",
            )?;
            outcome.removed = b.build().execute(&mut **tx).await?.rows_affected();
        }
    }
    if outcome.removed > 0 && matches!(table, Table::Users | Table::Tokens | Table::Projects | Table::Members | Table::IdentityProviders | Table::Robots) {
        bump_generation(tx).await?;
    }
    Ok(outcome)
}

/// Audit events per `INSERT` statement when appending (13 parameters each).
const AUDIT_INSERT_ROWS: usize = 64;
/// Audit events deleted per write transaction by [`SqliteStore::prune_audit`].
const PRUNE_BATCH: i64 = 5000;
/// Robots named in an "in use" message (the rest are counted).
const IN_USE_NAMES: i64 = 5;
/// Expired tokens (each with its children) deleted per write transaction by `prune_tokens`.
const TOKEN_PRUNE_BATCH: i64 = 1000;

const ROBOT_COLUMNS: &str =
    "name, project, description, disabled, expires_at, secret_hash, identity_provider, rules, permissions, created_at, updated_at";

/// The columns [`user_from_row`] reads, in the order [`upsert_user`] and `create_user` bind them.
const USER_COLUMNS: &str =
    "name, password_hash, admin, disabled, idp_provider, idp_issuer, idp_subject, email, \"groups\", created_at, last_login_at";

/// The columns [`token_from_row`] reads, in the order [`insert_token`] binds them.
const TOKEN_COLUMNS: &str =
    "id, user_name, kind, name, secret_hash, parent, scope, created_at, expires_at, last_used_at, refresh_token, checked_at";

/// The columns [`auth_request_from_row`] reads.
const AUTH_REQUEST_COLUMNS: &str = "id, kind, data, created_at, expires_at";

/// [`MetadataStore::tokens_to_check`]: the partial index `user_tokens_to_check` walked in order.
const SQL_TOKENS_TO_CHECK: &str = "SELECT id, user_name, kind, name, secret_hash, parent, scope, created_at, expires_at, last_used_at, \
     refresh_token, checked_at FROM user_tokens WHERE refresh_token IS NOT NULL AND coalesce(checked_at, created_at) < ?1 \
     AND (expires_at IS NULL OR expires_at > ?2) ORDER BY coalesce(checked_at, created_at), id LIMIT ?3";

/// The columns [`upload_from_row`] reads (the id is known by the caller).
const UPLOAD_COLUMNS: &str = "repo, created, updated, \"offset\", hash_state, parts";

fn upload_from_row(id: &str, row: &sqlx::sqlite::SqliteRow) -> Result<UploadRecord> {
    let repo: String = row.try_get(0)?;
    let parts: i64 = row.try_get(5)?;
    Ok(UploadRecord {
        id: id.to_owned(),
        repo: repo.parse().map_err(|e| MetaError::Corrupt(format!("upload {id}: {e}")))?,
        created: row.try_get(1)?,
        updated: row.try_get(2)?,
        offset: size_from_db(row.try_get(3)?)?,
        hash_state: row.try_get(4)?,
        parts: u32::try_from(parts).map_err(|_| MetaError::Corrupt(format!("upload {id}: stored part count {parts}")))?,
    })
}

/// Increments the federation generation; every write to projects, members, robots, identity
/// providers or users, and every deletion of tokens, calls it in its transaction.
async fn bump_generation(tx: &mut Transaction<'static, Sqlite>) -> Result<()> {
    sqlx::query("UPDATE federation_generation SET generation = generation + 1 WHERE id = 1").execute(&mut **tx).await?;
    Ok(())
}

/// The writes of [`MetadataStore::apply`] inside its transaction (the caller commits on success
/// and rolls back on error).
async fn apply_in(tx: &mut Transaction<'static, Sqlite>, batch: ApplyBatch<'_>, now: UnixTime) -> Result<ApplyOutcome> {
    let mut outcome = ApplyOutcome::default();
    for p in batch.projects {
        let public: Option<bool> = sqlx::query_scalar("SELECT public FROM projects WHERE name = ?1")
            .bind(&p.name)
            .fetch_optional(&mut **tx)
            .await?;
        let action = match public {
            Some(public) if public == p.public => ApplyAction::Unchanged,
            Some(_) => ApplyAction::Updated,
            None => ApplyAction::Created,
        };
        if action != ApplyAction::Unchanged {
            sqlx::query(
                "INSERT INTO projects (name, public, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET public = excluded.public",
            )
            .bind(&p.name)
            .bind(p.public)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        outcome.projects.push(action);
    }
    for m in batch.members {
        let project: Option<i64> = sqlx::query_scalar("SELECT 1 FROM projects WHERE name = ?1").bind(&m.project).fetch_optional(&mut **tx).await?;
        if project.is_none() {
            return Err(MetaError::Conflict(format!("member {} of project {:?}: the project does not exist", m.member, m.project)));
        }
        let role: Option<String> = sqlx::query_scalar("SELECT role FROM project_members WHERE project = ?1 AND member = ?2")
            .bind(&m.project)
            .bind(&m.member)
            .fetch_optional(&mut **tx)
            .await?;
        let action = match role {
            Some(r) if r == m.role => ApplyAction::Unchanged,
            Some(_) => ApplyAction::Updated,
            None => ApplyAction::Created,
        };
        if action != ApplyAction::Unchanged {
            sqlx::query(
                "INSERT INTO project_members (project, member, role, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4) \
                 ON CONFLICT (project, member) DO UPDATE SET role = excluded.role, updated_at = excluded.updated_at",
            )
            .bind(&m.project)
            .bind(&m.member)
            .bind(&m.role)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        outcome.members.push(action);
    }
    for provider in batch.identity_providers {
        let row = sqlx::query("SELECT name, config, created_at, updated_at FROM identity_providers WHERE name = ?1")
            .bind(&provider.name)
            .fetch_optional(&mut **tx)
            .await?;
        let action = match row.map(|r| idp_from_row(&r)).transpose()? {
            Some(stored) if stored.config == provider.config => ApplyAction::Unchanged,
            Some(_) => ApplyAction::Updated,
            None => ApplyAction::Created,
        };
        if action != ApplyAction::Unchanged {
            upsert_identity_provider(tx, provider, now, now).await?;
        }
        outcome.identity_providers.push(action);
    }
    for robot in batch.robots {
        check_robot_refs(tx, robot).await?;
        let row = sqlx::query(&format!("SELECT {ROBOT_COLUMNS} FROM robots WHERE name = ?1"))
            .bind(&robot.name)
            .fetch_optional(&mut **tx)
            .await?;
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
            upsert_robot(tx, robot, hash.as_deref(), created_at, now).await?;
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
        bump_generation(tx).await?;
    }
    Ok(outcome)
}

/// Refuses (with a [`MetaError::Conflict`] naming what is wrong) a robot with both a static
/// secret and an identity provider, or whose project or provider does not exist (as seen inside
/// `tx`). The schema enforces all three too; checking first gives messages that name the missing
/// row instead of a bare constraint failure.
async fn check_robot_refs(tx: &mut Transaction<'static, Sqlite>, robot: &RobotRecord) -> Result<()> {
    if robot.secret_hash.is_some() && robot.identity_provider.is_some() {
        return Err(MetaError::Conflict(format!(
            "robot {:?} cannot have both a static secret and an identity provider",
            robot.name
        )));
    }
    if let Some(project) = &robot.project {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM projects WHERE name = ?1)")
            .bind(project)
            .fetch_one(&mut **tx)
            .await?;
        if !exists {
            return Err(MetaError::Conflict(format!(
                "project {project:?} does not exist; create it before robot {:?}",
                robot.name
            )));
        }
    }
    if let Some(provider) = &robot.identity_provider {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM identity_providers WHERE name = ?1)")
            .bind(provider)
            .fetch_one(&mut **tx)
            .await?;
        if !exists {
            return Err(MetaError::Conflict(format!(
                "identity provider {provider:?} does not exist; add it before robot {:?}",
                robot.name
            )));
        }
    }
    Ok(())
}

/// Creates or replaces a robot with `secret_hash` (instead of the record's) and these times; an
/// existing robot keeps its creation time.
async fn upsert_robot(
    tx: &mut Transaction<'static, Sqlite>,
    robot: &RobotRecord,
    secret_hash: Option<&str>,
    created_at: UnixTime,
    updated_at: UnixTime,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO robots (name, project, description, disabled, expires_at, secret_hash, identity_provider, \
         rules, permissions, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
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
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Creates or replaces an identity provider with these times; an existing one keeps its creation
/// time.
async fn upsert_identity_provider(
    tx: &mut Transaction<'static, Sqlite>,
    provider: &IdentityProviderRecord,
    created_at: UnixTime,
    updated_at: UnixTime,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO identity_providers (name, config, created_at, updated_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
    )
    .bind(&provider.name)
    .bind(provider.config.to_string())
    .bind(created_at)
    .bind(updated_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The robots whose `column` (`project` or `identity_provider`) is `value`, as a short list for a
/// message ("a, b and 3 more"), or None when there are none.
async fn robots_referring(tx: &mut Transaction<'static, Sqlite>, column: &str, value: &str) -> Result<Option<String>> {
    debug_assert!(matches!(column, "project" | "identity_provider"));
    let names: Vec<String> = sqlx::query_scalar(&format!("SELECT name FROM robots WHERE {column} = ?1 ORDER BY name LIMIT ?2"))
        .bind(value)
        .bind(IN_USE_NAMES)
        .fetch_all(&mut **tx)
        .await?;
    if names.is_empty() {
        return Ok(None);
    }
    let mut list = names.join(", ");
    if names.len() as i64 == IN_USE_NAMES {
        let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM robots WHERE {column} = ?1"))
            .bind(value)
            .fetch_one(&mut **tx)
            .await?;
        if total > IN_USE_NAMES {
            list.push_str(&format!(" and {} more", total - IN_USE_NAMES));
        }
    }
    Ok(Some(list))
}

/// Refuses (with a [`MetaError::Conflict`] saying what to do) a write that would leave no enabled
/// admin: `name` is now the only enabled admin. `change` says what the refused write would do.
async fn refuse_last_admin(tx: &mut Transaction<'static, Sqlite>, name: &str, change: &str) -> Result<()> {
    let last: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1 AND admin = 1 AND disabled = 0) \
         AND NOT EXISTS (SELECT 1 FROM users WHERE name <> ?1 AND admin = 1 AND disabled = 0)",
    )
    .bind(name)
    .fetch_one(&mut **tx)
    .await?;
    if last {
        return Err(MetaError::Conflict(format!(
            "user {name:?} is the last enabled admin; make another user an admin before you {change}"
        )));
    }
    Ok(())
}

fn user_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<UserRecord> {
    let name: String = r.try_get(0)?;
    let identity = match (r.try_get(4)?, r.try_get(5)?, r.try_get(6)?) {
        (Some(provider), Some(issuer), Some(subject)) => Some(UserIdentity { provider, issuer, subject }),
        (None::<String>, None::<String>, None::<String>) => None,
        _ => return Err(MetaError::Corrupt(format!("user {name:?}: a part of its identity is missing"))),
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
async fn upsert_user(tx: &mut Transaction<'static, Sqlite>, user: &UserRecord, groups: &[String], set_created: bool) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
         ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash, admin = excluded.admin, \
         disabled = excluded.disabled, idp_provider = excluded.idp_provider, idp_issuer = excluded.idp_issuer, \
         idp_subject = excluded.idp_subject, email = excluded.email, \"groups\" = excluded.\"groups\", \
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
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Refuses (with a [`MetaError::Conflict`] naming the holder) a write of `user` whose identity
/// another user has. The unique index enforces it too; checking first names the holder.
async fn refuse_identity_taken(tx: &mut Transaction<'static, Sqlite>, user: &UserRecord) -> Result<()> {
    let Some(identity) = &user.identity else { return Ok(()) };
    let holder: Option<String> = sqlx::query_scalar("SELECT name FROM users WHERE idp_issuer = ?1 AND idp_subject = ?2 AND name <> ?3")
        .bind(&identity.issuer)
        .bind(&identity.subject)
        .bind(&user.name)
        .fetch_optional(&mut **tx)
        .await?;
    match holder {
        Some(holder) => Err(identity_taken(identity, &holder)),
        None => Ok(()),
    }
}

fn token_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<TokenRecord> {
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
async fn insert_token(tx: &mut Transaction<'static, Sqlite>, token: &TokenRecord, replace: bool) -> Result<bool> {
    let conflict = if replace {
        "DO UPDATE SET user_name = excluded.user_name, kind = excluded.kind, name = excluded.name, \
         secret_hash = excluded.secret_hash, parent = excluded.parent, scope = excluded.scope, created_at = excluded.created_at, \
         expires_at = excluded.expires_at, last_used_at = excluded.last_used_at, refresh_token = excluded.refresh_token, \
         checked_at = excluded.checked_at"
    } else {
        "DO NOTHING"
    };
    let done = sqlx::query(&format!(
        "INSERT INTO user_tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT (id) {conflict}"
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
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Refuses (with a [`MetaError::Conflict`] naming what is wrong) a token whose user or parent
/// does not exist, or whose parent is another user's. The schema enforces the first two too;
/// checking first gives messages that name the missing row.
async fn check_token_refs(tx: &mut Transaction<'static, Sqlite>, token: &TokenRecord) -> Result<()> {
    let user: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1)").bind(&token.user).fetch_one(&mut **tx).await?;
    if !user {
        return Err(MetaError::Conflict(format!("user {:?} does not exist", token.user)));
    }
    if let Some(parent) = &token.parent {
        let owner: Option<String> =
            sqlx::query_scalar("SELECT user_name FROM user_tokens WHERE id = ?1").bind(parent).fetch_optional(&mut **tx).await?;
        match owner {
            None => return Err(MetaError::Conflict(format!("the parent token {parent:?} does not exist"))),
            Some(owner) if owner != token.user => {
                return Err(MetaError::Conflict(format!("the parent token {parent:?} is not a token of user {:?}", token.user)))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// `kinds` as a JSON array of their names, for `json_each(?)`; every kind when empty.
fn kinds_json(kinds: &[TokenKind]) -> String {
    let kinds = if kinds.is_empty() { &TokenKind::ALL[..] } else { kinds };
    json_strings(kinds.iter().map(|k| k.as_str()))
}

/// Deletes the tokens `roots` with every descendant, found level by level (each level one
/// probe of the parent index per token); how many went. Counted here, not by the `DELETE`, whose
/// count leaves out what the cascade took first (under the write lock nothing changes
/// meanwhile).
async fn delete_tokens_with_children(tx: &mut Transaction<'static, Sqlite>, roots: &[String]) -> Result<u64> {
    if roots.is_empty() {
        return Ok(0);
    }
    let mut seen: HashSet<String> = roots.iter().cloned().collect();
    let mut all = roots.to_vec();
    let mut level = roots.to_vec();
    while !level.is_empty() {
        let children: Vec<String> = sqlx::query_scalar("SELECT id FROM user_tokens WHERE parent IN (SELECT j.value FROM json_each(?1) j)")
            .bind(json_strings(level.iter().map(String::as_str)))
            .fetch_all(&mut **tx)
            .await?;
        level = children.into_iter().filter(|c| seen.insert(c.clone())).collect();
        all.extend(level.iter().cloned());
    }
    sqlx::query("DELETE FROM user_tokens WHERE id IN (SELECT j.value FROM json_each(?1) j)")
        .bind(json_strings(all.iter().map(String::as_str)))
        .execute(&mut **tx)
        .await?;
    Ok(all.len() as u64)
}

fn auth_request_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<AuthRequest> {
    Ok(AuthRequest {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        data: json_column(r, 2, "login in progress")?,
        created_at: r.try_get(3)?,
        expires_at: r.try_get(4)?,
    })
}

/// A stored counter as `u32` (saturating).
fn count_from_db(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// The rows of an audit query, newest first. Only the filters present become conditions, so
/// SQLite can pick the matching index: `audit_names` (walked by event id) for a robot, `(repository,
/// id)` or `(provider, id)`, else the table itself in id order.
fn audit_select(q: &AuditQuery) -> QueryBuilder<'_, Sqlite> {
    let mut b = QueryBuilder::new("");
    push_audit_select(&mut b, q);
    b
}

/// Appends the statement of [`audit_select`] to `b` (tests prefix it with `EXPLAIN QUERY PLAN`).
fn push_audit_select<'a>(b: &mut QueryBuilder<'a, Sqlite>, q: &'a AuditQuery) {
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
            b.push("audit_events e WHERE 1 = 1");
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
    for (column, value) in [
        ("e.repository", &q.repository),
        ("e.provider", &q.provider),
        ("e.result", &q.result),
        ("e.action", &q.action),
    ] {
        if let Some(value) = value {
            b.push(format_args!(" AND {column} = ")).push_bind(value.as_str());
        }
    }
    b.push(format_args!(" ORDER BY {id_column} DESC LIMIT ")).push_bind(i64::from(limit));
}

fn json_column(row: &sqlx::sqlite::SqliteRow, idx: usize, what: &str) -> Result<serde_json::Value> {
    let text: String = row.try_get(idx)?;
    serde_json::from_str(&text).map_err(|e| MetaError::Corrupt(format!("stored {what} is not JSON: {e}")))
}

fn member_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<MemberRecord> {
    Ok(MemberRecord { project: r.try_get(0)?, member: r.try_get(1)?, role: r.try_get(2)?, created_at: r.try_get(3)?, updated_at: r.try_get(4)? })
}

fn project_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<ProjectRecord> {
    Ok(ProjectRecord { name: r.try_get(0)?, public: r.try_get(1)?, created_at: r.try_get(2)? })
}

fn robot_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<RobotRecord> {
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

fn idp_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<IdentityProviderRecord> {
    Ok(IdentityProviderRecord {
        name: r.try_get(0)?,
        config: json_column(r, 1, "identity provider")?,
        created_at: r.try_get(2)?,
        updated_at: r.try_get(3)?,
    })
}

fn audit_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<AuditEvent> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use berth_oci::{manifest, Algorithm};

    use super::*;
    use crate::testsuite;

    async fn temp_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("meta.db")).await.expect("open");
        (dir, store)
    }

    #[tokio::test]
    async fn suite() {
        let (_dir, store) = temp_store().await;
        testsuite::run_all(&store).await;
    }

    /// Export and import between two SQLite stores (`berth migrate` from one folder to another).
    #[tokio::test]
    async fn transfer_to_another_store() {
        let (_a, src) = temp_store().await;
        let (_b, dst) = temp_store().await;
        testsuite::transfer(&src, &dst).await;
    }

    /// A store opened read-only exports, writes nothing (every write fails), never creates a
    /// file, and refuses a database whose schema is older than this Berth's.
    #[tokio::test]
    async fn read_only_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.db");
        let e = SqliteStore::open_read_only(&missing).await.expect_err("no file");
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(!missing.exists(), "a read-only open creates nothing");

        let path = dir.path().join("meta.db");
        {
            let store = SqliteStore::open(&path).await.expect("open");
            store.init_setting("k", "v").await.expect("init");
            store.close().await;
        }
        // Every page into the database file and the log emptied (a pool's close returns before
        // its connections' threads have closed them, and the last to close checkpoints).
        {
            use sqlx::Connection as _;
            let mut conn = sqlx::SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&path)).await.expect("connect");
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut conn).await.expect("checkpoint");
            conn.close().await.expect("close");
        }
        let before = std::fs::read(&path).expect("read");
        let ro = SqliteStore::open_read_only(&path).await.expect("open read-only");
        assert_eq!(ro.get_setting("k").await.expect("get").as_deref(), Some("v"));
        let rows = ro.export(Table::Settings, None, 10).await.expect("export");
        assert_eq!(rows, vec![ExportRow::Setting { key: "k".into(), value: "v".into() }]);
        let e = ro.init_setting("k2", "v").await.expect_err("a write");
        assert!(e.to_string().contains("readonly") || e.to_string().contains("read-only") || e.to_string().contains("read only"), "{e}");
        assert!(ro.import(&rows).await.is_err(), "an import is a write");
        ro.close().await;
        assert!(std::fs::read(&path).expect("read") == before, "the database file is unchanged");

        // An older schema (only the first migration) is not upgraded but refused.
        let old = dir.path().join("old.db");
        let migrations = dir.path().join("v1");
        std::fs::create_dir(&migrations).expect("mkdir");
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite/0001_initial.sql"), migrations.join("0001_initial.sql")).expect("copy");
        {
            let options = SqliteConnectOptions::new().filename(&old).create_if_missing(true);
            let pool = SqlitePool::connect_with(options).await.expect("connect");
            sqlx::migrate::Migrator::new(migrations.as_path()).await.expect("v1 migrator").run(&pool).await.expect("v1");
            pool.close().await;
        }
        let e = SqliteStore::open_read_only(&old).await.expect_err("old schema");
        assert!(e.to_string().contains("older Berth"), "{e}");
        // Not a Berth database at all.
        let other = dir.path().join("other.db");
        {
            let options = SqliteConnectOptions::new().filename(&other).create_if_missing(true);
            let pool = SqlitePool::connect_with(options).await.expect("connect");
            sqlx::query("CREATE TABLE t (x)").execute(&pool).await.expect("create");
            pool.close().await;
        }
        let e = SqliteStore::open_read_only(&other).await.expect_err("not berth");
        assert!(e.to_string().contains("not a Berth metadata database"), "{e}");
    }

    /// The suite's races with their writers spread over two stores on one file (two processes).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suite_races_across_stores() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta.db");
        let one = SqliteStore::open(&path).await.expect("open");
        let two = SqliteStore::open(&path).await.expect("open again");
        testsuite::run_races(&one, &two).await;
    }

    #[tokio::test]
    async fn connection_settings() {
        let (_dir, store) = temp_store().await;
        async fn text(pool: &SqlitePool, name: &str) -> String {
            let sql = format!("PRAGMA {name}");
            sqlx::query_scalar(sql.as_str()).fetch_one(pool).await.expect("pragma")
        }
        async fn int(pool: &SqlitePool, name: &str) -> i64 {
            let sql = format!("PRAGMA {name}");
            sqlx::query_scalar(sql.as_str()).fetch_one(pool).await.expect("pragma")
        }
        assert_eq!(text(&store.writer, "journal_mode").await, "wal");
        assert_eq!(text(&store.reader, "journal_mode").await, "wal");
        assert_eq!(int(&store.writer, "synchronous").await, 2, "FULL");
        assert_eq!(int(&store.writer, "foreign_keys").await, 1);
        assert_eq!(int(&store.reader, "foreign_keys").await, 1);
        assert_eq!(int(&store.writer, "busy_timeout").await, 10_000);
        assert_eq!(int(&store.reader, "busy_timeout").await, 10_000);
        assert_eq!(int(&store.reader, "query_only").await, 1);
        assert_eq!(int(&store.writer, "query_only").await, 0);
        let write = sqlx::query("INSERT INTO settings (key, value) VALUES ('x', 'y')").execute(&store.reader).await;
        assert!(write.is_err(), "readers must not write");
    }

    #[tokio::test]
    async fn reopen_sees_committed_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested.db");
        let repo: RepoName = "reopen/app".parse().expect("repo");
        let digest = Digest::compute(Algorithm::Sha256, b"config");
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{digest}","size":6}},"layers":[]}}"#
        );
        let parsed = manifest::parse(bytes.as_bytes(), None).expect("parse");
        let mdigest = Digest::compute(Algorithm::Sha256, bytes.as_bytes());
        let tag: Tag = "v1".parse().expect("tag");
        {
            let store = SqliteStore::open(&path).await.expect("open");
            store.commit_blob(&repo, &digest, 6, "k1", 10).await.expect("commit");
            let m = NewManifest { digest: &mdigest, bytes: bytes.as_bytes(), parsed: &parsed, tags: std::slice::from_ref(&tag) };
            assert_eq!(store.put_manifest(&repo, m, 10).await.expect("put"), PutManifestOutcome::Stored);
            assert_eq!(store.init_setting("k", "v").await.expect("init"), "v");
            // No close: dropping the pools must not lose committed rows.
        }
        let store = SqliteStore::open(&path).await.expect("reopen");
        let rec = store.get_manifest(&repo, &Reference::Tag(tag)).await.expect("get").expect("manifest survives");
        assert_eq!((rec.digest, rec.bytes), (mdigest, bytes.into_bytes()));
        assert_eq!(store.repo_blob(&repo, &digest).await.expect("blob").map(|b| b.storage_key).as_deref(), Some("k1"));
        assert_eq!(store.get_setting("k").await.expect("setting").as_deref(), Some("v"));
        // Migrations are not re-applied destructively.
        store.close().await;
        let store = SqliteStore::open(&path).await.expect("third open");
        assert_eq!(store.list_repositories(Page { last: None, n: None }).await.expect("list"), vec!["reopen/app"]);
    }

    #[tokio::test]
    async fn corrupt_digest_is_reported() {
        let (_dir, store) = temp_store().await;
        let repo: RepoName = "corrupt/app".parse().expect("repo");
        let d = Digest::compute(Algorithm::Sha256, b"x");
        store.commit_blob(&repo, &d, 1, "k", 1).await.expect("commit");
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"a/b","digest":"{d}","size":1}},"layers":[]}}"#
        );
        let parsed = manifest::parse(bytes.as_bytes(), None).expect("parse");
        let md = Digest::compute(Algorithm::Sha256, bytes.as_bytes());
        let tag: Tag = "t".parse().expect("tag");
        let m = NewManifest { digest: &md, bytes: bytes.as_bytes(), parsed: &parsed, tags: std::slice::from_ref(&tag) };
        store.put_manifest(&repo, m, 1).await.expect("put");
        // Damage the stored digest behind the store's back (foreign keys off for this connection).
        sqlx::query("PRAGMA foreign_keys = OFF").execute(&store.writer).await.expect("pragma");
        sqlx::query("UPDATE tags SET manifest_digest = 'bogus'").execute(&store.writer).await.expect("update");
        sqlx::query("UPDATE manifests SET digest = 'bogus'").execute(&store.writer).await.expect("update");
        sqlx::query("PRAGMA foreign_keys = ON").execute(&store.writer).await.expect("pragma");
        let got = store.get_manifest(&repo, &Reference::Tag(tag)).await;
        assert!(matches!(got, Err(MetaError::Corrupt(_))), "{got:?}");
    }

    /// A put whose last tag fails to write (a trigger stands in for a store failure) leaves the
    /// manifest and every earlier tag unwritten, and the tags it would have moved where they were.
    #[tokio::test]
    async fn failed_tag_write_rolls_back_manifest_and_tags() {
        let (_dir, store) = temp_store().await;
        let repo: RepoName = "atomic/app".parse().expect("repo");
        let config = Digest::compute(Algorithm::Sha256, b"atomic config");
        store.commit_blob(&repo, &config, 13, "k", 1).await.expect("commit");
        let manifest_of = |extra: &str| {
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"a/b","digest":"{config}","size":13}},"layers":[]{extra}}}"#
            )
        };
        let (old, new) = (manifest_of(""), manifest_of(r#","annotations":{"n":"2"}"#));
        let (old_parsed, new_parsed) =
            (manifest::parse(old.as_bytes(), None).expect("parse"), manifest::parse(new.as_bytes(), None).expect("parse"));
        let (old_digest, new_digest) =
            (Digest::compute(Algorithm::Sha256, old.as_bytes()), Digest::compute(Algorithm::Sha256, new.as_bytes()));
        let tags = |names: &[&str]| names.iter().map(|n| n.parse::<Tag>().expect("tag")).collect::<Vec<_>>();
        let before = tags(&["a"]);
        let m = NewManifest { digest: &old_digest, bytes: old.as_bytes(), parsed: &old_parsed, tags: &before };
        assert_eq!(store.put_manifest(&repo, m, 2).await.expect("put"), PutManifestOutcome::Stored);

        sqlx::query(
            "CREATE TRIGGER refuse_boom BEFORE INSERT ON tags WHEN NEW.name = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        )
        .execute(&store.writer)
        .await
        .expect("trigger");
        let failing = tags(&["a", "b", "boom"]);
        let m = NewManifest { digest: &new_digest, bytes: new.as_bytes(), parsed: &new_parsed, tags: &failing };
        let got = store.put_manifest(&repo, m, 3).await;
        assert!(got.is_err(), "the injected failure must surface: {got:?}");

        assert_eq!(store.get_manifest(&repo, &Reference::Digest(new_digest)).await.expect("get"), None, "manifest rolled back");
        let a = store.get_manifest(&repo, &Reference::Tag("a".parse().expect("tag"))).await.expect("get").expect("a");
        assert_eq!(a.digest, old_digest, "a must not have moved");
        assert_eq!(store.list_tags(&repo, Page { last: None, n: None }).await.expect("tags"), Some(vec!["a".to_owned()]));
    }

    /// Many concurrent pushes on one store, and on two stores sharing one file (as two processes
    /// would): no errors, and every commit of one digest agrees on a single key.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta.db");
        // Both open (and migrate) the fresh file at the same time.
        let (one, two) = tokio::join!(SqliteStore::open(&path), SqliteStore::open(&path));
        let (one, two) = (Arc::new(one.expect("open")), Arc::new(two.expect("open again")));
        let shared = Digest::compute(Algorithm::Sha256, b"shared layer");
        let mut tasks = Vec::new();
        for t in 0..40u32 {
            let store = if t % 2 == 0 { one.clone() } else { two.clone() };
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                let repo: RepoName = format!("conc/r{}", t % 5).parse().expect("repo");
                let mut keys = Vec::new();
                let c = store.commit_blob(&repo, &shared, 12, &format!("shared-{t}"), 1000).await.expect("commit shared");
                keys.push(match c {
                    BlobCommit::Stored => format!("shared-{t}"),
                    BlobCommit::AlreadyPresent { existing_key } => existing_key,
                });
                for i in 0..5u32 {
                    let config = Digest::compute(Algorithm::Sha256, format!("config {t} {i}").as_bytes());
                    let c = store.commit_blob(&repo, &config, 2, &format!("c-{t}-{i}"), 1000).await.expect("commit");
                    assert_eq!(c, BlobCommit::Stored);
                    let bytes = format!(
                        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"a/b","digest":"{config}","size":2}},"layers":[{{"mediaType":"a/c","digest":"{shared}","size":12}}]}}"#
                    );
                    let parsed = manifest::parse(bytes.as_bytes(), None).expect("parse");
                    let md = Digest::compute(Algorithm::Sha256, bytes.as_bytes());
                    let tag: Tag = format!("t{i}").parse().expect("tag");
                    let m = NewManifest { digest: &md, bytes: bytes.as_bytes(), parsed: &parsed, tags: std::slice::from_ref(&tag) };
                    assert_eq!(store.put_manifest(&repo, m, 1000).await.expect("put"), PutManifestOutcome::Stored);
                    assert!(store.get_manifest(&repo, &Reference::Digest(md)).await.expect("get").is_some());
                }
                if t % 8 == 0 {
                    store.collect_garbage(500, 500).await.expect("gc");
                }
                keys
            }));
        }
        let mut keys = Vec::new();
        for t in tasks {
            keys.extend(t.await.expect("task"));
        }
        keys.dedup();
        assert_eq!(keys.len(), 1, "all commits of one digest agree on its key: {keys:?}");
        for r in 0..5 {
            let repo: RepoName = format!("conc/r{r}").parse().expect("repo");
            let tags = one.list_tags(&repo, Page { last: None, n: None }).await.expect("tags").expect("repo");
            assert_eq!(tags, ["t0", "t1", "t2", "t3", "t4"]);
        }
        assert_eq!(two.list_repositories(Page { last: None, n: None }).await.expect("repos").len(), 5);
    }

    /// The schema itself enforces the robot rules and references, whatever the code in front of
    /// it checks: raw statements that break them fail.
    #[tokio::test]
    async fn schema_enforces_federation_rules() {
        let (_dir, store) = temp_store().await;
        let w = &store.writer;
        sqlx::query("INSERT INTO projects (name, public, created_at) VALUES ('p', 0, 1)").execute(w).await.expect("project");
        sqlx::query("INSERT INTO identity_providers (name, config, created_at, updated_at) VALUES ('i', '{}', 1, 1)")
            .execute(w)
            .await
            .expect("provider");
        let insert = |name: &'static str, project: Option<&'static str>, secret: Option<&'static str>, idp: Option<&'static str>| {
            sqlx::query(
                "INSERT INTO robots (name, project, secret_hash, identity_provider, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, 1, 1)",
            )
            .bind(name)
            .bind(project)
            .bind(secret)
            .bind(idp)
            .execute(w)
        };
        insert("robot$p+a", Some("p"), None, Some("i")).await.expect("federated project robot");
        insert("robot$b", None, Some("h"), None).await.expect("static-secret system robot");
        insert("robot$c", None, None, None).await.expect("robot with neither");
        let both = insert("robot$d", None, Some("h"), Some("i")).await.expect_err("secret and provider");
        assert!(both.to_string().contains("robot_secret_or_provider"), "{both}");
        let project = insert("robot$x+e", Some("x"), None, None).await.expect_err("unknown project");
        assert!(project.to_string().contains("FOREIGN KEY"), "{project}");
        let idp = insert("robot$f", None, None, Some("nope")).await.expect_err("unknown provider");
        assert!(idp.to_string().contains("FOREIGN KEY"), "{idp}");
        for sql in ["DELETE FROM projects WHERE name = 'p'", "DELETE FROM identity_providers WHERE name = 'i'"] {
            let e = sqlx::query(sql).execute(w).await.expect_err(sql);
            assert!(e.to_string().contains("FOREIGN KEY"), "{sql}: {e}");
        }
        let e = sqlx::query("UPDATE robots SET secret_hash = 'h' WHERE name = 'robot$p+a'").execute(w).await.expect_err("update");
        assert!(e.to_string().contains("robot_secret_or_provider"), "{e}");
        // One generation row, forever.
        let e = sqlx::query("INSERT INTO federation_generation (id, generation) VALUES (2, 1)").execute(w).await;
        assert!(e.is_err(), "a second generation row");
        assert_eq!(store.federation_generation().await.expect("generation"), 1, "the raw writes above bypass the store");
    }

    /// The schema's own rules for people: an identity is whole or absent and links one user; a
    /// token's kind is known, its user and parent exist, and it goes with either.
    #[tokio::test]
    async fn schema_enforces_people_rules() {
        let (_dir, store) = temp_store().await;
        let w = &store.writer;
        for sql in [
            "INSERT INTO users (name, password_hash, admin) VALUES ('u', '', 0)",
            "INSERT INTO users (name, password_hash, admin, idp_provider, idp_issuer, idp_subject) VALUES ('v', '', 0, 'p', 'i', 's')",
            "INSERT INTO user_tokens (id, user_name, kind, name, secret_hash, created_at) VALUES ('t', 'u', 'cli', 'n', 'h', 1)",
            "INSERT INTO user_tokens (id, user_name, kind, name, secret_hash, parent, created_at) VALUES ('c', 'u', 'helper', 'n', 'h', 't', 1)",
        ] {
            sqlx::query(sql).execute(w).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        for (sql, why) in [
            ("INSERT INTO users (name, password_hash, admin, idp_issuer, idp_subject) VALUES ('x', '', 0, 'i', 't')", "user_identity_whole"),
            ("UPDATE users SET idp_subject = NULL WHERE name = 'v'", "user_identity_whole"),
            ("INSERT INTO users (name, password_hash, admin, idp_provider, idp_issuer, idp_subject) VALUES ('x', '', 0, 'q', 'i', 's')", "UNIQUE"),
            ("INSERT INTO user_tokens (id, user_name, kind, name, secret_hash, created_at) VALUES ('x', 'u', 'bogus', 'n', 'h', 1)", "CHECK"),
            ("INSERT INTO user_tokens (id, user_name, kind, name, secret_hash, created_at) VALUES ('x', 'nobody', 'cli', 'n', 'h', 1)", "FOREIGN KEY"),
            ("INSERT INTO user_tokens (id, user_name, kind, name, secret_hash, parent, created_at) VALUES ('x', 'u', 'cli', 'n', 'h', 'none', 1)", "FOREIGN KEY"),
        ] {
            let e = sqlx::query(sql).execute(w).await.expect_err(sql);
            assert!(e.to_string().contains(why), "{sql}: {e}");
        }
        sqlx::query("DELETE FROM users WHERE name = 'u'").execute(w).await.expect("delete");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_tokens").fetch_one(w).await.expect("count");
        assert_eq!(n, 0, "a user's tokens go with it");
    }

    /// The people lookups walk their indexes: by identity, a user's tokens in order, the tokens
    /// due for a re-check in order, expired tokens and requests for pruning, a token's children.
    #[tokio::test]
    async fn people_queries_use_indexes() {
        let (_dir, store) = temp_store().await;
        async fn plan(store: &SqliteStore, sql: &str) -> String {
            let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}")).fetch_all(&store.reader).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            rows.iter().map(|r| r.try_get::<String, _>(3).expect("detail")).collect::<Vec<_>>().join("\n")
        }
        for (sql, index) in [
            (format!("SELECT {USER_COLUMNS} FROM users WHERE idp_issuer = 'i' AND idp_subject = 's'"), "users_by_identity"),
            (
                format!("SELECT {TOKEN_COLUMNS} FROM user_tokens WHERE user_name = 'u' AND kind IN (SELECT value FROM json_each('[\"cli\"]')) ORDER BY created_at, id"),
                "user_tokens_by_user",
            ),
            (SQL_TOKENS_TO_CHECK.replace("?1", "5").replace("?2", "3").replace("?3", "10"), "user_tokens_to_check"),
            ("SELECT id FROM user_tokens WHERE expires_at <= 5 ORDER BY expires_at LIMIT 10".to_owned(), "user_tokens_by_expiry"),
            ("SELECT id FROM user_tokens WHERE parent IN (SELECT j.value FROM json_each('[\"a\",\"b\"]') j)".to_owned(), "user_tokens_by_parent"),
            ("DELETE FROM user_tokens WHERE id IN (SELECT j.value FROM json_each('[\"a\",\"b\"]') j)".to_owned(), "sqlite_autoindex_user_tokens_1"),
            ("DELETE FROM auth_requests WHERE expires_at <= 5".to_owned(), "auth_requests_by_expiry"),
        ] {
            let p = plan(&store, &sql).await;
            assert!(p.contains(index) && !p.contains("TEMP B-TREE"), "{sql} should walk {index}:\n{p}");
        }
    }

    /// The plan of each kind of audit query: filtered queries walk an index in id order instead of
    /// scanning the log or sorting it.
    #[tokio::test]
    async fn audit_queries_use_indexes() {
        let (_dir, store) = temp_store().await;
        async fn plan(store: &SqliteStore, q: &AuditQuery) -> String {
            let mut b = QueryBuilder::new("EXPLAIN QUERY PLAN ");
            push_audit_select(&mut b, q);
            let rows = b.build().fetch_all(&store.reader).await.expect("explain");
            rows.iter().map(|r| r.try_get::<String, _>(3).expect("detail")).collect::<Vec<_>>().join("\n")
        }
        let robot = AuditQuery { robot: Some("robot$a".into()), ..AuditQuery::default() };
        let repository = AuditQuery { repository: Some("lib/app".into()), ..AuditQuery::default() };
        let provider = AuditQuery { provider: Some("gh".into()), before_id: Some(10), ..AuditQuery::default() };
        let paged = AuditQuery { before_id: Some(10), limit: 5, ..AuditQuery::default() };
        let every = AuditQuery {
            since_ms: Some(1),
            until_ms: Some(2),
            robot: Some("robot$a".into()),
            repository: Some("lib/app".into()),
            provider: Some("gh".into()),
            result: Some("ok".into()),
            action: Some("pull".into()),
            before_id: Some(10),
            limit: 10,
        };
        for (q, index) in [
            (&robot, Some("SEARCH n USING PRIMARY KEY")),
            (&repository, Some("audit_by_repository")),
            (&provider, Some("audit_by_provider")),
            (&paged, None),
            (&every, None),
        ] {
            let plan = plan(&store, q).await;
            assert!(!plan.contains("TEMP B-TREE"), "{q:?} sorts:\n{plan}");
            if let Some(index) = index {
                assert!(plan.contains(index) && !plan.contains("SCAN"), "{q:?} should use {index}:\n{plan}");
            }
        }
        let prune = sqlx::query("EXPLAIN QUERY PLAN SELECT id FROM audit_events WHERE time_ms < 5 ORDER BY time_ms, id LIMIT 9")
            .fetch_all(&store.reader)
            .await
            .expect("explain");
        let prune: Vec<String> = prune.iter().map(|r| r.try_get(3).expect("detail")).collect();
        assert!(prune.iter().any(|d| d.contains("audit_by_time")), "{prune:?}");
    }

    /// Two stores on one file (two replicas): each sees the other's federation changes through the
    /// generation, and they share failed-login counts and one audit log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_share_federation_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta.db");
        let one = Arc::new(SqliteStore::open(&path).await.expect("open"));
        let two = Arc::new(SqliteStore::open(&path).await.expect("open again"));
        let g = two.federation_generation().await.expect("generation");
        assert!(one.create_project(&ProjectRecord { name: "p".into(), public: true, created_at: 1 }).await.expect("create"));
        assert!(two.federation_generation().await.expect("generation") > g);
        assert_eq!(two.get_project("p").await.expect("get").map(|p| p.public), Some(true));

        let mut tasks = Vec::new();
        for t in 0..20u32 {
            let store = if t % 2 == 0 { one.clone() } else { two.clone() };
            tasks.push(tokio::spawn(async move {
                let robot = RobotRecord {
                    name: format!("robot$p+r{t}"),
                    project: Some("p".into()),
                    description: String::new(),
                    disabled: false,
                    expires_at: None,
                    secret_hash: None,
                    identity_provider: None,
                    rules: serde_json::json!([]),
                    permissions: serde_json::json!([]),
                    created_at: 1,
                    updated_at: 1,
                };
                store.put_robot(&robot).await.expect("put_robot");
                let n = store.record_login_failure("addr:192.0.2.1", 60).await.expect("record_login_failure");
                let event = AuditEvent {
                    id: 0,
                    time_ms: i64::from(t),
                    action: "token".into(),
                    result: "ok".into(),
                    principal: robot.name.clone(),
                    robots: vec![robot.name.clone()],
                    provider: None,
                    subject: None,
                    jti: None,
                    claims: None,
                    repository: None,
                    reference: None,
                    client: None,
                    message: None,
                };
                store.append_audit(&[event.clone(), AuditEvent { time_ms: event.time_ms + 100, ..event }]).await.expect("append");
                n
            }));
        }
        let mut counts = Vec::new();
        for t in tasks {
            counts.push(t.await.expect("task"));
        }
        counts.sort_unstable();
        assert_eq!(counts, (1..=20).collect::<Vec<u32>>(), "every failure counted once, by either replica");
        assert_eq!(one.login_failures("addr:192.0.2.1", 60).await.expect("login_failures"), 20);
        assert_eq!(one.list_robots(Some("p")).await.expect("list").len(), 20);
        assert_eq!(two.federation_generation().await.expect("generation"), g + 21, "one bump per write");
        let events = two.query_audit(&AuditQuery { limit: 1000, ..AuditQuery::default() }).await.expect("query");
        assert_eq!(events.len(), 40);
        let mut ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), 40, "ids are unique and ordered");
        let q = AuditQuery { robot: Some("robot$p+r7".into()), ..AuditQuery::default() };
        assert_eq!(one.query_audit(&q).await.expect("query").iter().map(|e| e.time_ms).collect::<Vec<_>>(), [107, 7]);
    }

    /// A database made by an earlier Berth (only the first migration) is upgraded in place.
    #[tokio::test]
    async fn upgrades_a_version_1_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let migrations = dir.path().join("v1");
        std::fs::create_dir(&migrations).expect("mkdir");
        let first = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite/0001_initial.sql");
        std::fs::copy(first, migrations.join("0001_initial.sql")).expect("copy");
        let path = dir.path().join("meta.db");
        {
            let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
            let pool = SqlitePool::connect_with(options).await.expect("connect");
            sqlx::migrate::Migrator::new(migrations.as_path()).await.expect("v1 migrator").run(&pool).await.expect("v1");
            sqlx::query("INSERT INTO users (name, password_hash, admin) VALUES ('admin', 'h', 1)")
                .execute(&pool)
                .await
                .expect("user");
            pool.close().await;
        }
        let store = SqliteStore::open(&path).await.expect("upgrade");
        let admin = store.get_user("admin").await.expect("user").expect("the v1 user is kept");
        assert!(admin.admin && !admin.disabled, "an upgraded user is enabled: {admin:?}");
        assert_eq!(
            (admin.identity, admin.email, admin.groups.len(), admin.created_at, admin.last_login_at),
            (None, None, 0, 0, None),
            "an upgraded user has no identity, no groups and a creation time of 0"
        );
        assert_eq!(store.federation_generation().await.expect("generation"), 1);
        assert!(store.create_project(&ProjectRecord { name: "p".into(), public: false, created_at: 1 }).await.expect("create"));
        assert_eq!(store.federation_generation().await.expect("generation"), 2);
        store.close().await;
        // And opening again applies nothing twice.
        let store = SqliteStore::open(&path).await.expect("reopen");
        assert_eq!(store.federation_generation().await.expect("generation"), 2);
    }

    /// Audit log throughput: batches of 1,000 appended, then filtered queries and a prune over
    /// 200,000 events (run with `--ignored --nocapture`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn audit_throughput() {
        let (_dir, store) = temp_store().await;
        let batches = 200;
        let start = std::time::Instant::now();
        for b in 0..batches {
            let events: Vec<AuditEvent> = (0..1000)
                .map(|i| {
                    let n = b * 1000 + i;
                    let robot = format!("robot$p+r{}", n % 50);
                    AuditEvent {
                        id: 0,
                        time_ms: i64::from(n),
                        action: "pull".into(),
                        result: if n % 100 == 0 { "denied".into() } else { "ok".into() },
                        principal: robot.clone(),
                        robots: vec![robot],
                        provider: Some(format!("idp{}", n % 3)),
                        subject: Some("repo:org/app:ref:refs/heads/main".into()),
                        jti: Some(format!("jti-{n}")),
                        claims: Some(serde_json::json!({"repository": "org/app", "run_id": n})),
                        repository: Some(format!("p/app{}", n % 200)),
                        reference: Some("latest".into()),
                        client: Some("192.0.2.1".into()),
                        message: None,
                    }
                })
                .collect();
            store.append_audit(&events).await.expect("append");
        }
        let secs = start.elapsed().as_secs_f64();
        println!("append: {} batches of 1000 in {secs:.2}s ({:.1} ms/batch)", batches, secs * 1000.0 / f64::from(batches));
        for (what, q) in [
            ("newest 100", AuditQuery::default()),
            ("robot", AuditQuery { robot: Some("robot$p+r7".into()), ..AuditQuery::default() }),
            ("repository", AuditQuery { repository: Some("p/app7".into()), ..AuditQuery::default() }),
            ("provider+denied", AuditQuery { provider: Some("idp1".into()), result: Some("denied".into()), ..AuditQuery::default() }),
            ("old window", AuditQuery { since_ms: Some(1000), until_ms: Some(2000), limit: 1000, ..AuditQuery::default() }),
            ("robot, deep page", AuditQuery { robot: Some("robot$p+r7".into()), before_id: Some(1000), ..AuditQuery::default() }),
        ] {
            let start = std::time::Instant::now();
            let n = store.query_audit(&q).await.expect("query").len();
            println!("query {what}: {n} events in {:.2} ms", start.elapsed().as_secs_f64() * 1000.0);
        }
        let start = std::time::Instant::now();
        let n = store.prune_audit(100_000).await.expect("prune");
        println!("prune: {n} events in {:.2}s", start.elapsed().as_secs_f64());
    }

    /// Hot-path throughput (run with `--ignored --nocapture`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn lookup_throughput() {
        let (_dir, store) = temp_store().await;
        let store = Arc::new(store);
        let repo: RepoName = "bench/app".parse().expect("repo");
        let config = Digest::compute(Algorithm::Sha256, b"bench config");
        store.commit_blob(&repo, &config, 2, "bench", 1).await.expect("commit");
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"a/b","digest":"{config}","size":2}},"layers":[]}}"#
        );
        let parsed = manifest::parse(bytes.as_bytes(), None).expect("parse");
        let md = Digest::compute(Algorithm::Sha256, bytes.as_bytes());
        let tag: Tag = "latest".parse().expect("tag");
        let m = NewManifest { digest: &md, bytes: bytes.as_bytes(), parsed: &parsed, tags: std::slice::from_ref(&tag) };
        store.put_manifest(&repo, m, 1).await.expect("put");
        let per_task = 5000;
        let tasks = 16;
        let start = std::time::Instant::now();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let (store, repo, config, md, tag) = (store.clone(), repo.clone(), config.clone(), md.clone(), tag.clone());
            handles.push(tokio::spawn(async move {
                for i in 0..per_task {
                    match (i + t) % 3 {
                        0 => assert!(store.get_manifest(&repo, &Reference::Tag(tag.clone())).await.expect("get").is_some()),
                        1 => assert!(store.get_manifest(&repo, &Reference::Digest(md.clone())).await.expect("get").is_some()),
                        _ => assert!(store.repo_blob(&repo, &config).await.expect("blob").is_some()),
                    }
                }
            }));
        }
        for h in handles {
            h.await.expect("task");
        }
        let n = per_task * tasks;
        let secs = start.elapsed().as_secs_f64();
        println!("{n} lookups in {secs:.2}s: {:.0}/s", n as f64 / secs);
    }
}
