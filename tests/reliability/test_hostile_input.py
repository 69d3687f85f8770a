"""Hostile input. XML bodies (random, truncated, deeply nested, huge, XXE to a file and to a loopback listener,
entity expansion, wrong encodings) through jobwatch.ci.xmlparse.parse_response: only BadResponseError/CIError ever
escape, and nothing is read from disk or the network. Job IDs, buckets and regions crafted to inject paths, hosts
or headers are refused by CIClient before any request (the emulator's request log stays empty). Generated trigger
events through jobwatch.triggers.events.parse_event (only EventError/ValidationError) and through the handler's dispatch
with a real App (nothing escapes but StoreUnavailable, and no input is reported as an internal error)."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rel_support import BUCKET, REGION, SECRET_ID, SECRET_KEY, START, soak_or_quick, start_emulator

from jobwatch.triggers import scf as handler_app
from jobwatch.app.orchestrator import App
from jobwatch.ci.client import CIClient
from jobwatch.app.config import load_settings
from jobwatch.ci.credentials import StaticProvider
from jobwatch.emulator import ManualClock
from jobwatch.core.errors import BadResponseError, CIError, JobwatchError, RetryableError, ValidationError
from jobwatch.triggers.events import EventError, parse_event
from jobwatch.ci.xmlparse import MAX_BODY_BYTES, parse_response

EXAMPLES = soak_or_quick(2000, 200)
CANARY = "CANARY-XXE-7f3a9c"
GOOD = (b'<?xml version="1.0" encoding="UTF-8"?><Response><RequestId>r1</RequestId><JobsDetail>'
        b'<JobId>b0123456789abcdef0123456789abcdef</JobId><State>Running</State><Name>n</Name><Type>Workflow</Type>'
        b'<CreationTime>2026-01-01T08:00:00+0800</CreationTime><Code>Success</Code></JobsDetail>'
        b'<NonExistJobIds>a,b</NonExistJobIds></Response>')


class Listener:
    """A loopback TCP listener that counts connections: an XXE pointing here must never connect."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            c.close()


@pytest.fixture(scope="module")
def listener():
    li = Listener()
    yield li
    li.sock.close()


@pytest.fixture(scope="module")
def canary_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("xxe") / "secret.txt"
    p.write_text(CANARY)
    return p


def _parse_safely(body: bytes) -> str:
    """Parse; the only acceptable failures are ours. Returns what the caller could see (for canary checks)."""
    try:
        return repr(parse_response(body, status=200, request_id="r"))
    except (BadResponseError, CIError) as exc:
        assert str(exc), "an error without a message"
        return str(exc)


def _attacks(canary_file, port: int) -> list[bytes]:
    file_url = canary_file.as_uri()
    http_url = f"http://127.0.0.1:{port}/x"
    doc = '<Response><JobsDetail><JobId>b1</JobId><State>&e;</State><Name>&e;</Name></JobsDetail></Response>'
    out = [
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e SYSTEM "{file_url}">]>{doc}'.encode(),
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e SYSTEM "{http_url}">]>{doc}'.encode(),
        f'<?xml version="1.0"?><!DOCTYPE r SYSTEM "{http_url}">{doc.replace("&e;", "x")}'.encode(),
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % p SYSTEM "{http_url}"> %p;]>{doc.replace("&e;", "x")}'
        .encode(),
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % p SYSTEM "{file_url}"> %p;]>{doc.replace("&e;", "x")}'
        .encode(),
        f'<?xml version="1.0"?><?xml-stylesheet href="{http_url}"?>{doc.replace("&e;", "x")}'.encode(),
        f'<Response xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="{file_url}" parse="text"/>'
        f'</Response>'.encode(),
        f'<Response xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="{http_url}"/></Response>'.encode(),
        # billion laughs and a quadratic blow-up
        ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY a "lol">'
         + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9))
         + ']><Response><RequestId>&j;</RequestId></Response>').encode(),
        ('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "' + "x" * 50000 + '">]><Response><RequestId>'
         + "&a;" * 2000 + "</RequestId></Response>").encode(),
        # nesting and size
        b"<Response>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</Response>",
        b"<Response>" + b"<a>" * 40 + b"</a>" * 40 + b"</Response>",
        b"<Response><RequestId>" + b"x" * (MAX_BODY_BYTES + 1) + b"</RequestId></Response>",
        # encodings
        GOOD.decode().encode("utf-16"),
        GOOD.replace(b'encoding="UTF-8"', b'encoding="UTF-16"'),
        GOOD.replace(b'encoding="UTF-8"', b'encoding="ebcdic-xx"'),
        GOOD.replace(b"<Name>n</Name>", "<Name>\u00e9\u4e2d</Name>".encode("latin-1", "replace")),
        GOOD.replace(b"<Name>n</Name>", b"<Name>\xff\xfe\xc3\x28</Name>"),
        b"\xef\xbb\xbf" + GOOD, b"\x00" * 10, b"", b"   ", b"<", b"<Response>", b"<Error><Code>",
        b"<Error><Code>SlowDown</Code><Message>m</Message></Error>",
    ]
    return out + [GOOD[:i] for i in range(0, len(GOOD), 7)]


