//! The ingester's engine: choosing elements, numbering versions across them, and storing
//! a document on the first element that takes it.

use crate::config::IngesterConfig;
use crate::idempotency::IdempotencyKeys;
use crate::locations::LocationHints;
use crate::placement::{self, Class, RetentionAsked};
use artstore_shared::clients::{AdminClient, ClientError, ElementClient, Forwarded, MultipartWriter, PolicyView};
use artstore_shared::discovery::{Discovery, ElementView};
use artstore_shared::health::Health;
use artstore_shared::upload::UploadFields;
use artstore_shared::{ApiError, ErrorCode};
use bytes::Bytes;
use chrono::Utc;
use futures_util::StreamExt as _;
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Where the content of a document to store comes from; both can be sent again, so a
/// refusing element is followed by the next candidate.
#[derive(Debug, Clone)]
pub enum Content {
    /// Read whole (small multipart uploads).
    Memory(Bytes),
    /// A finished resumable upload in the ingester's data folder.
    Disk(PathBuf),
}

/// The file part: its name, type and (if the client gave one) expected SHA-256.
#[derive(Debug, Clone, Default)]
pub struct FileHead {
    pub filename: String,
    pub content_type: String,
    pub sha256: Option<String>,
}

/// What storing answered.
#[derive(Debug)]
pub enum Outcome {
    /// 201: the element's sidecar, with `element_id` added.
    Stored { element_id: String, file_id: Uuid, sidecar: Value },
    /// The element refused in a way retrying elsewhere cannot mend (a bad field, a
    /// permission): its answer goes to the client as it is.
    Refused { element_id: String, answer: Forwarded },
}

/// Counters an operator watches.
#[derive(Debug)]
pub struct IngestMetrics {
    pub placements: Counter,
    pub retries: Counter,
    pub bytes: Counter,
    pub tus_sessions: Counter,
    /// Upload to stored, by size class.
    pub durations: artstore_shared::health::HistogramBy,
    /// Elements up (fresh heartbeat or probe), by mode.
    pub elements:
        prometheus_client::metrics::family::Family<Vec<(String, String)>, prometheus_client::metrics::gauge::Gauge>,
}

/// The ingester's shared state.
#[derive(Debug)]
pub struct Ingester {
    pub cfg: IngesterConfig,
    pub data: PathBuf,
    pub discovery: Arc<dyn Discovery>,
    pub elements: ElementClient,
    pub admin: Option<AdminClient>,
    pub hints: LocationHints,
    pub keys: IdempotencyKeys,
    pub sessions: crate::tus::Sessions,
    pub health: Health,
    pub metrics: IngestMetrics,
    http: reqwest::Client,
    horizon: artstore_shared::retention::Term,
    policies: Mutex<HashMap<String, (Instant, PolicyView)>>,
    documents: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
}

/// Is this element answer worth trying the next candidate for? Refusals that come before
/// anything is stored: the mode (changed under us), no room, unavailable, a failure.
fn retryable(status: u16, body: &[u8]) -> bool {
    status >= 500 || (status == 409 && problem_type_is(body, "mode-refused"))
}

/// Whether `body` is a problem of type `slug`.
pub fn problem_type_is(body: &[u8], slug: &str) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["type"].as_str().map(|t| t.rsplit('/').next() == Some(slug)))
        .unwrap_or(false)
}

