"""SCF entry point (``index.main_handler``): builds the App once per instance and hands every event to
:func:`jobwatch.triggers.scf.run`. Nothing else belongs here; event recognition, dispatch, the time budget and
the retry rules live in ``lib/jobwatch`` where they are tested without this shim.

Module scope runs once per instance (SCF's cold start) and imports only what every invocation needs; the
Tencent Cloud SDK, requests and lxml are imported on first use (a poll, a fan-out, a Tencent sink).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from jobwatch.triggers.scf import run

_app: Any = None
_lock = threading.Lock()


def _get_app() -> Any:
    """The instance's App, built from the environment on first use and reused by warm invocations."""
    global _app
    if _app is None:
        with _lock:
            if _app is None:
                from jobwatch.app.orchestrator import App
                from jobwatch.app.config import load_settings

                _app = App(load_settings())
    return _app


def main_handler(event: Any, context: Any) -> Any:
    return run(_get_app, event, context, time.monotonic())


def _reset_for_tests(app: Any = None) -> None:
    """Close and forget the instance's App (tests), or install ``app`` as it."""
    global _app
    with _lock:
        if _app is not None and _app is not app:
            _app.close()
        _app = app
