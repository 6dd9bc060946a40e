//! One document's page: its routes, the page that assembles the sections (`view`), and the
//! API reads it is built from (sidecar, versions, text preview, audit trail).

mod content;
mod forms;
mod view;

use crate::UiState;
use crate::api::UiError;
use crate::layout::{self, Nav};
use crate::session::{self, Sess, Session};
use artstore_shared::auth::Permission;
use artstore_shared::sidecar::{DocState, RestoreState, Sidecar};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use content::{PreviewKind, TEXT_PREVIEW_BYTES, decode_prefix, download, preview};
use forms::{edit_metadata, extend_retention, legal_hold, restore};
use futures_util::StreamExt as _;
use maud::html;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;
use view::{
    actions, archive_section, audit_section, edit_section, fields_section, preview_section, protection_section,
    versions_section,
};

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
