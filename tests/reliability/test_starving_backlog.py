"""Notices first (issue 19, defect 3): with more due jobs than a timer invocation can poll, the engine used to
run to the stop time, and the drain after it, which needs its margin plus a send's timeout, never started: four
ticks in a row delivered 0 notices while hundreds piled up. Polling now leaves the drain its share of every
budget. Four SCF-style ticks (App.tick with an SCF budget) over a backlog that never clears: after each one,
every notice queued so far has reached the webhook."""

from __future__ import annotations

from rel_support import REGION, SECRET_ID, SECRET_KEY, START, WebhookReceiver, create_jobs, start_emulator

from jobwatch.app.config import load_settings
from jobwatch.app.orchestrator import App, Budget
from jobwatch.emulator import FaultRule, ManualClock

JOBS = 300


def test_four_backlogged_ticks_deliver_every_queued_notice(sqlite_url):
    clock = ManualClock(start=START)
    emulator = start_emulator(clock, seed=40, faults=[FaultRule(kind="latency", latency=0.2,
                                                                path="/inventorytriggerjob/*")])
    receiver = WebhookReceiver().start()
    env = {"JOBWATCH_STORE_URL": sqlite_url, "JOBWATCH_CI_ENDPOINT": emulator.url, "JOBWATCH_SECRET_ID": SECRET_ID,
           "JOBWATCH_SECRET_KEY": SECRET_KEY, "JOBWATCH_HTTP_MAX_ATTEMPTS": "1", "JOBWATCH_CONCURRENCY": "4",
           "JOBWATCH_POLL_MIN_SECONDS": "10", "JOBWATCH_POLL_JITTER": "0", "JOBWATCH_NOTIFY": receiver.spec(),
           # a send that takes longer than this on a loaded machine fails and waits for its backoff: 2 s is far above a
           # loopback answer and still leaves about half of each 14 s invocation to polling
           "JOBWATCH_NOTIFY_TIMEOUT": "2", "JOBWATCH_SAFETY_MARGIN_SECONDS": "1",
           "JOBWATCH_DEFAULT_REGION": REGION,
           # one query per job: listing would clear 300 jobs in a second, and the backlog is the premise here
           "JOBWATCH_BULK_REFRESH": "false"}
    app = App(load_settings(env), environ=env, clock=clock.now, rand=lambda: 0.5)
    try:
        app.migrate()
        create_jobs(emulator, app.store, JOBS, clock.now())
        for n in range(4):
            # a 14 s timer invocation: at this latency the engine could poll ~20 jobs a second until its end. The
            # drain needs its 2 s margin + two 2 s send timeouts + the engine's 2 s grace: 8 s, capped at half
            # the 13 s left; a 10 s invocation left it one claim of 8 notices under load.
            summary = app.tick(Budget.of(app.monotonic(), 14.0, 1.0), discover=False)
            queued = {e.notice.idempotency_key for e in app.outbox_entries(limit=100000)}
            assert summary.tick.left > 0, f"tick {n}: no backlog left, the test proves nothing"
            assert queued, f"tick {n}: nothing queued"
            missing = queued - set(receiver.ids())
            assert not missing, (f"tick {n}: {len(missing)} of {len(queued)} queued notices not delivered "
                                 f"(polled {summary.tick.polled}, delivered {summary.drain.delivered})")
            clock.advance(10)
    finally:
        app.close()
        receiver.stop()
        emulator.stop()
