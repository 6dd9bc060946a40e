//! The OpenAPI document: it parses, names every route the router serves and no other, every
//! operation has answers, errors are problem+json; and the router answers as the document
//! says (documented statuses, required headers and their constants, media types, required
//! members, problem type slugs, which operations need a token), in-process, with no element.

use artstore_ingester::api::{OPENAPI, ROUTES};
use artstore_ingester::config::IngesterConfig;
use artstore_ingester::server::IngesterServer;
use artstore_shared::ManualClock;
use artstore_shared::auth::{JWKS_FILE, JwksSource, LocalSigner, TokenVerifier, VerifierConfig};
use axum::body::Body;
use http_body_util::BodyExt as _;
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt as _;

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];
/// The routes every service gets from the shared health module.
const HEALTH_ROUTES: &[&str] = &["/health/live", "/health/ready", "/metrics"];
const PROBLEM: &str = "#/components/schemas/Problem";

fn doc() -> Value {
    serde_json::from_str(OPENAPI).expect("openapi.json is not JSON")
}

/// Every operation: (path, method, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            if METHODS.contains(&method.as_str()) {
                ops.push((path.clone(), method.clone(), op.clone()));
            }
        }
    }
    ops
}

/// Follows `$ref`s inside the document.
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r} is not a local reference"));
        v = doc.pointer(pointer).unwrap_or_else(|| panic!("{r} does not resolve"));
    }
    v
}

/// The members a schema requires, through `$ref` and `allOf`.
fn required_members(doc: &Value, schema: &Value) -> Vec<String> {
    let s = resolve(doc, schema);
    let mut out: Vec<String> =
        s["required"].as_array().into_iter().flatten().filter_map(|m| m.as_str().map(str::to_owned)).collect();
    for part in s["allOf"].as_array().into_iter().flatten() {
        out.extend(required_members(doc, part));
    }
    out
}

/// Whether an operation needs a token: its own `security`, else the document's.
fn secured(doc: &Value, op: &Value) -> bool {
    let sec = op.get("security").unwrap_or(&doc["security"]);
    sec.as_array().is_some_and(|s| !s.is_empty())
}

fn walk_refs(doc: &Value, v: &Value, at: &str) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref") {
                let r = r.as_str().unwrap_or_else(|| panic!("{at}: $ref is not a string"));
                let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{at}: {r} is not local"));
                assert!(doc.pointer(pointer).is_some(), "{at}: {r} does not resolve");
            }
            for (k, v) in m {
                walk_refs(doc, v, &format!("{at}/{k}"));
            }
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| walk_refs(doc, v, &format!("{at}/{i}"))),
        _ => {}
    }
}

#[test]
fn the_document_names_every_route_the_router_serves_and_no_other() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "ArtStore ingester");
    let paths = doc["paths"].as_object().expect("paths");
    for (method, path) in ROUTES {
        assert!(paths.get(*path).and_then(|p| p.get(*method)).is_some(), "{method} {path} is not in openapi.json");
    }
    let routes: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    assert_eq!(routes.len(), ROUTES.len(), "ROUTES lists a route twice");
    let documented: BTreeSet<(String, String)> =
        operations(&doc).into_iter().filter(|(p, _, _)| p.starts_with("/api/")).map(|(p, m, _)| (m, p)).collect();
    let extra: Vec<_> = documented.difference(&routes).collect();
    assert!(extra.is_empty(), "openapi.json documents routes the router does not serve: {extra:?}");
    for path in paths.keys().filter(|p| !p.starts_with("/api/")) {
        assert!(HEALTH_ROUTES.contains(&path.as_str()), "{path} is neither an API route nor a health route");
    }
}

