//! The sidecar cache: a rebuildable mirror of the sidecars for listing and filtering.
//!
//! The cache is never the truth. Lookups by id go to the files; the cache only answers
//! "which documents match" questions. [`EmbeddedCache`] is the default, built at start-up
//! from the sidecars and kept current by writes.

use crate::sidecar::{Disposition, DocState, Sidecar};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use uuid::Uuid;

/// A cached sidecar and where it sits, relative to the element root.
#[derive(Debug, Clone)]
pub struct CachedSidecar {
    pub sidecar: Arc<Sidecar>,
    /// e.g. `data/2026/11/21/x_<id>.pdf.attr.json`
    pub path: String,
}

/// A retention-state filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionFilter {
    /// The term is running (not a tombstone, a mode, a date in the future).
    UnderRetention,
    /// A legal hold is set (not a tombstone).
    OnHold,
    /// The term ended, disposition is `review`, no hold, not a tombstone.
    ReviewDue,
    /// Removed by the disposition schedule.
    Disposed,
}

impl RetentionFilter {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "under-retention" => Some(Self::UnderRetention),
            "on-hold" => Some(Self::OnHold),
            "review-due" => Some(Self::ReviewDue),
            "disposed" => Some(Self::Disposed),
            _ => None,
        }
    }
}

/// Which documents a listing wants. Every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<DocState>,
    /// Retention state at the given time.
    pub retention: Option<(RetentionFilter, DateTime<Utc>)>,
    /// First and last `data/YYYY/MM/DD` folder date, inclusive.
    pub day_from: Option<NaiveDate>,
    pub day_to: Option<NaiveDate>,
    pub content_type: Option<String>,
    pub tag: Option<String>,
    pub document_id: Option<Uuid>,
}

impl ListFilter {
    /// The reference semantics of every filter; the PostgreSQL cache mirrors them in SQL.
    pub fn matches(&self, sc: &Sidecar) -> bool {
        if self.state.is_some_and(|s| s != sc.state) {
            return false;
        }
        let day = crate::layout::id_time(sc.file_id).date_naive();
        if self.day_from.is_some_and(|d| day < d) || self.day_to.is_some_and(|d| day > d) {
            return false;
        }
        if self.content_type.as_ref().is_some_and(|c| *c != sc.content_type) {
            return false;
        }
        if self.tag.as_ref().is_some_and(|t| !sc.tags.contains(t)) {
            return false;
        }
        if self.document_id.is_some_and(|d| d != sc.document_id) {
            return false;
        }
        if let Some((f, now)) = self.retention {
            let r = &sc.retention;
            let live = !sc.state.is_tombstone();
            return match f {
                RetentionFilter::UnderRetention => live && r.is_under_retention(now),
                RetentionFilter::OnHold => live && r.legal_hold,
                RetentionFilter::ReviewDue => {
                    live && r.disposition == Disposition::Review && !r.legal_hold && r.is_expired(now)
                }
                RetentionFilter::Disposed => sc.state == DocState::Disposed,
            };
        }
        true
    }
}

/// One page of a listing in file-id order.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<CachedSidecar>,
    /// The id to pass as `after` for the next page, if there may be one.
    pub next: Option<Uuid>,
}

impl Page {
    /// A page from `limit + 1` fetched items: the extra one only says there is more.
    pub fn from_overfetch(mut items: Vec<CachedSidecar>, limit: usize) -> Page {
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| e.sidecar.file_id)
        } else {
            None
        };
        Page { items, next }
    }
}

/// Counts for the element summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Documents that are not tombstones.
    pub documents: u64,
    pub tombstones: u64,
    /// Sum of the sizes of documents that are not tombstones.
    pub bytes: u64,
}

/// Errors of a cache backend. Messages never carry database text (it is logged).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The backend cannot be reached; the element keeps serving by id.
    #[error("cache unavailable: {0}")]
    Unavailable(String),
    /// The backend refused a statement (SQLSTATE given).
    #[error("cache query failed (sqlstate {0})")]
    Query(String),
    /// A cached sidecar does not parse (the cache is stale or damaged; rebuild it).
    #[error("cache holds an unreadable sidecar for {0}")]
    Corrupt(String),
}

