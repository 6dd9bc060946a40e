//! The upload page. With JavaScript (`static/upload.js`) every file goes up by tus 1.0.0
//! through the proxy at `/upload/tus`, resumable and with progress; without it the form
//! posts multipart to `/upload`, which streams each file to `POST /api/v1/files`.

use crate::UiState;
use crate::api::{UiError, enc};
use crate::layout::{self, Nav};
use crate::session::{CSRF_FIELD, Sess, Session, constant_eq};
use artstore_shared::auth::Permission;
use artstore_shared::upload::check_field;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use maud::{Markup, html};
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/upload", get(page).post(post_form).layer(DefaultBodyLimit::disable()))
        .route("/upload/tus", post(tus_create))
        .route("/upload/tus/{id}", get(tus_status).head(tus_head).patch(tus_patch).delete(tus_delete))
}

/// Bytes per tus `PATCH` unless the page asks for another size.
pub const CHUNK: usize = 1 << 20;

/// The form's text fields the API takes, in the order the page shows them.
pub const UPLOAD_FIELDS: &[&str] = &["retention_policy", "tags", "description", "metadata", "document_id"];

#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    document_id: Option<String>,
    /// A smaller chunk size for tests (bytes).
    chunk: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct Policies {
    #[serde(default)]
    items: Vec<Policy>,
}

#[derive(Debug, Deserialize)]
struct Policy {
    name: String,
    #[serde(default)]
    term: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    disposition: String,
    #[serde(default)]
    description: String,
}

/// `GET /upload[?document_id=…]`.
async fn page(State(state): State<UiState>, s: Sess, RawQuery(qs): RawQuery) -> Response {
    if !s.can(Permission::Create) {
        return layout::forbidden(&s, "Upload", Nav::Upload);
    }
    let q: PageQuery = serde_urlencoded::from_str(qs.as_deref().unwrap_or("")).unwrap_or_default();
    let policies = state.api.get::<Policies>(&s.token(), "/api/v1/retention-policies").await;
    let document_id = q.document_id.as_deref().and_then(|d| d.trim().parse::<Uuid>().ok());
    let chunk = q.chunk.unwrap_or(CHUNK).clamp(1024, 64 << 20);
    layout::page(&s, "Upload", Nav::Upload, form(&s, policies, document_id, chunk)).into_response()
}

fn form(s: &Session, policies: Result<Policies, UiError>, document_id: Option<Uuid>, chunk: usize) -> Markup {
    html! {
        @if let Some(d) = document_id {
            p.msg.warn {
                "These files become new versions of document " code { (d) } ". "
                a href=(format!("/documents?document_id={d}")) { "See its versions" }
            }
        }
        @if let Err(e) = &policies {
            div.msg.warn role="status" { "The retention policies could not be listed: " (e.message()) }
        }
        form #upload .grid-form method="post" action="/upload" enctype="multipart/form-data" data-chunk=(chunk) {
            (layout::csrf(s))
            label for="retention_policy" { "Retention policy" }
            select #retention_policy name="retention_policy" aria-describedby="policy-help" {
                option value="" { "none" }
                @if let Ok(p) = &policies {
                    @for p in &p.items {
                        option value=(p.name) {
                            (p.name) " — " (p.term) ", " (p.mode) ", " (p.disposition)
                            @if !p.description.is_empty() { " (" (p.description) ")" }
                        }
                    }
                }
            }
            small #policy-help .full.muted { "The policy decides how long the archive must keep the files and what happens after." }
            label for="tags" { "Tags" }
            input #tags name="tags" placeholder="finance, contracts" aria-describedby="tags-help";
            small #tags-help .full.muted { "Separated by commas." }
            label for="description" { "Description" }
            textarea #description name="description" rows="2" {}
            label for="metadata" { "Metadata (JSON object)" }
            textarea #metadata .mono name="metadata" rows="4" placeholder="{\"customer\": \"ACME\"}" {}
            label for="document_id" { "New version of document" }
            input #document_id name="document_id" value=[document_id] placeholder="document id (optional)"
                pattern="[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                aria-describedby="document-id-help";
            small #document-id-help .full.muted { "Leave empty for new documents." }
            div #dropzone .dropzone .full {
                p { "Drop files here, or choose them:" }
                label for="files" { "Files" }
                " "
                input #files type="file" name="file" multiple required;
                p #chosen .muted aria-live="polite" {}
            }
            div #upload-message .full aria-live="assertive" {}
            div.full { button #start type="submit" { "Start upload" } }
        }
        p #resume-hint .muted hidden {}
        h2 { "Uploads" }
        ul #uploads .uploads aria-label="Uploads" {}
        script src="/static/upload.js" defer {}
    }
}

