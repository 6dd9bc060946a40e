//! The background scrub: every `scrub_interval_secs` the element re-reads every content file
//! (hot and cold) at no more than `scrub_bytes_per_sec` and compares it with its sidecar's
//! digest and size, so silent corruption (bit rot, a bad sector, a file changed behind the
//! element's back) is found while a backup still holds a good copy.
//!
//! Damaged files are logged (error, with the path and the reason), kept in the scrub's
//! status (`/health/ready`: the `scrub` worker degraded, naming them; `/metrics`: the count;
//! an alert) until a later check finds them whole again or their document is gone. A pass
//! survives restarts: `scrub.json` in the element's root records when the last pass finished
//! and how far the current one got.

use crate::durable;
use crate::store::Store;
use crate::verify::{self, Fixity};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The file a scrub's progress is saved in, under the element's root.
pub const FILE: &str = "scrub.json";
/// Damaged files `/health/ready` lists by name (all are counted).
pub const LISTED_PROBLEMS: usize = 20;
/// Progress is saved at least this often during a pass.
const SAVE_EVERY: Duration = Duration::from_secs(30);

/// How the scrub runs.
#[derive(Debug, Clone, Copy)]
pub struct ScrubSettings {
    /// Seconds from the start of one pass to the start of the next; 0 turns the scrub off.
    pub interval_secs: u64,
    /// Read rate limit; 0 is unlimited.
    pub bytes_per_sec: u64,
}

/// What `scrub.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Saved {
    /// When the last complete pass started and finished.
    last_started_at: Option<DateTime<Utc>>,
    last_finished_at: Option<DateTime<Utc>>,
    /// The pass under way: when it started and the last sidecar (relative path) it checked.
    current_started_at: Option<DateTime<Utc>>,
    current_after: Option<String>,
    /// Damaged files known when it was saved.
    #[serde(default)]
    problems: Vec<Problem>,
}

/// One damaged file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The sidecar of the document.
    pub sidecar: String,
    /// The content file (or the sidecar, when that is what cannot be read).
    pub path: String,
    pub reason: String,
    pub found_at: DateTime<Utc>,
}

/// The latest finished pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Content files read whole (damaged ones included).
    pub checked: u64,
    pub bytes: u64,
    pub tombstones: u64,
    /// Damaged files it found.
    pub problems: u64,
}

/// The scrub's record since start, for `/health/ready` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScrubRuns {
    pub enabled: bool,
    pub interval_secs: u64,
    pub bytes_per_sec: u64,
    /// A pass is under way.
    pub running: bool,
    /// Passes finished since start.
    pub passes: u64,
    /// The pass under way: its start and how far it got.
    pub current_started_at: Option<DateTime<Utc>>,
    pub current_done: u64,
    pub current_total: u64,
    pub last_pass: Option<PassReport>,
    /// When the next pass starts (when none is under way).
    pub next_pass_at: Option<DateTime<Utc>>,
    /// Content files and bytes read since start.
    pub checked_total: u64,
    pub bytes_total: u64,
    /// Damaged files known now.
    pub problems_count: u64,
    /// The first of them by path (at most [`LISTED_PROBLEMS`]).
    pub problems: Vec<Problem>,
    /// A pass that could not list the files, and why.
    pub last_error: Option<String>,
}

/// The shared record the worker keeps and health and metrics read.
#[derive(Debug, Default)]
pub struct ScrubStatus {
    runs: Mutex<ScrubRuns>,
    /// Damaged files by path.
    problems: Mutex<BTreeMap<String, Problem>>,
}

impl ScrubStatus {
    fn with<T>(&self, f: impl FnOnce(&mut ScrubRuns) -> T) -> T {
        f(&mut self.runs.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn problems(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Problem>> {
        self.problems.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The record as it is now.
    pub fn snapshot(&self) -> ScrubRuns {
        let problems = self.problems();
        let mut r = self.with(|r| r.clone());
        r.problems_count = problems.len() as u64;
        r.problems = problems.values().take(LISTED_PROBLEMS).cloned().collect();
        r
    }
}

/// Reads at no more than a rate: sleeps when ahead of it.
struct Throttle {
    rate: u64,
    start: Instant,
    bytes: std::cell::Cell<u64>,
}

impl Throttle {
    fn new(rate: u64) -> Self {
        Throttle { rate, start: Instant::now(), bytes: std::cell::Cell::new(0) }
    }

    fn read(&self, n: u64) {
        self.bytes.set(self.bytes.get() + n);
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.bytes.get() as f64 / self.rate as f64);
        let spent = self.start.elapsed();
        if due > spent {
            std::thread::sleep(due - spent);
        }
    }
}

fn load(root: &Path) -> Saved {
    let path = root.join(FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e, "scrub progress unreadable; starting a new pass");
            Saved::default()
        }),
        Err(_) => Saved::default(),
    }
}

