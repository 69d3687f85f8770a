"""The outbox end to end: notices in a SQLite store, drained by :class:`jobwatch.app.outbox.Outbox` to webhook sinks
that post to real HTTP receivers on 127.0.0.1.

Receivers can be told to succeed, answer 500, hang past the sink's timeout, or answer 429 with ``Retry-After``.
Outbox time (``next_attempt_at``, leases) and the sinks' rate limiters run on an injected clock that the tests
move by hand, so nothing sleeps to test timing; only the sink timeout (0.3 s) is real.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
from fixtures.receivers import Receiver as WebhookReceiver

from jobwatch.cli import main
from jobwatch.core.models import JobKey, Notice, NoticeKind
from jobwatch.notify import parse_sinks
from jobwatch.app.outbox import Outbox
from jobwatch.core.retry import Backoff
from jobwatch.store import OutboxEntry, Store, open_store

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SINK_TIMEOUT = 0.3  # the flaky sink's own timeout= (real seconds)
HANG_LIMIT = 5.0  # a hanging receiver answers after this at the latest (bounded test)
BASE, CAP = 10.0, 300.0
RAND = 0.5


# ---- receivers ----------------------------------------------------------------------------------------------

class Receiver(WebhookReceiver):
    def __init__(self) -> None:
        super().__init__(hang_limit=HANG_LIMIT)

    def spec(self, name: str, options: str = "") -> str:  # type: ignore[override]
        return super().spec(name, SECRET, options)


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    made: dict[str, Receiver] = {}

    class Factory(dict):
        def __missing__(self, name: str) -> Receiver:
            made[name] = self[name] = Receiver()
            return made[name]

    yield Factory()
    for r in made.values():
        r.close()


# ---- time, store, notices -----------------------------------------------------------------------------------

class Clock:
    """Wall time (``now``) and monotonic time moved together by hand. Starts a day in the past so that the CLI,
    which uses real time, finds everything this clock scheduled already due."""

    def __init__(self) -> None:
        self.t = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)
        self.mono = 10_000.0

    def now(self) -> datetime:
        return self.t

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)
        self.mono += seconds

    def to(self, when: datetime) -> None:
        self.advance(max(0.0, (when - self.t).total_seconds()))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Store]:
    s = open_store(sqlite_url)
    yield s
    s.close()


def notice(i: int, to_state: str = "Failed", kind: NoticeKind = NoticeKind.TRANSITION,
           at: datetime | None = None) -> Notice:
    job_id = f"b{i:031x}"
    return Notice(idempotency_key=f"ap-guangzhou/media-1250000000/{job_id}/1", kind=kind,
                  key=JobKey("ap-guangzhou", "media-1250000000", job_id), from_state="Running",
                  to_state=to_state if kind is NoticeKind.TRANSITION else None,
                  observed_at=at or datetime(2025, 6, 15, tzinfo=timezone.utc), job={"job_id": job_id})


def outbox(db: Store, clock: Clock, specs: list[str], *, max_attempts: int = 5, base: float = BASE,
           lease_seconds: float = 120.0) -> Outbox:
    sinks = parse_sinks("\n".join(specs), clock=clock.monotonic)
    return Outbox(db, sinks, owner="test-drain", max_attempts=max_attempts,
                  backoff=Backoff(base=base, cap=CAP), timeout=2.0,
                  lease_seconds=lease_seconds, clock=clock.now, monotonic=clock.monotonic, rand=lambda: RAND)


def entries(db: Store) -> dict[str, OutboxEntry]:
    return {e.notice.idempotency_key: e for e in db.list_outbox(limit=1000)}


def seconds_after(when: datetime | None, start: datetime) -> float:
    assert when is not None
    return (when - start).total_seconds()


# ---- 1 + 2: failures, timeouts, 429; the healthy sink meanwhile ---------------------------------------------

def test_failing_hanging_throttled_sink_loses_nothing_and_healthy_sink_gets_each_notice_once(db, clock, receivers):
    flaky, healthy = receivers["flaky"], receivers["healthy"]
    ob = outbox(db, clock, [flaky.spec("flaky", f"timeout={SINK_TIMEOUT}"), healthy.spec("healthy")])
    first = [notice(i) for i in range(1, 4)]
    keys = [n.idempotency_key for n in first]
    t0 = clock.now()
    db.add_notices(first, t0)

    # Attempt 1: the flaky receiver answers 500. The healthy one gets every notice in the same drain.
    flaky.mode = "fail"
    r = ob.drain()
    assert (r.notices, r.delivered, r.failed, r.dead, r.done) == (3, 3, 3, 0, 0)
    assert sorted(healthy.ids()) == sorted(keys) and sorted(flaky.ids()) == sorted(keys)
    for k in keys:
        e = entries(db)[k]
        assert (e.status, e.attempts) == ("pending", 1)
        assert e.deliveries["webhook:healthy"].status == "delivered"
        assert e.deliveries["webhook:flaky"].status == "failed" and "HTTP 500" in (e.last_error or "")
        # Full jitter: uniform(0, base * 2**0); with rand=0.5 exactly half of it.
        assert 0 <= seconds_after(e.next_attempt_at, t0) <= BASE
        assert seconds_after(e.next_attempt_at, t0) == pytest.approx(RAND * BASE, abs=1e-3)

    # Not due yet: nothing is claimed, nobody is called.
    clock.advance(RAND * BASE - 1)
    assert ob.drain().notices == 0
    assert len(flaky.hits) == 3 and len(healthy.hits) == 3

    # Attempt 2: the flaky receiver hangs past the sink's 0.3 s timeout. A new notice arrives meanwhile and
    # the healthy sink gets it at once, without waiting for the hung one, and gets none of the old ones again.
    clock.advance(1)
    t2 = clock.now()
    fourth = notice(4)
    keys.append(fourth.idempotency_key)
    db.add_notices([fourth], t2)
    flaky.mode = "hang"
    started = time.monotonic()
    r = ob.drain()
    elapsed = time.monotonic() - started
    assert (r.notices, r.delivered, r.failed) == (4, 1, 4)
    assert elapsed < SINK_TIMEOUT + 1.0, "a hanging receiver held the drain past its timeout"
    [late] = [h for h in healthy.hits if h["id"] == fourth.idempotency_key]
    assert late["at"] - started < SINK_TIMEOUT, "the healthy sink waited for the hanging one"
    flaky.release.set()  # let the hung handlers finish; their answers go nowhere
    for k in keys:
        e = entries(db)[k]
        assert "timed out after 0.3s" in (e.last_error or "")
        if k == fourth.idempotency_key:
            assert e.attempts == 1 and seconds_after(e.next_attempt_at, t2) == pytest.approx(RAND * BASE, abs=1e-3)
        else:
            assert e.attempts == 2
            assert 0 <= seconds_after(e.next_attempt_at, t2) <= BASE * 2
            assert seconds_after(e.next_attempt_at, t2) == pytest.approx(RAND * BASE * 2, abs=1e-3)

    # Attempt 3: 429 with Retry-After: 120, longer than the backoff would wait: the hint wins.
    clock.to(max(e.next_attempt_at for e in entries(db).values()))  # type: ignore[type-var]
    t3 = clock.now()
    flaky.mode, flaky.retry_after = "throttle", "120"
    r = ob.drain()
    assert (r.notices, r.delivered, r.failed) == (4, 0, 4)
    for k in keys:
        e = entries(db)[k]
        assert e.status == "pending" and "HTTP 429" in (e.last_error or "")
        assert seconds_after(e.next_attempt_at, t3) == pytest.approx(120.0, abs=1e-3)
    clock.advance(119)
    assert ob.drain().notices == 0  # Retry-After is honoured: not a second early

    # The receiver recovers: every notice is delivered, with the same webhook-id on every attempt.
    clock.advance(1)
    flaky.mode = "ok"
    r = ob.drain()
    assert (r.notices, r.delivered, r.done, r.failed, r.dead) == (4, 4, 4, 0, 0)
    for k in keys:
        e = entries(db)[k]
        assert e.status == "done" and e.next_attempt_at is None
        assert {s: d.status for s, d in e.deliveries.items()} == {"webhook:flaky": "delivered",
                                                                  "webhook:healthy": "delivered"}
        assert healthy.count(k) == 1, "the healthy sink was re-sent a notice it had acknowledged"
        attempts = [h for h in flaky.hits if h["id"] == k]
        assert len(attempts) == (3 if k == fourth.idempotency_key else 4)
        assert [h["mode"] for h in attempts][-1] == "ok"
        assert {h["body"]["id"] for h in attempts} == {k}
    assert ob.drain().notices == 0  # nothing left
    assert len(healthy.hits) == 4


def test_dead_letter_after_max_attempts_listed_and_retried_through_the_cli(db, clock, receivers, sqlite_url,
                                                                           monkeypatch, capsys):
    flaky, healthy = receivers["flaky"], receivers["healthy"]
    specs = [flaky.spec("flaky", f"timeout={SINK_TIMEOUT}"), healthy.spec("healthy")]
    ob = outbox(db, clock, specs, max_attempts=3)
    n = notice(1)
    db.add_notices([n], clock.now())
    flaky.mode = "fail"
    delays = []
    for attempt in (1, 2, 3):
        before = clock.now()
        r = ob.drain()
        assert r.notices == 1
        e = entries(db)[n.idempotency_key]
        assert e.attempts == attempt
        if attempt < 3:
            assert e.status == "pending"
            delays.append(seconds_after(e.next_attempt_at, before))
            clock.to(e.next_attempt_at)  # type: ignore[arg-type]
    assert delays == pytest.approx([RAND * BASE, RAND * BASE * 2], abs=1e-3)
    assert r.dead == 1
    e = entries(db)[n.idempotency_key]
    assert (e.status, e.next_attempt_at) == ("dead", None) and "HTTP 500" in (e.last_error or "")
    assert {s: d.status for s, d in e.deliveries.items()} == {"webhook:flaky": "dead",
                                                              "webhook:healthy": "delivered"}
    clock.advance(3600)
    assert ob.drain().notices == 0  # a dead letter is not retried by itself
    assert flaky.count(n.idempotency_key) == 3 and healthy.count(n.idempotency_key) == 1

    # The operator's view and actions, through the real command.
    for k, v in {"JOBWATCH_STORE_URL": sqlite_url, "JOBWATCH_NOTIFY": "\n".join(specs),
                 "JOBWATCH_LOG_LEVEL": "warning"}.items():
        monkeypatch.setenv(k, v)
    capsys.readouterr()
    assert main(["outbox", "--dead", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["id"] == e.notice.id and listed["status"] == "dead" and listed["attempts"] == 3
    assert listed["deliveries"] == {"webhook:flaky": "dead", "webhook:healthy": "delivered"}
    assert main(["outbox", "--dead"]) == 0
    header, line = capsys.readouterr().out.strip().splitlines()
    assert header.split()[:3] == ["ID", "STATUS", "ATTEMPTS"]
    assert line.split()[:3] == [str(e.notice.id), "dead", "3"] and "HTTP 500" in line
    assert SECRET not in line

    assert main(["outbox", "--retry", str(e.notice.id)]) == 0
    assert "queued for retry" in capsys.readouterr().out
    assert main(["outbox", "--dead", "--json"]) == 0 and json.loads(capsys.readouterr().out) == []

    flaky.mode = "ok"
    assert main(["outbox", "--deliver"]) == 0
    drained = json.loads(capsys.readouterr().out)
    assert (drained["notices"], drained["delivered"], drained["done"]) == (1, 1, 1)
    e = entries(db)[n.idempotency_key]
    assert e.status == "done"
    assert {s: d.status for s, d in e.deliveries.items()} == {"webhook:flaky": "delivered",
                                                              "webhook:healthy": "delivered"}
    assert flaky.count(n.idempotency_key) == 4 and healthy.count(n.idempotency_key) == 1
    assert main(["outbox", "--retry", str(e.notice.id)]) == 3  # delivered: nothing to retry


def test_client_side_rate_limit_defers_without_losing_or_dead_lettering(db, clock, receivers):
    """A burst larger than a sink's ``rate=`` is spread over time by the limiter; the notices it holds back were
    never sent, so they must not use up attempts and end as dead letters."""
    limited, healthy = receivers["limited"], receivers["healthy"]
    ob = outbox(db, clock, [limited.spec("limited", "rate=2/min"), healthy.spec("healthy")], max_attempts=2,
                base=1.0)
    burst = [notice(i) for i in range(1, 6)]
    db.add_notices(burst, clock.now())
    r = ob.drain()
    assert (r.notices, r.delivered, r.dead) == (5, 5 + 2, 0)
    assert len(limited.hits) == 2  # the bucket holds 2 tokens; the rest never reached the receiver
    assert len(healthy.hits) == 5
    held = [e for e in entries(db).values() if e.status == "pending"]
    assert len(held) == 3
    for e in held:  # one token per 30 s at 2/min: the limiter's wait is the delay
        assert seconds_after(e.next_attempt_at, clock.now()) == pytest.approx(30.0, abs=1e-3)
        assert "rate limit 2/min reached" in (e.last_error or "")
    for _ in range(10):
        pending = [e for e in entries(db).values() if e.status == "pending"]
        if not pending:
            break
        clock.to(min(e.next_attempt_at for e in pending))  # type: ignore[type-var]
        ob.drain()
    statuses = {k: e.status for k, e in entries(db).items()}
    assert set(statuses.values()) == {"done"}, statuses
    # Attempts count drains that really sent: 1 for the two sent to both sinks at once, 2 for the rest (the
    # healthy send, then the limited one), however many drains the limiter held them back.
    first_two = set(limited.ids()[:2])
    assert {k: e.attempts for k, e in entries(db).items()} == {
        n.idempotency_key: 1 if n.idempotency_key in first_two else 2 for n in burst}
    assert sorted(limited.ids()) == sorted(n.idempotency_key for n in burst)  # each exactly once
    assert sorted(healthy.ids()) == sorted(n.idempotency_key for n in burst)
    # 2 at once, then one per 30 s: the last one went out 90 s after the burst, not sooner.
    assert clock.mono - 10_000.0 >= 90.0


# ---- 3: routing ----------------------------------------------------------------------------------------------

def test_routing_by_outcome_and_unrouted_notice_marked_done(db, clock, receivers):
    failures, others = receivers["failures"], receivers["others"]
    ob = outbox(db, clock, [failures.spec("failures", "outcomes=Failed"),
                            others.spec("others", "outcomes=stalled,Cancel")])
    failed, success, stalled, cancelled = (notice(1, "Failed"), notice(2, "Success"),
                                           notice(3, kind=NoticeKind.STALLED), notice(4, "Cancel"))
    db.add_notices([failed, success, stalled, cancelled], clock.now())
    r = ob.drain()
    assert (r.notices, r.delivered, r.unrouted, r.done) == (4, 3, 1, 4)
    assert failures.ids() == [failed.idempotency_key]
    assert sorted(others.ids()) == sorted([stalled.idempotency_key, cancelled.idempotency_key])
    assert {h["body"]["outcome"] for h in others.hits} == {"stalled", "Cancel"}
    got = entries(db)
    assert all(e.status == "done" for e in got.values())
    assert got[success.idempotency_key].deliveries == {}
    assert set(got[failed.idempotency_key].deliveries) == {"webhook:failures"}
    assert set(got[stalled.idempotency_key].deliveries) == {"webhook:others"}
    clock.advance(3600)
    assert ob.drain().notices == 0


# ---- 4: idempotency across a crash ---------------------------------------------------------------------------

class Crash(BaseException):
    """The process dies (as SCF kills a timed-out instance): nothing after it runs."""


def test_redelivery_after_a_crash_carries_the_same_webhook_id(db, clock, receivers):
    rx = receivers["rx"]
    n = notice(1)
    db.add_notices([n], clock.now())
    calls = {"n": 0}

    def dying_clock() -> datetime:
        calls["n"] += 1
        if calls["n"] > 1:  # 1: claim; 2: recording the send that already went out
            raise Crash()
        return clock.now()

    crashing = outbox(db, clock, [rx.spec("rx")], lease_seconds=60)
    crashing.clock = dying_clock
    with pytest.raises(Crash):
        crashing.drain()
    assert rx.ids() == [n.idempotency_key]
    e = entries(db)[n.idempotency_key]
    assert (e.status, e.attempts, e.deliveries) == ("pending", 0, {})  # nothing recorded

    survivor = outbox(db, clock, [rx.spec("rx")], lease_seconds=60)
    clock.advance(59)
    assert survivor.drain().notices == 0 and len(rx.hits) == 1  # the dead drain's lease still holds
    clock.advance(1)
    r = survivor.drain()
    assert (r.notices, r.delivered, r.done) == (1, 1, 1)
    first, second = rx.hits
    assert first["id"] == second["id"] == n.idempotency_key
    assert first["body"] == second["body"]  # the same payload, so a receiver drops the repeat by its key
    assert entries(db)[n.idempotency_key].status == "done"


def test_a_drain_that_outlived_its_lease_does_not_overwrite_the_takeover(db, clock, receivers):
    rx = receivers["rx"]
    n = notice(2)
    db.add_notices([n], clock.now())
    survivor = outbox(db, clock, [rx.spec("rx")], lease_seconds=60)
    slow = outbox(db, clock, [rx.spec("rx")], lease_seconds=60)
    slow.owner = "slow-drain"
    calls = {"n": 0}
    taken_over: dict[str, Any] = {}

    def late_clock() -> datetime:
        calls["n"] += 1
        if calls["n"] == 2:  # the send failed; before that is recorded, the lease runs out and another drain runs
            clock.advance(61)
            rx.mode = "ok"
            taken_over["result"] = survivor.drain()
        return clock.now()

    rx.mode = "fail"
    slow.clock = late_clock
    r = slow.drain()
    assert (taken_over["result"].notices, taken_over["result"].done) == (1, 1)
    assert (r.notices, r.failed, r.done, r.lease_lost) == (1, 1, 0, 1)
    e = entries(db)[n.idempotency_key]
    assert (e.status, e.attempts, e.last_error) == ("done", 1, None)  # the survivor's outcome stands
    assert [d.status for d in e.deliveries.values()] == ["delivered"]  # a late failure never downgrades it
    assert rx.ids() == [n.idempotency_key, n.idempotency_key]  # one key: the receiver drops the repeat


# ---- stalled and recovered notices end to end, under freezegun --------------------------------------------------

STALL_START = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)


def test_stalled_and_recovered_notices_reach_the_routed_sink_once_under_freezegun(sqlite_url, receivers):
    """The App wired from settings (stall rules, poll policy, sinks from JOBWATCH_NOTIFY) polls a job on the
    emulator; freezegun moves the wall clock that the engine, the stall check, the outbox and the emulator read.
    A job Running past 600 s raises one stalled notice, one more after the 1800 s repeat interval and none in
    between, and a recovered notice when it moves again (to Pause); the alerts sink gets only those."""
    from fixtures.emulator import TEST_BUCKET, TEST_REGION, TEST_SECRET_ID, TEST_SECRET_KEY
    from freezegun import freeze_time

    from jobwatch.app.orchestrator import App
    from jobwatch.ci.client import CIClient
    from jobwatch.app.config import load_settings
    from jobwatch.ci.credentials import StaticProvider
    from jobwatch.emulator import EmulatorServer, Lifecycle, SystemClock

    alerts, everything = receivers["alerts"], receivers["everything"]
    env = {"JOBWATCH_STORE_URL": sqlite_url, "JOBWATCH_LOG_LEVEL": "warning",
           "JOBWATCH_NOTIFY": alerts.spec("alerts", "outcomes=stalled,recovered") + "\n" + everything.spec("all"),
           "JOBWATCH_STALL_RUNNING_SECONDS": "600", "JOBWATCH_STALL_REPEAT_SECONDS": "1800",
           "JOBWATCH_POLL_MIN_SECONDS": "60", "JOBWATCH_POLL_MAX_SECONDS": "60", "JOBWATCH_POLL_JITTER": "0"}
    with freeze_time(STALL_START) as frozen:
        srv = EmulatorServer(credentials={TEST_SECRET_ID: TEST_SECRET_KEY}, clock=SystemClock(), seed=5,
                             lifecycle=Lifecycle(submitted_seconds=60, running_seconds=7200, failure_ratio=0.0))
        srv.start()
        client = CIClient(StaticProvider(TEST_SECRET_ID, TEST_SECRET_KEY), endpoint=srv.url, max_attempts=1,
                          clock=lambda: datetime.now(timezone.utc).timestamp())
        app = App(load_settings(env), client=client, environ=env, rand=lambda: 0.5)
        try:
            jid = srv.create_job(TEST_BUCKET)
            key = JobKey(TEST_REGION, TEST_BUCKET, jid)
            arrived: dict[str, list[datetime]] = {}

            def step(seconds: float) -> None:
                frozen.tick(seconds)
                app.tick(discover=False)
                for h in alerts.hits[sum(len(v) for v in arrived.values()):]:
                    arrived.setdefault(h["body"]["kind"], []).append(datetime.now(timezone.utc))

            app.register([key])
            step(60)  # Submitted -> Running
            running_since = app.store.get(key).last_change
            assert app.store.get(key).state == "Running" and alerts.hits == []
            while datetime.now(timezone.utc) < running_since + timedelta(seconds=600 + 1800 + 120):
                step(60)
            assert [h["body"]["kind"] for h in alerts.hits] == ["stalled", "stalled"]
            first, second = arrived["stalled"]
            assert running_since + timedelta(seconds=600) <= first < running_since + timedelta(seconds=660)
            assert first + timedelta(seconds=1800) <= second < first + timedelta(seconds=1860)
            assert app.store.get(key).stalled

            srv.pause(TEST_BUCKET, jid)
            step(60)
            kinds = [h["body"]["kind"] for h in alerts.hits]
            assert kinds == ["stalled", "stalled", "recovered"]
            recovered = alerts.hits[-1]["body"]
            assert (recovered["from_state"], recovered["to_state"], recovered["job_id"]) == ("Running", "Pause", jid)
            assert not app.store.get(key).stalled
            for _ in range(3):
                step(60)
            assert len(alerts.hits) == 3  # the Pause is young: no new stall

            ids = [h["id"] for h in alerts.hits]
            assert len(set(ids)) == 3 and all(everything.count(i) == 1 for i in ids)
            assert [h["body"]["to_state"] for h in everything.hits if h["body"]["kind"] == "transition"] == \
                ["Submitted", "Running", "Pause"]
            assert {e.status for e in app.store.list_outbox(limit=1000)} == {"done"}
        finally:
            app.close()
            client.close()
            srv.stop()
