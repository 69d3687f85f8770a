"""Stopping a tick: Engine.cancel() from another thread, and the deadline (issue 19, defect 5). Either way no
request starts after the stop, answers already back are written, the leases of jobs not polled are released at
once, requests still in flight are abandoned after a short grace and their late answers are never written.
Real emulator over loopback (with a latency fault), real SQLite store."""

from __future__ import annotations

import threading
import time

from fixtures.emulator import TEST_BUCKET, TEST_REGION, TEST_SECRET_ID, TEST_SECRET_KEY
from test_engine import client, store  # noqa: F401  (fixtures: the signed client, a SQLite store)

from jobwatch.app.engine import Engine
from jobwatch.ci.client import CIClient
from jobwatch.ci.credentials import StaticProvider
from jobwatch.core.models import JobKey
from jobwatch.core.statemachine import PollPolicy
from jobwatch.emulator import FaultRule
from jobwatch.store import open_store

POLICY = PollPolicy(min_seconds=10, max_seconds=20, backoff=1.5, jitter=0.0, confirmations=2)
PATH = "/inventorytriggerjob/*"


def _jobs(emulator, clock, store, n):
    keys = [JobKey(TEST_REGION, TEST_BUCKET, emulator.create_job(TEST_BUCKET, name=f"s{i}")) for i in range(n)]
    store.track(keys, clock.now())
    emulator.clear_log()
    return keys


def _engine(store, client, clock, **kw):
    return Engine(store, client, policy=POLICY, clock=clock.now, concurrency=4, lease_seconds=60, batch_size=200,
                  rand=lambda: 0.5, **kw)


def test_cancel_from_another_thread_releases_at_once_and_drops_late_answers(emulator, emulator_clock, client,
                                                                             store):
    keys = _jobs(emulator, emulator_clock, store, 40)
    emulator.set_faults([FaultRule(kind="latency", latency=1.5, path=PATH)])
    engine = _engine(store, client, emulator_clock, abandon_after=0.3)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", engine.tick()))
    t.start()
    time.sleep(0.5)  # four requests in flight, none answered yet
    t0 = time.monotonic()
    engine.cancel()
    t.join(5)
    took = time.monotonic() - t0
    assert not t.is_alive() and took < 1.0, f"tick returned {took:.2f} s after cancel"
    res = out["r"]
    # released: the claim (sized to what fits one lease), the four abandoned ones included
    assert res.cancelled and res.polled == 0 and res.abandoned == 4 and 4 < res.released <= 40 and res.left == 40
    assert all(tj.lease_owner is None for tj in store.list_jobs(limit=100))  # nobody waits for a lease
    time.sleep(1.6)  # the abandoned requests are answered now: their answers must be dropped
    assert len(emulator.request_log) == 4  # no request started after the cancel
    assert not any(store.get(k).state for k in keys)  # the late answers were dropped, not written
    assert engine.tick().cancelled  # stays cancelled: a stopped App does not start again by itself


def test_deadline_writes_answers_releases_the_rest_and_stops_the_workers(emulator, emulator_clock, client, store):
    """Defect 5: at the deadline what was answered is written, what was not is released at once (it used to stay
    leased for the whole budget + 30 s), and no worker sends another request."""
    keys = _jobs(emulator, emulator_clock, store, 60)
    emulator.set_faults([FaultRule(kind="latency", latency=0.3, path=PATH)])
    engine = _engine(store, client, emulator_clock, safety_margin=1.0)
    t0 = time.monotonic()
    res = engine.tick(deadline=t0 + 2.0)  # stop at ~1 s: about 12 of 60 polled
    took = time.monotonic() - t0
    assert res.budget_exhausted and 0 < res.polled < 60 and took < 2.0
    time.sleep(0.5)
    polled = [k for k in keys if store.get(k).state is not None]
    assert len(polled) == res.polled == len(emulator.request_log)  # every answer written, nothing sent after
    assert res.released > 0 and res.left == 60 - res.polled
    assert all(tj.lease_owner is None for tj in store.list_jobs(limit=100))
    assert engine.tick(deadline=time.monotonic() + 2.0).polled > 0  # the released jobs are claimable at once
    assert not res.cancelled


def test_a_lease_never_runs_out_under_a_running_request(emulator, emulator_clock, store, sqlite_url):
    """Defect 4: a claimed batch takes batch size / concurrency x latency; no request may start later than its
    worst case fits in the lease, or a second poller takes the job over while the first still asks. Two engines
    on one store, real wall clock, 2 s of lease per claim: every job is queried exactly once."""
    keys = _jobs(emulator, emulator_clock, store, 40)
    emulator.set_faults([FaultRule(kind="latency", latency=0.25, path=PATH)])
    fast = CIClient(StaticProvider(TEST_SECRET_ID, TEST_SECRET_KEY), endpoint=emulator.url, read_timeout=0.5,
                    connect_timeout=0.5, max_attempts=1, sleep=lambda s: None)
    policy = PollPolicy(min_seconds=600, max_seconds=900, jitter=0.0)
    second = open_store(sqlite_url)
    engines = [Engine(s, fast, policy=policy, concurrency=2, lease_seconds=2.0, batch_size=100, rand=lambda: 0.5)
               for s in (store, second)]
    deadline = time.monotonic() + 30

    def run(e):  # like `jobwatch poll` in a loop: tick until every job has been seen once
        while time.monotonic() < deadline and any(tj.state is None for tj in e.store.list_jobs(limit=100)):
            e.tick()
            time.sleep(0.05)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(35)
    per_job = {}
    for r in emulator.request_log:
        per_job[r.job_id] = per_job.get(r.job_id, 0) + 1
    twice = {j: n for j, n in per_job.items() if n > 1}
    assert not twice, f"{len(twice)} of 40 jobs queried by two pollers"
    assert set(per_job) == {k.job_id for k in keys}
    fast.close()
    second.close()


def test_app_cancel_stops_the_tick_and_the_drain(emulator, emulator_clock, sqlite_url):
    """The front doors' Ctrl-C: App.cancel() from another thread reaches the running engine and the outbox."""
    from jobwatch.app.config import load_settings
    from jobwatch.app.orchestrator import App

    env = {"JOBWATCH_STORE_URL": sqlite_url, "JOBWATCH_CI_ENDPOINT": emulator.url,
           "JOBWATCH_SECRET_ID": TEST_SECRET_ID, "JOBWATCH_SECRET_KEY": TEST_SECRET_KEY,
           "JOBWATCH_HTTP_MAX_ATTEMPTS": "1", "JOBWATCH_CONCURRENCY": "2", "JOBWATCH_NOTIFY": "log://"}
    app = App(load_settings(env), environ=env, clock=emulator_clock.now)
    app.store.migrate()
    _jobs(emulator, emulator_clock, app.store, 20)
    emulator.set_faults([FaultRule(kind="latency", latency=0.4, path=PATH)])
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("s", app.tick(app.budget(60))))
    t.start()
    time.sleep(1.0)  # two rounds answered
    app.cancel()
    t.join(5)
    assert not t.is_alive()
    s = out["s"]
    assert s.tick.cancelled and 0 < s.tick.polled < 20 and s.tick.left == 20 - s.tick.polled
    assert s.drain.notices == 0  # a cancelled App claims no notices
    assert s.as_dict()["cancelled"] is True and s.as_dict()["released"] == s.tick.released
    assert all(tj.lease_owner is None for tj in app.store.list_jobs(limit=100))
    app.close()