fn save(root: &Path, saved: &Saved) {
    let bytes = serde_json::to_vec_pretty(saved).unwrap_or_default();
    if let Err(e) = durable::write_atomic(&root.join("tmp"), &root.join(FILE), &bytes) {
        tracing::warn!(error = %e, "scrub progress not saved");
    }
}

/// Puts the settings and what `scrub.json` recorded (damage found, the last pass) into the
/// element's scrub status. Called before the element serves, so its first `/scrub` answer
/// after a restart already names the damage known before it.
pub async fn restore(store: &Arc<Store>, settings: ScrubSettings) {
    let status = store.scrub().clone();
    status.with(|r| {
        r.enabled = settings.interval_secs > 0;
        r.interval_secs = settings.interval_secs;
        r.bytes_per_sec = settings.bytes_per_sec;
    });
    if settings.interval_secs == 0 {
        return;
    }
    let root = store.root().to_owned();
    let saved = tokio::task::spawn_blocking(move || load(&root)).await.unwrap_or_default();
    status.problems().extend(saved.problems.into_iter().map(|p| (p.sidecar.clone(), p)));
    if saved.last_finished_at.is_some() {
        status.with(|r| {
            r.last_pass = Some(PassReport {
                started_at: saved.last_started_at,
                finished_at: saved.last_finished_at,
                ..Default::default()
            })
        });
    }
}

/// The scrub loop, after [`restore`]: a pass every interval, resuming one under way.
pub async fn run(store: Arc<Store>, settings: ScrubSettings) {
    let status = store.scrub().clone();
    if settings.interval_secs == 0 {
        tracing::info!("background scrub is off (scrub_interval_secs = 0)");
        return;
    }
    let root = store.root().to_owned();
    let interval = chrono::Duration::seconds(settings.interval_secs.min(i64::MAX as u64 / 2000) as i64);
    loop {
        let saved = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || load(&root)).await.unwrap_or_default()
        };
        // A pass under way resumes; otherwise the next starts an interval after the last.
        if saved.current_started_at.is_none()
            && let Some(start) = saved.last_started_at
        {
            let next = start + interval;
            status.with(|r| r.next_pass_at = Some(next));
            let wait = (next - Utc::now()).to_std().unwrap_or_default();
            if !wait.is_zero() {
                tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
                continue;
            }
        }
        if let Err(e) = pass(&store, &status, saved, settings).await {
            tracing::warn!(error = %e, "scrub pass failed; trying again in a minute");
            status.with(|r| {
                r.running = false;
                r.last_error = Some(e.to_string());
            });
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }
}

