//! The durable Raft log: one append-only file of checksummed records, the vote in a small
//! file replaced atomically, and the committed id (a hint) overwritten in place.
//!
//! Record frame: `len: u32 LE | crc32(payload): u32 LE | payload (JSON)`. A record is an
//! entry, a truncation ("entries from index N on are gone") or a purge ("entries up to this
//! log id are compacted into a snapshot"). Opening replays the file in order; a torn or
//! corrupt tail (a crash mid-append) is cut off at the last whole record, which is safe
//! because an append is acknowledged only after `fdatasync`. When purged records make up most
//! of the file it is rewritten (temp file, fsync, rename, directory fsync).
//!
//! The file is kept zero-filled (written and synced) a few MiB ahead of its last record, so
//! an append overwrites blocks the file already has and its `fdatasync` writes the data
//! alone: appending past the end would change the file's size with every record and make
//! each sync write the inode too (a second disk write, in series with the first). A zero
//! frame ends the replay exactly as the end of the file does (its empty payload is no
//! record), so the format is unchanged: a file without zeros is read as before, and one
//! with them by older versions too.

use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogId, RaftLogReader, StorageIOError, Vote};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const LOG_FILE: &str = "raft-log";
const VOTE_FILE: &str = "vote.json";
const COMMITTED_FILE: &str = "committed.json";
/// Rewrite the log file once it is this large and mostly purged records.
const COMPACT_MIN_BYTES: u64 = 4 << 20;
/// A log sync at least this slow is logged: the node sends and answers no heartbeat
/// meanwhile (openraft 0.9 waits for each flush), so a few of them make an election.
const SLOW_SYNC: std::time::Duration = std::time::Duration::from_millis(150);
/// Zero-filled bytes kept ahead of the last record, at least ...
const ZEROED_AHEAD: u64 = 2 << 20;
/// ... added this much at a time (written and synced between two log syncs; about 2 ms
/// here).
const ZERO_CHUNK: usize = 1 << 20;

#[derive(Serialize, Deserialize)]
enum Record {
    Entry(Box<Entry>),
    Truncate(u64),
    Purge(LogId),
}

struct Inner {
    dir: PathBuf,
    file: Arc<File>,
    /// Where the next record goes: the end of the last whole record.
    file_len: u64,
    /// The file's size on disk: `file_len` and the zero-filled bytes after it.
    allocated: u64,
    log: BTreeMap<u64, Entry>,
    /// Bytes of the records of entries still in `log`, for the compaction rule.
    live_bytes: BTreeMap<u64, u64>,
    last_purged: Option<LogId>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
    /// `committed.json`, opened at the first save.
    committed_file: Option<File>,
}

/// `committed.json` is overwritten in place with a record of this many bytes (JSON padded
/// with spaces): no rename per commit, which on ext4 would force a write-back each time.
const COMMITTED_RECORD: usize = 160;

/// The log store; clones share one log (the reader handed to openraft is a clone).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    flusher: Arc<Flusher>,
}

/// What to call once an append is durable (or failed to be).
type Flushed = Box<dyn FnOnce(std::io::Result<()>) + Send>;

/// Appends written but not yet synced: the file each went to and openraft's callback.
/// A flusher thread syncs once for everything pending (group commit) and then answers
/// every callback, so concurrent appends share one `fdatasync`.
struct Flusher {
    pending: Mutex<Vec<(Arc<File>, Flushed)>>,
    wake: std::sync::Condvar,
}

