//! Interoperability with what real clients and the conformance suites do at the edges of the
//! spec (issue 8): the catalog's challenge and bounds, non-distributable (foreign) layers, lookups
//! of invalid tags, the challenge of a cross-repository mount, `?tag=` / `OCI-Tag` and a sha512
//! `?digest=` on manifest pushes. Every request goes through `berth_server::app` in-process, with
//! real SQLite and filesystem stores in a temp folder.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use berth_meta::{MetadataStore, SqliteStore};
use berth_server::AnonymousAccess;
use common::{basic, sha256, sha512, Resp, PW};
use http::{Method, Request};
use tower::ServiceExt;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

struct Reg {
    app: Router,
    meta: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
}

impl Reg {
    async fn with(anonymous: AnonymousAccess) -> Reg {
        let dir = tempfile::tempdir().unwrap();
        let (app, meta) = common::open_app(dir.path(), anonymous).await;
        Reg { app, meta, _dir: dir }
    }
    async fn new() -> Reg {
        Reg::with(AnonymousAccess::Off).await
    }

    async fn send(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
        let mut b = Request::builder().method(method).uri(uri).header("host", "registry.test");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        Resp::read(self.app.clone().oneshot(b.body(Body::from(body)).unwrap()).await.unwrap()).await
    }
    async fn admin(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
        let auth = basic("admin", PW);
        let mut h = headers.to_vec();
        h.push(("authorization", &auth));
        self.send(method, uri, &h, body).await
    }
    /// A registry token for `user`, asking for each of `scopes` (one `scope` parameter each).
    async fn token(&self, user: &str, scopes: &[&str]) -> String {
        let q: String = scopes.iter().map(|s| format!("&scope={s}")).collect();
        let r = self.send(Method::GET, &format!("/service/token?service=berth{q}"), &[("authorization", &basic(user, PW))], vec![]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["token"].as_str().unwrap().to_owned()
    }
    async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = sha256(data);
        let r = self.admin(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[], data.to_vec()).await;
        assert_eq!(r.status, 201, "{}", r.text());
        d
    }
    /// Pushes a config and one layer and returns an image manifest over them.
    async fn image(&self, repo: &str, seed: &str) -> Vec<u8> {
        let config = self.push_blob(repo, b"{}").await;
        let layer = self.push_blob(repo, format!("layer {seed}").as_bytes()).await;
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{}}}]}}"#,
            6 + seed.len()
        )
        .into_bytes()
    }
    /// Links a blob to each of `repos` straight in the store (fast; the catalog lists
    /// repositories that have a blob link).
    async fn seed_repos(&self, repos: impl IntoIterator<Item = String>) {
        let d: berth_oci::Digest = sha256(b"seed").parse().unwrap();
        for r in repos {
            self.meta.commit_blob(&r.parse().unwrap(), &d, 4, "sha256/seed", 0).await.unwrap();
        }
    }
}

/// The scopes of a `Bearer` challenge's `scope="..."` parameter (space-separated).
fn challenge_scopes(www_authenticate: &str) -> Vec<String> {
    let Some((_, rest)) = www_authenticate.split_once("scope=\"") else { return vec![] };
    rest.split('"').next().unwrap_or("").split(' ').map(str::to_owned).collect()
}

// ---- item 8: the catalog ----

#[tokio::test]
async fn anonymous_catalog_is_challenged_when_anonymous_access_is_off() {
    let reg = Reg::new().await;
    reg.seed_repos(["secret/app".to_owned()]).await;
    let r = reg.send(Method::GET, "/v2/_catalog", &[], vec![]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (401, "UNAUTHORIZED"), "{}", r.text());
    assert_eq!(
        r.header("www-authenticate"),
        r#"Bearer realm="http://registry.test/service/token",service="berth",scope="registry:catalog:*""#
    );
    assert!(!r.text().contains("secret/app"));
    // Following the challenge as admin lists it.
    let t = reg.token("admin", &["registry:catalog:*"]).await;
    let r = reg.send(Method::GET, "/v2/_catalog", &[("authorization", &format!("Bearer {t}"))], vec![]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["repositories"], serde_json::json!(["secret/app"]));
    // A user who may pull nothing gets an empty list, not the names.
    let r = reg.send(Method::GET, "/v2/_catalog", &[("authorization", &basic("plain", PW))], vec![]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["repositories"], serde_json::json!([]));
}

