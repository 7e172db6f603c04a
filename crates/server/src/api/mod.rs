//! The admin API under `/api/v1`: projects, robot accounts, identity providers, local users, the
//! audit log, token explain and declarative apply. JSON in and out; every call needs an admin's
//! Basic credentials. The OpenAPI document is served at `/api/v1/openapi.json`. Handlers convert
//! the wire types of [`types`] to store records and back; the checks live in `berth-access`,
//! `berth-claims` and `berth-identity`.
//!
//! Credentials come before bodies: every handler takes the [`Admin`] extractor first, which
//! authenticates from the request head alone, so a caller who is not an admin gets 401/403
//! before a byte of its body is read. Bodies are then read by [`JsonBody`], with a small limit
//! per endpoint ([`DOCUMENT_LIMIT`], [`APPLY_LIMIT`]); a larger body is 413 with a JSON error.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_access::RobotName;
use berth_identity::federation::{Provider, ProviderSpec};
use berth_meta::{AuditQuery, DeleteOutcome, IdentityProviderRecord, ProjectRecord, RobotRecord, UserRecord};
use http::request::Parts;
use http::{HeaderMap, StatusCode};
use utoipa::OpenApi;

use crate::auth::{self, Credentials, LoginError};
use crate::AppState;

pub use berth_core::admin::types;
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
    fn invalid(message: impl Into<String>) -> AdminError {
        AdminError::new(StatusCode::BAD_REQUEST, "INVALID", message)
    }
    fn not_found(what: &str, name: &str) -> AdminError {
        AdminError::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("{what} {name:?} does not exist"))
    }
    fn conflict(message: impl Into<String>) -> AdminError {
        AdminError::new(StatusCode::CONFLICT, "CONFLICT", message)
    }
    fn internal(context: &str, e: impl std::fmt::Display) -> AdminError {
        tracing::error!(error = %e, "{context}");
        AdminError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", format!("internal error while {context}; see the server log"))
    }
}

impl From<berth_meta::MetaError> for AdminError {
    fn from(e: berth_meta::MetaError) -> Self {
        match e {
            berth_meta::MetaError::Conflict(m) => AdminError::conflict(m),
            other => AdminError::internal("accessing the metadata store", other),
        }
    }
}

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

/// Every admin call needs a local admin's Basic credentials.
async fn require_admin(state: &AppState, headers: &HeaderMap, client: Option<IpAddr>) -> AdminResult<String> {
    let unauthorized = |m: String| {
        let mut e = AdminError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", m);
        e.headers.push((http::header::WWW_AUTHENTICATE, "Basic realm=\"berth-admin\"".into()));
        e
    };
    let creds = auth::parse_authorization(headers).map_err(|e| unauthorized(e.message))?;
    let Credentials::Basic { username, password } = creds else {
        return Err(unauthorized(
            "the admin API needs an admin's Basic credentials (berth login, or BERTH_USERNAME and BERTH_PASSWORD)".into(),
        ));
    };
    match auth::login(&state.core, &username, &password, client).await {
        Ok(p) if p.permissions.admin => Ok(username),
        Ok(_) => Err(AdminError::new(StatusCode::FORBIDDEN, "DENIED", format!("{username} is not an administrator"))),
        Err(LoginError::RateLimited { retry_after, message }) => {
            let mut e = AdminError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message);
            e.headers.push((http::header::RETRY_AFTER, retry_after.to_string()));
            Err(e)
        }
        Err(LoginError::Internal(e)) => Err(AdminError::internal("logging in", e)),
        Err(e) => {
            auth::audit_login_failure(&state.core, Some(&username), &e, client);
            Err(unauthorized(e.message()))
        }
    }
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn parse_time(field: &str, s: &str) -> AdminResult<i64> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp())
        .map_err(|e| AdminError::invalid(format!("{field} {s:?} is not an RFC 3339 time like 2026-12-31T23:59:59Z: {e}")))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Makes this process see an admin change at once (other replicas see it within a second).
async fn changed(state: &AppState) {
    if let Err(e) = state.federation().reload_now().await {
        tracing::warn!(error = %e, "reloading federation configuration");
    }
}

// ---------------------------------------------------------------- projects

