"""How fast the status page renders on the server: the overview of 10,000 tracked jobs (the budget is 300 ms), a
filtered overview, the largest page, and one job, through the same ``jobwatch.web.handle`` call both front doors
make (signed session cookie checked, every store query, the whole HTML built). Side by side in the same run: the
same requests over 1,000 jobs, which shows how the cost grows with the number of jobs (it should barely: the
store returns one page, counts and filter values, not every job), and ``App.overview`` alone (the store's
share). SQLite always; MariaDB with ``--mysql`` (needs the server on 127.0.0.1:3306).

Writes the "## Status page" section of BENCHMARKS.md (only that section) unless ``--no-write``; exits 1 when
the 10,000-job overview takes longer than the budget (median).

    .venv/bin/python bench/status_page.py [--jobs 10000] [--repeat 15] [--mysql] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the same store contents the page's tests use

from common import write_section  # noqa: E402
from fixtures.webdata import populate  # noqa: E402

from jobwatch.app.config import load_settings  # noqa: E402
from jobwatch.app.orchestrator import App  # noqa: E402
from jobwatch.core.records import JobQuery  # noqa: E402
from jobwatch.store import open_store  # noqa: E402
from jobwatch.web import WebRequest, handle  # noqa: E402

BUDGET_MS = 300.0
KEY = "bench-only-status-page-key"


def _median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm: first-use imports and caches
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def measure(url: str, jobs: int, repeat: int) -> dict[str, float]:
    store = open_store(url)
    store.migrate()
    data = populate(store, jobs, dead=20)
    app = App(load_settings({"JOBWATCH_STORE_URL": url, "JOBWATCH_API_KEY": KEY}), store=store,
              clock=lambda: data.now)
    login = handle(app, WebRequest("POST", "/ui/login", body=urlencode({"api_key": KEY}).encode()))
    cookie = {"cookie": login.headers["Set-Cookie"].split(";")[0]}
    k = data.keys[1]

    def get(path: str, **query: str) -> Callable[[], None]:
        def run() -> None:
            r = handle(app, WebRequest("GET", path, query, cookie))
            assert r.status == 200 and len(r.body) > 1000, (r.status, path)
        return run

    out = {
        "overview": _median_ms(get("/ui"), repeat),
        "filtered": _median_ms(get("/ui", state="Failed", tag="team=media"), repeat),
        "last_page_500": _median_ms(get("/ui", per="500", page=str(max(jobs // 500, 1))), repeat),
        "job": _median_ms(get(f"/ui/jobs/{k.job_id}", region=k.region, bucket=k.bucket), repeat),
        "store_only": _median_ms(lambda: app.overview(JobQuery()), repeat),
    }
    app.close()
    return out


def _mysql_url() -> tuple[str, Callable[[], None]]:
    import pymysql

    name = f"jw_bench_{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")

    def drop() -> None:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()

    return f"mysql://root@127.0.0.1:3306/{name}", drop


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--small", type=int, default=1000, help="the side-by-side run's job count")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--mysql", action="store_true", help="also measure on MariaDB/MySQL at 127.0.0.1:3306")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows: list[tuple[str, int, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.small, args.jobs):
            rows.append(("SQLite", n, measure(f"sqlite:///{tmp}/jw-{n}.db", n, args.repeat)))
    if args.mysql:
        for n in (args.small, args.jobs):
            url, drop = _mysql_url()
            try:
                rows.append(("MariaDB", n, measure(url, n, args.repeat)))
            finally:
                drop()
    cmd = "bench/status_page.py" + (" --mysql" if args.mysql else "")
    lines = [
        "## Status page\n",
        f"Measured {date.today().isoformat()} with `.venv/bin/python {cmd}` (Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, shared). Median of {args.repeat} server-side renders through "
        "`jobwatch.web.handle` (session cookie checked, every store query, the whole page built; no network). "
        "Store contents: tests/fixtures/webdata.py (every state, history, stalled and erroring jobs, 20 dead "
        f"letters). Budget: the {args.jobs:,}-job overview under {BUDGET_MS:.0f} ms.\n",
        "| store | jobs | overview (100 rows) | filtered (state + tag) | 500-row last page | one job "
        "| `App.overview` alone |",
        "|---|---|---|---|---|---|---|",
    ]
    for store, n, r in rows:
        lines.append(f"| {store} | {n:,} | {r['overview']:.1f} ms | {r['filtered']:.1f} ms | "
                     f"{r['last_page_500']:.1f} ms | {r['job']:.1f} ms | {r['store_only']:.1f} ms |")
    small = {s: r for s, n, r in rows if n == args.small}
    big = {s: r for s, n, r in rows if n == args.jobs}
    ratios = ", ".join(f"{s} {big[s]['overview'] / small[s]['overview']:.1f}x" for s in big)
    lines.append("")
    lines.append(f"{args.jobs // args.small}x the jobs costs the overview {ratios}: the page reads one page of rows "
                 "plus counts and filter values; what grows is the SQL that counts and sorts the matching jobs "
                 "(no index serves the problems-first order).\n")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(text, "## Status page")
    worst = max(r["overview"] for _, n, r in rows if n == args.jobs)
    if worst > BUDGET_MS:
        print(f"over budget: {worst:.0f} ms > {BUDGET_MS:.0f} ms", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
