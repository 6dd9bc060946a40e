//! The query role's HTTP API: search, suggestions, similar documents, the index's status
//! and rebuild, and reads of files, content, versions and audit trails through to their
//! element.

use crate::feed::CachedSidecar;
use crate::search::{self, DEFAULT_LIMIT, FACETS, MAX_LIMIT, RETENTION_FILTERS, SearchError, SearchRequest, Sort};
use crate::service::QueryService;
use artstore_shared::auth::{Auth, Caller, Permission, Role};
use artstore_shared::{ApiError, ErrorCode};
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::sync::Arc;
use uuid::Uuid;

/// Handler state.
#[derive(Clone)]
pub struct AppState {
    pub svc: Arc<QueryService>,
    pub auth: Auth,
}

impl FromRef<AppState> for Auth {
    fn from_ref(s: &AppState) -> Auth {
        s.auth.clone()
    }
}

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every route this API serves, as (method, path); the OpenAPI test reads this list.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/search"),
    ("post", "/api/v1/search"),
    ("get", "/api/v1/search/suggest"),
    ("get", "/api/v1/files/{id}"),
    ("get", "/api/v1/files/{id}/content"),
    ("head", "/api/v1/files/{id}/content"),
    ("get", "/api/v1/files/{id}/similar"),
    ("get", "/api/v1/files/{id}/audit"),
    ("get", "/api/v1/documents/{document_id}/versions"),
    ("get", "/api/v1/index"),
    ("post", "/api/v1/index/rebuild"),
    ("get", "/api/v1/openapi.json"),
];

type ApiResult<T = Response> = Result<T, ApiError>;

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route("/api/v1/search", get(search_get).post(search_post))
        .route("/api/v1/search/suggest", get(suggest))
        .route("/api/v1/files/{id}", get(get_file))
        .route("/api/v1/files/{id}/content", get(get_content))
        .route("/api/v1/files/{id}/similar", get(similar))
        .route("/api/v1/files/{id}/audit", get(audit))
        .route("/api/v1/documents/{document_id}/versions", get(versions))
        .route("/api/v1/index", get(index_status))
        .route("/api/v1/index/rebuild", post(rebuild))
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
}

fn bad(detail: impl Into<String>) -> ApiError {
    ApiError::bad_request(detail)
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Syntax(s) => {
                ApiError::typed(ErrorCode::BadRequest, "query-syntax", format!("the query does not parse: {s}"))
                    .with("position", s.position)
            }
            SearchError::BadParameter(m) => bad(m),
            SearchError::Index(e) => ApiError::internal(format!("search failed: {e}")),
        }
    }
}

/// Parameters as they come (query string or JSON body), before checking.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSearch {
    #[serde(default)]
    q: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    sort: Option<String>,
    content_type: Option<String>,
    #[serde(default, alias = "tags")]
    tag: Vec<String>,
    element: Option<String>,
    from: Option<String>,
    to: Option<String>,
    state: Option<String>,
    retention: Option<String>,
    retention_policy: Option<String>,
    document_id: Option<String>,
    /// A comma list (query string) or an array (JSON).
    #[serde(default)]
    facets: Vec<String>,
}

fn date(s: &str, what: &str) -> ApiResult<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| bad(format!("{what} {s:?} is not a date (YYYY-MM-DD)")))
}

