//! The generated front-proxy configuration, run by a real nginx, routes every request to the
//! role the public routing table names (the same decision standalone's one port makes).

mod support;

use artstore_shared::front_proxy::{ProxyConfig, nginx};
use artstore_shared::routing::{self, Target};
use axum::http::Method;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A backend that answers every request with its role's name and the id of the request.
async fn stub(role: &'static str) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| async move {
        let rid = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        ([("x-role", role.to_owned()), ("x-seen-request-id", rid)], format!("{role} {}", req.uri()))
    });
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

fn nginx_bin() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!("nginx is not installed (scripts/services.sh installs nginx-light)");
}

struct Nginx {
    dir: PathBuf,
    bin: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new(&self.bin).arg("-p").arg(&self.dir).args(["-c", "nginx.conf", "-s", "stop"]).status();
    }
}

/// Runs nginx with `snippet` in its own prefix folder; the same wrapper deploy/local-cluster.sh writes.
fn start_nginx(dir: &Path, snippet: &str) -> Nginx {
    std::fs::write(dir.join("artstore.conf"), snippet).unwrap();
    let user =
        if Command::new("id").arg("-u").output().unwrap().stdout.starts_with(b"0") { "user root;\n" } else { "" };
    let conf = format!(
        "{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 512; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/tmp-body;\n  proxy_temp_path {d}/tmp-proxy;\n  \
         fastcgi_temp_path {d}/tmp-fcgi;\n  uwsgi_temp_path {d}/tmp-uwsgi;\n  scgi_temp_path {d}/tmp-scgi;\n  \
         include {d}/artstore.conf;\n}}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let bin = nginx_bin();
    let t = Command::new(&bin).arg("-p").arg(dir).args(["-c", "nginx.conf", "-t"]).output().unwrap();
    assert!(
        t.status.success(),
        "nginx -t refused the generated configuration:\n{}",
        String::from_utf8_lossy(&t.stderr)
    );
    let s = Command::new(&bin).arg("-p").arg(dir).args(["-c", "nginx.conf"]).stdin(Stdio::null()).status().unwrap();
    assert!(s.success(), "nginx did not start: {}", std::fs::read_to_string(dir.join("error.log")).unwrap_or_default());
    Nginx { dir: dir.to_owned(), bin }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_routes_every_request_like_the_one_port() {
    let tmp = tempfile::tempdir().unwrap();
    let (admin, ingester, query) = (stub("admin").await, stub("ingester").await, stub("query").await);
    let ui = stub("ui").await;
    let port = support::free_port();
    let snippet = nginx(&ProxyConfig {
        listen: format!("127.0.0.1:{port}"),
        admin: vec![admin],
        ingester: vec![ingester],
        query: vec![query],
        ui: vec![ui],
        ..Default::default()
    });
    let _nginx = start_nginx(tmp.path(), &snippet);
    let front = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get(format!("{front}/")).send().await.is_err() {
        assert!(Instant::now() < deadline, "nginx does not answer on {front}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every rule's path (and one level below it, and with a query string), plus the edges.
    let mut paths: Vec<String> = vec![
        "/".into(),
        "/documents/f1".into(),
        "/static/app.css".into(),
        "/api".into(),
        "/api/v2/anything".into(),
        "/api/v1/usersx".into(),
        "/api/v1/files//content".into(),
        "/api/v1/files/a%2Fb/content".into(),
        "/api/v1/files/f1/content/extra".into(),
        "/api/v1/files/f1/unknown".into(),
        "/.well-known/jwks.jsonx".into(),
        "/healthz".into(),
        "/metrics/x".into(),
    ];
    for r in routing::TABLE {
        let d = r.path.describe();
        let base = d.split(", ").next().unwrap().replace("{id}", "f-1.x");
        paths.push(base.clone());
        paths.push(format!("{base}?q=a/b&limit=2"));
        paths.push(format!("{base}/child"));
    }
    let methods =
        [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];
    let mut checked = 0;
    for path in &paths {
        for m in &methods {
            let want = routing::target(m, path.split('?').next().unwrap());
            let r = http.request(m.clone(), format!("{front}{path}")).send().await.unwrap();
            match want {
                Some(t) => {
                    let got = r.headers().get("x-role").map(|v| v.to_str().unwrap().to_owned());
                    assert_eq!(got.as_deref(), Some(t.as_str()), "{m} {path}: status {}", r.status());
                    let rid = r.headers().get("x-seen-request-id").unwrap().to_str().unwrap();
                    assert_eq!(rid.len(), 32, "{m} {path}: the proxy adds a request id");
                    if *m != Method::HEAD && t != Target::Ui {
                        let body = r.text().await.unwrap();
                        assert!(body.ends_with(path.as_str()), "{m} {path}: the backend saw {body}");
                    }
                }
                None => {
                    assert_eq!(r.status(), 404, "{m} {path}");
                    assert!(r.headers().get("x-role").is_none(), "{m} {path} reached a role");
                    assert_eq!(r.headers()["content-type"], "application/problem+json", "{m} {path}");
                    if *m != Method::HEAD {
                        let p: serde_json::Value = r.json().await.unwrap();
                        assert_eq!(p["status"], 404);
                        assert_eq!(p["type"], "https://artstore.dev/problems/not-found");
                    }
                }
            }
            checked += 1;
        }
    }
    // A request id the client sends is kept.
    let r = http.get(format!("{front}/api/v1/search")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(r.headers()["x-seen-request-id"], "abc-123");
    eprintln!("{checked} requests routed as the table says");
}
