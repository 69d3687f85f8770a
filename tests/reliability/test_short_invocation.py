"""Notices go out in a short invocation too. SCF's default timeout is 3 s (and a context without
``time_limit_in_ms`` is taken to be that); the drain used to start only with its margin plus a whole notify
timeout (2 s + 5 s) left, so with a limit of 10 s or less a tick queued notices and never delivered one."""

from __future__ import annotations

import pytest
from rel_support import BUCKET, REGION, SECRET_ID, SECRET_KEY, START, WebhookReceiver, create_jobs, start_emulator

from jobwatch.app.config import load_settings
from jobwatch.app.orchestrator import App, Budget
from jobwatch.emulator import ManualClock


@pytest.mark.parametrize("limit_s", [3.0, 6.0, 10.0])
def test_a_short_timer_invocation_delivers_what_it_queued(sqlite_url, limit_s):
    clock = ManualClock(start=START)
    emulator = start_emulator(clock, seed=7)
    receiver = WebhookReceiver().start()
    env = {"JOBWATCH_STORE_URL": sqlite_url, "JOBWATCH_CI_ENDPOINT": emulator.url, "JOBWATCH_SECRET_ID": SECRET_ID,
           "JOBWATCH_SECRET_KEY": SECRET_KEY, "JOBWATCH_NOTIFY": receiver.spec(), "JOBWATCH_DEFAULT_REGION": REGION,
           "JOBWATCH_DEFAULT_BUCKET": BUCKET}  # every timing setting at its default (notify timeout 5 s)
    app = App(load_settings(env), environ=env, clock=clock.now)
    try:
        app.migrate()
        create_jobs(emulator, app.store, 3, clock.now())
        summary = app.tick(Budget.of(app.monotonic(), limit_s, app.settings.safety_margin_seconds), discover=False)
        queued = {e.notice.idempotency_key for e in app.outbox_entries(limit=1000)}
        assert summary.tick.polled == 3 and len(queued) == 3
        assert queued <= set(receiver.ids()), f"{limit_s} s: delivered {summary.drain.delivered} of {len(queued)}"
        assert summary.elapsed < limit_s
    finally:
        app.close()
        receiver.stop()
        emulator.stop()
