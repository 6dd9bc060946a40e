//! The storage element's engine: the write protocol, sidecar rewrites, modes, retention,
//! tiers, and the recovery that start-up runs from the WAL.
//!
//! Every change follows one shape: WAL intent (fsynced) → file moves → sidecar by temp file
//! and rename (the commit point) → audit line → WAL commit → cache. Recovery decides each
//! interrupted intent by one question: does the sidecar on disk have the intent's revision?

use crate::audit::{AuditEvent, AuditLog, sha256_hex};
use crate::cache::{CachedSidecar, ListFilter, Page, RetentionFilter, SidecarCache};
use crate::durable::{self, TempFile};
use crate::element::{ElementFile, ElementMode, ModeChange, Operation};
use crate::error::StoreError;
use crate::layout::{self, Layout};
use crate::sidecar::{
    ContentLocation, DocState, Restore, RestoreState, Retention, RetentionMode, SCHEMA_V1, Sidecar, SidecarError, Tier,
    Tombstone,
};
use crate::wal::{self, Intent, Wal, WalOp, WalRecord};
use artstore_shared::Clock;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// The actor name of the disposition schedule.
pub const DISPOSITION_ACTOR: &str = "system:disposition";
const STRIPES: usize = 64;

/// Default of [`StoreConfig::min_free_bytes`] (64 MiB).
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;

/// Settings the engine needs.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The element root.
    pub root: PathBuf,
    /// The cold tier's root (same `data/` layout; content only).
    pub cold_root: PathBuf,
    /// The mode a new element starts in.
    pub initial_mode: ElementMode,
    /// How long a mode change waits for in-flight writes.
    pub drain_timeout: Duration,
    /// Largest accepted upload.
    pub max_upload_bytes: u64,
    /// Space kept free on the file system: an upload that would leave less is refused
    /// (507), so the WAL, sidecars and metadata changes always find room.
    pub min_free_bytes: u64,
    /// Simulated latency of the cold tier before a restore copy starts (tape, glacier).
    pub cold_restore_latency: Duration,
}

impl StoreConfig {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            cold_root: root.join("cold"),
            root,
            initial_mode: ElementMode::Edit,
            drain_timeout: Duration::from_secs(60),
            max_upload_bytes: 64 * 1024 * 1024 * 1024,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            cold_restore_latency: Duration::ZERO,
        }
    }
}

/// A new file's description, as the client gave it.
#[derive(Debug, Clone, Default)]
pub struct NewFile {
    pub original_name: String,
    pub content_type: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub metadata: Map<String, Value>,
    /// Makes the upload a new version of this document.
    pub document_id: Option<Uuid>,
    /// With `document_id`: versions up to this number exist on other elements (the
    /// ingester asks them all), so this one is numbered after them too. The document may
    /// then have no version here yet.
    pub after_version: Option<u32>,
    pub retention: Retention,
    /// The file id to store under (the ingester plans it so that a retried upload finds
    /// what an earlier attempt stored): a UUIDv7 of the last two days, not yet on this
    /// element. `None`: a new id.
    pub file_id: Option<Uuid>,
}

/// An upload fully written to `tmp/` and hashed; its fsync overlaps the WAL intent's.
#[derive(Debug)]
pub struct Staged {
    temp: TempFile,
    file: std::fs::File,
    /// Held from the first byte to the commit, so a mode change drains this upload.
    _drain: tokio::sync::OwnedRwLockReadGuard<()>,
    pub sha256: String,
    pub size: u64,
}

/// Streams an upload into `tmp/` on a blocking thread, hashing as it goes.
#[derive(Debug)]
pub struct UploadWriter {
    drain: Option<tokio::sync::OwnedRwLockReadGuard<()>>,
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    task: tokio::task::JoinHandle<std::io::Result<(String, u64, std::fs::File)>>,
    temp: Option<TempFile>,
    written: u64,
    limit: u64,
    room: Room,
}

/// The free-space rule of one element.
#[derive(Debug)]
struct Room {
    root: PathBuf,
    min_free: u64,
}

impl Room {
    fn check(&self, more: u64) -> Result<(), StoreError> {
        let free = fs4::available_space(&self.root)?;
        if free < self.min_free.saturating_add(more) {
            return Err(StoreError::Full(format!(
                "the element's disk is full: {free} bytes free, {} kept in reserve; nothing was stored",
                self.min_free
            )));
        }
        Ok(())
    }
}

impl UploadWriter {
    /// Queues a chunk (back-pressure: at most a few chunks are in memory).
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        self.written += chunk.len() as u64;
        if self.written > self.limit {
            return Err(StoreError::TooLarge(self.limit));
        }
        let tx = self.tx.as_ref().ok_or_else(|| StoreError::Unavailable("upload already finished".into()))?;
        if tx.send(chunk).await.is_err() {
            // The writer stopped: its error comes out of finish().
            return Err(self.fail().await);
        }
        Ok(())
    }

    async fn fail(&mut self) -> StoreError {
        self.tx.take();
        match (&mut self.task).await {
            Ok(Err(e)) => StoreError::Io(e),
            _ => StoreError::Unavailable("upload writer stopped".into()),
        }
    }

    /// Flushes and returns the staged upload (not yet fsynced: `Store::create` does that
    /// alongside the WAL intent).
    pub async fn finish(mut self) -> Result<Staged, StoreError> {
        self.tx.take();
        let (sha256, size, file) =
            (&mut self.task).await.map_err(|e| StoreError::Unavailable(format!("upload writer: {e}")))??;
        // The content is in tmp/ already: what must still fit is the reserve.
        self.room.check(0)?;
        let temp = self.temp.take().ok_or_else(|| StoreError::Unavailable("upload already finished".into()))?;
        let drain = self.drain.take().ok_or_else(|| StoreError::Unavailable("upload already finished".into()))?;
        Ok(Staged { temp, file, _drain: drain, sha256, size })
    }
}

/// What a restore request led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// A copy is being staged (HTTP 202).
    Staging,
    /// The content is readable now (HTTP 200).
    Readable,
}

/// The element summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ElementInfo {
    pub id: Uuid,
    pub mode: ElementMode,
    pub format_version: u32,
    pub created_at: DateTime<Utc>,
    pub free_bytes: u64,
    pub capacity_bytes: u64,
    /// Bytes of content held (documents that are not tombstones).
    pub used_bytes: u64,
    pub document_count: u64,
    pub tombstone_count: u64,
    /// Sidecars that could not be read at start-up (see the log for their names).
    pub unreadable_sidecars: usize,
    /// `ready`, or `degraded: <why>` while the cache is catching up.
    pub cache: String,
    pub mode_history: Vec<ModeChange>,
}

pub use crate::workers::DispositionReport;

/// What start-up recovery did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RecoveryReport {
    pub completed: usize,
    pub rolled_back: usize,
    pub temp_files_removed: usize,
    pub damaged_wal_lines: usize,
    pub sidecars_loaded: usize,
    pub unreadable_sidecars: Vec<String>,
}

/// Side effects on content files that surround a sidecar rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Before {
    Nothing,
    CopyHotToCold,
    CopyColdToHot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Nothing,
    RemoveHotAndCold,
    RemoveHot,
}

