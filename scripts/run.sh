#!/usr/bin/env bash
# Set everything up, then run the main job: transcribe a bundled fixture offline with the bundled model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/streamer transcribe "${@:-tests/fixtures/sense_and_sensibility_01_austen_64kb-0870.wav}"
