"""The status page without a browser: sessions, CSRF, escaping, filters and paging, actions, and both front doors
(an API Gateway event through the SCF trigger, and ``jobwatch serve`` over loopback HTTP), on a real SQLite store
filled through the store's own primitives (tests/fixtures/webdata.py)."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode

import pytest
from fixtures.webdata import XSS_NAME, XSS_TAG, populated_app

from jobwatch.app.config import load_settings
from jobwatch.app.orchestrator import App
from jobwatch.web import WebRequest, handle
from jobwatch.web.auth import SESSION_SECONDS

API_KEY = "canary-ui-key-8f2b61d0c4e9"


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def site(tmp_path):
    app, data = populated_app(f"sqlite:///{tmp_path / 'jw.db'}", API_KEY)
    yield app, data, Clock()
    app.close()


def call(app, method, path, *, query=None, body=b"", cookie=None, clock=None, headers=None):
    h = {"host": "example.test"}
    if cookie:
        h["cookie"] = cookie
    h.update(headers or {})
    return handle(app, WebRequest(method, path, query or {}, h, body), clock=clock)


def login(app, clock) -> str:
    r = call(app, "POST", "/ui/login", body=urlencode({"api_key": API_KEY}).encode(), clock=clock)
    assert r.status == 303, r.body
    return r.headers["Set-Cookie"].split(";")[0]


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


# --- sessions ---------------------------------------------------------------------------------------------------

def test_without_a_cookie_the_page_is_the_login_form_and_a_script_gets_401(site):
    app, data, clock = site
    r = call(app, "GET", "/ui", clock=clock)
    assert r.status == 200 and 'name="api_key"' in r.body and 'type="password"' in r.body
    assert "nightly-transcode" not in r.body and data.keys[1].job_id not in r.body
    r = call(app, "GET", "/ui", headers={"x-jobwatch-partial": "1"}, clock=clock)
    assert r.status == 401 and json.loads(r.body)["error"]
    r = call(app, "GET", f"/ui/jobs/{data.keys[1].job_id}", query={"region": data.keys[1].region,
                                                                   "bucket": data.keys[1].bucket}, clock=clock)
    assert r.status == 401 and 'name="api_key"' in r.body and data.keys[1].job_id not in r.body


def test_login_sets_a_signed_httponly_secure_strict_cookie_that_is_not_the_key(site):
    app, _, clock = site
    r = call(app, "POST", "/ui/login", body=b"api_key=wrong", clock=clock)
    assert r.status == 401 and "Set-Cookie" not in r.headers and "wrong" not in r.body
    r = call(app, "POST", "/ui/login", body=urlencode({"api_key": API_KEY}).encode(), clock=clock)
    assert r.status == 303 and r.headers["Location"] == "../ui"
    cookie = r.headers["Set-Cookie"]
    attrs = [a.strip() for a in cookie.split(";")]
    assert {"HttpOnly", "Secure", "SameSite=Strict", f"Max-Age={SESSION_SECONDS}"} <= set(attrs)
    assert API_KEY not in cookie and not any(a.lower().startswith("path=") for a in attrs)
    ok = call(app, "GET", "/ui", cookie=attrs[0], clock=clock)
    assert ok.status == 200 and "nightly-transcode" in ok.body and API_KEY not in ok.body


def test_forged_expired_and_old_key_cookies_are_refused(site):
    app, _, clock = site
    cookie = login(app, clock)
    name, value = cookie.split("=", 1)
    version, expires, nonce, mac = value.split(".")
    forged = [
        f"{name}={version}.{int(expires) + 86400}.{nonce}.{mac}",  # extended expiry, old MAC
        f"{name}={version}.{expires}.{nonce}.{mac[:-2]}AA",  # MAC altered
        f"{name}={version}.{expires}.{nonce}",  # MAC dropped
        f"{name}=v1.{expires}.{nonce}.",
        f"{name}={API_KEY}",
    ]
    for bad in forged:
        r = call(app, "GET", "/ui", cookie=bad, clock=clock)
        assert 'name="api_key"' in r.body and "nightly-transcode" not in r.body, bad
    assert "nightly-transcode" in call(app, "GET", "/ui", cookie=cookie, clock=clock).body
    clock.t += SESSION_SECONDS + 1  # expired
    r = call(app, "GET", "/ui", cookie=cookie, clock=clock)
    assert 'name="api_key"' in r.body and "nightly-transcode" not in r.body
    # a session signed under another API key (the key was rotated) is refused too
    other = App(load_settings({"JOBWATCH_STORE_URL": "sqlite:///:memory:", "JOBWATCH_API_KEY": "another-key-123"}),
                store=app.store, clock=app.clock)
    fresh = login(app, Clock(clock.t))
    assert 'name="api_key"' in call(other, "GET", "/ui", cookie=fresh, clock=clock).body


def test_posts_without_the_sessions_csrf_token_are_refused(site):
    app, data, clock = site
    cookie = login(app, clock)
    key = data.stalled_key
    q = {"region": key.region, "bucket": key.bucket}
    path = f"/ui/jobs/{key.job_id}/untrack"
    other_cookie = login(app, clock)
    other_token = csrf_of(call(app, "GET", "/ui", cookie=other_cookie, clock=clock).body)
    for body in (b"", b"csrf_token=", b"csrf_token=forged", urlencode({"csrf_token": other_token}).encode()):
        r = call(app, "POST", path, query=q, body=body, cookie=cookie, clock=clock)
        assert r.status == 403, body
    assert app.store.get(key).active
    r = call(app, "POST", path, query=q, body=urlencode({"csrf_token": other_token}).encode(), clock=clock)
    assert r.status == 401 and app.store.get(key).active  # no session at all
    token = csrf_of(call(app, "GET", "/ui", cookie=cookie, clock=clock).body)
    r = call(app, "POST", path, query=q, body=urlencode({"csrf_token": token}).encode(), cookie=cookie,
             headers={"origin": "https://evil.test"}, clock=clock)
    assert r.status == 403 and app.store.get(key).active  # right token, another origin
    r = call(app, "POST", path, query=q, body=urlencode({"csrf_token": token}).encode(), cookie=cookie,
             headers={"origin": "http://example.test"}, clock=clock)
    assert r.status == 303 and not app.store.get(key).active
    assert r.headers["Location"] == f"../../../ui/jobs/{key.job_id}?region={key.region}&bucket={key.bucket}"


def test_retry_puts_a_dead_letter_back_and_returns_to_the_filtered_overview(site):
    app, data, clock = site
    cookie = login(app, clock)
    page = call(app, "GET", "/ui", query={"state": "Failed"}, cookie=cookie, clock=clock).body
    nid = data.dead_notice_ids[0]
    assert f'action="ui/outbox/{nid}/retry"' in page
    r = call(app, "POST", f"/ui/outbox/{nid}/retry", body=urlencode({"csrf_token": csrf_of(page),
                                                                     "next": "?state=Failed"}).encode(),
             cookie=cookie, clock=clock)
    assert r.status == 303 and r.headers["Location"] == "../../../ui?state=Failed"
    (entry,) = [e for e in app.store.list_outbox(limit=1000) if e.notice.id == nid]
    assert entry.status == "pending" and entry.attempts == 0
    # the redirect target is only ever a query string or a job page of ours
    r = call(app, "POST", f"/ui/outbox/{data.dead_notice_ids[1]}/retry",
             body=urlencode({"csrf_token": csrf_of(page), "next": "//evil.test/x"}).encode(), cookie=cookie,
             clock=clock)
    assert r.headers["Location"] == "../../../ui"
    r = call(app, "POST", "/ui/outbox/999999/retry", body=urlencode({"csrf_token": csrf_of(page)}).encode(),
             cookie=cookie, clock=clock)
    assert r.status == 404


# --- what the pages show ------------------------------------------------------------------------------------------

def _no_markup_from_data(html: str) -> None:
    assert XSS_NAME not in html and "<script>alert" not in html and "onerror=alert(1)>" not in html
    assert re.findall(r"<script\b[^>]*>", html) == [re.search(r'<script src="[^"]*app\.js" defer>', html).group(0)]
    assert not re.search(r"<[a-z][^>]*\son[a-z]+=", html), "an inline event handler attribute"
    assert " style=" not in html


def test_everything_from_ci_and_users_is_escaped(site):
    app, data, clock = site
    cookie = login(app, clock)
    ov = call(app, "GET", "/ui", query={"per": "500"}, cookie=cookie, clock=clock)
    _no_markup_from_data(ov.body)
    assert "&lt;img src=x onerror=alert(1)&gt;" in ov.body
    assert "&quot;&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in ov.body
    k = data.xss_key
    job = call(app, "GET", f"/ui/jobs/{k.job_id}", query={"region": k.region, "bucket": k.bucket}, cookie=cookie,
               clock=clock)
    assert job.status == 200
    _no_markup_from_data(job.body)
    assert "&lt;img src=x onerror=alert(1)&gt;" in job.body and "<svg class=\"timeline\"" in job.body
    e = data.erroring_key
    job = call(app, "GET", f"/ui/jobs/{e.job_id}", query={"region": e.region, "bucket": e.bucket}, cookie=cookie,
               clock=clock)
    _no_markup_from_data(job.body)
    assert "&lt;script&gt;alert(3)&lt;/script&gt; connection reset" in job.body
    assert job.body.count('<g class="poll-error">') == 4 and "<h2>Failed polls</h2>" in job.body


def test_every_response_carries_a_strict_csp_and_no_secret(site):
    app, data, clock = site
    cookie = login(app, clock)
    k = data.keys[5]
    responses = [call(app, "GET", "/ui", clock=clock), call(app, "GET", "/ui", cookie=cookie, clock=clock),
                 call(app, "GET", f"/ui/jobs/{k.job_id}", query={"region": k.region, "bucket": k.bucket},
                      cookie=cookie, clock=clock),
                 call(app, "GET", "/ui/static/app.js", clock=clock), call(app, "GET", "/ui/nope", cookie=cookie,
                                                                           clock=clock)]
    for r in responses:
        h = r.all_headers()
        csp = h["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp and h["X-Content-Type-Options"] == "nosniff"
        assert API_KEY not in str(r.body)


def test_overview_puts_stalled_then_erroring_first_and_counts_states(site):
    app, data, clock = site
    cookie = login(app, clock)
    body = call(app, "GET", "/ui", cookie=cookie, clock=clock).body
    ids = re.findall(r'<div class="id">(b[0-9a-f]{32})</div>', body)
    assert ids[:2] == [data.stalled_key.job_id, data.erroring_key.job_id]
    assert "stalled</span>" in body and "4 poll errors" in body
    counts = dict((s, int(n.replace(",", ""))) for n, s in
                  re.findall(r'<span class="n">([0-9,]+)</span> ([A-Za-z]+)</a>', body))
    assert counts["all"] == 60 and sum(v for s, v in counts.items() if s != "all") == 60
    assert counts["Failed"] == 10
    assert "Outbox: dead 3" in body


def test_filters_by_state_bucket_and_tag_and_pages(site):
    app, data, clock = site
    cookie = login(app, clock)

    def rows(**q):
        body = call(app, "GET", "/ui", query=q, cookie=cookie, clock=clock).body
        return re.findall(r'<tr class="[a-z]*"><td><span class="badge s-([a-z]+)">', body), body

    states, body = rows(state="Failed")
    assert states == ["failed"] * 10 and "1–10 of 10" in body
    states, body = rows(bucket="archive-1250000000")
    assert len(states) == 20 and "media-1250000000</td>" not in body
    states, body = rows(tag="team=search")
    assert len(states) == 19  # every third job but the first, whose tag is hostile
    states, body = rows(tag=f"{XSS_TAG[0]}={XSS_TAG[1]}")
    assert len(states) == 1 and "&lt;img src=x" in body
    states, body = rows(per="10", page="2")
    assert len(states) == 10 and "11–20 of 60" in body and 'rel="prev"' in body and 'rel="next"' in body
    # the pager keeps the filter
    _, body = rows(state="Running", per="10")
    assert "1–10 of 10" in body
    _, body = rows(bucket="media-1250000000", per="10")
    assert re.search(r'href="ui\?bucket=media-1250000000&amp;per=10&amp;page=2"', body)
    states, body = rows(state="Nope")
    assert states == [] and "No jobs match." in body


def test_job_page_shows_timeline_transitions_and_notices_per_sink(site):
    app, data, clock = site
    cookie = login(app, clock)
    k = data.keys[1]  # Failed
    body = call(app, "GET", f"/ui/jobs/{k.job_id}", query={"region": k.region, "bucket": k.bucket}, cookie=cookie,
                clock=clock).body
    assert body.count('<g class="transition">') == 3 and body.count('class="notice n-') == 3
    assert "webhook:ops: delivered" in body and "wecom:media: delivered" in body
    assert '<span class="badge s-running">Running</span> → <span class="badge s-failed">Failed</span>' in body
    r = call(app, "GET", "/ui/jobs/b" + "f" * 32, query={"region": k.region, "bucket": k.bucket}, cookie=cookie,
             clock=clock)
    assert r.status == 404
    r = call(app, "GET", "/ui/jobs/x", query={"region": k.region, "bucket": "Bad_Bucket"}, cookie=cookie,
             clock=clock)
    assert r.status == 400 and "bucket" in r.body


def test_status_page_disabled_without_an_api_key(tmp_path):
    url = f"sqlite:///{tmp_path / 'jw.db'}"
    app = App(load_settings({"JOBWATCH_STORE_URL": url}))
    try:
        r = handle(app, WebRequest("GET", "/ui"))
        assert r.status == 403 and "JOBWATCH_API_KEY" in r.body
        r = handle(app, WebRequest("POST", "/ui/login", body=b"api_key="))
        assert r.status == 403
    finally:
        app.close()


# --- front doors --------------------------------------------------------------------------------------------------

def _apigw(method, path, *, pattern, params=None, query=None, body=None, cookie=None):
    headers = {"Host": "service-f94sy04v-1250000000.gz.apigw.tencentcs.com", "User-Agent": "test"}
    if cookie:
        headers["Cookie"] = cookie
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    return {"requestContext": {"serviceId": "service-f94sy04v", "path": pattern, "httpMethod": method,
                               "requestId": "r-1", "identity": {}, "sourceIp": "10.0.2.14", "stage": "release"},
            "headers": headers, "body": body, "pathParameters": params or {}, "queryStringParameters": query or {},
            "headerParameters": {}, "stageVariables": {"stage": "release"}, "path": path,
            "queryString": query or {}, "httpMethod": method}


def test_through_api_gateway_with_relative_links_that_survive_the_stage_prefix(site):
    from jobwatch.triggers import scf

    app, data, _ = site
    sample = json.loads((Path(__file__).resolve().parents[2] / "events" / "apigw_ui.json").read_text())
    out = scf.handle(app, sample, {"time_limit_in_ms": 30000}, app.monotonic())
    assert out["statusCode"] == 200 and 'name="api_key"' in out["body"]  # events/apigw_ui.json: no session yet
    out = scf.handle(app, _apigw("GET", "/ui", pattern="/ui"), {"time_limit_in_ms": 30000}, app.monotonic())
    assert out["statusCode"] == 200 and out["isBase64Encoded"] is False and 'name="api_key"' in out["body"]
    assert out["headers"]["Content-Type"].startswith("text/html")
    assert "Content-Security-Policy" in out["headers"]
    assert 'action="ui/login"' in out["body"] and 'href="ui/static/app.css"' in out["body"]
    out = scf.handle(app, _apigw("POST", "/ui/login", pattern="/ui/login", body=urlencode({"api_key": API_KEY})),
                     {}, app.monotonic())
    assert out["statusCode"] == 303 and out["headers"]["Location"] == "../ui"
    assert "Secure" in out["headers"]["Set-Cookie"]
    cookie = out["headers"]["Set-Cookie"].split(";")[0]
    k = data.keys[3]
    out = scf.handle(app, _apigw("GET", f"/ui/jobs/{k.job_id}", pattern="/ui/jobs/{jobId}",
                                 params={"jobId": k.job_id}, query={"region": k.region, "bucket": k.bucket},
                                 cookie=cookie), {}, app.monotonic())
    assert out["statusCode"] == 200 and 'href="../../ui"' in out["body"]
    assert 'href="../../ui/static/app.css"' in out["body"]
    # /release/ui/jobs/<id> resolves ../../ui to /release/ui: the stage prefix is kept by the browser
    from urllib.parse import urljoin

    assert urljoin(f"https://h/release/ui/jobs/{k.job_id}?region=x", "../../ui") == "https://h/release/ui"
    # the JSON API at /jobs/{jobId} is unchanged beside it
    out = scf.handle(app, _apigw("GET", f"/jobs/{k.job_id}", pattern="/jobs/{jobId}", params={"jobId": k.job_id},
                                 query={"region": k.region, "bucket": k.bucket}), {}, app.monotonic())
    assert out["statusCode"] == 401 and out["headers"]["Content-Type"].startswith("application/json")


def test_jobwatch_serve_over_loopback(site):
    from jobwatch.cli.serve import make_server, serve_in_thread

    app, data, clock = site
    server = make_server(app, "127.0.0.1", 0, clock=clock)
    serve_in_thread(server)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    try:
        with opener.open(base + "/") as r:  # the root sends you to the page
            assert r.url == base + "/ui" and 'name="api_key"' in r.read().decode()
        with opener.open(base + "/ui/login", data=urlencode({"api_key": API_KEY}).encode()) as r:
            html = r.read().decode()
        assert r.url == base + "/ui" and "nightly-transcode" in html
        (c,) = list(jar)
        assert c.name == "jobwatch_session" and not c.secure and c.path == "/ui" and API_KEY not in c.value
        with opener.open(base + "/ui/static/app.css") as r:
            assert r.headers["Content-Type"].startswith("text/css") and b"--failed" in r.read()
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(urllib.request.Request(base + "/ui", headers={"X-Jobwatch-Partial": "1",
                                                                      "Cookie": "jobwatch_session=forged"}))
        assert err.value.code == 401
    finally:
        server.shutdown()
        server.server_close()


def test_logout_needs_the_token_and_clears_the_cookie(site):
    app, _, clock = site
    cookie = login(app, clock)
    assert call(app, "POST", "/ui/logout", cookie=cookie, clock=clock).status == 403
    token = csrf_of(call(app, "GET", "/ui", cookie=cookie, clock=clock).body)
    r = call(app, "POST", "/ui/logout", body=urlencode({"csrf_token": token}).encode(), cookie=cookie, clock=clock)
    assert r.status == 303 and r.headers["Set-Cookie"].startswith("jobwatch_session=; Max-Age=0;")


def test_logout_revokes_the_session_so_a_replayed_cookie_is_refused(site):
    """QA 2: logout only asked the browser to drop the cookie; a copy of it stayed good for its 8 hours."""
    from jobwatch.cli.serve import make_server, serve_in_thread

    app, data, clock = site
    cookie, other = login(app, clock), login(app, clock)  # two browsers
    server = make_server(app, "127.0.0.1", 0, clock=clock)
    serve_in_thread(server)
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def send(path, *, cookie, data=None, partial=False):
        headers = {"Cookie": cookie, **({"X-Jobwatch-Partial": "1"} if partial else {})}
        req = urllib.request.Request(base + path, data=data, headers=headers)
        try:
            with urllib.request.build_opener(_NoRedirect).open(req) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    try:
        status, html = send("/ui", cookie=cookie)
        assert status == 200 and "nightly-transcode" in html
        token = csrf_of(html)
        status, _ = send("/ui/logout", cookie=cookie, data=urlencode({"csrf_token": token}).encode())
        assert status == 303
        # the same cookie replayed (a copy from before the logout) is refused, for pages, scripts and actions
        status, html = send("/ui", cookie=cookie)
        assert 'name="api_key"' in html and "nightly-transcode" not in html
        assert send("/ui", cookie=cookie, partial=True)[0] == 401
        k = next(k for k in data.keys if app.job(k).active)
        status, _ = send(f"/ui/jobs/{k.job_id}/untrack?region={k.region}&bucket={k.bucket}", cookie=cookie,
                         data=urlencode({"csrf_token": token}).encode())
        assert status == 401 and app.job(k).active
        # another session is untouched, and signing in again works
        status, html = send("/ui", cookie=other)
        assert status == 200 and "nightly-transcode" in html
        again = login(app, clock)
        assert send("/ui", cookie=again)[0] == 200
    finally:
        server.shutdown()
        server.server_close()


_OTHER_INSTANCE = """
import json, sys
from jobwatch.app.config import load_settings
from jobwatch.app.orchestrator import App
from jobwatch.web import WebRequest, handle
cfg = json.loads(sys.stdin.read())
app = App(load_settings(environ={"JOBWATCH_STORE_URL": cfg["url"], "JOBWATCH_API_KEY": cfg["key"]}))
r = handle(app, WebRequest("GET", "/ui", {}, {"cookie": cfg["cookie"], "x-jobwatch-partial": "1"}, b""),
           clock=lambda: cfg["t"])
