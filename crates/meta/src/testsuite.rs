//! The backend-independent test suite every [`MetadataStore`] implementation must pass.
//!
//! Call [`run_all`] on a fresh, empty store. The parts use disjoint repositories, digests and
//! keys, so they can also run one by one. Timestamps: every part uses times around [`T0`] except
//! [`gc`] and [`gc_many`], which work far in the past so that its cutoffs touch nothing else; repository names
//! starting with `zzzz/` are reserved for [`list_repositories`].

// A test suite: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::str::FromStr;

use berth_oci::{manifest, media, Algorithm, Digest, Reference, RepoName, Tag};

use crate::{
    AuditEvent, AuditQuery, BlobCommit, BlobRecord, DeleteOutcome, GcReport, IdentityProviderRecord, MetaError, MetadataStore,
    NewManifest, Page, ProjectRecord, PutManifestOutcome, RobotRecord, UnixTime, UploadRecord, UserRecord,
};

/// The "current" time of the suite's parts (except [`gc`]).
pub const T0: UnixTime = 1_700_000_000;

/// Runs every part of the suite, in order, on `store` (which should start empty).
pub async fn run_all(store: &dyn MetadataStore) {
    ping(store).await;
    blobs(store).await;
    mount(store).await;
    manifests(store).await;
    index_manifests(store).await;
    delete(store).await;
    list_tags(store).await;
    list_repositories(store).await;
    referrers(store).await;
    uploads(store).await;
    users(store).await;
    settings(store).await;
    gc(store).await;
    gc_many(store).await;
    federation(store).await;
    audit(store).await;
    login_failures(store).await;
}

// ---- helpers ----

fn repo(s: &str) -> RepoName {
    RepoName::from_str(s).expect("valid repository name")
}

fn tag(s: &str) -> Tag {
    Tag::from_str(s).expect("valid tag")
}

/// A digest unique to `seed`.
fn dig(seed: &str) -> Digest {
    Digest::compute(Algorithm::Sha256, seed.as_bytes())
}

fn key(seed: &str) -> String {
    format!("key/{seed}")
}

fn page<'a>(last: Option<&'a str>, n: Option<u32>) -> Page<'a> {
    Page { last, n }
}

fn all() -> Page<'static> {
    Page { last: None, n: None }
}

/// Commits the blob of `seed` to `repo` under [`key`]`(seed)`.
async fn push_blob(store: &dyn MetadataStore, r: &RepoName, seed: &str, now: UnixTime) -> (Digest, BlobCommit) {
    let d = dig(seed);
    let c = store.commit_blob(r, &d, seed.len() as u64, &key(seed), now).await.expect("commit_blob");
    (d, c)
}

/// An OCI image manifest with `config` (media type `config_type`) and `layers`; `extra` is
/// spliced into the top-level object (start it with a comma).
fn image_with(config: &Digest, config_type: &str, layers: &[&Digest], extra: &str) -> Vec<u8> {
    let layers: Vec<String> = layers
        .iter()
        .map(|d| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":10}}"#))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{config_type}","digest":"{config}","size":2}},"layers":[{}]{extra}}}"#,
        media::OCI_MANIFEST,
        layers.join(",")
    )
    .into_bytes()
}

fn image(config: &Digest, layers: &[&Digest]) -> Vec<u8> {
    image_with(config, media::OCI_CONFIG, layers, "")
}

/// An OCI index of `children`; `extra` as for [`image_with`].
fn index_with(children: &[&Digest], extra: &str) -> Vec<u8> {
    let children: Vec<String> = children
        .iter()
        .map(|d| format!(r#"{{"mediaType":"{}","digest":"{d}","size":100}}"#, media::OCI_MANIFEST))
        .collect();
    format!(r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{}]{extra}}}"#, media::OCI_INDEX, children.join(","))
        .into_bytes()
}

