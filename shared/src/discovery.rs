//! The discovery wire format in Redis, shared by the admin (publisher of the registry,
//! reader of heartbeats) and storage elements (writers of heartbeats).
//!
//! - `artstore:elements`: the whole registry as JSON ([`Registry`]), replaced on each change.
//! - `artstore:elements:changed`: a channel; each message is the registry's new version.
//! - `artstore:heartbeat:<element id>`: an element's [`Heartbeat`], written with a TTL; an
//!   element whose key expired is down.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The key holding the whole element registry.
pub const REGISTRY_KEY: &str = "artstore:elements";
/// The channel announcing registry changes.
pub const REGISTRY_CHANNEL: &str = "artstore:elements:changed";
/// Seconds a heartbeat lives unless renewed.
pub const HEARTBEAT_TTL_SECS: u64 = 30;
/// Seconds between heartbeats.
pub const HEARTBEAT_INTERVAL_SECS: u64 = 10;

/// The Redis key of an element's heartbeat.
pub fn heartbeat_key(element_id: &str) -> String {
    format!("artstore:heartbeat:{element_id}")
}

/// One element as the registry publishes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegistryElement {
    pub id: String,
    pub url: String,
    pub mode: String,
    pub capacity_bytes: u64,
    pub weight: u32,
    #[serde(default)]
    pub dc: String,
    /// The element's free-form labels (`rack=r12`, `tier=ssd`); absent when it has none.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The published registry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Registry {
    /// Grows with every change; readers ignore an older version than the one they hold.
    pub version: u64,
    pub published_at: DateTime<Utc>,
    pub elements: Vec<RegistryElement>,
}

/// What an element says about itself every few seconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    pub id: String,
    pub url: String,
    pub mode: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub at: DateTime<Utc>,
    /// Documents the element holds (not tombstones); absent from older elements.
    #[serde(default)]
    pub documents: Option<u64>,
    /// The element's background workers (disposition, cache, outbox) as its
    /// `/health/ready` shows them; `null` from older elements.
    #[serde(default)]
    pub workers: serde_json::Value,
}

// ---------------------------------------------------------------------------------------
// Finding elements: the `Discovery` trait and its three sources.
// ---------------------------------------------------------------------------------------

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// One storage element as a role that writes or reads sees it: its registry entry and what
/// is known of its health.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ElementView {
    pub id: String,
    pub url: String,
    /// The stricter of the registry's mode and the mode the element last reported
    /// (modes only go forward, so the stricter one is the newer).
    pub mode: String,
    pub capacity_bytes: u64,
    pub weight: u32,
    #[serde(default)]
    pub dc: String,
    /// Free bytes as last reported (heartbeat or probe).
    pub free_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
    /// When the element was last heard from (heartbeat or a successful probe).
    pub seen_at: Option<DateTime<Utc>>,
    /// Heard from recently, and the latest probe (if any since) succeeded.
    pub up: bool,
}

/// Whether a discovery source is live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryStatus {
    /// The registry comes from its live source.
    Ready,
    /// Serving the last registry seen; the reason says why and since when.
    Degraded(String),
}