impl Ingester {
    pub fn new(
        cfg: IngesterConfig,
        data: PathBuf,
        discovery: Arc<dyn Discovery>,
        health: Health,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&data)?;
        let horizon = artstore_shared::retention::Term::parse(&cfg.temporary_horizon)
            .map_err(|e| anyhow::anyhow!("temporary_horizon {:?}: {e}", cfg.temporary_horizon))?;
        // No overall timeout: a 10 GiB upload takes as long as it takes; a silent peer
        // is noticed by the read timeout.
        let http = artstore_shared::tls::http_client()
            .connect_timeout(Duration::from_secs(2))
            .read_timeout(Duration::from_secs(120))
            .build()?;
        let m = health.metrics();
        let metrics = IngestMetrics {
            placements: m.counter("ingester_placements", "uploads placed on an element"),
            retries: m.counter("ingester_placement_retries", "candidates skipped because they refused or failed"),
            bytes: m.counter("ingester_upload_bytes", "content bytes stored through the ingester"),
            tus_sessions: m.counter("ingester_tus_sessions_created", "resumable upload sessions created"),
            durations: m.histogram_by(
                "ingester_upload_duration_seconds",
                "Time from the start of an upload to the element's answer, by size class",
                &artstore_shared::health::TRANSFER_BUCKETS,
            ),
            elements: m.gauge_by("ingester_elements_up", "Storage elements this ingester sees up, by mode"),
        };
        Ok(Self {
            hints: LocationHints::open(&data)?,
            keys: IdempotencyKeys::open(&data, Duration::from_secs(cfg.idempotency_ttl_secs))?,
            sessions: crate::tus::Sessions::open(&data)?,
            admin: cfg.admin_url.as_deref().map(AdminClient::new),
            elements: ElementClient::with_client(http.clone()),
            http,
            horizon,
            cfg,
            data,
            discovery,
            health,
            metrics,
            policies: Mutex::new(HashMap::new()),
            documents: Mutex::new(HashMap::new()),
        })
    }

    /// The HTTP client for elements.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A retention policy, from the admin with the caller's token (kept for a minute).
    async fn policy(&self, token: &str, name: &str) -> Option<PolicyView> {
        if let Some((at, p)) = self.policies.lock().unwrap_or_else(|e| e.into_inner()).get(name)
            && at.elapsed() < Duration::from_secs(60)
        {
            return Some(p.clone());
        }
        let admin = self.admin.as_ref()?;
        match admin.policy(token, name).await {
            Ok(p) => {
                self.policies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_owned(), (Instant::now(), p.clone()));
                Some(p)
            }
            Err(e) => {
                tracing::warn!(error = %e, policy = name, "policy not read; placing as permanent");
                None
            }
        }
    }

    /// Temporary or permanent.
    pub async fn class_of(&self, token: &str, fields: &UploadFields) -> Class {
        let now = Utc::now();
        let mut asked = RetentionAsked {
            any: fields.policy().is_some() || fields.explicit_retention(),
            until: fields.retain_until(),
            dispose: fields.disposes(),
        };
        if let Some(name) = fields.policy() {
            match self.policy(token, name).await {
                Some(p) => {
                    asked.dispose = p.disposition == "dispose";
                    asked.until = artstore_shared::retention::Term::parse(&p.term).ok().and_then(|t| t.add_to(now));
                }
                None => asked.until = None,
            }
        }
        let horizon_end = self.horizon.add_to(now).unwrap_or(now);
        placement::classify(&asked, horizon_end)
    }

    /// The candidates for an upload of `planned`: only the element it is pinned to when an
    /// earlier attempt there got no answer (and its id), else [`Ingester::candidates`].
    pub fn candidates_for(
        &self,
        class: Class,
        need: u64,
        planned: Option<Uuid>,
    ) -> Result<(Vec<ElementView>, Option<String>), ApiError> {
        let pinned = planned.and_then(|id| self.keys.pinned(id));
        match pinned {
            Some(el) => match self.discovery.elements().into_iter().find(|e| e.id == el) {
                Some(e) => Ok((vec![e], Some(el))),
                None => Err(pinned_unavailable(&el, "it is no longer known")),
            },
            None => Ok((self.candidates(class, need)?, None)),
        }
    }

    /// The candidates for an upload of `need` bytes, in order; none is a 503 that says why.
    pub fn candidates(&self, class: Class, need: u64) -> Result<Vec<ElementView>, ApiError> {
        let views = self.discovery.elements();
        let c = placement::candidates(&views, class, need);
        if c.is_empty() {
            let known: Vec<String> = views
                .iter()
                .map(|e| {
                    format!(
                        "{} ({}, {}, {} bytes free)",
                        e.id,
                        e.mode,
                        if e.up { "up" } else { "down" },
                        e.free_bytes.map(|b| b.to_string()).unwrap_or_else(|| "?".into())
                    )
                })
                .collect();
            return Err(ApiError::typed(
                ErrorCode::Unavailable,
                "no-writable-element",
                format!(
                    "no storage element can take {need} bytes now: none is up, writable (edit or rw) and has room; known: {}",
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                ),
            ));
        }
        Ok(c)
    }

    /// Serialises versions of one document through this ingester.
    pub async fn lock_document(&self, doc: Uuid) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self.documents.lock().unwrap_or_else(|e| e.into_inner()).entry(doc).or_default().clone();
        lock.lock_owned().await
    }

    /// The newest version of `doc` on any element (asked in parallel); every element must
    /// answer, since one that is down may hold the newest.
    pub async fn newest_version(&self, token: &str, doc: Uuid) -> Result<u32, ApiError> {
        let views = self.discovery.elements();
        let asks = views.iter().map(|e| async move { (e, self.elements.version_numbers(&e.url, token, doc).await) });
        let mut newest = None;
        for (e, r) in futures_util::future::join_all(asks).await {
            match r {
                Ok(v) => newest = newest.max(v.into_iter().max()),
                Err(ClientError::Refused { status: 401 | 403, detail, .. }) => {
                    return Err(ApiError::forbidden(detail));
                }
                Err(err) => {
                    return Err(ApiError::typed(
                        ErrorCode::Unavailable,
                        "element-unreachable",
                        format!("cannot number a new version of {doc}: element {} did not answer ({err}); retry when it is back", e.id),
                    )
                    .with("element_id", e.id.clone()));
                }
            }
        }
        newest.ok_or_else(|| ApiError::not_found(format!("document {doc} has no version on any storage element")))
    }

    /// Stores a document on the first candidate that takes it.
    pub async fn store(
        &self,
        token: &str,
        fields: &UploadFields,
        head: &FileHead,
        content: &Content,
        size: u64,
        planned: Option<Uuid>,
    ) -> Result<Outcome, ApiError> {
        let started = std::time::Instant::now();
        let class = self.class_of(token, fields).await;
        let _doc_lock = match fields.document_id() {
            Some(d) => Some(self.lock_document(d).await),
            None => None,
        };
        let after = match fields.document_id() {
            Some(d) => Some(self.newest_version(token, d).await?),
            None => None,
        };
        let (candidates, pinned) = self.candidates_for(class, size, planned)?;
        let mut last_error = String::new();
        let mut all_full = true;
        for (i, e) in candidates.iter().enumerate() {
            if i > 0 {
                self.metrics.retries.inc();
            }
            let w = MultipartWriter::new();
            let body = body_of(&w, fields, after, planned, head, content).await?;
            tracing::info!(element = %e.id, class = class.as_str(), size, attempt = i + 1, "placing upload");
            match self.elements.create(&e.url, token, &w.content_type(), body).await {
                Ok(f) if f.status == 201 => return Ok(self.stored(e, f, size, started)),
                Ok(f) if retryable(f.status, &f.body) => {
                    all_full &= f.status == 507;
                    last_error = format!("{} answered {}: {}", e.id, f.status, String::from_utf8_lossy(&f.body));
                    tracing::warn!(element = %e.id, status = f.status, "element refused the upload; trying the next");
                }
                Ok(f) if stored_earlier(&f, planned) => {
                    return self.stored_on(e, token, planned.unwrap_or_default()).await;
                }
                Ok(f) => return Ok(Outcome::Refused { element_id: e.id.clone(), answer: f }),
                // The element may have stored it: another element would make a second copy.
                Err(err @ ClientError::Undecided { .. }) => return Err(self.undecided(e, &err, planned)),
                Err(err) => {
                    all_full = false;
                    last_error = err.to_string();
                    tracing::warn!(element = %e.id, error = %err, "element failed the upload; trying the next");
                }
            }
        }
        if let Some(el) = pinned {
            return Err(pinned_unavailable(&el, &last_error));
        }
        if all_full {
            return Err(ApiError::typed(
                ErrorCode::InsufficientStorage,
                "insufficient-storage",
                format!("every candidate element is full; nothing was stored. The last: {last_error}"),
            ));
        }
        Err(ApiError::typed(
            ErrorCode::Unavailable,
            "no-writable-element",
            format!("every candidate element refused or failed the upload; the last: {last_error}"),
        ))
    }

    /// Records a stored document and shapes the answer.
    pub fn stored(&self, e: &ElementView, f: Forwarded, size: u64, started: std::time::Instant) -> Outcome {
        let mut sidecar: Value = serde_json::from_slice(&f.body).unwrap_or(Value::Null);
        let file_id = sidecar["file_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).unwrap_or_default();
        sidecar["element_id"] = Value::String(e.id.clone());
        self.hints.record(file_id, &e.id);
        self.metrics.placements.inc();
        self.metrics.bytes.inc_by(size);
        let class = artstore_shared::health::size_class(size);
        self.metrics.durations.observe("size_class", class, started.elapsed().as_secs_f64());
        tracing::info!(element = %e.id, %file_id, size, "stored");
        self.keys.unpin(file_id);
        Outcome::Stored { element_id: e.id.clone(), file_id, sidecar }
    }

    /// An attempt on `e` got no answer: the planned id is pinned to `e` (see
    /// [`IdempotencyKeys::pin`](crate::idempotency::IdempotencyKeys::pin)), and the answer is
    /// 503 `upload-undecided`.
    pub fn undecided(&self, e: &ElementView, err: &ClientError, planned: Option<Uuid>) -> ApiError {
        if let Some(id) = planned {
            self.keys.pin(id, &e.id);
        }
        undecided_problem(&e.id, err, planned.is_some())
    }

    /// What an earlier attempt of an upload stored under its planned `file_id`: the stored
    /// document (`Some`), nothing on any element (`None`), or 503 when an element that might
    /// hold it does not answer.
    pub async fn recover(&self, token: &str, file_id: Uuid) -> Result<Option<Outcome>, ApiError> {
        let e = match self.locate(token, file_id).await {
            Ok(e) => e,
            Err(err) if err.code == ErrorCode::NotFound => return Ok(None),
            Err(err) => {
                return Err(ApiError::typed(
                    ErrorCode::Unavailable,
                    "retry-undecided",
                    format!(
                        "an earlier attempt with this Idempotency-Key may have stored file {file_id}, and not every element answered; nothing was stored now, retry later ({})",
                        err.detail
                    ),
                ));
            }
        };
        self.stored_on(&e, token, file_id).await.map(Some)
    }

    /// The answer for `file_id` stored on `e` by an earlier attempt: its sidecar (and the
    /// file id's pin, if any, is dropped).
    pub async fn stored_on(&self, e: &ElementView, token: &str, file_id: Uuid) -> Result<Outcome, ApiError> {
        tracing::info!(element = %e.id, %file_id, "an earlier attempt had stored the upload");
        let url = format!("{}/api/v1/files/{file_id}", e.url);
        let rb = self.http.get(&url).bearer_auth(token).timeout(Duration::from_secs(10));
        let r = artstore_shared::telemetry::propagate(rb).send().await.map_err(|err| {
            ApiError::typed(ErrorCode::Unavailable, "element-unreachable", format!("{}: {err}", e.id))
        })?;
        if !r.status().is_success() {
            return Err(ApiError::typed(
                ErrorCode::Unavailable,
                "retry-undecided",
                format!("{} said it holds file {file_id} and then answered {} for it; retry later", e.id, r.status()),
            ));
        }
        let mut sidecar: Value = r.json().await.map_err(|err| ApiError::internal(format!("{}: {err}", e.id)))?;
        sidecar["element_id"] = Value::String(e.id.clone());
        self.keys.unpin(file_id);
        Ok(Outcome::Stored { element_id: e.id.clone(), file_id, sidecar })
    }

    /// The element that holds `file_id`: the hint, checked, else every element asked.
    pub async fn locate(&self, token: &str, file_id: Uuid) -> Result<ElementView, ApiError> {
        let views = self.discovery.elements();
        let ask = |e: ElementView| async move {
            let url = format!("{}/api/v1/files/{file_id}", e.url);
            let rb = self.http.get(&url).bearer_auth(token).timeout(Duration::from_secs(10));
            let r = artstore_shared::telemetry::propagate(rb).send().await;
            (e, r.map(|r| r.status().as_u16()))
        };
        if let Some(id) = self.hints.get(file_id)
            && let Some(e) = views.iter().find(|e| e.id == id)
            && let (e, Ok(200)) = ask(e.clone()).await
        {
            return Ok(e);
        }
        let answers =
            futures_util::stream::iter(views.into_iter().map(ask)).buffer_unordered(16).collect::<Vec<_>>().await;
        let mut down = Vec::new();
        for (e, r) in answers {
            match r {
                Ok(200) => {
                    self.hints.record(file_id, &e.id);
                    return Ok(e);
                }
                Ok(401) => return Err(ApiError::unauthenticated("the element refused the token")),
                Ok(_) => {}
                Err(_) => down.push(e.id),
            }
        }
        if down.is_empty() {
            Err(ApiError::not_found(format!("no storage element holds file {file_id}")))
        } else {
            Err(ApiError::typed(
                ErrorCode::Unavailable,
                "element-unreachable",
                format!(
                    "file {file_id} was not found on the elements that answered; {} did not answer",
                    down.join(", ")
                ),
            ))
        }
    }
}

