//! The element's audit journal: every state change as one JSON line in
//! `audit/journal.jsonl`, each carrying the hash of the line before it, and the SHA-256 of
//! the sidecar revision it wrote, so that a sidecar edited by hand outside ArtStore shows.
//!
//! A line is `{"seq":…,…,"prev":"<hex>","hash":"<hex>"}` where `hash` is the SHA-256 of the
//! line's bytes up to (not including) `,"hash"` followed by `}`.

use crate::journal::{Journal, JournalSink};
use crate::sidecar::{SIDECAR_SUFFIX, Sidecar};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The chain's first `prev`.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const JOURNAL_FILE: &str = "journal.jsonl";

/// One change, as handed to the journal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    /// Token subject, or `system:<worker>` for scheduled work.
    pub actor: String,
    /// e.g. `create`, `update`, `delete`, `dispose`, `legal_hold_set`, `mode_change`.
    pub action: String,
    #[serde(default)]
    pub file_id: Option<Uuid>,
    #[serde(default)]
    pub revision: Option<u64>,
    /// SHA-256 of the sidecar bytes this change wrote.
    #[serde(default)]
    pub sidecar_sha256: Option<String>,
    #[serde(default)]
    pub detail: Value,
}

/// A line as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditLine {
    pub seq: u64,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev: String,
    #[serde(default)]
    pub hash: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

struct AuditSink {
    file: File,
    seq: u64,
    last_hash: String,
}

impl JournalSink for AuditSink {
    type Item = AuditEvent;

