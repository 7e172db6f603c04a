//! `/auth`: how people log in.
//!
//! - Browser: `GET /auth/oidc/login?idp=<name>&return_to=<path>` redirects to the identity
//!   provider's authorization request (code flow with PKCE, `state` and `nonce`);
//!   `GET /auth/oidc/callback` finishes it and sets the session cookie `berth_session` (HttpOnly,
//!   SameSite=Lax, Secure when Berth serves TLS or its external URL is https), backed by the
//!   metadata store so every replica accepts it; `POST /auth/logout` ends it (and sends the
//!   browser to the provider's end-session endpoint when it has one). Failures are a small HTML
//!   page that says what went wrong and what to do.
//! - CLI: `POST /auth/device` starts a device login (RFC 8628) at the provider, `POST
//!   /auth/device/poll` finishes it with a Berth credential; `POST /auth/login` trades a local
//!   user's password for one; `POST /auth/credential` gives the credential helper a short-lived
//!   registry password for a `berth login`. Without a device flow at the provider, `berth login`
//!   goes through the browser instead (RFC 8252): `/auth/oidc/login` with `cli_redirect` (its
//!   loopback listener) and `cli_challenge` ends with a redirect to the loopback carrying a
//!   one-time code, which the CLI trades with its verifier at `POST /auth/cli/exchange`.
//! - `GET /auth/providers` lists the providers people can log in through (the login page's
//!   buttons); `GET /auth/session` is the browser session's `whoami`.
//!
//! A translation layer: every decision is in `berth_core::people`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_core::admin::types::{DeviceLoginStarted, HelperCredential, LoginCredential, WhoAmI};
use berth_core::people::{CliLoopback, DevicePoll, WebLoginDone};
use berth_core::Error as CoreError;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::api::{AdminError, JsonBody};
use crate::auth::{self, Credentials, LoginError};
use crate::AppState;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "berth_session";

type AuthResult<T> = Result<T, AdminError>;

