//! A real, certified OpenID provider for the tests of human login: panva's `oidc-provider`
//! (npm, 8.x), run by `scripts/oidc/provider.mjs` on 127.0.0.1 over HTTP, one process per
//! [`OidcProvider`]. `scripts/oidc.sh` installs node and the package (`scripts/test.sh` runs it).
//!
//! - [`OidcProvider::start`] with a [`Shape`]: Keycloak's (issuer `<base>/realms/acme`, groups as
//!   paths `/team-demo`) or authentik's (issuer `<base>/application/o/berth/` with its trailing
//!   slash, groups as plain names). Users: alice/alice-pw [team-demo], bob/bob-pw [team-other],
//!   carol/carol-pw [registry-admins], dave/dave-pw (no groups); subjects are opaque ids.
//! - [`OidcProvider::register_client`] registers a confidential client (dynamic registration)
//!   for the authorization code flow (PKCE S256 required), refresh tokens and the device flow.
//! - [`OidcProvider::browser_login`] plays the person at the browser (no JavaScript): it follows
//!   the authorization request Berth redirected to, posts the login form, lets the provider grant
//!   consent, and returns the URL the provider finally redirects to (the client's redirect URI
//!   with `code`, `state` and `iss`) without requesting it. [`OidcProvider::try_browser_login`]
//!   returns the page's text instead when the login is refused. A [`Browser`] keeps its cookies
//!   between calls (single sign-on, logout).
//! - [`OidcProvider::approve_device`] completes the device flow at the verification URI.
//! - [`OidcProvider::set_groups`], [`OidcProvider::disable`], [`OidcProvider::enable`] change a
//!   user through the provider's test endpoints; a disabled user's logins are refused and
//!   refresh-token grants fail with `invalid_grant`.
//!
//! Everything is synchronous (each call runs on its own runtime through [`super::block_on`]), so
//! it works from plain `#[test]`s and from `#[tokio::test(flavor = "multi_thread")]` alike.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use reqwest::Url;
use serde_json::{json, Value};

use super::block_on;

/// How long the provider may take to print its `listening` line.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Redirects and form posts one browser flow may take before it is considered a loop.
const MAX_STEPS: usize = 40;

/// Which real provider the test provider imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Issuer `http://127.0.0.1:<port>/realms/acme`, Keycloak's endpoint paths, `groups` as
    /// full group paths (`/team-demo`), `email_verified` sent.
    Keycloak,
    /// Issuer `http://127.0.0.1:<port>/application/o/berth/` (trailing slash, also in `iss`),
    /// authentik's endpoint paths, `groups` as plain names (`team-demo`).
    Authentik,
}

impl Shape {
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Keycloak => "keycloak",
            Shape::Authentik => "authentik",
        }
    }

    /// The value this shape sends in the `groups` claim for the group `name` (`/name` or `name`).
    pub fn group(self, name: &str) -> String {
        match self {
            Shape::Keycloak => format!("/{name}"),
            Shape::Authentik => name.to_owned(),
        }
    }
}

/// A client registered at the provider (confidential: it has a secret).
#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub secret: String,
    /// The whole registration response (registration_access_token, the metadata as stored...).
    pub registration: Value,
}

/// The folder of `provider.mjs`, `package.json` and `node_modules`.
pub fn provider_dir() -> PathBuf {
    super::repo_root().join("scripts/oidc")
}