/// A mirror of the sidecars. Every implementation passes the same test suite.
#[async_trait]
pub trait SidecarCache: Send + Sync + 'static {
    /// Inserts or replaces a sidecar if its revision is not older than what is cached.
    async fn upsert(&self, entry: CachedSidecar) -> Result<(), CacheError>;
    /// The cached sidecar of a file.
    async fn get(&self, file_id: Uuid) -> Result<Option<CachedSidecar>, CacheError>;
    /// Sidecars after `after` in file-id order.
    async fn list(&self, after: Option<Uuid>, limit: usize, filter: &ListFilter) -> Result<Page, CacheError>;
    /// Every version of a document, by version number.
    async fn versions(&self, document_id: Uuid) -> Result<Vec<CachedSidecar>, CacheError>;
    /// Documents whose term ended at `now`, with `dispose` disposition and no hold.
    async fn due_for_disposition(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<CachedSidecar>, CacheError>;
    /// Documents with a staged restore copy or a restore under way.
    async fn with_restore(&self) -> Result<Vec<CachedSidecar>, CacheError>;
    /// Documents whose content is in the hot tier (candidates for archiving).
    async fn hot_documents(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<CachedSidecar>, CacheError>;
    async fn stats(&self) -> Result<CacheStats, CacheError>;
    /// Documents that are not tombstones, when known without a query (`None`: ask `stats`).
    fn document_count(&self) -> Option<u64> {
        None
    }
    /// Inserts or replaces many sidecars (revision-guarded like `upsert`).
    async fn upsert_many(&self, entries: Vec<CachedSidecar>) -> Result<(), CacheError> {
        for e in entries {
            self.upsert(e).await?;
        }
        Ok(())
    }
    /// Forgets a file (repair of a cache entry whose files are gone).
    async fn remove(&self, file_id: Uuid) -> Result<(), CacheError>;
    /// Every cached `(file_id, revision)`, for comparing with the files.
    async fn revisions(&self) -> Result<Vec<(Uuid, u64)>, CacheError>;
    /// Whether the cache outlives the process. A persistent cache is kept current from the
    /// WAL and records how far it got; a volatile one is rebuilt at every start.
    fn is_persistent(&self) -> bool {
        false
    }
    /// The last WAL sequence whose commits are all applied (`None`: never filled).
    async fn checkpoint(&self) -> Result<Option<u64>, CacheError> {
        Ok(None)
    }
    /// Records the applied WAL sequence.
    async fn set_checkpoint(&self, _seq: u64) -> Result<(), CacheError> {
        Ok(())
    }
    /// A rebuild in progress: `(WAL sequence at its start, last sidecar path written)`.
    async fn rebuild_progress(&self) -> Result<Option<(u64, String)>, CacheError> {
        Ok(None)
    }
    /// Starts a rebuild from nothing: forgets every entry, remembers the WAL position.
    async fn begin_rebuild(&self, _wal_seq: u64) -> Result<(), CacheError> {
        Ok(())
    }
    /// Writes one batch of a rebuild and records the last sidecar path it covers.
    async fn rebuild_batch(&self, entries: Vec<CachedSidecar>, _last_path: &str) -> Result<(), CacheError> {
        self.upsert_many(entries).await
    }
    /// Ends a rebuild: the checkpoint becomes the WAL position recorded at its start.
    async fn finish_rebuild(&self) -> Result<(), CacheError> {
        Ok(())
    }
}

#[derive(Default)]
struct Inner {
    by_id: BTreeMap<Uuid, CachedSidecar>,
    by_document: HashMap<Uuid, BTreeMap<u32, Uuid>>,
    stats: CacheStats,
}

impl Inner {
    fn account(&mut self, sc: &Sidecar, sign: i64) {
        let apply = |v: &mut u64, d: u64| {
            *v = if sign > 0 { v.saturating_add(d) } else { v.saturating_sub(d) };
        };
        if sc.state.is_tombstone() {
            apply(&mut self.stats.tombstones, 1);
        } else {
            apply(&mut self.stats.documents, 1);
            apply(&mut self.stats.bytes, sc.size);
        }
    }
}

/// The in-memory cache.
#[derive(Default)]
pub struct EmbeddedCache {
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for EmbeddedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedCache")
    }
}

