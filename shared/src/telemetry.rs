//! Logging set-up and the HTTP middleware stack every listener shares: a request id and a
//! W3C trace context on every request and log line, one log line per error response, and
//! request metrics. Calls a role makes while serving a request carry the trace context
//! (`traceparent`, with this request's span as the parent) and the request id on
//! ([`propagate`]), so one upload can be followed from the ingester into the element.

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

/// The W3C trace-context header.
pub const TRACEPARENT: &str = "traceparent";

/// A W3C trace context: the trace, this service's span in it, and the sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    (out != [0u8; N]).then_some(out)
}

fn random_span() -> [u8; 8] {
    let mut s = [0u8; 8];
    s.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
    s
}

impl TraceContext {
    /// A new trace (no valid `traceparent` came in).
    pub fn root() -> Self {
        Self { trace_id: *uuid::Uuid::new_v4().as_bytes(), span_id: random_span(), flags: 1 }
    }

    /// Reads a `traceparent` header (version 00, or a later version's first four fields);
    /// `None` for anything malformed, all-zero ids or version ff, as the spec says.
    pub fn parse(header: &str) -> Option<Self> {
        let parts: Vec<&str> = header.trim().split('-').collect();
        let [version, trace, parent, flags, rest @ ..] = parts.as_slice() else { return None };
        let v = parse_hex::<1>(version).map(|v| v[0]).or((*version == "00").then_some(0))?;
        if v == 0xff || (v == 0 && !rest.is_empty()) {
            return None;
        }
        let flags = if *flags == "00" { 0 } else { parse_hex::<1>(flags)?[0] };
        Some(Self { trace_id: parse_hex::<16>(trace)?, span_id: parse_hex::<8>(parent)?, flags })
    }

    /// The same trace with a new span of this service's.
    pub fn child(&self) -> Self {
        Self { span_id: random_span(), ..*self }
    }

    pub fn trace_hex(&self) -> String {
        hex_of(&self.trace_id)
    }

    pub fn span_hex(&self) -> String {
        hex_of(&self.span_id)
    }

    /// The `traceparent` value naming this span as the parent.
    pub fn header(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_hex(), self.span_hex(), self.flags)
    }
}

tokio::task_local! {
    /// The trace context and request id of the request being served.
    static CURRENT: (TraceContext, String);
}

/// The trace context of the request this task serves, if any.
pub fn current_trace() -> Option<TraceContext> {
    CURRENT.try_with(|(c, _)| *c).ok()
}

/// Sets the current request's `traceparent` and request id on an outgoing call (replacing
/// any copied from the incoming request).
pub fn propagate(rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let Ok((tp, rid)) = CURRENT.try_with(|(c, rid)| (c.header(), rid.clone())) else { return rb };
    let mut h = http::HeaderMap::new();
    if let (Ok(tp), Ok(rid)) = (http::HeaderValue::from_str(&tp), http::HeaderValue::from_str(&rid)) {
        h.insert(TRACEPARENT, tp);
        h.insert(REQUEST_ID_HEADER, rid);
    }
    rb.headers(h)
}

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
    let trace = req
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse)
        .map_or_else(TraceContext::root, |parent| parent.child());
    let span = tracing::info_span!(
        "request",
        %method,
        route = %route,
        request_id = %request_id,
        trace_id = %trace.trace_hex(),
        span_id = %trace.span_hex()
    );
    let resp = CURRENT.scope((trace, request_id), next.run(req).instrument(span.clone())).await;
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
    } else if route.starts_with("/health") || route == "/metrics" {
        tracing::debug!(status = status.as_u16(), elapsed_ms = elapsed.as_millis() as u64, "served");
    } else {
        tracing::info!(status = status.as_u16(), elapsed_ms = elapsed.as_millis() as u64, "served");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_read_as_the_w3c_spec_says() {
        let t = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_hex(), "00f067aa0ba902b7");
        assert_eq!(t.header(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let c = t.child();
        assert_eq!(c.trace_id, t.trace_id);
        assert_ne!(c.span_id, t.span_id);
        // A later version's extra fields are ignored; version 00 with extra fields is not.
        assert!(TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what").is_some());
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
        let r = TraceContext::root();
        assert_eq!(TraceContext::parse(&r.header()), Some(r));
    }
}
