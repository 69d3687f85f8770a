"""``jobwatch emulator ...``: the local CI API."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from jobwatch.cli.common import EXIT_FAILURE, err as _err



def register(subparsers: Any) -> argparse.ArgumentParser:
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
    try:
        options = parser.parse_args(args.extra_args)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    return int(emu.run(options) or 0)
