"""Instances (one App each, one MariaDB store) working at the same moments on one running batch: each page of
children is counted by one of them only (the batch's children lease), and so is each child a callback names, so
the counts end exact and every child is recorded once."""

from __future__ import annotations

import threading
from typing import Any, Callable

import pytest
from fixtures.emulator import TEST_BUCKET, TEST_REGION, TEST_SECRET_ID, TEST_SECRET_KEY

from jobwatch.app.config import load_settings
from jobwatch.app.orchestrator import App
from jobwatch.core.models import JobKey


def _apps(mysql_url: str, emulator: Any, emulator_clock: Any, max_pages: int, n: int = 4) -> list[App]:
    env = {"JOBWATCH_STORE_URL": mysql_url, "JOBWATCH_CI_ENDPOINT": emulator.url,
           "JOBWATCH_SECRET_ID": TEST_SECRET_ID, "JOBWATCH_SECRET_KEY": TEST_SECRET_KEY,
           "JOBWATCH_POLL_MIN_SECONDS": "10", "JOBWATCH_POLL_MAX_SECONDS": "10", "JOBWATCH_POLL_JITTER": "0",
           "JOBWATCH_CHILDREN_MAX_PAGES": str(max_pages), "JOBWATCH_LOG_LEVEL": "error", "JOBWATCH_NOTIFY": "log://"}
    return [App(load_settings(env), environ=env, clock=emulator_clock.now, owner=f"inst-{i}") for i in range(n)]


def _together(apps: list[App], work: Callable[[App, int], None]) -> None:
    """``work(app, i)`` in a thread per App, all released at once; any exception is raised here."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(apps))

    def run(app: App, i: int) -> None:
        try:
            start.wait(10)
            work(app, i)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(a, i)) for i, a in enumerate(apps)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def _until_counted(apps: list[App], emulator_clock: Any, key: JobKey, work: Callable[[App, int], None],
                   before_round: Callable[[], None] = lambda: None) -> None:
    """Rounds of 3 s of the emulator's clock (``before_round`` after each step of it), the Apps working together,
    until the batch's count is complete."""
    for _ in range(60):
        emulator_clock.advance(3)
        before_round()
        _together(apps, work)
        p = apps[0].progress(key)
        if p is not None and p.complete:
            return
    raise AssertionError(f"{key} not counted: {apps[0].progress(key)}")


def _tick(app: App, _i: int) -> None:
    app.tick(app.budget(20), discover=False)


@pytest.mark.mysql
def test_four_instances_count_one_batchs_children_exactly_once(mysql_url, emulator, emulator_clock):
    apps = _apps(mysql_url, emulator, emulator_clock, max_pages=3)
    batch = emulator.create_job(TEST_BUCKET, type="Job", children=3000, child_failure_rate=0.03)
    key = JobKey(TEST_REGION, TEST_BUCKET, batch)
    apps[0].register([key], poll=True)
    try:
        _until_counted(apps, emulator_clock, key, _tick)
        p = apps[0].progress(key)
        assert (p.total, p.failed, p.succeeded, p.running + p.waiting) == (3000, 90, 2910, 0)
        ids, cursor = [], None
        while True:
            page = apps[0].children(key, limit=1000, cursor=cursor)
            ids += [c.child_id for c in page.items]
            cursor = page.cursor
            if cursor is None:
                break
        assert len(ids) == len(set(ids)) == 3000
        assert sorted(ids) == sorted(v.child_id for v in emulator.child_views(TEST_BUCKET, batch))
    finally:
        for a in apps:
            a.close()


@pytest.mark.mysql
def test_callbacks_racing_ticks_count_each_child_once(mysql_url, emulator, emulator_clock):
    """Two instances tick while two others take CI's callbacks for every child that ended, each callback
    delivered to both (a retry racing the first delivery): the children a callback names are read back and
    recorded under the same lease the refreshes take, so whichever writes a child first counts it and the others
    find it recorded; the counts end exact and every child is recorded once."""
    from jobwatch.core.children import ChildKind
    from jobwatch.core.progress import ChildCallback

    apps = _apps(mysql_url, emulator, emulator_clock, max_pages=2)
    batch = emulator.create_job(TEST_BUCKET, type="Job", children=1000, child_failure_rate=0.05)
    key = JobKey(TEST_REGION, TEST_BUCKET, batch)
    apps[0].register([key], poll=True)
    called: set[str] = set()
    outcomes: list[str] = []
    round_cbs: list[ChildCallback] = []

    def work(app: App, i: int) -> None:
        if i < 2:
            _tick(app, i)
        elif round_cbs:
            outcomes.extend(c["outcome"] for c in app.child_callbacks(round_cbs, app.budget(20)).callbacks)

    def callbacks_of_the_round() -> None:  # CI calls back once for each child that ended since the last round
        ended = [c for c in emulator.child_views(TEST_BUCKET, batch)
                 if c.state in ("Success", "Failed", "Cancel") and c.child_id not in called]
        called.update(c.child_id for c in ended)
        round_cbs[:] = [ChildCallback("TaskFinish", c.child_id, ChildKind.JOB, TEST_BUCKET, TEST_REGION,
                                      state=c.state, queue_id=c.queue_id, tag=c.tag) for c in ended]

    try:
        _until_counted(apps, emulator_clock, key, work, callbacks_of_the_round)
        p = apps[0].progress(key)
        assert (p.total, p.failed, p.succeeded, p.running + p.waiting) == (1000, 50, 950, 0)
        page = apps[0].children(key, limit=1000)
        assert len({c.child_id for c in page.items}) == len(page.items) == 1000 and page.cursor is None
        assert "recorded" in outcomes and "already_final" in outcomes  # both paths were taken
    finally:
        for a in apps:
            a.close()
