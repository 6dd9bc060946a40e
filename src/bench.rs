//! `artstore bench`: ArtStore's ingest against the raw durable rate of the same disk,
//! measured in one run with the two interleaved (fsync latency drifts for minutes here).

use anyhow::Context as _;
use artstore_shared::Clock;
use artstore_shared::auth::{JWKS_FILE, JwksSource, LocalSigner, TokenVerifier, VerifierConfig};
use artstore_shared::clock::SystemClock;
use artstore_storage_element::config::ElementConfig;
use artstore_storage_element::server::Element;
use bytes::Bytes;
use clap::Args;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: Option<BenchWhat>,
    #[command(flatten)]
    pub ingest: IngestBenchArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchWhat {
    /// Rebuild of a large store: raw walk-and-parse rate vs rebuild-cache into PostgreSQL.
    Rebuild(RebuildBenchArgs),
    /// Admin cluster: commit latency under load and failover time after a leader SIGKILL.
    Admin(crate::bench_admin::AdminBenchArgs),
    /// Ingester: small documents, a large upload and tus against direct writes to the
    /// element; event publisher lag; the ingester process's peak memory.
    Ingester(crate::bench_ingester::IngesterBenchArgs),
    /// Query role: search over HTTP against PostgreSQL full-text search (build, QPS and
    /// latency at 1 and 8 clients, known-item relevance) and the 4 KiB indexing rate.
    Query(crate::bench_query::QueryBenchArgs),
    /// Open-loop load (fixed arrival rate, latency from when each request was due) of
    /// uploads and searches through a front URL, with a baseline and the roles' memory.
    Load(crate::bench_load::LoadBenchArgs),
}

#[derive(Debug, Args)]
pub struct RebuildBenchArgs {
    /// Working folder on the disk under test (the generated store is kept for reruns).
    #[arg(long, default_value = "./artstore-bench-rebuild")]
    pub dir: PathBuf,
    /// Documents in the generated store.
    #[arg(long, default_value_t = 1_000_000)]
    pub docs: u64,
    /// Documents per day folder (1,000 a day: about three years of folders for a million).
    #[arg(long, default_value_t = 1000)]
    pub per_day: u64,
    /// PostgreSQL server; a database artstore_bench_rebuild is created on it afresh.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub cache: String,
}

#[derive(Debug, Args)]
pub struct IngestBenchArgs {
    /// Working folder on the disk under test (emptied first, removed after).
    #[arg(long, default_value = "./artstore-bench")]
    pub dir: PathBuf,
    /// Small documents per round and per contender.
    #[arg(long, default_value_t = 500)]
    pub docs: usize,
    /// Concurrent writers (raw) and HTTP clients (ArtStore).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Interleaved rounds of raw vs ArtStore (short rounds, many of them: the disk drifts).
    #[arg(long, default_value_t = 12)]
    pub rounds: usize,
    /// Size of the large-file comparison in MiB (0 skips it).
    #[arg(long, default_value_t = 1024)]
    pub large_mib: u64,
    /// Size of the upload during which peak memory is measured, in MiB (0 skips it).
    #[arg(long, default_value_t = 2048)]
    pub memory_mib: u64,
}

/// The file system `dir` lives on, for the report.
pub fn bench_fs_type(dir: &Path) -> String {
    fs_type(dir)
}

fn fs_type(dir: &Path) -> String {
    let Ok(abs) = std::fs::canonicalize(dir) else {
        return "unknown".into();
    };
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best = ("unknown".to_owned(), 0usize);
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 2 && abs.starts_with(f[1]) && f[1].len() >= best.1 {
            best = (format!("{} on {} ({})", f[2], f[1], f[0]), f[1].len());
        }
    }
    best.0
}

