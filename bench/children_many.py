"""The children of many batches at real latency: a steady tick refreshes the children of up to 100 polled batches.
Read one batch after another, each page's latency adds up (100 batches at 50 ms: 5 s of every invocation); read
side by side within the engine's request limit, it does not. Both ways run in one process on one emulator, on the
same store, alternating (the emulator's clock moves a second between refreshes, so a page more or less may
appear), and every child created must end up counted. Writes the "## Children of many
batches" section of BENCHMARKS.md.

    .venv/bin/python bench/children_many.py            100 batches, 50 ms a children page; writes BENCHMARKS.md
    .venv/bin/python bench/children_many.py --quick    30 batches; checks only (no write)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT / "lib")]

SECTION = "## Children of many batches"
LATENCY = 0.05  # seconds per children page (GET /jobs), as for a query in the other benchmarks
TARGET = 5.0  # side by side at least this many times faster than one after another


def measure(batches: int, runs: int) -> dict:
    from datetime import datetime, timezone

    from common import BUCKET, REGION, SECRET_ID, SECRET_KEY
    from jobwatch.app.config import load_settings
    from jobwatch.app.logs import configure_logging
    from jobwatch.app.orchestrator import App
    from jobwatch.core.models import JobKey
    from jobwatch.emulator import EmulatorServer, FaultRule, Lifecycle, ManualClock

    clock = ManualClock(start=datetime(2026, 1, 1, tzinfo=timezone.utc))
    srv = EmulatorServer(host="127.0.0.1", port=0, credentials={SECRET_ID: SECRET_KEY}, clock=clock, seed=1,
                         lifecycle=Lifecycle(submitted_seconds=5, running_seconds=3600, failure_ratio=0.0)).start()
    out: dict = {"batches": batches, "latency": LATENCY, "runs": runs}
    try:
        with tempfile.TemporaryDirectory(prefix="jobwatch-bench-children-many-") as tmp:
            env = {"JOBWATCH_STORE_URL": f"sqlite:///{tmp}/children.db", "JOBWATCH_CI_ENDPOINT": srv.url,
                   "JOBWATCH_SECRET_ID": SECRET_ID, "JOBWATCH_SECRET_KEY": SECRET_KEY,
                   "JOBWATCH_LOG_LEVEL": "error", "JOBWATCH_NOTIFY": "log://", "JOBWATCH_HTTP_MAX_ATTEMPTS": "1"}
            configure_logging("error", "json", stream=sys.stderr)
            app = App(load_settings(env), environ=env, clock=clock.now)
            ids = [srv.create_job(BUCKET, type="Job", children=40, child_failure_rate=0.05) for _ in range(batches)]
            keys = [JobKey(REGION, BUCKET, i) for i in ids]
            app.register(keys, poll=True)
            clock.advance(5 + 600)  # under way, their children appearing and ending
            app.engine.tick()
            refresher = app.children_refresher
            parallel_limit = refresher.limit
            out["concurrency"] = parallel_limit.ceiling if parallel_limit is not None else 1
            srv.set_faults([FaultRule("latency", path="/jobs", latency=LATENCY)])
            times: dict[str, list[float]] = {"sequential": [], "parallel": []}
            pages: dict[str, list[int]] = {"sequential": [], "parallel": []}
            for r in range(runs + 1):  # the first round reads what appeared; only the later ones are measured
                for mode in (("sequential", "parallel") if r % 2 == 0 else ("parallel", "sequential")):
                    clock.advance(1)
                    app.store.request_children_refresh(keys, clock.now())
                    refresher.limit = None if mode == "sequential" else parallel_limit
                    t0 = time.perf_counter()
                    res = refresher.refresh()
                    took = time.perf_counter() - t0
                    if res.batches != batches or res.errors or res.lease_lost:
                        raise RuntimeError(f"{mode}: {res}")
                    if r:
                        times[mode].append(took)
                        pages[mode].append(res.pages)
            refresher.limit = parallel_limit
            counts = [app.progress(k).counts() for k in keys]
            truth = [sum(1 for _ in srv.child_views(BUCKET, i)) for i in ids]
            out.update(times=times, pages=pages, counted=sum(c["total"] for c in counts), truth=sum(truth))
            app.close()
    finally:
        srv.stop()
    return out


def section(res: dict, command: str) -> str:
    s, p = min(res["times"]["sequential"]), min(res["times"]["parallel"])
    return (
        f"{SECTION}\n\nCommand: `{command}`\n\n"
        f"A steady tick refreshes the children of up to 100 polled batches. {res['batches']} batches, "
        f"{res['latency'] * 1000:.0f} ms per children page (`GET /jobs`), SQLite, one process; each way run "
        f"{res['runs']} times, alternating, on the same store (the fastest counts):\n\n"
        "| batches | one after another | side by side (limit "
        f"{res['concurrency']}) | speed-up | pages per refresh (one after another / side by side) |\n"
        "|---|---|---|---|---|\n"
        f"| {res['batches']} | {s:.2f} s | {p:.2f} s | {s / p:.1f}x | "
        f"{', '.join(map(str, res['pages']['sequential']))} / {', '.join(map(str, res['pages']['parallel']))} |\n\n"
        f"Children counted at the end: {res['counted']:,} of the {res['truth']:,} the emulator had created.\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    res = measure(30 if args.quick else 100, 2 if args.quick else 3)
    command = ".venv/bin/python bench/children_many.py" + (" --quick" if args.quick else "")
    text = section(res, command)
    print(text)
    problems = []
    if res["counted"] != res["truth"]:
        problems.append(f"children counted {res['counted']} of {res['truth']}")
    ratio = min(res["times"]["sequential"]) / min(res["times"]["parallel"])
    if ratio < TARGET:
        problems.append(f"side by side only {ratio:.1f}x faster (target >= {TARGET}x)")
    if not args.quick:
        from common import write_section

        write_section(text, SECTION)
    for p in problems:
        print(f"MISSED: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
