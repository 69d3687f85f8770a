"""What every command group shares: exit codes, the error line, building the App, Ctrl-C, job keys, option types.
Tables, formats and progress live in :mod:`jobwatch.cli.output`."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
from datetime import datetime
from typing import Any, Mapping

from jobwatch.app.orchestrator import App
from jobwatch.core.models import JobKey

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad input, or an error the service answered
EXIT_NOT_FOUND = 3  # the job does not exist, is not tracked, or there is no store yet
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report a SIGINT


def err(msg: str) -> None:
    from jobwatch.core.redact import scrub

    print(f"jobwatch: {scrub(msg)}", file=sys.stderr)


class _Run:
    """Per-run state of the CLI process: the global options, the Apps built (so Ctrl-C can cancel them), and
    whether the operator interrupted the run."""

    def __init__(self) -> None:
        self.log_format: str | None = None
        self.apps: list[App] = []
        self.interrupted = threading.Event()
        self.sigints = 0
        self.cooperative = False  # the command stops by itself once its App is cancelled

    def reset(self, log_format: str | None, cooperative: bool = False) -> None:
        self.log_format = log_format
        self.cooperative = cooperative
        self.apps.clear()
        self.interrupted.clear()
        self.sigints = 0


RUN = _Run()


def build_app(environ: Mapping[str, str] | None = None, **overrides: Any) -> App:
    """The same App the function builds, from the same variables (plus ``overrides``), logging to stderr."""
    from jobwatch.app.config import load_settings
    from jobwatch.app.logs import configure_logging

    env = dict(os.environ if environ is None else environ)
    env.update({k: str(v) for k, v in overrides.items()})
    if RUN.log_format:
        env["JOBWATCH_LOG_FORMAT"] = RUN.log_format
    settings = load_settings(env)
    configure_logging(settings.log_level, settings.log_format, stream=sys.stderr)
    app = App(settings, environ=env)
    RUN.apps.append(app)
    return app


def on_sigint(signum: int, frame: Any) -> None:
    """First Ctrl-C: a cooperative command (poll, discover, track, demo, status -w, outbox --deliver) has its App
    cancelled: no new work starts, what is not started is given back, in-flight requests end or are abandoned;
    any other command is stopped by KeyboardInterrupt (its store transaction rolls back). Second: exit at once."""
    RUN.sigints += 1
    if RUN.sigints > 1:
        os.write(2, b"\njobwatch: interrupted again: exiting now\n")
        os._exit(EXIT_INTERRUPTED)
    RUN.interrupted.set()
    os.write(2, b"\njobwatch: interrupted: stopping (Ctrl-C again to quit at once)\n")
    cancellable = [app for app in RUN.apps if hasattr(app, "cancel")] if RUN.cooperative else []
    for app in cancellable:
        app.cancel()
    if not cancellable:
        raise KeyboardInterrupt


def no_store(app: App) -> str | None:
    """For read-only commands: say so when the store does not exist yet (and create nothing)."""
    path = app.missing_store()
    if path is not None:
        err(f"no store yet at {path} (track a job or run `jobwatch db migrate` to create it)")
    return path


def region_option(value: Any, field: str = "--region") -> str:
    """A region the operator typed, by the rule every front door follows (:mod:`jobwatch.core.regions`): a
    malformed one is refused naming ``field`` (exit 2); a well-formed one this version does not know is used, with
    a warning on stderr (and a "did you mean" for a near miss)."""
    from jobwatch.core.regions import check_region, unknown_region_note

    region = check_region(value, field)
    note = unknown_region_note(region)
    if note is not None:
        err(f"warning: {field}: {note}")
    return region


def job_keys(app: App, args: argparse.Namespace, *, tracked: bool) -> list[JobKey]:
    """The keys the operator named; bare IDs placed by --bucket/--region, the store (``tracked``), or the
    configured defaults. A region typed (``--region`` or ``region/bucket/job_id``) that this version does not
    know is warned about; one read from the store or the configuration is not."""
    if args.region is not None:
        region_option(args.region)
    keys = app.resolve(args.job_ids, args.region, args.bucket, tracked=tracked)
    typed = dict.fromkeys(t.split("/", 1)[0] for t in args.job_ids if "/" in t)
    for region in typed:
        region_option(region, "JOB_ID")
    return keys


def job_key_options(nargs: str | int = "+") -> argparse.ArgumentParser:
    """The positional job IDs and the --bucket/--region that place a bare ID."""
    keys = argparse.ArgumentParser(add_help=False)
    keys.add_argument("job_ids", nargs=nargs, metavar="JOB_ID", help="job ID, or region/bucket/job_id")
    keys.add_argument("--bucket", default=None,
                      help="bucket <name>-<APPID> of a bare job ID (default: where it is tracked, else "
                           "$JOBWATCH_DEFAULT_BUCKET)")
    keys.add_argument("--region", default=None,
                      help="region of a bare job ID, e.g. ap-guangzhou (default: where it is tracked, else "
                           "$JOBWATCH_DEFAULT_REGION)")
    return keys


def _number(text: str, convert: Any, minimum: float, kind: str, maximum: float | None = None,
            above: bool = False) -> Any:
    """``text`` as a finite number from ``minimum`` (excluded when ``above``) to ``maximum``: inf, 1e308 and nan
    would reach timers and sleeps as overflows or never-ending waits."""
    try:
        value = convert(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
    if not math.isfinite(value) or value >= 1e9 and maximum is None:
        raise argparse.ArgumentTypeError(f"expected {kind}, finite and below 1e9, got {text!r}")
    if not (value > minimum if above else value >= minimum):
        raise argparse.ArgumentTypeError(f"expected {'more than' if above else 'at least'} {minimum:g}, "
                                         f"got {text!r}")
    if maximum is not None and value > maximum:
        raise argparse.ArgumentTypeError(f"expected {minimum:g} to {maximum:g}, got {text!r}")
    return value


def non_negative(text: str) -> float:
    """argparse type for seconds and days: a number, 0 or more (argparse names the option and the value)."""
    return float(_number(text, float, 0, "a number"))


def positive(text: str) -> float:
    """argparse type for rates and speeds: a number above 0."""
    return float(_number(text, float, 0, "a number", above=True))


def positive_int(text: str) -> int:
    """argparse type for counts and limits: a whole number, 1 or more."""
    return int(_number(text, int, 1, "a whole number"))


def int_range(low: int, high: int) -> Any:
    """argparse type for a whole number from ``low`` to ``high`` (argparse names the option and the value)."""
    def convert(text: str) -> int:
        return int(_number(text, int, low, "a whole number", maximum=high))

    convert.__name__ = f"whole number {low}-{high}"
    return convert


def port(text: str) -> int:
    """argparse type for a TCP port: 0 (any free one) to 65535."""
    return int(_number(text, int, 0, "a port number", maximum=65535))


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def ago(dt: datetime | None, now: datetime) -> str:
    if dt is None:
        return "-"
    s = (now - dt).total_seconds()
    sign = "" if s >= 0 else "in "
    s = abs(s)
    text = f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h" if s < 172800 \
        else f"{s / 86400:.1f}d"
    return f"{sign}{text}" if sign else f"{text} ago"
