//! Resumable uploads, tus 1.0.0 (core, creation, creation-with-upload, termination,
//! checksum, expiration) at `/api/v1/uploads`. A session lives in
//! `<data>/uploads/<id>/`: `info.json` (what it is), `data` (the bytes) and `offset` (how
//! many of them are fsynced). After any crash the offset a `HEAD` answers covers bytes
//! that are all on disk. When the last byte is in, the document is stored on an element
//! and the final `PATCH` answers `ArtStore-File-Id` and `ArtStore-Element-Id`.

use crate::api::{Answer, AppState, bearer, once};
use crate::form::bad;
use crate::store::{Content, FileHead, Ingester, Outcome};
use artstore_shared::auth::{Caller, Permission};
use artstore_shared::upload::{FORM_FIELDS, UploadFields};
use artstore_shared::{ApiError, ErrorCode};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::options;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use uuid::Uuid;

pub const TUS_VERSION: &str = "1.0.0";
pub const TUS_EXTENSIONS: &str = "creation,creation-with-upload,termination,checksum,expiration";
pub const TUS_CHECKSUMS: &str = "sha1,sha256";
/// Bytes written between two fsyncs inside one long `PATCH`.
const SYNC_EVERY: u64 = 16 << 20;

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadState {
    Receiving,
    Storing,
    Stored,
    Failed,
}

/// A session's description, `info.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: Uuid,
    pub owner: String,
    pub length: u64,
    pub filename: String,
    pub content_type: String,
    pub fields: UploadFields,
    /// The raw `Upload-Metadata`, given back on `HEAD`.
    pub metadata_header: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub state: UploadState,
    /// The offset before the final `PATCH` (a store interrupted by a crash rolls back to it).
    #[serde(default)]
    pub final_from: Option<u64>,
    pub file_id: Option<Uuid>,
    /// The file id planned when storing began (saved before the element is asked), so a
    /// store interrupted by a crash finds what it stored instead of storing it twice.
    #[serde(default)]
    pub planned_file_id: Option<Uuid>,
    pub element_id: Option<String>,
    pub sidecar: Option<Value>,
    pub error: Option<String>,
}

/// One session in memory.
#[derive(Debug)]
pub struct Session {
    info: Mutex<SessionInfo>,
    /// Bytes fsynced (what `HEAD` answers); readable while a `PATCH` runs.
    committed: AtomicU64,
    /// Held by the one `PATCH` (or store) at work.
    busy: Arc<tokio::sync::Mutex<()>>,
    dir: PathBuf,
}

impl Session {
    fn info(&self) -> SessionInfo {
        self.info.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut SessionInfo)) -> std::io::Result<()> {
        let snapshot = {
            let mut g = self.info.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut g);
            g.clone()
        };
        write_atomic(&self.dir.join("info.json"), &serde_json::to_vec_pretty(&snapshot).map_err(std::io::Error::other)?)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn set_committed(&self, n: u64) -> std::io::Result<()> {
        write_atomic(&self.dir.join("offset"), n.to_string().as_bytes())?;
        self.committed.store(n, Ordering::SeqCst);
        Ok(())
    }
}

fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)
}

/// Every session of this ingester.
#[derive(Debug)]
pub struct Sessions {
    dir: PathBuf,
    map: Mutex<HashMap<Uuid, Arc<Session>>>,
}

impl Sessions {
    /// Loads every session; bytes past the fsynced offset are cut off, and a store a crash
    /// interrupted goes back to receiving its last chunk.
    pub fn open(data: &std::path::Path) -> std::io::Result<Self> {
        let dir = data.join("uploads");
        std::fs::create_dir_all(&dir)?;
        let mut map = HashMap::new();
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let sdir = entry.path();
            let Ok(bytes) = std::fs::read(sdir.join("info.json")) else {
                // Created but never described: nothing was acknowledged.
                let _ = std::fs::remove_dir_all(&sdir);
                continue;
            };
            let mut info: SessionInfo = match serde_json::from_slice(&bytes) {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(dir = %sdir.display(), error = %e, "unreadable upload session skipped");
                    continue;
                }
            };
            let on_disk = std::fs::metadata(sdir.join("data")).map(|m| m.len()).unwrap_or(0);
            let recorded: u64 =
                std::fs::read_to_string(sdir.join("offset")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
            let mut committed = recorded.min(on_disk);
            if info.state == UploadState::Storing {
                committed = info.final_from.unwrap_or(0).min(committed);
                info.state = UploadState::Receiving;
                info.error = Some("interrupted while storing; send the last chunk again".into());
            }
            if info.state != UploadState::Stored {
                if let Ok(f) =
                    std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(sdir.join("data"))
                {
                    let _ = f.set_len(committed);
                    let _ = f.sync_all();
                }
            } else {
                committed = info.length;
            }
            let s = Session {
                info: Mutex::new(info.clone()),
                committed: AtomicU64::new(committed),
                busy: Arc::default(),
                dir: sdir,
            };
            s.set_committed(committed)?;
            s.update(|_| {})?;
            map.insert(info.id, Arc::new(s));
        }
        Ok(Self { dir, map: Mutex::new(map) })
    }

    fn get(&self, id: Uuid) -> Option<Arc<Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }

    fn create(&self, info: SessionInfo) -> std::io::Result<Arc<Session>> {
        let dir = self.dir.join(info.id.to_string());
        std::fs::create_dir_all(&dir)?;
        std::fs::File::create(dir.join("data"))?;
        let s = Arc::new(Session {
            info: Mutex::new(info.clone()),
            committed: AtomicU64::new(0),
            busy: Arc::default(),
            dir,
        });
        s.set_committed(0)?;
        // The description is written last: a session without one did not exist.
        s.update(|_| {})?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        self.map.lock().unwrap_or_else(|e| e.into_inner()).insert(info.id, s.clone());
        Ok(s)
    }

    fn remove(&self, id: Uuid) {
        if let Some(s) = self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(&id)
            && let Err(e) = std::fs::remove_dir_all(&s.dir)
        {
            tracing::warn!(dir = %s.dir.display(), error = %e, "upload session not removed");
        }
    }

    /// Removes expired sessions and their bytes (not one being stored); answers how many.
    pub fn sweep(&self, now: DateTime<Utc>) -> usize {
        let expired: Vec<Uuid> = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|s| {
                let i = s.info();
                i.expires_at <= now && i.state != UploadState::Storing && s.busy.try_lock().is_ok()
            })
            .map(|s| s.info().id)
            .collect();
        for id in &expired {
            tracing::info!(upload = %id, "expired upload session swept");
            self.remove(*id);
        }
        expired.len()
    }
}

