//! Retention policies: list, create, read, patch, delete and marking one in use.

use super::{ApiResult, AppState, ClientAddr, admin_delete, created, require_role};
use crate::state::{Op, Policy, check_policy_fields};
use artstore_shared::ApiError;
use artstore_shared::auth::{Caller, Permission, Role};
use artstore_shared::error::json_body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/retention-policies", get(list_policies).post(create_policy))
        .route("/api/v1/retention-policies/{name}", get(get_policy).patch(patch_policy).delete(delete_policy))
        .route("/api/v1/retention-policies/{name}/usage", post(use_policy))
}

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
