"""Webhook and chat-robot sinks against real HTTP receivers on 127.0.0.1.

The receivers check what a vendor would check: the Standard Webhooks signature with a verifier written here from
the specification (and proven on the specification's published vector), DingTalk's and Feishu's signatures from
their documented formulas, and they answer with each vendor's success and error bodies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import structlog

from jobwatch.core.errors import NotifyError
from jobwatch.core.models import JobKey, Notice, NoticeKind
from jobwatch.notify import parse_sinks, send_concurrently

WALL = 1_750_000_000.0
WH_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ROBOT_KEY = "canary-robot-key-5f1e2d3c"
DING_SECRET = "SECcanary0123456789abcdef"
FEISHU_SECRET = "feishu-canary-secret-42"


# ---- a receiver -------------------------------------------------------------------------------------------

class Receiver:
    """Records every request; ``answer(req) -> (status, headers, body)``; ``hang`` holds answers until set."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answer: Callable[[dict[str, Any]], tuple[int, dict[str, str], bytes]] = \
            lambda req: (200, {"Content-Type": "application/json"}, b'{"errcode":0,"errmsg":"ok"}')
        self.hang = False
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True
            wbufsize = -1

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                parts = urlsplit(self.path)
                req = {"path": parts.path, "query": {k: v[0] for k, v in parse_qs(parts.query).items()},
                       "raw_query": parts.query, "headers": {k.lower(): v for k, v in self.headers.items()},
                       "body": body}
                receiver.requests.append(req)
                if receiver.hang:
                    receiver.release.wait(10)
                status, headers, out = receiver.answer(req)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def rx():
    r = Receiver()
    yield r
    r.close()


def make_notice(**kw: Any) -> Notice:
    job = {"job_id": "b0123456789abcdef0123456789abcdef", "name": "nightly-transcode", "state": "Failed",
           "code": "InternalError", "message": "workflow node failed: object not found",
           "created_at": "2025-06-15T10:00:00+00:00", "started_at": "2025-06-15T10:00:05+00:00",
           "ended_at": "2025-06-15T11:02:10+00:00"}
    base = dict(idempotency_key="ap-guangzhou/media-1250000000/b0123456789abcdef0123456789abcdef/7",
                kind=NoticeKind.TRANSITION, key=JobKey("ap-guangzhou", "media-1250000000", job["job_id"]),
                from_state="Running", to_state="Failed",
                observed_at=datetime(2025, 6, 15, 11, 2, 30, tzinfo=timezone.utc), job=job, tags={"team": "media"})
    base.update(kw)
    return Notice(**base)


def one(spec: str, **kw: Any):
    [sink] = parse_sinks(spec, wall=lambda: WALL, **kw)
    return sink


# ---- Standard Webhooks verifier, from the specification --------------------------------------------------

def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes, now: float,
                            tolerance: int = 300) -> bool:
    """Receiver side of Standard Webhooks: key = base64-decoded part after ``whsec_``; signed content
    ``{webhook-id}.{webhook-timestamp}.{body}``; HMAC-SHA256, base64; header holds space-separated ``v1,<sig>``
    entries; the timestamp must be within the tolerance; comparison in constant time."""
    key = base64.b64decode(secret.split("_", 1)[1])
    msg_id, ts = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(now - int(ts)) > tolerance:
        return False
    expected = base64.b64encode(hmac.new(key, msg_id.encode() + b"." + ts.encode() + b"." + body,
                                         hashlib.sha256).digest()).decode()
    for entry in headers["webhook-signature"].split(" "):
        version, _, sig = entry.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return True
    return False


def test_verifier_accepts_the_published_vector_and_rejects_a_change():
    headers = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
               "webhook-signature": "v1,bm9wZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}
    body = b'{"test": 2432232314}'
    assert verify_standard_webhook(WH_SECRET, headers, body, now=1614265330)
    assert not verify_standard_webhook(WH_SECRET, headers, b'{"test": 2432232315}', now=1614265330)
    assert not verify_standard_webhook(WH_SECRET, headers, body, now=1614265330 + 301)


def test_webhook_sends_the_payload_signed(rx):
    sink = one(f"webhook+{rx.url}/hooks/ci?secret={WH_SECRET}&name=ops&team=x")
    n = make_notice()
    sink.send(n, timeout=2)
    [req] = rx.requests
    assert req["path"] == "/hooks/ci" and req["query"] == {"team": "x"}  # unknown options stay in the URL
    assert json.loads(req["body"]) == n.payload()
    assert req["headers"]["webhook-id"] == n.idempotency_key
    assert req["headers"]["webhook-timestamp"] == str(int(WALL))
    assert req["headers"]["content-type"].startswith("application/json")
    assert verify_standard_webhook(WH_SECRET, req["headers"], req["body"], now=WALL)
    tampered = req["body"].replace(b"Failed", b"Succes")
    assert not verify_standard_webhook(WH_SECRET, req["headers"], tampered, now=WALL)


