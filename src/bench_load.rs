//! `artstore bench load`: an open-loop load through a front URL (the front proxy of a
//! cluster, or standalone's one port). Requests are sent at a fixed arrival rate whatever
//! the answers do, and each latency is measured from the moment the request was *due*, not
//! from when it was sent: a server that stalls is charged for every request that waited
//! behind the stall (no coordinated omission). Uploads and searches run side by side, with a
//! baseline stream (`GET /health/live` through the same front, at the search rate) measured
//! in the same run; the roles' resident memory is sampled from their `/metrics`.

use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub struct LoadBenchArgs {
    /// The front URL: the front proxy (deploy/local-cluster.sh prints it) or standalone.
    #[arg(long)]
    pub url: String,
    /// A bearer token; without one, a token is asked for with --user and --password.
    #[arg(long, env = "ARTSTORE_TOKEN")]
    pub token: Option<String>,
    #[arg(long, default_value = "admin")]
    pub user: String,
    #[arg(long, env = "ARTSTORE_ADMIN_PASSWORD")]
    pub password: Option<String>,
    /// How long the load runs.
    #[arg(long, default_value_t = 600)]
    pub duration_secs: u64,
    /// Uploads started per second (fixed arrival rate).
    #[arg(long, default_value_t = 5.0)]
    pub uploads_per_sec: f64,
    /// Searches started per second (fixed arrival rate); the baseline runs at this rate too.
    #[arg(long, default_value_t = 20.0)]
    pub searches_per_sec: f64,
    /// Size of each uploaded document.
    #[arg(long, default_value_t = 4096)]
    pub size_bytes: usize,
    /// Requests allowed in flight at once; a request due beyond it counts as an error
    /// (`overloaded`) rather than being queued behind the others.
    #[arg(long, default_value_t = 512)]
    pub max_in_flight: usize,
    /// A role's /metrics URL whose resident memory is sampled every 5 s (repeatable).
    #[arg(long = "metrics")]
    pub metrics: Vec<String>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One stream's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamReport {
    pub due: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// Answers per second over the run.
    pub throughput_per_sec: f64,
    /// Latency from when each request was due (corrected), in milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The same from when each was sent (what a closed-loop tool would report).
    pub service_p99_ms: f64,
}

/// A role's resident memory over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryReport {
    pub url: String,
    /// After the first tenth of the run (warm-up), at the end, and the highest, in MiB.
    pub after_warmup_mib: f64,
    pub end_mib: f64,
    pub max_mib: f64,
    pub samples: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    pub duration_secs: f64,
    pub uploads: StreamReport,
    pub searches: StreamReport,
    pub baseline: StreamReport,
    pub memory: Vec<MemoryReport>,
    pub errors: u64,
}

#[derive(Default)]
struct Samples {
    due_us: Vec<u64>,
    sent_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

struct Stream {
    name: &'static str,
    due: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    samples: Mutex<Samples>,
}

impl Stream {
    fn new(name: &'static str) -> Arc<Stream> {
        Arc::new(Stream {
            name,
            due: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            samples: Mutex::new(Samples::default()),
        })
    }

    fn done(&self, due: Instant, sent: Instant, outcome: Result<(), String>) {
        let now = Instant::now();
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                s.due_us.push(now.duration_since(due).as_micros() as u64);
                s.sent_us.push(now.duration_since(sent).as_micros() as u64);
            }
            Err(kind) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                *s.errors.entry(kind).or_default() += 1;
            }
        }
    }

    fn report(&self, secs: f64) -> StreamReport {
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        s.due_us.sort_unstable();
        s.sent_us.sort_unstable();
        let ms = |v: &[u64], q: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
            v[i] as f64 / 1000.0
        };
        let ok = self.ok.load(Ordering::Relaxed);
        StreamReport {
            due: self.due.load(Ordering::Relaxed),
            ok,
            errors: s.errors.clone(),
            throughput_per_sec: ok as f64 / secs.max(1e-9),
            p50_ms: ms(&s.due_us, 0.50),
            p99_ms: ms(&s.due_us, 0.99),
            p999_ms: ms(&s.due_us, 0.999),
            max_ms: s.due_us.last().map(|v| *v as f64 / 1000.0).unwrap_or(0.0),
            service_p99_ms: ms(&s.sent_us, 0.99),
        }
    }
}

/// What one request of a stream does; `Err` is the error's kind (status or failure).
type Request = Arc<dyn Fn(u64) -> futures_util::future::BoxFuture<'static, Result<(), String>> + Sync + Send>;

