"""The ``jobwatch`` command: one argparse tree built from the command-group modules of this package."""

from jobwatch.cli.commands import main

__all__ = ["main"]
