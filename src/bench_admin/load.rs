//! The load of `bench admin`, the same for ArtStore and etcd: timed rounds of unique writes
//! from N clients with a keep-alive connection each, the history pre-load with its progress
//! line, and the latency figures both systems are reported in.

use serde_json::{Value, json};
use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One write a client makes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Change<'a> {
    /// A new record under a key no other write uses: live state grows by one.
    New(&'a str),
    /// The n-th change of the one history record: history grows, live state does not.
    History(u64),
}

/// A system under test, as its clients write to it.
pub(super) trait Writer: Clone + Send + Sync + 'static {
    /// True when the system acknowledged the write as committed.
    fn write(&self, http: &reqwest::Client, change: Change<'_>) -> impl Future<Output = bool> + Send;
}

/// The record both systems store for a new key: ArtStore's retention-policy body, which
/// etcd stores as the value (about 80 bytes).
pub(super) fn policy_body(name: &str) -> Value {
    json!({"name": name, "term": "P1Y", "mode": "governance", "disposition": "review"})
}

/// The changing part of the n-th history change.
pub(super) fn history_description(n: u64) -> String {
    format!("history change {n}")
}

/// Who leads and in which term, as one poll saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LeaderView {
    pub id: u64,
    pub term: Option<u64>,
}

/// Elections between two polls: the term's advance when both report a term, else 1 when the
/// leader is another node.
pub(super) fn leader_changes(before: LeaderView, after: LeaderView) -> u64 {
    match (before.term, after.term) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => u64::from(before.id != after.id),
    }
}

/// A u64 that JSON carries as a number or, as etcd's gateway does, as a string.
pub(super) fn json_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

/// `n` HTTP clients, each its own pool of one keep-alive connection.
pub(super) fn clients(n: usize) -> anyhow::Result<Vec<reqwest::Client>> {
    (0..n)
        .map(|_| {
            Ok(reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(1)
                .tcp_nodelay(true)
                .build()?)
        })
        .collect()
}

/// What one round (or several, merged) measured.
#[derive(Debug, Default)]
pub(super) struct Round {
    /// Latencies of the acknowledged writes, sorted.
    lat: Vec<Duration>,
    failed: u64,
    elapsed: Duration,
}

impl Round {
    pub(super) fn merge(rounds: &[Round]) -> Round {
        let mut lat: Vec<Duration> = rounds.iter().flat_map(|r| r.lat.iter().copied()).collect();
        lat.sort_unstable();
        Round { lat, failed: rounds.iter().map(|r| r.failed).sum(), elapsed: rounds.iter().map(|r| r.elapsed).sum() }
    }

    pub(super) fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.lat.len() as f64 / s } else { 0.0 }
    }

    pub(super) fn p(&self, q: f64) -> Duration {
        percentile(&self.lat, q)
    }

    /// `N writes  R/s  p50 …  p99 …  p99.9 …  max …  F failed`
    pub(super) fn figures(&self) -> String {
        format!(
            "{:>7} writes {:>6.0}/s  p50 {}  p99 {}  p99.9 {}  max {}  {} failed",
            self.lat.len(),
            self.rate(),
            ms(self.p(0.5)),
            ms(self.p(0.99)),
            ms(self.p(0.999)),
            ms(self.lat.last().copied().unwrap_or_default()),
            self.failed
        )
    }
}

/// Nearest-rank percentile of sorted latencies (zero when there are none).
pub(super) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(super) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Every client writes new keys `{tag}-{client}-{i}` back to back for `seconds`.
pub(super) async fn round<W: Writer>(
    w: &W,
    clients: &[reqwest::Client],
    seconds: u64,
    tag: &str,
) -> anyhow::Result<Round> {
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let mut tasks = Vec::with_capacity(clients.len());
    for (c, http) in clients.iter().enumerate() {
        let (w, http, prefix) = (w.clone(), http.clone(), format!("{tag}-{c}"));
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut failed, mut i) = (Vec::new(), 0u64, 0u64);
            while Instant::now() < end {
                i += 1;
                let key = format!("{prefix}-{i}");
                let t = Instant::now();
                if w.write(&http, Change::New(&key)).await {
                    lat.push(t.elapsed());
                } else {
                    failed += 1;
                }
            }
            (lat, failed)
        }));
    }
    let mut r = Round::default();
    for t in tasks {
        let (lat, failed) = t.await?;
        r.lat.extend(lat);
        r.failed += failed;
    }
    r.elapsed = started.elapsed();
    r.lat.sort_unstable();
    Ok(r)
}

/// What a history pre-load did.
#[derive(Debug)]
pub(super) struct Preload {
    pub took: Duration,
    pub failed: u64,
}