/// One stored file of a form post.
struct Stored {
    name: String,
    file_id: String,
    version: Option<u64>,
}

/// `POST /upload` (multipart, without JavaScript): the text fields come first in the
/// form, then each `file` part is streamed to `POST /api/v1/files` with them.
async fn post_form(State(state): State<UiState>, s: Sess, mut mp: Multipart) -> Response {
    if !s.can(Permission::Create) {
        return super::not_allowed(&s, "upload documents", "/upload");
    }
    let mut csrf_ok = false;
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut stored: Vec<Stored> = Vec::new();
    let mut failed = 0;
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                problems.push(format!("The form did not arrive whole: {}", e.body_text()));
                break;
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == CSRF_FIELD {
            let t = field.text().await.unwrap_or_default();
            csrf_ok = !s.csrf.is_empty() && constant_eq(t.as_bytes(), s.csrf.as_bytes());
        } else if name == "file" {
            let filename = field.file_name().unwrap_or_default().to_owned();
            if filename.is_empty() {
                continue;
            }
            if !csrf_ok {
                return (StatusCode::FORBIDDEN, "This form has expired or did not come from this site (CSRF check failed). Reload the page and try again.").into_response();
            }
            if !problems.is_empty() {
                break;
            }
            match stream_file(&state, &s.token(), &fields, &filename, field).await {
                Ok(v) => stored.push(Stored {
                    name: filename,
                    file_id: v["file_id"].as_str().unwrap_or_default().to_owned(),
                    version: v["version"].as_u64(),
                }),
                Err(e) => {
                    failed += 1;
                    s.flash(false, format!("{filename} was not stored. {}", e.message()));
                }
            }
        } else if UPLOAD_FIELDS.contains(&name.as_str()) {
            let v = field.text().await.unwrap_or_default();
            if v.trim().is_empty() {
                continue;
            }
            match check_field(&name, &v) {
                Ok(()) => fields.push((name, v)),
                Err(e) => problems.push(format!("{}{}.", e[..1].to_uppercase(), &e[1..])),
            }
        }
    }
    let again = match fields.iter().find(|(k, _)| k == "document_id") {
        Some((_, d)) => format!("/upload?document_id={}", enc(d.trim())),
        None => "/upload".to_owned(),
    };
    for p in &problems {
        s.flash(false, p.clone());
    }
    if stored.is_empty() && failed == 0 && problems.is_empty() {
        s.flash(false, "Choose at least one file.");
    }
    for f in &stored {
        let v = f.version.map(|v| format!(" as version {v}")).unwrap_or_default();
        s.flash(true, format!("Stored {}{v} (file {}).", f.name, f.file_id));
    }
    match stored.as_slice() {
        [one] if failed == 0 && problems.is_empty() && !one.file_id.is_empty() => {
            Redirect::to(&format!("/documents/{}", enc(&one.file_id))).into_response()
        }
        _ => Redirect::to(&again).into_response(),
    }
}

/// Whether a browser's content type can be passed on as it is.
fn plain_media_type(ct: &str) -> bool {
    let base = ct.split(';').next().unwrap_or("");
    match base.split_once('/') {
        Some((t, sub)) => {
            let ok =
                |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
            ok(t) && ok(sub)
        }
        None => false,
    }
}

/// Streams one file part to `POST /api/v1/files` with the text fields; the API's answer.
async fn stream_file(
    state: &UiState,
    token: &str,
    fields: &[(String, String)],
    filename: &str,
    mut field: axum::extract::multipart::Field<'_>,
) -> Result<Value, UiError> {
    let ct = field.content_type().filter(|c| plain_media_type(c)).unwrap_or("application/octet-stream").to_owned();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(body))
        .file_name(filename.to_owned())
        .mime_str(&ct)?;
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in fields {
        form = form.text(k.clone(), v.clone());
    }
    form = form.part("file", part);
    let sending = tokio::spawn(state.api.request(token, Method::POST, "/api/v1/files").multipart(form).send());
    let mut broken = None;
    loop {
        match field.chunk().await {
            Ok(Some(c)) => {
                if tx.send(Ok(c)).await.is_err() {
                    // The API stopped reading: its answer says why.
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                let text = e.body_text();
                let _ = tx.send(Err(std::io::Error::other(text.clone()))).await;
                broken = Some(text);
                break;
            }
        }
    }
    drop(tx);
    let resp = sending.await.map_err(|e| UiError::new(500, "The upload was interrupted", e.to_string()))?;
    if let Some(b) = broken {
        return Err(UiError::new(400, "The file did not arrive whole", b));
    }
    let resp = resp?;
    if !resp.status().is_success() {
        return Err(UiError::from_response(resp).await);
    }
    Ok(resp.json().await?)
}

