//! Service accounts: list, create (answering the secret once), read, patch (incl. secret rotation) and delete.

use super::{ApiResult, AppState, ClientAddr, admin_delete, created, require_role};
use crate::auth::{hash_secret, random_secret};
use crate::state::{Op, ServiceAccount, check_roles};
use artstore_shared::ApiError;
use artstore_shared::auth::{Caller, Role};
use artstore_shared::error::json_body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/service-accounts", get(list_accounts).post(create_account))
        .route("/api/v1/service-accounts/{client_id}", get(get_account).patch(patch_account).delete(delete_account))
}

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
