//! One test suite run against every `EventBus`: the in-process bus and Kafka (the real
//! broker on 127.0.0.1:9092 that `scripts/services.sh` starts; a missing broker fails
//! these tests, in CI and out). Each Kafka test uses a topic of its own.

use artstore_shared::events::{Event, EventBus, InProcessBus, KafkaBus, KafkaSettings};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

fn event(file: Uuid, revision: u64) -> Event {
    Event {
        kind: if revision == 1 { "ingested" } else { "metadata_updated" }.into(),
        file_id: Some(file),
        document_id: Some(file),
        version: Some(1),
        element_id: "se-1".into(),
        revision: Some(revision),
        at: chrono::Utc::now(),
        sidecar: Some(serde_json::json!({"file_id": file, "revision": revision})),
        mode: None,
    }
}

pub fn kafka_bus() -> KafkaBus {
    let mut s = KafkaSettings::new(&std::env::var("ARTSTORE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into()));
    s.topic = format!("artstore.test.{}", Uuid::new_v4().simple());
    // Consumers join quickly and notice a dead member soon.
    s.options.insert("session.timeout.ms".into(), "6000".into());
    s.options.insert("heartbeat.interval.ms".into(), "500".into());
    KafkaBus::new(s).unwrap()
}

async fn drain(sub: &mut Box<dyn artstore_shared::events::Subscription>, n: usize, wait: Duration) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    while out.len() < n && tokio::time::Instant::now() < deadline {
        if let Some(d) = sub.next(Duration::from_millis(500)).await.unwrap() {
            out.push(d.event);
        }
    }
    out
}

/// The suite.
async fn suite(bus: &dyn EventBus) {
    let files: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let mut all = Vec::new();
    for rev in 1..=7 {
        for f in &files {
            all.push(event(*f, rev));
        }
    }
    // Published in two batches; the bus must acknowledge.
    bus.publish(&all[..10]).await.expect("publish");
    bus.publish(&all[10..]).await.expect("publish");

    let mut sub = bus.subscribe("g1").await.unwrap();
    let got = drain(&mut sub, all.len(), Duration::from_secs(60)).await;
    assert_eq!(got.len(), all.len(), "{}: every event delivered", bus.name());
    // In order per file.
    let mut last: HashMap<Uuid, u64> = HashMap::new();
    for e in &got {
        let f = e.file_id.unwrap();
        let r = e.revision.unwrap();
        assert!(last.get(&f).is_none_or(|p| *p < r), "{}: revisions of {f} out of order", bus.name());
        last.insert(f, r);
    }
    assert_eq!(got, all, "{}: events arrive as published", bus.name());

    // Commit half-way: a new member of the group starts after the commit.
    drop(sub);
    let mut sub = bus.subscribe("g2").await.unwrap();
    let first = drain(&mut sub, 10, Duration::from_secs(60)).await;
    assert_eq!(first, all[..10]);
    sub.commit().await.unwrap();
    let _uncommitted = drain(&mut sub, 3, Duration::from_secs(30)).await;
    drop(sub);
    let mut again = bus.subscribe("g2").await.unwrap();
    let rest = drain(&mut again, all.len() - 10, Duration::from_secs(60)).await;
    assert_eq!(rest, all[10..], "{}: resumes right after the commit (uncommitted ones again)", bus.name());
    assert!(again.next(Duration::from_millis(300)).await.unwrap().is_none(), "nothing more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_in_process() {
    suite(&InProcessBus::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_kafka() {
    suite(&kafka_bus()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_down_fails_publish_in_time() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut s = KafkaSettings::new(&format!("127.0.0.1:{port}"));
    s.publish_timeout = Duration::from_secs(2);
    let bus = KafkaBus::new(s).unwrap();
    let started = std::time::Instant::now();
    let r = bus.publish(&[event(Uuid::now_v7(), 1)]).await;
    assert!(r.is_err(), "a broker that is not there acknowledges nothing");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn in_process_bus_keeps_the_newest() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let bus = InProcessBus::new(5);
        let f = Uuid::now_v7();
        let evs: Vec<Event> = (1..=8).map(|r| event(f, r)).collect();
        bus.publish(&evs).await.unwrap();
        let mut sub = bus.subscribe("late").await.unwrap();
        let got = drain(&mut sub, 5, Duration::from_secs(1)).await;
        assert_eq!(got.first().and_then(|e| e.revision), Some(4), "the oldest kept");
        assert_eq!(got.len(), 5);
    });
}

#[test]
fn kafka_options_parse() {
    let o = artstore_shared::events::parse_kafka_options("security.protocol=SASL_SSL, sasl.mechanism=SCRAM-SHA-512")
        .unwrap();
    assert_eq!(o["security.protocol"], "SASL_SSL");
    assert!(artstore_shared::events::parse_kafka_options("nonsense").is_err());
}
