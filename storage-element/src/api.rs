//! The storage element's HTTP API under `/api/v1`. Every route needs a valid token; what a
//! caller may do is decided by the token's roles, what the element allows by its mode and
//! each document's retention.

use crate::cache::{ListFilter, RetentionFilter};
use crate::element::ElementMode;
use crate::error::StoreError;
use crate::sidecar::{Disposition, DocState, Retention, RetentionMode};
use crate::store::{MetadataPatch, NewFile, RestoreOutcome, Store, normalise_tags};
use artstore_shared::auth::{Auth, Caller, Permission};
use artstore_shared::error::json_body;
use artstore_shared::{ApiError, ErrorCode};
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRef, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use uuid::Uuid;

/// Handler state.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub auth: Auth,
    /// Resolves `retention_policy` at the admin; absent when no admin is configured.
    pub policies: Option<Arc<crate::policies::PolicyResolver>>,
}

impl FromRef<AppState> for Auth {
    fn from_ref(s: &AppState) -> Auth {
        s.auth.clone()
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

/// The OpenAPI 3.1 document of this API (spec-first; a test checks it against the router).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every route this API serves, as (method, path): the test against the OpenAPI document
/// reads this list.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/files"),
    ("get", "/api/v1/files"),
    ("get", "/api/v1/files/{id}"),
    ("patch", "/api/v1/files/{id}"),
    ("delete", "/api/v1/files/{id}"),
    ("get", "/api/v1/files/{id}/content"),
    ("head", "/api/v1/files/{id}/content"),
    ("put", "/api/v1/files/{id}/legal-hold"),
    ("put", "/api/v1/files/{id}/retention"),
    ("post", "/api/v1/files/{id}/restore"),
    ("get", "/api/v1/files/{id}/audit"),
    ("get", "/api/v1/documents/{document_id}/versions"),
    ("get", "/api/v1/element"),
    ("post", "/api/v1/element/mode"),
    ("post", "/api/v1/element/disposition"),
    ("get", "/api/v1/openapi.json"),
];

/// The `/api/v1` routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route("/api/v1/files", post(create_file).get(list_files))
        .route("/api/v1/files/{id}", get(get_file).patch(patch_file).delete(delete_file))
        .route("/api/v1/files/{id}/content", get(get_content))
        .route("/api/v1/files/{id}/legal-hold", put(put_legal_hold))
        .route("/api/v1/files/{id}/retention", put(put_retention))
        .route("/api/v1/files/{id}/restore", post(post_restore))
        .route("/api/v1/files/{id}/audit", get(get_audit))
        .route("/api/v1/documents/{document_id}/versions", get(get_versions))
        .route("/api/v1/element", get(get_element))
        .route("/api/v1/element/mode", post(post_mode))
        .route("/api/v1/element/disposition", post(post_disposition))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

fn parse_id(s: &str, what: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(s).map_err(|_| ApiError::bad_request(format!("{what} {s:?} is not a UUID")))
}

fn query<T>(r: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    r.map(|Query(v)| v).map_err(|e| ApiError::typed(ErrorCode::BadRequest, "bad-query", e.body_text()))
}

fn bad(detail: impl Into<String>) -> ApiError {
    ApiError::typed(ErrorCode::BadRequest, "bad-request", detail)
}

/// Parses an RFC 9530 `Content-Digest` / `Repr-Digest` value; returns the sha-256 hex if
/// it names one. Other algorithms are ignored, as the RFC allows.
fn sha256_from_digest_header(v: &HeaderValue) -> ApiResult<Option<String>> {
    let s = v.to_str().map_err(|_| bad("Content-Digest is not ASCII"))?;
    artstore_shared::upload::sha256_from_content_digest(s).map_err(bad)
}

async fn text_field(field: multer::Field<'_>, name: &str) -> ApiResult<String> {
    artstore_shared::upload::read_text_field(field, name).await.map_err(bad)
}

/// `POST /api/v1/files`: multipart upload, streamed to disk and hashed on the way.
async fn create_file(State(s): State<AppState>, caller: Caller, req: Request) -> ApiResult {
    caller.require(Permission::Create)?;
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let boundary = multer::parse_boundary(&ct).map_err(|_| {
        ApiError::typed(
            ErrorCode::UnsupportedMediaType,
            "unsupported-media-type",
            "POST /api/v1/files takes multipart/form-data with a boundary",
        )
    })?;
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_owned());
    let request_digest = req.headers().get("content-digest").map(sha256_from_digest_header).transpose()?.flatten();
    // The body's digest is a pass over every byte: only when the client sent one to compare.
    let body_hash =
        Arc::new(Mutex::new(request_digest.is_some().then(|| ring::digest::Context::new(&ring::digest::SHA256))));
    let hasher = body_hash.clone();
    let stream = req.into_body().into_data_stream().map_ok(move |chunk| {
        if let Some(h) = hasher.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            h.update(&chunk);
        }
        chunk
    });
    let mut mp = multer::Multipart::new(artstore_shared::upload::paced(stream), boundary);
    let mut staged = None;
    let mut part_digest = None;
    let mut new = NewFile::default();
    let (mut mode, mut until, mut hold, mut disposition) = (None, None, false, None);
    let mut policy_name = None;
    while let Some(mut field) = mp.next_field().await.map_err(|e| bad(format!("malformed multipart body: {e}")))? {
        let name = field.name().unwrap_or("").to_owned();
        match name.as_str() {
            "file" => {
                if staged.is_some() {
                    return Err(bad("more than one \"file\" part"));
                }
                new.original_name = field.file_name().unwrap_or("file").to_owned();
                let declared = field.content_type().map(|m| m.essence_str().to_owned());
                new.content_type = match declared {
                    Some(m) if m != "application/octet-stream" => m,
                    _ => mime_guess::from_path(&new.original_name).first_or_octet_stream().essence_str().to_owned(),
                };
                part_digest =
                    field.headers().get("content-digest").map(sha256_from_digest_header).transpose()?.flatten();
                let mut w = s.store.begin_upload().await?;
                while let Some(chunk) =
                    field.chunk().await.map_err(|e| bad(format!("malformed multipart body: {e}")))?
                {
                    w.write(chunk).await?;
                }
                staged = Some(w.finish().await?);
            }
            "description" => new.description = Some(text_field(field, &name).await?).filter(|d| !d.is_empty()),
            "tags" => {
                new.tags = normalise_tags(text_field(field, &name).await?.split(',').map(str::to_owned).collect())
            }
            "metadata" => {
                let t = text_field(field, &name).await?;
                match serde_json::from_str::<Value>(&t) {
                    Ok(Value::Object(o)) => new.metadata = o,
                    Ok(_) => return Err(bad("metadata must be a JSON object")),
                    Err(e) => return Err(bad(format!("metadata is not valid JSON: {e}"))),
                }
            }
            "document_id" => new.document_id = Some(parse_id(text_field(field, &name).await?.trim(), "document_id")?),
            // The ingester's planned id (see NewFile::file_id).
            "file_id" => new.file_id = Some(parse_id(text_field(field, &name).await?.trim(), "file_id")?),
            "after_version" => {
                let t = text_field(field, &name).await?;
                new.after_version =
                    Some(t.trim().parse().map_err(|_| bad(format!("after_version {t:?} is not a version number")))?);
            }
            "retention_mode" => {
                mode = Some(match text_field(field, &name).await?.trim() {
                    "compliance" => RetentionMode::Compliance,
                    "governance" => RetentionMode::Governance,
                    "none" | "" => RetentionMode::None,
                    other => {
                        return Err(bad(format!("retention_mode {other:?} is not compliance or governance")));
                    }
                })
            }
            "retain_until" => {
                let t = text_field(field, &name).await?;
                until = Some(
                    DateTime::parse_from_rfc3339(t.trim())
                        .map_err(|e| bad(format!("retain_until {t:?} is not RFC 3339: {e}")))?
                        .with_timezone(&Utc),
                );
            }
            "retention_policy" => {
                policy_name = Some(text_field(field, &name).await?.trim().to_owned()).filter(|p| !p.is_empty());
            }
            "legal_hold" => {
                hold = match text_field(field, &name).await?.trim() {
                    "true" => true,
                    "false" | "" => false,
                    other => return Err(bad(format!("legal_hold {other:?} is not true or false"))),
                }
            }
            "disposition" => {
                disposition = Some(match text_field(field, &name).await?.trim() {
                    "dispose" => Disposition::Dispose,
                    "review" => Disposition::Review,
                    other => {
                        return Err(bad(format!("disposition {other:?} is not dispose or review")));
                    }
                })
            }
            other => return Err(bad(format!("unknown multipart part {other:?}"))),
        }
    }
    let staged = staged.ok_or_else(|| bad("the multipart body has no \"file\" part"))?;
    if new.after_version.is_some() && new.document_id.is_none() {
        return Err(bad("after_version is only meaningful with document_id"));
    }
    if let Some(expected) = part_digest
        && expected != staged.sha256
    {
        return Err(StoreError::DigestMismatch { expected, actual: staged.sha256.clone() }.into());
    }
    if let Some(expected) = request_digest {
        let body = body_hash
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .map(|c| crate::audit::hex(c.finish().as_ref()))
            .unwrap_or_default();
        // RFC 9530 digests the message content (the multipart body); clients commonly
        // digest the file itself. Either matching is proof of an intact upload.
        if expected != staged.sha256 && expected != body {
            return Err(StoreError::DigestMismatch { expected, actual: staged.sha256.clone() }.into());
        }
    }
    if hold && !caller.can(Permission::Protect) {
        return Err(ApiError::forbidden("setting a legal hold needs a writer, operator or admin role"));
    }
    let policy = match &policy_name {
        None => None,
        Some(p) => {
            if mode.is_some() || until.is_some() || disposition.is_some() {
                return Err(bad(
                    "retention_policy decides the retention mode, date and disposition; do not send retention_mode, retain_until or disposition with it",
                ));
            }
            let resolver = s.policies.as_ref().ok_or_else(|| {
                ApiError::typed(
                    ErrorCode::BadRequest,
                    "no-admin",
                    "this element has no admin configured (admin_url) to resolve retention policies",
                )
            })?;
            Some(resolver.resolve(bearer.as_deref().unwrap_or_default(), p).await?)
        }
    };
    if let Some(p) = &policy {
        let term = artstore_shared::retention::Term::parse(&p.term)
            .map_err(|e| ApiError::internal(format!("retention policy {:?}: {e}", p.name)))?;
        mode = Some(if p.mode == "compliance" { RetentionMode::Compliance } else { RetentionMode::Governance });
        until = Some(
            term.add_to(s.store.retention_clock().term_start())
                .ok_or_else(|| bad("the policy's term overflows the calendar"))?,
        );
        disposition = Some(if p.disposition == "dispose" { Disposition::Dispose } else { Disposition::Review });
    }
    let mode = match (mode, until) {
        (None, Some(_)) => RetentionMode::Governance,
        (m, _) => m.unwrap_or_default(),
    };
    new.retention = Retention {
        policy: policy_name,
        mode,
        retain_until: until,
        legal_hold: hold,
        legal_hold_reason: None,
        disposition: disposition.unwrap_or_default(),
        extra: Default::default(),
    };
    // The commit runs to its end in a task of its own: if the caller goes away (a client or
    // an ingester killed mid-request), dropping this handler must not stop a create between
    // its commit point (the sidecar's rename) and the cache update, audit line and WAL commit
    // that make the document listed, searchable and announced.
    let (store, actor) = (s.store.clone(), caller.subject.clone());
    let sc = to_end(async move { store.create(&actor, staged, new).await }).await?;
    let location = format!("/api/v1/files/{}", sc.file_id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(sc)).into_response())
}

