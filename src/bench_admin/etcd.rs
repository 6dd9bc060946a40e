//! The etcd baseline of `bench admin`: a three-member etcd cluster of real processes on
//! loopback, written to through its HTTP JSON gateway (`/v3/kv/put`) at the leader.

use super::load::{Change, LeaderView, Writer, history_description, json_u64, policy_body};
use anyhow::Context as _;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key every history change overwrites (etcd keeps each revision).
const HISTORY_KEY: &str = "artstore-bench/history";

/// The version `etcd --version` reports (`3.4.23`), or why there is no etcd to run.
pub(super) fn version() -> Result<String, String> {
    match Command::new("etcd").arg("--version").stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let first = text.lines().next().unwrap_or_default().trim();
            Ok(first.strip_prefix("etcd Version:").unwrap_or(first).trim().to_owned())
        }
        Ok(out) => Err(format!("`etcd --version` exited with {}", out.status)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("no etcd on PATH".to_owned()),
        Err(e) => Err(format!("cannot run etcd: {e}")),
    }
}

struct Member {
    child: Option<Child>,
    client_url: String,
}

/// Three etcd processes; dropping it kills them.
pub(super) struct EtcdCluster {
    members: Vec<Member>,
    /// `/v3` or `/v3beta`: whichever prefix the gateway answers on.
    prefix: String,
    log: PathBuf,
}

