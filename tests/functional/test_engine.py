"""The tick against the emulator over real HTTP and a real SQLite store: lifecycles, budgets, faults."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from fixtures.emulator import TEST_BUCKET, TEST_REGION

from jobwatch.emulator import FaultRule
from jobwatch.app.engine import Engine
from jobwatch.core.models import JobKey
from jobwatch.core.statemachine import PollPolicy
from jobwatch.store import open_store

POLICY = PollPolicy(min_seconds=10, max_seconds=20, backoff=1.5, jitter=0.0, confirmations=2)


@pytest.fixture
def client(emulator_client):
    return emulator_client


@pytest.fixture
def store(sqlite_url):
    s = open_store(sqlite_url)
    yield s
    s.close()


def _engine(store, client, clock, **kw):
    return Engine(store, client, policy=POLICY, clock=clock.now, concurrency=8, lease_seconds=60,
                  rand=lambda: 0.5, **kw)


def _run_to_completion(engine, clock, store, max_ticks=40):
    for _ in range(max_ticks):
        engine.tick()
        if not store.list_jobs(active=True):
            return
        clock.advance(10)
    raise AssertionError("jobs did not all reach a final state")


def test_jobs_move_through_their_lifecycle_with_history_and_notices_once(emulator, emulator_clock, client, store):
    ids = [emulator.create_job(TEST_BUCKET, name=f"j{i}") for i in range(12)]
    emulator.lifecycle = type(emulator.lifecycle)(submitted_seconds=5, running_seconds=60, failure_ratio=0.25)
    keys = [JobKey(TEST_REGION, TEST_BUCKET, i) for i in ids]
    engine = _engine(store, client, emulator_clock)
    assert store.track(keys, emulator_clock.now()) == [True] * 12
    _run_to_completion(engine, emulator_clock, store)
    outbox = store.list_outbox(limit=1000)
    total_transitions = 0
    for k in keys:
        tj = store.get(k)
        truth = emulator.job_state(TEST_BUCKET, k.job_id)
        assert tj.state == truth and truth in ("Success", "Failed")
        hist = store.history(k)
        assert [h.seq for h in hist] == list(range(1, len(hist) + 1))
        assert hist[-1].to_state == truth
        assert all(a.to_state == b.from_state for a, b in zip(hist, hist[1:]))
        total_transitions += len(hist)
    assert len(outbox) == total_transitions
    assert len({e.notice.idempotency_key for e in outbox}) == total_transitions
    engine.close()


def test_final_jobs_are_no_longer_polled(emulator, emulator_clock, client, store):
    jid = emulator.create_job(TEST_BUCKET, state="Success")
    k = JobKey(TEST_REGION, TEST_BUCKET, jid)
    store.track([k], emulator_clock.now())
    engine = _engine(store, client, emulator_clock)
    assert engine.tick().polled == 1
    emulator_clock.advance(3600)
    emulator.clear_log()
    assert engine.tick().polled == 0 and emulator.request_log == []


def test_one_bad_job_never_stops_the_others(emulator, emulator_clock, client, store):
    good = [emulator.create_job(TEST_BUCKET) for _ in range(5)]
    keys = [JobKey(TEST_REGION, TEST_BUCKET, j) for j in good]
    bad = JobKey(TEST_REGION, "nosuchbucket-1250000000", "jbad")
    store.track(keys + [bad], emulator_clock.now())
    emulator.set_faults([FaultRule(kind="status", status=500, code="InternalError", probability=1.0,
                                   path=f"/inventorytriggerjob/{good[0]}")])
    res = _engine(store, client, emulator_clock).tick()
    assert res.polled == 6 and res.errors >= 1
    assert store.get(keys[0]).error_count == 1 and "InternalError" in store.get(keys[0]).last_error
    assert all(store.get(k).state == "Submitted" for k in keys[1:])


def test_vanished_job_is_confirmed_then_final(emulator, emulator_clock, client, store):
    jid = emulator.create_job(TEST_BUCKET)
    k = JobKey(TEST_REGION, TEST_BUCKET, jid)
    store.track([k], emulator_clock.now())
    engine = _engine(store, client, emulator_clock)
    engine.tick()
    emulator.delete_job(TEST_BUCKET, jid)
    for _ in range(POLICY.confirmations_for("Vanished") - 1):  # NonExist for 60 s, re-checked every 10 s
        emulator_clock.advance(10)
        engine.tick()
        assert store.get(k).active and store.get(k).pending_state == "Vanished"
    emulator_clock.advance(10)
    engine.tick()
    tj = store.get(k)
    assert tj.state == "Vanished" and not tj.active
    assert [e.notice.kind.value for e in store.list_outbox()][-1] == "vanished"


def test_time_budget_stops_claiming_and_reports_work_left(emulator, emulator_clock, client, store):
    ids = [emulator.create_job(TEST_BUCKET) for _ in range(30)]
    store.track([JobKey(TEST_REGION, TEST_BUCKET, j) for j in ids], emulator_clock.now())
    ticks = itertools.count()
    # a fake monotonic clock: each read advances 1 s, so a 30 s budget with a 2 s margin ends after a few polls
    # (the engine reads it before each request and while it waits for answers)
    engine = _engine(store, client, emulator_clock, monotonic=lambda: float(next(ticks)), safety_margin=2.0)
    engine.batch_size = 5
    res = engine.tick(deadline=30.0)
    assert res.budget_exhausted and 0 < res.polled < 30
    assert res.left == 30 - res.polled
    assert all(t.lease_owner is None for t in store.list_jobs())  # nothing left leased


def test_tick_by_keys_polls_exactly_those(emulator, emulator_clock, client, store):
    ids = [emulator.create_job(TEST_BUCKET) for _ in range(4)]
    keys = [JobKey(TEST_REGION, TEST_BUCKET, j) for j in ids]
    store.track(keys, emulator_clock.now() + timedelta(hours=1))  # not due
    emulator.clear_log()
    res = _engine(store, client, emulator_clock).tick(keys=keys[:2])
    assert res.polled == 2 and sorted(r.job_id for r in emulator.request_log) == sorted(ids[:2])


def test_discovery_first_takes_active_jobs_then_everything_new_once(emulator, emulator_clock, client, store):
    engine = _engine(store, client, emulator_clock)
    emulator.create_job(TEST_BUCKET, state="Success")  # finished before we started watching: not news
    emulator_clock.advance(5)
    active = [emulator.create_job(TEST_BUCKET, state=s) for s in ("Submitted", "Running", "Pause")]
    assert engine.discover(TEST_REGION, TEST_BUCKET) == 3
    emulator_clock.advance(60)
    later = [emulator.create_job(TEST_BUCKET), emulator.create_job(TEST_BUCKET, state="Failed")]
    assert engine.discover(TEST_REGION, TEST_BUCKET) == 2  # created since: whatever their state
    assert engine.discover(TEST_REGION, TEST_BUCKET) == 0
    assert {t.key.job_id for t in store.list_jobs()} == set(active + later)


def test_throttling_answers_lower_the_requests_in_flight(emulator, emulator_clock, client, store):
    from structlog.testing import capture_logs

    ids = [emulator.create_job(TEST_BUCKET, state="Running") for _ in range(40)]
    store.track([JobKey(TEST_REGION, TEST_BUCKET, i) for i in ids], emulator_clock.now())
    emulator.set_faults([FaultRule(kind="status", status=503, code="SlowDown", path="/inventorytriggerjob/*",
                                   times=5)])
    engine = Engine(store, client, policy=POLICY, clock=emulator_clock.now, concurrency=16, lease_seconds=60,
                    rand=lambda: 0.5, monotonic=lambda: 0.0)  # time stands still: one cut per cooldown
    with capture_logs() as logs:
        res = engine.tick()
    assert (res.polled, res.errors, res.throttled) == (40, 5, 5)
    assert 8 <= engine.limit.allowed < 16  # halved once, grown back a little by the 35 answers after
    cuts = [entry for entry in logs if entry["event"] == "ci_throttled"]
    assert len(cuts) == 1 and cuts[0]["in_flight"] == 8 and cuts[0]["code"] == "SlowDown"
    # the throttled jobs are polled again on the error schedule, not lost
    assert sum(1 for tj in store.list_jobs(active=True) if tj.error_count == 1) == 5
    engine.close()


class _InlineExecutor:
    """Runs each poll at once on the submitting thread, so every done-callback fires inside submit()."""

    def submit(self, fn, *args):
        from concurrent.futures import Future

        f = Future()
        f.set_result(fn(*args))
        return f

    def shutdown(self, wait=True):
        pass


def test_polls_that_end_at_once_neither_recurse_nor_drop_jobs(emulator, emulator_clock, client, store):
    """A poll can end before its done-callback is attached (the callback then runs inside submit): the next
    submission must not nest one level per job (450 levels overflowed the stack and lost jobs)."""
    ids = [emulator.create_job(TEST_BUCKET, state="Running") for _ in range(450)]
    store.track([JobKey(TEST_REGION, TEST_BUCKET, i) for i in ids], emulator_clock.now())
    engine = Engine(store, client, policy=POLICY, clock=emulator_clock.now, concurrency=8, lease_seconds=60,
                    batch_size=450, rand=lambda: 0.5)
    engine._pool = _InlineExecutor()  # type: ignore[assignment]
    res = engine.tick()
    assert (res.polled, res.errors, res.left) == (450, 0, 0)
    assert all(tj.state == "Running" and tj.lease_owner is None for tj in store.list_jobs(active=True))


def test_an_answer_about_another_job_is_never_this_jobs_state(emulator, emulator_clock, client, store):
    """Issue 19, defect 1: a lone <JobsDetail> about job ``other`` (Failed), answered to a query for ``mine``, was
    recorded as mine's state: mine ended Failed, stopped being polled and its notice went out. It is a bad
    response: retried, recorded as a poll error, never a state."""
    other = emulator.create_job(TEST_BUCKET, state="Failed")
    mine = emulator.create_job(TEST_BUCKET)
    k = JobKey(TEST_REGION, TEST_BUCKET, mine)
    store.track([k], emulator_clock.now())
    emulator.set_faults([FaultRule(kind="wrong_job", path=f"/inventorytriggerjob/{mine}")])
    engine = _engine(store, client, emulator_clock)
    res = engine.tick()
    tj = store.get(k)
    assert res.polled == 1 and res.errors == 1 and res.transitions == 0
    assert tj.state is None and tj.active and tj.error_count == 1
    assert other in tj.last_error and mine in tj.last_error
    assert store.history(k) == [] and store.list_outbox() == []
    emulator.set_faults([])
    emulator_clock.advance(10)  # the error's backoff is over; the job has been Running for 5 s
    engine.tick()
    assert store.get(k).state == "Running" and [h.to_state for h in store.history(k)] == ["Running"]
