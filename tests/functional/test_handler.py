"""Every sample in events/ through handler/index.py's main_handler, against the emulator over loopback HTTP and a
SQLite store; a batch with good and bad records; retried batches; errors; the per-instance App; structured logs.

The helpers here (``Harness``, ``harness``, ``load_event``) are imported by test_callbacks.py and test_fanout.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

import pytest
from fixtures.emulator import TEST_BUCKET, TEST_REGION, TEST_SECRET_ID, TEST_SECRET_KEY

from jobwatch.triggers import scf as handler_app
from jobwatch.app.orchestrator import App
from jobwatch.app.config import load_settings
from jobwatch.core.errors import ConfigError, StoreUnavailable
from jobwatch.core.models import JobKey

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
HANDLER = ROOT / "handler" / "index.py"
API_KEY = "canary-api-key-5e1d9c7b3a"
FUNCTION = "ci-jobwatch-test"
_SAMPLE_ID = re.compile(r"b[0-9a-f]{32}")


def load_event(name: str, ids: Sequence[str] = (), **overrides: Any) -> dict[str, Any]:
    """A sample from events/, its job IDs replaced in order of first appearance by ``ids`` (everywhere: inside
    message bodies, XML, paths), and top-level keys replaced by ``overrides``."""
    text = (EVENTS / name).read_text()
    found = list(dict.fromkeys(_SAMPLE_ID.findall(text)))
    assert len(ids) <= len(found), f"{name} has {len(found)} job IDs, {len(ids)} given"
    for old, new in zip(found, ids):
        text = text.replace(old, new)
    event = json.loads(text)
    event.update(overrides)
    return event


def with_api_key(event: dict[str, Any], key: str | None) -> dict[str, Any]:
    headers = {k: v for k, v in event["headers"].items() if k.lower() != "x-api-key"}
    if key is not None:
        headers["x-api-key"] = key
    return {**event, "headers": headers}


def load_handler() -> ModuleType:
    spec = importlib.util.spec_from_file_location("jobwatch_scf_index", HANDLER)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def base_env(emulator: Any, store_url: str, **extra: str) -> dict[str, str]:
    env = {
        "JOBWATCH_STORE_URL": store_url,
        "JOBWATCH_CI_ENDPOINT": emulator.url,
        "JOBWATCH_SECRET_ID": TEST_SECRET_ID,
        "JOBWATCH_SECRET_KEY": TEST_SECRET_KEY,
        "JOBWATCH_DEFAULT_BUCKET": TEST_BUCKET,
        "JOBWATCH_DEFAULT_REGION": TEST_REGION,
        "JOBWATCH_HTTP_MAX_ATTEMPTS": "1",
        "JOBWATCH_HTTP_READ_TIMEOUT": "5",
        "JOBWATCH_POLL_MIN_SECONDS": "10",
        "JOBWATCH_POLL_MAX_SECONDS": "20",
        "JOBWATCH_POLL_JITTER": "0",
        "JOBWATCH_SAFETY_MARGIN_SECONDS": "1",
        "JOBWATCH_LOG_FORMAT": "json",
        "JOBWATCH_API_KEY": API_KEY,
        "JOBWATCH_NOTIFY": "log://",
        "JOBWATCH_FUNCTION_NAME": FUNCTION,
    }
    env.update(extra)
    return env


class StepClock:
    """A monotonic clock for the App: still unless ``step`` is set, then each read advances by ``step``."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.step = 0.0

    def __call__(self) -> float:
        self.t += self.step
        return self.t


@dataclass
class Harness:
    mod: ModuleType
    app: App
    emulator: Any
    clock: Any  # the emulator's ManualClock, also the App's wall clock
    monotonic: StepClock
    env: dict[str, str]
    calls: int = 0
    invoker: Callable[..., Any] | None = field(default=None)

    def invoke(self, event: Any, **context: Any) -> Any:
        self.calls += 1
        ctx = {"request_id": f"req-{self.calls}", "function_name": FUNCTION, "time_limit_in_ms": 60000,
               "namespace": "default", "tencentcloud_region": TEST_REGION, **context}
        return self.mod.main_handler(event, ctx)

    @property
    def store(self) -> Any:
        return self.app.store

    def create(self, n: int = 1, **kw: Any) -> list[str]:
        return [self.emulator.create_job(TEST_BUCKET, **kw) for _ in range(n)]

    @staticmethod
    def key(job_id: str) -> JobKey:
        return JobKey(TEST_REGION, TEST_BUCKET, job_id)

    def polls(self) -> Counter:
        """Queries per job ID the emulator has answered."""
        return Counter(r.job_id for r in self.emulator.request_log
                       if r.method == "GET" and r.job_id and r.path.startswith("/inventorytriggerjob/"))