fn project_view(p: &ProjectRecord) -> ProjectView {
    ProjectView { name: p.name.clone(), public: p.public, created_at: rfc3339(p.created_at) }
}

#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", responses((status = 200, body = Vec<ProjectView>)))]
async fn list_projects(State(s): State<Arc<AppState>>, _admin: Admin) -> AdminResult<Json<Vec<ProjectView>>> {
    Ok(Json(s.meta.list_projects().await?.iter().map(project_view).collect()))
}

#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", request_body = ProjectSpec,
    responses((status = 201, body = ProjectView), (status = 409, body = ErrorBody)))]
async fn create_project(State(s): State<Arc<AppState>>, _admin: Admin, JsonBody(spec): JsonBody<ProjectSpec>) -> AdminResult<Response> {
    berth_access::validate_project_name(&spec.name).map_err(AdminError::invalid)?;
    let rec = ProjectRecord { name: spec.name.clone(), public: spec.public, created_at: now() };
    if !s.meta.create_project(&rec).await? {
        return Err(AdminError::conflict(format!("project {:?} already exists", spec.name)));
    }
    changed(&s).await;
    Ok((StatusCode::CREATED, Json(project_view(&rec))).into_response())
}

#[utoipa::path(get, path = "/api/v1/projects/{name}", tag = "projects", responses((status = 200, body = ProjectView), (status = 404, body = ErrorBody)))]
async fn get_project(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>) -> AdminResult<Json<ProjectView>> {
    let p = s.meta.get_project(&name).await?.ok_or_else(|| AdminError::not_found("project", &name))?;
    Ok(Json(project_view(&p)))
}

#[utoipa::path(put, path = "/api/v1/projects/{name}", tag = "projects", request_body = ProjectSpec, responses((status = 200, body = ProjectView)))]
async fn put_project(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>, JsonBody(spec): JsonBody<ProjectSpec>) -> AdminResult<Json<ProjectView>> {
    if spec.name != name {
        return Err(AdminError::invalid(format!("the body names project {:?} but the URL {name:?}", spec.name)));
    }
    berth_access::validate_project_name(&name).map_err(AdminError::invalid)?;
    s.meta.put_project(&ProjectRecord { name: name.clone(), public: spec.public, created_at: now() }).await?;
    changed(&s).await;
    let p = s.meta.get_project(&name).await?.ok_or_else(|| AdminError::not_found("project", &name))?;
    Ok(Json(project_view(&p)))
}

#[utoipa::path(delete, path = "/api/v1/projects/{name}", tag = "projects", responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_project(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>) -> AdminResult<StatusCode> {
    match s.meta.delete_project(&name).await? {
        DeleteOutcome::Deleted => {
            changed(&s).await;
            Ok(StatusCode::NO_CONTENT)
        }
        DeleteOutcome::NotFound => Err(AdminError::not_found("project", &name)),
        DeleteOutcome::InUse(why) => Err(AdminError::conflict(why)),
    }
}

// ---------------------------------------------------------------- robots

fn robot_view(r: &RobotRecord) -> RobotView {
    RobotView {
        name: r.name.clone(),
        project: r.project.clone(),
        description: r.description.clone(),
        disabled: r.disabled,
        expires_at: r.expires_at.map(rfc3339),
        kind: if r.identity_provider.is_some() { "federated".into() } else { "secret".into() },
        identity_provider: r.identity_provider.clone(),
        rules: r.rules.clone(),
        permissions: r.permissions.clone(),
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    }
}