fn client_of(connect: &Option<axum::Extension<ConnectInfo<SocketAddr>>>) -> Option<IpAddr> {
    connect.as_ref().map(|c| c.0 .0.ip())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A small page for the browser's side of a login (no scripts, no external resources).
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{t} · Berth</title></head>\
         <body style=\"font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem\"><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    );
    let mut resp = (status, Html(html)).into_response();
    let h = resp.headers_mut();
    h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    h.insert("content-security-policy", http::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"));
    h.insert("x-frame-options", http::HeaderValue::from_static("DENY"));
    resp
}

fn failure_page(e: &CoreError) -> Response {
    let status = crate::error::status_of(e);
    page(
        status,
        "Login failed",
        &format!("<p>{}</p><p><a href=\"/\">Back to Berth</a> and try again; if it keeps failing, show this message to your administrator.</p>", escape(&e.to_string())),
    )
}

fn secure_cookies(state: &AppState) -> bool {
    state.config.tls || state.config.external_url.as_deref().is_some_and(|u| u.starts_with("https://"))
}

#[derive(Deserialize)]
struct LoginQuery {
    idp: Option<String>,
    return_to: Option<String>,
    /// `berth login` through the browser (RFC 8252): the CLI's loopback URL and its PKCE
    /// challenge.
    cli_redirect: Option<String>,
    cli_challenge: Option<String>,
}

/// `GET /auth/oidc/login?idp=corp`: to the identity provider.
async fn oidc_login(
    State(s): State<Arc<AppState>>,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let Some(idp) = q.idp.filter(|i| !i.is_empty()) else {
        return page(StatusCode::BAD_REQUEST, "Which identity provider?", "<p>Add <code>?idp=&lt;name&gt;</code>: the identity provider to log in through (<code>GET /auth/providers</code> lists them).</p>");
    };
    let callback = format!("{}/auth/oidc/callback", auth::base_url(&s, &headers));
    let cli = match (&q.cli_redirect, &q.cli_challenge) {
        (None, None) => None,
        (Some(r), Some(c)) => match CliLoopback::new(r, c) {
            Ok(cli) => Some(cli),
            Err(e) => return failure_page(&e),
        },
        _ => return failure_page(&CoreError::Invalid("give both cli_redirect and cli_challenge (berth login does)".into())),
    };
    match s.core.start_web_login(&idp, &callback, q.return_to.as_deref(), cli, client_of(&connect)).await {
        Ok(url) => {
            let mut r = Redirect::to(&url).into_response();
            r.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => failure_page(&e),
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /auth/oidc/callback`: the identity provider sends the browser back here.
async fn oidc_callback(State(s): State<Arc<AppState>>, connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>, Query(q): Query<CallbackQuery>) -> Response {
    if let Some(error) = q.error {
        let detail = q.error_description.map(|d| format!(": {}", crate::text::cap(&d, 300))).unwrap_or_default();
        return failure_page(&CoreError::Unauthenticated(format!("the identity provider ended the login with {}{detail}", crate::text::cap(&error, 64))));
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return failure_page(&CoreError::Invalid("the identity provider's answer has no code or state; start the login again".into()));
    };
    match s.core.finish_web_login(&state, &code, client_of(&connect)).await {
        Ok(WebLoginDone::Cli { redirect }) => {
            let mut r = Redirect::to(&redirect).into_response();
            r.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
            r
        }
        Ok(WebLoginDone::Session(session)) => {
            let max_age = (session.expires_at - berth_core::clock::now_secs()).max(0);
            let secure = if secure_cookies(&s) { "; Secure" } else { "" };
            let cookie = format!("{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}", session.cookie);
            let mut r = Redirect::to(&session.return_to).into_response();
            if let Ok(v) = http::HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(http::header::SET_COOKIE, v);
            }
            r.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => failure_page(&e),
    }
}

/// The value of the cookie `name`, if the request has one.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The session cookie's value, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, SESSION_COOKIE)
}

/// `POST /auth/logout`: ends the browser session here (every replica) and, when the identity
/// provider has an end-session endpoint, there too.
async fn logout(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let back = format!("{}/", auth::base_url(&s, &headers));
    let next = match session_cookie(&headers) {
        Some(c) => match s.core.end_web_session(&c, &back).await {
            Ok(next) => next,
            Err(e) => return failure_page(&e),
        },
        None => None,
    };
    let secure = if secure_cookies(&s) { "; Secure" } else { "" };
    let mut r = Redirect::to(next.as_deref().unwrap_or("/")).into_response();
    if let Ok(v) = http::HeaderValue::from_str(&format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}")) {
        r.headers_mut().insert(http::header::SET_COOKIE, v);
    }
    r
}

/// `GET /auth/logout`: a page with the logout button (logging out changes state: POST only).
async fn logout_page() -> Response {
    page(StatusCode::OK, "Log out", "<form method=\"post\" action=\"/auth/logout\"><button type=\"submit\">Log out of Berth</button></form>")
}

fn login_refusal(e: LoginError) -> AdminError {
    match e {
        LoginError::RateLimited { retry_after, message } => CoreError::RateLimited { message, retry_after }.into(),
        LoginError::Internal(e) => e.into(),
        LoginError::Busy => CoreError::Busy { message: auth::BUSY_MESSAGE.into(), retry_after: 1 }.into(),
        other => CoreError::Unauthenticated(other.message()).into(),
    }
}

/// `GET /auth/session`: who the browser session is.
async fn session(State(s): State<Arc<AppState>>, connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>, headers: HeaderMap) -> AuthResult<Json<WhoAmI>> {
    let cookie = session_cookie(&headers).ok_or_else(|| AdminError::from(CoreError::Unauthenticated("no browser session; log in at /auth/oidc/login".into())))?;
    let p = berth_core::auth::token_login(&s.core, &cookie, client_of(&connect), true).await.map_err(login_refusal)?;
    Ok(Json(s.core.whoami(&p).await?))
}

/// A provider people can log in through, as the login page lists it.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoginProviderView {
    pub name: String,
    #[serde(rename = "displayName")]
    pub display_name: String,
    /// Where the login button points.
    #[serde(rename = "loginUrl")]
    pub login_url: String,
}

/// `GET /auth/providers`.
async fn providers(State(s): State<Arc<AppState>>) -> AuthResult<Json<Vec<LoginProviderView>>> {
    let list = s.core.federation().login_providers().await.map_err(|e| AdminError::from(CoreError::internal("listing login providers", e)))?;
    Ok(Json(
        list.into_iter()
            .map(|(name, display_name)| LoginProviderView {
                login_url: format!("/auth/oidc/login?{}", serde_urlencoded::to_string([("idp", name.as_str())]).unwrap_or_default()),
                name,
                display_name,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceStart {
    idp: String,
}

/// `POST /auth/device` `{"idp": "corp"}`.
async fn device_start(
    State(s): State<Arc<AppState>>,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    JsonBody(req): JsonBody<DeviceStart, 4096>,
) -> AuthResult<Json<DeviceLoginStarted>> {
    Ok(Json(s.core.start_device_login(&req.idp, client_of(&connect)).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicePollRequest {
    handle: String,
}

/// `POST /auth/device/poll` `{"handle": "..."}`: 200 with the credential, or 202 with
/// `{"status": "pending", "interval": n}`.
async fn device_poll(
    State(s): State<Arc<AppState>>,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    JsonBody(req): JsonBody<DevicePollRequest, 4096>,
) -> AuthResult<Response> {
    Ok(match s.core.poll_device_login(&req.handle, client_of(&connect)).await? {
        DevicePoll::Pending { interval } => (StatusCode::ACCEPTED, Json(serde_json::json!({"status": "pending", "interval": interval}))).into_response(),
        DevicePoll::Done(c) => Json(c).into_response(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CliExchange {
    code: String,
    verifier: String,
}

/// `POST /auth/cli/exchange` `{"code", "verifier"}`: the end of a `berth login` through the
/// browser.
async fn cli_exchange(
    State(s): State<Arc<AppState>>,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    JsonBody(req): JsonBody<CliExchange, 4096>,
) -> AuthResult<Json<LoginCredential>> {
    Ok(Json(s.core.exchange_cli_code(&req.code, &req.verifier, client_of(&connect)).await?))
}

/// `POST /auth/login` with Basic credentials (a local user's password): a `berth login`
/// credential, so the CLI never stores the password.
async fn password_login(State(s): State<Arc<AppState>>, connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>, headers: HeaderMap) -> AuthResult<Json<LoginCredential>> {
    let client = client_of(&connect);
    let creds = auth::parse_authorization(&headers).map_err(|e| AdminError::from(CoreError::Unauthenticated(e.message)))?;
    let Credentials::Basic { username, password } = creds else {
        return Err(CoreError::Unauthenticated("send the user name and password as Basic credentials".into()).into());
    };
    let p = match auth::login(&s.core, &username, &password, client).await {
        Ok(p) => p,
        Err(e) => {
            auth::audit_login_failure(&s.core, Some(&username), &e, client);
            return Err(login_refusal(e));
        }
    };
    if p.kind != berth_identity::PrincipalKind::User {
        return Err(CoreError::Denied("only users log in with `berth login`; robots use their secret or OIDC token directly".into()).into());
    }
    Ok(Json(s.core.cli_login(&p.subject, client).await?))
}

/// `POST /auth/credential` with the `berth login` credential as Bearer: a short-lived registry
/// password for the credential helper.
async fn helper_credential(State(s): State<Arc<AppState>>, connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>, headers: HeaderMap) -> AuthResult<Json<HelperCredential>> {
    let client = client_of(&connect);
    let creds = auth::parse_authorization(&headers).map_err(|e| AdminError::from(CoreError::Unauthenticated(e.message)))?;
    let Credentials::Bearer(token) = creds else {
        return Err(CoreError::Unauthenticated("send the credential of `berth login` as Bearer".into()).into());
    };
    let p = match berth_core::auth::token_login(&s.core, &token, client, false).await {
        Ok(p) => p,
        Err(e) => {
            auth::audit_login_failure(&s.core, None, &e, client);
            return Err(login_refusal(e));
        }
    };
    let id = p.origin.as_ref().and_then(|o| o.token.clone()).unwrap_or_default();
    Ok(Json(s.core.helper_credential(&p.subject, &id).await?))
}

/// The `/auth` routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/oidc/login", get(oidc_login))
        .route("/oidc/callback", get(oidc_callback))
        .route("/logout", get(logout_page).post(logout))
        .route("/session", get(session))
        .route("/providers", get(providers))
        .route("/device", post(device_start))
        .route("/device/poll", post(device_poll))
        .route("/login", post(password_login))
        .route("/cli/exchange", post(cli_exchange))
        .route("/credential", post(helper_credential))
}
