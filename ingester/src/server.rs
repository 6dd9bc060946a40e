//! Running an ingester: the linear start-up (config → data folder → discovery → sessions →
//! routes → workers → serve) and an orderly shutdown.

use crate::api::{self, AppState};
use crate::config::IngesterConfig;
use crate::store::Ingester;
use artstore_shared::auth::{Auth, TokenVerifier};
use artstore_shared::discovery::{self, Discovery, DiscoveryStatus};
use artstore_shared::health::Health;
use artstore_shared::workers::Workers;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// An ingester ready to serve.
pub struct IngesterServer {
    pub ingester: Arc<Ingester>,
    pub router: axum::Router,
    pub health: Health,
}

impl std::fmt::Debug for IngesterServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngesterServer").finish_non_exhaustive()
    }
}

/// The discovery source the settings name (see [`discovery::from_settings`]).
pub fn discovery_of(cfg: &IngesterConfig, data: &std::path::Path) -> anyhow::Result<Arc<dyn Discovery>> {
    discovery::from_settings(
        cfg.redis.as_deref(),
        cfg.elements.as_deref(),
        &data.join("registry.json"),
        cfg.probe_interval_ms,
    )
}

impl IngesterServer {
    /// Opens the data folder, starts discovery and builds the routes.
    pub async fn build(cfg: IngesterConfig, verifier: Arc<TokenVerifier>) -> anyhow::Result<Self> {
        let data = cfg.data.clone().ok_or_else(|| {
            anyhow::anyhow!("no data folder: give --data DIR (or data in the config, or ARTSTORE_DATA)")
        })?;
        std::fs::create_dir_all(&data).map_err(|e| anyhow::anyhow!("{}: {e}", data.display()))?;
        let health = Health::new();
        let discovery = discovery_of(&cfg, &data)?;
        let limits = cfg.public_limits()?;
        let ingester = Arc::new(Ingester::new(cfg, data, discovery, health.clone())?);
        let router = artstore_shared::telemetry::instrument(
            artstore_shared::limits::apply(
                api::router(AppState { ingester: ingester.clone(), auth: Auth(verifier) }),
                limits,
            ),
            health.clone(),
        );
        Ok(Self { ingester, router, health })
    }

    /// Starts the background work (discovery on `/health/ready`, the sweep of expired
    /// uploads); [`IngesterServer::run`] does this itself.
    pub fn spawn_workers(&self) -> Workers {
        Workers::default()
            .task(tokio::spawn(watch_discovery(self.ingester.clone(), self.health.clone())))
            .task(crate::tus::spawn_sweeper(self.ingester.clone(), Duration::from_secs(60)))
    }

    /// Serves until `shutdown` resolves.
    pub async fn run<L>(self, listener: L, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()>
    where
        L: axum::serve::Listener<Addr = std::net::SocketAddr>,
        for<'a> artstore_shared::tls::PeerAddr:
            axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
    {
        let workers = self.spawn_workers();
        tracing::info!(addr = %listener.local_addr()?, data = %self.ingester.data.display(), "ingester serving");
        let health = self.health.clone();
        axum::serve(listener, self.router.into_make_service_with_connect_info::<artstore_shared::tls::PeerAddr>())
            .with_graceful_shutdown(async move {
                shutdown.await;
                health.set_not_ready("ingester", "shutting down");
                tracing::info!("shutting down: finishing requests");
            })
            .await?;
        workers.stop().await;
        tracing::info!("ingester stopped");
        Ok(())
    }
}

/// Shows discovery on `/health/ready`: ready, or degraded with the reason.
async fn watch_discovery(ing: Arc<Ingester>, health: Health) {
    loop {
        match ing.discovery.status() {
            DiscoveryStatus::Ready => health.set_ready("discovery"),
            DiscoveryStatus::Degraded(r) => health.set_degraded("discovery", r),
        }
        let elements = ing.discovery.elements();
        let up = elements.iter().filter(|e| e.up).count();
        for mode in ["edit", "rw", "ro", "ar"] {
            let n = elements.iter().filter(|e| e.up && e.mode == mode).count();
            ing.metrics.elements.get_or_create(&vec![("mode".to_owned(), mode.to_owned())]).set(n as i64);
        }
        health.set_info("elements_up", Arc::new(move || serde_json::json!(up)));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