impl EmbeddedCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn scan(&self, after: Option<Uuid>, limit: usize, keep: impl Fn(&Sidecar) -> bool) -> Vec<CachedSidecar> {
        use std::ops::Bound::*;
        let g = self.read();
        let lower = after.map(Excluded).unwrap_or(Unbounded);
        g.by_id.range((lower, Unbounded)).map(|(_, e)| e).filter(|e| keep(&e.sidecar)).take(limit).cloned().collect()
    }
}

#[async_trait]
impl SidecarCache for EmbeddedCache {
    async fn upsert(&self, entry: CachedSidecar) -> Result<(), CacheError> {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let id = entry.sidecar.file_id;
        if let Some(old) = g.by_id.get(&id).map(|o| o.sidecar.clone()) {
            if old.revision > entry.sidecar.revision {
                return Ok(());
            }
            g.account(&old, -1);
        }
        g.account(&entry.sidecar, 1);
        g.by_document.entry(entry.sidecar.document_id).or_default().insert(entry.sidecar.version, id);
        g.by_id.insert(id, entry);
        Ok(())
    }

    async fn get(&self, file_id: Uuid) -> Result<Option<CachedSidecar>, CacheError> {
        Ok(self.read().by_id.get(&file_id).cloned())
    }

    async fn list(&self, after: Option<Uuid>, limit: usize, filter: &ListFilter) -> Result<Page, CacheError> {
        Ok(Page::from_overfetch(self.scan(after, limit + 1, |sc| filter.matches(sc)), limit))
    }

    async fn versions(&self, document_id: Uuid) -> Result<Vec<CachedSidecar>, CacheError> {
        let g = self.read();
        Ok(g.by_document
            .get(&document_id)
            .map(|vs| vs.values().filter_map(|id| g.by_id.get(id).cloned()).collect())
            .unwrap_or_default())
    }

