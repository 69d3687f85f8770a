"""``jobwatch poll`` (one timer tick) and ``discover`` (track a bucket's new jobs)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobwatch.cli.common import EXIT_USAGE, RUN, build_app, err, non_negative, print_json, region_option
from jobwatch.cli.output import Progress
from jobwatch.core.errors import ValidationError
from jobwatch.core.models import validate_bucket


def _cmd_poll(args: argparse.Namespace) -> int:
    with build_app() as app:
        bar = Progress("polling")
        s = app.tick(app.budget(args.budget), discover=not args.no_discover, deliver=not args.no_deliver,
                     progress=lambda n, total: bar(n, total))
        bar.done()
        if not s.tick.polled and not RUN.interrupted.is_set():
            from jobwatch.cli.status import lease_note

            note = lease_note(app.lease_holders())
            if note:
                print(f"jobwatch: {note}", file=sys.stderr)
        if args.json:
            print_json(s.as_dict())
        else:
            d = s.drain
            failed = f", {d.failed + d.dead} deliveries failed" if d.failed or d.dead else ""
            print(f"polled {s.tick.polled}, {s.tick.transitions} transitions, {s.tick.notices} notices queued, "
                  f"{d.done} notices delivered{failed}, {s.tick.errors} errors, {s.tick.left} left, "
                  f"{s.discovered} discovered, {s.elapsed:.2f}s" + (" (interrupted)" if RUN.interrupted.is_set()
                                                                    else ""))
        return 0 if not s.tick.errors else 1


def _cmd_discover(args: argparse.Namespace) -> int:
    if bool(args.bucket) != bool(args.region):
        raise ValidationError("--bucket/--region", args.bucket or args.region, "give both, or neither")
    with build_app() as app:
        targets = [(region_option(args.region), validate_bucket(args.bucket))] if args.bucket \
            else list(app.settings.discovery or ())
        if not targets:
            err("discover: no bucket to list: give --bucket and --region, or set JOBWATCH_DISCOVERY")
            return EXIT_USAGE
        budget = app.budget(args.budget)
        failed = 0
        for target in targets:
            if RUN.interrupted.is_set():
                break
            spec = "/".join(target)
            progress = Progress(f"{spec}: new jobs tracked")
            s = app.discover(budget, [target], progress=lambda _t, n: progress(n))
            progress.done()
            for r in s.rejected:
                print(f"{spec}: failed: {r['reason']}", file=sys.stderr)
                failed += 1
            if not s.rejected:
                print(f"{spec}: {s.discovered} new job(s) tracked")
        return 1 if failed else 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("poll", help="one timer tick: discovery, poll due jobs, deliver notices",
                              description="What the function's timer does: discover (JOBWATCH_DISCOVERY), poll the "
                                          "jobs that are due, deliver the outbox. Exit 1 if a poll failed. Ctrl-C "
                                          "stops starting work, gives back the jobs not polled and exits 130.")
    p.add_argument("--budget", type=non_negative, default=None, metavar="SECONDS",
                   help="stop claiming work after this many seconds (default: no limit)")
    p.add_argument("--no-discover", action="store_true", help="skip discovery")
    p.add_argument("--no-deliver", action="store_true", help="leave the outbox for the next run")
    p.add_argument("--json", action="store_true", help="print the summary the function returns")
    p.set_defaults(func=_cmd_poll, cooperative=True)

    p = subparsers.add_parser("discover", help="track the jobs of a bucket (new since the last run)",
                              description="List the bucket's jobs (first run: those still under way; later runs: "
                                          "every job created since) and track them; a job you untracked stays "
                                          "untracked. Progress on a terminal.")
    p.add_argument("--bucket", default=None, help="bucket <name>-<APPID> (default: every pair in $JOBWATCH_DISCOVERY)")
    p.add_argument("--region", default=None, help="the bucket's region, e.g. ap-guangzhou")
    p.add_argument("--budget", type=non_negative, default=None, metavar="SECONDS",
                   help="stop listing after this many seconds (default: no limit)")
    p.set_defaults(func=_cmd_discover, cooperative=True)
