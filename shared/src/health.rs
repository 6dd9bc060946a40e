//! `/health/live`, `/health/ready` and `/metrics` (Prometheus text format), served on every
//! listener, and the metrics registry services add their own series to.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// The metrics registry of one process.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    /// 1 while `/health/ready` says ready, set at each scrape.
    ready: Gauge,
    /// Resident memory, read from /proc at each scrape.
    resident: Gauge,
}

/// A gauge of fractional values (seconds, ratios).
pub type GaugeF64 = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Size classes of uploads, for duration histograms: an operator compares like with like.
pub fn size_class(bytes: u64) -> &'static str {
    match bytes {
        0..=65_535 => "lt_64KiB",
        65_536..=1_048_575 => "lt_1MiB",
        1_048_576..=16_777_215 => "lt_16MiB",
        16_777_216..=268_435_455 => "lt_256MiB",
        _ => "ge_256MiB",
    }
}

/// Latency buckets for request-like durations, seconds.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];

/// Buckets for transfers that may take minutes, seconds.
pub const TRANSFER_BUCKETS: [f64; 12] = [0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("artstore");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0])
        });
        registry.register("http_requests", "HTTP requests served", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency", latency.clone());
        let ready = Gauge::default();
        registry.register("ready", "1 while the process is ready to serve (/health/ready answers 200)", ready.clone());
        let resident = Gauge::default();
        registry.register("process_resident_memory_bytes", "Resident memory of the process", resident.clone());
        let info = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register("build_info", "The running version (always 1)", info.clone());
        info.get_or_create(&vec![("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned())]).set(1);
        let started = Gauge::<i64>::default();
        registry.register("process_start_time_seconds", "Start of the process, Unix time", started.clone());
        started.set(chrono::Utc::now().timestamp());
        Self { registry: Mutex::new(registry), requests, latency, ready, resident }
    }

    /// Records one served request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { method: method.to_owned(), route: route.to_owned(), status })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { method: method.to_owned(), route: route.to_owned() })
            .observe(elapsed.as_secs_f64());
    }

    /// Registers and returns a counter.
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        let c = Counter::default();
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, c.clone());
        c
    }

    /// Registers and returns a gauge.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        let g = Gauge::default();
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, g.clone());
        g
    }

    /// Registers and returns a gauge of fractional values.
    pub fn gauge_f64(&self, name: &str, help: &str) -> GaugeF64 {
        let g = GaugeF64::default();
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, g.clone());
        g
    }

    /// Registers and returns a histogram.
    pub fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let h = Histogram::new(buckets.iter().copied());
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, h.clone());
        h
    }

    /// Registers a family of histograms told apart by one label (e.g. `size_class`).
    pub fn histogram_by(&self, name: &str, help: &str, buckets: &'static [f64]) -> HistogramBy {
        let f = Family::<Vec<(String, String)>, Histogram, Buckets>::new_with_constructor(Buckets(buckets));
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, f.clone());
        HistogramBy(f)
    }

    /// Registers a family of gauges told apart by labels (e.g. an element's `mode`).
    pub fn gauge_by(&self, name: &str, help: &str) -> Family<Vec<(String, String)>, Gauge> {
        let f = Family::<Vec<(String, String)>, Gauge>::default();
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, f.clone());
        f
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
            && let Some(pages) = statm.split_whitespace().nth(1).and_then(|p| p.parse::<i64>().ok())
        {
            self.resident.set(pages * 4096);
        }
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }
}

/// A histogram family keyed by one label's value.
#[derive(Clone, Debug)]
pub struct HistogramBy(Family<Vec<(String, String)>, Histogram, Buckets>);

