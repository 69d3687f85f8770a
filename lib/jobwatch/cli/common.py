"""What every command group shares: exit codes and the error line on stderr."""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad input, or an error the service answered
EXIT_NOT_FOUND = 3


def err(msg: str) -> None:
    from jobwatch.core.redact import scrub

    print(f"jobwatch: {scrub(msg)}", file=sys.stderr)
