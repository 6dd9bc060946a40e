//! One document: every sidecar field, its versions, download and an inline preview, and the
//! forms that change it (description, tags and metadata; legal hold; retention; restore of
//! archived content), each a POST that flashes the API's answer and returns to the page.

use super::Fields;
use crate::UiState;
use crate::api::{UiError, enc};
use crate::layout::{self, Nav};
use crate::session::{self, Sess, Session};
use artstore_shared::auth::Permission;
use artstore_shared::sidecar::{DocState, RestoreState, RetentionMode, Sidecar};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{NaiveDate, Utc};
use futures_util::StreamExt as _;
use maud::{Markup, html};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::time::Duration;
use uuid::Uuid;

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/documents/{id}", get(show))
        .route("/documents/{id}/download", get(download))
        .route("/documents/{id}/preview", get(preview))
        .route("/documents/{id}/metadata", post(edit_metadata))
        .route("/documents/{id}/legal-hold", post(legal_hold))
        .route("/documents/{id}/retention", post(extend_retention))
        .route("/documents/{id}/restore", post(restore))
}

/// How much of a text document the page shows.
pub const TEXT_PREVIEW_BYTES: usize = 64 * 1024;

/// How a document's content can be shown on its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviewKind {
    /// In a frame, by the browser's PDF viewer.
    Pdf,
    /// As an `<img>`.
    Image,
    /// The first [`TEXT_PREVIEW_BYTES`], escaped, in a `<pre>`.
    Text,
    /// Not shown.
    None,
}

/// The media type without parameters, lowercase.
fn base_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

impl PreviewKind {
    /// Only types a browser renders without running anything of the document's own are
    /// served inline (never HTML or SVG); text of any kind is shown escaped.
    pub fn of(content_type: &str) -> PreviewKind {
        let t = base_type(content_type);
        match t.as_str() {
            "application/pdf" => PreviewKind::Pdf,
            "image/png" | "image/jpeg" | "image/gif" | "image/webp" => PreviewKind::Image,
            "application/json"
            | "application/xml"
            | "application/x-ndjson"
            | "application/yaml"
            | "application/x-yaml"
            | "application/csv"
            | "application/javascript"
            | "application/x-sh" => PreviewKind::Text,
            t if t.starts_with("text/") || t.ends_with("+xml") || t.ends_with("+json") => PreviewKind::Text,
            _ => PreviewKind::None,
        }
    }

    /// Whether the preview route serves it inline.
    fn inline(self) -> bool {
        matches!(self, PreviewKind::Pdf | PreviewKind::Image)
    }
}

/// A `Content-Disposition` value with an ASCII fallback name and the exact UTF-8 one.
pub fn content_disposition(kind: &str, name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| if (c.is_ascii_graphic() || c == ' ') && !matches!(c, '"' | '\\' | '/' | '%') { c } else { '_' })
        .collect();
    let ascii = if ascii.trim().is_empty() { "document".to_owned() } else { ascii };
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{}", enc(name))
}

/// The longest valid UTF-8 text of a prefix of a document (a character cut at the end of
/// the prefix is dropped; invalid bytes elsewhere become U+FFFD).
pub fn decode_prefix(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(e) if e.error_len().is_none() => String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// A JSON merge patch (RFC 7386) that turns `old` into `new`: removed keys become `null`,
/// changed nested objects are patched key by key. (A `null` inside `new` cannot be kept: a
/// merge patch reads it as a removal.)
pub fn merge_diff(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut patch = Map::new();
    for k in old.keys() {
        if !new.contains_key(k) {
            patch.insert(k.clone(), Value::Null);
        }
    }
    for (k, v) in new {
        match (old.get(k), v) {
            (Some(o), n) if o == n => {}
            (Some(Value::Object(o)), Value::Object(n)) => {
                patch.insert(k.clone(), Value::Object(merge_diff(o, n)));
            }
            _ => {
                patch.insert(k.clone(), v.clone());
            }
        }
    }
    patch
}

/// Tags as typed: separated by commas or lines, trimmed, without blanks and repeats.
pub fn split_tags(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in text.split([',', '\n']).map(str::trim).filter(|t| !t.is_empty()) {
        if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    out
}

/// The metadata field of the edit form as a JSON object, or a sentence saying what is wrong.
pub fn parse_metadata(text: &str) -> Result<Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("Metadata must be a JSON object, like {\"customer\": \"ACME\"}.".to_owned()),
        Err(e) => Err(format!("Metadata is not valid JSON: {e}. Example: {{\"customer\": \"ACME\", \"year\": 2024}}")),
    }
}

fn bad_id(id: &str) -> UiError {
    UiError::new(404, "No such document", format!("{id:?} is not a document id"))
}

fn parse_id(id: &str) -> Result<Uuid, UiError> {
    id.parse::<Uuid>().map_err(|_| bad_id(id))
}

/// The document's sidecar and the element that holds it, read from the element (`no-cache`)
/// so the page after a write shows it.
async fn fetch_sidecar(state: &UiState, token: &str, id: Uuid) -> Result<(Sidecar, Option<String>), UiError> {
    let resp = state
        .api
        .request(token, Method::GET, &format!("/api/v1/files/{id}"))
        .header(reqwest::header::CACHE_CONTROL, "no-cache")
        .timeout(Duration::from_secs(60))
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(UiError::from_response(resp).await);
    }
    let element = resp.headers().get("artstore-element-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let bytes = resp.bytes().await?;
    let sc = serde_json::from_slice::<Sidecar>(&bytes)
        .map_err(|e| UiError::new(502, "Unexpected answer from the API", format!("the sidecar does not parse: {e}")))?;
    Ok((sc, element))
}

