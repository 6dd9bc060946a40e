//! The query role's HTTP API in process (router + oneshot): the OpenAPI document matches the
//! routes; tokens and roles are enforced; search answers in the documented shape; bad input
//! is a problem+json with the position of a syntax error; tombstones only for auditors; a
//! file's audit trail is read from its element, for the roles that may read the audit.

use artstore_query::api::{OPENAPI, ROUTES};
use artstore_query::config::QueryConfig;
use artstore_query::doc::{DocInput, Extraction};
use artstore_query::extractor::Extractor;
use artstore_query::index::layout;
use artstore_query::server::{QueryDeps, QueryServer};
use artstore_shared::auth::{JWKS_FILE, JwksSource, LocalSigner, TokenVerifier, VerifierConfig};
use artstore_shared::clients::ServiceToken;
use artstore_shared::discovery::{Discovery, ProbeConfig, StaticDiscovery};
use axum::body::Body;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt as _;

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

#[test]
fn the_document_names_every_route_and_errors_are_problems() {
    let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            documented.insert((method.clone(), path.clone()));
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path}: no responses"));
            assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path}: no success answer");
            for (status, r) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(r["$ref"], "#/components/responses/Problem", "{method} {path} {status}");
                }
            }
        }
    }
    let routes: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    assert_eq!(documented, routes);
}

#[test]
fn the_document_names_every_search_parameter_and_facet() {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let params = doc["paths"]["/api/v1/search"]["get"]["parameters"].as_array().unwrap();
    let body = doc["components"]["schemas"]["SearchBody"]["properties"].as_object().unwrap();
    for p in params {
        let name = p["name"].as_str().unwrap();
        assert!(body.contains_key(name), "SearchBody lacks {name}");
    }
    for name in ["retention_policy", "facets"] {
        assert!(params.iter().any(|p| p["name"] == name), "GET search lacks {name}");
    }
    let facets = params.iter().find(|p| p["name"] == "facets").unwrap()["description"].as_str().unwrap();
    for f in artstore_query::search::FACETS {
        assert!(facets.contains(f), "the facets parameter does not name {f}: {facets}");
    }
}

struct Setup {
    router: axum::Router,
    signer: LocalSigner,
    _dir: tempfile::TempDir,
}

fn sidecar(id: uuid::Uuid, name: &str, state: &str, revision: u64) -> Value {
    json!({
        "schema": "artstore/sidecar/v1", "file_id": id, "document_id": id, "version": 1, "revision": revision,
        "state": state, "original_name": name, "stored_name": format!("x_{id}"), "content_type": "text/plain",
        "size": 5, "sha256": "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7",
        "created_at": "2025-01-02T03:04:05Z", "created_by": "a", "updated_at": "2025-01-02T03:04:05Z", "updated_by": "a",
        "tags": ["t"], "metadata": {},
        "retention": {"mode": "none", "legal_hold": false, "disposition": "dispose"},
        "content": {"location": "hot"}
    })
}

async fn setup() -> Setup {
    setup_with(Vec::new()).await
}

/// The query role over a two-document index and the given elements (id, base URL).
async fn setup_with(elements: Vec<(String, String)>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let signer = LocalSigner::load_or_create(&dir.path().join("keys")).unwrap();
    // Two documents in the index before the service starts: one live, one deleted.
    let root = dir.path().join("index");
    {
        let (index, _) = layout::open_live(&root).unwrap();
        let mut w = index.writer(20 << 20).unwrap();
        for (name, state, text) in
            [("live contract.txt", "active", "the contract text"), ("gone contract.txt", "deleted", "")]
        {
            let raw = sidecar(uuid::Uuid::now_v7(), name, state, 1);
            let extraction = if text.is_empty() {
                Extraction::Skipped { reason: "deleted".into() }
            } else {
                Extraction::Ok { text: text.into(), format: "text".into(), truncated: false }
            };
            w.apply(&DocInput {
                sidecar: DocInput::parse_sidecar(&raw).unwrap(),
                raw,
                element_id: "se-1".into(),
                extraction,
            });
        }
        // A finished fill, so the service does not refill from the (absent) elements.
        w.commit(Some(json!({"reindex": {"done": [], "cursors": {}, "complete": true}}).to_string())).unwrap();
        w.close().unwrap();
    }
    let verifier = Arc::new(TokenVerifier::new(
        JwksSource::File(dir.path().join("keys").join(JWKS_FILE)),
        VerifierConfig::default(),
        Arc::new(artstore_shared::SystemClock),
    ));
    verifier.load().await.unwrap();
    let discovery: Arc<dyn Discovery> = Arc::new(StaticDiscovery::start(elements, ProbeConfig::default()));
    let cfg = QueryConfig { index: Some(root), ..Default::default() };
    let deps = QueryDeps {
        verifier,
        token: Some(ServiceToken::Static("unused".into())),
        bus: None,
        extractor: Some(Arc::new(Extractor::in_process(Default::default()))),
        discovery: Some(discovery),
    };
    let server = QueryServer::build(cfg, deps).await.unwrap();
    Setup { router: server.router, signer, _dir: dir }
}

