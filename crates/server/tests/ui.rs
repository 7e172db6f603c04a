//! The web UI rendered in-process: sign-in with the CSRF double-submit cookie, the security
//! headers of every page, the access checks behind pages and forms (no session: to the sign-in
//! page; a session's forms need its CSRF token), and escaping of hostile values (a group named
//! `<script>` shows as text).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use axum::body::Body;
use axum::Router;
use berth_meta::MetadataStore as _;
use berth_server::AnonymousAccess;
use common::{open_app, Resp, PW};
use http::{Method, Request};
use tower::ServiceExt as _;

struct Ui {
    app: Router,
    meta: std::sync::Arc<berth_meta::SqliteStore>,
    _dir: tempfile::TempDir,
}

impl Ui {
    async fn new() -> Ui {
        let dir = tempfile::tempdir().unwrap();
        let (app, meta) = open_app(dir.path(), AnonymousAccess::Off).await;
        Ui { app, meta, _dir: dir }
    }
    async fn send(&self, method: Method, uri: &str, cookies: &str, form: Option<&str>) -> Resp {
        let mut b = Request::builder().method(method).uri(uri).header("host", "registry.test");
        if !cookies.is_empty() {
            b = b.header("cookie", cookies);
        }
        let body = match form {
            Some(f) => {
                b = b.header("content-type", "application/x-www-form-urlencoded");
                Body::from(f.to_owned())
            }
            None => Body::empty(),
        };
        Resp::read(self.app.clone().oneshot(b.body(body).unwrap()).await.unwrap()).await
    }
    /// Signs `user` in through the form: the session cookie.
    async fn sign_in(&self, user: &str, password: &str) -> String {
        let page = self.send(Method::GET, "/login", "", None).await;
        let csrf = cookie_of(&page, "berth_csrf");
        let form = serde_urlencoded::to_string([("csrf", csrf.as_str()), ("username", user), ("password", password), ("return_to", "/account")]).unwrap();
        let r = self.send(Method::POST, "/login", &format!("berth_csrf={csrf}"), Some(&form)).await;
        assert_eq!(r.status, 303, "{}", r.text());
        assert_eq!(r.header("location"), "/account");
        cookie_of(&r, "berth_session")
    }
}

fn cookie_of(r: &Resp, name: &str) -> String {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.split(';').next().and_then(|kv| kv.strip_prefix(&format!("{name}="))).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {name} cookie in {:?}", r.headers))
}

/// The value of the first `name="csrf"` hidden input of a page.
fn csrf_in(page: &str) -> String {
    let i = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    page[i..].split('"').next().unwrap().to_owned()
}

fn assert_secured(r: &Resp) {
    let csp = r.header("content-security-policy");
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(r.header("x-frame-options"), "DENY");
    assert_eq!(r.header("cache-control"), "no-store");
}

