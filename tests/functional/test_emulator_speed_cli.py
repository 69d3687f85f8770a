"""The emulator is fast enough not to be what a benchmark measures, and its command starts and answers."""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import threading
import time

import requests

from fixtures.emulator import TEST_BUCKET, signed_headers
from jobwatch.emulator import cli


def test_keep_alive_loop_is_not_stalled_by_nagle(emulator):
    emulator.preload(TEST_BUCKET, 20)
    path = "/inventorytriggerjob"
    headers = signed_headers("GET", path)
    with requests.Session() as s:
        s.get(emulator.url + path, headers=headers, timeout=5)
        n, started = 200, time.perf_counter()
        statuses = {s.get(emulator.url + path, headers=headers, timeout=5).status_code for _ in range(n)}
        elapsed = time.perf_counter() - started
    assert statuses == {200}
    # The 40 ms Nagle/delayed-ACK stall would cap this near 25 requests/s; we see hundreds or more.
    assert n / elapsed > 100, f"{n / elapsed:.0f} requests/s"


class _Out(io.StringIO):
    """Signals when the command has flushed its banner, so the test waits on an event, not a sleep loop."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed = threading.Event()

    def flush(self) -> None:
        super().flush()
        self.flushed.set()


def test_cli_serves_preloaded_jobs_with_the_given_key():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--port", "0", "--preload", "6", "--secret-id", "AKIDCLITEST0000000000000000000000000",
                              "--secret-key", "cli-test-key", "--seed", "4", "--speed", "30"])
    out, stop = _Out(), threading.Event()
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(cli.run(args, out=out, stop=stop)), daemon=True)
    t.start()
    try:
        assert out.flushed.wait(10)
        url = re.search(r"listening on (http://\S+)", out.getvalue()).group(1)
        assert "cli-test-key" not in out.getvalue()
        headers = signed_headers("GET", "/inventorytriggerjob", secret_id="AKIDCLITEST0000000000000000000000000",
                                 secret_key="cli-test-key")
        r = requests.get(url + "/inventorytriggerjob", headers=headers, timeout=5)
        assert r.status_code == 200 and r.text.count("<JobsDetail>") == 6
    finally:
        stop.set()
        t.join(5)
    assert rc == [0]


def test_module_entry_point_help():
    res = subprocess.run([sys.executable, "-m", "jobwatch.emulator", "--help"], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0 and "--preload" in res.stdout and "--speed" in res.stdout
