#!/usr/bin/env bash
# Creates .venv (Python 3.10, SCF's newest runtime, when this machine has it) and installs ci-jobwatch into it.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
if [ ! -x .venv/bin/python ]; then
  py=""
  for cand in python3.10 /root/.pyenv/versions/3.10*/bin/python python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
      py="$cand"; break
    fi
  done
  [ -n "$py" ] || { echo "setup: need Python >= 3.10" >&2; exit 1; }
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extra}"