/// The tus routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/uploads", options(tus_options).post(create)).route(
        "/api/v1/uploads/{id}",
        axum::routing::get(status).head(head).patch(patch).delete(terminate).options(tus_options),
    )
}

fn tus_headers(b: axum::http::response::Builder) -> axum::http::response::Builder {
    b.header("tus-resumable", TUS_VERSION).header("cache-control", "no-store")
}

fn http_date(t: DateTime<Utc>) -> String {
    httpdate::fmt_http_date(std::time::SystemTime::from(t))
}

/// A problem answer carrying `Tus-Resumable`.
fn tus_problem(e: ApiError) -> Response {
    // tus answers a checksum mismatch with its own status, 460.
    if e.kind == "checksum-mismatch" {
        let mut body = e.to_problem();
        body["status"] = json!(460);
        body["title"] = json!("Checksum Mismatch");
        return Response::builder()
            .status(StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST))
            .header("content-type", "application/problem+json")
            .header("tus-resumable", TUS_VERSION)
            .body(Body::from(body.to_string()))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    let mut r = e.into_response();
    r.headers_mut().insert("tus-resumable", axum::http::HeaderValue::from_static(TUS_VERSION));
    r
}

async fn tus_options(State(s): State<AppState>) -> Response {
    tus_headers(Response::builder().status(StatusCode::NO_CONTENT))
        .header("tus-version", TUS_VERSION)
        .header("tus-extension", TUS_EXTENSIONS)
        .header("tus-max-size", s.ingester.cfg.tus_max_size.to_string())
        .header("tus-checksum-algorithm", TUS_CHECKSUMS)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Refuses a request that does not speak tus 1.0.0.
fn check_resumable(h: &HeaderMap) -> Result<(), ApiError> {
    match h.get("tus-resumable").and_then(|v| v.to_str().ok()) {
        Some(TUS_VERSION) => Ok(()),
        Some(other) => Err(ApiError::typed(
            ErrorCode::PreconditionFailed,
            "tus-version",
            format!("Tus-Resumable {other:?} is not supported; this server speaks {TUS_VERSION}"),
        )),
        None => Err(ApiError::typed(
            ErrorCode::PreconditionFailed,
            "tus-version",
            format!("the Tus-Resumable: {TUS_VERSION} header is missing"),
        )),
    }
}

/// Parses `Upload-Metadata` (`key base64,key base64`) into the file name, type and form.
fn parse_metadata(raw: &str) -> Result<(String, String, UploadFields), ApiError> {
    let mut filename = "file".to_owned();
    let mut content_type = "application/octet-stream".to_owned();
    let mut fields = UploadFields::default();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = match pair.split_once(' ') {
            Some((k, v)) => {
                let raw = B64
                    .decode(v.trim())
                    .map_err(|_| bad(format!("Upload-Metadata: the value of {k:?} is not base64")))?;
                (
                    k,
                    String::from_utf8(raw)
                        .map_err(|_| bad(format!("Upload-Metadata: the value of {k:?} is not UTF-8")))?,
                )
            }
            None => (pair, String::new()),
        };
        match key {
            "filename" | "name" => filename = value,
            "content_type" | "filetype" | "type" if !value.is_empty() => content_type = value,
            "content_type" | "filetype" | "type" => {}
            k if FORM_FIELDS.contains(&k) => fields.push(k, value).map_err(|e| bad(format!("Upload-Metadata: {e}")))?,
            // Other keys (a client's own, e.g. relativePath) are not ours to judge.
            _ => {}
        }
    }
    Ok((filename, content_type, fields))
}

