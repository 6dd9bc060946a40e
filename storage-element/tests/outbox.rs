//! The outbox relay on the in-process bus: each kind of change becomes the event named for
//! it, in order per file, with the revision it committed; a restarted relay resumes from its
//! checkpoint without sending again what was acknowledged; the WAL is not pruned past it.

mod common;

use artstore_shared::events::{Event, EventBus, InProcessBus};
use artstore_shared::health::Health;
use axum::http::Method;
use common::Harness;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

async fn collect(sub: &mut Box<dyn artstore_shared::events::Subscription>, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < n {
        match sub.next(Duration::from_secs(10)).await.unwrap() {
            Some(d) => out.push(d.event),
            None => break,
        }
    }
    out
}

/// Starts the relay of the harness's element (`se-1`) on `bus`.
fn spawn_relay(h: &Harness, bus: &Arc<InProcessBus>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(artstore_storage_element::outbox::run(
        h.store.clone(),
        bus.clone(),
        "se-1".into(),
        Health::new(),
        h.store.outbox().clone(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_an_event_named_for_it() {
    let h = Harness::with(|c| c.initial_mode = artstore_storage_element::ElementMode::Edit).await;
    let bus = Arc::new(InProcessBus::default());
    let relay = spawn_relay(&h, &bus);
    let mut sub = bus.subscribe("test").await.unwrap();
    // The first event says the mode.
    let first = collect(&mut sub, 1).await;
    assert_eq!((first[0].kind.as_str(), first[0].mode.as_deref()), ("mode_changed", Some("edit")));

    let a = h.upload("a.txt", b"alpha", &[]).await;
    let id = a["file_id"].as_str().unwrap().to_owned();
    let admin = h.admin();
    let call = |m: Method, uri: String, body: serde_json::Value| {
        let (h, admin) = (&h, admin.clone());
        async move {
            let r = h.call(m, &uri, Some(&admin), Some(body)).await;
            assert!(r.status.is_success(), "{uri}: {} {}", r.status, String::from_utf8_lossy(&r.body));
        }
    };
    call(Method::PATCH, format!("/api/v1/files/{id}"), json!({"description": "x"})).await;
    call(Method::PUT, format!("/api/v1/files/{id}/legal-hold"), json!({"enabled": true})).await;
    call(Method::PUT, format!("/api/v1/files/{id}/legal-hold"), json!({"enabled": false})).await;
    let until = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    call(Method::PUT, format!("/api/v1/files/{id}/retention"), json!({"retain_until": until})).await;
    let b = h.upload("b.txt", b"beta", &[]).await;
    let bid = b["file_id"].as_str().unwrap().to_owned();
    let r = h.call(Method::DELETE, &format!("/api/v1/files/{bid}"), Some(&admin), None).await;
    assert!(r.status.is_success());
    assert!(h.set_mode("rw").await.status.is_success());

    let got = collect(&mut sub, 8).await;
    let kinds: Vec<(String, Option<u64>)> = got.iter().map(|e| (e.kind.clone(), e.revision)).collect();
    let want = [
        ("ingested", Some(1)),
        ("metadata_updated", Some(2)),
        ("legal_hold_changed", Some(3)),
        ("legal_hold_changed", Some(4)),
        ("retention_extended", Some(5)),
        ("ingested", Some(1)),
        ("deleted", Some(2)),
        ("mode_changed", None),
    ];
    assert_eq!(kinds, want.map(|(k, r)| (k.to_owned(), r)));
    assert_eq!(got[0].file_id.unwrap().to_string(), id);
    assert_eq!(got[0].element_id, "se-1");
    assert_eq!(got[0].sidecar.as_ref().unwrap()["file_id"], id);
    assert_eq!(got[7].mode.as_deref(), Some("rw"));
    sub.commit().await.unwrap();

    // A relay restarted on the same element resumes after its checkpoint.
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.abort();
    let cp = artstore_storage_element::outbox::read_checkpoint(&h.root()).unwrap();
    assert!(cp.position > 0 && cp.mode.as_deref() == Some("rw"), "{cp:?}");
    let relay = spawn_relay(&h, &bus);
    let c = h.upload("c.txt", b"gamma", &[]).await;
    let got = collect(&mut sub, 1).await;
    assert_eq!(got[0].file_id.unwrap().to_string(), c["file_id"].as_str().unwrap());
    assert!(sub.next(Duration::from_millis(300)).await.unwrap().is_none(), "nothing sent twice");
    relay.abort();
}

/// A mode change is announced after every change made before it, however the relay's
/// polling falls: a change committed just before the mode moved is never announced after
/// the new mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mode_change_is_announced_after_the_changes_made_before_it() {
    for round in 0..30 {
        let h = Harness::with(|c| c.initial_mode = artstore_storage_element::ElementMode::Edit).await;
        let bus = Arc::new(InProcessBus::default());
        let relay = spawn_relay(&h, &bus);
        let mut sub = bus.subscribe("test").await.unwrap();
        assert_eq!(collect(&mut sub, 1).await[0].mode.as_deref(), Some("edit"));
        for mode in ["rw", "ro"] {
            let f = h.upload(&format!("{round}-{mode}.txt"), b"x", &[]).await;
            assert!(h.set_mode(mode).await.status.is_success());
            let got = collect(&mut sub, 2).await;
            let seen: Vec<(String, Option<String>)> = got.iter().map(|e| (e.kind.clone(), e.mode.clone())).collect();
            assert_eq!(
                seen,
                [("ingested".to_owned(), None), ("mode_changed".to_owned(), Some(mode.to_owned()))],
                "round {round}"
            );
            assert_eq!(got[0].file_id.unwrap().to_string(), f["file_id"].as_str().unwrap());
        }
        relay.abort();
    }
}
