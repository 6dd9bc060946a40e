//! What the element says about itself: mode, space, document count and its background
//! workers, as the `element` block of `/health/ready` (which discovery probes read) and as
//! heartbeats carry it. One builder, so both say the same.

use crate::store::Store;
use crate::workers::DispositionRuns;
use artstore_shared::health::{Check, Health};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;

/// The `element` block of `/health/ready`.
pub fn element_info(store: &Store, health: &Health, id: Option<&str>) -> Value {
    let root = store.root();
    json!({
        "id": id,
        "mode": store.mode().as_str(),
        // Room for documents: what the file system has beyond the reserve.
        "free_bytes": fs4::available_space(root).ok().map(|f| f.saturating_sub(store.min_free_bytes())),
        "total_bytes": fs4::total_space(root).ok(),
        "documents": store.document_count(),
        "workers": workers(store, health),
        "retention_clock": store.retention_clock().status(),
    })
}

/// The background workers, each with a `status` (`ok`, `degraded`, `error`, or `pending`
/// before its first run) and, when not ok, a `reason`.
pub fn workers(store: &Store, health: &Health) -> Value {
    json!({
        "disposition": disposition(&store.disposition().snapshot()),
        "cache": cache(store, health.check("cache")),
        "outbox": outbox(store, health.check("events")),
        "scrub": scrub(&store.scrub().snapshot()),
    })
}

/// The background scrub: `degraded` while damaged files are known (naming the first),
/// `pending` before the first pass, `off` when disabled.
fn scrub(r: &crate::scrub::ScrubRuns) -> Value {
    let (status, reason) = match r {
        _ if r.problems_count > 0 => (
            "degraded",
            Some(match r.problems.first() {
                Some(p) => format!(
                    "{} damaged files found by the scrub (restore them from a backup); first: {}: {}",
                    r.problems_count, p.path, p.reason
                ),
                None => format!("{} damaged files found by the scrub", r.problems_count),
            }),
        ),
        _ if !r.enabled => ("off", None),
        _ if r.last_error.is_some() && !r.running => ("error", r.last_error.clone()),
        _ if r.passes == 0 && r.last_pass.is_none() => ("pending", None),
        _ => ("ok", None),
    };
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["status"] = json!(status);
    if let Some(reason) = reason {
        v["reason"] = json!(reason);
    }
    v
}

/// `status` and `reason` from a component's health (`absent` when it never reported).
fn from_check(check: Option<Check>, absent: (&str, Option<&str>)) -> (String, Option<String>) {
    match check {
        None => (absent.0.to_owned(), absent.1.map(str::to_owned)),
        Some(Check::Ready) => ("ok".to_owned(), None),
        Some(Check::Degraded(r)) => ("degraded".to_owned(), Some(r)),
        Some(Check::NotReady(r)) => ("error".to_owned(), Some(r)),
    }
}

fn disposition(r: &DispositionRuns) -> Value {
    let (status, reason) = match &r.last_report {
        _ if r.runs == 0 => ("pending", None),
        None => ("error", r.last_error.clone()),
        Some(rep) if rep.failed > 0 => (
            "degraded",
            Some(format!("{} documents could not be disposed or expired (see the element's log)", rep.failed)),
        ),
        Some(_) => ("ok", None),
    };
    let mut v = json!({
        "status": status,
        "running": r.running > 0,
        "runs": r.runs,
        "last_run_at": r.last_run_at,
        "finished_at": r.finished_at,
        "errors": r.errors,
        "last_error": r.last_error,
        "last_error_at": r.last_error_at,
    });
    if let Some(reason) = reason {
        v["reason"] = json!(reason);
    }
    if let Some(rep) = &r.last_report {
        v["disposed"] = json!(rep.disposed);
        v["review_due"] = json!(rep.review_due);
        v["review_due_more"] = json!(rep.review_due_more);
        v["restores_expired"] = json!(rep.restores_expired);
        v["failed"] = json!(rep.failed);
    }
    v
}

fn cache(store: &Store, check: Option<Check>) -> Value {
    // The only persistent cache is PostgreSQL; the embedded one lives in memory.
    let persistent = store.cache().is_persistent();
    let (status, reason) = from_check(check, ("ok", None));
    let mut v = json!({"kind": if persistent { "postgres" } else { "embedded" }, "status": status});
    if let Some(r) = &reason {
        v["reason"] = json!(r);
    }
    if persistent {
        let sync = store.cache_sync();
        let (applied, head) = (sync.applied(), store.wal_head());
        let degraded = sync.degraded_reason();
        // Not before the applier first reached the database ("connecting"), nor while degraded.
        v["caught_up"] = json!(degraded.is_none() && status == "ok");
        v["applied_seq"] = json!(applied);
        v["lag"] = json!(head.saturating_sub(applied));
        v["rebuilding"] = json!(degraded.as_deref() == Some(crate::applier::REBUILDING));
    }
    v
}

fn outbox(store: &Store, check: Option<Check>) -> Value {
    let (status, reason) = from_check(check, ("pending", Some("the relay has not started")));
    let state = store.outbox();
    let published = state.published.load(Ordering::SeqCst);
    let mut v = json!({
        "status": status,
        "backlog": state.backlog.load(Ordering::Relaxed),
        "published_seq": published,
        "lag": store.wal_head().saturating_sub(published),
    });
    if let Some(r) = reason {
        v["reason"] = json!(r);
    }
    v
}