/// A running `node scripts/oidc/provider.mjs`; dropping it stops the process.
pub struct OidcProvider {
    child: Child,
    /// Kept open: the provider exits when it closes (`--exit-with-stdin`), so it dies with the
    /// test process even when that is killed.
    _stdin: Option<ChildStdin>,
    shape: Shape,
    issuer: String,
    base: String,
    log: Arc<Mutex<String>>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider").field("shape", &self.shape).field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl OidcProvider {
    /// Starts a provider of `shape` on a free port of 127.0.0.1 and waits until it serves.
    pub fn start(shape: Shape) -> OidcProvider {
        let dir = provider_dir();
        let script = dir.join("provider.mjs");
        assert!(script.is_file(), "{} is missing", script.display());
        assert!(
            dir.join("node_modules/oidc-provider/package.json").is_file(),
            "{} has no node_modules/oidc-provider: run scripts/oidc.sh (scripts/test.sh does) to install node and the OpenID provider",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(&script)
            .args(["--port", "0", "--shape", shape.as_str(), "--exit-with-stdin"])
            .current_dir(&dir)
            .env_remove("NODE_OPTIONS")
            .env_remove("DEBUG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `node` for the OpenID test provider ({e}): run scripts/oidc.sh (scripts/test.sh does) to install nodejs")
            });
        let stdin = child.stdin.take();
        let log = Arc::new(Mutex::new(String::new()));
        {
            let log = log.clone();
            let stderr = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let (tx, rx) = mpsc::channel::<String>();
        {
            let stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    // once nobody listens, keep draining so that the provider never blocks
                    let _ = tx.send(line);
                }
            });
        }
        let issuer = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => match line.strip_prefix("listening ") {
                Some(issuer) => issuer.trim().to_owned(),
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the OpenID test provider printed {line:?} instead of `listening <issuer>`; its log:\n{}", log.lock().unwrap());
                }
            },
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                std::thread::sleep(Duration::from_millis(100)); // let the log thread catch up
                panic!(
                    "the OpenID test provider did not start ({e}; exit: {status:?}). Is it installed? run scripts/oidc.sh. Its log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        let url = Url::parse(&issuer).unwrap();
        let base = format!("http://{}:{}", url.host_str().unwrap(), url.port().unwrap());
        OidcProvider { child, _stdin: stdin, shape, issuer, base, log }
    }

    /// The issuer, exactly as the provider writes it in `iss` (the authentik shape's ends in `/`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The discovery document's URL (issuer + `/.well-known/openid-configuration`).
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'))
    }

    /// The discovery document.
    pub fn discovery(&self) -> Value {
        let url = self.discovery_url();
        block_on(async move {
            let r = http().get(&url).send().await.unwrap();
            assert!(r.status().is_success(), "GET {url}: {}", r.status());
            r.json::<Value>().await.unwrap()
        })
    }

    /// One endpoint from discovery, e.g. `token_endpoint`.
    pub fn endpoint(&self, name: &str) -> String {
        self.discovery()[name].as_str().unwrap_or_else(|| panic!("discovery has no {name}")).to_owned()
    }

    /// Everything the provider wrote on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Registers a confidential client (`client_secret_basic`) with exactly these redirect URIs,
    /// for the grant types authorization_code, refresh_token and device_code. Its
    /// post_logout_redirect_uris are each redirect URI's origin + `/`.
    pub fn register_client(&self, redirect_uris: &[String]) -> Client {
        let post_logout: Vec<String> = redirect_uris
            .iter()
            .map(|u| {
                let u = Url::parse(u).unwrap();
                format!("{}/", u.origin().ascii_serialization())
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        self.register_client_with(json!({
            "redirect_uris": redirect_uris,
            "post_logout_redirect_uris": post_logout,
            "client_name": "berth-test",
            "token_endpoint_auth_method": "client_secret_basic",
        }))
    }

    /// Registers a client with `metadata` (RFC 7591); `grant_types` and `response_types` default
    /// to the code flow + refresh_token + device_code. E.g.
    /// `{"redirect_uris": [..], "token_endpoint_auth_method": "client_secret_post"}`.
    pub fn register_client_with(&self, metadata: Value) -> Client {
        let mut metadata = metadata;
        let m = metadata.as_object_mut().expect("client metadata: a JSON object");
        m.entry("grant_types").or_insert(json!([
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code"
        ]));
        m.entry("response_types").or_insert(json!(["code"]));
        let url = self.endpoint("registration_endpoint");
        let body = block_on(async move {
            let r = http().post(&url).json(&metadata).send().await.unwrap();
            let status = r.status();
            let text = r.text().await.unwrap();
            assert!(status.is_success(), "client registration at {url} refused ({status}): {text}\nmetadata: {metadata}");
            serde_json::from_str::<Value>(&text).unwrap()
        });
        Client {
            id: body["client_id"].as_str().unwrap().to_owned(),
            secret: body["client_secret"].as_str().unwrap_or_default().to_owned(),
            registration: body,
        }
    }

    /// A fresh browser (empty cookie jar) for this provider.
    pub fn browser(&self) -> Browser {
        Browser { base: self.base.clone(), jar: Jar::default() }
    }

    /// Logs `username` in at `authorize_url` in a fresh browser and returns the URL the provider
    /// redirects to at the end (the client's redirect URI with `code`, `state`, `iss`, or with
    /// `error`), without requesting it. Panics with the page's text if the login is refused.
    pub fn browser_login(&self, authorize_url: &str, username: &str, password: &str) -> String {
        self.try_browser_login(authorize_url, username, password)
            .unwrap_or_else(|page| panic!("the login of {username} at the provider was refused: {page}\nprovider log:\n{}", self.log()))
    }

    /// As [`OidcProvider::browser_login`], but a refused login (wrong password, disabled user,
    /// an error page of the provider) is `Err` with the text of the page the provider showed.
    pub fn try_browser_login(&self, authorize_url: &str, username: &str, password: &str) -> Result<String, String> {
        self.browser().login(authorize_url, username, password)
    }

    /// Completes the device flow as the person would: opens `verification_uri` (the complete
    /// one when `user_code` is `None`), enters the code, confirms, logs in. `Ok` when the
    /// provider shows its success page; `Err` with the page's text otherwise.
    pub fn approve_device(&self, verification_uri: &str, user_code: Option<&str>, username: &str, password: &str) -> Result<(), String> {
        self.browser().approve_device(verification_uri, user_code, username, password)
    }

    /// Sets the user's groups (plain names: the keycloak shape sends them as `/name`); they are
    /// in the next ID token (a refresh or a login).
    pub fn set_groups(&self, user: &str, groups: &[&str]) {
        self.control(&format!("/test/users/{user}"), Some(json!({ "groups": groups })));
    }

    /// Disables the user: logins are refused, refresh-token grants fail with `invalid_grant`.
    pub fn disable(&self, user: &str) {
        self.control(&format!("/test/users/{user}/disable"), None);
    }

    pub fn enable(&self, user: &str) {
        self.control(&format!("/test/users/{user}/enable"), None);
    }

    /// The user as the provider holds it (`sub`, `groups`, `disabled`, `claims`...).
    pub fn user(&self, user: &str) -> Value {
        let url = format!("{}/test/users/{user}", self.base);
        block_on(async move {
            let r = http().get(&url).send().await.unwrap();
            assert!(r.status().is_success(), "GET {url}: {}", r.status());
            r.json::<Value>().await.unwrap()
        })
    }

    fn control(&self, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        block_on(async move {
            let mut req = http().post(&url);
            if let Some(body) = body {
                req = req.json(&body);
            }
            let r = req.send().await.unwrap();
            let status = r.status();
            let text = r.text().await.unwrap();
            assert!(status.is_success(), "POST {url}: {status}: {text}");
            serde_json::from_str(&text).unwrap()
        })
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- OpenID test provider ({}, {}) log:\n{}", self.shape.as_str(), self.issuer, self.log());
        }
    }
}

