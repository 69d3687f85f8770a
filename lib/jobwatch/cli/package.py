"""``jobwatch package``: build the SCF deploy package."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from jobwatch.cli.output import Progress
from jobwatch.packaging.build import (DEFAULT_OUT, DEFAULT_PLATFORM, DEFAULT_PYTHON, DEFAULT_ZIP, SIZE_BUDGET_BYTES,
                                      PackageError, PackageOptions, build_package, check_platform,
                                      configured_extras, deploy_variables, find_root)


def _step(bar: Progress, message: str) -> None:
    """A build step (``[2/5] installing ...``): a progress bar on a terminal, the line itself elsewhere."""
    m = re.match(r"\[(\d+)/(\d+)\] (.*)", message)
    if m and bar.live:
        bar(int(m.group(1)) - 1, int(m.group(2)), note=m.group(3))  # the step named is under way
    else:
        bar.done()
        print(message, file=sys.stderr)


def _platform(text: str) -> str:
    """argparse type for ``--platform``: a Linux (manylinux) target; argparse names the option on a refusal."""
    try:
        return check_platform(text)
    except PackageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_package(args: argparse.Namespace) -> int:
    try:
        root = find_root()
        out = Path(args.out) if os.path.isabs(args.out) else root / args.out
        zip_path = None if args.no_zip else (Path(args.zip) if os.path.isabs(args.zip) else root / args.zip)
        serverless = None if args.serverless == "" else (root / args.serverless if not os.path.isabs(
            args.serverless) else Path(args.serverless))
        deploy = deploy_variables(serverless)
        wanted = configured_extras(deploy.variables)
        for extra, why in wanted:
            print(f"extra {extra}: {why} in {deploy.source}", file=sys.stderr)
        unresolved = [f"${{env:{n}}}" for n in deploy.unresolved]
        added = [e.strip() for e in args.extras.split(",") if e.strip()]
        extras = tuple(dict.fromkeys([e for e, _ in wanted] + added))
        opts = PackageOptions(root=root, out=out, zip_path=zip_path, python_version=args.python_version,
                              platform=args.platform, extras=extras, compile=not args.no_compile,
                              compile_python=args.compile_python)
        bar = Progress("packaging")
        result = build_package(opts, log=lambda m: _step(bar, m))
        bar.done()
    except PackageError as exc:
        print(f"package: {exc}", file=sys.stderr)
        return 1
    size = f", zip {result.zip_bytes / 1e6:.2f} MB" if result.zip_bytes is not None else ""
    print(f"built {result.out}: {result.files} files, {result.unpacked_bytes / 1e6:.1f} MB unpacked{size}; "
          f"extras: {', '.join(result.extras) or 'none'}; resolved by {result.installer} for CPython "
          f"{args.python_version}{'' if result.compiled else ', not precompiled'}")
    if unresolved:
        print(f"note: {', '.join(unresolved)} set neither in the environment nor in .env: the deploy passes them "
              "empty, and the extras they would need (a MySQL store, a Tencent sink) are not in the package")
    for note in result.notes:
        print(f"note: {note}")
    over = result.zip_bytes is not None and result.zip_bytes > SIZE_BUDGET_BYTES
    return 1 if over else 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``jobwatch package``."""
    p = subparsers.add_parser(
        "package", help="build the SCF deploy directory and zip",
        description="Resolve and install the runtime dependencies for SCF's Python and platform (with uv; not "
                    "for this machine's Python), with the extras the deployed configuration needs (serverless.yml's "
                    "environment.variables, ${env:...} from the environment and .env: a MySQL store, fan-out, "
                    "each Tencent sink), copy jobwatch and handler/index.py to the package root, strip tests and "
                    "caches, precompile with a CPython of the target version, and zip. "
                    "Exit codes: 0 built, 1 failed or over the 10 MB budget.")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"package directory (default {DEFAULT_OUT})")
    p.add_argument("--zip", default=DEFAULT_ZIP, help=f"zip file (default {DEFAULT_ZIP})")
    p.add_argument("--no-zip", action="store_true", help="build the directory only")
    p.add_argument("--python-version", default=DEFAULT_PYTHON, help=f"target Python (default {DEFAULT_PYTHON})")
    p.add_argument("--platform", type=_platform, default=DEFAULT_PLATFORM,
                   help=f"target platform, a manylinux one as uv or pip names it (default {DEFAULT_PLATFORM}; "
                        "SCF runs Linux only)")
    p.add_argument("--serverless", default="serverless.yml", metavar="YAML",
                   help="the deploy file whose environment.variables choose the extras (default serverless.yml "
                        "at the project root; '' = this shell's JOBWATCH_* variables)")
    p.add_argument("--extras", default="",
                   help="more optional dependency groups to include, comma-separated (e.g. eb,ses or all)")
    p.add_argument("--compile-python", metavar="PATH",
                   help="a CPython of the target version to precompile with (default: found on this machine)")
    p.add_argument("--no-compile", action="store_true", help="do not precompile .pyc files")
    p.set_defaults(func=_cmd_package)
    return p
