//! The admin API under `/api/v1`: projects, robot accounts, identity providers, users, the audit
//! log, token explain and declarative apply; and for every user `whoami` and their own personal
//! access tokens. JSON in and out. Credentials: Basic (a password, or a Berth token as the
//! password), a Berth token as Bearer, or an ID token of a login identity provider as Bearer.
//! The OpenAPI document is served at `/api/v1/openapi.json`.
//!
//! A translation layer: each handler parses the path, query and body into the command's typed
//! request ([`types`], shared with the CLI), calls the command on [`berth_core::Core`] (where
//! the admin logic and every store access live: `berth_core::admin`), and renders the answer
//! with its status. Errors are the core's, rendered by [`AdminError`]'s `From`, with the status
//! decided by [`crate::error::status_of`].
//!
//! Credentials come before bodies: every handler takes the [`Admin`] or [`Authenticated`]
//! extractor first, which authenticates from the request head alone, so a caller who may not
//! call gets 401/403 before a byte of its body is read.
//!
//! Delegated administration: a project's members and robots (federated ones with their claim
//! rules too) and its visibility are managed by its project admins (a user, or through a group)
//! as well as by system administrators; `Core::require_in_project` decides per endpoint from the
//! caller's role there. Everything else needs a system administrator. Bodies are then read by [`JsonBody`], with a small limit
//! per endpoint ([`DOCUMENT_LIMIT`], [`APPLY_LIMIT`]); a larger body is 413 with a JSON error.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_access::Capability;
use berth_core::admin::{AuditFilter, IdentityProviderTest, RobotFilter};
use berth_core::Error as CoreError;
use berth_identity::federation::{Explanation, ProviderSpec};
use http::request::Parts;
use http::{HeaderMap, StatusCode};
use utoipa::OpenApi;

use crate::auth::{self, Credentials, LoginError};
use crate::AppState;

pub use berth_core::admin::types;
/// The document checks shared with `berth apply` and the fuzz target (they live in the core).
pub use berth_core::admin::{outside_project, robot_record, validate_document, ValidatedDocument};
/// Issuer comparison (for the fuzz target's oracle).
pub use berth_identity::federation::issuer;
use types::*;

/// The largest body of an ordinary admin document (a project, robot, identity provider, user or
/// a token to explain): 64 KiB. A robot is well under 1 KiB; an identity provider with inline
/// JWKS keys and a CA bundle is a few KiB; a token to explain is refused above 16 KiB anyway.
pub const DOCUMENT_LIMIT: usize = 64 << 10;
/// The largest `apply` document: 1 MiB, about 3,000 robots with a few rules each. Larger
/// configurations can be applied in several files (apply never deletes what a file omits).
pub const APPLY_LIMIT: usize = 1 << 20;

/// An admin API error: status, a code and a message a user can act on.
#[derive(Debug)]
pub struct AdminError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub headers: Vec<(http::HeaderName, String)>,
}

impl AdminError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> AdminError {
        AdminError { status, code, message: message.into(), headers: vec![] }
    }
    fn internal(context: &'static str, e: impl std::fmt::Display) -> AdminError {
        CoreError::internal(context, e).into()
    }
}

/// The admin API's form of an application error: the status from [`crate::error::status_of`]
/// (the one place statuses are decided), a code, the message, and `Retry-After` or
/// `WWW-Authenticate` where they apply.
impl From<CoreError> for AdminError {
    fn from(e: CoreError) -> AdminError {
        let code = match &e {
            CoreError::Invalid(_) => "INVALID",
            CoreError::NotFound(_) => "NOT_FOUND",
            CoreError::Conflict(_) => "CONFLICT",
            CoreError::Unauthenticated(_) => "UNAUTHORIZED",
            CoreError::Denied(_) => "DENIED",
            CoreError::RateLimited { .. } | CoreError::Busy { .. } => "TOOMANYREQUESTS",
            CoreError::Unavailable(_) => "UNAVAILABLE",
            CoreError::Upstream(_) => "UPSTREAM",
            CoreError::Internal { .. } => "INTERNAL",
            _ => "INVALID",
        };
        let mut out = AdminError::new(crate::error::status_of(&e), code, e.to_string());
        match &e {
            CoreError::RateLimited { retry_after, .. } | CoreError::Busy { retry_after, .. } => {
                out.headers.push((http::header::RETRY_AFTER, retry_after.to_string()));
            }
            CoreError::Unauthenticated(_) => out.headers.push((http::header::WWW_AUTHENTICATE, ADMIN_CHALLENGE.into())),
            _ => {}
        }
        out
    }
}

