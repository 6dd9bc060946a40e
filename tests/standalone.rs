//! `artstore standalone` as users start it: admin, element, ingester, query role and web UI
//! in one process, on one port. A login gives a token every route accepts; an upload
//! through the one port is searchable within seconds; after a SIGKILL right after uploads
//! (the in-process bus keeps nothing) the restarted query role reconciles with the element
//! and finds every document; the UI answers at `/` on the same port.

mod support;

use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Standalone {
    child: Child,
    base: String,
}

impl Standalone {
    fn start(data: &std::path::Path, log: &std::path::Path, port: u16) -> Standalone {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(support::BIN)
            .args(["standalone", "--data"])
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--log-format", "json"])
            .env("ARTSTORE_ADMIN_PASSWORD", "standalone-test-pw")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Standalone { child, base: format!("http://127.0.0.1:{port}") }
    }

    /// Up when the last role (the UI) answers on the one port.
    async fn wait_ready(&self, c: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = c.get(format!("{}/login", self.base)).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(Instant::now() < deadline, "{} did not come up", self.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn total(c: &reqwest::Client, s: &Standalone, token: &str, q: &str) -> u64 {
    let r = c.get(format!("{}/api/v1/search?q={q}", s.base)).bearer_auth(token).send().await;
    match r {
        Ok(r) if r.status() == 200 => r.json::<Value>().await.unwrap()["total"].as_u64().unwrap(),
        _ => 0,
    }
}

async fn wait_total(c: &reqwest::Client, s: &Standalone, token: &str, q: &str, want: u64, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while total(c, s, token, q).await != want {
        assert!(
            Instant::now() < deadline,
            "search {q:?} never found {want}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_port_login_upload_search_and_reconcile_after_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, log) = (tmp.path().join("data"), tmp.path().join("standalone.log"));
    let port = support::free_port();
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut s = Standalone::start(&data, &log, port);
    s.wait_ready(&c).await;
    let token = support::password_token(&c, &s.base, "admin", "standalone-test-pw").await;

    // Every part of the routing table answers on the one port.
    let jwks = c.get(format!("{}/.well-known/jwks.json", s.base)).send().await.unwrap();
    assert_eq!(jwks.status(), 200);
    let policy = c
        .post(format!("{}/api/v1/retention-policies", s.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "tax", "term": "P7Y", "mode": "compliance", "disposition": "dispose"}))
        .send()
        .await
        .unwrap();
    assert_eq!(policy.status(), 201, "{}", policy.text().await.unwrap());
    let (st, sidecar) = support::upload(
        &c,
        &s.base,
        &token,
        "first.txt",
        b"the archived contracts".to_vec(),
        &[("retention_policy", "tax")],
    )
    .await;
    assert_eq!(st, 201, "{sidecar}");
    assert_eq!(sidecar["retention"]["mode"], "compliance", "{sidecar}");
    let id = sidecar["file_id"].as_str().unwrap().to_owned();
    wait_total(&c, &s, &token, "contract", 1, &log).await;
    let content = c.get(format!("{}/api/v1/files/{id}/content", s.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(content.text().await.unwrap(), "the archived contracts");
    let patched = c
        .patch(format!("{}/api/v1/files/{id}", s.base))
        .bearer_auth(&token)
        .header("content-type", "application/merge-patch+json")
        .json(&serde_json::json!({"description": "annual"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200, "{}", patched.text().await.unwrap());
    let ready: Value = c.get(format!("{}/health/ready", s.base)).send().await.unwrap().json().await.unwrap();
    for role in ["admin", "element", "ingester", "query"] {
        assert!(ready["roles"][role]["status"].is_string(), "{role} missing from the one port's readiness: {ready}");
    }
    assert_eq!(ready["roles"]["element"]["element"]["id"], "standalone", "{ready}");
    let missing = c.get(format!("{}/api/v1/no-such-thing", s.base)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
    let ui = c.get(format!("{}/", s.base)).send().await.unwrap();
    assert_eq!(ui.status(), 303, "the UI sends a visitor without a session to the login form");
    assert!(ui.headers()["location"].to_str().unwrap().starts_with("/login"));

    // Uploads, then SIGKILL at once: events not yet indexed die with the process.
    for i in 0..5 {
        let (st, _) =
            support::upload(&c, &s.base, &token, &format!("d{i}.txt"), format!("omega {i}").into_bytes(), &[]).await;
        assert_eq!(st, 201);
    }
    let _ = s.child.kill();
    let _ = s.child.wait();
    drop(s);
    let s = Standalone::start(&data, &log, port);
    s.wait_ready(&c).await;
    wait_total(&c, &s, &token, "omega", 5, &log).await;
    wait_total(&c, &s, &token, "contract", 1, &log).await;
}
