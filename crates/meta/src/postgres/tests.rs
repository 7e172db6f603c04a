//! The PostgreSQL backend against a real server (see [`super::testdb`]): the whole shared suite,
//! its races across two stores, and what only PostgreSQL and several replicas show: concurrent
//! migrations, pushes racing deletes and collections on another replica, the last admin under
//! concurrency, index use of the hot paths (`EXPLAIN`), connection errors and recovery.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use berth_oci::{manifest, Algorithm, Digest, Reference, RepoName, Tag};
use futures_util::future::join_all;
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor, Row};

use super::testdb::TestDb;
use super::*;
use crate::testsuite;

fn repo(s: &str) -> RepoName {
    s.parse().expect("repo name")
}

fn tag(s: &str) -> Tag {
    s.parse().expect("tag")
}

fn dig(seed: &str) -> Digest {
    Digest::compute(Algorithm::Sha256, seed.as_bytes())
}

/// An image manifest of `config` and `layers`; `extra` goes into the top-level object.
fn image(config: &Digest, layers: &[&Digest], extra: &str) -> Vec<u8> {
    let layers: Vec<String> =
        layers.iter().map(|d| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":10}}"#)).collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{}]{extra}}}"#,
        layers.join(",")
    )
    .into_bytes()
}

async fn put(store: &PostgresStore, r: &RepoName, bytes: &[u8], tags: &[Tag], now: UnixTime) -> (Digest, PutManifestOutcome) {
    let parsed = manifest::parse(bytes, None).expect("parse");
    let digest = Digest::compute(Algorithm::Sha256, bytes);
    let outcome = store.put_manifest(r, NewManifest { digest: &digest, bytes, parsed: &parsed, tags }, now).await.expect("put_manifest");
    (digest, outcome)
}

// ---- the shared suite ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite() {
    let db = TestDb::create().await;
    let store = db.store().await;
    testsuite::run_all(&store).await;
    store.close().await;
    db.drop().await;
}

/// The suite's races with their writers spread over two stores on one database (two replicas),
/// twice (the races can run again on the same database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_races_across_stores() {
    let db = TestDb::create().await;
    let (one, two) = (db.store().await, db.store().await);
    testsuite::run_races(&one, &two).await;
    testsuite::run_races(&two, &one).await;
    one.close().await;
    two.close().await;
    db.drop().await;
}

// ---- export and import (`berth migrate`) ----

/// From SQLite to PostgreSQL, as a move from the embedded default to shared backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_from_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = crate::SqliteStore::open(&dir.path().join("meta.db")).await.expect("open");
    let db = TestDb::create().await;
    let dst = db.store().await;
    testsuite::transfer(&src, &dst).await;
    dst.close().await;
    db.drop().await;
}

/// From PostgreSQL back to SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_to_sqlite() {
    let db = TestDb::create().await;
    let src = db.store().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let dst = crate::SqliteStore::open(&dir.path().join("meta.db")).await.expect("open");
    testsuite::transfer(&src, &dst).await;
    src.close().await;
    db.drop().await;
}

/// A read-only connection runs no migration (a database without Berth's schema is refused and
/// stays empty), and on an installation it reads, exports and writes nothing.
#[tokio::test]
async fn read_only_connection() {
    let db = TestDb::create().await;
    let options = db.options();
    let e = PostgresStore::connect_read_only(&options).await.expect_err("no schema");
    assert!(e.to_string().contains("no Berth installation"), "{e}");
    assert!(!PostgresStore::installed(&options).await.expect("installed"), "a read-only connection migrates nothing");
    let store = db.store().await;
    store.init_setting("k", "v").await.expect("init");
    store.close().await;
    let ro = PostgresStore::connect_read_only(&options).await.expect("read-only");
    assert_eq!(ro.get_setting("k").await.expect("get").as_deref(), Some("v"));
    assert_eq!(ro.export(Table::Settings, None, 10).await.expect("export").len(), 1);
    assert!(ro.row_counts().await.expect("counts").settings == 1);
    let e = ro.init_setting("k2", "v").await.expect_err("a write");
    assert!(e.to_string().contains("read-only"), "{e}");
    assert!(ro.import(&[ExportRow::Setting { key: "k3".into(), value: "v".into() }]).await.is_err(), "an import is a write");
    assert!(ro.prune(Table::Settings, None, None, &[]).await.is_err(), "a prune is a write");
    ro.close().await;
    // An older schema: the migrations table says fewer than this Berth has.
    let mut conn = db.connection().await;
    sqlx::query("UPDATE _sqlx_migrations SET version = version + 1000").execute(&mut conn).await.expect("fake a newer one");
    let _ = conn.close().await;
    let e = PostgresStore::connect_read_only(&options).await.expect_err("unknown migration");
    assert!(e.to_string().contains("newer Berth"), "{e}");
    db.drop().await;
}

// ---- connections, migrations ----