/// Whether the content can be read now (active, or archived with a staged copy ready).
fn readable(sc: &Sidecar) -> bool {
    match sc.state {
        DocState::Active => true,
        DocState::Archived => sc
            .content
            .restore
            .as_ref()
            .is_some_and(|r| r.state == RestoreState::Ready && r.expires_at.is_none_or(|t| t > Utc::now())),
        DocState::Deleted | DocState::Disposed => false,
    }
}

#[derive(Debug, Deserialize)]
struct VersionsAnswer {
    #[serde(default)]
    versions: Vec<Value>,
}

async fn fetch_versions(state: &UiState, token: &str, document_id: Uuid) -> Result<Vec<Sidecar>, UiError> {
    let a: VersionsAnswer = state.api.get(token, &format!("/api/v1/documents/{document_id}/versions")).await?;
    a.versions
        .into_iter()
        .map(serde_json::from_value::<Sidecar>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| UiError::new(502, "Unexpected answer from the API", format!("a version does not parse: {e}")))
}

/// The first [`TEXT_PREVIEW_BYTES`] of the content, and whether there is more.
async fn fetch_text(state: &UiState, token: &str, id: Uuid) -> Result<(String, bool), UiError> {
    let resp = state
        .api
        .request(token, Method::GET, &format!("/api/v1/files/{id}/content"))
        .header(header::RANGE, format!("bytes=0-{}", TEXT_PREVIEW_BYTES - 1))
        .timeout(Duration::from_secs(60))
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(UiError::from_response(resp).await);
    }
    let mut buf: Vec<u8> = Vec::with_capacity(TEXT_PREVIEW_BYTES);
    let mut more = false;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = TEXT_PREVIEW_BYTES - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            more = true;
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((decode_prefix(&buf), more))
}

/// A file's audit trail as `GET /api/v1/files/{id}/audit` answers it.
#[derive(Debug, Deserialize)]
struct Trail {
    #[serde(default)]
    entries: Vec<TrailEntry>,
    /// False when the API's limit cut the list (older changes exist).
    #[serde(default = "yes")]
    complete: bool,
}

fn yes() -> bool {
    true
}

/// One change of the file, a line of its element's audit journal.
#[derive(Debug, Deserialize)]
struct TrailEntry {
    #[serde(default)]
    at: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    revision: Option<u64>,
    #[serde(default)]
    detail: Value,
}

/// The newest changes of the file (the API's default limit), newest first.
async fn fetch_trail(state: &UiState, token: &str, id: Uuid) -> Result<Trail, UiError> {
    state.api.get(token, &format!("/api/v1/files/{id}/audit")).await
}

/// A JSON value as short text: `key: value` pairs, strings unquoted, nulls left out.
fn compact(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(compact).collect::<Vec<_>>().join(", "),
        Value::Object(o) => o
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                Value::Object(_) => format!("{k}: ({})", compact(v)),
                _ => format!("{k}: {}", compact(v)),
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// What a change did, in a few words: the reason of a legal hold, the term of a retention
/// extension, the other details as `key: value`.
pub fn change_detail(action: &str, detail: &Value) -> String {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_owned);
    let term = |v: &Value| {
        let mode = text(v, "mode").unwrap_or_else(|| "none".to_owned());
        match text(v, "retain_until") {
            Some(u) => format!("{mode} until {}", layout::time(&u)),
            None => mode,
        }
    };
    match action {
        "legal_hold_set" | "legal_hold_lifted" => {
            let mut out = match text(detail, "reason") {
                Some(r) => format!("reason: {r}"),
                None => "no reason given".to_owned(),
            };
            if action == "legal_hold_lifted"
                && let Some(was) = text(detail, "was_reason")
            {
                out.push_str(&format!(" (held for: {was})"));
            }
            out
        }
        "retention_extended" => format!("{} (was {})", term(&detail["after"]), term(&detail["before"])),
        _ => compact(detail),
    }
}

/// What the edit form shows after a refused submission: the user's text and the reason.
#[derive(Debug, Default)]
struct Draft {
    tags: String,
    description: String,
    metadata: String,
    error: String,
}

async fn show(State(state): State<UiState>, s: Sess, Path(id): Path<String>) -> Response {
    render(&state, &s, &id, None).await
}

async fn render(state: &UiState, s: &Session, id: &str, draft: Option<Draft>) -> Response {
    if !s.can(Permission::ReadMetadata) {
        return layout::forbidden(s, "Document", Nav::Documents);
    }
    let token = s.token();
    let fetched = match parse_id(id) {
        Ok(id) => fetch_sidecar(state, &token, id).await,
        Err(e) => Err(e),
    };
    let (sc, element) = match fetched {
        Ok((sc, element)) => (sc, element),
        Err(e) => {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = html! {
                (session::error_box(&e))
                p { a href="/documents" { "Back to the documents" } }
            };
            return (status, layout::page(s, "Document", Nav::Documents, body)).into_response();
        }
    };
    let kind = PreviewKind::of(&sc.content_type);
    let can_read = readable(&sc) && s.can(Permission::ReadContent);
    let text = async {
        if can_read && kind == PreviewKind::Text { Some(fetch_text(state, &token, sc.file_id).await) } else { None }
    };
    let audit =
        async { if s.can(Permission::ReadAudit) { Some(fetch_trail(state, &token, sc.file_id).await) } else { None } };
    let (versions, text, audit) = tokio::join!(fetch_versions(state, &token, sc.document_id), text, audit);
    let status = if draft.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let body = html! {
        (actions(s, &sc, can_read))
        (preview_section(&sc, kind, can_read, text))
        (fields_section(&sc, element.as_deref()))
        (versions_section(&sc, versions))
        (edit_section(s, &sc, draft))
        (protection_section(s, &sc))
        (archive_section(s, &sc))
        (audit_section(&sc, element.as_deref(), audit))
    };
    (status, layout::page(s, &sc.original_name, Nav::Documents, body)).into_response()
}

