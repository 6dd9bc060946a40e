//! The dashboard: the admin cluster, the storage elements, the background workers the
//! public API reports on, and the latest audit entries. Each part comes from its own API
//! call; a part the user may not see is left out, a part that fails says why.

use super::audit::{self, ApiChain};
use super::elements::{self, ElementView};
use crate::UiState;
use crate::api::UiError;
use crate::layout::{self, Nav};
use crate::session::{Sess, error_box};
use artstore_shared::auth::Permission;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

pub fn routes() -> Router<UiState> {
    Router::new().route("/", get(dashboard))
}

/// `GET /api/v1/cluster`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Cluster {
    node_id: u64,
    state: String,
    leader: Option<u64>,
    term: u64,
    last_log_index: Option<u64>,
    last_applied: Option<u64>,
    members: Vec<Member>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Member {
    id: u64,
    url: String,
    voter: bool,
}

/// A refusal of the user's roles (or of a route this deployment does not serve) hides a
/// part of the page instead of showing an error.
fn hidden(e: &UiError) -> bool {
    matches!(e.status, 401 | 403)
}

fn cluster_card(c: &Result<Cluster, UiError>) -> Markup {
    html! {
        @match c {
            Err(e) if hidden(e) => {}
            Err(e) => section.card aria-labelledby="cluster-h" { h2 #cluster-h { "Admin cluster" } (error_box(e)) },
            Ok(c) => section.card aria-labelledby="cluster-h" {
                h2 #cluster-h { "Admin cluster" }
                dl.fields {
                    dt { "Leader" } dd {
                        @match c.leader {
                            Some(l) => { "node " (l) }
                            None => span.badge.down { "no leader" },
                        }
                    }
                    dt { "Term" } dd { (c.term) }
                    dt { "This node" } dd { "node " (c.node_id) " (" (c.state.to_lowercase()) ")" }
                    dt { "Log" } dd {
                        "last index " (opt(c.last_log_index)) ", applied " (opt(c.last_applied))
                    }
                }
                table {
                    caption.vh { "Cluster members" }
                    thead { tr { th scope="col" { "Node" } th scope="col" { "URL" } th scope="col" { "Role" } } }
                    tbody {
                        @for m in &c.members {
                            tr {
                                th scope="row" { (m.id) }
                                td.mono { (m.url) }
                                td {
                                    @if c.leader == Some(m.id) { span.badge.ok { "leader" } " " }
                                    (if m.voter { "voter" } else { "learner" })
                                }
                            }
                        }
                    }
                }
            },
        }
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "—".to_owned(), |v| v.to_string())
}

fn elements_section(els: &Result<Vec<ElementView>, UiError>, index: &Result<Value, UiError>, link: bool) -> Markup {
    html! {
        @match els {
            Err(e) if hidden(e) => {}
            Err(e) => section aria-labelledby="el-h" { h2 #el-h { "Storage elements" } (error_box(e)) },
            Ok(els) => section aria-labelledby="el-h" {
                h2 #el-h { "Storage elements" }
                @if els.is_empty() { p.muted { "No storage element is registered." } }
                @else {
                    div.table-wrap { table {
                        caption.vh { "Storage elements" }
                        thead { tr {
                            th scope="col" { "Element" } th scope="col" { "URL" } th scope="col" { "Mode" }
                            th scope="col" { "Health" } th scope="col" { "Space" } th scope="col" { "Documents" }
                        } }
                        tbody {
                            @for e in els {
                                tr {
                                    th scope="row" {
                                        @if link { a href=(format!("/elements/{}", crate::api::enc(&e.id))) { (e.id) } }
                                        @else { (e.id) }
                                    }
                                    td.mono { (e.url) }
                                    td { (elements::mode_badge(&e.mode)) }
                                    td { (elements::health_cell(e)) }
                                    td { (elements::space_cell(e)) }
                                    td {
                                        @match e.health.documents {
                                            Some(n) => { (n) },
                                            None => span.muted { "not reported" },
                                        }
                                    }
                                }
                            }
                        }
                    } }
                }
                @if let Ok(i) = index { @if let Some(n) = i.get("documents").and_then(Value::as_u64) {
                    p.muted { "Documents as each element last reported them; the search index holds " (n) " in all." }
                } }
            },
        }
    }
}

fn num(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_u64)
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_str)
}