fn own(s: &AppState, caller: &Caller, id: &str) -> Result<Arc<Session>, ApiError> {
    let not_found = || ApiError::not_found(format!("no upload {id:?}"));
    let id = Uuid::parse_str(id).map_err(|_| not_found())?;
    let session = s.ingester_sessions().get(id).ok_or_else(not_found)?;
    if session.info().owner != caller.subject {
        return Err(not_found());
    }
    Ok(session)
}

impl AppState {
    fn ingester_sessions(&self) -> &Sessions {
        &self.ingester.sessions
    }
}

/// `POST /api/v1/uploads`: creation (and creation-with-upload).
async fn create(State(s): State<AppState>, caller: Caller, req: Request) -> Response {
    if let Err(e) = caller.require(Permission::Create).and_then(|()| check_resumable(req.headers())) {
        return tus_problem(e);
    }
    let headers = req.headers().clone();
    let ing = s.ingester.clone();
    let state = s.clone();
    once(&ing, &caller, "POST /api/v1/uploads", &headers, false, |_| async {
        match create_session(&state, &caller, req).await {
            Ok(a) => a,
            Err(e) => {
                let mut a = Answer::problem(&e);
                a.headers.push(("tus-resumable".into(), TUS_VERSION.into()));
                a
            }
        }
    })
    .await
}

async fn create_session(s: &AppState, caller: &Caller, req: Request) -> Result<Answer, ApiError> {
    let ing = &s.ingester;
    let h = req.headers();
    if h.get("upload-defer-length").is_some() {
        return Err(bad("Upload-Defer-Length is not supported: send Upload-Length"));
    }
    let length: u64 = h
        .get("upload-length")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| bad("Upload-Length is missing"))?
        .trim()
        .parse()
        .map_err(|_| bad("Upload-Length is not a non-negative integer"))?;
    if length > ing.cfg.tus_max_size {
        return Err(ApiError::typed(
            ErrorCode::PayloadTooLarge,
            "payload-too-large",
            format!("Upload-Length {length} is over Tus-Max-Size {}", ing.cfg.tus_max_size),
        ));
    }
    let metadata_header = ascii_header(h, "upload-metadata")?;
    let (filename, content_type, fields) = parse_metadata(metadata_header.as_deref().unwrap_or(""))?;
    let now = Utc::now();
    let info = SessionInfo {
        id: Uuid::now_v7(),
        owner: caller.subject.clone(),
        length,
        filename,
        content_type,
        fields,
        metadata_header,
        created_at: now,
        expires_at: now + chrono::Duration::seconds(ing.cfg.upload_expiry_secs as i64),
        state: UploadState::Receiving,
        final_from: None,
        file_id: None,
        planned_file_id: None,
        element_id: None,
        sidecar: None,
        error: None,
    };
    let has_body = h.get("content-type").and_then(|v| v.to_str().ok()) == Some("application/offset+octet-stream");
    let session = ing.sessions.create(info.clone()).map_err(|e| ApiError::internal(format!("upload session: {e}")))?;
    ing.metrics.tus_sessions.inc();
    tracing::info!(upload = %info.id, length, "upload session created");
    let location = format!("/api/v1/uploads/{}", info.id);
    let mut headers = vec![
        ("location".to_owned(), location),
        ("tus-resumable".to_owned(), TUS_VERSION.to_owned()),
        ("upload-expires".to_owned(), http_date(info.expires_at)),
    ];
    if has_body {
        let token = bearer(req.headers());
        let checksum = ascii_header(req.headers(), "upload-checksum")?;
        let r = receive(ing, &session, 0, checksum.as_deref(), req.into_body(), &token).await;
        match r {
            Ok(extra) => {
                headers.push(("upload-offset".to_owned(), session.committed.load(Ordering::SeqCst).to_string()));
                headers.extend(extra);
            }
            // The session exists; the client learns the offset with HEAD and goes on.
            Err(e) => tracing::warn!(upload = %info.id, error = %e.detail, "creation-with-upload body not taken"),
        }
    }
    Ok(Answer { status: 201, headers, body: String::new() })
}

