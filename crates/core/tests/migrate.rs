//! `berth_core::migrate` over real stores in temp folders (SQLite + filesystem on both sides):
//! a full copy that reads back identical, a rerun that copies nothing, a copy interrupted by a
//! failing destination and resumed, a source that changes between runs (deletions included),
//! a source that is never written to (its files are byte-identical afterwards), and a
//! verification that catches a damaged or missing destination blob and a missing row.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use berth_blob::{BlobStore, ByteStream, Committed, FsBlobStore, NameStream, ObjectReader, PartWritten};
use berth_core::backends::{BlobEngine, MetadataEngine};
use berth_core::migrate::{self, Destination, MigrateOptions, Stores};
use berth_meta::{AuditEvent, ExportRow, MetadataStore, NewManifest, Page, ProjectRecord, RobotRecord, SqliteStore, Table, TokenKind, TokenRecord, UserIdentity, UserRecord};
use berth_oci::{manifest, Algorithm, Digest, Reference, RepoName, ResumableHasher, Tag};
use bytes::Bytes;
use futures_util::{stream, StreamExt};

fn repo(name: &str) -> RepoName {
    name.parse().unwrap()
}

fn tag(name: &str) -> Tag {
    name.parse().unwrap()
}

/// Deterministic pseudo-random bytes (xorshift).
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn body(bytes: &[u8]) -> ByteStream {
    let chunks: Vec<io::Result<Bytes>> = bytes.chunks(64 << 10).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    Box::pin(stream::iter(chunks))
}

/// A data folder as `berth serve` leaves it: `berth.db`, `blobs/`, `uploads/`.
struct Installation {
    dir: PathBuf,
}

impl Installation {
    fn engines(&self) -> (MetadataEngine, BlobEngine) {
        (MetadataEngine::embedded(&self.dir), BlobEngine::embedded(&self.dir))
    }

    async fn open(&self) -> (Arc<SqliteStore>, Arc<FsBlobStore>) {
        std::fs::create_dir_all(&self.dir).unwrap();
        (Arc::new(SqliteStore::open(&self.dir.join("berth.db")).await.unwrap()), Arc::new(FsBlobStore::open(self.dir.clone()).unwrap()))
    }

    /// The source as `berth migrate` opens it (read-only).
    async fn source(&self) -> Stores {
        let (m, b) = self.engines();
        migrate::open_source(&m, &b).await.unwrap()
    }

    /// A destination as `berth migrate` opens it.
    async fn destination(&self) -> Stores {
        let (m, b) = self.engines();
        migrate::open_destination(&m, &b).await.unwrap()
    }

    /// Every file under the folder but the database's with its bytes' digest, and every row of
    /// the database (read through a read-only store). SQLite's files themselves are not compared:
    /// where a page lives (the database file or its write-ahead log) changes when a closing
    /// connection of `populate` checkpoints, whenever its thread gets to it.
    async fn snapshot(&self) -> (BTreeMap<String, String>, Vec<ExportRow>) {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.strip_prefix(root).unwrap().display().to_string();
                if path.is_dir() {
                    walk(root, &path, out);
                } else if !name.starts_with("berth.db") {
                    let bytes = std::fs::read(&path).unwrap();
                    out.insert(name, Digest::compute(Algorithm::Sha256, &bytes).to_string());
                }
            }
        }
        let mut files = BTreeMap::new();
        walk(&self.dir, &self.dir, &mut files);
        let store = SqliteStore::open_read_only(&self.dir.join("berth.db")).await.unwrap();
        let mut rows = Vec::new();
        for table in Table::ALL {
            rows.extend(store.export(table, None, 100_000).await.unwrap());
        }
        rows.push(ExportRow::Setting { key: "(uploads)".into(), value: format!("{:?}", store.get_upload("upload-in-flight").await.unwrap()) });
        rows.push(ExportRow::Setting { key: "(failures)".into(), value: store.login_failures("addr:192.0.2.1", 3_000).await.unwrap().to_string() });
        store.close().await;
        (files, rows)
    }
}

