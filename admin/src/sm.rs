//! The state machine: the [`State`] in memory, its snapshot on disk, and the audit chain in
//! its own append-only segments ([`crate::audit_log`]).
//!
//! Durability comes from the log: on start the last snapshot is loaded and openraft re-applies
//! the committed entries after it (the log store keeps the committed id). The audit entries
//! an apply produces are appended by the apply and synced by the state machine's sync thread
//! (group commit: one `fdatasync` covers every append before it); the leader acknowledges a
//! change only once its entry is synced ([`StateMachine::wait_synced`]), and a snapshot is
//! written only after the segments are synced up to its head, so the log it lets openraft
//! purge is never the only copy of an entry. Re-applying a change whose entry is already on
//! disk regenerates the identical entry, which is skipped.
//!
//! Snapshots hold the live state only (users, accounts, policies, elements, keys and the
//! chain's head), so their size follows the live state, not the history. The copy a snapshot
//! is built from is taken in O(1) between two applies (the state's maps are persistent
//! maps); serialising and syncing it runs in openraft's snapshot task, off the apply path.
//! Snapshots are written through a temp file, fsynced and renamed, before openraft may purge
//! the log.
//!
//! A node whose segments end before the state's head (it installed a snapshot from the
//! leader, or lost its segments) is missing part of the chain: [`StateMachine::audit_gap`]
//! says which part, a node task fetches it from a peer and [`StateMachine::fill_audit`]
//! checks every link and the head the state names before appending. Entries applied
//! meanwhile wait in memory behind the gap (the log and the peers still hold them).

use crate::audit_log::{AUDIT_DIR, AuditHead, AuditLog, AuditLogError};
use crate::log_store::write_atomic;
use crate::state::{AuditEntry, State};
use crate::types::{Entry, LogId, NodeId, Response, StorageError, TypeConfig};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::io::{BufRead as _, Cursor};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::Duration;

const SNAPSHOT_FILE: &str = "snapshot.json";
/// The audit chain as one JSON-lines file, as nodes kept it before the segments; moved
/// into the segments on start.
pub const LEGACY_AUDIT_FILE: &str = "audit.jsonl";

/// What a snapshot holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership<NodeId, BasicNode>,
    pub state: State,
}

struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// The segments and the entries waiting behind a gap.
struct AuditSink {
    log: AuditLog,
    /// Entries applied here after a gap in the segments, in order; appended once the gap is
    /// filled.
    waiting: Vec<AuditEntry>,
}

/// Shared between the Raft task and the HTTP handlers, which read [`StateMachine::read`].
pub struct Shared {
    dir: PathBuf,
    data: RwLock<SmData>,
    audit: Mutex<AuditSink>,
    /// Signalled when entries were appended, for the sync thread.
    appended: Condvar,
    /// The last audit entry known durable.
    synced: tokio::sync::watch::Sender<u64>,
    /// Set for good when a sync failed: the kernel may have dropped the unsynced pages, so
    /// nothing written since can be called durable until the node restarts.
    sync_failed: Mutex<Option<String>>,
    /// Held while a snapshot file is written; the index of the one on disk.
    snapshot_file: Mutex<Option<LogId>>,
    snapshot_seq: AtomicU64,
    applied: tokio::sync::watch::Sender<u64>,
}

/// The state machine handed to openraft; clones share one state.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateMachine")
    }
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(ErrorSubject::StateMachine, verb, openraft::AnyError::new(&e)).into()
}

fn snap_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(ErrorSubject::Snapshot(None), verb, openraft::AnyError::new(&e)).into()
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

