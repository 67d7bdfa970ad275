#!/usr/bin/env bash
# Set everything up, then run the linters and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test,base
.venv/bin/ruff check streamer tests $(ls -d bench 2>/dev/null)
.venv/bin/mypy streamer
exec .venv/bin/python -m pytest -q "$@"
