"""Fault soak: about 20 % of the emulator's answers fail, spread over every fault kind (500, 502, 503 SlowDown,
429 SlowDown, connection resets, hangs past the client's read timeout, truncated bodies, HTML instead of XML, the
right body with the wrong content type, and issue 19's answers that look valid: about another job, stale,
a sudden NonExistJobIds). Jobs (quick: 100, soak: 500) are driven through their
lifecycle by advancing the emulator's ManualClock between ticks, and the outbox drains to a webhook receiver.
Every job ends in its true final state, every transition is in the history once with exactly one notice, every
notice arrives, and the run stays within its bounds (ticks of emulated time and real seconds)."""

from __future__ import annotations

import time
from collections import Counter

from rel_support import (
    BUCKET, REGION, SECRET_ID, SECRET_KEY, START, WebhookReceiver, answer_faults, check_history_and_outbox,
    soak_or_quick, write_figures,
)

from jobwatch.ci.client import CIClient
from jobwatch.ci.credentials import StaticProvider
from jobwatch.emulator import EmulatorServer, FaultRule, Lifecycle, ManualClock
from jobwatch.app.engine import Engine
from jobwatch.core.models import JobKey
from jobwatch.notify import parse_sinks
from jobwatch.app.outbox import Outbox
from jobwatch.core.retry import Backoff
from jobwatch.core.statemachine import PollPolicy
from jobwatch.store import open_store

JOBS = soak_or_quick(500, 100)
P = 0.022  # per rule; with the answer faults about 20 % of answers are faulty
PATH = "/inventorytriggerjob/*"
FAULTS = [
    FaultRule(kind="status", status=500, probability=P, path=PATH),
    FaultRule(kind="status", status=502, probability=P, path=PATH),
    FaultRule(kind="status", status=503, code="SlowDown", probability=P, path=PATH),
    FaultRule(kind="status", status=429, code="SlowDown", probability=P, path=PATH),
    FaultRule(kind="reset", probability=P, path=PATH),
    FaultRule(kind="hang", probability=P / 2, max_hold=1.0, path=PATH),
    FaultRule(kind="truncate", probability=P, path=PATH),
    FaultRule(kind="not_xml", probability=P, path=PATH),
    FaultRule(kind="content_type", probability=P / 2, path=PATH),
    *answer_faults(P),  # about another job, stale (15 s: longer than the poll floor), sudden NonExist
]
KINDS = {"status", "reset", "hang", "truncate", "not_xml", "content_type", "stale", "wrong_job", "nonexist"}


def test_jobs_reach_their_true_final_state_through_faults(sqlite_url):
    clock = ManualClock(start=START)
    emulator = EmulatorServer(host="127.0.0.1", port=0, credentials={SECRET_ID: SECRET_KEY}, clock=clock, seed=20,
                              lifecycle=Lifecycle(submitted_seconds=5, running_seconds=60, failure_ratio=0.2,
                                                  jitter=0.5), faults=FAULTS).start()
    receiver = WebhookReceiver().start()
    store = open_store(sqlite_url)
    client = CIClient(StaticProvider(SECRET_ID, SECRET_KEY), endpoint=emulator.url, read_timeout=0.3,
                      max_attempts=2, sleep=lambda s: None)
    engine = Engine(store, client, policy=PollPolicy(min_seconds=10, max_seconds=20, jitter=0.0, confirmations=2,
                                                     error_max_seconds=40),
                    clock=clock.now, concurrency=16, lease_seconds=60, rand=lambda: 0.5)
    outbox = Outbox(store, parse_sinks(receiver.spec()), clock=clock.now, timeout=2.0,
                    backoff=Backoff(base=1.0, cap=5.0), max_attempts=20)
    t0 = time.monotonic()
    try:
        keys = [JobKey(REGION, BUCKET, emulator.create_job(BUCKET, name=f"f{i}")) for i in range(JOBS)]
        store.track(keys, clock.now())
        ticks = 0
        max_ticks = 60  # 300 emulated seconds: the longest job ends by ~100 s; errors back off to 40 s at most
        while store.list_jobs(active=True, limit=1) or store.list_outbox(status="pending", limit=1):
            assert ticks < max_ticks, f"not all final after {ticks} ticks: {store.counts()}"
            engine.tick()
            outbox.drain()
            clock.advance(5)
            ticks += 1
        elapsed = time.monotonic() - t0
        truth = {k.job_id: emulator.job_state(BUCKET, k.job_id) for k in keys}
        assert set(truth.values()) == {"Success", "Failed"}
        transitions = check_history_and_outbox(store, keys, truth)
        outbox_keys = {e.notice.idempotency_key for e in store.list_outbox(limit=100000)}
        assert set(receiver.ids()) == outbox_keys
        fired = Counter(k for r in emulator.request_log if r.fault for k in r.fault.split(","))
        queries = sum(1 for r in emulator.request_log if r.job_id)
        faulty = sum(1 for r in emulator.request_log if r.fault)
        assert KINDS <= set(fired), f"fault kinds never fired: {KINDS - set(fired)}"
        assert 0.12 <= faulty / queries <= 0.3, f"{faulty}/{queries} faulty answers"
        assert elapsed < soak_or_quick(240, 60), f"took {elapsed:.1f} s"
        write_figures("fault-soak", {"jobs": JOBS, "queries": queries, "faults_injected": faulty,
                                     "fault_ratio": round(faulty / queries, 3), "faults_by_kind": dict(fired),
                                     "transitions": transitions, "notices_delivered": len(set(receiver.ids())),
                                     "duplicates": 0, "ticks": ticks, "seconds": round(elapsed, 1)})
    finally:
        engine.close()
        client.close()
        store.close()
        receiver.stop()
        emulator.stop()
