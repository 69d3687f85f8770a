"""``jobwatch db migrate|purge``: store maintenance."""

from __future__ import annotations

import argparse
from typing import Any

from jobwatch.cli.common import Progress, build_app


def _cmd_db_migrate(args: argparse.Namespace) -> int:
    with build_app() as app:
        print(f"schema version {app.migrate()}")
        return 0


def _cmd_db_purge(args: argparse.Namespace) -> int:
    with build_app() as app:
        progress = Progress("purged")
        counts = app.purge(args.older_than_days, progress=lambda c: progress(sum(c.values())))
        progress.done()
        print(", ".join(f"{k}: {v} deleted" for k, v in counts.items()))
        return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("db", help="store maintenance")
    sub = p.add_subparsers(dest="db_command", metavar="{migrate,purge}")
    sub.required = True
    sub.add_parser("migrate", help="create or upgrade the schema").set_defaults(func=_cmd_db_migrate)
    pg = sub.add_parser("purge", help="delete final jobs, their history and finished notices past retention")
    pg.add_argument("--older-than-days", type=float, default=None, help="default $JOBWATCH_RETENTION_DAYS")
    pg.set_defaults(func=_cmd_db_purge)