/// A reqwest client that follows no redirect and uses no proxy.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

// ------------------------------------------------------------------------------------------
// The browser

/// Cookies by host and port (the provider and Berth both live on 127.0.0.1), then name; paths
/// and expiry times are ignored, and a cookie set empty or expired in 1970 (as koa clears them)
/// is removed.
#[derive(Debug, Clone, Default)]
struct Jar(BTreeMap<String, BTreeMap<String, String>>);

impl Jar {
    fn key(url: &Url) -> Option<String> {
        Some(format!("{}:{}", url.host_str()?, url.port_or_known_default()?))
    }

    fn header(&self, url: &Url) -> Option<String> {
        let cookies = self.0.get(&Self::key(url)?)?;
        (!cookies.is_empty()).then(|| cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
    }

    fn store(&mut self, url: &Url, headers: &reqwest::header::HeaderMap) {
        let Some(host) = Self::key(url) else { return };
        for h in headers.get_all(reqwest::header::SET_COOKIE) {
            let Ok(h) = h.to_str() else { continue };
            let mut parts = h.split(';');
            let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else { continue };
            let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
            let cleared = value.is_empty()
                || parts.any(|a| {
                    let a = a.trim().to_ascii_lowercase();
                    a == "max-age=0" || a.starts_with("max-age=-") || (a.starts_with("expires=") && a.contains("1970"))
                });
            let cookies = self.0.entry(host.clone()).or_default();
            if cleared {
                cookies.remove(&name);
            } else {
                cookies.insert(name, value);
            }
        }
    }
}

/// A person's browser at the provider, without JavaScript: it follows redirects, keeps cookies
/// (so a second login at the same provider is single sign-on) and posts the provider's forms.
#[derive(Debug, Clone)]
pub struct Browser {
    base: String,
    jar: Jar,
}

/// Where a walk through the provider's pages ended.
#[derive(Debug)]
enum End {
    /// A redirect away from the provider (to the client): its URL, not requested.
    Left(String),
    /// The page that the goal looked for (device success, logout success): its text.
    Done(String),
    /// Any other end: the text of the page the provider showed, with its status.
    Refused(String),
}

/// What a walk is for, and what it may fill in.
#[derive(Debug, Clone, Default)]
struct Goal {
    credentials: Option<(String, String)>,
    user_code: Option<String>,
    /// Press "Cancel" on the login form.
    abort_login: bool,
    /// Press "Yes, sign me out" on the logout form.
    logout: bool,
    /// The id of the element whose page means success.
    done_marker: Option<&'static str>,
}

impl Browser {
    /// Opens `authorize_url`, logs in with the password if the provider asks (a browser with a
    /// session at the provider is not asked), and returns the URL of the redirect back to the
    /// client; `Err` with the page's text when the login is refused or the provider shows an
    /// error page.
    pub fn login(&mut self, authorize_url: &str, username: &str, password: &str) -> Result<String, String> {
        let goal = Goal { credentials: Some((username.to_owned(), password.to_owned())), ..Goal::default() };
        match self.walk(authorize_url, goal) {
            End::Left(url) => Ok(url),
            End::Done(text) | End::Refused(text) => Err(text),
        }
    }