fn effects(op: WalOp) -> (Before, After) {
    match op {
        WalOp::Create | WalOp::Update => (Before::Nothing, After::Nothing),
        WalOp::Delete | WalOp::Dispose => (Before::Nothing, After::RemoveHotAndCold),
        WalOp::Archive => (Before::CopyHotToCold, After::RemoveHot),
        WalOp::StageRestore => (Before::CopyColdToHot, After::Nothing),
        WalOp::ExpireRestore => (Before::Nothing, After::RemoveHot),
    }
}

/// How a persistent cache is kept current: direct updates while healthy, and the WAL
/// applier (see `applier`) from its checkpoint whenever they fail.
#[derive(Debug, Default)]
pub struct CacheSync {
    /// Wakes the applier after a commit.
    pub notify: tokio::sync::Notify,
    /// Where the cache's state is shown (`/health/ready`).
    health: std::sync::OnceLock<artstore_shared::health::Health>,
    degraded: std::sync::Mutex<Option<String>>,
    /// The WAL sequence the cache has applied (`u64::MAX` for a volatile cache).
    applied: std::sync::atomic::AtomicU64,
    /// Versions created since start whose direct cache update was skipped or failed (the
    /// applier brings them in later): version numbering consults these too.
    skipped: std::sync::Mutex<std::collections::HashMap<Uuid, u32>>,
}

