//! The token-signing keys: list them and rotate on demand.

use super::{ApiResult, AppState, ClientAddr, require_role};
use artstore_shared::auth::{Caller, Role};
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/keys", get(list_keys)).route("/api/v1/keys/rotate", post(rotate_keys))
}

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
