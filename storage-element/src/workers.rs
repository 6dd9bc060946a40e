//! What the element's background jobs last did: the disposition schedule's counts and the
//! record of its runs, kept by the store and shown by `status` on `/health/ready`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Mutex;

/// Review-due documents a disposition run counts at most (the count is a listing).
pub const REVIEW_COUNT_LIMIT: usize = 1000;

/// Counts of one disposition run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DispositionReport {
    /// Documents whose term ended with disposition `dispose`, removed by this run.
    pub disposed: u64,
    pub restores_expired: u64,
    /// Documents the run could not dispose or expire (each is logged).
    pub failed: u64,
    /// Documents whose term ended with disposition `review`, waiting for a person
    /// (counted up to [`REVIEW_COUNT_LIMIT`]).
    pub review_due: u64,
    /// More documents wait for review than were counted.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub review_due_more: bool,
}

/// The record of the disposition runs since start (scheduled and requested alike).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DispositionRuns {
    /// Runs under way now.
    pub running: u32,
    /// Runs finished since start, failed ones included.
    pub runs: u64,
    /// When the latest run started.
    pub last_run_at: Option<DateTime<Utc>>,
    /// When the latest finished run ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// The counts of the latest finished run (`None` when it failed).
    pub last_report: Option<DispositionReport>,
    /// Whether the latest finished run failed.
    pub last_failed: bool,
    /// Runs that failed since start.
    pub errors: u64,
    /// Documents disposed of by every run since start.
    pub disposed_total: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

/// Where the store records its disposition runs; read at each health request.
#[derive(Debug, Default)]
pub struct DispositionStatus {
    runs: Mutex<DispositionRuns>,
}

impl DispositionStatus {
    fn with<T>(&self, f: impl FnOnce(&mut DispositionRuns) -> T) -> T {
        f(&mut self.runs.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A run started at `at`.
    pub fn started(&self, at: DateTime<Utc>) {
        self.with(|r| {
            r.running += 1;
            r.last_run_at = Some(at);
        });
    }

    /// A run ended at `at` with `outcome` (the error's text when it failed).
    pub fn finished(&self, at: DateTime<Utc>, outcome: Result<&DispositionReport, String>) {
        self.with(|r| {
            r.running = r.running.saturating_sub(1);
            r.runs += 1;
            r.finished_at = Some(at);
            match outcome {
                Ok(report) => {
                    r.disposed_total += report.disposed;
                    r.last_report = Some(report.clone());
                    r.last_failed = false;
                }
                Err(e) => {
                    r.last_report = None;
                    r.errors += 1;
                    r.last_failed = true;
                    r.last_error = Some(e);
                    r.last_error_at = Some(at);
                }
            }
        });
    }

    /// The record as it is now.
    pub fn snapshot(&self) -> DispositionRuns {
        self.with(|r| r.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_shows_its_error_and_no_counts() {
        let s = DispositionStatus::default();
        let t0 = Utc::now();
        s.started(t0);
        assert_eq!(s.snapshot().running, 1);
        let good = DispositionReport { disposed: 2, review_due: 1, ..Default::default() };
        s.finished(t0, Ok(&good));
        assert_eq!(s.snapshot().last_report, Some(good));
        let t1 = t0 + chrono::Duration::hours(1);
        s.started(t1);
        s.finished(t1, Err("cache unavailable".to_owned()));
        let r = s.snapshot();
        assert_eq!((r.running, r.runs, r.errors), (0, 2, 1));
        assert_eq!(r.last_run_at, Some(t1));
        assert!(r.last_failed);
        assert_eq!(r.last_report, None);
        assert_eq!(r.last_error.as_deref(), Some("cache unavailable"));
    }
}
