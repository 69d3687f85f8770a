import sys

from jobwatch.cli.commands import main

sys.exit(main())