/// Where roles find storage elements. Implementations keep a snapshot current in the
/// background; reading it never waits on the network.
pub trait Discovery: Send + Sync + std::fmt::Debug {
    /// Every known element with its health, ordered by id.
    fn elements(&self) -> Vec<ElementView>;
    /// One element by id.
    fn element(&self, id: &str) -> Option<ElementView> {
        self.elements().into_iter().find(|e| e.id == id)
    }
    /// Whether the source is live or a last-known copy is served.
    fn status(&self) -> DiscoveryStatus;
    /// The registry version seen; grows with each change (static sources stay at 0).
    fn version(&self) -> u64;
    /// Resolves after the registry or an element's health changed (or a timeout passed).
    fn changed(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// The order of modes: writes are allowed in the first two only.
pub fn mode_rank(mode: &str) -> u8 {
    match mode {
        "edit" => 0,
        "rw" => 1,
        "ro" => 2,
        "ar" => 3,
        _ => 4,
    }
}

/// The stricter of two modes (an unknown mode is the strictest).
fn stricter<'a>(a: &'a str, b: &'a str) -> &'a str {
    if mode_rank(a) >= mode_rank(b) { a } else { b }
}

/// What the last direct probe of an element found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Probe {
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub mode: Option<String>,
    pub free_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
    /// As in [`Heartbeat`].
    #[serde(default)]
    pub documents: Option<u64>,
    #[serde(default)]
    pub workers: serde_json::Value,
}

/// The whole state one discovery source holds: kept in memory, and (last-known) on disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// The registry version (0 for a static list).
    pub version: u64,
    pub elements: Vec<RegistryElement>,
    #[serde(default)]
    pub heartbeats: BTreeMap<String, Heartbeat>,
    #[serde(default)]
    pub probes: BTreeMap<String, Probe>,
    /// When this snapshot was last updated from its source.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

impl Snapshot {
    /// The views of every element: health is the latest of heartbeat and probe, and an
    /// element not heard from within `stale_after` is down.
    pub fn views(&self, now: DateTime<Utc>, stale_after: Duration) -> Vec<ElementView> {
        let stale = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::seconds(30));
        let mut out: Vec<ElementView> = self
            .elements
            .iter()
            .map(|e| {
                let hb = self.heartbeats.get(&e.id);
                let probe = self.probes.get(&e.id);
                let ok_probe = probe.filter(|p| p.ok);
                let seen_at = [hb.map(|h| h.at), ok_probe.map(|p| p.at)].into_iter().flatten().max();
                // A failed probe newer than every sign of life means down now, without
                // waiting for a heartbeat to expire.
                let failed_after = probe.is_some_and(|p| !p.ok && seen_at.is_none_or(|s| p.at > s));
                let up = !failed_after && seen_at.is_some_and(|s| now - s <= stale);
                let newest_is_probe = match (hb, ok_probe) {
                    (Some(h), Some(p)) => p.at > h.at,
                    (None, Some(_)) => true,
                    _ => false,
                };
                let (rep_mode, free, total) = if newest_is_probe {
                    let p = ok_probe.expect("checked above");
                    (p.mode.clone(), p.free_bytes, p.total_bytes)
                } else if let Some(h) = hb {
                    (Some(h.mode.clone()), Some(h.free_bytes), Some(h.total_bytes))
                } else {
                    (None, None, None)
                };
                let mode = match rep_mode.as_deref() {
                    Some(m) if e.mode == "unknown" || e.mode.is_empty() => m.to_owned(),
                    Some(m) => stricter(&e.mode, m).to_owned(),
                    None => e.mode.clone(),
                };
                ElementView {
                    id: e.id.clone(),
                    url: e.url.clone(),
                    mode,
                    capacity_bytes: e.capacity_bytes,
                    weight: e.weight,
                    dc: e.dc.clone(),
                    free_bytes: free,
                    total_bytes: total,
                    seen_at,
                    up,
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

/// How often elements are probed directly, and when silence means down.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Between two probes of one element.
    pub interval: Duration,
    /// An element not heard from for this long is down.
    pub stale_after: Duration,
    /// A prepared HTTP client (e.g. one trusting a private CA).
    pub http: reqwest::Client,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            stale_after: Duration::from_secs(HEARTBEAT_TTL_SECS),
            http: crate::tls::http_client()
                .timeout(Duration::from_secs(2))
                .connect_timeout(Duration::from_secs(1))
                .build()
                .unwrap_or_default(),
        }
    }
}

/// Asks an element's `/health/ready` how it is: reachable, its mode, free space, document
/// count and workers.
pub async fn probe(http: &reqwest::Client, url: &str) -> Probe {
    let at = Utc::now();
    let failed = Probe {
        at,
        ok: false,
        mode: None,
        free_bytes: None,
        total_bytes: None,
        documents: None,
        workers: serde_json::Value::Null,
    };
    let Ok(resp) = http.get(format!("{}/health/ready", url.trim_end_matches('/'))).send().await else {
        return failed;
    };
    if !resp.status().is_success() {
        return failed;
    }
    let Ok(v) = resp.json::<serde_json::Value>().await else {
        return failed;
    };
    let info = &v["element"];
    Probe {
        at,
        ok: true,
        mode: info["mode"].as_str().map(str::to_owned),
        free_bytes: info["free_bytes"].as_u64(),
        total_bytes: info["total_bytes"].as_u64(),
        documents: info["documents"].as_u64(),
        workers: info["workers"].clone(),
    }
}

/// The part every implementation shares: the snapshot, its status, change notification.
#[derive(Debug)]
struct Shared {
    snapshot: RwLock<Snapshot>,
    status: RwLock<DiscoveryStatus>,
    changes: tokio::sync::watch::Sender<u64>,
    stale_after: Duration,
    /// Rewritten atomically whenever the registry or health changes (last-known copy).
    file: Option<PathBuf>,
}

impl Shared {
    fn new(snapshot: Snapshot, status: DiscoveryStatus, stale_after: Duration, file: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            snapshot: RwLock::new(snapshot),
            status: RwLock::new(status),
            changes: tokio::sync::watch::channel(0).0,
            stale_after,
            file,
        })
    }

