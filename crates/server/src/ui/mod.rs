//! The web UI: server-rendered pages (maud: every interpolated value is escaped) served by the
//! same binary at `/`, one more translation layer over the core's commands, with the same
//! access decisions as the admin API (a page shows and allows what the signed-in person may do;
//! every form is checked again on the server).
//!
//! - Sign-in: a local user's form (`POST /login`), and one button per login identity provider
//!   (`/auth/oidc/login?idp=...`); both end with the session cookie `berth_session` (a `web`
//!   token in the store, so any replica accepts it). Sign-out is `POST /auth/logout`.
//! - CSRF: every form carries a token. Signed in, it is derived from the session's secret
//!   (SHA-256 of a fixed label and the cookie's value: a page of another site can neither read
//!   the cookie nor compute it); the sign-in form uses a double-submit cookie `berth_csrf`.
//!   Cookies are SameSite=Lax on top.
//! - Every page answers with a strict Content-Security-Policy (no inline scripts or styles, only
//!   this server's own `/static/` files), `X-Frame-Options: DENY`, no-store caching and
//!   `Referrer-Policy: same-origin`. No secret is ever put in a URL.
//! - Authentication comes from the cookie alone, before any form body is read; form bodies are
//!   capped at [`FORM_LIMIT`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, FromRequestParts, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use berth_core::admin::types::TokenCreate;
use berth_core::auth::Principal;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use crate::people::{cookie_value, session_cookie, SESSION_COOKIE};
use crate::AppState;

/// The largest form body a page accepts.
pub const FORM_LIMIT: usize = 16 << 10;
/// The cookie of the sign-in form's CSRF token (before there is a session).
const CSRF_COOKIE: &str = "berth_csrf";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn client_of(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// The CSRF token of a session: derived from its secret cookie value.
pub fn csrf_for(session: &str) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(format!("berth-ui-csrf\0{session}").as_bytes());
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The signed-in person of a page request (from the session cookie only).
pub struct Viewer {
    pub principal: Arc<Principal>,
    pub csrf: String,
    /// `host[:port]` as clients reach this registry (the external URL, else the Host header),
    /// for the commands the pages show.
    pub host: String,
    /// The URL clients reach this registry at.
    pub base: String,
}

/// A page for signed-in people: without a valid session, a redirect to the sign-in page that
/// comes back here.
pub struct SignedIn(pub Viewer);

impl FromRequestParts<Arc<AppState>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let back = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
        let to_login = || Redirect::to(&format!("/login?{}", serde_urlencoded::to_string([("return_to", back.as_str())]).unwrap_or_default())).into_response();
        let Some(cookie) = session_cookie(&parts.headers) else { return Err(to_login()) };
        match berth_core::auth::token_login(&state.core, &cookie, client_of(parts), true).await {
            Ok(principal) => {
                let base = crate::auth::base_url(state, &parts.headers);
                let host = base.split_once("://").map(|(_, h)| h.to_owned()).unwrap_or_else(|| base.clone());
                Ok(SignedIn(Viewer { principal, csrf: csrf_for(&cookie), host, base }))
            }
            Err(berth_core::auth::LoginError::Internal(e)) => Err(error_page(&e)),
            Err(_) => Err(to_login()),
        }
    }
}

