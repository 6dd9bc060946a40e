//! A storage element whose disk fills up (its data folder on an 8 MiB tmpfs): uploads are
//! refused with 507 problem+json and nothing half-written stays behind, reads and metadata
//! changes go on, the ingester places new uploads on the other element, and once space is
//! freed the element takes writes again.

mod support;

use artstore_shared::auth::{JWKS_FILE, LocalSigner};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{BIN, Element};

/// An 8 MiB tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` where this user may not mount (then the test cannot run; in CI that fails).
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_owned())),
            Ok(o) => {
                let why = String::from_utf8_lossy(&o.stderr).into_owned();
                assert!(std::env::var_os("CI").is_none(), "cannot mount a tmpfs in CI (run as root): {why}");
                eprintln!("skipped: cannot mount a tmpfs here ({why}); the test needs root");
                None
            }
            Err(e) => panic!("mount: {e}"),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn megabyte(seed: u8) -> Vec<u8> {
    (0..1 << 20).map(|i: u32| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_element_refuses_with_507_keeps_serving_and_resumes_when_space_is_freed() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_fs) = Tmpfs::mount(&tmp.path().join("small"), "8m") else { return };
    let small = tmp.path().join("small");
    let signer = LocalSigner::load_or_create(&tmp.path().join("keys")).unwrap();
    let jwks = tmp.path().join("keys").join(JWKS_FILE);
    let token = signer.issue("ops", &["admin".into()], Duration::from_secs(600), chrono::Utc::now()).unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    // Element a on the tmpfs keeps 2 MiB free; b has room.
    let a = Element::start(&small.join("element"), &jwks, &tmp.path().join("a.log"), &["--min-free-bytes", "2097152"]);
    let b = Element::start(&tmp.path().join("b"), &jwks, &tmp.path().join("b.log"), &[]);
    a.wait_ready(&http).await;
    b.wait_ready(&http).await;
    // Someone else's 2 MiB on the same file system, to be freed later.
    let filler = small.join("filler.bin");
    std::fs::write(&filler, vec![0u8; 2 << 20]).unwrap();

    // Fill a, one MiB at a time, until it refuses.
    let mut stored: Vec<(String, Vec<u8>)> = Vec::new();
    let refusal = loop {
        let body = megabyte(stored.len() as u8);
        let (status, v) = support::upload(&http, &a.base, &token, "mb.bin", body.clone(), &[]).await;
        match status {
            201 => stored.push((v["file_id"].as_str().unwrap().to_owned(), body)),
            507 => break v,
            other => panic!("upload to a nearly full element: {other} {v}"),
        }
        assert!(stored.len() < 8, "an 8 MiB file system took {} MiB", stored.len());
    };
    assert!(!stored.is_empty(), "the element refused even the first upload");
    assert_eq!(refusal["type"], "https://artstore.dev/problems/insufficient-storage", "{refusal}");
    assert_eq!(refusal["status"], 507);
    eprintln!("{} MiB stored before the refusal: {}", stored.len(), refusal["detail"]);
    // A refusal with the content type checked too.
    let r = http
        .post(format!("{}/api/v1/files", a.base))
        .bearer_auth(&token)
        .multipart(
            reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(megabyte(9)).file_name("x")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    // Nothing half-written: no temp file, the listing holds exactly the stored documents.
    let leftovers = support::tmp_leftovers(&small.join("element")).await;
    assert!(leftovers.is_empty(), "temp files left after refusals: {leftovers:?}");
    let listed = support::list_all(&http, &a.base, &token, "").await;
    let mut ids: Vec<&str> = listed.iter().filter_map(|s| s["file_id"].as_str()).collect();
    ids.sort();
    let mut want: Vec<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
    want.sort();
    assert_eq!(ids, want);

    // Reads and metadata go on.
    for (id, body) in &stored {
        let r = http.get(format!("{}/api/v1/files/{id}/content", a.base)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), body.as_slice());
    }
    let r = http
        .patch(format!("{}/api/v1/files/{}", a.base, stored[0].0))
        .bearer_auth(&token)
        .json(&json!({"description": "kept while the disk is full", "tags": ["full"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // The ingester sends new uploads to b.
    let port = support::free_port();
    let ing = Proc(
        Command::new(BIN)
            .args(["ingester", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(tmp.path().join("ingester"))
            .arg("--jwks")
            .arg(&jwks)
            .args(["--elements", &format!("a={},b={}", a.base, b.base), "--probe-interval-ms", "200"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("ingester.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let ingester = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = match http.get(format!("{ingester}/health/ready")).send().await {
            Ok(r) => r.json::<Value>().await.unwrap_or_default()["elements_up"].as_u64().unwrap_or(0),
            Err(_) => 0,
        };
        if up == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the ingester does not see both elements");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..4 {
        let (status, v) = support::upload(&http, &ingester, &token, "via.bin", megabyte(40 + i), &[]).await;
        assert_eq!(status, 201, "upload through the ingester while a is full: {v}");
        assert_eq!(v["element_id"], "b", "{v}");
    }

    // Space freed: a takes writes again.
    std::fs::remove_file(&filler).unwrap();
    let (status, v) = support::upload(&http, &a.base, &token, "after.bin", megabyte(77), &[]).await;
    assert_eq!(status, 201, "after freeing space: {v}");

    // Every stored document is whole (digests recomputed from the files).
    drop(ing);
    drop(a);
    let out =
        Command::new(BIN).args(["storage-element", "verify", "--data"]).arg(small.join("element")).output().unwrap();
    assert!(
        out.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
