//! Running a query role: the linear start-up (config → discovery → extraction pool →
//! index → writer task → routes → serve) and an orderly shutdown (stop following events,
//! commit the index, close the listener).

use crate::api::{self, AppState};
use crate::config::QueryConfig;
use crate::extractor::{Extractor, ExtractorConfig};
use crate::feed::Sources;
use crate::service::QueryService;
use artstore_shared::auth::{Auth, TokenVerifier};
use artstore_shared::clients::{ElementClient, ServiceToken};
use artstore_shared::discovery::{self, Discovery, DiscoveryStatus};
use artstore_shared::events::{EventBus, KafkaBus, KafkaSettings};
use artstore_shared::health::Health;
use artstore_shared::workers::Workers;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What a query role is started with beside its settings.
#[derive(Debug)]
pub struct QueryDeps {
    pub verifier: Arc<TokenVerifier>,
    /// The role's own token (else from the settings' client credentials).
    pub token: Option<ServiceToken>,
    /// The event bus (else Kafka from the settings, else none).
    pub bus: Option<Arc<dyn EventBus>>,
    /// The extraction pool (workers started from the `artstore` binary's
    /// `query extract-worker`).
    pub extractor: Option<Arc<Extractor>>,
    /// Discovery (else from the settings).
    pub discovery: Option<Arc<dyn Discovery>>,
}

/// A query role ready to serve.
pub struct QueryServer {
    pub service: Arc<QueryService>,
    pub router: axum::Router,
    pub health: Health,
    bus: Option<Arc<dyn EventBus>>,
}

impl std::fmt::Debug for QueryServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryServer").finish_non_exhaustive()
    }
}

/// The index folder the settings name.
pub fn index_dir(cfg: &QueryConfig) -> anyhow::Result<PathBuf> {
    cfg.index
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no index folder: give --index DIR (or index in the config, or ARTSTORE_INDEX)"))
}

/// The role's own token from the settings.
pub fn service_token(cfg: &QueryConfig) -> anyhow::Result<ServiceToken> {
    if let Some(t) = &cfg.service_token {
        return Ok(ServiceToken::Static(t.trim().to_owned()));
    }
    match (&cfg.admin_url, &cfg.client_id, &cfg.client_secret) {
        (Some(admin), Some(id), Some(secret)) => Ok(ServiceToken::client_credentials(admin, id, secret)),
        _ => anyhow::bail!(
            "the query role reads the elements under its own service account: give --admin URL, --client-id ID and ARTSTORE_CLIENT_SECRET (or ARTSTORE_SERVICE_TOKEN)"
        ),
    }
}

/// The extraction worker pool's settings for a worker program.
pub fn extractor_config(cfg: &QueryConfig, program: PathBuf, args: Vec<String>) -> ExtractorConfig {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    ExtractorConfig {
        program,
        args,
        workers: if cfg.extract_workers == 0 { cores } else { cfg.extract_workers },
        timeout: Duration::from_secs(cfg.extract_timeout_secs.max(1)),
        memory_bytes: cfg.extract_memory_mib << 20,
        limits: cfg.limits(),
    }
}

/// Sources (discovery, elements, token, extraction) from the settings and deps.
pub fn sources(cfg: &QueryConfig, root: &std::path::Path, deps: &mut QueryDeps) -> anyhow::Result<Arc<Sources>> {
    let discovery = match deps.discovery.take() {
        Some(d) => d,
        None => discovery::from_settings(
            cfg.redis.as_deref(),
            cfg.elements.as_deref(),
            &root.join("registry.json"),
            cfg.probe_interval_ms,
        )?,
    };
    let token = match deps.token.take() {
        Some(t) => t,
        None => service_token(cfg)?,
    };
    let Some(extractor) = deps.extractor.take() else { anyhow::bail!("no extraction pool given") };
    let concurrency = if cfg.extract_workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
    } else {
        cfg.extract_workers * 2
    };
    Ok(Arc::new(Sources::new(
        discovery,
        ElementClient::new(Duration::from_secs(60)),
        Arc::new(token),
        extractor,
        concurrency,
    )))
}

