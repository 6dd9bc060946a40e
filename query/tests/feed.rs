//! The index fed by events and by the elements' listings, in process, against a small fake
//! element (listing feed, sidecars, content): events become searchable, replays and older
//! revisions change nothing, an event-fed index answers exactly as one rebuilt from the
//! listings, the drift check names what differs, and lost events trigger a rebuild.

use artstore_query::config::QueryConfig;
use artstore_query::extractor::Extractor;
use artstore_query::feed::{self, Sources};
use artstore_query::index::layout;
use artstore_query::search::SearchRequest;
use artstore_query::service::QueryService;
use artstore_shared::clients::{ElementClient, ServiceToken};
use artstore_shared::discovery::{Discovery, ProbeConfig, StaticDiscovery};
use artstore_shared::events::{Event, EventBus, InProcessBus};
use artstore_shared::health::Health;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What the fake element holds: sidecar and content by file id.
type Held = BTreeMap<Uuid, (Value, Vec<u8>)>;

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<Held>>, Arc<Mutex<std::collections::HashSet<Uuid>>>);

impl Fake {
    fn put(&self, id: Uuid, name: &str, text: &str, revision: u64, state: &str) -> Value {
        let sc = json!({
            "schema": "artstore/sidecar/v1", "file_id": id, "document_id": id, "version": 1, "revision": revision,
            "state": state, "original_name": name, "stored_name": format!("x_{id}"), "content_type": "text/plain",
            "size": text.len(), "sha256": "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7",
            "created_at": "2025-01-02T03:04:05Z", "created_by": "a", "updated_at": "2025-01-02T03:04:05Z", "updated_by": "a",
            "description": format!("rev {revision}"), "tags": [], "metadata": {},
            "retention": {"mode": "none", "legal_hold": false, "disposition": "dispose"},
            "content": {"location": "hot"}
        });
        self.0.lock().unwrap().insert(id, (sc.clone(), text.as_bytes().to_vec()));
        sc
    }
}