/// Stores `bytes` as a blob of `r`, as the upload workflow does.
async fn push_blob(meta: &dyn MetadataStore, blobs: &dyn BlobStore, r: &RepoName, bytes: &[u8], now: i64) -> Digest {
    let digest = Digest::compute(Algorithm::Sha256, bytes);
    let id = uuid_like(&digest);
    blobs.upload_create(&id).await.unwrap();
    let part = blobs.upload_write(&id, 1, 0, body(bytes), ResumableHasher::new(Algorithm::Sha256)).await.unwrap();
    assert_eq!(part.hasher.finish(), digest);
    let committed = blobs.upload_complete(&id, 1, bytes.len() as u64, &digest).await.unwrap();
    meta.commit_blob(r, &digest, bytes.len() as u64, &committed.key, now).await.unwrap();
    digest
}

fn uuid_like(d: &Digest) -> String {
    format!("t{}", &d.hex()[..32])
}

/// An image manifest of `config` and `layers` (with their sizes), recorded with `tags`.
async fn push_image(meta: &dyn MetadataStore, r: &RepoName, config: (&Digest, usize), layers: &[(&Digest, usize)], tags: &[Tag], now: i64) -> Digest {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, n)| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{n}}}"#))
        .collect();
    let bytes = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{}]}}"#,
        config.0,
        config.1,
        layers.join(",")
    );
    let parsed = manifest::parse(bytes.as_bytes(), None).unwrap();
    let digest = Digest::compute(Algorithm::Sha256, bytes.as_bytes());
    let outcome = meta.put_manifest(r, NewManifest { digest: &digest, bytes: bytes.as_bytes(), parsed: &parsed, tags }, now).await.unwrap();
    assert_eq!(outcome, berth_meta::PutManifestOutcome::Stored);
    digest
}

/// The blobs of the source: (repository, bytes).
fn contents() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("lib/app", data(300, 1)),             // config
        ("lib/app", data(3 << 20, 2)),         // a layer of 3 MiB (several chunks and writes)
        ("lib/app", data(70_000, 3)),          // a layer
        ("lib/app", Vec::new()),               // an empty blob
        ("team/tool", data(1_000, 4)),         // another repository's config
    ]
}

/// A source installation with every kind of row, at rest (its stores closed).
async fn populate(dir: &Path) -> (Installation, Vec<Digest>) {
    let inst = Installation { dir: dir.to_owned() };
    let (meta, blobs) = inst.open().await;
    let mut digests = Vec::new();
    for (i, (r, bytes)) in contents().iter().enumerate() {
        digests.push(push_blob(&*meta, &*blobs, &repo(r), bytes, 1_000 + i as i64).await);
    }
    let sizes: Vec<usize> = contents().iter().map(|(_, b)| b.len()).collect();
    let app = repo("lib/app");
    push_image(&*meta, &app, (&digests[0], sizes[0]), &[(&digests[1], sizes[1]), (&digests[2], sizes[2])], &[tag("v1"), tag("latest")], 2_000).await;
    push_image(&*meta, &app, (&digests[0], sizes[0]), &[(&digests[3], 0)], &[tag("empty")], 2_001).await;
    // A layer shared with another repository.
    meta.mount_blob(&repo("team/tool"), &app, &digests[1], 2_002).await.unwrap();
    push_image(&*meta, &repo("team/tool"), (&digests[4], sizes[4]), &[(&digests[1], sizes[1])], &[tag("1.0")], 2_003).await;
    meta.init_setting("registry_signing_key", "-----BEGIN PRIVATE KEY-----\ntest\n-----END PRIVATE KEY-----\n").await.unwrap();
    meta.init_setting("bootstrap_admin_hash", "$argon2id$test").await.unwrap();
    meta.put_user(&UserRecord { name: "admin".into(), password_hash: "$argon2id$admin".into(), admin: true, disabled: false, ..UserRecord::default() }).await.unwrap();
    // A person from an OpenID provider with a login, its helper credential (whose id sorts
    // before the login's: a later page brings its parent) and a personal token.
    let person = UserRecord {
        name: "dana".into(),
        identity: Some(UserIdentity { provider: "idp".into(), issuer: "https://id.example".into(), subject: "dana".into() }),
        email: Some("dana@example.org".into()),
        groups: vec!["devs".into()],
        created_at: 90,
        last_login_at: Some(95),
        ..UserRecord::default()
    };
    assert!(meta.create_user(&person).await.unwrap());
    let token = |id: &str, kind: TokenKind, parent: Option<&str>| TokenRecord {
        id: id.into(),
        user: "dana".into(),
        kind,
        name: kind.as_str().into(),
        secret_hash: format!("hash-{id}"),
        parent: parent.map(Into::into),
        scope: None,
        created_at: 96,
        expires_at: Some(10_000),
        last_used_at: None,
        refresh_token: (kind == TokenKind::Cli).then(|| "refresh".to_owned()),
        checked_at: None,
    };
    for t in [token("tok-z", TokenKind::Cli, None), token("tok-c", TokenKind::Helper, Some("tok-z")), token("tok-m", TokenKind::Personal, None)] {
        meta.create_token(&t).await.unwrap();
    }
    meta.create_project(&ProjectRecord { name: "lib".into(), public: true, created_at: 100 }).await.unwrap();
    meta.put_robot(&RobotRecord {
        name: "robot$lib+ci".into(),
        project: Some("lib".into()),
        description: "CI".into(),
        disabled: false,
        expires_at: None,
        secret_hash: Some("$argon2id$robot".into()),
        identity_provider: None,
        rules: serde_json::json!([]),
        permissions: serde_json::json!([{"repositories": ["*"], "actions": ["pull", "push"]}]),
        created_at: 101,
        updated_at: 102,
    })
    .await
    .unwrap();
    let event = AuditEvent {
        id: 0,
        time_ms: 5_000,
        action: "push".into(),
        result: "ok".into(),
        principal: "robot$lib+ci".into(),
        robots: vec!["robot$lib+ci".into()],
        provider: None,
        subject: None,
        jti: None,
        claims: None,
        repository: Some("lib/app".into()),
        reference: Some("v1".into()),
        client: Some("192.0.2.1".into()),
        message: None,
    };
    meta.append_audit(&[event.clone(), AuditEvent { time_ms: 5_001, ..event }]).await.unwrap();
    // Transient state that does not move.
    meta.create_upload("upload-in-flight", &app, 3_000).await.unwrap();
    blobs.upload_create("upload-in-flight").await.unwrap();
    meta.record_login_failure("addr:192.0.2.1", 3_000).await.unwrap();
    meta.close().await;
    (inst, digests)
}

