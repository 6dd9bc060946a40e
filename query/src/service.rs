//! One query service: the live index (swapped by an online rebuild), the one writer task
//! that owns the index writer (following events, reindexing, rebuilding), the result
//! cache, and the status shown by `GET /api/v1/index`.

use crate::config::QueryConfig;
use crate::feed::{self, Checkpoint, FeedStatus, ReindexReport, Sources};
use crate::index::{Opened, SearchIndex, Writer, layout};
use crate::search::{self, SearchError, SearchRequest};
use artstore_shared::events::EventBus;
use artstore_shared::health::Health;
use prometheus_client::metrics::counter::Counter;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The state of a rebuild (initial or online).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RebuildState {
    pub running: bool,
    /// `initial` (the index was empty or of another version) or `online` (asked for).
    pub kind: Option<String>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub progress: Option<ReindexReport>,
    pub element: Option<String>,
    pub last_error: Option<String>,
}

enum Cmd {
    Rebuild,
    /// The bus lost events this role had not read.
    Gap(String),
}

/// Search-result cache metrics.
#[derive(Debug, Clone)]
struct CacheMetrics {
    hits: Counter,
    misses: Counter,
    l2_hits: Counter,
    l2_misses: Counter,
    l2_errors: Counter,
    sidecar_hits: Counter,
    sidecar_misses: Counter,
}

/// The shared second-level result cache in Redis: keyed by the index's id and the opstamp
/// of its last commit (so a commit makes every older entry unreachable), kept `ttl`.
/// Redis being slow or down never slows a search by more than `timeout`.
struct L2 {
    client: redis::Client,
    conn: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    ttl: u64,
    timeout: Duration,
}

impl L2 {
    async fn conn(&self) -> Option<redis::aio::ConnectionManager> {
        let c = self
            .conn
            .get_or_try_init(|| async {
                tokio::time::timeout(Duration::from_secs(1), redis::aio::ConnectionManager::new(self.client.clone()))
                    .await
                    .map_err(|_| ())?
                    .map_err(|_| ())
            })
            .await;
        c.ok().cloned()
    }

    async fn get(&self, key: &str) -> Result<Option<String>, ()> {
        let mut c = self.conn().await.ok_or(())?;
        let r: Result<redis::RedisResult<Option<String>>, _> =
            tokio::time::timeout(self.timeout, redis::cmd("GET").arg(key).query_async(&mut c)).await;
        r.map_err(|_| ())?.map_err(|_| ())
    }

    async fn set(&self, key: String, value: String) {
        if let Some(mut c) = self.conn().await {
            let _: Result<redis::RedisResult<()>, _> = tokio::time::timeout(
                Duration::from_secs(1),
                redis::cmd("SET").arg(&key).arg(value).arg("EX").arg(self.ttl).query_async(&mut c),
            )
            .await;
        }
    }
}

/// A running query service.
pub struct QueryService {
    pub cfg: QueryConfig,
    pub root: PathBuf,
    index: RwLock<Arc<SearchIndex>>,
    pub sources: Arc<Sources>,
    pub feed: Arc<FeedStatus>,
    pub rebuild: Mutex<RebuildState>,
    pub health: Health,
    cache: moka::sync::Cache<String, Arc<Value>>,
    /// The index commit the cached results belong to.
    cached_commit: Mutex<String>,
    cache_metrics: CacheMetrics,
    l2: Option<Arc<L2>>,
    commands: mpsc::Sender<Cmd>,
    commands_rx: Mutex<Option<mpsc::Receiver<Cmd>>>,
    opened: Opened,
    searches: Counter,
    search_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl std::fmt::Debug for QueryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryService").field("root", &self.root).finish_non_exhaustive()
    }
}

