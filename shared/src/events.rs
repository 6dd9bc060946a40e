//! Events: what changed in the archive, carried from the storage elements (which publish
//! from their WAL, the outbox) to the roles that follow them (the query role's index).
//! One `EventBus` trait, two implementations passing one test suite: Kafka through
//! `rdkafka`, and an in-process bus (standalone, and whenever no broker is configured).
//! Delivery is at least once and in order per file; consumers are idempotent on
//! (file id, revision).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// The default topic.
pub const DEFAULT_TOPIC: &str = "artstore.events";

/// Every kind of event.
pub const EVENT_TYPES: &[&str] = &[
    "ingested",
    "metadata_updated",
    "deleted",
    "disposed",
    "archived",
    "restored",
    "legal_hold_changed",
    "retention_extended",
    "mode_changed",
];

/// One event. Document events carry the sidecar as it was at `revision`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// One of [`EVENT_TYPES`].
    #[serde(rename = "type")]
    pub kind: String,
    pub file_id: Option<Uuid>,
    pub document_id: Option<Uuid>,
    pub version: Option<u32>,
    pub element_id: String,
    /// The sidecar revision the event is about.
    pub revision: Option<u64>,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<serde_json::Value>,
    /// For `mode_changed`: the element's new mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl Event {
    /// The message key: the file id (so one file's events stay in order), else the element.
    pub fn key(&self) -> String {
        self.file_id.map(|f| f.to_string()).unwrap_or_else(|| self.element_id.clone())
    }

    /// What consumers deduplicate on.
    pub fn identity(&self) -> (Option<Uuid>, Option<u64>, String) {
        (self.file_id, self.revision, self.kind.clone())
    }
}

/// Why the bus failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker cannot be reached or did not acknowledge in time; retry later.
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    /// A message on the topic is not an event.
    #[error("unreadable event at {position}: {reason}")]
    Unreadable { position: String, reason: String },
    /// The settings are wrong (a bad broker list or option).
    #[error("event bus misconfigured: {0}")]
    Config(String),
}

/// One event delivered to a subscriber, with where it sits on the bus.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub event: Event,
    /// `partition/offset` (Kafka) or the sequence (in-process), for logs.
    pub position: String,
}

/// A consumer group's view of the bus.
#[async_trait]
pub trait Subscription: Send {
    /// The next event, or `None` when nothing arrived within `wait`.
    async fn next(&mut self, wait: Duration) -> Result<Option<Delivered>, BusError>;
    /// Commits everything delivered so far: a new subscription of the same group starts
    /// after it. Call only once what was delivered is safely applied.
    async fn commit(&mut self) -> Result<(), BusError>;
    /// Events this group had not read were dropped by the bus (retention) before it could
    /// read them: says how, once. A consumer that keeps derived state must then rebuild it.
    fn take_gap(&mut self) -> Option<String> {
        None
    }
}

/// Where events go and come from.
#[async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Publishes in order; `Ok` only when the bus acknowledged every event.
    async fn publish(&self, events: &[Event]) -> Result<(), BusError>;
    /// Joins a consumer group; it starts after the group's last commit (from the oldest
    /// kept event for a new group).
    async fn subscribe(&self, group: &str) -> Result<Box<dyn Subscription>, BusError>;
    /// A short name for logs and health (`kafka`, `in-process`).
    fn name(&self) -> &'static str;
}

// ---------------------------------------------------------------------------------------
// In-process
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct InProcessLog {
    events: VecDeque<Event>,
    /// The sequence of `events[0]`.
    first: u64,
    committed: HashMap<String, u64>,
}

/// The bus of one process: a bounded log in memory with committed positions per group.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    log: Arc<Mutex<InProcessLog>>,
    notify: Arc<tokio::sync::Notify>,
    capacity: usize,
}

impl Default for InProcessBus {
    /// Keeps the newest 10,000 events (a few tens of MiB at most): enough for a consumer in
    /// the same process to follow; one that falls further behind rebuilds from the files.
    fn default() -> Self {
        Self::new(10_000)
    }
}

impl InProcessBus {
    /// A bus keeping the newest `capacity` events (older ones are dropped: a group that
    /// fell that far behind starts from the oldest kept and must rebuild what it missed).
    pub fn new(capacity: usize) -> Self {
        Self { log: Arc::default(), notify: Arc::default(), capacity: capacity.max(1) }
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, events: &[Event]) -> Result<(), BusError> {
        {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            for e in events {
                log.events.push_back(e.clone());
                while log.events.len() > self.capacity {
                    log.events.pop_front();
                    log.first += 1;
                }
            }
        }
        self.notify.notify_waiters();
        Ok(())
    }

    async fn subscribe(&self, group: &str) -> Result<Box<dyn Subscription>, BusError> {
        let next = self.log.lock().unwrap_or_else(|e| e.into_inner()).committed.get(group).copied().unwrap_or(0);
        Ok(Box::new(InProcessSubscription { bus: self.clone(), group: group.to_owned(), next, gap: None }))
    }

