//! The storage element's configuration: TOML keys under `[storage_element]`, each with an
//! `ARTSTORE_*` variable and a command-line flag (the binary merges them in that order).

use crate::element::ElementMode;
use artstore_shared::auth::{DEFAULT_AUDIENCE, DEFAULT_ISSUER};
use artstore_shared::telemetry::LogFormat;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Settings of one storage element.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ElementConfig {
    /// The element root: `element.json`, `data/`, `wal/`, `tmp/`, `audit/` live here.
    pub data: Option<PathBuf>,
    /// Address to listen on.
    pub listen: String,
    /// Where the token-signing public keys come from: a JWKS file path or an http(s) URL.
    pub jwks: Option<String>,
    /// The cold tier's root (entering `ar` moves content there). Default: `<data>/cold`.
    pub cold_root: Option<PathBuf>,
    /// Expected token issuer.
    pub issuer: String,
    /// Expected token audience.
    pub audience: String,
    /// The mode a brand-new element starts in.
    pub initial_mode: ElementMode,
    /// Seconds between runs of the disposition schedule.
    pub disposition_interval_secs: u64,
    /// Seconds a mode change waits for in-flight writes to drain.
    pub drain_timeout_secs: u64,
    /// Largest accepted upload in bytes.
    pub max_upload_bytes: u64,
    /// Bytes kept free on the file system; an upload that would leave less is refused with 507.
    pub min_free_bytes: u64,
    /// Milliseconds the cold tier takes before a restore copy starts.
    pub cold_restore_latency_ms: u64,
    /// The sidecar cache: absent for the embedded (in-memory) cache, or a
    /// `postgres://` URL. Either way it is rebuilt from the files when needed.
    pub cache: Option<String>,
    /// PEM certificate chain: with `tls_key`, the listener speaks HTTPS (rustls).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates to trust when calling other roles (the admin: keys, policies).
    pub tls_ca: Option<PathBuf>,
    /// Log format: `pretty` or `json`.
    pub log_format: LogFormat,
    /// Seconds a fetched key set is trusted before it is read again (so keys the admin
    /// dropped after their grace period stop being accepted here).
    pub jwks_max_age_secs: u64,
    /// The admin cluster's URL, for resolving `retention_policy` at upload.
    pub admin_url: Option<String>,
    /// Redis URL for heartbeats (discovery); absent: no heartbeats.
    pub redis: Option<String>,
    /// This element's id in the admin's registry (default: its id in `element.json`).
    pub element_id: Option<String>,
    /// The URL others reach this element at (default: `http://<listen>`).
    pub public_url: Option<String>,
    /// Seconds a heartbeat lives in Redis; renewed every third of it.
    pub heartbeat_ttl_secs: u64,
    /// Kafka brokers (`host:port,…`) to publish events to; absent: the in-process bus.
    pub kafka: Option<String>,
    /// The topic events go to.
    pub kafka_topic: String,
    /// Seconds from the start of one background scrub pass (every content file re-read and
    /// checked against its digest) to the next; 0 turns the scrub off (default a week).
    pub scrub_interval_secs: u64,
    /// The scrub's read rate limit in bytes per second; 0 is unlimited (default 32 MiB/s).
    pub scrub_bytes_per_sec: u64,
    /// librdkafka properties passed through as they are (TLS, SASL, …).
    pub kafka_options: std::collections::BTreeMap<String, String>,
}

/// Default listen address of a storage element.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8081";

impl Default for ElementConfig {
    fn default() -> Self {
        Self {
            data: None,
            listen: DEFAULT_LISTEN.to_owned(),
            jwks: None,
            cold_root: None,
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            initial_mode: ElementMode::Edit,
            disposition_interval_secs: 3600,
            drain_timeout_secs: 60,
            max_upload_bytes: 64 * 1024 * 1024 * 1024,
            min_free_bytes: crate::store::DEFAULT_MIN_FREE_BYTES,
            cold_restore_latency_ms: 0,
            cache: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            log_format: LogFormat::Pretty,
            jwks_max_age_secs: 300,
            admin_url: None,
            redis: None,
            element_id: None,
            public_url: None,
            heartbeat_ttl_secs: artstore_shared::discovery::HEARTBEAT_TTL_SECS,
            kafka: None,
            kafka_topic: artstore_shared::events::DEFAULT_TOPIC.to_owned(),
            kafka_options: Default::default(),
            scrub_interval_secs: 7 * 86_400,
            scrub_bytes_per_sec: 32 * 1024 * 1024,
        }
    }
}