/// The flusher thread's loop; ends with the log store.
fn flush_loop(weak: &std::sync::Weak<Flusher>, inner: &std::sync::Weak<Mutex<Inner>>) {
    loop {
        let Some(fl) = weak.upgrade() else { return };
        if let Some(inner) = inner.upgrade() {
            zero_ahead(&inner);
        }
        let batch = {
            let mut g = fl.pending.lock().unwrap_or_else(|e| e.into_inner());
            if g.is_empty() {
                g = fl.wake.wait_timeout(g, std::time::Duration::from_millis(500)).unwrap_or_else(|e| e.into_inner()).0;
            }
            std::mem::take(&mut *g)
        };
        // Every write of the batch went to one of these files (a compaction may have
        // replaced the file meanwhile; it syncs the new one itself).
        let mut files: Vec<&Arc<File>> = Vec::new();
        for (f, _) in &batch {
            if !files.iter().any(|x| Arc::ptr_eq(x, f)) {
                files.push(f);
            }
        }
        let mut failed = None;
        let started = std::time::Instant::now();
        for f in files {
            if let Err(e) = f.sync_data() {
                failed = Some((e.kind(), e.to_string()));
            }
        }
        let took = started.elapsed();
        if took >= SLOW_SYNC {
            tracing::warn!(
                ms = took.as_millis() as u64,
                appends = batch.len(),
                "slow raft log sync: heartbeats wait for it"
            );
        }
        for (_, callback) in batch {
            callback(match &failed {
                None => Ok(()),
                Some((kind, msg)) => Err(std::io::Error::new(*kind, msg.clone())),
            });
        }
    }
}

/// Extends the file by one zero-filled chunk, synced, when fewer than [`ZEROED_AHEAD`]
/// bytes are left after the last record. Runs on the flusher thread between two log syncs,
/// so a log sync never has the zeros to write back. The zeros are written under the lock
/// (appends write below `allocated` or move it past themselves, so the two never overlap)
/// and synced after it.
fn zero_ahead(inner: &Mutex<Inner>) {
    use std::os::unix::fs::FileExt as _;
    let file = {
        let mut g = inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.allocated.saturating_sub(g.file_len) >= ZEROED_AHEAD {
            return;
        }
        if let Err(e) = g.file.write_all_at(&[0; ZERO_CHUNK], g.allocated) {
            tracing::warn!(error = %e, "could not zero-fill the raft log ahead; appends grow the file instead");
            return;
        }
        g.allocated += ZERO_CHUNK as u64;
        g.file.clone()
    };
    if let Err(e) = file.sync_data() {
        // Appends are unaffected: each is synced on its own before it is acknowledged.
        tracing::warn!(error = %e, "could not sync the raft log's zero-filled tail");
    }
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStore")
    }
}

fn io_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

fn logs_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Logs, verb, e)
}

fn frame(rec: &Record) -> Vec<u8> {
    let payload = serde_json::to_vec(rec).unwrap_or_default();
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes whole records from `buf`; returns them with the length of the valid prefix.
fn decode_all(buf: &[u8]) -> (Vec<(Record, u64)>, u64) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= buf.len() {
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().unwrap_or_default());
        let Some(payload) = buf.get(pos + 8..pos + 8 + len) else { break };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(rec) = serde_json::from_slice::<Record>(payload) else { break };
        out.push((rec, (len + 8) as u64));
        pos += len + 8;
    }
    (out, pos as u64)
}

/// Writes `bytes` to `dir/name` through a temp file, fsyncs and renames it.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_data()?;
        }
    }
    std::fs::rename(&tmp, dir.join(name))?;
    if durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Bytes written between two syncs by [`write_atomic_paced`].
const PACED_CHUNK: usize = 4 << 20;