#[tokio::test]
async fn sign_in_pages_and_csrf() {
    let ui = Ui::new().await;
    // No session: every page sends the browser to sign in, and back afterwards.
    let r = ui.send(Method::GET, "/account", "", None).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), "/login?return_to=%2Faccount");
    let r = ui.send(Method::GET, "/", "berth_session=berth_web_aaaaaaaaaaaaaaaa_forged-forged-forged-forged-forged-forg", None).await;
    assert_eq!(r.status, 303, "a forged session");

    let page = ui.send(Method::GET, "/login?return_to=https://evil.example/", "", None).await;
    assert_eq!(page.status, 200);
    assert_secured(&page);
    let html = page.text();
    assert!(html.contains("<form method=\"post\" action=\"/login\">") && html.contains("autocomplete=\"current-password\""), "{html}");
    assert!(html.contains("name=\"return_to\" value=\"/\""), "another site is never a place to return to: {html}");
    let csrf = cookie_of(&page, "berth_csrf");
    assert!(page.headers.get_all("set-cookie").iter().any(|c| c.to_str().unwrap().contains("HttpOnly")));

    // A sign-in without the cookie's token (another site's form): refused before the password.
    let form = serde_urlencoded::to_string([("csrf", "guess"), ("username", "admin"), ("password", PW)]).unwrap();
    let r = ui.send(Method::POST, "/login", &format!("berth_csrf={csrf}"), Some(&form)).await;
    assert_eq!(r.status, 403);
    let form = serde_urlencoded::to_string([("csrf", csrf.as_str()), ("username", "admin"), ("password", PW)]).unwrap();
    let r = ui.send(Method::POST, "/login", "", Some(&form)).await;
    assert_eq!(r.status, 403, "no cookie: no sign-in");
    // A wrong password: back to the form with the same words as everywhere.
    let form = serde_urlencoded::to_string([("csrf", csrf.as_str()), ("username", "admin"), ("password", "wrong")]).unwrap();
    let r = ui.send(Method::POST, "/login", &format!("berth_csrf={csrf}"), Some(&form)).await;
    assert_eq!(r.status, 303);
    assert!(r.header("location").starts_with("/login?") && r.header("location").contains("invalid+username+or+password"), "{}", r.header("location"));

    // Signed in: the session works on every page, and its forms need its token.
    let session = ui.sign_in("admin", PW).await;
    let cookie = format!("berth_session={session}");
    let r = ui.send(Method::GET, "/", &cookie, None).await;
    assert_eq!(r.status, 200);
    assert_secured(&r);
    assert!(r.text().contains("Sign out"));
    let account = ui.send(Method::GET, "/account", &cookie, None).await;
    assert_eq!(account.status, 200);
    let token_csrf = csrf_in(&account.text());
    let r = ui.send(Method::POST, "/account/tokens", &cookie, Some("csrf=forged&name=laptop")).await;
    assert_eq!(r.status, 403, "a form of another site");
    let r = ui.send(Method::POST, "/account/tokens", &cookie, Some(&format!("csrf={token_csrf}&name=laptop&expires=7d"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let html = r.text();
    assert!(html.contains("shown only once") && html.contains("berth_pat_"), "{html}");
    let tokens = ui.meta.list_tokens("admin", &[berth_meta::TokenKind::Personal]).await.unwrap();
    assert_eq!(tokens.len(), 1);
    let r = ui.send(Method::POST, &format!("/account/tokens/{}/revoke", tokens[0].id), &cookie, Some("csrf=forged")).await;
    assert_eq!(r.status, 403);
    let r = ui.send(Method::POST, &format!("/account/tokens/{}/revoke", tokens[0].id), &cookie, Some(&format!("csrf={token_csrf}"))).await;
    assert_eq!(r.status, 303);
    assert!(ui.meta.list_tokens("admin", &[berth_meta::TokenKind::Personal]).await.unwrap().is_empty());
    // A session's token does not work for another session.
    let other = ui.sign_in("admin", PW).await;
    let r = ui.send(Method::POST, "/account/tokens", &format!("berth_session={other}"), Some(&format!("csrf={token_csrf}&name=x"))).await;
    assert_eq!(r.status, 403);
    // Robots' secrets do not open sessions, and a session is not a registry password.
    let r = ui.send(Method::GET, "/v2/", &format!("authorization=x; {cookie}"), None).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn hostile_values_show_as_text_and_people_see_only_their_projects() {
    let ui = Ui::new().await;
    for (name, public) in [("team", false), ("open", true), ("secret", false)] {
        ui.meta.create_project(&berth_meta::ProjectRecord { name: name.into(), public, created_at: 1 }).await.unwrap();
    }
    let hostile = "<script>alert(1)</script>";
    let mut plain = ui.meta.get_user("plain").await.unwrap().unwrap();
    plain.groups = vec![hostile.to_owned(), "devs".into()];
    ui.meta.put_user(&plain).await.unwrap();
    ui.meta
        .put_member(&berth_meta::MemberRecord { project: "team".into(), member: "group:devs".into(), role: "developer".into(), created_at: 1, updated_at: 1 })
        .await
        .unwrap();
    let session = ui.sign_in("plain", PW).await;
    let cookie = format!("berth_session={session}");
    let account = ui.send(Method::GET, "/account", &cookie, None).await.text();
    assert!(!account.contains("<script>"), "{account}");
    assert!(account.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{account}");
    let projects = ui.send(Method::GET, "/", &cookie, None).await.text();
    assert!(projects.contains(">team</a></td>") && projects.contains(">open</a></td>") && !projects.contains("secret"), "{projects}");
    assert!(projects.contains("developer"), "{projects}");
    // An administrator sees every project.
    let admin = ui.sign_in("admin", PW).await;
    let projects = ui.send(Method::GET, "/", &format!("berth_session={admin}"), None).await.text();
    assert!(projects.contains(">secret</a></td>"), "{projects}");
}

#[tokio::test]
async fn project_pages_show_and_allow_by_role() {
    let ui = Ui::new().await;
    for name in ["team", "team.evil", "secret"] {
        ui.meta.create_project(&berth_meta::ProjectRecord { name: name.into(), public: false, created_at: 1 }).await.unwrap();
    }
    for (i, repo) in ["team/app", "team/b/c", "team.evil/x", "teamx/y", "secret/z"].iter().enumerate() {
        let r: berth_oci::RepoName = repo.parse().unwrap();
        let d = berth_oci::Digest::compute(berth_oci::Algorithm::Sha256, repo.as_bytes());
        ui.meta.commit_blob(&r, &d, 1, &format!("key/{i}"), 1).await.unwrap();
    }
    let mut plain = ui.meta.get_user("plain").await.unwrap().unwrap();
    plain.groups = vec!["devs".into()];
    ui.meta.put_user(&plain).await.unwrap();
    let member = |project: &str, key: &str, role: &str| berth_meta::MemberRecord { project: project.into(), member: key.into(), role: role.into(), created_at: 1, updated_at: 1 };
    ui.meta.put_member(&member("team", "group:devs", "developer")).await.unwrap();

    // A developer sees the repositories (of this project only) and the members, not the controls.
    let plain_cookie = format!("berth_session={}", ui.sign_in("plain", PW).await);
    let r = ui.send(Method::GET, "/projects/team", &plain_cookie, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let html = r.text();
    assert!(html.contains(">team/app</a></li>") && html.contains(">team/b/c</a></li>"), "{html}");
    assert!(!html.contains("team.evil/x") && !html.contains("teamx/y"), "another project's repositories: {html}");
    assert!(html.contains("<td>devs</td>") && !html.contains("Add member") && !html.contains(">Remove<"), "{html}");
    // Another project: refused. Its forms: refused too, whatever the page showed.
    assert_eq!(ui.send(Method::GET, "/projects/secret", &plain_cookie, None).await.status, 403);
    let account = ui.send(Method::GET, "/account", &plain_cookie, None).await;
    let csrf = csrf_in(&account.text());
    let r = ui.send(Method::POST, "/projects/team/members", &plain_cookie, Some(&format!("csrf={csrf}&kind=user&name=plain&role=project-admin"))).await;
    assert_eq!(r.status, 403, "a developer promoting themselves");
    assert!(r.text().contains("plain is developer in project team"), "{}", r.text());

    // A project admin gets the controls and uses them; a forged form does nothing.
    ui.meta.put_member(&member("team", "user:plain", "project-admin")).await.unwrap();
    let html = ui.send(Method::GET, "/projects/team", &plain_cookie, None).await.text();
    assert!(html.contains("Add member") && html.contains("aria-label=\"Remove group devs\""), "{html}");
    let r = ui.send(Method::POST, "/projects/team/members", &plain_cookie, Some("csrf=forged&kind=user&name=bob&role=guest")).await;
    assert_eq!(r.status, 403);
    let r = ui.send(Method::POST, "/projects/team/members", &plain_cookie, Some(&format!("csrf={csrf}&kind=user&name=bob&role=guest"))).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("user bob is guest in team"), "{}", r.text());
    let r = ui.send(Method::POST, "/projects/team/members/remove", &plain_cookie, Some(&format!("csrf={csrf}&kind=user&name=bob"))).await;
    assert!(r.text().contains("user bob removed from team"), "{}", r.text());
    assert_eq!(ui.meta.list_members("team").await.unwrap().len(), 2);
    let r = ui.send(Method::POST, "/projects/secret/members", &plain_cookie, Some(&format!("csrf={csrf}&kind=user&name=plain&role=guest"))).await;
    assert_eq!(r.status, 403, "not their project");
}

/// Pushes a one-layer image to `repo:tag` through `/v2` as admin, with `annotations` in its
/// manifest; returns the manifest's digest.
async fn push_image(ui: &Ui, repo: &str, tag: &str, annotations: serde_json::Value) -> String {
    let auth = common::basic("admin", PW);
    let put_blob = |bytes: &'static [u8]| {
        let digest = common::sha256(bytes);
        let uri = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("host", "registry.test")
            .header("authorization", auth.clone())
            .header("content-type", "application/octet-stream")
            .body(Body::from(bytes))
            .unwrap();
        let app = ui.app.clone();
        async move {
            let r = Resp::read(app.oneshot(req).await.unwrap()).await;
            assert_eq!(r.status, 201, "{}", r.text());
            (digest, bytes.len())
        }
    };
    let (config, config_len) = put_blob(b"{\"architecture\":\"amd64\",\"os\":\"linux\"}").await;
    let (layer, layer_len) = put_blob(b"layer bytes of the test image").await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_len}],
        "annotations": annotations,
    })
    .to_string();
    let digest = common::sha256(manifest.as_bytes());
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/v2/{repo}/manifests/{tag}"))
        .header("host", "registry.test")
        .header("authorization", auth)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(Body::from(manifest))
        .unwrap();
    let r = Resp::read(ui.app.clone().oneshot(req).await.unwrap()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    digest
}

