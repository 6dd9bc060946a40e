//! The audit chain as history grows: a million entries through the state machine (restart
//! time, snapshot size, memory and `verify-audit` time reported, and a follower that
//! installs the snapshot and fetches the million entries), a follower of a running cluster
//! that was down installing a snapshot and fetching the chain it lacks over HTTP, and a data
//! folder of the format before the segments migrated on start.

mod support;

use artstore_admin::audit_log::{AUDIT_DIR, list_segments};
use artstore_admin::sm::StateMachine;
use artstore_admin::state::{AuditEntry, Op, Policy, SigningKey, User};
use artstore_admin::types::{Entry, LogId, Request};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use openraft::storage::{RaftSnapshotBuilder as _, RaftStateMachine as _};
use openraft::{CommittedLeaderId, EntryPayload};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn entry(index: u64, op: Op, at: DateTime<Utc>) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request { actor: "admin".into(), from: None, at, op }),
    }
}

fn bootstrap(at: DateTime<Utc>) -> Op {
    let rng = ring::rand::SystemRandom::new();
    let audit = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let admin = User {
        username: "admin".into(),
        password_hash: "x".into(),
        roles: vec!["admin".into()],
        disabled: false,
        created_at: at,
        updated_at: at,
    };
    let key = SigningKey { kid: "k1".into(), pkcs8: String::new(), created_at: at, retired_at: None };
    Op::Bootstrap { audit_key: base64::engine::general_purpose::STANDARD.encode(audit.as_ref()), admin, key }
}

/// A million changes (set by `ARTSTORE_HISTORY_ENTRIES`) that grow the history but not the
/// live state: the snapshot stays the size of the live state, a restart does not read the
/// history, memory does not hold it, and the whole chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_changes_of_history_leave_snapshots_and_restarts_small() {
    let n: u64 = std::env::var("ARTSTORE_HISTORY_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
    let rss_before = rss_kib();
    let mut sm = StateMachine::open(&state_dir, artstore_admin::audit_log::DEFAULT_PER_SEGMENT).unwrap();
    let policy = Policy {
        name: "mail".into(),
        term: "P1Y".into(),
        mode: "governance".into(),
        disposition: "dispose".into(),
        description: String::new(),
        in_use: false,
        created_at: t0,
        updated_at: t0,
    };
    sm.apply(vec![entry(1, bootstrap(t0), t0), entry(2, Op::CreatePolicy { policy }, t0)]).await.unwrap();

    let started = Instant::now();
    let mut index = 2;
    let batch = 1000;
    while index < n + 2 {
        let upto = (index + batch).min(n + 2);
        let entries: Vec<Entry> = (index + 1..=upto)
            .map(|i| {
                let at = t0 + chrono::Duration::milliseconds(i as i64);
                let op = Op::UpdatePolicy {
                    name: "mail".into(),
                    term: None,
                    mode: None,
                    disposition: None,
                    description: Some(format!("revision {i}")),
                };
                entry(i, op, at)
            })
            .collect();
        sm.apply(entries).await.unwrap();
        index = upto;
    }
    let applied_in = started.elapsed();
    let rss_after = rss_kib();
    assert_eq!(sm.audit_written().seq, n + 2);
    assert_eq!(sm.read(|d| d.state.audit_head.clone()), sm.audit_written());

    let t = Instant::now();
    let mut builder = sm.get_snapshot_builder().await;
    let snap = builder.build_snapshot().await.unwrap();
    let snapshot_in = t.elapsed();
    let snapshot_bytes = snap.snapshot.get_ref().len();
    assert!(snapshot_bytes < 16 << 10, "the snapshot holds the live state only: {snapshot_bytes} bytes");

    let t = Instant::now();
    let tail = sm.read_audit(n - 98, 100).unwrap();
    let tail_in = t.elapsed();
    assert_eq!(tail.len(), 100);
    assert_eq!(tail.last().map(|e| e.seq), Some(n + 2));

    drop(sm);
    let t = Instant::now();
    let mut reopened = StateMachine::open(&state_dir, artstore_admin::audit_log::DEFAULT_PER_SEGMENT).unwrap();
    let reopen_in = t.elapsed();
    assert_eq!(reopened.audit_written().seq, n + 2);
    assert_eq!(reopened.read(|d| d.state.audit_head.seq), n + 2);
    assert_eq!(reopened.read(|d| d.state.policies["mail"].description.clone()), format!("revision {}", n + 2));

    let t = Instant::now();
    let report = artstore_admin::verify::verify_audit(dir.path(), None).unwrap();
    let verify_in = t.elapsed();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.entries, n + 2);

    // A follower that was down the whole time installs the snapshot and fetches the chain
    // page by page, as a node does from a peer (`GET /raft/audit` answers `read_audit`).
    let follower_dir = dir.path().join("follower").join("state");
    let mut follower = StateMachine::open(&follower_dir, artstore_admin::audit_log::DEFAULT_PER_SEGMENT).unwrap();
    let snap = reopened.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let t = Instant::now();
    follower.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
    let mut pages = 0;
    while let Some((have, _)) = follower.audit_gap() {
        let page = reopened.read_audit(have, artstore_admin::network::AUDIT_PAGE).unwrap();
        assert!(follower.fill_audit(&page).unwrap() > 0, "page after {have} did not link");
        pages += 1;
    }
    let fetched_in = t.elapsed();
    assert_eq!(follower.audit_written(), reopened.audit_written());
    let ours = list_segments(&state_dir.join(AUDIT_DIR)).unwrap();
    let theirs = list_segments(&follower_dir.join(AUDIT_DIR)).unwrap();
    assert_eq!(ours.iter().map(|(f, _)| *f).collect::<Vec<_>>(), theirs.iter().map(|(f, _)| *f).collect::<Vec<_>>());
    for ((_, a), (_, b)) in ours.iter().zip(&theirs) {
        assert!(std::fs::read(a).unwrap() == std::fs::read(b).unwrap(), "{} differs from {}", b.display(), a.display());
    }

    let segments = list_segments(&state_dir.join(AUDIT_DIR)).unwrap().len();
    let on_disk: u64 = list_segments(&state_dir.join(AUDIT_DIR))
        .unwrap()
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    eprintln!(
        "history of {} entries: applied in {:.1} s ({:.0}/s); chain {} segments, {:.1} MiB; snapshot {} bytes built in {:?}; \
         last page read in {:?}; reopened in {:?}; verify-audit {:.1} s; RSS {} MiB → {} MiB; \
         a follower installed the snapshot and fetched the chain in {pages} pages, {:.1} s, identical",
        n + 2,
        applied_in.as_secs_f64(),
        n as f64 / applied_in.as_secs_f64(),
        segments,
        on_disk as f64 / (1 << 20) as f64,
        snapshot_bytes,
        snapshot_in,
        tail_in,
        reopen_in,
        verify_in.as_secs_f64(),
        rss_before / 1024,
        rss_after / 1024,
        fetched_in.as_secs_f64()
    );
    // Memory does not hold the chain: far less than its size on disk.
    assert!((rss_after.saturating_sub(rss_before) << 10) < on_disk / 4, "RSS grew with the history");
}

