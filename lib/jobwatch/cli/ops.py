"""Operator commands over the engine: ``track``, ``untrack``, ``poll``, ``status``, ``history``, ``outbox``,
``notify test``, ``db migrate|purge`` and ``demo``. Each builds the same :class:`~jobwatch.app.App` the
function builds, from the same environment variables, so what works here works in SCF.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from datetime import datetime
from typing import Any, Mapping, Sequence

from jobwatch.core.errors import ValidationError
from jobwatch.core.models import JobKey


def _app(environ: Mapping[str, str] | None = None, **overrides: Any) -> Any:
    from jobwatch.app.orchestrator import App
    from jobwatch.app.config import load_settings
    from jobwatch.app.logs import configure_logging

    env = dict(os.environ if environ is None else environ)
    env.update({k: str(v) for k, v in overrides.items()})
    settings = load_settings(env)
    configure_logging(settings.log_level, settings.log_format, stream=sys.stderr)
    return App(settings, environ=env)


def _keys(args: argparse.Namespace) -> list[JobKey]:
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


def _tags(items: Sequence[str] | None) -> dict[str, str]:
    tags = {}
    for item in items or ():
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ValidationError("tag", item, "expected key=value")
        tags[k] = v
    return tags


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _ago(dt: datetime | None, now: datetime) -> str:
    if dt is None:
        return "-"
    s = (now - dt).total_seconds()
    sign = "" if s >= 0 else "in "
    s = abs(s)
    text = f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h" if s < 172800 \
        else f"{s / 86400:.1f}d"
    return f"{sign}{text}" if sign else f"{text} ago"


def render_status_table(records: Sequence[Any], now: datetime) -> str:
    rows = [("JOB", "STATE", "AGE", "LAST CHANGE", "NEXT POLL", "ERRORS")]
    for tj in records:
        state = tj.state or "(new)"
        if tj.stalled:
            state += " STALLED"
        if not tj.active and tj.state not in ("Success", "Failed", "Cancel", "Vanished"):
            state += " (untracked)"
        rows.append((str(tj.key), state, _ago(tj.first_seen, now).replace(" ago", ""), _ago(tj.last_change, now),
                     _ago(tj.next_poll_at, now) if tj.active else "-",
                     str(tj.error_count) + (f" ({(tj.last_error or '')[:40]})" if tj.error_count else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# -- commands ----------------------------------------------------------------------------------------------------
def _cmd_track(args: argparse.Namespace) -> int:
    app = _app()
    try:
        s = app.register(_keys(args), tags=_tags(args.tag), poll=not args.no_poll)
        _print_json(s.as_dict()) if args.json else print(
            f"tracking {s.registered} new, {s.already_tracked} already tracked; polled {s.tick.polled}, "
            f"{s.tick.transitions} transitions")
        return 0 if not s.tick.errors else 1
    finally:
        app.close()


def _cmd_untrack(args: argparse.Namespace) -> int:
    app = _app()
    try:
        n = app.untrack(_keys(args))
        print(f"untracked {n} job(s)")
        return 0
    finally:
        app.close()


def _cmd_poll(args: argparse.Namespace) -> int:
    app = _app()
    try:
        deadline = app.deadline_from(args.budget)
        s = app.tick(deadline, discover=not args.no_discover, deliver=not args.no_deliver)
        _print_json(s.as_dict()) if args.json else print(
            f"polled {s.tick.polled}, {s.tick.transitions} transitions, {s.tick.notices} notices queued, "
            f"{s.drain.delivered} delivered, {s.tick.errors} errors, {s.tick.left} left, "
            f"{s.discovered} discovered, {s.elapsed:.2f}s")
        return 0 if not s.tick.errors else 1
    finally:
        app.close()


def _cmd_status(args: argparse.Namespace) -> int:
    app = _app()
    try:
        active = True if args.active else None
        records = app.store.list_jobs(active=active, limit=args.limit)
        if args.json:
            _print_json([r.to_json(with_job=True) for r in records])
        else:
            print(render_status_table(records, app.clock()))
            counts = app.store.counts()
            print("\n" + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        return 0
    finally:
        app.close()


def _cmd_history(args: argparse.Namespace) -> int:
    app = _app()
    try:
        (key,) = _keys(args)
        hist = app.store.history(key)
        if args.json:
            _print_json([{"seq": h.seq, "from": h.from_state, "to": h.to_state,
                          "observed_at": h.observed_at.isoformat(),
                          "service_time": h.service_time.isoformat() if h.service_time else None,
                          "code": h.code, "message": h.message} for h in hist])
        else:
            if app.store.get(key) is None:
                print(f"{key} is not tracked", file=sys.stderr)
                return 3
            for h in hist:
                extra = f"  {h.code}: {h.message}" if h.code or h.message else ""
                print(f"{h.seq:>3}  {h.observed_at.isoformat()}  {h.from_state or '-'} -> {h.to_state}{extra}")
        return 0
    finally:
        app.close()


def _cmd_outbox(args: argparse.Namespace) -> int:
    app = _app()
    try:
        if args.retry is not None:
            ok = app.store.retry_notice(args.retry, app.clock())
            print(f"notice {args.retry} {'queued for retry' if ok else 'not found or already delivered'}")
            return 0 if ok else 3
        if args.deliver:
            r = app.outbox.drain(app.deadline_from(args.budget))
            _print_json(r.as_dict())
            return 0
        entries = app.store.list_outbox(status="dead" if args.dead else args.status, limit=args.limit)
        if args.json:
            # "id" is the row ID that --retry takes; the payload's own "id" (the idempotency key) is "key".
            _print_json([{**e.notice.payload(), "key": e.notice.idempotency_key, "id": e.notice.id,
                          "status": e.status, "attempts": e.attempts,
                          "last_error": e.last_error,
                          "deliveries": {k: d.status for k, d in e.deliveries.items()}} for e in entries])
        else:
            for e in entries:
                n = e.notice
                print(f"{n.id:>6}  {e.status:<7}  {e.attempts:>2}x  {n.key}  {n.kind.value}  "
                      f"{n.from_state or '-'} -> {n.to_state or '-'}  {e.last_error or ''}".rstrip())
        return 0
    finally:
        app.close()


def _cmd_notify_test(args: argparse.Namespace) -> int:
    from jobwatch.notify import sample_notice, send_concurrently

    app = _app()
    try:
        notice = sample_notice(app.clock())
        results = send_concurrently([(notice, s) for s in app.sinks], timeout=app.settings.notify_timeout)
        for r in results:
            print(f"{r.sink}: {'ok' if r.ok else 'FAILED: ' + (r.error or '')} ({r.elapsed * 1000:.0f} ms)")
        return 0 if all(r.ok for r in results) else 1
    finally:
        app.close()


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


def _cmd_discover(args: argparse.Namespace) -> int:
    from jobwatch.core.models import validate_bucket, validate_region

    app = _app()
    try:
        targets = [(validate_region(args.region), validate_bucket(args.bucket))] if args.bucket else \
            list(app.settings.discovery or ())
        if not targets:
            raise ValidationError("bucket", None, "give --bucket and --region, or set JOBWATCH_DISCOVERY")
        total = 0
        for region, bucket in targets:
            progress = Progress(f"{region}/{bucket} new jobs tracked")
            found = app.engine.discover(region, bucket, app.deadline_from(args.budget), progress=progress)
            progress.done()
            print(f"{region}/{bucket}: {found} new job(s) tracked")
            total += found
        return 0
    finally:
        app.close()


def _cmd_db_migrate(args: argparse.Namespace) -> int:
    app = _app()
    try:
        print(f"schema version {app.store.migrate()}")
        return 0
    finally:
        app.close()


def _cmd_db_purge(args: argparse.Namespace) -> int:
    app = _app()
    try:
        progress = Progress("purged")
        counts = app.purge(args.older_than_days, progress=lambda c: progress(sum(c.values())))
        progress.done()
        print(", ".join(f"{k}: {v} deleted" for k, v in counts.items()))
        return 0
    finally:
        app.close()


def _cmd_demo(args: argparse.Namespace) -> int:
    """Start the emulator, create jobs on it through the real API, track them, poll until all are final."""
    from jobwatch.ci.client import CIClient, JobSpec
    from jobwatch.ci.credentials import StaticProvider
    from jobwatch.emulator import EmulatorServer, Lifecycle, SpeedClock
    from jobwatch.core.models import JobInput, JobOperation

    sid, skey = "AKIDdemo" + secrets.token_hex(12), secrets.token_hex(16)
    bucket, region = "demo-1250000000", "ap-guangzhou"
    srv = EmulatorServer(credentials={sid: skey}, clock=SpeedClock(args.speed), seed=args.seed,
                         lifecycle=Lifecycle(submitted_seconds=20, running_seconds=240, failure_ratio=0.25,
                                             jitter=0.5)).start()
    print(f"emulator at {srv.url} (time runs {args.speed:g}x); store {args.store or 'from JOBWATCH_STORE_URL'}")
    env = dict(os.environ)
    env.update({"JOBWATCH_CI_ENDPOINT": srv.url, "JOBWATCH_SECRET_ID": sid, "JOBWATCH_SECRET_KEY": skey,
                "JOBWATCH_POLL_MIN_SECONDS": "1", "JOBWATCH_POLL_MAX_SECONDS": "2",
                "JOBWATCH_LOG_LEVEL": env.get("JOBWATCH_LOG_LEVEL", "warning")})
    if args.store:
        env["JOBWATCH_STORE_URL"] = args.store
    app = _app(env)
    creator = CIClient(StaticProvider(sid, skey), endpoint=srv.url)
    try:
        keys = []
        for i in range(args.jobs):
            if i % 2:
                spec = JobSpec(f"demo-{i}", JobInput(prefix=f"input/{i}/"), type="Job",
                               operation=JobOperation(tag="Transcode", queue_id="p" + "0" * 32,
                                                      template_id="t" + "0" * 32))
            else:
                spec = JobSpec(f"demo-{i}", JobInput(prefix=f"input/{i}/"), type="Workflow",
                               operation=JobOperation(workflow_ids=("w" + "0" * 32,)))
            job = creator.create_job(bucket, region, spec)
            keys.append(JobKey(region, bucket, job.job_id))
        print(f"created {len(keys)} jobs; tracking them")
        app.register(keys, poll=True)
        seen: dict[JobKey, str | None] = {}
        stop_at = time.monotonic() + args.timeout
        while time.monotonic() < stop_at:
            app.tick(app.deadline_from(10), discover=False)
            pending = 0
            for k in keys:
                tj = app.store.get(k)
                if tj.state != seen.get(k):
                    print(f"  {k.job_id}: {seen.get(k) or '-'} -> {tj.state}")
                    seen[k] = tj.state
                pending += tj.active
            if not pending:
                break
            time.sleep(args.interval)
        records = [app.store.get(k) for k in keys]
        print()
        print(render_status_table(records, app.clock()))
        done = sum(not r.active for r in records)
        delivered = sum(1 for e in app.store.list_outbox(limit=100000) if e.status == "done"
                        and e.notice.key in set(keys))
        print(f"\n{done}/{len(keys)} jobs final; {delivered} notices delivered")
        return 0 if done == len(keys) else 1
    finally:
        creator.close()
        app.close()
        srv.stop()


def register(subparsers: Any) -> None:
    """Add the engine's operator commands."""
    keys = argparse.ArgumentParser(add_help=False)
    keys.add_argument("job_ids", nargs="+", metavar="JOB_ID", help="job ID, or region/bucket/job_id")
    keys.add_argument("--bucket", default=None, help="bucket <name>-<APPID> (default $JOBWATCH_DEFAULT_BUCKET)")
    keys.add_argument("--region", default=None, help="region, e.g. ap-guangzhou (default $JOBWATCH_DEFAULT_REGION)")

    p = subparsers.add_parser("track", parents=[keys], help="start watching jobs (and poll them now)")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE", help="tag for routing and stall rules")
    p.add_argument("--no-poll", action="store_true", help="only register; the next tick polls them")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_track)

    p = subparsers.add_parser("untrack", parents=[keys], help="stop watching jobs (history is kept)")
    p.set_defaults(func=_cmd_untrack)

    p = subparsers.add_parser("poll", help="one timer tick: discovery, poll due jobs, deliver notices")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS", help="stop claiming work after this")
    p.add_argument("--no-discover", action="store_true")
    p.add_argument("--no-deliver", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary the function returns")
    p.set_defaults(func=_cmd_poll)

    p = subparsers.add_parser("discover", help="track the jobs of a bucket (new since the last run)",
                              description="List the bucket's jobs (first run: those still under way; later runs: "
                                          "every job created since) and track them. Progress on a terminal.")
    p.add_argument("--bucket", default=None, help="default: every pair in $JOBWATCH_DISCOVERY")
    p.add_argument("--region", default=None)
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS")
    p.set_defaults(func=_cmd_discover)

    p = subparsers.add_parser("status", help="table of tracked jobs")
    p.add_argument("--active", action="store_true", help="only jobs still polled")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)

    hist = argparse.ArgumentParser(add_help=False)
    hist.add_argument("job_ids", nargs=1, metavar="JOB_ID", help="job ID, or region/bucket/job_id")
    hist.add_argument("--bucket", default=None)
    hist.add_argument("--region", default=None)
    p = subparsers.add_parser("history", parents=[hist], help="a job's recorded transitions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_history)

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

    p = subparsers.add_parser("db", help="store maintenance")
    sub = p.add_subparsers(dest="db_command", metavar="{migrate,purge}")
    sub.required = True
    sub.add_parser("migrate", help="create or upgrade the schema").set_defaults(func=_cmd_db_migrate)
    pg = sub.add_parser("purge", help="delete final jobs, their history and finished notices past retention")
    pg.add_argument("--older-than-days", type=float, default=None, help="default $JOBWATCH_RETENTION_DAYS")
    pg.set_defaults(func=_cmd_db_purge)

    p = subparsers.add_parser("demo", help="the main job on the local emulator: create, track, poll to the end")
    p.add_argument("--jobs", type=int, default=6)
    p.add_argument("--speed", type=float, default=40.0, help="emulated time runs this many times faster")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--interval", type=float, default=0.5, help="seconds between ticks")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--store", default=None, help="store URL (default $JOBWATCH_STORE_URL or the SQLite default)")
    p.set_defaults(func=_cmd_demo)