/// `HEAD /api/v1/uploads/{id}`.
async fn head(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> Response {
    match own(&s, &caller, &id) {
        Ok(session) => {
            let info = session.info();
            let mut b = tus_headers(Response::builder().status(StatusCode::OK))
                .header("upload-offset", session.committed.load(Ordering::SeqCst).to_string())
                .header("upload-length", info.length.to_string())
                .header("upload-expires", http_date(info.expires_at));
            if let Some(m) = &info.metadata_header {
                b = b.header("upload-metadata", m.as_str());
            }
            b.body(Body::empty()).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Err(e) => {
            // HEAD answers carry no body.
            let status = e.code.status();
            tus_headers(Response::builder().status(status))
                .body(Body::empty())
                .unwrap_or_else(|_| status.into_response())
        }
    }
}

/// `GET /api/v1/uploads/{id}`: the session as JSON.
async fn status(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> Response {
    match own(&s, &caller, &id) {
        Ok(session) => {
            let i = session.info();
            axum::Json(json!({
                "id": i.id,
                "state": i.state,
                "offset": session.committed.load(Ordering::SeqCst),
                "length": i.length,
                "filename": i.filename,
                "content_type": i.content_type,
                "created_at": i.created_at,
                "expires_at": i.expires_at,
                "file_id": i.file_id,
                "element_id": i.element_id,
                "sidecar": i.sidecar,
                "error": i.error,
            }))
            .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `DELETE /api/v1/uploads/{id}`: termination.
async fn terminate(State(s): State<AppState>, caller: Caller, Path(id): Path<String>, h: HeaderMap) -> Response {
    let r = async {
        check_resumable(&h)?;
        let session = own(&s, &caller, &id)?;
        let Ok(_busy) = session.busy.clone().try_lock_owned() else {
            return Err(ApiError::typed(ErrorCode::Conflict, "upload-busy", "the upload is receiving or being stored"));
        };
        s.ingester.sessions.remove(session.info().id);
        Ok(tus_headers(Response::builder().status(StatusCode::NO_CONTENT))
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
    };
    r.await.unwrap_or_else(tus_problem)
}

/// `PATCH /api/v1/uploads/{id}`.
async fn patch(State(s): State<AppState>, caller: Caller, Path(id): Path<String>, req: Request) -> Response {
    let r = async {
        caller.require(Permission::Create)?;
        check_resumable(req.headers())?;
        let session = own(&s, &caller, &id)?;
        let h = req.headers();
        if h.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/offset+octet-stream") {
            return Err(ApiError::typed(
                ErrorCode::UnsupportedMediaType,
                "unsupported-media-type",
                "PATCH takes Content-Type: application/offset+octet-stream",
            ));
        }
        let offset: u64 = h
            .get("upload-offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| bad("Upload-Offset is missing or not an integer"))?;
        let checksum = ascii_header(h, "upload-checksum")?;
        let token = bearer(h);
        let extra = receive(&s.ingester, &session, offset, checksum.as_deref(), req.into_body(), &token).await?;
        let info = session.info();
        let mut b = tus_headers(Response::builder().status(StatusCode::NO_CONTENT))
            .header("upload-offset", session.committed.load(Ordering::SeqCst).to_string())
            .header("upload-expires", http_date(info.expires_at));
        for (k, v) in extra {
            b = b.header(k, v);
        }
        b.body(Body::empty()).map_err(|e| ApiError::internal(e.to_string()))
    };
    r.await.unwrap_or_else(tus_problem)
}

/// A checksum the client sent with a chunk.
enum Checksum {
    Sha1(Vec<u8>, ring::digest::Context),
    Sha256(Vec<u8>, ring::digest::Context),
}

fn parse_checksum(v: &str) -> Result<Checksum, ApiError> {
    let (alg, val) = v.trim().split_once(' ').ok_or_else(|| bad("Upload-Checksum is not \"<algorithm> <base64>\""))?;
    let want = B64.decode(val.trim()).map_err(|_| bad("Upload-Checksum: the checksum is not base64"))?;
    let sized = |n: usize| {
        if want.len() == n {
            Ok(())
        } else {
            Err(bad(format!("Upload-Checksum: a {alg} digest is {n} bytes, this one is {}", want.len())))
        }
    };
    match alg {
        "sha1" => {
            sized(20)?;
            Ok(Checksum::Sha1(want, ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY)))
        }
        "sha256" => {
            sized(32)?;
            Ok(Checksum::Sha256(want, ring::digest::Context::new(&ring::digest::SHA256)))
        }
        other => Err(bad(format!("Upload-Checksum algorithm {other:?} is not supported ({TUS_CHECKSUMS})"))),
    }
}

/// Takes one chunk at `offset`: appended, checked, fsynced, then counted. The last chunk
/// also stores the document; the answer's extra headers name it.
async fn receive(
    ing: &Ingester,
    session: &Arc<Session>,
    offset: u64,
    checksum: Option<&str>,
    body: Body,
    token: &str,
) -> Result<Vec<(String, String)>, ApiError> {
    let mut check = checksum.map(parse_checksum).transpose()?;
    let busy =
        tokio::time::timeout(Duration::from_secs(10), session.busy.clone().lock_owned()).await.map_err(|_| {
            ApiError::typed(ErrorCode::Conflict, "upload-busy", "another PATCH of this upload is still running")
        })?;
    let info = session.info();
    let committed = session.committed.load(Ordering::SeqCst);
    match info.state {
        UploadState::Stored => {
            return Err(ApiError::typed(ErrorCode::Conflict, "upload-complete", "the upload is complete and stored"));
        }
        UploadState::Failed => {
            return Err(ApiError::typed(
                ErrorCode::Conflict,
                "upload-failed",
                format!("the upload failed: {}", info.error.unwrap_or_default()),
            ));
        }
        _ => {}
    }
    if offset != committed {
        return Err(ApiError::typed(
            ErrorCode::Conflict,
            "upload-offset",
            format!("Upload-Offset {offset} does not match the upload's offset {committed}"),
        )
        .with("offset", committed));
    }
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(session.data())
        .await
        .map_err(|e| ApiError::internal(format!("upload data: {e}")))?;
    file.set_len(committed).await.map_err(|e| ApiError::internal(format!("upload data: {e}")))?;
    use tokio::io::AsyncSeekExt as _;
    file.seek(std::io::SeekFrom::Start(committed))
        .await
        .map_err(|e| ApiError::internal(format!("upload data: {e}")))?;
    let mut written = committed;
    let mut synced = committed;
    let mut stream = body.into_data_stream();
    let io = |e: std::io::Error| ApiError::internal(format!("upload data: {e}"));
    let mut broken = None;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                // The client went away: what arrived whole and is fsynced counts.
                broken = Some(e.to_string());
                break;
            }
        };
        if written + chunk.len() as u64 > info.length {
            file.set_len(synced).await.map_err(io)?;
            return Err(ApiError::typed(
                ErrorCode::PayloadTooLarge,
                "upload-length",
                format!("the chunk goes past Upload-Length {}", info.length),
            ));
        }
        match &mut check {
            Some(Checksum::Sha1(_, c) | Checksum::Sha256(_, c)) => c.update(&chunk),
            None => {}
        }
        file.write_all(&chunk).await.map_err(io)?;
        written += chunk.len() as u64;
        // A chunk with a checksum counts only as a whole, after the check.
        if check.is_none() && written - synced >= SYNC_EVERY {
            file.sync_data().await.map_err(io)?;
            session.set_committed(written).map_err(io)?;
            synced = written;
        }
    }
    if let Some(c) = check {
        let (want, got) = match c {
            Checksum::Sha1(w, c) | Checksum::Sha256(w, c) => (w, c.finish()),
        };
        if broken.is_some() || want != got.as_ref() {
            file.set_len(committed).await.map_err(io)?;
            if let Some(b) = broken {
                return Err(bad(format!("the chunk did not arrive whole ({b})")));
            }
            return Err(ApiError::typed(
                ErrorCode::BadRequest,
                "checksum-mismatch",
                "Upload-Checksum does not match the chunk; it was discarded",
            ));
        }
    }
    file.sync_data().await.map_err(io)?;
    session.set_committed(written).map_err(io)?;
    let expires = Utc::now() + chrono::Duration::seconds(ing.cfg.upload_expiry_secs as i64);
    session.update(|i| i.expires_at = expires).map_err(io)?;
    if let Some(b) = broken {
        return Err(bad(format!("the body ended early ({b}); {written} bytes are kept, resume from there")));
    }
    drop(file);
    if written == info.length {
        let r = finish(ing, session, committed, token).await;
        drop(busy);
        return r;
    }
    Ok(Vec::new())
}

/// The last byte is in: store the document on an element.
async fn finish(
    ing: &Ingester,
    session: &Arc<Session>,
    final_from: u64,
    token: &str,
) -> Result<Vec<(String, String)>, ApiError> {
    let io = |e: std::io::Error| ApiError::internal(format!("upload session: {e}"));
    let earlier = session.info().planned_file_id;
    session
        .update(|i| {
            i.state = UploadState::Storing;
            i.final_from = Some(final_from);
            i.error = None;
            i.planned_file_id.get_or_insert_with(Uuid::now_v7);
        })
        .map_err(io)?;
    let info = session.info();
    // No digest of our own: chunks were checked as they came (Upload-Checksum), and the
    // element digests what it stores; reading the whole file once more here only cost time.
    let head = FileHead { filename: info.filename.clone(), content_type: info.content_type.clone(), sha256: None };
    // An earlier store of this upload was interrupted: it may have stored the document.
    let found = match earlier {
        Some(id) => ing.recover(token, id).await,
        None => Ok(None),
    };
    let r = match found {
        Ok(Some(outcome)) => {
            tracing::info!(upload = %info.id, "an interrupted store had stored the document");
            Ok(outcome)
        }
        Ok(None) => {
            ing.store(token, &info.fields, &head, &Content::Disk(session.data()), info.length, info.planned_file_id)
                .await
        }
        Err(e) => Err(e),
    };
    match r {
        Ok(Outcome::Stored { element_id, file_id, sidecar }) => {
            session
                .update(|i| {
                    i.state = UploadState::Stored;
                    i.file_id = Some(file_id);
                    i.element_id = Some(element_id.clone());
                    i.sidecar = Some(sidecar);
                })
                .map_err(io)?;
            let _ = std::fs::remove_file(session.data());
            tracing::info!(upload = %info.id, %file_id, element = %element_id, "upload stored");
            Ok(vec![("artstore-file-id".into(), file_id.to_string()), ("artstore-element-id".into(), element_id)])
        }
        Ok(Outcome::Refused { element_id, answer }) => {
            // The element refused for a reason a retry cannot mend (a field, a permission).
            let detail = String::from_utf8_lossy(&answer.body).into_owned();
            session
                .update(|i| {
                    i.state = UploadState::Failed;
                    i.error = Some(format!("element {element_id} refused: {detail}"));
                })
                .map_err(io)?;
            let problem: Value = serde_json::from_str(&detail).unwrap_or(Value::Null);
            let msg = problem["detail"].as_str().unwrap_or(&detail).to_owned();
            Err(ApiError::typed(
                match answer.status {
                    400 => ErrorCode::BadRequest,
                    401 => ErrorCode::Unauthenticated,
                    403 => ErrorCode::Forbidden,
                    404 => ErrorCode::NotFound,
                    409 => ErrorCode::Conflict,
                    _ => ErrorCode::BadRequest,
                },
                "upload-refused",
                format!("element {element_id} refused the document: {msg}"),
            ))
        }
        Err(e) => {
            // Back to the offset before this chunk: the client sends it again and the
            // store is tried again.
            let _ = std::fs::OpenOptions::new().write(true).open(session.data()).and_then(|f| {
                f.set_len(final_from)?;
                f.sync_data()
            });
            session.set_committed(final_from).map_err(io)?;
            session
                .update(|i| {
                    i.state = UploadState::Receiving;
                    i.error = Some(e.detail.clone());
                })
                .map_err(io)?;
            Err(e)
        }
    }
}

/// Runs the expiry sweep (and the idempotency keys' sweep) every `interval`.
pub fn spawn_sweeper(ing: Arc<Ingester>, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let n = ing.sessions.sweep(Utc::now());
            let k = ing.keys.sweep();
            if n + k > 0 {
                tracing::info!(sessions = n, idempotency_keys = k, "expired uploads and keys swept");
            }
        }
    })
}