/// Reads the snapshot file of `dir`, if any.
fn load_snapshot(dir: &Path) -> std::io::Result<Option<StoredSnapshot>> {
    match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(b) => {
            // First line: the metadata; the rest: the state machine's JSON.
            let bad = |why: String| invalid(format!("{}: {why}", dir.join(SNAPSHOT_FILE).display()));
            let nl = b.iter().position(|&c| c == b'\n').ok_or_else(|| bad("no metadata line".to_owned()))?;
            let meta = serde_json::from_slice(&b[..nl]).map_err(|e| bad(e.to_string()))?;
            Ok(Some(StoredSnapshot { meta, data: b[nl + 1..].to_vec() }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes a snapshot file: the metadata line, then the data.
fn write_snapshot(dir: &Path, meta: &SnapshotMeta<NodeId, BasicNode>, bytes: &[u8]) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(meta)?;
    out.push(b'\n');
    out.extend_from_slice(bytes);
    write_atomic(dir, SNAPSHOT_FILE, &out, true)
}

/// The entries of the legacy `audit.jsonl` up to the first unreadable line.
fn read_legacy_file(path: &Path) -> std::io::Result<Vec<AuditEntry>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        match serde_json::from_str::<AuditEntry>(&line?) {
            Ok(e) => out.push(e),
            Err(_) => break,
        }
    }
    Ok(out)
}

impl AuditSink {
    /// Appends the entries that continue the segments; skips the ones already there (a
    /// replay after a restart) and keeps the ones after a gap waiting.
    fn record(&mut self, fresh: Vec<AuditEntry>) -> Result<(), AuditLogError> {
        let head = self.log.head().clone();
        // The sequence number the next entry must have to be written or to wait.
        let mut next = self.waiting.last().map_or(head.seq, |w| w.seq) + 1;
        let mut now = Vec::new();
        for e in fresh {
            if e.seq == head.seq && e.hash != head.hash {
                let why =
                    format!("re-applying entry {} gave hash {} where the segments hold {}", e.seq, e.hash, head.hash);
                return Err(AuditLogError::Corrupt { path: self.log.dir().to_owned(), why });
            }
            if e.seq < next {
                continue;
            }
            next = e.seq + 1;
            if self.waiting.is_empty() && e.seq == head.seq + 1 + now.len() as u64 {
                now.push(e);
            } else {
                self.waiting.push(e);
            }
        }
        self.log.append(&now)
    }

    /// Appends entries fetched from a peer after checking each link and, at `anchor`'s
    /// sequence number, its hash; then the waiting entries once they follow. Answers how many
    /// entries were appended.
    fn fill(&mut self, fetched: &[AuditEntry], anchor: &AuditHead) -> Result<usize, AuditLogError> {
        let mut head = self.log.head().clone();
        let start = head.seq;
        let mut take = Vec::new();
        for e in fetched.iter().skip_while(|e| e.seq <= start) {
            let anchored = e.seq != anchor.seq || e.hash == anchor.hash;
            if !head.links(e) || !anchored || self.waiting.first().is_some_and(|w| w.seq <= e.seq) {
                break;
            }
            head = AuditHead::of(e);
            take.push(e.clone());
        }
        self.log.append(&take)?;
        let mut n = take.len();
        if self.waiting.first().is_some_and(|w| self.log.head().links(w)) {
            let waiting = std::mem::take(&mut self.waiting);
            n += waiting.len();
            self.log.append(&waiting)?;
        }
        Ok(n)
    }
}

impl StateMachine {
    /// Opens the state machine in `dir`, starting from its last snapshot, with
    /// `per_segment` audit entries per segment file. A data folder of the format before
    /// the segments (the chain in the snapshot and in `audit.jsonl`) is migrated.
    pub fn open(dir: &Path, per_segment: u64) -> std::io::Result<StateMachine> {
        std::fs::create_dir_all(dir)?;
        let stored = load_snapshot(dir)?;
        let mut data = match &stored {
            Some(s) => serde_json::from_slice::<SmData>(&s.data).map_err(|e| invalid(format!("snapshot data: {e}")))?,
            None => SmData::default(),
        };
        let log = AuditLog::open(&dir.join(AUDIT_DIR), per_segment).map_err(invalid)?;
        let mut sink = AuditSink { log, waiting: Vec::new() };

        // Migration: the old file first (it may run ahead of the snapshot), then the chain
        // the old snapshot held; the snapshot is rewritten without it.
        let legacy_file = dir.join(LEGACY_AUDIT_FILE);
        let from_file = read_legacy_file(&legacy_file)?;
        let legacy_snapshot = std::mem::take(&mut data.state.legacy_audit);
        if let Some(last) = legacy_snapshot.last() {
            data.state.audit_head = AuditHead::of(last);
        }
        for chain in [&from_file, &legacy_snapshot] {
            let before = sink.log.head().seq;
            let anchor = data.state.audit_head.clone();
            sink.fill(chain, &anchor).map_err(invalid)?;
            let moved = sink.log.head().seq - before;
            if moved > 0 {
                tracing::info!(entries = moved, to = %sink.log.dir().display(), "moved audit entries into segments");
            }
        }
        if !legacy_snapshot.is_empty()
            && let Some(s) = &stored
        {
            let bytes = serde_json::to_vec(&data)?;
            write_snapshot(dir, &s.meta, &bytes)?;
        }
        if std::fs::exists(&legacy_file)? {
            std::fs::remove_file(&legacy_file)?;
            std::fs::File::open(dir)?.sync_all()?;
        }
        if sink.log.head().seq < data.state.audit_head.seq {
            tracing::warn!(
                have = sink.log.head().seq,
                want = data.state.audit_head.seq,
                "audit segments end before the state's head; the rest will be fetched from a peer"
            );
        }

        let synced = sink.log.sync().map_err(invalid)?;
        let applied = data.last_applied.map_or(0, |l| l.index);
        let on_disk = stored.and_then(|s| s.meta.last_log_id);
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            data: RwLock::new(data),
            audit: Mutex::new(sink),
            appended: Condvar::new(),
            synced: tokio::sync::watch::channel(synced).0,
            sync_failed: Mutex::new(None),
            snapshot_file: Mutex::new(on_disk),
            snapshot_seq: AtomicU64::new(0),
            applied: tokio::sync::watch::channel(applied).0,
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new().name("audit-sync".to_owned()).spawn(move || sync_loop(&weak))?;
        Ok(StateMachine { shared })
    }

    /// Waits until the audit chain is durable up to entry `seq` (the leader's acknowledgement
    /// of a change waits for its entry).
    pub async fn wait_synced(&self, seq: u64, timeout: Duration) -> Result<(), String> {
        let failed = || self.shared.sync_failed.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut rx = self.shared.synced.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|s| *s >= seq || failed().is_some())).await {
            Ok(Ok(_)) => match failed() {
                Some(e) => Err(format!("the audit chain could not be synced to disk: {e}")),
                None => Ok(()),
            },
            Ok(Err(_)) => Err("the state machine stopped".to_owned()),
            Err(_) => Err(format!("the audit chain was not synced to disk within {timeout:?}")),
        }
    }

    /// Syncs the audit segments now (before a snapshot lets the log go).
    fn sync_audit_now(&self) -> Result<(), AuditLogError> {
        let handle = self.sink().log.sync_handle();
        if let Some((f, seq)) = handle {
            f.sync_data().map_err(|source| AuditLogError::Io { path: self.audit_dir(), source })?;
            self.shared.synced.send_if_modified(|s| std::mem::replace(s, (*s).max(seq)) < seq);
        }
        Ok(())
    }

    /// Runs `f` over the current state.
    pub fn read<T>(&self, f: impl FnOnce(&SmData) -> T) -> T {
        f(&self.shared.data.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The last applied index, as a watch (for tests and read-your-writes waits).
    pub fn applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.applied.subscribe()
    }

    fn sink(&self) -> std::sync::MutexGuard<'_, AuditSink> {
        self.shared.audit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last audit entry in this node's segments.
    pub fn audit_written(&self) -> AuditHead {
        self.sink().log.head().clone()
    }

    /// The folder of the audit segments.
    pub fn audit_dir(&self) -> PathBuf {
        self.shared.dir.join(AUDIT_DIR)
    }

    /// Up to `limit` audit entries after `after`, from the segments (blocking file reads).
    pub fn read_audit(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, AuditLogError> {
        let until = self.audit_written().seq;
        crate::audit_log::read_range(&self.audit_dir(), after, limit, until)
    }

    /// The part of the chain this node lacks, as (last entry it has, last entry it needs).
    pub fn audit_gap(&self) -> Option<(u64, u64)> {
        let sink = self.sink();
        let want = self.read(|d| d.state.audit_head.seq);
        let have = sink.log.head().seq;
        let until = sink.waiting.first().map_or(want, |w| w.seq - 1);
        (have < until).then_some((have, until))
    }

    /// Appends entries fetched from a peer to fill [`StateMachine::audit_gap`]; every link is
    /// checked, and the entry at the state's head must carry the head's hash.
    pub fn fill_audit(&self, fetched: &[AuditEntry]) -> Result<usize, AuditLogError> {
        let mut sink = self.sink();
        let anchor = self.read(|d| d.state.audit_head.clone());
        let n = sink.fill(fetched, &anchor)?;
        drop(sink);
        self.shared.appended.notify_one();
        Ok(n)
    }

    fn persist(&self, meta: &SnapshotMeta<NodeId, BasicNode>, bytes: &[u8]) -> Result<(), StorageError> {
        let mut on_disk = self.shared.snapshot_file.lock().unwrap_or_else(|e| e.into_inner());
        // A build that finished after a newer install (or build) leaves the newer file.
        if on_disk.is_some() && meta.last_log_id < *on_disk {
            return Ok(());
        }
        write_snapshot(&self.shared.dir, meta, bytes).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        *on_disk = meta.last_log_id;
        Ok(())
    }
}

/// The sync thread: `fdatasync`s the last audit segment whenever entries were appended
/// since the last sync, and publishes how far the chain is durable. Ends with the state
/// machine.
fn sync_loop(weak: &Weak<Shared>) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let handle = {
            let synced = *shared.synced.borrow();
            let mut g = shared.audit.lock().unwrap_or_else(|e| e.into_inner());
            if g.log.head().seq <= synced {
                g = shared.appended.wait_timeout(g, Duration::from_millis(500)).unwrap_or_else(|e| e.into_inner()).0;
            }
            g.log.sync_handle().filter(|(_, seq)| *seq > synced)
        };
        let Some((f, seq)) = handle else { continue };
        match f.sync_data() {
            Ok(()) => {
                shared.synced.send_if_modified(|s| std::mem::replace(s, (*s).max(seq)) < seq);
            }
            Err(e) => {
                tracing::error!(error = %e, dir = %shared.dir.display(), "syncing the audit chain failed; no further change is acknowledged until the node restarts");
                *shared.sync_failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                shared.synced.send_modify(|_| {});
                return;
            }
        }
    }
}

