//! Command-line shape, the config file's shape, and the maintenance verbs' terminal output.

use artstore_admin::config::AdminConfig;
use artstore_ingester::config::IngesterConfig;
use artstore_query::config::QueryConfig;
use artstore_shared::telemetry::LogFormat;
use artstore_storage_element::ElementMode;
use artstore_storage_element::config::ElementConfig;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "artstore", version, about = "ArtStore: an attribute-first long-term document archive")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything in one process with embedded defaults (no servers needed).
    Standalone(StandaloneArgs),
    /// Run a storage element, or check one (verify, verify-audit).
    StorageElement(Box<ElementCmd>),
    /// Run an admin cluster node, or check one (verify-audit).
    Admin(Box<AdminCmd>),
    /// Run an ingester: the front door for uploads (placement, tus, idempotency).
    Ingester(Box<IngesterArgs>),
    /// Run a query role (full-text search, reads through to the elements), or check,
    /// repair or refill its index.
    Query(Box<QueryCmd>),
    /// Print an access token signed with a standalone installation's local key.
    Token(TokenArgs),
    /// Print the front proxy's configuration (nginx), generated from the public routing
    /// table, for the given backends.
    ProxyConfig(ProxyConfigArgs),
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Measure durable write and ingest rates on this disk.
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Args)]
pub struct ProxyConfigArgs {
    /// What the proxy listens on (nginx `listen`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Admin nodes, `host:port,…`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub admin: Vec<String>,
    /// Ingesters, `host:port,…`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub ingester: Vec<String>,
    /// Query roles, `host:port,…`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub query: Vec<String>,
    /// Admin nodes serving the web UI (`--ui-api`); default: every admin node.
    #[arg(long, value_delimiter = ',')]
    pub ui: Vec<String>,
    /// HTTPS on the proxy's listener: PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<String>,
    /// The private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<String>,
    /// The roles speak HTTPS: check their certificates against this CA (PEM).
    #[arg(long)]
    pub upstream_ca: Option<String>,
    /// The name the roles' certificates are checked for (with --upstream-ca).
    #[arg(long, requires = "upstream_ca")]
    pub upstream_name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print a commented example configuration file.
    Example,
    /// Check a configuration file: every section and key known, every value of its type.
    Check {
        /// The file (TOML).
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ElementCmd {
    #[command(subcommand)]
    pub action: Option<ElementAction>,
    #[command(flatten)]
    pub run: ElementArgs,
}

#[derive(Debug, Subcommand)]
pub enum ElementAction {
    /// Recompute every content digest and compare with the sidecars.
    Verify(VerifyArgs),
    /// Check the audit journal's hash chain and every sidecar against it.
    VerifyAudit(VerifyAuditArgs),
    /// Fill an empty or stale PostgreSQL cache from the files alone (resumable).
    RebuildCache(CacheArgs),
    /// Compare the PostgreSQL cache with the files; --repair fixes the differences.
    CheckCache(CheckCacheArgs),
}

#[derive(Debug, Args)]
pub struct CacheArgs {
    /// The element root.
    #[arg(long, env = "ARTSTORE_DATA")]
    pub data: PathBuf,
    /// The PostgreSQL cache URL.
    #[arg(long, env = "ARTSTORE_CACHE")]
    pub cache: String,
}

#[derive(Debug, Args)]
pub struct CheckCacheArgs {
    #[command(flatten)]
    pub target: CacheArgs,
    /// Make the cache match the files.
    #[arg(long)]
    pub repair: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The element root.
    #[arg(long, env = "ARTSTORE_DATA")]
    pub data: PathBuf,
    /// The cold tier's root (default: <data>/cold).
    #[arg(long, env = "ARTSTORE_COLD_ROOT")]
    pub cold_root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyAuditArgs {
    /// The element root.
    #[arg(long, env = "ARTSTORE_DATA")]
    pub data: PathBuf,
}

/// Lays flags over config values: `value` fields take the flag's value when given,
/// `option` fields (optional in the config too) take the flag's `Some`.
macro_rules! overlay {
    ($cfg:ident, $args:ident, $($field:ident),*) => {
        $( if let Some(v) = $args.$field { $cfg.$field = v; } )*
    };
    (option $cfg:ident, $args:ident, $($field:ident),*) => {
        $( if $args.$field.is_some() { $cfg.$field = $args.$field; } )*
    };
}

/// The guards of a public API listener (admin, ingester, query): the same flags on each.
#[derive(Debug, Args, Default)]
pub struct PublicApiArgs {
    /// Browser origins allowed by CORS (comma-separated).
    #[arg(long, env = "ARTSTORE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Requests per second one client address may make on the public API (bursts of twice
    /// that; 429 beyond; default 0: no limit).
    #[arg(long, env = "ARTSTORE_RATE_LIMIT_PER_ADDRESS")]
    pub rate_limit_per_address: Option<f64>,
    /// Requests per second one caller (token subject) may make (default 0: no limit).
    #[arg(long, env = "ARTSTORE_RATE_LIMIT_PER_CALLER")]
    pub rate_limit_per_caller: Option<f64>,
    /// Front proxies (addresses or networks) whose X-Forwarded-For names the client.
    #[arg(long, env = "ARTSTORE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AdminCmd {
    #[command(subcommand)]
    pub action: Option<AdminAction>,
    #[command(flatten)]
    pub run: AdminArgs,
}

#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// Check the node's audit chain: hashes, links and Ed25519 signatures.
    VerifyAudit(AdminVerifyAuditArgs),
}

#[derive(Debug, Args)]
pub struct AdminVerifyAuditArgs {
    /// The admin node's data folder.
    #[arg(long, env = "ARTSTORE_DATA")]
    pub data: PathBuf,
    /// The audit public key (hex) to check signatures with, as recorded at bootstrap;
    /// default: the key named by the chain's first entry.
    #[arg(long)]
    pub public_key: Option<String>,
}

/// Flags of `artstore admin`; each overrides its config key.
#[derive(Debug, Args, Default)]
pub struct AdminArgs {
    /// This node's id in the cluster.
    #[arg(long, env = "ARTSTORE_NODE_ID")]
    pub node_id: Option<u64>,
    /// Address to listen on (default 127.0.0.1:8090).
    #[arg(long, env = "ARTSTORE_LISTEN")]
    pub listen: Option<String>,
    /// The node's data folder.
    #[arg(long, env = "ARTSTORE_DATA")]
    pub data: Option<PathBuf>,
    /// Every voter of a fresh cluster: 1=http://host:port,2=http://…
    #[arg(long, env = "ARTSTORE_PEERS")]
    pub peers: Option<String>,
    /// Redis URL for discovery (redis://127.0.0.1:6379).
    #[arg(long, env = "ARTSTORE_REDIS_URL")]
    pub redis: Option<String>,
    /// Shared secret on Raft RPCs between nodes.
    #[arg(long, env = "ARTSTORE_CLUSTER_SECRET")]
    pub cluster_secret: Option<String>,
    /// A TOML configuration file (keys under [admin]).
    #[arg(long, env = "ARTSTORE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Issuer written into tokens (default artstore).
    #[arg(long, env = "ARTSTORE_ISSUER")]
    pub issuer: Option<String>,
    /// Audience written into access tokens (default artstore).
    #[arg(long, env = "ARTSTORE_AUDIENCE")]
    pub audience: Option<String>,
    /// Access-token lifetime in seconds (default 900).
    #[arg(long, env = "ARTSTORE_TOKEN_TTL_SECS")]
    pub token_ttl_secs: Option<u64>,
    /// Refresh-token lifetime in seconds (default 86400).
    #[arg(long, env = "ARTSTORE_REFRESH_TTL_SECS")]
    pub refresh_ttl_secs: Option<u64>,
    /// Seconds between signing-key rotations (default 86400).
    #[arg(long, env = "ARTSTORE_KEY_ROTATION_SECS")]
    pub key_rotation_secs: Option<u64>,
    /// Seconds a retired key stays in the JWKS (default 172800).
    #[arg(long, env = "ARTSTORE_KEY_GRACE_SECS")]
    pub key_grace_secs: Option<u64>,
    /// Failed logins allowed per user within the window (default 5).
    #[arg(long, env = "ARTSTORE_LOGIN_MAX_FAILURES")]
    pub login_max_failures: Option<u32>,
    /// Raft heartbeat interval in milliseconds (default 50).
    #[arg(long, env = "ARTSTORE_RAFT_HEARTBEAT_MS")]
    pub raft_heartbeat_ms: Option<u64>,
    /// Shortest election timeout in milliseconds (default 150).
    #[arg(long, env = "ARTSTORE_RAFT_ELECTION_MIN_MS")]
    pub raft_election_min_ms: Option<u64>,
    /// Longest election timeout and leader lease in milliseconds (default 300).
    #[arg(long, env = "ARTSTORE_RAFT_ELECTION_MAX_MS")]
    pub raft_election_max_ms: Option<u64>,
    /// Log entries between snapshots (default 50000).
    #[arg(long, env = "ARTSTORE_RAFT_SNAPSHOT_EVERY")]
    pub raft_snapshot_every: Option<u64>,
    /// Audit entries per segment file of the chain (default 32768).
    #[arg(long, env = "ARTSTORE_AUDIT_SEGMENT_ENTRIES")]
    pub audit_segment_entries: Option<u64>,
    /// PEM certificate chain; with --tls-key the node speaks HTTPS (peers are https:// URLs).
    #[arg(long, env = "ARTSTORE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "ARTSTORE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates to trust when calling peers and elements (besides the system's).
    #[arg(long, env = "ARTSTORE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Serve the web UI too; it calls the public API at this URL (the front proxy).
    #[arg(long, env = "ARTSTORE_UI_API")]
    pub ui_api: Option<String>,
    #[command(flatten)]
    pub public: PublicApiArgs,
    /// Log format: pretty or json.
    #[arg(long, env = "ARTSTORE_LOG_FORMAT", value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,
}

impl AdminArgs {
    /// Lays the flags (and variables) over the file's values.
    pub fn merge(self, mut cfg: AdminConfig) -> AdminConfig {
        let a = self;
        overlay!(option cfg, a, data, peers, redis, cluster_secret, tls_cert, tls_key, tls_ca, ui_api);
        overlay!(
            cfg,
            a,
            node_id,
            listen,
            issuer,
            audience,
            token_ttl_secs,
            refresh_ttl_secs,
            key_rotation_secs,
            key_grace_secs,
            login_max_failures,
            raft_heartbeat_ms,
            raft_election_min_ms,
            raft_election_max_ms,
            raft_snapshot_every,
            audit_segment_entries,
            log_format
        );
        let p = a.public;
        overlay!(cfg, p, cors_origins, rate_limit_per_address, rate_limit_per_caller, trusted_proxies);
        cfg
    }
}

/// Flags of `artstore storage-element`; each overrides its config key.
#[derive(Debug, Args, Default)]
pub struct ElementArgs {
    /// The element root folder.
    #[arg(long, env = "ARTSTORE_DATA")]
    pub data: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8081).
    #[arg(long, env = "ARTSTORE_LISTEN")]
    pub listen: Option<String>,
    /// Token-signing public keys: a JWKS file or an http(s) URL.
    #[arg(long, env = "ARTSTORE_JWKS")]
    pub jwks: Option<String>,
    /// A TOML configuration file (keys under [storage_element]).
    #[arg(long, env = "ARTSTORE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The cold tier's root (default <data>/cold).
    #[arg(long, env = "ARTSTORE_COLD_ROOT")]
    pub cold_root: Option<PathBuf>,
    /// Expected token issuer (default artstore).
    #[arg(long, env = "ARTSTORE_ISSUER")]
    pub issuer: Option<String>,
    /// Expected token audience (default artstore).
    #[arg(long, env = "ARTSTORE_AUDIENCE")]
    pub audience: Option<String>,
    /// Mode of a brand-new element: edit, rw, ro or ar (default edit).
    #[arg(long, env = "ARTSTORE_INITIAL_MODE", value_parser = parse_mode)]
    pub initial_mode: Option<ElementMode>,
    /// Seconds between disposition runs (default 3600).
    #[arg(long, env = "ARTSTORE_DISPOSITION_INTERVAL_SECS")]
    pub disposition_interval_secs: Option<u64>,
    /// Seconds a mode change waits for in-flight writes (default 60).
    #[arg(long, env = "ARTSTORE_DRAIN_TIMEOUT_SECS")]
    pub drain_timeout_secs: Option<u64>,
    /// Largest accepted upload in bytes (default 64 GiB).
    #[arg(long, env = "ARTSTORE_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// Bytes kept free on the element's file system (default 64 MiB): an upload that would
    /// leave less is refused with 507.
    #[arg(long, env = "ARTSTORE_MIN_FREE_BYTES")]
    pub min_free_bytes: Option<u64>,
    /// Milliseconds the cold tier takes before a restore copy starts (default 0).
    #[arg(long, env = "ARTSTORE_COLD_RESTORE_LATENCY_MS")]
    pub cold_restore_latency_ms: Option<u64>,
    /// The sidecar cache: a postgres:// URL (default: the embedded in-memory cache).
    #[arg(long, env = "ARTSTORE_CACHE")]
    pub cache: Option<String>,
    /// PEM certificate chain; with --tls-key the listener speaks HTTPS.
    #[arg(long, env = "ARTSTORE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "ARTSTORE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates to trust when calling other roles (the admin).
    #[arg(long, env = "ARTSTORE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Log format: pretty or json.
    #[arg(long, env = "ARTSTORE_LOG_FORMAT", value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,
    /// Seconds a fetched key set is trusted before it is read again (default 300).
    #[arg(long, env = "ARTSTORE_JWKS_MAX_AGE_SECS")]
    pub jwks_max_age_secs: Option<u64>,
    /// The admin cluster's URL, for resolving retention policies named at upload.
    #[arg(long = "admin", env = "ARTSTORE_ADMIN_URL")]
    pub admin_url: Option<String>,
    /// Redis URL for heartbeats (discovery).
    #[arg(long, env = "ARTSTORE_REDIS_URL")]
    pub redis: Option<String>,
    /// This element's id in the admin's registry (default: the id in element.json).
    #[arg(long, env = "ARTSTORE_ELEMENT_ID")]
    pub element_id: Option<String>,
    /// The URL others reach this element at (default http://<listen>).
    #[arg(long, env = "ARTSTORE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Seconds a heartbeat lives in Redis (default 30).
    #[arg(long, env = "ARTSTORE_HEARTBEAT_TTL_SECS")]
    pub heartbeat_ttl_secs: Option<u64>,
    /// Kafka brokers to publish events to (host:port,…); default: the in-process bus.
    #[arg(long, env = "ARTSTORE_KAFKA_BROKERS")]
    pub kafka: Option<String>,
    /// The events topic (default artstore.events).
    #[arg(long, env = "ARTSTORE_KAFKA_TOPIC")]
    pub kafka_topic: Option<String>,
    /// librdkafka properties passed through, key=value (repeatable, or comma-separated in
    /// ARTSTORE_KAFKA_OPTIONS): security.protocol, sasl.*, ssl.*…
    #[arg(long = "kafka-option", env = "ARTSTORE_KAFKA_OPTIONS", value_delimiter = ',')]
    pub kafka_options: Option<Vec<String>>,
    /// Seconds between background scrub passes (every content file re-read and checked
    /// against its digest); 0 turns it off (default 604800, a week).
    #[arg(long, env = "ARTSTORE_SCRUB_INTERVAL_SECS")]
    pub scrub_interval_secs: Option<u64>,
    /// The scrub's read rate limit in bytes per second; 0 is unlimited (default 33554432).
    #[arg(long, env = "ARTSTORE_SCRUB_BYTES_PER_SEC")]
    pub scrub_bytes_per_sec: Option<u64>,
}

fn parse_mode(s: &str) -> Result<ElementMode, String> {
    ElementMode::parse(s).ok_or_else(|| format!("unknown mode {s:?} (edit, rw, ro or ar)"))
}

/// Lays `key=value` librdkafka properties from flags over the file's.
fn merge_kafka_options(flags: Option<&[String]>, into: &mut std::collections::BTreeMap<String, String>) {
    for o in flags.unwrap_or_default() {
        if let Some((k, v)) = o.split_once('=') {
            into.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "pretty" => Ok(LogFormat::Pretty),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("unknown log format {s:?} (pretty or json)")),
    }
}

impl ElementArgs {
    /// Lays the flags (and variables) over the file's values.
    pub fn merge(self, mut cfg: ElementConfig) -> ElementConfig {
        let a = self;
        merge_kafka_options(a.kafka_options.as_deref(), &mut cfg.kafka_options);
        overlay!(option cfg, a, data, jwks, cold_root, cache, tls_cert, tls_key, tls_ca, admin_url, redis, element_id, public_url, kafka);
        overlay!(
            cfg,
            a,
            listen,
            issuer,
            audience,
            initial_mode,
            disposition_interval_secs,
            drain_timeout_secs,
            max_upload_bytes,
            min_free_bytes,
            cold_restore_latency_ms,
            log_format,
            jwks_max_age_secs,
            heartbeat_ttl_secs,
            kafka_topic,
            scrub_interval_secs,
            scrub_bytes_per_sec
        );
        cfg
    }
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct QueryCmd {
    #[command(subcommand)]
    pub action: Option<QueryAction>,
    #[command(flatten)]
    pub run: QueryArgs,
}

#[derive(Debug, Subcommand)]
pub enum QueryAction {
    /// Compare the index with the elements' listings: name every missing, extra and stale
    /// (older revision) document; --repair fixes them.
    CheckIndex(QueryCheckArgs),
    /// Fill the index from the elements' listing feeds and their content (resumes after a
    /// kill).
    Reindex(QueryReindexArgs),
    /// One text-extraction worker (started by the query role; reads requests on stdin).
    #[command(hide = true)]
    ExtractWorker,
}

#[derive(Debug, Args)]
pub struct QueryCheckArgs {
    /// Index, remove and refresh what differs (the query role must not be running on this
    /// index).
    #[arg(long)]
    pub repair: bool,
    #[command(flatten)]
    pub common: QueryArgs,
}

#[derive(Debug, Args)]
pub struct QueryReindexArgs {
    /// Only this element's documents.
    #[arg(long)]
    pub element: Option<String>,
    /// Empty the index first (otherwise documents already at their revision are skipped).
    #[arg(long)]
    pub fresh: bool,
    #[command(flatten)]
    pub common: QueryArgs,
}

/// Flags of `artstore query`; each overrides its config key.
#[derive(Debug, Args, Default)]
pub struct QueryArgs {
    /// Address to listen on (default 127.0.0.1:8083).
    #[arg(long, env = "ARTSTORE_LISTEN")]
    pub listen: Option<String>,
    /// The index folder.
    #[arg(long, env = "ARTSTORE_INDEX")]
    pub index: Option<PathBuf>,
    /// Token-signing public keys: a JWKS file or an http(s) URL.
    #[arg(long, env = "ARTSTORE_JWKS")]
    pub jwks: Option<String>,
    /// Redis URL: the element registry and heartbeats.
    #[arg(long, env = "ARTSTORE_REDIS_URL")]
    pub redis: Option<String>,
    /// Kafka brokers to follow events from (host:port,…).
    #[arg(long, env = "ARTSTORE_KAFKA_BROKERS")]
    pub kafka: Option<String>,
    /// The events topic (default artstore.events).
    #[arg(long, env = "ARTSTORE_KAFKA_TOPIC")]
    pub kafka_topic: Option<String>,
    /// librdkafka properties passed through, key=value (repeatable).
    #[arg(long = "kafka-option", env = "ARTSTORE_KAFKA_OPTIONS", value_delimiter = ',')]
    pub kafka_options: Option<Vec<String>>,
    /// The Kafka consumer group (default artstore-query).
    #[arg(long, env = "ARTSTORE_CONSUMER_GROUP")]
    pub consumer_group: Option<String>,
    /// A fixed element list: ID=URL,ID=URL.
    #[arg(long, env = "ARTSTORE_ELEMENTS")]
    pub elements: Option<String>,
    /// A TOML configuration file (keys under [query]).
    #[arg(long, env = "ARTSTORE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The admin cluster's URL (the role's own service token).
    #[arg(long = "admin", env = "ARTSTORE_ADMIN_URL")]
    pub admin_url: Option<String>,
    /// The role's service account.
    #[arg(long, env = "ARTSTORE_CLIENT_ID")]
    pub client_id: Option<String>,
    /// Its secret (prefer the variable).
    #[arg(long, env = "ARTSTORE_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,
    /// A fixed service token instead of client credentials (prefer the variable).
    #[arg(long, env = "ARTSTORE_SERVICE_TOKEN", hide_env_values = true)]
    pub service_token: Option<String>,
    /// Expected token issuer (default artstore).
    #[arg(long, env = "ARTSTORE_ISSUER")]
    pub issuer: Option<String>,
    /// Expected token audience (default artstore).
    #[arg(long, env = "ARTSTORE_AUDIENCE")]
    pub audience: Option<String>,
    /// Extraction worker processes (default: one per core).
    #[arg(long, env = "ARTSTORE_EXTRACT_WORKERS")]
    pub extract_workers: Option<usize>,
    /// Seconds one extraction may take (default 30).
    #[arg(long, env = "ARTSTORE_EXTRACT_TIMEOUT_SECS")]
    pub extract_timeout_secs: Option<u64>,
    /// Address-space limit of an extraction worker, MiB (default 1024).
    #[arg(long, env = "ARTSTORE_EXTRACT_MEMORY_MIB")]
    pub extract_memory_mib: Option<u64>,
    /// Extracted text is cut at this many bytes (default 4 MiB).
    #[arg(long, env = "ARTSTORE_EXTRACT_MAX_TEXT_BYTES")]
    pub extract_max_text_bytes: Option<usize>,
    /// Milliseconds between index commits while events arrive (default 200).
    #[arg(long, env = "ARTSTORE_COMMIT_INTERVAL_MS")]
    pub commit_interval_ms: Option<u64>,
    /// Milliseconds between direct probes of each element (default 2000).
    #[arg(long, env = "ARTSTORE_PROBE_INTERVAL_MS")]
    pub probe_interval_ms: Option<u64>,
    #[command(flatten)]
    pub public: PublicApiArgs,
    /// PEM certificate chain; with --tls-key the role speaks HTTPS only.
    #[arg(long, env = "ARTSTORE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "ARTSTORE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates to trust when calling other roles (besides the system's).
    #[arg(long, env = "ARTSTORE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Log format: pretty or json.
    #[arg(long, env = "ARTSTORE_LOG_FORMAT", value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,
}

impl QueryArgs {
    /// Lays the flags (and variables) over the file's values.
    pub fn merge(self, mut cfg: QueryConfig) -> QueryConfig {
        let a = self;
        merge_kafka_options(a.kafka_options.as_deref(), &mut cfg.kafka_options);
        overlay!(option cfg, a, index, jwks, redis, kafka, elements, admin_url, client_id, client_secret, service_token);
        overlay!(option cfg, a, tls_cert, tls_key, tls_ca);
        overlay!(
            cfg,
            a,
            listen,
            kafka_topic,
            consumer_group,
            issuer,
            audience,
            extract_workers,
            extract_timeout_secs,
            extract_memory_mib,
            extract_max_text_bytes,
            commit_interval_ms,
            probe_interval_ms,
            log_format
        );
        let p = a.public;
        overlay!(cfg, p, cors_origins, rate_limit_per_address, rate_limit_per_caller, trusted_proxies);
        cfg
    }
}

/// Flags of `artstore ingester`; each overrides its config key.
#[derive(Debug, Args, Default)]
pub struct IngesterArgs {
    /// Address to listen on (default 127.0.0.1:8082).
    #[arg(long, env = "ARTSTORE_LISTEN")]
    pub listen: Option<String>,
    /// The ingester's data folder: upload sessions, idempotency keys, last-known registry.
    #[arg(long, env = "ARTSTORE_DATA")]
    pub data: Option<PathBuf>,
    /// Token-signing public keys: a JWKS file or an http(s) URL.
    #[arg(long, env = "ARTSTORE_JWKS")]
    pub jwks: Option<String>,
    /// The admin cluster's URL (retention policies for placement).
    #[arg(long = "admin", env = "ARTSTORE_ADMIN_URL")]
    pub admin_url: Option<String>,
    /// Redis URL: the element registry and heartbeats.
    #[arg(long, env = "ARTSTORE_REDIS_URL")]
    pub redis: Option<String>,
    /// A fixed element list: ID=URL,ID=URL.
    #[arg(long, env = "ARTSTORE_ELEMENTS")]
    pub elements: Option<String>,
    /// A TOML configuration file (keys under [ingester]).
    #[arg(long, env = "ARTSTORE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Expected token issuer (default artstore).
    #[arg(long, env = "ARTSTORE_ISSUER")]
    pub issuer: Option<String>,
    /// Expected token audience (default artstore).
    #[arg(long, env = "ARTSTORE_AUDIENCE")]
    pub audience: Option<String>,
    /// Documents disposed of within this term are temporary (default P1Y).
    #[arg(long, env = "ARTSTORE_TEMPORARY_HORIZON")]
    pub temporary_horizon: Option<String>,
    /// Free space an element needs for an upload of unknown size (default 1 GiB).
    #[arg(long, env = "ARTSTORE_UNKNOWN_SIZE_RESERVE_BYTES")]
    pub unknown_size_reserve_bytes: Option<u64>,
    /// Multipart files up to this size are held so a refusing element can be retried (default 8 MiB).
    #[arg(long, env = "ARTSTORE_REPLAY_BUFFER_BYTES")]
    pub replay_buffer_bytes: Option<u64>,
    /// Seconds an unfinished resumable upload is kept (default 86400).
    #[arg(long, env = "ARTSTORE_UPLOAD_EXPIRY_SECS")]
    pub upload_expiry_secs: Option<u64>,
    /// Largest resumable upload in bytes (default 64 GiB).
    #[arg(long, env = "ARTSTORE_TUS_MAX_SIZE")]
    pub tus_max_size: Option<u64>,
    /// Seconds an idempotency key is remembered (default 86400).
    #[arg(long, env = "ARTSTORE_IDEMPOTENCY_TTL_SECS")]
    pub idempotency_ttl_secs: Option<u64>,
    #[command(flatten)]
    pub public: PublicApiArgs,
    /// Milliseconds between direct probes of each element (default 2000).
    #[arg(long, env = "ARTSTORE_PROBE_INTERVAL_MS")]
    pub probe_interval_ms: Option<u64>,
    /// Seconds a fetched key set is trusted before it is read again (default 300).
    #[arg(long, env = "ARTSTORE_JWKS_MAX_AGE_SECS")]
    pub jwks_max_age_secs: Option<u64>,
    /// PEM certificate chain; with --tls-key the role speaks HTTPS only.
    #[arg(long, env = "ARTSTORE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "ARTSTORE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates to trust when calling other roles (besides the system's).
    #[arg(long, env = "ARTSTORE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Log format: pretty or json.
    #[arg(long, env = "ARTSTORE_LOG_FORMAT", value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,
}

impl IngesterArgs {
    /// Lays the flags (and variables) over the file's values.
    pub fn merge(self, mut cfg: IngesterConfig) -> IngesterConfig {
        let a = self;
        overlay!(option cfg, a, data, jwks, admin_url, redis, elements, tls_cert, tls_key, tls_ca);
        overlay!(
            cfg,
            a,
            listen,
            issuer,
            audience,
            temporary_horizon,
            unknown_size_reserve_bytes,
            replay_buffer_bytes,
            upload_expiry_secs,
            tus_max_size,
            idempotency_ttl_secs,
            probe_interval_ms,
            jwks_max_age_secs,
            log_format
        );
        let p = a.public;
        overlay!(cfg, p, cors_origins, rate_limit_per_address, rate_limit_per_caller, trusted_proxies);
        cfg
    }
}

/// Settings of `artstore standalone` (keys under [standalone]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StandaloneConfig {
    /// Everything lives under this folder: keys/, admin/, element/, ingester/, query/.
    pub data: PathBuf,
    /// The one public address: web UI and the whole API.
    pub listen: String,
    /// The storage element's internal address (port 0: any free port).
    pub element_listen: String,
    /// Also serve the admin API alone on this address (optional).
    pub admin_listen: Option<String>,
    /// Also serve the query API alone on this address (optional).
    pub query_listen: Option<String>,
    /// Log format: pretty or json.
    pub log_format: LogFormat,
}

impl Default for StandaloneConfig {
    fn default() -> Self {
        Self {
            data: PathBuf::from("./artstore-data"),
            listen: "127.0.0.1:8080".to_owned(),
            element_listen: "127.0.0.1:0".to_owned(),
            admin_listen: None,
            query_listen: None,
            log_format: LogFormat::Pretty,
        }
    }
}

#[derive(Debug, Args)]
pub struct StandaloneArgs {
    /// Data folder (default ./artstore-data).
    #[arg(long, env = "ARTSTORE_DATA")]
    pub data: Option<PathBuf>,
    /// The one public address: web UI and the whole API (default 127.0.0.1:8080).
    #[arg(long, env = "ARTSTORE_LISTEN")]
    pub listen: Option<String>,
    /// The storage element's internal address (default 127.0.0.1:0, any free port).
    #[arg(long, env = "ARTSTORE_ELEMENT_LISTEN")]
    pub element_listen: Option<String>,
    /// Also serve the admin API alone on this address.
    #[arg(long, env = "ARTSTORE_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Also serve the query API alone on this address.
    #[arg(long, env = "ARTSTORE_QUERY_LISTEN")]
    pub query_listen: Option<String>,
    /// A TOML configuration file (keys under [standalone]).
    #[arg(long, env = "ARTSTORE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format: pretty or json.
    #[arg(long, env = "ARTSTORE_LOG_FORMAT", value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,
}

impl StandaloneArgs {
    pub fn merge(self, mut cfg: StandaloneConfig) -> StandaloneConfig {
        let a = self;
        overlay!(cfg, a, data, listen, element_listen, log_format);
        overlay!(option cfg, a, admin_listen, query_listen);
        cfg
    }
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The standalone data folder whose key signs the token.
    #[arg(long, env = "ARTSTORE_DATA", default_value = "./artstore-data")]
    pub data: PathBuf,
    /// A role or permission to grant (repeatable): reader, writer, operator, admin, auditor,
    /// retention:bypass, legal-hold:lift. Default: admin.
    #[arg(long)]
    pub role: Vec<String>,
    /// The token's subject (default: the first role).
    #[arg(long)]
    pub subject: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: u64,
}

/// The whole config file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub standalone: StandaloneConfig,
    pub storage_element: ElementConfig,
    pub admin: AdminConfig,
    pub ingester: IngesterConfig,
    pub query: QueryConfig,
}

