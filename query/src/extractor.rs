//! Text extraction in child processes.
//!
//! A hostile or broken file may make a parser overflow its stack, loop forever or eat
//! memory; none of that can be caught inside the service. So extraction runs in a pool of
//! worker processes (`artstore query extract-worker`), each with an address-space limit,
//! given one document at a time over a pipe and killed when it overruns its time. A worker
//! that dies or is killed is replaced; the document is indexed by its metadata with the
//! reason in its hit.
//!
//! Pipe protocol (both directions little-endian): request = `u32` header length, header
//! JSON (`content_type`, `name`, `limits`), `u64` body length, body; answer = `u32` length,
//! JSON `{"ok": Extracted}` or `{"err": "reason"}`.

use crate::doc::Extraction;
use artstore_extract::{Extracted, Limits};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Settings of the pool.
#[derive(Debug, Clone)]
pub struct ExtractorConfig {
    /// The program and arguments that start one worker.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Workers at most (default: the machine's cores).
    pub workers: usize,
    /// Time one extraction may take before its worker is killed.
    pub timeout: Duration,
    /// Address-space limit of a worker, bytes.
    pub memory_bytes: u64,
    pub limits: Limits,
}

#[derive(Serialize, Deserialize)]
struct Header {
    content_type: String,
    name: String,
    limits: Limits,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Answer {
    Ok(Extracted),
    Err(String),
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr_tail: Arc<Mutex<String>>,
}

/// Counters shown in `/metrics` and `GET /api/v1/index`.
#[derive(Debug, Default)]
pub struct ExtractorStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub timeouts: AtomicU64,
    pub crashes: AtomicU64,
}

enum Mode {
    Processes {
        cfg: ExtractorConfig,
        idle: Mutex<Vec<Worker>>,
        slots: tokio::sync::Semaphore,
    },
    /// In the caller's process: for tests of the query crate, which has no worker binary.
    InProcess {
        limits: Limits,
    },
}

/// The extraction pool.
pub struct Extractor {
    mode: Mode,
    pub stats: ExtractorStats,
}

impl std::fmt::Debug for Extractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extractor").finish_non_exhaustive()
    }
}

impl Extractor {
    /// A pool of worker processes.
    pub fn processes(cfg: ExtractorConfig) -> Extractor {
        let slots = tokio::sync::Semaphore::new(cfg.workers.max(1));
        Extractor { mode: Mode::Processes { cfg, idle: Mutex::new(Vec::new()), slots }, stats: Default::default() }
    }

    /// Extraction inside this process (tests of the query crate only).
    pub fn in_process(limits: Limits) -> Extractor {
        Extractor { mode: Mode::InProcess { limits }, stats: Default::default() }
    }

    /// The limits applied to every document.
    pub fn limits(&self) -> Limits {
        match &self.mode {
            Mode::Processes { cfg, .. } => cfg.limits,
            Mode::InProcess { limits } => *limits,
        }
    }

    /// Extracts the text of one document. Never fails: a failure is an [`Extraction`].
    pub async fn extract(&self, bytes: bytes::Bytes, content_type: &str, name: &str) -> Extraction {
        let limits = self.limits();
        if bytes.len() as u64 > limits.max_input_bytes {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            return Extraction::Failed {
                reason: format!(
                    "content is {} bytes, over the extraction limit of {}",
                    bytes.len(),
                    limits.max_input_bytes
                ),
            };
        }
        let answer = match &self.mode {
            Mode::InProcess { limits } => {
                let (ct, n, l) = (content_type.to_owned(), name.to_owned(), *limits);
                tokio::task::spawn_blocking(move || {
                    std::panic::catch_unwind(|| artstore_extract::extract(&bytes, &ct, &n, &l))
                        .map_err(|_| "extractor panicked".to_owned())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                })
                .await
                .unwrap_or_else(|e| Err(format!("extractor task failed: {e}")))
            }
            Mode::Processes { cfg, idle, slots } => {
                let Ok(_permit) = slots.acquire().await else {
                    return Extraction::Failed { reason: "extractor pool closed".to_owned() };
                };
                self.in_worker(cfg, idle, bytes, content_type, name).await
            }
        };
        match answer {
            Ok(e) => {
                self.stats.ok.fetch_add(1, Ordering::Relaxed);
                Extraction::Ok { text: e.text, format: e.format, truncated: e.truncated }
            }
            Err(reason) if reason.starts_with("no text extractor") => Extraction::Skipped { reason },
            Err(reason) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                Extraction::Failed { reason }
            }
        }
    }

    async fn in_worker(
        &self,
        cfg: &ExtractorConfig,
        idle: &Mutex<Vec<Worker>>,
        bytes: bytes::Bytes,
        content_type: &str,
        name: &str,
    ) -> Result<Extracted, String> {
        let taken = idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut w = match taken {
            Some(w) => w,
            None => spawn(cfg).map_err(|e| format!("cannot start an extraction worker: {e}"))?,
        };
        let header = serde_json::to_vec(&Header {
            content_type: content_type.to_owned(),
            name: name.to_owned(),
            limits: cfg.limits,
        })
        .unwrap_or_default();
        let exchange = async {
            w.stdin.write_all(&(header.len() as u32).to_le_bytes()).await?;
            w.stdin.write_all(&header).await?;
            w.stdin.write_all(&(bytes.len() as u64).to_le_bytes()).await?;
            w.stdin.write_all(&bytes).await?;
            w.stdin.flush().await?;
            let mut len = [0u8; 4];
            w.stdout.read_exact(&mut len).await?;
            let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
            w.stdout.read_exact(&mut buf).await?;
            std::io::Result::Ok(buf)
        };
        match tokio::time::timeout(cfg.timeout, exchange).await {
            Ok(Ok(buf)) => {
                let answer: Answer =
                    serde_json::from_slice(&buf).map_err(|e| format!("worker answered garbage: {e}"))?;
                idle.lock().unwrap_or_else(|p| p.into_inner()).push(w);
                match answer {
                    Answer::Ok(e) => Ok(e),
                    Answer::Err(reason) => Err(reason),
                }
            }
            Ok(Err(_)) => {
                // The worker died mid-document: a crash, a stack overflow, out of memory.
                self.stats.crashes.fetch_add(1, Ordering::Relaxed);
                let status = w.child.wait().await.ok();
                let tail = w.stderr_tail.lock().unwrap_or_else(|p| p.into_inner()).trim().to_owned();
                Err(crash_reason(status, &tail))
            }
            Err(_) => {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                let _ = w.child.start_kill();
                let _ = w.child.wait().await;
                Err(format!("extraction took longer than {} s and was stopped", cfg.timeout.as_secs_f64()))
            }
        }
    }
}

