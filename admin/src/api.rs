//! The admin HTTP API: the OAuth2 token endpoint, the JWKS, CRUD for users, service accounts,
//! retention policies and storage elements, key rotation, the audit chain and cluster
//! membership. Writes sent to a follower are forwarded to the leader.

use crate::auth::{Principal, check_refresh, hash_secret, principal, random_secret, token_response, verify_secret};
use crate::node::Node;
use crate::state::{Element, Op, Policy, ServiceAccount, User, check_labels, check_policy_fields, check_roles};
use artstore_shared::auth::{Auth, Caller, Permission, Role};
use artstore_shared::clients::ElementClient;
use artstore_shared::error::json_body;
use artstore_shared::tls::PeerAddr;
use artstore_shared::{ApiError, ErrorCode};
use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use openraft::BasicNode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Handler state.
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub auth: Auth,
    pub http: reqwest::Client,
    pub elements: ElementClient,
}

impl FromRef<AppState> for Auth {
    fn from_ref(s: &AppState) -> Auth {
        s.auth.clone()
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

/// The OpenAPI 3.1 document of this API (a test checks it against [`ROUTES`]).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every route this API serves, as (method, path).
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/auth/token"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/api/v1/users"),
    ("post", "/api/v1/users"),
    ("get", "/api/v1/users/{username}"),
    ("patch", "/api/v1/users/{username}"),
    ("delete", "/api/v1/users/{username}"),
    ("get", "/api/v1/service-accounts"),
    ("post", "/api/v1/service-accounts"),
    ("get", "/api/v1/service-accounts/{client_id}"),
    ("patch", "/api/v1/service-accounts/{client_id}"),
    ("delete", "/api/v1/service-accounts/{client_id}"),
    ("get", "/api/v1/retention-policies"),
    ("post", "/api/v1/retention-policies"),
    ("get", "/api/v1/retention-policies/{name}"),
    ("patch", "/api/v1/retention-policies/{name}"),
    ("delete", "/api/v1/retention-policies/{name}"),
    ("post", "/api/v1/retention-policies/{name}/usage"),
    ("get", "/api/v1/elements"),
    ("post", "/api/v1/elements"),
    ("get", "/api/v1/elements/{id}"),
    ("patch", "/api/v1/elements/{id}"),
    ("delete", "/api/v1/elements/{id}"),
    ("post", "/api/v1/elements/{id}/mode"),
    ("get", "/api/v1/keys"),
    ("post", "/api/v1/keys/rotate"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/cluster"),
    ("post", "/api/v1/cluster/members"),
    ("delete", "/api/v1/cluster/members/{id}"),
    ("get", "/api/v1/openapi.json"),
];

/// The header a forwarding node sets with the original client's address.
pub const FORWARDED_FOR: &str = "x-artstore-forwarded-for";

/// The API routes (without `/raft/*` and health).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/api/v1/auth/token", post(token))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{username}", get(get_user).patch(patch_user).delete(delete_user))
        .route("/api/v1/service-accounts", get(list_accounts).post(create_account))
        .route("/api/v1/service-accounts/{client_id}", get(get_account).patch(patch_account).delete(delete_account))
        .route("/api/v1/retention-policies", get(list_policies).post(create_policy))
        .route("/api/v1/retention-policies/{name}", get(get_policy).patch(patch_policy).delete(delete_policy))
        .route("/api/v1/retention-policies/{name}/usage", post(use_policy))
        .route("/api/v1/elements", get(list_elements).post(create_element))
        .route("/api/v1/elements/{id}", get(get_element).patch(patch_element).delete(delete_element))
        .route("/api/v1/elements/{id}/mode", post(element_mode))
        .route("/api/v1/keys", get(list_keys))
        .route("/api/v1/keys/rotate", post(rotate_keys))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/cluster/members", post(add_member))
        .route("/api/v1/cluster/members/{id}", axum::routing::delete(remove_member))
        .layer(axum::middleware::from_fn_with_state(state.clone(), forward_writes))
        .with_state(state)
}

/// The client's address: the forwarding node's header, else the socket peer.
struct ClientAddr(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(client_addr(parts)))
    }
}

