//! The element's own series on `/metrics`, refreshed every two seconds from what it
//! reports on `/health/ready`: space, documents, mode, how far the cache and the outbox
//! trail the WAL, the disposition schedule, and whether a storage failure stopped writes
//! (which also turns `/health/ready` to not ready, naming it).

use crate::store::Store;
use artstore_shared::health::Counter;
use artstore_shared::health::Health;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Runs until aborted.
pub async fn run(store: Arc<Store>, health: Health) {
    let m = health.metrics();
    let free = m.gauge("element_free_bytes", "Space left for content on the element's file system");
    let capacity = m.gauge("element_capacity_bytes", "Size of the element's file system");
    let documents = m.gauge("element_documents", "Documents (current versions and tombstones) on the element");
    let mode = m.gauge_by("element_mode", "1 for the element's current mode (edit, rw, ro, ar)");
    let wal_head = m.gauge("element_wal_head_sequence", "Sequence of the last WAL record");
    let cache_lag = m.gauge("element_cache_lag_records", "WAL records the PostgreSQL cache has not applied yet");
    let outbox_lag = m.gauge("element_outbox_lag_records", "WAL records not yet published as events");
    let runs = m.counter("element_disposition_runs", "Disposition runs finished");
    let run_errors = m.counter("element_disposition_errors", "Disposition runs that failed");
    let disposed = m.counter("element_disposed_documents", "Documents disposed of at the end of their term");
    let failed = m.gauge("element_disposition_failed_documents", "Documents the last run could not dispose of");
    let review = m.gauge("element_review_due_documents", "Documents whose term ended with disposition review");
    let last_run = m.gauge("element_disposition_last_run_timestamp_seconds", "End of the last disposition run");
    let failed_writes =
        m.gauge("element_writes_refused", "1 after a storage failure: the element refuses writes until restarted");
    let clock_gap = m.gauge_f64(
        "element_retention_clock_gap_seconds",
        "Wall clock minus the retention clock: above zero after a forward jump of the wall clock (terms end late until it is caught up or confirmed)",
    );
    let clock_skew = m.gauge_f64(
        "element_clock_reference_skew_seconds",
        "Wall clock minus the time reference (the Redis server's clock, read with each heartbeat)",
    );
    let scrub_passes = m.counter("element_scrub_passes", "Background scrub passes finished");
    let scrub_files = m.counter("element_scrub_checked_files", "Content files the scrub read and checked");
    let scrub_bytes = m.counter("element_scrub_checked_bytes", "Bytes the scrub read and checked");
    let scrub_problems = m.gauge(
        "element_scrub_problems",
        "Damaged files the scrub found (digest or size mismatch, missing, unreadable)",
    );
    let scrub_progress =
        m.gauge_f64("element_scrub_progress_ratio", "How far the scrub pass under way got (1 between passes)");
    let scrub_last =
        m.gauge("element_scrub_last_pass_timestamp_seconds", "End of the last finished scrub pass (0: none yet)");
    let scrub_interval =
        m.gauge("element_scrub_interval_seconds", "Seconds between scrub pass starts (0: the scrub is off)");
    let (mut passes_seen, mut files_seen, mut bytes_seen) = (0u64, 0u64, 0u64);
    let (mut runs_seen, mut errors_seen, mut disposed_seen) = (0u64, 0u64, 0u64);
    let root = store.root().to_owned();
    let mut round = 0u64;
    loop {
        let rc = store.retention_clock().status();
        clock_gap.set(rc.gap_seconds);
        if let Some(s) = rc.reference_skew_seconds {
            clock_skew.set(s);
        }
        if rc.in_step {
            health.set_ready("clock");
        } else {
            health.set_degraded(
                "clock",
                format!(
                    "the wall clock is {:.0} s off the retention clock (a clock jump, or the element was stopped); retention terms end by the retention clock{}",
                    rc.gap_seconds,
                    match rc.reference_agrees {
                        Some(false) => " and the time reference disagrees with the wall clock",
                        _ => "",
                    }
                ),
            );
        }
        // Where the retention clock stands survives a restart (every 30 s).
        if round.is_multiple_of(15) {
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.retention_clock().save()).await {
                Ok(Err(e)) => tracing::warn!(error = %e, "retention clock not saved"),
                Err(e) => tracing::warn!(error = %e, "retention clock not saved"),
                Ok(Ok(())) => {}
            }
        }
        round += 1;
        // A storage failure shows on /health/ready (not ready, with the reason) and here.
        if let Some(why) = store.write_failure() {
            health.set_not_ready("store", format!("{why}; writes are refused until the element is restarted"));
            failed_writes.set(1);
        }
        if let Ok(f) = fs4::available_space(&root) {
            free.set(f as i64);
        }
        if let Ok(t) = fs4::total_space(&root) {
            capacity.set(t as i64);
        }
        if let Some(d) = store.document_count() {
            documents.set(d as i64);
        }
        let now = store.mode();
        for md in ["edit", "rw", "ro", "ar"] {
            mode.get_or_create(&vec![("mode".to_owned(), md.to_owned())]).set(i64::from(now.as_str() == md));
        }
        let head = store.wal_head();
        wal_head.set(head as i64);
        let applied = store.cache_sync().applied();
        cache_lag.set(if applied == u64::MAX { 0 } else { head.saturating_sub(applied) as i64 });
        outbox_lag.set(head.saturating_sub(store.outbox().published.load(Ordering::SeqCst)) as i64);
        let d = store.disposition().snapshot();
        grow(&runs, &mut runs_seen, d.runs);
        grow(&run_errors, &mut errors_seen, d.errors);
        if let Some(rep) = &d.last_report
            && d.runs > 0
        {
            failed.set(rep.failed as i64);
            review.set(rep.review_due as i64);
        }
        if let Some(t) = d.finished_at {
            last_run.set(t.timestamp());
        }
        grow(&disposed, &mut disposed_seen, d.disposed_total);
        let sc = store.scrub().snapshot();
        grow(&scrub_passes, &mut passes_seen, sc.passes);
        grow(&scrub_files, &mut files_seen, sc.checked_total);
        grow(&scrub_bytes, &mut bytes_seen, sc.bytes_total);
        scrub_problems.set(sc.problems_count as i64);
        scrub_progress.set(if sc.running && sc.current_total > 0 {
            sc.current_done as f64 / sc.current_total as f64
        } else {
            1.0
        });
        scrub_last.set(sc.last_pass.as_ref().and_then(|p| p.finished_at).map(|t| t.timestamp()).unwrap_or(0));
        scrub_interval.set(sc.interval_secs.min(i64::MAX as u64) as i64);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Moves a counter up to a running total kept elsewhere.
fn grow(c: &Counter, seen: &mut u64, now: u64) {
    c.inc_by(now.saturating_sub(*seen));
    *seen = now;
}
