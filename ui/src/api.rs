//! The UI's client of the public API. Every call carries the signed-in user's token; every
//! refusal becomes a [`UiError`] with the API's own explanation, shown as a readable message.

use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;

/// A refusal or failure, as the UI shows it.
#[derive(Debug, Clone)]
pub struct UiError {
    /// The HTTP status the API answered (502 when it could not be reached).
    pub status: u16,
    /// A short title (the problem's `title`).
    pub title: String,
    /// The explanation (the problem's `detail`).
    pub detail: String,
    /// Seconds to wait before trying again (`retry_after` of a locked-out login).
    pub retry_after: Option<u64>,
}

impl UiError {
    pub fn new(status: u16, title: impl Into<String>, detail: impl Into<String>) -> UiError {
        UiError { status, title: title.into(), detail: detail.into(), retry_after: None }
    }

    /// The sentence shown to the user.
    pub fn message(&self) -> String {
        let mut m = if self.detail.is_empty() || self.detail == self.title {
            self.title.clone()
        } else if self.title.is_empty() {
            self.detail.clone()
        } else {
            format!("{}: {}", self.title, self.detail)
        };
        if let Some(s) = self.retry_after {
            m.push_str(&format!(" Try again in {s} seconds."));
        }
        m
    }

    /// Reads an API answer that is not a success: problem+json, an OAuth2 error, or text.
    pub async fn from_response(resp: reqwest::Response) -> UiError {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Self::from_body(status.as_u16(), status.canonical_reason().unwrap_or("Error"), &text)
    }

    fn from_body(status: u16, reason: &str, text: &str) -> UiError {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            let detail = text.trim().chars().take(300).collect::<String>();
            return UiError::new(status, reason, detail);
        };
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let title = s("title").or_else(|| s("error")).unwrap_or_else(|| reason.to_owned());
        let detail = s("detail").or_else(|| s("error_description")).unwrap_or_default();
        let retry_after = v.get("retry_after").and_then(Value::as_u64);
        UiError { status, title, detail, retry_after }
    }
}

impl From<reqwest::Error> for UiError {
    fn from(e: reqwest::Error) -> UiError {
        UiError::new(502, "The ArtStore API could not be reached", e.to_string())
    }
}

/// The token endpoint's answer.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub scope: Option<String>,
}

/// The HTTP client of the public API.
#[derive(Clone, Debug)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(base: &str) -> anyhow::Result<Api> {
        let http = artstore_shared::tls::http_client()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Api { http, base: base.trim_end_matches('/').to_owned() })
    }

    /// The absolute URL of an API path (`/api/v1/...`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The OAuth2 token endpoint with a form `grant`.
    pub async fn token(&self, grant: &[(&str, &str)]) -> Result<TokenResponse, UiError> {
        let resp =
            self.http.post(self.url("/api/v1/auth/token")).form(grant).timeout(Duration::from_secs(30)).send().await?;
        if !resp.status().is_success() {
            return Err(UiError::from_response(resp).await);
        }
        Ok(resp.json().await?)
    }

    /// A request with the user's token; the caller sends it.
    pub fn request(&self, token: &str, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(token)
    }

    /// GET `path` and read the JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, token: &str, path: &str) -> Result<T, UiError> {
        let resp = self.request(token, reqwest::Method::GET, path).timeout(Duration::from_secs(60)).send().await?;
        read_json(resp).await
    }

    /// Sends `body` as JSON with `method` and reads the JSON answer (`Value::Null` for an
    /// empty one).
    pub async fn send(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, UiError> {
        let mut req = self.request(token, method, path).timeout(Duration::from_secs(120));
        if let Some(b) = body {
            req = req.json(b);
        }
        read_json(req.send().await?).await
    }
}

async fn read_json<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, UiError> {
    if !resp.status().is_success() {
        return Err(UiError::from_response(resp).await);
    }
    let bytes = resp.bytes().await?;
    let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
    serde_json::from_slice(bytes).map_err(|e| UiError::new(502, "Unexpected answer from the API", e.to_string()))
}

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_become_sentences() {
        let e = UiError::from_body(
            409,
            "Conflict",
            r#"{"type":"x","title":"Legal hold","detail":"document d is on hold"}"#,
        );
        assert_eq!(e.message(), "Legal hold: document d is on hold");
        let e = UiError::from_body(
            429,
            "Too Many Requests",
            r#"{"error":"slow_down","error_description":"too many failed logins","retry_after":42}"#,
        );
        assert_eq!(e.message(), "slow_down: too many failed logins Try again in 42 seconds.");
        assert_eq!(UiError::from_body(500, "Internal Server Error", "boom").message(), "Internal Server Error: boom");
    }

    #[test]
    fn encoding_keeps_unreserved() {
        assert_eq!(enc("a b/ä"), "a%20b%2F%C3%A4");
    }
}
