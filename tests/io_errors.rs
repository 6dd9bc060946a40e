//! A storage element whose disk starts failing fsyncs (injected through the element's
//! file-system seam, `ARTSTORE_FAULT_FSYNC_AFTER`): it acknowledges nothing that is not
//! durable, refuses every later write with 503, says why on `/health/ready`, keeps serving
//! reads, and after a restart on a healthy disk holds every acknowledged document.

mod support;

use artstore_shared::auth::{JWKS_FILE, LocalSigner};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{BIN, Element};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_fsyncs_stop_writes_and_lose_no_acknowledged_document() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = LocalSigner::load_or_create(&tmp.path().join("keys")).unwrap();
    let jwks = tmp.path().join("keys").join(JWKS_FILE);
    let token = signer.issue("ops", &["admin".into()], Duration::from_secs(600), chrono::Utc::now()).unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let root = tmp.path().join("element");
    let log = tmp.path().join("element.log");

    // Start-up takes some fsyncs; the disk fails a few dozen later.
    let mut el = {
        let port = support::free_port();
        let child = Command::new(BIN)
            .args(["storage-element", "--data"])
            .arg(&root)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--jwks"])
            .arg(&jwks)
            .args(["--log-format", "json"])
            .env("ARTSTORE_FAULT_FSYNC_AFTER", "60")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Element { child, base: format!("http://127.0.0.1:{port}") }
    };
    el.wait_ready(&http).await;

    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    let mut first_failure = None;
    for i in 0..200u32 {
        let body = format!("document {i} ").repeat(100).into_bytes();
        let (status, v) = support::upload(&http, &el.base, &token, "d.txt", body.clone(), &[]).await;
        match status {
            201 => acked.push((v["file_id"].as_str().unwrap().to_owned(), body)),
            _ => {
                first_failure = Some((status, v));
                break;
            }
        }
    }
    let (status, problem) = first_failure.expect("the injected failure never hit an upload");
    assert!(!acked.is_empty(), "no upload succeeded before the failure");
    assert!(status == 500 || status == 503, "the failing upload: {status} {problem}");
    eprintln!("{} uploads acknowledged, then {status}: {}", acked.len(), problem["detail"]);

    // Every later write is refused with 503, saying why.
    let (status, v) = support::upload(&http, &el.base, &token, "later.txt", b"later".to_vec(), &[]).await;
    assert_eq!(status, 503, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("refuses writes until restarted"), "{v}");
    // /health/ready is not ready and names the failure.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http.get(format!("{}/health/ready", el.base)).send().await.unwrap();
        let (code, body): (u16, Value) = (r.status().as_u16(), r.json().await.unwrap());
        if code == 503 {
            let reason = body["checks"]["store"]["reason"].as_str().unwrap_or_default().to_owned();
            assert!(reason.contains("fsync failed") || reason.contains("journal write failed"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "/health/ready still says {code}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Reads go on.
    for (id, body) in &acked {
        let r = http.get(format!("{}/api/v1/files/{id}/content", el.base)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), body.as_slice());
    }

    // Restart on a healthy disk (no injection; SIGKILL, as a crash would): every
    // acknowledged document is there, whole, and writes work again.
    el.kill();
    let el = Element::start(&root, &jwks, &tmp.path().join("element2.log"), &[]);
    el.wait_ready(&http).await;
    let listed = support::list_all(&http, &el.base, &token, "").await;
    for (id, body) in &acked {
        assert!(listed.iter().any(|s| s["file_id"] == id.as_str()), "acknowledged {id} is gone after restart");
        let r = http.get(format!("{}/api/v1/files/{id}/content", el.base)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), body.as_slice(), "{id}");
    }
    let (status, v) = support::upload(&http, &el.base, &token, "after.txt", b"after".to_vec(), &[]).await;
    assert_eq!(status, 201, "{v}");
    drop(el);
    let out = Command::new(BIN).args(["storage-element", "verify", "--data"]).arg(&root).output().unwrap();
    assert!(out.status.success(), "verify: {}", String::from_utf8_lossy(&out.stdout));
}
