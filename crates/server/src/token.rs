//! `/service/token`: the Docker token flow. GET with Basic credentials (docker, podman, skopeo) and
//! POST with a `grant_type=password` form (containerd, BuildKit). Requested scopes are intersected
//! with what the principal may do; a partial grant is not an error.
//!
//! The OAuth2 side of the distribution token spec, for users: asked for with `offline_token=true`
//! (GET) or `access_type=offline` (POST), the answer carries a `refresh_token` (a Berth `cli`
//! token, revocable like any other), which docker stores as an identity token instead of the
//! password and trades with `grant_type=refresh_token` for access tokens. Robots and federated
//! logins get none: a workload logs in again with a fresh OIDC token.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::response::IntoResponse;
use axum::Json;
use berth_access::{parse_scopes, Access};
use berth_oci::ErrorCode;
use http::{HeaderMap, StatusCode};

use crate::auth::{self, audit_login_failure, federated, login, parse_authorization, Credentials, LoginError, Principal};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

fn token_response(state: &AppState, p: &Principal, scopes: &[Access], client: Option<IpAddr>) -> ApiResult {
    token_response_with(state, p, scopes, client, None)
}

fn token_response_with(state: &AppState, p: &Principal, scopes: &[Access], client: Option<IpAddr>, refresh_token: Option<String>) -> ApiResult {
    let issued = state.core.issue_token(p, scopes, client)?;
    let issued_at = chrono::DateTime::from_timestamp(issued.issued_at as i64, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    // A refresh_token only for users who asked for one (see the module docs).
    let mut body = serde_json::json!({
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued_at,
    });
    if let Some(r) = refresh_token {
        body["refresh_token"] = serde_json::Value::String(r);
    }
    let mut resp = Json(body).into_response();
    resp.extensions_mut().insert(crate::ops::PrincipalLabel(Arc::from(p.subject.as_str())));
    Ok(resp)
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
        .with_header(http::header::WWW_AUTHENTICATE, "Basic realm=\"berth\"")
}

fn refused(state: &AppState, username: Option<&str>, e: LoginError, client: Option<IpAddr>) -> ApiError {
    audit_login_failure(&state.core, username, &e, client);
    match e {
        LoginError::Internal(e) => e.into(),
        LoginError::RateLimited { retry_after, message } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyRequests, message)
            .with_header(http::header::RETRY_AFTER, retry_after.to_string()),
        LoginError::Busy => auth::busy(),
        other => unauthorized(&other.message()),
    }
}

/// The scopes a `GET /service/token` query asks for, as the endpoint parses them (public for
/// the `token_query` fuzz target): a malformed query or more than
/// [`berth_access::MAX_SCOPES_PER_REQUEST`] scope entries is a 400.
pub fn scopes_from_query(query: &str) -> Result<Vec<Access>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, "malformed query string"))?;
    scopes_from(&pairs)
}

/// The requested scopes, at most [`berth_access::MAX_SCOPES_PER_REQUEST`] (else 400).
fn scopes_from(pairs: &[(String, String)]) -> Result<Vec<Access>, ApiError> {
    parse_scopes(pairs.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str()))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, e.to_string()))
}

fn client_of(connect: &Option<axum::Extension<ConnectInfo<SocketAddr>>>) -> Option<IpAddr> {
    connect.as_ref().map(|c| c.0 .0.ip())
}

/// `GET /service/token?service=...&scope=...` with Basic credentials (a password, a robot secret,
/// or an OIDC token as the password), a federated OIDC token as Bearer, or nothing (anonymous).
pub async fn get_token(
    State(state): State<Arc<AppState>>,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let client = client_of(&connect);
    let scopes = scopes_from_query(query.as_deref().unwrap_or(""))?;
    match parse_authorization(&headers).map_err(|_| unauthorized("malformed Authorization header"))? {
        Credentials::Basic { username, password } => match login(&state.core, &username, &password, client).await {
            Ok(p) => {
                let offline = query_flag(query.as_deref().unwrap_or(""), "offline_token");
                let refresh = refresh_for(&state, &p, offline, client).await?;
                token_response_with(&state, &p, &scopes, client, refresh)
            }
            Err(e) => Err(refused(&state, Some(&username), e, client)),
        },
        Credentials::Bearer(token) if berth_identity::looks_like_jwt(&token) => match federated(&state.core, &token, None).await {
            Ok(p) => token_response(&state, &p, &scopes, client),
            Err(e) => Err(refused(&state, None, e, client)),
        },
        Credentials::Bearer(_) => Err(unauthorized("the token endpoint takes Basic credentials or an OIDC token (JWT) as Bearer")),
        Credentials::None => {
            let Some(p) = state.core.anonymous_principal().await else {
                return Err(unauthorized("authentication required: log in first (docker/podman/skopeo login) or pass credentials"));
            };
            token_response(&state, &p, &scopes, client)
        }
    }
}

fn query_flag(query: &str, name: &str) -> bool {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default().iter().any(|(k, v)| k == name && v == "true")
}

/// A refresh token for a user who asked for one (a `cli` token named after the client).
async fn refresh_for(state: &AppState, p: &Principal, asked: bool, client: Option<IpAddr>) -> Result<Option<String>, ApiError> {
    if !asked || p.kind != berth_identity::PrincipalKind::User {
        return Ok(None);
    }
    let credential = state.core.cli_login(&p.subject, client).await?;
    Ok(Some(credential.token))
}

/// The largest form `POST /service/token` reads: a 16 KiB OIDC token as the password and the
/// maximum number of scopes fit with room to spare.
pub const FORM_LIMIT: usize = 64 * 1024;

/// `POST /service/token` with an OAuth2 form: `grant_type=password` (the password may be an OIDC
/// token or a Berth token; `access_type=offline` asks for a refresh token) or
/// `grant_type=refresh_token`.
pub async fn post_token(
    State(state): State<Arc<AppState>>,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    body: axum::body::Bytes,
) -> ApiResult {
    let client = client_of(&connect);
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, "malformed form body"))?;
    let field = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    match field("grant_type") {
        Some("password") => {
            let (Some(username), Some(password)) = (field("username"), field("password")) else {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, "grant_type=password needs username and password"));
            };
            let scopes = scopes_from(&pairs)?;
            match login(&state.core, username, password, client).await {
                Ok(p) => {
                    let refresh = refresh_for(&state, &p, field("access_type") == Some("offline"), client).await?;
                    token_response_with(&state, &p, &scopes, client, refresh)
                }
                Err(e) => Err(refused(&state, Some(username), e, client)),
            }
        }
        Some("refresh_token") => {
            let Some(refresh) = field("refresh_token") else {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, "grant_type=refresh_token needs refresh_token"));
            };
            let scopes = scopes_from(&pairs)?;
            if !berth_core::people::looks_like_token(refresh) {
                return Err(unauthorized("the refresh token is not one Berth issued; log in again"));
            }
            match berth_core::auth::token_login(&state.core, refresh, client, false).await {
                // The same refresh token again: docker keeps the one it has.
                Ok(p) => token_response_with(&state, &p, &scopes, client, Some(refresh.to_owned())),
                Err(e) => Err(refused(&state, None, e, client)),
            }
        }
        Some(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::Unsupported,
            format!("grant_type {:?} is not supported; use grant_type=password or refresh_token", crate::text::cap(other, 64)),
        )),
        None => Err(ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, "missing grant_type")),
    }
}
