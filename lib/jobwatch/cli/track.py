"""``jobwatch track`` and ``untrack``: start and stop watching jobs."""

from __future__ import annotations

import argparse
from typing import Any

from jobwatch.cli.common import (EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_OK, build_app, err, job_key_options, job_keys,
                                 no_store, print_json)
from jobwatch.core.errors import ValidationError


def _tags(items: list[str] | None) -> dict[str, str]:
    tags = {}
    for item in items or ():
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ValidationError("--tag", item, "expected key=value")
        tags[k] = v
    return tags


def _cmd_track(args: argparse.Namespace) -> int:
    with build_app() as app:
        s = app.track(job_keys(app, args, tracked=False), tags=_tags(args.tag), poll=not args.no_poll,
                      force=args.force)
        for k in s.not_found:
            err(f"job {k.job_id} does not exist in {k.bucket} ({k.region}); not tracked (--force tracks it anyway)")
        if args.json:
            print_json(s.as_dict())
        elif s.registered or s.already_tracked or not s.not_found:
            print(f"tracking {s.registered} new, {s.already_tracked} already tracked; polled {s.tick.polled}, "
                  f"{s.tick.transitions} transitions")
        if s.not_found:
            return EXIT_NOT_FOUND
        return EXIT_OK if not s.tick.errors else EXIT_FAILURE


def _cmd_untrack(args: argparse.Namespace) -> int:
    with build_app() as app:
        if no_store(app):
            for text in args.job_ids:
                err(f"{text} is not tracked")
            return EXIT_NOT_FOUND
        r = app.untrack_report(job_keys(app, args, tracked=True))
        for k in r.not_found:
            err(f"{k} is not tracked")
        for k in r.inactive:
            err(f"{k} was not being watched (already untracked or final)")
        print(f"untracked {len(r.untracked)} job(s)")
        return EXIT_NOT_FOUND if r.not_found else EXIT_OK


def register(subparsers: Any) -> None:
    keys = job_key_options()
    p = subparsers.add_parser("track", parents=[keys], help="start watching jobs (and poll them now)",
                              description="Start watching jobs and poll them at once. A job the service does not "
                                          "know is not tracked (exit 3) unless --force.")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE", help="tag for routing and stall rules (repeatable)")
    p.add_argument("--no-poll", action="store_true", help="only register; the next tick polls them")
    p.add_argument("--force", action="store_true", help="track even a job the service does not know (yet)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_track, cooperative=True)

    p = subparsers.add_parser("untrack", parents=[keys], help="stop watching jobs (history is kept)",
                              description="Stop polling jobs; their record and history are kept, and discovery "
                                          "leaves them alone until they are tracked again. Exit 3 if one is not "
                                          "tracked.")
    p.set_defaults(func=_cmd_untrack)