/// Reads a whole object.
async fn read_all(blobs: &dyn BlobStore, key: &str) -> Vec<u8> {
    let ObjectReader { body, .. } = blobs.open(key, None).await.unwrap();
    let chunks: Vec<Bytes> = body.map(|c| c.unwrap()).collect().await;
    chunks.concat()
}

/// Every blob of `contents()` reads back byte-identical at the destination, and the tags
/// name the same manifests.
async fn assert_copied(src: &Stores, dst: &Stores, digests: &[Digest]) {
    for ((r, bytes), d) in contents().iter().zip(digests) {
        let rec = dst.meta.repo_blob(&repo(r), d).await.unwrap().unwrap_or_else(|| panic!("{d} in {r} at the destination"));
        assert_eq!(rec.size, bytes.len() as u64);
        assert!(read_all(&*dst.blobs, &rec.storage_key).await == *bytes, "{d} differs");
    }
    for (r, t) in [("lib/app", "v1"), ("lib/app", "latest"), ("lib/app", "empty"), ("team/tool", "1.0")] {
        let reference = Reference::Tag(tag(t));
        let want = src.meta.get_manifest(&repo(r), &reference).await.unwrap();
        assert!(want.is_some());
        assert_eq!(dst.meta.get_manifest(&repo(r), &reference).await.unwrap(), want, "{r}:{t}");
    }
    assert_eq!(dst.meta.get_setting("registry_signing_key").await.unwrap(), src.meta.get_setting("registry_signing_key").await.unwrap());
    assert_eq!(dst.meta.list_robots(None).await.unwrap(), src.meta.list_robots(None).await.unwrap());
    assert_eq!(dst.meta.list_users().await.unwrap(), src.meta.list_users().await.unwrap());
    assert_eq!(dst.meta.list_tokens("dana", &[]).await.unwrap(), src.meta.list_tokens("dana", &[]).await.unwrap());
    assert_eq!(dst.meta.get_token("tok-c").await.unwrap().and_then(|t| t.parent).as_deref(), Some("tok-z"));
    assert_eq!(dst.meta.get_upload("upload-in-flight").await.unwrap(), None, "uploads stay behind");
    assert_eq!(dst.meta.login_failures("addr:192.0.2.1", 3_000).await.unwrap(), 0, "login failures stay behind");
}