    fn snapshot(&self) -> Snapshot {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies `f` to the snapshot; notifies and saves when the registry part changed.
    fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        let saved = {
            let mut s = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
            let before = (s.version, s.elements.clone());
            let health_before = views_key(&s.views(Utc::now(), self.stale_after));
            f(&mut s);
            s.updated_at = Some(Utc::now());
            let changed = before != (s.version, s.elements.clone());
            let health_changed = health_before != views_key(&s.views(Utc::now(), self.stale_after));
            // Notified under the lock: whoever sees the new snapshot also sees the change.
            if changed || health_changed {
                self.changes.send_modify(|v| *v += 1);
            }
            changed.then(|| s.clone())
        };
        if let (Some(file), Some(s)) = (&self.file, saved)
            && let Err(e) = save_snapshot(file, &s)
        {
            tracing::warn!(error = %e, file = %file.display(), "last-known registry not saved");
        }
    }

    fn set_status(&self, st: DiscoveryStatus) {
        let mut g = self.status.write().unwrap_or_else(|e| e.into_inner());
        if *g != st {
            match &st {
                DiscoveryStatus::Ready => tracing::info!("discovery source live"),
                DiscoveryStatus::Degraded(r) => tracing::warn!(reason = %r, "discovery degraded"),
            }
            *g = st;
        }
    }

    fn views(&self) -> Vec<ElementView> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner()).views(Utc::now(), self.stale_after)
    }
}

/// What placement cares about, to tell whether a health change is worth a notification.
fn views_key(v: &[ElementView]) -> Vec<(String, String, bool)> {
    v.iter().map(|e| (e.id.clone(), e.mode.clone(), e.up)).collect()
}

/// Writes the last-known registry by temp file, fsync and rename.
pub fn save_snapshot(path: &Path, s: &Snapshot) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("registry.json")));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Reads a last-known registry; a missing file is `None`, a broken one an error naming it.
pub fn load_snapshot(path: &Path) -> Result<Option<Snapshot>, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Probes every element of the snapshot every `interval`, in parallel.
fn spawn_prober(shared: Arc<Shared>, cfg: ProbeConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let targets: Vec<(String, String)> =
                shared.snapshot().elements.iter().map(|e| (e.id.clone(), e.url.clone())).collect();
            let probes = futures_util::future::join_all(targets.into_iter().map(|(id, url)| {
                let http = cfg.http.clone();
                async move { (id, probe(&http, &url).await) }
            }))
            .await;
            shared.update(|s| {
                for (id, p) in probes {
                    s.probes.insert(id, p);
                }
            });
        }
    })
}

/// Aborts background tasks when the discovery is dropped.
#[derive(Debug, Default)]
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A fixed list of elements (`--elements ID=URL,ID=URL`), their health from direct probes.
#[derive(Debug)]
pub struct StaticDiscovery {
    shared: Arc<Shared>,
    _tasks: Tasks,
}

/// Parses `ID=URL,ID=URL`.
pub fn parse_element_list(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (id, url) =
                p.split_once('=').ok_or_else(|| format!("{p:?} is not ID=URL (e.g. se-1=http://10.0.0.5:8081)"))?;
            let (id, url) = (id.trim(), url.trim().trim_end_matches('/'));
            if id.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("{p:?} is not ID=URL with an http(s) URL"));
            }
            Ok((id.to_owned(), url.to_owned()))
        })
        .collect()
}

impl StaticDiscovery {
    /// Starts probing the given elements (mode and free space come from the probes).
    pub fn start(elements: Vec<(String, String)>, cfg: ProbeConfig) -> Self {
        let snapshot = Snapshot {
            version: 0,
            elements: elements
                .into_iter()
                .map(|(id, url)| RegistryElement {
                    id,
                    url,
                    mode: "unknown".to_owned(),
                    capacity_bytes: 0,
                    weight: 1,
                    dc: String::new(),
                    labels: Default::default(),
                })
                .collect(),
            ..Default::default()
        };
        let shared = Shared::new(snapshot, DiscoveryStatus::Ready, cfg.stale_after, None);
        let prober = spawn_prober(shared.clone(), cfg);
        Self { shared, _tasks: Tasks(vec![prober]) }
    }
}

