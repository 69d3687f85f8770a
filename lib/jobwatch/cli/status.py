"""``jobwatch status`` (the table of tracked jobs, once or ``--watch``) and ``history`` (one job's transitions)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any, Mapping, Sequence

from jobwatch.cli.common import (EXIT_NOT_FOUND, RUN, ago, build_app, err, job_key_options, job_keys, no_store,
                                 positive, positive_int)
from jobwatch.cli.output import Column, add_output_option, cut, emit, render_table, state_colour, stdout_colour
from jobwatch.core.models import JobKey
from jobwatch.core.records import FINAL_STATES, TrackedJob


def _state(tj: TrackedJob) -> str:
    state = tj.state or "(new)"
    if tj.stalled:
        state += " STALLED"
    if not tj.active and tj.state not in FINAL_STATES:
        state += " (untracked)"
    return state


def _leased(tj: TrackedJob, now: datetime) -> bool:
    return tj.lease_owner is not None and tj.lease_expires is not None and tj.lease_expires > now


def status_columns(now: datetime, progress: Mapping[JobKey, Any] | None = None) -> list[Column]:
    """The status table; add a column here (``wide_only`` for detail that only ``-o wide`` shows). ``progress``:
    per batch job with children counted, its :class:`~jobwatch.core.progress.Progress`."""
    progress = progress or {}
    def created(tj: TrackedJob) -> datetime | None:
        return tj.job.created_at if tj.job is not None else None

    def next_poll(tj: TrackedJob) -> str:
        if not tj.active:
            return "-"
        return "leased" if _leased(tj, now) else ago(tj.next_poll_at, now)

    def errors(tj: TrackedJob, width: int | None) -> str:
        if not tj.error_count:
            return "0"
        text = tj.last_error or ""
        return f"{tj.error_count} ({cut(text, width) if width else text})"

    return [
        Column("JOB", lambda tj: str(tj.key)),
        Column("NAME", lambda tj: cut(tj.job.name, 30) if tj.job is not None and tj.job.name else "-"),
        Column("STATE", _state, colour=state_colour),
        Column("PROGRESS", lambda tj: progress[tj.key].text() if tj.key in progress and progress[tj.key].total
               else "-"),
        Column("AGE", lambda tj: ago(created(tj), now).replace(" ago", "")),
        Column("LAST CHANGE", lambda tj: ago(tj.last_change, now)),
        Column("NEXT POLL", next_poll),
        Column("ERRORS", lambda tj: errors(tj, 60), colour=lambda v: None if v == "0" else "31"),
        Column("TRACKED", lambda tj: ago(tj.first_seen, now), wide_only=True),
        Column("POLLS", lambda tj: str(tj.polls), wide_only=True),
        Column("LEASE", lambda tj: f"{tj.lease_owner} until {tj.lease_expires:%H:%M:%S}" if _leased(tj, now)
               else "-", wide_only=True),
        Column("TAGS", lambda tj: ",".join(f"{k}={v}" for k, v in sorted(tj.tags.items())) or "-",
               wide_only=True),
        Column("LAST ERROR", lambda tj: tj.last_error or "-", wide_only=True),
    ]


def render_status_table(records: Sequence[TrackedJob], now: datetime, progress: Mapping[JobKey, Any] | None = None,
                        *, wide: bool = False, color: bool = False) -> str:
    """One row per job; PROGRESS (``98% 11,960/12,000, 40 failed``) from its children when counted."""
    cols = status_columns(now, progress)
    if wide:  # the wide table has the whole error in its own column
        cols = [c if c.header != "ERRORS" else Column("ERRORS", lambda tj: str(tj.error_count)) for c in cols]
    return render_table(cols, records, wide=wide, color=color)


def lease_note(holders: Sequence[tuple[str, int, datetime]]) -> str | None:
    """Jobs another poller holds: `poll` skips them until the lease ends, which would look like "polled 0"."""
    if not holders:
        return None
    parts = [f"{n} job(s) leased by {owner} until {until:%H:%M:%S} UTC" for owner, n, until in holders]
    return "; ".join(parts) + ": another poller is polling them (or stopped without giving them back); " \
                              "`poll` skips them until then"


def _snapshot(app: Any, args: argparse.Namespace) -> tuple[list[TrackedJob], int, dict[str, int], dict[JobKey, Any]]:
    active = True if args.active else None
    if args.limit is None:
        jobs = list(app.all_jobs(active=active))
        return jobs, len(jobs), app.counts(), app.progress_of([tj.key for tj in jobs])
    st = app.status(active=active, limit=args.limit)
    return st.jobs, st.total, st.counts, st.progress


def _render(app: Any, args: argparse.Namespace, color: bool) -> str:
    jobs, total, counts, progress = _snapshot(app, args)
    now = app.clock()
    if args.output in ("json", "yaml"):
        import io

        buf = io.StringIO()
        emit([{**r.to_json(with_job=True), "progress": progress[r.key].to_json() if r.key in progress else None}
              for r in jobs], args.output, buf)
        return buf.getvalue().rstrip("\n")
    lines = [render_status_table(jobs, now, progress, wide=args.output == "wide", color=color)]
    if total > len(jobs):
        lines.append(f"... {total - len(jobs)} more not shown (--limit {args.limit}; without --limit: all)")
    note = lease_note(app.lease_holders())
    if note:
        lines.append(note)
    lines.append("")
    lines.append(", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no jobs tracked")
    return "\n".join(lines)


def _cmd_status(args: argparse.Namespace) -> int:
    with build_app() as app:
        if no_store(app):
            if args.output in ("json", "yaml"):
                emit([], args.output)  # an empty list, so `| jq` still works
            return 0
        color = stdout_colour() and args.output in ("table", "wide")
        if not args.watch:
            print(_render(app, args, color))
            return 0
        live = sys.stdout.isatty()
        last = None
        while not RUN.interrupted.is_set():
            text = _render(app, args, color)
            if live:  # redraw in place, as `watch` and `kubectl get -w` on a terminal
                stamp = f"every {args.interval:g}s: jobwatch status    {app.clock():%H:%M:%S} UTC\n\n"
                sys.stdout.write("\x1b[H\x1b[2J" + stamp + text + "\n")
                sys.stdout.flush()
            elif text != last:  # a pipe gets each new state once
                print(text + "\n", flush=True)
            last = text
            RUN.interrupted.wait(args.interval)
        return 0


def _history_rows(hist: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"seq": h.seq, "from": h.from_state, "to": h.to_state, "observed_at": h.observed_at.isoformat(),
             "service_time": h.service_time.isoformat() if h.service_time else None,
             "code": h.code, "message": h.message} for h in hist]


def _cmd_history(args: argparse.Namespace) -> int:
    with build_app() as app:
        if no_store(app):
            return EXIT_NOT_FOUND
        (key,) = job_keys(app, args, tracked=True)
        if app.job(key) is None:
            err(f"{key} is not tracked")
            return EXIT_NOT_FOUND
        hist = app.history(key)
        if args.output in ("json", "yaml"):
            emit(_history_rows(hist), args.output)
            return 0
        cols = [Column("SEQ", lambda h: str(h.seq)),
                Column("OBSERVED", lambda h: f"{h.observed_at:%Y-%m-%d %H:%M:%S}"),
                Column("FROM", lambda h: h.from_state or "-"),
                Column("TO", lambda h: h.to_state or "-", colour=state_colour),
                Column("SERVICE TIME", lambda h: f"{h.service_time:%Y-%m-%d %H:%M:%S}" if h.service_time else "-",
                       wide_only=True),
                Column("CODE", lambda h: h.code or "-"),
                Column("MESSAGE", lambda h: (h.message or "-") if args.output == "wide" else cut(h.message, 60)
                       or "-")]
        print(render_table(cols, hist, wide=args.output == "wide", color=stdout_colour()))
        return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("status", help="table of tracked jobs",
                              description="Every tracked job: name, state, age since the job was created, last "
                                          "change, next poll, errors. Jobs another poller holds are named, with "
                                          "the time its lease ends.")
    p.add_argument("--active", action="store_true", help="only jobs still polled")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="show at most N jobs and say how many were left out (default: all)")
    add_output_option(p)
    p.add_argument("-w", "--watch", action="store_true",
                   help="refresh until Ctrl-C (in place on a terminal; each change once in a pipe)")
    p.add_argument("--interval", type=positive, default=2.0, metavar="SECONDS",
                   help="seconds between refreshes with --watch, more than 0 (default 2)")
    p.set_defaults(func=_cmd_status, cooperative=True)

    p = subparsers.add_parser("history", parents=[job_key_options(nargs=1)], help="a job's recorded transitions",
                              description="A tracked job's transitions, oldest first. A bare job ID is looked up "
                                          "in the store. Exit 3 if it is not tracked.")
    add_output_option(p)
    p.set_defaults(func=_cmd_history)