/// Runs a write on the store to its end in a task of its own, as a create does: a caller
/// that goes away must not stop a rewrite between its sidecar's rename and the cache
/// update, audit line and WAL commit that follow.
async fn to_end<T, F>(write: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
{
    Ok(tokio::spawn(write).await.map_err(|e| ApiError::internal(format!("the write task failed: {e}")))??)
}

#[derive(Deserialize)]
struct ListParams {
    limit: Option<usize>,
    cursor: Option<String>,
    /// `review-due` (same as `retention=review-due`).
    disposition: Option<String>,
    state: Option<String>,
    /// `under-retention`, `on-hold`, `review-due` or `disposed`.
    retention: Option<String>,
    /// First folder date `YYYY-MM-DD` (inclusive).
    from: Option<String>,
    /// Last folder date `YYYY-MM-DD` (inclusive).
    to: Option<String>,
    content_type: Option<String>,
    tag: Option<String>,
    document_id: Option<String>,
}

fn parse_day(s: &str, what: &str) -> ApiResult<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| bad(format!("{what} {s:?} is not a date (YYYY-MM-DD)")))
}

/// `GET /api/v1/files`: every sidecar in file-id order, page by page.
async fn list_files(
    State(s): State<AppState>,
    caller: Caller,
    q: Result<Query<ListParams>, QueryRejection>,
) -> ApiResult {
    caller.require(Permission::ReadMetadata)?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(bad("limit must be between 1 and 1000"));
    }
    let after = q.cursor.as_deref().filter(|c| !c.is_empty()).map(|c| parse_id(c, "cursor")).transpose()?;
    let mut filter = ListFilter::default();
    let now = s.store.retention_clock().ended_by();
    let nonempty = |o: &Option<String>| o.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    match nonempty(&q.disposition).as_deref() {
        None => {}
        Some("review-due") => filter.retention = Some((RetentionFilter::ReviewDue, now)),
        Some(other) => return Err(bad(format!("disposition filter {other:?} is not supported (use review-due)"))),
    }
    if let Some(r) = nonempty(&q.retention) {
        let f = RetentionFilter::parse(&r).ok_or_else(|| {
            bad(format!("retention filter {r:?} is not under-retention, on-hold, review-due or disposed"))
        })?;
        filter.retention = Some((f, now));
    }
    if let Some(st) = nonempty(&q.state) {
        filter.state = Some(
            serde_json::from_value::<DocState>(json!(st))
                .map_err(|_| bad(format!("state {st:?} is not active, archived, deleted or disposed")))?,
        );
    }
    filter.day_from = nonempty(&q.from).map(|d| parse_day(&d, "from")).transpose()?;
    filter.day_to = nonempty(&q.to).map(|d| parse_day(&d, "to")).transpose()?;
    filter.content_type = nonempty(&q.content_type);
    filter.tag = nonempty(&q.tag);
    filter.document_id = nonempty(&q.document_id).map(|d| parse_id(&d, "document_id")).transpose()?;
    let page = s.store.list(after, limit, &filter).await?;
    let items: Vec<_> = page.items.iter().map(|e| &*e.sidecar).collect();
    Ok(Json(json!({"items": items, "next_cursor": page.next.map(|u| u.to_string())})).into_response())
}

