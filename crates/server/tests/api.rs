//! In-process router tests for the distribution spec's edge cases: every request goes through
//! `berth_server::app` with real SQLite and filesystem stores in a temp folder, and the Docker
//! token flow in front, as a client would see it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use axum::body::Body;
use axum::Router;
use berth_server::AnonymousAccess;
use common::{basic, sha256, sha512, Resp, PW};
use http::{Method, Request};
use tower::ServiceExt;

struct Reg {
    app: Router,
    dir: tempfile::TempDir,
}

async fn build(dir: &std::path::Path, anonymous: AnonymousAccess) -> Router {
    common::open_app(dir, anonymous).await.0
}

impl Reg {
    async fn new() -> Reg {
        Reg::with(AnonymousAccess::Off).await
    }
    async fn with(anonymous: AnonymousAccess) -> Reg {
        let dir = tempfile::tempdir().unwrap();
        let app = build(dir.path(), anonymous).await;
        Reg { app, dir }
    }
    /// A new app over the same folder, as after a restart.
    async fn restart(&mut self) {
        self.app = build(self.dir.path(), AnonymousAccess::Off).await;
    }

    async fn send(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
        let mut b = Request::builder().method(method).uri(uri).header("host", "registry.test");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        Resp::read(self.app.clone().oneshot(b.body(Body::from(body)).unwrap()).await.unwrap()).await
    }
    /// As admin with Basic credentials directly on /v2.
    async fn admin(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
        let auth = basic("admin", PW);
        let mut h = headers.to_vec();
        h.push(("authorization", &auth));
        self.send(method, uri, &h, body).await
    }
    async fn token(&self, user: &str, scope: &str) -> String {
        let r = self
            .send(Method::GET, &format!("/service/token?service=berth&scope={scope}"), &[("authorization", &basic(user, PW))], vec![])
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["token"].as_str().unwrap().to_owned()
    }
    async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = sha256(data);
        let r = self.admin(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[], data.to_vec()).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        d
    }
    async fn push_image(&self, repo: &str, tag: &str, extra: &str) -> (String, Vec<u8>) {
        let config = self.push_blob(repo, b"{}").await;
        let layer = self.push_blob(repo, format!("layer of {repo}:{tag}").as_bytes()).await;
        let m = image_manifest(&config, 2, &layer, 10, extra);
        let r = self.admin(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"), &[("content-type", OCI_MANIFEST)], m.clone()).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        (sha256(&m), m)
    }
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn image_manifest(config: &str, csize: usize, layer: &str, lsize: usize, extra: &str) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{csize}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{lsize}}}]{extra}}}"#
    )
    .into_bytes()
}

