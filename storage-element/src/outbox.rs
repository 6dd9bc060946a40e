//! The outbox relay: events are published from the WAL. It tails the log from its own
//! checkpoint (`outbox.json` in the element root), turns each commit into an event named
//! after its intent's action, publishes in batches, in order, and moves the checkpoint
//! only after the bus acknowledged. A broker outage or a crash loses nothing: the WAL keeps
//! every commit past the checkpoint (segments are pruned only below it and the cache's),
//! and they are sent again. Mode changes are published when the recorded mode differs.

use crate::sidecar::Sidecar;
use crate::store::Store;
use crate::wal::{self, WalRecord, WalTail};
use artstore_shared::events::{Event, EventBus};
use artstore_shared::health::Health;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use uuid::Uuid;

/// Events in one publish call.
const BATCH: usize = 500;

/// What the relay has published.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OutboxCheckpoint {
    /// Every WAL record up to this sequence is published (or needs no event).
    pub position: u64,
    /// The element mode last announced.
    #[serde(default)]
    pub mode: Option<String>,
}

fn checkpoint_path(root: &Path) -> PathBuf {
    root.join("outbox.json")
}

/// Reads the relay's checkpoint (none yet: from the start of the WAL).
pub fn read_checkpoint(root: &Path) -> std::io::Result<OutboxCheckpoint> {
    match std::fs::read(checkpoint_path(root)) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| std::io::Error::other(format!("outbox.json: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(OutboxCheckpoint::default()),
        Err(e) => Err(e),
    }
}

fn write_checkpoint(root: &Path, cp: &OutboxCheckpoint) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(cp).map_err(std::io::Error::other)?;
    crate::durable::write_atomic(&root.join("tmp"), &checkpoint_path(root), &bytes)
}

/// The event type of a WAL intent's action.
pub fn event_type(action: &str) -> &'static str {
    match action {
        "create" => "ingested",
        "delete" => "deleted",
        "dispose" => "disposed",
        "archive" => "archived",
        "restore_ready" => "restored",
        "legal_hold_set" | "legal_hold_lifted" => "legal_hold_changed",
        "retention_extended" => "retention_extended",
        _ => "metadata_updated",
    }
}

/// Shared between the relay and the store: how far it got (for WAL pruning and health).
#[derive(Debug, Default)]
pub struct OutboxState {
    pub published: AtomicU64,
    pub backlog: AtomicU64,
}

