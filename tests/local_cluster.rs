//! `deploy/local-cluster.sh` brings up the whole multi-process cluster (3 admin nodes, 2
//! elements with their PostgreSQL caches, ingester, query, Redis, Kafka, nginx in front),
//! the public API works through the front proxy, `up` is idempotent, `down` stops
//! everything it started and a second `up` finds every document again.

mod support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};
use support::BIN;
use support::cluster::{Cluster, PASSWORD};

fn alive(pid: &str) -> bool {
    std::fs::metadata(format!("/proc/{pid}")).is_ok()
}

/// A seven-year policy `tax` with disposition `dispose`, in `mode`.
async fn create_policy(http: &reqwest::Client, front: &str, token: &str, mode: &str) {
    let r = http
        .post(format!("{front}/api/v1/retention-policies"))
        .bearer_auth(token)
        .json(&json!({"name": "tax", "term": "P7Y", "mode": mode, "disposition": "dispose"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

async fn upload(
    http: &reqwest::Client,
    front: &str,
    token: &str,
    name: &str,
    body: &str,
    policy: Option<&str>,
) -> Value {
    let mut form = reqwest::multipart::Form::new()
        .text("tags", "cluster")
        .part("file", reqwest::multipart::Part::bytes(body.as_bytes().to_vec()).file_name(name.to_owned()));
    if let Some(p) = policy {
        form = form.text("retention_policy", p.to_owned());
    }
    let r = http.post(format!("{front}/api/v1/files")).bearer_auth(token).multipart(form).send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "upload through the front proxy: {v}");
    v
}

/// Waits until a search for `word` through the front finds something.
async fn search_some(http: &reqwest::Client, front: &str, token: &str, word: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = http.get(format!("{front}/api/v1/search?q={word}")).bearer_auth(token).send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or_default();
        if status == 200 && v["total"].as_u64().unwrap_or(0) > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "search for {word} through the front: {status} {v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until a search for `word` through the front finds exactly `ids`.
async fn search_finds(http: &reqwest::Client, front: &str, token: &str, word: &str, ids: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = http.get(format!("{front}/api/v1/search?q={word}")).bearer_auth(token).send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or_default();
        let mut found: Vec<String> = v["hits"]
            .as_array()
            .map(|a| a.iter().filter_map(|i| i["file_id"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        found.sort();
        let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        want.sort();
        if status == 200 && found == want {
            return;
        }
        assert!(Instant::now() < deadline, "search for {word} through the front: {status} {v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_comes_up_serves_through_the_front_and_comes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Cluster::new(tmp.path().join("cluster"));
    let t0 = Instant::now();
    let out = c.up();
    eprintln!("up took {:.1} s", t0.elapsed().as_secs_f64());
    let front = c.front();
    assert!(out.contains(&format!("front:    {front}/")), "{out}");
    assert!(out.contains(&format!("admin password: {PASSWORD}")), "{out}");

    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let token = support::password_token(&http, &front, "admin", PASSWORD).await;
    create_policy(&http, &front, &token, "compliance").await;

    // Kept for years → the rw element first; no retention (temporary) → the edit element first.
    let kept = upload(&http, &front, &token, "kept.txt", "quarterly zeppelin ledger", Some("tax")).await;
    let temp = upload(&http, &front, &token, "temp.txt", "scratch zeppelin notes", None).await;
    assert_eq!(kept["element_id"], "se-2", "{kept}");
    assert_eq!(temp["element_id"], "se-1", "{temp}");
    let (kept_id, temp_id) =
        (kept["file_id"].as_str().unwrap().to_owned(), temp["file_id"].as_str().unwrap().to_owned());
    search_finds(&http, &front, &token, "zeppelin", &[&kept_id, &temp_id]).await;
    let body = http
        .get(format!("{front}/api/v1/files/{kept_id}/content"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "quarterly zeppelin ledger");
    // The web UI through the front (served by the admin nodes).
    let r = http.get(format!("{front}/login")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("<form"), "the sign-in page");
    // An unknown API path is a problem, not a UI page.
    let r = http.get(format!("{front}/api/v1/nothing-here")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    let st = c.script(&["status"]);
    let st_out = String::from_utf8_lossy(&st.stdout);
    assert!(st.status.success(), "status after up:\n{st_out}");
    for part in
        ["admin-1", "admin-2", "admin-3", "se-1", "se-2", "ingester", "query", "nginx", "redis", "postgres", "kafka"]
    {
        assert!(st_out.lines().any(|l| l.starts_with(part) && l.contains("running")), "{part} in:\n{st_out}");
    }

    // up again: nothing restarted.
    let before = c.pids();
    assert!(before.len() >= 9, "{before:?}");
    c.up();
    assert_eq!(c.pids(), before, "a second up restarted something");

    // down: every process it started is gone, the data stays.
    let d = c.script(&["down"]);
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    for (name, pid) in &before {
        assert!(!alive(pid), "{name} (pid {pid}) still runs after down");
    }
    let st = c.script(&["status"]);
    assert_eq!(st.status.code(), Some(3), "status after down:\n{}", String::from_utf8_lossy(&st.stdout));
    assert!(http.get(format!("{front}/")).send().await.is_err(), "the front still answers after down");

    // up again: the same documents, searchable and readable.
    c.up();
    let token = support::password_token(&http, &front, "admin", PASSWORD).await;
    search_finds(&http, &front, &token, "zeppelin", &[&kept_id, &temp_id]).await;
    let r = http.get(format!("{front}/api/v1/files/{temp_id}")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["file_id"], temp_id.as_str());
}

struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool").args(args).output().expect("promtool (scripts/services.sh installs prometheus)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

async fn prom_query(http: &reqwest::Client, prom: &str, expr: &str) -> Value {
    http.post(format!("{prom}/api/v1/query")).form(&[("query", expr)]).send().await.unwrap().json().await.unwrap()
}

/// A real Prometheus scrapes every role of the local cluster with deploy/prometheus's rules:
/// the rules load and pass their unit tests, every role's metrics pass promtool's lint, and
/// every panel of every dashboard in deploy/grafana returns data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_cluster_and_every_dashboard_panel_has_data() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
    promtool(&["check", "config", &format!("{root}/prometheus/prometheus.yml")]);
    promtool(&["check", "rules", &format!("{root}/prometheus/rules.yml")]);
    let t = promtool(&["test", "rules", &format!("{root}/prometheus/rules_test.yml")]);
    assert!(t.contains("SUCCESS"), "{t}");

    let tmp = tempfile::tempdir().unwrap();
    let c = Cluster::new(tmp.path().join("cluster"));
    c.up();
    let front = c.front();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let token = support::password_token(&http, &front, "admin", PASSWORD).await;

    // Every role's exposition passes promtool's lint. (Counters are written in the
    // OpenMetrics form, HELP on the family without `_total`, which promtool's text parser
    // reports as "no help text"; that one finding is not a naming problem.)
    let ports = [1, 2, 3, 11, 12, 21, 31];
    for p in ports {
        let text =
            http.get(format!("http://127.0.0.1:{}/metrics", c.base + p)).send().await.unwrap().text().await.unwrap();
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let findings: Vec<String> =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.ends_with("_total no help text"))
                .map(str::to_owned)
                .collect();
        assert!(findings.is_empty(), "promtool check metrics on port +{p}: {findings:?}");
    }

    let prom_port = support::free_port();
    let job = |name: &str, offsets: &[u16]| {
        let targets: Vec<String> = offsets.iter().map(|o| format!("\"127.0.0.1:{}\"", c.base + o)).collect();
        format!("  - job_name: {name}\n    static_configs:\n      - targets: [{}]\n", targets.join(", "))
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {root}/prometheus/rules.yml\nscrape_configs:\n{}{}{}{}",
        job("artstore-admin", &[1, 2, 3]),
        job("artstore-element", &[11, 12]),
        job("artstore-ingester", &[21]),
        job("artstore-query", &[31]),
    );
    std::fs::write(tmp.path().join("prometheus.yml"), config).unwrap();
    let log = std::fs::File::create(tmp.path().join("prometheus.log")).unwrap();
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", tmp.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", tmp.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (scripts/services.sh installs it)"),
    );
    let prom = format!("http://127.0.0.1:{prom_port}");

    // Traffic for every panel: a policy, uploads of two size classes, searches.
    create_policy(&http, &front, &token, "governance").await;
    let big = "lighthouse ".repeat(10_000);
    for (i, body) in ["small lighthouse log", big.as_str(), "another lighthouse"].into_iter().enumerate() {
        upload(&http, &front, &token, &format!("d{i}.txt"), body, (i != 1).then_some("tax")).await;
    }
    // Searches for the query role's panels (this test is about the metrics; indexing of
    // every document is the other tests' business).
    search_some(&http, &front, &token, "lighthouse").await;

    // Every target up.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = prom_query(&http, &prom, "up").await;
        let up: Vec<&Value> = v["data"]["result"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
        if up.len() == ports.len() && up.iter().all(|s| s["value"][1] == "1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus does not see every role up: {v}\n{}",
            std::fs::read_to_string(tmp.path().join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for _ in 0..5 {
        search_some(&http, &front, &token, "lighthouse").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Every panel's every query returns at least one series.
    let mut checked = 0;
    let mut empty = Vec::new();
    for entry in std::fs::read_dir(format!("{root}/grafana")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in d["panels"].as_array().unwrap() {
            for t in panel["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap().replace("$__rate_interval", "1m");
                let deadline = Instant::now() + Duration::from_secs(30);
                let result = loop {
                    let v = prom_query(&http, &prom, &expr).await;
                    assert_eq!(v["status"], "success", "{}: {expr}: {v}", path.display());
                    let n = v["data"]["result"].as_array().map_or(0, Vec::len);
                    if n > 0 || Instant::now() > deadline {
                        break n;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                };
                if result == 0 {
                    empty.push(format!("{} / {}: {expr}", path.file_name().unwrap().to_string_lossy(), panel["title"]));
                }
                checked += 1;
            }
        }
    }
    assert!(empty.is_empty(), "panels without data:\n{}", empty.join("\n"));
    assert!(checked >= 50, "only {checked} panel queries found");

    // Every rule evaluates without error.
    let v: Value = http.get(format!("{prom}/api/v1/rules")).send().await.unwrap().json().await.unwrap();
    let mut rules = 0;
    for g in v["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            assert_eq!(r["health"], "ok", "rule {} does not evaluate: {}", r["name"], r["lastError"]);
            rules += 1;
        }
    }
    // Every rule of deploy/prometheus/rules.yml is loaded.
    let file: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(format!("{root}/prometheus/rules.yml")).unwrap()).unwrap();
    let in_file: usize =
        file["groups"].as_sequence().unwrap().iter().map(|g| g["rules"].as_sequence().map_or(0, Vec::len)).sum();
    assert!(in_file >= 20, "only {in_file} rules in rules.yml");
    assert_eq!(rules, in_file, "Prometheus loaded {rules} of the {in_file} rules in rules.yml");
    // A healthy cluster raises no alert but the ones that need no fault to fire.
    let v: Value = http.get(format!("{prom}/api/v1/alerts")).send().await.unwrap().json().await.unwrap();
    let firing: Vec<&Value> =
        v["data"]["alerts"].as_array().unwrap().iter().filter(|a| a["state"] == "firing").collect();
    assert!(firing.is_empty(), "alerts firing on a healthy cluster: {firing:?}");
    eprintln!("{checked} panel queries returned data; {rules} rules healthy");
}

/// The design brief's promise for the whole system: with every database gone (each
/// element's PostgreSQL cache dropped, Redis flushed, the Kafka topic deleted, the search
/// index deleted), the files rebuild everything: every element's listing and sidecars,
/// every version list and every search answer are identical to before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_system_restore_drill_rebuilds_everything_from_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Cluster::new(tmp.path().join("cluster"));
    c.up();
    let front = c.front();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let token = support::password_token(&http, &front, "admin", PASSWORD).await;
    create_policy(&http, &front, &token, "governance").await;

    // Documents of every kind: kept and temporary, tagged, two versions, on hold, deleted.
    let kept = upload(&http, &front, &token, "ledger.txt", "orchard ledger for the year", Some("tax")).await;
    let temp = upload(&http, &front, &token, "scratch.txt", "orchard scratch notes", None).await;
    let v1 = upload(&http, &front, &token, "contract.txt", "orchard contract first draft", Some("tax")).await;
    let doc = v1["document_id"].as_str().unwrap().to_owned();
    let form = reqwest::multipart::Form::new()
        .text("document_id", doc.clone())
        .text("retention_policy", "tax")
        .text("tags", "signed")
        .part("file", reqwest::multipart::Part::bytes(b"orchard contract signed".to_vec()).file_name("contract.txt"));
    let r = http.post(format!("{front}/api/v1/files")).bearer_auth(&token).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let v2: Value = r.json().await.unwrap();
    let held = upload(&http, &front, &token, "held.txt", "orchard dispute evidence", Some("tax")).await;
    let held_id = held["file_id"].as_str().unwrap();
    let r = http
        .put(format!("{front}/api/v1/files/{held_id}/legal-hold"))
        .bearer_auth(&token)
        .json(&json!({"enabled": true, "reason": "case 42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let gone = upload(&http, &front, &token, "gone.txt", "orchard mistake", None).await;
    let gone_id = gone["file_id"].as_str().unwrap();
    // Indexed before it is deleted: the search that waits for exactly the live documents
    // below then also waits for the deletion, not just for an index that has not seen it yet.
    search_finds(&http, &front, &token, "mistake", &[gone_id]).await;
    let r = http.delete(format!("{front}/api/v1/files/{gone_id}")).bearer_auth(&token).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let live: Vec<&str> = [&kept, &temp, &v1, &v2, &held].iter().map(|v| v["file_id"].as_str().unwrap()).collect();

    let elements = [format!("http://127.0.0.1:{}", c.base + 11), format!("http://127.0.0.1:{}", c.base + 12)];
    // Everything the archive answers, as a client sees it.
    let snapshot = |http: reqwest::Client, token: String| {
        let (front, elements, doc) = (front.clone(), elements.clone(), doc.clone());
        async move {
            let mut out = BTreeMap::new();
            for (i, e) in elements.iter().enumerate() {
                let mut items = support::list_all(&http, e, &token, "").await;
                items.sort_by(|a, b| a["file_id"].as_str().cmp(&b["file_id"].as_str()));
                out.insert(format!("listing se-{}", i + 1), Value::Array(items));
            }
            let versions: Value =
                support::get_json(&http, &format!("{front}/api/v1/documents/{doc}/versions"), &token).await;
            out.insert("versions".to_owned(), versions);
            for q in ["orchard", "contract", "ledger", ""] {
                let v = support::get_json(&http, &format!("{front}/api/v1/search?q={q}&limit=100&facets=tags"), &token)
                    .await;
                let mut ids: Vec<String> =
                    v["hits"].as_array().unwrap().iter().map(|h| h["file_id"].as_str().unwrap().to_owned()).collect();
                ids.sort();
                out.insert(format!("search {q:?}"), json!({"total": v["total"], "ids": ids, "facets": v["facets"]}));
            }
            out
        }
    };
    search_finds(&http, &front, &token, "orchard", &live).await;
    let before = snapshot(http.clone(), token.clone()).await;

    // Every database goes: the roles stop, the caches are dropped, Redis is flushed, the
    // events topic and the search index are deleted.
    for part in ["query", "ingester", "se-1", "se-2"] {
        let out = c.script(&["stop", part]);
        assert!(out.status.success(), "stop {part}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let pg = format!("postgres://postgres@127.0.0.1:{}", c.base + 32);
    for db in ["artstore_se_1", "artstore_se_2"] {
        for sql in [format!("drop database {db}"), format!("create database {db}")] {
            let out = Command::new("psql").arg(format!("{pg}/postgres")).args(["-qc", &sql]).output().unwrap();
            assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let out = Command::new("redis-cli").args(["-p", &(c.base + 79).to_string(), "flushall"]).output().unwrap();
    assert!(out.status.success());
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh"))
        .args(["tool", "org.apache.kafka.tools.TopicCommand", "--bootstrap-server"])
        .arg(format!("127.0.0.1:{}", c.base + 92))
        .args(["--delete", "--topic", "artstore.events"])
        .env("ARTSTORE_KAFKA_DIR", c.dir.join("kafka"))
        .env("ARTSTORE_KAFKA_PORT", (c.base + 92).to_string())
        .env("ARTSTORE_KAFKA_CONTROLLER_PORT", (c.base + 93).to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "topic delete: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(c.dir.join("query")).unwrap();

    // Rebuild from the files, and start again.
    for id in ["se-1", "se-2"] {
        let out = Command::new(BIN)
            .args(["storage-element", "rebuild-cache", "--data"])
            .arg(c.dir.join(id))
            .arg("--cache")
            .arg(format!("{pg}/artstore_{}", id.replace('-', "_")))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "rebuild-cache {id}: {text}{}", String::from_utf8_lossy(&out.stderr));
        eprintln!("{id}: {}", text.trim());
    }
    for part in ["se-1", "se-2", "ingester", "query"] {
        let out = c.script(&["start", part]);
        assert!(out.status.success(), "start {part}: {}", String::from_utf8_lossy(&out.stderr));
    }
    search_finds(&http, &front, &token, "orchard", &live).await;
    let after = snapshot(http.clone(), token.clone()).await;
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "{k} differs after the restore drill");
    }
    assert_eq!(after.len(), before.len());
    // The deleted document stays deleted, the hold stays.
    let r = http.get(format!("{front}/api/v1/files/{held_id}")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["retention"]["legal_hold"], true);
}
