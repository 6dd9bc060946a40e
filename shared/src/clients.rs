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
    /// The request reached the other side and no whole answer came back (the connection
    /// broke or timed out after it was sent): it may have been carried out.
    #[error("{url} took the request and gave no answer: {reason}")]
    Undecided { url: String, reason: String },
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
    crate::tls::http_client().timeout(timeout).connect_timeout(Duration::from_secs(2)).build().unwrap_or_default()
}

async fn send_json<T: for<'de> Deserialize<'de>>(rb: reqwest::RequestBuilder, url: &str) -> Result<T, ClientError> {
    let resp = crate::telemetry::propagate(rb)
        .send()
        .await
        .map_err(|e| ClientError::Unreachable { url: url.to_owned(), reason: e.to_string() })?;
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

/// Writes the element's upload form (`multipart/form-data`) piece by piece, so a file can
/// stream through between the text fields.
#[derive(Debug, Clone)]
pub struct MultipartWriter {
    boundary: String,
}

impl Default for MultipartWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl MultipartWriter {
    /// A writer with a fresh random boundary.
    pub fn new() -> Self {
        Self { boundary: format!("artstore-{}", uuid::Uuid::new_v4().simple()) }
    }

    /// The `Content-Type` of the body.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// One text field, whole.
    pub fn text(&self, name: &str, value: &str) -> bytes::Bytes {
        format!("--{}\r\ncontent-disposition: form-data; name=\"{}\"\r\n\r\n{value}\r\n", self.boundary, quote(name))
            .into()
    }

    /// The head of the file part; the content follows, then [`MultipartWriter::file_end`].
    pub fn file_head(&self, filename: &str, content_type: &str, sha256_hex: Option<&str>) -> bytes::Bytes {
        let digest = sha256_hex
            .and_then(hex_to_bytes)
            .map(|raw| {
                use base64::Engine as _;
                format!("content-digest: sha-256=:{}:\r\n", base64::engine::general_purpose::STANDARD.encode(raw))
            })
            .unwrap_or_default();
        format!(
            "--{}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"{}\"\r\ncontent-type: {content_type}\r\n{digest}\r\n",
            self.boundary,
            quote(filename)
        )
        .into()
    }

    /// Ends the file part.
    pub fn file_end(&self) -> bytes::Bytes {
        bytes::Bytes::from_static(b"\r\n")
    }

    /// Ends the body.
    pub fn close(&self) -> bytes::Bytes {
        format!("--{}--\r\n", self.boundary).into()
    }
}

/// A header parameter value: quotes and line breaks percent-encoded, as browsers do.
fn quote(s: &str) -> String {
    s.replace('"', "%22").replace('\r', "%0D").replace('\n', "%0A")
}

fn hex_to_bytes(h: &str) -> Option<Vec<u8>> {
    h.len()
        .is_multiple_of(2)
        .then(|| (0..h.len()).step_by(2).map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok()).collect())
        .flatten()
}

/// How an element answered a forwarded request: status, content type and body.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: bytes::Bytes,
}

impl ElementClient {
    /// `POST {base}/api/v1/files` with a prepared multipart body, on behalf of the caller
    /// whose token is passed through. An answer with an error status is not an error here:
    /// the caller decides (retry elsewhere, or pass the problem on).
    pub async fn create(
        &self,
        base: &str,
        token: &str,
        content_type: &str,
        body: reqwest::Body,
    ) -> Result<Forwarded, ClientError> {
        let url = format!("{}/api/v1/files", base.trim_end_matches('/'));
        let rb = self.http.post(&url).bearer_auth(token).header("content-type", content_type).body(body);
        self.forward_send(rb, &url).await
    }