#[test]
fn every_operation_answers_and_its_errors_are_problems() {
    let doc = doc();
    walk_refs(&doc, &doc, "#");
    let problem = &doc["components"]["schemas"]["Problem"];
    for m in ["type", "title", "status", "detail"] {
        assert!(
            problem["required"].as_array().is_some_and(|r| r.contains(&Value::from(m))),
            "Problem must require {m}"
        );
        assert!(problem["properties"].get(m).is_some(), "Problem does not describe {m}");
    }
    let mut ids = HashSet::new();
    for (path, method, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
        let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path} has no responses"));
        assert!(!responses.is_empty(), "{method} {path} has no responses");
        assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path} documents no success answer");
        for (status, r) in responses {
            let code: u16 = status.parse().unwrap_or_else(|_| panic!("{method} {path}: status {status:?}"));
            let r = resolve(&doc, r);
            assert!(r["description"].is_string(), "{method} {path} {status} has no description");
            if method == "head" {
                assert!(r.get("content").is_none(), "{method} {path} {status}: a HEAD answer has no body");
                continue;
            }
            if code >= 400 && path.starts_with("/api/") {
                let schema = &r["content"]["application/problem+json"]["schema"];
                assert_eq!(
                    schema["$ref"], PROBLEM,
                    "{method} {path} {status} is not an application/problem+json Problem"
                );
            }
        }
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    router: axum::Router,
    token: String,
}

/// An ingester with no storage element, and an admin's token.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = LocalSigner::load_or_create(&dir.path().join("keys")).expect("keys");
    let token = signer
        .issue(
            "alice",
            &["admin".to_owned()],
            Duration::from_secs(3600),
            chrono::Utc::now() - chrono::Duration::minutes(5),
        )
        .expect("token");
    let verifier = Arc::new(TokenVerifier::new(
        JwksSource::File(dir.path().join("keys").join(JWKS_FILE)),
        VerifierConfig::default(),
        Arc::new(ManualClock::new(chrono::Utc::now())),
    ));
    let cfg =
        IngesterConfig { data: Some(dir.path().join("data")), elements: Some(String::new()), ..Default::default() };
    let server = IngesterServer::build(cfg, verifier).await.expect("ingester");
    Setup { _dir: dir, router: server.router, token }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: bytes::Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn problem_type(&self) -> String {
        self.json()["type"].as_str().and_then(|t| t.rsplit('/').next()).unwrap_or_default().to_owned()
    }
}

async fn call(router: &axum::Router, method: &str, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
    let mut rb = http::Request::builder().method(method.to_uppercase().as_str()).uri(uri);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = router.clone().oneshot(rb.body(Body::from(body)).expect("request")).await.expect("infallible");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Answer { status, headers, body }
}

/// Checks an answer against the document: its status is documented for the operation, every
/// header the document requires is there (with the constant it names), and a body has a
/// documented media type, the schema's required members, and a problem type slug the
/// document lists.
fn conforms(doc: &Value, method: &str, path: &str, a: &Answer) {
    let what = format!("{method} {path} answered {}", a.status);
    let responses = doc["paths"][path][method]["responses"].as_object().unwrap_or_else(|| panic!("{what}: no such op"));
    let r = responses.get(&a.status.to_string()).or_else(|| responses.get("default")).unwrap_or_else(|| {
        panic!("{what}, which openapi.json does not document: {}", String::from_utf8_lossy(&a.body))
    });
    let r = resolve(doc, r);
    for (name, h) in r["headers"].as_object().into_iter().flatten() {
        let h = resolve(doc, h);
        if h["required"] != true {
            continue;
        }
        let v = a.header(name).unwrap_or_else(|| panic!("{what} without the required header {name}"));
        if let Some(c) = h["schema"]["const"].as_str() {
            assert_eq!(v, c, "{what}: header {name}");
        }
    }
    if method == "head" || a.body.is_empty() {
        return;
    }
    let ct = a.header("content-type").unwrap_or("").split(';').next().unwrap_or("").trim().to_owned();
    let content = r["content"].as_object().unwrap_or_else(|| panic!("{what} with a {ct} body; the document has none"));
    let media = content.get(&ct).unwrap_or_else(|| panic!("{what} with {ct}; the document says {:?}", content.keys()));
    if ct == "application/json" || ct.ends_with("+json") {
        let v: Value = serde_json::from_slice(&a.body).unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"));
        for m in required_members(doc, &media["schema"]) {
            assert!(v.get(&m).is_some(), "{what} without the required member {m}: {v}");
        }
    }
    if ct == "application/problem+json" {
        let slug = a.problem_type();
        let listed =
            doc["components"]["schemas"]["Problem"]["properties"]["type"]["description"].as_str().unwrap_or("");
        assert!(
            listed.split([' ', ',', '.', ':']).any(|w| w == slug),
            "{what} with problem type {slug:?}, which openapi.json does not list"
        );
    }
}