/// Replicas starting at once on a fresh database: all connect, the schema is made once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_migrate_a_fresh_database_at_once() {
    let db = TestDb::create().await;
    let options = db.options();
    let stores = join_all((0..6).map(|_| PostgresStore::connect(&options))).await;
    let stores: Vec<PostgresStore> = stores.into_iter().map(|s| s.expect("connect")).collect();
    let mut conn = db.connection().await;
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version").fetch_all(&mut conn).await.expect("migrations");
    assert_eq!(applied, MIGRATOR.iter().map(|m| m.version).collect::<Vec<_>>(), "each migration applied once");
    for s in &stores {
        assert_eq!(s.federation_generation().await.expect("generation"), 1);
    }
    // Connecting again applies nothing twice.
    let again = PostgresStore::connect(&options).await.expect("reconnect");
    assert_eq!(again.federation_generation().await.expect("generation"), 1);
    let _ = conn.close().await;
    for s in stores.iter().chain([&again]) {
        s.close().await;
    }
    db.drop().await;
}

#[tokio::test]
async fn connection_settings() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let show = |what: &'static str| {
        let pool = store.pool.clone();
        async move { sqlx::query_scalar::<_, String>(&format!("SHOW {what}")).fetch_one(&pool).await.expect("show") }
    };
    assert_eq!(show("default_transaction_isolation").await, "read committed");
    assert_eq!(show("transaction_isolation").await, "read committed");
    assert_eq!(show("statement_timeout").await, "1min");
    assert_eq!(show("idle_in_transaction_session_timeout").await, "1min");
    assert_eq!(show("application_name").await, "berth");
    let mut tx = store.begin().await.expect("begin");
    let level: String = sqlx::query_scalar("SHOW transaction_isolation").fetch_one(&mut *tx).await.expect("show");
    assert_eq!(level, "read committed");
    tx.rollback().await.expect("rollback");
    let place = PostgresOptions::new(db.url()).redacted();
    assert_eq!(store.describe(), place);
    assert!(place.starts_with("postgres ") && place.ends_with(&format!("/{}", db.name())) && !place.contains("://"), "{place}");
    store.close().await;
    db.drop().await;
}

/// A fresh database is no installation until a store connected to it once; asking changes nothing.
#[tokio::test]
async fn installed_is_read_only() {
    let db = TestDb::create().await;
    let options = PostgresOptions::new(db.url());
    assert!(!PostgresStore::installed(&options).await.expect("ask"));
    assert!(!PostgresStore::installed(&options).await.expect("ask again"), "asking must not create the installation");
    let store = PostgresStore::connect(&options).await.expect("connect");
    store.close().await;
    assert!(PostgresStore::installed(&options).await.expect("ask after connect"));
    db.drop().await;
}

/// The errors of a failed start are one line, say what failed, and never show the password.
#[tokio::test]
async fn connect_errors_are_one_line() {
    let url = testdb::server_url();
    let base = PostgresOptions::new(url.clone());
    let parsed = PgConnectOptions::from_str(&url).expect("url");
    let (host, port) = (parsed.get_host().to_owned(), parsed.get_port());
    let check = |e: MetaError, words: &[&str]| {
        let m = e.to_string();
        assert!(!m.contains('\n'), "one line: {m:?}");
        assert!(!m.contains("s3cret"), "no password: {m:?}");
        for w in words {
            assert!(m.contains(w), "{m:?} should say {w:?}");
        }
    };
    // Nothing listens there.
    let o = PostgresOptions { url: "postgres://berth:s3cret@127.0.0.1:1/berth".into(), connect_timeout: Duration::from_secs(5), ..base.clone() };
    check(PostgresStore::connect(&o).await.expect_err("port 1"), &["cannot reach PostgreSQL at postgres berth@127.0.0.1:1/berth"]);
    // An unknown role, an unknown database.
    let o = PostgresOptions { url: format!("postgres://nosuchrole:s3cret@{host}:{port}/berth"), ..base.clone() };
    check(PostgresStore::connect(&o).await.expect_err("role"), &["nosuchrole", "refused"]);
    let o = PostgresOptions { url: format!("postgres://{}@{host}:{port}/berth_no_such_db", parsed.get_username()), ..base.clone() };
    check(PostgresStore::connect(&o).await.expect_err("database"), &["berth_no_such_db", "does not exist"]);
    let o = PostgresOptions { url: "mysql://x".into(), ..base.clone() };
    check(PostgresStore::connect(&o).await.expect_err("scheme"), &["invalid PostgreSQL URL"]);
    // Debug output of the options hides the password too.
    let o = PostgresOptions::new("postgres://berth:s3cret@db.internal:5432/berth");
    assert!(!format!("{o:?}").contains("s3cret"));
    assert_eq!(o.redacted(), "postgres berth@db.internal:5432/berth");
}