    fn encode(&mut self, event: AuditEvent, buf: &mut Vec<u8>) -> u64 {
        self.seq += 1;
        let line = AuditLine { seq: self.seq, event, prev: std::mem::take(&mut self.last_hash), hash: String::new() };
        let mut body = serde_json::to_vec(&line).unwrap_or_default();
        // Drop `,"hash":""}` and hash what precedes it.
        let cut = body.len() - br#","hash":""}"#.len();
        body.truncate(cut);
        let mut hashed = body.clone();
        hashed.push(b'}');
        let hash = sha256_hex(&hashed);
        buf.extend_from_slice(&body);
        buf.extend_from_slice(format!(r#","hash":"{hash}"}}"#).as_bytes());
        buf.push(b'\n');
        self.last_hash = hash;
        self.seq
    }

    fn write(&mut self, buf: &[u8], sync: bool) -> io::Result<()> {
        self.file.write_all(buf)?;
        if sync {
            crate::durable::sync_data(&self.file)?;
        }
        Ok(())
    }
}

/// Parses one stored line and checks its own hash. `Err` only if it is not an audit line;
/// an altered line comes back with `Some(reason)` so the chain check can go on past it.
fn parse_line(raw: &[u8]) -> Result<(AuditLine, Option<String>), String> {
    let line: AuditLine = serde_json::from_slice(raw).map_err(|e| format!("not an audit line: {e}"))?;
    let suffix = format!(r#","hash":"{}"}}"#, line.hash);
    let Some(body) = raw.strip_suffix(suffix.as_bytes()) else {
        return Ok((line, Some("hash is not the last member".to_owned())));
    };
    let mut hashed = body.to_vec();
    hashed.push(b'}');
    let altered = (sha256_hex(&hashed) != line.hash)
        .then(|| format!("seq {}: line was altered (hash does not match its content)", line.seq));
    Ok((line, altered))
}

fn check_line(raw: &[u8]) -> Result<AuditLine, String> {
    match parse_line(raw)? {
        (line, None) => Ok(line),
        (_, Some(e)) => Err(e),
    }
}

/// The audit journal of one element.
#[derive(Debug, Clone)]
pub struct AuditLog {
    journal: Journal<AuditEvent>,
}

/// What opening the journal learned from its tail.
#[derive(Debug, Default)]
pub struct AuditTail {
    /// `(file_id, revision)` of the last lines, to finish interrupted operations once.
    pub recent: HashSet<(Uuid, u64)>,
}

impl AuditLog {
    /// Opens (or creates) the journal, cutting a torn last line left by a crash.
    pub fn open(dir: &Path) -> io::Result<(AuditLog, AuditTail)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(JOURNAL_FILE);
        let mut file = std::fs::OpenOptions::new().create(true).read(true).append(true).open(&path)?;
        let len = file.metadata()?.len();
        let window = len.min(8 * 1024 * 1024);
        file.seek(SeekFrom::Start(len - window))?;
        let mut tail = Vec::with_capacity(window as usize);
        file.read_to_end(&mut tail)?;
        // Cut a torn last line (no newline yet).
        let keep = tail.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
        if keep < tail.len() {
            let new_len = len - (tail.len() - keep) as u64;
            tracing::warn!(file = %path.display(), "cutting a torn last audit line");
            file.set_len(new_len)?;
            file.sync_all()?;
            tail.truncate(keep);
        }
        let mut recent = HashSet::new();
        let (mut seq, mut last_hash) = (0, GENESIS.to_owned());
        // The first line of a window that starts mid-file is partial: skip it.
        let skip_first = len > window;
        for (i, raw) in tail.split(|b| *b == b'\n').enumerate() {
            if raw.is_empty() || (skip_first && i == 0) {
                continue;
            }
            let line = check_line(raw).map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
            if let (Some(f), Some(r)) = (line.event.file_id, line.event.revision) {
                recent.insert((f, r));
            }
            seq = line.seq;
            last_hash = line.hash;
        }
        let sink = AuditSink { file, seq, last_hash };
        Ok((AuditLog { journal: Journal::spawn(sink, "audit") }, AuditTail { recent }))
    }

    /// Appends one event and waits until it is on disk.
    pub async fn record(&self, event: AuditEvent) -> io::Result<u64> {
        self.journal.append(event, true).await
    }

    pub fn has_failed(&self) -> bool {
        self.journal.has_failed()
    }
}

/// Bytes read per step when one file's lines are looked for in the journal.
const TRAIL_BLOCK: usize = 8 * 1024 * 1024;

/// One file's lines of the journal, as `GET /api/v1/files/{id}/audit` answers them.
#[derive(Debug, Serialize)]
pub struct FileTrail {
    pub file_id: Uuid,
    /// Newest first.
    pub entries: Vec<AuditLine>,
    /// Journal bytes read to find them.
    pub scanned_bytes: u64,
    /// Whether `entries` holds every line of the file (the limit did not cut the list).
    pub complete: bool,
}

/// The journal lines of one file, newest first, at most `limit`. The journal is read from
/// its end in large blocks and searched for the id's text, so only the lines that name it
/// are parsed; a line still being appended (no newline yet) is not read.
pub fn file_trail(dir: &Path, file_id: Uuid, limit: usize) -> io::Result<FileTrail> {
    let path = dir.join(JOURNAL_FILE);
    match File::open(&path) {
        Ok(file) => scan_trail(file, file_id, limit, TRAIL_BLOCK),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Ok(FileTrail { file_id, entries: Vec::new(), scanned_bytes: 0, complete: true })
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

fn scan_trail(mut file: File, file_id: Uuid, limit: usize, block: usize) -> io::Result<FileTrail> {
    let id = file_id.to_string();
    let finder = memchr::memmem::FinderRev::new(id.as_bytes());
    let mut trail = FileTrail { file_id, entries: Vec::new(), scanned_bytes: 0, complete: false };
    // Everything from `pos + carry.len()` on is searched; `carry` (from `pos`) is the end of
    // a line that began before `pos`, searched once the block holding its start is read.
    let mut pos = file.metadata()?.len();
    let mut carry: Vec<u8> = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    while pos > 0 {
        let start = pos.saturating_sub(block as u64);
        buf.clear();
        buf.resize((pos - start) as usize, 0);
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf)?;
        trail.scanned_bytes += pos - start;
        buf.extend_from_slice(&carry);
        // Only the lines that begin in this block are whole.
        let first = if start == 0 { 0 } else { memchr::memchr(b'\n', &buf).map_or(buf.len(), |i| i + 1) };
        let lines = &buf[first..];
        let mut end = lines.len();
        while let Some(at) = finder.rfind(&lines[..end]) {
            let line_start = memchr::memrchr(b'\n', &lines[..at]).map_or(0, |i| i + 1);
            end = line_start;
            let Some(line_len) = memchr::memchr(b'\n', &lines[at..]) else { continue };
            let raw = &lines[line_start..at + line_len];
            match serde_json::from_slice::<AuditLine>(raw) {
                Ok(line) if line.event.file_id == Some(file_id) => {
                    if trail.entries.len() == limit {
                        return Ok(trail);
                    }
                    trail.entries.push(line);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(file = %file_id, error = %e, "an audit line naming the file does not parse"),
            }
        }
        carry.clear();
        carry.extend_from_slice(&buf[..first]);
        pos = start;
    }
    trail.complete = true;
    Ok(trail)
}

/// Result of `verify-audit`.
#[derive(Debug, Default)]
pub struct AuditReport {
    pub lines: u64,
    pub sidecars: u64,
    /// Human-readable problems, each naming a line or a file.
    pub problems: Vec<String>,
}

/// Checks the chain, then every sidecar on disk against the last hash the journal recorded
/// for it (sidecars always live in the hot `data/`; only content moves to the cold tier).
pub fn verify(root: &Path, progress: &dyn Fn(u64)) -> io::Result<AuditReport> {
    let path = root.join("audit").join(JOURNAL_FILE);
    let mut report = AuditReport::default();
    let mut latest: HashMap<Uuid, (u64, String)> = HashMap::new();
    let mut prev = GENESIS.to_owned();
    let mut expect_seq = 1;
    let reader = io::BufReader::new(
        File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
    );
    for (i, raw) in reader.split(b'\n').enumerate() {
        let raw = raw?;
        if raw.is_empty() {
            continue;
        }
        report.lines += 1;
        progress(report.lines);
        let at = format!("{}:{}", path.display(), i + 1);
        match parse_line(&raw) {
            Err(e) => report.problems.push(format!("{at}: {e}")),
            Ok((line, altered)) => {
                if let Some(e) = altered {
                    report.problems.push(format!("{at}: {e}"));
                }
                if line.seq != expect_seq {
                    report.problems.push(format!(
                        "{at}: sequence {} where {} was expected (a line is missing or inserted)",
                        line.seq, expect_seq
                    ));
                }
                if line.prev != prev {
                    report
                        .problems
                        .push(format!("{at}: chain broken (prev does not match the hash of the line before)"));
                }
                expect_seq = line.seq + 1;
                prev = line.hash.clone();
                if let (Some(f), Some(r), Some(h)) =
                    (line.event.file_id, line.event.revision, line.event.sidecar_sha256)
                {
                    let e = latest.entry(f).or_insert((0, String::new()));
                    if r >= e.0 {
                        *e = (r, h);
                    }
                }
            }
        }
    }
    for entry in walkdir::WalkDir::new(root.join("data")).sort_by_file_name() {
        let entry = entry.map_err(io::Error::other)?;
        let name = entry.file_name().to_string_lossy();
        if !entry.file_type().is_file() || !name.ends_with(SIDECAR_SUFFIX) {
            continue;
        }
        report.sidecars += 1;
        let p: PathBuf = entry.path().to_owned();
        let bytes = std::fs::read(&p)?;
        let sc = match Sidecar::parse(&bytes, &p) {
            Ok(sc) => sc,
            Err(e) => {
                report.problems.push(e.to_string());
                continue;
            }
        };
        match latest.get(&sc.file_id) {
            None => report.problems.push(format!("{}: sidecar is not in the audit journal", p.display())),
            Some((rev, hash)) if *rev != sc.revision || *hash != sha256_hex(&bytes) => report.problems.push(format!(
                "{}: sidecar changed outside ArtStore (journal has revision {rev}, file has revision {})",
                p.display(),
                sc.revision
            )),
            Some(_) => {}
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(action: &str) -> AuditEvent {
        AuditEvent {
            at: Utc::now(),
            actor: "t".into(),
            action: action.into(),
            file_id: None,
            revision: None,
            sidecar_sha256: None,
            detail: Value::Null,
        }
    }

    #[tokio::test]
    async fn a_files_trail_is_found_newest_first_whatever_the_block_size() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("audit");
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        {
            let (log, _) = AuditLog::open(&dir).unwrap();
            for i in 0..12u64 {
                let (id, other) = if i % 3 == 0 { (a, b) } else { (b, a) };
                let mut e = ev(&format!("action-{i}"));
                e.file_id = Some(id);
                e.revision = Some(i);
                // The other id in the detail: found by the search, left out by the parse.
                e.detail = serde_json::json!({"see": other.to_string(), "pad": "x".repeat(i as usize * 7)});
                log.record(e).await.unwrap();
            }
        }
        // A line being appended (no newline yet) is not read.
        let path = dir.join(JOURNAL_FILE);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(
            format!(r#"{{"seq":13,"at":"2025-01-01T00:00:00Z","actor":"t","action":"torn","file_id":"{a}""#).as_bytes(),
        )
        .unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        for block in [1, 7, 64, 333, 1 << 20] {
            let t = scan_trail(File::open(&path).unwrap(), a, 100, block).unwrap();
            let actions: Vec<_> = t.entries.iter().map(|l| l.event.action.as_str()).collect();
            assert_eq!(actions, ["action-9", "action-6", "action-3", "action-0"], "block {block}");
            assert!(t.complete);
            assert_eq!(t.scanned_bytes, len);
            let t = scan_trail(File::open(&path).unwrap(), b, 3, block).unwrap();
            let revisions: Vec<_> = t.entries.iter().map(|l| l.event.revision.unwrap()).collect();
            assert_eq!(revisions, [11, 10, 8], "block {block}");
            assert!(!t.complete, "block {block}: more lines of b remain");
        }
        let none = file_trail(&d.path().join("nowhere"), a, 10).unwrap();
        assert!(none.entries.is_empty() && none.complete);
    }

    #[tokio::test]
    async fn chain_verifies_and_detects_tampering() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("data")).unwrap();
        {
            let (log, _) = AuditLog::open(&d.path().join("audit")).unwrap();
            for a in ["a", "b", "c"] {
                log.record(ev(a)).await.unwrap();
            }
        }
        // Reopen continues the chain.
        {
            let (log, _) = AuditLog::open(&d.path().join("audit")).unwrap();
            log.record(ev("d")).await.unwrap();
        }
        let r = verify(d.path(), &|_| {}).unwrap();
        assert_eq!(r.lines, 4);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let p = d.path().join("audit").join(JOURNAL_FILE);
        let text = std::fs::read_to_string(&p).unwrap().replace(r#""action":"b""#, r#""action":"x""#);
        std::fs::write(&p, text).unwrap();
        let r = verify(d.path(), &|_| {}).unwrap();
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].contains("altered"));
    }
}
