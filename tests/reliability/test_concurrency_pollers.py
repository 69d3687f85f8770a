"""Concurrency: 8 poller processes on one MariaDB store over the emulator (quick: 200 jobs; soak: 1000): no job
queried twice inside a lease (emulator request log: two queries of a job are never closer than the poll floor;
pollers' log: never two instances at once), no lease lost, no duplicate notice, history exactly once.
tests/integration/test_concurrency_mysql.py runs the issue-4 size (500 jobs)."""

from __future__ import annotations

import pytest
from rel_support import run_concurrent_pollers, soak_or_quick, write_figures

JOBS = soak_or_quick(1000, 200)


@pytest.mark.mysql
def test_eight_pollers_on_mariadb(mysql_url, tmp_path):
    figures = run_concurrent_pollers(mysql_url, n_jobs=JOBS, n_procs=8, tmp_dir=str(tmp_path),
                                     factor=soak_or_quick(3.0, 10.0), budget=soak_or_quick(240.0, 90.0), seed=8)
    write_figures("concurrency-mysql", figures)
    assert figures["double_polls"] == 0


def test_four_pollers_on_sqlite(sqlite_url, tmp_path):
    """SQLite is the single-host store: several processes on one file must keep the same promises."""
    figures = run_concurrent_pollers(sqlite_url, n_jobs=soak_or_quick(300, 80), n_procs=4, tmp_dir=str(tmp_path),
                                     factor=10.0, budget=90.0, seed=9)
    write_figures("concurrency-sqlite", figures)
    assert figures["double_polls"] == 0
