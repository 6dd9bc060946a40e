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
pub struct BenchArgs {
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

pub async fn run(a: BenchArgs) -> anyhow::Result<()> {
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
