//! A three-node cluster speaking HTTPS (rustls) between its nodes and to clients, with a
//! private CA the nodes are told to trust.

mod support;

use artstore_admin::network::Faults;
use artstore_admin::server::AdminServer;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use support::{PASSWORD, config, policy};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_over_https_elects_replicates_and_forwards() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let tls = artstore_shared::tls::server_config(&cert, &key).unwrap();

    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        listeners.insert(id, tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let urls: BTreeMap<u64, String> = listeners
        .iter()
        .map(|(id, l)| (*id, format!("https://localhost:{}", l.local_addr().unwrap().port())))
        .collect();
    let peers = urls.iter().map(|(id, u)| format!("{id}={u}")).collect::<Vec<_>>().join(",");
    let mut nodes = BTreeMap::new();
    let mut stops = vec![];
    for (id, l) in listeners {
        let mut cfg = config(id, l.local_addr().unwrap(), &peers, dir.path().join(format!("n{id}")));
        cfg.tls_cert = Some(cert.clone());
        cfg.tls_key = Some(key.clone());
        cfg.tls_ca = Some(cert.clone());
        let server = AdminServer::build(cfg, Faults::default()).await.unwrap();
        nodes.insert(id, server.node.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        stops.push(tx);
        tokio::spawn(server.run_with(l, Some(tls.clone()), async move {
            let _ = rx.await;
        }));
    }
    for n in nodes.values() {
        n.wait_ready(Duration::from_secs(30)).await.unwrap();
    }
    let leader = nodes[&1].leader().unwrap();
    let follower = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap();

    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = http
        .post(format!("{}/api/v1/auth/token", urls[&follower]))
        .form(&[("grant_type", "password"), ("username", "admin"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    // Sent to a follower: forwarded to the leader over HTTPS.
    let r = http
        .post(format!("{}/api/v1/retention-policies", urls[&follower]))
        .bearer_auth(&token)
        .json(&policy("over-tls"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    for id in [1, 2, 3] {
        let mut applied = nodes[&id].sm.applied();
        let target = *nodes[&leader].sm.applied().borrow();
        tokio::time::timeout(Duration::from_secs(10), applied.wait_for(|a| *a >= target)).await.unwrap().unwrap();
        assert!(nodes[&id].read(|s| s.policies.contains_key("over-tls")), "node {id}");
    }
    let v: Value = http
        .get(format!("{}/api/v1/cluster", urls[&1]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["members"].as_array().unwrap().len(), 3, "{v}");
    assert!(v["members"][0]["url"].as_str().unwrap().starts_with("https://"), "{v}");
    // Plain HTTP is not answered.
    let plain = urls[&1].replace("https://localhost", "http://127.0.0.1");
    assert!(reqwest::get(format!("{plain}/health/live")).await.is_err());
    drop(stops);
    for n in nodes.values() {
        let _ = n.raft.shutdown().await;
    }
}