/// Starts requests of `stream` at `rate` per second until `end`, never waiting for answers.
async fn open_loop(
    stream: Arc<Stream>,
    rate: f64,
    end: Instant,
    in_flight: Arc<AtomicUsize>,
    max: usize,
    send: Request,
) {
    if rate <= 0.0 {
        return;
    }
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0u64.. {
        let due = start + period.mul_f64(i as f64);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        stream.due.fetch_add(1, Ordering::Relaxed);
        if in_flight.load(Ordering::Relaxed) >= max {
            stream.done(due, due, Err("overloaded (too many in flight)".to_owned()));
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (stream, in_flight, send) = (stream.clone(), in_flight.clone(), send.clone());
        tasks.spawn(async move {
            let sent = Instant::now();
            let outcome = send(i).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            stream.done(due, sent, outcome);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

fn kind(
    r: Result<reqwest::Response, reqwest::Error>,
    want: u16,
) -> futures_util::future::BoxFuture<'static, Result<(), String>> {
    Box::pin(async move {
        match r {
            Ok(resp) if resp.status().as_u16() == want => {
                // The whole answer is part of the request.
                resp.bytes().await.map(|_| ()).map_err(|e| format!("body: {e}"))
            }
            Ok(resp) => Err(format!("HTTP {}", resp.status().as_u16())),
            Err(e) if e.is_timeout() => Err("timeout".to_owned()),
            Err(e) if e.is_connect() => Err("connect".to_owned()),
            Err(_) => Err("transport".to_owned()),
        }
    })
}

/// (time into the run, MiB) of one role.
type RssSamples = Vec<(Duration, f64)>;

/// Resident memory of a role from its /metrics, in MiB.
async fn rss_mib(http: &reqwest::Client, url: &str) -> Option<f64> {
    let text = http.get(url).send().await.ok()?.text().await.ok()?;
    text.lines()
        .find(|l| {
            l.starts_with("process_resident_memory_bytes ") || l.starts_with("artstore_process_resident_memory_bytes ")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|b| b / (1024.0 * 1024.0))
}

/// A document of `size` bytes with words the searches look for.
fn document(i: u64, size: usize) -> Vec<u8> {
    let mut s = format!("artstore load document {i} loadword{} series{} ", i % 50, i % 7);
    let filler = ["archive", "record", "retention", "ledger", "minutes", "charter", "deed", "register"];
    let mut k = i as usize;
    while s.len() < size {
        s.push_str(filler[k % filler.len()]);
        s.push(' ');
        k = k.wrapping_mul(31).wrapping_add(7);
    }
    s.truncate(size);
    s.into_bytes()
}

pub async fn run(a: LoadBenchArgs) -> anyhow::Result<()> {
    let report = load(&a).await?;
    print_report(&a, &report);
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Runs the load and gathers the figures.
pub async fn load(a: &LoadBenchArgs) -> anyhow::Result<LoadReport> {
    let base = a.url.trim_end_matches('/').to_owned();
    let http =
        artstore_shared::tls::http_client().timeout(Duration::from_secs(30)).pool_max_idle_per_host(256).build()?;
    let token = match (&a.token, &a.password) {
        (Some(t), _) => t.clone(),
        (None, Some(p)) => {
            let r = http
                .post(format!("{base}/api/v1/auth/token"))
                .form(&[("grant_type", "password"), ("username", a.user.as_str()), ("password", p.as_str())])
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "{base}: no token for {}: HTTP {}", a.user, r.status());
            let v: serde_json::Value = r.json().await?;
            v["access_token"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("{base}: no access_token in the answer"))?
                .to_owned()
        }
        (None, None) => anyhow::bail!("give --token, or --password (and --user) to log in"),
    };
    let duration = Duration::from_secs(a.duration_secs.max(1));
    let start = Instant::now();
    let end = start + duration;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (uploads, searches, baseline) = (Stream::new("uploads"), Stream::new("searches"), Stream::new("baseline"));
    let run_id = uuid::Uuid::now_v7().simple().to_string();

    let upload: Request = {
        let (http, base, token, size, run_id) =
            (http.clone(), base.clone(), token.clone(), a.size_bytes, run_id.clone());
        Arc::new(move |i| {
            let part = reqwest::multipart::Part::bytes(document(i, size)).file_name(format!("load-{run_id}-{i}.txt"));
            let part = match part.mime_str("text/plain") {
                Ok(p) => p,
                Err(e) => return Box::pin(async move { Err(format!("form: {e}")) }),
            };
            let form =
                reqwest::multipart::Form::new().text("description", format!("load run {run_id}")).part("file", part);
            let rb = http.post(format!("{base}/api/v1/files")).bearer_auth(&token).multipart(form);
            Box::pin(async move { kind(rb.send().await, 201).await })
        })
    };
    let search: Request = {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        Arc::new(move |i| {
            let q = match i % 3 {
                0 => format!("loadword{}", i % 50),
                1 => format!("series{} AND archive", i % 7),
                _ => "retention ledger".to_owned(),
            };
            let url = match reqwest::Url::parse_with_params(
                &format!("{base}/api/v1/search"),
                [("q", q.as_str()), ("limit", "10")],
            ) {
                Ok(u) => u,
                Err(e) => return Box::pin(async move { Err(format!("url: {e}")) }),
            };
            let rb = http.get(url).bearer_auth(&token);
            Box::pin(async move { kind(rb.send().await, 200).await })
        })
    };
    let live: Request = {
        let (http, base) = (http.clone(), base.clone());
        Arc::new(move |_| {
            let rb = http.get(format!("{base}/health/live"));
            Box::pin(async move { kind(rb.send().await, 200).await })
        })
    };

    // Resident memory, every 5 s.
    let memory: Arc<Mutex<Vec<RssSamples>>> = Arc::new(Mutex::new(vec![vec![]; a.metrics.len()]));
    let sampler = {
        let (http, urls, memory) = (http.clone(), a.metrics.clone(), memory.clone());
        tokio::spawn(async move {
            loop {
                for (k, u) in urls.iter().enumerate() {
                    if let Some(mib) = rss_mib(&http, u).await {
                        memory.lock().unwrap_or_else(|e| e.into_inner())[k].push((start.elapsed(), mib));
                    }
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        })
    };
    let progress = {
        let (u, s, b, f) = (uploads.clone(), searches.clone(), baseline.clone(), in_flight.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let err = u.failed.load(Ordering::Relaxed)
                    + s.failed.load(Ordering::Relaxed)
                    + b.failed.load(Ordering::Relaxed);
                eprintln!(
                    "bench load: {:>4} s  {} {} ok  {} {} ok  {} {} ok  in flight {}  errors {err}",
                    start.elapsed().as_secs(),
                    u.name,
                    u.ok.load(Ordering::Relaxed),
                    s.name,
                    s.ok.load(Ordering::Relaxed),
                    b.name,
                    b.ok.load(Ordering::Relaxed),
                    f.load(Ordering::Relaxed),
                );
            }
        })
    };
    let max = a.max_in_flight.max(1);
    tokio::join!(
        open_loop(uploads.clone(), a.uploads_per_sec, end, in_flight.clone(), max, upload),
        open_loop(searches.clone(), a.searches_per_sec, end, in_flight.clone(), max, search),
        open_loop(baseline.clone(), a.searches_per_sec, end, in_flight.clone(), max, live),
    );
    progress.abort();
    sampler.abort();
    let secs = start.elapsed().as_secs_f64();
    let warmup = duration / 10;
    let memory = memory.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let memory = a
        .metrics
        .iter()
        .zip(memory)
        .map(|(url, samples)| {
            let after = samples.iter().find(|(t, _)| *t >= warmup).or(samples.first()).map(|s| s.1).unwrap_or(0.0);
            MemoryReport {
                url: url.clone(),
                after_warmup_mib: after,
                end_mib: samples.last().map(|s| s.1).unwrap_or(0.0),
                max_mib: samples.iter().map(|s| s.1).fold(0.0, f64::max),
                samples: samples.len(),
            }
        })
        .collect();
    let (u, s, b) = (uploads.report(secs), searches.report(secs), baseline.report(secs));
    let errors = [&u, &s, &b].iter().map(|r| r.errors.values().sum::<u64>()).sum();
    Ok(LoadReport { duration_secs: secs, uploads: u, searches: s, baseline: b, memory, errors })
}

fn print_report(a: &LoadBenchArgs, r: &LoadReport) {
    println!(
        "open-loop load through {} for {:.0} s: {} uploads/s of {} bytes, {} searches/s (latency from when each request was due)",
        a.url, r.duration_secs, a.uploads_per_sec, a.size_bytes, a.searches_per_sec
    );
    println!(
        "{:<28} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "stream", "due", "ok", "per s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "sent-p99 ms"
    );
    for (name, s) in [("uploads", &r.uploads), ("searches", &r.searches), ("baseline: GET /health/live", &r.baseline)] {
        println!(
            "{:<28} {:>7} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>12.1}",
            name, s.due, s.ok, s.throughput_per_sec, s.p50_ms, s.p99_ms, s.p999_ms, s.max_ms, s.service_p99_ms
        );
        for (kind, n) in &s.errors {
            println!("  {n} errors: {kind}");
        }
    }
    for m in &r.memory {
        println!(
            "memory {}: {:.1} MiB after warm-up, {:.1} MiB at the end, {:.1} MiB at most ({} samples)",
            m.url, m.after_warmup_mib, m.end_mib, m.max_mib, m.samples
        );
    }
    println!("errors: {}", r.errors);
}
