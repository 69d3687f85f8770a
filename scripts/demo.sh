#!/usr/bin/env bash
# The README's main-job command: set up (idempotent), then run the main job against the local emulator and
# the embedded SQLite store: create jobs, track them, poll until every one is final.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/jobwatch demo "$@"
