//! The backend-independent test suite every [`MetadataStore`] implementation must pass.
//!
//! Compiled for this crate's tests and, for other crates (another backend), with the cargo
//! feature `testsuite`; never in release binaries.
//!
//! Call [`run_all`] on a fresh, empty store. The parts use disjoint repositories, digests and
//! keys, so they can also run one by one. Timestamps: every part uses times around [`T0`] except
//! [`gc`] and [`gc_many`], which work far in the past so that its cutoffs touch nothing else, and
//! [`gc_race`], which works at 1000..2000 (between them and [`T0`]); repository names starting
//! with `zzzz/` are reserved for [`list_repositories`].
//!
//! The federation parts ([`projects`], [`robots`], [`identity_providers`],
//! [`federation_generation`], [`creates`], [`apply`]) name their rows `suite-…`/`robot$suite-…`,
//! compare listings after keeping only their own names, and delete what they created. The audit
//! parts each keep to a window of event times and bound their queries by it; [`audit_prune`]
//! works below every other window. [`login_failures`] prunes only windows below [`T0`] that it
//! created.
//!
//! The people parts ([`people`], [`tokens`], [`auth_requests`]) name their users, tokens and
//! requests `suite-people-…`, `suite-tok-…` and `suite-auth-…` and delete what they create;
//! [`tokens`] asserts exact answers of `tokens_to_check` and [`auth_requests`] counts every
//! pending request, so they need no other part's tokens or pending requests in the store (no
//! other part leaves any). [`auth_requests`] and [`auth_request_race`] work at times far above
//! [`T0`] (every other request has expired by then).
//!
//! The race parts ([`run_races`]: [`upload_claim_race`], [`create_race`], [`gc_race`],
//! [`auth_request_race`]) run many writers at once, spread over two handles on one database (two
//! processes), and assert exact outcomes (exactly one winner; a pushed manifest never loses its
//! blob; a login in progress is taken once; the bound on pending logins holds), so that a backend
//! with weaker isolation than SQLite's single writer fails them. They need no other writer on the
//! database meanwhile (they count generation bumps), and can run again on the same database.

// A test suite: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::str::FromStr;

use berth_oci::{manifest, media, Algorithm, Digest, Reference, RepoName, Tag};
use futures_util::future::join_all;

use crate::{
    ApplyAction, ApplyBatch, ApplyOutcome, AuditEvent, AuditQuery, AuthRequest, BlobCommit, BlobRecord, DeleteOutcome, GcReport, IdentityProviderRecord, MemberRecord,
    MetaError, MetadataStore, NewManifest, Page, ProjectRecord, PutManifestOutcome, RobotRecord, TokenKind, TokenRecord, UnixTime, UploadClaim, UploadRecord, UserIdentity,
    UserRecord,
};

/// The "current" time of the suite's parts (except [`gc`]).
pub const T0: UnixTime = 1_700_000_000;

/// Runs every part of the suite, in order, on `store` (which should start empty).
pub async fn run_all(store: &dyn MetadataStore) {
    ping(store).await;
    blobs(store).await;
    mount(store).await;
    manifests(store).await;
    manifest_tags(store).await;
    index_manifests(store).await;
    delete(store).await;
    list_tags(store).await;
    list_repositories(store).await;
    referrers(store).await;
    uploads(store).await;
    upload_claims(store).await;
    users(store).await;
    people(store).await;
    tokens(store).await;
    auth_requests(store).await;
    settings(store).await;
    gc(store).await;
    gc_many(store).await;
    projects(store).await;
    members(store).await;
    robots(store).await;
    identity_providers(store).await;
    federation_generation(store).await;
    creates(store).await;
    apply(store).await;
    audit(store).await;
    audit_pages(store).await;
    audit_prune(store).await;
    login_failures(store).await;
    run_races(store, store).await;
}

/// Runs the race parts (concurrent writers that only a correctly isolated backend keeps exact)
/// with the writers spread over `one` and `two`, two handles on the same database (as two Berth
/// processes would hold). [`run_all`] runs them with one handle; a backend's own tests call this
/// too with two handles on one database (after [`run_all`], or on a fresh store).
pub async fn run_races(one: &dyn MetadataStore, two: &dyn MetadataStore) {
    upload_claim_race(one, two).await;
    create_race(one, two).await;
    gc_race(one, two).await;
    auth_request_race(one, two).await;
    token_check_race(one, two).await;
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
    tags: &[Tag],
    now: UnixTime,
) -> (Digest, PutManifestOutcome) {
    let parsed = manifest::parse(bytes, None).expect("suite manifest parses");
    let digest = Digest::compute(Algorithm::Sha256, bytes);
    let outcome = store
        .put_manifest(r, NewManifest { digest: &digest, bytes, parsed: &parsed, tags }, now)
        .await
        .expect("put_manifest");
    (digest, outcome)
}

/// Like [`put`], asserting the manifest was stored.
async fn put_ok(store: &dyn MetadataStore, r: &RepoName, bytes: &[u8], tags: &[Tag], now: UnixTime) -> Digest {
    let (d, outcome) = put(store, r, bytes, tags, now).await;
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
    let only_v1 = std::slice::from_ref(&v1);

    // Nothing pushed yet: everything is missing, and nothing is stored.
    let (_, outcome) = put(store, &r, &bytes, only_v1, T0).await;
    let PutManifestOutcome::Missing(missing) = outcome else { panic!("expected Missing, got {outcome:?}") };
    assert_eq!(sorted(missing), sorted(vec![config.clone(), layer.clone()]));
    assert_eq!(get(store, &r, Reference::Digest(digest.clone())).await, None);
    assert_eq!(get(store, &r, Reference::Tag(v1.clone())).await, None);
    assert_eq!(tags_of(store, &r).await, None, "a refused manifest must not create the repository");

    // Config only: the layer is missing.
    push_blob(store, &r, "manifests-config", T0).await;
    let (_, outcome) = put(store, &r, &bytes, only_v1, T0).await;
    assert_eq!(outcome, PutManifestOutcome::Missing(vec![layer.clone()]));
    assert_eq!(get(store, &r, Reference::Digest(digest.clone())).await, None);
    assert_eq!(tags_of(store, &r).await, Some(vec![]), "the tag must not be set");

    // A blob linked only to another repository does not count.
    let elsewhere = repo("suite/manifests/elsewhere");
    push_blob(store, &elsewhere, "manifests-layer", T0).await;
    let (_, outcome) = put(store, &r, &bytes, only_v1, T0).await;
    assert_eq!(outcome, PutManifestOutcome::Missing(vec![layer.clone()]));

    // A layer listed twice and missing is reported (at least) once.
    let twice = image(&config, &[&dig("manifests-missing"), &dig("manifests-missing")]);
    let (_, outcome) = put(store, &r, &twice, &[], T0).await;
    let PutManifestOutcome::Missing(missing) = outcome else { panic!("expected Missing, got {outcome:?}") };
    assert_eq!(sorted(missing), vec![dig("manifests-missing")]);

    // Everything present: stored and tagged.
    push_blob(store, &r, "manifests-layer", T0).await;
    assert_eq!(put_ok(store, &r, &bytes, only_v1, T0).await, digest);
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
    put_ok(store, &r, &bytes, only_v1, T0 + 1).await;
    put_ok(store, &r, &bytes, &[], T0 + 2).await;
    assert_eq!(get(store, &r, Reference::Digest(digest.clone())).await, Some(rec.clone()));
    assert_eq!(tags_of(store, &r).await, Some(vec!["v1".to_owned()]));

    // A second tag on the same manifest.
    put_ok(store, &r, &bytes, &[tag("latest")], T0 + 3).await;
    assert_eq!(tags_of(store, &r).await, Some(vec!["latest".to_owned(), "v1".to_owned()]));

    // A manifest reusing a layer twice is fine.
    let dup = image(&config, &[&layer, &layer]);
    let dup_digest = put_ok(store, &r, &dup, &[], T0 + 4).await;
    assert_eq!(get(store, &r, Reference::Digest(dup_digest.clone())).await.map(|m| m.bytes), Some(dup.clone()));

    // Moving a tag: v1 now names the new manifest; the old one stays reachable by digest.
    let layer2 = push_blob(store, &r, "manifests-layer2", T0).await.0;
    let bytes2 = image(&config, &[&layer2]);
    let digest2 = put_ok(store, &r, &bytes2, only_v1, T0 + 5).await;
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
    let docker_digest = put_ok(store, &r, &docker, &[tag("docker")], T0 + 6).await;
    let rec = get(store, &r, Reference::Tag(tag("docker"))).await.expect("docker tag");
    assert_eq!((rec.digest, rec.media_type.as_str()), (docker_digest, media::DOCKER_MANIFEST));

    // A manifest with a subject records it, even when the subject is not (yet) in the repository.
    let absent = dig("manifests-absent-subject");
    let with_subject = image_with(&config, media::OCI_CONFIG, &[&layer], &subject_field(&absent));
    let ws = put_ok(store, &r, &with_subject, &[], T0 + 7).await;
    assert_eq!(get(store, &r, Reference::Digest(ws)).await.and_then(|m| m.subject), Some(absent));
}

/// `put_manifest` with several tags: every tag is set with the manifest, or none is; a later put
/// moves and adds tags in one go and leaves the tags it does not name alone.
pub async fn manifest_tags(store: &dyn MetadataStore) {
    let r = repo("suite/manifest-tags");
    let config = push_blob(store, &r, "mtags-config", T0).await.0;
    let layer = dig("mtags-layer");
    let bytes = image(&config, &[&layer]);
    let digest = Digest::compute(Algorithm::Sha256, &bytes);
    let three = [tag("a"), tag("b"), tag("c")];
    let digest_of = |t: &'static str| {
        let r = r.clone();
        async move { get(store, &r, Reference::Tag(tag(t))).await.map(|m| m.digest) }
    };

    // Refused for a missing layer: neither the manifest nor any of its tags is written.
    let (_, outcome) = put(store, &r, &bytes, &three, T0).await;
    assert_eq!(outcome, PutManifestOutcome::Missing(vec![layer.clone()]));
    assert_eq!(get(store, &r, Reference::Digest(digest.clone())).await, None);
    for t in ["a", "b", "c"] {
        assert_eq!(digest_of(t).await, None, "tag {t} of a refused manifest");
    }
    assert_eq!(tags_of(store, &r).await, Some(vec![]));

    // Everything present: one put sets all three tags.
    push_blob(store, &r, "mtags-layer", T0).await;
    assert_eq!(put_ok(store, &r, &bytes, &three, T0 + 1).await, digest);
    for t in ["a", "b", "c"] {
        assert_eq!(digest_of(t).await, Some(digest.clone()), "tag {t}");
    }
    assert_eq!(tags_of(store, &r).await, Some(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]));

    // A second manifest refused with tags that exist and tags that do not: nothing moves.
    let layer2 = dig("mtags-layer2");
    let bytes2 = image(&config, &[&layer2]);
    let (digest2, outcome) = put(store, &r, &bytes2, &[tag("b"), tag("d")], T0 + 2).await;
    assert_eq!(outcome, PutManifestOutcome::Missing(vec![layer2.clone()]));
    assert_eq!(digest_of("b").await, Some(digest.clone()), "a refused put must not move b");
    assert_eq!(digest_of("d").await, None, "a refused put must not add d");

    // Accepted: c moves, d is added (listed twice, set once), a and b stay.
    push_blob(store, &r, "mtags-layer2", T0).await;
    assert_eq!(put_ok(store, &r, &bytes2, &[tag("c"), tag("d"), tag("d")], T0 + 3).await, digest2);
    assert_eq!(digest_of("a").await, Some(digest.clone()));
    assert_eq!(digest_of("b").await, Some(digest.clone()));
    assert_eq!(digest_of("c").await, Some(digest2.clone()));
    assert_eq!(digest_of("d").await, Some(digest2.clone()));
    assert_eq!(tags_of(store, &r).await, Some(["a", "b", "c", "d"].map(String::from).to_vec()));

    // Re-pushing the first manifest with all four tags moves c and d back.
    put_ok(store, &r, &bytes, &[tag("a"), tag("b"), tag("c"), tag("d")], T0 + 4).await;
    for t in ["a", "b", "c", "d"] {
        assert_eq!(digest_of(t).await, Some(digest.clone()), "tag {t} after the re-push");
    }
    assert_eq!(get(store, &r, Reference::Digest(digest2)).await.map(|m| m.bytes), Some(bytes2), "untagged, still stored");
}

