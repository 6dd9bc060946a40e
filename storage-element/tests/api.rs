//! Every route of the storage element's API, including every refused operation.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use common::{Harness, sha256_hex};
use serde_json::{Value, json};

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test]
async fn upload_read_back_with_etag_and_ranges() {
    let h = Harness::new().await;
    let content = b"The quick brown fox jumps over the lazy dog";
    let sc = h
        .upload(
            "Quarterly Report (final).txt",
            content,
            &[("description", "q4"), ("tags", "finance, 2024,finance"), ("metadata", r#"{"dept":"ops"}"#)],
        )
        .await;
    assert_eq!(sc["sha256"], sha256_hex(content));
    assert_eq!(sc["size"], content.len());
    assert_eq!(sc["version"], 1);
    assert_eq!(sc["revision"], 1);
    assert_eq!(sc["state"], "active");
    assert_eq!(sc["tags"], json!(["finance", "2024"]));
    assert_eq!(sc["metadata"], json!({"dept": "ops"}));
    assert_eq!(sc["content_type"], "text/plain");
    let id = sc["file_id"].as_str().unwrap().to_owned();
    assert!(sc["stored_name"].as_str().unwrap().starts_with("Quarterly_Report_final_"));

    // The sidecar on disk is the same document, pretty-printed, under the id's date folder.
    let files = h.files_under("data");
    assert_eq!(files.len(), 2, "{files:?}");
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(h.root().join("data").join(&files[1])).unwrap()).unwrap();
    assert_eq!(on_disk, sc);

    let r = h.get(&format!("/api/v1/files/{id}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), sc);

    let r = h.get(&format!("/api/v1/files/{id}/content")).await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], content);
    let etag = r.headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(content)));

    let admin = h.admin();
    let req = |hdr: (&str, &str), method: Method| {
        Request::builder()
            .method(method)
            .uri(format!("/api/v1/files/{id}/content"))
            .header("authorization", format!("Bearer {admin}"))
            .header(hdr.0, hdr.1)
            .body(Body::empty())
            .unwrap()
    };
    let r = h.send(req(("if-none-match", &etag), Method::GET)).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.body.is_empty());
    let r = h.send(req(("if-none-match", "\"other\""), Method::GET)).await;
    assert_eq!(r.status, 200);
    let r = h.send(req(("range", "bytes=4-8"), Method::GET)).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.body[..], b"quick");
    assert_eq!(r.headers["content-range"], format!("bytes 4-8/{}", content.len()).as_str());
    let r = h.send(req(("range", "bytes=-3"), Method::GET)).await;
    assert_eq!(&r.body[..], b"dog");
    let r = h.send(req(("range", "bytes=500-600"), Method::GET)).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.problem(), "range-not-satisfiable");
    let r = h.send(req(("accept", "*/*"), Method::HEAD)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-length"], content.len().to_string().as_str());
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn content_digest_mismatch_refuses_and_leaves_nothing_behind() {
    let h = Harness::new().await;
    let content = b"important record";
    let wrong = format!("sha-256=:{}:", B64.encode([0u8; 32]));
    let r = h.upload_with(&h.admin(), "a.txt", content, &[], &[("content-digest", &wrong)]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.problem(), "digest-mismatch");
    assert!(h.files_under("data").is_empty());
    assert!(h.files_under("tmp").is_empty());
    let list = h.get("/api/v1/files").await.json();
    assert_eq!(list["items"], json!([]));

    // The digest of the file itself is accepted, and so is that of the whole body (RFC 9530).
    let raw = ring::digest::digest(&ring::digest::SHA256, content);
    let good = format!("sha-256=:{}:", B64.encode(raw.as_ref()));
    let r = h.upload_with(&h.admin(), "a.txt", content, &[], &[("content-digest", &good)]).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let body = common::multipart("b.txt", content, &[]);
    let body_digest = format!("sha-256=:{}:", B64.encode(ring::digest::digest(&ring::digest::SHA256, &body).as_ref()));
    let r = h.upload_with(&h.admin(), "b.txt", content, &[], &[("content-digest", &body_digest)]).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test]
async fn bad_input_gets_problem_json_naming_the_cause() {
    let h = Harness::new().await;
    let admin = h.admin();
    let future = rfc3339(chrono::Utc::now() + chrono::Duration::days(30));
    let past = rfc3339(chrono::Utc::now() - chrono::Duration::days(1));
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("metadata", "{not json")], "metadata is not valid JSON"),
        (vec![("metadata", "[1,2]")], "metadata must be a JSON object"),
        (vec![("retention_mode", "forever")], "retention_mode \"forever\""),
        (vec![("retention_mode", "compliance"), ("retain_until", &past)], "in the past"),
        (vec![("retention_mode", "compliance")], "retention_mode needs retain_until"),
        (vec![("retain_until", "next tuesday")], "not RFC 3339"),
        (vec![("legal_hold", "maybe")], "legal_hold"),
        (vec![("disposition", "burn"), ("retain_until", &future)], "disposition \"burn\""),
        (vec![("document_id", "nope")], "not a UUID"),
        (vec![("colour", "blue")], "unknown multipart part \"colour\""),
    ];
    for (fields, needle) in cases {
        let r = h.upload_with(&admin, "x.txt", b"x", &fields, &[]).await;
        assert_eq!(r.status, 400, "{fields:?}");
        let p = r.json();
        assert!(p["detail"].as_str().unwrap().contains(needle), "{fields:?}: {p}");
        assert_eq!(r.headers["content-type"], "application/problem+json");
    }
    // Malformed multipart, missing file part, wrong media type.
    let send = |ct: &str, body: &'static [u8]| {
        Request::post("/api/v1/files")
            .header("authorization", format!("Bearer {admin}"))
            .header("content-type", ct)
            .body(Body::from(body))
            .unwrap()
    };
    let r = h.send(send("multipart/form-data; boundary=B", b"--B\r\ngarbage without headers end")).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["detail"].as_str().unwrap().contains("malformed multipart"));
    let r = h
        .send(send(
            "multipart/form-data; boundary=B",
            b"--B\r\nContent-Disposition: form-data; name=\"tags\"\r\n\r\na\r\n--B--\r\n",
        ))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["detail"].as_str().unwrap().contains("no \"file\" part"));
    let r = h.send(send("application/json", b"{}")).await;
    assert_eq!(r.status, 415);
    // Ids that are not UUIDs; ids that do not exist.
    assert_eq!(h.get("/api/v1/files/not-a-uuid").await.status, 400);
    let r = h.get(&format!("/api/v1/files/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.problem(), "not-found");
    assert_eq!(h.get(&format!("/api/v1/files/{}/content", uuid::Uuid::now_v7())).await.status, 404);
    // Unknown mode.
    let r = h.set_mode("readonly").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["detail"].as_str().unwrap().contains("unknown mode \"readonly\""));
    // Nothing was stored by any of it.
    assert!(h.files_under("data").is_empty());
    assert!(h.files_under("tmp").is_empty());
}

