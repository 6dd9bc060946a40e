//! Where the index's documents come from: the elements' events (followed continuously),
//! their listing feeds (reindex), and the comparison of the two (drift check).
//!
//! Every path ends in [`Writer::apply`], idempotent on (file id, revision): a replayed or
//! older revision never overwrites a newer one. Event positions are committed on the bus
//! only after the index commit that covers them.

use crate::doc::{DocInput, Extraction};
use crate::extractor::Extractor;
use crate::index::{Applied, SearchIndex, Writer};
use artstore_shared::clients::{ClientError, ElementClient, ServiceToken};
use artstore_shared::discovery::Discovery;
use artstore_shared::events::{Event, EventBus};
use artstore_shared::sidecar::DocState;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What documents are made from: elements (found by discovery), the role's own token, and
/// the extraction pool.
#[derive(Debug)]
pub struct Sources {
    pub discovery: Arc<dyn Discovery>,
    pub client: ElementClient,
    pub token: Arc<ServiceToken>,
    pub extractor: Arc<Extractor>,
    /// Parallel fetch-and-extract jobs.
    pub concurrency: usize,
    /// Sidecars read through this role, by file id; an event or an index change for the
    /// file drops its entry, and entries live a minute at most.
    pub sidecars: moka::sync::Cache<Uuid, Arc<CachedSidecar>>,
    /// Content held in memory for extraction at once, in MiB: documents wait for room, so
    /// many large files at once cannot exhaust the service.
    budget: Arc<tokio::sync::Semaphore>,
}

/// MiB of content the role holds for extraction at once.
pub const CONTENT_BUDGET_MIB: u32 = 512;

/// A sidecar as an element answered it.
#[derive(Debug, Clone)]
pub struct CachedSidecar {
    pub element_id: String,
    pub etag: Option<String>,
    pub body: bytes::Bytes,
}

impl Sources {
    /// Sources with an empty sidecar cache.
    pub fn new(
        discovery: Arc<dyn Discovery>,
        client: ElementClient,
        token: Arc<ServiceToken>,
        extractor: Arc<Extractor>,
        concurrency: usize,
    ) -> Sources {
        let sidecars = moka::sync::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(60)).build();
        let budget = Arc::new(tokio::sync::Semaphore::new(CONTENT_BUDGET_MIB as usize));
        Sources { discovery, client, token, extractor, concurrency, sidecars, budget }
    }
}

/// Why a document could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The sidecar is not one this version reads.
    #[error("{0}")]
    Sidecar(String),
    /// An element or the admin could not be asked.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// No element by that id is known.
    #[error("element {0} is not in the registry")]
    UnknownElement(String),
    /// The index refused.
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
}

impl Sources {
    fn base(&self, element_id: &str) -> Result<String, FeedError> {
        self.discovery
            .element(element_id)
            .map(|e| e.url)
            .ok_or_else(|| FeedError::UnknownElement(element_id.to_owned()))
    }

    /// A document ready to index from a sidecar held by `element_id`, or `None` when the
    /// index already holds that revision or a newer one.
    pub async fn prepare(
        &self,
        index: &SearchIndex,
        raw: Value,
        element_id: &str,
    ) -> Result<Option<DocInput>, FeedError> {
        let sidecar = DocInput::parse_sidecar(&raw).map_err(FeedError::Sidecar)?;
        if index.revision_of(sidecar.file_id).is_some_and(|r| r >= sidecar.revision) {
            return Ok(None);
        }
        let extraction = match sidecar.state {
            DocState::Deleted => Extraction::Skipped { reason: "deleted: the content was removed".to_owned() },
            DocState::Disposed => Extraction::Skipped { reason: "disposed: the content was removed".to_owned() },
            state => match index.get(sidecar.file_id).and_then(|s| s.extraction()) {
                // Same file id, same bytes: only the metadata changed.
                Some(kept) => kept,
                None if state == DocState::Archived => {
                    Extraction::Skipped { reason: "archived: the content is in the cold tier".to_owned() }
                }
                None => {
                    self.extract(
                        element_id,
                        sidecar.file_id,
                        sidecar.size,
                        &sidecar.content_type,
                        &sidecar.original_name,
                    )
                    .await
                }
            },
        };
        Ok(Some(DocInput { sidecar, raw, element_id: element_id.to_owned(), extraction }))
    }

