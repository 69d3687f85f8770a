"""What every command group shares: exit codes, the error line, building the App, job keys, tables, progress."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from typing import Any, Mapping, Sequence

from jobwatch.app.orchestrator import App
from jobwatch.core.errors import ValidationError
from jobwatch.core.models import JobKey

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad input, or an error the service answered
EXIT_NOT_FOUND = 3


def err(msg: str) -> None:
    from jobwatch.core.redact import scrub

    print(f"jobwatch: {scrub(msg)}", file=sys.stderr)


def build_app(environ: Mapping[str, str] | None = None, **overrides: Any) -> App:
    """The same App the function builds, from the same variables (plus ``overrides``), logging to stderr."""
    from jobwatch.app.config import load_settings
    from jobwatch.app.logs import configure_logging

    env = dict(os.environ if environ is None else environ)
    env.update({k: str(v) for k, v in overrides.items()})
    settings = load_settings(env)
    configure_logging(settings.log_level, settings.log_format, stream=sys.stderr)
    return App(settings, environ=env)


def job_keys(args: argparse.Namespace) -> list[JobKey]:
    region = args.region or os.environ.get("JOBWATCH_DEFAULT_REGION")
    bucket = args.bucket or os.environ.get("JOBWATCH_DEFAULT_BUCKET")
    out = []
    for jid in args.job_ids:
        if "/" in jid:
            out.append(JobKey.parse(jid))
        else:
            if not region or not bucket:
                raise ValidationError("bucket/region", jid, "give --bucket and --region (or region/bucket/job_id)")
            out.append(JobKey(region, bucket, jid))
    return out


def job_key_options() -> argparse.ArgumentParser:
    """The positional job IDs and the --bucket/--region that place a bare ID."""
    keys = argparse.ArgumentParser(add_help=False)
    keys.add_argument("job_ids", nargs="+", metavar="JOB_ID", help="job ID, or region/bucket/job_id")
    keys.add_argument("--bucket", default=None, help="bucket <name>-<APPID> (default $JOBWATCH_DEFAULT_BUCKET)")
    keys.add_argument("--region", default=None, help="region, e.g. ap-guangzhou (default $JOBWATCH_DEFAULT_REGION)")
    return keys


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


def render_status_table(records: Sequence[Any], now: datetime, progress: Mapping[Any, Any] | None = None) -> str:
    """One row per job; PROGRESS (``98% 11,960/12,000, 40 failed``) from its children when counted."""
    progress = progress or {}
    rows = [("JOB", "STATE", "PROGRESS", "AGE", "LAST CHANGE", "NEXT POLL", "ERRORS")]
    for tj in records:
        state = tj.state or "(new)"
        if tj.stalled:
            state += " STALLED"
        if not tj.active and tj.state not in ("Success", "Failed", "Cancel", "Vanished"):
            state += " (untracked)"
        p = progress.get(tj.key)
        rows.append((str(tj.key), state, p.text() if p is not None and p.total else "-",
                     ago(tj.first_seen, now).replace(" ago", ""), ago(tj.last_change, now),
                     ago(tj.next_poll_at, now) if tj.active else "-",
                     str(tj.error_count) + (f" ({(tj.last_error or '')[:40]})" if tj.error_count else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


class Progress:
    """A one-line counter on a terminal (stderr), silent when stderr is not a terminal (pipes, CI, SCF)."""

    def __init__(self, label: str, stream: Any = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.shown = False

    def __call__(self, count: int) -> None:
        if self.live:
            self.stream.write(f"\r{self.label}: {count}")
            self.stream.flush()
            self.shown = True

    def done(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