fn subject_field(subject: &Digest) -> String {
    format!(r#","subject":{{"mediaType":"{}","digest":"{subject}","size":100}}"#, media::OCI_MANIFEST)
}

/// Parses and records `bytes` in `r`; returns its digest and the outcome.
async fn put(
    store: &dyn MetadataStore,
    r: &RepoName,
    bytes: &[u8],
    t: Option<&Tag>,
    now: UnixTime,
) -> (Digest, PutManifestOutcome) {
    let parsed = manifest::parse(bytes, None).expect("suite manifest parses");
    let digest = Digest::compute(Algorithm::Sha256, bytes);
    let outcome = store
        .put_manifest(r, NewManifest { digest: &digest, bytes, parsed: &parsed, tag: t }, now)
        .await
        .expect("put_manifest");
    (digest, outcome)
}

/// Like [`put`], asserting the manifest was stored.
async fn put_ok(store: &dyn MetadataStore, r: &RepoName, bytes: &[u8], t: Option<&Tag>, now: UnixTime) -> Digest {
    let (d, outcome) = put(store, r, bytes, t, now).await;
    assert_eq!(outcome, PutManifestOutcome::Stored, "manifest {d} should be stored");
    d
}

fn sorted(mut v: Vec<Digest>) -> Vec<Digest> {
    v.sort();
    v.dedup();
    v
}

async fn get(store: &dyn MetadataStore, r: &RepoName, reference: Reference) -> Option<crate::ManifestRecord> {
    store.get_manifest(r, &reference).await.expect("get_manifest")
}

async fn tags_of(store: &dyn MetadataStore, r: &RepoName) -> Option<Vec<String>> {
    store.list_tags(r, all()).await.expect("list_tags")
}

// ---- parts ----

/// `ping` answers.
pub async fn ping(store: &dyn MetadataStore) {
    store.ping().await.expect("ping");
}

/// `commit_blob`, `repo_blob`, `unlink_blob`, `key_in_use`.
pub async fn blobs(store: &dyn MetadataStore) {
    let a = repo("suite/blobs/a");
    let b = repo("suite/blobs/b");
    let d = dig("blobs-1");

    assert_eq!(store.repo_blob(&a, &d).await.expect("repo_blob"), None);
    assert!(!store.key_in_use(&key("blobs-1")).await.expect("key_in_use"));

    let (_, c) = push_blob(store, &a, "blobs-1", T0).await;
    assert_eq!(c, BlobCommit::Stored);
    let want = BlobRecord { digest: d.clone(), size: 7, storage_key: key("blobs-1") };
    assert_eq!(store.repo_blob(&a, &d).await.expect("repo_blob"), Some(want.clone()));
    assert!(store.key_in_use(&key("blobs-1")).await.expect("key_in_use"));
    // Not visible from another repository.
    assert_eq!(store.repo_blob(&b, &d).await.expect("repo_blob"), None);

    // A second upload of the same digest keeps the first key, and links it.
    let c = store.commit_blob(&b, &d, 7, "key/blobs-1-again", T0 + 1).await.expect("commit_blob");
    assert_eq!(c, BlobCommit::AlreadyPresent { existing_key: key("blobs-1") });
    assert_eq!(store.repo_blob(&b, &d).await.expect("repo_blob"), Some(want.clone()));
    assert!(!store.key_in_use("key/blobs-1-again").await.expect("key_in_use"));
    // Again in the same repository: still AlreadyPresent.
    let c = store.commit_blob(&a, &d, 7, "key/blobs-1-third", T0 + 2).await.expect("commit_blob");
    assert_eq!(c, BlobCommit::AlreadyPresent { existing_key: key("blobs-1") });
    // Committing under the key already recorded is not a conflict.
    let c = store.commit_blob(&a, &d, 7, &key("blobs-1"), T0 + 3).await.expect("commit_blob");
    assert_eq!(c, BlobCommit::Stored);

    // Unlink from one repository: the other and the record remain.
    assert!(store.unlink_blob(&a, &d).await.expect("unlink_blob"));
    assert!(!store.unlink_blob(&a, &d).await.expect("unlink_blob"));
    assert_eq!(store.repo_blob(&a, &d).await.expect("repo_blob"), None);
    assert_eq!(store.repo_blob(&b, &d).await.expect("repo_blob"), Some(want));
    assert!(store.key_in_use(&key("blobs-1")).await.expect("key_in_use"));
    assert!(!store.unlink_blob(&repo("suite/blobs/unknown"), &d).await.expect("unlink_blob"));

    // Sizes round-trip, including zero and large values.
    let empty = dig("blobs-empty");
    store.commit_blob(&a, &empty, 0, "key/blobs-empty", T0).await.expect("commit_blob");
    assert_eq!(store.repo_blob(&a, &empty).await.expect("repo_blob").map(|r| r.size), Some(0));
    let big = dig("blobs-big");
    let big_size = 5 * 1024 * 1024 * 1024 * 1024_u64;
    store.commit_blob(&a, &big, big_size, "key/blobs-big", T0).await.expect("commit_blob");
    assert_eq!(store.repo_blob(&a, &big).await.expect("repo_blob").map(|r| r.size), Some(big_size));
}

/// `mount_blob`.
pub async fn mount(store: &dyn MetadataStore) {
    let src = repo("suite/mount/src");
    let dst = repo("suite/mount/dst");
    let other = repo("suite/mount/other");
    let (d, _) = push_blob(store, &src, "mount-1", T0).await;
    push_blob(store, &other, "mount-other", T0).await;

    // Unknown source repository, source without the blob, unknown digest: None, nothing linked.
    assert_eq!(store.mount_blob(&dst, &repo("suite/mount/nowhere"), &d, T0).await.expect("mount"), None);
    assert_eq!(store.mount_blob(&dst, &other, &d, T0).await.expect("mount"), None);
    assert_eq!(store.mount_blob(&dst, &src, &dig("mount-unknown"), T0).await.expect("mount"), None);
    assert_eq!(store.repo_blob(&dst, &d).await.expect("repo_blob"), None);
    assert_eq!(tags_of(store, &dst).await, None, "a failed mount must not create the repository");

    let want = BlobRecord { digest: d.clone(), size: 7, storage_key: key("mount-1") };
    assert_eq!(store.mount_blob(&dst, &src, &d, T0 + 1).await.expect("mount"), Some(want.clone()));
    assert_eq!(store.repo_blob(&dst, &d).await.expect("repo_blob"), Some(want.clone()));
    assert_eq!(store.repo_blob(&src, &d).await.expect("repo_blob"), Some(want.clone()));
    // Mounting again is harmless.
    assert_eq!(store.mount_blob(&dst, &src, &d, T0 + 2).await.expect("mount"), Some(want.clone()));
    // A mounted blob can be mounted onwards, and the source may then disappear.
    assert!(store.unlink_blob(&src, &d).await.expect("unlink"));
    assert_eq!(store.mount_blob(&src, &dst, &d, T0 + 3).await.expect("mount"), Some(want));
}

/// `put_manifest` (missing references, idempotence, tag moves) and `get_manifest`.
pub async fn manifests(store: &dyn MetadataStore) {
    let r = repo("suite/manifests");
    let config = dig("manifests-config");
    let layer = dig("manifests-layer");
    let bytes = image(&config, &[&layer]);
    let digest = Digest::compute(Algorithm::Sha256, &bytes);
    let v1 = tag("v1");

    // Nothing pushed yet: everything is missing, and nothing is stored.
    let (_, outcome) = put(store, &r, &bytes, Some(&v1), T0).await;
    let PutManifestOutcome::Missing(missing) = outcome else { panic!("expected Missing, got {outcome:?}") };
    assert_eq!(sorted(missing), sorted(vec![config.clone(), layer.clone()]));
    assert_eq!(get(store, &r, Reference::Digest(digest.clone())).await, None);
    assert_eq!(get(store, &r, Reference::Tag(v1.clone())).await, None);
    assert_eq!(tags_of(store, &r).await, None, "a refused manifest must not create the repository");

    // Config only: the layer is missing.
    push_blob(store, &r, "manifests-config", T0).await;
    let (_, outcome) = put(store, &r, &bytes, Some(&v1), T0).await;
    assert_eq!(outcome, PutManifestOutcome::Missing(vec![layer.clone()]));
    assert_eq!(get(store, &r, Reference::Digest(digest.clone())).await, None);
    assert_eq!(tags_of(store, &r).await, Some(vec![]), "the tag must not be set");

    // A blob linked only to another repository does not count.
    let elsewhere = repo("suite/manifests/elsewhere");
    push_blob(store, &elsewhere, "manifests-layer", T0).await;
    let (_, outcome) = put(store, &r, &bytes, Some(&v1), T0).await;
    assert_eq!(outcome, PutManifestOutcome::Missing(vec![layer.clone()]));

    // A layer listed twice and missing is reported (at least) once.
    let twice = image(&config, &[&dig("manifests-missing"), &dig("manifests-missing")]);
    let (_, outcome) = put(store, &r, &twice, None, T0).await;
    let PutManifestOutcome::Missing(missing) = outcome else { panic!("expected Missing, got {outcome:?}") };
    assert_eq!(sorted(missing), vec![dig("manifests-missing")]);

    // Everything present: stored and tagged.
    push_blob(store, &r, "manifests-layer", T0).await;
    assert_eq!(put_ok(store, &r, &bytes, Some(&v1), T0).await, digest);
    let rec = get(store, &r, Reference::Digest(digest.clone())).await.expect("manifest by digest");
    assert_eq!(rec.digest, digest);
    assert_eq!(rec.bytes, bytes);
    assert_eq!(rec.media_type, media::OCI_MANIFEST);
    assert_eq!(rec.subject, None);
    assert_eq!(get(store, &r, Reference::Tag(v1.clone())).await, Some(rec.clone()));
    assert_eq!(get(store, &r, Reference::Tag(tag("v2"))).await, None);
    // Not visible from another repository.
    assert_eq!(get(store, &elsewhere, Reference::Digest(digest.clone())).await, None);
    assert_eq!(get(store, &repo("suite/manifests/unknown"), Reference::Tag(v1.clone())).await, None);

    // Idempotent: putting it again (with and without a tag) keeps one manifest.
    put_ok(store, &r, &bytes, Some(&v1), T0 + 1).await;
    put_ok(store, &r, &bytes, None, T0 + 2).await;
    assert_eq!(get(store, &r, Reference::Digest(digest.clone())).await, Some(rec.clone()));
    assert_eq!(tags_of(store, &r).await, Some(vec!["v1".to_owned()]));

    // A second tag on the same manifest.
    put_ok(store, &r, &bytes, Some(&tag("latest")), T0 + 3).await;
    assert_eq!(tags_of(store, &r).await, Some(vec!["latest".to_owned(), "v1".to_owned()]));

    // A manifest reusing a layer twice is fine.
    let dup = image(&config, &[&layer, &layer]);
    let dup_digest = put_ok(store, &r, &dup, None, T0 + 4).await;
    assert_eq!(get(store, &r, Reference::Digest(dup_digest.clone())).await.map(|m| m.bytes), Some(dup.clone()));

    // Moving a tag: v1 now names the new manifest; the old one stays reachable by digest.
    let layer2 = push_blob(store, &r, "manifests-layer2", T0).await.0;
    let bytes2 = image(&config, &[&layer2]);
    let digest2 = put_ok(store, &r, &bytes2, Some(&v1), T0 + 5).await;
    let rec2 = get(store, &r, Reference::Tag(v1.clone())).await.expect("v1");
    assert_eq!((rec2.digest.clone(), rec2.bytes.clone()), (digest2.clone(), bytes2));
    assert_eq!(get(store, &r, Reference::Tag(tag("latest"))).await.map(|m| m.digest), Some(digest.clone()));
    assert_eq!(get(store, &r, Reference::Digest(digest.clone())).await, Some(rec));

    // The media type comes from the parsed manifest (Docker schema 2 here).
    let docker = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{config}","size":2}},"layers":[]}}"#,
        media::DOCKER_MANIFEST
    )
    .into_bytes();
    let docker_digest = put_ok(store, &r, &docker, Some(&tag("docker")), T0 + 6).await;
    let rec = get(store, &r, Reference::Tag(tag("docker"))).await.expect("docker tag");
    assert_eq!((rec.digest, rec.media_type.as_str()), (docker_digest, media::DOCKER_MANIFEST));

    // A manifest with a subject records it, even when the subject is not (yet) in the repository.
    let absent = dig("manifests-absent-subject");
    let with_subject = image_with(&config, media::OCI_CONFIG, &[&layer], &subject_field(&absent));
    let ws = put_ok(store, &r, &with_subject, None, T0 + 7).await;
    assert_eq!(get(store, &r, Reference::Digest(ws)).await.and_then(|m| m.subject), Some(absent));
}

