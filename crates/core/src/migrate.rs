//! Moving a whole installation to other stores (`berth migrate`): SQLite + a folder to
//! PostgreSQL + S3, or back, or any other pair.
//!
//! What moves: every table of [`berth_meta::Table`] (settings, among them the registry's
//! signing key, so tokens and passwords keep working; users with their OpenID identities and
//! groups, and the tokens issued to them; projects, members, identity providers and robots with
//! their secret hashes; blob records and links; manifests with their references; tags; the audit
//! log with its ids) and every blob the metadata names. What does not: upload sessions (a client
//! restarts an upload that was running), failed-login counters and logins in progress.
//!
//! How, in order:
//! 1. Table by table in import order (parents first), page by page in key order: the source
//!    exports a page, the destination prunes the rows of the page's key range that the page does
//!    not hold (rows the source deleted since an earlier run), then imports the page (upserts,
//!    times and ids kept). So after a whole pass the destination equals the source as read, and
//!    a rerun writes only what changed. A row that refers to a later row of its own table (a
//!    token whose parent token sorts after it) is deferred by the destination and imported
//!    again once the walk of its table is over.
//! 2. For blobs the same, plus the bytes: a blob the destination has no record of is streamed
//!    from the source's object into a destination upload through a
//!    [`ResumableHasher`](berth_oci::ResumableHasher) (never whole in memory), its digest is
//!    checked before `upload_complete`, and its record, pointing at the fresh key the destination
//!    gave it, is imported at once. That record is the durable "already copied" mark: a rerun
//!    after an interruption skips every blob with a record and copies the rest. (An interrupted
//!    copy leaves at most an upload or an object without a record at the destination, which
//!    `berth gc` there removes.)
//! 3. Verification ([`verify`]): the row counts of every table, source against destination;
//!    every source blob has a record at the destination; and every destination blob is read back
//!    and hashed against its digest.
//!
//! The source is opened by [`open_source`]: read-only connections, no schema migration (an
//! older schema is refused with what to do), no probe writes to S3. So it is never modified and
//! its server may keep running; a rerun catches up what changed meanwhile (then stop writes to
//! the source and run once more before switching).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_blob::{BlobStore, FsBlobStore, S3Store};
use berth_meta::{BlobExport, ExportRow, MetadataStore, PostgresStore, RowCounts, RowKey, SqliteStore, Table};
use berth_oci::ResumableHasher;
use futures_util::{stream, StreamExt, TryStreamExt};

use crate::backends::{BlobEngine, MetadataEngine};

/// An installation's two stores.
#[derive(Clone)]
pub struct Stores {
    pub meta: Arc<dyn MetadataStore>,
    pub blobs: Arc<dyn BlobStore>,
}

/// Why a migration stopped: one message saying which store, what failed, and what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct MigrateError(pub String);

type Result<T, E = MigrateError> = std::result::Result<T, E>;

fn err(place: &str, e: impl std::fmt::Display) -> MigrateError {
    MigrateError(format!("{place}: {e}"))
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Copy nothing; only verify (what `--verify-only` does after a switch, or any time).
    pub verify_only: bool,
    /// Blobs copied, and verified, at once.
    pub concurrency: usize,
    /// Rows per exported page (one import transaction each).
    pub page_rows: u32,
    /// Read back and hash the blobs the destination already has before skipping them, and copy
    /// again those that are damaged or missing there (a plain rerun trusts their records).
    pub recheck_blobs: bool,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions { verify_only: false, concurrency: 4, page_rows: 500, recheck_blobs: false }
    }
}

/// What a phase counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Rows,
    Bytes,
}

/// Where a migration reports its progress (the CLI draws a bar on a terminal and prints plain
/// lines otherwise). Not `berth gc`'s [`crate::gc::Progress`]: a copy has amounts to show.
pub trait Progress: Send + Sync {
    /// A new phase starts, with its amount of work when known.
    fn phase(&self, what: &str, total: Option<u64>, unit: Unit);
    /// `n` more units of the current phase are done.
    fn advance(&self, n: u64);
    /// Something the person should read (rows skipped, ...).
    fn note(&self, line: &str);
    /// The run ended (successfully or not).
    fn done(&self);
}