/// The forwarding node's `x-artstore-forwarded-for`, else the socket peer's address.
fn client_addr(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(FORWARDED_FOR)
        .and_then(|v| v.to_str().ok().map(str::to_owned))
        .or_else(|| parts.extensions.get::<ConnectInfo<PeerAddr>>().map(|c| c.0.0.ip().to_string()))
}

fn require_role(caller: &Caller, roles: &[Role]) -> ApiResult<()> {
    if roles.iter().any(|r| caller.has_role(*r)) {
        Ok(())
    } else {
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ApiError::forbidden(format!("this needs the role {}", names.join(" or "))))
    }
}

/// An admin-only removal: 204 once committed.
async fn admin_delete(s: &AppState, caller: &Caller, addr: ClientAddr, op: Op) -> ApiResult {
    require_role(caller, &[Role::Admin])?;
    s.node.write(&caller.subject, addr.0, op).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn created(v: Value) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

// ---------------------------------------------------------------- forwarding

/// Sends writes that reach a follower on to the leader and answers what the leader answered.
async fn forward_writes(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let is_write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let path = req.uri().path();
    if !is_write || path == "/api/v1/auth/token" || req.headers().contains_key("x-artstore-forwarded") {
        return next.run(req).await;
    }
    let node = &s.node;
    if node.faults.is_isolated(node.id) {
        // A node cut off by fault injection reaches no peer, the leader included.
        return next.run(req).await;
    }
    let leader = match node.leader() {
        Some(l) if l != node.id => l,
        _ => return next.run(req).await,
    };
    let Some(base) = node.node_url(leader) else {
        return next.run(req).await;
    };
    match proxy(&s.http, &base, req).await {
        Ok(r) => r,
        Err(e) => e.with("leader_id", leader).into_response(),
    }
}

async fn proxy(http: &reqwest::Client, base: &str, req: Request) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let client = client_addr(&parts);
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
    let url = format!("{base}{}", parts.uri.path_and_query().map_or("", |p| p.as_str()));
    let mut rb = http.request(parts.method.clone(), &url).body(body);
    for (k, v) in &parts.headers {
        if k != header::HOST && k != header::CONTENT_LENGTH && k.as_str() != FORWARDED_FOR {
            rb = rb.header(k, v);
        }
    }
    rb = rb.header("x-artstore-forwarded", "1");
    if let Some(c) = client {
        rb = rb.header(FORWARDED_FOR, c);
    }
    let resp = rb.send().await.map_err(|e| {
        ApiError::typed(ErrorCode::Unavailable, "leader-unreachable", format!("the leader cannot be reached: {e}"))
    })?;
    let status = resp.status();
    let mut headers = HeaderMap::new();
    for (k, v) in resp.headers() {
        if matches!(k.as_str(), "content-type" | "location" | "retry-after" | "cache-control" | "etag") {
            headers.insert(k.clone(), v.clone());
        }
    }
    let bytes = resp.bytes().await.map_err(|e| {
        ApiError::typed(ErrorCode::Unavailable, "leader-unreachable", format!("the leader's answer was cut: {e}"))
    })?;
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

// ---------------------------------------------------------------- tokens

async fn jwks(State(s): State<AppState>) -> Response {
    let doc = s.node.keys.document();
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "public, max-age=60")], doc.to_vec())
        .into_response()
}

/// Reads the token request's fields from a form or a JSON body.
fn token_fields(headers: &HeaderMap, body: &Bytes) -> ApiResult<BTreeMap<String, String>> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.starts_with("application/json") {
        let v: BTreeMap<String, Value> = serde_json::from_slice(body)
            .map_err(|e| ApiError::typed(ErrorCode::BadRequest, "bad-json", e.to_string()))?;
        Ok(v.into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                Value::Null => None,
                other => Some((k, other.to_string())),
            })
            .collect())
    } else if ct.starts_with("application/x-www-form-urlencoded") || ct.is_empty() {
        serde_urlencoded::from_bytes(body).map_err(|e| ApiError::bad_request(format!("malformed form body: {e}")))
    } else {
        Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the token endpoint takes application/x-www-form-urlencoded or application/json",
        ))
    }
}