#[derive(serde::Deserialize)]
struct ListQ {
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn start_fake(fake: Fake) -> String {
    let app = axum::Router::new()
        .route(
            "/api/v1/files",
            axum::routing::get(|State(f): State<Fake>, Query(q): Query<ListQ>| async move {
                let after: Option<Uuid> = q.cursor.and_then(|c| c.parse().ok());
                let limit = q.limit.unwrap_or(100);
                let m = f.0.lock().unwrap();
                let items: Vec<(Uuid, Value)> = m
                    .iter()
                    .filter(|(id, _)| after.is_none_or(|a| **id > a))
                    .take(limit)
                    .map(|(id, (sc, _))| (*id, sc.clone()))
                    .collect();
                let next = (items.len() == limit).then(|| items.last().map(|(id, _)| id.to_string())).flatten();
                axum::Json(json!({"items": items.into_iter().map(|(_, s)| s).collect::<Vec<_>>(), "next_cursor": next}))
            }),
        )
        .route(
            "/api/v1/files/{id}",
            axum::routing::get(|State(f): State<Fake>, Path(id): Path<Uuid>| async move {
                axum::Json(f.0.lock().unwrap().get(&id).map(|(s, _)| s.clone()).unwrap_or(Value::Null))
            }),
        )
        .route(
            "/api/v1/files/{id}/content",
            axum::routing::get(|State(f): State<Fake>, Path(id): Path<Uuid>| async move {
                if f.1.lock().unwrap().contains(&id) {
                    return Err(axum::http::StatusCode::SERVICE_UNAVAILABLE);
                }
                Ok(f.0.lock().unwrap().get(&id).map(|(_, c)| c.clone()).unwrap_or_default())
            }),
        )
        .route(
            "/health/ready",
            axum::routing::get(|| async {
                axum::Json(json!({"status": "ready", "element": {"id": "se-1", "mode": "rw"}}))
            }),
        )
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn sources(url: &str) -> Arc<Sources> {
    let discovery: Arc<dyn Discovery> =
        Arc::new(StaticDiscovery::start(vec![("se-1".to_owned(), url.to_owned())], ProbeConfig::default()));
    Arc::new(Sources::new(
        discovery,
        ElementClient::new(Duration::from_secs(5)),
        Arc::new(ServiceToken::Static("t".into())),
        Arc::new(Extractor::in_process(Default::default())),
        4,
    ))
}

struct Running {
    svc: Arc<QueryService>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn start(root: &std::path::Path, url: &str, bus: Arc<dyn EventBus>) -> Running {
    start_with(root, url, bus, |_| {})
}

fn start_with(
    root: &std::path::Path,
    url: &str,
    bus: Arc<dyn EventBus>,
    tune: impl FnOnce(&mut QueryConfig),
) -> Running {
    let mut cfg =
        QueryConfig { index: Some(root.to_owned()), commit_interval_ms: 50, writer_heap_mib: 20, ..Default::default() };
    tune(&mut cfg);
    let svc = QueryService::open(cfg, root.to_owned(), sources(url), Health::new()).unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(svc.clone().run_writer(Some(bus), rx));
    Running { svc, stop, task }
}

impl Running {
    async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap().unwrap();
    }

    async fn total(&self, q: &str) -> u64 {
        let v = self.svc.search(SearchRequest { q: q.into(), limit: 1000, ..Default::default() }).await.unwrap();
        v["total"].as_u64().unwrap()
    }

    async fn ids(&self, q: &str) -> Vec<String> {
        let v = self.svc.search(SearchRequest { q: q.into(), limit: 1000, ..Default::default() }).await.unwrap();
        v["hits"].as_array().unwrap().iter().map(|h| format!("{}@{}", h["file_id"], h["revision"])).collect()
    }

    async fn wait_docs(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.svc.index().num_docs() != n {
            assert!(
                Instant::now() < deadline,
                "index has {} docs, want {n}: {}",
                self.svc.index().num_docs(),
                self.svc.status()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn event(kind: &str, sc: &Value) -> Event {
    serde_json::from_value(json!({
        "type": kind, "file_id": sc["file_id"], "document_id": sc["document_id"], "version": 1,
        "element_id": "se-1", "revision": sc["revision"], "at": chrono::Utc::now(), "sidecar": sc
    }))
    .unwrap()
}

const QUERIES: &[&str] = &["alpha", "beta", "gamma OR delta", "\"alpha beta\"", "rev", "-alpha rev", "name:doc*", ""];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_become_searchable_idempotently_and_match_a_rebuild() {
    let fake = Fake::default();
    let url = start_fake(fake.clone()).await;
    let bus = InProcessBus::default();
    let dir = tempfile::tempdir().unwrap();
    let q = start(&dir.path().join("fed"), &url, Arc::new(bus.clone()));
    q.wait_docs(0).await;
    // Visible within a second of the event.
    let id = Uuid::now_v7();
    let sc = fake.put(id, "doc-first.txt", "alpha beta", 1, "active");
    let t0 = Instant::now();
    bus.publish(&[event("ingested", &sc)]).await.unwrap();
    while q.total("alpha").await == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "not visible: {}", q.svc.status());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let visible = t0.elapsed();
    eprintln!("event to searchable: {visible:?}");
    assert!(visible < Duration::from_secs(1), "{visible:?}");

    // Many documents, updates, a replay, an out-of-order older revision, a delete and a
    // late update after it.
    let mut ids = vec![id];
    let words = ["alpha", "beta", "gamma", "delta"];
    let mut evs = Vec::new();
    for i in 0..60 {
        let id = Uuid::now_v7();
        ids.push(id);
        let sc =
            fake.put(id, &format!("doc-{i}.txt"), &format!("{} {}", words[i % 4], words[(i + 1) % 4]), 1, "active");
        evs.push(event("ingested", &sc));
    }
    bus.publish(&evs).await.unwrap();
    let sc2 = fake.put(ids[1], "doc-0.txt", "alpha beta", 2, "active");
    let old = event("ingested", &evs[0].sidecar.clone().unwrap());
    bus.publish(&[event("metadata_updated", &sc2), old.clone(), event("metadata_updated", &sc2)]).await.unwrap();
    let gone = fake.put(ids[2], "doc-1.txt", "", 3, "deleted");
    bus.publish(&[event("deleted", &gone)]).await.unwrap();
    let mut late = evs[1].sidecar.clone().unwrap();
    late["revision"] = json!(2);
    bus.publish(&[event("metadata_updated", &late)]).await.unwrap();
    q.wait_docs(61).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while q.svc.index().revision_of(ids[1]) != Some(2) || q.svc.index().revision_of(ids[2]) != Some(3) {
        assert!(Instant::now() < deadline, "{}", q.svc.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(q.svc.index().revision_of(ids[1]), Some(2), "an older revision overwrote a newer one");
    assert_eq!(q.svc.index().revision_of(ids[2]), Some(3), "a late update brought a deleted document back");
    let fed: Vec<(u64, Vec<String>)> = {
        let mut v = Vec::new();
        for query in QUERIES {
            let mut ids = q.ids(query).await;
            ids.sort();
            v.push((q.total(query).await, ids));
        }
        v
    };
    q.shutdown().await;

    // A fresh index from the listing answers exactly the same.
    let (index, _) = layout::open_live(&dir.path().join("rebuilt")).unwrap();
    let w = index.writer(20 << 20).unwrap();
    let (w, report) = feed::reindex(w, &sources(&url), None, &|_, _| {}).await.unwrap();
    w.close().unwrap();
    assert_eq!(report.listed, 61);
    assert_eq!(report.errors, 0);
    drop(index);
    let r = start(&dir.path().join("rebuilt"), &url, Arc::new(InProcessBus::default()));
    for (query, (total, ids)) in QUERIES.iter().zip(&fed) {
        let mut got = r.ids(query).await;
        got.sort();
        assert_eq!((r.total(query).await, &got), (*total, ids), "query {query:?}");
    }
    r.shutdown().await;

    // The drift check: no drift, then one of each kind.
    let (index, _) = layout::open_live(&dir.path().join("fed")).unwrap();
    let s = sources(&url);
    let (_, rep) = feed::check(None, &index, &s, false).await.unwrap();
    assert!(rep.drift.is_empty(), "{:?}", rep.drift);
    let new = Uuid::now_v7();
    fake.put(new, "doc-new.txt", "epsilon", 1, "active");
    fake.put(ids[3], "doc-2.txt", "gamma delta", 5, "active");
    fake.0.lock().unwrap().remove(&ids[4]);
    let (_, rep) = feed::check(None, &index, &s, false).await.unwrap();
    let kinds: Vec<(&str, Uuid)> = rep.drift.iter().map(|d| (d.kind, d.file_id)).collect();
    assert_eq!(kinds, vec![("extra", ids[4]), ("missing", new), ("stale", ids[3])]);
    let w = index.writer(20 << 20).unwrap();
    let (w, rep) = feed::check(Some(w), &index, &s, true).await.unwrap();
    assert_eq!(rep.repaired, 3);
    w.unwrap().close().unwrap();
    let (_, rep) = feed::check(None, &index, &s, false).await.unwrap();
    assert!(rep.drift.is_empty(), "{:?}", rep.drift);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_events_trigger_a_rebuild_from_the_elements() {
    let fake = Fake::default();
    let url = start_fake(fake.clone()).await;
    let bus = InProcessBus::new(5);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("idx");
    let q = start(&root, &url, Arc::new(bus.clone()));
    let sc = fake.put(Uuid::now_v7(), "first.txt", "zeta", 1, "active");
    bus.publish(&[event("ingested", &sc)]).await.unwrap();
    q.wait_docs(1).await;
    q.shutdown().await;
    // While the role is down, more events arrive than the bus keeps.
    for i in 0..20 {
        let sc = fake.put(Uuid::now_v7(), &format!("later-{i}.txt"), "eta", 1, "active");
        bus.publish(&[event("ingested", &sc)]).await.unwrap();
    }
    let q = start(&root, &url, Arc::new(bus.clone()));
    q.wait_docs(21).await;
    assert_eq!(q.total("eta").await, 20);
    let status = q.svc.status();
    assert_eq!(status["rebuild"]["kind"], "after lost events", "{status}");
    q.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_index_fills_itself_and_a_killed_reindex_resumes() {
    let fake = Fake::default();
    let url = start_fake(fake.clone()).await;
    for i in 0..450 {
        fake.put(Uuid::now_v7(), &format!("d{i}.txt"), "theta iota", 1, "active");
    }
    let dir = tempfile::tempdir().unwrap();
    // A reindex that stops after its first page (as if killed) leaves a checkpoint…
    let root = dir.path().join("idx");
    {
        let (index, _) = layout::open_live(&root).unwrap();
        let w = index.writer(20 << 20).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let src = sources(&url);
        let progress = move |_: &feed::ReindexReport, _: &str| s2.store(true, std::sync::atomic::Ordering::SeqCst);
        let fut = feed::reindex(w, &src, None, &progress);
        tokio::pin!(fut);
        // Drive it until the first page is committed, then drop it mid-way.
        loop {
            tokio::select! {
                _ = &mut fut => panic!("finished too soon"),
                _ = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
        }
    }
    let (index, _) = layout::open_live(&root).unwrap();
    let cp = feed::Checkpoint::unfinished(&index).expect("a checkpoint");
    assert!(!cp.complete && cp.cursors.contains_key("se-1"), "{cp:?}");
    let first = index.num_docs();
    assert!(first > 0 && first < 450, "{first}");
    drop(index);
    // …and the service resumes it on start.
    let q = start(&root, &url, Arc::new(InProcessBus::default()));
    q.wait_docs(450).await;
    let st = q.svc.status();
    assert_eq!(st["rebuild"]["progress"]["resumed"], true, "{st}");
    assert_eq!(st["rebuild"]["progress"]["listed"].as_u64().unwrap() + first, 450, "{st}");
    q.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_of_the_previous_schema_is_refilled_with_the_new_fields() {
    let fake = Fake::default();
    let url = start_fake(fake.clone()).await;
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for (i, id) in ids.iter().enumerate() {
        fake.put(*id, &format!("p{i}.txt"), "lambda", 1, "active");
    }
    for id in &ids[..2] {
        fake.0.lock().unwrap().get_mut(id).unwrap().0["retention"]["policy"] = json!("tax-records");
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("idx");
    // A complete index written by the previous release (one document, fill finished).
    {
        let (index, _) = layout::open_live(&root).unwrap();
        let mut w = index.writer(20 << 20).unwrap();
        let sc = fake.0.lock().unwrap()[&ids[0]].0.clone();
        let doc = sources(&url).prepare(&index, sc, "se-1").await.unwrap().unwrap();
        w.apply(&doc);
        w.commit(Some(json!({"reindex": {"done": [], "cursors": {}, "complete": true}}).to_string())).unwrap();
        w.close().unwrap();
    }
    let previous = artstore_query::schema::SCHEMA_VERSION - 1;
    std::fs::write(
        layout::live(&root).join(artstore_query::index::META_FILE),
        format!(r#"{{"schema_version": {previous}, "created_at": "2020-01-01T00:00:00Z"}}"#),
    )
    .unwrap();
    let q = start(&root, &url, Arc::new(InProcessBus::default()));
    q.wait_docs(3).await;
    assert_eq!(q.svc.status()["rebuild"]["kind"], "initial", "{}", q.svc.status());
    let v = q
        .svc
        .search(SearchRequest { limit: 1, facets: vec!["retention_policy".into()], ..Default::default() })
        .await
        .unwrap();
    assert_eq!(v["facets"]["retention_policy"], json!([{"value": "tax-records", "count": 2}]));
    q.shutdown().await;
}

/// The shared result cache in Redis (the one `scripts/services.sh` starts): a second query
/// service on the same index answers a repeated search from Redis; a commit makes the entry
/// unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_results_are_shared_through_redis_until_the_next_commit() {
    let fake = Fake::default();
    let url = start_fake(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("idx");
    let (index, _) = layout::open_live(&root).unwrap();
    let mut w = index.writer(20 << 20).unwrap();
    let sc = fake.put(Uuid::now_v7(), "cached.txt", "kappa", 1, "active");
    let doc = sources(&url).prepare(&index, sc, "se-1").await.unwrap().unwrap();
    w.apply(&doc);
    w.commit(None).unwrap();
    let cfg =
        QueryConfig { index: Some(root.clone()), redis: Some("redis://127.0.0.1:6379".into()), ..Default::default() };
    let open = || QueryService::open(cfg.clone(), root.clone(), sources(&url), Health::new()).unwrap();
    let a = open();
    let req = || SearchRequest {
        q: format!("kappa {}", Uuid::now_v7().simple()).replace("kappa ", "kappa OR "),
        limit: 5,
        ..Default::default()
    };
    let r = req();
    let first = a.search(r.clone()).await.unwrap();
    assert_eq!(first["total"], 1);
    assert_eq!(a.status()["cache"]["redis_misses"], 1, "{}", a.status());
    // The write to Redis is not awaited by the search; give it a moment. Each try is a
    // fresh service: one that asked before the write landed keeps the answer in its own
    // cache and would not ask Redis again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let b = open();
        let again = b.search(r.clone()).await.unwrap();
        assert_eq!((&again["total"], &again["hits"]), (&first["total"], &first["hits"]));
        if b.status()["cache"]["redis_hits"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never answered from redis: {}", b.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A commit moves the index's generation: the next search runs on the index.
    let sc = fake.put(Uuid::now_v7(), "cached2.txt", "kappa", 1, "active");
    let doc = sources(&url).prepare(&index, sc, "se-1").await.unwrap().unwrap();
    w.apply(&doc);
    w.commit(None).unwrap();
    w.close().unwrap();
    let c = open();
    let fresh = c.search(r.clone()).await.unwrap();
    assert_eq!(fresh["total"], 2);
    assert_eq!(c.status()["cache"]["redis_hits"], 0);
}

/// The in-process result cache stays within `result_cache_mib` however many different
/// searches run, and a commit drops the results of the commit before (they can no longer be
/// asked for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_result_cache_is_bounded_in_bytes_and_dropped_at_each_commit() {
    let fake = Fake::default();
    let url = start_fake(fake.clone()).await;
    let bus = InProcessBus::default();
    let dir = tempfile::tempdir().unwrap();
    let q = start_with(&dir.path().join("idx"), &url, Arc::new(bus.clone()), |c| c.result_cache_mib = 1);
    let text = (0..300).map(|i| format!("omega w{i}")).collect::<Vec<_>>().join(" ");
    let evs: Vec<Event> = (0..30)
        .map(|i| event("ingested", &fake.put(Uuid::now_v7(), &format!("big-{i}.txt"), &text, 1, "active")))
        .collect();
    bus.publish(&evs).await.unwrap();
    q.wait_docs(30).await;
    let mut answered = 0u64;
    for i in 0..300 {
        let v =
            q.svc.search(SearchRequest { q: format!("omega w{i}"), limit: 30, ..Default::default() }).await.unwrap();
        answered += serde_json::to_vec(&*v).unwrap().len() as u64;
    }
    let cache = &q.svc.status()["cache"];
    let (entries, bytes) = (cache["entries"].as_u64().unwrap(), cache["bytes"].as_u64().unwrap());
    eprintln!("300 answers of {answered} JSON bytes in all; cached: {entries} entries, {bytes} bytes");
    assert!(answered > 3 << 20, "the answers together are larger than the budget: {answered}");
    assert!(bytes <= 1 << 20 && (1..300).contains(&entries), "{cache}");
    // A commit: the results of the commit before are gone at the next search.
    let sc = fake.put(Uuid::now_v7(), "late.txt", "omega", 1, "active");
    bus.publish(&[event("ingested", &sc)]).await.unwrap();
    q.wait_docs(31).await;
    q.svc.search(SearchRequest { q: "omega".into(), limit: 5, ..Default::default() }).await.unwrap();
    assert_eq!(q.svc.status()["cache"]["entries"], 1, "{}", q.svc.status());
    q.shutdown().await;
}

/// Reads of a sidecar through the role are kept in memory until an event for the file
/// arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_reads_are_cached_until_an_event_for_the_file() {
    use artstore_shared::auth::{Auth, JWKS_FILE, JwksSource, LocalSigner, TokenVerifier, VerifierConfig};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let fake = Fake::default();
    let url = start_fake(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let signer = LocalSigner::load_or_create(&dir.path().join("keys")).unwrap();
    let verifier = Arc::new(TokenVerifier::new(
        JwksSource::File(dir.path().join("keys").join(JWKS_FILE)),
        VerifierConfig::default(),
        Arc::new(artstore_shared::SystemClock),
    ));
    verifier.load().await.unwrap();
    let bus = InProcessBus::default();
    let id = Uuid::now_v7();
    fake.put(id, "s.txt", "lambda", 1, "active");
    let q = start(&dir.path().join("idx"), &url, Arc::new(bus.clone()));
    // The initial fill (which also drops cached sidecars) is over once the document is in.
    q.wait_docs(1).await;
    let router =
        artstore_query::api::router(artstore_query::api::AppState { svc: q.svc.clone(), auth: Auth(verifier) });
    let token = signer.issue("t", &["reader".to_owned()], Duration::from_secs(600), chrono::Utc::now()).unwrap();
    let get = |router: axum::Router| {
        let token = token.clone();
        async move {
            let req = axum::http::Request::get(format!("/api/v1/files/{id}"))
                .header("authorization", format!("Bearer {token}"))
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = router.oneshot(req).await.unwrap();
            let cached = resp.headers().get("artstore-cache").is_some_and(|v| v == "hit");
            let v: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
            (cached, v["revision"].as_u64().unwrap())
        }
    };
    assert_eq!(get(router.clone()).await, (false, 1));
    assert_eq!(get(router.clone()).await, (true, 1));
    let sc = fake.put(id, "s.txt", "lambda", 2, "active");
    bus.publish(&[event("metadata_updated", &sc)]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while q.svc.index().revision_of(id) != Some(2) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get(router.clone()).await, (false, 2));
    q.shutdown().await;
}

/// Content that could not be read (its element failed) is indexed by metadata, named
/// stale by the drift check, and read again by the repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_content_is_stale_until_repaired() {
    let fake = Fake::default();
    let url = start_fake(fake.clone()).await;
    let id = Uuid::now_v7();
    let sc = fake.put(id, "flaky.txt", "omicron", 1, "active");
    fake.1.lock().unwrap().insert(id);
    let dir = tempfile::tempdir().unwrap();
    let (index, _) = layout::open_live(&dir.path().join("idx")).unwrap();
    let s = sources(&url);
    let mut w = index.writer(20 << 20).unwrap();
    let doc = s.prepare(&index, sc, "se-1").await.unwrap().unwrap();
    assert!(
        matches!(&doc.extraction, artstore_query::doc::Extraction::Failed { reason } if reason.starts_with("content not read")),
        "{:?}",
        doc.extraction
    );
    w.apply(&doc);
    w.commit(None).unwrap();
    let (w, rep) = feed::check(Some(w), &index, &s, false).await.unwrap();
    let kinds: Vec<(&str, Uuid)> = rep.drift.iter().map(|d| (d.kind, d.file_id)).collect();
    assert_eq!(kinds, vec![("stale", id)]);
    fake.1.lock().unwrap().clear();
    let (w, rep) = feed::check(w, &index, &s, true).await.unwrap();
    assert_eq!(rep.repaired, 1);
    w.unwrap().close().unwrap();
    assert_eq!(index.get(id).unwrap().extraction, "ok");
    let (_, rep) = feed::check(None, &index, &s, false).await.unwrap();
    assert!(rep.drift.is_empty(), "{:?}", rep.drift);
}