/// Request headers the tus proxy passes to the API.
const TUS_REQUEST: &[&str] = &[
    "tus-resumable",
    "upload-length",
    "upload-metadata",
    "upload-offset",
    "upload-checksum",
    "upload-defer-length",
    "content-type",
    "content-length",
    "idempotency-key",
];

/// Response headers the tus proxy passes back (`Location` is rewritten).
const TUS_RESPONSE: &[&str] = &[
    "tus-resumable",
    "tus-version",
    "tus-extension",
    "tus-max-size",
    "tus-checksum-algorithm",
    "upload-offset",
    "upload-length",
    "upload-expires",
    "upload-metadata",
    "artstore-file-id",
    "artstore-element-id",
    "content-type",
    "retry-after",
    "idempotent-replayed",
];

/// The UI's address of an upload whose API address is `location`.
pub fn rewrite_location(location: &str) -> Option<String> {
    let (_, rest) = location.split_once("/api/v1/uploads/")?;
    let id = rest.split(['?', '#', '/']).next()?;
    let id: Uuid = id.parse().ok()?;
    Some(format!("/upload/tus/{id}"))
}

/// `Upload-Metadata` from (key, value) pairs: `key base64(value)`, comma-separated; blank
/// values are left out. `upload.js` builds the same.
pub fn encode_upload_metadata<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k} {}", B64.encode(v.as_bytes())))
        .collect::<Vec<_>>()
        .join(",")
}

/// The (key, value) pairs of an `Upload-Metadata` header; values that are not base64 UTF-8
/// are left out.
pub fn decode_upload_metadata(raw: &str) -> Vec<(String, String)> {
    raw.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .filter_map(|pair| match pair.split_once(' ') {
            Some((k, v)) => {
                let bytes = B64.decode(v.trim()).ok()?;
                Some((k.to_owned(), String::from_utf8(bytes).ok()?))
            }
            None => Some((pair.to_owned(), String::new())),
        })
        .collect()
}

