//! The audit chain on disk: append-only segment files of JSON lines in `state/audit/`, each
//! named by the sequence number of its first entry (`00000000000000000001.jsonl`), a new
//! segment every [`AuditLog::per_segment`] entries.
//!
//! The chain is not part of the replicated state or of snapshots: the state keeps only its
//! head (sequence and hash, [`AuditHead`]), every node appends the entries its applies
//! produce, and a node that installed a snapshot fetches the entries it lacks from a peer,
//! checking every link and the head the snapshot names.
//!
//! Write protocol: the apply that produced entries appends them to the last segment; a
//! sync thread of the state machine `fdatasync`s the segment when there is something new, at
//! most every 50 ms (one sync covers every append before it: group commit). The Raft log,
//! synced on a majority before a change commits, is what makes an acknowledged change durable; its
//! entry here is derived from it.
//! A new segment is created (and the directory fsynced) only after the previous one is
//! synced. Recovery on open: the last segment's torn tail
//! (a crash mid-append) is cut off at the last whole line; an empty last segment (a crash
//! right after rotation) is removed. The Raft log still holds the changes of entries lost that
//! way (a snapshot lets it be purged only once the segments are synced up to the snapshot's
//! head), and re-applying them regenerates identical entries.

use artstore_shared::audit_chain::{AuditEntry, GENESIS, hex};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The folder of the segments, inside the state folder.
pub const AUDIT_DIR: &str = "audit";
/// Entries per segment unless configured otherwise.
pub const DEFAULT_PER_SEGMENT: u64 = 32_768;

/// The last link of the chain: all a snapshot keeps of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Sequence number of the last entry (0: no entry yet).
    pub seq: u64,
    /// Its hash ([`GENESIS`] before the first entry).
    pub hash: String,
}

impl Default for AuditHead {
    fn default() -> Self {
        Self { seq: 0, hash: GENESIS.to_owned() }
    }
}

impl AuditHead {
    /// The head after `e`.
    pub fn of(e: &AuditEntry) -> Self {
        Self { seq: e.seq, hash: e.hash.clone() }
    }

    /// Whether `e` is the next link: the following sequence number, pointing at this head,
    /// with the hash its content gives.
    pub fn links(&self, e: &AuditEntry) -> bool {
        e.seq == self.seq + 1 && e.prev == self.hash && e.hash == hex(&e.digest())
    }
}

/// Why the segments could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AuditLogError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A segment holds something other than the chain it should.
    #[error("{path}: {why}")]
    Corrupt { path: PathBuf, why: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditLogError + '_ {
    move |source| AuditLogError::Io { path: path.to_owned(), source }
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.jsonl")
}

