//! Operations: Prometheus metrics (requests by route and status, latencies, bytes in and out,
//! upload sessions, tokens), the request-tracking middleware, and the health endpoints.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;

/// The route a response belongs to, set by handlers that route by themselves (`/v2`).
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

/// Who made a request, set by handlers that authenticated it (for the access log).
#[derive(Debug, Clone)]
pub struct PrincipalLabel(pub Arc<str>);

/// A status code as a `&'static str` label (every status Berth sends; others as `other`).
fn status_label(status: u16) -> &'static str {
    const KNOWN: &[(u16, &str)] = &[
        (200, "200"), (201, "201"), (202, "202"), (204, "204"), (206, "206"), (301, "301"), (302, "302"),
        (304, "304"), (307, "307"), (308, "308"), (400, "400"), (401, "401"), (403, "403"), (404, "404"),
        (405, "405"), (408, "408"), (409, "409"), (411, "411"), (413, "413"), (415, "415"), (416, "416"),
        (422, "422"), (429, "429"), (431, "431"), (500, "500"), (501, "501"), (502, "502"), (503, "503"),
        (504, "504"),
    ];
    KNOWN.iter().find(|(c, _)| *c == status).map(|(_, l)| *l).unwrap_or(match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    })
}

/// Handle to the process-wide metrics registry.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Installs the Prometheus recorder once per process and returns its handle.
    pub fn get() -> Metrics {
        static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
        let handle = HANDLE
            .get_or_init(|| {
                let recorder = PrometheusBuilder::new()
                    .set_buckets_for_metric(
                        Matcher::Suffix("_seconds".into()),
                        &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
                    )
                    .map(|b| b.build_recorder())
                    .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
                let handle = recorder.handle();
                // Fails only if another recorder is installed (tests); the handle still renders.
                let _ = metrics::set_global_recorder(recorder);
                handle
            })
            .clone();
        Metrics { handle }
    }
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

fn static_label(path: &str) -> &'static str {
    match path {
        "/service/token" => "token",
        "/metrics" => "metrics",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        p if p == "/api/v1" || p.starts_with("/api/v1/") => "admin",
        _ => "other",
    }
}

/// The metrics label of a request method: the methods of HTTP and WebDAV's few that clients send
/// by mistake map to themselves, anything else to `other`, so a client cannot create labels.
pub fn method_label(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "POST" => "POST",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

/// Counts and times every request by route, method and status, and writes the access log.
pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method());
    let path = crate::text::cap(req.uri().path(), crate::text::MAX_LOGGED_PATH).into_owned();
    let client = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let resp = next.run(req).await;
    let route = resp.extensions().get::<RouteLabel>().map(|r| r.0).unwrap_or_else(|| static_label(&path));
    let principal = resp.extensions().get::<PrincipalLabel>().map(|p| p.0.clone());
    // Berth chooses every status it sends, so the status set is closed too.
    let status = resp.status().as_u16();
    let elapsed = start.elapsed();
    let labels = [("route", route), ("method", method), ("status", status_label(status))];
    metrics::counter!("berth_http_requests_total", &labels).increment(1);
    metrics::histogram!("berth_http_request_duration_seconds", &labels[..2]).record(elapsed.as_secs_f64());
    tracing::debug!(
        target: "berth::access",
        method,
        path,
        status,
        route,
        client = client.map(|c| c.to_string()).unwrap_or_default(),
        principal = principal.as_deref().unwrap_or(""),
        micros = elapsed.as_micros() as u64,
        "request"
    );
    resp
}

/// `/metrics` on the main listener: identity-provider names and traffic figures are for
/// operators, so it needs an administrator's Basic credentials. Prometheus can send them
/// (`basic_auth`), or scrape the separate, unauthenticated `metrics_listen` listener instead.
pub async fn metrics_for_admins(
    State(state): State<Arc<AppState>>,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: http::HeaderMap,
) -> Response {
    let client = connect.map(|c| c.0 .0.ip());
    let challenge = |m: &str| {
        (StatusCode::UNAUTHORIZED, [(http::header::WWW_AUTHENTICATE, "Basic realm=\"berth-metrics\"")], format!("{m}\n")).into_response()
    };
    let Ok(crate::auth::Credentials::Basic { username, password }) = crate::auth::parse_authorization(&headers) else {
        return challenge("/metrics needs an administrator's Basic credentials here; or set metrics_listen for a separate listener without them");
    };
    match crate::auth::login(&state.core, &username, &password, client).await {
        Ok(p) if p.permissions.admin => metrics(State(state)).await,
        Ok(_) => (StatusCode::FORBIDDEN, "only administrators may read /metrics\n").into_response(),
        Err(e) => {
            crate::auth::audit_login_failure(&state.core, Some(&username), &e, client);
            match e {
                crate::auth::LoginError::RateLimited { retry_after, message } => {
                    (StatusCode::TOO_MANY_REQUESTS, [(http::header::RETRY_AFTER, retry_after.to_string())], format!("{message}\n")).into_response()
                }
                crate::auth::LoginError::Busy => crate::auth::busy().into_response(),
                other => challenge(&other.message()),
            }
        }
    }
}

/// `/metrics` in the Prometheus text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (StatusCode::OK, [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: both stores answer within 2 s. The body names each store's state (one line
/// each: `metadata: ok`, `storage: unavailable`), never where the stores are or the error,
/// which anyone may read here; the error goes to the log.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let r = state.core.ready(std::time::Duration::from_secs(2)).await;
    let line = |what: &str, result: &Result<(), String>| match result {
        Ok(()) => format!("{what}: ok\n"),
        Err(e) => {
            tracing::warn!(store = what, error = %e, "readiness check failed");
            format!("{what}: unavailable\n")
        }
    };
    let body = format!("{}{}", line("metadata", &r.metadata), line("storage", &r.storage));
    let status = if r.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}
