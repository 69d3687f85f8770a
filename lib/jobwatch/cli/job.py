"""``jobwatch job show|list``: read batch jobs straight from the service (or the emulator)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

from jobwatch.cli.common import EXIT_NOT_FOUND, EXIT_OK, err as _err
from jobwatch.cli.output import add_output_option, emit
from jobwatch.core.errors import ValidationError
from jobwatch.core.models import JobKey



def register(subparsers: Any) -> argparse.ArgumentParser:
    """``jobwatch job show|list``: read batch jobs straight from the service (or the emulator)."""
    p = subparsers.add_parser("job", help="show or list batch jobs",
                              description="Read batch jobs from the CI API. Credentials come from "
                                          "JOBWATCH_SECRET_ID/JOBWATCH_SECRET_KEY/JOBWATCH_SESSION_TOKEN, then SCF's "
                                          "TENCENTCLOUD_SECRETID/..., then TENCENTCLOUD_SECRET_ID/..., then a "
                                          "profile file (JOBWATCH_CREDENTIALS_PROFILE or ~/.tencentcloud/credentials).")
    sub = p.add_subparsers(dest="job_command", metavar="{show,list}")
    sub.required = True

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bucket", default=None, help="bucket, <name>-<APPID> (default $JOBWATCH_DEFAULT_BUCKET)")
    common.add_argument("--region", default=None, help="region, e.g. ap-guangzhou (default $JOBWATCH_DEFAULT_REGION)")
    common.add_argument("--endpoint", default=None,
                        help="connect here instead of <bucket>.ci.<region>.myqcloud.com (default: "
                             "$JOBWATCH_CI_ENDPOINT), e.g. http://127.0.0.1:8787 for the emulator")
    add_output_option(common, wide=False)

    s = sub.add_parser("show", parents=[common], help="show one job",
                       description="Show one job. Exit 3 if the service does not know it.")
    s.add_argument("job_id", metavar="JOB_ID", help="the job's ID")
    s.set_defaults(func=_cmd_job_show)

    ls = sub.add_parser("list", parents=[common], help="list jobs (follows paging)",
                        description="List jobs, newest first unless --order asc.")
    ls.add_argument("--states", action="append", default=None, metavar="STATE[,STATE]",
                    help="Submitted, Running, Success, Failed, Pause, Cancel or All (repeatable or comma-separated)")
    ls.add_argument("--type", choices=("Workflow", "Job"), default=None, help="only one variant (default: both)")
    ls.add_argument("--since", default=None, metavar="TIME",
                    help="created at or after: 2022-06-27T15:23:10+0800, 2022-06-27, or a duration ago (90m, 6h, 2d)")
    ls.add_argument("--until", default=None, metavar="TIME", help="created at or before (same forms)")
    ls.add_argument("--workflow-id", default=None, help="only jobs of this workflow")
    ls.add_argument("--name", default=None, help="only jobs with this name")
    ls.add_argument("--order", choices=("asc", "desc"), default=None, help="by creation time (default desc)")
    ls.add_argument("--limit", type=int, default=100, metavar="N", help="stop after N jobs (default 100)")
    ls.set_defaults(func=_cmd_job_list)
    return p


def _app(args: argparse.Namespace) -> Any:
    """An App from the environment, pointed at ``--endpoint`` when given. Its settings are the function's, so a
    one-off read uses the same credentials chain, TLS and retry settings."""
    from jobwatch.cli.common import build_app

    overrides = {"JOBWATCH_CI_ENDPOINT": args.endpoint} if args.endpoint else {}
    return build_app(**overrides)


def _place(app: Any, args: argparse.Namespace) -> None:
    """--bucket and --region, else the configured defaults; both checked."""
    from jobwatch.cli.common import region_option
    from jobwatch.core.models import validate_bucket

    if args.region is not None:
        region_option(args.region)
    args.region = args.region or app.settings.default_region
    args.bucket = args.bucket or app.settings.default_bucket
    if not args.region or not args.bucket:
        raise ValidationError("--bucket/--region", args.bucket or args.region,
                              "give --bucket and --region, or set JOBWATCH_DEFAULT_BUCKET and JOBWATCH_DEFAULT_REGION")
    validate_bucket(args.bucket)


def _cmd_job_show(args: argparse.Namespace) -> int:
    from jobwatch.core.models import validate_job_id

    validate_job_id(args.job_id)
    with _app(args) as app:
        _place(app, args)
        result = app.remote_job(JobKey(args.region, args.bucket, args.job_id))
    job = next((j for j in result.jobs if j.job_id == args.job_id), None)
    if job is None:
        _err(f"job {args.job_id} does not exist in {args.bucket} ({args.region}); request id "
             f"{result.request_id or '-'}")
        return EXIT_NOT_FOUND
    if args.output in ("json", "yaml"):
        emit(job.to_json(), args.output)
    else:
        print(_human(job))
    return EXIT_OK


def _cmd_job_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ValidationError("--limit", args.limit, "expected at least 1")
    states = None
    if args.states:
        states = [s.strip() for item in args.states for s in item.split(",") if s.strip()]
    now = datetime.now(timezone.utc)
    since = parse_cli_time(args.since, "--since", now) if args.since else None
    until = parse_cli_time(args.until, "--until", now) if args.until else None
    order = args.order.capitalize() if args.order else None
    jobs = []
    with _app(args) as app:
        _place(app, args)
        for job in app.remote_jobs(args.region, args.bucket, states=states, type=args.type, order_by_time=order,
                                    start_creation_time=since, end_creation_time=until,
                                    workflow_id=args.workflow_id, name=args.name, size=min(100, args.limit)):
            jobs.append(job)
            if len(jobs) >= args.limit:
                break
    if args.output in ("json", "yaml"):
        emit([j.to_json() for j in jobs], args.output)
    else:
        from jobwatch.cli.output import Column, render_table, state_colour, stdout_colour

        cols = [Column("JOB ID", lambda j: j.job_id), Column("STATE", lambda j: j.state_raw, colour=state_colour),
                Column("TYPE", lambda j: j.type or "-"), Column("CREATED", lambda j: _t(j.created_at)),
                Column("NAME", lambda j: j.name or "-")]
        print(render_table(cols, jobs, color=stdout_colour()))
        print(f"{len(jobs)} job(s)", file=sys.stderr)
    return EXIT_OK


def parse_cli_time(text: str, field: str, now: datetime) -> datetime:
    """Every form the service writes, a bare date (service time, +08:00), or a duration ago (``90m``)."""
    from jobwatch.core.models import parse_time

    t = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if len(t) >= 2 and t[-1] in units and t[:-1].isdigit():
        return now - timedelta(seconds=int(t[:-1]) * units[t[-1]])
    if len(t) == 10 and t[4] == "-" and t[7] == "-":
        t += "T00:00:00"
    try:
        dt = parse_time(t, field_name=field)
    except ValidationError:
        raise ValidationError(field, text, "expected 2022-06-27T15:23:10+0800, 2022-06-27, or 90m/6h/2d") from None
    if dt is None:
        raise ValidationError(field, text, "expected a time")
    return dt


def _t(dt: datetime | None) -> str:
    return dt.isoformat() if dt else "-"


def _human(job: Any) -> str:
    lines = [
        f"job       {job.job_id}",
        f"name      {job.name or '-'}",
        f"type      {job.type or '-'}",
        f"state     {job.state_raw}",
    ]
    if job.code or job.message:
        lines.append(f"result    {job.code or '-'}: {job.message or ''}")
    lines += [f"created   {_t(job.created_at)}", f"started   {_t(job.started_at)}", f"ended     {_t(job.ended_at)}"]
    i = job.input
    src = next(((k, v) for k, v in (("prefix", i.prefix), ("manifest", i.manifest), ("url file", i.url_file),
                                     ("object", i.object)) if v), None)
    if src:
        lines.append(f"input     {src[0]} {src[1]}")
    o = job.operation
    if o.workflow_ids:
        lines.append(f"workflows {', '.join(o.workflow_ids)}")
    if o.tag:
        lines.append(f"tag       {o.tag}" + (f" (queue {o.queue_id})" if o.queue_id else ""))
    if o.template_id:
        lines.append(f"template  {o.template_id}")
    return "\n".join(lines)


