"""Fan-out: a timer tick that runs out of budget hands the due jobs left to asynchronous invocations of the
function, through the real tencentcloud-sdk-python-scf, pointed at a loopback SCF API that checks each request's
TC3-HMAC-SHA256 signature (``tests/fixtures/tencent_api.py``) and records the events.
The test then runs each recorded shard through main_handler, as SCF would, and counts the emulator's queries.
"""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter
from typing import Any

import pytest
from fixtures.emulator import TEST_REGION, TEST_SECRET_ID, TEST_SECRET_KEY
from fixtures.tencent_api import FakeTencentApi
from test_handler import _handler_logging, FUNCTION, load_event, make_harness  # noqa: F401  (fixture)

from jobwatch.core.models import JobKey


class FakeScf(FakeTencentApi):
    """The SCF API 3.0: records each verified Invoke in ``invocations`` and answers like the service, or with
    ``error`` when set."""

    def __init__(self, keys: dict[str, str]) -> None:
        super().__init__(keys)
        self.invocations: list[dict[str, Any]] = []
        self.error: dict[str, str] | None = None  # answer every Invoke with this error
        self.answer = self._invoke

    def _invoke(self, call: dict[str, Any]) -> dict[str, Any]:
        if call["service"] != "scf" or call["version"] != "2018-04-16":
            self.rejected.append("InvalidAction")
            return {"Error": {"Code": "InvalidAction", "Message": "refused"}}
        if self.error:
            return {"Error": dict(self.error)}
        self.invocations.append({"action": call["action"], "region": call["region"], "params": call["params"]})
        return {"Result": {"FunctionRequestId": str(uuid.uuid4()), "InvokeResult": 0, "RetMsg": "", "ErrMsg": "",
                           "Log": "", "Duration": 0, "BillDuration": 0, "MemUsage": 0}}


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
    """A timer invocation whose clock moves 1 s per reading, with a 20 s limit: it polls a few jobs only (the
    engine leaves the outbox drain its share, about half of so short a budget)."""
    h.monotonic.step = 1.0
    try:
        return h.invoke(load_event("timer.json", **overrides), time_limit_in_ms=20000, function_version="7")
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


def _fan_params(h, scf, **context):
    """The Invoke parameters of a timer tick with a small budget run in ``context``."""
    _track(h, 12)
    h.monotonic.step = 1.0
    try:
        out = h.invoke(load_event("timer.json"), time_limit_in_ms=12000, **context)
    finally:
        h.monotonic.step = 0.0
    return out, [inv["params"] for inv in scf.invocations]


def test_fan_out_invokes_the_namespace_and_version_it_runs_in(fan, scf):
    """Defect: fan-out always invoked namespace ``default`` (JOBWATCH_FUNCTION_NAMESPACE defaulted to it, so the
    invocation context's ``namespace`` was never read): a function deployed to another namespace could not fan
    out (ResourceNotFound.Function), or invoked a same-named function in ``default``."""
    out, params = _fan_params(fan, scf, namespace="prod", function_version="3")
    assert out["shards"] >= 1 and out.get("fanout_errors") is None
    assert {(p["Namespace"], p["Qualifier"]) for p in params} == {("prod", "3")}


def test_configured_namespace_and_qualifier_win_over_the_context(emulator, emulator_clock, sqlite_url,
                                                                 monkeypatch, scf):
    h = make_harness(emulator, emulator_clock, sqlite_url, monkeypatch, JOBWATCH_FANOUT="true",
                     JOBWATCH_FANOUT_SHARD_SIZE="4", JOBWATCH_FANOUT_MAX_SHARDS="10",
                     JOBWATCH_SCF_ENDPOINT=scf.endpoint, JOBWATCH_BATCH_SIZE="2", JOBWATCH_CONCURRENCY="2",
                     JOBWATCH_FUNCTION_NAMESPACE="ops", JOBWATCH_FUNCTION_QUALIFIER="live")
    try:
        out, params = _fan_params(h, scf, namespace="prod", function_version="3")
        assert out["shards"] >= 1
        assert {(p["Namespace"], p["Qualifier"]) for p in params} == {("ops", "live")}
    finally:
        h.mod._reset_for_tests(None)


def test_without_a_context_namespace_scf_namespace_then_default():
    from jobwatch.app.fanout import Target
    from jobwatch.app.config import load_settings

    s = load_settings({})
    assert Target.resolve(s, {"function_name": "f"}, {"TENCENTCLOUD_REGION": "ap-guangzhou",
                                                      "SCF_NAMESPACE": "ns1"}).namespace == "ns1"
    t = Target.resolve(s, {"function_name": "f", "tencentcloud_region": "ap-guangzhou"}, {})
    assert (t.namespace, t.qualifier) == ("default", None)
