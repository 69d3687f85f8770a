"""``python -m jobwatch.emulator``: the same as ``jobwatch emulator``."""

import sys

from jobwatch.emulator.cli import main

sys.exit(main())
