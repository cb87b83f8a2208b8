#!/usr/bin/env bash
# Sets up .venv if needed (scripts/setup.sh) and runs `generate` end to end on the embedded tiny
# default weights (written once to ~/.cache/flashvideo, or $FLASHVIDEO_CACHE). Writes the Stage I
# preview mp4 and the final mp4 into ./demo_output. Extra arguments go to `generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=${FLASHVIDEO_VENV:-.venv}
export HF_HUB_OFFLINE=1
"$venv/bin/flashvideo" generate "A red fox runs through fresh snow at sunrise, long shadows, cinematic." -o demo_output "$@"