/// Makes each histogram of a [`HistogramBy`] with the same buckets.
#[derive(Clone, Debug)]
pub struct Buckets(&'static [f64]);

impl prometheus_client::metrics::family::MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

impl HistogramBy {
    /// Records `value` under `label=value_of_label`.
    pub fn observe(&self, label: &str, value_of_label: &str, value: f64) {
        self.0.get_or_create(&vec![(label.to_owned(), value_of_label.to_owned())]).observe(value);
    }
}

/// Liveness, readiness and metrics of one process, shared by all its listeners.
#[derive(Clone, Debug)]
pub struct Health {
    inner: Arc<HealthInner>,
}

/// The state of one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Ready,
    /// Working with reduced service (e.g. a cache catching up); still ready.
    Degraded(String),
    /// Not able to serve; readiness fails.
    NotReady(String),
}

/// Computes a live fact a service shows on `/health/ready` (e.g. an element's mode and
/// free space, which discovery probes read).
pub type InfoFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

struct HealthInner {
    checks: Mutex<BTreeMap<String, Check>>,
    info: Mutex<BTreeMap<String, InfoFn>>,
    metrics: Metrics,
}

impl std::fmt::Debug for HealthInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthInner").field("checks", &self.checks).finish_non_exhaustive()
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Ready until a component says otherwise.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(HealthInner {
                checks: Mutex::new(BTreeMap::new()),
                info: Mutex::new(BTreeMap::new()),
                metrics: Metrics::new(),
            }),
        }
    }

    fn set(&self, component: &str, c: Check) {
        self.inner.checks.lock().unwrap_or_else(|e| e.into_inner()).insert(component.to_owned(), c);
    }

    /// Marks a component ready.
    pub fn set_ready(&self, component: &str) {
        self.set(component, Check::Ready);
    }

    /// Marks a component degraded (still ready), with the reason shown on `/health/ready`.
    pub fn set_degraded(&self, component: &str, reason: impl Into<String>) {
        self.set(component, Check::Degraded(reason.into()));
    }

    /// Marks a component not ready, with the reason shown on `/health/ready`.
    pub fn set_not_ready(&self, component: &str, reason: impl Into<String>) {
        self.set(component, Check::NotReady(reason.into()));
    }

    /// Shows `f()` under `key` on `/health/ready`, computed at each request.
    pub fn set_info(&self, key: &str, f: InfoFn) {
        self.inner.info.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_owned(), f);
    }

    /// The state a component last reported (`None`: it never did).
    pub fn check(&self, component: &str) -> Option<Check> {
        self.inner.checks.lock().unwrap_or_else(|e| e.into_inner()).get(component).cloned()
    }

    /// A handle that does not keep this health alive: for info functions that read it
    /// (holding the health itself from inside it would never free it).
    pub fn downgrade(&self) -> WeakHealth {
        WeakHealth(Arc::downgrade(&self.inner))
    }

    /// Whether every component is ready (degraded counts as ready).
    pub fn is_ready(&self) -> bool {
        self.inner.checks.lock().unwrap_or_else(|e| e.into_inner()).values().all(|c| !matches!(c, Check::NotReady(_)))
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// A [`Health`] that may be gone; see [`Health::downgrade`].
#[derive(Clone, Debug)]
pub struct WeakHealth(std::sync::Weak<HealthInner>);

impl WeakHealth {
    /// The health, while any strong handle lives.
    pub fn upgrade(&self) -> Option<Health> {
        self.0.upgrade().map(|inner| Health { inner })
    }
}

/// The health and metrics routes.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/health/live", get(|| async { axum::Json(serde_json::json!({"status": "live"})) }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(health)
}