/// The challenge of a 401 from the admin API.
const ADMIN_CHALLENGE: &str = "Basic realm=\"berth-admin\"";

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let body = ErrorBody { errors: vec![ErrorEntry { code: self.code.into(), message: self.message }] };
        let mut resp = (self.status, Json(body)).into_response();
        for (k, v) in self.headers {
            if let Ok(v) = http::HeaderValue::from_str(&v) {
                resp.headers_mut().append(k, v);
            }
        }
        resp
    }
}

type AdminResult<T> = Result<T, AdminError>;

/// An authenticated administrator (the user name). As the first extractor of every handler it
/// runs before any body is read: callers who fail get their answer from the request head alone.
#[derive(Debug, Clone)]
pub struct Admin(pub String);

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let client: Option<IpAddr> = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        require_admin(state, &parts.headers, client).await.map(Admin)
    }
}

/// A JSON body of at most `LIMIT` bytes, with the admin API's JSON errors: 413 above the limit
/// (at once when `Content-Length` declares more), 415 without a JSON content type, 400 for
/// malformed JSON, 422 for JSON of the wrong shape. Always after [`Admin`] in a handler.
#[derive(Debug)]
pub struct JsonBody<T, const LIMIT: usize = DOCUMENT_LIMIT>(pub T);

fn too_large(limit: usize) -> AdminError {
    AdminError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "TOO_LARGE",
        format!("the request body is larger than this endpoint accepts ({} KiB); send a smaller document (apply files can be split)", limit >> 10),
    )
}

impl<S: Send + Sync, T: serde::de::DeserializeOwned, const LIMIT: usize> FromRequest<S> for JsonBody<T, LIMIT> {
    type Rejection = AdminError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers();
        let json = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !json {
            return Err(AdminError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let declared = headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > LIMIT as u64) {
            return Err(too_large(LIMIT));
        }
        let bytes = match http_body_util::BodyExt::collect(http_body_util::Limited::new(req.into_body(), LIMIT)).await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return Err(too_large(LIMIT)),
            Err(e) => return Err(AdminError::new(StatusCode::BAD_REQUEST, "INVALID", format!("cannot read the request body: {e}"))),
        };
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(rejection) => Err(AdminError::new(rejection.status(), "INVALID", rejection.body_text())),
        }
    }
}

/// Authenticates an admin API call from the request head: Basic credentials (a user's password,
/// or a Berth token as the password), a Berth token as Bearer (personal access token, `berth
/// login`), or an ID token of a human-login identity provider as Bearer. Refusals are
/// application errors (`Unauthenticated`, `RateLimited`), so their statuses come from
/// `status_of` too.
async fn authenticate(state: &AppState, headers: &HeaderMap, client: Option<IpAddr>) -> AdminResult<Arc<auth::Principal>> {
    let creds = auth::parse_authorization(headers).map_err(|e| CoreError::Unauthenticated(e.message))?;
    let (name, result) = match creds {
        Credentials::Basic { username, password } => {
            let r = auth::login(&state.core, &username, &password, client).await;
            (Some(username), r)
        }
        Credentials::Bearer(token) if berth_core::people::looks_like_token(&token) => {
            (None, berth_core::auth::token_login(&state.core, &token, client, false).await)
        }
        Credentials::Bearer(token) => match state.core.federation().login_provider_for_token(&token).await {
            Some(provider) => (None, berth_core::auth::id_token_login(&state.core, &provider, &token).await),
            None => {
                return Err(CoreError::Unauthenticated(
                    "the admin API takes a Berth token (berth login, berth token create) or an ID token of a login identity provider as Bearer, or Basic credentials".into(),
                )
                .into())
            }
        },
        Credentials::None => {
            return Err(CoreError::Unauthenticated(
                "the admin API needs credentials: berth login, a personal access token (Bearer), or BERTH_USERNAME and BERTH_PASSWORD".into(),
            )
            .into())
        }
    };
    match result {
        Ok(p) => Ok(p),
        Err(LoginError::RateLimited { retry_after, message }) => Err(CoreError::RateLimited { message, retry_after }.into()),
        Err(LoginError::Internal(e)) => Err(e.into()),
        Err(LoginError::Busy) => Err(CoreError::Busy { message: auth::BUSY_MESSAGE.into(), retry_after: 1 }.into()),
        Err(e) => {
            auth::audit_login_failure(&state.core, name.as_deref(), &e, client);
            Err(CoreError::Unauthenticated(e.message()).into())
        }
    }
}

