"""The status page in a real browser: Debian's Chromium (installed by .ci/run) driven by Playwright's Python
package, against ``jobwatch serve``'s server on loopback over a real SQLite store.

These tests never skip: without /usr/bin/chromium (or the playwright package) they fail and say how to install
it, so CI cannot go green without having run them. Screenshots of the demo's data land in build/screenshots/.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from fixtures.webdata import XSS_NAME, populated_app

from jobwatch.app.config import load_settings
from jobwatch.app.orchestrator import App
from jobwatch.cli.serve import make_server, serve_in_thread

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("JOBWATCH_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "build" / "screenshots"
API_KEY = "canary-browser-key-31c7e0a9"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's Chromium "
                    "(apt-get update && apt-get install -y chromium; .ci/run does it)")
    from playwright.sync_api import sync_playwright  # the test extra; never `playwright install`

    with sync_playwright() as pw:
        yield pw


@pytest.fixture
def browser(playwright: Any, tmp_path: Path) -> Iterator[Any]:
    """A fresh profile (user-data-dir) per test, so no cookie or storage carries over."""
    ctx = playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1440, "height": 900})
    ctx.set_default_timeout(15000)
    try:
        yield ctx
    finally:
        ctx.close()


class Site:
    def __init__(self, app: App, url: str, data: Any) -> None:
        self.app, self.url, self.data = app, url, data


def _serve(app: App) -> tuple[Any, str]:
    server = make_server(app, "127.0.0.1", 0)
    serve_in_thread(server)
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    app, data = populated_app(f"sqlite:///{tmp_path / 'jw.db'}", API_KEY)
    server, base = _serve(app)
    try:
        yield Site(app, base, data)
    finally:
        server.shutdown()
        server.server_close()
        app.close()


def _watch(page: Any) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {"dialogs": [], "errors": [], "console": []}

    def on_dialog(d: Any) -> None:
        seen["dialogs"].append(d.message)
        d.accept()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: seen["errors"].append(str(exc)))
    page.on("console", lambda m: seen["console"].append(f"{m.type}: {m.text}") if m.type == "error" else None)
    return seen


def _login(page: Any, base: str, key: str = API_KEY) -> None:
    page.goto(base + "/ui")
    page.fill("#api_key", key)
    page.click("form[action$='ui/login'] button[type=submit]")


def test_log_in_see_the_overview_filter_and_open_a_job(browser: Any, site: Site) -> None:
    page = browser.new_page()
    seen = _watch(page)
    _login(page, site.url, "not-the-key")
    assert page.locator("[role=alert]").inner_text() == "That is not the API key."
    _login(page, site.url)
    page.wait_for_selector("table.jobs tbody tr")
    assert page.url == site.url + "/ui"
    cookies = browser.cookies()
    assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [("jobwatch_session", True, "Strict")]
    assert API_KEY not in cookies[0]["value"]
    assert page.locator("table.jobs tbody tr").count() == 60
    first_two = page.locator("table.jobs tbody tr .id").all_inner_texts()[:4:2]
    assert first_two == [site.data.stalled_key.job_id, site.data.erroring_key.job_id]
    # filter: choosing a state submits the form by itself (app.js)
    page.select_option("select[name=state]", "Failed")
    page.wait_for_url(re.compile(r".*/ui\?state=Failed$"))
    badges = page.locator("table.jobs tbody .badge").all_inner_texts()
    assert badges == ["Failed"] * 10
    page.select_option("select[name=bucket]", "archive-1250000000")
    page.wait_for_url(re.compile(r".*/ui\?state=Failed&bucket=archive-1250000000$"))
    assert page.locator("table.jobs tbody tr").count() == 10  # every failed job of the fixture is in this bucket
    page.select_option("select[name=state]", "")  # "all" leaves the URL
    page.wait_for_url(re.compile(r".*/ui\?bucket=archive-1250000000$"))
    assert page.locator("table.jobs tbody tr").count() == 20
    # open a job: the timeline is drawn, the notices name their sinks
    page.locator("table.jobs tbody td.name a").first.click()
    page.wait_for_selector("svg.timeline")
    assert "/ui/jobs/" in page.url
    assert page.locator("svg.timeline g.transition").count() == 3
    assert page.locator("table.notices .sink").first.inner_text().startswith("webhook:ops")
    page.click("text=← all jobs")
    page.wait_for_url(site.url + "/ui")
    assert not seen["errors"] and not seen["dialogs"], seen
    assert not [c for c in seen["console"] if "Content Security Policy" in c], seen["console"]


def test_retry_a_dead_letter(browser: Any, site: Site) -> None:
    page = browser.new_page()
    _watch(page)
    _login(page, site.url)
    rows = page.locator("section.dead tbody tr")
    rows.first.wait_for()
    assert rows.count() == 3
    nid = int(rows.first.locator("td").first.inner_text().lstrip("#"))
    rows.first.locator("button", has_text="Retry").click()
    page.wait_for_load_state()
    assert page.locator("section.dead tbody tr").count() == 2
    (entry,) = [e for e in site.app.outbox_entries(limit=1000) if e.notice.id == nid]
    assert entry.status == "pending" and entry.attempts == 0


def test_untrack_asks_first_and_needs_the_session(browser: Any, site: Site) -> None:
    page = browser.new_page()
    seen = _watch(page)
    _login(page, site.url)
    k = site.data.stalled_key
    page.goto(f"{site.url}/ui/jobs/{k.job_id}?region={k.region}&bucket={k.bucket}")
    page.click("button.danger")
    page.wait_for_selector("text=stopped")
    assert seen["dialogs"] == ["Stop watching this job? Its record and history are kept."]
    assert not site.app.job(k).active


def test_a_hostile_job_name_renders_as_text_and_runs_nothing(browser: Any, site: Site) -> None:
    page = browser.new_page()
    seen = _watch(page)
    _login(page, site.url)
    page.goto(site.url + "/ui?per=500")
    link = page.locator("table.jobs td.name a", has_text="onerror")
    assert link.inner_text() == XSS_NAME
    assert page.locator("img").count() == 0 and page.locator("main script").count() == 0
    assert page.locator(".tag", has_text="script").first.inner_text() == 'team="><script>alert(2)</script>'
    link.click()
    page.wait_for_selector("svg.timeline")
    assert page.locator("h1").inner_text().endswith(XSS_NAME)
    assert page.locator("img").count() == 0
    assert page.locator("td.err", has_text="alert(3)").first.inner_text().startswith("HTTP 500")
    page.wait_for_timeout(300)
    assert seen["dialogs"] == [] and seen["errors"] == []


def test_auto_refresh_updates_in_place_and_keeps_the_filter(browser: Any, site: Site) -> None:
    page = browser.new_page()
    _watch(page)
    _login(page, site.url)
    page.goto(site.url + "/ui?state=Failed")
    assert page.locator("table.jobs tbody tr").count() == 10
    page.evaluate("document.body.setAttribute('data-refresh', '1')")
    page.uncheck("#refresh")
    page.check("#refresh")  # re-arms the timer at the shorter interval
    # a job fails meanwhile: the refreshed region shows it without a navigation
    k = site.data.keys[2]  # Running in the fixture
    store = site.app.store
    (tj,) = store.claim_due("test", site.data.now, 60, 1, keys=[k])
    from jobwatch.core.records import PollRecord, Transition

    after = tj.evolve(state="Failed", active=False, last_change=site.data.now, transitions=tj.transitions + 1)
    assert store.record_polls("test", [PollRecord(tj, after, [Transition(k, tj.transitions + 1, "Running",
                                                                         "Failed", site.data.now)], [])]) == [True]
    from playwright.sync_api import expect  # (page.wait_for_function evaluates a string: our CSP forbids that)

    expect(page.locator("table.jobs tbody tr")).to_have_count(11, timeout=10000)
    assert page.url.endswith("/ui?state=Failed")
    assert page.locator("select[name=state]").input_value() == "Failed"
    # signed out elsewhere (cookie gone): the next refresh lands on the login form
    browser.clear_cookies()
    page.wait_for_selector("#api_key", timeout=10000)


def test_screenshots_of_the_demo(browser: Any, tmp_path: Path) -> None:
    """Runs ``jobwatch demo`` (emulator, real polling) into a SQLite store, then photographs the overview and one
    job of it into build/screenshots/ (docs/ keeps a copy of each for the README)."""
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    env = {**os.environ, "JOBWATCH_LOG_LEVEL": "warning", "JOBWATCH_STORE_URL": url}
    r = subprocess.run([sys.executable, "-m", "jobwatch.cli", "demo", "--store", url, "--jobs", "10", "--seed", "1",
                        "--speed", "60"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "jobwatch serve" in r.stdout and "/ui" in r.stdout  # the demo says where to look
    app = App(load_settings({"JOBWATCH_STORE_URL": url, "JOBWATCH_API_KEY": API_KEY}))
    server, base = _serve(app)
    try:
        page = browser.new_page()
        seen = _watch(page)
        _login(page, base)
        page.wait_for_selector("table.jobs tbody tr")
        assert page.locator("table.jobs tbody tr").count() == 10
        labels = page.locator("table.jobs .plabel").all_inner_texts()  # the demo's batches have 200 children each
        assert len(labels) == 10 and all(re.match(r"100% 200/200(, \d+ failed)?$", t) for t in labels), labels
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "status-overview.png"), full_page=True)
        failed = page.locator("table.jobs tbody tr", has=page.locator(".badge.s-failed")).locator("td.name a")
        (failed if failed.count() else page.locator("table.jobs td.name a")).first.click()
        page.wait_for_selector("svg.timeline")
        assert page.locator("section.children h2").inner_text() == "Children"
        page.screenshot(path=str(SHOTS / "status-job.png"), full_page=True)
        assert (SHOTS / "status-overview.png").stat().st_size > 10000
        assert (SHOTS / "status-job.png").stat().st_size > 10000
        assert not seen["errors"], seen
    finally:
        server.shutdown()
        server.server_close()
        app.close()
