"""``jobwatch status`` (the table of tracked jobs) and ``history`` (one job's transitions)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobwatch.cli.common import build_app, job_keys, print_json, render_status_table


def _cmd_status(args: argparse.Namespace) -> int:
    with build_app() as app:
        st = app.status(active=True if args.active else None, limit=args.limit)
        if args.json:
            print_json([{**r.to_json(with_job=True),
                         "progress": st.progress[r.key].to_json() if r.key in st.progress else None}
                        for r in st.jobs])
        else:
            print(render_status_table(st.jobs, app.clock(), st.progress))
            print("\n" + ", ".join(f"{k}={v}" for k, v in sorted(st.counts.items())))
        return 0


def _cmd_history(args: argparse.Namespace) -> int:
    with build_app() as app:
        (key,) = job_keys(args)
        hist = app.history(key)
        if args.json:
            print_json([{"seq": h.seq, "from": h.from_state, "to": h.to_state,
                         "observed_at": h.observed_at.isoformat(),
                         "service_time": h.service_time.isoformat() if h.service_time else None,
                         "code": h.code, "message": h.message} for h in hist])
            return 0
        if app.job(key) is None:
            print(f"{key} is not tracked", file=sys.stderr)
            return 3
        for h in hist:
            extra = f"  {h.code}: {h.message}" if h.code or h.message else ""
            print(f"{h.seq:>3}  {h.observed_at.isoformat()}  {h.from_state or '-'} -> {h.to_state}{extra}")
        return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("status", help="table of tracked jobs")
    p.add_argument("--active", action="store_true", help="only jobs still polled")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)

    hist = argparse.ArgumentParser(add_help=False)
    hist.add_argument("job_ids", nargs=1, metavar="JOB_ID", help="job ID, or region/bucket/job_id")
    hist.add_argument("--bucket", default=None)
    hist.add_argument("--region", default=None)
    p = subparsers.add_parser("history", parents=[hist], help="a job's recorded transitions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_history)