impl CacheSync {
    pub fn is_degraded(&self) -> bool {
        self.degraded.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Why the cache is degraded, if it is.
    pub fn degraded_reason(&self) -> Option<String> {
        self.degraded.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Shows the cache's state on this health handle from now on.
    pub fn attach_health(&self, health: artstore_shared::health::Health) {
        let _ = self.health.set(health);
    }

    pub fn degrade(&self, why: &str) {
        let mut g = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            tracing::warn!(reason = why, "cache degraded: serving from the files, catching up from the wal later");
        }
        *g = Some(why.to_owned());
        if let Some(h) = self.health.get() {
            h.set_degraded("cache", why);
        }
    }

    pub fn recover(&self) {
        if self.degraded.lock().unwrap_or_else(|e| e.into_inner()).take().is_some() {
            tracing::info!("cache caught up");
        }
        if let Some(h) = self.health.get() {
            h.set_ready("cache");
        }
    }

    pub fn applied(&self) -> u64 {
        self.applied.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Remembers a version the cache may not have yet.
    fn note_skipped(&self, document: Uuid, version: u32) {
        let mut m = self.skipped.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= 1_000_000 {
            // Only an outage that long fills it; by then the applier holds the oldest.
            m.clear();
        }
        let v = m.entry(document).or_insert(version);
        *v = (*v).max(version);
    }

    /// The newest version of `document` created here that the cache may lack.
    fn skipped_version(&self, document: Uuid) -> Option<u32> {
        self.skipped.lock().unwrap_or_else(|e| e.into_inner()).get(&document).copied()
    }

    pub fn set_applied(&self, seq: u64) {
        self.applied.store(seq, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One storage element.
pub struct Store {
    cfg: StoreConfig,
    layout: Layout,
    cold: Layout,
    wal: Wal,
    audit: AuditLog,
    cache: Arc<dyn SidecarCache>,
    element: Mutex<ElementFile>,
    /// Client writes hold it shared; a mode change takes it exclusively (the drain).
    gate: Arc<tokio::sync::RwLock<()>>,
    file_locks: Vec<tokio::sync::Mutex<()>>,
    document_locks: Vec<tokio::sync::Mutex<()>>,
    clock: Arc<dyn Clock>,
    /// The time retention decisions are made by (a wall-clock jump never ends a term early).
    retention_clock: crate::retention_clock::RetentionClock,
    known_dirs: Mutex<HashSet<PathBuf>>,
    unreadable: Mutex<Vec<String>>,
    sync: Arc<CacheSync>,
    /// The counts the cache last gave (`None`: not asked yet).
    last_stats: Mutex<Option<crate::cache::CacheStats>>,
    /// What the disposition runs did, for `/health/ready`.
    disposition: crate::workers::DispositionStatus,
    /// What the background scrub found, for `/health/ready` and `/metrics`.
    scrub: Arc<crate::scrub::ScrubStatus>,
    /// Step 5 of creates (audit line, WAL commit) runs after the reply; shutdown waits.
    after_reply: tokio_util::task::TaskTracker,
    /// How far the outbox relay has published (the WAL is pruned only below it too).
    outbox: Arc<crate::outbox::OutboxState>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.cfg.root).finish_non_exhaustive()
    }
}

fn stripe(id: Uuid) -> usize {
    let b = id.as_bytes();
    (b[15] as usize ^ b[14] as usize) % STRIPES
}

fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = Result<T, StoreError>> {
    let h = tokio::task::spawn_blocking(f);
    async move { h.await.map_err(|e| StoreError::Unavailable(format!("blocking task failed: {e}"))) }
}

impl Store {
    /// Opens (or creates) an element: replays the WAL, clears `tmp/`, loads the cache.
    pub async fn open(
        cfg: StoreConfig,
        cache: Arc<dyn SidecarCache>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<(Arc<Store>, RecoveryReport)> {
        let layout = Layout::new(&cfg.root);
        let cold = Layout::new(&cfg.cold_root);
        std::fs::create_dir_all(cold.data())?;
        std::fs::create_dir_all(cold.tmp())?;
        let element = Self::identity(&cfg, clock.as_ref())?;
        let replay = wal::replay(&layout.wal())?;
        let (audit, tail) = AuditLog::open(&layout.audit())?;
        let wal = Wal::open(&layout.wal(), replay.next_seq)?;
        let outbox = Arc::new(crate::outbox::OutboxState::default());
        std::fs::create_dir_all(layout.tmp())?;
        let retention_clock = crate::retention_clock::RetentionClock::open(layout.root(), &layout.tmp(), clock.clone());
        outbox
            .published
            .store(crate::outbox::read_checkpoint(layout.root())?.position, std::sync::atomic::Ordering::SeqCst);
        let store = Arc::new(Store {
            layout,
            cold,
            wal,
            audit,
            cache,
            element: Mutex::new(element),
            gate: Arc::new(tokio::sync::RwLock::new(())),
            file_locks: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            document_locks: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            clock,
            retention_clock,
            known_dirs: Mutex::new(HashSet::new()),
            unreadable: Mutex::new(vec![]),
            sync: Arc::new(CacheSync::default()),
            last_stats: Mutex::new(None),
            disposition: Default::default(),
            scrub: Default::default(),
            after_reply: tokio_util::task::TaskTracker::new(),
            outbox,
            cfg,
        });
        let mut report = RecoveryReport { damaged_wal_lines: replay.damaged.len(), ..Default::default() };
        for d in &replay.damaged {
            tracing::warn!(line = %d, "skipping a damaged wal line (a torn tail after a crash is expected)");
        }
        for rec in replay.unresolved {
            if store.recover(&rec, &tail.recent).await? {
                report.completed += 1;
            } else {
                report.rolled_back += 1;
            }
        }
        report.temp_files_removed = durable::clear_dir(&store.layout.tmp())? + durable::clear_dir(&store.cold.tmp())?;
        store.wal.sync().await?;
        if store.cache.is_persistent() {
            // Kept current from the WAL by the applier; its segments stay until applied.
            store.sync.set_applied(0);
        } else {
            store.sync.set_applied(u64::MAX);
            // Segments the outbox has not published yet stay.
            store.prune_wal()?;
            let (loaded, unreadable) = store.load_cache().await?;
            report.sidecars_loaded = loaded;
            report.unreadable_sidecars = unreadable;
        }
        store.resume_restores().await;
        tracing::info!(
            completed = report.completed,
            rolled_back = report.rolled_back,
            temp_files_removed = report.temp_files_removed,
            sidecars = report.sidecars_loaded,
            unreadable = report.unreadable_sidecars.len(),
            "storage element recovered"
        );
        Ok((store, report))
    }

    /// Reads `element.json`, creating the element (folders and identity) the first time.
    pub fn identity(cfg: &StoreConfig, clock: &dyn Clock) -> anyhow::Result<ElementFile> {
        let layout = Layout::new(&cfg.root);
        layout.create_dirs()?;
        Ok(match ElementFile::read(&layout.element_file())? {
            Some(e) => e,
            None => {
                let e = ElementFile::new(cfg.initial_mode, clock.now());
                durable::write_atomic(&layout.tmp(), &layout.element_file(), &e.to_bytes())?;
                tracing::info!(element = %e.element_id, root = %cfg.root.display(), "created a new storage element");
                e
            }
        })
    }

    /// Finishes or rolls back one interrupted intent. Returns whether it was completed.
    async fn recover(&self, rec: &WalRecord, audited: &HashSet<(Uuid, u64)>) -> anyhow::Result<bool> {
        let WalRecord::Intent { op, file_id, revision, sidecar, .. } = rec else {
            return Ok(false);
        };
        let sidecar_path = self.layout.root().join(sidecar);
        let on_disk = match std::fs::read(&sidecar_path) {
            Ok(bytes) => Some((Sidecar::parse(&bytes, &sidecar_path)?, bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => anyhow::bail!("{}: {e}", sidecar_path.display()),
        };
        let rel = Path::new(sidecar.as_str());
        let content_rel = rel.with_file_name(
            rel.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(crate::sidecar::SIDECAR_SUFFIX))
                .unwrap_or(""),
        );
        let hot = self.layout.root().join(&content_rel);
        let cold = self.cold.root().join(&content_rel);
        let done = on_disk.as_ref().is_some_and(|(sc, _)| sc.revision >= *revision);
        let (_, after) = effects(*op);
        if done {
            let (sc, bytes) = on_disk.unwrap_or_else(|| unreachable!("done implies a sidecar"));
            match after {
                After::Nothing => {}
                After::RemoveHot => durable::remove_durable(&hot)?,
                After::RemoveHotAndCold => {
                    durable::remove_durable(&hot)?;
                    durable::remove_durable(&cold)?;
                }
            }
            if !audited.contains(&(*file_id, *revision)) {
                self.audit
                    .record(AuditEvent {
                        at: self.clock.now(),
                        actor: sc.updated_by.clone(),
                        action: op_action(*op).to_owned(),
                        file_id: Some(*file_id),
                        revision: Some(sc.revision),
                        sidecar_sha256: Some(sha256_hex(&bytes)),
                        detail: json!({"recovered": true}),
                    })
                    .await?;
            }
            self.wal.resolve_replayed(rec, true).await?;
            tracing::info!(file = %file_id, ?op, "completed an interrupted operation");
        } else {
            match op {
                WalOp::Create => durable::remove_durable(&hot)?,
                WalOp::Archive => durable::remove_durable(&cold)?,
                // A staged copy exists only beside a cold sidecar; never touch hot content otherwise.
                WalOp::StageRestore if on_disk.as_ref().is_some_and(|(sc, _)| sc.content.location == Tier::Cold) => {
                    durable::remove_durable(&hot)?
                }
                _ => {}
            }
            self.wal.resolve_replayed(rec, false).await?;
            tracing::info!(file = %file_id, ?op, "rolled back an interrupted operation");
        }
        Ok(done)
    }

    /// Walks every day folder in parallel and fills the cache.
    async fn load_cache(self: &Arc<Self>) -> anyhow::Result<(usize, Vec<String>)> {
        let root = self.layout.root().to_owned();
        let (entries, bad) = blocking(move || crate::rebuild::scan_all(&root)).await??;
        for b in &bad {
            tracing::error!("{b}");
        }
        let n = entries.len();
        self.cache.upsert_many(entries).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        self.unreadable.lock().unwrap_or_else(|e| e.into_inner()).clone_from(&bad);
        Ok((n, bad))
    }

    async fn resume_restores(self: &Arc<Self>) {
        let Ok(list) = self.cache.with_restore().await else {
            return;
        };
        for e in list {
            if e.sidecar.content.restore.as_ref().is_some_and(|r| r.state == RestoreState::Staging) {
                self.spawn_staging(e.sidecar.file_id);
            }
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The clock retention terms start and end by.
    pub fn retention_clock(&self) -> &crate::retention_clock::RetentionClock {
        &self.retention_clock
    }

    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// Where the cold tier's content lives.
    pub fn cold_root(&self) -> &Path {
        self.cold.root()
    }

    /// The background scrub's record.
    pub fn scrub(&self) -> &Arc<crate::scrub::ScrubStatus> {
        &self.scrub
    }

    pub fn mode(&self) -> ElementMode {
        self.element.lock().unwrap_or_else(|e| e.into_inner()).mode
    }

    fn check_mode(&self, op: Operation) -> Result<(), StoreError> {
        let mode = self.mode();
        if mode.allows(op) { Ok(()) } else { Err(StoreError::Mode { mode, op }) }
    }

    fn check_journals(&self) -> Result<(), StoreError> {
        match self.write_failure() {
            Some(why) => Err(StoreError::Unavailable(format!("{why}; the element refuses writes until restarted"))),
            None => Ok(()),
        }
    }

    /// Why the element refuses writes after a storage failure (a journal write or an fsync
    /// failed), or `None`.
    pub fn write_failure(&self) -> Option<&'static str> {
        if durable::sync_failed() {
            Some("an fsync failed (the disk may be failing; see the element's log)")
        } else if self.wal.has_failed() || self.audit.has_failed() {
            Some("a journal write failed (see the element's log)")
        } else {
            None
        }
    }

    /// Begins an upload: a temp file and its writer thread. The upload counts as an
    /// in-flight write until it is committed or dropped.
    pub async fn begin_upload(&self) -> Result<UploadWriter, StoreError> {
        let drain = self.gate.clone().read_owned().await;
        self.check_mode(Operation::Create)?;
        self.check_journals()?;
        self.check_room(0)?;
        let (temp, file) = TempFile::create(&self.layout.tmp(), "upload")?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let task = tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64, std::fs::File)> {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let mut size = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                ctx.update(&chunk);
                out.write_all(&chunk)?;
                size += chunk.len() as u64;
            }
            let file = out.into_inner().map_err(|e| e.into_error())?;
            Ok((crate::audit::hex(ctx.finish().as_ref()), size, file))
        });
        Ok(UploadWriter {
            drain: Some(drain),
            tx: Some(tx),
            task,
            temp: Some(temp),
            written: 0,
            limit: self.cfg.max_upload_bytes,
            room: Room { root: self.layout.root().to_owned(), min_free: self.cfg.min_free_bytes },
        })
    }

    /// Bytes kept free on the file system ([`StoreConfig::min_free_bytes`]).
    pub fn min_free_bytes(&self) -> u64 {
        self.cfg.min_free_bytes
    }

    /// Refuses a write that would leave less than `min_free_bytes` (after `more` bytes).
    pub fn check_room(&self, more: u64) -> Result<(), StoreError> {
        Room { root: self.layout.root().to_owned(), min_free: self.cfg.min_free_bytes }.check(more)
    }

    /// Commits a staged upload as a new file (or a new version of a document).
    pub async fn create(self: &Arc<Self>, actor: &str, staged: Staged, new: NewFile) -> Result<Sidecar, StoreError> {
        // The drain gate is already held by `staged` (taking it again could deadlock behind
        // a waiting mode change).
        self.check_mode(Operation::Create)?;
        self.check_journals()?;
        let now = self.clock.now();
        validate_new_retention(&new.retention, now)?;
        // Creates of one planned id (a retry that arrives while the first attempt still
        // commits) run one after the other: the later one finds the earlier's document.
        let _planned = match new.file_id {
            Some(id) => Some(self.file_locks[stripe(id)].lock().await),
            None => None,
        };
        let file_id = match new.file_id {
            Some(id) => {
                validate_planned_id(id, now)?;
                match self.read_sidecar(id).await {
                    Ok(_) => return Err(StoreError::Exists(id)),
                    Err(StoreError::NotFound(_)) => id,
                    Err(e) => return Err(e),
                }
            }
            None => layout::new_file_id(now),
        };
        let (document_id, version, _doc_lock) = match new.document_id {
            Some(doc) => {
                let lock = self.document_locks[stripe(doc)].lock().await;
                // The next version number needs every earlier version: a persistent cache
                // that is catching up (after an outage, or rebuilding) may lack the newest,
                // so it is waited for briefly, then the upload is refused with 503.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while self.sync.is_degraded() {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(StoreError::Unavailable(format!(
                            "the cache is catching up; the versions of document {doc} are not known yet, retry shortly"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let versions = self.cache.versions(doc).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
                let last = versions
                    .iter()
                    .map(|v| v.sidecar.version)
                    .chain(self.sync.skipped_version(doc))
                    .chain(new.after_version)
                    .max()
                    .ok_or(StoreError::DocumentNotFound(doc))?;
                (doc, last + 1, Some(lock))
            }
            None => (file_id, 1, None),
        };
        let stored_name = layout::stored_name(&new.original_name, file_id);
        let day_rel = Layout::day_dir_rel(file_id);
        let sc = Sidecar {
            schema: SCHEMA_V1.to_owned(),
            file_id,
            document_id,
            version,
            revision: 1,
            state: DocState::Active,
            original_name: new.original_name,
            stored_name,
            content_type: new.content_type,
            size: staged.size,
            sha256: staged.sha256,
            created_at: now,
            created_by: actor.to_owned(),
            updated_at: now,
            updated_by: actor.to_owned(),
            description: new.description,
            tags: new.tags,
            metadata: new.metadata,
            retention: new.retention,
            content: ContentLocation { location: Tier::Hot, restore: None, extra: Map::new() },
            tombstone: None,
            extra: Map::new(),
        };
        let sidecar_rel = day_rel.join(sc.sidecar_name());
        let sidecar_rel_str = sidecar_rel.to_string_lossy().into_owned();
        let bytes = sc.to_bytes();
        // Steps 1, 2 and the sidecar's temp file are independent until the renames, so their
        // fsyncs overlap: the content (in tmp/), the WAL intent, the sidecar temp (in tmp/).
        // Every rename still follows what it depends on: intent and content durable before
        // the content rename, that rename durable before the sidecar rename (the commit).
        let Staged { temp: content_temp, file: content_file, _drain: _drain_guard, .. } = staged;
        let tmp = self.layout.tmp();
        let sidecar_bytes = bytes.clone();
        let sync_content = blocking(move || durable::sync_all(&content_file));
        let write_sidecar = blocking(move || -> std::io::Result<TempFile> {
            let (t, mut f) = TempFile::create(&tmp, "sidecar")?;
            f.write_all(&sidecar_bytes)?;
            durable::sync_all(&f)?;
            Ok(t)
        });
        let intent = self.wal.intent(Intent {
            op: WalOp::Create,
            file_id,
            revision: 1,
            sidecar: sidecar_rel_str.clone(),
            at: now,
            actor: actor.to_owned(),
            action: "create".to_owned(),
        });
        let (content_synced, sidecar_temp, seq) = tokio::join!(sync_content, write_sidecar, intent);
        let seq = seq?;
        let prepared = content_synced
            .and_then(|r| r.map_err(StoreError::from))
            .and_then(|()| sidecar_temp?.map_err(StoreError::from));
        let sidecar_temp = match prepared {
            Ok(t) => t,
            Err(e) => {
                let _ = self.wal.abort(seq).await;
                return Err(e);
            }
        };
        let day_abs = self.layout.root().join(&day_rel);
        let content_abs = day_abs.join(&sc.stored_name);
        let sidecar_abs = self.layout.root().join(&sidecar_rel);
        let need_dir = !self.known_dirs.lock().unwrap_or_else(|e| e.into_inner()).contains(&day_abs);
        let content2 = content_abs.clone();
        let day2 = day_abs.clone();
        let moved = blocking(move || -> std::io::Result<()> {
            if need_dir {
                durable::create_dir_durable(&day2)?;
            }
            content_temp.persist(&content2)?;
            sidecar_temp.persist(&sidecar_abs)
        })
        .await
        .and_then(|r| r.map_err(StoreError::from));
        if let Err(e) = moved {
            // Nothing was acknowledged: undo what moved and say so in the WAL.
            let _ = durable::remove_if_present(&content_abs);
            let _ = self.wal.abort(seq).await;
            return Err(e);
        }
        if need_dir {
            self.known_dirs.lock().unwrap_or_else(|e| e.into_inner()).insert(day_abs);
        }
        // The document exists now (step 4). The cache is updated before the reply so a
        // listing right after sees it; the audit line and the WAL commit (step 5) follow the
        // reply. A crash in between is completed from the WAL at the next start.
        self.update_cache(&sc, &sidecar_rel_str).await;
        let (store, actor, sc2) = (self.clone(), actor.to_owned(), sc.clone());
        let detail = json!({"version": version, "size": sc.size, "sha256": sc.sha256});
        self.after_reply.spawn(async move {
            let r = store.audit_and_commit(seq, &actor, "create", &sc2, &bytes, &sidecar_rel_str, detail).await;
            if let Err(e) = r {
                tracing::error!(file = %sc2.file_id, error = %e, "audit or wal commit after the reply failed");
            }
        });
        Ok(sc)
    }

    /// The audit line, then the WAL commit (recovery relies on that order: a commit means
    /// its audit line was written).
    #[allow(clippy::too_many_arguments)]
    async fn audit_and_commit(
        &self,
        seq: u64,
        actor: &str,
        action: &str,
        sc: &Sidecar,
        bytes: &[u8],
        rel: &str,
        detail: Value,
    ) -> Result<(), StoreError> {
        self.audit
            .record(AuditEvent {
                at: sc.updated_at,
                actor: actor.to_owned(),
                action: action.to_owned(),
                file_id: Some(sc.file_id),
                revision: Some(sc.revision),
                sidecar_sha256: Some(sha256_hex(bytes)),
                detail,
            })
            .await?;
        self.wal.commit(seq, sc.file_id, rel, action, sc.revision).await?;
        self.sync.notify.notify_one();
        Ok(())
    }

    /// Mirrors a sidecar into the cache. Never fails the caller: the files are the truth.
    async fn update_cache(&self, sc: &Sidecar, rel: &str) {
        let entry = CachedSidecar { sidecar: Arc::new(sc.clone()), path: rel.to_owned() };
        if !self.cache.is_persistent() {
            if let Err(e) = self.cache.upsert(entry).await {
                tracing::warn!(error = %e, file = %sc.file_id, "cache update failed");
            }
            return;
        }
        // A persistent cache is updated right away while it is healthy; the applier replays
        // the WAL from its checkpoint whenever that fails, so nothing waits on the database.
        let updated = !self.sync.is_degraded()
            && match tokio::time::timeout(Duration::from_secs(1), self.cache.upsert(entry)).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    self.sync.degrade(&e.to_string());
                    false
                }
                Err(_) => {
                    self.sync.degrade("cache update timed out");
                    false
                }
            };
        if !updated {
            self.sync.note_skipped(sc.document_id, sc.version);
        }
        self.sync.notify.notify_one();
    }

    /// Finds a sidecar's path (relative to the root) by id: cache first, then the files.
    async fn locate(&self, id: Uuid) -> Result<String, StoreError> {
        if let Ok(Some(e)) = self.cache.get(id).await {
            return Ok(e.path);
        }
        let layout = self.layout.clone();
        let found = blocking(move || layout.find_sidecar(id)).await??;
        let abs = found.ok_or(StoreError::NotFound(id))?;
        Ok(abs.strip_prefix(self.layout.root()).unwrap_or(&abs).to_string_lossy().into_owned())
    }

    /// Reads a sidecar from disk (the truth), with its bytes.
    async fn read_sidecar(&self, id: Uuid) -> Result<(String, Sidecar, Vec<u8>), StoreError> {
        let rel = self.locate(id).await?;
        let abs = self.layout.root().join(&rel);
        let shown = PathBuf::from(&rel);
        let (sc, bytes) = blocking(move || -> Result<(Sidecar, Vec<u8>), SidecarError> {
            let bytes = std::fs::read(&abs).map_err(|source| SidecarError::Io { path: shown.clone(), source })?;
            Ok((Sidecar::parse(&bytes, &shown)?, bytes))
        })
        .await??;
        if sc.file_id != id {
            return Err(StoreError::NotFound(id));
        }
        Ok((rel, sc, bytes))
    }

    /// The current sidecar of a file.
    pub async fn get(&self, id: Uuid) -> Result<Sidecar, StoreError> {
        match self.read_sidecar(id).await {
            Err(StoreError::Corrupt(SidecarError::Io { source, .. }))
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Err(StoreError::NotFound(id))
            }
            r => r.map(|(_, sc, _)| sc),
        }
    }

