"""Every listing says which variant it wants (``type=Workflow`` or ``type=Job``): the official SDK defaults to
``Workflow`` when the type is left out, so a caller that relies on a default may miss every ``Job``-type job.
The emulator here behaves like that default (``list_type_default="Workflow"``)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs

import pytest
from fixtures.emulator import TEST_BUCKET, TEST_REGION, TEST_SECRET_ID, TEST_SECRET_KEY, TEST_START

from jobwatch.app.engine import Engine
from jobwatch.ci.client import CIClient
from jobwatch.ci.credentials import StaticProvider
from jobwatch.cli import main
from jobwatch.core.errors import ValidationError
from jobwatch.emulator import EmulatorServer, Lifecycle, ManualClock
from jobwatch.store import open_store


@pytest.fixture
def sdk_like_emulator():
    clock = ManualClock(start=TEST_START)
    srv = EmulatorServer(credentials={TEST_SECRET_ID: TEST_SECRET_KEY}, clock=clock, seed=1,
                         lifecycle=Lifecycle(submitted_seconds=5, running_seconds=60, failure_ratio=0.0),
                         list_type_default="Workflow")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _two_variants(emu):
    wf = emu.create_job(TEST_BUCKET, name="wf", type="Workflow", state="Running",
                        created_at=TEST_START - timedelta(minutes=2))
    job = emu.create_job(TEST_BUCKET, name="node", type="Job", state="Running",
                         created_at=TEST_START - timedelta(minutes=1))
    return wf, job


def _list_queries(emu):
    return [parse_qs(r.query) for r in emu.request_log if r.method == "GET" and r.job_id is None]


def test_discovery_tracks_job_type_jobs_too(sdk_like_emulator, sqlite_url):
    wf, job = _two_variants(sdk_like_emulator)
    store = open_store(sqlite_url)
    client = CIClient(StaticProvider(TEST_SECRET_ID, TEST_SECRET_KEY), endpoint=sdk_like_emulator.url,
                      max_attempts=1)
    try:
        engine = Engine(store, client, clock=sdk_like_emulator.clock.now)
        assert engine.discover(TEST_REGION, TEST_BUCKET) == 2
        assert {tj.key.job_id for tj in store.list_jobs()} == {wf, job}
        queries = _list_queries(sdk_like_emulator)
        assert queries and all(q.get("type") in (["Workflow"], ["Job"]) for q in queries)
        engine.close()
    finally:
        client.close()
        store.close()


def test_job_list_shows_both_variants(sdk_like_emulator, monkeypatch, tmp_path, capsys):
    import json

    wf, job = _two_variants(sdk_like_emulator)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("JOBWATCH_SECRET_ID", TEST_SECRET_ID)
    monkeypatch.setenv("JOBWATCH_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("JOBWATCH_CI_ENDPOINT", sdk_like_emulator.url)
    code = main(["job", "list", "--bucket", TEST_BUCKET, "--region", TEST_REGION, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert {j["job_id"] for j in json.loads(out)} == {wf, job}
    assert all(q.get("type") in (["Workflow"], ["Job"]) for q in _list_queries(sdk_like_emulator))


def test_a_page_without_a_type_is_refused_before_sending(sdk_like_emulator):
    with CIClient(StaticProvider(TEST_SECRET_ID, TEST_SECRET_KEY), endpoint=sdk_like_emulator.url) as c:
        with pytest.raises(ValidationError, match="type"):
            c.list_page(TEST_BUCKET, TEST_REGION)
    assert not sdk_like_emulator.request_log


def test_both_variants_are_merged_by_creation_time_so_a_limit_keeps_the_newest(sdk_like_emulator):
    emu = sdk_like_emulator
    made = [emu.create_job(TEST_BUCKET, name=f"n{i}", type="Job" if i % 4 == 0 else "Workflow",
                           created_at=TEST_START - timedelta(minutes=30 - i)) for i in range(30)]
    with CIClient(StaticProvider(TEST_SECRET_ID, TEST_SECRET_KEY), endpoint=emu.url) as c:
        newest = [j.job_id for _, j in zip(range(5), c.list_jobs(TEST_BUCKET, TEST_REGION, size=3))]
        oldest = [j.job_id for j in c.list_jobs(TEST_BUCKET, TEST_REGION, size=7, order_by_time="Asc")]
    assert newest == made[::-1][:5]
    assert oldest == made
