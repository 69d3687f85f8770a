"""``jobwatch demo``: the main job on the local emulator: create jobs, track them, poll until all are final."""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from typing import Any

from jobwatch.app.config import sqlite_url
from jobwatch.cli.common import RUN, build_app, non_negative, positive, positive_int
from jobwatch.cli.output import state_colour, stdout_colour
from jobwatch.cli.status import render_status_table
from jobwatch.core.models import JobKey


def _cmd_demo(args: argparse.Namespace) -> int:
    """Start the emulator, create jobs on it through the real API, track them, poll until all are final."""
    from jobwatch.emulator import EmulatorServer, Lifecycle, SpeedClock
    from jobwatch.core.models import JobInput, JobOperation

    sid, skey = "AKIDdemo" + secrets.token_hex(12), secrets.token_hex(16)
    bucket, region = "demo-1250000000", "ap-guangzhou"
    srv = EmulatorServer(credentials={sid: skey}, clock=SpeedClock(args.speed), seed=args.seed,
                         lifecycle=Lifecycle(submitted_seconds=20, running_seconds=240, failure_ratio=0.25,
                                             jitter=0.5),
                         children=args.children, child_failure_rate=args.child_failure_rate).start()
    # The demo's jobs are not the operator's: its own store, unless one is asked for.
    store = args.store or sqlite_url(os.path.join(tempfile.mkdtemp(prefix="jobwatch-demo-"), "demo.db"))
    print(f"emulator at {srv.url} (time runs {args.speed:g}x); store {store}")
    color = stdout_colour()

    def paint(state: str | None) -> str:
        code = state_colour(state or "") if color else None
        return f"\x1b[{code}m{state}\x1b[0m" if code else str(state or "-")

    env = dict(os.environ)
    env.update({"JOBWATCH_CI_ENDPOINT": srv.url, "JOBWATCH_SECRET_ID": sid, "JOBWATCH_SECRET_KEY": skey,
                "JOBWATCH_POLL_MIN_SECONDS": "1", "JOBWATCH_POLL_MAX_SECONDS": "2",
                "JOBWATCH_LOG_LEVEL": env.get("JOBWATCH_LOG_LEVEL", "warning")})
    env["JOBWATCH_STORE_URL"] = store
    app = build_app(env)
    try:
        keys = []
        for i in range(args.jobs):
            if i % 2:
                op = JobOperation(tag="Transcode", queue_id="p" + "0" * 32, template_id="t" + "0" * 32)
                job = app.create_job(region, bucket, f"demo-{i}", JobInput(prefix=f"input/{i}/"), type="Job",
                                     operation=op)
            else:
                job = app.create_job(region, bucket, f"demo-{i}", JobInput(prefix=f"input/{i}/"), type="Workflow",
                                     operation=JobOperation(workflow_ids=("w" + "0" * 32,)))
            keys.append(JobKey(region, bucket, job.job_id))
        print(f"created {len(keys)} jobs; tracking them")
        app.register(keys, poll=True)
        seen: dict[JobKey, str | None] = {}
        stop_at = time.monotonic() + args.timeout
        while time.monotonic() < stop_at and not RUN.interrupted.is_set():
            app.tick(app.budget(10), discover=False)
            pending = 0
            progress = app.progress_of(keys)
            for k in keys:
                tj = app.job(k)
                p = progress.get(k)
                if tj.state != seen.get(k):
                    shown = f"  ({p.text()})" if p is not None and p.total else ""
                    print(f"  {k.job_id}: {seen.get(k) or '-'} -> {paint(tj.state)}{shown}", flush=True)
                    seen[k] = tj.state
                # a batch is done when it ended and its children's final count is in (its notice waits on it)
                pending += tj.active or (args.children > 0 and tj.state in ("Success", "Failed", "Cancel")
                                         and not (p is not None and p.complete))
            if not pending:
                break
            RUN.interrupted.wait(args.interval)
        records = [tj for tj in (app.job(k) for k in keys) if tj is not None]
        progress = app.progress_of(keys)
        print()
        print(render_status_table(records, app.clock(), progress=progress, color=color))
        for k in keys:
            failed = app.children(k, failed_only=True, limit=3).items
            if failed:
                p = progress.get(k)
                more = f" (of {p.failed:,})" if p is not None and p.failed > len(failed) else ""
                print(f"\n{k.job_id}: failed objects{more}:")
                for c in failed:
                    print(f"  {c.object_key or c.child_id}  {c.code or ''}: {c.message or ''}")
        done = sum(not r.active for r in records)
        delivered = sum(1 for e in app.outbox_entries(limit=100000) if e.status == "done"
                        and e.notice.key in set(keys))
        print(f"\n{done}/{len(keys)} jobs final; {delivered} notices delivered")
        print(f"see them on the status page: JOBWATCH_STORE_URL={store} jobwatch serve, then open "
              "http://127.0.0.1:8765/ui")
        return 0 if done == len(keys) else 1
    finally:
        app.close()
        srv.stop()


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="the main job on the local emulator: create, track, poll to the end",
                              description="Start an emulator, create jobs on it through the API, track them and "
                                          "poll until every one is final. Uses its own store (a new temporary "
                                          "SQLite file), never yours, unless --store.")
    p.add_argument("--jobs", type=positive_int, default=6, help="jobs to create (default 6)")
    p.add_argument("--speed", type=positive, default=40.0, help="emulated time runs this many times faster")
    p.add_argument("--seed", type=int, default=7, help="the emulator's random seed (which jobs fail)")
    p.add_argument("--interval", type=non_negative, default=0.5, help="seconds between ticks")
    p.add_argument("--timeout", type=non_negative, default=120.0, help="give up after this many seconds")
    p.add_argument("--children", type=int, default=200, help="objects (children) per batch job")
    p.add_argument("--child-failure-rate", type=float, default=0.05, help="share of the children that fail")
    p.add_argument("--store", default=None, help="store URL (default: a new temporary SQLite file)")
    p.set_defaults(func=_cmd_demo, cooperative=True)