/// Reports nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn phase(&self, _: &str, _: Option<u64>, _: Unit) {}
    fn advance(&self, _: u64) {}
    fn note(&self, _: &str) {}
    fn done(&self) {}
}

/// What happened to one table.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct TableReport {
    pub table: &'static str,
    /// Rows read from the source and written (or found already equal) at the destination.
    pub rows: u64,
    /// Rows the destination had that the source no longer has, removed there.
    pub removed: u64,
    /// Rows not written because their parent was missing (the source changed meanwhile).
    pub skipped: u64,
}

/// One count of the verification.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct CountCheck {
    pub what: &'static str,
    pub source: u64,
    pub destination: u64,
}

/// What the verification found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Verification {
    /// Destination blobs read back and hashed.
    pub blobs_verified: u64,
    pub bytes_verified: u64,
    /// Every count, source and destination.
    pub counts: Vec<CountCheck>,
    /// Every difference found, one line each (at most [`MAX_PROBLEMS`], then a summary line).
    pub problems: Vec<String>,
}

impl Verification {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MigrateReport {
    /// Blobs streamed to the destination in this run.
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    /// Blobs the destination had already (an earlier run copied them).
    pub blobs_skipped: u64,
    /// Blobs the destination had that the source no longer has: record and object removed.
    pub blobs_removed: u64,
    /// Blobs the destination had damaged or missing, copied again (with `recheck_blobs`).
    pub blobs_repaired: u64,
    /// Per table, in import order (blobs included, counted in rows).
    pub tables: Vec<TableReport>,
    /// Rows skipped because a row they need was missing at the destination, one line each (the
    /// first [`MAX_PROBLEMS`]); a rerun copies them.
    pub skipped_rows: Vec<String>,
    pub verification: Verification,
}

/// The most lines a report lists of one kind.
pub const MAX_PROBLEMS: usize = 50;

/// Opens the source installation without ever writing to it: SQLite through read-only
/// connections and PostgreSQL in read-only sessions, neither migrated (a schema older than this
/// Berth's is refused with what to do); a folder only if it is Berth's (`blobs/` and
/// `uploads/` exist: nothing is created); S3 with one `HeadBucket` (no probe object, so
/// read-only credentials suffice).
pub async fn open_source(meta: &MetadataEngine, blobs: &BlobEngine) -> Result<Stores> {
    let place = format!("source metadata ({})", meta.describe());
    let meta: Arc<dyn MetadataStore> = match meta {
        MetadataEngine::Sqlite { path } => Arc::new(SqliteStore::open_read_only(path).await.map_err(|e| err(&place, e))?),
        MetadataEngine::Postgres { options } => Arc::new(PostgresStore::connect_read_only(options).await.map_err(|e| err(&place, e))?),
    };
    let place = format!("source blob storage ({})", blobs.describe());
    let blobs: Arc<dyn BlobStore> = match blobs {
        BlobEngine::Filesystem { root } => {
            for sub in ["blobs", "uploads"] {
                if !root.join(sub).is_dir() {
                    return Err(err(&place, format!("{} is not Berth's blob folder (it has no {sub}/ folder)", root.display())));
                }
            }
            Arc::new(FsBlobStore::open(root.clone()).map_err(|e| err(&place, e))?)
        }
        BlobEngine::S3 { options } => {
            let store = S3Store::new(options.clone()).await.map_err(|e| err(&place, e))?;
            store.ping().await.map_err(|e| err(&place, e))?;
            Arc::new(store)
        }
    };
    Ok(Stores { meta, blobs })
}

/// Opens (creating and migrating as `berth serve` would) the destination's stores.
pub async fn open_destination(meta: &MetadataEngine, blobs: &BlobEngine) -> Result<Stores> {
    let m = meta.open().await.map_err(|e| err("destination metadata", e))?;
    let b = blobs.open().await.map_err(|e| err("destination blob storage", e))?;
    Ok(Stores { meta: m, blobs: b })
}

/// A folder or file as it is named after resolving links (as given when it does not exist).
fn resolved(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())
}