/// Runs until aborted.
pub async fn run(
    store: Arc<Store>,
    bus: Arc<dyn EventBus>,
    element_id: String,
    health: Health,
    state: Arc<OutboxState>,
) {
    let root = store.root().to_owned();
    let wal_dir = store.wal_dir();
    let mut cp = match read_checkpoint(&root) {
        Ok(cp) => cp,
        Err(e) => {
            tracing::error!(error = %e, "outbox checkpoint unreadable; publishing from the start of the wal");
            OutboxCheckpoint::default()
        }
    };
    state.published.store(cp.position, Ordering::SeqCst);
    tracing::info!(checkpoint = cp.position, first_segment = ?wal::first_retained_seq(&wal_dir).ok().flatten(), bus = bus.name(), "outbox relay starting");
    health.set_ready("events");
    let published_total = health.metrics().counter("element_events_published", "events the outbox relay published");
    // Intents are read from the first retained segment, so a commit past the checkpoint
    // always finds its intent; commits at or before the checkpoint are not sent again.
    let mut tail = WalTail::new(&wal_dir, 0);
    let mut intents: HashMap<u64, (String, u64)> = HashMap::new();
    let mut pending: Vec<Event> = Vec::new();
    let mut pending_position = cp.position;
    let mut backoff = Duration::from_millis(200);
    let mut failing = false;
    // The mode as it was just before the last read of the WAL: every commit made before
    // that mode took effect is then in what was read, so announcing it once those are
    // published keeps a mode change behind the changes that preceded it.
    let mut mode_before_read = store.mode().as_str().to_owned();
    loop {
        if pending.is_empty() {
            mode_before_read = store.mode().as_str().to_owned();
            let records = match tail.read_new() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "outbox cannot read the wal");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut commits = Vec::new();
            for r in records {
                match r {
                    WalRecord::Intent { seq, action, revision, op, .. } => {
                        let action = if action.is_empty() { legacy_action(op) } else { action };
                        intents.insert(seq, (action, revision));
                    }
                    WalRecord::Commit { seq, intent, file_id: Some(f), sidecar: Some(s), action, revision } => {
                        let from_intent = intents.remove(&intent);
                        let meta = match (action, revision) {
                            (Some(a), Some(r)) if !a.is_empty() => Some((a, r)),
                            _ => from_intent,
                        };
                        if seq > cp.position {
                            commits.push((seq, f, s, meta));
                        }
                    }
                    WalRecord::Commit { intent, .. } | WalRecord::Abort { intent, .. } => {
                        intents.remove(&intent);
                    }
                }
            }
            pending_position = pending_position.max(tail.position());
            if !commits.is_empty() {
                let root2 = root.clone();
                let eid = element_id.clone();
                pending =
                    tokio::task::spawn_blocking(move || events_of(&root2, &eid, commits)).await.unwrap_or_default();
            }
        }
        state.backlog.store(pending.len() as u64, Ordering::Relaxed);
        let mut published_now = false;
        if !pending.is_empty() {
            let n = pending.len().min(BATCH);
            match bus.publish(&pending[..n]).await {
                Ok(()) => {
                    tracing::debug!(events = n, first = ?pending.first().and_then(|e| e.file_id), up_to = pending_position, "events published");
                    pending.drain(..n);
                    published_total.inc_by(n as u64);
                    published_now = true;
                    if failing {
                        tracing::info!("event bus reachable again; publishing the backlog");
                        health.set_ready("events");
                        failing = false;
                    }
                    backoff = Duration::from_millis(200);
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "events not published; uploads go on and the backlog waits in the wal");
                    }
                    failing = true;
                    health.set_degraded(
                        "events",
                        format!("{} unreachable: {e}; {} events waiting", bus.name(), pending.len()),
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        if pending.is_empty() && pending_position > cp.position {
            cp.position = pending_position;
            if let Err(e) = write_checkpoint(&root, &cp) {
                tracing::error!(error = %e, "outbox checkpoint not written");
            } else {
                state.published.store(cp.position, Ordering::SeqCst);
            }
        }
        // Mode changes: announced when the element's mode differs from the last announced,
        // once the commits read after the mode was seen are published.
        let mode = mode_before_read.clone();
        if cp.mode.as_deref() != Some(mode.as_str()) && pending.is_empty() {
            let e = Event {
                kind: "mode_changed".into(),
                file_id: None,
                document_id: None,
                version: None,
                element_id: element_id.clone(),
                revision: None,
                at: chrono::Utc::now(),
                sidecar: None,
                mode: Some(mode.clone()),
            };
            if bus.publish(&[e]).await.is_ok() {
                cp.mode = Some(mode);
                let _ = write_checkpoint(&root, &cp);
            }
        }
        if !published_now {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn legacy_action(op: wal::WalOp) -> String {
    match op {
        wal::WalOp::Create => "create",
        wal::WalOp::Delete => "delete",
        wal::WalOp::Dispose => "dispose",
        wal::WalOp::Archive => "archive",
        wal::WalOp::StageRestore => "restore_ready",
        _ => "update",
    }
    .to_owned()
}

type Commit = (u64, Uuid, String, Option<(String, u64)>);

/// Builds the events of committed changes, reading each sidecar from the files.
fn events_of(root: &Path, element_id: &str, commits: Vec<Commit>) -> Vec<Event> {
    commits
        .into_iter()
        .map(|(_, file_id, rel, meta)| {
            let sc = Sidecar::read(&root.join(&rel)).ok();
            let (action, revision) =
                meta.unwrap_or_else(|| ("update".to_owned(), sc.as_ref().map(|s| s.revision).unwrap_or(0)));
            Event {
                kind: event_type(&action).to_owned(),
                file_id: Some(file_id),
                document_id: sc.as_ref().map(|s| s.document_id),
                version: sc.as_ref().map(|s| s.version),
                element_id: element_id.to_owned(),
                revision: Some(revision),
                at: sc.as_ref().map(|s| s.updated_at).unwrap_or_else(chrono::Utc::now),
                sidecar: sc.and_then(|s| serde_json::to_value(&s).ok()),
                mode: None,
            }
        })
        .collect()
}