fn oauth_error(code: ErrorCode, error: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::typed(code, if error == "invalid_client" { "invalid-client" } else { "invalid-grant" }, detail)
        .with("error", error)
}

/// HTTP Basic credentials (client_secret_basic).
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (id, secret) = s.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

async fn token(State(s): State<AppState>, addr: ClientAddr, headers: HeaderMap, body: Bytes) -> Response {
    let address = addr.0.unwrap_or_else(|| "unknown".to_owned());
    let r = token_inner(&s, &address, &headers, &body).await;
    let mut resp = match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            let retry = e.extra.as_ref().and_then(|x| x.get("retry_after")).and_then(Value::as_u64);
            let mut r = e.into_response();
            if let Some(secs) = retry
                && let Ok(v) = HeaderValue::from_str(&secs.to_string())
            {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    };
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn token_inner(s: &AppState, address: &str, headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let f = token_fields(headers, body)?;
    if s.node.read(|st| st.bootstrapped_at.is_none()) {
        // Not a failed login: nobody can log in yet.
        return Err(ApiError::typed(
            ErrorCode::Unavailable,
            "not-ready",
            "the admin cluster is not bootstrapped yet; retry shortly",
        ));
    }
    let field = |k: &str| f.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let node = &s.node;
    let limited = |who: &str| {
        node.limiter.blocked(who, address).map(|secs| {
            ApiError::typed(
                ErrorCode::TooManyRequests,
                "too-many-failed-logins",
                format!("too many failed logins; retry in {secs} s"),
            )
            .with("retry_after", secs)
            .with("error", "slow_down")
        })
    };
    match field("grant_type") {
        Some("password") => {
            let user = field("username")
                .ok_or_else(|| oauth_error(ErrorCode::BadRequest, "invalid_request", "username is missing"))?;
            let pass = field("password")
                .ok_or_else(|| oauth_error(ErrorCode::BadRequest, "invalid_request", "password is missing"))?;
            if let Some(e) = limited(user) {
                return Err(e);
            }
            let found = node.read(|st| st.users.get(user).filter(|u| !u.disabled).cloned());
            if !verify_secret(pass, found.as_ref().map(|u| u.password_hash.clone())).await {
                node.limiter.failed(user, address);
                tracing::warn!(user, address, "failed login");
                return Err(oauth_error(ErrorCode::BadRequest, "invalid_grant", "wrong user name or password"));
            }
            node.limiter.succeeded(user);
            let u = found.ok_or_else(|| ApiError::internal("user vanished"))?;
            token_response(node, &Principal { subject: u.username, roles: u.roles, kind: "user" })
        }
        Some("client_credentials") => {
            let (id, secret) = match (field("client_id"), field("client_secret")) {
                (Some(i), Some(s)) => (i.to_owned(), s.to_owned()),
                _ => basic_auth(headers).ok_or_else(|| {
                    oauth_error(ErrorCode::Unauthenticated, "invalid_client", "client_id and client_secret are missing")
                })?,
            };
            if let Some(e) = limited(&id) {
                return Err(e);
            }
            let found = node.read(|st| st.service_accounts.get(&id).filter(|a| !a.disabled).cloned());
            if !verify_secret(&secret, found.as_ref().map(|a| a.secret_hash.clone())).await {
                node.limiter.failed(&id, address);
                tracing::warn!(client_id = id, address, "failed client authentication");
                return Err(oauth_error(ErrorCode::Unauthenticated, "invalid_client", "wrong client id or secret"));
            }
            node.limiter.succeeded(&id);
            let a = found.ok_or_else(|| ApiError::internal("account vanished"))?;
            token_response(node, &Principal { subject: a.client_id, roles: a.roles, kind: "service_account" })
        }
        Some("refresh_token") => {
            let t = field("refresh_token")
                .ok_or_else(|| oauth_error(ErrorCode::BadRequest, "invalid_request", "refresh_token is missing"))?;
            let subject = check_refresh(node, t).await?;
            // Roles are read again: a refresh never outlives a removed or disabled principal.
            let p = node.read(|st| principal(st, &subject)).ok_or_else(|| {
                oauth_error(
                    ErrorCode::BadRequest,
                    "invalid_grant",
                    format!("{subject:?} no longer exists or is disabled"),
                )
            })?;
            token_response(node, &p)
        }
        Some(other) => Err(oauth_error(
            ErrorCode::BadRequest,
            "unsupported_grant_type",
            format!("grant_type {other:?} is not password, client_credentials or refresh_token"),
        )),
        None => Err(oauth_error(ErrorCode::BadRequest, "invalid_request", "grant_type is missing")),
    }
}

// ---------------------------------------------------------------- users

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    #[serde(alias = "name")]
    username: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    disabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    password: Option<String>,
    roles: Option<Vec<String>>,
    disabled: Option<bool>,
}

