//! The storage-element registry: list, register, read, patch, delete and mode changes, with health folded in.

use super::{ApiResult, AppState, ClientAddr, admin_delete, created, require_role};
use crate::node::Node;
use crate::state::{Element, Op, check_labels};
use artstore_shared::auth::{Caller, Permission, Role};
use artstore_shared::error::json_body;
use artstore_shared::{ApiError, ErrorCode};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/elements", get(list_elements).post(create_element))
        .route("/api/v1/elements/{id}", get(get_element).patch(patch_element).delete(delete_element))
        .route("/api/v1/elements/{id}/mode", post(element_mode))
}

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
