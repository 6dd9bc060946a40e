//! A three-node admin cluster of real `artstore admin` processes on loopback. The leader is
//! SIGKILLed while clients write, several rounds: a new leader is elected, every change
//! acknowledged before the kill is on every node afterwards, the killed node restarts and
//! catches up, and every node's audit chain verifies.

mod support;

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{BIN, free_port};

const PASSWORD: &str = "sigkill-test-password";

struct Node {
    child: Option<Child>,
    url: String,
    port: u16,
    data: PathBuf,
}

fn spawn(id: u64, port: u16, data: &Path, peers: &str, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(BIN)
        .args(["admin", "--node-id", &id.to_string(), "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data)
        .args(["--peers", peers, "--raft-heartbeat-ms", "100", "--log-format", "json"])
        .env("ARTSTORE_ADMIN_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
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
    let audit = nodes[&2].data.join("state").join("audit.jsonl");
    let text = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(&audit, text.replacen("\"actor\":\"admin\"", "\"actor\":\"mallory\"", 1)).unwrap();
    let out = Command::new(BIN).args(["admin", "verify-audit", "--data"]).arg(&nodes[&2].data).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("does not match its hash"));
}