def make_harness(emulator: Any, clock: Any, store_url: str, monkeypatch: Any, **extra_env: str) -> Harness:
    env = base_env(emulator, store_url, **extra_env)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    mod = load_handler()
    mono = StepClock()
    app = App(load_settings(env), environ=env, clock=clock.now, monotonic=mono, rand=lambda: 0.5)
    mod._reset_for_tests(app)
    return Harness(mod, app, emulator, clock, mono, env)


@pytest.fixture(autouse=True)
def _handler_logging(monkeypatch):
    """The handler configures logging without caching here (the suite-wide fixture forgets cached loggers)."""
    monkeypatch.setattr(handler_app, "LOG_CACHE", False)
    yield


@pytest.fixture
def harness(emulator, emulator_clock, sqlite_url, monkeypatch):
    h = make_harness(emulator, emulator_clock, sqlite_url, monkeypatch)
    yield h
    h.mod._reset_for_tests(None)


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


# --- samples ------------------------------------------------------------------------------------------------

def test_timer_sample_polls_due_jobs_and_delivers(harness):
    ids = harness.create(3)
    harness.store.track([harness.key(i) for i in ids[:2]], harness.clock.now())
    out = harness.invoke(load_event("timer.json"))
    assert out["ok"] and out["action"] == "timer"
    assert (out["polled"], out["transitions"], out["notices_queued"], out["notices_delivered"]) == (2, 2, 2, 2)
    assert out["left"] == 0 and out["fanned_out"] == 0 and out["rejected"] == []
    assert harness.polls() == Counter({ids[0]: 1, ids[1]: 1})
    assert [harness.store.get(harness.key(i)).state for i in ids[:2]] == ["Submitted", "Submitted"]
    assert harness.store.get(harness.key(ids[2])) is None
    # 70 s later the emulator has moved them on; the next tick records it
    harness.clock.advance(70)
    out2 = harness.invoke(load_event("timer.json"))
    assert out2["polled"] == 2 and out2["transitions"] >= 2
    for i in ids[:2]:
        assert harness.store.get(harness.key(i)).state == harness.emulator.job_state(TEST_BUCKET, i)


def test_timer_with_a_bad_message_still_ticks_and_says_why(harness):
    ids = harness.create(1)
    harness.store.track([harness.key(ids[0])], harness.clock.now())
    out = harness.invoke(load_event("timer.json", Message="user define msg body"))
    assert out["ok"] and out["polled"] == 1
    assert out["rejected"][0]["field"] == "Message" and "not JSON" in out["rejected"][0]["reason"]


def test_ckafka_sample_registers_and_polls_and_a_retried_batch_duplicates_nothing(harness):
    ids = harness.create(3)
    event = load_event("ckafka.json", ids)
    out = harness.invoke(event)
    assert out["ok"] and out["action"] == "ckafka"
    assert (out["registered"], out["already_tracked"], out["polled"], out["transitions"]) == (3, 0, 3, 3)
    assert out["notices_queued"] == 3 and out["rejected"] == []
    assert harness.store.get(harness.key(ids[2])).tags == {"team": "media"}
    history = {i: harness.store.history(harness.key(i)) for i in ids}
    outbox = harness.store.list_outbox(limit=100)
    again = harness.invoke(event)  # SCF retrying the same batch
    assert (again["registered"], again["already_tracked"], again["transitions"], again["notices_queued"]) == \
        (0, 3, 0, 0)
    assert {i: harness.store.history(harness.key(i)) for i in ids} == history
    assert [e.notice.idempotency_key for e in harness.store.list_outbox(limit=100)] == \
        [e.notice.idempotency_key for e in outbox]


