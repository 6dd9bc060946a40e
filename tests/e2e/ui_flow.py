#!/usr/bin/env python3
"""An archivist's and an administrator's day in the ArtStore web UI, in headless Chromium.

Run by tests/ui_e2e.rs against `artstore standalone`:
    ui_flow.py --base http://127.0.0.1:PORT --password PW --work DIR --shots DIR

Every step asserts what a user would see; a screenshot of every page goes to --shots.
Playwright drives Debian's /usr/bin/chromium (never a downloaded browser).
"""

import argparse
import os
import re
import sys
import time

from playwright.sync_api import expect, sync_playwright

CHROMIUM = os.environ.get("ARTSTORE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
PDF_WORD = "zephyrine"


def step(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def pdf(text):
    """A one-page PDF showing `text` in Helvetica, with a correct xref table."""
    stream = f"BT /F1 24 Tf 72 700 Td ({text}) Tj ET\n"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}endstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, obj in enumerate(objects):
        offsets.append(len(out))
        out += f"{i + 1} 0 obj\n{obj}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def fixtures(work):
    os.makedirs(work, exist_ok=True)
    files = {
        "ledger.pdf": pdf(f"Quarterly ledger {PDF_WORD} of the northern office"),
        "minutes.txt": b"Minutes of the board meeting: the archive keeps every contract.\n",
        # Big enough for many chunks, so the page can be reloaded in the middle.
        "scan.bin": bytes((i * 7919) % 251 for i in range(3 * 1024 * 1024)),
    }
    paths = {}
    for name, data in files.items():
        p = os.path.join(work, name)
        with open(p, "wb") as f:
            f.write(data)
        paths[name] = p
    return paths


class Flow:
    def __init__(self, page, base, shots):
        self.page, self.base, self.shots = page, base, shots
        os.makedirs(shots, exist_ok=True)

    def go(self, path):
        resp = self.page.goto(self.base + path)
        return resp

    def shot(self, name):
        self.page.screenshot(path=os.path.join(self.shots, f"{name}.png"), full_page=True)

    def flash_ok(self, pattern):
        expect(self.page.locator(".msg.ok").first).to_contain_text(re.compile(pattern, re.I))

    def login(self, user, password):
        self.go("/login")
        self.page.fill("#username", user)
        self.page.fill("#password", password)
        self.page.click("button[type=submit]")
        expect(self.page.locator("header.top")).to_contain_text(user)

    def logout(self):
        self.page.click("form.logout button")
        expect(self.page).to_have_url(re.compile(r"/login"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--shots", required=True)
    a = ap.parse_args()
    paths = fixtures(a.work)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(20_000)
        page = context.new_page()
        console_errors = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.on("dialog", lambda d: d.accept())
        f = Flow(page, a.base, a.shots)
        try:
            run(f, page, a, paths, console_errors)
        except Exception:
            page.screenshot(path=os.path.join(a.shots, "failure.png"), full_page=True)
            print(f"--- page at failure: {page.url}\n{page.locator('body').inner_text()[:3000]}", file=sys.stderr)
            raise
        browser.close()
    step("done")


def run(f, page, a, paths, console_errors):
    if True:

        step("login page, a wrong password is refused readably")
        f.go("/login")
        f.shot("login")
        page.fill("#username", "admin")
        page.fill("#password", "not-the-password")
        page.click("button[type=submit]")
        expect(page.locator(".msg.err")).to_contain_text(re.compile("wrong|disabled", re.I))

        step("log in as admin")
        f.login("admin", a.password)
        expect(page.locator("main h1")).to_have_text("Dashboard")

        step("create a retention policy")
        f.go("/policies")
        create = page.locator("form", has=page.locator("button:has-text('Create policy')"))
        create.locator("[name=name]").fill("e2e-tax")
        create.locator("[name=term]").fill("P7Y")
        create.locator("[name=mode]").select_option("governance")
        create.locator("[name=disposition]").select_option("dispose")
        create.locator("button:has-text('Create policy')").click()
        f.flash_ok("e2e-tax")
        expect(page.locator("table")).to_contain_text("e2e-tax")
        f.shot("policies")

        step("upload two files (one PDF) with progress bars")
        f.go("/upload")
        page.select_option("select[name=retention_policy]", "e2e-tax")
        page.fill("input[name=tags]", "e2e,quarterly")
        page.set_input_files("#files", [paths["ledger.pdf"], paths["minutes.txt"]])
        page.click("#start")
        items = page.locator(".uploads li")
        expect(items).to_have_count(2)
        expect(page.locator(".uploads li progress")).to_have_count(2)
        expect(page.locator(".uploads li[data-state=done]")).to_have_count(2, timeout=60_000)
        f.shot("upload")

        step("a third upload, the page reloaded in the middle, resumes")
        f.go("/upload")
        page.eval_on_selector("form#upload", "f => f.dataset.chunk = '131072'")
        slow = {"patches": 0}

        def throttle(route):
            if route.request.method == "PATCH":
                slow["patches"] += 1
                time.sleep(0.15)
            route.continue_()

        page.route("**/upload/tus/**", throttle)
        page.set_input_files("#files", [paths["scan.bin"]])
        page.click("#start")
        deadline = time.time() + 60
        while slow["patches"] < 4:
            assert time.time() < deadline, "the upload did not start sending chunks"
            page.wait_for_timeout(100)
        page.reload()
        page.unroute("**/upload/tus/**")
        page.set_input_files("#files", [paths["scan.bin"]])
        page.click("#start")
        expect(page.locator(".uploads li").first).to_contain_text(re.compile("Resum", re.I))
        expect(page.locator(".uploads li[data-state=done]")).to_have_count(1, timeout=60_000)

        step("search by a word inside the PDF, filter by a facet, open the document")
        deadline = time.time() + 30
        while True:
            f.go(f"/documents?q={PDF_WORD}")
            if page.locator(".hit").count() > 0:
                break
            assert time.time() < deadline, "the PDF never became searchable"
            page.wait_for_timeout(500)
        expect(page.locator(".hit").first).to_contain_text("ledger.pdf")
        expect(page.locator(".hit mark").first).to_be_visible()
        page.locator(".facets a", has_text="application/pdf").first.click()
        expect(page.locator(".hit")).to_have_count(1)
        f.shot("documents")
        page.locator(".hit a", has_text="ledger.pdf").first.click()
        expect(page.locator("main h1")).to_contain_text("ledger.pdf")
        doc_path = page.url[len(a.base):]

        step("set and lift a legal hold, extend retention")
        page.fill("textarea[name=reason], input[name=reason]", "litigation 2026-17")
        page.click("button:has-text('Set legal hold')")
        f.flash_ok("hold")
        expect(page.locator("main")).to_contain_text("litigation 2026-17")
        page.click("button:has-text('Lift legal hold')")
        f.flash_ok("hold")
        page.fill("input[name=retain_until]", "2045-12-31")
        page.click("button:has-text('Extend retention')")
        f.flash_ok("retention|retain")
        expect(page.locator("main")).to_contain_text("2045-12-31")
        f.shot("document")

        step("switch the element to ro, confirming")
        f.go("/elements")
        f.shot("elements")
        registry = page.get_by_role("table", name="Registered storage elements")
        expect(registry).to_contain_text("edit")
        registry.get_by_role("link", name="Edit").first.click()
        edit = page.locator("form", has=page.locator("button:has-text('Save changes')"))
        edit.locator("[name=weight]").fill("3")
        edit.locator("[name=labels]").fill("rack=r12\ntier=ssd")
        edit.locator("button:has-text('Save changes')").click()
        f.go("/elements")
        expect(registry).to_contain_text("rack=r12")
        expect(registry).to_contain_text("tier=ssd")
        page.locator("form[data-confirm] button:has-text('Switch to ro')").first.click()
        f.flash_ok("ro")
        expect(registry.locator("td", has_text=re.compile(r"^\s*ro\s*$"))).to_have_count(1)
        expect(page.locator("button:has-text('Switch to rw')")).to_have_count(0)

        step("audit with chain verification, keys")
        f.go("/audit")
        page.click("button:has-text('Verify chain')")
        expect(page.locator(".msg.ok, .msg.err").first).to_be_visible()
        expect(page.locator(".msg.ok").first).to_contain_text(re.compile("verif|ok|intact", re.I))
        f.shot("audit")
        f.go("/keys")
        expect(page.locator("main")).to_contain_text(re.compile("current", re.I))
        page.click("button:has-text('Rotate now')")
        f.flash_ok("new signing key")
        f.shot("keys")

        step("the dashboard after a day's work")
        f.go("/")
        expect(page.locator("main")).to_contain_text("standalone")
        f.shot("dashboard")

        step("every page: each field has a label, and a narrow screen needs no sideways scrolling")
        pages = ["/", f"/documents?q={PDF_WORD}", doc_path, "/upload", "/elements", "/users", "/policies", "/audit", "/keys"]
        for path in pages:
            f.go(path)
            unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
                .filter(e => e.type !== 'hidden' && e.labels.length === 0 && !e.getAttribute('aria-label'))
                .map(e => e.outerHTML.slice(0, 120))""")
            assert not unlabelled, f"{path}: fields without a label: {unlabelled}"
            buttons = page.evaluate("""() => [...document.querySelectorAll('button')]
                .filter(b => !b.textContent.trim() && !b.getAttribute('aria-label')).map(b => b.outerHTML.slice(0, 160))""")
            assert not buttons, f"{path}: buttons without text: {buttons}"
        page.set_viewport_size({"width": 390, "height": 844})
        for path in pages:
            f.go(path)
            overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            wide = page.evaluate("""() => [...document.querySelectorAll('main *')]
                .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                .slice(0, 5).map(e => e.outerHTML.slice(0, 100))""")
            assert overflow <= 1, f"{path} is {overflow}px wider than a 390px screen: {wide}"
        f.go(f"/documents?q={PDF_WORD}")
        f.shot("narrow-documents")
        page.set_viewport_size({"width": 1280, "height": 900})

        step("create a reader user")
        f.go("/users")
        page.click("summary:has-text('Create a user')")
        create = page.locator("form", has=page.locator("button:has-text('Create user')"))
        create.locator("[name=username]").fill("rita")
        create.locator("[name=password]").fill("reader-password-1")
        create.locator("[name=password2]").fill("reader-password-1")
        create.locator("input[name=roles][value=reader]").check()
        create.locator("button:has-text('Create user')").click()
        f.flash_ok("rita")
        f.shot("users")
        f.logout()

        step("as the reader: no admin pages, no write buttons, admin URLs refused")
        f.login("rita", "reader-password-1")
        nav = page.locator("header.top nav")
        for hidden in ["Users", "Keys", "Storage elements", "Upload", "Audit"]:
            expect(nav.get_by_role("link", name=hidden, exact=True)).to_have_count(0)
        f.go(f"/documents?q={PDF_WORD}")
        page.locator(".hit a", has_text="ledger.pdf").first.click()
        expect(page.locator("main h1")).to_contain_text("ledger.pdf")
        for button in ["Set legal hold", "Lift legal hold", "Extend retention", "Save"]:
            expect(page.locator(f"button:has-text('{button}')")).to_have_count(0)
        for path in ["/users", "/keys", "/elements", "/audit", "/upload"]:
            resp = f.go(path)
            assert resp.status == 403, f"{path} answered {resp.status} to a reader"
        f.logout()

        step("a login that keeps failing is locked, and the page says how long")
        f.go("/login")
        for _ in range(6):
            page.fill("#username", "rita")
            page.fill("#password", "guessing")
            page.click("button[type=submit]")
            expect(page.locator(".msg.err")).to_be_visible()
        expect(page.locator(".msg.err")).to_contain_text(re.compile(r"locked for \d+ more seconds", re.I))

        bad = [e for e in console_errors if "Content Security Policy" in e or "Refused" in e]
        assert not bad, f"the browser reported policy violations: {bad}"


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