/// What `artstore config example` prints. A test checks it parses to the defaults.
pub const EXAMPLE_CONFIG: &str = r#"# ArtStore configuration. Every key has an ARTSTORE_* environment variable and a
# command-line flag of the same name (flag > variable > this file > built-in default).
# Values shown are the defaults.

[standalone]
# Everything of a standalone installation lives here: admin/ (a one-node admin cluster),
# keys/ (local signing key, JWKS), element/ (one storage element), ingester/ (upload
# sessions) and query/ (the search index). ARTSTORE_DATA, --data
data = "./artstore-data"
# The one public address: the web UI at / and the whole API (admin, ingester and query
# routes, see docs/routing.md). ARTSTORE_LISTEN, --listen
listen = "127.0.0.1:8080"
# The storage element's own API stays internal; port 0 takes any free port.
# ARTSTORE_ELEMENT_LISTEN, --element-listen
element_listen = "127.0.0.1:0"
# Optional extra listeners serving only the admin API or only the query API.
# ARTSTORE_ADMIN_LISTEN, --admin-listen; ARTSTORE_QUERY_LISTEN, --query-listen
# admin_listen = "127.0.0.1:8090"
# query_listen = "127.0.0.1:8083"
# "pretty" or "json". ARTSTORE_LOG_FORMAT, --log-format
log_format = "pretty"

