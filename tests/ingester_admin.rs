//! The whole write path wired as in a cluster, in this process over real HTTP: a one-node
//! admin publishing the registry to a private Redis, two storage elements writing
//! heartbeats, and an ingester that finds them through Redis and reads retention policies
//! at the admin. An element is switched to `ro` through the admin while clients upload: no
//! upload fails, and every upload after the switch lands on the other element.

mod support;

use artstore_admin::config::AdminConfig;
use artstore_admin::network::Faults;
use artstore_admin::server::AdminServer;
use artstore_ingester::config::IngesterConfig;
use artstore_ingester::server::IngesterServer;
use artstore_shared::auth::{JwksSource, TokenVerifier, VerifierConfig};
use artstore_shared::clock::SystemClock;
use artstore_storage_element::config::ElementConfig;
use artstore_storage_element::server::Element;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const PASSWORD: &str = "admin-password-1";

fn verifier(admin: &str) -> Arc<TokenVerifier> {
    Arc::new(TokenVerifier::new(
        JwksSource::Url(format!("{admin}/.well-known/jwks.json")),
        VerifierConfig::default(),
        Arc::new(SystemClock),
    ))
}

async fn serve_element(dir: &std::path::Path, id: &str, admin: &str, redis: &str) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let cfg = ElementConfig {
        data: Some(dir.join(id)),
        listen: l.local_addr().unwrap().to_string(),
        admin_url: Some(admin.to_owned()),
        redis: Some(redis.to_owned()),
        element_id: Some(id.to_owned()),
        heartbeat_ttl_secs: 3,
        initial_mode: artstore_storage_element::ElementMode::Rw,
        ..Default::default()
    };
    let v = verifier(admin);
    v.load().await.unwrap();
    let e = Element::build(cfg, v, Arc::new(SystemClock)).await.unwrap();
    tokio::spawn(e.run(l, std::future::pending()));
    url
}

struct Redis(std::process::Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn element_switched_to_ro_through_the_admin_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let redis = Redis(
        std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/services.sh)"),
        port,
    );
    let redis_url = format!("redis://127.0.0.1:{}", redis.1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis::Client::open(redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.is_err() {
        assert!(Instant::now() < deadline, "private redis did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let al = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", al.local_addr().unwrap());
    let cfg = AdminConfig {
        data: Some(dir.path().join("admin")),
        listen: al.local_addr().unwrap().to_string(),
        admin_password: Some(PASSWORD.to_owned()),
        raft_heartbeat_ms: 50,
        redis: Some(redis_url.clone()),
        ..Default::default()
    };
    let server = AdminServer::build(cfg, Faults::default()).await.unwrap();
    let node = server.node.clone();
    tokio::spawn(server.run(al, std::future::pending()));
    node.wait_ready(Duration::from_secs(30)).await.unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let token = support::password_token(&http, &admin, "admin", PASSWORD).await;

    let a = serve_element(dir.path(), "se-a", &admin, &redis_url).await;
    let b = serve_element(dir.path(), "se-b", &admin, &redis_url).await;
    for (id, url) in [("se-a", &a), ("se-b", &b)] {
        let r = http
            .post(format!("{admin}/api/v1/elements"))
            .bearer_auth(&token)
            .json(&json!({"id": id, "url": url, "weight": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    let r = http
        .post(format!("{admin}/api/v1/retention-policies"))
        .bearer_auth(&token)
        .json(&json!({"name": "tax", "term": "P7Y", "mode": "governance", "disposition": "dispose"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let il = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ing = format!("http://{}", il.local_addr().unwrap());
    let icfg = IngesterConfig {
        data: Some(dir.path().join("ingester")),
        redis: Some(redis_url.clone()),
        admin_url: Some(admin.clone()),
        probe_interval_ms: 200,
        ..Default::default()
    };
    let server = IngesterServer::build(icfg, verifier(&admin)).await.unwrap();
    let discovery = server.ingester.discovery.clone();
    tokio::spawn(server.run(il, std::future::pending()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while discovery.elements().iter().filter(|e| e.up && e.mode == "rw").count() < 2 {
        assert!(Instant::now() < deadline, "the ingester never saw both elements: {:?}", discovery.elements());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (http, ing, token, stop) = (http.clone(), ing.clone(), token.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut placed = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let form = reqwest::multipart::Form::new().text("retention_policy", "tax").part(
                    "file",
                    reqwest::multipart::Part::bytes(format!("c{c} n{n}").into_bytes()).file_name("t.txt"),
                );
                let r =
                    http.post(format!("{ing}/api/v1/files")).bearer_auth(&token).multipart(form).send().await.unwrap();
                let s = r.status().as_u16();
                let v: Value = r.json().await.unwrap();
                assert_eq!(s, 201, "an upload failed mid-run: {v}");
                assert_eq!(v["retention"]["policy"], "tax");
                placed.push((Instant::now(), v["element_id"].as_str().unwrap().to_owned()));
                n += 1;
            }
            placed
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let r = http
        .post(format!("{admin}/api/v1/elements/se-a/mode"))
        .bearer_auth(&token)
        .json(&json!({"mode": "ro"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let switched = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await.unwrap());
    }
    let before_a = all.iter().filter(|(at, e)| e == "se-a" && *at < switched).count();
    let late_a = all.iter().filter(|(at, e)| e == "se-a" && *at > switched).count();
    let after_b = all.iter().filter(|(at, e)| e == "se-b" && *at > switched).count();
    println!("{} uploads: {before_a} on se-a before the switch, {late_a} after, {after_b} on se-b after", all.len());
    assert!(before_a > 0, "se-a took uploads before the switch");
    assert_eq!(late_a, 0, "uploads landed on se-a after the admin switched it to ro");
    assert!(after_b > 0);
    // The registry in Redis says ro too, and the ingester's view follows it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while discovery.element("se-a").is_none_or(|e| e.mode != "ro") {
        assert!(Instant::now() < deadline, "the ingester never saw se-a as ro");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
