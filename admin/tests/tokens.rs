//! The token endpoint: every grant, the rate limit on failed logins, and tokens checked by a
//! JWT verification written here on `ring` alone (independent of the signing code and of
//! the `jsonwebtoken` crate the services use) against the published JWKS.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use support::*;

/// Verifies an RS256 compact JWS against a JWKS document with ring only; answers the claims.
fn verify_independently(token: &str, jwks: &Value) -> Result<Value, String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err("not three parts".into());
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {}", header["alg"]));
    }
    let kid = header["kid"].as_str().ok_or("no kid")?;
    let key = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid).ok_or("kid not in jwks")?;
    let n = URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(key["e"].as_str().unwrap()).unwrap();
    let public = ring::signature::RsaPublicKeyComponents { n: &n, e: &e };
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).map_err(|e| e.to_string())?;
    let input = format!("{}.{}", parts[0], parts[1]);
    public
        .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, input.as_bytes(), &sig)
        .map_err(|_| "signature does not verify".to_owned())?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_gives_tokens_an_independent_verifier_accepts() {
    let mut c = Cluster::start(1, |_| {}).await;
    c.leader_among(&[1]).await;
    let base = c.url(1);
    let r = login(&base, "admin", PASSWORD).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 900);
    let jwks: Value = http().get(format!("{base}/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    for k in jwks["keys"].as_array().unwrap() {
        assert!(k.get("d").is_none() && k.get("p").is_none(), "private members in the jwks: {k}");
        assert_eq!(k["alg"], "RS256");
    }
    let claims = verify_independently(t["access_token"].as_str().unwrap(), &jwks).unwrap();
    assert_eq!(claims["iss"], "artstore");
    assert_eq!(claims["aud"], "artstore");
    assert_eq!(claims["sub"], "admin");
    assert_eq!(claims["roles"], json!(["admin"]));
    let (iat, exp, nbf) =
        (claims["iat"].as_i64().unwrap(), claims["exp"].as_i64().unwrap(), claims["nbf"].as_i64().unwrap());
    assert_eq!(exp - iat, 900);
    assert!(nbf <= iat + 1);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    // A tampered payload fails the independent check too.
    let access = t["access_token"].as_str().unwrap();
    let mut parts: Vec<String> = access.split('.').map(str::to_owned).collect();
    let mut payload = claims.clone();
    payload["roles"] = json!(["admin", "retention:bypass"]);
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
    assert!(verify_independently(&parts.join("."), &jwks).is_err());

    // The refresh token is no access token, but gets new ones.
    let refresh = t["refresh_token"].as_str().unwrap();
    let (status, _) = get_json(&base, "/api/v1/users", refresh).await;
    assert_eq!(status, 401, "a refresh token must not work as an access token");
    let r = http()
        .post(format!("{base}/api/v1/auth/token"))
        .json(&json!({"grant_type": "refresh_token", "refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t2: Value = r.json().await.unwrap();
    let (status, users) = get_json(&base, "/api/v1/users", t2["access_token"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert!(users["items"][0].get("password_hash").is_none(), "hashes never leave: {users}");
    c.nodes.get_mut(&1).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_accounts_use_client_credentials_and_users_lose_access_when_disabled() {
    let mut c = Cluster::start(1, |_| {}).await;
    c.leader_among(&[1]).await;
    let base = c.url(1);
    let admin = admin_token(&base).await;
    let r =
        post_json(&base, "/api/v1/service-accounts", &admin, json!({"client_id": "ingester-1", "roles": ["writer"]}))
            .await;
    assert_eq!(r.status(), 201);
    let sa: Value = r.json().await.unwrap();
    let secret = sa["client_secret"].as_str().unwrap().to_owned();
    let (_, listed) = get_json(&base, "/api/v1/service-accounts/ingester-1", &admin).await;
    assert!(listed.get("client_secret").is_none() && listed.get("secret_hash").is_none(), "{listed}");

    let form = |id: &str, s: &str| {
        http()
            .post(format!("{base}/api/v1/auth/token"))
            .form(&[("grant_type", "client_credentials"), ("client_id", id), ("client_secret", s)])
            .send()
    };
    let r = form("ingester-1", &secret).await.unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    let jwks: Value = http().get(format!("{base}/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let claims = verify_independently(t["access_token"].as_str().unwrap(), &jwks).unwrap();
    assert_eq!(claims["sub"], "ingester-1");
    assert_eq!(claims["roles"], json!(["writer"]));
    // HTTP Basic works too; a wrong secret is invalid_client.
    let r = http()
        .post(format!("{base}/api/v1/auth/token"))
        .basic_auth("ingester-1", Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = form("ingester-1", "nope").await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    // A writer cannot manage users.
    let (status, _) = get_json(&base, "/api/v1/users", t["access_token"].as_str().unwrap()).await;
    assert_eq!(status, 403);

    // A user created, logging in, then disabled: no login, no refresh.
    let r = post_json(
        &base,
        "/api/v1/users",
        &admin,
        json!({"username": "ana", "password": "ana-password", "roles": ["reader"]}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let r = login(&base, "ana", "ana-password").await;
    assert_eq!(r.status(), 200);
    let refresh = r.json::<Value>().await.unwrap()["refresh_token"].as_str().unwrap().to_owned();
    let r = http()
        .patch(format!("{base}/api/v1/users/ana"))
        .bearer_auth(&admin)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(login(&base, "ana", "ana-password").await.status(), 400);
    let r = http()
        .post(format!("{base}/api/v1/auth/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Bad requests are problem+json with the OAuth2 error code.
    let r = http().post(format!("{base}/api/v1/auth/token")).form(&[("grant_type", "implicit")]).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unsupported_grant_type");
    c.nodes.get_mut(&1).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_rate_limited_per_user_and_per_address() {
    let mut c = Cluster::start(1, |cfg| {
        cfg.login_max_failures = 3;
        cfg.login_max_failures_per_address = 6;
        cfg.login_window_secs = 60;
    })
    .await;
    c.leader_among(&[1]).await;
    let base = c.url(1);
    for _ in 0..3 {
        assert_eq!(login(&base, "admin", "wrong").await.status(), 400);
    }
    // Now even the right password waits.
    let r = login(&base, "admin", PASSWORD).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(r.json::<Value>().await.unwrap()["type"], "https://artstore.dev/problems/too-many-failed-logins");
    // Per address: failures spread over other names add up.
    for i in 0..3 {
        assert_eq!(login(&base, &format!("ghost{i}"), "x").await.status(), 400);
    }
    assert_eq!(login(&base, "ghost9", "x").await.status(), 429, "the address has used up its failures");
    c.nodes.get_mut(&1).unwrap().stop().await;
}

async fn login_from(base: &str, user: &str, headers: &[(&str, &str)]) -> u16 {
    let mut rb = reqwest::Client::new().post(format!("{base}/api/v1/auth/token")).form(&[
        ("grant_type", "password"),
        ("username", user),
        ("password", "wrong"),
    ]);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap().status().as_u16()
}

/// A client cannot escape the per-address limit by naming another address: the header
/// admin nodes use between themselves needs the cluster secret, and `X-Forwarded-For` is
/// believed only from a trusted proxy, where it separates the clients behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_limits_count_the_real_client() {
    let mut c = Cluster::start(1, |cfg| {
        cfg.login_max_failures = 100;
        cfg.login_max_failures_per_address = 3;
        cfg.login_window_secs = 60;
        cfg.cluster_secret = Some("s3cret".into());
        cfg.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    c.leader_among(&[1]).await;
    let base = c.url(1);
    // Behind the (trusted) loopback proxy, each X-Forwarded-For client has its own count.
    for i in 0..3 {
        assert_eq!(login_from(&base, &format!("a{i}"), &[("x-forwarded-for", "203.0.113.1")]).await, 400);
    }
    assert_eq!(login_from(&base, "a9", &[("x-forwarded-for", "203.0.113.1")]).await, 429);
    assert_eq!(login_from(&base, "b0", &[("x-forwarded-for", "203.0.113.2")]).await, 400, "another client");
    // A forged node-to-node header, without the cluster secret, changes nothing: these all
    // count for the same client (203.0.113.3).
    for i in 0..3 {
        let forged = format!("198.51.100.{i}");
        let h = [("x-forwarded-for", "203.0.113.3"), ("x-artstore-forwarded-for", forged.as_str())];
        assert_eq!(login_from(&base, &format!("c{i}"), &h).await, 400);
    }
    let h = [("x-forwarded-for", "203.0.113.3"), ("x-artstore-forwarded-for", "198.51.100.77")];
    assert_eq!(login_from(&base, "c9", &h).await, 429, "a forged x-artstore-forwarded-for escaped the limit");
    // With the secret (what a forwarding admin node sends) the header is believed.
    let node = |addr: &'static str| [("x-artstore-forwarded-for", addr), ("x-artstore-cluster-secret", "s3cret")];
    for i in 0..3 {
        assert_eq!(login_from(&base, &format!("d{i}"), &node("198.51.100.78")).await, 400);
    }
    assert_eq!(login_from(&base, "d9", &node("198.51.100.78")).await, 429);
    assert_eq!(login_from(&base, "e0", &node("198.51.100.79")).await, 400, "another client, as the node said");
    c.nodes.get_mut(&1).unwrap().stop().await;
}

/// The limits hold for the cluster: failures spread over every node add up at the leader,
/// and a client that moves to another node after being refused is refused there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_logins_count_for_the_whole_cluster() {
    let mut c = Cluster::start(3, |cfg| {
        cfg.login_max_failures = 4;
        cfg.login_max_failures_per_address = 100;
        cfg.login_window_secs = 60;
    })
    .await;
    let leader = c.leader_among(&[1, 2, 3]).await;
    // Four failures, spread over the three nodes (followers first).
    let mut order: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    order.push(leader);
    order.push(order[0]);
    for id in &order[..4] {
        assert_eq!(login(&c.url(*id), "admin", "wrong").await.status(), 400, "via node {id}");
    }
    for id in [1, 2, 3] {
        let r = login(&c.url(id), "admin", PASSWORD).await;
        assert_eq!(r.status(), 429, "node {id} knows the cluster's count");
    }
    // Another user is not affected.
    assert_eq!(login(&c.url(order[0]), "nobody", "wrong").await.status(), 400);
    for n in c.nodes.values_mut() {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served() {
    let mut c = Cluster::start(1, |_| {}).await;
    c.leader_among(&[1]).await;
    let base = c.url(1);
    for (method, path) in artstore_admin::api::ROUTES {
        let p = path.replace("{id}", "1").replace("{username}", "u").replace("{client_id}", "c").replace("{name}", "n");
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = http().request(m, format!("{base}{p}")).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.bytes().await.unwrap();
        assert!(status != 405 && !(status == 404 && body.is_empty()), "{method} {path} is not routed ({status})");
    }
    c.nodes.get_mut(&1).unwrap().stop().await;
}

/// The public API limits requests per client address (429 problem+json with Retry-After),
/// never health or Raft traffic, counts clients behind a trusted proxy apart, and answers
/// CORS preflights only for allowed origins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_api_rate_limits_and_cors() {
    let mut c = Cluster::start(1, |cfg| {
        cfg.rate_limit_per_address = 5.0;
        cfg.trusted_proxies = vec!["127.0.0.1".into()];
        cfg.cors_origins = vec!["https://archive.example.org".into()];
    })
    .await;
    c.leader_among(&[1]).await;
    let base = c.url(1);
    let http = reqwest::Client::new();
    let get = |who: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move { http.get(format!("{base}/.well-known/jwks.json")).header("x-forwarded-for", who).send().await.unwrap() }
    };
    // A burst of twice the rate passes, then 429.
    let mut statuses = Vec::new();
    for _ in 0..14 {
        statuses.push(get("203.0.113.7").await.status().as_u16());
    }
    assert!(statuses[..10].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let r = get("203.0.113.7").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(r.json::<Value>().await.unwrap()["type"], "https://artstore.dev/problems/rate-limited");
    // Another client behind the same proxy has its own allowance; health is never limited.
    assert_eq!(get("203.0.113.8").await.status(), 200);
    for _ in 0..30 {
        assert_eq!(http.get(format!("{base}/health/live")).send().await.unwrap().status(), 200);
    }
    // After a second, the client may go on.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(get("203.0.113.7").await.status(), 200);

    // CORS: an allowed origin's preflight is answered, another origin gets no CORS headers.
    let pre = |origin: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.request(reqwest::Method::OPTIONS, format!("{base}/api/v1/retention-policies"))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("x-forwarded-for", "203.0.113.9")
                .send()
                .await
                .unwrap()
        }
    };
    let ok = pre("https://archive.example.org").await;
    assert_eq!(ok.status(), 204);
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://archive.example.org");
    let no = pre("https://evil.example").await;
    assert!(no.headers().get("access-control-allow-origin").is_none());
    // A JSON body over the limit is refused before it is read.
    let token = admin_token(&base).await;
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(2 << 20));
    let r = http
        .post(format!("{base}/api/v1/retention-policies"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .header("x-forwarded-for", "203.0.113.10")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    c.nodes.get_mut(&1).unwrap().stop().await;
}
