//! Storage elements: the admin's registry with the health the elements' heartbeats report,
//! registering and editing an element, and the forward-only mode switch (edit → rw → ro →
//! ar), each step confirmed with what the new mode forbids.

use super::{Fields, done, not_allowed};
use crate::UiState;
use crate::api::{UiError, enc};
use crate::layout::{self, Nav};
use crate::session::{Sess, Session, error_box};
use artstore_shared::auth::{Permission, Role};
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/elements", get(list).post(register))
        .route("/elements/{id}", get(detail).post(edit))
        .route("/elements/{id}/mode", post(switch_mode))
        .route("/elements/{id}/delete", post(unregister))
}

/// Every mode, in the only order an element may go through them.
pub const MODES: [&str; 4] = ["edit", "rw", "ro", "ar"];

/// The modes an element in `current` may still switch to (none for an unknown mode).
pub fn next_modes(current: &str) -> &'static [&'static str] {
    match MODES.iter().position(|m| *m == current) {
        Some(i) => &MODES[i + 1..],
        None => &[],
    }
}

/// What an element in `mode` allows, in a sentence (the design's mode table).
pub fn mode_rules(mode: &str) -> &'static str {
    match mode {
        "edit" => "new documents, reads, metadata changes and deletes (as retention allows)",
        "rw" => "new documents, reads and metadata changes; nothing can be deleted",
        "ro" => "reads only: no uploads, no metadata changes, no deletes",
        "ar" => "no uploads, changes or deletes; content is in the cold tier and each read needs a restore first",
        _ => "unknown mode",
    }
}

/// The question asked before switching `id` from `from` to `to`.
pub fn confirm_text(id: &str, from: &str, to: &str) -> String {
    let forbids = match to {
        "rw" => "nothing stored on it can be deleted any more (uploads and metadata changes go on)",
        "ro" => "no more uploads, metadata changes or deletes on it; content stays readable",
        "ar" => {
            "every document's content moves to the cold tier: reading content needs a restore request that \
             stages it back for a while, and no uploads, changes or deletes are possible"
        }
        _ => "its allowed operations change",
    };
    format!(
        "Switch storage element {id} from {from} to {to}? In {to}, {forbids}. Legal holds and retention \
         extensions stay possible. Modes only go forward: {id} can never return to {from}."
    )
}

/// A size typed by a person: bytes, or a number with a unit (`500 GiB`, `2 TB`, `1.5TiB`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let err = || format!("{s:?} is not a size (write bytes or a number with a unit: 500 GiB, 2 TB)");
    let n: f64 = num.parse().map_err(|_| err())?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000u64.pow(2),
        "g" | "gb" => 1000u64.pow(3),
        "t" | "tb" => 1000u64.pow(4),
        "p" | "pb" => 1000u64.pow(5),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "pib" => 1 << 50,
        _ => return Err(err()),
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(err());
    }
    Ok(v.round() as u64)
}

/// One element as `GET /api/v1/elements` answers it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ElementView {
    pub id: String,
    pub url: String,
    pub mode: String,
    pub capacity_bytes: u64,
    pub weight: u32,
    pub dc: String,
    pub created_at: String,
    pub updated_at: String,
    pub health: Health,
}

/// The health the admin folds in from the element's last heartbeat.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Health {
    /// `up`, `down` or `unknown`.
    pub status: String,
    pub free_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
    pub reported_mode: Option<String>,
    pub last_heartbeat: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ElementList {
    pub items: Vec<ElementView>,
}

/// The registry, from the admin.
pub async fn fetch(state: &UiState, token: &str) -> Result<Vec<ElementView>, UiError> {
    let mut els = state.api.get::<ElementList>(token, "/api/v1/elements").await?.items;
    els.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(els)
}

/// The element's mode as a badge.
pub fn mode_badge(mode: &str) -> Markup {
    let class = if mode == "ar" { "badge archived" } else { "badge" };
    html! { span class=(class) title=(mode_rules(mode)) { (mode) } }
}

/// Health from the last heartbeat, with the mode the element itself reports when it differs.
pub fn health_cell(e: &ElementView) -> Markup {
    let h = &e.health;
    let status = if h.status.is_empty() { "unknown" } else { h.status.as_str() };
    html! {
        span class=(format!("badge {status}")) { (status) }
        @if let Some(r) = &h.reason { br; small.muted { (r) } }
        @if let Some(at) = &h.last_heartbeat { br; small.muted { "heartbeat " (layout::time(at)) } }
        @if let Some(m) = h.reported_mode.as_deref().filter(|m| *m != e.mode) {
            br; small { "the element reports mode " (m) }
        }
    }
}