fn doc_path(sc: &Sidecar) -> String {
    format!("/documents/{}", sc.file_id)
}

fn actions(s: &Session, sc: &Sidecar, can_read: bool) -> Markup {
    html! {
        div.actions {
            @if can_read {
                a #download .button href=(format!("{}/download", doc_path(sc))) download { "Download" }
            }
            @if s.can(Permission::Create) && !sc.state.is_tombstone() {
                a #new-version .button.secondary href=(format!("/upload?document_id={}", sc.document_id)) {
                    "Upload a new version"
                }
            }
            a href="/documents" { "Back to the documents" }
        }
    }
}

fn preview_section(
    sc: &Sidecar,
    kind: PreviewKind,
    can_read: bool,
    text: Option<Result<(String, bool), UiError>>,
) -> Markup {
    let src = format!("{}/preview", doc_path(sc));
    html! {
        section #preview-section aria-labelledby="preview-heading" {
            h2 #preview-heading { "Preview" }
            @if sc.state.is_tombstone() {
                p.muted { "The content is gone (" (sc.state.as_str()) "); only this record remains." }
            } @else if !can_read {
                @if sc.state == DocState::Archived {
                    p.muted { "The content is archived in the cold tier. Request a restore below to read it." }
                } @else {
                    p.muted { "Your roles do not allow reading the content." }
                }
            } @else {
                @match kind {
                    PreviewKind::Pdf => {
                        iframe #preview .preview src=(src) title=(format!("Preview of {}", sc.original_name)) {}
                    }
                    PreviewKind::Image => {
                        img #preview .preview src=(src) alt=(format!("Preview of {}", sc.original_name));
                    }
                    PreviewKind::Text => {
                        @match text {
                            Some(Ok((t, more))) => {
                                pre #preview .preview-text tabindex="0" aria-label=(format!("First part of {}", sc.original_name)) { (t) }
                                @if more {
                                    p.muted { "The first " (layout::bytes(TEXT_PREVIEW_BYTES as u64)) " of " (layout::bytes(sc.size)) " are shown. Download the document for the rest." }
                                }
                            }
                            Some(Err(e)) => (session::error_box(&e)),
                            None => {}
                        }
                    }
                    PreviewKind::None => {
                        p.muted { "No preview for " code { (sc.content_type) } "; download the document to open it." }
                    }
                }
            }
        }
    }
}

fn json_pretty(v: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn when(t: &chrono::DateTime<Utc>) -> Markup {
    let s = t.to_rfc3339();
    html! { time datetime=(s) { (layout::time(&s)) } }
}

fn mode_str(m: RetentionMode) -> &'static str {
    match m {
        RetentionMode::None => "none",
        RetentionMode::Governance => "governance",
        RetentionMode::Compliance => "compliance",
    }
}

fn fields_section(sc: &Sidecar, element: Option<&str>) -> Markup {
    let r = &sc.retention;
    let now = Utc::now();
    html! {
        section #details aria-labelledby="details-heading" {
            h2 #details-heading { "Details" }
            dl.fields {
                dt { "Name" } dd { (sc.original_name) }
                dt { "State" } dd { span class=(format!("badge state {}", sc.state.as_str())) { (sc.state.as_str()) } }
                dt { "File id" } dd.mono { (sc.file_id) }
                dt { "Document id" } dd {
                    span.mono { (sc.document_id) } " "
                    a href=(format!("/documents?document_id={}", sc.document_id)) { "search its versions" }
                }
                dt { "Version" } dd { (sc.version) }
                dt { "Revision" } dd { (sc.revision) }
                dt { "Content type" } dd { (sc.content_type) }
                dt { "Size" } dd { (layout::bytes(sc.size)) " (" (sc.size) " bytes)" }
                dt { "SHA-256" } dd.mono { (sc.sha256) }
                dt { "Stored name" } dd.mono { (sc.stored_name) }
                dt { "Storage element" } dd { (element.unwrap_or("unknown")) }
                dt { "Content location" } dd {
                    (json_value_str(&serde_json::to_value(sc.content.location).unwrap_or_default()))
                    @if let Some(rs) = &sc.content.restore {
                        " · restore "
                        (json_value_str(&serde_json::to_value(rs.state).unwrap_or_default()))
                        ", requested " (when(&rs.requested_at)) " by " (rs.requested_by)
                        " for " (rs.days) " days"
                        @if let Some(t) = &rs.ready_at { ", ready " (when(t)) }
                        @if let Some(t) = &rs.expires_at { ", readable until " (when(t)) }
                    }
                }
                dt { "Created" } dd { (when(&sc.created_at)) " by " (sc.created_by) }
                dt { "Updated" } dd { (when(&sc.updated_at)) " by " (sc.updated_by) }
                dt { "Description" } dd {
                    @match sc.description.as_deref().filter(|d| !d.is_empty()) {
                        Some(d) => (d),
                        None => span.muted { "none" },
                    }
                }
                dt { "Tags" } dd {
                    @if sc.tags.is_empty() { span.muted { "none" } }
                    @for (i, t) in sc.tags.iter().enumerate() {
                        @if i > 0 { ", " }
                        a href=(format!("/documents?tag={}", enc(t))) { (t) }
                    }
                }
                dt { "Metadata" } dd {
                    @if sc.metadata.is_empty() { span.muted { "none" } }
                    @else { pre.mono { (json_pretty(&sc.metadata)) } }
                }
                dt { "Retention" } dd {
                    span class=(format!("badge {}", mode_str(r.mode))) { (mode_str(r.mode)) }
                    @if let Some(u) = &r.retain_until {
                        " until " (when(u))
                        @if r.is_under_retention(now) { " (term running)" } @else if r.is_expired(now) { " (term ended)" }
                    }
                }
                dt { "Retention policy" } dd { (r.policy.as_deref().unwrap_or("none")) }
                dt { "Disposition" } dd { (json_value_str(&serde_json::to_value(r.disposition).unwrap_or_default())) }
                dt { "Legal hold" } dd {
                    @if r.legal_hold {
                        span.badge.hold { "Legal hold" }
                        @if let Some(why) = &r.legal_hold_reason { " " (why) }
                    } @else { "no" }
                }
                @if let Some(t) = &sc.tombstone {
                    dt { "Removed" } dd {
                        (when(&t.at)) " by " (t.by) " (" (t.reason) ")"
                        @if t.retention_bypassed { ", governance retention bypassed" }
                    }
                }
                dt { "Sidecar schema" } dd.mono { (sc.schema) }
                @for (k, v) in sc.extra.iter().chain(&sc.retention.extra).chain(&sc.content.extra) {
                    dt { (k) } dd.mono { (json_value_str(v)) }
                }
            }
        }
    }
}

