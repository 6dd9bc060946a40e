//! `artstore bench admin`: a three-node admin cluster of real processes on loopback. Measures
//! the commit latency of admin writes as clients see it (HTTP → Raft commit on a majority,
//! each node fsyncing its log → applied) under a steady load, and the failover time from a
//! leader SIGKILL to the first acknowledged write. The baseline, measured in the same run on
//! the same disk, is one 200-byte append + fdatasync: the floor under any durable commit.

use anyhow::Context as _;
use clap::Args;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct AdminBenchArgs {
    /// Working folder on the disk under test (emptied first, removed after).
    #[arg(long, default_value = "./artstore-bench-admin")]
    pub dir: PathBuf,
    /// Seconds of steady write load.
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
    /// Concurrent clients of the steady load.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Leader kills for the failover measurement.
    #[arg(long, default_value_t = 5)]
    pub kills: usize,
    /// Raft heartbeat interval in milliseconds (the admin default is 150).
    #[arg(long, default_value_t = 150)]
    pub raft_heartbeat_ms: u64,
}

const PASSWORD: &str = "bench-admin-password";

struct Proc {
    child: Option<Child>,
    port: u16,
    data: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn(id: u64, p: &Proc, peers: &str, hb: u64, log: &Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    Ok(Command::new(exe)
        .args(["admin", "--node-id", &id.to_string(), "--listen", &format!("127.0.0.1:{}", p.port), "--data"])
        .arg(&p.data)
        .args(["--peers", peers, "--raft-heartbeat-ms", &hb.to_string(), "--log-format", "json"])
        .env("ARTSTORE_ADMIN_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The floor: sequential 200-byte appends, each followed by fdatasync.
fn raw_append_latency(dir: &Path, n: usize) -> anyhow::Result<Vec<Duration>> {
    let path = dir.join("raw-append");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    let rec = [b'x'; 200];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&rec)?;
        f.sync_data()?;
        out.push(t.elapsed());
    }
    std::fs::remove_file(path)?;
    out.sort();
    Ok(out)
}

async fn token(http: &reqwest::Client, url: &str) -> Option<String> {
    let r = http
        .post(format!("{url}/api/v1/auth/token"))
        .form(&[("grant_type", "password"), ("username", "admin"), ("password", PASSWORD)])
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json::<Value>().await.ok()?["access_token"].as_str().map(str::to_owned)
}

async fn leader(http: &reqwest::Client, procs: &BTreeMap<u64, Proc>, tok: &str) -> Option<u64> {
    for p in procs.values().filter(|p| p.child.is_some()) {
        let url = format!("http://127.0.0.1:{}/api/v1/cluster", p.port);
        if let Ok(r) = http.get(url).bearer_auth(tok).send().await
            && let Ok(v) = r.json::<Value>().await
            && v["state"] == "Leader"
        {
            return v["node_id"].as_u64();
        }
    }
    None
}

async fn write(http: &reqwest::Client, port: u16, tok: &str, name: &str) -> bool {
    let r = http
        .post(format!("http://127.0.0.1:{port}/api/v1/retention-policies"))
        .bearer_auth(tok)
        .json(&json!({"name": name, "term": "P1Y", "mode": "governance"}))
        .send()
        .await;
    matches!(r, Ok(r) if r.status() == 201)
}

pub async fn run(args: AdminBenchArgs) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir).with_context(|| format!("{}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    println!("artstore bench admin — {} (three nodes on loopback, one disk)", crate::bench::bench_fs_type(&dir));

    let raw = raw_append_latency(&dir, 500)?;
    println!(
        "baseline   200-byte append + fdatasync: p50 {}  p99 {}  (n = {})",
        ms(percentile(&raw, 0.5)),
        ms(percentile(&raw, 0.99)),
        raw.len()
    );

    let log = dir.join("admin.log");
    let mut procs = BTreeMap::new();
    for id in 1..=3u64 {
        procs.insert(id, Proc { child: None, port: free_port()?, data: dir.join(format!("node{id}")) });
    }
    let peers = procs.iter().map(|(id, p)| format!("{id}=http://127.0.0.1:{}", p.port)).collect::<Vec<_>>().join(",");
    for (id, p) in procs.iter_mut() {
        p.child = Some(spawn(*id, p, &peers, args.raft_heartbeat_ms, &log)?);
    }
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).pool_max_idle_per_host(64).build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let tok = loop {
        if let Some(t) = token(&http, &format!("http://127.0.0.1:{}", procs[&1].port)).await {
            break t;
        }
        anyhow::ensure!(Instant::now() < deadline, "the cluster did not come up; see {}", log.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let l = loop {
        if let Some(l) = leader(&http, &procs, &tok).await {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Steady load against the leader.
    let port = procs[&l].port;
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = vec![];
    for c in 0..args.concurrency {
        let (http, tok) = (http.clone(), tok.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut failed, mut i) = (vec![], 0u64, 0u64);
            while Instant::now() < end {
                i += 1;
                let t = Instant::now();
                if write(&http, port, &tok, &format!("load-{c}-{i}")).await {
                    lat.push(t.elapsed());
                } else {
                    failed += 1;
                }
            }
            (lat, failed)
        }));
    }
    let (mut lat, mut failed) = (vec![], 0);
    for t in tasks {
        let (l, f) = t.await?;
        lat.extend(l);
        failed += f;
    }
    lat.sort();
    println!(
        "commit     {} clients, {} s: {} writes ({:.0}/s), {failed} failed; p50 {}  p99 {}  p99.9 {}  max {}",
        args.concurrency,
        args.seconds,
        lat.len(),
        lat.len() as f64 / args.seconds as f64,
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(percentile(&lat, 0.999)),
        ms(lat.last().copied().unwrap_or_default())
    );
    let p99 = percentile(&lat, 0.99);
    println!("           goal p99 < 20 ms: {}", if p99 < Duration::from_millis(20) { "met" } else { "NOT met" });

    // Failover: SIGKILL the leader, time to the first acknowledged write on a survivor.
    let mut times = vec![];
    for k in 0..args.kills {
        let l = loop {
            if let Some(l) = leader(&http, &procs, &tok).await {
                break l;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let p = procs.get_mut(&l).context("leader")?;
        let mut child = p.child.take().context("leader process")?;
        child.kill()?; // SIGKILL
        let killed = Instant::now();
        child.wait()?;
        let survivors: Vec<u16> = procs.values().filter(|p| p.child.is_some()).map(|p| p.port).collect();
        let mut i = 0usize;
        let took = loop {
            i += 1;
            if write(&http, survivors[i % survivors.len()], &tok, &format!("failover-{k}-{i}")).await {
                break killed.elapsed();
            }
            anyhow::ensure!(killed.elapsed() < Duration::from_secs(60), "no write succeeded within 60 s of the kill");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        times.push(took);
        println!("failover   kill {} of node {l}: first acknowledged write after {}", k + 1, ms(took));
        let p = procs.get_mut(&l).context("leader")?;
        p.child = Some(spawn(l, p, &peers, args.raft_heartbeat_ms, &log)?);
        tokio::time::sleep(Duration::from_secs(2)).await; // let it rejoin before the next kill
    }
    times.sort();
    if !times.is_empty() {
        println!(
            "failover   median {}  max {}  (goal < 3 s: {})",
            ms(percentile(&times, 0.5)),
            ms(*times.last().unwrap_or(&Duration::ZERO)),
            if times.iter().all(|t| *t < Duration::from_secs(3)) { "met" } else { "NOT met" }
        );
    }
    for p in procs.values_mut() {
        if let Some(mut c) = p.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
