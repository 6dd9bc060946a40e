//! Raft cluster membership: the cluster's state, adding a voter and removing one.

use super::{ApiResult, AppState, require_role};
use artstore_shared::auth::{Caller, Role};
use artstore_shared::error::json_body;
use artstore_shared::{ApiError, ErrorCode};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::BasicNode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeSet;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/cluster/members", post(add_member))
        .route("/api/v1/cluster/members/{id}", axum::routing::delete(remove_member))
}

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