/// A JSON value as text: strings without quotes.
fn json_value_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn versions_section(sc: &Sidecar, versions: Result<Vec<Sidecar>, UiError>) -> Markup {
    html! {
        section #versions aria-labelledby="versions-heading" {
            h2 #versions-heading { "Versions" }
            @match versions {
                Err(e) => (session::error_box(&e)),
                Ok(vs) => {
                    div.table-wrap {
                        table {
                            caption.vh { "Every version of this document" }
                            thead { tr { th { "Version" } th { "Name" } th { "State" } th { "Size" } th { "Created" } th { "By" } th { "Element" } } }
                            tbody {
                                @for v in &vs {
                                    tr {
                                        td {
                                            @if v.file_id == sc.file_id {
                                                strong aria-current="page" { (v.version) " (this one)" }
                                            } @else {
                                                a href=(doc_path(v)) { "Version " (v.version) }
                                            }
                                        }
                                        td { (v.original_name) }
                                        td { span class=(format!("badge state {}", v.state.as_str())) { (v.state.as_str()) } }
                                        td { (layout::bytes(v.size)) }
                                        td { (when(&v.created_at)) }
                                        td { (v.created_by) }
                                        td { (v.extra.get("element_id").map(json_value_str).unwrap_or_default()) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn edit_section(s: &Session, sc: &Sidecar, draft: Option<Draft>) -> Markup {
    if !s.can(Permission::UpdateMetadata) || sc.state.is_tombstone() {
        return html! {};
    }
    let metadata_now = if sc.metadata.is_empty() { String::new() } else { json_pretty(&sc.metadata) };
    let d = draft.unwrap_or_else(|| Draft {
        tags: sc.tags.join(", "),
        description: sc.description.clone().unwrap_or_default(),
        metadata: metadata_now,
        error: String::new(),
    });
    html! {
        section #edit aria-labelledby="edit-heading" {
            h2 #edit-heading { "Description, tags and metadata" }
            @if !d.error.is_empty() {
                div #edit-error .msg.err role="alert" { (d.error) }
            }
            form #edit-form .grid-form method="post" action=(format!("{}/metadata", doc_path(sc))) {
                (layout::csrf(s))
                input type="hidden" name="metadata_was" value=(serde_json::to_string(&sc.metadata).unwrap_or_default());
                label for="tags" { "Tags" }
                input #tags name="tags" value=(d.tags) aria-describedby="tags-help";
                small #tags-help .full.muted { "Separated by commas." }
                label for="description" { "Description" }
                textarea #description name="description" rows="3" { (d.description) }
                label for="metadata" { "Metadata (JSON object)" }
                textarea #metadata .mono name="metadata" rows="6" aria-describedby="metadata-help"
                    aria-invalid=[(!d.error.is_empty()).then_some("true")] { (d.metadata) }
                small #metadata-help .full.muted { "For example {\"customer\": \"ACME\", \"year\": 2024}. Keys you remove are removed." }
                div.full { button type="submit" { "Save changes" } }
            }
        }
    }
}

fn protection_section(s: &Session, sc: &Sidecar) -> Markup {
    if sc.state.is_tombstone() {
        return html! {};
    }
    let r = &sc.retention;
    let set_hold = !r.legal_hold && s.can(Permission::Protect);
    let lift_hold = r.legal_hold && s.can(Permission::LiftLegalHold);
    let extend = s.can(Permission::Protect);
    if !(set_hold || lift_hold || extend) {
        return html! {};
    }
    let tomorrow = (Utc::now() + chrono::Duration::days(1)).date_naive();
    // The earliest day that extends the term (a date is kept from 00:00 UTC).
    let min = r
        .retain_until
        .map(|u| u.date_naive() + chrono::Duration::days(1))
        .filter(|d| *d > tomorrow)
        .unwrap_or(tomorrow);
    html! {
        section #protection aria-labelledby="protection-heading" {
            h2 #protection-heading { "Legal hold and retention" }
            @if set_hold {
                form #hold-form .inline-form method="post" action=(format!("{}/legal-hold", doc_path(sc))) {
                    (layout::csrf(s))
                    input type="hidden" name="enabled" value="true";
                    label for="hold-reason" { "Reason" }
                    input #hold-reason name="reason" required size="40" placeholder="e.g. litigation 2026-17";
                    button type="submit" { "Set legal hold" }
                }
                p.muted { small { "A hold blocks deletion and disposition until it is lifted. The reason is kept in the document's sidecar while the hold stands, and in the element's journal." } }
            }
            @if lift_hold {
                form #hold-form .inline-form method="post" action=(format!("{}/legal-hold", doc_path(sc)))
                    data-confirm="Lift the legal hold of this document?" {
                    (layout::csrf(s))
                    input type="hidden" name="enabled" value="false";
                    label for="lift-reason" { "Reason" }
                    input #lift-reason name="reason" size="40";
                    button.danger type="submit" { "Lift legal hold" }
                }
            } @else if r.legal_hold {
                p { span.badge.hold { "Legal hold" } " Lifting it needs the admin role or the legal-hold:lift permission." }
            }
            @if extend {
                form #retention-form .inline-form method="post" action=(format!("{}/retention", doc_path(sc))) {
                    (layout::csrf(s))
                    label for="retain-until" { "Keep until" }
                    input #retain-until type="date" name="retain_until" required min=(min.format("%Y-%m-%d").to_string())
                        aria-describedby="retention-help";
                    @if r.mode != RetentionMode::Compliance {
                        label for="retention-mode" { "Mode" }
                        select #retention-mode name="mode" {
                            option value="" { "keep " (mode_str(r.mode)) }
                            @if r.mode == RetentionMode::None { option value="governance" { "governance" } }
                            option value="compliance" { "compliance (cannot be undone)" }
                        }
                    }
                    button type="submit" { "Extend retention" }
                }
                p #retention-help .muted {
                    small {
                        @match r.retain_until {
                            Some(u) => { "Kept until " (when(&u)) " now. " }
                            None => { "No retention date yet. " }
                        }
                        "Retention can only be extended, never shortened; the new date is kept from 00:00 UTC."
                    }
                }
            }
        }
    }
}

fn archive_section(s: &Session, sc: &Sidecar) -> Markup {
    if sc.state != DocState::Archived {
        return html! {};
    }
    let restore = sc.content.restore.as_ref();
    html! {
        section #archive aria-labelledby="archive-heading" {
            h2 #archive-heading { "Archive" }
            p #restore-state {
                span.badge.archived { "archived" } " "
                @match restore {
                    None => "The content is in the cold tier; no restore has been requested.",
                    Some(r) if r.state == RestoreState::Staging => {
                        "A restore is under way (requested " (when(&r.requested_at)) " by " (r.requested_by) ")."
                    }
                    Some(r) => {
                        "A staged copy is readable"
                        @if let Some(t) = &r.expires_at { " until " (when(t)) }
                        "."
                    }
                }
            }
            @if s.can(Permission::Restore) {
                form #restore-form .inline-form method="post" action=(format!("{}/restore", doc_path(sc))) {
                    (layout::csrf(s))
                    label for="restore-days" { "Readable for (days)" }
                    input #restore-days type="number" name="days" min="1" max="365" value="7" required;
                    button type="submit" { "Request restore" }
                }
            }
        }
    }
}