fn options() -> MigrateOptions {
    // Small pages: every table spans several.
    MigrateOptions { verify_only: false, concurrency: 2, page_rows: 2, recheck_blobs: false }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_everything_and_a_rerun_copies_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, digests) = populate(&tmp.path().join("source")).await;
    let before = source.snapshot().await;
    let target = Installation { dir: tmp.path().join("target") };
    let (src, dst) = (source.source().await, target.destination().await);
    assert_eq!(migrate::destination_state(&src, &dst).await.unwrap(), Destination::Empty);

    let report = migrate::migrate(&src, &dst, &options(), &migrate::Quiet).await.unwrap();
    assert!(report.verification.passed(), "{:?}", report.verification.problems);
    let total: u64 = contents().iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!((report.blobs_copied, report.blobs_skipped, report.bytes_copied), (5, 0, total), "{report:?}");
    assert_eq!(report.verification.blobs_verified, 5);
    assert_eq!(report.verification.bytes_verified, total);
    assert!(report.verification.counts.iter().all(|c| c.source == c.destination), "{:?}", report.verification.counts);
    let tags = report.tables.iter().find(|t| t.table == "tags").unwrap();
    assert_eq!(tags.rows, 4);
    let tokens = report.tables.iter().find(|t| t.table == "user_tokens").unwrap();
    assert_eq!((tokens.rows, tokens.skipped), (3, 0), "a helper before its login is imported after the walk");
    assert!(report.skipped_rows.is_empty(), "{:?}", report.skipped_rows);
    assert_copied(&src, &dst, &digests).await;
    assert_eq!(migrate::destination_state(&src, &dst).await.unwrap(), Destination::CopyOfSource);

    // A rerun: nothing to copy, everything verified again.
    let again = migrate::migrate(&src, &dst, &options(), &migrate::Quiet).await.unwrap();
    assert!(again.verification.passed(), "{:?}", again.verification.problems);
    assert_eq!((again.blobs_copied, again.blobs_skipped, again.bytes_copied, again.blobs_removed), (0, 5, 0, 0), "{again:?}");
    assert!(again.tables.iter().all(|t| t.removed == 0 && t.skipped == 0), "{:?}", again.tables);

    // The source was never written to: its blob and upload files are byte-identical, and so
    // are its rows, transient state included.
    drop(src);
    let after = source.snapshot().await;
    assert_eq!(after.0, before.0, "the source's files changed");
    assert!(after.1 == before.1, "the source's rows changed");
    assert_eq!(before.0.len(), 6, "five blobs and an upload: {:?}", before.0);

    // The destination is an installation a server opens as usual: a store and blob folder.
    let (meta, _) = target.open().await;
    assert_eq!(meta.list_repositories(Page { last: None, n: None }).await.unwrap(), vec!["lib/app", "team/tool"]);
}

/// A destination blob store whose completions fail after `ok` of them (a full disk, a dropped
/// connection, Ctrl-C).
struct Failing {
    inner: Arc<FsBlobStore>,
    ok: AtomicU32,
}