    /// Opens `authorize_url` with the session this browser has (single sign-on): the redirect
    /// back to the client, or `Err` with the page's text (e.g. the login form: no session).
    pub fn authorize(&mut self, authorize_url: &str) -> Result<String, String> {
        match self.walk(authorize_url, Goal::default()) {
            End::Left(url) => Ok(url),
            End::Done(text) | End::Refused(text) => Err(text),
        }
    }

    /// Opens `authorize_url` and presses "Cancel" at the login form: the redirect back to the
    /// client (with `error=access_denied`).
    pub fn cancel_login(&mut self, authorize_url: &str) -> Result<String, String> {
        match self.walk(authorize_url, Goal { abort_login: true, ..Goal::default() }) {
            End::Left(url) => Ok(url),
            End::Done(text) | End::Refused(text) => Err(text),
        }
    }

    /// Opens an RP-initiated logout URL (the end_session_endpoint with its parameters), confirms
    /// the logout, and returns the redirect to the client's post_logout_redirect_uri
    /// (`Ok(Some(url))`) or `Ok(None)` when the provider shows its own "signed out" page.
    pub fn logout(&mut self, end_session_url: &str) -> Result<Option<String>, String> {
        match self.walk(end_session_url, Goal { logout: true, done_marker: Some("logout-success"), ..Goal::default() }) {
            End::Left(url) => Ok(Some(url)),
            End::Done(_) => Ok(None),
            End::Refused(text) => Err(text),
        }
    }

    /// See [`OidcProvider::approve_device`].
    pub fn approve_device(&mut self, verification_uri: &str, user_code: Option<&str>, username: &str, password: &str) -> Result<(), String> {
        let goal = Goal {
            credentials: Some((username.to_owned(), password.to_owned())),
            user_code: user_code.map(str::to_owned),
            done_marker: Some("device-success"),
            ..Goal::default()
        };
        match self.walk(verification_uri, goal) {
            End::Done(_) => Ok(()),
            End::Left(url) => Err(format!("the provider redirected away to {url} instead of showing its success page")),
            End::Refused(text) => Err(text),
        }
    }