fn check(raw: RawSearch, caller: &Caller) -> ApiResult<SearchRequest> {
    let nonempty = |o: Option<String>| o.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let limit = raw.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let offset = nonempty(raw.cursor).map(|c| search::decode_cursor(&c)).transpose()?.unwrap_or(0);
    let sort = match nonempty(raw.sort) {
        None => Sort::Relevance,
        Some(s) => {
            Sort::parse(&s).ok_or_else(|| bad(format!("sort {s:?} is not relevance, created, -created or name")))?
        }
    };
    let state = nonempty(raw.state).map(|s| s.to_lowercase());
    if let Some(s) = &state
        && !["active", "archived", "deleted", "disposed"].contains(&s.as_str())
    {
        return Err(bad(format!("state {s:?} is not active, archived, deleted or disposed")));
    }
    let retention = nonempty(raw.retention).map(|s| s.to_lowercase());
    if let Some(r) = &retention
        && !RETENTION_FILTERS.contains(&r.as_str())
    {
        return Err(bad(format!("retention filter {r:?} is not one of {}", RETENTION_FILTERS.join(", "))));
    }
    let wants_tombstones =
        state.as_deref().is_some_and(|s| s == "deleted" || s == "disposed") || retention.as_deref() == Some("disposed");
    let may_see_tombstones = caller.has_role(Role::Auditor) || caller.has_role(Role::Admin);
    if wants_tombstones && !may_see_tombstones {
        return Err(ApiError::forbidden(
            "deleted and disposed documents are shown to the auditor and admin roles only",
        ));
    }
    let mut facets = Vec::new();
    for f in raw.facets.iter().flat_map(|f| f.split(',')).map(str::trim).filter(|f| !f.is_empty()) {
        if !FACETS.contains(&f) {
            return Err(bad(format!("facet {f:?} is not one of {}", FACETS.join(", "))));
        }
        if !facets.iter().any(|x| x == f) {
            facets.push(f.to_owned());
        }
    }
    let document_id = nonempty(raw.document_id);
    if let Some(d) = &document_id
        && d.parse::<Uuid>().is_err()
    {
        return Err(bad(format!("document_id {d:?} is not a UUID")));
    }
    let q = raw.q.unwrap_or_default();
    if q.len() > 4096 {
        return Err(bad("the query is longer than 4096 bytes"));
    }
    Ok(SearchRequest {
        q,
        limit,
        offset,
        sort,
        content_type: nonempty(raw.content_type),
        tags: raw.tag.into_iter().filter_map(|t| nonempty(Some(t))).collect(),
        element: nonempty(raw.element),
        from: nonempty(raw.from).map(|d| date(&d, "from")).transpose()?,
        to: nonempty(raw.to).map(|d| date(&d, "to")).transpose()?,
        state,
        retention,
        retention_policy: nonempty(raw.retention_policy),
        document_id,
        facets,
        tombstones: may_see_tombstones,
    })
}

fn from_query_string(qs: Option<&str>) -> ApiResult<RawSearch> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(qs.unwrap_or("")).map_err(|e| bad(format!("query string: {e}")))?;
    let mut r = RawSearch::default();
    for (k, v) in pairs {
        let num = |v: &str| v.parse::<usize>().map_err(|_| bad(format!("{k} {v:?} is not a number")));
        match k.as_str() {
            "q" => r.q = Some(v),
            "limit" => r.limit = Some(num(&v)?),
            "cursor" => r.cursor = Some(v),
            "sort" => r.sort = Some(v),
            "content_type" => r.content_type = Some(v),
            "tag" | "tags" => r.tag.push(v),
            "element" => r.element = Some(v),
            "from" => r.from = Some(v),
            "to" => r.to = Some(v),
            "state" => r.state = Some(v),
            "retention" => r.retention = Some(v),
            "retention_policy" => r.retention_policy = Some(v),
            "document_id" => r.document_id = Some(v),
            "facets" => r.facets.push(v),
            other => return Err(bad(format!("unknown search parameter {other:?}"))),
        }
    }
    Ok(r)
}

async fn run_search(svc: Arc<QueryService>, req: SearchRequest) -> ApiResult {
    let answer = svc.search(req).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], answer.to_string()).into_response())
}

/// `GET /api/v1/search`.
async fn search_get(State(s): State<AppState>, caller: Caller, RawQuery(qs): RawQuery) -> ApiResult {
    caller.require(Permission::ReadMetadata)?;
    let req = check(from_query_string(qs.as_deref())?, &caller)?;
    run_search(s.svc, req).await
}

