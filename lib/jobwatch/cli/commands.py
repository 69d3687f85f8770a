"""The ``jobwatch`` command: one argparse tree, one ``register(subparsers)`` function per command-group module.

Each command group is one module of this package with a ``register(subparsers)`` function, listed in
:data:`GROUPS` by plain import: a broken group fails loudly rather than silently vanishing from ``--help``.
Each sub-command sets ``func(args) -> int``. Exit codes: 0 done, 1 a transport or unexpected failure, 2 bad
input or an error answered by the service (its code and request ID are printed), 3 the job does not exist.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from jobwatch.cli import children as children_cmd
from jobwatch.cli import config as config_cmd
from jobwatch.cli import db as db_cmd
from jobwatch.cli import demo as demo_cmd
from jobwatch.cli import emulator as emulator_cmd
from jobwatch.cli import job as job_cmd
from jobwatch.cli import outbox as outbox_cmd
from jobwatch.cli import package as package_cmd
from jobwatch.cli import poll as poll_cmd
from jobwatch.cli import serve as serve_cmd
from jobwatch.cli import status as status_cmd
from jobwatch.cli import track as track_cmd
from jobwatch.cli.common import EXIT_FAILURE, EXIT_USAGE, err as _err
from jobwatch.core.errors import CIError, ConfigError, CredentialsError, JobwatchError, ValidationError

GROUPS = (job_cmd, emulator_cmd, config_cmd, package_cmd, track_cmd, poll_cmd, status_cmd, children_cmd, outbox_cmd,
          db_cmd, demo_cmd, serve_cmd)



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobwatch",
                                     description="Watch Tencent Cloud Infinite batch data processing jobs.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for group in GROUPS:
        group.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "pass_through", False):
        args.extra_args = extra  # a delegated command parses its own options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except ValidationError as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    except CIError as exc:
        _err(f"CI error {exc.code} (HTTP {exc.status}, request id {exc.request_id or '-'}): {exc.message}")
        return EXIT_USAGE
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except JobwatchError as exc:
        _err(str(exc))
        return EXIT_USAGE if isinstance(exc, CredentialsError) else EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
