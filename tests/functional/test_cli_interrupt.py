"""Ctrl-C during a real ``jobwatch poll`` process against a hanging CI endpoint (issue 16 item 2)."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from fixtures.emulator import TEST_BUCKET, TEST_REGION
from test_cli_operator import JOBWATCH, _child_env, _store, env  # noqa: F401  (env is a fixture)

from jobwatch.core.models import JobKey


class _Hanging:
    """A loopback server that accepts connections and never answers (a hung CI endpoint)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.accepted: list[socket.socket] = []
        self.stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        for c in self.accepted:
            c.close()
        self.sock.close()


@pytest.fixture
def hanging():
    h = _Hanging()
    yield h
    h.close()


def _hung(env, hanging, args, connections=1, **extra):
    """``jobwatch <args>`` against the endpoint that never answers, once it holds ``connections`` of them."""
    proc = subprocess.Popen([JOBWATCH, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=_child_env(env, JOBWATCH_CI_ENDPOINT=hanging.url, JOBWATCH_HTTP_READ_TIMEOUT=30,
                                           **{"JOBWATCH_HTTP_MAX_ATTEMPTS": 1, **extra}))
    deadline = time.monotonic() + 30
    while len(hanging.accepted) < connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(hanging.accepted) >= connections, f"jobwatch {' '.join(args)} never reached the endpoint"
    return proc


def test_ctrl_c_during_poll_stops_within_seconds_releases_leases_and_exits_130(env, hanging):
    keys = [JobKey(TEST_REGION, TEST_BUCKET, f"hang{i:03d}") for i in range(40)]
    store = _store(env)
    store.track(keys, datetime.now(timezone.utc) - timedelta(minutes=1))
    store.close()
    proc = _hung(env, hanging, ["poll", "--no-discover"], 4, JOBWATCH_CONCURRENCY=4, JOBWATCH_HTTP_MAX_ATTEMPTS=3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert proc.returncode == 130, (out, err)
    assert took < 4.0, f"took {took:.1f}s to stop"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "interrupted" in err.lower()
    store = _store(env)
    try:
        leased = [tj.key for tj in store.list_jobs() if tj.lease_owner is not None]
    finally:
        store.close()
    assert leased == [], f"{len(leased)} jobs still leased after Ctrl-C"


def test_a_second_ctrl_c_exits_at_once(env, hanging):
    store = _store(env)
    store.track([JobKey(TEST_REGION, TEST_BUCKET, "hang1")], datetime.now(timezone.utc) - timedelta(minutes=1))
    store.close()
    proc = _hung(env, hanging, ["poll", "--no-discover"])
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - sent < 2.0, err
    assert "Traceback" not in err


def test_ctrl_c_stops_a_command_that_is_not_a_poll_at_once(env, hanging):
    """`job list` has no work to give back: the first Ctrl-C stops it (its App's cancel would not)."""
    proc = _hung(env, hanging, ["job", "list", "--bucket", TEST_BUCKET, "--region", TEST_REGION])
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - sent < 2.0, err
    assert "Traceback" not in err and "interrupted" in err
