//! Filling a cache from the files alone: a sorted walk of the day folders, sidecars parsed
//! in parallel in batches, each batch written with its resume point, so an interrupted
//! rebuild goes on from where it stopped instead of starting over.

use crate::cache::{CachedSidecar, SidecarCache};
use crate::sidecar::{SIDECAR_SUFFIX, Sidecar, SidecarError};
use rayon::prelude::*;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sidecars per batch (parsed in parallel, written in one statement).
pub const BATCH: usize = 4096;

/// One batch of a walk.
#[derive(Debug, Default)]
pub struct Batch {
    pub entries: Vec<CachedSidecar>,
    /// The last sidecar path (relative to the root) this batch covers: the resume point.
    pub last_path: String,
    /// Content bytes of the documents in the batch that are not tombstones.
    pub bytes: u64,
    /// Day folders finished with this batch.
    pub days_done: u64,
    /// Sidecars that could not be read, each naming the file and the reason.
    pub unreadable: Vec<String>,
}

/// Every `data/YYYY/MM/DD` folder, relative to `root`, in order.
pub fn day_dirs(root: &Path) -> std::io::Result<Vec<String>> {
    fn sorted_subdirs(p: &Path) -> std::io::Result<Vec<String>> {
        let mut v = vec![];
        match std::fs::read_dir(p) {
            Ok(rd) => {
                for e in rd {
                    let e = e?;
                    if e.file_type()?.is_dir() {
                        v.push(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        v.sort();
        Ok(v)
    }
    let data = root.join("data");
    let mut out = vec![];
    for y in sorted_subdirs(&data)? {
        for m in sorted_subdirs(&data.join(&y))? {
            for d in sorted_subdirs(&data.join(&y).join(&m))? {
                out.push(format!("data/{y}/{m}/{d}"));
            }
        }
    }
    Ok(out)
}

fn parse_one(root: &Path, rel: &str) -> Result<CachedSidecar, String> {
    let shown = Path::new(rel);
    let bytes = std::fs::read(root.join(rel))
        .map_err(|source| SidecarError::Io { path: shown.to_owned(), source }.to_string())?;
    let sc = Sidecar::parse(&bytes, shown).map_err(|e| e.to_string())?;
    Ok(CachedSidecar { sidecar: Arc::new(sc), path: rel.to_owned() })
}

/// Reading many small files from a cold disk is bound by how many reads are in flight, not
/// by cores: the walk reads on a pool wider than the machine.
fn io_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        rayon::ThreadPoolBuilder::new()
            .num_threads((n * 8).clamp(8, 64))
            .thread_name(|i| format!("sidecar-read-{i}"))
            .build()
            .unwrap_or_else(|_| rayon::ThreadPoolBuilder::new().build().expect("a thread pool"))
    })
}

fn parse_batch(root: &Path, paths: Vec<String>, days_done: u64) -> Batch {
    let results: Vec<Result<CachedSidecar, String>> =
        io_pool().install(|| paths.par_iter().map(|p| parse_one(root, p)).collect());
    let mut b = Batch { last_path: paths.last().cloned().unwrap_or_default(), days_done, ..Default::default() };
    for r in results {
        match r {
            Ok(e) => {
                if !e.sidecar.state.is_tombstone() {
                    b.bytes += e.sidecar.size;
                }
                b.entries.push(e);
            }
            Err(e) => b.unreadable.push(e),
        }
    }
    b
}

/// Walks every sidecar after `resume_after` in (day, name) order and hands out batches.
/// `emit` returns `false` to stop early.
pub fn walk(root: &Path, resume_after: Option<&str>, mut emit: impl FnMut(Batch) -> bool) -> std::io::Result<()> {
    let resume = resume_after.filter(|r| !r.is_empty());
    let mut pending: Vec<String> = Vec::with_capacity(BATCH);
    // Days listed so far, and how many of them batches have reported as done.
    let (mut listed, mut reported) = (0u64, 0u64);
    for day in day_dirs(root)? {
        listed += 1;
        // Whole days before the resume point are skipped without listing them.
        if let Some(r) = resume
            && r.get(..day.len()).is_some_and(|rd| day.as_str() < rd)
        {
            continue;
        }
        let mut names = vec![];
        for e in std::fs::read_dir(root.join(&day))? {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(SIDECAR_SUFFIX) {
                names.push(format!("{day}/{name}"));
            }
        }
        names.sort_unstable();
        if let Some(r) = resume {
            names.retain(|n| n.as_str() > r);
        }
        pending.extend(names);
        while pending.len() >= BATCH {
            let rest = pending.split_off(BATCH);
            let full = std::mem::replace(&mut pending, rest);
            // What is left pending belongs to the current day, which is then not done yet.
            let done = if pending.is_empty() { listed } else { listed - 1 };
            let days = done.saturating_sub(reported);
            reported += days;
            if !emit(parse_batch(root, full, days)) {
                return Ok(());
            }
        }
    }
    if !pending.is_empty() {
        emit(parse_batch(root, pending, listed - reported));
    }
    Ok(())
}

/// Reads every sidecar (for the embedded cache at start-up).
pub fn scan_all(root: &Path) -> std::io::Result<(Vec<CachedSidecar>, Vec<String>)> {
    let (mut all, mut bad) = (vec![], vec![]);
    walk(root, None, |b| {
        all.extend(b.entries);
        bad.extend(b.unreadable);
        true
    })?;
    Ok((all, bad))
}

/// What a rebuild did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RebuildReport {
    pub documents: u64,
    pub bytes: u64,
    pub days_total: u64,
    pub days_done: u64,
    /// Sidecars that could not be read (reported and skipped), naming each file.
    pub unreadable: Vec<String>,
    /// The sidecar path an interrupted rebuild resumed after.
    pub resumed_after: Option<String>,
    pub elapsed: Duration,
}

/// Why a rebuild stopped.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("reading the files: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
}