    fn walk(&mut self, start: &str, goal: Goal) -> End {
        let jar = std::mem::take(&mut self.jar);
        let base = Url::parse(&self.base).unwrap();
        let start = Url::parse(start).unwrap_or_else(|e| panic!("bad URL {start:?}: {e}"));
        let (jar, end) = block_on(async move {
            let mut w = Walk { http: http(), jar, base, goal, posted_login: false, posted_code: false };
            let end = w.run(start).await;
            (w.jar, end)
        });
        self.jar = jar;
        end
    }
}

struct Walk {
    http: reqwest::Client,
    jar: Jar,
    base: Url,
    goal: Goal,
    posted_login: bool,
    posted_code: bool,
}

/// The next request of a walk: a GET, or a POST of these form fields.
type Step = (Url, Option<Vec<(String, String)>>);

/// A response: its status, the URL it came from, the redirect target, the body.
struct Resp {
    status: u16,
    url: Url,
    location: Option<Url>,
    body: String,
}

impl Walk {
    async fn send(&mut self, url: Url, form: Option<Vec<(String, String)>>) -> Resp {
        let mut req = match &form {
            Some(fields) => self.http.post(url.clone()).form(fields),
            None => self.http.get(url.clone()),
        };
        if let Some(cookie) = self.jar.header(&url) {
            req = req.header(reqwest::header::COOKIE, cookie);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{} {url}: {e}", if form.is_some() { "POST" } else { "GET" }));
        self.jar.store(&url, r.headers());
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(|l| url.join(l).unwrap_or_else(|e| panic!("bad Location {l:?} from {url}: {e}")));
        let body = r.text().await.unwrap_or_default();
        Resp { status, url, location, body }
    }

    fn is_provider(&self, url: &Url) -> bool {
        url.origin() == self.base.origin()
    }

    async fn run(&mut self, start: Url) -> End {
        let mut next: Step = (start, None);
        for _ in 0..MAX_STEPS {
            let (url, form) = next;
            if !self.is_provider(&url) {
                return End::Left(url.to_string());
            }
            let resp = self.send(url, form).await;
            if (300..400).contains(&resp.status) {
                let Some(target) = resp.location else {
                    return End::Refused(format!("{} from {} without a Location", resp.status, resp.url));
                };
                next = (target, None);
                continue;
            }
            match self.react(&resp) {
                Ok(n) => next = n,
                Err(end) => return end,
            }
        }
        End::Refused(format!("more than {MAX_STEPS} steps at the provider: a redirect loop?"))
    }

    /// What the person does on a page: the next request, or the end of the walk.
    fn react(&mut self, resp: &Resp) -> Result<Step, End> {
        let body = &resp.body;
        let text = || format!("{} at {}: {}", resp.status, resp.url, page_text(body));
        if let Some(marker) = self.goal.done_marker {
            if has_id(body, marker) {
                return Err(End::Done(page_text(body)));
            }
        }
        let forms = parse_forms(body);
        let submit = |form: &Form, extra: &[(&str, &str)]| -> Step {
            let action = resp.url.join(&form.action).unwrap_or_else(|_| resp.url.clone());
            let mut fields: Vec<(String, String)> =
                form.inputs.iter().filter(|(k, _)| !extra.iter().any(|(e, _)| e == k)).cloned().collect();
            fields.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
            (action, Some(fields))
        };
        let by_id = |id: &str| forms.iter().find(|f| f.id.as_deref() == Some(id));

        if let Some(login) = by_id("login") {
            if self.goal.abort_login {
                if let Some(abort) = by_id("abort") {
                    return Ok(submit(abort, &[]));
                }
            }
            // the login form shown again after the credentials were posted: refused
            if self.posted_login {
                return Err(End::Refused(text()));
            }
            let Some((user, password)) = self.goal.credentials.clone() else {
                return Err(End::Refused(text()));
            };
            self.posted_login = true;
            return Ok(submit(login, &[("username", &user), ("password", &password)]));
        }
        if let Some(input) = by_id("op.deviceInputForm") {
            let Some(code) = self.goal.user_code.clone() else {
                return Err(End::Refused(format!("the provider asks for the user code, none given: {}", text())));
            };
            if self.posted_code {
                return Err(End::Refused(text()));
            }
            self.posted_code = true;
            return Ok(submit(input, &[("user_code", &code)]));
        }
        if let Some(confirm) = by_id("op.deviceConfirmForm") {
            return Ok(submit(confirm, &[]));
        }
        if let Some(logout) = by_id("op.logoutForm") {
            if self.goal.logout {
                return Ok(submit(logout, &[("logout", "yes")]));
            }
            return Err(End::Refused(text()));
        }
        // a form that a browser submits by script as soon as it loads (oidc-provider's
        // "Submitting Callback" page, e.g. the device flow's verification_uri_complete)
        if body.contains("document.forms[0].submit()") {
            if let Some(form) = forms.first() {
                if form.method.eq_ignore_ascii_case("post") {
                    let (action, fields) = submit(form, &[]);
                    if !self.is_provider(&action) {
                        return Err(End::Refused(format!(
                            "the provider posts the response to {action} (response_mode=form_post), which this browser does not follow: {fields:?}"
                        )));
                    }
                    return Ok((action, fields));
                }
            }
        }
        Err(End::Refused(text()))
    }
}

// ------------------------------------------------------------------------------------------
// Just enough HTML

#[derive(Debug)]
struct Form {
    id: Option<String>,
    action: String,
    method: String,
    /// Named inputs with their values (hidden ones and prefilled text), in order.
    inputs: Vec<(String, String)>,
}

/// Whether an element has `id="<id>"`.
fn has_id(html: &str, id: &str) -> bool {
    html.contains(&format!("id=\"{id}\"")) || html.contains(&format!("id='{id}'"))
}

/// Every `<form>` with its `<input>`s (not `<button>`s: the caller adds what a button sends).
fn parse_forms(html: &str) -> Vec<Form> {
    let lower = html.to_ascii_lowercase();
    let mut forms = Vec::new();
    let mut at = 0;
    while let Some(start) = lower[at..].find("<form").map(|i| i + at) {
        let (attrs, after) = tag_attributes(html, start + "<form".len());
        let end = lower[after..].find("</form").map_or(html.len(), |i| i + after);
        let mut inputs = Vec::new();
        let mut i = after;
        while let Some(s) = lower[i..end].find("<input").map(|k| k + i) {
            let (a, next) = tag_attributes(html, s + "<input".len());
            if let Some(name) = a.get("name") {
                inputs.push((name.clone(), a.get("value").cloned().unwrap_or_default()));
            }
            i = next.min(end);
        }
        forms.push(Form {
            id: attrs.get("id").cloned(),
            action: attrs.get("action").cloned().unwrap_or_default(),
            method: attrs.get("method").cloned().unwrap_or_else(|| "get".into()),
            inputs,
        });
        at = end.max(after);
    }
    forms
}

/// The attributes of the tag whose name ends at `from` (lowercase names, unescaped values) and
/// the index just past its `>`.
fn tag_attributes(html: &str, from: usize) -> (BTreeMap<String, String>, usize) {
    let b = html.as_bytes();
    let mut attrs = BTreeMap::new();
    let mut i = from;
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        if i >= b.len() {
            return (attrs, i);
        }
        if b[i] == b'>' {
            return (attrs, i + 1);
        }
        let name_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'>' | b'/') {
            i += 1;
        }
        let name = html[name_start..i].to_ascii_lowercase();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let q = b[i];
                let s = i + 1;
                i = s;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                value = unescape(&html[s..i.min(b.len())]);
                i += 1;
            } else {
                let s = i;
                while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                    i += 1;
                }
                value = unescape(&html[s..i]);
            }
        }
        if !name.is_empty() {
            attrs.entry(name).or_insert(value);
        }
    }
}

