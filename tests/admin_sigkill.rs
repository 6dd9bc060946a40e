//! A three-node admin cluster of real `artstore admin` processes on loopback, snapshotting
//! every 100 changes and starting an audit segment every 40 entries. The leader is
//! SIGKILLed while clients write, several rounds: a new leader is elected, every change
//! acknowledged before the kill is on every node afterwards, the killed node restarts and
//! catches up, and every node's audit chain verifies. Then nodes are killed exactly while
//! writing a snapshot and while starting a segment (held there by `ARTSTORE_TEST_PAUSE_AT`).

mod support;

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{BIN, free_port, get_json};

const PASSWORD: &str = "sigkill-test-password";

struct Node {
    child: Option<Child>,
    url: String,
    port: u16,
    data: PathBuf,
}

fn spawn(id: u64, port: u16, data: &Path, peers: &str, log: &Path) -> Child {
    spawn_paused(id, port, data, peers, log, None)
}

/// A node that pauses at `pause` (see `ARTSTORE_TEST_PAUSE_AT`).
fn spawn_paused(id: u64, port: u16, data: &Path, peers: &str, log: &Path, pause: Option<&str>) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["admin", "--node-id", &id.to_string(), "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data)
        .args(["--peers", peers, "--log-format", "json"])
        .args(["--raft-snapshot-every", "100", "--audit-segment-entries", "40"])
        .env("ARTSTORE_ADMIN_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(log);
    match pause {
        Some(p) => cmd.env("ARTSTORE_TEST_PAUSE_AT", p),
        None => cmd.env_remove("ARTSTORE_TEST_PAUSE_AT"),
    };
    cmd.spawn().unwrap()
}

async fn token(http: &reqwest::Client, url: &str) -> Option<String> {
    let r = http
        .post(format!("{url}/api/v1/auth/token"))
        .form(&[("grant_type", "password"), ("username", "admin"), ("password", PASSWORD)])
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json::<Value>().await.ok()?["access_token"].as_str().map(str::to_owned)
}

async fn leader(http: &reqwest::Client, nodes: &BTreeMap<u64, Node>, token: &str) -> Option<u64> {
    for n in nodes.values().filter(|n| n.child.is_some()) {
        if let Ok(r) = http.get(format!("{}/api/v1/cluster", n.url)).bearer_auth(token).send().await
            && let Ok(v) = r.json::<Value>().await
            && v["state"] == "Leader"
        {
            return v["node_id"].as_u64();
        }
    }
    None
}

async fn policies(http: &reqwest::Client, url: &str, token: &str) -> Option<BTreeSet<String>> {
    let v: Value =
        http.get(format!("{url}/api/v1/retention-policies")).bearer_auth(token).send().await.ok()?.json().await.ok()?;
    Some(v["items"].as_array()?.iter().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_sigkill_loses_no_acknowledged_change() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("admin.log");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let ports: BTreeMap<u64, u16> = (1..=3).map(|id| (id, free_port())).collect();
    let peers = ports.iter().map(|(id, p)| format!("{id}=http://127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let mut nodes: BTreeMap<u64, Node> = BTreeMap::new();
    for (id, port) in &ports {
        let data = dir.path().join(format!("node{id}"));
        let child = spawn(*id, *port, &data, &peers, &log);
        nodes.insert(*id, Node { child: Some(child), url: format!("http://127.0.0.1:{port}"), port: *port, data });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let tok = loop {
        if let Some(t) = token(&http, &nodes[&1].url).await {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "cluster did not come up; log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let rounds: usize = std::env::var("ARTSTORE_ADMIN_KILL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut seq = 0u64;
    let mut failovers = vec![];
    for round in 0..rounds {
        let l = loop {
            if let Some(l) = leader(&http, &nodes, &tok).await {
                break l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // Writes through every live node until the kill; then the leader dies mid-stream.
        let kill_at = Instant::now() + Duration::from_millis(700);
        let mut killed_at = None;
        let mut first_ok_after = None;
        while first_ok_after.is_none()
            || Instant::now() < killed_at.unwrap_or_else(Instant::now) + Duration::from_millis(300)
        {
            if killed_at.is_none() && Instant::now() >= kill_at {
                let n = nodes.get_mut(&l).unwrap();
                let mut c = n.child.take().unwrap();
                c.kill().unwrap(); // SIGKILL
                c.wait().unwrap();
                killed_at = Some(Instant::now());
            }
            let live: Vec<&Node> = nodes.values().filter(|n| n.child.is_some()).collect();
            let via = live[(seq as usize) % live.len()];
            seq += 1;
            let name = format!("r{round}-p{seq}");
            let r = http
                .post(format!("{}/api/v1/retention-policies", via.url))
                .bearer_auth(&tok)
                .json(&json!({"name": name, "term": "P1Y", "mode": "governance"}))
                .send()
                .await;
            if let Ok(r) = r
                && r.status() == 201
            {
                acked.insert(name);
                if let Some(k) = killed_at
                    && first_ok_after.is_none()
                {
                    first_ok_after = Some(k.elapsed());
                }
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(
                killed_at.is_none_or(|k| k.elapsed() < Duration::from_secs(30)),
                "no write succeeded after the kill"
            );
        }
        failovers.push(first_ok_after.unwrap());
        // The killed node restarts and catches up.
        let n = nodes.get_mut(&l).unwrap();
        n.child = Some(spawn(l, n.port, &n.data, &peers, &log));
    }
    eprintln!("{} acknowledged writes; failover (kill → first acknowledged write): {failovers:?}", acked.len());

    // Every node, the restarted ones included, holds every acknowledged change, and all agree.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sets = BTreeMap::new();
    loop {
        sets.clear();
        for (id, n) in &nodes {
            sets.insert(*id, policies(&http, &n.url, &tok).await.unwrap_or_default());
        }
        let all_have = sets.values().all(|s| acked.is_subset(s));
        let agree = sets.values().all(|s| s == &sets[&1]);
        if all_have && agree {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes did not converge: acked {} / {:?}",
            acked.len(),
            sets.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in nodes.values_mut() {
        if let Some(mut c) = n.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
    for (id, n) in &nodes {
        let out = Command::new(BIN).args(["admin", "verify-audit", "--data"]).arg(&n.data).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "node {id}: {text}");
        assert!(text.contains("0 problem(s)"), "node {id}: {text}");
    }
    // A hand edit is detected.
    let audit = nodes[&2].data.join("state").join("audit").join("00000000000000000001.jsonl");
    let text = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(&audit, text.replacen("\"actor\":\"admin\"", "\"actor\":\"mallory\"", 1)).unwrap();
    let out = Command::new(BIN).args(["admin", "verify-audit", "--data"]).arg(&nodes[&2].data).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("does not match its hash"));
}

/// Whether `log` says the node is held at `point`.
fn paused_at(log: &Path, point: &str) -> bool {
    std::fs::read_to_string(log).unwrap_or_default().contains(&format!("test pause at {point}"))
}

async fn write_policy(http: &reqwest::Client, url: &str, token: &str, name: &str) -> bool {
    let r = http
        .post(format!("{url}/api/v1/retention-policies"))
        .bearer_auth(token)
        .json(&json!({"name": name, "term": "P1Y", "mode": "governance"}))
        .send()
        .await;
    matches!(r, Ok(r) if r.status() == 201)
}

/// Writes through the live nodes until `until` holds (checked between writes); answers
/// the acknowledged names.
async fn write_until(
    http: &reqwest::Client,
    nodes: &BTreeMap<u64, Node>,
    token: &str,
    prefix: &str,
    mut until: impl FnMut() -> bool,
) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut acked = BTreeSet::new();
    let mut i = 0usize;
    while !until() {
        assert!(Instant::now() < deadline, "{prefix}: the awaited point never came");
        let live: Vec<&Node> = nodes.values().filter(|n| n.child.is_some()).collect();
        let name = format!("{prefix}-{i}");
        if write_policy(http, &live[i % live.len()].url, token, &name).await {
            acked.insert(name);
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        i += 1;
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_killed_while_writing_a_snapshot_or_starting_a_segment_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let ports: BTreeMap<u64, u16> = (1..=3).map(|id| (id, free_port())).collect();
    let peers = ports.iter().map(|(id, p)| format!("{id}=http://127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let log = |id: u64| dir.path().join(format!("node{id}.log"));
    let mut nodes: BTreeMap<u64, Node> = BTreeMap::new();
    for (id, port) in &ports {
        let data = dir.path().join(format!("node{id}"));
        let child = spawn_paused(*id, *port, &data, &peers, &log(*id), Some("snapshot"));
        nodes.insert(*id, Node { child: Some(child), url: format!("http://127.0.0.1:{port}"), port: *port, data });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let tok = loop {
        if let Some(t) = token(&http, &nodes[&1].url).await {
            break t;
        }
        assert!(Instant::now() < deadline, "cluster did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let l = loop {
        if let Some(l) = leader(&http, &nodes, &tok).await {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // The leader is killed while it writes a snapshot (it has serialised it, the file is
    // not replaced yet); the others go on and it comes back without the pause.
    let mut acked = write_until(&http, &nodes, &tok, "s", || paused_at(&log(l), "snapshot")).await;
    let n = nodes.get_mut(&l).unwrap();
    let mut child = n.child.take().unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    acked.extend(write_until(&http, &nodes, &tok, "s2", for_a_while(Duration::from_millis(500))).await);
    let n = nodes.get_mut(&l).unwrap();
    n.child = Some(spawn_paused(l, n.port, &n.data, &peers, &log(l), Some("rotation")));

    // It is killed again while starting an audit segment (created and synced, empty).
    acked.extend(write_until(&http, &nodes, &tok, "r", || paused_at(&log(l), "rotation")).await);
    let n = nodes.get_mut(&l).unwrap();
    let mut child = n.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    acked.extend(write_until(&http, &nodes, &tok, "r2", for_a_while(Duration::from_millis(500))).await);
    let n = nodes.get_mut(&l).unwrap();
    n.child = Some(spawn(l, n.port, &n.data, &peers, &log(l)));
    acked.extend(write_until(&http, &nodes, &tok, "after", for_a_while(Duration::from_millis(500))).await);
    eprintln!("{} acknowledged writes around the two kills of node {l}", acked.len());

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut all = true;
        for n in nodes.values() {
            let have = policies(&http, &n.url, &tok).await.unwrap_or_default();
            all &= acked.is_subset(&have);
        }
        if all {
            break;
        }
        assert!(Instant::now() < deadline, "the nodes did not converge on every acknowledged change");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every node holds the same chain.
    let mut heads = BTreeMap::new();
    for _ in 0..100 {
        heads.clear();
        for (id, n) in &nodes {
            let v = get_json(&http, &format!("{}/api/v1/audit?after=0&limit=1", n.url), &tok).await;
            heads.insert(*id, v["last_seq"].as_u64());
        }
        if heads.values().all(|h| *h == heads[&1]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in nodes.values_mut() {
        if let Some(mut c) = n.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
    let mut chains = BTreeMap::new();
    for (id, n) in &nodes {
        let out = Command::new(BIN).args(["admin", "verify-audit", "--data"]).arg(&n.data).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("0 problem(s)"), "node {id}: {text}");
        let mut files = Vec::new();
        for e in std::fs::read_dir(n.data.join("state").join("audit")).unwrap() {
            files.push(e.unwrap().path());
        }
        files.sort();
        let chain: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
        chains.insert(*id, chain);
    }
    assert!(chains.values().all(|c| c == &chains[&1]), "every node holds the identical chain, byte for byte");
}

/// A condition that turns true once `d` has passed.
fn for_a_while(d: Duration) -> impl FnMut() -> bool {
    let start = Instant::now();
    move || start.elapsed() >= d
}