print(json.dumps({"status": r.status}))
app.close()
"""


def test_a_logout_holds_on_every_instance_sharing_the_store(site, tmp_path):
    """A logout on one function instance must refuse the cookie on the others: SCF's instances share no memory,
    so the revocation is kept in the store (the status page's own store), not only in the process."""
    import subprocess
    import sys

    app, data, clock = site
    cookie, other = login(app, clock), login(app, clock)
    url = str(app.settings.store_url.reveal()) if hasattr(app.settings.store_url, "reveal") else app.settings.store_url

    def elsewhere(c: str) -> int:
        p = subprocess.run([sys.executable, "-c", _OTHER_INSTANCE], capture_output=True, text=True, timeout=120,
                           input=json.dumps({"url": url, "key": API_KEY, "cookie": c, "t": clock.t}))
        assert p.returncode == 0, p.stderr[-2000:]
        return json.loads(p.stdout.strip().splitlines()[-1])["status"]

    assert elsewhere(cookie) == 200  # the other instance honours a live session
    html = call(app, "GET", "/ui", cookie=cookie, clock=clock).body
    r = call(app, "POST", "/ui/logout", body=urlencode({"csrf_token": csrf_of(html)}).encode(), cookie=cookie,
             clock=clock)
    assert r.status == 303
    assert elsewhere(cookie) == 401  # logged out here: refused there too
    assert elsewhere(other) == 200  # another session is untouched


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_untracked_counts_are_shown_but_are_not_filters(site):
    app, data, clock = site
    cookie = login(app, clock)
    app.untrack([data.stalled_key])  # Running, now untracked
    body = call(app, "GET", "/ui", cookie=cookie, clock=clock).body
    assert '<span class="count s-running"><span class="n">1</span> Running (untracked)</span>' in body
    assert "state=Running+%28untracked%29" not in body


def test_the_serve_command_prints_the_page_and_a_key_for_the_run(tmp_path):
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'jw.db'}"
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("JOBWATCH_")}
    env.update({"JOBWATCH_STORE_URL": url, "JOBWATCH_LOG_LEVEL": "warning"})
    proc = subprocess.Popen([sys.executable, "-m", "jobwatch.cli", "serve", "--port", "0"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        page_line = proc.stdout.readline()
        key_line = proc.stdout.readline()
        m = re.match(r"status page: (http://127\.0\.0\.1:\d+/ui)$", page_line.strip())
        assert m, page_line + proc.stderr.read() if proc.poll() is not None else page_line
        key = key_line.strip().rsplit(" ", 1)[-1]
        assert "JOBWATCH_API_KEY is not set" in key_line and len(key) >= 24 and key not in m.group(1)
        jar = CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with opener.open(m.group(1).replace("/ui", "/ui/login"), data=urlencode({"api_key": key}).encode()) as r:
            assert "No jobs match." in r.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def test_a_bare_job_id_finds_its_job_when_only_one_bucket_has_it(site):
    app, data, clock = site
    cookie = login(app, clock)
    k = next(k for k in data.keys if app.job(k).active)  # two active records with one ID: truly ambiguous
    r = call(app, "GET", f"/ui/jobs/{k.job_id}", cookie=cookie, clock=clock)
    assert r.status == 200 and f"<dd>{k.bucket}</dd>" in r.body
    other = type(k)(k.region, "other-1250000009", k.job_id)
    app.store.track([other], data.now)
    r = call(app, "GET", f"/ui/jobs/{k.job_id}", cookie=cookie, clock=clock)
    assert r.status == 409 and "more than one bucket" in r.body  # ambiguous: both candidates, as links
    for cand in (k, other):
        assert f'?region={cand.region}&amp;bucket={cand.bucket}"' in r.body and str(cand) in r.body
    app.untrack([k])  # one of the two is still watched: that one is meant
    r = call(app, "GET", f"/ui/jobs/{k.job_id}", cookie=cookie, clock=clock)
    assert r.status == 200 and f"<dd>{other.bucket}</dd>" in r.body


def test_an_unknown_bare_job_id_is_404_not_an_invalid_bucket(site):
    """QA: GET /ui/jobs/<unknown id> answered 400 "invalid bucket None"."""
    app, data, clock = site
    cookie = login(app, clock)
    r = call(app, "GET", "/ui/jobs/bnot0tracked", cookie=cookie, clock=clock)
    assert r.status == 404 and "no tracked job has this ID" in r.body and "invalid bucket" not in r.body


def test_serve_answers_500_on_a_corrupt_row_and_keeps_serving(tmp_path, capsys):
    from jobwatch.cli.serve import make_server, serve_in_thread

    import sqlite3

    bad = tmp_path / "jw.db"
    populated_app(f"sqlite:///{bad}", API_KEY, n=12)[0].close()
    conn = sqlite3.connect(bad)  # a corrupt row: reading it raises (not a store fault a retry cures)
    conn.execute("UPDATE jw_jobs SET job_json='{not json'")
    conn.commit()
    conn.close()
    app = App(load_settings({"JOBWATCH_STORE_URL": f"sqlite:///{bad}", "JOBWATCH_API_KEY": API_KEY}))
    server = make_server(app, "127.0.0.1", 0)
    serve_in_thread(server)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(base + "/ui/login", data=urlencode({"api_key": API_KEY}).encode())  # -> GET /ui
        assert err.value.code == 500, err.value.code
        with opener.open(base + "/ui/static/app.css") as r:  # still serving
            assert r.status == 200
        assert API_KEY not in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()
        app.close()


def _raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except socket.timeout:
            pass
        return b"".join(chunks)


def test_serve_answers_while_another_connection_sits_idle(site):
    """QA: one idle TCP connection (a browser preconnect) blocked every other request of `jobwatch serve`."""
    import socket

    from jobwatch.cli.serve import make_server, serve_in_thread

    app, data, clock = site
    server = make_server(app, "127.0.0.1", 0, clock=clock, timeout=1.0)
    serve_in_thread(server)
    port = server.server_address[1]
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui/static/app.css", timeout=5) as r:
            assert r.status == 200
        assert time.monotonic() - started < 0.9  # not after the idle one timed out: beside it
        assert idle.recv(1) == b""  # and the idle one is closed after its timeout, not held forever
    finally:
        idle.close()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("length", ["-5", "abc"])
def test_serve_answers_400_to_a_bad_content_length(site, capsys, length):
    from jobwatch.cli.serve import make_server, serve_in_thread

    app, data, clock = site
    server = make_server(app, "127.0.0.1", 0, clock=clock)
    serve_in_thread(server)
    try:
        answer = _raw(server.server_address[1], f"POST /ui/login HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
                                                f"Connection: close\r\n\r\napi_key=x".encode())
        assert answer.startswith(b"HTTP/1.0 400 "), answer[:200]
        assert "Traceback" not in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()