    /// The audit journal's lines about a file, newest first (at most `limit`); searched off
    /// the runtime. A file without a sidecar is not found, whatever the journal says.
    pub async fn audit_trail(&self, id: Uuid, limit: usize) -> Result<crate::audit::FileTrail, StoreError> {
        self.get(id).await?;
        let dir = self.layout.audit();
        blocking(move || crate::audit::file_trail(&dir, id, limit)).await?.map_err(StoreError::from)
    }

    /// The path of readable content, or why there is none.
    pub async fn open_content(&self, id: Uuid) -> Result<(Sidecar, PathBuf), StoreError> {
        let (rel, sc, _) = self.read_sidecar(id).await?;
        if sc.state.is_tombstone() {
            return Err(StoreError::Gone { id, state: sc.state });
        }
        let hot = self.layout.root().join(Path::new(&rel).with_file_name(&sc.stored_name));
        match sc.content.location {
            Tier::Hot => {
                self.check_mode(Operation::ReadContent)?;
                Ok((sc, hot))
            }
            Tier::Cold => {
                let now = self.clock.now();
                let readable = sc
                    .content
                    .restore
                    .as_ref()
                    .is_some_and(|r| r.state == RestoreState::Ready && r.expires_at.is_some_and(|t| t > now));
                if readable { Ok((sc, hot)) } else { Err(StoreError::Archived(id)) }
            }
            Tier::None => Err(StoreError::Gone { id, state: sc.state }),
        }
    }