fn check_password(p: &str) -> ApiResult<()> {
    if p.chars().count() < 8 {
        return Err(ApiError::bad_request("password must be at least 8 characters"));
    }
    Ok(())
}

async fn list_users(State(s): State<AppState>, caller: Caller) -> ApiResult {
    require_role(&caller, &[Role::Admin, Role::Auditor])?;
    let users: Vec<Value> = s.node.read(|st| st.users.values().map(User::view).collect());
    Ok(Json(json!({ "items": users })).into_response())
}

async fn create_user(
    State(s): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    body: Result<Json<NewUser>, JsonRejection>,
) -> ApiResult {
    require_role(&caller, &[Role::Admin])?;
    let b = json_body(body)?;
    check_password(&b.password)?;
    check_roles(&b.roles).map_err(|r| ApiError::bad_request(r.detail))?;
    let now = Utc::now();
    let user = User {
        username: b.username,
        password_hash: hash_secret(&b.password).await?,
        roles: b.roles,
        disabled: b.disabled,
        created_at: now,
        updated_at: now,
    };
    Ok(created(s.node.write(&caller.subject, addr.0, Op::CreateUser { user }).await?))
}

async fn get_user(State(s): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult {
    if caller.subject != name {
        require_role(&caller, &[Role::Admin, Role::Auditor])?;
    }
    let u = s.node.read(|st| st.users.get(&name).map(User::view));
    Ok(Json(u.ok_or_else(|| ApiError::not_found(format!("no user named {name:?}")))?).into_response())
}

async fn patch_user(
    State(s): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    Path(name): Path<String>,
    body: Result<Json<UserPatch>, JsonRejection>,
) -> ApiResult {
    let b = json_body(body)?;
    let own_password_only = caller.subject == name && b.roles.is_none() && b.disabled.is_none();
    if !own_password_only {
        require_role(&caller, &[Role::Admin])?;
    }
    let password_hash = match &b.password {
        Some(p) => {
            check_password(p)?;
            Some(hash_secret(p).await?)
        }
        None => None,
    };
    let op = Op::UpdateUser { username: name, password_hash, roles: b.roles, disabled: b.disabled };
    Ok(Json(s.node.write(&caller.subject, addr.0, op).await?).into_response())
}

async fn delete_user(
    State(s): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    Path(name): Path<String>,
) -> ApiResult {
    admin_delete(&s, &caller, addr, Op::DeleteUser { username: name }).await
}

// ---------------------------------------------------------------- service accounts

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    #[serde(alias = "name")]
    client_id: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountPatch {
    roles: Option<Vec<String>>,
    disabled: Option<bool>,
    description: Option<String>,
    /// `true`: a new secret is generated and answered once.
    #[serde(default)]
    rotate_secret: bool,
}

async fn list_accounts(State(s): State<AppState>, caller: Caller) -> ApiResult {
    require_role(&caller, &[Role::Admin, Role::Auditor])?;
    let items: Vec<Value> = s.node.read(|st| st.service_accounts.values().map(ServiceAccount::view).collect());
    Ok(Json(json!({ "items": items })).into_response())
}

async fn create_account(
    State(s): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    body: Result<Json<NewAccount>, JsonRejection>,
) -> ApiResult {
    require_role(&caller, &[Role::Admin])?;
    let b = json_body(body)?;
    check_roles(&b.roles).map_err(|r| ApiError::bad_request(r.detail))?;
    let secret = random_secret(32);
    let now = Utc::now();
    let account = ServiceAccount {
        client_id: b.client_id.unwrap_or_else(|| format!("sa-{}", uuid::Uuid::now_v7().simple())),
        secret_hash: hash_secret(&secret).await?,
        roles: b.roles,
        description: b.description,
        disabled: false,
        created_at: now,
        updated_at: now,
    };
    let mut v = s.node.write(&caller.subject, addr.0, Op::CreateServiceAccount { account }).await?;
    v["client_secret"] = Value::String(secret);
    Ok(created(v))
}

async fn get_account(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    require_role(&caller, &[Role::Admin, Role::Auditor])?;
    let a = s.node.read(|st| st.service_accounts.get(&id).map(ServiceAccount::view));
    Ok(Json(a.ok_or_else(|| ApiError::not_found(format!("no service account named {id:?}")))?).into_response())
}

async fn patch_account(
    State(s): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    Path(id): Path<String>,
    body: Result<Json<AccountPatch>, JsonRejection>,
) -> ApiResult {
    require_role(&caller, &[Role::Admin])?;
    let b = json_body(body)?;
    let secret = b.rotate_secret.then(|| random_secret(32));
    let secret_hash = match &secret {
        Some(sec) => Some(hash_secret(sec).await?),
        None => None,
    };
    let op = Op::UpdateServiceAccount {
        client_id: id,
        secret_hash,
        roles: b.roles,
        disabled: b.disabled,
        description: b.description,
    };
    let mut v = s.node.write(&caller.subject, addr.0, op).await?;
    if let Some(sec) = secret {
        v["client_secret"] = Value::String(sec);
    }
    Ok(Json(v).into_response())
}

async fn delete_account(
    State(s): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    Path(id): Path<String>,
) -> ApiResult {
    admin_delete(&s, &caller, addr, Op::DeleteServiceAccount { client_id: id }).await
}

// ---------------------------------------------------------------- retention policies

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPolicy {
    name: String,
    term: String,
    mode: String,
    #[serde(default = "default_disposition")]
    disposition: String,
    #[serde(default)]
    description: String,
}

fn default_disposition() -> String {
    "review".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyPatch {
    term: Option<String>,
    mode: Option<String>,
    disposition: Option<String>,
    description: Option<String>,
}

async fn list_policies(State(s): State<AppState>, _caller: Caller) -> ApiResult {
    let items: Vec<Policy> = s.node.read(|st| st.policies.values().cloned().collect());
    Ok(Json(json!({ "items": items })).into_response())
}

async fn create_policy(
    State(s): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    body: Result<Json<NewPolicy>, JsonRejection>,
) -> ApiResult {
    require_role(&caller, &[Role::Admin])?;
    let b = json_body(body)?;
    check_policy_fields(&b.term, &b.mode, &b.disposition).map_err(|r| ApiError::bad_request(r.detail))?;
    let now = Utc::now();
    let policy = Policy {
        name: b.name,
        term: b.term,
        mode: b.mode,
        disposition: b.disposition,
        description: b.description,
        in_use: false,
        created_at: now,
        updated_at: now,
    };
    Ok(created(s.node.write(&caller.subject, addr.0, Op::CreatePolicy { policy }).await?))
}

async fn get_policy(State(s): State<AppState>, _caller: Caller, Path(name): Path<String>) -> ApiResult {
    let p = s.node.read(|st| st.policies.get(&name).cloned());
    Ok(Json(p.ok_or_else(|| ApiError::not_found(format!("no retention policy named {name:?}")))?).into_response())
}

async fn patch_policy(
    State(s): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    Path(name): Path<String>,
    body: Result<Json<PolicyPatch>, JsonRejection>,
) -> ApiResult {
    require_role(&caller, &[Role::Admin])?;
    let b = json_body(body)?;
    let op =
        Op::UpdatePolicy { name, term: b.term, mode: b.mode, disposition: b.disposition, description: b.description };
    Ok(Json(s.node.write(&caller.subject, addr.0, op).await?).into_response())
}

async fn delete_policy(
    State(s): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    Path(name): Path<String>,
) -> ApiResult {
    admin_delete(&s, &caller, addr, Op::DeletePolicy { name }).await
}

/// An element is about to store documents under the policy: from now on it is in use.
async fn use_policy(
    State(s): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    Path(name): Path<String>,
) -> ApiResult {
    caller.require(Permission::Create)?;
    let p = s.node.read(|st| st.policies.get(&name).cloned());
    let p = p.ok_or_else(|| ApiError::not_found(format!("no retention policy named {name:?}")))?;
    if p.in_use {
        return Ok(Json(p).into_response());
    }
    Ok(Json(s.node.write(&caller.subject, addr.0, Op::MarkPolicyUsed { name }).await?).into_response())
}

// ---------------------------------------------------------------- elements

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewElement {
    id: String,
    url: String,
    #[serde(default = "default_mode")]
    mode: String,
    #[serde(default, alias = "capacity")]
    capacity_bytes: u64,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default, alias = "datacenter", alias = "data_center", alias = "data_centre", alias = "datacentre")]
    dc: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn default_mode() -> String {
    "edit".to_owned()
}
fn default_weight() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ElementPatch {
    url: Option<String>,
    #[serde(alias = "capacity")]
    capacity_bytes: Option<u64>,
    weight: Option<u32>,
    #[serde(alias = "datacenter", alias = "data_center", alias = "data_centre", alias = "datacentre")]
    dc: Option<String>,
    /// The whole new label set.
    labels: Option<BTreeMap<String, String>>,
}

/// The element with its health folded in from the last heartbeat.
fn element_view(node: &Node, e: &Element) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    // The same facts under the plain names too.
    v["capacity"] = json!(e.capacity_bytes);
    v["datacenter"] = json!(e.dc);
    // Stored only when there are some; shown always.
    v["labels"] = json!(e.labels);
    let hb = node.heartbeats.read().unwrap_or_else(|p| p.into_inner()).get(&e.id).cloned();
    let redis = *node.redis_up.read().unwrap_or_else(|p| p.into_inner());
    v["health"] = match (hb, redis) {
        (Some(h), _) => {
            let mut up = json!({"status": "up", "free_bytes": h.free_bytes, "total_bytes": h.total_bytes,
                                "reported_mode": h.mode, "last_heartbeat": h.at});
            // Older elements report neither.
            if let Some(n) = h.documents {
                up["documents"] = json!(n);
            }
            if !h.workers.is_null() {
                up["workers"] = h.workers;
            }
            up
        }
        (None, Some(true)) => json!({"status": "down", "reason": "no heartbeat within its ttl"}),
        (None, Some(false)) => json!({"status": "unknown", "reason": "redis is unreachable"}),
        (None, None) if node.probing.load(std::sync::atomic::Ordering::Relaxed) => {
            json!({"status": "down", "reason": "its /health/ready does not answer"})
        }
        (None, None) => json!({"status": "unknown", "reason": "discovery (redis) is not configured"}),
    };
    v
}

