//! Start-up recovery from hand-made crash states: each test stops "between" two steps of
//! the write protocol by writing the files a crash would leave, then reopens the element.

mod common;

use artstore_storage_element::layout::{self, Layout};
use artstore_storage_element::wal::{Intent, Wal, WalOp};
use common::Harness;
use serde_json::Value;

fn wal_intent(root: &std::path::Path, op: WalOp, file_id: uuid::Uuid, revision: u64, sidecar: &str) {
    let rt = tokio::runtime::Handle::current();
    let replay = artstore_storage_element::wal::replay(&root.join("wal")).unwrap();
    let wal = Wal::open(&root.join("wal"), replay.next_seq).unwrap();
    tokio::task::block_in_place(|| {
        rt.block_on(wal.intent(Intent {
            op,
            file_id,
            revision,
            sidecar: sidecar.to_owned(),
            at: chrono::Utc::now(),
            actor: "crash-test".into(),
            action: String::new(),
        }))
        .unwrap()
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn content_without_sidecar_is_rolled_back() {
    let tmp = tempfile::tempdir().unwrap();
    Harness::open(tmp.path(), |_| {}).await.close().await;
    let root = tmp.path().join("element");
    // Crash after step 3 (content renamed into data/) and before step 4 (sidecar).
    let id = layout::new_file_id(chrono::Utc::now());
    let name = layout::stored_name("half.txt", id);
    let day = root.join(Layout::day_dir_rel(id));
    std::fs::create_dir_all(&day).unwrap();
    std::fs::write(day.join(&name), b"never acknowledged").unwrap();
    std::fs::write(root.join("tmp/abc.upload.tmp"), b"partial upload").unwrap();
    let rel = Layout::day_dir_rel(id).join(format!("{name}.attr.json"));
    wal_intent(&root, WalOp::Create, id, 1, rel.to_str().unwrap());

    let h = Harness::open(tmp.path(), |_| {}).await;
    assert!(h.files_under("data").is_empty(), "{:?}", h.files_under("data"));
    assert!(h.files_under("tmp").is_empty());
    assert_eq!(h.get(&format!("/api/v1/files/{id}")).await.status, 404);
    // The intent is resolved: a second start finds nothing to do.
    h.close().await;
    let replay = artstore_storage_element::wal::replay(&root.join("wal")).unwrap();
    assert!(replay.unresolved.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_committed_sidecar_is_completed_and_audited_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("element");
    let h = Harness::open(tmp.path(), |_| {}).await;
    let sc = h.upload("kept.txt", b"acknowledged", &[]).await;
    h.close().await;
    let id: uuid::Uuid = sc["file_id"].as_str().unwrap().parse().unwrap();
    // Crash after the sidecar rename of a delete (step 4) but before the content went:
    // write the tombstone as the engine would have, leave the content in place.
    let name = sc["stored_name"].as_str().unwrap();
    let day = root.join(Layout::day_dir_rel(id));
    let mut tomb: Value = sc.clone();
    tomb["revision"] = 2.into();
    tomb["state"] = "deleted".into();
    tomb["content"] = serde_json::json!({"location": "none"});
    tomb["tombstone"] = serde_json::json!({"at": chrono::Utc::now(), "by": "crash-test", "reason": "deleted"});
    let sidecar_rel = Layout::day_dir_rel(id).join(format!("{name}.attr.json"));
    wal_intent(&root, WalOp::Delete, id, 2, sidecar_rel.to_str().unwrap());
    let mut bytes = serde_json::to_vec_pretty(&tomb).unwrap();
    bytes.push(b'\n');
    std::fs::write(day.join(format!("{name}.attr.json")), &bytes).unwrap();
    assert!(std::fs::metadata(day.join(name)).is_ok());

    let h = Harness::open(tmp.path(), |_| {}).await;
    assert!(std::fs::metadata(day.join(name)).is_err(), "content of a committed delete is removed");
    assert_eq!(h.get(&format!("/api/v1/files/{id}")).await.json()["state"], "deleted");
    let report = artstore_storage_element::audit::verify(&root, &|_| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let journal = std::fs::read_to_string(root.join("audit/journal.jsonl")).unwrap();
    assert_eq!(journal.lines().filter(|l| l.contains("\"recovered\":true")).count(), 1);
    h.close().await;
    // A second start does not audit it again.
    Harness::open(tmp.path(), |_| {}).await.close().await;
    let journal = std::fs::read_to_string(root.join("audit/journal.jsonl")).unwrap();
    assert_eq!(journal.lines().filter(|l| l.contains("\"recovered\":true")).count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_torn_audit_line_is_cut_and_the_chain_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("element");
    let h = Harness::open(tmp.path(), |_| {}).await;
    h.upload("a.txt", b"a", &[]).await;
    h.close().await;
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().append(true).open(root.join("audit/journal.jsonl")).unwrap();
    f.write_all(br#"{"seq":2,"at":"2026-"#).unwrap();
    drop(f);
    let h = Harness::open(tmp.path(), |_| {}).await;
    h.upload("b.txt", b"b", &[]).await;
    h.store.settle().await;
    let report = artstore_storage_element::audit::verify(&root, &|_| {}).unwrap();
    assert_eq!(report.lines, 2);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Every checked-in sidecar of every released schema version still parses, and a rewrite
/// keeps every field, known or not.
#[test]
fn released_sidecar_fixtures_keep_parsing() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut n = 0;
    for version in std::fs::read_dir(&dir).unwrap() {
        for f in std::fs::read_dir(version.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let sc = artstore_storage_element::Sidecar::parse(&bytes, &path).unwrap_or_else(|e| panic!("{e}"));
            let original: Value = serde_json::from_slice(&bytes).unwrap();
            let rewritten: Value = serde_json::from_slice(&sc.to_bytes()).unwrap();
            assert_eq!(original, rewritten, "{}", path.display());
            n += 1;
        }
    }
    assert!(n >= 3);
}
