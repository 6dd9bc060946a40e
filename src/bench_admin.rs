//! `artstore bench admin`: a three-node admin cluster of real processes on loopback against a
//! three-member etcd cluster on the same disk, in the same run. Measures the commit latency of
//! admin writes as clients see it (HTTP → Raft commit on a majority, each node fsyncing its
//! log → applied) in consecutive rounds after a history pre-load, the leader changes during
//! that load, and the failover time from a leader SIGKILL to the first acknowledged write.
//! The floor under any durable commit, also measured, is one 200-byte append + fdatasync.
//! The two systems take turns round by round, so that a slow spell of a shared host (each
//! round prints the CPU steal during it) falls on both alike.

mod etcd;
mod load;

use anyhow::Context as _;
use clap::Args;
use etcd::EtcdCluster;
use load::{Change, LeaderView, Round, Writer, history_description, leader_changes, ms, percentile, policy_body};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct AdminBenchArgs {
    /// Working folder on the disk under test (emptied first, removed after a run that ends
    /// well; kept with the nodes' logs after an error).
    #[arg(long, default_value = "./artstore-bench-admin")]
    pub dir: PathBuf,
    /// Seconds of steady write load per round.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Consecutive rounds per system and client count (growth over rounds shows in them).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Concurrent clients of the steady load, one keep-alive connection each; each count
    /// gets its own rounds.
    #[arg(long, alias = "concurrency", value_delimiter = ',', default_values_t = [4, 16])]
    pub clients: Vec<usize>,
    /// History changes written before the rounds (changes to one record: history grows,
    /// live state does not); 0 skips the pre-load.
    #[arg(long, default_value_t = 1_000_000)]
    pub history: u64,
    /// Leader kills for the failover measurement.
    #[arg(long, default_value_t = 10)]
    pub kills: usize,
    /// Raft heartbeat interval in milliseconds for the admin nodes (default: the admin's).
    #[arg(long)]
    pub raft_heartbeat_ms: Option<u64>,
    /// Leave the etcd baseline out (e.g. for a long run counting leader changes under load).
    #[arg(long)]
    pub no_etcd: bool,
    /// Shortest Raft election timeout in milliseconds (default: the admin's).
    #[arg(long)]
    pub raft_election_min_ms: Option<u64>,
    /// Longest Raft election timeout in milliseconds (default: the admin's).
    #[arg(long)]
    pub raft_election_max_ms: Option<u64>,
}

const PASSWORD: &str = "bench-admin-password";
/// The policy whose description every ArtStore history change rewrites.
const HISTORY_POLICY: &str = "bench-history";
/// Clients of the history pre-load.
const HISTORY_CLIENTS: usize = 32;
/// Failover goal: the first acknowledged write within this after every kill.
const FAILOVER_GOAL: Duration = Duration::from_secs(1);
/// Flatness goal: the last round's p99 at most this times the first round's.
const FLAT_FACTOR: f64 = 1.5;

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Node {
    child: Option<Child>,
    port: u16,
    data: PathBuf,
}

/// The three `artstore admin` processes; dropping it kills them.
struct AdminCluster {
    nodes: BTreeMap<u64, Node>,
    peers: String,
    /// Raft timing flags passed to every node.
    raft_flags: Vec<String>,
    log: PathBuf,
}

