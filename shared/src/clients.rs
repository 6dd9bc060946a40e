//! Clients for other roles' HTTP APIs: the one place that knows each wire format a role
//! calls on another (the admin asking an element to switch modes, an element resolving a
//! retention policy at the admin).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why a call to another role failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The other side could not be reached or did not answer in time.
    #[error("{url} cannot be reached: {reason}")]
    Unreachable { url: String, reason: String },
    /// The other side answered with an error status; `detail` is its problem detail.
    #[error("{url} refused: http {status}: {detail}")]
    Refused { url: String, status: u16, detail: String },
    /// The answer could not be read.
    #[error("{url} answered something unreadable: {reason}")]
    Malformed { url: String, reason: String },
}

impl ClientError {
    /// The HTTP status the other side answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).connect_timeout(Duration::from_secs(2)).build().unwrap_or_default()
}

async fn send_json<T: for<'de> Deserialize<'de>>(rb: reqwest::RequestBuilder, url: &str) -> Result<T, ClientError> {
    let resp = rb.send().await.map_err(|e| ClientError::Unreachable { url: url.to_owned(), reason: e.to_string() })?;
    let status = resp.status();
    let bytes =
        resp.bytes().await.map_err(|e| ClientError::Unreachable { url: url.to_owned(), reason: e.to_string() })?;
    if !status.is_success() {
        let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
        return Err(ClientError::Refused { url: url.to_owned(), status: status.as_u16(), detail });
    }
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Malformed { url: url.to_owned(), reason: e.to_string() })
}

/// Calls a storage element's management API.
#[derive(Debug, Clone)]
pub struct ElementClient {
    http: reqwest::Client,
}

impl ElementClient {
    /// A client whose calls give up after `timeout` (a mode change waits for the drain).
    pub fn new(timeout: Duration) -> Self {
        Self { http: client(timeout) }
    }

    /// A client on a prepared HTTP client (e.g. one trusting a private CA).
    pub fn with_client(http: reqwest::Client) -> Self {
        Self { http }
    }

    /// `POST {base}/api/v1/element/mode`: the element drains, records the mode in
    /// `element.json` and answers its new state.
    pub async fn set_mode(&self, base: &str, token: &str, mode: &str) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}/api/v1/element/mode", base.trim_end_matches('/'));
        send_json(self.http.post(&url).bearer_auth(token).json(&serde_json::json!({"mode": mode})), &url).await
    }
}

/// A retention policy as the admin serves it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyView {
    pub name: String,
    /// ISO 8601 duration: years, months, weeks, days.
    pub term: String,
    /// `compliance` or `governance`.
    pub mode: String,
    /// `dispose` or `review`.
    pub disposition: String,
    #[serde(default)]
    pub in_use: bool,
}

/// Calls the admin cluster's API on behalf of a caller (their token is passed through).
#[derive(Debug, Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
}

impl AdminClient {
    /// A client of the admin at `base` (e.g. `http://127.0.0.1:8090`).
    pub fn new(base: &str) -> Self {
        Self { http: client(Duration::from_secs(10)), base: base.trim_end_matches('/').to_owned() }
    }

    /// The admin's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /api/v1/retention-policies/{name}/usage`: records that documents are stored
    /// under the policy (so it can no longer be deleted) and answers it.
    pub async fn use_policy(&self, token: &str, name: &str) -> Result<PolicyView, ClientError> {
        let url = format!("{}/api/v1/retention-policies/{name}/usage", self.base);
        send_json(self.http.post(&url).bearer_auth(token), &url).await
    }
}