/// [`write_atomic`] (durable) for a large file written beside a busy log: the parts are
/// written in chunks of 4 MiB, each synced before the next. A single sync at the end would
/// queue the whole file for the disk at once, and the log's `fdatasync`, which every
/// heartbeat of this node waits for, behind it: with a snapshot of a few hundred MB that is
/// long enough for an election.
pub fn write_atomic_paced(dir: &Path, name: &str, parts: &[&[u8]]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        let mut unsynced = 0;
        for part in parts {
            for chunk in part.chunks(PACED_CHUNK) {
                f.write_all(chunk)?;
                unsynced += chunk.len();
                if unsynced >= PACED_CHUNK {
                    f.sync_data()?;
                    unsynced = 0;
                }
            }
        }
        f.sync_data()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl LogStore {
    /// Opens (creating) the log in `dir`, replaying it and cutting off a torn tail.
    pub fn open(dir: &Path) -> std::io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        let (records, valid) = decode_all(&buf);
        let mut allocated = buf.len() as u64;
        // Zeros after the last record are the file's zero-filled tail, kept; anything else
        // is a torn or corrupt record and goes, zeros after it included, so that no part
        // of it can ever line up behind a later record.
        if buf[valid as usize..].iter().any(|&b| b != 0) {
            tracing::warn!(file = %path.display(), kept = valid, cut = buf.len() as u64 - valid, "cutting a torn tail off the raft log");
            file.set_len(valid)?;
            file.sync_all()?;
            allocated = valid;
        }
        let mut log = BTreeMap::new();
        let mut live_bytes = BTreeMap::new();
        let mut last_purged: Option<LogId> = None;
        for (rec, size) in records {
            match rec {
                Record::Entry(e) => {
                    let i = e.log_id.index;
                    // Purge records may come before re-appended entries only above the purge point.
                    if last_purged.is_none_or(|p| i > p.index) {
                        live_bytes.insert(i, size);
                        log.insert(i, *e);
                    }
                }
                Record::Truncate(i) => {
                    log.split_off(&i);
                    live_bytes.split_off(&i);
                }
                Record::Purge(id) => {
                    if last_purged.is_none_or(|p| id.index > p.index) {
                        last_purged = Some(id);
                    }
                    let keep = log.split_off(&(id.index + 1));
                    log = keep;
                    let keep = live_bytes.split_off(&(id.index + 1));
                    live_bytes = keep;
                }
            }
        }
        let vote = read_json(&dir.join(VOTE_FILE))?;
        // The committed id is a hint (openraft re-derives it); a damaged file is ignored.
        let committed = read_json(&dir.join(COMMITTED_FILE)).ok().flatten();
        let inner = Arc::new(Mutex::new(Inner {
            dir: dir.to_owned(),
            file: Arc::new(file),
            file_len: valid,
            allocated,
            log,
            live_bytes,
            last_purged,
            vote,
            committed,
            committed_file: None,
        }));
        let flusher = Arc::new(Flusher { pending: Mutex::new(Vec::new()), wake: std::sync::Condvar::new() });
        let (weak, weak_inner) = (Arc::downgrade(&flusher), Arc::downgrade(&inner));
        std::thread::Builder::new().name("raft-log-sync".to_owned()).spawn(move || flush_loop(&weak, &weak_inner))?;
        Ok(LogStore { inner, flusher })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every entry in the log now (for `verify-audit` and tests).
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().log.values().cloned().collect()
    }

    /// The last purged log id.
    pub fn last_purged(&self) -> Option<LogId> {
        self.lock().last_purged
    }

    /// The size of the log file in bytes.
    pub fn file_len(&self) -> u64 {
        self.lock().file_len
    }
}