/// Whether an element's answer says it already holds the planned id: an earlier attempt
/// stored it there, and that document is the answer.
pub fn stored_earlier(f: &Forwarded, planned: Option<Uuid>) -> bool {
    planned.is_some() && f.status == 409 && problem_type_is(&f.body, "file-exists")
}

/// 503 `upload-undecided`: `element` took the upload and gave no answer, so whether it
/// stored it is not known; no other element is tried (that could store a second copy).
fn undecided_problem(element: &str, err: &ClientError, keyed: bool) -> ApiError {
    let retry = match keyed {
        true => {
            "retry with the same Idempotency-Key: the retry answers the stored file if there is one, else stores it"
        }
        false => "a retry without an Idempotency-Key may store a second copy",
    };
    ApiError::typed(
        ErrorCode::Unavailable,
        "upload-undecided",
        format!("element {element} took the upload and gave no answer ({err}); whether it stored it is not known and no other element was tried; {retry}"),
    )
    .with("element_id", element.to_owned())
}

/// 503 `retry-undecided`: an earlier attempt of this upload may be stored on `element`
/// (it took it and gave no answer), and that element cannot take the retry now.
pub fn pinned_unavailable(element: &str, why: &str) -> ApiError {
    ApiError::typed(
        ErrorCode::Unavailable,
        "retry-undecided",
        format!(
            "an earlier attempt of this upload may be stored on element {element}, so only {element} may take it, and it cannot now ({why}); nothing was stored, retry later"
        ),
    )
    .with("element_id", element.to_owned())
}