/// Every admin call needs an administrator: a local admin, a person in their identity
/// provider's admin group, or an unrestricted token of one.
async fn require_admin(state: &AppState, headers: &HeaderMap, client: Option<IpAddr>) -> AdminResult<String> {
    let p = authenticate(state, headers, client).await?;
    if p.permissions.admin {
        return Ok(p.subject.clone());
    }
    let restricted = p.origin.as_ref().is_some_and(|o| o.token.is_some());
    Err(CoreError::Denied(if restricted && p.kind == berth_identity::PrincipalKind::User {
        format!("{} is not an administrator, or this token is restricted to some projects or actions (administration needs an unrestricted token)", p.subject)
    } else {
        format!("{} is not an administrator", p.subject)
    })
    .into())
}

/// Any authenticated caller (whoami, a user's own tokens). As the first extractor it runs
/// before any body is read.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Arc<auth::Principal>);

impl FromRequestParts<Arc<AppState>> for Authenticated {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let client: Option<IpAddr> = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        authenticate(state, &parts.headers, client).await.map(Authenticated)
    }
}

impl Authenticated {
    /// The caller as a user (robots have no personal tokens).
    fn user(&self) -> AdminResult<&str> {
        if self.0.kind == berth_identity::PrincipalKind::User {
            Ok(&self.0.subject)
        } else {
            Err(CoreError::Denied("only users have personal access tokens; robots use their secret or their OIDC token".into()).into())
        }
    }
}

fn client_ip(connect: &Option<axum::Extension<ConnectInfo<SocketAddr>>>) -> Option<IpAddr> {
    connect.as_ref().map(|c| c.0 .0.ip())
}

// ---------------------------------------------------------------- whoami, tokens

