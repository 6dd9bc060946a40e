//! The ingester against real storage elements on loopback (in-process, real sockets):
//! placement by class, a mode switch and a dead element mid-run, versions across elements,
//! idempotency keys, digests and broken bodies that store nothing, streaming, forwarding of
//! writes, tus (protocol, checksum, termination, expiry, restart), and discovery through a
//! private Redis that is killed while uploads go on.

use artstore_ingester::config::IngesterConfig;
use artstore_ingester::server::IngesterServer;
use artstore_shared::ManualClock;
use artstore_shared::auth::{JWKS_FILE, JwksSource, LocalSigner, TokenVerifier, VerifierConfig};
use artstore_storage_element::ElementMode;
use artstore_storage_element::config::ElementConfig;
use artstore_storage_element::server::Element;
use base64::Engine as _;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct World {
    dir: tempfile::TempDir,
    signer: LocalSigner,
    http: reqwest::Client,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let signer = LocalSigner::load_or_create(&dir.path().join("keys")).unwrap();
        World { dir, signer, http: reqwest::Client::new() }
    }
    fn jwks(&self) -> PathBuf {
        self.dir.path().join("keys").join(JWKS_FILE)
    }
    fn token_for(&self, subject: &str, roles: &[&str]) -> String {
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        self.signer
            .issue(subject, &roles, Duration::from_secs(86400), chrono::Utc::now() - chrono::Duration::minutes(5))
            .unwrap()
    }
    fn admin(&self) -> String {
        self.token_for("alice", &["admin"])
    }
    fn verifier(&self) -> Arc<TokenVerifier> {
        Arc::new(TokenVerifier::new(
            JwksSource::File(self.jwks()),
            VerifierConfig::default(),
            Arc::new(ManualClock::new(chrono::Utc::now())),
        ))
    }

    async fn element(&self, name: &str, mode: ElementMode) -> TestElement {
        self.element_at(name, mode, "127.0.0.1:0").await
    }

    /// Starts element `name` again on the address it had (its folder and mode kept).
    async fn restart(&self, e: &mut TestElement) {
        e.stop().await;
        let addr = e.url.trim_start_matches("http://").to_owned();
        *e = self.element_at(&e.name, ElementMode::Rw, &addr).await;
    }

    async fn element_at(&self, name: &str, mode: ElementMode, addr: &str) -> TestElement {
        let root = self.dir.path().join(name);
        let cfg = ElementConfig { data: Some(root.clone()), initial_mode: mode, ..Default::default() };
        let element = Element::build(cfg, self.verifier(), Arc::new(artstore_shared::SystemClock)).await.unwrap();
        let l = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = element
                .run(l, async move {
                    let _ = rx.await;
                })
                .await;
        });
        TestElement { name: name.to_owned(), url, root, stop: Some(tx), task: Some(task) }
    }

    async fn ingester(&self, data: &Path, tune: impl FnOnce(&mut IngesterConfig)) -> TestIngester {
        let mut cfg = IngesterConfig { data: Some(data.to_owned()), probe_interval_ms: 100, ..Default::default() };
        tune(&mut cfg);
        let server = IngesterServer::build(cfg, self.verifier()).await.unwrap();
        let ingester = server.ingester.clone();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = server
                .run(l, async move {
                    let _ = rx.await;
                })
                .await;
        });
        TestIngester { url, ingester, stop: Some(tx), task: Some(task) }
    }

    async fn upload(
        &self,
        ing: &str,
        token: &str,
        name: &str,
        bytes: Vec<u8>,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()).mime_str("text/plain").unwrap(),
        );
        self.http.post(format!("{ing}/api/v1/files")).bearer_auth(token).multipart(form).send().await.unwrap()
    }

    /// Every document the element lists.
    async fn listed(&self, e: &TestElement) -> Vec<Value> {
        let r =
            self.http.get(format!("{}/api/v1/files?limit=1000", e.url)).bearer_auth(self.admin()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["items"].as_array().cloned().unwrap_or_default()
    }
}