/// Validates a robot spec into a record (without a secret hash; the caller decides).
pub fn robot_record(spec: &RobotSpec) -> AdminResult<RobotRecord> {
    let name = if spec.name.starts_with(berth_access::robot::ROBOT_PREFIX) {
        let n = RobotName::parse(&spec.name).map_err(AdminError::invalid)?;
        if spec.project.is_some() && spec.project.as_deref() != n.project() {
            return Err(AdminError::invalid(format!("robot {} is not in project {:?}", spec.name, spec.project.as_deref().unwrap_or(""))));
        }
        n
    } else {
        RobotName::new(spec.project.as_deref(), &spec.name).map_err(AdminError::invalid)?
    };
    for (i, r) in spec.rules.iter().enumerate() {
        berth_claims::Rule::compile(r).map_err(|e| AdminError::invalid(format!("rule {i}: {e}")))?;
    }
    if spec.identity_provider.is_none() && !spec.rules.is_empty() {
        return Err(AdminError::invalid("rules need `identityProvider`: only federated robots have claim rules"));
    }
    if let (Some(idp), true) = (&spec.identity_provider, spec.rules.is_empty()) {
        return Err(AdminError::invalid(format!(
            "robot {name} is federated with {idp:?} but has no rules: it would accept every token of that identity provider. \
             Add at least one rule (like repository=myorg/myrepo)"
        )));
    }
    if let Some(project) = name.project() {
        for (i, p) in spec.permissions.iter().enumerate() {
            if p.project.is_none() {
                outside_project(project, i, &p.repositories)?;
            }
        }
    }
    berth_access::robot_permissions(name.project(), &spec.permissions).map_err(AdminError::invalid)?;
    let expires_at = spec.expires_at.as_deref().map(|t| parse_time("expiresAt", t)).transpose()?;
    let to_json = |v: serde_json::Result<serde_json::Value>| v.map_err(|e| AdminError::internal("encoding a robot", e));
    Ok(RobotRecord {
        name: name.as_str().to_owned(),
        project: name.project().map(str::to_owned),
        description: spec.description.clone().unwrap_or_default(),
        disabled: spec.disabled,
        expires_at,
        secret_hash: None,
        identity_provider: spec.identity_provider.clone(),
        rules: to_json(serde_json::to_value(&spec.rules))?,
        permissions: to_json(serde_json::to_value(&spec.permissions))?,
        created_at: now(),
        updated_at: now(),
    })
}

/// Refuses a project robot's repository pattern that names another project: `other/*` on a robot
/// of `library` would otherwise quietly become `library/other/*`. Patterns without `/` (`*`,
/// `app`) are relative to the project; patterns with `/` must start with `<project>/`.
pub fn outside_project(project: &str, i: usize, repositories: &str) -> AdminResult<()> {
    let r = repositories.trim();
    match r.split_once('/') {
        Some((first, _)) if first != project => Err(AdminError::invalid(format!(
            "permission {i}: {r:?} is outside project {project:?}; a project robot reaches only its own repositories. \
             Write \"{project}/{r}\" for a repository inside {project}, or use a system robot (no project) for other projects"
        ))),
        _ => Ok(()),
    }
}

async fn hash_secret(secret: String) -> AdminResult<String> {
    tokio::task::spawn_blocking(move || berth_identity::password::hash(&secret))
        .await
        .map_err(|e| AdminError::internal("hashing a secret", e))?
        .map_err(|e| AdminError::internal("hashing a secret", e))
}

/// Stores a robot; a new static-secret robot gets a fresh secret, returned once.
async fn store_robot(s: &AppState, mut rec: RobotRecord, existing: Option<&RobotRecord>) -> AdminResult<Option<String>> {
    let mut secret = None;
    if rec.identity_provider.is_none() {
        match existing.and_then(|e| e.secret_hash.clone()) {
            Some(h) => rec.secret_hash = Some(h),
            None => {
                let fresh = berth_identity::password::generate();
                rec.secret_hash = Some(hash_secret(fresh.clone()).await?);
                secret = Some(fresh);
            }
        }
    }
    s.meta.put_robot(&rec).await?;
    Ok(secret)
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
struct RobotFilter {
    /// Only robots of this project.
    project: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/robots", tag = "robots", params(RobotFilter), responses((status = 200, body = Vec<RobotView>)))]
async fn list_robots(State(s): State<Arc<AppState>>, _admin: Admin, Query(f): Query<RobotFilter>) -> AdminResult<Json<Vec<RobotView>>> {
    Ok(Json(s.meta.list_robots(f.project.as_deref()).await?.iter().map(robot_view).collect()))
}

#[utoipa::path(post, path = "/api/v1/robots", tag = "robots", request_body = RobotSpec,
    responses((status = 201, body = RobotCreated), (status = 409, body = ErrorBody)))]
