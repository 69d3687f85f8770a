"""Fan-out: a timer tick that runs out of budget hands the due jobs left to asynchronous invocations of the
function, through the real tencentcloud-sdk-python-scf, pointed at a loopback SCF API that checks each request's
TC3-HMAC-SHA256 signature (recomputed below from Tencent Cloud's published algorithm) and records the events.
The test then runs each recorded shard through main_handler, as SCF would, and counts the emulator's queries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fixtures.emulator import TEST_REGION, TEST_SECRET_ID, TEST_SECRET_KEY
from test_handler import _handler_logging, FUNCTION, load_event, make_harness  # noqa: F401  (fixture)

from jobwatch.models import JobKey


def tc3_problem(method: str, path: str, query: str, headers: dict[str, str], body: bytes,
                keys: dict[str, str]) -> str | None:
    """None when the request carries a valid TC3 signature; else the API's AuthFailure code."""
    algorithm, _, rest = headers.get("authorization", "").partition(" ")
    if algorithm != "TC3-HMAC-SHA256":
        return "AuthFailure.InvalidAuthorization"
    parts = dict(p.strip().split("=", 1) for p in rest.split(","))
    secret_id, date, service, terminator = parts["Credential"].split("/")
    if secret_id not in keys or terminator != "tc3_request":
        return "AuthFailure.SecretIdNotFound"
    timestamp = headers.get("x-tc-timestamp", "0")
    if datetime.fromtimestamp(int(timestamp), timezone.utc).strftime("%Y-%m-%d") != date:
        return "AuthFailure.InvalidAuthorization"
    if abs(time.time() - int(timestamp)) > 300:
        return "AuthFailure.SignatureExpire"
    signed = parts["SignedHeaders"].split(";")
    if "host" not in signed or "content-type" not in signed:
        return "AuthFailure.InvalidAuthorization"
    # 1. canonical request
    canonical_headers = "".join(f"{name}:{headers[name].strip().lower()}\n" for name in signed)
    canonical_request = "\n".join([method, path, query, canonical_headers, parts["SignedHeaders"],
                                   hashlib.sha256(body).hexdigest()])
    # 2. string to sign
    scope = f"{date}/{service}/tc3_request"
    string_to_sign = "\n".join(["TC3-HMAC-SHA256", timestamp, scope,
                                hashlib.sha256(canonical_request.encode()).hexdigest()])

    # 3. derived key and signature
    def mac(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    secret_signing = mac(mac(mac(("TC3" + keys[secret_id]).encode(), date), service), "tc3_request")
    signature = hmac.new(secret_signing, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(signature, parts["Signature"]) else "AuthFailure.SignatureFailure"


class FakeScf:
    """``POST /`` like the SCF API 3.0: verifies TC3, records each Invoke, answers like the service."""

    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys
        self.invocations: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        self.error: dict[str, str] | None = None  # answer every Invoke with this error
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                path, _, query = self.path.partition("?")
                problem = tc3_problem("POST", path, query, headers, body, fake.keys)
                service = headers.get("authorization", "").split("Credential=")[-1].split("/")[2:3]
                if problem is None and (service != ["scf"] or headers.get("x-tc-version") != "2018-04-16"):
                    problem = "InvalidAction"
                if problem:
                    fake.rejected.append(problem)
                    resp: dict[str, Any] = {"Error": {"Code": problem, "Message": "refused"}}
                elif fake.error:
                    resp = {"Error": dict(fake.error)}
                else:
                    fake.invocations.append({"action": headers.get("x-tc-action"),
                                             "region": headers.get("x-tc-region"), "params": json.loads(body)})
                    resp = {"Result": {"FunctionRequestId": str(uuid.uuid4()), "InvokeResult": 0, "RetMsg": "",
                                       "ErrMsg": "", "Log": "", "Duration": 0, "BillDuration": 0, "MemUsage": 0}}
                resp["RequestId"] = str(uuid.uuid4())
                out = json.dumps({"Response": resp}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scf():
    s = FakeScf({TEST_SECRET_ID: TEST_SECRET_KEY})
    yield s
    s.close()


@pytest.fixture
def fan(emulator, emulator_clock, sqlite_url, monkeypatch, scf):
    h = make_harness(emulator, emulator_clock, sqlite_url, monkeypatch, JOBWATCH_FANOUT="true",
                     JOBWATCH_FANOUT_SHARD_SIZE="4", JOBWATCH_FANOUT_MAX_SHARDS="10",
                     JOBWATCH_SCF_ENDPOINT=scf.endpoint, JOBWATCH_BATCH_SIZE="2", JOBWATCH_CONCURRENCY="2")
    yield h
    h.mod._reset_for_tests(None)


def _timer_with_small_budget(h, **overrides):
    """A timer invocation whose clock moves 1 s per reading, with a 12 s limit: it polls a few jobs only."""
    h.monotonic.step = 1.0
    try:
        return h.invoke(load_event("timer.json", **overrides), time_limit_in_ms=12000, function_version="7")
    finally:
        h.monotonic.step = 0.0


def _track(h, n):
    ids = h.create(n)
    h.store.track([h.key(i) for i in ids], h.clock.now())
    return ids


def test_timer_fans_out_the_rest_and_every_job_is_polled_once(fan, scf):
    ids = _track(fan, 20)
    out = _timer_with_small_budget(fan)
    assert out["ok"] and out["budget_exhausted"]
    assert 0 < out["polled"] < 20
    left = 20 - out["polled"]
    assert out["left"] == left and out["fanned_out"] == left and out["shards"] == math.ceil(left / 4)
    assert scf.rejected == [] and len(scf.invocations) == out["shards"]
    for inv in scf.invocations:
        p = inv["params"]
        assert inv["action"] == "Invoke" and inv["region"] == TEST_REGION
        assert (p["FunctionName"], p["InvocationType"], p["Namespace"], p["Qualifier"]) == \
            (FUNCTION, "Event", "default", "7")
    # SCF now runs each shard: its ClientContext is the event
    shard_polled = 0
    for n, inv in enumerate(scf.invocations):
        event = json.loads(inv["params"]["ClientContext"])
        assert event["action"] == "poll" and 0 < len(event["keys"]) <= 4
        res = fan.invoke(event, request_id=f"shard-{n}")
        assert res["ok"] and res["polled"] == len(event["keys"]) and res["fanned_out"] == 0
        shard_polled += res["polled"]
    assert out["polled"] + shard_polled == 20
    assert fan.polls() == Counter({i: 1 for i in ids})  # each job queried exactly once
    assert all(fan.store.get(fan.key(i)).state == "Submitted" for i in ids)
    assert fan.store.count_due(fan.clock.now()) == 0


def test_fan_out_is_capped_by_max_shards(emulator, emulator_clock, sqlite_url, monkeypatch, scf):
    h = make_harness(emulator, emulator_clock, sqlite_url, monkeypatch, JOBWATCH_FANOUT="true",
                     JOBWATCH_FANOUT_SHARD_SIZE="2", JOBWATCH_FANOUT_MAX_SHARDS="2",
                     JOBWATCH_SCF_ENDPOINT=scf.endpoint, JOBWATCH_BATCH_SIZE="2", JOBWATCH_CONCURRENCY="2")
    try:
        _track(h, 20)
        out = _timer_with_small_budget(h)
        assert out["left"] > 4 and out["fanned_out"] == 4 and out["shards"] == 2 and len(scf.invocations) == 2
    finally:
        h.mod._reset_for_tests(None)


def test_a_refused_signature_is_reported_and_the_jobs_stay_due(fan, scf):
    scf.keys = {TEST_SECRET_ID: "some-other-key"}  # the API no longer accepts our signature
    _track(fan, 12)
    out = _timer_with_small_budget(fan)
    assert out["ok"] and out["left"] > 0 and out["fanned_out"] == 0 and out["shards"] == 0
    assert scf.rejected == ["AuthFailure.SignatureFailure"]  # one try, then the rest waits for the next tick
    assert "AuthFailure.SignatureFailure" in out["fanout_errors"][0]
    assert TEST_SECRET_KEY not in json.dumps(out)
    assert fan.store.count_due(fan.clock.now()) == out["left"]


def test_an_api_error_is_reported(fan, scf):
    scf.error = {"Code": "ResourceNotFound.Function", "Message": "function not found"}
    _track(fan, 12)
    out = _timer_with_small_budget(fan)
    assert out["fanned_out"] == 0 and "ResourceNotFound.Function" in out["fanout_errors"][0]


def test_no_fan_out_when_the_timer_says_so_or_nothing_is_left(fan, scf):
    _track(fan, 12)
    out = _timer_with_small_budget(fan, Message='{"fanout": false}')
    assert out["left"] > 0 and out["fanned_out"] == 0 and scf.invocations == []
    done = fan.invoke(load_event("timer.json"))  # a full budget: everything polled, nothing to hand out
    assert done["left"] == 0 and done["fanned_out"] == 0 and scf.invocations == []


def test_a_late_shard_skips_the_jobs_polled_since_it_was_sent(fan, scf):
    ids = _track(fan, 20)
    out = _timer_with_small_budget(fan)
    assert out["shards"] >= 1
    event = json.loads(scf.invocations[0]["params"]["ClientContext"])
    assert event["due_only"] is True
    # Before SCF starts the shard, something else polls its jobs (a direct poll: due or not, now).
    direct = fan.invoke({"action": "poll", "keys": event["keys"]}, request_id="direct")
    assert direct["polled"] == len(event["keys"])
    late = fan.invoke(event, request_id="late-shard")
    assert late["ok"] and late["polled"] == 0  # none of its jobs is due any more
    shard_ids = {JobKey.parse(k).job_id for k in event["keys"]}
    polls = fan.polls()
    assert shard_ids <= set(ids) and all(polls[i] == 1 for i in shard_ids)  # queried once, by the direct poll
