//! Storage elements: the admin's registry with the health the elements' heartbeats report,
//! registering and editing an element (weight, capacity, data centre, labels), and the
//! forward-only mode switch (edit → rw → ro → ar), each step confirmed with what the new
//! mode forbids.

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
use std::collections::BTreeMap;

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

/// Labels typed into the form's textarea: one `key=value` per line, blank lines skipped,
/// spaces around key and value trimmed. Only the shape is checked here; the admin API
/// checks keys and values and says which label it refuses.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut first_seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {n} ({line:?}) is not key=value, e.g. rack=r12"));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("line {n} ({line:?}) has no key before the ="));
        }
        if let Some(earlier) = first_seen.insert(k.to_owned(), n) {
            return Err(format!("label {k:?} is given twice (lines {earlier} and {n})"));
        }
        labels.insert(k.to_owned(), v.trim().to_owned());
    }
    Ok(labels)
}

/// Labels as the textarea shows them: one `key=value` per line.
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// Labels as `key=value` badges.
pub fn labels_cell(labels: &BTreeMap<String, String>) -> Markup {
    html! {
        @if labels.is_empty() {
            span.muted { "—" }
        } @else {
            @for (k, v) in labels { span.badge.mono { (k) "=" (v) } " " }
        }
    }
}

fn form_labels(f: &Fields) -> Result<Option<BTreeMap<String, String>>, UiError> {
    f.raw("labels").map(|t| parse_labels(t).map_err(|e| UiError::new(400, "Invalid labels", e))).transpose()
}

