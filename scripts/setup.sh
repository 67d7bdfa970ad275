#!/usr/bin/env bash
# Create .venv (if needed) and install streamer into it with the given extras, e.g. "test,base".
# torch is pinned here, before the project (pyproject.toml asks only torch>=2.4): 2.13.0 is a CPU build
# on the machines this project is developed and tested on, where an unpinned torch pulls a CUDA build of
# several GB. STREAMER_TORCH="torch" (or any requirement) overrides it, e.g. for a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "${STREAMER_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