async fn get_file(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    caller.require(Permission::ReadMetadata)?;
    let id = parse_id(&id, "file id")?;
    let sc = s.store.get(id).await?;
    Ok(([(header::ETAG, format!("\"r{}\"", sc.revision))], Json(sc)).into_response())
}

async fn patch_file(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult {
    caller.require(Permission::UpdateMetadata)?;
    let id = parse_id(&id, "file id")?;
    let patch = MetadataPatch::from_merge_patch(&json_body(body)?)?;
    let (store, actor) = (s.store.clone(), caller.subject.clone());
    Ok(Json(to_end(async move { store.update_metadata(id, &actor, patch).await }).await?).into_response())
}

#[derive(Deserialize)]
struct DeleteParams {
    #[serde(default)]
    bypass_governance: bool,
}

async fn delete_file(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<DeleteParams>, QueryRejection>,
) -> ApiResult {
    caller.require(Permission::Delete)?;
    let id = parse_id(&id, "file id")?;
    let q = query(q)?;
    let (store, actor, may_bypass) = (s.store.clone(), caller.subject.clone(), caller.can(Permission::RetentionBypass));
    let sc = to_end(async move { store.delete(id, &actor, may_bypass, q.bypass_governance).await }).await?;
    Ok(Json(sc).into_response())
}

#[derive(Deserialize)]
struct HoldBody {
    enabled: bool,
    /// Why the hold is set (kept in the sidecar while it holds, and in the journal).
    #[serde(default)]
    reason: Option<String>,
}

async fn put_legal_hold(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<HoldBody>, JsonRejection>,
) -> ApiResult {
    let id = parse_id(&id, "file id")?;
    let body = json_body(body)?;
    caller.require(if body.enabled { Permission::Protect } else { Permission::LiftLegalHold })?;
    let reason = body.reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.chars().count() > 1000) {
        return Err(bad("reason is longer than 1000 characters"));
    }
    let (store, actor) = (s.store.clone(), caller.subject.clone());
    Ok(Json(to_end(async move { store.set_legal_hold(id, &actor, body.enabled, reason).await }).await?).into_response())
}

