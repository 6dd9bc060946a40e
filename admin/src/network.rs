//! Raft RPCs over HTTP between admin nodes (`POST /raft/{append,vote,snapshot}`, JSON), with
//! an optional shared cluster secret and a fault-injection switch for tests; and the other
//! node-to-node calls under the same secret: `GET /raft/audit` (a range of the audit chain,
//! for a node filling a gap) and `POST /raft/login` (the leader's cluster-wide count of
//! failed logins).

use crate::types::{NodeId, Raft, TypeConfig};
use axum::Json;
use axum::extract::Query;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The header carrying the cluster secret on Raft RPCs.
pub const SECRET_HEADER: &str = "x-artstore-cluster-secret";

/// Nodes cut off from the rest: RPCs from or to them fail as if the network were down.
/// Shared by the nodes of an in-process test cluster.
#[derive(Clone, Default, Debug)]
pub struct Faults(Arc<RwLock<HashSet<NodeId>>>);

impl Faults {
    /// Cuts `node` off from every other node.
    pub fn isolate(&self, node: NodeId) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).insert(node);
    }
    /// Reconnects `node`.
    pub fn heal(&self, node: NodeId) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).remove(&node);
    }
    /// Whether `node` is cut off.
    pub fn is_isolated(&self, node: NodeId) -> bool {
        self.0.read().unwrap_or_else(|e| e.into_inner()).contains(&node)
    }
}

/// Makes one [`Connection`] per peer.
#[derive(Clone)]
pub struct Network {
    pub me: NodeId,
    pub http: reqwest::Client,
    pub secret: Option<String>,
    pub faults: Faults,
}

impl Network {
    /// `builder` carries the TLS trust (see `artstore_shared::tls::client_builder`).
    pub fn new(
        me: NodeId,
        secret: Option<String>,
        faults: Faults,
        builder: reqwest::ClientBuilder,
    ) -> anyhow::Result<Self> {
        let http =
            builder.connect_timeout(Duration::from_millis(500)).pool_idle_timeout(Duration::from_secs(30)).build()?;
        Ok(Self { me, http, secret, faults })
    }
}

/// A client for one peer.
pub struct Connection {
    net: Network,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        Connection { net: self.clone(), target, addr: node.addr.trim_end_matches('/').to_owned() }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Transport(String);

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.net.faults.is_isolated(self.net.me) || self.net.faults.is_isolated(self.target) {
            return Err(RPCError::Unreachable(Unreachable::new(&Transport("partitioned by fault injection".into()))));
        }
        let mut rb = self.net.http.post(format!("{}/raft/{path}", self.addr)).json(req).timeout(option.hard_ttl());
        if let Some(s) = &self.net.secret {
            rb = rb.header(SECRET_HEADER, s);
        }
        let resp = rb.send().await.map_err(|e| {
            if e.is_connect() {
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        if !resp.status().is_success() {
            let t = Transport(format!("{} answered http {}", self.addr, resp.status()));
            return Err(RPCError::Unreachable(Unreachable::new(&t)));
        }
        let body: Result<Resp, RaftError<NodeId, E>> =
            resp.json().await.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        body.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, &option).await
    }
}

/// What the Raft RPC handlers need.
#[derive(Clone)]
pub struct RaftRpc {
    pub me: NodeId,
    pub raft: Raft,
    pub secret: Option<String>,
    pub faults: Faults,
    pub node: Arc<crate::node::Node>,
}

impl RaftRpc {
    fn admit(&self, headers: &HeaderMap) -> Result<(), StatusCode> {
        if self.faults.is_isolated(self.me) {
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
        if let Some(s) = &self.secret {
            let given = headers.get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
            if !crate::api::same_secret(given, s.as_bytes()) {
                return Err(StatusCode::FORBIDDEN);
            }
        }
        Ok(())
    }
}

/// The `/raft/*` routes.
pub fn routes(rpc: RaftRpc) -> axum::Router {
    axum::Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/audit", get(audit))
        .route("/raft/login", post(login))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(rpc)
}

async fn append(
    State(s): State<RaftRpc>,
    headers: HeaderMap,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Response {
    if let Err(r) = s.admit(&headers) {
        return r.into_response();
    }
    Json(s.raft.append_entries(req).await).into_response()
}

async fn vote(State(s): State<RaftRpc>, headers: HeaderMap, Json(req): Json<VoteRequest<NodeId>>) -> Response {
    if let Err(r) = s.admit(&headers) {
        return r.into_response();
    }
    Json(s.raft.vote(req).await).into_response()
}

async fn snapshot(
    State(s): State<RaftRpc>,
    headers: HeaderMap,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Response {
    if let Err(r) = s.admit(&headers) {
        return r.into_response();
    }
    Json(s.raft.install_snapshot(req).await).into_response()
}

/// Most audit entries one `/raft/audit` call answers.
pub const AUDIT_PAGE: usize = 10_000;

#[derive(Debug, Deserialize)]
struct AuditRange {
    after: u64,
    limit: Option<usize>,
}

async fn audit(State(s): State<RaftRpc>, headers: HeaderMap, Query(q): Query<AuditRange>) -> Response {
    if let Err(r) = s.admit(&headers) {
        return r.into_response();
    }
    let sm = s.node.sm.clone();
    let limit = q.limit.unwrap_or(AUDIT_PAGE).clamp(1, AUDIT_PAGE);
    match tokio::task::spawn_blocking(move || sm.read_audit(q.after, limit)).await {
        Ok(Ok(items)) => Json(items).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A login attempt's check or outcome, sent to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginReport {
    /// The user name or client id tried.
    pub who: String,
    /// The client's address.
    pub address: String,
    /// `None`: only asks whether the attempt may go ahead; `Some(false)`: it failed;
    /// `Some(true)`: it succeeded.
    pub ok: Option<bool>,
}

/// The leader's answer: seconds to wait, when the attempt may not go ahead.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginVerdict {
    pub blocked_for: Option<u64>,
}

async fn login(State(s): State<RaftRpc>, headers: HeaderMap, Json(r): Json<LoginReport>) -> Response {
    if let Err(code) = s.admit(&headers) {
        return code.into_response();
    }
    // Only the leader holds the cluster's counts; a node that lost the lead says so and
    // the caller falls back to its own.
    if !s.node.is_leader() {
        return StatusCode::MISDIRECTED_REQUEST.into_response();
    }
    let limiter = &s.node.limiter;
    match r.ok {
        None => {}
        Some(false) => limiter.failed(&r.who, &r.address),
        Some(true) => limiter.succeeded(&r.who),
    }
    Json(LoginVerdict { blocked_for: limiter.blocked(&r.who, &r.address) }).into_response()
}
