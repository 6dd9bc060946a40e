//! PostgreSQL is only a cache: stopping it in the middle of an ingest fails no request, and
//! once it is back the cache converges to the files on its own.

mod support;

use artstore_shared::auth::{JWKS_FILE, LocalSigner};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Element, PrivatePostgres, upload};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_postgres_during_ingest_fails_no_request_and_the_cache_converges() {
    let pg = PrivatePostgres::start_new();
    pg.psql("CREATE DATABASE cache");
    let url = pg.url("cache");
    let tmp = tempfile::tempdir().unwrap();
    let signer = LocalSigner::load_or_create(&tmp.path().join("keys")).unwrap();
    let token = signer.issue("t", &["admin".into()], Duration::from_secs(3600), chrono::Utc::now()).unwrap();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let root = tmp.path().join("element");
    let e =
        Element::start(&root, &tmp.path().join("keys").join(JWKS_FILE), &tmp.path().join("e.log"), &["--cache", &url]);
    e.wait_ready(&client).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = vec![];
    for c in 0..4 {
        let (client, base, token, stop, acked, failed) =
            (client.clone(), e.base.clone(), token.clone(), stop.clone(), acked.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let (s, v) = upload(
                    &client,
                    &base,
                    &token,
                    &format!("c{c}-{n}.txt"),
                    format!("{c}/{n}").into_bytes(),
                    &[("tags", "outage")],
                )
                .await;
                if s == 201 {
                    acked.lock().unwrap().push(v["file_id"].as_str().unwrap().to_owned());
                } else {
                    failed.lock().unwrap().push(format!("{s}: {v}"));
                }
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before_stop = acked.lock().unwrap().len();
    pg.stop();
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let ready: serde_json::Value =
        client.get(format!("{}/health/ready", e.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"]["cache"]["status"], "degraded", "{ready}");
    let during = acked.lock().unwrap().len() - before_stop;
    pg.start();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "requests failed because the cache was down: {failed:?}");
    assert!(during > 0, "no upload was acknowledged while PostgreSQL was down");
    let acked = acked.lock().unwrap().clone();

    // The cache converges to the files: every acknowledged document is listed.
    let mut listed = 0;
    for _ in 0..300 {
        listed = support::list_all(&client, &e.base, &token, "tag=outage").await.len();
        if listed == acked.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed, acked.len(), "the cache did not converge");
    let ready: serde_json::Value =
        client.get(format!("{}/health/ready", e.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"]["cache"]["status"], "ready", "{ready}");
    let out = std::process::Command::new(support::BIN)
        .args(["storage-element", "check-cache", "--data"])
        .arg(&root)
        .args(["--cache", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(" 0 differences"), "{text}");
    println!("{} uploads, {during} while PostgreSQL was down, none failed; cache converged", acked.len());
}