/// The multipart body for one attempt.
pub async fn body_of(
    w: &MultipartWriter,
    fields: &UploadFields,
    after: Option<u32>,
    planned: Option<Uuid>,
    head: &FileHead,
    content: &Content,
) -> Result<reqwest::Body, ApiError> {
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
    prefix.extend_from_slice(&w.file_head(&head.filename, &head.content_type, head.sha256.as_deref()));
    let mut suffix = w.file_end().to_vec();
    suffix.extend_from_slice(&w.close());
    Ok(match content {
        Content::Memory(b) => {
            let mut all = prefix;
            all.extend_from_slice(b);
            all.extend_from_slice(&suffix);
            reqwest::Body::from(all)
        }
        Content::Disk(path) => {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
            let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(prefix))])
                .chain(tokio_util_reader(file))
                .chain(futures_util::stream::iter([Ok(Bytes::from(suffix))]));
            reqwest::Body::wrap_stream(stream)
        }
    })
}

/// A file as a stream of 256 KiB chunks.
fn tokio_util_reader(file: tokio::fs::File) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send {
    futures_util::stream::unfold(Some(file), |f| async move {
        use tokio::io::AsyncReadExt as _;
        let mut f = f?;
        let mut buf = vec![0u8; 256 << 10];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(f)))
            }
            // The error ends the stream (and so the request).
            Err(e) => Some((Err(e), None)),
        }
    })
}
