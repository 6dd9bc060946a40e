//! The admin HTTP API: the OAuth2 token endpoint, the JWKS, CRUD for users, service accounts,
//! retention policies and storage elements, key rotation, the audit chain and cluster
//! membership. Writes sent to a follower are forwarded to the leader.

mod accounts;
mod audit;
mod cluster;
mod elements;
mod keys;
mod policies;
mod token;
mod users;

use crate::node::Node;
use crate::state::Op;
use artstore_shared::auth::{Auth, Caller, Role};
use artstore_shared::clients::ElementClient;
use artstore_shared::tls::PeerAddr;
use artstore_shared::{ApiError, ErrorCode};
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;
use std::sync::Arc;

/// Handler state.
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    /// Front proxies whose `X-Forwarded-For` is believed.
    pub proxies: Arc<artstore_shared::client_addr::TrustedProxies>,
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
pub const OPENAPI: &str = include_str!("../../openapi.json");

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
        .merge(token::routes())
        .merge(users::routes())
        .merge(accounts::routes())
        .merge(policies::routes())
        .merge(elements::routes())
        .merge(keys::routes())
        .merge(audit::routes())
        .merge(cluster::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), forward_writes))
        .with_state(state)
}

/// The client's address: the forwarding node's header, else the socket peer.
struct ClientAddr(Option<String>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(client_addr(s, parts)))
    }
}

/// The client's address: what the node that forwarded the request to this leader saw (only
/// when the request carries the cluster secret, or the cluster has none: anyone else could
/// name any address), else the socket peer, or the client a trusted front proxy names.
fn client_addr(s: &AppState, parts: &Parts) -> Option<String> {
    let from_peer_node = s.node.cfg.cluster_secret.as_deref().is_none_or(|secret| {
        parts.headers.get(crate::network::SECRET_HEADER).is_some_and(|v| same_secret(v.as_bytes(), secret.as_bytes()))
    });
    if from_peer_node && let Some(v) = parts.headers.get(FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        return Some(v.to_owned());
    }
    let peer = parts.extensions.get::<ConnectInfo<PeerAddr>>()?.0.0.ip();
    Some(s.proxies.client_ip(peer, &parts.headers).to_string())
}

/// Compares digests, so the time taken does not depend on the secret.
pub(crate) fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    let digest = |b: &[u8]| ring::digest::digest(&ring::digest::SHA256, b).as_ref().to_vec();
    digest(given) == digest(secret)
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
    match proxy(&s, &base, req).await {
        Ok(r) => r,
        Err(e) => e.with("leader_id", leader).into_response(),
    }
}

async fn proxy(s: &AppState, base: &str, req: Request) -> ApiResult<Response> {
    let http = &s.http;
    let (parts, body) = req.into_parts();
    let client = client_addr(s, &parts);
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
    let url = format!("{base}{}", parts.uri.path_and_query().map_or("", |p| p.as_str()));
    let mut rb = http.request(parts.method.clone(), &url).body(body);
    for (k, v) in &parts.headers {
        if k != header::HOST
            && k != header::CONTENT_LENGTH
            && k.as_str() != FORWARDED_FOR
            && k.as_str() != crate::network::SECRET_HEADER
        {
            rb = rb.header(k, v);
        }
    }
    rb = rb.header("x-artstore-forwarded", "1");
    if let Some(c) = client {
        rb = rb.header(FORWARDED_FOR, c);
    }
    if let Some(secret) = &s.node.cfg.cluster_secret {
        rb = rb.header(crate::network::SECRET_HEADER, secret);
    }
    let resp = artstore_shared::telemetry::propagate(rb).send().await.map_err(|e| {
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
