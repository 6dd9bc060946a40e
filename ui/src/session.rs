//! Sessions: the login form checks the user name and password at the admin's token endpoint;
//! the tokens stay on the server, the browser holds only a random session id in an
//! `HttpOnly`, `SameSite=Strict` cookie (`Secure` under TLS). The access token is refreshed
//! before it expires. Every state-changing request carries the session's CSRF token (a
//! hidden `_csrf` field or an `X-CSRF-Token` header), checked by [`csrf_guard`].

use crate::UiState;
use crate::api::{TokenResponse, UiError};
use crate::layout;
use artstore_shared::auth::{Caller, Permission, Role};
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The cookie that names a session.
pub const SESSION_COOKIE: &str = "artstore_session";
/// The cookie that carries the login form's CSRF token before there is a session.
pub const LOGIN_COOKIE: &str = "artstore_login";
/// The form field and the header that carry the CSRF token.
pub const CSRF_FIELD: &str = "_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session unused this long is forgotten.
const IDLE: Duration = Duration::from_secs(12 * 3600);
/// The access token is refreshed when it has less than this left.
const REFRESH_BEFORE: Duration = Duration::from_secs(120);
/// Largest form body the CSRF check reads.
const MAX_FORM: usize = 1 << 20;

struct Tokens {
    access: String,
    refresh: Option<String>,
    expires: Instant,
}

/// A message shown once on the next page.
#[derive(Debug, Clone)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

/// One signed-in user.
pub struct Session {
    pub id: String,
    pub csrf: String,
    pub user: String,
    pub roles: Vec<String>,
    tokens: Mutex<Tokens>,
    flash: Mutex<Vec<Flash>>,
    last_used: Mutex<Instant>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("user", &self.user).field("roles", &self.roles).finish_non_exhaustive()
    }
}

impl Session {
    /// The current access token.
    pub fn token(&self) -> String {
        lock(&self.tokens).access.clone()
    }

    /// The user as the API sees them, to decide what the pages show.
    pub fn caller(&self) -> Caller {
        Caller { subject: self.user.clone(), roles: self.roles.clone(), token_id: None }
    }

    pub fn can(&self, p: Permission) -> bool {
        self.caller().can(p)
    }

    pub fn is(&self, r: Role) -> bool {
        self.caller().has_role(r)
    }

    /// Queues a message for the next page.
    pub fn flash(&self, ok: bool, text: impl Into<String>) {
        lock(&self.flash).push(Flash { ok, text: text.into() });
    }

