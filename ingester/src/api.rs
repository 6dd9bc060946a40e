//! The ingester's HTTP API: uploads (`POST /api/v1/files`), resumable uploads
//! (`/api/v1/uploads`, tus 1.0.0, in [`crate::tus`]), and the writes on existing documents,
//! forwarded to the element that holds them.

use crate::form::{bad, digest_mismatch, hex, sha256_from_digest_header, text_field};
use crate::idempotency::KeptAnswer;
use crate::store::{Content, FileHead, Ingester, Outcome};
use artstore_shared::auth::{Auth, Caller, Permission};
use artstore_shared::clients::{ClientError, MultipartWriter};
use artstore_shared::upload::UploadFields;
use artstore_shared::{ApiError, ErrorCode};
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use futures_util::TryStreamExt as _;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Handler state.
#[derive(Clone)]
pub struct AppState {
    pub ingester: Arc<Ingester>,
    pub auth: Auth,
}

impl FromRef<AppState> for Auth {
    fn from_ref(s: &AppState) -> Auth {
        s.auth.clone()
    }
}

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every route this API serves, as (method, path); the OpenAPI test reads this list.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/files"),
    ("patch", "/api/v1/files/{id}"),
    ("delete", "/api/v1/files/{id}"),
    ("put", "/api/v1/files/{id}/legal-hold"),
    ("put", "/api/v1/files/{id}/retention"),
    ("post", "/api/v1/files/{id}/restore"),
    ("options", "/api/v1/uploads"),
    ("post", "/api/v1/uploads"),
    ("get", "/api/v1/uploads/{id}"),
    ("head", "/api/v1/uploads/{id}"),
    ("patch", "/api/v1/uploads/{id}"),
    ("delete", "/api/v1/uploads/{id}"),
    ("options", "/api/v1/uploads/{id}"),
    ("get", "/api/v1/openapi.json"),
];

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route("/api/v1/files", post(post_file))
        .route("/api/v1/files/{id}", axum::routing::patch(forward_write).delete(forward_write))
        .route("/api/v1/files/{id}/legal-hold", put(forward_write))
        .route("/api/v1/files/{id}/retention", put(forward_write))
        .route("/api/v1/files/{id}/restore", post(forward_write))
        .merge(crate::tus::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// The caller's bearer token, to pass through to elements.
pub fn bearer(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_owned())
        .unwrap_or_default()
}

/// An answer that can be kept for an idempotency key and given again.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn json(status: u16, headers: Vec<(String, String)>, body: &Value) -> Self {
        let mut headers = headers;
        headers.push(("content-type".into(), "application/json".into()));
        Self { status, headers, body: body.to_string() }
    }

    pub fn problem(e: &ApiError) -> Self {
        Self {
            status: e.code.status().as_u16(),
            headers: vec![("content-type".into(), "application/problem+json".into())],
            body: e.to_problem().to_string(),
        }
    }

    pub fn into_response(self, replayed: bool) -> Response {
        let mut b = Response::builder().status(self.status);
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        if replayed {
            b = b.header("idempotent-replayed", "true");
        }
        b.body(Body::from(self.body)).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }

    fn kept(&self) -> KeptAnswer {
        KeptAnswer {
            status: self.status,
            headers: self.headers.clone(),
            body: self.body.clone(),
            created_at: chrono::Utc::now(),
        }
    }

    fn from_kept(k: KeptAnswer) -> Self {
        Self { status: k.status, headers: k.headers, body: k.body }
    }
}

