"""Bulk refresh (issue 17): a steady tick that lists a bucket's due jobs (up to 100 per request) beside today's
per-job path (one ``GET /inventorytriggerjob/<id>`` per job), side by side in one run, same emulator, same
concurrency, the same store contents (each store is primed with one observation of every job, then every job is
made due). Each tick runs in a fresh interpreter (``worker.py tick``) with the production wiring; the per-job path
is the same App with ``JOBWATCH_BULK_REFRESH=0``. The emulator runs in its own process on its own core, and its
list API waits as long as a query does.

    .venv/bin/python bench/refresh.py            full run, writes the "## Bulk refresh" section of BENCHMARKS.md
    .venv/bin/python bench/refresh.py --quick    CI-sized (also run by ``bench/run --quick``)
    .venv/bin/python bench/refresh.py --zero-only    only the 0 ms rows (SQLite, MariaDB); writes nothing
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Sequence

import common
from common import (
    REGION, ROOT, SECRET_ID, SECRET_KEY, Check, Emulator, Result, core_split, default_concurrency, machine_line,
    run_worker, settings_env,
)

SECTION = "## Bulk refresh"
MYSQL = "mysql://root@127.0.0.1:3306"


def ActiveEmulator(jobs: int, latency: float, buckets: int = 1, core: int | None = None) -> Emulator:
    """The emulator with ``jobs`` jobs that stay under way, dealt over ``buckets`` buckets, latency on lists too."""
    return Emulator(jobs, latency, core, active_only=True, buckets=buckets, list_latency=True)


def prime(store_url: str, emu_url: str, buckets: Sequence[str]) -> int:
    """Track every job of ``buckets`` and record one observation of each (read from listings, page by page, so
    the setup holds one page at a time), then make every job due: the state a steady tick starts from."""
    from jobwatch.ci.client import CIClient
    from jobwatch.ci.credentials import StaticProvider
    from jobwatch.store import open_store

    start = datetime.now(timezone.utc)
    later = start + timedelta(hours=1)
    store = open_store(store_url)
    client = CIClient(StaticProvider(SECRET_ID, SECRET_KEY), endpoint=emu_url)
    n = 0
    try:
        store.migrate()
        for bucket in buckets:
            page: list[Any] = []
            for job in client.list_jobs(bucket, REGION, size=100):
                page.append(job)
                if len(page) == 100:  # tracked a page at a time, a moment apart, as discovery tracks them
                    n += _record(store, bucket, page, start - timedelta(seconds=1) + timedelta(microseconds=n),
                                 start, later)
                    page = []
            if page:
                n += _record(store, bucket, page, start - timedelta(seconds=1) + timedelta(microseconds=n), start,
                             later)
    finally:
        client.close()
        store.close()
    make_due(store_url)  # the priming set them an hour out
    return n


def make_due(store_url: str) -> None:
    """Every tracked job due now (what a tick of this benchmark starts from)."""
    from jobwatch.store import open_store

    store = open_store(store_url)
    try:
        with store._tx() as cur:
            store._exec(cur, "UPDATE jw_jobs SET next_poll_at=?", (time.time() - 1,))
    finally:
        store.close()


def _record(store: Any, bucket: str, jobs: list[Any], tracked: datetime, now: datetime, later: datetime) -> int:
    from jobwatch.core.models import JobKey
    from jobwatch.core.records import PollRecord

    by_id = {j.job_id: j for j in jobs}
    keys = [JobKey(REGION, bucket, j.job_id) for j in jobs]
    store.track(keys, tracked)
    claimed = store.claim_due("bench-prime", now, 600, len(keys), keys=keys)
    recs = [PollRecord(tj, tj.evolve(state=by_id[tj.key.job_id].state_raw, job=by_id[tj.key.job_id], last_seen=now,
                                     last_change=now, next_poll_at=later, poll_interval=3600.0, transitions=1))
            for tj in claimed]
    return sum(store.record_polls("bench-prime", recs))


def _mysql_db() -> tuple[str, Any]:
    import pymysql

    name = f"jw_bench_{uuid.uuid4().hex[:10]}"
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    return f"{MYSQL}/{name}", (conn, name)


def _drop(handle: Any) -> None:
    conn, name = handle
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
    conn.close()


def _tick(url: str, emu: Emulator, bulk: bool, core: int | None, **cfg: Any) -> dict[str, Any]:
    env = settings_env(url, emu.url, JOBWATCH_BULK_REFRESH="1" if bulk else "0")
    return run_worker("tick", {"env": env, **cfg}, core=core, timeout=1200)


def _pair(emu: Emulator, n: int, store: str, tmp: Path, me: int | None, label: str,
          runs: int = 1) -> dict[str, Any]:
    """Prime two identical stores, then tick each path ``runs`` times, alternating (per-job, bulk, bulk, per-job,
    ...), every job due again before each tick; the fastest tick of each path counts (the machine is shared).
    Every tick must poll every job, with no error."""
    buckets = sorted({b for b, _ in emu.keys})
    out: dict[str, Any] = {"label": label, "n": n}
    handles = []
    try:
        urls = {}
        for path in ("single", "list"):
            if store == "mysql":
                urls[path], h = _mysql_db()
                handles.append(h)
            else:
                urls[path] = f"sqlite:///{tmp / f'{label}-{path}.db'}"
            primed = prime(urls[path], emu.url, buckets)
            if primed != n:
                raise RuntimeError(f"{label}: primed {primed} of {n} jobs")
        for r in range(runs):
            for path in (("single", "list") if r % 2 == 0 else ("list", "single")):
                if r:
                    make_due(urls[path])
                res = _tick(urls[path], emu, path == "list", me)
                if res["polled"] != n or res["errors"] or res["lease_lost"]:
                    raise RuntimeError(f"{label} {path}: polled {res['polled']} of {n}, {res['errors']} errors, "
                                       f"{res['lease_lost']} leases lost")
                if path not in out or res["tick_s"] < out[path]["tick_s"]:
                    out[path] = res
    finally:
        for h in handles:
            _drop(h)
    return out


def _row(p: dict[str, Any]) -> str:
    s, li = p["single"], p["list"]
    return (f"| {p['label']} | {s['tick_s']:.2f} s | {s['requests']:,} | {li['tick_s']:.2f} s | {li['requests']:,} "
            f"| {', '.join(li['paths'])} | {s['tick_s'] / li['tick_s']:.1f}x | {s['requests'] / li['requests']:.0f}x |")


def _carry_on(emu: Emulator, n: int, tmp: Path, me: int | None, budget: float) -> dict[str, Any]:
    """One full tick of ``n`` jobs (peak RSS), then the same ``n`` due again and handled by invocations of
    ``budget`` seconds each until none is left: every job polled exactly once across them."""
    from jobwatch.store import open_store

    url = f"sqlite:///{tmp / 'carry.db'}"
    if prime(url, emu.url, sorted({b for b, _ in emu.keys})) != n:
        raise RuntimeError("carry-on: priming fell short")
    full = _tick(url, emu, True, me)
    if full["polled"] != n or full["errors"]:
        raise RuntimeError(f"full tick of {n}: polled {full['polled']}, {full['errors']} errors")
    make_due(url)
    runs = []
    while len(runs) < 50:
        res = _tick(url, emu, True, me, budget_s=budget)
        runs.append(res)
        if res["left"] == 0:
            break
    store = open_store(url)
    with store._tx(write=False) as cur:
        store._exec(cur, "SELECT polls, COUNT(*) FROM jw_jobs GROUP BY polls")
        polls = {int(p): int(c) for p, c in cur.fetchall()}
    store.close()
    return {"full": full, "runs": runs, "polls": polls}


def run_zero(runs: int = 2) -> Result:
    """Only the 0 ms rows (SQLite and MariaDB), for iterating on the CPU cost of a bulk tick; writes nothing."""
    me, emu_core = core_split()
    t_start = time.perf_counter()
    n = 10_000
    with tempfile.TemporaryDirectory(prefix="jobwatch-refresh-") as tmpdir:
        tmp = Path(tmpdir)
        with ActiveEmulator(n, 0.0, core=emu_core) as emu:
            pairs = [_pair(emu, n, "sqlite", tmp, me, f"{n:,} jobs, 1 bucket, 0 ms, SQLite", runs),
                     _pair(emu, n, "mysql", tmp, me, f"{n:,} jobs, 1 bucket, 0 ms, MariaDB", runs)]
    body = ["| scenario | per-job tick | requests | bulk tick | requests | bulk path | speed-up | fewer requests |",
            "|---|---|---|---|---|---|---|---|"] + [_row(p) for p in pairs]
    body += ["", "CPU per job: " + "; ".join(f"{p['label']}: per-job {p['single']['cpu_s'] * 1e3 / n:.3f} ms, bulk "
                                           f"{p['list']['cpu_s'] * 1e3 / n:.3f} ms" for p in pairs)]
    checks = [Check(f"bulk vs per-job time, {p['label']}", p["single"]["tick_s"] / p["list"]["tick_s"], ">=", 5.0)
              for p in pairs]
    return Result("Bulk refresh vs per-job path, 0 ms only", ".venv/bin/python bench/refresh.py --zero-only",
                  "\n".join(body) + "\n", checks, time.perf_counter() - t_start)


def run(quick: bool) -> Result:
    me, emu_core = core_split()
    conc = default_concurrency()
    t_start = time.perf_counter()
    n_big = 2000 if quick else 10_000
    latency = 0.02 if quick else 0.05
    runs = 1 if quick else 2
    pairs = []
    with tempfile.TemporaryDirectory(prefix="jobwatch-refresh-") as tmpdir:
        tmp = Path(tmpdir)
        with ActiveEmulator(n_big, latency, core=emu_core) as emu:
            pairs.append(_pair(emu, n_big, "sqlite", tmp, me, f"{n_big:,} jobs, 1 bucket, {latency * 1000:.0f} ms",
                               runs))
        with ActiveEmulator(n_big, 0.0, core=emu_core) as emu:
            pairs.append(_pair(emu, n_big, "sqlite", tmp, me, f"{n_big:,} jobs, 1 bucket, 0 ms, SQLite", runs))
            if not quick:
                pairs.append(_pair(emu, n_big, "mysql", tmp, me, f"{n_big:,} jobs, 1 bucket, 0 ms, MariaDB", runs))
        n_spread, n_buckets = (1000, 200)
        with ActiveEmulator(n_spread, latency, buckets=n_buckets, core=emu_core) as emu:
            pairs.append(_pair(emu, n_spread, "sqlite", tmp, me,
                               f"{n_spread:,} jobs, {n_buckets} buckets of 5, {latency * 1000:.0f} ms", runs))
        carry = None
        if not quick:
            n_huge = 100_000
            with ActiveEmulator(n_huge, 0.0, core=emu_core) as emu:
                carry = _carry_on(emu, n_huge, tmp, me, budget=12.0)
    lat, zero = pairs[0], pairs[1]
    spread = pairs[-1]
    body = [
        f"Steady ticks (every tracked job observed once before and due now; jobs stay under way, 40 % of them "
        f"`Type=Job`, one a second apart) at concurrency {conc} (the default), per-job path vs bulk refresh, "
        "each in a fresh interpreter with the production wiring (JSON logs, no delivery). Requests are the "
        "tick's own count (queries + list pages).",
        "",
        "| scenario | per-job tick | requests | bulk tick | requests | bulk path | speed-up | fewer requests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    body += [_row(p) for p in pairs]
    checks = [
        Check(f"bulk vs per-job time, {lat['label']}", lat["single"]["tick_s"] / lat["list"]["tick_s"], ">=",
              1.5 if quick else 10.0),
        Check(f"bulk requests x 50 / N, {lat['label']}", lat["list"]["requests"] * 50 / n_big, "<=", 1.0),
        Check(f"bulk vs per-job time, {zero['label']}", zero["single"]["tick_s"] / zero["list"]["tick_s"], ">=",
              1.0 if quick else 5.0),
        Check(f"bulk vs per-job time, {spread['label']} (no slower)",
              spread["single"]["tick_s"] / spread["list"]["tick_s"], ">=", 0.6 if quick else 0.9),
        Check(f"bulk requests / per-job requests, {spread['label']}",
              spread["list"]["requests"] / spread["single"]["requests"], "<=", 1.0),
    ]
    if not quick:
        my = pairs[2]
        checks.insert(3, Check(f"bulk vs per-job time, {my['label']}", my["single"]["tick_s"] / my["list"]["tick_s"],
                               ">=", 5.0))
    checks.append(Check(f"buckets listed, {spread['label']} (the cost rule must query 5 jobs one by one)",
                        float("list" in spread["list"]["paths"]), "<=", 0.0, ""))
    body += ["", f"The fastest of {runs} alternating tick(s) per path counts. The per-job path sends one request per job; bulk refresh lists each bucket's due jobs in windows "
             f"of creation time per type, paged in parallel. With {n_spread // n_buckets} due jobs per bucket the "
             "cost rule queries them one by one (path `single`), so that row compares the same work."]
    zero_rows = [p for p in pairs if ", 0 ms" in p["label"]]
    if not quick and any(p["single"]["tick_s"] / p["list"]["tick_s"] < 5.0 for p in zero_rows):
        cpu = "; ".join(f"{p['label'].split(', ')[-1]}: per-job {p['single']['cpu_s'] * 1e3 / p['n']:.2f} ms, bulk "
                        f"{p['list']['cpu_s'] * 1e3 / p['n']:.2f} ms (tick {p['list']['tick_s']:.2f} s, "
                        f"{p['list']['requests']} requests)" for p in zero_rows)
        body += ["", "Closing note on the 0 ms rows: without latency both ticks are CPU-bound on the one core they "
                 "run on, except the MariaDB bulk tick, which also waits for the server (its CPU per job times N is "
                 f"well under its tick); CPU per job, {cpu}. What bulk refresh removes is the per-job HTTP round trip (signing, "
                 "requests, one small parse); what stays per job is parsing it out of a 100-job page, the light "
                 "claim, the decision and the steady write. On MariaDB the claim and the steady write are one UPDATE "
                 "per 500 rows (a derived table of the rows joined to jw_jobs by primary key, rows sorted by it: "
                 "no deadlock between pollers in bench/scaleout.py); on SQLite the largest single items left are "
                 "re-serialising each listed job to compare it with the stored JSON and parsing it out of its page. "
                 "Issue 17 measured the per-job path at about 15 s (SQLite) and 31 s (MariaDB) for 10,000 jobs; "
                 "it has become faster since (this run: "
                 + ", ".join(f"{p['single']['tick_s']:.1f} s" for p in zero_rows) + "), which is what the ratio "
                 "is taken against."]
    if carry is not None:
        full, runs, polls = carry["full"], carry["runs"], carry["polls"]
        per_run = ", ".join(f"{r['polled']:,}" for r in runs)
        body += ["", f"**100,000 jobs** (SQLite, 0 ms): one bulk tick took {full['tick_s']:.1f} s with "
                 f"{full['requests']:,} requests; peak RSS {full['rss_peak_mb']:.1f} MB "
                 f"(App built: {full['rss_ready_mb']:.1f} MB). Then every job due again and handled by invocations "
                 f"with a 12 s budget (the engine stops 5 s before it): {len(runs)} invocations polled {per_run} "
                 f"jobs; `left` after the last: {runs[-1]['left']}. Polls per job afterwards (1 priming + 2 ticks "
                 f"= 3 for every job): {polls}."]
        checks.append(Check("peak RSS of one bulk tick over 100,000 jobs", full["rss_peak_mb"], "<=", 100.0, " MB"))
        exact = polls == {3: 100_000} and sum(r["polled"] for r in runs) == 100_000 and runs[-1]["left"] == 0
        checks.append(Check("jobs polled other than exactly once across the budgeted invocations",
                            0.0 if exact else float(100_000 - polls.get(3, 0)), "<=", 0.0, ""))
    command = ".venv/bin/python bench/refresh.py" + (" --quick" if quick else "")
    return Result("Bulk refresh vs per-job path", command, "\n".join(body) + "\n", checks,
                  time.perf_counter() - t_start)


def write_section(res: Result, total: float, path: Path = ROOT / "BENCHMARKS.md") -> None:
    text = (f"{SECTION}\n\nMeasured with `{res.command}` on {machine_line()}; took {total:.0f} s. "
            "`bench/run --quick` (CI) runs the same comparison with fewer jobs and looser limits and fails when the "
            "bulk tick's requests exceed N/50 (a regression to one request per job).\n\n" + res.markdown())
    common.write_section(text, SECTION, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/refresh.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--zero-only", action="store_true",
                    help="only the 0 ms rows (SQLite, MariaDB), 2 ticks per path; writes nothing")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = run_zero() if args.zero_only else run(args.quick)
    print(res.markdown())
    if not args.quick and not args.no_write and not args.zero_only:
        write_section(res, time.perf_counter() - t0)
    missed = [c for c in res.checks if not c.ok]
    for c in res.checks:
        print(c.text())
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
