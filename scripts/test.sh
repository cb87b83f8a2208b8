#!/usr/bin/env bash
# Sets up .venv if needed (scripts/setup.sh), then runs ruff and the whole test suite in it at the
# pinned versions. CI runs exactly this. Never touches the network for models. Extra arguments go to
# pytest (e.g. `bash scripts/test.sh tests/core -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=${FLASHVIDEO_VENV:-.venv}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$venv/bin/python" -m ruff check .
"$venv/bin/python" -m pytest -q "$@"
