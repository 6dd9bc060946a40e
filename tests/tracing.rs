//! A W3C `traceparent` and the request id a client sends to the ingester or the query role
//! reach the storage element with the call the role makes for it, and every log line of
//! that request on each role carries them.

mod support;

use artstore_shared::auth::{JWKS_FILE, LocalSigner};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{BIN, Element};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn role(args: &[&str], log: &Path) -> Proc {
    Proc(
        Command::new(BIN)
            .args(args)
            .args(["--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(http.get(format!("{base}/health/ready")).send().await, Ok(r) if r.status() == 200) {
        assert!(Instant::now() < deadline, "{base} not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Log lines (JSON) that carry both `trace` and `request_id`.
fn lines_with(log: &Path, trace: &str, request_id: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(trace) && l.contains(request_id))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_and_request_id_follow_a_request_into_the_element() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = LocalSigner::load_or_create(&tmp.path().join("keys")).unwrap();
    let jwks = tmp.path().join("keys").join(JWKS_FILE);
    let token = signer.issue("ops", &["admin".into()], Duration::from_secs(600), chrono::Utc::now()).unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let el_log = tmp.path().join("element.log");
    let el = Element::start(&tmp.path().join("element"), &jwks, &el_log, &["--element-id", "a"]);
    el.wait_ready(&http).await;

    let ing_port = support::free_port();
    let ing_log = tmp.path().join("ingester.log");
    let ingester = format!("http://127.0.0.1:{ing_port}");
    let elements = format!("a={}", el.base);
    let data = tmp.path().join("ingester");
    let _ing = role(
        &["ingester", "--listen", &format!("127.0.0.1:{ing_port}"), "--data", data.to_str().unwrap(), "--jwks"]
            .into_iter()
            .chain([jwks.to_str().unwrap(), "--elements", &elements, "--probe-interval-ms", "200"])
            .collect::<Vec<_>>(),
        &ing_log,
    );
    wait_ready(&http, &ingester).await;

    // An upload through the ingester, with the client's trace and request id.
    let deadline = Instant::now() + Duration::from_secs(20);
    let file_id = loop {
        let r = http
            .post(format!("{ingester}/api/v1/files"))
            .bearer_auth(&token)
            .header("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01"))
            .header("x-request-id", "upload-req-1")
            .multipart(
                reqwest::multipart::Form::new()
                    .part("file", reqwest::multipart::Part::bytes(b"traced bytes".to_vec()).file_name("t.txt")),
            )
            .send()
            .await
            .unwrap();
        if r.status() == 201 {
            let v: serde_json::Value = r.json().await.unwrap();
            break v["file_id"].as_str().unwrap().to_owned();
        }
        // The ingester may not have probed the element yet.
        assert!(Instant::now() < deadline, "upload: {} {}", r.status(), r.text().await.unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A write on the document, forwarded by the ingester.
    let r = http
        .patch(format!("{ingester}/api/v1/files/{file_id}"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{TRACE}-1111111111111111-01"))
        .header("x-request-id", "patch-req-2")
        .json(&serde_json::json!({"description": "traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A read through the query role.
    let q_port = support::free_port();
    let q_log = tmp.path().join("query.log");
    let query = format!("http://127.0.0.1:{q_port}");
    let index = tmp.path().join("index");
    let _q = role(
        &["query", "--listen", &format!("127.0.0.1:{q_port}"), "--index", index.to_str().unwrap(), "--jwks"]
            .into_iter()
            .chain([jwks.to_str().unwrap(), "--elements", &elements, "--service-token", &token])
            .collect::<Vec<_>>(),
        &q_log,
    );
    wait_ready(&http, &query).await;
    let r = http
        .get(format!("{query}/api/v1/files/{file_id}/content"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{TRACE}-2222222222222222-01"))
        .header("x-request-id", "read-req-3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "traced bytes");

    // Each request shows on the role the client called and on the element, under the same
    // trace id and request id.
    let deadline = Instant::now() + Duration::from_secs(10);
    for (front_log, rid) in [(&ing_log, "upload-req-1"), (&ing_log, "patch-req-2"), (&q_log, "read-req-3")] {
        loop {
            let (front, element) = (lines_with(front_log, TRACE, rid), lines_with(&el_log, TRACE, rid));
            if !front.is_empty() && !element.is_empty() {
                // The element's span is a child: its parent is the calling role's span, not
                // the client's.
                assert!(element.iter().all(|l| !l.contains("\"span_id\":\"00f067aa0ba902b7\"")), "{element:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{rid}: no log line with trace {TRACE} on the front role ({}) or the element ({})",
                front.len(),
                element.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A request without a traceparent still gets a trace id of its own in its lines.
    let r = http.get(format!("{}/api/v1/files/{file_id}", el.base)).bearer_auth(&token).send().await.unwrap();
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&el_log).unwrap();
    let line = log.lines().find(|l| l.contains(&rid)).expect("a log line of the untraced request");
    assert!(line.contains("\"trace_id\":\""), "{line}");
}
