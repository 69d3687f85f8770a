"""Issue 19, defect 4: `config check` compared the lease with one poll's timeouts only, so settings whose
requests (with their retries and pauses) or whose notice sends outlast the lease were accepted, and a second
poller or drain then took jobs and notices over mid-request. It now refuses every setting the engine and the
outbox cannot hold to, and whatever it accepts builds an engine."""

from __future__ import annotations

import itertools

import pytest

from jobwatch.app.config import check_environment, load_settings
from jobwatch.app.orchestrator import App

BASE = {"JOBWATCH_STORE_URL": "sqlite:///:memory:", "JOBWATCH_SECRET_ID": "AKIDTESTONLY0000",
        "JOBWATCH_SECRET_KEY": "test-only-key-0000"}


def _problems(**env: str) -> list[str]:
    return [p for p in check_environment({**BASE, **env}) if "LEASE" in p]


def test_a_lease_shorter_than_a_request_with_its_retries_is_refused():
    # 4 attempts x (3.05 + 10) s = 52.2 s of timeouts, plus 3 pauses of up to 10 s between them: 82.2 s
    problems = _problems(JOBWATCH_LEASE_SECONDS="60")
    assert problems and "82.2" in problems[0], problems


def test_a_lease_shorter_than_a_notice_send_is_refused():
    problems = _problems(JOBWATCH_LEASE_SECONDS="30", JOBWATCH_HTTP_MAX_ATTEMPTS="1", JOBWATCH_NOTIFY_TIMEOUT="30")
    assert problems and "JOBWATCH_NOTIFY_TIMEOUT" in problems[0], problems


@pytest.mark.parametrize("lease, attempts, read, notify", itertools.product(
    ("10", "30", "60", "90", "120"), ("1", "2", "4"), ("1", "10", "30"), ("1", "5", "20")))
def test_whatever_config_check_accepts_builds_an_engine(lease, attempts, read, notify):
    env = {**BASE, "JOBWATCH_LEASE_SECONDS": lease, "JOBWATCH_HTTP_MAX_ATTEMPTS": attempts,
           "JOBWATCH_HTTP_READ_TIMEOUT": read, "JOBWATCH_NOTIFY_TIMEOUT": notify}
    if check_environment(env):
        return
    app = App(load_settings(env), environ=env)
    try:
        assert app.engine.lease_seconds > app.engine.poll_worst_case
        assert app.outbox.lease_seconds > app.outbox.timeout + app.outbox.safety_margin
    finally:
        app.close()


def test_the_defaults_hold():
    assert _problems() == []


def test_the_outbox_takes_the_configured_lease():
    """Issue 19, also: the outbox's lease was fixed at 120 s whatever JOBWATCH_LEASE_SECONDS said."""
    env = {**BASE, "JOBWATCH_LEASE_SECONDS": "300"}
    app = App(load_settings(env), environ=env)
    try:
        assert app.outbox.lease_seconds == 300.0
    finally:
        app.close()
