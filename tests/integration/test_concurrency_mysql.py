"""Issue 4, done-when: 8 poller processes on one MariaDB store over the emulator, 500 jobs through their whole
lifecycle. Every transition is in the history exactly once, the outbox holds exactly one notice per transition,
and no job is polled by two instances within a lease (checked on the emulator's request log and the pollers' own
log). The machinery lives in tests/reliability/rel_support.py."""

from __future__ import annotations

import pytest

from reliability.rel_support import run_concurrent_pollers, write_figures


@pytest.mark.mysql
def test_eight_processes_poll_500_jobs_on_mariadb_exactly_once(mysql_url, tmp_path):
    figures = run_concurrent_pollers(mysql_url, n_jobs=500, n_procs=8, tmp_dir=str(tmp_path), factor=5.0,
                                     budget=90.0)
    write_figures("concurrency-mysql-500", figures)
    assert figures["double_polls"] == 0 and figures["transitions"] >= 500
