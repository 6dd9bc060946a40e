//! Running the real `artstore` binary in tests: an element on a free port, readiness, HTTP
//! helpers, a private PostgreSQL server that a test may stop and start, and (`cluster`) a
//! whole `deploy/local-cluster.sh` cluster.
#![allow(dead_code)]

pub mod cluster;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_artstore");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn sha256_hex(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b).as_ref().iter().map(|x| format!("{x:02x}")).collect()
}

/// A storage element process.
pub struct Element {
    pub child: Child,
    pub base: String,
}

impl Element {
    /// Starts `artstore storage-element` on `root` with the JWKS file and optional cache.
    pub fn start(root: &Path, jwks: &Path, log: &Path, extra: &[&str]) -> Element {
        Self::start_with_env(root, jwks, log, extra, &[])
    }

    /// [`Element::start`] with environment variables for the process.
    pub fn start_with_env(root: &Path, jwks: &Path, log: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Element {
        let port = free_port();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(BIN)
            .args(["storage-element", "--data"])
            .arg(root)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--jwks"])
            .arg(jwks)
            .args(["--log-format", "json"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Element { child, base: format!("http://127.0.0.1:{port}") }
    }

    pub async fn wait_ready(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/health/ready", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "element did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for Element {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Uploads one file with extra form fields; returns the status and body.
/// An access token from the admin's token endpoint at `base` (password grant).
pub async fn password_token(client: &reqwest::Client, base: &str, user: &str, password: &str) -> String {
    let v: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/token"))
        .form(&[("grant_type", "password"), ("username", user), ("password", password)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap_or_else(|| panic!("no access token: {v}")).to_owned()
}

/// GET `url` with `token` and read the JSON answer.
pub async fn get_json(client: &reqwest::Client, url: &str, token: &str) -> serde_json::Value {
    client.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

pub async fn upload(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    name: &str,
    body: Vec<u8>,
    fields: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in fields {
        form = form.text((*k).to_owned(), (*v).to_owned());
    }
    form = form.part("file", reqwest::multipart::Part::bytes(body).file_name(name.to_owned()));
    match client.post(format!("{base}/api/v1/files")).bearer_auth(token).multipart(form).send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.json().await.unwrap_or(serde_json::Value::Null))
        }
        Err(_) => (0, serde_json::Value::Null),
    }
}

/// What stays in an element's `tmp/`: polled for a few seconds, because a running element
/// also passes its own state files (`clock.json`, `scrub.json`) through there for an instant;
/// a half-written upload would stay.
pub async fn tmp_leftovers(element_root: &std::path::Path) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = std::fs::read_dir(element_root.join("tmp"))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every sidecar a listing query returns, following `next_cursor` page by page.
pub async fn list_all(client: &reqwest::Client, base: &str, token: &str, query: &str) -> Vec<serde_json::Value> {
    let (mut all, mut cursor) = (vec![], String::new());
    loop {
        let page: serde_json::Value = client
            .get(format!("{base}/api/v1/files?limit=1000&{query}&cursor={cursor}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        all.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => return all,
        }
    }
}

/// A PostgreSQL server of the test's own (initdb in a temp folder, a free port), so that a
/// test can stop it without disturbing others.
pub struct PrivatePostgres {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    _tmp: tempfile::TempDir,
}

fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries in /usr/lib/postgresql (run scripts/services.sh)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().expect("no initdb under /usr/lib/postgresql/*/bin")
}

fn as_postgres(cmd: &Path) -> Command {
    // The server refuses to run as root: run it as the postgres user then.
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(cmd);
        c
    } else {
        Command::new(cmd)
    }
}

impl PrivatePostgres {
    pub fn start_new() -> PrivatePostgres {
        let tmp = tempfile::Builder::new().prefix("artstore-pg-").tempdir().unwrap();
        let dir = tmp.path().join("data");
        let _ = Command::new("chown").args(["-R", "postgres:postgres"]).arg(tmp.path()).status();
        let bin = pg_bin();
        let out = as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let pg = PrivatePostgres { dir, port: free_port(), bin, _tmp: tmp };
        pg.start();
        pg
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn start(&self) {
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.display());
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-D"])
            .arg(&self.dir)
            .args(["-o", &opts, "-l"])
            .arg(self.dir.join("server.log"))
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops the server at once (`-m immediate`: like a crash).
    pub fn stop(&self) {
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-D"])
            .arg(&self.dir)
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql").arg(self.url("postgres")).args(["-Atqc", sql]).output().unwrap();
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-D"])
            .arg(&self.dir)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}
