//! The restore drill of docs/operations/restore.md, automated: documents of every kind,
//! a plain `cp -a` of the element's folder and nothing else, a new element on a new empty
//! database, rebuild, and every listing and sidecar answer compared with the original's.
//! Then the database is dropped and rebuilt once more: identical again.

mod support;

use artstore_shared::auth::{JWKS_FILE, LocalSigner};
use artstore_storage_element::pg::testing;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::{Element, upload};

struct Api<'a> {
    client: &'a reqwest::Client,
    base: String,
    token: &'a str,
}

impl Api<'_> {
    async fn get(&self, path: &str) -> Value {
        let r = self.client.get(format!("{}{path}", self.base)).bearer_auth(self.token).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut rq = self.client.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(self.token);
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let r = rq.send().await.unwrap();
        assert!(r.status().is_success(), "{method} {path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }
}

/// Every answer of the listing and sidecar routes, in a comparable form.
async fn answers(api: &Api<'_>) -> Value {
    let mut pages = vec![];
    let mut cursor = String::new();
    loop {
        let page = api.get(&format!("/api/v1/files?limit=4&cursor={cursor}")).await;
        pages.push(page.clone());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    let all: Vec<Value> = pages.iter().flat_map(|p| p["items"].as_array().unwrap().clone()).collect();
    let mut sidecars = serde_json::Map::new();
    let mut versions = serde_json::Map::new();
    for sc in &all {
        let id = sc["file_id"].as_str().unwrap();
        sidecars.insert(id.to_owned(), api.get(&format!("/api/v1/files/{id}")).await);
        let doc = sc["document_id"].as_str().unwrap();
        versions.insert(doc.to_owned(), api.get(&format!("/api/v1/documents/{doc}/versions")).await);
    }
    let today = chrono::Utc::now().date_naive();
    let mut filtered = serde_json::Map::new();
    for q in [
        "state=active",
        "state=archived",
        "state=deleted",
        "state=disposed",
        "retention=under-retention",
        "retention=on-hold",
        "retention=review-due",
        "retention=disposed",
        "tag=contract",
        "content_type=application/pdf",
        &format!("from={today}&to={today}"),
        "from=1999-01-01&to=1999-12-31",
    ] {
        filtered.insert(q.to_owned(), api.get(&format!("/api/v1/files?limit=1000&{q}")).await);
    }
    let e = api.get("/api/v1/element").await;
    let element = json!({
        "id": e["id"], "mode": e["mode"], "document_count": e["document_count"], "tombstone_count": e["tombstone_count"],
        "used_bytes": e["used_bytes"], "mode_history": e["mode_history"], "unreadable_sidecars": e["unreadable_sidecars"],
    });
    json!({"pages": pages, "sidecars": sidecars, "versions": versions, "filtered": filtered, "element": element})
}

fn artstore(args: &[&str], root: &Path, url: &str) -> String {
    let out = Command::new(support::BIN).args(args).arg("--data").arg(root).args(["--cache", url]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_from_a_plain_copy_gives_identical_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = LocalSigner::load_or_create(&tmp.path().join("keys")).unwrap();
    let jwks = tmp.path().join("keys").join(JWKS_FILE);
    let roles = ["admin".to_owned(), "retention:bypass".to_owned()];
    let token = signer.issue("drill", &roles, Duration::from_secs(3600), chrono::Utc::now()).unwrap();
    let client = reqwest::Client::new();
    let original = tmp.path().join("original");
    let db1 = testing::fresh_database().await;

    let mut a = Element::start(&original, &jwks, &tmp.path().join("a.log"), &["--cache", &db1]);
    a.wait_ready(&client).await;
    let api = Api { client: &client, base: a.base.clone(), token: &token };
    let up = |name: &'static str, body: &'static [u8], fields: Vec<(&'static str, String)>| {
        let (client, base, token) = (&client, a.base.clone(), token.clone());
        async move {
            let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (s, v) = upload(client, &base, &token, name, body.to_vec(), &f).await;
            assert_eq!(s, 201, "{name}: {v}");
            v
        }
    };
    let in_years = |y: i64| (chrono::Utc::now() + chrono::Duration::days(365 * y)).to_rfc3339();
    // Versions, tags, user metadata.
    let v1 = up(
        "contract.pdf",
        b"%PDF v1",
        vec![("tags", "contract,signed".into()), ("metadata", r#"{"party":"ACME","value":1200}"#.into())],
    )
    .await;
    let doc = v1["document_id"].as_str().unwrap().to_owned();
    up("contract.pdf", b"%PDF v2", vec![("document_id", doc.clone()), ("description", "amended".into())]).await;
    up("contract-final.pdf", b"%PDF v3", vec![("document_id", doc.clone()), ("tags", "contract".into())]).await;
    // Each retention mode, holds, review disposition.
    up("ledger.csv", b"a,b\n1,2\n", vec![("retention_mode", "compliance".into()), ("retain_until", in_years(10))])
        .await;
    up(
        "minutes.txt",
        b"minutes",
        vec![("retention_mode", "governance".into()), ("retain_until", in_years(3)), ("disposition", "review".into())],
    )
    .await;
    let held = up("evidence.jpg", b"\xff\xd8 jpeg", vec![("legal_hold", "true".into())]).await;
    let patched = up("notes.md", b"# notes", vec![("description", "draft".into())]).await;
    api.send(
        reqwest::Method::PATCH,
        &format!("/api/v1/files/{}", patched["file_id"].as_str().unwrap()),
        Some(json!({"metadata": {"status": "final"}, "tags": ["notes"]})),
    )
    .await;
    api.send(
        reqwest::Method::PUT,
        &format!("/api/v1/files/{}/retention", held["file_id"].as_str().unwrap()),
        Some(json!({"retain_until": in_years(5), "mode": "compliance"})),
    )
    .await;
    // A deleted tombstone and a disposed one.
    let gone = up("scratch.txt", b"scratch", vec![]).await;
    api.send(reqwest::Method::DELETE, &format!("/api/v1/files/{}", gone["file_id"].as_str().unwrap()), None).await;
    let soon = chrono::Utc::now() + chrono::Duration::seconds(6);
    up(
        "expiring.txt",
        b"short term",
        vec![("retention_mode", "governance".into()), ("retain_until", soon.to_rfc3339())],
    )
    .await;
    let wait = (soon - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(300);
    tokio::time::sleep(wait).await;
    let run = api.send(reqwest::Method::POST, "/api/v1/element/disposition", None).await;
    assert_eq!(run["disposed"], 1);
    // The element goes to ar: content moves to the cold tier inside the folder.
    api.send(reqwest::Method::POST, "/api/v1/element/mode", Some(json!({"mode": "ro"}))).await;
    api.send(reqwest::Method::POST, "/api/v1/element/mode", Some(json!({"mode": "ar"}))).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // let the cache catch up
    let before = answers(&api).await;
    assert_eq!(before["element"]["mode"], "ar");
    assert_eq!(before["filtered"]["state=disposed"]["items"].as_array().unwrap().len(), 1);
    assert_eq!(before["filtered"]["state=deleted"]["items"].as_array().unwrap().len(), 1);
    assert!(before["filtered"]["state=archived"]["items"].as_array().unwrap().len() >= 7);
    a.stop();

    // The drill: copy the folder and nothing else, new empty database, rebuild, start, check.
    let restored = tmp.path().join("restored");
    let cp = Command::new("cp").arg("-a").arg(&original).arg(&restored).status().unwrap();
    assert!(cp.success());
    let db2 = testing::fresh_database().await;
    let out = artstore(&["storage-element", "rebuild-cache"], &restored, &db2);
    assert!(out.contains(&format!("{} documents", before["sidecars"].as_object().unwrap().len())), "{out}");
    let mut c = Element::start(&restored, &jwks, &tmp.path().join("c.log"), &["--cache", &db2]);
    c.wait_ready(&client).await;
    let api_c = Api { client: &client, base: c.base.clone(), token: &token };
    assert_eq!(answers(&api_c).await, before, "the restored element answers differently");
    assert!(artstore(&["storage-element", "check-cache"], &restored, &db2).contains("0 differences"));
    c.stop();

    // Drop the database and rebuild again: identical again.
    testing::drop_database(&db2).await;
    let admin = sqlx::PgPool::connect(&testing::admin_url()).await.unwrap();
    let name = db2.rsplit('/').next().unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin).await.unwrap();
    artstore(&["storage-element", "rebuild-cache"], &restored, &db2);
    let mut c = Element::start(&restored, &jwks, &tmp.path().join("c2.log"), &["--cache", &db2]);
    c.wait_ready(&client).await;
    let api_c = Api { client: &client, base: c.base.clone(), token: &token };
    assert_eq!(answers(&api_c).await, before, "a second rebuild answers differently");
    c.stop();
    let verify =
        Command::new(support::BIN).args(["storage-element", "verify", "--data"]).arg(&restored).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    testing::drop_database(&db1).await;
    testing::drop_database(&db2).await;
}
