//! The state machine: the [`State`] in memory, its snapshot on disk, and the audit chain
//! mirrored to an append-only `audit.jsonl` that `verify-audit` reads without a running node.
//!
//! Durability comes from the log: on start the last snapshot is loaded and openraft re-applies
//! the committed entries after it (the log store keeps the committed id). Snapshots are
//! written through a temp file, fsynced and renamed, before openraft may purge the log.

use crate::log_store::write_atomic;
use crate::state::{AuditEntry, State};
use crate::types::{Entry, LogId, NodeId, Response, StorageError, TypeConfig};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::io::{BufRead as _, Cursor, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

const SNAPSHOT_FILE: &str = "snapshot.json";
/// The audit chain as JSON lines, one entry each.
pub const AUDIT_FILE: &str = "audit.jsonl";

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

/// Shared between the Raft task and the HTTP handlers, which read [`StateMachine::read`].
pub struct Shared {
    dir: PathBuf,
    data: RwLock<SmData>,
    audit_file: Mutex<AuditWriter>,
    snapshot_seq: Mutex<u64>,
    applied: tokio::sync::watch::Sender<u64>,
}

struct AuditWriter {
    path: PathBuf,
    last_seq: u64,
}

impl AuditWriter {
    fn open(path: PathBuf) -> std::io::Result<Self> {
        let mut last_seq = 0;
        let mut valid = 0u64;
        if let Ok(f) = std::fs::File::open(&path) {
            let mut r = std::io::BufReader::new(f);
            let mut line = String::new();
            while r.read_line(&mut line)? > 0 {
                if !line.ends_with('\n') {
                    break;
                }
                match serde_json::from_str::<AuditEntry>(&line) {
                    Ok(e) => last_seq = e.seq,
                    Err(_) => break,
                }
                valid += line.len() as u64;
                line.clear();
            }
            // A torn last line (crash mid-write) is cut off; it is re-applied from the log.
            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
            if f.metadata()?.len() > valid {
                f.set_len(valid)?;
            }
        }
        Ok(Self { path, last_seq })
    }

    /// Appends the entries after the last one written.
    fn append(&mut self, entries: &[AuditEntry]) -> std::io::Result<()> {
        let new: Vec<&AuditEntry> = entries.iter().filter(|e| e.seq > self.last_seq).collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for e in &new {
            serde_json::to_writer(&mut buf, e)?;
            buf.push(b'\n');
        }
        let mut f = std::fs::OpenOptions::new().append(true).create(true).open(&self.path)?;
        f.write_all(&buf)?;
        self.last_seq = new.last().map_or(self.last_seq, |e| e.seq);
        Ok(())
    }

    /// Replaces the file with the whole chain (after installing a snapshot).
    fn rewrite(&mut self, entries: &[AuditEntry]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut buf, e)?;
            buf.push(b'\n');
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        write_atomic(dir, AUDIT_FILE, &buf, true)?;
        self.last_seq = entries.last().map_or(0, |e| e.seq);
        Ok(())
    }
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

/// Reads the snapshot file of `dir`, if any.
fn load_snapshot(dir: &Path) -> std::io::Result<Option<StoredSnapshot>> {
    match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(b) => {
            // First line: the metadata; the rest: the state machine's JSON.
            let bad = |why: String| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {why}", dir.join(SNAPSHOT_FILE).display()),
                )
            };
            let nl = b.iter().position(|&c| c == b'\n').ok_or_else(|| bad("no metadata line".to_owned()))?;
            let meta = serde_json::from_slice(&b[..nl]).map_err(|e| bad(e.to_string()))?;
            Ok(Some(StoredSnapshot { meta, data: b[nl + 1..].to_vec() }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl StateMachine {
    /// Opens the state machine in `dir`, starting from its last snapshot.
    pub fn open(dir: &Path) -> std::io::Result<StateMachine> {
        std::fs::create_dir_all(dir)?;
        let data = match load_snapshot(dir)? {
            Some(s) => serde_json::from_slice::<SmData>(&s.data)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("snapshot data: {e}")))?,
            None => SmData::default(),
        };
        let mut audit = AuditWriter::open(dir.join(AUDIT_FILE))?;
        // The file may lag the snapshot (it is not fsynced per entry); fill it in.
        if audit.last_seq < data.state.audit.last().map_or(0, |e| e.seq) {
            audit.rewrite(&data.state.audit)?;
        }
        let applied = data.last_applied.map_or(0, |l| l.index);
        Ok(StateMachine {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                data: RwLock::new(data),
                audit_file: Mutex::new(audit),
                snapshot_seq: Mutex::new(0),
                applied: tokio::sync::watch::channel(applied).0,
            }),
        })
    }

    /// Runs `f` over the current state.
    pub fn read<T>(&self, f: impl FnOnce(&SmData) -> T) -> T {
        f(&self.shared.data.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The last applied index, as a watch (for tests and read-your-writes waits).
    pub fn applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.applied.subscribe()
    }

    fn snapshot_now(&self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (bytes, meta) = {
            let d = self.shared.data.read().unwrap_or_else(|e| e.into_inner());
            let bytes = serde_json::to_vec(&*d).map_err(|e| snap_err(ErrorVerb::Write, e))?;
            let mut seq = self.shared.snapshot_seq.lock().unwrap_or_else(|e| e.into_inner());
            *seq += 1;
            let id = match d.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, *seq),
                None => format!("0-0-{}", *seq),
            };
            let meta =
                SnapshotMeta { last_log_id: d.last_applied, last_membership: d.membership.clone(), snapshot_id: id };
            (bytes, meta)
        };
        self.persist(&meta, &bytes)?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }

    fn persist(&self, meta: &SnapshotMeta<NodeId, BasicNode>, bytes: &[u8]) -> Result<(), StorageError> {
        let mut out = serde_json::to_vec(meta).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        out.push(b'\n');
        out.extend_from_slice(bytes);
        write_atomic(&self.shared.dir, SNAPSHOT_FILE, &out, true).map_err(|e| snap_err(ErrorVerb::Write, e))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.snapshot_now()
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership<NodeId, BasicNode>), StorageError> {
        Ok(self.read(|d| (d.last_applied, d.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let (audit_tail, applied) = {
            let mut d = self.shared.data.write().unwrap_or_else(|e| e.into_inner());
            let before = d.state.audit.len();
            for e in entries {
                d.last_applied = Some(e.log_id);
                match e.payload {
                    EntryPayload::Blank => out.push(Response::Ok(serde_json::Value::Null)),
                    EntryPayload::Normal(req) => out.push(d.state.apply(&req)),
                    EntryPayload::Membership(m) => {
                        d.membership = StoredMembership::new(Some(e.log_id), m);
                        out.push(Response::Ok(serde_json::Value::Null));
                    }
                }
            }
            (d.state.audit[before.min(d.state.audit.len())..].to_vec(), d.last_applied.map_or(0, |l| l.index))
        };
        if !audit_tail.is_empty() {
            let mut w = self.shared.audit_file.lock().unwrap_or_else(|e| e.into_inner());
            w.append(&audit_tail).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        self.shared.applied.send_replace(applied);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
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
        self.persist(meta, &bytes)?;
        let chain = new.state.audit.clone();
        let applied = new.last_applied.map_or(0, |l| l.index);
        *self.shared.data.write().unwrap_or_else(|e| e.into_inner()) = new;
        self.shared
            .audit_file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rewrite(&chain)
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        self.shared.applied.send_replace(applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let s = load_snapshot(&self.shared.dir).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(s.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