/// Fills `cache` from the files under `root`, resuming an interrupted rebuild.
pub async fn rebuild(
    root: &Path,
    cache: &dyn SidecarCache,
    progress: &(dyn Fn(&RebuildReport) + Send + Sync),
) -> Result<RebuildReport, RebuildError> {
    let started = Instant::now();
    let mut report = RebuildReport::default();
    let resume = match cache.rebuild_progress().await? {
        Some((_, last)) => {
            tracing::info!(after = %last, "resuming an interrupted rebuild");
            report.resumed_after = Some(last.clone()).filter(|l| !l.is_empty());
            Some(last)
        }
        None => {
            let seq = crate::wal::last_seq(&root.join("wal"))?;
            cache.begin_rebuild(seq).await?;
            None
        }
    };
    report.days_total = day_dirs(root)?.len() as u64;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(2);
    let root2 = root.to_owned();
    let producer =
        tokio::task::spawn_blocking(move || walk(&root2, resume.as_deref(), |b| tx.blocking_send(b).is_ok()));
    while let Some(b) = rx.recv().await {
        let n = b.entries.len() as u64;
        report.bytes += b.bytes;
        report.days_done += b.days_done;
        report.unreadable.extend(b.unreadable);
        cache.rebuild_batch(b.entries, &b.last_path).await?;
        report.documents += n;
        report.elapsed = started.elapsed();
        progress(&report);
    }
    producer.await.map_err(|e| std::io::Error::other(e.to_string()))??;
    cache.finish_rebuild().await?;
    report.days_done = report.days_total;
    report.elapsed = started.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_day(root: &Path, day: &str, n: usize) {
        let dir = root.join(day);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            std::fs::write(dir.join(format!("f{i:05}.attr.json")), b"{}").unwrap();
        }
    }

    #[test]
    fn walk_is_ordered_batched_and_resumable() {
        let d = tempfile::tempdir().unwrap();
        write_day(d.path(), "data/2024/01/02", 3);
        write_day(d.path(), "data/2024/01/01", BATCH + 10);
        write_day(d.path(), "data/2023/12/31", 1);
        let mut seen = vec![];
        let mut batches = 0;
        walk(d.path(), None, |b| {
            batches += 1;
            // Every file here is unreadable ({} is not a sidecar): reported, never fatal.
            seen.extend(b.unreadable.iter().map(|u| u.split(':').next().unwrap().to_owned()));
            true
        })
        .unwrap();
        assert_eq!(batches, 2);
        assert_eq!(seen.len(), BATCH + 14);
        assert!(seen[0].starts_with("data/2023/12/31/"));
        assert!(seen.last().unwrap().starts_with("data/2024/01/02/"));
        let mut after = vec![];
        walk(d.path(), Some("data/2024/01/01/f00005.attr.json"), |b| {
            after.extend(b.unreadable.iter().map(|u| u.split(':').next().unwrap().to_owned()));
            true
        })
        .unwrap();
        assert_eq!(after.len(), BATCH + 10 - 6 + 3);
        assert_eq!(after[0], "data/2024/01/01/f00006.attr.json");
    }
}