    /// Takes the queued messages.
    pub fn take_flash(&self) -> Vec<Flash> {
        std::mem::take(&mut *lock(&self.flash))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The sessions of this UI (in memory: a restart signs everyone out).
#[derive(Clone, Default)]
pub struct Sessions {
    map: Arc<Mutex<HashMap<String, Arc<Session>>>>,
}

impl Sessions {
    fn get(&self, id: &str) -> Option<Arc<Session>> {
        let s = lock(&self.map).get(id).cloned()?;
        let mut last = lock(&s.last_used);
        if last.elapsed() > IDLE {
            drop(last);
            self.remove(id);
            return None;
        }
        *last = Instant::now();
        drop(last);
        Some(s)
    }

    fn insert(&self, user: &str, t: TokenResponse) -> Arc<Session> {
        let mut map = lock(&self.map);
        map.retain(|_, s| lock(&s.last_used).elapsed() <= IDLE);
        let roles = t.scope.as_deref().unwrap_or("").split_whitespace().map(str::to_owned).collect();
        let s = Arc::new(Session {
            id: random_token(),
            csrf: random_token(),
            user: user.to_owned(),
            roles,
            tokens: Mutex::new(tokens_of(t)),
            flash: Mutex::new(Vec::new()),
            last_used: Mutex::new(Instant::now()),
        });
        map.insert(s.id.clone(), s.clone());
        s
    }

    fn remove(&self, id: &str) {
        lock(&self.map).remove(id);
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn tokens_of(t: TokenResponse) -> Tokens {
    Tokens {
        access: t.access_token,
        refresh: t.refresh_token,
        expires: Instant::now() + Duration::from_secs(t.expires_in.unwrap_or(300)),
    }
}

/// 256 random bits, URL-safe.
pub fn random_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// The value of cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn set_cookie(state: &UiState, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(a) = max_age {
        c.push_str(&format!("; Max-Age={a}"));
    }
    if state.cfg.secure_cookies {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// The signed-in user of a request. Without a valid session a page answers with a redirect
/// to the login form (htmx requests get `HX-Redirect`).
pub struct Sess(pub Arc<Session>);

impl std::ops::Deref for Sess {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.0
    }
}

impl FromRequestParts<UiState> for Sess {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &UiState) -> Result<Sess, Response> {
        let to_login = || {
            let next = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let target = format!("/login?next={}", crate::api::enc(next));
            if parts.headers.contains_key("hx-request") {
                let mut r = StatusCode::UNAUTHORIZED.into_response();
                if let Ok(v) = HeaderValue::from_str(&target) {
                    r.headers_mut().insert("hx-redirect", v);
                }
                r
            } else {
                Redirect::to(&target).into_response()
            }
        };
        let Some(s) = cookie(&parts.headers, SESSION_COOKIE).and_then(|id| state.sessions.get(&id)) else {
            return Err(to_login());
        };
        let refresh = {
            let t = lock(&s.tokens);
            (t.expires.saturating_duration_since(Instant::now()) < REFRESH_BEFORE).then(|| t.refresh.clone())
        };
        match refresh {
            None => {}
            Some(Some(rt)) => match state.api.token(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]).await {
                Ok(t) => *lock(&s.tokens) = tokens_of(t),
                Err(e) => {
                    tracing::info!(user = %s.user, error = %e.message(), "session refresh refused; signing out");
                    state.sessions.remove(&s.id);
                    return Err(to_login());
                }
            },
            Some(None) => {
                state.sessions.remove(&s.id);
                return Err(to_login());
            }
        }
        Ok(Sess(s))
    }
}

pub fn routes() -> Router<UiState> {
    Router::new().route("/login", get(login_page).post(login)).route("/logout", post(logout))
}

#[derive(serde::Deserialize, Default)]
struct NextQuery {
    next: Option<String>,
}

/// Only this site's own paths are followed after login.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\") => n.to_owned(),
        _ => "/".to_owned(),
    }
}

async fn login_page(State(state): State<UiState>, headers: HeaderMap, Query(q): Query<NextQuery>) -> Response {
    let token = cookie(&headers, LOGIN_COOKIE).filter(|t| t.len() == 64).unwrap_or_else(random_token);
    let mut r = login_form(&token, q.next.as_deref(), None, "").into_response();
    r.headers_mut().append(header::SET_COOKIE, set_cookie(&state, LOGIN_COOKIE, &token, Some(3600)));
    r
}

