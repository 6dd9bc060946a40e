//! Where the admin meets a storage element, both in this process over real HTTP: the element
//! verifies tokens from the admin's JWKS URL, every bad token is refused by both services,
//! mode changes are committed only after the element confirmed them, and uploads resolve
//! retention policies through the admin.

mod support;

use artstore_admin::config::AdminConfig;
use artstore_admin::network::Faults;
use artstore_admin::server::AdminServer;
use artstore_shared::auth::{JwksSource, LocalSigner, TokenVerifier, VerifierConfig};
use artstore_shared::clock::SystemClock;
use artstore_storage_element::config::ElementConfig;
use artstore_storage_element::server::Element;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use support::get_json;

const PASSWORD: &str = "admin-password-1";

struct Env {
    _dir: tempfile::TempDir,
    admin: String,
    element: String,
    node: Arc<artstore_admin::node::Node>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    http: reqwest::Client,
}

async fn start(grace_secs: u64) -> Env {
    start_with(grace_secs, None).await
}

async fn start_with(grace_secs: u64, redis: Option<&str>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let al = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = al.local_addr().unwrap();
    let cfg = AdminConfig {
        data: Some(dir.path().join("admin")),
        listen: admin_addr.to_string(),
        admin_password: Some(PASSWORD.to_owned()),
        key_grace_secs: grace_secs,
        raft_heartbeat_ms: 50,
        redis: redis.map(str::to_owned),
        ..Default::default()
    };
    let server = AdminServer::build(cfg, Faults::default()).await.unwrap();
    let node = server.node.clone();
    let (atx, arx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(al, async move {
        let _ = arx.await;
    }));
    node.wait_ready(Duration::from_secs(30)).await.unwrap();
    let admin = format!("http://{admin_addr}");

    let el = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let element_addr = el.local_addr().unwrap();
    let ecfg = ElementConfig {
        data: Some(dir.path().join("element")),
        listen: element_addr.to_string(),
        admin_url: Some(admin.clone()),
        jwks_max_age_secs: 1,
        redis: redis.map(str::to_owned),
        element_id: Some("se-hb".to_owned()),
        heartbeat_ttl_secs: 3,
        ..Default::default()
    };
    let vc = VerifierConfig {
        max_key_age: Duration::from_secs(1),
        min_refresh_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let verifier = Arc::new(TokenVerifier::new(
        JwksSource::Url(format!("{admin}/.well-known/jwks.json")),
        vc,
        Arc::new(SystemClock),
    ));
    verifier.load().await.unwrap();
    let element = Element::build(ecfg, verifier, Arc::new(SystemClock)).await.unwrap();
    let (etx, erx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(element.run(el, async move {
        let _ = erx.await;
    }));
    Env {
        _dir: dir,
        admin,
        element: format!("http://{element_addr}"),
        node,
        stops: vec![etx, atx],
        http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
    }
}

impl Env {
    async fn login(&self) -> Value {
        let r = self
            .http
            .post(format!("{}/api/v1/auth/token", self.admin))
            .form(&[("grant_type", "password"), ("username", "admin"), ("password", PASSWORD)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    async fn token(&self) -> String {
        self.login().await["access_token"].as_str().unwrap().to_owned()
    }

    /// (status at the admin, status at the element) for a protected read with `token`.
    async fn both(&self, token: &str) -> (u16, u16) {
        let a = self.http.get(format!("{}/api/v1/users", self.admin)).bearer_auth(token).send().await.unwrap();
        let e = self.http.get(format!("{}/api/v1/element", self.element)).bearer_auth(token).send().await.unwrap();
        (a.status().as_u16(), e.status().as_u16())
    }

    fn sign(&self, claims: Value) -> String {
        self.node.signer().unwrap().sign_claims(&claims).unwrap()
    }
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn claims(now: i64) -> Value {
    json!({"iss": "artstore", "aud": "artstore", "sub": "admin", "iat": now, "nbf": now, "exp": now + 600,
           "jti": "t-1", "roles": ["admin"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_refuses_every_kind_of_bad_token() {
    let env = start(3).await;
    let good = env.token().await;
    assert_eq!(env.both(&good).await, (200, 200), "a fresh token works at both services");
    let now = chrono::Utc::now().timestamp();
    // Our own signer with crafted claims: proves the checks, not just the signature.
    assert_eq!(env.both(&env.sign(claims(now))).await, (200, 200), "the crafted baseline is valid");

    let kid = env.node.signer().unwrap().kid().to_owned();
    let mut bad: Vec<(&str, String)> = vec![];
    bad.push(("alg none", format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims(now)))));
    // HS256 keyed with the public key (the classic algorithm-confusion attack).
    let jwks: Value =
        env.http.get(format!("{}/.well-known/jwks.json", env.admin)).send().await.unwrap().json().await.unwrap();
    let public = serde_json::to_vec(&jwks["keys"][0]).unwrap();
    let input = format!("{}.{}", b64(&json!({"alg": "HS256", "typ": "JWT", "kid": kid})), b64(&claims(now)));
    let mac = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &public), input.as_bytes());
    bad.push(("hs256 with the public key", format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()))));
    // A key the cluster never published.
    let stranger = LocalSigner::generate().unwrap();
    bad.push(("unknown kid", stranger.sign_claims(&claims(now)).unwrap()));
    bad.push((
        "expired",
        env.sign(json!({"exp": now - 3600, "iat": now - 4000, "nbf": now - 4000}).merge(claims(now))),
    ));
    let mut c = claims(now);
    c["nbf"] = json!(now + 3600);
    bad.push(("not yet valid", env.sign(c)));
    let mut c = claims(now);
    c["aud"] = json!("somebody-else");
    bad.push(("wrong audience", env.sign(c)));
    let mut c = claims(now);
    c["iss"] = json!("evil");
    bad.push(("wrong issuer", env.sign(c)));
    let mut parts: Vec<String> = env.sign(claims(now)).split('.').map(str::to_owned).collect();
    let mut c = claims(now);
    c["sub"] = json!("somebody");
    parts[1] = b64(&c);
    bad.push(("tampered payload", parts.join(".")));
    bad.push(("refresh token", env.login().await["refresh_token"].as_str().unwrap().to_owned()));
    for (what, t) in &bad {
        assert_eq!(env.both(t).await, (401, 401), "{what} must be refused by both services");
    }

    // Rotation: the old key stays valid for its grace period, then is refused everywhere.
    let old = env.token().await;
    let r = env.http.post(format!("{}/api/v1/keys/rotate", env.admin)).bearer_auth(&good).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let new_kid = r.json::<Value>().await.unwrap()["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, kid);
    assert_eq!(env.both(&old).await, (200, 200), "within the grace period the old key is valid");
    let fresh = env.token().await;
    // Unknown-kid refreshes are limited to one per 100 ms here, and one may have run just
    // before the rotation (fetching the old set): past that window a new kid is fetched at
    // once (the 1 s key age is not what makes it known).
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(env.both(&fresh).await, (200, 200), "tokens of the new key work at once (refresh on unknown kid)");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let jwks: Value =
            env.http.get(format!("{}/.well-known/jwks.json", env.admin)).send().await.unwrap().json().await.unwrap();
        if jwks["keys"].as_array().unwrap().iter().all(|k| k["kid"] != kid.as_str()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the retired key was not dropped after its grace period");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // the element's key set max age
    assert_eq!(env.both(&old).await, (401, 401), "a key past its grace period is refused by both services");
    assert_eq!(env.both(&fresh).await, (200, 200));
    let (status, keys) = {
        let r = env.http.get(format!("{}/api/v1/keys", env.admin)).bearer_auth(&fresh).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200);
    assert!(keys.to_string().find("pkcs8").is_none(), "no private key material: {keys}");
    drop(env.stops);
}

trait Merge {
    fn merge(self, base: Value) -> Value;
}
impl Merge for Value {
    fn merge(self, mut base: Value) -> Value {
        if let (Some(b), Some(o)) = (base.as_object_mut(), self.as_object()) {
            for (k, v) in o {
                b.insert(k.clone(), v.clone());
            }
        }
        base
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mode_changes_are_committed_only_after_the_element_confirms() {
    let env = start(3600).await;
    let t = env.token().await;
    let post =
        |path: String, body: Value| env.http.post(format!("{}{path}", env.admin)).bearer_auth(&t).json(&body).send();
    let r = post(
        "/api/v1/elements".into(),
        json!({"id": "se-1", "url": env.element, "capacity_bytes": 1_000_000, "weight": 2, "dc": "eu-1"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let r = post("/api/v1/elements/se-1/mode".into(), json!({"mode": "ro"})).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let el = get_json(&env.http, &format!("{}/api/v1/element", env.element), &t).await;
    assert_eq!(el["mode"], "ro", "the element switched");
    assert_eq!(env.node.read(|s| s.elements["se-1"].mode.clone()), "ro", "and the admin committed it");

    let r = post("/api/v1/elements/se-1/mode".into(), json!({"mode": "rw"})).await.unwrap();
    assert_eq!(r.status(), 409, "modes only go forward");
    let r = post("/api/v1/elements/se-1/mode".into(), json!({"mode": "sideways"})).await.unwrap();
    assert_eq!(r.status(), 400);

    // An element nobody answers for: refused, nothing half-applied.
    let dead = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let r = post("/api/v1/elements".into(), json!({"id": "se-2", "url": dead})).await.unwrap();
    assert_eq!(r.status(), 201);
    let audit_before = env.node.read(|s| s.audit_head.seq);
    let r = post("/api/v1/elements/se-2/mode".into(), json!({"mode": "ro"})).await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "https://artstore.dev/problems/element-unreachable", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("se-2"), "{body}");
    assert_eq!(env.node.read(|s| s.elements["se-2"].mode.clone()), "edit");
    assert_eq!(env.node.read(|s| s.audit_head.seq), audit_before, "no change, no audit entry");
    // The registry lists both; without Redis the admin probes each element itself: se-1
    // answers (with its mode and space), se-2 does not.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let list = loop {
        let r = env.http.get(format!("{}/api/v1/elements", env.admin)).bearer_auth(&t).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let list = r.json::<Value>().await.unwrap();
        if list["items"][0]["health"]["status"] == "up" {
            break list;
        }
        assert!(std::time::Instant::now() < deadline, "se-1 never probed up: {list}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(list["items"][0]["health"]["reported_mode"], "ro", "{list}");
    assert!(list["items"][0]["health"]["total_bytes"].as_u64().unwrap() > 0, "{list}");
    // The probe carries the element's document count and its background workers.
    assert_eq!(list["items"][0]["health"]["documents"], 0, "{list}");
    let workers = &list["items"][0]["health"]["workers"];
    assert!(workers["disposition"].is_object(), "{list}");
    assert_eq!(workers["cache"]["kind"], "embedded", "{list}");
    assert!(workers["outbox"]["status"].is_string(), "{list}");
    assert_eq!(list["items"][1]["health"]["status"], "down", "{list}");
    drop(env.stops);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_resolve_retention_policies_through_the_admin() {
    let mut env = start(3600).await;
    let t = env.token().await;
    let r = env
        .http
        .post(format!("{}/api/v1/retention-policies", env.admin))
        .bearer_auth(&t)
        .json(&json!({"name": "tax-records", "term": "P7Y", "mode": "compliance", "disposition": "dispose"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let upload = |policy: &'static str| {
        let form = reqwest::multipart::Form::new()
            .text("retention_policy", policy)
            .part("file", reqwest::multipart::Part::bytes(b"invoice 42".to_vec()).file_name("invoice.txt"));
        env.http.post(format!("{}/api/v1/files", env.element)).bearer_auth(&t).multipart(form).send()
    };
    let r = upload("tax-records").await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let sc: Value = r.json().await.unwrap();
    assert_eq!(sc["retention"]["policy"], "tax-records");
    assert_eq!(sc["retention"]["mode"], "compliance");
    assert_eq!(sc["retention"]["disposition"], "dispose");
    let until = chrono::DateTime::parse_from_rfc3339(sc["retention"]["retain_until"].as_str().unwrap()).unwrap();
    let expected = chrono::Utc::now().checked_add_months(chrono::Months::new(84)).unwrap();
    assert!((until.timestamp() - expected.timestamp()).abs() < 120, "{until} vs {expected}");
    // Compliance: even the admin cannot delete it now.
    let id = sc["file_id"].as_str().unwrap();
    let r = env.http.delete(format!("{}/api/v1/files/{id}", env.element)).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status(), 403, "compliance retention forbids the delete");
    // The policy is in use at the admin and can no longer be deleted.
    assert!(env.node.read(|s| s.policies["tax-records"].in_use));
    let r = env
        .http
        .delete(format!("{}/api/v1/retention-policies/tax-records", env.admin))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = upload("no-such-policy").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["type"], "https://artstore.dev/problems/unknown-retention-policy");
    // Policy and explicit dates together are refused.
    let form = reqwest::multipart::Form::new()
        .text("retention_policy", "tax-records")
        .text("retain_until", "2030-01-01T00:00:00Z")
        .part("file", reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("x.txt"));
    let r =
        env.http.post(format!("{}/api/v1/files", env.element)).bearer_auth(&t).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // The admin goes away: the cached policy still resolves, an unknown one cannot (503),
    // and uploads without a policy are unaffected.
    let _ = env.stops.pop().unwrap().send(());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = upload("tax-records").await.unwrap();
    assert_eq!(r.status(), 201, "cached policies resolve without the admin");
    let r = upload("other-policy").await.unwrap();
    assert_eq!(r.status(), 503);
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(b"plain".to_vec()).file_name("p.txt"));
    let r =
        env.http.post(format!("{}/api/v1/files", env.element)).bearer_auth(&t).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 201);
    drop(env.stops);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn element_heartbeats_reach_the_admin_through_redis() {
    // Its own database on the shared Redis (scripts/services.sh starts it; missing fails).
    let url = "redis://127.0.0.1:6379/12";
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.expect("redis on 127.0.0.1:6379 (scripts/services.sh)");
    let () = redis::cmd("FLUSHDB").query_async(&mut c).await.unwrap();
    let env = start_with(3600, Some(url)).await;
    let t = env.token().await;
    let r = env
        .http
        .post(format!("{}/api/v1/elements", env.admin))
        .bearer_auth(&t)
        .json(&json!({"id": "se-hb", "url": env.element}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = get_json(&env.http, &format!("{}/api/v1/elements/se-hb", env.admin), &t).await;
        let h = &v["health"];
        if h["status"] == "up" {
            assert!(h["free_bytes"].as_u64().unwrap() > 0, "{v}");
            assert!(h["total_bytes"].as_u64().unwrap() >= h["free_bytes"].as_u64().unwrap());
            assert_eq!(h["reported_mode"], "edit");
            // The heartbeat carries what the element's /health/ready shows.
            assert_eq!(h["documents"], 0, "{v}");
            assert_eq!(h["workers"]["cache"]["kind"], "embedded", "{v}");
            assert!(h["workers"]["disposition"].is_object(), "{v}");
            assert!(h["workers"]["outbox"]["status"].is_string(), "{v}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no heartbeat folded into health: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(env.stops);
}
