//! The storage element serves HTTPS when given a certificate and key.

mod support;

use artstore_shared::auth::{JWKS_FILE, LocalSigner};
use std::time::Duration;
use support::Element;

#[tokio::test]
async fn storage_element_serves_https_when_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = LocalSigner::load_or_create(&tmp.path().join("keys")).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let e = Element::start(
        &tmp.path().join("element"),
        &tmp.path().join("keys").join(JWKS_FILE),
        &tmp.path().join("e.log"),
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    );
    let https = e.base.replace("http://127.0.0.1", "https://localhost");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut ok = false;
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{https}/health/ready")).send().await
            && r.status() == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "no HTTPS answer: {}", std::fs::read_to_string(tmp.path().join("e.log")).unwrap_or_default());
    let token = signer.issue("t", &["reader".into()], Duration::from_secs(60), chrono::Utc::now()).unwrap();
    let r = client.get(format!("{https}/api/v1/element")).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(reqwest::get(format!("{}/health/live", e.base)).await.is_err(), "plain HTTP must not be answered");

    // Half a TLS configuration is refused with a clear one-line error.
    let out = std::process::Command::new(support::BIN)
        .args(["storage-element", "--data"])
        .arg(tmp.path().join("other"))
        .args(["--jwks", "x.json", "--listen", "127.0.0.1:0", "--tls-cert", cert.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TLS needs both"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn role(args: &[&str], log: &std::path::Path) -> Proc {
    Proc(
        std::process::Command::new(support::BIN)
            .args(args)
            .args(["--log-format", "json"])
            .env("ARTSTORE_PROBE_INTERVAL_MS", "200")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// A private CA and a certificate it signed for 127.0.0.1 and localhost, valid 90 days.
fn private_ca(dir: &std::path::Path) -> (String, chrono::DateTime<chrono::Utc>) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "ArtStore test CA");
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let day = (chrono::Utc::now() + chrono::Duration::days(90)).date_naive();
    use chrono::Datelike as _;
    leaf.not_after = rcgen::date_time_ymd(day.year(), day.month() as u8, day.day() as u8);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    (ca.pem(), day.and_hms_opt(0, 0, 0).unwrap().and_utc())
}

async fn wait_json(http: &reqwest::Client, url: &str, what: &str, ok: impl Fn(&serde_json::Value) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(url).send().await
            && let Ok(v) = r.json::<serde_json::Value>().await
            && ok(&v)
        {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {url} never answered as expected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every role on HTTPS with certificates of a private CA: the ingester and the query role
/// reach the element only because they trust that CA (`--tls-ca`), plain HTTP is refused
/// on every port, and each role puts its certificate's expiry on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_speaks_tls_with_a_private_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let signer = LocalSigner::load_or_create(&d.join("keys")).unwrap();
    let jwks = d.join("keys").join(JWKS_FILE);
    let jwks = jwks.to_str().unwrap();
    let token = signer.issue("ops", &["admin".into()], Duration::from_secs(600), chrono::Utc::now()).unwrap();
    let (ca_pem, not_after) = private_ca(d);
    let (ca, cert, key) = (d.join("ca.pem"), d.join("cert.pem"), d.join("key.pem"));
    let (ca, cert, key) = (ca.to_str().unwrap(), cert.to_str().unwrap(), key.to_str().unwrap());
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let tls = ["--tls-cert", cert, "--tls-key", key, "--tls-ca", ca];

    let el = Element::start(&d.join("element"), std::path::Path::new(jwks), &d.join("e.log"), &tls);
    let el_url = el.base.replace("http://", "https://");
    wait_json(&http, &format!("{el_url}/health/ready"), "element", |v| v["status"] == "ready").await;
    let elements = format!("se-1={el_url}");

    let (ip, qp) = (support::free_port(), support::free_port());
    let ing_url = format!("https://127.0.0.1:{ip}");
    let ing_dir = d.join("ingester");
    let _ing = role(
        &[
            &["ingester", "--listen", &format!("127.0.0.1:{ip}"), "--data", ing_dir.to_str().unwrap(), "--jwks", jwks],
            &["--elements", &elements][..],
            &tls,
        ]
        .concat(),
        &d.join("ingester.log"),
    );
    wait_json(&http, &format!("{ing_url}/health/ready"), "ingester sees the element", |v| v["elements_up"] == 1).await;
    let (status, v) = support::upload(&http, &ing_url, &token, "tls.txt", b"over tls all the way".to_vec(), &[]).await;
    assert_eq!(status, 201, "{v}");
    let file_id = v["file_id"].as_str().unwrap().to_owned();

    let q_url = format!("https://127.0.0.1:{qp}");
    let index = d.join("index");
    let _q = role(
        &[
            &["query", "--listen", &format!("127.0.0.1:{qp}"), "--index", index.to_str().unwrap(), "--jwks", jwks],
            &["--elements", &elements, "--service-token", &token][..],
            &tls,
        ]
        .concat(),
        &d.join("query.log"),
    );
    wait_json(&http, &format!("{q_url}/health/ready"), "query", |v| v["status"] != serde_json::Value::Null).await;
    // A download through the query role is a call to the element over TLS.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = http.get(format!("{q_url}/api/v1/files/{file_id}/content")).bearer_auth(&token).send().await.unwrap();
        if r.status() == 200 {
            assert_eq!(r.text().await.unwrap(), "over tls all the way");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "download through the query role: {}", r.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Plain HTTP gets no answer anywhere.
    for port in [el.base.rsplit(':').next().unwrap().parse::<u16>().unwrap(), ip, qp] {
        assert!(reqwest::get(format!("http://127.0.0.1:{port}/health/live")).await.is_err(), "plain HTTP on {port}");
    }
    // Each role shows when its certificate expires.
    for base in [&el_url, &ing_url, &q_url] {
        let text = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("artstore_tls_certificate_expiry_timestamp_seconds "))
            .unwrap_or_else(|| panic!("no expiry metric on {base}"));
        assert_eq!(line.rsplit(' ').next().unwrap().parse::<i64>().unwrap(), not_after.timestamp(), "{base}");
    }

    // Without the CA an ingester cannot reach the element: the certificate is not trusted.
    let other = support::free_port();
    let other_dir = d.join("ingester-2");
    let _untrusting = role(
        &[
            "ingester",
            "--listen",
            &format!("127.0.0.1:{other}"),
            "--data",
            other_dir.to_str().unwrap(),
            "--jwks",
            jwks,
            "--elements",
            &elements,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ],
        &d.join("ingester-2.log"),
    );
    let url = format!("https://127.0.0.1:{other}/health/ready");
    wait_json(&http, &url, "ingester without the CA answers", |v| v["elements_up"].is_number()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let v: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["elements_up"], 0, "an ingester that does not trust the CA must not reach the element: {v}");
}
