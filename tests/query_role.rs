//! The query role as a whole binary: a real storage element publishing to the real Kafka
//! broker on 127.0.0.1:9092 (started by `scripts/services.sh`), and `artstore query`
//! following its events into a tantivy index.
//!
//! - search across formats (text, windows-1251 Russian, HTML, DOCX, a broken PDF, a binary
//!   file) and languages, with stemming, phrases, fuzzy and prefix terms, highlights,
//!   facets, syntax errors, metadata changes and tombstones;
//! - reads through the role to the element (content, ranges, ETags, versions) and a 503
//!   naming the element when it is gone;
//! - a role SIGKILLed mid-indexing and restarted ends with the same index a clean reindex
//!   makes, and `check-index` finds no drift;
//! - `check-index` names missing, stale and extra documents and repairs them;
//! - an online rebuild swaps in while searches go on.
//!
//! A missing broker fails the tests (no silent skips).

mod support;

use artstore_shared::auth::{JWKS_FILE, LocalSigner};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use support::{BIN, Element, free_port};

const KAFKA: &str = "127.0.0.1:9092";

// ----------------------------------------------------------------------------------------
// Set-up: keys, tokens, the broker check, log tails
// ----------------------------------------------------------------------------------------

struct Setup {
    tmp: tempfile::TempDir,
    jwks: PathBuf,
    writer: String,
    reader: String,
    auditor: String,
    admin: String,
    /// The query role's own token (reader).
    service: String,
    topic: String,
    group: String,
}

impl Setup {
    fn new() -> Setup {
        require_kafka();
        let tmp = tempfile::Builder::new().prefix("artstore-query-").tempdir().unwrap();
        let keys = tmp.path().join("keys");
        let signer = LocalSigner::load_or_create(&keys).unwrap();
        let mint = |sub: &str, role: &str| {
            signer.issue(sub, &[role.to_owned()], Duration::from_secs(3600), chrono::Utc::now()).unwrap()
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        Setup {
            jwks: keys.join(JWKS_FILE),
            writer: mint("test-writer", "writer"),
            reader: mint("test-reader", "reader"),
            auditor: mint("test-auditor", "auditor"),
            admin: mint("test-admin", "admin"),
            service: mint("query-service", "reader"),
            topic: format!("artstore.test.query.{id}"),
            group: format!("artstore-query-test-{id}"),
            tmp,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// An element publishing to this test's topic.
    fn element(&self, name: &str, id: &str, kafka: bool) -> Element {
        let root = self.path(name);
        let log = self.path(&format!("{name}.log"));
        let mut args = vec!["--element-id", id];
        if kafka {
            args.extend(["--kafka", KAFKA, "--kafka-topic", &self.topic]);
        }
        Element::start(&root, &self.jwks, &log, &args)
    }
}

/// The tests need the broker: fail loudly when it does not answer (CI or not).
fn require_kafka() {
    let addr: std::net::SocketAddr = KAFKA.parse().unwrap();
    if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).is_err() {
        panic!(
            "no Kafka broker on {KAFKA}{}: start it with `bash scripts/kafka.sh ensure` (or scripts/services.sh)",
            if std::env::var_os("CI").is_some() { " (CI is set)" } else { "" }
        );
    }
}

/// The last `n` lines of a log file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("<{}: {e}>", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Tails of every `*.log` file of the test, for failure messages.
fn logs(s: &Setup) -> String {
    let mut out = String::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(s.tmp.path())
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "log")).collect()
        })
        .unwrap_or_default();
    files.sort();
    for f in files {
        out.push_str(&format!("\n----- {} (last 40 lines) -----\n{}\n", f.display(), tail(&f, 40)));
    }
    out
}

/// `assert!` that adds the tails of the test's logs.
macro_rules! check {
    ($s:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            panic!("{}\n{}", format!($($fmt)+), logs($s));
        }
    };
}

// ----------------------------------------------------------------------------------------
// The query role process
// ----------------------------------------------------------------------------------------

struct Query {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Query {
    /// Starts `artstore query` on `index`, reading the elements `elements` (`ID=URL,…`);
    /// follows this test's topic when `kafka`.
    fn start(s: &Setup, index: &Path, elements: &str, log_name: &str, kafka: bool) -> Query {
        let port = free_port();
        let log = s.path(log_name);
        let logf = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("query")
            .args(["--listen", &format!("127.0.0.1:{port}"), "--index"])
            .arg(index)
            .arg("--jwks")
            .arg(&s.jwks)
            .args(["--elements", elements, "--service-token", &s.service, "--log-format", "json"]);
        if kafka {
            cmd.args(["--kafka", KAFKA, "--kafka-topic", &s.topic, "--consumer-group", &s.group]).args([
                "--kafka-option",
                "session.timeout.ms=6000",
                "--kafka-option",
                "heartbeat.interval.ms=500",
            ]);
        }
        let child = cmd.stdout(Stdio::null()).stderr(logf).spawn().unwrap();
        Query { child, base: format!("http://127.0.0.1:{port}"), log }
    }