impl Inner {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        self.file.write_all_at(bytes, self.file_len)?;
        self.file_len += bytes.len() as u64;
        self.allocated = self.allocated.max(self.file_len);
        Ok(())
    }

    /// Rewrites the file with only the purge point and the live entries.
    fn compact(&mut self) -> std::io::Result<()> {
        let mut out = Vec::new();
        if let Some(p) = self.last_purged {
            out.extend(frame(&Record::Purge(p)));
        }
        for e in self.log.values() {
            out.extend(frame(&Record::Entry(Box::new(e.clone()))));
        }
        write_atomic(&self.dir, LOG_FILE, &out, true)?;
        let file = OpenOptions::new().read(true).write(true).open(self.dir.join(LOG_FILE))?;
        self.file = Arc::new(file);
        self.file_len = out.len() as u64;
        self.allocated = self.file_len;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.lock().log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl LogStore {
    /// Writes `entries` and hands them to the flusher, which calls `callback` once they
    /// are durable.
    fn append_then<I>(&mut self, entries: I, callback: Flushed) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry>,
    {
        let file = {
            let mut g = self.lock();
            let mut buf = Vec::new();
            let mut sized = Vec::new();
            for e in entries {
                let f = frame(&Record::Entry(Box::new(e.clone())));
                sized.push((e.log_id.index, f.len() as u64));
                buf.extend_from_slice(&f);
                g.log.insert(e.log_id.index, e);
            }
            g.live_bytes.extend(sized);
            g.write(&buf).map_err(|e| logs_err(ErrorVerb::Write, e))?;
            g.file.clone()
        };
        // The flush runs off the Raft task; the callback tells openraft when it is durable.
        self.flusher.pending.lock().unwrap_or_else(|e| e.into_inner()).push((file, callback));
        self.flusher.wake.notify_one();
        Ok(())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let g = self.lock();
        let last = g.log.values().next_back().map(|e| *e.get_log_id()).or(g.last_purged);
        Ok(LogState { last_purged_log_id: g.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let mut g = self.lock();
        let bytes = serde_json::to_vec(vote).unwrap_or_default();
        write_atomic(&g.dir, VOTE_FILE, &bytes, true).map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        g.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        use std::os::unix::fs::FileExt as _;
        let mut g = self.lock();
        let mut bytes = serde_json::to_vec(&committed).unwrap_or_default();
        bytes.resize(COMMITTED_RECORD - 1, b' ');
        bytes.push(b'\n');
        // Not fsynced: losing or tearing it only means re-applying from the snapshot on
        // restart (a damaged file is ignored).
        if g.committed_file.is_none() {
            let path = g.dir.join(COMMITTED_FILE);
            let f = OpenOptions::new().write(true).create(true).truncate(false).open(path);
            g.committed_file = Some(f.map_err(|e| logs_err(ErrorVerb::Write, e))?);
        }
        if let Some(f) = &g.committed_file {
            f.write_all_at(&bytes, 0).map_err(|e| logs_err(ErrorVerb::Write, e))?;
        }
        g.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.append_then(entries, Box::new(move |r| callback.log_io_completed(r)))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut g = self.lock();
        g.log.split_off(&log_id.index);
        g.live_bytes.split_off(&log_id.index);
        g.write(&frame(&Record::Truncate(log_id.index))).map_err(|e| logs_err(ErrorVerb::Delete, e))?;
        g.file.sync_data().map_err(|e| logs_err(ErrorVerb::Delete, e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut g = self.lock();
        if g.last_purged.is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        g.last_purged = Some(log_id);
        let keep = g.log.split_off(&(log_id.index + 1));
        g.log = keep;
        let keep = g.live_bytes.split_off(&(log_id.index + 1));
        g.live_bytes = keep;
        g.write(&frame(&Record::Purge(log_id))).map_err(|e| logs_err(ErrorVerb::Delete, e))?;
        let live: u64 = g.live_bytes.values().sum();
        if g.file_len > COMPACT_MIN_BYTES && live * 2 < g.file_len {
            g.compact().map_err(|e| logs_err(ErrorVerb::Write, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(term, 1), index), payload: EntryPayload::Blank }
    }

    #[test]
    fn reopening_replays_truncations_and_purges_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        for i in 1..=5 {
            bytes.extend(frame(&Record::Entry(Box::new(entry(1, i)))));
        }
        bytes.extend(frame(&Record::Truncate(4)));
        bytes.extend(frame(&Record::Entry(Box::new(entry(2, 4)))));
        bytes.extend(frame(&Record::Purge(*entry(1, 2).get_log_id())));
        let valid = bytes.len() as u64;
        // A crash in the middle of the next append: half a frame.
        let torn = frame(&Record::Entry(Box::new(entry(2, 5))));
        bytes.extend(&torn[..torn.len() / 2]);
        std::fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();

        let store = LogStore::open(dir.path()).unwrap();
        let ids: Vec<(u64, u64)> = store.entries().iter().map(|e| (e.log_id.leader_id.term, e.log_id.index)).collect();
        assert_eq!(ids, vec![(1, 3), (2, 4)]);
        assert_eq!(store.last_purged().map(|l| l.index), Some(2));
        assert_eq!(store.file_len(), valid);
        let on_disk = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
        assert_eq!(on_disk[..valid as usize], bytes[..valid as usize]);
        assert!(on_disk[valid as usize..].iter().all(|&b| b == 0), "the torn tail is cut off on disk");
        drop(store);

        // A flipped bit in a record stops the replay there too. The bit is in the purge
        // record, the last one: the file may already run on in zeros the log wrote ahead.
        let mut bad = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
        let at = valid as usize - 3;
        bad[at] ^= 0x40;
        std::fs::write(dir.path().join(LOG_FILE), &bad).unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        let ids: Vec<(u64, u64)> = store.entries().iter().map(|e| (e.log_id.leader_id.term, e.log_id.index)).collect();
        assert_eq!(
            ids,
            vec![(1, 1), (1, 2), (1, 3), (2, 4)],
            "the purge record failed its checksum; replay stops before it"
        );
        assert_eq!(store.last_purged(), None);
    }

    fn ids(store: &LogStore) -> Vec<u64> {
        store.entries().iter().map(|e| e.log_id.index).collect()
    }

    /// Appends `entries` and waits for their sync.
    async fn append(store: &mut LogStore, entries: Vec<Entry>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        store.append_then(entries, Box::new(move |r| drop(tx.send(r)))).unwrap();
        rx.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn appends_overwrite_the_zero_filled_tail_and_a_reopen_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut store = LogStore::open(dir.path()).unwrap();
        append(&mut store, (1..=3).map(|i| entry(1, i)).collect()).await;
        // The flusher zero-fills ahead of the records, in its own time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(&path).unwrap().len() < store.file_len() + ZEROED_AHEAD {
            assert!(std::time::Instant::now() < deadline, "the log was never zero-filled ahead");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        append(&mut store, (4..=6).map(|i| entry(1, i)).collect()).await;
        let data = store.file_len();
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(
            size >= data + ZEROED_AHEAD - ZERO_CHUNK as u64,
            "the later appends went into the zeros ({data} of {size})"
        );
        drop(store);

        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(ids(&store), (1..=6).collect::<Vec<_>>());
        assert_eq!(store.file_len(), data, "the next record goes right after the last");
        assert!(std::fs::metadata(&path).unwrap().len() >= size, "a zero tail is no torn tail: it is kept");
        append(&mut store, vec![entry(2, 7)]).await;
        drop(store);
        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(ids(&store), (1..=7).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_record_goes_with_every_byte_after_it() {
        // A crash between two syncs can leave a later record on disk behind a torn one
        // (pages reach the disk in any order). Both go, so that the later one can never
        // be read as the record after one appended in the torn one's place.
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = frame(&Record::Entry(Box::new(entry(1, 1))));
        let valid = bytes.len();
        let torn = frame(&Record::Entry(Box::new(entry(1, 2))));
        bytes.extend(vec![0; torn.len() - 5]);
        bytes.extend(&torn[torn.len() - 5..]);
        bytes.extend(frame(&Record::Entry(Box::new(entry(1, 3)))));
        bytes.extend(vec![0; 4096]);
        std::fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(ids(&store), vec![1]);
        assert_eq!(store.file_len(), valid as u64);
        let on_disk = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
        assert!(on_disk[valid..].iter().all(|&b| b == 0), "nothing of the torn record or the one after it is left");
    }

    #[test]
    fn a_paced_write_holds_every_part_in_order_and_replaces_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("snap"), b"the previous snapshot").unwrap();
        // Parts that straddle the chunk size: a chunk boundary inside a part and between two.
        let head = b"{\"meta\":1}\n".to_vec();
        let big: Vec<u8> = (0..PACED_CHUNK * 2 + 12345).map(|i| (i % 251) as u8).collect();
        let tail: Vec<u8> = (0..PACED_CHUNK - 7).map(|i| (i % 13) as u8).collect();
        write_atomic_paced(dir.path(), "snap", &[&head, &big, &[], &tail]).unwrap();
        let mut want = head.clone();
        want.extend_from_slice(&big);
        want.extend_from_slice(&tail);
        let got = std::fs::read(dir.path().join("snap")).unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the file is the parts, in order");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["snap".to_owned()], "no temporary file is left behind");
    }
}
