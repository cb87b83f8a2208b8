#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite plus ruff. Never touches the network for models.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 -m ruff check .
python3 -m pytest -q "$@"