async fn create_robot(State(s): State<Arc<AppState>>, _admin: Admin, JsonBody(spec): JsonBody<RobotSpec>) -> AdminResult<Response> {
    let rec = robot_record(&spec)?;
    if s.meta.get_robot(&rec.name).await?.is_some() {
        return Err(AdminError::conflict(format!("robot {} already exists (PUT /api/v1/robots/{} updates it)", rec.name, rec.name)));
    }
    let secret = store_robot(&s, rec.clone(), None).await?;
    changed(&s).await;
    let stored = s.meta.get_robot(&rec.name).await?.ok_or_else(|| AdminError::not_found("robot", &rec.name))?;
    Ok((StatusCode::CREATED, Json(RobotCreated { robot: robot_view(&stored), secret })).into_response())
}

#[utoipa::path(get, path = "/api/v1/robots/{name}", tag = "robots", responses((status = 200, body = RobotView), (status = 404, body = ErrorBody)))]
async fn get_robot(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>) -> AdminResult<Json<RobotView>> {
    let r = s.meta.get_robot(&name).await?.ok_or_else(|| AdminError::not_found("robot", &name))?;
    Ok(Json(robot_view(&r)))
}

#[utoipa::path(put, path = "/api/v1/robots/{name}", tag = "robots", request_body = RobotSpec, responses((status = 200, body = RobotCreated)))]
async fn put_robot(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>, JsonBody(spec): JsonBody<RobotSpec>) -> AdminResult<Json<RobotCreated>> {
    let rec = robot_record(&spec)?;
    if rec.name != name {
        return Err(AdminError::invalid(format!("the body names robot {} but the URL {name}", rec.name)));
    }
    let existing = s.meta.get_robot(&name).await?;
    let secret = store_robot(&s, rec, existing.as_ref()).await?;
    changed(&s).await;
    let stored = s.meta.get_robot(&name).await?.ok_or_else(|| AdminError::not_found("robot", &name))?;
    Ok(Json(RobotCreated { robot: robot_view(&stored), secret }))
}

#[utoipa::path(post, path = "/api/v1/robots/{name}/secret", tag = "robots", responses((status = 200, body = RobotCreated)))]
async fn regenerate_secret(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>) -> AdminResult<Json<RobotCreated>> {
    let mut r = s.meta.get_robot(&name).await?.ok_or_else(|| AdminError::not_found("robot", &name))?;
    if r.identity_provider.is_some() {
        return Err(AdminError::invalid(format!("robot {name} is federated: it has no secret")));
    }
    let fresh = berth_identity::password::generate();
    r.secret_hash = Some(hash_secret(fresh.clone()).await?);
    r.updated_at = now();
    s.meta.put_robot(&r).await?;
    changed(&s).await;
    Ok(Json(RobotCreated { robot: robot_view(&r), secret: Some(fresh) }))
}

#[utoipa::path(delete, path = "/api/v1/robots/{name}", tag = "robots", responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_robot(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>) -> AdminResult<StatusCode> {
    if !s.meta.delete_robot(&name).await? {
        return Err(AdminError::not_found("robot", &name));
    }
    changed(&s).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- identity providers

fn idp_view(r: &IdentityProviderRecord) -> AdminResult<IdentityProviderView> {
    let spec: ProviderSpec = serde_json::from_value(r.config.clone()).map_err(|e| AdminError::internal("reading a stored identity provider", e))?;
    let issuer = spec.resolve().map(|p| p.issuer).unwrap_or_else(|e| format!("(invalid: {e})"));
    Ok(IdentityProviderView { name: r.name.clone(), issuer, spec, created_at: rfc3339(r.created_at), updated_at: rfc3339(r.updated_at) })
}

fn idp_record_resolved(spec: &ProviderSpec) -> AdminResult<(IdentityProviderRecord, Provider)> {
    let resolved = spec.resolve().map_err(AdminError::invalid)?;
    let config = serde_json::to_value(spec).map_err(|e| AdminError::internal("encoding an identity provider", e))?;
    Ok((IdentityProviderRecord { name: spec.name.clone(), config, created_at: now(), updated_at: now() }, resolved))
}

/// The stored identity providers, resolved (those that no longer resolve are skipped: they
/// route no token).
async fn stored_providers(s: &AppState) -> AdminResult<Vec<(String, Provider)>> {
    let mut out = Vec::new();
    for r in s.meta.list_identity_providers().await? {
        if let Ok(p) = serde_json::from_value::<ProviderSpec>(r.config).map_err(|e| e.to_string()).and_then(|spec| spec.resolve()) {
            out.push((r.name, p));
        }
    }
    Ok(out)
}

