//! People, end to end, against a real OpenID provider (`scripts/oidc/provider.mjs`: panva's
//! certified oidc-provider, shaped like Keycloak and like authentik) and the real `berth` binary:
//! the browser's authorization code flow with its session cookie, onboarding with groups,
//! refusals (replayed or forged `state`, a foreign `nonce`, a username collision, an identity
//! provider that is down), `berth login` through the device flow, personal access tokens used by
//! skopeo, their revocation, a person removed from a group losing access after the re-check
//! window, and the credential helper through docker's config file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::oidc::{pkce, query_params, random_token, Client, OidcProvider, Shape};
use support::{berth_command, Berth, CmdOutput, OciImage};

/// A client that does not follow redirects (the tests look at each hop).
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers().get("location").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

/// Sets up Berth for people of `op`: the identity provider `corp` with a login section, the
/// project team-demo whose group team-demo are developers, and the project other.
async fn setup(b: &mut Berth, op: &OidcProvider, login: Value) -> Client {
    let client = op.register_client(&[b.url("/auth/oidc/callback")]);
    let mut login = login;
    login["clientId"] = json!(client.id);
    login["clientSecret"] = json!(client.secret);
    let preset = match op.shape() {
        Shape::Keycloak => "keycloak",
        Shape::Authentik => "authentik",
    };
    let r = b
        .admin(reqwest::Method::POST, "/api/v1/identity-providers")
        .json(&json!({"name": "corp", "preset": preset, "issuer": op.issuer(), "login": login}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    for p in ["team-demo", "other"] {
        let r = b.admin(reqwest::Method::POST, "/api/v1/projects").json(&json!({"name": p})).send().await.unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = b
        .admin(reqwest::Method::POST, "/api/v1/projects/team-demo/members")
        .json(&json!({"group": "team-demo", "role": "developer"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    client
}

/// An ID token for `client`, as a script would get one from the provider (its own code flow).
fn id_token_for(op: &OidcProvider, client: &Client, redirect_uri: &str, user: &str, password: &str) -> String {
    let (verifier, challenge) = pkce();
    let mut url = reqwest::Url::parse(&op.endpoint("authorization_endpoint")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client.id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", "openid profile email")
        .append_pair("state", &random_token())
        .append_pair("nonce", &random_token())
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let back = op.browser_login(url.as_str(), user, password);
    let code = query_params(&back)["code"].clone();
    let token_url = op.endpoint("token_endpoint");
    let form = vec![
        ("grant_type".to_owned(), "authorization_code".to_owned()),
        ("code".to_owned(), code),
        ("redirect_uri".to_owned(), redirect_uri.to_owned()),
        ("code_verifier".to_owned(), verifier),
    ];
    let (id, secret) = (client.id.clone(), client.secret.clone());
    let tokens: Value = support::block_on(async move {
        reqwest::Client::new().post(&token_url).basic_auth(id, Some(secret)).form(&form).send().await.unwrap().json().await.unwrap()
    });
    tokens["id_token"].as_str().unwrap_or_else(|| panic!("no id_token: {tokens}")).to_owned()
}

/// Starts a browser login at Berth: the identity provider's authorization URL.
async fn start_login(b: &Berth, return_to: &str) -> String {
    let r = no_redirects().get(b.url(&format!("/auth/oidc/login?idp=corp&return_to={return_to}"))).send().await.unwrap();
    assert!(r.status().is_redirection(), "{} {}", r.status(), r.text().await.unwrap());
    location(&r)
}

/// The whole browser login of `user`: the session cookie's value.
async fn browser_login(b: &Berth, op: &OidcProvider, user: &str, password: &str) -> String {
    let authorize = start_login(b, "/").await;
    let back = op.browser_login(&authorize, user, password);
    let r = no_redirects().get(&back).send().await.unwrap();
    assert!(r.status().is_redirection(), "{user}: {} {}", r.status(), r.text().await.unwrap());
    session_of(&r)
}

fn session_of(r: &reqwest::Response) -> String {
    let cookie = r.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let value = cookie.split(';').next().unwrap().strip_prefix("berth_session=").unwrap_or_else(|| panic!("no session cookie: {cookie}"));
    value.to_owned()
}

async fn whoami(b: &Berth, session: &str) -> (u16, Value) {
    let r = reqwest::Client::new().get(b.url("/auth/session")).header("cookie", format!("berth_session={session}")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn browser_flow(shape: Shape) {
    let op = OidcProvider::start(shape);
    let mut b = Berth::start();
    let client = setup(&mut b, &op, json!({"adminGroup": "registry-admins"})).await;

    // The authorization request: code flow, PKCE S256, state and nonce, Berth's callback.
    let authorize = start_login(&b, "/somewhere").await;
    let q = query_params(&authorize);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], b.url("/auth/oidc/callback"));
    assert!(q["state"].len() >= 32 && q["nonce"].len() >= 32, "{authorize}");

    // alice logs in: onboarded with her groups; the cookie is a session on the store.
    let back = op.browser_login(&authorize, "alice", "alice-pw");
    let r = no_redirects().get(&back).send().await.unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    assert_eq!(location(&r), "/somewhere");
    let cookie = r.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"), "{cookie}");
    let session = session_of(&r);
    let (status, who) = whoami(&b, &session).await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["name"], "alice");
    assert_eq!(who["provider"], "corp");
    assert_eq!(who["groups"], json!(["team-demo"]), "the keycloak shape's /team-demo loses its slash: {who}");
    assert_eq!(who["roles"], json!([{"project": "team-demo", "role": "developer", "via": ["group:team-demo"]}]));
    assert_eq!(who["admin"], false);
    let subject = who["subject"].as_str().unwrap().to_owned();
    assert_ne!(subject, "alice", "people are known by their subject");
    let users: Value = b.admin(reqwest::Method::GET, "/api/v1/users/alice").send().await.unwrap().json().await.unwrap();
    assert_eq!(users["identity"], json!({"provider": "corp", "subject": subject}));

    // The same callback again (a replayed state), and a forged state: refused, nothing new.
    let r = no_redirects().get(&back).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("already used"));
    let r = no_redirects().get(b.url("/auth/oidc/callback?code=x&state=forged")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // A code the provider refuses (expired, made up): the login in progress is used up, the
    // provider's answer named, no user made.
    let authorize = start_login(&b, "/").await;
    let state = query_params(&authorize)["state"].clone();
    let r = no_redirects().get(b.url(&format!("/auth/oidc/callback?code=expired-or-made-up&state={state}"))).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("refused the login: the identity provider refused: invalid_grant"));
    // The provider's own refusal comes back as a page.
    let r = no_redirects().get(b.url("/auth/oidc/callback?error=access_denied&error_description=the+user+said+no")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("the user said no"));

    // A foreign nonce: the authorization request of a login Berth started (its state and PKCE
    // challenge), sent to the provider with another nonce. The code trades, the ID token
    // verifies, and its nonce is refused.
    let authorize = start_login(&b, "/").await;
    let mut url = reqwest::Url::parse(&authorize).unwrap();
    let pairs: Vec<(String, String)> =
        url.query_pairs().map(|(k, v)| (k.to_string(), if k == "nonce" { "another-nonce-0123456789abcdef".into() } else { v.into_owned() })).collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let back = op.browser_login(url.as_str(), "alice", "alice-pw");
    let r = no_redirects().get(&back).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("nonce"));

    // A member of the admin group is an administrator.
    let carol = browser_login(&b, &op, "carol", "carol-pw").await;
    assert_eq!(whoami(&b, &carol).await.1["admin"], true);

    // Scripts call the admin API with the ID token their provider gave them; an ID token issued
    // to another client of the same provider is not Berth's.
    let id_token = id_token_for(&op, &client, &b.url("/auth/oidc/callback"), "alice", "alice-pw");
    let r = reqwest::Client::new().get(b.url("/api/v1/whoami")).bearer_auth(&id_token).send().await.unwrap();
    let who: Value = r.json().await.unwrap();
    assert_eq!((who["name"].as_str(), who["provider"].as_str()), (Some("alice"), Some("corp")), "{who}");
    let other = op.register_client(&["http://127.0.0.1:9/cb".to_owned()]);
    let foreign = id_token_for(&op, &other, "http://127.0.0.1:9/cb", "alice", "alice-pw");
    let r = reqwest::Client::new().get(b.url("/api/v1/whoami")).bearer_auth(&foreign).send().await.unwrap();
    assert_eq!(r.status(), 401, "{}", r.text().await.unwrap());

    // A wrong password never reaches Berth.
    let authorize = start_login(&b, "/").await;
    let e = op.try_browser_login(&authorize, "alice", "wrong").unwrap_err();
    assert!(e.contains("Invalid username or password"), "{e}");

    // A name taken by a local user: refused, naming the conflict and the command that links.
    let r = b.admin(reqwest::Method::PUT, "/api/v1/users/bob").json(&json!({"password": "password-123"})).send().await.unwrap();
    assert!(r.status().is_success());
    let authorize = start_login(&b, "/").await;
    let back = op.browser_login(&authorize, "bob", "bob-pw");
    let r = no_redirects().get(&back).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let page = r.text().await.unwrap();
    assert!(page.contains("already taken by a local user") && page.contains("berth user link bob --idp corp --subject"), "{page}");
    // It is the same person: the administrator links the user (offline, on the data folder),
    // and bob logs in as bob, keeping what the user had.
    let subject = page.split("--subject ").nth(1).unwrap().split(|c: char| c.is_whitespace() || matches!(c, '<' | ')' | ',' | '`')).next().unwrap().to_owned();
    let mut link = berth_command();
    link.args(["user", "link", "bob", "--idp", "corp", "--subject", &subject]).env("BERTH_DATA_DIR", &b.data_dir).env("HOME", b.dir());
    let out = support::run(&mut link).assert_success();
    assert!(out.stdout.contains("user bob is now"), "{}", out.stdout);
    let bob = browser_login(&b, &op, "bob", "bob-pw").await;
    assert_eq!(whoami(&b, &bob).await.1["subject"].as_str(), Some(subject.as_str()));

    // Logout ends the session on the store and sends the browser to the provider's logout.
    let r = no_redirects().post(b.url("/auth/logout")).header("cookie", format!("berth_session={session}")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with(&op.endpoint("end_session_endpoint")), "{}", location(&r));
    assert!(r.headers().get("set-cookie").unwrap().to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(whoami(&b, &session).await.0, 401);
    assert_eq!(whoami(&b, &carol).await.0, 200, "other sessions go on");

    // An identity provider that is down: a clear page, no user.
    let r = b
        .admin(reqwest::Method::POST, "/api/v1/identity-providers")
        .json(&json!({"name": "down", "issuer": "http://127.0.0.1:9/realms/x", "login": {"clientId": "berth"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = no_redirects().get(b.url("/auth/oidc/login?idp=down")).send().await.unwrap();
    assert_eq!(r.status(), 502, "{}", r.text().await.unwrap());
    let r = no_redirects().get(b.url("/auth/oidc/login?idp=nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let users: Value = b.admin(reqwest::Method::GET, "/api/v1/users").send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = users.as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "alice", "bob", "carol"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_login_keycloak_shape() {
    browser_flow(Shape::Keycloak).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_login_authentik_shape() {
    browser_flow(Shape::Authentik).await;
}

/// Runs a `berth` CLI command against `b` as the person whose saved login is in `home`.
fn cli_as(b: &Berth, home: &std::path::Path, args: &[&str]) -> CmdOutput {
    let mut cmd = berth_command();
    cmd.args(args).env("BERTH_SERVER", b.url("")).env("HOME", home).env_remove("XDG_CONFIG_HOME").env_remove("XDG_CACHE_HOME");
    support::run(&mut cmd)
}

/// `berth login URL --idp corp` as `user`: the device flow, confirmed at the provider.
fn device_login(b: &Berth, op: &OidcProvider, home: &std::path::Path, user: &str, password: &str) {
    let mut child = berth_command()
        .args(["login", &b.url(""), "--idp", "corp"])
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut url = None;
    let mut seen = String::new();
    while url.is_none() {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "berth login ended without a URL: {seen}");
        seen.push_str(&line);
        url = line.split_whitespace().find(|w| w.starts_with("http")).map(str::to_owned);
    }
    op.approve_device(&url.unwrap(), None, user, password).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "berth login failed: {seen}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("as {user}")), "{stdout}");
}

fn is_denied(text: &str) -> bool {
    let t = text.to_lowercase();
    ["denied", "unauthorized", "forbidden", "authentication required"].iter().any(|m| t.contains(m))
}

#[tokio::test(flavor = "multi_thread")]
async fn device_login_personal_tokens_and_group_removal() {
    let op = OidcProvider::start(Shape::Keycloak);
    let mut b = Berth::start();
    setup(&mut b, &op, json!({"offlineAccess": true, "recheckInterval": "2s"})).await;
    let home = b.path("alice-home");
    std::fs::create_dir_all(&home).unwrap();

    device_login(&b, &op, &home, "alice", "alice-pw");
    let saved = std::fs::read_to_string(home.join(".config/berth/credentials.json")).unwrap();
    assert!(saved.contains("berth_cli_") && !saved.contains("alice-pw"), "{saved}");
    let who = cli_as(&b, &home, &["whoami"]).assert_success();
    assert!(who.stdout.contains("alice (corp, subject") && who.stdout.contains("developer in team-demo (as group:team-demo)"), "{}", who.stdout);

    // A personal access token, used by skopeo as the password.
    let out = cli_as(&b, &home, &["token", "create", "laptop", "--expires", "30d"]).assert_success();
    let pat = out.stdout.trim().to_owned();
    assert!(pat.starts_with("berth_pat_"), "{}", out.stdout);
    assert!(out.stderr.contains("docker login -u alice"), "{}", out.stderr);
    let src = OciImage::write(&b.path("src"), "v1", &[40_000]);
    let push = |creds: &str, to: &str| b.skopeo(&["copy", "--dest-creds", creds, "--dest-tls-verify=false", &src.oci_ref(), &b.docker_ref(to)]);
    let pull = |creds: &str, from: &str, dir: &str| {
        b.skopeo(&["copy", "--src-creds", creds, "--src-tls-verify=false", &b.docker_ref(from), &format!("oci:{}:v1", b.path(dir).display())])
    };
    push(&format!("alice:{pat}"), "team-demo/app:v1").assert_success();
    // Any user name goes with a token; the token decides who it is.
    push(&format!("whoever:{pat}"), "team-demo/app:v2").assert_success();
    let out = push(&format!("alice:{pat}"), "other/app:v1").assert_failure();
    assert!(is_denied(&out.stderr), "{}", out.stderr);

    // A token restricted to pulls in one project.
    let out = cli_as(&b, &home, &["token", "create", "ci-pull", "--project", "team-demo", "--action", "pull"]).assert_success();
    let pull_only = out.stdout.trim().to_owned();
    pull(&format!("alice:{pull_only}"), "team-demo/app:v1", "pulled").assert_success();
    let out = push(&format!("alice:{pull_only}"), "team-demo/app:v3").assert_failure();
    assert!(is_denied(&out.stderr), "{}", out.stderr);
    // As Bearer at the admin API: whoami names the token.
    let r = reqwest::Client::new().get(b.url("/api/v1/whoami")).bearer_auth(&pat).send().await.unwrap();
    let who: Value = r.json().await.unwrap();
    assert_eq!((who["name"].as_str(), who["token"]["name"].as_str()), (Some("alice"), Some("laptop")), "{who}");
    // Administration needs an administrator.
    let r = reqwest::Client::new().get(b.url("/api/v1/projects")).bearer_auth(&pat).send().await.unwrap();
    assert_eq!(r.status(), 403);

    let list = cli_as(&b, &home, &["token", "list"]).assert_success();
    for want in ["personal\tlaptop", "personal\tci-pull", "cli\tberth login"] {
        assert!(list.stdout.contains(want), "{want}: {}", list.stdout);
    }
    let laptop_id = pat.strip_prefix("berth_pat_").unwrap()[..16].to_owned();

    // An administrator asks why: berth token explain shows whose token it is and the roles.
    let mut explain = berth_command();
    explain
        .args(["token", "explain", &pull_only])
        .env("BERTH_SERVER", b.url(""))
        .env("BERTH_USERNAME", "admin")
        .env("BERTH_PASSWORD", b.admin_password())
        .env("HOME", b.dir());
    let out = support::run(&mut explain).assert_success();
    assert!(out.stdout.contains("\"ci-pull\" of alice") && out.stdout.contains("restricted to projects team-demo and actions pull"), "{}", out.stdout);
    assert!(out.stdout.contains("developer in team-demo (as group:team-demo)"), "{}", out.stdout);

    // The credential helper: docker's config file names it, skopeo uses it, no password anywhere.
    let helper_dir = std::path::Path::new(env!("CARGO_BIN_EXE_berth")).parent().unwrap().to_owned();
    assert!(helper_dir.join("docker-credential-berth").is_file(), "build the workspace's binaries first (cargo build --workspace --bins)");
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    std::fs::write(home.join(".docker/config.json"), json!({"credHelpers": {b.host(): "berth"}}).to_string()).unwrap();
    let path = format!("{}:{}", helper_dir.display(), std::env::var("PATH").unwrap_or_default());
    let with_helper = |args: &[&str]| {
        let mut cmd = std::process::Command::new("skopeo");
        cmd.args(args).env("HOME", &home).env("PATH", &path).env_remove("REGISTRY_AUTH_FILE").env_remove("XDG_RUNTIME_DIR");
        support::run(&mut cmd)
    };
    with_helper(&["copy", "--dest-tls-verify=false", &src.oci_ref(), &b.docker_ref("team-demo/helper:v1")]).assert_success();

    // Revoked: the next push with it is refused, on this replica at once.
    cli_as(&b, &home, &["token", "revoke", &laptop_id]).assert_success();
    let out = push(&format!("alice:{pat}"), "team-demo/app:v4").assert_failure();
    assert!(is_denied(&out.stderr), "{}", out.stderr);

    // Removed from the group at the provider: the background re-check (every 2 s here) takes
    // the project away without alice logging in again.
    op.set_groups("alice", &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = pull(&format!("alice:{pull_only}"), "team-demo/app:v1", &format!("after-{}", deadline.saturating_duration_since(Instant::now()).as_millis()));
        if !out.success() {
            assert!(is_denied(&out.stderr), "{}", out.stderr);
            break;
        }
        assert!(Instant::now() < deadline, "alice kept access after leaving the group; server log:\n{}", b.stderr_of(0));
        std::thread::sleep(Duration::from_millis(500));
    }
    let who = cli_as(&b, &home, &["whoami"]).assert_success();
    assert!(who.stdout.contains("no project roles"), "{}", who.stdout);

    // Disabled at the provider: the re-check finds the offline grant refused and revokes every
    // token of alice (her login and her personal access tokens).
    op.set_groups("alice", &["team-demo"]);
    op.disable("alice");
    let deadline = Instant::now() + Duration::from_secs(30);
    while cli_as(&b, &home, &["whoami"]).success() {
        assert!(Instant::now() < deadline, "the login outlived the account");
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = pull(&format!("alice:{pull_only}"), "team-demo/app:v1", "after-disable");
    assert!(!out.success() && is_denied(&out.stderr), "{}", out.stderr);
    // Logging out forgets the login.
    let out = cli_as(&b, &home, &["logout"]).assert_success();
    assert!(out.stdout.contains("logged out"), "{}", out.stdout);
}

/// `berth login --idp corp --browser` (RFC 8252): the CLI listens on 127.0.0.1, the browser logs
/// in at Berth and the provider and comes back to the CLI with a one-time code, which only the
/// CLI (holding the PKCE verifier) can trade. The code is single use; a wrong verifier gets
/// nothing; a redirect that is not loopback is refused.
#[tokio::test(flavor = "multi_thread")]
async fn browser_login_for_the_cli() {
    let op = OidcProvider::start(Shape::Authentik);
    let mut b = Berth::start();
    setup(&mut b, &op, json!({})).await;
    let home = b.path("alice-home");
    std::fs::create_dir_all(&home).unwrap();
    let mut child = berth_command()
        .args(["login", &b.url(""), "--idp", "corp", "--browser"])
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut url = None;
    while url.is_none() {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "berth login ended without a URL");
        url = line.split_whitespace().find(|w| w.starts_with("http")).map(str::to_owned);
    }
    let url = url.unwrap();
    assert!(url.starts_with(&b.url("/auth/oidc/login?")) && url.contains("cli_redirect=http%3A%2F%2F127.0.0.1%3A"), "{url}");
    // The browser: Berth -> the provider -> Berth's callback -> the CLI's loopback.
    let r = no_redirects().get(&url).send().await.unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let back = op.browser_login(&location(&r), "alice", "alice-pw");
    let r = no_redirects().get(&back).send().await.unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let loopback = location(&r);
    assert!(loopback.starts_with("http://127.0.0.1:") && loopback.contains("/callback?code="), "{loopback}");
    assert!(r.headers().get("set-cookie").is_none(), "a CLI login sets no browser session");
    let page = reqwest::get(&loopback).await.unwrap().text().await.unwrap();
    assert!(page.contains("Logged in"), "{page}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("as alice"));
    let who = cli_as(&b, &home, &["whoami"]).assert_success();
    assert!(who.stdout.contains("alice (corp"), "{}", who.stdout);

    // The code was single use (a wrong verifier also burns a code: it is taken before the check).
    let code = query_params(&loopback)["code"].clone();
    let r = reqwest::Client::new().post(b.url("/auth/cli/exchange")).json(&json!({"code": code, "verifier": "x".repeat(43)})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Only loopback redirects.
    let r = no_redirects()
        .get(b.url(&format!("/auth/oidc/login?idp=corp&cli_redirect=http://evil.example:80/cb&cli_challenge={}", "a".repeat(43))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
