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