fn count(v: &Value, path: &[&str]) -> Markup {
    match num(v, path) {
        Some(n) => html! { (n) },
        None => html! { span.muted { "not reported" } },
    }
}

fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// A worker's `status` as a badge (`ok`, `degraded`, `error`, `pending`).
fn status_badge(w: &Value) -> Markup {
    match text(w, &["status"]) {
        Some("ok") => html! { span.badge.ok { "ok" } },
        Some("degraded") => html! { span.badge.degraded { "degraded" } },
        Some("error") => html! { span.badge.down { "error" } },
        Some("pending") => html! { span.badge { "not run yet" } },
        Some(other) => html! { span.badge { (other) } },
        None => html! { span.muted { "not reported" } },
    }
}

/// Why a worker is not ok, as the element says it.
fn reason(w: &Value) -> Markup {
    let error = matches!(text(w, &["status"]), Some("error" | "degraded"));
    html! {
        @if let Some(r) = text(w, &["reason"]) {
            br;
            @if error { small.error { (r) } } @else { small.muted { (r) } }
        }
    }
}

fn disposition_cell(d: &Value) -> Markup {
    html! {
        (status_badge(d))
        @if flag(d, "running") { " " span.badge { "running" } }
        @match text(d, &["last_run_at"]) {
            Some(at) => { " last run " (layout::time(at)) },
            None => { " " span.muted { "no run since the element started" } },
        }
        @if d.get("disposed").is_some() {
            br;
            small {
                (count(d, &["disposed"])) " disposed, " (count(d, &["review_due"]))
                @if flag(d, "review_due_more") { " or more" }
                " awaiting review, " (count(d, &["restores_expired"])) " restores expired"
                @if num(d, &["failed"]).is_some_and(|n| n > 0) { ", " (count(d, &["failed"])) " failed" }
            }
        }
        (reason(d))
        // An error of an earlier run, once the schedule works again.
        @if text(d, &["status"]) == Some("ok") { @if let Some(e) = text(d, &["last_error"]) {
            br;
            small.muted {
                "earlier error"
                @if let Some(at) = text(d, &["last_error_at"]) { " (" (layout::time(at)) ")" }
                ": " (e)
            }
        } }
    }
}

fn cache_cell(c: &Value) -> Markup {
    let postgres = text(c, &["kind"]) == Some("postgres");
    html! {
        (status_badge(c)) " "
        @match text(c, &["kind"]) {
            Some("postgres") => "PostgreSQL",
            Some("embedded") => "embedded (in memory)",
            Some(other) => (other),
            None => span.muted { "kind not reported" },
        }
        @if postgres {
            ": "
            @if flag(c, "rebuilding") { span.badge { "rebuilding" } " from the files" }
            @else if flag(c, "caught_up") { "caught up" }
            @else { "catching up" }
            @if num(c, &["lag"]).is_some_and(|n| n > 0) { ", " (count(c, &["lag"])) " WAL records behind" }
        }
        @if !flag(c, "rebuilding") { (reason(c)) }
    }
}

fn outbox_cell(o: &Value) -> Markup {
    html! {
        (status_badge(o))
        @match num(o, &["backlog"]) {
            Some(0) => " nothing waiting",
            Some(n) => { " " (n) " events waiting" },
            None => {},
        }
        (reason(o))
    }
}

fn scrub_cell(s: &Value) -> Markup {
    html! {
        (status_badge(s))
        @if text(s, &["status"]) == Some("off") { " turned off" }
        @else {
            @if flag(s, "running") {
                " pass under way: " (count(s, &["current_done"])) " of " (count(s, &["current_total"])) " files"
            }
            @if let Some(at) = text(s, &["last_pass", "finished_at"]) {
                @if flag(s, "running") { "; " } @else { " " }
                "last pass finished " (layout::time(at))
                @if let Some(n) = num(s, &["last_pass", "checked"]).filter(|n| *n > 0) { " (" (n) " files checked)" }
            }
        }
        (reason(s))
    }
}

