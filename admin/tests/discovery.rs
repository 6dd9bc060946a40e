//! Discovery against real Redis servers: the shared one on 127.0.0.1:6379 (started by
//! `scripts/services.sh`; a missing server fails these tests) and a private one on a free
//! port that the outage test kills and restarts.

mod support;

use artstore_shared::discovery::{Heartbeat, REGISTRY_CHANNEL, REGISTRY_KEY, Registry, heartbeat_key};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("redis at {url} is not reachable ({e}); run scripts/services.sh (CI starts it)"))
}

async fn registry(c: &mut redis::aio::MultiplexedConnection) -> Option<Registry> {
    let v: Option<String> = redis::cmd("GET").arg(REGISTRY_KEY).query_async(c).await.ok()?;
    v.and_then(|s| serde_json::from_str(&s).ok())
}

async fn eventually<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_publishes_the_registry_and_heartbeats_become_health() {
    // A database of its own on the shared server.
    let url = "redis://127.0.0.1:6379/11";
    let mut c = conn(url).await;
    let () = redis::cmd("FLUSHDB").query_async(&mut c).await.unwrap();
    let client = redis::Client::open(url).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(REGISTRY_CHANNEL).await.unwrap();

    let mut cluster = Cluster::start(1, |cfg| cfg.redis = Some("redis://127.0.0.1:6379/11".to_owned())).await;
    cluster.leader_among(&[1]).await;
    let base = cluster.url(1);
    let token = admin_token(&base).await;
    let r = post_json(
        &base,
        "/api/v1/elements",
        &token,
        json!({"id": "se-1", "url": "http://10.0.0.1:8081", "capacity_bytes": 5000, "weight": 3, "dc": "eu"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    eventually("the registry in redis names se-1", 10, || {
        let mut c = c.clone();
        async move { registry(&mut c).await.is_some_and(|r| r.elements.iter().any(|e| e.id == "se-1" && e.weight == 3)) }
    })
    .await;
    // The channel is server-wide (other tests' clusters publish on it too, and this one
    // may announce its empty registry first): wait for an announcement of a change.
    let announced = tokio::time::timeout(Duration::from_secs(10), async {
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            if msg.get_payload::<u64>().unwrap() >= 1 {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(announced, Ok(true), "a registry change was announced on the channel");

    // No heartbeat: down. A heartbeat: up, with its free space. Expired: down again.
    let health = |base: String, token: String| async move {
        get_json(&base, "/api/v1/elements/se-1", &token).await.1["health"].clone()
    };
    eventually("se-1 is down without a heartbeat", 10, || {
        let (b, t) = (base.clone(), token.clone());
        async move { health(b, t).await["status"] == "down" }
    })
    .await;
    let hb = Heartbeat {
        id: "se-1".into(),
        url: "http://10.0.0.1:8081".into(),
        mode: "edit".into(),
        free_bytes: 1234,
        total_bytes: 5000,
        at: chrono::Utc::now(),
        documents: Some(42),
        workers: serde_json::json!({"disposition": {"status": "ok"}}),
    };
    let () = redis::cmd("SET")
        .arg(heartbeat_key("se-1"))
        .arg(serde_json::to_string(&hb).unwrap())
        .arg("PX")
        .arg(2500)
        .query_async(&mut c)
        .await
        .unwrap();
    eventually("se-1 is up with its free space", 10, || {
        let (b, t) = (base.clone(), token.clone());
        async move {
            let h: Value = health(b, t).await;
            h["status"] == "up"
                && h["free_bytes"] == 1234
                && h["documents"] == 42
                && h["workers"]["disposition"]["status"] == "ok"
        }
    })
    .await;
    eventually("se-1 is down after its heartbeat expired", 15, || {
        let (b, t) = (base.clone(), token.clone());
        async move { health(b, t).await["status"] == "down" }
    })
    .await;
    cluster.nodes.get_mut(&1).unwrap().stop().await;
}

struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/services.sh)");
        PrivateRedis { child, port }
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_leaves_the_cluster_serving_and_the_registry_is_republished() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut redis_srv = PrivateRedis::start(port);
    let url = redis_srv.url();
    eventually("private redis answers", 10, || {
        let u = url.clone();
        async move { redis::Client::open(u.as_str()).unwrap().get_multiplexed_async_connection().await.is_ok() }
    })
    .await;
    let mut cluster = start_with_redis(&url).await;
    let base = cluster.url(1);
    let token = admin_token(&base).await;
    let r = post_json(&base, "/api/v1/elements", &token, json!({"id": "a", "url": "http://10.0.0.1:1"})).await;
    assert_eq!(r.status(), 201);
    let mut c = conn(&url).await;
    eventually("a is published", 10, || {
        let mut c = c.clone();
        async move { registry(&mut c).await.is_some_and(|r| r.elements.len() == 1) }
    })
    .await;

    redis_srv.kill();
    // Everything else goes on.
    let r = post_json(&base, "/api/v1/elements", &token, json!({"id": "b", "url": "http://10.0.0.1:2"})).await;
    assert_eq!(r.status(), 201, "writes go on while redis is down");
    assert_eq!(login(&base, "admin", PASSWORD).await.status(), 200, "logins go on");
    eventually("readiness shows redis degraded", 10, || {
        let b = base.clone();
        async move {
            let r = http().get(format!("{b}/health/ready")).send().await.unwrap();
            let ok = r.status() == 200;
            let v: Value = r.json().await.unwrap();
            ok && v["checks"]["redis"]["status"] == "degraded"
        }
    })
    .await;

    // Redis comes back empty: the whole registry is published again.
    let _redis_again = PrivateRedis::start(port);
    eventually("redis is back", 10, || {
        let u = url.clone();
        async move { redis::Client::open(u.as_str()).unwrap().get_multiplexed_async_connection().await.is_ok() }
    })
    .await;
    c = conn(&url).await;
    eventually("the registry is republished with a and b", 15, || {
        let mut c = c.clone();
        async move {
            registry(&mut c).await.is_some_and(|r| {
                let ids: Vec<&str> = r.elements.iter().map(|e| e.id.as_str()).collect();
                ids == ["a", "b"]
            })
        }
    })
    .await;
    cluster.nodes.get_mut(&1).unwrap().stop().await;
}

async fn start_with_redis(url: &str) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut cfg = config(1, addr, &format!("1=http://{addr}"), dir.path().join("node1"));
    cfg.redis = Some(url.to_owned());
    Cluster::start_one(dir, l, cfg).await
}