async fn patch_json(base: &str, path: &str, token: &str, body: Value) -> u16 {
    http().patch(format!("{base}{path}")).bearer_auth(token).json(&body).send().await.unwrap().status().as_u16()
}

async fn chain(base: &str, token: &str) -> Vec<AuditEntry> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let (status, v) = get_json(base, &format!("/api/v1/audit?after={after}&limit=1000"), token).await;
        assert_eq!(status, 200, "{v}");
        let items: Vec<AuditEntry> = serde_json::from_value(v["items"].clone()).unwrap();
        out.extend(items);
        match v["next_after"].as_u64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}

/// A follower down while the leader compacted its log comes back through a snapshot, which
/// no longer carries the chain: it fetches the entries it lacks and ends with the identical
/// chain, segment rotations included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_that_was_down_installs_a_snapshot_and_fetches_the_chain() {
    let mut c = Cluster::start(3, |cfg| {
        cfg.raft_snapshot_every = 100;
        cfg.audit_segment_entries = 64;
    })
    .await;
    let leader = c.leader_among(&[1, 2, 3]).await;
    let follower = if leader == 3 { 2 } else { 3 };
    let base = c.url(leader);
    let token = admin_token(&base).await;
    let down_at = c.applied(follower);
    c.nodes.get_mut(&follower).unwrap().stop().await;

    assert_eq!(post_json(&base, "/api/v1/retention-policies", &token, policy("mail")).await.status(), 201);
    let writes = 600;
    for chunk in (0..writes).collect::<Vec<u32>>().chunks(8) {
        let calls = chunk.iter().map(|i| {
            patch_json(&base, "/api/v1/retention-policies/mail", &token, json!({"description": format!("rev {i}")}))
        });
        for status in futures_util::future::join_all(calls).await {
            assert_eq!(status, 200);
        }
    }
    let purged = c.nodes[&leader].node.log.last_purged().map_or(0, |l| l.index);
    assert!(purged > down_at, "the leader compacted past the follower (purged {purged}, follower at {down_at})");

    c.restart(follower).await;
    let want = c.nodes[&leader].node.read(|s| s.audit_head.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.nodes[&follower].node.sm.audit_written() != want {
        assert!(
            Instant::now() < deadline,
            "the follower's chain stopped at {:?}, the leader's is at {want:?}",
            c.nodes[&follower].node.sm.audit_written()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        c.nodes[&follower].node.log.last_purged().is_some(),
        "the follower came back through a snapshot, not through the log"
    );
    let theirs = chain(&c.url(follower), &token).await;
    assert_eq!(theirs.len() as u64, want.seq);
    assert_eq!(theirs, chain(&base, &token).await, "identical chains, link for link");

    let data = c.dir.path().join(format!("node{follower}"));
    let segments = list_segments(&data.join("state").join(AUDIT_DIR)).unwrap();
    assert!(segments.len() >= 9, "rotated every 64 entries: {} segments", segments.len());
    let snapshot = std::fs::metadata(data.join("state").join("snapshot.json")).unwrap().len();
    assert!(snapshot < 32 << 10, "the snapshot holds the live state only: {snapshot} bytes");
    for n in c.nodes.values_mut() {
        n.stop().await;
    }
    let report = artstore_admin::verify::verify_audit(&data, None).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.entries, want.seq);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// `tests/fixtures/datadir-v1` was written by the admin before the segments (the chain in
/// the snapshot and in `state/audit.jsonl`): it starts, keeps every change and every audit
/// entry, moves the chain into segments, and goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_data_folder_from_before_the_segments_is_migrated() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datadir-v1");
    let old_chain: Vec<AuditEntry> = std::fs::read_to_string(fixture.join("state/audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(old_chain.len(), 27);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node1");
    copy_dir(&fixture, &data);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = config(1, addr, &format!("1=http://{addr}"), data.clone());
    // The fixture's key is older than a day on later runs: no scheduled rotation here.
    cfg.key_rotation_secs = 100 * 365 * 24 * 3600;
    let mut c = Cluster::start_one(dir, listener, cfg).await;
    let base = c.url(1);
    let token = admin_token(&base).await;

    let (status, v) = get_json(&base, "/api/v1/retention-policies", &token).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = v["items"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names.len(), 25, "{names:?}");
    assert_eq!(get_json(&base, "/api/v1/users/alice", &token).await.0, 200);

    let migrated = chain(&base, &token).await;
    assert_eq!(migrated[..27], old_chain[..], "every old entry, unchanged");
    assert_eq!(post_json(&base, "/api/v1/retention-policies", &token, policy("after")).await.status(), 201);
    let now = chain(&base, &token).await;
    let last = now.last().unwrap();
    assert_eq!((last.action.as_str(), last.target.as_str()), ("policy.create", "after"));
    assert_eq!(last.prev, now[now.len() - 2].hash);

    let state = data.join("state");
    assert!(!std::fs::exists(state.join("audit.jsonl")).unwrap(), "the old file is gone");
    assert!(!list_segments(&state.join(AUDIT_DIR)).unwrap().is_empty());
    let snapshot = std::fs::read_to_string(state.join("snapshot.json")).unwrap();
    let body: Value = serde_json::from_str(snapshot.split_once('\n').unwrap().1).unwrap();
    assert!(body["state"].get("audit").is_none(), "the snapshot no longer carries the chain");
    assert_eq!(body["state"]["audit_head"]["seq"], 22, "the old snapshot's head");

    // A second start finds nothing left to migrate and the same chain.
    c.nodes.get_mut(&1).unwrap().stop().await;
    c.restart(1).await;
    c.leader_among(&[1]).await;
    let again = chain(&base, &token).await;
    assert_eq!(again[..now.len()], now[..]);
    c.nodes.get_mut(&1).unwrap().stop().await;
    let report = artstore_admin::verify::verify_audit(&data, None).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.entries, again.len() as u64);
}