fn audit_section(sc: &Sidecar, element: Option<&str>, trail: Option<Result<Trail, UiError>>) -> Markup {
    let element = element.unwrap_or("that holds it");
    html! {
        section #audit aria-labelledby="audit-heading" {
            h2 #audit-heading { "Audit trail" }
            p {
                "Created " (when(&sc.created_at)) " by " (sc.created_by)
                "; last changed " (when(&sc.updated_at)) " by " (sc.updated_by) " (revision " (sc.revision) ")."
            }
            @match trail {
                None => p.muted { "Your roles do not include reading the audit trail." },
                Some(Err(e)) => (session::error_box(&e)),
                Some(Ok(t)) if t.entries.is_empty() => p.muted {
                    "The audit journal of element " (element) " has no entries for this document."
                },
                Some(Ok(t)) => {
                    div.table-wrap {
                        table #audit-trail {
                            caption.vh { "Every change of this document, newest first" }
                            thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Revision" } th { "Detail" } } }
                            tbody {
                                @for e in &t.entries {
                                    tr {
                                        td { time datetime=(e.at) { (layout::time(&e.at)) } }
                                        td { (e.actor) }
                                        td { (e.action.replace('_', " ")) }
                                        td { @if let Some(r) = e.revision { (r) } }
                                        td { (change_detail(&e.action, &e.detail)) }
                                    }
                                }
                            }
                        }
                    }
                    p.muted {
                        @if !t.complete { "The newest " (t.entries.len()) " changes are shown. " }
                        "From the hash-chained audit journal of element " (element) "."
                    }
                }
            }
        }
    }
}

/// The content, streamed from the API with the headers a download or a preview needs.
async fn stream_content(
    state: &UiState,
    s: &Session,
    id: Uuid,
    request_headers: &HeaderMap,
) -> Result<reqwest::Response, UiError> {
    let mut rb = state.api.request(&s.token(), Method::GET, &format!("/api/v1/files/{id}/content"));
    for h in [header::RANGE, header::IF_RANGE] {
        if let Some(v) = request_headers.get(&h) {
            rb = rb.header(h, v.clone());
        }
    }
    let resp = rb.send().await?;
    if !resp.status().is_success() {
        return Err(UiError::from_response(resp).await);
    }
    Ok(resp)
}