struct TestElement {
    name: String,
    url: String,
    root: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestElement {
    async fn stop(&mut self) {
        if let Some(t) = self.stop.take() {
            let _ = t.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
    fn tmp_is_empty(&self) -> bool {
        std::fs::read_dir(self.root.join("tmp")).map(|mut d| d.next().is_none()).unwrap_or(true)
    }
}

struct TestIngester {
    url: String,
    ingester: Arc<artstore_ingester::store::Ingester>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestIngester {
    async fn stop(&mut self) {
        if let Some(t) = self.stop.take() {
            let _ = t.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
    /// Waits until the ingester sees `n` elements up.
    async fn wait_up(&self, n: usize) {
        let d = self.ingester.discovery.clone();
        eventually(&format!("{n} elements up"), 10, || d.elements().iter().filter(|e| e.up).count() == n).await;
    }
}

async fn eventually<F: FnMut() -> bool>(what: &str, secs: u64, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn elements_arg(es: &[&TestElement]) -> String {
    es.iter().map(|e| format!("{}={}", e.name, e.url)).collect::<Vec<_>>().join(",")
}

fn in_days(d: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(d)).to_rfc3339()
}

fn sha256_hex(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b).as_ref().iter().map(|x| format!("{x:02x}")).collect()
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    let t = r.text().await.unwrap();
    (s, serde_json::from_str(&t).unwrap_or_else(|_| json!({ "raw": t })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placement_by_class_and_writes_forwarded() {
    let w = World::new();
    let edit = w.element("e", ElementMode::Edit).await;
    let rw = w.element("r", ElementMode::Rw).await;
    let idir = w.dir.path().join("ingester");
    let ing = w.ingester(&idir, |c| c.elements = Some(elements_arg(&[&edit, &rw]))).await;
    ing.wait_up(2).await;
    let t = w.token_for("bob", &["writer"]);

    let (s, temp) = json_of(w.upload(&ing.url, &t, "note.txt", b"temporary".to_vec(), &[]).await).await;
    assert_eq!(s, 201, "{temp}");
    assert_eq!(temp["element_id"], "e", "no retention: edit");
    assert_eq!(temp["sha256"], sha256_hex(b"temporary"));
    let fields = [("retention_mode", "compliance"), ("retain_until", &in_days(3650) as &str)];
    let (s, perm) = json_of(w.upload(&ing.url, &t, "contract.txt", b"permanent".to_vec(), &fields).await).await;
    assert_eq!(s, 201, "{perm}");
    assert_eq!(perm["element_id"], "r", "ten years: rw");
    let short = [("retention_mode", "governance"), ("retain_until", &in_days(30) as &str), ("disposition", "dispose")];
    let (_, s30) = json_of(w.upload(&ing.url, &t, "tmp.txt", b"thirty days".to_vec(), &short).await).await;
    assert_eq!(s30["element_id"], "e", "disposed of within the horizon: edit");
    let review = [("retain_until", &in_days(30) as &str), ("disposition", "review")];
    let (_, rev) = json_of(w.upload(&ing.url, &t, "r.txt", b"review".to_vec(), &review).await).await;
    assert_eq!(rev["element_id"], "r", "reviewed at the end: permanent");
    // The file part first and the fields after: the form is read whole before placing.
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(b"late fields".to_vec()).file_name("late.txt"))
        .text("retention_mode", "compliance")
        .text("retain_until", in_days(3650));
    let r = w.http.post(format!("{}/api/v1/files", ing.url)).bearer_auth(&t).multipart(form).send().await.unwrap();
    assert_eq!(json_of(r).await.1["element_id"], "r");

    // Content is on the element that was named.
    let id = perm["file_id"].as_str().unwrap();
    let c = w.http.get(format!("{}/api/v1/files/{id}/content", rw.url)).bearer_auth(&t).send().await.unwrap();
    assert_eq!(c.bytes().await.unwrap().as_ref(), b"permanent");

    // Writes on existing documents go through the ingester to the holding element.
    let r = w
        .http
        .patch(format!("{}/api/v1/files/{id}", ing.url))
        .bearer_auth(&t)
        .json(&json!({"description": "signed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["artstore-element-id"], "r");
    let r = w
        .http
        .put(format!("{}/api/v1/files/{id}/legal-hold", ing.url))
        .bearer_auth(&t)
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sc: Value =
        w.http.get(format!("{}/api/v1/files/{id}", rw.url)).bearer_auth(&t).send().await.unwrap().json().await.unwrap();
    assert_eq!((sc["description"].as_str(), sc["retention"]["legal_hold"].as_bool()), (Some("signed"), Some(true)));
    // Refusals come back as the element's problem.
    let r = w.http.delete(format!("{}/api/v1/files/{id}", ing.url)).bearer_auth(&t).send().await.unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // A file the hint does not know is found by asking every element.
    let tid = temp["file_id"].as_str().unwrap();
    let fresh = w.ingester(&w.dir.path().join("ingester-2"), |c| c.elements = Some(elements_arg(&[&edit, &rw]))).await;
    fresh.wait_up(2).await;
    let r = w.http.delete(format!("{}/api/v1/files/{tid}", fresh.url)).bearer_auth(&t).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = w
        .http
        .patch(format!("{}/api/v1/files/{}", ing.url, uuid::Uuid::now_v7()))
        .bearer_auth(&t)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // No token, no upload; a reader may not upload.
    let r = w.http.post(format!("{}/api/v1/files", ing.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = w.upload(&ing.url, &w.token_for("rita", &["reader"]), "x.txt", b"x".to_vec(), &[]).await;
    assert_eq!(r.status(), 403);
    // A bad field is refused before anything is sent anywhere.
    let r = w.upload(&ing.url, &t, "x.txt", b"x".to_vec(), &[("legal_hold", "maybe")]).await;
    let (s, p) = json_of(r).await;
    assert_eq!(s, 400);
    assert!(p["detail"].as_str().unwrap().contains("legal_hold"), "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mode_switch_and_dead_element_mid_run() {
    let w = World::new();
    let a = w.element("a", ElementMode::Rw).await;
    let mut b = w.element("b", ElementMode::Rw).await;
    let c = w.element("c", ElementMode::Rw).await;
    let ing = w.ingester(&w.dir.path().join("ing"), |cfg| cfg.elements = Some(elements_arg(&[&a, &b, &c]))).await;
    ing.wait_up(3).await;
    let t = w.token_for("bob", &["writer"]);
    let perm = [("retention_mode", "compliance"), ("retain_until", &in_days(3650) as &str)];
    let perm: Vec<(String, String)> = perm.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    // 6 clients upload continuously, each upload with its own Idempotency-Key; meanwhile a
    // goes to ro and then b is stopped.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..6 {
        let (http, url, t, stop, perm) = (w.http.clone(), ing.url.clone(), t.clone(), stop.clone(), perm.clone());
        clients.push(tokio::spawn(async move {
            let (mut placed, mut undecided) = (Vec::new(), Vec::new());
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("client-{i}-doc-{n}");
                let r = permanent_upload(&http, &url, &t, &key, &perm).await;
                let s = r.status().as_u16();
                let v: Value = r.json().await.unwrap();
                let at = Instant::now();
                match (s, v["type"].as_str().unwrap_or_default()) {
                    (201, _) => placed.push((at, v["element_id"].as_str().unwrap().to_owned())),
                    // An upload b took as it stopped: b may have stored it, so no other
                    // element may; the client retries with its key once b is back.
                    (503, ty) if ty.ends_with("/upload-undecided") && v["element_id"] == "b" => {
                        undecided.push((at, key));
                    }
                    _ => panic!("upload failed mid-run: {s} {v}"),
                }
                n += 1;
            }
            (placed, undecided)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = w
        .http
        .post(format!("{}/api/v1/element/mode", a.url))
        .bearer_auth(w.admin())
        .json(&json!({"mode": "ro"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let switched = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stopping = Instant::now();
    b.stop().await;
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(900)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut all, mut undecided) = (Vec::new(), Vec::new());
    for c in clients {
        let (p, u) = c.await.unwrap();
        all.extend(p);
        undecided.extend(u);
    }
    assert!(all.len() > 30, "only {} uploads", all.len());
    // Once the switch is known (one probe later), nothing more lands on a; after b stopped
    // (one probe later), nothing more lands on b; none failed (asserted in the clients)
    // but the ones in flight to b as it stopped, at most one per client.
    let grace = Duration::from_millis(300);
    let late_a = all.iter().filter(|(at, e)| e == "a" && *at > switched + grace).count();
    let late_b = all.iter().filter(|(at, e)| e == "b" && *at > killed + grace).count();
    assert_eq!((late_a, late_b), (0, 0), "uploads landed on a after ro or on b after it died");
    assert!(all.iter().any(|(at, e)| e == "a" && *at < switched), "a took uploads before the switch");
    assert!(undecided.len() <= 6, "{} undecided uploads", undecided.len());
    assert!(undecided.iter().all(|(at, _)| *at >= stopping && *at <= killed + grace), "undecided away from the stop");
    let retries = ing.ingester.metrics.retries.get();
    println!("{} uploads, {} undecided as b stopped, {retries} retries", all.len(), undecided.len());
    assert!(all.iter().any(|(_, e)| e == "c"));
    // b back: each undecided upload, retried with its key, is answered from b, once.
    w.restart(&mut b).await;
    ing.wait_up(3).await;
    for (_, key) in &undecided {
        let r = permanent_upload(&w.http, &ing.url, &t, key, &perm).await;
        let (s, v) = json_of(r).await;
        assert_eq!((s, v["element_id"].as_str()), (201, Some("b")), "{key}: {v}");
        let id = v["file_id"].as_str().unwrap();
        for e in [&a, &c] {
            let r = w.http.get(format!("{}/api/v1/files/{id}", e.url)).bearer_auth(w.admin()).send().await.unwrap();
            assert_eq!(r.status(), 404, "{key} is on {} too", e.name);
        }
    }
}

/// One upload of a small permanent document under `key`; its content names the key.
async fn permanent_upload(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    key: &str,
    fields: &[(String, String)],
) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in fields {
        form = form.text(k.clone(), v.clone());
    }
    form = form.part("file", reqwest::multipart::Part::bytes(key.as_bytes().to_vec()).file_name("d.txt"));
    http.post(format!("{url}/api/v1/files"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn versions_are_numbered_across_elements() {
    let w = World::new();
    let a = w.element("a", ElementMode::Edit).await;
    let b = w.element("b", ElementMode::Rw).await;
    let ing = w.ingester(&w.dir.path().join("ing"), |c| c.elements = Some(elements_arg(&[&a, &b]))).await;
    ing.wait_up(2).await;
    let t = w.token_for("bob", &["writer"]);
    let (_, v1) = json_of(w.upload(&ing.url, &t, "doc.txt", b"v1".to_vec(), &[]).await).await;
    assert_eq!((v1["element_id"].as_str(), v1["version"].as_u64()), (Some("a"), Some(1)));
    let doc = v1["document_id"].as_str().unwrap().to_owned();
    // v2 is permanent: it lands on b, which has never seen the document.
    let f2 =
        [("document_id", doc.as_str()), ("retention_mode", "compliance"), ("retain_until", &in_days(3650) as &str)];
    let (s, v2) = json_of(w.upload(&ing.url, &t, "doc.txt", b"v2".to_vec(), &f2).await).await;
    assert_eq!(s, 201, "{v2}");
    assert_eq!((v2["element_id"].as_str(), v2["version"].as_u64()), (Some("b"), Some(2)));
    // v3 without retention goes back to a, numbered after b's v2.
    let (_, v3) = json_of(w.upload(&ing.url, &t, "doc.txt", b"v3".to_vec(), &[("document_id", &doc)]).await).await;
    assert_eq!((v3["element_id"].as_str(), v3["version"].as_u64()), (Some("a"), Some(3)));
    assert_eq!(v3["document_id"], v2["document_id"]);
    // An unknown document is refused.
    let r =
        w.upload(&ing.url, &t, "doc.txt", b"x".to_vec(), &[("document_id", &uuid::Uuid::now_v7().to_string())]).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_keys_store_once() {
    let w = World::new();
    let a = w.element("a", ElementMode::Edit).await;
    let ing = w.ingester(&w.dir.path().join("ing"), |c| c.elements = Some(elements_arg(&[&a]))).await;
    ing.wait_up(1).await;
    let t = w.token_for("bob", &["writer"]);
    let send = |t: String, body: &'static [u8]| {
        let (http, url) = (w.http.clone(), ing.url.clone());
        async move {
            let form =
                reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(body).file_name("k.txt"));
            http.post(format!("{url}/api/v1/files"))
                .bearer_auth(t)
                .header("idempotency-key", "order-42")
                .multipart(form)
                .send()
                .await
                .unwrap()
        }
    };
    // Two at once and one later: one document.
    let (r1, r2) = tokio::join!(send(t.clone(), b"once"), send(t.clone(), b"once"));
    let r3 = send(t.clone(), b"once").await;
    let replayed = [&r1, &r2, &r3].iter().filter(|r| r.headers().get("idempotent-replayed").is_some()).count();
    let ids: Vec<String> = [r1, r2, r3]
        .into_iter()
        .map(|r| async { json_of(r).await.1["file_id"].as_str().unwrap().to_owned() })
        .collect::<futures_util::stream::FuturesOrdered<_>>()
        .collect::<Vec<_>>()
        .await;
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert_eq!(replayed, 2);
    assert_eq!(w.listed(&a).await.len(), 1);
    // Another caller's key is another key.
    let r = send(w.token_for("carol", &["writer"]), b"once").await;
    assert_ne!(json_of(r).await.1["file_id"].as_str().unwrap(), ids[0]);
    assert_eq!(w.listed(&a).await.len(), 2);
    // Kept on disk: a restarted ingester still answers the first result.
    let mut ing = ing;
    ing.stop().await;
    let ing2 = w.ingester(&w.dir.path().join("ing"), |c| c.elements = Some(elements_arg(&[&a]))).await;
    ing2.wait_up(1).await;
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(b"once".to_vec()).file_name("k.txt"));
    let r = w
        .http
        .post(format!("{}/api/v1/files", ing2.url))
        .bearer_auth(&t)
        .header("idempotency-key", "order-42")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await.1["file_id"].as_str().unwrap(), ids[0]);
    assert_eq!(w.listed(&a).await.len(), 2);
}

/// Uploads `body` with an Idempotency-Key; the status, the answer and whether it was a
/// replayed one.
async fn keyed_upload(
    http: &reqwest::Client,
    url: &str,
    t: &str,
    key: &str,
    body: &'static [u8],
) -> (u16, Value, bool) {
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(body).file_name("c.txt"));
    let r = http
        .post(format!("{url}/api/v1/files"))
        .bearer_auth(t)
        .header("idempotency-key", key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let replayed = r.headers().get("idempotent-replayed").is_some();
    let (status, v) = json_of(r).await;
    (status, v, replayed)
}

/// An ingester that died after the element stored a document but before it kept the answer
/// leaves the key's planned file id behind (`<slot>.pending`): the retry finds the document
/// under that id and answers it, rather than storing a second copy. Without a stored
/// document the retry stores under the planned id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_after_a_crash_finds_what_the_first_attempt_stored() {
    let w = World::new();
    let a = w.element("a", ElementMode::Edit).await;
    let b = w.element("b", ElementMode::Edit).await;
    let data = w.dir.path().join("ing");
    let t = w.token_for("bob", &["writer"]);
    // The on-disk slot of (caller, route, key): as the ingester names it.
    let slot = |key: &str| sha256_hex(format!("bob\0POST /api/v1/files\0{key}").as_bytes());
    let pending = |key: &str| data.join("idempotency").join(format!("{}.pending", slot(key)));
    let ing = w.ingester(&data, |c| c.elements = Some(elements_arg(&[&a, &b]))).await;
    ing.wait_up(2).await;
    let send = |key: &'static str, body: &'static [u8]| keyed_upload(&w.http, &ing.url, &t, key, body);

    // A normal upload with a key stores under the id it planned, and leaves no pending id.
    let (status, v, _) = send("k-normal", b"normal").await;
    assert_eq!(status, 201, "{v}");
    assert!(std::fs::metadata(pending("k-normal")).is_err(), "the pending id is dropped once the answer is kept");

    // The crash: the first attempt planned an id and element b stored the document under
    // it, then the ingester died before keeping the answer.
    let planned = uuid::Uuid::now_v7();
    std::fs::write(pending("k-crash"), planned.to_string()).unwrap();
    let form = reqwest::multipart::Form::new()
        .text("file_id", planned.to_string())
        .part("file", reqwest::multipart::Part::bytes(b"stored before the crash".to_vec()).file_name("c.txt"));
    let r = w.http.post(format!("{}/api/v1/files", b.url)).bearer_auth(&t).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 201);
    // The same planned id again on the element: refused, nothing stored twice.
    let form = reqwest::multipart::Form::new()
        .text("file_id", planned.to_string())
        .part("file", reqwest::multipart::Part::bytes(b"again".to_vec()).file_name("c.txt"));
    let r = w.http.post(format!("{}/api/v1/files", b.url)).bearer_auth(&t).multipart(form).send().await.unwrap();
    let (status, v) = json_of(r).await;
    assert_eq!((status, v["type"].as_str().unwrap_or_default().ends_with("file-exists")), (409, true), "{v}");
    let before = w.listed(&a).await.len() + w.listed(&b).await.len();

    // The client retries through a restarted ingester: the stored document is the answer.
    let mut ing = ing;
    ing.stop().await;
    let ing = w.ingester(&data, |c| c.elements = Some(elements_arg(&[&a, &b]))).await;
    ing.wait_up(2).await;
    let send = |key: &'static str, body: &'static [u8]| keyed_upload(&w.http, &ing.url, &t, key, body);
    let (status, v, replayed) = send("k-crash", b"stored before the crash").await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["file_id"], planned.to_string(), "{v}");
    assert_eq!(v["element_id"], "b", "{v}");
    assert!(replayed);
    assert_eq!(w.listed(&a).await.len() + w.listed(&b).await.len(), before, "nothing stored a second time");
    // And from now on it is an ordinary kept answer.
    let (_, v, replayed) = send("k-crash", b"stored before the crash").await;
    assert_eq!((v["file_id"].as_str(), replayed), (Some(planned.to_string().as_str()), true));

    // A crash before anything was stored: the retry stores, under the planned id.
    let planned = uuid::Uuid::now_v7();
    std::fs::write(pending("k-early"), planned.to_string()).unwrap();
    let (status, v, replayed) = send("k-early", b"never stored before").await;
    assert_eq!((status, replayed), (201, false), "{v}");
    assert_eq!(v["file_id"], planned.to_string(), "{v}");
    assert_eq!(w.listed(&a).await.len() + w.listed(&b).await.len(), before + 1);

    // An attempt that element a took without answering pins the planned id to a; a finds
    // it committed by the time the retry comes (after the retry's look found nothing): a's
    // 409 file-exists makes that document the answer, and b is never asked.
    let planned = uuid::Uuid::now_v7();
    let form = reqwest::multipart::Form::new()
        .text("file_id", planned.to_string())
        .part("file", reqwest::multipart::Part::bytes(b"committed late".to_vec()).file_name("late.txt"));
    let r = w.http.post(format!("{}/api/v1/files", a.url)).bearer_auth(&t).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let count = w.listed(&a).await.len() + w.listed(&b).await.len();
    let head = artstore_ingester::store::FileHead {
        filename: "late.txt".into(),
        content_type: "text/plain".into(),
        sha256: None,
    };
    let fields = artstore_shared::upload::UploadFields::default();
    let content = artstore_ingester::store::Content::Memory(bytes::Bytes::from_static(b"committed late"));
    let store = |id| ing.ingester.store(&t, &fields, &head, &content, 14, Some(id));
    ing.ingester.keys.pin(planned, "a");
    match store(planned).await {
        Ok(artstore_ingester::store::Outcome::Stored { element_id, file_id, .. }) => {
            assert_eq!((element_id.as_str(), file_id), ("a", planned))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.listed(&a).await.len() + w.listed(&b).await.len(), count, "nothing stored twice");
    assert_eq!(ing.ingester.keys.pinned(planned), None, "the pin is dropped once a answered");
    // Pinned to an element that is gone: 503, and no other element stores it.
    let other = uuid::Uuid::now_v7();
    ing.ingester.keys.pin(other, "gone");
    let e = store(other).await.map(|_| ()).unwrap_err();
    assert_eq!((e.code, e.kind), (artstore_shared::ErrorCode::Unavailable, "retry-undecided"), "{e:?}");
    assert!(e.detail.contains("gone"), "{e:?}");
    assert_eq!(w.listed(&a).await.len() + w.listed(&b).await.len(), count);

    // An element that may hold it does not answer: 503, nothing stored.
    let planned = uuid::Uuid::now_v7();
    std::fs::write(pending("k-undecided"), planned.to_string()).unwrap();
    let on_a = w.listed(&a).await.len();
    let mut b = b;
    b.stop().await;
    let (status, v, _) = send("k-undecided", b"undecided").await;
    assert_eq!(status, 503, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("retry later"), "{v}");
    assert_eq!(w.listed(&a).await.len(), on_a, "nothing stored while it cannot be decided");
    assert!(std::fs::metadata(pending("k-undecided")).is_ok(), "the planned id stays for the next retry");
}

/// A TCP proxy in front of an element that, while `swallow` is on, lets an upload through
/// and closes the connection when the element answers it: as if the element stored the
/// document and died before the answer left. Everything else passes both ways.
async fn swallowing_proxy(upstream: &str, swallow: Arc<std::sync::atomic::AtomicBool>) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { continue };
            let swallow = swallow.clone();
            let upload_seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let seen = upload_seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = cr.read(&mut buf).await {
                    if buf[..n].windows(20).any(|w| w == b"POST /api/v1/files H") {
                        seen.store(true, Relaxed);
                    }
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = sr.read(&mut buf).await {
                    if swallow.load(Relaxed) && upload_seen.load(Relaxed) {
                        break; // the answer is dropped with the connection
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    url
}

/// An element that took an upload and gave no answer may have stored it: the ingester
/// must not place it on another element (that would be a second copy under the same id),
/// but answer 503 `upload-undecided` naming the element. The retry with the same key finds
/// what the element stored and answers it; nothing is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_element_that_took_the_upload_and_gave_no_answer_is_not_followed_by_another() {
    let w = World::new();
    let e = w.element("e", ElementMode::Edit).await;
    let r = w.element("r", ElementMode::Rw).await;
    let swallow = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let proxied = swallowing_proxy(&e.url, swallow.clone()).await;
    let data = w.dir.path().join("ing");
    // No retention: temporary, so `e` (edit) is tried first and `r` (rw) would be next.
    let ing = w.ingester(&data, |c| c.elements = Some(format!("e={proxied},r={}", r.url))).await;
    ing.wait_up(2).await;
    let t = w.token_for("bob", &["writer"]);

    let (status, v, _) = keyed_upload(&w.http, &ing.url, &t, "k-swallowed", b"stored, answer lost").await;
    assert_eq!(status, 503, "{v}");
    assert!(v["type"].as_str().unwrap().ends_with("/upload-undecided"), "{v}");
    assert_eq!(v["element_id"], "e", "{v}");
    assert!(v["detail"].as_str().unwrap().contains("same Idempotency-Key"), "{v}");
    assert_eq!(w.listed(&e).await.len(), 1, "the element did store it");
    assert_eq!(w.listed(&r).await.len(), 0, "no second copy on the next element");

    // Without a key the same: no second copy, and the answer says a retry may make one.
    let (s, v) = json_of(w.upload(&ing.url, &t, "n.txt", b"no key".to_vec(), &[]).await).await;
    assert_eq!(s, 503, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("second copy"), "{v}");
    assert_eq!((w.listed(&e).await.len(), w.listed(&r).await.len()), (2, 0));

    // The retry with the key, answers flowing again: the stored document is the answer.
    swallow.store(false, std::sync::atomic::Ordering::Relaxed);
    let stored = w.listed(&e).await.into_iter().find(|d| d["original_name"] == "c.txt").unwrap();
    let (status, v, replayed) = keyed_upload(&w.http, &ing.url, &t, "k-swallowed", b"stored, answer lost").await;
    assert_eq!(status, 201, "{v}");
    assert_eq!((&v["file_id"], &v["element_id"], replayed), (&stored["file_id"], &json!("e"), true), "{v}");
    assert_eq!((w.listed(&e).await.len(), w.listed(&r).await.len()), (2, 0), "nothing stored twice");

    // A file streamed through (larger than the replay buffer): the same 503, not "nothing
    // was stored".
    let streaming = w
        .ingester(&w.dir.path().join("ing-s"), |c| {
            c.elements = Some(format!("e={proxied},r={}", r.url));
            c.replay_buffer_bytes = 1024;
        })
        .await;
    streaming.wait_up(2).await;
    swallow.store(true, std::sync::atomic::Ordering::Relaxed);
    let (s, v) = json_of(w.upload(&streaming.url, &t, "big.txt", vec![b'x'; 64 << 10], &[]).await).await;
    assert_eq!(s, 503, "{v}");
    assert!(v["type"].as_str().unwrap().ends_with("/upload-undecided"), "{v}");
    assert_eq!((w.listed(&e).await.len(), w.listed(&r).await.len()), (3, 0));
}

use futures_util::StreamExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn digests_streaming_and_broken_bodies() {
    let w = World::new();
    let a = w.element("a", ElementMode::Edit).await;
    // A small replay buffer: anything over 64 KiB streams through.
    let ing = w
        .ingester(&w.dir.path().join("ing"), |c| {
            c.elements = Some(elements_arg(&[&a]));
            c.replay_buffer_bytes = 64 << 10;
        })
        .await;
    ing.wait_up(1).await;
    let t = w.token_for("bob", &["writer"]);
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let b64 =
        |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, b));
    let upload = |bytes: Vec<u8>, digest: Option<String>| {
        let (http, url, t) = (w.http.clone(), ing.url.clone(), t.clone());
        async move {
            let form = reqwest::multipart::Form::new()
                .part("file", reqwest::multipart::Part::bytes(bytes).file_name("big.bin"));
            let mut rb = http.post(format!("{url}/api/v1/files")).bearer_auth(t).multipart(form);
            if let Some(d) = digest {
                rb = rb.header("content-digest", format!("sha-256=:{d}:"));
            }
            json_of(rb.send().await.unwrap()).await
        }
    };
    // Wrong digests, small and streamed: 400 and nothing stored.
    let (s, p) = upload(b"small".to_vec(), Some(b64(b"other"))).await;
    assert_eq!((s, p["type"].as_str().unwrap().ends_with("digest-mismatch")), (400, true), "{p}");
    let (s, p) = upload(big.clone(), Some(b64(b"other"))).await;
    assert_eq!((s, p["type"].as_str().unwrap().ends_with("digest-mismatch")), (400, true), "{p}");
    assert!(w.listed(&a).await.is_empty());
    // Streamed with the right digest: stored whole.
    let (s, sc) = upload(big.clone(), Some(b64(&big))).await;
    assert_eq!(s, 201, "{sc}");
    assert_eq!(
        (sc["sha256"].as_str().unwrap(), sc["size"].as_u64()),
        (sha256_hex(&big).as_str(), Some(big.len() as u64))
    );
    // A client body that breaks half-way: nothing stored anywhere.
    let boundary = "brokenbody";
    let head = format!("--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"cut.bin\"\r\n\r\n");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(head.into_bytes()), Ok(vec![7u8; 1 << 20]), Err(std::io::Error::other("client went away"))];
    let r = w
        .http
        .post(format!("{}/api/v1/files", ing.url))
        .bearer_auth(&t)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await;
    assert!(r.is_err() || !r.unwrap().status().is_success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.listed(&a).await.len(), 1, "only the good upload");
    eventually("the element's tmp/ is empty", 10, || a.tmp_is_empty()).await;
}

fn tus(rb: reqwest::RequestBuilder, t: &str) -> reqwest::RequestBuilder {
    rb.bearer_auth(t).header("tus-resumable", "1.0.0")
}

fn meta(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k} {}", base64::engine::general_purpose::STANDARD.encode(v)))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tus_protocol_checksum_termination_expiry_restart() {
    let w = World::new();
    let a = w.element("a", ElementMode::Edit).await;
    let idir = w.dir.path().join("ing");
    let mut ing = w.ingester(&idir, |c| c.elements = Some(elements_arg(&[&a]))).await;
    ing.wait_up(1).await;
    let t = w.token_for("bob", &["writer"]);
    let h = &w.http;
    let base = format!("{}/api/v1/uploads", ing.url);

    let r = h.request(reqwest::Method::OPTIONS, &base).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["tus-version"], "1.0.0");
    assert!(r.headers()["tus-extension"].to_str().unwrap().contains("creation-with-upload"));
    assert!(r.headers()["tus-extension"].to_str().unwrap().contains("checksum"));
    assert!(r.headers().get("tus-max-size").is_some());
    let r = h.post(&base).bearer_auth(&t).header("upload-length", "3").send().await.unwrap();
    assert_eq!(r.status(), 412, "no Tus-Resumable");

    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let m = meta(&[
        ("filename", "scan.pdf"),
        ("content_type", "application/pdf"),
        ("tags", "tus,scan"),
        ("description", "a scan"),
    ]);
    let r = tus(h.post(&base), &t)
        .header("upload-length", content.len().to_string())
        .header("upload-metadata", &m)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers().get("upload-expires").is_some());
    let loc = format!("{}{}", ing.url, r.headers()["location"].to_str().unwrap());
    let head = |loc: String| {
        let t = t.clone();
        async move {
            let r = tus(reqwest::Client::new().head(&loc), &t).send().await.unwrap();
            (r.status().as_u16(), r.headers().get("upload-offset").map(|v| v.to_str().unwrap().parse::<u64>().unwrap()))
        }
    };
    assert_eq!(head(loc.clone()).await, (200, Some(0)));
    let patch = |loc: String, offset: usize, chunk: Vec<u8>, checksum: Option<String>| {
        let t = t.clone();
        async move {
            let mut rb = tus(reqwest::Client::new().patch(&loc), &t)
                .header("upload-offset", offset.to_string())
                .header("content-type", "application/offset+octet-stream");
            if let Some(c) = checksum {
                rb = rb.header("upload-checksum", c);
            }
            rb.body(chunk).send().await.unwrap()
        }
    };
    let sha1 = |b: &[u8]| {
        format!(
            "sha1 {}",
            base64::engine::general_purpose::STANDARD
                .encode(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, b))
        )
    };
    let r = patch(loc.clone(), 0, content[..100_000].to_vec(), Some(sha1(&content[..100_000]))).await;
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["upload-offset"], "100000");
    let r = patch(loc.clone(), 5, content[5..10].to_vec(), None).await;
    assert_eq!(r.status(), 409, "wrong offset");
    let r = patch(loc.clone(), 100_000, content[100_000..200_000].to_vec(), Some(sha1(b"something else"))).await;
    assert_eq!(r.status(), 460, "checksum mismatch");
    assert_eq!(head(loc.clone()).await, (200, Some(100_000)), "the bad chunk was discarded");
    let r = patch(loc.clone(), 100_000, content[100_000..200_000].to_vec(), None).await;
    assert_eq!(r.status(), 204);
    let other = w.token_for("eve", &["writer"]);
    assert_eq!(tus(h.head(&loc), &other).send().await.unwrap().status(), 404, "another caller's upload is not found");

    // Restart: the session and its bytes survive.
    ing.stop().await;
    let ing = w.ingester(&idir, |c| c.elements = Some(elements_arg(&[&a]))).await;
    ing.wait_up(1).await;
    let loc = loc.replace(&base.replace("/api/v1/uploads", ""), &ing.url);
    assert_eq!(head(loc.clone()).await, (200, Some(200_000)));
    let r = patch(
        loc.clone(),
        200_000,
        content[200_000..].to_vec(),
        Some(format!(
            "sha256 {}",
            base64::engine::general_purpose::STANDARD
                .encode(ring::digest::digest(&ring::digest::SHA256, &content[200_000..]))
        )),
    )
    .await;
    assert_eq!(r.status(), 204);
    let file_id = r.headers()["artstore-file-id"].to_str().unwrap().to_owned();
    assert_eq!(r.headers()["artstore-element-id"], "a");
    let st: Value = h.get(&loc).bearer_auth(&t).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (st["state"].as_str(), st["offset"].as_u64(), st["file_id"].as_str()),
        (Some("stored"), Some(300_000), Some(file_id.as_str()))
    );
    assert_eq!(st["sidecar"]["sha256"], sha256_hex(&content));
    assert_eq!(st["sidecar"]["content_type"], "application/pdf");
    assert_eq!(st["sidecar"]["description"], "a scan");
    let c = h
        .get(format!("{}/api/v1/files/{file_id}/content", a.url))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(c.as_ref(), content.as_slice());

    // creation-with-upload, then termination.
    let r = tus(h.post(format!("{}/api/v1/uploads", ing.url)), &t)
        .header("upload-length", "10")
        .header("content-type", "application/offset+octet-stream")
        .body(b"01234".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["upload-offset"].to_str().unwrap()), (201, "5"));
    let loc2 = format!("{}{}", ing.url, r.headers()["location"].to_str().unwrap());
    let r = tus(h.delete(&loc2), &t).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(head(loc2.clone()).await.0, 404);

    // Expiry: a session past its time is swept with its bytes.
    let r = tus(h.post(format!("{}/api/v1/uploads", ing.url)), &t).header("upload-length", "10").send().await.unwrap();
    let loc3 = format!("{}{}", ing.url, r.headers()["location"].to_str().unwrap());
    assert_eq!(ing.ingester.sessions.sweep(chrono::Utc::now()), 0);
    assert_eq!(
        ing.ingester.sessions.sweep(chrono::Utc::now() + chrono::Duration::hours(25)),
        2,
        "the open one and the stored one"
    );
    assert_eq!(head(loc3).await.0, 404);
    let left = std::fs::read_dir(idir.join("uploads")).unwrap().count();
    assert_eq!(left, 0);
    // Creation with an Idempotency-Key: a retry gets the same upload.
    let create = |key: &'static str| {
        let (h, t, url) = (h.clone(), t.clone(), ing.url.clone());
        async move {
            let r = tus(h.post(format!("{url}/api/v1/uploads")), &t)
                .header("upload-length", "4")
                .header("idempotency-key", key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.headers()["location"].to_str().unwrap().to_owned()
        }
    };
    let first = create("tus-once").await;
    assert_eq!(create("tus-once").await, first);
    assert_ne!(create("tus-other").await, first);
    // A bad metadata field is refused at creation.
    let r = tus(h.post(format!("{}/api/v1/uploads", ing.url)), &t)
        .header("upload-length", "1")
        .header("upload-metadata", meta(&[("retention_mode", "forever")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// A `redis-server` of this test's own on a free port (installed by `scripts/services.sh`;
/// missing fails the test).
struct PrivateRedis {
    child: Option<std::process::Child>,
    port: u16,
}

impl PrivateRedis {
    async fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = PrivateRedis { child: None, port };
        r.restart().await;
        r
    }
    async fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/services.sh)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis::Client::open(self.url().as_str()).unwrap().get_multiplexed_async_connection().await.is_err() {
            assert!(Instant::now() < deadline, "private redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    async fn publish(&self, version: u64, elements: &[(&TestElement, &str)]) {
        use artstore_shared::discovery::{REGISTRY_CHANNEL, REGISTRY_KEY, Registry, RegistryElement};
        let reg = Registry {
            version,
            published_at: chrono::Utc::now(),
            elements: elements
                .iter()
                .map(|(e, mode)| RegistryElement {
                    id: e.name.clone(),
                    url: e.url.clone(),
                    mode: (*mode).to_owned(),
                    capacity_bytes: 0,
                    weight: 1,
                    dc: String::new(),
                    labels: Default::default(),
                })
                .collect(),
        };
        let mut c = redis::Client::open(self.url().as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let () = redis::cmd("SET")
            .arg(REGISTRY_KEY)
            .arg(serde_json::to_string(&reg).unwrap())
            .query_async(&mut c)
            .await
            .unwrap();
        let _: i64 = redis::cmd("PUBLISH").arg(REGISTRY_CHANNEL).arg(version).query_async(&mut c).await.unwrap();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn discovery_check(http: &reqwest::Client, ing: &str) -> String {
    let v: Value = http.get(format!("{ing}/health/ready")).send().await.unwrap().json().await.unwrap();
    v["checks"]["discovery"]["status"].as_str().unwrap_or_default().to_owned()
}

/// Waits until `/health/ready` shows discovery in `want`.
async fn wait_discovery(http: &reqwest::Client, ing: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while discovery_check(http, ing).await != want {
        assert!(Instant::now() < deadline, "discovery never showed {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_while_uploading_and_restart_with_redis_down() {
    let w = World::new();
    let a = w.element("a", ElementMode::Edit).await;
    let b = w.element("b", ElementMode::Rw).await;
    let mut redis = PrivateRedis::start().await;
    redis.publish(1, &[(&a, "edit"), (&b, "rw")]).await;
    let idir = w.dir.path().join("ing");
    let url = redis.url();
    let mut ing = w.ingester(&idir, |c| c.redis = Some(url.clone())).await;
    ing.wait_up(2).await;
    wait_discovery(&w.http, &ing.url, "ready").await;
    let t = w.token_for("bob", &["writer"]);
    let up = |ing: String, n: usize| {
        let (http, t) = (w.http.clone(), t.clone());
        async move {
            let mut where_ = Vec::new();
            for i in 0..n {
                let form = reqwest::multipart::Form::new()
                    .part("file", reqwest::multipart::Part::bytes(format!("doc {i}").into_bytes()).file_name("d.txt"));
                let r = http.post(format!("{ing}/api/v1/files")).bearer_auth(&t).multipart(form).send().await.unwrap();
                let (s, v) = json_of(r).await;
                assert_eq!(s, 201, "{v}");
                where_.push(v["element_id"].as_str().unwrap().to_owned());
            }
            where_
        }
    };
    // Uploads go on while Redis dies under them.
    let uploading = tokio::spawn(up(ing.url.clone(), 40));
    tokio::time::sleep(Duration::from_millis(100)).await;
    redis.kill();
    assert_eq!(uploading.await.unwrap().len(), 40);
    wait_discovery(&w.http, &ing.url, "degraded").await;
    assert_eq!(up(ing.url.clone(), 10).await, vec!["a"; 10], "temporary documents still go to edit");

    // Restarted with Redis still down: the last-known registry serves.
    ing.stop().await;
    let ing = w.ingester(&idir, |c| c.redis = Some(url.clone())).await;
    ing.wait_up(2).await;
    wait_discovery(&w.http, &ing.url, "degraded").await;
    assert_eq!(up(ing.url.clone(), 5).await.len(), 5);

    // Redis is back with a new registry (a is gone from it): picked up.
    redis.restart().await;
    redis.publish(2, &[(&b, "rw")]).await;
    let d = ing.ingester.discovery.clone();
    eventually("registry version 2", 10, || d.version() == 2).await;
    wait_discovery(&w.http, &ing.url, "ready").await;
    assert_eq!(up(ing.url.clone(), 5).await, vec!["b"; 5]);
}
