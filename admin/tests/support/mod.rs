//! In-process admin clusters for tests: real HTTP on loopback, real disks (temp folders),
//! a shared fault injector, and nodes that can be dropped and restarted.
#![allow(dead_code)]

use artstore_admin::config::AdminConfig;
use artstore_admin::network::Faults;
use artstore_admin::node::Node;
use artstore_admin::server::AdminServer;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const PASSWORD: &str = "correct horse battery";

/// One running node.
pub struct RunningNode {
    pub node: Arc<Node>,
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl RunningNode {
    /// Stops serving and shuts Raft down (the in-process stand-in for a dead node).
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let _ = self.node.raft.shutdown().await;
    }
}

/// A cluster of nodes in this process.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub faults: Faults,
    pub addrs: BTreeMap<u64, SocketAddr>,
    pub nodes: BTreeMap<u64, RunningNode>,
    pub tweak: fn(&mut AdminConfig),
}

pub fn config(id: u64, addr: SocketAddr, peers: &str, data: PathBuf) -> AdminConfig {
    AdminConfig {
        node_id: id,
        listen: addr.to_string(),
        data: Some(data),
        peers: Some(peers.to_owned()),
        admin_password: Some(PASSWORD.to_owned()),
        write_timeout_ms: 3000,
        ..Default::default()
    }
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n) as one fresh cluster.
    pub async fn start(n: u64, tweak: fn(&mut AdminConfig)) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listeners.insert(id, l);
        }
        let addrs: BTreeMap<u64, SocketAddr> = listeners.iter().map(|(id, l)| (*id, l.local_addr().unwrap())).collect();
        let mut c = Cluster { dir, faults: Faults::default(), addrs, nodes: BTreeMap::new(), tweak };
        for (id, l) in listeners {
            c.launch(id, l).await;
        }
        c
    }

    /// One node with a config of the caller's making.
    pub async fn start_one(dir: tempfile::TempDir, listener: tokio::net::TcpListener, cfg: AdminConfig) -> Cluster {
        let addr = listener.local_addr().unwrap();
        let mut c = Cluster {
            dir,
            faults: Faults::default(),
            addrs: BTreeMap::from([(1, addr)]),
            nodes: BTreeMap::new(),
            tweak: |_| {},
        };
        c.launch_with(1, listener, cfg).await;
        c.leader_among(&[1]).await;
        c
    }

    pub fn peers(&self) -> String {
        self.addrs.iter().map(|(id, a)| format!("{id}=http://{a}")).collect::<Vec<_>>().join(",")
    }

    async fn launch(&mut self, id: u64, listener: tokio::net::TcpListener) {
        let mut cfg = config(id, self.addrs[&id], &self.peers(), self.dir.path().join(format!("node{id}")));
        (self.tweak)(&mut cfg);
        self.launch_with(id, listener, cfg).await;
    }

    async fn launch_with(&mut self, id: u64, listener: tokio::net::TcpListener, cfg: AdminConfig) {
        let server = AdminServer::build(cfg, self.faults.clone()).await.unwrap();
        let node = server.node.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(listener, async move {
            let _ = rx.await;
        }));
        let url = format!("http://{}", self.addrs[&id]);
        self.nodes.insert(id, RunningNode { node, url, stop: Some(tx), task: Some(task) });
    }

    /// Restarts a stopped node on its old address and folder.
    pub async fn restart(&mut self, id: u64) {
        let l = tokio::net::TcpListener::bind(self.addrs[&id]).await.unwrap();
        self.launch(id, l).await;
    }

    pub fn url(&self, id: u64) -> String {
        self.nodes[&id].url.clone()
    }

    /// Waits until the nodes in `ids` agree on one leader among them, and it is ready.
    pub async fn leader_among(&self, ids: &[u64]) -> u64 {
        for _ in 0..200 {
            let leaders: Vec<Option<u64>> = ids.iter().map(|i| self.nodes[i].node.leader()).collect();
            if let Some(Some(l)) = leaders.first()
                && leaders.iter().all(|x| *x == Some(*l))
                && ids.contains(l)
                && self.nodes[l].node.is_leader()
                && self.nodes[l].node.read(|s| s.bootstrapped_at.is_some() && s.current_key().is_some())
            {
                return *l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader among {ids:?}");
    }

    /// Waits until every node in `ids` has applied at least `index`.
    pub async fn wait_applied(&self, ids: &[u64], index: u64) {
        for id in ids {
            let mut rx = self.nodes[id].node.sm.applied();
            tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|a| *a >= index))
                .await
                .unwrap_or_else(|_| panic!("node {id} did not apply index {index}"))
                .unwrap();
        }
    }

    pub fn applied(&self, id: u64) -> u64 {
        *self.nodes[&id].node.sm.applied().borrow()
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Logs in at `base` with a password; answers the token response.
pub async fn login(base: &str, user: &str, password: &str) -> reqwest::Response {
    http()
        .post(format!("{base}/api/v1/auth/token"))
        .form(&[("grant_type", "password"), ("username", user), ("password", password)])
        .send()
        .await
        .unwrap()
}

/// An admin access token from `base`.
pub async fn admin_token(base: &str) -> String {
    let r = login(base, "admin", PASSWORD).await;
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
}

pub async fn post_json(base: &str, path: &str, token: &str, body: Value) -> reqwest::Response {
    http().post(format!("{base}{path}")).bearer_auth(token).json(&body).send().await.unwrap()
}

pub async fn get_json(base: &str, path: &str, token: &str) -> (u16, Value) {
    let r = http().get(format!("{base}{path}")).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub fn policy(name: &str) -> Value {
    json!({"name": name, "term": "P1Y", "mode": "governance", "disposition": "review"})
}
