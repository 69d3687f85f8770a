"""Store outage: MariaDB reached through a loopback TCP proxy that the test cuts in the middle of a tick (never the
shared server itself). The tick fails with StoreUnavailable naming the store; nothing is half-written (each job's
history matches its record, each history row has its notice); once the proxy is back the same engine, with no
restart, catches up and every job ends in its true final state, every transition once."""

from __future__ import annotations

import time

import pytest
from rel_support import (
    BUCKET, REGION, SECRET_ID, SECRET_KEY, START, TcpProxy, check_history_and_outbox, dump_tables, start_emulator,
)

from jobwatch.ci.client import CIClient
from jobwatch.ci.credentials import StaticProvider
from jobwatch.emulator import ManualClock
from jobwatch.app.engine import Engine
from jobwatch.core.errors import StoreUnavailable
from jobwatch.core.models import JobKey
from jobwatch.core.statemachine import PollPolicy
from jobwatch.store import open_store


class CutAfter:
    """The real client, plus a hook: cut the proxy when the n-th answer arrives (mid-tick, between writes)."""

    def __init__(self, client: CIClient, proxy: TcpProxy, n: int) -> None:
        self.client, self.proxy, self.n, self.calls = client, proxy, n, 0

    def get_job(self, bucket: str, region: str, job_id: str):
        res = self.client.get_job(bucket, region, job_id)
        self.calls += 1
        if self.calls == self.n:
            self.proxy.cut()
        return res

    def list_jobs(self, *a, **kw):
        return self.client.list_jobs(*a, **kw)

    @property
    def worst_case_seconds(self) -> float:
        return self.client.worst_case_seconds


def _consistent(tables: dict) -> None:
    """No half-written poll: history rows == the record's count, and one notice per history row."""
    hist: dict[tuple, int] = {}
    for row in tables["jw_history"]:
        hist[row[1:4]] = hist.get(row[1:4], 0) + 1
    for row in tables["jw_jobs"]:
        key = row[0:3]
        transitions = row[21]
        assert hist.get(key, 0) == transitions, f"{key}: {hist.get(key, 0)} history rows, record says {transitions}"
    assert len(tables["jw_outbox"]) == len(tables["jw_history"])


def _setup(mysql_url: str, seed: int):
    """A cuttable proxy in front of the test's MariaDB database (and the URL through it), the emulator on a
    manual clock, and a client with one attempt."""
    proxy = TcpProxy(("127.0.0.1", int(mysql_url.rsplit(":", 1)[1].split("/")[0])))
    url = mysql_url.replace(mysql_url.rsplit("@", 1)[1].split("/")[0], f"127.0.0.1:{proxy.port}")
    clock = ManualClock(start=START)
    emulator = start_emulator(clock, seed=seed)
    client = CIClient(StaticProvider(SECRET_ID, SECRET_KEY), endpoint=emulator.url, read_timeout=2.0,
                      max_attempts=1, sleep=lambda s: None)
    return proxy, url, clock, emulator, client


@pytest.mark.mysql
def test_cut_store_mid_tick_fails_cleanly_then_catches_up(mysql_url):
    proxy, url, clock, emulator, client = _setup(mysql_url, seed=30)
    hooked = CutAfter(client, proxy, n=17)
    store = open_store(url)
    engine = Engine(store, hooked, policy=PollPolicy(min_seconds=10, max_seconds=20, jitter=0.0), clock=clock.now,
                    concurrency=1, lease_seconds=60, batch_size=10, write_batch=5, rand=lambda: 0.5)
    direct = open_store(mysql_url)  # the checker's own connection, not through the proxy
    try:
        keys = [JobKey(REGION, BUCKET, emulator.create_job(BUCKET, name=f"s{i}")) for i in range(30)]
        store.track(keys, clock.now())
        with pytest.raises(StoreUnavailable) as info:
            engine.tick()
        msg = str(info.value)
        assert f"mysql store 127.0.0.1:{proxy.port}/" in msg and "error 2013" in msg, msg
        tables = dump_tables(direct)
        _consistent(tables)
        written = sum(1 for r in tables["jw_jobs"] if r[21] > 0)
        assert 10 <= written < 30, f"{written} jobs written before the cut: the cut was not mid-tick"
        with pytest.raises(StoreUnavailable):  # still down: fails again, as clearly
            engine.tick()
        proxy.restore()
        clock.advance(61)  # the failed tick's leases expire
        for _ in range(40):
            engine.tick()
            if not direct.list_jobs(active=True, limit=1):
                break
            clock.advance(10)
        truth = {k.job_id: emulator.job_state(BUCKET, k.job_id) for k in keys}
        check_history_and_outbox(direct, keys, truth)
    finally:
        engine.close()
        client.close()
        store.close()
        direct.close()
        proxy.close()
        emulator.stop()


@pytest.mark.mysql
def test_a_store_fault_mid_tick_stops_the_workers_sending(mysql_url):
    """Defect 5 (issue 19): after a write failed, worker threads used to go on taking the claimed batch's jobs
    and querying them after the tick had raised (67 queries in the independent run). Not one more may start."""
    proxy, url, clock, emulator, client = _setup(mysql_url, seed=31)
    store = open_store(url)
    engine = Engine(store, CutAfter(client, proxy, n=7), policy=PollPolicy(min_seconds=10, jitter=0.0),
                    clock=clock.now, concurrency=2, lease_seconds=60, batch_size=30, write_batch=5,
                    rand=lambda: 0.5)
    try:
        keys = [JobKey(REGION, BUCKET, emulator.create_job(BUCKET, name=f"w{i}")) for i in range(30)]
        store.track(keys, clock.now())
        with pytest.raises(StoreUnavailable):
            engine.tick()
        sent = len(emulator.request_log)
        time.sleep(1.0)
        assert len(emulator.request_log) <= sent + 2, (  # at most the two in flight when it raised
            f"{len(emulator.request_log) - sent} queries sent after the tick raised")
        assert sent < 20
    finally:
        engine.close()
        client.close()
        store.close()
        proxy.close()
        emulator.stop()