#[tokio::test]
async fn base_endpoint_and_challenge() {
    let reg = Reg::new().await;
    let r = reg.send(Method::GET, "/v2/", &[], vec![]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), r#"Bearer realm="http://registry.test/service/token",service="berth""#);
    assert_eq!(r.header("docker-distribution-api-version"), "registry/2.0");
    assert_eq!(r.code(), "UNAUTHORIZED");
    let r = reg.admin(Method::GET, "/v2/", &[], vec![]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-distribution-api-version"), "registry/2.0");
    // A repository request without credentials names the scope it needs.
    let r = reg.send(Method::GET, "/v2/library/app/manifests/v1", &[], vec![]).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").contains(r#"scope="repository:library/app:pull""#), "{}", r.header("www-authenticate"));
    let r = reg.send(Method::POST, "/v2/library/app/blobs/uploads/", &[], vec![]).await;
    assert!(r.header("www-authenticate").contains(r#"scope="repository:library/app:pull,push""#));
}

#[tokio::test]
async fn token_flow_grants_the_intersection() {
    let reg = Reg::new().await;
    // Anonymous token requests are refused while anonymous access is off.
    let r = reg.send(Method::GET, "/service/token?service=berth&scope=repository:a:pull", &[], vec![]).await;
    assert_eq!(r.status, 401);
    let r = reg.send(Method::GET, "/service/token?scope=repository:a:pull", &[("authorization", &basic("admin", "wrong"))], vec![]).await;
    assert_eq!(r.status, 401);
    assert!(String::from_utf8_lossy(&r.body).contains("invalid username or password"));

    let r = reg
        .send(Method::GET, "/service/token?service=berth&scope=repository:library/app:pull,push&scope=registry:catalog:*", &[("authorization", &basic("admin", PW))], vec![])
        .await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["token"], j["access_token"]);
    assert_eq!(j["expires_in"], 900);
    assert!(j["issued_at"].as_str().unwrap().ends_with('Z'));
    assert!(j.get("refresh_token").is_none());

    // pull-only token: reads work, writes get an insufficient_scope challenge naming the scope.
    let pull = reg.token("admin", "repository:library/app:pull").await;
    let bearer = format!("Bearer {pull}");
    reg.push_image("library/app", "v1", "").await;
    let r = reg.send(Method::GET, "/v2/library/app/manifests/v1", &[("authorization", &bearer)], vec![]).await;
    assert_eq!(r.status, 200);
    let r = reg.send(Method::POST, "/v2/library/app/blobs/uploads/", &[("authorization", &bearer)], vec![]).await;
    assert_eq!(r.status, 401);
    let wa = r.header("www-authenticate");
    assert!(wa.contains(r#"scope="repository:library/app:pull,push""#) && wa.contains(r#"error="insufficient_scope""#), "{wa}");
    // The token is scoped to its repository.
    let r = reg.send(Method::GET, "/v2/library/other/tags/list", &[("authorization", &bearer)], vec![]).await;
    assert_eq!(r.status, 401);
    // A non-admin local user gets nothing yet (no project roles), but a token all the same.
    let t = reg.token("plain", "repository:library/app:pull").await;
    let r = reg.send(Method::GET, "/v2/library/app/manifests/v1", &[("authorization", &format!("Bearer {t}"))], vec![]).await;
    assert_eq!(r.status, 401);
    // Basic directly on /v2 for a user without the permission: 403 DENIED.
    let r = reg.send(Method::GET, "/v2/library/app/manifests/v1", &[("authorization", &basic("plain", PW))], vec![]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (403, "DENIED"));
    // Garbage bearer tokens are a 401 with invalid_token.
    let r = reg.send(Method::GET, "/v2/", &[("authorization", "Bearer not.a.token")], vec![]).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").contains("invalid_token"));
}

#[tokio::test]
async fn oauth2_post_form() {
    let reg = Reg::new().await;
    let form = format!("grant_type=password&service=berth&client_id=containerd&username=admin&password={PW}&scope=repository%3Aa%2Fb%3Apull");
    let r = reg.send(Method::POST, "/service/token", &[("content-type", "application/x-www-form-urlencoded")], form.into_bytes()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["access_token"].is_string());
    assert!(r.json().get("refresh_token").is_none(), "only asked for with access_type=offline");
    // A refresh token that is not Berth's.
    let r = reg.send(Method::POST, "/service/token", &[], b"grant_type=refresh_token&refresh_token=x".to_vec()).await;
    assert_eq!(r.status, 401);
    let r = reg.send(Method::POST, "/service/token", &[], b"grant_type=refresh_token".to_vec()).await;
    assert_eq!(r.status, 400);
    let r = reg.send(Method::POST, "/service/token", &[], b"grant_type=password&username=admin&password=nope".to_vec()).await;
    assert_eq!(r.status, 401);

    // The OAuth2 side of the token spec: access_type=offline gives a refresh token (a Berth
    // token), which grant_type=refresh_token trades for access tokens until it is revoked.
    let form = format!("grant_type=password&service=berth&client_id=docker&access_type=offline&username=admin&password={PW}&scope=repository%3Aa%2Fb%3Apull");
    let r = reg.send(Method::POST, "/service/token", &[], form.into_bytes()).await;
    assert_eq!(r.status, 200);
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();
    assert!(refresh.starts_with("berth_cli_"), "{refresh}");
    let form = format!("grant_type=refresh_token&service=berth&client_id=docker&refresh_token={refresh}&scope=repository%3Aa%2Fb%3Apull%2Cpush");
    let r = reg.send(Method::POST, "/service/token", &[], form.clone().into_bytes()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let access = r.json()["access_token"].as_str().unwrap().to_owned();
    let r = reg.send(Method::HEAD, "/v2/a/b/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000", &[("authorization", &format!("Bearer {access}"))], vec![]).await;
    assert_eq!(r.status, 404, "the access token works");
    // GET with offline_token=true (docker login) gives one too.
    let r = reg.send(Method::GET, "/service/token?service=berth&offline_token=true&client_id=docker", &[("authorization", &basic("admin", PW))], vec![]).await;
    assert!(r.json()["refresh_token"].as_str().unwrap().starts_with("berth_cli_"));
    // Revoked: the refresh token and the access tokens it got stop at once.
    let id = &refresh["berth_cli_".len().."berth_cli_".len() + 16];
    let r = reg.admin(Method::DELETE, &format!("/api/v1/users/admin/tokens/{id}"), &[], vec![]).await;
    assert_eq!(r.status, 204);
    let r = reg.send(Method::POST, "/service/token", &[], form.into_bytes()).await;
    assert_eq!(r.status, 401);
    let r = reg.send(Method::HEAD, "/v2/a/b/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000", &[("authorization", &format!("Bearer {access}"))], vec![]).await;
    assert_eq!(r.status, 401, "a registry token issued through a revoked Berth token is revoked too");
}

#[tokio::test]
async fn monolithic_and_chunked_uploads() {
    let reg = Reg::new().await;
    // Monolithic with a wrong digest: DIGEST_INVALID, nothing stored.
    let wrong = sha256(b"other");
    let r = reg.admin(Method::POST, &format!("/v2/a/b/blobs/uploads/?digest={wrong}"), &[], b"content".to_vec()).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "DIGEST_INVALID"));
    let r = reg.admin(Method::HEAD, &format!("/v2/a/b/blobs/{wrong}"), &[], vec![]).await;
    assert_eq!(r.status, 404);
    // Chunked.
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let r = reg.admin(Method::POST, "/v2/a/b/blobs/uploads/", &[], vec![]).await;
    assert_eq!(r.status, 202);
    let loc = r.header("location").to_owned();
    assert!(loc.starts_with("http://registry.test/v2/a/b/blobs/uploads/"), "{loc}");
    assert_eq!(r.header("range"), "0-0");
    assert!(!r.header("docker-upload-uuid").is_empty());
    let path = loc.trim_start_matches("http://registry.test").to_owned();
    let r = reg.admin(Method::PATCH, &path, &[("content-range", "0-59999"), ("content-type", "application/octet-stream")], data[..60_000].to_vec()).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), "0-59999");
    // Out of order: 416 with the current range.
    let r = reg.admin(Method::PATCH, &path, &[("content-range", "70000-79999")], data[70_000..80_000].to_vec()).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("range"), "0-59999");
    let r = reg.admin(Method::GET, &path, &[], vec![]).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("range"), "0-59999");
    // The session belongs to its repository.
    let other = path.replace("/v2/a/b/", "/v2/a/c/");
    let r = reg.admin(Method::GET, &other, &[], vec![]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "BLOB_UPLOAD_UNKNOWN"));
    // Streamed PATCH without Content-Range appends; the PUT carries the last chunk.
    let r = reg.admin(Method::PATCH, &path, &[], data[60_000..90_000].to_vec()).await;
    assert_eq!(r.header("range"), "0-89999");
    let d = sha256(&data);
    let r = reg.admin(Method::PUT, &format!("{path}?digest={d}"), &[("content-range", "90000-99999")], data[90_000..].to_vec()).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("docker-content-digest"), d);
    assert_eq!(r.header("location"), format!("http://registry.test/v2/a/b/blobs/{d}"));
    let r = reg.admin(Method::GET, &format!("/v2/a/b/blobs/{d}"), &[], vec![]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("content-length"), "100000");
    // The finished session is gone.
    let r = reg.admin(Method::GET, &path, &[], vec![]).await;
    assert_eq!(r.status, 404);
    // PUT without digest.
    let r = reg.admin(Method::POST, "/v2/a/b/blobs/uploads/", &[], vec![]).await;
    let p = r.header("location").trim_start_matches("http://registry.test").to_owned();
    let r = reg.admin(Method::PUT, &p, &[], b"x".to_vec()).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "DIGEST_INVALID"));
    // Cancel.
    let r = reg.admin(Method::DELETE, &p, &[], vec![]).await;
    assert_eq!(r.status, 204);
    let r = reg.admin(Method::GET, &p, &[], vec![]).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn upload_survives_restart() {
    let mut reg = Reg::new().await;
    let r = reg.admin(Method::POST, "/v2/x/blobs/uploads/", &[], vec![]).await;
    let p = r.header("location").trim_start_matches("http://registry.test").to_owned();
    let r = reg.admin(Method::PATCH, &p, &[("content-range", "0-4")], b"hello".to_vec()).await;
    assert_eq!(r.status, 202);
    reg.restart().await;
    let r = reg.admin(Method::GET, &p, &[], vec![]).await;
    assert_eq!((r.status.as_u16(), r.header("range")), (204, "0-4"));
    let d = sha256(b"hello world");
    let r = reg.admin(Method::PUT, &format!("{p}?digest={d}"), &[("content-range", "5-10")], b" world".to_vec()).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = reg.admin(Method::GET, &format!("/v2/x/blobs/{d}"), &[], vec![]).await;
    assert_eq!(r.body, b"hello world");
}