fn streamed(resp: reqwest::Response, content_type: &str, disposition: &str, extra: &[(&str, &str)]) -> Response {
    let mut b = Response::builder().status(resp.status().as_u16());
    for h in [header::CONTENT_LENGTH, header::CONTENT_RANGE, header::ACCEPT_RANGES, header::ETAG, header::LAST_MODIFIED]
    {
        if let Some(v) = resp.headers().get(&h) {
            b = b.header(h, v.clone());
        }
    }
    b = b
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
        )
        .header(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(disposition).unwrap_or(HeaderValue::from_static("attachment")),
        );
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(Body::from_stream(resp.bytes_stream())).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// `GET /documents/{id}/download`: the content as an attachment, streamed (ranges pass).
async fn download(State(state): State<UiState>, s: Sess, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let back = format!("/documents/{}", enc(&id));
    let r = async {
        let id = parse_id(&id)?;
        let (sc, _) = fetch_sidecar(&state, &s.token(), id).await?;
        let resp = stream_content(&state, &s, id, &headers).await?;
        let ct = if sc.content_type.is_empty() { "application/octet-stream" } else { sc.content_type.as_str() };
        Ok::<_, UiError>(streamed(resp, ct, &content_disposition("attachment", &sc.original_name), &[]))
    };
    match r.await {
        Ok(resp) => resp,
        Err(e) => {
            s.flash(false, format!("The download failed. {}", e.message()));
            Redirect::to(&back).into_response()
        }
    }
}

/// `GET /documents/{id}/preview`: PDF and raster images inline, under a policy that lets
/// nothing run; every other type is refused.
async fn preview(State(state): State<UiState>, s: Sess, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let r = async {
        let id = parse_id(&id)?;
        let (sc, _) = fetch_sidecar(&state, &s.token(), id).await?;
        let kind = PreviewKind::of(&sc.content_type);
        if !kind.inline() {
            return Err(UiError::new(415, "No inline preview", format!("{} is not shown inline", sc.content_type)));
        }
        let resp = stream_content(&state, &s, id, &headers).await?;
        Ok(streamed(
            resp,
            &base_type(&sc.content_type),
            &content_disposition("inline", &sc.original_name),
            &[(header::CONTENT_SECURITY_POLICY.as_str(), crate::PREVIEW_CSP), ("cache-control", "private, no-store")],
        ))
    };
    match r.await {
        Ok(resp) => resp,
        Err(e) => {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], e.message()).into_response()
        }
    }
}

/// `POST /documents/{id}/metadata`: `tags`, `description`, `metadata` (JSON), and
/// `metadata_was` (what the form showed) → a merge patch of only what changed.
async fn edit_metadata(State(state): State<UiState>, s: Sess, Path(id): Path<String>, f: Fields) -> Response {
    let back = format!("/documents/{}", enc(&id));
    if !s.can(Permission::UpdateMetadata) {
        return super::not_allowed(&s, "change a document's description, tags or metadata", &back);
    }
    let Ok(uuid) = parse_id(&id) else {
        return super::done(&s, Err(bad_id(&id)), "/documents");
    };
    let metadata_text = f.0.iter().find(|(k, _)| k == "metadata").map(|(_, v)| v.clone()).unwrap_or_default();
    let new_meta = match parse_metadata(&metadata_text) {
        Ok(m) => m,
        Err(error) => {
            let draft = Draft {
                tags: f.text("tags"),
                description: f.0.iter().find(|(k, _)| k == "description").map(|(_, v)| v.clone()).unwrap_or_default(),
                metadata: metadata_text,
                error,
            };
            return render(&state, &s, &id, Some(draft)).await;
        }
    };
    let token = s.token();
    let old_meta = match f.get("metadata_was").and_then(|t| serde_json::from_str::<Map<String, Value>>(t).ok()) {
        Some(m) => m,
        None => match fetch_sidecar(&state, &token, uuid).await {
            Ok((sc, _)) => sc.metadata,
            Err(e) => return super::done(&s, Err(e), &back),
        },
    };
    let mut patch = Map::new();
    patch.insert("description".into(), f.get("description").map_or(Value::Null, |d| json!(d)));
    patch.insert("tags".into(), json!(split_tags(&f.text("tags"))));
    let diff = merge_diff(&old_meta, &new_meta);
    if !diff.is_empty() {
        patch.insert("metadata".into(), Value::Object(diff));
    }
    let r =
        state.api.send(&token, Method::PATCH, &format!("/api/v1/files/{uuid}"), Some(&Value::Object(patch))).await.map(
            |v| match v["revision"].as_u64() {
                Some(rev) => format!("Saved the description, tags and metadata (revision {rev})."),
                None => "Saved the description, tags and metadata.".to_owned(),
            },
        );
    super::done(&s, r, &back)
}

/// `POST /documents/{id}/legal-hold`: `enabled` (`true`/`false`) and `reason`.
async fn legal_hold(State(state): State<UiState>, s: Sess, Path(id): Path<String>, f: Fields) -> Response {
    let back = format!("/documents/{}", enc(&id));
    let enable = f.get("enabled") == Some("true");
    let (perm, what) = if enable {
        (Permission::Protect, "set a legal hold")
    } else {
        (Permission::LiftLegalHold, "lift a legal hold")
    };
    if !s.can(perm) {
        return super::not_allowed(&s, what, &back);
    }
    let Ok(uuid) = parse_id(&id) else {
        return super::done(&s, Err(bad_id(&id)), "/documents");
    };
    let reason = f.text("reason");
    if enable && reason.is_empty() {
        s.flash(false, "Give a reason for the legal hold.");
        return Redirect::to(&back).into_response();
    }
    let body = json!({"enabled": enable, "reason": reason});
    let r = state.api.send(&s.token(), Method::PUT, &format!("/api/v1/files/{uuid}/legal-hold"), Some(&body)).await;
    if r.is_ok() {
        tracing::info!(user = %s.user, file = %uuid, enabled = enable, reason = %reason, "legal hold changed from the UI");
    }
    let r = r.map(|_| {
        let said = if reason.is_empty() { String::new() } else { format!(" Reason: {reason}.") };
        if enable { format!("Legal hold set.{said}") } else { format!("Legal hold lifted.{said}") }
    });
    super::done(&s, r, &back)
}

