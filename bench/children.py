"""Batch children (issue 14): what tracking one batch of N children costs over its whole life, counted at the
emulator. Writes the "## Batch children" section of BENCHMARKS.md.

    .venv/bin/python bench/children.py            N = 10,000 and 100,000; writes BENCHMARKS.md
    .venv/bin/python bench/children.py --quick    N = 2,000 and 20,000; checks only (no write)

Each N runs in a fresh interpreter (``--worker N``): the emulator (manual clock) and the real App (SQLite store)
in one process, the App ticking every ``TICK`` emulated seconds with a budget of ``BUDGET`` wall seconds, until
the batch has ended and its children's final count is done. Counted per tick at the emulator: child-list
requests (``/jobs``); the children not final when the tick began (``active``); the tick's wall time. Checked:

* list requests over the life <= N/100 + sum over refreshes of (3 + ceil(active/100)): one pass over the
  children as they appear, and per refresh one request for each of its three lists (new, unfinished,
  failed/cancelled among the finished) plus the pages of the unfinished ones; never all N per tick;
* every tick ends within its budget, and no batch reads more than ``JOBWATCH_CHILDREN_MAX_PAGES`` pages a tick;
* the counts are exact (total N, failed = floor(N * 1%)), and the final notice carries them;
* memory stays flat: peak RSS (``VmHWM``) at the large N within 1.25x of the small N's.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT / "lib")]

SECTION = "## Batch children"
TICK = 60.0  # emulated seconds between ticks (the batch is polled every tick)
BUDGET = 4.0  # wall seconds per tick
MAX_PAGES = 50  # JOBWATCH_CHILDREN_MAX_PAGES
FAILURE_RATE = 0.01
RSS_RATIO = 1.25


def worker(n: int, span: float) -> dict:
    from datetime import datetime, timezone

    from common import BUCKET, REGION, SECRET_ID, SECRET_KEY
    from jobwatch.app.config import load_settings
    from jobwatch.app.logs import configure_logging
    from jobwatch.app.orchestrator import App
    from jobwatch.core.children import ChildKind
    from jobwatch.core.models import JobKey
    from jobwatch.emulator import EmulatorServer, Lifecycle, ManualClock
    from worker import _rss_mb

    clock = ManualClock(start=datetime(2026, 1, 1, tzinfo=timezone.utc))
    srv = EmulatorServer(host="127.0.0.1", port=0, credentials={SECRET_ID: SECRET_KEY}, clock=clock, seed=1,
                         lifecycle=Lifecycle(submitted_seconds=5, running_seconds=span, failure_ratio=0.0)).start()
    with tempfile.TemporaryDirectory(prefix="jobwatch-bench-children-") as tmp:
        env = {"JOBWATCH_STORE_URL": f"sqlite:///{tmp}/children.db", "JOBWATCH_CI_ENDPOINT": srv.url,
               "JOBWATCH_SECRET_ID": SECRET_ID, "JOBWATCH_SECRET_KEY": SECRET_KEY,
               "JOBWATCH_POLL_MIN_SECONDS": str(TICK), "JOBWATCH_POLL_MAX_SECONDS": str(TICK),
               "JOBWATCH_POLL_JITTER": "0", "JOBWATCH_SAFETY_MARGIN_SECONDS": "1", "JOBWATCH_LOG_LEVEL": "error",
               "JOBWATCH_NOTIFY": "log://", "JOBWATCH_CHILDREN_MAX_PAGES": str(MAX_PAGES),
               "JOBWATCH_HTTP_MAX_ATTEMPTS": "1"}
        configure_logging("error", "json", stream=sys.stderr)
        app = App(load_settings(env), environ=env, clock=clock.now)
        batch = srv.create_job(BUCKET, type="Job", children=n, child_failure_rate=FAILURE_RATE)
        key = JobKey(REGION, BUCKET, batch)
        rss_ready = _rss_mb()

        def lists() -> int:
            return sum(1 for r in srv.request_log if r.path == "/jobs")

        ticks = []
        t_start = time.perf_counter()
        for i in range(int(span / TICK) * 4 + 40):
            active = app.store.pending_children(key, ChildKind.JOB)[0]
            before = lists()
            t0 = time.perf_counter()
            if i == 0:  # registration polls at once (and reads the children, none yet)
                s = app.register([key], poll=True, budget=app.budget(BUDGET))
            else:
                clock.advance(TICK)
                active = app.store.pending_children(key, ChildKind.JOB)[0]
                s = app.tick(app.budget(BUDGET), discover=False, deliver=False)
            wall = time.perf_counter() - t0
            ticks.append({"active": active, "lists": lists() - before, "wall": wall,
                          "pages": s.children.pages, "batches": s.children.batches})
            p = app.progress(key)
            if p is not None and p.complete:
                break
        elapsed = time.perf_counter() - t_start
        p = app.progress(key)
        final = [e.notice for e in app.outbox_entries(limit=100) if e.notice.kind.value == "transition"
                 and e.notice.to_state == "Success"]
        out = {
            "n": n, "span": span, "ticks": ticks, "total_lists": lists(), "elapsed": elapsed,
            "progress": p.counts() if p else None, "complete": bool(p and p.complete),
            "final_notice_progress": final[0].payload().get("progress") if final else None,
            "rss_ready_mb": rss_ready, "rss_peak_mb": _rss_mb(),
        }
        app.close()
    srv.stop()
    return out


def run_one(n: int, span: float) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__)), "--worker", str(n), "--span", str(span)],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"worker N={n} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check(res: dict) -> tuple[dict, list[str]]:
    n = res["n"]
    refreshes = [t for t in res["ticks"] if t["batches"]]
    bound = n / 100 + sum(3 + math.ceil(t["active"] / 100) for t in refreshes)
    expected_failed = math.floor(n * FAILURE_RATE)
    figures = {
        "n": n, "ticks": len(res["ticks"]), "refreshes": len(refreshes), "lists": res["total_lists"],
        "one_pass": n / 100, "bound": bound, "ratio_one_pass": res["total_lists"] / (n / 100),
        "max_active": max(t["active"] for t in res["ticks"]),
        "max_lists_tick": max(t["lists"] for t in res["ticks"]),
        "max_wall": max(t["wall"] for t in res["ticks"]), "elapsed": res["elapsed"],
        "rss_peak_mb": res["rss_peak_mb"], "rss_ready_mb": res["rss_ready_mb"],
        "progress": res["progress"], "final_notice_progress": res["final_notice_progress"],
    }
    problems = []
    if not res["complete"]:
        problems.append(f"N={n}: the final count never completed")
    if res["total_lists"] > bound:
        problems.append(f"N={n}: {res['total_lists']} list requests > bound {bound:.0f}")
    if figures["max_lists_tick"] > MAX_PAGES + 1:  # the engine's own first listing aside, one batch per tick
        problems.append(f"N={n}: {figures['max_lists_tick']} list requests in one tick > {MAX_PAGES}")
    if figures["max_wall"] > BUDGET:
        problems.append(f"N={n}: a tick took {figures['max_wall']:.2f} s > budget {BUDGET} s")
    p = res["progress"] or {}
    if (p.get("total"), p.get("failed"), p.get("succeeded")) != (n, expected_failed, n - expected_failed):
        problems.append(f"N={n}: progress {p} is not total {n}, failed {expected_failed}")
    if res["final_notice_progress"] != p:
        problems.append(f"N={n}: the final notice carries {res['final_notice_progress']}, not {p}")
    return figures, problems


def section(small: dict, large: dict, command: str, total: float) -> str:
    rows = []
    for f in (small, large):
        rows.append(f"| {f['n']:,} | {f['lists']:,} | {f['one_pass']:,.0f} | {f['ratio_one_pass']:.2f} | "
                    f"{f['bound']:,.0f} | {f['refreshes']} | {f['max_active']:,} | {f['max_lists_tick']} | "
                    f"{f['max_wall']:.2f} s | {f['rss_peak_mb']:.1f} MB |")
    rss_ratio = large["rss_peak_mb"] / small["rss_peak_mb"]
    return (
        f"{SECTION}\n\nMeasured with `{command}` ({total:.0f} s). One `Type=Job` batch on the emulator whose "
        f"children are created over 80% of its Running time and each run up to 19% of it ({FAILURE_RATE:.0%} "
        f"fail); the App ticks every {TICK:.0f} emulated seconds with a {BUDGET:.0f} s budget and "
        f"`JOBWATCH_CHILDREN_MAX_PAGES={MAX_PAGES}`, SQLite store, until the batch ended and its final count was "
        "done. List requests are counted at the emulator over the batch's whole life.\n\n"
        "| children N | list requests | N/100 (one pass) | ratio | bound N/100 + Σ(3 + active/100) | "
        "refreshes | most active | most lists in a tick | slowest tick | peak RSS |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Memory is flat: peak RSS at {large['n']:,} children is {rss_ratio:.2f}x that at {small['n']:,} "
        f"(limit {RSS_RATIO}x). Counts exact in both runs (total, {FAILURE_RATE:.0%} failed) and carried by the "
        "final notice. What the bound means: every child is listed about once as it appears (N/100); each refresh "
        "then re-reads only the children still unfinished (the `active` column: waiting or running when the tick "
        "began; those it no longer lists have finished) and the failed or cancelled ones among those, and infers "
        "Success for the rest: one request per list plus the unfinished pages, never all N. A refresh stops at "
        "`JOBWATCH_CHILDREN_MAX_PAGES` or the budget and carries on next tick (the `most lists in a tick` column), "
        "so the ratio to one pass grows with how many children are unfinished at once, not with N.\n"
    )


def write_section(text: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    body = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^" + re.escape(SECTION) + r"\n.*?(?=^## |\Z)", re.S | re.M)
    body = pattern.sub(lambda _: text, body) if pattern.search(body) else body.rstrip("\n") + "\n\n" + text
    path.write_text(body, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--span", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.span)))
        return 0
    t0 = time.perf_counter()
    sizes = (2_000, 20_000) if args.quick else (10_000, 100_000)
    span = 1200.0 if args.quick else 3600.0
    figs, problems = [], []
    for n in sizes:
        print(f"-- batch children N={n:,} ...", file=sys.stderr, flush=True)
        f, p = check(run_one(n, span))
        figs.append(f)
        problems += p
        print(json.dumps(f), flush=True)
    if figs[1]["rss_peak_mb"] > RSS_RATIO * figs[0]["rss_peak_mb"]:
        problems.append(f"peak RSS {figs[1]['rss_peak_mb']:.1f} MB at N={sizes[1]} > {RSS_RATIO}x "
                        f"{figs[0]['rss_peak_mb']:.1f} MB at N={sizes[0]}")
    command = ".venv/bin/python bench/children.py" + (" --quick" if args.quick else "")
    text = section(figs[0], figs[1], command, time.perf_counter() - t0)
    print(text)
    if not args.quick and not args.no_write:
        write_section(text)
    for p in problems:
        print(f"MISSED: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