/// The server closing every connection (a restart, a failover) costs no more than the requests in
/// flight: the pool tests connections before lending them.
#[tokio::test]
async fn recovers_when_the_server_drops_its_connections() {
    let db = TestDb::create().await;
    let store = db.store().await;
    store.init_setting("k", "v").await.expect("init");
    for _ in 0..3 {
        let mut admin = db.connection().await;
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut admin)
        .await
        .expect("terminate");
        assert!(!killed.is_empty(), "the store had connections");
        let _ = admin.close().await;
        assert_eq!(store.get_setting("k").await.expect("the next request gets a fresh connection").as_deref(), Some("v"));
        store.ping().await.expect("ping");
    }
    store.close().await;
    db.drop().await;
}

/// A NUL character cannot be stored in PostgreSQL text: a clear refusal, not a database error.
#[tokio::test]
async fn nul_in_text_is_a_conflict() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let e = store.init_setting("nul", "a\0b").await.expect_err("NUL");
    assert!(matches!(e, MetaError::Conflict(_)), "{e:?}");
    store.close().await;
    db.drop().await;
}

/// The schema itself enforces the rules between rows, whatever the code in front of it checks.
#[tokio::test]
async fn schema_enforces_federation_rules() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let mut c = db.connection().await;
    c.execute("INSERT INTO projects (name, public, created_at) VALUES ('p', false, 1)").await.expect("project");
    c.execute("INSERT INTO identity_providers (name, config, created_at, updated_at) VALUES ('i', '{}', 1, 1)").await.expect("provider");
    let insert = |name: &str, project: &str, secret: &str, idp: &str| {
        format!("INSERT INTO robots (name, project, secret_hash, identity_provider, created_at, updated_at) VALUES ('{name}', {project}, {secret}, {idp}, 1, 1)")
    };
    c.execute(insert("robot$p+a", "'p'", "NULL", "'i'").as_str()).await.expect("federated project robot");
    c.execute(insert("robot$b", "NULL", "'h'", "NULL").as_str()).await.expect("static system robot");
    let e = c.execute(insert("robot$d", "NULL", "'h'", "'i'").as_str()).await.expect_err("both");
    assert!(e.to_string().contains("robot_secret_or_provider"), "{e}");
    let e = c.execute(insert("robot$x+e", "'x'", "NULL", "NULL").as_str()).await.expect_err("unknown project");
    assert!(e.to_string().contains("foreign key"), "{e}");
    for sql in ["DELETE FROM projects WHERE name = 'p'", "DELETE FROM identity_providers WHERE name = 'i'"] {
        let e = c.execute(sql).await.expect_err(sql);
        assert!(e.to_string().contains("foreign key"), "{sql}: {e}");
    }
    let e = c.execute("INSERT INTO federation_generation (id, generation) VALUES (2, 1)").await;
    assert!(e.is_err(), "a second generation row");
    let _ = c.close().await;
    store.close().await;
    db.drop().await;
}

/// The schema's own rules for people: an identity is whole or absent and links one user; a
/// token's kind is known, its user and parent exist, and it goes with either.
#[tokio::test]
async fn schema_enforces_people_rules() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let mut c = db.connection().await;
    for sql in [
        "INSERT INTO users (name, password_hash, admin) VALUES ('u', '', false)",
        "INSERT INTO users (name, password_hash, admin, idp_provider, idp_issuer, idp_subject) VALUES ('v', '', false, 'p', 'i', 's')",
        "INSERT INTO user_tokens (id, user_name, kind, name, secret_hash, created_at) VALUES ('t', 'u', 'cli', 'n', 'h', 1)",
        "INSERT INTO user_tokens (id, user_name, kind, name, secret_hash, parent, created_at) VALUES ('c', 'u', 'helper', 'n', 'h', 't', 1)",
    ] {
        c.execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    for (sql, why) in [
        ("INSERT INTO users (name, password_hash, admin, idp_issuer, idp_subject) VALUES ('x', '', false, 'i', 't')", "user_identity_whole"),
        ("UPDATE users SET idp_subject = NULL WHERE name = 'v'", "user_identity_whole"),
        ("INSERT INTO users (name, password_hash, admin, idp_provider, idp_issuer, idp_subject) VALUES ('x', '', false, 'q', 'i', 's')", "users_by_identity"),
        ("INSERT INTO user_tokens (id, user_name, kind, name, secret_hash, created_at) VALUES ('x', 'u', 'bogus', 'n', 'h', 1)", "user_tokens_kind_check"),
        ("INSERT INTO user_tokens (id, user_name, kind, name, secret_hash, created_at) VALUES ('x', 'nobody', 'cli', 'n', 'h', 1)", "foreign key"),
        ("INSERT INTO user_tokens (id, user_name, kind, name, secret_hash, parent, created_at) VALUES ('x', 'u', 'cli', 'n', 'h', 'none', 1)", "foreign key"),
    ] {
        let e = c.execute(sql).await.expect_err(sql);
        assert!(e.to_string().contains(why), "{sql}: {e}");
    }
    c.execute("DELETE FROM users WHERE name = 'u'").await.expect("delete");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_tokens").fetch_one(&mut c).await.expect("count");
    assert_eq!(n, 0, "a user's tokens go with it");
    let _ = c.close().await;
    store.close().await;
    db.drop().await;
}