/// Indexes: child manifests must be manifests of the same repository.
pub async fn index_manifests(store: &dyn MetadataStore) {
    let r = repo("suite/index");
    let other = repo("suite/index/other");
    let config = push_blob(store, &r, "index-config", T0).await.0;
    let amd = put_ok(store, &r, &image(&config, &[]), None, T0).await;
    let arm_bytes = image_with(&config, media::OCI_CONFIG, &[], r#","annotations":{"arch":"arm64"}"#);
    let arm = Digest::compute(Algorithm::Sha256, &arm_bytes);
    // The same child exists only in another repository: does not count.
    push_blob(store, &other, "index-config", T0).await;
    put_ok(store, &other, &arm_bytes, None, T0).await;

    let idx = index_with(&[&amd, &arm], "");
    let (idx_digest, outcome) = put(store, &r, &idx, Some(&tag("multi")), T0).await;
    assert_eq!(outcome, PutManifestOutcome::Missing(vec![arm.clone()]));
    assert_eq!(get(store, &r, Reference::Tag(tag("multi"))).await, None);

    put_ok(store, &r, &arm_bytes, None, T0).await;
    assert_eq!(put_ok(store, &r, &idx, Some(&tag("multi")), T0).await, idx_digest);
    let rec = get(store, &r, Reference::Tag(tag("multi"))).await.expect("index by tag");
    assert_eq!((rec.digest, rec.media_type.as_str(), rec.bytes), (idx_digest.clone(), media::OCI_INDEX, idx));

    // An index of indexes, and an empty index.
    let outer = put_ok(store, &r, &index_with(&[&idx_digest], ""), Some(&tag("outer")), T0).await;
    assert_eq!(get(store, &r, Reference::Tag(tag("outer"))).await.map(|m| m.digest), Some(outer));
    put_ok(store, &r, &index_with(&[], ""), Some(&tag("empty")), T0).await;
}

/// `delete_tag` and `delete_manifest`.
pub async fn delete(store: &dyn MetadataStore) {
    let r = repo("suite/delete");
    let config = push_blob(store, &r, "delete-config", T0).await.0;
    let m1 = put_ok(store, &r, &image(&config, &[]), Some(&tag("a")), T0).await;
    put_ok(store, &r, &image(&config, &[]), Some(&tag("b")), T0).await;
    let m2 = put_ok(store, &r, &image_with(&config, "application/x-other", &[], ""), Some(&tag("c")), T0).await;

    // delete_tag: the manifest stays.
    assert!(store.delete_tag(&r, &tag("a")).await.expect("delete_tag"));
    assert!(!store.delete_tag(&r, &tag("a")).await.expect("delete_tag"));
    assert!(!store.delete_tag(&r, &tag("never")).await.expect("delete_tag"));
    assert!(!store.delete_tag(&repo("suite/delete/unknown"), &tag("a")).await.expect("delete_tag"));
    assert_eq!(get(store, &r, Reference::Tag(tag("a"))).await, None);
    assert!(get(store, &r, Reference::Digest(m1.clone())).await.is_some());
    assert_eq!(get(store, &r, Reference::Tag(tag("b"))).await.map(|m| m.digest), Some(m1.clone()));

    // delete_manifest: takes every tag pointing at it along.
    put_ok(store, &r, &image(&config, &[]), Some(&tag("a")), T0).await;
    assert!(store.delete_manifest(&r, &m1).await.expect("delete_manifest"));
    assert!(!store.delete_manifest(&r, &m1).await.expect("delete_manifest"));
    assert!(!store.delete_manifest(&repo("suite/delete/unknown"), &m1).await.expect("delete_manifest"));
    assert_eq!(get(store, &r, Reference::Digest(m1.clone())).await, None);
    assert_eq!(get(store, &r, Reference::Tag(tag("a"))).await, None);
    assert_eq!(get(store, &r, Reference::Tag(tag("b"))).await, None);
    assert_eq!(tags_of(store, &r).await, Some(vec!["c".to_owned()]));
    assert!(get(store, &r, Reference::Digest(m2.clone())).await.is_some());

    // It can be pushed again afterwards.
    put_ok(store, &r, &image(&config, &[]), Some(&tag("a")), T0 + 1).await;
    assert_eq!(get(store, &r, Reference::Tag(tag("a"))).await.map(|m| m.digest), Some(m1.clone()));

    // With its last tag deleted, a repository that still has manifests lists no tags.
    for t in ["a", "c"] {
        assert!(store.delete_tag(&r, &tag(t)).await.expect("delete_tag"));
    }
    assert_eq!(tags_of(store, &r).await, Some(vec![]));

    // Deleting a manifest referenced by an index in the same repository is allowed.
    let idx = put_ok(store, &r, &index_with(&[&m2], ""), Some(&tag("idx")), T0).await;
    assert!(store.delete_manifest(&r, &m2).await.expect("delete_manifest"));
    assert!(get(store, &r, Reference::Digest(idx)).await.is_some());
}

/// `list_tags`: order, pagination, unknown repositories.
pub async fn list_tags(store: &dyn MetadataStore) {
    let r = repo("suite/tags");
    assert_eq!(tags_of(store, &r).await, None);
    // A repository with only a blob link exists and has no tags.
    let config = push_blob(store, &r, "tags-config", T0).await.0;
    assert_eq!(tags_of(store, &r).await, Some(vec![]));

    let m = put_ok(store, &r, &image(&config, &[]), None, T0).await;
    let names = ["v2", "a", "B", "b", "a.1", "_x", "Z", "v1", "v10", "a-1", "A"];
    for (i, n) in names.iter().enumerate() {
        put_ok(store, &r, &image(&config, &[]), Some(&tag(n)), T0 + i as i64).await;
    }
    // Byte order: uppercase, then '_', then lowercase; '-' < '.' < digits.
    let want: Vec<String> =
        ["A", "B", "Z", "_x", "a", "a-1", "a.1", "b", "v1", "v10", "v2"].iter().map(|s| s.to_string()).collect();
    assert_eq!(tags_of(store, &r).await, Some(want.clone()));
    assert!(get(store, &r, Reference::Tag(tag("v10"))).await.is_some_and(|x| x.digest == m));

    // Pages of 3 concatenate to the full list.
    let mut got = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let p = store.list_tags(&r, page(last.as_deref(), Some(3))).await.expect("list_tags").expect("known repo");
        assert!(p.len() <= 3);
        got.extend(p.iter().cloned());
        if p.len() < 3 {
            break;
        }
        last = p.last().cloned();
    }
    assert_eq!(got, want);

    let list = |last: Option<&'static str>, n: Option<u32>| {
        let r = r.clone();
        async move { store.list_tags(&r, page(last, n)).await.expect("list_tags").expect("known repo") }
    };
    assert_eq!(list(None, Some(2)).await, vec!["A", "B"]);
    assert_eq!(list(Some("a"), Some(2)).await, vec!["a-1", "a.1"], "last is exclusive");
    assert_eq!(list(Some("aa"), None).await, vec!["b", "v1", "v10", "v2"], "last need not be a tag");
    assert_eq!(list(Some("v2"), None).await, Vec::<String>::new());
    assert_eq!(list(Some("zzz"), Some(5)).await, Vec::<String>::new());
    assert_eq!(list(None, Some(0)).await, Vec::<String>::new());
    assert_eq!(list(None, Some(100)).await, want);
    assert_eq!(store.list_tags(&repo("suite/tags/unknown"), page(None, Some(1))).await.expect("list_tags"), None);
}