/// `n` history changes from `concurrency` clients, with a progress line on stdout.
pub(super) async fn preload<W: Writer>(w: &W, label: &str, n: u64, concurrency: usize) -> anyhow::Result<Preload> {
    let started = Instant::now();
    let (next, done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = tokio::task::JoinSet::new();
    for http in clients(concurrency)? {
        let (w, next, done, failed) = (w.clone(), next.clone(), done.clone(), failed.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                if !w.write(&http, Change::History(i)).await {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let progress = Progress { label, n, started, terminal: std::io::stdout().is_terminal() };
    let counts = || (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let (mut shown, mut tick) = (0, tokio::time::interval(Duration::from_millis(250)));
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(r) => r?,
                None => break,
            },
            _ = tick.tick() => shown = progress.show(shown, counts()),
        }
    }
    let took = started.elapsed();
    progress.show(shown, counts());
    if progress.terminal {
        println!();
    }
    Ok(Preload { took, failed: failed.load(Ordering::Relaxed) })
}

struct Progress<'a> {
    label: &'a str,
    n: u64,
    started: Instant,
    terminal: bool,
}

impl Progress<'_> {
    /// Rewrites the line in place on a terminal; elsewhere prints a line at each tenth passed.
    /// Takes and returns the last tenth printed.
    fn show(&self, shown: u64, (done, failed): (u64, u64)) -> u64 {
        let tenth = tenths(done, self.n);
        if !self.terminal && tenth <= shown {
            return shown;
        }
        let secs = self.started.elapsed().as_secs_f64();
        let line = format!(
            "history    {}: {done} / {} ({:.0} %), {:.0}/s, {failed} failed, {secs:.0} s",
            self.label,
            self.n,
            done as f64 * 100.0 / self.n.max(1) as f64,
            if secs > 0.0 { done as f64 / secs } else { 0.0 },
        );
        let mut out = std::io::stdout().lock();
        let _ = if self.terminal { write!(out, "\r{line}\x1b[K") } else { writeln!(out, "{line}") };
        let _ = out.flush();
        tenth
    }
}

/// How many whole tenths of `n` are done.
fn tenths(done: u64, n: u64) -> u64 {
    (done.min(n) * 10).checked_div(n).unwrap_or(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn percentile_is_nearest_rank() {
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
        let v: Vec<Duration> = (1..=100).map(d).collect();
        assert_eq!(percentile(&v, 0.5), d(51));
        assert_eq!(percentile(&v, 0.99), d(99));
        assert_eq!(percentile(&v, 0.999), d(100));
        assert_eq!(percentile(&v, 1.0), d(100));
        assert_eq!(percentile(&[d(7)], 0.5), d(7));
    }

    #[test]
    fn merged_rounds_add_up() {
        let a = Round { lat: vec![d(1), d(3)], failed: 1, elapsed: Duration::from_secs(1) };
        let b = Round { lat: vec![d(2)], failed: 2, elapsed: Duration::from_secs(2) };
        let m = Round::merge(&[a, b]);
        assert_eq!(m.lat, vec![d(1), d(2), d(3)]);
        assert_eq!(m.failed, 3);
        assert!((m.rate() - 1.0).abs() < 1e-9);
        assert_eq!(Round::default().rate(), 0.0);
    }

    #[test]
    fn leader_changes_count_terms_else_leaders() {
        let v = |id, term| LeaderView { id, term };
        assert_eq!(leader_changes(v(1, Some(4)), v(1, Some(4))), 0);
        assert_eq!(leader_changes(v(1, Some(4)), v(2, Some(6))), 2);
        assert_eq!(leader_changes(v(1, None), v(1, None)), 0);
        assert_eq!(leader_changes(v(1, None), v(3, None)), 1);
        assert_eq!(leader_changes(v(1, Some(4)), v(3, None)), 1);
    }

    #[test]
    fn u64_as_number_or_string() {
        assert_eq!(json_u64(&json!(7)), Some(7));
        assert_eq!(json_u64(&json!("18358097391709335459")), Some(18_358_097_391_709_335_459));
        assert_eq!(json_u64(&json!("x")), None);
        assert_eq!(json_u64(&Value::Null), None);
    }

    #[test]
    fn tenths_done() {
        assert_eq!(tenths(0, 1000), 0);
        assert_eq!(tenths(99, 1000), 0);
        assert_eq!(tenths(100, 1000), 1);
        assert_eq!(tenths(1000, 1000), 10);
        assert_eq!(tenths(5000, 1000), 10);
        assert_eq!(tenths(0, 0), 10);
    }

    #[test]
    fn policy_body_is_about_eighty_bytes() {
        let len = policy_body("load-c16-r5-15-123456").to_string().len();
        assert!((60..=100).contains(&len), "{len}");
    }
}
