//! An in-process storage element for API tests: a temp root, a local signing key, a clock
//! the test moves, and helpers that speak HTTP to the router without a socket.
#![allow(dead_code)]

use artstore_shared::ManualClock;
use artstore_shared::auth::{JWKS_FILE, JwksSource, LocalSigner, TokenVerifier, VerifierConfig};
use artstore_storage_element::Store;
use artstore_storage_element::config::ElementConfig;
use artstore_storage_element::server::Element;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt as _;

pub const BOUNDARY: &str = "XxArtStoreBoundaryxX";

pub struct Harness {
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub signer: LocalSigner,
    pub clock: Arc<ManualClock>,
    pub router: Router,
    pub store: Arc<Store>,
    applier: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        // A reopened element must not share the WAL with a previous run's applier.
        if let Some(a) = self.applier.take() {
            a.abort();
        }
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not json ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The problem type slug of an error answer (and checks it is problem+json).
    pub fn problem(&self) -> String {
        assert_eq!(
            self.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "status {} body {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        let t = self.json()["type"].as_str().unwrap_or_default().to_owned();
        t.rsplit('/').next().unwrap_or_default().to_owned()
    }
}

impl Harness {
    pub async fn new() -> Harness {
        Self::with(|_| {}).await
    }

    pub async fn with(tune: impl FnOnce(&mut ElementConfig)) -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let mut h = Self::open(&dir, tune).await;
        h._tmp = Some(tmp);
        h
    }

    /// Opens (or reopens) an element in `dir`; the caller keeps the folder.
    pub async fn open(dir: &Path, tune: impl FnOnce(&mut ElementConfig)) -> Harness {
        let signer = LocalSigner::load_or_create(&dir.join("keys")).unwrap();
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let verifier = Arc::new(TokenVerifier::new(
            JwksSource::File(dir.join("keys").join(JWKS_FILE)),
            VerifierConfig::default(),
            clock.clone(),
        ));
        let mut cfg = ElementConfig { data: Some(dir.join("element")), ..Default::default() };
        tune(&mut cfg);
        let element = Element::build(cfg, verifier, clock.clone()).await.unwrap();
        Harness {
            dir: dir.to_owned(),
            _tmp: None,
            signer,
            clock,
            router: element.router,
            store: element.store,
            applier: element.applier,
        }
    }

    /// Shuts down like a real element does: work that followed replies is finished and
    /// the journals are flushed, so the folder can be reopened.
    pub async fn close(self) {
        self.store.flush().await.unwrap();
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("element")
    }

    pub fn token(&self, roles: &[&str]) -> String {
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        self.signer
            .issue("tester", &roles, Duration::from_secs(3650 * 86400), chrono::Utc::now() - chrono::Duration::hours(1))
            .unwrap()
    }

    pub fn admin(&self) -> String {
        self.token(&["admin"])
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let r = self.router.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        Resp { status, headers, body }
    }

    pub async fn call(&self, method: Method, uri: &str, token: Option<&str>, json: Option<Value>) -> Resp {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let body = match json {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&v).unwrap())
            }
            None => Body::empty(),
        };
        self.send(b.body(body).unwrap()).await
    }

    pub async fn get(&self, uri: &str) -> Resp {
        self.call(Method::GET, uri, Some(&self.admin()), None).await
    }

    /// Uploads `content` as `name` with extra text parts; returns the raw response.
    pub async fn upload_with(
        &self,
        token: &str,
        name: &str,
        content: &[u8],
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Resp {
        let body = multipart(name, content, fields);
        let mut b = Request::post("/api/v1/files")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Body::from(body)).unwrap()).await
    }

    /// Uploads and expects 201; returns the sidecar.
    pub async fn upload(&self, name: &str, content: &[u8], fields: &[(&str, &str)]) -> Value {
        let r = self.upload_with(&self.admin(), name, content, fields, &[]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    }

    pub async fn set_mode(&self, mode: &str) -> Resp {
        self.call(Method::POST, "/api/v1/element/mode", Some(&self.admin()), Some(serde_json::json!({"mode": mode})))
            .await
    }

    /// Every regular file under a folder, relative to it.
    pub fn files_under(&self, rel: &str) -> Vec<String> {
        let base = self.root().join(rel);
        let mut out: Vec<String> = walkdir::WalkDir::new(&base)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| e.path().strip_prefix(&base).unwrap().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }
}

pub fn multipart(name: &str, content: &[u8], fields: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub fn sha256_hex(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b).as_ref().iter().map(|x| format!("{x:02x}")).collect()
}