impl Setup {
    fn token(&self, roles: &[&str]) -> String {
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        self.signer.issue("tester", &roles, Duration::from_secs(600), chrono::Utc::now()).unwrap()
    }

    async fn call(&self, method: &str, uri: &str, token: Option<&str>, body: Option<Value>) -> (u16, String, Value) {
        let mut b = axum::http::Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b.header("content-type", "application/json").body(Body::from(v.to_string())).unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ct, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn search_needs_a_token_and_answers_in_the_documented_shape() {
    let s = setup().await;
    let (st, ct, _) = s.call("GET", "/api/v1/search?q=contract", None, None).await;
    assert_eq!((st, ct.as_str()), (401, "application/problem+json"));
    let reader = s.token(&["reader"]);
    let (st, _, v) = s.call("GET", "/api/v1/search?q=contracts&facets=content_type,state", Some(&reader), None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["total"], 1);
    let hit = &v["hits"][0];
    for k in [
        "file_id",
        "document_id",
        "version",
        "name",
        "content_type",
        "size",
        "created_at",
        "element_id",
        "state",
        "retention",
        "score",
        "highlights",
    ] {
        assert!(hit.get(k).is_some(), "hit lacks {k}: {hit}");
    }
    assert_eq!(hit["highlights"]["content"][0], "the <mark>contract</mark> text");
    assert_eq!(v["facets"]["state"], json!([{"value": "active", "count": 1}]));
    assert!(v["next_cursor"].is_null() && v["took_ms"].is_number());
    let (st, _, v2) =
        s.call("POST", "/api/v1/search", Some(&reader), Some(json!({"q": "contracts", "facets": ["state"]}))).await;
    assert_eq!(st, 200);
    assert_eq!(v2["total"], 1);
    // The policy filter and facet, both ways: these documents name no policy.
    let (st, _, v) =
        s.call("GET", "/api/v1/search?retention_policy=tax&facets=retention_policy&limit=1", Some(&reader), None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!((v["total"].clone(), v["facets"]["retention_policy"].clone()), (json!(0), json!([])));
    let (st, _, v) = s.call("GET", "/api/v1/search?facets=retention_policy&limit=1", Some(&reader), None).await;
    assert_eq!((st, v["total"].clone(), v["facets"]["retention_policy"].clone()), (200, json!(1), json!([])));
    let body = json!({"retention_policy": "tax", "facets": "retention_policy"});
    let (st, _, v) = s.call("POST", "/api/v1/search", Some(&reader), Some(body)).await;
    assert_eq!((st, v["total"].clone()), (200, json!(0)), "{v}");
}

#[tokio::test]
async fn bad_input_is_a_problem_never_a_500() {
    let s = setup().await;
    let reader = s.token(&["reader"]);
    let (st, ct, v) = s.call("GET", "/api/v1/search?q=%22open", Some(&reader), None).await;
    assert_eq!((st, ct.as_str()), (400, "application/problem+json"), "{v}");
    assert_eq!(v["position"], 0);
    assert!(v["type"].as_str().unwrap().ends_with("query-syntax"), "{v}");
    for uri in [
        "/api/v1/search?limit=0",
        "/api/v1/search?limit=1001",
        "/api/v1/search?sort=size",
        "/api/v1/search?facets=colour",
        "/api/v1/search?from=2024-13-01",
        "/api/v1/search?retention=forever",
        "/api/v1/search?cursor=zzz",
        "/api/v1/search?bogus=1",
        "/api/v1/search?document_id=nope",
        "/api/v1/files/not-a-uuid",
        "/api/v1/search/suggest?q=a&limit=0",
    ] {
        let (st, ct, v) = s.call("GET", uri, Some(&reader), None).await;
        assert_eq!((st, ct.as_str()), (400, "application/problem+json"), "{uri}: {v}");
    }
    let (st, _, _) = s.call("POST", "/api/v1/search", Some(&reader), Some(json!({"q": "x", "nope": 1}))).await;
    assert_eq!(st, 400);
}

#[tokio::test]
async fn tombstones_only_for_auditors_and_admins() {
    let s = setup().await;
    let reader = s.token(&["reader"]);
    let (st, _, v) = s.call("GET", "/api/v1/search?q=contract", Some(&reader), None).await;
    assert_eq!((st, v["total"].as_u64()), (200, Some(1)));
    let (st, _, _) = s.call("GET", "/api/v1/search?q=contract&state=deleted", Some(&reader), None).await;
    assert_eq!(st, 403);
    let auditor = s.token(&["auditor"]);
    let (st, _, v) = s.call("GET", "/api/v1/search?q=contract&state=deleted", Some(&auditor), None).await;
    assert_eq!(st, 200);
    assert_eq!(v["total"], 1);
    assert_eq!(v["hits"][0]["name"], "gone contract.txt");
    // Without the explicit filter even the auditor sees only live documents.
    let (_, _, v) = s.call("GET", "/api/v1/search?q=contract", Some(&auditor), None).await;
    assert_eq!(v["total"], 1);
    assert_eq!(v["hits"][0]["name"], "live contract.txt");
}

#[tokio::test]
async fn index_status_suggest_similar_and_rebuild_permissions() {
    let s = setup().await;
    let reader = s.token(&["reader"]);
    let (st, _, v) = s.call("GET", "/api/v1/index", Some(&reader), None).await;
    assert_eq!(st, 200);
    assert_eq!(v["documents"], 2);
    let (st, _, v) = s.call("GET", "/api/v1/search/suggest?q=con", Some(&reader), None).await;
    assert_eq!(st, 200);
    let texts: Vec<&str> = v["suggestions"].as_array().unwrap().iter().map(|x| x["text"].as_str().unwrap()).collect();
    assert!(texts.contains(&"live contract.txt") && texts.contains(&"contract"), "{texts:?}");
    assert!(!texts.contains(&"gone contract.txt"), "{texts:?}");
    let (st, _, _) = s.call("POST", "/api/v1/index/rebuild", Some(&reader), None).await;
    assert_eq!(st, 403);
    let (st, _, _) =
        s.call("GET", &format!("/api/v1/files/{}/similar", uuid::Uuid::now_v7()), Some(&reader), None).await;
    assert_eq!(st, 404);
}

/// A fake element that holds one file and answers its audit trail with what it was asked.
async fn fake_element(held: uuid::Uuid) -> String {
    use axum::extract::{Path, RawQuery};
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new()
        .route(
            "/api/v1/files/{id}",
            axum::routing::get(move |Path(id): Path<uuid::Uuid>| async move {
                if id == held { StatusCode::OK } else { StatusCode::NOT_FOUND }
            }),
        )
        .route(
            "/api/v1/files/{id}/audit",
            axum::routing::get(|Path(id): Path<uuid::Uuid>, RawQuery(q): RawQuery, h: HeaderMap| async move {
                let auth = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                axum::Json(json!({"file_id": id, "entries": [], "query": q, "authorization": auth}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_files_audit_trail_is_read_from_its_element() {
    let held = uuid::Uuid::now_v7();
    let url = fake_element(held).await;
    let s = setup_with(vec![("se-9".to_owned(), url)]).await;
    let auditor = s.token(&["auditor"]);
    let (st, _, v) = s.call("GET", &format!("/api/v1/files/{held}/audit?limit=7"), Some(&auditor), None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["file_id"], held.to_string());
    assert_eq!(v["query"], "limit=7");
    assert_eq!(v["authorization"], format!("Bearer {auditor}"), "the caller's token is passed on");
    let (st, _, _) =
        s.call("GET", &format!("/api/v1/files/{}/audit", uuid::Uuid::now_v7()), Some(&auditor), None).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn a_files_audit_trail_needs_the_audit_permission() {
    let s = setup().await;
    let uri = format!("/api/v1/files/{}/audit?limit=5", uuid::Uuid::now_v7());
    for roles in [&["reader"][..], &["writer"][..]] {
        let (st, ct, _) = s.call("GET", &uri, Some(&s.token(roles)), None).await;
        assert_eq!((st, ct.as_str()), (403, "application/problem+json"), "{roles:?}");
    }
    // No element holds the file (none is registered here): 404, as for its sidecar.
    let auditor = s.token(&["auditor"]);
    let (st, ct, v) = s.call("GET", &uri, Some(&auditor), None).await;
    assert_eq!((st, ct.as_str()), (404, "application/problem+json"), "{v}");
    let (st, _, _) = s.call("GET", "/api/v1/files/not-a-uuid/audit", Some(&auditor), None).await;
    assert_eq!(st, 400);
}
