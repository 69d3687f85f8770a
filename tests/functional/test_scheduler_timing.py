"""Scheduler timing under freezegun: the engine reads wall time through its default clock, and freezegun moves
it; nothing sleeps. The emulator's job clock follows the frozen time too (its lifecycle reads a clock that
freezegun patches), so jobs age exactly as far as the test moves time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fixtures.emulator import TEST_BUCKET, TEST_REGION, TEST_SECRET_ID, TEST_SECRET_KEY
from freezegun import freeze_time

from jobwatch.ci.client import CIClient
from jobwatch.ci.credentials import StaticProvider
from jobwatch.emulator import EmulatorServer, Lifecycle, SystemClock
from jobwatch.app.engine import Engine
from jobwatch.core.models import JobKey
from jobwatch.core.statemachine import PollPolicy
from jobwatch.store import open_store

START = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)


@pytest.fixture
def setup(sqlite_url):
    with freeze_time(START) as frozen:
        srv = EmulatorServer(credentials={TEST_SECRET_ID: TEST_SECRET_KEY}, clock=SystemClock(), seed=3,
                             lifecycle=Lifecycle(submitted_seconds=60, running_seconds=3600, failure_ratio=0.0))
        srv.start()
        client = CIClient(StaticProvider(TEST_SECRET_ID, TEST_SECRET_KEY), endpoint=srv.url, max_attempts=1,
                          clock=lambda: datetime.now(timezone.utc).timestamp())
        store = open_store(sqlite_url)
        policy = PollPolicy(min_seconds=30, max_seconds=600, backoff=2.0, jitter=0.0, confirmations=2)
        engine = Engine(store, client, policy=policy, concurrency=4, lease_seconds=60)
        try:
            yield frozen, srv, store, engine
        finally:
            engine.close()
            client.close()
            store.close()
            srv.stop()


def test_new_job_polled_at_once_then_at_the_floor_then_backing_off(setup):
    frozen, srv, store, engine = setup
    jid = srv.create_job(TEST_BUCKET)
    key = JobKey(TEST_REGION, TEST_BUCKET, jid)
    store.track([key], datetime.now(timezone.utc))
    assert engine.tick().polled == 1  # due at once
    tj = store.get(key)
    assert tj.state == "Submitted" and tj.next_poll_at == START + timedelta(seconds=30)
    frozen.tick(29)
    assert engine.tick().polled == 0  # not due yet
    frozen.tick(1)
    assert engine.tick().polled == 1
    frozen.tick(60)  # now Running: a change resets the interval to the floor
    engine.tick()
    tj = store.get(key)
    assert tj.state == "Running" and tj.poll_interval == 30
    intervals = []
    for _ in range(6):  # unchanged: 60, 120, 240, 480, 600 (ceiling), 600
        frozen.move_to(store.get(key).next_poll_at)
        assert engine.tick().polled == 1
        intervals.append(store.get(key).poll_interval)
    assert intervals == [60, 120, 240, 480, 600, 600]


def test_due_jobs_are_taken_in_order_of_next_poll_time(setup):
    frozen, srv, store, engine = setup
    ids = [srv.create_job(TEST_BUCKET) for _ in range(3)]
    now = datetime.now(timezone.utc)
    for i, jid in enumerate(ids):  # the last one is the most overdue
        store.track([JobKey(TEST_REGION, TEST_BUCKET, jid)], now - timedelta(seconds=10 * i))
    engine.batch_size = 1
    engine.concurrency = 1
    srv.clear_log()
    engine.tick()
    assert [r.job_id for r in srv.request_log] == list(reversed(ids))


def test_a_crashed_instances_lease_expires_and_another_takes_over(setup):
    frozen, srv, store, engine = setup
    jid = srv.create_job(TEST_BUCKET)
    key = JobKey(TEST_REGION, TEST_BUCKET, jid)
    store.track([key], datetime.now(timezone.utc))
    store.claim_due("crashed-instance", datetime.now(timezone.utc), 60, 10)  # claimed, then the instance died
    assert engine.tick().polled == 0  # the lease holds
    frozen.tick(61)
    assert engine.tick().polled == 1  # expired: taken over
    assert store.get(key).lease_owner is None and store.get(key).state == "Running"  # 61 s old by then


def test_errors_back_off_on_their_own_curve(setup):
    from jobwatch.emulator import FaultRule

    frozen, srv, store, engine = setup
    jid = srv.create_job(TEST_BUCKET)
    key = JobKey(TEST_REGION, TEST_BUCKET, jid)
    store.track([key], datetime.now(timezone.utc))
    srv.set_faults([FaultRule(kind="status", status=503, code="SlowDown", probability=1.0)])
    delays = []
    for _ in range(4):
        frozen.move_to(store.get(key).next_poll_at)
        engine.tick()
        tj = store.get(key)
        delays.append((tj.next_poll_at - datetime.now(timezone.utc)).total_seconds())
    assert delays == [30, 60, 120, 240] and store.get(key).error_count == 4
    srv.set_faults([])
    frozen.move_to(store.get(key).next_poll_at)
    engine.tick()
    assert store.get(key).error_count == 0 and store.get(key).state == "Running"  # it aged 7.5 min meanwhile
