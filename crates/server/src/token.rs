//! `/service/token`: the Docker token flow. GET with Basic credentials (docker, podman, skopeo) and
//! POST with a `grant_type=password` form (containerd, BuildKit). Requested scopes are intersected
//! with what the principal may do; a partial grant is not an error.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::IntoResponse;
use axum::Json;
use berth_access::{intersect, parse_scope, Access, Permissions};
use berth_identity::PrincipalKind;
use berth_oci::ErrorCode;
use http::{HeaderMap, StatusCode};

use crate::auth::{anonymous_permissions, check_user, parse_authorization, Credentials};
use crate::error::{ApiError, ApiResult};
use crate::{AnonymousAccess, AppState};

fn token_response(state: &AppState, subject: &str, kind: PrincipalKind, perms: &Permissions, scopes: &[Access]) -> ApiResult {
    let access = intersect(perms, scopes);
    tracing::info!(subject, granted = ?access, "issued registry token");
    metrics::counter!("berth_token_issued_total", "kind" => format!("{kind:?}").to_lowercase()).increment(1);
    let issued = state
        .tokens
        .issue(subject, kind, access, None)
        .map_err(|e| ApiError::internal("signing a registry token", e))?;
    let issued_at = chrono::DateTime::from_timestamp(issued.issued_at as i64, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    Ok(Json(serde_json::json!({
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued_at,
    }))
    .into_response())
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
        .with_header(http::header::WWW_AUTHENTICATE, "Basic realm=\"berth\"")
}

async fn authenticate_password(state: &AppState, username: &str, password: &str) -> ApiResult<Permissions> {
    match check_user(state, username, password).await? {
        Some(p) => Ok(p),
        None => {
            tracing::warn!(username, "token request with invalid credentials");
            metrics::counter!("berth_login_failures_total").increment(1);
            Err(unauthorized("invalid username or password"))
        }
    }
}

fn scopes_from(pairs: &[(String, String)]) -> Vec<Access> {
    pairs.iter().filter(|(k, _)| k == "scope").flat_map(|(_, v)| parse_scope(v)).collect()
}

/// `GET /service/token?service=...&scope=...` with optional Basic credentials.
pub async fn get_token(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery, headers: HeaderMap) -> ApiResult {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, "malformed query string"))?;
    let scopes = scopes_from(&pairs);
    match parse_authorization(&headers).map_err(|_| unauthorized("malformed Authorization header"))? {
        Credentials::Basic { username, password } => {
            let perms = authenticate_password(&state, &username, &password).await?;
            token_response(&state, &username, PrincipalKind::User, &perms, &scopes)
        }
        Credentials::None if state.config.anonymous != AnonymousAccess::Off => {
            let perms = anonymous_permissions(state.config.anonymous);
            token_response(&state, "anonymous", PrincipalKind::Anonymous, &perms, &scopes)
        }
        Credentials::None => Err(unauthorized("authentication required: log in first (docker/podman/skopeo login) or pass credentials")),
        Credentials::Bearer(_) => Err(unauthorized("the token endpoint takes Basic credentials")),
    }
}

/// `POST /service/token` with an OAuth2 form (`grant_type=password`).
pub async fn post_token(State(state): State<Arc<AppState>>, body: axum::body::Bytes) -> ApiResult {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, "malformed form body"))?;
    let field = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    match field("grant_type") {
        Some("password") => {
            let (Some(username), Some(password)) = (field("username"), field("password")) else {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, "grant_type=password needs username and password"));
            };
            let perms = authenticate_password(&state, username, password).await?;
            token_response(&state, username, PrincipalKind::User, &perms, &scopes_from(&pairs))
        }
        Some(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::Unsupported,
            format!("grant_type {other:?} is not supported; use grant_type=password (Berth issues no refresh tokens)"),
        )),
        None => Err(ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, "missing grant_type")),
    }
}
