#!/usr/bin/env bash
# Set up (if needed) and run `generate` end to end on the embedded tiny default weights.
# Writes the Stage I preview mp4 and the final mp4 into ./demo_output.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
python3 -m flashvideo_core generate "A red fox runs through fresh snow at sunrise, long shadows, cinematic." -o demo_output "$@"