/// One element's background workers, as its last heartbeat (or probe) reported them.
fn element_workers(e: &ElementView) -> Markup {
    let w = &e.health.workers;
    html! {
        h3 { "Element " (e.id) }
        @if w.is_object() {
            dl.fields {
                dt { "Disposition" } dd { (disposition_cell(&w["disposition"])) }
                dt { "Cache" } dd { (cache_cell(&w["cache"])) }
                dt { "Outbox relay" } dd { (outbox_cell(&w["outbox"])) }
                @if w["scrub"].is_object() { dt { "Fixity scrub" } dd { (scrub_cell(&w["scrub"])) } }
            }
        } @else if e.health.status == "up" {
            p.muted { "Its workers are not reported (an element of an older version)." }
        } @else {
            p.muted { "Not reported: the element is " (if e.health.status.is_empty() { "unknown" } else { e.health.status.as_str() }) "." }
        }
    }
}

fn workers_card(index: &Result<Value, UiError>, els: &Result<Vec<ElementView>, UiError>) -> Markup {
    html! {
        section.card aria-labelledby="workers-h" {
            h2 #workers-h { "Background work" }
            @match index {
                Err(e) if hidden(e) => p.muted { "Your roles do not allow reading the search index's status." },
                Err(e) => { p { "Search index:" } (error_box(e)) },
                Ok(i) => {
                    h3 { "Search index" }
                    dl.fields {
                        dt { "Documents" } dd { (count(i, &["documents"])) }
                        dt { "Live indexing" } dd {
                            (text(i, &["feed", "state"]).unwrap_or("not reported"))
                            ": " (count(i, &["feed", "indexed"])) " indexed, "
                            (count(i, &["feed", "errors"])) " errors"
                            @if let Some(e) = text(i, &["feed", "last_error"]) { br; small.error { "last error: " (e) } }
                        }
                        dt { "Reindex" } dd { (rebuild(i)) }
                        dt { "Text extraction" } dd {
                            (count(i, &["extraction", "ok"])) " ok, " (count(i, &["extraction", "failed"])) " failed, "
                            (count(i, &["extraction", "timeouts"])) " timed out, " (count(i, &["extraction", "crashes"])) " crashed"
                        }
                    }
                }
            }
            @match els {
                Err(e) if hidden(e) => {}
                Err(_) => p.muted { "The storage elements could not be read (see below)." },
                Ok(els) => { @for e in els { (element_workers(e)) } },
            }
        }
    }
}

fn rebuild(i: &Value) -> Markup {
    let Some(r) = i.get("rebuild") else {
        return html! { span.muted { "not reported" } };
    };
    let running = r.get("running").and_then(Value::as_bool).unwrap_or(false);
    let kind = text(r, &["kind"]).unwrap_or("rebuild");
    html! {
        @if running {
            span.badge { "running" } " " (kind) ", started " (layout::time(text(r, &["started_at"]).unwrap_or("")))
        } @else if let Some(done) = text(r, &["finished_at"]) {
            (kind) " finished " (layout::time(done))
        } @else {
            span.muted { "none since the query role started" }
        }
        @if r.get("progress").is_some_and(|p| !p.is_null()) {
            br;
            small {
                (count(r, &["progress", "listed"])) " listed, " (count(r, &["progress", "indexed"])) " indexed, "
                (count(r, &["progress", "errors"])) " errors"
                @if let Some(el) = text(r, &["element"]) { " (element " (el) ")" }
            }
        }
        @if let Some(e) = text(r, &["last_error"]) { br; small.error { "last error: " (e) } }
    }
}