#[derive(Deserialize)]
struct RetentionBody {
    retain_until: DateTime<Utc>,
    #[serde(default)]
    mode: Option<RetentionMode>,
}

async fn put_retention(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<RetentionBody>, JsonRejection>,
) -> ApiResult {
    caller.require(Permission::Protect)?;
    let id = parse_id(&id, "file id")?;
    let body = json_body(body)?;
    let (store, actor) = (s.store.clone(), caller.subject.clone());
    let sc = to_end(async move { store.extend_retention(id, &actor, body.retain_until, body.mode).await }).await?;
    Ok(Json(sc).into_response())
}

#[derive(Deserialize)]
struct RestoreBody {
    #[serde(default = "default_restore_days")]
    days: u32,
}

fn default_restore_days() -> u32 {
    7
}

async fn post_restore(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<RestoreBody>, JsonRejection>,
) -> ApiResult {
    caller.require(Permission::Restore)?;
    let id = parse_id(&id, "file id")?;
    let body = json_body(body)?;
    let (store, actor) = (s.store.clone(), caller.subject.clone());
    let (outcome, sc) = to_end(async move { store.request_restore(id, &actor, body.days).await }).await?;
    let status = match outcome {
        RestoreOutcome::Staging => StatusCode::ACCEPTED,
        RestoreOutcome::Readable => StatusCode::OK,
    };
    Ok((status, Json(sc)).into_response())
}

