//! A stock, unmodified tus client — the PyPI package `tuspy`, driven by
//! `tests/tus/stock_client.py` — uploads a large file in 8 MiB chunks through a real
//! `artstore ingester` (with one real storage element behind it). The ingester is SIGKILLed
//! twice while a `PATCH` is in flight, at about 1/3 and 2/3 of the file, and restarted on
//! the same data folder and port; the client resumes each time the stock way (a new
//! uploader on the upload URL, whose `HEAD` answers the offset). The stored document must
//! have the file's SHA-256 and size.
//!
//! The file is 1 GiB, as the issue asks (about 25 s here); a smaller one for a quick run:
//!
//! ```text
//! ARTSTORE_TUS_TEST_BYTES=268435456 cargo test --test tus_stock_client -- --nocapture
//! ```
//!
//! `ARTSTORE_TUS_TEST_CHECKSUM=1` has the client send `Upload-Checksum` (sha1) too.
//!
//! Needs `python3` with `tuspy` (`scripts/test.sh` installs it); a missing one fails the
//! test, it is never skipped.

mod support;

use artstore_shared::auth::{JWKS_FILE, LocalSigner};
use rand::{RngCore as _, SeedableRng as _};
use serde_json::Value;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::{BIN, Element, free_port};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tus/stock_client.py");
const CHUNK: u64 = 8 << 20;
const DEFAULT_BYTES: u64 = 1 << 30;
/// The script's own limit; the test waits a little longer than that.
const CLIENT_TIME_LIMIT_SECS: u64 = 600;

/// The last `n` lines of a log file, for failure messages.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Fails (never skips) when python3 or tuspy is missing.
fn require_tuspy() {
    let out = Command::new("python3").args(["-c", "import tusclient"]).output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "python3 cannot import tusclient (the PyPI package tuspy): run scripts/test.sh, which installs it \
             (python3 -m pip install tuspy); {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("python3 is not runnable ({e}): install Python 3, then run scripts/test.sh to add tuspy"),
    }
}

