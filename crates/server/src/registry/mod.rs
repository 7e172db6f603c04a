//! The OCI distribution API under `/v2`. Routing is data: the path is parsed into an
//! [`Endpoint`], which says what access it needs; authentication and authorization happen once in
//! [`dispatch`], then one `handle_*` function runs.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_access::{Access, Action};
use berth_oci::{ErrorCode, RepoName};
use http::{HeaderMap, Method, StatusCode, Uri};

use berth_core::audit::{AuditAction, AuditResult};
use berth_core::registry::{Audited, Denial};

use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiResult};
use crate::ops::RouteLabel;
use crate::AppState;

mod blobs;
mod discovery;
mod manifests;
mod uploads;

pub use discovery::{CATALOG_SCAN_ROWS, MAX_CATALOG_PAGE};
pub use berth_core::registry::MAX_TAGS_PER_PUT;

/// A `/v2` endpoint, parsed from the path. Raw references stay strings until the handler parses
/// them, so each can answer with its own precise error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Base,
    Catalog,
    Tags(RepoName),
    Manifest(RepoName, String),
    Blob(RepoName, String),
    UploadStart(RepoName),
    Upload(RepoName, String),
    Referrers(RepoName, String),
}

impl Endpoint {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Endpoint::Base => "v2",
            Endpoint::Catalog => "catalog",
            Endpoint::Tags(_) => "tags",
            Endpoint::Manifest(..) => "manifest",
            Endpoint::Blob(..) => "blob",
            Endpoint::UploadStart(_) | Endpoint::Upload(..) => "upload",
            Endpoint::Referrers(..) => "referrers",
        }
    }

    fn repo(&self) -> Option<&RepoName> {
        match self {
            Endpoint::Base | Endpoint::Catalog => None,
            Endpoint::Tags(r)
            | Endpoint::Manifest(r, _)
            | Endpoint::Blob(r, _)
            | Endpoint::UploadStart(r)
            | Endpoint::Upload(r, _)
            | Endpoint::Referrers(r, _) => Some(r),
        }
    }

    /// The action a method on this endpoint needs on its repository.
    pub fn action(&self, method: &Method) -> Option<Action> {
        let repo_action = match (self, method.as_str()) {
            (Endpoint::Base | Endpoint::Catalog, _) => return None,
            (Endpoint::UploadStart(_) | Endpoint::Upload(..), _) => Action::Push,
            (Endpoint::Manifest(..), "PUT") => Action::Push,
            (Endpoint::Manifest(..) | Endpoint::Blob(..), "DELETE") => Action::Delete,
            _ => Action::Pull,
        };
        Some(repo_action)
    }
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a `/v2/...` path. Repository names may contain any path component (even `blobs` or
/// `manifests`), so the endpoint is recognised from the end of the path.
pub fn parse_path(path: &str) -> Result<Endpoint, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NameUnknown, "no such API endpoint");
    let rest = path.strip_prefix("/v2").ok_or_else(not_found)?;
    if rest.is_empty() || rest == "/" {
        return Ok(Endpoint::Base);
    }
    let rest = rest.strip_prefix('/').ok_or_else(not_found)?;
    if rest == "_catalog" {
        return Ok(Endpoint::Catalog);
    }
    let name = |n: &str| n.parse::<RepoName>().map_err(|e| ApiError::name_invalid(e.to_string()));
    if let Some(n) = rest.strip_suffix("/tags/list") {
        return Ok(Endpoint::Tags(name(n)?));
    }
    if let Some(n) = rest.strip_suffix("/blobs/uploads/").or_else(|| rest.strip_suffix("/blobs/uploads")) {
        return Ok(Endpoint::UploadStart(name(n)?));
    }
    let (head, last) = rest.rsplit_once('/').ok_or_else(not_found)?;
    let last = percent_decode(last);
    if let Some(n) = head.strip_suffix("/blobs/uploads") {
        return Ok(Endpoint::Upload(name(n)?, last));
    }
    if let Some(n) = head.strip_suffix("/manifests") {
        return Ok(Endpoint::Manifest(name(n)?, last));
    }
    if let Some(n) = head.strip_suffix("/blobs") {
        return Ok(Endpoint::Blob(name(n)?, last));
    }
    if let Some(n) = head.strip_suffix("/referrers") {
        return Ok(Endpoint::Referrers(name(n)?, last));
    }
    Err(not_found())
}

/// Per-request context handed to handlers.
pub struct Request {
    pub state: Arc<AppState>,
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub caller: Caller,
    pub base: String,
}