#[derive(Deserialize)]
struct AuditParams {
    limit: Option<usize>,
}

/// `GET /api/v1/files/{id}/audit`: the file's lines of the audit journal, newest first.
async fn get_audit(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<AuditParams>, QueryRejection>,
) -> ApiResult {
    caller.require(Permission::ReadAudit)?;
    let id = parse_id(&id, "file id")?;
    let limit = query(q)?.limit.unwrap_or(200);
    if limit == 0 || limit > 1000 {
        return Err(bad("limit must be between 1 and 1000"));
    }
    Ok(Json(s.store.audit_trail(id, limit).await?).into_response())
}

async fn get_versions(State(s): State<AppState>, caller: Caller, Path(doc): Path<String>) -> ApiResult {
    caller.require(Permission::ReadMetadata)?;
    let doc = parse_id(&doc, "document id")?;
    let versions = s.store.versions(doc).await?;
    Ok(Json(json!({"document_id": doc, "versions": versions})).into_response())
}

async fn get_element(State(s): State<AppState>, caller: Caller) -> ApiResult {
    caller.require(Permission::ReadMetadata)?;
    Ok(Json(s.store.info().await?).into_response())
}

async fn post_mode(State(s): State<AppState>, caller: Caller, body: Result<Json<Value>, JsonRejection>) -> ApiResult {
    caller.require(Permission::ManageElement)?;
    let body = json_body(body)?;
    let raw =
        body.get("mode").and_then(Value::as_str).ok_or_else(|| bad("body must be {\"mode\": \"edit|rw|ro|ar\"}"))?;
    let mode = ElementMode::parse(raw).ok_or_else(|| bad(format!("unknown mode {raw:?} (edit, rw, ro or ar)")))?;
    let (store, actor) = (s.store.clone(), caller.subject.clone());
    to_end(async move { store.change_mode(mode, &actor).await }).await?;
    Ok(Json(s.store.info().await?).into_response())
}

async fn post_disposition(State(s): State<AppState>, caller: Caller) -> ApiResult {
    caller.require(Permission::ManageElement)?;
    let store = s.store.clone();
    Ok(Json(to_end(async move { store.run_disposition().await }).await?).into_response())
}

/// The `Range` header as the parser takes it (RFC 9110 §14): the unit is matched without
/// regard to case, and a suffix longer than the representation means all of it. `None`
/// (the whole representation, 200) for another unit, a header that is not a range at all,
/// or an empty representation, which has no byte to send.
fn range_spec(r: &str, size: u64) -> Option<String> {
    let (unit, set) = r.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || size == 0 {
        return None;
    }
    let parts: Vec<String> = set
        .split(',')
        .map(|part| {
            let p = part.trim();
            match p.strip_prefix('-').and_then(|n| n.parse::<u64>().ok()) {
                Some(n) if n > size => "0-".to_owned(),
                _ => p.to_owned(),
            }
        })
        .collect();
    Some(format!("bytes={}", parts.join(",")))
}