    /// Rewrites a sidecar with `revision + 1`, surrounded by the op's content moves.
    async fn rewrite<F>(&self, id: Uuid, actor: &str, op: WalOp, action: &str, change: F) -> Result<Sidecar, StoreError>
    where
        F: FnOnce(&mut Sidecar, DateTime<Utc>) -> Result<Value, StoreError>,
    {
        self.check_journals()?;
        let _lock = self.file_locks[stripe(id)].lock().await;
        let (rel, current, _) = self.read_sidecar(id).await?;
        let now = self.clock.now();
        let mut next = current.clone();
        let detail = change(&mut next, now)?;
        next.revision = current.revision + 1;
        next.updated_at = now;
        actor.clone_into(&mut next.updated_by);
        let bytes = next.to_bytes();
        let seq = self
            .wal
            .intent(Intent {
                op,
                file_id: id,
                revision: next.revision,
                sidecar: rel.clone(),
                at: now,
                actor: actor.to_owned(),
                action: action.to_owned(),
            })
            .await?;
        let content_rel = Path::new(&rel).with_file_name(&current.stored_name);
        let hot = self.layout.root().join(&content_rel);
        let cold = self.cold.root().join(&content_rel);
        let sidecar_abs = self.layout.root().join(&rel);
        let (tmp, cold_tmp) = (self.layout.tmp(), self.cold.tmp());
        let (before, after) = effects(op);
        let bytes2 = bytes.clone();
        let result = blocking(move || -> std::io::Result<()> {
            match before {
                Before::Nothing => {}
                Before::CopyHotToCold => {
                    durable::copy_durable(&hot, &cold_tmp, &cold)?;
                }
                Before::CopyColdToHot => {
                    durable::copy_durable(&cold, &tmp, &hot)?;
                }
            }
            durable::write_atomic(&tmp, &sidecar_abs, &bytes2)?;
            match after {
                After::Nothing => Ok(()),
                After::RemoveHot => durable::remove_durable(&hot),
                After::RemoveHotAndCold => durable::remove_durable(&hot).and_then(|()| durable::remove_durable(&cold)),
            }
        })
        .await
        .and_then(|r| r.map_err(StoreError::from));
        if let Err(e) = result {
            // If the sidecar rename happened the intent is completed by the next start-up;
            // leaving it open is the safe answer either way.
            tracing::error!(file = %id, ?op, error = %e, "sidecar rewrite failed");
            return Err(e);
        }
        self.audit_and_commit(seq, actor, action, &next, &bytes, &rel, detail).await?;
        self.update_cache(&next, &rel).await;
        Ok(next)
    }

    /// Applies a JSON merge patch of description, tags and metadata.
    pub async fn update_metadata(&self, id: Uuid, actor: &str, patch: MetadataPatch) -> Result<Sidecar, StoreError> {
        let _drain = self.gate.read().await;
        self.check_mode(Operation::UpdateMetadata)?;
        self.rewrite(id, actor, WalOp::Update, "update", move |sc, _| {
            if sc.state.is_tombstone() {
                return Err(StoreError::Gone { id, state: sc.state });
            }
            let mut changed = vec![];
            if let Some(d) = patch.description {
                sc.description = d;
                changed.push("description");
            }
            if let Some(t) = patch.tags {
                sc.tags = t;
                changed.push("tags");
            }
            if let Some(m) = patch.metadata {
                let mut cur = Value::Object(std::mem::take(&mut sc.metadata));
                merge_patch(&mut cur, &m);
                sc.metadata = match cur {
                    Value::Object(o) => o,
                    _ => Map::new(),
                };
                changed.push("metadata");
            }
            Ok(json!({"changed": changed}))
        })
        .await
    }

