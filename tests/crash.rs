//! Durability by kill -9: several clients ingest while the real `artstore storage-element`
//! process is SIGKILLed at random moments, again and again. After every restart each
//! acknowledged document must be there with the right digest, nothing half-written may be
//! visible, and no orphan content or temp file may remain.

mod support;

use artstore_shared::auth::{JWKS_FILE, LocalSigner};
use rand::Rng as _;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{BIN, Element, sha256_hex};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

async fn upload(client: &reqwest::Client, base: &str, token: &str, name: String, body: Vec<u8>) -> Option<String> {
    match support::upload(client, base, token, &name, body, &[]).await {
        (201, v) => Some(v["file_id"].as_str()?.to_owned()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_documents_survive_sigkill() {
    let iterations: usize = std::env::var("ARTSTORE_CRASH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(25);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("element");
    let signer = LocalSigner::load_or_create(&tmp.path().join("keys")).unwrap();
    let jwks = tmp.path().join("keys").join(JWKS_FILE);
    let token = signer.issue("crash", &["writer".into()], Duration::from_secs(3600), chrono::Utc::now()).unwrap();
    let log = tmp.path().join("element.log");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    // file id -> sha256 of every acknowledged upload, across all iterations.
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let mut killed_mid_flight = 0;

    for iteration in 0..iterations {
        let mut e = Element::start(&root, &jwks, &log, &[]);
        e.wait_ready(&client).await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut clients = vec![];
        for c in 0..6 {
            let (client, base, token, acked, stop, in_flight) =
                (client.clone(), e.base.clone(), token.clone(), acked.clone(), stop.clone(), in_flight.clone());
            clients.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let size = {
                        let mut rng = rand::rng();
                        if rng.random_ratio(1, 10) {
                            rng.random_range(256 * 1024..2 * 1024 * 1024)
                        } else {
                            rng.random_range(0..64 * 1024)
                        }
                    };
                    let body: Vec<u8> =
                        (0..size).map(|i| (i as u8).wrapping_mul(31).wrapping_add(c as u8 + n as u8)).collect();
                    let sha = sha256_hex(&body);
                    in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let r = upload(&client, &base, &token, format!("c{c}-{iteration}-{n}.bin"), body).await;
                    in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    match r {
                        Some(id) => {
                            acked.lock().unwrap().insert(id, sha);
                        }
                        None => break, // the server died under us
                    }
                    n += 1;
                }
            }));
        }
        let delay = rand::rng().random_range(30..400);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            killed_mid_flight += 1;
        }
        e.kill(); // SIGKILL
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in clients {
            c.await.unwrap();
        }
    }

    // Restart once more and check everything.
    let mut e = Element::start(&root, &jwks, &log, &[]);
    e.wait_ready(&client).await;
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > iterations, "too few uploads to mean anything: {}", acked.len());
    for (id, sha) in &acked {
        let r = client.get(format!("{}/api/v1/files/{id}/content", e.base)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200, "acknowledged {id} is missing");
        assert_eq!(&sha256_hex(&r.bytes().await.unwrap()), sha, "acknowledged {id} has the wrong content");
    }
    // Everything visible is whole: every listed sidecar's content matches its digest.
    let mut listed = 0;
    for sc in support::list_all(&client, &e.base, &token, "").await {
        listed += 1;
        let id = sc["file_id"].as_str().unwrap();
        let body =
            client.get(format!("{}/api/v1/files/{id}/content", e.base)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(body.status(), 200);
        assert_eq!(sha256_hex(&body.bytes().await.unwrap()), sc["sha256"].as_str().unwrap(), "{id} is half-written");
    }
    assert!(listed >= acked.len());
    // No orphans: tmp/ is empty and every content file has its sidecar.
    assert!(files(&root.join("tmp")).is_empty(), "temp files left: {:?}", files(&root.join("tmp")));
    let data = files(&root.join("data"));
    for f in &data {
        let name = f.to_string_lossy();
        if !name.ends_with(".attr.json") {
            assert!(std::fs::metadata(format!("{name}.attr.json")).is_ok(), "orphan content {name}");
        }
        assert!(!name.ends_with(".tmp"), "temp file in data: {name}");
    }
    e.kill();

    // The maintenance verbs agree: every digest matches, the audit chain is whole.
    let verify = Command::new(BIN).args(["storage-element", "verify", "--data"]).arg(&root).output().unwrap();
    assert!(verify.status.success(), "verify: {}", String::from_utf8_lossy(&verify.stdout));
    let audit = Command::new(BIN).args(["storage-element", "verify-audit", "--data"]).arg(&root).output().unwrap();
    assert!(audit.status.success(), "verify-audit: {}", String::from_utf8_lossy(&audit.stdout));
    println!(
        "{iterations} SIGKILLs ({killed_mid_flight} with uploads in flight), {} acknowledged documents, {listed} listed, all intact",
        acked.len()
    );
}

#[test]
fn verify_reports_damage_by_file_name_and_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("element");
    let day = root.join("data/2026/01/02");
    std::fs::create_dir_all(&day).unwrap();
    let id = "01943a4c-8000-7000-8000-000000000001";
    let sidecar = |name: &str, sha: &str, size: usize| {
        serde_json::json!({
            "schema": "artstore/sidecar/v1", "file_id": id, "document_id": id, "version": 1, "revision": 1,
            "state": "active", "original_name": name, "stored_name": format!("{name}_{id}"),
            "content_type": "text/plain", "size": size, "sha256": sha,
            "created_at": "2026-01-02T00:00:00Z", "created_by": "t", "updated_at": "2026-01-02T00:00:00Z", "updated_by": "t",
            "retention": {"mode": "none"}, "content": {"location": "hot"}
        })
    };
    std::fs::write(day.join(format!("ok_{id}")), b"fine").unwrap();
    std::fs::write(day.join(format!("ok_{id}.attr.json")), sidecar("ok", &sha256_hex(b"fine"), 4).to_string()).unwrap();
    std::fs::write(day.join(format!("rot_{id}")), b"bitrot").unwrap();
    std::fs::write(day.join(format!("rot_{id}.attr.json")), sidecar("rot", &sha256_hex(b"original"), 6).to_string())
        .unwrap();
    std::fs::write(day.join(format!("gone_{id}.attr.json")), sidecar("gone", &sha256_hex(b"x"), 1).to_string())
        .unwrap();
    let out = Command::new(BIN).args(["storage-element", "verify", "--data"]).arg(&root).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains(&format!("MISMATCH {}", day.join(format!("rot_{id}")).display())), "{text}");
    assert!(text.contains(&format!("MISSING  {}", day.join(format!("gone_{id}")).display())), "{text}");
    assert!(text.contains("verified 2 files"), "{text}");
    assert!(text.contains("1 mismatched, 1 missing"), "{text}");
}

#[test]
fn cli_errors_are_one_line_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "[storage_element]\nlisen = 1\n").unwrap();
    let out = Command::new(BIN).args(["storage-element", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&cfg.display().to_string()) && err.contains("lisen"), "{err}");
    let out = Command::new(BIN).args(["token", "--data"]).arg(tmp.path().join("nowhere")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("signing-key.pk8") && err.contains("artstore standalone"), "{err}");
    let out = Command::new(BIN).args(["config", "example"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("[storage_element]"));
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("artstore "));
}