/// Refuses `p` when another stored provider has the same issuer and a shared audience.
async fn check_issuer(s: &AppState, name: &str, p: &Provider) -> AdminResult<()> {
    let stored = stored_providers(s).await?;
    match berth_identity::federation::issuer::issuer_conflict(name, p, stored.iter().map(|(n, p)| (n.as_str(), p))) {
        Some(why) => Err(AdminError::conflict(why)),
        None => Ok(()),
    }
}

#[utoipa::path(get, path = "/api/v1/identity-providers", tag = "identity providers", responses((status = 200, body = Vec<IdentityProviderView>)))]
async fn list_idps(State(s): State<Arc<AppState>>, _admin: Admin) -> AdminResult<Json<Vec<IdentityProviderView>>> {
    let list = s.meta.list_identity_providers().await?;
    Ok(Json(list.iter().map(idp_view).collect::<AdminResult<Vec<_>>>()?))
}

#[utoipa::path(post, path = "/api/v1/identity-providers", tag = "identity providers", request_body = Object,
    responses((status = 201, body = IdentityProviderView), (status = 409, body = ErrorBody)))]
async fn create_idp(State(s): State<Arc<AppState>>, _admin: Admin, JsonBody(spec): JsonBody<ProviderSpec>) -> AdminResult<Response> {
    let (rec, resolved) = idp_record_resolved(&spec)?;
    if s.meta.get_identity_provider(&rec.name).await?.is_some() {
        return Err(AdminError::conflict(format!(
            "identity provider {:?} already exists; change it with PUT /api/v1/identity-providers/{} (berth idp update)",
            rec.name, rec.name
        )));
    }
    check_issuer(&s, &rec.name, &resolved).await?;
    s.meta.put_identity_provider(&rec).await?;
    changed(&s).await;
    let stored = s.meta.get_identity_provider(&rec.name).await?.ok_or_else(|| AdminError::not_found("identity provider", &rec.name))?;
    Ok((StatusCode::CREATED, Json(idp_view(&stored)?)).into_response())
}

#[utoipa::path(get, path = "/api/v1/identity-providers/{name}", tag = "identity providers", responses((status = 200, body = IdentityProviderView), (status = 404, body = ErrorBody)))]
async fn get_idp(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>) -> AdminResult<Json<IdentityProviderView>> {
    let r = s.meta.get_identity_provider(&name).await?.ok_or_else(|| AdminError::not_found("identity provider", &name))?;
    Ok(Json(idp_view(&r)?))
}

#[utoipa::path(put, path = "/api/v1/identity-providers/{name}", tag = "identity providers", request_body = Object, responses((status = 200, body = IdentityProviderView)))]
async fn put_idp(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>, JsonBody(spec): JsonBody<ProviderSpec>) -> AdminResult<Json<IdentityProviderView>> {
    if spec.name != name {
        return Err(AdminError::invalid(format!("the body names identity provider {:?} but the URL {name:?}", spec.name)));
    }
    let (rec, resolved) = idp_record_resolved(&spec)?;
    check_issuer(&s, &name, &resolved).await?;
    s.meta.put_identity_provider(&rec).await?;
    changed(&s).await;
    let r = s.meta.get_identity_provider(&name).await?.ok_or_else(|| AdminError::not_found("identity provider", &name))?;
    Ok(Json(idp_view(&r)?))
}

#[utoipa::path(delete, path = "/api/v1/identity-providers/{name}", tag = "identity providers", responses((status = 204), (status = 409, body = ErrorBody)))]
async fn delete_idp(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>) -> AdminResult<StatusCode> {
    match s.meta.delete_identity_provider(&name).await? {
        DeleteOutcome::Deleted => {
            changed(&s).await;
            Ok(StatusCode::NO_CONTENT)
        }
        DeleteOutcome::NotFound => Err(AdminError::not_found("identity provider", &name)),
        DeleteOutcome::InUse(why) => Err(AdminError::conflict(why)),
    }
}