/// Indexes: child manifests must be manifests of the same repository.
pub async fn index_manifests(store: &dyn MetadataStore) {
    let r = repo("suite/index");
    let other = repo("suite/index/other");
    let config = push_blob(store, &r, "index-config", T0).await.0;
    let amd = put_ok(store, &r, &image(&config, &[]), &[], T0).await;
    let arm_bytes = image_with(&config, media::OCI_CONFIG, &[], r#","annotations":{"arch":"arm64"}"#);
    let arm = Digest::compute(Algorithm::Sha256, &arm_bytes);
    // The same child exists only in another repository: does not count.
    push_blob(store, &other, "index-config", T0).await;
    put_ok(store, &other, &arm_bytes, &[], T0).await;

    let idx = index_with(&[&amd, &arm], "");
    let (idx_digest, outcome) = put(store, &r, &idx, &[tag("multi")], T0).await;
    assert_eq!(outcome, PutManifestOutcome::Missing(vec![arm.clone()]));
    assert_eq!(get(store, &r, Reference::Tag(tag("multi"))).await, None);

    put_ok(store, &r, &arm_bytes, &[], T0).await;
    assert_eq!(put_ok(store, &r, &idx, &[tag("multi")], T0).await, idx_digest);
    let rec = get(store, &r, Reference::Tag(tag("multi"))).await.expect("index by tag");
    assert_eq!((rec.digest, rec.media_type.as_str(), rec.bytes), (idx_digest.clone(), media::OCI_INDEX, idx));

    // An index of indexes, and an empty index.
    let outer = put_ok(store, &r, &index_with(&[&idx_digest], ""), &[tag("outer")], T0).await;
    assert_eq!(get(store, &r, Reference::Tag(tag("outer"))).await.map(|m| m.digest), Some(outer));
    put_ok(store, &r, &index_with(&[], ""), &[tag("empty")], T0).await;
}

/// `delete_tag` and `delete_manifest`.
pub async fn delete(store: &dyn MetadataStore) {
    let r = repo("suite/delete");
    let config = push_blob(store, &r, "delete-config", T0).await.0;
    let m1 = put_ok(store, &r, &image(&config, &[]), &[tag("a")], T0).await;
    put_ok(store, &r, &image(&config, &[]), &[tag("b")], T0).await;
    let m2 = put_ok(store, &r, &image_with(&config, "application/x-other", &[], ""), &[tag("c")], T0).await;

    // delete_tag: the manifest stays.
    assert!(store.delete_tag(&r, &tag("a")).await.expect("delete_tag"));
    assert!(!store.delete_tag(&r, &tag("a")).await.expect("delete_tag"));
    assert!(!store.delete_tag(&r, &tag("never")).await.expect("delete_tag"));
    assert!(!store.delete_tag(&repo("suite/delete/unknown"), &tag("a")).await.expect("delete_tag"));
    assert_eq!(get(store, &r, Reference::Tag(tag("a"))).await, None);
    assert!(get(store, &r, Reference::Digest(m1.clone())).await.is_some());
    assert_eq!(get(store, &r, Reference::Tag(tag("b"))).await.map(|m| m.digest), Some(m1.clone()));

    // delete_manifest: takes every tag pointing at it along.
    put_ok(store, &r, &image(&config, &[]), &[tag("a")], T0).await;
    assert!(store.delete_manifest(&r, &m1).await.expect("delete_manifest"));
    assert!(!store.delete_manifest(&r, &m1).await.expect("delete_manifest"));
    assert!(!store.delete_manifest(&repo("suite/delete/unknown"), &m1).await.expect("delete_manifest"));
    assert_eq!(get(store, &r, Reference::Digest(m1.clone())).await, None);
    assert_eq!(get(store, &r, Reference::Tag(tag("a"))).await, None);
    assert_eq!(get(store, &r, Reference::Tag(tag("b"))).await, None);
    assert_eq!(tags_of(store, &r).await, Some(vec!["c".to_owned()]));
    assert!(get(store, &r, Reference::Digest(m2.clone())).await.is_some());

    // It can be pushed again afterwards.
    put_ok(store, &r, &image(&config, &[]), &[tag("a")], T0 + 1).await;
    assert_eq!(get(store, &r, Reference::Tag(tag("a"))).await.map(|m| m.digest), Some(m1.clone()));

    // With its last tag deleted, a repository that still has manifests lists no tags.
    for t in ["a", "c"] {
        assert!(store.delete_tag(&r, &tag(t)).await.expect("delete_tag"));
    }
    assert_eq!(tags_of(store, &r).await, Some(vec![]));

    // Deleting a manifest referenced by an index in the same repository is allowed.
    let idx = put_ok(store, &r, &index_with(&[&m2], ""), &[tag("idx")], T0).await;
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

    let m = put_ok(store, &r, &image(&config, &[]), &[], T0).await;
    let names = ["v2", "a", "B", "b", "a.1", "_x", "Z", "v1", "v10", "a-1", "A"];
    for (i, n) in names.iter().enumerate() {
        put_ok(store, &r, &image(&config, &[]), &[tag(n)], T0 + i as i64).await;
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
    put_ok(store, &repo("zzzz/list/a"), &image(&config, &[]), &[tag("x")], T0).await;
    // A repository whose only manifest has no tag, and which lost its blob link.
    let c = repo("zzzz/list/a/c");
    let cfg = push_blob(store, &c, "repos-c", T0).await.0;
    put_ok(store, &c, &image(&cfg, &[]), &[], T0).await;
    assert!(store.unlink_blob(&c, &cfg).await.expect("unlink"));
    push_blob(store, &repo("zzzz/list/a-b"), "repos-ab", T0).await;
    push_blob(store, &repo("zzzz/list/a.b"), "repos-a.b", T0).await;
    // Not repositories: an upload session only; a repository that lost its only link; a refused
    // manifest; a failed mount.
    store.create_upload("repos-upload-only", &repo("zzzz/list/upload"), T0).await.expect("create_upload");
    let gone = repo("zzzz/list/gone");
    let gd = push_blob(store, &gone, "repos-gone", T0).await.0;
    assert!(store.unlink_blob(&gone, &gd).await.expect("unlink"));
    let (_, outcome) = put(store, &repo("zzzz/list/refused"), &image(&config, &[]), &[], T0).await;
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
    let subject = put_ok(store, &r, &image(&config, &[]), &[tag("app")], T0).await;

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
    let sbom = put_ok(store, &r, &sbom_bytes, &[], T0).await;
    // A signature without artifactType: the config media type stands in.
    let sig_bytes = image_with(&empty, "application/vnd.example.sig.config", &[], &subject_field(&subject));
    let sig = put_ok(store, &r, &sig_bytes, &[], T0).await;
    // An index referrer.
    let idx_bytes =
        index_with(&[&sig], &format!(r#","artifactType":"application/vnd.example.bundle"{}"#, subject_field(&subject)));
    let idx = put_ok(store, &r, &idx_bytes, &[], T0).await;
    // Not a referrer of `subject`: no subject, or another subject.
    put_ok(store, &r, &image(&empty, &[]), &[], T0).await;
    let other_subject = dig("referrers-absent");
    let dangling_bytes = image_with(&empty, media::OCI_EMPTY, &[], &subject_field(&other_subject));
    let dangling = put_ok(store, &r, &dangling_bytes, &[], T0).await;

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
    put_ok(store, &r, &sig_bytes, &[], T0 + 1).await;
    let mut got: Vec<Digest> =
        store.referrers(&r, &subject, None).await.expect("referrers").into_iter().map(|x| x.digest).collect();
    got.sort();
    assert_eq!(got, sorted(vec![sig, idx]));
}

/// Upload sessions: create, get, touch, delete.
pub async fn uploads(store: &dyn MetadataStore) {
    let r = repo("suite/uploads");
    assert_eq!(store.get_upload("uploads-1").await.expect("get_upload"), None);
    store.create_upload("uploads-1", &r, T0).await.expect("create_upload");
    let want = UploadRecord {
        id: "uploads-1".into(),
        repo: r.clone(),
        created: T0,
        updated: T0,
        offset: 0,
        hash_state: Vec::new(),
        parts: 0,
    };
    assert_eq!(store.get_upload("uploads-1").await.expect("get_upload"), Some(want.clone()));

    store.touch_upload("uploads-1", T0 + 30).await.expect("touch_upload");
    let got = store.get_upload("uploads-1").await.expect("get_upload");
    assert_eq!(got, Some(UploadRecord { updated: T0 + 30, ..want.clone() }));
    // Touching never moves the activity time back.
    store.touch_upload("uploads-1", T0 + 10).await.expect("touch_upload");
    assert_eq!(store.get_upload("uploads-1").await.expect("get_upload"), Some(UploadRecord { updated: T0 + 30, ..want }));
    // Touching an unknown session is not an error.
    store.touch_upload("uploads-unknown", T0).await.expect("touch_upload");
    assert_eq!(store.get_upload("uploads-unknown").await.expect("get_upload"), None);

    assert!(store.delete_upload("uploads-1").await.expect("delete_upload"));
    assert!(!store.delete_upload("uploads-1").await.expect("delete_upload"));
    assert_eq!(store.get_upload("uploads-1").await.expect("get_upload"), None);
}

async fn claim(
    store: &dyn MetadataStore,
    id: &str,
    r: &RepoName,
    expected: Option<u64>,
    token: &str,
    until: UnixTime,
    now: UnixTime,
) -> UploadClaim {
    store.claim_upload(id, r, expected, token, until, now).await.expect("claim_upload")
}

async fn upload(store: &dyn MetadataStore, id: &str) -> UploadRecord {
    store.get_upload(id).await.expect("get_upload").expect("the upload exists")
}

/// Claims on an upload: claim, renew and release (compare-and-set on the claim's token), the
/// offset check, a held lease, an ended lease taken over, another repository.
pub async fn upload_claims(store: &dyn MetadataStore) {
    let r = repo("suite/claims");
    let other = repo("suite/claims/other");
    let id = "claims-1";
    store.create_upload(id, &r, T0).await.expect("create_upload");
    let fresh = upload(store, id).await;
    assert_eq!((fresh.offset, fresh.hash_state.as_slice(), fresh.parts), (0, &[][..], 0));

    // Unknown sessions, and sessions of another repository.
    assert_eq!(claim(store, "claims-none", &r, None, "c-0", T0 + 60, T0).await, UploadClaim::Unknown);
    assert_eq!(claim(store, id, &other, None, "c-0", T0 + 60, T0).await, UploadClaim::Unknown);
    assert_eq!(claim(store, id, &other, Some(0), "c-0", T0 + 60, T0).await, UploadClaim::Unknown);
    // The wrong offset.
    assert_eq!(claim(store, id, &r, Some(5), "c-0", T0 + 60, T0).await, UploadClaim::OutOfOrder { offset: 0 });
    assert_eq!(upload(store, id).await, fresh, "refused claims change nothing");
    // Nobody holds it: releasing or renewing with any token fails.
    assert!(!store.release_upload(id, "c-0", 9, b"x", 1, T0).await.expect("release_upload"));
    assert!(!store.renew_upload_claim(id, "c-0", T0 + 60).await.expect("renew_upload_claim"));
    assert_eq!(upload(store, id).await, fresh);

    // Claimed: the record as it is, marked active.
    let got = claim(store, id, &r, Some(0), "c-1", T0 + 60, T0 + 1).await;
    assert_eq!(got, UploadClaim::Claimed(UploadRecord { updated: T0 + 1, ..fresh.clone() }));
    // Held: every other claim is Busy (also one with a wrong offset: the release moves it), until
    // the lease's last second; another repository still sees nothing.
    for (expected, now) in [(Some(0), T0 + 2), (None, T0 + 30), (Some(7), T0 + 59)] {
        assert_eq!(claim(store, id, &r, expected, "c-2", T0 + 120, now).await, UploadClaim::Busy { offset: 0 }, "{expected:?} at {now}");
    }
    assert_eq!(claim(store, id, &other, None, "c-2", T0 + 120, T0 + 2).await, UploadClaim::Unknown);
    // Only the holder's token releases or renews.
    assert!(!store.release_upload(id, "c-2", 9, b"x", 1, T0 + 3).await.expect("release_upload"));
    assert!(!store.renew_upload_claim(id, "c-2", T0 + 600).await.expect("renew_upload_claim"));
    assert_eq!(upload(store, id).await, UploadRecord { updated: T0 + 1, ..fresh.clone() });
    // Renewed: still held after the first lease would have ended.
    assert!(store.renew_upload_claim(id, "c-1", T0 + 120).await.expect("renew_upload_claim"));
    assert_eq!(claim(store, id, &r, Some(0), "c-2", T0 + 200, T0 + 90).await, UploadClaim::Busy { offset: 0 });
    // Released: offset, hash state and parts recorded, `updated` is the release's time, the
    // lease is gone.
    assert!(store.release_upload(id, "c-1", 100, b"state-1", 1, T0 + 100).await.expect("release_upload"));
    let one = UploadRecord { updated: T0 + 100, offset: 100, hash_state: b"state-1".to_vec(), parts: 1, ..fresh.clone() };
    assert_eq!(upload(store, id).await, one);
    assert!(!store.release_upload(id, "c-1", 200, b"again", 2, T0 + 101).await.expect("release_upload"), "released twice");
    assert!(!store.renew_upload_claim(id, "c-1", T0 + 600).await.expect("renew_upload_claim"), "renewed after release");
    assert_eq!(upload(store, id).await, one);

    // The next write must start where the last one ended.
    assert_eq!(claim(store, id, &r, Some(0), "c-3", T0 + 200, T0 + 110).await, UploadClaim::OutOfOrder { offset: 100 });
    let got = claim(store, id, &r, Some(100), "c-3", T0 + 200, T0 + 110).await;
    assert_eq!(got, UploadClaim::Claimed(UploadRecord { updated: T0 + 110, ..one.clone() }));
    // Its lease ends (`lease_until > now` no longer holds): another claim takes the upload over,
    // and the old holder can neither renew nor record anything.
    let got = claim(store, id, &r, Some(100), "c-4", T0 + 400, T0 + 200).await;
    assert_eq!(got, UploadClaim::Claimed(UploadRecord { updated: T0 + 200, ..one.clone() }));
    assert!(!store.renew_upload_claim(id, "c-3", T0 + 600).await.expect("renew_upload_claim"));
    assert!(!store.release_upload(id, "c-3", 150, b"stale", 2, T0 + 201).await.expect("release_upload"));
    assert_eq!(upload(store, id).await.offset, 100, "a taken-over writer records nothing");
    assert!(store.release_upload(id, "c-4", 250, b"state-2", 2, T0 + 210).await.expect("release_upload"));
    let two = UploadRecord { updated: T0 + 210, offset: 250, hash_state: b"state-2".to_vec(), parts: 2, ..fresh.clone() };
    assert_eq!(upload(store, id).await, two);
    // A lease that ended but that nobody took over is still its holder's.
    assert!(matches!(claim(store, id, &r, None, "c-5", T0 + 220, T0 + 215).await, UploadClaim::Claimed(_)));
    assert!(store.renew_upload_claim(id, "c-5", T0 + 500).await.expect("renew_upload_claim"));
    assert!(store.release_upload(id, "c-5", 300, b"", 3, T0 + 900).await.expect("release_upload"));
    assert_eq!(upload(store, id).await, UploadRecord { updated: T0 + 900, offset: 300, hash_state: Vec::new(), parts: 3, ..fresh });

    // A deleted session cannot be released or claimed.
    assert!(matches!(claim(store, id, &r, Some(300), "c-6", T0 + 1000, T0 + 901).await, UploadClaim::Claimed(_)));
    assert!(store.delete_upload(id).await.expect("delete_upload"));
    assert!(!store.release_upload(id, "c-6", 400, b"", 4, T0 + 902).await.expect("release_upload"));
    assert_eq!(claim(store, id, &r, None, "c-7", T0 + 1000, T0 + 903).await, UploadClaim::Unknown);
    assert_eq!(store.get_upload(id).await.expect("get_upload"), None);
}

/// Concurrent claims per round of [`upload_claim_race`].
const RACERS: usize = 16;

/// Many claims on one upload at once: exactly one wins, every other one is told it is busy, and
/// only the winner's token can release it. Then a second race on the released upload, half
/// expecting the old offset and half the new: again exactly one wins.
///
/// `one` and `two` are handles on the same database (two processes); the claims alternate between
/// them. Pass the same store twice for one handle. The assertions are exact: a claim that reads
/// then writes, or a backend whose claims can both see the lease free, fails them.
pub async fn upload_claim_race(one: &dyn MetadataStore, two: &dyn MetadataStore) {
    let r = repo("suite/claimrace");
    for round in 0..4 {
        let id = format!("claimrace-{round}");
        one.create_upload(&id, &r, T0).await.expect("create_upload");
        let racers = (0..RACERS).map(|i| {
            let (store, id, r) = (if i % 2 == 0 { one } else { two }, id.clone(), r.clone());
            async move { store.claim_upload(&id, &r, Some(0), &format!("{id}-{i}"), T0 + 60, T0).await.expect("claim_upload") }
        });
        let got = join_all(racers).await;
        let winners: Vec<usize> = (0..RACERS).filter(|&i| matches!(got[i], UploadClaim::Claimed(_))).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one of {RACERS} concurrent claims wins: {got:?}");
        let winner = winners[0];
        for (i, g) in got.iter().enumerate() {
            if i != winner {
                assert_eq!(*g, UploadClaim::Busy { offset: 0 }, "round {round}, claim {i}");
            }
        }
        // Only the winner holds it: every loser's release fails (from either handle).
        for i in (0..RACERS).filter(|&i| i != winner) {
            let store = if i % 2 == 0 { two } else { one };
            assert!(!store.release_upload(&id, &format!("{id}-{i}"), 1, b"loser", 1, T0 + 1).await.expect("release_upload"));
        }
        assert!(two.release_upload(&id, &format!("{id}-{winner}"), 10, b"winner", 1, T0 + 1).await.expect("release_upload"));
        assert_eq!(one.get_upload(&id).await.expect("get_upload").map(|u| (u.offset, u.hash_state, u.parts)), Some((10, b"winner".to_vec(), 1)));

        // Second race: half expect the stale offset 0, half the recorded 10.
        let racers = (0..RACERS).map(|i| {
            let (store, id, r) = (if i % 2 == 0 { two } else { one }, id.clone(), r.clone());
            let expected = if i < RACERS / 2 { 0 } else { 10 };
            async move { store.claim_upload(&id, &r, Some(expected), &format!("{id}-again-{i}"), T0 + 60, T0 + 2).await.expect("claim_upload") }
        });
        let got = join_all(racers).await;
        let winners: Vec<usize> = (0..RACERS).filter(|&i| matches!(got[i], UploadClaim::Claimed(_))).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one claim at the right offset wins: {got:?}");
        assert!(winners[0] >= RACERS / 2, "round {round}: a claim at the stale offset won: {got:?}");
        for (i, g) in got.iter().enumerate().filter(|&(i, _)| i != winners[0]) {
            assert!(
                matches!(g, UploadClaim::Busy { offset: 10 } | UploadClaim::OutOfOrder { offset: 10 }),
                "round {round}, claim {i}: {g:?}"
            );
            if i >= RACERS / 2 {
                assert_eq!(*g, UploadClaim::Busy { offset: 10 }, "round {round}, claim {i} expected the right offset");
            }
        }
        assert!(one.delete_upload(&id).await.expect("delete_upload"));
    }
}

fn user(name: &str, hash: &str, admin: bool, disabled: bool) -> UserRecord {
    UserRecord { name: name.into(), password_hash: hash.into(), admin, disabled, ..UserRecord::default() }
}

async fn user_names(store: &dyn MetadataStore, prefix: &str) -> Vec<String> {
    names_with(store.list_users().await.expect("list_users"), |u| &u.name, prefix)
}

/// Local users: create, replace, disable, list, delete; the last enabled admin is kept.
pub async fn users(store: &dyn MetadataStore) {
    let before = store.count_users().await.expect("count_users");
    assert_eq!(store.get_user("suite-alice").await.expect("get_user"), None);
    let alice = user("suite-alice", "$argon2id$v=19$a", false, false);
    store.put_user(&alice).await.expect("put_user");
    assert_eq!(store.get_user("suite-alice").await.expect("get_user"), Some(alice.clone()));
    assert_eq!(store.count_users().await.expect("count_users"), before + 1);

    // Replacing keeps one user.
    let alice2 = UserRecord { password_hash: "$argon2id$v=19$b".into(), admin: true, ..alice };
    store.put_user(&alice2).await.expect("put_user");
    assert_eq!(store.get_user("suite-alice").await.expect("get_user"), Some(alice2.clone()));
    assert_eq!(store.count_users().await.expect("count_users"), before + 1);

    let bob = user("suite-bob", "h", true, false);
    store.put_user(&bob).await.expect("put_user");
    assert_eq!(store.count_users().await.expect("count_users"), before + 2);
    assert_eq!(store.get_user("suite-bob").await.expect("get_user"), Some(bob.clone()));
    // Names are exact.
    assert_eq!(store.get_user("Suite-Bob").await.expect("get_user"), None);

    // The disabled flag is stored and changed like the others; the hash stays.
    let carol = user("suite-carol", "hc", false, true);
    store.put_user(&carol).await.expect("put_user");
    assert_eq!(store.get_user("suite-carol").await.expect("get_user"), Some(carol.clone()));
    let carol_on = UserRecord { disabled: false, ..carol.clone() };
    store.put_user(&carol_on).await.expect("put_user");
    assert_eq!(store.get_user("suite-carol").await.expect("get_user"), Some(carol_on));
    store.put_user(&carol).await.expect("put_user");

    // Listing: by name, every field.
    let listed: Vec<UserRecord> =
        store.list_users().await.expect("list_users").into_iter().filter(|u| u.name.starts_with("suite-")).collect();
    assert_eq!(listed, [alice2.clone(), bob.clone(), carol.clone()]);

    // Deleting.
    assert!(store.delete_user("suite-carol").await.expect("delete_user"));
    assert!(!store.delete_user("suite-carol").await.expect("delete_user"), "deleting twice");
    assert_eq!(store.get_user("suite-carol").await.expect("get_user"), None);
    assert_eq!(user_names(store, "suite-").await, ["suite-alice", "suite-bob"]);
    assert_eq!(store.count_users().await.expect("count_users"), before + 2);

    // The last enabled admin cannot be disabled, demoted or deleted. Other admins of the store
    // (none in the suite's fresh store) would make the refusals below pass, so only check them
    // when the suite's users are the only admins.
    let others = store.list_users().await.expect("list_users").iter().any(|u| !u.name.starts_with("suite-") && u.admin && !u.disabled);
    store.put_user(&UserRecord { disabled: true, ..alice2.clone() }).await.expect("disabling one of two admins");
    if !others {
        let generation = store.federation_generation().await.expect("federation_generation");
        for (write, what) in [
            (store.put_user(&UserRecord { disabled: true, ..bob.clone() }).await, "disable"),
            (store.put_user(&UserRecord { admin: false, ..bob.clone() }).await, "demote"),
            (store.delete_user("suite-bob").await.map(|_| ()), "delete"),
        ] {
            assert_conflict(write, &["suite-bob", "last enabled admin"]);
            assert_eq!(store.get_user("suite-bob").await.expect("get_user"), Some(bob.clone()), "a refused {what} changes nothing");
        }
        assert_eq!(store.federation_generation().await.expect("federation_generation"), generation, "refused writes");
        // A disabled admin does not count, but re-enabling it does.
        store.put_user(&alice2).await.expect("re-enabling an admin");
    }
    // With two enabled admins, either may go.
    store.put_user(&UserRecord { admin: false, ..bob.clone() }).await.expect("demoting one of two admins");
    store.put_user(&bob).await.expect("promoting again");
    assert!(store.delete_user("suite-alice").await.expect("deleting one of two admins"));
    // Writes that keep an enabled admin are fine: a new password, a non-admin user.
    store.put_user(&UserRecord { password_hash: "h2".into(), ..bob.clone() }).await.expect("new password of the last admin");
    store.put_user(&user("suite-dave", "hd", false, false)).await.expect("put_user");
    assert!(store.delete_user("suite-dave").await.expect("delete a non-admin"));
    assert!(!store.delete_user("suite-nobody").await.expect("delete_user of nobody"));
    // The suite's users stay (bob as an admin): other parts may rely on an admin being present.
}

// ---- people: users from OpenID providers, their tokens, logins in progress ----

async fn generation(store: &dyn MetadataStore) -> i64 {
    store.federation_generation().await.expect("federation_generation")
}

/// A person onboarded from an OpenID provider, with every field set.
fn person(name: &str, issuer: &str, subject: &str, at: UnixTime) -> UserRecord {
    UserRecord {
        name: name.into(),
        password_hash: String::new(),
        admin: false,
        disabled: false,
        identity: Some(UserIdentity { provider: "suite-people-idp".into(), issuer: issuer.into(), subject: subject.into() }),
        email: Some(format!("{name}@example.org")),
        groups: vec!["suite-devs".into(), "suite-ops".into()],
        created_at: at,
        last_login_at: Some(at + 1),
    }
}

/// Users from an OpenID provider: `put_user` stores every field (an existing user keeps its
/// creation time; groups are kept sorted and without duplicates), `create_user` only when the
/// name is free and the identity is nobody else's, `get_user_by_identity`, `update_user_login`
/// (only its fields; the generation moves only when the groups changed), and a user's tokens gone
/// with it.
pub async fn people(store: &dyn MetadataStore) {
    let iss = "https://people.example";
    // put_user: every field round-trips.
    let full = UserRecord {
        name: "suite-people-full".into(),
        password_hash: "$argon2id$full".into(),
        admin: false,
        disabled: true,
        identity: Some(UserIdentity { provider: "suite-people-idp".into(), issuer: iss.into(), subject: "sub-full".into() }),
        email: Some("full@example.org".into()),
        groups: vec!["suite-a".into(), "suite-b".into()],
        created_at: T0,
        last_login_at: Some(T0 + 5),
    };
    store.put_user(&full).await.expect("put_user");
    assert_eq!(store.get_user(&full.name).await.expect("get_user"), Some(full.clone()));
    assert_eq!(store.get_user_by_identity(iss, "sub-full").await.expect("get_user_by_identity"), Some(full.clone()));
    let listed: Vec<UserRecord> = store.list_users().await.expect("list_users").into_iter().filter(|u| u.name == full.name).collect();
    assert_eq!(listed, std::slice::from_ref(&full));
    // Replacing: every field but the creation time; the identity may go.
    let bare = UserRecord {
        password_hash: "$argon2id$bare".into(),
        disabled: false,
        identity: None,
        email: None,
        groups: vec!["suite-b".into(), "suite-a".into(), "suite-b".into()],
        created_at: T0 + 100,
        last_login_at: None,
        ..full.clone()
    };
    store.put_user(&bare).await.expect("put_user");
    let want = UserRecord { groups: vec!["suite-a".into(), "suite-b".into()], created_at: T0, ..bare.clone() };
    assert_eq!(store.get_user(&full.name).await.expect("get_user"), Some(want), "sorted groups, the creation time kept");
    assert_eq!(store.get_user_by_identity(iss, "sub-full").await.expect("get_user_by_identity"), None, "the identity went");

    // create_user.
    let g0 = generation(store).await;
    let alice = person("suite-people-alice", iss, "sub-alice", T0);
    assert!(store.create_user(&alice).await.expect("create_user"));
    let g1 = generation(store).await;
    assert!(g1 > g0, "creating a user moves the generation");
    assert_eq!(store.get_user(&alice.name).await.expect("get_user"), Some(alice.clone()));
    assert_eq!(store.get_user_by_identity(iss, "sub-alice").await.expect("get_user_by_identity"), Some(alice.clone()));
    // The issuer and subject are compared exactly.
    for (i, s) in [(iss, "sub-Alice"), ("https://people.example/", "sub-alice"), ("https://PEOPLE.example", "sub-alice"), (iss, "sub-alice ")] {
        assert_eq!(store.get_user_by_identity(i, s).await.expect("get_user_by_identity"), None, "{i} {s}");
    }
    // The name taken: false, nothing changes.
    let again = UserRecord { email: Some("again@example.org".into()), identity: None, ..alice.clone() };
    assert!(!store.create_user(&again).await.expect("create_user"));
    assert_eq!(store.get_user(&alice.name).await.expect("get_user"), Some(alice.clone()));
    // The identity taken by another user: a Conflict naming it (checked first, so also when the
    // name is taken too), for create_user and put_user alike; nothing changes.
    let bob = person("suite-people-bob", iss, "sub-alice", T0 + 1);
    assert_conflict(store.create_user(&bob).await, &["suite-people-alice"]);
    assert_eq!(store.get_user(&bob.name).await.expect("get_user"), None);
    assert_conflict(store.create_user(&UserRecord { name: full.name.clone(), ..bob.clone() }).await, &["suite-people-alice"]);
    assert_conflict(store.put_user(&UserRecord { identity: alice.identity.clone(), ..full.clone() }).await, &["suite-people-alice"]);
    assert_conflict(store.put_user(&bob).await, &["suite-people-alice"]);
    assert_eq!(store.get_user(&bob.name).await.expect("get_user"), None);
    assert_eq!(store.get_user_by_identity(iss, "sub-alice").await.expect("get_user_by_identity").map(|u| u.name), Some(alice.name.clone()));
    assert_eq!(generation(store).await, g1, "refused creates and writes");
    // The same subject at another issuer, or another subject, is another person.
    let bob = person("suite-people-bob", iss, "sub-bob", T0 + 1);
    let elsewhere = person("suite-people-elsewhere", "https://elsewhere.example", "sub-alice", T0 + 2);
    assert!(store.create_user(&bob).await.expect("create_user"));
    assert!(store.create_user(&elsewhere).await.expect("create_user"));
    assert_eq!(store.get_user_by_identity("https://elsewhere.example", "sub-alice").await.expect("get_user_by_identity"), Some(elsewhere.clone()));
    // A user's own identity in put_user is no conflict.
    store.put_user(&UserRecord { email: None, ..bob.clone() }).await.expect("put_user");
    store.put_user(&bob).await.expect("put_user");

    // update_user_login: the same groups (in any order) leave the generation; only its fields
    // change.
    let g2 = generation(store).await;
    let same = ["suite-ops".to_owned(), "suite-devs".to_owned(), "suite-ops".to_owned()];
    let got = store.update_user_login(&alice.name, &same, None, Some(T0 + 10)).await.expect("update_user_login");
    let alice = UserRecord { last_login_at: Some(T0 + 10), ..alice };
    assert_eq!(got.as_ref(), Some(&alice));
    assert_eq!(store.get_user(&alice.name).await.expect("get_user"), Some(alice.clone()));
    assert_eq!(generation(store).await, g2, "a login with the same groups");
    // An admin's change meanwhile is kept.
    store.put_user(&UserRecord { disabled: true, admin: true, ..alice.clone() }).await.expect("put_user");
    let g3 = generation(store).await;
    let got = store.update_user_login(&alice.name, &["suite-qa".to_owned()], Some("new@example.org"), None).await.expect("update_user_login");
    let alice = UserRecord { disabled: true, admin: true, groups: vec!["suite-qa".into()], email: Some("new@example.org".into()), ..alice };
    assert_eq!(got.as_ref(), Some(&alice), "groups and email set, the last login kept, the admin's change kept");
    assert_eq!(store.get_user(&alice.name).await.expect("get_user"), Some(alice.clone()));
    assert!(generation(store).await > g3, "new groups move the generation");
    let g4 = generation(store).await;
    let got = store.update_user_login(&alice.name, &[], None, Some(T0 + 20)).await.expect("update_user_login").expect("user");
    assert_eq!((got.groups.len(), got.email.as_deref(), got.last_login_at), (0, Some("new@example.org"), Some(T0 + 20)));
    assert!(generation(store).await > g4, "groups gone move the generation");
    let g5 = generation(store).await;
    assert_eq!(store.update_user_login("suite-people-nobody", &same, None, Some(T0)).await.expect("update_user_login"), None);
    assert_eq!(generation(store).await, g5, "no such user");

    // A user's tokens go with it.
    let cli = token("suite-people-tok-cli", &alice.name, TokenKind::Cli, None, T0);
    let helper = token("suite-people-tok-helper", &alice.name, TokenKind::Helper, Some("suite-people-tok-cli"), T0);
    let pat = token("suite-people-tok-pat", &alice.name, TokenKind::Personal, None, T0);
    let bobs = token("suite-people-tok-bob", &bob.name, TokenKind::Personal, None, T0);
    for t in [&cli, &helper, &pat, &bobs] {
        store.create_token(t).await.expect("create_token");
    }
    let g6 = generation(store).await;
    assert!(store.delete_user(&alice.name).await.expect("delete_user"));
    assert!(generation(store).await > g6, "deleting a user moves the generation");
    for t in [&cli, &helper, &pat] {
        assert_eq!(store.get_token(&t.id).await.expect("get_token"), None, "{} went with its user", t.id);
    }
    assert_eq!(store.list_tokens(&alice.name, &[]).await.expect("list_tokens"), vec![]);
    assert_eq!(store.get_token(&bobs.id).await.expect("get_token"), Some(bobs.clone()), "another user's token stays");
    // A new user of the same name starts without them.
    assert!(store.create_user(&UserRecord { identity: None, ..alice.clone() }).await.expect("create_user"));
    assert_eq!(store.list_tokens(&alice.name, &[]).await.expect("list_tokens"), vec![]);

    for name in [&alice.name, &bob.name, &elsewhere.name, &full.name] {
        assert!(store.delete_user(name).await.expect("delete_user"), "{name}");
    }
    assert_eq!(store.get_token(&bobs.id).await.expect("get_token"), None);
    assert_eq!(user_names(store, "suite-people-").await, Vec::<String>::new());
}

/// A token with no scope, expiry, use, refresh token or check.
fn token(id: &str, user: &str, kind: TokenKind, parent: Option<&str>, at: UnixTime) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        user: user.into(),
        kind,
        name: format!("{} for the suite", kind.as_str()),
        secret_hash: format!("{:0>64}", id.len()),
        parent: parent.map(Into::into),
        scope: None,
        created_at: at,
        expires_at: None,
        last_used_at: None,
        refresh_token: None,
        checked_at: None,
    }
}

async fn token_ids(store: &dyn MetadataStore, user: &str, kinds: &[TokenKind]) -> Vec<String> {
    store.list_tokens(user, kinds).await.expect("list_tokens").into_iter().map(|t| t.id).collect()
}

async fn ids_to_check(store: &dyn MetadataStore, before: UnixTime, now: UnixTime, limit: u32) -> Vec<String> {
    store.tokens_to_check(before, now, limit).await.expect("tokens_to_check").into_iter().map(|t| t.id).collect()
}

/// Tokens: creation (references checked, ids unique), reading and listing (by kind, oldest
/// first), deletion with children (moving the generation), a user's tokens by kind, uses and
/// re-checks (not moving it), the tokens due for a re-check, pruning expired ones. Needs no
/// other part's tokens in the store.
pub async fn tokens(store: &dyn MetadataStore) {
    let (u, v) = ("suite-tok-user", "suite-tok-other");
    for name in [u, v] {
        assert!(store.create_user(&UserRecord { name: name.into(), created_at: T0, ..UserRecord::default() }).await.expect("create_user"));
    }
    let g = generation(store).await;
    // What a token refers to must exist.
    assert_conflict(store.create_token(&token("suite-tok-x", "suite-tok-nobody", TokenKind::Personal, None, T0)).await, &["suite-tok-nobody"]);
    assert_conflict(store.create_token(&token("suite-tok-x", u, TokenKind::Helper, Some("suite-tok-none"), T0)).await, &["suite-tok-none"]);
    assert_eq!(store.get_token("suite-tok-x").await.expect("get_token"), None);

    let cli = TokenRecord { refresh_token: Some("refresh-cli".into()), ..token("suite-tok-cli", u, TokenKind::Cli, None, T0 + 1) };
    let web = TokenRecord {
        refresh_token: Some("refresh-web".into()),
        checked_at: Some(T0 + 50),
        expires_at: Some(T0 + 10_000),
        ..token("suite-tok-web", u, TokenKind::Web, None, T0 + 1)
    };
    let helper = TokenRecord { expires_at: Some(T0 + 100), ..token("suite-tok-helper", u, TokenKind::Helper, Some("suite-tok-cli"), T0 + 2) };
    let pat = TokenRecord {
        name: "laptop".into(),
        scope: Some(serde_json::json!({"projects": ["suite"], "actions": ["pull"]})),
        expires_at: Some(T0 + 1000),
        last_used_at: Some(T0 + 4),
        ..token("suite-tok-pat", u, TokenKind::Personal, None, T0 + 3)
    };
    let others = token("suite-tok-v", v, TokenKind::Personal, None, T0);
    for t in [&cli, &web, &helper, &pat, &others] {
        store.create_token(t).await.expect("create_token");
    }
    for t in [&cli, &web, &helper, &pat, &others] {
        assert_eq!(store.get_token(&t.id).await.expect("get_token").as_ref(), Some(t), "every field of {}", t.id);
    }
    // An id is used once; a parent is a token of the same user.
    assert_conflict(store.create_token(&TokenRecord { name: "again".into(), ..token("suite-tok-pat", v, TokenKind::Cli, None, T0) }).await, &["suite-tok-pat"]);
    assert_eq!(store.get_token(&pat.id).await.expect("get_token").as_ref(), Some(&pat));
    assert_conflict(store.create_token(&token("suite-tok-y", v, TokenKind::Helper, Some("suite-tok-cli"), T0)).await, &["suite-tok-cli"]);
    assert_eq!(store.get_token("suite-tok-y").await.expect("get_token"), None);
    assert_eq!(generation(store).await, g, "creating tokens (and refusing them) leaves the generation");

    // Listing: oldest first, then by id; by kind.
    assert_eq!(token_ids(store, u, &[]).await, ["suite-tok-cli", "suite-tok-web", "suite-tok-helper", "suite-tok-pat"]);
    assert_eq!(store.list_tokens(u, &[]).await.expect("list_tokens"), [cli.clone(), web.clone(), helper.clone(), pat.clone()]);
    assert_eq!(token_ids(store, u, &TokenKind::ALL).await, ["suite-tok-cli", "suite-tok-web", "suite-tok-helper", "suite-tok-pat"]);
    assert_eq!(token_ids(store, u, &[TokenKind::Personal]).await, ["suite-tok-pat"]);
    assert_eq!(token_ids(store, u, &[TokenKind::Helper, TokenKind::Cli]).await, ["suite-tok-cli", "suite-tok-helper"]);
    assert_eq!(token_ids(store, v, &[]).await, ["suite-tok-v"]);
    assert_eq!(token_ids(store, v, &[TokenKind::Web]).await, Vec::<String>::new());
    assert_eq!(token_ids(store, "suite-tok-nobody", &[]).await, Vec::<String>::new());

    // Uses and re-checks: the generation stays.
    store.touch_token(&pat.id, T0 + 20).await.expect("touch_token");
    store.touch_token(&pat.id, T0 + 10).await.expect("touch_token");
    store.touch_token(&cli.id, T0 + 7).await.expect("touch_token");
    store.touch_token("suite-tok-none", T0).await.expect("touch_token of nothing");
    assert_eq!(store.get_token(&pat.id).await.expect("get_token").and_then(|t| t.last_used_at), Some(T0 + 20), "never back");
    assert_eq!(store.get_token(&cli.id).await.expect("get_token").and_then(|t| t.last_used_at), Some(T0 + 7));
    assert!(store.update_token_check(&cli.id, Some("refresh-cli-2"), T0 + 30).await.expect("update_token_check"));
    assert!(!store.update_token_check("suite-tok-none", None, T0).await.expect("update_token_check"));
    let checked = store.get_token(&cli.id).await.expect("get_token").expect("cli");
    assert_eq!((checked.refresh_token.as_deref(), checked.checked_at, checked.last_used_at), (Some("refresh-cli-2"), Some(T0 + 30), Some(T0 + 7)));
    // Claiming the next re-check: only from the `checked_at` the claimer saw.
    assert!(!store.claim_token_check(&cli.id, Some(T0 + 29), T0 + 31).await.expect("claim_token_check"), "another saw it first");
    assert!(!store.claim_token_check(&cli.id, None, T0 + 31).await.expect("claim_token_check"));
    assert!(store.claim_token_check(&cli.id, Some(T0 + 30), T0 + 31).await.expect("claim_token_check"));
    assert!(!store.claim_token_check(&cli.id, Some(T0 + 30), T0 + 32).await.expect("claim_token_check"), "claimed once");
    assert!(!store.claim_token_check("suite-tok-none", None, T0).await.expect("claim_token_check"));
    assert!(store.update_token_check(&cli.id, Some("refresh-cli-2"), T0 + 30).await.expect("update_token_check"));
    assert_eq!(generation(store).await, g, "uses and re-checks leave the generation");

    // Due for a re-check: with a refresh token, last checked (or, never checked, created) before
    // `before`, not expired at `now`; oldest first, then by id; at most `limit`.
    let old = TokenRecord { refresh_token: Some("refresh-old".into()), expires_at: Some(T0 + 40), ..token("suite-tok-old", u, TokenKind::Cli, None, T0) };
    let fresh = TokenRecord { refresh_token: Some("refresh-fresh".into()), ..token("suite-tok-fresh", u, TokenKind::Web, None, T0 + 5) };
    let same_time = TokenRecord { refresh_token: Some("refresh-same".into()), ..token("suite-tok-fresh0", v, TokenKind::Cli, None, T0 + 5) };
    for t in [&old, &fresh, &same_time] {
        store.create_token(t).await.expect("create_token");
    }
    assert_eq!(ids_to_check(store, T0 + 100, T0 + 39, 10).await, ["suite-tok-old", "suite-tok-fresh", "suite-tok-fresh0", "suite-tok-cli", "suite-tok-web"]);
    assert_eq!(ids_to_check(store, T0 + 100, T0 + 40, 10).await, ["suite-tok-fresh", "suite-tok-fresh0", "suite-tok-cli", "suite-tok-web"], "expired at now");
    assert_eq!(ids_to_check(store, T0 + 100, T0 + 39, 2).await, ["suite-tok-old", "suite-tok-fresh"], "a limit");
    assert_eq!(ids_to_check(store, T0 + 30, T0, 10).await, ["suite-tok-old", "suite-tok-fresh", "suite-tok-fresh0"], "checked at `before` is not before it");
    assert_eq!(ids_to_check(store, T0, T0, 10).await, Vec::<String>::new());
    assert_eq!(ids_to_check(store, T0 + 100, T0 + 10_000, 10).await, ["suite-tok-fresh", "suite-tok-fresh0", "suite-tok-cli"], "the web token expired");
    // A token without a refresh token is never due.
    assert!(store.update_token_check(&web.id, None, T0 + 60).await.expect("update_token_check"));
    assert_eq!(store.get_token(&web.id).await.expect("get_token").map(|t| (t.refresh_token, t.checked_at)), Some((None, Some(T0 + 60))));
    assert_eq!(ids_to_check(store, T0 + 100, T0 + 39, 10).await, ["suite-tok-old", "suite-tok-fresh", "suite-tok-fresh0", "suite-tok-cli"]);
    assert_eq!(generation(store).await, g);

    // Deleting a token takes its children (and theirs) and moves the generation.
    let grandchild = token("suite-tok-grandchild", u, TokenKind::Helper, Some("suite-tok-helper"), T0 + 2);
    store.create_token(&grandchild).await.expect("create_token");
    assert!(store.delete_token(&cli.id).await.expect("delete_token"));
    let g1 = generation(store).await;
    assert!(g1 > g, "deleting a token moves the generation");
    for id in [&cli.id, &helper.id, &grandchild.id] {
        assert_eq!(store.get_token(id).await.expect("get_token"), None, "{id}");
    }
    assert!(!store.delete_token(&cli.id).await.expect("delete_token"), "already gone");
    assert_eq!(generation(store).await, g1, "deleting nothing");
    assert_eq!(token_ids(store, u, &[]).await, ["suite-tok-old", "suite-tok-web", "suite-tok-pat", "suite-tok-fresh"]);

    // A user's tokens by kind, children (of any kind) counted.
    for t in [&cli, &helper, &grandchild] {
        store.create_token(t).await.expect("create_token");
    }
    assert_eq!(store.delete_user_tokens(u, &[TokenKind::Personal]).await.expect("delete_user_tokens"), 1);
    let g2 = generation(store).await;
    assert!(g2 > g1, "deleting a user's tokens moves the generation");
    assert_eq!(store.delete_user_tokens(u, &[TokenKind::Personal]).await.expect("delete_user_tokens"), 0);
    assert_eq!(store.delete_user_tokens("suite-tok-nobody", &[]).await.expect("delete_user_tokens"), 0);
    assert_eq!(generation(store).await, g2, "deleting nothing");
    assert_eq!(store.delete_user_tokens(u, &[TokenKind::Cli]).await.expect("delete_user_tokens"), 4, "old, cli, its helper and that one's child");
    assert!(generation(store).await > g2);
    assert_eq!(token_ids(store, u, &[]).await, ["suite-tok-web", "suite-tok-fresh"]);
    assert_eq!(token_ids(store, v, &[]).await, ["suite-tok-v", "suite-tok-fresh0"], "another user's tokens stay");
    assert_eq!(store.delete_user_tokens(u, &[]).await.expect("delete_user_tokens"), 2);
    assert_eq!(store.delete_user_tokens(v, &[]).await.expect("delete_user_tokens"), 2);

    // Pruning: tokens expired at `now` (expires_at <= now) with their children; the generation
    // stays.
    let expired = TokenRecord { expires_at: Some(T0 + 10), ..token("suite-tok-e1", u, TokenKind::Cli, None, T0) };
    let child = token("suite-tok-e1-child", u, TokenKind::Helper, Some("suite-tok-e1"), T0);
    let later = TokenRecord { expires_at: Some(T0 + 100), ..token("suite-tok-e2", u, TokenKind::Personal, None, T0) };
    let forever = token("suite-tok-e3", v, TokenKind::Personal, None, T0);
    for t in [&expired, &child, &later, &forever] {
        store.create_token(t).await.expect("create_token");
    }
    let g3 = generation(store).await;
    assert_eq!(store.prune_tokens(T0 + 9).await.expect("prune_tokens"), 0);
    assert_eq!(store.prune_tokens(T0 + 10).await.expect("prune_tokens"), 2, "the expired token and its child");
    assert_eq!(store.prune_tokens(T0 + 10).await.expect("prune_tokens"), 0);
    assert_eq!(token_ids(store, u, &[]).await, ["suite-tok-e2"]);
    assert_eq!(store.prune_tokens(T0 + 1_000_000).await.expect("prune_tokens"), 1);
    assert_eq!(token_ids(store, v, &[]).await, ["suite-tok-e3"], "no expiry: never pruned");
    assert_eq!(generation(store).await, g3, "pruning leaves the generation");

    // Many expired tokens with children: more than a backend is likely to prune in one batch.
    let many: Vec<TokenRecord> = (0..2400)
        .map(|i| {
            let parent = (i % 2 == 1).then(|| format!("suite-tok-many-{:05}", i - 1));
            TokenRecord { expires_at: parent.is_none().then_some(T0 + 5), ..token(&format!("suite-tok-many-{i:05}"), u, TokenKind::Cli, parent.as_deref(), T0) }
        })
        .collect();
    let rows: Vec<crate::ExportRow> = many.into_iter().map(crate::ExportRow::Token).collect();
    for chunk in rows.chunks(1000) {
        let outcome = store.import(chunk).await.expect("import");
        assert_eq!((outcome.imported, outcome.skipped.len(), outcome.deferred.len()), (chunk.len() as u64, 0, 0));
    }
    assert_eq!(store.prune_tokens(T0 + 5).await.expect("prune_tokens"), 2400);
    assert_eq!(token_ids(store, u, &[]).await, Vec::<String>::new());

    for name in [u, v] {
        assert!(store.delete_user(name).await.expect("delete_user"));
    }
    assert_eq!(store.get_token("suite-tok-e3").await.expect("get_token"), None);
}

/// A login in progress with `ttl` seconds to live from `at`.
fn auth_request(id: &str, kind: &str, at: UnixTime, ttl: UnixTime) -> AuthRequest {
    AuthRequest {
        id: id.into(),
        kind: kind.into(),
        data: serde_json::json!({"nonce": format!("nonce-{id}"), "verifier": "v", "return_to": "/ui/"}),
        created_at: at,
        expires_at: at + ttl,
    }
}

/// Logins in progress: put (an unexpired id once; an expired one replaced), the bound on pending
/// requests, get, update and take of unexpired requests only, take once, prune. Works at
/// `T0 + 5_000_000` (every other part's requests have expired by then) and counts every pending
/// request there.
pub async fn auth_requests(store: &dyn MetadataStore) {
    const N: UnixTime = T0 + 5_000_000;
    let max = 4;
    let a = auth_request("suite-auth-a", "web", N, 600);
    assert!(store.put_auth_request(&a, max, N).await.expect("put_auth_request"));
    assert_eq!(store.get_auth_request(&a.id, N).await.expect("get_auth_request"), Some(a.clone()));
    // An id in use: false, nothing changes.
    assert!(!store.put_auth_request(&AuthRequest { kind: "device".into(), ..a.clone() }, max, N + 1).await.expect("put_auth_request"));
    assert_eq!(store.get_auth_request(&a.id, N + 1).await.expect("get_auth_request"), Some(a.clone()));
    // Updating the data.
    let approved = serde_json::json!({"approved": true, "user": "suite-auth-user"});
    assert!(store.update_auth_request(&a.id, &approved, N + 2).await.expect("update_auth_request"));
    let a = AuthRequest { data: approved, ..a };
    assert_eq!(store.get_auth_request(&a.id, N + 2).await.expect("get_auth_request"), Some(a.clone()));
    assert!(!store.update_auth_request("suite-auth-none", &serde_json::json!({}), N).await.expect("update_auth_request"));
    assert_eq!(store.get_auth_request("suite-auth-none", N).await.expect("get_auth_request"), None);

    // Expired (at `expires_at`): gone for every method, and its id free again.
    let b = auth_request("suite-auth-b", "device", N, 10);
    assert!(store.put_auth_request(&b, max, N).await.expect("put_auth_request"));
    assert_eq!(store.get_auth_request(&b.id, N + 9).await.expect("get_auth_request"), Some(b.clone()));
    assert_eq!(store.get_auth_request(&b.id, N + 10).await.expect("get_auth_request"), None);
    assert!(!store.update_auth_request(&b.id, &serde_json::json!({}), N + 10).await.expect("update_auth_request"));
    assert_eq!(store.take_auth_request(&b.id, N + 10).await.expect("take_auth_request"), None);
    let b = auth_request("suite-auth-b", "web", N + 20, 600);
    assert!(store.put_auth_request(&b, max, N + 20).await.expect("put_auth_request"), "an expired id is replaced");
    assert_eq!(store.get_auth_request(&b.id, N + 20).await.expect("get_auth_request"), Some(b.clone()));

    // The bound: at most `max` pending (unexpired) requests.
    let (c, d) = (auth_request("suite-auth-c", "web", N + 20, 600), auth_request("suite-auth-d", "web", N + 20, 30));
    assert!(store.put_auth_request(&c, max, N + 20).await.expect("put_auth_request"));
    assert!(store.put_auth_request(&d, max, N + 20).await.expect("put_auth_request"));
    let e = auth_request("suite-auth-e", "web", N + 21, 600);
    assert_conflict(store.put_auth_request(&e, max, N + 21).await, &["in progress"]);
    assert_conflict(store.put_auth_request(&e, 0, N + 21).await, &["in progress"]);
    assert_eq!(store.get_auth_request(&e.id, N + 21).await.expect("get_auth_request"), None);
    // An id in use is answered as such even when the store is full.
    assert!(!store.put_auth_request(&c, max, N + 21).await.expect("put_auth_request"));
    // Expired requests do not count.
    assert!(store.put_auth_request(&e, max, N + 50).await.expect("put_auth_request"), "d expired at {}", N + 50);
    let f = auth_request("suite-auth-f", "web", N + 50, 600);
    assert_conflict(store.put_auth_request(&f, max, N + 50).await, &["in progress"]);

    // Taking: once.
    assert_eq!(store.take_auth_request(&a.id, N + 51).await.expect("take_auth_request"), Some(a.clone()));
    assert_eq!(store.take_auth_request(&a.id, N + 51).await.expect("take_auth_request"), None, "single use");
    assert_eq!(store.get_auth_request(&a.id, N + 51).await.expect("get_auth_request"), None);
    assert!(!store.update_auth_request(&a.id, &serde_json::json!({}), N + 51).await.expect("update_auth_request"));
    assert!(store.put_auth_request(&f, max, N + 51).await.expect("put_auth_request"), "taking one made room");

    // Pruning: what expired at `now`.
    assert_eq!(store.prune_auth_requests(N + 50).await.expect("prune_auth_requests"), 1, "d");
    assert_eq!(store.prune_auth_requests(N + 50).await.expect("prune_auth_requests"), 0);
    assert_eq!(store.get_auth_request(&b.id, N + 50).await.expect("get_auth_request"), Some(b.clone()), "unexpired ones stay");
    assert_eq!(store.prune_auth_requests(N + 10_000).await.expect("prune_auth_requests"), 4, "b, c, e and f");
    assert_eq!(store.get_auth_request(&f.id, N + 52).await.expect("get_auth_request"), None);
}

/// Many takes of one login in progress at once: exactly one gets it. Then many puts at once
/// against the bound on pending requests: exactly that many are stored, the others refused.
/// Handles as for [`upload_claim_race`]; works at `T0 + 6_000_000` and takes what it stored.
pub async fn auth_request_race(one: &dyn MetadataStore, two: &dyn MetadataStore) {
    const N: UnixTime = T0 + 6_000_000;
    for round in 0..4 {
        let request = auth_request(&format!("suite-authrace-{round}"), "web", N, 600);
        assert!(one.put_auth_request(&request, 1000, N).await.expect("put_auth_request"));
        let takers = (0..RACERS).map(|i| {
            let (store, id) = (if i % 2 == 0 { one } else { two }, request.id.clone());
            async move { store.take_auth_request(&id, N + 1).await.expect("take_auth_request") }
        });
        let got = join_all(takers).await;
        let winners: Vec<&AuthRequest> = got.iter().flatten().collect();
        assert_eq!(winners, [&request], "round {round}: exactly one of {RACERS} concurrent takes gets it");
        assert_eq!(two.get_auth_request(&request.id, N + 1).await.expect("get_auth_request"), None);
    }
    let max = 5;
    let requests: Vec<AuthRequest> = (0..RACERS).map(|i| auth_request(&format!("suite-authbound-{i:02}"), "web", N, 600)).collect();
    let putters = requests.iter().enumerate().map(|(i, r)| {
        let store = if i % 2 == 0 { two } else { one };
        async move { store.put_auth_request(r, max, N).await }
    });
    let got = join_all(putters).await;
    let stored = got.iter().filter(|r| matches!(r, Ok(true))).count();
    let refused = got.iter().filter(|r| matches!(r, Err(MetaError::Conflict(_)))).count();
    assert_eq!((stored, refused), (max as usize, RACERS - max as usize), "the bound holds under concurrent puts: {got:?}");
    let mut taken = 0;
    for r in &requests {
        taken += usize::from(one.take_auth_request(&r.id, N + 1).await.expect("take_auth_request").is_some());
    }
    assert_eq!(taken, max as usize);
}

/// Replicas that found the same token due for a re-check claim it at once: exactly one wins
/// (identity providers revoke a grant whose rotated refresh token is used twice). Handles as for
/// [`upload_claim_race`]; removes what it made.
pub async fn token_check_race(one: &dyn MetadataStore, two: &dyn MetadataStore) {
    let user = UserRecord { name: "suite-checkrace".into(), created_at: T0, ..Default::default() };
    one.put_user(&user).await.expect("put_user");
    for round in 0..4 {
        let t = TokenRecord { refresh_token: Some("r".into()), checked_at: None, ..token(&format!("suite-checkrace-{round}"), &user.name, TokenKind::Cli, None, T0) };
        one.create_token(&t).await.expect("create_token");
        let claimers = (0..RACERS).map(|i| {
            let (store, id) = (if i % 2 == 0 { one } else { two }, t.id.clone());
            async move { store.claim_token_check(&id, None, T0 + 10).await.expect("claim_token_check") }
        });
        let won = join_all(claimers).await.into_iter().filter(|w| *w).count();
        assert_eq!(won, 1, "round {round}: exactly one of {RACERS} concurrent claims wins");
    }
    assert!(one.delete_user(&user.name).await.expect("delete_user"));
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
    let m = put_ok(store, &r, &image(&a, &[]), &[tag("keep")], old).await;
    // B: old unreferenced link: link and record go.
    let b = push_blob(store, &r, "gc-b", old).await.0;
    // C: old link refreshed by a second commit: survives.
    let c = push_blob(store, &r, "gc-c", old).await.0;
    let (_, again) = store.commit_blob(&r, &c, 4, "key/gc-c-again", new).await.map(|x| ((), x)).expect("commit");
    assert_eq!(again, BlobCommit::AlreadyPresent { existing_key: key("gc-c") });
    // D: old link in r, but referenced in r2: the r link goes, the record stays.
    let d = push_blob(store, &r, "gc-d", old).await.0;
    push_blob(store, &r2, "gc-d", old).await;
    put_ok(store, &r2, &image(&d, &[]), &[], old).await;
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
    let hm = put_ok(store, &r, &image(&h, &[]), &[], new).await;
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
        put_ok(store, r, &image(&config, &refs), &[tag("keep")], 10).await;
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

/// A manifest push racing garbage collection, round after round: a blob is committed with an
/// old last-used time (so a collection would take it), then `collect_garbage(now, ..)` and a
/// `put_manifest` referencing it run at once (on `one` and `two` in turn, each started first in
/// turn). Each round one of them wins, exactly: either the put was refused as `Missing` that
/// blob (and the collection deleted its key), or it was stored and the blob is still linked with
/// its key in use and not among the collection's deleted keys. A collection that does not
/// re-check its deletions under the write lock, or a put that checks its references outside its
/// transaction, fails it.
///
/// Works at times 1000..2000, between [`gc_many`] and [`T0`]; its collections take nothing of
/// the other parts (what they leave below 2000 is referenced) and no upload session.
pub async fn gc_race(one: &dyn MetadataStore, two: &dyn MetadataStore) {
    let r = repo("suite/gcrace");
    let (old, now) = (1000, 2000);
    // Each run takes fresh digests (a run's stored manifests and blobs stay), numbered by a
    // setting per run so that the suite can run again on the same database.
    let mut run = 0;
    while one.get_setting(&format!("suite.gcrace.{run}")).await.expect("get_setting").is_some() {
        run += 1;
    }
    one.init_setting(&format!("suite.gcrace.{run}"), "taken").await.expect("init_setting");
    for round in 0..40 {
        let seed = format!("gcrace-{run}-{round}");
        let (blob, c) = push_blob(one, &r, &seed, old).await;
        assert_eq!(c, BlobCommit::Stored);
        let bytes = image(&blob, &[]);
        let (gc_store, put_store) = if round % 2 == 0 { (one, two) } else { (two, one) };
        let gc = async { gc_store.collect_garbage(now, UnixTime::MIN).await.expect("collect_garbage") };
        let push = put(put_store, &r, &bytes, &[], now);
        let (report, (manifest, outcome)) = if round % 4 < 2 {
            tokio::join!(gc, push)
        } else {
            let (pushed, report) = tokio::join!(push, gc);
            (report, pushed)
        };
        assert!(report.stale_uploads.is_empty(), "round {round}: {report:?}");
        let deleted = report.deleted_keys.contains(&key(&seed));
        match outcome {
            PutManifestOutcome::Stored => {
                assert!(!deleted, "round {round}: the manifest was stored but its blob's key was collected: {report:?}");
                let linked = one.repo_blob(&r, &blob).await.expect("repo_blob");
                assert_eq!(linked.map(|b| b.storage_key), Some(key(&seed)), "round {round}: a stored manifest's blob must stay linked");
                assert!(two.key_in_use(&key(&seed)).await.expect("key_in_use"), "round {round}");
                assert!(get(one, &r, Reference::Digest(manifest)).await.is_some(), "round {round}");
            }
            PutManifestOutcome::Missing(missing) => {
                assert_eq!(missing, vec![blob.clone()], "round {round}");
                assert!(deleted, "round {round}: the put was refused, so the collection took the link and then the record: {report:?}");
                assert_eq!(one.repo_blob(&r, &blob).await.expect("repo_blob"), None, "round {round}");
                assert!(get(two, &r, Reference::Digest(manifest)).await.is_none(), "round {round}: a refused put stores nothing");
            }
        }
        assert!(report.deleted_keys.iter().all(|k| *k == key(&seed)), "round {round}: the collection took only this round's blob: {report:?}");
    }
}

// ---- projects, robots, identity providers, generation ----
//
// Names start with `suite-` (projects, providers) or `robot$suite-` (robots); listings are
// compared after keeping only the part's own names, so the parts can run in any order.

/// A robot of `project` (or a system robot) with rules and permissions, created at [`T0`].
fn robot(name: &str, project: Option<&str>, provider: Option<&str>, secret: Option<&str>) -> RobotRecord {
    RobotRecord {
        name: name.into(),
        project: project.map(Into::into),
        description: format!("{name} for the suite"),
        disabled: false,
        expires_at: None,
        secret_hash: secret.map(Into::into),
        identity_provider: provider.map(Into::into),
        rules: serde_json::json!([{"claim": "repository", "equals": "org/repo"}, {"claim": "ref", "glob": "refs/tags/*"}]),
        permissions: serde_json::json!([{"project": project, "repositories": ["app-*"], "actions": ["pull", "push"]}]),
        created_at: T0,
        updated_at: T0,
    }
}

fn project(name: &str, public: bool, created_at: UnixTime) -> ProjectRecord {
    ProjectRecord { name: name.into(), public, created_at }
}

fn provider(name: &str, issuer: &str, at: UnixTime) -> IdentityProviderRecord {
    IdentityProviderRecord {
        name: name.into(),
        config: serde_json::json!({"name": name, "issuer": issuer, "audiences": ["berth"], "claims": {"sub": "subject"}}),
        created_at: at,
        updated_at: at,
    }
}

/// The names of `items` that start with `prefix`, in the order given.
fn names_with<T>(items: Vec<T>, name: impl Fn(&T) -> &str, prefix: &str) -> Vec<String> {
    items.iter().map(name).filter(|n| n.starts_with(prefix)).map(str::to_owned).collect()
}

async fn robot_names(store: &dyn MetadataStore, project: Option<&str>, prefix: &str) -> Vec<String> {
    names_with(store.list_robots(project).await.expect("list_robots"), |r| r.name.as_str(), prefix)
}

async fn robot_names_of_provider(store: &dyn MetadataStore, provider: &str) -> Vec<String> {
    names_with(store.list_robots_by_provider(provider).await.expect("list_robots_by_provider"), |r| r.name.as_str(), "")
}

/// Asserts `result` is a [`MetaError::Conflict`] whose message mentions each of `words`.
fn assert_conflict<T: std::fmt::Debug>(result: crate::Result<T>, words: &[&str]) {
    match result {
        Err(MetaError::Conflict(m)) => {
            for w in words {
                assert!(m.contains(w), "conflict message {m:?} should name {w:?}");
            }
        }
        other => panic!("expected a Conflict naming {words:?}, got {other:?}"),
    }
}

/// Asserts `outcome` is `InUse` with a message naming each of `words`.
fn assert_in_use(outcome: DeleteOutcome, words: &[&str]) {
    match outcome {
        DeleteOutcome::InUse(m) => {
            for w in words {
                assert!(m.contains(w), "in-use message {m:?} should name {w:?}");
            }
        }
        other => panic!("expected InUse naming {words:?}, got {other:?}"),
    }
}

/// Projects: create (and again), upsert keeping the creation time, get, list, delete (refused
/// while a robot belongs to the project).
pub async fn projects(store: &dyn MetadataStore) {
    let name = "suite-proj-lib";
    assert_eq!(store.get_project(name).await.expect("get_project"), None);
    assert!(store.create_project(&project(name, false, T0)).await.expect("create_project"));
    assert_eq!(store.get_project(name).await.expect("get_project"), Some(project(name, false, T0)));
    // Creating it again reports it and changes nothing.
    assert!(!store.create_project(&project(name, true, T0 + 5)).await.expect("create_project"));
    assert_eq!(store.get_project(name).await.expect("get_project"), Some(project(name, false, T0)));

    // put updates an existing project but keeps its creation time, and creates a missing one.
    store.put_project(&project(name, true, T0 + 9)).await.expect("put_project");
    assert_eq!(store.get_project(name).await.expect("get_project"), Some(project(name, true, T0)));
    store.put_project(&project(name, false, T0 + 10)).await.expect("put_project");
    assert_eq!(store.get_project(name).await.expect("get_project"), Some(project(name, false, T0)));
    store.put_project(&project("suite-proj-app", true, T0 + 1)).await.expect("put_project");
    assert_eq!(store.get_project("suite-proj-app").await.expect("get_project"), Some(project("suite-proj-app", true, T0 + 1)));
    assert!(store.create_project(&project("suite-proj-zeta", false, T0 + 2)).await.expect("create_project"));

    // Names are exact; the listing is by name and carries every field.
    assert_eq!(store.get_project("suite-proj").await.expect("get_project"), None);
    assert_eq!(store.get_project("Suite-Proj-Lib").await.expect("get_project"), None);
    let listed: Vec<ProjectRecord> =
        store.list_projects().await.expect("list_projects").into_iter().filter(|p| p.name.starts_with("suite-proj-")).collect();
    assert_eq!(
        listed,
        vec![project("suite-proj-app", true, T0 + 1), project(name, false, T0), project("suite-proj-zeta", false, T0 + 2)]
    );

    // Not deleted while robots belong to it; the message names them.
    let ci = robot("robot$suite-proj-lib+ci", Some(name), None, Some("$argon2id$ci"));
    let cd = robot("robot$suite-proj-lib+cd", Some(name), None, None);
    store.put_robot(&ci).await.expect("put_robot");
    store.put_robot(&cd).await.expect("put_robot");
    assert_in_use(store.delete_project(name).await.expect("delete_project"), &["robot$suite-proj-lib+cd", "robot$suite-proj-lib+ci"]);
    assert!(store.delete_robot(&ci.name).await.expect("delete_robot"));
    assert_in_use(store.delete_project(name).await.expect("delete_project"), &["robot$suite-proj-lib+cd"]);
    assert!(store.get_project(name).await.expect("get_project").is_some(), "a refused delete keeps the project");
    // A system robot or another project's robot does not hold it.
    store.put_robot(&robot("robot$suite-proj-sys", None, None, None)).await.expect("put_robot");
    store.put_robot(&robot("robot$suite-proj-app+x", Some("suite-proj-app"), None, None)).await.expect("put_robot");
    assert!(store.delete_robot(&cd.name).await.expect("delete_robot"));
    assert_eq!(store.delete_project(name).await.expect("delete_project"), DeleteOutcome::Deleted);
    assert_eq!(store.get_project(name).await.expect("get_project"), None);
    assert_eq!(store.delete_project(name).await.expect("delete_project"), DeleteOutcome::NotFound);
    assert_eq!(store.delete_project("suite-proj-never").await.expect("delete_project"), DeleteOutcome::NotFound);
    // Deleted projects can be created again.
    assert!(store.create_project(&project(name, true, T0 + 20)).await.expect("create_project"));
    assert_eq!(store.get_project(name).await.expect("get_project"), Some(project(name, true, T0 + 20)));

    // Many robots: the message stays short but still names some.
    for i in 0..8 {
        store.put_robot(&robot(&format!("robot$suite-proj-zeta+r{i}"), Some("suite-proj-zeta"), None, None)).await.expect("put_robot");
    }
    assert_in_use(store.delete_project("suite-proj-zeta").await.expect("delete_project"), &["robot$suite-proj-zeta+r0"]);

    // Clean up what other parts' listings might see.
    for i in 0..8 {
        assert!(store.delete_robot(&format!("robot$suite-proj-zeta+r{i}")).await.expect("delete_robot"));
    }
    for r in ["robot$suite-proj-sys", "robot$suite-proj-app+x"] {
        assert!(store.delete_robot(r).await.expect("delete_robot"));
    }
    assert_eq!(store.delete_project("suite-proj-zeta").await.expect("delete_project"), DeleteOutcome::Deleted);
}

/// Robots: round trip, upsert keeping the creation time, the references to projects and
/// providers, the secret-or-provider rule, listings, delete.
pub async fn robots(store: &dyn MetadataStore) {
    let p = "suite-rob-lib";
    let idp = "suite-rob-idp";
    assert!(store.create_project(&project(p, false, T0)).await.expect("create_project"));
    assert!(store.create_project(&project("suite-rob-other", false, T0)).await.expect("create_project"));
    store.put_identity_provider(&provider(idp, "https://issuer.example", T0)).await.expect("put_identity_provider");
    store.put_identity_provider(&provider("suite-rob-idp2", "https://two.example", T0)).await.expect("put_identity_provider");

    // A static-secret system robot, with every field set: it round-trips exactly.
    let sys = RobotRecord {
        disabled: true,
        expires_at: Some(T0 + 86_400),
        description: "déploiement, \"quoted\" and ünïcode".into(),
        rules: serde_json::json!([]),
        permissions: serde_json::json!([{"project": "suite-rob-lib", "repositories": ["**"], "actions": ["pull"]},
                                         {"project": "suite-rob-other", "repositories": ["a", "b/*"], "actions": ["*"]}]),
        ..robot("robot$suite-rob-deployer", None, None, Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"))
    };
    assert_eq!(store.get_robot(&sys.name).await.expect("get_robot"), None);
    store.put_robot(&sys).await.expect("put_robot");
    assert_eq!(store.get_robot(&sys.name).await.expect("get_robot"), Some(sys.clone()));

    // A federated project robot.
    let ci = robot("robot$suite-rob-lib+ci", Some(p), Some(idp), None);
    store.put_robot(&ci).await.expect("put_robot");
    assert_eq!(store.get_robot(&ci.name).await.expect("get_robot"), Some(ci.clone()));
    // A robot with neither secret nor provider is allowed (it cannot log in).
    let idle = robot("robot$suite-rob-lib+idle", Some(p), None, None);
    store.put_robot(&idle).await.expect("put_robot");
    assert_eq!(store.get_robot(&idle.name).await.expect("get_robot"), Some(idle.clone()));

    // Upsert: every field but the creation time is replaced.
    let ci2 = RobotRecord {
        description: "changed".into(),
        disabled: true,
        expires_at: Some(T0 + 60),
        rules: serde_json::json!([{"cel": "claims.ref.startsWith('refs/tags/')"}]),
        permissions: serde_json::json!([]),
        identity_provider: Some("suite-rob-idp2".into()),
        created_at: T0 + 500,
        updated_at: T0 + 100,
        ..ci.clone()
    };
    store.put_robot(&ci2).await.expect("put_robot");
    assert_eq!(store.get_robot(&ci.name).await.expect("get_robot"), Some(RobotRecord { created_at: T0, ..ci2.clone() }));
    // A federated robot may become a static-secret one (and back), and optional fields clear.
    let ci3 = RobotRecord { identity_provider: None, secret_hash: Some("$argon2id$new".into()), expires_at: None, ..ci2.clone() };
    store.put_robot(&ci3).await.expect("put_robot");
    assert_eq!(store.get_robot(&ci.name).await.expect("get_robot"), Some(RobotRecord { created_at: T0, ..ci3 }));
    store.put_robot(&ci).await.expect("put_robot");
    assert_eq!(store.get_robot(&ci.name).await.expect("get_robot"), Some(ci.clone()));

    // References: an unknown project or provider is refused with a message naming it, and
    // nothing is stored.
    let ghost = robot("robot$suite-rob-ghost+x", Some("suite-rob-ghost"), None, Some("h"));
    assert_conflict(store.put_robot(&ghost).await, &["suite-rob-ghost"]);
    assert_eq!(store.get_robot(&ghost.name).await.expect("get_robot"), None);
    let lost = robot("robot$suite-rob-lost", None, Some("suite-rob-nosuchidp"), None);
    assert_conflict(store.put_robot(&lost).await, &["suite-rob-nosuchidp"]);
    assert_eq!(store.get_robot(&lost.name).await.expect("get_robot"), None);
    // Both wrong: still refused.
    let both_wrong = robot("robot$suite-rob-gone+y", Some("suite-rob-gone"), Some("suite-rob-gone-idp"), None);
    assert!(matches!(store.put_robot(&both_wrong).await, Err(MetaError::Conflict(_))));
    // Updating an existing robot to an unknown reference is refused and keeps the stored robot.
    assert_conflict(store.put_robot(&RobotRecord { project: Some("suite-rob-ghost".into()), ..ci.clone() }).await, &["suite-rob-ghost"]);
    assert_conflict(
        store.put_robot(&RobotRecord { identity_provider: Some("suite-rob-nosuchidp".into()), ..ci.clone() }).await,
        &["suite-rob-nosuchidp"],
    );
    assert_eq!(store.get_robot(&ci.name).await.expect("get_robot"), Some(ci.clone()));

    // A static secret and a provider together are refused, new or updated.
    let both = robot("robot$suite-rob-both", None, Some(idp), Some("$argon2id$x"));
    assert!(matches!(store.put_robot(&both).await, Err(MetaError::Conflict(_))));
    assert_eq!(store.get_robot(&both.name).await.expect("get_robot"), None);
    let ci_both = RobotRecord { secret_hash: Some("$argon2id$x".into()), ..ci.clone() };
    assert!(matches!(store.put_robot(&ci_both).await, Err(MetaError::Conflict(_))));
    assert_eq!(store.get_robot(&ci.name).await.expect("get_robot"), Some(ci.clone()));

    // Listings, by name.
    let other = robot("robot$suite-rob-other+a", Some("suite-rob-other"), Some(idp), None);
    let sys2 = robot("robot$suite-rob-auditor", None, Some("suite-rob-idp2"), None);
    store.put_robot(&other).await.expect("put_robot");
    store.put_robot(&sys2).await.expect("put_robot");
    assert_eq!(robot_names(store, Some(p), "").await, ["robot$suite-rob-lib+ci", "robot$suite-rob-lib+idle"]);
    assert_eq!(robot_names(store, Some("suite-rob-other"), "").await, ["robot$suite-rob-other+a"]);
    assert!(store.list_robots(Some("suite-rob-nosuch")).await.expect("list_robots").is_empty());
    assert_eq!(
        robot_names(store, None, "robot$suite-rob-").await,
        [
            "robot$suite-rob-auditor",
            "robot$suite-rob-deployer",
            "robot$suite-rob-lib+ci",
            "robot$suite-rob-lib+idle",
            "robot$suite-rob-other+a"
        ]
    );
    // Listed records are complete.
    let listed = store.list_robots(Some(p)).await.expect("list_robots");
    assert_eq!(listed, vec![ci.clone(), idle.clone()]);
    assert_eq!(store.list_robots(None).await.expect("list_robots").into_iter().find(|r| r.name == sys.name), Some(sys.clone()));

    // By provider.
    assert_eq!(robot_names_of_provider(store, idp).await, ["robot$suite-rob-lib+ci", "robot$suite-rob-other+a"]);
    assert_eq!(robot_names_of_provider(store, "suite-rob-idp2").await, ["robot$suite-rob-auditor"]);
    assert!(robot_names_of_provider(store, "suite-rob-nosuchidp").await.is_empty());
    assert!(robot_names_of_provider(store, "suite-rob-idp").await.len() == 2, "provider names are exact");
    assert_eq!(store.list_robots_by_provider(idp).await.expect("list_robots_by_provider")[0], ci);
    // Moving a robot to another provider moves it in the listing.
    store.put_robot(&RobotRecord { identity_provider: Some("suite-rob-idp2".into()), ..other.clone() }).await.expect("put_robot");
    assert_eq!(robot_names_of_provider(store, idp).await, ["robot$suite-rob-lib+ci"]);
    assert_eq!(robot_names_of_provider(store, "suite-rob-idp2").await, ["robot$suite-rob-auditor", "robot$suite-rob-other+a"]);
    // Moving a robot to another project moves it too.
    store.put_robot(&RobotRecord { project: Some("suite-rob-other".into()), ..idle.clone() }).await.expect("put_robot");
    assert_eq!(robot_names(store, Some(p), "").await, ["robot$suite-rob-lib+ci"]);

    // Delete.
    assert!(store.delete_robot(&ci.name).await.expect("delete_robot"));
    assert!(!store.delete_robot(&ci.name).await.expect("delete_robot"));
    assert!(!store.delete_robot("robot$suite-rob-never").await.expect("delete_robot"));
    assert_eq!(store.get_robot(&ci.name).await.expect("get_robot"), None);
    assert!(robot_names_of_provider(store, idp).await.is_empty());
    assert!(store.list_robots(Some(p)).await.expect("list_robots").is_empty());
    // A deleted robot can be created again, with a new creation time.
    let again = RobotRecord { created_at: T0 + 1000, updated_at: T0 + 1000, ..ci.clone() };
    store.put_robot(&again).await.expect("put_robot");
    assert_eq!(store.get_robot(&ci.name).await.expect("get_robot"), Some(again));

    // Clean up.
    for r in ["robot$suite-rob-lib+ci", "robot$suite-rob-lib+idle", "robot$suite-rob-other+a", "robot$suite-rob-auditor", "robot$suite-rob-deployer"] {
        assert!(store.delete_robot(r).await.expect("delete_robot"), "{r}");
    }
    for p in [p, "suite-rob-other"] {
        assert_eq!(store.delete_project(p).await.expect("delete_project"), DeleteOutcome::Deleted);
    }
    for i in [idp, "suite-rob-idp2"] {
        assert_eq!(store.delete_identity_provider(i).await.expect("delete_identity_provider"), DeleteOutcome::Deleted);
    }
}

/// Identity providers: round trip, upsert keeping the creation time, list, delete (refused while
/// a robot is federated with it).
pub async fn identity_providers(store: &dyn MetadataStore) {
    let gh = provider("suite-idp-github", "https://token.actions.githubusercontent.com", T0);
    assert_eq!(store.get_identity_provider(&gh.name).await.expect("get_identity_provider"), None);
    store.put_identity_provider(&gh).await.expect("put_identity_provider");
    assert_eq!(store.get_identity_provider(&gh.name).await.expect("get_identity_provider"), Some(gh.clone()));

    // Upsert: the document and update time change, the creation time stays.
    let mut doc = gh.config.clone();
    doc["issuer"] = serde_json::json!("https://other.example");
    doc["nested"] = serde_json::json!({"list": [1, 2.5, null, true, "ü"], "empty": {}});
    let gh2 = IdentityProviderRecord { config: doc, created_at: T0 + 50, updated_at: T0 + 60, ..gh.clone() };
    store.put_identity_provider(&gh2).await.expect("put_identity_provider");
    let want = IdentityProviderRecord { created_at: T0, ..gh2.clone() };
    assert_eq!(store.get_identity_provider(&gh.name).await.expect("get_identity_provider"), Some(want.clone()));

    let gl = provider("suite-idp-gitlab", "https://gitlab.example", T0 + 1);
    let k8s = provider("suite-idp-a-k8s", "https://kubernetes.default.svc", T0 + 2);
    store.put_identity_provider(&gl).await.expect("put_identity_provider");
    store.put_identity_provider(&k8s).await.expect("put_identity_provider");
    let listed: Vec<IdentityProviderRecord> = store
        .list_identity_providers()
        .await
        .expect("list_identity_providers")
        .into_iter()
        .filter(|p| p.name.starts_with("suite-idp-"))
        .collect();
    assert_eq!(listed, vec![k8s.clone(), want, gl.clone()]);
    assert_eq!(store.get_identity_provider("suite-idp").await.expect("get_identity_provider"), None);

    // Refused while robots are federated with it; a static-secret robot does not count.
    store.put_robot(&robot("robot$suite-idp-secret", None, None, Some("$argon2id$s"))).await.expect("put_robot");
    store.put_robot(&robot("robot$suite-idp-fed", None, Some(&gh.name), None)).await.expect("put_robot");
    store.put_robot(&robot("robot$suite-idp-k8s", None, Some(&k8s.name), None)).await.expect("put_robot");
    assert_in_use(store.delete_identity_provider(&gh.name).await.expect("delete_identity_provider"), &["robot$suite-idp-fed"]);
    assert!(store.get_identity_provider(&gh.name).await.expect("get_identity_provider").is_some());
    // Once the robot leaves the provider, it can go.
    store.put_robot(&robot("robot$suite-idp-fed", None, None, None)).await.expect("put_robot");
    assert_eq!(store.delete_identity_provider(&gh.name).await.expect("delete_identity_provider"), DeleteOutcome::Deleted);
    assert_eq!(store.get_identity_provider(&gh.name).await.expect("get_identity_provider"), None);
    assert_eq!(store.delete_identity_provider(&gh.name).await.expect("delete_identity_provider"), DeleteOutcome::NotFound);
    assert_eq!(store.delete_identity_provider(&gl.name).await.expect("delete_identity_provider"), DeleteOutcome::Deleted);
    // Robots can no longer refer to a deleted provider.
    assert_conflict(store.put_robot(&robot("robot$suite-idp-fed", None, Some(&gh.name), None)).await, &[gh.name.as_str()]);
    // A provider can be added again.
    store.put_identity_provider(&gh).await.expect("put_identity_provider");
    assert_eq!(store.get_identity_provider(&gh.name).await.expect("get_identity_provider"), Some(gh.clone()));

    // Clean up.
    for r in ["robot$suite-idp-secret", "robot$suite-idp-fed", "robot$suite-idp-k8s"] {
        assert!(store.delete_robot(r).await.expect("delete_robot"));
    }
    for p in [&gh.name, &k8s.name] {
        assert_eq!(store.delete_identity_provider(p).await.expect("delete_identity_provider"), DeleteOutcome::Deleted);
    }
}

/// The federation generation: every write to projects, robots or identity providers increases
/// it; reads, refused writes, writes that change nothing and other tables' writes leave it.
pub async fn federation_generation(store: &dyn MetadataStore) {
    async fn generation(store: &dyn MetadataStore) -> i64 {
        store.federation_generation().await.expect("federation_generation")
    }
    let mut last = generation(store).await;
    // Asserts the generation grew (`true`) or stayed (`false`) since the last check.
    macro_rules! check {
        ($grew:expr, $what:expr) => {{
            let now = generation(store).await;
            if $grew {
                assert!(now > last, "{} must increase the generation ({last} -> {now})", $what);
            } else {
                assert_eq!(now, last, "{} must not change the generation", $what);
            }
            last = now;
        }};
    }
    check!(false, "reading the generation");

    let (p, idp, r) = ("suite-gen-proj", "suite-gen-idp", "robot$suite-gen-proj+ci");
    assert!(store.create_project(&project(p, false, T0)).await.expect("create_project"));
    check!(true, "create_project");
    assert!(!store.create_project(&project(p, false, T0)).await.expect("create_project"));
    check!(false, "create_project of an existing project");
    store.put_project(&project(p, true, T0)).await.expect("put_project");
    check!(true, "put_project (update)");
    store.put_project(&project("suite-gen-proj2", false, T0)).await.expect("put_project");
    check!(true, "put_project (create)");
    store.put_identity_provider(&provider(idp, "https://gen.example", T0)).await.expect("put_identity_provider");
    check!(true, "put_identity_provider (create)");
    store.put_identity_provider(&provider(idp, "https://gen2.example", T0 + 1)).await.expect("put_identity_provider");
    check!(true, "put_identity_provider (update)");
    store.put_robot(&robot(r, Some(p), Some(idp), None)).await.expect("put_robot");
    check!(true, "put_robot (create)");
    store.put_robot(&RobotRecord { disabled: true, ..robot(r, Some(p), Some(idp), None) }).await.expect("put_robot");
    check!(true, "put_robot (update)");

    // Reads.
    store.get_project(p).await.expect("get_project");
    store.list_projects().await.expect("list_projects");
    store.get_robot(r).await.expect("get_robot");
    store.list_robots(None).await.expect("list_robots");
    store.list_robots(Some(p)).await.expect("list_robots");
    store.list_robots_by_provider(idp).await.expect("list_robots_by_provider");
    store.get_identity_provider(idp).await.expect("get_identity_provider");
    store.list_identity_providers().await.expect("list_identity_providers");
    check!(false, "reads");

    // Refused writes roll back whole.
    assert!(store.put_robot(&robot("robot$suite-gen-x+y", Some("suite-gen-none"), None, None)).await.is_err());
    assert!(store.put_robot(&robot("robot$suite-gen-z", None, Some("suite-gen-none"), None)).await.is_err());
    assert!(store.put_robot(&robot("robot$suite-gen-z", None, Some(idp), Some("h"))).await.is_err());
    assert!(matches!(store.delete_project(p).await.expect("delete_project"), DeleteOutcome::InUse(_)));
    assert!(matches!(store.delete_identity_provider(idp).await.expect("delete_identity_provider"), DeleteOutcome::InUse(_)));
    check!(false, "refused writes");
    // Deleting what does not exist.
    assert!(!store.delete_robot("robot$suite-gen-none").await.expect("delete_robot"));
    assert_eq!(store.delete_project("suite-gen-none").await.expect("delete_project"), DeleteOutcome::NotFound);
    assert_eq!(store.delete_identity_provider("suite-gen-none").await.expect("delete_identity_provider"), DeleteOutcome::NotFound);
    check!(false, "deleting what does not exist");
    // Other tables.
    store.append_audit(&[audit_event(1, "token", "ok", &[r], None, Some(idp))]).await.expect("append_audit");
    store.record_login_failure("suite-gen:key", T0).await.expect("record_login_failure");
    store.forgive_login_failure("suite-gen:key", T0).await.expect("forgive_login_failure");
    store.init_setting("suite.gen", "v").await.expect("init_setting");
    check!(false, "writes to the audit log, login failures and settings");
    assert_eq!(store.prune_audit(2).await.expect("prune_audit"), 1);

    // Users: every change moves it (login caches are keyed by the generation), so a new
    // password, a disabled or a deleted user is seen by every replica.
    let u = "suite-gen-user";
    store.put_user(&user(u, "h", false, false)).await.expect("put_user");
    check!(true, "put_user (create)");
    store.put_user(&user(u, "h2", false, false)).await.expect("put_user");
    check!(true, "put_user (new password)");
    store.put_user(&user(u, "h2", false, true)).await.expect("put_user");
    check!(true, "put_user (disable)");
    store.put_user(&user(u, "h2", true, true)).await.expect("put_user");
    check!(true, "put_user (admin flag)");
    store.get_user(u).await.expect("get_user");
    store.list_users().await.expect("list_users");
    store.count_users().await.expect("count_users");
    check!(false, "reading users");
    assert!(store.delete_user(u).await.expect("delete_user"));
    check!(true, "delete_user");
    assert!(!store.delete_user(u).await.expect("delete_user"));
    check!(false, "delete_user of a user that does not exist");
    // Robots: a new secret, deleting.
    let sr = "robot$suite-gen-secret";
    store.put_robot(&robot(sr, None, None, Some("h1"))).await.expect("put_robot");
    check!(true, "put_robot (a static-secret robot)");
    store.put_robot(&robot(sr, None, None, Some("h2"))).await.expect("put_robot");
    check!(true, "put_robot (a regenerated secret)");
    assert!(store.delete_robot(sr).await.expect("delete_robot"));
    check!(true, "delete_robot (a static-secret robot)");

    // Deletes.
    assert!(store.delete_robot(r).await.expect("delete_robot"));
    check!(true, "delete_robot");
    assert_eq!(store.delete_project(p).await.expect("delete_project"), DeleteOutcome::Deleted);
    check!(true, "delete_project");
    assert_eq!(store.delete_identity_provider(idp).await.expect("delete_identity_provider"), DeleteOutcome::Deleted);
    check!(true, "delete_identity_provider");

    // Concurrent writes: none is lost.
    let writes = 8;
    let before = last;
    let names: Vec<String> = (0..writes).map(|i| format!("robot$suite-gen-c{i}")).collect();
    let put = |i: usize| {
        let r = robot(&names[i], None, None, None);
        async move { store.put_robot(&r).await }
    };
    let results = tokio::join!(put(0), put(1), put(2), put(3), put(4), put(5), put(6), put(7));
    let results = [results.0, results.1, results.2, results.3, results.4, results.5, results.6, results.7];
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let after = generation(store).await;
    assert!(after >= before + writes, "{writes} concurrent writes moved the generation from {before} to {after}");
    for n in &names {
        assert!(store.delete_robot(n).await.expect("delete_robot"));
    }
    assert_eq!(store.delete_project("suite-gen-proj2").await.expect("delete_project"), DeleteOutcome::Deleted);
}

/// `create_robot` and `create_identity_provider`: only when the name is free, with the
/// reference checks of `put_robot`; the generation moves only when something was created.
pub async fn creates(store: &dyn MetadataStore) {
    async fn generation(store: &dyn MetadataStore) -> i64 {
        store.federation_generation().await.expect("federation_generation")
    }
    let (p, idp) = ("suite-create-proj", "suite-create-idp");
    assert!(store.create_project(&project(p, false, T0)).await.expect("create_project"));

    let g = generation(store).await;
    let gh = provider(idp, "https://create.example", T0);
    assert!(store.create_identity_provider(&gh).await.expect("create_identity_provider"));
    assert_eq!(store.get_identity_provider(idp).await.expect("get_identity_provider"), Some(gh.clone()));
    assert!(generation(store).await > g, "a created provider moves the generation");
    let g = generation(store).await;
    let other = provider(idp, "https://other.example", T0 + 5);
    assert!(!store.create_identity_provider(&other).await.expect("create_identity_provider"));
    assert_eq!(store.get_identity_provider(idp).await.expect("get_identity_provider"), Some(gh.clone()), "an existing provider stays");
    assert_eq!(generation(store).await, g, "creating an existing provider changes nothing");

    let ci = robot("robot$suite-create-proj+ci", Some(p), Some(idp), None);
    assert!(store.create_robot(&ci).await.expect("create_robot"));
    assert_eq!(store.get_robot(&ci.name).await.expect("get_robot"), Some(ci.clone()));
    assert!(generation(store).await > g, "a created robot moves the generation");
    let g = generation(store).await;
    let changed = RobotRecord { description: "second".into(), identity_provider: None, secret_hash: Some("h".into()), ..ci.clone() };
    assert!(!store.create_robot(&changed).await.expect("create_robot"));
    assert_eq!(store.get_robot(&ci.name).await.expect("get_robot"), Some(ci.clone()), "an existing robot stays");
    assert_eq!(generation(store).await, g, "creating an existing robot changes nothing");

    // The reference checks of put_robot, for a free name and for a taken one alike.
    for name in ["robot$suite-create-ghost+x", ci.name.as_str()] {
        let ghost = RobotRecord { name: name.into(), project: Some("suite-create-ghost".into()), ..ci.clone() };
        assert_conflict(store.create_robot(&ghost).await, &["suite-create-ghost"]);
        let lost = RobotRecord { name: name.into(), identity_provider: Some("suite-create-nosuchidp".into()), ..ci.clone() };
        assert_conflict(store.create_robot(&lost).await, &["suite-create-nosuchidp"]);
        let both = RobotRecord { name: name.into(), secret_hash: Some("h".into()), ..ci.clone() };
        assert!(matches!(store.create_robot(&both).await, Err(MetaError::Conflict(_))), "{name}");
    }
    assert_eq!(store.get_robot("robot$suite-create-ghost+x").await.expect("get_robot"), None);
    assert_eq!(store.get_robot(&ci.name).await.expect("get_robot"), Some(ci.clone()));
    assert_eq!(generation(store).await, g, "refused creates change nothing");

    // Once deleted, the name is free again.
    assert!(store.delete_robot(&ci.name).await.expect("delete_robot"));
    assert!(store.create_robot(&changed).await.expect("create_robot"));
    assert_eq!(store.get_robot(&ci.name).await.expect("get_robot"), Some(changed));

    assert!(store.delete_robot(&ci.name).await.expect("delete_robot"));
    assert_eq!(store.delete_identity_provider(idp).await.expect("delete_identity_provider"), DeleteOutcome::Deleted);
    assert_eq!(store.delete_project(p).await.expect("delete_project"), DeleteOutcome::Deleted);
}

/// `apply`: created/updated/unchanged, the secret-hash rules, creation times kept, one
/// generation bump per batch that changed something (none otherwise), and a failing batch that
/// writes nothing at all.
pub async fn apply(store: &dyn MetadataStore) {
    use ApplyAction::{Created, Unchanged, Updated};
    async fn generation(store: &dyn MetadataStore) -> i64 {
        store.federation_generation().await.expect("federation_generation")
    }
    async fn run(store: &dyn MetadataStore, p: &[ProjectRecord], i: &[IdentityProviderRecord], r: &[RobotRecord], now: UnixTime) -> crate::Result<ApplyOutcome> {
        store.apply(ApplyBatch { projects: p, identity_providers: i, robots: r, members: &[] }, now).await
    }
    assert_eq!((Created.as_str(), Updated.as_str(), Unchanged.as_str()), ("created", "updated", "unchanged"));
    let (pa, pb, idp) = ("suite-apply-a", "suite-apply-b", "suite-apply-idp");
    let (ci, fed, bare) = ("robot$suite-apply-a+ci", "robot$suite-apply-a+fed", "robot$suite-apply-bare");
    // Times in the batch are ignored: the store uses `now`.
    let projects = vec![project(pa, false, 1), project(pb, true, 1)];
    let providers = vec![provider(idp, "https://apply.example", 1)];
    let robots = |ci_hash: &str, bare_hash: Option<&str>| {
        vec![
            robot(ci, Some(pa), None, Some(ci_hash)),
            robot(fed, Some(pa), Some(idp), None),
            robot(bare, None, None, bare_hash),
        ]
    };

    // An empty batch does nothing.
    let g = generation(store).await;
    assert_eq!(run(store, &[], &[], &[], T0).await.expect("apply"), ApplyOutcome::default());
    assert_eq!(generation(store).await, g);

    // Everything new (robots of a project and a provider created earlier in the same batch).
    let got = run(store, &projects, &providers, &robots("h1", None), T0 + 10).await.expect("apply");
    assert_eq!(
        got,
        ApplyOutcome {
            projects: vec![Created, Created],
            identity_providers: vec![Created],
            robots: vec![(Created, true), (Created, false), (Created, false)],
            members: vec![],
        }
    );
    assert_eq!(generation(store).await, g + 1, "one bump for the whole batch");
    assert_eq!(store.get_project(pa).await.expect("get_project"), Some(project(pa, false, T0 + 10)));
    assert_eq!(store.get_identity_provider(idp).await.expect("get"), Some(provider(idp, "https://apply.example", T0 + 10)));
    let stamped = |r: RobotRecord, hash: Option<&str>, created: UnixTime, updated: UnixTime| RobotRecord {
        secret_hash: hash.map(Into::into),
        created_at: created,
        updated_at: updated,
        ..r
    };
    let [ci0, fed0, bare0]: [RobotRecord; 3] = robots("h1", None).try_into().unwrap();
    assert_eq!(store.get_robot(ci).await.expect("get_robot"), Some(stamped(ci0.clone(), Some("h1"), T0 + 10, T0 + 10)));
    assert_eq!(store.get_robot(fed).await.expect("get_robot"), Some(stamped(fed0.clone(), None, T0 + 10, T0 + 10)));
    assert_eq!(store.get_robot(bare).await.expect("get_robot"), Some(stamped(bare0.clone(), None, T0 + 10, T0 + 10)));

    // Again, with fresh hashes: the static robot with a hash keeps it (unchanged); the one
    // without gets the batch's (updated, stored).
    let got = run(store, &projects, &providers, &robots("h2", Some("hb")), T0 + 20).await.expect("apply");
    assert_eq!(
        got,
        ApplyOutcome {
            projects: vec![Unchanged, Unchanged],
            identity_providers: vec![Unchanged],
            robots: vec![(Unchanged, false), (Unchanged, false), (Updated, true)],
            members: vec![],
        }
    );
    assert_eq!(generation(store).await, g + 2);
    assert_eq!(store.get_robot(ci).await.expect("get_robot"), Some(stamped(ci0.clone(), Some("h1"), T0 + 10, T0 + 10)));
    assert_eq!(store.get_robot(bare).await.expect("get_robot"), Some(stamped(bare0.clone(), Some("hb"), T0 + 10, T0 + 20)));

    // Once more: nothing changes, nothing is written, the generation stays.
    let got = run(store, &projects, &providers, &robots("h3", Some("hc")), T0 + 30).await.expect("apply");
    assert_eq!(got.projects, [Unchanged, Unchanged]);
    assert_eq!(got.identity_providers, [Unchanged]);
    assert_eq!(got.robots, [(Unchanged, false), (Unchanged, false), (Unchanged, false)]);
    assert_eq!(generation(store).await, g + 2, "an unchanged batch does not move the generation");
    assert_eq!(store.get_robot(bare).await.expect("get_robot"), Some(stamped(bare0.clone(), Some("hb"), T0 + 10, T0 + 20)));

    // Updates: creation times stay, update times move, a static robot keeps its hash, a robot
    // that becomes federated loses it.
    let projects2 = vec![project(pa, true, 1), project(pb, true, 1)];
    let providers2 = vec![provider(idp, "https://changed.example", 1)];
    let ci2 = RobotRecord { description: "changed".into(), ..robot(ci, Some(pa), None, Some("h4")) };
    let bare2 = robot(bare, None, Some(idp), None);
    let got = run(store, &projects2, &providers2, &[ci2.clone(), fed0.clone(), bare2.clone()], T0 + 40).await.expect("apply");
    assert_eq!(
        got,
        ApplyOutcome {
            projects: vec![Updated, Unchanged],
            identity_providers: vec![Updated],
            robots: vec![(Updated, false), (Unchanged, false), (Updated, false)],
            members: vec![],
        }
    );
    assert_eq!(generation(store).await, g + 3);
    assert_eq!(store.get_project(pa).await.expect("get_project"), Some(project(pa, true, T0 + 10)));
    let want_idp = IdentityProviderRecord { created_at: T0 + 10, updated_at: T0 + 40, ..provider(idp, "https://changed.example", 1) };
    assert_eq!(store.get_identity_provider(idp).await.expect("get"), Some(want_idp.clone()));
    assert_eq!(store.get_robot(ci).await.expect("get_robot"), Some(stamped(ci2.clone(), Some("h1"), T0 + 10, T0 + 40)));
    assert_eq!(store.get_robot(bare).await.expect("get_robot"), Some(stamped(bare2, None, T0 + 10, T0 + 40)));
    // Back to a static secret: it has none now, so it takes the batch's.
    let got = run(store, &[], &[], &[robot(bare, None, None, Some("hd"))], T0 + 50).await.expect("apply");
    assert_eq!(got.robots, [(Updated, true)]);
    assert_eq!(store.get_robot(bare).await.expect("get_robot").and_then(|r| r.secret_hash).as_deref(), Some("hd"));
    // A static robot whose batch carries no hash and that has none: stored without one, and
    // still "updated" on every apply (it cannot log in until it gets one).
    let nohash = "robot$suite-apply-nohash";
    assert_eq!(run(store, &[], &[], &[robot(nohash, None, None, None)], T0 + 55).await.expect("apply").robots, [(Created, false)]);
    assert_eq!(run(store, &[], &[], &[robot(nohash, None, None, None)], T0 + 56).await.expect("apply").robots, [(Updated, false)]);
    assert_eq!(store.get_robot(nohash).await.expect("get_robot").map(|r| (r.secret_hash, r.created_at)), Some((None, T0 + 55)));

    // A batch whose last robot refers to an unknown project writes NOTHING: not the new project
    // and provider before it, not the changes to existing ones, not the robots before it.
    let g = generation(store).await;
    let before = (
        store.get_project(pa).await.expect("get_project"),
        store.get_identity_provider(idp).await.expect("get"),
        store.get_robot(ci).await.expect("get_robot"),
    );
    let failing = |last: RobotRecord| {
        let projects = vec![project("suite-apply-new", false, 1), project(pa, false, 1)];
        let providers = vec![provider("suite-apply-newidp", "https://new.example", 1), provider(idp, "https://again.example", 1)];
        let robots = vec![
            robot("robot$suite-apply-new+x", Some("suite-apply-new"), Some("suite-apply-newidp"), None),
            RobotRecord { description: "must not be written".into(), ..ci2.clone() },
            last,
        ];
        (projects, providers, robots)
    };
    let (p, i, r) = failing(robot("robot$suite-apply-ghost+x", Some("suite-apply-ghost"), None, Some("h")));
    assert_conflict(run(store, &p, &i, &r, T0 + 60).await, &["suite-apply-ghost"]);
    let (p, i, r) = failing(robot("robot$suite-apply-lost", None, Some("suite-apply-nosuchidp"), None));
    assert_conflict(run(store, &p, &i, &r, T0 + 60).await, &["suite-apply-nosuchidp"]);
    let (p, i, r) = failing(robot("robot$suite-apply-both", None, Some(idp), Some("h")));
    assert!(matches!(run(store, &p, &i, &r, T0 + 60).await, Err(MetaError::Conflict(_))));
    assert_eq!(store.get_project("suite-apply-new").await.expect("get_project"), None, "the batch's new project is absent");
    assert_eq!(store.get_identity_provider("suite-apply-newidp").await.expect("get"), None, "the batch's new provider is absent");
    assert_eq!(store.get_robot("robot$suite-apply-new+x").await.expect("get_robot"), None, "the batch's first robot is absent");
    let after = (
        store.get_project(pa).await.expect("get_project"),
        store.get_identity_provider(idp).await.expect("get"),
        store.get_robot(ci).await.expect("get_robot"),
    );
    assert_eq!(after, before, "existing objects are as before the failed batch");
    assert_eq!(generation(store).await, g, "a failed batch does not move the generation");

    // Members: with their project in the batch or stored; unchanged ones leave the generation;
    // a member of a missing project fails the whole batch.
    let member = |project: &str, key: &str, role: &str| MemberRecord { project: project.into(), member: key.into(), role: role.into(), created_at: 1, updated_at: 1 };
    let new_project = [project("suite-apply-m", false, 1)];
    let members = [member(pa, "group:suite-team", "developer"), member("suite-apply-m", "user:suite-x", "guest")];
    let batch = |members| ApplyBatch { projects: &new_project, identity_providers: &[], robots: &[], members };
    let out = store.apply(batch(&members), T0 + 70).await.expect("apply with members");
    assert_eq!(out.members, [Created, Created]);
    assert_eq!(generation(store).await, g + 1);
    let stored = store.list_members(pa).await.expect("list_members");
    assert_eq!(stored, [MemberRecord { created_at: T0 + 70, updated_at: T0 + 70, ..members[0].clone() }]);
    let out = store.apply(batch(&members), T0 + 80).await.expect("apply with members");
    assert_eq!((out.members, generation(store).await), (vec![Unchanged, Unchanged], g + 1));
    let changed = [member(pa, "group:suite-team", "maintainer")];
    assert_eq!(store.apply(batch(&changed), T0 + 90).await.expect("apply").members, [Updated]);
    assert_eq!(store.list_members(pa).await.expect("list_members")[0].role, "maintainer");
    let orphan = [member("suite-apply-none", "user:suite-x", "guest")];
    let e = store.apply(ApplyBatch { projects: &[project("suite-apply-m2", false, 1)], identity_providers: &[], robots: &[], members: &orphan }, T0 + 95).await;
    assert!(matches!(&e, Err(MetaError::Conflict(m)) if m.contains("suite-apply-none")), "{e:?}");
    assert_eq!(store.get_project("suite-apply-m2").await.expect("get_project"), None, "nothing of the failed batch");
    assert_eq!(store.delete_project("suite-apply-m").await.expect("delete_project"), DeleteOutcome::Deleted);

    // Clean up.
    for r in [ci, fed, bare, nohash] {
        assert!(store.delete_robot(r).await.expect("delete_robot"), "{r}");
    }
    for p in [pa, pb] {
        assert_eq!(store.delete_project(p).await.expect("delete_project"), DeleteOutcome::Deleted);
    }
    assert_eq!(store.delete_identity_provider(idp).await.expect("delete_identity_provider"), DeleteOutcome::Deleted);
}

/// Many creates of one robot name at once, and of one provider name: exactly one returns true,
/// the stored row is that one, and the generation moved exactly once. Handles as for
/// [`upload_claim_race`].
pub async fn create_race(one: &dyn MetadataStore, two: &dyn MetadataStore) {
    let p = "suite-crace-proj";
    assert!(one.create_project(&project(p, false, T0)).await.expect("create_project"));
    for round in 0..3 {
        let before = one.federation_generation().await.expect("federation_generation");
        let name = format!("robot$suite-crace-proj+r{round}");
        let records: Vec<RobotRecord> = (0..RACERS)
            .map(|i| RobotRecord { description: format!("racer {i}"), ..robot(&name, Some(p), None, Some(&format!("h{i}"))) })
            .collect();
        let racers = records.iter().enumerate().map(|(i, r)| {
            let store = if i % 2 == 0 { one } else { two };
            async move { store.create_robot(r).await.expect("create_robot") }
        });
        let got = join_all(racers).await;
        let winners: Vec<usize> = (0..RACERS).filter(|&i| got[i]).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one of {RACERS} concurrent creates of {name} wins: {got:?}");
        assert_eq!(two.get_robot(&name).await.expect("get_robot").as_ref(), Some(&records[winners[0]]), "the winner's robot is stored");
        assert_eq!(one.federation_generation().await.expect("federation_generation"), before + 1, "round {round}: one bump");
        assert!(one.delete_robot(&name).await.expect("delete_robot"));

        let before = two.federation_generation().await.expect("federation_generation");
        let name = format!("suite-crace-idp{round}");
        let records: Vec<IdentityProviderRecord> =
            (0..RACERS).map(|i| provider(&name, &format!("https://racer{i}.example"), T0)).collect();
        let racers = records.iter().enumerate().map(|(i, r)| {
            let store = if i % 2 == 0 { two } else { one };
            async move { store.create_identity_provider(r).await.expect("create_identity_provider") }
        });
        let got = join_all(racers).await;
        let winners: Vec<usize> = (0..RACERS).filter(|&i| got[i]).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one of {RACERS} concurrent creates of {name} wins: {got:?}");
        assert_eq!(
            one.get_identity_provider(&name).await.expect("get_identity_provider").as_ref(),
            Some(&records[winners[0]]),
            "the winner's provider is stored"
        );
        assert_eq!(two.federation_generation().await.expect("federation_generation"), before + 1, "round {round}: one bump");
        assert_eq!(two.delete_identity_provider(&name).await.expect("delete_identity_provider"), DeleteOutcome::Deleted);
    }
    assert_eq!(one.delete_project(p).await.expect("delete_project"), DeleteOutcome::Deleted);
}

// ---- audit log ----
//
// Each part keeps to its own time window (Unix milliseconds) and bounds its queries by it, so
// the parts can run in any order; [`audit_prune`] works far in the past, below every other window.

/// An audit event with every optional field set; the principal is the robots joined, or `admin`.
fn audit_event(t: i64, action: &str, result: &str, robots: &[&str], repository: Option<&str>, provider: Option<&str>) -> AuditEvent {
    AuditEvent {
        id: 0,
        time_ms: t,
        action: action.into(),
        result: result.into(),
        principal: if robots.is_empty() { "suite-admin".into() } else { robots.join(",") },
        robots: robots.iter().map(|r| r.to_string()).collect(),
        provider: provider.map(Into::into),
        subject: Some(format!("repo:org/app:ref:refs/heads/main#{t}")),
        jti: Some(format!("jti-{t}")),
        claims: Some(serde_json::json!({"repository": "org/app", "ref": "refs/heads/main", "run": t})),
        repository: repository.map(Into::into),
        reference: Some("v1".into()),
        client: Some("192.0.2.7".into()),
        message: (result != "ok").then(|| format!("{action} {result} at {t}")),
    }
}

/// Times of a query's events, in the order returned.
async fn audit_times(store: &dyn MetadataStore, q: AuditQuery) -> Vec<i64> {
    store.query_audit(&q).await.expect("query_audit").into_iter().map(|e| e.time_ms).collect()
}

/// Appending, reading back every field, and each filter alone and combined.
pub async fn audit(store: &dyn MetadataStore) {
    const B: i64 = T0 * 1000; // this part's window: [B, B + 100_000)
    let window = || AuditQuery { since_ms: Some(B), until_ms: Some(B + 100_000), ..AuditQuery::default() };
    let (a, ab, b) = ("robot$suite-a", "robot$suite-ab", "robot$suite-b");
    let events = vec![
        audit_event(B + 1000, "token", "ok", &[a], None, Some("suite-gh")),
        audit_event(B + 2000, "push", "ok", &[a, b], Some("suite/app"), Some("suite-gh")),
        audit_event(B + 3000, "pull", "denied", &[ab], Some("suite/app"), Some("suite-gl")),
        audit_event(B + 4000, "pull", "ok", &[], Some("suite/web"), None),
        // Nothing optional.
        AuditEvent {
            id: 0,
            time_ms: B + 5000,
            action: "login".into(),
            result: "error".into(),
            principal: "anonymous".into(),
            robots: vec![],
            provider: None,
            subject: None,
            jti: None,
            claims: None,
            repository: None,
            reference: None,
            client: None,
            message: None,
        },
        // A robot listed twice and also the principal: found once.
        AuditEvent { principal: b.into(), ..audit_event(B + 6000, "delete", "ok", &[b, b], Some("suite/web"), Some("suite-gl")) },
    ];
    store.append_audit(&events).await.expect("append_audit");
    store.append_audit(&[]).await.expect("append_audit of nothing");

    // Every field round-trips; ids are assigned, increasing in append order; newest first.
    let got = store.query_audit(&window()).await.expect("query_audit");
    assert_eq!(got.len(), events.len());
    assert!(got.windows(2).all(|w| w[0].id > w[1].id), "newest (highest id) first");
    for (got, want) in got.iter().rev().zip(&events) {
        assert_eq!(got, &AuditEvent { id: got.id, ..want.clone() });
    }
    // Order is by id, not time: an older event appended later comes first.
    store.append_audit(&[audit_event(B + 500, "token", "denied", &[a], None, Some("suite-gh"))]).await.expect("append_audit");
    assert_eq!(audit_times(store, window()).await, [B + 500, B + 6000, B + 5000, B + 4000, B + 3000, B + 2000, B + 1000]);

    // Time: since inclusive, until exclusive.
    let q = AuditQuery { since_ms: Some(B + 2000), until_ms: Some(B + 4000), ..AuditQuery::default() };
    assert_eq!(audit_times(store, q).await, [B + 3000, B + 2000]);
    let q = AuditQuery { since_ms: Some(B + 5500), until_ms: Some(B + 100_000), ..AuditQuery::default() };
    assert_eq!(audit_times(store, q).await, [B + 6000]);
    let q = AuditQuery { since_ms: Some(B), until_ms: Some(B + 1000), ..AuditQuery::default() };
    assert_eq!(audit_times(store, q).await, [B + 500]);
    let q = AuditQuery { since_ms: Some(B + 4000), until_ms: Some(B + 4000), ..AuditQuery::default() };
    assert!(audit_times(store, q).await.is_empty());

    // Robot: an exact element of the robots, or the exact principal.
    let robot = |r: &str| AuditQuery { robot: Some(r.into()), ..window() };
    assert_eq!(audit_times(store, robot(a)).await, [B + 500, B + 2000, B + 1000]);
    assert_eq!(audit_times(store, robot(ab)).await, [B + 3000]);
    assert_eq!(audit_times(store, robot(b)).await, [B + 6000, B + 2000]);
    assert_eq!(audit_times(store, robot("suite-admin")).await, [B + 4000]);
    assert_eq!(audit_times(store, robot("anonymous")).await, [B + 5000]);
    for partial in ["robot$suite", "robot$suite-", "suite-a", "robot$suite-a%", "robot$suite-_", "%", "_", "", "robot$SUITE-A"] {
        assert!(audit_times(store, robot(partial)).await.is_empty(), "robot {partial:?} must match nothing");
    }

    // Repository, provider, result, action.
    let q = AuditQuery { repository: Some("suite/app".into()), ..window() };
    assert_eq!(audit_times(store, q).await, [B + 3000, B + 2000]);
    let q = AuditQuery { repository: Some("suite".into()), ..window() };
    assert!(audit_times(store, q).await.is_empty(), "repository names are exact");
    let q = AuditQuery { provider: Some("suite-gl".into()), ..window() };
    assert_eq!(audit_times(store, q).await, [B + 6000, B + 3000]);
    let q = AuditQuery { provider: Some("suite-gh".into()), ..window() };
    assert_eq!(audit_times(store, q).await, [B + 500, B + 2000, B + 1000]);
    let q = AuditQuery { result: Some("denied".into()), ..window() };
    assert_eq!(audit_times(store, q).await, [B + 500, B + 3000]);
    let q = AuditQuery { result: Some("error".into()), ..window() };
    assert_eq!(audit_times(store, q).await, [B + 5000]);
    let q = AuditQuery { action: Some("pull".into()), ..window() };
    assert_eq!(audit_times(store, q).await, [B + 4000, B + 3000]);
    let q = AuditQuery { action: Some("login".into()), ..window() };
    assert_eq!(audit_times(store, q).await, [B + 5000]);

    // Combined (AND).
    let q = AuditQuery { robot: Some(a.into()), repository: Some("suite/app".into()), ..window() };
    assert_eq!(audit_times(store, q).await, [B + 2000]);
    let q = AuditQuery { robot: Some(a.into()), result: Some("denied".into()), ..window() };
    assert_eq!(audit_times(store, q).await, [B + 500]);
    let q = AuditQuery { provider: Some("suite-gl".into()), action: Some("pull".into()), result: Some("denied".into()), ..window() };
    assert_eq!(audit_times(store, q).await, [B + 3000]);
    let q = AuditQuery { provider: Some("suite-gl".into()), action: Some("pull".into()), result: Some("ok".into()), ..window() };
    assert!(audit_times(store, q).await.is_empty());
    let q = AuditQuery { robot: Some(b.into()), since_ms: Some(B + 2001), until_ms: Some(B + 100_000), ..AuditQuery::default() };
    assert_eq!(audit_times(store, q).await, [B + 6000]);
    let q = AuditQuery {
        robot: Some(b.into()),
        repository: Some("suite/web".into()),
        provider: Some("suite-gl".into()),
        result: Some("ok".into()),
        action: Some("delete".into()),
        ..window()
    };
    assert_eq!(audit_times(store, q).await, [B + 6000]);
}

/// Pagination with `before_id`, the default limit and its cap, over a batch of 1,000 appended at
/// once (the background writer's batch size).
pub async fn audit_pages(store: &dyn MetadataStore) {
    const B: i64 = T0 * 1000 + 1_000_000; // this part's window: [B, B + 10_000)
    let window = || AuditQuery { since_ms: Some(B), until_ms: Some(B + 10_000), ..AuditQuery::default() };
    let robot = "robot$suite-pager";
    let event = |i: i64| {
        let robots: &[&str] = if i % 3 == 0 { &[robot] } else { &[] };
        audit_event(B + i, "pull", "ok", robots, Some(if i % 2 == 0 { "suite/even" } else { "suite/odd" }), None)
    };
    let first: Vec<AuditEvent> = (0..1000).map(event).collect();
    store.append_audit(&first).await.expect("append_audit of 1000");
    let second: Vec<AuditEvent> = (1000..1100).map(event).collect();
    store.append_audit(&second).await.expect("append_audit");

    // Limits: 0 means the default, and the cap applies.
    let count = |q: AuditQuery| async move { store.query_audit(&q).await.expect("query_audit").len() };
    assert_eq!(count(window()).await, crate::AUDIT_DEFAULT_LIMIT as usize);
    assert_eq!(count(AuditQuery { limit: 1, ..window() }).await, 1);
    assert_eq!(count(AuditQuery { limit: 1000, ..window() }).await, 1000);
    assert_eq!(count(AuditQuery { limit: 1001, ..window() }).await, crate::AUDIT_MAX_LIMIT as usize);
    assert_eq!(count(AuditQuery { limit: u32::MAX, ..window() }).await, crate::AUDIT_MAX_LIMIT as usize);
    assert_eq!(audit_times(store, AuditQuery { limit: 3, ..window() }).await, [B + 1099, B + 1098, B + 1097]);

    // Walking the pages finds every event once, newest first.
    async fn walk(store: &dyn MetadataStore, q: AuditQuery) -> (Vec<i64>, usize) {
        let (mut times, mut pages, mut before, mut last_id) = (Vec::new(), 0, None, i64::MAX);
        loop {
            let page = store.query_audit(&AuditQuery { before_id: before, ..q.clone() }).await.expect("query_audit");
            assert!(page.len() <= q.limit as usize);
            for e in &page {
                assert!(e.id < last_id, "ids decrease across pages");
                last_id = e.id;
                times.push(e.time_ms);
            }
            if page.len() < q.limit as usize {
                return (times, pages + usize::from(!page.is_empty()));
            }
            pages += 1;
            before = page.last().map(|e| e.id);
        }
    }
    let (times, pages) = walk(store, AuditQuery { limit: 300, ..window() }).await;
    assert_eq!(times, (0..1100).rev().map(|i| B + i).collect::<Vec<_>>());
    assert_eq!(pages, 4);
    let (times, _) = walk(store, AuditQuery { limit: 100, robot: Some(robot.into()), ..window() }).await;
    assert_eq!(times, (0..1100).rev().filter(|i| i % 3 == 0).map(|i| B + i).collect::<Vec<_>>());
    let (times, _) = walk(store, AuditQuery { limit: 250, repository: Some("suite/odd".into()), ..window() }).await;
    assert_eq!(times, (0..1100).rev().filter(|i| i % 2 == 1).map(|i| B + i).collect::<Vec<_>>());
    let (times, _) = walk(store, AuditQuery { limit: 7, robot: Some(robot.into()), repository: Some("suite/even".into()), ..window() }).await;
    assert_eq!(times, (0..1100).rev().filter(|i| i % 6 == 0).map(|i| B + i).collect::<Vec<_>>());

    // before_id is exclusive, and pages past the oldest are empty.
    let newest = store.query_audit(&AuditQuery { limit: 2, ..window() }).await.expect("query_audit");
    let after_newest = store.query_audit(&AuditQuery { limit: 1, before_id: Some(newest[0].id), ..window() }).await.expect("query_audit");
    assert_eq!(after_newest, vec![newest[1].clone()]);
    let oldest = store.query_audit(&AuditQuery { limit: 1, since_ms: Some(B), until_ms: Some(B + 1), ..AuditQuery::default() }).await.expect("query_audit");
    assert!(audit_times(store, AuditQuery { before_id: Some(oldest[0].id), ..window() }).await.is_empty());
}

/// Pruning by time: only older events go, with their robot index, and ids are never reused.
///
/// Works at times below 10,000 ms, far below every other part's window.
pub async fn audit_prune(store: &dyn MetadataStore) {
    let window = || AuditQuery { since_ms: Some(0), until_ms: Some(10_000), limit: 1000, ..AuditQuery::default() };
    let robot = "robot$suite-pruned";
    let events: Vec<AuditEvent> = (1..=10).map(|i| audit_event(i * 100, "token", "ok", &[robot], None, Some("suite-p"))).collect();
    store.append_audit(&events).await.expect("append_audit");
    let others_before = store.query_audit(&AuditQuery { since_ms: Some(10_000), ..AuditQuery::default() }).await.expect("query_audit");

    assert_eq!(store.prune_audit(100).await.expect("prune_audit"), 0, "the boundary is exclusive");
    assert_eq!(store.prune_audit(501).await.expect("prune_audit"), 5);
    assert_eq!(store.prune_audit(501).await.expect("prune_audit"), 0);
    assert_eq!(audit_times(store, window()).await, [1000, 900, 800, 700, 600]);
    let q = AuditQuery { robot: Some(robot.into()), ..window() };
    assert_eq!(audit_times(store, q).await, [1000, 900, 800, 700, 600], "pruned events leave the robot filter");
    let others_after = store.query_audit(&AuditQuery { since_ms: Some(10_000), ..AuditQuery::default() }).await.expect("query_audit");
    assert_eq!(others_before, others_after, "newer events stay");

    // Ids are never reused, even when the newest events are pruned.
    let newest = store.query_audit(&AuditQuery { limit: 1, ..AuditQuery::default() }).await.expect("query_audit");
    let top = newest.first().map_or(0, |e| e.id);
    store.append_audit(&[audit_event(5, "token", "ok", &[robot], None, None)]).await.expect("append_audit");
    let pruned_id = store.query_audit(&AuditQuery { limit: 1, ..AuditQuery::default() }).await.expect("query_audit")[0].id;
    assert!(pruned_id > top);
    assert_eq!(store.prune_audit(10).await.expect("prune_audit"), 1);
    store.append_audit(&[audit_event(6, "token", "ok", &[robot], None, None)]).await.expect("append_audit");
    let fresh = store.query_audit(&AuditQuery { limit: 1, ..AuditQuery::default() }).await.expect("query_audit");
    assert!(fresh[0].id > pruned_id, "id {} reused after pruning {pruned_id}", fresh[0].id);
    assert_eq!(fresh[0].time_ms, 6);

    // Many at once.
    let many: Vec<AuditEvent> = (0..2500).map(|i| audit_event(2000 + i, "pull", "ok", &[robot], None, None)).collect();
    store.append_audit(&many).await.expect("append_audit");
    assert_eq!(store.prune_audit(10_000).await.expect("prune_audit"), 2500 + 5 + 1);
    assert!(audit_times(store, window()).await.is_empty());
    assert!(audit_times(store, AuditQuery { robot: Some(robot.into()), ..AuditQuery::default() }).await.is_empty());
}

// ---- failed-login counters ----

/// Counting per key and window, concurrent increments, forgiving, pruning by window start.
///
/// Uses windows at 1,000..1,400 (prunes below 1,200) and around [`T0`].
pub async fn login_failures(store: &dyn MetadataStore) {
    let (addr, addr10, account) = ("suite-addr:10.0.0.1", "suite-addr:10.0.0.10", "suite-account:robot$x");
    assert_eq!(store.login_failures(addr, 1000).await.expect("login_failures"), 0);
    assert_eq!(store.record_login_failure(addr, 1000).await.expect("record_login_failure"), 1);
    assert_eq!(store.record_login_failure(addr, 1000).await.expect("record_login_failure"), 2);
    assert_eq!(store.record_login_failure(addr, 1000).await.expect("record_login_failure"), 3);
    assert_eq!(store.login_failures(addr, 1000).await.expect("login_failures"), 3);
    // Windows and keys are separate, and keys are exact.
    assert_eq!(store.record_login_failure(addr, 1100).await.expect("record_login_failure"), 1, "a new window starts at 1");
    assert_eq!(store.record_login_failure(addr10, 1000).await.expect("record_login_failure"), 1);
    assert_eq!(store.record_login_failure(account, 1000).await.expect("record_login_failure"), 1);
    assert_eq!(store.record_login_failure(account, 1300).await.expect("record_login_failure"), 1);
    assert_eq!(store.login_failures(addr, 1000).await.expect("login_failures"), 3);
    assert_eq!(store.login_failures(addr, 1100).await.expect("login_failures"), 1);
    assert_eq!(store.login_failures(addr, 1050).await.expect("login_failures"), 0);
    assert_eq!(store.login_failures(addr10, 1000).await.expect("login_failures"), 1);
    assert_eq!(store.login_failures("suite-addr:10.0.0", 1000).await.expect("login_failures"), 0);
    assert_eq!(store.login_failures("SUITE-ADDR:10.0.0.1", 1000).await.expect("login_failures"), 0);

    // Concurrent failures (as from several replicas) are all counted.
    let key = "suite-addr:192.0.2.1";
    let rec = || store.record_login_failure(key, T0);
    let got = tokio::join!(rec(), rec(), rec(), rec(), rec(), rec(), rec(), rec(), rec(), rec());
    let mut got = [got.0, got.1, got.2, got.3, got.4, got.5, got.6, got.7, got.8, got.9].map(|n| n.expect("record_login_failure"));
    got.sort_unstable();
    assert_eq!(got, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "each failure sees its own count");
    assert_eq!(store.login_failures(key, T0).await.expect("login_failures"), 10);

    // Forgiving takes back one failure of that key and window only, never below zero.
    let fk = "suite-forgive:198.51.100.1";
    store.forgive_login_failure(fk, T0).await.expect("forgive_login_failure of a window never counted");
    assert_eq!(store.login_failures(fk, T0).await.expect("login_failures"), 0);
    assert_eq!(store.record_login_failure(fk, T0).await.expect("record_login_failure"), 1);
    assert_eq!(store.record_login_failure(fk, T0).await.expect("record_login_failure"), 2);
    assert_eq!(store.record_login_failure(fk, T0 + 60).await.expect("record_login_failure"), 1);
    store.forgive_login_failure(fk, T0).await.expect("forgive_login_failure");
    assert_eq!(store.login_failures(fk, T0).await.expect("login_failures"), 1);
    assert_eq!(store.login_failures(fk, T0 + 60).await.expect("login_failures"), 1, "other windows keep their count");
    assert_eq!(store.login_failures(key, T0).await.expect("login_failures"), 10, "other keys keep their count");
    store.forgive_login_failure(fk, T0).await.expect("forgive_login_failure");
    store.forgive_login_failure(fk, T0).await.expect("forgive_login_failure below zero");
    assert_eq!(store.login_failures(fk, T0).await.expect("login_failures"), 0, "never below zero");
    assert_eq!(store.record_login_failure(fk, T0).await.expect("record_login_failure"), 1, "counting resumes at 1");
    // Attempts counted before the check and forgiven after it, concurrently: every attempt still
    // sees a distinct count, and the forgiven ones leave nothing behind.
    let fc = "suite-forgive:198.51.100.2";
    let attempt = |forgive: bool| async move {
        let n = store.record_login_failure(fc, T0).await.expect("record_login_failure");
        if forgive {
            store.forgive_login_failure(fc, T0).await.expect("forgive_login_failure");
        }
        n
    };
    let got = tokio::join!(attempt(true), attempt(false), attempt(true), attempt(false), attempt(true), attempt(false));
    let got = [got.0, got.1, got.2, got.3, got.4, got.5];
    assert!(got.iter().all(|&n| (1..=6).contains(&n)), "{got:?}");
    assert_eq!(store.login_failures(fc, T0).await.expect("login_failures"), 3, "three forgiven of six: {got:?}");

    // Pruning removes windows that started before the cutoff, of every key.
    assert_eq!(store.prune_login_failures(1000).await.expect("prune_login_failures"), 0, "the cutoff is exclusive");
    assert_eq!(store.prune_login_failures(1200).await.expect("prune_login_failures"), 4);
    assert_eq!(store.prune_login_failures(1200).await.expect("prune_login_failures"), 0);
    for (k, w) in [(addr, 1000), (addr, 1100), (addr10, 1000), (account, 1000)] {
        assert_eq!(store.login_failures(k, w).await.expect("login_failures"), 0, "{k} at {w}");
    }
    assert_eq!(store.login_failures(account, 1300).await.expect("login_failures"), 1);
    assert_eq!(store.login_failures(key, T0).await.expect("login_failures"), 10);
    // A pruned window counts from 1 again.
    assert_eq!(store.record_login_failure(addr, 1000).await.expect("record_login_failure"), 1);
    assert_eq!(store.prune_login_failures(1400).await.expect("prune_login_failures"), 2);
}

// ---- export and import (`berth migrate`) ----

/// What [`copy_store`] did, added up over the tables.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyTotals {
    pub imported: u64,
    pub removed: u64,
    pub skipped: u64,
}

/// The storage key a blob copied by [`copy_store`] gets at the destination (a destination's
/// blob storage gives fresh keys; this stands in for that).
pub fn copied_key(source_key: &str) -> String {
    format!("copied/{source_key}")
}

/// Copies every table of `src` into `dst` the way `berth migrate` does, without blob storage:
/// each table in pages of `page` rows, each page's key range pruned at the destination and then
/// imported; a blob record the destination lacks gets [`copied_key`] of its source key; rows
/// the destination deferred are imported again after their table's walk (while that writes some
/// of them; what is left counts as skipped).
pub async fn copy_store(src: &dyn MetadataStore, dst: &dyn MetadataStore, page: u32) -> CopyTotals {
    let mut totals = CopyTotals::default();
    for table in crate::Table::ALL {
        let mut after: Option<crate::RowKey> = None;
        let mut deferred: Vec<crate::ExportRow> = Vec::new();
        loop {
            let mut rows = src.export(table, after.as_ref(), page).await.expect("export");
            assert!(rows.len() <= page as usize, "{}: a page holds at most the limit", table.name());
            let keys: Vec<crate::RowKey> = rows.iter().map(crate::ExportRow::key).collect();
            for row in &rows {
                assert_eq!(row.table(), table, "export of {} returned another table's row", table.name());
            }
            let upto = (rows.len() == page as usize).then(|| keys.last().cloned()).flatten();
            let pruned = dst.prune(table, after.as_ref(), upto.as_ref(), &keys).await.expect("prune");
            totals.removed += pruned.removed;
            if table == crate::Table::Blobs {
                let digests: Vec<Digest> =
                    rows.iter().map(|r| if let crate::ExportRow::Blob(b) = r { b.digest.clone() } else { unreachable!() }).collect();
                let have = dst.blob_records(&digests).await.expect("blob_records");
                for row in &mut rows {
                    if let crate::ExportRow::Blob(b) = row {
                        b.storage_key = match have.iter().find(|h| h.digest == b.digest) {
                            Some(h) => h.storage_key.clone(),
                            None => copied_key(&b.storage_key),
                        };
                    }
                }
            }
            let outcome = dst.import(&rows).await.expect("import");
            assert!(outcome.unused_keys.is_empty(), "{:?}", outcome.unused_keys);
            totals.imported += outcome.imported;
            totals.skipped += outcome.skipped.len() as u64;
            deferred.extend(rows.into_iter().filter(|r| outcome.deferred.contains(&r.key())));
            match upto {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        while !deferred.is_empty() {
            let outcome = dst.import(&deferred).await.expect("import");
            totals.imported += outcome.imported;
            totals.skipped += outcome.skipped.len() as u64;
            let still: Vec<crate::ExportRow> = deferred.iter().filter(|r| outcome.deferred.contains(&r.key())).cloned().collect();
            if still.len() == deferred.len() {
                totals.skipped += still.len() as u64;
                break;
            }
            deferred = still;
        }
    }
    totals
}

/// Every row of every table of `store`, through `export` (pages of 3).
async fn export_all(store: &dyn MetadataStore) -> Vec<crate::ExportRow> {
    let mut all = Vec::new();
    for table in crate::Table::ALL {
        let mut after = None;
        loop {
            let rows = store.export(table, after.as_ref(), 3).await.expect("export");
            let Some(last) = rows.last() else { break };
            after = Some(last.key());
            let n = rows.len();
            all.extend(rows);
            if n < 3 {
                break;
            }
        }
    }
    all
}

/// Asserts that `dst` holds what `src` holds, through the normal read API and through exports
/// (blob keys mapped by [`copied_key`]), and that the row counts agree.
pub async fn assert_same_contents(src: &dyn MetadataStore, dst: &dyn MetadataStore) {
    assert_eq!(dst.row_counts().await.expect("counts"), src.row_counts().await.expect("counts"), "row counts");
    for key in ["registry_signing_key", "bootstrap_admin_hash", "suite-setting"] {
        assert_eq!(dst.get_setting(key).await.expect("get_setting"), src.get_setting(key).await.expect("get_setting"), "setting {key}");
    }
    let users = src.list_users().await.expect("users");
    assert_eq!(dst.list_users().await.expect("users"), users);
    for u in &users {
        let tokens = src.list_tokens(&u.name, &[]).await.expect("list_tokens");
        assert_eq!(dst.list_tokens(&u.name, &[]).await.expect("list_tokens"), tokens, "tokens of {}", u.name);
        for t in &tokens {
            assert_eq!(dst.get_token(&t.id).await.expect("get_token").as_ref(), Some(t));
        }
        if let Some(i) = &u.identity {
            assert_eq!(dst.get_user_by_identity(&i.issuer, &i.subject).await.expect("get_user_by_identity").as_ref(), Some(u));
        }
    }
    assert_eq!(dst.tokens_to_check(i64::MAX, 0, 1000).await.expect("tokens_to_check"), src.tokens_to_check(i64::MAX, 0, 1000).await.expect("tokens_to_check"));
    assert_eq!(dst.list_projects().await.expect("projects"), src.list_projects().await.expect("projects"));
    for p in src.list_projects().await.expect("projects") {
        assert_eq!(dst.list_members(&p.name).await.expect("members"), src.list_members(&p.name).await.expect("members"), "members of {}", p.name);
    }
    assert_eq!(dst.list_identity_providers().await.expect("idps"), src.list_identity_providers().await.expect("idps"));
    assert_eq!(dst.list_robots(None).await.expect("robots"), src.list_robots(None).await.expect("robots"));
    let repos = src.list_repositories(all()).await.expect("repositories");
    assert_eq!(dst.list_repositories(all()).await.expect("repositories"), repos);
    let src_rows = export_all(src).await;
    for name in &repos {
        let r = repo(name);
        let tags = tags_of(src, &r).await;
        assert_eq!(tags_of(dst, &r).await, tags, "tags of {name}");
        for t in tags.unwrap_or_default() {
            let reference = Reference::Tag(tag(&t));
            assert_eq!(get(dst, &r, reference.clone()).await, get(src, &r, reference).await, "{name}:{t}");
        }
    }
    for row in &src_rows {
        match row {
            crate::ExportRow::Manifest(m) => {
                let reference = Reference::Digest(m.digest.clone());
                let got = get(dst, &m.repo, reference.clone()).await;
                assert_eq!(got, get(src, &m.repo, reference).await, "manifest {}@{}", m.repo, m.digest);
                if let Some(subject) = &m.subject {
                    let want = src.referrers(&m.repo, subject, None).await.expect("referrers");
                    assert_eq!(dst.referrers(&m.repo, subject, None).await.expect("referrers"), want, "referrers of {subject}");
                }
            }
            crate::ExportRow::BlobLink(l) => {
                let want = src.repo_blob(&l.repo, &l.digest).await.expect("repo_blob").expect("linked");
                let got = dst.repo_blob(&l.repo, &l.digest).await.expect("repo_blob").expect("linked at the destination");
                assert_eq!((got.size, got.storage_key), (want.size, copied_key(&want.storage_key)), "{}@{}", l.repo, l.digest);
            }
            _ => {}
        }
    }
    let q = AuditQuery { limit: AUDIT_ALL, ..AuditQuery::default() };
    assert_eq!(dst.query_audit(&q).await.expect("audit"), src.query_audit(&q).await.expect("audit"), "audit log");
    let robot_q = AuditQuery { robot: Some("robot$suite-x+ci".into()), limit: AUDIT_ALL, ..AuditQuery::default() };
    assert_eq!(dst.query_audit(&robot_q).await.expect("audit"), src.query_audit(&robot_q).await.expect("audit"), "audit by robot");
    // Every row, verbatim, but for the blob keys.
    let mapped: Vec<crate::ExportRow> = src_rows
        .into_iter()
        .map(|row| match row {
            crate::ExportRow::Blob(b) => crate::ExportRow::Blob(crate::BlobExport { storage_key: copied_key(&b.storage_key), ..b }),
            other => other,
        })
        .collect();
    assert_eq!(export_all(dst).await, mapped, "exports differ");
}

const AUDIT_ALL: u32 = crate::AUDIT_MAX_LIMIT;

fn member(project: &str, key: &str, role: &str, at: UnixTime) -> MemberRecord {
    MemberRecord { project: project.into(), member: key.into(), role: role.into(), created_at: at, updated_at: at }
}

/// Project members: put (add, change the role, keep the creation time), list, the memberships of
/// a person's keys, delete, the generation moving with each change, members of an unknown
/// project refused, and a project's members gone with it.
pub async fn members(store: &dyn MetadataStore) {
    let (p, q) = ("suite-mem", "suite-mem-other");
    assert!(store.create_project(&project(p, false, T0)).await.expect("create_project"));
    assert!(store.create_project(&project(q, false, T0)).await.expect("create_project"));
    let alice = crate::member_key(false, "suite-mem-alice");
    let devs = crate::member_key(true, "suite-mem-devs");
    assert_eq!(alice, "user:suite-mem-alice");
    assert_eq!(devs, "group:suite-mem-devs");
    let g0 = store.federation_generation().await.expect("generation");
    store.put_member(&member(p, &alice, "guest", T0 + 1)).await.expect("put_member");
    let g1 = store.federation_generation().await.expect("generation");
    assert!(g1 > g0, "adding a member moves the generation");
    store.put_member(&member(p, &devs, "developer", T0 + 2)).await.expect("put_member");
    store.put_member(&member(q, &devs, "maintainer", T0 + 3)).await.expect("put_member");
    // A role change keeps the creation time.
    store.put_member(&member(p, &alice, "project-admin", T0 + 9)).await.expect("put_member");
    assert!(store.federation_generation().await.expect("generation") > g1, "a role change moves the generation");
    let listed = store.list_members(p).await.expect("list_members");
    assert_eq!(
        listed,
        vec![
            MemberRecord { created_at: T0 + 2, updated_at: T0 + 2, ..member(p, &devs, "developer", 0) },
            MemberRecord { created_at: T0 + 1, updated_at: T0 + 9, ..member(p, &alice, "project-admin", 0) },
        ],
        "by member key (group: sorts before user:)"
    );
    // A person's memberships: their user key and their groups, in every project.
    let mine = store.memberships(&[alice.clone(), devs.clone(), "group:suite-mem-nobody".into()]).await.expect("memberships");
    let got: Vec<(&str, &str, &str)> = mine.iter().map(|m| (m.project.as_str(), m.member.as_str(), m.role.as_str())).collect();
    assert_eq!(got, [(p, devs.as_str(), "developer"), (p, alice.as_str(), "project-admin"), (q, devs.as_str(), "maintainer")]);
    assert_eq!(store.memberships(&[]).await.expect("memberships"), vec![]);
    assert_eq!(store.memberships(&["user:suite-mem-nobody".into()]).await.expect("memberships"), vec![]);
    let too_many: Vec<String> = (0..=crate::MAX_MEMBER_KEYS).map(|i| format!("group:g{i}")).collect();
    assert!(matches!(store.memberships(&too_many).await, Err(MetaError::Conflict(_))), "the number of keys is bounded");
    // Unknown project.
    let e = store.put_member(&member("suite-mem-nope", &alice, "guest", T0)).await.expect_err("unknown project");
    assert!(matches!(&e, MetaError::Conflict(m) if m.contains("suite-mem-nope")), "{e:?}");
    // Delete.
    let g2 = store.federation_generation().await.expect("generation");
    assert!(store.delete_member(p, &alice).await.expect("delete_member"));
    assert!(!store.delete_member(p, &alice).await.expect("delete_member"), "already gone");
    assert!(store.federation_generation().await.expect("generation") > g2, "removing a member moves the generation");
    assert_eq!(store.list_members(p).await.expect("list_members").len(), 1);
    // A project's members go with it; the other project's stay.
    assert_eq!(store.delete_project(p).await.expect("delete_project"), DeleteOutcome::Deleted);
    assert_eq!(store.list_members(p).await.expect("list_members"), vec![]);
    assert_eq!(store.memberships(std::slice::from_ref(&devs)).await.expect("memberships").len(), 1);
    assert_eq!(store.delete_project(q).await.expect("delete_project"), DeleteOutcome::Deleted);
    assert_eq!(store.memberships(&[devs]).await.expect("memberships"), vec![]);
}

/// Export and import: `src` and `dst` are fresh, empty stores (of any backends). Populates `src`
/// through the normal API (every table, and transient state that must not move), copies it with
/// [`copy_store`] in small pages, and compares everything through the read API; then copies
/// again (nothing changes), changes the source (deletions included) and copies once more (the
/// destination follows); and checks what `import` and `prune` promise on their own.
pub async fn transfer(src: &dyn MetadataStore, dst: &dyn MetadataStore) {
    const T: UnixTime = T0 + 50_000;
    // Settings, users (one disabled), transient state.
    src.init_setting("registry_signing_key", "-----BEGIN PRIVATE KEY-----\nsuite\n-----END PRIVATE KEY-----\n").await.expect("init");
    src.init_setting("bootstrap_admin_hash", "$argon2id$v=19$suite").await.expect("init");
    src.init_setting("suite-setting", "value").await.expect("init");
    src.put_user(&user("admin", "$argon2id$admin", true, false)).await.expect("put_user");
    src.put_user(&user("suite-x-bob", "$argon2id$bob", false, true)).await.expect("put_user");
    // People: a user from an OpenID provider with groups, and tokens: a login, its helper
    // credential whose id sorts before it, and that one's child, before both; a personal token
    // with a scope; another user's token.
    let carol = UserRecord {
        name: "suite-x-carol".into(),
        password_hash: String::new(),
        identity: Some(UserIdentity { provider: "suite-x-gh".into(), issuer: "https://id.example".into(), subject: "carol-sub".into() }),
        email: Some("carol@example.org".into()),
        groups: vec!["suite-x-devs".into(), "suite-x-ops".into()],
        created_at: T - 20,
        last_login_at: Some(T - 2),
        ..UserRecord::default()
    };
    assert!(src.create_user(&carol).await.expect("create_user"));
    let login = TokenRecord {
        refresh_token: Some("refresh-z".into()),
        checked_at: Some(T - 1),
        expires_at: Some(T + 3600),
        last_used_at: Some(T),
        ..token("suite-x-tok-z", "suite-x-carol", TokenKind::Cli, None, T - 2)
    };
    let helper = TokenRecord { expires_at: Some(T + 600), ..token("suite-x-tok-a", "suite-x-carol", TokenKind::Helper, Some("suite-x-tok-z"), T - 1) };
    let grandchild = token("suite-x-tok-0", "suite-x-carol", TokenKind::Helper, Some("suite-x-tok-a"), T - 1);
    let personal = TokenRecord {
        name: "laptop".into(),
        scope: Some(serde_json::json!({"projects": ["suite-x"], "actions": ["pull", "push"]})),
        ..token("suite-x-tok-m", "suite-x-carol", TokenKind::Personal, None, T - 3)
    };
    let bobs = token("suite-x-tok-b", "suite-x-bob", TokenKind::Personal, None, T - 4);
    for t in [&login, &helper, &grandchild, &personal, &bobs] {
        src.create_token(t).await.expect("create_token");
    }
    src.put_auth_request(&auth_request("suite-x-login", "web", T, 600), 10, T).await.expect("put_auth_request");
    let upload_repo = repo("suite-x/uploads");
    src.create_upload("suite-x-upload", &upload_repo, T).await.expect("create_upload");
    src.record_login_failure("addr:192.0.2.9", T).await.expect("login failure");
    // Federation: projects, a provider, robots of each kind.
    src.create_project(&project("suite-x", true, T - 10)).await.expect("project");
    src.create_project(&project("suite-x-private", false, T - 9)).await.expect("project");
    src.put_identity_provider(&provider("suite-x-gh", "https://token.actions.example", T - 8)).await.expect("idp");
    let mut fed = robot("robot$suite-x+ci", Some("suite-x"), Some("suite-x-gh"), None);
    fed.created_at = T - 7;
    fed.updated_at = T - 3;
    fed.expires_at = Some(T + 86_400);
    src.put_robot(&fed).await.expect("robot");
    src.put_robot(&robot("robot$suite-x+static", Some("suite-x-private"), None, Some("$argon2id$secret"))).await.expect("robot");
    let mut system = robot("robot$suite-x-sys", None, None, Some("$argon2id$sys"));
    system.disabled = true;
    src.put_robot(&system).await.expect("robot");
    src.put_member(&member("suite-x", "group:suite-x-devs", "developer", T - 6)).await.expect("member");
    src.put_member(&member("suite-x", "user:admin", "project-admin", T - 5)).await.expect("member");
    src.put_member(&member("suite-x-private", "user:suite-x-bob", "guest", T - 4)).await.expect("member");
    // Blobs, links (a blob in two repositories, one linked but unreferenced), manifests with
    // tags, an index, a referrer with an artifact type and annotations.
    let (app, lib) = (repo("suite-x/app"), repo("suite-x/lib"));
    let (config, _) = push_blob(src, &app, "suite-x-config", T).await;
    let (layer, _) = push_blob(src, &app, "suite-x-layer", T + 1).await;
    let (loose, _) = push_blob(src, &app, "suite-x-loose", T + 2).await;
    src.mount_blob(&lib, &app, &layer, T + 3).await.expect("mount").expect("mounted");
    let (lib_config, _) = push_blob(src, &lib, "suite-x-lib-config", T + 3).await;
    let img = put_ok(src, &app, &image(&config, &[&layer]), &[tag("v1"), tag("latest")], T + 4).await;
    let img2 = put_ok(src, &app, &image_with(&config, media::OCI_CONFIG, &[&layer], r#","annotations":{"n":"2"}"#), &[tag("v2")], T + 5).await;
    let idx = put_ok(src, &app, &index_with(&[&img, &img2], ""), &[tag("multi")], T + 6).await;
    let sbom = image_with(&config, "application/vnd.example.sbom", &[], &subject_field(&img));
    let sbom = {
        let mut s = String::from_utf8(sbom).expect("utf-8");
        s.insert_str(s.len() - 1, r#","artifactType":"application/vnd.example.sbom","annotations":{"org.example":"yes"}"#);
        s.into_bytes()
    };
    let sbom_digest = put_ok(src, &app, &sbom, &[], T + 7).await;
    let lib_img = put_ok(src, &lib, &image(&lib_config, &[&layer]), &[tag("stable")], T + 8).await;
    // Audit events (ids kept), one with robots and claims.
    let b = T * 1000;
    let events = vec![
        audit_event(b, "token", "ok", &["robot$suite-x+ci"], Some("suite-x/app"), Some("suite-x-gh")),
        audit_event(b + 1, "pull", "denied", &[], Some("suite-x/lib"), None),
        audit_event(b + 2, "push", "ok", &["robot$suite-x+ci", "robot$suite-x+static"], Some("suite-x/app"), None),
        audit_event(b + 3, "login", "error", &[], None, None),
    ];
    src.append_audit(&events).await.expect("append");
    let generation = dst.federation_generation().await.expect("generation");

    // The first copy, in small pages (every table spans several, a pair key included).
    let first = copy_store(src, dst, 2).await;
    assert_eq!(first.skipped, 0, "{first:?}");
    assert_eq!(first.removed, 0, "{first:?}");
    assert_same_contents(src, dst).await;
    assert!(dst.federation_generation().await.expect("generation") > generation, "an import moves the generation");
    assert_eq!(dst.get_upload("suite-x-upload").await.expect("get_upload"), None, "uploads are not copied");
    assert_eq!(dst.login_failures("addr:192.0.2.9", T).await.expect("login_failures"), 0, "login failures are not copied");
    assert_eq!(dst.get_auth_request("suite-x-login", T).await.expect("get_auth_request"), None, "logins in progress are not copied");
    assert_eq!(dst.list_tokens("suite-x-carol", &[]).await.expect("list_tokens").len(), 4);
    assert_eq!(dst.get_token("suite-x-tok-0").await.expect("get_token").as_ref(), Some(&grandchild), "a child before its parents");
    let listed = src.list_repositories(all()).await.expect("repositories");
    assert!(!listed.contains(&"suite-x/uploads".to_owned()), "an upload alone makes no repository");
    let sbom_refs = dst.referrers(&app, &img, Some("application/vnd.example.sbom")).await.expect("referrers");
    assert_eq!(sbom_refs.iter().map(|r| &r.digest).collect::<Vec<_>>(), [&sbom_digest]);
    assert_eq!(
        sbom_refs[0].annotations,
        Some(serde_json::json!({"org.example": "yes"})),
        "annotations and artifact type travel with the manifest"
    );
    // The destination's own appends come after the imported ids.
    let imported_max = dst.query_audit(&AuditQuery { limit: 1, ..AuditQuery::default() }).await.expect("audit")[0].id;
    let fresh = audit_event(b + 50, "pull", "ok", &[], None, None);
    dst.append_audit(std::slice::from_ref(&fresh)).await.expect("append after import");
    let newest = dst.query_audit(&AuditQuery { limit: 1, ..AuditQuery::default() }).await.expect("audit");
    assert!(newest[0].id > imported_max, "appends after an import get higher ids: {} vs {imported_max}", newest[0].id);
    // (The next copy prunes it: the source does not have it.)

    // Copying again: every row is already there.
    let again = copy_store(src, dst, 3).await;
    assert_eq!((again.removed, again.skipped), (1, 0), "only the destination's own event goes: {again:?}");
    assert_same_contents(src, dst).await;

    // The source changes: a tag moves, a tag and a manifest go (with its tags), a robot and a
    // user go, a blob is unlinked and collected, new content arrives, old audit events are
    // pruned. The next copy brings the destination along.
    let (v3, _) = push_blob(src, &app, "suite-x-layer-3", T + 20).await;
    let img3 = put_ok(src, &app, &image(&config, &[&layer, &v3]), &[tag("latest"), tag("v3")], T + 21).await;
    assert!(src.delete_tag(&app, &tag("v1")).await.expect("delete_tag"));
    assert!(src.delete_manifest(&lib, &lib_img).await.expect("delete_manifest"));
    assert!(src.delete_robot("robot$suite-x+static").await.expect("delete_robot"));
    assert!(src.delete_user("suite-x-bob").await.expect("delete_user"));
    assert!(src.delete_token("suite-x-tok-z").await.expect("delete_token"));
    src.update_user_login("suite-x-carol", &["suite-x-qa".to_owned()], None, Some(T + 30)).await.expect("update_user_login").expect("carol");
    let relogin = TokenRecord { refresh_token: Some("refresh-y".into()), ..token("suite-x-tok-y", "suite-x-carol", TokenKind::Cli, None, T + 30) };
    src.create_token(&relogin).await.expect("create_token");
    src.create_token(&token("suite-x-tok-1", "suite-x-carol", TokenKind::Helper, Some("suite-x-tok-y"), T + 31)).await.expect("create_token");
    assert_eq!(src.delete_project("suite-x-private").await.expect("delete_project"), DeleteOutcome::Deleted);
    assert!(src.unlink_blob(&app, &loose).await.expect("unlink"));
    let report = src.collect_garbage(T + 3, 0).await.expect("gc");
    assert_eq!(report.deleted_keys, vec![key("suite-x-loose")], "{report:?}");
    assert_eq!(src.prune_audit(b + 2).await.expect("prune_audit"), 2);
    src.put_project(&project("suite-x", false, T - 10)).await.expect("project");
    assert!(src.delete_member("suite-x", "user:admin").await.expect("delete_member"));
    src.put_member(&member("suite-x", "group:suite-x-devs", "maintainer", T + 30)).await.expect("member");
    let caught_up = copy_store(src, dst, 2).await;
    assert_eq!(caught_up.skipped, 0, "{caught_up:?}");
    assert!(caught_up.removed >= 6, "{caught_up:?}");
    assert_same_contents(src, dst).await;
    assert_eq!(tags_of(dst, &app).await, Some(vec!["latest".into(), "multi".into(), "v2".into(), "v3".into()]));
    assert_eq!(get(dst, &app, Reference::Tag(tag("latest"))).await.map(|m| m.digest), Some(img3));
    assert_eq!(dst.repo_blob(&app, &loose).await.expect("repo_blob"), None);
    assert_eq!(dst.get_robot("robot$suite-x+static").await.expect("get_robot"), None);
    for gone in ["suite-x-tok-z", "suite-x-tok-a", "suite-x-tok-0", "suite-x-tok-b"] {
        assert_eq!(dst.get_token(gone).await.expect("get_token"), None, "{gone}");
    }
    assert_eq!(dst.get_user("suite-x-carol").await.expect("get_user").map(|u| u.groups), Some(vec!["suite-x-qa".to_owned()]));
    assert!(!dst.get_project("suite-x").await.expect("get_project").expect("project").public);
    let _ = idx;

    // `import` on its own: a blob record keeps the key the store has; rows whose parent is
    // missing are skipped and reported; the same rows twice change nothing.
    let have = dst.blob_records(&[config.clone(), dig("suite-x-nothing")]).await.expect("blob_records");
    assert_eq!(have.len(), 1, "only existing records: {have:?}");
    let stale = crate::ExportRow::Blob(crate::BlobExport { digest: config.clone(), size: 99, storage_key: "other-key".into(), last_used: T });
    let missing_parent = [
        crate::ExportRow::Tag(crate::TagExport { repo: app.clone(), tag: tag("orphan"), manifest: dig("suite-x-absent"), updated: T }),
        crate::ExportRow::BlobLink(crate::BlobLinkExport { repo: app.clone(), digest: dig("suite-x-absent"), last_used: T }),
        crate::ExportRow::Robot(robot("robot$suite-x-gone+r", Some("suite-x-gone"), None, None)),
        crate::ExportRow::Member(member("suite-x-gone", "user:nobody", "guest", T)),
        crate::ExportRow::Token(token("suite-x-tok-n", "suite-x-nobody", TokenKind::Personal, None, T)),
        crate::ExportRow::Token(token("suite-x-tok-q", "suite-x-carol", TokenKind::Helper, Some("suite-x-tok-gone"), T)),
        crate::ExportRow::Token(token("suite-x-tok-c", "suite-x-carol", TokenKind::Helper, Some("suite-x-tok-zz"), T)),
    ];
    let outcome = dst.import(&[stale]).await.expect("import");
    assert_eq!(outcome.unused_keys, vec!["other-key".to_owned()], "{outcome:?}");
    assert_eq!(dst.repo_blob(&app, &config).await.expect("repo_blob").map(|b| b.storage_key), Some(copied_key(&key("suite-x-config"))));
    let outcome = dst.import(&missing_parent).await.expect("import");
    assert_eq!((outcome.imported, outcome.skipped.len()), (0, 6), "{outcome:?}");
    assert_eq!(outcome.deferred, [crate::RowKey::Name("suite-x-tok-c".into())], "its parent sorts after it: a later page may bring it");
    assert!(outcome.skipped.iter().any(|s| s.contains("suite-x-tok-gone")), "{outcome:?}");
    assert!(outcome.skipped.iter().any(|s| s.contains("orphan")), "{outcome:?}");
    for id in ["suite-x-tok-n", "suite-x-tok-q", "suite-x-tok-c"] {
        assert_eq!(dst.get_token(id).await.expect("get_token"), None, "{id}");
    }
    // Tokens of one import are written parents first, whatever their order; an identity moves
    // to the imported user from the one that had it here.
    let family = [
        crate::ExportRow::Token(token("suite-x-tok-p3", "suite-x-carol", TokenKind::Helper, Some("suite-x-tok-p2"), T)),
        crate::ExportRow::Token(token("suite-x-tok-p2", "suite-x-carol", TokenKind::Helper, Some("suite-x-tok-p1"), T)),
        crate::ExportRow::Token(token("suite-x-tok-p1", "suite-x-carol", TokenKind::Cli, None, T)),
    ];
    let outcome = dst.import(&family).await.expect("import");
    assert_eq!((outcome.imported, outcome.skipped.len(), outcome.deferred.len()), (3, 0, 0), "{outcome:?}");
    assert_eq!(dst.get_token("suite-x-tok-p3").await.expect("get_token").and_then(|t| t.parent).as_deref(), Some("suite-x-tok-p2"));
    let dave = UserRecord { name: "suite-x-dave".into(), identity: carol.identity.clone(), ..UserRecord::default() };
    let outcome = dst.import(&[crate::ExportRow::User(dave.clone())]).await.expect("import");
    assert_eq!(outcome.imported, 1);
    let i = carol.identity.as_ref().expect("identity");
    assert_eq!(dst.get_user_by_identity(&i.issuer, &i.subject).await.expect("get_user_by_identity"), Some(dave));
    assert_eq!(dst.get_user("suite-x-carol").await.expect("get_user").map(|u| u.identity), Some(None));
    assert_eq!(tags_of(dst, &app).await.map(|t| t.contains(&"orphan".to_owned())), Some(false));
    // A key of another shape than the table's is refused.
    let wrong = dst.prune(crate::Table::Tags, Some(&crate::RowKey::Name("x".into())), None, &[]).await;
    assert!(matches!(wrong, Err(MetaError::Conflict(_))), "{wrong:?}");
    let wrong = dst.prune(crate::Table::Users, None, None, &[crate::RowKey::Id(1)]).await;
    assert!(matches!(wrong, Err(MetaError::Conflict(_))), "{wrong:?}");
    // (last_used moved by the stale row's import: a last copy puts it back.)
    copy_store(src, dst, 50).await;
    assert_same_contents(src, dst).await;
}