/// One pass (or the rest of one), in sidecar path order.
async fn pass(store: &Arc<Store>, status: &Arc<ScrubStatus>, mut saved: Saved, s: ScrubSettings) -> anyhow::Result<()> {
    let root = store.root().to_owned();
    let cold = store.cold_root().to_owned();
    let started = *saved.current_started_at.get_or_insert_with(Utc::now);
    let after = saved.current_after.clone();
    let paths = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || verify::sidecar_paths(&root)).await??
    };
    let rel = |p: &Path| p.strip_prefix(&root).unwrap_or(p).to_string_lossy().into_owned();
    let todo: Vec<PathBuf> = paths.into_iter().filter(|p| after.as_ref().is_none_or(|a| rel(p) > *a)).collect();
    status.with(|r| {
        r.running = true;
        r.next_pass_at = None;
        r.current_started_at = Some(started);
        r.current_done = 0;
        r.current_total = todo.len() as u64;
        r.last_error = None;
    });
    if after.is_some() {
        tracing::info!(left = todo.len(), started = %started, "scrub pass resumed");
    }
    let mut report = PassReport { started_at: Some(started), ..Default::default() };
    let mut seen = std::collections::HashSet::new();
    let throttle = Arc::new(Mutex::new(Throttle::new(s.bytes_per_sec)));
    let mut last_save = Instant::now();
    for sidecar in todo {
        let (root2, cold2, path2, t) = (root.clone(), cold.clone(), sidecar.clone(), throttle.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            let t = t.lock().unwrap_or_else(|e| e.into_inner());
            verify::check(&root2, &cold2, &path2, &|n| t.read(n))
        })
        .await?;
        let outcome = match outcome {
            // A document disposed of or deleted while it was read: not damage.
            Fixity::Missing(_) | Fixity::Mismatched(..) | Fixity::Unreadable(_) if changed_meanwhile(&sidecar) => {
                Fixity::Tombstone
            }
            o => o,
        };
        let (read_whole, bytes) = match &outcome {
            Fixity::Good(n) | Fixity::Mismatched(_, _, n) => (true, *n),
            _ => (false, 0),
        };
        let problem = match outcome {
            Fixity::Good(_) => None,
            Fixity::Tombstone => {
                report.tombstones += 1;
                None
            }
            Fixity::Mismatched(p, why, _) => Some((p.display().to_string(), why)),
            Fixity::Missing(p) => Some((p.display().to_string(), "the content file is missing".to_owned())),
            Fixity::Unreadable(why) => Some((sidecar.display().to_string(), why)),
        };
        report.checked += u64::from(read_whole);
        report.bytes += bytes;
        let key = sidecar.display().to_string();
        seen.insert(key.clone());
        {
            let mut known = status.problems();
            match problem {
                Some((path, reason)) => {
                    report.problems += 1;
                    if !known.contains_key(&key) {
                        tracing::error!(file = %path, reason = %reason, "scrub: damaged file (restore it from a backup)");
                    }
                    known.insert(key.clone(), Problem { sidecar: key, path, reason, found_at: Utc::now() });
                }
                None => {
                    if known.remove(&key).is_some() {
                        tracing::info!(sidecar = %sidecar.display(), "scrub: a file found damaged earlier is whole now");
                    }
                }
            }
        }
        status.with(|r| {
            r.current_done += 1;
            r.checked_total += u64::from(read_whole);
            r.bytes_total += bytes;
        });
        saved.current_after = Some(rel(&sidecar));
        if last_save.elapsed() >= SAVE_EVERY {
            saved.problems = status.problems().values().cloned().collect();
            let (root, saved) = (root.clone(), saved.clone());
            tokio::task::spawn_blocking(move || save(&root, &saved)).await?;
            last_save = Instant::now();
        }
    }
    let finished = Utc::now();
    // Damage known from an earlier pass whose document is gone now.
    if after.is_none() {
        status.problems().retain(|k, _| seen.contains(k));
    }
    report.finished_at = Some(finished);
    tracing::info!(
        checked = report.checked,
        bytes = report.bytes,
        problems = report.problems,
        seconds = (finished - started).num_seconds(),
        "scrub pass finished"
    );
    let done = Saved {
        last_started_at: Some(started),
        last_finished_at: Some(finished),
        problems: status.problems().values().cloned().collect(),
        ..Default::default()
    };
    {
        let root = root.clone();
        tokio::task::spawn_blocking(move || save(&root, &done)).await?;
    }
    status.with(|r| {
        r.running = false;
        r.passes += 1;
        r.current_started_at = None;
        r.last_pass = Some(report);
    });
    Ok(())
}

/// Whether a sidecar changed into a tombstone (or went away) while its content was read.
fn changed_meanwhile(sidecar: &Path) -> bool {
    match crate::sidecar::Sidecar::read(sidecar) {
        Ok(sc) => sc.content.location == crate::sidecar::Tier::None,
        Err(_) => matches!(std::fs::metadata(sidecar), Err(e) if e.kind() == std::io::ErrorKind::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_holds_reads_to_the_rate() {
        let t = Throttle::new(10 * 1024 * 1024);
        let start = Instant::now();
        for _ in 0..16 {
            t.read(64 * 1024);
        }
        // 1 MiB at 10 MiB/s takes at least 100 ms; unlimited takes no time at all.
        assert!(start.elapsed() >= Duration::from_millis(99), "{:?}", start.elapsed());
        let free = Throttle::new(0);
        let start = Instant::now();
        free.read(1 << 40);
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