impl QueryService {
    /// Opens the index under `root` (making or replacing it when needed).
    pub fn open(cfg: QueryConfig, root: PathBuf, sources: Arc<Sources>, health: Health) -> anyhow::Result<Arc<Self>> {
        let (index, opened) = layout::open_live(&root)?;
        match opened {
            Opened::Existing => tracing::info!(dir = %index.dir.display(), docs = index.num_docs(), "index opened"),
            Opened::Created => {
                tracing::info!(dir = %index.dir.display(), "no index: a new one is filled from the elements")
            }
            Opened::Replaced { found } => {
                tracing::warn!(dir = %index.dir.display(), found, "index of another schema version replaced: rebuilding")
            }
        }
        let (tx, rx) = mpsc::channel(4);
        // Weighed in bytes; every entry weighs at least budget / entries, so neither limit
        // is passed.
        let budget = cfg.result_cache_mib.max(1) << 20;
        let floor = budget / cfg.result_cache_entries.max(1);
        let cache = moka::sync::Cache::builder()
            .max_capacity(budget)
            .weigher(move |k: &String, v: &Arc<Value>| {
                u32::try_from((k.len() as u64 + 3 * json_len(v)).max(floor)).unwrap_or(u32::MAX)
            })
            .time_to_live(Duration::from_secs(cfg.redis_cache_ttl_secs.max(1)))
            .build();
        let cache_metrics = CacheMetrics {
            hits: health.metrics().counter("query_result_cache_hits", "Searches answered from the result cache"),
            misses: health.metrics().counter("query_result_cache_misses", "Searches not in the in-process cache"),
            l2_hits: health.metrics().counter("query_result_cache_l2_hits", "Searches answered from the Redis cache"),
            l2_misses: health.metrics().counter("query_result_cache_l2_misses", "Searches not in the Redis cache"),
            l2_errors: health
                .metrics()
                .counter("query_result_cache_l2_errors", "Redis cache lookups that failed or timed out"),
            sidecar_hits: health.metrics().counter("query_sidecar_cache_hits", "Sidecar reads answered from memory"),
            sidecar_misses: health
                .metrics()
                .counter("query_sidecar_cache_misses", "Sidecar reads passed to an element"),
        };
        let l2 = match &cfg.redis {
            Some(url) => Some(Arc::new(L2 {
                client: redis::Client::open(url.as_str()).map_err(|e| anyhow::anyhow!("redis url {url:?}: {e}"))?,
                conn: tokio::sync::OnceCell::new(),
                ttl: cfg.redis_cache_ttl_secs.max(1),
                timeout: Duration::from_millis(50),
            })),
            None => None,
        };
        let searches = health.metrics().counter("query_searches", "Searches answered");
        let search_seconds = health.metrics().histogram(
            "query_search_duration_seconds",
            "Time to answer a search (cache hits included)",
            &artstore_shared::health::LATENCY_BUCKETS,
        );
        Ok(Arc::new(QueryService {
            cfg,
            root,
            index: RwLock::new(index),
            sources,
            feed: Arc::default(),
            rebuild: Mutex::default(),
            health,
            cache,
            cached_commit: Mutex::default(),
            cache_metrics,
            l2,
            commands: tx,
            commands_rx: Mutex::new(Some(rx)),
            opened,
            searches,
            search_seconds,
        }))
    }

    /// The index that answers now.
    pub fn index(&self) -> Arc<SearchIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs a search (from the cache when the same search ran on the same index commit).
    pub async fn search(self: &Arc<Self>, req: SearchRequest) -> Result<Arc<Value>, SearchError> {
        self.searches.inc();
        let started = std::time::Instant::now();
        let r = self.search_uncounted(req).await;
        self.search_seconds.observe(started.elapsed().as_secs_f64());
        r
    }