[storage_element]
# The element root: element.json, data/, wal/, tmp/, audit/. Required. ARTSTORE_DATA, --data
# data = "/var/lib/artstore/element-1"
# ARTSTORE_LISTEN, --listen
listen = "127.0.0.1:8081"
# Token-signing public keys: a JWKS file or the admin's URL. Required. ARTSTORE_JWKS, --jwks
# jwks = "https://admin.example.org/.well-known/jwks.json"
# The cold tier (entering mode ar moves content here). Default <data>/cold.
# ARTSTORE_COLD_ROOT, --cold-root
# cold_root = "/mnt/cold/element-1"
# Expected token issuer and audience. ARTSTORE_ISSUER, ARTSTORE_AUDIENCE
issuer = "artstore"
audience = "artstore"
# Mode of a brand-new element: edit, rw, ro, ar. ARTSTORE_INITIAL_MODE, --initial-mode
initial_mode = "edit"
# Seconds between runs of the disposition schedule. ARTSTORE_DISPOSITION_INTERVAL_SECS
disposition_interval_secs = 3600
# Seconds a mode change waits for in-flight writes. ARTSTORE_DRAIN_TIMEOUT_SECS
drain_timeout_secs = 60
# Largest accepted upload, bytes (64 GiB). ARTSTORE_MAX_UPLOAD_BYTES
max_upload_bytes = 68719476736
# Bytes kept free on the file system (64 MiB): an upload that would leave less is refused
# with 507 insufficient-storage, so the WAL, sidecars and metadata changes always find room.
# ARTSTORE_MIN_FREE_BYTES, --min-free-bytes
min_free_bytes = 67108864
# Milliseconds the cold tier takes before a restore copy starts. ARTSTORE_COLD_RESTORE_LATENCY_MS
cold_restore_latency_ms = 0
# The sidecar cache: unset for the embedded in-memory cache, or a PostgreSQL URL. It is
# only a cache: it catches up from the WAL after an outage and is rebuilt from the files.
# ARTSTORE_CACHE, --cache
# cache = "postgres://artstore@127.0.0.1:5432/artstore"
# HTTPS (rustls): a PEM certificate chain and its key. ARTSTORE_TLS_CERT, ARTSTORE_TLS_KEY,
# --tls-cert, --tls-key
# tls_cert = "/etc/artstore/tls/cert.pem"
# tls_key = "/etc/artstore/tls/key.pem"
# PEM CA certificates to trust when calling the admin (keys, policies). ARTSTORE_TLS_CA
# tls_ca = "/etc/artstore/tls/ca.pem"
# "pretty" or "json". ARTSTORE_LOG_FORMAT, --log-format
log_format = "pretty"
# Seconds a fetched key set is trusted before it is read again. ARTSTORE_JWKS_MAX_AGE_SECS
jwks_max_age_secs = 300
# The admin cluster, for retention policies named at upload. ARTSTORE_ADMIN_URL, --admin
# admin_url = "http://127.0.0.1:8090"
# Redis for heartbeats (discovery). ARTSTORE_REDIS_URL, --redis
# redis = "redis://127.0.0.1:6379"
# This element's id in the admin's registry (default: the id in element.json).
# ARTSTORE_ELEMENT_ID, --element-id
# element_id = "se-1"
# The URL others reach this element at (default http://<listen>). ARTSTORE_PUBLIC_URL
# public_url = "http://se-1.example.org:8081"
# Seconds a heartbeat lives in Redis (renewed every third). ARTSTORE_HEARTBEAT_TTL_SECS
heartbeat_ttl_secs = 30
# Kafka brokers to publish events to; unset: the in-process bus. The WAL is the outbox:
# with the broker down uploads go on and the backlog is sent when it is back.
# ARTSTORE_KAFKA_BROKERS, --kafka
# kafka = "kafka-1.example.org:9093,kafka-2.example.org:9093"
# The events topic. ARTSTORE_KAFKA_TOPIC, --kafka-topic
kafka_topic = "artstore.events"
# The background scrub re-reads every content file and checks it against its digest: a pass
# starts this many seconds after the last one started (a week); 0 turns it off.
# ARTSTORE_SCRUB_INTERVAL_SECS, --scrub-interval-secs
scrub_interval_secs = 604800
# Its read rate limit, bytes per second (32 MiB/s); 0 is unlimited.
# ARTSTORE_SCRUB_BYTES_PER_SEC, --scrub-bytes-per-sec
scrub_bytes_per_sec = 33554432