/// Why a destination cannot be the source's own stores (None: it is elsewhere). Both parts
/// must move: copying onto the same metadata store would keep its blob keys, and onto the same
/// blob storage would store every blob twice.
pub fn same_place(src: (&MetadataEngine, &BlobEngine), dst: (&MetadataEngine, &BlobEngine)) -> Option<String> {
    let meta_same = match (src.0, dst.0) {
        (MetadataEngine::Sqlite { path: a }, MetadataEngine::Sqlite { path: b }) => resolved(a) == resolved(b),
        (MetadataEngine::Postgres { options: a }, MetadataEngine::Postgres { options: b }) => a.redacted() == b.redacted(),
        _ => false,
    };
    let blobs_same = match (src.1, dst.1) {
        (BlobEngine::Filesystem { root: a }, BlobEngine::Filesystem { root: b }) => resolved(a) == resolved(b),
        (BlobEngine::S3 { options: a }, BlobEngine::S3 { options: b }) => {
            a.bucket == b.bucket && a.prefix.trim_matches('/') == b.prefix.trim_matches('/') && a.endpoint == b.endpoint
        }
        _ => false,
    };
    let what = match (meta_same, blobs_same) {
        (false, false) => return None,
        (true, true) => format!("metadata {} and blob storage {}", src.0.describe(), src.1.describe()),
        (true, false) => format!("metadata {}", src.0.describe()),
        (false, true) => format!("blob storage {}", src.1.describe()),
    };
    Some(format!(
        "source and destination are the same ({what}): berth migrate copies a whole installation to other stores; \
         give --to-metadata-url and --to-storage-url places other than the source's"
    ))
}

/// What the destination holds before a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Nothing at all.
    Empty,
    /// An earlier run's copy of this source (it has the source's signing key): a rerun resumes.
    CopyOfSource,
    /// Something else: an installation of its own, which a run would replace by the source's.
    Other(RowCounts),
}

/// Looks at the destination before a run (see [`Destination`]).
pub async fn destination_state(src: &Stores, dst: &Stores) -> Result<Destination> {
    let counts = dst.meta.row_counts().await.map_err(|e| err("destination metadata", e))?;
    if counts.is_empty() {
        return Ok(Destination::Empty);
    }
    let key = "registry_signing_key";
    let theirs = dst.meta.get_setting(key).await.map_err(|e| err("destination metadata", e))?;
    let ours = src.meta.get_setting(key).await.map_err(|e| err("source metadata", e))?;
    Ok(match (ours, theirs) {
        (Some(a), Some(b)) if a == b => Destination::CopyOfSource,
        _ => Destination::Other(counts),
    })
}

fn count_of(counts: &RowCounts, table: Table) -> u64 {
    match table {
        Table::Settings => counts.settings,
        Table::Users => counts.users,
        Table::Tokens => counts.tokens,
        Table::Projects => counts.projects,
        Table::Members => counts.members,
        Table::IdentityProviders => counts.identity_providers,
        Table::Robots => counts.robots,
        Table::Blobs => counts.blobs,
        Table::BlobLinks => counts.blob_links,
        Table::Manifests => counts.manifests,
        Table::Tags => counts.tags,
        Table::AuditEvents => counts.audit_events,
    }
}

/// Copies the source installation into the destination (see the module docs), then verifies.
/// `Ok` with a failed [`Verification`] when the copy ran but the stores differ; `Err` when a
/// store failed (a rerun resumes where this one stopped).
pub async fn migrate(src: &Stores, dst: &Stores, options: &MigrateOptions, progress: &dyn Progress) -> Result<MigrateReport> {
    let mut report = MigrateReport::default();
    let outcome = async {
        if !options.verify_only {
            let counts = src.meta.row_counts().await.map_err(|e| err("source metadata", e))?;
            for table in Table::ALL {
                let t = if table == Table::Blobs {
                    copy_blobs(src, dst, options, &counts, &mut report, progress).await?
                } else {
                    copy_table(src, dst, table, options, count_of(&counts, table), &mut report, progress).await?
                };
                report.tables.push(t);
            }
        }
        report.verification = verify(src, dst, options, progress).await?;
        Ok(())
    }
    .await;
    progress.done();
    outcome.map(|()| report)
}