impl Request {
    /// The query string's pairs.
    pub fn query(&self) -> Vec<(String, String)> {
        serde_urlencoded::from_str(self.uri.query().unwrap_or("")).unwrap_or_default()
    }
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
    pub fn header(&self, name: http::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The repository a cross-repository mount (`POST .../blobs/uploads/?mount=<digest>&from=<repo>`)
/// reads from, if the request is one and names another valid repository.
fn mount_source(endpoint: &Endpoint, method: &Method, uri: &Uri) -> Option<RepoName> {
    let Endpoint::UploadStart(repo) = endpoint else { return None };
    if method != Method::POST {
        return None;
    }
    let query: Vec<(String, String)> = serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    let has = |k: &str| query.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    has("mount")?;
    has("from")?.parse::<RepoName>().ok().filter(|from| from != repo)
}

/// The `Bearer` challenge for several scopes: they go space-separated into one `scope="..."`
/// parameter, as distribution does. (`auth::challenge` takes one scope.)
/// What a caller is challenged for when denied: the whole set a client needs for this kind of
/// request, as docker asks for it, plus `pull` on a mount's source (without it, a client that
/// follows the challenge gets a token that turns the mount into a full upload).
fn challenge_for(repo: &RepoName, action: Action, mount_from: Option<&RepoName>) -> Vec<Access> {
    let actions: Vec<String> = match action {
        Action::Push => vec!["pull".into(), "push".into()],
        other => vec![other.as_str().into()],
    };
    let mut scopes = vec![Access { kind: "repository".into(), name: repo.to_string(), actions }];
    if let Some(from) = mount_from {
        scopes.push(Access { kind: "repository".into(), name: from.to_string(), actions: vec!["pull".into()] });
    }
    scopes
}

/// The answer to a refusal: a challenge when more credentials could help, else 403.
fn deny(state: &AppState, base: &str, denial: &Denial, repo: &RepoName, action: Action, mount_from: Option<&RepoName>) -> ApiError {
    let scopes = challenge_for(repo, action, mount_from);
    match denial {
        Denial::Anonymous => auth::challenge_scopes(state, base, &scopes, None, denial.message()),
        Denial::TokenScope { message } => auth::challenge_scopes(state, base, &scopes, Some("insufficient_scope"), message),
        Denial::Forbidden { message } => ApiError::denied(message.clone()),
    }
}

/// The single entry point of `/v2`.
pub async fn dispatch(
    State(state): State<Arc<AppState>>,
    connect: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let label = parse_path(uri.path()).map(|e| e.label()).unwrap_or("v2-unknown");
    let client = connect.map(|c| c.0 .0.ip());
    let mut principal = None;
    let mut resp = match route(state, method, uri, headers, body, client, &mut principal).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if let Some(p) = principal {
        resp.extensions_mut().insert(crate::ops::PrincipalLabel(p));
    }
    resp.extensions_mut().insert(RouteLabel(label));
    resp.headers_mut()
        .insert("docker-distribution-api-version", http::HeaderValue::from_static("registry/2.0"));
    resp
}

/// What of a request goes into the audit log: pulls of manifests, pushes of manifests, deletes.
fn audited<'a>(endpoint: &'a Endpoint, method: &Method) -> Option<(AuditAction, &'a RepoName, &'a str)> {
    match (endpoint, method.as_str()) {
        (Endpoint::Manifest(r, reference), "GET") => Some((AuditAction::Pull, r, reference)),
        (Endpoint::Manifest(r, reference), "PUT") => Some((AuditAction::Push, r, reference)),
        (Endpoint::Manifest(r, reference) | Endpoint::Blob(r, reference), "DELETE") => Some((AuditAction::Delete, r, reference)),
        _ => None,
    }
}

async fn route(
    state: Arc<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
    client: Option<std::net::IpAddr>,
    principal: &mut Option<Arc<str>>,
) -> ApiResult {
    let endpoint = parse_path(uri.path())?;
    let base = auth::base_url(&state, &headers);
    let creds = auth::parse_authorization(&headers)?;
    let caller = auth::authenticate(&state, &base, creds, client).await?;
    *principal = Some(Arc::from(caller.subject.as_str()));
    if let (Some(repo), Some(action)) = (endpoint.repo(), endpoint.action(&method)) {
        let reference = match &endpoint {
            Endpoint::Manifest(_, r) | Endpoint::Blob(_, r) => r.as_str(),
            _ => "",
        };
        if let Err(denial) = state.core.authorize(&caller, repo, action, reference, client) {
            // People are told their role in the project (looked up only on a refusal).
            let denial = match (&denial, state.core.explain_refusal(&caller, repo, action).await) {
                (Denial::TokenScope { message }, Some(why)) => Denial::TokenScope { message: format!("{message}: {why}") },
                (Denial::Forbidden { .. }, Some(why)) => Denial::Forbidden { message: why },
                _ => denial,
            };
            return Err(deny(&state, &base, &denial, repo, action, mount_source(&endpoint, &method, &uri).as_ref()));
        }
    }
    // The catalog names repositories: anonymous callers list it only where anonymous pulls are on
    // (public projects alone do not open it; their repositories are pulled by name).
    if endpoint == Endpoint::Catalog && caller.kind == berth_identity::PrincipalKind::Anonymous && !state.core.anonymous_catalog() {
        let scope = Access { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] };
        return Err(auth::challenge(&state, &base, Some(&scope), None, "authentication required to list repositories"));
    }
    let audit_as = audited(&endpoint, &method).map(|(a, r, reference)| (a, r.clone(), reference.to_owned()));
    // `/v2/` challenges anonymous callers unless anonymous callers may do everything: clients
    // (skopeo, docker) send credentials, or fetch an anonymous token, only after a challenge here.
    if endpoint == Endpoint::Base && caller.kind == berth_identity::PrincipalKind::Anonymous && !state.core.anonymous_read_write() {
        return Err(auth::challenge(&state, &base, None, None, "authentication required"));
    }
    let req = Request { state, method, uri, headers, caller, base };
    let result = handle(&req, endpoint, body).await;
    if let Some((action, repo, reference)) = audit_as {
        let (outcome, message) = match &result {
            Ok(r) if r.status().is_success() => (AuditResult::Ok, None),
            Ok(r) => (AuditResult::Error, Some(format!("HTTP {}", r.status()))),
            Err(e) => (AuditResult::Error, Some(e.message.clone())),
        };
        req.state.core.audit_registry(&req.caller, Audited { action, repo: &repo, reference: &reference }, outcome, message.as_deref(), client);
    }
    result
}