#[tokio::test]
async fn blob_reads_ranges_and_delete() {
    let reg = Reg::new().await;
    let d = reg.push_blob("r/s", b"0123456789").await;
    let r = reg.admin(Method::HEAD, &format!("/v2/r/s/blobs/{d}"), &[], vec![]).await;
    assert_eq!((r.status.as_u16(), r.header("content-length"), r.header("docker-content-digest")), (200, "10", d.as_str()));
    assert!(r.body.is_empty());
    let r = reg.admin(Method::GET, &format!("/v2/r/s/blobs/{d}"), &[("range", "bytes=2-5")], vec![]).await;
    assert_eq!((r.status.as_u16(), r.header("content-range"), r.body.as_slice()), (206, "bytes 2-5/10", &b"2345"[..]));
    let r = reg.admin(Method::GET, &format!("/v2/r/s/blobs/{d}"), &[("range", "bytes=-3")], vec![]).await;
    assert_eq!(r.body, b"789");
    let r = reg.admin(Method::GET, &format!("/v2/r/s/blobs/{d}"), &[("range", "bytes=10-")], vec![]).await;
    assert_eq!((r.status.as_u16(), r.header("content-range")), (416, "bytes */10"));
    // Another repository cannot read it by digest.
    let r = reg.admin(Method::GET, &format!("/v2/r/t/blobs/{d}"), &[], vec![]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "BLOB_UNKNOWN"));
    let r = reg.admin(Method::GET, "/v2/r/s/blobs/sha256:nothex", &[], vec![]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "DIGEST_INVALID"));
    let r = reg.admin(Method::DELETE, &format!("/v2/r/s/blobs/{d}"), &[], vec![]).await;
    assert_eq!(r.status, 202);
    let r = reg.admin(Method::GET, &format!("/v2/r/s/blobs/{d}"), &[], vec![]).await;
    assert_eq!(r.status, 404);
    let r = reg.admin(Method::DELETE, &format!("/v2/r/s/blobs/{d}"), &[], vec![]).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn sha512_blobs_and_manifests() {
    let reg = Reg::new().await;
    let data = b"sha512 content".to_vec();
    let d = sha512(&data);
    let r = reg.admin(Method::POST, &format!("/v2/h/blobs/uploads/?digest={d}"), &[], data.clone()).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = reg.admin(Method::GET, &format!("/v2/h/blobs/{d}"), &[], vec![]).await;
    assert_eq!(r.body, data);
    let config = reg.push_blob("h", b"{}").await;
    let m = image_manifest(&config, 2, &d, data.len(), "");
    let md = sha512(&m);
    let r = reg.admin(Method::PUT, &format!("/v2/h/manifests/{md}"), &[("content-type", OCI_MANIFEST)], m.clone()).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("docker-content-digest"), md);
    let r = reg.admin(Method::GET, &format!("/v2/h/manifests/{md}"), &[], vec![]).await;
    assert_eq!(r.body, m);
}

