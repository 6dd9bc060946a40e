//! What every public listener (admin, ingester, query) puts in front of its routes: a CORS
//! allow-list for browsers on other origins, and request-rate limits per client address and
//! per caller, answered with `429` problem+json and `Retry-After`. Health, metrics and the
//! admin nodes' Raft traffic are never limited.

use crate::client_addr::TrustedProxies;
use crate::error::{ApiError, ErrorCode};
use crate::tls::PeerAddr;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Largest JSON request body the admin and query APIs read (uploads are multipart and
/// streamed, not JSON); larger ones answer 413.
pub const MAX_JSON_BODY: usize = 1 << 20;

/// The public API's guards, as configured for one role.
#[derive(Debug, Clone, Default)]
pub struct PublicLimits {
    /// Browser origins allowed to call the API (exact `scheme://host[:port]`).
    pub cors_origins: Vec<String>,
    /// Requests per second one client address may make (bursts of twice that); 0: no limit.
    pub per_address: f64,
    /// Requests per second one caller (the token's subject) may make; 0: no limit.
    pub per_caller: f64,
    /// Front proxies whose `X-Forwarded-For` names the client.
    pub proxies: TrustedProxies,
}

impl PublicLimits {
    /// From a role's settings; names a trusted proxy it cannot read.
    pub fn from_settings(
        cors_origins: &[String],
        per_address: f64,
        per_caller: f64,
        trusted_proxies: &[String],
    ) -> Result<Self, String> {
        Ok(Self {
            cors_origins: cors_origins.to_vec(),
            per_address,
            per_caller,
            proxies: TrustedProxies::parse(trusted_proxies).map_err(|e| format!("trusted_proxies: {e}"))?,
        })
    }
}

/// Wraps `router` with CORS and the rate limits.
pub fn apply(router: Router, limits: PublicLimits) -> Router {
    let cors = Cors { origins: Arc::new(limits.cors_origins.clone()) };
    let limiter = Limiter {
        address: Buckets::new(limits.per_address),
        caller: Buckets::new(limits.per_caller),
        proxies: Arc::new(limits.proxies),
    };
    // With both limits off, requests skip the limiter (no token decoding, no lock).
    let router = if limiter.address.rate > 0.0 || limiter.caller.rate > 0.0 {
        router.layer(axum::middleware::from_fn_with_state(limiter, rate_limit))
    } else {
        router
    };
    router.layer(axum::middleware::from_fn_with_state(cors, cors_mw))
}

// ---------------------------------------------------------------- CORS

/// Answers browser preflights for allowed origins and adds `Access-Control-Allow-Origin`,
/// the allow and expose headers. Requests without an `Origin` (every non-browser client,
/// and tus's own `OPTIONS`) pass untouched; an origin not on the list gets no CORS headers,
/// so the browser refuses to hand the answer to its page.
#[derive(Clone, Debug)]
struct Cors {
    origins: Arc<Vec<String>>,
}

const CORS_METHODS: &str = "GET, HEAD, POST, PATCH, PUT, DELETE, OPTIONS";
const CORS_ALLOW_HEADERS: &str = "authorization, content-type, content-digest, idempotency-key, if-none-match, range, traceparent, tus-resumable, upload-length, upload-offset, upload-metadata, upload-checksum, upload-defer-length, upload-concat, x-http-method-override, x-request-id";
const CORS_EXPOSE_HEADERS: &str = "location, etag, content-range, retry-after, tus-resumable, tus-version, tus-extension, tus-max-size, tus-checksum-algorithm, upload-offset, upload-length, upload-expires, upload-metadata, artstore-file-id, artstore-element-id, idempotent-replayed, repr-digest, x-request-id";

async fn cors_mw(State(cors): State<Cors>, req: Request, next: Next) -> Response {
    let origin = req.headers().get("origin").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let Some(origin) = origin.filter(|o| cors.origins.iter().any(|a| a == o)) else {
        return next.run(req).await;
    };
    let allow = HeaderValue::from_str(&origin).unwrap_or_else(|_| HeaderValue::from_static("null"));
    let preflight = req.method() == Method::OPTIONS && req.headers().contains_key("access-control-request-method");
    let mut resp = if preflight {
        let mut r = Response::new(axum::body::Body::empty());
        *r.status_mut() = axum::http::StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        h.insert("access-control-allow-methods", HeaderValue::from_static(CORS_METHODS));
        h.insert("access-control-allow-headers", HeaderValue::from_static(CORS_ALLOW_HEADERS));
        h.insert("access-control-max-age", HeaderValue::from_static("600"));
        r
    } else {
        let mut r = next.run(req).await;
        r.headers_mut().insert("access-control-expose-headers", HeaderValue::from_static(CORS_EXPOSE_HEADERS));
        r
    };
    let h = resp.headers_mut();
    h.insert("access-control-allow-origin", allow);
    h.append(HeaderName::from_static("vary"), HeaderValue::from_static("origin"));
    resp
}

// ---------------------------------------------------------------- rate limits

/// Token buckets by key: `rate` tokens a second, up to twice that saved.
#[derive(Clone, Debug)]
struct Buckets {
    rate: f64,
    map: Arc<Mutex<HashMap<String, (f64, Instant)>>>,
}

/// Buckets kept before idle ones (full again) are dropped.
const MAX_BUCKETS: usize = 100_000;

impl Buckets {
    fn new(rate: f64) -> Self {
        Self { rate: if rate.is_finite() && rate > 0.0 { rate } else { 0.0 }, map: Arc::default() }
    }

    fn burst(&self) -> f64 {
        (self.rate * 2.0).max(1.0)
    }

    /// Takes one token for `key`; `Err(seconds)` until one is there.
    fn take(&self, key: &str, now: Instant) -> Result<(), u64> {
        if self.rate == 0.0 {
            return Ok(());
        }
        let burst = self.burst();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_BUCKETS {
            let rate = self.rate;
            map.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = map.entry(key.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[derive(Clone, Debug)]
struct Limiter {
    address: Buckets,
    caller: Buckets,
    proxies: Arc<TrustedProxies>,
}

fn exempt(path: &str) -> bool {
    path == "/metrics" || path.starts_with("/health/") || path.starts_with("/raft/")
}

fn peer_ip(req: &Request) -> Option<IpAddr> {
    let ext = req.extensions();
    ext.get::<ConnectInfo<PeerAddr>>()
        .map(|c| c.0.0.ip())
        .or_else(|| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
}

/// The bearer token's subject, read without checking the signature: the caller's bucket
/// only shares capacity fairly; a forged subject still counts against its address.
fn caller_of(req: &Request) -> Option<String> {
    let auth = req.headers().get("authorization")?.to_str().ok()?;
    let token = auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("bearer "))?;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["sub"].as_str().map(str::to_owned)
}

async fn rate_limit(State(l): State<Limiter>, req: Request, next: Next) -> Response {
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let now = Instant::now();
    if l.address.rate > 0.0
        && let Some(peer) = peer_ip(&req)
    {
        let client = l.proxies.client_ip(peer, req.headers());
        if let Err(secs) = l.address.take(&client.to_string(), now) {
            return too_many(secs, format!("too many requests from {client}; retry in {secs} s"));
        }
    }
    if l.caller.rate > 0.0
        && let Some(sub) = caller_of(&req)
        && let Err(secs) = l.caller.take(&sub, now)
    {
        return too_many(secs, format!("too many requests by {sub}; retry in {secs} s"));
    }
    next.run(req).await
}

fn too_many(secs: u64, detail: String) -> Response {
    let mut r = ApiError::typed(ErrorCode::TooManyRequests, "rate-limited", detail).into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert("retry-after", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_bursts_then_the_rate() {
        let b = Buckets::new(10.0);
        let t0 = Instant::now();
        for i in 0..20 {
            assert!(b.take("a", t0).is_ok(), "burst request {i}");
        }
        assert_eq!(b.take("a", t0), Err(1));
        assert!(b.take("b", t0).is_ok(), "another key has its own bucket");
        // A tenth of a second later one more token is there, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.take("a", t1).is_ok());
        assert!(b.take("a", t1).is_err());
        // Off means off.
        let off = Buckets::new(0.0);
        for _ in 0..10_000 {
            assert!(off.take("a", t0).is_ok());
        }
    }

    #[test]
    fn the_caller_is_the_tokens_subject() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"ann","roles":["reader"]}"#);
        let req = Request::builder()
            .header("authorization", format!("Bearer eyJhbGciOiJSUzI1NiJ9.{claims}.sig"))
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(caller_of(&req).as_deref(), Some("ann"));
        let req =
            Request::builder().header("authorization", "Bearer nonsense").body(axum::body::Body::empty()).unwrap();
        assert_eq!(caller_of(&req), None);
    }
}