// ---- replicas racing ----

/// Two replicas putting the same manifest (with overlapping tags in different orders) at once:
/// every put succeeds, one manifest, every tag on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_put_the_same_manifest() {
    let db = TestDb::create().await;
    let (one, two) = (db.store().await, db.store().await);
    let r = repo("race/same");
    let (config, layer) = (dig("same config"), dig("same layer"));
    one.commit_blob(&r, &config, 6, "k/config", 100).await.expect("commit");
    two.commit_blob(&r, &layer, 6, "k/layer", 100).await.expect("commit");
    let bytes = image(&config, &[&layer], "");
    for round in 0..5 {
        let tag_sets: Vec<Vec<Tag>> =
            (0..16).map(|i| if i % 2 == 0 { vec![tag("a"), tag("b"), tag(&format!("t{i}"))] } else { vec![tag("b"), tag("a")] }).collect();
        let puts = tag_sets.iter().enumerate().map(|(i, tags)| {
            let store = if i % 2 == 0 { &one } else { &two };
            put(store, &r, &bytes, tags, 200 + round)
        });
        for (d, outcome) in join_all(puts).await {
            assert_eq!(outcome, PutManifestOutcome::Stored, "round {round}: {d}");
        }
    }
    let digest = Digest::compute(Algorithm::Sha256, &bytes);
    let tags = one.list_tags(&r, Page { last: None, n: None }).await.expect("tags").expect("repo");
    assert_eq!(tags.len(), 2 + 8);
    for t in &tags {
        assert_eq!(two.get_manifest(&r, &Reference::Tag(tag(t))).await.expect("get").map(|m| m.digest), Some(digest.clone()), "{t}");
    }
    let mut c = db.connection().await;
    let counts: (i64, i64) = sqlx::query_as("SELECT (SELECT COUNT(*) FROM manifests), (SELECT COUNT(*) FROM manifest_refs)")
        .fetch_one(&mut c)
        .await
        .expect("count");
    assert_eq!(counts, (1, 2), "one manifest, its two references once");
    let _ = c.close().await;
    one.close().await;
    two.close().await;
    db.drop().await;
}

