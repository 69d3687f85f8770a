"""Issue 19, defects 6 and 7 and the masking item.

6: urllib3's request line (``POST /hook/<token>?code=<token>``) reached the log at debug level 348 times in one
   soak: every library record goes through the redaction, and their debug output is off.
7: structlog and the standard library wrote to stdout under separate locks, a line and its newline apart: 14
   of 12,000 lines held two JSON objects. One writer, one lock, whole lines.
Masking: "using password: YES" became "using password: ***"; mask secrets, not words."""

from __future__ import annotations

import io
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler

import pytest
import requests
import structlog
from fixtures.loopback import answer, serve

from jobwatch.app import logs
from jobwatch.core.redact import scrub

TOKEN = "hooktok-4e7f1a9b2c"  # never wrapped in Secret: only the URL rule can catch it


@pytest.fixture(autouse=True)
def _reset():
    logs.reset_for_tests()
    yield
    logs.reset_for_tests()


class _Ok(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer(self, 200, b"{}")


def test_a_webhook_token_in_a_library_request_line_never_reaches_the_log_even_at_debug():
    buf = io.StringIO()
    logs.configure_logging("debug", "json", buf, cache=False)
    server = serve(_Ok)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook/{TOKEN}?code={TOKEN}"
        with requests.Session() as s:
            assert s.post(url, json={"a": 1}, timeout=5).status_code == 200
        logging.getLogger("urllib3.connectionpool").warning("Retrying after connection broken: %s", url)
        logging.getLogger("somelib").error("POST /hook/%s?code=%s failed", TOKEN, TOKEN)
    finally:
        server.shutdown()
    out = buf.getvalue()
    assert TOKEN not in out, out
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert any("127.0.0.1" in e for e in events)  # the library's warning is still there, its host visible


def test_log_lines_from_structlog_and_the_standard_library_never_share_a_line():
    out = _Chunked()
    logs.configure_logging("info", "json", out, cache=False)
    log = structlog.get_logger("t")
    lib = logging.getLogger("somelib")

    def ours():
        for i in range(400):
            log.info("ours", i=i, pad="x" * 50)

    def theirs():
        for i in range(400):
            lib.warning("theirs %d %s", i, "y" * 50)

    threads = [threading.Thread(target=f) for f in (ours, theirs, ours, theirs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1600
    for line in lines:
        json.loads(line)  # exactly one object per line


class _Chunked(io.StringIO):
    """A stream that lets other threads in between writes (as a real pipe under load does)."""

    def write(self, s: str) -> int:
        import time

        n = super().write(s)
        time.sleep(0.00001)
        return n


@pytest.mark.parametrize("text, kept", [
    ("Access denied for user 'jw'@'10.0.0.1' (using password: YES)", "(using password: YES)"),
    ("JOBWATCH_SECRET_KEY: expected a value", "JOBWATCH_SECRET_KEY: expected a value"),
    ("token: expected 32 hex digits", "token: expected 32 hex digits"),
    ("password: expected at least 8 characters", "password: expected at least 8 characters"),
    ("GET http://127.0.0.1:38779/x failed", "127.0.0.1:38779"),
])
def test_masking_masks_secrets_not_words(text, kept):
    assert kept in scrub(text)


@pytest.mark.parametrize("text, secret", [
    ("driver said: password=hunter2 for x", "hunter2"),
    ('{"password": "hunter"}', "hunter"),
    ("mysql://jw:s3cr3t@db/x", "s3cr3t"),
    ("https://hooks.example/send?key=abcdefgh", "abcdefgh"),
    ("password: Zk8#pq!x", "Zk8#pq!x"),
    ("(using password: pa55word)", "pa55word"),
])
def test_masking_still_masks_secrets(text, secret):
    assert secret not in scrub(text)