#[tokio::test]
async fn anonymous_catalog_with_anonymous_pull_lists_what_anyone_may_pull() {
    let reg = Reg::with(AnonymousAccess::Pull).await;
    reg.seed_repos(["a/one".to_owned(), "b/two".to_owned()]).await;
    let r = reg.send(Method::GET, "/v2/_catalog", &[], vec![]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["repositories"], serde_json::json!(["a/one", "b/two"]));
    let r = reg.send(Method::GET, "/v2/_catalog?n=1", &[], vec![]).await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["a/one"]));
    assert_eq!(r.header("link"), r#"</v2/_catalog?n=1&last=a%2Fone>; rel="next""#);
}

#[tokio::test]
async fn catalog_pages_are_capped_and_filtered_listings_seek_to_the_callers_repositories() {
    let reg = Reg::new().await;
    // 1,001 repositories the token below may not see, sorting before the one it may.
    reg.seed_repos((0..1001).map(|i| format!("aaa/r{i:04}"))).await;
    reg.seed_repos(["zzz/app".to_owned(), "zzz/app-other".to_owned()]).await;

    // `n` (and its absence) is capped at 1,000 names per page, with a Link to the rest.
    for q in ["", "?n=5000"] {
        let r = reg.admin(Method::GET, &format!("/v2/_catalog{q}"), &[], vec![]).await;
        assert_eq!(r.status, 200);
        let names = r.json()["repositories"].as_array().unwrap().len();
        assert_eq!(names, 1000, "{q}");
        assert_eq!(r.header("link"), r#"</v2/_catalog?n=1000&last=aaa%2Fr0999>; rel="next""#, "{q}");
    }
    let r = reg.admin(Method::GET, "/v2/_catalog?n=1000&last=aaa%2Fr0999", &[], vec![]).await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["aaa/r1000", "zzz/app", "zzz/app-other"]));
    assert_eq!(r.header("link"), "");

    // A token for one repository sees exactly that one, however many others sort before it.
    let t = reg.token("admin", &["repository:zzz/app:pull"]).await;
    let r = reg.send(Method::GET, "/v2/_catalog", &[("authorization", &format!("Bearer {t}"))], vec![]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["repositories"], serde_json::json!(["zzz/app"]));
    assert_eq!(r.header("link"), "");
}

// ---- item 17: non-distributable layers ----

#[tokio::test]
async fn foreign_layers_are_accepted_without_their_blobs() {
    let reg = Reg::new().await;
    let config = reg.push_blob("win/app", b"{}").await;
    let layer = reg.push_blob("win/app", b"app layer").await;
    let foreign = sha256(b"windows base layer, never pushed");
    let foreign_layer = |mt: &str| {
        format!(r#"{{"mediaType":"{mt}","digest":"{foreign}","size":1000,"urls":["https://mcr.microsoft.com/v2/windows/servercore/blobs/{foreign}"]}}"#)
    };
    // Docker schema 2 with a foreign base layer, as Windows images are.
    let docker = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{config}","size":2}},"layers":[{},{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{layer}","size":9}}]}}"#,
        foreign_layer("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip")
    );
    let r = reg.admin(Method::PUT, "/v2/win/app/manifests/ltsc2022", &[("content-type", DOCKER_MANIFEST)], docker.clone().into_bytes()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = reg.admin(Method::GET, "/v2/win/app/manifests/ltsc2022", &[], vec![]).await;
    assert_eq!((r.status.as_u16(), r.body), (200, docker.into_bytes()));

    // The OCI non-distributable type likewise.
    let oci = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{}]}}"#,
        foreign_layer("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")
    );
    let r = reg.admin(Method::PUT, "/v2/win/app/manifests/oci", &[("content-type", OCI_MANIFEST)], oci.into_bytes()).await;
    assert_eq!(r.status, 201, "{}", r.text());

    // Every other missing reference is still refused, and only it is named.
    let missing = sha256(b"regular layer, never pushed");
    let bad = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{},{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{missing}","size":3,"urls":["https://example.com/x"]}}]}}"#,
        foreign_layer("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")
    );
    let r = reg.admin(Method::PUT, "/v2/win/app/manifests/bad", &[("content-type", OCI_MANIFEST)], bad.into_bytes()).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"));
    assert_eq!(r.json()["errors"][0]["detail"]["missing"], serde_json::json!([missing]));

    // A foreign layer's urls must be http(s).
    let ftp = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar","digest":"{foreign}","size":1,"urls":["ftp://h/x"]}}]}}"#
    );
    let r = reg.admin(Method::PUT, "/v2/win/app/manifests/ftp", &[("content-type", OCI_MANIFEST)], ftp.into_bytes()).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "MANIFEST_INVALID"));
}

// ---- item 18: invalid tags in lookups ----

