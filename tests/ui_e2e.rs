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

/// The `Set-Cookie` header that sets `name`.
fn set_cookie(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie set"))
        .to_owned()
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned()
}

fn hidden_csrf(html: &str) -> String {
    let at = html.find("name=\"_csrf\" value=\"").expect("a CSRF field in the form") + 20;
    html[at..at + html[at..].find('"').unwrap()].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_need_the_csrf_token_and_the_cookie_is_locked_down() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Standalone::start(tmp.path()).await;
    let c = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // The login form: a double-submit token in an HttpOnly, SameSite=Strict cookie.
    let page = c.get(format!("{}/login", s.base)).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let login_cookie = set_cookie(&page, "artstore_login");
    let html = page.text().await.unwrap();
    let login_csrf = hidden_csrf(&html);
    assert_eq!(cookie_value(&login_cookie), login_csrf);
    let form = |csrf: Option<&str>| {
        let mut f = vec![("username", "admin".to_owned()), ("password", PASSWORD.to_owned())];
        if let Some(t) = csrf {
            f.push(("_csrf", t.to_owned()));
        }
        f
    };
    let cookie = format!("artstore_login={login_csrf}");
    let r = c.post(format!("{}/login", s.base)).header("cookie", &cookie).form(&form(None)).send().await.unwrap();
    assert_eq!(r.status(), 403, "a login without the token is refused");
    let r =
        c.post(format!("{}/login", s.base)).header("cookie", &cookie).form(&form(Some("forged"))).send().await.unwrap();
    assert_eq!(r.status(), 403, "a login with another token is refused");
    let r = c
        .post(format!("{}/login", s.base))
        .header("cookie", &cookie)
        .form(&form(Some(&login_csrf)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let session = set_cookie(&r, "artstore_session");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(flag), "session cookie lacks {flag}: {session}");
    }
    assert!(!session.contains("Secure"), "plain HTTP here: {session}");
    let session = format!("artstore_session={}", cookie_value(&session));

    // A signed-in form post without the token changes nothing.
    let page = c.get(format!("{}/policies", s.base)).header("cookie", &session).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csrf = hidden_csrf(&page.text().await.unwrap());
    let policy = |name: &str, token: Option<&str>| {
        let mut f = vec![
            ("name", name.to_owned()),
            ("term", "P1Y".to_owned()),
            ("mode", "governance".to_owned()),
            ("disposition", "review".to_owned()),
        ];
        if let Some(t) = token {
            f.push(("_csrf", t.to_owned()));
        }
        c.post(format!("{}/policies", s.base)).header("cookie", &session).form(&f).send()
    };
    let r = policy("no-token", None).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("CSRF"), "the refusal says why");
    let r = policy("wrong-token", Some("0123")).await.unwrap();
    assert_eq!(r.status(), 403);
    let r = policy("with-token", Some(&csrf)).await.unwrap();
    assert_eq!(r.status(), 303);
    let token = support::password_token(&c, &s.base, "admin", PASSWORD).await;
    let policies = support::get_json(&c, &format!("{}/api/v1/retention-policies", s.base), &token).await;
    let names: Vec<&str> = policies["items"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["with-token"], "only the post with the token created a policy");

    // Logging out needs the token too; afterwards the session is gone.
    let r = c.post(format!("{}/logout", s.base)).header("cookie", &session).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(format!("{}/logout", s.base))
        .header("cookie", &session)
        .form(&[("_csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = c.get(format!("{}/policies", s.base)).header("cookie", &session).send().await.unwrap();
    assert_eq!(r.status(), 303, "signed out: back to the login form");
}

/// In a cluster the admin nodes serve the UI (`--ui-api` names the public API, here the
/// node itself): the login form, a login through the token endpoint, the dashboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_node_serves_the_ui_with_ui_api() {
    let tmp = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let me = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(tmp.path().join("admin.log")).unwrap();
    let child = Command::new(support::BIN)
        .args(["admin", "--node-id", "1", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(tmp.path().join("admin"))
        .args(["--peers", &format!("1={me}"), "--ui-api", &me, "--log-format", "json"])
        .env("ARTSTORE_ADMIN_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _guard = Standalone { child, base: me.clone(), log: tmp.path().join("admin.log") };
    let c = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        if let Ok(r) = c.get(format!("{me}/login")).send().await
            && r.status() == 200
        {
            break r;
        }
        assert!(Instant::now() < deadline, "the admin node's UI did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(page.headers().contains_key("content-security-policy"));
    let login_csrf = hidden_csrf(&page.text().await.unwrap());
    assert_eq!(c.get(format!("{me}/.well-known/jwks.json")).send().await.unwrap().status(), 200, "admin routes first");
    // The node's leader is elected shortly after it listens; the login waits for it.
    let session = loop {
        let r = c
            .post(format!("{me}/login"))
            .header("cookie", format!("artstore_login={login_csrf}"))
            .form(&[("username", "admin"), ("password", PASSWORD), ("_csrf", &login_csrf)])
            .send()
            .await
            .unwrap();
        if r.status() == 303 {
            break format!("artstore_session={}", cookie_value(&set_cookie(&r, "artstore_session")));
        }
        assert!(Instant::now() < deadline, "login refused: {}", r.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let dash = c.get(format!("{me}/")).header("cookie", &session).send().await.unwrap();
    assert_eq!(dash.status(), 200);
    let html = dash.text().await.unwrap();
    assert!(html.contains("Admin cluster") && html.contains("leader"), "{html}");
}