/// Whether an `If-None-Match` value matches our strong ETag.
fn none_match(h: &HeaderMap, etag: &str) -> bool {
    h.get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

/// RFC 6266 / 8187 `Content-Disposition` with an ASCII fallback and the UTF-8 name.
fn content_disposition(name: &str) -> String {
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let mut enc = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("inline; filename=\"{ascii}\"; filename*=UTF-8''{enc}")
}

/// `GET|HEAD /api/v1/files/{id}/content`: streamed, with `Range`, `ETag`, `If-None-Match`.
async fn get_content(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult {
    caller.require(Permission::ReadContent)?;
    let id = parse_id(&id, "file id")?;
    let (sc, path) = s.store.open_content(id).await?;
    let etag = sc.etag();
    let mut resp_headers = HeaderMap::new();
    let hv = |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""));
    resp_headers.insert(header::ETAG, hv(&etag));
    resp_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    resp_headers.insert("repr-digest", hv(&format!("sha-256=:{}:", B64.encode(hex_to_bytes(&sc.sha256)))));
    resp_headers.insert(header::LAST_MODIFIED, hv(&sc.created_at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()));
    if none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, resp_headers).into_response());
    }
    resp_headers.insert(header::CONTENT_TYPE, hv(&sc.content_type));
    resp_headers.insert(header::CONTENT_DISPOSITION, hv(&content_disposition(&sc.original_name)));
    let size = sc.size;
    let if_range_ok = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()).is_none_or(|v| v == etag);
    let spec = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(|r| range_spec(r, size));
    let range = match spec.as_deref() {
        Some(r) if if_range_ok => {
            match http_range_header::parse_range_header(r).and_then(|p| p.validate(size)) {
                Ok(ranges) if ranges.len() == 1 => Some(ranges[0].clone()),
                Ok(_) => None, // several ranges: the whole file is a valid answer
                Err(_) => {
                    let mut h = HeaderMap::new();
                    h.insert(header::CONTENT_RANGE, hv(&format!("bytes */{size}")));
                    let e = ApiError::typed(
                        ErrorCode::RangeNotSatisfiable,
                        "range-not-satisfiable",
                        format!("range {r:?} cannot be served from {size} bytes"),
                    );
                    return Ok((h, e).into_response());
                }
            }
        }
        _ => None,
    };
    let (status, start, len) = match &range {
        Some(r) => {
            resp_headers.insert(header::CONTENT_RANGE, hv(&format!("bytes {}-{}/{size}", r.start(), r.end())));
            (StatusCode::PARTIAL_CONTENT, *r.start(), r.end() - r.start() + 1)
        }
        None => (StatusCode::OK, 0, size),
    };
    resp_headers.insert(header::CONTENT_LENGTH, hv(&len.to_string()));
    if method == Method::HEAD {
        return Ok((status, resp_headers).into_response());
    }
    let mut file = tokio::fs::File::open(&path).await.map_err(StoreError::from)?;
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start)).await.map_err(StoreError::from)?;
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 * 1024);
    Ok((status, resp_headers, Body::from_stream(stream)).into_response())
}

fn hex_to_bytes(h: &str) -> Vec<u8> {
    (0..h.len() / 2).filter_map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_digest_parsing() {
        let v = HeaderValue::from_static("sha-512=:AAAA:, sha-256=:LCa0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm564=:");
        assert_eq!(
            sha256_from_digest_header(&v).unwrap().unwrap(),
            "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
        );
        assert!(sha256_from_digest_header(&HeaderValue::from_static("sha-256=:nope:")).is_err());
        assert_eq!(sha256_from_digest_header(&HeaderValue::from_static("md5=:AAAA:")).unwrap(), None);
    }

    #[test]
    fn openapi_document_describes_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        for (method, path) in ROUTES {
            assert!(paths.get(*path).and_then(|p| p.get(*method)).is_some(), "{method} {path} is not in openapi.json");
        }
        let documented: usize = paths
            .iter()
            .filter(|(p, _)| p.starts_with("/api/"))
            .map(|(_, v)| v.as_object().unwrap().keys().filter(|k| *k != "parameters").count())
            .sum();
        assert_eq!(documented, ROUTES.len(), "openapi.json documents a route the router does not serve");
    }

    #[test]
    fn disposition_keeps_unicode_names() {
        assert_eq!(
            content_disposition("Übersicht 1.pdf"),
            "inline; filename=\"_bersicht 1.pdf\"; filename*=UTF-8''%C3%9Cbersicht%201.pdf"
        );
    }
}