#[utoipa::path(post, path = "/api/v1/identity-providers/{name}/test", tag = "identity providers", responses((status = 200, body = Object)))]
async fn test_idp(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>) -> AdminResult<Json<serde_json::Value>> {
    let r = s.meta.get_identity_provider(&name).await?.ok_or_else(|| AdminError::not_found("identity provider", &name))?;
    let spec: ProviderSpec = serde_json::from_value(r.config).map_err(|e| AdminError::internal("reading a stored identity provider", e))?;
    match berth_identity::Federation::test_provider(&spec).await {
        Ok(t) => Ok(Json(serde_json::json!({"ok": true, "result": t}))),
        Err(e) => Ok(Json(serde_json::json!({"ok": false, "error": e}))),
    }
}

// ---------------------------------------------------------------- users

fn user_view(u: &UserRecord) -> UserView {
    UserView { name: u.name.clone(), admin: u.admin, disabled: u.disabled }
}

/// User names: what `berth user set` and logins accept (no `:`, which Basic credentials split
/// on; not a robot name; printable).
fn validate_user_name(name: &str) -> AdminResult<()> {
    if name.is_empty() || name.len() > 128 {
        return Err(AdminError::invalid("a user name has 1 to 128 characters"));
    }
    if name.starts_with(berth_access::robot::ROBOT_PREFIX) {
        return Err(AdminError::invalid(format!("{name:?} is a robot name; robots are managed under /api/v1/robots")));
    }
    if name.chars().any(|c| c == ':' || c.is_control() || c.is_whitespace()) {
        return Err(AdminError::invalid(format!("user name {name:?} may not contain ':', spaces or control characters")));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", responses((status = 200, body = Vec<UserView>)))]
async fn list_users(State(s): State<Arc<AppState>>, _admin: Admin) -> AdminResult<Json<Vec<UserView>>> {
    Ok(Json(s.meta.list_users().await?.iter().map(user_view).collect()))
}

#[utoipa::path(get, path = "/api/v1/users/{name}", tag = "users", responses((status = 200, body = UserView), (status = 404, body = ErrorBody)))]
async fn get_user(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>) -> AdminResult<Json<UserView>> {
    let u = s.meta.get_user(&name).await?.ok_or_else(|| AdminError::not_found("user", &name))?;
    Ok(Json(user_view(&u)))
}

#[utoipa::path(put, path = "/api/v1/users/{name}", tag = "users", request_body = UserSpec,
    responses((status = 200, body = UserView), (status = 201, body = UserView), (status = 409, body = ErrorBody, description = "the last enabled admin would be disabled or lose its admin rights")))]
async fn put_user(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>, JsonBody(spec): JsonBody<UserSpec>) -> AdminResult<Response> {
    validate_user_name(&name)?;
    let existing = s.meta.get_user(&name).await?;
    let password_hash = match (spec.password, &existing) {
        (Some(pw), _) => {
            if pw.chars().count() < 8 {
                return Err(AdminError::invalid("the password must have at least 8 characters"));
            }
            hash_secret(pw).await?
        }
        (None, Some(e)) => e.password_hash.clone(),
        (None, None) => return Err(AdminError::invalid(format!("user {name:?} does not exist yet: give it a `password`"))),
    };
    let rec = UserRecord { name: name.clone(), password_hash, admin: spec.admin, disabled: spec.disabled };
    s.meta.put_user(&rec).await?;
    let status = if existing.is_some() { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(user_view(&rec))).into_response())
}

#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "users",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the last enabled admin")))]
async fn delete_user(State(s): State<Arc<AppState>>, _admin: Admin, Path(name): Path<String>) -> AdminResult<StatusCode> {
    if !s.meta.delete_user(&name).await? {
        return Err(AdminError::not_found("user", &name));
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- audit, explain

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
struct AuditParams {
    /// RFC 3339 time; only events at or after it.
    since: Option<String>,
    /// RFC 3339 time; only events before it.
    until: Option<String>,
    robot: Option<String>,
    repository: Option<String>,
    provider: Option<String>,
    /// `ok`, `denied` or `error`.
    result: Option<String>,
    /// `token`, `login`, `pull`, `push` or `delete`.
    action: Option<String>,
    /// Only events with a smaller id (the next page).
    before: Option<i64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<u32>,
}

fn parse_ms(field: &str, s: &str) -> AdminResult<i64> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| AdminError::invalid(format!("{field} {s:?} is not an RFC 3339 time: {e}")))
}

