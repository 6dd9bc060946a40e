//! One test suite run against every `Discovery` source (static list, last-known file,
//! Redis), plus what only Redis does: registry changes, heartbeats, an outage served from
//! the last-known file (also after a restart), and recovery. Redis is a private
//! `redis-server` on a free port (installed by `scripts/services.sh`; missing fails).

use artstore_shared::discovery::{
    Discovery, DiscoveryStatus, ElementView, Heartbeat, LastKnownDiscovery, ProbeConfig, REGISTRY_CHANNEL,
    REGISTRY_KEY, RedisDiscovery, Registry, RegistryElement, Snapshot, StaticDiscovery, heartbeat_key, save_snapshot,
};
use axum::routing::get;
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A stand-in element: answers `/health/ready` with its mode and free space, until stopped.
struct FakeElement {
    url: String,
    mode: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeElement {
    async fn start(mode: &str, free: u64) -> FakeElement {
        let mode = Arc::new(Mutex::new(mode.to_owned()));
        let m = mode.clone();
        let app = axum::Router::new().route(
            "/health/ready",
            get(move || {
                let mode = m.lock().unwrap().clone();
                async move {
                    axum::Json(json!({"status": "ready", "element": {"mode": mode, "free_bytes": free, "total_bytes": free * 2}}))
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(l, app).await.unwrap();
        });
        FakeElement { url, mode, task }
    }
    fn set_mode(&self, m: &str) {
        *self.mode.lock().unwrap() = m.to_owned();
    }
    fn stop(&self) {
        self.task.abort();
    }
}

fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}")
}

fn probe_cfg() -> ProbeConfig {
    ProbeConfig { interval: Duration::from_millis(200), stale_after: Duration::from_secs(5), ..Default::default() }
}

fn registry_element(id: &str, url: &str, mode: &str) -> RegistryElement {
    RegistryElement {
        id: id.to_owned(),
        url: url.to_owned(),
        mode: mode.to_owned(),
        capacity_bytes: 0,
        weight: 1,
        dc: String::new(),
        labels: Default::default(),
    }
}

async fn eventually<F: FnMut() -> bool>(what: &str, secs: u64, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn find(d: &dyn Discovery, id: &str) -> Option<ElementView> {
    d.element(id)
}

/// How each source is set up from the same list of (id, url, registry mode).
#[derive(Clone, Copy, Debug)]
enum Source {
    Static,
    LastKnown,
    Redis,
}

struct Fixture {
    discovery: Box<dyn Discovery>,
    _redis: Option<PrivateRedis>,
    _dir: tempfile::TempDir,
}

async fn make(source: Source, elements: &[(&str, &str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registry.json");
    let registry: Vec<RegistryElement> = elements.iter().map(|(id, url, m)| registry_element(id, url, m)).collect();
    match source {
        Source::Static => Fixture {
            discovery: Box::new(StaticDiscovery::start(
                elements.iter().map(|(id, url, _)| (id.to_string(), url.to_string())).collect(),
                probe_cfg(),
            )),
            _redis: None,
            _dir: dir,
        },
        Source::LastKnown => {
            save_snapshot(&file, &Snapshot { version: 3, elements: registry, ..Default::default() }).unwrap();
            Fixture {
                discovery: Box::new(LastKnownDiscovery::open(&file, probe_cfg()).unwrap()),
                _redis: None,
                _dir: dir,
            }
        }
        Source::Redis => {
            let redis = PrivateRedis::start().await;
            publish(&redis.url(), 1, registry).await;
            Fixture {
                discovery: Box::new(RedisDiscovery::start(&redis.url(), &file, probe_cfg()).unwrap()),
                _redis: Some(redis),
                _dir: dir,
            }
        }
    }
}

async fn publish(url: &str, version: u64, elements: Vec<RegistryElement>) {
    let mut c = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    let reg = Registry { version, published_at: chrono::Utc::now(), elements };
    let () = redis::cmd("SET")
        .arg(REGISTRY_KEY)
        .arg(serde_json::to_string(&reg).unwrap())
        .query_async(&mut c)
        .await
        .unwrap();
    let _: i64 = redis::cmd("PUBLISH").arg(REGISTRY_CHANNEL).arg(version).query_async(&mut c).await.unwrap();
}

/// The suite: every source lists the elements and tells up from down, mode and free space.
async fn suite(source: Source) {
    let a = FakeElement::start("edit", 1000).await;
    let b = FakeElement::start("rw", 2000).await;
    let dead = dead_url();
    let f = make(source, &[("a", &a.url, "edit"), ("b", &b.url, "rw"), ("c", &dead, "edit")]).await;
    let d = f.discovery.as_ref();
    let mut changes = d.changed();
    let settled = || {
        let v = d.elements();
        v.len() == 3 && v[0].up && v[1].up && !v[2].up
    };
    // A fast source may have seen everything before this test subscribed: then there is
    // no change left to announce.
    let settled_before = settled();
    eventually(&format!("{source:?}: a and b up, c down"), 10, settled).await;
    let v = d.elements();
    assert_eq!(v.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"], "{source:?}: ordered by id");
    assert_eq!((v[0].url.as_str(), v[0].mode.as_str(), v[0].free_bytes), (a.url.as_str(), "edit", Some(1000)));
    assert_eq!((v[1].mode.as_str(), v[1].free_bytes, v[1].total_bytes), ("rw", Some(2000), Some(4000)));
    assert!(v[0].seen_at.is_some() && v[2].seen_at.is_none());
    assert!(settled_before || changes.has_changed().unwrap(), "{source:?}: health changes are announced");
    changes.mark_unchanged();

    // The element switched to ro: the stricter mode wins at once (the registry may lag).
    b.set_mode("ro");
    eventually(&format!("{source:?}: b shows ro"), 10, || find(d, "b").is_some_and(|e| e.mode == "ro")).await;
    assert!(changes.has_changed().unwrap(), "{source:?}: a mode change is announced");
    // An element that stops answering is down without waiting for it to go stale.
    a.stop();
    eventually(&format!("{source:?}: a down"), 10, || find(d, "a").is_some_and(|e| !e.up)).await;
    assert!(find(d, "zzz").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_static() {
    suite(Source::Static).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_last_known() {
    suite(Source::LastKnown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_redis() {
    suite(Source::Redis).await;
}

#[test]
fn element_lists_parse_and_bad_ones_are_named() {
    let l = artstore_shared::discovery::parse_element_list("se-1=http://127.0.0.1:8081/, se-2=https://x:1").unwrap();
    assert_eq!(
        l,
        [("se-1".to_owned(), "http://127.0.0.1:8081".to_owned()), ("se-2".to_owned(), "https://x:1".to_owned())]
    );
    let e = artstore_shared::discovery::parse_element_list("se-1").unwrap_err();
    assert!(e.contains("se-1") && e.contains("ID=URL"), "{e}");
    assert!(artstore_shared::discovery::parse_element_list("se-1=ftp://x").is_err());
}

#[test]
fn a_broken_last_known_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("registry.json");
    std::fs::write(&p, "{not json").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _g = rt.enter();
    let e = LastKnownDiscovery::open(&p, probe_cfg()).unwrap_err();
    assert!(e.contains("registry.json"), "{e}");
}

/// The last-known file is written after the registry changed in memory: it follows soon.
async fn file_follows(p: &Path, version: u64, elements: usize) {
    let at = |s: Option<Snapshot>| s.is_some_and(|s| s.version == version && s.elements.len() == elements);
    let what = format!("the last-known file at version {version} with {elements} elements");
    eventually(&what, 5, || at(std::fs::read(p).ok().and_then(|b| serde_json::from_slice(&b).ok()))).await;
}

/// Redis only: changes arrive, heartbeats give health, the last-known file follows every
/// registry change, an outage is served from it (also by a restarted role), and changes
/// are picked up again when Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_changes_outage_restart_and_recovery() {
    let a = FakeElement::start("edit", 10).await;
    let mut redis = PrivateRedis::start().await;
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registry.json");
    publish(&url, 1, vec![registry_element("a", &a.url, "edit")]).await;
    // Probes are slowed down so that health here comes from heartbeats.
    let cfg =
        ProbeConfig { interval: Duration::from_secs(3600), stale_after: Duration::from_secs(30), ..Default::default() };
    let d = RedisDiscovery::start(&url, &file, cfg.clone()).unwrap();
    eventually("ready with version 1", 10, || d.status() == DiscoveryStatus::Ready && d.version() == 1).await;
    file_follows(&file, 1, 1).await;

    // A heartbeat (no probe has succeeded yet beyond the first) makes the element up with its free space.
    let mut c = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let hb = Heartbeat {
        id: "b".into(),
        url: dead_url(),
        mode: "rw".into(),
        free_bytes: 77,
        total_bytes: 100,
        at: chrono::Utc::now(),
        documents: None,
        workers: serde_json::Value::Null,
    };
    let () = redis::cmd("SET")
        .arg(heartbeat_key("b"))
        .arg(serde_json::to_string(&hb).unwrap())
        .query_async(&mut c)
        .await
        .unwrap();
    let mut changes = d.changed();
    changes.mark_unchanged();
    publish(&url, 2, vec![registry_element("a", &a.url, "edit"), registry_element("b", &hb.url, "rw")]).await;
    eventually("version 2 with b", 5, || {
        d.version() == 2 && d.element("b").is_some_and(|b| b.up && b.free_bytes == Some(77))
    })
    .await;
    assert!(changes.has_changed().unwrap());
    file_follows(&file, 2, 2).await;
    // An older registry (a stale replica) never replaces a newer one.
    publish(&url, 1, vec![]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(d.elements().len(), 2);

    // Redis goes away: degraded, still serving version 2.
    redis.kill();
    eventually("degraded", 10, || matches!(d.status(), DiscoveryStatus::Degraded(_))).await;
    let DiscoveryStatus::Degraded(reason) = d.status() else { unreachable!() };
    assert!(reason.contains("redis") && reason.contains("version 2"), "{reason}");
    assert_eq!(d.elements().len(), 2);
    drop(d);

    // A restart with Redis still down starts from the last-known file.
    let d = RedisDiscovery::start(&url, &file, ProbeConfig { interval: Duration::from_millis(200), ..cfg }).unwrap();
    assert_eq!(d.version(), 2);
    assert_eq!(d.elements().iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    eventually("a is up from probes with redis down", 10, || d.element("a").is_some_and(|e| e.up)).await;
    assert!(matches!(d.status(), DiscoveryStatus::Degraded(_)));

    // Redis is back (empty): the registry is republished and picked up.
    redis.restart().await;
    publish(&url, 3, vec![registry_element("a", &a.url, "rw")]).await;
    eventually("version 3 after redis is back", 10, || d.status() == DiscoveryStatus::Ready && d.version() == 3).await;
    assert_eq!(d.elements().len(), 1);
    assert_eq!(d.element("a").unwrap().mode, "rw", "the stricter of registry (rw) and element (edit)");
    file_follows(&file, 3, 1).await;
}

struct PrivateRedis {
    child: Option<Child>,
    port: u16,
}

impl PrivateRedis {
    async fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = PrivateRedis { child: None, port };
        r.restart().await;
        r
    }
    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/services.sh)");
        self.child = Some(child);
        let url = self.url();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(c) = redis::Client::open(url.as_str())
                && c.get_multiplexed_async_connection().await.is_ok()
            {
                return;
            }
            assert!(Instant::now() < deadline, "private redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
