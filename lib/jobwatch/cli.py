"""The ``jobwatch`` command: one argparse tree, one ``register_<group>(subparsers)`` function per command group.

Groups live next to the code they drive (``config.register_config``, ``register_job`` here) and are listed in
:data:`GROUPS`; a broken group fails loudly rather than silently vanishing from ``jobwatch --help``.
Each sub-command sets ``func(args) -> int``. Exit codes: 0 done, 1 a transport or unexpected failure, 2 bad
input or an error answered by the service (its code and request ID are printed), 3 the job does not exist.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence

from .errors import CIError, ConfigError, JobwatchError, ValidationError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad input, or an error the service answered
EXIT_NOT_FOUND = 3

# (module, function): each function takes the sub-parsers action and adds its group. Add yours here.
GROUPS: list[tuple[str, str]] = [
    ("jobwatch.cli", "register_job"),
    ("jobwatch.cli", "register_emulator"),
    ("jobwatch.config", "register_config"),
    ("jobwatch.packaging", "register_package"),
    ("jobwatch.cli_ops", "register_ops"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobwatch",
                                     description="Watch Tencent Cloud Infinite batch data processing jobs.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module, func in GROUPS:
        register: Callable[[Any], Any] = getattr(importlib.import_module(module), func)
        register(subparsers)
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
        from .credentials import CredentialsError

        _err(str(exc))
        return EXIT_USAGE if isinstance(exc, CredentialsError) else EXIT_FAILURE


def _err(msg: str) -> None:
    from .redact import scrub

    print(f"jobwatch: {scrub(msg)}", file=sys.stderr)


# -- job ------------------------------------------------------------------------------------------------------


def register_job(subparsers: Any) -> argparse.ArgumentParser:
    """``jobwatch job show|list``: read batch jobs straight from the service (or the emulator)."""
    p = subparsers.add_parser("job", help="show or list batch jobs",
                              description="Read batch jobs from the CI API. Credentials come from "
                                          "JOBWATCH_SECRET_ID/JOBWATCH_SECRET_KEY/JOBWATCH_SESSION_TOKEN, then SCF's "
                                          "TENCENTCLOUD_SECRETID/..., then TENCENTCLOUD_SECRET_ID/..., then a "
                                          "profile file (JOBWATCH_CREDENTIALS_PROFILE or ~/.tencentcloud/credentials).")
    sub = p.add_subparsers(dest="job_command", metavar="{show,list}")
    sub.required = True

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bucket", required=True, help="bucket, <name>-<APPID>")
    common.add_argument("--region", required=True, help="region, e.g. ap-guangzhou")
    common.add_argument("--endpoint", default=None,
                        help="connect here instead of <bucket>.ci.<region>.myqcloud.com (default: "
                             "$JOBWATCH_CI_ENDPOINT), e.g. http://127.0.0.1:8787 for the emulator")
    common.add_argument("--json", action="store_true", help="print the job record(s) as JSON")

    s = sub.add_parser("show", parents=[common], help="show one job",
                       description="Show one job. Exit 3 if the service does not know it.")
    s.add_argument("job_id", metavar="JOB_ID")
    s.set_defaults(func=_cmd_job_show)

    ls = sub.add_parser("list", parents=[common], help="list jobs (follows paging)",
                        description="List jobs, newest first unless --order asc.")
    ls.add_argument("--states", action="append", default=None, metavar="STATE[,STATE]",
                    help="Submitted, Running, Success, Failed, Pause, Cancel or All (repeatable or comma-separated)")
    ls.add_argument("--type", choices=("Workflow", "Job"), default=None, help="only one variant (default: both)")
    ls.add_argument("--since", default=None, metavar="TIME",
                    help="created at or after: 2022-06-27T15:23:10+0800, 2022-06-27, or a duration ago (90m, 6h, 2d)")
    ls.add_argument("--until", default=None, metavar="TIME", help="created at or before (same forms)")
    ls.add_argument("--workflow-id", default=None)
    ls.add_argument("--name", default=None)
    ls.add_argument("--order", choices=("asc", "desc"), default=None)
    ls.add_argument("--limit", type=int, default=100, metavar="N", help="stop after N jobs (default 100)")
    ls.set_defaults(func=_cmd_job_list)
    return p


def _client(args: argparse.Namespace, environ: Any = None) -> Any:
    """A client from the environment: the same variables the function reads, minus what a one-off command
    does not need."""
    from .client import CIClient
    from .credentials import provider_from_settings

    env = os.environ if environ is None else environ
    duration_raw = env.get("JOBWATCH_ROLE_DURATION") or "3600"
    try:
        duration = int(duration_raw)
    except ValueError:
        raise ValidationError("JOBWATCH_ROLE_DURATION", duration_raw, "expected a whole number of seconds") from None
    provider = provider_from_settings(
        profile_path=env.get("JOBWATCH_CREDENTIALS_PROFILE") or None,
        role_arn=env.get("JOBWATCH_ROLE_ARN") or None,
        role_session_name=env.get("JOBWATCH_ROLE_SESSION_NAME") or "ci-jobwatch",
        role_duration=duration,
        sts_endpoint=env.get("JOBWATCH_STS_ENDPOINT") or None,
        environ=env,
    )
    endpoint = args.endpoint or env.get("JOBWATCH_CI_ENDPOINT") or None
    verify = (env.get("JOBWATCH_VERIFY_TLS") or "true").strip().lower() not in ("0", "false", "no", "off")
    return CIClient(provider, endpoint=endpoint, verify=verify, max_attempts=3)


def _cmd_job_show(args: argparse.Namespace) -> int:
    from .models import validate_bucket, validate_job_id, validate_region

    validate_bucket(args.bucket)
    validate_region(args.region)
    validate_job_id(args.job_id)
    with _client(args) as client:
        result = client.get_job(args.bucket, args.region, args.job_id)
    job = next((j for j in result.jobs if j.job_id == args.job_id), None)
    if job is None:
        _err(f"job {args.job_id} does not exist in {args.bucket} ({args.region}); request id "
             f"{result.request_id or '-'}")
        return EXIT_NOT_FOUND
    if args.json:
        print(json.dumps(job.to_json(), ensure_ascii=False, indent=2, default=str))
    else:
        print(_human(job))
    return EXIT_OK


def _cmd_job_list(args: argparse.Namespace) -> int:
    from .models import validate_bucket, validate_region

    validate_bucket(args.bucket)
    validate_region(args.region)
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
    with _client(args) as client:
        for job in client.list_jobs(args.bucket, args.region, states=states, type=args.type, order_by_time=order,
                                    start_creation_time=since, end_creation_time=until,
                                    workflow_id=args.workflow_id, name=args.name, size=min(100, args.limit)):
            jobs.append(job)
            if len(jobs) >= args.limit:
                break
    if args.json:
        print(json.dumps([j.to_json() for j in jobs], ensure_ascii=False, indent=2, default=str))
    else:
        for j in jobs:
            print(f"{j.job_id}  {j.state_raw:<9}  {j.type or '-':<8}  {_t(j.created_at)}  {j.name or ''}")
        print(f"{len(jobs)} job(s)", file=sys.stderr)
    return EXIT_OK


def parse_cli_time(text: str, field: str, now: datetime) -> datetime:
    """Every form the service writes, a bare date (service time, +08:00), or a duration ago (``90m``)."""
    from .models import parse_time

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


# -- emulator -------------------------------------------------------------------------------------------------


def register_emulator(subparsers: Any) -> argparse.ArgumentParser:
    """``jobwatch emulator ...``: the local CI API. Its options belong to ``jobwatch.emulator.cli``, imported only
    when the command runs (so ``jobwatch --help`` neither pays for it nor breaks without it)."""
    p = subparsers.add_parser("emulator", help="run the local CI batch-job API emulator", add_help=False,
                              description="Run the local emulator; `jobwatch emulator --help` lists its options.")
    p.set_defaults(func=_cmd_emulator, pass_through=True)
    return p


def _cmd_emulator(args: argparse.Namespace) -> int:
    try:
        emu = importlib.import_module("jobwatch.emulator.cli")
    except ImportError as exc:
        _err(f"the emulator is not available: {exc}")
        return EXIT_FAILURE
    parser = argparse.ArgumentParser(prog="jobwatch emulator", description="The local CI batch-job API emulator.")
    emu.add_arguments(parser)
    return int(emu.run(parser.parse_args(args.extra_args)) or 0)


if __name__ == "__main__":
    sys.exit(main())