fn tus_refusal(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = serde_json::json!({"title": title, "detail": detail, "status": status.as_u16()});
    (
        status,
        [
            (header::CONTENT_TYPE, "application/problem+json"),
            (header::HeaderName::from_static("tus-resumable"), "1.0.0"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// Sends the browser's tus request to the API with the user's token and streams the answer
/// back, both ways with the tus headers.
async fn tus_forward(state: &UiState, s: &Session, method: Method, path: &str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut rb = state.api.request(&s.token(), method.clone(), path);
    for h in TUS_REQUEST {
        if let Some(v) = parts.headers.get(*h) {
            rb = rb.header(*h, v.clone());
        }
    }
    let streams_bytes = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/offset+octet-stream"));
    if streams_bytes {
        rb = rb.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    } else if method != Method::PATCH {
        rb = rb.timeout(Duration::from_secs(60));
    }
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => {
            return tus_refusal(StatusCode::BAD_GATEWAY, "The ArtStore API could not be reached", &e.to_string());
        }
    };
    let mut out = Response::builder().status(resp.status().as_u16());
    for h in TUS_RESPONSE {
        if let Some(v) = resp.headers().get(*h) {
            out = out.header(*h, v.clone());
        }
    }
    if let Some(loc) = resp.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).and_then(rewrite_location)
        && let Ok(v) = HeaderValue::from_str(&loc)
    {
        out = out.header(header::LOCATION, v);
    }
    out = out.header(header::CACHE_CONTROL, "no-store");
    out.body(Body::from_stream(resp.bytes_stream())).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

fn upload_path(id: &str) -> Option<String> {
    id.parse::<Uuid>().ok().map(|u| format!("/api/v1/uploads/{u}"))
}

fn no_upload() -> Response {
    tus_refusal(StatusCode::NOT_FOUND, "No such upload", "the upload id is not one this server gave")
}

/// `POST /upload/tus`: tus creation.
async fn tus_create(State(state): State<UiState>, s: Sess, req: Request) -> Response {
    if let Some(m) = req.headers().get("upload-metadata").and_then(|v| v.to_str().ok()) {
        let meta = decode_upload_metadata(m);
        let name = meta.iter().find(|(k, _)| k == "filename").map_or("", |(_, v)| v.as_str());
        let length = req.headers().get("upload-length").and_then(|v| v.to_str().ok()).unwrap_or("?");
        tracing::info!(user = %s.user, file = %name, length, "tus upload started from the UI");
    }
    tus_forward(&state, &s, Method::POST, "/api/v1/uploads", req).await
}

/// `HEAD /upload/tus/{id}`: the offset to resume at.
async fn tus_head(State(state): State<UiState>, s: Sess, Path(id): Path<String>, req: Request) -> Response {
    match upload_path(&id) {
        Some(p) => tus_forward(&state, &s, Method::HEAD, &p, req).await,
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `GET /upload/tus/{id}`: the session as JSON (`state`, `offset`, `file_id`…).
async fn tus_status(State(state): State<UiState>, s: Sess, Path(id): Path<String>, req: Request) -> Response {
    match upload_path(&id) {
        Some(p) => tus_forward(&state, &s, Method::GET, &p, req).await,
        None => no_upload(),
    }
}

/// `PATCH /upload/tus/{id}`: one chunk, streamed through.
async fn tus_patch(State(state): State<UiState>, s: Sess, Path(id): Path<String>, req: Request) -> Response {
    match upload_path(&id) {
        Some(p) => tus_forward(&state, &s, Method::PATCH, &p, req).await,
        None => no_upload(),
    }
}

/// `DELETE /upload/tus/{id}`: termination.
async fn tus_delete(State(state): State<UiState>, s: Sess, Path(id): Path<String>, req: Request) -> Response {
    match upload_path(&id) {
        Some(p) => tus_forward(&state, &s, Method::DELETE, &p, req).await,
        None => no_upload(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_metadata_round_trips() {
        let raw = encode_upload_metadata([
            ("filename", "Отчёт 2024.pdf"),
            ("content_type", "application/pdf"),
            ("tags", "finance,tax"),
            ("description", ""),
            ("metadata", r#"{"customer":"ACME, Inc."}"#),
        ]);
        assert!(raw.starts_with("filename 0J7RgtGH0ZHRgiAyMDI0LnBkZg==,content_type YXBwbGljYXRpb24vcGRm,"), "{raw}");
        assert!(!raw.contains("description"), "blank values are left out");
        let back = decode_upload_metadata(&raw);
        assert_eq!(back.len(), 4);
        assert_eq!(back[0], ("filename".to_owned(), "Отчёт 2024.pdf".to_owned()));
        assert_eq!(back[3].1, r#"{"customer":"ACME, Inc."}"#);
        assert_eq!(decode_upload_metadata("flag, bad !!!"), vec![("flag".to_owned(), String::new())]);
    }

    #[test]
    fn locations_point_at_the_proxy() {
        let id = "0190f6d2-8c1e-7a4b-9b5e-2f1a3c4d5e6f";
        assert_eq!(rewrite_location(&format!("/api/v1/uploads/{id}")), Some(format!("/upload/tus/{id}")));
        assert_eq!(
            rewrite_location(&format!("https://archive.example/api/v1/uploads/{id}?x=1")),
            Some(format!("/upload/tus/{id}"))
        );
        assert_eq!(rewrite_location("/api/v1/uploads/../../admin"), None);
        assert_eq!(rewrite_location("/elsewhere"), None);
        assert_eq!(upload_path("../files"), None);
    }

    #[test]
    fn odd_content_types_become_octet_stream() {
        assert!(plain_media_type("application/pdf"));
        assert!(plain_media_type("text/plain; charset=utf-8"));
        assert!(plain_media_type("application/vnd.openxmlformats-officedocument.wordprocessingml.document"));
        assert!(!plain_media_type(""));
        assert!(!plain_media_type("text"));
        assert!(!plain_media_type("text/pl ain"));
    }
}
