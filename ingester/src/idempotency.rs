//! `Idempotency-Key`: the first answer to a (caller, key) pair is kept on disk for a day
//! and given again to every retry, so a retried upload stores nothing twice. A retry that
//! arrives while the first request still runs waits for its answer.
//!
//! An upload's file id is planned before anything is sent to an element and saved with the
//! key (`<slot>.pending`, synced): if the ingester dies after the element stored the
//! document but before the answer was kept, the retry finds the document by that id
//! instead of storing it a second time. An attempt that an element took without answering
//! pins the file id to that element (`pin-<file id>`) for a while, so no retry can store it
//! on another one.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long an undecided upload's file id stays pinned to its element: far longer than an
/// element's create can go on after its caller went away.
pub const PIN_TTL: Duration = Duration::from_secs(15 * 60);

/// A kept answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// The keys of one ingester.
#[derive(Debug)]
pub struct IdempotencyKeys {
    dir: PathBuf,
    ttl: Duration,
    running: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while the first request with a key runs.
#[derive(Debug)]
pub struct KeyGuard {
    pub slot: String,
    /// The file id planned for the upload (routes that store a file).
    pub file_id: Option<uuid::Uuid>,
    /// The id was planned by an earlier attempt that left no answer (it may have stored
    /// the document before the ingester stopped).
    pub recovered: bool,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl IdempotencyKeys {
    pub fn open(dir: &Path, ttl: Duration) -> std::io::Result<Self> {
        let dir = dir.join("idempotency");
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir, ttl, running: Mutex::new(HashMap::new()) })
    }

    /// The file name of a (caller, route, key): a digest, so keys of any shape are safe.
    fn slot(caller: &str, route: &str, key: &str) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, format!("{caller}\0{route}\0{key}").as_bytes());
        d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Waits for any earlier request with the same key, then answers its kept answer, or
    /// a guard under which this request runs (and then keeps its answer). With `plan_file`
    /// the guard carries the upload's file id: the one an earlier attempt planned, or a new
    /// one, saved before this returns.
    pub async fn begin(
        &self,
        caller: &str,
        route: &str,
        key: &str,
        plan_file: bool,
    ) -> std::io::Result<Result<KeptAnswer, KeyGuard>> {
        let slot = Self::slot(caller, route, key);
        let lock = self.running.lock().unwrap_or_else(|e| e.into_inner()).entry(slot.clone()).or_default().clone();
        let guard = lock.lock_owned().await;
        if let Some(kept) = self.read(&slot) {
            return Ok(Ok(kept));
        }
        let (mut file_id, mut recovered) = (None, false);
        if plan_file {
            let pending = self.dir.join(format!("{slot}.pending"));
            let earlier = std::fs::read_to_string(&pending).ok().and_then(|s| uuid::Uuid::parse_str(s.trim()).ok());
            match earlier {
                Some(id) => (file_id, recovered) = (Some(id), true),
                None => {
                    let id = uuid::Uuid::now_v7();
                    self.write_synced(&pending, id.to_string().as_bytes())?;
                    file_id = Some(id);
                }
            }
        }
        Ok(Err(KeyGuard { slot, file_id, recovered, _guard: guard }))
    }

    /// Writes `path` through a synced temporary file and a rename.
    fn write_synced(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    fn read(&self, slot: &str) -> Option<KeptAnswer> {
        let bytes = std::fs::read(self.dir.join(format!("{slot}.json"))).ok()?;
        let kept: KeptAnswer = serde_json::from_slice(&bytes).ok()?;
        let age = chrono::Utc::now() - kept.created_at;
        (age.to_std().unwrap_or_default() < self.ttl).then_some(kept)
    }

    /// Keeps the answer of the request holding `guard` (only success and client errors are
    /// kept: a 5xx may be retried for real).
    pub fn keep(&self, guard: KeyGuard, answer: KeptAnswer) {
        if answer.status < 500 {
            let path = self.dir.join(format!("{}.json", guard.slot));
            let write = || -> std::io::Result<()> {
                self.write_synced(&path, &serde_json::to_vec(&answer).map_err(std::io::Error::other)?)
            };
            match write() {
                // The answer stands for the planned id now.
                Ok(()) => {
                    let _ = std::fs::remove_file(self.dir.join(format!("{}.pending", guard.slot)));
                }
                Err(e) => tracing::warn!(error = %e, "idempotency key not kept"),
            }
        }
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&guard.slot);
    }

    /// Records that an attempt to store `file_id` on `element` got no answer (the element
    /// may have stored it, or may still be storing it): until [`PIN_TTL`] has passed, that
    /// file id goes to that element only, so it can never land on a second one.
    pub fn pin(&self, file_id: uuid::Uuid, element: &str) {
        if let Err(e) = self.write_synced(&self.dir.join(format!("pin-{file_id}")), element.as_bytes()) {
            tracing::warn!(%file_id, error = %e, "the element of an undecided upload was not recorded");
        }
    }

    /// The element `file_id` is pinned to, if any (see [`IdempotencyKeys::pin`]).
    pub fn pinned(&self, file_id: uuid::Uuid) -> Option<String> {
        let path = self.dir.join(format!("pin-{file_id}"));
        let age = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?.elapsed().unwrap_or_default();
        (age < PIN_TTL).then(|| std::fs::read_to_string(&path).ok()).flatten()
    }

    /// Drops the pin of a file id once an element answered for it.
    pub fn unpin(&self, file_id: uuid::Uuid) {
        let _ = std::fs::remove_file(self.dir.join(format!("pin-{file_id}")));
    }

    /// Removes kept answers older than the time to live; answers how many.
    pub fn sweep(&self) -> usize {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return 0 };
        let mut n = 0;
        for entry in rd.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > self.ttl);
            if old && std::fs::remove_file(entry.path()).is_ok() {
                n += 1;
            }
        }
        n
    }
}