/// Adds the security headers every page carries.
fn secured(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A whole page: the shell (navigation for the signed-in, the title) around `body`.
pub fn page(status: StatusCode, title: &str, viewer: Option<&Viewer>, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Berth" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/static/berth.css";
                script src="/static/berth.js" defer {}
            }
            body {
                header {
                    nav aria-label="Main" {
                        a.brand href="/" { "Berth" }
                        @if let Some(v) = viewer {
                            a href="/" { "Projects" }
                            a href="/account" { "My account" }
                            @if v.principal.permissions.admin {
                                a href="/identity-providers" { "Identity providers" }
                                a href="/tester" { "Token tester" }
                                a href="/audit" { "Audit log" }
                                a href="/system" { "System" }
                            }
                            form.inline method="post" action="/auth/logout" {
                                span.who { (v.principal.subject) }
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    secured((status, axum::response::Html(markup.into_string())).into_response())
}

fn error_page(e: &berth_core::Error) -> Response {
    let status = crate::error::status_of(e);
    page(status, "Something went wrong", None, html! { p.error role="alert" { (e.to_string()) } p { a href="/" { "Back to Berth" } } })
}

fn denied(viewer: &Viewer, message: &str) -> Response {
    page(StatusCode::FORBIDDEN, "Not allowed", Some(viewer), html! { p.error role="alert" { (message) } })
}

// ---------------------------------------------------------------- sign-in

#[derive(Deserialize)]
struct LoginQuery {
    return_to: Option<String>,
    error: Option<String>,
}

fn random_csrf() -> String {
    berth_identity::federation::login::random_text(16)
}


fn secure_flag(state: &AppState) -> &'static str {
    if state.config.tls || state.config.external_url.as_deref().is_some_and(|u| u.starts_with("https://")) {
        "; Secure"
    } else {
        ""
    }
}

/// `GET /login`: the local form and one button per login identity provider.
async fn login_page(State(s): State<Arc<AppState>>, headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    let return_to = berth_core::people::safe_return_path(q.return_to.as_deref());
    let csrf = cookie_value(&headers, CSRF_COOKIE).filter(|c| c.len() >= 16 && c.len() <= 64).unwrap_or_else(random_csrf);
    let providers = s.core.federation().login_providers().await.unwrap_or_default();
    let body = html! {
        @if let Some(e) = &q.error {
            p.error role="alert" { (crate::text::cap(e, 300)) }
        }
        @if !providers.is_empty() {
            section aria-labelledby="sso" {
                h2 #sso { "With your organisation" }
                ul.buttons {
                    @for (name, label) in &providers {
                        li { a.button href=(format!("/auth/oidc/login?{}", serde_urlencoded::to_string([("idp", name.as_str()), ("return_to", return_to.as_str())]).unwrap_or_default())) { "Log in with " (label) } }
                    }
                }
            }
        }
        section aria-labelledby="local" {
            h2 #local { "With a Berth user" }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="return_to" value=(return_to);
                label for="username" { "User name" }
                input #username name="username" type="text" autocomplete="username" required;
                label for="password" { "Password" }
                input #password name="password" type="password" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
        }
    };
    let mut resp = page(StatusCode::OK, "Sign in", None, body);
    if let Ok(v) = HeaderValue::from_str(&format!("{CSRF_COOKIE}={csrf}; Path=/login; HttpOnly; SameSite=Strict{}", secure_flag(&s))) {
        resp.headers_mut().append(http::header::SET_COOKIE, v);
    }
    resp
}

#[derive(Deserialize)]
struct LoginForm {
    csrf: String,
    username: String,
    password: String,
    return_to: Option<String>,
}

/// `POST /login`: a local user signs in with a password.
async fn login_submit(State(s): State<Arc<AppState>>, connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    let client = connect.map(|c| c.0 .0.ip());
    let return_to = berth_core::people::safe_return_path(f.return_to.as_deref());
    let expected = cookie_value(&headers, CSRF_COOKIE);
    if !expected.is_some_and(|e| berth_identity::secret_eq(e.as_bytes(), f.csrf.as_bytes())) {
        return page(StatusCode::FORBIDDEN, "Sign in", None, html! { p.error role="alert" { "The form expired or came from another site; " a href="/login" { "sign in again" } "." } });
    }
    let retry = |message: &str| {
        Redirect::to(&format!("/login?{}", serde_urlencoded::to_string([("return_to", return_to.as_str()), ("error", message)]).unwrap_or_default())).into_response()
    };
    let principal = match berth_core::auth::login(&s.core, &f.username, &f.password, client).await {
        Ok(p) if p.kind == berth_identity::PrincipalKind::User => p,
        Ok(_) => return retry("robots do not sign in to the web UI"),
        Err(e) => {
            berth_core::auth::audit_login_failure(&s.core, Some(&f.username), &e, client);
            return retry(&e.message());
        }
    };
    match s.core.open_web_session(&principal.subject, client).await {
        Ok(session) => {
            let max_age = (session.expires_at - berth_core::clock::now_secs()).max(0);
            let mut resp = Redirect::to(&return_to).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{}", session.cookie, secure_flag(&s))) {
                resp.headers_mut().append(http::header::SET_COOKIE, v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("{CSRF_COOKIE}=; Path=/login; Max-Age=0{}", secure_flag(&s))) {
                resp.headers_mut().append(http::header::SET_COOKIE, v);
            }
            resp
        }
        Err(e) => error_page(&e),
    }
}

// ---------------------------------------------------------------- projects

#[derive(Deserialize, Default)]
struct ProjectsQuery {
    q: Option<String>,
    after: Option<String>,
}

/// `GET /`: the projects the person may see (filtered by name on the server, 100 a page);
/// administrators create projects here.
async fn projects(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Query(pq): Query<ProjectsQuery>) -> Response {
    projects_page(&s, &v, pq, None).await
}

async fn projects_page(s: &AppState, v: &Viewer, pq: ProjectsQuery, notice: Option<String>) -> Response {
    let all = match s.core.visible_projects(&v.principal).await {
        Ok(l) => l,
        Err(e) => return error_page(&e),
    };
    let needle = pq.q.clone().unwrap_or_default().trim().to_lowercase();
    let mut list: Vec<_> = all
        .into_iter()
        .filter(|p| needle.is_empty() || p.name.contains(&needle))
        .filter(|p| pq.after.as_deref().is_none_or(|a| p.name.as_str() > a))
        .collect();
    let more = list.len() > 100;
    list.truncate(100);
    let body = html! {
        @if let Some(n) = &notice { p.notice role="status" { (n) } }
        form.filters method="get" action="/" role="search" {
            label for="project-search" { "Find a project" }
            input #project-search name="q" type="search" value=(pq.q.clone().unwrap_or_default());
            button type="submit" { "Search" }
        }
        @if list.is_empty() {
            p { "You see no projects yet: an administrator or a project admin adds you (or one of your groups) as a member." }
        } @else {
            table {
                caption { "Projects you can see" }
                thead { tr { th scope="col" { "Project" } th scope="col" { "Visibility" } th scope="col" { "Your role" } } }
                tbody {
                    @for p in &list {
                        tr {
                            td { a href=(format!("/projects/{}", p.name)) { (p.name) } }
                            td { @if p.public { "public" } @else { "private" } }
                            td { @match p.role { Some(r) => (r.as_str()), None => @if v.principal.permissions.admin { "administrator" } @else { "visitor" } } }
                        }
                    }
                }
            }
            @if more { @if let Some(last) = list.last() { a href=(format!("/?{}", q(&[("q", pq.q.as_deref().unwrap_or("")), ("after", last.name.as_str())]))) { "More projects" } } }
        }
        @if v.principal.permissions.admin {
            h2 { "New project" }
            form #new-project method="post" action="/projects" {
                input type="hidden" name="csrf" value=(v.csrf);
                label for="project-name" { "Name" }
                input #project-name name="name" type="text" required maxlength="64" pattern="[a-z0-9][a-z0-9._-]*";
                label { input name="public" type="checkbox" value="true"; " Public (everyone may pull)" }
                button type="submit" { "Create project" }
            }
        }
    };
    page(StatusCode::OK, "Projects", Some(v), body)
}

#[derive(Deserialize)]
struct NewProject {
    csrf: String,
    name: String,
    public: Option<String>,
}

/// `POST /projects` (administrators).
async fn create_project(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Form(f): Form<NewProject>) -> Response {
    if let Err(r) = admin_only(&v) {
        return r;
    }
    if !csrf_ok(&v, &f.csrf) {
        return denied(&v, "The form expired or came from another site; reload the page and try again.");
    }
    let spec = berth_core::admin::types::ProjectSpec { name: f.name.trim().to_owned(), public: f.public.is_some() };
    let notice = match s.core.create_project(&spec).await {
        Ok(p) => format!("Project {} created.", p.name),
        Err(e) => e.to_string(),
    };
    projects_page(&s, &v, ProjectsQuery::default(), Some(notice)).await
}

#[derive(Deserialize)]
struct ProjectSettings {
    csrf: String,
    public: Option<String>,
}

/// `POST /projects/{name}/settings`: visibility (project admins).
async fn project_settings(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Path(name): Path<String>, Form(f): Form<ProjectSettings>) -> Response {
    if !csrf_ok(&v, &f.csrf) {
        return denied(&v, "The form expired or came from another site; reload the page and try again.");
    }
    if let Err(e) = s.core.require_in_project(&v.principal, &name, berth_access::Capability::EditProject).await {
        return denied(&v, &e.to_string());
    }
    let spec = berth_core::admin::types::ProjectSpec { name: name.clone(), public: f.public.is_some() };
    match s.core.put_project(&name, &spec).await {
        Ok(p) => project_page(&s, &v, &name, None, Some(format!("{name} is now {}.", if p.public { "public" } else { "private" }))).await,
        Err(e) => error_page(&e),
    }
}

/// `GET /projects/{name}/delete`: what deleting the project takes with it, to confirm
/// (administrators).
async fn delete_project_page(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Path(name): Path<String>) -> Response {
    if let Err(r) = admin_only(&v) {
        return r;
    }
    let members = s.core.list_members(&name).await.map(|m| m.len()).unwrap_or(0);
    let robots = s.core.list_robots(&berth_core::admin::RobotFilter { project: Some(name.clone()) }).await.map(|r| r.len()).unwrap_or(0);
    let (repos, more) = s.core.project_repositories(&v.principal, &name, 1000, None).await.unwrap_or_default();
    let body = html! {
        p { "Deleting project " strong { (name) } " removes its " (members) " members. Its " (repos.len()) @if more { "+" } " repositories stay, no longer in a project (delete or garbage-collect them separately)." }
        @if robots > 0 { p.error { "It still has " (robots) " robots: delete them first." } }
        form method="post" action=(format!("/projects/{name}/delete")) {
            input type="hidden" name="csrf" value=(v.csrf);
            button type="submit" { "Delete project " (name) }
        }
        p { a href=(format!("/projects/{name}")) { "Keep it" } }
    };
    page(StatusCode::OK, &format!("Delete project {name}?"), Some(&v), body)
}

/// `POST /projects/{name}/delete` (administrators, after the confirmation page).
async fn delete_project(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Path(name): Path<String>, Form(f): Form<CsrfForm>) -> Response {
    if let Err(r) = admin_only(&v) {
        return r;
    }
    if !csrf_ok(&v, &f.csrf) {
        return denied(&v, "The form expired or came from another site; reload the page and try again.");
    }
    let notice = match s.core.delete_project(&name).await {
        Ok(()) => format!("Project {name} deleted."),
        Err(e) => e.to_string(),
    };
    projects_page(&s, &v, ProjectsQuery::default(), Some(notice)).await
}

#[derive(Deserialize)]
struct PageQuery {
    after: Option<String>,
}

/// `GET /projects/{name}`: its repositories; its members for those who may see them, with the
/// controls to change them for those who may manage them.
async fn project(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Path(name): Path<String>, Query(q): Query<PageQuery>) -> Response {
    project_page(&s, &v, &name, q.after.as_deref(), None).await
}

async fn project_page(s: &AppState, v: &Viewer, name: &str, after: Option<&str>, notice: Option<String>) -> Response {
    use berth_access::Capability;
    if s.core.require_in_project(&v.principal, name, Capability::Read).await.is_err()
        && !s.core.visible_projects(&v.principal).await.unwrap_or_default().iter().any(|p| p.name == name)
    {
        return denied(v, &format!("{} may not see project {name}", v.principal.subject));
    }
    let project = match s.core.get_project(name).await {
        Ok(p) => p,
        Err(e) => return error_page(&e),
    };
    let (repos, more) = match s.core.project_repositories(&v.principal, name, 100, after).await {
        Ok(r) => r,
        Err(e) => return error_page(&e),
    };
    let members = if s.core.require_in_project(&v.principal, name, Capability::ListMembers).await.is_ok() {
        s.core.list_members(name).await.ok()
    } else {
        None
    };
    let manage = s.core.require_in_project(&v.principal, name, Capability::ManageMembers).await.is_ok();
    let robots = s.core.require_in_project(&v.principal, name, Capability::ManageRobots).await.is_ok();
    let body = html! {
        p { @if project.public { "Public: everyone may pull." } @else { "Private: members only." } }
        @if robots { p { a href=(format!("/projects/{name}/robots")) { "Robots of " (name) } } }
        @if s.core.require_in_project(&v.principal, name, Capability::EditProject).await.is_ok() {
            form #project-settings method="post" action=(format!("/projects/{name}/settings")) {
                input type="hidden" name="csrf" value=(v.csrf);
                label { input name="public" type="checkbox" value="true" checked[project.public]; " Public (everyone may pull)" }
                button type="submit" { "Save settings" }
            }
        }
        @if v.principal.permissions.admin { p { a href=(format!("/projects/{name}/delete")) { "Delete project " (name) "…" } } }
        @if let Some(n) = &notice { p.notice role="status" { (n) } }
        section aria-labelledby="repos" {
            h2 #repos { "Repositories" }
            @if repos.is_empty() {
                p { "No repositories yet. Push one:" }
                pre tabindex="0" { code { "docker push " (v.host) "/" (name) "/app:v1" } }
            } @else {
                ul { @for r in &repos { li { a href=(format!("/repository?{}", serde_urlencoded::to_string([("name", r.as_str())]).unwrap_or_default())) { (r) } } } }
                @if more { @if let Some(last) = repos.last() { a href=(format!("/projects/{name}?{}", serde_urlencoded::to_string([("after", last.as_str())]).unwrap_or_default())) { "More repositories" } } }
            }
        }
        @if let Some(members) = &members {
            section aria-labelledby="members" {
                h2 #members { "Members" }
                table {
                    caption { "Members of " (name) }
                    thead { tr { th scope="col" { "Kind" } th scope="col" { "Name" } th scope="col" { "Role" } @if manage { th scope="col" { span.visually-hidden { "Actions" } } } } }
                    tbody {
                        @for m in members {
                            tr {
                                td { (m.kind) } td { (m.name) } td { (m.role) }
                                @if manage {
                                    td {
                                        form.inline method="post" action=(format!("/projects/{name}/members/remove")) {
                                            input type="hidden" name="csrf" value=(v.csrf);
                                            input type="hidden" name="kind" value=(m.kind);
                                            input type="hidden" name="name" value=(m.name);
                                            button type="submit" aria-label=(format!("Remove {} {}", m.kind, m.name)) { "Remove" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if manage {
                    form #add-member method="post" action=(format!("/projects/{name}/members")) {
                        input type="hidden" name="csrf" value=(v.csrf);
                        label for="member-kind" { "Kind" }
                        select #member-kind name="kind" { option value="group" { "group" } option value="user" { "user" } }
                        label for="member-name" { "Name" }
                        input #member-name name="name" type="text" required maxlength="256";
                        label for="member-role" { "Role" }
                        select #member-role name="role" {
                            @for r in berth_access::Role::ALL { option value=(r.as_str()) selected[r == berth_access::Role::Developer] { (r.as_str()) } }
                        }
                        button type="submit" { "Add member" }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, &format!("Project {name}"), Some(v), body)
}

#[derive(Deserialize)]
struct MemberForm {
    csrf: String,
    kind: String,
    name: String,
    role: Option<String>,
}

/// `POST /projects/{name}/members`: add a member or change its role.
async fn add_member(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Path(name): Path<String>, Form(f): Form<MemberForm>) -> Response {
    if !csrf_ok(&v, &f.csrf) {
        return denied(&v, "The form expired or came from another site; reload the page and try again.");
    }
    if let Err(e) = s.core.require_in_project(&v.principal, &name, berth_access::Capability::ManageMembers).await {
        return denied(&v, &e.to_string());
    }
    let spec = berth_core::admin::types::MemberSpec {
        user: (f.kind == "user").then(|| f.name.clone()),
        group: (f.kind == "group").then(|| f.name.clone()),
        role: f.role.unwrap_or_default(),
    };
    match s.core.put_member(&name, &spec).await {
        Ok(m) => project_page(&s, &v, &name, None, Some(format!("{} {} is {} in {name}", m.kind, m.name, m.role))).await,
        Err(e) => project_page(&s, &v, &name, None, Some(e.to_string())).await,
    }
}

/// `POST /projects/{name}/members/remove`.
async fn remove_member(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Path(name): Path<String>, Form(f): Form<MemberForm>) -> Response {
    if !csrf_ok(&v, &f.csrf) {
        return denied(&v, "The form expired or came from another site; reload the page and try again.");
    }
    if let Err(e) = s.core.require_in_project(&v.principal, &name, berth_access::Capability::ManageMembers).await {
        return denied(&v, &e.to_string());
    }
    match s.core.delete_member(&name, &f.kind, &f.name).await {
        Ok(()) => project_page(&s, &v, &name, None, Some(format!("{} {} removed from {name}", f.kind, f.name))).await,
        Err(e) => project_page(&s, &v, &name, None, Some(e.to_string())).await,
    }
}

// ---------------------------------------------------------------- robots

/// A rule line of the robot form: the short form (`claim=value`, `claim~glob`,
/// `claim:in=a,b`) or `expression: <CEL>`.
fn rule_line(line: &str) -> Result<berth_claims::RuleSpec, String> {
    match line.trim().strip_prefix("expression:") {
        Some(e) => Ok(berth_claims::RuleSpec { expression: Some(e.trim().to_owned()), ..Default::default() }),
        None => berth_claims::RuleSpec::parse_short(line),
    }
}

/// The robot form's rule and permission lines (blank lines skipped), or the first bad line's
/// reason.
fn robot_lines(rules: Option<&str>, permissions: Option<&str>) -> Result<(Vec<berth_claims::RuleSpec>, Vec<berth_access::PermissionSpec>), String> {
    let lines = |t: Option<&str>| t.unwrap_or("").lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect::<Vec<_>>();
    let rules = lines(rules).iter().map(|l| rule_line(l)).collect::<Result<Vec<_>, _>>()?;
    let permissions = lines(permissions).iter().map(|l| berth_access::PermissionSpec::parse_short(l)).collect::<Result<Vec<_>, _>>()?;
    Ok((rules, permissions))
}

/// A rule in plain words, or why it does not compile.
fn describe_rule(spec: &berth_claims::RuleSpec) -> Result<String, String> {
    berth_claims::Rule::compile(spec).map(|r| r.describe()).map_err(|e| e.to_string())
}

fn robot_rules_text(r: &berth_core::admin::types::RobotView) -> Vec<String> {
    let specs: Vec<berth_claims::RuleSpec> = serde_json::from_value(r.rules.clone()).unwrap_or_default();
    specs.iter().map(|s| describe_rule(s).unwrap_or_else(|e| format!("invalid: {e}"))).collect()
}

/// A stored rule in the form's short syntax (what `rule_line` reads back).
fn rule_short(spec: &berth_claims::RuleSpec) -> String {
    let claim = spec.claim.clone().unwrap_or_default();
    match (&spec.equals, &spec.glob, &spec.one_of, &spec.expression) {
        (Some(v), _, _, _) => format!("{claim}={v}"),
        (_, Some(g), _, _) => format!("{claim}~{g}"),
        (_, _, Some(list), _) => format!("{claim}:in={}", list.join(",")),
        (_, _, _, Some(e)) => format!("expression: {e}"),
        _ => String::new(),
    }
}

fn robot_permissions_text(r: &berth_core::admin::types::RobotView) -> Vec<String> {
    let specs: Vec<berth_access::PermissionSpec> = serde_json::from_value(r.permissions.clone()).unwrap_or_default();
    specs.iter().map(|p| format!("{}: {}", p.repositories, p.actions.join(", "))).collect()
}

/// `GET /projects/{name}/robots`: the project's robots, their rules in plain words and their
/// permissions, and the form to create one (for those who may manage robots there).
async fn robots(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Path(name): Path<String>) -> Response {
    robots_page(&s, &v, &name, None).await
}

async fn robots_page(s: &AppState, v: &Viewer, name: &str, notice: Option<Markup>) -> Response {
    if let Err(e) = s.core.require_in_project(&v.principal, name, berth_access::Capability::ManageRobots).await {
        return denied(v, &e.to_string());
    }
    let robots = match s.core.list_robots(&berth_core::admin::RobotFilter { project: Some(name.to_owned()) }).await {
        Ok(r) => r,
        Err(e) => return error_page(&e),
    };
    let providers: Vec<String> = s.core.list_identity_providers().await.unwrap_or_default().into_iter().filter(|p| !p.spec.audiences.is_empty()).map(|p| p.name).collect();
    let body = html! {
        p { a href=(format!("/projects/{name}")) { "Project " (name) } }
        @if let Some(n) = notice { div.notice role="status" { (n) } }
        @if robots.is_empty() { p { "No robots yet." } }
        @for r in &robots {
            section.robot aria-label=(r.name) {
                h2 { (r.name) }
                p { (r.kind) @if let Some(p) = &r.identity_provider { ", identity provider " (p) } @if r.disabled { ", disabled" } @if let Some(e) = &r.expires_at { ", expires " (e) } }
                @if !r.description.is_empty() { p { (r.description) } }
                @let rules = robot_rules_text(r);
                @if !rules.is_empty() { h3 { "Its token must have" } ul { @for t in &rules { li { (t) } } } }
                h3 { "It may" }
                ul { @for t in robot_permissions_text(r) { li { (t) } } }
                details {
                    summary { "Edit " (r.name) }
                    @let id = r.name.replace(['$', '+'], "-");
                    form method="post" action=(format!("/projects/{name}/robots/edit")) {
                        input type="hidden" name="csrf" value=(v.csrf);
                        input type="hidden" name="robot" value=(r.name);
                        label for=(format!("{id}-rules")) { "Claim rules, one per line" }
                        textarea id=(format!("{id}-rules")) name="rules" rows="3" data-check-rules="" aria-describedby=(format!("{id}-check")) {
                            (serde_json::from_value::<Vec<berth_claims::RuleSpec>>(r.rules.clone()).unwrap_or_default().iter().map(rule_short).collect::<Vec<_>>().join("\n"))
                        }
                        p id=(format!("{id}-check")) aria-live="polite" {}
                        label for=(format!("{id}-perms")) { "Permissions, one per line" }
                        textarea id=(format!("{id}-perms")) name="permissions" rows="2" {
                            (serde_json::from_value::<Vec<berth_access::PermissionSpec>>(r.permissions.clone()).unwrap_or_default().iter().map(|p| format!("{}:{}", p.repositories, p.actions.join(","))).collect::<Vec<_>>().join("\n"))
                        }
                        label { input name="disabled" type="checkbox" value="true" checked[r.disabled]; " Disabled" }
                        button type="submit" { "Save " (r.name) }
                    }
                }
                form.inline method="post" action=(format!("/projects/{name}/robots/delete")) {
                    input type="hidden" name="csrf" value=(v.csrf);
                    input type="hidden" name="robot" value=(r.name);
                    button type="submit" aria-label=(format!("Delete {}", r.name)) { "Delete" }
                }
            }
        }
        h2 { "New robot" }
        form #new-robot method="post" action=(format!("/projects/{name}/robots")) {
            input type="hidden" name="csrf" value=(v.csrf);
            label for="robot-name" { "Name" }
            input #robot-name name="name" type="text" required maxlength="64" placeholder="ci-myrepo";
            label for="robot-idp" { "Identity provider (empty: a static secret)" }
            select #robot-idp name="idp" { option value="" { "(none: static secret)" } @for p in &providers { option value=(p) { (p) } } }
            label for="robot-rules" { "Claim rules, one per line (claim=value, claim~glob, claim:in=a,b, expression: CEL)" }
            textarea #robot-rules name="rules" rows="4" data-check-rules="" aria-describedby="rules-check" {}
            p #rules-check aria-live="polite" {}
            label for="robot-perms" { "Permissions, one per line (repositories:actions)" }
            textarea #robot-perms name="permissions" rows="2" required { (name) "/*:pull" }
            label for="robot-description" { "Description" }
            input #robot-description name="description" type="text" maxlength="200";
            button type="submit" { "Create robot" }
        }
    };
    page(StatusCode::OK, &format!("Robots of {name}"), Some(v), body)
}

#[derive(Deserialize)]
struct RobotForm {
    csrf: String,
    name: String,
    idp: Option<String>,
    rules: Option<String>,
    permissions: Option<String>,
    description: Option<String>,
}

/// `POST /projects/{name}/robots`.
async fn create_robot(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Path(name): Path<String>, Form(f): Form<RobotForm>) -> Response {
    if !csrf_ok(&v, &f.csrf) {
        return denied(&v, "The form expired or came from another site; reload the page and try again.");
    }
    if let Err(e) = s.core.require_in_project(&v.principal, &name, berth_access::Capability::ManageRobots).await {
        return denied(&v, &e.to_string());
    }
    let (rules, permissions) = match robot_lines(f.rules.as_deref(), f.permissions.as_deref()) {
        Ok(parsed) => parsed,
        Err(e) => return robots_page(&s, &v, &name, Some(html! { p.error { (e) } })).await,
    };
    let spec = berth_core::admin::types::RobotSpec {
        name: f.name,
        project: Some(name.clone()),
        description: f.description.filter(|d| !d.is_empty()),
        disabled: false,
        expires_at: None,
        identity_provider: f.idp.filter(|i| !i.is_empty()),
        rules,
        permissions,
    };
    match s.core.create_robot(&spec).await {
        Ok(created) => {
            let notice = html! {
                p { "Robot " strong { (created.robot.name) } " created." }
                @if let Some(secret) = &created.secret {
                    p { "Its secret, shown only now:" }
                    pre tabindex="0" { code #robot-secret { (secret) } }
                }
            };
            robots_page(&s, &v, &name, Some(notice)).await
        }
        Err(e) => robots_page(&s, &v, &name, Some(html! { p.error { (e.to_string()) } })).await,
    }
}

#[derive(Deserialize)]
struct RobotEdit {
    csrf: String,
    robot: String,
    rules: Option<String>,
    permissions: Option<String>,
    disabled: Option<String>,
}

/// `POST /projects/{name}/robots/edit`: new rules, permissions or the disabled flag of one of
/// the project's robots (its other settings and its secret stay).
async fn edit_robot(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Path(name): Path<String>, Form(f): Form<RobotEdit>) -> Response {
    if !csrf_ok(&v, &f.csrf) {
        return denied(&v, "The form expired or came from another site; reload the page and try again.");
    }
    if let Err(e) = s.core.require_in_project(&v.principal, &name, berth_access::Capability::ManageRobots).await {
        return denied(&v, &e.to_string());
    }
    let robot = match s.core.get_robot(&f.robot).await {
        Ok(r) if r.project.as_deref() == Some(name.as_str()) => r,
        Ok(_) => return denied(&v, &format!("robot {} is not a robot of project {name}", f.robot)),
        Err(e) => return error_page(&e),
    };
    let (rules, permissions) = match robot_lines(f.rules.as_deref(), f.permissions.as_deref()) {
        Ok(parsed) => parsed,
        Err(e) => return robots_page(&s, &v, &name, Some(html! { p.error { (e) } })).await,
    };
    let spec = berth_core::admin::types::RobotSpec {
        name: robot.name.clone(),
        project: robot.project.clone(),
        description: Some(robot.description.clone()).filter(|d| !d.is_empty()),
        disabled: f.disabled.is_some(),
        expires_at: robot.expires_at.clone(),
        identity_provider: robot.identity_provider.clone(),
        rules,
        permissions,
    };
    match s.core.put_robot(&robot.name, &spec).await {
        Ok(saved) => robots_page(&s, &v, &name, Some(html! { p { "Robot " (saved.robot.name) " saved." } })).await,
        Err(e) => robots_page(&s, &v, &name, Some(html! { p.error { (e.to_string()) } })).await,
    }
}

#[derive(Deserialize)]
struct RobotDelete {
    csrf: String,
    robot: String,
}

/// `POST /projects/{name}/robots/delete`.
async fn delete_robot(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Path(name): Path<String>, Form(f): Form<RobotDelete>) -> Response {
    if !csrf_ok(&v, &f.csrf) {
        return denied(&v, "The form expired or came from another site; reload the page and try again.");
    }
    // The robot must be this project's, and the viewer must manage its robots.
    let robot = match s.core.get_robot(&f.robot).await {
        Ok(r) if r.project.as_deref() == Some(name.as_str()) => r,
        Ok(_) => return denied(&v, &format!("robot {} is not a robot of project {name}", f.robot)),
        Err(e) => return error_page(&e),
    };
    if let Err(e) = s.core.require_in_project(&v.principal, &name, berth_access::Capability::ManageRobots).await {
        return denied(&v, &e.to_string());
    }
    match s.core.delete_robot(&robot.name).await {
        Ok(()) => robots_page(&s, &v, &name, Some(html! { p { "Robot " (robot.name) " deleted." } })).await,
        Err(e) => error_page(&e),
    }
}

#[derive(Deserialize)]
struct RuleCheck {
    line: String,
}

/// `GET /rules/check?line=...`: a rule line in plain words, or why it is not one (the robot
/// form checks each line as it is typed). JSON `{"ok": bool, "text": "..."}`.
async fn check_rule(SignedIn(_v): SignedIn, Query(q): Query<RuleCheck>) -> Response {
    let line = crate::text::cap(&q.line, 2000).into_owned();
    let (ok, text) = match rule_line(&line).and_then(|spec| describe_rule(&spec)) {
        Ok(t) => (true, t),
        Err(e) => (false, e),
    };
    secured(axum::Json(serde_json::json!({"ok": ok, "text": text})).into_response())
}

// ---------------------------------------------------------------- administrators' pages

/// The viewer, if a system administrator; else the page that says no.
#[allow(clippy::result_large_err)] // the Err is the page to answer with
fn admin_only(v: &Viewer) -> Result<(), Response> {
    if v.principal.permissions.admin {
        Ok(())
    } else {
        Err(denied(v, &format!("{} is not an administrator: this page is for administrators", v.principal.subject)))
    }
}

fn step_list(ex: &berth_identity::federation::Explanation) -> Markup {
    html! {
        ol.steps {
            @for st in &ex.steps {
                li { span class=(if st.ok { "rule-ok" } else { "error" }) { @if st.ok { "✓ " } @else { "✗ " } (st.name) } ": " (st.detail) }
            }
        }
        @if !ex.robots.is_empty() {
            h3 { "Robots of this provider" }
            @for r in &ex.robots {
                section.robot aria-label=(r.robot) {
                    h4 { @if r.matched { "✓ matches: " } @else { "✗ does not match: " } (r.robot) }
                    @if let Some(n) = &r.note { p { (n) } }
                    ul { @for rule in &r.rules { li { span class=(if rule.matched { "rule-ok" } else { "error" }) { @if rule.matched { "✓ " } @else { "✗ " } } (rule.rule) ": " (rule.reason) } } }
                }
            }
        }
        p { strong { "Result: " (ex.result) } @if let Some(m) = &ex.message { " (" (m) ")" } }
    }
}

#[derive(Deserialize)]
struct TesterForm {
    csrf: String,
    token: Option<String>,
    provider: Option<String>,
    claims: Option<String>,
    sample: Option<String>,
}

/// Sample claim sets of the platforms, as their tokens carry them (shared/seeds): what a rule
/// can be tried against before a real job runs.
const SAMPLES: [(&str, &str, &str); 3] = [
    (
        "github",
        "GitHub Actions",
        r#"{"sub": "repo:myorg/app:ref:refs/heads/main", "repository": "myorg/app", "repository_owner": "myorg", "ref": "refs/heads/main", "ref_type": "branch", "workflow": "release", "event_name": "push", "actor": "octocat", "environment": "production", "job_workflow_ref": "myorg/app/.github/workflows/release.yml@refs/heads/main"}"#,
    ),
    (
        "gitlab",
        "GitLab CI",
        r#"{"sub": "project_path:mygroup/app:ref_type:branch:ref:main", "project_path": "mygroup/app", "namespace_path": "mygroup", "ref": "main", "ref_type": "branch", "ref_protected": "true", "pipeline_source": "push", "user_login": "alice", "environment": "production"}"#,
    ),
    (
        "kubernetes",
        "Kubernetes service account",
        r#"{"sub": "system:serviceaccount:builds:builder", "kubernetes.io": {"namespace": "builds", "serviceaccount": {"name": "builder", "uid": "0d2f"}, "pod": {"name": "builder-7c9d", "uid": "a1b2"}}}"#,
    ),
];

/// `GET /tester`: paste a token (or write sample claims for a provider) and see what
/// `berth token explain` says. Nothing pasted is stored or logged.
async fn tester(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn) -> Response {
    if let Err(r) = admin_only(&v) {
        return r;
    }
    tester_page(&s, &v, None).await
}

async fn tester_page(s: &AppState, v: &Viewer, result: Option<Markup>) -> Response {
    let providers: Vec<String> = s.core.list_identity_providers().await.unwrap_or_default().into_iter().map(|p| p.name).collect();
    let body = html! {
        p { "Nothing pasted here is stored or logged." }
        form method="post" action="/tester" {
            input type="hidden" name="csrf" value=(v.csrf);
            label for="tester-token" { "A token (JWT, or a Berth token)" }
            textarea #tester-token name="token" rows="4" spellcheck="false" autocomplete="off" {}
            button type="submit" { "Explain the token" }
        }
        form method="post" action="/tester" {
            input type="hidden" name="csrf" value=(v.csrf);
            label for="tester-provider" { "Or sample claims for a provider" }
            select #tester-provider name="provider" { @for p in &providers { option value=(p) { (p) } } }
            label for="tester-sample" { "Start from a sample of" }
            select #tester-sample name="sample" {
                option value="" { "(the claims below)" }
                @for (key, label, _) in SAMPLES { option value=(key) { (label) } }
            }
            label for="tester-claims" { "Claims (JSON)" }
            textarea #tester-claims name="claims" rows="6" spellcheck="false" { "{\"repository\": \"myorg/app\", \"ref\": \"refs/heads/main\"}" }
            button type="submit" { "Match the claims" }
        }
        @if let Some(r) = result { section aria-labelledby="verdict" { h2 #verdict { "Verdict" } (r) } }
    };
    page(StatusCode::OK, "Token tester", Some(v), body)
}

/// A token with `claims` for `provider` and a signature that cannot verify (its issuer and audience filled in when
/// missing): explain shows every rule's outcome "for information" (the signature step fails).
async fn sample_token(s: &AppState, provider: &str, claims: &str) -> Result<String, String> {
    use base64::Engine as _;
    let mut claims: serde_json::Map<String, serde_json::Value> = serde_json::from_str(claims).map_err(|e| format!("the claims are not a JSON object: {e}"))?;
    let p = s.core.get_identity_provider(provider).await.map_err(|e| e.to_string())?;
    claims.entry("iss").or_insert(serde_json::Value::String(p.issuer.clone()));
    if let Some(aud) = p.spec.audiences.first() {
        claims.entry("aud").or_insert(serde_json::Value::String(aud.clone()));
    }
    let now = berth_core::clock::now_secs();
    claims.entry("iat").or_insert(now.into());
    claims.entry("exp").or_insert((now + 300).into());
    let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    Ok(format!("{}.{}.{}", b64(&serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "berth-sample-claims"})), b64(&serde_json::Value::Object(claims)), "c2FtcGxl"))
}

/// `POST /tester`.
async fn tester_submit(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Form(f): Form<TesterForm>) -> Response {
    if let Err(r) = admin_only(&v) {
        return r;
    }
    if !csrf_ok(&v, &f.csrf) {
        return denied(&v, "The form expired or came from another site; reload the page and try again.");
    }
    let token = match (f.token.as_deref().map(str::trim).filter(|t| !t.is_empty()), f.provider, f.claims) {
        (Some(t), _, _) => t.to_owned(),
        (None, Some(p), Some(c)) => match sample_token(&s, &p, SAMPLES.iter().find(|(k, _, _)| Some(*k) == f.sample.as_deref()).map(|(_, _, json)| *json).unwrap_or(&c)).await {
            Ok(t) => t,
            Err(e) => return tester_page(&s, &v, Some(html! { p.error { (e) } })).await,
        },
        _ => return tester_page(&s, &v, Some(html! { p.error { "Paste a token, or write claims for a provider." } })).await,
    };
    let ex = s.core.explain_token(&token).await;
    tester_page(&s, &v, Some(step_list(&ex))).await
}

#[derive(Deserialize, Default)]
struct AuditForm {
    who: Option<String>,
    repository: Option<String>,
    action: Option<String>,
    result: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<i64>,
}

impl AuditForm {
    fn filter(&self) -> berth_core::admin::AuditFilter {
        let some = |v: &Option<String>| v.clone().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        berth_core::admin::AuditFilter {
            since: some(&self.since),
            until: some(&self.until),
            robot: some(&self.who),
            repository: some(&self.repository),
            provider: None,
            result: some(&self.result),
            action: some(&self.action),
            before: self.before,
            limit: Some(100),
        }
    }
}

/// `GET /audit`: the audit log with filters (who: a person or robot; repository; action;
/// result; time range), the workload identity of each event, and the same as JSON.
async fn audit(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Query(f): Query<AuditForm>) -> Response {
    if let Err(r) = admin_only(&v) {
        return r;
    }
    let events = match s.core.query_audit(&f.filter()).await {
        Ok(e) => e,
        Err(e) => return page(crate::error::status_of(&e), "Audit log", Some(&v), html! { p.error role="alert" { (e.to_string()) } p { a href="/audit" { "Clear the filters" } } }),
    };
    let json_query = serde_urlencoded::to_string(&[
        ("who", f.who.clone().unwrap_or_default()),
        ("repository", f.repository.clone().unwrap_or_default()),
        ("action", f.action.clone().unwrap_or_default()),
        ("result", f.result.clone().unwrap_or_default()),
        ("since", f.since.clone().unwrap_or_default()),
        ("until", f.until.clone().unwrap_or_default()),
    ])
    .unwrap_or_default();
    let body = html! {
        form.filters method="get" action="/audit" {
            label for="f-who" { "Person or robot" } input #f-who name="who" type="text" value=(f.who.clone().unwrap_or_default());
            label for="f-repo" { "Repository" } input #f-repo name="repository" type="text" value=(f.repository.clone().unwrap_or_default());
            label for="f-action" { "Action" }
            select #f-action name="action" { option value="" { "any" } @for a in ["login", "token", "pull", "push", "delete", "credential"] { option value=(a) selected[f.action.as_deref() == Some(a)] { (a) } } }
            label for="f-result" { "Result" }
            select #f-result name="result" { option value="" { "any" } @for r in ["ok", "denied", "error"] { option value=(r) selected[f.result.as_deref() == Some(r)] { (r) } } }
            label for="f-since" { "Since (RFC 3339)" } input #f-since name="since" type="text" value=(f.since.clone().unwrap_or_default());
            label for="f-until" { "Until (RFC 3339)" } input #f-until name="until" type="text" value=(f.until.clone().unwrap_or_default());
            button type="submit" { "Filter" }
        }
        p { a href=(format!("/audit.json?{json_query}")) { "These events as JSON" } }
        table {
            caption { "Audit events, newest first" }
            thead { tr { th scope="col" { "Time" } th scope="col" { "Action" } th scope="col" { "Result" } th scope="col" { "Who" } th scope="col" { "Identity" } th scope="col" { "Repository" } th scope="col" { "Message" } } }
            tbody {
                @for e in &events {
                    tr {
                        td { (e.time) } td { (e.action) } td { (e.result) } td { (e.principal) }
                        td {
                            @if let Some(p) = &e.provider { (p) }
                            @if let Some(sub) = &e.subject { " " code { (sub) } }
                            @if let Some(c) = &e.claims { @if let Some(o) = c.as_object() { ul.claims { @for (k, val) in o { li { (k) "=" (val.as_str().map(str::to_owned).unwrap_or_else(|| val.to_string())) } } } } }
                        }
                        td { (e.repository.as_deref().unwrap_or("")) @if let Some(r) = &e.reference { ":" (r) } }
                        td { (e.message.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        @if events.len() == 100 { @if let Some(last) = events.last() { a href=(format!("/audit?{json_query}&before={}", last.id)) { "Older events" } } }
    };
    page(StatusCode::OK, "Audit log", Some(&v), body)
}

/// `GET /audit.json`: the filtered events as JSON (the admin API's shape).
async fn audit_json(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Query(f): Query<AuditForm>) -> Response {
    if let Err(r) = admin_only(&v) {
        return r;
    }
    match s.core.query_audit(&AuditForm { before: f.before, ..f }.filter()).await {
        Ok(events) => secured(axum::Json(events).into_response()),
        Err(e) => error_page(&e),
    }
}

/// `GET /identity-providers`: every provider, what it is for, and its keys when tested.
async fn providers(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Query(q): Query<ProviderQuery>) -> Response {
    if let Err(r) = admin_only(&v) {
        return r;
    }
    let list = s.core.list_identity_providers().await.unwrap_or_default();
    let tested = match &q.test {
        Some(name) => Some((name.clone(), s.core.test_identity_provider(name).await)),
        None => None,
    };
    let body = html! {
        table {
            caption { "Identity providers" }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Issuer" } th scope="col" { "Workloads (audiences)" } th scope="col" { "People (client id)" } th scope="col" { span.visually-hidden { "Actions" } } } }
            tbody {
                @for p in &list {
                    tr {
                        td { (p.name) } td { code { (p.issuer) } }
                        td { (p.spec.audiences.join(", ")) }
                        td { @if let Some(l) = &p.spec.login { (l.client_id) } }
                        td { a href=(format!("/identity-providers?{}", q_test(&p.name))) aria-label=(format!("Test {}", p.name)) { "Test" } }
                    }
                }
            }
        }
        @if let Some((name, t)) = &tested {
            section aria-labelledby="test" {
                h2 #test { "Test of " (name) }
                @match t {
                    Ok(t) if t.ok => @if let Some(r) = &t.result {
                        dl {
                            dt { "Issuer" } dd { (r.issuer) }
                            dt { "Keys from" } dd { (r.source) }
                            dt { "Keys" } dd { ul { @for k in &r.keys { li { (k) } } } }
                            dt { "Algorithms" } dd { (r.algorithms.join(", ")) }
                        }
                    },
                    Ok(t) => p.error role="alert" { (t.error.clone().unwrap_or_default()) },
                    Err(e) => p.error role="alert" { (e.to_string()) },
                }
            }
        }
        h2 { "Add an identity provider" }
        form #new-provider method="post" action="/identity-providers" {
            input type="hidden" name="csrf" value=(v.csrf);
            label for="idp-preset" { "Preset" }
            select #idp-preset name="preset" {
                @for p in ["github", "gitlab", "forgejo", "kubernetes", "keycloak", "authentik", "google", "generic"] { option value=(p) { (p) } }
            }
            label for="idp-name" { "Name" } input #idp-name name="name" type="text" required maxlength="64";
            label for="idp-issuer" { "Issuer (when the preset does not set it)" } input #idp-issuer name="issuer" type="text";
            label for="idp-instance" { "Instance URL (GitLab, Forgejo, Keycloak, authentik)" } input #idp-instance name="instance" type="text";
            label for="idp-realm" { "Keycloak realm" } input #idp-realm name="realm" type="text";
            label for="idp-slug" { "authentik application slug" } input #idp-slug name="slug" type="text";
            label for="idp-audiences" { "Workloads: audiences, comma separated" } input #idp-audiences name="audiences" type="text";
            label for="idp-client" { "People: client id" } input #idp-client name="client_id" type="text";
            label for="idp-secret" { "People: client secret" } input #idp-secret name="client_secret" type="password" autocomplete="off";
            label for="idp-admins" { "People: administrators' group" } input #idp-admins name="admin_group" type="text";
            button type="submit" { "Add identity provider" }
        }
        p { "Also with " code { "berth idp add" } ", the admin API or " code { "berth apply" } " (see docs/people.md and docs/federation.md)." }
    };
    let body = match &q.notice { Some(n) => html! { p.notice role="status" { (n) } (body) }, None => body };
    page(StatusCode::OK, "Identity providers", Some(&v), body)
}

#[derive(Deserialize)]
struct NewProvider {
    csrf: String,
    preset: String,
    name: String,
    issuer: Option<String>,
    instance: Option<String>,
    realm: Option<String>,
    slug: Option<String>,
    audiences: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    admin_group: Option<String>,
}

/// `POST /identity-providers` (administrators): a provider from a preset, for workloads
/// (audiences), people (a client), or both.
async fn create_provider(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Form(f): Form<NewProvider>) -> Response {
    if let Err(r) = admin_only(&v) {
        return r;
    }
    if !csrf_ok(&v, &f.csrf) {
        return denied(&v, "The form expired or came from another site; reload the page and try again.");
    }
    let some = |x: Option<String>| x.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let preset = match f.preset.as_str() {
        "generic" => None,
        other => match other.parse::<berth_identity::federation::Preset>() {
            Ok(p) => Some(p),
            Err(e) => return redirect_with_notice("/identity-providers", &e),
        },
    };
    let login = some(f.client_id).map(|client_id| berth_identity::federation::provider::LoginSpec {
        client_id,
        client_secret: some(f.client_secret),
        admin_group: some(f.admin_group),
        ..Default::default()
    });
    let spec = berth_identity::federation::ProviderSpec {
        name: f.name.trim().to_owned(),
        preset,
        issuer: some(f.issuer),
        instance: some(f.instance),
        realm: some(f.realm),
        slug: some(f.slug),
        audiences: f.audiences.unwrap_or_default().split(',').map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()).collect(),
        login,
        ..Default::default()
    };
    match s.core.create_identity_provider(&spec).await {
        Ok(p) => redirect_with_notice("/identity-providers", &format!("Identity provider {} added (issuer {}).", p.name, p.issuer)),
        Err(e) => redirect_with_notice("/identity-providers", &e.to_string()),
    }
}

/// A redirect to a page of this UI that shows `notice` (a GET after a POST).
fn redirect_with_notice(path: &str, notice: &str) -> Response {
    secured(Redirect::to(&format!("{path}?{}", q(&[("notice", crate::text::cap(notice, 500).as_ref())]))).into_response())
}

fn q_test(name: &str) -> String {
    serde_urlencoded::to_string([("test", name)]).unwrap_or_default()
}

#[derive(Deserialize)]
struct ProviderQuery {
    test: Option<String>,
    notice: Option<String>,
}

/// `GET /system`: users, the health of the backends, the version.
async fn system(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn) -> Response {
    if let Err(r) = admin_only(&v) {
        return r;
    }
    let users = s.core.list_users().await.unwrap_or_default();
    let ready = s.core.ready(std::time::Duration::from_secs(2)).await;
    let body = html! {
        dl {
            dt { "Version" } dd { (env!("CARGO_PKG_VERSION")) }
            dt { "Metadata store" } dd { @match &ready.metadata { Ok(()) => "ok", Err(e) => span.error { (e) } } }
            dt { "Blob storage" } dd { @match &ready.storage { Ok(()) => "ok", Err(e) => span.error { (e) } } }
        }
        table {
            caption { "Users" }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Administrator" } th scope="col" { "Identity" } th scope="col" { "Groups" } th scope="col" { "Last login" } } }
            tbody {
                @for u in &users {
                    tr {
                        td { (u.name) @if u.disabled { " (disabled)" } }
                        td { @if u.admin { "yes" } }
                        td { @if let Some(i) = &u.identity { (i.provider) " " code { (i.subject) } } @else { "local" } }
                        td { (u.groups.join(", ")) }
                        td { (u.last_login_at.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        h2 { "Garbage collection" }
        p { "Removes blobs no manifest uses (older than " (humantime_secs(s.config.gc.grace.as_secs())) "), stale uploads and old audit events; safe while pushes run. Also " code { "berth gc" } " and the schedule " code { "gc.interval" } "." }
        @if let Some((at, outcome)) = s.last_gc.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            @match outcome {
                Ok(sum) => p.notice role="status" { "Last run here " (at) ": " (sum.blobs_removed) " blobs, " (sum.repository_links_removed) " repository links, " (sum.stale_uploads_removed) " stale uploads, " (sum.audit_events_removed) " audit events removed." },
                Err(e) => p.error role="alert" { "Last run here " (at) " failed: " (e) },
            }
        }
        form method="post" action="/system/gc" {
            input type="hidden" name="csrf" value=(v.csrf);
            button type="submit" { "Run garbage collection now" }
        }
    };
    page(StatusCode::OK, "System", Some(&v), body)
}

fn humantime_secs(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s % 3600 == 0 => format!("{} hours", s / 3600),
        s => format!("{s} s"),
    }
}

/// `POST /system/gc` (administrators): runs a garbage collection now, then shows the system page.
async fn run_gc(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Form(f): Form<CsrfForm>) -> Response {
    if let Err(r) = admin_only(&v) {
        return r;
    }
    if !csrf_ok(&v, &f.csrf) {
        return denied(&v, "The form expired or came from another site; reload the page and try again.");
    }
    let outcome = s.core.collect_garbage(s.config.gc).await.map_err(|e| e.to_string());
    *s.last_gc.lock().unwrap_or_else(|p| p.into_inner()) = Some((berth_core::admin::rfc3339(berth_core::clock::now_secs()), outcome));
    secured(Redirect::to("/system").into_response())
}

// ---------------------------------------------------------------- repositories and artifacts

/// A repository name from a query, if the viewer may pull it.
#[allow(clippy::result_large_err)] // the Err is the page to answer with, built once per refused request
fn pullable(v: &Viewer, name: &str) -> Result<berth_oci::RepoName, Response> {
    let repo: berth_oci::RepoName = name.parse().map_err(|_| denied(v, "not a repository name"))?;
    if !v.principal.permissions.on(repo.as_str()).contains(berth_access::Action::Pull) {
        return Err(denied(v, &format!("{} may not pull {repo}", v.principal.subject)));
    }
    Ok(repo)
}

fn q(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// A code line with a copy button (the button works through /static/berth.js).
fn copyable(text: &str) -> Markup {
    html! { div.copy { pre tabindex="0" { code { (text) } } button type="button" data-copy=(text) { "Copy" } } }
}

#[derive(Deserialize)]
struct RepoQuery {
    name: String,
    after: Option<String>,
}

/// `GET /repository?name=team/app`: its tags.
async fn repository(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Query(rq): Query<RepoQuery>) -> Response {
    let repo = match pullable(&v, &rq.name) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let listing = match s.core.list_tags(&repo, Some(100), rq.after.as_deref()).await {
        Ok(l) => l,
        Err(e) => return error_page(&e),
    };
    let host = v.host.clone();
    let body = html! {
        p { a href=(format!("/projects/{}", repo.as_str().split('/').next().unwrap_or_default())) { "Project " (repo.as_str().split('/').next().unwrap_or_default()) } }
        h2 { "Tags" }
        @if listing.names.is_empty() { p { "No tags." } }
        ul { @for t in &listing.names { li { a href=(format!("/artifact?{}", q(&[("repo", repo.as_str()), ("ref", t.as_str())]))) { (t) } } } }
        @if listing.more { @if let Some(last) = listing.names.last() { a href=(format!("/repository?{}", q(&[("name", repo.as_str()), ("after", last.as_str())]))) { "More tags" } } }
        h2 { "Pull" }
        (copyable(&format!("docker pull {host}/{repo}:{}", listing.names.first().map(String::as_str).unwrap_or("latest"))))
    };
    page(StatusCode::OK, &format!("Repository {repo}"), Some(&v), body)
}

#[derive(Deserialize)]
struct ArtifactQuery {
    repo: String,
    #[serde(rename = "ref")]
    reference: String,
}

/// `GET /artifact?repo=team/app&ref=v1`: a manifest: its digest, media type, size, the
/// platforms of an index, the config and layers of an image, annotations, referrers, and pull
/// commands.
async fn artifact(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, Query(aq): Query<ArtifactQuery>) -> Response {
    let repo = match pullable(&v, &aq.repo) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let Ok(reference) = aq.reference.parse::<berth_oci::Reference>() else {
        return denied(&v, "not a tag or digest");
    };
    let m = match s.core.get_manifest(&repo, &reference).await {
        Ok(m) => m,
        Err(e) => return error_page(&e),
    };
    let doc: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap_or_default();
    // Referrers as a tree: their own referrers (a signature of an SBOM) up to 3 levels, at most
    // 50 nodes, so a page stays bounded whatever was attached.
    let mut tree: Vec<(usize, berth_meta::Referrer)> = Vec::new();
    let mut frontier = vec![(0usize, m.digest.clone())];
    while let Some((depth, subject)) = frontier.pop() {
        if depth >= 3 || tree.len() >= 50 {
            continue;
        }
        let found = s.core.referrers(&repo, &subject, None).await.unwrap_or_default();
        // Depth first, in the store's order: children follow their parent.
        let at = tree.iter().position(|(_, r)| r.digest == subject).map(|i| i + 1).unwrap_or(tree.len());
        for (k, r) in found.into_iter().take(50 - tree.len()).enumerate() {
            frontier.push((depth + 1, r.digest.clone()));
            tree.insert(at + k, (depth, r));
        }
    }
    let host = v.host.clone();
    let digest = m.digest.to_string();
    let descriptors = |key: &str| doc.get(key).and_then(|v| v.as_array()).cloned().unwrap_or_default();
    let text = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    let size = |v: &serde_json::Value| v.get("size").and_then(|x| x.as_u64()).map(|n| n.to_string()).unwrap_or_default();
    let annotations: Vec<(String, String)> = doc
        .get("annotations")
        .and_then(|a| a.as_object())
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))).collect())
        .unwrap_or_default();
    let body = html! {
        p { a href=(format!("/repository?{}", q(&[("name", repo.as_str())]))) { "Repository " (repo) } }
        dl {
            dt { "Digest" } dd { code { (digest) } }
            dt { "Media type" } dd { (m.media_type) }
            dt { "Size" } dd { (m.bytes.len()) " bytes (manifest)" }
            @if let Some(at) = doc.get("artifactType").and_then(|x| x.as_str()) { dt { "Artifact type" } dd { (at) } }
            @if let Some(sub) = &m.subject { dt { "Subject" } dd { a href=(format!("/artifact?{}", q(&[("repo", repo.as_str()), ("ref", sub.as_str())]))) { code { (sub) } } } }
        }
        @let manifests = descriptors("manifests");
        @if !manifests.is_empty() {
            table {
                caption { "Platforms" }
                thead { tr { th scope="col" { "Platform" } th scope="col" { "Digest" } th scope="col" { "Size" } } }
                tbody {
                    @for d in &manifests {
                        tr {
                            td { (text(d.get("platform").unwrap_or(&serde_json::Value::Null), "os")) "/" (text(d.get("platform").unwrap_or(&serde_json::Value::Null), "architecture")) }
                            td { a href=(format!("/artifact?{}", q(&[("repo", repo.as_str()), ("ref", &text(d, "digest"))]))) { code { (text(d, "digest")) } } }
                            td { (size(d)) }
                        }
                    }
                }
            }
        }
        @if let Some(config) = doc.get("config") {
            table {
                caption { "Config" }
                tbody { tr { th scope="row" { "Media type" } td { (text(config, "mediaType")) } } tr { th scope="row" { "Digest" } td { code { (text(config, "digest")) } } } tr { th scope="row" { "Size" } td { (size(config)) } } }
            }
        }
        @let layers = descriptors("layers");
        @if !layers.is_empty() {
            table {
                caption { "Layers" }
                thead { tr { th scope="col" { "Digest" } th scope="col" { "Media type" } th scope="col" { "Size" } } }
                tbody { @for l in &layers { tr { td { code { (text(l, "digest")) } } td { (text(l, "mediaType")) } td { (size(l)) } } } }
            }
        }
        @if !annotations.is_empty() {
            table {
                caption { "Annotations" }
                tbody { @for (k, val) in &annotations { tr { th scope="row" { (k) } td { (val) } } } }
            }
        }
        section aria-labelledby="referrers" {
            h2 #referrers { "Referrers (signatures, SBOMs, attestations)" }
            @if tree.is_empty() { p { "None." } }
            @else {
                ul.tree {
                    @for (depth, r) in &tree {
                        li class=(format!("depth-{depth}")) {
                            (r.artifact_type.as_deref().unwrap_or(&r.media_type)) " "
                            a href=(format!("/artifact?{}", q(&[("repo", repo.as_str()), ("ref", r.digest.as_str())]))) { code { (r.digest) } }
                            " (" (r.size) " bytes)"
                        }
                    }
                }
            }
        }
        h2 { "Pull" }
        (copyable(&format!("docker pull {host}/{repo}@{digest}")))
        (copyable(&format!("podman pull {host}/{repo}@{digest}")))
        (copyable(&format!("crane pull {host}/{repo}@{digest} image.tar")))
    };
    page(StatusCode::OK, &format!("{repo}:{}", aq.reference), Some(&v), body)
}

/// `GET /static/berth.js`: copy buttons (the only script; no inline scripts anywhere).
async fn script() -> Response {
    let mut r = ([(http::header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("berth.js")).into_response();
    r.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    r
}

// ---------------------------------------------------------------- my account

/// `GET /account`: who I am, my groups and roles, my personal access tokens.
async fn account(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn) -> Response {
    account_page(&s, &v, None).await
}

async fn account_page(s: &AppState, v: &Viewer, created: Option<(String, String)>) -> Response {
    let who = match s.core.whoami(&v.principal).await {
        Ok(w) => w,
        Err(e) => return error_page(&e),
    };
    let tokens = match s.core.list_user_tokens(&v.principal.subject).await {
        Ok(t) => t,
        Err(e) => return error_page(&e),
    };
    let host = v.host.clone();
    let body = html! {
        section aria-labelledby="me" {
            h2 #me { "Who I am" }
            dl {
                dt { "Name" } dd { (who.name) @if who.admin { " (administrator)" } }
                @if let (Some(p), Some(sub)) = (&who.provider, &who.subject) { dt { "Identity provider" } dd { (p) ", subject " code { (sub) } } }
                @if let Some(e) = &who.email { dt { "Email" } dd { (e) } }
                dt { "Groups" } dd { @if who.groups.is_empty() { "none" } @else { (who.groups.join(", ")) } }
            }
            @if !who.roles.is_empty() {
                table {
                    caption { "My roles" }
                    thead { tr { th scope="col" { "Project" } th scope="col" { "Role" } th scope="col" { "Through" } } }
                    tbody { @for r in &who.roles { tr { td { (r.project) } td { (r.role) } td { (r.via.join(", ")) } } } }
                }
            }
        }
        section aria-labelledby="tokens" {
            h2 #tokens { "Personal access tokens" }
            @if let Some((name, secret)) = &created {
                div.notice role="status" {
                    p { "Token " strong { (name) } " created. Copy it now: it is shown only once." }
                    pre tabindex="0" { code #new-token { (secret) } }
                    p { "Use it as a password: " }
                    pre tabindex="0" { code { "echo \"$TOKEN\" | docker login -u " (who.name) " --password-stdin " (host) } }
                }
            }
            table {
                caption { "My tokens" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Kind" } th scope="col" { "Expires" } th scope="col" { "Last used" } th scope="col" { span.visually-hidden { "Actions" } } } }
                tbody {
                    @for t in &tokens {
                        tr {
                            td { (t.name) }
                            td { (t.kind) }
                            td { (t.expires_at.as_deref().unwrap_or("never")) }
                            td { (t.last_used_at.as_deref().unwrap_or("never")) }
                            td {
                                form.inline method="post" action=(format!("/account/tokens/{}/revoke", t.id)) {
                                    input type="hidden" name="csrf" value=(v.csrf);
                                    button type="submit" aria-label=(format!("Revoke {}", t.name)) { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
            form method="post" action="/account/tokens" {
                input type="hidden" name="csrf" value=(v.csrf);
                label for="token-name" { "Name" }
                input #token-name name="name" type="text" required maxlength="64";
                label for="token-expires" { "Expires after" }
                input #token-expires name="expires" type="text" placeholder="30d";
                button type="submit" { "Create token" }
            }
        }
        section aria-labelledby="setup" {
            h2 #setup { "Use this registry" }
            h3 { "docker, podman, skopeo (with a personal access token)" }
            (copyable(&format!("echo \"$TOKEN\" | docker login -u {} --password-stdin {host}", who.name)))
            h3 { "The credential helper (after berth login)" }
            (copyable(&format!("berth login {} --idp <provider>", v.base)))
            p { "and in " code { "~/.docker/config.json" } ":" }
            (copyable(&format!("{{\"credHelpers\": {{\"{host}\": \"berth\"}}}}")))
            h3 { "GitHub Actions (no stored secret: the job's OIDC token)" }
            (copyable(&format!("echo \"$OIDC_TOKEN\" | docker login -u jwt --password-stdin {host}")))
            h3 { "Kubernetes" }
            p { "The kubelet plugin " code { "berth-credential-provider" } " pulls with the pod's service-account token: see docs/platforms/kubernetes.md." }
        }
    };
    page(StatusCode::OK, "My account", Some(v), body)
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

#[derive(Deserialize)]
struct TokenForm {
    csrf: String,
    name: String,
    expires: Option<String>,
}

fn csrf_ok(v: &Viewer, given: &str) -> bool {
    berth_identity::secret_eq(v.csrf.as_bytes(), given.as_bytes())
}

/// `POST /account/tokens`.
async fn create_token(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>, Form(f): Form<TokenForm>) -> Response {
    if !csrf_ok(&v, &f.csrf) {
        return denied(&v, "The form expired or came from another site; reload the page and try again.");
    }
    let req = TokenCreate { name: f.name, expires: f.expires.filter(|e| !e.trim().is_empty()), projects: None, actions: None };
    match s.core.create_personal_token(&v.principal.subject, &req, connect.map(|c| c.0 .0.ip())).await {
        Ok(created) => account_page(&s, &v, Some((created.token.name, created.secret))).await,
        Err(e) => page(crate::error::status_of(&e), "My account", Some(&v), html! { p.error role="alert" { (e.to_string()) } p { a href="/account" { "Back" } } }),
    }
}

/// `POST /account/tokens/{id}/revoke`.
async fn revoke_token(State(s): State<Arc<AppState>>, SignedIn(v): SignedIn, connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>, Path(id): Path<String>, Form(f): Form<CsrfForm>) -> Response {
    if !csrf_ok(&v, &f.csrf) {
        return denied(&v, "The form expired or came from another site; reload the page and try again.");
    }
    let user = v.principal.subject.clone();
    match s.core.revoke_user_token(&user, &id, &user, connect.map(|c| c.0 .0.ip())).await {
        Ok(()) => secured(Redirect::to("/account").into_response()),
        Err(e) => error_page(&e),
    }
}

/// `GET /static/berth.css`.
async fn stylesheet() -> Response {
    let mut r = ([(http::header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("berth.css")).into_response();
    r.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    r
}

/// The UI's routes (merged at the root of the application).
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(projects))
        .route("/login", get(login_page).post(login_submit))
        .route("/projects", post(create_project))
        .route("/projects/{name}", get(project))
        .route("/projects/{name}/settings", post(project_settings))
        .route("/projects/{name}/delete", get(delete_project_page).post(delete_project))
        .route("/projects/{name}/members", post(add_member))
        .route("/projects/{name}/members/remove", post(remove_member))
        .route("/projects/{name}/robots", get(robots).post(create_robot))
        .route("/projects/{name}/robots/delete", post(delete_robot))
        .route("/projects/{name}/robots/edit", post(edit_robot))
        .route("/rules/check", get(check_rule))
        .route("/tester", get(tester).post(tester_submit))
        .route("/audit", get(audit))
        .route("/audit.json", get(audit_json))
        .route("/identity-providers", get(providers).post(create_provider))
        .route("/system", get(system))
        .route("/system/gc", post(run_gc))
        .route("/account", get(account))
        .route("/account/tokens", post(create_token))
        .route("/account/tokens/{id}/revoke", post(revoke_token))
        .route("/static/berth.css", get(stylesheet))
        .route("/static/berth.js", get(script))
        .route("/repository", get(repository))
        .route("/artifact", get(artifact))
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
}