/// Used and free space from the heartbeat, else the configured capacity.
pub fn space_cell(e: &ElementView) -> Markup {
    match (e.health.total_bytes, e.health.free_bytes) {
        (Some(total), Some(free)) if total > 0 => layout::bar(total.saturating_sub(free), total),
        _ if e.capacity_bytes > 0 => {
            html! { (layout::bytes(e.capacity_bytes)) " configured" br; small.muted { "free space not reported" } }
        }
        _ => html! { span.muted { "not reported" } },
    }
}

fn may_switch(s: &Session) -> bool {
    s.can(Permission::ManageElement)
}

/// One form per mode the element may still go to, each asking first.
fn mode_forms(s: &Session, e: &ElementView) -> Markup {
    html! {
        @for to in next_modes(&e.mode) {
            form.inline-form method="post" action=(format!("/elements/{}/mode", enc(&e.id)))
                data-confirm=(confirm_text(&e.id, &e.mode, to)) {
                (layout::csrf(s))
                input type="hidden" name="mode" value=(to);
                button.secondary type="submit" title=(format!("{to}: {}", mode_rules(to))) { "Switch to " (to) }
            }
        }
        @if next_modes(&e.mode).is_empty() {
            span.muted { "final mode" }
        }
    }
}

fn mode_table() -> Markup {
    html! {
        details {
            summary { "What each mode allows" }
            div.table-wrap {
                table {
                    thead { tr { th scope="col" { "Mode" } th scope="col" { "Allows" } } }
                    tbody {
                        @for m in MODES { tr { th scope="row" { (m) } td { (mode_rules(m)) } } }
                    }
                }
            }
            p.muted {
                "Legal holds and retention extensions are allowed in every mode. Modes only go forward "
                "(edit → rw → ro → ar); the element drains its in-flight writes and records the switch "
                "before the admin commits it."
            }
        }
    }
}

async fn list(State(state): State<UiState>, s: Sess) -> Response {
    let title = "Storage elements";
    if !Nav::Elements.allowed(&s) {
        return layout::forbidden(&s, title, Nav::Elements);
    }
    let els = fetch(&state, &s.token()).await;
    let admin = s.is(Role::Admin);
    let body = html! {
        @match &els {
            Err(e) => (error_box(e)),
            Ok(els) if els.is_empty() => p.muted { "No storage element is registered." },
            Ok(els) => div.table-wrap {
                table {
                    caption.vh { "Registered storage elements" }
                    thead { tr {
                        th scope="col" { "Element" } th scope="col" { "URL" } th scope="col" { "Mode" }
                        th scope="col" { "Health" } th scope="col" { "Space" } th scope="col" { "Weight" }
                        th scope="col" { "Data centre" } th scope="col" { "Actions" }
                    } }
                    tbody {
                        @for e in els {
                            tr {
                                th scope="row" { a href=(format!("/elements/{}", enc(&e.id))) { (e.id) } }
                                td.mono { (e.url) }
                                td { (mode_badge(&e.mode)) }
                                td { (health_cell(e)) }
                                td { (space_cell(e)) }
                                td { (e.weight) }
                                td { @if e.dc.is_empty() { span.muted { "—" } } @else { (e.dc) } }
                                td { div.cell-actions {
                                    @if may_switch(&s) { (mode_forms(&s, e)) }
                                    @if admin { a href=(format!("/elements/{}", enc(&e.id))) { "Edit " span.vh { (e.id) } } }
                                } }
                            }
                        }
                    }
                }
            }
        }
        (mode_table())
        p.muted {
            "Health and free space come from the elements' heartbeats as the admin cluster last saw them; "
            "an element's own readiness checks and document counts are not part of the public API."
        }
        @if admin {
            h2 { "Register an element" }
            form.grid-form method="post" action="/elements" {
                (layout::csrf(&s))
                label for="el-id" { "Id" }
                input #el-id name="id" required pattern="[A-Za-z0-9._@-]{1,64}" placeholder="se-1";
                label for="el-url" { "URL" }
                input #el-url name="url" type="url" required placeholder="https://se-1.example:8081";
                label for="el-mode" { "Current mode" }
                select #el-mode name="mode" {
                    @for m in MODES { option value=(m) selected[m == "edit"] { (m) } }
                }
                label for="el-weight" { "Weight" }
                input #el-weight name="weight" type="number" min="0" value="1";
                label for="el-capacity" { "Capacity" }
                input #el-capacity name="capacity" placeholder="e.g. 4 TiB (optional)";
                label for="el-dc" { "Data centre" }
                input #el-dc name="dc" placeholder="optional";
                div.full { button type="submit" { "Register element" } }
            }
            p.muted { "The mode must be the one the element is in now: the registry records it, it does not switch the element." }
        }
    };
    layout::page(&s, title, Nav::Elements, body).into_response()
}