async fn list_elements(State(s): State<AppState>, _caller: Caller) -> ApiResult {
    let els: Vec<Element> = s.node.read(|st| st.elements.values().cloned().collect());
    let items: Vec<Value> = els.iter().map(|e| element_view(&s.node, e)).collect();
    Ok(Json(json!({ "items": items })).into_response())
}

async fn create_element(
    State(s): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    body: Result<Json<NewElement>, JsonRejection>,
) -> ApiResult {
    require_role(&caller, &[Role::Admin])?;
    let b = json_body(body)?;
    check_labels(&b.labels).map_err(|r| ApiError::bad_request(r.detail))?;
    let now = Utc::now();
    let element = Element {
        id: b.id,
        url: b.url.trim_end_matches('/').to_owned(),
        mode: b.mode,
        capacity_bytes: b.capacity_bytes,
        weight: b.weight,
        dc: b.dc,
        labels: b.labels,
        created_at: now,
        updated_at: now,
    };
    let answer = s.node.write(&caller.subject, addr.0, Op::CreateElement { element }).await?;
    Ok(created(with_labels(answer)))
}

async fn get_element(State(s): State<AppState>, _caller: Caller, Path(id): Path<String>) -> ApiResult {
    let e = s.node.read(|st| st.elements.get(&id).cloned());
    let e = e.ok_or_else(|| ApiError::not_found(format!("no storage element named {id:?}")))?;
    Ok(Json(element_view(&s.node, &e)).into_response())
}

