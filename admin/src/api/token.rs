//! The OAuth2 token endpoint (password, client_credentials, refresh_token) and the JWKS.

use super::{ApiResult, AppState, ClientAddr};
use crate::auth::{Principal, check_refresh, principal, token_response, verify_secret};
use artstore_shared::{ApiError, ErrorCode};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use std::collections::BTreeMap;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/.well-known/jwks.json", get(jwks)).route("/api/v1/auth/token", post(token))
}

async fn jwks(State(s): State<AppState>) -> Response {
    let doc = s.node.keys.document();
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "public, max-age=60")], doc.to_vec())
        .into_response()
}

/// Reads the token request's fields from a form or a JSON body.
fn token_fields(headers: &HeaderMap, body: &Bytes) -> ApiResult<BTreeMap<String, String>> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.starts_with("application/json") {
        let v: BTreeMap<String, Value> = serde_json::from_slice(body)
            .map_err(|e| ApiError::typed(ErrorCode::BadRequest, "bad-json", e.to_string()))?;
        Ok(v.into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                Value::Null => None,
                other => Some((k, other.to_string())),
            })
            .collect())
    } else if ct.starts_with("application/x-www-form-urlencoded") || ct.is_empty() {
        serde_urlencoded::from_bytes(body).map_err(|e| ApiError::bad_request(format!("malformed form body: {e}")))
    } else {
        Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the token endpoint takes application/x-www-form-urlencoded or application/json",
        ))
    }
}

fn oauth_error(code: ErrorCode, error: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::typed(code, if error == "invalid_client" { "invalid-client" } else { "invalid-grant" }, detail)
        .with("error", error)
}

/// HTTP Basic credentials (client_secret_basic).
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (id, secret) = s.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

async fn token(State(s): State<AppState>, addr: ClientAddr, headers: HeaderMap, body: Bytes) -> Response {
    let address = addr.0.unwrap_or_else(|| "unknown".to_owned());
    let r = token_inner(&s, &address, &headers, &body).await;
    let mut resp = match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            let retry = e.extra.as_ref().and_then(|x| x.get("retry_after")).and_then(Value::as_u64);
            let mut r = e.into_response();
            if let Some(secs) = retry
                && let Ok(v) = HeaderValue::from_str(&secs.to_string())
            {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    };
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn token_inner(s: &AppState, address: &str, headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let f = token_fields(headers, body)?;
    if s.node.read(|st| st.bootstrapped_at.is_none()) {
        // Not a failed login: nobody can log in yet.
        return Err(ApiError::typed(
            ErrorCode::Unavailable,
            "not-ready",
            "the admin cluster is not bootstrapped yet; retry shortly",
        ));
    }
    let field = |k: &str| f.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let node = &s.node;
    let limited = async |who: &str| {
        node.login_blocked(who, address).await.map(|secs| {
            ApiError::typed(
                ErrorCode::TooManyRequests,
                "too-many-failed-logins",
                format!("too many failed logins; retry in {secs} s"),
            )
            .with("retry_after", secs)
            .with("error", "slow_down")
        })
    };
    match field("grant_type") {
        Some("password") => {
            let user = field("username")
                .ok_or_else(|| oauth_error(ErrorCode::BadRequest, "invalid_request", "username is missing"))?;
            let pass = field("password")
                .ok_or_else(|| oauth_error(ErrorCode::BadRequest, "invalid_request", "password is missing"))?;
            if let Some(e) = limited(user).await {
                return Err(e);
            }
            let found = node.read(|st| st.users.get(user).filter(|u| !u.disabled).cloned());
            if !verify_secret(pass, found.as_ref().map(|u| u.password_hash.clone())).await {
                node.login_outcome(user, address, false).await;
                tracing::warn!(user, address, "failed login");
                return Err(oauth_error(ErrorCode::BadRequest, "invalid_grant", "wrong user name or password"));
            }
            node.login_outcome(user, address, true).await;
            let u = found.ok_or_else(|| ApiError::internal("user vanished"))?;
            token_response(node, &Principal { subject: u.username, roles: u.roles, kind: "user" })
        }
        Some("client_credentials") => {
            let (id, secret) = match (field("client_id"), field("client_secret")) {
                (Some(i), Some(s)) => (i.to_owned(), s.to_owned()),
                _ => basic_auth(headers).ok_or_else(|| {
                    oauth_error(ErrorCode::Unauthenticated, "invalid_client", "client_id and client_secret are missing")
                })?,
            };
            if let Some(e) = limited(&id).await {
                return Err(e);
            }
            let found = node.read(|st| st.service_accounts.get(&id).filter(|a| !a.disabled).cloned());
            if !verify_secret(&secret, found.as_ref().map(|a| a.secret_hash.clone())).await {
                node.login_outcome(&id, address, false).await;
                tracing::warn!(client_id = id, address, "failed client authentication");
                return Err(oauth_error(ErrorCode::Unauthenticated, "invalid_client", "wrong client id or secret"));
            }
            node.login_outcome(&id, address, true).await;
            let a = found.ok_or_else(|| ApiError::internal("account vanished"))?;
            token_response(node, &Principal { subject: a.client_id, roles: a.roles, kind: "service_account" })
        }
        Some("refresh_token") => {
            let t = field("refresh_token")
                .ok_or_else(|| oauth_error(ErrorCode::BadRequest, "invalid_request", "refresh_token is missing"))?;
            let subject = check_refresh(node, t).await?;
            // Roles are read again: a refresh never outlives a removed or disabled principal.
            let p = node.read(|st| principal(st, &subject)).ok_or_else(|| {
                oauth_error(
                    ErrorCode::BadRequest,
                    "invalid_grant",
                    format!("{subject:?} no longer exists or is disabled"),
                )
            })?;
            token_response(node, &p)
        }
        Some(other) => Err(oauth_error(
            ErrorCode::BadRequest,
            "unsupported_grant_type",
            format!("grant_type {other:?} is not password, client_credentials or refresh_token"),
        )),
        None => Err(oauth_error(ErrorCode::BadRequest, "invalid_request", "grant_type is missing")),
    }
}