#[tokio::test]
async fn lookups_of_invalid_tags_are_404_and_pushes_400() {
    let reg = Reg::new().await;
    let m = reg.image("a", "x").await;
    for bad in ["-bad", "a+b", ".hidden", &"t".repeat(129)] {
        for method in [Method::GET, Method::HEAD] {
            let r = reg.admin(method.clone(), &format!("/v2/a/manifests/{bad}"), &[], vec![]).await;
            assert_eq!(r.status, 404, "{method} {bad}: {}", r.text());
            if method == Method::GET {
                assert_eq!(r.code(), "MANIFEST_UNKNOWN", "{bad}");
            }
        }
        let r = reg.admin(Method::DELETE, &format!("/v2/a/manifests/{bad}"), &[], vec![]).await;
        assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "MANIFEST_UNKNOWN"), "DELETE {bad}");
        let r = reg.admin(Method::PUT, &format!("/v2/a/manifests/{bad}"), &[("content-type", OCI_MANIFEST)], m.clone()).await;
        assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "TAG_INVALID"), "PUT {bad}");
    }
    // A malformed digest is still a 400.
    let r = reg.admin(Method::GET, "/v2/a/manifests/sha256:totallywrong", &[], vec![]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "DIGEST_INVALID"));
}

// ---- item 19: the challenge of a cross-repository mount ----

#[tokio::test]
async fn mount_challenge_asks_for_pull_on_the_source_and_following_it_mounts() {
    let reg = Reg::new().await;
    let d = reg.push_blob("team/source", b"shared layer").await;
    let uri = format!("/v2/team/target/blobs/uploads/?mount={d}&from=team/source");

    let r = reg.send(Method::POST, &uri, &[], vec![]).await;
    assert_eq!(r.status, 401);
    let wa = r.header("www-authenticate").to_owned();
    assert_eq!(
        wa,
        r#"Bearer realm="http://registry.test/service/token",service="berth",scope="repository:team/target:pull,push repository:team/source:pull""#
    );

    // A client that follows the challenge literally gets a token that mounts.
    let scopes = challenge_scopes(&wa);
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let t = reg.token("admin", &scopes).await;
    let r = reg.send(Method::POST, &uri, &[("authorization", &format!("Bearer {t}"))], vec![]).await;
    assert_eq!(r.status, 201, "the mount became an upload: {}", r.text());
    assert_eq!(r.header("docker-content-digest"), d);

    // A token lacking push on the target is told both scopes with insufficient_scope.
    let t = reg.token("admin", &["repository:team/target:pull"]).await;
    let r = reg.send(Method::POST, &uri, &[("authorization", &format!("Bearer {t}"))], vec![]).await;
    assert_eq!(r.status, 401);
    let wa = r.header("www-authenticate");
    assert!(wa.contains(r#"scope="repository:team/target:pull,push repository:team/source:pull""#), "{wa}");
    assert!(wa.contains(r#"error="insufficient_scope""#), "{wa}");

    // A plain upload start is challenged for the target alone.
    let r = reg.send(Method::POST, "/v2/team/target/blobs/uploads/", &[], vec![]).await;
    assert_eq!(challenge_scopes(r.header("www-authenticate")), ["repository:team/target:pull,push"]);
}

// ---- item 20: ?tag= with OCI-Tag, sha512 ?digest= ----

#[tokio::test]
async fn push_by_digest_with_tags_sets_every_tag_or_none() {
    let reg = Reg::new().await;
    let m = reg.image("multi", "tags").await;
    let d = sha256(&m);
    let ct = [("content-type", OCI_MANIFEST)];

    // One invalid tag refuses the whole push: nothing is written.
    let r = reg.admin(Method::PUT, &format!("/v2/multi/manifests/{d}?tag=good&tag=not%2Fvalid"), &ct, m.clone()).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "TAG_INVALID"), "{}", r.text());
    let r = reg.admin(Method::GET, &format!("/v2/multi/manifests/{d}"), &[], vec![]).await;
    assert_eq!(r.status, 404);
    let r = reg.admin(Method::GET, "/v2/multi/manifests/good", &[], vec![]).await;
    assert_eq!(r.status, 404);

    let r = reg.admin(Method::PUT, &format!("/v2/multi/manifests/{d}?tag=v1&tag=latest&tag=v1"), &ct, m.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let oci_tags: Vec<&str> = r.headers.get_all("oci-tag").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(oci_tags, ["v1", "latest"]);
    assert_eq!(r.header("docker-content-digest"), d);
    for tag in ["v1", "latest"] {
        let r = reg.admin(Method::GET, &format!("/v2/multi/manifests/{tag}"), &[], vec![]).await;
        assert_eq!((r.status.as_u16(), r.header("docker-content-digest")), (200, d.as_str()), "{tag}");
    }
    let r = reg.admin(Method::GET, "/v2/multi/tags/list", &[], vec![]).await;
    assert_eq!(r.json()["tags"], serde_json::json!(["latest", "v1"]));

    // Too many tags in one request is refused up front.
    let many: String = (0..=berth_server::registry::MAX_TAGS_PER_PUT).map(|i| format!("tag=t{i}&")).collect();
    let r = reg.admin(Method::PUT, &format!("/v2/multi/manifests/{d}?{many}"), &ct, m.clone()).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "TAG_INVALID"));
    let r = reg.admin(Method::GET, "/v2/multi/manifests/t0", &[], vec![]).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn push_with_tags_refused_for_a_missing_layer_sets_no_tag() {
    let reg = Reg::new().await;
    let config = reg.push_blob("gaps", b"{}").await;
    let layer_bytes = b"layer never pushed";
    let layer = sha256(layer_bytes);
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{}}}]}}"#,
        layer_bytes.len()
    )
    .into_bytes();
    let d = sha256(&m);
    let ct = [("content-type", OCI_MANIFEST)];
    let tags = ["v1", "latest", "stable", "extra"];

    // By digest with three ?tag=, and by tag with a further ?tag=: refused whole, no tag set.
    for uri in [format!("/v2/gaps/manifests/{d}?tag=v1&tag=latest&tag=stable"), "/v2/gaps/manifests/extra?tag=v1".to_owned()] {
        let r = reg.admin(Method::PUT, &uri, &ct, m.clone()).await;
        assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"), "{uri}: {}", r.text());
        assert_eq!(r.json()["errors"][0]["detail"]["missing"], serde_json::json!([layer]), "{uri}");
        assert!(r.headers.get("oci-tag").is_none(), "{uri}: a refused push names no tag");
        let r = reg.admin(Method::GET, &format!("/v2/gaps/manifests/{d}"), &[], vec![]).await;
        assert_eq!(r.status, 404, "{uri}: the manifest must not be stored");
        for tag in tags {
            let r = reg.admin(Method::GET, &format!("/v2/gaps/manifests/{tag}"), &[], vec![]).await;
            assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "MANIFEST_UNKNOWN"), "{uri}: tag {tag}");
        }
    }
    let r = reg.admin(Method::GET, "/v2/gaps/tags/list", &[], vec![]).await;
    assert_eq!((r.status.as_u16(), r.json()["tags"].as_array().map(Vec::len).unwrap_or(0)), (200, 0), "{}", r.text());

    // Once the layer is there, the same push sets every tag.
    reg.push_blob("gaps", layer_bytes).await;
    let r = reg.admin(Method::PUT, &format!("/v2/gaps/manifests/{d}?tag=v1&tag=latest&tag=stable"), &ct, m.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    for tag in ["v1", "latest", "stable"] {
        let r = reg.admin(Method::GET, &format!("/v2/gaps/manifests/{tag}"), &[], vec![]).await;
        assert_eq!((r.status.as_u16(), r.header("docker-content-digest")), (200, d.as_str()), "{tag}");
    }
}