/// Runs `work` once per (caller, route, `Idempotency-Key`): a retry gets the first answer.
/// With `plan_file` (routes that store a file) `work` gets the file id planned for the
/// upload when a key was given; a retry after an attempt that left no answer first looks
/// for a document stored under that id, and answers it rather than storing it again.
pub async fn once<F, Fut>(
    ing: &Ingester,
    caller: &Caller,
    route: &str,
    headers: &HeaderMap,
    plan_file: bool,
    work: F,
) -> Response
where
    F: FnOnce(Option<Uuid>) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty());
    let Some(key) = key else { return work(None).await.into_response(false) };
    if key.len() > 255 {
        return Answer::problem(&bad("Idempotency-Key is longer than 255 characters")).into_response(false);
    }
    match ing.keys.begin(&caller.subject, route, key, plan_file).await {
        Err(e) => Answer::problem(&ApiError::typed(
            ErrorCode::Unavailable,
            "idempotency-unavailable",
            format!("the idempotency key could not be recorded ({e}); nothing was stored, retry later"),
        ))
        .into_response(false),
        Ok(Ok(kept)) => Answer::from_kept(kept).into_response(true),
        Ok(Err(guard)) => {
            if let (true, Some(id)) = (guard.recovered, guard.file_id) {
                match ing.recover(&bearer(headers), id).await {
                    // Stored by the earlier attempt: that is the answer.
                    Ok(Some(outcome)) => {
                        tracing::info!(file_id = %id, "a retried upload found what the earlier attempt stored");
                        let answer = stored_answer(outcome);
                        ing.keys.keep(guard, answer.kept());
                        return answer.into_response(true);
                    }
                    Ok(None) => {}
                    // Not known whether the earlier attempt stored it: nothing is stored now.
                    Err(e) => return Answer::problem(&e).into_response(false),
                }
            }
            let answer = work(guard.file_id).await;
            ing.keys.keep(guard, answer.kept());
            answer.into_response(false)
        }
    }
}

/// The 201 answer for a stored document.
pub fn stored_answer(o: Outcome) -> Answer {
    match o {
        Outcome::Stored { element_id: _, file_id, sidecar } => {
            Answer::json(201, vec![("location".into(), format!("/api/v1/files/{file_id}"))], &sidecar)
        }
        Outcome::Refused { element_id, answer } => Answer {
            status: answer.status,
            headers: vec![
                ("content-type".into(), answer.content_type.unwrap_or_else(|| "application/problem+json".into())),
                ("artstore-element-id".into(), element_id),
            ],
            body: String::from_utf8_lossy(&answer.body).into_owned(),
        },
    }
}

/// `POST /api/v1/files`.
async fn post_file(State(s): State<AppState>, caller: Caller, req: Request) -> Response {
    if let Err(e) = caller.require(Permission::Create) {
        return e.into_response();
    }
    let headers = req.headers().clone();
    let ing = s.ingester.clone();
    let (ing2, headers2) = (ing.clone(), headers.clone());
    once(&ing, &caller, "POST /api/v1/files", &headers, true, |planned| async move {
        match ingest_multipart(&ing2, &headers2, req.into_body(), planned).await {
            Ok(a) => a,
            Err(e) => Answer::problem(&e),
        }
    })
    .await
}

/// A SHA-256 computed only when a digest will be compared.
#[derive(Clone)]
pub struct MaybeSha(Option<ring::digest::Context>);

impl MaybeSha {
    pub fn new(on: bool) -> Self {
        Self(on.then(|| ring::digest::Context::new(&ring::digest::SHA256)))
    }
    pub fn update(&mut self, b: &[u8]) {
        if let Some(c) = self.0.as_mut() {
            c.update(b);
        }
    }
    /// The digest in hex, if it was computed.
    pub fn hex(self) -> Option<String> {
        self.0.map(|c| hex(c.finish().as_ref()))
    }
}

/// What has been read of the client's form when the file part begins.
struct FormSoFar {
    fields: UploadFields,
    head: FileHead,
    part_digest: Option<String>,
    /// The file id planned for an upload with an idempotency key.
    planned: Option<Uuid>,
}

