//! The audit chain, paged by sequence number, with the key that verifies it.

use super::{ApiResult, AppState};
use artstore_shared::ApiError;
use artstore_shared::auth::{Caller, Permission};
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/audit", get(audit))
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
