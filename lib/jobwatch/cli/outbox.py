"""``jobwatch outbox`` (notices, dead letters, retry, deliver) and ``notify test``."""

from __future__ import annotations

import argparse
from typing import Any

from jobwatch.cli.common import build_app, print_json


def _cmd_outbox(args: argparse.Namespace) -> int:
    with build_app() as app:
        if args.retry is not None:
            ok = app.retry_notice(args.retry)
            print(f"notice {args.retry} {'queued for retry' if ok else 'not found or already delivered'}")
            return 0 if ok else 3
        if args.deliver:
            print_json(app.deliver(app.budget(args.budget)).drain.as_dict())
            return 0
        entries = app.outbox_entries(status="dead" if args.dead else args.status, limit=args.limit)
        if args.json:
            # "id" is the row ID that --retry takes; the payload's own "id" (the idempotency key) is "key".
            print_json([{**e.notice.payload(), "key": e.notice.idempotency_key, "id": e.notice.id,
                         "status": e.status, "attempts": e.attempts, "last_error": e.last_error,
                         "deliveries": {k: d.status for k, d in e.deliveries.items()}} for e in entries])
        else:
            for e in entries:
                n = e.notice
                print(f"{n.id:>6}  {e.status:<7}  {e.attempts:>2}x  {n.key}  {n.kind.value}  "
                      f"{n.from_state or '-'} -> {n.to_state or '-'}  {e.last_error or ''}".rstrip())
        return 0


def _cmd_notify_test(args: argparse.Namespace) -> int:
    with build_app() as app:
        results = app.notify_test()
        for r in results:
            print(f"{r.sink}: {'ok' if r.ok else 'FAILED: ' + (r.error or '')} ({r.elapsed * 1000:.0f} ms)")
        return 0 if all(r.ok for r in results) else 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("outbox", help="list notices, dead letters; retry or deliver")
    p.add_argument("--dead", action="store_true", help="only dead letters")
    p.add_argument("--status", choices=("pending", "done", "dead"), default=None)
    p.add_argument("--retry", type=int, default=None, metavar="ID", help="put notice ID back for delivery")
    p.add_argument("--deliver", action="store_true", help="drain the outbox now")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_outbox)

    p = subparsers.add_parser("notify", help="notification sinks")
    sub = p.add_subparsers(dest="notify_command", metavar="{test}")
    sub.required = True
    t = sub.add_parser("test", help="send a sample notice to every configured sink and report each answer")
    t.set_defaults(func=_cmd_notify_test)