@pytest.mark.parametrize("name, source", [("cmq_topic.json", "cmq"), ("tdmq_eventbridge.json", "tdmq")])
def test_cmq_and_tdmq_samples_register_and_poll(harness, name, source):
    ids = harness.create(1)
    out = harness.invoke(load_event(name, ids))
    assert out["ok"] and out["action"] == source
    assert (out["registered"], out["polled"], out["transitions"]) == (1, 1, 1)
    assert harness.store.get(harness.key(ids[0])).state == "Submitted"
    assert harness.polls() == Counter({ids[0]: 1})


def test_apigw_register_sample(harness):
    ids = harness.create(2)
    resp = harness.invoke(with_api_key(load_event("apigw_register.json", ids), API_KEY))
    assert resp["statusCode"] == 200 and resp["isBase64Encoded"] is False
    body = json.loads(resp["body"])
    assert body["registered"] == 2 and body["polled"] == 2
    assert sorted(j["job_id"] for j in body["jobs"]) == sorted(ids)
    assert all(j["state"] == "Submitted" and j["tags"] == {"team": "media"} for j in body["jobs"])


@pytest.mark.parametrize("key, status", [(None, 401), ("wrong-key", 401), (API_KEY + "x", 401)])
def test_apigw_refuses_without_the_right_key_and_registers_nothing(harness, key, status):
    ids = harness.create(1)
    resp = harness.invoke(with_api_key(load_event("apigw_register.json", ids), key))
    assert resp["statusCode"] == status and "x-api-key" in json.loads(resp["body"])["error"]
    assert harness.store.list_jobs() == [] and harness.polls() == Counter()


def test_apigw_is_disabled_without_a_configured_key(emulator, emulator_clock, sqlite_url, monkeypatch):
    h = make_harness(emulator, emulator_clock, sqlite_url, monkeypatch, JOBWATCH_API_KEY="")
    try:
        assert h.app.settings.api_key is None
        resp = h.invoke(with_api_key(load_event("apigw_register.json", h.create(1)), "anything"))
        assert resp["statusCode"] == 403 and "JOBWATCH_API_KEY" in json.loads(resp["body"])["error"]
    finally:
        h.mod._reset_for_tests(None)


def test_apigw_status_sample(harness):
    ids = harness.create(1)
    event = with_api_key(load_event("apigw_status.json", ids), API_KEY)
    missing = harness.invoke(event)
    assert missing["statusCode"] == 404 and ids[0] in json.loads(missing["body"])["error"]
    harness.invoke({"action": "track", "job_ids": ids})
    resp = harness.invoke(event)
    body = json.loads(resp["body"])
    assert resp["statusCode"] == 200 and body["job_id"] == ids[0] and body["state"] == "Submitted"
    assert [h["to"] for h in body["history"]] == ["Submitted"]
    bad = harness.invoke({**event, "queryString": {"bucket": "NOPE", "region": TEST_REGION}})
    assert bad["statusCode"] == 400 and "bucket" in json.loads(bad["body"])["error"]


def test_apigw_unknown_route_and_method(harness):
    base = load_event("apigw_status.json")
    r404 = harness.invoke({**base, "path": "/nothing", "httpMethod": "GET"})
    assert r404["statusCode"] == 404 and "POST /jobs" in json.loads(r404["body"])["routes"]
    r405 = harness.invoke({**base, "path": "/jobs", "httpMethod": "GET"})
    assert r405["statusCode"] == 405
    r400 = harness.invoke(with_api_key({**load_event("apigw_register.json"), "body": "{nope"}, API_KEY))
    assert r400["statusCode"] == 400 and "not JSON" in json.loads(r400["body"])["error"]


def test_direct_poll_sample_ticks(harness):
    ids = harness.create(2)
    harness.store.track([harness.key(i) for i in ids], harness.clock.now())
    out = harness.invoke(load_event("direct_poll.json"))
    assert out["ok"] and out["action"] == "poll" and out["polled"] == 2 and out["transitions"] == 2


