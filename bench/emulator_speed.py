"""How many requests per second the emulator serves, so that poller benchmarks know they are not measuring it.

One process pinned to one core runs both the emulator and a keep-alive ``requests.Session`` client (so the figure
is a floor for a poller on one core), querying one job (``GET /inventorytriggerjob/<id>``, signature checked,
no faults). The request is signed once up front: this measures the emulator, not our signer. Writes the figure
under "## Emulator speed" in BENCHMARKS.md (only that section) unless ``--no-write``.

    .venv/bin/python bench/emulator_speed.py [--requests 3000] [--no-write]
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import sys
import time
from datetime import date
from pathlib import Path

import requests

from jobwatch.ci import signing
from jobwatch.emulator import EmulatorServer, Lifecycle

ROOT = Path(__file__).resolve().parent.parent
SECRET_ID, SECRET_KEY = "AKIDBENCHONLY000000000000000000000000", "bench-only-key-not-real"
BUCKET, HOST = "examplebucket-1250000000", "examplebucket-1250000000.ci.ap-guangzhou.myqcloud.com"


def headers_for(path: str) -> dict[str, str]:
    now = int(time.time())
    auth = signing.authorization(SECRET_ID, SECRET_KEY, "GET", path, {}, {"host": HOST}, now - 60, now + 3600)
    return {"Host": HOST, "Authorization": auth}


def measure(n: int) -> dict[str, float]:
    with EmulatorServer(credentials={SECRET_ID: SECRET_KEY}, seed=1, lifecycle=Lifecycle()) as srv:
        job_id = srv.preload(BUCKET, 100)[50]
        path = f"/inventorytriggerjob/{job_id}"
        headers = headers_for(path)
        out: dict[str, float] = {}
        with requests.Session() as s:
            for _ in range(200):
                s.get(srv.url + path, headers=headers, timeout=5)
            t0 = time.perf_counter()
            for _ in range(n):
                r = s.get(srv.url + path, headers=headers, timeout=5)
                if r.status_code != 200:
                    raise SystemExit(f"unexpected {r.status_code}: {r.text[:200]}")
            out["requests_session"] = n / (time.perf_counter() - t0)
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        t0 = time.perf_counter()
        for _ in range(n):
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise SystemExit(f"unexpected {resp.status}")
        out["http_client"] = n / (time.perf_counter() - t0)
        conn.close()
    return out


def write_section(text: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace (or append) the '## Emulator speed' section, leaving every other section as it is."""
    body = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Emulator speed\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(body):
        body = pattern.sub(lambda _: text, body)
    else:
        body = body.rstrip("\n") + "\n\n" + text
    path.write_text(body, encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    pinned = "not pinned"
    if hasattr(os, "sched_setaffinity"):
        core = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {core})
        pinned = f"pinned to core {core}"
    res = measure(args.requests)
    cores = os.cpu_count()
    section = (
        "## Emulator speed\n\n"
        f"Measured {date.today().isoformat()} with `.venv/bin/python bench/emulator_speed.py --requests "
        f"{args.requests}` (Python {platform.python_version()}, {cores} cores on the machine, the process "
        f"{pinned}: emulator and client share that one core). Query one job "
        "(`GET /inventorytriggerjob/<id>`), signature checked, no faults, one keep-alive connection:\n\n"
        "| client | requests/s |\n|---|---|\n"
        f"| `requests.Session` | {res['requests_session']:,.0f} |\n"
        f"| `http.client` | {res['http_client']:,.0f} |\n\n"
        "A poller benchmark on this machine that stays well below these rates is measuring the poller, not the "
        "emulator. Both sides run in one process, so the client's own cost is included; the emulator alone is "
        "faster. Without `wbufsize = -1` and `disable_nagle_algorithm` the same loop stalls 40 ms per request "
        "(about 25 requests/s, see pitfalls.md).\n"
    )
    print(section)
    if not args.no_write:
        write_section(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