impl AdminCluster {
    fn start(dir: &Path, args: &AdminBenchArgs) -> anyhow::Result<Self> {
        let mut nodes = BTreeMap::new();
        for id in 1..=3u64 {
            nodes.insert(id, Node { child: None, port: free_port()?, data: dir.join(format!("node{id}")) });
        }
        let peers =
            nodes.iter().map(|(id, n)| format!("{id}=http://127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",");
        let raft_flags = [
            ("--raft-heartbeat-ms", args.raft_heartbeat_ms),
            ("--raft-election-min-ms", args.raft_election_min_ms),
            ("--raft-election-max-ms", args.raft_election_max_ms),
        ]
        .into_iter()
        .filter_map(|(flag, v)| Some([flag.to_owned(), v?.to_string()]))
        .flatten()
        .collect();
        let mut cluster = AdminCluster { nodes, peers, raft_flags, log: dir.join("admin.log") };
        for id in 1..=3 {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let node = self.nodes.get_mut(&id).context("no such node")?;
        let child = Command::new(exe)
            .args(["admin", "--node-id", &id.to_string(), "--listen", &format!("127.0.0.1:{}", node.port), "--data"])
            .arg(&node.data)
            .args(["--peers", &self.peers])
            .args(&self.raft_flags)
            // One token serves the whole run, however long the pre-load takes.
            .args(["--token-ttl-secs", "86400", "--log-format", "json"])
            .env("ARTSTORE_ADMIN_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        node.child = Some(child);
        Ok(())
    }

    /// SIGKILL, then reap.
    fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let mut child = self.nodes.get_mut(&id).and_then(|n| n.child.take()).context("node is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Fails when a node that should run has exited (a bad flag, a port taken…).
    fn check_running(&mut self) -> anyhow::Result<()> {
        for (id, n) in &mut self.nodes {
            if let Some(status) = n.child.as_mut().map(Child::try_wait).transpose()?.flatten() {
                n.child = None;
                anyhow::bail!("admin node {id} exited with {status}; see {}", self.log.display());
            }
        }
        Ok(())
    }

    fn url(&self, id: u64) -> String {
        format!("http://127.0.0.1:{}", self.nodes[&id].port)
    }

    fn live(&self) -> impl Iterator<Item = (u64, &Node)> {
        self.nodes.iter().filter(|(_, n)| n.child.is_some()).map(|(id, n)| (*id, n))
    }

    /// The leader and its term, asking the running nodes in turn.
    async fn leader(&self, http: &reqwest::Client, tok: &str) -> Option<LeaderView> {
        for (id, _) in self.live() {
            if let Some(v) = self.cluster_state(http, tok, id).await
                && let Some(view) = leader_view(&v)
            {
                return Some(view);
            }
        }
        None
    }

    async fn wait_leader(&self, http: &reqwest::Client, tok: &str) -> anyhow::Result<LeaderView> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(l) = self.leader(http, tok).await {
                return Ok(l);
            }
            anyhow::ensure!(Instant::now() < deadline, "no admin leader within 60 s; see {}", self.log.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /api/v1/cluster` of one node.
    async fn cluster_state(&self, http: &reqwest::Client, tok: &str, id: u64) -> Option<Value> {
        let r = http.get(format!("{}/api/v1/cluster", self.url(id))).bearer_auth(tok).send().await.ok()?;
        r.json::<Value>().await.ok()
    }
}

impl Drop for AdminCluster {
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// The node's view when it is the leader: its id, and the term when the answer has one.
fn leader_view(v: &Value) -> Option<LeaderView> {
    if v["state"] != "Leader" {
        return None;
    }
    let term = ["term", "current_term"].iter().find_map(|k| v[*k].as_u64());
    Some(LeaderView { id: v["node_id"].as_u64()?, term })
}

/// Whether a restarted node is back: a follower that knows the leader and has applied at
/// least `applied`.
fn rejoined(v: &Value, applied: u64) -> bool {
    v["state"] == "Follower" && !v["leader"].is_null() && v["last_applied"].as_u64().is_some_and(|a| a >= applied)
}

/// Writes to one admin node's API.
#[derive(Debug, Clone)]
struct ArtStoreWriter {
    url: String,
    tok: String,
}

impl Writer for ArtStoreWriter {
    async fn write(&self, http: &reqwest::Client, change: Change<'_>) -> bool {
        let policies = format!("{}/api/v1/retention-policies", self.url);
        let (req, ok) = match change {
            Change::New(name) => (http.post(policies).json(&policy_body(name)), 201),
            Change::History(n) => (
                http.patch(format!("{policies}/{HISTORY_POLICY}"))
                    .json(&json!({"description": history_description(n)})),
                200,
            ),
        };
        matches!(req.bearer_auth(&self.tok).send().await, Ok(r) if r.status() == ok)
    }
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

fn goal(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// The rounds of one system at one client count.
struct Series {
    system: &'static str,
    clients: usize,
    seconds: u64,
    rounds: Vec<Round>,
    leader_changes: u64,
}

impl Series {
    fn summary(&self) -> String {
        let by_round = self.rounds.iter().map(|r| format!("{:.2}", r.p(0.99).as_secs_f64() * 1000.0));
        format!(
            "summary    {:<8} {:>2} clients, {} × {} s: {}; p99 by round (ms) {}",
            self.system,
            self.clients,
            self.rounds.len(),
            self.seconds,
            Round::merge(&self.rounds).figures(),
            by_round.collect::<Vec<_>>().join(" → ")
        )
    }
}

pub async fn run(mut args: AdminBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rounds > 0 && args.seconds > 0, "--rounds and --seconds must be at least 1");
    anyhow::ensure!(!args.clients.is_empty() && !args.clients.contains(&0), "--clients must name counts of at least 1");
    let mut seen = std::collections::BTreeSet::new();
    args.clients.retain(|c| seen.insert(*c));
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir).with_context(|| format!("{}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    // Dropping the bench future on an error or Ctrl-C kills every process it started.
    let r = tokio::select! {
        r = bench(&args, &dir) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if r.is_err() {
        eprintln!("artstore bench admin: every process stopped; the logs are kept in {}", dir.display());
        return r;
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
}

async fn bench(args: &AdminBenchArgs, dir: &Path) -> anyhow::Result<()> {
    println!("artstore bench admin — {} (three nodes on loopback, one disk)", crate::bench::bench_fs_type(dir));
    let raw = raw_append_latency(dir, 500)?;
    println!(
        "baseline   200-byte append + fdatasync: p50 {}  p99 {}  (n = {})",
        ms(percentile(&raw, 0.5)),
        ms(percentile(&raw, 0.99)),
        raw.len()
    );

    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let mut admin = AdminCluster::start(dir, args)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let tok = loop {
        if let Some(t) = token(&http, &admin.url(1)).await {
            break t;
        }
        admin.check_running()?;
        anyhow::ensure!(Instant::now() < deadline, "the cluster did not come up; see {}", admin.log.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let l = admin.wait_leader(&http, &tok).await?;
    println!("artstore   three admin nodes up, leader node {}", l.id);

    let etcd = match etcd::version() {
        _ if args.no_etcd => {
            println!("etcd       baseline left out (--no-etcd)");
            None
        }
        Ok(version) => {
            let cluster = EtcdCluster::start(dir, &http).await?;
            println!("etcd       etcd {version}: three members up on loopback");
            Some(cluster)
        }
        Err(why) => {
            println!("etcd       baseline skipped: {why} (install it with scripts/etcd.sh)");
            None
        }
    };

    if args.history > 0 {
        preload_history(args.history, &admin, etcd.as_ref(), &http, &tok).await?;
    }

    let mut series = Vec::new();
    for &clients in &args.clients {
        let pool = load::clients(clients)?;
        let alternating = if etcd.is_some() { ", artstore and etcd rounds alternating" } else { "" };
        println!("load       {clients} clients, {} rounds of {} s per system{alternating}", args.rounds, args.seconds);
        let series_of =
            |system| Series { system, clients, seconds: args.seconds, rounds: Vec::new(), leader_changes: 0 };
        let mut a = series_of("artstore");
        let mut e = etcd.as_ref().map(|_| series_of("etcd"));
        for round in 1..=args.rounds {
            // The two systems take turns, round by round, so that a slower or faster spell of
            // the machine (a virtual machine's neighbours come and go) falls on both alike;
            // which goes first alternates too. Each system's rounds still follow one another
            // with nothing written to it in between: its history grows round by round.
            let etcd_first = round % 2 == 0;
            for etcd_turn in [etcd_first, !etcd_first] {
                let steal = host_steal();
                let (s, r) = match (etcd_turn, &etcd, &mut e) {
                    (true, Some(etcd), Some(s)) => {
                        let (url, before) = etcd.wait_leader(&http).await?;
                        let r = load::round(&etcd.writer(&url), &pool, args.seconds, &format!("c{clients}-r{round}"))
                            .await?;
                        let (_, after) = etcd.wait_leader(&http).await?;
                        s.leader_changes += leader_changes(before, after);
                        (s, r)
                    }
                    // No etcd: artstore's rounds only.
                    (true, _, _) => continue,
                    (false, _, _) => {
                        let before = admin.wait_leader(&http, &tok).await?;
                        let w = ArtStoreWriter { url: admin.url(before.id), tok: tok.clone() };
                        let r = load::round(&w, &pool, args.seconds, &format!("c{clients}-r{round}")).await?;
                        let after = admin.wait_leader(&http, &tok).await?;
                        a.leader_changes += leader_changes(before, after);
                        (&mut a, r)
                    }
                };
                let steal = match (steal, host_steal()) {
                    (Some(b), Some(e)) => format!("  host steal {:.1} s", e.saturating_sub(b).as_secs_f64()),
                    _ => String::new(),
                };
                println!("  round {round}/{}  {:<8}  {}{steal}", args.rounds, s.system, r.figures());
                s.rounds.push(r);
            }
        }
        series.push(a);
        series.extend(e);
    }

    println!();
    for s in &series {
        println!("{}", s.summary());
    }
    for &clients in &args.clients {
        let find = |system| series.iter().find(|s| s.system == system && s.clients == clients);
        let Some(a) = find("artstore") else { continue };
        println!("{}", compare(a, find("etcd")));
    }
    for system in ["artstore", "etcd"] {
        let changes: Vec<u64> = series.iter().filter(|s| s.system == system).map(|s| s.leader_changes).collect();
        if !changes.is_empty() {
            let n: u64 = changes.iter().sum();
            println!("elections  {system}: leader changes during load: {n} (goal 0: {})", goal(n == 0));
        }
    }
    drop(etcd); // the failover measurement has the disk to itself

    failover(args, &mut admin, &http, &tok).await
}

/// Grows each system's history by `n` changes of one record: a policy's description in
/// ArtStore, one key's value in etcd (which keeps every revision).
async fn preload_history(
    n: u64,
    admin: &AdminCluster,
    etcd: Option<&EtcdCluster>,
    http: &reqwest::Client,
    tok: &str,
) -> anyhow::Result<()> {
    let l = admin.wait_leader(http, tok).await?;
    let w = ArtStoreWriter { url: admin.url(l.id), tok: tok.to_owned() };
    let r = http.post(format!("{}/api/v1/retention-policies", w.url)).bearer_auth(tok);
    let r = r.json(&policy_body(HISTORY_POLICY)).send().await?;
    anyhow::ensure!(r.status() == 201, "creating the history policy: {} {}", r.status(), r.text().await?);
    let p = load::preload(&w, "artstore", n, HISTORY_CLIENTS).await?;
    println!(
        "history    artstore: {n} policy changes in {:.1} s ({:.0}/s), {} failed",
        p.took.as_secs_f64(),
        n as f64 / p.took.as_secs_f64(),
        p.failed
    );
    if let Some(etcd) = etcd {
        let (url, _) = etcd.wait_leader(http).await?;
        let p = load::preload(&etcd.writer(&url), "etcd", n, HISTORY_CLIENTS).await?;
        println!(
            "history    etcd: {n} puts to one key in {:.1} s ({:.0}/s), {} failed",
            p.took.as_secs_f64(),
            n as f64 / p.took.as_secs_f64(),
            p.failed
        );
    }
    Ok(())
}

/// CPU time the hypervisor gave to others while this machine's CPUs wanted it (`steal` in
/// `/proc/stat`, all CPUs), when the kernel reports it: a round with much of it ran on a
/// busier host, whichever system it measured.
fn host_steal() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: u64 = cpu.split_whitespace().nth(8)?.parse().ok()?;
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Some(Duration::from_millis(ticks * 1000 / per_second))
}

/// The comparison line of one client count: ArtStore against the goals, etcd its yardstick.
fn compare(a: &Series, etcd: Option<&Series>) -> String {
    let all = Round::merge(&a.rounds);
    let first = a.rounds.first().map(|r| r.p(0.99)).unwrap_or_default();
    let last = a.rounds.last().map(|r| r.p(0.99)).unwrap_or_default();
    let flat = format!(
        "(b) flat: last round p99 {} ≤ {FLAT_FACTOR} × first round p99 {}: {}",
        ms(last),
        ms(first),
        goal(last.as_secs_f64() <= FLAT_FACTOR * first.as_secs_f64())
    );
    let lines = match etcd.map(|e| Round::merge(&e.rounds)) {
        None => vec![
            format!(
                "compare    {:>2} clients: artstore p99 {} (no etcd: (a) and (c) not measured)",
                a.clients,
                ms(all.p(0.99))
            ),
            flat,
        ],
        Some(e) => vec![
            format!(
                "compare    {:>2} clients: artstore p99 {} vs etcd p99 {} ({:.2}×)",
                a.clients,
                ms(all.p(0.99)),
                ms(e.p(0.99)),
                all.p(0.99).as_secs_f64() / e.p(0.99).as_secs_f64().max(1e-9)
            ),
            format!("(a) p99 no worse than etcd's: {}", goal(all.p(0.99) <= e.p(0.99))),
            flat,
            format!("(c) throughput {:.0}/s ≥ etcd's {:.0}/s: {}", all.rate(), e.rate(), goal(all.rate() >= e.rate())),
        ],
    };
    lines.join("\n           ")
}

/// SIGKILLs the leader, times the first acknowledged write on a survivor, restarts the
/// killed node and waits for it to catch up before the next kill.
async fn failover(
    args: &AdminBenchArgs,
    admin: &mut AdminCluster,
    http: &reqwest::Client,
    tok: &str,
) -> anyhow::Result<()> {
    let mut times = vec![];
    for k in 0..args.kills {
        let l = admin.wait_leader(http, tok).await?.id;
        admin.kill(l)?;
        let killed = Instant::now();
        let survivors: Vec<String> = admin.live().map(|(id, _)| admin.url(id)).collect();
        let mut i = 0usize;
        let took = loop {
            i += 1;
            let w = ArtStoreWriter { url: survivors[i % survivors.len()].clone(), tok: tok.to_owned() };
            if w.write(http, Change::New(&format!("failover-{k}-{i}"))).await {
                break killed.elapsed();
            }
            anyhow::ensure!(killed.elapsed() < Duration::from_secs(60), "no write succeeded within 60 s of the kill");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        times.push(took);
        println!("failover   kill {} of node {l}: first acknowledged write after {}", k + 1, ms(took));

        let leader = admin.wait_leader(http, tok).await?.id;
        let applied = admin.cluster_state(http, tok, leader).await.and_then(|v| v["last_applied"].as_u64());
        admin.spawn(l)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if admin.cluster_state(http, tok, l).await.is_some_and(|v| rejoined(&v, applied.unwrap_or(0))) {
                break;
            }
            admin.check_running()?;
            anyhow::ensure!(Instant::now() < deadline, "node {l} did not rejoin; see {}", admin.log.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    times.sort();
    if let Some(max) = times.last() {
        println!(
            "failover   {} kills: median {}  max {}  (goal < 1 s in every kill: {})",
            times.len(),
            ms(percentile(&times, 0.5)),
            ms(*max),
            goal(*max < FAILOVER_GOAL)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_view_reads_the_cluster_answer() {
        let v = json!({"node_id": 2, "state": "Leader", "leader": 2, "term": 7, "last_applied": 40});
        assert_eq!(leader_view(&v), Some(LeaderView { id: 2, term: Some(7) }));
        let v = json!({"node_id": 3, "state": "Leader", "current_term": 9});
        assert_eq!(leader_view(&v), Some(LeaderView { id: 3, term: Some(9) }));
        let v = json!({"node_id": 3, "state": "Leader"});
        assert_eq!(leader_view(&v), Some(LeaderView { id: 3, term: None }));
        assert_eq!(leader_view(&json!({"node_id": 1, "state": "Follower", "leader": 2, "term": 7})), None);
        assert_eq!(leader_view(&json!({"detail": "unauthenticated"})), None);
    }

    #[test]
    fn rejoined_needs_a_caught_up_follower() {
        let v = json!({"node_id": 1, "state": "Follower", "leader": 2, "last_applied": 40});
        assert!(rejoined(&v, 40));
        assert!(!rejoined(&v, 41));
        assert!(!rejoined(&json!({"state": "Follower", "leader": null, "last_applied": 40}), 0));
        assert!(!rejoined(&json!({"state": "Candidate", "leader": 2, "last_applied": 40}), 0));
    }
}
