//! `rebuild-cache` killed half-way goes on from its checkpoint when run again, and the
//! result equals a clean rebuild.

mod support;

use artstore_storage_element::pg::testing;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

async fn rows(url: &str) -> Vec<(uuid::Uuid, i64, String)> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let r = sqlx::query_as("SELECT file_id, revision, doc::text FROM sidecars ORDER BY file_id")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    r
}

async fn progress(url: &str) -> Option<i64> {
    let pool = sqlx::PgPool::connect(url).await.ok()?;
    let r: Option<(i64,)> =
        sqlx::query_as("SELECT documents FROM rebuild_progress").fetch_optional(&pool).await.ok()?;
    pool.close().await;
    r.map(|(n,)| n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_rebuild_resumes_and_equals_a_clean_one() {
    const DOCS: u64 = 60_000;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("element");
    let cfg = artstore_storage_element::StoreConfig::new(&root);
    artstore_storage_element::Store::identity(&cfg, &artstore_shared::SystemClock).unwrap();
    artstore_storage_element::synthetic::write_store(&root, DOCS, 700).unwrap();
    // A corrupt sidecar is reported and skipped, never fatal.
    let day = root.join("data/2015/01/03");
    std::fs::write(day.join("broken_0193.attr.json"), b"{ torn").unwrap();

    let (interrupted, clean) = (testing::fresh_database().await, testing::fresh_database().await);
    let mut child = Command::new(support::BIN)
        .args(["storage-element", "rebuild-cache", "--data"])
        .arg(&root)
        .args(["--cache", &interrupted])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done_before_kill = loop {
        if let Some(n) = progress(&interrupted).await
            && n > 0
        {
            break n;
        }
        assert!(child.try_wait().unwrap().is_none(), "the rebuild finished before it could be killed");
        assert!(Instant::now() < deadline, "the rebuild made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = progress(&interrupted).await.expect("the progress row survives the kill");
    assert!(at_kill >= done_before_kill && (at_kill as u64) < DOCS, "killed at {at_kill}");

    let run = |url: &str| {
        let out = Command::new(support::BIN)
            .args(["storage-element", "rebuild-cache", "--data"])
            .arg(&root)
            .args(["--cache", url])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let resumed = run(&interrupted);
    assert!(resumed.contains("resumed an interrupted rebuild after data/"), "{resumed}");
    let resumed_docs: u64 = resumed.split(" documents,").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(
        resumed_docs,
        DOCS - at_kill as u64,
        "it went on from the checkpoint instead of starting over: {resumed}"
    );
    let fresh = run(&clean);
    assert!(fresh.contains("UNREADABLE data/2015/01/03/broken_0193.attr.json"), "{fresh}");
    assert!(fresh.contains("1 unreadable sidecars skipped"), "{fresh}");
    assert!(fresh.contains(&format!("{DOCS} documents")), "{fresh}");
    assert!(progress(&interrupted).await.is_none(), "a finished rebuild leaves no progress row");
    let (a, b) = (rows(&interrupted).await, rows(&clean).await);
    assert_eq!(a.len() as u64, DOCS);
    assert!(a == b, "the resumed rebuild differs from a clean one");
    testing::drop_database(&interrupted).await;
    testing::drop_database(&clean).await;
}
