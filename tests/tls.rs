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