def test_crafted_xml_attacks_fail_cleanly_and_touch_nothing(canary_file, listener):
    for body in _attacks(canary_file, listener.port):
        seen = _parse_safely(body)
        assert CANARY not in seen
    assert listener.connections == 0


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=2000),
    st.integers(0, len(GOOD)).map(lambda i: GOOD[:i]),
    st.tuples(st.integers(0, len(GOOD) - 1), st.binary(min_size=1, max_size=20))
    .map(lambda t: GOOD[:t[0]] + t[1] + GOOD[t[0]:]),
    st.text(max_size=500).map(lambda t: ("<Response><JobsDetail><JobId>" + t + "</JobId><State>" + t[::-1]
                                         + "</State></JobsDetail></Response>").encode("utf-8", "surrogatepass")),
    st.integers(1, 200).map(lambda n: b"<Response>" + b"<x>" * n + b"</x>" * n + b"</Response>"),
    st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252", "gb18030", "shift_jis"])
    .map(lambda enc: GOOD.decode().replace("n</Name>", "\u4e2d\u00e9</Name>").encode(enc, "replace")),
))
def test_generated_xml_bodies_raise_only_our_errors(body):
    _parse_safely(body)


INJECT_IDS = ["../b1", "..%2Fb1", "b1/../../x", "b1\r\nX-Evil: 1", "b1\n", "b1\r", "b1\x00", "b1@evil.example",
              "b1#frag", "b1?cancel", "b1 b2", "b1,b2", "b1;x", "b1%0d%0a", "\u0431\u0031", "b1\u2028", "",
              "x" * 129, "b1\t", ".", "..", "b1/", "/b1"]
INJECT_BUCKETS = [f"{BUCKET}\n", f"{BUCKET}\r\nHost: evil", f"evil.example#{BUCKET}", f"{BUCKET}@evil.example",
                  f"{BUCKET}.evil.example", f"{BUCKET}/x", f"{BUCKET}?a=b", "../" + BUCKET, f"{BUCKET}%2F",
                  "\u0435xamplebucket-1250000000", f"{BUCKET}:8080", "", "UPPER-1250000000"]
INJECT_REGIONS = ["ap-guangzhou\n", "ap-guangzhou.evil.example", "ap-guangzhou/x", "ap-guangzhou#", "evil.com@x",
                  "ap-guangzhou\r\nX: y", "", "ap-\u0261uangzhou"]


def test_injected_ids_buckets_and_regions_are_refused_before_any_request():
    clock = ManualClock(start=START)
    emulator = start_emulator(clock)
    client = CIClient(StaticProvider(SECRET_ID, SECRET_KEY), endpoint=emulator.url, max_attempts=1)
    try:
        calls = [(BUCKET, REGION, j) for j in INJECT_IDS] + [(b, REGION, "b1") for b in INJECT_BUCKETS] + \
                [(BUCKET, r, "b1") for r in INJECT_REGIONS]
        for bucket, region, job_id in calls:
            for call in (lambda: client.get_job(bucket, region, job_id),
                         lambda: client.cancel_job(bucket, region, job_id)):
                with pytest.raises(ValidationError) as info:
                    call()
                assert info.value.field in ("job_id", "bucket", "region"), info.value
            with pytest.raises(ValidationError):
                list(client.list_jobs(bucket, region, job_id=job_id))
        assert emulator.request_log == [], [(r.method, r.path) for r in emulator.request_log]
    finally:
        client.close()
        emulator.stop()