#[async_trait]
impl BlobStore for Failing {
    async fn upload_create(&self, id: &str) -> berth_blob::Result<()> {
        self.inner.upload_create(id).await
    }
    async fn upload_write(&self, id: &str, part: u32, offset: u64, body: ByteStream, hasher: ResumableHasher) -> berth_blob::Result<PartWritten> {
        self.inner.upload_write(id, part, offset, body, hasher).await
    }
    async fn upload_complete(&self, id: &str, parts: u32, size: u64, digest: &Digest) -> berth_blob::Result<Committed> {
        if self.ok.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_err() {
            return Err(berth_blob::BlobError::Io(io::Error::other("injected failure: no space left on device")));
        }
        self.inner.upload_complete(id, parts, size, digest).await
    }
    async fn upload_abort(&self, id: &str) -> berth_blob::Result<()> {
        self.inner.upload_abort(id).await
    }
    fn list_uploads(&self) -> NameStream {
        self.inner.list_uploads()
    }
    async fn open(&self, key: &str, range: Option<(u64, u64)>) -> berth_blob::Result<ObjectReader> {
        self.inner.open(key, range).await
    }
    async fn delete(&self, key: &str) -> berth_blob::Result<()> {
        self.inner.delete(key).await
    }
    fn list_objects(&self, older_than_secs: u64) -> NameStream {
        self.inner.list_objects(older_than_secs)
    }
    async fn ping(&self) -> berth_blob::Result<()> {
        self.inner.ping().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_copy_resumes_and_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, digests) = populate(&tmp.path().join("source")).await;
    let target = Installation { dir: tmp.path().join("target") };
    let src = source.source().await;
    let dst = target.destination().await;
    let failing = Stores { meta: dst.meta.clone(), blobs: Arc::new(Failing { inner: Arc::new(FsBlobStore::open(target.dir.clone()).unwrap()), ok: AtomicU32::new(2) }) };
    let sequential = MigrateOptions { concurrency: 1, ..options() };
    let e = migrate::migrate(&src, &failing, &sequential, &migrate::Quiet).await.expect_err("the third blob fails");
    assert!(e.to_string().contains("destination blob storage") && e.to_string().contains("no space left"), "{e}");
    assert_eq!(dst.meta.row_counts().await.unwrap().blobs, 2, "the two blobs copied are recorded");
    assert_eq!(dst.meta.row_counts().await.unwrap().manifests, 0, "nothing after the blobs was copied");
    // Its upload was given up (no data left behind).
    assert_eq!(dst.blobs.list_uploads().collect::<Vec<_>>().await.len(), 0);
    assert_eq!(migrate::destination_state(&src, &dst).await.unwrap(), Destination::CopyOfSource, "settings go first");

    // The rerun copies the rest only.
    let report = migrate::migrate(&src, &dst, &options(), &migrate::Quiet).await.unwrap();
    assert!(report.verification.passed(), "{:?}", report.verification.problems);
    assert_eq!((report.blobs_copied, report.blobs_skipped), (3, 2), "{report:?}");
    assert_copied(&src, &dst, &digests).await;

    // The source changes (its server kept running): a tag is deleted, a manifest and a new
    // blob arrive, a blob goes (unlinked and collected). The next run brings all of it along.
    drop(src);
    {
        let (meta, blobs) = source.open().await;
        let app = repo("lib/app");
        assert!(meta.delete_tag(&app, &tag("latest")).await.unwrap());
        let fresh = data(5_000, 9);
        let d = push_blob(&*meta, &*blobs, &app, &fresh, 4_000).await;
        push_image(&*meta, &app, (&digests[0], 300), &[(&d, fresh.len())], &[tag("v2")], 4_001).await;
        assert!(meta.delete_tag(&repo("team/tool"), &tag("1.0")).await.unwrap());
        let tool_manifest = meta.list_tags(&repo("team/tool"), Page { last: None, n: None }).await.unwrap();
        assert_eq!(tool_manifest, Some(vec![]));
        // team/tool's config: the manifest that referenced it goes, then the link, then the record.
        let all = Table::Manifests;
        let rows = meta.export(all, None, 100).await.unwrap();
        for row in rows {
            if let ExportRow::Manifest(m) = row {
                if m.repo.as_str() == "team/tool" {
                    assert!(meta.delete_manifest(&m.repo, &m.digest).await.unwrap());
                }
            }
        }
        assert!(meta.unlink_blob(&repo("team/tool"), &digests[4]).await.unwrap());
        let gc = meta.collect_garbage(1_500, 0).await.unwrap();
        assert_eq!(gc.deleted_keys.len(), 1, "{gc:?}");
        meta.close().await;
    }
    let src = source.source().await;
    let report = migrate::migrate(&src, &dst, &options(), &migrate::Quiet).await.unwrap();
    assert!(report.verification.passed(), "{:?}", report.verification.problems);
    assert_eq!((report.blobs_copied, report.blobs_removed), (1, 1), "{report:?}");
    let app = repo("lib/app");
    assert_eq!(dst.meta.list_tags(&app, Page { last: None, n: None }).await.unwrap(), Some(vec!["empty".into(), "v1".into(), "v2".into()]));
    assert_eq!(dst.meta.repo_blob(&repo("team/tool"), &digests[4]).await.unwrap(), None);
    // The removed blob's object went with its record: the destination holds exactly its records' objects.
    let objects: Vec<String> = dst.blobs.list_objects(0).map(|k| k.unwrap()).collect().await;
    assert_eq!(objects.len() as u64, dst.meta.row_counts().await.unwrap().blobs, "{objects:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_catches_a_damaged_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, digests) = populate(&tmp.path().join("source")).await;
    let target = Installation { dir: tmp.path().join("target") };
    let (src, dst) = (source.source().await, target.destination().await);
    let report = migrate::migrate(&src, &dst, &options(), &migrate::Quiet).await.unwrap();
    assert!(report.verification.passed());

    // One byte of the 3 MiB layer flipped, the config's object gone, a tag deleted.
    let layer = dst.meta.repo_blob(&repo("lib/app"), &digests[1]).await.unwrap().unwrap();
    let path = target.dir.join("blobs").join(&layer.storage_key);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1_000_000] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let config = dst.meta.repo_blob(&repo("lib/app"), &digests[0]).await.unwrap().unwrap();
    std::fs::remove_file(target.dir.join("blobs").join(&config.storage_key)).unwrap();
    assert!(dst.meta.delete_tag(&repo("lib/app"), &tag("latest")).await.unwrap());

