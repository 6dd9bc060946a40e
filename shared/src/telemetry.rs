//! Logging set-up and the HTTP middleware stack every listener shares: a request id on
//! every request and log line, one log line per error response, and request metrics.

use crate::error::LoggedError;
use crate::health::Health;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderName;
use std::time::Instant;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tracing::Instrument as _;

/// The header carrying the request id across services.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-friendly, for a terminal.
    #[default]
    Pretty,
    /// One JSON object per line, for production.
    Json,
}

/// Installs the global tracing subscriber. `RUST_LOG` overrides `default_filter`.
/// Calling it twice is harmless (the second call does nothing).
pub fn init(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// Wraps a service router with the shared layers and merges the health and metrics routes.
pub fn instrument(router: Router, health: Health) -> Router {
    let header = HeaderName::from_static(REQUEST_ID_HEADER);
    router
        .merge(crate::health::router(health.clone()))
        .layer(axum::middleware::from_fn_with_state(health, observe))
        .layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(SetRequestIdLayer::new(header, MakeRequestUuid))
}

async fn observe(axum::extract::State(health): axum::extract::State<Health>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let request_id =
        req.extensions().get::<RequestId>().and_then(|r| r.header_value().to_str().ok()).unwrap_or("-").to_owned();
    let span = tracing::info_span!("request", %method, route = %route, request_id = %request_id);
    let resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status();
    let elapsed = started.elapsed();
    health.metrics().observe_request(method.as_str(), &route, status.as_u16(), elapsed);
    let _g = span.enter();
    if let Some(err) = resp.extensions().get::<LoggedError>() {
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), kind = err.kind, "{}", err.detail);
        } else {
            tracing::info!(status = status.as_u16(), kind = err.kind, "{}", err.detail);
        }
    } else {
        tracing::debug!(status = status.as_u16(), elapsed_ms = elapsed.as_millis() as u64, "served");
    }
    resp
}
