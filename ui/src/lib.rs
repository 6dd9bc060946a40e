//! ArtStore's web UI: server-rendered pages for archivists and administrators.
//!
//! The UI holds no data of its own. Every page is a client of the public API (the one port
//! of `artstore standalone`, or a cluster's front proxy) and acts with the signed-in user's
//! token, so the API enforces every permission; the UI only hides what the user's roles
//! cannot use.
//!
//! - [`session`]: login, logout, server-side sessions behind an `HttpOnly`, `SameSite=Strict`
//!   cookie, token refresh, CSRF checks on every state-changing request.
//! - [`api`]: the HTTP client of the public API and readable errors from its problems.
//! - [`layout`]: the page frame (navigation by role, messages) and small view helpers.
//! - [`pages`]: one module per page.
//! - [`assets`]: the static files (CSS, the vendored htmx, the upload script).

pub mod api;
pub mod assets;
pub mod layout;
pub mod pages;
pub mod session;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

/// Settings of the UI.
#[derive(Debug, Clone)]
pub struct UiConfig {
    /// Base URL of the public API (`http://127.0.0.1:8080` in standalone).
    pub api: String,
    /// Mark the session cookie `Secure` (the UI is served over TLS).
    pub secure_cookies: bool,
}

/// What every handler gets.
#[derive(Clone)]
pub struct UiState {
    pub cfg: Arc<UiConfig>,
    pub api: api::Api,
    pub sessions: session::Sessions,
}

impl std::fmt::Debug for UiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiState").field("api", &self.cfg.api).finish_non_exhaustive()
    }
}

impl UiState {
    pub fn new(cfg: UiConfig) -> anyhow::Result<UiState> {
        let api = api::Api::new(&cfg.api)?;
        Ok(UiState { cfg: Arc::new(cfg), api, sessions: session::Sessions::default() })
    }
}

/// Every UI route: the pages, the static files, with the security headers and the CSRF check.
pub fn router(state: UiState) -> Router {
    Router::new()
        .merge(session::routes())
        .merge(pages::routes())
        .merge(assets::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), session::csrf_guard))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// The content security policy of every page: scripts and styles only from this origin
/// (no inline script), no framing except previews of this origin's own documents.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
object-src 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The preview of a document is framed by its own document page.
pub const PREVIEW_CSP: &str = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'self'";

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let preview = h.contains_key(header::CONTENT_SECURITY_POLICY);
    if !preview {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    } else {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