#[tokio::test]
async fn the_router_answers_as_the_document_says() {
    let doc = doc();
    let s = setup().await;
    let bearer = format!("Bearer {}", s.token);
    for (path, method, op) in operations(&doc) {
        let uri = path.replace("{id}", &uuid::Uuid::now_v7().to_string());
        // Without a token: the operations the document secures refuse, the others answer.
        let a = call(&s.router, &method, &uri, &[("tus-resumable", "1.0.0")], Vec::new()).await;
        assert_ne!(a.status, 405, "{method} {path} is not served");
        if secured(&doc, &op) {
            assert_eq!(a.status, 401, "{method} {path} is secured in openapi.json but answered without a token");
        } else {
            assert_ne!(a.status, 401, "{method} {path} has no security in openapi.json but wants a token");
        }
        conforms(&doc, &method, &path, &a);
        // With a token, a bare request: served (not the fallback), and as documented.
        let a =
            call(&s.router, &method, &uri, &[("tus-resumable", "1.0.0"), ("authorization", &bearer)], Vec::new()).await;
        assert_ne!(a.status, 405, "{method} {path} is not served");
        if a.status == 404 && method != "head" {
            assert_ne!(a.json()["detail"], "no such route", "{method} {path} is not served");
        }
        conforms(&doc, &method, &path, &a);
    }
    let a = call(&s.router, "get", "/api/v1/openapi.json", &[], Vec::new()).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, OPENAPI.as_bytes(), "the served document is not openapi.json");
}

