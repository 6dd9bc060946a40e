//! The storage-element registry over HTTP: labels given at registration, replaced by a
//! PATCH, refused when malformed (with nothing changed), audited, published with the
//! registry, and kept across a restart.

mod support;

use serde_json::{Value, json};
use support::*;

async fn patch_json(base: &str, path: &str, token: &str, body: Value) -> reqwest::Response {
    http().patch(format!("{base}{path}")).bearer_auth(token).json(&body).send().await.unwrap()
}

/// The last audit entry's action and detail.
async fn last_audit(base: &str, token: &str) -> (String, Value) {
    let (status, page) = get_json(base, "/api/v1/audit?limit=1000", token).await;
    assert_eq!(status, 200, "{page}");
    let last = page["items"].as_array().unwrap().last().unwrap().clone();
    (last["action"].as_str().unwrap().to_owned(), last["detail"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn element_labels_are_registered_replaced_checked_and_audited() {
    let mut c = Cluster::start(1, |_| {}).await;
    c.leader_among(&[1]).await;
    let base = c.url(1);
    let token = admin_token(&base).await;

    let r = post_json(
        &base,
        "/api/v1/elements",
        &token,
        json!({"id": "se-1", "url": "http://10.0.0.1:8081", "weight": 2, "labels": {"rack": "r12", "tier": "ssd"}}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["labels"], json!({"rack": "r12", "tier": "ssd"}));
    let (status, e) = get_json(&base, "/api/v1/elements/se-1", &token).await;
    assert_eq!((status, &e["labels"]), (200, &json!({"rack": "r12", "tier": "ssd"})));
    assert_eq!(
        last_audit(&base, &token).await,
        (
            "element.create".into(),
            json!({"url": "http://10.0.0.1:8081", "mode": "edit", "labels": {"rack": "r12", "tier": "ssd"}})
        )
    );

    // An element without labels shows an empty set.
    let r = post_json(&base, "/api/v1/elements", &token, json!({"id": "se-2", "url": "http://10.0.0.2:8081"})).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["labels"], json!({}));
    let (_, list) = get_json(&base, "/api/v1/elements", &token).await;
    let labels: Vec<&Value> = list["items"].as_array().unwrap().iter().map(|e| &e["labels"]).collect();
    assert_eq!(labels, [&json!({"rack": "r12", "tier": "ssd"}), &json!({})]);

    // A PATCH replaces the whole set; one without labels keeps them.
    let r = patch_json(&base, "/api/v1/elements/se-1", &token, json!({"labels": {"rack": "r14", "zone": "b"}})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["labels"], json!({"rack": "r14", "zone": "b"}));
    let (action, detail) = last_audit(&base, &token).await;
    assert_eq!(action, "element.update");
    assert_eq!(detail["labels"], json!({"rack": "r14", "zone": "b"}));
    assert_eq!(detail["previous_labels"], json!({"rack": "r12", "tier": "ssd"}));
    let r = patch_json(&base, "/api/v1/elements/se-1", &token, json!({"weight": 5})).await;
    assert_eq!(r.status(), 200);
    let (_, e) = get_json(&base, "/api/v1/elements/se-1", &token).await;
    assert_eq!((&e["weight"], &e["labels"]), (&json!(5), &json!({"rack": "r14", "zone": "b"})));
    let (_, detail) = last_audit(&base, &token).await;
    assert!(detail.get("labels").is_none(), "a change without labels does not audit them: {detail}");

    // Bad labels: 400 naming the label, and nothing changes (not even the audit chain).
    let (_, before) = get_json(&base, "/api/v1/audit?limit=1000", &token).await;
    let long = "x".repeat(257);
    let many: serde_json::Map<String, Value> = (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    let refused = [
        (json!({"labels": {"Rack": "r1"}}), "\"Rack\""),
        (json!({"labels": {"-rack": "r1"}}), "\"-rack\""),
        (json!({"labels": {"rack": "r1", "note": long}}), "\"note\""),
        (json!({"labels": many}), "at most 32"),
        (json!({"labels": {"rack": 12}}), ""),
    ];
    for (body, names) in refused {
        let r = patch_json(&base, "/api/v1/elements/se-1", &token, body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        assert!(r.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().starts_with("application/problem+json"));
        let p: Value = r.json().await.unwrap();
        assert!(p["detail"].as_str().unwrap().contains(names), "{p}");
    }
    let r = post_json(
        &base,
        "/api/v1/elements",
        &token,
        json!({"id": "se-3", "url": "http://10.0.0.3:8081", "labels": {"tier": "ssd", "bad key": "x"}}),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["detail"].as_str().unwrap().contains("\"bad key\""));
    assert_eq!(get_json(&base, "/api/v1/elements/se-3", &token).await.0, 404, "a refused element is not registered");
    let (_, e) = get_json(&base, "/api/v1/elements/se-1", &token).await;
    assert_eq!(e["labels"], json!({"rack": "r14", "zone": "b"}), "refused changes leave the labels alone");
    let (_, after) = get_json(&base, "/api/v1/audit?limit=1000", &token).await;
    assert_eq!(before["last_seq"], after["last_seq"], "refusals leave no audit entry");

    // What the leader publishes to Redis carries the labels (readers that predate them
    // ignore the field; an unlabelled element leaves it out).
    let registry = artstore_admin::discovery::registry_of(&c.nodes[&1].node);
    let published = serde_json::to_value(&registry).unwrap();
    assert_eq!(published["elements"][0]["labels"], json!({"rack": "r14", "zone": "b"}));
    assert!(published["elements"][1].get("labels").is_none(), "{published}");

    // An empty object removes every label.
    let r = patch_json(&base, "/api/v1/elements/se-1", &token, json!({"labels": {}})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["labels"], json!({}));
    let r = patch_json(&base, "/api/v1/elements/se-1", &token, json!({"labels": {"rack": "r15"}})).await;
    assert_eq!(r.status(), 200);

    // Labels are in the replicated log: a restarted node replays them.
    c.nodes.get_mut(&1).unwrap().stop().await;
    c.restart(1).await;
    c.leader_among(&[1]).await;
    let token = admin_token(&base).await;
    let (_, e) = get_json(&base, "/api/v1/elements/se-1", &token).await;
    assert_eq!((&e["weight"], &e["labels"]), (&json!(5), &json!({"rack": "r15"})));
    let (_, e) = get_json(&base, "/api/v1/elements/se-2", &token).await;
    assert_eq!(e["labels"], json!({}));
    c.nodes.get_mut(&1).unwrap().stop().await;
}