impl QueryServer {
    /// Opens the index, starts discovery and builds the routes.
    pub async fn build(cfg: QueryConfig, mut deps: QueryDeps) -> anyhow::Result<Self> {
        let root = index_dir(&cfg)?;
        std::fs::create_dir_all(&root).map_err(|e| anyhow::anyhow!("{}: {e}", root.display()))?;
        let health = Health::new();
        let sources = sources(&cfg, &root, &mut deps)?;
        let bus: Option<Arc<dyn EventBus>> = match (deps.bus.take(), &cfg.kafka) {
            (Some(b), _) => Some(b),
            (None, Some(brokers)) => Some(Arc::new(
                KafkaBus::new(KafkaSettings {
                    topic: cfg.kafka_topic.clone(),
                    options: cfg.kafka_options.clone(),
                    ..KafkaSettings::new(brokers)
                })
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            )),
            (None, None) => {
                tracing::warn!("no event bus (--kafka): the index follows no events; reindex keeps it current");
                None
            }
        };
        let limits = cfg.public_limits()?;
        let service = QueryService::open(cfg, root, sources, health.clone())?;
        let router = artstore_shared::telemetry::instrument(
            artstore_shared::limits::apply(
                api::router(AppState { svc: service.clone(), auth: Auth(deps.verifier.clone()) })
                    .layer(axum::extract::DefaultBodyLimit::max(artstore_shared::limits::MAX_JSON_BODY)),
                limits,
            ),
            health.clone(),
        );
        Ok(Self { service, router, health, bus })
    }

    /// Starts the index writer (fill, events, rebuilds) and the health watcher; stopping
    /// them lets the writer finish its batch and commit. [`QueryServer::run`] does this itself.
    pub fn spawn_workers(&self) -> Workers {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let writer = tokio::spawn(self.service.clone().run_writer(self.bus.clone(), stop_rx));
        Workers::default().task(tokio::spawn(watch_health(self.service.clone(), self.health.clone()))).on_stop(
            async move {
                let _ = stop_tx.send(true);
                match writer.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "index writer stopped with an error"),
                    Err(e) => tracing::warn!(error = %e, "index writer task failed"),
                }
            },
        )
    }

    /// Serves until `shutdown` resolves.
    pub async fn run<L>(self, listener: L, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()>
    where
        L: axum::serve::Listener<Addr = std::net::SocketAddr>,
        for<'a> artstore_shared::tls::PeerAddr:
            axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
    {
        let workers = self.spawn_workers();
        tracing::info!(addr = %listener.local_addr()?, index = %self.service.root.display(), "query role serving");
        let health = self.health.clone();
        axum::serve(listener, self.router.into_make_service_with_connect_info::<artstore_shared::tls::PeerAddr>())
            .with_graceful_shutdown(async move {
                shutdown.await;
                health.set_not_ready("query", "shutting down");
                tracing::info!("shutting down: finishing requests");
            })
            .await?;
        workers.stop().await;
        tracing::info!("query role stopped");
        Ok(())
    }
}

/// Shows discovery, the feed and the index on `/health/ready` and `/metrics`.
async fn watch_health(svc: Arc<QueryService>, health: Health) {
    let m = health.metrics();
    let docs = m.gauge("query_index_documents", "Documents in the live index");
    let lag = m.gauge_f64("query_visibility_lag_seconds", "Event to searchable, last batch");
    let errors = m.counter("query_feed_errors", "Indexing errors since start");
    let events = m.counter("query_feed_events", "Events read from the bus");
    let _ = svc.feed.commit_seconds.set(m.histogram(
        "query_index_commit_duration_seconds",
        "Time of one index commit of the event follower",
        &artstore_shared::health::LATENCY_BUCKETS,
    ));
    let (mut errors_seen, mut events_seen) = (0, 0);
    let s2 = svc.clone();
    health.set_info("index", Arc::new(move || serde_json::json!({"documents": s2.index().num_docs(), "feed": *s2.feed.state.lock().unwrap_or_else(|p| p.into_inner())})));
    loop {
        match svc.sources.discovery.status() {
            DiscoveryStatus::Ready => health.set_ready("discovery"),
            DiscoveryStatus::Degraded(r) => health.set_degraded("discovery", r),
        }
        health.set_ready("query");
        docs.set(svc.index().num_docs() as i64);
        lag.set(svc.feed.last_visibility_ms.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0);
        let e = svc.feed.errors.load(std::sync::atomic::Ordering::Relaxed);
        errors.inc_by(e.saturating_sub(errors_seen));
        errors_seen = e;
        let e = svc.feed.events.load(std::sync::atomic::Ordering::Relaxed);
        events.inc_by(e.saturating_sub(events_seen));
        events_seen = e;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
