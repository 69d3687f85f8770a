"""The ``jobwatch`` command: one argparse tree, one ``register(subparsers)`` function per command-group module.

Each command group is one module of this package with a ``register(subparsers)`` function, listed in
:data:`GROUPS` by plain import: a broken group fails loudly rather than silently vanishing from ``--help``.
Each sub-command sets ``func(args) -> int``. Exit codes: 0 done, 1 a transport or unexpected failure, 2 bad
input, bad configuration or an error answered by the service (its code and request ID are printed), 3 the job
does not exist or is not tracked, 130 interrupted (Ctrl-C: the first stops work cleanly, a second exits at once).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any, Sequence

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
from jobwatch.cli.common import (EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, RUN, err as _err,
                                 on_sigint)
from jobwatch.core.errors import (CIError, ConfigError, CredentialsError, JobwatchError, NotFoundError,
                                  ValidationError)

GROUPS = (job_cmd, emulator_cmd, config_cmd, package_cmd, track_cmd, poll_cmd, status_cmd, children_cmd, outbox_cmd,
          db_cmd, demo_cmd, serve_cmd)



def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ci-jobwatch")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobwatch", description="Watch Tencent Cloud Infinite batch data processing jobs.",
        epilog="Exit codes: 0 done; 1 a transport or unexpected failure; 2 bad input, bad configuration or an "
               "error the service answered; 3 the job does not exist or is not tracked; 130 interrupted (Ctrl-C).")
    parser.add_argument("--version", action="version", version=f"jobwatch {_version()}",
                        help="print the version and exit")
    _log_format_option(parser, None)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for group in GROUPS:
        group.register(subparsers)
    _global_options_everywhere(subparsers)
    return parser


def _log_format_option(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--log-format", choices=("auto", "json", "console"), default=default,
                        help="log lines on stderr: json, console (one short line per change) or auto (console "
                             "on a terminal, else json); default $JOBWATCH_LOG_FORMAT")


def _global_options_everywhere(subparsers: Any) -> None:
    """``--log-format`` after the command too (``jobwatch poll --log-format json``), as gh and kubectl take their
    global flags anywhere. SUPPRESS keeps a sub-command from resetting a value given before it."""
    for sub in subparsers.choices.values():
        if getattr(sub, "_jobwatch_globals", False) or sub.get_default("pass_through"):
            continue
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            for n in nested:
                _global_options_everywhere(n)
        elif not any("--log-format" in a.option_strings for a in sub._actions):
            _log_format_option(sub, argparse.SUPPRESS)
        sub._jobwatch_globals = True


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader went away


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush does not print a second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (a test's capture)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        parser.print_help()  # as gh and kubectl do
        return EXIT_OK
    try:
        args, extra = parser.parse_known_args(argv)
        if getattr(args, "pass_through", False):
            args.extra_args = extra  # a delegated command parses its own options
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help, --version (0) or a usage error (2, already printed)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    RUN.reset(args.log_format, cooperative=bool(getattr(args, "cooperative", False)))
    previous = signal.getsignal(signal.SIGINT)
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return EXIT_INTERRUPTED if RUN.interrupted.is_set() else code
    except BrokenPipeError:  # `jobwatch status | head -1`: the reader has gone; exit quietly, as other CLIs do
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ValidationError as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    except NotFoundError as exc:
        _err(str(exc))
        return EXIT_NOT_FOUND
    except CIError as exc:
        _err(f"CI error {exc.code} (HTTP {exc.status}, request id {exc.request_id or '-'}): {exc.message}")
        return EXIT_USAGE
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except JobwatchError as exc:
        _err(str(exc))
        return EXIT_USAGE if isinstance(exc, CredentialsError) else EXIT_FAILURE
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())
