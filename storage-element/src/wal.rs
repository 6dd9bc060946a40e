//! The element's write-ahead log: an intent before any file moves, a commit (or abort)
//! after. Start-up replays it to finish or roll back what a crash interrupted, and it is
//! the outbox from which events not yet published are sent again.
//!
//! Segments are `wal/<first seq, 20 digits>.wal`, one JSON record per line. Intents are
//! fsynced before the caller goes on; commits ride along with the next fsync. A torn last
//! line (a crash mid-append) is ignored on replay.

use crate::journal::{Journal, JournalSink};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use uuid::Uuid;

/// Rotate to a new segment past this size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// What an intent is about to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalOp {
    /// New content and its first sidecar.
    Create,
    /// A sidecar rewrite only (metadata, hold, retention, restore state).
    Update,
    /// Tombstone sidecar, then content removed.
    Delete,
    /// Tombstone sidecar by the disposition schedule, then content removed.
    Dispose,
    /// Content copied to the cold tier, sidecar rewritten, hot copy removed.
    Archive,
    /// A staged copy of cold content written to the hot tier, sidecar rewritten.
    StageRestore,
    /// Sidecar rewritten without the staged copy, then the copy removed.
    ExpireRestore,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum WalRecord {
    Intent {
        seq: u64,
        op: WalOp,
        file_id: Uuid,
        /// The sidecar revision this operation writes.
        revision: u64,
        /// The sidecar's path relative to the element root.
        sidecar: String,
        at: DateTime<Utc>,
        /// Who asked for it.
        #[serde(default)]
        actor: String,
        /// What it does in the archive's words (`create`, `update`, `legal_hold_set`, …);
        /// the outbox names its event after it.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        action: String,
    },
    Commit {
        seq: u64,
        intent: u64,
        /// The file and sidecar the committed intent changed (for caches catching up).
        #[serde(default)]
        file_id: Option<Uuid>,
        #[serde(default)]
        sidecar: Option<String>,
        /// The committed intent's action and revision, so the outbox can name the event
        /// even when the intent's segment is gone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<u64>,
    },
    Abort {
        seq: u64,
        intent: u64,
    },
}

impl WalRecord {
    pub fn seq(&self) -> u64 {
        match self {
            WalRecord::Intent { seq, .. } | WalRecord::Commit { seq, .. } | WalRecord::Abort { seq, .. } => *seq,
        }
    }
}

/// An intent as handed to the log (the log assigns the sequence).
#[derive(Debug, Clone)]
pub struct Intent {
    pub op: WalOp,
    pub file_id: Uuid,
    pub revision: u64,
    pub sidecar: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
}

/// What the writer thread is asked to append.
#[derive(Debug)]
pub enum WalItem {
    Intent(Intent),
    Commit { intent: u64, file_id: Uuid, sidecar: String, action: String, revision: u64 },
    Abort(u64),
}

struct WalSink {
    dir: PathBuf,
    file: File,
    size: u64,
    next_seq: u64,
}

impl WalSink {
    fn open_segment(dir: &Path, first_seq: u64) -> io::Result<File> {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(segment_path(dir, first_seq))?;
        crate::durable::fsync_dir(dir)?;
        Ok(f)
    }
}

impl JournalSink for WalSink {
    type Item = WalItem;

    fn encode(&mut self, item: WalItem, buf: &mut Vec<u8>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let rec = match item {
            WalItem::Intent(i) => WalRecord::Intent {
                seq,
                op: i.op,
                file_id: i.file_id,
                revision: i.revision,
                sidecar: i.sidecar,
                at: i.at,
                actor: i.actor,
                action: i.action,
            },
            WalItem::Commit { intent, file_id, sidecar, action, revision } => WalRecord::Commit {
                seq,
                intent,
                file_id: Some(file_id),
                sidecar: Some(sidecar),
                action: Some(action),
                revision: Some(revision),
            },
            WalItem::Abort(intent) => WalRecord::Abort { seq, intent },
        };
        let _ = serde_json::to_writer(&mut *buf, &rec);
        buf.push(b'\n');
        seq
    }

