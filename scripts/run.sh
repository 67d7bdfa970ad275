#!/usr/bin/env bash
# Set everything up, then run the main job: the WebSocket daemon on the bundled tiny.en model, offline.
# Extra arguments go to `streamer serve` (e.g. --port 9000 --token SECRET).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/streamer serve "$@"
