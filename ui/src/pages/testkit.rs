//! In-process page tests: a fake public API on a local port and a browser-like client
//! that signs in through the login form, keeps cookies and sends forms with the CSRF token.

use crate::{UiConfig, UiState};
use axum::body::Body;
use axum::http::{Request, header};
use axum::response::IntoResponse;
use axum::routing::post;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

/// Serves `api` plus a token endpoint that grants `roles`; answers its base URL.
pub async fn fake_api(api: axum::Router, roles: &'static str) -> String {
    let token = move || async move {
        axum::Json(serde_json::json!({
            "access_token": "t", "refresh_token": "r", "expires_in": 3600, "scope": roles,
        }))
        .into_response()
    };
    let app = api.route("/api/v1/auth/token", post(token));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// One answer: status, body, `Location`.
pub struct Page {
    pub status: u16,
    pub body: String,
    pub location: Option<String>,
}

/// A browser of the UI.
pub struct Client {
    app: axum::Router,
    cookies: Vec<String>,
    csrf: String,
}

fn hidden_value<'a>(body: &'a str, marker: &str) -> Option<&'a str> {
    let start = body.find(marker)? + marker.len();
    body[start..].split('"').next()
}

impl Client {
    /// Signs in at a UI that talks to `api`.
    pub async fn signed_in(api: &str) -> Client {
        let state = UiState::new(UiConfig { api: api.to_owned(), secure_cookies: false }).unwrap();
        let mut c = Client { app: crate::router(state), cookies: Vec::new(), csrf: String::new() };
        let login = c.get("/login").await;
        c.csrf = hidden_value(&login.body, "name=\"_csrf\" value=\"").unwrap().to_owned();
        let r = c.post("/login", &[("username", "tester"), ("password", "password123"), ("next", "/")]).await;
        assert_eq!(r.status, 303, "{}", r.body);
        c.get("/").await;
        c
    }

    async fn send(&mut self, req: Request<Body>) -> Page {
        let r = self.app.clone().oneshot(req).await.unwrap();
        for c in r.headers().get_all(header::SET_COOKIE) {
            let kv = c.to_str().unwrap().split(';').next().unwrap().to_owned();
            let name = format!("{}=", kv.split('=').next().unwrap());
            self.cookies.retain(|x| !x.starts_with(&name));
            self.cookies.push(kv);
        }
        let status = r.status().as_u16();
        let location = r.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned());
        let body = String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        if let Some(t) = hidden_value(&body, "data-csrf=\"") {
            self.csrf = t.to_owned();
        }
        Page { status, body, location }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let req = Request::get(path).header(header::COOKIE, self.cookies.join("; ")).body(Body::empty()).unwrap();
        self.send(req).await
    }

    /// Sends a form with the session's CSRF token.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let csrf = self.csrf.clone();
        let mut kv = form.to_vec();
        kv.push(("_csrf", &csrf));
        let req = Request::post(path)
            .header(header::COOKIE, self.cookies.join("; "))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(serde_urlencoded::to_string(&kv).unwrap()))
            .unwrap();
        self.send(req).await
    }
}