/// The labels textarea of the register and edit forms.
fn labels_field(current: &BTreeMap<String, String>) -> Markup {
    html! {
        label for="el-labels" { "Labels" }
        textarea #el-labels .mono name="labels" rows="4" placeholder="rack=r12\ntier=ssd"
            aria-describedby="el-labels-hint" { (labels_text(current)) }
        div.full { small #el-labels-hint .muted {
            "One key=value per line. Keys: a-z 0-9 . _ - (starting with a letter or digit, up to 63); "
            "values up to 256 characters; at most 32 labels."
        } }
    }
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
    pub labels: BTreeMap<String, String>,
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
    /// Documents the element holds (not tombstones), as it last reported.
    pub documents: Option<u64>,
    /// Its background workers (disposition, cache, outbox) as it last reported them;
    /// `null` when it does not.
    pub workers: Value,
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
                        th scope="col" { "Data centre" } th scope="col" { "Labels" } th scope="col" { "Actions" }
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
                                td { (labels_cell(&e.labels)) }
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
            "Health, reported mode and free space are what the admin cluster last heard from each element "
            "(its heartbeat in Redis, or the admin's own probe of its readiness every two seconds); "
            "document counts and background workers are on the dashboard."
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
                (labels_field(&BTreeMap::new()))
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
        if let Some(l) = form_labels(&f)?.filter(|l| !l.is_empty()) {
            body["labels"] = json!(l);
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
                    dt { "Labels" } dd { (labels_cell(&e.labels)) }
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
                        (labels_field(&e.labels))
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
    // The API replaces the whole set, so a change sends every label the form holds.
    if let Some(labels) = form_labels(f)?
        && labels != cur.labels
    {
        patch.insert("labels".into(), json!(labels));
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

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn labels_parse_one_per_line() {
        assert_eq!(parse_labels(""), Ok(BTreeMap::new()));
        assert_eq!(parse_labels("\n  \r\n"), Ok(BTreeMap::new()));
        assert_eq!(
            parse_labels("rack=r12\r\n\n  tier = ssd \nurl=http://x/?a=b\nempty=\n"),
            Ok(labels(&[("rack", "r12"), ("tier", "ssd"), ("url", "http://x/?a=b"), ("empty", "")]))
        );
        let e = parse_labels("rack=r12\nrack r13").unwrap_err();
        assert!(e.contains("line 2") && e.contains("\"rack r13\"") && e.contains("key=value"), "{e}");
        let e = parse_labels(" =ssd").unwrap_err();
        assert!(e.contains("line 1") && e.contains("no key"), "{e}");
        let e = parse_labels("tier=ssd\nrack=1\ntier=hdd").unwrap_err();
        assert!(e.contains("\"tier\"") && e.contains("lines 1 and 3"), "{e}");
        let l = labels(&[("rack", "r12"), ("tier", "ssd")]);
        assert_eq!(parse_labels(&labels_text(&l)), Ok(l), "what the form shows parses back");
    }

    #[test]
    fn changed_labels_are_sent_whole() {
        let cur = ElementView {
            id: "se-1".into(),
            labels: labels(&[("rack", "r12"), ("tier", "ssd")]),
            ..Default::default()
        };
        let same = Fields(vec![("labels".into(), "tier=ssd\nrack=r12".into())]);
        assert_eq!(Value::Object(element_changes(&cur, &same).unwrap()), json!({}));
        let one_more = Fields(vec![("labels".into(), "rack=r12\ntier=ssd\nzone=b".into())]);
        assert_eq!(
            Value::Object(element_changes(&cur, &one_more).unwrap()),
            json!({"labels": {"rack": "r12", "tier": "ssd", "zone": "b"}})
        );
        let cleared = Fields(vec![("labels".into(), "  ".into())]);
        assert_eq!(Value::Object(element_changes(&cur, &cleared).unwrap()), json!({"labels": {}}));
        let absent = Fields(vec![("weight".into(), "0".into())]);
        assert!(!element_changes(&cur, &absent).unwrap().contains_key("labels"), "no textarea, no change");
        let bad = Fields(vec![("labels".into(), "rack".into())]);
        assert!(element_changes(&cur, &bad).unwrap_err().message().starts_with("Invalid labels: line 1"));
    }

    /// A fake admin holding one element that registering and editing change.
    fn fake_registry(sent: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>) -> axum::Router {
        use axum::http::StatusCode;
        let element = || {
            json!({"id": "se-1", "url": "http://10.0.0.1:8081", "mode": "edit", "capacity_bytes": 0, "weight": 1,
                   "dc": "", "labels": {"rack": "r12", "tier": "ssd"}, "health": {"status": "up"}})
        };
        let list = move || async move { axum::Json(json!({"items": [element()]})) };
        let one = move || async move { axum::Json(element()) };
        let (s1, s2) = (sent.clone(), sent);
        let create = move |axum::Json(b): axum::Json<Value>| {
            let s = s1.clone();
            async move {
                s.lock().unwrap().push(("POST".into(), b.clone()));
                (StatusCode::CREATED, axum::Json(b)).into_response()
            }
        };
        let patch = move |axum::Json(b): axum::Json<Value>| {
            let s = s2.clone();
            async move {
                if b["labels"].as_object().is_some_and(|l| l.keys().any(|k| k.contains(' '))) {
                    let p = json!({"title": "Bad Request", "detail": "label key \"a b\" must be 1-63 characters"});
                    return (StatusCode::BAD_REQUEST, axum::Json(p)).into_response();
                }
                s.lock().unwrap().push(("PATCH".into(), b.clone()));
                axum::Json(b).into_response()
            }
        };
        Router::new()
            .route("/api/v1/elements", get(list).post(create))
            .route("/api/v1/elements/{id}", get(one).patch(patch))
    }

    #[tokio::test]
    async fn labels_show_as_badges_and_the_forms_send_them() {
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let api = crate::pages::testkit::fake_api(fake_registry(sent.clone()), "admin").await;
        let mut c = crate::pages::testkit::Client::signed_in(&api).await;
        let page = c.get("/elements").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("rack=r12") && page.body.contains("tier=ssd"), "{}", page.body);
        assert!(page.body.contains("name=\"labels\""), "the register form has a labels field");
        let page = c.get("/elements/se-1").await;
        assert!(page.body.contains("rack=r12\ntier=ssd\n</textarea>"), "{}", page.body);

        let form = [("id", "se-2"), ("url", "http://10.0.0.2:8081"), ("labels", "tier=hdd\r\nrack=r1")];
        let r = c.post("/elements", &form).await;
        assert_eq!(r.status, 303);
        let r =
            c.post("/elements/se-1", &[("url", "http://10.0.0.1:8081"), ("weight", "1"), ("labels", "rack=r14")]).await;
        assert_eq!(r.status, 303);
        {
            let sent = sent.lock().unwrap();
            assert_eq!(sent[0].0, "POST");
            assert_eq!(sent[0].1["labels"], json!({"tier": "hdd", "rack": "r1"}));
            assert_eq!(sent[1], ("PATCH".to_owned(), json!({"labels": {"rack": "r14"}})));
        }
        let page = c.get("/elements/se-1").await;
        assert!(page.body.contains("Storage element se-1 saved (labels)"), "{}", page.body);

        // A malformed line never reaches the API; the API's refusal is shown as it is.
        let r = c.post("/elements/se-1", &[("url", "http://10.0.0.1:8081"), ("labels", "rack r14")]).await;
        assert_eq!(r.status, 303);
        let page = c.get("/elements/se-1").await;
        assert!(page.body.contains("Invalid labels: line 1 (&quot;rack r14&quot;) is not key=value"), "{}", page.body);
        c.post("/elements/se-1", &[("url", "http://10.0.0.1:8081"), ("labels", "a b=1")]).await;
        let page = c.get("/elements/se-1").await;
        assert!(page.body.contains("label key &quot;a b&quot; must be"), "{}", page.body);
        assert_eq!(sent.lock().unwrap().len(), 2, "refused forms change nothing");
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