[storage_element.kafka_options]
# librdkafka properties passed through as they are (TLS, SASL). ARTSTORE_KAFKA_OPTIONS
# ("k=v,k=v"), --kafka-option k=v
# "security.protocol" = "SASL_SSL"
# "sasl.mechanism" = "SCRAM-SHA-512"
# "sasl.username" = "artstore"
# "sasl.password" = "…"
# "ssl.ca.location" = "/etc/artstore/tls/kafka-ca.pem"

[admin]
# This node's id. ARTSTORE_NODE_ID, --node-id
node_id = 1
# ARTSTORE_LISTEN, --listen
listen = "127.0.0.1:8090"
# The node's folder (Raft log, vote, snapshot, audit chain). Required. ARTSTORE_DATA, --data
# data = "/var/lib/artstore/admin-1"
# Every voter of a fresh cluster; unset: a one-node cluster at listen. ARTSTORE_PEERS, --peers
# peers = "1=http://10.0.0.1:8090,2=http://10.0.0.2:8090,3=http://10.0.0.3:8090"
# Redis for discovery: the leader publishes the element registry. ARTSTORE_REDIS_URL, --redis
# redis = "redis://127.0.0.1:6379"
# A secret every node sends and checks on Raft RPCs. ARTSTORE_CLUSTER_SECRET
# cluster_secret = "change me"
# Issuer and audience written into tokens. ARTSTORE_ISSUER, ARTSTORE_AUDIENCE
issuer = "artstore"
audience = "artstore"
# Token lifetimes, seconds. ARTSTORE_TOKEN_TTL_SECS, ARTSTORE_REFRESH_TTL_SECS
token_ttl_secs = 900
refresh_ttl_secs = 86400
# Signing keys rotate this often and stay in the JWKS this long after. ARTSTORE_KEY_ROTATION_SECS,
# ARTSTORE_KEY_GRACE_SECS
key_rotation_secs = 86400
key_grace_secs = 172800
# Failed logins allowed per user name and per address within the window.
# ARTSTORE_LOGIN_MAX_FAILURES
login_max_failures = 5
login_max_failures_per_address = 20
login_window_secs = 300
# Raft timing, milliseconds. The election upper bound is also the leader's lease: a follower
# that hears nothing from the leader for the lease plus a random time between the bounds stands
# for election, so failover takes about 0.5-0.7 s with these, and a spurious election needs 9
# heartbeats lost in a row. Raise all three across sites.
# ARTSTORE_RAFT_HEARTBEAT_MS, ARTSTORE_RAFT_ELECTION_MIN_MS, ARTSTORE_RAFT_ELECTION_MAX_MS
raft_heartbeat_ms = 50
raft_election_min_ms = 150
raft_election_max_ms = 300
# Log entries between snapshots (a snapshot holds the live state only). ARTSTORE_RAFT_SNAPSHOT_EVERY
raft_snapshot_every = 50000
# Audit entries per segment file of the chain (state/audit/). ARTSTORE_AUDIT_SEGMENT_ENTRIES
audit_segment_entries = 32768
# Milliseconds a write waits for its commit before answering 503 (quorum lost).
write_timeout_ms = 5000
# HTTPS (rustls): certificate chain and key; peers are then https:// URLs. A private CA to
# trust when calling peers and elements. ARTSTORE_TLS_CERT, ARTSTORE_TLS_KEY, ARTSTORE_TLS_CA
# tls_cert = "/etc/artstore/tls/admin.pem"
# tls_key = "/etc/artstore/tls/admin.key"
# tls_ca = "/etc/artstore/tls/ca.pem"
# The admin user's password at the first start of a fresh cluster; prefer the
# ARTSTORE_ADMIN_PASSWORD variable. Unset: one is generated and printed once.
# admin_password = "…"
# Serve the web UI on this node too; it calls the public API at this URL (the front proxy,
# which routes by docs/routing.md). ARTSTORE_UI_API, --ui-api
# ui_api = "https://archive.example.org"
# Front proxies (addresses or networks) whose X-Forwarded-For header names the client, so
# failed-login limits per address count clients, not the proxy. ARTSTORE_TRUSTED_PROXIES,
# --trusted-proxies
trusted_proxies = []
# Browser origins allowed to call the API (CORS). ARTSTORE_CORS_ORIGINS
cors_origins = []
# Requests per second one client address, and one caller (token subject), may make on the
# public API (bursts of twice that; 429 + Retry-After beyond); 0: no limit. Behind a front
# proxy, name it in trusted_proxies so the client behind it is counted, not the proxy.
# ARTSTORE_RATE_LIMIT_PER_ADDRESS, ARTSTORE_RATE_LIMIT_PER_CALLER
rate_limit_per_address = 0.0
rate_limit_per_caller = 0.0
# "pretty" or "json". ARTSTORE_LOG_FORMAT, --log-format
log_format = "pretty"

