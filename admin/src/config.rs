//! The admin node's configuration: TOML keys under `[admin]`, each with an `ARTSTORE_*`
//! variable and a command-line flag (the binary merges them in that order).

use artstore_shared::auth::{DEFAULT_AUDIENCE, DEFAULT_ISSUER};
use artstore_shared::telemetry::LogFormat;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Default listen address of an admin node.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";

/// Settings of one admin node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// This node's id in the cluster.
    pub node_id: u64,
    /// Address to listen on (API, JWKS and Raft RPCs).
    pub listen: String,
    /// The node's folder: Raft log, vote, snapshot, audit chain.
    pub data: Option<PathBuf>,
    /// Every voter of a fresh cluster: `1=http://host:port,2=http://…`. Only this node
    /// (`1=http://…`) makes a one-node cluster; absent means the same, at `listen`.
    pub peers: Option<String>,
    /// Redis URL for discovery (`redis://127.0.0.1:6379`); absent disables publication.
    pub redis: Option<String>,
    /// Shared secret every node sends and checks on Raft RPCs; absent means none.
    pub cluster_secret: Option<String>,
    /// Issuer written into tokens.
    pub issuer: String,
    /// Audience written into access tokens.
    pub audience: String,
    /// Access-token lifetime in seconds.
    pub token_ttl_secs: u64,
    /// Refresh-token lifetime in seconds.
    pub refresh_ttl_secs: u64,
    /// Seconds between scheduled signing-key rotations.
    pub key_rotation_secs: u64,
    /// Seconds a retired key stays in the JWKS.
    pub key_grace_secs: u64,
    /// Failed logins allowed per user name, and per client address, within `login_window_secs`.
    pub login_max_failures: u32,
    /// Failed logins allowed per client address within the window.
    pub login_max_failures_per_address: u32,
    /// The rate-limit window in seconds.
    pub login_window_secs: u64,
    /// Raft heartbeat interval in milliseconds.
    pub raft_heartbeat_ms: u64,
    /// Election timing in milliseconds. The upper bound is the leader's lease: a node that
    /// heard from the leader within it refuses to vote. A follower that heard nothing from
    /// the leader for the lease plus a random time between the bounds stands for election,
    /// so failover takes about `max + min…max` plus one commit (≈ 0.5–0.7 s with the
    /// defaults), and a spurious election needs `(max + min) / heartbeat` heartbeats lost in
    /// a row (9). The defaults suit loopback and a LAN; raise all three across sites.
    pub raft_election_min_ms: u64,
    /// See `raft_election_min_ms`.
    pub raft_election_max_ms: u64,
    /// A snapshot is taken after this many log entries; the log keeps about this many.
    pub raft_snapshot_every: u64,
    /// Audit entries per segment file of the chain.
    pub audit_segment_entries: u64,
    /// Milliseconds a write waits for its commit before answering 503 (quorum lost).
    pub write_timeout_ms: u64,
    /// The `admin` user's password at the first start of a fresh cluster. Prefer the
    /// `ARTSTORE_ADMIN_PASSWORD` variable; unset: one is generated and printed once.
    #[serde(skip_serializing)]
    pub admin_password: Option<String>,
    /// PEM certificate chain: with `tls_key`, the listener speaks HTTPS (rustls) and the
    /// peer URLs are `https://`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates trusted (besides the system's) when calling peers and elements.
    pub tls_ca: Option<PathBuf>,
    /// The public API (the front proxy's URL): when set, this node also serves the web UI,
    /// which calls the API there with the signed-in user's token.
    pub ui_api: Option<String>,
    /// Front proxies (addresses or networks, `10.0.0.0/8`) whose `X-Forwarded-For` names
    /// the client: login limits per address count the client, not the proxy.
    pub trusted_proxies: Vec<String>,
    /// Browser origins allowed to call the API (CORS).
    pub cors_origins: Vec<String>,
    /// Requests per second one client address may make on the public API (bursts of twice
    /// that; 429 beyond); 0: no limit.
    pub rate_limit_per_address: f64,
    /// Requests per second one caller (token subject) may make on the public API; 0: no limit.
    pub rate_limit_per_caller: f64,
    /// Log format: `pretty` or `json`.
    pub log_format: LogFormat,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            listen: DEFAULT_LISTEN.to_owned(),
            data: None,
            peers: None,
            redis: None,
            cluster_secret: None,
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            token_ttl_secs: 15 * 60,
            refresh_ttl_secs: 24 * 3600,
            key_rotation_secs: 24 * 3600,
            key_grace_secs: 48 * 3600,
            login_max_failures: 5,
            login_max_failures_per_address: 20,
            login_window_secs: 300,
            raft_heartbeat_ms: 50,
            raft_election_min_ms: 150,
            raft_election_max_ms: 300,
            raft_snapshot_every: 50_000,
            audit_segment_entries: crate::audit_log::DEFAULT_PER_SEGMENT,
            write_timeout_ms: 5000,
            admin_password: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            ui_api: None,
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
            rate_limit_per_address: 0.0,
            rate_limit_per_caller: 0.0,
            log_format: LogFormat::Pretty,
        }
    }
}

impl AdminConfig {
    /// The voters named by `peers` (or this node alone at `listen`).
    pub fn peer_map(&self) -> Result<BTreeMap<u64, String>, String> {
        let Some(peers) = self.peers.as_deref().filter(|p| !p.trim().is_empty()) else {
            return Ok(BTreeMap::from([(self.node_id, format!("http://{}", self.listen))]));
        };
        let mut out = BTreeMap::new();
        for part in peers.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, url) = part
                .split_once('=')
                .ok_or_else(|| format!("peer {part:?} is not ID=URL (e.g. 1=http://10.0.0.1:8090)"))?;
            let id: u64 = id.trim().parse().map_err(|_| format!("peer {part:?}: {id:?} is not a node id"))?;
            let url = url.trim().trim_end_matches('/');
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("peer {part:?}: {url:?} is not an http(s) URL"));
            }
            if out.insert(id, url.to_owned()).is_some() {
                return Err(format!("peer id {id} is named twice"));
            }
        }
        if !out.contains_key(&self.node_id) {
            return Err(format!("peers do not name this node (--node-id {})", self.node_id));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_name_this_node() {
        let c = AdminConfig {
            node_id: 2,
            peers: Some("1=http://a:1, 2=http://b:2/,3=https://c".into()),
            ..Default::default()
        };
        let m = c.peer_map().unwrap();
        assert_eq!(m[&2], "http://b:2");
        assert_eq!(m.len(), 3);
        for bad in ["1=http://a", "x=http://a,2=http://b", "2=ftp://b", "2=http://b,2=http://c", "2"] {
            let c = AdminConfig { node_id: 2, peers: Some(bad.into()), ..Default::default() };
            assert!(c.peer_map().is_err(), "{bad}");
        }
        let single = AdminConfig::default().peer_map().unwrap();
        assert_eq!(single[&1], "http://127.0.0.1:8090");
    }
}