async fn ingest_multipart(
    ing: &Arc<Ingester>,
    headers: &HeaderMap,
    body: Body,
    planned: Option<Uuid>,
) -> Result<Answer, ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let boundary = multer::parse_boundary(ct).map_err(|_| {
        ApiError::typed(
            ErrorCode::UnsupportedMediaType,
            "unsupported-media-type",
            "POST /api/v1/files takes multipart/form-data with a boundary",
        )
    })?;
    let token = bearer(headers);
    let request_digest = headers.get("content-digest").map(sha256_from_digest_header).transpose()?.flatten();
    let declared: Option<u64> =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    // Digests cost a pass over every byte: computed only when the client gave one to compare.
    let body_hash = Arc::new(Mutex::new(MaybeSha::new(request_digest.is_some())));
    let hasher = body_hash.clone();
    let stream = body.into_data_stream().map_ok(move |chunk| {
        hasher.lock().unwrap_or_else(|e| e.into_inner()).update(&chunk);
        chunk
    });
    let mut mp = multer::Multipart::new(artstore_shared::upload::paced(stream), boundary);
    let mut fields = UploadFields::default();
    let limit = ing.cfg.replay_buffer_bytes as usize;
    let malformed = |e: multer::Error| bad(format!("malformed multipart body: {e}"));
    let mut file: Option<(FileHead, Bytes, Option<String>)> = None;
    while let Some(mut field) = mp.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or("").to_owned();
        if name != "file" {
            let v = text_field(field, &name).await?;
            fields.push(&name, v).map_err(bad)?;
            continue;
        }
        if file.is_some() {
            return Err(bad("more than one \"file\" part"));
        }
        let head = FileHead {
            filename: field.file_name().unwrap_or("file").to_owned(),
            content_type: field
                .content_type()
                .map(|m| m.to_string())
                .unwrap_or_else(|| "application/octet-stream".into()),
            sha256: None,
        };
        let part_digest = field.headers().get("content-digest").map(sha256_from_digest_header).transpose()?.flatten();
        let mut file_hash = MaybeSha::new(request_digest.is_some() || part_digest.is_some());
        // Held as the chunks that arrived (no copies): one contiguous buffer grown by
        // doubling cost up to twice the replay limit, and again when the prefix was built.
        let mut buf: Vec<Bytes> = Vec::new();
        let mut held = 0usize;
        while let Some(c) = field.chunk().await.map_err(malformed)? {
            file_hash.update(&c);
            held += c.len();
            buf.push(c);
            if held > limit {
                // Too big to hold: it streams through to one element.
                let so_far = FormSoFar { fields, head, part_digest, planned };
                return stream_through(
                    ing,
                    &token,
                    so_far,
                    buf,
                    file_hash,
                    field,
                    mp,
                    body_hash,
                    request_digest,
                    declared,
                )
                .await;
            }
        }
        let sha = file_hash.hex();
        if let (Some(expected), Some(sha)) = (&part_digest, &sha)
            && expected != sha
        {
            return Err(digest_mismatch(expected, sha));
        }
        file = Some((head, Bytes::from(buf.concat()), sha));
    }
    let (mut head, content, sha) = file.ok_or_else(|| bad("the multipart body has no \"file\" part"))?;
    if let (Some(expected), Some(sha)) = (&request_digest, &sha) {
        // RFC 9530 digests the message content (the multipart body); clients commonly
        // digest the file itself. Either matching is proof of an intact upload.
        let body = body_hash.lock().unwrap_or_else(|e| e.into_inner()).clone().hex();
        if expected != sha && Some(expected) != body.as_ref() {
            return Err(digest_mismatch(expected, sha));
        }
    }
    head.sha256 = sha;
    let size = content.len() as u64;
    let outcome = ing.store(&token, &fields, &head, &Content::Memory(content), size, planned).await?;
    Ok(stored_answer(outcome))
}

