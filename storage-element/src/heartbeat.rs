//! The element's heartbeat in Redis: its id, URL, mode, free space, document count and
//! workers, written every few seconds with a TTL so the admin sees it go down when it stops.

use crate::store::Store;
use artstore_shared::discovery::{Heartbeat, heartbeat_key};
use artstore_shared::health::Health;
use std::sync::Arc;
use std::time::Duration;

/// Writes heartbeats until the task is aborted; Redis being down only logs.
/// A heartbeat lives `ttl` and is renewed every third of it.
pub fn spawn(
    store: Arc<Store>,
    health: Health,
    redis_url: String,
    id: String,
    url: String,
    ttl: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = match redis::Client::open(redis_url.as_str()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "redis url refused; no heartbeats");
                return;
            }
        };
        let mut conn: Option<redis::aio::MultiplexedConnection> = None;
        let mut failing = false;
        let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(200)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let r = beat(&store, &health, &client, &mut conn, &id, &url, ttl).await;
            match (r, failing) {
                (Ok(()), true) => {
                    tracing::info!("heartbeats reach redis again");
                    failing = false;
                }
                (Err(e), false) => {
                    tracing::warn!(error = %e, "heartbeat not written; redis unreachable");
                    failing = true;
                    conn = None;
                }
                (Err(_), true) => conn = None,
                (Ok(()), false) => {}
            }
        }
    })
}

async fn beat(
    store: &Store,
    health: &Health,
    client: &redis::Client,
    conn: &mut Option<redis::aio::MultiplexedConnection>,
    id: &str,
    url: &str,
    ttl: Duration,
) -> anyhow::Result<()> {
    if conn.is_none() {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        *conn = Some(client.get_multiplexed_async_connection_with_config(&cfg).await?);
    }
    let root = store.root().to_owned();
    let (free, total) = tokio::task::spawn_blocking(move || {
        (fs4::available_space(&root).unwrap_or(0), fs4::total_space(&root).unwrap_or(0))
    })
    .await?;
    let hb = Heartbeat {
        id: id.to_owned(),
        url: url.to_owned(),
        mode: store.mode().as_str().to_owned(),
        // Room for documents: beyond the reserve (as /health/ready reports it).
        free_bytes: free.saturating_sub(store.min_free_bytes()),
        total_bytes: total,
        at: chrono::Utc::now(),
        documents: store.document_count(),
        workers: crate::status::workers(store, health),
    };
    let body = serde_json::to_string(&hb)?;
    if let Some(c) = conn.as_mut() {
        redis::cmd("SET")
            .arg(heartbeat_key(id))
            .arg(body)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async::<()>(c)
            .await?;
        // The Redis server's clock is the element's independent time reference.
        let asked = std::time::Instant::now();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(c).await?;
        if let Some(t) = chrono::DateTime::from_timestamp(secs, (micros.clamp(0, 999_999) * 1000) as u32) {
            store.retention_clock().confirm(t, asked.elapsed());
        }
    }
    Ok(())
}