/// `POST /api/v1/search` with the same parameters as a JSON body.
async fn search_post(State(s): State<AppState>, caller: Caller, body: axum::body::Bytes) -> ApiResult {
    caller.require(Permission::ReadMetadata)?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| bad(format!("body is not JSON: {e}")))?;
    let mut v = match v {
        Value::Object(m) => m,
        _ => return Err(bad("body must be a JSON object")),
    };
    // `facets` may be a comma list as in the query string; `tag` a single string.
    for key in ["facets", "tag", "tags"] {
        if let Some(Value::String(s)) = v.get(key) {
            let s = s.clone();
            v.insert(key.to_owned(), json!([s]));
        }
    }
    let raw: RawSearch = serde_json::from_value(Value::Object(v)).map_err(|e| bad(format!("body: {e}")))?;
    let req = check(raw, &caller)?;
    run_search(s.svc, req).await
}

#[derive(serde::Deserialize)]
struct SuggestParams {
    q: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/search/suggest?q=contr`.
async fn suggest(
    State(s): State<AppState>,
    caller: Caller,
    q: Result<axum::extract::Query<SuggestParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    caller.require(Permission::ReadMetadata)?;
    let q = q.map_err(|e| bad(e.body_text()))?.0;
    let limit = q.limit.unwrap_or(10);
    if limit == 0 || limit > 50 {
        return Err(bad("limit must be between 1 and 50"));
    }
    let prefix = q.q.unwrap_or_default();
    let svc = s.svc.clone();
    let out = tokio::task::spawn_blocking(move || crate::suggest::suggest(&svc.index(), &prefix, limit))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(axum::Json(out).into_response())
}

/// `GET /api/v1/files/{id}/similar`.
async fn similar(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(qs): RawQuery,
) -> ApiResult {
    caller.require(Permission::ReadMetadata)?;
    let id: Uuid = id.parse().map_err(|_| bad(format!("{id:?} is not a file id")))?;
    let limit = serde_urlencoded::from_str::<Vec<(String, String)>>(qs.as_deref().unwrap_or(""))
        .ok()
        .and_then(|p| p.into_iter().find(|(k, _)| k == "limit").and_then(|(_, v)| v.parse::<usize>().ok()))
        .unwrap_or(10);
    if limit == 0 || limit > 100 {
        return Err(bad("limit must be between 1 and 100"));
    }
    let svc = s.svc.clone();
    let out = tokio::task::spawn_blocking(move || crate::suggest::similar(&svc.index(), id, limit))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(axum::Json(out).into_response())
}

/// `GET /api/v1/index`: documents, generation, the event follower and any rebuild.
async fn index_status(State(s): State<AppState>, caller: Caller) -> ApiResult {
    caller.require(Permission::ReadMetadata)?;
    Ok(axum::Json(s.svc.status()).into_response())
}

/// `POST /api/v1/index/rebuild`: rebuilds into a new index and swaps when done.
async fn rebuild(State(s): State<AppState>, caller: Caller) -> ApiResult {
    if !(caller.has_role(Role::Admin) || caller.has_role(Role::Operator)) {
        return Err(ApiError::forbidden("rebuilding the index needs the admin or operator role"));
    }
    match s.svc.request_rebuild().await {
        Ok(()) => Ok((StatusCode::ACCEPTED, axum::Json(s.svc.status())).into_response()),
        Err(e) => Err(ApiError::typed(ErrorCode::Conflict, "rebuild-running", e)),
    }
}

/// Headers passed from the caller to the element on reads.
const PASS_REQUEST: &[header::HeaderName] =
    &[header::AUTHORIZATION, header::RANGE, header::IF_NONE_MATCH, header::IF_RANGE, header::IF_MATCH, header::ACCEPT];
/// Headers passed from the element back to the caller.
const PASS_RESPONSE: &[header::HeaderName] = &[
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::CONTENT_DISPOSITION,
    header::ACCEPT_RANGES,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CACHE_CONTROL,
];

fn unavailable(element: &str, reason: &str) -> ApiError {
    ApiError::typed(
        ErrorCode::Unavailable,
        "element-unavailable",
        format!("element {element} cannot be reached: {reason}"),
    )
    .with("element_id", element)
}

/// Sends the caller's read to one element and streams its answer back.
async fn pass_through(
    svc: &QueryService,
    element: &str,
    method: Method,
    path: &str,
    headers: &HeaderMap,
) -> ApiResult<reqwest::Response> {
    let el = svc.sources.discovery.element(element).ok_or_else(|| unavailable(element, "not in the registry"))?;
    let url = format!("{}{path}", el.url.trim_end_matches('/'));
    let mut rb = svc.sources.client.http().request(method, &url);
    for h in PASS_REQUEST {
        if let Some(v) = headers.get(h) {
            rb = rb.header(h.as_str(), v.as_bytes());
        }
    }
    artstore_shared::telemetry::propagate(rb).send().await.map_err(|e| unavailable(element, &e.to_string()))
}

fn stream_back(element: &str, resp: reqwest::Response) -> Response {
    let mut out = Response::builder().status(resp.status().as_u16());
    for h in PASS_RESPONSE {
        if let Some(v) = resp.headers().get(h.as_str()) {
            out = out.header(h, v.as_bytes());
        }
    }
    out = out.header("artstore-element-id", element);
    out.body(Body::from_stream(resp.bytes_stream()))
        .unwrap_or_else(|_| ApiError::internal("bad element answer").into_response())
}

/// The element that holds a file: the index's answer first, then every element asked.
async fn locate(svc: &QueryService, id: Uuid, headers: &HeaderMap) -> ApiResult<String> {
    if let Some(s) = svc.index().get(id)
        && svc.sources.discovery.element(&s.element_id).is_some()
    {
        return Ok(s.element_id);
    }
    let path = format!("/api/v1/files/{id}");
    let elements = svc.sources.discovery.elements();
    let asks = elements.iter().map(|e| {
        let path = path.clone();
        async move { (e.id.clone(), pass_through(svc, &e.id, Method::HEAD, &path, headers).await) }
    });
    let mut down = None;
    for (el, r) in futures_util::future::join_all(asks).await {
        match r {
            Ok(resp) if resp.status().is_success() || resp.status() == StatusCode::GONE => return Ok(el),
            Ok(_) => {}
            Err(e) => down = Some(e),
        }
    }
    Err(down.unwrap_or_else(|| ApiError::not_found(format!("no file {id}"))))
}

fn cached_sidecar_answer(c: &CachedSidecar, headers: &HeaderMap, hit: bool) -> Response {
    let not_modified = c.etag.as_deref().is_some_and(|etag| {
        headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    });
    let mut b = Response::builder()
        .status(if not_modified { StatusCode::NOT_MODIFIED } else { StatusCode::OK })
        .header("artstore-element-id", c.element_id.as_str())
        .header("artstore-cache", if hit { "hit" } else { "miss" });
    if let Some(etag) = &c.etag {
        b = b.header(header::ETAG, etag.as_str());
    }
    let body = if not_modified {
        Body::empty()
    } else {
        b = b.header(header::CONTENT_TYPE, "application/json");
        Body::from(c.body.clone())
    };
    b.body(body).unwrap_or_default()
}

/// `GET /api/v1/files/{id}`: the sidecar, from the element that holds it (kept in memory
/// until an event for the file arrives, a minute at most).
async fn get_file(State(s): State<AppState>, caller: Caller, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    caller.require(Permission::ReadMetadata)?;
    let id: Uuid = id.parse().map_err(|_| bad(format!("{id:?} is not a file id")))?;
    // `Cache-Control: no-cache` reads the element's sidecar (a client that just wrote).
    let no_cache = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|d| d.trim().eq_ignore_ascii_case("no-cache")));
    if let Some(c) = s.svc.sources.sidecars.get(&id).filter(|_| !no_cache) {
        s.svc.sidecar_hit();
        return Ok(cached_sidecar_answer(&c, &headers, true));
    }
    s.svc.sidecar_miss();
    let el = locate(&s.svc, id, &headers).await?;
    let resp = pass_through(&s.svc, &el, Method::GET, &format!("/api/v1/files/{id}"), &headers).await?;
    if resp.status() != StatusCode::OK {
        return Ok(stream_back(&el, resp));
    }
    let etag = resp.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = resp.bytes().await.map_err(|e| unavailable(&el, &e.to_string()))?;
    let cached = Arc::new(CachedSidecar { element_id: el, etag, body });
    s.svc.sources.sidecars.insert(id, cached.clone());
    Ok(cached_sidecar_answer(&cached, &HeaderMap::new(), false))
}

/// `GET|HEAD /api/v1/files/{id}/content`: streamed from the element with `Range`, `ETag`
/// and `If-None-Match` passed both ways.
async fn get_content(
    State(s): State<AppState>,
    caller: Caller,
    method: Method,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    caller.require(Permission::ReadContent)?;
    let id: Uuid = id.parse().map_err(|_| bad(format!("{id:?} is not a file id")))?;
    let el = locate(&s.svc, id, &headers).await?;
    let m = if method == Method::HEAD { Method::HEAD } else { Method::GET };
    let resp = pass_through(&s.svc, &el, m, &format!("/api/v1/files/{id}/content"), &headers).await?;
    Ok(stream_back(&el, resp))
}

/// `GET /api/v1/files/{id}/audit`: the file's audit trail, from the element that holds it
/// (`limit` passes through).
async fn audit(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    caller.require(Permission::ReadAudit)?;
    let id: Uuid = id.parse().map_err(|_| bad(format!("{id:?} is not a file id")))?;
    let el = locate(&s.svc, id, &headers).await?;
    let path = match q.filter(|q| !q.is_empty()) {
        Some(q) => format!("/api/v1/files/{id}/audit?{q}"),
        None => format!("/api/v1/files/{id}/audit"),
    };
    let resp = pass_through(&s.svc, &el, Method::GET, &path, &headers).await?;
    Ok(stream_back(&el, resp))
}

/// `GET /api/v1/documents/{document_id}/versions`: every element's versions, merged.
async fn versions(State(s): State<AppState>, caller: Caller, Path(doc): Path<String>, headers: HeaderMap) -> ApiResult {
    caller.require(Permission::ReadMetadata)?;
    let doc: Uuid = doc.parse().map_err(|_| bad(format!("{doc:?} is not a document id")))?;
    let path = format!("/api/v1/documents/{doc}/versions");
    let svc = &s.svc;
    let elements = svc.sources.discovery.elements();
    let asks = elements.iter().map(|e| {
        let path = path.clone();
        let headers = &headers;
        async move {
            let r = pass_through(svc, &e.id, Method::GET, &path, headers).await;
            let r = match r {
                Ok(resp) if resp.status() == StatusCode::NOT_FOUND => Ok(None),
                Ok(resp) if resp.status().is_success() => {
                    resp.json::<Value>().await.map(Some).map_err(|e2| unavailable(&e.id, &e2.to_string()))
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.bytes().await.unwrap_or_default();
                    return (e.id.clone(), Err((status, body)));
                }
                Err(err) => Err(err),
            };
            (
                e.id.clone(),
                r.map_err(|err| {
                    (StatusCode::SERVICE_UNAVAILABLE, axum::body::Bytes::from(err.to_problem().to_string()))
                }),
            )
        }
    });
    let mut all: Vec<Value> = Vec::new();
    for (el, r) in futures_util::future::join_all(asks).await {
        match r {
            Ok(Some(v)) => {
                for mut item in v["versions"].as_array().cloned().unwrap_or_default() {
                    if item.is_object() && item.get("element_id").is_none() {
                        item["element_id"] = json!(el);
                    }
                    all.push(item);
                }
            }
            Ok(None) => {}
            Err((status, body)) if status == StatusCode::SERVICE_UNAVAILABLE => {
                let _ = body;
                return Err(unavailable(&el, "it did not answer; the version list would be incomplete"));
            }
            Err((status, body)) => {
                return Ok(Response::builder()
                    .status(status)
                    .header(header::CONTENT_TYPE, "application/problem+json")
                    .body(Body::from(body))
                    .unwrap_or_default());
            }
        }
    }
    if all.is_empty() {
        return Err(ApiError::not_found(format!("no document {doc}")));
    }
    all.sort_by_key(|v| v["version"].as_u64());
    Ok(axum::Json(json!({"document_id": doc, "versions": all})).into_response())
}
