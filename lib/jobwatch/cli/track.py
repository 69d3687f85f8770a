"""``jobwatch track`` and ``untrack``: start and stop watching jobs."""

from __future__ import annotations

import argparse
from typing import Any

from jobwatch.cli.common import build_app, job_key_options, job_keys, print_json
from jobwatch.core.errors import ValidationError


def _tags(items: list[str] | None) -> dict[str, str]:
    tags = {}
    for item in items or ():
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ValidationError("tag", item, "expected key=value")
        tags[k] = v
    return tags


def _cmd_track(args: argparse.Namespace) -> int:
    with build_app() as app:
        s = app.register(job_keys(args), tags=_tags(args.tag), poll=not args.no_poll)
        print_json(s.as_dict()) if args.json else print(
            f"tracking {s.registered} new, {s.already_tracked} already tracked; polled {s.tick.polled}, "
            f"{s.tick.transitions} transitions")
        return 0 if not s.tick.errors else 1


def _cmd_untrack(args: argparse.Namespace) -> int:
    with build_app() as app:
        print(f"untracked {app.untrack(job_keys(args))} job(s)")
        return 0


def register(subparsers: Any) -> None:
    keys = job_key_options()
    p = subparsers.add_parser("track", parents=[keys], help="start watching jobs (and poll them now)")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE", help="tag for routing and stall rules")
    p.add_argument("--no-poll", action="store_true", help="only register; the next tick polls them")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_track)

    p = subparsers.add_parser("untrack", parents=[keys], help="stop watching jobs (history is kept)")
    p.set_defaults(func=_cmd_untrack)