fn crash_reason(status: Option<std::process::ExitStatus>, stderr: &str) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    let how = match status {
        Some(s) if s.signal().is_some() => format!("killed by signal {}", s.signal().unwrap_or(0)),
        Some(s) => format!("exited with {}", s.code().unwrap_or(-1)),
        None => "vanished".to_owned(),
    };
    let last = stderr.lines().last().unwrap_or("").trim();
    if last.is_empty() {
        format!("extraction worker crashed ({how})")
    } else {
        format!("extraction worker crashed ({how}): {last}")
    }
}

fn spawn(cfg: &ExtractorConfig) -> std::io::Result<Worker> {
    let mut child = Command::new(&cfg.program)
        .args(&cfg.args)
        .env("ARTSTORE_EXTRACT_MEMORY_BYTES", cfg.memory_bytes.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let (Some(stdin), Some(stdout), Some(mut stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(std::io::Error::other("worker pipes missing"));
    };
    let tail = Arc::new(Mutex::new(String::new()));
    let t = tail.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let mut s = t.lock().unwrap_or_else(|p| p.into_inner());
            s.push_str(&String::from_utf8_lossy(&buf[..n]));
            if s.len() > 2048 {
                let cut = s.len() - 1024;
                let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
                s.drain(..cut);
            }
        }
    });
    Ok(Worker { child, stdin, stdout, stderr_tail: tail })
}

/// The worker process's main loop: sets its own limits, then answers requests from stdin
/// until it closes. Runs before any async runtime or thread pool is started.
pub fn worker_main() -> std::io::Result<()> {
    if let Some(bytes) = std::env::var("ARTSTORE_EXTRACT_MEMORY_BYTES").ok().and_then(|v| v.parse::<u64>().ok()) {
        rlimit::setrlimit(rlimit::Resource::AS, bytes, bytes)?;
    }
    // No core files from a crashing parser.
    let _ = rlimit::setrlimit(rlimit::Resource::CORE, 0, 0);
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    loop {
        let mut len = [0u8; 4];
        match stdin.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut header = vec![0u8; u32::from_le_bytes(len) as usize];
        stdin.read_exact(&mut header)?;
        let header: Header = serde_json::from_slice(&header).map_err(std::io::Error::other)?;
        let mut blen = [0u8; 8];
        stdin.read_exact(&mut blen)?;
        let blen = u64::from_le_bytes(blen);
        if blen > header.limits.max_input_bytes {
            return Err(std::io::Error::other("request over the input limit"));
        }
        let mut body = vec![0u8; blen as usize];
        stdin.read_exact(&mut body)?;
        let answer = match std::panic::catch_unwind(|| {
            artstore_extract::extract(&body, &header.content_type, &header.name, &header.limits)
        }) {
            Ok(Ok(e)) => Answer::Ok(e),
            Ok(Err(e)) => Answer::Err(e.to_string()),
            Err(_) => Answer::Err("the parser panicked on this file".to_owned()),
        };
        drop(body);
        let out = serde_json::to_vec(&answer).map_err(std::io::Error::other)?;
        stdout.write_all(&(out.len() as u32).to_le_bytes())?;
        stdout.write_all(&out)?;
        stdout.flush()?;
    }
}