/// One replica deletes a tag while another pushes a new manifest under it, round after round: the
/// tag ends up on the new manifest or gone, never on an older one, and nothing fails. The same
/// with the manifest itself deleted while it is pushed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_while_another_replica_pushes() {
    let db = TestDb::create().await;
    let (one, two) = (db.store().await, db.store().await);
    let r = repo("race/delete");
    let config = dig("delete config");
    one.commit_blob(&r, &config, 6, "k/config", 100).await.expect("commit");
    let t = tag("latest");
    let mut outcomes = HashSet::new();
    for round in 0..40 {
        let bytes = image(&config, &[], &format!(r#","annotations":{{"round":"{round}"}}"#));
        let (pusher, deleter) = if round % 2 == 0 { (&one, &two) } else { (&two, &one) };
        let ((digest, outcome), deleted) =
            tokio::join!(put(pusher, &r, &bytes, std::slice::from_ref(&t), 200), deleter.delete_tag(&r, &t));
        assert_eq!(outcome, PutManifestOutcome::Stored);
        let deleted = deleted.expect("delete_tag");
        let now = one.get_manifest(&r, &Reference::Tag(t.clone())).await.expect("get").map(|m| m.digest);
        assert!(now.is_none() || now == Some(digest.clone()), "round {round}: the tag names an older manifest: {now:?}");
        outcomes.insert((deleted, now.is_some()));
    }
    println!("delete_tag vs push outcomes (deleted, tag present): {outcomes:?}");

    // The manifest deleted while it is pushed again with its tags.
    let bytes = image(&config, &[], r#","annotations":{"again":"yes"}"#);
    let (digest, _) = put(&one, &r, &bytes, &[tag("x"), tag("y")], 200).await;
    for round in 0..40 {
        let (pusher, deleter) = if round % 2 == 0 { (&one, &two) } else { (&two, &one) };
        let yx = [tag("y"), tag("x")];
        let ((_, outcome), deleted) = tokio::join!(put(pusher, &r, &bytes, &yx, 300), deleter.delete_manifest(&r, &digest));
        assert_eq!(outcome, PutManifestOutcome::Stored, "round {round}");
        deleted.expect("delete_manifest");
        let stored = two.get_manifest(&r, &Reference::Digest(digest.clone())).await.expect("get").is_some();
        for name in ["x", "y"] {
            let tagged = two.get_manifest(&r, &Reference::Tag(tag(name))).await.expect("get").map(|m| m.digest);
            assert_eq!(tagged.is_some(), stored, "round {round}: tag {name} and its manifest go together");
        }
        if !stored {
            put(&one, &r, &bytes, &[tag("x"), tag("y")], 300).await;
        }
    }
    one.close().await;
    two.close().await;
    db.drop().await;
}

/// Pushes on one replica while another collects garbage with a cutoff in the future (so every
/// unreferenced link is a candidate at once): a manifest that was stored keeps every blob it
/// references linked under a key that no collection handed out for deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_on_one_replica_never_takes_a_pushed_blob() {
    let db = TestDb::create().await;
    let (one, two) = (Arc::new(db.store().await), Arc::new(db.store().await));
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let (store, stop) = (two.clone(), stop.clone());
        tokio::spawn(async move {
            let mut deleted = Vec::new();
            let mut passes = 0;
            while !stop.load(Ordering::SeqCst) {
                let report = store.collect_garbage(10_000, UnixTime::MIN).await.expect("collect_garbage");
                deleted.extend(report.deleted_keys);
                passes += 1;
                tokio::task::yield_now().await;
            }
            (deleted, passes)
        })
    };
    let pushers = (0..4).map(|p| {
        let store = one.clone();
        tokio::spawn(async move {
            let r = repo(&format!("race/gc{p}"));
            let shared = dig("gc shared layer");
            let mut stored = Vec::new();
            let mut refused = 0;
            for i in 0..25 {
                let config = dig(&format!("gc config {p} {i}"));
                let mut keys = Vec::new();
                for (d, k) in [(&shared, format!("k/shared/{p}/{i}")), (&config, format!("k/config/{p}/{i}"))] {
                    let key = match store.commit_blob(&r, d, 6, &k, 1000).await.expect("commit") {
                        BlobCommit::Stored => k,
                        BlobCommit::AlreadyPresent { existing_key } => existing_key,
                    };
                    keys.push(key);
                }
                let bytes = image(&config, &[&shared], "");
                match put(&store, &r, &bytes, &[tag(&format!("t{i}"))], 1000).await.1 {
                    PutManifestOutcome::Stored => stored.push((r.clone(), vec![config, shared.clone()])),
                    PutManifestOutcome::Missing(_) => refused += 1,
                }
            }
            (stored, refused)
        })
    });
    let results = join_all(pushers).await;
    stop.store(true, Ordering::SeqCst);
    let (deleted, passes) = collector.await.expect("collector");
    let deleted: HashSet<String> = deleted.into_iter().collect();
    let (mut stored_count, mut refused_count) = (0, 0);
    for result in results {
        let (stored, refused) = result.expect("pusher");
        refused_count += refused;
        for (r, blobs) in stored {
            stored_count += 1;
            for d in blobs {
                let rec = one.repo_blob(&r, &d).await.expect("repo_blob");
                let rec = rec.unwrap_or_else(|| panic!("{r}: a stored manifest's blob {d} lost its link"));
                assert!(!deleted.contains(&rec.storage_key), "{r}: the key {} of a stored manifest's blob was collected", rec.storage_key);
                assert!(one.key_in_use(&rec.storage_key).await.expect("key_in_use"));
            }
        }
    }
    println!("{stored_count} manifests stored, {refused_count} refused (blob collected first), {} keys collected in {passes} passes", deleted.len());
    assert!(stored_count > 0);
    one.close().await;
    two.close().await;
    db.drop().await;
}

/// Two replicas each disabling (or deleting) one of the last two enabled admins at once: exactly
/// one succeeds, and an enabled admin remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_admin_survives_concurrent_writes() {
    let db = TestDb::create().await;
    let (one, two) = (db.store().await, db.store().await);
    let admin = |name: &str, disabled: bool| UserRecord { name: name.into(), password_hash: "h".into(), admin: true, disabled, ..UserRecord::default() };
    for round in 0..20 {
        one.put_user(&admin("a", false)).await.expect("a");
        one.put_user(&admin("b", false)).await.expect("b");
        let (a_off, b_off, b_demoted) = (admin("a", true), admin("b", true), UserRecord { admin: false, ..admin("b", false) });
        let (x, y) = if round % 2 == 0 {
            tokio::join!(one.put_user(&a_off), two.put_user(&b_off))
        } else {
            let (x, y) = tokio::join!(one.delete_user("a"), two.put_user(&b_demoted));
            (x.map(|_| ()), y)
        };
        let ok = [x.is_ok(), y.is_ok()];
        assert_eq!(ok.iter().filter(|o| **o).count(), 1, "round {round}: exactly one write passes: {x:?} {y:?}");
        for e in [x, y].into_iter().filter_map(|r| r.err()) {
            assert!(matches!(e, MetaError::Conflict(ref m) if m.contains("last enabled admin")), "round {round}: {e:?}");
        }
        let enabled = one.list_users().await.expect("users").into_iter().filter(|u| u.admin && !u.disabled).count();
        assert_eq!(enabled, 1, "round {round}");
    }
    one.close().await;
    two.close().await;
    db.drop().await;
}