# --- trigger events -------------------------------------------------------------------------------------------

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                     max_leaves=12)
_ids = st.sampled_from(["b0123456789abcdef0123456789abcdef", "../x", "b1\n", "", "x" * 200, "b1,b2"])
_bodies = st.one_of(
    _json.map(json.dumps), st.text(max_size=200),
    st.fixed_dictionaries({"job_ids": st.lists(_ids, max_size=3)},
                          optional={"bucket": st.sampled_from([BUCKET, "bad bucket", "../x"]),
                                    "region": st.sampled_from([REGION, "ap-\n"]), "tags": _json}).map(json.dumps),
    st.just('<Response><EventName>TaskFinish</EventName><JobsDetail><JobId>b1</JobId></JobsDetail></Response>'),
)
EVENTS = st.one_of(
    _json,
    st.fixed_dictionaries({"Type": st.just("Timer"), "TriggerName": st.text(max_size=10),
                           "Time": st.text(max_size=30), "Message": st.one_of(st.text(max_size=50),
                                                                              _json.map(json.dumps))}),
    st.fixed_dictionaries({"Records": st.lists(st.one_of(
        _json, st.fixed_dictionaries({"Ckafka": st.fixed_dictionaries({"msgBody": _bodies})}),
        st.fixed_dictionaries({"CMQ": st.fixed_dictionaries({"msgBody": _bodies})})), max_size=4)}),
    st.fixed_dictionaries({"type": st.just("connector:tdmq"), "data": st.fixed_dictionaries({"msgBody": _bodies})}),
    st.fixed_dictionaries({"requestContext": _json, "httpMethod": st.sampled_from(["GET", "POST", "PUT", "X"]),
                           "path": st.sampled_from(["/", "/jobs", "/jobs/b1", "/callback", "/../etc", "/jobs/\n"]),
                           "headers": st.dictionaries(st.sampled_from(["x-api-key", "content-type", "X"]),
                                                      st.text(max_size=20), max_size=3),
                           "queryString": _json, "body": st.one_of(st.none(), _bodies),
                           "isBase64Encoded": st.booleans()}),
    st.fixed_dictionaries({"action": st.one_of(st.sampled_from(["track", "poll", "status", "untrack", "tick",
                                                                "history", "nope"]), _json)},
                          optional={"job_ids": st.lists(_ids, max_size=3), "bucket": st.text(max_size=20),
                                    "region": st.text(max_size=20), "keys": _json, "budget_seconds": _json}),
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(EVENTS)
def test_generated_events_parse_or_raise_a_clear_error(event):
    try:
        parse_event(event)
    except (EventError, ValidationError) as exc:
        assert str(exc)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    clock = ManualClock(start=START)
    emulator = start_emulator(clock)
    env = {"JOBWATCH_STORE_URL": f"sqlite:///{tmp_path_factory.mktemp('ev') / 'jw.db'}",
           "JOBWATCH_CI_ENDPOINT": emulator.url, "JOBWATCH_SECRET_ID": SECRET_ID, "JOBWATCH_SECRET_KEY": SECRET_KEY,
           "JOBWATCH_DEFAULT_BUCKET": BUCKET, "JOBWATCH_DEFAULT_REGION": REGION, "JOBWATCH_HTTP_MAX_ATTEMPTS": "1",
           "JOBWATCH_API_KEY": "canary-api-key-0a1b2c3d", "JOBWATCH_NOTIFY": "log://"}
    a = App(load_settings(env), environ=env, clock=clock.now)
    yield a
    a.close()
    emulator.stop()


@settings(max_examples=soak_or_quick(1000, 120), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(EVENTS)
def test_generated_events_never_crash_the_handler(app, event):
    import time

    try:
        out = handler_app.handle(app, event, {"request_id": "r", "time_limit_in_ms": 30000}, time.monotonic())
    except RetryableError:
        raise AssertionError("the store is up: nothing here may ask for a retry")
    except JobwatchError as exc:  # pragma: no cover - reported below with the event
        raise AssertionError(f"{type(exc).__name__} escaped: {exc}") from exc
    text = json.dumps(out, default=str)
    assert "internal error" not in text, f"an input was reported as a bug: {text[:500]}"
