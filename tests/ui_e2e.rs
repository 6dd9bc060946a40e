//! The web UI end to end in a real headless Chromium (Debian's `chromium`, installed by
//! `scripts/browser.sh`), driven by Playwright for Python (`tests/e2e/ui_flow.py`) against
//! `artstore standalone` on one port: an archivist's and an administrator's whole day, with
//! a screenshot of every page. And, without a browser, the session's defences: CSRF tokens
//! on every state-changing form and the session cookie's flags.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "e2e-admin-password";

struct Standalone {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Standalone {
    async fn start(dir: &std::path::Path) -> Standalone {
        let port = support::free_port();
        let log = dir.join("standalone.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(support::BIN)
            .args(["standalone", "--data"])
            .arg(dir.join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--log-format", "json"])
            .env("ARTSTORE_ADMIN_PASSWORD", PASSWORD)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        let s = Standalone { child, base: format!("http://127.0.0.1:{port}"), log };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let up = reqwest::get(format!("{}/login", s.base)).await.is_ok_and(|r| r.status() == 200);
            if up {
                break;
            }
            assert!(Instant::now() < deadline, "standalone did not come up: {}", s.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        s
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromium and Playwright must be there (scripts/test.sh installs them): a missing browser
/// fails this test, never skips it.
fn require_browser() {
    let chromium = Command::new("chromium").arg("--version").output();
    assert!(
        chromium.is_ok_and(|o| o.status.success()),
        "chromium is missing: run scripts/browser.sh (scripts/test.sh does)"
    );
    let pw = Command::new("python3").args(["-c", "import playwright.sync_api"]).status();
    assert!(pw.is_ok_and(|s| s.success()), "playwright for Python is missing: run scripts/browser.sh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_end_to_end() {
    require_browser();
    let tmp = tempfile::tempdir().unwrap();
    let s = Standalone::start(tmp.path()).await;
    let shots = std::env::var_os("ARTSTORE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("screenshots"));
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/ui_flow.py"))
        .args(["--base", &s.base, "--password", PASSWORD, "--work"])
        .arg(tmp.path().join("work"))
        .arg("--shots")
        .arg(&shots)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "browser flow failed:\n{stdout}\n{stderr}\n--- standalone log (tail) ---\n{}", {
        let log = s.log_text();
        log[log.len().saturating_sub(6000)..].to_owned()
    });
    for page in
        ["login", "dashboard", "documents", "document", "upload", "elements", "users", "policies", "audit", "keys"]
    {
        let p = shots.join(format!("{page}.png"));
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 5_000, "no screenshot of {page}: {}", p.display());
    }
}