#[tokio::test]
async fn patch_merges_metadata_and_counts_revisions() {
    let h = Harness::new().await;
    let sc = h.upload("a.txt", b"a", &[("metadata", r#"{"a":1,"b":{"c":2,"d":3}}"#), ("tags", "x")]).await;
    let id = sc["file_id"].as_str().unwrap();
    let req = Request::patch(format!("/api/v1/files/{id}"))
        .header("authorization", format!("Bearer {}", h.admin()))
        .header("content-type", "application/merge-patch+json")
        .body(Body::from(r#"{"metadata":{"b":{"d":null},"e":"new"},"description":"described","tags":["y","z"]}"#))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["metadata"], json!({"a":1,"b":{"c":2},"e":"new"}));
    assert_eq!(v["description"], "described");
    assert_eq!(v["tags"], json!(["y", "z"]));
    assert_eq!(v["revision"], 2);
    assert_eq!(v["sha256"], sc["sha256"]);
    let r = h
        .call(Method::PATCH, &format!("/api/v1/files/{id}"), Some(&h.admin()), Some(json!({"description": null})))
        .await;
    assert_eq!(r.json()["description"], Value::Null);
    assert_eq!(r.json()["revision"], 3);
    for bad in [json!({"sha256": "0"}), json!({"tags": "a,b"}), json!({"metadata": 5}), json!([1])] {
        let r = h.call(Method::PATCH, &format!("/api/v1/files/{id}"), Some(&h.admin()), Some(bad.clone())).await;
        assert_eq!(r.status, 400, "{bad}");
    }
    assert_eq!(h.get(&format!("/api/v1/files/{id}")).await.json()["revision"], 3);
    // A reader cannot patch.
    let r = h
        .call(
            Method::PATCH,
            &format!("/api/v1/files/{id}"),
            Some(&h.token(&["reader"])),
            Some(json!({"description": "x"})),
        )
        .await;
    assert_eq!(r.status, 403);
}

/// Creates of one planned `file_id` at the same time (a retry arriving while the first
/// attempt still commits) store it once: one 201, the rest 409 `file-exists`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_planned_id_store_it_once() {
    let h = Harness::new().await;
    for round in 0..10 {
        let id = uuid::Uuid::now_v7().to_string();
        let t = h.admin();
        let fields = [("file_id", id.as_str())];
        let tries = (0..6).map(|_| h.upload_with(&t, "same.txt", b"same bytes", &fields, &[]));
        let answers = futures_util::future::join_all(tries).await;
        let created = answers.iter().filter(|r| r.status == StatusCode::CREATED).count();
        let exists =
            answers.iter().filter(|r| r.status == StatusCode::CONFLICT && r.problem() == "file-exists").count();
        assert_eq!((created, exists), (1, 5), "round {round}");
    }
    let listed = h.get("/api/v1/files?limit=1000").await.json()["items"].as_array().unwrap().len();
    assert_eq!(listed, 10);
    let sidecars = h.files_under("").into_iter().filter(|f| f.ends_with(".attr.json")).count();
    assert_eq!(sidecars, 10);
}

/// A rewrite whose caller goes away mid-request (a client or an ingester killed) still runs
/// to its end: the listing, which the cache answers, never lags the sidecars on disk. Each
/// document is patched once (a later PATCH would mend what an abandoned one left behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_whose_caller_goes_away_still_reaches_the_listing() {
    use std::time::{Duration, Instant};
    let h = Harness::new().await;
    let mut ids = Vec::new();
    for i in 0..420 {
        ids.push(h.upload(&format!("p{i}.txt"), b"p", &[]).await["file_id"].as_str().unwrap().to_owned());
    }
    let patch = |id: &str| {
        Request::patch(format!("/api/v1/files/{id}"))
            .header("authorization", format!("Bearer {}", h.admin()))
            .header("content-type", "application/merge-patch+json")
            .body(Body::from(r#"{"description": "patched"}"#))
            .unwrap()
    };
    // How long a whole PATCH takes here; callers then give up at points spread over it.
    let mut took = Vec::new();
    for id in ids.drain(..20) {
        let t = Instant::now();
        assert_eq!(h.send(patch(&id)).await.status, 200);
        took.push(t.elapsed().as_micros() as u64);
    }
    took.sort();
    let whole = took[took.len() / 2];
    let mut abandoned = 0;
    for (i, id) in ids.iter().enumerate() {
        let wait = Duration::from_micros(whole * (2 + (i as u64 * 7) % 20) / 20);
        let call = tower::ServiceExt::oneshot(h.router.clone(), patch(id));
        if tokio::time::timeout(wait, call).await.is_err() {
            abandoned += 1;
        }
    }
    eprintln!("{abandoned} of 400 PATCHes abandoned by their caller (a whole one takes about {whole} µs)");
    assert!(abandoned >= 40, "too few callers went away to show anything: {abandoned}");
    // What the sidecars on disk say, against what the listing says, once the writes settle.
    let on_disk = || -> std::collections::BTreeMap<String, u64> {
        h.files_under("")
            .into_iter()
            .filter(|f| f.ends_with(".attr.json"))
            .filter_map(|f| serde_json::from_slice::<Value>(&std::fs::read(h.root().join(&f)).ok()?).ok())
            .filter_map(|v| Some((v["file_id"].as_str()?.to_owned(), v["revision"].as_u64()?)))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed: std::collections::BTreeMap<String, u64> = h.get("/api/v1/files?limit=1000").await.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["file_id"].as_str().unwrap().to_owned(), v["revision"].as_u64().unwrap()))
            .collect();
        let disk = on_disk();
        if listed == disk {
            break;
        }
        assert!(Instant::now() < deadline, "the listing lags the sidecars:\n listed {listed:?}\n on disk {disk:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn versions_and_paged_listing() {
    let h = Harness::new().await;
    let v1 = h.upload("contract.pdf", b"v1", &[]).await;
    let doc = v1["document_id"].as_str().unwrap();
    let v2 = h.upload("contract.pdf", b"v2", &[("document_id", doc)]).await;
    let v3 = h.upload("contract-final.pdf", b"v3", &[("document_id", doc)]).await;
    assert_eq!(v2["version"], 2);
    assert_eq!(v3["version"], 3);
    assert_eq!(v3["document_id"], doc);
    let vs = h.get(&format!("/api/v1/documents/{doc}/versions")).await.json();
    let nums: Vec<_> = vs["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(nums, vec![1, 2, 3]);
    let r = h.upload_with(&h.admin(), "x", b"x", &[("document_id", &uuid::Uuid::now_v7().to_string())], &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(h.get(&format!("/api/v1/documents/{}/versions", uuid::Uuid::now_v7())).await.status, 404);

    for i in 0..4 {
        h.upload(&format!("n{i}.txt"), format!("{i}").as_bytes(), &[]).await;
    }
    let mut seen = vec![];
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let r = h.get(&format!("/api/v1/files?limit=2&cursor={cursor}")).await.json();
        pages += 1;
        for it in r["items"].as_array().unwrap() {
            seen.push(it["file_id"].as_str().unwrap().to_owned());
        }
        match r["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert_eq!(pages, 4);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "stable order by file id");
    assert_eq!(h.get("/api/v1/files?limit=0").await.status, 400);
    assert_eq!(h.get("/api/v1/files?cursor=zzz").await.status, 400);
    assert_eq!(h.get("/api/v1/files?disposition=whenever").await.status, 400);
    assert_eq!(h.get("/api/v1/files?limit=abc").await.status, 400);
}

/// Each mode × each operation, against the brief's table.
#[tokio::test]
async fn modes_allow_exactly_what_the_table_says() {
    let expect = [
        ("edit", [201, 200, 200, 200]),
        ("rw", [201, 200, 200, 409]),
        ("ro", [409, 200, 409, 409]),
        ("ar", [409, 403, 409, 409]),
    ];
    for (mode, [create, read, update, delete]) in expect {
        let h = Harness::new().await;
        let sc = h.upload("doc.txt", b"hello", &[]).await;
        let id = sc["file_id"].as_str().unwrap().to_owned();
        let r = h.set_mode(mode).await;
        assert_eq!(r.status, 200, "{mode}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["mode"], mode);
        let admin = h.admin();
        let c = h.upload_with(&admin, "new.txt", b"new", &[], &[]).await;
        assert_eq!(c.status, create, "{mode} create");
        let rd = h.get(&format!("/api/v1/files/{id}/content")).await;
        assert_eq!(rd.status, read, "{mode} read");
        let u = h
            .call(Method::PATCH, &format!("/api/v1/files/{id}"), Some(&admin), Some(json!({"description": "d"})))
            .await;
        assert_eq!(u.status, update, "{mode} update");
        // Holds and retention extensions only add protection: allowed in every mode.
        let hold = h
            .call(
                Method::PUT,
                &format!("/api/v1/files/{id}/legal-hold"),
                Some(&admin),
                Some(json!({"enabled": true, "reason": " case 2026-17 "})),
            )
            .await;
        assert_eq!(hold.status, 200, "{mode} hold");
        let held: serde_json::Value = serde_json::from_slice(&hold.body).unwrap();
        assert_eq!(held["retention"]["legal_hold_reason"], "case 2026-17", "{mode}: the reason is kept");
        let until = rfc3339(chrono::Utc::now() + chrono::Duration::days(400));
        let ext = h
            .call(
                Method::PUT,
                &format!("/api/v1/files/{id}/retention"),
                Some(&admin),
                Some(json!({"retain_until": until})),
            )
            .await;
        assert_eq!(ext.status, 200, "{mode} extend");
        let lift = h
            .call(Method::PUT, &format!("/api/v1/files/{id}/legal-hold"), Some(&admin), Some(json!({"enabled": false})))
            .await;
        assert_eq!(lift.status, 200, "{mode} lift");
        let lifted: serde_json::Value = serde_json::from_slice(&lift.body).unwrap();
        assert!(lifted["retention"].get("legal_hold_reason").is_none(), "{mode}: a lifted hold has no reason");
        // Delete: governance retention now applies, so bypass it (only the mode may refuse).
        let tok = h.token(&["admin", "retention:bypass"]);
        let d = h.call(Method::DELETE, &format!("/api/v1/files/{id}?bypass_governance=true"), Some(&tok), None).await;
        assert_eq!(d.status, delete, "{mode} delete: {}", String::from_utf8_lossy(&d.body));
        for r in [&c, &u, &d] {
            if r.status == 409 {
                assert_eq!(r.problem(), "mode-refused");
                assert_eq!(r.json()["mode"], mode);
                assert!(r.json()["detail"].as_str().unwrap().contains(&format!("mode {mode}")));
            }
        }
        if read == 403 {
            assert_eq!(rd.problem(), "archived");
        }
    }
}

#[tokio::test]
async fn mode_transitions_go_forward_only_and_are_recorded() {
    let h = Harness::new().await;
    assert_eq!(h.set_mode("ro").await.status, 200);
    let r = h.set_mode("rw").await;
    assert_eq!(r.status, 409);
    assert_eq!(r.problem(), "mode-transition");
    assert_eq!(h.set_mode("ro").await.status, 200, "same mode is a no-op");
    let on_disk: Value = serde_json::from_slice(&std::fs::read(h.root().join("element.json")).unwrap()).unwrap();
    assert_eq!(on_disk["mode"], "ro");
    assert_eq!(on_disk["mode_history"][0]["from"], "edit");
    // An operator may change modes; a writer may not.
    assert_eq!(
        h.call(Method::POST, "/api/v1/element/mode", Some(&h.token(&["writer"])), Some(json!({"mode": "ar"})))
            .await
            .status,
        403
    );
    assert_eq!(
        h.call(Method::POST, "/api/v1/element/mode", Some(&h.token(&["operator"])), Some(json!({"mode": "ar"})))
            .await
            .status,
        200
    );
    let info = h.get("/api/v1/element").await.json();
    assert_eq!(info["mode"], "ar");
    for k in ["id", "free_bytes", "used_bytes", "document_count"] {
        assert!(info.get(k).is_some(), "{k}");
    }
}

#[tokio::test]
async fn retention_rules_hold_for_everyone() {
    let h = Harness::new().await;
    let admin = h.admin();
    let until = rfc3339(h.clock_now() + chrono::Duration::days(10));
    let comp = h.upload("c.txt", b"c", &[("retention_mode", "compliance"), ("retain_until", &until)]).await;
    let gov = h.upload("g.txt", b"g", &[("retention_mode", "governance"), ("retain_until", &until)]).await;
    let held = h.upload("h.txt", b"h", &[("legal_hold", "true")]).await;
    let (c, g, hd) =
        (comp["file_id"].as_str().unwrap(), gov["file_id"].as_str().unwrap(), held["file_id"].as_str().unwrap());
    assert_eq!(comp["retention"]["mode"], "compliance");

    // Compliance: nobody deletes, not even admin with the bypass permission.
    let bypass = h.token(&["admin", "retention:bypass"]);
    for t in [&admin, &bypass] {
        let r = h.call(Method::DELETE, &format!("/api/v1/files/{c}?bypass_governance=true"), Some(t), None).await;
        assert_eq!(r.status, 403);
        assert_eq!(r.problem(), "retention-compliance");
    }
    // Shortening is refused; extending works; weakening is refused.
    let shorter = rfc3339(h.clock_now() + chrono::Duration::days(5));
    let r = h
        .call(
            Method::PUT,
            &format!("/api/v1/files/{c}/retention"),
            Some(&admin),
            Some(json!({"retain_until": shorter})),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.problem(), "retention-shorten");
    let past = rfc3339(h.clock_now() - chrono::Duration::days(5));
    let r = h
        .call(Method::PUT, &format!("/api/v1/files/{c}/retention"), Some(&admin), Some(json!({"retain_until": past})))
        .await;
    assert_eq!(r.status, 400);
    let r = h
        .call(
            Method::PUT,
            &format!("/api/v1/files/{c}/retention"),
            Some(&admin),
            Some(json!({"retain_until": until, "mode": "governance"})),
        )
        .await;
    assert_eq!(r.problem(), "retention-weaken");
    let longer = rfc3339(h.clock_now() + chrono::Duration::days(20));
    let r = h
        .call(Method::PUT, &format!("/api/v1/files/{c}/retention"), Some(&admin), Some(json!({"retain_until": longer})))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["retention"]["retain_until"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
            .to_rfc3339(),
        longer.parse::<chrono::DateTime<chrono::Utc>>().unwrap().to_rfc3339()
    );

    // Governance: refused without bypass, refused with the flag but no permission,
    // refused with the permission but no flag, allowed with both and audited.
    let r = h.call(Method::DELETE, &format!("/api/v1/files/{g}"), Some(&admin), None).await;
    assert_eq!(r.problem(), "retention-governance");
    let r = h.call(Method::DELETE, &format!("/api/v1/files/{g}?bypass_governance=true"), Some(&admin), None).await;
    assert_eq!(r.problem(), "retention-bypass-denied");
    let r = h.call(Method::DELETE, &format!("/api/v1/files/{g}"), Some(&bypass), None).await;
    assert_eq!(r.problem(), "retention-governance");
    let r = h.call(Method::DELETE, &format!("/api/v1/files/{g}?bypass_governance=true"), Some(&bypass), None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["state"], "deleted");
    assert_eq!(r.json()["tombstone"]["retention_bypassed"], true);
    let audit = std::fs::read_to_string(h.root().join("audit/journal.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"action\":\"delete\"") && l.contains("\"retention_bypassed\":true") && l.contains(g))
    );

    // Legal hold blocks delete; only admin (or legal-hold:lift) lifts it.
    let r = h.call(Method::DELETE, &format!("/api/v1/files/{hd}"), Some(&admin), None).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.problem(), "legal-hold");
    let r = h
        .call(
            Method::PUT,
            &format!("/api/v1/files/{hd}/legal-hold"),
            Some(&h.token(&["writer"])),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = h
        .call(
            Method::PUT,
            &format!("/api/v1/files/{hd}/legal-hold"),
            Some(&h.token(&["legal-hold:lift"])),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(h.call(Method::DELETE, &format!("/api/v1/files/{hd}"), Some(&admin), None).await.status, 200);

    // After the term, compliance documents can be deleted.
    h.clock.advance(chrono::Duration::days(21));
    assert_eq!(h.call(Method::DELETE, &format!("/api/v1/files/{c}"), Some(&admin), None).await.status, 200);
    // Deleted documents answer 410 with their tombstone kept on disk.
    let r = h.get(&format!("/api/v1/files/{c}/content")).await;
    assert_eq!(r.status, 410);
    assert_eq!(r.problem(), "gone");
    let sc = h.get(&format!("/api/v1/files/{c}")).await.json();
    assert_eq!(sc["state"], "deleted");
    assert_eq!(sc["sha256"], sha256_hex(b"c"));
    assert_eq!(sc["content"]["location"], "none");
    // Only sidecars remain on disk.
    assert!(h.files_under("data").iter().all(|f| f.ends_with(".attr.json")), "{:?}", h.files_under("data"));
}

#[tokio::test]
async fn disposition_removes_expired_content_and_lists_reviews() {
    let h = Harness::new().await;
    let until = rfc3339(h.clock_now() + chrono::Duration::hours(1));
    let dispose = h.upload("d.txt", b"dispose me", &[("retention_mode", "compliance"), ("retain_until", &until)]).await;
    let review = h
        .upload(
            "r.txt",
            b"review me",
            &[("retention_mode", "governance"), ("retain_until", &until), ("disposition", "review")],
        )
        .await;
    let held = h
        .upload(
            "h.txt",
            b"hold me",
            &[("retention_mode", "compliance"), ("retain_until", &until), ("legal_hold", "true")],
        )
        .await;
    let keep = h.upload("k.txt", b"keep me", &[]).await;
    let id = |v: &Value| v["file_id"].as_str().unwrap().to_owned();
    let element_health = || async { h.call(Method::GET, "/health/ready", None, None).await.json()["element"].clone() };
    let before = element_health().await;
    assert_eq!(before["documents"], 4, "{before}");
    assert_eq!(before["workers"]["disposition"]["status"], "pending", "{before}");
    assert_eq!(before["workers"]["disposition"]["last_run_at"], Value::Null, "{before}");
    assert_eq!(before["workers"]["cache"]["kind"], "embedded", "{before}");
    assert_eq!(before["workers"]["cache"]["status"], "ok", "{before}");

    let r = h.call(Method::POST, "/api/v1/element/disposition", Some(&h.admin()), None).await.json();
    assert_eq!(r["disposed"], 0, "nothing is due yet");
    assert_eq!(h.get("/api/v1/files?disposition=review-due").await.json()["items"], json!([]));

    h.clock.advance(chrono::Duration::hours(2));
    let r = h.call(Method::POST, "/api/v1/element/disposition", Some(&h.token(&["operator"])), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["disposed"], 1);
    assert_eq!(r.json()["review_due"], 1);
    // The run shows on /health/ready (discovery carries it to the admin and the dashboard).
    let after = element_health().await;
    let d = &after["workers"]["disposition"];
    assert_eq!(d["status"], "ok", "{after}");
    assert_eq!((d["runs"].as_u64(), d["disposed"].as_u64(), d["review_due"].as_u64()), (Some(2), Some(1), Some(1)));
    let at: chrono::DateTime<chrono::Utc> = serde_json::from_value(d["last_run_at"].clone()).unwrap();
    assert_eq!(at, h.clock_now(), "the run started at the element's clock: {after}");
    assert_eq!(d["last_error"], Value::Null, "{after}");
    assert_eq!(after["documents"], 3, "the disposed one no longer counts: {after}");
    assert_eq!(after["workers"]["outbox"]["status"], "pending", "no relay runs in this harness: {after}");
    let sc = h.get(&format!("/api/v1/files/{}", id(&dispose))).await.json();
    assert_eq!(sc["state"], "disposed");
    assert_eq!(sc["tombstone"]["by"], "system:disposition");
    assert_eq!(sc["sha256"], sha256_hex(b"dispose me"));
    assert_eq!(h.get(&format!("/api/v1/files/{}/content", id(&dispose))).await.status, 410);
    // The held one and the others are untouched.
    for v in [&held, &keep, &review] {
        assert_eq!(h.get(&format!("/api/v1/files/{}/content", id(v))).await.status, 200);
    }
    let due = h.get("/api/v1/files?disposition=review-due").await.json();
    let due_ids: Vec<_> = due["items"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(due_ids, vec![id(&review)]);
    let files = h.files_under("data");
    assert!(
        !files.iter().any(|f| f.contains(&id(&dispose)) && !f.ends_with(".attr.json")),
        "content removed: {files:?}"
    );
    let r = h.call(Method::POST, "/api/v1/element/disposition", Some(&h.token(&["writer"])), None).await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn archive_mode_moves_content_cold_and_restores_on_request() {
    let h = Harness::with(|c| c.cold_restore_latency_ms = 400).await;
    let sc = h.upload("scan.tiff", b"scanned page", &[]).await;
    let id = sc["file_id"].as_str().unwrap().to_owned();
    assert_eq!(h.set_mode("ar").await.status, 200);
    // Content moved to the cold root, sidecar stays hot.
    let hot = h.files_under("data");
    assert_eq!(hot.len(), 1, "{hot:?}");
    assert!(hot[0].ends_with(".attr.json"));
    let cold: Vec<_> = walkdir::WalkDir::new(h.root().join("cold/data"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .collect();
    assert_eq!(cold.len(), 1);
    assert_eq!(std::fs::read(cold[0].path()).unwrap(), b"scanned page");
    let meta = h.get(&format!("/api/v1/files/{id}")).await.json();
    assert_eq!(meta["state"], "archived");
    assert_eq!(meta["content"]["location"], "cold");

    let r = h.get(&format!("/api/v1/files/{id}/content")).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.problem(), "archived");

    let operator = h.token(&["operator"]);
    let (hr, op, uri) = (&h, &operator, format!("/api/v1/files/{id}/restore"));
    let uri = &uri;
    let restore = |days: u32| async move { hr.call(Method::POST, uri, Some(op), Some(json!({"days": days}))).await };
    let r = restore(2).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["content"]["restore"]["state"], "staging");
    assert_eq!(restore(2).await.status, 409, "already under way");
    let mut ready = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let r = h.get(&format!("/api/v1/files/{id}/content")).await;
        if r.status == 200 {
            assert_eq!(&r.body[..], b"scanned page");
            ready = true;
            break;
        }
    }
    assert!(ready, "restore never became readable");
    let meta = h.get(&format!("/api/v1/files/{id}")).await.json();
    assert_eq!(meta["content"]["restore"]["state"], "ready");
    assert!(meta["content"]["restore"]["expires_at"].is_string());
    assert_eq!(restore(3).await.status, 200, "readable now");
    assert_eq!(
        h.call(
            Method::POST,
            &format!("/api/v1/files/{id}/restore"),
            Some(&h.token(&["reader"])),
            Some(json!({"days": 1}))
        )
        .await
        .status,
        403
    );

    // After expiry the staged copy goes and the content is archived-only again.
    h.clock.advance(chrono::Duration::days(4));
    let r = h.call(Method::POST, "/api/v1/element/disposition", Some(&h.admin()), None).await.json();
    assert_eq!(r["restores_expired"], 1);
    assert_eq!(h.get(&format!("/api/v1/files/{id}/content")).await.status, 403);
    assert_eq!(h.files_under("data").len(), 1);
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let h = Harness::new().await;
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iss": "artstore", "aud": "artstore", "sub": "mallory", "iat": now, "exp": now + 600, "roles": ["admin"]});
    let hr = &h;
    let call = |t: Option<String>| async move { hr.call(Method::GET, "/api/v1/element", t.as_deref(), None).await };

    assert_eq!(call(Some(h.signer.sign_claims(&claims).unwrap())).await.status, 200, "control: a good token works");
    let r = call(None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.problem(), "unauthenticated");
    // alg: none
    let none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims));
    assert_eq!(call(Some(none)).await.status, 401);
    // HS256 signed with the public key (the classic key-confusion attack).
    let jwks = std::fs::read(h.dir.join("keys/jwks.json")).unwrap();
    let header = b64(&json!({"alg": "HS256", "typ": "JWT", "kid": h.signer.kid()}));
    let input = format!("{header}.{}", b64(&claims));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &jwks);
    let sig = URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, input.as_bytes()).as_ref());
    assert_eq!(call(Some(format!("{input}.{sig}"))).await.status, 401);
    // Expired, not yet valid, wrong audience, wrong issuer, tampered payload.
    let mut expired = claims.clone();
    expired["exp"] = json!(now - 3600);
    assert_eq!(call(Some(h.signer.sign_claims(&expired).unwrap())).await.status, 401);
    let mut early = claims.clone();
    early["nbf"] = json!(now + 3600);
    assert_eq!(call(Some(h.signer.sign_claims(&early).unwrap())).await.status, 401);
    let mut aud = claims.clone();
    aud["aud"] = json!("someone-else");
    assert_eq!(call(Some(h.signer.sign_claims(&aud).unwrap())).await.status, 401);
    let mut iss = claims.clone();
    iss["iss"] = json!("evil");
    assert_eq!(call(Some(h.signer.sign_claims(&iss).unwrap())).await.status, 401);
    let good = h.signer.sign_claims(&json!({"iss": "artstore", "aud": "artstore", "sub": "r", "iat": now, "exp": now + 600, "roles": ["reader"]})).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert_eq!(call(Some(tampered)).await.status, 401);
    // Unknown kid: a key that is not in the published set.
    let stranger = artstore_shared::auth::LocalSigner::generate().unwrap();
    assert_eq!(call(Some(stranger.sign_claims(&claims).unwrap())).await.status, 401);
    // Garbage.
    assert_eq!(call(Some("abc.def".into())).await.status, 401);
    // Valid token, insufficient role.
    let r = h.upload_with(&h.token(&["reader"]), "x", b"x", &[], &[]).await;
    assert_eq!(r.status, 403);
    // Health and metrics need no token.
    assert_eq!(h.call(Method::GET, "/health/live", None, None).await.status, 200);
    assert_eq!(h.call(Method::GET, "/health/ready", None, None).await.status, 200);
    let m = h.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(m.status, 200);
    assert!(String::from_utf8_lossy(&m.body).contains("artstore_http_requests_total"));
}

#[tokio::test]
async fn a_corrupt_sidecar_is_reported_and_the_rest_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let h = Harness::open(tmp.path(), |_| {}).await;
    let good = h.upload("good.txt", b"good", &[]).await;
    let bad = h.upload("bad.txt", b"bad", &[]).await;
    h.close().await;
    let bad_id = bad["file_id"].as_str().unwrap();
    let sidecar = walkdir::WalkDir::new(tmp.path().join("element/data"))
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| {
            e.file_name().to_string_lossy().contains(bad_id) && e.file_name().to_string_lossy().ends_with(".attr.json")
        })
        .unwrap();
    std::fs::write(sidecar.path(), b"{\"schema\": \"artstore/sidecar/v1\", \"file_id\": ").unwrap();

    let h = Harness::open(tmp.path(), |_| {}).await;
    let r = h.get(&format!("/api/v1/files/{}/content", good["file_id"].as_str().unwrap())).await;
    assert_eq!(&r.body[..], b"good");
    let r = h.get(&format!("/api/v1/files/{bad_id}")).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.problem(), "corrupt-sidecar");
    let detail = r.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains(&format!("{bad_id}.txt.attr.json")) && detail.contains("malformed sidecar"), "{detail}");
    assert_eq!(h.get("/api/v1/element").await.json()["unreadable_sidecars"], 1);
    assert_eq!(h.get("/api/v1/files").await.json()["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn audit_chain_covers_every_change_and_catches_hand_edits() {
    let h = Harness::new().await;
    let sc = h.upload("a.txt", b"a", &[]).await;
    let id = sc["file_id"].as_str().unwrap();
    h.call(Method::PATCH, &format!("/api/v1/files/{id}"), Some(&h.admin()), Some(json!({"tags": ["x"]}))).await;
    h.call(Method::PUT, &format!("/api/v1/files/{id}/legal-hold"), Some(&h.admin()), Some(json!({"enabled": true})))
        .await;
    h.set_mode("rw").await;
    h.store.settle().await;
    let report = artstore_storage_element::audit::verify(&h.root(), &|_| {}).unwrap();
    assert_eq!(report.lines, 4);
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // Someone edits the sidecar by hand: verify-audit names it.
    let files = h.files_under("data");
    let path = h.root().join("data").join(files.iter().find(|f| f.ends_with(".attr.json")).unwrap());
    let text = std::fs::read_to_string(&path).unwrap().replace("\"legal_hold\": true", "\"legal_hold\": false");
    std::fs::write(&path, text).unwrap();
    let report = artstore_storage_element::audit::verify(&h.root(), &|_| {}).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("changed outside ArtStore"));
}

#[tokio::test]
async fn a_files_audit_trail_lists_its_changes_newest_first() {
    let h = Harness::new().await;
    let as_user = |sub: &str, roles: &[&str]| {
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        h.signer.issue(sub, &roles, std::time::Duration::from_secs(3600), chrono::Utc::now()).unwrap()
    };
    let sc = h.upload("a.txt", b"a", &[]).await;
    let id = sc["file_id"].as_str().unwrap().to_owned();
    // Another file's lines stay out of the trail.
    let other = h.upload("b.txt", b"b", &[]).await;
    h.store.settle().await;
    let (ann, root) = (as_user("ann", &["writer"]), as_user("root", &["admin"]));
    let file = format!("/api/v1/files/{id}");
    let steps = [
        (Method::PATCH, file.clone(), &ann, json!({"description": "minutes"})),
        (Method::PUT, format!("{file}/legal-hold"), &ann, json!({"enabled": true, "reason": "case 2026-17"})),
        (Method::PUT, format!("{file}/legal-hold"), &root, json!({"enabled": false, "reason": "case closed"})),
    ];
    for (m, uri, token, body) in steps {
        let r = h.call(m, &uri, Some(token), Some(body)).await;
        assert_eq!(r.status, 200, "{uri}: {}", String::from_utf8_lossy(&r.body));
    }
    let other_id = other["file_id"].as_str().unwrap();
    let hold = json!({"enabled": true, "reason": format!("same case as {id}")});
    let r = h.call(Method::PUT, &format!("/api/v1/files/{other_id}/legal-hold"), Some(&root), Some(hold)).await;
    assert_eq!(r.status, 200);

    let auditor = as_user("audrey", &["auditor"]);
    let r = h.call(Method::GET, &format!("{file}/audit"), Some(&auditor), None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let t = r.json();
    assert_eq!(t["file_id"], id.as_str());
    let entries = t["entries"].as_array().unwrap();
    let col = |k: &str| entries.iter().map(|e| e[k].clone()).collect::<Vec<_>>();
    assert_eq!(col("action"), ["legal_hold_lifted", "legal_hold_set", "update", "create"]);
    assert_eq!(col("actor"), ["root", "ann", "ann", "tester"]);
    assert_eq!(col("revision"), [4, 3, 2, 1]);
    assert_eq!(entries[1]["detail"]["reason"], "case 2026-17");
    assert_eq!(entries[0]["detail"]["reason"], "case closed");
    assert_eq!(entries[0]["detail"]["was_reason"], "case 2026-17");
    assert_eq!(entries[2]["detail"]["changed"], json!(["description"]));
    for e in entries {
        assert!(e["seq"].is_u64() && e["at"].is_string() && e["hash"].as_str().unwrap().len() == 64, "{e}");
    }
    assert_eq!(t["complete"], true);
    let journal_len = std::fs::metadata(h.root().join("audit/journal.jsonl")).unwrap().len();
    assert_eq!(t["scanned_bytes"], journal_len);

    // A limit keeps the newest and says the list is cut.
    let t = h.call(Method::GET, &format!("{file}/audit?limit=2"), Some(&auditor), None).await.json();
    assert_eq!(t["entries"].as_array().unwrap().len(), 2);
    assert_eq!(t["entries"][0]["action"], "legal_hold_lifted");
    assert_eq!(t["complete"], false);

    // Operators and admins read it too; readers and writers do not.
    assert_eq!(h.call(Method::GET, &format!("{file}/audit"), Some(&h.token(&["operator"])), None).await.status, 200);
    for roles in [&["reader"][..], &["writer"][..]] {
        let r = h.call(Method::GET, &format!("{file}/audit"), Some(&h.token(roles)), None).await;
        assert_eq!(r.status, 403, "{roles:?}");
        assert_eq!(r.problem(), "forbidden");
    }
    for (uri, status) in [
        (format!("{file}/audit?limit=0"), 400),
        (format!("{file}/audit?limit=1001"), 400),
        (format!("{file}/audit?limit=many"), 400),
        ("/api/v1/files/not-a-uuid/audit".to_owned(), 400),
        (format!("/api/v1/files/{}/audit", uuid::Uuid::now_v7()), 404),
    ] {
        let r = h.call(Method::GET, &uri, Some(&auditor), None).await;
        assert_eq!(r.status, status, "{uri}: {}", String::from_utf8_lossy(&r.body));
    }
}

trait ClockNow {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc>;
}

impl ClockNow for Harness {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use artstore_shared::Clock as _;
        self.clock.now()
    }
}

#[tokio::test]
async fn a_mode_change_drains_an_upload_in_flight() {
    let h = std::sync::Arc::new(Harness::new().await);
    let body = common::multipart("slow.txt", b"first half|second half", &[]);
    // Past the part headers and into the content, so the upload has begun.
    let split = body.len() - 30;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(2);
    let stream = tokio_stream_from(rx);
    let req = Request::post("/api/v1/files")
        .header("authorization", format!("Bearer {}", h.admin()))
        .header("content-type", format!("multipart/form-data; boundary={}", common::BOUNDARY))
        .body(Body::from_stream(stream))
        .unwrap();
    let h2 = h.clone();
    let upload = tokio::spawn(async move { h2.send(req).await });
    tx.send(Ok(bytes::Bytes::copy_from_slice(&body[..split]))).await.unwrap();
    // The upload has begun once its temp file exists.
    for _ in 0..500 {
        if !h.files_under("tmp").is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!h.files_under("tmp").is_empty(), "the upload never began");
    let h3 = h.clone();
    let mode = tokio::spawn(async move { h3.set_mode("ro").await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!mode.is_finished(), "the mode change must wait for the upload in flight");
    tx.send(Ok(bytes::Bytes::copy_from_slice(&body[split..]))).await.unwrap();
    drop(tx);
    let up = upload.await.unwrap();
    assert_eq!(up.status, 201, "{}", String::from_utf8_lossy(&up.body));
    assert_eq!(mode.await.unwrap().status, 200);
    // New uploads are refused now, naming the mode.
    let r = h.upload_with(&h.admin(), "late.txt", b"late", &[], &[]).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["mode"], "ro");
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn every_listed_route_is_served_and_the_openapi_document_too() {
    let h = Harness::new().await;
    for (method, path) in artstore_storage_element::api::ROUTES {
        let uri = path
            .replace("{id}", &uuid::Uuid::now_v7().to_string())
            .replace("{document_id}", &uuid::Uuid::now_v7().to_string());
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = h.call(m, &uri, Some(&h.admin()), None).await;
        assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        if r.status == 404 && !r.body.is_empty() {
            assert_ne!(r.json()["detail"], "no such route", "{method} {path}");
        }
    }
    let r = h.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["info"]["title"], "ArtStore storage element");
    let r = h.call(Method::GET, "/api/v1/nothing-here", Some(&h.admin()), None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.problem(), "not-found");
}
