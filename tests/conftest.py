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


def pytest_configure(config):
    """Commands run without JOBWATCH_STORE_URL keep their default store in the user's state directory: point it
    (XDG_STATE_HOME) at a directory of this run, for this process and every subprocess, so no test touches the
    real user's store."""
    if not os.environ.get("JOBWATCH_TEST_KEEP_STATE_HOME"):
        import tempfile

        config._jobwatch_state_home = tempfile.mkdtemp(prefix="jobwatch-test-state-")
        os.environ["XDG_STATE_HOME"] = config._jobwatch_state_home


def pytest_unconfigure(config):
    state_home = getattr(config, "_jobwatch_state_home", None)
    if state_home:
        import shutil

        shutil.rmtree(state_home, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_logging():
    """Each test starts and ends with structlog's defaults and no cached loggers: a test that configured logging
    onto a captured stream must not leave later tests writing to that stream after it is closed."""
    from jobwatch.app import logs

    logs.reset_for_tests()
    yield
    logs.reset_for_tests()