/// The retention date of the form (a calendar day) as the API's RFC 3339 instant.
pub fn retain_until_of(day: &str) -> Result<String, String> {
    let d = NaiveDate::parse_from_str(day.trim(), "%Y-%m-%d")
        .map_err(|_| format!("{day:?} is not a date; choose one in the calendar (YYYY-MM-DD)."))?;
    Ok(format!("{}T00:00:00Z", d.format("%Y-%m-%d")))
}

/// `POST /documents/{id}/retention`: `retain_until` (a date) and an optional stronger `mode`.
async fn extend_retention(State(state): State<UiState>, s: Sess, Path(id): Path<String>, f: Fields) -> Response {
    let back = format!("/documents/{}", enc(&id));
    if !s.can(Permission::Protect) {
        return super::not_allowed(&s, "extend a retention", &back);
    }
    let Ok(uuid) = parse_id(&id) else {
        return super::done(&s, Err(bad_id(&id)), "/documents");
    };
    let until = match retain_until_of(&f.text("retain_until")) {
        Ok(u) => u,
        Err(m) => {
            s.flash(false, m);
            return Redirect::to(&back).into_response();
        }
    };
    let mut body = json!({"retain_until": until});
    if let Some(m) = f.get("mode").filter(|m| matches!(*m, "governance" | "compliance")) {
        body["mode"] = json!(m);
    }
    let r = state
        .api
        .send(&s.token(), Method::PUT, &format!("/api/v1/files/{uuid}/retention"), Some(&body))
        .await
        .map(|_| format!("Retention extended until {}.", layout::time(&until)));
    super::done(&s, r, &back)
}