/// `size` pseudo-random bytes (a fixed seed) written to `path`; answers their SHA-256.
fn generate(path: &Path, size: u64) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7475_735f_7374_6f63);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        sha.update(&buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
    hex(sha.finish().as_ref())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The `artstore ingester` process, restartable on the same port and data folder; killed
/// (SIGKILL) on drop.
struct Ingester {
    child: Option<Child>,
    port: u16,
    data: PathBuf,
    jwks: PathBuf,
    elements: String,
    log: PathBuf,
}

impl Ingester {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "the ingester is already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(BIN)
            .args(["ingester", "--listen", &format!("127.0.0.1:{}", self.port), "--data"])
            .arg(&self.data)
            .arg("--jwks")
            .arg(&self.jwks)
            .args(["--elements", &self.elements, "--log-format", "json"])
            .env("ARTSTORE_PROBE_INTERVAL_MS", "200")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL, and reap.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Until `/health/ready` answers 200 with `elements_up` 1.
    async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/health/ready", self.base())).send().await
                && r.status() == 200
                && let Ok(v) = r.json::<Value>().await
                && v["elements_up"] == 1
            {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("the ingester exited ({status}); its log:\n{}", tail(&self.log, 40));
            }
            assert!(Instant::now() < deadline, "the ingester did not become ready; its log:\n{}", tail(&self.log, 40));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Ingester {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Python client; killed (SIGKILL) on drop.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One SIGKILL of the ingester.
#[derive(Debug)]
struct Kill {
    /// The offset the in-flight `PATCH` was sent from.
    patch_from: u64,
    /// The session's data file length just before the kill (> `patch_from`: part of the
    /// chunk had arrived).
    data_len: u64,
    /// That `PATCH` ended in an error at the client (it was in flight when the server died).
    patch_failed: bool,
    /// The offset the restarted ingester's `HEAD` answered when the client resumed.
    resumed_at: Option<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_tus_client_resumes_across_ingester_sigkills() {
    require_tuspy();
    let started = Instant::now();
    let size: u64 = std::env::var("ARTSTORE_TUS_TEST_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_BYTES);
    assert!(size >= 3 * CHUNK, "ARTSTORE_TUS_TEST_BYTES must be at least {} (three chunks)", 3 * CHUNK);
    let tmp = tempfile::Builder::new().prefix("artstore-tus-").tempdir().unwrap();
    let file = tmp.path().join("big.bin");
    let want_sha = generate(&file, size);
    eprintln!("generated {size} bytes in {:?}, sha256 {want_sha}", started.elapsed());

    let keys = tmp.path().join("keys");
    let signer = LocalSigner::load_or_create(&keys).unwrap();
    let jwks = keys.join(JWKS_FILE);
    let token = signer.issue("tus-stock", &["writer".into()], Duration::from_secs(7200), chrono::Utc::now()).unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();

    let element_log = tmp.path().join("element.log");
    let element = Element::start(&tmp.path().join("element"), &jwks, &element_log, &["--element-id", "se-1"]);
    element.wait_ready(&http).await;

    let ingester_data = tmp.path().join("ingester");
    let mut ing = Ingester {
        child: None,
        port: free_port(),
        data: ingester_data.clone(),
        jwks: jwks.clone(),
        elements: format!("se-1={}", element.base),
        log: tmp.path().join("ingester.log"),
    };
    ing.start();
    ing.wait_ready(&http).await;

    // ARTSTORE_TUS_TEST_CHECKSUM=1: tuspy also sends Upload-Checksum (sha1) with every chunk.
    let checksum = std::env::var("ARTSTORE_TUS_TEST_CHECKSUM").is_ok_and(|v| v == "1");
    let client_log = tmp.path().join("client.log");
    let mut script = Script(
        Command::new("python3")
            .arg(SCRIPT)
            .arg(format!("{}/api/v1/uploads", ing.base()))
            .arg(&token)
            .arg(&file)
            .arg(CHUNK.to_string())
            .args(["--time-limit", &CLIENT_TIME_LIMIT_SECS.to_string()])
            .args(checksum.then_some("--checksum"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&client_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = script.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let logs = |ing: &Ingester| {
        format!(
            "\n--- client stderr ---\n{}\n--- ingester log ---\n{}\n--- element log ---\n{}",
            tail(&client_log, 30),
            tail(&ing.log, 40),
            tail(&element_log, 20)
        )
    };

    // Follow the client; arm at the first PATCH past 1/3 (then 2/3) of the file, and kill as
    // soon as the bytes of that chunk start landing in the session's data file.
    let deadline = Instant::now() + Duration::from_secs(CLIENT_TIME_LIMIT_SECS + 60);
    let mut kills: Vec<Kill> = vec![];
    let mut armed: Option<(u64, Instant)> = None;
    let mut missed = 0u32;
    let mut upload_url: Option<String> = None;
    let mut data_file: Option<PathBuf> = None;
    let mut resumes = 0u64;
    let mut errors = 0u64;
    let mut stored_line: Option<(String, String)> = None;
    let mut done: Option<String> = None;
    loop {
        assert!(Instant::now() < deadline, "the upload did not finish in time{}", logs(&ing));
        match rx.try_recv() {
            Ok(line) => {
                eprintln!("client: {line}");
                let w: Vec<&str> = line.split_whitespace().collect();
                let num = |i: usize| w.get(i).and_then(|v| v.parse::<u64>().ok());
                match w.first().copied() {
                    Some("URL") => {
                        let url = w[1].to_owned();
                        let id = url.rsplit('/').next().unwrap().to_owned();
                        data_file = Some(ingester_data.join("uploads").join(id).join("data"));
                        upload_url = Some(url);
                    }
                    Some("PATCH") => {
                        let from = num(1).unwrap();
                        let threshold = size * (kills.len() as u64 + 1) / 3;
                        if kills.len() < 2 && from >= threshold && data_file.is_some() {
                            armed = Some((from, Instant::now()));
                        }
                    }
                    // The chunk went through before a byte of it was seen: next one.
                    Some("OFFSET") if armed.take().is_some() => missed += 1,
                    Some("ERROR") => {
                        errors += 1;
                        if let Some(k) = kills.last_mut()
                            && k.resumed_at.is_none()
                            && num(1) == Some(k.patch_from)
                        {
                            k.patch_failed = true;
                        }
                    }
                    Some("RESUMED") => {
                        resumes = num(1).unwrap();
                        if let Some(k) = kills.last_mut()
                            && k.resumed_at.is_none()
                        {
                            k.resumed_at = num(2);
                        }
                    }
                    Some("STORED") => stored_line = Some((w[1].to_owned(), w[2].to_owned())),
                    Some("DONE") => {
                        done = Some(w[1].to_owned());
                        break;
                    }
                    Some("GIVEUP") => panic!("the client gave up: {line}{}", logs(&ing)),
                    _ => {}
                }
            }
            Err(mpsc::TryRecvError::Empty) => {
                if let (Some((from, since)), Some(df)) = (armed, data_file.as_ref()) {
                    let len = std::fs::metadata(df).map(|m| m.len()).unwrap_or(0);
                    // After three chunks too quick to catch, kill 5 ms after the PATCH began.
                    if len > from || (missed >= 3 && since.elapsed() >= Duration::from_millis(5)) {
                        ing.kill();
                        eprintln!(
                            "test: SIGKILLed the ingester during the PATCH from {from} (data file at {len} bytes)"
                        );
                        kills.push(Kill { patch_from: from, data_len: len, patch_failed: false, resumed_at: None });
                        armed = None;
                        ing.start();
                        ing.wait_ready(&http).await;
                        eprintln!("test: the ingester is back");
                    }
                    std::thread::sleep(Duration::from_micros(200));
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
        }
    }
    let status = {
        let exit_deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = script.0.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < exit_deadline, "the client did not exit after DONE{}", logs(&ing));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert!(status.success() && done.is_some(), "the client failed ({status}), no DONE{}", logs(&ing));
    let upload_url = upload_url.expect("the client printed no URL");
    assert_eq!(done.as_deref(), Some(upload_url.as_str()));

    // Two kills, each while a PATCH was in flight, each followed by a resume from an offset
    // no further than what was sent.
    assert_eq!(kills.len(), 2, "the ingester should have been killed twice: {kills:?}{}", logs(&ing));
    for k in &kills {
        assert!(k.patch_failed, "the PATCH from {} was not in flight at the kill: {kills:?}", k.patch_from);
        let at = k.resumed_at.unwrap_or_else(|| panic!("no resume after the kill at {}: {kills:?}", k.patch_from));
        assert!(
            at >= k.patch_from && at <= k.patch_from + CHUNK,
            "resumed at {at}, outside [{}, {}]: {kills:?}",
            k.patch_from,
            k.patch_from + CHUNK
        );
    }
    assert!(resumes >= 2, "the client resumed {resumes} time(s), expected at least 2");
    let mid_write = kills.iter().filter(|k| k.data_len > k.patch_from).count();

    // The session says stored, on se-1, with the file's digest.
    let id = upload_url.rsplit('/').next().unwrap();
    let r = http.get(format!("{}/api/v1/uploads/{id}", ing.base())).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let s: Value = r.json().await.unwrap();
    assert_eq!(s["state"], "stored", "{s:#}");
    assert_eq!(s["offset"], size, "{s:#}");
    assert_eq!(s["length"], size, "{s:#}");
    assert_eq!(s["element_id"], "se-1", "{s:#}");
    let file_id = s["file_id"].as_str().unwrap_or_else(|| panic!("no file_id: {s:#}")).to_owned();
    let (stored_id, stored_element) = stored_line.expect("the client printed no STORED line");
    assert_eq!(stored_id, file_id, "ArtStore-File-Id of the final PATCH");
    assert_eq!(stored_element, "se-1", "ArtStore-Element-Id of the final PATCH");
    assert_eq!(s["sidecar"]["sha256"], want_sha.as_str(), "{s:#}");
    assert_eq!(s["sidecar"]["size"], size, "{s:#}");
    let tags: Vec<&str> = s["sidecar"]["tags"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(tags.contains(&"tus") && tags.contains(&"stock"), "tags from Upload-Metadata: {tags:?}");

    // The element's content has the file's SHA-256 and size.
    let mut r =
        http.get(format!("{}/api/v1/files/{file_id}/content", element.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    let mut got = 0u64;
    while let Some(chunk) = r.chunk().await.unwrap() {
        sha.update(&chunk);
        got += chunk.len() as u64;
    }
    assert_eq!(got, size, "stored size");
    assert_eq!(hex(sha.finish().as_ref()), want_sha, "stored content's SHA-256");

    eprintln!(
        "{size} bytes in {CHUNK}-byte chunks through a stock tus client: {} SIGKILLs ({mid_write} with part of the \
         chunk written), {resumes} resumes, {errors} failed requests, {missed} chunk(s) too quick to catch; \
         {:?} in all; kills: {kills:?}",
        kills.len(),
        started.elapsed()
    );
}