/// Property-based fuzzing of the private tus header parsers (`Upload-Metadata`,
/// `Upload-Checksum`, `Tus-Resumable`); the headers parsed inside the handlers
/// (`Upload-Length`, `Upload-Offset`) are fuzzed over HTTP in `tests/fuzz_tus.rs`.
/// `ARTSTORE_FUZZ_CASES` cases per property (2000 by default); a long campaign:
/// `ARTSTORE_FUZZ_CASES=1000000 cargo nextest run -p artstore-ingester --lib tus::fuzz`
/// (the ignored test is a finding's regression case: `--run-ignored only`).
/// A header's value, or a 400 when it is present but not ASCII: a header that cannot be
/// read must never count as absent (that would drop retention fields or skip a checksum).
fn ascii_header(h: &axum::http::HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.to_owned()))
            .map_err(|_| bad(format!("{name} holds bytes that are not ASCII (values are base64 encoded)"))),
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use artstore_shared::upload::check_field;
    use proptest::prelude::*;
    use proptest::sample::Index;

    fn cases() -> u32 {
        std::env::var("ARTSTORE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
    }

    fn config() -> ProptestConfig {
        ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(cases()) }
    }

    /// A key of `Upload-Metadata`: ours, the usual client ones, or any other (no space,
    /// no comma, as tus says).
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec!["filename", "name", "content_type", "filetype", "type"]).prop_map(str::to_owned),
            3 => prop::sample::select(FORM_FIELDS).prop_map(str::to_owned),
            1 => prop::sample::select(vec!["relativePath", "Filename", "TAGS", "file", "after_version"]).prop_map(str::to_owned),
            1 => "[!-+\\--~]{1,10}",
        ]
    }

    /// A value for a key: valid for our form fields most of the time, anything otherwise.
    fn value_for(key: &str) -> BoxedStrategy<Option<String>> {
        let valid: BoxedStrategy<String> = match key {
            "metadata" => {
                prop_oneof![Just("{}".to_owned()), "\\{\"[a-z]{1,5}\": ?[0-9]{1,4}\\}", Just("[1]".to_owned())].boxed()
            }
            "document_id" => prop_oneof![any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()), ".{0,8}"].boxed(),
            "retention_mode" => prop::sample::select(vec!["compliance", "governance", "none", "", " none", "forever"])
                .prop_map(str::to_owned)
                .boxed(),
            "retain_until" => prop::sample::select(vec![
                "2030-01-01T00:00:00Z",
                "2030-01-01T00:00:00+02:00",
                " 2030-01-01T00:00:00Z ",
                "tomorrow",
                "2030-13-01T00:00:00Z",
            ])
            .prop_map(str::to_owned)
            .boxed(),
            "legal_hold" => {
                prop::sample::select(vec!["true", "false", "", "yes", "TRUE"]).prop_map(str::to_owned).boxed()
            }
            "disposition" => {
                prop::sample::select(vec!["dispose", "review", "", "burn"]).prop_map(str::to_owned).boxed()
            }
            _ => any::<String>().boxed(),
        };
        prop_oneof![1 => Just(None), 6 => valid.prop_map(Some)].boxed()
    }

    fn pairs() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
        prop::collection::vec(key().prop_flat_map(|k| (Just(k.clone()), value_for(&k))), 0..8)
    }

    /// What `parse_metadata` must answer for these pairs: tus 1.0.0 creation, with our
    /// form fields checked as every writer checks them.
    fn model(pairs: &[(String, Option<String>)]) -> Result<(String, String, UploadFields), ()> {
        let mut filename = "file".to_owned();
        let mut content_type = "application/octet-stream".to_owned();
        let mut fields = UploadFields::default();
        for (k, v) in pairs {
            let v = v.clone().unwrap_or_default();
            match k.as_str() {
                "filename" | "name" => filename = v,
                "content_type" | "filetype" | "type" if !v.is_empty() => content_type = v,
                "content_type" | "filetype" | "type" => {}
                k if FORM_FIELDS.contains(&k) => {
                    if check_field(k, &v).is_err() || fields.get(k).is_some() {
                        return Err(());
                    }
                    fields.0.push((k.to_owned(), v));
                }
                _ => {}
            }
        }
        Ok((filename, content_type, fields))
    }

    fn header(pairs: &[(String, Option<String>)], sep: &str) -> String {
        pairs
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k} {}", B64.encode(v)),
                None => k.clone(),
            })
            .collect::<Vec<_>>()
            .join(sep)
    }

    /// What holds of any answer: refusals are 400s naming the header; what is accepted
    /// passed the form's checks; a value that is not base64 is never accepted.
    fn check_any(raw: &str) -> Result<(), TestCaseError> {
        let malformed = raw.split(',').map(str::trim).filter(|p| !p.is_empty()).any(|p| {
            p.split_once(' ').is_some_and(|(_, v)| !matches!(B64.decode(v.trim()).map(String::from_utf8), Ok(Ok(_))))
        });
        match parse_metadata(raw) {
            Ok((_, _, fields)) => {
                prop_assert!(!malformed, "a value that is not base64 UTF-8 was accepted: {:?}", raw);
                for (k, v) in &fields.0 {
                    prop_assert!(FORM_FIELDS.contains(&k.as_str()));
                    prop_assert!(check_field(k, v).is_ok(), "{}={:?} was accepted", k, v);
                }
            }
            Err(e) => {
                prop_assert_eq!(e.code, ErrorCode::BadRequest);
                prop_assert!(e.detail.starts_with("Upload-Metadata"), "{}", e.detail);
            }
        }
        Ok(())
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Truncate(Index),
        FlipBit(Index, u8),
        Insert(Index, String),
        Delete(Index, usize),
        Duplicate(Index, usize),
        Separators(Index, char, usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            any::<Index>().prop_map(Mutation::Truncate),
            (any::<Index>(), 0u8..7).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
            (
                any::<Index>(),
                prop_oneof![
                    "[\\PC]{1,3}",
                    Just("=".to_owned()),
                    Just("99999999999999999999".to_owned()),
                    Just("\u{0}".to_owned())
                ]
            )
                .prop_map(|(i, s)| Mutation::Insert(i, s)),
            (any::<Index>(), 1usize..6).prop_map(|(i, n)| Mutation::Delete(i, n)),
            (any::<Index>(), 1usize..12).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
            (any::<Index>(), prop::sample::select(vec![',', ' ', '=', '\t']), 1usize..20)
                .prop_map(|(i, c, n)| Mutation::Separators(i, c, n)),
        ]
    }

    fn apply(input: &str, ms: &[Mutation]) -> String {
        let mut b = input.as_bytes().to_vec();
        for m in ms {
            let at = |i: &Index, b: &Vec<u8>| i.index(b.len() + 1);
            match m {
                Mutation::Truncate(i) => {
                    let n = at(i, &b);
                    b.truncate(n);
                }
                Mutation::FlipBit(i, bit) => {
                    if !b.is_empty() {
                        let n = i.index(b.len());
                        b[n] ^= 1 << bit;
                    }
                }
                Mutation::Insert(i, s) => {
                    let n = at(i, &b);
                    b.splice(n..n, s.bytes());
                }
                Mutation::Delete(i, len) => {
                    let n = at(i, &b);
                    let end = (n + len).min(b.len());
                    b.drain(n..end);
                }
                Mutation::Duplicate(i, len) => {
                    let n = at(i, &b);
                    let end = (n + len).min(b.len());
                    let seg = b[n..end].to_vec();
                    b.splice(n..n, seg);
                }
                Mutation::Separators(i, c, k) => {
                    let n = at(i, &b);
                    b.splice(n..n, c.to_string().repeat(*k).bytes());
                }
            }
        }
        String::from_utf8_lossy(&b).into_owned()
    }

    fn digest_of(alg: &'static ring::digest::Algorithm, data: &[u8]) -> Vec<u8> {
        ring::digest::digest(alg, data).as_ref().to_vec()
    }

    proptest! {
        #![proptest_config(config())]

        /// A header built from pairs parses to what tus and the form say.
        #[test]
        fn metadata_round_trip(pairs in pairs(), sep in prop::sample::select(vec![",", ", ", " ,", " , ", ",,", ",\t"]), pad in "[ \t]{0,2}") {
            let raw = format!("{pad}{}{pad}", header(&pairs, sep));
            let got = parse_metadata(&raw);
            match model(&pairs) {
                Ok(want) => {
                    prop_assert!(got.is_ok(), "{:?} refused: {:?}", raw, got.as_ref().err().map(|e| &e.detail));
                    prop_assert_eq!(got.ok(), Some(want), "{}", raw);
                }
                Err(()) => prop_assert!(got.is_err(), "{:?} accepted", raw),
            }
            check_any(&raw)?;
        }

        /// Any text: never a panic; only base64 UTF-8 values that pass the form's checks.
        #[test]
        fn metadata_random(raw in prop_oneof![any::<String>(), "([a-z_]{1,12}( [A-Za-z0-9+/=]{0,12})?,? ?){0,6}"]) {
            check_any(&raw)?;
        }

        /// Valid headers, mutated.
        #[test]
        fn metadata_mutated(pairs in pairs(), ms in prop::collection::vec(mutation(), 1..4)) {
            check_any(&apply(&header(&pairs, ","), &ms))?;
        }

        /// `Upload-Checksum`: the two algorithms with base64 digests parse to the bytes
        /// given; anything else is a 400.
        #[test]
        fn checksum_round_trip(data in prop::collection::vec(any::<u8>(), 0..64), sha1 in any::<bool>(), ws in "[ \t]{0,2}") {
            let (name, want) = if sha1 {
                ("sha1", digest_of(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &data))
            } else {
                ("sha256", digest_of(&ring::digest::SHA256, &data))
            };
            let v = format!("{ws}{name} {ws}{}{ws}", B64.encode(&want));
            match parse_checksum(&v) {
                Ok(Checksum::Sha1(w, c)) => {
                    prop_assert!(sha1);
                    prop_assert_eq!(w, want);
                    prop_assert_eq!(c.algorithm(), &ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
                }
                Ok(Checksum::Sha256(w, c)) => {
                    prop_assert!(!sha1);
                    prop_assert_eq!(w, want);
                    prop_assert_eq!(c.algorithm(), &ring::digest::SHA256);
                }
                Err(e) => return Err(TestCaseError::fail(format!("{v:?} refused: {}", e.detail))),
            }
        }

        /// Any other text: never a panic; an unknown algorithm, a value that is not base64
        /// or a digest of the wrong length is a 400.
        #[test]
        fn checksum_random(
            v in prop_oneof![
                any::<String>(),
                "(sha1|sha256|md5|SHA256|crc32) ?[A-Za-z0-9+/=]{0,50}",
                "sha256 [A-Za-z0-9+/]{43}=",
            ],
            ms in prop::collection::vec(mutation(), 0..3),
        ) {
            let v = apply(&v, &ms);
            let well_formed = v.trim().split_once(' ').is_some_and(|(alg, val)| {
                let len = B64.decode(val.trim()).map(|d| d.len());
                (alg == "sha1" && len == Ok(20)) || (alg == "sha256" && len == Ok(32))
            });
            match parse_checksum(&v) {
                Ok(_) => prop_assert!(well_formed, "{:?} accepted", v),
                Err(e) => {
                    prop_assert!(!well_formed, "{:?} refused: {}", v, e.detail);
                    prop_assert_eq!(e.code, ErrorCode::BadRequest);
                }
            }
        }

        /// `Tus-Resumable`: exactly `1.0.0`, anything else (or nothing) is a 412.
        #[test]
        fn resumable_header(v in prop_oneof![Just(Some(b"1.0.0".to_vec())), prop::option::of(prop::collection::vec(any::<u8>(), 0..12)), prop::option::of("[0-9. ]{0,7}".prop_map(String::into_bytes))]) {
            let mut h = HeaderMap::new();
            let value = v.as_deref().and_then(|b| axum::http::HeaderValue::from_bytes(b).ok());
            if let Some(value) = &value {
                h.insert("tus-resumable", value.clone());
            }
            let r = check_resumable(&h);
            prop_assert_eq!(r.is_ok(), value.as_ref().is_some_and(|x| x.as_bytes() == TUS_VERSION.as_bytes()));
            if let Err(e) = r {
                prop_assert_eq!(e.code, ErrorCode::PreconditionFailed);
            }
        }
    }

    /// A digest of the wrong length can never match: tus answers a malformed checksum
    /// with 400 before the chunk is taken, but this one is accepted and the chunk is read
    /// and written in full before a 460 "mismatch".
    #[test]
    fn checksum_wrong_length_regression() {
        for v in ["sha256 AAAA".to_owned(), "sha1 AAAA".to_owned(), format!("sha256 {}", B64.encode([0u8; 31]))] {
            assert!(parse_checksum(&v).is_err(), "{v:?} accepted");
        }
    }
}