@pytest.mark.parametrize("status,headers,retryable,retry_after", [
    (500, {}, True, None),
    (503, {"Retry-After": "7"}, True, 7.0),
    (429, {"Retry-After": "3"}, True, 3.0),
    (400, {}, False, None),
    (404, {}, False, None),
    (302, {"Location": "http://127.0.0.1:1/elsewhere"}, False, None),
])
def test_webhook_status_classification(rx, status, headers, retryable, retry_after):
    rx.answer = lambda req: (status, headers, b"nope")
    sink = one(f"webhook+{rx.url}/h?secret={WH_SECRET}")
    with pytest.raises(NotifyError) as ei:
        sink.send(make_notice(), timeout=2)
    assert ei.value.retryable is retryable
    assert ei.value.retry_after == retry_after
    assert f"HTTP {status}" in ei.value.reason
    assert len(rx.requests) == 1  # a redirect is not followed


def test_timeout_is_retryable_and_bounded(rx):
    rx.hang = True
    sink = one(f"wecom://{ROBOT_KEY}?endpoint={rx.url}")
    t0 = time.monotonic()
    with pytest.raises(NotifyError) as ei:
        sink.send(make_notice(), timeout=0.3)
    assert time.monotonic() - t0 < 2.0
    assert ei.value.retryable and "timed out" in ei.value.reason
    assert ROBOT_KEY not in str(ei.value)


def test_connection_refused_is_retryable_without_the_key():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    sink = one(f"wecom://{ROBOT_KEY}?endpoint=http://127.0.0.1:{port}")
    with pytest.raises(NotifyError) as ei:
        sink.send(make_notice(), timeout=1)
    assert ei.value.retryable
    assert ROBOT_KEY not in str(ei.value) and ROBOT_KEY not in repr(sink)


# ---- WeCom ----------------------------------------------------------------------------------------------

def test_wecom_markdown(rx):
    sink = one(f"wecom://{ROBOT_KEY}?endpoint={rx.url}")
    sink.send(make_notice(), timeout=2)
    [req] = rx.requests
    assert req["path"] == "/cgi-bin/webhook/send" and req["query"] == {"key": ROBOT_KEY}
    body = json.loads(req["body"])
    assert body["msgtype"] == "markdown" and set(body) == {"msgtype", "markdown"}
    content = body["markdown"]["content"]
    for piece in ("nightly-transcode", "b0123456789abcdef0123456789abcdef", "media-1250000000",
                  "Running -> Failed", "**Ran for:** 1h 2m", "InternalError", "workflow node failed"):
        assert piece in content


@pytest.mark.parametrize("errcode,retryable", [(45009, True), (-1, True), (93000, False), (40008, False)])
def test_wecom_errcode_is_a_failure(rx, errcode, retryable):
    rx.answer = lambda req: (200, {"Content-Type": "application/json"},
                             json.dumps({"errcode": errcode, "errmsg": "some error"}).encode())
    sink = one(f"wecom://{ROBOT_KEY}?endpoint={rx.url}")
    with pytest.raises(NotifyError) as ei:
        sink.send(make_notice(), timeout=2)
    assert ei.value.retryable is retryable and f"errcode {errcode}" in ei.value.reason


def test_wecom_non_json_answer_is_a_failure(rx):
    rx.answer = lambda req: (200, {"Content-Type": "text/html"}, b"<html>proxy login</html>")
    with pytest.raises(NotifyError) as ei:
        one(f"wecom://{ROBOT_KEY}?endpoint={rx.url}").send(make_notice(), timeout=2)
    assert ei.value.retryable


def test_rate_limit_refuses_without_a_request_then_recovers(rx):
    now = [100.0]
    [sink] = parse_sinks(f"wecom://{ROBOT_KEY}?endpoint={rx.url}&rate=2/min", clock=lambda: now[0])
    sink.send(make_notice(), timeout=2)
    sink.send(make_notice(), timeout=2)
    with pytest.raises(NotifyError) as ei:
        sink.send(make_notice(), timeout=2)
    assert ei.value.retryable and ei.value.retry_after == pytest.approx(30.0)
    assert len(rx.requests) == 2
    now[0] += 30.0
    sink.send(make_notice(), timeout=2)
    assert len(rx.requests) == 3