#[tokio::test]
async fn push_by_tag_with_a_sha512_digest_is_addressed_by_it() {
    let reg = Reg::new().await;
    let m = reg.image("five12", "sha512").await;
    let d = sha512(&m);
    let ct = [("content-type", OCI_MANIFEST)];
    let r = reg.admin(Method::PUT, &format!("/v2/five12/manifests/v1?digest={d}"), &ct, m.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), d);
    assert_eq!(r.header("location"), format!("http://registry.test/v2/five12/manifests/{d}"));
    let r = reg.admin(Method::GET, "/v2/five12/manifests/v1", &[], vec![]).await;
    assert_eq!((r.status.as_u16(), r.header("docker-content-digest")), (200, d.as_str()));
    assert_eq!(r.body, m);
    let r = reg.admin(Method::HEAD, &format!("/v2/five12/manifests/{d}"), &[], vec![]).await;
    assert_eq!(r.status, 200);

    // The bytes must hash to the named digest; a different one writes nothing.
    let wrong = sha512(b"something else");
    let r = reg.admin(Method::PUT, &format!("/v2/five12/manifests/v2?digest={wrong}"), &ct, m.clone()).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "DIGEST_INVALID"));
    let r = reg.admin(Method::GET, "/v2/five12/manifests/v2", &[], vec![]).await;
    assert_eq!(r.status, 404);
    let r = reg.admin(Method::PUT, "/v2/five12/manifests/v2?digest=sha512:00", &ct, m.clone()).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "DIGEST_INVALID"));
}