    fn name(&self) -> &'static str {
        "in-process"
    }
}

struct InProcessSubscription {
    bus: InProcessBus,
    group: String,
    next: u64,
    gap: Option<String>,
}

#[async_trait]
impl Subscription for InProcessSubscription {
    async fn next(&mut self, wait: Duration) -> Result<Option<Delivered>, BusError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.bus.notify.notified();
            {
                let log = self.bus.log.lock().unwrap_or_else(|e| e.into_inner());
                if self.next < log.first {
                    tracing::warn!(group = %self.group, lost = log.first - self.next, "in-process bus dropped events this group had not read");
                    self.gap = Some(format!(
                        "the in-process bus dropped {} event(s) group {} had not read",
                        log.first - self.next,
                        self.group
                    ));
                    self.next = log.first;
                }
                if let Some(e) = log.events.get((self.next - log.first) as usize) {
                    let d = Delivered { event: e.clone(), position: self.next.to_string() };
                    self.next += 1;
                    return Ok(Some(d));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn commit(&mut self) -> Result<(), BusError> {
        self.bus.log.lock().unwrap_or_else(|e| e.into_inner()).committed.insert(self.group.clone(), self.next);
        Ok(())
    }

    fn take_gap(&mut self) -> Option<String> {
        self.gap.take()
    }
}

// ---------------------------------------------------------------------------------------
// Kafka
// ---------------------------------------------------------------------------------------

/// How to reach Kafka. `options` are librdkafka properties passed through as they are
/// (e.g. `security.protocol=SASL_SSL`, `sasl.mechanism=SCRAM-SHA-512`, `sasl.username`,
/// `sasl.password`, `ssl.ca.location`), so a deployment points at its own cluster with
/// its own TLS and SASL settings.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    pub options: BTreeMap<String, String>,
    /// How long a publish waits for the broker's acknowledgement before giving up.
    pub publish_timeout: Duration,
}

impl KafkaSettings {
    pub fn new(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            topic: DEFAULT_TOPIC.to_owned(),
            options: BTreeMap::new(),
            publish_timeout: Duration::from_secs(10),
        }
    }

    fn client_config(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c
    }
}

/// Parses `key=value,key=value` librdkafka options.
pub fn parse_kafka_options(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| format!("kafka option {p:?} is not key=value"))
        })
        .collect()
}

/// Kafka through rdkafka: an idempotent producer (acks from all in-sync replicas, order
/// kept per partition across retries) and consumer groups that commit only when told.
pub struct KafkaBus {
    settings: KafkaSettings,
    /// Replaced when it failed for good or kept failing (see [`KafkaBus::publish`]).
    producer: std::sync::RwLock<rdkafka::producer::FutureProducer>,
    /// Since when every publish failed (None: the last one succeeded).
    failing_since: std::sync::Mutex<Option<std::time::Instant>>,
}

/// A producer that has failed every publish for this long is replaced by a new one.
const REPLACE_FAILING_PRODUCER_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("brokers", &self.settings.brokers)
            .field("topic", &self.settings.topic)
            .finish()
    }
}

impl KafkaBus {
    /// A producer for the topic (nothing is contacted yet: a broker that is down now only
    /// makes publishing fail until it is back).
    pub fn new(settings: KafkaSettings) -> Result<Self, BusError> {
        let producer = Self::producer(&settings)?;
        Ok(Self { settings, producer: std::sync::RwLock::new(producer), failing_since: Default::default() })
    }

    fn producer(settings: &KafkaSettings) -> Result<rdkafka::producer::FutureProducer, BusError> {
        let mut c = settings.client_config();
        let timeout = settings.publish_timeout.as_millis().to_string();
        // A produce request in flight is failed after `request.timeout.ms` (librdkafka's
        // default: 30 s), not after the message timeout: a broker that stopped mid-request
        // without closing the connection kept a publish — and the element's `events`
        // readiness — waiting up to 30 s instead of the publish timeout.
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", &timeout)
            .set("request.timeout.ms", &timeout)
            .set("linger.ms", "5");
        c.create().map_err(|e| BusError::Config(e.to_string()))
    }