/// `POST /documents/{id}/restore`: `days` the staged copy stays readable.
async fn restore(State(state): State<UiState>, s: Sess, Path(id): Path<String>, f: Fields) -> Response {
    let back = format!("/documents/{}", enc(&id));
    if !s.can(Permission::Restore) {
        return super::not_allowed(&s, "restore archived content", &back);
    }
    let Ok(uuid) = parse_id(&id) else {
        return super::done(&s, Err(bad_id(&id)), "/documents");
    };
    let days = match f.get("days").map(str::parse::<u32>) {
        None => 7,
        Some(Ok(d)) if (1..=3650).contains(&d) => d,
        Some(_) => {
            s.flash(false, "The number of days must be a whole number from 1.");
            return Redirect::to(&back).into_response();
        }
    };
    let r = state
        .api
        .send(&s.token(), Method::POST, &format!("/api/v1/files/{uuid}/restore"), Some(&json!({"days": days})))
        .await
        .map(|v| {
            let restore = &v["content"]["restore"];
            match restore["state"].as_str() {
                Some("ready") => match restore["expires_at"].as_str() {
                    Some(t) => format!("The content is readable until {}.", layout::time(t)),
                    None => "The content is readable.".to_owned(),
                },
                _ => format!(
                    "Restore requested: the content is being staged from the cold tier and stays readable for {days} days once ready."
                ),
            }
        });
    super::done(&s, r, &back)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_harmless_types_are_inline() {
        assert_eq!(PreviewKind::of("application/pdf"), PreviewKind::Pdf);
        assert_eq!(PreviewKind::of("IMAGE/PNG"), PreviewKind::Image);
        assert_eq!(PreviewKind::of("image/svg+xml"), PreviewKind::Text, "SVG source is shown escaped, never run");
        assert_eq!(PreviewKind::of("text/html; charset=utf-8"), PreviewKind::Text);
        assert_eq!(PreviewKind::of("application/octet-stream"), PreviewKind::None);
        assert!(!PreviewKind::of("text/html").inline());
        assert!(!PreviewKind::of("image/svg+xml").inline());
        assert!(PreviewKind::of("image/webp").inline());
    }

    #[test]
    fn file_names_survive_the_header() {
        assert_eq!(
            content_disposition("attachment", "Отчёт \"2024\".pdf"),
            "attachment; filename=\"_____ _2024_.pdf\"; filename*=UTF-8''%D0%9E%D1%82%D1%87%D1%91%D1%82%20%222024%22.pdf"
        );
        assert!(HeaderValue::from_str(&content_disposition("inline", "a\r\nb")).is_ok());
        assert_eq!(content_disposition("inline", "€"), "inline; filename=\"_\"; filename*=UTF-8''%E2%82%AC");
    }

    #[test]
    fn a_cut_character_is_dropped() {
        let s = "aé".as_bytes();
        assert_eq!(decode_prefix(&s[..2]), "a");
        assert_eq!(decode_prefix(s), "aé");
        assert_eq!(decode_prefix(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn the_merge_patch_removes_what_was_removed() {
        let old = json!({"a": 1, "b": {"x": 1, "y": 2}, "c": "same"});
        let new = json!({"b": {"x": 1, "z": 3}, "c": "same", "d": [1]});
        let patch = merge_diff(old.as_object().unwrap(), new.as_object().unwrap());
        assert_eq!(Value::Object(patch), json!({"a": null, "b": {"y": null, "z": 3}, "d": [1]}));
        assert!(merge_diff(old.as_object().unwrap(), old.as_object().unwrap()).is_empty());
    }

    #[test]
    fn metadata_errors_read_well() {
        assert!(parse_metadata("").unwrap().is_empty());
        assert_eq!(parse_metadata(r#"{"k": 1}"#).unwrap()["k"], 1);
        assert!(parse_metadata("[1]").unwrap_err().contains("JSON object"));
        let e = parse_metadata("{\"k\": }").unwrap_err();
        assert!(e.starts_with("Metadata is not valid JSON") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn a_change_reads_in_a_few_words() {
        let hold = json!({"was": false, "now": true, "reason": "case 2026-17", "was_reason": null});
        assert_eq!(change_detail("legal_hold_set", &hold), "reason: case 2026-17");
        let lift = json!({"was": true, "now": false, "reason": null, "was_reason": "case 2026-17"});
        assert_eq!(change_detail("legal_hold_lifted", &lift), "no reason given (held for: case 2026-17)");
        let ext = json!({"before": {"mode": "governance", "retain_until": null},
                         "after": {"mode": "compliance", "retain_until": "2031-05-06T00:00:00Z"}});
        assert_eq!(change_detail("retention_extended", &ext), "compliance until 2031-05-06 00:00 UTC (was governance)");
        assert_eq!(change_detail("update", &json!({"changed": ["description", "tags"]})), "changed: description, tags");
        assert_eq!(change_detail("archive", &Value::Null), "");
    }

    fn sidecar(id: Uuid) -> Value {
        json!({
            "schema": "artstore/sidecar/v1", "file_id": id, "document_id": id, "version": 1, "revision": 3,
            "state": "active", "original_name": "minutes.txt", "stored_name": format!("minutes_{id}"),
            "content_type": "application/octet-stream", "size": 5,
            "sha256": "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7",
            "created_at": "2026-01-02T03:04:05Z", "created_by": "tester", "updated_at": "2026-01-03T03:04:05Z",
            "updated_by": "ann", "tags": [], "metadata": {},
            "retention": {"mode": "none", "legal_hold": true, "legal_hold_reason": "case 2026-17", "disposition": "dispose"},
            "content": {"location": "hot"}
        })
    }

    /// A fake API holding one document whose audit trail answers `trail`.
    async fn api_with_trail(id: Uuid, trail: Result<Value, u16>, roles: &'static str) -> String {
        use axum::response::IntoResponse as _;
        let sc = sidecar(id);
        let sc2 = sc.clone();
        let api = Router::new()
            .route("/api/v1/files/{id}", get(move || async move { axum::Json(sc) }))
            .route("/api/v1/documents/{id}/versions", get(move || async move { axum::Json(json!({"versions": [sc2]})) }))
            .route(
                "/api/v1/files/{id}/audit",
                get(move || async move {
                    match trail {
                        Ok(v) => axum::Json(v).into_response(),
                        Err(status) => {
                            let p = json!({"title": "Forbidden", "detail": "this needs the auditor, operator or admin role"});
                            (StatusCode::from_u16(status).unwrap(), axum::Json(p)).into_response()
                        }
                    }
                }),
            );
        crate::pages::testkit::fake_api(api, roles).await
    }

    #[tokio::test]
    async fn the_audit_trail_lists_every_change_for_those_who_may_read_it() {
        use crate::pages::testkit::Client;
        let id = Uuid::now_v7();
        let trail = json!({"file_id": id, "complete": false, "scanned_bytes": 900, "entries": [
            {"seq": 3, "at": "2026-01-03T03:04:05Z", "actor": "ann", "action": "legal_hold_set", "file_id": id,
             "revision": 3, "detail": {"was": false, "now": true, "reason": "case <2026-17>"}},
            {"seq": 2, "at": "2026-01-02T04:00:00Z", "actor": "ann", "action": "update", "file_id": id,
             "revision": 2, "detail": {"changed": ["description"]}},
            {"seq": 1, "at": "2026-01-02T03:04:05Z", "actor": "tester", "action": "create", "file_id": id,
             "revision": 1, "detail": {"version": 1, "size": 5}},
        ]});
        let mut c = Client::signed_in(&api_with_trail(id, Ok(trail), "auditor").await).await;
        let page = c.get(&format!("/documents/{id}")).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let table = &page.body[page.body.find("id=\"audit-trail\"").expect("a trail table")..];
        let (hold, update, create) = (
            table.find("legal hold set").unwrap(),
            table.find("changed: description").unwrap(),
            table.find("version: 1, size: 5").unwrap(),
        );
        assert!(hold < update && update < create, "newest first");
        assert!(table.contains("reason: case &lt;2026-17&gt;"), "the reason, escaped");
        assert!(table.contains("2026-01-03 03:04 UTC") && table.contains("<td>ann</td>"));
        assert!(page.body.contains("The newest 3 changes are shown."));

        // Without the permission the page says so and does not ask.
        let mut c = Client::signed_in(&api_with_trail(id, Err(500), "reader").await).await;
        let page = c.get(&format!("/documents/{id}")).await;
        assert!(page.body.contains("Your roles do not include reading the audit trail."), "{}", page.body);
        assert!(!page.body.contains("audit-trail"));

        // A refusal by the API is shown as its problem.
        let mut c = Client::signed_in(&api_with_trail(id, Err(403), "operator").await).await;
        let page = c.get(&format!("/documents/{id}")).await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("Forbidden: this needs the auditor, operator or admin role"), "{}", page.body);
    }

    #[test]
    fn tags_and_dates_from_the_form() {
        assert_eq!(split_tags(" a, b,,a\nc "), vec!["a", "b", "c"]);
        assert_eq!(retain_until_of("2031-05-06").unwrap(), "2031-05-06T00:00:00Z");
        assert!(retain_until_of("06.05.2031").is_err());
    }
}
