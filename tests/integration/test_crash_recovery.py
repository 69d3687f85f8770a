"""Issue 4, done-when: a poller SIGKILLed mid-tick (from outside, after an answer, inside the write transaction,
between a delivery and its record) loses nothing and duplicates nothing: the next tick (a new process) takes
over once the dead one's leases expire, every job ends in its true final state with every transition once and
one notice each, and a notice the receiver got twice carries the same idempotency key.
The machinery lives in tests/reliability/rel_support.py; tests/reliability/test_crash_kill.py runs the longer
seeded campaign."""

from __future__ import annotations

import pytest

from reliability.rel_support import run_crash_campaign


def test_sigkill_mid_tick_on_sqlite_loses_and_duplicates_nothing(sqlite_url):
    figures = run_crash_campaign(sqlite_url, runs=4, n_jobs=30, seed=11)
    assert figures["kills"] >= 3, figures  # the kills really happened (the run is not vacuous)


@pytest.mark.mysql
def test_sigkill_mid_tick_on_mariadb_loses_and_duplicates_nothing(mysql_url):
    figures = run_crash_campaign(mysql_url, runs=4, n_jobs=30, seed=12)
    assert figures["kills"] >= 3, figures