    /// After a failed publish. An idempotent producer can be left unable to send for good:
    /// librdkafka declares a fatal error, or (seen with a broker restarted while the producer
    /// was still acquiring its producer id under load) it keeps retrying a broker state that
    /// no longer exists and every send times out. Either way it is replaced by a new
    /// producer (a new producer id) — at once when fatal, after
    /// [`REPLACE_FAILING_PRODUCER_AFTER`] of failures otherwise. The caller resends the whole
    /// batch from its WAL; consumers take duplicates idempotently.
    fn after_failure(&self, used: &rdkafka::producer::FutureProducer) {
        use rdkafka::producer::Producer as _;
        let now = std::time::Instant::now();
        let mut since = self.failing_since.lock().unwrap_or_else(|e| e.into_inner());
        let first = *since.get_or_insert(now);
        let fatal = used.client().fatal_error();
        if fatal.is_none() && now.duration_since(first) < REPLACE_FAILING_PRODUCER_AFTER {
            return;
        }
        match Self::producer(&self.settings) {
            Ok(fresh) => {
                tracing::warn!(fatal = ?fatal, failing_for = ?now.duration_since(first), "kafka producer replaced by a new one");
                *self.producer.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                *since = Some(now);
            }
            Err(e) => tracing::error!(error = %e, "a failing kafka producer cannot be replaced"),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }
}

#[async_trait]
impl EventBus for KafkaBus {
    async fn publish(&self, events: &[Event]) -> Result<(), BusError> {
        use rdkafka::producer::FutureRecord;
        let encoded: Vec<(String, Vec<u8>)> =
            events.iter().map(|e| (e.key(), serde_json::to_vec(e).unwrap_or_default())).collect();
        // Enqueued in order (each future enqueues on its first poll, and join_all polls in
        // order); the idempotent producer keeps that order per partition across retries.
        let producer = self.producer.read().unwrap_or_else(|e| e.into_inner()).clone();
        let sends = encoded.iter().map(|(k, v)| {
            producer.send(
                FutureRecord::to(&self.settings.topic).key(k.as_str()).payload(v.as_slice()),
                rdkafka::util::Timeout::After(self.settings.publish_timeout),
            )
        });
        for r in futures_util::future::join_all(sends).await {
            if let Err((e, _)) = r {
                self.after_failure(&producer);
                return Err(BusError::Unavailable(e.to_string()));
            }
        }
        *self.failing_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }

    async fn subscribe(&self, group: &str) -> Result<Box<dyn Subscription>, BusError> {
        use rdkafka::consumer::Consumer as _;
        let mut c = self.settings.client_config();
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("allow.auto.create.topics", "true")
            .set("topic.metadata.refresh.interval.ms", "2000")
            // A consumer that died without leaving (SIGKILL, a lost machine) holds its
            // partitions until its session times out, and its restarted successor waits that
            // long for them: 10 s rather than librdkafka's 45 s. Heartbeats come from
            // librdkafka's own thread, so a busy role does not miss them.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "3000");
        // Test and operator overrides win (e.g. a shorter session timeout).
        for (k, v) in &self.settings.options {
            c.set(k, v);
        }
        let consumer: rdkafka::consumer::StreamConsumer = c.create().map_err(|e| BusError::Config(e.to_string()))?;
        consumer.subscribe(&[&self.settings.topic]).map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(Box::new(KafkaSubscription {
            consumer,
            topic: self.settings.topic.clone(),
            delivered: HashMap::new(),
            checked: Default::default(),
            gap: None,
        }))
    }

    fn name(&self) -> &'static str {
        "kafka"
    }
}

struct KafkaSubscription {
    consumer: rdkafka::consumer::StreamConsumer,
    topic: String,
    /// The next offset to commit, per partition.
    delivered: HashMap<i32, i64>,
    /// Partitions whose first message was checked against the group's committed offset.
    checked: std::collections::HashSet<i32>,
    gap: Option<String>,
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self, wait: Duration) -> Result<Option<Delivered>, BusError> {
        use rdkafka::Message as _;
        let m = match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_) => return Ok(None),
            Ok(Err(e)) => return Err(BusError::Unavailable(e.to_string())),
            Ok(Ok(m)) => m,
        };
        let position = format!("{}/{}", m.partition(), m.offset());
        if self.checked.insert(m.partition()) {
            // The first message of a partition: if the group had committed an offset and
            // this message comes after it, the events between were deleted by retention
            // (the consumer was reset to the oldest kept).
            use rdkafka::consumer::Consumer as _;
            let mut tpl = rdkafka::TopicPartitionList::new();
            tpl.add_partition(&self.topic, m.partition());
            if let Ok(c) = self.consumer.committed_offsets(tpl, Duration::from_secs(5))
                && let Some(rdkafka::Offset::Offset(committed)) =
                    c.find_partition(&self.topic, m.partition()).map(|e| e.offset())
                && m.offset() > committed
            {
                self.gap = Some(format!(
                    "partition {} of {}: the group's position {committed} is older than the oldest kept event {}",
                    m.partition(),
                    self.topic,
                    m.offset()
                ));
            }
        }
        self.delivered.insert(m.partition(), m.offset() + 1);
        let payload = m.payload().unwrap_or_default();
        let event = serde_json::from_slice(payload)
            .map_err(|e| BusError::Unreadable { position: position.clone(), reason: e.to_string() })?;
        Ok(Some(Delivered { event, position }))
    }

    async fn commit(&mut self) -> Result<(), BusError> {
        use rdkafka::consumer::Consumer as _;
        if self.delivered.is_empty() {
            return Ok(());
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (p, o) in &self.delivered {
            tpl.add_partition_offset(&self.topic, *p, rdkafka::Offset::Offset(*o))
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
        }
        self.consumer
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }

    fn take_gap(&mut self) -> Option<String> {
        self.gap.take()
    }
}
