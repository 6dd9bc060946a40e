//! Token signing keys: the current key, the retired keys still accepted until the end of
//! their grace period, and rotating now.

use super::{done, not_allowed};
use crate::UiState;
use crate::layout::{self, Nav};
use crate::session::{Sess, error_box};
use artstore_shared::auth::Role;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::html;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

pub fn routes() -> Router<UiState> {
    Router::new().route("/keys", get(list)).route("/keys/rotate", post(rotate))
}

/// One key as `GET /api/v1/keys` answers it (never private material).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Key {
    kid: String,
    created_at: String,
    retired_at: Option<String>,
    /// The end of the grace period: tokens it signed are refused after this.
    expires_at: Option<String>,
    current: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Keys {
    items: Vec<Key>,
}

async fn list(State(state): State<UiState>, s: Sess) -> Response {
    let title = "Signing keys";
    if !Nav::Keys.allowed(&s) {
        return layout::forbidden(&s, title, Nav::Keys);
    }
    let keys = state.api.get::<Keys>(&s.token(), "/api/v1/keys").await;
    let body = html! {
        p {
            "The admin cluster signs every access token (RS256) with its current key and publishes the "
            "public keys at " code { "/.well-known/jwks.json" } ". Keys rotate on a schedule; a retired key "
            "stays published until the end of its grace period, so tokens it signed keep working until then."
        }
        @match &keys {
            Err(e) => (error_box(e)),
            Ok(k) => {
                h2 { "Current key" }
                @match k.items.iter().rev().find(|k| k.current) {
                    Some(c) => dl.fields {
                        dt { "Key id (kid)" } dd.mono { (c.kid) }
                        dt { "Created" } dd { (layout::time(&c.created_at)) }
                    },
                    None => div.msg.err role="alert" { "No current signing key: no token can be issued." },
                }
                h2 { "Retired keys" }
                @let retired: Vec<&Key> = k.items.iter().filter(|k| !k.current).collect();
                @if retired.is_empty() {
                    p.muted { "No retired key is still in its grace period." }
                } @else {
                    div.table-wrap { table {
                        caption.vh { "Retired keys in their grace period" }
                        thead { tr {
                            th scope="col" { "Key id (kid)" } th scope="col" { "Created" }
                            th scope="col" { "Retired" } th scope="col" { "End of grace" }
                        } }
                        tbody { @for k in retired { tr {
                            th.mono scope="row" { (k.kid) }
                            td { (layout::time(&k.created_at)) }
                            td { (k.retired_at.as_deref().map(layout::time).unwrap_or_default()) }
                            td { (k.expires_at.as_deref().map(layout::time).unwrap_or_else(|| "not reported".to_owned())) }
                        } } }
                    } }
                }
            }
        }
        @if s.is(Role::Admin) {
            h2 { "Rotate" }
            form method="post" action="/keys/rotate"
                data-confirm="Rotate the signing key now? New tokens are signed with a new key at once; tokens signed with the current key stay valid until the end of its grace period." {
                (layout::csrf(&s))
                button type="submit" { "Rotate now" }
            }
        }
    };
    layout::page(&s, title, Nav::Keys, body).into_response()
}

async fn rotate(State(state): State<UiState>, s: Sess) -> Response {
    if !s.is(Role::Admin) {
        return not_allowed(&s, "rotate signing keys", "/keys");
    }
    let outcome = state.api.send(&s.token(), Method::POST, "/api/v1/keys/rotate", None).await.map(|v| {
        match v.get("kid").and_then(Value::as_str) {
            Some(kid) => {
                format!("A new signing key {kid} is current; the previous one is retired and in its grace period.")
            }
            None => "The signing key is rotated.".to_owned(),
        }
    });
    done(&s, outcome, "/keys")
}
