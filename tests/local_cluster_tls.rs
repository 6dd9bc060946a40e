//! The local cluster in TLS mode (`ARTSTORE_CLUSTER_TLS=1`): a private CA, every role and
//! the front proxy on HTTPS only, every call between roles checked against that CA. The
//! public API works end to end through the front proxy (login, upload, search, download),
//! plain HTTP is refused on every port, and each role shows when its certificate expires.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::cluster::{Cluster, PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_speaks_only_https_with_its_private_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Cluster::new_tls(tmp.path().join("cluster"));
    let out = c.up();
    let front = c.front();
    assert!(front.starts_with("https://") && out.contains(&front), "{out}");
    let ca = reqwest::Certificate::from_pem(&c.ca_pem()).unwrap();
    let http = reqwest::Client::builder().add_root_certificate(ca).timeout(Duration::from_secs(20)).build().unwrap();

    // Without the CA, the front is not trusted.
    let untrusting = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    assert!(
        untrusting.get(format!("{front}/health/live")).send().await.is_err(),
        "a certificate no one trusts was accepted"
    );

    let token = support::password_token(&http, &front, "admin", PASSWORD).await;
    let body = b"sealed in transit: tlsword".to_vec();
    let (status, v) = support::upload(&http, &front, &token, "tls.txt", body.clone(), &[]).await;
    assert_eq!(status, 201, "{v}");
    let id = v["file_id"].as_str().unwrap().to_owned();
    // The query role indexes it from the element's events and serves it from the element.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = support::get_json(&http, &format!("{front}/api/v1/search?q=tlsword"), &token).await;
        if v["total"] == 1 {
            assert_eq!(v["hits"][0]["file_id"], Value::String(id.clone()), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "not searchable over TLS: {v}\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let r = http.get(format!("{front}/api/v1/files/{id}/content")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), body.as_slice());

    // Plain HTTP: no answer from a role; a 400 problem from the front proxy, never content.
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    for offset in [1u16, 2, 3, 11, 12, 21, 31] {
        let url = format!("http://127.0.0.1:{}/health/live", c.base + offset);
        assert!(plain.get(&url).send().await.is_err(), "plain HTTP answered on {url}");
    }
    let r = plain.get(format!("http://127.0.0.1:{}/api/v1/search?q=tlsword", c.base + 80)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert!(r.text().await.unwrap().contains("HTTPS only"));

    // Every role puts its certificate's end of validity on /metrics, about 825 days away.
    for offset in [1u16, 2, 3, 11, 12, 21, 31] {
        let text = http.get(format!("{}/metrics", c.url(offset))).send().await.unwrap().text().await.unwrap();
        let at: i64 = text
            .lines()
            .find_map(|l| l.strip_prefix("artstore_tls_certificate_expiry_timestamp_seconds "))
            .unwrap_or_else(|| panic!("no certificate expiry on +{offset}"))
            .parse()
            .unwrap();
        let days = (at - chrono::Utc::now().timestamp()) / 86_400;
        assert!((820..=826).contains(&days), "+{offset}: {days} days");
    }
    // `status` checks every part's health over HTTPS.
    let status = c.script(&["status"]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stdout));
}