/// Builds a snapshot from a copy of the state taken between two applies.
pub struct SnapshotBuilder {
    sm: StateMachine,
    copy: SmData,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let seq = self.sm.shared.snapshot_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let d = &self.copy;
        let id = match d.last_applied {
            Some(l) => format!("{}-{}-{seq}", l.leader_id.term, l.index),
            None => format!("0-0-{seq}"),
        };
        let meta = SnapshotMeta { last_log_id: d.last_applied, last_membership: d.membership.clone(), snapshot_id: id };
        let (sm, copy) = (self.sm.clone(), std::mem::take(&mut self.copy));
        let meta2 = meta.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            let bytes = serde_json::to_vec(&copy).map_err(|e| snap_err(ErrorVerb::Write, e))?;
            sm.sync_audit_now().map_err(|e| snap_err(ErrorVerb::Write, e))?;
            crate::test_pause("snapshot");
            sm.persist(&meta2, &bytes)?;
            Ok::<_, StorageError>(bytes)
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, std::io::Error::other(e.to_string())))??;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership<NodeId, BasicNode>), StorageError> {
        Ok(self.read(|d| (d.last_applied, d.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let mut fresh = Vec::new();
        // The sink is held across the state change and the append, so that whoever holds it
        // sees the state's head and the segments agree (no false gap).
        let mut sink = self.sink();
        let applied = {
            let mut d = self.shared.data.write().unwrap_or_else(|e| e.into_inner());
            for e in entries {
                d.last_applied = Some(e.log_id);
                match e.payload {
                    EntryPayload::Blank => out.push(Response::Ok(serde_json::Value::Null)),
                    EntryPayload::Normal(req) => out.push(d.state.apply(&req, &mut fresh)),
                    EntryPayload::Membership(m) => {
                        d.membership = StoredMembership::new(Some(e.log_id), m);
                        out.push(Response::Ok(serde_json::Value::Null));
                    }
                }
            }
            d.last_applied.map_or(0, |l| l.index)
        };
        if !fresh.is_empty() {
            sink.record(fresh).map_err(|e| sm_err(ErrorVerb::Write, e))?;
            self.shared.appended.notify_one();
        }
        drop(sink);
        self.shared.applied.send_replace(applied);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Called between two applies: the copy is consistent, and O(1) (persistent maps).
        SnapshotBuilder { sm: self.clone(), copy: self.read(Clone::clone) }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let mut new: SmData = serde_json::from_slice(&bytes).map_err(|e| {
            StorageIOError::new(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                openraft::AnyError::new(&e),
            )
        })?;
        new.last_applied = meta.last_log_id;
        new.membership = meta.last_membership.clone();
        // A leader of the format before the segments sends the whole chain.
        let legacy = std::mem::take(&mut new.state.legacy_audit);
        if let Some(last) = legacy.last() {
            new.state.audit_head = AuditHead::of(last);
        }
        let bytes = if legacy.is_empty() {
            bytes
        } else {
            serde_json::to_vec(&new).map_err(|e| snap_err(ErrorVerb::Write, e))?
        };
        self.persist(meta, &bytes)?;
        let anchor = new.state.audit_head.clone();
        let applied = new.last_applied.map_or(0, |l| l.index);
        *self.shared.data.write().unwrap_or_else(|e| e.into_inner()) = new;
        {
            let mut sink = self.sink();
            sink.waiting.clear();
            sink.fill(&legacy, &anchor).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        self.shared.appended.notify_one();
        self.shared.applied.send_replace(applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let s = load_snapshot(&self.shared.dir).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(s.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