    let verify_only = MigrateOptions { verify_only: true, ..options() };
    let report = migrate::migrate(&src, &dst, &verify_only, &migrate::Quiet).await.unwrap();
    let problems = report.verification.problems.join("\n");
    assert!(!report.verification.passed());
    assert_eq!(report.blobs_copied, 0, "verify-only copies nothing");
    assert!(problems.contains(&format!("blob {} (destination key {}) is corrupt", digests[1], layer.storage_key)), "{problems}");
    assert!(problems.contains(&format!("blob {} (destination key {}) cannot be read", digests[0], config.storage_key)), "{problems}");
    assert!(problems.contains("tags: the source has 4, the destination 3"), "{problems}");
    assert_eq!(report.verification.problems.len(), 3, "{problems}");

    // A plain run repairs the tag but trusts the blob records it finds (verification keeps
    // saying so); a run that rechecks the blobs copies the damaged and missing ones again.
    let report = migrate::migrate(&src, &dst, &options(), &migrate::Quiet).await.unwrap();
    assert_eq!(report.verification.problems.len(), 2, "{:?}", report.verification.problems);
    let recheck = MigrateOptions { recheck_blobs: true, ..options() };
    let report = migrate::migrate(&src, &dst, &recheck, &migrate::Quiet).await.unwrap();
    assert!(report.verification.passed(), "{:?}", report.verification.problems);
    assert_eq!((report.blobs_repaired, report.blobs_copied, report.blobs_skipped), (2, 2, 3), "{report:?}");
    assert_copied(&src, &dst, &digests).await;
    let objects: Vec<String> = dst.blobs.list_objects(0).map(|k| k.unwrap()).collect().await;
    assert_eq!(objects.len(), 5, "the damaged object was deleted: {objects:?}");
}

#[tokio::test]
async fn refuses_what_is_not_an_installation_and_the_same_place() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (m, b) = (MetadataEngine::embedded(&empty), BlobEngine::embedded(&empty));
    let e = migrate::open_source(&m, &b).await.err().expect("no installation");
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "opening a source creates nothing");

    let (source, _) = populate(&tmp.path().join("source")).await;
    let e = migrate::open_source(&MetadataEngine::embedded(&source.dir), &BlobEngine::embedded(&empty)).await.err().expect("no blob folder");
    assert!(e.to_string().contains("not Berth's blob folder"), "{e}");

    let (sm, sb) = source.engines();
    let same = migrate::same_place((&sm, &sb), (&sm, &sb)).expect("same");
    assert!(same.contains("source and destination are the same"), "{same}");
    let via_url = MetadataEngine::from_url(&format!("sqlite:{}", source.dir.join("berth.db").display()), &berth_meta::PostgresOptions::new("")).unwrap();
    assert!(migrate::same_place((&sm, &sb), (&via_url, &BlobEngine::embedded(&empty))).is_some(), "the same database by another name");
    assert!(migrate::same_place((&sm, &sb), (&m, &b)).is_none());
}
