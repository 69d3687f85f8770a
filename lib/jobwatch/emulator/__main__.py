"""``python -m jobwatch.emulator``: the same as ``jobwatch emulator``."""

import sys

from .cli import main

sys.exit(main())
