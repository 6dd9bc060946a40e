//! The background scrub on a running element: it re-reads every content file, finds a file
//! whose bytes changed behind the element's back and one that went missing, says so on
//! `/health/ready` and `/metrics`, remembers them across a SIGKILL, and clears them once the
//! files are put back from a backup.

mod support;

use artstore_shared::auth::{JWKS_FILE, LocalSigner};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::Element;

fn start(root: &Path, jwks: &Path, log: &Path) -> Element {
    Element::start(root, jwks, log, &["--scrub-interval-secs", "1", "--scrub-bytes-per-sec", "0"])
}

async fn scrub(http: &reqwest::Client, el: &Element) -> (u16, Value) {
    let r = http.get(format!("{}/health/ready", el.base)).send().await.unwrap();
    let code = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    (code, v["element"]["workers"]["scrub"].clone())
}

/// Waits for a pass that started after now to finish; returns the scrub block.
async fn next_pass(http: &reqwest::Client, el: &Element) -> Value {
    let since = chrono::Utc::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, s) = scrub(http, el).await;
        let started =
            s["last_pass"]["started_at"].as_str().and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok());
        if started.is_some_and(|t| t > since) && s["last_pass"]["checked"].as_u64().unwrap_or(0) > 0 {
            return s;
        }
        assert!(Instant::now() < deadline, "no scrub pass finished: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn metric(http: &reqwest::Client, el: &Element, name: &str) -> Option<f64> {
    let text = http.get(format!("{}/metrics", el.base)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
}

/// Waits until a metric reads `want` (the series are refreshed every two seconds).
async fn wait_metric(http: &reqwest::Client, el: &Element, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = metric(http, el, name).await;
        if got == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} is {got:?}, not {want}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn content_file(root: &Path, stored_name: &str) -> PathBuf {
    fn find(dir: &Path, name: &str) -> Option<PathBuf> {
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                if let Some(found) = find(&p, name) {
                    return Some(found);
                }
            } else if e.file_name().to_string_lossy() == name {
                return Some(p);
            }
        }
        None
    }
    find(&root.join("data"), stored_name).unwrap_or_else(|| panic!("{stored_name} not under {}", root.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrub_finds_damaged_and_missing_files_and_clears_them_when_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = LocalSigner::load_or_create(&tmp.path().join("keys")).unwrap();
    let jwks = tmp.path().join("keys").join(JWKS_FILE);
    let token = signer.issue("ops", &["admin".into()], Duration::from_secs(900), chrono::Utc::now()).unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let (root, log) = (tmp.path().join("element"), tmp.path().join("element.log"));
    let mut el = start(&root, &jwks, &log);
    el.wait_ready(&http).await;

    let mut docs = vec![];
    for i in 0..6u32 {
        let body = format!("record {i} ").repeat(2000).into_bytes();
        let (status, v) = support::upload(&http, &el.base, &token, &format!("r{i}.txt"), body.clone(), &[]).await;
        assert_eq!(status, 201, "{v}");
        docs.push((content_file(&root, v["stored_name"].as_str().unwrap()), body));
    }
    let s = next_pass(&http, &el).await;
    assert_eq!((s["status"].as_str(), s["problems_count"].as_u64()), (Some("ok"), Some(0)), "{s}");
    assert_eq!(s["last_pass"]["checked"], 6, "{s}");

    // Bit rot in one file (same size), another file gone.
    let (rotten, missing) = (&docs[1], &docs[4]);
    let mut bytes = rotten.1.clone();
    bytes[100] ^= 0x20;
    std::fs::write(&rotten.0, &bytes).unwrap();
    std::fs::remove_file(&missing.0).unwrap();
    let s = next_pass(&http, &el).await;
    assert_eq!(s["problems_count"], 2, "{s}");
    assert_eq!(s["status"], "degraded", "{s}");
    let listed: Vec<String> =
        s["problems"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap().to_owned()).collect();
    assert!(
        listed.contains(&rotten.0.display().to_string()) && listed.contains(&missing.0.display().to_string()),
        "{s}"
    );
    let reasons = s["problems"].to_string();
    assert!(reasons.contains("sha-256 is") && reasons.contains("missing"), "{s}");
    assert!(s["reason"].as_str().unwrap().starts_with("2 damaged files found by the scrub"), "{s}");
    wait_metric(&http, &el, "artstore_element_scrub_problems", 2.0).await;
    assert!(metric(&http, &el, "artstore_element_scrub_passes_total").await.is_some_and(|n| n >= 2.0));
    // The element stays ready: reads of the other documents go on.
    assert_eq!(scrub(&http, &el).await.0, 200);

    // What the scrub found survives a SIGKILL: known at once after the restart.
    el.kill();
    let mut el = start(&root, &jwks, &log);
    el.wait_ready(&http).await;
    let (_, s) = scrub(&http, &el).await;
    assert_eq!(s["problems_count"], 2, "after a restart: {s}");

    // Restored from a backup: the next pass clears them.
    std::fs::write(&rotten.0, &rotten.1).unwrap();
    std::fs::write(&missing.0, &missing.1).unwrap();
    let s = next_pass(&http, &el).await;
    assert_eq!((s["status"].as_str(), s["problems_count"].as_u64()), (Some("ok"), Some(0)), "{s}");
    wait_metric(&http, &el, "artstore_element_scrub_problems", 0.0).await;
    el.stop();
}