/// A file too big to hold streams through to the first candidate that is reachable and
/// writable right now; the body's end (the closing boundary) is sent only after every
/// digest the client gave matched, so a mismatch or a broken client body leaves nothing
/// stored on the element.
#[allow(clippy::too_many_arguments)]
async fn stream_through(
    ing: &Arc<Ingester>,
    token: &str,
    so_far: FormSoFar,
    buffered: Vec<Bytes>,
    file_hash: MaybeSha,
    field: multer::Field<'static>,
    mp: multer::Multipart<'static>,
    body_hash: Arc<Mutex<MaybeSha>>,
    request_digest: Option<String>,
    declared: Option<u64>,
) -> Result<Answer, ApiError> {
    let started = std::time::Instant::now();
    let FormSoFar { fields, head, part_digest, planned } = so_far;
    let class = ing.class_of(token, &fields).await;
    let _doc_lock = match fields.document_id() {
        Some(d) => Some(ing.lock_document(d).await),
        None => None,
    };
    let after = match fields.document_id() {
        Some(d) => Some(ing.newest_version(token, d).await?),
        None => None,
    };
    let need = declared.unwrap_or(ing.cfg.unknown_size_reserve_bytes);
    let mut chosen = None;
    let (candidates, pinned) = ing.candidates_for(class, need, planned)?;
    for (i, e) in candidates.into_iter().enumerate() {
        if i > 0 {
            ing.metrics.retries.inc();
        }
        // Only a fresh look can be trusted before a body that cannot be sent twice.
        let p = artstore_shared::discovery::probe(ing.http(), &e.url).await;
        if p.ok && p.mode.as_deref().is_some_and(|m| m == "edit" || m == "rw") {
            chosen = Some(e);
            break;
        }
        tracing::warn!(element = %e.id, "element not writable at a fresh look; trying the next");
    }
    if let (None, Some(el)) = (&chosen, &pinned) {
        return Err(crate::store::pinned_unavailable(el, "it is not reachable and writable now"));
    }
    let e = chosen.ok_or_else(|| {
        ApiError::typed(
            ErrorCode::Unavailable,
            "no-writable-element",
            "no candidate element is reachable and writable now",
        )
    })?;
    tracing::info!(element = %e.id, class = class.as_str(), "streaming upload through");
    let w = MultipartWriter::new();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let mut prefix = Vec::new();
    for (n, v) in &fields.0 {
        prefix.extend_from_slice(&w.text(n, v));
    }
    if let Some(a) = after {
        prefix.extend_from_slice(&w.text("after_version", &a.to_string()));
    }
    if let Some(id) = planned {
        prefix.extend_from_slice(&w.text("file_id", &id.to_string()));
    }
    prefix.extend_from_slice(&w.file_head(&head.filename, &head.content_type, part_digest.as_deref()));
    let size = Arc::new(std::sync::atomic::AtomicU64::new(buffered.iter().map(|b| b.len() as u64).sum()));
    let counted = size.clone();
    let wr = w.clone();
    let (field, mp) = (field, mp);
    // The producer: the rest of the client's body, checked, then the closing boundary.
    let rest = Rest { field, mp, file_hash, body_hash, part_digest, request_digest, counted };
    let producer = tokio::spawn(async move {
        let r = produce(&tx, &wr, Bytes::from(prefix), buffered, rest).await;
        if let Err(e) = &r {
            // Breaks the request to the element: it keeps nothing of a broken body.
            let _ = tx.send(Err(std::io::Error::other(e.detail.clone()))).await;
        }
        r
    });
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let sent = ing.elements.create(&e.url, token, &w.content_type(), body).await;
    let produced = producer.await.map_err(|e| ApiError::internal(format!("upload task failed: {e}")))?;
    // The client's body was broken or did not match its digest (an element that stopped
    // reading is told by its own answer below).
    if let Err(e) = produced
        && e.kind != ELEMENT_STOPPED
    {
        return Err(e);
    }
    let total = size.load(std::sync::atomic::Ordering::Relaxed);
    match sent {
        Ok(f) if f.status == 201 => Ok(stored_answer(ing.stored(&e, f, total, started))),
        Ok(f) if crate::store::stored_earlier(&f, planned) => {
            Ok(stored_answer(ing.stored_on(&e, token, planned.unwrap_or_default()).await?))
        }
        Ok(f) => Ok(stored_answer(Outcome::Refused { element_id: e.id.clone(), answer: f })),
        Err(err @ ClientError::Undecided { .. }) => Err(ing.undecided(&e, &err, planned)),
        Err(err) => Err(ApiError::typed(
            ErrorCode::BadGateway,
            "element-failed",
            format!("element {} failed during the upload ({err}); nothing was stored, send it again", e.id),
        )
        .with("element_id", e.id.clone())),
    }
}