def test_direct_track_sample(harness):
    ids = harness.create(1)
    out = harness.invoke(load_event("direct_track.json", ids))
    assert out["ok"] and out["registered"] == 1 and out["polled"] == 1
    tj = harness.store.get(harness.key(ids[0]))
    assert tj.state == "Submitted" and tj.tags == {"team": "media"}


def test_other_direct_actions(harness):
    ids = harness.create(2)
    harness.invoke({"action": "track", "job_ids": ids, "poll": False})
    assert harness.polls() == Counter()
    status = harness.invoke({"action": "status", "job_ids": ids + ["bnotracked"]})
    assert status["counts"]["jobs.New"] == 2 and status["jobs"][2] == {"key": str(harness.key("bnotracked")),
                                                                        "tracked": False}
    assert harness.invoke({"action": "untrack", "job_ids": ids[:1]})["untracked"] == 1
    assert harness.invoke({"action": "poll", "job_ids": ids})["polled"] == 1  # the untracked one is skipped
    assert harness.invoke({"action": "deliver"})["action"] == "deliver"
    harness.create(1, state="Running")
    disc = harness.invoke({"action": "discover", "targets": [f"{TEST_REGION}/{TEST_BUCKET}"]})
    assert disc["discovered"] == 1
    assert set(harness.invoke({"action": "purge", "older_than_days": 1})["purged"])


# --- batches and errors -------------------------------------------------------------------------------------

def test_batch_with_good_and_bad_records(harness):
    ids = harness.create(3)
    records = [
        {"bucket": TEST_BUCKET, "region": TEST_REGION, "job_ids": ids[:2]},
        "this is not json",
        {"bucket": TEST_BUCKET, "region": TEST_REGION, "job_id": "../../etc/passwd"},
        {"job_id": ids[2]},  # bucket and region from the defaults
        {"bucket": TEST_BUCKET, "region": TEST_REGION},
    ]
    event = {"Records": [{"Ckafka": {"topic": "t", "partition": 0, "offset": n,
                                     "msgBody": r if isinstance(r, str) else json.dumps(r)}}
                         for n, r in enumerate(records)] + [{"Kafka?": {}}]}
    out = harness.invoke(event)
    assert out["ok"] and out["registered"] == 3 and out["polled"] == 3 and out["transitions"] == 3
    assert [r["index"] for r in out["rejected"]] == [1, 2, 4, 5]
    reasons = {r["index"]: r["reason"] for r in out["rejected"]}
    assert "neither JSON nor XML" in reasons[1] and "job_id" in reasons[2] and "names no job" in reasons[4]
    assert "Ckafka" in reasons[5]
    assert sorted(t.key.job_id for t in harness.store.list_jobs()) == sorted(ids)


def test_unrecognised_event_is_answered_not_raised(harness):
    out = harness.invoke({"hello": "world"})
    assert out["ok"] is False and "unrecognised event" in out["error"] and "Timer" in out["error"]
    out2 = harness.invoke({"action": "explode"})
    assert out2["ok"] is False and "'explode'" in out2["error"]


def test_store_down_raises_so_scf_retries(emulator, emulator_clock, monkeypatch):
    h = make_harness(emulator, emulator_clock, "mysql://root@127.0.0.1:1/jobwatch", monkeypatch)
    try:
        with pytest.raises(StoreUnavailable):
            h.invoke(load_event("ckafka.json", h.create(3)))
        with pytest.raises(StoreUnavailable):
            h.invoke(load_event("timer.json"))
        resp = h.invoke(with_api_key(load_event("apigw_status.json"), API_KEY))  # HTTP: answered, not raised
        assert resp["statusCode"] == 503
    finally:
        h.mod._reset_for_tests(None)


def test_invalid_configuration(emulator, sqlite_url, monkeypatch, capsys):
    mod = load_handler()
    mod._reset_for_tests(None)
    for k, v in base_env(emulator, sqlite_url, JOBWATCH_CONCURRENCY="lots").items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match="JOBWATCH_CONCURRENCY"):
        mod.main_handler(load_event("timer.json"), {})
    resp = mod.main_handler(load_event("apigw_status.json"), {})
    assert resp["statusCode"] == 500
    lines = [l for l in json_lines(capsys.readouterr().out) if l.get("event") == "configuration_invalid"]
    assert lines and "JOBWATCH_CONCURRENCY" in json.dumps(lines[0])