    /// Reads the content from its element (a few tries) and extracts its text.
    async fn extract(&self, element_id: &str, id: Uuid, size: u64, content_type: &str, name: &str) -> Extraction {
        let limit = self.extractor.limits().max_input_bytes;
        if size > limit {
            return Extraction::Failed {
                reason: format!("content not indexed: {size} bytes is over the extraction limit of {limit}"),
            };
        }
        // Room for the content twice (ours and the worker's copy), in whole MiB.
        let mib = (size.saturating_mul(2) >> 20).clamp(1, u64::from(CONTENT_BUDGET_MIB)) as u32;
        let Ok(_room) = self.budget.acquire_many(mib).await else {
            return Extraction::Failed { reason: "extraction budget closed".to_owned() };
        };
        let mut last = String::new();
        for attempt in 0..4u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
            }
            let base = match self.base(element_id) {
                Ok(b) => b,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let token = match self.token.token().await {
                Ok(t) => t,
                Err(e) => {
                    last = format!("no service token: {e}");
                    continue;
                }
            };
            match self.client.content(&base, &token, id, limit).await {
                Ok(bytes) => return self.extractor.extract(bytes, content_type, name).await,
                Err(ClientError::Malformed { reason, .. }) => {
                    return Extraction::Failed { reason: format!("content not indexed: {reason}") };
                }
                Err(ClientError::Refused { status: 401, .. }) => {
                    self.token.invalidate().await;
                    last = "the element refused the service token".to_owned();
                }
                Err(ClientError::Refused { status: 409 | 404 | 410, detail, .. }) => {
                    return Extraction::Skipped { reason: format!("content not readable: {detail}") };
                }
                Err(e) => last = e.to_string(),
            }
        }
        Extraction::Failed { reason: format!("{} from element {element_id}: {last}", crate::doc::UNREAD_PREFIX) }
    }
}

/// Counters and state of the event follower, shown in `GET /api/v1/index` and `/metrics`.
#[derive(Debug, Default)]
pub struct FeedStatus {
    pub events: AtomicU64,
    pub indexed: AtomicU64,
    pub up_to_date: AtomicU64,
    pub errors: AtomicU64,
    pub commits: AtomicU64,
    /// Milliseconds from the element's event to the index commit that made it searchable,
    /// for the last batch.
    pub last_visibility_ms: AtomicU64,
    /// Set by the server: each commit's duration.
    pub commit_seconds: std::sync::OnceLock<prometheus_client::metrics::histogram::Histogram>,
    pub state: Mutex<String>,
    pub last_error: Mutex<Option<String>>,
}

impl FeedStatus {
    fn set_state(&self, s: &str) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s.to_owned();
    }

    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, "indexing");
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    /// The status as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "state": *self.state.lock().unwrap_or_else(|p| p.into_inner()),
            "events": self.events.load(Ordering::Relaxed),
            "indexed": self.indexed.load(Ordering::Relaxed),
            "up_to_date": self.up_to_date.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
            "commits": self.commits.load(Ordering::Relaxed),
            "last_visibility_ms": self.last_visibility_ms.load(Ordering::Relaxed),
            "last_error": *self.last_error.lock().unwrap_or_else(|p| p.into_inner()),
        })
    }
}

/// Commits on a blocking thread (fsync) and gives the writer back.
pub async fn commit(mut writer: Writer, payload: Option<String>) -> (Writer, Result<(), crate::index::IndexError>) {
    match tokio::task::spawn_blocking(move || {
        let r = writer.commit(payload);
        (writer, r)
    })
    .await
    {
        Ok(x) => x,
        Err(e) => panic!("index commit task failed: {e}"),
    }
}

async fn prepare_event(sources: &Sources, index: &SearchIndex, ev: &Event) -> Result<Option<DocInput>, FeedError> {
    let Some(id) = ev.file_id else { return Ok(None) };
    if ev.revision.is_some_and(|r| index.revision_of(id).is_some_and(|have| have >= r)) {
        return Ok(None);
    }
    let raw = match &ev.sidecar {
        Some(s) => s.clone(),
        None => {
            let base = sources.base(&ev.element_id)?;
            let token = sources.token.token().await?;
            sources.client.sidecar(&base, &token, id).await?
        }
    };
    sources.prepare(index, raw, &ev.element_id).await
}

/// Why [`follow`] gave the writer back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// Asked to.
    Shutdown,
    /// The bus dropped events this group had not read: the index must be rebuilt.
    Gap(String),
}