#[tokio::test]
async fn repository_and_artifact_pages() {
    let ui = Ui::new().await;
    ui.meta.create_project(&berth_meta::ProjectRecord { name: "team".into(), public: false, created_at: 1 }).await.unwrap();
    let digest = push_image(&ui, "team/app", "v1", serde_json::json!({"org.opencontainers.image.title": "<img src=x onerror=alert(1)>"})).await;
    let admin = format!("berth_session={}", ui.sign_in("admin", PW).await);
    let r = ui.send(Method::GET, "/repository?name=team/app", &admin, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("href=\"/artifact?repo=team%2Fapp&amp;ref=v1\""), "{}", r.text());
    let r = ui.send(Method::GET, "/artifact?repo=team/app&ref=v1", &admin, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let html = r.text();
    assert!(html.contains(&digest) && html.contains("application/vnd.oci.image.layer.v1.tar") && html.contains("Layers"), "{html}");
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;") && !html.contains("<img src=x"), "an annotation shows as text: {html}");
    assert!(html.contains(&format!("data-copy=\"docker pull registry.test/team/app@{digest}\"")), "{html}");
    // Someone who may not pull there sees nothing of it.
    let plain = format!("berth_session={}", ui.sign_in("plain", PW).await);
    assert_eq!(ui.send(Method::GET, "/repository?name=team/app", &plain, None).await.status, 403);
    assert_eq!(ui.send(Method::GET, "/artifact?repo=team/app&ref=v1", &plain, None).await.status, 403);
    // The one script is served from this server (no inline scripts).
    let js = ui.send(Method::GET, "/static/berth.js", "", None).await;
    assert_eq!((js.status.as_u16(), js.header("content-type")), (200, "text/javascript; charset=utf-8"));
}

#[tokio::test]
async fn robots_page_creates_rules_in_plain_words() {
    let ui = Ui::new().await;
    ui.meta.create_project(&berth_meta::ProjectRecord { name: "team".into(), public: false, created_at: 1 }).await.unwrap();
    let admin = format!("berth_session={}", ui.sign_in("admin", PW).await);
    let page = ui.send(Method::GET, "/projects/team/robots", &admin, None).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let csrf = csrf_in(&page.text());
    // The check as you type: a rule line in plain words, or why not; hostile text stays data.
    let r = ui.send(Method::GET, "/rules/check?line=repository%3Dmyorg%2Fapp", &admin, None).await;
    assert_eq!(r.json(), serde_json::json!({"ok": true, "text": "repository equals \"myorg/app\""}));
    let r = ui.send(Method::GET, "/rules/check?line=nonsense", &admin, None).await;
    assert_eq!(r.json()["ok"], false);
    assert_eq!(ui.send(Method::GET, "/rules/check?line=a%3Db", "", None).await.status, 303, "signed-in only");
    // A static robot: its secret once; its permissions listed.
    let form = serde_urlencoded::to_string([("csrf", csrf.as_str()), ("name", "ci"), ("idp", ""), ("rules", ""), ("permissions", "team/*:pull,push")]).unwrap();
    let r = ui.send(Method::POST, "/projects/team/robots", &admin, Some(&form)).await;
    let html = r.text();
    assert!(html.contains("robot$team+ci") && html.contains("id=\"robot-secret\"") && html.contains("team/*: pull, push"), "{html}");
    // Editing: new permissions and a rule; the static secret stays.
    let hash = ui.meta.get_robot("robot$team+ci").await.unwrap().unwrap().secret_hash;
    let form = serde_urlencoded::to_string([("csrf", csrf.as_str()), ("robot", "robot$team+ci"), ("rules", ""), ("permissions", "team/app:pull"), ("disabled", "true")]).unwrap();
    let html = ui.send(Method::POST, "/projects/team/robots/edit", &admin, Some(&form)).await.text();
    assert!(html.contains("Robot robot$team+ci saved.") && html.contains("team/app: pull") && html.contains("disabled"), "{html}");
    let stored = ui.meta.get_robot("robot$team+ci").await.unwrap().unwrap();
    assert!(stored.disabled && stored.secret_hash == hash, "{stored:?}");
    let form = serde_urlencoded::to_string([("csrf", "forged"), ("robot", "robot$team+ci"), ("permissions", "*:pull")]).unwrap();
    assert_eq!(ui.send(Method::POST, "/projects/team/robots/edit", &admin, Some(&form)).await.status, 403);
    // A bad rule line: refused with the reason, nothing created.
    let form = serde_urlencoded::to_string([("csrf", csrf.as_str()), ("name", "bad"), ("idp", ""), ("rules", "no rule here"), ("permissions", "team/*:pull")]).unwrap();
    let html = ui.send(Method::POST, "/projects/team/robots", &admin, Some(&form)).await.text();
    assert!(html.contains("use CLAIM=VALUE"), "{html}");
    assert!(ui.meta.get_robot("robot$team+bad").await.unwrap().is_none());
    // Deleting: only with the token, only this project's robots.
    let form = serde_urlencoded::to_string([("csrf", "forged"), ("robot", "robot$team+ci")]).unwrap();
    assert_eq!(ui.send(Method::POST, "/projects/team/robots/delete", &admin, Some(&form)).await.status, 403);
    let form = serde_urlencoded::to_string([("csrf", csrf.as_str()), ("robot", "robot$team+ci")]).unwrap();
    assert!(ui.send(Method::POST, "/projects/team/robots/delete", &admin, Some(&form)).await.text().contains("deleted"));
    assert!(ui.meta.get_robot("robot$team+ci").await.unwrap().is_none());
    // Not a project admin: no robots page.
    let plain = format!("berth_session={}", ui.sign_in("plain", PW).await);
    assert_eq!(ui.send(Method::GET, "/projects/team/robots", &plain, None).await.status, 403);
}

#[tokio::test]
async fn administrators_pages() {
    let ui = Ui::new().await;
    ui.meta.create_project(&berth_meta::ProjectRecord { name: "team".into(), public: false, created_at: 1 }).await.unwrap();
    push_image(&ui, "team/app", "v1", serde_json::json!({})).await;
    let admin = format!("berth_session={}", ui.sign_in("admin", PW).await);
    let plain = format!("berth_session={}", ui.sign_in("plain", PW).await);
    for path in ["/tester", "/audit", "/audit.json", "/identity-providers", "/system"] {
        assert_eq!(ui.send(Method::GET, path, &plain, None).await.status, 403, "{path} for a non-administrator");
        let r = ui.send(Method::GET, path, &admin, None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    // Admins get the links; others do not.
    assert!(ui.send(Method::GET, "/", &admin, None).await.text().contains("href=\"/tester\""));
    assert!(!ui.send(Method::GET, "/", &plain, None).await.text().contains("href=\"/tester\""));

    // The tester: a provider, sample claims with a hostile value, a robot whose rule it fails.
    let r = ui.send(Method::GET, "/api/v1/identity-providers", &admin, None).await;
    assert_eq!(r.status, 401, "the admin API does not take the session cookie");
    ui.meta
        .put_identity_provider(&berth_meta::IdentityProviderRecord {
            name: "gh".into(),
            // Static keys: no network (tests talk to loopback only).
            config: serde_json::json!({"name": "gh", "issuer": "https://ci.example.test", "audiences": ["registry.test"],
                "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k",
                    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}}),
            created_at: 1,
            updated_at: 1,
        })
        .await
        .unwrap();
    ui.meta
        .put_robot(&berth_meta::RobotRecord {
            name: "robot$team+ci".into(),
            project: Some("team".into()),
            description: String::new(),
            disabled: false,
            expires_at: None,
            secret_hash: None,
            identity_provider: Some("gh".into()),
            rules: serde_json::json!([{"claim": "repository", "equals": "myorg/app"}]),
            permissions: serde_json::json!([{"repositories": "*", "actions": ["pull"]}]),
            created_at: 1,
            updated_at: 1,
        })
        .await
        .unwrap();
    // Written past the core: the federation snapshot follows the store's generation within
    // its poll (about a second).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let page = ui.send(Method::GET, "/tester", &admin, None).await.text();
    let csrf = csrf_in(&page);
    let claims = serde_json::json!({"repository": "<script>alert(1)</script>"}).to_string();
    let form = serde_urlencoded::to_string([("csrf", csrf.as_str()), ("provider", "gh"), ("claims", claims.as_str())]).unwrap();
    let html = ui.send(Method::POST, "/tester", &admin, Some(&form)).await.text();
    assert!(html.contains("does not match: robot$team+ci") && html.contains("Result: denied"), "{html}");
    assert!(!html.contains("<script>alert(1)") && html.contains("&lt;script&gt;"), "{html}");
    let form = serde_urlencoded::to_string([("csrf", "forged"), ("token", "x")]).unwrap();
    assert_eq!(ui.send(Method::POST, "/tester", &admin, Some(&form)).await.status, 403);
    // A platform's sample claim set: the robot's rule holds on it (the sample never verifies).
    let form = serde_urlencoded::to_string([("csrf", csrf.as_str()), ("provider", "gh"), ("sample", "github"), ("claims", "")]).unwrap();
    let html = ui.send(Method::POST, "/tester", &admin, Some(&form)).await.text();
    assert!(html.contains("its rules hold, but the token did not verify") && html.contains("✓ </span>repository equals"), "{html}");

    // The audit log finds the push by who did it; the JSON is the admin API's shape.
    let html = ui.send(Method::GET, "/audit?who=admin&action=push", &admin, None).await.text();
    assert!(html.contains("<td>push</td>") && html.contains("team/app"), "{html}");
    let json = ui.send(Method::GET, "/audit.json?who=admin&action=push", &admin, None).await.json();
    assert!(json.as_array().unwrap().iter().all(|e| e["action"] == "push" && e["principal"] == "admin"), "{json}");
    let r = ui.send(Method::GET, "/audit?since=yesterday", &admin, None).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("not an RFC 3339 time"));

    // Adding a provider from a preset: for people here (a client), its secret never shown.
    let pcsrf = csrf_in(&ui.send(Method::GET, "/identity-providers", &admin, None).await.text());
    let form = serde_urlencoded::to_string([
        ("csrf", pcsrf.as_str()), ("preset", "keycloak"), ("name", "corp"), ("instance", "https://kc.example.test"), ("realm", "acme"),
        ("client_id", "berth"), ("client_secret", "s3cret-value"), ("admin_group", "registry-admins"), ("audiences", ""),
    ])
    .unwrap();
    let r = ui.send(Method::POST, "/identity-providers", &admin, Some(&form)).await;
    assert_eq!(r.status, 303);
    let html = ui.send(Method::GET, r.header("location"), &admin, None).await.text();
    assert!(html.contains("Identity provider corp added (issuer https://kc.example.test/realms/acme)."), "{html}");
    assert!(html.contains("<td>berth</td>") && !html.contains("s3cret-value"), "{html}");
    let form = serde_urlencoded::to_string([("csrf", pcsrf.as_str()), ("preset", "keycloak"), ("name", "half"), ("audiences", "")]).unwrap();
    let r = ui.send(Method::POST, "/identity-providers", &admin, Some(&form)).await;
    let html = ui.send(Method::GET, r.header("location"), &admin, None).await.text();
    assert!(html.contains("the keycloak preset needs"), "the reason shows: {html}");
    assert_eq!(ui.send(Method::POST, "/identity-providers", &plain, Some(&form)).await.status, 403);

    // Providers (the test of one without network keys reports its error, no crash) and system.
    let html = ui.send(Method::GET, "/identity-providers?test=gh", &admin, None).await.text();
    assert!(html.contains("Test of gh") && html.contains("https://ci.example.test") && html.contains("static jwks") && html.contains("ES256"), "{html}");
    let html = ui.send(Method::GET, "/system", &admin, None).await.text();
    assert!(html.contains("<dt>Metadata store</dt><dd>ok</dd>") && html.contains("<td>plain</td>"), "{html}");
    // Garbage collection, run from the page: its report shows.
    assert_eq!(ui.send(Method::POST, "/system/gc", &admin, Some("csrf=forged")).await.status, 403);
    assert_eq!(ui.send(Method::POST, "/system/gc", &plain, Some(&format!("csrf={pcsrf}"))).await.status, 403);
    let r = ui.send(Method::POST, "/system/gc", &admin, Some(&format!("csrf={pcsrf}"))).await;
    assert_eq!((r.status.as_u16(), r.header("location")), (303, "/system"));
    let html = ui.send(Method::GET, "/system", &admin, None).await.text();
    assert!(html.contains("Last run here") && html.contains("blobs,"), "{html}");
}

#[tokio::test]
async fn projects_are_found_created_changed_and_deleted_with_confirmation() {
    let ui = Ui::new().await;
    for name in ["alpha", "beta", "gamma"] {
        ui.meta.create_project(&berth_meta::ProjectRecord { name: name.into(), public: false, created_at: 1 }).await.unwrap();
    }
    let admin = format!("berth_session={}", ui.sign_in("admin", PW).await);
    let html = ui.send(Method::GET, "/?q=ET", &admin, None).await.text();
    assert!(html.contains(">beta</a>") && !html.contains(">alpha</a>") && !html.contains(">gamma</a>"), "a server-side search: {html}");
    let csrf = csrf_in(&html);
    let html = ui.send(Method::POST, "/projects", &admin, Some(&format!("csrf={csrf}&name=delta&public=true"))).await.text();
    assert!(html.contains("Project delta created."), "{html}");
    assert!(ui.meta.get_project("delta").await.unwrap().unwrap().public);
    let html = ui.send(Method::POST, "/projects", &admin, Some(&format!("csrf={csrf}&name=Bad%20Name"))).await.text();
    assert!(html.contains("invalid project name") || html.contains("project name"), "{html}");
    // Visibility: a project admin's setting.
    let html = ui.send(Method::POST, "/projects/delta/settings", &admin, Some(&format!("csrf={csrf}"))).await.text();
    assert!(html.contains("delta is now private."), "{html}");
    // Deleting asks first, naming what goes.
    let html = ui.send(Method::GET, "/projects/delta/delete", &admin, None).await.text();
    assert!(html.contains("Delete project delta?") && html.contains("removes its 0 members"), "{html}");
    assert_eq!(ui.send(Method::POST, "/projects/delta/delete", &admin, Some("csrf=forged")).await.status, 403);
    let html = ui.send(Method::POST, "/projects/delta/delete", &admin, Some(&format!("csrf={csrf}"))).await.text();
    assert!(html.contains("Project delta deleted."), "{html}");
    assert!(ui.meta.get_project("delta").await.unwrap().is_none());
    // Not for others.
    let plain = format!("berth_session={}", ui.sign_in("plain", PW).await);
    let pcsrf = csrf_in(&ui.send(Method::GET, "/account", &plain, None).await.text());
    assert_eq!(ui.send(Method::POST, "/projects", &plain, Some(&format!("csrf={pcsrf}&name=mine"))).await.status, 403);
    assert_eq!(ui.send(Method::POST, "/projects/alpha/settings", &plain, Some(&format!("csrf={pcsrf}&public=true"))).await.status, 403);
    assert_eq!(ui.send(Method::GET, "/projects/alpha/delete", &plain, None).await.status, 403);
    // My account shows how to use this registry, with its real host.
    let html = ui.send(Method::GET, "/account", &plain, None).await.text();
    assert!(html.contains("docker login -u plain --password-stdin registry.test") && html.contains("credHelpers"), "{html}");
}

/// 10,000 repositories: pages read only what they show (a project's range, 100 names a page), so
/// they render fast whatever the registry holds. Prints the server-side time of each page (the
/// figure docs/ui.md quotes); asserts what they show.
#[tokio::test]
async fn pages_stay_fast_with_ten_thousand_repositories() {
    let ui = Ui::new().await;
    ui.meta.create_project(&berth_meta::ProjectRecord { name: "team".into(), public: false, created_at: 1 }).await.unwrap();
    // The rows as `berth migrate` writes them: one transaction for all.
    let digest = berth_oci::Digest::compute(berth_oci::Algorithm::Sha256, b"shared layer");
    let mut rows = vec![berth_meta::ExportRow::Blob(berth_meta::BlobExport { digest: digest.clone(), size: 12, storage_key: "key/shared".into(), last_used: 1 })];
    for i in 0..10_000 {
        let project = if i % 2 == 0 { "team" } else { "other" };
        rows.push(berth_meta::ExportRow::BlobLink(berth_meta::BlobLinkExport { repo: format!("{project}/app-{i:05}").parse().unwrap(), digest: digest.clone(), last_used: 1 }));
    }
    let outcome = ui.meta.import(&rows).await.unwrap();
    assert!(outcome.skipped.is_empty(), "{:?}", outcome.skipped);
    let admin = format!("berth_session={}", ui.sign_in("admin", PW).await);
    let mut report = Vec::new();
    for path in ["/", "/projects/team", "/projects/team?after=team%2Fapp-05000", "/account", "/audit"] {
        let mut times = Vec::new();
        let mut html = String::new();
        for _ in 0..5 {
            let started = std::time::Instant::now();
            let r = ui.send(Method::GET, path, &admin, None).await;
            times.push(started.elapsed());
            assert_eq!(r.status, 200, "{path}");
            html = r.text();
        }
        times.sort();
        report.push(format!("{path}: median {:?}", times[2]));
        if path.starts_with("/projects/team") {
            assert_eq!(html.matches("<li><a href=\"/repository?").count(), 100, "{path}: a page of 100");
            assert!(html.contains("More repositories") && !html.contains("other/app"), "{path}");
        }
    }
    eprintln!("server-side page times with 10,000 repositories ({} build): {}", if cfg!(debug_assertions) { "debug" } else { "release" }, report.join(", "));
}

async fn put_manifest(ui: &Ui, repo: &str, reference: &str, manifest: &serde_json::Value) -> String {
    let body = manifest.to_string();
    let digest = common::sha256(body.as_bytes());
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/v2/{repo}/manifests/{reference}"))
        .header("host", "registry.test")
        .header("authorization", common::basic("admin", PW))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(Body::from(body))
        .unwrap();
    let r = Resp::read(ui.app.clone().oneshot(req).await.unwrap()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    digest
}

#[tokio::test]
async fn referrers_show_as_a_tree() {
    let ui = Ui::new().await;
    ui.meta.create_project(&berth_meta::ProjectRecord { name: "team".into(), public: false, created_at: 1 }).await.unwrap();
    let image = push_image(&ui, "team/app", "v1", serde_json::json!({})).await;
    // The empty config of artifacts.
    let empty = common::sha256(b"{}");
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/v2/team/app/blobs/uploads/?digest={empty}"))
        .header("host", "registry.test")
        .header("authorization", common::basic("admin", PW))
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(Resp::read(ui.app.clone().oneshot(req).await.unwrap()).await.status, 201);
    let artifact = |subject: &str, kind: &str| {
        serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "artifactType": kind,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": 1}
        })
    };
    let sbom = artifact(&image, "application/vnd.example.sbom+json");
    let sbom_digest = common::sha256(sbom.to_string().as_bytes());
    put_manifest(&ui, "team/app", &sbom_digest, &sbom).await;
    let sig = artifact(&sbom_digest, "application/vnd.example.signature");
    let sig_digest = common::sha256(sig.to_string().as_bytes());
    put_manifest(&ui, "team/app", &sig_digest, &sig).await;

    let admin = format!("berth_session={}", ui.sign_in("admin", PW).await);
    let html = ui.send(Method::GET, "/artifact?repo=team/app&ref=v1", &admin, None).await.text();
    let sbom_at = html.find(&format!("<li class=\"depth-0\">application/vnd.example.sbom+json <a href=\"/artifact?repo=team%2Fapp&amp;ref={}", sbom_digest.replace(':', "%3A")));
    let sig_at = html.find("<li class=\"depth-1\">application/vnd.example.signature");
    assert!(sbom_at.is_some() && sig_at.is_some() && sbom_at < sig_at, "the signature of the SBOM under it: {html}");
}