    async fn search_uncounted(self: &Arc<Self>, req: SearchRequest) -> Result<Arc<Value>, SearchError> {
        let index = self.index();
        let commit = format!("{}:{}", index.id, index.generation());
        // Results of an older commit can no longer be asked for: their memory is freed now
        // rather than when they expire.
        {
            let mut last = self.cached_commit.lock().unwrap_or_else(|p| p.into_inner());
            if *last != commit {
                self.cache.invalidate_all();
                *last = commit.clone();
            }
        }
        let key = format!("artstore:query:search:{commit}:{}", serde_json::to_string(&req).unwrap_or_default());
        if let Some(v) = self.cache.get(&key) {
            self.cache_metrics.hits.inc();
            return Ok(v);
        }
        self.cache_metrics.misses.inc();
        if let Some(l2) = &self.l2 {
            match l2.get(&key).await {
                Ok(Some(text)) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&text) {
                        self.cache_metrics.l2_hits.inc();
                        let v = Arc::new(v);
                        self.cache.insert(key, v.clone());
                        return Ok(v);
                    }
                }
                Ok(None) => _ = self.cache_metrics.l2_misses.inc(),
                Err(()) => _ = self.cache_metrics.l2_errors.inc(),
            }
        }
        let now = chrono::Utc::now();
        let v = tokio::task::spawn_blocking(move || search::run(&index, &req, now))
            .await
            .map_err(|e| SearchError::BadParameter(format!("search task failed: {e}")))??;
        let v = Arc::new(v);
        self.cache.insert(key.clone(), v.clone());
        if let Some(l2) = self.l2.clone() {
            let text = v.to_string();
            tokio::spawn(async move { l2.set(key, text).await });
        }
        Ok(v)
    }

    /// Counts a sidecar read answered from memory.
    pub fn sidecar_hit(&self) {
        self.cache_metrics.sidecar_hits.inc();
    }

    /// Counts a sidecar read passed to an element.
    pub fn sidecar_miss(&self) {
        self.cache_metrics.sidecar_misses.inc();
    }

    /// `GET /api/v1/index`.
    pub fn status(&self) -> Value {
        let index = self.index();
        let rebuild = self.rebuild.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let ex = &self.sources.extractor.stats;
        use std::sync::atomic::Ordering::Relaxed;
        self.cache.run_pending_tasks();
        let cache_entries = self.cache.entry_count();
        json!({
            "documents": index.num_docs(),
            "files": index.revisions().len(),
            "generation": index.generation(),
            "schema_version": crate::schema::SCHEMA_VERSION,
            "dir": index.dir,
            "feed": self.feed.to_json(),
            "rebuild": rebuild,
            "extraction": {
                "ok": ex.ok.load(Relaxed),
                "failed": ex.failed.load(Relaxed),
                "timeouts": ex.timeouts.load(Relaxed),
                "crashes": ex.crashes.load(Relaxed),
            },
            "cache": {
                "entries": cache_entries,
                "bytes": self.cache.weighted_size(),
                "hits": self.cache_metrics.hits.get(),
                "misses": self.cache_metrics.misses.get(),
                "redis_hits": self.cache_metrics.l2_hits.get(),
                "redis_misses": self.cache_metrics.l2_misses.get(),
                "redis_errors": self.cache_metrics.l2_errors.get(),
                "sidecar_hits": self.cache_metrics.sidecar_hits.get(),
                "sidecar_misses": self.cache_metrics.sidecar_misses.get(),
            },
        })
    }

    /// Asks the writer task for an online rebuild; refused while one runs.
    pub async fn request_rebuild(&self) -> Result<(), String> {
        {
            let mut r = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
            if r.running {
                return Err("a rebuild is already running".to_owned());
            }
            r.running = true;
            r.kind = Some("online".to_owned());
            r.started_at = Some(chrono::Utc::now());
            r.finished_at = None;
            r.progress = None;
            r.last_error = None;
        }
        self.commands.send(Cmd::Rebuild).await.map_err(|_| "the index writer has stopped".to_owned())
    }

    fn progress_fn(self: &Arc<Self>) -> impl Fn(&ReindexReport, &str) + Send + Sync + 'static {
        let me = self.clone();
        move |r: &ReindexReport, el: &str| {
            let mut s = me.rebuild.lock().unwrap_or_else(|p| p.into_inner());
            s.progress = Some(r.clone());
            s.element = Some(el.to_owned());
        }
    }

    fn finish_rebuild(&self, result: Result<ReindexReport, String>) {
        let mut s = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        s.running = false;
        s.finished_at = Some(chrono::Utc::now());
        match result {
            Ok(r) => s.progress = Some(r),
            Err(e) => s.last_error = Some(e),
        }
    }

    /// Waits (up to `max`) until discovery names at least one element.
    async fn wait_for_elements(&self, max: Duration) {
        let until = tokio::time::Instant::now() + max;
        while self.sources.discovery.elements().is_empty() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The writer task: fills a new index, follows events, runs online rebuilds; stops when
    /// `shutdown` flips, committing what it holds.
    pub async fn run_writer(
        self: Arc<Self>,
        bus: Option<Arc<dyn EventBus>>,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let Some(mut cmds) = self.commands_rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            anyhow::bail!("the writer task runs once");
        };
        let heap = self.cfg.writer_heap_mib << 20;
        let mut writer = self.index().writer(heap)?;
        let needs_fill = self.opened != Opened::Existing || Checkpoint::unfinished(&self.index()).is_some();
        if needs_fill {
            {
                let mut r = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
                *r = RebuildState {
                    running: true,
                    kind: Some("initial".into()),
                    started_at: Some(chrono::Utc::now()),
                    ..Default::default()
                };
            }
            self.wait_for_elements(Duration::from_secs(10)).await;
            let mut tries = 0;
            loop {
                tries += 1;
                let progress = self.progress_fn();
                match feed::reindex(writer, &self.sources, None, &progress).await {
                    Ok((w, report)) => {
                        writer = w;
                        tracing::info!(
                            indexed = report.indexed,
                            listed = report.listed,
                            seconds = report.seconds,
                            "index filled from the elements"
                        );
                        self.finish_rebuild(Ok(report));
                        break;
                    }
                    Err((w, e)) => {
                        writer = w;
                        tracing::warn!(error = %e, tries, "filling the index from the elements failed");
                        if tries >= 3 || *shutdown.borrow() {
                            self.finish_rebuild(Err(format!(
                                "filling the index failed: {e}; the next start resumes it"
                            )));
                            break;
                        }
                        self.rebuild.lock().unwrap_or_else(|p| p.into_inner()).last_error = Some(e.to_string());
                        tokio::time::sleep(Duration::from_secs(3)).await;
                    }
                }
            }
        }
        if self.cfg.reconcile_on_start && !needs_fill {
            self.wait_for_elements(Duration::from_secs(10)).await;
            let index = self.index();
            match feed::check(Some(writer), &index, &self.sources, true).await {
                Ok((w, report)) => {
                    tracing::info!(
                        drift = report.drift.len(),
                        repaired = report.repaired,
                        "index reconciled with the elements"
                    );
                    writer = w.ok_or_else(|| anyhow::anyhow!("writer lost"))?;
                }
                Err(e) => {
                    // The writer went down with the failed check: take a new one.
                    tracing::warn!(error = %e, "reconciling the index with the elements failed");
                    writer = index.writer(heap)?;
                }
            }
        }
        loop {
            let (stop_tx, stop_rx) = watch::channel(false);
            let (follower, mut held) = match bus.clone() {
                Some(bus) => {
                    let (sources, feed, group) =
                        (self.sources.clone(), self.feed.clone(), self.cfg.consumer_group.clone());
                    let interval = Duration::from_millis(self.cfg.commit_interval_ms.max(10));
                    let h = tokio::spawn(async move {
                        feed::follow(writer, sources, bus, &group, interval, feed, stop_rx).await
                    });
                    (Some(h), None)
                }
                None => (None, Some(writer)),
            };
            let cmd = match follower {
                Some(mut h) => {
                    let cmd = tokio::select! {
                        c = cmds.recv() => c,
                        _ = shutdown.changed() => None,
                        r = &mut h => {
                            // The follower stopped by itself: events were lost.
                            let (w, why) = r.map_err(|e| anyhow::anyhow!("event follower failed: {e}"))?;
                            held = Some(w);
                            match why {
                                feed::Stopped::Gap(g) => Some(Cmd::Gap(g)),
                                feed::Stopped::Shutdown => None,
                            }
                        }
                    };
                    let _ = stop_tx.send(true);
                    if held.is_none() {
                        let (w, _) = h.await.map_err(|e| anyhow::anyhow!("event follower failed: {e}"))?;
                        held = Some(w);
                    }
                    cmd
                }
                None => tokio::select! {
                    c = cmds.recv() => c,
                    _ = shutdown.changed() => None,
                },
            };
            writer = held.take().ok_or_else(|| anyhow::anyhow!("writer lost"))?;
            match cmd {
                Some(Cmd::Rebuild) => writer = self.online_rebuild(writer).await,
                Some(Cmd::Gap(why)) => {
                    {
                        let mut r = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
                        *r = RebuildState {
                            running: true,
                            kind: Some("after lost events".into()),
                            started_at: Some(chrono::Utc::now()),
                            last_error: Some(why),
                            ..Default::default()
                        };
                    }
                    writer = self.online_rebuild(writer).await;
                }
                None => {
                    let (w, r) = feed::commit(writer, None).await;
                    r?;
                    tokio::task::spawn_blocking(move || w.close()).await??;
                    return Ok(());
                }
            }
        }
    }

    /// Rebuilds into `DIR/next` while the live index answers, then swaps. Events wait on
    /// the bus meanwhile and are applied to the new index afterwards (idempotent by revision).
    async fn online_rebuild(self: &Arc<Self>, live_writer: Writer) -> Writer {
        let fail = |me: &Arc<Self>, e: String| {
            tracing::warn!(error = %e, "online rebuild failed; the live index goes on");
            me.finish_rebuild(Err(e));
        };
        let next = match layout::create_next(&self.root) {
            Ok(n) => n,
            Err(e) => {
                fail(self, e.to_string());
                return live_writer;
            }
        };
        let next_writer = match next.writer(self.cfg.writer_heap_mib << 20) {
            Ok(w) => w,
            Err(e) => {
                fail(self, e.to_string());
                return live_writer;
            }
        };
        let progress = self.progress_fn();
        match feed::reindex(next_writer, &self.sources, None, &progress).await {
            Ok((nw, report)) => {
                // Release both writers' locks, then swap the folders.
                let closed = tokio::task::spawn_blocking(move || {
                    let a = nw.close();
                    let b = live_writer.close();
                    a.and(b)
                })
                .await;
                match closed {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "closing the writers before the swap"),
                    Err(e) => tracing::warn!(error = %e, "closing the writers before the swap"),
                }
                let swapped = layout::swap(&self.root);
                let index = match swapped {
                    Ok(i) => i,
                    Err(e) => {
                        // The live folder may be gone: reopen whatever is there.
                        let reopened = layout::open_live(&self.root).map(|(i, _)| i);
                        fail(self, format!("swap failed: {e}"));
                        match reopened {
                            Ok(i) => i,
                            Err(e2) => panic!("the index cannot be reopened after a failed swap: {e2}"),
                        }
                    }
                };
                *self.index.write().unwrap_or_else(|p| p.into_inner()) = index.clone();
                tracing::info!(
                    indexed = report.indexed,
                    seconds = report.seconds,
                    "online rebuild done and swapped in"
                );
                self.finish_rebuild(Ok(report));
                match index.writer(self.cfg.writer_heap_mib << 20) {
                    Ok(w) => w,
                    Err(e) => panic!("the rebuilt index cannot be written: {e}"),
                }
            }
            Err((nw, e)) => {
                let _ = tokio::task::spawn_blocking(move || nw.close()).await;
                let _ = std::fs::remove_dir_all(layout::next(&self.root));
                fail(self, e.to_string());
                live_writer
            }
        }
    }
}

/// The length of `v` as JSON, without writing it anywhere.
fn json_len(v: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}