#[tokio::test]
async fn uploads_answer_as_documented() {
    let doc = doc();
    let s = setup().await;
    let bearer = format!("Bearer {}", s.token);
    let auth = ("authorization", bearer.as_str());
    let files = "/api/v1/files";

    // Multipart: a digest mismatch (kept for the key and replayed), an unknown field, an
    // unknown document, and no element to store on.
    let form = |fields: &[(&str, &str)]| {
        let mut b = String::new();
        for (k, v) in fields {
            b.push_str(&format!("--B\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"));
        }
        b.push_str("--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n");
        b.push_str("Content-Type: text/plain\r\n\r\nhello\r\n--B--\r\n");
        b.into_bytes()
    };
    let mp = ("content-type", "multipart/form-data; boundary=B");
    let empty_digest = ("content-digest", "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:");
    let key = ("idempotency-key", "k-1");
    let a = call(&s.router, "post", files, &[auth, mp, empty_digest, key], form(&[])).await;
    assert_eq!((a.status, a.problem_type().as_str()), (400, "digest-mismatch"));
    assert_eq!(a.header("idempotent-replayed"), None);
    conforms(&doc, "post", files, &a);
    let again = call(&s.router, "post", files, &[auth, mp, empty_digest, key], form(&[])).await;
    assert_eq!(again.status, 400);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, a.body);
    conforms(&doc, "post", files, &again);
    let a = call(&s.router, "post", files, &[auth, mp], form(&[("colour", "red")])).await;
    assert_eq!((a.status, a.problem_type().as_str()), (400, "bad-request"));
    conforms(&doc, "post", files, &a);
    let doc_id = uuid::Uuid::now_v7().to_string();
    let a = call(&s.router, "post", files, &[auth, mp], form(&[("document_id", &doc_id)])).await;
    assert_eq!(a.status, 404);
    conforms(&doc, "post", files, &a);
    let a = call(&s.router, "post", files, &[auth, mp], form(&[("tags", "a,b")])).await;
    assert_eq!((a.status, a.problem_type().as_str()), (503, "no-writable-element"));
    conforms(&doc, "post", files, &a);
    let a = call(&s.router, "patch", "/api/v1/files/not-a-uuid", &[auth], Vec::new()).await;
    assert_eq!(a.status, 400);
    conforms(&doc, "patch", "/api/v1/files/{id}", &a);

    // tus: creation with the first 2 of 5 bytes, then the chunks.
    let tus = ("tus-resumable", "1.0.0");
    let octets = ("content-type", "application/offset+octet-stream");
    let (uploads, one) = ("/api/v1/uploads", "/api/v1/uploads/{id}");
    let meta = "filename aGkudHh0,tags YSxi";
    let a = call(
        &s.router,
        "post",
        uploads,
        &[auth, tus, octets, ("upload-length", "5"), ("upload-metadata", meta)],
        b"ab".to_vec(),
    )
    .await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.header("upload-offset"), Some("2"));
    conforms(&doc, "post", uploads, &a);
    let loc = a.header("location").expect("location").to_owned();
    let a = call(&s.router, "head", &loc, &[auth, tus], Vec::new()).await;
    assert_eq!((a.status, a.header("upload-offset"), a.header("upload-length")), (200, Some("2"), Some("5")));
    assert_eq!(a.header("upload-metadata"), Some(meta));
    conforms(&doc, "head", one, &a);
    let a = call(&s.router, "get", &loc, &[auth], Vec::new()).await;
    assert_eq!(
        (a.status, a.json()["state"].as_str(), a.json()["filename"].as_str()),
        (200, Some("receiving"), Some("hi.txt"))
    );
    conforms(&doc, "get", one, &a);
    let a = call(&s.router, "post", uploads, &[auth, ("upload-length", "5")], Vec::new()).await;
    assert_eq!(a.status, 412);
    conforms(&doc, "post", uploads, &a);

    let chunk = |offset: &'static str, checksum: Option<&'static str>| {
        let mut h = vec![auth, tus, octets, ("upload-offset", offset)];
        h.extend(checksum.map(|c| ("upload-checksum", c)));
        h
    };
    let a = call(&s.router, "patch", &loc, &chunk("0", None), b"cde".to_vec()).await;
    assert_eq!((a.status, a.problem_type().as_str(), &a.json()["offset"]), (409, "upload-offset", &Value::from(2)));
    conforms(&doc, "patch", one, &a);
    let a =
        call(&s.router, "patch", &loc, &chunk("2", Some("sha1 AAAAAAAAAAAAAAAAAAAAAAAAAAA=")), b"cde".to_vec()).await;
    assert_eq!((a.status, a.problem_type().as_str()), (460, "checksum-mismatch"));
    conforms(&doc, "patch", one, &a);
    let a = call(&s.router, "patch", &loc, &[auth, tus, ("upload-offset", "2")], b"cde".to_vec()).await;
    assert_eq!(a.status, 415);
    conforms(&doc, "patch", one, &a);
    let a = call(&s.router, "patch", &loc, &chunk("2", None), b"cdefg".to_vec()).await;
    assert_eq!((a.status, a.problem_type().as_str()), (413, "upload-length"));
    conforms(&doc, "patch", one, &a);
    // The last chunk: no element to store on, so the session goes back to offset 2.
    let a = call(&s.router, "patch", &loc, &chunk("2", None), b"cde".to_vec()).await;
    assert_eq!((a.status, a.problem_type().as_str()), (503, "no-writable-element"));
    conforms(&doc, "patch", one, &a);
    let a = call(&s.router, "get", &loc, &[auth], Vec::new()).await;
    assert_eq!((a.json()["state"].as_str(), &a.json()["offset"]), (Some("receiving"), &Value::from(2)));
    assert!(a.json()["error"].is_string());
    conforms(&doc, "get", one, &a);

    let a = call(&s.router, "delete", &loc, &[auth], Vec::new()).await;
    assert_eq!(a.status, 412);
    conforms(&doc, "delete", one, &a);
    let a = call(&s.router, "delete", &loc, &[auth, tus], Vec::new()).await;
    assert_eq!(a.status, 204);
    conforms(&doc, "delete", one, &a);
    let a = call(&s.router, "head", &loc, &[auth, tus], Vec::new()).await;
    assert_eq!(a.status, 404);
    conforms(&doc, "head", one, &a);
}