async fn patch_element(
    State(s): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    Path(id): Path<String>,
    body: Result<Json<ElementPatch>, JsonRejection>,
) -> ApiResult {
    require_role(&caller, &[Role::Admin])?;
    let b = json_body(body)?;
    if let Some(l) = &b.labels {
        check_labels(l).map_err(|r| ApiError::bad_request(r.detail))?;
    }
    let url = b.url.map(|u| u.trim_end_matches('/').to_owned());
    let op =
        Op::UpdateElement { id, url, capacity_bytes: b.capacity_bytes, weight: b.weight, dc: b.dc, labels: b.labels };
    Ok(Json(with_labels(s.node.write(&caller.subject, addr.0, op).await?)).into_response())
}

/// A written element as the state answers it, with `labels` shown even when there are none.
fn with_labels(mut element: Value) -> Value {
    if let Some(o) = element.as_object_mut() {
        o.entry("labels").or_insert_with(|| json!({}));
    }
    element
}

async fn delete_element(
    State(s): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    Path(id): Path<String>,
) -> ApiResult {
    admin_delete(&s, &caller, addr, Op::DeleteElement { id }).await
}

/// Asks the element to switch; commits the mode only after the element confirmed it.
async fn element_mode(
    State(s): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult {
    caller.require(Permission::ManageElement)?;
    let b = json_body(body)?;
    let mode = b
        .get("mode")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("body must be {\"mode\": \"edit|rw|ro|ar\"}"))?;
    crate::state::check_mode(mode).map_err(|r| ApiError::bad_request(r.detail))?;
    let e = s.node.read(|st| st.elements.get(&id).cloned());
    let e = e.ok_or_else(|| ApiError::not_found(format!("no storage element named {id:?}")))?;
    if e.mode == mode {
        return Ok(Json(element_view(&s.node, &e)).into_response());
    }
    if !crate::state::mode_forward(&e.mode, mode) {
        return Err(ApiError::typed(
            ErrorCode::Conflict,
            "mode-backwards",
            format!("element {id:?} is in mode {}; modes only go forward (edit → rw → ro → ar), not to {mode}", e.mode),
        ));
    }
    let token = s.node.system_token()?;
    let confirmed = s.elements.set_mode(&e.url, &token, mode).await.map_err(|err| {
        let (code, kind) = match err.status() {
            Some(409) => (ErrorCode::Conflict, "element-refused"),
            _ => (ErrorCode::Unavailable, "element-unreachable"),
        };
        ApiError::typed(code, kind, format!("element {id:?} did not switch to {mode}; nothing was changed: {err}"))
    })?;
    let reported = confirmed.get("mode").and_then(Value::as_str).unwrap_or_default();
    if reported != mode {
        return Err(ApiError::typed(
            ErrorCode::Unavailable,
            "element-unconfirmed",
            format!("element {id:?} answered mode {reported:?}, not {mode}; nothing was committed"),
        ));
    }
    let v = s.node.write(&caller.subject, addr.0, Op::SetElementMode { id, mode: mode.to_owned() }).await?;
    Ok(Json(v).into_response())
}

