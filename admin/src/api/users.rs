//! Users: list, create, read, patch (incl. changing one's own password) and delete.

use super::{ApiResult, AppState, ClientAddr, admin_delete, created, require_role};
use crate::auth::hash_secret;
use crate::state::{Op, User, check_roles};
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
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{username}", get(get_user).patch(patch_user).delete(delete_user))
}

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