    async fn due_for_disposition(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<CachedSidecar>, CacheError> {
        Ok(self.scan(None, limit, |sc| {
            !sc.state.is_tombstone()
                && sc.retention.disposition == Disposition::Dispose
                && !sc.retention.legal_hold
                && sc.retention.is_expired(now)
        }))
    }

    async fn with_restore(&self) -> Result<Vec<CachedSidecar>, CacheError> {
        Ok(self.scan(None, usize::MAX, |sc| sc.content.restore.is_some()))
    }

    async fn hot_documents(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<CachedSidecar>, CacheError> {
        Ok(self
            .scan(after, limit, |sc| sc.state == DocState::Active && sc.content.location == crate::sidecar::Tier::Hot))
    }

    async fn stats(&self) -> Result<CacheStats, CacheError> {
        Ok(self.read().stats)
    }

    fn document_count(&self) -> Option<u64> {
        Some(self.read().stats.documents)
    }

    async fn remove(&self, file_id: Uuid) -> Result<(), CacheError> {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = g.by_id.remove(&file_id) {
            g.account(&old.sidecar, -1);
            if let Some(vs) = g.by_document.get_mut(&old.sidecar.document_id) {
                vs.remove(&old.sidecar.version);
            }
        }
        Ok(())
    }

    async fn revisions(&self) -> Result<Vec<(Uuid, u64)>, CacheError> {
        Ok(self.read().by_id.values().map(|e| (e.sidecar.file_id, e.sidecar.revision)).collect())
    }
}

/// The shared test suite every [`SidecarCache`] implementation must pass.
#[cfg(any(test, feature = "test-suite"))]
pub mod suite {
    use super::*;
    use crate::sidecar::{ContentLocation, Retention, RetentionMode, SCHEMA_V1, Tier};
    use serde_json::Map;

    fn sc(doc: Uuid, version: u32) -> Sidecar {
        let id = Uuid::now_v7();
        Sidecar {
            schema: SCHEMA_V1.into(),
            file_id: id,
            document_id: doc,
            version,
            revision: 1,
            state: DocState::Active,
            original_name: "a.txt".into(),
            stored_name: format!("a_{id}.txt"),
            content_type: "text/plain".into(),
            size: 10,
            sha256: "0".repeat(64),
            created_at: Utc::now(),
            created_by: "t".into(),
            updated_at: Utc::now(),
            updated_by: "t".into(),
            description: None,
            tags: vec![],
            metadata: Map::new(),
            retention: Retention::default(),
            content: ContentLocation { location: Tier::Hot, restore: None, extra: Map::new() },
            tombstone: None,
            extra: Map::new(),
        }
    }

    fn entry(s: Sidecar) -> CachedSidecar {
        CachedSidecar { path: format!("data/x/{}", s.sidecar_name()), sidecar: Arc::new(s) }
    }

    /// Runs every check against a fresh, empty cache.
    pub async fn run(cache: &dyn SidecarCache) {
        let doc = Uuid::now_v7();
        let mut all = vec![];
        for v in 1..=3 {
            let s = sc(doc, v);
            all.push(s.file_id);
            cache.upsert(entry(s)).await.unwrap();
        }
        // Paging returns every id once, in order.
        let p1 = cache.list(None, 2, &ListFilter::default()).await.unwrap();
        assert_eq!(p1.items.len(), 2);
        let p2 = cache.list(p1.next, 2, &ListFilter::default()).await.unwrap();
        assert_eq!(p2.items.len(), 1);
        assert!(p2.next.is_none());
        let got: Vec<_> = p1.items.iter().chain(&p2.items).map(|e| e.sidecar.file_id).collect();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(got, sorted);

        // Versions in order.
        let vs = cache.versions(doc).await.unwrap();
        assert_eq!(vs.iter().map(|e| e.sidecar.version).collect::<Vec<_>>(), vec![1, 2, 3]);

        // An older revision never replaces a newer one.
        let mut newer = (*cache.get(all[0]).await.unwrap().unwrap().sidecar).clone();
        newer.revision = 5;
        newer.description = Some("new".into());
        cache.upsert(entry(newer.clone())).await.unwrap();
        let mut older = newer.clone();
        older.revision = 4;
        older.description = Some("old".into());
        cache.upsert(entry(older)).await.unwrap();
        assert_eq!(cache.get(all[0]).await.unwrap().unwrap().sidecar.description.as_deref(), Some("new"));

        // Disposition and review filters.
        let now = Utc::now();
        let mut due = newer.clone();
        due.revision = 6;
        due.retention = Retention {
            mode: RetentionMode::Governance,
            retain_until: Some(now - chrono::Duration::days(1)),
            ..Default::default()
        };
        cache.upsert(entry(due.clone())).await.unwrap();
        let mut review = (*cache.get(all[1]).await.unwrap().unwrap().sidecar).clone();
        review.revision = 2;
        review.retention = Retention {
            mode: RetentionMode::Compliance,
            retain_until: Some(now - chrono::Duration::days(1)),
            disposition: Disposition::Review,
            ..Default::default()
        };
        cache.upsert(entry(review)).await.unwrap();
        let mut held = (*cache.get(all[2]).await.unwrap().unwrap().sidecar).clone();
        held.revision = 2;
        held.retention = Retention {
            mode: RetentionMode::Compliance,
            retain_until: Some(now - chrono::Duration::days(1)),
            legal_hold: true,
            ..Default::default()
        };
        cache.upsert(entry(held)).await.unwrap();
        let d = cache.due_for_disposition(now, 10).await.unwrap();
        assert_eq!(d.iter().map(|e| e.sidecar.file_id).collect::<Vec<_>>(), vec![all[0]]);
        let review_due = ListFilter { retention: Some((RetentionFilter::ReviewDue, now)), ..Default::default() };
        let r = cache.list(None, 10, &review_due).await.unwrap();
        assert_eq!(r.items.iter().map(|e| e.sidecar.file_id).collect::<Vec<_>>(), vec![all[1]]);

        // Stats follow tombstones.
        assert_eq!(cache.stats().await.unwrap(), CacheStats { documents: 3, tombstones: 0, bytes: 30 });
        let mut gone = due;
        gone.revision = 7;
        gone.state = DocState::Disposed;
        cache.upsert(entry(gone)).await.unwrap();
        assert_eq!(cache.stats().await.unwrap(), CacheStats { documents: 2, tombstones: 1, bytes: 20 });
        let f =
            cache.list(None, 10, &ListFilter { state: Some(DocState::Disposed), ..Default::default() }).await.unwrap();
        assert_eq!(f.items.len(), 1);
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn embedded_cache_passes_the_suite() {
        super::suite::run(&super::EmbeddedCache::new()).await;
    }
}