#[utoipa::path(get, path = "/api/v1/whoami", tag = "tokens", responses((status = 200, body = WhoAmI)))]
async fn whoami(State(s): State<Arc<AppState>>, who: Authenticated) -> AdminResult<Json<WhoAmI>> {
    Ok(Json(s.core.whoami(&who.0).await?))
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", responses((status = 200, body = Vec<TokenView>)))]
async fn list_tokens(State(s): State<Arc<AppState>>, who: Authenticated) -> AdminResult<Json<Vec<TokenView>>> {
    Ok(Json(s.core.list_user_tokens(who.user()?).await?))
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = TokenCreate,
    responses((status = 201, body = TokenCreated), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_token(
    State(s): State<Arc<AppState>>,
    who: Authenticated,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    JsonBody(req): JsonBody<TokenCreate>,
) -> AdminResult<Response> {
    let user = who.user()?.to_owned();
    Ok((StatusCode::CREATED, Json(s.core.create_personal_token(&user, &req, client_ip(&connect)).await?)).into_response())
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_token(
    State(s): State<Arc<AppState>>,
    who: Authenticated,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    Path(id): Path<String>,
) -> AdminResult<StatusCode> {
    let user = who.user()?.to_owned();
    s.core.revoke_user_token(&user, &id, &user, client_ip(&connect)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/users/{name}/tokens", tag = "users", responses((status = 200, body = Vec<TokenView>)))]
async fn list_user_tokens(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>) -> AdminResult<Json<Vec<TokenView>>> {
    Ok(Json(s.core.list_user_tokens(&name).await?))
}

#[utoipa::path(delete, path = "/api/v1/users/{name}/tokens/{id}", tag = "users", responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_user_token(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    Path((name, id)): Path<(String, String)>,
) -> AdminResult<StatusCode> {
    s.core.revoke_user_token(&name, &id, &admin.0, client_ip(&connect)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- projects

#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", responses((status = 200, body = Vec<ProjectView>)))]
async fn list_projects(State(s): State<Arc<AppState>>, _admin: Admin) -> AdminResult<Json<Vec<ProjectView>>> {
    Ok(Json(s.core.list_projects().await?))
}

#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", request_body = ProjectSpec,
    responses((status = 201, body = ProjectView), (status = 409, body = ErrorBody)))]
async fn create_project(State(s): State<Arc<AppState>>, _admin: Admin, JsonBody(spec): JsonBody<ProjectSpec>) -> AdminResult<Response> {
    Ok((StatusCode::CREATED, Json(s.core.create_project(&spec).await?)).into_response())
}

#[utoipa::path(get, path = "/api/v1/projects/{name}", tag = "projects", responses((status = 200, body = ProjectView), (status = 404, body = ErrorBody)))]
async fn get_project(State(s): State<Arc<AppState>>, who: Authenticated, Path(name): Path<String>) -> AdminResult<Json<ProjectView>> {
    s.core.require_in_project(&who.0, &name, Capability::Read).await?;
    Ok(Json(s.core.get_project(&name).await?))
}

#[utoipa::path(put, path = "/api/v1/projects/{name}", tag = "projects", request_body = ProjectSpec, responses((status = 200, body = ProjectView)))]
async fn put_project(State(s): State<Arc<AppState>>, who: Authenticated, Path(name): Path<String>, req: Request) -> AdminResult<Json<ProjectView>> {
    // A project admin changes their project; creating one is for system administrators. Both
    // decided before the body is read.
    if s.core.get_project(&name).await.is_err() && !who.0.permissions.admin {
        return Err(CoreError::Denied(format!("{} is not an administrator: only administrators create projects", who.0.subject)).into());
    }
    s.core.require_in_project(&who.0, &name, Capability::EditProject).await?;
    let JsonBody(spec) = JsonBody::<ProjectSpec>::from_request(req, &()).await?;
    Ok(Json(s.core.put_project(&name, &spec).await?))
}

#[utoipa::path(delete, path = "/api/v1/projects/{name}", tag = "projects", responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_project(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>) -> AdminResult<StatusCode> {
    s.core.delete_project(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- members

#[utoipa::path(get, path = "/api/v1/projects/{name}/members", tag = "projects", responses((status = 200, body = Vec<MemberView>), (status = 404, body = ErrorBody)))]
async fn list_members(State(s): State<Arc<AppState>>, who: Authenticated, Path(name): Path<String>) -> AdminResult<Json<Vec<MemberView>>> {
    s.core.require_in_project(&who.0, &name, Capability::ListMembers).await?;
    Ok(Json(s.core.list_members(&name).await?))
}

#[utoipa::path(post, path = "/api/v1/projects/{name}/members", tag = "projects", request_body = MemberSpec,
    responses((status = 200, body = MemberView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn put_member(State(s): State<Arc<AppState>>, who: Authenticated, Path(name): Path<String>, req: Request) -> AdminResult<Json<MemberView>> {
    s.core.require_in_project(&who.0, &name, Capability::ManageMembers).await?;
    let JsonBody(spec) = JsonBody::<MemberSpec>::from_request(req, &()).await?;
    Ok(Json(s.core.put_member(&name, &spec).await?))
}

#[utoipa::path(delete, path = "/api/v1/projects/{name}/members/{kind}/{member}", tag = "projects", responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_member(State(s): State<Arc<AppState>>, who: Authenticated, Path((name, kind, member)): Path<(String, String, String)>) -> AdminResult<StatusCode> {
    s.core.require_in_project(&who.0, &name, Capability::ManageMembers).await?;
    s.core.delete_member(&name, &kind, &member).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- robots

#[utoipa::path(get, path = "/api/v1/robots", tag = "robots", params(RobotFilter), responses((status = 200, body = Vec<RobotView>)))]
async fn list_robots(State(s): State<Arc<AppState>>, who: Authenticated, Query(f): Query<RobotFilter>) -> AdminResult<Json<Vec<RobotView>>> {
    match (s.core.projects_where(&who.0, Capability::ManageRobots).await?, &f.project) {
        (None, _) => Ok(Json(s.core.list_robots(&f).await?)),
        (Some(_), Some(p)) => {
            s.core.require_in_project(&who.0, p, Capability::ManageRobots).await?;
            Ok(Json(s.core.list_robots(&f).await?))
        }
        // A project admin sees the robots of the projects they administer.
        (Some(projects), None) => {
            let mut all = Vec::new();
            for p in projects {
                all.extend(s.core.list_robots(&RobotFilter { project: Some(p) }).await?);
            }
            Ok(Json(all))
        }
    }
}

#[utoipa::path(post, path = "/api/v1/robots", tag = "robots", request_body = RobotSpec,
    responses((status = 201, body = RobotCreated), (status = 409, body = ErrorBody)))]
async fn create_robot(State(s): State<Arc<AppState>>, who: Authenticated, req: Request) -> AdminResult<Response> {
    // Before the body: the caller administers some project (the body names which).
    if s.core.projects_where(&who.0, Capability::ManageRobots).await?.is_some_and(|p| p.is_empty()) {
        return Err(CoreError::Denied(format!("{} is not an administrator, nor a project admin anywhere: robots are managed by their project's admins", who.0.subject)).into());
    }
    let JsonBody(spec) = JsonBody::<RobotSpec>::from_request(req, &()).await?;
    may_manage_robot(&s, &who, robot_record(&spec)?.project.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(s.core.create_robot(&spec).await?)).into_response())
}

#[utoipa::path(get, path = "/api/v1/robots/{name}", tag = "robots", responses((status = 200, body = RobotView), (status = 404, body = ErrorBody)))]
async fn get_robot(State(s): State<Arc<AppState>>, who: Authenticated, Path(name): Path<String>) -> AdminResult<Json<RobotView>> {
    let robot = stored_robot_project(&s, &who, &name).await?;
    Ok(Json(robot))
}

#[utoipa::path(put, path = "/api/v1/robots/{name}", tag = "robots", request_body = RobotSpec, responses((status = 200, body = RobotCreated)))]
async fn put_robot(State(s): State<Arc<AppState>>, who: Authenticated, Path(name): Path<String>, req: Request) -> AdminResult<Json<RobotCreated>> {
    // Before the body: the robot as it is (if it exists), else the project its name says.
    let project = match s.core.get_robot(&name).await {
        Ok(existing) => existing.project,
        Err(_) => berth_access::RobotName::parse(&name).ok().and_then(|n| n.project().map(str::to_owned)),
    };
    may_manage_robot(&s, &who, project.as_deref()).await?;
    // After it: the robot as it will be.
    let JsonBody(spec) = JsonBody::<RobotSpec>::from_request(req, &()).await?;
    may_manage_robot(&s, &who, robot_record(&spec)?.project.as_deref()).await?;
    Ok(Json(s.core.put_robot(&name, &spec).await?))
}

#[utoipa::path(post, path = "/api/v1/robots/{name}/secret", tag = "robots", responses((status = 200, body = RobotCreated)))]
async fn regenerate_secret(State(s): State<Arc<AppState>>, who: Authenticated, Path(name): Path<String>) -> AdminResult<Json<RobotCreated>> {
    stored_robot_project(&s, &who, &name).await?;
    Ok(Json(s.core.regenerate_robot_secret(&name).await?))
}

#[utoipa::path(delete, path = "/api/v1/robots/{name}", tag = "robots", responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_robot(State(s): State<Arc<AppState>>, who: Authenticated, Path(name): Path<String>) -> AdminResult<StatusCode> {
    stored_robot_project(&s, &who, &name).await?;
    s.core.delete_robot(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Project robots are managed by their project's admins; robots outside projects by system
/// administrators only.
async fn may_manage_robot(s: &AppState, who: &Authenticated, project: Option<&str>) -> AdminResult<()> {
    match project {
        Some(p) => Ok(s.core.require_in_project(&who.0, p, Capability::ManageRobots).await?),
        None if who.0.permissions.admin => Ok(()),
        None => Err(CoreError::Denied(format!("{} is not an administrator: robots outside a project are managed by administrators", who.0.subject)).into()),
    }
}

/// A stored robot, if the caller may manage it. Robots the caller may not see answer as
/// missing would be nicer, but names of project robots carry their project anyway.
async fn stored_robot_project(s: &AppState, who: &Authenticated, name: &str) -> AdminResult<RobotView> {
    let robot = s.core.get_robot(name).await?;
    may_manage_robot(s, who, robot.project.as_deref()).await?;
    Ok(robot)
}

// ---------------------------------------------------------------- identity providers

#[utoipa::path(get, path = "/api/v1/identity-providers", tag = "identity providers", responses((status = 200, body = Vec<IdentityProviderView>)))]
async fn list_idps(State(s): State<Arc<AppState>>, _admin: Admin) -> AdminResult<Json<Vec<IdentityProviderView>>> {
    Ok(Json(s.core.list_identity_providers().await?))
}

#[utoipa::path(post, path = "/api/v1/identity-providers", tag = "identity providers", request_body = Object,
    responses((status = 201, body = IdentityProviderView), (status = 409, body = ErrorBody)))]
async fn create_idp(State(s): State<Arc<AppState>>, _admin: Admin, JsonBody(spec): JsonBody<ProviderSpec>) -> AdminResult<Response> {
    Ok((StatusCode::CREATED, Json(s.core.create_identity_provider(&spec).await?)).into_response())
}

#[utoipa::path(get, path = "/api/v1/identity-providers/{name}", tag = "identity providers", responses((status = 200, body = IdentityProviderView), (status = 404, body = ErrorBody)))]
async fn get_idp(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>) -> AdminResult<Json<IdentityProviderView>> {
    Ok(Json(s.core.get_identity_provider(&name).await?))
}

#[utoipa::path(put, path = "/api/v1/identity-providers/{name}", tag = "identity providers", request_body = Object, responses((status = 200, body = IdentityProviderView)))]
async fn put_idp(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>, JsonBody(spec): JsonBody<ProviderSpec>) -> AdminResult<Json<IdentityProviderView>> {
    Ok(Json(s.core.put_identity_provider(&name, &spec).await?))
}

#[utoipa::path(delete, path = "/api/v1/identity-providers/{name}", tag = "identity providers", responses((status = 204), (status = 409, body = ErrorBody)))]
async fn delete_idp(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>) -> AdminResult<StatusCode> {
    s.core.delete_identity_provider(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/identity-providers/{name}/test", tag = "identity providers", responses((status = 200, body = Object)))]
async fn test_idp(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>) -> AdminResult<Json<IdentityProviderTest>> {
    Ok(Json(s.core.test_identity_provider(&name).await?))
}

// ---------------------------------------------------------------- users

#[utoipa::path(get, path = "/api/v1/users", tag = "users", responses((status = 200, body = Vec<UserView>)))]
async fn list_users(State(s): State<Arc<AppState>>, _admin: Admin) -> AdminResult<Json<Vec<UserView>>> {
    Ok(Json(s.core.list_users().await?))
}

#[utoipa::path(get, path = "/api/v1/users/{name}", tag = "users", responses((status = 200, body = UserView), (status = 404, body = ErrorBody)))]
async fn get_user(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>) -> AdminResult<Json<UserView>> {
    Ok(Json(s.core.get_user(&name).await?))
}

#[utoipa::path(put, path = "/api/v1/users/{name}", tag = "users", request_body = UserSpec,
    responses((status = 200, body = UserView), (status = 201, body = UserView), (status = 409, body = ErrorBody, description = "the last enabled admin would be disabled or lose its admin rights")))]
async fn put_user(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>, JsonBody(spec): JsonBody<UserSpec>) -> AdminResult<Response> {
    let saved = s.core.put_user(&name, spec).await?;
    let status = if saved.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(saved.user)).into_response())
}

#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "users",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the last enabled admin")))]
async fn delete_user(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>) -> AdminResult<StatusCode> {
    s.core.delete_user(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- audit, explain

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditFilter), responses((status = 200, body = Vec<AuditEventView>)))]
async fn audit(State(s): State<Arc<AppState>>, _admin: Admin, Query(f): Query<AuditFilter>) -> AdminResult<Json<Vec<AuditEventView>>> {
    Ok(Json(s.core.query_audit(&f).await?))
}

#[utoipa::path(post, path = "/api/v1/token/explain", tag = "tokens", request_body = ExplainRequest, responses((status = 200, body = Object)))]
async fn explain(State(s): State<Arc<AppState>>, _admin: Admin, JsonBody(req): JsonBody<ExplainRequest>) -> AdminResult<Json<Explanation>> {
    Ok(Json(s.core.explain_token(&req.token).await))
}

// ---------------------------------------------------------------- apply

#[utoipa::path(post, path = "/api/v1/apply", tag = "apply", request_body = ApplyDocument, responses((status = 200, body = ApplyReport)))]
async fn apply(State(s): State<Arc<AppState>>, _admin: Admin, JsonBody(doc): JsonBody<ApplyDocument, APPLY_LIMIT>) -> AdminResult<Json<ApplyReport>> {
    Ok(Json(s.core.apply(&doc).await?))
}

// ---------------------------------------------------------------- router and OpenAPI

#[derive(OpenApi)]
#[openapi(
    info(title = "Berth admin API", description = "Projects, robot accounts, identity providers (workload identity federation), local users, audit log, token explain and declarative apply. Calls take a Berth token (berth login, a personal access token) or an ID token of a login identity provider as Bearer, or Basic credentials; everything but whoami and the caller's own tokens needs an administrator. Credentials are checked before the request body is read. Bodies are limited to 64 KiB (1 MiB for /apply); larger ones get 413."),
    paths(
        list_projects, create_project, get_project, put_project, delete_project, list_members, put_member, delete_member,
        list_robots, create_robot, get_robot, put_robot, regenerate_secret, delete_robot,
        list_idps, create_idp, get_idp, put_idp, delete_idp, test_idp,
        list_users, get_user, put_user, delete_user, list_user_tokens, revoke_user_token,
        whoami, list_tokens, create_token, revoke_token,
        audit, explain, apply
    ),
    components(schemas(ProjectSpec, ProjectView, MemberSpec, MemberView, RobotSpec, RobotView, RobotCreated, IdentityProviderView, UserView, UserSpec, TokenCreate, TokenView, TokenCreated, WhoAmI, ProjectRole, AuditEventView, ExplainRequest, ApplyDocument, ApplyMember, ApplyReport, Change, ErrorBody, ErrorEntry))
)]
pub struct ApiDoc;