[ingester]
# Upload sessions, idempotency keys, location hints, registry.json. Required. ARTSTORE_DATA, --data
# data = "/var/lib/artstore/ingester"
# ARTSTORE_LISTEN, --listen
listen = "127.0.0.1:8082"
# Token-signing public keys: a JWKS file or the admin's URL. Required. ARTSTORE_JWKS, --jwks
# jwks = "https://admin.example.org/.well-known/jwks.json"
# The admin cluster, for the terms of retention policies (placement). ARTSTORE_ADMIN_URL, --admin
# admin_url = "http://127.0.0.1:8090"
# Redis: the element registry the admin publishes and the elements' heartbeats.
# ARTSTORE_REDIS_URL, --redis
# redis = "redis://127.0.0.1:6379"
# Without Redis, a fixed element list. ARTSTORE_ELEMENTS, --elements
# elements = "se-1=http://127.0.0.1:8081,se-2=http://127.0.0.1:8083"
# Expected token issuer and audience. ARTSTORE_ISSUER, ARTSTORE_AUDIENCE
issuer = "artstore"
audience = "artstore"
# Seconds a fetched key set is trusted before it is read again. ARTSTORE_JWKS_MAX_AGE_SECS
jwks_max_age_secs = 300
# Documents to be disposed of within this term go to edit elements. ARTSTORE_TEMPORARY_HORIZON
temporary_horizon = "P1Y"
# Free space an element needs for an upload of unknown size (1 GiB).
# ARTSTORE_UNKNOWN_SIZE_RESERVE_BYTES
unknown_size_reserve_bytes = 1073741824
# Multipart files up to this size are held so a refusing element can be retried; larger
# ones stream through (8 MiB). ARTSTORE_REPLAY_BUFFER_BYTES
replay_buffer_bytes = 8388608
# Seconds an unfinished resumable upload is kept before it is swept. ARTSTORE_UPLOAD_EXPIRY_SECS
upload_expiry_secs = 86400
# Largest resumable upload, bytes (64 GiB). ARTSTORE_TUS_MAX_SIZE
tus_max_size = 68719476736
# Seconds an Idempotency-Key is remembered. ARTSTORE_IDEMPOTENCY_TTL_SECS
idempotency_ttl_secs = 86400
# Browser origins allowed (CORS), e.g. ["https://archive.example.org"]. ARTSTORE_CORS_ORIGINS
cors_origins = []
# Requests per second one client address, and one caller (token subject), may make on the
# public API (bursts of twice that; 429 + Retry-After beyond); 0: no limit. Behind a front
# proxy, name it in trusted_proxies so the client behind it is counted, not the proxy.
# ARTSTORE_RATE_LIMIT_PER_ADDRESS, ARTSTORE_RATE_LIMIT_PER_CALLER
rate_limit_per_address = 0.0
rate_limit_per_caller = 0.0
# Front proxies whose X-Forwarded-For names the client. ARTSTORE_TRUSTED_PROXIES
trusted_proxies = []
# Milliseconds between direct probes of each element. ARTSTORE_PROBE_INTERVAL_MS
probe_interval_ms = 2000
# HTTPS (rustls): a PEM certificate chain and its key; plain HTTP is then refused.
# ARTSTORE_TLS_CERT, ARTSTORE_TLS_KEY, --tls-cert, --tls-key
# tls_cert = "/etc/artstore/tls/cert.pem"
# tls_key = "/etc/artstore/tls/key.pem"
# PEM CA certificates to trust when calling other roles (the cluster's private CA).
# ARTSTORE_TLS_CA, --tls-ca
# tls_ca = "/etc/artstore/tls/ca.pem"
# "pretty" or "json". ARTSTORE_LOG_FORMAT, --log-format
log_format = "pretty"