async fn handle(req: &Request, endpoint: Endpoint, body: Body) -> ApiResult {
    let m = req.method.clone();
    match (endpoint, m.as_str()) {
        (Endpoint::Base, "GET" | "HEAD") => Ok((StatusCode::OK, [(http::header::CONTENT_TYPE, "application/json")], "{}").into_response()),
        (Endpoint::Catalog, "GET") => discovery::catalog(req).await,
        (Endpoint::Tags(repo), "GET") => discovery::tags(req, &repo).await,
        (Endpoint::Referrers(repo, d), "GET") => discovery::referrers(req, &repo, &d).await,
        (Endpoint::Manifest(repo, r), "GET" | "HEAD") => manifests::get(req, &repo, &r).await,
        (Endpoint::Manifest(repo, r), "PUT") => manifests::put(req, &repo, &r, body).await,
        (Endpoint::Manifest(repo, r), "DELETE") => manifests::delete(req, &repo, &r).await,
        (Endpoint::Blob(repo, d), "GET" | "HEAD") => blobs::get(req, &repo, &d).await,
        (Endpoint::Blob(repo, d), "DELETE") => blobs::delete(req, &repo, &d).await,
        (Endpoint::UploadStart(repo), "POST") => uploads::start(req, &repo, body).await,
        (Endpoint::Upload(repo, id), "GET") => uploads::status(req, &repo, &id).await,
        (Endpoint::Upload(repo, id), "PATCH") => uploads::patch(req, &repo, &id, body).await,
        (Endpoint::Upload(repo, id), "PUT") => uploads::finish(req, &repo, &id, body).await,
        (Endpoint::Upload(repo, id), "DELETE") => uploads::cancel(req, &repo, &id).await,
        (_, m) => Err(ApiError::unsupported(format!("method {m} is not allowed on this endpoint"))),
    }
}