fn note_skipped(report: &mut MigrateReport, skipped: Vec<String>, progress: &dyn Progress) {
    for line in skipped {
        progress.note(&format!("skipped (the source changed during the copy; run again): {line}"));
        if report.skipped_rows.len() < MAX_PROBLEMS {
            report.skipped_rows.push(line);
        }
    }
}

/// The range a page of `rows` (a page of at most `limit`) covers after `after`: up to its last
/// key, or to the end of the table when it is not full.
fn page_end(keys: &[RowKey], limit: u32) -> Option<RowKey> {
    (keys.len() >= limit as usize).then(|| keys.last().cloned()).flatten()
}

async fn copy_table(
    src: &Stores,
    dst: &Stores,
    table: Table,
    options: &MigrateOptions,
    total: u64,
    report: &mut MigrateReport,
    progress: &dyn Progress,
) -> Result<TableReport> {
    progress.phase(&format!("copying {}", table.name().replace('_', " ")), Some(total), Unit::Rows);
    let mut t = TableReport { table: table.name(), ..TableReport::default() };
    let limit = options.page_rows.max(1);
    let dst_err = |e| err("destination metadata", format!("writing {}: {e}", table.name()));
    let mut after: Option<RowKey> = None;
    // Rows the destination deferred: they refer to a row of their table that a later page brings
    // (a token whose parent token sorts after it).
    let mut deferred: Vec<ExportRow> = Vec::new();
    loop {
        let rows = src.meta.export(table, after.as_ref(), limit).await.map_err(|e| err("source metadata", format!("reading {}: {e}", table.name())))?;
        let keys: Vec<RowKey> = rows.iter().map(ExportRow::key).collect();
        let upto = page_end(&keys, limit);
        let pruned = dst.meta.prune(table, after.as_ref(), upto.as_ref(), &keys).await.map_err(dst_err)?;
        t.removed += pruned.removed;
        let outcome = dst.meta.import(&rows).await.map_err(dst_err)?;
        t.rows += outcome.imported;
        t.skipped += outcome.skipped.len() as u64;
        note_skipped(report, outcome.skipped, progress);
        progress.advance(rows.len() as u64);
        let waiting: HashSet<RowKey> = outcome.deferred.into_iter().collect();
        deferred.extend(rows.into_iter().filter(|r| waiting.contains(&r.key())));
        match upto {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    // Once the walk is over, the deferred rows again, while that writes some of them.
    while !deferred.is_empty() {
        let mut still = Vec::new();
        for chunk in deferred.chunks(limit as usize) {
            let outcome = dst.meta.import(chunk).await.map_err(dst_err)?;
            t.rows += outcome.imported;
            t.skipped += outcome.skipped.len() as u64;
            note_skipped(report, outcome.skipped, progress);
            let waiting: HashSet<RowKey> = outcome.deferred.into_iter().collect();
            still.extend(chunk.iter().filter(|r| waiting.contains(&r.key())).cloned());
        }
        if still.len() == deferred.len() {
            t.skipped += still.len() as u64;
            let lines = still.iter().map(|r| format!("{} {:?}: a row it refers to is not at the source any more", table.name(), r.key())).collect();
            note_skipped(report, lines, progress);
            break;
        }
        deferred = still;
    }
    Ok(t)
}

/// Runs `work`, reporting the bytes `counter` counts to `progress` every 200 ms meanwhile (and
/// what is left at the end).
async fn ticking<T>(work: impl Future<Output = T>, counter: &AtomicU64, reported: &mut u64, progress: &dyn Progress) -> T {
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let flush = |reported: &mut u64| {
        let now = counter.load(Ordering::Relaxed);
        if now > *reported {
            progress.advance(now - *reported);
            *reported = now;
        }
    };
    loop {
        tokio::select! {
            out = &mut work => {
                flush(reported);
                return out;
            }
            _ = tick.tick() => flush(reported),
        }
    }
}

async fn copy_blobs(
    src: &Stores,
    dst: &Stores,
    options: &MigrateOptions,
    counts: &RowCounts,
    report: &mut MigrateReport,
    progress: &dyn Progress,
) -> Result<TableReport> {
    progress.phase("copying blobs", Some(counts.blob_bytes), Unit::Bytes);
    let mut t = TableReport { table: Table::Blobs.name(), ..TableReport::default() };
    let limit = options.page_rows.max(1);
    let counter = Arc::new(AtomicU64::new(0));
    let mut reported = 0;
    let mut after: Option<RowKey> = None;
    loop {
        let rows = src.meta.export(Table::Blobs, after.as_ref(), limit).await.map_err(|e| err("source metadata", format!("reading blobs: {e}")))?;
        let keys: Vec<RowKey> = rows.iter().map(ExportRow::key).collect();
        let upto = page_end(&keys, limit);
        let dst_err = |e| err("destination metadata", format!("writing blobs: {e}"));
        // Records the source no longer has: gone at the destination too, with their objects.
        let pruned = dst.meta.prune(Table::Blobs, after.as_ref(), upto.as_ref(), &keys).await.map_err(dst_err)?;
        for key in &pruned.deleted_keys {
            dst.blobs.delete(key).await.map_err(|e| err("destination blob storage", format!("deleting {key}: {e}")))?;
        }
        t.removed += pruned.removed;
        report.blobs_removed += pruned.removed;

        let blobs: Vec<BlobExport> = rows.into_iter().filter_map(|r| if let ExportRow::Blob(b) = r { Some(b) } else { None }).collect();
        let digests: Vec<_> = blobs.iter().map(|b| b.digest.clone()).collect();
        let mut have: HashMap<String, String> = dst
            .meta
            .blob_records(&digests)
            .await
            .map_err(dst_err)?
            .into_iter()
            .map(|r| (r.digest.as_str().to_owned(), r.storage_key))
            .collect();
        if options.recheck_blobs {
            // A damaged or missing object at the destination: its record goes (with its links,
            // which the links phase of this run copies again) and the blob is copied again. The
            // range (previous key of the page, its key] holds only it: the prune above removed
            // every destination row of the page's range that the source lacks.
            let checks = blobs.iter().filter_map(|b| have.get(b.digest.as_str()).map(|key| (b, key.clone()))).map(|(b, key)| {
                let counter = &counter;
                async move {
                    let there = BlobExport { storage_key: key, ..b.clone() };
                    check_blob(&*dst.blobs, &there, counter).await.map(|problem| (b.digest.clone(), problem))
                }
            });
            let damaged: Vec<_> = ticking(stream::iter(checks).buffer_unordered(options.concurrency.max(1)).filter_map(|x| async move { x }).collect::<Vec<_>>(), &counter, &mut reported, progress).await;
            for (digest, problem) in damaged {
                progress.note(&format!("copying again: {problem}"));
                let i = blobs.iter().position(|b| b.digest == digest).unwrap_or(0);
                let prev = if i == 0 { after.clone() } else { Some(RowKey::Name(blobs[i - 1].digest.as_str().to_owned())) };
                let gone = dst.meta.prune(Table::Blobs, prev.as_ref(), Some(&RowKey::Name(digest.as_str().to_owned())), &[]).await.map_err(dst_err)?;
                for key in &gone.deleted_keys {
                    let _ = dst.blobs.delete(key).await;
                }
                have.remove(digest.as_str());
                report.blobs_repaired += 1;
            }
        }
        let (present, missing): (Vec<BlobExport>, Vec<BlobExport>) = blobs.into_iter().partition(|b| have.contains_key(b.digest.as_str()));
        // Already copied: only the record is refreshed (its last use), under the key it has.
        let refresh: Vec<ExportRow> = present
            .iter()
            .map(|b| ExportRow::Blob(BlobExport { storage_key: have[b.digest.as_str()].clone(), ..b.clone() }))
            .collect();
        let outcome = dst.meta.import(&refresh).await.map_err(dst_err)?;
        t.rows += outcome.imported;
        report.blobs_skipped += present.len() as u64;
        if !options.recheck_blobs {
            // (Rechecked blobs were counted as they were read back.)
            counter.fetch_add(present.iter().map(|b| b.size).sum(), Ordering::Relaxed);
        }

        let copies = stream::iter(missing.into_iter().map(|b| copy_blob(src, dst, b, &counter)))
            .buffer_unordered(options.concurrency.max(1))
            .try_fold((0u64, 0u64), |(n, bytes), size| async move { Ok((n + 1, bytes + size)) });
        let (n, bytes) = ticking(copies, &counter, &mut reported, progress).await?;
        t.rows += n;
        report.blobs_copied += n;
        report.bytes_copied += bytes;
        match upto {
            Some(k) => after = Some(k),
            None => return Ok(t),
        }
    }
}

/// Copies one blob: source object → destination upload (hashed on the way) → verified →
/// completed under a fresh key → its record imported. Returns its size.
async fn copy_blob(src: &Stores, dst: &Stores, blob: BlobExport, counter: &Arc<AtomicU64>) -> Result<u64> {
    let digest = &blob.digest;
    let src_err = |e| err("source blob storage", format!("blob {digest} (key {}): {e}", blob.storage_key));
    let reader = src.blobs.open(&blob.storage_key, None).await.map_err(src_err)?;
    if reader.size != blob.size {
        return Err(err(
            "source blob storage",
            format!("blob {digest} (key {}) has {} bytes but its record says {}; the source is damaged there", blob.storage_key, reader.size, blob.size),
        ));
    }
    let id = format!("migrate-{}", uuid::Uuid::new_v4().simple());
    let dst_err = |e| err("destination blob storage", format!("blob {digest}: {e}"));
    dst.blobs.upload_create(&id).await.map_err(dst_err)?;
    let written = {
        let counter = counter.clone();
        let body = reader.body.inspect(move |chunk| {
            if let Ok(c) = chunk {
                counter.fetch_add(c.len() as u64, Ordering::Relaxed);
            }
        });
        dst.blobs.upload_write(&id, 1, 0, Box::pin(body), ResumableHasher::new(digest.algorithm())).await
    };
    let check = async {
        let part = written.map_err(dst_err)?;
        if let Some(e) = part.body_error {
            return Err(err("source blob storage", format!("reading blob {digest} (key {}): {e}", blob.storage_key)));
        }
        let got = part.hasher.finish();
        if part.written != blob.size || &got != digest {
            return Err(err(
                "source blob storage",
                format!(
                    "blob {digest} (key {}) is damaged: its {} bytes hash to {got}; nothing was recorded for it. Push the image again at the source \
                     (or delete it there), then run again",
                    blob.storage_key, part.written
                ),
            ));
        }
        dst.blobs.upload_complete(&id, 1, blob.size, digest).await.map_err(dst_err)
    }
    .await;
    let committed = match check {
        Ok(c) => c,
        Err(e) => {
            let _ = dst.blobs.upload_abort(&id).await;
            return Err(e);
        }
    };
    let record = ExportRow::Blob(BlobExport { storage_key: committed.key.clone(), ..blob.clone() });
    let outcome = dst.meta.import(&[record]).await.map_err(|e| err("destination metadata", format!("recording blob {digest}: {e}")))?;
    // Another run copying the same blob at the same time recorded its own key first.
    for key in outcome.unused_keys {
        let _ = dst.blobs.delete(&key).await;
    }
    Ok(blob.size)
}

/// Reads one destination blob back and hashes it; a problem line when it is not what its
/// record says.
async fn check_blob(blobs: &dyn BlobStore, blob: &BlobExport, counter: &AtomicU64) -> Option<String> {
    let (digest, key) = (&blob.digest, &blob.storage_key);
    let reader = match blobs.open(key, None).await {
        Ok(r) => r,
        Err(e) => return Some(format!("blob {digest} (destination key {key}) cannot be read: {e}")),
    };
    if reader.size != blob.size {
        return Some(format!("blob {digest} (destination key {key}) has {} bytes, its record says {}", reader.size, blob.size));
    }
    let mut hasher = ResumableHasher::new(digest.algorithm());
    let mut body = reader.body;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                hasher.update(&c);
                counter.fetch_add(c.len() as u64, Ordering::Relaxed);
            }
            Err(e) => return Some(format!("blob {digest} (destination key {key}) failed midway: {e}")),
        }
    }
    let got = hasher.finish();
    (&got != digest).then(|| format!("blob {digest} (destination key {key}) is corrupt: its bytes hash to {got}"))
}

