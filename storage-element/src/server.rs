//! Running a storage element: the linear start-up (config → store and recovery → key set →
//! workers → serve), the disposition worker, and an orderly shutdown.

use crate::api::{self, AppState};
use crate::cache::{EmbeddedCache, SidecarCache};
use crate::config::ElementConfig;
use crate::pg::PgCache;
use crate::store::{Store, StoreConfig};
use artstore_shared::Clock;
use artstore_shared::auth::{Auth, TokenVerifier};
use artstore_shared::health::Health;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A storage element ready to serve.
pub struct Element {
    pub store: Arc<Store>,
    pub router: axum::Router,
    pub health: Health,
    /// Keeps a persistent cache current from the WAL (absent for the embedded cache).
    pub applier: Option<tokio::task::JoinHandle<()>>,
    /// Where the outbox relay publishes events (Kafka when configured, else in-process;
    /// standalone puts its own in-process bus here before `run`).
    pub bus: Arc<dyn artstore_shared::events::EventBus>,
    cfg: ElementConfig,
}

impl std::fmt::Debug for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Element").field("store", &self.store).finish_non_exhaustive()
    }
}

impl ElementConfig {
    /// The engine settings these config values mean.
    pub fn store_config(&self) -> anyhow::Result<StoreConfig> {
        let root = self.data.clone().ok_or_else(|| {
            anyhow::anyhow!("no data folder: give --data DIR (or data in the config, or ARTSTORE_DATA)")
        })?;
        let mut sc = StoreConfig::new(root);
        if let Some(c) = &self.cold_root {
            sc.cold_root = c.clone();
        }
        sc.initial_mode = self.initial_mode;
        sc.drain_timeout = Duration::from_secs(self.drain_timeout_secs);
        sc.max_upload_bytes = self.max_upload_bytes;
        sc.min_free_bytes = self.min_free_bytes;
        sc.cold_restore_latency = Duration::from_millis(self.cold_restore_latency_ms);
        Ok(sc)
    }
}

impl Element {
    /// Opens the store (running recovery) and builds the router.
    pub async fn build(
        cfg: ElementConfig,
        verifier: Arc<TokenVerifier>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Element> {
        let health = Health::new();
        health.set_not_ready("store", "recovering");
        let store_cfg = cfg.store_config()?;
        let cache: Arc<dyn SidecarCache> = match &cfg.cache {
            None => Arc::new(EmbeddedCache::new()),
            Some(url) => {
                let element = Store::identity(&store_cfg, clock.as_ref())?;
                health.set_degraded("cache", "connecting");
                Arc::new(PgCache::open_lazy(url, element.element_id).map_err(|e| anyhow::anyhow!("cache: {e}"))?)
            }
        };
        let (store, _report) = Store::open(store_cfg, cache, clock).await?;
        health.set_ready("store");
        // Discovery probes read the element's mode, space and workers here (no token needed).
        let info_store = store.clone();
        let info_id = cfg.element_id.clone();
        let info_health = health.downgrade();
        health.set_info(
            "element",
            Arc::new(move || match info_health.upgrade() {
                Some(h) => crate::status::element_info(&info_store, &h, info_id.as_deref()),
                None => serde_json::Value::Null,
            }),
        );
        let applier =
            store.cache().is_persistent().then(|| tokio::spawn(crate::applier::run(store.clone(), health.clone())));
        let policies = cfg
            .admin_url
            .as_deref()
            .map(|u| Arc::new(crate::policies::PolicyResolver::new(u, Duration::from_secs(60))));
        let router = artstore_shared::telemetry::instrument(
            api::router(AppState { store: store.clone(), auth: Auth(verifier), policies }),
            health.clone(),
        );
        let bus: Arc<dyn artstore_shared::events::EventBus> = match &cfg.kafka {
            Some(brokers) => {
                let mut k = artstore_shared::events::KafkaSettings::new(brokers);
                k.topic = cfg.kafka_topic.clone();
                k.options = cfg.kafka_options.clone();
                Arc::new(artstore_shared::events::KafkaBus::new(k).map_err(|e| anyhow::anyhow!("kafka: {e}"))?)
            }
            None => Arc::new(artstore_shared::events::InProcessBus::default()),
        };
        Ok(Element { store, router, health, applier, bus, cfg })
    }

    /// Serves until `shutdown` resolves, then drains and flushes.
    pub async fn run<L>(self, listener: L, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()>
    where
        L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    {
        let store = self.store.clone();
        let interval = Duration::from_secs(self.cfg.disposition_interval_secs.max(1));
        let worker = tokio::spawn(disposition_worker(store.clone(), interval));
        let metrics = tokio::spawn(crate::metrics::run(store.clone(), self.health.clone()));
        let scrub_settings = crate::scrub::ScrubSettings {
            interval_secs: self.cfg.scrub_interval_secs,
            bytes_per_sec: self.cfg.scrub_bytes_per_sec,
        };
        // Known damage is in the status before the first request is served.
        crate::scrub::restore(&store, scrub_settings).await;
        let scrub = tokio::spawn(crate::scrub::run(store.clone(), scrub_settings));
        let heartbeat = match &self.cfg.redis {
            Some(redis) => {
                let id = match &self.cfg.element_id {
                    Some(id) => id.clone(),
                    None => store.info().await?.id.to_string(),
                };
                let url = self.cfg.public_url.clone().unwrap_or_else(|| format!("http://{}", self.cfg.listen));
                let ttl = Duration::from_secs(self.cfg.heartbeat_ttl_secs.max(1));
                Some(crate::heartbeat::spawn(store.clone(), self.health.clone(), redis.clone(), id, url, ttl))
            }
            None => None,
        };
        let element_id = match &self.cfg.element_id {
            Some(id) => id.clone(),
            None => store.info().await?.id.to_string(),
        };
        let outbox = tokio::spawn(crate::outbox::run(
            store.clone(),
            self.bus.clone(),
            element_id,
            self.health.clone(),
            store.outbox().clone(),
        ));
        let health = self.health.clone();
        tracing::info!(addr = %listener.local_addr()?, root = %store.root().display(), mode = store.mode().as_str(), "storage element serving");
        axum::serve(listener, self.router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                health.set_not_ready("store", "shutting down");
                tracing::info!("shutting down: draining requests");
            })
            .await?;
        worker.abort();
        metrics.abort();
        scrub.abort();
        outbox.abort();
        if let Some(h) = heartbeat {
            h.abort();
        }
        if let Some(a) = self.applier {
            a.abort();
        }
        store.flush().await?;
        tracing::info!("storage element stopped");
        Ok(())
    }
}

/// Runs the disposition schedule and WAL pruning every `interval`.
async fn disposition_worker(store: Arc<Store>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = store.run_disposition().await {
            tracing::warn!(error = %e, "disposition run failed");
        }
        if let Err(e) = store.prune_wal() {
            tracing::warn!(error = %e, "wal pruning failed");
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