/// Decodes the character references the providers write.
fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';').filter(|&e| e <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ if entity.starts_with("#x") || entity.starts_with("#X") => u32::from_str_radix(&entity[2..], 16).ok().and_then(char::from_u32),
            _ if entity.starts_with('#') => entity[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The visible text of a page: tags, styles and scripts removed, whitespace collapsed.
pub fn page_text(html: &str) -> String {
    let mut out = String::new();
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    while i < html.len() {
        if lower[i..].starts_with("<style") || lower[i..].starts_with("<script") {
            let close = if lower[i..].starts_with("<style") { "</style>" } else { "</script>" };
            i = lower[i..].find(close).map_or(html.len(), |k| i + k + close.len());
            continue;
        }
        if html.as_bytes()[i] == b'<' {
            i = html[i..].find('>').map_or(html.len(), |k| i + k + 1);
            out.push(' ');
            continue;
        }
        let next = html[i..].find('<').map_or(html.len(), |k| i + k);
        out.push_str(&html[i..next]);
        i = next;
    }
    unescape(&out).split_whitespace().collect::<Vec<_>>().join(" ")
}

// ------------------------------------------------------------------------------------------
// Small helpers for the client side of a test

/// A PKCE pair `(verifier, S256 challenge)`, fresh each call.
pub fn pkce() -> (String, String) {
    use base64::Engine as _;
    use sha2::Digest as _;
    let verifier = random_token();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// 64 hex digits that differ on every call (for state, nonce, PKCE verifiers).
pub fn random_token() -> String {
    use sha2::Digest as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{:?}/{}/{}/{:?}",
        std::time::SystemTime::now(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::thread::current().id()
    );
    hex::encode(sha2::Sha256::digest(seed.as_bytes()))
}

/// The payload of a JWT, decoded without checking anything (tests look at the claims).
pub fn jwt_claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).unwrap_or_else(|| panic!("not a JWT: {jwt:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .unwrap_or_else(|e| panic!("JWT payload is not base64url ({e}): {jwt:?}"));
    serde_json::from_slice(&bytes).unwrap()
}

/// The query parameters of a URL.
pub fn query_params(url: &str) -> BTreeMap<String, String> {
    Url::parse(url).unwrap().query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}