fn peak_rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn reset_peak_rss() {
    // Writing 5 to clear_refs resets VmHWM (Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn durable_file(tmp: &Path, dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let t = tmp.join(uuid::Uuid::new_v4().simple().to_string());
    let mut f = std::fs::File::create(&t)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&t, dest)?;
    std::fs::File::open(dest.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// The raw durable rate: 4 KiB file + 300-byte sidecar, each temp/fsync/rename/dir-fsync.
async fn raw_small(dir: &Path, docs: usize, concurrency: usize) -> anyhow::Result<f64> {
    let tmp = dir.join("tmp");
    let data = dir.join("data");
    std::fs::create_dir_all(&tmp)?;
    std::fs::create_dir_all(&data)?;
    let content = Arc::new(vec![7u8; 4096]);
    let sidecar = Arc::new(vec![b'x'; 300]);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = vec![];
    for _ in 0..concurrency {
        let (tmp, data, content, sidecar, next) =
            (tmp.clone(), data.clone(), content.clone(), sidecar.clone(), next.clone());
        tasks.push(tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= docs {
                    return Ok(());
                }
                let name = format!("doc-{i}-{}", uuid::Uuid::new_v4().simple());
                durable_file(&tmp, &data.join(&name), &content)?;
                durable_file(&tmp, &data.join(format!("{name}.attr.json")), &sidecar)?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(docs as f64 / started.elapsed().as_secs_f64())
}

struct Server {
    base: String,
    token: String,
    client: reqwest::Client,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_server(dir: &Path) -> anyhow::Result<Server> {
    let keys = dir.join("keys");
    let signer = LocalSigner::load_or_create(&keys)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let verifier =
        Arc::new(TokenVerifier::new(JwksSource::File(keys.join(JWKS_FILE)), VerifierConfig::default(), clock.clone()));
    verifier.load().await?;
    let cfg = ElementConfig { data: Some(dir.join("element")), ..Default::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let element = Element::build(cfg, verifier, clock).await?;
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(element.run(listener, async move {
        let _ = rx.await;
    }));
    let token = signer.issue("bench", &["writer".to_owned()], Duration::from_secs(24 * 3600), chrono::Utc::now())?;
    Ok(Server { base, token, client: reqwest::Client::builder().pool_max_idle_per_host(64).build()?, stop, handle })
}

impl Server {
    async fn upload(&self, part: reqwest::multipart::Part) -> anyhow::Result<()> {
        let form = reqwest::multipart::Form::new().part("file", part);
        let r = self
            .client
            .post(format!("{}/api/v1/files", self.base))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "upload answered {}: {}", r.status(), r.text().await.unwrap_or_default());
        Ok(())
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.handle.await?
    }
}

async fn http_small(server: &Arc<Server>, docs: usize, concurrency: usize) -> anyhow::Result<f64> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let body = Bytes::from(vec![7u8; 4096]);
    let started = Instant::now();
    let mut tasks = vec![];
    for _ in 0..concurrency {
        let (server, next, body) = (server.clone(), next.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= docs {
                    return anyhow::Ok(());
                }
                server.upload(reqwest::multipart::Part::stream(body.clone()).file_name(format!("doc-{i}.txt"))).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(docs as f64 / started.elapsed().as_secs_f64())
}

fn generated_stream(mib: u64) -> reqwest::Body {
    let chunk = Bytes::from(vec![0x5au8; 1 << 20]);
    let stream = futures_util::stream::iter((0..mib).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    reqwest::Body::wrap_stream(stream)
}

async fn raw_large(dir: &Path, mib: u64) -> anyhow::Result<f64> {
    let path = dir.join("large.raw");
    let started = Instant::now();
    let p = path.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&p)?;
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..mib {
            f.write_all(&chunk)?;
        }
        f.sync_all()
    })
    .await??;
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(mib as f64 / secs)
}

async fn http_large(server: &Server, mib: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    server
        .upload(reqwest::multipart::Part::stream_with_length(generated_stream(mib), mib << 20).file_name("large.bin"))
        .await?;
    Ok(mib as f64 / started.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        Some(BenchWhat::Rebuild(r)) => rebuild(r).await,
        Some(BenchWhat::Admin(a)) => crate::bench_admin::run(a).await,
        Some(BenchWhat::Ingester(a)) => crate::bench_ingester::run(a).await,
        Some(BenchWhat::Query(a)) => crate::bench_query::run(a).await,
        Some(BenchWhat::Load(a)) => crate::bench_load::run(a).await,
        None => ingest(args.ingest).await,
    }
}

/// Drops the page cache so the walk is cold (root only; otherwise the walk is warm).
fn drop_page_cache() -> bool {
    std::process::Command::new("sync").status().is_ok() && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

async fn rebuild(a: RebuildBenchArgs) -> anyhow::Result<()> {
    use artstore_storage_element::{rebuild, synthetic};
    let root = a.dir.join("element");
    let marker = a.dir.join(format!("generated-{}-{}", a.docs, a.per_day));
    println!(
        "artstore bench rebuild: {} cores, file system {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        {
            std::fs::create_dir_all(&a.dir)?;
            fs_type(&a.dir)
        }
    );
    if std::fs::metadata(&marker).is_err() {
        if std::fs::metadata(&root).is_ok() {
            std::fs::remove_dir_all(&root)?;
        }
        let cfg = artstore_storage_element::StoreConfig::new(&root);
        artstore_storage_element::Store::identity(&cfg, &SystemClock)?;
        let t = Instant::now();
        let (r2, docs, per_day) = (root.clone(), a.docs, a.per_day);
        let days = tokio::task::spawn_blocking(move || synthetic::write_store(&r2, docs, per_day)).await??;
        std::fs::write(&marker, b"")?;
        println!("generated {} sidecars in {days} day folders in {:.1}s", a.docs, t.elapsed().as_secs_f64());
    } else {
        println!("reusing the generated store in {}", root.display());
    }
    let cold = drop_page_cache();
    println!(
        "page cache {} before each pass",
        if cold { "dropped" } else { "NOT dropped (not permitted): warm passes" }
    );

    let walk = |label: &'static str| {
        let root = root.clone();
        async move {
            drop_page_cache();
            reset_peak_rss();
            let t = Instant::now();
            let n = tokio::task::spawn_blocking(move || {
                let mut n = 0u64;
                rebuild::walk(&root, None, |b| {
                    n += b.entries.len() as u64;
                    true
                })
                .map(|()| n)
            })
            .await??;
            let secs = t.elapsed().as_secs_f64();
            println!(
                "{label}: walked and parsed {n} sidecars in {secs:.1}s = {:.0}/s, peak RSS {:.0} MiB",
                n as f64 / secs,
                peak_rss_mib()
            );
            anyhow::Ok(n as f64 / secs)
        }
    };
    let raw1 = walk("raw walk+parse (1)").await?;

    let server = sqlx::PgPool::connect(&a.cache).await.with_context(|| a.cache.clone())?;
    sqlx::query("DROP DATABASE IF EXISTS artstore_bench_rebuild WITH (FORCE)").execute(&server).await?;
    sqlx::query("CREATE DATABASE artstore_bench_rebuild").execute(&server).await?;
    server.close().await;
    let url = match a.cache.rfind('/') {
        Some(i) => format!("{}/artstore_bench_rebuild", &a.cache[..i]),
        None => anyhow::bail!("{}: not a postgres:// URL with a database", a.cache),
    };
    let element = artstore_storage_element::element::ElementFile::read(&root.join("element.json"))?
        .ok_or_else(|| anyhow::anyhow!("no element.json in {}", root.display()))?;
    let cache = artstore_storage_element::pg::PgCache::open(&url, element.element_id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    drop_page_cache();
    reset_peak_rss();
    let t = Instant::now();
    let report = rebuild::rebuild(&root, &cache, &|_| {}).await?;
    let secs = t.elapsed().as_secs_f64();
    let rate = report.documents as f64 / secs;
    println!(
        "rebuild-cache into PostgreSQL: {} documents in {secs:.1}s = {rate:.0}/s, peak RSS {:.0} MiB",
        report.documents,
        peak_rss_mib()
    );
    let raw2 = walk("raw walk+parse (2)").await?;
    let raw = (raw1 + raw2) / 2.0;
    println!(
        "rebuild is {:.1} % of the raw walk-and-parse rate (goal >= 50 %); {} documents in {secs:.1}s (goal: 1,000,000 in < 120 s)",
        100.0 * rate / raw,
        report.documents
    );
    cache.pool().close().await;
    Ok(())
}

async fn ingest(a: IngestBenchArgs) -> anyhow::Result<()> {
    if std::fs::metadata(&a.dir).is_ok() {
        std::fs::remove_dir_all(&a.dir).with_context(|| format!("{}", a.dir.display()))?;
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("{}", a.dir.display()))?;
    println!(
        "artstore bench: {} cores, file system {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        fs_type(&a.dir)
    );
    let server = Arc::new(start_server(&a.dir.join("artstore")).await?);
    let (mut raw, mut http, mut ratios) = (vec![], vec![], vec![]);
    for round in 1..=a.rounds {
        let r = raw_small(&a.dir.join(format!("raw-{round}")), a.docs, a.concurrency).await?;
        let h = http_small(&server, a.docs, a.concurrency).await?;
        println!(
            "round {round}: raw durable {r:8.1} docs/s   artstore http ingest {h:8.1} docs/s   ratio {:5.1} %",
            100.0 * h / r
        );
        raw.push(r);
        http.push(h);
        ratios.push(h / r);
        std::fs::remove_dir_all(a.dir.join(format!("raw-{round}")))?;
    }
    // Same number of documents per round, so the ratio of the harmonic means is the ratio
    // of total times: every round weighs as long as it really took.
    let hmean = |v: &[f64]| v.len() as f64 / v.iter().map(|x| 1.0 / x).sum::<f64>();
    let (rt, ht) = (hmean(&raw), hmean(&http));
    println!(
        "small documents (4 KiB, {} writers, {} rounds): raw {rt:.1}/s, artstore {ht:.1}/s over all rounds = {:.1} % of raw; median of per-round ratios {:.1} % (goal >= 70 %)",
        a.concurrency,
        a.rounds,
        100.0 * ht / rt,
        100.0 * median(ratios)
    );
    if a.large_mib > 0 {
        let r1 = raw_large(&a.dir, a.large_mib).await?;
        let h1 = http_large(&server, a.large_mib).await?;
        let r2 = raw_large(&a.dir, a.large_mib).await?;
        let h2 = http_large(&server, a.large_mib).await?;
        let (r, h) = ((r1 + r2) / 2.0, (h1 + h2) / 2.0);
        println!(
            "large file ({} MiB, 2 interleaved runs): raw fsync'd write {r:.1} MiB/s, artstore upload {h:.1} MiB/s = {:.1} % of raw (goal ≥ 80 %)",
            a.large_mib,
            100.0 * h / r
        );
    }
    if a.memory_mib > 0 {
        reset_peak_rss();
        let before = peak_rss_mib();
        let t = http_large(&server, a.memory_mib).await?;
        println!(
            "memory: peak RSS of the whole process (server and client) during a {} MiB upload: {:.1} MiB (before: {before:.1} MiB; goal < 100 MiB); {t:.1} MiB/s",
            a.memory_mib,
            peak_rss_mib()
        );
    }
    let server = Arc::try_unwrap(server).map_err(|_| anyhow::anyhow!("server still in use"))?;
    server.stop().await?;
    std::fs::remove_dir_all(&a.dir)?;
    Ok(())
}