/// `list_repositories`: which repositories exist, order, pagination.
pub async fn list_repositories(store: &dyn MetadataStore) {
    // Only repositories under `zzzz/` sort after "zzzz/list"; no other part uses them.
    let after = Some("zzzz/list");
    push_blob(store, &repo("zzzz/list/b"), "repos-b", T0).await;
    let config = push_blob(store, &repo("zzzz/list/a"), "repos-a", T0).await.0;
    put_ok(store, &repo("zzzz/list/a"), &image(&config, &[]), Some(&tag("x")), T0).await;
    // A repository whose only manifest has no tag, and which lost its blob link.
    let c = repo("zzzz/list/a/c");
    let cfg = push_blob(store, &c, "repos-c", T0).await.0;
    put_ok(store, &c, &image(&cfg, &[]), None, T0).await;
    assert!(store.unlink_blob(&c, &cfg).await.expect("unlink"));
    push_blob(store, &repo("zzzz/list/a-b"), "repos-ab", T0).await;
    push_blob(store, &repo("zzzz/list/a.b"), "repos-a.b", T0).await;
    // Not repositories: an upload session only; a repository that lost its only link; a refused
    // manifest; a failed mount.
    store.create_upload("repos-upload-only", &repo("zzzz/list/upload"), T0).await.expect("create_upload");
    let gone = repo("zzzz/list/gone");
    let gd = push_blob(store, &gone, "repos-gone", T0).await.0;
    assert!(store.unlink_blob(&gone, &gd).await.expect("unlink"));
    let (_, outcome) = put(store, &repo("zzzz/list/refused"), &image(&config, &[]), None, T0).await;
    assert!(matches!(outcome, PutManifestOutcome::Missing(_)));
    assert_eq!(store.mount_blob(&repo("zzzz/list/mount"), &gone, &gd, T0).await.expect("mount"), None);

    let want = ["zzzz/list/a", "zzzz/list/a-b", "zzzz/list/a.b", "zzzz/list/a/c", "zzzz/list/b"];
    let got = store.list_repositories(page(after, None)).await.expect("list_repositories");
    assert_eq!(got, want);
    assert_eq!(store.list_repositories(page(after, Some(2))).await.expect("list"), want[..2]);
    assert_eq!(store.list_repositories(page(Some("zzzz/list/a-b"), Some(2))).await.expect("list"), want[2..4]);
    assert_eq!(store.list_repositories(page(Some("zzzz/list/a/c"), Some(2))).await.expect("list"), want[4..]);
    assert_eq!(store.list_repositories(page(Some("zzzz/list/b"), None)).await.expect("list"), Vec::<String>::new());
    assert_eq!(store.list_repositories(page(after, Some(0))).await.expect("list"), Vec::<String>::new());

    // The whole listing is sorted, without duplicates, and includes the suite's other repositories.
    let everything = store.list_repositories(all()).await.expect("list");
    let mut check = everything.clone();
    check.sort();
    check.dedup();
    assert_eq!(everything, check);
    assert!(everything.ends_with(&want.map(String::from)));
    let mut paged = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let p = store.list_repositories(page(last.as_deref(), Some(2))).await.expect("list");
        paged.extend(p.iter().cloned());
        if p.len() < 2 {
            break;
        }
        last = p.last().cloned();
    }
    assert_eq!(paged, everything);
}