    fn write(&mut self, buf: &[u8], sync: bool) -> io::Result<()> {
        if self.size >= SEGMENT_BYTES {
            crate::durable::sync_data(&self.file)?;
            self.file = Self::open_segment(&self.dir, self.next_seq - count_lines(buf))?;
            self.size = 0;
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        if sync {
            crate::durable::sync_data(&self.file)?;
        }
        Ok(())
    }
}

fn count_lines(buf: &[u8]) -> u64 {
    buf.iter().filter(|b| **b == b'\n').count() as u64
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.wal"))
}

/// Segment files in order, with their first sequence number.
fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_suffix(".wal").and_then(|s| s.parse::<u64>().ok()) {
            out.push((n, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// What replay found.
#[derive(Debug, Default)]
pub struct Replay {
    /// Intents with neither commit nor abort, in order.
    pub unresolved: Vec<WalRecord>,
    /// Every record read, in order (the outbox of events not yet published).
    pub records: usize,
    /// Lines that did not parse (a torn tail is normal after a crash), as `file:line`.
    pub damaged: Vec<String>,
    pub next_seq: u64,
}

/// Reads every segment.
pub fn replay(dir: &Path) -> io::Result<Replay> {
    let mut intents: BTreeMap<u64, WalRecord> = BTreeMap::new();
    let mut out = Replay { next_seq: 1, ..Default::default() };
    for (_, path) in segments(dir)? {
        let reader = io::BufReader::new(File::open(&path)?);
        for (i, line) in reader.split(b'\n').enumerate() {
            let line = line?;
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<WalRecord>(&line) {
                Ok(rec) => {
                    out.records += 1;
                    out.next_seq = out.next_seq.max(rec.seq() + 1);
                    match rec {
                        WalRecord::Intent { seq, .. } => {
                            intents.insert(seq, rec);
                        }
                        WalRecord::Commit { intent, .. } | WalRecord::Abort { intent, .. } => {
                            intents.remove(&intent);
                        }
                    }
                }
                Err(_) => out.damaged.push(format!("{}:{}", path.display(), i + 1)),
            }
        }
    }
    out.unresolved = intents.into_values().collect();
    Ok(out)
}

/// The log of one element.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    journal: Journal<WalItem>,
    open: Mutex<BTreeSet<u64>>,
    /// The highest sequence appended (how far behind the cache and the outbox are).
    head: std::sync::atomic::AtomicU64,
}

impl Wal {
    /// Starts a fresh segment after `replay.next_seq`; older segments stay until pruned.
    pub fn open(dir: &Path, next_seq: u64) -> io::Result<Wal> {
        std::fs::create_dir_all(dir)?;
        let file = WalSink::open_segment(dir, next_seq)?;
        let size = file.metadata()?.len();
        let sink = WalSink { dir: dir.to_owned(), file, size, next_seq };
        Ok(Wal {
            dir: dir.to_owned(),
            journal: Journal::spawn(sink, "wal"),
            open: Mutex::new(BTreeSet::new()),
            head: next_seq.saturating_sub(1).into(),
        })
    }

    fn appended(&self, seq: u64) -> u64 {
        self.head.fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
        seq
    }

    /// The highest sequence appended so far (possibly not yet on disk).
    pub fn head(&self) -> u64 {
        self.head.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Appends an intent and waits until it is on disk.
    pub async fn intent(&self, intent: Intent) -> io::Result<u64> {
        let seq = self.appended(self.journal.append(WalItem::Intent(intent), true).await?);
        self.open.lock().unwrap_or_else(|e| e.into_inner()).insert(seq);
        Ok(seq)
    }

    /// Marks an intent done (durable with the next fsync). Returns the commit's sequence.
    pub async fn commit(
        &self,
        intent: u64,
        file_id: Uuid,
        sidecar: &str,
        action: &str,
        revision: u64,
    ) -> io::Result<u64> {
        let item =
            WalItem::Commit { intent, file_id, sidecar: sidecar.to_owned(), action: action.to_owned(), revision };
        let seq = self.appended(self.journal.append(item, false).await?);
        self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&intent);
        Ok(seq)
    }

    /// Marks an intent rolled back.
    pub async fn abort(&self, intent: u64) -> io::Result<()> {
        self.appended(self.journal.append(WalItem::Abort(intent), false).await?);
        self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&intent);
        Ok(())
    }

    /// Resolves a replayed intent from an earlier run.
    pub async fn resolve_replayed(&self, rec: &WalRecord, committed: bool) -> io::Result<()> {
        let WalRecord::Intent { seq, file_id, sidecar, action, revision, .. } = rec else { return Ok(()) };
        let item = if committed {
            WalItem::Commit {
                intent: *seq,
                file_id: *file_id,
                sidecar: sidecar.clone(),
                action: action.clone(),
                revision: *revision,
            }
        } else {
            WalItem::Abort(*seq)
        };
        self.appended(self.journal.append(item, false).await?);
        Ok(())
    }

    /// Makes every appended record durable.
    pub async fn sync(&self) -> io::Result<()> {
        self.journal.sync().await
    }

    pub fn has_failed(&self) -> bool {
        self.journal.has_failed()
    }

    /// Deletes segments whose every record is resolved. Returns how many were removed.
    pub fn prune(&self, resolved_before: u64) -> io::Result<usize> {
        let min_open = self.open.lock().unwrap_or_else(|e| e.into_inner()).first().copied().unwrap_or(u64::MAX);
        let limit = min_open.min(resolved_before);
        let segs = segments(&self.dir)?;
        let mut removed = 0;
        for w in segs.windows(2) {
            let (_, path) = &w[0];
            let (next_first, _) = w[1];
            // Every record of this segment is below next_first; the last (active) segment is
            // never the first of a window, so it is never removed.
            if next_first <= limit {
                std::fs::remove_file(path)?;
                removed += 1;
            }
        }
        if removed > 0 {
            crate::durable::fsync_dir(&self.dir)?;
        }
        Ok(removed)
    }
}

/// Where the first retained segment starts (`None`: no segments).
pub fn first_retained_seq(dir: &Path) -> io::Result<Option<u64>> {
    Ok(segments(dir)?.first().map(|(s, _)| *s))
}

/// The highest sequence number written so far (0 for an empty log).
pub fn last_seq(dir: &Path) -> io::Result<u64> {
    Ok(replay(dir)?.next_seq - 1)
}

/// Reads records appended after a sequence number, incrementally, across segments.
#[derive(Debug)]
pub struct WalTail {
    dir: PathBuf,
    /// Records up to this sequence have been handed out.
    after: u64,
    /// The segment being read: its first sequence, path and how far it was read.
    current: Option<(u64, PathBuf, u64)>,
}

impl WalTail {
    /// A reader that will hand out every record with `seq > after`.
    pub fn new(dir: &Path, after: u64) -> Self {
        Self { dir: dir.to_owned(), after, current: None }
    }

    /// The last sequence handed out.
    pub fn position(&self) -> u64 {
        self.after
    }

    /// Every complete record appended since the last call.
    pub fn read_new(&mut self) -> io::Result<Vec<WalRecord>> {
        use std::io::{Read as _, Seek as _};
        let mut out = Vec::new();
        loop {
            let segs = segments(&self.dir)?;
            if self.current.is_none() {
                // The segment holding `after + 1`: the last one starting at or before it.
                let pick = segs.iter().rev().find(|(first, _)| *first <= self.after + 1).or(segs.first());
                let Some((first, path)) = pick else { return Ok(out) };
                self.current = Some((*first, path.clone(), 0));
            }
            let Some((first, path, offset)) = self.current.clone() else { return Ok(out) };
            let mut f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.current = None;
                    continue;
                }
                Err(e) => return Err(e),
            };
            f.seek(std::io::SeekFrom::Start(offset))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            let complete = buf.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
            for line in buf[..complete].split(|b| *b == b'\n') {
                if line.is_empty() {
                    continue;
                }
                if let Ok(rec) = serde_json::from_slice::<WalRecord>(line)
                    && rec.seq() > self.after
                {
                    self.after = rec.seq();
                    out.push(rec);
                }
            }
            self.current = Some((first, path, offset + complete as u64));
            // Move on when a later segment existed before this one was read: nothing is
            // appended to a segment once its successor exists (rotation and restarts open
            // the next one before writing to it), so an unfinished last line here is torn
            // for good (a crash mid-append) and must not hold the reader back.
            match segs.iter().find(|(s, _)| *s > first) {
                Some((next, next_path)) => self.current = Some((*next, next_path.clone(), 0)),
                None => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(op: WalOp) -> Intent {
        Intent {
            op,
            file_id: Uuid::now_v7(),
            revision: 1,
            sidecar: "data/x.attr.json".into(),
            at: Utc::now(),
            actor: "t".into(),
            action: String::new(),
        }
    }

    #[tokio::test]
    async fn replay_finds_unresolved_intents_and_skips_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        {
            let wal = Wal::open(d.path(), 1).unwrap();
            let a = wal.intent(intent(WalOp::Create)).await.unwrap();
            let _b = wal.intent(intent(WalOp::Update)).await.unwrap();
            let c = wal.intent(intent(WalOp::Delete)).await.unwrap();
            wal.commit(a, Uuid::now_v7(), "data/x.attr.json", "create", 1).await.unwrap();
            wal.abort(c).await.unwrap();
            wal.sync().await.unwrap();
        }
        let seg = segments(d.path()).unwrap().pop().unwrap().1;
        let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(br#"{"t":"intent","seq":99,"op":"cre"#).unwrap();
        let r = replay(d.path()).unwrap();
        assert_eq!(r.unresolved.len(), 1);
        assert!(matches!(r.unresolved[0], WalRecord::Intent { op: WalOp::Update, seq: 2, .. }));
        assert_eq!(r.next_seq, 6);
        assert_eq!(r.damaged.len(), 1);
    }

    #[tokio::test]
    async fn tail_reads_appends_incrementally_across_segments() {
        let d = tempfile::tempdir().unwrap();
        let wal = Wal::open(d.path(), 1).unwrap();
        let a = wal.intent(intent(WalOp::Create)).await.unwrap();
        let mut tail = WalTail::new(d.path(), 0);
        assert_eq!(tail.read_new().unwrap().len(), 1);
        wal.commit(a, Uuid::now_v7(), "s", "create", 1).await.unwrap();
        wal.sync().await.unwrap();
        let recs = tail.read_new().unwrap();
        assert!(matches!(recs[..], [WalRecord::Commit { intent: 1, .. }]));
        assert!(tail.read_new().unwrap().is_empty());
        drop(wal);
        // A new segment (as after a restart) is followed.
        let wal = Wal::open(d.path(), 3).unwrap();
        wal.intent(intent(WalOp::Update)).await.unwrap();
        assert_eq!(tail.read_new().unwrap().iter().map(WalRecord::seq).collect::<Vec<_>>(), vec![3]);
        // A fresh tail from a checkpoint skips what is before it.
        let mut from2 = WalTail::new(d.path(), 2);
        assert_eq!(from2.read_new().unwrap().iter().map(WalRecord::seq).collect::<Vec<_>>(), vec![3]);
        assert_eq!(from2.position(), 3);
    }

    #[tokio::test]
    async fn tail_moves_past_a_torn_last_line() {
        let d = tempfile::tempdir().unwrap();
        let wal = Wal::open(d.path(), 1).unwrap();
        wal.intent(intent(WalOp::Create)).await.unwrap();
        drop(wal);
        // A crash mid-append left half a line at the end of the first segment.
        let first = segment_path(d.path(), 1);
        std::fs::OpenOptions::new().append(true).open(&first).unwrap().write_all(b"{\"t\":\"commit\",\"se").unwrap();
        let mut tail = WalTail::new(d.path(), 0);
        assert_eq!(tail.read_new().unwrap().len(), 1);
        // After the restart the log goes on in a new segment: the tail follows it.
        let wal = Wal::open(d.path(), 2).unwrap();
        wal.intent(intent(WalOp::Update)).await.unwrap();
        assert_eq!(tail.read_new().unwrap().iter().map(WalRecord::seq).collect::<Vec<_>>(), vec![2]);
    }

    #[tokio::test]
    async fn prune_keeps_the_active_segment() {
        let d = tempfile::tempdir().unwrap();
        let wal = Wal::open(d.path(), 1).unwrap();
        let a = wal.intent(intent(WalOp::Create)).await.unwrap();
        wal.commit(a, Uuid::now_v7(), "data/x.attr.json", "create", 1).await.unwrap();
        wal.sync().await.unwrap();
        drop(wal);
        let wal = Wal::open(d.path(), 3).unwrap();
        assert_eq!(segments(d.path()).unwrap().len(), 2);
        assert_eq!(wal.prune(u64::MAX).unwrap(), 1);
        assert_eq!(segments(d.path()).unwrap().len(), 1);
    }
}