// ---------------------------------------------------------------- keys, audit

async fn list_keys(State(s): State<AppState>, caller: Caller) -> ApiResult {
    require_role(&caller, &[Role::Admin, Role::Auditor])?;
    let grace = chrono::Duration::seconds(s.node.cfg.key_grace_secs as i64);
    let items: Vec<Value> = s.node.read(|st| st.keys.iter().map(|k| k.view(grace)).collect());
    Ok(Json(json!({ "items": items })).into_response())
}

async fn rotate_keys(State(s): State<AppState>, caller: Caller, addr: ClientAddr) -> ApiResult {
    require_role(&caller, &[Role::Admin])?;
    Ok(Json(s.node.rotate_key("on demand", &caller.subject, addr.0).await?).into_response())
}

#[derive(Deserialize)]
struct AuditQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn audit(
    State(s): State<AppState>,
    caller: Caller,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    caller.require(Permission::ReadAudit)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let (items, last) = s.node.read(|st| {
        let start = st.audit.partition_point(|e| e.seq <= after);
        (st.audit[start..].iter().take(limit).cloned().collect::<Vec<_>>(), st.audit.last().map_or(0, |e| e.seq))
    });
    let next = items.last().map(|e| e.seq).filter(|&seq| seq < last);
    let public_key = s.node.read(crate::state::State::audit_public_key);
    Ok(Json(json!({"items": items, "next_after": next, "last_seq": last, "public_key": public_key})).into_response())
}