/// `referrers`, with and without an artifact-type filter.
pub async fn referrers(store: &dyn MetadataStore) {
    let r = repo("suite/referrers");
    let config = push_blob(store, &r, "referrers-config", T0).await.0;
    let empty = push_blob(store, &r, "referrers-{}", T0).await.0;
    let subject = put_ok(store, &r, &image(&config, &[]), Some(&tag("app")), T0).await;

    // An SBOM with artifactType and annotations.
    let sbom_bytes = image_with(
        &empty,
        media::OCI_EMPTY,
        &[&config],
        &format!(
            r#",
            "artifactType":"application/vnd.example.sbom","annotations":{{"org.example.kind":"sbom","n":"1"}}{}"#,
            subject_field(&subject)
        ),
    );
    let sbom = put_ok(store, &r, &sbom_bytes, None, T0).await;
    // A signature without artifactType: the config media type stands in.
    let sig_bytes = image_with(&empty, "application/vnd.example.sig.config", &[], &subject_field(&subject));
    let sig = put_ok(store, &r, &sig_bytes, None, T0).await;
    // An index referrer.
    let idx_bytes =
        index_with(&[&sig], &format!(r#","artifactType":"application/vnd.example.bundle"{}"#, subject_field(&subject)));
    let idx = put_ok(store, &r, &idx_bytes, None, T0).await;
    // Not a referrer of `subject`: no subject, or another subject.
    put_ok(store, &r, &image(&empty, &[]), None, T0).await;
    let other_subject = dig("referrers-absent");
    let dangling_bytes = image_with(&empty, media::OCI_EMPTY, &[], &subject_field(&other_subject));
    let dangling = put_ok(store, &r, &dangling_bytes, None, T0).await;

    let mut got = store.referrers(&r, &subject, None).await.expect("referrers");
    got.sort_by(|a, b| a.digest.cmp(&b.digest));
    let mut want = vec![
        crate::Referrer {
            digest: sbom.clone(),
            media_type: media::OCI_MANIFEST.into(),
            size: sbom_bytes.len() as u64,
            artifact_type: Some("application/vnd.example.sbom".into()),
            annotations: Some(serde_json::json!({"org.example.kind": "sbom", "n": "1"})),
        },
        crate::Referrer {
            digest: sig.clone(),
            media_type: media::OCI_MANIFEST.into(),
            size: sig_bytes.len() as u64,
            artifact_type: Some("application/vnd.example.sig.config".into()),
            annotations: None,
        },
        crate::Referrer {
            digest: idx.clone(),
            media_type: media::OCI_INDEX.into(),
            size: idx_bytes.len() as u64,
            artifact_type: Some("application/vnd.example.bundle".into()),
            annotations: None,
        },
    ];
    want.sort_by(|a, b| a.digest.cmp(&b.digest));
    assert_eq!(got, want);

    // Filtered.
    let got = store.referrers(&r, &subject, Some("application/vnd.example.sbom")).await.expect("referrers");
    assert_eq!(got.iter().map(|x| x.digest.clone()).collect::<Vec<_>>(), vec![sbom.clone()]);
    let got = store.referrers(&r, &subject, Some("application/vnd.example.sig.config")).await.expect("referrers");
    assert_eq!(got.iter().map(|x| x.digest.clone()).collect::<Vec<_>>(), vec![sig.clone()]);
    assert!(store.referrers(&r, &subject, Some("application/x-none")).await.expect("referrers").is_empty());

    // Referrers may precede their subject.
    let got = store.referrers(&r, &other_subject, None).await.expect("referrers");
    assert_eq!(got.iter().map(|x| x.digest.clone()).collect::<Vec<_>>(), vec![dangling]);
    // Other repositories and subjects without referrers.
    assert!(store.referrers(&repo("suite/referrers/other"), &subject, None).await.expect("referrers").is_empty());
    assert!(store.referrers(&r, &sbom, None).await.expect("referrers").is_empty());

    // A deleted referrer disappears; re-putting one does not duplicate it.
    assert!(store.delete_manifest(&r, &sbom).await.expect("delete_manifest"));
    put_ok(store, &r, &sig_bytes, None, T0 + 1).await;
    let mut got: Vec<Digest> =
        store.referrers(&r, &subject, None).await.expect("referrers").into_iter().map(|x| x.digest).collect();
    got.sort();
    assert_eq!(got, sorted(vec![sig, idx]));
}

/// Upload sessions.
pub async fn uploads(store: &dyn MetadataStore) {
    let r = repo("suite/uploads");
    assert_eq!(store.get_upload("uploads-1").await.expect("get_upload"), None);
    store.create_upload("uploads-1", &r, T0).await.expect("create_upload");
    let want = UploadRecord { id: "uploads-1".into(), repo: r.clone(), created: T0, updated: T0 };
    assert_eq!(store.get_upload("uploads-1").await.expect("get_upload"), Some(want.clone()));

    store.touch_upload("uploads-1", T0 + 30).await.expect("touch_upload");
    let got = store.get_upload("uploads-1").await.expect("get_upload");
    assert_eq!(got, Some(UploadRecord { updated: T0 + 30, ..want }));
    // Touching an unknown session is not an error.
    store.touch_upload("uploads-unknown", T0).await.expect("touch_upload");
    assert_eq!(store.get_upload("uploads-unknown").await.expect("get_upload"), None);

    assert!(store.delete_upload("uploads-1").await.expect("delete_upload"));
    assert!(!store.delete_upload("uploads-1").await.expect("delete_upload"));
    assert_eq!(store.get_upload("uploads-1").await.expect("get_upload"), None);
}

/// Local users.
pub async fn users(store: &dyn MetadataStore) {
    let before = store.count_users().await.expect("count_users");
    assert_eq!(store.get_user("suite-alice").await.expect("get_user"), None);
    let alice = UserRecord { name: "suite-alice".into(), password_hash: "$argon2id$v=19$a".into(), admin: false };
    store.put_user(&alice).await.expect("put_user");
    assert_eq!(store.get_user("suite-alice").await.expect("get_user"), Some(alice.clone()));
    assert_eq!(store.count_users().await.expect("count_users"), before + 1);

    // Replacing keeps one user.
    let alice2 = UserRecord { password_hash: "$argon2id$v=19$b".into(), admin: true, ..alice };
    store.put_user(&alice2).await.expect("put_user");
    assert_eq!(store.get_user("suite-alice").await.expect("get_user"), Some(alice2));
    assert_eq!(store.count_users().await.expect("count_users"), before + 1);

    let bob = UserRecord { name: "suite-bob".into(), password_hash: "h".into(), admin: true };
    store.put_user(&bob).await.expect("put_user");
    assert_eq!(store.count_users().await.expect("count_users"), before + 2);
    assert_eq!(store.get_user("suite-bob").await.expect("get_user"), Some(bob));
    // Names are exact.
    assert_eq!(store.get_user("Suite-Bob").await.expect("get_user"), None);
}

/// Key-value settings, including concurrent initialisation.
pub async fn settings(store: &dyn MetadataStore) {
    assert_eq!(store.get_setting("suite.key").await.expect("get_setting"), None);
    assert_eq!(store.init_setting("suite.key", "first").await.expect("init_setting"), "first");
    assert_eq!(store.init_setting("suite.key", "second").await.expect("init_setting"), "first");
    assert_eq!(store.get_setting("suite.key").await.expect("get_setting").as_deref(), Some("first"));
    assert_eq!(store.init_setting("suite.other", "").await.expect("init_setting"), "");

    // Starters racing: all agree on one of the offered values.
    let (a, b, c, d) = tokio::join!(
        store.init_setting("suite.race", "a"),
        store.init_setting("suite.race", "b"),
        store.init_setting("suite.race", "c"),
        store.init_setting("suite.race", "d"),
    );
    let got = [a, b, c, d].map(|x| x.expect("init_setting"));
    assert!(["a", "b", "c", "d"].contains(&got[0].as_str()));
    assert!(got.iter().all(|x| *x == got[0]), "racing init_setting disagreed: {got:?}");
    assert_eq!(store.get_setting("suite.race").await.expect("get_setting"), Some(got[0].clone()));
}

/// Garbage collection: links, records and upload sessions, with their cutoffs.
///
/// Uses times around 100..300 and cutoffs of 200, far below [`T0`], so that it collects only
/// what it created itself.
pub async fn gc(store: &dyn MetadataStore) {
    let r = repo("suite/gc");
    let r2 = repo("suite/gc/two");
    let r3 = repo("suite/gc/three");
    let (old, new, cutoff) = (100, 300, 200);

    // A: old link, referenced by a manifest: survives.
    let a = push_blob(store, &r, "gc-a", old).await.0;
    let m = put_ok(store, &r, &image(&a, &[]), Some(&tag("keep")), old).await;
    // B: old unreferenced link: link and record go.
    let b = push_blob(store, &r, "gc-b", old).await.0;
    // C: old link refreshed by a second commit: survives.
    let c = push_blob(store, &r, "gc-c", old).await.0;
    let (_, again) = store.commit_blob(&r, &c, 4, "key/gc-c-again", new).await.map(|x| ((), x)).expect("commit");
    assert_eq!(again, BlobCommit::AlreadyPresent { existing_key: key("gc-c") });
    // D: old link in r, but referenced in r2: the r link goes, the record stays.
    let d = push_blob(store, &r, "gc-d", old).await.0;
    push_blob(store, &r2, "gc-d", old).await;
    put_ok(store, &r2, &image(&d, &[]), None, old).await;
    // E: recent unreferenced link: survives.
    let e = push_blob(store, &r, "gc-e", new).await.0;
    // F: record whose only link was removed by hand: the record goes.
    let f = push_blob(store, &r, "gc-f", old).await.0;
    assert!(store.unlink_blob(&r, &f).await.expect("unlink"));
    // G: old link in r; the record was used recently through r3 (then unlinked there): the r link
    // goes, the record stays until it too is old.
    let g = push_blob(store, &r, "gc-g", old).await.0;
    push_blob(store, &r3, "gc-g", new).await;
    assert!(store.unlink_blob(&r3, &g).await.expect("unlink"));
    // H: old link touched by a manifest put recently (then deleted): survives.
    let h = push_blob(store, &r, "gc-h", old).await.0;
    let hm = put_ok(store, &r, &image(&h, &[]), None, new).await;
    assert!(store.delete_manifest(&r, &hm).await.expect("delete_manifest"));
    // I: old link mounted again recently into r: survives.
    let i = push_blob(store, &r, "gc-i", old).await.0;
    push_blob(store, &r2, "gc-i", old).await;
    assert!(store.mount_blob(&r, &r2, &i, new).await.expect("mount").is_some());

    // Upload sessions: old, old but touched, recent.
    store.create_upload("gc-upload-old", &r, old).await.expect("create_upload");
    store.create_upload("gc-upload-touched", &r, old).await.expect("create_upload");
    store.touch_upload("gc-upload-touched", new).await.expect("touch_upload");
    store.create_upload("gc-upload-new", &r, new).await.expect("create_upload");

    let mut report = store.collect_garbage(cutoff, cutoff).await.expect("collect_garbage");
    report.deleted_keys.sort();
    report.stale_uploads.sort();
    assert_eq!(
        report,
        GcReport {
            links_removed: 4, // B, D and G in r; I in r2 (pushed there at `old`, never referenced)
            deleted_keys: vec![key("gc-b"), key("gc-f")],
            stale_uploads: vec!["gc-upload-old".into()],
        }
    );

    let linked = |repo: RepoName, d: Digest| async move { store.repo_blob(&repo, &d).await.expect("repo_blob").is_some() };
    assert!(linked(r.clone(), a.clone()).await);
    assert!(!linked(r.clone(), b.clone()).await);
    assert!(linked(r.clone(), c.clone()).await);
    assert!(!linked(r.clone(), d.clone()).await);
    assert!(linked(r2.clone(), d.clone()).await);
    assert!(linked(r.clone(), e.clone()).await);
    assert!(!linked(r.clone(), g.clone()).await);
    assert!(linked(r.clone(), h.clone()).await);
    assert!(linked(r.clone(), i.clone()).await);
    assert!(!linked(r2.clone(), i.clone()).await);
    for (k, in_use) in
        [("gc-a", true), ("gc-b", false), ("gc-c", true), ("gc-d", true), ("gc-e", true), ("gc-f", false), ("gc-g", true)]
    {
        assert_eq!(store.key_in_use(&key(k)).await.expect("key_in_use"), in_use, "key_in_use({k})");
    }
    assert!(store.get_manifest(&r, &Reference::Tag(tag("keep"))).await.expect("get").is_some());
    assert!(store.get_upload("gc-upload-old").await.expect("get_upload").is_none());
    assert!(store.get_upload("gc-upload-touched").await.expect("get_upload").is_some());
    assert!(store.get_upload("gc-upload-new").await.expect("get_upload").is_some());

    // A second pass finds nothing more.
    assert_eq!(store.collect_garbage(cutoff, cutoff).await.expect("collect_garbage"), GcReport::default());

    // Once its manifest is deleted, A's old link is collectable, and so is its record.
    assert!(store.delete_manifest(&r, &m).await.expect("delete_manifest"));
    let report = store.collect_garbage(cutoff, cutoff).await.expect("collect_garbage");
    assert_eq!(report, GcReport { links_removed: 1, deleted_keys: vec![key("gc-a")], stale_uploads: vec![] });
    assert!(!linked(r.clone(), a).await);

    // A later cutoff collects what became old: the unreferenced links of C, E, H and I in r (D
    // stays referenced in r2); then the records of C, E, G, H and I.
    let mut report = store.collect_garbage(new + 1, new + 1).await.expect("collect_garbage");
    report.deleted_keys.sort();
    report.stale_uploads.sort();
    assert_eq!(report.links_removed, 4);
    assert_eq!(report.deleted_keys, ["gc-c", "gc-e", "gc-g", "gc-h", "gc-i"].map(key));
    assert_eq!(report.stale_uploads, vec!["gc-upload-new".to_owned(), "gc-upload-touched".to_owned()]);
    assert!(linked(r2.clone(), d).await);
    assert!(store.key_in_use(&key("gc-d")).await.expect("key_in_use"));
    for (repo, digest) in [(&r, &c), (&r, &e), (&r, &h), (&r, &i), (&r2, &i)] {
        assert!(!linked(repo.clone(), digest.clone()).await);
    }
}

/// Garbage collection of more rows than a backend is likely to handle in one batch.
///
/// Uses times around 10..20 and cutoffs of 50; run it after [`gc`] (or on an empty store).
pub async fn gc_many(store: &dyn MetadataStore) {
    const PER_REPO: usize = 300;
    let repos = [repo("suite/gcmany/a"), repo("suite/gcmany/b")];
    let mut kept = Vec::new();
    let mut want_keys = Vec::new();
    for (ri, r) in repos.iter().enumerate() {
        let mut layers = Vec::new();
        for i in 0..PER_REPO {
            let seed = format!("gcmany-{ri}-{i}");
            let (d, c) = push_blob(store, r, &seed, 10).await;
            assert_eq!(c, BlobCommit::Stored);
            // Every 50th blob is referenced by a manifest and survives.
            if i % 50 == 0 {
                layers.push(d);
            } else {
                want_keys.push(key(&seed));
            }
        }
        let config = layers.remove(0);
        let refs: Vec<&Digest> = layers.iter().collect();
        put_ok(store, r, &image(&config, &refs), Some(&tag("keep")), 10).await;
        kept.push((r.clone(), config));
        kept.extend(layers.into_iter().map(|d| (r.clone(), d)));
    }
    let mut want_uploads = Vec::new();
    for i in 0..(2 * PER_REPO) {
        let id = format!("gcmany-upload-{i:04}");
        store.create_upload(&id, &repos[0], 10).await.expect("create_upload");
        want_uploads.push(id);
    }
    store.create_upload("gcmany-upload-fresh", &repos[0], 60).await.expect("create_upload");

    let mut report = store.collect_garbage(50, 50).await.expect("collect_garbage");
    report.deleted_keys.sort();
    report.stale_uploads.sort();
    want_keys.sort();
    assert_eq!(report.links_removed, want_keys.len() as u64);
    assert_eq!(report.deleted_keys, want_keys);
    assert_eq!(report.stale_uploads, want_uploads);
    for (r, d) in &kept {
        assert!(store.repo_blob(r, d).await.expect("repo_blob").is_some(), "{d} survives in {r}");
    }
    assert!(store.get_upload("gcmany-upload-fresh").await.expect("get_upload").is_some());
    assert_eq!(store.collect_garbage(50, 50).await.expect("collect_garbage"), GcReport::default());
}

// ---- projects, robots, identity providers ----

fn robot(name: &str, project: Option<&str>, idp: Option<&str>, secret: Option<&str>) -> RobotRecord {
    RobotRecord {
        name: name.into(),
        project: project.map(Into::into),
        description: String::new(),
        disabled: false,
        expires_at: None,
        secret_hash: secret.map(Into::into),
        identity_provider: idp.map(Into::into),
        rules: serde_json::json!([{"claim": "repository", "equals": "o/r"}]),
        permissions: serde_json::json!([{"repositories": "*", "actions": ["pull"]}]),
        created_at: 100,
        updated_at: 100,
    }
}

async fn federation(store: &dyn MetadataStore) {
    let g0 = store.federation_generation().await.unwrap();
    // Projects.
    let p = ProjectRecord { name: "fedproj".into(), public: false, created_at: 10 };
    assert!(store.create_project(&p).await.unwrap());
    assert!(!store.create_project(&p).await.unwrap(), "second create reports the existing project");
    let g1 = store.federation_generation().await.unwrap();
    assert!(g1 > g0, "creating a project bumps the generation");
    store.put_project(&ProjectRecord { name: "fedproj".into(), public: true, created_at: 99 }).await.unwrap();
    let got = store.get_project("fedproj").await.unwrap().unwrap();
    assert_eq!((got.public, got.created_at), (true, 10), "put keeps the creation time");
    assert!(store.list_projects().await.unwrap().iter().any(|p| p.name == "fedproj"));
    assert_eq!(store.get_project("nope").await.unwrap(), None);
    let g2 = store.federation_generation().await.unwrap();
    assert!(g2 > g1);
    let _ = store.list_projects().await.unwrap();
    assert_eq!(store.federation_generation().await.unwrap(), g2, "reads do not bump the generation");

    // Identity providers.
    let idp = IdentityProviderRecord { name: "fedidp".into(), config: serde_json::json!({"name": "fedidp", "issuer": "https://i"}), created_at: 5, updated_at: 5 };
    store.put_identity_provider(&idp).await.unwrap();
    store
        .put_identity_provider(&IdentityProviderRecord { config: serde_json::json!({"name": "fedidp", "issuer": "https://j"}), created_at: 50, updated_at: 50, ..idp.clone() })
        .await
        .unwrap();
    let got = store.get_identity_provider("fedidp").await.unwrap().unwrap();
    assert_eq!((got.created_at, got.updated_at, got.config["issuer"].as_str()), (5, 50, Some("https://j")));
    assert_eq!(store.list_identity_providers().await.unwrap().len(), 1);

    // Robots: foreign keys and the secret/provider rule.
    let fed = robot("robot$fedproj+ci", Some("fedproj"), Some("fedidp"), None);
    store.put_robot(&fed).await.unwrap();
    let e = store.put_robot(&robot("robot$ghost+x", Some("ghost"), None, Some("h"))).await.unwrap_err();
    assert!(matches!(&e, MetaError::Conflict(m) if m.contains("ghost")), "{e}");
    let e = store.put_robot(&robot("robot$y", None, Some("nosuchidp"), None)).await.unwrap_err();
    assert!(matches!(&e, MetaError::Conflict(m) if m.contains("nosuchidp")), "{e}");
    let e = store.put_robot(&robot("robot$z", None, Some("fedidp"), Some("h"))).await.unwrap_err();
    assert!(matches!(&e, MetaError::Conflict(m) if m.contains("both")), "{e}");
    store.put_robot(&robot("robot$sys", None, None, Some("hash"))).await.unwrap();
    let g3 = store.federation_generation().await.unwrap();
    store.put_robot(&RobotRecord { description: "changed".into(), created_at: 999, updated_at: 200, ..fed.clone() }).await.unwrap();
    assert!(store.federation_generation().await.unwrap() > g3, "updating a robot bumps the generation");
    let got = store.get_robot("robot$fedproj+ci").await.unwrap().unwrap();
    assert_eq!((got.description.as_str(), got.created_at, got.updated_at), ("changed", 100, 200));
    assert_eq!(got.rules, fed.rules);
    let names = |v: Vec<RobotRecord>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(names(store.list_robots(Some("fedproj")).await.unwrap()), vec!["robot$fedproj+ci"]);
    assert_eq!(names(store.list_robots(None).await.unwrap()), vec!["robot$fedproj+ci", "robot$sys"]);
    assert_eq!(names(store.list_robots_by_provider("fedidp").await.unwrap()), vec!["robot$fedproj+ci"]);
    assert!(store.list_robots_by_provider("other").await.unwrap().is_empty());

    // Deleting what robots still use is refused.
    assert!(matches!(store.delete_project("fedproj").await.unwrap(), DeleteOutcome::InUse(m) if m.contains("robot$fedproj+ci")));
    assert!(matches!(store.delete_identity_provider("fedidp").await.unwrap(), DeleteOutcome::InUse(_)));
    assert!(store.delete_robot("robot$fedproj+ci").await.unwrap());
    assert!(!store.delete_robot("robot$fedproj+ci").await.unwrap());
    assert_eq!(store.delete_identity_provider("fedidp").await.unwrap(), DeleteOutcome::Deleted);
    assert_eq!(store.delete_identity_provider("fedidp").await.unwrap(), DeleteOutcome::NotFound);
    let before = store.federation_generation().await.unwrap();
    assert_eq!(store.delete_project("fedproj").await.unwrap(), DeleteOutcome::Deleted);
    assert!(store.federation_generation().await.unwrap() > before);
    assert_eq!(store.delete_project("fedproj").await.unwrap(), DeleteOutcome::NotFound);
    assert!(store.delete_robot("robot$sys").await.unwrap());
}

fn event(t: i64, action: &str, result: &str, robots: &[&str], repo: Option<&str>, provider: Option<&str>) -> AuditEvent {
    AuditEvent {
        id: 0,
        time_ms: t,
        action: action.into(),
        result: result.into(),
        principal: if robots.is_empty() { "admin".into() } else { robots.join(",") },
        robots: robots.iter().map(|r| r.to_string()).collect(),
        provider: provider.map(Into::into),
        subject: Some("sub".into()),
        jti: Some(format!("jti-{t}")),
        claims: Some(serde_json::json!({"repository": "o/r"})),
        repository: repo.map(Into::into),
        reference: Some("v1".into()),
        client: Some("127.0.0.1".into()),
        message: None,
    }
}

async fn audit(store: &dyn MetadataStore) {
    let events = vec![
        event(1000, "token", "ok", &["robot$a"], None, Some("gh")),
        event(2000, "push", "ok", &["robot$a", "robot$b"], Some("lib/app"), Some("gh")),
        event(3000, "pull", "denied", &["robot$ab"], Some("lib/app"), Some("gl")),
        event(4000, "pull", "ok", &[], Some("lib/web"), None),
    ];
    store.append_audit(&events).await.unwrap();
    store.append_audit(&[]).await.unwrap();
    let q = |f: AuditQuery| async move { store.query_audit(&f).await.unwrap() };
    let all = q(AuditQuery::default()).await;
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(all[3].claims, events[0].claims);
    assert_eq!(all[2].robots, vec!["robot$a", "robot$b"]);
    let times = |v: Vec<AuditEvent>| v.into_iter().map(|e| e.time_ms).collect::<Vec<_>>();
    assert_eq!(times(q(AuditQuery { robot: Some("robot$a".into()), ..Default::default() }).await), vec![2000, 1000], "robot filter is exact");
    assert_eq!(times(q(AuditQuery { robot: Some("admin".into()), ..Default::default() }).await), vec![4000], "or the principal");
    assert_eq!(times(q(AuditQuery { repository: Some("lib/app".into()), ..Default::default() }).await), vec![3000, 2000]);
    assert_eq!(times(q(AuditQuery { provider: Some("gl".into()), ..Default::default() }).await), vec![3000]);
    assert_eq!(times(q(AuditQuery { result: Some("denied".into()), ..Default::default() }).await), vec![3000]);
    assert_eq!(times(q(AuditQuery { action: Some("pull".into()), ..Default::default() }).await), vec![4000, 3000]);
    assert_eq!(times(q(AuditQuery { since_ms: Some(2000), until_ms: Some(4000), ..Default::default() }).await), vec![3000, 2000]);
    let page1 = q(AuditQuery { limit: 2, ..Default::default() }).await;
    assert_eq!(times(page1.clone()), vec![4000, 3000]);
    let page2 = q(AuditQuery { limit: 2, before_id: Some(page1[1].id), ..Default::default() }).await;
    assert_eq!(times(page2), vec![2000, 1000]);
    let many: Vec<AuditEvent> = (0..1100).map(|i| event(10_000 + i, "pull", "ok", &[], None, None)).collect();
    store.append_audit(&many).await.unwrap();
    assert_eq!(q(AuditQuery { limit: 5000, ..Default::default() }).await.len(), 1000, "limit is capped");
    assert_eq!(store.prune_audit(10_000).await.unwrap(), 4);
    assert_eq!(q(AuditQuery { robot: Some("robot$a".into()), ..Default::default() }).await.len(), 0);
    assert_eq!(store.prune_audit(i64::MAX).await.unwrap(), 1100);
}

async fn login_failures(store: &dyn MetadataStore) {
    assert_eq!(store.login_failures("addr:1", 300).await.unwrap(), 0);
    assert_eq!(store.record_login_failure("addr:1", 300).await.unwrap(), 1);
    assert_eq!(store.record_login_failure("addr:1", 300).await.unwrap(), 2);
    assert_eq!(store.record_login_failure("addr:1", 600).await.unwrap(), 1, "a new window starts at 1");
    assert_eq!(store.record_login_failure("account:x", 300).await.unwrap(), 1, "keys are separate");
    assert_eq!(store.login_failures("addr:1", 300).await.unwrap(), 2);
    assert_eq!(store.prune_login_failures(600).await.unwrap(), 2);
    assert_eq!(store.login_failures("addr:1", 300).await.unwrap(), 0);
    assert_eq!(store.login_failures("addr:1", 600).await.unwrap(), 1);
}