/// Follows the bus until `shutdown` flips: each batch of events is prepared (fetch and
/// extract in parallel), applied in order, committed to the index, and only then
/// committed on the bus. Gives the writer back when it stops.
pub async fn follow(
    mut writer: Writer,
    sources: Arc<Sources>,
    bus: Arc<dyn EventBus>,
    group: &str,
    commit_interval: Duration,
    status: Arc<FeedStatus>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> (Writer, Stopped) {
    let index = writer.index().clone();
    'outer: loop {
        status.set_state("subscribing");
        let mut sub = loop {
            if *shutdown.borrow() {
                break 'outer;
            }
            match bus.subscribe(group).await {
                Ok(s) => break s,
                Err(e) => {
                    status.error(format!("subscribe to {}: {e}", bus.name()));
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        };
        status.set_state("following");
        loop {
            if *shutdown.borrow() {
                break 'outer;
            }
            // One batch: wait for the first event, then take what comes within the interval.
            let mut batch: Vec<Event> = Vec::new();
            let first = tokio::select! {
                r = sub.next(Duration::from_millis(500)) => r,
                _ = shutdown.changed() => continue,
            };
            match first {
                Ok(Some(d)) => batch.push(d.event),
                Ok(None) => continue,
                Err(e) => {
                    status.error(e.to_string());
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue 'outer;
                }
            }
            let started = Instant::now();
            while batch.len() < 1024 && started.elapsed() < commit_interval {
                match sub.next(commit_interval.saturating_sub(started.elapsed()).max(Duration::from_millis(1))).await {
                    Ok(Some(d)) => batch.push(d.event),
                    Ok(None) => break,
                    Err(e) => {
                        status.error(e.to_string());
                        break;
                    }
                }
            }
            status.events.fetch_add(batch.len() as u64, Ordering::Relaxed);
            for id in batch.iter().filter_map(|e| e.file_id) {
                sources.sidecars.invalidate(&id);
            }
            let prepared: Vec<_> = futures_util::stream::iter(batch.clone())
                .map(|ev| {
                    let (sources, index) = (sources.clone(), index.clone());
                    async move { prepare_event(&sources, &index, &ev).await }
                })
                .buffered(sources.concurrency.max(1))
                .collect()
                .await;
            let mut failed = false;
            for (ev, p) in batch.iter().zip(prepared) {
                match p {
                    Ok(Some(doc)) => match writer.apply(&doc) {
                        Applied::Indexed => _ = status.indexed.fetch_add(1, Ordering::Relaxed),
                        Applied::UpToDate => _ = status.up_to_date.fetch_add(1, Ordering::Relaxed),
                    },
                    Ok(None) => _ = status.up_to_date.fetch_add(1, Ordering::Relaxed),
                    Err(FeedError::Sidecar(e)) => {
                        // A sidecar this version cannot read will never become readable by
                        // retrying: logged, counted, passed (the drift check names it).
                        status.error(format!("event {} for {:?}: {e}", ev.kind, ev.file_id));
                    }
                    Err(e) => {
                        status.error(format!("event {} for {:?}: {e}", ev.kind, ev.file_id));
                        failed = true;
                    }
                }
            }
            let started = std::time::Instant::now();
            let (w, r) = commit(writer, None).await;
            writer = w;
            if let Err(e) = r {
                status.error(e.to_string());
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue 'outer;
            }
            if let Some(h) = status.commit_seconds.get() {
                h.observe(started.elapsed().as_secs_f64());
            }
            status.commits.fetch_add(1, Ordering::Relaxed);
            let oldest = batch.iter().map(|e| e.at).min().unwrap_or_else(chrono::Utc::now);
            let lag = (chrono::Utc::now() - oldest).num_milliseconds().max(0) as u64;
            status.last_visibility_ms.store(lag, Ordering::Relaxed);
            if failed {
                // Not committed on the bus: the batch comes again from a new subscription.
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue 'outer;
            }
            if let Err(e) = sub.commit().await {
                status.error(format!("commit on {}: {e}", bus.name()));
            }
            if let Some(gap) = sub.take_gap() {
                status.error(format!("events were lost before this role read them ({gap}): rebuilding the index"));
                status.set_state("rebuilding after lost events");
                return (writer, Stopped::Gap(gap));
            }
        }
    }
    status.set_state("stopped");
    (writer, Stopped::Shutdown)
}

/// Progress of a reindex, kept in the index's commit payload so a killed reindex resumes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    /// Elements listed to the end.
    pub done: Vec<String>,
    /// Where each unfinished element's listing goes on.
    pub cursors: BTreeMap<String, String>,
    /// Set when every element was listed.
    pub complete: bool,
}

impl Checkpoint {
    /// The checkpoint of an unfinished reindex found in the index, if any.
    pub fn unfinished(index: &SearchIndex) -> Option<Checkpoint> {
        let p: Value = serde_json::from_str(&index.payload()?).ok()?;
        let c: Checkpoint = serde_json::from_value(p.get("reindex")?.clone()).ok()?;
        (!c.complete).then_some(c)
    }

    fn payload(&self) -> String {
        json!({"reindex": self}).to_string()
    }
}

/// Counts of a reindex.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReindexReport {
    pub elements: usize,
    pub listed: u64,
    pub indexed: u64,
    pub up_to_date: u64,
    pub extraction_failed: u64,
    pub errors: u64,
    pub resumed: bool,
    pub seconds: f64,
}