def test_default_wecom_limit_is_20_per_minute(rx):
    now = [0.0]
    [sink] = parse_sinks(f"wecom://{ROBOT_KEY}?endpoint={rx.url}", clock=lambda: now[0])
    for _ in range(20):
        sink.send(make_notice(), timeout=2)
    with pytest.raises(NotifyError) as ei:
        sink.send(make_notice(), timeout=2)
    assert ei.value.retry_after == pytest.approx(3.0)  # one token per 3 s


# ---- DingTalk -------------------------------------------------------------------------------------------

def test_dingtalk_signed_markdown(rx):
    sink = one(f"dingtalk://{ROBOT_KEY}?secret={DING_SECRET}&endpoint={rx.url}")
    sink.send(make_notice(), timeout=2)
    [req] = rx.requests
    assert req["path"] == "/robot/send"
    q = req["query"]
    assert q["access_token"] == ROBOT_KEY and q["timestamp"] == str(int(WALL * 1000))
    # DingTalk: sign = urlencode(base64(HmacSHA256(secret, timestamp + "\n" + secret)))
    want = base64.b64encode(hmac.new(DING_SECRET.encode(), f"{q['timestamp']}\n{DING_SECRET}".encode(),
                                     hashlib.sha256).digest()).decode()
    raw_sign = [p.split("=", 1)[1] for p in req["raw_query"].split("&") if p.startswith("sign=")][0]
    assert unquote(raw_sign) == want and "+" not in raw_sign and "/" not in raw_sign  # percent-encoded
    body = json.loads(req["body"])
    assert body["msgtype"] == "markdown"
    assert "nightly-transcode" in body["markdown"]["title"] and "Failed" in body["markdown"]["title"]
    assert "Running -> Failed" in body["markdown"]["text"]


@pytest.mark.parametrize("errcode,retryable", [(130101, True), (310000, False)])
def test_dingtalk_errcode(rx, errcode, retryable):
    rx.answer = lambda req: (200, {}, json.dumps({"errcode": errcode, "errmsg": "x"}).encode())
    with pytest.raises(NotifyError) as ei:
        one(f"dingtalk://{ROBOT_KEY}?secret={DING_SECRET}&endpoint={rx.url}").send(make_notice(), timeout=2)
    assert ei.value.retryable is retryable
    assert DING_SECRET not in str(ei.value) and ROBOT_KEY not in str(ei.value)


# ---- Feishu / Lark --------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["feishu", "lark"])
def test_feishu_signed_card(rx, scheme):
    rx.answer = lambda req: (200, {}, b'{"code":0,"msg":"success","data":{}}')
    sink = one(f"{scheme}://{ROBOT_KEY}?secret={FEISHU_SECRET}&endpoint={rx.url}")
    assert sink.name == scheme
    sink.send(make_notice(), timeout=2)
    [req] = rx.requests
    assert req["path"] == f"/open-apis/bot/v2/hook/{ROBOT_KEY}"
    body = json.loads(req["body"])
    assert body["timestamp"] == str(int(WALL)) and body["msg_type"] == "interactive"
    # Feishu: sign = base64(HmacSHA256(key = timestamp + "\n" + secret, message = empty))
    want = base64.b64encode(hmac.new(f"{body['timestamp']}\n{FEISHU_SECRET}".encode(), b"",
                                     hashlib.sha256).digest()).decode()
    assert body["sign"] == want
    assert "nightly-transcode" in body["card"]["header"]["title"]["content"]
    assert body["card"]["header"]["template"] == "red"
    assert "Running -> Failed" in body["card"]["elements"][0]["text"]["content"]


@pytest.mark.parametrize("code,retryable", [(19021, False), (9499, True)])
def test_feishu_code(rx, code, retryable):
    rx.answer = lambda req: (200, {}, json.dumps({"code": code, "msg": "sign match fail", "data": {}}).encode())
    with pytest.raises(NotifyError) as ei:
        one(f"feishu://{ROBOT_KEY}?secret={FEISHU_SECRET}&endpoint={rx.url}").send(make_notice(), timeout=2)
    assert ei.value.retryable is retryable and f"code {code}" in ei.value.reason


# ---- Slack ----------------------------------------------------------------------------------------------

def test_slack_blocks(rx):
    rx.answer = lambda req: (200, {"Content-Type": "text/plain"}, b"ok")
    sink = one(f"slack://hooks.slack.com/services/T000/B000/{ROBOT_KEY}?endpoint={rx.url}")
    sink.send(make_notice(), timeout=2)
    [req] = rx.requests
    assert req["path"] == f"/services/T000/B000/{ROBOT_KEY}"
    body = json.loads(req["body"])
    assert "nightly-transcode" in body["text"]
    text = body["blocks"][0]["text"]
    assert text["type"] == "mrkdwn" and "*State:* Running -&gt; Failed" in text["text"]


