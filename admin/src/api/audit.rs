//! The audit chain, paged by sequence number, with the key that verifies it.

use super::{ApiResult, AppState};
use artstore_shared::auth::{Caller, Permission};
use artstore_shared::{ApiError, ErrorCode};
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
    let last = s.node.read(|st| st.audit_head.seq);
    let sm = s.node.sm.clone();
    let items = tokio::task::spawn_blocking(move || sm.read_audit(after, limit))
        .await
        .map_err(|e| ApiError::internal(format!("audit read task: {e}")))?
        .map_err(|e| ApiError::internal(format!("reading the audit chain: {e}")))?;
    if items.is_empty() && after < last {
        let have = s.node.sm.audit_written().seq;
        return Err(ApiError::typed(
            ErrorCode::Unavailable,
            "audit-catching-up",
            format!(
                "this node holds the audit chain up to entry {have} of {last}; it is fetching the rest from a peer, retry shortly"
            ),
        ));
    }
    let next = items.last().map(|e| e.seq).filter(|&seq| seq < last);
    let public_key = s.node.read(crate::state::State::audit_public_key);
    Ok(Json(json!({"items": items, "next_after": next, "last_seq": last, "public_key": public_key})).into_response())
}