// ---- query plans ----

/// The plan of `sql` with `binds` (strings and integers), as text.
async fn plan(conn: &mut PgConnection, sql: &str, binds: &[Bind<'_>]) -> String {
    let explain = format!("EXPLAIN (COSTS OFF) {sql}");
    let mut q = sqlx::query(&explain);
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(*s),
            Bind::Int(i) => q.bind(*i),
            Bind::NoText => q.bind(None::<&str>),
            Bind::TextArray(a) => q.bind(a.to_vec()),
        };
    }
    let rows = q.fetch_all(&mut *conn).await.unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"));
    rows.iter().map(|r| r.try_get::<String, _>(0).expect("plan line")).collect::<Vec<_>>().join("\n")
}

enum Bind<'a> {
    Text(&'a str),
    Int(i64),
    NoText,
    TextArray(&'a [&'a str]),
}

/// With 2,000 repositories, 20,000 blobs and links, 10,000 manifests and tags, 20,000
/// references, 5,000 uploads, 20,000 audit events, 5,000 users with 33,000 tokens and 5,000
/// logins in progress (analyzed), every hot-path statement of the
/// store is planned as index scans: no sequential scan of any table, and listings walk an index
/// in order (no sort).
/// `--nocapture` prints the plans.
#[tokio::test]
async fn hot_paths_use_indexes() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let mut c = db.connection().await;
    // Digests as the store writes them: 'sha256:' + 64 hex digits.
    for sql in [
        "INSERT INTO repositories (name) SELECT 'bench/repo' || lpad(i::text, 5, '0') FROM generate_series(1, 2000) i",
        "INSERT INTO blobs (digest, size, storage_key, last_used) \
         SELECT 'sha256:' || md5('b' || i) || md5('B' || i), 100, 'key/' || i, 1 FROM generate_series(1, 20000) i",
        "INSERT INTO repo_blobs (repo_id, digest, last_used) \
         SELECT (i - 1) / 10 + 1, 'sha256:' || md5('b' || i) || md5('B' || i), 1 FROM generate_series(1, 20000) i",
        "INSERT INTO manifests (repo_id, digest, media_type, bytes, size, subject, artifact_type, annotations, created) \
         SELECT (i - 1) / 5 + 1, 'sha256:' || md5('m' || i) || md5('M' || i), 'application/vnd.oci.image.manifest.v1+json', \
         '\\x7b7d'::bytea, 2, CASE WHEN i % 5 = 0 THEN 'sha256:' || md5('m' || (i - 1)) || md5('M' || (i - 1)) END, \
         'application/x-test', NULL, 1 FROM generate_series(1, 10000) i",
        "INSERT INTO manifest_refs (repo_id, manifest_digest, ref_digest, kind) \
         SELECT (i - 1) / 5 + 1, 'sha256:' || md5('m' || i) || md5('M' || i), 'sha256:' || md5('b' || (2 * i - k)) || md5('B' || (2 * i - k)), 'blob' \
         FROM generate_series(1, 10000) i, generate_series(0, 1) k",
        "INSERT INTO tags (repo_id, name, manifest_digest, updated) \
         SELECT (i - 1) / 5 + 1, 'v' || i, 'sha256:' || md5('m' || i) || md5('M' || i), 1 FROM generate_series(1, 10000) i",
        "INSERT INTO uploads (id, repo, created, updated) SELECT 'upload-' || i, 'bench/repo00001', 1, 1 FROM generate_series(1, 5000) i",
        "INSERT INTO audit_events (time_ms, action, result, principal, robots, provider, repository) \
         SELECT i, 'pull', 'ok', 'robot$p+r' || (i % 50), '[\"robot$p+r' || (i % 50) || '\"]', 'idp' || (i % 3), 'p/app' || (i % 200) \
         FROM generate_series(1, 20000) i",
        "INSERT INTO audit_names (name, event_id) SELECT principal, id FROM audit_events",
        "INSERT INTO audit_names (name, event_id) SELECT 'robot$rare', id FROM audit_events WHERE id % 4000 = 0",
        "INSERT INTO users (name, password_hash, admin, idp_provider, idp_issuer, idp_subject, created_at) \
         SELECT 'user' || lpad(i::text, 5, '0'), '', false, 'idp', 'https://id.example', 'sub-' || i, 1 FROM generate_series(1, 5000) i",
        "INSERT INTO user_tokens (id, user_name, kind, name, secret_hash, created_at, expires_at, refresh_token, checked_at) \
         SELECT 'tok' || lpad(i::text, 6, '0'), 'user' || lpad((i % 5000 + 1)::text, 5, '0'), \
         CASE WHEN i % 3 = 0 THEN 'personal' ELSE 'cli' END, 'n', 'h', i, CASE WHEN i % 3 = 0 THEN 100000 + i END, \
         CASE WHEN i % 3 = 1 THEN 'refresh' END, CASE WHEN i % 6 = 1 THEN 50000 + i END FROM generate_series(1, 20000) i",
        "INSERT INTO user_tokens (id, user_name, kind, name, secret_hash, parent, created_at) \
         SELECT id || '-h', user_name, 'helper', 'n', 'h', id, 5 FROM user_tokens WHERE kind = 'cli'",
        "INSERT INTO auth_requests (id, kind, data, created_at, expires_at) SELECT 'req-' || i, 'web', '{}', i, i + 600 FROM generate_series(1, 5000) i",
        "ANALYZE",
    ] {
        c.execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let blob: String = sqlx::query_scalar("SELECT 'sha256:' || md5('b' || 421) || md5('B' || 421)").fetch_one(&mut c).await.expect("digest");
    let man: String = sqlx::query_scalar("SELECT 'sha256:' || md5('m' || 211) || md5('M' || 211)").fetch_one(&mut c).await.expect("digest");
    let subject: String = sqlx::query_scalar("SELECT 'sha256:' || md5('m' || 214) || md5('M' || 214)").fetch_one(&mut c).await.expect("digest");
    // Blob 421 and manifest 211..215 are in repository 43.
    let r = "bench/repo00043";
    use Bind::{Int, NoText, Text, TextArray};
    let cases: Vec<(&str, String, Vec<Bind<'_>>, &[&str])> = vec![
        ("repo_blob", SQL_REPO_BLOB.into(), vec![Text(r), Text(&blob)], &["repositories_name_key", "Index Cond: ((repo_id = r.id) AND (digest =", "repo_blobs_pkey", "blobs_pkey"][..]),
        ("get_manifest by digest", SQL_MANIFEST_BY_DIGEST.into(), vec![Text(r), Text(&man)], &["repositories_name_key", "manifests_pkey"][..]),
        ("get_manifest by tag", SQL_MANIFEST_BY_TAG.into(), vec![Text(r), Text("v211")], &["tags_pkey", "manifests_pkey", "Index Cond: ((repo_id = t.repo_id) AND (digest = t.manifest_digest))"][..]),
        ("list_tags, first page", SQL_LIST_TAGS.into(), vec![Text(r), Text(""), Int(100)], &["repositories_name_key", "tags_pkey"][..]),
        ("list_tags, next page", SQL_LIST_TAGS.into(), vec![Text(r), Text("v212"), Int(2)], &["tags_pkey"][..]),
        ("list_repositories, first page", SQL_LIST_REPOSITORIES.into(), vec![Text(""), Int(100)], &["repositories_name_key"][..]),
        ("list_repositories, deep page", SQL_LIST_REPOSITORIES.into(), vec![Text("bench/repo01500"), Int(100)], &["repositories_name_key"][..]),
        ("referrers", SQL_REFERRERS.into(), vec![Text(r), Text(&subject), NoText], &["manifests_subject"][..]),
        ("referrers by type", SQL_REFERRERS.into(), vec![Text(r), Text(&subject), Text("application/x-test")], &["manifests_subject"][..]),
        ("get_upload", SQL_GET_UPLOAD.into(), vec![Text("upload-77")], &["uploads_pkey"][..]),
        ("key_in_use", "SELECT EXISTS (SELECT 1 FROM blobs WHERE storage_key = $1)".into(), vec![Text("key/77")], &["blobs_storage_key_key"][..]),
        ("get_user_by_identity", SQL_USER_BY_IDENTITY.into(), vec![Text("https://id.example"), Text("sub-77")], &["users_by_identity"][..]),
        ("get_token", SQL_GET_TOKEN.into(), vec![Text("tok000077")], &["user_tokens_pkey"][..]),
        // (A user's tokens are a handful: the planner may sort them, as the referrers of a subject.)
        ("a user's tokens (list_tokens)", SQL_LIST_TOKENS.into(), vec![Text("user00077"), TextArray(&["cli", "helper"])], &["user_tokens_by_user"][..]),
        ("a user's tokens of every kind", SQL_LIST_TOKENS.into(), vec![Text("user00077"), TextArray(&["personal", "cli", "web", "helper"])], &["user_tokens_by_user"][..]),
        ("tokens_to_check", SQL_TOKENS_TO_CHECK.into(), vec![Int(60_000), Int(1), Int(100)], &["user_tokens_to_check"][..]),
        ("prune_tokens", SQL_EXPIRED_TOKENS.into(), vec![Int(100_100), Int(1000)], &["user_tokens_by_expiry"][..]),
        ("a token's children", SQL_TOKEN_CHILDREN.into(), vec![TextArray(&["tok000077", "tok000078"])], &["user_tokens_by_parent"][..]),
        ("deleting tokens", SQL_DELETE_TOKENS.into(), vec![TextArray(&["tok000077", "tok000077-h"])], &["user_tokens_pkey"][..]),
        ("get_auth_request", SQL_GET_AUTH_REQUEST.into(), vec![Text("req-77"), Int(100)], &["auth_requests_pkey"][..]),
        ("prune_auth_requests", "SELECT id FROM auth_requests WHERE expires_at <= $1".into(), vec![Int(700)], &["auth_requests_by_expiry"][..]),
    ];
    let mut report = String::new();
    for (what, sql, binds, indexes) in &cases {
        let p = plan(&mut c, sql, binds).await;
        report.push_str(&format!("--- {what}\n{p}\n"));
        assert!(!p.contains("Seq Scan"), "{what} scans a table:\n{p}");
        // Listings walk an index in order; the referrers of one subject (a handful) may be sorted.
        assert!(!what.starts_with("list") || !p.contains("Sort"), "{what} sorts:\n{p}");
        // "a|b": either index (the planner picks the more selective one for the data).
        for index in *indexes {
            assert!(index.split('|').any(|i| p.contains(i)), "{what} should use {index}:\n{p}");
        }
    }
    // The audit queries, as the store builds them.
    for (what, q, index) in [
        ("audit newest", AuditQuery::default(), "audit_events_pkey"),
        ("audit robot", AuditQuery { robot: Some("robot$p+r7".into()), ..AuditQuery::default() }, "audit_names_pkey"),
        ("audit robot, deep page", AuditQuery { robot: Some("robot$rare".into()), before_id: Some(15000), ..AuditQuery::default() }, "audit_names_pkey"),
        // A robot in 2% of all events: walking the events backward and keeping its own is as good.
        (
            "audit common robot, deep page",
            AuditQuery { robot: Some("robot$p+r7".into()), before_id: Some(1000), ..AuditQuery::default() },
            "audit_names_pkey|audit_names_event",
        ),
        ("audit repository", AuditQuery { repository: Some("p/app7".into()), ..AuditQuery::default() }, "audit_by_repository"),
        // A provider of a third of all events: the newest events, filtered, are as good.
        (
            "audit common provider",
            AuditQuery { provider: Some("idp1".into()), before_id: Some(5000), ..AuditQuery::default() },
            "audit_by_provider|audit_events_pkey",
        ),
    ] {
        let mut b = QueryBuilder::<Postgres>::new("EXPLAIN (COSTS OFF) ");
        push_audit_select(&mut b, &q);
        let rows = b.build().fetch_all(&mut c).await.expect("explain");
        let p = rows.iter().map(|r| r.try_get::<String, _>(0).expect("line")).collect::<Vec<_>>().join("\n");
        report.push_str(&format!("--- {what}\n{p}\n"));
        // (A few matching rows may be sorted: a rare robot's events come from a bitmap scan.)
        assert!(!p.contains("Seq Scan"), "{what}:\n{p}");
        assert!(index.split('|').any(|i| p.contains(i)), "{what} should use {index}:\n{p}");
    }
    println!("{report}");
    // And the store answers them right on this data.
    assert_eq!(store.list_tags(&repo(r), Page { last: Some("v212"), n: Some(2) }).await.expect("tags"), Some(vec!["v213".into(), "v214".into()]));
    assert_eq!(store.list_repositories(Page { last: Some("bench/repo01998"), n: Some(5) }).await.expect("repos"), ["bench/repo01999", "bench/repo02000"]);
    let _ = c.close().await;
    store.close().await;
    db.drop().await;
}


