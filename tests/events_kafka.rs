//! Events on a real Kafka broker from the real `artstore storage-element` binary: every
//! acknowledged change reaches the topic (deduplicated by (file id, revision)) after the
//! element was SIGKILLed mid-ingest, and after the broker was stopped and restarted
//! mid-ingest (uploads go on meanwhile; readiness shows `events: degraded`). The shared
//! broker is the one `scripts/services.sh` starts on 127.0.0.1:9092; the outage test runs a
//! private broker of its own through `scripts/kafka.sh`. A missing broker fails the tests.

mod support;

use artstore_shared::auth::{JWKS_FILE, LocalSigner};
use artstore_shared::events::{EventBus, KafkaBus, KafkaSettings};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::Element;

type Acked = Arc<Mutex<HashSet<(String, u64)>>>;

fn bus(brokers: &str, topic: &str) -> KafkaBus {
    let mut s = KafkaSettings::new(brokers);
    s.topic = topic.to_owned();
    s.options.insert("session.timeout.ms".into(), "6000".into());
    s.options.insert("heartbeat.interval.ms".into(), "500".into());
    KafkaBus::new(s).unwrap()
}

/// Reads the topic until every acknowledged (file id, revision) was seen, or the time is up;
/// answers what is still missing.
async fn missing_on_topic(brokers: &str, topic: &str, acked: &HashSet<(String, u64)>, secs: u64) -> Vec<(String, u64)> {
    let b = bus(brokers, topic);
    let mut sub = b.subscribe(&format!("check-{}", uuid::Uuid::new_v4().simple())).await.unwrap();
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline && !acked.is_subset(&seen) {
        if let Some(d) = sub.next(Duration::from_millis(500)).await.unwrap()
            && let (Some(f), Some(r)) = (d.event.file_id, d.event.revision)
        {
            seen.insert((f.to_string(), r));
        }
    }
    acked.difference(&seen).cloned().collect()
}

/// Clients that upload and then patch, recording every acknowledged (file id, revision).
fn spawn_clients(
    base: Arc<Mutex<String>>,
    token: String,
    acked: Acked,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..4)
        .map(|c| {
            let (base, token, acked, stop) = (base.clone(), token.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let b = base.lock().unwrap().clone();
                    let (s, v) =
                        support::upload(&client, &b, &token, "e.txt", format!("client {c} doc {n}").into_bytes(), &[])
                            .await;
                    n += 1;
                    if s != 201 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    let id = v["file_id"].as_str().unwrap().to_owned();
                    acked.lock().unwrap().insert((id.clone(), 1));
                    if n % 3 == 0 {
                        let r = client
                            .patch(format!("{b}/api/v1/files/{id}"))
                            .bearer_auth(&token)
                            .json(&serde_json::json!({"description": "patched"}))
                            .send()
                            .await;
                        if let Ok(r) = r
                            && r.status() == 200
                        {
                            acked.lock().unwrap().insert((id, 2));
                        }
                    }
                }
                n
            })
        })
        .collect()
}

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    jwks: PathBuf,
    log: PathBuf,
    token: String,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let signer = LocalSigner::load_or_create(&tmp.path().join("keys")).unwrap();
    let token = signer.issue("events", &["writer".into()], Duration::from_secs(3600), chrono::Utc::now()).unwrap();
    Setup {
        root: tmp.path().join("element"),
        jwks: tmp.path().join("keys").join(JWKS_FILE),
        log: tmp.path().join("element.log"),
        token,
        _tmp: tmp,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn element_sigkilled_mid_ingest_resends_from_the_wal() {
    let s = setup();
    let brokers = "127.0.0.1:9092";
    let topic = format!("artstore.test.{}", uuid::Uuid::new_v4().simple());
    let args = ["--kafka", brokers, "--kafka-topic", &topic, "--element-id", "se-kill"];
    let client = reqwest::Client::new();
    let mut e = Element::start(&s.root, &s.jwks, &s.log, &args);
    e.wait_ready(&client).await;
    let base = Arc::new(Mutex::new(e.base.clone()));
    let acked: Acked = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = spawn_clients(base.clone(), s.token.clone(), acked.clone(), stop.clone());
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        e.kill();
        e = Element::start(&s.root, &s.jwks, &s.log, &args);
        e.wait_ready(&client).await;
        *base.lock().unwrap() = e.base.clone();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "only {} changes acknowledged", acked.len());
    let missing = missing_on_topic(brokers, &topic, &acked, 60).await;
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged changes never reached the topic: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    println!("{} acknowledged changes, all on the topic after 3 SIGKILLs", acked.len());
}