/// The segments of `dir`, oldest first, as (first sequence number, path).
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, AuditLogError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(first) = name.to_str().and_then(|n| n.strip_suffix(".jsonl")).and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((first, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// The sequence number of a stored line without parsing the whole entry (entries are
/// written with `seq` first).
fn line_seq(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("{\"seq\":")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// Reads a segment's whole lines, stopping at a torn or unreadable one; answers the entries
/// and the byte length of the readable prefix.
fn scan(path: &Path) -> Result<(Vec<AuditEntry>, u64), AuditLogError> {
    let f = File::open(path).map_err(io(path))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let (mut out, mut valid, mut line) = (Vec::new(), 0u64, String::new());
    loop {
        line.clear();
        let n = r.read_line(&mut line).map_err(io(path))?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        let Ok(e) = serde_json::from_str::<AuditEntry>(&line) else { break };
        out.push(e);
        valid += n as u64;
    }
    Ok((out, valid))
}

/// The segment files of one node, open for appending.
pub struct AuditLog {
    dir: PathBuf,
    per_segment: u64,
    /// The last segment: its first sequence number, entries in it, the open file.
    last: Option<(u64, u64, Arc<File>)>,
    head: AuditHead,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("dir", &self.dir).field("head", &self.head).finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (creating) the segments in `dir`, recovering the last one (see the module docs).
    pub fn open(dir: &Path, per_segment: u64) -> Result<AuditLog, AuditLogError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut segments = list_segments(dir)?;
        let mut log =
            AuditLog { dir: dir.to_owned(), per_segment: per_segment.max(1), last: None, head: AuditHead::default() };
        while let Some((first, path)) = segments.pop() {
            let (entries, valid) = scan(&path)?;
            let len = std::fs::metadata(&path).map_err(io(&path))?.len();
            if entries.is_empty() {
                // Created by a rotation that wrote nothing durable before a crash.
                tracing::warn!(file = %path.display(), "removing an empty audit segment left by a crash");
                std::fs::remove_file(&path).map_err(io(&path))?;
                File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
                continue;
            }
            for (i, e) in entries.iter().enumerate() {
                if e.seq != first + i as u64 {
                    let why = format!("line {} holds entry {} where {} belongs", i + 1, e.seq, first + i as u64);
                    return Err(AuditLogError::Corrupt { path, why });
                }
            }
            let f = OpenOptions::new().append(true).open(&path).map_err(io(&path))?;
            if valid < len {
                tracing::warn!(file = %path.display(), kept = valid, cut = len - valid, "cutting a torn tail off the audit chain");
                f.set_len(valid).map_err(io(&path))?;
                f.sync_all().map_err(io(&path))?;
            }
            let last = entries.last().map(AuditHead::of).unwrap_or_default();
            log.last = Some((first, entries.len() as u64, Arc::new(f)));
            log.head = last;
            break;
        }
        Ok(log)
    }

    /// The last entry written (durable once [`AuditLog::append`] returned).
    pub fn head(&self) -> &AuditHead {
        &self.head
    }

    /// The folder of the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Entries per segment.
    pub fn per_segment(&self) -> u64 {
        self.per_segment
    }

    /// Appends entries that continue the chain (not synced yet: see [`AuditLog::sync_handle`]).
    /// An entry that does not link to the head is refused and nothing after it is written.
    pub fn append(&mut self, entries: &[AuditEntry]) -> Result<(), AuditLogError> {
        let mut buf = Vec::new();
        for e in entries {
            if !self.head.links(e) {
                let path = self.dir.clone();
                let why = format!("entry {} does not follow entry {} ({})", e.seq, self.head.seq, self.head.hash);
                self.flush(&mut buf)?;
                return Err(AuditLogError::Corrupt { path, why });
            }
            let full = self.last.as_ref().is_none_or(|(_, n, _)| *n >= self.per_segment);
            if full {
                self.flush(&mut buf)?;
                self.rotate(e.seq)?;
            }
            serde_json::to_writer(&mut buf, e).map_err(|err| io(&self.dir)(err.into()))?;
            buf.push(b'\n');
            if let Some((_, n, _)) = self.last.as_mut() {
                *n += 1;
            }
            self.head = AuditHead::of(e);
        }
        self.flush(&mut buf)
    }

    /// Writes what `buf` holds to the last segment.
    fn flush(&mut self, buf: &mut Vec<u8>) -> Result<(), AuditLogError> {
        if buf.is_empty() {
            return Ok(());
        }
        let Some((first, _, f)) = self.last.as_ref() else { return Ok(()) };
        let path = self.dir.join(segment_name(*first));
        (&**f).write_all(buf).map_err(io(&path))?;
        buf.clear();
        Ok(())
    }

    /// The last segment's file and the last entry written to it: syncing that file makes
    /// every entry up to that one durable (earlier segments were synced when the next one
    /// started).
    pub fn sync_handle(&self) -> Option<(Arc<File>, u64)> {
        self.last.as_ref().map(|(_, _, f)| (f.clone(), self.head.seq))
    }

    /// Syncs the last segment now; answers the last entry now durable.
    pub fn sync(&self) -> Result<u64, AuditLogError> {
        match self.sync_handle() {
            Some((f, seq)) => {
                f.sync_data().map_err(io(&self.dir))?;
                Ok(seq)
            }
            None => Ok(self.head.seq),
        }
    }

    /// Starts a new segment whose first entry is `first`, once the last one is synced.
    fn rotate(&mut self, first: u64) -> Result<(), AuditLogError> {
        self.sync()?;
        let path = self.dir.join(segment_name(first));
        let f = OpenOptions::new().append(true).create(true).open(&path).map_err(io(&path))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        crate::test_pause("rotation");
        self.last = Some((first, 0, Arc::new(f)));
        Ok(())
    }
}

/// Up to `limit` entries after sequence number `after`, and not past `until`, read from the
/// segments in `dir` (appends may run meanwhile: nothing past `until` is read).
pub fn read_range(dir: &Path, after: u64, limit: usize, until: u64) -> Result<Vec<AuditEntry>, AuditLogError> {
    let segments = list_segments(dir)?;
    // The segment holding `after + 1`: the last one starting at or before it.
    let start = segments.partition_point(|(first, _)| *first <= after + 1).saturating_sub(1);
    let mut out = Vec::new();
    let mut line = String::new();
    for (_, path) in &segments[start.min(segments.len())..] {
        let f = File::open(path).map_err(io(path))?;
        let mut r = BufReader::with_capacity(1 << 20, f);
        loop {
            if out.len() >= limit {
                return Ok(out);
            }
            line.clear();
            let n = r.read_line(&mut line).map_err(io(path))?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            let Some(seq) = line_seq(&line) else { break };
            if seq > until {
                return Ok(out);
            }
            if seq <= after {
                continue;
            }
            let e = serde_json::from_str::<AuditEntry>(&line)
                .map_err(|err| AuditLogError::Corrupt { path: path.clone(), why: format!("entry {seq}: {err}") })?;
            out.push(e);
        }
    }
    Ok(out)
}

/// Calls `f` with every readable entry of the segments in `dir`, oldest first, and answers
/// a problem per segment that is not what its name says or stops early.
pub fn for_each(dir: &Path, mut f: impl FnMut(&AuditEntry)) -> Result<Vec<String>, AuditLogError> {
    let mut problems = Vec::new();
    let segments = list_segments(dir)?;
    let last = segments.len().saturating_sub(1);
    for (i, (first, path)) in segments.iter().enumerate() {
        let (entries, valid) = scan(path)?;
        let len = std::fs::metadata(path).map_err(io(path))?.len();
        if valid < len && i != last {
            problems.push(format!("{}: unreadable after byte {valid}", path.display()));
        }
        if entries.first().is_some_and(|e| e.seq != *first) {
            problems.push(format!("{}: starts with entry {}", path.display(), entries[0].seq));
        }
        entries.iter().for_each(&mut f);
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut head = AuditHead::default();
        (1..=n)
            .map(|seq| {
                let mut e = AuditEntry {
                    seq,
                    at: chrono::DateTime::from_timestamp(1_700_000_000 + seq as i64, 0).unwrap_or_default(),
                    actor: "admin".into(),
                    from: None,
                    action: "policy.update".into(),
                    target: "p".into(),
                    detail: json!({"n": seq}),
                    prev: head.hash.clone(),
                    hash: String::new(),
                    sig: String::new(),
                };
                e.hash = hex(&e.digest());
                head = AuditHead::of(&e);
                e
            })
            .collect()
    }

    #[test]
    fn segments_rotate_and_read_back_by_range() {
        let dir = tempfile::tempdir().unwrap();
        let c = chain(25);
        let mut log = AuditLog::open(dir.path(), 10).unwrap();
        log.append(&c[..7]).unwrap();
        log.append(&c[7..25]).unwrap();
        let names: Vec<u64> = list_segments(dir.path()).unwrap().into_iter().map(|(f, _)| f).collect();
        assert_eq!(names, vec![1, 11, 21]);
        assert_eq!(read_range(dir.path(), 0, 100, 25).unwrap(), c);
        assert_eq!(read_range(dir.path(), 9, 3, 25).unwrap(), c[9..12].to_vec());
        assert_eq!(read_range(dir.path(), 20, 100, 22).unwrap(), c[20..22].to_vec(), "nothing past until");
        assert!(read_range(dir.path(), 25, 10, 25).unwrap().is_empty());

        // Reopened, it continues where it was; a link that does not fit is refused.
        drop(log);
        let mut log = AuditLog::open(dir.path(), 10).unwrap();
        assert_eq!(log.head(), &AuditHead::of(&c[24]));
        let mut more = chain(27);
        assert!(log.append(&more[26..]).is_err(), "entry 27 does not follow 25");
        more[25].detail = json!("changed");
        assert!(log.append(&more[25..26]).is_err(), "a changed entry no longer hashes to its hash");
        assert_eq!(log.head().seq, 25);
    }

    #[test]
    fn a_torn_tail_and_an_empty_rotated_segment_are_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let c = chain(12);
        let mut log = AuditLog::open(dir.path(), 10).unwrap();
        log.append(&c[..10]).unwrap();
        drop(log);
        // A crash mid-append: half of entry 11 in the next segment... after a rotation that
        // left an empty file first.
        let seg2 = dir.path().join(segment_name(11));
        std::fs::write(&seg2, "").unwrap();
        let log = AuditLog::open(dir.path(), 10).unwrap();
        assert_eq!(log.head().seq, 10);
        assert!(!std::fs::exists(&seg2).unwrap(), "the empty segment is removed");
        drop(log);
        let mut line = serde_json::to_vec(&c[10]).unwrap();
        line.truncate(line.len() / 2);
        std::fs::write(&seg2, [serde_json::to_vec(&c[10]).unwrap(), b"\n".to_vec(), line].concat()).unwrap();
        let mut log = AuditLog::open(dir.path(), 10).unwrap();
        assert_eq!(log.head().seq, 11, "the whole line stays, the torn one goes");
        log.append(&c[11..12]).unwrap();
        assert_eq!(read_range(dir.path(), 0, 100, 100).unwrap(), c);
        let mut seen = 0;
        assert!(for_each(dir.path(), |_| seen += 1).unwrap().is_empty());
        assert_eq!(seen, 12);
    }

    #[test]
    fn a_segment_out_of_order_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let c = chain(3);
        let body: Vec<u8> =
            c.iter().rev().flat_map(|e| [serde_json::to_vec(e).unwrap(), b"\n".to_vec()].concat()).collect();
        std::fs::write(dir.path().join(segment_name(1)), body).unwrap();
        let e = AuditLog::open(dir.path(), 10).unwrap_err();
        assert!(e.to_string().contains("00000000000000000001.jsonl"), "{e}");
    }
}