// ---------------------------------------------------------------- cluster

async fn cluster(State(s): State<AppState>, _caller: Caller) -> ApiResult {
    let m = s.node.raft.metrics().borrow().clone();
    let voters: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
    let members: Vec<Value> = m
        .membership_config
        .nodes()
        .map(|(id, n)| json!({"id": id, "url": n.addr, "voter": voters.contains(id)}))
        .collect();
    Ok(Json(json!({
        "node_id": s.node.id,
        "state": format!("{:?}", m.state),
        "leader": m.current_leader,
        "term": m.current_term,
        "last_log_index": m.last_log_index,
        "last_applied": m.last_applied.map(|l| l.index),
        "snapshot": m.snapshot.map(|l| l.index),
        "members": members,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    #[serde(alias = "id")]
    node_id: u64,
    #[serde(alias = "addr", alias = "address")]
    url: String,
}

/// Adds a node: first as a learner that catches up, then as a voter.
async fn add_member(
    State(s): State<AppState>,
    caller: Caller,
    body: Result<Json<NewMember>, JsonRejection>,
) -> ApiResult {
    require_role(&caller, &[Role::Admin])?;
    let b = json_body(body)?;
    let url = b.url.trim_end_matches('/').to_owned();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ApiError::bad_request(format!("url {url:?} must be an http:// or https:// address")));
    }
    let raft_err = |e: String| ApiError::typed(ErrorCode::Unavailable, "membership-change-failed", e);
    s.node.raft.add_learner(b.node_id, BasicNode { addr: url }, true).await.map_err(|e| raft_err(e.to_string()))?;
    let mut voters: BTreeSet<u64> = s.node.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
    voters.insert(b.node_id);
    s.node.raft.change_membership(voters, false).await.map_err(|e| raft_err(e.to_string()))?;
    tracing::info!(node = b.node_id, by = caller.subject, "cluster member added");
    cluster(State(s), caller).await
}

async fn remove_member(State(s): State<AppState>, caller: Caller, Path(id): Path<u64>) -> ApiResult {
    require_role(&caller, &[Role::Admin])?;
    let mut voters: BTreeSet<u64> = s.node.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
    if !voters.remove(&id) {
        return Err(ApiError::not_found(format!("node {id} is not a voter")));
    }
    if voters.is_empty() {
        return Err(ApiError::new(ErrorCode::Conflict, "the last voter cannot be removed"));
    }
    s.node
        .raft
        .change_membership(voters, false)
        .await
        .map_err(|e| ApiError::typed(ErrorCode::Unavailable, "membership-change-failed", e.to_string()))?;
    tracing::info!(node = id, by = caller.subject, "cluster member removed");
    cluster(State(s), caller).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_describes_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        for (method, path) in ROUTES {
            assert!(paths.get(*path).and_then(|p| p.get(*method)).is_some(), "{method} {path} is not in openapi.json");
        }
        let documented: usize = paths.values().map(|v| v.as_object().unwrap().len()).sum();
        assert_eq!(documented, ROUTES.len(), "openapi.json documents a route the router does not serve");
        // Every schema reference resolves.
        let text = OPENAPI;
        for part in text.split("\"$ref\": \"#/components/").skip(1) {
            let target = &part[..part.find('"').unwrap()];
            let mut node = &doc["components"];
            for seg in target.split('/') {
                node = &node[seg];
            }
            assert!(!node.is_null(), "dangling $ref {target}");
        }
    }
}
