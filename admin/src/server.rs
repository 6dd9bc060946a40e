//! Running an admin node: storage and Raft → chores → discovery → API, then serve until the
//! shutdown future resolves.

use crate::api::{self, AppState};
use crate::config::AdminConfig;
use crate::network::{self, Faults, RaftRpc};
use crate::node::Node;
use artstore_shared::auth::Auth;
use artstore_shared::health::Health;
use artstore_shared::tls::{PeerAddr, TlsListener};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// An admin node ready to serve.
pub struct AdminServer {
    pub node: Arc<Node>,
    pub router: axum::Router,
    pub health: Health,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer").field("node", &self.node.id).finish_non_exhaustive()
    }
}

impl AdminServer {
    /// Opens the node and builds its router; `faults` lets tests cut the node off.
    pub async fn build(cfg: AdminConfig, faults: Faults) -> anyhow::Result<AdminServer> {
        let health = Health::new();
        health.set_not_ready("raft", "starting");
        let node = Node::start(cfg.clone(), faults.clone()).await?;
        let mut tasks = vec![
            node.spawn_chores(),
            node.spawn_audit_fill(),
            spawn_health(node.clone(), health.clone()),
            tokio::spawn(crate::metrics::run(node.clone(), health.clone())),
        ];
        let client = || artstore_shared::tls::client_builder(cfg.tls_ca.as_deref());
        match &cfg.redis {
            Some(url) => tasks.push(crate::discovery::spawn(node.clone(), url.clone(), Duration::from_secs(1))),
            None => tasks.push(crate::discovery::spawn_probes(
                node.clone(),
                client()?.timeout(Duration::from_secs(2)).connect_timeout(Duration::from_secs(1)).build()?,
                Duration::from_secs(2),
            )),
        }
        let limits = artstore_shared::limits::PublicLimits::from_settings(
            &cfg.cors_origins,
            cfg.rate_limit_per_address,
            cfg.rate_limit_per_caller,
            &cfg.trusted_proxies,
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        let state = AppState {
            proxies: Arc::new(limits.proxies.clone()),
            node: node.clone(),
            auth: Auth(node.verifier.clone()),
            http: client()?.timeout(Duration::from_secs(150)).build()?,
            elements: artstore_shared::clients::ElementClient::with_client(
                client()?.timeout(Duration::from_secs(120)).connect_timeout(Duration::from_secs(2)).build()?,
            ),
        };
        let rpc = RaftRpc {
            me: node.id,
            raft: node.raft.clone(),
            secret: cfg.cluster_secret.clone(),
            faults,
            node: node.clone(),
        };
        let router = artstore_shared::telemetry::instrument(
            artstore_shared::limits::apply(
                api::router(state).layer(axum::extract::DefaultBodyLimit::max(artstore_shared::limits::MAX_JSON_BODY)),
                limits,
            ),
            health.clone(),
        )
        .merge(network::routes(rpc));
        Ok(AdminServer { node, router, health, tasks })
    }

    /// Serves plain HTTP until `shutdown` resolves, then stops Raft.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.run_with(listener, None, shutdown).await
    }

    /// Serves HTTPS when `tls` is given, plain HTTP otherwise, until `shutdown` resolves;
    /// then stops Raft.
    pub async fn run_with(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %listener.local_addr()?, node = self.node.id, tls = tls.is_some(), "admin node serving");
        let health = self.health.clone();
        let stop = async move {
            shutdown.await;
            health.set_not_ready("raft", "shutting down");
        };
        let app = self.router.clone().into_make_service_with_connect_info::<PeerAddr>();
        match tls {
            Some(t) => axum::serve(TlsListener::new(listener, t)?, app).with_graceful_shutdown(stop).await?,
            None => {
                axum::serve(artstore_shared::tls::NoDelayListener(listener), app).with_graceful_shutdown(stop).await?
            }
        }
        self.stop().await;
        Ok(())
    }

    /// Stops the chores and Raft (after the listener serving [`AdminServer::router`] closed).
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.node.raft.shutdown().await;
        tracing::info!("admin node stopped");
    }
}

/// Keeps `/health/ready` true to the node: ready with a known leader and a bootstrapped
/// state; Redis down shows as degraded.
fn spawn_health(node: Arc<Node>, health: Health) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            match (node.leader(), node.read(|s| s.bootstrapped_at.is_some())) {
                (Some(_), true) => health.set_ready("raft"),
                (None, _) => health.set_not_ready("raft", "no leader"),
                (Some(_), false) => health.set_not_ready("raft", "bootstrapping"),
            }
            match *node.redis_up.read().unwrap_or_else(|e| e.into_inner()) {
                Some(false) => health.set_degraded("redis", "redis is unreachable; registry not published"),
                Some(true) => health.set_ready("redis"),
                None => {}
            }
        }
    })
}
