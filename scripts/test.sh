#!/usr/bin/env bash
# Set everything up (the Debian packages the tests use where it can, .venv with the test extras), then
# run the linters and the whole test suite; skipped tests are listed with their reason at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-packages.sh
scripts/setup.sh test,base
.venv/bin/ruff check streamer tests bench
.venv/bin/mypy streamer
exec .venv/bin/python -m pytest -q -rs "$@"
