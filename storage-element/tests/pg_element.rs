//! The storage element on a PostgreSQL cache: listings and filters served from the
//! database, uploads that never wait on it, and catch-up from the WAL after an outage.

mod common;

use artstore_storage_element::cache::{CachedSidecar, SidecarCache};
use artstore_storage_element::pg::{PgCache, testing};
use axum::http::Method;
use common::Harness;
use serde_json::Value;
use std::time::Duration;

async fn element_cache(h: &Harness, url: &str) -> PgCache {
    let e: Value = serde_json::from_slice(&std::fs::read(h.root().join("element.json")).unwrap()).unwrap();
    PgCache::open(url, e["element_id"].as_str().unwrap().parse().unwrap()).await.unwrap()
}

async fn wait_for(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn ids(v: &Value) -> Vec<String> {
    v["items"].as_array().unwrap().iter().map(|i| i["file_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_cache_serves_listings_and_catches_up_after_an_outage() {
    let url = testing::fresh_database().await;
    let tmp = tempfile::tempdir().unwrap();
    let good = url.clone();

    // 1. A healthy element: uploads land in the cache, filters are answered by PostgreSQL.
    let h = Harness::open(tmp.path(), |c| c.cache = Some(good.clone())).await;
    let a = h.upload("a.pdf", b"a", &[("tags", "contract,2024")]).await;
    // Listings are answered by the cache; a first update slower than its 1 s budget (a busy
    // database) is caught up by the applier, so the test waits for convergence.
    let converged = async |n: usize| {
        wait_for("the cache to hold the uploads", async || {
            !h.store.cache_sync().is_degraded() && ids(&h.get("/api/v1/files?limit=100").await.json()).len() == n
        })
        .await
    };
    converged(1).await;
    let doc = a["document_id"].as_str().unwrap().to_owned();
    h.upload("a.pdf", b"a2", &[("document_id", &doc)]).await;
    h.upload("b.txt", b"b", &[("tags", "memo"), ("legal_hold", "true")]).await;
    converged(3).await;
    let list = h.get("/api/v1/files?tag=contract").await;
    assert_eq!(list.status, 200);
    assert_eq!(ids(&list.json()), vec![a["file_id"].as_str().unwrap()]);
    assert_eq!(ids(&h.get("/api/v1/files?retention=on-hold").await.json()).len(), 1);
    assert_eq!(ids(&h.get("/api/v1/files?content_type=application/pdf").await.json()).len(), 2);
    assert_eq!(ids(&h.get(&format!("/api/v1/files?document_id={doc}")).await.json()).len(), 2);
    let today = chrono::Utc::now().date_naive();
    assert_eq!(ids(&h.get(&format!("/api/v1/files?from={today}&to={today}")).await.json()).len(), 3);
    assert_eq!(ids(&h.get("/api/v1/files?from=2000-01-01&to=2000-12-31").await.json()).len(), 0);
    assert_eq!(
        h.get(&format!("/api/v1/documents/{doc}/versions")).await.json()["versions"].as_array().unwrap().len(),
        2
    );
    let cache = element_cache(&h, &url).await;
    wait_for("the checkpoint", async || cache.checkpoint().await.unwrap().is_some_and(|c| c > 0)).await;
    let before = cache.checkpoint().await.unwrap().unwrap();
    // A marker row that a rebuild would delete and a catch-up leaves alone.
    let mut marker =
        (*cache.get(a["file_id"].as_str().unwrap().parse().unwrap()).await.unwrap().unwrap().sidecar).clone();
    marker.file_id = artstore_storage_element::layout::new_file_id(chrono::Utc::now() - chrono::Duration::days(9000));
    cache.upsert(CachedSidecar { sidecar: std::sync::Arc::new(marker.clone()), path: "marker".into() }).await.unwrap();
    h.close().await;

    // 2. The database is unreachable: uploads and reads by id go on, readiness says degraded.
    let h = Harness::open(tmp.path(), |c| c.cache = Some("postgres://postgres@127.0.0.1:1/down".into())).await;
    let mut during = vec![];
    for i in 0..3 {
        let r = h.upload_with(&h.admin(), &format!("outage-{i}.txt"), b"x", &[], &[]).await;
        assert_eq!(r.status, 201, "no upload fails because the cache is down");
        during.push(r.json()["file_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(h.get(&format!("/api/v1/files/{}", during[0])).await.status, 200);
    assert_eq!(h.get(&format!("/api/v1/files/{}/content", during[1])).await.status, 200);
    let ready = h.call(Method::GET, "/health/ready", None, None).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["checks"]["cache"]["status"], "degraded", "{}", ready.json());
    let cache_worker = ready.json()["element"]["workers"]["cache"].clone();
    assert_eq!(cache_worker["kind"], "postgres", "{cache_worker}");
    assert_eq!(cache_worker["status"], "degraded", "{cache_worker}");
    assert_eq!(cache_worker["caught_up"], false, "{cache_worker}");
    let info = h.get("/api/v1/element").await;
    assert_eq!(info.status, 200);
    assert!(info.json()["cache"].as_str().unwrap().starts_with("degraded"));
    assert_eq!(h.get("/api/v1/files").await.status, 503, "listings need the cache");
    h.close().await;

    // 3. Back on the database: the cache catches up from its checkpoint, no rescan.
    let h = Harness::open(tmp.path(), |c| c.cache = Some(good.clone())).await;
    wait_for("the catch-up", async || ids(&h.get("/api/v1/files?limit=100").await.json()).len() == 7).await;
    let listed = ids(&h.get("/api/v1/files?limit=100").await.json());
    for id in &during {
        assert!(listed.contains(id), "{id} missing after catch-up");
    }
    assert!(listed.contains(&marker.file_id.to_string()), "a rescan would have removed the marker");
    // The checkpoint is saved after the rows it covers, so it may trail the listing briefly.
    wait_for("the checkpoint to advance", async || cache.checkpoint().await.unwrap().is_some_and(|c| c > before)).await;
    let report =
        artstore_storage_element::rebuild::check(&h.root(), &cache, false, std::sync::Arc::new(|_| {})).await.unwrap();
    assert_eq!(report.drift.len(), 1, "only the planted marker differs: {:?}", report.drift);
    let report =
        artstore_storage_element::rebuild::check(&h.root(), &cache, true, std::sync::Arc::new(|_| {})).await.unwrap();
    assert!(report.repaired);
    assert!(
        artstore_storage_element::rebuild::check(&h.root(), &cache, false, std::sync::Arc::new(|_| {}))
            .await
            .unwrap()
            .drift
            .is_empty()
    );
    h.close().await;
    cache.pool().close().await;
    testing::drop_database(&url).await;
}