    /// `GET {base}/api/v1/documents/{id}/versions`: the version numbers held there (empty
    /// when the element has none).
    pub async fn version_numbers(
        &self,
        base: &str,
        token: &str,
        document: uuid::Uuid,
    ) -> Result<Vec<u32>, ClientError> {
        let url = format!("{}/api/v1/documents/{document}/versions", base.trim_end_matches('/'));
        match send_json::<serde_json::Value>(self.http.get(&url).bearer_auth(token), &url).await {
            Ok(v) => Ok(v["versions"]
                .as_array()
                .map(|a| a.iter().filter_map(|s| s["version"].as_u64()).map(|n| n as u32).collect())
                .unwrap_or_default()),
            Err(ClientError::Refused { status: 404, .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Sends any request to an element and reads its whole answer (small JSON bodies).
    pub async fn forward(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: reqwest::header::HeaderMap,
        body: bytes::Bytes,
    ) -> Result<Forwarded, ClientError> {
        self.forward_send(self.http.request(method, url).headers(headers).body(body), url).await
    }

    async fn forward_send(&self, rb: reqwest::RequestBuilder, url: &str) -> Result<Forwarded, ClientError> {
        // Only a connection never made proves the request was not carried out.
        let failed = |e: reqwest::Error| match e.is_connect() {
            true => ClientError::Unreachable { url: url.to_owned(), reason: e.to_string() },
            false => ClientError::Undecided { url: url.to_owned(), reason: e.to_string() },
        };
        let resp = crate::telemetry::propagate(rb).send().await.map_err(failed)?;
        let status = resp.status().as_u16();
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = resp.bytes().await.map_err(failed)?;
        Ok(Forwarded { status, content_type, body })
    }
}

impl AdminClient {
    /// `GET /api/v1/retention-policies/{name}` with the caller's token.
    pub async fn policy(&self, token: &str, name: &str) -> Result<PolicyView, ClientError> {
        let url = format!("{}/api/v1/retention-policies/{name}", self.base);
        send_json(self.http.get(&url).bearer_auth(token), &url).await
    }
}

/// One page of an element's listing feed.
#[derive(Debug, Clone, Deserialize)]
pub struct ListingPage {
    /// Sidecars, in file-id order.
    pub items: Vec<serde_json::Value>,
    /// Where the next page starts; `None` at the end.
    pub next_cursor: Option<String>,
}

impl ElementClient {
    /// `GET {base}/api/v1/files?cursor=&limit=`: one page of every sidecar the element holds.
    pub async fn list_page(
        &self,
        base: &str,
        token: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ListingPage, ClientError> {
        let mut url = format!("{}/api/v1/files?limit={limit}", base.trim_end_matches('/'));
        if let Some(c) = cursor {
            url.push_str("&cursor=");
            url.push_str(&c.replace(|ch: char| !ch.is_ascii_alphanumeric() && ch != '-', ""));
        }
        send_json(self.http.get(&url).bearer_auth(token), &url).await
    }

    /// `GET {base}/api/v1/files/{id}`: the sidecar.
    pub async fn sidecar(&self, base: &str, token: &str, id: uuid::Uuid) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}/api/v1/files/{id}", base.trim_end_matches('/'));
        send_json(self.http.get(&url).bearer_auth(token), &url).await
    }

    /// `GET {base}/api/v1/files/{id}/content`, read whole up to `max_bytes` (a longer body
    /// is refused as `Malformed` naming the limit).
    pub async fn content(
        &self,
        base: &str,
        token: &str,
        id: uuid::Uuid,
        max_bytes: u64,
    ) -> Result<bytes::Bytes, ClientError> {
        use futures_util::StreamExt as _;
        let url = format!("{}/api/v1/files/{id}/content", base.trim_end_matches('/'));
        let unreachable = |e: reqwest::Error| ClientError::Unreachable { url: url.clone(), reason: e.to_string() };
        let resp =
            crate::telemetry::propagate(self.http.get(&url).bearer_auth(token)).send().await.map_err(unreachable)?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            let detail = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
            return Err(ClientError::Refused { url, status: status.as_u16(), detail });
        }
        if resp.content_length().is_some_and(|n| n > max_bytes) {
            return Err(ClientError::Malformed {
                url,
                reason: format!("content is over the limit of {max_bytes} bytes"),
            });
        }
        let mut out = bytes::BytesMut::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(unreachable)?;
            if (out.len() + chunk.len()) as u64 > max_bytes {
                return Err(ClientError::Malformed {
                    url,
                    reason: format!("content is over the limit of {max_bytes} bytes"),
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }

    /// The HTTP client, for streaming reads passed through to a caller.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// Makes a fresh token (standalone signs its roles' tokens with its local key).
pub type MintFn = Box<dyn Fn() -> Result<(String, Duration), String> + Send + Sync>;

/// Where a role's own token comes from, for work no user asked for (indexing, reindex).
pub enum ServiceToken {
    /// A fixed token (an outside agent keeps it fresh; tests).
    Static(String),
    /// Minted in this process when the last one is about to expire (standalone).
    Minted { mint: MintFn, cached: tokio::sync::Mutex<Option<(String, std::time::Instant)>> },
    /// The admin's token endpoint with `client_credentials`; the token is kept until a
    /// minute before it expires.
    ClientCredentials {
        admin: String,
        client_id: String,
        client_secret: String,
        http: reqwest::Client,
        cached: tokio::sync::Mutex<Option<(String, std::time::Instant)>>,
    },
}

impl std::fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token or the secret.
        f.write_str(match self {
            ServiceToken::Static(_) => "ServiceToken::Static",
            ServiceToken::Minted { .. } => "ServiceToken::Minted",
            ServiceToken::ClientCredentials { .. } => "ServiceToken::ClientCredentials",
        })
    }
}

impl ServiceToken {
    /// Tokens made by `mint` (which answers a token and its lifetime).
    pub fn minted(mint: MintFn) -> Self {
        ServiceToken::Minted { mint, cached: tokio::sync::Mutex::new(None) }
    }

    /// Client credentials at the admin `admin` (its base URL).
    pub fn client_credentials(admin: &str, client_id: &str, client_secret: &str) -> Self {
        ServiceToken::ClientCredentials {
            admin: admin.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            http: client(Duration::from_secs(10)),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// A token good for at least a minute.
    pub async fn token(&self) -> Result<String, ClientError> {
        match self {
            ServiceToken::Static(t) => Ok(t.clone()),
            ServiceToken::Minted { mint, cached } => {
                let mut c = cached.lock().await;
                if let Some((t, until)) = c.as_ref()
                    && std::time::Instant::now() < *until
                {
                    return Ok(t.clone());
                }
                let (t, ttl) =
                    mint().map_err(|reason| ClientError::Unreachable { url: "local signer".into(), reason })?;
                *c = Some((
                    t.clone(),
                    std::time::Instant::now() + ttl.saturating_sub(Duration::from_secs(60)).max(Duration::from_secs(5)),
                ));
                Ok(t)
            }
            ServiceToken::ClientCredentials { admin, client_id, client_secret, http, cached } => {
                let mut c = cached.lock().await;
                if let Some((t, until)) = c.as_ref()
                    && std::time::Instant::now() < *until
                {
                    return Ok(t.clone());
                }
                #[derive(Deserialize)]
                struct TokenAnswer {
                    access_token: String,
                    expires_in: u64,
                }
                let url = format!("{admin}/api/v1/auth/token");
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.as_str()),
                ];
                let a: TokenAnswer = send_json(http.post(&url).form(&form), &url).await?;
                let until = std::time::Instant::now() + Duration::from_secs(a.expires_in.saturating_sub(60).max(5));
                *c = Some((a.access_token.clone(), until));
                Ok(a.access_token)
            }
        }
    }

    /// Forgets a cached token (after an element refused it).
    pub async fn invalidate(&self) {
        match self {
            ServiceToken::ClientCredentials { cached, .. } | ServiceToken::Minted { cached, .. } => {
                *cached.lock().await = None;
            }
            ServiceToken::Static(_) => {}
        }
    }
}