# --- the instance's App, imports --------------------------------------------------------------------------------

def test_app_is_built_once_from_the_environment_and_reused(emulator, sqlite_url, monkeypatch):
    for k, v in base_env(emulator, sqlite_url).items():
        monkeypatch.setenv(k, v)
    mod = load_handler()
    try:
        assert mod._app is None
        ids = [emulator.create_job(TEST_BUCKET)]
        out = mod.main_handler(load_event("direct_track.json", ids), {"time_limit_in_ms": 30000})
        first = mod._app
        assert out["registered"] == 1 and isinstance(first, App)
        out2 = mod.main_handler(load_event("direct_track.json", ids), {"time_limit_in_ms": 30000})
        assert mod._app is first and out2["already_tracked"] == 1
    finally:
        mod._reset_for_tests(None)


def test_handler_import_is_light():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import index; "
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'requests', 'urllib3', 'lxml', 'tencentcloud', 'pymysql', 'qcloud_cos'}); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code, str(HANDLER.parent)], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"


# --- logs -----------------------------------------------------------------------------------------------------

def test_logs_are_json_lines_with_invocation_context_and_no_secrets(harness, capsys):
    ids = harness.create(3)
    harness.invoke(load_event("ckafka.json", ids), request_id="req-abc")
    harness.emulator.set_state(TEST_BUCKET, ids[0], "Success")
    harness.invoke({"action": "poll", "job_ids": ids[:1]}, request_id="req-def")
    harness.invoke(with_api_key(load_event("callback_apigw.json"), "canary-wrong-key-0a9b8c"))
    harness.invoke(with_api_key(load_event("apigw_register.json", ids[:2]), "canary-wrong-key-0a9b8c"))
    text = capsys.readouterr().out
    lines = json_lines(text)
    assert lines and all(isinstance(l, dict) for l in lines)
    # one line per change at info (each poll here is one); a poll that changes nothing logs at debug only
    polled = [l for l in lines if l.get("event") == "job_polled"]
    transitions = [l for l in lines if l.get("event") == "job_transition"]
    assert polled == [] and len(transitions) == 4
    for l in transitions:
        assert l["function_name"] == FUNCTION and l["bucket"] == TEST_BUCKET and l["job_id"] in ids
        assert l["request_id"] in ("req-abc", "req-def") and l["level"] == "info" and "timestamp" in l
    assert {l["request_id"] for l in transitions} == {"req-abc", "req-def"}
    summaries = [l for l in lines if l.get("event") == "invocation_summary"]
    assert {s["request_id"] for s in summaries} >= {"req-abc", "req-def"}
    for canary in (TEST_SECRET_KEY, API_KEY, "canary-wrong-key-0a9b8c"):
        assert canary not in text


def test_timer_summary_and_logs_say_each_buckets_refresh_path_and_cost(harness, capsys):
    from datetime import timedelta

    ids = [harness.emulator.create_job(TEST_BUCKET, name=f"b{i}", state="Running", type=("Job", "Workflow")[i % 2],
                                       created_at=harness.clock.now() - timedelta(seconds=i)) for i in range(25)]
    harness.store.track([harness.key(i) for i in ids], harness.clock.now())
    first = harness.invoke(load_event("timer.json"))
    assert first["polled"] == 25 and first["requests"] == 25 and first["listed"] == 0  # first sight: queried
    harness.clock.advance(40)  # due again (30 s floor), still Running (60 s)
    capsys.readouterr()
    out = harness.invoke(load_event("timer.json"))
    assert out["polled"] == 25 and out["listed"] == 25 and out["requests"] == 2  # Workflow and Job windows
    (bucket,) = out["refresh"]["listed_buckets"]
    assert (bucket["bucket"], bucket["path"], bucket["list_requests"], bucket["listed"]) == (TEST_BUCKET, "list", 2, 25)
    assert out["refresh"]["single_buckets"] == 0
    lines = [l for l in json_lines(capsys.readouterr().out) if l.get("event") == "bucket_refreshed"]
    assert [(l["bucket"], l["path"], l["list_requests"], l["listed"]) for l in lines] == [(TEST_BUCKET, "list", 2, 25)]
