"""``jobwatch emulator``: run the CI batch-job emulator on loopback until interrupted (for the demo and manual
tries). ``add_arguments`` and ``run`` are wired into the main ``jobwatch`` command; ``python -m
jobwatch.emulator`` runs the same thing.

With no ``--secret-id``/``--secret-key`` it accepts the demo pair below, which is a fake, published value: it
guards nothing and is printed so a newcomer can copy it. A key given on the command line is never printed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Sequence, TextIO

from jobwatch.emulator.clock import SpeedClock, SystemClock
from jobwatch.emulator.server import EmulatorServer
from jobwatch.emulator.state import Lifecycle

DEMO_SECRET_ID = "AKIDEMULATORDEMO0000000000000000000"
DEMO_SECRET_KEY = "emulator-demo-secret-key-not-real"
DEFAULT_BUCKET = "examplebucket-1250000000"
DEFAULT_REGION = "ap-guangzhou"


def _port(text: str) -> int:
    """argparse type for a TCP port, 0 (any free one) to 65535: a bigger one fails deep in socket.bind."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected 0 to 65535, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8787, help="port (0 picks a free one; default 8787)")
    parser.add_argument("--secret-id", help=f"SecretId to accept (default the demo value {DEMO_SECRET_ID})")
    parser.add_argument("--secret-key", help="SecretKey of --secret-id (default the demo value, printed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of job fates, IDs and faults (default 0)")
    parser.add_argument("--preload", type=int, default=0, metavar="N", help="create N jobs spread over states")
    parser.add_argument("--bucket", default=DEFAULT_BUCKET, help=f"bucket --preload fills (default {DEFAULT_BUCKET})")
    parser.add_argument("--speed", type=float, default=1.0, metavar="F",
                        help="run job lifecycles F times faster than real time (default 1)")
    parser.add_argument("--fail-ratio", type=float, default=0.1, metavar="R",
                        help="share of jobs that end Failed (default 0.1)")
    parser.add_argument("--submitted-seconds", type=float, default=5.0, help="time a job stays Submitted")
    parser.add_argument("--running-seconds", type=float, default=60.0, help="time a job stays Running")
    parser.add_argument("--children", type=int, default=0, metavar="N",
                        help="child jobs (media jobs or workflow executions) each batch job spawns while it runs, "
                             "one per object, served by GET /jobs, /pic_jobs, /workflowexecution (default 0)")
    parser.add_argument("--child-failure-rate", type=float, default=0.0, metavar="R",
                        help="exact share of each batch's children that end Failed, with a code (default 0)")
    parser.add_argument("--callback-any-host", action="store_true",
                        help="POST TaskFinish/WorkflowFinish callbacks to any host a batch's CallBack names "
                             "(default: loopback hosts only)")


def build(args: argparse.Namespace) -> EmulatorServer:
    if (args.secret_id is None) != (args.secret_key is None):
        raise SystemExit("jobwatch emulator: give both --secret-id and --secret-key, or neither")
    if args.speed <= 0:
        raise SystemExit(f"jobwatch emulator: --speed must be > 0, got {args.speed}")
    creds = {args.secret_id: args.secret_key} if args.secret_id else {DEMO_SECRET_ID: DEMO_SECRET_KEY}
    clock = SystemClock() if args.speed == 1 else SpeedClock(args.speed)
    lifecycle = Lifecycle(submitted_seconds=args.submitted_seconds, running_seconds=args.running_seconds,
                          failure_ratio=args.fail_ratio)
    return EmulatorServer(host=args.host, port=args.port, credentials=creds, clock=clock, seed=args.seed,
                          lifecycle=lifecycle, children=args.children, child_failure_rate=args.child_failure_rate,
                          allow_remote_callbacks=args.callback_any_host)


def run(args: argparse.Namespace, *, out: TextIO | None = None, stop: threading.Event | None = None) -> int:
    """Serve until Ctrl-C (or until ``stop`` is set, for tests). Prints the URL first, flushed."""
    out = out or sys.stdout
    if stop is None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # a supervisor's stop is as clean as Ctrl-C
    try:
        srv = build(args)
        srv.start()
    except (ValueError, OSError) as exc:
        print(f"jobwatch emulator: cannot start: {exc}", file=sys.stderr)
        return 2
    try:
        if args.preload:
            try:
                srv.preload(args.bucket, args.preload)
            except ValueError as exc:
                print(f"jobwatch emulator: {exc}", file=sys.stderr)
                return 2
        print(f"CI batch-job emulator listening on {srv.url}", file=out)
        print(f"  Host header: {args.bucket}.ci.{DEFAULT_REGION}.myqcloud.com (any <bucket>.ci.<region>.myqcloud.com)",
              file=out)
        if args.secret_id:
            print(f"  SecretId: {args.secret_id} (key as given)", file=out)
        else:
            print(f"  demo credentials: SecretId {DEMO_SECRET_ID} SecretKey {DEMO_SECRET_KEY}", file=out)
        print(f"  seed {args.seed}, speed x{args.speed:g}, preloaded {args.preload} job(s); Ctrl-C to stop", file=out)
        print("point jobwatch at it (paste into your shell):", file=out)
        print(f"export JOBWATCH_CI_ENDPOINT={srv.url}", file=out)
        print(f"export JOBWATCH_SECRET_ID={args.secret_id or DEMO_SECRET_ID}", file=out)
        if args.secret_id:  # a key given on the command line is never printed
            print("export JOBWATCH_SECRET_KEY='<the --secret-key you gave>'", file=out)
        else:
            print(f"export JOBWATCH_SECRET_KEY={DEMO_SECRET_KEY}", file=out)
        if args.children:
            print(f"  each batch job spawns {args.children} children, {args.child_failure_rate:g} of them failing",
                  file=out)
        out.flush()
        if stop is not None:
            stop.wait()
        else:
            _wait_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_forever() -> None:
    ev = threading.Event()
    while not ev.wait(3600):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobwatch emulator", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
