//! A bounded open-loop load through the local cluster's front proxy (`artstore bench load`:
//! uploads and searches at a fixed arrival rate, latency from when each request was due):
//! zero errors, every request answered, and every role's memory flat. CI runs a short
//! profile (`ARTSTORE_LOAD_SECS`, default 40); the full ten minutes runs as `artstore bench
//! load` against `deploy/local-cluster.sh up` (README, Benchmarks).

mod support;

use serde_json::Value;
use std::process::Command;
use support::BIN;
use support::cluster::{Cluster, PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_load_through_the_front_has_no_errors_and_flat_memory() {
    let secs: u64 = std::env::var("ARTSTORE_LOAD_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let tmp = tempfile::tempdir().unwrap();
    let c = Cluster::new(tmp.path().join("cluster"));
    c.up();
    let report = tmp.path().join("load.json");
    // admin-1, se-1, se-2, the ingester and the query role.
    let metrics: Vec<String> = [1u16, 11, 12, 21, 31].iter().map(|o| format!("{}/metrics", c.url(*o))).collect();
    let mut cmd = Command::new(BIN);
    cmd.args(["bench", "load", "--url", &c.front(), "--password", PASSWORD, "--duration-secs", &secs.to_string()])
        .args(["--uploads-per-sec", "4", "--searches-per-sec", "8", "--size-bytes", "8192", "--json"])
        .arg(&report);
    for m in &metrics {
        cmd.args(["--metrics", m]);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(out.status.success(), "bench load failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();

    assert_eq!(r["errors"], 0, "errors under load: {r}");
    for stream in ["uploads", "searches", "baseline"] {
        let s = &r[stream];
        assert!(s["due"].as_u64().unwrap() > 0, "{stream}: nothing was sent");
        assert_eq!(s["due"], s["ok"], "{stream}: every request due was answered: {s}");
    }
    // The arrival rate was held: at least 90 % of the uploads the rate asks for.
    assert!(r["uploads"]["due"].as_u64().unwrap() as f64 >= 4.0 * secs as f64 * 0.9, "{r}");
    // Memory flat: no role grew by more than half (plus 64 MiB of slack for caches filling
    // in a short run) after the warm-up.
    for m in r["memory"].as_array().unwrap() {
        let (warm, end) = (m["after_warmup_mib"].as_f64().unwrap(), m["end_mib"].as_f64().unwrap());
        assert!(m["samples"].as_u64().unwrap() >= 2, "{m}");
        assert!(warm > 0.0 && end <= warm * 1.5 + 64.0, "memory of {} grew from {warm:.1} to {end:.1} MiB", m["url"]);
    }
}