/// The last registry seen, from `<data>/registry.json`: what a role goes on with while its
/// live source is away (also across its own restart). Health comes from direct probes.
#[derive(Debug)]
pub struct LastKnownDiscovery {
    shared: Arc<Shared>,
    _tasks: Tasks,
}

impl LastKnownDiscovery {
    /// Opens the file (a missing file is an empty registry) and starts probing.
    pub fn open(path: &Path, cfg: ProbeConfig) -> Result<Self, String> {
        let snapshot = load_snapshot(path)?.unwrap_or_default();
        let since = snapshot.updated_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".to_owned());
        let status = DiscoveryStatus::Degraded(format!(
            "serving the last-known registry (version {}, saved {since})",
            snapshot.version
        ));
        let shared = Shared::new(snapshot, status, cfg.stale_after, Some(path.to_owned()));
        let prober = spawn_prober(shared.clone(), cfg);
        Ok(Self { shared, _tasks: Tasks(vec![prober]) })
    }
}

/// The registry the admin publishes in Redis, the elements' heartbeats for health, and the
/// change channel; every change is kept in the last-known file, which is served (with
/// direct probes for health) while Redis is down, also across a restart.
#[derive(Debug)]
pub struct RedisDiscovery {
    shared: Arc<Shared>,
    _tasks: Tasks,
}

impl RedisDiscovery {
    /// Starts from the last-known file (degraded until Redis answers), then follows Redis.
    pub fn start(redis_url: &str, last_known: &Path, cfg: ProbeConfig) -> Result<Self, String> {
        let client = redis::Client::open(redis_url).map_err(|e| format!("redis url {redis_url:?}: {e}"))?;
        let snapshot = load_snapshot(last_known)?.unwrap_or_default();
        let status = DiscoveryStatus::Degraded("connecting to redis".to_owned());
        let shared = Shared::new(snapshot, status, cfg.stale_after, Some(last_known.to_owned()));
        let poll = cfg.interval;
        let prober = spawn_prober(shared.clone(), cfg);
        let follower = tokio::spawn(follow_redis(shared.clone(), client, poll));
        Ok(Self { shared, _tasks: Tasks(vec![prober, follower]) })
    }
}

/// The three sources differ only in how their snapshot is kept current.
macro_rules! snapshot_discovery {
    ($($t:ty),*) => {$(
        impl Discovery for $t {
            fn elements(&self) -> Vec<ElementView> {
                self.shared.views()
            }
            fn status(&self) -> DiscoveryStatus {
                self.shared.status.read().unwrap_or_else(|e| e.into_inner()).clone()
            }
            fn version(&self) -> u64 {
                self.shared.snapshot().version
            }
            fn changed(&self) -> tokio::sync::watch::Receiver<u64> {
                self.shared.changes.subscribe()
            }
        }
    )*};
}

snapshot_discovery!(StaticDiscovery, LastKnownDiscovery, RedisDiscovery);

/// Reads the heartbeats of `ids` (one `MGET`); an element without one is left out.
pub async fn read_heartbeats(
    c: &mut redis::aio::MultiplexedConnection,
    ids: &[String],
) -> redis::RedisResult<BTreeMap<String, Heartbeat>> {
    let mut beats = BTreeMap::new();
    if ids.is_empty() {
        return Ok(beats);
    }
    let keys: Vec<String> = ids.iter().map(|id| heartbeat_key(id)).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(c).await?;
    for (id, v) in ids.iter().zip(values) {
        if let Some(hb) = v.and_then(|v| serde_json::from_str::<Heartbeat>(&v).ok()) {
            beats.insert(id.clone(), hb);
        }
    }
    Ok(beats)
}

/// Reads the registry and heartbeats every `poll`, and at once on a change announcement.
async fn follow_redis(shared: Arc<Shared>, client: redis::Client, poll: Duration) {
    use futures_util::StreamExt as _;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut announcements: Option<redis::aio::PubSubStream> = None;
    loop {
        if conn.is_none() {
            match client.get_multiplexed_async_connection_with_config(&cfg).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    degrade(&shared, &e.to_string());
                    tokio::time::sleep(poll.min(Duration::from_secs(1))).await;
                    continue;
                }
            }
        }
        if announcements.is_none()
            && let Ok(Ok(mut ps)) = tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub()).await
            && ps.subscribe(REGISTRY_CHANNEL).await.is_ok()
        {
            announcements = Some(ps.into_on_message());
        }
        let Some(c) = conn.as_mut() else { continue };
        match read_registry(c, &shared).await {
            Ok(()) => shared.set_status(DiscoveryStatus::Ready),
            Err(e) => {
                degrade(&shared, &e.to_string());
                conn = None;
                announcements = None;
                continue;
            }
        }
        // Wait for the next poll, or an announcement (which refreshes at once).
        match announcements.as_mut() {
            Some(stream) => {
                tokio::select! {
                    () = tokio::time::sleep(poll) => {}
                    msg = stream.next() => if msg.is_none() { announcements = None; },
                }
            }
            None => tokio::time::sleep(poll).await,
        }
    }
}