/// Hot-path throughput on this machine's server: manifest GETs by tag and digest and blob
/// lookups from 16 tasks over one store (run with `--ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn lookup_throughput() {
    let db = TestDb::create().await;
    let store = Arc::new(PostgresStore::connect(&PostgresOptions { max_connections: 16, ..db.options() }).await.expect("connect"));
    let r = repo("bench/app");
    let config = dig("bench config");
    store.commit_blob(&r, &config, 2, "bench", 1).await.expect("commit");
    let bytes = image(&config, &[], "");
    let (md, _) = put(&store, &r, &bytes, &[tag("latest")], 1).await;
    let (per_task, tasks) = (2000, 16);
    let start = std::time::Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (store, r, config, md) = (store.clone(), r.clone(), config.clone(), md.clone());
            tokio::spawn(async move {
                for i in 0..per_task {
                    match (i + t) % 3 {
                        0 => assert!(store.get_manifest(&r, &Reference::Tag(tag("latest"))).await.expect("get").is_some()),
                        1 => assert!(store.get_manifest(&r, &Reference::Digest(md.clone())).await.expect("get").is_some()),
                        _ => assert!(store.repo_blob(&r, &config).await.expect("blob").is_some()),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    let n = per_task * tasks;
    let secs = start.elapsed().as_secs_f64();
    println!("{n} lookups in {secs:.2}s: {:.0}/s", f64::from(n) / secs);
    store.close().await;
    db.drop().await;
}