/// Fills an index from the elements' listing feeds (all, or those in `only`), resuming an
/// unfinished reindex found in the index. `progress` is called after every page with the
/// counts so far.
pub async fn reindex(
    mut writer: Writer,
    sources: &Sources,
    only: Option<&str>,
    progress: &(dyn Fn(&ReindexReport, &str) + Send + Sync),
) -> Result<(Writer, ReindexReport), (Writer, FeedError)> {
    let started = Instant::now();
    let index = writer.index().clone();
    let mut report = ReindexReport::default();
    let mut cp = match Checkpoint::unfinished(&index) {
        Some(c) => {
            report.resumed = true;
            c
        }
        None => Checkpoint::default(),
    };
    let mut elements: Vec<_> = sources.discovery.elements();
    elements.retain(|e| only.is_none_or(|o| o == e.id));
    if let Some(o) = only
        && elements.is_empty()
    {
        return Err((writer, FeedError::UnknownElement(o.to_owned())));
    }
    report.elements = elements.len();
    for el in elements {
        if cp.done.contains(&el.id) {
            continue;
        }
        let mut cursor = cp.cursors.get(&el.id).cloned();
        loop {
            let token = match sources.token.token().await {
                Ok(t) => t,
                Err(e) => return Err((writer, e.into())),
            };
            let page = match sources.client.list_page(&el.url, &token, cursor.as_deref(), 200).await {
                Ok(p) => p,
                Err(e) => return Err((writer, e.into())),
            };
            report.listed += page.items.len() as u64;
            let prepared: Vec<_> = futures_util::stream::iter(page.items)
                .map(|raw| sources.prepare(&index, raw, &el.id))
                .buffered(sources.concurrency.max(1))
                .collect()
                .await;
            for p in prepared {
                match p {
                    Ok(Some(doc)) => {
                        if matches!(doc.extraction, Extraction::Failed { .. }) {
                            report.extraction_failed += 1;
                        }
                        sources.sidecars.invalidate(&doc.sidecar.file_id);
                        match writer.apply(&doc) {
                            Applied::Indexed => report.indexed += 1,
                            Applied::UpToDate => report.up_to_date += 1,
                        }
                    }
                    Ok(None) => report.up_to_date += 1,
                    Err(e) => {
                        report.errors += 1;
                        tracing::warn!(element = %el.id, error = %e, "reindex: a document was not indexed");
                    }
                }
            }
            match &page.next_cursor {
                Some(c) => {
                    cp.cursors.insert(el.id.clone(), c.clone());
                }
                None => {
                    cp.cursors.remove(&el.id);
                    cp.done.push(el.id.clone());
                }
            }
            let (w, r) = commit(writer, Some(cp.payload())).await;
            writer = w;
            if let Err(e) = r {
                return Err((writer, e.into()));
            }
            report.seconds = started.elapsed().as_secs_f64();
            progress(&report, &el.id);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
    }
    cp.complete = true;
    cp.cursors.clear();
    let (w, r) = commit(writer, Some(cp.payload())).await;
    writer = w;
    if let Err(e) = r {
        return Err((writer, e.into()));
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok((writer, report))
}

/// One document that differs between the index and the elements.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Drift {
    pub file_id: Uuid,
    /// `missing` (an element holds it, the index does not), `extra` (the index holds it, no
    /// element does), `stale` (the index holds an older revision).
    pub kind: &'static str,
    pub element_id: Option<String>,
    pub index_revision: Option<u64>,
    pub element_revision: Option<u64>,
}

/// What a drift check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DriftReport {
    pub elements: usize,
    pub listed: u64,
    pub indexed: u64,
    pub drift: Vec<Drift>,
    pub repaired: u64,
}

