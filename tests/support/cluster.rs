//! `deploy/local-cluster.sh` driven from a test: a whole cluster of real processes in a
//! temporary folder, on a port range reserved for this test, stopped when dropped.

use super::BIN;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The admin's password on the first start of every test cluster.
pub const PASSWORD: &str = "local-cluster-pass-1";

/// Every part `deploy/local-cluster.sh` starts, by the name its commands take.
pub const PARTS: [&str; 11] =
    ["admin-1", "admin-2", "admin-3", "se-1", "se-2", "ingester", "query", "nginx", "redis", "postgres", "kafka"];

/// A cluster of `deploy/local-cluster.sh`; `down` when dropped (the data stays in `dir`).
pub struct Cluster {
    pub dir: PathBuf,
    pub base: u16,
    /// TLS mode (`ARTSTORE_CLUSTER_TLS=1`): every role and the proxy on HTTPS.
    pub tls: bool,
    /// Holds the lock that reserves `base` for this test.
    _ports: std::fs::File,
}

impl Cluster {
    pub fn new(dir: PathBuf) -> Cluster {
        let (base, ports) = free_base();
        Cluster { dir, base, tls: false, _ports: ports }
    }

    /// A cluster in TLS mode, with its own private CA (`<dir>/tls/ca.pem`).
    pub fn new_tls(dir: PathBuf) -> Cluster {
        let mut c = Cluster::new(dir);
        c.tls = true;
        c
    }

    /// The cluster's CA certificate (TLS mode, after `up`).
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("tls").join("ca.pem")).unwrap()
    }

    /// Runs the script with `args` against this cluster.
    pub fn script(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local-cluster.sh"))
            .args(args)
            .env("ARTSTORE_BIN", BIN)
            .env("ARTSTORE_CLUSTER_DIR", &self.dir)
            .env("ARTSTORE_CLUSTER_PORT", self.base.to_string())
            .env("ARTSTORE_ADMIN_PASSWORD", PASSWORD)
            .env("ARTSTORE_CLUSTER_TLS", if self.tls { "1" } else { "0" })
            .output()
            .unwrap()
    }

    /// Runs the script with `args` and fails the test, with every role's last log lines,
    /// when it fails.
    pub fn must(&self, args: &[&str]) -> String {
        let out = self.script(args);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "local-cluster.sh {}:\n{stdout}\n{stderr}\n{}", args.join(" "), self.logs());
        stdout.into_owned()
    }

    /// `up`: starts what is not running and waits until every part is ready.
    pub fn up(&self) -> String {
        self.must(&["up"])
    }

    /// The last lines of every role's log.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for name in ["admin-1", "admin-2", "admin-3", "se-1", "se-2", "ingester", "query", "nginx"] {
            let text = std::fs::read_to_string(self.dir.join("logs").join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            s.push_str(&format!("--- {name}\n{}\n", tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
        }
        s
    }

    /// The PID files of the running parts, by file name.
    pub fn pids(&self) -> BTreeMap<String, String> {
        std::fs::read_dir(self.dir.join("run"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        (name, std::fs::read_to_string(e.path()).unwrap_or_default().trim().to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The front proxy's URL (the public API).
    pub fn front(&self) -> String {
        self.url(80)
    }

    /// `http://127.0.0.1:<base + offset>` (`https` in TLS mode; admin +1..+3, se-1 +11,
    /// se-2 +12, ingester +21, query +31, front +80).
    pub fn url(&self, offset: u16) -> String {
        format!("{}://127.0.0.1:{}", if self.tls { "https" } else { "http" }, self.base + offset)
    }

    /// The element URLs, se-1 first.
    pub fn elements(&self) -> [String; 2] {
        [self.url(11), self.url(12)]
    }

    /// The PostgreSQL cache URL of element `id` (`se-1`, `se-2`).
    pub fn cache_url(&self, id: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/artstore_{}", self.base + 32, id.replace('-', "_"))
    }

    /// Runs `artstore storage-element check-cache` against element `id`'s root and cache;
    /// returns whether the cache matches the files, and the command's output.
    pub fn check_cache(&self, id: &str) -> (bool, String) {
        let out = Command::new(BIN)
            .args(["storage-element", "check-cache", "--data"])
            .arg(self.dir.join(id))
            .arg("--cache")
            .arg(self.cache_url(id))
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.script(&["down"]);
    }
}

/// A base port whose every offset the cluster uses is free, reserved for this test by a lock
/// on a file named after it (tests run as separate processes side by side; the lock goes
/// with the returned file, also when a test dies). The range stays below the kernel's
/// ephemeral ports (32768 and up): a port found free there can be taken by any outgoing
/// connection of a test running beside this one before the cluster binds it.
fn free_base() -> (u16, std::fs::File) {
    let offsets = [1, 2, 3, 11, 12, 21, 31, 32, 79, 80, 92, 93];
    let locks = std::env::temp_dir().join("artstore-cluster-ports");
    std::fs::create_dir_all(&locks).unwrap();
    for _ in 0..200 {
        let base = 20_000 + (rand::random::<u16>() % 120) * 100;
        let file = std::fs::File::create(locks.join(format!("{base}.lock"))).unwrap();
        if !fs4::fs_std::FileExt::try_lock_exclusive(&file).unwrap_or(false) {
            continue;
        }
        if offsets.iter().all(|o| std::net::TcpListener::bind(("127.0.0.1", base + o)).is_ok()) {
            return (base, file);
        }
    }
    panic!("no free port range for the cluster");
}