/// The producer's error when the element went away: the element's answer tells the rest.
const ELEMENT_STOPPED: &str = "element-stopped";

/// What is left of the client's body when the file starts streaming through.
struct Rest {
    field: multer::Field<'static>,
    mp: multer::Multipart<'static>,
    file_hash: MaybeSha,
    body_hash: Arc<Mutex<MaybeSha>>,
    part_digest: Option<String>,
    request_digest: Option<String>,
    counted: Arc<std::sync::atomic::AtomicU64>,
}

/// Sends the prefix, the rest of the file, the fields after it, and — only when every
/// digest matched — the closing boundary.
async fn produce(
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    w: &MultipartWriter,
    prefix: Bytes,
    buffered: Vec<Bytes>,
    rest: Rest,
) -> Result<(), ApiError> {
    let Rest { mut field, mut mp, mut file_hash, body_hash, part_digest, request_digest, counted } = rest;
    let send = |b: Bytes| async move {
        tx.send(Ok(b))
            .await
            .map_err(|_| ApiError::typed(ErrorCode::BadGateway, ELEMENT_STOPPED, "the element stopped reading"))
    };
    let malformed = |e: multer::Error| bad(format!("malformed multipart body: {e}"));
    send(prefix).await?;
    for b in buffered {
        send(b).await?;
    }
    while let Some(c) = field.chunk().await.map_err(malformed)? {
        file_hash.update(&c);
        counted.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
        send(c).await?;
    }
    // The next part can only be read once this one is gone.
    drop(field);
    send(w.file_end()).await?;
    while let Some(f) = mp.next_field().await.map_err(malformed)? {
        let name = f.name().unwrap_or("").to_owned();
        if name == "file" {
            return Err(bad("more than one \"file\" part"));
        }
        let v = text_field(f, &name).await?;
        artstore_shared::upload::check_field(&name, &v).map_err(bad)?;
        send(w.text(&name, &v)).await?;
    }
    let sha = file_hash.hex().unwrap_or_default();
    if let Some(expected) = &part_digest
        && *expected != sha
    {
        return Err(digest_mismatch(expected, &sha));
    }
    if let Some(expected) = &request_digest {
        let body = body_hash.lock().unwrap_or_else(|e| e.into_inner()).clone().hex().unwrap_or_default();
        if *expected != sha && *expected != body {
            return Err(digest_mismatch(expected, &sha));
        }
    }
    send(w.close()).await
}

/// `PATCH|DELETE /api/v1/files/{id}`, `PUT …/legal-hold`, `PUT …/retention`,
/// `POST …/restore`: sent on to the element holding the file, with the caller's token.
async fn forward_write(State(s): State<AppState>, caller: Caller, Path(id): Path<String>, req: Request) -> Response {
    let _ = &caller;
    let r = async {
        let file_id = Uuid::parse_str(&id).map_err(|_| bad(format!("file id {id:?} is not a UUID")))?;
        let (parts, body) = req.into_parts();
        let body =
            axum::body::to_bytes(body, 1 << 20).await.map_err(|_| bad("the request body is larger than 1 MiB"))?;
        let token = bearer(&parts.headers);
        let e = s.ingester.locate(&token, file_id).await?;
        let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(parts.uri.path());
        let url = format!("{}{pq}", e.url);
        let mut h = reqwest::header::HeaderMap::new();
        for name in ["authorization", "content-type", "x-request-id", "traceparent", "if-match"] {
            if let Some(v) = parts.headers.get(name) {
                h.insert(name, v.clone());
            }
        }
        let f = s.ingester.elements.forward(parts.method.clone(), &url, h, body).await.map_err(|err| {
            ApiError::typed(
                ErrorCode::Unavailable,
                "element-unreachable",
                format!("element {} did not answer: {err}", e.id),
            )
            .with("element_id", e.id.clone())
        })?;
        let mut b = Response::builder().status(f.status).header("artstore-element-id", e.id.as_str());
        if let Some(ct) = f.content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(Body::from(f.body)).map_err(|e| ApiError::internal(e.to_string()))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}
