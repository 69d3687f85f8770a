"""``jobwatch children JOB_ID``: a batch job's children as recorded (its progress, the failed objects and why)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobwatch.cli.common import EXIT_NOT_FOUND, build_app, job_keys, print_json


def _cmd_children(args: argparse.Namespace) -> int:
    with build_app() as app:
        (key,) = job_keys(args)
        if app.job(key) is None:
            print(f"{key} is not tracked", file=sys.stderr)
            return EXIT_NOT_FOUND
        page = app.children(key, failed_only=args.failed, limit=args.limit, cursor=args.cursor)
        if args.json:
            print_json([c.to_json() for c in page.items])
        else:
            p = page.progress
            print(f"{key}: {p.text() if p is not None else 'children not counted yet'}")
            rows = [("CHILD", "STATE", "OBJECT", "CODE", "MESSAGE")]
            rows += [(c.child_id, c.state, c.object_key or "-", c.code or "", (c.message or "")[:60])
                     for c in page.items]
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
            print("\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows))
        if page.cursor is not None:
            print(f"more: --cursor {page.cursor}", file=sys.stderr)
        return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("children", help="a batch job's children: progress, failed objects")
    p.add_argument("job_ids", nargs=1, metavar="JOB_ID", help="job ID, or region/bucket/job_id")
    p.add_argument("--bucket", default=None, help="bucket <name>-<APPID> (default $JOBWATCH_DEFAULT_BUCKET)")
    p.add_argument("--region", default=None, help="region, e.g. ap-guangzhou (default $JOBWATCH_DEFAULT_REGION)")
    p.add_argument("--failed", action="store_true", help="only the failed children")
    p.add_argument("--limit", type=int, default=100, help="children per page (1-1000, default 100)")
    p.add_argument("--cursor", default=None, help="the cursor a previous page printed, for the next page")
    p.add_argument("--json", action="store_true", help="a JSON list of children")
    p.set_defaults(func=_cmd_children)