@pytest.mark.parametrize("status,body,retryable,after", [
    (200, b"invalid_token", False, None), (404, b"no_service", False, None), (429, b"rate_limited", True, 1.0),
    (500, b"rollup_error", True, None)])
def test_slack_failures(rx, status, body, retryable, after):
    rx.answer = lambda req: (status, {"Retry-After": "1"} if status == 429 else {}, body)
    with pytest.raises(NotifyError) as ei:
        one(f"slack://hooks.slack.com/services/T/B/{ROBOT_KEY}?endpoint={rx.url}").send(make_notice(), timeout=2)
    assert ei.value.retryable is retryable and ei.value.retry_after == after
    assert ROBOT_KEY not in str(ei.value)


# ---- log ------------------------------------------------------------------------------------------------

def test_log_sink_emits_the_payload():
    n = make_notice()
    with structlog.testing.capture_logs() as logs:
        one("log://").send(n, timeout=1)
    [entry] = logs
    assert entry["event"] == "notice" and entry["sink"] == "log"
    assert {k: entry[k] for k in n.payload()} == n.payload()


# ---- concurrency ----------------------------------------------------------------------------------------

def test_one_slow_sink_does_not_delay_the_others(rx):
    slow = Receiver()
    slow.hang = True
    try:
        sinks = parse_sinks(f"wecom://{ROBOT_KEY}?endpoint={slow.url}&name=slow\n"
                            f"webhook+{rx.url}/h?secret={WH_SECRET}\n"
                            f"dingtalk://{ROBOT_KEY}?endpoint={rx.url}\n"
                            "log://", wall=lambda: WALL)
        n = make_notice()
        t0 = time.monotonic()
        results = send_concurrently([(n, s) for s in sinks], timeout=0.5, max_workers=8)
        total = time.monotonic() - t0
    finally:
        slow.close()
    assert [r.sink for r in results] == ["wecom:slow", "webhook", "dingtalk", "log"]
    bad, *good = results
    assert not bad.ok and bad.retryable and "timed out" in bad.error and bad.elapsed >= 0.45
    assert all(r.ok and r.error is None and r.elapsed < 0.4 for r in good), good
    assert all(r.notice_key == n.idempotency_key for r in results)
    assert total < 1.5
    assert len(rx.requests) == 2  # webhook + dingtalk each delivered once


def test_send_concurrently_reports_each_failure_kind(rx):
    def answer(req):
        if req["path"] == "/perm":
            return 400, {}, b"bad"
        if req["path"] == "/temp":
            return 503, {"Retry-After": "2"}, b""
        return 200, {}, b'{"errcode":0,"errmsg":"ok"}'
    rx.answer = answer
    now = [0.0]
    sinks = parse_sinks(f"webhook+{rx.url}/perm?name=p\nwebhook+{rx.url}/temp?name=t\n"
                        f"wecom://{ROBOT_KEY}?endpoint={rx.url}&rate=1/min", clock=lambda: now[0])
    n = make_notice()
    sinks[2].send(n, timeout=1)  # spends the only token
    results = {r.sink: r for r in send_concurrently([(n, s) for s in sinks], timeout=1)}
    assert results["webhook:p"].ok is False and results["webhook:p"].retryable is False
    assert results["webhook:t"].retryable is True and results["webhook:t"].retry_after == 2.0
    assert results["wecom"].retryable is True and results["wecom"].retry_after == pytest.approx(60.0)
    assert "rate limit" in results["wecom"].error


def test_a_send_that_ignores_its_timeout_is_given_up_on_and_a_bug_is_contained(rx):
    from jobwatch.notify import Sink

    gate = threading.Event()

    class Stuck(Sink):
        kind = "stuck"

        def _deliver(self, notice, timeout):
            gate.wait(5)  # a receiver dribbling bytes outlasts the socket timeout like this

    class Buggy(Sink):
        kind = "buggy"

        def _deliver(self, notice, timeout):
            raise KeyError("oops")

    [good] = parse_sinks(f"webhook+{rx.url}/h")
    n = make_notice()
    t0 = time.monotonic()
    try:
        results = send_concurrently([(n, Stuck("stuck")), (n, Buggy("buggy")), (n, good)], timeout=0.2, grace=0.1)
    finally:
        gate.set()
    assert time.monotonic() - t0 < 1.0
    stuck, buggy, ok = results
    assert not stuck.ok and stuck.retryable and stuck.error == "no answer within 0.2s"
    assert not buggy.ok and buggy.retryable and buggy.error.startswith("unexpected KeyError")
    assert ok.ok
    assert "webhook-signature" not in rx.requests[0]["headers"]  # no secret= means unsigned
    assert rx.requests[0]["headers"]["webhook-id"] == n.idempotency_key