fn audit_view(e: berth_meta::AuditEvent) -> AuditEventView {
    let time = chrono::DateTime::from_timestamp_millis(e.time_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    AuditEventView {
        id: e.id,
        time,
        action: e.action,
        result: e.result,
        principal: e.principal,
        robots: e.robots,
        provider: e.provider,
        subject: e.subject,
        jti: e.jti,
        claims: e.claims,
        repository: e.repository,
        reference: e.reference,
        client: e.client,
        message: e.message,
    }
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditParams), responses((status = 200, body = Vec<AuditEventView>)))]
async fn audit(State(s): State<Arc<AppState>>, _admin: Admin, Query(p): Query<AuditParams>) -> AdminResult<Json<Vec<AuditEventView>>> {
    s.audit().flush().await;
    let q = AuditQuery {
        since_ms: p.since.as_deref().map(|t| parse_ms("since", t)).transpose()?,
        until_ms: p.until.as_deref().map(|t| parse_ms("until", t)).transpose()?,
        robot: p.robot,
        repository: p.repository,
        provider: p.provider,
        result: p.result,
        action: p.action,
        before_id: p.before,
        limit: p.limit.unwrap_or(100).min(1000),
    };
    Ok(Json(s.meta.query_audit(&q).await?.into_iter().map(audit_view).collect()))
}

#[utoipa::path(post, path = "/api/v1/token/explain", tag = "tokens", request_body = ExplainRequest, responses((status = 200, body = Object)))]
async fn explain(State(s): State<Arc<AppState>>, _admin: Admin, JsonBody(req): JsonBody<ExplainRequest>) -> AdminResult<Json<berth_identity::federation::Explanation>> {
    Ok(Json(s.federation().explain(req.token.trim()).await))
}

// ---------------------------------------------------------------- apply

#[utoipa::path(post, path = "/api/v1/apply", tag = "apply", request_body = ApplyDocument, responses((status = 200, body = ApplyReport)))]
async fn apply(State(s): State<Arc<AppState>>, _admin: Admin, JsonBody(doc): JsonBody<ApplyDocument, APPLY_LIMIT>) -> AdminResult<Json<ApplyReport>> {
    let report = apply_document(&s, &doc).await;
    changed(&s).await;
    Ok(Json(report?))
}

/// An apply document checked whole, before anything is written: the records to write.
#[derive(Debug, Clone)]
pub struct ValidatedDocument {
    pub identity_providers: Vec<(IdentityProviderRecord, Provider)>,
    pub robots: Vec<RobotRecord>,
}

/// Validates a whole apply document without a store (the part `berth apply` and
/// `POST /api/v1/apply` share; fuzzed by `fuzz/fuzz_targets/apply.rs`): project names,
/// identity providers (resolved, issuers compared with `others` that the document does not
/// replace and with each other), robots. The store's references (projects and providers that
/// exist) are checked when writing.
pub fn validate_document(doc: &ApplyDocument, others: Vec<(String, Provider)>) -> AdminResult<ValidatedDocument> {
    for p in &doc.projects {
        berth_access::validate_project_name(&p.name).map_err(|e| AdminError::invalid(format!("projects: {e}")))?;
    }
    let resolved = doc.identity_providers.iter().map(|p| idp_record_resolved(p).map_err(|e| AdminError::invalid(format!("identity provider {:?}: {}", p.name, e.message)))).collect::<AdminResult<Vec<_>>>()?;
    let mut providers: Vec<(String, Provider)> = others.into_iter().filter(|(n, _)| !resolved.iter().any(|(r, _)| &r.name == n)).collect();
    for (rec, p) in &resolved {
        if let Some(why) = berth_identity::federation::issuer::issuer_conflict(&rec.name, p, providers.iter().map(|(n, p)| (n.as_str(), p))) {
            return Err(AdminError::conflict(why));
        }
        providers.push((rec.name.clone(), p.clone()));
    }
    let robots = doc.robots.iter().map(|r| robot_record(r).map_err(|e| AdminError::invalid(format!("robot {:?}: {}", r.name, e.message)))).collect::<AdminResult<Vec<_>>>()?;
    Ok(ValidatedDocument { identity_providers: resolved, robots })
}

