"""``jobwatch outbox`` (notices, dead letters, retry, deliver) and ``notify test``."""

from __future__ import annotations

import argparse
from typing import Any

from jobwatch.cli.common import EXIT_NOT_FOUND, build_app, no_store, non_negative, positive_int, print_json
from jobwatch.cli.output import Column, add_output_option, cut, emit, render_table, stdout_colour

_STATUS_COLOURS = {"done": "32", "dead": "31", "pending": "33"}


def _cmd_outbox(args: argparse.Namespace) -> int:
    with build_app() as app:
        if args.retry is not None or not args.deliver:
            if no_store(app):
                if args.retry is None and args.output in ("json", "yaml"):
                    emit([], args.output)  # an empty list, so `| jq` still works
                return EXIT_NOT_FOUND if args.retry is not None else 0
        if args.retry is not None:
            ok = app.retry_notice(args.retry)
            print(f"notice {args.retry} {'queued for retry' if ok else 'not found or already delivered'}")
            return 0 if ok else EXIT_NOT_FOUND
        if args.deliver:
            print_json(app.deliver(app.budget(args.budget)).drain.as_dict())
            return 0
        entries = app.outbox_entries(status="dead" if args.dead else args.status, limit=args.limit)
        if args.output in ("json", "yaml"):
            # "id" is the row ID that --retry takes; the payload's own "id" (the idempotency key) is "key".
            emit([{**e.notice.payload(), "key": e.notice.idempotency_key, "id": e.notice.id,
                   "status": e.status, "attempts": e.attempts, "last_error": e.last_error,
                   "deliveries": {k: d.status for k, d in e.deliveries.items()}} for e in entries], args.output)
            return 0
        wide = args.output == "wide"
        cols = [Column("ID", lambda e: str(e.notice.id)),
                Column("STATUS", lambda e: e.status, colour=_STATUS_COLOURS.get),
                Column("ATTEMPTS", lambda e: str(e.attempts)),
                Column("JOB", lambda e: str(e.notice.key)),
                Column("KIND", lambda e: e.notice.kind.value),
                Column("CHANGE", lambda e: f"{e.notice.from_state or '-'} -> {e.notice.to_state or '-'}"),
                Column("CREATED", lambda e: f"{e.created_at:%Y-%m-%d %H:%M:%S}" if e.created_at else "-",
                       wide_only=True),
                Column("SINKS", lambda e: ", ".join(f"{k}={d.status}" for k, d in sorted(e.deliveries.items()))
                       or "-", wide_only=True),
                Column("ERROR", lambda e: (e.last_error or "-") if wide else cut(e.last_error, 60) or "-")]
        print(render_table(cols, entries, wide=wide, color=stdout_colour()))
        return 0


def _cmd_notify_test(args: argparse.Namespace) -> int:
    with build_app() as app:
        results = app.notify_test()
        for r in results:
            print(f"{r.sink}: {'ok' if r.ok else 'FAILED: ' + (r.error or '')} ({r.elapsed * 1000:.0f} ms)")
        return 0 if all(r.ok for r in results) else 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("outbox", help="list notices, dead letters; retry or deliver",
                              description="The notices waiting, delivered and dead. --retry puts one back; "
                                          "--deliver sends what is due now.")
    p.add_argument("--dead", action="store_true", help="only dead letters")
    p.add_argument("--status", choices=("pending", "done", "dead"), default=None, help="only notices in this status")
    p.add_argument("--retry", type=int, default=None, metavar="ID", help="put notice ID back for delivery")
    p.add_argument("--deliver", action="store_true", help="drain the outbox now")
    p.add_argument("--budget", type=non_negative, default=None, metavar="SECONDS",
                   help="with --deliver: stop after this many seconds")
    p.add_argument("--limit", type=positive_int, default=100, metavar="N", help="show at most N notices (default 100)")
    add_output_option(p)
    p.set_defaults(func=_cmd_outbox, cooperative=True)

    p = subparsers.add_parser("notify", help="notification sinks", description="Check the notification sinks.")
    sub = p.add_subparsers(dest="notify_command", metavar="{test}")
    sub.required = True
    t = sub.add_parser("test", help="send a sample notice to every configured sink and report each answer",
                       description="Send a sample notice to every sink of JOBWATCH_NOTIFY; exit 1 if one failed.")
    t.set_defaults(func=_cmd_notify_test)