fn audit_section(a: &Option<Result<Vec<audit::AuditEntry>, UiError>>) -> Markup {
    html! {
        @match a {
            None => {}
            Some(Err(e)) if hidden(e) => {}
            Some(Err(e)) => section aria-labelledby="audit-h" { h2 #audit-h { "Latest audit entries" } (error_box(e)) },
            Some(Ok(items)) => section aria-labelledby="audit-h" {
                h2 #audit-h { "Latest audit entries" }
                @if items.is_empty() { p.muted { "The audit chain is empty." } }
                @else { (audit::entries_table(items, "The latest audit entries, newest first")) }
                p { a href="/audit" { "The whole audit chain" } }
            },
        }
    }
}

async fn dashboard(State(state): State<UiState>, s: Sess) -> Response {
    let title = "Dashboard";
    if !Nav::Dashboard.allowed(&s) {
        return layout::forbidden(&s, title, Nav::Dashboard);
    }
    let token = s.token();
    let chain = ApiChain { api: &state.api, token: &token };
    let audit_allowed = s.can(Permission::ReadAudit);
    let (cluster, els, index, latest) = tokio::join!(
        state.api.get::<Cluster>(&token, "/api/v1/cluster"),
        elements::fetch(&state, &token),
        state.api.get::<Value>(&token, "/api/v1/index"),
        async { if audit_allowed { Some(audit::latest(&chain, 10).await) } else { None } },
    );
    let body = html! {
        div.cards {
            (cluster_card(&cluster))
            (workers_card(&index, &els))
        }
        (elements_section(&els, &index, Nav::Elements.allowed(&s)))
        (audit_section(&latest))
    };
    layout::page(&s, title, Nav::Dashboard, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn worker_status_shows_what_is_reported() {
        let i = json!({"documents": 3, "feed": {"state": "following", "indexed": 2, "errors": 1, "last_error": "boom"},
                       "rebuild": {"running": false, "kind": "initial", "finished_at": "2026-11-30T11:29:57Z",
                                   "progress": {"listed": 3, "indexed": 3, "errors": 0}, "element": "standalone"}});
        let html = workers_card(&Ok(i), &Ok(vec![])).into_string();
        assert!(html.contains("following"), "{html}");
        assert!(html.contains("initial finished 2026-11-30 11:29 UTC"), "{html}");
        assert!(html.contains("last error: boom"), "{html}");
        assert!(!html.contains("not reported through the public API"), "{html}");
        let html = workers_card(&Ok(json!({})), &Ok(vec![])).into_string();
        assert!(html.contains("not reported"), "{html}");
    }

    /// Three elements: one healthy on the embedded cache (with an error of an earlier run),
    /// one on PostgreSQL with failing work, one down.
    fn elements_with_workers() -> Value {
        json!({"items": [
            {"id": "se-1", "url": "http://se-1", "mode": "rw",
             "health": {"status": "up", "free_bytes": 10, "total_bytes": 20, "documents": 1234,
                        "workers": {
                            "disposition": {"status": "ok", "running": false, "runs": 3,
                                            "last_run_at": "2026-11-30T11:29:57Z", "disposed": 2, "review_due": 5,
                                            "restores_expired": 0, "failed": 0, "errors": 1,
                                            "last_error": "cache unavailable: timed out",
                                            "last_error_at": "2026-11-30T10:29:57Z"},
                            "cache": {"kind": "embedded", "status": "ok"},
                            "outbox": {"status": "ok", "backlog": 0, "published_seq": 9, "lag": 0},
                            "scrub": {"status": "ok", "enabled": true, "running": true, "current_done": 40,
                                      "current_total": 1234, "problems_count": 0,
                                      "last_pass": {"finished_at": "2026-11-23T04:00:00Z", "checked": 1190}}}}},
            {"id": "se-2", "url": "http://se-2", "mode": "ro",
             "health": {"status": "up", "documents": 7,
                        "workers": {
                            "disposition": {"status": "error", "running": true, "runs": 1,
                                            "last_run_at": "2026-12-01T08:00:00Z", "errors": 1,
                                            "reason": "cache unavailable: pool timed out",
                                            "last_error": "cache unavailable: pool timed out"},
                            "cache": {"kind": "postgres", "status": "degraded", "reason": "connection refused",
                                      "caught_up": false, "lag": 42, "rebuilding": false},
                            "outbox": {"status": "degraded", "backlog": 17,
                                       "reason": "kafka unreachable: broker down; 17 events waiting"},
                            "scrub": {"status": "degraded", "enabled": true, "running": false, "problems_count": 1,
                                      "reason": "1 damaged files found by the scrub (restore them from a backup); first: /srv/se-2/data/2026/11/30/x.pdf: sha-256 is 00, sidecar says ff"}}}},
            {"id": "se-3", "url": "http://se-3", "mode": "rw",
             "health": {"status": "down", "reason": "no heartbeat within its ttl"}}
        ]})
    }

    #[test]
    fn each_element_shows_its_workers() {
        let els: elements::ElementList = serde_json::from_value(elements_with_workers()).unwrap();
        let html = workers_card(&Ok(json!({})), &Ok(els.items)).into_string();
        assert!(html.contains("Element se-1"), "{html}");
        assert!(html.contains("last run 2026-11-30 11:29 UTC"), "{html}");
        assert!(html.contains("2 disposed, 5 awaiting review"), "{html}");
        assert!(html.contains("earlier error (2026-11-30 10:29 UTC): cache unavailable: timed out"), "{html}");
        assert!(html.contains("embedded (in memory)"), "{html}");
        assert!(html.contains("nothing waiting"), "{html}");
        assert!(html.contains("<span class=\"badge down\">error</span>"), "{html}");
        assert!(html.contains("cache unavailable: pool timed out"), "{html}");
        assert!(html.contains("PostgreSQL: catching up, 42 WAL records behind"), "{html}");
        assert!(html.contains("connection refused"), "{html}");
        assert!(html.contains("17 events waiting"), "{html}");
        assert!(html.contains("kafka unreachable: broker down"), "{html}");
        assert!(html.contains("Not reported: the element is down."), "{html}");
        assert!(
            html.contains(
                "pass under way: 40 of 1234 files; last pass finished 2026-11-23 04:00 UTC (1190 files checked)"
            ),
            "{html}"
        );
        assert!(html.contains("first: /srv/se-2/data/2026/11/30/x.pdf: sha-256 is 00, sidecar says ff"), "{html}");
        let refused = Err(UiError::new(403, "Forbidden", "no"));
        assert!(!workers_card(&Ok(json!({})), &refused).into_string().contains("Element"));
    }

    #[test]
    fn refused_cards_are_left_out() {
        let refused = Err(UiError::new(403, "Forbidden", "no"));
        assert!(cluster_card(&refused).into_string().is_empty());
        let broken = Err(UiError::new(503, "Unavailable", "no quorum"));
        assert!(cluster_card(&broken).into_string().contains("no quorum"));
    }

    #[tokio::test]
    async fn each_part_degrades_on_its_own() {
        use axum::http::StatusCode;
        use axum::response::IntoResponse as _;
        let refused = || async {
            let p = json!({"title": "Forbidden", "detail": "this needs the role admin"});
            (StatusCode::FORBIDDEN, axum::Json(p)).into_response()
        };
        let down = || async {
            let p = json!({"title": "Service Unavailable", "detail": "the index is rebuilding"});
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(p)).into_response()
        };
        let api = Router::new()
            .route("/api/v1/cluster", get(refused))
            .route("/api/v1/elements", get(|| async { axum::Json(json!({"items": []})) }))
            .route("/api/v1/index", get(down));
        let api = crate::pages::testkit::fake_api(api, "reader").await;
        let mut c = crate::pages::testkit::Client::signed_in(&api).await;
        let page = c.get("/").await;
        assert_eq!(page.status, 200);
        assert!(!page.body.contains("Admin cluster"), "a refused card is left out");
        assert!(page.body.contains("No storage element is registered."));
        assert!(page.body.contains("Service Unavailable: the index is rebuilding"), "{}", page.body);
        assert!(!page.body.contains("Latest audit entries"));
    }

    #[tokio::test]
    async fn elements_report_their_documents_and_workers() {
        let api = Router::new()
            .route("/api/v1/cluster", get(|| async { axum::Json(json!({"node_id": 1, "state": "Leader"})) }))
            .route("/api/v1/elements", get(|| async { axum::Json(elements_with_workers()) }))
            .route("/api/v1/index", get(|| async { axum::Json(json!({"documents": 1241})) }));
        let api = crate::pages::testkit::fake_api(api, "reader").await;
        let mut c = crate::pages::testkit::Client::signed_in(&api).await;
        let page = c.get("/").await;
        assert_eq!(page.status, 200);
        let b = &page.body;
        assert!(b.contains("<th scope=\"col\">Documents</th>"), "{b}");
        assert!(b.contains("<td>1234</td>") && b.contains("<td>7</td>"), "{b}");
        assert!(b.contains("the search index holds 1241 in all"), "{b}");
        assert!(b.contains("Element se-2") && b.contains("last run 2026-12-01 08:00 UTC"), "{b}");
        assert!(!b.contains("not reported through the public API"), "{b}");
    }
}