/// Applies a document idempotently: validates everything first, then writes projects, identity
/// providers and robots in that order, skipping objects that already match.
pub async fn apply_document(s: &AppState, doc: &ApplyDocument) -> AdminResult<ApplyReport> {
    let valid = validate_document(doc, stored_providers(s).await?)?;
    let idps: Vec<IdentityProviderRecord> = valid.identity_providers.into_iter().map(|(rec, _)| rec).collect();
    let robots = valid.robots;
    let mut report = ApplyReport::default();
    let mut note = |kind: &str, name: &str, action: &str| {
        report.changes.push(Change { kind: kind.into(), name: name.into(), action: action.into() });
    };
    for p in &doc.projects {
        let action = match s.meta.get_project(&p.name).await? {
            Some(e) if e.public == p.public => "unchanged",
            Some(_) => "updated",
            None => "created",
        };
        if action != "unchanged" {
            s.meta.put_project(&ProjectRecord { name: p.name.clone(), public: p.public, created_at: now() }).await?;
        }
        note("project", &p.name, action);
    }
    for rec in idps {
        let action = match s.meta.get_identity_provider(&rec.name).await? {
            Some(e) if e.config == rec.config => "unchanged",
            Some(_) => "updated",
            None => "created",
        };
        if action != "unchanged" {
            s.meta.put_identity_provider(&rec).await?;
        }
        note("identityProvider", &rec.name, action);
    }
    let mut secrets = std::collections::BTreeMap::new();
    for rec in robots {
        let existing = s.meta.get_robot(&rec.name).await?;
        let same = existing.as_ref().is_some_and(|e| {
            e.project == rec.project
                && e.description == rec.description
                && e.disabled == rec.disabled
                && e.expires_at == rec.expires_at
                && e.identity_provider == rec.identity_provider
                && e.rules == rec.rules
                && e.permissions == rec.permissions
                && (rec.identity_provider.is_some() || e.secret_hash.is_some())
        });
        let action = match (&existing, same) {
            (_, true) => "unchanged",
            (Some(_), false) => "updated",
            (None, _) => "created",
        };
        if !same {
            if let Some(secret) = store_robot(s, rec.clone(), existing.as_ref()).await? {
                secrets.insert(rec.name.clone(), secret);
            }
        }
        note("robot", &rec.name, action);
    }
    report.secrets = secrets;
    Ok(report)
}

// ---------------------------------------------------------------- router and OpenAPI

#[derive(OpenApi)]
#[openapi(
    info(title = "Berth admin API", description = "Projects, robot accounts, identity providers (workload identity federation), local users, audit log, token explain and declarative apply. Every call needs an administrator's Basic credentials, checked before the request body is read. Bodies are limited to 64 KiB (1 MiB for /apply); larger ones get 413."),
    paths(
        list_projects, create_project, get_project, put_project, delete_project,
        list_robots, create_robot, get_robot, put_robot, regenerate_secret, delete_robot,
        list_idps, create_idp, get_idp, put_idp, delete_idp, test_idp,
        list_users, get_user, put_user, delete_user,
        audit, explain, apply
    ),
    components(schemas(ProjectSpec, ProjectView, RobotSpec, RobotView, RobotCreated, IdentityProviderView, UserView, UserSpec, AuditEventView, ExplainRequest, ApplyDocument, ApplyReport, Change, ErrorBody, ErrorEntry))
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
        .route("/robots", get(list_robots).post(create_robot))
        .route("/robots/{name}", get(get_robot).put(put_robot).delete(delete_robot))
        .route("/robots/{name}/secret", post(regenerate_secret))
        .route("/identity-providers", get(list_idps).post(create_idp))
        .route("/identity-providers/{name}", get(get_idp).put(put_idp).delete(delete_idp))
        .route("/identity-providers/{name}/test", post(test_idp))
        .route("/users", get(list_users))
        .route("/users/{name}", get(get_user).put(put_user).delete(delete_user))
        .route("/audit", get(audit))
        .route("/token/explain", post(explain))
        .route("/apply", post(apply))
        .fallback(not_found)
}