    /// Deletes a file: tombstone sidecar, then the content is removed.
    pub async fn delete(
        &self,
        id: Uuid,
        actor: &str,
        can_bypass: bool,
        bypass_requested: bool,
    ) -> Result<Sidecar, StoreError> {
        let _drain = self.gate.read().await;
        self.check_mode(Operation::Delete)?;
        let ended_by = self.retention_clock.ended_by();
        self.rewrite(id, actor, WalOp::Delete, "delete", move |sc, now| {
            if sc.state.is_tombstone() {
                return Err(StoreError::Gone { id, state: sc.state });
            }
            let bypassed = check_delete(sc, ended_by, can_bypass, bypass_requested)?;
            tombstone(sc, now, actor, DocState::Deleted, bypassed);
            Ok(json!({"retention_bypassed": bypassed, "sha256": sc.sha256, "retention_mode": sc.retention.mode}))
        })
        .await
    }

    /// Sets or lifts a legal hold (every mode; permissions are the caller's business).
    /// Sets or lifts the legal hold; a set hold keeps its `reason`, a lifted one drops it.
    pub async fn set_legal_hold(
        &self,
        id: Uuid,
        actor: &str,
        enabled: bool,
        reason: Option<String>,
    ) -> Result<Sidecar, StoreError> {
        let _drain = self.gate.read().await;
        let action = if enabled { "legal_hold_set" } else { "legal_hold_lifted" };
        self.rewrite(id, actor, WalOp::Update, action, move |sc, _| {
            if sc.state.is_tombstone() {
                return Err(StoreError::Gone { id, state: sc.state });
            }
            let was = sc.retention.legal_hold;
            sc.retention.legal_hold = enabled;
            let was_reason = sc.retention.legal_hold_reason.take();
            sc.retention.legal_hold_reason = if enabled { reason.clone().or(was_reason.clone()) } else { None };
            Ok(json!({"was": was, "now": enabled, "reason": reason, "was_reason": was_reason}))
        })
        .await
    }

    /// Extends retention (every mode): a later date, optionally a stronger mode.
    pub async fn extend_retention(
        &self,
        id: Uuid,
        actor: &str,
        until: DateTime<Utc>,
        mode: Option<RetentionMode>,
    ) -> Result<Sidecar, StoreError> {
        let _drain = self.gate.read().await;
        if until <= self.clock.now() {
            return Err(StoreError::BadRequest(format!("retain_until {} is in the past", until.to_rfc3339())));
        }
        self.rewrite(id, actor, WalOp::Update, "retention_extended", move |sc, _| {
            if sc.state.is_tombstone() {
                return Err(StoreError::Gone { id, state: sc.state });
            }
            let r = &mut sc.retention;
            if let Some(cur) = r.retain_until
                && until < cur
            {
                return Err(StoreError::Shorten { current: cur.to_rfc3339(), requested: until.to_rfc3339() });
            }
            let new_mode = match mode {
                Some(m) if m.rank() < r.mode.rank() => return Err(StoreError::Weaken),
                Some(RetentionMode::None) => {
                    return Err(StoreError::BadRequest("retention mode none cannot carry a date".into()));
                }
                Some(m) => m,
                None if r.mode == RetentionMode::None => RetentionMode::Governance,
                None => r.mode,
            };
            let before = json!({"mode": r.mode, "retain_until": r.retain_until});
            r.retain_until = Some(until);
            r.mode = new_mode;
            Ok(json!({"before": before, "after": {"mode": r.mode, "retain_until": r.retain_until}}))
        })
        .await
    }

    /// Disposes one document whose term ended (the schedule's delete).
    async fn dispose(&self, id: Uuid) -> Result<Sidecar, StoreError> {
        let ended_by = self.retention_clock.ended_by();
        self.rewrite(id, DISPOSITION_ACTOR, WalOp::Dispose, "dispose", move |sc, now| {
            let r = &sc.retention;
            if sc.state.is_tombstone() {
                return Err(StoreError::Gone { id, state: sc.state });
            }
            if r.legal_hold {
                return Err(StoreError::LegalHold(id));
            }
            if !r.is_expired(ended_by) || r.disposition != crate::sidecar::Disposition::Dispose {
                return Err(StoreError::BadRequest("not due for disposition".into()));
            }
            tombstone(sc, now, DISPOSITION_ACTOR, DocState::Disposed, false);
            Ok(json!({"sha256": sc.sha256, "retain_until": sc.retention.retain_until}))
        })
        .await
    }

    /// One pass of the disposition schedule, and expiry of staged restores; its outcome is
    /// recorded for `/health/ready`, and the document counts are refreshed after it.
    pub async fn run_disposition(&self) -> Result<DispositionReport, StoreError> {
        self.disposition.started(self.clock.now());
        let r = self.disposition_pass().await;
        self.disposition.finished(self.clock.now(), r.as_ref().map_err(ToString::to_string));
        if r.is_ok() {
            self.refresh_stats().await;
        }
        r
    }

    async fn disposition_pass(&self) -> Result<DispositionReport, StoreError> {
        let _drain = self.gate.read().await;
        let mut report = DispositionReport::default();
        // Terms end by the retention clock, not the wall clock (which may have jumped).
        let now = self.retention_clock.ended_by();
        let due =
            self.cache.due_for_disposition(now, 10_000).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
        for e in due {
            match self.dispose(e.sidecar.file_id).await {
                Ok(_) => report.disposed += 1,
                Err(err) => {
                    report.failed += 1;
                    tracing::warn!(file = %e.sidecar.file_id, error = %err, "disposition failed");
                }
            }
        }
        for e in self.cache.with_restore().await.map_err(|e| StoreError::Unavailable(e.to_string()))? {
            let expired = e
                .sidecar
                .content
                .restore
                .as_ref()
                .is_some_and(|r| r.state == RestoreState::Ready && r.expires_at.is_some_and(|t| t <= now));
            if !expired {
                continue;
            }
            let r = self
                .rewrite(
                    e.sidecar.file_id,
                    "system:restore-expiry",
                    WalOp::ExpireRestore,
                    "restore_expired",
                    |sc, _| {
                        sc.content.restore = None;
                        Ok(Value::Null)
                    },
                )
                .await;
            match r {
                Ok(_) => report.restores_expired += 1,
                Err(err) => {
                    report.failed += 1;
                    tracing::warn!(file = %e.sidecar.file_id, error = %err, "restore expiry failed");
                }
            }
        }
        // Review-due documents wait for a person; the run only counts them.
        let review = ListFilter { retention: Some((RetentionFilter::ReviewDue, now)), ..Default::default() };
        let page = self
            .cache
            .list(None, crate::workers::REVIEW_COUNT_LIMIT, &review)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        report.review_due = page.items.len() as u64;
        report.review_due_more = page.next.is_some();
        if report.disposed + report.restores_expired + report.failed > 0 {
            tracing::info!(
                disposed = report.disposed,
                restores_expired = report.restores_expired,
                failed = report.failed,
                review_due = report.review_due,
                "disposition run"
            );
        }
        Ok(report)
    }

