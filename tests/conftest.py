"""Shared fixtures. Fixtures that belong to one area live in tests/fixtures/ and are loaded here."""

import os
import sys

HERE = os.path.dirname(__file__)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

pytest_plugins = [
    "fixtures.emulator",
    "fixtures.stores",
]


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_logging():
    """Each test starts and ends with structlog's defaults and no cached loggers: a test that configured logging
    onto a captured stream must not leave later tests writing to that stream after it is closed."""
    from jobwatch.app import logs

    logs.reset_for_tests()
    yield
    logs.reset_for_tests()