async fn register(State(state): State<UiState>, s: Sess, f: Fields) -> Response {
    if !s.is(Role::Admin) {
        return not_allowed(&s, "register storage elements", "/elements");
    }
    let outcome = async {
        let id = f.text("id");
        let mut body =
            json!({ "id": id, "url": f.text("url"), "mode": f.get("mode").unwrap_or("edit"), "dc": f.text("dc") });
        if let Some(w) = f.get("weight") {
            body["weight"] = json!(parse_weight(w)?);
        }
        if let Some(c) = f.get("capacity") {
            body["capacity_bytes"] = json!(parse_size(c).map_err(|e| UiError::new(400, "Invalid capacity", e))?);
        }
        state.api.send(&s.token(), Method::POST, "/api/v1/elements", Some(&body)).await?;
        Ok(format!("Storage element {id} is registered."))
    }
    .await;
    done(&s, outcome, "/elements")
}

fn parse_weight(w: &str) -> Result<u32, UiError> {
    w.parse::<u32>().map_err(|_| UiError::new(400, "Invalid weight", format!("{w:?} is not a whole number ≥ 0")))
}

async fn detail(State(state): State<UiState>, s: Sess, Path(id): Path<String>) -> Response {
    let title = format!("Storage element {id}");
    if !Nav::Elements.allowed(&s) {
        return layout::forbidden(&s, &title, Nav::Elements);
    }
    let e = state.api.get::<ElementView>(&s.token(), &format!("/api/v1/elements/{}", enc(&id))).await;
    let admin = s.is(Role::Admin);
    let body = html! {
        p { a href="/elements" { "← All storage elements" } }
        @match &e {
            Err(err) => (error_box(err)),
            Ok(e) => {
                dl.fields {
                    dt { "URL" } dd.mono { (e.url) }
                    dt { "Mode" } dd { (mode_badge(&e.mode)) " " span.muted { (mode_rules(&e.mode)) } }
                    dt { "Health" } dd { (health_cell(e)) }
                    dt { "Space" } dd { (space_cell(e)) }
                    dt { "Configured capacity" } dd {
                        @if e.capacity_bytes > 0 { (layout::bytes(e.capacity_bytes)) } @else { span.muted { "not set" } }
                    }
                    dt { "Weight" } dd { (e.weight) }
                    dt { "Data centre" } dd { @if e.dc.is_empty() { span.muted { "not set" } } @else { (e.dc) } }
                    dt { "Registered" } dd { (layout::time(&e.created_at)) }
                    dt { "Last changed" } dd { (layout::time(&e.updated_at)) }
                }
                @if may_switch(&s) {
                    h2 { "Mode" }
                    div.actions { (mode_forms(&s, e)) }
                    (mode_table())
                }
                @if admin {
                    h2 { "Edit" }
                    form.grid-form method="post" action=(format!("/elements/{}", enc(&e.id))) {
                        (layout::csrf(&s))
                        label for="el-url" { "URL" }
                        input #el-url name="url" type="url" required value=(e.url);
                        label for="el-weight" { "Weight" }
                        input #el-weight name="weight" type="number" min="0" value=(e.weight);
                        label for="el-capacity" { "Capacity" }
                        input #el-capacity name="capacity" value=(if e.capacity_bytes > 0 { e.capacity_bytes.to_string() } else { String::new() })
                            placeholder="bytes, or e.g. 4 TiB" aria-describedby="el-capacity-hint";
                        label for="el-dc" { "Data centre" }
                        input #el-dc name="dc" value=(e.dc);
                        div.full { small #el-capacity-hint .muted { "Capacity in bytes or with a unit (GB, GiB, TB, TiB…)." } }
                        div.full { button type="submit" { "Save changes" } }
                    }
                    h2 { "Unregister" }
                    p { "Ingesters and the query role stop using an unregistered element. Its files stay on its disk." }
                    form method="post" action=(format!("/elements/{}/delete", enc(&e.id)))
                        data-confirm=(format!("Unregister storage element {}? Its files stay on its disk, but nothing reads or writes them through ArtStore until it is registered again.", e.id)) {
                        (layout::csrf(&s))
                        button.danger type="submit" { "Unregister " (e.id) }
                    }
                }
            }
        }
    };
    layout::page(&s, &title, Nav::Elements, body).into_response()
}

/// The fields of the edit form that differ from the element as it is.
fn element_changes(cur: &ElementView, f: &Fields) -> Result<Map<String, Value>, UiError> {
    let mut patch = Map::new();
    let url = f.text("url");
    if !url.is_empty() && url.trim_end_matches('/') != cur.url {
        patch.insert("url".into(), json!(url));
    }
    if let Some(w) = f.get("weight") {
        let w = parse_weight(w)?;
        if w != cur.weight {
            patch.insert("weight".into(), json!(w));
        }
    }
    let cap = match f.get("capacity") {
        Some(c) => parse_size(c).map_err(|e| UiError::new(400, "Invalid capacity", e))?,
        None => 0,
    };
    if cap != cur.capacity_bytes {
        patch.insert("capacity_bytes".into(), json!(cap));
    }
    let dc = f.text("dc");
    if dc != cur.dc {
        patch.insert("dc".into(), json!(dc));
    }
    Ok(patch)
}

async fn edit(State(state): State<UiState>, s: Sess, Path(id): Path<String>, f: Fields) -> Response {
    let back = format!("/elements/{}", enc(&id));
    if !s.is(Role::Admin) {
        return not_allowed(&s, "edit storage elements", &back);
    }
    let outcome = async {
        let path = format!("/api/v1/elements/{}", enc(&id));
        let cur = state.api.get::<ElementView>(&s.token(), &path).await?;
        let patch = element_changes(&cur, &f)?;
        if patch.is_empty() {
            return Ok("Nothing changed.".to_owned());
        }
        let fields = patch.keys().cloned().collect::<Vec<_>>().join(", ");
        state.api.send(&s.token(), Method::PATCH, &path, Some(&Value::Object(patch))).await?;
        Ok(format!("Storage element {id} saved ({fields})."))
    }
    .await;
    done(&s, outcome, &back)
}

async fn switch_mode(State(state): State<UiState>, s: Sess, Path(id): Path<String>, f: Fields) -> Response {
    if !may_switch(&s) {
        return not_allowed(&s, "change an element's mode", "/elements");
    }
    let mode = f.text("mode");
    let outcome = async {
        if !MODES.contains(&mode.as_str()) {
            return Err(UiError::new(400, "Unknown mode", format!("{mode:?} is not edit, rw, ro or ar")));
        }
        let path = format!("/api/v1/elements/{}/mode", enc(&id));
        state.api.send(&s.token(), Method::POST, &path, Some(&json!({ "mode": mode }))).await?;
        Ok(format!("Storage element {id} is now in mode {mode}: {}.", mode_rules(&mode)))
    }
    .await;
    done(&s, outcome, "/elements")
}

async fn unregister(State(state): State<UiState>, s: Sess, Path(id): Path<String>) -> Response {
    if !s.is(Role::Admin) {
        return not_allowed(&s, "unregister storage elements", "/elements");
    }
    let path = format!("/api/v1/elements/{}", enc(&id));
    let outcome = state
        .api
        .send(&s.token(), Method::DELETE, &path, None)
        .await
        .map(|_| format!("Storage element {id} is unregistered; its files stay on its disk."));
    let to = if outcome.is_ok() { "/elements".to_owned() } else { format!("/elements/{}", enc(&id)) };
    done(&s, outcome, &to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_only_go_forward() {
        assert_eq!(next_modes("edit"), ["rw", "ro", "ar"]);
        assert_eq!(next_modes("rw"), ["ro", "ar"]);
        assert_eq!(next_modes("ro"), ["ar"]);
        assert!(next_modes("ar").is_empty());
        assert!(next_modes("bogus").is_empty());
    }

    #[test]
    fn confirmations_say_what_is_lost() {
        let t = confirm_text("standalone", "rw", "ro");
        assert!(t.contains("no more uploads, metadata changes or deletes"), "{t}");
        assert!(t.contains("never return to rw"), "{t}");
        assert!(confirm_text("a", "ro", "ar").contains("restore"));
        assert!(confirm_text("a", "edit", "rw").contains("deleted"));
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("4 TiB"), Ok(4 << 40));
        assert_eq!(parse_size("2tb"), Ok(2_000_000_000_000));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 XB").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn only_changed_fields_are_sent() {
        let cur = ElementView {
            id: "se-1".into(),
            url: "http://a:1".into(),
            weight: 1,
            capacity_bytes: 0,
            dc: "x".into(),
            ..Default::default()
        };
        let f = Fields(vec![
            ("url".into(), "http://a:1/".into()),
            ("weight".into(), "3".into()),
            ("capacity".into(), "".into()),
            ("dc".into(), "x".into()),
        ]);
        let p = element_changes(&cur, &f).unwrap();
        assert_eq!(Value::Object(p), json!({"weight": 3}));
        let bad = Fields(vec![("weight".into(), "heavy".into())]);
        assert!(element_changes(&cur, &bad).is_err());
    }

    /// A fake admin with one element whose mode the form switches (forward only).
    fn fake_admin(mode: std::sync::Arc<std::sync::Mutex<String>>) -> axum::Router {
        use axum::http::StatusCode;
        let m = mode.clone();
        let list = move || {
            let m = m.clone();
            async move {
                let mode = m.lock().unwrap().clone();
                axum::Json(json!({"items": [{"id": "standalone", "url": "http://127.0.0.1:1", "mode": mode,
                    "capacity_bytes": 0, "weight": 1, "dc": "", "health": {"status": "up", "free_bytes": 750,
                    "total_bytes": 1000, "reported_mode": mode, "last_heartbeat": "2026-01-01T00:00:00Z"}}]}))
            }
        };
        let switch = move |Path(id): Path<String>, axum::Json(b): axum::Json<Value>| {
            let m = mode.clone();
            async move {
                let to = b["mode"].as_str().unwrap_or_default().to_owned();
                let mut cur = m.lock().unwrap();
                if MODES.iter().position(|x| *x == to) <= MODES.iter().position(|x| *x == cur.as_str()) {
                    let p = json!({"title": "Conflict", "detail": format!("element {id:?} is in mode {cur}; modes only go forward")});
                    return (StatusCode::CONFLICT, axum::Json(p)).into_response();
                }
                *cur = to;
                axum::Json(json!({"id": id, "mode": *cur})).into_response()
            }
        };
        Router::new().route("/api/v1/elements", get(list)).route("/api/v1/elements/{id}/mode", post(switch))
    }

    #[tokio::test]
    async fn the_mode_form_switches_forward_and_shows_refusals() {
        let mode = std::sync::Arc::new(std::sync::Mutex::new("rw".to_owned()));
        let api = crate::pages::testkit::fake_api(fake_admin(mode.clone()), "operator").await;
        let mut c = crate::pages::testkit::Client::signed_in(&api).await;
        let page = c.get("/elements").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("Switch to ro") && page.body.contains("Switch to ar"), "{}", page.body);
        assert!(!page.body.contains("Switch to edit") && !page.body.contains("Switch to rw"));
        assert!(page.body.contains("no more uploads, metadata changes or deletes"), "the ro form asks first");
        assert!(page.body.contains("(25%)"), "used space from the heartbeat");
        assert!(!page.body.contains("Register element"), "operators do not register elements");

        let r = c.post("/elements/standalone/mode", &[("mode", "ro")]).await;
        assert_eq!((r.status, r.location.as_deref()), (303, Some("/elements")));
        assert_eq!(*mode.lock().unwrap(), "ro");
        let page = c.get("/elements").await;
        assert!(page.body.contains("standalone is now in mode ro"), "{}", page.body);

        let r = c.post("/elements/standalone/mode", &[("mode", "rw")]).await;
        assert_eq!(r.status, 303);
        let page = c.get("/elements").await;
        assert!(page.body.contains("Conflict: element &quot;standalone&quot; is in mode ro"), "{}", page.body);
        assert_eq!(*mode.lock().unwrap(), "ro");
    }
}
