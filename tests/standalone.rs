//! `artstore standalone` as users start it: admin, element and query role in one process.
//! A login at the admin gives a token the element and the query role accept; an upload is
//! searchable within seconds; after a SIGKILL right after uploads (the in-process bus keeps
//! nothing) the restarted query role reconciles with the element and finds every document.

mod support;

use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Standalone {
    child: Child,
    element: String,
    admin: String,
    query: String,
}

impl Standalone {
    fn start(data: &std::path::Path, log: &std::path::Path, ports: (u16, u16, u16)) -> Standalone {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let (e, a, q) = ports;
        let child = Command::new(support::BIN)
            .args(["standalone", "--data"])
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{e}")])
            .args(["--admin-listen", &format!("127.0.0.1:{a}")])
            .args(["--query-listen", &format!("127.0.0.1:{q}")])
            .args(["--log-format", "json"])
            .env("ARTSTORE_ADMIN_PASSWORD", "standalone-test-pw")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Standalone {
            child,
            element: format!("http://127.0.0.1:{e}"),
            admin: format!("http://127.0.0.1:{a}"),
            query: format!("http://127.0.0.1:{q}"),
        }
    }

    async fn wait_ready(&self, c: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for base in [&self.admin, &self.element, &self.query] {
            loop {
                if let Ok(r) = c.get(format!("{base}/health/live")).send().await
                    && r.status() == 200
                {
                    break;
                }
                assert!(Instant::now() < deadline, "{base} did not come up");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
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
    let r = c.get(format!("{}/api/v1/search?q={q}", s.query)).bearer_auth(token).send().await;
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
async fn login_upload_search_and_reconcile_after_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, log) = (tmp.path().join("data"), tmp.path().join("standalone.log"));
    let ports = (support::free_port(), support::free_port(), support::free_port());
    let c = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut s = Standalone::start(&data, &log, ports);
    s.wait_ready(&c).await;
    let login: Value = c
        .post(format!("{}/api/v1/auth/token", s.admin))
        .form(&[("grant_type", "password"), ("username", "admin"), ("password", "standalone-test-pw")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let (st, _) = support::upload(&c, &s.element, &token, "first.txt", b"the archived contracts".to_vec(), &[]).await;
    assert_eq!(st, 201);
    wait_total(&c, &s, &token, "contract", 1, &log).await;

    // Uploads, then SIGKILL at once: events not yet indexed die with the process.
    for i in 0..5 {
        let (st, _) =
            support::upload(&c, &s.element, &token, &format!("d{i}.txt"), format!("omega {i}").into_bytes(), &[]).await;
        assert_eq!(st, 201);
    }
    let _ = s.child.kill();
    let _ = s.child.wait();
    drop(s);
    let s = Standalone::start(&data, &log, ports);
    s.wait_ready(&c).await;
    let token = login["access_token"].as_str().unwrap();
    wait_total(&c, &s, token, "omega", 5, &log).await;
    wait_total(&c, &s, token, "contract", 1, &log).await;
}
