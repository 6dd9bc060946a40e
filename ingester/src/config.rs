//! The ingester's settings (TOML `[ingester]`, `ARTSTORE_*` variables, flags).

use artstore_shared::telemetry::LogFormat;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Settings of `artstore ingester`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngesterConfig {
    /// Upload sessions, idempotency keys, location hints and the last-known registry.
    pub data: Option<PathBuf>,
    /// Address to listen on.
    pub listen: String,
    /// Token-signing public keys: a JWKS file or the admin's URL.
    pub jwks: Option<String>,
    /// The admin cluster, to read retention policies for placement.
    pub admin_url: Option<String>,
    /// Redis: the registry the admin publishes and the elements' heartbeats.
    pub redis: Option<String>,
    /// A fixed element list `ID=URL,ID=URL` (used when no Redis is given).
    pub elements: Option<String>,
    /// Expected token issuer.
    pub issuer: String,
    /// Expected token audience.
    pub audience: String,
    /// Seconds a fetched key set is trusted before it is read again.
    pub jwks_max_age_secs: u64,
    /// Documents meant to be disposed of before this term are temporary: they go to `edit`
    /// elements when any are writable.
    pub temporary_horizon: String,
    /// Free space an element needs for an upload of unknown size.
    pub unknown_size_reserve_bytes: u64,
    /// A multipart file up to this size is read whole before it is sent, so a refusing
    /// element can be retried; larger files stream through.
    pub replay_buffer_bytes: u64,
    /// Seconds a resumable upload may stay unfinished before it and its bytes are swept.
    pub upload_expiry_secs: u64,
    /// Largest resumable upload, bytes.
    pub tus_max_size: u64,
    /// Seconds an idempotency key is remembered.
    pub idempotency_ttl_secs: u64,
    /// Origins allowed to call from a browser (CORS), e.g. `https://archive.example.org`.
    pub cors_origins: Vec<String>,
    /// Requests per second one client address may make on the public API (bursts of twice
    /// that; 429 beyond); 0: no limit.
    pub rate_limit_per_address: f64,
    /// Requests per second one caller (token subject) may make on the public API; 0: no limit.
    pub rate_limit_per_caller: f64,
    /// Front proxies (addresses or networks) whose X-Forwarded-For names the client.
    pub trusted_proxies: Vec<String>,
    /// Milliseconds between direct probes of each element.
    pub probe_interval_ms: u64,
    /// PEM certificate chain; with `tls_key` the role speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates to trust when calling other roles (besides the system's).
    pub tls_ca: Option<PathBuf>,
    /// Log format: pretty or json.
    pub log_format: LogFormat,
}

impl Default for IngesterConfig {
    fn default() -> Self {
        Self {
            data: None,
            listen: "127.0.0.1:8082".to_owned(),
            jwks: None,
            admin_url: None,
            redis: None,
            elements: None,
            issuer: "artstore".to_owned(),
            audience: "artstore".to_owned(),
            jwks_max_age_secs: 300,
            temporary_horizon: "P1Y".to_owned(),
            unknown_size_reserve_bytes: 1 << 30,
            replay_buffer_bytes: 8 << 20,
            upload_expiry_secs: 86_400,
            tus_max_size: 64 << 30,
            idempotency_ttl_secs: 86_400,
            cors_origins: Vec::new(),
            rate_limit_per_address: 0.0,
            rate_limit_per_caller: 0.0,
            trusted_proxies: Vec::new(),
            probe_interval_ms: 2_000,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            log_format: LogFormat::Pretty,
        }
    }
}

impl IngesterConfig {
    /// The public API's guards.
    pub fn public_limits(&self) -> anyhow::Result<artstore_shared::limits::PublicLimits> {
        artstore_shared::limits::PublicLimits::from_settings(
            &self.cors_origins,
            self.rate_limit_per_address,
            self.rate_limit_per_caller,
            &self.trusted_proxies,
        )
        .map_err(|e| anyhow::anyhow!(e))
    }
}
