//! Keeps a persistent cache current from the WAL: after every commit (and once a second)
//! it reads the records past the cache's checkpoint, upserts the sidecars they name from
//! the files, and moves the checkpoint. When the database is down it marks the cache
//! degraded and retries with back-off; when it comes back it catches up from the
//! checkpoint, without a rescan. A cache with no checkpoint, or one the WAL no longer
//! reaches back to, is rebuilt from the files first.

use crate::cache::CachedSidecar;
use crate::sidecar::Sidecar;
use crate::store::Store;
use crate::wal::{self, WalRecord, WalTail};
use artstore_shared::health::Health;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The cache's degraded reason while the applier rebuilds it from the files.
pub const REBUILDING: &str = "rebuilding from the files";

/// Runs until the task is aborted.
pub async fn run(store: Arc<Store>, health: Health) {
    let cache = store.cache().clone();
    let sync = store.cache_sync().clone();
    let wal_dir = store.wal_dir();
    let root = store.root().to_owned();
    let mut tail: Option<WalTail> = None;
    let mut saved = 0u64;
    let mut backoff = Duration::from_millis(500);
    sync.attach_health(health);
    let fail = |why: String, backoff: &mut Duration| {
        sync.degrade(&why);
        *backoff = (*backoff * 2).min(Duration::from_secs(10));
    };
    loop {
        if tail.is_none() {
            let first = wal::first_retained_seq(&wal_dir).ok().flatten();
            match cache.checkpoint().await {
                // The WAL still holds everything after the checkpoint: catch up from it.
                Ok(Some(cp)) if first.is_none_or(|f| f <= cp + 1) => {
                    tail = Some(WalTail::new(&wal_dir, cp));
                    saved = cp;
                    sync.set_applied(cp);
                }
                Ok(cp) => {
                    tracing::info!(checkpoint = ?cp, "cache has no usable checkpoint: rebuilding it from the files");
                    // Degraded while the rows are replaced (shown on /health/ready too): direct
                    // updates wait for the applier, lookups that need the cache answer 503.
                    sync.degrade(REBUILDING);
                    let r = crate::rebuild::rebuild(&root, cache.as_ref(), &|r| {
                        tracing::debug!(documents = r.documents, "rebuild progress");
                    })
                    .await;
                    match r {
                        Ok(r) => tracing::info!(
                            documents = r.documents,
                            unreadable = r.unreadable.len(),
                            elapsed_ms = r.elapsed.as_millis() as u64,
                            "cache rebuilt"
                        ),
                        Err(e) => fail(format!("rebuild failed: {e}"), &mut backoff),
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(e) => {
                    fail(e.to_string(), &mut backoff);
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            }
        }
        let Some(t) = tail.as_mut() else { continue };
        let records = match t.read_new() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the wal");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let position = t.position();
        // The newest sidecar of each file named by a commit, read from the files.
        let mut named: HashMap<Uuid, String> = HashMap::new();
        for r in records {
            if let WalRecord::Commit { file_id: Some(f), sidecar: Some(s), .. } = r {
                named.insert(f, s);
            }
        }
        let root2 = root.clone();
        let entries = tokio::task::spawn_blocking(move || {
            named
                .into_values()
                .filter_map(|rel| match Sidecar::read(&root2.join(&rel)) {
                    Ok(sc) => Some(CachedSidecar { sidecar: Arc::new(sc), path: rel }),
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping a sidecar the cache cannot mirror");
                        None
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let applied = async {
            if !entries.is_empty() {
                cache.upsert_many(entries).await?;
            }
            if position > saved {
                cache.set_checkpoint(position).await?;
            }
            Ok::<_, crate::cache::CacheError>(())
        }
        .await;
        match applied {
            Ok(()) => {
                saved = position;
                sync.set_applied(position);
                sync.recover();
                backoff = Duration::from_millis(500);
                tokio::select! {
                    () = sync.notify.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(e) => {
                // Read again from the checkpoint next time: nothing is lost, the WAL keeps it.
                tail = None;
                fail(e.to_string(), &mut backoff);
                tokio::time::sleep(backoff).await;
            }
        }
    }
}