/// File ids whose content was not read when they were indexed.
fn unread(index: &SearchIndex) -> Vec<Uuid> {
    use tantivy::collector::DocSetCollector;
    use tantivy::query::TermQuery;
    let f = &index.fields;
    let searcher = index.reader.searcher();
    let q = TermQuery::new(
        tantivy::Term::from_field_text(f.extraction, "failed"),
        tantivy::schema::IndexRecordOption::Basic,
    );
    let Ok(docs) = searcher.search(&q, &DocSetCollector) else { return Vec::new() };
    docs.into_iter()
        .filter_map(|addr| searcher.doc::<tantivy::TantivyDocument>(addr).ok())
        .map(|d| crate::doc::stored(f, &d))
        .filter(|s| s.content_unread())
        .filter_map(|s| s.sidecar["file_id"].as_str().and_then(|i| i.parse().ok()))
        .collect()
}

/// Compares the index with every element's listing; with `repair`, indexes what is missing
/// or stale and removes what no element holds.
pub async fn check(
    writer: Option<Writer>,
    index: &Arc<SearchIndex>,
    sources: &Sources,
    repair: bool,
) -> Result<(Option<Writer>, DriftReport), FeedError> {
    let mut held: HashMap<Uuid, (u64, String, Value)> = HashMap::new();
    let elements = sources.discovery.elements();
    let mut report = DriftReport { elements: elements.len(), ..Default::default() };
    for el in &elements {
        let mut cursor: Option<String> = None;
        loop {
            let token = sources.token.token().await?;
            let page = sources.client.list_page(&el.url, &token, cursor.as_deref(), 500).await?;
            for raw in page.items {
                report.listed += 1;
                let (Some(id), Some(rev)) =
                    (raw["file_id"].as_str().and_then(|s| s.parse::<Uuid>().ok()), raw["revision"].as_u64())
                else {
                    continue;
                };
                held.insert(id, (rev, el.id.clone(), raw));
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
    }
    let in_index = index.revisions();
    report.indexed = in_index.len() as u64;
    for (id, (rev, el, _)) in &held {
        match in_index.get(id) {
            None => report.drift.push(Drift {
                file_id: *id,
                kind: "missing",
                element_id: Some(el.clone()),
                index_revision: None,
                element_revision: Some(*rev),
            }),
            Some(have) if have < rev => report.drift.push(Drift {
                file_id: *id,
                kind: "stale",
                element_id: Some(el.clone()),
                index_revision: Some(*have),
                element_revision: Some(*rev),
            }),
            _ => {}
        }
    }
    // Documents whose content could not be read when they were indexed.
    for id in unread(index) {
        if let (Some((rev, el, _)), Some(have)) = (held.get(&id), in_index.get(&id))
            && have >= rev
        {
            report.drift.push(Drift {
                file_id: id,
                kind: "stale",
                element_id: Some(el.clone()),
                index_revision: Some(*have),
                element_revision: Some(*rev),
            });
        }
    }
    for (id, have) in &in_index {
        if !held.contains_key(id) {
            report.drift.push(Drift {
                file_id: *id,
                kind: "extra",
                element_id: None,
                index_revision: Some(*have),
                element_revision: None,
            });
        }
    }
    report.drift.sort_by(|a, b| a.kind.cmp(b.kind).then(a.file_id.cmp(&b.file_id)));
    if !repair {
        return Ok((writer, report));
    }
    let Some(mut writer) = writer else { return Ok((None, report)) };
    for d in report.drift.clone() {
        match d.kind {
            "extra" => {
                writer.remove(d.file_id);
                report.repaired += 1;
            }
            _ => {
                let Some((_, el, raw)) = held.get(&d.file_id) else { continue };
                if d.index_revision >= d.element_revision {
                    // Same revision, content never read: take it out so it is read again.
                    writer.remove(d.file_id);
                }
                if let Some(doc) = sources.prepare(index, raw.clone(), el).await? {
                    writer.apply(&doc);
                    report.repaired += 1;
                }
            }
        }
    }
    let (w, r) = commit(writer, None).await;
    r?;
    Ok((Some(w), report))
}
