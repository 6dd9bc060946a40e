//! `deploy/local-cluster.sh` brings up the whole multi-process cluster (3 admin nodes, 2
//! elements with their PostgreSQL caches, ingester, query, Redis, Kafka, nginx in front),
//! the public API works through the front proxy, `up` is idempotent, `down` stops
//! everything it started and a second `up` finds every document again.

mod support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_artstore");
const PASSWORD: &str = "local-cluster-pass-1";

struct Cluster {
    dir: PathBuf,
    base: u16,
}

impl Cluster {
    fn script(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local-cluster.sh"))
            .args(args)
            .env("ARTSTORE_BIN", BIN)
            .env("ARTSTORE_CLUSTER_DIR", &self.dir)
            .env("ARTSTORE_CLUSTER_PORT", self.base.to_string())
            .env("ARTSTORE_ADMIN_PASSWORD", PASSWORD)
            .output()
            .unwrap()
    }

    fn up(&self) -> String {
        let out = self.script(&["up"]);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "local-cluster.sh up failed:\n{stdout}\n{stderr}\n{}", self.logs());
        stdout.into_owned()
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for name in ["admin-1", "admin-2", "admin-3", "se-1", "se-2", "ingester", "query", "nginx"] {
            let text = std::fs::read_to_string(self.dir.join("logs").join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            s.push_str(&format!("--- {name}\n{}\n", tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
        }
        s
    }

    fn pids(&self) -> BTreeMap<String, String> {
        std::fs::read_dir(self.dir.join("run"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        (name, std::fs::read_to_string(e.path()).unwrap_or_default().trim().to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn front(&self) -> String {
        format!("http://127.0.0.1:{}", self.base + 80)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.script(&["down"]);
    }
}

/// A base port whose every offset the cluster uses is free.
fn free_base() -> u16 {
    let offsets = [1, 2, 3, 11, 12, 21, 31, 32, 79, 80, 92, 93];
    for _ in 0..200 {
        let base = 20_000 + (rand::random::<u16>() % 400) * 100;
        if offsets.iter().all(|o| std::net::TcpListener::bind(("127.0.0.1", base + o)).is_ok()) {
            return base;
        }
    }
    panic!("no free port range for the cluster");
}

fn alive(pid: &str) -> bool {
    std::fs::metadata(format!("/proc/{pid}")).is_ok()
}

async fn upload(
    http: &reqwest::Client,
    front: &str,
    token: &str,
    name: &str,
    body: &str,
    policy: Option<&str>,
) -> Value {
    let mut form = reqwest::multipart::Form::new()
        .text("tags", "cluster")
        .part("file", reqwest::multipart::Part::bytes(body.as_bytes().to_vec()).file_name(name.to_owned()));
    if let Some(p) = policy {
        form = form.text("retention_policy", p.to_owned());
    }
    let r = http.post(format!("{front}/api/v1/files")).bearer_auth(token).multipart(form).send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "upload through the front proxy: {v}");
    v
}

/// Waits until a search for `word` through the front finds exactly `ids`.
async fn search_finds(http: &reqwest::Client, front: &str, token: &str, word: &str, ids: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = http.get(format!("{front}/api/v1/search?q={word}")).bearer_auth(token).send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or_default();
        let mut found: Vec<String> = v["hits"]
            .as_array()
            .map(|a| a.iter().filter_map(|i| i["file_id"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        found.sort();
        let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        want.sort();
        if status == 200 && found == want {
            return;
        }
        assert!(Instant::now() < deadline, "search for {word} through the front: {status} {v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_comes_up_serves_through_the_front_and_comes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Cluster { dir: tmp.path().join("cluster"), base: free_base() };
    let t0 = Instant::now();
    let out = c.up();
    eprintln!("up took {:.1} s", t0.elapsed().as_secs_f64());
    let front = c.front();
    assert!(out.contains(&format!("front:    {front}/")), "{out}");
    assert!(out.contains(&format!("admin password: {PASSWORD}")), "{out}");

    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let token = support::password_token(&http, &front, "admin", PASSWORD).await;
    let r = http
        .post(format!("{front}/api/v1/retention-policies"))
        .bearer_auth(&token)
        .json(&json!({"name": "tax", "term": "P7Y", "mode": "compliance", "disposition": "dispose"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    // Kept for years → the rw element first; no retention (temporary) → the edit element first.
    let kept = upload(&http, &front, &token, "kept.txt", "quarterly zeppelin ledger", Some("tax")).await;
    let temp = upload(&http, &front, &token, "temp.txt", "scratch zeppelin notes", None).await;
    assert_eq!(kept["element_id"], "se-2", "{kept}");
    assert_eq!(temp["element_id"], "se-1", "{temp}");
    let (kept_id, temp_id) =
        (kept["file_id"].as_str().unwrap().to_owned(), temp["file_id"].as_str().unwrap().to_owned());
    search_finds(&http, &front, &token, "zeppelin", &[&kept_id, &temp_id]).await;
    let body = http
        .get(format!("{front}/api/v1/files/{kept_id}/content"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "quarterly zeppelin ledger");
    // The web UI through the front (served by the admin nodes).
    let r = http.get(format!("{front}/login")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("<form"), "the sign-in page");
    // An unknown API path is a problem, not a UI page.
    let r = http.get(format!("{front}/api/v1/nothing-here")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    let st = c.script(&["status"]);
    let st_out = String::from_utf8_lossy(&st.stdout);
    assert!(st.status.success(), "status after up:\n{st_out}");
    for part in
        ["admin-1", "admin-2", "admin-3", "se-1", "se-2", "ingester", "query", "nginx", "redis", "postgres", "kafka"]
    {
        assert!(st_out.lines().any(|l| l.starts_with(part) && l.contains("running")), "{part} in:\n{st_out}");
    }

    // up again: nothing restarted.
    let before = c.pids();
    assert!(before.len() >= 9, "{before:?}");
    c.up();
    assert_eq!(c.pids(), before, "a second up restarted something");

    // down: every process it started is gone, the data stays.
    let d = c.script(&["down"]);
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    for (name, pid) in &before {
        assert!(!alive(pid), "{name} (pid {pid}) still runs after down");
    }
    let st = c.script(&["status"]);
    assert_eq!(st.status.code(), Some(3), "status after down:\n{}", String::from_utf8_lossy(&st.stdout));
    assert!(http.get(format!("{front}/")).send().await.is_err(), "the front still answers after down");

    // up again: the same documents, searchable and readable.
    c.up();
    let token = support::password_token(&http, &front, "admin", PASSWORD).await;
    search_finds(&http, &front, &token, "zeppelin", &[&kept_id, &temp_id]).await;
    let r = http.get(format!("{front}/api/v1/files/{temp_id}")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["file_id"], temp_id.as_str());
}
