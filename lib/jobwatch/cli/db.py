"""``jobwatch db migrate|purge``: store maintenance."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobwatch.cli.common import EXIT_FAILURE, build_app, no_store, non_negative
from jobwatch.cli.output import Progress


def _cmd_db_migrate(args: argparse.Namespace) -> int:
    with build_app() as app:
        print(f"schema version {app.migrate()}")
        return 0


def _confirm(question: str) -> bool:
    """Ask on a terminal (as `gh repo delete` does); a pipe or a script must pass --yes."""
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _cmd_db_purge(args: argparse.Namespace) -> int:
    with build_app() as app:
        if no_store(app):
            return 0
        would = app.purge(args.older_than_days, dry_run=True)
        summary = ", ".join(f"{k}: {v}" for k, v in would.items())
        if args.dry_run:
            print(f"would delete {summary}")
            return 0
        if not any(would.values()):
            print(", ".join(f"{k}: 0 deleted" for k in would))
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                print(f"would delete {summary}; pass --yes to delete without a terminal to confirm on",
                      file=sys.stderr)
                return EXIT_FAILURE
            if not _confirm(f"delete {summary}?"):
                print("nothing deleted", file=sys.stderr)
                return EXIT_FAILURE
        progress = Progress("purging", total=sum(would.values()))
        counts = app.purge(args.older_than_days, progress=lambda c: progress(sum(c.values())))
        progress.done()
        print(", ".join(f"{k}: {v} deleted" for k, v in counts.items()))
        return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("db", help="store maintenance", description="Create the schema, or purge old rows.")
    sub = p.add_subparsers(dest="db_command", metavar="{migrate,purge}")
    sub.required = True
    sub.add_parser("migrate", help="create or upgrade the schema",
                   description="Create or upgrade the store's schema (also done on first use).").set_defaults(
        func=_cmd_db_migrate)
    pg = sub.add_parser("purge", help="delete final jobs, their history and finished notices past retention",
                        description="Delete untracked and final jobs whose last change is older than the "
                                    "retention, with their history, and delivered or dead notices as old. Asks "
                                    "on a terminal; elsewhere pass --yes. Exit 1 when declined.")
    pg.add_argument("--older-than-days", type=non_negative, default=None, metavar="DAYS",
                    help="retention in days (default $JOBWATCH_RETENTION_DAYS)")
    pg.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    pg.add_argument("-y", "--yes", action="store_true", help="delete without asking")
    pg.set_defaults(func=_cmd_db_purge)
