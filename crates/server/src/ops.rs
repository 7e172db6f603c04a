//! Operations: Prometheus metrics (requests by route and status, latencies, bytes in and out,
//! upload sessions, tokens), the request-tracking middleware, and the health endpoints.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;

/// The route a response belongs to, set by handlers that route by themselves (`/v2`).
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

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
    pub fn bytes_in(&self, n: u64) {
        metrics::counter!("berth_bytes_received_total").increment(n);
    }
    pub fn bytes_out(&self, n: u64) {
        metrics::counter!("berth_bytes_sent_total").increment(n);
    }
    pub fn upload_started(&self) {
        metrics::counter!("berth_upload_sessions_started_total").increment(1);
        metrics::gauge!("berth_upload_sessions_active").increment(1.0);
    }
    pub fn upload_finished(&self, outcome: &'static str) {
        metrics::counter!("berth_upload_sessions_finished_total", "outcome" => outcome).increment(1);
        metrics::gauge!("berth_upload_sessions_active").decrement(1.0);
    }
}

fn static_label(path: &str) -> &'static str {
    match path {
        "/service/token" => "token",
        "/metrics" => "metrics",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        _ => "other",
    }
}

/// Counts and times every request by route, method and status, and writes the access log.
pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let route = resp.extensions().get::<RouteLabel>().map(|r| r.0).unwrap_or_else(|| static_label(&path));
    let status = resp.status().as_u16();
    let elapsed = start.elapsed();
    let labels = [("route", route.to_string()), ("method", method.to_string()), ("status", status.to_string())];
    metrics::counter!("berth_http_requests_total", &labels).increment(1);
    metrics::histogram!("berth_http_request_duration_seconds", &labels[..2]).record(elapsed.as_secs_f64());
    tracing::debug!(target: "berth::access", %method, path, status, route, micros = elapsed.as_micros() as u64, "request");
    resp
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (StatusCode::OK, [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the metadata store answers.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.meta.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "metadata store unavailable\n").into_response()
        }
    }
}