#[tokio::test]
async fn manifests_put_get_validate() {
    let reg = Reg::new().await;
    let config = reg.push_blob("m/n", b"{}").await;
    let missing = sha256(b"never pushed");
    let bad = image_manifest(&config, 2, &missing, 12, "");
    let r = reg.admin(Method::PUT, "/v2/m/n/manifests/v1", &[("content-type", OCI_MANIFEST)], bad).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"));
    assert_eq!(r.json()["errors"][0]["detail"]["missing"][0], missing.as_str());
    let r = reg.admin(Method::GET, "/v2/m/n/manifests/v1", &[], vec![]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "MANIFEST_UNKNOWN"));

    let (d, m) = reg.push_image("m/n", "v1", "").await;
    for reference in ["v1", d.as_str()] {
        let r = reg.admin(Method::GET, &format!("/v2/m/n/manifests/{reference}"), &[("accept", OCI_MANIFEST)], vec![]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, m);
        assert_eq!(r.header("content-type"), OCI_MANIFEST);
        assert_eq!(r.header("docker-content-digest"), d);
        let h = reg.admin(Method::HEAD, &format!("/v2/m/n/manifests/{reference}"), &[], vec![]).await;
        assert_eq!((h.status.as_u16(), h.header("content-length")), (200, m.len().to_string().as_str()));
        assert!(h.body.is_empty());
    }
    // By digest with the wrong digest.
    let r = reg.admin(Method::PUT, &format!("/v2/m/n/manifests/{}", sha256(b"x")), &[("content-type", OCI_MANIFEST)], m.clone()).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "DIGEST_INVALID"));
    // Not JSON, schema 1, mismatched media type.
    for (body, ct) in [
        (b"{".to_vec(), OCI_MANIFEST),
        (br#"{"schemaVersion":1}"#.to_vec(), "application/vnd.docker.distribution.manifest.v1+prettyjws"),
        (m.clone(), "application/vnd.docker.distribution.manifest.v2+json"),
    ] {
        let r = reg.admin(Method::PUT, "/v2/m/n/manifests/bad", &[("content-type", ct)], body).await;
        assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "MANIFEST_INVALID"), "{}", String::from_utf8_lossy(&r.body));
    }
    // Too large.
    let huge = vec![b' '; 4 * 1024 * 1024 + 1];
    let r = reg.admin(Method::PUT, "/v2/m/n/manifests/huge", &[("content-type", OCI_MANIFEST)], huge).await;
    assert_eq!(r.status, 413);
    // Index: children must exist.
    let index = |child: &str| format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{child}","size":1}}]}}"#).into_bytes();
    let r = reg.admin(Method::PUT, "/v2/m/n/manifests/idx", &[("content-type", OCI_INDEX)], index(&missing)).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"));
    let r = reg.admin(Method::PUT, "/v2/m/n/manifests/idx", &[("content-type", OCI_INDEX)], index(&d)).await;
    assert_eq!(r.status, 201);
    let r = reg.admin(Method::GET, "/v2/m/n/manifests/idx", &[], vec![]).await;
    assert_eq!(r.header("content-type"), OCI_INDEX);
    // Bad names and methods.
    let r = reg.admin(Method::GET, "/v2/M/n/manifests/v1", &[], vec![]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "NAME_INVALID"));
    let r = reg.admin(Method::POST, "/v2/m/n/manifests/v1", &[], vec![]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (405, "UNSUPPORTED"));
    let deep = "a/b/c/d/e/f/g/h/i";
    reg.push_image(deep, "latest", "").await;
    let r = reg.admin(Method::GET, &format!("/v2/{deep}/manifests/latest"), &[], vec![]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn deletes() {
    let reg = Reg::new().await;
    let (d, _) = reg.push_image("del", "v1", "").await;
    let r = reg.admin(Method::PUT, "/v2/del/manifests/v2", &[("content-type", OCI_MANIFEST)], reg.admin(Method::GET, "/v2/del/manifests/v1", &[], vec![]).await.body).await;
    assert_eq!(r.status, 201);
    // Deleting a tag keeps the manifest and the other tag.
    let r = reg.admin(Method::DELETE, "/v2/del/manifests/v1", &[], vec![]).await;
    assert_eq!(r.status, 202);
    assert_eq!(reg.admin(Method::GET, "/v2/del/manifests/v1", &[], vec![]).await.status, 404);
    assert_eq!(reg.admin(Method::GET, "/v2/del/manifests/v2", &[], vec![]).await.status, 200);
    // Deleting by digest removes the manifest and its tags.
    let r = reg.admin(Method::DELETE, &format!("/v2/del/manifests/{d}"), &[], vec![]).await;
    assert_eq!(r.status, 202);
    let r = reg.admin(Method::GET, "/v2/del/manifests/v2", &[], vec![]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "MANIFEST_UNKNOWN"));
    let r = reg.admin(Method::DELETE, &format!("/v2/del/manifests/{d}"), &[], vec![]).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn tags_catalog_pagination() {
    let reg = Reg::new().await;
    for t in ["e", "a", "c", "b", "d"] {
        reg.push_image("p/q", t, "").await;
    }
    reg.push_image("p/r", "x", "").await;
    let r = reg.admin(Method::GET, "/v2/p/q/tags/list", &[], vec![]).await;
    assert_eq!(r.json(), serde_json::json!({"name": "p/q", "tags": ["a", "b", "c", "d", "e"]}));
    assert!(r.header("link").is_empty());
    let r = reg.admin(Method::GET, "/v2/p/q/tags/list?n=2", &[], vec![]).await;
    assert_eq!(r.json()["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(r.header("link"), r#"</v2/p/q/tags/list?n=2&last=b>; rel="next""#);
    let r = reg.admin(Method::GET, "/v2/p/q/tags/list?n=2&last=d", &[], vec![]).await;
    assert_eq!(r.json()["tags"], serde_json::json!(["e"]));
    assert!(r.header("link").is_empty());
    let r = reg.admin(Method::GET, "/v2/p/q/tags/list?n=0", &[], vec![]).await;
    assert_eq!(r.json()["tags"], serde_json::json!([]));
    let r = reg.admin(Method::GET, "/v2/p/q/tags/list?n=x", &[], vec![]).await;
    assert_eq!(r.status, 400);
    let r = reg.admin(Method::GET, "/v2/p/none/tags/list", &[], vec![]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "NAME_UNKNOWN"));
    let r = reg.admin(Method::GET, "/v2/_catalog?n=1", &[], vec![]).await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["p/q"]));
    assert_eq!(r.header("link"), r#"</v2/_catalog?n=1&last=p%2Fq>; rel="next""#);
    let r = reg.admin(Method::GET, "/v2/_catalog?last=p%2Fq", &[], vec![]).await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["p/r"]));
    // A token without the catalog scope sees only what it may pull.
    let t = reg.token("admin", "repository:p/r:pull").await;
    let r = reg.send(Method::GET, "/v2/_catalog", &[("authorization", &format!("Bearer {t}"))], vec![]).await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["p/r"]));
}

