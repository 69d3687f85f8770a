"""``jobwatch children JOB_ID``: a batch job's children as recorded (its progress, the failed objects and why)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobwatch.cli.common import EXIT_NOT_FOUND, build_app, int_range, job_key_options, job_keys, no_store, print_json
from jobwatch.cli.output import Column, cut, render_table, state_colour, stdout_colour


def _cmd_children(args: argparse.Namespace) -> int:
    with build_app() as app:
        if no_store(app):
            return EXIT_NOT_FOUND
        (key,) = job_keys(app, args, tracked=True)
        if app.job(key) is None:
            print(f"{key} is not tracked", file=sys.stderr)
            return EXIT_NOT_FOUND
        page = app.children(key, failed_only=args.failed, limit=args.limit, cursor=args.cursor)
        if args.json:
            print_json([c.to_json() for c in page.items])
        else:
            p = page.progress
            head = p.text() if p is not None else "children not counted yet"
            pace = p.pace_text() if p is not None else None
            if pace:
                head += f"; {pace}"
            print(f"{key}: {head}")
            cols = [Column("CHILD", lambda c: c.child_id), Column("STATE", lambda c: c.state, colour=state_colour),
                    Column("OBJECT", lambda c: c.object_key or "-"), Column("CODE", lambda c: c.code or "-"),
                    Column("MESSAGE", lambda c: cut(c.message, 60) or "-")]
            print(render_table(cols, page.items, color=stdout_colour()))
        if page.cursor is not None:
            print(f"more: --cursor {page.cursor}", file=sys.stderr)
        return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("children", parents=[job_key_options(nargs=1)],
                              help="a batch job's children: progress, failed objects")
    p.add_argument("--failed", action="store_true", help="only the failed children")
    p.add_argument("--limit", type=int_range(1, 1000), default=100, help="children per page (1-1000, default 100)")
    p.add_argument("--cursor", default=None, help="the cursor a previous page printed, for the next page")
    p.add_argument("--json", action="store_true", help="a JSON list of children")
    p.set_defaults(func=_cmd_children)