/// Readiness of one service: (ready, degraded, the `/health/ready` body).
fn report(h: &Health) -> (bool, bool, serde_json::Value) {
    let checks = h.inner.checks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let ready = checks.values().all(|c| !matches!(c, Check::NotReady(_)));
    let degraded = checks.values().any(|c| matches!(c, Check::Degraded(_)));
    let info: Vec<(String, InfoFn)> =
        h.inner.info.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, f)| (k.clone(), f.clone())).collect();
    let mut body = serde_json::json!({
        "status": status_word(ready, degraded),
        "checks": checks.iter().map(|(k, v)| (k.clone(), match v {
            Check::Ready => serde_json::json!({"status": "ready"}),
            Check::Degraded(r) => serde_json::json!({"status": "degraded", "reason": r}),
            Check::NotReady(r) => serde_json::json!({"status": "not_ready", "reason": r}),
        })).collect::<serde_json::Map<_, _>>(),
    });
    for (k, f) in info {
        body[k] = f();
    }
    (ready, degraded, body)
}

fn status_word(ready: bool, degraded: bool) -> &'static str {
    if !ready {
        "not_ready"
    } else if degraded {
        "degraded"
    } else {
        "ready"
    }
}

async fn ready(State(h): State<Health>) -> Response {
    let (ready, _, body) = report(&h);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

/// `/health/ready` of several services in one process (standalone): ready when every one
/// is; the body names each service's own report under `roles`.
pub fn combined_ready(roles: Vec<(&'static str, Health)>) -> Router {
    Router::new().route(
        "/health/ready",
        get(move || {
            let reports: Vec<_> = roles.iter().map(|(name, h)| (*name, report(h))).collect();
            async move {
                let ready = reports.iter().all(|(_, (r, _, _))| *r);
                let degraded = reports.iter().any(|(_, (_, d, _))| *d);
                let body = serde_json::json!({
                    "status": status_word(ready, degraded),
                    "roles": reports.into_iter().map(|(n, (_, _, b))| (n.to_owned(), b)).collect::<serde_json::Map<_, _>>(),
                });
                let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (status, axum::Json(body)).into_response()
            }
        }),
    )
}

async fn metrics(State(h): State<Health>) -> Response {
    h.metrics().ready.set(i64::from(report(&h).0));
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], h.metrics().render())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn combined_readiness_needs_every_role() {
        let (a, b) = (Health::new(), Health::new());
        b.set_degraded("cache", "catching up");
        let app = combined_ready(vec![("admin", a.clone()), ("element", b.clone())]);
        let get = || axum::http::Request::get("/health/ready").body(axum::body::Body::empty()).unwrap();
        let r = app.clone().oneshot(get()).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body = http_body_util::BodyExt::collect(r.into_body()).await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], "degraded");
        assert_eq!(v["roles"]["element"]["checks"]["cache"]["reason"], "catching up");
        assert_eq!(v["roles"]["admin"]["status"], "ready");
        a.set_not_ready("raft", "no leader");
        assert_eq!(app.oneshot(get()).await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn ready_flips_with_components() {
        let h = Health::new();
        h.set_not_ready("recovery", "replaying wal");
        let app = router(h.clone());
        let r = app
            .clone()
            .oneshot(axum::http::Request::get("/health/ready").body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        h.set_ready("recovery");
        let get = || axum::http::Request::get("/health/ready").body(axum::body::Body::empty()).unwrap();
        assert_eq!(app.clone().oneshot(get()).await.unwrap().status(), StatusCode::OK);
        h.set_degraded("cache", "postgresql is unreachable");
        let r = app.oneshot(get()).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "degraded is still ready");
        let body = http_body_util::BodyExt::collect(r.into_body()).await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], "degraded");
        assert_eq!(v["checks"]["cache"]["reason"], "postgresql is unreachable");
        assert_eq!(h.check("cache"), Some(Check::Degraded("postgresql is unreachable".into())));
        assert_eq!(h.check("nothing"), None);
        let weak = h.downgrade();
        assert!(weak.upgrade().is_some());
    }

    #[test]
    fn metrics_render_prometheus_text() {
        let h = Health::new();
        h.metrics().observe_request("GET", "/x", 200, Duration::from_millis(3));
        let text = h.metrics().render();
        assert!(text.contains("artstore_http_requests_total{method=\"GET\",route=\"/x\",status=\"200\"} 1"), "{text}");
    }
}