    /// Waits for `/health/ready` to answer 200 (degraded discovery still counts as ready).
    async fn wait_ready(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("the query role exited early ({st}):\n{}", tail(&self.log, 60));
            }
            let last = match client.get(format!("{}/health/ready", self.base)).send().await {
                Ok(r) if r.status() == 200 => return,
                Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            assert!(Instant::now() < deadline, "query role not ready in 60 s (last: {last}):\n{}", tail(&self.log, 60));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (≤ 30 s) for the exit.
    fn stop(&mut self) -> Option<ExitStatus> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        None
    }
}

impl Drop for Query {
    fn drop(&mut self) {
        self.kill();
    }
}

// ----------------------------------------------------------------------------------------
// HTTP helpers
// ----------------------------------------------------------------------------------------

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// `GET /api/v1/search` with these parameters: status and JSON body.
async fn search(c: &reqwest::Client, base: &str, token: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let url = reqwest::Url::parse_with_params(&format!("{base}/api/v1/search"), params).unwrap();
    let r = c.get(url).bearer_auth(token).send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// The file ids of a search answer's hits, in order.
fn ids(v: &Value) -> Vec<String> {
    v["hits"]
        .as_array()
        .map(|h| h.iter().filter_map(|x| x["file_id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn hit<'a>(v: &'a Value, id: &str) -> Option<&'a Value> {
    v["hits"].as_array()?.iter().find(|h| h["file_id"] == id)
}

/// Polls a search until `pred` holds on a 200 answer; the answer, or the last one seen.
async fn wait_search(
    c: &reqwest::Client,
    base: &str,
    token: &str,
    params: &[(&str, &str)],
    secs: u64,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value, (u16, Value)> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (st, v) = search(c, base, token, params).await;
        if st == 200 && pred(&v) {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err((st, v));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn index_status(c: &reqwest::Client, base: &str, token: &str) -> Value {
    match c.get(format!("{base}/api/v1/index")).bearer_auth(token).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// Waits until the index holds `n` documents; the last status.
async fn wait_documents(c: &reqwest::Client, base: &str, token: &str, n: u64, secs: u64) -> Result<Value, Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = index_status(c, base, token).await;
        if v["documents"].as_u64() == Some(n) && v["rebuild"]["running"] != true {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn upload_ok(
    s: &Setup,
    c: &reqwest::Client,
    base: &str,
    name: &str,
    body: Vec<u8>,
    fields: &[(&str, &str)],
) -> Value {
    let (st, v) = support::upload(c, base, &s.writer, name, body, fields).await;
    check!(s, st == 201, "upload {name}: {st} {v}");
    v
}

async fn patch_description(s: &Setup, c: &reqwest::Client, base: &str, id: &str, description: &str) -> Value {
    let r = c
        .patch(format!("{base}/api/v1/files/{id}"))
        .bearer_auth(&s.writer)
        .json(&json!({ "description": description }))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    check!(s, st == 200, "PATCH {id}: {st} {v}");
    v
}

async fn delete_file(s: &Setup, c: &reqwest::Client, base: &str, id: &str) -> Value {
    let r = c.delete(format!("{base}/api/v1/files/{id}")).bearer_auth(&s.writer).send().await.unwrap();
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    check!(s, st == 200, "DELETE {id}: {st} {v}");
    v
}

fn id_of(v: &Value) -> String {
    v["file_id"].as_str().unwrap().to_owned()
}

/// Runs an `artstore query …` tool; exit status and stdout (stderr appended to the log).
fn tool(s: &Setup, args: &[&str], log_name: &str) -> (ExitStatus, String) {
    let out = Command::new(BIN).arg("query").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(s.path(log_name)).unwrap();
    use std::io::Write as _;
    let _ = writeln!(
        log,
        "$ artstore query {}\n{stdout}{stderr}exit: {}",
        args.join(" ").replace(&s.service, "<token>"),
        out.status
    );
    (out.status, stdout)
}

// ----------------------------------------------------------------------------------------
// Documents
// ----------------------------------------------------------------------------------------

/// A minimal DOCX: the parts Word needs to open it, the text in `word/document.xml`.
fn docx(paragraphs: &[&str]) -> Vec<u8> {
    use std::io::Write as _;
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let o = zip::write::SimpleFileOptions::default();
    let content_types = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>"#;
    let rels = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>"#;
    let body: String =
        paragraphs.iter().map(|p| format!("<w:p><w:r><w:t xml:space=\"preserve\">{p}</w:t></w:r></w:p>")).collect();
    let document = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>{body}</w:body></w:document>"#
    );
    for (name, text) in
        [("[Content_Types].xml", content_types), ("_rels/.rels", rels), ("word/document.xml", document.as_str())]
    {
        z.start_file(name, o).unwrap();
        z.write_all(text.as_bytes()).unwrap();
    }
    z.finish().unwrap().into_inner()
}

/// Random bytes with NULs at odd and even places (and no byte order mark).
fn binary_blob() -> Vec<u8> {
    use rand::Rng as _;
    let mut b = vec![0u8; 4096];
    rand::rng().fill(&mut b[..]);
    b[0] = 0x00;
    b[1] = 0x01;
    for i in (7..b.len()).step_by(97) {
        b[i] = 0;
    }
    b
}

// ----------------------------------------------------------------------------------------
// 1. Search follows the events, across formats and languages
// ----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_follows_events_across_formats_and_languages() {
    let s = Setup::new();
    let c = client();
    let el = s.element("element", "se-1", true);
    el.wait_ready(&c).await;
    let mut q = Query::start(&s, &s.path("index"), &format!("se-1={}", el.base), "query.log", true);
    q.wait_ready(&c).await;
    let qb = q.base.clone();

    // Warm-up: the consumer group has joined once this is searchable.
    let warm = upload_ok(&s, &c, &el.base, "warmup.txt", b"warm up document about zebrafish".to_vec(), &[]).await;
    let warm_id = id_of(&warm);
    let r = wait_search(&c, &qb, &s.reader, &[("q", "zebrafish")], 30, |v| ids(v).contains(&warm_id)).await;
    check!(
        &s,
        r.is_ok(),
        "the warm-up document never became searchable: {r:?}\nindex: {}",
        index_status(&c, &qb, &s.reader).await
    );

    // English: time from the 201 to the first visible hit.
    let en =
        upload_ok(&s, &c, &el.base, "supply.txt", b"The supply contracts were signed in March.".to_vec(), &[]).await;
    let acked = Instant::now();
    let en_id = id_of(&en);
    let r = wait_search(&c, &qb, &s.reader, &[("q", "contract")], 10, |v| ids(v).contains(&en_id)).await;
    let visible = acked.elapsed();
    check!(&s, r.is_ok(), "English document not searchable in 10 s: {r:?}");
    let status = index_status(&c, &qb, &s.reader).await;
    eprintln!(
        "visibility: upload 201 -> first hit in {} ms (feed last_visibility_ms {})",
        visible.as_millis(),
        status["feed"]["last_visibility_ms"]
    );
    check!(&s, visible < Duration::from_secs(5), "English document took {visible:?} to become searchable (goal 1 s)");

    // Russian in windows-1251 (no charset declared).
    let ru_text = "Договоры поставки подписаны в марте. Стороны согласовали условия оплаты, сроки доставки \
                   товара и порядок приёмки продукции на складе покупателя.";
    let (ru_bytes, _, unmappable) = encoding_rs::WINDOWS_1251.encode(ru_text);
    assert!(!unmappable);
    let ru = upload_ok(&s, &c, &el.base, "dogovor.txt", ru_bytes.into_owned(), &[]).await;
    let ru_id = id_of(&ru);

    let html = b"<!DOCTYPE html><html><head><title>Receipts</title>\
        <script>var scriptonlyword = '<b>x</b>';</script></head>\
        <body><p>Monthly invoice &amp; receipt archive. The text &lt;script&gt;alert(1)&lt;/script&gt; \
        is shown, not run.</p></body></html>";
    let html_doc = upload_ok(&s, &c, &el.base, "receipts.html", html.to_vec(), &[]).await;
    let html_id = id_of(&html_doc);

    let docx_doc = upload_ok(
        &s,
        &c,
        &el.base,
        "review.docx",
        docx(&["Board minutes", "The quarterly audit found no material issues."]),
        &[],
    )
    .await;
    let docx_id = id_of(&docx_doc);

    let pdf = upload_ok(&s, &c, &el.base, "broken.pdf", b"%PDF-1.4\n garbage".to_vec(), &[]).await;
    let pdf_id = id_of(&pdf);

    let blob = upload_ok(&s, &c, &el.base, "blob.txt", binary_blob(), &[]).await;
    let blob_id = id_of(&blob);

    let uploaded = [&warm, &en, &ru, &html_doc, &docx_doc, &pdf, &blob];
    for d in uploaded {
        let id = id_of(d);
        let r =
            wait_search(&c, &qb, &s.reader, &[("q", format!("file_id:{id}").as_str())], 10, |v| ids(v) == [id.clone()])
                .await;
        check!(&s, r.is_ok(), "{} ({id}) not in the index after 10 s: {r:?}", d["original_name"]);
    }

    // Stemming, phrases, fuzzy and prefix terms.
    let find = |text: &'static str| {
        let (c, qb, t) = (c.clone(), qb.clone(), s.reader.clone());
        async move { search(&c, &qb, &t, &[("q", text)]).await }
    };
    for query in ["contract", "\"supply contracts\"", "contrakt~1", "contr*", "signing"] {
        let (st, v) = find(query).await;
        check!(&s, st == 200 && ids(&v).contains(&en_id), "q={query} did not find the English document: {st} {v}");
    }
    let (st, v) = find("\"supply signed\"").await;
    check!(
        &s,
        st == 200 && !ids(&v).contains(&en_id),
        "the phrase \"supply signed\" matched words that are not adjacent: {v}"
    );
    let (_, v) = find("contract").await;
    let h = hit(&v, &en_id).unwrap();
    let marked = h["highlights"]["content"].to_string();
    check!(&s, marked.contains("<mark>"), "no <mark> in the English highlight: {h}");
    eprintln!("English hit: language {}, highlights {}", h["language"], h["highlights"]);

    let (st, v) = find("договор").await;
    check!(&s, st == 200 && ids(&v).contains(&ru_id), "q=договор did not find the windows-1251 document: {st} {v}");
    let h = hit(&v, &ru_id).unwrap();
    let marked = h["highlights"]["content"].to_string();
    check!(
        &s,
        marked.contains("<mark>Договоры</mark>"),
        "Russian highlight (decoded text?) lacks <mark>Договоры</mark>: {h}"
    );
    check!(&s, h["language"] == "ru", "Russian document's language: {}", h["language"]);
    let (_, v) = find("поставка").await;
    check!(&s, ids(&v).contains(&ru_id), "q=поставка (stemmed) did not find the Russian document: {v}");

    let (st, v) = find("invoice").await;
    check!(&s, st == 200 && ids(&v).contains(&html_id), "q=invoice did not find the HTML document: {st} {v}");
    let h = hit(&v, &html_id).unwrap();
    let marked = h["highlights"]["content"].as_array().cloned().unwrap_or_default();
    let joined: String = marked.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" … ");
    check!(
        &s,
        joined.contains("<mark>invoice</mark>") || joined.contains("<mark>Invoice</mark>"),
        "HTML highlight: {h}"
    );
    check!(&s, !joined.contains("<script") && !joined.contains("<b>"), "HTML highlight carries raw markup: {joined}");
    check!(&s, joined.contains("&amp;"), "HTML highlight does not escape &: {joined}");
    let (_, v) = find("scriptonlyword").await;
    check!(&s, !ids(&v).contains(&html_id), "the text of a <script> element was indexed: {v}");

    let (st, v) = find("quarterly audit").await;
    check!(&s, st == 200 && ids(&v).contains(&docx_id), "q=quarterly audit did not find the DOCX: {st} {v}");
    check!(&s, hit(&v, &docx_id).unwrap()["extraction"] == "ok", "DOCX extraction: {}", hit(&v, &docx_id).unwrap());

    // Broken and binary content: found by name, extraction failed with a reason.
    for (query, id) in [("name:blob", &blob_id), ("blob", &blob_id), ("name:broken", &pdf_id), ("broken", &pdf_id)] {
        let (st, v) = find(query).await;
        check!(&s, st == 200 && ids(&v).contains(id), "q={query} did not find {id}: {st} {v}");
        let h = hit(&v, id).unwrap();
        check!(
            &s,
            h["extraction"] == "failed",
            "q={query}: extraction of {id} is {} (want failed): {h}",
            h["extraction"]
        );
        let reason = h["extraction_reason"].as_str().unwrap_or_default();
        check!(&s, !reason.trim().is_empty(), "q={query}: no extraction_reason: {h}");
        eprintln!("{}: extraction failed: {reason}", h["name"]);
    }

    // Facets: counts by content type.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for d in uploaded {
        *want.entry(d["content_type"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    let (st, v) = search(&c, &qb, &s.reader, &[("q", ""), ("facets", "content_type")]).await;
    check!(&s, st == 200, "facets: {st} {v}");
    let got: BTreeMap<String, u64> = v["facets"]["content_type"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|b| (b["value"].as_str().unwrap_or_default().to_owned(), b["count"].as_u64().unwrap_or(0)))
        .collect();
    check!(&s, got == want, "content_type facet {got:?}, want {want:?} (answer {v})");
    check!(&s, v["total"] == uploaded.len(), "total {} for the empty query, want {}", v["total"], uploaded.len());
    check!(&s, want.get("text/plain") == Some(&4) && want.get("text/html") == Some(&1), "content types: {want:?}");

    // A syntax error names its position.
    let r = c
        .get(reqwest::Url::parse_with_params(&format!("{qb}/api/v1/search"), &[("q", "\"unclosed")]).unwrap())
        .bearer_auth(&s.reader)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    check!(
        &s,
        st == 400 && ct.starts_with("application/problem+json") && v["position"].is_u64(),
        "q=\"unclosed: {st} {ct} {v}"
    );

    // POST /api/v1/search takes the same as JSON.
    let r = c
        .post(format!("{qb}/api/v1/search"))
        .bearer_auth(&s.reader)
        .json(&json!({"q": "contract", "facets": "content_type"}))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    check!(&s, st == 200 && ids(&v).contains(&en_id), "POST /api/v1/search: {st} {v}");

    // A new description is searchable.
    let patched = patch_description(&s, &c, &el.base, &en_id, "Zanzibar harbour shipment").await;
    let rev = patched["revision"].as_u64().unwrap();
    let r = wait_search(&c, &qb, &s.reader, &[("q", "zanzibar")], 10, |v| {
        hit(v, &en_id).is_some_and(|h| h["revision"].as_u64() == Some(rev))
    })
    .await;
    check!(&s, r.is_ok(), "the new description (revision {rev}) was not searchable in 10 s: {r:?}");
    let (_, v) = find("contract").await;
    check!(&s, ids(&v).contains(&en_id), "after the PATCH the content no longer matches: {v}");

    // A deleted document leaves default searches; auditors find the tombstone.
    delete_file(&s, &c, &el.base, &docx_id).await;
    let r = wait_search(&c, &qb, &s.reader, &[("q", "quarterly")], 10, |v| !ids(v).contains(&docx_id)).await;
    check!(&s, r.is_ok(), "the deleted DOCX is still found by default after 10 s: {r:?}");
    let (st, v) = search(&c, &qb, &s.auditor, &[("q", ""), ("state", "deleted")]).await;
    check!(&s, st == 200 && ids(&v) == [docx_id.clone()], "auditor, state=deleted: {st} {v}");
    check!(&s, hit(&v, &docx_id).unwrap()["state"] == "deleted", "tombstone hit: {v}");
    let (st, v) = search(&c, &qb, &s.auditor, &[("q", "")]).await;
    check!(&s, st == 200 && !ids(&v).contains(&docx_id), "auditor without state=deleted sees the tombstone: {v}");
    let (st, v) = search(&c, &qb, &s.reader, &[("q", ""), ("state", "deleted")]).await;
    check!(&s, st == 403, "reader, state=deleted: {st} {v}");
    drop(q);
}

// ----------------------------------------------------------------------------------------
// 2. Reads through to the element
// ----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_through_and_versions() {
    let s = Setup::new();
    let c = client();
    let mut el = s.element("element", "se-1", true);
    el.wait_ready(&c).await;
    let mut q = Query::start(&s, &s.path("index"), &format!("se-1={}", el.base), "query.log", true);
    q.wait_ready(&c).await;
    let qb = q.base.clone();

    let body = b"Read-through body: 0123456789 abcdefghij".to_vec();
    let v1 = upload_ok(&s, &c, &el.base, "readme.txt", body.clone(), &[("description", "first version")]).await;
    let id = id_of(&v1);
    let doc = v1["document_id"].as_str().unwrap().to_owned();
    let v2 =
        upload_ok(&s, &c, &el.base, "readme.txt", b"second version".to_vec(), &[("document_id", doc.as_str())]).await;
    let id2 = id_of(&v2);
    for i in [&id, &id2] {
        let r =
            wait_search(&c, &qb, &s.reader, &[("q", format!("file_id:{i}").as_str())], 30, |v| ids(v).len() == 1).await;
        check!(&s, r.is_ok(), "{i} not searchable in 30 s: {r:?}");
    }

    // Content, byte ranges, conditional reads.
    let url = format!("{qb}/api/v1/files/{id}/content");
    let r = c.get(&url).bearer_auth(&s.reader).send().await.unwrap();
    let st = r.status().as_u16();
    let etag = r.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let element_hdr = r.headers().get("artstore-element-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let got = r.bytes().await.unwrap();
    check!(&s, st == 200 && got[..] == body[..], "GET content: {st}, {} bytes (want {})", got.len(), body.len());
    check!(&s, element_hdr.as_deref() == Some("se-1"), "artstore-element-id: {element_hdr:?}");
    let etag = etag.unwrap_or_else(|| panic!("no ETag on the content read{}", logs(&s)));

    let r = c.get(&url).bearer_auth(&s.reader).header("range", "bytes=0-3").send().await.unwrap();
    let st = r.status().as_u16();
    let cr = r.headers().get("content-range").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let got = r.bytes().await.unwrap();
    check!(&s, st == 206 && got[..] == body[..4], "Range bytes=0-3: {st} {got:?} content-range {cr:?}");
    check!(&s, cr == format!("bytes 0-3/{}", body.len()), "Content-Range {cr:?}");

    let r = c.get(&url).bearer_auth(&s.reader).header("if-none-match", &etag).send().await.unwrap();
    check!(&s, r.status() == 304, "If-None-Match {etag}: {}", r.status());

    let r = c.head(&url).bearer_auth(&s.reader).send().await.unwrap();
    let len = r.headers().get("content-length").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    check!(&s, r.status() == 200 && len == body.len().to_string(), "HEAD content: {} length {len:?}", r.status());

    let r = c.get(&url).send().await.unwrap();
    check!(&s, r.status() == 401, "content without a token: {}", r.status());

    // The sidecar and the versions.
    let r = c.get(format!("{qb}/api/v1/files/{id}")).bearer_auth(&s.reader).send().await.unwrap();
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    check!(&s, st == 200 && v["file_id"] == id && v["description"] == "first version", "GET file: {st} {v}");

    let r = c.get(format!("{qb}/api/v1/documents/{doc}/versions")).bearer_auth(&s.reader).send().await.unwrap();
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    let listed: Vec<(String, u64)> = v["versions"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|x| (x["file_id"].as_str().unwrap_or_default().to_owned(), x["version"].as_u64().unwrap_or(0)))
        .collect();
    check!(&s, st == 200 && listed == [(id.clone(), 1), (id2.clone(), 2)], "versions of {doc}: {st} {v}");

    // The element is gone: reads answer 503 naming it; searches go on.
    el.kill();
    let r = c.get(&url).bearer_auth(&s.reader).send().await.unwrap();
    let st = r.status().as_u16();
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    check!(
        &s,
        st == 503
            && ct.starts_with("application/problem+json")
            && v["detail"].as_str().unwrap_or_default().contains("se-1"),
        "content read with the element down: {st} {ct} {v}"
    );
    // A sidecar read before is served from the role's memory; one never read is not.
    let r = c.get(format!("{qb}/api/v1/files/{id}")).bearer_auth(&s.reader).send().await.unwrap();
    let st = r.status().as_u16();
    let cache = r.headers().get("artstore-cache").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    check!(
        &s,
        st == 200 && v["file_id"] == id && cache == "hit",
        "cached sidecar with the element down: {st} cache {cache:?} {v}"
    );
    let r = c.get(format!("{qb}/api/v1/files/{id2}")).bearer_auth(&s.reader).send().await.unwrap();
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    check!(
        &s,
        st == 503 && v["detail"].as_str().unwrap_or_default().contains("se-1"),
        "uncached sidecar read with the element down: {st} {v}"
    );
    let r = c.get(format!("{qb}/api/v1/documents/{doc}/versions")).bearer_auth(&s.reader).send().await.unwrap();
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    check!(
        &s,
        st == 503 && v["detail"].as_str().unwrap_or_default().contains("se-1"),
        "versions with the element down: {st} {v}"
    );
    let (st, v) = search(&c, &qb, &s.reader, &[("q", "first")]).await;
    check!(&s, st == 200 && ids(&v).contains(&id), "search with the element down: {st} {v}");
    q.stop();
}

// ----------------------------------------------------------------------------------------
// 3. SIGKILL mid-indexing, restart: the same index a clean reindex makes
// ----------------------------------------------------------------------------------------

/// The text of small document `i`: word counts and lengths vary so scores spread out.
fn small_doc(i: usize) -> String {
    let mut words = vec![format!("Report {i} serial{i}")];
    words.extend(std::iter::repeat_n("alpha".to_owned(), 1 + i % 4));
    if i.is_multiple_of(3) {
        words.push("beta".to_owned());
    }
    words.push(format!("gamma{}", i % 10));
    words.extend(std::iter::repeat_n("lorem".to_owned(), i % 7));
    if i.is_multiple_of(5) {
        words.push("alpha beta in a phrase".to_owned());
    }
    words.join(" ")
}

const QUERIES: &[(&str, &str)] = &[
    ("", "name"),
    ("", "relevance"),
    ("alpha", "relevance"),
    ("beta", "relevance"),
    ("alpha beta", "relevance"),
    ("\"alpha beta\"", "relevance"),
    ("gamm*", "relevance"),
    ("alpah~1", "relevance"),
    ("lorem -beta", "relevance"),
    ("gamma3 OR gamma7", "name"),
    ("serial1*", "-created"),
];

/// One query's answer: total and hits (file id, sort key) in order.
async fn answers(c: &reqwest::Client, base: &str, token: &str) -> Vec<(u64, Vec<(String, Value)>)> {
    let mut out = Vec::new();
    for (q, sort) in QUERIES {
        let (st, v) = search(c, base, token, &[("q", *q), ("sort", *sort), ("limit", "1000")]).await;
        assert_eq!(st, 200, "q={q} sort={sort}: {v}");
        let key = |h: &Value| match *sort {
            "relevance" => json!((h["score"].as_f64().unwrap_or(0.0) * 1e4).round() / 1e4),
            "name" => h["name"].clone(),
            // The index keeps creation times to the second.
            _ => json!(h["created_at"].as_str().unwrap_or_default().get(..19)),
        };
        let hits =
            v["hits"].as_array().unwrap().iter().map(|h| (h["file_id"].as_str().unwrap().to_owned(), key(h))).collect();
        out.push((v["total"].as_u64().unwrap(), hits));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_indexing_then_restart_equals_clean_rebuild() {
    const N: usize = 300;
    let s = Setup::new();
    let c = client();
    let el = s.element("element", "se-1", true);
    el.wait_ready(&c).await;
    let elements = format!("se-1={}", el.base);
    let index_a = s.path("index-a");
    let mut q = Query::start(&s, &index_a, &elements, "query-a.log", true);
    q.wait_ready(&c).await;

    // 100 uploads; once the role follows them, 200 more with a SIGKILL after the first 50
    // of those (while it indexes their batches).
    let mut docs_at_kill = None;
    let started = Instant::now();
    for i in 0..N {
        let v = upload_ok(&s, &c, &el.base, &format!("doc-{i:04}.txt"), small_doc(i).into_bytes(), &[]).await;
        let _ = id_of(&v);
        if i == 99 {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let st = index_status(&c, &q.base, &s.reader).await;
                if st["documents"].as_u64().is_some_and(|d| d >= 50) {
                    break;
                }
                check!(&s, Instant::now() < deadline, "the role did not follow the first 100 uploads in 30 s: {st}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if i == 149 {
            let st = index_status(&c, &q.base, &s.reader).await;
            docs_at_kill = st["documents"].as_u64();
            q.kill();
            eprintln!(
                "SIGKILLed the query role after {} uploads; it had {:?} documents; feed {}",
                i + 1,
                docs_at_kill,
                st["feed"]
            );
        }
    }
    eprintln!("{N} uploads in {:.1} s", started.elapsed().as_secs_f64());
    check!(
        &s,
        docs_at_kill.is_some_and(|d| (50..150).contains(&d)),
        "index before the kill: {docs_at_kill:?} documents"
    );

    let mut q = Query::start(&s, &index_a, &elements, "query-a.log", true);
    q.wait_ready(&c).await;
    let r = wait_documents(&c, &q.base, &s.reader, N as u64, 60).await;
    check!(&s, r.is_ok(), "after the restart the index did not reach {N} documents in 60 s: {r:?}");
    let st = q.stop();
    check!(&s, st.is_some_and(|st| st.success()), "SIGTERM: query role exit {st:?}");

    // A clean reindex into a new folder.
    let index_b = s.path("index-b");
    let (st, out) = tool(
        &s,
        &["reindex", "--index", index_b.to_str().unwrap(), "--elements", &elements, "--service-token", &s.service],
        "tools.log",
    );
    let last = out.lines().last().unwrap_or_default().to_owned();
    check!(&s, st.success(), "reindex: {st}: {out}");
    check!(
        &s,
        last.starts_with("reindex: 1 element(s)") && last.contains(&format!("{N} indexed")),
        "reindex said: {last}"
    );

    // No drift in the followed index.
    let (st, out) = tool(
        &s,
        &["check-index", "--index", index_a.to_str().unwrap(), "--elements", &elements, "--service-token", &s.service],
        "tools.log",
    );
    check!(
        &s,
        st.success() && out.contains("0 missing, 0 extra, 0 stale"),
        "check-index on the followed index: {st}: {out}"
    );

    // The same answers from both (served without events).
    let mut a = Query::start(&s, &index_a, &elements, "serve-a.log", false);
    let mut b = Query::start(&s, &index_b, &elements, "serve-b.log", false);
    a.wait_ready(&c).await;
    b.wait_ready(&c).await;
    for (q, n) in [(&a, "followed"), (&b, "rebuilt")] {
        let v = index_status(&c, &q.base, &s.reader).await;
        check!(&s, v["documents"] == N, "{n} index: {v}");
    }
    let from_a = answers(&c, &a.base, &s.reader).await;
    let from_b = answers(&c, &b.base, &s.reader).await;
    // Exactly the same order too: ties are broken by file id.
    for (((q, sort), (ta, ha)), (tb, hb)) in QUERIES.iter().zip(&from_a).zip(&from_b) {
        check!(&s, ta == tb, "q={q} sort={sort}: total {ta} (followed) vs {tb} (rebuilt)");
        check!(&s, *ta > 0, "q={q} found nothing");
        let (ca, cb) = (ha, hb);
        if ca != cb {
            let first = ca.iter().zip(cb.iter()).position(|(x, y)| x != y);
            panic!(
                "q={q} sort={sort}: the followed and rebuilt indexes answer differently; first difference at {first:?}: {:?} vs {:?}{}",
                first.map(|i| &ca[i]),
                first.map(|i| &cb[i]),
                logs(&s)
            );
        }
    }
    eprintln!("{} queries answer alike on the followed and the rebuilt index", QUERIES.len());
}

// ----------------------------------------------------------------------------------------
// 4. check-index names drift and repairs it
// ----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_index_names_drift_and_repairs() {
    let s = Setup::new();
    let c = client();
    let el = s.element("element", "se-1", false);
    let el2 = s.element("element-2", "se-2", false);
    el.wait_ready(&c).await;
    el2.wait_ready(&c).await;
    let mut ids1 = Vec::new();
    for i in 0..5 {
        let v = upload_ok(&s, &c, &el.base, &format!("drift-{i}.txt"), format!("drift document {i}").into_bytes(), &[])
            .await;
        ids1.push(id_of(&v));
    }
    let other = id_of(&upload_ok(&s, &c, &el2.base, "other.txt", b"held by the second element".to_vec(), &[]).await);
    let both = format!("se-1={},se-2={}", el.base, el2.base);
    let only1 = format!("se-1={}", el.base);
    let index = s.path("index");
    let idx = index.to_str().unwrap();
    let run = |verb: &[&str], elements: &str| {
        let mut args: Vec<&str> = verb.to_vec();
        args.extend(["--index", idx, "--elements", elements, "--service-token", &s.service]);
        tool(&s, &args, "tools.log")
    };

    let (st, out) = run(&["reindex"], &both);
    check!(
        &s,
        st.success() && out.contains("reindex: 2 element(s)") && out.contains("6 indexed"),
        "reindex: {st}: {out}"
    );
    let (st, out) = run(&["check-index"], &both);
    check!(
        &s,
        st.success() && out.contains("0 missing, 0 extra, 0 stale"),
        "check-index right after the reindex: {st}: {out}"
    );

    // Drift: a delete (new revision: stale), a PATCH (stale), a new upload (missing), and
    // the second element left out (extra).
    delete_file(&s, &c, &el.base, &ids1[0]).await;
    patch_description(&s, &c, &el.base, &ids1[1], "patched").await;
    let new = id_of(&upload_ok(&s, &c, &el.base, "drift-new.txt", b"a new drift document".to_vec(), &[]).await);

    let (st, out) = run(&["check-index"], &only1);
    check!(&s, st.code() == Some(1), "check-index with drift: exit {st} (want 1): {out}");
    let mut want: Vec<String> = vec![
        format!("stale {}", ids1[0]),
        format!("stale {}", ids1[1]),
        format!("missing {new}"),
        format!("extra {other}"),
    ];
    want.sort();
    let mut got: Vec<String> = out
        .lines()
        .filter(|l| ["missing ", "extra ", "stale "].iter().any(|k| l.starts_with(k)))
        .map(|l| l.split(':').next().unwrap_or_default().to_owned())
        .collect();
    got.sort();
    check!(&s, got == want, "drift lines {got:?}, want {want:?}\n{out}");
    check!(&s, out.contains("1 missing, 1 extra, 2 stale"), "summary: {out}");
    check!(
        &s,
        out.contains(&format!("stale {}: index has revision 1, element se-1 holds 2", ids1[0])),
        "stale detail: {out}"
    );

    let (st, out) = run(&["check-index", "--repair"], &only1);
    check!(&s, st.success() && out.contains("4 repaired"), "check-index --repair: {st}: {out}");
    let (st, out) = run(&["check-index"], &only1);
    check!(
        &s,
        st.success() && out.contains("0 missing, 0 extra, 0 stale"),
        "check-index after the repair: {st}: {out}"
    );

    // The repaired index serves what the element holds.
    let mut q = Query::start(&s, &index, &only1, "query.log", false);
    q.wait_ready(&c).await;
    let (st, v) = search(&c, &q.base, &s.reader, &[("q", "drift"), ("limit", "100")]).await;
    let mut got = ids(&v);
    got.sort();
    let mut want: Vec<String> = ids1[1..].iter().cloned().chain([new.clone()]).collect();
    want.sort();
    check!(&s, st == 200 && got == want, "after the repair q=drift found {got:?}, want {want:?}: {v}");
    let (st, v) = search(&c, &q.base, &s.auditor, &[("q", ""), ("state", "deleted")]).await;
    check!(&s, st == 200 && ids(&v) == [ids1[0].clone()], "tombstone after the repair: {st} {v}");
    let (_, v) = search(&c, &q.base, &s.reader, &[("q", "patched")]).await;
    check!(&s, ids(&v) == [ids1[1].clone()], "patched description after the repair: {v}");
    q.stop();
}

// ----------------------------------------------------------------------------------------
// 5. An online rebuild swaps in while searches go on
// ----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_rebuild_swaps_while_serving() {
    const N: usize = 150;
    let s = Setup::new();
    let c = client();
    let el = s.element("element", "se-1", true);
    el.wait_ready(&c).await;
    let mut q = Query::start(&s, &s.path("index"), &format!("se-1={}", el.base), "query.log", true);
    q.wait_ready(&c).await;
    let qb = q.base.clone();
    for i in 0..N {
        upload_ok(&s, &c, &el.base, &format!("doc-{i:04}.txt"), small_doc(i).into_bytes(), &[]).await;
    }
    let r = wait_documents(&c, &qb, &s.reader, N as u64, 60).await;
    check!(&s, r.is_ok(), "the index did not reach {N} documents in 60 s: {r:?}");
    let probes: &[&str] = &["", "alpha", "beta", "gamm*"];
    let mut before = Vec::new();
    for p in probes {
        let (st, v) = search(&c, &qb, &s.reader, &[("q", *p)]).await;
        check!(&s, st == 200, "q={p}: {st} {v}");
        before.push(v["total"].as_u64().unwrap());
    }

    let rebuild = |token: String| {
        let (c, qb) = (c.clone(), qb.clone());
        async move {
            let r = c.post(format!("{qb}/api/v1/index/rebuild")).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (st, v) = rebuild(s.reader.clone()).await;
    check!(&s, st == 403, "rebuild with a reader token: {st} {v}");
    let (st, v) = rebuild(s.admin.clone()).await;
    check!(&s, st == 202, "rebuild: {st} {v}");
    let (st2, v2) = rebuild(s.admin.clone()).await;
    if st2 == 409 {
        eprintln!("a second rebuild while one runs: 409 {v2}");
    } else {
        let now = index_status(&c, &qb, &s.reader).await;
        eprintln!("the second rebuild answered {st2} (the first had finished already?): {v2}; status {now}");
        check!(&s, st2 == 202, "second rebuild: {st2} {v2}");
    }

    // Searches answer all along, with the same totals.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut searches, mut seen_running) = (0, false);
    let status = loop {
        for (p, want) in probes.iter().zip(&before) {
            let (st, v) = search(&c, &qb, &s.reader, &[("q", *p)]).await;
            searches += 1;
            check!(
                &s,
                st == 200 && v["total"] == *want,
                "during the rebuild q={p}: {st} total {} (want {want})",
                v["total"]
            );
        }
        let status = index_status(&c, &qb, &s.reader).await;
        if status["rebuild"]["running"] == true {
            seen_running = true;
        } else {
            break status;
        }
        check!(&s, Instant::now() < deadline, "the rebuild still runs after 60 s: {status}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    };
    eprintln!(
        "{searches} searches answered during the rebuild (seen running: {seen_running}); status {}",
        status["rebuild"]
    );
    check!(&s, status["rebuild"]["last_error"].is_null(), "rebuild error: {status}");
    check!(&s, status["rebuild"]["kind"] == "online", "rebuild kind: {status}");
    check!(&s, status["rebuild"]["progress"]["listed"] == N, "rebuild progress: {status}");
    check!(&s, status["documents"] == N, "documents after the rebuild: {status}");
    for (p, want) in probes.iter().zip(&before) {
        let (st, v) = search(&c, &qb, &s.reader, &[("q", *p)]).await;
        check!(
            &s,
            st == 200 && v["total"] == *want,
            "after the rebuild q={p}: {st} total {} (want {want})",
            v["total"]
        );
    }

    // Events are still followed into the swapped-in index.
    let late = id_of(&upload_ok(&s, &c, &el.base, "late.txt", b"a late arrival: quokka".to_vec(), &[]).await);
    let r = wait_search(&c, &qb, &s.reader, &[("q", "quokka")], 10, |v| ids(v).contains(&late)).await;
    check!(
        &s,
        r.is_ok(),
        "an upload after the swap was not searchable in 10 s: {r:?}\nstatus {}",
        index_status(&c, &qb, &s.reader).await
    );
    let seen: HashSet<String> =
        ids(&search(&c, &qb, &s.reader, &[("q", ""), ("limit", "1000")]).await.1).into_iter().collect();
    check!(&s, seen.len() == N + 1, "{} documents found after the late upload, want {}", seen.len(), N + 1);
    q.stop();
}