/// A Kafka broker of this test's own, through `scripts/kafka.sh` with its own folder and ports.
struct PrivateKafka {
    dir: PathBuf,
    port: u16,
    controller: u16,
}

impl PrivateKafka {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh")
    }
    fn run(&self, verb: &str) {
        let st = std::process::Command::new("bash")
            .arg(Self::script())
            .arg(verb)
            .env("ARTSTORE_KAFKA_DIR", &self.dir)
            .env("ARTSTORE_KAFKA_PORT", self.port.to_string())
            .env("ARTSTORE_KAFKA_CONTROLLER_PORT", self.controller.to_string())
            .status()
            .expect("bash scripts/kafka.sh");
        assert!(st.success(), "scripts/kafka.sh {verb} failed (a broker is needed: see scripts/services.sh)");
    }
    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(Self::script())
            .arg("stop")
            .env("ARTSTORE_KAFKA_DIR", &self.dir)
            .env("ARTSTORE_KAFKA_PORT", self.port.to_string())
            .env("ARTSTORE_KAFKA_CONTROLLER_PORT", self.controller.to_string())
            .status();
    }
}

/// The last lines of a log that are not request lines, for a failure message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains("\"message\":\"request\"")).collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

async fn events_check(client: &reqwest::Client, base: &str) -> String {
    let v: serde_json::Value = client.get(format!("{base}/health/ready")).send().await.unwrap().json().await.unwrap();
    v["checks"]["events"]["status"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_stopped_and_restarted_mid_ingest() {
    let s = setup();
    let kdir = tempfile::tempdir().unwrap();
    let k = PrivateKafka { dir: kdir.path().to_owned(), port: support::free_port(), controller: support::free_port() };
    k.run("start");
    let brokers = k.brokers();
    let topic = "artstore.events".to_owned();
    let args = ["--kafka", &brokers, "--element-id", "se-outage"];
    let client = reqwest::Client::new();
    let e = Element::start(&s.root, &s.jwks, &s.log, &args);
    e.wait_ready(&client).await;
    let base = Arc::new(Mutex::new(e.base.clone()));
    let acked: Acked = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = spawn_clients(base.clone(), s.token.clone(), acked.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;
    k.run("stop");
    let during_from = acked.lock().unwrap().len();
    // Uploads go on; readiness says events are degraded once a publish has failed, which
    // takes the producer's message timeout (10 s) after the first event the broker did not
    // take; 45 s leaves room for a CI machine running other heavy tests beside this one.
    let stopped = Instant::now();
    let deadline = stopped + Duration::from_secs(45);
    while events_check(&client, &e.base).await != "degraded" {
        assert!(
            Instant::now() < deadline,
            "events never showed degraded with the broker down ({} uploads acknowledged since the stop); element log (tail):\n{}",
            acked.lock().unwrap().len() - during_from,
            log_tail(&s.log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let to_degraded = stopped.elapsed();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = acked.lock().unwrap().len() - during_from;
    assert!(during > 5, "uploads stalled while the broker was down ({during})");
    k.run("start");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let missing = missing_on_topic(&brokers, &topic, &acked, 90).await;
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged changes never reached the topic; events: {}; element log (tail):\n{}",
        missing.len(),
        acked.len(),
        events_check(&client, &e.base).await,
        log_tail(&s.log)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while events_check(&client, &e.base).await != "ready" {
        assert!(Instant::now() < deadline, "events never became ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{} acknowledged changes ({during} while the broker was down), all on the topic; events degraded {:.1} s after the stop",
        acked.len(),
        to_degraded.as_secs_f64()
    );
    for l in std::fs::read_to_string(&s.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("outbox") || l.contains("kafka producer"))
    {
        println!("{l}");
    }
}
