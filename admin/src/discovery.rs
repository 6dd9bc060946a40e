//! Publishing the element registry to Redis (leader only) and folding element heartbeats
//! into element health (every node). Redis being down never stops the cluster: the loop
//! notes it, keeps serving, and republishes the whole registry once Redis answers again.

use crate::node::Node;
use artstore_shared::discovery::{
    Heartbeat, REGISTRY_CHANNEL, REGISTRY_KEY, Registry, RegistryElement, read_heartbeats,
};
use chrono::Utc;
use redis::AsyncCommands as _;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The registry as published, from the state.
pub fn registry_of(node: &Node) -> Registry {
    node.read(|s| Registry {
        version: s.elements_version,
        published_at: Utc::now(),
        elements: s
            .elements
            .values()
            .map(|e| RegistryElement {
                id: e.id.clone(),
                url: e.url.clone(),
                mode: e.mode.clone(),
                capacity_bytes: e.capacity_bytes,
                weight: e.weight,
                dc: e.dc.clone(),
                labels: e.labels.clone(),
            })
            .collect(),
    })
}

/// Runs the discovery loop until the task is aborted.
pub fn spawn(node: Arc<Node>, url: String, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        *node.redis_up.write().unwrap_or_else(|e| e.into_inner()) = Some(false);
        let client = match redis::Client::open(url.as_str()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, url, "redis url refused; discovery is off");
                return;
            }
        };
        let mut conn: Option<redis::aio::MultiplexedConnection> = None;
        // The registry version Redis holds, as far as this node knows (None: republish).
        let mut published: Option<(u64, tokio::time::Instant)> = None;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if conn.is_none() {
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(Duration::from_secs(2)));
                match client.get_multiplexed_async_connection_with_config(&cfg).await {
                    Ok(c) => {
                        tracing::info!("redis reachable; discovery on");
                        conn = Some(c);
                        published = None;
                    }
                    Err(e) => {
                        mark(&node, false, Some(&e));
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            match round(&node, c, &mut published).await {
                Ok(()) => mark(&node, true, None),
                Err(e) => {
                    mark(&node, false, Some(&e));
                    conn = None;
                }
            }
        }
    })
}

fn mark(node: &Node, up: bool, err: Option<&redis::RedisError>) {
    let mut g = node.redis_up.write().unwrap_or_else(|e| e.into_inner());
    if *g != Some(up) {
        match err {
            Some(e) => tracing::warn!(error = %e, "redis unreachable; the cluster goes on without discovery"),
            None => tracing::info!("redis reachable again"),
        }
    }
    *g = Some(up);
}

async fn round(
    node: &Node,
    c: &mut redis::aio::MultiplexedConnection,
    published: &mut Option<(u64, tokio::time::Instant)>,
) -> Result<(), redis::RedisError> {
    if node.is_leader() {
        let reg = registry_of(node);
        // Republished on change, after a reconnect, every 30 s, and as soon as the key is
        // missing (a flushed or replaced Redis heals within a round).
        let mut fresh = published.is_some_and(|(v, at)| v == reg.version && at.elapsed() < Duration::from_secs(30));
        if fresh {
            let exists: bool = c.exists(REGISTRY_KEY).await?;
            fresh = exists;
        }
        if !fresh {
            let body = serde_json::to_string(&reg).unwrap_or_default();
            let () = c.set(REGISTRY_KEY, body).await?;
            let _: i64 = c.publish(REGISTRY_CHANNEL, reg.version).await?;
            tracing::debug!(version = reg.version, elements = reg.elements.len(), "registry published to redis");
            *published = Some((reg.version, tokio::time::Instant::now()));
        }
    } else {
        *published = None;
    }
    let ids: Vec<String> = node.read(|s| s.elements.keys().cloned().collect());
    let beats: HashMap<String, Heartbeat> = read_heartbeats(c, &ids).await?.into_iter().collect();
    *node.heartbeats.write().unwrap_or_else(|e| e.into_inner()) = beats;
    Ok(())
}

/// Without Redis: asks each registered element's `/health/ready` every `interval` and keeps
/// the answers as heartbeats, so element health, mode, free space, document count and
/// workers show all the same.
pub fn spawn_probes(node: Arc<Node>, http: reqwest::Client, interval: Duration) -> tokio::task::JoinHandle<()> {
    node.probing.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let els: Vec<(String, String)> =
                node.read(|s| s.elements.values().map(|e| (e.id.clone(), e.url.clone())).collect());
            let probes = els.iter().map(|(_, url)| artstore_shared::discovery::probe(&http, url));
            let answers = futures_util::future::join_all(probes).await;
            let beats: HashMap<String, Heartbeat> = els
                .into_iter()
                .zip(answers)
                .filter(|(_, p)| p.ok)
                .map(|((id, url), p)| {
                    let hb = Heartbeat {
                        id: id.clone(),
                        url,
                        mode: p.mode.unwrap_or_default(),
                        free_bytes: p.free_bytes.unwrap_or(0),
                        total_bytes: p.total_bytes.unwrap_or(0),
                        at: p.at,
                        documents: p.documents,
                        workers: p.workers,
                    };
                    (id, hb)
                })
                .collect();
            *node.heartbeats.write().unwrap_or_else(|e| e.into_inner()) = beats;
        }
    })
}