impl EtcdCluster {
    /// Starts the members under `dir` on free loopback ports and waits until each is healthy.
    pub(super) async fn start(dir: &Path, http: &reqwest::Client) -> anyhow::Result<Self> {
        let log = dir.join("etcd.log");
        let mut ports = Vec::new();
        for _ in 0..3 {
            ports.push((super::free_port()?, super::free_port()?));
        }
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (peer, _))| format!("etcd{}=http://127.0.0.1:{peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster { members: Vec::new(), prefix: String::new(), log: log.clone() };
        for (i, (peer, client)) in ports.iter().enumerate() {
            let (peer_url, client_url) = (format!("http://127.0.0.1:{peer}"), format!("http://127.0.0.1:{client}"));
            let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
            let child = Command::new("etcd")
                .args(["--name", &format!("etcd{}", i + 1), "--data-dir"])
                .arg(dir.join(format!("etcd{}", i + 1)))
                .args(["--initial-advertise-peer-urls", &peer_url, "--listen-peer-urls", &peer_url])
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "artstore-bench-admin"])
                // The history pre-load keeps every revision: room beyond the 2 GiB default.
                .args(["--quota-backend-bytes", &(8u64 << 30).to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(out)
                .spawn()
                .context("starting etcd")?;
            cluster.members.push(Member { child: Some(child), client_url });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for m in &mut cluster.members {
            while !healthy(http, &m.client_url).await {
                if let Some(status) = m.child.as_mut().map(Child::try_wait).transpose()?.flatten() {
                    anyhow::bail!("etcd at {} exited with {status}; see {}", m.client_url, log.display());
                }
                anyhow::ensure!(Instant::now() < deadline, "etcd did not become healthy; see {}", log.display());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        cluster.prefix = gateway_prefix(http, &cluster.members[0].client_url).await?;
        Ok(cluster)
    }

    /// The leader's client URL and term, asking each member for its status.
    async fn leader(&self, http: &reqwest::Client) -> Option<(String, LeaderView)> {
        for m in &self.members {
            let Ok(r) =
                http.post(format!("{}{}/maintenance/status", m.client_url, self.prefix)).json(&json!({})).send().await
            else {
                continue;
            };
            if let Ok(v) = r.json::<Value>().await
                && let Some(view) = leader_status(&v)
            {
                return Some((m.client_url.clone(), view));
            }
        }
        None
    }

    /// The leader, waiting up to 30 s for one.
    pub(super) async fn wait_leader(&self, http: &reqwest::Client) -> anyhow::Result<(String, LeaderView)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self.leader(http).await {
                return Ok(l);
            }
            anyhow::ensure!(Instant::now() < deadline, "no etcd leader within 30 s; see {}", self.log.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A writer that puts to `client_url` (the leader's, from [`Self::leader`]).
    pub(super) fn writer(&self, client_url: &str) -> EtcdWriter {
        EtcdWriter { put_url: format!("{client_url}{}/kv/put", self.prefix) }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

async fn healthy(http: &reqwest::Client, client_url: &str) -> bool {
    match http.get(format!("{client_url}/health")).send().await {
        Ok(r) => r.json::<Value>().await.is_ok_and(|v| v["health"] == "true"),
        Err(_) => false,
    }
}

/// etcd 3.4 serves the gateway at `/v3` and `/v3beta`, 3.3 only at `/v3beta`: the first
/// prefix at which a put succeeds.
async fn gateway_prefix(http: &reqwest::Client, client_url: &str) -> anyhow::Result<String> {
    for prefix in ["/v3", "/v3beta"] {
        let r = http
            .post(format!("{client_url}{prefix}/kv/put"))
            .json(&put_body("artstore-bench/probe", b"1"))
            .send()
            .await;
        if matches!(r, Ok(r) if r.status() == 200) {
            return Ok(prefix.to_owned());
        }
    }
    anyhow::bail!("etcd at {client_url} accepts puts neither at /v3/kv/put nor at /v3beta/kv/put")
}

/// The member's view when it is the leader (its `leader` is its own `header.member_id`).
fn leader_status(v: &Value) -> Option<LeaderView> {
    let me = json_u64(&v["header"]["member_id"])?;
    if json_u64(&v["leader"])? != me {
        return None;
    }
    Some(LeaderView { id: me, term: json_u64(&v["raftTerm"]).or_else(|| json_u64(&v["header"]["raft_term"])) })
}

/// The gateway's `PutRequest`: bytes fields travel as base64.
fn put_body(key: &str, value: &[u8]) -> Value {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    json!({"key": b64(key.as_bytes()), "value": b64(value)})
}

/// Puts through the gateway of one member.
#[derive(Debug, Clone)]
pub(super) struct EtcdWriter {
    put_url: String,
}

impl Writer for EtcdWriter {
    async fn write(&self, http: &reqwest::Client, change: Change<'_>) -> bool {
        let body = match change {
            Change::New(key) => {
                put_body(&format!("artstore-bench/policies/{key}"), policy_body(key).to_string().as_bytes())
            }
            Change::History(n) => {
                let mut value = policy_body("history");
                value["description"] = Value::String(history_description(n));
                put_body(HISTORY_KEY, value.to_string().as_bytes())
            }
        };
        matches!(http.post(&self.put_url).json(&body).send().await, Ok(r) if r.status() == 200)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_body_encodes_key_and_value() {
        assert_eq!(put_body("foo", b"bar"), json!({"key": "Zm9v", "value": "YmFy"}));
    }

    #[test]
    fn leader_is_the_member_that_names_itself() {
        // As etcd 3.4.23's gateway answers POST /v3/maintenance/status (uint64 as strings).
        let leader = json!({
            "header": {"cluster_id": "8380237524463652907", "member_id": "3129297065709407208",
                       "revision": "1", "raft_term": "2"},
            "version": "3.4.23", "leader": "3129297065709407208", "raftIndex": "9", "raftTerm": "2"
        });
        assert_eq!(leader_status(&leader), Some(LeaderView { id: 3_129_297_065_709_407_208, term: Some(2) }));
        let mut follower = leader.clone();
        follower["header"]["member_id"] = json!("10481563263698107759");
        assert_eq!(leader_status(&follower), None);
        let mut old = leader.clone();
        old.as_object_mut().map(|o| o.remove("raftTerm"));
        assert_eq!(leader_status(&old).and_then(|v| v.term), Some(2));
        assert_eq!(leader_status(&json!({"error": "etcdserver: no leader"})), None);
    }
}