/// One difference between the cache and the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// A sidecar on disk the cache does not have.
    Missing { path: String },
    /// A cache entry with no sidecar on disk.
    Extra { file_id: uuid::Uuid },
    /// The cache holds another revision than the file.
    Stale { path: String, cached: u64, on_disk: u64 },
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drift::Missing { path } => write!(f, "MISSING {path}: not in the cache"),
            Drift::Extra { file_id } => write!(f, "EXTRA   {file_id}: in the cache, no sidecar on disk"),
            Drift::Stale { path, cached, on_disk } => {
                write!(f, "STALE   {path}: cache has revision {cached}, file has {on_disk}")
            }
        }
    }
}

/// What `check-cache` found (and repaired).
#[derive(Debug, Default)]
pub struct CheckReport {
    pub sidecars: u64,
    pub cached: u64,
    pub drift: Vec<Drift>,
    pub unreadable: Vec<String>,
    pub repaired: bool,
}

/// Compares the cache with the files; with `repair`, makes the cache match them.
/// `progress` is told how many sidecars have been read so far.
pub async fn check(
    root: &Path,
    cache: &dyn SidecarCache,
    repair: bool,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<CheckReport, RebuildError> {
    let root2 = root.to_owned();
    // Only ids, revisions and paths are held: memory stays small for large stores.
    let (on_disk, unreadable) = tokio::task::spawn_blocking(move || {
        let mut m: std::collections::HashMap<uuid::Uuid, (u64, String)> = std::collections::HashMap::new();
        let mut bad = vec![];
        let mut read = 0u64;
        walk(&root2, None, |b| {
            read += (b.entries.len() + b.unreadable.len()) as u64;
            for e in b.entries {
                m.insert(e.sidecar.file_id, (e.sidecar.revision, e.path.clone()));
            }
            bad.extend(b.unreadable);
            progress(read);
            true
        })
        .map(|()| (m, bad))
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    let cached: std::collections::HashMap<uuid::Uuid, u64> = cache.revisions().await?.into_iter().collect();
    let mut report =
        CheckReport { sidecars: on_disk.len() as u64, cached: cached.len() as u64, unreadable, ..Default::default() };
    for (id, (rev, path)) in &on_disk {
        match cached.get(id) {
            None => report.drift.push(Drift::Missing { path: path.clone() }),
            Some(c) if c != rev => report.drift.push(Drift::Stale { path: path.clone(), cached: *c, on_disk: *rev }),
            Some(_) => {}
        }
    }
    for id in cached.keys() {
        if !on_disk.contains_key(id) {
            report.drift.push(Drift::Extra { file_id: *id });
        }
    }
    report.drift.sort_by_key(ToString::to_string);
    if repair && !report.drift.is_empty() {
        let mut fix = vec![];
        for d in &report.drift {
            match d {
                Drift::Missing { path } | Drift::Stale { path, .. } => {
                    let sc = Sidecar::read(&root.join(path)).map_err(|e| std::io::Error::other(e.to_string()))?;
                    fix.push(CachedSidecar { sidecar: Arc::new(sc), path: path.clone() });
                }
                Drift::Extra { file_id } => cache.remove(*file_id).await?,
            }
        }
        // A stale entry may carry a higher revision than the file (a restored backup):
        // the files win, so those are removed first and written again.
        for e in &fix {
            cache.remove(e.sidecar.file_id).await?;
        }
        cache.upsert_many(fix).await?;
        report.repaired = true;
    }
    Ok(report)
}