async fn openapi() -> Response {
    match ApiDoc::openapi().to_pretty_json() {
        Ok(json) => ([(http::header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => AdminError::internal("rendering the OpenAPI document", e).into_response(),
    }
}

async fn not_found() -> AdminError {
    AdminError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such admin API endpoint; see /api/v1/openapi.json")
}

/// The `/api/v1` routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/projects", get(list_projects).post(create_project))
        .route("/projects/{name}", get(get_project).put(put_project).delete(delete_project))
        .route("/projects/{name}/members", get(list_members).post(put_member))
        .route("/projects/{name}/members/{kind}/{member}", axum::routing::delete(delete_member))
        .route("/robots", get(list_robots).post(create_robot))
        .route("/robots/{name}", get(get_robot).put(put_robot).delete(delete_robot))
        .route("/robots/{name}/secret", post(regenerate_secret))
        .route("/identity-providers", get(list_idps).post(create_idp))
        .route("/identity-providers/{name}", get(get_idp).put(put_idp).delete(delete_idp))
        .route("/identity-providers/{name}/test", post(test_idp))
        .route("/users", get(list_users))
        .route("/users/{name}", get(get_user).put(put_user).delete(delete_user))
        .route("/users/{name}/tokens", get(list_user_tokens))
        .route("/users/{name}/tokens/{id}", axum::routing::delete(revoke_user_token))
        .route("/whoami", get(whoami))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/audit", get(audit))
        .route("/token/explain", post(explain))
        .route("/apply", post(apply))
        .fallback(not_found)
}
