"""Crashes: poller processes SIGKILLed at seeded points (from outside at a random moment, after the n-th answer,
inside the write transaction, between a delivery and its record), on SQLite and on MariaDB, then one clean run.
No transition is lost, none is recorded twice, every notice arrives, and a notice that arrives twice carries the
same idempotency key (webhook-id) and body. Quick: 10 runs per store; soak (JOBWATCH_SOAK=1): 70 runs."""

from __future__ import annotations

import pytest
from rel_support import run_crash_campaign, soak_or_quick, write_figures

RUNS = soak_or_quick(70, 10)
JOBS = soak_or_quick(300, 40)


def test_crash_campaign_sqlite(sqlite_url):
    figures = run_crash_campaign(sqlite_url, runs=RUNS, n_jobs=JOBS, seed=2026)
    write_figures("crash-sqlite", figures)
    assert figures["kills"] >= RUNS * 0.7, figures  # most runs really died where aimed


@pytest.mark.mysql
def test_crash_campaign_mariadb(mysql_url):
    figures = run_crash_campaign(mysql_url, runs=RUNS, n_jobs=JOBS, seed=2027)
    write_figures("crash-mysql", figures)
    assert figures["kills"] >= RUNS * 0.7, figures