[query]
# The index folder (the live index, a rebuild in progress, the last-known registry).
# ARTSTORE_INDEX, --index
# index = "/var/lib/artstore/query"
# ARTSTORE_LISTEN, --listen
listen = "127.0.0.1:8083"
# Token-signing public keys: a JWKS file or the admin's URL. ARTSTORE_JWKS, --jwks
# jwks = "http://127.0.0.1:8090/.well-known/jwks.json"
# Redis: the element registry and heartbeats. ARTSTORE_REDIS_URL, --redis
# redis = "redis://127.0.0.1:6379"
# A fixed element list when there is no Redis. ARTSTORE_ELEMENTS, --elements
# elements = "se-1=http://127.0.0.1:8081"
# Kafka brokers to follow events from; unset: no events (reindex keeps the index current).
# ARTSTORE_KAFKA_BROKERS, --kafka
# kafka = "127.0.0.1:9092"
# ARTSTORE_KAFKA_TOPIC, --kafka-topic
kafka_topic = "artstore.events"
# The consumer group; offsets are committed only after the index commit covering them.
# ARTSTORE_CONSUMER_GROUP, --consumer-group
consumer_group = "artstore-query"
# The role's own service account (reads listings and content for indexing).
# ARTSTORE_ADMIN_URL, ARTSTORE_CLIENT_ID, ARTSTORE_CLIENT_SECRET (prefer the variable)
# admin_url = "http://127.0.0.1:8090"
# client_id = "query"
# Or a fixed service token instead. ARTSTORE_SERVICE_TOKEN
issuer = "artstore"
audience = "artstore"
jwks_max_age_secs = 300
# Extraction runs in worker processes: how many (0: one per core), how long one document
# may take, their address-space limit, and input/output limits.
extract_workers = 0
extract_timeout_secs = 30
extract_memory_mib = 1024
extract_max_input_bytes = 134217728
extract_max_text_bytes = 4194304
extract_max_unpacked_bytes = 536870912
# Milliseconds between index commits while events arrive. ARTSTORE_COMMIT_INTERVAL_MS
commit_interval_ms = 200
# Memory the index writer buffers, MiB.
writer_heap_mib = 128
# Search results cached in memory (at most this many entries and MiB; older commits' results are
# dropped at each commit), and their lifetime in seconds.
result_cache_entries = 10000
result_cache_mib = 64
redis_cache_ttl_secs = 600
probe_interval_ms = 2000
# Compare the index with the elements' listings at start and repair what differs.
reconcile_on_start = false
# Browser origins (CORS), rate limits and trusted proxies, as for the ingester.
cors_origins = []
rate_limit_per_address = 0.0
rate_limit_per_caller = 0.0
trusted_proxies = []
# HTTPS, as for the ingester: a PEM certificate chain and its key; plain HTTP is then refused.
# ARTSTORE_TLS_CERT, ARTSTORE_TLS_KEY, --tls-cert, --tls-key
# tls_cert = "/etc/artstore/tls/cert.pem"
# tls_key = "/etc/artstore/tls/key.pem"
# PEM CA certificates to trust when calling other roles (the cluster's private CA).
# ARTSTORE_TLS_CA, --tls-ca
# tls_ca = "/etc/artstore/tls/ca.pem"
log_format = "pretty"