fn login_form(csrf: &str, next: Option<&str>, error: Option<&str>, user: &str) -> maud::Markup {
    let next = safe_next(next);
    layout::bare(
        "Sign in",
        html! {
            main.login {
                h1 { "ArtStore" }
                p.sub { "Sign in to the archive" }
                @if let Some(e) = error {
                    div.msg.err role="alert" { (e) }
                }
                form method="post" action="/login" {
                    input type="hidden" name=(CSRF_FIELD) value=(csrf);
                    input type="hidden" name="next" value=(next);
                    label for="username" { "User name" }
                    input #username name="username" autocomplete="username" required autofocus value=(user);
                    label for="password" { "Password" }
                    input #password name="password" type="password" autocomplete="current-password" required;
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

#[derive(serde::Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    #[serde(rename = "_csrf")]
    csrf: String,
    next: Option<String>,
}

async fn login(State(state): State<UiState>, axum::Form(f): axum::Form<LoginForm>) -> Response {
    let grant = [("grant_type", "password"), ("username", f.username.as_str()), ("password", f.password.as_str())];
    match state.api.token(&grant).await {
        Ok(t) => {
            let s = state.sessions.insert(&f.username, t);
            tracing::info!(user = %s.user, roles = ?s.roles, "signed in to the UI");
            let mut r = Redirect::to(&safe_next(f.next.as_deref())).into_response();
            r.headers_mut().append(header::SET_COOKIE, set_cookie(&state, SESSION_COOKIE, &s.id, None));
            r.headers_mut().append(header::SET_COOKIE, set_cookie(&state, LOGIN_COOKIE, "", Some(0)));
            r
        }
        Err(e) => {
            let text = match e.status {
                401 | 400 => "The user name or password is wrong, or the account is disabled.".to_owned(),
                429 => format!(
                    "Too many failed sign-ins: this login is locked for {} more seconds.",
                    e.retry_after.unwrap_or(60)
                ),
                _ => e.message(),
            };
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, login_form(&f.csrf, f.next.as_deref(), Some(&text), &f.username)).into_response()
        }
    }
}

async fn logout(State(state): State<UiState>, s: Sess) -> Response {
    state.sessions.remove(&s.id);
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().append(header::SET_COOKIE, set_cookie(&state, SESSION_COOKIE, "", Some(0)));
    r
}

/// Refuses every state-changing request whose CSRF token does not match: the session's for
/// a signed-in user, the login cookie's for the login form. Requests without a session pass
/// on to their handler, which answers with the login form.
pub async fn csrf_guard(State(state): State<UiState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let session = cookie(req.headers(), SESSION_COOKIE).and_then(|id| state.sessions.get(&id));
    let expected = match (&session, req.uri().path()) {
        (_, "/login") => cookie(req.headers(), LOGIN_COOKIE),
        (Some(s), _) => Some(s.csrf.clone()),
        (None, _) => return next.run(req).await,
    };
    let header_token = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if header_token.is_none() && req.uri().path() == MULTIPART_PATH && is_multipart(req.headers()) {
        // The upload form without JavaScript: its handler reads `_csrf` (the first part)
        // and refuses before it stores any file.
        return next.run(req).await;
    }
    let (req, given) = match header_token {
        Some(t) => (req, Some(t)),
        None if is_form(req.headers()) => {
            let (parts, body) = req.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
                return refusal(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.");
            };
            let given = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
                .ok()
                .and_then(|kv| kv.into_iter().find(|(k, _)| k == CSRF_FIELD).map(|(_, v)| v));
            (Request::from_parts(parts, Body::from(bytes)), given)
        }
        None => (req, None),
    };
    match (expected, given) {
        (Some(e), Some(g)) if !e.is_empty() && constant_eq(e.as_bytes(), g.as_bytes()) => next.run(req).await,
        _ => refusal(
            StatusCode::FORBIDDEN,
            "This form has expired or did not come from this site (CSRF check failed). Reload the page and try again.",
        ),
    }
}

/// The one route that takes `multipart/form-data` and checks the `_csrf` part itself.
pub const MULTIPART_PATH: &str = "/upload";

fn is_multipart(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("multipart/form-data"))
}

fn is_form(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// Compares secrets in time independent of where they differ.
pub fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refusal(status: StatusCode, text: &str) -> Response {
    let body = layout::bare(
        "Refused",
        html! {
            main.login {
                h1 { "Request refused" }
                div.msg.err role="alert" { (text) }
                p { a href="/" { "Back to ArtStore" } }
            }
        },
    );
    (status, body).into_response()
}

/// Renders an API refusal as a page region (for htmx swaps and full pages alike).
pub fn error_box(e: &UiError) -> maud::Markup {
    html! { div.msg.err role="alert" { (e.message()) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/documents?q=a")), "/documents?q=a");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; artstore_session=abc; b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