fn degrade(shared: &Shared, reason: &str) {
    let s = shared.snapshot();
    let since = s.updated_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".to_owned());
    shared.set_status(DiscoveryStatus::Degraded(format!(
        "redis unreachable ({reason}); serving the last registry seen (version {}, updated {since})",
        s.version
    )));
}

async fn read_registry(c: &mut redis::aio::MultiplexedConnection, shared: &Shared) -> redis::RedisResult<()> {
    let body: Option<String> = redis::cmd("GET").arg(REGISTRY_KEY).query_async(c).await?;
    let registry = body.and_then(|b| match serde_json::from_str::<Registry>(&b) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, key = REGISTRY_KEY, "unreadable registry in redis; keeping the last one");
            None
        }
    });
    let ids: Vec<String> = match &registry {
        Some(r) => r.elements.iter().map(|e| e.id.clone()).collect(),
        None => shared.snapshot().elements.iter().map(|e| e.id.clone()).collect(),
    };
    let beats = read_heartbeats(c, &ids).await?;
    shared.update(|s| {
        // An older registry than the one held (a stale replica) is ignored.
        if let Some(r) = registry
            && r.version >= s.version
        {
            s.version = r.version;
            s.elements = r.elements;
        }
        s.heartbeats = beats;
    });
    Ok(())
}

/// The discovery source a role's settings name: Redis (with the last-known file), else the
/// static list, else the last-known file alone.
pub fn from_settings(
    redis: Option<&str>,
    elements: Option<&str>,
    last_known: &std::path::Path,
    probe_interval_ms: u64,
) -> anyhow::Result<std::sync::Arc<dyn Discovery>> {
    let probe = ProbeConfig { interval: Duration::from_millis(probe_interval_ms.max(100)), ..Default::default() };
    Ok(match (redis, elements) {
        (Some(url), _) => {
            if elements.is_some() {
                tracing::warn!("both redis and elements given; the registry in redis is used");
            }
            std::sync::Arc::new(RedisDiscovery::start(url, last_known, probe).map_err(anyhow::Error::msg)?)
        }
        (None, Some(list)) => {
            std::sync::Arc::new(StaticDiscovery::start(parse_element_list(list).map_err(anyhow::Error::msg)?, probe))
        }
        (None, None) => {
            tracing::warn!(file = %last_known.display(), "no --redis and no --elements: serving the last-known registry");
            std::sync::Arc::new(LastKnownDiscovery::open(last_known, probe).map_err(anyhow::Error::msg)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_of_older_elements_still_parse() {
        let old = r#"{"id":"se-1","url":"http://10.0.0.1:8081","mode":"rw","free_bytes":77,
                      "total_bytes":100,"at":"2026-11-30T11:29:57Z"}"#;
        let hb: Heartbeat = serde_json::from_str(old).unwrap();
        assert_eq!(hb.free_bytes, 77);
        assert_eq!(hb.documents, None);
        assert!(hb.workers.is_null());
        let probe: Probe = serde_json::from_str(
            r#"{"at":"2026-11-30T11:29:57Z","ok":true,"mode":"rw","free_bytes":1,"total_bytes":2}"#,
        )
        .unwrap();
        assert_eq!((probe.documents, probe.workers.is_null()), (None, true));
    }

    #[test]
    fn heartbeats_carry_documents_and_workers() {
        let hb = Heartbeat {
            id: "se-1".into(),
            url: "http://10.0.0.1:8081".into(),
            mode: "rw".into(),
            free_bytes: 1,
            total_bytes: 2,
            at: Utc::now(),
            documents: Some(12),
            workers: serde_json::json!({"disposition": {"status": "ok"}}),
        };
        let back: Heartbeat = serde_json::from_str(&serde_json::to_string(&hb).unwrap()).unwrap();
        assert_eq!(back, hb);
    }
}
