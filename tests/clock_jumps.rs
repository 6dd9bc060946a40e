//! Clock jumps on a storage element (a test clock: `ARTSTORE_TEST_CLOCK_FILE` offsets the
//! element process's wall clock while real time goes on): retention never ends early.
//!
//! A document whose term ends in a day survives its element's wall clock jumping two days
//! ahead — through disposition runs, a compliance delete and a SIGKILL and restart — while
//! a document whose term really ended is disposed of as usual. The jump shows on
//! `/health/ready` (the clock check degraded, the gap, the Redis reference disagreeing) and
//! on `/metrics`; once the wall clock is set right again the element is in step.

mod support;

use artstore_shared::auth::{JWKS_FILE, LocalSigner};
use chrono::Utc;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use support::Element;

const REDIS: &str = "redis://127.0.0.1:6379/13";

fn start(root: &Path, jwks: &Path, log: &Path, clock_file: &Path) -> Element {
    let extra = ["--disposition-interval-secs", "1", "--redis", REDIS, "--heartbeat-ttl-secs", "3"];
    Element::start_with_env(root, jwks, log, &extra, &[("ARTSTORE_TEST_CLOCK_FILE", clock_file)])
}

async fn ready(http: &reqwest::Client, el: &Element) -> Value {
    http.get(format!("{}/health/ready", el.base)).send().await.unwrap().json().await.unwrap()
}

/// Waits until `n` more disposition runs finished than `after`; returns the run count.
async fn runs_after(http: &reqwest::Client, el: &Element, after: u64, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = ready(http, el).await["element"]["workers"]["disposition"]["runs"].as_u64().unwrap_or(0);
        if runs >= after + n {
            return runs;
        }
        assert!(Instant::now() < deadline, "disposition runs stuck at {runs}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn state(http: &reqwest::Client, el: &Element, token: &str, id: &str) -> (u16, String) {
    let r = http.get(format!("{}/api/v1/files/{id}", el.base)).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v["state"].as_str().unwrap_or_default().to_owned())
}

async fn metric(http: &reqwest::Client, el: &Element, name: &str) -> Option<f64> {
    let text = http.get(format!("{}/metrics", el.base)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_jump_never_ends_retention_early() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = LocalSigner::load_or_create(&tmp.path().join("keys")).unwrap();
    let jwks = tmp.path().join("keys").join(JWKS_FILE);
    let token = signer.issue("ops", &["admin".into()], Duration::from_secs(900), Utc::now()).unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let (root, log, clock) = (tmp.path().join("element"), tmp.path().join("element.log"), tmp.path().join("offset"));
    std::fs::write(&clock, "0").unwrap();
    let mut el = start(&root, &jwks, &log, &clock);
    el.wait_ready(&http).await;

    let upload = |until: chrono::DateTime<Utc>, name: &'static str| {
        let (http, base, token) = (http.clone(), el.base.clone(), token.clone());
        async move {
            let until = until.to_rfc3339();
            let (status, v) = support::upload(
                &http,
                &base,
                &token,
                name,
                format!("{name} body").into_bytes(),
                &[("retention_mode", "compliance"), ("retain_until", &until), ("disposition", "dispose")],
            )
            .await;
            assert_eq!(status, 201, "{v}");
            v["file_id"].as_str().unwrap().to_owned()
        }
    };
    let day = upload(Utc::now() + chrono::Duration::days(1), "ends-in-a-day.txt").await;
    let month = upload(Utc::now() + chrono::Duration::days(30), "ends-in-a-month.txt").await;
    let soon = upload(Utc::now() + chrono::Duration::seconds(2), "ends-now.txt").await;

    // With the clock right, a term that really ended is disposed of as usual.
    let deadline = Instant::now() + Duration::from_secs(30);
    while state(&http, &el, &token, &soon).await.1 != "disposed" {
        assert!(
            Instant::now() < deadline,
            "a document whose term ended was not disposed of: {:?}",
            state(&http, &el, &token, &soon).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let health = ready(&http, &el).await;
    assert_eq!(health["element"]["retention_clock"]["in_step"], true, "{health}");

    // The element's wall clock jumps two days ahead.
    std::fs::write(&clock, (2 * 86_400).to_string()).unwrap();
    let runs = ready(&http, &el).await["element"]["workers"]["disposition"]["runs"].as_u64().unwrap();
    let runs = runs_after(&http, &el, runs, 3).await;
    for id in [&day, &month] {
        assert_eq!(state(&http, &el, &token, id).await, (200, "active".to_owned()), "{id} after the jump");
    }
    // A compliance delete is still refused: the term has not ended.
    let r = http.delete(format!("{}/api/v1/files/{day}", el.base)).bearer_auth(&token).send().await.unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert!(status == 403 || status == 409, "a compliance delete after the jump answered {status}: {v}");
    // Nothing is listed as past its term either.
    let ended = support::list_all(&http, &el.base, &token, "retention=under-retention").await;
    assert_eq!(ended.len(), 2, "both documents are still under retention: {ended:?}");

    // The jump shows: the clock check is degraded, the gap is two days, Redis disagrees.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = ready(&http, &el).await;
        let rc = &h["element"]["retention_clock"];
        let seen = rc["in_step"] == false
            && rc["gap_seconds"].as_f64().is_some_and(|g| (g - 172_800.0).abs() < 60.0)
            && rc["reference_agrees"] == false
            && rc["reference_skew_seconds"].as_f64().is_some_and(|s| (s - 172_800.0).abs() < 60.0)
            && h["checks"]["clock"]["status"] == "degraded";
        if seen {
            break;
        }
        assert!(Instant::now() < deadline, "the jump does not show on /health/ready: {h}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let gap = metric(&http, &el, "artstore_element_retention_clock_gap_seconds").await;
    assert!(gap.is_some_and(|g| g > 172_000.0), "gap metric {gap:?}");

    // SIGKILL and restart with the clock still two days ahead: still nothing ends.
    el.kill();
    let mut el = start(&root, &jwks, &log, &clock);
    el.wait_ready(&http).await;
    runs_after(&http, &el, 0, 3).await;
    for id in [&day, &month] {
        assert_eq!(state(&http, &el, &token, id).await, (200, "active".to_owned()), "{id} after a restart");
    }
    let h = ready(&http, &el).await;
    assert_eq!(h["element"]["retention_clock"]["in_step"], false, "{h}");

    // The wall clock is set right: in step again, and the documents are still there.
    std::fs::write(&clock, "0").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = ready(&http, &el).await;
        if h["element"]["retention_clock"]["in_step"] == true && h["checks"]["clock"]["status"] == "ready" {
            break;
        }
        assert!(Instant::now() < deadline, "not in step after the clock was set right: {h}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let runs2 = ready(&http, &el).await["element"]["workers"]["disposition"]["runs"].as_u64().unwrap();
    runs_after(&http, &el, runs2, 2).await;
    for id in [&day, &month] {
        assert_eq!(state(&http, &el, &token, id).await, (200, "active".to_owned()), "{id} at the end");
    }
    eprintln!("{runs} disposition runs before the restart, none disposed of a document under retention");
    el.stop();
}