/// `n` and `last` of a paginated listing. Invalid `n` is a 400.
pub(crate) fn pagination(req: &Request) -> ApiResult<(Option<u32>, Option<String>)> {
    let n = match req.query_param("n") {
        Some(v) => Some(v.parse::<u32>().map_err(|_| {
            ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, format!("n={v:?} is not a non-negative integer"))
        })?),
        None => None,
    };
    Ok((n, req.query_param("last")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_table() {
        let r = |s: &str| s.parse::<RepoName>().unwrap();
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let blob_path = format!("/v2/a/blobs/{d}");
        let referrers_path = format!("/v2/a/referrers/{d}");
        let cases: Vec<(&str, Result<Endpoint, ErrorCode>)> = vec![
            ("/v2/", Ok(Endpoint::Base)),
            ("/v2", Ok(Endpoint::Base)),
            ("/v2/_catalog", Ok(Endpoint::Catalog)),
            ("/v2/a/b/tags/list", Ok(Endpoint::Tags(r("a/b")))),
            ("/v2/a/manifests/latest", Ok(Endpoint::Manifest(r("a"), "latest".into()))),
            ("/v2/a/blobs/manifests/x", Ok(Endpoint::Manifest(r("a/blobs"), "x".into()))),
            ("/v2/a/b/c/d/e/f/g/h/i/blobs/uploads/", Ok(Endpoint::UploadStart(r("a/b/c/d/e/f/g/h/i")))),
            ("/v2/a/blobs/uploads", Ok(Endpoint::UploadStart(r("a")))),
            ("/v2/a/blobs/uploads/abc-123", Ok(Endpoint::Upload(r("a"), "abc-123".into()))),
            (&blob_path, Ok(Endpoint::Blob(r("a"), d.into()))),
            ("/v2/a/blobs/sha256%3Aabc", Ok(Endpoint::Blob(r("a"), "sha256:abc".into()))),
            (&referrers_path, Ok(Endpoint::Referrers(r("a"), d.into()))),
            ("/v2/A/manifests/x", Err(ErrorCode::NameInvalid)),
            ("/v2/a/unknown/x", Err(ErrorCode::NameUnknown)),
            ("/v2/manifests/x", Err(ErrorCode::NameUnknown)),
            ("/v3/a", Err(ErrorCode::NameUnknown)),
        ];
        for (path, want) in cases {
            match (parse_path(path), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{path}"),
                (Err(e), Err(code)) => assert_eq!(e.code, code, "{path}"),
                (got, w) => panic!("{path}: got {got:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn mount_challenge_table() {
        let r = |s: &str| s.parse::<RepoName>().unwrap();
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let start = Endpoint::UploadStart(r("a/target"));
        let uri = |q: &str| format!("/v2/a/target/blobs/uploads/{q}").parse::<Uri>().unwrap();
        let cases: Vec<(Method, String, Option<RepoName>)> = vec![
            (Method::POST, format!("?mount={d}&from=b/source"), Some(r("b/source"))),
            (Method::POST, format!("?from=b%2Fsource&mount={d}"), Some(r("b/source"))),
            (Method::POST, format!("?mount={d}"), None),
            (Method::POST, "?from=b/source".into(), None),
            (Method::POST, format!("?mount={d}&from=a/target"), None),
            (Method::POST, format!("?mount={d}&from=Not/Valid"), None),
            (Method::POST, String::new(), None),
            (Method::PATCH, format!("?mount={d}&from=b/source"), None),
        ];
        for (method, q, want) in cases {
            assert_eq!(mount_source(&start, &method, &uri(&q)), want, "{method} {q}");
        }
        let scopes = challenge_for(&r("a/target"), Action::Push, Some(&r("b/source")));
        let text: Vec<String> = scopes.iter().map(|s| format!("{}:{}:{}", s.kind, s.name, s.actions.join(","))).collect();
        assert_eq!(text, ["repository:a/target:pull,push", "repository:b/source:pull"]);
        assert_eq!(challenge_for(&r("a"), Action::Delete, None).len(), 1);
    }

    #[test]
    fn actions() {
        let r: RepoName = "a".parse().unwrap();
        let m = Endpoint::Manifest(r.clone(), "x".into());
        assert_eq!(m.action(&Method::GET), Some(Action::Pull));
        assert_eq!(m.action(&Method::HEAD), Some(Action::Pull));
        assert_eq!(m.action(&Method::PUT), Some(Action::Push));
        assert_eq!(m.action(&Method::DELETE), Some(Action::Delete));
        assert_eq!(Endpoint::Upload(r.clone(), "i".into()).action(&Method::DELETE), Some(Action::Push));
        assert_eq!(Endpoint::Blob(r, "d".into()).action(&Method::DELETE), Some(Action::Delete));
        assert_eq!(Endpoint::Catalog.action(&Method::GET), None);
    }
}