[query.kafka_options]
# librdkafka properties passed through (TLS, SASL). ARTSTORE_KAFKA_OPTIONS, --kafka-option
"#;

fn bar(len: u64, template: &str) -> ProgressBar {
    let pb = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    pb
}

/// `artstore admin verify-audit`.
pub fn admin_verify_audit(data: &Path, public_key: Option<&str>) -> anyhow::Result<ExitCode> {
    let r = artstore_admin::verify::verify_audit(data, public_key)?;
    for p in &r.problems {
        println!("{}: {p}", data.display());
    }
    println!(
        "audit chain: {} entries, public key {}, {} problem(s)",
        r.entries,
        r.public_key.as_deref().unwrap_or("unknown"),
        r.problems.len()
    );
    Ok(if r.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `artstore storage-element verify`.
pub fn verify(data: &Path, cold_root: Option<&Path>) -> anyhow::Result<ExitCode> {
    let cold = cold_root.map(Path::to_owned).unwrap_or_else(|| data.join("cold"));
    let started = std::time::Instant::now();
    let files = artstore_storage_element::verify::sidecar_paths(data)
        .map_err(|e| anyhow::anyhow!("{}: {e}", data.display()))?;
    let pb = bar(files.len() as u64, "{spinner} verifying [{bar:40}] {pos}/{len} files, {msg} ({per_sec}, eta {eta})");
    let bytes = std::sync::atomic::AtomicU64::new(0);
    let report = artstore_storage_element::verify::verify(data, &cold, &|_| pb.inc(1), &|n| {
        let b = bytes.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        pb.set_message(format!("{} MiB", b >> 20));
    })
    .map_err(|e| anyhow::anyhow!("{}: {e}", data.display()))?;
    pb.finish_and_clear();
    for (path, why) in &report.mismatched {
        println!("MISMATCH {}: {why}", path.display());
    }
    for path in &report.missing {
        println!("MISSING  {}", path.display());
    }
    for why in &report.unreadable {
        println!("UNREADABLE {why}");
    }
    println!(
        "verified {} files ({} bytes) in {:.1}s: {} mismatched, {} missing, {} unreadable, {} tombstones",
        report.checked,
        report.bytes,
        started.elapsed().as_secs_f64(),
        report.mismatched.len(),
        report.missing.len(),
        report.unreadable.len(),
        report.tombstones
    );
    Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn open_cache(a: &CacheArgs) -> anyhow::Result<artstore_storage_element::pg::PgCache> {
    let path = a.data.join("element.json");
    let element = artstore_storage_element::element::ElementFile::read(&path)?.ok_or_else(|| {
        anyhow::anyhow!("{}: not found (is {} a storage element root?)", path.display(), a.data.display())
    })?;
    artstore_storage_element::pg::PgCache::open(&a.cache, element.element_id).await.map_err(|e| anyhow::anyhow!("{e}"))
}

/// `artstore storage-element rebuild-cache`.
pub async fn rebuild_cache(a: &CacheArgs) -> anyhow::Result<ExitCode> {
    let cache = open_cache(a).await?;
    let pb = bar(0, "{spinner} rebuilding [{bar:40}] {pos}/{len} day folders, {msg} (eta {eta})");
    let report = artstore_storage_element::rebuild::rebuild(&a.data, &cache, &|r| {
        pb.set_length(r.days_total);
        pb.set_position(r.days_done);
        pb.set_message(format!(
            "{} documents, {:.0}/s",
            r.documents,
            r.documents as f64 / r.elapsed.as_secs_f64().max(1e-3)
        ));
    })
    .await?;
    pb.finish_and_clear();
    for u in &report.unreadable {
        println!("UNREADABLE {u}");
    }
    if let Some(after) = &report.resumed_after {
        println!("resumed an interrupted rebuild after {after}");
    }
    let secs = report.elapsed.as_secs_f64();
    println!(
        "rebuilt the cache from {} day folders: {} documents, {} bytes in {secs:.1}s ({:.0} documents/s), {} unreadable sidecars skipped",
        report.days_total,
        report.documents,
        report.bytes,
        report.documents as f64 / secs.max(1e-3),
        report.unreadable.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `artstore storage-element check-cache`.
pub async fn check_cache(a: &CheckCacheArgs) -> anyhow::Result<ExitCode> {
    let cache = open_cache(&a.target).await?;
    let pb = bar(0, "{spinner} comparing: {pos} sidecars read ({per_sec})");
    let pb2 = pb.clone();
    let report = artstore_storage_element::rebuild::check(
        &a.target.data,
        &cache,
        a.repair,
        std::sync::Arc::new(move |n| pb2.set_position(n)),
    )
    .await?;
    pb.finish_and_clear();
    for d in &report.drift {
        println!("{d}");
    }
    for u in &report.unreadable {
        println!("UNREADABLE {u}");
    }
    println!(
        "compared {} sidecars with {} cache entries: {} differences{}",
        report.sidecars,
        report.cached,
        report.drift.len(),
        if report.repaired { ", all repaired" } else { "" }
    );
    Ok(if report.drift.is_empty() || report.repaired { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `artstore storage-element verify-audit`.
pub fn verify_audit(data: &Path) -> anyhow::Result<ExitCode> {
    let pb = bar(0, "{spinner} checking audit chain: {pos} lines ({per_sec})");
    let report = artstore_storage_element::audit::verify(data, &|n| pb.set_position(n))?;
    pb.finish_and_clear();
    for p in &report.problems {
        println!("PROBLEM {p}");
    }
    println!(
        "checked {} audit lines and {} sidecars: {} problems",
        report.lines,
        report.sidecars,
        report.problems.len()
    );
    Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_to_the_defaults() {
        let parsed: FileConfig = toml::from_str(EXAMPLE_CONFIG).unwrap();
        let default = FileConfig::default();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), serde_json::to_value(&default).unwrap());
    }

    #[test]
    fn flags_override_the_file() {
        let file: FileConfig = toml::from_str("[storage_element]\nlisten = \"0.0.0.0:1\"\ndata = \"/x\"\n").unwrap();
        let args = ElementArgs { listen: Some("127.0.0.1:2".into()), ..Default::default() };
        let cfg = args.merge(file.storage_element);
        assert_eq!(cfg.listen, "127.0.0.1:2");
        assert_eq!(cfg.data.as_deref(), Some(Path::new("/x")));
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        assert!(toml::from_str::<FileConfig>("[storage_element]\nlisen = \"x\"\n").is_err());
    }
}