#[tokio::test]
async fn referrers_and_subject() {
    let reg = Reg::new().await;
    let (subject, m) = reg.push_image("ref", "v1", "").await;
    let subj = format!(r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":{}}}"#, m.len());
    let config = reg.push_blob("ref", b"{}").await;
    let layer = reg.push_blob("ref", b"sbom").await;
    let sbom = image_manifest(&config, 2, &layer, 4, &format!(r#","artifactType":"application/spdx+json","annotations":{{"k":"v"}}{subj}"#));
    let r = reg.admin(Method::PUT, &format!("/v2/ref/manifests/{}", sha256(&sbom)), &[("content-type", OCI_MANIFEST)], sbom.clone()).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("oci-subject"), subject);
    let sig = image_manifest(&config, 2, &layer, 4, &format!(r#","artifactType":"application/vnd.dev.cosign"{subj}"#));
    let r = reg.admin(Method::PUT, &format!("/v2/ref/manifests/{}", sha256(&sig)), &[("content-type", OCI_MANIFEST)], sig.clone()).await;
    assert_eq!(r.status, 201);
    let r = reg.admin(Method::GET, &format!("/v2/ref/referrers/{subject}"), &[], vec![]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), OCI_INDEX);
    let j = r.json();
    assert_eq!(j["schemaVersion"], 2);
    assert_eq!(j["manifests"].as_array().unwrap().len(), 2);
    let r = reg.admin(Method::GET, &format!("/v2/ref/referrers/{subject}?artifactType=application/spdx%2Bjson"), &[], vec![]).await;
    assert_eq!(r.header("oci-filters-applied"), "artifactType");
    let j = r.json();
    assert_eq!(j["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(j["manifests"][0]["digest"], sha256(&sbom).as_str());
    assert_eq!(j["manifests"][0]["artifactType"], "application/spdx+json");
    assert_eq!(j["manifests"][0]["annotations"]["k"], "v");
    assert_eq!(j["manifests"][0]["size"], sbom.len());
    // Unknown subject: an empty index.
    let r = reg.admin(Method::GET, &format!("/v2/ref/referrers/{}", sha256(b"nothing")), &[], vec![]).await;
    assert_eq!((r.status.as_u16(), r.json()["manifests"].as_array().unwrap().len()), (200, 0));
    // A referrer may arrive before its subject.
    let later = sha256(b"future subject");
    let early = image_manifest(&config, 2, &layer, 4, &format!(r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{later}","size":5}}"#));
    let r = reg.admin(Method::PUT, "/v2/ref/manifests/early", &[("content-type", OCI_MANIFEST)], early).await;
    assert_eq!(r.status, 201);
    let r = reg.admin(Method::GET, &format!("/v2/ref/referrers/{later}"), &[], vec![]).await;
    assert_eq!(r.json()["manifests"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn cross_repository_mount() {
    let reg = Reg::new().await;
    let d = reg.push_blob("src/repo", b"shared layer").await;
    let r = reg.admin(Method::POST, &format!("/v2/dst/repo/blobs/uploads/?mount={d}&from=src/repo"), &[], vec![]).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), format!("http://registry.test/v2/dst/repo/blobs/{d}"));
    let r = reg.admin(Method::GET, &format!("/v2/dst/repo/blobs/{d}"), &[], vec![]).await;
    assert_eq!(r.body, b"shared layer");
    // Source lacks it: falls back to a new upload session.
    let r = reg.admin(Method::POST, &format!("/v2/dst/repo/blobs/uploads/?mount={}&from=src/repo", sha256(b"nope")), &[], vec![]).await;
    assert_eq!(r.status, 202);
    assert!(r.header("location").contains("/v2/dst/repo/blobs/uploads/"));
    // A token that may push dst but not pull src cannot mount from it.
    let t = reg.token("admin", "repository:third/repo:pull,push").await;
    let r = reg.send(Method::POST, &format!("/v2/third/repo/blobs/uploads/?mount={d}&from=src/repo"), &[("authorization", &format!("Bearer {t}"))], vec![]).await;
    assert_eq!(r.status, 202);
    let r = reg.admin(Method::GET, &format!("/v2/third/repo/blobs/{d}"), &[], vec![]).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn anonymous_modes() {
    let reg = Reg::with(AnonymousAccess::Pull).await;
    reg.push_image("pub/app", "v1", "").await;
    // `/v2/` still challenges, so clients with credentials send them (and pushes work).
    let r = reg.send(Method::GET, "/v2/", &[], vec![]).await;
    assert_eq!(r.status, 401);
    let r = reg.send(Method::GET, "/v2/pub/app/manifests/v1", &[], vec![]).await;
    assert_eq!(r.status, 200);
    let r = reg.send(Method::POST, "/v2/pub/app/blobs/uploads/", &[], vec![]).await;
    assert_eq!(r.status, 401);
    let r = reg.send(Method::GET, "/service/token?scope=repository:pub/app:pull,push", &[], vec![]).await;
    assert_eq!(r.status, 200);
    let rw = Reg::with(AnonymousAccess::ReadWrite).await;
    assert_eq!(rw.send(Method::GET, "/v2/", &[], vec![]).await.status, 200);
    let d = sha256(b"anon");
    let r = rw.send(Method::POST, &format!("/v2/x/blobs/uploads/?digest={d}"), &[], b"anon".to_vec()).await;
    assert_eq!(r.status, 201);
}

#[tokio::test]
async fn health_and_metrics() {
    let reg = Reg::new().await;
    assert_eq!(reg.send(Method::GET, "/healthz", &[], vec![]).await.status, 200);
    assert_eq!(reg.send(Method::GET, "/readyz", &[], vec![]).await.status, 200);
    reg.push_blob("met", b"bytes").await;
    // On the main listener, /metrics is for administrators only.
    let r = reg.send(Method::GET, "/metrics", &[], vec![]).await;
    assert_eq!(r.status, 401);
    assert!(r.headers.get("www-authenticate").is_some());
    let r = reg.send(Method::GET, "/metrics", &[("authorization", &basic("plain", PW))], vec![]).await;
    assert_eq!(r.status, 403);
    let r = reg.admin(Method::GET, "/metrics", &[], vec![]).await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("berth_http_requests_total"), "{text}");
    assert!(text.contains("route=\"upload\""), "{text}");
    assert!(text.contains("berth_bytes_received_total"), "{text}");
}