    /// Asks for archived content to be staged back for `days`.
    pub async fn request_restore(
        self: &Arc<Self>,
        id: Uuid,
        actor: &str,
        days: u32,
    ) -> Result<(RestoreOutcome, Sidecar), StoreError> {
        if days == 0 || days > 3650 {
            return Err(StoreError::BadRequest("days must be between 1 and 3650".into()));
        }
        let _drain = self.gate.read().await;
        let sc = self.get(id).await?;
        if sc.state.is_tombstone() {
            return Err(StoreError::Gone { id, state: sc.state });
        }
        if sc.content.location == Tier::Hot {
            return Ok((RestoreOutcome::Readable, sc));
        }
        let now = self.clock.now();
        match &sc.content.restore {
            Some(r) if r.state == RestoreState::Staging => Err(StoreError::RestoreInProgress(id)),
            Some(r) if r.expires_at.is_some_and(|t| t > now) => {
                let want = now + chrono::Duration::days(days.into());
                let sc = self
                    .rewrite(id, actor, WalOp::Update, "restore_extended", move |sc, _| {
                        if let Some(r) = sc.content.restore.as_mut() {
                            r.expires_at = r.expires_at.max(Some(want));
                        }
                        Ok(json!({"expires_at": want}))
                    })
                    .await?;
                Ok((RestoreOutcome::Readable, sc))
            }
            _ => {
                let actor2 = actor.to_owned();
                let sc = self
                    .rewrite(id, actor, WalOp::Update, "restore_requested", move |sc, now| {
                        sc.content.restore = Some(Restore {
                            state: RestoreState::Staging,
                            requested_at: now,
                            requested_by: actor2,
                            days,
                            ready_at: None,
                            expires_at: None,
                            extra: Map::new(),
                        });
                        Ok(json!({"days": days}))
                    })
                    .await?;
                self.spawn_staging(id);
                Ok((RestoreOutcome::Staging, sc))
            }
        }
    }

    fn spawn_staging(self: &Arc<Self>, id: Uuid) {
        let store = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(store.cfg.cold_restore_latency).await;
            let r = store
                .rewrite(id, "system:restore", WalOp::StageRestore, "restore_ready", |sc, now| {
                    let r = sc
                        .content
                        .restore
                        .as_mut()
                        .ok_or_else(|| StoreError::BadRequest("no restore requested".into()))?;
                    r.state = RestoreState::Ready;
                    r.ready_at = Some(now);
                    r.expires_at = Some(now + chrono::Duration::days(r.days.into()));
                    Ok(json!({"expires_at": r.expires_at}))
                })
                .await;
            if let Err(e) = r {
                tracing::error!(file = %id, error = %e, "staging a restore failed");
            }
        });
    }

    /// Moves the element forward to `to`, draining in-flight writes first. Entering `ar`
    /// moves every hot content file to the cold tier before the mode is recorded.
    pub async fn change_mode(&self, to: ElementMode, actor: &str) -> Result<ElementFile, StoreError> {
        let from = self.mode();
        if to == from {
            return Ok(self.element.lock().unwrap_or_else(|e| e.into_inner()).clone());
        }
        if to < from {
            return Err(StoreError::ModeBackwards { from, to });
        }
        let _drained = tokio::time::timeout(self.cfg.drain_timeout, self.gate.write()).await.map_err(|_| {
            StoreError::Unavailable(format!(
                "in-flight writes did not drain within {:?}; mode unchanged",
                self.cfg.drain_timeout
            ))
        })?;
        self.check_journals()?;
        let from = self.mode();
        if to < from {
            return Err(StoreError::ModeBackwards { from, to });
        }
        let mut archived = 0u64;
        if to == ElementMode::Ar {
            let mut after = None;
            loop {
                let batch =
                    self.cache.hot_documents(after, 256).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
                let Some(last) = batch.last() else { break };
                after = Some(last.sidecar.file_id);
                for e in batch {
                    self.rewrite(e.sidecar.file_id, actor, WalOp::Archive, "archive", |sc, _| {
                        sc.state = DocState::Archived;
                        sc.content.location = Tier::Cold;
                        Ok(Value::Null)
                    })
                    .await?;
                    archived += 1;
                }
            }
        }
        let now = self.clock.now();
        let mut next = self.element.lock().unwrap_or_else(|e| e.into_inner()).clone();
        next.mode = to;
        next.mode_history.push(ModeChange { from, to, at: now, by: actor.to_owned() });
        let bytes = next.to_bytes();
        let (tmp, path) = (self.layout.tmp(), self.layout.element_file());
        blocking(move || durable::write_atomic(&tmp, &path, &bytes)).await??;
        *self.element.lock().unwrap_or_else(|e| e.into_inner()) = next.clone();
        self.audit
            .record(AuditEvent {
                at: now,
                actor: actor.to_owned(),
                action: "mode_change".into(),
                file_id: None,
                revision: None,
                sidecar_sha256: None,
                detail: json!({"from": from, "to": to, "archived": archived}),
            })
            .await?;
        tracing::info!(from = from.as_str(), to = to.as_str(), archived, "element mode changed");
        Ok(next)
    }

    /// A page of sidecars in file-id order, from the cache.
    pub async fn list(&self, after: Option<Uuid>, limit: usize, filter: &ListFilter) -> Result<Page, StoreError> {
        self.cache.list(after, limit, filter).await.map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Every version of a document.
    pub async fn versions(&self, document_id: Uuid) -> Result<Vec<Sidecar>, StoreError> {
        let v = self.cache.versions(document_id).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if v.is_empty() {
            return Err(StoreError::DocumentNotFound(document_id));
        }
        Ok(v.into_iter().map(|e| (*e.sidecar).clone()).collect())
    }

    /// The element summary.
    pub async fn info(&self) -> Result<ElementInfo, StoreError> {
        let e = self.element.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // The summary must answer while the cache is down: the last counts it gave.
        let stats = self.refresh_stats().await.unwrap_or_default();
        let root = self.layout.root().to_owned();
        let (free, total) =
            blocking(move || (fs4::available_space(&root).unwrap_or(0), fs4::total_space(&root).unwrap_or(0))).await?;
        Ok(ElementInfo {
            id: e.element_id,
            mode: e.mode,
            format_version: e.format_version,
            created_at: e.created_at,
            free_bytes: free,
            capacity_bytes: total,
            used_bytes: stats.bytes,
            document_count: stats.documents,
            tombstone_count: stats.tombstones,
            unreadable_sidecars: self.unreadable.lock().unwrap_or_else(|e| e.into_inner()).len(),
            cache: self.sync.degraded_reason().map(|r| format!("degraded: {r}")).unwrap_or_else(|| "ready".to_owned()),
            mode_history: e.mode_history,
        })
    }

    /// Asks the cache for its counts and keeps them; when it cannot answer, the last ones.
    async fn refresh_stats(&self) -> Option<crate::cache::CacheStats> {
        let fresh = self.cache.stats().await.ok();
        let mut last = self.last_stats.lock().unwrap_or_else(|e| e.into_inner());
        if fresh.is_some() {
            *last = fresh;
        }
        *last
    }

    /// Documents held (not tombstones), without waiting: the cache's own count when it
    /// keeps one, else the last counts it gave (`None`: not counted yet).
    pub fn document_count(&self) -> Option<u64> {
        self.cache
            .document_count()
            .or_else(|| self.last_stats.lock().unwrap_or_else(|e| e.into_inner()).map(|s| s.documents))
    }

    /// What the disposition runs did since start.
    pub fn disposition(&self) -> &crate::workers::DispositionStatus {
        &self.disposition
    }

    /// The highest WAL sequence written (the cache and the outbox catch up to it).
    pub fn wal_head(&self) -> u64 {
        self.wal.head()
    }

    /// Waits until the work that followed replies so far is done (audit lines, WAL commits).
    pub async fn settle(&self) {
        self.after_reply.close();
        self.after_reply.wait().await;
        self.after_reply.reopen();
    }

    /// Finishes the work that followed replies and makes every journal durable; called on
    /// shutdown.
    pub async fn flush(&self) -> Result<(), StoreError> {
        // Work that followed replies (audit lines, WAL commits) is finished first.
        self.after_reply.close();
        self.after_reply.wait().await;
        self.wal.sync().await?;
        if let Err(e) = self.retention_clock.save() {
            tracing::warn!(error = %e, "retention clock not saved");
        }
        Ok(())
    }

    /// Drops WAL segments that are resolved and applied to the cache.
    pub fn prune_wal(&self) -> std::io::Result<usize> {
        let published = self.outbox.published.load(std::sync::atomic::Ordering::SeqCst);
        self.wal.prune(self.sync.applied().min(published).saturating_add(1))
    }

    /// How far the outbox relay has published.
    pub fn outbox(&self) -> &Arc<crate::outbox::OutboxState> {
        &self.outbox
    }

    /// The cache and how it is kept in sync (for the applier and health).
    pub fn cache(&self) -> &Arc<dyn SidecarCache> {
        &self.cache
    }

    pub fn cache_sync(&self) -> &Arc<CacheSync> {
        &self.sync
    }

    /// The element's WAL folder.
    pub fn wal_dir(&self) -> PathBuf {
        self.layout.wal()
    }
}

