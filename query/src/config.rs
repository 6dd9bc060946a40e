//! The query role's settings (TOML `[query]`, `ARTSTORE_*` variables, flags).

use artstore_shared::telemetry::LogFormat;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Settings of `artstore query`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// The index folder (also holds the last-known registry and the rebuild's work).
    pub index: Option<PathBuf>,
    /// Address to listen on.
    pub listen: String,
    /// Token-signing public keys: a JWKS file or the admin's URL.
    pub jwks: Option<String>,
    /// Redis: the registry the admin publishes, the elements' heartbeats, and the shared
    /// search-result cache.
    pub redis: Option<String>,
    /// A fixed element list `ID=URL,ID=URL` (used when no Redis is given).
    pub elements: Option<String>,
    /// Kafka brokers `host:port,…`; without them the role follows no events (reindex and
    /// the drift check still work).
    pub kafka: Option<String>,
    /// The events topic.
    pub kafka_topic: String,
    /// Extra librdkafka settings.
    pub kafka_options: BTreeMap<String, String>,
    /// The consumer group of this query role.
    pub consumer_group: String,
    /// The admin cluster: where the role's own service token comes from.
    pub admin_url: Option<String>,
    /// The role's service account (client credentials).
    pub client_id: Option<String>,
    /// Its secret (prefer `ARTSTORE_CLIENT_SECRET`; never logged).
    pub client_secret: Option<String>,
    /// A fixed service token instead of client credentials (a token minted by standalone,
    /// or kept fresh by an outside agent; prefer `ARTSTORE_SERVICE_TOKEN`; never logged).
    pub service_token: Option<String>,
    /// Expected token issuer.
    pub issuer: String,
    /// Expected token audience.
    pub audience: String,
    /// Seconds a fetched key set is trusted before it is read again.
    pub jwks_max_age_secs: u64,
    /// Extraction worker processes (0: one per core).
    pub extract_workers: usize,
    /// Seconds one extraction may take before its worker is killed.
    pub extract_timeout_secs: u64,
    /// Address-space limit of an extraction worker, MiB.
    pub extract_memory_mib: u64,
    /// Content larger than this is indexed by its metadata only, bytes.
    pub extract_max_input_bytes: u64,
    /// Extracted text is cut at this many bytes (hits say `truncated`).
    pub extract_max_text_bytes: usize,
    /// Bytes a container format (DOCX, ODT, …) may unpack.
    pub extract_max_unpacked_bytes: u64,
    /// Milliseconds between index commits while events arrive (bounds how soon a change is
    /// searchable).
    pub commit_interval_ms: u64,
    /// Memory the index writer may buffer, MiB.
    pub writer_heap_mib: usize,
    /// Search results kept in memory (entries).
    pub result_cache_entries: u64,
    /// Memory the in-process result cache may hold, MiB (each answer weighed at three times
    /// its JSON size; results of an older commit are dropped at the next commit anyway).
    pub result_cache_mib: u64,
    /// Seconds a search result stays in the shared Redis cache.
    pub redis_cache_ttl_secs: u64,
    /// Milliseconds between direct probes of each element.
    pub probe_interval_ms: u64,
    /// Compare the index with the elements' listings at start and repair what differs
    /// (standalone turns it on: its in-process bus keeps nothing across a restart).
    pub reconcile_on_start: bool,
    /// Browser origins allowed to call the API (CORS).
    pub cors_origins: Vec<String>,
    /// Requests per second one client address may make on the public API (bursts of twice
    /// that; 429 beyond); 0: no limit.
    pub rate_limit_per_address: f64,
    /// Requests per second one caller (token subject) may make on the public API; 0: no limit.
    pub rate_limit_per_caller: f64,
    /// Front proxies (addresses or networks) whose X-Forwarded-For names the client.
    pub trusted_proxies: Vec<String>,
    /// PEM certificate chain; with `tls_key` the role speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates to trust when calling other roles (besides the system's).
    pub tls_ca: Option<PathBuf>,
    /// Log format: pretty or json.
    pub log_format: LogFormat,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            index: None,
            listen: "127.0.0.1:8083".to_owned(),
            jwks: None,
            redis: None,
            elements: None,
            kafka: None,
            kafka_topic: artstore_shared::events::DEFAULT_TOPIC.to_owned(),
            kafka_options: BTreeMap::new(),
            consumer_group: "artstore-query".to_owned(),
            admin_url: None,
            client_id: None,
            client_secret: None,
            service_token: None,
            issuer: "artstore".to_owned(),
            audience: "artstore".to_owned(),
            jwks_max_age_secs: 300,
            extract_workers: 0,
            extract_timeout_secs: 30,
            extract_memory_mib: 1024,
            extract_max_input_bytes: 128 << 20,
            extract_max_text_bytes: 4 << 20,
            extract_max_unpacked_bytes: 512 << 20,
            commit_interval_ms: 200,
            writer_heap_mib: 128,
            result_cache_entries: 10_000,
            result_cache_mib: 64,
            redis_cache_ttl_secs: 600,
            probe_interval_ms: 2_000,
            reconcile_on_start: false,
            cors_origins: Vec::new(),
            rate_limit_per_address: 0.0,
            rate_limit_per_caller: 0.0,
            trusted_proxies: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            log_format: LogFormat::Pretty,
        }
    }
}

impl QueryConfig {
    /// The extraction limits these settings name.
    pub fn public_limits(&self) -> anyhow::Result<artstore_shared::limits::PublicLimits> {
        artstore_shared::limits::PublicLimits::from_settings(
            &self.cors_origins,
            self.rate_limit_per_address,
            self.rate_limit_per_caller,
            &self.trusted_proxies,
        )
        .map_err(|e| anyhow::anyhow!(e))
    }

    pub fn limits(&self) -> artstore_extract::Limits {
        artstore_extract::Limits {
            max_input_bytes: self.extract_max_input_bytes,
            max_text_bytes: self.extract_max_text_bytes,
            max_unpacked_bytes: self.extract_max_unpacked_bytes,
        }
    }
}