fn add_problem(problems: &mut Vec<String>, hidden: &mut u64, line: String) {
    if problems.len() < MAX_PROBLEMS {
        problems.push(line);
    } else {
        *hidden += 1;
    }
}

/// Compares the stores: the row counts of every table, that every source blob has a record at
/// the destination, and every destination blob read back and hashed against its digest.
pub async fn verify(src: &Stores, dst: &Stores, options: &MigrateOptions, progress: &dyn Progress) -> Result<Verification> {
    let mut v = Verification::default();
    let mut hidden = 0u64;
    progress.phase("comparing row counts", None, Unit::Rows);
    let theirs = src.meta.row_counts().await.map_err(|e| err("source metadata", e))?;
    let ours = dst.meta.row_counts().await.map_err(|e| err("destination metadata", e))?;
    for ((what, s), (_, d)) in theirs.entries().into_iter().zip(ours.entries()) {
        if s != d {
            add_problem(&mut v.problems, &mut hidden, format!("{what}: the source has {s}, the destination {d}"));
        }
        v.counts.push(CountCheck { what, source: s, destination: d });
    }

    progress.phase("checking that every blob is at the destination", Some(theirs.blobs), Unit::Rows);
    let limit = options.page_rows.max(1);
    let mut after: Option<RowKey> = None;
    loop {
        let rows = src.meta.export(Table::Blobs, after.as_ref(), limit).await.map_err(|e| err("source metadata", e))?;
        let keys: Vec<RowKey> = rows.iter().map(ExportRow::key).collect();
        let blobs: Vec<&BlobExport> = rows.iter().filter_map(|r| if let ExportRow::Blob(b) = r { Some(b) } else { None }).collect();
        let digests: Vec<_> = blobs.iter().map(|b| b.digest.clone()).collect();
        let have: HashMap<String, u64> =
            dst.meta.blob_records(&digests).await.map_err(|e| err("destination metadata", e))?.into_iter().map(|r| (r.digest.as_str().to_owned(), r.size)).collect();
        for b in &blobs {
            match have.get(b.digest.as_str()) {
                None => add_problem(&mut v.problems, &mut hidden, format!("blob {} is not at the destination", b.digest)),
                Some(&size) if size != b.size => add_problem(
                    &mut v.problems,
                    &mut hidden,
                    format!("blob {}: the source's record says {} bytes, the destination's {size}", b.digest, b.size),
                ),
                Some(_) => {}
            }
        }
        progress.advance(blobs.len() as u64);
        match page_end(&keys, limit) {
            Some(k) => after = Some(k),
            None => break,
        }
    }

    progress.phase("reading back and hashing every blob at the destination", Some(ours.blob_bytes), Unit::Bytes);
    let counter = AtomicU64::new(0);
    let mut reported = 0;
    let mut after: Option<RowKey> = None;
    loop {
        let rows = dst.meta.export(Table::Blobs, after.as_ref(), limit).await.map_err(|e| err("destination metadata", e))?;
        let keys: Vec<RowKey> = rows.iter().map(ExportRow::key).collect();
        let blobs: Vec<&BlobExport> = rows.iter().filter_map(|r| if let ExportRow::Blob(b) = r { Some(b) } else { None }).collect();
        let checks = stream::iter(blobs.iter().map(|b| check_blob(&*dst.blobs, b, &counter))).buffer_unordered(options.concurrency.max(1)).collect::<Vec<_>>();
        let found = ticking(checks, &counter, &mut reported, progress).await;
        v.blobs_verified += blobs.len() as u64;
        for line in found.into_iter().flatten() {
            add_problem(&mut v.problems, &mut hidden, line);
        }
        match page_end(&keys, limit) {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    v.bytes_verified = counter.load(Ordering::Relaxed);
    if hidden > 0 {
        v.problems.push(format!("... and {hidden} more"));
    }
    Ok(v)
}