fn op_action(op: WalOp) -> &'static str {
    match op {
        WalOp::Create => "create",
        WalOp::Update => "update",
        WalOp::Delete => "delete",
        WalOp::Dispose => "dispose",
        WalOp::Archive => "archive",
        WalOp::StageRestore => "restore_ready",
        WalOp::ExpireRestore => "restore_expired",
    }
}

fn tombstone(sc: &mut Sidecar, now: DateTime<Utc>, by: &str, state: DocState, bypassed: bool) {
    sc.state = state;
    sc.content.location = Tier::None;
    sc.content.restore = None;
    sc.tombstone = Some(Tombstone {
        at: now,
        by: by.to_owned(),
        reason: state.as_str().to_owned(),
        retention_bypassed: bypassed,
        extra: Map::new(),
    });
}

/// Retention rules for a delete. Returns whether a governance retention was bypassed.
pub fn check_delete(
    sc: &Sidecar,
    now: DateTime<Utc>,
    can_bypass: bool,
    bypass_requested: bool,
) -> Result<bool, StoreError> {
    let r = &sc.retention;
    if r.legal_hold {
        return Err(StoreError::LegalHold(sc.file_id));
    }
    if !r.is_under_retention(now) {
        return Ok(false);
    }
    let until = r.retain_until.map(|t| t.to_rfc3339()).unwrap_or_default();
    match r.mode {
        RetentionMode::Compliance => Err(StoreError::Compliance { id: sc.file_id, until }),
        RetentionMode::Governance if bypass_requested && can_bypass => Ok(true),
        RetentionMode::Governance if bypass_requested => Err(StoreError::BypassDenied),
        RetentionMode::Governance => Err(StoreError::Governance { id: sc.file_id, until }),
        RetentionMode::None => Ok(false),
    }
}

/// A planned file id (see [`NewFile::file_id`]): a UUIDv7 whose time (which names its day
/// folder) is within the last two days, or at most five minutes ahead.
pub fn validate_planned_id(id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
    if id.get_version_num() != 7 {
        return Err(StoreError::BadRequest(format!("file_id {id} is not a UUIDv7")));
    }
    let at = layout::id_time(id);
    if at > now + chrono::Duration::minutes(5) || at < now - chrono::Duration::days(2) {
        return Err(StoreError::BadRequest(format!(
            "file_id {id} was made at {} — a planned file id must be from the last two days",
            at.to_rfc3339()
        )));
    }
    Ok(())
}

/// Checks the retention an upload asks for.
pub fn validate_new_retention(r: &Retention, now: DateTime<Utc>) -> Result<(), StoreError> {
    match (r.mode, r.retain_until) {
        (RetentionMode::None, Some(_)) => Err(StoreError::BadRequest("retain_until needs a retention_mode".into())),
        (RetentionMode::Governance | RetentionMode::Compliance, None) => {
            Err(StoreError::BadRequest("retention_mode needs retain_until".into()))
        }
        (_, Some(t)) if t <= now => {
            Err(StoreError::BadRequest(format!("retain_until {} is in the past", t.to_rfc3339())))
        }
        _ => Ok(()),
    }
}

/// A metadata change: each `Some` replaces (description, tags) or merges (metadata).
#[derive(Debug, Clone, Default)]
pub struct MetadataPatch {
    pub description: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub metadata: Option<Value>,
}

impl MetadataPatch {
    /// Parses a JSON merge patch (RFC 7386) limited to description, tags and metadata.
    pub fn from_merge_patch(v: &Value) -> Result<Self, StoreError> {
        let obj = v.as_object().ok_or_else(|| StoreError::BadRequest("a merge patch must be a JSON object".into()))?;
        let mut p = MetadataPatch::default();
        for (k, val) in obj {
            match k.as_str() {
                "description" => {
                    p.description = Some(match val {
                        Value::Null => None,
                        Value::String(s) => Some(s.clone()),
                        _ => {
                            return Err(StoreError::BadRequest("description must be a string or null".into()));
                        }
                    })
                }
                "tags" => {
                    p.tags = Some(match val {
                        Value::Null => vec![],
                        Value::Array(a) => normalise_tags(
                            a.iter()
                                .map(|t| t.as_str().map(str::to_owned))
                                .collect::<Option<Vec<_>>>()
                                .ok_or_else(|| StoreError::BadRequest("tags must be an array of strings".into()))?,
                        ),
                        _ => {
                            return Err(StoreError::BadRequest("tags must be an array of strings or null".into()));
                        }
                    })
                }
                "metadata" => {
                    if !(val.is_object() || val.is_null()) {
                        return Err(StoreError::BadRequest("metadata must be a JSON object or null".into()));
                    }
                    p.metadata = Some(val.clone());
                }
                other => {
                    return Err(StoreError::BadRequest(format!(
                        "field {other:?} cannot be patched (only description, tags, metadata)"
                    )));
                }
            }
        }
        Ok(p)
    }
}

/// Trims, drops empties and duplicates, keeps order.
pub fn normalise_tags(tags: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    tags.into_iter().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty() && seen.insert(t.clone())).collect()
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn unknown_patch_fields_are_refused() {
        let e = MetadataPatch::from_merge_patch(&json!({"sha256": "x"})).unwrap_err();
        assert!(e.to_string().contains("sha256"));
    }
}
